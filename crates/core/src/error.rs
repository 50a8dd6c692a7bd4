//! The crate's error type: every failure names the file (and line, where there is one) it
//! comes from, so a user can find and fix the input.

use std::path::PathBuf;

/// Everything that can go wrong while reading, flattening or writing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An input line was rejected (not JSON, not UTF-8, not an object, too long, wrong type…).
    #[error("{}:{line}: {reason}", file.display())]
    BadLine {
        /// The input file.
        file: PathBuf,
        /// 1-based line number in the (decompressed) file.
        line: u64,
        /// Why the line was rejected.
        reason: String,
    },
    /// Reading an input file failed.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The input file.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// Writing an output file failed.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        /// The output file.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// Encoding Parquet failed.
    #[error("cannot encode Parquet {}: {source}", path.display())]
    Parquet {
        /// The output file.
        path: PathBuf,
        /// The underlying Parquet error.
        source: parquet::errors::ParquetError,
    },
    /// Building or writing Arrow data failed.
    #[error("cannot encode Arrow {}: {source}", path.display())]
    Arrow {
        /// The output file.
        path: PathBuf,
        /// The underlying Arrow error.
        source: arrow_schema::ArrowError,
    },
    /// Two different JSON paths flatten to the same column name.
    #[error(
        "{resource_type}: two different JSON paths flatten to the column name {name:?}: {first} and {second}; \
         choose another separator with --sep (e.g. --sep .) so they stay apart"
    )]
    ColumnCollision {
        /// The resource type being converted.
        resource_type: String,
        /// The colliding flattened name.
        name: String,
        /// The path first seen, in JSON-pointer-like notation.
        first: String,
        /// The second path.
        second: String,
    },
    /// The union schema is wider than `--max-columns`.
    #[error(
        "{resource_type}: {columns} columns exceed the limit of {limit} (--max-columns); \
         the widest paths are: {widest}. Raise --max-columns, or --exclude the root keys that explode"
    )]
    TooManyColumns {
        /// The resource type being converted.
        resource_type: String,
        /// Columns found.
        columns: usize,
        /// The configured limit.
        limit: usize,
        /// The path patterns contributing most columns, with counts.
        widest: String,
    },
    /// An input given on the command line does not exist or is not usable.
    #[error("{}: {reason}", path.display())]
    Input {
        /// The path given.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The temporary file that holds flattened chunks beyond the memory budget failed.
    #[error("temporary spill file in {}: {source} (choose another place with --spill-dir)", path.display())]
    Spill {
        /// The directory the spill file is in.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A flattened chunk did not fit the union schema: a bug in flatfhir.
    #[error("{resource_type}: internal error while writing {}: {reason} (please report this)", path.display())]
    Internal {
        /// The resource type being converted.
        resource_type: String,
        /// The input file the chunk came from.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// Invalid options.
    #[error("{0}")]
    Options(String),
    /// The caller stopped the work ([`crate::Progress::cancelled`]); nothing was written.
    #[error("cancelled")]
    Cancelled,
}

/// Shorthand for results in this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
