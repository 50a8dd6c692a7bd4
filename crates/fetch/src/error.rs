//! The crate's error type: one variant per way an export can fail, each carrying the URL
//! (redacted) or file it concerns. Nothing here ever holds a token or key.
//!
//! Each message is complete on its own (it includes its cause's text, since it also goes to
//! `log.ndjson` and the summary's failure list); the cause is also the `source`, so whoever
//! prints the whole chain should skip a cause whose text its parent already shows, as the
//! `flatfhir` binary does.

use std::path::PathBuf;
use std::time::Duration;

use crate::redact::RedactedUrl;

/// Everything that can go wrong fetching an export.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The private key file could not be read.
    #[error("reading the private key {path}: {source}")]
    KeyRead {
        /// Key file.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The private key option holds text that is neither a key file's path nor a whole key.
    #[error(
        "{what} is neither the path of a key file nor a whole key: it looks like key text \
         without its -----BEGIN line (the value is not shown). Set it to the whole PEM \
         (with its -----BEGIN and -----END lines), a JWK, or the path of a key file"
    )]
    KeyText {
        /// The option or variable, e.g. `--private-key / FLATFHIR_PRIVATE_KEY`.
        what: String,
    },
    /// The private key is a SEC1 EC key, which the signer does not read.
    #[error(
        "the private key {path} is a SEC1 EC key (BEGIN EC PRIVATE KEY); convert it to PKCS#8 with: \
         openssl pkcs8 -topk8 -nocrypt -in {path} -out key.p8.pem"
    )]
    Sec1Key {
        /// Key file.
        path: PathBuf,
    },
    /// The private key could not be used.
    #[error("the private key {path} cannot be used: {reason}")]
    BadKey {
        /// Key file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The token endpoint could not be found.
    #[error("finding the token endpoint of {url}: {reason} (pass --token-url to set it)")]
    Discovery {
        /// FHIR base URL.
        url: RedactedUrl,
        /// Why.
        reason: String,
    },
    /// The token endpoint refused or failed.
    #[error("getting an access token from {url}: HTTP {status}: {message}")]
    Token {
        /// Token URL.
        url: RedactedUrl,
        /// HTTP status.
        status: u16,
        /// The server's `error`/`error_description`.
        message: String,
    },
    /// A request could not be sent or its response not read.
    #[error("request to {url} failed: {cause}")]
    Http {
        /// Request URL.
        url: RedactedUrl,
        /// The whole cause chain as text (reqwest hides the useful part, e.g. "invalid peer
        /// certificate", in its sources), without the URL, which may be signed.
        cause: String,
    },
    /// The kick-off request was refused.
    #[error("export kick-off at {url} failed: HTTP {status}: {message}")]
    Kickoff {
        /// Kick-off URL.
        url: RedactedUrl,
        /// HTTP status.
        status: u16,
        /// The server's OperationOutcome text, or the start of its body.
        message: String,
    },
    /// The kick-off answer had no usable `Content-Location`.
    #[error("export kick-off at {url} answered {status} without a usable Content-Location header")]
    NoContentLocation {
        /// Kick-off URL.
        url: RedactedUrl,
        /// HTTP status.
        status: u16,
    },
    /// The status endpoint reported a failed export (or kept failing).
    #[error("export status {url}: HTTP {status}: {message}")]
    Status {
        /// Status URL.
        url: RedactedUrl,
        /// HTTP status.
        status: u16,
        /// The server's OperationOutcome text, or the start of its body.
        message: String,
    },
    /// The export did not complete within `--max-wait`.
    #[error("the export did not complete within {0:?} (--max-wait); resume later with --resume")]
    Timeout(Duration),
    /// The manifest was not valid JSON or lacked required parts.
    #[error("invalid manifest from {url}: {reason}")]
    Manifest {
        /// Status or page URL.
        url: RedactedUrl,
        /// Why.
        reason: String,
    },
    /// A downloaded file's content is wrong (resourceType, count, line length, JSON).
    #[error("{path}: line {line}: {reason}")]
    Content {
        /// Downloaded file.
        path: PathBuf,
        /// 1-based line number (0 for the whole file).
        line: u64,
        /// Why.
        reason: String,
    },
    /// A file download failed after its retries.
    #[error("download of {url} failed: {reason}")]
    Download {
        /// File URL.
        url: RedactedUrl,
        /// Why.
        reason: String,
    },
    /// Reading or writing a local file failed.
    ///
    /// The OS error is part of the message and deliberately not a `source()`: error reporters
    /// that print the chain would otherwise say it twice ("No space left on device (os error
    /// 28): No space left on device (os error 28)").
    #[error("{path}: {error}")]
    Io {
        /// File.
        path: PathBuf,
        /// Cause.
        error: std::io::Error,
    },
    /// The output directory's job state does not allow the operation.
    #[error("{0}")]
    Job(String),
    /// A bad option value.
    #[error("{0}")]
    Usage(String),
}

/// Shorthand.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn http(url: &url::Url, e: reqwest::Error) -> Self {
        // reqwest puts the URL (query included) in its Display; ours is redacted instead.
        Error::Http {
            url: RedactedUrl::new(url.clone()),
            cause: cause_chain(&e.without_url()),
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            error: source,
        }
    }
}

/// `e` and its sources joined by ": ", skipping a part its predecessor already ends with
/// (hyper and reqwest repeat themselves).
fn cause_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let part = s.to_string();
        if !out.ends_with(&part) {
            out.push_str(": ");
            out.push_str(&part);
        }
        source = s.source();
    }
    out
}
