//! A FHIR Bulk Data client: SMART Backend Services auth, `$export` kick-off, status polling,
//! and resumable, parallel, verified downloads into the layout the SMART reference client and
//! the Cumulus tools share.
//!
//! [`fetch`] runs a whole export into a directory described by [`Options`]; [`status`] and
//! [`cancel`] act on the job recorded there. Progress arrives through an [`Observer`] as
//! [`Event`]s. Credentials are [`Credentials`] (a [`SigningKey`] for `private_key_jwt`, a client
//! secret, a fixed bearer token, or none); secrets are [`Secret`]s and URLs in messages are
//! [`RedactedUrl`]s, so neither tokens nor signed query strings reach a log.
//!
//! Output layout in DIR: `{n}.{Type}.ndjson`, `error/{n}.OperationOutcome.ndjson`,
//! `deleted/{n}.Bundle.ndjson`, `manifest.json` (the server's manifest as received; for a
//! paged manifest, every page's entries merged into one), `log.ndjson` (Bulk Data Export Log
//! Items) and the job state `.flatfhir-job.json`.
//!
//! Modules (private; their public items are re-exported here): `options` (what a run is
//! given), `run` (one export, start to end), `control` (status and cancel of a recorded job),
//! `event`, `summary`, `auth`, `kickoff`, `poll`, `download`, `line` (one NDJSON line's check), `manifest`, `job` (the job
//! state), `log` (`log.ndjson`), `http`, `h1` (file downloads over HTTP/1.1 read by hand), `retry` (the one retry policy), `redact`, `durable`,
//! `clock`.
//!
//! ```no_run
//! # async fn run() -> Result<(), flatfhir_fetch::Error> {
//! use std::sync::Arc;
//! use flatfhir_fetch::{Connection, Credentials, Options};
//! let conn = Connection::new("https://bulk.example/fhir".parse().unwrap(), Credentials::None)
//!     .with_headers(vec![("Epic-Client-ID".into(), "my-app".into())]);
//! let opts = Options::new(conn, "out").with_parallel(8);
//! let summary = flatfhir_fetch::fetch(opts, Arc::new(|_: &flatfhir_fetch::Event| {})).await?;
//! println!("{} resources", summary.resources);
//! # Ok(()) }
//! ```

#![deny(missing_docs)]

/// Chained setters for `#[non_exhaustive]` option structs: `name: field: Type;` makes
/// `pub fn name(mut self, value: Type) -> Self`.
macro_rules! with {
    ($($(#[$doc:meta])* $name:ident : $field:ident : $ty:ty;)*) => {
        $(
            $(#[$doc])*
            #[must_use]
            pub fn $name(mut self, value: $ty) -> Self {
                self.$field = value;
                self
            }
        )*
    };
}

mod auth;
mod clock;
mod control;
mod ctx;
mod download;
mod durable;
mod error;
mod event;
mod h1;
mod http;
mod job;
mod kickoff;
mod line;
mod log;
mod manifest;
mod options;
mod poll;
mod redact;
mod retry;
mod run;
pub mod search;
mod summary;

/// Entry points for the fuzz targets in `fuzz/`. Not a stable API.
#[doc(hidden)]
pub mod fuzzing;

pub use auth::{Credentials, SigningKey, parse_alg};
pub use control::{ServerStatus, cancel, status};
pub use error::{Error, Result};
pub use event::{Event, Observer};
pub use job::{FileState, FileStatus, JOB_FILE, JobState, Phase};
pub use kickoff::{KickoffParams, Level, ParamStyle};
pub use manifest::ItemType;
pub use options::{Connection, DEFAULT_MAX_LINE_BYTES, Options};
pub use redact::{RedactedUrl, Secret, register_secret, scrub};
pub use retry::Timing;
pub use run::fetch;
pub use summary::{Issue, Summary};
