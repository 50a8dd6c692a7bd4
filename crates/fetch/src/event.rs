//! Progress reporting: the [`Event`]s a run emits and the [`Observer`] that receives them.

use std::path::PathBuf;
use std::time::Duration;

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
