//! Converting one resource type: one chunk-parallel pass over the group's files (parsing and
//! flattening each line once, merged in input order into the union schema), then writing the
//! held chunks against that schema; plus the handling of rejected lines. File discovery lives
//! in `input`, JSON walking in `flatten`, holding chunks in `stash`, encoding in `writer`.

use std::fs::File;
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use arrow_schema::DataType;
use rayon::prelude::*;
use rustc_hash::FxHashMap;

use crate::error::{Error, Result};
use crate::flatten::{CapacityHints, ChunkPass, ColumnValues, line_text};
use crate::input::{InputFile, TypeGroup, resource_type_of};
use crate::pipeline::Timers;
use crate::reader::{Chunk, LineReader, ReadOptions};
use crate::schema::{Column, Dates, Decimals, FirstSeen, UnionSchema};
use crate::stash::{ChunkTable, Held, Parked, Stash, checked_texts, union_array};
use crate::writer::{ChunkRows, ColumnCodec, ColumnPart, TableWriter, WriteOptions};

mod streamed;
pub use streamed::convert_bundles;

/// What to do with a bad input line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnError {
    /// Stop converting the type; write no output for it.
    #[default]
    Fail,
    /// Set the line aside under `_rejected/` and go on.
    Skip,
}

/// Everything that shapes a conversion.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ConvertOptions {
    /// Output directory.
    pub out_dir: PathBuf,
    /// Column-name separator (flatten_json's `separator`), `_` by default.
    pub sep: String,
    /// Root keys to leave out (flatten_json's `root_keys_to_ignore`), e.g. `text`.
    pub exclude: Vec<String>,
    /// How numbers with fractions are stored.
    pub decimals: Decimals,
    /// How dates and instants are stored (text by default).
    pub dates: Dates,
    /// What to do with bad lines.
    pub on_error: OnError,
    /// Worker threads; 0 means one per core.
    pub threads: usize,
    /// Refuse schemas wider than this.
    pub max_columns: usize,
    /// How to read the input.
    pub read: ReadOptions,
    /// How to write the output.
    pub write: WriteOptions,
    /// Flattened data held in memory until the output can be written (it needs the union
    /// schema, known only after the whole input is read); beyond this many bytes, chunks go
    /// to a temporary file. Per type converted; [`convert_bundles`], which runs every type's
    /// pass at once, shares it among them.
    pub memory_budget: usize,
    /// Where that temporary file goes (`None`: the output directory). It is unlinked at
    /// once, so nothing is left behind even after a crash.
    pub spill_dir: Option<PathBuf>,
    /// A precomputed union schema (`convert --schema`): the output has exactly its columns,
    /// order and types, and a line that does not fit it is an error naming file and line.
    pub schema: Option<std::sync::Arc<crate::shard::SchemaDoc>>,
}

/// Default for [`ConvertOptions::max_columns`]: well above real ExplanationOfBenefit and
/// Provenance exports (1,000–1,400 columns), low enough to stop a runaway array.
pub const DEFAULT_MAX_COLUMNS: usize = 20_000;

impl Default for ConvertOptions {
    fn default() -> Self {
        Self {
            out_dir: PathBuf::from("."),
            sep: "_".into(),
            exclude: Vec::new(),
            decimals: Decimals::Float,
            dates: Dates::Text,
            on_error: OnError::Fail,
            threads: 0,
            max_columns: DEFAULT_MAX_COLUMNS,
            read: ReadOptions::default(),
            write: WriteOptions::default(),
            memory_budget: crate::stash::DEFAULT_MEMORY_BUDGET,
            spill_dir: None,
            schema: None,
        }
    }
}

/// Receives progress: input bytes as they are read, then again as their rows are written
/// (so a group counts twice its input size).
pub trait Progress: Sync {
    /// `bytes` more of the input (as stored, i.e. compressed for gzip) have been read.
    fn advance(&self, bytes: u64);

    /// Whether the caller wants the work stopped (e.g. Ctrl-C in a notebook). Polled between
    /// chunks; once it answers `true` the conversion ends with [`Error::Cancelled`] and writes
    /// nothing. Never, by default.
    fn cancelled(&self) -> bool {
        false
    }
}

/// Progress that goes nowhere.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn advance(&self, _: u64) {}
}

/// The union schema of one type, from the schema pass.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SchemaReport {
    /// The resource type.
    pub resource_type: String,
    /// Files read, in order.
    pub files: Vec<PathBuf>,
    /// Rows (accepted lines).
    pub rows: u64,
    /// Lines rejected (only with [`OnError::Skip`]).
    pub rejected: u64,
    /// The first [`SAMPLE_REJECTED`] rejected lines, in input order, so that the schema pass
    /// (which writes no `_rejected/`) can say what it left out.
    pub rejected_sample: Vec<RejectedLine>,
    /// Columns in output order.
    pub columns: Vec<Column>,
    /// The same schema as a mergeable value, for a schema document (`flatfhir schema --save`).
    #[serde(skip)]
    pub schema: crate::shard::TypeSchema,
}

/// How many rejected lines a [`SchemaReport`] names.
pub const SAMPLE_REJECTED: usize = 10;

/// A line the schema pass left out: where it is and why.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RejectedLine {
    /// The input file.
    pub file: PathBuf,
    /// 1-based line number in the (decompressed) file.
    pub line: u64,
    /// Why the line was rejected.
    pub reason: String,
}

/// What `--dates typed` did with a column that holds dates or instants.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DateColumn {
    /// The column.
    pub column: String,
    /// `timestamp[us, UTC]`, `date32`, or `string` when it stayed text.
    #[serde(rename = "type")]
    pub data_type: String,
    /// Why it stayed text (absent when typed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The columns of `union` that hold date-like values, and what became of them (empty unless
/// `--dates typed`).
fn date_columns(union: &UnionSchema) -> Vec<DateColumn> {
    use crate::schema::kind;
    if union.dates != Dates::Typed {
        return Vec::new();
    }
    let mut out = Vec::new();
    for (i, c) in union.columns.iter().enumerate() {
        let (data_type, reason) = match c.kinds {
            kind::INSTANT => ("timestamp[us, UTC]", None),
            kind::DATE => ("date32", None),
            k => match crate::schema::text_dates_reason(k) {
                Some(r) => ("string", Some(r.to_string())),
                None => continue,
            },
        };
        out.push(DateColumn {
            column: union.name(i).to_string(),
            data_type: data_type.to_string(),
            reason,
        });
    }
    out
}

/// What converting one type did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TypeReport {
    /// The resource type.
    pub resource_type: String,
    /// Files read, in order.
    pub files: Vec<PathBuf>,
    /// Rows written.
    pub rows: u64,
    /// Columns written.
    pub columns: usize,
    /// Input bytes (as stored).
    pub input_bytes: u64,
    /// The output file; `None` when there were no rows to write.
    pub output: Option<PathBuf>,
    /// Output size in bytes.
    pub output_bytes: u64,
    /// Wall-clock seconds.
    pub seconds: f64,
    /// Lines set aside under `_rejected/`.
    pub rejected: u64,
    /// The rejected-lines file, when there is one.
    pub rejected_file: Option<PathBuf>,
    /// Bytes of flattened data that went to the temporary spill file (beyond
    /// [`ConvertOptions::memory_budget`]).
    pub spilled_bytes: u64,
    /// Where the time went.
    pub stages: StageTimes,
    /// With `--dates typed`: the columns that hold dates or instants, typed or not and why.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dates: Vec<DateColumn>,
}

/// Seconds per stage of a conversion. Stages that run on several threads report CPU seconds
/// summed over the threads, so they can add up to more than the wall-clock time.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct StageTimes {
    /// Reading and decompressing input (reader thread).
    pub read: f64,
    /// Parsing every line once, collecting the schema and each column's values (and spilling
    /// chunks beyond the memory budget).
    pub flatten: f64,
    /// Loading held chunks and widening them to the union schema as Arrow columns.
    pub widen: f64,
    /// Encoding and compressing columns.
    pub encode: f64,
    /// Writing encoded data to the output file.
    pub write: f64,
}

fn secs(n: &AtomicU64) -> f64 {
    n.load(Ordering::Relaxed) as f64 / 1e9
}

/// Reads the group once and returns its union schema.
pub fn infer_schema(
    group: &TypeGroup,
    opts: &ConvertOptions,
    progress: &dyn Progress,
) -> Result<SchemaReport> {
    let pool = pool(opts.threads)?;
    let s = flatten_pass(&pool, group, opts, progress, None, None, &Timers::default())?;
    let mut columns = s.union.columns(opts.decimals);
    let paths: Vec<PathBuf> = group.files.iter().map(|f| f.path.clone()).collect();
    Ok(SchemaReport {
        resource_type: group.resource_type.clone(),
        files: crate::bundle::report_files(&paths, &mut columns),
        rows: s.rows,
        rejected: s.rejected,
        rejected_sample: s.rejected_sample,
        columns,
        schema: crate::shard::TypeSchema::from_union(&s.union, 0, s.rows, s.rejected),
    })
}

/// Converts one resource type to `<out_dir>/<Type>.<ext>`: one pass that parses and flattens
/// every line (holding the flattened chunks, spilling beyond the memory budget), then the
/// output is written against the union schema. The output appears only when complete; on
/// error nothing is left behind for the type.
pub fn convert_group(
    group: &TypeGroup,
    opts: &ConvertOptions,
    progress: &dyn Progress,
) -> Result<TypeReport> {
    let start = Instant::now();
    let t1 = Timers::default();
    let HeldPass {
        pool,
        pass,
        stash,
        rejected_file,
    } = held_pass(group, opts, progress, &t1)?;
    let written = Written {
        pass,
        stash,
        rejected_file,
        input_bytes: input_bytes(group),
        timers: &t1,
    };
    let mut report = pool.install(|| write_type(group, opts, progress, written))?;
    report.seconds = start.elapsed().as_secs_f64();
    Ok(report)
}

/// What a type's pass leaves for [`write_type`].
struct Written<'t> {
    pass: PassOutcome,
    stash: Stash,
    rejected_file: Option<PathBuf>,
    input_bytes: u64,
    /// The pass's times.
    timers: &'t Timers,
}

/// Writes a type's table after its pass (on the current pool) and reports it (`seconds`
/// left for the caller).
fn write_type(
    group: &TypeGroup,
    opts: &ConvertOptions,
    progress: &dyn Progress,
    w: Written<'_>,
) -> Result<TypeReport> {
    let Written {
        pass,
        stash,
        rejected_file,
        input_bytes,
        timers,
    } = w;
    let paths: Vec<PathBuf> = group.files.iter().map(|f| f.path.clone()).collect();
    let mut report = TypeReport {
        resource_type: group.resource_type.clone(),
        files: crate::bundle::report_files(&paths, &mut []),
        rows: pass.rows,
        columns: pass.union.columns.len(),
        input_bytes,
        output: None,
        output_bytes: 0,
        seconds: 0.0,
        rejected: pass.rejected,
        rejected_file,
        spilled_bytes: stash.spilled_bytes(),
        dates: date_columns(&pass.union),
        stages: StageTimes {
            read: secs(&timers.read),
            flatten: secs(&timers.process),
            ..StageTimes::default()
        },
    };
    if pass.rows > 0 {
        let t2 = Timers::default();
        let written = write_table(group, opts, progress, &pass, stash, &t2)?;
        report.output = Some(written.path);
        report.output_bytes = written.bytes;
        report.stages.widen = secs(&t2.process);
        report.stages.encode = written.encode_seconds;
        report.stages.write = written.write_seconds;
    }
    Ok(report)
}

/// What [`read_group`] did.
#[derive(Debug, Clone)]
pub struct ReadReport {
    /// The resource type.
    pub resource_type: String,
    /// Files read, in order.
    pub files: Vec<PathBuf>,
    /// Rows handed to the sink.
    pub rows: u64,
    /// Columns of the union schema.
    pub columns: usize,
    /// Input bytes (as stored).
    pub input_bytes: u64,
    /// Wall-clock seconds.
    pub seconds: f64,
    /// Lines set aside under `<out_dir>/_rejected/` (with [`OnError::Skip`]).
    pub rejected: u64,
    /// The rejected-lines records (`<Type>.errors.ndjson`), when there are any.
    pub rejected_file: Option<PathBuf>,
    /// Bytes of flattened data that went to the temporary spill file.
    pub spilled_bytes: u64,
}

/// Flattens one resource type exactly as [`convert_group`] does (same union schema, column
/// order, types and values), but hands the table to the caller instead of writing a file:
/// `start` receives the union schema once the pass is over, then `batch` receives one
/// [`RecordBatch`](arrow_array::RecordBatch) per input chunk, in input order. Chunks held
/// beyond [`ConvertOptions::memory_budget`] wait in the spill file (in
/// [`ConvertOptions::spill_dir`], else `out_dir`), and only `4 × threads` chunks are
/// widened at a time, so a caller that does not keep the batches reads input of any size in
/// bounded memory. Rejected lines (with [`OnError::Skip`]) go to `<out_dir>/_rejected/` as
/// for a conversion. An error from `start` or `batch` stops the work and is returned.
pub fn read_group(
    group: &TypeGroup,
    opts: &ConvertOptions,
    progress: &dyn Progress,
    start: &mut dyn FnMut(&arrow_schema::SchemaRef) -> Result<()>,
    batch: &mut dyn FnMut(arrow_array::RecordBatch) -> Result<()>,
) -> Result<ReadReport> {
    let began = Instant::now();
    let rt = &group.resource_type;
    let HeldPass {
        pool,
        pass,
        stash,
        rejected_file,
    } = held_pass(group, opts, progress, &Timers::default())?;
    let spilled_bytes = stash.spilled_bytes();
    let arrow = pass.union.arrow_schema(opts.decimals);
    start(&arrow)?;
    let (held, loader) = stash.into_parts()?;
    let window = pool.current_num_threads().max(1) * 4;
    let mut held = held.into_iter();
    let mut rows = 0u64;
    loop {
        let next: Vec<Held> = held.by_ref().take(window).collect();
        if next.is_empty() {
            break;
        }
        if progress.cancelled() {
            return Err(Error::Cancelled);
        }
        let built: Vec<Result<(arrow_array::RecordBatch, u64)>> = pool.install(|| {
            next.into_par_iter()
                .with_max_len(1)
                .map(|h| {
                    let input_bytes = h.chunk.input_bytes();
                    let file = h.file;
                    let table = loader.load(h.chunk)?;
                    let b = table.into_batch(&h.to_union, &arrow).map_err(|reason| {
                        Error::Internal {
                            resource_type: rt.clone(),
                            path: group
                                .files
                                .get(file)
                                .map(|f| f.path.clone())
                                .unwrap_or_default(),
                            reason,
                        }
                    })?;
                    Ok((b, input_bytes))
                })
                .collect()
        });
        for b in built {
            let (b, input_bytes) = b?;
            rows += b.num_rows() as u64;
            batch(b)?;
            progress.advance(input_bytes);
        }
    }
    if rows != pass.rows {
        return Err(Error::Internal {
            resource_type: rt.clone(),
            path: group.files[0].path.clone(),
            reason: format!("{rows} rows read back, {} flattened", pass.rows),
        });
    }
    Ok(ReadReport {
        resource_type: rt.clone(),
        files: group.files.iter().map(|f| f.path.clone()).collect(),
        rows,
        columns: pass.union.columns.len(),
        input_bytes: input_bytes(group),
        seconds: began.elapsed().as_secs_f64(),
        rejected: pass.rejected,
        rejected_file,
        spilled_bytes,
    })
}

/// The pass of [`convert_group`] and [`read_group`], with what it leaves for the write or the
/// read: the thread pool, the flattened chunks held in the stash, and the rejected lines'
/// records (`<out_dir>/_rejected/`, with [`OnError::Skip`]).
struct HeldPass {
    pool: Pool<'static>,
    pass: PassOutcome,
    stash: Stash,
    rejected_file: Option<PathBuf>,
}

fn held_pass(
    group: &TypeGroup,
    opts: &ConvertOptions,
    progress: &dyn Progress,
    timers: &Timers,
) -> Result<HeldPass> {
    if opts.sep.is_empty() {
        return Err(Error::Options("the separator must not be empty".into()));
    }
    let pool = pool(opts.threads)?;
    let rejects = match opts.on_error {
        OnError::Skip => Some(RejectSink::create(
            &opts.out_dir.join("_rejected"),
            &group.resource_type,
        )?),
        OnError::Fail => None,
    };
    let spill_dir = opts.spill_dir.as_ref().unwrap_or(&opts.out_dir);
    let stash = Stash::new(spill_dir, opts.memory_budget);
    let pass = flatten_pass(
        &pool,
        group,
        opts,
        progress,
        rejects.as_ref(),
        Some(&stash),
        timers,
    )?;
    let rejected_file = match rejects {
        Some(r) => r.finish()?,
        None => None,
    };
    Ok(HeldPass {
        pool,
        pass,
        stash,
        rejected_file,
    })
}

/// The group's input size as stored (0 for a file that can no longer be read).
fn input_bytes(group: &TypeGroup) -> u64 {
    group
        .files
        .iter()
        .map(|f| crate::remote::len(&f.path).unwrap_or(0))
        .sum()
}

/// Thread pools kept between passes, process-wide (see [`Pools`]).
static POOLS: Pools = Pools::new(4);

/// Thread pools kept between passes, each lent to one pass at a time (so passes that run
/// side by side never share one), at most `limit` of them.
///
/// Starting a pool starts its threads, and its first jobs wait for them to be scheduled;
/// in a notebook that reads a small export again and again (or a conversion of many small
/// types) that start-up was paid on every call. An idle pool's threads sleep.
struct Pools {
    limit: usize,
    idle: Mutex<Vec<(usize, rayon::ThreadPool)>>,
}

impl Pools {
    const fn new(limit: usize) -> Self {
        Self {
            limit,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// A pool of `threads` threads (0: as many as rayon picks, see
    /// [`crate::schedule::thread_count`]): an idle one, or a new one. It comes back here
    /// when dropped.
    fn lend(&self, threads: usize) -> Result<Pool<'_>> {
        // Keyed by the count 0 resolves to now (`RAYON_NUM_THREADS` may have changed).
        let threads = crate::schedule::thread_count(threads);
        let idle = self.idle.lock().ok().and_then(|mut idle| {
            let at = idle.iter().rposition(|(n, _)| *n == threads)?;
            Some(idle.swap_remove(at).1)
        });
        let pool = match idle {
            Some(p) => p,
            None => rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .thread_name(|i| format!("flatfhir-{i}"))
                .build()
                .map_err(|e| Error::Options(format!("cannot start {threads} threads: {e}")))?,
        };
        Ok(Pool {
            owner: self,
            threads,
            pool: Some(pool),
        })
    }
}

/// A pool lent by [`Pools::lend`].
struct Pool<'a> {
    owner: &'a Pools,
    threads: usize,
    pool: Option<rayon::ThreadPool>,
}

impl std::ops::Deref for Pool<'_> {
    type Target = rayon::ThreadPool;

    fn deref(&self) -> &rayon::ThreadPool {
        self.pool.as_ref().expect("a pool is held until dropped")
    }
}

impl Drop for Pool<'_> {
    fn drop(&mut self) {
        if let (Some(pool), Ok(mut idle)) = (self.pool.take(), self.owner.idle.lock())
            && idle.len() < self.owner.limit
        {
            idle.push((self.threads, pool));
        }
    }
}

fn pool(threads: usize) -> Result<Pool<'static>> {
    POOLS.lend(threads)
}

/// The outcome of the pass over the input.
struct PassOutcome {
    union: UnionSchema,
    rows: u64,
    rejected: u64,
    /// The first rejected lines when there is no sink to keep them (the schema pass).
    rejected_sample: Vec<RejectedLine>,
}

/// A line the pass refused.
struct BadLine {
    file: u32,
    /// Line number within the chunk (the pass adds the lines of the chunks before).
    line: u64,
    reason: String,
    /// The line itself, kept for `_rejected/`.
    bytes: LineBytes,
}

/// Where a refused line's bytes are, for `_rejected/`.
enum LineBytes {
    /// Not kept (the conversion stops at the first bad line).
    None,
    /// Kept by the worker.
    Kept(Vec<u8>),
    /// Spilled by the reader: the `n`th overlong line of the chunk (as the worker reports
    /// it) or of the file (once the pass has consumed the chunks before).
    Overlong(u64),
}

struct ChunkOutcome {
    schema: crate::schema::ChunkSchema,
    /// The flattened rows, when converting.
    table: Option<Result<Parked>>,
    rows: u64,
    /// Lines in the chunk, blank and overlong ones included (numbers are chunk-relative
    /// until the chunk is consumed in order).
    lines: u64,
    bad: Vec<BadLine>,
}

/// Does this line belong to the group? Files typed by name hold only the group's type (a line
/// of another type is an error); sniffed files hold several, and the group takes its own.
pub(crate) fn belongs(
    file: &InputFile,
    text: Option<&str>,
    rt: &str,
    scratch: &mut String,
) -> bool {
    if file.typed_by_name {
        return true;
    }
    match text.and_then(|t| resource_type_of(t, scratch)) {
        Some(t) => t == rt,
        // Unreadable or untyped: reported by exactly one group.
        None => file.reports_untyped,
    }
}

thread_local! {
    /// The room the columns of this thread's last chunk took, to size the next one's.
    static ROOM: std::cell::RefCell<CapacityHints> = std::cell::RefCell::default();
}

/// The one pass over the input: every line is checked and parsed once, chunk-parallel; the
/// chunks' schemas are merged in input order into the union schema. With a stash, each
/// chunk's flattened values are held there for [`write_table`]; without one (`schema`), only
/// statistics are kept.
fn flatten_pass(
    pool: &rayon::ThreadPool,
    group: &TypeGroup,
    opts: &ConvertOptions,
    progress: &dyn Progress,
    rejects: Option<&RejectSink>,
    stash: Option<&Stash>,
    timers: &Timers,
) -> Result<PassOutcome> {
    let input = PassInput {
        group,
        opts,
        rejects,
        stash,
    };
    let mut merger = PassMerger::new(&input)?;
    // Lines are numbered by `consume` (the reader leaves it to its caller); overlong lines'
    // bytes go to the reject sink's spill file.
    let open = |i: usize, reader: &mut LineReader| {
        reader.leave_numbering_to_caller();
        if let Some(r) = rejects {
            reader.set_overlong_sink(r.overlong_sink(i as u32));
        }
    };
    let paths: Vec<&Path> = group.files.iter().map(|f| f.path.as_path()).collect();
    crate::pipeline::run_chunks(
        Some(pool),
        &paths,
        &opts.read,
        progress,
        Some(timers),
        &open,
        |file_idx, chunk| input.process(file_idx, chunk),
        |chunk, outcome| merger.consume(&input, chunk.file, chunk, outcome),
    )?;
    Ok(merger.finish())
}

/// What a pass over one type's files reads with: the group, the options, and where
/// flattened chunks and refused lines go.
struct PassInput<'a> {
    group: &'a TypeGroup,
    opts: &'a ConvertOptions,
    rejects: Option<&'a RejectSink>,
    stash: Option<&'a Stash>,
}

impl PassInput<'_> {
    /// Flattens one chunk of file `file_idx` of the group (run by the workers, in any order).
    fn process(&self, file_idx: usize, chunk: &Chunk) -> ChunkOutcome {
        let (opts, stash) = (self.opts, self.stash);
        let rt = self.group.resource_type.as_str();
        let keep = self.rejects.is_some();
        let file = &self.group.files[file_idx];
        let room = ROOM.with(|r| r.take());
        let mut pass = ChunkPass::new(&opts.exclude, stash.is_some(), room);
        pass.dates = opts.dates == Dates::Typed;
        let mut bad = Vec::new();
        let mut scratch = String::new();
        for (k, o) in chunk.overlong.iter().enumerate() {
            if file.typed_by_name || file.reports_untyped {
                bad.push(BadLine {
                    file: file_idx as u32,
                    line: o.number,
                    reason: format!(
                        "line is {} bytes, longer than the limit of {} (--max-line-bytes)",
                        o.len, opts.read.max_line_bytes
                    ),
                    bytes: LineBytes::Overlong(k as u64),
                });
            }
        }
        // Bundle entries that could not become a resource: each is a bad line (the reason
        // comes from the Bundle reader, see `bundle::locate`).
        let unplaced = crate::bundle::is_unplaced(&file.path);
        let mut lines = chunk.lines();
        for line in lines.by_ref() {
            if unplaced {
                bad.push(BadLine {
                    file: file_idx as u32,
                    line: line.number,
                    reason: String::new(),
                    bytes: if keep {
                        LineBytes::Kept(line.bytes.to_vec())
                    } else {
                        LineBytes::None
                    },
                });
                continue;
            }
            let text = line_text(line.bytes, opts.read.max_line_bytes);
            if !belongs(file, text.as_ref().ok().copied(), rt, &mut scratch) {
                continue;
            }
            let at = FirstSeen {
                file: file_idx as u32,
                line: line.number,
            };
            if let Err(reason) = text.and_then(|t| pass.line(t, at, rt)) {
                bad.push(BadLine {
                    file: file_idx as u32,
                    line: line.number,
                    reason,
                    bytes: if keep {
                        LineBytes::Kept(line.bytes.to_vec())
                    } else {
                        LineBytes::None
                    },
                });
            }
        }
        let line_count = lines.next_number() - 1;
        let rows = pass.rows();
        if stash.is_some() {
            ROOM.with(|r| r.replace(pass.capacity_hints()));
        }
        let (schema, values) = pass.finish();
        let table = stash.map(|s| {
            s.park(ChunkTable {
                rows,
                input_bytes: chunk.data.len() as u64,
                columns: values,
            })
        });
        ChunkOutcome {
            schema,
            table,
            rows: u64::from(rows),
            lines: line_count,
            bad,
        }
    }
}

/// The in-order half of a pass: merges each chunk's schema into the union schema, numbers
/// its lines, reports its refused lines and hands its table to the stash.
struct PassMerger {
    fit: Option<crate::shard::Fit>,
    union: UnionSchema,
    rows: u64,
    rejected: u64,
    rejected_sample: Vec<RejectedLine>,
    /// Per file, the lines of the chunks consumed so far (chunks arrive numbered from their
    /// own start; in order, these turn them into file lines).
    lines_before: Vec<u64>,
    /// Per file, its overlong lines so far (the keys of the reader's spill).
    overlong_before: Vec<u64>,
}

impl PassMerger {
    fn new(input: &PassInput<'_>) -> Result<Self> {
        let (opts, group) = (input.opts, input.group);
        let rt = group.resource_type.as_str();
        let fit = match &opts.schema {
            Some(doc) => {
                if doc.sep != opts.sep || doc.exclude != opts.exclude {
                    return Err(Error::Options(format!(
                        "the schema document was made with sep {:?} and exclude {:?}, not {:?} and {:?}",
                        doc.sep, doc.exclude, opts.sep, opts.exclude
                    )));
                }
                Some(crate::shard::Fit::new(doc.get(rt)?, rt, opts)?)
            }
            None => None,
        };
        let mut union = match &fit {
            Some(f) => f.base.clone(),
            None => UnionSchema::new(rt, &opts.sep),
        };
        union.dates = opts.dates;
        Ok(Self {
            fit,
            union,
            rows: 0,
            rejected: 0,
            rejected_sample: Vec::new(),
            lines_before: vec![0; group.files.len()],
            overlong_before: vec![0; group.files.len()],
        })
    }

    /// Takes the next chunk's outcome, in input order; `file_idx` is the chunk's file in the
    /// group.
    fn consume(
        &mut self,
        input: &PassInput<'_>,
        file_idx: usize,
        chunk: &Chunk,
        mut c: ChunkOutcome,
    ) -> Result<()> {
        let (opts, group, rejects) = (input.opts, input.group, input.rejects);
        let rt = group.resource_type.as_str();
        if self.lines_before.len() < group.files.len() {
            // A file joined the group (the entries of Bundles that could not become a
            // resource, after the resources: see `streamed`).
            self.lines_before.resize(group.files.len(), 0);
            self.overlong_before.resize(group.files.len(), 0);
        }
        let base = self.lines_before[file_idx];
        self.lines_before[file_idx] += c.lines;
        let overlong_base = self.overlong_before[file_idx];
        self.overlong_before[file_idx] += chunk.overlong.len() as u64;
        for col in &mut c.schema.columns {
            col.first_seen.line += base;
        }
        let to_union = self.union.merge(&c.schema)?;
        if let Some(fit) = &self.fit
            && let Some(why) = fit.check(&self.union)
        {
            let file = &group.files[file_idx];
            let found = fit.first_misfit(
                chunk.lines().map(|l| (l.number, l.bytes)),
                file_idx as u32,
                rt,
                opts,
            );
            let (line, reason) = found.map_or((base + 1, why), |(n, r)| (base + n, r));
            return Err(Error::BadLine {
                file: file.path.clone(),
                line,
                reason,
            });
        }
        self.rows += c.rows;
        for b in c.bad {
            // A line unpacked from a Bundle is named by its Bundle file, line and entry.
            let (path, line, reason) =
                crate::bundle::locate(&group.files[b.file as usize].path, base + b.line, b.reason);
            let b = BadLine { reason, ..b };
            let path = &path;
            match (opts.on_error, rejects) {
                (OnError::Fail, _) => {
                    return Err(Error::BadLine {
                        file: path.clone(),
                        line,
                        reason: b.reason,
                    });
                }
                // The schema pass counts the lines it skips and names the first few.
                (OnError::Skip, None) => {
                    if self.rejected_sample.len() < SAMPLE_REJECTED {
                        self.rejected_sample.push(RejectedLine {
                            file: path.clone(),
                            line,
                            reason: b.reason,
                        });
                    }
                    self.rejected += 1;
                }
                (OnError::Skip, Some(sink)) => {
                    let bytes = match b.bytes {
                        LineBytes::Overlong(k) => LineBytes::Overlong(overlong_base + k),
                        other => other,
                    };
                    sink.add(path, b.file, line, &b.reason, bytes)?;
                    self.rejected += 1;
                }
            }
        }
        if self.union.columns.len() > opts.max_columns {
            return Err(Error::TooManyColumns {
                resource_type: rt.to_string(),
                columns: self.union.columns.len(),
                limit: opts.max_columns,
                widest: self.union.widest_paths(5),
            });
        }
        if let (Some(stash), Some(table)) = (input.stash, c.table) {
            stash.push(table?, to_union, file_idx)?;
        }
        Ok(())
    }

    fn finish(self) -> PassOutcome {
        PassOutcome {
            union: self.union,
            rows: self.rows,
            rejected: self.rejected,
            rejected_sample: self.rejected_sample,
        }
    }
}

/// Columns whose values take at most this many bytes plain-encoded over the whole input
/// ([`UnionSchema::plain_bytes`]) are written uncompressed: a column chunk then grows by at
/// most about this much. zstd makes column chunks this small larger, not smaller, and setting
/// up its contexts for each column (a trapped `cpuid` on a VM) is a large share of a wide
/// table's CPU time (measured on ExplanationOfBenefit: docs/performance.md, "Design choices").
const SMALL_COLUMN_BYTES: u64 = 1024;

/// With zstd asked for, a column whose values take at most this many bytes plain-encoded over
/// the whole input (and more than [`SMALL_COLUMN_BYTES`]), and whose distinct texts take
/// little ([`SNAPPY_STORED_BYTES`]), is written with Snappy instead: on such column chunks
/// (a small dictionary, runs of indices) Snappy does about as well as zstd, and needs none
/// of the two contexts zstd sets up per column and row group (slow on a VM, where each
/// context's `cpuid` traps). See [`column_codecs`].
const SNAPPY_COLUMN_BYTES: u64 = 8 * 1024;

/// The limit on a Snappy column's kept texts ([`UnionSchema::stored_bytes`]: a run of one
/// value counted once, so at least what its distinct values take). Without it, columns of
/// a few KiB of distinct names or addresses (small types such as Patient) went to Snappy
/// too, where zstd's entropy coding makes them clearly smaller (how many columns qualify
/// and what the files gain: docs/performance.md, "Design choices").
const SNAPPY_STORED_BYTES: u64 = 1024;

/// The codec of each union column: small columns uncompressed, a little larger ones of
/// few distinct texts with Snappy when the file's codec is zstd, the rest with the file's
/// codec (see [`SMALL_COLUMN_BYTES`], [`SNAPPY_COLUMN_BYTES`], [`SNAPPY_STORED_BYTES`]).
/// Decided from the pass's statistics, so the same for any thread count.
fn column_codecs(union: &UnionSchema, compression: crate::Compression) -> Vec<ColumnCodec> {
    (0..union.columns.len())
        .map(|c| {
            let bytes = union.plain_bytes(c);
            if bytes <= SMALL_COLUMN_BYTES {
                ColumnCodec::Uncompressed
            } else if compression == crate::Compression::Zstd
                && bytes <= SNAPPY_COLUMN_BYTES
                && union.stored_bytes(c) <= SNAPPY_STORED_BYTES
            {
                ColumnCodec::Snappy
            } else {
                ColumnCodec::File
            }
        })
        .collect()
}

/// A held chunk loaded for writing: its values per union column (`None`: the chunk has no
/// such column), its rows and input size, and its file.
type Loaded = (Vec<Option<ColumnValues>>, ChunkRows, usize);

/// Writes the held chunks, widened to the union schema, in input order.
fn write_table(
    group: &TypeGroup,
    opts: &ConvertOptions,
    progress: &dyn Progress,
    pass: &PassOutcome,
    stash: Stash,
    timers: &Timers,
) -> Result<crate::writer::WrittenFile> {
    let rt = group.resource_type.as_str();
    let arrow = pass.union.arrow_schema(opts.decimals);
    let path = opts
        .out_dir
        .join(format!("{rt}.{}", opts.write.format.extension()));
    let mut meta = vec![
        (
            "flatfhir.version".to_string(),
            env!("CARGO_PKG_VERSION").to_string(),
        ),
        ("flatfhir.resource_type".to_string(), rt.to_string()),
        ("flatfhir.separator".to_string(), opts.sep.clone()),
        (
            "flatfhir.decimals".to_string(),
            match opts.decimals {
                Decimals::Float => "float".into(),
                Decimals::Exact => "exact".into(),
            },
        ),
        (
            "flatfhir.rejected_lines".to_string(),
            pass.rejected.to_string(),
        ),
    ];
    let paths: Vec<PathBuf> = group.files.iter().map(|f| f.path.clone()).collect();
    let files: Vec<String> = crate::bundle::report_files(&paths, &mut [])
        .iter()
        .map(|f| f.display().to_string())
        .collect();
    meta.push((
        "flatfhir.source_files".to_string(),
        serde_json::to_string(&files).unwrap_or_default(),
    ));
    let codecs = column_codecs(&pass.union, opts.write.compression);
    let mut writer =
        TableWriter::create_with_codecs(&path, Arc::clone(&arrow), &opts.write, &meta, &codecs)?;
    let (held, loader) = stash.into_parts()?;
    let fields = arrow.fields();
    let width = fields.len();
    // Chunks loaded at a time: enough that each column's share of a window is worth a task.
    let window = rayon::current_num_threads().max(1) * 4;
    let mut held = held.into_iter();
    let mut rows = 0u64;
    let internal = |file: usize, reason: String| Error::Internal {
        resource_type: rt.to_string(),
        path: group
            .files
            .get(file)
            .map(|f| f.path.clone())
            .unwrap_or_default(),
        reason,
    };
    loop {
        let batch: Vec<Held> = held.by_ref().take(window).collect();
        if batch.is_empty() {
            break;
        }
        if progress.cancelled() {
            return Err(Error::Cancelled);
        }
        // One chunk per task (see `TableWriter::write_columns`).
        let loaded: Vec<Result<Loaded>> = batch
            .into_par_iter()
            .with_max_len(1)
            .map(|h| {
                let start = Instant::now();
                let input_bytes = h.chunk.input_bytes();
                let table = loader.load(h.chunk)?;
                let part = ChunkRows {
                    rows: table.rows as usize,
                    input_bytes,
                };
                let columns = table
                    .into_union_columns(&h.to_union, width)
                    .map_err(|reason| internal(h.file, reason))?;
                timers
                    .process
                    .fetch_add(start.elapsed().as_nanos() as u64, Ordering::Relaxed);
                Ok((columns, part, h.file))
            })
            .collect();
        // Transposed to [column][chunk], so each column's values go to one encoding task.
        let mut columns: Vec<Vec<Option<ColumnValues>>> = (0..width)
            .map(|_| Vec::with_capacity(loaded.len()))
            .collect();
        let mut parts = Vec::with_capacity(loaded.len());
        let mut files = Vec::with_capacity(loaded.len());
        for l in loaded {
            let (chunk_columns, part, file) = l?;
            for (c, v) in chunk_columns.into_iter().enumerate() {
                columns[c].push(v);
            }
            parts.push(part);
            files.push(file);
        }
        writer.write_parts(&parts, columns, |c, values, p| {
            let start = Instant::now();
            // Text columns go to the writer as held texts (see `TextChunk`).
            let array = match fields[c].data_type() {
                DataType::Utf8 => {
                    checked_texts(values[p].take(), parts[p].rows).map(ColumnPart::Texts)
                }
                t => union_array(t, values[p].take(), parts[p].rows).map(ColumnPart::Array),
            }
            .map_err(|e| internal(files[p], format!("column {}: {e}", fields[c].name())));
            timers
                .process
                .fetch_add(start.elapsed().as_nanos() as u64, Ordering::Relaxed);
            array
        })?;
        for part in &parts {
            rows += part.rows as u64;
            progress.advance(part.input_bytes);
        }
    }
    if rows != pass.rows {
        return Err(Error::Internal {
            resource_type: rt.to_string(),
            path: group.files[0].path.clone(),
            reason: format!("{rows} rows written, {} read", pass.rows),
        });
    }
    writer.finish()
}

/// Overlong lines' bytes, spilled by the reader thread so they can be copied to `_rejected/`
/// in input order without holding them in memory.
#[derive(Debug)]
struct Spill {
    file: File,
    /// (file index, ordinal among the file's overlong lines) → (offset, length) in the spill
    /// file.
    index: FxHashMap<(u32, u64), (u64, u64)>,
    end: u64,
}

impl Spill {
    fn append(&mut self, file: u32, ordinal: u64, piece: &[u8]) -> std::io::Result<()> {
        self.file.seek(SeekFrom::Start(self.end))?;
        self.file.write_all(piece)?;
        let e = self.index.entry((file, ordinal)).or_insert((self.end, 0));
        e.1 += piece.len() as u64;
        self.end += piece.len() as u64;
        Ok(())
    }
}

/// Writes rejected lines verbatim to `_rejected/<Type>.ndjson` and one JSON record per line
/// (file, line, reason, bytes) to `_rejected/<Type>.errors.ndjson`, in the same order.
struct RejectSink {
    dir: PathBuf,
    resource_type: String,
    inner: Mutex<Option<RejectFiles>>,
    spill: Arc<Mutex<Spill>>,
}

struct RejectFiles {
    lines: BufWriter<File>,
    reasons: BufWriter<File>,
    lines_tmp: crate::outfile::TempOutput,
    reasons_tmp: crate::outfile::TempOutput,
}

impl RejectSink {
    fn create(dir: &Path, resource_type: &str) -> Result<Self> {
        let spill = tempfile::tempfile().map_err(|source| Error::Write {
            path: std::env::temp_dir(),
            source,
        })?;
        Ok(Self {
            dir: dir.to_path_buf(),
            resource_type: resource_type.to_string(),
            inner: Mutex::new(None),
            spill: Arc::new(Mutex::new(Spill {
                file: spill,
                index: FxHashMap::default(),
                end: 0,
            })),
        })
    }

    fn werr(&self, source: std::io::Error) -> Error {
        Error::Write {
            path: self.dir.clone(),
            source,
        }
    }

    /// Where a reader of the group's file `file_idx` puts its overlong lines' bytes, for
    /// [`RejectSink::add`] to copy them later.
    fn overlong_sink(&self, file_idx: u32) -> crate::reader::OverlongSink {
        let spill = Arc::clone(&self.spill);
        Box::new(move |ordinal, piece, _end| {
            spill
                .lock()
                .map_err(|_| std::io::Error::other("poisoned"))?
                .append(file_idx, ordinal, piece)
        })
    }

    /// Appends a rejected line (`bytes`: kept, or the file's `n`th overlong line in the
    /// reader's spill) and its record.
    fn add(&self, path: &Path, file: u32, line: u64, reason: &str, bytes: LineBytes) -> Result<()> {
        let mut guard = self
            .inner
            .lock()
            .map_err(|_| self.werr(std::io::Error::other("poisoned")))?;
        if guard.is_none() {
            std::fs::create_dir_all(&self.dir).map_err(|e| self.werr(e))?;
            let mk = |suffix: &str| {
                crate::outfile::TempOutput::create(
                    &self.dir,
                    &format!("{}.{suffix}", self.resource_type),
                )
            };
            let (lf, lp) = mk("ndjson").map_err(|e| self.werr(e))?;
            let (rf, rp) = mk("errors.ndjson").map_err(|e| self.werr(e))?;
            *guard = Some(RejectFiles {
                lines: BufWriter::new(lf),
                reasons: BufWriter::new(rf),
                lines_tmp: lp,
                reasons_tmp: rp,
            });
        }
        let files = guard.as_mut().expect("created above");
        let len = match bytes {
            LineBytes::None => 0,
            LineBytes::Kept(b) => {
                files.lines.write_all(&b).map_err(|e| self.werr(e))?;
                b.len() as u64
            }
            LineBytes::Overlong(ordinal) => {
                let mut spill = self
                    .spill
                    .lock()
                    .map_err(|_| self.werr(std::io::Error::other("poisoned")))?;
                let (off, len) = spill.index.get(&(file, ordinal)).copied().unwrap_or((0, 0));
                spill
                    .file
                    .seek(SeekFrom::Start(off))
                    .map_err(|e| self.werr(e))?;
                let mut take = (&mut spill.file).take(len);
                std::io::copy(&mut take, &mut files.lines).map_err(|e| self.werr(e))?;
                len
            }
        };
        files.lines.write_all(b"\n").map_err(|e| self.werr(e))?;
        let rec = serde_json::json!({
            "file": path.display().to_string(),
            "line": line,
            "reason": reason,
            "bytes": len,
        });
        writeln!(files.reasons, "{rec}").map_err(|e| self.werr(e))?;
        Ok(())
    }

    /// Renames the files into place; returns the rejected-lines path if any line was rejected.
    fn finish(self) -> Result<Option<PathBuf>> {
        let Some(files) = self.inner.into_inner().ok().flatten() else {
            return Ok(None);
        };
        let lines_path = self.dir.join(format!("{}.ndjson", self.resource_type));
        let reasons_path = self
            .dir
            .join(format!("{}.errors.ndjson", self.resource_type));
        let werr = |path: &Path, source| Error::Write {
            path: path.to_path_buf(),
            source,
        };
        for (w, tmp, path) in [
            (files.lines, files.lines_tmp, &lines_path),
            (files.reasons, files.reasons_tmp, &reasons_path),
        ] {
            let f = w.into_inner().map_err(|e| werr(path, e.into_error()))?;
            tmp.commit(f, path).map_err(|e| werr(path, e))?;
        }
        Ok(Some(lines_path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::InputFile;
    use parquet::basic::Compression as Pq;
    use parquet::file::reader::{FileReader, SerializedFileReader};

    /// The OS threads of a pool.
    fn thread_ids(pool: &rayon::ThreadPool) -> Vec<std::thread::ThreadId> {
        let mut ids: Vec<_> = pool.broadcast(|_| std::thread::current().id());
        ids.sort_by_key(|id| format!("{id:?}"));
        ids
    }

    /// A pool given back is lent again, with the same threads; a pool lent out is never lent
    /// twice at once; pools beyond the limit are dropped; a pool is lent only for its thread
    /// count.
    #[test]
    fn pools_are_kept_and_lent_one_at_a_time() {
        let pools = Pools::new(1);
        let a = pools.lend(2).unwrap();
        assert_eq!(a.current_num_threads(), 2);
        let a_ids = thread_ids(&a);
        let b = pools.lend(2).unwrap();
        assert_ne!(thread_ids(&b), a_ids, "a pool in use is not lent again");
        drop(a);
        drop(b); // beyond the limit of 1: dropped
        assert_eq!(pools.idle.lock().unwrap().len(), 1);
        let one = pools.lend(1).unwrap();
        assert_eq!(one.current_num_threads(), 1, "not the idle 2-thread pool");
        drop(one); // beyond the limit: the 2-thread pool stays
        let again = pools.lend(2).unwrap();
        assert_eq!(
            thread_ids(&again),
            a_ids,
            "the idle pool comes back with its threads"
        );
    }

    /// A column that holds a few bytes over the whole input is stored uncompressed, one that
    /// holds a few KiB of few distinct texts with Snappy when zstd is asked for, and the
    /// others (including a few KiB of distinct texts) with the codec asked for.
    #[test]
    fn small_columns_get_a_codec_that_suits_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("Patient.ndjson");
        let mut text = String::new();
        // Plain-encoded over the input: resourceType 14 KB, id 23 KB, mid 1.3 KB of which
        // 600 B distinct, wide 5.4 KB of which 4 KB distinct, rare 8 B.
        for i in 0..1000 {
            let mid = if i % 10 == 0 {
                format!(r#","mid":"m{i:05}""#)
            } else {
                String::new()
            };
            let wide = if i % 5 == 0 {
                format!(r#","wide":"w{i:019}""#)
            } else {
                String::new()
            };
            let rare = if i == 7 { r#","rare":"x""# } else { "" };
            text.push_str(&format!(
                "{{\"resourceType\":\"Patient\",\"id\":\"patient-{i:08}\"{mid}{wide}{rare}}}\n"
            ));
        }
        std::fs::write(&path, text).unwrap();
        let group = TypeGroup {
            resource_type: "Patient".into(),
            files: vec![InputFile {
                path,
                typed_by_name: true,
                reports_untyped: false,
            }],
        };
        for (codec, want) in [
            (crate::Compression::Zstd, "ZSTD"),
            (crate::Compression::Snappy, "SNAPPY"),
        ] {
            let opts = ConvertOptions {
                out_dir: dir.path().join(want),
                write: WriteOptions {
                    compression: codec,
                    ..WriteOptions::default()
                },
                ..ConvertOptions::default()
            };
            let r = convert_group(&group, &opts, &NoProgress).unwrap();
            let reader = SerializedFileReader::new(File::open(r.output.unwrap()).unwrap()).unwrap();
            let rg = reader.metadata().row_group(0);
            let codecs: Vec<(String, String)> = rg
                .columns()
                .iter()
                .map(|c| {
                    let name = c.column_path().string();
                    let codec = match c.compression() {
                        Pq::ZSTD(_) => "ZSTD".to_string(),
                        other => other.to_string(),
                    };
                    (name, codec)
                })
                .collect();
            assert_eq!(
                codecs,
                [
                    ("resourceType".to_string(), want.to_string()),
                    ("id".to_string(), want.to_string()),
                    ("mid".to_string(), "SNAPPY".to_string()),
                    ("wide".to_string(), want.to_string()),
                    ("rare".to_string(), "UNCOMPRESSED".to_string()),
                ]
            );
        }
    }
}
