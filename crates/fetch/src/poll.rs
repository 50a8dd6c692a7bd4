//! The status-polling loop that turns 202s, 429/503s and transient errors into a manifest,
//! and the `X-Progress` percentage. How long each wait is comes from [`crate::retry`].

use std::time::Duration;

use tokio::time::Instant;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use url::Url;

use crate::ctx::RunContext;
use crate::error::{Error, Result};
use crate::event::Event;
use crate::http::{headers_json, is_transient, outcome_text};
use crate::redact::RedactedUrl;
use crate::redact::Secret;
use crate::retry::{Retries, send_with_token};

/// Poll `url` (a status URL or a manifest page) until it answers 200 with a manifest.
pub(crate) async fn until_manifest(ctx: &RunContext, url: &Url, started: Instant) -> Result<Value> {
    let timing = &ctx.opts.timing;
    let mut polls = 0u32;
    let mut retries = Retries::new(timing);
    loop {
        if let Some(limit) = timing.give_up_after
            && started.elapsed() > limit
        {
            return Err(Error::Timeout(limit));
        }
        let sent = send_with_token(
            &ctx.auth,
            true,
            &mut retries,
            |token: Option<Secret>| async move {
                ctx.http
                    .send(Method::GET, url, token.as_ref(), |r| {
                        r.header("accept", "application/fhir+json")
                    })
                    .await
            },
        )
        .await?;
        let resp = match sent {
            Ok(r) => r,
            Err(e) => {
                let Some(wait) = retries.next(None) else {
                    return Err(e);
                };
                let attempt = retries.failures();
                retrying(ctx, url, None, None, &e.to_string(), wait, attempt);
                tokio::time::sleep(wait).await;
                continue;
            }
        };
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp.text().await.map_err(|e| Error::http(url, e))?;
        let why = match status {
            StatusCode::OK => {
                let manifest: Value = serde_json::from_str(&body).map_err(|e| Error::Manifest {
                    url: url.clone().into(),
                    reason: format!("not JSON: {e}"),
                })?;
                return Ok(manifest);
            }
            StatusCode::ACCEPTED => {
                let x_progress = header(&headers, "x-progress").map(str::to_owned);
                let retry_after = header(&headers, "retry-after");
                ctx.log.emit(
                    "status_progress",
                    json!({"body": body_json(&body), "xProgress": x_progress, "retryAfter": retry_after}),
                );
                // Not a failure: the wait the server asks for, else a backoff per poll.
                let wait = timing.wait_for(&headers, polls);
                polls += 1;
                retries.reset();
                ctx.observe(Event::Progress {
                    percent: x_progress.as_deref().and_then(parse_percent),
                    x_progress,
                    wait,
                });
                tokio::time::sleep(wait).await;
                continue;
            }
            StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE => {
                Some(format!("HTTP {status}"))
            }
            s if s.is_server_error() && is_transient(&body) => {
                Some(format!("transient error: {}", outcome_text(&body)))
            }
            _ => None,
        };
        if let Some(why) = why
            && let Some(wait) = retries.next(Some(&headers))
        {
            let (code, attempt) = (Some(status.as_u16()), retries.failures());
            let retry_after = header(&headers, "retry-after");
            retrying(ctx, url, code, retry_after, &why, wait, attempt);
            tokio::time::sleep(wait).await;
            continue;
        }
        ctx.log.emit(
            "status_error",
            json!({"body": body_json(&body), "code": status.as_u16(), "responseHeaders": headers_json(&headers)}),
        );
        return Err(Error::Status {
            url: RedactedUrl::new(url.clone()),
            status: status.as_u16(),
            message: outcome_text(&body),
        });
    }
}

fn header<'a>(h: &'a reqwest::header::HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// A status poll is retried after `wait`: an event, and a `status_retry` line in the log.
fn retrying(
    ctx: &RunContext,
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
pub(crate) fn parse_percent(text: &str) -> Option<f64> {
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
    fn percent() {
        assert_eq!(parse_percent("50% complete"), Some(50.0));
        assert_eq!(parse_percent("“12.5%”"), Some(12.5));
        assert_eq!(parse_percent("in-progress"), None);
    }
}
