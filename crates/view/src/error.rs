//! Error types: every error names the view and, where there is one, the column or clause and
//! the position in the FHIRPath expression.

use crate::json::JsonError;

/// A FHIRPath syntax error at a byte position of the expression.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("at position {pos}: {message}")]
pub struct SyntaxError {
    /// Byte offset in the expression.
    pub pos: usize,
    /// What was wrong.
    pub message: String,
}

/// Errors of compiling or running a view.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A FHIRPath expression did not parse.
    #[error("view '{view}', {location}: invalid FHIRPath `{expr}` at position {pos}: {message}")]
    Syntax {
        /// View name (or file stem).
        view: String,
        /// Where in the view: `column 'x'`, `where[0]`, `forEach` …
        location: String,
        /// The expression text.
        expr: String,
        /// Byte offset in the expression.
        pos: usize,
        /// What was wrong.
        message: String,
    },
    /// The ViewDefinition is not valid.
    #[error("view '{view}': invalid ViewDefinition: {message}")]
    Invalid {
        /// View name (or file stem).
        view: String,
        /// What was wrong.
        message: String,
    },
    /// Evaluating an expression on a resource failed (e.g. several values in a non-collection
    /// column, or a `where` that is not boolean).
    #[error("view '{view}', {location}: `{expr}` on resource '{resource}': {message}")]
    Eval {
        /// View name (or file stem).
        view: String,
        /// Where in the view.
        location: String,
        /// The expression text.
        expr: String,
        /// `Type/id` of the resource.
        resource: String,
        /// What was wrong.
        message: String,
    },
    /// A resource or view was not valid JSON.
    #[error("{context}: {source}")]
    Json {
        /// What was being read (file:line).
        context: String,
        /// The JSON error.
        source: JsonError,
    },
    /// Reading or writing a file failed.
    #[error("{context}: {source}")]
    Io {
        /// The file.
        context: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// An input line a view cannot read: longer than the line limit, or a Bundle entry that
    /// could not become a resource.
    #[error("{context}: {reason}")]
    BadLine {
        /// Where the line is (`file:line`, or the Bundle file, line and entry).
        context: String,
        /// Why it was refused.
        reason: String,
    },
    /// Planning, reading the input or writing a Parquet/Arrow table failed: the error of
    /// flatfhir-core, which names the file (and line).
    #[error(transparent)]
    Core(flatfhir_core::Error),
    /// The rows of a chunk did not make an Arrow record batch of the view's schema.
    #[error("building a record batch: {0}")]
    Batch(#[source] arrow_schema::ArrowError),
    /// The run was stopped ([`crate::RunOptions::cancel`]); nothing was written.
    #[error("cancelled")]
    Cancelled,
}

impl From<flatfhir_core::Error> for Error {
    /// Keeps core's error as the source; core's cancellation is this crate's
    /// [`Error::Cancelled`].
    fn from(e: flatfhir_core::Error) -> Self {
        match e {
            flatfhir_core::Error::Cancelled => Self::Cancelled,
            e => Self::Core(e),
        }
    }
}

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
