//! # flatfhir-core
//!
//! Flattens FHIR NDJSON (one resource per line, plain or gzip) into one analysis-ready table
//! per resource type, with exactly the columns the reference Python workflow
//! (`flatten_json.flatten(resource, "_")` + `pandas.json_normalize`) produces — `id`,
//! `name_0_given_0`, `code_coding_0_code` — over the union of all resources of the type, and
//! writes them as Parquet or Arrow IPC.
//!
//! The main types: [`plan`] groups input files by resource type into [`TypeGroup`]s;
//! [`convert_group`] converts one group (a schema pass, then a writing pass, both chunk-parallel
//! with bounded memory) and returns a [`TypeReport`]; [`infer_schema`] runs the schema pass
//! alone. [`ConvertOptions`] holds every setting.
//!
//! ```no_run
//! use flatfhir_core::{convert_group, plan, ConvertOptions, NoProgress, ReadOptions};
//! # fn main() -> Result<(), flatfhir_core::Error> {
//! let opts = ConvertOptions { out_dir: "out".into(), ..Default::default() };
//! let plan = plan(&["export/".into()], &ReadOptions::default())?;
//! for group in &plan.groups {
//!     let report = convert_group(group, &opts, &NoProgress)?;
//!     println!("{}: {} rows x {} columns", report.resource_type, report.rows, report.columns);
//! }
//! # Ok(()) }
//! ```
//!
//! The column and type policy is documented in `docs/columns.md`; the passes, chunking and
//! memory bound in `docs/architecture.md`.

#![deny(missing_docs)]

mod convert;
mod error;
mod flatten;
mod input;
mod reader;
mod scan;
mod schema;
mod writer;

pub use convert::{
    ConvertOptions, DEFAULT_MAX_COLUMNS, NoProgress, OnError, Progress, SchemaReport, TypeReport,
    convert_group, infer_schema,
};
pub use error::{Error, Result};
pub use input::{
    InputFile, Plan, RESOURCE_TYPES, TypeGroup, is_ndjson_name, natural_cmp, plan,
    type_from_file_name,
};
pub use reader::{
    Chunk, DEFAULT_CHUNK_BYTES, DEFAULT_MAX_LINE_BYTES, Line, LineReader, Overlong, OverlongSink,
    ReadOptions,
};
pub use schema::{Column, Decimals, FirstSeen, column_type, type_name};
pub use writer::{Compression, OutputFormat, TableWriter, WriteOptions};
