//! Converting Bundle files while they are unpacked ([`convert_bundles`]): one pass over the
//! Bundles feeds every resource type's pass at once, instead of unpacking them into
//! temporary per-type files first and converting those one type at a time.
//!
//! The unpacker (`bundle::unpack_with`, on a thread of its own, unpacking a batch of files
//! on the pool) gathers each type's lines in a buffer and hands it on when it holds a chunk's
//! worth; the chunk pipeline (`pipeline::run_source`) flattens the chunks of every type on
//! the pool as they come and merges each into its type's union schema in order. When the
//! Bundles are read, each type's table is written from its stash, as `convert_group` writes
//! it. Unpacked lines are thus neither written out and read back nor held whole: memory is
//! the chunks in flight, one part-filled buffer per type, and the stashes, which share one
//! `memory_budget` (beyond it they spill, as one type's stash does).
//!
//! Each type's rows, columns, refused lines and messages are those of the unpacked-files
//! route (a test compares the two): lines are flattened by the same code (`PassInput`,
//! `PassMerger`) in the same order, the origin index that names a bad entry is still
//! written, and the entries that could not become a resource are reported by the first type
//! (by name) after its resources, as they are there.

use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::{PoisonError, RwLock};

use super::*;
use crate::bundle::{BundleOptions, BundleStats, LineStream, Unpacked};
use crate::input::InputFile;
use crate::pipeline::ChunkSender;

/// Converts the Bundle files `files` (read in this order, as `plan_with` would unpack them)
/// with every type's pass running while the files are unpacked, then writes each type's
/// table (see the module's notes). `unpacked` is told what unpacking counted once every
/// Bundle is read (before the tables are written); then `report` gets each type's result, in
/// the order of the type names; a type that fails does not stop the others. Returns what
/// unpacking counted.
///
/// `progress` is told the bytes of each Bundle file once it is unpacked (so its total is
/// the files' size), and is polled for cancellation throughout.
///
/// # Errors
/// A Bundle file that cannot be read, a temporary file that cannot be written, or
/// cancellation: nothing is reported then. Errors of one type (a bad line with
/// [`OnError::Fail`], too many columns, a value that does not fit `--schema`) go to
/// `report`.
pub fn convert_bundles<U, F>(
    files: &[PathBuf],
    bundles: &BundleOptions,
    opts: &ConvertOptions,
    progress: &dyn Progress,
    unpacked: U,
    mut report: F,
) -> Result<BundleStats>
where
    U: FnOnce(&BundleStats),
    F: FnMut(&str, Result<TypeReport>),
{
    if opts.sep.is_empty() {
        return Err(Error::Options("the separator must not be empty".into()));
    }
    let start = Instant::now();
    let pool = pool(opts.threads)?;
    let spill_dir = opts.spill_dir.as_ref().unwrap_or(&opts.out_dir);
    let held = Arc::new(AtomicUsize::new(0));
    let types: Mutex<Vec<Arc<TypeShared>>> = Mutex::new(Vec::new());
    let done: Mutex<Option<Unpacked>> = Mutex::new(None);
    let mut runs: Vec<TypeRun> = Vec::new();
    let shared_of =
        |slot: usize| Arc::clone(&types.lock().unwrap_or_else(PoisonError::into_inner)[slot]);
    let source = |chunks: &ChunkSender| {
        let mut stream = Streamer {
            chunks,
            types: &types,
            files,
            opts,
            spill_dir,
            held: &held,
            progress,
        };
        let result = crate::bundle::unpack_with(
            files,
            bundles,
            opts.read.max_line_bytes,
            Some(&pool),
            Some(&mut stream),
        )
        .and_then(|u| {
            send_unplaced(&u, &types, chunks, opts)?;
            Ok(u)
        });
        match result {
            Ok(u) => *done.lock().unwrap_or_else(PoisonError::into_inner) = Some(u),
            Err(e) => {
                chunks.send(Err(e));
            }
        }
    };
    let process = |file: usize, chunk: &Chunk| -> Option<ChunkOutcome> {
        let shared = shared_of(file / 2);
        if shared.failed.load(Ordering::Relaxed) {
            return None;
        }
        let group = shared.group.read().unwrap_or_else(PoisonError::into_inner);
        let began = Instant::now();
        let outcome = shared.input(&group, opts).process(file % 2, chunk);
        shared
            .timers
            .process
            .fetch_add(began.elapsed().as_nanos() as u64, Ordering::Relaxed);
        Some(outcome)
    };
    let consume = |chunk: &Chunk, outcome: Option<ChunkOutcome>| -> Result<()> {
        let (slot, file) = (chunk.file / 2, chunk.file % 2);
        let shared = shared_of(slot);
        if runs.len() <= slot {
            runs.resize_with(slot + 1, TypeRun::default);
        }
        let run = &mut runs[slot];
        run.bytes += chunk.data.len() as u64;
        let group = shared.group.read().unwrap_or_else(PoisonError::into_inner);
        let input = shared.input(&group, opts);
        if run.merger.is_none() && run.error.is_none() {
            match PassMerger::new(&input) {
                Ok(m) => run.merger = Some(m),
                Err(e) => run.fail(e, &shared),
            }
        }
        if let (Some(merger), Some(c)) = (run.merger.as_mut(), outcome)
            && let Err(e) = merger.consume(&input, file, chunk, c)
        {
            run.fail(e, &shared);
        }
        Ok(())
    };
    crate::pipeline::run_source(Some(&pool), progress, None, source, process, consume)?;
    let pass_seconds = start.elapsed().as_secs_f64();
    let (_, _, inputs) = done
        .into_inner()
        .unwrap_or_else(PoisonError::into_inner)
        .ok_or_else(|| Error::Options("unpacking the Bundles stopped early".into()))?;
    unpacked(inputs.stats());
    let shared = types.into_inner().unwrap_or_else(PoisonError::into_inner);
    runs.resize_with(shared.len(), TypeRun::default);
    let total_bytes: u64 = runs.iter().map(|r| r.bytes).sum::<u64>().max(1);
    let mut work: Vec<(Arc<TypeShared>, TypeRun)> = shared.into_iter().zip(runs).collect();
    // The tables are written side by side, the largest first (a small type's table is mostly
    // fixed costs: creating the file, a writer per column, `fsync`); each write also spreads
    // its columns over the pool. Only cancellation is passed on: the bar counted the
    // Bundles' bytes as they were unpacked.
    let writes = CancelOnly(progress);
    work.sort_by_key(|(_, r)| std::cmp::Reverse(r.bytes));
    let mut results: Vec<(String, Result<TypeReport>)> = pool.install(|| {
        work.into_par_iter()
            .with_max_len(1)
            .map(|(shared, run)| {
                // The pass over the Bundles is shared: each type is given the share of its
                // time that its bytes are.
                let share = pass_seconds * run.bytes as f64 / total_bytes as f64;
                let name = shared.name.clone();
                let began = Instant::now();
                let result = finish_type(shared, run, opts, &writes).map(|mut r| {
                    r.seconds = share + began.elapsed().as_secs_f64();
                    r
                });
                (name, result)
            })
            .collect()
    });
    results.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, result) in results {
        report(&name, result);
    }
    Ok(inputs.stats().clone())
}

/// One type's share of the stream, used by the workers and the in-order consumer alike.
struct TypeShared {
    name: String,
    /// The type's (never written) file of unpacked lines, and later the file of entries
    /// that could not become a resource when this type reports them.
    group: RwLock<TypeGroup>,
    stash: Stash,
    rejects: Option<RejectSink>,
    /// Set once the type failed: its later chunks are not flattened.
    failed: AtomicBool,
    timers: Timers,
}

impl TypeShared {
    fn input<'a>(&'a self, group: &'a TypeGroup, opts: &'a ConvertOptions) -> PassInput<'a> {
        PassInput {
            group,
            opts,
            rejects: self.rejects.as_ref(),
            stash: Some(&self.stash),
        }
    }
}

/// One type's in-order state, on the consuming thread.
#[derive(Default)]
struct TypeRun {
    merger: Option<PassMerger>,
    error: Option<Error>,
    /// Bytes of unpacked lines (the type's input, as NDJSON; with the entries it reports
    /// that could not become a resource).
    bytes: u64,
}

impl TypeRun {
    fn fail(&mut self, e: Error, shared: &TypeShared) {
        self.merger = None;
        self.error = Some(e);
        shared.failed.store(true, Ordering::Relaxed);
    }
}

/// Writes a type's table once every Bundle is read (on the pool).
fn finish_type(
    shared: Arc<TypeShared>,
    run: TypeRun,
    opts: &ConvertOptions,
    progress: &dyn Progress,
) -> Result<TypeReport> {
    if let Some(e) = run.error {
        return Err(e);
    }
    let shared = Arc::try_unwrap(shared).map_err(|s| Error::Internal {
        resource_type: s.name.clone(),
        path: PathBuf::new(),
        reason: "a chunk was still held after the pass".into(),
    })?;
    let TypeShared {
        group,
        stash,
        rejects,
        timers,
        ..
    } = shared;
    let group = group.into_inner().unwrap_or_else(PoisonError::into_inner);
    let merger = run.merger.ok_or_else(|| Error::Internal {
        resource_type: group.resource_type.clone(),
        path: PathBuf::new(),
        reason: "no chunk reached the type's pass".into(),
    })?;
    let rejected_file = match rejects {
        Some(r) => r.finish()?,
        None => None,
    };
    let written = Written {
        pass: merger.finish(),
        stash,
        rejected_file,
        input_bytes: run.bytes,
        timers: &timers,
    };
    write_type(&group, opts, progress, written)
}

/// A [`Progress`] that passes on only cancellation.
struct CancelOnly<'a>(&'a dyn Progress);

impl Progress for CancelOnly<'_> {
    fn advance(&self, _: u64) {}

    fn cancelled(&self) -> bool {
        self.0.cancelled()
    }
}

/// Takes the unpacker's lines: a type's first line makes its [`TypeShared`], and each
/// buffer of lines goes to the pipeline as a chunk of the type's file 0.
struct Streamer<'a, 's> {
    chunks: &'a ChunkSender<'s>,
    types: &'a Mutex<Vec<Arc<TypeShared>>>,
    files: &'a [PathBuf],
    opts: &'a ConvertOptions,
    spill_dir: &'a Path,
    held: &'a Arc<AtomicUsize>,
    progress: &'a dyn Progress,
}

impl LineStream for Streamer<'_, '_> {
    fn chunk_bytes(&self) -> usize {
        self.opts.read.chunk_bytes.max(1)
    }

    fn new_type(&mut self, name: &str, path: &Path) -> Result<usize> {
        let rejects = match self.opts.on_error {
            OnError::Skip => Some(RejectSink::create(
                &self.opts.out_dir.join("_rejected"),
                name,
            )?),
            OnError::Fail => None,
        };
        let shared = TypeShared {
            name: name.to_string(),
            group: RwLock::new(TypeGroup {
                resource_type: name.to_string(),
                files: vec![InputFile {
                    path: path.to_path_buf(),
                    typed_by_name: true,
                    reports_untyped: false,
                }],
            }),
            stash: Stash::sharing(
                self.spill_dir,
                self.opts.memory_budget,
                Arc::clone(self.held),
            ),
            rejects,
            failed: AtomicBool::new(false),
            timers: Timers::default(),
        };
        let mut types = self.types.lock().unwrap_or_else(PoisonError::into_inner);
        types.push(Arc::new(shared));
        Ok(types.len() - 1)
    }

    fn hand(&mut self, slot: usize, lines: Vec<u8>) -> Result<Vec<u8>> {
        let chunk = Chunk {
            data: lines.into(),
            first_line: 1,
            overlong: Vec::new(),
            file: slot * 2,
        };
        if !self.chunks.send(Ok(chunk)) {
            // The conversion stopped (cancelled); its error is the run's.
            return Err(Error::Cancelled);
        }
        let mut buf = self
            .chunks
            .recycled()
            .unwrap_or_else(|| Vec::with_capacity(self.chunk_bytes() + (1 << 16)));
        buf.clear();
        Ok(buf)
    }

    fn file_done(&mut self, index: usize) {
        if let Some(path) = self.files.get(index) {
            self.progress.advance(crate::remote::len(path).unwrap_or(0));
        }
    }
}

/// The entries that could not become a resource (each a bad line) are reported by the
/// first type by name, after its resources: the file joins that type's group as its file 1.
fn send_unplaced(
    unpacked: &Unpacked,
    types: &Mutex<Vec<Arc<TypeShared>>>,
    chunks: &ChunkSender,
    opts: &ConvertOptions,
) -> Result<()> {
    let (typed, unplaced, _) = unpacked;
    let (Some(path), Some((first, _))) = (unplaced, typed.first()) else {
        return Ok(());
    };
    let (slot, shared) = {
        let types = types.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(slot) = types.iter().position(|t| &t.name == first) else {
            return Ok(());
        };
        (slot, Arc::clone(&types[slot]))
    };
    shared
        .group
        .write()
        .unwrap_or_else(PoisonError::into_inner)
        .files
        .push(InputFile {
            path: path.clone(),
            typed_by_name: true,
            reports_untyped: false,
        });
    let mut reader = LineReader::open(path, &opts.read)?;
    reader.leave_numbering_to_caller();
    if let Some(r) = &shared.rejects {
        reader.set_overlong_sink(r.overlong_sink(1));
    }
    while let Some(mut c) = reader.next_chunk()? {
        c.file = slot * 2 + 1;
        if !chunks.send(Ok(c)) {
            return Err(Error::Cancelled);
        }
    }
    Ok(())
}
