//! Downloading one manifest file: streamed to `{path}.part` (bounded memory, resumable with
//! `Range`), retried with backoff honouring `Retry-After`, the token sent only when required
//! and never across origins; then checked (gzip sniffed, resourceType, count, line cap) and
//! written under its final name. Which files to fetch and when is the orchestrator's job.

use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use reqwest::{Method, StatusCode};
use serde_json::json;
use tokio::io::AsyncWriteExt as _;
use url::Url;

use crate::error::{Error, Result};
use crate::http::{headers_json, outcome_text};
use crate::job::{FileState, part_path};
use crate::manifest::ItemType;
use crate::poll::body_json;
use crate::redact::RedactedUrl;
use crate::{Ctx, Event};

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

pub(crate) async fn download(ctx: &Ctx, file: &FileState) -> Result<Done, Failure> {
    let url = Url::parse(&file.url).map_err(|e| Error::Download {
        url: RedactedUrl::new(Url::parse("invalid:").expect("static")),
        reason: format!("bad URL in manifest: {e}"),
    })?;
    let shown = RedactedUrl::new(url.clone());
    let final_path = ctx.dir.join(&file.path);
    let part = part_path(&ctx.dir, &file.path);
    if let Some(parent) = final_path.parent() {
        tokio::fs::create_dir_all(parent)
            .await
            .map_err(|e| Error::io(parent, e))?;
    }
    ctx.log.emit(
        "download_request",
        json!({"fileUrl": shown.redacted(), "itemType": file.item.as_str(), "resourceType": file.resource_type}),
    );
    ctx.observe(Event::FileStarted {
        path: file.path.clone(),
        resource_type: file.resource_type.clone(),
    });
    let mut failures = 0u32;
    let mut renewals = 0u32;
    loop {
        let have = tokio::fs::metadata(&part).await.map_or(0, |m| m.len());
        let token = if file.requires_token {
            ctx.auth.token().await?
        } else {
            None
        };
        let sent = ctx
            .http
            .send(Method::GET, &url, token.as_ref(), |r| {
                // HAPI answers Binary URLs with XML unless asked for NDJSON.
                let r = r.header("accept", "application/fhir+ndjson");
                if have > 0 {
                    r.header("range", format!("bytes={have}-"))
                } else {
                    r
                }
            })
            .await;
        let resp = match sent {
            Ok((_, r)) => r,
            Err(e) => {
                if failures >= ctx.opts.timing.retries {
                    return Err(Failure::Failed(e));
                }
                let wait = ctx.opts.timing.backoff(failures);
                failures += 1;
                ctx.observe(Event::Retrying {
                    what: format!("{}: {e}", file.path),
                    wait,
                });
                tokio::time::sleep(wait).await;
                continue;
            }
        };
        let status = resp.status();
        if status == StatusCode::UNAUTHORIZED
            && file.requires_token
            && ctx
                .auth
                .renew_after_401(token.as_ref(), &mut renewals)
                .await
        {
            // The token expired mid-export: retry with a new one.
            continue;
        }
        let headers = resp.headers().clone();
        let append = match status {
            StatusCode::OK => false,
            StatusCode::PARTIAL_CONTENT => {
                let start = headers
                    .get("content-range")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("bytes "))
                    .and_then(|v| v.split('-').next())
                    .and_then(|v| v.parse::<u64>().ok());
                if start != Some(have) {
                    // Not the range we asked for: start over.
                    let _ = tokio::fs::remove_file(&part).await;
                    continue;
                }
                true
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
                    return Err(Failure::Expired(format!(
                        "HTTP {s}: {}",
                        outcome_text(&text)
                    )));
                }
                if s == StatusCode::TOO_MANY_REQUESTS {
                    ctx.throttle();
                }
                let retryable = s == StatusCode::TOO_MANY_REQUESTS || s.is_server_error();
                if retryable && failures < ctx.opts.timing.retries {
                    // Retry-After on 429/503 is honoured (clamped to the configured range).
                    let wait = ctx.opts.timing.wait_for(&headers, failures);
                    failures += 1;
                    ctx.observe(Event::Retrying {
                        what: format!("{}: HTTP {s}", file.path),
                        wait,
                    });
                    tokio::time::sleep(wait).await;
                    continue;
                }
                return Err(Failure::Failed(Error::Download {
                    url: shown,
                    reason: format!("HTTP {s}: {}", outcome_text(&text)),
                }));
            }
        };
        let mut out = tokio::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .append(append)
            .truncate(!append)
            .open(&part)
            .await
            .map_err(|e| Error::io(&part, e))?;
        let mut resp = resp;
        let streamed: Result<(), Error> = async {
            while let Some(chunk) = resp.chunk().await.map_err(|e| Error::http(&url, e))? {
                out.write_all(&chunk)
                    .await
                    .map_err(|e| Error::io(&part, e))?;
                ctx.observe(Event::Bytes(chunk.len() as u64));
            }
            Ok(())
        }
        .await;
        // tokio writes in the background: flush on every path so the next attempt's Range
        // offset counts every byte already received.
        out.flush().await.map_err(|e| Error::io(&part, e))?;
        drop(out);
        match streamed {
            Ok(()) => break,
            Err(e @ Error::Io { .. }) => return Err(Failure::Failed(e)),
            Err(e) => {
                // A dropped connection: keep the bytes and continue with a Range request.
                if failures >= ctx.opts.timing.retries {
                    return Err(Failure::Failed(e));
                }
                let wait = ctx.opts.timing.backoff(failures);
                failures += 1;
                ctx.observe(Event::Retrying {
                    what: format!("{}: {e}", file.path),
                    wait,
                });
                tokio::time::sleep(wait).await;
            }
        }
    }
    let bytes = tokio::fs::metadata(&part).await.map_or(0, |m| m.len());
    let expected = match file.item {
        ItemType::Output => Some(file.resource_type.clone()).filter(|t| !t.is_empty()),
        ItemType::Error => Some("OperationOutcome".to_owned()),
        ItemType::Deleted => Some("Bundle".to_owned()),
    };
    let count = file.count;
    let max_line = ctx.opts.max_line_bytes;
    let (p2, f2) = (part.clone(), final_path.clone());
    let resources = tokio::task::spawn_blocking(move || {
        finalize(&p2, &f2, expected.as_deref(), count, max_line)
    })
    .await
    .map_err(|e| Error::Job(format!("finishing {}: {e}", final_path.display())))??;
    ctx.log.emit(
        "download_complete",
        json!({"fileUrl": shown.redacted(), "resourceCount": resources, "fileSize": bytes}),
    );
    Ok(Done { resources, bytes })
}

#[derive(serde::Deserialize)]
struct Head {
    #[serde(rename = "resourceType")]
    resource_type: Option<String>,
}

/// Check the downloaded bytes and write the normalised NDJSON (LF line ends, no blank lines)
/// under a temporary name, then rename it into place. Returns the number of resources.
fn finalize(
    part: &Path,
    final_path: &Path,
    expected: Option<&str>,
    count: Option<u64>,
    max_line: usize,
) -> Result<u64> {
    let mut raw = std::fs::File::open(part).map_err(|e| Error::io(part, e))?;
    let mut magic = [0u8; 2];
    let n = raw.read(&mut magic).map_err(|e| Error::io(part, e))?;
    let raw = std::fs::File::open(part).map_err(|e| Error::io(part, e))?;
    // Sniff gzip whatever Content-Encoding said: some servers gzip without saying so.
    let reader: Box<dyn Read> = if n == 2 && magic == [0x1f, 0x8b] {
        Box::new(flate2::read::MultiGzDecoder::new(BufReader::new(raw)))
    } else {
        Box::new(raw)
    };
    let mut reader = BufReader::with_capacity(256 * 1024, reader);
    let tmp = PathBuf::from(format!("{}.tmp", final_path.display()));
    let mut out = BufWriter::with_capacity(
        256 * 1024,
        std::fs::File::create(&tmp).map_err(|e| Error::io(&tmp, e))?,
    );
    let content = |line: u64, reason: String| Error::Content {
        path: final_path.to_owned(),
        line,
        reason,
    };
    let mut buf = Vec::new();
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
            let _ = std::fs::remove_file(&tmp);
            return Err(content(
                line_no,
                format!("line longer than {max_line} bytes (raise --max-line-bytes)"),
            ));
        }
        let line = buf.trim_ascii();
        if line.is_empty() {
            continue;
        }
        let head: Head =
            serde_json::from_slice(line).map_err(|e| content(line_no, format!("not JSON: {e}")))?;
        if let Some(want) = expected
            && head.resource_type.as_deref() != Some(want)
        {
            let _ = std::fs::remove_file(&tmp);
            return Err(content(
                line_no,
                format!(
                    "resourceType {:?} where the manifest says {want}",
                    head.resource_type.unwrap_or_default()
                ),
            ));
        }
        out.write_all(line).map_err(|e| Error::io(&tmp, e))?;
        out.write_all(b"\n").map_err(|e| Error::io(&tmp, e))?;
        resources += 1;
    }
    out.flush().map_err(|e| Error::io(&tmp, e))?;
    drop(out);
    if let Some(c) = count
        && c != resources
    {
        let _ = std::fs::remove_file(&tmp);
        return Err(content(
            0,
            format!("the manifest count is {c} but the file has {resources} resources"),
        ));
    }
    std::fs::rename(&tmp, final_path).map_err(|e| Error::io(final_path, e))?;
    let _ = std::fs::remove_file(part);
    Ok(resources)
}
