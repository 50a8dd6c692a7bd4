//! A FHIR search crawl, for servers without `$export`: each query's pages are followed through
//! `link[relation=next]` into the same layout `fetch` writes (`{n}.{Type}.ndjson`,
//! `error/{n}.OperationOutcome.ndjson`, `manifest.json`, `log.ndjson`), so `convert`,
//! `export` and the Python reader read it unchanged.
//!
//! [`search`] reads the server's CapabilityStatement first ([`Capability`]): it refuses a
//! query whose type or parameter the server does not list (unless [`SearchOptions::force`])
//! and reports whether `$export` is offered. Pages are fetched one at a time with `fetch`'s
//! retry policy ([`crate::Timing`]: `Retry-After`, 429, 5xx, dropped connections, a token
//! renewed after a 401) and written durably (the `state` module); resources are de-duplicated by
//! (type, id) across pages and queries (`_include`d Patients come again on every page that
//! references them). The token goes only to the FHIR server's origin: a next link to another
//! origin is refused ([`NextOrigin`]).

mod capability;
mod crawl;
mod page;
mod query;
mod state;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use serde_json::json;
use url::Url;

pub use capability::Capability;
pub use query::Query;
pub use state::{FileRecord, Item, QueryState, QueryStatus, SEARCH_STATE_FILE, SearchJob};

use crate::{Connection, Issue, RedactedUrl};
use state::Output;

/// Everything that can go wrong in a crawl.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Auth, HTTP, local I/O: what `fetch` shares with the crawl.
    #[error(transparent)]
    Fetch(#[from] crate::Error),
    /// A query that cannot be parsed (nothing was sent).
    #[error("query {query:?}: {reason}")]
    Query {
        /// The query.
        query: String,
        /// Why.
        reason: String,
    },
    /// The server's CapabilityStatement does not list a searched type or parameter.
    #[error(
        "the server does not support {}; nothing was crawled (its CapabilityStatement at \
         {url}; --force searches anyway)", problems.join("; ")
    )]
    Unsupported {
        /// The `metadata` URL.
        url: RedactedUrl,
        /// One line each.
        problems: Vec<String>,
    },
    /// The server refused a page (a 4xx, or a 5xx after the retries).
    #[error("search page {url}: HTTP {status}: {message}")]
    Page {
        /// Page URL.
        url: RedactedUrl,
        /// HTTP status.
        status: u16,
        /// The server's OperationOutcome text, or the start of its body.
        message: String,
    },
    /// A page that is not a searchset Bundle (or not JSON).
    #[error("search page {url}: {reason}")]
    Bundle {
        /// Page URL.
        url: RedactedUrl,
        /// Why.
        reason: String,
    },
    /// A next link to another origin, which would receive the token.
    #[error(
        "a next link goes to another origin than the FHIR server ({next}); the access token \
         goes only to the FHIR server, so the link was not followed (--next-origin rewrite \
         sends the request to the FHIR server's origin instead; --resume continues from it)"
    )]
    OtherOrigin {
        /// The link.
        next: RedactedUrl,
    },
    /// The crawl state in DIR does not allow the operation.
    #[error("{0}")]
    State(String),
}

/// Shorthand.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What to do with a next link whose origin (scheme, host, port) is not the FHIR server's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum NextOrigin {
    /// Refuse: the query fails with [`Error::OtherOrigin`].
    #[default]
    Refuse,
    /// Keep the link's path and query, but send it to the FHIR server's origin (servers behind
    /// a proxy that write their internal host name into links).
    Rewrite,
}

/// Everything [`search`] needs.
#[derive(Debug)]
#[non_exhaustive]
pub struct SearchOptions {
    /// Server and credentials.
    pub conn: Connection,
    /// Output directory.
    pub out_dir: PathBuf,
    /// The queries (`Type?params`, `?_type=A,B&params`, or a URL under the FHIR base).
    pub queries: Vec<String>,
    /// `_count` for queries that do not set it.
    pub count: Option<u32>,
    /// Stop each query after this many pages.
    pub max_pages: Option<u64>,
    /// Stop each query after this many matching resources (`_include`d ones come in addition).
    pub max_resources: Option<u64>,
    /// Continue the crawl recorded in `out_dir`.
    pub resume: bool,
    /// Crawl even when the CapabilityStatement does not list a type or parameter.
    pub force: bool,
    /// Ask the server to ignore parameters it does not know (`Prefer: handling=lenient`).
    pub lenient: bool,
    /// Next links to another origin.
    pub next_origin: NextOrigin,
    /// Lines per output file.
    pub lines_per_file: u64,
}

impl SearchOptions {
    /// Defaults: no caps, 100,000 resources per file.
    #[must_use]
    pub fn new(conn: Connection, out_dir: impl Into<PathBuf>, queries: Vec<String>) -> Self {
        Self {
            conn,
            out_dir: out_dir.into(),
            queries,
            count: None,
            max_pages: None,
            max_resources: None,
            resume: false,
            force: false,
            lenient: false,
            next_origin: NextOrigin::Refuse,
            lines_per_file: 100_000,
        }
    }
}

/// Something that happened, for progress displays.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum SearchEvent {
    /// The CapabilityStatement was read (`None`: it could not be, see the warning).
    Capability {
        /// Whether `$export` is offered.
        export_offered: Option<bool>,
    },
    /// Continuing a recorded crawl.
    Resumed {
        /// Pages already written.
        pages: u64,
        /// Queries already ended.
        queries_done: usize,
    },
    /// A page was written.
    Page {
        /// The query.
        query: String,
        /// Its page number (1-based).
        page: u64,
        /// Matching resources written from it.
        matches: u64,
        /// Included resources written from it.
        included: u64,
        /// Entries left out as duplicates.
        duplicates: u64,
    },
    /// A request is retried after a wait.
    Retrying {
        /// What and why.
        what: String,
        /// The wait.
        wait: Duration,
    },
    /// A query ended.
    QueryEnded {
        /// The query.
        query: String,
        /// How.
        status: QueryStatus,
    },
    /// Something worth knowing.
    Warning {
        /// What.
        message: String,
    },
}

/// Receives [`SearchEvent`]s; closures `Fn(&SearchEvent)` qualify.
pub trait SearchObserver: Send + Sync {
    /// Called for each event.
    fn on_event(&self, event: &SearchEvent);
}

impl<F: Fn(&SearchEvent) + Send + Sync> SearchObserver for F {
    fn on_event(&self, event: &SearchEvent) {
        self(event);
    }
}

/// What a crawl produced.
#[derive(Debug, Clone, serde::Serialize)]
#[non_exhaustive]
pub struct SearchSummary {
    /// Whether the server offers `$export` (`None`: its CapabilityStatement could not be read).
    pub export_offered: Option<bool>,
    /// Each query's state.
    pub queries: Vec<QueryState>,
    /// Pages written.
    pub pages: u64,
    /// Output files.
    pub files: usize,
    /// Resources written (matches and includes, each (type, id) once).
    pub resources: u64,
    /// Resources per type.
    pub types: BTreeMap<String, u64>,
    /// Of the resources, `_include`d ones.
    pub included: u64,
    /// Entries left out because their (type, id) was already written.
    pub duplicates: u64,
    /// Output files per type (absolute paths), in order: what `export --search` converts.
    pub outputs: BTreeMap<String, Vec<PathBuf>>,
    /// Issues of the OperationOutcome entries (`search.mode = outcome`).
    pub issues: Vec<Issue>,
    /// Entries that could not be written (no resource, no `resourceType`), said once each.
    pub warnings: Vec<String>,
    /// Queries that failed, with the reason (`--resume` tries them again).
    pub failed: Vec<(String, String)>,
    /// Whether a query stopped at `max_pages` / `max_resources`.
    pub capped: bool,
    /// Seconds the run took.
    pub seconds: f64,
}

impl SearchSummary {
    /// Whether the server reported any `error` or `fatal` issue.
    #[must_use]
    pub fn has_error_issues(&self) -> bool {
        self.issues
            .iter()
            .any(|i| i.severity == "error" || i.severity == "fatal")
    }

    /// Every query followed to its last page, no failure, no error issue.
    #[must_use]
    pub fn complete(&self) -> bool {
        self.failed.is_empty() && !self.capped && !self.has_error_issues()
    }
}

/// Shared by the steps of a crawl.
pub(crate) struct Crawl {
    pub(crate) http: crate::http::Http,
    pub(crate) auth: crate::auth::Authenticator,
    pub(crate) log: Arc<crate::log::EventLog>,
    pub(crate) timing: crate::Timing,
    pub(crate) observer: Arc<dyn SearchObserver>,
    pub(crate) lenient: bool,
}

impl Crawl {
    pub(crate) fn observe(&self, e: SearchEvent) {
        self.observer.on_event(&e);
    }
}

fn new_job(opts: &SearchOptions, queries: &[Query]) -> SearchJob {
    SearchJob {
        version: 1,
        fhir_url: opts.conn.fhir_url.to_string(),
        started: crate::clock::now_instant_ms(),
        count: opts.count,
        queries: queries
            .iter()
            .map(|q| {
                let url = q.url(&opts.conn.fhir_url, opts.count).to_string();
                QueryState {
                    query: q.text.clone(),
                    first_url: url.clone(),
                    next: Some(url),
                    pages: 0,
                    matches: 0,
                    included: 0,
                    outcomes: 0,
                    duplicates: 0,
                    status: QueryStatus::Running,
                }
            })
            .collect(),
        files: Vec::new(),
        finished: false,
        client_id: opts.conn.credentials.client_id(),
        private_key_path: opts.conn.private_key_path.clone(),
        kid: opts.conn.credentials.kid(),
        token_url: opts.conn.token_url.as_ref().map(ToString::to_string),
    }
}

/// Run (or with `resume`, continue) a search crawl into `opts.out_dir`.
///
/// Returns a [`SearchSummary`] once every query ended: followed to its last page, stopped at
/// a cap, or failed (listed in [`SearchSummary::failed`]; `--resume` retries them).
/// `log.ndjson` ends with `search_complete`, `search_capped`, `search_partial` (outcome
/// entries with error issues), `search_failed` or `search_interrupted`.
///
/// # Errors
/// A query that cannot be parsed, a type or parameter the server does not support (without
/// `force`), auth failures, local I/O, a directory holding another job.
pub async fn search(
    opts: SearchOptions,
    observer: Arc<dyn SearchObserver>,
) -> Result<SearchSummary> {
    let started = Instant::now();
    let dir = opts.out_dir.clone();
    let base = opts.conn.fhir_url.clone();
    let existing = SearchJob::load(&dir)?;
    if crate::JobState::load(&dir)?.is_some() {
        return Err(Error::State(format!(
            "{} holds a Bulk Data export ({}); choose another --out for the search crawl",
            dir.display(),
            crate::JOB_FILE
        )));
    }
    let queries: Vec<Query> = opts
        .queries
        .iter()
        .map(|t| {
            Query::parse(t, &base).map_err(|reason| Error::Query {
                query: t.clone(),
                reason,
            })
        })
        .collect::<Result<_>>()?;
    let job = match (existing, opts.resume) {
        (Some(j), true) => {
            let recorded: Vec<&str> = j.queries.iter().map(|q| q.query.as_str()).collect();
            let given: Vec<&str> = queries.iter().map(|q| q.text.as_str()).collect();
            if !given.is_empty() && given != recorded {
                return Err(Error::State(format!(
                    "--resume: {} holds a crawl of other queries ({}); give the same queries, \
                     or none",
                    dir.display(),
                    recorded.join(", ")
                )));
            }
            j
        }
        (None, true) => {
            return Err(Error::State(format!(
                "--resume: {} holds no search crawl ({SEARCH_STATE_FILE}); start one without --resume",
                dir.display()
            )));
        }
        (Some(_), false) => {
            return Err(Error::State(format!(
                "{} already holds a search crawl; continue it with --resume, or choose another --out",
                dir.display()
            )));
        }
        (None, false) => {
            if queries.is_empty() {
                return Err(Error::Query {
                    query: String::new(),
                    reason: "no query given".into(),
                });
            }
            new_job(&opts, &queries)
        }
    };
    std::fs::create_dir_all(&dir).map_err(|e| crate::Error::io(&dir, e))?;
    let conn = opts.conn;
    let http = crate::http::Http::new(conn.ca_cert.as_deref(), &conn.headers)?;
    let auth = crate::auth::Authenticator::new(
        http.clone(),
        conn.credentials,
        conn.scope,
        conn.fhir_url.clone(),
        conn.token_url,
        conn.timing.clone(),
    );
    let log = Arc::new(crate::log::EventLog::open(&dir)?);
    log.set_export_id(format!("search {}", RedactedUrl::new(base.clone())));
    let crawl = Crawl {
        http,
        auth,
        log: Arc::clone(&log),
        timing: conn.timing,
        observer,
        lenient: opts.lenient,
    };
    let mut closing =
        crate::log::InterruptGuard::new(Arc::clone(&log), started, "search_interrupted");
    let settings = Settings {
        base,
        max_pages: opts.max_pages,
        max_resources: opts.max_resources,
        force: opts.force,
        next_origin: opts.next_origin,
        lines_per_file: opts.lines_per_file,
        resume: opts.resume,
    };
    let result = run(&crawl, job, &dir, &settings, started).await;
    closing.armed = false;
    if let Err(e) = &result {
        log.emit(
            "search_failed",
            json!({"message": crate::scrub(&e.to_string()), "duration": closing.millis()}),
        );
    }
    log.flush();
    result
}

struct Settings {
    base: Url,
    max_pages: Option<u64>,
    max_resources: Option<u64>,
    force: bool,
    next_origin: NextOrigin,
    lines_per_file: u64,
    resume: bool,
}

/// Read `metadata`; refuse unsupported queries unless `force`.
async fn check_capability(
    crawl: &Crawl,
    base: &Url,
    queries: &[Query],
    force: bool,
) -> Result<Option<bool>> {
    let url = crate::auth::join(base, "metadata");
    let unreadable = match page::get_json(crawl, &url).await {
        Ok(v) if v["resourceType"] == "CapabilityStatement" => Ok(Capability::parse(&v)),
        Ok(v) => Err(format!(
            "it answered a {} instead",
            v["resourceType"]
                .as_str()
                .unwrap_or("document without resourceType")
        )),
        // The server's answer: a status, a broken body, a dropped connection.
        Err(
            e @ (Error::Page { .. }
            | Error::Bundle { .. }
            | Error::Fetch(crate::Error::Http { .. } | crate::Error::Download { .. })),
        ) => Err(crate::scrub(&e.to_string()).into_owned()),
        // Auth and local failures would fail every page too: said once, here.
        Err(e) => return Err(e),
    };
    let cap = match unreadable {
        Ok(cap) => cap,
        Err(why) => {
            let message = format!(
                "could not read the server's CapabilityStatement ({}: {why}); searched types \
                 and parameters are not checked",
                RedactedUrl::new(url.clone())
            );
            tracing::warn!("{message}");
            crawl
                .log
                .emit("capability_unreadable", json!({"message": message}));
            crawl.observe(SearchEvent::Warning { message });
            crawl.observe(SearchEvent::Capability {
                export_offered: None,
            });
            return Ok(None);
        }
    };
    crawl.observe(SearchEvent::Capability {
        export_offered: Some(cap.export),
    });
    let problems: Vec<String> = queries
        .iter()
        .flat_map(|q| {
            cap.problems(q)
                .into_iter()
                .map(move |p| format!("{} ({})", p, q.text))
        })
        .collect();
    crawl.log.emit(
        "capability",
        json!({"url": RedactedUrl::new(url.clone()).redacted(), "exportOffered": cap.export,
               "problems": problems, "forced": force && !problems.is_empty()}),
    );
    if !problems.is_empty() {
        if !force {
            return Err(Error::Unsupported {
                url: RedactedUrl::new(url),
                problems,
            });
        }
        for p in &problems {
            crawl.observe(SearchEvent::Warning {
                message: format!("--force: searching although the server does not list it: {p}"),
            });
        }
    }
    Ok(Some(cap.export))
}

async fn run(
    crawl: &Crawl,
    job: SearchJob,
    dir: &Path,
    s: &Settings,
    started: Instant,
) -> Result<SearchSummary> {
    let queries: Vec<Query> = job
        .queries
        .iter()
        .map(|q| {
            Query::parse(&q.query, &s.base).map_err(|reason| Error::Query {
                query: q.query.clone(),
                reason,
            })
        })
        .collect::<Result<_>>()?;
    let export_offered = check_capability(crawl, &s.base, &queries, s.force).await?;
    let mut out = Output::open(job, dir, s.lines_per_file)?;
    if s.resume {
        for q in &mut out.job.queries {
            // Failed and capped queries get another chance (a capped one under the new caps).
            if matches!(q.status, QueryStatus::Failed { .. } | QueryStatus::Capped) {
                q.status = QueryStatus::Running;
            }
        }
        out.job.finished = false;
        let pages = out.job.queries.iter().map(|q| q.pages).sum();
        let queries_done = out
            .job
            .queries
            .iter()
            .filter(|q| q.status == QueryStatus::Done)
            .count();
        crawl.log.emit(
            "search_resumed",
            json!({"pages": pages, "queriesDone": queries_done}),
        );
        crawl.observe(SearchEvent::Resumed {
            pages,
            queries_done,
        });
    } else {
        crawl.log.emit(
            "search_started",
            json!({"queries": out.job.queries.iter().map(|q| json!({"query": q.query,
                    "url": crawl::redacted(&q.first_url)})).collect::<Vec<_>>(),
                   "count": out.job.count}),
        );
    }
    out.save()?;
    let mut warnings = Vec::new();
    for qi in 0..out.job.queries.len() {
        crawl::crawl_query(crawl, &mut out, qi, s, &mut warnings).await?;
    }
    out.finish()?;
    crawl::write_manifest(dir, &out.job)?;
    let summary = crawl::summarize(dir, &out.job, export_offered, warnings, started);
    let duration = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    let detail = json!({"pages": summary.pages, "files": summary.files, "resources": summary.resources,
        "included": summary.included, "duplicates": summary.duplicates, "issues": summary.issues.len(),
        "failures": summary.failed.iter().map(|(q, m)| json!({"query": q, "message": m})).collect::<Vec<_>>(),
        "duration": duration});
    let event = if !summary.failed.is_empty() {
        "search_failed"
    } else if summary.has_error_issues() {
        "search_partial"
    } else if summary.capped {
        "search_capped"
    } else {
        "search_complete"
    };
    crawl.log.emit(event, detail);
    Ok(summary)
}
