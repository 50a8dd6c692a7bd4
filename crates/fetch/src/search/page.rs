//! One search page: fetched with `fetch`'s retry policy, then cut into entries whose resources
//! keep the server's bytes (compacted onto one line, key order and number text unchanged, as
//! `flatfhir convert` reads Bundles).

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde_json::json;
use serde_json::value::RawValue;
use url::Url;

use super::{Crawl, Error, Result, SearchEvent};
use crate::RedactedUrl;
use crate::http::outcome_text;
use crate::redact::Secret;
use crate::retry::{Retries, send_with_token};

/// GET `url` as FHIR JSON, under the client's one retry policy ([`crate::retry`]): 429, 5xx,
/// a connection that fails or drops mid-body are retried (`Retry-After` honoured, else
/// backoff; each counted against `Timing::retries`); a 401 gets a new token; any other status
/// is [`Error::Page`].
pub(crate) async fn get(crawl: &Crawl, url: &Url) -> Result<String> {
    let mut retries = Retries::new(&crawl.timing);
    loop {
        let sent = send_with_token(
            &crawl.auth,
            true,
            &mut retries,
            |token: Option<Secret>| async move {
                crawl
                    .http
                    .send(Method::GET, url, token.as_ref(), |r| {
                        let r = r.header("accept", "application/fhir+json");
                        if crawl.lenient {
                            r.header("prefer", "handling=lenient")
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
                    return Err(e.into());
                };
                retrying(crawl, url, None, None, &e.to_string(), wait, &retries).await;
                continue;
            }
        };
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = match resp.text().await {
            Ok(b) => b,
            Err(e) => {
                let e = crate::Error::http(url, e);
                let Some(wait) = retries.next(None) else {
                    return Err(e.into());
                };
                let code = Some(status.as_u16());
                retrying(crawl, url, code, None, &e.to_string(), wait, &retries).await;
                continue;
            }
        };
        if status.is_success() {
            return Ok(body);
        }
        let retryable = status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error();
        if retryable && let Some(wait) = retries.next(Some(&headers)) {
            let retry_after = headers
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok());
            let why = format!("HTTP {status}: {}", outcome_text(&body));
            let code = Some(status.as_u16());
            retrying(crawl, url, code, retry_after, &why, wait, &retries).await;
            continue;
        }
        return Err(Error::Page {
            url: RedactedUrl::new(url.clone()),
            status: status.as_u16(),
            message: outcome_text(&body),
        });
    }
}

/// [`get`] and parse as JSON.
pub(crate) async fn get_json(crawl: &Crawl, url: &Url) -> Result<serde_json::Value> {
    let body = get(crawl, url).await?;
    serde_json::from_str(&body).map_err(|e| Error::Bundle {
        url: RedactedUrl::new(url.clone()),
        reason: format!("not JSON: {e}"),
    })
}

/// A page request is retried after `wait`: a `page_retry` line in the log and an event, then
/// the wait.
async fn retrying(
    crawl: &Crawl,
    url: &Url,
    code: Option<u16>,
    retry_after: Option<&str>,
    why: &str,
    wait: Duration,
    retries: &Retries<'_>,
) {
    let why = crate::scrub(why).into_owned();
    crawl.log.emit(
        "page_retry",
        json!({"url": RedactedUrl::new(url.clone()).redacted(), "code": code,
               "retryAfter": retry_after, "message": why, "attempt": retries.failures(),
               "waitMs": u64::try_from(wait.as_millis()).unwrap_or(u64::MAX)}),
    );
    crawl.observe(SearchEvent::Retrying {
        what: format!("search page: {why}"),
        wait,
    });
    tokio::time::sleep(wait).await;
}

#[derive(Deserialize)]
struct Bundle<'a> {
    #[serde(rename = "resourceType")]
    resource_type: Option<String>,
    #[serde(rename = "type")]
    bundle_type: Option<String>,
    #[serde(default)]
    link: Vec<Link>,
    #[serde(default, borrow)]
    entry: Vec<Entry<'a>>,
}

#[derive(Deserialize)]
struct Link {
    relation: Option<String>,
    url: Option<String>,
}

#[derive(Deserialize)]
struct Entry<'a> {
    #[serde(borrow)]
    resource: Option<&'a RawValue>,
    search: Option<SearchInfo>,
}

#[derive(Deserialize)]
struct SearchInfo {
    mode: Option<String>,
}

#[derive(Deserialize)]
struct Head {
    #[serde(rename = "resourceType")]
    resource_type: Option<String>,
    id: Option<String>,
}

/// One entry's resource.
pub(crate) struct PageEntry {
    pub(crate) resource_type: String,
    pub(crate) id: Option<String>,
    /// One line of JSON.
    pub(crate) text: String,
    pub(crate) include: bool,
    pub(crate) outcome: bool,
}

/// A parsed page.
pub(crate) struct Page {
    pub(crate) entries: Vec<PageEntry>,
    pub(crate) next: Option<String>,
    /// Entries in the Bundle.
    pub(crate) total_entries: usize,
    /// Matches were cut at the resource cap (the rest of the page is for a later run).
    pub(crate) cut: bool,
    /// Entries that could not be used, said once each.
    pub(crate) warnings: Vec<String>,
}

/// Cut a searchset Bundle into entries. At most `match_budget` `match` entries are kept
/// (the rest of the page is then marked `cut`); `include` and `outcome` entries are all kept.
pub(crate) fn parse(body: &str, url: &Url, match_budget: Option<u64>) -> Result<Page> {
    let bad = |reason: String| Error::Bundle {
        url: RedactedUrl::new(url.clone()),
        reason,
    };
    let b: Bundle<'_> = serde_json::from_str(body).map_err(|e| {
        if serde_json::from_str::<serde_json::Value>(body).is_ok() {
            bad(format!("not a FHIR Bundle: {e}"))
        } else {
            bad(format!("not JSON: {e}"))
        }
    })?;
    if b.resource_type.as_deref() != Some("Bundle") {
        let what = b.resource_type.as_deref().unwrap_or("no resourceType");
        let text = if what == "OperationOutcome" {
            format!(": {}", outcome_text(body))
        } else {
            String::new()
        };
        return Err(bad(format!(
            "expected a searchset Bundle, got {what}{text}"
        )));
    }
    let mut warnings = Vec::new();
    if b.bundle_type.as_deref() != Some("searchset") {
        warnings.push(format!(
            "the Bundle's type is {}, not searchset",
            b.bundle_type.as_deref().unwrap_or("missing")
        ));
    }
    let next = b
        .link
        .iter()
        .find(|l| l.relation.as_deref() == Some("next"))
        .and_then(|l| l.url.clone());
    let total_entries = b.entry.len();
    let mut entries = Vec::with_capacity(total_entries);
    let mut budget = match_budget;
    let mut cut = false;
    for (i, e) in b.entry.into_iter().enumerate() {
        let mode = e.search.and_then(|s| s.mode);
        let Some(raw) = e.resource else {
            warnings.push(format!("entry {i} has no resource; left out"));
            continue;
        };
        let head: Head = serde_json::from_str(raw.get()).unwrap_or(Head {
            resource_type: None,
            id: None,
        });
        let Some(rt) = head.resource_type else {
            warnings.push(format!(
                "entry {i}'s resource has no resourceType; left out"
            ));
            continue;
        };
        let outcome = mode.as_deref() == Some("outcome");
        let include = mode.as_deref() == Some("include");
        if !outcome && !include {
            match &mut budget {
                Some(0) => {
                    cut = true;
                    continue;
                }
                Some(n) => *n -= 1,
                None => {}
            }
        }
        entries.push(PageEntry {
            resource_type: rt,
            id: head.id,
            text: compact(raw.get()),
            include,
            outcome,
        });
    }
    Ok(Page {
        entries,
        next,
        total_entries,
        cut,
        warnings,
    })
}

/// JSON text on one line: whitespace outside strings dropped, every other byte kept.
fn compact(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let (mut in_str, mut escaped) = (false, false);
    for c in raw.chars() {
        if in_str {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_str = false;
            }
        } else if !matches!(c, ' ' | '\t' | '\n' | '\r') {
            if c == '"' {
                in_str = true;
            }
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compact_keeps_strings_numbers_and_order() {
        let raw = "{\n  \"z\": \"a b\\\" {c}\",\n  \"a\": 1.50e3 ,\"m\":[ 1, 2 ]}";
        assert_eq!(
            compact(raw),
            "{\"z\":\"a b\\\" {c}\",\"a\":1.50e3,\"m\":[1,2]}"
        );
    }

    #[test]
    fn modes_budget_and_refusals() {
        let url: Url = "http://h/fhir/Observation".parse().unwrap();
        let body = r#"{"resourceType":"Bundle","type":"searchset","link":[{"relation":"next","url":"x?p=2"}],
          "entry":[{"resource":{"resourceType":"OperationOutcome","issue":[]},"search":{"mode":"outcome"}},
                   {"resource":{"resourceType":"Observation","id":"1"},"search":{"mode":"match"}},
                   {"resource":{"resourceType":"Observation","id":"2"}},
                   {"resource":{"resourceType":"Patient","id":"p"},"search":{"mode":"include"}},
                   {"search":{"mode":"match"}}]}"#;
        let p = parse(body, &url, Some(1)).unwrap();
        assert_eq!(p.next.as_deref(), Some("x?p=2"));
        assert!(p.cut);
        let kinds: Vec<(&str, bool, bool)> = p
            .entries
            .iter()
            .map(|e| (e.resource_type.as_str(), e.include, e.outcome))
            .collect();
        assert_eq!(
            kinds,
            [
                ("OperationOutcome", false, true),
                ("Observation", false, false),
                ("Patient", true, false)
            ]
        );
        assert_eq!(p.warnings.len(), 1, "{:?}", p.warnings);
        let e = parse(r#"{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"x","diagnostics":"nope"}]}"#, &url, None).err().unwrap();
        assert!(e.to_string().contains("nope"), "{e}");
        assert!(parse("<html>", &url, None).is_err());
    }
}
