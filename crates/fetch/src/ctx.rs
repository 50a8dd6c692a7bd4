//! What every task of one run shares ([`RunContext`]): the HTTP client, the authenticator, the event
//! log, the observer, and the download slots that shrink after a 429.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::error::Result;
use crate::event::{Event, Observer};
use crate::kickoff::KickoffParams;
use crate::options::Connection;
use crate::retry::Timing;
use crate::{auth, http, log};

#[derive(Debug)]
pub(crate) struct Settings {
    pub(crate) timing: Timing,
    pub(crate) kickoff: KickoffParams,
    pub(crate) max_line_bytes: usize,
}

/// Shared by every task of a run.
pub(crate) struct RunContext {
    pub(crate) opts: Settings,
    pub(crate) http: http::Http,
    pub(crate) auth: auth::Authenticator,
    pub(crate) log: Arc<log::EventLog>,
    pub(crate) dir: PathBuf,
    observer: Arc<dyn Observer>,
    /// Download slots; shrinks by one per 429 (Oracle Health rate-limits parallel downloads).
    pub(crate) slots: Arc<tokio::sync::Semaphore>,
    parallel: AtomicUsize,
}

impl std::fmt::Debug for RunContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunContext")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl RunContext {
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

    pub(crate) fn new(
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
            parallel: AtomicUsize::new(parallel.max(1)),
        })
    }
}
