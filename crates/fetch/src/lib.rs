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
//! ```no_run
//! # async fn run() -> Result<(), flatfhir_fetch::Error> {
//! use std::sync::Arc;
//! use flatfhir_fetch::{Connection, Credentials, Options};
//! let conn = Connection::new("https://bulk.example/fhir".parse().unwrap(), Credentials::None);
//! let summary = flatfhir_fetch::fetch(Options::new(conn, "out"), Arc::new(|_: &flatfhir_fetch::Event| {})).await?;
//! println!("{} resources", summary.resources);
//! # Ok(()) }
//! ```

#![deny(missing_docs)]

mod auth;
mod download;
mod durable;
mod error;
mod http;
mod job;
mod kickoff;
mod log;
mod manifest;
mod poll;
mod redact;

/// Entry points for the fuzz targets in `fuzz/`. Not a stable API.
#[doc(hidden)]
pub mod fuzzing;

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::json;
use url::Url;

pub use auth::{Credentials, SigningKey, parse_alg};
pub use error::{Error, Result};
pub use job::{FileState, FileStatus, JOB_FILE, JobState, Phase};
pub use kickoff::{KickoffParams, Level, ParamStyle};
pub use manifest::ItemType;
pub use poll::{Timing, parse_percent, parse_retry_after};
pub use redact::{RedactedUrl, Secret, register_secret, scrub};

use download::Failure;
use manifest::Manifest;

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
}

/// Everything [`fetch`] needs.
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
}

/// Something that happened, for progress displays.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Event {
    /// The server accepted the kick-off.
    KickedOff {
        /// Status URL (redacted).
        status_url: String,
    },
    /// Continuing a recorded job.
    Resumed {
        /// Status URL (redacted).
        status_url: String,
        /// Files the job knows of so far (0 while the manifest has not arrived).
        files: usize,
        /// Of those, files already complete.
        done: usize,
    },
    /// The export is still running.
    Progress {
        /// `X-Progress` as sent.
        x_progress: Option<String>,
        /// A percentage parsed from it.
        percent: Option<f64>,
        /// Wait before the next poll.
        wait: Duration,
    },
    /// A request is retried after a wait.
    Retrying {
        /// What and why.
        what: String,
        /// The wait.
        wait: Duration,
    },
    /// A manifest page arrived.
    Manifest {
        /// Page number (0-based).
        page: usize,
        /// Files in the whole job so far.
        files: usize,
    },
    /// Some links failed (403/404/410); re-polling for fresh ones.
    Repolling {
        /// Files affected.
        files: usize,
    },
    /// The server rate-limited a download (429): one fewer download runs at a time from now on.
    Throttled {
        /// Downloads allowed at a time now (at least 1).
        parallel: usize,
    },
    /// A download started.
    FileStarted {
        /// Path relative to DIR.
        path: String,
        /// Resource type.
        resource_type: String,
    },
    /// Bytes arrived.
    Bytes(u64),
    /// A file is complete under its final name.
    FileDone {
        /// Path relative to DIR.
        path: String,
        /// Resource type.
        resource_type: String,
        /// Resources in it.
        resources: u64,
        /// Bytes downloaded.
        bytes: u64,
    },
    /// Something worth knowing that does not fail the file, e.g. an error file whose manifest
    /// `count` disagrees with its content.
    Warning {
        /// Path relative to DIR.
        path: String,
        /// What.
        message: String,
    },
    /// A file failed for good.
    FileFailed {
        /// Path relative to DIR.
        path: String,
        /// Why.
        reason: String,
    },
    /// Every output file of a resource type is complete (the manifest is final).
    TypeComplete {
        /// Resource type.
        resource_type: String,
        /// Its files, absolute paths.
        files: Vec<PathBuf>,
    },
}

/// Receives [`Event`]s; closures `Fn(&Event)` qualify.
pub trait Observer: Send + Sync {
    /// Called for each event, from any task.
    fn on_event(&self, event: &Event);
}

impl<F: Fn(&Event) + Send + Sync> Observer for F {
    fn on_event(&self, event: &Event) {
        self(event);
    }
}

/// One issue from the manifest's error files.
#[derive(Debug, Clone, serde::Serialize)]
#[non_exhaustive]
pub struct Issue {
    /// `fatal`, `error`, `warning` or `information`.
    pub severity: String,
    /// Issue code.
    pub code: String,
    /// `diagnostics` or `details.text`.
    pub text: String,
    /// The error file it came from (relative to DIR).
    pub file: String,
}

/// What an export produced.
#[derive(Debug, Clone, serde::Serialize)]
#[non_exhaustive]
pub struct Summary {
    /// Status URL (redacted).
    pub status_url: String,
    /// `transactionTime` of the manifest. Only a [complete](Summary::complete) export may be
    /// followed by an incremental one with this as `--since`: after failures, it would skip
    /// the data that failed.
    pub transaction_time: Option<String>,
    /// Files complete.
    pub files: usize,
    /// Resources in output files.
    pub resources: u64,
    /// Bytes downloaded.
    pub bytes: u64,
    /// Output resources per type.
    pub types: BTreeMap<String, u64>,
    /// Files that failed, with the reason.
    pub failed: Vec<(String, String)>,
    /// Issues reported in the manifest's error files.
    pub issues: Vec<Issue>,
    /// Seconds the run took.
    pub seconds: f64,
    /// Whether the export was deleted on the server afterwards.
    pub deleted_on_server: bool,
}

impl Summary {
    /// Everything the server exported is here and the server reported no error: the only
    /// state in which `transaction_time` is a safe `--since` for the next export.
    #[must_use]
    pub fn complete(&self) -> bool {
        self.failed.is_empty() && !self.has_error_issues()
    }

    /// Whether the server reported any `error` or `fatal` issue.
    #[must_use]
    pub fn has_error_issues(&self) -> bool {
        self.issues
            .iter()
            .any(|i| i.severity == "error" || i.severity == "fatal")
    }
}

#[derive(Debug)]
pub(crate) struct Settings {
    pub(crate) timing: Timing,
    pub(crate) kickoff: KickoffParams,
    pub(crate) max_line_bytes: usize,
}

/// Shared by every task of a run.
pub(crate) struct Ctx {
    pub(crate) opts: Settings,
    pub(crate) http: http::Http,
    pub(crate) auth: auth::Authenticator,
    pub(crate) log: Arc<log::EventLog>,
    pub(crate) dir: PathBuf,
    observer: Arc<dyn Observer>,
    /// Download slots; shrinks by one per 429 (Oracle Health rate-limits parallel downloads).
    slots: Arc<tokio::sync::Semaphore>,
    parallel: std::sync::atomic::AtomicUsize,
}

impl std::fmt::Debug for Ctx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctx")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl Ctx {
    pub(crate) fn observe(&self, e: Event) {
        self.observer.on_event(&e);
    }

    /// After a 429 on a download: permanently give up one download slot, keeping at least one.
    pub(crate) fn throttle(&self) {
        let now = self
            .parallel
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |p| {
                (p > 1).then(|| p - 1)
            });
        if let Ok(before) = now {
            let slots = Arc::clone(&self.slots);
            // The slot may be busy now: take it when it frees up, and never give it back.
            tokio::spawn(async move {
                if let Ok(p) = slots.acquire_owned().await {
                    p.forget();
                }
            });
            self.observe(Event::Throttled {
                parallel: before - 1,
            });
        }
    }

    fn new(
        conn: Connection,
        dir: &Path,
        kickoff: KickoffParams,
        max_line_bytes: usize,
        observer: Arc<dyn Observer>,
        parallel: usize,
    ) -> Result<Self> {
        let http = http::Http::new(conn.ca_cert.as_deref(), &conn.headers)?;
        let auth = auth::Authenticator::new(
            http.clone(),
            conn.credentials,
            conn.scope,
            conn.fhir_url,
            conn.token_url,
            conn.timing.clone(),
        );
        Ok(Self {
            opts: Settings {
                timing: conn.timing,
                kickoff,
                max_line_bytes,
            },
            http,
            auth,
            log: Arc::new(log::EventLog::open(dir)?),
            dir: dir.to_owned(),
            observer,
            slots: Arc::new(tokio::sync::Semaphore::new(parallel.max(1))),
            parallel: std::sync::atomic::AtomicUsize::new(parallel.max(1)),
        })
    }
}

/// Now as a FHIR instant with milliseconds (UTC), for `log.ndjson`. The calendar is the
/// `time` crate's (one well-kept implementation instead of a copy of the days-to-date
/// algorithm in each crate).
pub(crate) fn now_instant_ms() -> String {
    instant_ms(time::OffsetDateTime::now_utc())
}

/// `t` as a FHIR instant with milliseconds, `2024-05-01T12:00:00.000Z` (`t` in UTC).
fn instant_ms(t: time::OffsetDateTime) -> String {
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

#[cfg(test)]
mod instant_tests {
    /// Leap days, the epoch and a last millisecond of a century, as Python's `datetime`
    /// formats them.
    #[test]
    fn instants_have_milliseconds_and_the_right_calendar_day() {
        for (ns, want) in [
            (1_709_210_096_789_000_000, "2024-02-29T12:34:56.789Z"),
            (951_782_400_000_000_000, "2000-02-29T00:00:00.000Z"),
            (0, "1970-01-01T00:00:00.000Z"),
            (4_102_444_799_999_000_000, "2099-12-31T23:59:59.999Z"),
        ] {
            let t = time::OffsetDateTime::from_unix_timestamp_nanos(ns).unwrap();
            assert_eq!(super::instant_ms(t), want);
        }
    }
}

struct Run {
    ctx: Ctx,
    job: Mutex<JobState>,
    save_turn: Mutex<()>,
    manifests_final: AtomicBool,
    types_announced: Mutex<HashSet<String>>,
}

impl Run {
    fn lock(&self) -> std::sync::MutexGuard<'_, JobState> {
        self.job
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Save the job state on a blocking thread (it fsyncs). Saves take turns (they share the
    /// temp file) and each writes the state as it is when its turn comes, so a later save is
    /// never overwritten by an older one; downloads keep the job lock only to serialise.
    /// `last`: also fsync DIR (the run's final save).
    async fn save(self: &Arc<Self>, last: bool) -> Result<()> {
        let run = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let _turn = run
                .save_turn
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let bytes = run.lock().to_bytes()?;
            job::save_bytes(&run.ctx.dir, &bytes, last)
        })
        .await
        .map_err(|e| Error::Job(format!("saving the job state: {e}")))?
    }

    /// Record a manifest page: new files get their `{n}` names, known ones a fresh URL.
    fn record_page(&self, page: usize, raw: &serde_json::Value, m: &Manifest) -> Vec<usize> {
        let mut job = self.lock();
        if page < job.manifests.len() {
            job.manifests[page] = raw.clone();
        } else {
            job.manifests.push(raw.clone());
        }
        if job.transaction_time.is_none() {
            job.transaction_time.clone_from(&m.transaction_time);
        }
        let mut touched = Vec::new();
        for e in &m.entries {
            let rt = match e.item {
                ItemType::Output => e.resource_type.clone().unwrap_or_else(|| "Unknown".into()),
                ItemType::Error => "OperationOutcome".into(),
                ItemType::Deleted => "Bundle".into(),
            };
            if let Some(i) = job
                .files
                .iter()
                .position(|f| f.page == page && f.item == e.item && f.index == e.index)
            {
                job.files[i].url = e.url.to_string();
                job.files[i].requires_token = m.requires_access_token;
                touched.push(i);
                continue;
            }
            let n = job.next_n(e.item, &rt);
            job.files.push(FileState {
                item: e.item,
                page,
                index: e.index,
                path: job::file_path(e.item, n, &rt),
                resource_type: rt,
                url: e.url.to_string(),
                count: e.count,
                requires_token: m.requires_access_token,
                status: FileStatus::Pending,
            });
            touched.push(job.files.len() - 1);
        }
        touched
    }

    /// Announce resource types whose files are all complete, once the manifest is final.
    fn announce_complete_types(&self) {
        if !self.manifests_final.load(Ordering::SeqCst) {
            return;
        }
        let job = self.lock();
        let mut by_type: BTreeMap<&str, (bool, Vec<PathBuf>)> = BTreeMap::new();
        for f in job.files.iter().filter(|f| f.item == ItemType::Output) {
            let entry = by_type
                .entry(&f.resource_type)
                .or_insert((true, Vec::new()));
            entry.0 &= matches!(f.status, FileStatus::Done { .. });
            entry.1.push(self.ctx.dir.join(&f.path));
        }
        let mut announced = self
            .types_announced
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for (t, (done, files)) in by_type {
            if done && announced.insert(t.to_owned()) {
                self.ctx.observe(Event::TypeComplete {
                    resource_type: t.to_owned(),
                    files,
                });
            }
        }
    }
}

/// Download file `i`; `Some(i)` when its link looked expired and a re-poll may help.
async fn run_one(run: Arc<Run>, i: usize, expired_is_final: bool) -> Result<Option<usize>> {
    let slot = run
        .ctx
        .slots
        .acquire()
        .await
        .map_err(|_| Error::Job("semaphore closed".into()))?;
    let file = run.lock().files[i].clone();
    if matches!(file.status, FileStatus::Done { .. }) {
        return Ok(None);
    }
    let result = download::download(&run.ctx, &file, slot).await;
    let status = match result {
        Ok(d) => {
            run.ctx.observe(Event::FileDone {
                path: file.path.clone(),
                resource_type: file.resource_type.clone(),
                resources: d.resources,
                bytes: d.bytes,
            });
            FileStatus::Done {
                resources: d.resources,
                bytes: d.bytes,
            }
        }
        Err(Failure::Expired(_)) if !expired_is_final => return Ok(Some(i)),
        Err(Failure::Expired(reason)) => FileStatus::Failed {
            reason: format!("link still failing after a re-poll: {reason}"),
        },
        Err(Failure::Failed(e)) => FileStatus::Failed {
            reason: e.to_string(),
        },
    };
    if let FileStatus::Failed { reason } = &status {
        run.ctx.observe(Event::FileFailed {
            path: file.path.clone(),
            reason: reason.clone(),
        });
    }
    run.lock().files[i].status = status;
    run.save(false).await?;
    run.announce_complete_types();
    Ok(None)
}

/// Run (or with `resume`, continue) an export into `opts.out_dir`.
///
/// Returns a [`Summary`] once every file has been tried; files that failed are listed in it
/// (and in the job state, so `--resume` retries them). `log.ndjson` ends with
/// `export_complete` only when [`Summary::complete`]; otherwise with `export_partial` (the
/// server's error files report errors), `export_failed` (files failed, or the run stopped
/// with an error) or `export_interrupted` (the future was dropped, e.g. on Ctrl-C).
///
/// # Errors
/// Kick-off refusal, a failed export, auth failures, `--max-wait` exceeded, local I/O, and
/// `resume` of a cancelled export.
pub async fn fetch(opts: Options, observer: Arc<dyn Observer>) -> Result<Summary> {
    let started = Instant::now();
    let dir = opts.out_dir.clone();
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let existing = JobState::load(&dir)?;
    let job = match (existing, opts.resume) {
        (Some(j), true) if j.phase == Phase::Cancelled => {
            return Err(Error::Job(format!(
                "--resume: the export in {} was cancelled (deleted on the server), so it cannot \
                 be continued; its {} finished file(s) stay in place. Start a new export in \
                 another directory",
                dir.display(),
                j.files
                    .iter()
                    .filter(|f| matches!(f.status, FileStatus::Done { .. }))
                    .count()
            )));
        }
        (Some(mut j), true) => {
            // Failed files get another chance on resume.
            for f in &mut j.files {
                if matches!(f.status, FileStatus::Failed { .. }) {
                    f.status = FileStatus::Pending;
                }
            }
            j
        }
        (None, true) => {
            return Err(Error::Job(format!(
                "--resume: {} holds no job state ({JOB_FILE}); start a new export without --resume",
                dir.display()
            )));
        }
        (Some(j), false) => {
            return Err(Error::Job(format!(
                "{} already holds an export ({:?}); continue it with --resume, or choose another --out",
                dir.display(),
                j.phase
            )));
        }
        (None, false) => JobState {
            version: 1,
            fhir_url: opts.conn.fhir_url.to_string(),
            kickoff_url: kickoff::kickoff_url(&opts.conn.fhir_url, &opts.kickoff).to_string(),
            status_url: None,
            phase: Phase::Starting,
            transaction_time: None,
            manifests: Vec::new(),
            files: Vec::new(),
            client_id: match &opts.conn.credentials {
                Credentials::PrivateKey { client_id, .. }
                | Credentials::ClientSecret { client_id, .. } => Some(client_id.clone()),
                _ => None,
            },
            private_key_path: opts.conn.private_key_path.clone(),
            kid: match &opts.conn.credentials {
                Credentials::PrivateKey { key, .. } => Some(key.kid().to_owned()),
                _ => None,
            },
            token_url: opts.conn.token_url.as_ref().map(ToString::to_string),
            deleted_on_server: false,
        },
    };
    let fhir_url = opts.conn.fhir_url.clone();
    let delete = opts.delete_on_success;
    let ctx = Ctx::new(
        opts.conn,
        &dir,
        opts.kickoff,
        opts.max_line_bytes,
        observer,
        opts.parallel,
    )?;
    let mut closing = Closing {
        log: Arc::clone(&ctx.log),
        started,
        armed: true,
    };
    let result = run_export(ctx, job, &fhir_url, delete, started).await;
    closing.armed = false;
    if let Err(e) = &result {
        closing.log.emit(
            "export_failed",
            json!({"message": e.to_string(), "duration": closing.millis()}),
        );
    }
    closing.log.flush();
    result
}

/// Writes `export_interrupted` when a run's future is dropped before it ends (Ctrl-C).
struct Closing {
    log: Arc<log::EventLog>,
    started: Instant,
    armed: bool,
}

impl Closing {
    fn millis(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

impl Drop for Closing {
    fn drop(&mut self) {
        if self.armed {
            self.log.emit(
                "export_interrupted",
                json!({"message": "stopped before the end; continue with --resume",
                       "duration": self.millis()}),
            );
            self.log.flush();
        }
    }
}

async fn run_export(
    ctx: Ctx,
    mut job: JobState,
    fhir_url: &Url,
    delete: bool,
    started: Instant,
) -> Result<Summary> {
    let dir = ctx.dir.clone();
    let status_url = if let Some(s) = &job.status_url {
        let u = Url::parse(s).map_err(|e| Error::Job(format!("job state: bad status URL: {e}")))?;
        ctx.log
            .set_export_id(RedactedUrl::new(u.clone()).redacted());
        ctx.observe(Event::Resumed {
            status_url: RedactedUrl::new(u.clone()).redacted(),
            files: job.files.len(),
            done: job
                .files
                .iter()
                .filter(|f| matches!(f.status, FileStatus::Done { .. }))
                .count(),
        });
        u
    } else {
        let u = kickoff::kickoff(&ctx, fhir_url).await?;
        job.status_url = Some(u.to_string());
        job.phase = Phase::Polling;
        job.save(&dir)?;
        ctx.observe(Event::KickedOff {
            status_url: RedactedUrl::new(u.clone()).redacted(),
        });
        u
    };
    let polling = job.phase == Phase::Polling;
    let run = Arc::new(Run {
        ctx,
        job: Mutex::new(job),
        save_turn: Mutex::new(()),
        manifests_final: AtomicBool::new(!polling),
        types_announced: Mutex::new(HashSet::new()),
    });
    let mut tasks = tokio::task::JoinSet::new();
    if polling {
        let pages = follow_manifests(&run, &status_url, started, &mut tasks, false).await?;
        let (o, d, e) = {
            let mut job = run.lock();
            job.phase = Phase::Downloading;
            counts(&job)
        };
        run.save(false).await?;
        run.ctx.log.emit(
            "manifest_complete",
            json!({"transactionTime": run.lock().transaction_time, "totalOutputFileCount": o,
                   "totalDeletedFileCount": d, "totalErrorFileCount": e, "totalManifests": pages}),
        );
        run.manifests_final.store(true, Ordering::SeqCst);
        run.announce_complete_types();
    } else {
        let n = run.lock().files.len();
        for i in 0..n {
            tasks.spawn(run_one(Arc::clone(&run), i, false));
        }
    }
    let mut expired = Vec::new();
    while let Some(r) = tasks.join_next().await {
        if let Some(i) = r.map_err(|e| Error::Job(format!("download task: {e}")))?? {
            expired.push(i);
        }
    }
    if !expired.is_empty() {
        // File links expire (HAPI: ~2 h); the status URL hands out fresh ones.
        run.ctx.observe(Event::Repolling {
            files: expired.len(),
        });
        let _ = follow_manifests(&run, &status_url, started, &mut tasks, true).await?;
        for i in expired {
            tasks.spawn(run_one(Arc::clone(&run), i, true));
        }
        while let Some(r) = tasks.join_next().await {
            r.map_err(|e| Error::Job(format!("download task: {e}")))??;
        }
    }
    finish(&run, &status_url, delete, started).await
}

fn counts(job: &JobState) -> (usize, usize, usize) {
    let c = |k| job.files.iter().filter(|f| f.item == k).count();
    (
        c(ItemType::Output),
        c(ItemType::Deleted),
        c(ItemType::Error),
    )
}

/// Poll the status URL to a manifest and follow `next` pages, starting downloads for each page
/// as it arrives (unless `links_only`, when only URLs are refreshed). Returns the page count.
async fn follow_manifests(
    run: &Arc<Run>,
    status_url: &Url,
    started: Instant,
    tasks: &mut tokio::task::JoinSet<Result<Option<usize>>>,
    links_only: bool,
) -> Result<usize> {
    let mut page_url = status_url.clone();
    let mut page = 0;
    let mut merged: Option<serde_json::Value> = None;
    loop {
        let raw = poll::until_manifest(&run.ctx, &page_url, started).await?;
        let m = Manifest::parse(&raw, &page_url).map_err(|reason| Error::Manifest {
            url: page_url.clone().into(),
            reason,
        })?;
        if !links_only {
            merge_manifest_page(&mut merged, &raw);
            if let Some(all) = &merged {
                write_manifest(&run.ctx.dir, all)?;
            }
        }
        if page == 0 && !links_only {
            let c = |k| m.entries.iter().filter(|e| e.item == k).count();
            run.ctx.log.emit(
                "status_complete",
                json!({"transactionTime": m.transaction_time, "outputFileCount": c(ItemType::Output),
                       "deletedFileCount": c(ItemType::Deleted), "errorFileCount": c(ItemType::Error)}),
            );
        }
        let touched = run.record_page(page, &raw, &m);
        let total = run.lock().files.len();
        run.ctx.observe(Event::Manifest { page, files: total });
        if !links_only {
            for i in touched {
                tasks.spawn(run_one(Arc::clone(run), i, false));
            }
        }
        // After the downloads started: the save (an fsync) need not delay them, and a crash
        // before it only means the page is polled again on --resume.
        run.save(false).await?;
        page += 1;
        match m.next {
            Some(next) => page_url = next,
            None => return Ok(page),
        }
    }
}

/// Adds a manifest page to the merged manifest: the first page as received (without its
/// `link`), then each later page's `output`, `deleted` and `error` entries appended, so
/// `manifest.json` lists every file of a paged export.
fn merge_manifest_page(merged: &mut Option<serde_json::Value>, page: &serde_json::Value) {
    match merged {
        None => {
            let mut first = page.clone();
            if let Some(o) = first.as_object_mut() {
                o.remove("link");
            }
            *merged = Some(first);
        }
        Some(all) => {
            let Some(all) = all.as_object_mut() else {
                return;
            };
            for key in ["output", "deleted", "error"] {
                let Some(more) = page.get(key).and_then(|v| v.as_array()) else {
                    continue;
                };
                let list = all
                    .entry(key)
                    .or_insert_with(|| serde_json::Value::Array(Vec::new()));
                if let Some(list) = list.as_array_mut() {
                    list.extend(more.iter().cloned());
                }
            }
        }
    }
}

/// Writes `DIR/manifest.json` atomically and durably.
fn write_manifest(dir: &std::path::Path, manifest: &serde_json::Value) -> Result<()> {
    let text = serde_json::to_vec_pretty(manifest).map_err(|e| Error::Job(e.to_string()))?;
    durable::write_atomic(&dir.join("manifest.json"), &text, true)
}

async fn finish(
    run: &Arc<Run>,
    status_url: &Url,
    delete: bool,
    started: Instant,
) -> Result<Summary> {
    let mut summary = Summary {
        status_url: RedactedUrl::new(status_url.clone()).redacted(),
        transaction_time: run.lock().transaction_time.clone(),
        files: 0,
        resources: 0,
        bytes: 0,
        types: BTreeMap::new(),
        failed: Vec::new(),
        issues: Vec::new(),
        seconds: 0.0,
        deleted_on_server: false,
    };
    let files = run.lock().files.clone();
    for f in &files {
        match &f.status {
            FileStatus::Done { resources, bytes } => {
                summary.files += 1;
                summary.bytes += bytes;
                if f.item == ItemType::Output {
                    summary.resources += resources;
                    *summary.types.entry(f.resource_type.clone()).or_default() += resources;
                }
                if f.item == ItemType::Error {
                    summary.issues.extend(read_issues(&run.ctx.dir, &f.path));
                }
            }
            FileStatus::Failed { reason } => summary.failed.push((f.path.clone(), reason.clone())),
            FileStatus::Pending => summary
                .failed
                .push((f.path.clone(), "not downloaded".into())),
        }
    }
    if delete && summary.failed.is_empty() {
        // A 404 counts: HAPI answers it for finished jobs.
        delete_export(&run.ctx, status_url).await?;
        summary.deleted_on_server = true;
    }
    summary.seconds = started.elapsed().as_secs_f64();
    {
        let mut job = run.lock();
        job.phase = Phase::Complete;
        job.deleted_on_server |= summary.deleted_on_server;
    }
    run.save(true).await?;
    let duration = (summary.seconds * 1000.0) as u64;
    if !summary.failed.is_empty() {
        let failures: Vec<_> = summary
            .failed
            .iter()
            .map(|(file, reason)| json!({"file": file, "message": reason}))
            .collect();
        run.ctx.log.emit(
            "export_failed",
            json!({"message": format!("{} file(s) failed; retry them with --resume", summary.failed.len()),
                   "files": summary.files, "failedFiles": summary.failed.len(), "failures": failures,
                   "resources": summary.resources, "bytes": summary.bytes, "duration": duration}),
        );
    } else if summary.has_error_issues() {
        run.ctx.log.emit(
            "export_partial",
            json!({"message": "every file downloaded, but the server's error files report errors",
                   "files": summary.files, "resources": summary.resources, "bytes": summary.bytes,
                   "issues": summary.issues.len(), "duration": duration}),
        );
    } else {
        run.ctx.log.emit(
            "export_complete",
            json!({"files": summary.files, "resources": summary.resources, "bytes": summary.bytes,
                   "attachments": 0, "duration": duration}),
        );
    }
    Ok(summary)
}

/// The issues of an error file. Nothing in it is dropped: a file that cannot be read, a line
/// that is not JSON and a line with no `issue` each become an issue saying so, so the user
/// sees that the server reported something the client could not read.
pub(crate) fn read_issues(dir: &Path, rel: &str) -> Vec<Issue> {
    let unreadable = |text: String| Issue {
        severity: "error".to_owned(),
        code: "unreadable".to_owned(),
        text,
        file: rel.to_owned(),
    };
    let text = match std::fs::read(dir.join(rel)) {
        Ok(bytes) => match String::from_utf8(bytes) {
            Ok(t) => t,
            Err(e) => {
                return vec![unreadable(format!(
                    "the error file is not UTF-8 (at byte {})",
                    e.utf8_error().valid_up_to()
                ))];
            }
        },
        Err(e) => return vec![unreadable(format!("cannot read the error file: {e}"))],
    };
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let v = match serde_json::from_str::<serde_json::Value>(line) {
            Ok(v) => v,
            Err(e) => {
                out.push(unreadable(format!("line {} is not JSON: {e}", n + 1)));
                continue;
            }
        };
        let issues = v["issue"].as_array().map_or(&[][..], Vec::as_slice);
        if issues.is_empty() {
            out.push(unreadable(format!(
                "line {} holds no issue (expected an OperationOutcome)",
                n + 1
            )));
        }
        for i in issues {
            out.push(Issue {
                severity: i["severity"].as_str().unwrap_or("error").to_owned(),
                code: i["code"].as_str().unwrap_or("").to_owned(),
                text: i["diagnostics"]
                    .as_str()
                    .or_else(|| i["details"]["text"].as_str())
                    .unwrap_or("")
                    .to_owned(),
                file: rel.to_owned(),
            });
        }
    }
    out
}

/// What a DELETE of the status URL found.
enum Deleted {
    /// The server deleted the export.
    Yes,
    /// 404: the server no longer knows the export (its text).
    NotFound(String),
}

/// DELETE the status URL.
async fn delete_export(ctx: &Ctx, status_url: &Url) -> Result<Deleted> {
    let mut renewals = 0u32;
    loop {
        let token = ctx.auth.token().await?;
        let (_, resp) = ctx
            .http
            .send(Method::DELETE, status_url, token.as_ref(), |r| {
                r.header("accept", "application/fhir+json")
            })
            .await?;
        let s = resp.status();
        if s == StatusCode::UNAUTHORIZED
            && ctx
                .auth
                .renew_after_401(token.as_ref(), &mut renewals)
                .await
        {
            continue;
        }
        if s.is_success() {
            return Ok(Deleted::Yes);
        }
        let text = resp.text().await.unwrap_or_default();
        if s == StatusCode::NOT_FOUND {
            return Ok(Deleted::NotFound(http::outcome_text(&text)));
        }
        return Err(Error::Status {
            url: RedactedUrl::new(status_url.clone()),
            status: s.as_u16(),
            message: format!("DELETE refused: {}", http::outcome_text(&text)),
        });
    }
}

fn job_and_ctx(dir: &Path, conn: Connection) -> Result<(JobState, Url, Ctx)> {
    let job = JobState::load(dir)?.ok_or_else(|| {
        Error::Job(format!(
            "{} holds no export job ({JOB_FILE} is missing)",
            dir.display()
        ))
    })?;
    let status = job.status_url.as_deref().ok_or_else(|| {
        Error::Job("the export was never accepted by the server (no status URL)".into())
    })?;
    let status =
        Url::parse(status).map_err(|e| Error::Job(format!("job state: bad status URL: {e}")))?;
    let ctx = Ctx::new(
        conn,
        dir,
        KickoffParams::default(),
        DEFAULT_MAX_LINE_BYTES,
        Arc::new(|_: &Event| {}),
        1,
    )?;
    ctx.log
        .set_export_id(RedactedUrl::new(status.clone()).redacted());
    Ok((job, status, ctx))
}

/// DELETE the export whose job state is in `dir` and mark it cancelled.
///
/// # Errors
/// No job in `dir`, auth failures, the server refusing the DELETE, or the server answering
/// 404 (it no longer has the export: already cancelled, deleted or expired; nothing was
/// deleted, and the job state is left as it was).
pub async fn cancel(dir: &Path, conn: Connection) -> Result<()> {
    let (mut job, status, ctx) = job_and_ctx(dir, conn)?;
    match delete_export(&ctx, &status).await? {
        Deleted::Yes => {
            ctx.log.emit("export_cancelled", json!({}));
            job.phase = Phase::Cancelled;
            job.save(dir)
        }
        Deleted::NotFound(text) => {
            let was = if job.phase == Phase::Cancelled || job.deleted_on_server {
                "it was already deleted"
            } else {
                "it was already deleted or has expired"
            };
            Err(Error::Status {
                url: RedactedUrl::new(status),
                status: 404,
                message: format!(
                    "{text}: the server no longer has this export ({was}); nothing was deleted"
                ),
            })
        }
    }
}

/// The server's answer to one status poll.
#[derive(Debug, Clone, serde::Serialize)]
#[non_exhaustive]
pub struct ServerStatus {
    /// HTTP status.
    pub code: u16,
    /// `X-Progress`.
    pub x_progress: Option<String>,
    /// OperationOutcome text on errors.
    pub message: Option<String>,
}

/// The job state in `dir`, plus (when `conn` is given and the job is still polling) one poll
/// of the server.
///
/// # Errors
/// No job in `dir`, or the poll could not be sent.
pub async fn status(
    dir: &Path,
    conn: Option<Connection>,
) -> Result<(JobState, Option<ServerStatus>)> {
    let Some(conn) = conn else {
        let job = JobState::load(dir)?.ok_or_else(|| {
            Error::Job(format!(
                "{} holds no export job ({JOB_FILE} is missing)",
                dir.display()
            ))
        })?;
        return Ok((job, None));
    };
    let (job, status_url, ctx) = job_and_ctx(dir, conn)?;
    if job.phase != Phase::Polling {
        return Ok((job, None));
    }
    let token = ctx.auth.token().await?;
    let (_, resp) = ctx
        .http
        .send(Method::GET, &status_url, token.as_ref(), |r| {
            r.header("accept", "application/fhir+json")
        })
        .await?;
    let code = resp.status();
    let x_progress = resp
        .headers()
        .get("x-progress")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let message = if code.is_success() {
        None
    } else {
        Some(http::outcome_text(&resp.text().await.unwrap_or_default()))
    };
    Ok((
        job,
        Some(ServerStatus {
            code: code.as_u16(),
            x_progress,
            message,
        }),
    ))
}

#[cfg(test)]
mod read_issues_tests {
    use super::read_issues;

    /// Found by the `operation_outcome` fuzz target: lines that were not JSON, or held no
    /// issue, and files that were not UTF-8 were dropped without a word.
    #[test]
    fn nothing_in_an_error_file_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("error")).unwrap();
        let rel = "error/1.OperationOutcome.ndjson";
        std::fs::write(
            dir.path().join(rel),
            "{\"resourceType\":\"OperationOutcome\",\"issue\":[{\"severity\":\"error\",\
             \"code\":\"processing\",\"diagnostics\":\"bad Patient/1\"}]}\n\
             \n{\"resourceType\":\"OperationOutcome\",\"issue\":[\n\
             {\"resourceType\":\"OperationOutcome\"}\n",
        )
        .unwrap();
        let issues = read_issues(dir.path(), rel);
        let texts: Vec<&str> = issues.iter().map(|i| i.text.as_str()).collect();
        assert_eq!(texts.len(), 3, "{texts:?}");
        assert_eq!(texts[0], "bad Patient/1");
        assert!(texts[1].starts_with("line 3 is not JSON"), "{texts:?}");
        assert!(texts[2].starts_with("line 4 holds no issue"), "{texts:?}");
        assert!(issues[1..].iter().all(|i| i.severity == "error"));

        std::fs::write(dir.path().join(rel), b"{\"issue\":[\xff]}\n").unwrap();
        let issues = read_issues(dir.path(), rel);
        assert_eq!(issues.len(), 1);
        assert!(issues[0].text.contains("not UTF-8"), "{:?}", issues[0]);
    }
}
