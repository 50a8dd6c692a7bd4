//! Reading NDJSON files (plain or gzip, sniffed by magic bytes) as chunks of whole lines, with
//! line numbers, a UTF-8 BOM dropped, and a cap on line length. Every file is read with
//! `read()` into buffers the reader owns (recycled from chunk to chunk), never memory-mapped:
//! the text the walker turns into `&str` then cannot change under it when another process
//! writes or truncates the file (see "Reading" in docs/architecture.md). A plain file is read
//! up to its size at open, and one that shrinks meanwhile is an error. It knows nothing of
//! JSON.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use flate2::read::MultiGzDecoder;

use crate::error::{Error, Result};

/// Default cap on one line's length (64 MiB).
pub const DEFAULT_MAX_LINE_BYTES: usize = 64 << 20;
/// Default size of a chunk of lines handed to one worker (4 MiB).
pub const DEFAULT_CHUNK_BYTES: usize = 4 << 20;
/// Default [`ReadOptions::chunk_rows`]: lines a chunk should hold at least.
pub const DEFAULT_CHUNK_ROWS: usize = 4096;
/// A file's chunks grow to at most this many times [`ReadOptions::chunk_bytes`].
pub const MAX_CHUNK_GROWTH: usize = 4;

/// How to read input files.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ReadOptions {
    /// Lines longer than this are rejected.
    pub max_line_bytes: usize,
    /// Target size of a chunk of lines (a chunk holds whole lines; a longer line makes a larger
    /// chunk, up to `max_line_bytes`).
    pub chunk_bytes: usize,
    /// Lines a chunk should hold at least (0: chunks stay at `chunk_bytes`). Each file's
    /// first chunk measures its average line length; where `chunk_rows` such lines take more
    /// than `chunk_bytes`, the file's later chunks grow to hold them, up to
    /// [`MAX_CHUNK_GROWTH`] × `chunk_bytes` and to an eighth of the file's size on disk (so
    /// a file still spreads over several workers). Work fixed per chunk and column (each
    /// chunk keeps its own columns, and each is written as its own piece) then covers more
    /// rows, which matters for wide types with long lines such as ExplanationOfBenefit
    /// (~5 KB a line, 1,000+ columns). Chunk bounds depend only on the file and these
    /// options, never on threads or timing, so output stays the same for any thread count.
    pub chunk_rows: usize,
}

impl Default for ReadOptions {
    fn default() -> Self {
        Self {
            max_line_bytes: DEFAULT_MAX_LINE_BYTES,
            chunk_bytes: DEFAULT_CHUNK_BYTES,
            chunk_rows: DEFAULT_CHUNK_ROWS,
        }
    }
}

/// The bytes of a [`Chunk`], in a buffer of its own (a copy: nothing another process does to
/// the file can change them).
#[derive(Default)]
pub struct ChunkData(Repr);

#[derive(Default)]
enum Repr {
    #[default]
    Empty,
    Owned(Vec<u8>),
}

impl ChunkData {
    /// The buffer, for reuse, when the chunk owns one.
    pub fn into_vec(self) -> Option<Vec<u8>> {
        match self.0 {
            Repr::Owned(v) => Some(v),
            Repr::Empty => None,
        }
    }
}

impl From<Vec<u8>> for ChunkData {
    fn from(v: Vec<u8>) -> Self {
        Self(Repr::Owned(v))
    }
}

impl Deref for ChunkData {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match &self.0 {
            Repr::Empty => &[],
            Repr::Owned(v) => v,
        }
    }
}

impl std::fmt::Debug for ChunkData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.0 {
            Repr::Empty => "empty",
            Repr::Owned(_) => "owned",
        };
        write!(f, "ChunkData({kind}, {} bytes)", self.len())
    }
}

/// A line longer than the limit, which the reader skipped without holding it in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overlong {
    /// 1-based line number.
    pub number: u64,
    /// Its length in bytes (without the newline).
    pub len: u64,
}

/// Whole lines read from one file.
#[derive(Debug, Default)]
pub struct Chunk {
    /// The bytes of the lines, newline-separated (the last may lack its newline).
    pub data: ChunkData,
    /// Line number of the first line in `data`. From a reader that leaves numbering to its
    /// caller ([`LineReader::leave_numbering_to_caller`]) it counts from the start of the
    /// chunk instead: the overlong lines are lines 1 to `overlong.len()`, so this is
    /// `overlong.len() + 1`.
    pub first_line: u64,
    /// Overlong lines that came just before `data`, skipped by the reader (numbered like
    /// `first_line`).
    pub overlong: Vec<Overlong>,
    /// Index of the file in the list being read (set by the caller that reads several files).
    pub file: usize,
}

/// One non-blank line of a chunk.
#[derive(Debug, Clone, Copy)]
pub struct Line<'a> {
    /// 1-based line number in the file.
    pub number: u64,
    /// The line, without its `\n` or `\r\n`.
    pub bytes: &'a [u8],
}

impl Chunk {
    /// The non-blank lines, in order. Lines holding only whitespace are skipped, as the
    /// reference workflow does (`if not line.strip()`).
    pub fn lines(&self) -> Lines<'_> {
        Lines {
            data: &self.data,
            start: 0,
            number: self.first_line,
        }
    }
}

/// The non-blank lines of a [`Chunk`], from [`Chunk::lines`].
#[derive(Debug, Clone)]
pub struct Lines<'a> {
    data: &'a [u8],
    start: usize,
    number: u64,
}

impl Lines<'_> {
    /// The number the next line would have; once the iterator is done, one past the chunk's
    /// last line (blank lines count), so a worker learns how many lines its chunk held
    /// without a second scan.
    pub fn next_number(&self) -> u64 {
        self.number
    }
}

impl<'a> Iterator for Lines<'a> {
    type Item = Line<'a>;

    fn next(&mut self) -> Option<Line<'a>> {
        let data = self.data;
        while self.start < data.len() {
            let start = self.start;
            let end = memchr::memchr(b'\n', &data[start..]).map_or(data.len(), |i| start + i);
            let mut line = &data[start..end];
            let n = self.number;
            self.start = end + 1;
            self.number += 1;
            if let [rest @ .., b'\r'] = line {
                line = rest;
            }
            if line.iter().all(|b| matches!(b, b' ' | b'\t' | b'\r')) {
                continue;
            }
            return Some(Line {
                number: n,
                bytes: line,
            });
        }
        None
    }
}

/// Chunk buffers kept between reads, process-wide (see [`Kept`]).
static KEPT: Kept = Kept::new(KEEP_BUFFER_BYTES);

/// Most capacity [`KEPT`] holds (eight 4 MiB chunks); buffers beyond it are freed.
pub(crate) const KEEP_BUFFER_BYTES: usize = 32 << 20;

/// Spent chunk buffers waiting for the next reader, up to `limit` bytes of capacity.
///
/// A chunk buffer is written once by `read()` and then only read; a fresh one costs a page
/// fault per 4 KiB on its first fill (the kernel clears and maps each page), and freeing it
/// gives the pages back to the system (the allocator unmaps or trims them). Reading the
/// 12 MB sample Observation file from Python 100 times, those faults were a sixth of the
/// CPU time: every call paid them again. Buffers left over when a read ends (the reader's
/// spares, chunks given back after the reader finished) wait here for the next reader, in
/// this or a later call.
struct Kept {
    limit: usize,
    buffers: Mutex<Vec<Vec<u8>>>,
}

impl Kept {
    const fn new(limit: usize) -> Self {
        Self {
            limit,
            buffers: Mutex::new(Vec::new()),
        }
    }

    /// Keeps `buf` (emptied), or frees it when the kept buffers would exceed the limit.
    fn keep(&self, mut buf: Vec<u8>) {
        if buf.capacity() == 0 || buf.capacity() > self.limit {
            return;
        }
        buf.clear();
        let Ok(mut kept) = self.buffers.lock() else {
            return;
        };
        let held: usize = kept.iter().map(Vec::capacity).sum();
        if held + buf.capacity() <= self.limit {
            kept.push(buf);
        }
    }

    /// The buffer kept last, if any.
    fn take(&self) -> Option<Vec<u8>> {
        self.buffers.lock().ok()?.pop()
    }
}

/// Keeps a spent chunk buffer for a later reader (see [`Kept`]).
pub(crate) fn keep_buffer(buf: Vec<u8>) {
    KEPT.keep(buf);
}

/// A kept buffer, if any (see [`Kept`]).
fn kept_buffer() -> Option<Vec<u8>> {
    KEPT.take()
}

/// Called with the bytes of an overlong line, piece by piece (`end` on the last piece), so the
/// caller can keep it verbatim without the reader holding it in memory. The first argument
/// is the line's number, or, when the reader leaves numbering to its caller, its ordinal
/// among the file's overlong lines (0, 1, …).
pub type OverlongSink = Box<dyn FnMut(u64, &[u8], bool) -> io::Result<()> + Send>;

/// Reads a file as a sequence of [`Chunk`]s.
pub struct LineReader {
    path: PathBuf,
    src: Box<dyn Read + Send>,
    /// A plain regular file's size at open: it is read up to here, and ending short of it
    /// (the file shrank) is an error. `None` for gzip and streams.
    plain_len: Option<u64>,
    opts: ReadOptions,
    carry: Vec<u8>,
    next_line: u64,
    at_start: bool,
    eof: bool,
    overlong_sink: Option<OverlongSink>,
    read_bytes: Arc<AtomicU64>,
    spare: Vec<Vec<u8>>,
    /// Count lines (false: chunks are numbered from their own start).
    numbering: bool,
    /// Overlong lines skipped so far.
    overlong_seen: u64,
    /// Target size of the next chunk: `opts.chunk_bytes`, or larger once the first chunk
    /// has shown long lines (see [`ReadOptions::chunk_rows`]).
    chunk_bytes: usize,
    /// The file's size on disk (compressed size for gzip); `None` for a pipe or other
    /// stream, whose chunks then stay at `opts.chunk_bytes`.
    file_len: Option<u64>,
    /// Whether the chunk size has been chosen from a first chunk with lines.
    sized: bool,
}

/// The chunk size for the rest of a file whose first chunk held `lines` lines in `bytes`
/// bytes (see [`ReadOptions::chunk_rows`]).
fn grown_chunk_bytes(
    opts: &ReadOptions,
    bytes: usize,
    lines: usize,
    file_len: Option<u64>,
) -> usize {
    let base = opts.chunk_bytes;
    let Some(file_len) = file_len else {
        return base;
    };
    if opts.chunk_rows == 0 || lines == 0 {
        return base;
    }
    let wanted = (bytes / lines).saturating_mul(opts.chunk_rows);
    let eighth = usize::try_from(file_len / 8).unwrap_or(usize::MAX);
    let cap = base.saturating_mul(MAX_CHUNK_GROWTH).min(eighth).max(base);
    wanted.clamp(base, cap)
}

impl Drop for LineReader {
    /// Its spare buffers go to `KEPT` for the next reader.
    fn drop(&mut self) {
        for buf in self.spare.drain(..) {
            keep_buffer(buf);
        }
    }
}

impl std::fmt::Debug for LineReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LineReader")
            .field("path", &self.path)
            .field("next_line", &self.next_line)
            .finish_non_exhaustive()
    }
}

/// Counts bytes as they are read from the file (compressed bytes for gzip), for progress.
struct Counting<R> {
    inner: R,
    count: Arc<AtomicU64>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// Reads the first two bytes of `r` (fewer when it is shorter), to tell gzip by its magic.
fn sniff(r: &mut impl Read) -> io::Result<([u8; 2], usize)> {
    let mut magic = [0u8; 2];
    let mut got = 0;
    while got < 2 {
        let n = r.read(&mut magic[got..])?;
        if n == 0 {
            break;
        }
        got += n;
    }
    Ok((magic, got))
}

/// The sniffed bytes, then the rest of `inner`, counted into `count` as read; gunzipped when
/// the sniffed bytes are gzip's magic. For inputs read as a stream (gzip, pipes, objects).
fn streamed(
    magic: [u8; 2],
    got: usize,
    inner: impl Read + Send + 'static,
    count: &Arc<AtomicU64>,
) -> Box<dyn Read + Send> {
    let counted = Counting {
        inner: io::Cursor::new(magic[..got].to_vec()).chain(inner),
        count: Arc::clone(count),
    };
    if is_gzip(magic, got) {
        Box::new(MultiGzDecoder::new(io::BufReader::with_capacity(
            1 << 16,
            counted,
        )))
    } else {
        Box::new(counted)
    }
}

fn is_gzip(magic: [u8; 2], got: usize) -> bool {
    got == 2 && magic == [0x1f, 0x8b]
}

impl LineReader {
    /// Opens a file; gzip is detected from its first two bytes, whatever its name.
    pub fn open(path: &Path, opts: &ReadOptions) -> Result<Self> {
        let read_err = |source| Error::Read {
            path: path.to_path_buf(),
            source,
        };
        if crate::remote::url_of(path).is_some() {
            return Self::open_remote(path, opts);
        }
        let mut file = File::open(path).map_err(read_err)?;
        let (magic, got) = sniff(&mut file).map_err(read_err)?;
        let read_bytes = Arc::new(AtomicU64::new(0));
        let meta = file.metadata().map_err(read_err)?;
        let file_len = meta.is_file().then_some(meta.len());
        let plain_len = file_len.filter(|_| !is_gzip(magic, got));
        let src: Box<dyn Read + Send> = if let Some(len) = plain_len {
            // A plain file is read from its start again, up to its size at open (bytes
            // appended meanwhile are left for the next run), as the bare `File`: `fill`
            // counts the bytes, because a wrapper without its own `read_buf` would make
            // `read_to_end` zero every buffer before each read (a `memset` of the whole
            // input; docs/performance.md, "Design choices").
            file.seek(SeekFrom::Start(0)).map_err(read_err)?;
            Box::new(file.take(len))
        } else {
            // Gzip and streams (which cannot seek): the sniffed bytes, then the rest.
            streamed(magic, got, file, &read_bytes)
        };
        Ok(Self::starting(
            path, src, plain_len, file_len, read_bytes, opts,
        ))
    }

    /// Opens an object-store URL: streamed from its start (one ranged GET, resumed on a
    /// broken connection by the installed reader), read as a stream (gzip by magic bytes).
    fn open_remote(path: &Path, opts: &ReadOptions) -> Result<Self> {
        let read_err = |source| Error::Read {
            path: path.to_path_buf(),
            source,
        };
        let file_len = crate::remote::len(path).map_err(read_err)?;
        let mut src = crate::remote::open(path, 0).map_err(read_err)?;
        let (magic, got) = sniff(&mut src).map_err(read_err)?;
        let read_bytes = Arc::new(AtomicU64::new(0));
        let src = streamed(magic, got, src, &read_bytes);
        Ok(Self::starting(
            path,
            src,
            None,
            Some(file_len),
            read_bytes,
            opts,
        ))
    }

    /// A reader of `src` before its first chunk.
    fn starting(
        path: &Path,
        src: Box<dyn Read + Send>,
        plain_len: Option<u64>,
        file_len: Option<u64>,
        read_bytes: Arc<AtomicU64>,
        opts: &ReadOptions,
    ) -> Self {
        Self {
            path: path.to_path_buf(),
            src,
            plain_len,
            opts: opts.clone(),
            carry: Vec::new(),
            next_line: 1,
            at_start: true,
            eof: false,
            overlong_sink: None,
            read_bytes,
            spare: Vec::new(),
            numbering: true,
            overlong_seen: 0,
            chunk_bytes: opts.chunk_bytes,
            file_len,
            sized: false,
        }
    }

    /// Stops counting lines: each chunk's lines are numbered from the chunk's own start (see
    /// [`Chunk::first_line`]) and the caller, which sees the chunks in order, adds the lines
    /// of the chunks before. Counting is then done by the workers that walk the lines anyway,
    /// instead of by a separate scan of every byte on the reading thread.
    pub fn leave_numbering_to_caller(&mut self) {
        self.numbering = false;
    }

    /// The number of the next overlong line, `skipped` being the overlong lines already in
    /// the chunk being built.
    fn overlong_number(&self, skipped: usize) -> u64 {
        if self.numbering {
            self.next_line
        } else {
            skipped as u64 + 1
        }
    }

    /// What the overlong sink is told about the next overlong line (see [`OverlongSink`]).
    fn sink_key(&self) -> u64 {
        if self.numbering {
            self.next_line
        } else {
            self.overlong_seen
        }
    }

    /// Sends overlong lines' bytes to `sink` as they are skipped.
    pub fn set_overlong_sink(&mut self, sink: OverlongSink) {
        self.overlong_sink = Some(sink);
    }

    /// Bytes read from the file so far (compressed size for gzip files).
    pub fn bytes_read(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.read_bytes)
    }

    /// The file being read.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn err(&self, source: io::Error) -> Error {
        Error::Read {
            path: self.path.clone(),
            source,
        }
    }

    /// Reads into `buf` until it holds at least `want` bytes or the input ends.
    fn fill(&mut self, buf: &mut Vec<u8>, want: usize) -> Result<()> {
        while !self.eof && buf.len() < want {
            let need = want - buf.len();
            buf.reserve(need);
            // `read_to_end` on a `take` of a `File` fills spare capacity without zeroing it
            // first.
            let n = Read::by_ref(&mut self.src)
                .take(need as u64)
                .read_to_end(buf)
                .map_err(|e| self.err(e))?;
            if self.plain_len.is_some() {
                self.read_bytes.fetch_add(n as u64, Ordering::Relaxed);
            }
            if n < need {
                self.eof = true;
                self.check_whole()?;
            }
        }
        if self.at_start {
            // Decided on the file's first bytes, before any of them is handed on: a first
            // read shorter than a BOM may already hold a whole line (found by the
            // `ndjson_reader` fuzz target: a BOM at the start of line 2 was dropped when
            // line 1 came in a 1-byte read).
            const BOM: &[u8] = b"\xEF\xBB\xBF";
            if buf.starts_with(BOM) {
                buf.drain(..3);
                self.at_start = false;
            } else if self.eof || !BOM.starts_with(&buf[..buf.len().min(3)]) {
                self.at_start = false;
            }
        }
        Ok(())
    }

    /// At the end of a plain file: an error when it ended before its size at open, because
    /// it shrank (was truncated or rewritten) while it was read. Its lines would otherwise
    /// be cut short or silently missing.
    fn check_whole(&self) -> Result<()> {
        let Some(len) = self.plain_len else {
            return Ok(());
        };
        let read = self.read_bytes.load(Ordering::Relaxed);
        if read < len {
            return Err(self.err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "the file shrank while it was read: it held {len} bytes when opened, \
                     but ended after {read}; was it being rewritten?"
                ),
            )));
        }
        Ok(())
    }

    /// Gives back a chunk's buffer for reuse, so steady-state reading allocates nothing.
    pub fn recycle(&mut self, mut buf: Vec<u8>) {
        if self.spare.len() < 4 {
            buf.clear();
            self.spare.push(buf);
        }
    }

    /// The next chunk of whole lines, or `None` at the end of the file.
    pub fn next_chunk(&mut self) -> Result<Option<Chunk>> {
        let mut overlong = Vec::new();
        let mut buf = self.take_buffer();
        let mut want = self.chunk_bytes.max(buf.len() + 1);
        loop {
            self.fill(&mut buf, want)?;
            if let Some(last_nl) = memchr::memrchr(b'\n', &buf) {
                self.carry.clear();
                self.carry.extend_from_slice(&buf[last_nl + 1..]);
                buf.truncate(last_nl + 1);
                return Ok(Some(self.make_chunk(buf, overlong)));
            }
            if self.eof {
                if buf.is_empty() && overlong.is_empty() {
                    return Ok(None);
                }
                return Ok(Some(self.make_chunk(buf, overlong)));
            }
            // No newline yet: one line longer than a chunk. Keep growing up to the cap, plus
            // one byte for the `\r` of a line of exactly the cap ending in `\r\n` (found by
            // the `ndjson_reader` fuzz target: such a line was skipped as overlong).
            let cap = self.opts.max_line_bytes.saturating_add(1);
            if buf.len() > cap {
                let number = self.overlong_number(overlong.len());
                let len = self.skip_overlong(buf)?;
                overlong.push(Overlong { number, len });
                self.next_line += 1;
                self.overlong_seen += 1;
                buf = self.take_buffer();
                want = self.chunk_bytes.max(buf.len() + 1);
                if self.eof && buf.is_empty() {
                    return Ok(Some(self.make_chunk(Vec::new(), overlong)));
                }
            } else {
                // Grow geometrically so a long line costs amortised linear time.
                want = (buf.len() * 2)
                    .clamp(want, cap.saturating_add(1))
                    .max(buf.len() + 1);
            }
        }
    }

    /// A buffer for the next chunk, starting with the carried-over partial line.
    fn take_buffer(&mut self) -> Vec<u8> {
        let mut buf = self.spare.pop().or_else(kept_buffer).unwrap_or_default();
        buf.clear();
        buf.extend_from_slice(&self.carry);
        self.carry.clear();
        buf
    }

    fn make_chunk(&mut self, data: impl Into<ChunkData>, overlong: Vec<Overlong>) -> Chunk {
        let data = data.into();
        let needs_count = self.numbering || (!self.sized && !data.is_empty());
        let lines = if needs_count {
            let newlines = memchr::memchr_iter(b'\n', &data).count();
            newlines + usize::from(data.last().is_some_and(|&b| b != b'\n'))
        } else {
            0
        };
        if !self.sized && lines > 0 {
            self.sized = true;
            self.chunk_bytes = grown_chunk_bytes(&self.opts, data.len(), lines, self.file_len);
        }
        let first_line = if self.numbering {
            let first = self.next_line;
            self.next_line += lines as u64;
            first
        } else {
            overlong.len() as u64 + 1
        };
        Chunk {
            data,
            first_line,
            overlong,
            file: 0,
        }
    }

    /// Streams the rest of an overlong line (whose first bytes are in `head`) to the sink, and
    /// leaves whatever follows its newline in `self.carry`. Returns the line's length.
    fn skip_overlong(&mut self, head: Vec<u8>) -> Result<u64> {
        let mut out = OverlongStream::new(self.sink_key());
        let path = self.path.clone();
        let sink_err = |e: io::Error| Error::Write {
            path: path.clone(),
            source: e,
        };
        out.piece(&mut self.overlong_sink, &head, false)
            .map_err(sink_err)?;
        let mut buf = head;
        loop {
            buf.clear();
            self.fill(&mut buf, 1 << 20)?;
            if let Some(nl) = memchr::memchr(b'\n', &buf) {
                out.piece(&mut self.overlong_sink, &buf[..nl], true)
                    .map_err(sink_err)?;
                self.carry.clear();
                self.carry.extend_from_slice(&buf[nl + 1..]);
                return Ok(out.len);
            }
            out.piece(&mut self.overlong_sink, &buf, self.eof)
                .map_err(sink_err)?;
            if self.eof {
                return Ok(out.len);
            }
        }
    }
}

/// An overlong line on its way to the [`OverlongSink`], piece by piece. The line's ending
/// `\r` (of `\r\n`, or before the end of the file) is left out, as [`Lines`] leaves it out,
/// even when it is the last byte of one piece and the newline the first of the next: a
/// piece's trailing `\r` is held back until the next piece shows whether the line goes on.
struct OverlongStream {
    key: u64,
    held_cr: bool,
    /// Bytes passed on so far: the line's length once the last piece is in.
    len: u64,
}

impl OverlongStream {
    fn new(key: u64) -> Self {
        Self {
            key,
            held_cr: false,
            len: 0,
        }
    }

    /// Passes on the next piece; `last` when the line ends after it.
    fn piece(
        &mut self,
        sink: &mut Option<OverlongSink>,
        piece: &[u8],
        last: bool,
    ) -> io::Result<()> {
        if piece.is_empty() && !last {
            return Ok(());
        }
        let (body, ends_cr) = match piece {
            [body @ .., b'\r'] => (body, true),
            _ => (piece, false),
        };
        let held = std::mem::replace(&mut self.held_cr, ends_cr && !last);
        if held && !piece.is_empty() {
            self.len += 1;
            if let Some(sink) = sink.as_mut() {
                sink(self.key, b"\r", false)?;
            }
        }
        self.len += body.len() as u64;
        match sink.as_mut() {
            Some(sink) => sink(self.key, body, last),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A spent buffer goes to the next taker as it is (no new allocation, its pages already
    /// mapped), emptied; the kept capacity never exceeds the limit; an empty or oversized
    /// buffer is not kept.
    #[test]
    fn kept_buffers_are_reused_within_a_limit() {
        let kept = Kept::new(10 << 20);
        assert!(kept.take().is_none());
        let mut a = Vec::with_capacity(4 << 20);
        a.extend_from_slice(b"old text");
        let at = a.as_ptr();
        kept.keep(a);
        let b = kept.take().expect("the buffer was kept");
        assert_eq!(b.as_ptr(), at, "the same allocation comes back");
        assert!(b.is_empty() && b.capacity() >= 4 << 20);
        assert!(kept.take().is_none());
        kept.keep(b);
        kept.keep(Vec::with_capacity(4 << 20));
        // A third 4 MiB buffer would exceed 10 MiB: freed, not kept.
        kept.keep(Vec::with_capacity(4 << 20));
        kept.keep(Vec::new());
        kept.keep(Vec::with_capacity(11 << 20));
        let mut n = 0;
        while let Some(buf) = kept.take() {
            assert_eq!(buf.capacity(), 4 << 20);
            n += 1;
        }
        assert_eq!(n, 2);
    }

    fn read_all(bytes: &[u8], opts: &ReadOptions) -> (Vec<(u64, String)>, Vec<Overlong>) {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(bytes).unwrap();
        let mut r = LineReader::open(f.path(), opts).unwrap();
        let (mut lines, mut over) = (Vec::new(), Vec::new());
        while let Some(c) = r.next_chunk().unwrap() {
            over.extend(c.overlong.iter().copied());
            lines.extend(
                c.lines()
                    .map(|l| (l.number, String::from_utf8_lossy(l.bytes).into_owned())),
            );
        }
        (lines, over)
    }

    /// What a caller ends up with: the lines it accepts (at most `max` bytes), and the numbers
    /// of the lines rejected as too long, by the reader or by the caller's own check.
    #[allow(clippy::type_complexity)]
    fn normalise(
        lines: &[(u64, String)],
        over: &[Overlong],
        max: usize,
    ) -> (Vec<(u64, String)>, Vec<u64>) {
        let kept = lines.iter().filter(|l| l.1.len() <= max).cloned().collect();
        let mut rejected: Vec<u64> = over.iter().map(|o| o.number).collect();
        rejected.extend(lines.iter().filter(|l| l.1.len() > max).map(|l| l.0));
        rejected.sort_unstable();
        (kept, rejected)
    }

    /// Each chunk's byte length and the numbers of its lines, read with `opts`.
    fn chunk_layout(path: &Path, opts: &ReadOptions) -> (Vec<usize>, Vec<u64>) {
        let mut r = LineReader::open(path, opts).unwrap();
        let (mut sizes, mut numbers) = (Vec::new(), Vec::new());
        while let Some(c) = r.next_chunk().unwrap() {
            sizes.push(c.data.len());
            numbers.extend(c.lines().map(|l| l.number));
        }
        (sizes, numbers)
    }

    /// A file of `n` lines of `len` bytes each (newline included), numbered in their text.
    fn uniform_lines(n: usize, len: usize) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        for i in 0..n {
            let head = format!("{i:08}");
            writeln!(f, "{head}{}", "x".repeat(len - head.len() - 1)).unwrap();
        }
        f.flush().unwrap();
        f
    }

    /// Long lines make later chunks grow to `chunk_rows` lines, within 4 × `chunk_bytes` and
    /// an eighth of the file; numbering is unbroken.
    #[test]
    fn chunks_of_long_lines_grow_to_hold_chunk_rows_lines() {
        // 2,000 lines of 100 bytes: 200,000 bytes, an eighth is 25,000.
        let f = uniform_lines(2000, 100);
        let opts = |rows: usize, chunk: usize| ReadOptions {
            chunk_bytes: chunk,
            chunk_rows: rows,
            ..ReadOptions::default()
        };
        let all: Vec<u64> = (1..=2000).collect();
        // 30 lines wanted: 3,000 bytes, within both caps.
        let (sizes, numbers) = chunk_layout(f.path(), &opts(30, 1000));
        assert_eq!(sizes[0], 1000, "first chunk at chunk_bytes");
        assert!(
            sizes[1..sizes.len() - 1].iter().all(|&s| s == 3000),
            "{sizes:?}"
        );
        assert_eq!(numbers, all);
        // 1,000 lines wanted: capped at 4 × chunk_bytes.
        let (sizes, numbers) = chunk_layout(f.path(), &opts(1000, 1000));
        assert!(
            sizes[1..sizes.len() - 1].iter().all(|&s| s == 4000),
            "{sizes:?}"
        );
        assert_eq!(numbers, all);
        // With 10,000-byte chunks the eighth of the file (25,000) is the cap.
        let (sizes, _) = chunk_layout(f.path(), &opts(1000, 10_000));
        assert_eq!(
            sizes,
            [
                10_000, 25_000, 25_000, 25_000, 25_000, 25_000, 25_000, 25_000, 15_000
            ]
        );
        // chunk_rows 0, or lines short enough: chunks stay at chunk_bytes.
        for (rows, chunk) in [(0, 1000), (5, 1000)] {
            let (sizes, _) = chunk_layout(f.path(), &opts(rows, chunk));
            assert!(
                sizes[..sizes.len() - 1].iter().all(|&s| s == 1000),
                "{sizes:?}"
            );
        }
        // A file under eight chunks never grows them.
        let f = uniform_lines(70, 100);
        let (sizes, _) = chunk_layout(f.path(), &opts(1000, 1000));
        assert!(
            sizes[..sizes.len() - 1].iter().all(|&s| s == 1000),
            "{sizes:?}"
        );
    }

    /// The line length is measured on the lines the first chunk holds: an overlong line
    /// skipped on the way does not count (it would make the chunks larger). The line is
    /// half a MiB, so the first chunk after it (the rest of the reader's 1 MiB read-ahead)
    /// holds ~5,000 lines of 100 bytes.
    #[test]
    fn an_overlong_line_is_not_measured() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(&[b'y'; 500_000]).unwrap();
        f.write_all(b"\n").unwrap();
        for i in 0..20_000 {
            writeln!(f, "{i:08}{}", "x".repeat(91)).unwrap();
        }
        f.flush().unwrap();
        let opts = ReadOptions {
            chunk_bytes: 200,
            chunk_rows: 6,
            max_line_bytes: 250,
        };
        let (sizes, numbers) = chunk_layout(f.path(), &opts);
        assert_eq!(numbers, (2..=20_001).collect::<Vec<_>>());
        // 6 lines of 100 bytes are 600 bytes (with the skipped line measured, ~190 bytes a
        // line: 1,140, capped at 800).
        assert!(sizes.len() > 100, "{}", sizes.len());
        assert!(
            sizes[1..sizes.len() - 1].iter().all(|&s| s == 600),
            "{sizes:?}"
        );
    }

    fn small(chunk: usize, max: usize) -> ReadOptions {
        ReadOptions {
            max_line_bytes: max,
            chunk_bytes: chunk,
            chunk_rows: 0,
        }
    }

    #[test]
    fn numbers_lines_and_skips_blanks_crlf_bom() {
        let input = b"\xEF\xBB\xBF{\"a\":1}\r\n\r\n  \n{\"b\":2}\n{\"c\":3}";
        for chunk in [1, 3, 7, 1024] {
            let (lines, over) = read_all(input, &small(chunk, 1 << 20));
            assert_eq!(
                lines,
                [
                    (1, "{\"a\":1}".into()),
                    (4, "{\"b\":2}".into()),
                    (5, "{\"c\":3}".into())
                ],
                "chunk {chunk}"
            );
            assert!(over.is_empty());
        }
    }

    #[test]
    fn a_bom_is_dropped_only_at_the_start_of_the_file() {
        let input = b"\n\xEF\xBB\xBF{\"a\":1}\n";
        for chunk in [1, 2, 3, 1024] {
            let (lines, over) = read_all(input, &small(chunk, 1 << 20));
            assert_eq!(lines, [(2, "\u{FEFF}{\"a\":1}".into())], "chunk {chunk}");
            assert!(over.is_empty());
        }
    }

    #[test]
    fn chunk_size_changes_nothing() {
        let mut input = String::new();
        for i in 0..300 {
            let pad = "z".repeat((i * 37) % 90);
            input.push_str(&format!("{{\"n\":{i},\"p\":\"{pad}\"}}"));
            input.push_str(if i % 7 == 0 { "\r\n" } else { "\n" });
            if i % 11 == 0 {
                input.push('\n');
            }
        }
        input.push_str(&"w".repeat(120));
        let reference = read_all(input.as_bytes(), &small(1 << 20, 80));
        let want = normalise(&reference.0, &reference.1, 80);
        assert_eq!(want.0.len() + want.1.len(), 300 + 1);
        for chunk in [1, 16, 100, 4096] {
            let (lines, over) = read_all(input.as_bytes(), &small(chunk, 80));
            assert_eq!(normalise(&lines, &over, 80), want, "chunk {chunk}");
        }
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(input.as_bytes()).unwrap();
        let mut r = LineReader::open(f.path(), &small(64, 1000)).unwrap();
        let counter = r.bytes_read();
        let mut total = 0;
        while let Some(c) = r.next_chunk().unwrap() {
            total += c.data.len();
        }
        assert_eq!(total, input.len());
        assert_eq!(counter.load(Ordering::Relaxed), input.len() as u64);
    }

    /// A chunk is a copy: another process rewriting the file in place cannot change the
    /// bytes the walker has checked as UTF-8 and turns into `&str`. (A memory-mapped chunk
    /// saw the new bytes: invalid UTF-8 behind a `&str`, undefined behaviour.)
    #[test]
    fn a_chunk_does_not_change_when_the_file_is_rewritten() {
        let before = "{\"a\":\"é\"}\n".repeat(100);
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), &before).unwrap();
        let mut r = LineReader::open(f.path(), &ReadOptions::default()).unwrap();
        let chunk = r.next_chunk().unwrap().unwrap();
        assert_eq!(&*chunk.data, before.as_bytes());
        // Same length, not valid UTF-8, written through another handle (no truncation).
        let mut w = std::fs::OpenOptions::new()
            .write(true)
            .open(f.path())
            .unwrap();
        w.write_all(&vec![0xFF; before.len()]).unwrap();
        w.sync_all().unwrap();
        assert!(
            &*chunk.data == before.as_bytes(),
            "the chunk changed with the file"
        );
        assert!(std::str::from_utf8(&chunk.data).is_ok());
    }

    /// A plain file that shrinks while it is read is an error naming it (a mapped file
    /// killed the process with SIGBUS); one that grows is read up to its size at open.
    #[test]
    fn a_file_that_shrinks_while_read_is_an_error_and_one_that_grows_is_read_to_its_size() {
        let text = "{\"n\":1}\n".repeat(200);
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), &text).unwrap();
        let mut r = LineReader::open(f.path(), &small(64, 1000)).unwrap();
        assert!(r.next_chunk().unwrap().is_some());
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(f.path())
            .unwrap();
        file.set_len(300).unwrap();
        let err = loop {
            match r.next_chunk() {
                Ok(Some(_)) => {}
                Ok(None) => panic!("a shrunk file read as if whole"),
                Err(e) => break e,
            }
        };
        let msg = err.to_string();
        assert!(msg.contains(&f.path().display().to_string()), "{msg}");
        assert!(
            msg.contains("shrank") && msg.contains("1600 bytes"),
            "{msg}"
        );

        std::fs::write(f.path(), &text).unwrap();
        let mut r = LineReader::open(f.path(), &small(64, 1000)).unwrap();
        let mut lines = r.next_chunk().unwrap().unwrap().lines().count();
        let mut a = std::fs::OpenOptions::new()
            .append(true)
            .open(f.path())
            .unwrap();
        a.write_all(b"{\"n\":2}\n{\"n\":3}\n").unwrap();
        while let Some(c) = r.next_chunk().unwrap() {
            lines += c.lines().count();
        }
        assert_eq!(lines, 200);
    }

    /// A line of exactly `max_line_bytes` is kept whether it ends in `\n` or `\r\n`, at
    /// every chunk size (found by fuzzing: with `\r\n` it was skipped as overlong when the
    /// chunk ended inside it).
    #[test]
    fn a_line_of_exactly_the_cap_is_kept_with_crlf() {
        let line = format!("{{\"a\":\"{}\"}}", "x".repeat(56));
        assert_eq!(line.len(), 64);
        for ending in ["\n", "\r\n"] {
            let input = format!("{line}{ending}{line}{ending}");
            for chunk in [1, 3, 64, 65, 4096] {
                let (lines, over) = read_all(input.as_bytes(), &small(chunk, 64));
                assert_eq!(over, [], "chunk {chunk} ending {ending:?}");
                assert_eq!(
                    lines,
                    [(1, line.clone()), (2, line.clone())],
                    "chunk {chunk} ending {ending:?}"
                );
            }
        }
    }

    #[test]
    fn reads_gzip_by_magic_bytes() {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(b"{\"a\":1}\n{\"b\":2}\n").unwrap();
        let bytes = gz.finish().unwrap();
        let (lines, _) = read_all(&bytes, &ReadOptions::default());
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[1], (2, "{\"b\":2}".into()));
    }

    #[test]
    fn skips_overlong_lines_and_reports_them() {
        let long = "x".repeat(100);
        let input = format!("{{\"a\":1}}\n{long}\n{{\"b\":2}}\n{long}");
        let (lines, over) = read_all(input.as_bytes(), &small(8, 50));
        // Line 2 is skipped by the reader; the last line is either skipped too or handed
        // over whole (then the caller's length check rejects it): either way it is
        // rejected, with its number.
        assert_eq!(
            normalise(&lines, &over, 50),
            (
                vec![(1, "{\"a\":1}".into()), (3, "{\"b\":2}".into())],
                vec![2, 4]
            ),
        );
        assert_eq!(
            over[0],
            Overlong {
                number: 2,
                len: 100
            },
        );
    }

    /// The `\r` of an overlong line's `\r\n` is left out wherever the reader's pieces cut
    /// the line: between `\r` and `\n` included (at the end of the first window when
    /// reading, or of a 1 MiB piece either way). A `\r` inside the line stays.
    #[test]
    fn overlong_crlf_split_across_pieces_is_dropped() {
        let f = tempfile::NamedTempFile::new().unwrap();
        for long in [(1 << 20) - 2, (1 << 20) - 1, 1 << 20, 287, 288] {
            for inner_cr in [false, true] {
                let mut line = "y".repeat(long);
                if inner_cr {
                    line.replace_range(long / 2..long / 2 + 1, "\r");
                }
                let input = format!("{line}\r\n{{\"b\":2}}\n");
                std::fs::write(f.path(), &input).unwrap();
                for chunk in [288, 64] {
                    let (mut r, got) = with_sink(f.path(), &small(chunk, 200));
                    let mut over = Vec::new();
                    let mut lines = Vec::new();
                    while let Some(c) = r.next_chunk().unwrap() {
                        over.extend(c.overlong.iter().map(|o| o.len));
                        lines.extend(c.lines().map(|l| l.bytes.to_vec()));
                    }
                    let at = format!("line of {long}, chunk {chunk}");
                    assert!(*got.lock().unwrap() == line.as_bytes(), "{at}");
                    assert_eq!(over, [long as u64], "{at}");
                    assert_eq!(lines, [b"{\"b\":2}".to_vec()], "{at}");
                }
            }
        }
    }

    /// A reader of `path` whose overlong lines' bytes collect in the returned buffer.
    fn with_sink(path: &Path, opts: &ReadOptions) -> (LineReader, Arc<std::sync::Mutex<Vec<u8>>>) {
        let got = Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = Arc::clone(&got);
        let mut r = LineReader::open(path, opts).unwrap();
        r.set_overlong_sink(Box::new(move |_, piece, _| {
            sink.lock().unwrap().extend_from_slice(piece);
            Ok(())
        }));
        (r, got)
    }

    #[test]
    fn overlong_sink_receives_the_line_verbatim() {
        let long = "y".repeat(70);
        let input = format!("{long}\r\n{{\"b\":2}}\n");
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(input.as_bytes()).unwrap();
        let (mut r, got) = with_sink(f.path(), &small(8, 50));
        let mut lines = Vec::new();
        let mut over = Vec::new();
        while let Some(c) = r.next_chunk().unwrap() {
            over.extend(c.overlong.iter().copied());
            lines.extend(c.lines().map(|l| (l.number, l.bytes.to_vec())));
        }
        assert_eq!(&*got.lock().unwrap(), long.as_bytes());
        assert_eq!(over, [Overlong { number: 1, len: 70 }]);
        assert_eq!(lines, [(2, b"{\"b\":2}".to_vec())]);
    }
}
