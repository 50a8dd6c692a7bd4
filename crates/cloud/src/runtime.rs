//! The crate's own tokio runtime (two worker threads, started on first use): callers are
//! synchronous (rayon workers, Python threads), and run futures on it with [`run`], which
//! works from any thread, also from inside another runtime, because it only waits on a
//! channel.

use std::future::Future;
use std::sync::OnceLock;

pub(crate) fn handle() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("flatfhir-cloud")
            .enable_all()
            .build()
            .expect("the object-store runtime starts")
    })
}

/// Runs `f` on the runtime and waits for its result on the calling thread.
pub(crate) fn run<F>(f: F) -> F::Output
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    handle().spawn(async move {
        let _ = tx.send(f.await);
    });
    rx.recv().expect("the object-store runtime runs its tasks")
}
