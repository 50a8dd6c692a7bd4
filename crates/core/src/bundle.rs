//! FHIR Bundles as input: unpacking `entry[].resource` into per-type NDJSON lines.
//!
//! A Bundle file (pretty-printed or one line, plain or gzip, one or several Bundles, or one
//! per NDJSON line) is read once, as a stream: a small JSON tokenizer walks the Bundle's
//! envelope and cuts each entry's resource out, compacted onto one line (whitespace outside
//! strings dropped; every other byte kept, so values flatten exactly as they would from
//! NDJSON). Each line goes to its type: appended to a temporary `<Type>.ndjson` (in a
//! private temporary directory that is removed with the [`BundleInputs`]), which the
//! ordinary line pipeline then converts as a file typed by name; or, when `convert` takes
//! Bundles as they are unpacked ([`unpack_with`] with a [`LineStream`], see
//! `convert::streamed`), gathered in a buffer per type and handed to that type's pass a
//! chunk at a time. Either way the validating walker, chunking, `_rejected/` and line
//! numbering work unchanged, and a 1 GB Bundle needs no more memory than its largest
//! resource (plus what is in flight). Beside each type's lines, an index of 16 bytes a line
//! (always a file) records where the line
//! came from (source file, entry index, source line), read back only to name a bad entry
//! ([`locate`]). Entries that cannot become a resource (no `resource`, no `resourceType`,
//! broken JSON) go to a file of their own that one group reports line by line, so with
//! `--on-error skip` a bad entry is quarantined and the rest of its Bundle converted.
//!
//! The tokenizer checks structure (brackets, strings, the envelope's members); the walker
//! validates each resource fully. Objects and arrays (each resource, and the envelope's
//! `request`s) are copied by a block scan ([`fastcopy`] over [`blocks`]): 64 bytes at a time,
//! SIMD comparisons give bitmasks of quotes, backslashes, whitespace and brackets, the
//! in-string mask follows from them (escapes, then a prefix XOR of the quotes, as simdjson's
//! stage 1), the runs of bytes to keep are copied whole, and only brackets (and, in a
//! resource's root object, commas and strings) are stepped through. That costs about 5
//! instructions per byte of pretty-printed input where the token-at-a-time copy cost 16
//! (`benches/bundles/RESULTS.md`). The scan mirrors the tokenizer exactly on what it accepts
//! and hands anything else (a mismatched bracket, a line break inside a string, a backslash
//! outside one, a value longer than `--max-line-bytes` or than its 16 MiB window) back
//! unread, so every error is found and named by the tokenizer alone; a differential property
//! test holds the two to the same output.
//!
//! Hand-written rather than a JSON crate: it must copy each resource's bytes verbatim
//! (numbers as written, escapes as written) from a stream, with the line of each entry and
//! the tokenizer's errors. The streaming parsers (serde_json, struson) re-encode values and
//! step byte by byte; the SIMD ones (simd-json, sonic-rs) parse a whole document held in
//! memory into values or keep raw slices with their whitespace, and none compacts.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use flate2::read::MultiGzDecoder;

use crate::error::{Error, Result};

mod blocks;
mod fastcopy;

/// Which files are read as Bundles (see `docs/columns.md`, "Bundles").
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum BundleMode {
    /// Files named `*.json` / `*.json.gz` (named on the command line, or found in a directory
    /// when they hold a Bundle), and files with other names that do not name a resource type
    /// whose content starts as a Bundle, are unpacked. NDJSON files (`*.ndjson`, `*.jsonl`)
    /// are read as NDJSON: a Bundle line there is a row of the Bundle table, as a Bulk Data
    /// export means it.
    #[default]
    Auto,
    /// As `Auto`, and every Bundle line of NDJSON files is unpacked too.
    Unpack,
    /// No file is unpacked (Bundles stay rows of the Bundle table; JSON documents are not read).
    Keep,
}

/// What to do with a resource whose (type, id) an earlier Bundle entry already had.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Duplicates {
    /// Keep every entry, as NDJSON would (nothing is held per resource).
    #[default]
    Keep,
    /// Keep the first and count the others (holds each (type, id) seen in memory).
    First,
}

/// How Bundles are unpacked.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct BundleOptions {
    /// Which files are Bundles.
    pub mode: BundleMode,
    /// Rewrite `urn:uuid:` references that name another entry's `fullUrl` (in the same
    /// file) to `Type/id`. Reads each Bundle file twice.
    pub resolve_references: bool,
    /// Duplicate (type, id) across entries.
    pub duplicates: Duplicates,
    /// Where the unpacked resources are kept while converting (default: the system's
    /// temporary directory).
    pub temp_dir: Option<PathBuf>,
}

/// Counts from unpacking, for the summary.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct BundleStats {
    /// Files read as Bundles / JSON documents.
    pub files: u64,
    /// Bundles unpacked.
    pub bundles: u64,
    /// Resources handed to the conversion (entries' resources and stand-alone documents).
    pub resources: u64,
    /// Entries that could not become a resource (reported as bad lines by the conversion).
    pub bad_entries: u64,
    /// Entries left out as duplicates of an earlier (type, id) (`Duplicates::First`).
    pub duplicates: u64,
    /// `urn:uuid:` references rewritten to `Type/id`.
    pub references_resolved: u64,
    /// `urn:uuid:` references that named no entry's `fullUrl`, left as they were.
    pub references_unresolved: u64,
}

/// Unpacked Bundle files: the temporary per-type files the plan's groups read, and counts.
/// Dropping it removes the files.
pub struct BundleInputs {
    dir: tempfile::TempDir,
    stats: BundleStats,
    sources: Vec<PathBuf>,
    registered: Vec<PathBuf>,
}

impl std::fmt::Debug for BundleInputs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BundleInputs")
            .field("dir", &self.dir.path())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl BundleInputs {
    /// Counts from unpacking.
    pub fn stats(&self) -> &BundleStats {
        &self.stats
    }

    /// The files that were unpacked, in reading order.
    pub fn sources(&self) -> &[PathBuf] {
        &self.sources
    }

    /// Whether `path` is one of the temporary files unpacked into (a group's input).
    pub fn holds(&self, path: &Path) -> bool {
        self.registered.iter().any(|p| p == path)
    }

    /// The Bundle files the lines of the unpacked file `path` came from, in reading order
    /// (empty for a path that is not one of them).
    pub fn sources_of(&self, path: &Path) -> Vec<PathBuf> {
        let Some(o) = origins(path).filter(|_| self.holds(path)) else {
            return Vec::new();
        };
        let Ok(index) = std::fs::read(&o.index) else {
            return o.sources.to_vec();
        };
        let mut seen = vec![false; o.sources.len()];
        let mut out = Vec::new();
        for rec in index.chunks_exact(16) {
            let k = u32::from_le_bytes(rec[0..4].try_into().expect("4 bytes")) as usize;
            if let Some(false) = seen.get(k) {
                seen[k] = true;
                out.push(o.sources[k].clone());
            }
        }
        out.sort_by_key(|p| o.sources.iter().position(|q| q == p));
        out
    }
}

impl Drop for BundleInputs {
    fn drop(&mut self) {
        if let Ok(mut reg) = REGISTRY.lock() {
            // Every file registered (those a streamed unpacking registered as it went too) is
            // in the directory.
            reg.retain(|(p, _)| !p.starts_with(self.dir.path()));
        }
        if let Ok(mut dirs) = DIRS.lock() {
            dirs.retain(|d| d != self.dir.path());
        }
    }
}

/// The temporary directories of unpacked Bundles that exist now, for [`remove_unpacked`].
static DIRS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// Removes the temporary directories of unpacked Bundles (for a signal handler that exits
/// the process without running destructors); returns how many were removed.
pub fn remove_unpacked() -> usize {
    let Ok(dirs) = DIRS.lock() else {
        return 0;
    };
    dirs.iter()
        .filter(|d| std::fs::remove_dir_all(d).is_ok())
        .count()
}

/// Where an unpacked file's lines came from.
struct Origins {
    sources: Arc<Vec<PathBuf>>,
    index: PathBuf,
    /// Every line of the file is an entry that could not become a resource.
    unplaced: bool,
}

/// Unpacked files and their origin indexes. Process-wide so that the line pipeline needs
/// only two small hooks (naming a bad line, and refusing every line of the unplaced file)
/// instead of carrying Bundle positions through every chunk.
static REGISTRY: Mutex<Vec<(PathBuf, Arc<Origins>)>> = Mutex::new(Vec::new());

fn origins(path: &Path) -> Option<Arc<Origins>> {
    let reg = REGISTRY.lock().ok()?;
    reg.iter()
        .find(|(p, _)| p == path)
        .map(|(_, o)| Arc::clone(o))
}

/// Whether every line of this file is a Bundle entry that could not become a resource (each
/// is a bad line; [`line_origin`] says why).
pub fn is_refused_entries(path: &Path) -> bool {
    is_unplaced(path)
}

/// [`is_refused_entries`].
pub(crate) fn is_unplaced(path: &Path) -> bool {
    origins(path).is_some_and(|o| o.unplaced)
}

/// Names a line of an unpacked file by its source: the Bundle file, the line its entry
/// starts on, and `entry[i]: ` before the reason (replaced by the tokenizer's own reason for
/// entries that could not become a resource). Other files' lines are returned unchanged.
pub(crate) fn locate(path: &Path, line: u64, reason: String) -> (PathBuf, u64, String) {
    let Some((file, src_line, entry, kind)) = record(path, line) else {
        return (path.to_path_buf(), line, reason);
    };
    let reason = match kind.reason() {
        Some(own) => own.to_string(),
        None => reason,
    };
    let at = if entry == NO_ENTRY {
        String::new()
    } else {
        format!("entry[{entry}]: ")
    };
    (file, src_line, format!("{at}{reason}"))
}

/// Where a line of an input file comes from, for messages of readers other than the
/// conversion (views): `file:line`, or for a line unpacked from a Bundle
/// `bundle.json:line: entry[i]`; and, for an entry that could not become a resource, why it
/// is refused.
pub fn line_origin(path: &Path, line: u64) -> (String, Option<String>) {
    match record(path, line) {
        None => (format!("{}:{line}", path.display()), None),
        Some((file, src_line, entry, kind)) => {
            let entry = if entry == NO_ENTRY {
                String::new()
            } else {
                format!(": entry[{entry}]")
            };
            let refused = match kind {
                Kind::Resource => None,
                // Kind::NoType also for a resourceType that names no table.
                k => k.reason().map(str::to_string),
            };
            (format!("{}:{src_line}{entry}", file.display()), refused)
        }
    }
}

/// The origin record of line `line` of an unpacked file: the Bundle file, its line, the
/// entry index and the kind.
fn record(path: &Path, line: u64) -> Option<(PathBuf, u64, u32, Kind)> {
    let o = origins(path)?;
    let mut rec = [0u8; 16];
    File::open(&o.index)
        .and_then(|mut f| {
            f.seek(SeekFrom::Start(line.saturating_sub(1) * 16))?;
            f.read_exact(&mut rec)
        })
        .ok()?;
    let src = u32::from_le_bytes(rec[0..4].try_into().expect("4 bytes")) as usize;
    let entry = u32::from_le_bytes(rec[4..8].try_into().expect("4 bytes"));
    let packed = u64::from_le_bytes(rec[8..16].try_into().expect("8 bytes"));
    let (kind, src_line) = ((packed >> 56) as u8, packed & ((1 << 56) - 1));
    let file = o.sources.get(src).cloned().unwrap_or_default();
    Some((file, src_line, entry, Kind::from_u8(kind)?))
}

/// Marks a line that is a whole document rather than a Bundle entry.
const NO_ENTRY: u32 = u32::MAX;

/// Why a line was unpacked as it was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Resource = 0,
    NoResource = 1,
    NoType = 2,
    Truncated = 3,
    Mismatched = 4,
    RawNewline = 5,
    NotJson = 6,
    TooLong = 7,
    EntryNotObject = 8,
}

impl Kind {
    fn from_u8(k: u8) -> Option<Kind> {
        use Kind::*;
        [
            Resource,
            NoResource,
            NoType,
            Truncated,
            Mismatched,
            RawNewline,
            NotJson,
            TooLong,
            EntryNotObject,
        ]
        .get(k as usize)
        .copied()
    }

    /// The reason reported for a line of this kind (`None`: the walker's reason stands).
    fn reason(self) -> Option<&'static str> {
        Some(match self {
            Kind::Resource => return None,
            Kind::NoResource => "the entry has no resource",
            Kind::NoType => "the resource has no resourceType (a string naming its type)",
            Kind::Truncated => "not valid JSON: the Bundle ends inside this entry (truncated?)",
            Kind::Mismatched => "not valid JSON: a closing bracket does not match its opening one",
            Kind::RawNewline => "not valid JSON: a string holds a raw line break",
            Kind::NotJson => {
                "not valid JSON: unexpected text where a JSON value or member should be"
            }
            Kind::TooLong => {
                "the resource is longer than --max-line-bytes; its first 1 KiB is kept"
            }
            Kind::EntryNotObject => "the entry is not a JSON object",
        })
    }
}

/// Does this file name mark a JSON document (`*.json`, `*.json.gz`)?
pub(crate) fn is_json_name(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    lower
        .strip_suffix(".gz")
        .unwrap_or(&lower)
        .ends_with(".json")
}

/// Whether a file starts as a Bundle: its first JSON member (after whitespace, a BOM, gzip)
/// is `"resourceType"` with the value `"Bundle"`. Reads at most 4 KiB.
pub(crate) fn starts_as_bundle(path: &Path) -> bool {
    let Ok(mut r) = open(path) else {
        return false;
    };
    let mut head = Vec::new();
    if r.by_ref().take(4096).read_to_end(&mut head).is_err() && head.is_empty() {
        return false;
    }
    let text = String::from_utf8_lossy(&head);
    let t = text.trim_start_matches('\u{feff}').trim_start();
    let Some(t) = t.strip_prefix('{') else {
        return false;
    };
    let Some(t) = t.trim_start().strip_prefix("\"resourceType\"") else {
        return false;
    };
    let Some(t) = t.trim_start().strip_prefix(':') else {
        return false;
    };
    t.trim_start().starts_with("\"Bundle\"")
}

/// Opens a file, decompressing gzip (by magic bytes).
fn open(path: &Path) -> io::Result<Box<dyn Read + Send>> {
    if crate::remote::url_of(path).is_some() {
        let gz = crate::remote::is_gzip(path)?;
        let f = crate::remote::open(path, 0)?;
        return Ok(if gz {
            Box::new(MultiGzDecoder::new(io::BufReader::with_capacity(
                1 << 16,
                f,
            )))
        } else {
            f
        });
    }
    let mut f = File::open(path)?;
    let mut magic = [0u8; 2];
    let n = f.read(&mut magic)?;
    f.seek(SeekFrom::Start(0))?;
    Ok(if n == 2 && magic == [0x1f, 0x8b] {
        Box::new(MultiGzDecoder::new(io::BufReader::with_capacity(
            1 << 16,
            f,
        )))
    } else {
        Box::new(f)
    })
}

/// One resource type's unpacked lines and their origin index.
struct TypeOut {
    path: PathBuf,
    lines: Out,
    index: BufWriter<File>,
}

/// Where a type's unpacked lines go.
enum Out {
    /// To its temporary file.
    File(BufWriter<File>),
    /// To a [`LineStream`], a buffer of whole lines at a time (`slot`: the type's number
    /// there).
    Stream { slot: usize, buf: Vec<u8> },
}

/// Takes unpacked lines as they are unpacked, per type, instead of temporary files: the
/// conversion's passes over every type at once (`convert::streamed`). The origin index is
/// still written (it is small: 16 bytes a line) and flushed before the lines it describes
/// are handed on, so a bad line is named as with files.
pub(crate) trait LineStream: Send {
    /// Bytes of lines to gather before handing them on.
    fn chunk_bytes(&self) -> usize;
    /// A type's first line is coming. `path` is the type's file (never written; its lines
    /// are named through it, see [`locate`]). Returns the type's number, for [`hand`].
    ///
    /// [`hand`]: LineStream::hand
    fn new_type(&mut self, name: &str, path: &Path) -> Result<usize>;
    /// The next whole lines (each ending in `\n`) of type `slot`; returns an empty buffer
    /// to gather the next ones in.
    fn hand(&mut self, slot: usize, lines: Vec<u8>) -> Result<Vec<u8>>;
    /// Every line of file `index` (of the files being unpacked) has been handed on or is
    /// gathered.
    fn file_done(&mut self, index: usize);
}

/// What [`unpack`] made: per resource type its temporary file, the file of entries that could
/// not become a resource (if any), and the owner of both.
pub(crate) type Unpacked = (Vec<(String, PathBuf)>, Option<PathBuf>, BundleInputs);

/// Unpacks `files` (in this order) into per-type NDJSON files. Returns the temporary files
/// per resource type (and the file of unplaced entries, if any) with the [`BundleInputs`]
/// that owns them.
pub(crate) fn unpack(
    files: &[PathBuf],
    opts: &BundleOptions,
    max_line_bytes: usize,
) -> Result<Unpacked> {
    unpack_with(files, opts, max_line_bytes, None, None)
}

/// [`unpack`], with the files of a batch unpacked on `pool` (`None`: the current pool), and
/// with a `stream` the resources are handed to it as they are unpacked instead of written
/// to temporary files (the returned per-type paths then name files that do not exist; the
/// file of unplaced entries is written either way).
pub(crate) fn unpack_with(
    files: &[PathBuf],
    opts: &BundleOptions,
    max_line_bytes: usize,
    pool: Option<&rayon::ThreadPool>,
    stream: Option<&mut dyn LineStream>,
) -> Result<Unpacked> {
    let base = opts.temp_dir.clone().unwrap_or_else(std::env::temp_dir);
    let dir = tempfile::Builder::new()
        .prefix(".flatfhir-bundles-")
        .tempdir_in(&base)
        .map_err(|e| Error::Write {
            path: base.clone(),
            source: e,
        })?;
    if let Ok(mut dirs) = DIRS.lock() {
        dirs.push(dir.path().to_path_buf());
    }
    let sources = Arc::new(files.to_vec());
    // Unpacking files side by side (in batches held in memory, handed on in order) uses
    // more cores but costs a copy of every line and the batches' memory. Streamed to a
    // conversion, the pass's workers keep the other cores busy: with at most two threads,
    // unpacking plain files one after another on one thread takes as long and 6 % less CPU
    // (benches/bundles/RESULTS.md). Not gzip files (inflating them would hold the one
    // thread up), nor with more threads (it would not keep up).
    let threads = pool.map_or_else(
        rayon::current_num_threads,
        rayon::ThreadPool::current_num_threads,
    );
    let one_by_one = stream.is_some() && threads <= 2;
    // Owns the directory from here: on an error, dropping it removes the directory and
    // whatever was registered in it.
    let mut inputs = BundleInputs {
        dir,
        stats: BundleStats::default(),
        sources: files.to_vec(),
        registered: Vec::new(),
    };
    let sink = Sink {
        dir: inputs.dir.path().to_path_buf(),
        types: Vec::new(),
        by_name: Default::default(),
        last: 0,
        unplaced: None,
        seen: HashSet::new(),
        duplicates: opts.duplicates,
        stats: BundleStats::default(),
        stream,
        sources: Arc::clone(&sources),
    };
    // Small files (most Bundle folders: one Bundle per patient) are unpacked side by side
    // into memory, a batch at a time, and handed on in file order by a writer thread (which
    // writes one batch while the next is unpacked); a large file is streamed on its own by
    // the writer, so memory stays bounded by two batches, never by a file.
    enum Job {
        /// The files from index `.0` on.
        Batch(usize, Vec<Result<(Recorded, (u64, u64))>>),
        Stream(usize),
    }
    // Replayed records are handed back for the next files: their memory is already mapped
    // (a fresh buffer costs a page fault per 4 KiB it is written). At most two batches'
    // worth is kept.
    let spare: Mutex<(Vec<Recorded>, usize)> = Mutex::new((Vec::new(), 0));
    let spare = &spare;
    let mut sink = std::thread::scope(|scope| -> Result<Sink> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Job>(1);
        let writer = scope.spawn(move || -> Result<Sink> {
            let mut sink = sink;
            let add = |sink: &mut Sink, (resolved, unresolved): (u64, u64)| {
                sink.stats.references_resolved += resolved;
                sink.stats.references_unresolved += unresolved;
            };
            for job in rx {
                match job {
                    Job::Stream(k) => {
                        let refs =
                            unpack_file(&files[k], k as u32, opts, max_line_bytes, &mut sink)?;
                        add(&mut sink, refs);
                        sink.file_done(k);
                    }
                    Job::Batch(first, unpacked) => {
                        for (k, r) in (first..).zip(unpacked) {
                            let (mut rec, refs) = r?;
                            rec.replay(&mut sink)?;
                            add(&mut sink, refs);
                            sink.file_done(k);
                            if let Ok(mut spare) = spare.lock() {
                                rec.touched = rec.touched.max(rec.bytes.len());
                                let kept = spare.1 + rec.touched;
                                if kept <= 2 * BATCH_BYTES as usize {
                                    rec.clear();
                                    spare.0.push(rec);
                                    spare.1 = kept;
                                }
                            }
                        }
                    }
                }
            }
            Ok(sink)
        });
        let mut i = 0;
        while i < files.len() {
            let mut end = i;
            let mut batch_bytes = 0u64;
            let mut sizes = Vec::new();
            while end < files.len() && end - i < BATCH_FILES {
                match small_size(&files[end]) {
                    // A plain file streamed to a conversion on few threads: on its own.
                    Some((_, false)) if one_by_one => break,
                    Some((n, _)) if batch_bytes + n <= BATCH_BYTES || end == i => {
                        batch_bytes += n;
                        sizes.push(n);
                        end += 1;
                    }
                    _ => break,
                }
            }
            let job = if end == i {
                i += 1;
                Job::Stream(i - 1)
            } else {
                use rayon::prelude::*;
                let batch = || {
                    (i..end)
                        .into_par_iter()
                        .map(|k| {
                            let mut rec = spare
                                .lock()
                                .ok()
                                .and_then(|mut spare| {
                                    let rec = spare.0.pop()?;
                                    spare.1 -= rec.touched;
                                    Some(rec)
                                })
                                .unwrap_or_default();
                            let size = sizes[k - i] as usize;
                            if rec.bytes.capacity() < size {
                                // Not grown in place: a reallocation copies the old capacity,
                                // touching as many fresh pages as it saves. Reserved generously
                                // (only the pages written are touched), so that the buffer
                                // fits the next files when it is handed back.
                                rec.bytes = Vec::with_capacity(size.max(RECORD_CAPACITY));
                                rec.touched = 0;
                            }
                            let refs =
                                unpack_file(&files[k], k as u32, opts, max_line_bytes, &mut rec)?;
                            Ok((rec, refs))
                        })
                        .collect()
                };
                let unpacked = match pool {
                    Some(pool) => pool.install(batch),
                    None => batch(),
                };
                let first = i;
                i = end;
                Job::Batch(first, unpacked)
            };
            if tx.send(job).is_err() {
                // The writer stopped on an error, which `join` returns.
                break;
            }
        }
        drop(tx);
        writer
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })?;
    sink.stats.files = files.len() as u64;
    let mut typed = Vec::new();
    let werr = |path: &Path, e| Error::Write {
        path: path.to_path_buf(),
        source: e,
    };
    let mut types = std::mem::take(&mut sink.types);
    types.sort_by(|a, b| a.0.cmp(&b.0));
    for (t, mut out) in types {
        out.index.flush().map_err(|e| werr(&out.path, e))?;
        match &mut out.lines {
            Out::File(lines) => {
                lines.flush().map_err(|e| werr(&out.path, e))?;
                sink.register(&out.path, false)?;
            }
            Out::Stream { slot, buf } => {
                if !buf.is_empty()
                    && let Some(stream) = sink.stream.as_deref_mut()
                {
                    stream.hand(*slot, std::mem::take(buf))?;
                }
            }
        }
        inputs.registered.push(out.path.clone());
        typed.push((t, out.path));
    }
    let unplaced = match sink.unplaced.take() {
        Some(mut out) => {
            if let Out::File(lines) = &mut out.lines {
                lines.flush().map_err(|e| werr(&out.path, e))?;
            }
            out.index.flush().map_err(|e| werr(&out.path, e))?;
            sink.register(&out.path, true)?;
            inputs.registered.push(out.path.clone());
            Some(out.path)
        }
        None => None,
    };
    inputs.stats = sink.stats;
    Ok((typed, unplaced, inputs))
}

/// The least capacity of a file's [`Recorded`] buffer (address space only; the pages
/// written are what it costs).
const RECORD_CAPACITY: usize = 8 << 20;

/// Files unpacked side by side at most (per batch).
const BATCH_FILES: usize = 16;
/// Bytes on disk of the files of one batch at most (held in memory, compacted, while the
/// batch is unpacked).
const BATCH_BYTES: u64 = 16 << 20;

/// The size (expected once decompressed) of a file that may be unpacked in memory, up to
/// [`BATCH_BYTES`], and whether it is gzip-compressed.
fn small_size(path: &Path) -> Option<(u64, bool)> {
    let len = crate::remote::len(path).ok()?;
    let gz = crate::remote::is_gzip(path).ok()?;
    // Gzip-compressed Bundles expand about eightfold.
    let estimate = if gz { len.saturating_mul(8) } else { len };
    (estimate <= BATCH_BYTES).then_some((estimate, gz))
}

/// Unpacks one file into `sink`; returns the references resolved and unresolved.
fn unpack_file(
    path: &Path,
    index: u32,
    opts: &BundleOptions,
    max_line_bytes: usize,
    sink: &mut dyn Emit,
) -> Result<(u64, u64)> {
    let map = if opts.resolve_references {
        Some(collect_full_urls(path, max_line_bytes)?)
    } else {
        None
    };
    let src = open(path).map_err(|e| Error::Read {
        path: path.to_path_buf(),
        source: e,
    })?;
    let mut p = Parser::new(src, path, index, max_line_bytes, map.as_ref());
    p.documents(sink)?;
    Ok((p.resolved, p.unresolved))
}

/// A file's unpacked lines held in memory, to be handed on in file order.
#[derive(Default)]
struct Recorded {
    bytes: Vec<u8>,
    lines: Vec<RecordedLine>,
    bundles: u64,
    /// The most bytes `bytes` has held (its pages that are mapped).
    touched: usize,
}

struct RecordedLine {
    /// Ends (in `bytes`) of the line, its type and its id, each following the one before.
    ends: [usize; 3],
    has: (bool, bool),
    kind: Kind,
    file: u32,
    entry: u32,
    line: u64,
}

impl Emit for Recorded {
    fn emit(&mut self, e: Emitted<'_>) -> Result<()> {
        self.bytes.extend_from_slice(e.bytes);
        let a = self.bytes.len();
        self.bytes.extend_from_slice(e.rtype.unwrap_or_default());
        let b = self.bytes.len();
        self.bytes.extend_from_slice(e.id.unwrap_or_default());
        self.lines.push(RecordedLine {
            ends: [a, b, self.bytes.len()],
            has: (e.rtype.is_some(), e.id.is_some()),
            kind: e.kind,
            file: e.file,
            entry: e.entry,
            line: e.line,
        });
        Ok(())
    }

    fn bundle(&mut self) {
        self.bundles += 1;
    }
}

impl Recorded {
    fn clear(&mut self) {
        self.bytes.clear();
        self.lines.clear();
        self.bundles = 0;
    }

    fn replay(&self, sink: &mut dyn Emit) -> Result<()> {
        for _ in 0..self.bundles {
            sink.bundle();
        }
        let mut start = 0;
        for l in &self.lines {
            let [a, b, c] = l.ends;
            sink.emit(Emitted {
                bytes: &self.bytes[start..a],
                kind: l.kind,
                rtype: l.has.0.then(|| &self.bytes[a..b]),
                id: l.has.1.then(|| &self.bytes[b..c]),
                full_url: None,
                file: l.file,
                entry: l.entry,
                line: l.line,
            })?;
            start = c;
        }
        Ok(())
    }
}

/// First pass for `resolve_references`: every entry's `fullUrl` → `Type/id`.
fn collect_full_urls(path: &Path, max_line_bytes: usize) -> Result<HashMap<Vec<u8>, Vec<u8>>> {
    struct Collect(HashMap<Vec<u8>, Vec<u8>>);
    impl Emit for Collect {
        fn emit(&mut self, e: Emitted<'_>) -> Result<()> {
            if let (Some(url), Some(t), Some(id)) = (e.full_url, e.rtype, e.id) {
                let mut target = t.to_vec();
                target.push(b'/');
                target.extend_from_slice(id);
                self.0.insert(url.to_vec(), target);
            }
            Ok(())
        }
        fn bundle(&mut self) {}
    }
    let src = open(path).map_err(|e| Error::Read {
        path: path.to_path_buf(),
        source: e,
    })?;
    let mut c = Collect(HashMap::new());
    Parser::new(src, path, 0, max_line_bytes, None).documents(&mut c)?;
    Ok(c.0)
}

/// One unpacked line, as the parser hands it on.
struct Emitted<'a> {
    bytes: &'a [u8],
    kind: Kind,
    rtype: Option<&'a [u8]>,
    id: Option<&'a [u8]>,
    full_url: Option<&'a [u8]>,
    file: u32,
    entry: u32,
    line: u64,
}

trait Emit {
    fn emit(&mut self, e: Emitted<'_>) -> Result<()>;
    fn bundle(&mut self);
}

/// Writes unpacked lines to their type's file, or hands them to a stream.
struct Sink<'s> {
    dir: PathBuf,
    /// Each type's output, in the order the types were first seen.
    types: Vec<(String, TypeOut)>,
    /// The index in `types` of each type name.
    by_name: rustc_hash::FxHashMap<Vec<u8>, usize>,
    /// The type of the line before.
    last: usize,
    unplaced: Option<TypeOut>,
    seen: HashSet<(Vec<u8>, Vec<u8>)>,
    duplicates: Duplicates,
    stats: BundleStats,
    stream: Option<&'s mut dyn LineStream>,
    sources: Arc<Vec<PathBuf>>,
}

impl Sink<'_> {
    fn file_done(&mut self, index: usize) {
        if let Some(stream) = self.stream.as_deref_mut() {
            stream.file_done(index);
        }
    }

    /// Makes the lines of `path` known to [`locate`] and [`report_files`].
    fn register(&self, path: &Path, unplaced: bool) -> Result<()> {
        REGISTRY
            .lock()
            .map_err(|_| Error::Options("bundle registry poisoned".into()))?
            .push((
                path.to_path_buf(),
                Arc::new(Origins {
                    sources: Arc::clone(&self.sources),
                    index: path.with_extension("origin"),
                    unplaced,
                }),
            ));
        Ok(())
    }

    /// The output of a type seen for the first time (`None`: the unplaced entries, always to
    /// a file).
    fn type_out(&mut self, name: Option<&str>) -> Result<TypeOut> {
        let path = self
            .dir
            .join(format!("{}.ndjson", name.unwrap_or("_unplaced")));
        let create = |p: &Path| {
            File::create(p)
                .map(|f| BufWriter::with_capacity(1 << 16, f))
                .map_err(|e| Error::Write {
                    path: p.to_path_buf(),
                    source: e,
                })
        };
        let index = create(&path.with_extension("origin"))?;
        let lines = match (name, self.stream.as_deref_mut()) {
            (Some(name), Some(stream)) => {
                let slot = stream.new_type(name, &path)?;
                let buf = Vec::with_capacity(stream.chunk_bytes() + (1 << 16));
                self.register(&path, false)?;
                Out::Stream { slot, buf }
            }
            _ => Out::File(create(&path)?),
        };
        Ok(TypeOut { path, lines, index })
    }
}

impl Emit for Sink<'_> {
    fn bundle(&mut self) {
        self.stats.bundles += 1;
    }

    fn emit(&mut self, e: Emitted<'_>) -> Result<()> {
        let mut kind = e.kind;
        // The type's output: most lines are of the type before, or of one seen already.
        let known = match e.rtype {
            Some(t) if kind == Kind::Resource => match self.types.get(self.last) {
                Some((name, _)) if name.as_bytes() == t => Some(self.last),
                _ => self.by_name.get(t).copied(),
            },
            _ => None,
        };
        let slot = match known {
            Some(k) => Some(k),
            None => match e.rtype {
                Some(t) if kind == Kind::Resource => {
                    if !t.is_empty() && t.iter().all(u8::is_ascii_alphanumeric) {
                        let name = std::str::from_utf8(t).expect("ASCII");
                        let out = self.type_out(Some(name))?;
                        self.types.push((name.to_string(), out));
                        self.by_name.insert(t.to_vec(), self.types.len() - 1);
                        Some(self.types.len() - 1)
                    } else {
                        // A resourceType that cannot name a table: let the walker say why.
                        None
                    }
                }
                None if kind == Kind::Resource => {
                    kind = Kind::NoType;
                    None
                }
                _ => None,
            },
        };
        if let (Some(k), Some(id), Duplicates::First) = (slot, e.id, self.duplicates)
            && !self
                .seen
                .insert((self.types[k].0.as_bytes().to_vec(), id.to_vec()))
        {
            self.stats.duplicates += 1;
            return Ok(());
        }
        let out = match slot {
            Some(k) => {
                self.last = k;
                self.stats.resources += 1;
                &mut self.types[k].1
            }
            None => {
                if kind == Kind::Resource {
                    // Odd resourceType: reported by the walker with its own reason.
                    kind = Kind::NoType;
                }
                self.stats.bad_entries += 1;
                if self.unplaced.is_none() {
                    self.unplaced = Some(self.type_out(None)?);
                }
                self.unplaced.as_mut().expect("created")
            }
        };
        let werr = |e| Error::Write {
            path: out.path.clone(),
            source: e,
        };
        let bytes: &[u8] = if e.bytes.iter().all(u8::is_ascii_whitespace) {
            b"(nothing)"
        } else {
            e.bytes
        };
        let mut rec = [0u8; 16];
        rec[0..4].copy_from_slice(&e.file.to_le_bytes());
        rec[4..8].copy_from_slice(&e.entry.to_le_bytes());
        let packed = ((kind as u64) << 56) | (e.line & ((1 << 56) - 1));
        rec[8..16].copy_from_slice(&packed.to_le_bytes());
        out.index.write_all(&rec).map_err(werr)?;
        match &mut out.lines {
            Out::File(lines) => {
                lines.write_all(bytes).map_err(werr)?;
                lines.write_all(b"\n").map_err(werr)?;
            }
            Out::Stream { slot, buf } => {
                buf.extend_from_slice(bytes);
                buf.push(b'\n');
                if let Some(stream) = self.stream.as_deref_mut()
                    && buf.len() >= stream.chunk_bytes()
                {
                    // The lines handed on may be named by `locate` as soon as they are
                    // converted.
                    out.index.flush().map_err(werr)?;
                    *buf = stream.hand(*slot, std::mem::take(buf))?;
                }
            }
        }
        Ok(())
    }
}

/// A structural error the tokenizer found.
#[derive(Debug, Clone, Copy)]
struct Broken(Kind);

type Parse<T> = std::result::Result<T, Broken>;

/// What the key of the value being copied is, for the members the tokenizer looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Key {
    Other,
    ResourceType,
    Id,
    Reference,
}

/// The streaming tokenizer over one file.
struct Parser<'m> {
    src: Box<dyn Read + Send>,
    path: PathBuf,
    file: u32,
    buf: Vec<u8>,
    pos: usize,
    end: usize,
    eof: bool,
    /// 1-based line of `pos`.
    line: u64,
    max: usize,
    full_urls: Option<&'m HashMap<Vec<u8>, Vec<u8>>>,
    resolved: u64,
    unresolved: u64,
    // Scratch buffers, reused.
    res: Vec<u8>,
    rest: Vec<u8>,
    full_url: Vec<u8>,
    key: Vec<u8>,
    skip: Vec<u8>,
    rtype: Vec<u8>,
    id: Vec<u8>,
    /// The index and first line of the entry being read, for naming a broken one.
    cur_entry: Option<(u32, u64)>,
    /// The copy of a top-level document that is not a Bundle.
    doc: Vec<u8>,
    /// The next document is a Bundle whatever its first member (a copy of one whose
    /// `resourceType` came later).
    whole_bundle: bool,
    /// Objects and arrays are copied by the block scan ([`fastcopy`]) where it can; off only
    /// in tests that compare it with the tokenizer alone.
    fast: bool,
    /// The offset in the file of `buf[0]`.
    base: u64,
    /// The byte comparisons of the block scan (the best there are, but in tests).
    simd: blocks::Simd,
    /// The largest buffer the block scan widens to ([`WINDOW`]; smaller in tests).
    window: usize,
    /// Values the block scan copied, and those it left to the tokenizer.
    fast_copies: u64,
    fast_declined: u64,
}

const BUF: usize = 256 << 10;

/// The largest window the block scan widens the buffer to for one value (a longer value, in
/// its pretty-printed form, is read by the tokenizer, which streams).
const WINDOW: usize = 16 << 20;

/// Eight spaces, as a little-endian word.
const SPACES: u64 = u64::from_le_bytes([b' '; 8]);

/// The first `"`, `\\` or line feed in `hay`. Most strings (keys, codes) are short: eight
/// bytes at a time as one word (a byte equal to one of the three is a zero byte of the word
/// XORed with it, found by the usual borrow trick, exact for the lowest one) beats both a
/// byte loop and setting up memchr; longer strings go to memchr after 32 bytes.
#[inline(always)]
fn string_stop(hay: &[u8]) -> Option<usize> {
    const LO: u64 = u64::from_le_bytes([0x01; 8]);
    const HI: u64 = u64::from_le_bytes([0x80; 8]);
    let zero = |v: u64| v.wrapping_sub(LO) & !v & HI;
    let mut i = 0;
    while i < 32 {
        let Some(w) = hay.get(i..i + 8) else {
            return hay[i..]
                .iter()
                .position(|&c| matches!(c, b'"' | b'\\' | b'\n'))
                .map(|k| k + i);
        };
        let w = u64::from_le_bytes(w.try_into().expect("8 bytes"));
        let hit = zero(w ^ u64::from_le_bytes([b'"'; 8]))
            | zero(w ^ u64::from_le_bytes([b'\\'; 8]))
            | zero(w ^ u64::from_le_bytes([b'\n'; 8]));
        if hit != 0 {
            return Some(i + (hit.trailing_zeros() / 8) as usize);
        }
        i += 8;
    }
    memchr::memchr3(b'"', b'\\', b'\n', &hay[i..]).map(|k| k + i)
}

thread_local! {
    /// Read buffers of finished parsers, for the next parser on this thread (zeroing a fresh
    /// one per Bundle file cost a percent of unpacking a Synthea folder).
    static BUFFERS: std::cell::RefCell<Vec<Vec<u8>>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl Drop for Parser<'_> {
    fn drop(&mut self) {
        // Widened buffers are let go.
        if self.buf.len() == BUF {
            let buf = std::mem::take(&mut self.buf);
            BUFFERS.with(|b| {
                let mut b = b.borrow_mut();
                if b.len() < 2 {
                    b.push(buf);
                }
            });
        }
    }
}

impl<'m> Parser<'m> {
    fn new(
        src: Box<dyn Read + Send>,
        path: &Path,
        file: u32,
        max: usize,
        full_urls: Option<&'m HashMap<Vec<u8>, Vec<u8>>>,
    ) -> Self {
        Self {
            src,
            path: path.to_path_buf(),
            file,
            buf: BUFFERS
                .with(|b| b.borrow_mut().pop())
                .unwrap_or_else(|| vec![0; BUF]),
            pos: 0,
            end: 0,
            eof: false,
            line: 1,
            max,
            full_urls,
            resolved: 0,
            unresolved: 0,
            res: Vec::new(),
            rest: Vec::new(),
            full_url: Vec::new(),
            key: Vec::new(),
            skip: Vec::new(),
            rtype: Vec::new(),
            id: Vec::new(),
            cur_entry: None,
            doc: Vec::new(),
            whole_bundle: false,
            fast: true,
            base: 0,
            simd: blocks::Simd::Best,
            window: WINDOW,
            fast_copies: 0,
            fast_declined: 0,
        }
    }

    /// Makes at least one byte available; `false` at the end of the input.
    #[inline(always)]
    fn more(&mut self) -> Result<bool> {
        if self.pos < self.end {
            return Ok(true);
        }
        self.refill()
    }

    #[cold]
    #[inline(never)]
    fn refill(&mut self) -> Result<bool> {
        if self.eof {
            return Ok(false);
        }
        loop {
            match self.src.read(&mut self.buf) {
                Ok(0) => {
                    self.eof = true;
                    return Ok(false);
                }
                Ok(n) => {
                    self.base += self.end as u64;
                    self.pos = 0;
                    self.end = n;
                    return Ok(true);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    return Err(Error::Read {
                        path: self.path.clone(),
                        source: e,
                    });
                }
            }
        }
    }

    /// Makes more of the input after `pos` available to the block scan: moves `pos..end` to
    /// the front of the buffer and reads until the buffer is full, doubling it (up to
    /// the window) when `pos..end` fills it already. `false` at the end of the input or at
    /// the window's limit.
    fn widen(&mut self) -> Result<bool> {
        if self.eof {
            return Ok(false);
        }
        if self.pos > 0 {
            self.buf.copy_within(self.pos..self.end, 0);
            self.base += self.pos as u64;
            self.end -= self.pos;
            self.pos = 0;
        }
        if self.end == self.buf.len() {
            if self.buf.len() >= self.window {
                return Ok(false);
            }
            self.buf.resize(self.buf.len() * 2, 0);
        }
        while self.end < self.buf.len() {
            match self.src.read(&mut self.buf[self.end..]) {
                Ok(0) => {
                    self.eof = true;
                    break;
                }
                Ok(n) => self.end += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    return Err(Error::Read {
                        path: self.path.clone(),
                        source: e,
                    });
                }
            }
        }
        Ok(true)
    }

    /// Copies the value at the cursor (inside the containers `stack`, after a member `key`)
    /// with the block scan; `false` (nothing consumed) where the tokenizer must read it: a
    /// scalar at the top, input the scan does not vouch for, or a value longer than the
    /// window.
    fn fast_value(
        &mut self,
        out: &mut Vec<u8>,
        resource: bool,
        stack: &[u8],
        key: Key,
    ) -> Result<bool> {
        let Some(b) = self.peek()? else {
            return Ok(false);
        };
        if stack.is_empty() && b != b'{' && b != b'[' {
            return Ok(false);
        }
        let scan = fastcopy::Scan {
            resource,
            full_urls: self.full_urls,
            max: self.max,
            simd: self.simd,
        };
        let done = loop {
            let input = &self.buf[self.pos..self.end];
            match fastcopy::copy_value(input, out, &scan, stack, key) {
                fastcopy::Scanned::Done(c) => {
                    if let Some(r) = c.rtype {
                        self.rtype.clear();
                        self.rtype.extend_from_slice(&input[r]);
                    }
                    if let Some(r) = c.id {
                        self.id.clear();
                        self.id.extend_from_slice(&input[r]);
                    }
                    self.resolved += c.resolved;
                    self.unresolved += c.unresolved;
                    self.line += c.lines;
                    self.pos += c.len;
                    break true;
                }
                fastcopy::Scanned::Odd => break false,
                fastcopy::Scanned::More => {
                    if !self.widen()? {
                        break false;
                    }
                }
            }
        };
        if done {
            self.fast_copies += 1;
        } else {
            self.fast_declined += 1;
        }
        Ok(done)
    }

    /// The next byte that is not whitespace (not consumed), counting lines.
    #[inline(always)]
    fn peek(&mut self) -> Result<Option<u8>> {
        // Fast path: a token right here (compact JSON, or after the indentation was passed).
        if self.pos < self.end {
            let b = self.buf[self.pos];
            if b > b' ' && b < 0x80 {
                return Ok(Some(b));
            }
        }
        self.peek_slow()
    }

    #[inline(never)]
    fn peek_slow(&mut self) -> Result<Option<u8>> {
        loop {
            if !self.more()? {
                return Ok(None);
            }
            while self.pos < self.end {
                match self.buf[self.pos] {
                    b'\n' => self.line += 1,
                    // Indentation of pretty-printed JSON: runs of spaces, passed 8 at a time
                    // (this loop was a fifth of the instructions of unpacking a pretty Bundle).
                    b' ' => {
                        let run = &self.buf[self.pos..self.end];
                        let mut i = 1;
                        while let Some(w) = run.get(i..i + 8) {
                            let w = u64::from_le_bytes(w.try_into().expect("8 bytes"));
                            let other = w ^ SPACES;
                            if other != 0 {
                                i += (other.trailing_zeros() / 8) as usize;
                                break;
                            }
                            i += 8;
                        }
                        self.pos += i;
                        continue;
                    }
                    b'\t' | b'\r' => {}
                    // A byte order mark at the start of the file (only there).
                    b @ (0xEF | 0xBB | 0xBF)
                        if self.base + (self.pos as u64) < 3
                            && b == [0xEF, 0xBB, 0xBF][self.pos + self.base as usize] => {}
                    b => return Ok(Some(b)),
                }
                self.pos += 1;
            }
        }
    }

    /// Consumes the byte `b` (after whitespace).
    fn expect(&mut self, b: u8) -> Result<Parse<()>> {
        match self.peek()? {
            Some(c) if c == b => {
                self.pos += 1;
                Ok(Ok(()))
            }
            None => Ok(Err(Broken(Kind::Truncated))),
            Some(_) => Ok(Err(Broken(Kind::NotJson))),
        }
    }

    /// Copies a string (at `pos`, its opening quote) with its quotes into `out`, verbatim.
    fn string(&mut self, out: &mut Vec<u8>) -> Result<Parse<()>> {
        out.push(b'"');
        self.pos += 1;
        loop {
            if !self.more()? {
                return Ok(Err(Broken(Kind::Truncated)));
            }
            let hay = &self.buf[self.pos..self.end];
            let found = string_stop(hay);
            match found {
                Some(i) => {
                    out.extend_from_slice(&hay[..i]);
                    let c = hay[i];
                    self.pos += i + 1;
                    match c {
                        b'"' => {
                            out.push(b'"');
                            return Ok(Ok(()));
                        }
                        b'\\' => {
                            out.push(b'\\');
                            if !self.more()? {
                                return Ok(Err(Broken(Kind::Truncated)));
                            }
                            let e = self.buf[self.pos];
                            if e == b'\n' {
                                return Ok(Err(Broken(Kind::RawNewline)));
                            }
                            out.push(e);
                            self.pos += 1;
                        }
                        _ => {
                            // Left for `resync`, which counts it.
                            self.pos -= 1;
                            return Ok(Err(Broken(Kind::RawNewline)));
                        }
                    }
                }
                None => {
                    out.extend_from_slice(hay);
                    self.pos = self.end;
                }
            }
            if out.len() > self.max {
                return Ok(Err(Broken(Kind::TooLong)));
            }
        }
    }

    /// Copies one JSON value (at `pos`) compacted into `out` (`res` mode also notes the root
    /// `resourceType` and `id`, and rewrites references). Structure is checked, scalars are
    /// left for the walker.
    fn value(&mut self, out: &mut Vec<u8>, resource: bool) -> Result<Parse<()>> {
        if resource {
            self.rtype.clear();
            self.id.clear();
        }
        self.value_from(out, resource, Vec::new(), Key::Other)
    }

    /// [`value`](Self::value) continued inside the containers `stack` (after a member).
    fn value_from(
        &mut self,
        out: &mut Vec<u8>,
        resource: bool,
        mut stack: Vec<u8>,
        mut key: Key,
    ) -> Result<Parse<()>> {
        if self.fast && self.fast_value(out, resource, &stack, key)? {
            return Ok(Ok(()));
        }
        let mut expect_key = false;
        loop {
            let Some(b) = self.peek()? else {
                return Ok(Err(Broken(Kind::Truncated)));
            };
            match b {
                b'"' => {
                    let start = out.len();
                    if let Err(e) = self.string(out)? {
                        return Ok(Err(e));
                    }
                    if expect_key && stack.last() == Some(&b'{') {
                        expect_key = false;
                        key = if !resource {
                            Key::Other
                        } else {
                            match &out[start..] {
                                b"\"resourceType\"" if stack.len() == 1 => Key::ResourceType,
                                b"\"id\"" if stack.len() == 1 => Key::Id,
                                b"\"reference\"" => Key::Reference,
                                _ => Key::Other,
                            }
                        };
                    } else {
                        match key {
                            Key::ResourceType => {
                                self.rtype.clear();
                                self.rtype.extend_from_slice(&out[start + 1..out.len() - 1]);
                            }
                            Key::Id => {
                                self.id.clear();
                                self.id.extend_from_slice(&out[start + 1..out.len() - 1]);
                            }
                            Key::Reference => self.reference(out, start),
                            Key::Other => {}
                        }
                        key = Key::Other;
                    }
                    if stack.is_empty() {
                        return Ok(Ok(()));
                    }
                }
                b'{' | b'[' => {
                    stack.push(b);
                    out.push(b);
                    self.pos += 1;
                    expect_key = b == b'{';
                    key = Key::Other;
                }
                b'}' | b']' => {
                    let open = if b == b'}' { b'{' } else { b'[' };
                    if stack.pop() != Some(open) {
                        return Ok(Err(Broken(Kind::Mismatched)));
                    }
                    out.push(b);
                    self.pos += 1;
                    key = Key::Other;
                    if stack.is_empty() {
                        return Ok(Ok(()));
                    }
                }
                b',' => {
                    if stack.is_empty() {
                        return Ok(Err(Broken(Kind::NotJson)));
                    }
                    out.push(b);
                    self.pos += 1;
                    expect_key = stack.last() == Some(&b'{');
                    key = Key::Other;
                }
                b':' => {
                    out.push(b);
                    self.pos += 1;
                }
                _ => {
                    // A number or literal: copy up to the next delimiter.
                    loop {
                        let hay = &self.buf[self.pos..self.end];
                        let n = hay
                            .iter()
                            .position(|c| {
                                matches!(
                                    c,
                                    b' ' | b'\t'
                                        | b'\r'
                                        | b'\n'
                                        | b','
                                        | b':'
                                        | b'}'
                                        | b']'
                                        | b'{'
                                        | b'['
                                        | b'"'
                                )
                            })
                            .unwrap_or(hay.len());
                        out.extend_from_slice(&hay[..n]);
                        self.pos += n;
                        if self.pos < self.end || !self.more()? {
                            break;
                        }
                    }
                    key = Key::Other;
                    if stack.is_empty() {
                        return Ok(Ok(()));
                    }
                }
            }
            if out.len() > self.max {
                return Ok(Err(Broken(Kind::TooLong)));
            }
        }
    }

    /// Rewrites the reference string just copied to `out[start..]` when it is a `urn:uuid:`
    /// `fullUrl` of an entry.
    fn reference(&mut self, out: &mut Vec<u8>, start: usize) {
        let Some(map) = self.full_urls else {
            return;
        };
        let text = &out[start + 1..out.len() - 1];
        if !text.starts_with(b"urn:uuid:") {
            return;
        }
        match map.get(text) {
            Some(target) => {
                let target = target.clone();
                out.truncate(start + 1);
                out.extend_from_slice(&target);
                out.push(b'"');
                self.resolved += 1;
            }
            None => self.unresolved += 1,
        }
    }

    /// Skips to the start of the next line that opens with `{` (the next NDJSON line, or the
    /// next document of a file of several), after a structural error.
    fn resync(&mut self) -> Result<()> {
        let mut at_line_start = false;
        loop {
            if !self.more()? {
                return Ok(());
            }
            while self.pos < self.end {
                let b = self.buf[self.pos];
                if at_line_start && b == b'{' {
                    return Ok(());
                }
                at_line_start = b == b'\n';
                if at_line_start {
                    self.line += 1;
                }
                self.pos += 1;
            }
        }
    }

    /// Reads every top-level JSON value of the file: Bundles are unpacked, other documents
    /// are one resource each.
    fn documents(&mut self, sink: &mut dyn Emit) -> Result<()> {
        while self.peek()?.is_some() {
            let line = self.line;
            match self.document(sink)? {
                Ok(()) => {}
                Err(Broken(kind)) => {
                    // What was copied of the broken entry or document, for `_rejected/`.
                    let mut partial = if self.cur_entry.is_some() {
                        std::mem::take(&mut self.res)
                    } else {
                        std::mem::take(&mut self.doc)
                    };
                    partial.truncate(1024);
                    sink.emit(Emitted {
                        bytes: &partial,
                        kind,
                        rtype: None,
                        id: None,
                        full_url: None,
                        file: self.file,
                        entry: self.cur_entry.map_or(NO_ENTRY, |(i, _)| i),
                        line: self.cur_entry.map_or(line, |(_, l)| l),
                    })?;
                    partial.clear();
                    self.res = partial;
                    self.resync()?;
                }
            }
        }
        Ok(())
    }

    /// Reads one top-level value: a Bundle (its entries emitted) or a resource document.
    fn document(&mut self, sink: &mut dyn Emit) -> Result<Parse<()>> {
        self.cur_entry = None;
        let mut out = std::mem::take(&mut self.doc);
        out.clear();
        let r = self.document_into(&mut out, sink);
        self.doc = out;
        r
    }

    fn document_into(&mut self, out: &mut Vec<u8>, sink: &mut dyn Emit) -> Result<Parse<()>> {
        let line = self.line;
        self.rtype.clear();
        self.id.clear();
        let Some(b'{') = self.peek()? else {
            // Not an object: kept whole for the walker to say what it is.
            if let Err(e) = self.value(out, false)? {
                return Ok(Err(e));
            }
            return self.emit_resource(out, sink, NO_ENTRY, line, None).map(Ok);
        };
        self.pos += 1;
        if self.whole_bundle {
            self.whole_bundle = false;
            sink.bundle();
            return self.bundle_members(sink, true);
        }
        out.push(b'{');
        let stack = vec![b'{'];
        let mut first_key = Key::Other;
        if self.peek()? == Some(b'"') {
            if let Err(e) = self.read_key()? {
                return Ok(Err(e));
            }
            out.extend_from_slice(&self.key);
            if self.key == b"\"resourceType\"" {
                if let Err(e) = self.expect(b':')? {
                    return Ok(Err(e));
                }
                out.push(b':');
                if self.peek()? == Some(b'"') {
                    let start = out.len();
                    if let Err(e) = self.string(out)? {
                        return Ok(Err(e));
                    }
                    if &out[start..] == b"\"Bundle\"" {
                        out.clear();
                        sink.bundle();
                        return self.bundle_members(sink, false);
                    }
                    self.rtype.extend_from_slice(&out[start + 1..out.len() - 1]);
                }
            } else if self.key == b"\"id\"" {
                first_key = Key::Id;
            }
        }
        // The rest of a document that is not a Bundle (as far as its first member tells).
        if let Err(e) = self.value_from(out, true, stack, first_key)? {
            return Ok(Err(e));
        }
        if self.rtype == b"Bundle" {
            // A Bundle whose resourceType is not its first member: unpack the copy.
            let bytes = std::mem::take(out);
            let mut sub = Parser::new(
                Box::new(io::Cursor::new(bytes)),
                &self.path,
                self.file,
                self.max,
                self.full_urls,
            );
            sub.line = line;
            sub.whole_bundle = true;
            sub.fast = self.fast;
            sub.simd = self.simd;
            sub.window = self.window;
            sub.documents(sink)?;
            self.resolved += sub.resolved;
            self.unresolved += sub.unresolved;
            return Ok(Ok(()));
        }
        self.emit_resource(out, sink, NO_ENTRY, line, None).map(Ok)
    }

    /// Hands on a copied resource (its type and id noted by the copy).
    fn emit_resource(
        &self,
        bytes: &[u8],
        sink: &mut dyn Emit,
        entry: u32,
        line: u64,
        full_url: Option<&[u8]>,
    ) -> Result<()> {
        sink.emit(Emitted {
            bytes,
            kind: Kind::Resource,
            rtype: (!self.rtype.is_empty()).then_some(&self.rtype[..]),
            id: (!self.id.is_empty()).then_some(&self.id[..]),
            full_url,
            file: self.file,
            entry,
            line,
        })
    }

    /// One step of an object's member loop: past a `,` (not before the first member) to the
    /// next member's key, read into `self.key` (quotes included), and its `:`. `Ok(false)`
    /// when the object's `}` was consumed instead.
    #[inline]
    fn next_member(&mut self, first: &mut bool) -> Result<Parse<bool>> {
        match self.peek()? {
            None => return Ok(Err(Broken(Kind::Truncated))),
            Some(b'}') => {
                self.pos += 1;
                return Ok(Ok(false));
            }
            Some(b',') if !*first => self.pos += 1,
            Some(b'"') if *first => {}
            Some(_) => return Ok(Err(Broken(Kind::NotJson))),
        }
        *first = false;
        if self.peek()? != Some(b'"') {
            return Ok(Err(Broken(Kind::NotJson)));
        }
        if let Err(e) = self.read_key()? {
            return Ok(Err(e));
        }
        if let Err(e) = self.expect(b':')? {
            return Ok(Err(e));
        }
        Ok(Ok(true))
    }

    /// Reads the string at the cursor (a member name) into `self.key`, quotes included.
    fn read_key(&mut self) -> Result<Parse<()>> {
        self.key.clear();
        let mut key = std::mem::take(&mut self.key);
        let r = self.string(&mut key)?;
        self.key = key;
        Ok(r)
    }

    /// The members of a Bundle after its `resourceType`, up to its closing brace.
    /// With `first`, no member has been read yet (the object's `{` just consumed).
    fn bundle_members(&mut self, sink: &mut dyn Emit, mut first: bool) -> Result<Parse<()>> {
        loop {
            match self.next_member(&mut first)? {
                Ok(true) => {}
                Ok(false) => return Ok(Ok(())),
                Err(e) => return Ok(Err(e)),
            }
            let r = if self.key == b"\"entry\"" {
                self.entries(sink)?
            } else {
                let mut skip = std::mem::take(&mut self.skip);
                skip.clear();
                let r = self.value(&mut skip, false)?;
                self.skip = skip;
                r
            };
            if let Err(e) = r {
                return Ok(Err(e));
            }
        }
    }

    /// `entry`: an array of entries.
    fn entries(&mut self, sink: &mut dyn Emit) -> Result<Parse<()>> {
        if let Err(e) = self.expect(b'[')? {
            return Ok(Err(e));
        }
        if self.peek()? == Some(b']') {
            self.pos += 1;
            return Ok(Ok(()));
        }
        let mut index = 0u32;
        loop {
            if let Err(e) = self.entry(index, sink)? {
                return Ok(Err(e));
            }
            index += 1;
            match self.peek()? {
                Some(b',') => self.pos += 1,
                Some(b']') => {
                    self.pos += 1;
                    return Ok(Ok(()));
                }
                None => return Ok(Err(Broken(Kind::Truncated))),
                Some(_) => return Ok(Err(Broken(Kind::NotJson))),
            }
        }
    }

    /// One entry: its resource emitted, or the entry itself when it has none.
    fn entry(&mut self, index: u32, sink: &mut dyn Emit) -> Result<Parse<()>> {
        self.res.clear();
        self.peek()?;
        let line = self.line;
        self.cur_entry = Some((index, line));
        if self.peek()? != Some(b'{') {
            let mut res = std::mem::take(&mut self.res);
            let r = self.value(&mut res, false)?;
            if r.is_ok() {
                sink.emit(Emitted {
                    bytes: &res,
                    kind: Kind::EntryNotObject,
                    rtype: None,
                    id: None,
                    full_url: None,
                    file: self.file,
                    entry: index,
                    line,
                })?;
            }
            self.res = res;
            self.cur_entry = r.is_err().then_some((index, line));
            return Ok(r);
        }
        self.pos += 1;
        let mut rest = std::mem::take(&mut self.rest);
        let mut res = std::mem::take(&mut self.res);
        let mut full_url = std::mem::take(&mut self.full_url);
        rest.clear();
        rest.push(b'{');
        full_url.clear();
        let mut res_line = None;
        let r = self.entry_members(&mut rest, &mut res, &mut full_url, &mut res_line);
        let out = match r {
            Ok(Ok(())) => {
                let emitted = match res_line {
                    Some(l) => {
                        let url = (full_url.len() >= 2).then(|| &full_url[1..full_url.len() - 1]);
                        self.emit_resource(&res, sink, index, l, url)
                    }
                    None => {
                        rest.push(b'}');
                        sink.emit(Emitted {
                            bytes: &rest,
                            kind: Kind::NoResource,
                            rtype: None,
                            id: None,
                            full_url: None,
                            file: self.file,
                            entry: index,
                            line,
                        })
                    }
                };
                emitted.map(|()| {
                    self.cur_entry = None;
                    Ok(())
                })
            }
            other => other,
        };
        self.rest = rest;
        self.res = res;
        self.full_url = full_url;
        out
    }

    fn entry_members(
        &mut self,
        rest: &mut Vec<u8>,
        res: &mut Vec<u8>,
        full_url: &mut Vec<u8>,
        res_line: &mut Option<u64>,
    ) -> Result<Parse<()>> {
        let mut first = true;
        loop {
            match self.next_member(&mut first)? {
                Ok(true) => {}
                Ok(false) => return Ok(Ok(())),
                Err(e) => return Ok(Err(e)),
            }
            if self.key == b"\"resource\"" {
                self.peek()?;
                *res_line = Some(self.line);
                res.clear();
                if let Err(e) = self.value(res, true)? {
                    return Ok(Err(e));
                }
                continue;
            }
            if rest.len() > 1 {
                rest.push(b',');
            }
            rest.extend_from_slice(&self.key);
            rest.push(b':');
            let start = rest.len();
            if let Err(e) = self.value(rest, false)? {
                return Ok(Err(e));
            }
            if self.key == b"\"fullUrl\"" {
                full_url.clear();
                full_url.extend_from_slice(&rest[start..]);
            }
        }
    }
}

/// The files a report names: each unpacked file replaced by the Bundle files it came from,
/// and each column's first appearance moved to its Bundle file and line (the indexes of
/// `columns` refer to `files` before, and to the result after).
pub(crate) fn report_files(
    files: &[PathBuf],
    columns: &mut [crate::schema::Column],
) -> Vec<PathBuf> {
    if files.iter().all(|f| origins(f).is_none()) {
        return files.to_vec();
    }
    let mut out: Vec<PathBuf> = Vec::new();
    // By hash, not by a scan of `out`: a Synthea folder has a file per patient, and this runs
    // for every type (a scan made it quadratic in the number of Bundle files).
    let mut known: HashMap<PathBuf, u32> = HashMap::new();
    let mut index_of = |p: &Path, out: &mut Vec<PathBuf>| -> u32 {
        *known.entry(p.to_path_buf()).or_insert_with(|| {
            out.push(p.to_path_buf());
            (out.len() - 1) as u32
        })
    };
    let mut new_index = Vec::with_capacity(files.len());
    for f in files {
        match origins(f) {
            Some(o) if !o.unplaced => {
                for s in o.sources.iter() {
                    index_of(s, &mut out);
                }
                new_index.push(None);
            }
            Some(_) => new_index.push(None),
            None => new_index.push(Some(index_of(f, &mut out))),
        }
    }
    for c in columns {
        let k = c.first_seen.file as usize;
        match new_index.get(k).copied().flatten() {
            Some(i) => c.first_seen.file = i,
            None => {
                if let Some(f) = files.get(k) {
                    let (src, line, _) = locate(f, c.first_seen.line, String::new());
                    c.first_seen.file = index_of(&src, &mut out);
                    c.first_seen.line = line;
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod differential;

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads one byte per call, so every refill boundary falls everywhere once.
    struct Trickle(io::Cursor<Vec<u8>>);
    impl Read for Trickle {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = buf.len().min(1);
            self.0.read(&mut buf[..n])
        }
    }

    #[derive(Default)]
    struct Lines(Vec<(String, Kind, u32, u64)>, u64);
    impl Emit for Lines {
        fn emit(&mut self, e: Emitted<'_>) -> Result<()> {
            let text = String::from_utf8(e.bytes.to_vec()).unwrap();
            self.0.push((text, e.kind, e.entry, e.line));
            Ok(())
        }
        fn bundle(&mut self) {
            self.1 += 1;
        }
    }

    fn unpack_text(text: &str, trickle: bool) -> Lines {
        let bytes = text.as_bytes().to_vec();
        let src: Box<dyn Read + Send> = if trickle {
            Box::new(Trickle(io::Cursor::new(bytes)))
        } else {
            Box::new(io::Cursor::new(bytes))
        };
        let mut p = Parser::new(src, Path::new("t.json"), 0, 1 << 20, None);
        let mut out = Lines::default();
        p.documents(&mut out).unwrap();
        out
    }

    /// Resources are copied verbatim but for whitespace between tokens: escapes, brackets and
    /// quotes inside strings, number spellings and a BOM are handled at every buffer boundary.
    #[test]
    fn resources_are_compacted_verbatim() {
        let text = "\u{feff}{\n  \"resourceType\" : \"Bundle\",\n  \"meta\": {\"x\": [1, {\"y\": \"]}\"}]},\n  \"entry\" : [\n    {\n      \"resource\" : {\n        \"resourceType\": \"Patient\",\n        \"name\": [ { \"text\": \"a \\\"q\\\" {[ \\\\\" } ],\n        \"n\": -1.50e+3, \"t\": true, \"z\": null, \"u\": \"\\u00e9\"\n      }\n    }\n  ]\n}\n";
        for trickle in [false, true] {
            let got = unpack_text(text, trickle);
            assert_eq!(got.1, 1);
            assert_eq!(
                got.0,
                [(
                    r#"{"resourceType":"Patient","name":[{"text":"a \"q\" {[ \\"}],"n":-1.50e+3,"t":true,"z":null,"u":"\u00e9"}"#.to_string(),
                    Kind::Resource,
                    0,
                    6
                )],
                "trickle: {trickle}"
            );
        }
    }

    /// A raw line break inside a string breaks the entry (it would split the line), and the
    /// reader goes on at the next line that opens a document.
    #[test]
    fn a_raw_line_break_in_a_string_is_an_error_and_reading_resumes() {
        let text = "{\"resourceType\":\"Bundle\",\"entry\":[{\"resource\":{\"resourceType\":\"Patient\",\"id\":\"a\nb\"}}]}\n{\"resourceType\":\"Patient\",\"id\":\"c\"}\n";
        let got = unpack_text(text, true);
        let kinds: Vec<(Kind, u32, u64)> = got.0.iter().map(|l| (l.1, l.2, l.3)).collect();
        assert_eq!(
            kinds,
            [(Kind::RawNewline, 0, 1), (Kind::Resource, NO_ENTRY, 3)]
        );
    }

    /// The batched path (unpacked in memory, replayed in file order) hands on exactly what
    /// the streamed path does.
    #[test]
    fn recorded_lines_replay_as_streamed() {
        let text = "{\"resourceType\":\"Bundle\",\"entry\":[{\"resource\":{\"resourceType\":\"Patient\",\"id\":\"a\"}},{\"x\":1},{\"resource\":{\"id\":\"b\"}}]}\n{\"resourceType\":\"Observation\"}\n";
        let direct = unpack_text(text, false);
        let mut rec = Recorded::default();
        let src: Box<dyn Read + Send> = Box::new(io::Cursor::new(text.as_bytes().to_vec()));
        Parser::new(src, Path::new("t.json"), 0, 1 << 20, None)
            .documents(&mut rec)
            .unwrap();
        let mut replayed = Lines::default();
        rec.replay(&mut replayed).unwrap();
        assert_eq!(replayed.0, direct.0);
        assert_eq!(replayed.1, direct.1);
        assert_eq!(direct.0.len(), 4);
    }

    /// What a signal handler calls removes the unpacked files (the only test of this binary
    /// that unpacks, so no other test's files are removed).
    #[test]
    fn unpacked_files_are_removed_on_demand() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("b.json");
        std::fs::write(
            &f,
            r#"{"resourceType":"Bundle","entry":[{"resource":{"resourceType":"Patient"}}]}"#,
        )
        .unwrap();
        let opts = BundleOptions {
            temp_dir: Some(dir.path().to_path_buf()),
            ..BundleOptions::default()
        };
        let (typed, _, inputs) = unpack(&[f], &opts, 1 << 20).unwrap();
        assert!(typed[0].1.is_file());
        assert_eq!(remove_unpacked(), 1);
        assert!(!typed[0].1.exists());
        assert!(!inputs.dir.path().exists());
    }

    /// The word-at-a-time scan for a string's end finds what a byte loop finds: every stop
    /// byte at every offset of strings shorter and longer than a word and than its 32-byte
    /// limit, next to bytes one above or below a stop byte (where a borrow could mislead).
    #[test]
    fn string_stop_equals_a_byte_scan() {
        let fillers = [b'a', b'!', b'#', b'[', b']', b'\t', 0x0b, 0xff, 0x80, b' '];
        for len in 0..80 {
            for at in 0..=len {
                for &stop in b"\"\\\nx" {
                    for &fill in &fillers {
                        let mut hay = vec![fill; len];
                        if at < len {
                            hay[at] = stop;
                        }
                        let want = hay.iter().position(|&c| matches!(c, b'"' | b'\\' | b'\n'));
                        assert_eq!(string_stop(&hay), want, "{hay:?}");
                    }
                }
            }
        }
    }

    /// Indentation of any width (across word and buffer boundaries) is passed, with line
    /// numbers counted, in deeply indented pretty-printed Bundles.
    #[test]
    fn deep_indentation_is_skipped_with_lines_counted() {
        for width in [1usize, 7, 8, 9, 16, 17, 40] {
            let pad = |d: usize| " ".repeat(width * d);
            let text = format!(
                "{{\n{p1}\"resourceType\": \"Bundle\",\n{p1}\"entry\": [\n{p2}{{\n{p3}\"resource\": {{\n{p4}\"resourceType\": \"Patient\",\n{p4}\"id\":  \t \"a\"\n{p3}}}\n{p2}}}\n{p1}]\n}}\n",
                p1 = pad(1),
                p2 = pad(2),
                p3 = pad(3),
                p4 = pad(4)
            );
            for trickle in [false, true] {
                let got = unpack_text(&text, trickle);
                assert_eq!(
                    got.0,
                    [(
                        r#"{"resourceType":"Patient","id":"a"}"#.to_string(),
                        Kind::Resource,
                        0,
                        5
                    )],
                    "width {width}, trickle {trickle}"
                );
            }
        }
    }

    #[test]
    fn bundles_are_recognised_by_their_first_member() {
        let dir = tempfile::tempdir().unwrap();
        let cases = [
            ("{\n \"resourceType\" : \"Bundle\"", true),
            ("\u{feff}  {\"resourceType\":\"Bundle\",\"entry\":[]}", true),
            ("{\"resourceType\":\"Patient\"}", false),
            ("[{\"resourceType\":\"Bundle\"}]", false),
            ("", false),
        ];
        for (i, (text, want)) in cases.iter().enumerate() {
            let p = dir.path().join(format!("{i}"));
            std::fs::write(&p, text).unwrap();
            assert_eq!(starts_as_bundle(&p), *want, "{text:?}");
        }
        assert!(is_json_name("a.JSON") && is_json_name("a.json.gz") && !is_json_name("a.ndjson"));
    }
}
