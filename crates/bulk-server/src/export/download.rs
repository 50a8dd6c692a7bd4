//! Serving a job's files (`GET /files/{job}/{idx}`) with the download faults applied, and
//! counting the bodies being sent at once ([`OpenBodies`]).

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::{AppState, fhir_error, outcome, too_many};
use crate::{Gzip, Shared, auth};

/// `GET /files/{job}/{idx}`: one file, with `Range`, gzip (as [`Config::gzip`](crate::Config)
/// says), the token check when the manifest requires one, and the download faults: a
/// redirect to the other host, expired links, a 429 first, a connection dropped mid-file,
/// slow chunks, a body held until several are open at once, and SMART's `fileError`.
#[allow(clippy::too_many_lines)]
pub(super) async fn download(
    State(shared): AppState,
    Path((job_id, idx)): Path<(String, usize)>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let faults = &shared.config.faults;
    let host = headers
        .get("host")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let on_other_host = shared.other_origin.ends_with(host);
    if !on_other_host && faults.redirect_to_other_host {
        let q = query
            .as_deref()
            .map_or_else(String::new, |q| format!("?{q}"));
        let to = format!("{}/files/{job_id}/{idx}{q}", shared.other_origin);
        return (StatusCode::TEMPORARY_REDIRECT, [("location", to)]).into_response();
    }
    // The object store behind a redirect uses signed URLs, not the FHIR server's tokens.
    let needs_token = !on_other_host && shared.config.requires_access_token;
    if needs_token && let Err(r) = auth::check_bearer(&shared, &headers) {
        return r;
    }
    let generation: u32 = query
        .as_deref()
        .and_then(|q| url::form_urlencoded::parse(q.as_bytes()).find(|(k, _)| k == "g"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let range_start: Option<usize> = headers
        .get("range")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("bytes="))
        .and_then(|v| v.strip_suffix('-'))
        .and_then(|v| v.parse().ok());
    let accepts_gzip = headers
        .get("accept-encoding")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|e| e.trim().starts_with("gzip")));
    let (body, gzipped, drop_half) = {
        let mut st = shared.lock();
        let Some(job) = st.jobs.get(&job_id) else {
            return fhir_error(StatusCode::NOT_FOUND, "error", "not-found", "no such file");
        };
        if job.deleted {
            return fhir_error(
                StatusCode::NOT_FOUND,
                "error",
                "not-found",
                "export was deleted",
            );
        }
        let Some(file) = job.files.get(idx) else {
            return fhir_error(StatusCode::NOT_FOUND, "error", "not-found", "no such file");
        };
        if faults.expire_links_once && generation == 0 {
            return fhir_error(
                StatusCode::GONE,
                "error",
                "expired",
                "this link has expired",
            );
        }
        if let Some(message) = &file.file_error {
            // SMART's fileError: a 200 whose body is an OperationOutcome, not the resources.
            let text = outcome("error", "processing", message) + "\n";
            return (
                StatusCode::OK,
                [("content-type", "application/fhir+ndjson")],
                text,
            )
                .into_response();
        }
        let (body, gzipped) = match (shared.config.gzip, &file.gzip) {
            (Gzip::WithHeader | Gzip::Silent, Some(gz)) => (gz.clone(), true),
            (Gzip::Negotiated, Some(gz)) if accepts_gzip => (gz.clone(), true),
            _ => (file.plain.clone(), false),
        };
        let a = st.attempts.entry((job_id.clone(), idx)).or_default();
        a.requests += 1;
        if a.requests == 1
            && let Some(r) = &faults.rate_limit_downloads
        {
            return too_many(r);
        }
        let drop_half = faults.drop_mid_file && range_start.is_none() && !a.dropped;
        if drop_half {
            a.dropped = true;
        }
        (body, gzipped, drop_half)
    };
    let total = body.len();
    let start = range_start.unwrap_or(0).min(total);
    let status = if range_start.is_some() {
        StatusCode::PARTIAL_CONTENT
    } else {
        StatusCode::OK
    };
    let cut = if drop_half { total / 2 } else { total };
    let slow = faults.slow_chunks;
    let per_line = shared.config.chunk_per_line && !gzipped;
    let chunks: Vec<Bytes> = if per_line {
        let part = body.slice(start..cut);
        let mut out = Vec::new();
        let mut from = 0;
        while from < part.len() {
            let end = part[from..]
                .iter()
                .position(|&b| b == b'\n')
                .map_or(part.len(), |i| from + i + 1);
            out.push(part.slice(from..end));
            from = end;
        }
        out
    } else {
        let size = if slow.is_some() { 1024 } else { 64 * 1024 };
        (start..cut)
            .step_by(size)
            .map(|a| body.slice(a..(a + size).min(cut)))
            .collect()
    };
    // Counted open from here until the stream is dropped (after its last chunk).
    let open = OpenBodies::open(&shared);
    let together = faults.downloads_together;
    let stream = futures_util::stream::unfold(
        (chunks.into_iter(), drop_half, false, open),
        move |(mut it, drop_half, done, open)| async move {
            if done {
                return None;
            }
            if together > 0 {
                open.wait_for(together).await;
            }
            if let Some(c) = it.next() {
                if let Some(d) = slow {
                    tokio::time::sleep(d).await;
                }
                Some((Ok::<Bytes, std::io::Error>(c), (it, drop_half, false, open)))
            } else if drop_half {
                // Let hyper flush what was sent, so the client really holds half a file.
                tokio::time::sleep(Duration::from_millis(30)).await;
                // An error mid-body makes hyper abort the connection: the client sees a
                // truncated response, as with a proxy timeout.
                Some((
                    Err(std::io::Error::other("simulated dropped connection")),
                    (it, drop_half, true, open),
                ))
            } else {
                None
            }
        },
    );
    let mut resp = Response::new(Body::from_stream(stream));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        "content-type",
        HeaderValue::from_static("application/fhir+ndjson"),
    );
    h.insert("accept-ranges", HeaderValue::from_static("bytes"));
    if !per_line {
        h.insert("content-length", HeaderValue::from(total - start));
    }
    if range_start.is_some()
        && let Ok(v) = HeaderValue::from_str(&format!(
            "bytes {start}-{}/{total}",
            total.saturating_sub(1)
        ))
    {
        h.insert("content-range", v);
    }
    if gzipped && shared.config.gzip != Gzip::Silent {
        h.insert("content-encoding", HeaderValue::from_static("gzip"));
    }
    resp
}

/// File bodies being sent right now, and the most there ever were at once: tests count
/// parallel downloads with it instead of timing them.
#[derive(Debug, Default)]
pub(crate) struct OpenBodies {
    /// (open now, most at once, the [`Faults::downloads_together`](crate::Faults) gate has opened).
    counts: std::sync::Mutex<(usize, usize, bool)>,
    changed: tokio::sync::Notify,
}

/// One open body; dropping it closes it.
pub(crate) struct OpenBody(Arc<Shared>);

impl OpenBodies {
    fn open(shared: &Arc<Shared>) -> OpenBody {
        let mut c = shared.bodies.lock();
        c.0 += 1;
        c.1 = c.1.max(c.0);
        drop(c);
        shared.bodies.changed.notify_waiters();
        OpenBody(Arc::clone(shared))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (usize, usize, bool)> {
        self.counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The most bodies that were open at once.
    pub(crate) fn most(&self) -> usize {
        self.lock().1
    }
}

impl OpenBody {
    /// Holds the body until `n` bodies are open at once (a gate that opens once, for every
    /// body, and stays open). A client that never has `n` downloads running is given up on
    /// after 10 s, so a test fails on [`OpenBodies::most`] instead of hanging.
    async fn wait_for(&self, n: usize) {
        let bodies = &self.0.bodies;
        let wait = async {
            loop {
                let changed = bodies.changed.notified();
                {
                    let mut c = bodies.lock();
                    if c.2 || c.0 >= n {
                        c.2 = true;
                        break;
                    }
                }
                changed.await;
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(10), wait).await;
        bodies.lock().2 = true;
        bodies.changed.notify_waiters();
    }
}

impl Drop for OpenBody {
    fn drop(&mut self) {
        self.0.bodies.lock().0 -= 1;
    }
}
