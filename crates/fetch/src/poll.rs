//! Waiting: `Retry-After` parsing (seconds, HTTP-date, or an absolute epoch number), clamping
//! to [`Timing`]'s range, exponential backoff with jitter; and the status-polling loop that
//! turns 202s, 429/503s and transient errors into a manifest. Kick-off and downloads live elsewhere.

use std::time::{Duration, Instant, SystemTime};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use url::Url;

use crate::ctx::Ctx;
use crate::error::{Error, Result};
use crate::event::Event;
use crate::http::{headers_json, is_transient, outcome_text};
use crate::redact::RedactedUrl;

/// Waiting and retry policy. Tests use milliseconds.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Timing {
    /// Shortest wait between polls or retries.
    pub min_wait: Duration,
    /// Longest single wait: a `Retry-After` of hours is clamped to this.
    pub max_poll_wait: Duration,
    /// Give up when the export is not complete after this long (`--max-wait`).
    pub give_up_after: Option<Duration>,
    /// Retries per request for transient failures (5xx, 429, dropped connections).
    pub retries: u32,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            min_wait: Duration::from_secs(1),
            max_poll_wait: Duration::from_secs(120),
            give_up_after: None,
            retries: 8,
        }
    }
}

/// Values at or above this are read as absolute Unix times, not delays: the SMART reference
/// server sends the epoch second at which to retry on 429 (about 1.7e9), which as a delay is
/// 55 years.
const EPOCH_THRESHOLD: u64 = 1_000_000_000;
/// Values at or above this are epoch **milliseconds** (about 1.7e12 today; as epoch seconds
/// that is the year 55,000): older versions of the same server send `Date.now() + delay`.
const EPOCH_MS_THRESHOLD: u64 = 1_000_000_000_000;

/// Parse a `Retry-After` value: delta seconds, an absolute epoch number (seconds, or
/// milliseconds from 1e12 on), or an HTTP-date. Returns the delay from `now` (zero for times
/// in the past); `None` when unparseable.
#[must_use]
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let v = value.trim();
    if let Ok(n) = v.parse::<u64>() {
        if n >= EPOCH_MS_THRESHOLD {
            let at = SystemTime::UNIX_EPOCH + Duration::from_millis(n);
            return Some(at.duration_since(now).unwrap_or(Duration::ZERO));
        }
        if n >= EPOCH_THRESHOLD {
            let at = SystemTime::UNIX_EPOCH + Duration::from_secs(n);
            return Some(at.duration_since(now).unwrap_or(Duration::ZERO));
        }
        return Some(Duration::from_secs(n));
    }
    if let Ok(f) = v.parse::<f64>()
        && f.is_finite()
        && f >= 0.0
    {
        return Some(Duration::from_secs_f64(f.min(1e9)));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

impl Timing {
    with! {
        /// Shortest wait between polls or retries.
        with_min_wait: min_wait: Duration;
        /// Longest single wait.
        with_max_poll_wait: max_poll_wait: Duration;
        /// Give up when the export is not complete after this long.
        with_give_up_after: give_up_after: Option<Duration>;
        /// Retries per request for transient failures.
        with_retries: retries: u32;
    }

    /// Clamp a wait to `[min_wait, max_poll_wait]`.
    #[must_use]
    pub fn clamp(&self, d: Duration) -> Duration {
        d.clamp(self.min_wait, self.max_poll_wait.max(self.min_wait))
    }

    /// Exponential backoff for the `attempt`-th consecutive retry (0-based), with ±25% jitter,
    /// clamped.
    #[must_use]
    pub fn backoff(&self, attempt: u32) -> Duration {
        let base = self.min_wait.saturating_mul(1u32 << attempt.min(16));
        self.clamp(jitter(base))
    }

    /// The wait a response asks for: its `Retry-After` (clamped) or backoff.
    pub(crate) fn wait_for(&self, headers: &reqwest::header::HeaderMap, attempt: u32) -> Duration {
        headers
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, SystemTime::now()))
            .map_or_else(|| self.backoff(attempt), |d| self.clamp(d))
    }
}

/// Multiply by a factor in [0.75, 1.25) from a cheap random source (no crate needed: the
/// std hasher is randomly keyed per process, and the clock varies per call).
fn jitter(d: Duration) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    let r = (h.finish() % 1000) as f64 / 1000.0;
    d.mul_f64(0.75 + r * 0.5)
}

/// Poll `url` (a status URL or a manifest page) until it answers 200 with a manifest.
pub(crate) async fn until_manifest(ctx: &Ctx, url: &Url, started: Instant) -> Result<Value> {
    let mut attempt = 0u32;
    let mut failures = 0u32;
    let mut renewals = 0u32;
    loop {
        if let Some(limit) = ctx.opts.timing.give_up_after
            && started.elapsed() > limit
        {
            return Err(Error::Timeout(limit));
        }
        let token = ctx.auth.token().await?;
        let sent = ctx
            .http
            .send(Method::GET, url, token.as_ref(), |r| {
                r.header("accept", "application/fhir+json")
            })
            .await;
        let resp = match sent {
            Ok((_, r)) => r,
            Err(e) if failures < ctx.opts.timing.retries => {
                failures += 1;
                let wait = ctx.opts.timing.backoff(failures);
                retrying(ctx, url, None, None, &e.to_string(), wait, failures);
                tokio::time::sleep(wait).await;
                continue;
            }
            Err(e) => return Err(e),
        };
        let status = resp.status();
        if status == StatusCode::UNAUTHORIZED
            && ctx
                .auth
                .renew_after_401(token.as_ref(), &mut renewals)
                .await
        {
            continue;
        }
        let headers = resp.headers().clone();
        let body = resp.text().await.map_err(|e| Error::http(url, e))?;
        match status {
            StatusCode::OK => {
                let manifest: Value = serde_json::from_str(&body).map_err(|e| Error::Manifest {
                    url: url.clone().into(),
                    reason: format!("not JSON: {e}"),
                })?;
                return Ok(manifest);
            }
            StatusCode::ACCEPTED => {
                let x_progress = headers
                    .get("x-progress")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                let retry_after = headers
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                ctx.log.emit(
                    "status_progress",
                    json!({"body": body_json(&body), "xProgress": x_progress, "retryAfter": retry_after}),
                );
                let wait = ctx.opts.timing.wait_for(&headers, attempt);
                attempt += 1;
                failures = 0;
                ctx.observe(Event::Progress {
                    percent: x_progress.as_deref().and_then(parse_percent),
                    x_progress,
                    wait,
                });
                tokio::time::sleep(wait).await;
            }
            StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
                if failures < ctx.opts.timing.retries =>
            {
                failures += 1;
                let wait = ctx.opts.timing.wait_for(&headers, failures);
                retrying(
                    ctx,
                    url,
                    Some(status.as_u16()),
                    header(&headers, "retry-after"),
                    &format!("HTTP {status}"),
                    wait,
                    failures,
                );
                tokio::time::sleep(wait).await;
            }
            s if s.is_server_error()
                && is_transient(&body)
                && failures < ctx.opts.timing.retries =>
            {
                failures += 1;
                let wait = ctx.opts.timing.wait_for(&headers, failures);
                retrying(
                    ctx,
                    url,
                    Some(s.as_u16()),
                    header(&headers, "retry-after"),
                    &format!("transient error: {}", outcome_text(&body)),
                    wait,
                    failures,
                );
                tokio::time::sleep(wait).await;
            }
            s => {
                ctx.log.emit(
                    "status_error",
                    json!({"body": body_json(&body), "code": s.as_u16(), "responseHeaders": headers_json(&headers)}),
                );
                return Err(Error::Status {
                    url: RedactedUrl::new(url.clone()),
                    status: s.as_u16(),
                    message: outcome_text(&body),
                });
            }
        }
    }
}

fn header<'a>(h: &'a reqwest::header::HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// A status poll is retried after `wait`: an event, and a `status_retry` line in the log.
fn retrying(
    ctx: &Ctx,
    url: &Url,
    code: Option<u16>,
    retry_after: Option<&str>,
    why: &str,
    wait: Duration,
    attempt: u32,
) {
    ctx.log.emit(
        "status_retry",
        json!({"url": RedactedUrl::new(url.clone()).redacted(), "code": code,
               "retryAfter": retry_after, "message": why, "attempt": attempt,
               "waitMs": u64::try_from(wait.as_millis()).unwrap_or(u64::MAX)}),
    );
    ctx.observe(Event::Retrying {
        what: format!("status poll: {why}"),
        wait,
    });
}

/// A body as JSON when it is JSON, else as a string.
pub(crate) fn body_json(body: &str) -> Value {
    if body.trim().is_empty() {
        return Value::Null;
    }
    serde_json::from_str(body).unwrap_or_else(|_| Value::String(body.chars().take(2000).collect()))
}

/// The first number followed by `%` in an `X-Progress` text, e.g. "50% complete" → 50.
#[must_use]
pub fn parse_percent(text: &str) -> Option<f64> {
    let pct = text.find('%')?;
    let head = &text[..pct];
    // Curly quotes are multi-byte: step over the whole char.
    let start = head
        .char_indices()
        .rfind(|&(_, c)| !(c.is_ascii_digit() || c == '.'))
        .map_or(0, |(i, c)| i + c.len_utf8());
    head[start..].parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_forms() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_763_000_000);
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("1763000030", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(parse_retry_after("1000000000", now), Some(Duration::ZERO));
        // Epoch milliseconds (the SMART server's 429): 10 s ahead, not the year 55,000.
        assert_eq!(
            parse_retry_after("1763000010000", now),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            parse_retry_after("1762999990000", now),
            Some(Duration::ZERO)
        );
        let date = httpdate::fmt_http_date(now + Duration::from_secs(90));
        assert_eq!(parse_retry_after(&date, now), Some(Duration::from_secs(90)));
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[test]
    fn clamping_and_backoff() {
        let t = Timing {
            min_wait: Duration::from_millis(10),
            max_poll_wait: Duration::from_millis(100),
            give_up_after: None,
            retries: 3,
        };
        assert_eq!(
            t.clamp(Duration::from_secs(3600)),
            Duration::from_millis(100)
        );
        assert_eq!(t.clamp(Duration::ZERO), Duration::from_millis(10));
        for a in 0..20 {
            let b = t.backoff(a);
            assert!(b >= t.min_wait && b <= t.max_poll_wait);
        }
    }

    #[test]
    fn percent() {
        assert_eq!(parse_percent("50% complete"), Some(50.0));
        assert_eq!(parse_percent("“12.5%”"), Some(12.5));
        assert_eq!(parse_percent("in-progress"), None);
    }
}
