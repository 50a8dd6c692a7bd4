//! # flatfhir-core
//!
//! Flattens FHIR NDJSON (one resource per line, plain or gzip) into one analysis-ready table
//! per resource type, with exactly the columns the reference Python workflow
//! (`flatten_json.flatten(resource, "_")` + `pandas.json_normalize`) produces — `id`,
//! `name_0_given_0`, `code_coding_0_code` — over the union of all resources of the type, and
//! writes them as Parquet or Arrow IPC.
//!
//! The main types: [`plan`] groups input files by resource type into [`TypeGroup`]s;
//! [`convert_group`] converts one group (one chunk-parallel pass that parses and flattens every
//! line once, holding the flattened chunks within a memory budget and spilling the rest, then
//! the output written against the union schema) and returns a [`TypeReport`];
//! [`infer_schema`] collects the union schema alone. [`ConvertOptions`] holds every setting
//! (`#[non_exhaustive]`: start from `Default` and chain its setters).
//!
//! ```no_run
//! use flatfhir_core::{convert_group, plan, ConvertOptions, NoProgress, ReadOptions};
//! # fn main() -> Result<(), flatfhir_core::Error> {
//! let opts = ConvertOptions::default().out_dir("out");
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

mod bundle;
mod calendar;
mod convert;
mod dates;
mod error;
mod flatten;
mod input;
mod options;
pub mod outfile;
mod pipeline;
mod reader;
pub mod remote;
mod scan;
mod schedule;
mod schema;
mod shard;
mod stash;
mod textchunk;
mod writer;

pub use bundle::{
    BundleInputs, BundleMode, BundleOptions, BundleStats, Duplicates, remove_unpacked,
};
pub use convert::{
    ConvertOptions, DEFAULT_MAX_COLUMNS, DateColumn, NoProgress, OnError, Progress, ReadReport,
    RejectedLine, SAMPLE_REJECTED, SchemaReport, StageTimes, TypeReport, convert_bundles,
    convert_group, infer_schema, read_group,
};
pub use error::{Error, Result};
pub use input::{
    InputFile, Plan, RESOURCE_TYPES, TypeGroup, is_ndjson_name, plan, plan_packed, plan_with,
    type_from_file_name, why_not_ndjson,
};
pub use reader::{DEFAULT_CHUNK_BYTES, DEFAULT_CHUNK_ROWS, DEFAULT_MAX_LINE_BYTES, ReadOptions};
pub use schedule::convert_groups;
pub use schema::{Column, Dates, Decimals, FirstSeen, type_name};
pub use shard::{
    DEFAULT_SHARD_BYTES, DocColumn, PathSeg, Position, SCHEMA_FORMAT, SCHEMA_VERSION, SchemaDoc,
    Shard, ShardOutcome, TypeSchema, plan_shards, read_shard, read_texts,
};
pub use stash::DEFAULT_MEMORY_BUDGET;
pub use writer::{Compression, OutputFormat, WriteOptions, WrittenFile};

/// Plumbing shared with the sibling crates of this workspace (flatfhir-view, the `flatfhir`
/// binary, the benchmarks and fuzz targets), so that they read lines, name bad lines and
/// write tables exactly as `convert` does: the chunked line reader, the atomic table writer,
/// where a line unpacked from a Bundle came from, and the validating JSON walker.
///
/// **Not part of the API**: hidden from the docs and free to change in any release, with
/// no semver promise. Library users need only the items at the crate root.
#[doc(hidden)]
pub mod internal {
    pub use crate::bundle::{is_refused_entries, line_origin};
    /// Proleptic Gregorian day counts, shared with the view engine's date arithmetic.
    pub mod calendar {
        pub use crate::calendar::{civil_from_days, days_from_civil};
    }
    pub use crate::input::natural_cmp;
    pub use crate::pipeline::{Timers, run_chunks};
    pub use crate::reader::{
        Chunk, ChunkData, Line, LineReader, Lines, MAX_CHUNK_GROWTH, Overlong, OverlongSink,
    };
    pub use crate::writer::{ChunkRows, ColumnCodec, TableWriter};

    /// The validating JSON walker every input line is read with, for crates that read the
    /// same lines (the view engine): one JSON parser, so a line `convert` rejects is rejected
    /// by a view with the same reason. [`walk::walk`] reports an NDJSON line's keys, array
    /// indexes and leaves (numbers with their source text) to a [`walk::Visitor`] without
    /// building a tree; [`walk::line_text`] is the length and UTF-8 check `convert` makes
    /// before it.
    pub mod walk {
        pub use crate::flatten::line_text;
        pub use crate::scan::{Reason, Scalar, Visitor, same_bytes, walk};
    }
}

/// Entry points for the fuzz targets in `fuzz/`. Not a stable API.
#[doc(hidden)]
pub mod fuzzing;

/// Entry points to the hot paths for the criterion benchmarks in `benches/`. Not a stable API.
#[doc(hidden)]
pub mod hot {
    use std::sync::Arc;

    use arrow_array::RecordBatch;
    use arrow_schema::Schema;

    use crate::flatten::{CapacityHints, ChunkPass};
    use crate::scan::{self, Reason};
    use crate::schema::{Decimals, FirstSeen, UnionSchema};
    use crate::stash::ChunkTable;

    /// Walks every line without keeping anything (JSON validation and tokenising only).
    pub fn parse(lines: &[&str]) -> usize {
        struct Count(usize);
        impl scan::Visitor for Count {
            fn enter_key(&mut self, _: usize, _: &str) -> Result<bool, Reason> {
                Ok(true)
            }
            fn enter_index(&mut self, _: usize) -> Result<(), Reason> {
                Ok(())
            }
            fn leave(&mut self) {}
            fn scalar(&mut self, _: scan::Scalar<'_>) -> Result<(), Reason> {
                self.0 += 1;
                Ok(())
            }
        }
        let mut c = Count(0);
        let mut scratch = String::new();
        for l in lines {
            scan::walk(l, &mut c, &mut scratch).expect("valid line");
        }
        c.0
    }

    /// The schema pass over lines of one resource type.
    #[derive(Debug)]
    pub struct Prepared {
        union: UnionSchema,
        arrow: Arc<Schema>,
        resource_type: String,
    }

    /// Runs the schema pass (one chunk) and freezes the result.
    pub fn schema(lines: &[&str], resource_type: &str) -> Prepared {
        let mut pass = ChunkPass::new(&[], false, CapacityHints::default());
        for (i, l) in lines.iter().enumerate() {
            pass.line(
                l,
                FirstSeen {
                    file: 0,
                    line: i as u64 + 1,
                },
                resource_type,
            )
            .expect("valid line");
        }
        let mut union = UnionSchema::new(resource_type, "_");
        union.merge(&pass.finish().0).expect("no collision");
        let arrow = union.arrow_schema(Decimals::Float);
        Prepared {
            union,
            arrow,
            resource_type: resource_type.to_string(),
        }
    }

    /// The flattening: lines of one chunk into a record batch of the union schema (the pass
    /// that collects values, then widening).
    pub fn flatten(p: &Prepared, lines: &[&str]) -> RecordBatch {
        let mut pass = ChunkPass::new(&[], true, CapacityHints::default());
        for (i, l) in lines.iter().enumerate() {
            let at = FirstSeen {
                file: 0,
                line: i as u64 + 1,
            };
            pass.line(l, at, &p.resource_type).expect("valid line");
        }
        let (schema, columns) = pass.finish();
        let to_union = p.union.clone().merge(&schema).expect("no collision");
        let table = ChunkTable {
            rows: lines.len() as u32,
            input_bytes: 0,
            columns,
        };
        table.into_batch(&to_union, &p.arrow).expect("valid batch")
    }
}
