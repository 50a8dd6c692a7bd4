//! `flatfhir._native`: the Rust side of the `flatfhir` Python package. It exposes the engine
//! (`flatfhir-core`: read as Arrow batches, convert, schema), views (`flatfhir-view`) and the
//! Bulk Data client (`flatfhir-fetch`) to the pure-Python API in `python/flatfhir/`, which is
//! what users call. Every long call runs on a worker thread while the calling thread waits
//! without the GIL, wakes every few milliseconds to pass progress on and to check for Ctrl-C
//! (see the `wait` module), and stops the work cleanly on KeyboardInterrupt. Arrow data crosses to
//! pyarrow through the C data interface, without copying buffers.

mod engine;
mod errors;
mod fetch;
mod shard;
mod strings;
mod views;
mod wait;

use pyo3::prelude::*;

// No `#[global_allocator]`: the module uses the system allocator, like the Python process
// around it. mimalloc (the binary's allocator) madvises its memory for transparent huge pages,
// and on this project's VMs (THP "madvise") every first touch of the ~0.8 GB a 1 GB read keeps
// then cleared 2 MiB at a time, which made `flatfhir.read` about three times slower
// (docs/performance.md, "Design choices"). The binary turns THP off for its whole
// process; a library must not do that to its host.

/// The native module.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    // Paths may be object-store URLs (s3://, gs://, az://, abfss://): read through the same
    // Rust code as the CLI's (flatfhir-cloud), with ranged GETs for shards.
    flatfhir_cloud::install();
    m.add_function(wrap_pyfunction!(engine::plan, m)?)?;
    m.add_function(wrap_pyfunction!(engine::convert, m)?)?;
    m.add_function(wrap_pyfunction!(engine::schema, m)?)?;
    m.add_class::<engine::TypeReader>()?;
    m.add_class::<engine::Inputs>()?;
    m.add_function(wrap_pyfunction!(shard::plan_shards, m)?)?;
    m.add_function(wrap_pyfunction!(shard::shard_schema, m)?)?;
    m.add_function(wrap_pyfunction!(shard::merge_schemas, m)?)?;
    m.add_class::<shard::ShardReader>()?;
    m.add_function(wrap_pyfunction!(shard::write_shard, m)?)?;
    m.add_function(wrap_pyfunction!(shard::read_texts, m)?)?;
    m.add_function(wrap_pyfunction!(views::run_views, m)?)?;
    m.add_function(wrap_pyfunction!(strings::large_strings, m)?)?;
    m.add_class::<fetch::Client>()?;
    Ok(())
}
