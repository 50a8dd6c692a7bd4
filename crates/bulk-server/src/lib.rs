//! A small FHIR Bulk Data server over a directory of NDJSON files, for tests and the demo.
//!
//! [`TestServer::start`] binds two listeners on 127.0.0.1 (port 0): the FHIR server at
//! [`TestServer::base_url`] (`http://127.0.0.1:{port}/fhir`) and an "object store" reached as
//! `http://localhost:{port2}`, which file downloads are redirected to when
//! [`Faults::redirect_to_other_host`] is set. It implements system, `Group/{id}` and
//! `Patient` `$export` (GET and POST), SMART Backend Services (`private_key_jwt` verified against
//! a registered JWKS, RS384/ES384 and friends), status polling with `Retry-After`/`X-Progress`,
//! paged manifests, gzip, Range requests and DELETE. Every request is recorded
//! ([`TestServer::requests`]) so tests can assert on what the client sent, e.g. whether an
//! `Authorization` header reached the other host.
//!
//! The data directory holds `{Type}.ndjson` files (one resource per line); each type becomes
//! one or more output files of [`Config::lines_per_file`] lines.
//!
//! Fault switches live in [`Faults`]; each models a behaviour seen in real servers (see
//! `docs/fetch.md`).

#![deny(missing_docs)]

mod auth;
pub mod demo;
mod export;
mod search;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use auth::RegisteredClient;
pub use search::{NextLinks, PageFault, SearchConfig};

/// How the server encodes `Retry-After` on a 429.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RetryAfter {
    /// Delta seconds, e.g. `Retry-After: 3600`.
    Seconds(u64),
    /// An absolute Unix time in seconds, this many seconds from now, as a bare number (a
    /// well-known server does this on 429).
    EpochSeconds(u64),
    /// An absolute Unix time in **milliseconds**, this many seconds from now (the SMART
    /// reference server's 429 sends `Date.now() + delay`).
    EpochMillis(u64),
    /// An HTTP-date this many seconds from now.
    HttpDateIn(u64),
}

/// How downloaded files are compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Gzip {
    /// Plain NDJSON.
    #[default]
    Off,
    /// gzip with `Content-Encoding: gzip`.
    WithHeader,
    /// gzip bytes without saying so (seen in the wild).
    Silent,
    /// gzip with `Content-Encoding: gzip` only when the request's `Accept-Encoding` offers
    /// gzip, identity otherwise (what a well-behaved server does; Range requests without
    /// `Accept-Encoding` get identity bytes).
    Negotiated,
}

/// Fault switches. All off by default.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct Faults {
    /// The first N status polls answer 500 with an OperationOutcome whose issue code is `transient`.
    pub transient_status_errors: u32,
    /// The first N status polls answer 500 with a non-transient OperationOutcome (a failed job).
    pub fatal_status_error: bool,
    /// Kick-off answers 500 with an OperationOutcome.
    pub kickoff_failure: bool,
    /// These resource types fail to generate: they appear in the manifest `error` list as
    /// OperationOutcome NDJSON files instead of in `output`.
    pub failing_types: Vec<String>,
    /// The SMART reference server's `some_file_generation_failed`: the `n`-th (1-based) output
    /// file of the type is left out of `output`; in its place the `error` list gets an entry
    /// whose `count` is the failed file's line count, while that error file holds a single
    /// OperationOutcome ("Failed to export {n}.{Type}.ndjson").
    pub failed_files: Vec<(String, usize)>,
    /// The SMART reference server's `fileError`: downloading the `n`-th (1-based) output file
    /// of the type answers 200 with one OperationOutcome line instead of the resources.
    pub file_error: Vec<(String, usize)>,
    /// The first manifest's file links are expired (410); re-polling the status URL returns fresh ones.
    pub expire_links_once: bool,
    /// Access tokens stop working after this many uses (401), as if they expired mid-export.
    pub token_uses: Option<u32>,
    /// The first N token requests answer 503 (a flaky token endpoint).
    pub token_5xx: u32,
    /// Every token request answers this status with an `error_description` that echoes the
    /// request's form body (assertion or client secret included), as careless servers do:
    /// the client must not show it.
    pub token_error_echo: Option<u16>,
    /// The first N status polls answer 429 with this `Retry-After`.
    pub rate_limit_polls: Option<(u32, RetryAfter)>,
    /// The first download attempt of each file answers 429 with this `Retry-After`.
    pub rate_limit_downloads: Option<RetryAfter>,
    /// The first download of each file (without `Range`) is cut off after half of its bytes.
    pub drop_mid_file: bool,
    /// Sleep this long between 1 KiB chunks of every download.
    pub slow_chunks: Option<Duration>,
    /// Hold every file body until this many are being sent at once (once; 0: off), so a test
    /// proves parallel downloads by [`TestServer::most_downloads_at_once`], not by the clock.
    pub downloads_together: usize,
    /// `Content-Location` is a relative reference.
    pub relative_content_location: bool,
    /// File URLs answer 307 to the other listener (`localhost` instead of `127.0.0.1`).
    pub redirect_to_other_host: bool,
    /// Add a `deleted` entry (a Bundle of DELETE requests).
    pub deleted: bool,
    /// Name the error list `outcome` (STU4 ballot) instead of `error`.
    pub stu4_outcome: bool,
    /// Leave `requiresAccessToken` out of the manifest (it then means true).
    pub omit_requires_access_token: bool,
    /// Claim one line more than the file has in `count`.
    pub wrong_count: bool,
    /// Answer 404 for `.well-known/smart-configuration` (the client must fall back to the
    /// CapabilityStatement's `oauth-uris` extension).
    pub no_smart_configuration: bool,
    /// Send `expires_in` as a string.
    pub expires_in_as_string: bool,
    /// Write files with CRLF line ends and blank lines.
    pub messy_ndjson: bool,
    /// Put a fake signature query string on file URLs (`?sig=...`), like signed cloud URLs.
    pub signed_urls: bool,
}

/// A certificate chain and key (PEM) to serve the FHIR listener over HTTPS.
#[derive(Clone)]
#[non_exhaustive]
pub struct Tls {
    /// Leaf certificate first, then intermediates.
    pub cert_chain_pem: String,
    /// PKCS#8 private key.
    pub key_pem: String,
}

impl Tls {
    /// A chain and key.
    #[must_use]
    pub fn new(cert_chain_pem: String, key_pem: String) -> Self {
        Self {
            cert_chain_pem,
            key_pem,
        }
    }
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tls { .. }")
    }
}

/// Server configuration.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Config {
    /// Directory of `{Type}.ndjson` files.
    pub data_dir: PathBuf,
    /// Clients allowed to authenticate. Empty means an open server (no auth at all).
    pub clients: Vec<RegisteredClient>,
    /// Access-token lifetime (`expires_in`).
    pub token_lifetime: Duration,
    /// Value of `requiresAccessToken` in manifests (when auth is on).
    pub requires_access_token: bool,
    /// Status polls answered 202 before the manifest is ready.
    pub polls_before_ready: u32,
    /// `Retry-After` seconds on 202.
    pub retry_after_secs: u64,
    /// Lines per output file.
    pub lines_per_file: usize,
    /// Files per manifest page; `None` means one manifest.
    pub page_size: Option<usize>,
    /// Compression of downloads.
    pub gzip: Gzip,
    /// Fault switches.
    pub faults: Faults,
    /// Send every download as one HTTP chunk per NDJSON line, without `Content-Length` (the
    /// SMART reference server streams this way); otherwise 64 KiB chunks (1 KiB with
    /// [`Faults::slow_chunks`]).
    pub chunk_per_line: bool,
    /// Serve the FHIR listener over HTTPS (the other host stays plain HTTP).
    pub tls: Option<Tls>,
    /// FHIR search (`GET [base]/{Type}?...`) and whether `$export` is offered.
    pub search: SearchConfig,
}

impl Config {
    /// A server over `data_dir` with no auth, no faults, ready after one 202.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            clients: Vec::new(),
            token_lifetime: Duration::from_secs(300),
            requires_access_token: true,
            polls_before_ready: 1,
            retry_after_secs: 0,
            lines_per_file: 1000,
            page_size: None,
            gzip: Gzip::Off,
            faults: Faults::default(),
            chunk_per_line: false,
            tls: None,
            search: SearchConfig::default(),
        }
    }
}

/// One request as the server saw it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SeenRequest {
    /// HTTP method.
    pub method: String,
    /// `Host` header.
    pub host: String,
    /// Path and query.
    pub path: String,
    /// The `Authorization` header, if any.
    pub authorization: Option<String>,
    /// The `Range` header, if any.
    pub range: Option<String>,
    /// The `Prefer` header, if any.
    pub prefer: Option<String>,
    /// The `Accept` header, if any.
    pub accept: Option<String>,
    /// The response status code.
    pub status: u16,
    /// Every request header (name lowercased), in order.
    pub headers: Vec<(String, String)>,
    /// The response's `Content-Encoding`, if any.
    pub content_encoding: Option<String>,
}

#[derive(Debug, Default)]
pub(crate) struct State {
    pub(crate) jobs: HashMap<String, export::Job>,
    pub(crate) tokens: HashMap<String, auth::Token>,
    pub(crate) jtis: HashSet<String>,
    pub(crate) token_calls: u32,
    pub(crate) seen: Vec<SeenRequest>,
    pub(crate) next_job: u64,
    /// Per (job, file) download attempts, for once-only faults.
    pub(crate) attempts: BTreeMap<(String, usize), export::Attempts>,
    pub(crate) kickoff_params: Vec<Vec<(String, String)>>,
}

#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: Config,
    pub(crate) origin: String,
    pub(crate) other_origin: String,
    pub(crate) state: Mutex<State>,
    pub(crate) search: search::SearchState,
    pub(crate) bodies: export::OpenBodies,
}

impl Shared {
    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A running server; stops when dropped.
#[derive(Debug)]
pub struct TestServer {
    shared: Arc<Shared>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// Errors starting the server.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Binding a listener failed.
    #[error("binding 127.0.0.1: {0}")]
    Bind(#[source] std::io::Error),
    /// The TLS certificate or key could not be used.
    #[error("TLS setup: {0}")]
    Tls(String),
}

impl TestServer {
    /// Bind both listeners on 127.0.0.1 and serve on the current tokio runtime.
    ///
    /// # Errors
    /// When a listener cannot be bound.
    pub async fn start(config: Config) -> Result<Self, Error> {
        let main = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .map_err(Error::Bind)?;
        let other = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .map_err(Error::Bind)?;
        let main_port = main.local_addr().map_err(Error::Bind)?.port();
        let other_port = other.local_addr().map_err(Error::Bind)?.port();
        let acceptor = config.tls.as_ref().map(tls_acceptor).transpose()?;
        let scheme = if acceptor.is_some() { "https" } else { "http" };
        let shared = Arc::new(Shared {
            config,
            origin: format!("{scheme}://127.0.0.1:{main_port}"),
            other_origin: format!("http://localhost:{other_port}"),
            state: Mutex::new(State::default()),
            search: search::SearchState::default(),
            bodies: export::OpenBodies::default(),
        });
        let router = export::router(Arc::clone(&shared));
        let r2 = router.clone();
        let tasks = vec![
            tokio::spawn(async move {
                match acceptor {
                    Some(acceptor) => serve_tls(main, router, acceptor).await,
                    None => {
                        let _ = axum::serve(main, router).await;
                    }
                }
            }),
            tokio::spawn(async move {
                let _ = axum::serve(other, r2).await;
            }),
        ];
        Ok(Self { shared, tasks })
    }

    /// The FHIR base URL, `http://127.0.0.1:{port}/fhir`.
    #[must_use]
    pub fn base_url(&self) -> String {
        format!("{}/fhir", self.shared.origin)
    }

    /// The token endpoint URL.
    #[must_use]
    pub fn token_url(&self) -> String {
        format!("{}/auth/token", self.shared.origin)
    }

    /// Origin of the second listener, `http://localhost:{port}`.
    #[must_use]
    pub fn other_origin(&self) -> String {
        self.shared.other_origin.clone()
    }

    /// Every request seen so far, in order.
    #[must_use]
    pub fn requests(&self) -> Vec<SeenRequest> {
        self.shared.lock().seen.clone()
    }

    /// Query parameters of every kick-off request (GET query or POST Parameters), in order.
    #[must_use]
    pub fn kickoff_params(&self) -> Vec<Vec<(String, String)>> {
        self.shared.lock().kickoff_params.clone()
    }

    /// Number of search requests answered (type and system level, faults included).
    #[must_use]
    pub fn search_requests(&self) -> usize {
        self.shared
            .search
            .requests
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The most file bodies that were being sent at once.
    #[must_use]
    pub fn most_downloads_at_once(&self) -> usize {
        self.shared.bodies.most()
    }

    /// Number of token requests answered (including failures).
    #[must_use]
    pub fn token_calls(&self) -> u32 {
        self.shared.lock().token_calls
    }

    /// Number of export jobs that exist (not deleted).
    #[must_use]
    pub fn live_jobs(&self) -> usize {
        self.shared
            .lock()
            .jobs
            .values()
            .filter(|j| !j.deleted)
            .count()
    }
}

fn tls_acceptor(tls: &Tls) -> Result<tokio_rustls::TlsAcceptor, Error> {
    use rustls_pki_types::pem::PemObject as _;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(tls.cert_chain_pem.as_bytes())
            .collect::<Result<_, _>>()
            .map_err(|e| Error::Tls(format!("certificate: {e}")))?;
    let key = PrivateKeyDer::from_pem_slice(tls.key_pem.as_bytes())
        .map_err(|e| Error::Tls(format!("key: {e}")))?;
    let config = tokio_rustls::rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| Error::Tls(e.to_string()))?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

async fn serve_tls(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    acceptor: tokio_rustls::TlsAcceptor,
) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let (acceptor, router) = (acceptor.clone(), router.clone());
        tokio::spawn(async move {
            // A failed handshake (e.g. a client that does not trust the CA) just drops the connection.
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            let service = hyper_util::service::TowerToHyperService::new(router);
            let _ =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await;
        });
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}
