//! Reading NDJSON files (plain or gzip, sniffed by magic bytes) as chunks of whole lines, with
//! line numbers, a UTF-8 BOM dropped, and a cap on line length. It knows nothing of JSON.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use flate2::read::MultiGzDecoder;

use crate::error::{Error, Result};

/// Default cap on one line's length (64 MiB).
pub const DEFAULT_MAX_LINE_BYTES: usize = 64 << 20;
/// Default size of a chunk of lines handed to one worker (8 MiB).
pub const DEFAULT_CHUNK_BYTES: usize = 8 << 20;

/// How to read input files.
#[derive(Debug, Clone)]
pub struct ReadOptions {
    /// Lines longer than this are rejected.
    pub max_line_bytes: usize,
    /// Target size of a chunk of lines (a chunk holds whole lines; a longer line makes a larger
    /// chunk, up to `max_line_bytes`).
    pub chunk_bytes: usize,
}

impl Default for ReadOptions {
    fn default() -> Self {
        Self {
            max_line_bytes: DEFAULT_MAX_LINE_BYTES,
            chunk_bytes: DEFAULT_CHUNK_BYTES,
        }
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
    pub data: Vec<u8>,
    /// Line number of the first line in `data`.
    pub first_line: u64,
    /// Overlong lines that came just before `data`, skipped by the reader.
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
    pub fn lines(&self) -> impl Iterator<Item = Line<'_>> {
        let data = &self.data[..];
        let mut start = 0;
        let mut number = self.first_line;
        std::iter::from_fn(move || {
            while start < data.len() {
                let end = memchr::memchr(b'\n', &data[start..]).map_or(data.len(), |i| start + i);
                let mut line = &data[start..end];
                let n = number;
                start = end + 1;
                number += 1;
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
        })
    }
}

/// Called with the bytes of an overlong line, piece by piece (`end` on the last piece), so the
/// caller can keep it verbatim without the reader holding it in memory.
pub type OverlongSink = Box<dyn FnMut(u64, &[u8], bool) -> io::Result<()> + Send>;

/// Reads a file as a sequence of [`Chunk`]s.
pub struct LineReader {
    path: PathBuf,
    src: Box<dyn Read + Send>,
    opts: ReadOptions,
    carry: Vec<u8>,
    next_line: u64,
    at_start: bool,
    eof: bool,
    overlong_sink: Option<OverlongSink>,
    read_bytes: Arc<AtomicU64>,
    spare: Vec<Vec<u8>>,
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

impl LineReader {
    /// Opens a file; gzip is detected from its first two bytes, whatever its name.
    pub fn open(path: &Path, opts: &ReadOptions) -> Result<Self> {
        let read_err = |source| Error::Read {
            path: path.to_path_buf(),
            source,
        };
        let mut file = File::open(path).map_err(read_err)?;
        let mut magic = [0u8; 2];
        let mut got = 0;
        while got < 2 {
            let n = file.read(&mut magic[got..]).map_err(read_err)?;
            if n == 0 {
                break;
            }
            got += n;
        }
        let read_bytes = Arc::new(AtomicU64::new(0));
        let head = io::Cursor::new(magic[..got].to_vec());
        let counted = Counting {
            inner: head.chain(file),
            count: Arc::clone(&read_bytes),
        };
        let src: Box<dyn Read + Send> = if got == 2 && magic == [0x1f, 0x8b] {
            Box::new(MultiGzDecoder::new(io::BufReader::with_capacity(
                1 << 16,
                counted,
            )))
        } else {
            Box::new(counted)
        };
        Ok(Self {
            path: path.to_path_buf(),
            src,
            opts: opts.clone(),
            carry: Vec::new(),
            next_line: 1,
            at_start: true,
            eof: false,
            overlong_sink: None,
            read_bytes,
            spare: Vec::new(),
        })
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
            // `read_to_end` on a `take` fills spare capacity without zeroing it first.
            let n = Read::by_ref(&mut self.src)
                .take(need as u64)
                .read_to_end(buf)
                .map_err(|e| self.err(e))?;
            if n < need {
                self.eof = true;
            }
        }
        if self.at_start && (buf.len() >= 3 || self.eof) {
            self.at_start = false;
            if buf.starts_with(b"\xEF\xBB\xBF") {
                buf.drain(..3);
            }
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
        let mut want = self.opts.chunk_bytes.max(buf.len() + 1);
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
            // No newline yet: one line longer than a chunk. Keep growing up to the cap.
            if buf.len() > self.opts.max_line_bytes {
                let number = self.next_line;
                let len = self.skip_overlong(buf)?;
                overlong.push(Overlong { number, len });
                self.next_line += 1;
                buf = self.take_buffer();
                want = self.opts.chunk_bytes.max(buf.len() + 1);
                if self.eof && buf.is_empty() {
                    return Ok(Some(self.make_chunk(Vec::new(), overlong)));
                }
            } else {
                // Grow geometrically so a long line costs amortised linear time.
                want = (buf.len() * 2)
                    .clamp(want, self.opts.max_line_bytes + 1)
                    .max(buf.len() + 1);
            }
        }
    }

    /// A buffer for the next chunk, starting with the carried-over partial line.
    fn take_buffer(&mut self) -> Vec<u8> {
        let mut buf = self.spare.pop().unwrap_or_default();
        buf.clear();
        buf.extend_from_slice(&self.carry);
        self.carry.clear();
        buf
    }

    fn make_chunk(&mut self, data: Vec<u8>, overlong: Vec<Overlong>) -> Chunk {
        let first_line = self.next_line;
        let newlines = memchr::memchr_iter(b'\n', &data).count() as u64;
        let unterminated = u64::from(data.last().is_some_and(|&b| b != b'\n'));
        self.next_line += newlines + unterminated;
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
        let number = self.next_line;
        let mut len = head.len() as u64;
        let path = self.path.clone();
        let sink_err = |e: io::Error| Error::Write {
            path: path.clone(),
            source: e,
        };
        if let Some(sink) = self.overlong_sink.as_mut() {
            sink(number, &head, false).map_err(sink_err)?;
        }
        let mut buf = head;
        loop {
            buf.clear();
            self.fill(&mut buf, 1 << 20)?;
            if let Some(nl) = memchr::memchr(b'\n', &buf) {
                let mut piece = &buf[..nl];
                len += nl as u64;
                if let [rest @ .., b'\r'] = piece {
                    piece = rest;
                    len -= 1;
                }
                if let Some(sink) = self.overlong_sink.as_mut() {
                    sink(number, piece, true).map_err(sink_err)?;
                }
                self.carry.clear();
                self.carry.extend_from_slice(&buf[nl + 1..]);
                return Ok(len);
            }
            len += buf.len() as u64;
            if let Some(sink) = self.overlong_sink.as_mut() {
                sink(number, &buf, self.eof).map_err(sink_err)?;
            }
            if self.eof {
                return Ok(len);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

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

    fn small(chunk: usize, max: usize) -> ReadOptions {
        ReadOptions {
            max_line_bytes: max,
            chunk_bytes: chunk,
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
        // Line 2 is skipped by the reader; the unterminated last line is small enough to be
        // handed over whole at end of file, and the caller's length check rejects it.
        assert_eq!(
            lines[..2],
            [(1, "{\"a\":1}".into()), (3, "{\"b\":2}".into())]
        );
        assert_eq!(lines[2].0, 4);
        assert_eq!(lines[2].1.len(), 100);
        assert_eq!(
            over,
            [Overlong {
                number: 2,
                len: 100
            }]
        );
    }

    #[test]
    fn overlong_sink_receives_the_line_verbatim() {
        let long = "y".repeat(70);
        let input = format!("{long}\r\n{{\"b\":2}}\n");
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(input.as_bytes()).unwrap();
        let got = Arc::new(std::sync::Mutex::new(Vec::new()));
        let got2 = Arc::clone(&got);
        let mut r = LineReader::open(f.path(), &small(8, 50)).unwrap();
        r.set_overlong_sink(Box::new(move |_, piece, _| {
            got2.lock().unwrap().extend_from_slice(piece);
            Ok(())
        }));
        while r.next_chunk().unwrap().is_some() {}
        assert_eq!(&*got.lock().unwrap(), long.as_bytes());
    }
}
