//! What a run is given: [`Connection`] (server, credentials, headers, waits) and [`Options`]
//! (a [`Connection`] plus the output directory and how to export). Both are `#[non_exhaustive]`:
//! start from [`Connection::new`] / [`Options::new`] and change what differs with the `with_*`
//! methods (or by assigning a field), so a new option is never a breaking change.

use std::path::PathBuf;

use url::Url;

use crate::auth::Credentials;
use crate::kickoff::KickoffParams;
use crate::retry::Timing;

/// Default line cap: 64 MiB (a Bundle or a resource with inline attachments can be large).
pub const DEFAULT_MAX_LINE_BYTES: usize = 64 * 1024 * 1024;

/// How to reach and authenticate with the server.
#[derive(Debug)]
#[non_exhaustive]
pub struct Connection {
    /// FHIR base URL.
    pub fhir_url: Url,
    /// Credentials.
    pub credentials: Credentials,
    /// OAuth scope (default `system/*.read`).
    pub scope: String,
    /// Token endpoint; discovered when `None`.
    pub token_url: Option<Url>,
    /// Extra trusted CA certificates (PEM).
    pub ca_cert: Option<PathBuf>,
    /// Extra request headers (e.g. `Epic-Client-ID`).
    pub headers: Vec<(String, String)>,
    /// Waits and retries.
    pub timing: Timing,
    /// Private key path, recorded (as a path) in the job state for `status`/`cancel`.
    pub private_key_path: Option<PathBuf>,
}

impl Connection {
    /// A connection with default scope, discovery and timing.
    #[must_use]
    pub fn new(fhir_url: Url, credentials: Credentials) -> Self {
        Self {
            fhir_url,
            credentials,
            scope: "system/*.read".into(),
            token_url: None,
            ca_cert: None,
            headers: Vec::new(),
            timing: Timing::default(),
            private_key_path: None,
        }
    }

    with! {
        /// The OAuth scope to ask for.
        with_scope: scope: String;
        /// The token endpoint (skips discovery).
        with_token_url: token_url: Option<Url>;
        /// Extra trusted CA certificates (a PEM file).
        with_ca_cert: ca_cert: Option<PathBuf>;
        /// Extra request headers, e.g. `("Epic-Client-ID", "...")`.
        with_headers: headers: Vec<(String, String)>;
        /// Waits and retries.
        with_timing: timing: Timing;
        /// The private key's path, recorded in the job state for `status`/`cancel`.
        with_private_key_path: private_key_path: Option<PathBuf>;
    }
}

/// Everything [`fetch`](crate::fetch) needs.
#[derive(Debug)]
#[non_exhaustive]
pub struct Options {
    /// Server and credentials.
    pub conn: Connection,
    /// Output directory.
    pub out_dir: PathBuf,
    /// Kick-off parameters.
    pub kickoff: KickoffParams,
    /// Concurrent downloads.
    pub parallel: usize,
    /// Continue the job recorded in `out_dir`.
    pub resume: bool,
    /// DELETE the export on the server once every file is downloaded.
    pub delete_on_success: bool,
    /// Longest accepted NDJSON line.
    pub max_line_bytes: usize,
}

impl Options {
    /// Defaults: Patient-level export, 4 parallel downloads.
    #[must_use]
    pub fn new(conn: Connection, out_dir: impl Into<PathBuf>) -> Self {
        Self {
            conn,
            out_dir: out_dir.into(),
            kickoff: KickoffParams::default(),
            parallel: 4,
            resume: false,
            delete_on_success: false,
            max_line_bytes: DEFAULT_MAX_LINE_BYTES,
        }
    }

    with! {
        /// Kick-off parameters.
        with_kickoff: kickoff: KickoffParams;
        /// Concurrent downloads (at least 1 are run).
        with_parallel: parallel: usize;
        /// Continue the job recorded in the output directory.
        with_resume: resume: bool;
        /// DELETE the export on the server once every file is downloaded.
        with_delete_on_success: delete_on_success: bool;
        /// Longest accepted NDJSON line, in bytes.
        with_max_line_bytes: max_line_bytes: usize;
    }
}
