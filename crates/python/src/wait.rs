//! Waiting for a worker thread from Python: the calling thread gives up the GIL while it
//! waits, and every [`TICK`] takes it back to hand progress to a Python callback and to run
//! Python's signal handlers, so Ctrl-C raises KeyboardInterrupt in the caller while the work
//! runs elsewhere. Either, or an exception from the callback, sets the shared cancel flag
//! that the work polls ([`flatfhir_core::Progress::cancelled`]).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use pyo3::prelude::*;

/// How often a waiting caller wakes up.
pub(crate) const TICK: Duration = Duration::from_millis(50);

/// State shared by a worker and the Python thread waiting for it.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    /// Set by the waiter to stop the work.
    pub(crate) cancel: AtomicBool,
    /// Progress units (input bytes) not yet handed to the callback.
    pub(crate) pending: AtomicU64,
}

impl flatfhir_core::Progress for Shared {
    fn advance(&self, bytes: u64) {
        self.pending.fetch_add(bytes, Ordering::Relaxed);
    }

    fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }
}

impl Shared {
    /// Hands pending progress to `progress` (called with the number of new units).
    pub(crate) fn flush(
        &self,
        py: Python<'_>,
        progress: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let n = self.pending.swap(0, Ordering::Relaxed);
        if n > 0
            && let Some(cb) = progress
        {
            cb.call1((n,))?;
        }
        let _ = py;
        Ok(())
    }
}

/// Waits for the next message from a worker. Returns `None` when the worker is gone.
/// `between` runs (with the GIL) after every tick and every message, e.g. to pass events on.
/// On KeyboardInterrupt, or an error from a callback, the work is told to stop and the error
/// is returned.
pub(crate) fn recv<T: Send>(
    py: Python<'_>,
    rx: &Mutex<Option<Receiver<T>>>,
    shared: &Arc<Shared>,
    progress: Option<&Bound<'_, PyAny>>,
    between: &mut dyn FnMut(Python<'_>) -> PyResult<()>,
) -> PyResult<Option<T>> {
    loop {
        let got = py.detach(|| {
            let guard = rx.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            match guard.as_ref() {
                Some(r) => r.recv_timeout(TICK),
                None => Err(RecvTimeoutError::Disconnected),
            }
        });
        let step = shared
            .flush(py, progress)
            .and_then(|()| between(py))
            .and_then(|()| py.check_signals());
        if let Err(e) = step {
            shared.cancel.store(true, Ordering::Relaxed);
            // Dropping the receiver unblocks a worker waiting to send.
            rx.lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take();
            return Err(e);
        }
        match got {
            Ok(v) => return Ok(Some(v)),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return Ok(None),
        }
    }
}

/// Receives every result of `worker` until its channel closes, turning each with `each`
/// (`None` leaves it out), then joins the worker with the GIL released. A failure while
/// waiting (Ctrl-C, a progress callback) stops the work, which is then joined, and is
/// returned; an error from `each` is returned at once.
pub(crate) fn drain<T: Send, U>(
    py: Python<'_>,
    rx: Receiver<T>,
    shared: &Arc<Shared>,
    progress: Option<&Bound<'_, PyAny>>,
    worker: std::thread::JoinHandle<()>,
    mut each: impl FnMut(T) -> PyResult<Option<U>>,
) -> PyResult<Vec<U>> {
    let rx = Mutex::new(Some(rx));
    let mut out = Vec::new();
    let failure = loop {
        match recv(py, &rx, shared, progress, &mut |_| Ok(())) {
            Ok(Some(v)) => out.extend(each(v)?),
            Ok(None) => break None,
            Err(e) => break Some(e),
        }
    };
    py.detach(move || {
        let _ = worker.join();
    });
    match failure {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

/// Joins a streaming reader's worker thread once (later calls find it taken), without the GIL.
pub(crate) fn join_worker(py: Python<'_>, worker: &Mutex<Option<JoinHandle<()>>>) {
    let handle = worker
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .take();
    if let Some(h) = handle {
        py.detach(move || {
            let _ = h.join();
        });
    }
}
