//! `DIR/log.ndjson`: the "Bulk Data Export Log Items" events that the SMART reference client
//! and the Cumulus tools write, one JSON object per line, plus flatfhir's own (retries, count
//! mismatches, the closing event of a failed run). URLs in it are redacted by callers.
//!
//! Lines go through a buffer, each line whole; it is written out by [`EventLog::flush`]
//! (at the end of a run), when full, and when the log is dropped.

use std::io::{BufWriter, Write as _};
use std::path::Path;
use std::sync::Mutex;

use serde_json::{Value, json};

use crate::error::{Error, Result};

/// Appends events to `log.ndjson`.
#[derive(Debug)]
pub(crate) struct EventLog {
    file: Mutex<BufWriter<std::fs::File>>,
    export_id: Mutex<String>,
}

impl EventLog {
    pub(crate) fn open(dir: &Path) -> Result<Self> {
        let path = dir.join("log.ndjson");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        Ok(Self {
            file: Mutex::new(BufWriter::with_capacity(64 * 1024, file)),
            export_id: Mutex::new(String::new()),
        })
    }

    /// Set the `exportId` (the redacted status URL) for the following events.
    pub(crate) fn set_export_id(&self, id: String) {
        *self
            .export_id
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = id;
    }

    /// Write one event. Logging failures are not fatal to the export; they are reported once.
    pub(crate) fn emit(&self, event_id: &str, detail: Value) {
        let export_id = self
            .export_id
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let line = json!({
            "exportId": export_id,
            "timestamp": crate::clock::now_instant_ms(),
            "eventId": event_id,
            "eventDetail": detail,
        });
        let mut text = line.to_string();
        text.push('\n');
        let mut f = self
            .file
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Err(e) = f.write_all(text.as_bytes()) {
            tracing::warn!("writing log.ndjson: {e}");
        }
    }

    /// Write buffered events to the file.
    pub(crate) fn flush(&self) {
        let mut f = self
            .file
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Err(e) = f.flush() {
            tracing::warn!("writing log.ndjson: {e}");
        }
    }
}

/// Writes `event` (`export_interrupted`, `search_interrupted`) when dropped while armed: a
/// run's future dropped before it ends (Ctrl-C). The run disarms it when it returns.
pub(crate) struct InterruptGuard {
    pub(crate) log: std::sync::Arc<EventLog>,
    started: tokio::time::Instant,
    event: &'static str,
    pub(crate) armed: bool,
}

impl InterruptGuard {
    pub(crate) fn new(
        log: std::sync::Arc<EventLog>,
        started: tokio::time::Instant,
        event: &'static str,
    ) -> Self {
        Self {
            log,
            started,
            event,
            armed: true,
        }
    }

    /// Milliseconds since the run started.
    pub(crate) fn millis(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

impl Drop for InterruptGuard {
    fn drop(&mut self) {
        if self.armed {
            self.log.emit(
                self.event,
                json!({"message": "stopped before the end; continue with --resume",
                       "duration": self.millis()}),
            );
            self.log.flush();
        }
    }
}
