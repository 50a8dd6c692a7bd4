//! Downloading one manifest file: streamed into `{path}.part` through a large buffer
//! (resumable with `Range`), each line checked while it streams (JSON, `resourceType`, line
//! cap), retried with backoff honouring `Retry-After`, the token sent only when required and
//! never across origins; then fsynced and renamed to its final name. Which files to fetch and
//! when is the orchestrator's job.
//!
//! `.part` always holds the bytes exactly as the server sent them (after HTTP content
//! decoding), so a `Range: bytes=N-` request continues it. When they already are clean NDJSON
//! (LF line ends, no blank lines, one resource per line) — the usual case — publishing is a
//! rename; otherwise (CRLF, blank lines, gzip without `Content-Encoding`) a second pass
//! writes the normalised lines to `{path}.tmp` and renames that.
//!
//! Where the CPU goes (measured with callgrind and perf on loopback exports from the test
//! server): checking the lines (`line.rs`, core's walker) is most of a download's own work;
//! the rest is the kernel's copies. The body is read by `h1.rs` (HTTP/1.1 by hand: large reads,
//! every HTTP chunk they hold de-framed at once) where it can, so a server that sends one HTTP
//! chunk per line costs little more than one with large chunks; through reqwest (the fallback)
//! each chunk still arrives on its own. Short chunks are gathered into 64 KiB blocks before
//! they are checked and written, so the checker and the writer work per block, not per chunk. The check and the writes stay on the runtime's workers: a
//! `spawn_blocking` per block would add a hand-over per block and save no CPU, and the number
//! of workers made no difference to the CPU used (1 or 2, measured with
//! `TOKIO_WORKER_THREADS`); `--parallel` downloads already keep both cores busy.

use std::io::{BufRead, BufReader, BufWriter, IoSlice, Read, Write};

use bytes::{Bytes, BytesMut};
use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;
use url::Url;

use crate::ctx::RunContext;
use crate::durable;
use crate::error::{Error, Result};
use crate::event::Event;
use crate::http::{READ_TIMEOUT, headers_json, outcome_text};
use crate::job::{FileState, part_path};
use crate::line::check_line;
use crate::manifest::ItemType;
use crate::poll::body_json;
use crate::redact::RedactedUrl;
use crate::redact::Secret;
use crate::retry::{Retries, send_with_token};

/// Bytes collected before one `writev` to `.part`.
const WRITE_BUF: usize = 1 << 20;
/// HTTP chunks at least this long are written from hyper's buffer; shorter ones are copied
/// together first (one chunk per NDJSON line would otherwise be one `iovec` each).
const COPY_BELOW: usize = 4096;
/// Short HTTP chunks (one per line on some servers) are gathered into blocks of this size,
/// and each block is checked and handed to the writer at once: one call of the line checker
/// and one `iovec` per block instead of per chunk.
const CHECK_BLOCK: usize = 64 * 1024;
/// At most this many `iovec`s per `writev` (Linux allows 1024).
const MAX_SLICES: usize = 64;
/// How often a streaming body is checked for having stalled ([`READ_TIMEOUT`] without a byte).
const STALL_CHECK: Duration = Duration::from_secs(10);
/// Write-back to disk is started every this many bytes written.
const WRITEBACK_STEP: u64 = 4 << 20;
/// Progress is reported in steps of at least this many bytes.
const PROGRESS_STEP: u64 = 1 << 20;

/// Why a download did not finish.
#[derive(Debug)]
pub(crate) enum Failure {
    /// 403/404/410: the link may have expired; re-poll for a fresh one.
    Expired(String),
    /// Anything else, after retries.
    Failed(Error),
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure::Failed(e)
    }
}

/// Outcome of a finished download.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Done {
    pub(crate) resources: u64,
    pub(crate) bytes: u64,
}

/// The resourceType every line of a file must have.
fn expected_type(file: &FileState) -> Option<String> {
    match file.item {
        ItemType::Output => Some(file.resource_type.clone()).filter(|t| !t.is_empty()),
        ItemType::Error => Some("OperationOutcome".to_owned()),
        ItemType::Deleted => Some("Bundle".to_owned()),
    }
}

/// Download `file`. `slot` (a download slot) is given back once the bytes are in, before the
/// file is fsynced and published, so the next download need not wait for the disk.
pub(crate) async fn download(
    ctx: &RunContext,
    file: &FileState,
    slot: tokio::sync::SemaphorePermit<'_>,
) -> Result<Done, Failure> {
    let url = Url::parse(&file.url).map_err(|e| Error::Download {
        url: RedactedUrl::new(Url::parse("invalid:").expect("static")),
        reason: format!("bad URL in manifest: {e}"),
    })?;
    let shown = RedactedUrl::new(url.clone());
    let final_path = ctx.dir.join(&file.path);
    let part = part_path(&ctx.dir, &file.path);
    if let Some(parent) = final_path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    }
    ctx.log.emit(
        "download_request",
        json!({"fileUrl": shown.redacted(), "itemType": file.item.as_str(), "resourceType": file.resource_type}),
    );
    ctx.observe(Event::FileStarted {
        path: file.path.clone(),
        resource_type: file.resource_type.clone(),
    });
    let result = transfer(ctx, file, &url, &shown, &part, &final_path, slot).await;
    match result {
        Ok(done) => {
            ctx.log.emit(
                "download_complete",
                json!({"fileUrl": shown.redacted(), "resourceCount": done.resources, "fileSize": done.bytes}),
            );
            Ok(done)
        }
        Err(Attempt::Failed(f)) => {
            remove_if_empty(&part);
            Err(f)
        }
        Err(Attempt::Local(e)) => {
            // Bad content or a local write error: the bytes are of no use for a resume.
            let _ = std::fs::remove_file(&part);
            let (line, path) = match &e {
                Error::Content { line, path, .. } => (Some(*line), Some(path.clone())),
                Error::Io { path, .. } => (None, Some(path.clone())),
                _ => (None, None),
            };
            ctx.log.emit(
                "download_error",
                json!({"fileUrl": shown.redacted(), "code": null, "body": null,
                       "message": e.to_string(), "file": file.path,
                       "line": line, "localPath": path.map(|p| p.display().to_string())}),
            );
            Err(Failure::Failed(e))
        }
        Err(Attempt::Other(e)) => {
            // E.g. the connection kept failing: `.part` stays for a `--resume` with Range.
            remove_if_empty(&part);
            ctx.log.emit(
                "download_error",
                json!({"fileUrl": shown.redacted(), "code": null, "body": null,
                       "message": e.to_string(), "file": file.path}),
            );
            Err(Failure::Failed(e))
        }
    }
}

/// An empty `.part` holds nothing worth resuming.
fn remove_if_empty(part: &Path) {
    if std::fs::metadata(part).is_ok_and(|m| m.len() == 0) {
        let _ = std::fs::remove_file(part);
    }
}

/// How a transfer ended badly.
enum Attempt {
    /// Already logged (an HTTP error answer), or an expired link.
    Failed(Failure),
    /// The content or the local disk is at fault.
    Local(Error),
    /// Anything else, e.g. the network after its retries, or auth.
    Other(Error),
}

impl From<Error> for Attempt {
    fn from(e: Error) -> Self {
        match e {
            e @ (Error::Content { .. } | Error::Io { .. }) => Attempt::Local(e),
            e => Attempt::Other(e),
        }
    }
}

#[allow(clippy::too_many_lines)]
async fn transfer(
    ctx: &RunContext,
    file: &FileState,
    url: &Url,
    shown: &RedactedUrl,
    part: &Path,
    final_path: &Path,
    slot: tokio::sync::SemaphorePermit<'_>,
) -> Result<Done, Attempt> {
    let mut check = Checker::new(
        final_path,
        expected_type(file),
        ctx.opts.max_line_bytes,
        file.item,
    );
    // A `.part` from an earlier run: check what it holds, then continue it with Range.
    let mut out = PartFile::open(part)?;
    if out.len > 0 && out.replay_into(&mut check).is_err() {
        out.truncate()?;
        check.reset();
    }
    let mut retries = Retries::new(&ctx.opts.timing);
    loop {
        let have = out.len;
        // The token goes only where the manifest says it is required; a 401 then means it
        // expired mid-export, and the request is sent again with a new one.
        let sent = send_with_token(
            &ctx.auth,
            file.requires_token,
            &mut retries,
            |token: Option<Secret>| async move {
                ctx.http
                    .send_download(url, token.as_ref(), |r| {
                        // HAPI answers Binary URLs with XML unless asked for NDJSON.
                        let r = r.header("accept", "application/fhir+ndjson");
                        if have > 0 {
                            // `.part` holds decoded bytes: continue at that offset of the identity
                            // representation (an offset into a gzip stream cannot be decoded).
                            r.header("range", format!("bytes={have}-"))
                                .header("accept-encoding", "identity")
                        } else {
                            r
                        }
                    })
                    .await
            },
        )
        .await?;
        let resp = match sent {
            Ok(r) => r,
            Err(e) => {
                let Some(wait) = retries.next(None) else {
                    return Err(Attempt::Other(e));
                };
                let attempt = retries.failures();
                retrying(ctx, file, shown, None, None, &e.to_string(), wait, attempt);
                tokio::time::sleep(wait).await;
                continue;
            }
        };
        let status = resp.status();
        let headers = resp.headers().clone();
        match status {
            StatusCode::OK => {
                if have > 0 {
                    // The server ignored Range: start over.
                    out.truncate()?;
                    check.reset();
                }
            }
            StatusCode::PARTIAL_CONTENT => {
                let start = headers
                    .get("content-range")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("bytes "))
                    .and_then(|v| v.split('-').next())
                    .and_then(|v| v.parse::<u64>().ok());
                if start != Some(have) {
                    // Not the range we asked for: start over.
                    out.truncate()?;
                    check.reset();
                    continue;
                }
            }
            StatusCode::RANGE_NOT_SATISFIABLE if have > 0 => {
                // The part file already holds the whole file.
                break;
            }
            s => {
                let text = resp.text().await.unwrap_or_default();
                ctx.log.emit(
                    "download_error",
                    json!({"fileUrl": shown.redacted(), "body": body_json(&text), "code": s.as_u16(),
                           "responseHeaders": headers_json(&headers)}),
                );
                if matches!(
                    s,
                    StatusCode::FORBIDDEN | StatusCode::NOT_FOUND | StatusCode::GONE
                ) {
                    return Err(Attempt::Failed(Failure::Expired(format!(
                        "HTTP {s}: {}",
                        outcome_text(&text)
                    ))));
                }
                if s == StatusCode::TOO_MANY_REQUESTS {
                    ctx.throttle();
                }
                let retryable = s == StatusCode::TOO_MANY_REQUESTS || s.is_server_error();
                // Retry-After on 429/503 is honoured (clamped to the configured range).
                if retryable && let Some(wait) = retries.next(Some(&headers)) {
                    let retry_after = headers
                        .get(reqwest::header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok());
                    retrying(
                        ctx,
                        file,
                        shown,
                        Some(s.as_u16()),
                        retry_after,
                        &format!("HTTP {s}"),
                        wait,
                        retries.failures(),
                    );
                    tokio::time::sleep(wait).await;
                    continue;
                }
                return Err(Attempt::Failed(Failure::Failed(Error::Download {
                    url: shown.clone(),
                    reason: format!("HTTP {s}: {}", outcome_text(&text)),
                })));
            }
        }
        let ranged = status == StatusCode::PARTIAL_CONTENT;
        let mut resp = resp;
        // Short HTTP chunks gathered since the last block was checked and written.
        let mut block = BytesMut::new();
        let mut unreported = 0u64;
        let mut received = 0u64;
        // Err((error, restart)): `restart` when the bytes so far cannot be continued.
        let streamed: Result<(), (Error, bool)> = async {
            // The body's read timeout, checked every STALL_CHECK instead of per HTTP chunk.
            let mut watchdog = tokio::time::interval(STALL_CHECK);
            watchdog.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            watchdog.reset();
            let (mut seen, mut quiet) = (0u64, Duration::ZERO);
            loop {
                let next = tokio::select! {
                    biased;
                    next = resp.chunk() => next,
                    _ = watchdog.tick() => {
                        if received == seen {
                            quiet += STALL_CHECK;
                            if quiet >= READ_TIMEOUT {
                                let reason = format!(
                                    "no data for {} s (the server stopped sending)",
                                    quiet.as_secs()
                                );
                                return Err((Error::Download { url: shown.clone(), reason }, false));
                            }
                        } else {
                            (seen, quiet) = (received, Duration::ZERO);
                        }
                        continue;
                    }
                };
                let chunk = match next {
                    Ok(Some(c)) => c,
                    Ok(None) => return Ok(()),
                    Err(e) => {
                        // A server that compresses a Range answer cannot be continued.
                        let restart = ranged && e.is_decode();
                        return Err((Error::http(url, e), restart));
                    }
                };
                unreported += chunk.len() as u64;
                received += chunk.len() as u64;
                if chunk.len() < COPY_BELOW {
                    // One HTTP chunk per line: gathered, then checked and written as a block.
                    if block.capacity() - block.len() < chunk.len() {
                        block.reserve(WRITE_BUF);
                    }
                    block.extend_from_slice(&chunk);
                    if block.len() >= CHECK_BLOCK {
                        pass_block(&mut check, &mut out, &mut block).map_err(|e| (e, false))?;
                    }
                } else {
                    // What was gathered goes first: the bytes stay in the order received.
                    pass_block(&mut check, &mut out, &mut block).map_err(|e| (e, false))?;
                    check.feed(&chunk).map_err(|e| (e, false))?;
                    out.write(chunk).map_err(|e| (e, false))?;
                }
                if unreported >= PROGRESS_STEP {
                    ctx.observe(Event::Bytes(unreported));
                    unreported = 0;
                }
            }
        }
        .await;
        if unreported > 0 {
            ctx.observe(Event::Bytes(unreported));
        }
        // However the stream ended, the bytes gathered are checked and written, so `.part`
        // and the checker agree on what a Range request continues; not after bad content or
        // a write error, when `.part` is dropped anyway.
        let local = matches!(streamed, Err((Error::Io { .. } | Error::Content { .. }, _)));
        let gathered = if local {
            Ok(())
        } else {
            pass_block(&mut check, &mut out, &mut block)
        };
        // Every byte received is on its way to disk before the next attempt's Range offset.
        out.flush()?;
        // A bad line or a write error in the last block outranks a dropped connection.
        let streamed = gathered.map_err(|e| (e, false)).and(streamed);
        match streamed {
            Ok(()) => break,
            Err((e @ (Error::Io { .. } | Error::Content { .. }), _)) => {
                return Err(Attempt::Local(e));
            }
            Err((e, restart)) => {
                if restart {
                    out.truncate()?;
                    check.reset();
                }
                // A dropped connection: keep the bytes and continue with a Range request.
                let Some(wait) = retries.next(None) else {
                    return Err(Attempt::Other(e));
                };
                let attempt = retries.failures();
                retrying(ctx, file, shown, None, None, &e.to_string(), wait, attempt);
                tokio::time::sleep(wait).await;
            }
        }
    }
    drop(slot);
    let bytes = out.len;
    let (part_owned, final_owned) = (part.to_owned(), final_path.to_owned());
    let rule = file_count_rule(file);
    let (resources, count_note) =
        tokio::task::spawn_blocking(move || finish(out, check, &part_owned, &final_owned, rule))
            .await
            .map_err(|e| Error::Job(format!("finishing {}: {e}", final_path.display())))??;
    if let Some(expected) = count_note {
        let message = format!(
            "the manifest count is {expected} but the file has {resources} resources; \
             {} files are kept whatever their count says",
            file.item.as_str()
        );
        ctx.log.emit(
            "count_mismatch",
            json!({"fileUrl": shown.redacted(), "file": file.path, "itemType": file.item.as_str(),
                   "manifestCount": expected, "resourceCount": resources, "severity": "warning"}),
        );
        ctx.observe(Event::Warning {
            path: file.path.clone(),
            message,
        });
    }
    Ok(Done { resources, bytes })
}

/// Check and write the gathered short chunks as one block (nothing when there are none).
fn pass_block(check: &mut Checker, out: &mut PartFile, block: &mut BytesMut) -> Result<()> {
    if block.is_empty() {
        return Ok(());
    }
    check.feed(block)?;
    out.write(block.split().freeze())
}

/// How the manifest's `count` is enforced for a file.
#[derive(Debug, Clone, Copy)]
enum CountRule {
    /// Output files: a mismatch fails the file.
    Enforce(Option<u64>),
    /// Error and deleted files: a mismatch is a warning (the SMART server gives an error entry
    /// the count of the file that failed, while the error file holds one OperationOutcome).
    Warn(Option<u64>),
}

fn file_count_rule(file: &FileState) -> CountRule {
    match file.item {
        ItemType::Output => CountRule::Enforce(file.count),
        ItemType::Error | ItemType::Deleted => CountRule::Warn(file.count),
    }
}

#[allow(clippy::too_many_arguments)]
fn retrying(
    ctx: &RunContext,
    file: &FileState,
    shown: &RedactedUrl,
    code: Option<u16>,
    retry_after: Option<&str>,
    why: &str,
    wait: std::time::Duration,
    attempt: u32,
) {
    ctx.log.emit(
        "download_retry",
        json!({"fileUrl": shown.redacted(), "file": file.path, "code": code, "retryAfter": retry_after,
               "message": why, "attempt": attempt, "waitMs": wait.as_millis() as u64}),
    );
    ctx.observe(Event::Retrying {
        what: format!("{}: {why}", file.path),
        wait,
    });
}

/// `{path}.part`, written with blocking `writev`s of about 1 MiB (a page-cache write of 1 MiB
/// takes well under a millisecond; `tokio::fs` would cost a thread hand-off per chunk). Large
/// HTTP chunks are written from the `Bytes` hyper received them in (no copy); runs of small
/// ones (one HTTP chunk per line) are gathered into one buffer first. After each write the
/// kernel is asked to start writing the new bytes to disk (Linux `sync_file_range`), so the
/// fsync before the rename waits only for the last few, not for the whole file.
struct PartFile {
    file: std::fs::File,
    path: PathBuf,
    /// Chunks waiting for the next `writev`, in order.
    pending: Vec<Bytes>,
    /// Bytes in `pending` and `small`.
    pending_len: usize,
    /// Small chunks gathered since the last entry of `pending` (written after it).
    small: BytesMut,
    /// Bytes in the file plus those pending.
    len: u64,
    /// Bytes in the file.
    written: u64,
    /// Offset up to which write-back to disk was started.
    writeback_from: u64,
    /// `sync_file_range` calls made (counted for tests).
    writebacks: u64,
}

impl PartFile {
    /// Open (creating) `.part` for appending to what it holds.
    fn open(path: &Path) -> Result<Self> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(path)
            .map_err(|e| Error::io(path, e))?;
        let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
        Ok(Self {
            file,
            path: path.to_owned(),
            pending: Vec::new(),
            pending_len: 0,
            small: BytesMut::new(),
            len,
            written: len,
            writeback_from: len,
            writebacks: 0,
        })
    }

    fn write(&mut self, data: Bytes) -> Result<()> {
        let n = data.len();
        if n == 0 {
            return Ok(());
        }
        if n >= COPY_BELOW {
            self.seal_small();
            self.pending.push(data);
        } else {
            if self.small.capacity() - self.small.len() < n {
                self.small.reserve(WRITE_BUF.max(n));
            }
            self.small.extend_from_slice(&data);
        }
        self.pending_len += n;
        self.len += n as u64;
        if self.pending_len >= WRITE_BUF || self.pending.len() >= MAX_SLICES {
            self.flush()?;
        }
        Ok(())
    }

    /// Move the gathered small chunks into `pending` (keeping the order of the bytes).
    fn seal_small(&mut self) {
        if !self.small.is_empty() {
            self.pending.push(self.small.split().freeze());
        }
    }

    fn flush(&mut self) -> Result<()> {
        self.seal_small();
        if self.pending.is_empty() {
            return Ok(());
        }
        let r = write_all_vectored(&mut self.file, &self.pending);
        self.pending.clear();
        self.pending_len = 0;
        let n = r.map_err(|e| Error::io(&self.path, e))?;
        self.written += n as u64;
        if self.written - self.writeback_from >= WRITEBACK_STEP {
            start_writeback(
                &self.file,
                self.writeback_from,
                self.written - self.writeback_from,
            );
            self.writebacks += 1;
            self.writeback_from = self.written;
        }
        Ok(())
    }

    fn truncate(&mut self) -> Result<()> {
        self.pending.clear();
        self.small.clear();
        self.pending_len = 0;
        self.file.set_len(0).map_err(|e| Error::io(&self.path, e))?;
        self.len = 0;
        self.written = 0;
        self.writeback_from = 0;
        Ok(())
    }

    /// Feed the bytes already on disk to `check`.
    fn replay_into(&mut self, check: &mut Checker) -> Result<()> {
        let mut f = std::fs::File::open(&self.path).map_err(|e| Error::io(&self.path, e))?;
        let mut chunk = vec![0u8; WRITE_BUF];
        loop {
            let n = f.read(&mut chunk).map_err(|e| Error::io(&self.path, e))?;
            if n == 0 {
                return Ok(());
            }
            check.feed(&chunk[..n])?;
        }
    }
}

/// Write every byte of `bufs` in order with as few `writev` calls as the kernel allows.
fn write_all_vectored(file: &mut std::fs::File, bufs: &[Bytes]) -> std::io::Result<usize> {
    let mut slices: Vec<IoSlice<'_>> = bufs.iter().map(|b| IoSlice::new(b)).collect();
    let mut rest = &mut slices[..];
    let mut total = 0;
    while !rest.is_empty() {
        match file.write_vectored(rest) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                total += n;
                IoSlice::advance_slices(&mut rest, n);
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(total)
}

/// Ask the kernel to start writing `len` bytes at `offset` of `file` to disk, without waiting
/// (Linux `sync_file_range(SYNC_FILE_RANGE_WRITE)`). Only a head start for the fsync that
/// follows the download, which alone makes the file durable: a failure here is ignored (the
/// fsync reports any I/O error).
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn start_writeback(file: &std::fs::File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd as _;
    let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
        return;
    };
    // SAFETY: a plain syscall on a file descriptor that `file` keeps open; no memory is passed.
    let _ = unsafe {
        libc::sync_file_range(file.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE)
    };
}

/// Elsewhere the fsync after the download writes everything.
#[cfg(not(target_os = "linux"))]
fn start_writeback(_file: &std::fs::File, _offset: u64, _len: u64) {}

/// Checks NDJSON lines as they stream: each is JSON with the expected `resourceType`, no
/// longer than the cap. Also notes whether the bytes are already clean NDJSON.
struct Checker {
    path: PathBuf,
    expected: Option<String>,
    max_line: usize,
    item: ItemType,
    /// A line not yet complete.
    carry: Vec<u8>,
    line_no: u64,
    resources: u64,
    /// No CR, blank line or surrounding white space so far.
    clean: bool,
    /// The body turned out to be gzip (no `Content-Encoding`): checked after the download.
    gzip: Option<bool>,
    /// The JSON walker's buffer for unescaped strings.
    scratch: String,
}

impl Checker {
    fn new(path: &Path, expected: Option<String>, max_line: usize, item: ItemType) -> Self {
        Self {
            path: path.to_owned(),
            expected,
            max_line,
            item,
            carry: Vec::new(),
            line_no: 0,
            resources: 0,
            clean: true,
            gzip: None,
            scratch: String::new(),
        }
    }

    fn reset(&mut self) {
        self.carry.clear();
        self.line_no = 0;
        self.resources = 0;
        self.clean = true;
        self.gzip = None;
    }

    fn feed(&mut self, mut data: &[u8]) -> Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        if self.gzip.is_none() {
            // Sniff gzip whatever Content-Encoding said: some servers gzip without saying so.
            if self.carry.is_empty() && data.len() < 2 {
                self.carry.extend_from_slice(data);
                return Ok(());
            }
            let first = if self.carry.is_empty() {
                data[0]
            } else {
                self.carry[0]
            };
            let second = if self.carry.is_empty() {
                data[1]
            } else {
                data[0]
            };
            self.gzip = Some([first, second] == [0x1f, 0x8b]);
        }
        if self.gzip == Some(true) {
            self.carry.clear();
            return Ok(());
        }
        if !self.carry.is_empty() {
            let Some(nl) = memchr::memchr(b'\n', data) else {
                self.carry.extend_from_slice(data);
                return self.check_carry_length();
            };
            self.carry.extend_from_slice(&data[..=nl]);
            data = &data[nl + 1..];
            let line = std::mem::take(&mut self.carry);
            let r = self.line(&line);
            self.carry = line;
            self.carry.clear();
            r?;
        }
        let mut start = 0;
        for nl in memchr::memchr_iter(b'\n', data) {
            self.line(&data[start..=nl])?;
            start = nl + 1;
        }
        self.carry.extend_from_slice(&data[start..]);
        self.check_carry_length()
    }

    fn check_carry_length(&self) -> Result<()> {
        if self.carry.len() > self.max_line + 1 {
            return Err(self.content(
                self.line_no + 1,
                format!(
                    "line longer than {} bytes (raise --max-line-bytes)",
                    self.max_line
                ),
            ));
        }
        Ok(())
    }

    /// The end of the body: the last line may lack its LF. Returns whether it did.
    fn finish(&mut self) -> Result<bool> {
        if self.gzip == Some(true) || self.carry.is_empty() {
            return Ok(false);
        }
        let line = std::mem::take(&mut self.carry);
        self.line(&line)?;
        Ok(!line.trim_ascii().is_empty())
    }

    fn content(&self, line: u64, reason: String) -> Error {
        Error::Content {
            path: self.path.clone(),
            line,
            reason,
        }
    }

    /// One line, with its LF if it has one.
    fn line(&mut self, raw: &[u8]) -> Result<()> {
        self.line_no += 1;
        let body = raw.strip_suffix(b"\n").unwrap_or(raw);
        if body.len() > self.max_line {
            return Err(self.content(
                self.line_no,
                format!(
                    "line longer than {} bytes (raise --max-line-bytes)",
                    self.max_line
                ),
            ));
        }
        let line = body.trim_ascii();
        if line.len() != body.len() {
            self.clean = false;
        }
        if line.is_empty() {
            self.clean = false;
            return Ok(());
        }
        check_line(
            line,
            self.expected.as_deref(),
            self.item,
            self.line_no,
            &self.path,
            &mut self.scratch,
        )?;
        self.resources += 1;
        Ok(())
    }
}

/// Verify the end of the file and the count, make it durable and give it its final name.
/// Returns the resources and, when an error/deleted file's count disagrees, the manifest's
/// count. Nothing temporary is left behind on any error.
fn finish(
    mut out: PartFile,
    mut check: Checker,
    part: &Path,
    final_path: &Path,
    rule: CountRule,
) -> Result<(u64, Option<u64>)> {
    let missing_lf = check.finish()?;
    let (count, enforce) = match rule {
        CountRule::Enforce(c) => (c, true),
        CountRule::Warn(c) => (c, false),
    };
    let mismatch = |resources: u64| -> Result<Option<u64>> {
        match count {
            Some(c) if c != resources && enforce => Err(Error::Content {
                path: final_path.to_owned(),
                line: 0,
                reason: format!("the manifest count is {c} but the file has {resources} resources"),
            }),
            Some(c) if c != resources => Ok(Some(c)),
            _ => Ok(None),
        }
    };
    if check.gzip == Some(true) || !check.clean {
        // Rewrite the normalised lines (decompressing gzip) to `.tmp`, then publish that.
        out.flush()?;
        drop(out);
        let tmp = PathBuf::from(format!("{}.tmp", final_path.display()));
        let rewritten = rewrite(part, &tmp, final_path, &check).and_then(|resources| {
            let note = mismatch(resources)?;
            durable::publish(&tmp, final_path)?;
            Ok((resources, note))
        });
        if rewritten.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        let done = rewritten?;
        let _ = std::fs::remove_file(part);
        return Ok(done);
    }
    let note = mismatch(check.resources)?;
    if missing_lf {
        out.write(Bytes::from_static(b"\n"))?;
    }
    out.flush()?;
    out.file.sync_all().map_err(|e| Error::io(part, e))?;
    drop(out);
    durable::publish(part, final_path)?;
    Ok((check.resources, note))
}

/// Write the normalised NDJSON of `part` (gunzipped when it is gzip) to `tmp`, checking every
/// line, and fsync it. Returns the number of resources.
fn rewrite(part: &Path, tmp: &Path, final_path: &Path, check: &Checker) -> Result<u64> {
    let raw = std::fs::File::open(part).map_err(|e| Error::io(part, e))?;
    let reader: Box<dyn Read> = if check.gzip == Some(true) {
        Box::new(flate2::read::MultiGzDecoder::new(BufReader::new(raw)))
    } else {
        Box::new(raw)
    };
    let mut reader = BufReader::with_capacity(256 * 1024, reader);
    let file = std::fs::File::create(tmp).map_err(|e| Error::io(tmp, e))?;
    let mut out = BufWriter::with_capacity(WRITE_BUF, file);
    let max_line = check.max_line;
    let content = |line: u64, reason: String| Error::Content {
        path: final_path.to_owned(),
        line,
        reason,
    };
    let mut buf = Vec::new();
    let mut scratch = String::new();
    let mut line_no = 0u64;
    let mut resources = 0u64;
    loop {
        buf.clear();
        let read = reader
            .by_ref()
            .take(max_line as u64 + 2)
            .read_until(b'\n', &mut buf)
            .map_err(|e| content(line_no + 1, format!("reading (bad gzip?): {e}")))?;
        if read == 0 {
            break;
        }
        line_no += 1;
        if buf.last() != Some(&b'\n') && buf.len() > max_line {
            return Err(content(
                line_no,
                format!("line longer than {max_line} bytes (raise --max-line-bytes)"),
            ));
        }
        let line = buf.trim_ascii();
        if line.is_empty() {
            continue;
        }
        check_line(
            line,
            check.expected.as_deref(),
            check.item,
            line_no,
            final_path,
            &mut scratch,
        )?;
        out.write_all(line).map_err(|e| Error::io(tmp, e))?;
        out.write_all(b"\n").map_err(|e| Error::io(tmp, e))?;
        resources += 1;
    }
    let file = out
        .into_inner()
        .map_err(|e| Error::io(tmp, e.into_error()))?;
    file.sync_all().map_err(|e| Error::io(tmp, e))?;
    Ok(resources)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checker() -> Checker {
        Checker::new(
            Path::new("x"),
            Some("Patient".into()),
            1000,
            ItemType::Output,
        )
    }

    #[test]
    fn lines_split_across_chunks_are_checked_once() {
        let text = b"{\"resourceType\":\"Patient\",\"id\":\"a\"}\n{\"resourceType\":\"Patient\",\"id\":\"b\"}\n";
        for cut in 0..text.len() {
            let mut c = checker();
            c.feed(&text[..cut]).unwrap();
            c.feed(&text[cut..]).unwrap();
            assert!(!c.finish().unwrap());
            assert_eq!(c.resources, 2, "cut at {cut}");
            assert!(c.clean);
        }
    }

    #[test]
    fn crlf_and_missing_final_lf() {
        let mut c = checker();
        c.feed(b"{\"resourceType\":\"Patient\"}\r\n\r\n{\"resourceType\":\"Patient\"}")
            .unwrap();
        assert!(c.finish().unwrap());
        assert_eq!(c.resources, 2);
        assert!(!c.clean);
    }

    /// Large chunks are written from their own buffers and runs of small ones gathered: the
    /// file must hold every byte in the order received, after what a resumed `.part` held,
    /// and write-back must have been started along the way (not all left to the fsync).
    #[test]
    fn part_file_keeps_the_byte_order_and_starts_writeback_while_streaming() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.part");
        std::fs::write(&path, b"held from before\n").unwrap();
        let mut want = b"held from before\n".to_vec();
        let mut out = PartFile::open(&path).unwrap();
        for i in 0..400usize {
            let n = if i % 3 == 0 { 64 * 1024 + i } else { 100 + i };
            let chunk: Vec<u8> = (0..n).map(|j| (i * 7 + j) as u8).collect();
            want.extend_from_slice(&chunk);
            out.write(Bytes::from(chunk)).unwrap();
        }
        out.flush().unwrap();
        assert_eq!(out.len, want.len() as u64);
        assert_eq!(std::fs::read(&path).unwrap(), want);
        // ~8.8 MB written: write-back started every 4 MiB.
        assert!(out.writebacks >= 2, "{} write-backs", out.writebacks);
    }

    #[test]
    fn an_operation_outcome_in_place_of_data_shows_its_text() {
        let mut c = checker();
        let err = c
            .feed(b"{\"resourceType\":\"OperationOutcome\",\"issue\":[{\"severity\":\"error\",\"code\":\"processing\",\"diagnostics\":\"disk on fire\"}]}\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("disk on fire"), "{err}");
        assert!(err.contains("line 1"), "{err}");
    }
}
