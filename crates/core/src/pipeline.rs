//! The chunk pipeline every pass over the input runs on: `convert`'s and `schema`'s pass
//! over a type's files, and the view runner's (flatfhir-view) passes; also, through
//! [`run_source`], `convert_bundles`' pass over every type at once, fed by the Bundle
//! unpacker. Three stages overlap: a reader thread reads the files as chunks of whole lines
//! ahead of the workers (or another source makes them); the
//! workers of a rayon pool process each chunk as it arrives; and the calling thread hands
//! the results to a consumer strictly in input order, while the workers go on with later
//! chunks (no batch waits for its slowest chunk). Memory is bounded: at most two chunks per
//! worker thread are handed out and not yet consumed, plus as many read ahead in the
//! channel. Spent chunk buffers go back to the reader for reuse.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, Sender, SyncSender, channel, sync_channel};
use std::time::Instant;

use crate::convert::Progress;
use crate::error::Error;
use crate::reader::{Chunk, LineReader, ReadOptions};

/// Nanoseconds spent reading and processing chunks, summed over threads (behind
/// [`crate::StageTimes`]).
#[derive(Debug, Default)]
pub struct Timers {
    pub(crate) read: AtomicU64,
    pub(crate) process: AtomicU64,
}

/// Reads `files` in order as chunks (each file opened with `read` and then given to `open`,
/// on the reader thread, with its index: to set how lines are numbered or where overlong
/// lines go), runs `process(file index, chunk)` on the pool (`None`: the current rayon
/// pool) as chunks arrive, and hands each chunk with its result to `consume` in input order,
/// on the calling thread. Reported to `progress`: the bytes read, on the reader thread; its
/// [`Progress::cancelled`] is polled before each result is consumed, and stops the run with
/// [`Error::Cancelled`].
///
/// The first error wins: a file that cannot be read, or an error `consume` returns, ends
/// the run once the chunks already handed out are done (their results are dropped). A
/// `process` that panics ends the run, and the panic is passed on.
///
/// # Errors
/// A read error or cancellation (as `E` through `From<Error>`), or `consume`'s error.
#[allow(clippy::too_many_arguments)]
pub fn run_chunks<T, E, P, C>(
    pool: Option<&rayon::ThreadPool>,
    files: &[&Path],
    read: &ReadOptions,
    progress: &dyn Progress,
    timers: Option<&Timers>,
    open: &(dyn Fn(usize, &mut LineReader) + Sync),
    process: P,
    consume: C,
) -> Result<(), E>
where
    T: Send,
    E: From<Error>,
    P: Fn(usize, &Chunk) -> T + Sync,
    C: FnMut(&Chunk, T) -> Result<(), E>,
{
    run_source(
        pool,
        progress,
        timers,
        |chunks: &ChunkSender| {
            for (i, path) in files.iter().enumerate() {
                let mut reader = match LineReader::open(path, read) {
                    Ok(r) => r,
                    Err(e) => {
                        chunks.send(Err(e));
                        return;
                    }
                };
                open(i, &mut reader);
                let counter = reader.bytes_read();
                let mut reported = 0;
                loop {
                    while let Some(buf) = chunks.recycled() {
                        reader.recycle(buf);
                    }
                    let start = Instant::now();
                    let next = reader.next_chunk();
                    chunks.read_nanos(start.elapsed().as_nanos() as u64);
                    let now = counter.load(Ordering::Relaxed);
                    progress.advance(now - reported);
                    reported = now;
                    match next {
                        Ok(Some(mut c)) => {
                            c.file = i;
                            // A closed channel means the consumer stopped on an error.
                            if !chunks.send(Ok(c)) {
                                return;
                            }
                        }
                        Ok(None) => break,
                        Err(e) => {
                            chunks.send(Err(e));
                            return;
                        }
                    }
                }
            }
        },
        process,
        consume,
    )
}

/// Where the source of [`run_source`] sends its chunks, and gets spent chunk buffers back.
pub(crate) struct ChunkSender<'t> {
    tx: SyncSender<Result<Chunk, Error>>,
    /// Behind a lock only so that the sender can be lent to another thread (a receiver is
    /// not `Sync`); one thread uses it at a time.
    returned: std::sync::Mutex<Receiver<Vec<u8>>>,
    timers: &'t Timers,
}

impl ChunkSender<'_> {
    /// Hands a chunk to the workers (blocking while as many as the run allows are out), or an
    /// error that ends the run. `false`: the run has stopped (the consumer ended on an
    /// error); the source should stop too.
    pub(crate) fn send(&self, chunk: Result<Chunk, Error>) -> bool {
        self.tx.send(chunk).is_ok()
    }

    /// A spent chunk buffer to fill again, if one came back.
    pub(crate) fn recycled(&self) -> Option<Vec<u8>> {
        self.returned.lock().ok()?.try_recv().ok()
    }

    /// Adds time the source spent producing chunks (to [`Timers`]' `read`).
    pub(crate) fn read_nanos(&self, nanos: u64) {
        self.timers.read.fetch_add(nanos, Ordering::Relaxed);
    }
}

/// [`run_chunks`] with any source of chunks: `source` runs on a thread of its own and sends
/// the chunks (each with its `file` set, as `process` expects it) through the
/// [`ChunkSender`], in the order `consume` is to get them.
pub(crate) fn run_source<T, E, S, P, C>(
    pool: Option<&rayon::ThreadPool>,
    progress: &dyn Progress,
    timers: Option<&Timers>,
    source: S,
    process: P,
    mut consume: C,
) -> Result<(), E>
where
    T: Send,
    E: From<Error>,
    S: FnOnce(&ChunkSender) + Send,
    P: Fn(usize, &Chunk) -> T + Sync,
    C: FnMut(&Chunk, T) -> Result<(), E>,
{
    let threads = pool.map_or_else(
        rayon::current_num_threads,
        rayon::ThreadPool::current_num_threads,
    );
    let in_flight = threads.max(1) * 2;
    let unused = Timers::default();
    let timers = timers.unwrap_or(&unused);
    std::thread::scope(|scope| {
        let (tx, rx) = sync_channel::<Result<Chunk, Error>>(in_flight);
        // Spent chunk buffers go back to the source for reuse.
        let (give_back, returned) = channel::<Vec<u8>>();
        scope.spawn(move || {
            let chunks = ChunkSender {
                tx,
                returned: std::sync::Mutex::new(returned),
                timers,
            };
            source(&chunks);
            // Buffers that came back after the last read wait for the next reader.
            while let Some(buf) = chunks.recycled() {
                crate::reader::keep_buffer(buf);
            }
        });
        let (done_tx, done_rx) = channel::<(u64, Option<(Chunk, T)>)>();
        let process = &process;
        // The calling thread only hands out chunks and consumes results; the pool's
        // threads do the work.
        in_place_scope(pool, |jobs| -> Result<(), E> {
            let mut next_seq = 0u64;
            let mut next_consume = 0u64;
            let mut waiting: std::collections::BTreeMap<u64, (Chunk, T)> = Default::default();
            let mut read_all = false;
            loop {
                while !read_all && next_seq - next_consume < in_flight as u64 {
                    match rx.recv() {
                        Ok(chunk) => {
                            let chunk = chunk?;
                            let sender = ResultSender {
                                tx: done_tx.clone(),
                                seq: next_seq,
                                result: None,
                            };
                            jobs.spawn(move |_| {
                                let start = Instant::now();
                                let r = process(chunk.file, &chunk);
                                timers.process.fetch_add(
                                    start.elapsed().as_nanos() as u64,
                                    Ordering::Relaxed,
                                );
                                sender.send(chunk, r);
                            });
                            next_seq += 1;
                        }
                        Err(_) => read_all = true,
                    }
                }
                if next_consume == next_seq {
                    return Ok(());
                }
                while !waiting.contains_key(&next_consume) {
                    let (seq, result) = next_result(&done_rx, pool.is_none());
                    match result {
                        Some(r) => {
                            waiting.insert(seq, r);
                        }
                        // A job panicked; the scope passes the panic on when it ends.
                        None => return Ok(()),
                    }
                }
                let (chunk, r) = waiting.remove(&next_consume).expect("just checked");
                next_consume += 1;
                if progress.cancelled() {
                    return Err(Error::Cancelled.into());
                }
                consume(&chunk, r)?;
                if let Some(buf) = chunk.data.into_vec() {
                    // Once the reader has finished, its buffers wait for the next one.
                    if let Err(back) = give_back.send(buf) {
                        crate::reader::keep_buffer(back.0);
                    }
                }
            }
        })
    })
}

/// The next result from the workers. On the current pool (`help`), the calling thread may
/// be one of its workers (a view run inside `ThreadPool::install`): blocking there would
/// leave one worker fewer, and with a pool of one thread none at all to run the jobs it waits
/// for. So it runs pending jobs of the pool while it waits, and blocks only when there are
/// none (all are running elsewhere). Off a pool, `yield_now` does nothing and it blocks.
fn next_result<M>(done: &std::sync::mpsc::Receiver<M>, help: bool) -> M {
    loop {
        if help {
            match done.try_recv() {
                Ok(m) => return m,
                Err(std::sync::mpsc::TryRecvError::Empty) => {
                    if rayon::yield_now() == Some(rayon::Yield::Executed) {
                        continue;
                    }
                }
                Err(std::sync::mpsc::TryRecvError::Disconnected) => {}
            }
        }
        return done.recv().expect("the calling thread keeps a sender open");
    }
}

/// `pool`'s `in_place_scope`, or the current pool's.
fn in_place_scope<'scope, R>(
    pool: Option<&rayon::ThreadPool>,
    op: impl FnOnce(&rayon::Scope<'scope>) -> R,
) -> R {
    match pool {
        Some(pool) => pool.in_place_scope(op),
        None => rayon::in_place_scope(op),
    }
}

/// A chunk's result on its way back to the thread that consumes results in order. Sent when
/// dropped, so a job that panics still reports (with no result) and nobody waits forever.
struct ResultSender<T> {
    tx: Sender<(u64, Option<(Chunk, T)>)>,
    seq: u64,
    result: Option<(Chunk, T)>,
}

impl<T> ResultSender<T> {
    fn send(mut self, chunk: Chunk, result: T) {
        self.result = Some((chunk, result));
    }
}

impl<T> Drop for ResultSender<T> {
    fn drop(&mut self) {
        let _ = self.tx.send((self.seq, self.result.take()));
    }
}
