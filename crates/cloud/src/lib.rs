//! # flatfhir-cloud
//!
//! Object storage for flatfhir: `s3://`, `gs://`, `az://`/`abfs[s]://` URLs as input (listed
//! like directories, streamed and range-read through [`ObjectInput`], which core's
//! `remote` hook calls) and as output (each file uploaded by a multipart upload that is
//! completed only when the file is whole and aborted on any error or interruption:
//! [`upload_file`], [`abort_uploads`]).
//!
//! Built on the `object_store` crate (the one parquet uses), on one small tokio runtime of
//! its own, so callers stay synchronous. Credentials come from each cloud's standard chain
//! (see [`location`]); nothing flatfhir-specific. Every error message goes through
//! [`redact`]: no key, token or signed query string is ever shown.

pub mod location;
mod read;
pub mod redact;
mod runtime;
mod upload;

pub use location::{Location, is_url, local_path};
pub use read::{ObjectInput, install};
pub use upload::{
    Uploaded, abort_uploads, delete, get, list, list_tagged, put, upload_file, upload_reader,
};

/// Errors of object-storage access; every message names the URL and has secrets removed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A URL this crate cannot serve.
    #[error("{url}: {reason}")]
    Url {
        /// The URL as given.
        url: String,
        /// Why.
        reason: String,
    },
    /// The store refused or failed a request.
    #[error("{url}: {reason}")]
    Store {
        /// The object or prefix.
        url: String,
        /// The store's reason (redacted).
        reason: String,
        /// Whether the object was not found.
        not_found: bool,
    },
    /// Reading a local file to upload failed.
    #[error("cannot read {path}: {source}")]
    Local {
        /// The local file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The process is being interrupted: the upload was aborted.
    #[error("{url}: upload aborted: interrupted")]
    Interrupted {
        /// The object.
        url: String,
    },
}

impl Error {
    pub(crate) fn store(url: &str, e: &object_store::Error) -> Self {
        Error::Store {
            url: url.to_string(),
            reason: redact::redact(&e.to_string()),
            not_found: matches!(e, object_store::Error::NotFound { .. }),
        }
    }

    /// Whether the object or prefix does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            Error::Store {
                not_found: true,
                ..
            }
        )
    }
}

/// This crate's result.
pub type Result<T, E = Error> = std::result::Result<T, E>;
