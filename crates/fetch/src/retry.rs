//! The one retry policy of every request the client sends (token, kick-off, status polls,
//! downloads, DELETE): how many times a failure is retried ([`Timing::retries`]), how long each
//! retry waits — the response's `Retry-After` (delta seconds, an HTTP-date, epoch seconds, or
//! epoch milliseconds from 1e12 on) clamped to `[min_wait, max_poll_wait]`, else exponential
//! backoff with jitter ([`Retries`]) — and a new access token after a 401
//! ([`send_with_token`]). Which answers count as retryable and what a retry logs stay with
//! each request, since they differ: a status poll retries a `transient` OperationOutcome and
//! logs `status_retry`, a download throttles on 429, resumes with `Range` and logs
//! `download_retry`.
//!
//! Written here rather than with a retry crate such as `backon`: its model (retry a closure
//! with a backoff iterator) has no place for a wait that the *response* names (`Retry-After`
//! in four forms), for the token renewal that does not count as a failure, or for a download
//! that keeps its state between attempts, so the glue would be longer than this module.

use std::time::{Duration, SystemTime};

use reqwest::Response;
use reqwest::header::HeaderMap;
use url::Url;

use crate::auth::Authenticator;
use crate::error::Result;
use crate::redact::Secret;

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
pub(crate) fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
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
    pub(crate) fn clamp(&self, d: Duration) -> Duration {
        d.clamp(self.min_wait, self.max_poll_wait.max(self.min_wait))
    }

    /// Exponential backoff for the `attempt`-th consecutive retry (0-based), with ±25% jitter,
    /// clamped.
    #[must_use]
    pub(crate) fn backoff(&self, attempt: u32) -> Duration {
        let base = self.min_wait.saturating_mul(1u32 << attempt.min(16));
        self.clamp(jitter(base))
    }

    /// The wait a response asks for: its `Retry-After` (clamped) or backoff.
    pub(crate) fn wait_for(&self, headers: &HeaderMap, attempt: u32) -> Duration {
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

/// The retries of one request: counts its failures against [`Timing::retries`] and its token
/// renewals after a 401, and says how long each retry waits.
#[derive(Debug)]
pub(crate) struct Retries<'t> {
    timing: &'t Timing,
    failures: u32,
    renewals: u32,
}

impl<'t> Retries<'t> {
    pub(crate) fn new(timing: &'t Timing) -> Self {
        Self {
            timing,
            failures: 0,
            renewals: 0,
        }
    }

    /// Failures retried so far: the attempt number a retry logs.
    pub(crate) fn failures(&self) -> u32 {
        self.failures
    }

    /// The request made progress (a status poll answered 202): later failures are counted,
    /// and backed off, from the start again.
    pub(crate) fn reset(&mut self) {
        self.failures = 0;
    }

    /// One more failure: the wait before trying again, or `None` once [`Timing::retries`]
    /// failures have been retried. With the failed answer's `headers`, its `Retry-After` is
    /// honoured (clamped); without one (or without an answer), the `n`-th retry backs off
    /// `min_wait · 2ⁿ⁻¹` (±25 %, clamped).
    pub(crate) fn next(&mut self, headers: Option<&HeaderMap>) -> Option<Duration> {
        if self.failures >= self.timing.retries {
            return None;
        }
        let wait = match headers {
            Some(h) => self.timing.wait_for(h, self.failures),
            None => self.timing.backoff(self.failures),
        };
        self.failures += 1;
        Some(wait)
    }
}

/// Sends a request with the current access token (`with_token`; else without one) and, when
/// the answer is a 401 and [`Authenticator::renew_after_401`] allows it (tokens refused
/// before any request could use them are counted in `retries`, at most 3 per request),
/// sends it again with a new token; any other answer marks the token as one the server
/// takes. The outer error
/// is getting a token (not worth retrying); the inner result is the request's own, whose
/// errors (a dropped connection) the caller may retry.
pub(crate) async fn send_with_token<F, Fut>(
    auth: &Authenticator,
    with_token: bool,
    retries: &mut Retries<'_>,
    send: F,
) -> Result<Result<Response>>
where
    F: Fn(Option<Secret>) -> Fut,
    Fut: Future<Output = Result<(Url, Response)>>,
{
    loop {
        let token = if with_token {
            auth.token().await?
        } else {
            None
        };
        let resp = match send(token.clone()).await {
            Ok((_, r)) => r,
            Err(e) => return Ok(Err(e)),
        };
        if resp.status() == reqwest::StatusCode::UNAUTHORIZED {
            if with_token
                && auth
                    .renew_after_401(token.as_ref(), &mut retries.renewals)
                    .await
            {
                continue;
            }
        } else if let Some(t) = &token {
            auth.accepted(t).await;
        }
        return Ok(Ok(resp));
    }
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

    /// The n-th retry waits min_wait·2ⁿ⁻¹ (±25 %) without a Retry-After, the Retry-After
    /// (clamped) with one, and there are `retries` of them; `reset` starts over.
    #[test]
    fn retries_count_and_back_off() {
        let t = Timing {
            min_wait: Duration::from_millis(100),
            max_poll_wait: Duration::from_secs(60),
            give_up_after: None,
            retries: 3,
        };
        let mut r = Retries::new(&t);
        let ms = |d: Duration| d.as_millis();
        let w1 = r.next(None).unwrap();
        assert!((75..125).contains(&ms(w1)), "{w1:?}");
        let w2 = r.next(None).unwrap();
        assert!((150..250).contains(&ms(w2)), "{w2:?}");
        let mut h = HeaderMap::new();
        h.insert("retry-after", "7".parse().unwrap());
        assert_eq!(r.next(Some(&h)), Some(Duration::from_secs(7)));
        assert_eq!(r.failures(), 3);
        assert_eq!(r.next(None), None);
        r.reset();
        assert!((75..125).contains(&ms(r.next(None).unwrap())));
    }
}
