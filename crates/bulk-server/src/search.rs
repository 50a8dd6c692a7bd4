//! FHIR search over the served data, for servers without `$export`: `GET [base]/{Type}?params`
//! and `GET [base]?_type=A,B&params` answer `searchset` Bundles paged with `_count` and
//! `link[relation=next]`, plus the search part of the `metadata` CapabilityStatement.
//!
//! Supported parameters: `_id` (comma list), `patient` / `subject` (`Patient/x` or `x`;
//! `patient` of ExplanationOfBenefit and every other type's `subject`), `_lastUpdated` with
//! `eq` (default), `ge`, `gt`, `le`, `lt` against `meta.lastUpdated` (compared as text: the
//! generated data writes every instant the same way), `_count`, `_include={Type}:patient` and
//! `{Type}:subject` (the referenced Patients of the page's matches, `search.mode = include`,
//! once per page, so the same Patient comes again on later pages, as on real servers), and
//! `_type` at the system level. Any other parameter answers 400 with an OperationOutcome,
//! unless the request says `Prefer: handling=lenient`: then it is ignored and the first page
//! carries a warning entry with `search.mode = outcome`.
//!
//! Paging is by offset: the next link repeats the query with `_offset`. Its form (absolute,
//! or relative to the page URL) is [`NextLinks`]. Faults ([`PageFault`]) hit the n-th search
//! request (1-based, retries included), so tests say exactly which answer fails.
//! Each resource is sent as the bytes of its data line (or spread over lines with
//! [`SearchConfig::pretty`]), so what a client writes can be compared with the data byte for byte.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::Shared;

/// The form of `link[relation=next]` URLs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum NextLinks {
    /// `http://127.0.0.1:port/fhir/Observation?...`
    #[default]
    Absolute,
    /// Relative to the page's URL: `Observation?...` (type level) or `?...` (system level),
    /// which a client must resolve against the page URL, not the FHIR base.
    Relative,
    /// Relative on even pages, absolute on odd ones (page 0 is the first).
    Alternate,
}

/// What goes wrong with one search request.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PageFault {
    /// The answer starts, then the connection is closed mid-body.
    Drop,
    /// 500 with a `transient` OperationOutcome.
    ServerError,
    /// 429 with `Retry-After` of this many seconds.
    RateLimit(u64),
    /// The page's next link points at the page itself (a server whose paging loops).
    LoopingNext,
}

/// Search settings of the test server.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SearchConfig {
    /// Whether `$export` is offered (and listed in `metadata`). Off: kick-off answers 404.
    pub export_offered: bool,
    /// Page size without `_count`.
    pub default_count: usize,
    /// Largest page size honoured (`_count` above it is lowered to it).
    pub max_count: usize,
    /// The form of next links.
    pub next_links: NextLinks,
    /// Next links point at the other listener (`localhost`, another origin): a client must
    /// not send its token there.
    pub next_link_other_origin: bool,
    /// Every search's first page carries an OperationOutcome warning (`search.mode = outcome`).
    pub warning_outcome: bool,
    /// Faults by search request number (1-based, every search request counted).
    pub faults: Vec<(usize, PageFault)>,
    /// Spread each Bundle over many lines (a pretty-printing server).
    pub pretty: bool,
    /// `metadata` answers 404 (a server that hides its CapabilityStatement).
    pub no_metadata: bool,
}

impl Default for SearchConfig {
    fn default() -> Self {
        Self {
            export_offered: true,
            default_count: 50,
            max_count: 1000,
            next_links: NextLinks::Absolute,
            next_link_other_origin: false,
            warning_outcome: false,
            faults: Vec::new(),
            pretty: false,
            no_metadata: false,
        }
    }
}

/// Search parameters each type supports (beyond `_id`, `_lastUpdated`, `_count`, `_include`).
fn type_params(rtype: &str) -> &'static [&'static str] {
    match rtype {
        "Patient" => &[],
        "ExplanationOfBenefit" => &["patient"],
        _ => &["patient", "subject"],
    }
}

const COMMON: &[&str] = &["_id", "_lastUpdated"];
/// Result parameters: accepted everywhere.
const CONTROL: &[&str] = &["_count", "_include", "_offset", "_type", "_format"];

/// One resource of the data.
#[derive(Debug)]
struct Res {
    id: String,
    line: String,
    patient: Option<String>,
    last_updated: Option<String>,
}

/// The data, read once.
#[derive(Debug, Default)]
pub(crate) struct Data {
    types: BTreeMap<String, Vec<Res>>,
}

/// Search-side state: the data, and the request counter for faults.
#[derive(Debug, Default)]
pub(crate) struct SearchState {
    data: OnceLock<Arc<Data>>,
    pub(crate) requests: std::sync::atomic::AtomicUsize,
}

fn load(shared: &Shared) -> Arc<Data> {
    Arc::clone(shared.search.data.get_or_init(|| {
        let mut data = Data::default();
        let Ok(dir) = std::fs::read_dir(&shared.config.data_dir) else {
            return Arc::new(data);
        };
        let mut names: Vec<_> = dir
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "ndjson"))
            .collect();
        names.sort();
        for path in names {
            let Some(rtype) = path.file_stem().and_then(|s| s.to_str()) else {
                continue;
            };
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let list = data.types.entry(rtype.to_owned()).or_default();
            for line in text.lines().filter(|l| !l.trim().is_empty()) {
                let v: Value = serde_json::from_str(line).unwrap_or(Value::Null);
                let reference = v["subject"]["reference"]
                    .as_str()
                    .or_else(|| v["patient"]["reference"].as_str())
                    .and_then(|r| r.strip_prefix("Patient/"))
                    .map(str::to_owned);
                list.push(Res {
                    id: v["id"].as_str().unwrap_or_default().to_owned(),
                    line: line.to_owned(),
                    patient: reference,
                    last_updated: v["meta"]["lastUpdated"].as_str().map(str::to_owned),
                });
            }
        }
        Arc::new(data)
    }))
}

/// The search part of the CapabilityStatement's `rest[0]`: `resource` (each type with its
/// search parameters and includes) and, when offered, the `export` operation.
pub(crate) fn capability(shared: &Shared) -> (Value, Value) {
    let data = load(shared);
    let resources: Vec<Value> = data
        .types
        .keys()
        .map(|t| {
            let mut params: Vec<Value> = COMMON
                .iter()
                .map(|p| json!({"name": p, "type": if *p == "_id" {"token"} else {"date"}}))
                .collect();
            params.extend(
                type_params(t)
                    .iter()
                    .map(|p| json!({"name": p, "type": "reference"})),
            );
            let includes: Vec<String> = type_params(t).iter().map(|p| format!("{t}:{p}")).collect();
            json!({"type": t, "interaction": [{"code": "search-type"}],
                   "searchParam": params, "searchInclude": includes})
        })
        .collect();
    let ops = if shared.config.search.export_offered {
        json!([{"name": "export", "definition": "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/export"}])
    } else {
        json!([])
    };
    (Value::Array(resources), ops)
}

fn error(status: StatusCode, severity: &str, code: &str, text: &str) -> Response {
    (
        status,
        [("content-type", "application/fhir+json")],
        crate::export::outcome(severity, code, text),
    )
        .into_response()
}

/// `GET [base]/{Type}?params`.
pub(crate) async fn type_search(
    State(shared): State<Arc<Shared>>,
    Path(rtype): Path<String>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    search(&shared, Some(rtype), &headers, query.as_deref()).await
}

/// `GET [base]?_type=...&params` (system-level search).
pub(crate) async fn system_search(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    search(&shared, None, &headers, query.as_deref()).await
}

#[allow(clippy::too_many_lines)]
async fn search(
    shared: &Arc<Shared>,
    rtype: Option<String>,
    headers: &HeaderMap,
    query: Option<&str>,
) -> Response {
    if let Err(r) = crate::auth::check_bearer(shared, headers) {
        return r;
    }
    let cfg = &shared.config.search;
    let n = shared
        .search
        .requests
        .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
        + 1;
    let fault = cfg
        .faults
        .iter()
        .find(|(k, _)| *k == n)
        .map(|(_, f)| f.clone());
    match fault {
        Some(PageFault::ServerError) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "error",
                "transient",
                "simulated server error",
            );
        }
        Some(PageFault::RateLimit(secs)) => {
            return (
                StatusCode::TOO_MANY_REQUESTS,
                [("retry-after", secs.to_string())],
                crate::export::outcome("error", "throttled", "too many requests"),
            )
                .into_response();
        }
        _ => {}
    }
    let data = load(shared);
    let params: Vec<(String, String)> = query
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default();
    let lenient = headers
        .get("prefer")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|p| p.contains("handling=lenient"));
    let types: Vec<String> = match &rtype {
        Some(t) => vec![t.clone()],
        None => params
            .iter()
            .filter(|(k, _)| k == "_type")
            .flat_map(|(_, v)| v.split(',').map(|s| s.trim().to_owned()))
            .filter(|s| !s.is_empty())
            .collect(),
    };
    if types.is_empty() {
        return error(
            StatusCode::BAD_REQUEST,
            "error",
            "invalid",
            "a system-level search needs _type",
        );
    }
    for t in &types {
        if !data.types.contains_key(t) {
            return error(
                StatusCode::NOT_FOUND,
                "error",
                "not-supported",
                &format!("unknown resource type {t}"),
            );
        }
    }
    let mut warnings = Vec::new();
    let mut count = cfg.default_count;
    let mut offset = 0usize;
    let mut include = false;
    let mut ids: Option<HashSet<String>> = None;
    let mut patients: Option<HashSet<String>> = None;
    let mut updated: Vec<(String, String)> = Vec::new();
    for (k, v) in &params {
        let base = k.split(':').next().unwrap_or(k);
        let supported = CONTROL.contains(&base)
            || COMMON.contains(&base)
            || types.iter().all(|t| type_params(t).contains(&base));
        if !supported {
            let text = format!("unknown search parameter {k} for {}", types.join(","));
            if lenient {
                warnings.push(text);
                continue;
            }
            return error(StatusCode::BAD_REQUEST, "error", "not-supported", &text);
        }
        match base {
            "_count" => match v.parse::<usize>() {
                Ok(c) => count = c.clamp(1, cfg.max_count),
                Err(_) => return error(StatusCode::BAD_REQUEST, "error", "invalid", "bad _count"),
            },
            "_offset" => offset = v.parse().unwrap_or(0),
            "_include" => {
                let ok = v.split_once(':').is_some_and(|(t, p)| {
                    types.contains(&t.to_owned()) && type_params(t).contains(&p)
                });
                if !ok {
                    let text = format!("unsupported _include {v}");
                    if lenient {
                        warnings.push(text);
                        continue;
                    }
                    return error(StatusCode::BAD_REQUEST, "error", "not-supported", &text);
                }
                include = true;
            }
            "_id" => ids = Some(v.split(',').map(str::to_owned).collect()),
            "patient" | "subject" => {
                patients = Some(
                    v.split(',')
                        .map(|r| r.strip_prefix("Patient/").unwrap_or(r).to_owned())
                        .collect(),
                );
            }
            "_lastUpdated" => {
                let (op, val) = ["ge", "gt", "le", "lt", "eq"]
                    .iter()
                    .find_map(|p| v.strip_prefix(p).map(|r| (*p, r)))
                    .unwrap_or(("eq", v.as_str()));
                updated.push((op.to_owned(), val.to_owned()));
            }
            _ => {}
        }
    }
    let matches: Vec<(&str, &Res)> = types
        .iter()
        .flat_map(|t| {
            data.types
                .get(t)
                .into_iter()
                .flatten()
                .map(move |r| (t.as_str(), r))
        })
        .filter(|(_, r)| ids.as_ref().is_none_or(|s| s.contains(&r.id)))
        .filter(|(_, r)| {
            patients
                .as_ref()
                .is_none_or(|s| r.patient.as_ref().is_some_and(|p| s.contains(p)))
        })
        .filter(|(_, r)| {
            updated.iter().all(|(op, val)| {
                r.last_updated
                    .as_deref()
                    .is_some_and(|lu| match op.as_str() {
                        "ge" => lu >= val.as_str(),
                        "gt" => lu > val.as_str(),
                        "le" => lu <= val.as_str(),
                        "lt" => lu < val.as_str(),
                        _ => lu == val.as_str(),
                    })
            })
        })
        .collect();
    let total = matches.len();
    let page: Vec<(&str, &Res)> = matches.iter().skip(offset).take(count).copied().collect();
    let origin = if cfg.next_link_other_origin {
        shared.other_origin.clone()
    } else {
        shared.origin.clone()
    };
    let page_no = offset / count.max(1);
    let mut entries: Vec<String> = Vec::new();
    if offset == 0 && (cfg.warning_outcome || !warnings.is_empty()) {
        let mut texts = warnings.clone();
        if cfg.warning_outcome {
            texts.push("simulated warning: results may be incomplete".into());
        }
        for t in texts {
            entries.push(format!(
                "{{\"resource\":{},\"search\":{{\"mode\":\"outcome\"}}}}",
                crate::export::outcome("warning", "informational", &t)
            ));
        }
    }
    for (t, r) in &page {
        entries.push(format!(
            "{{\"fullUrl\":\"{}/fhir/{t}/{}\",\"resource\":{},\"search\":{{\"mode\":\"match\"}}}}",
            shared.origin, r.id, r.line
        ));
    }
    if include {
        let mut seen = HashSet::new();
        let patients_by_id: BTreeMap<&str, &Res> = data
            .types
            .get("Patient")
            .into_iter()
            .flatten()
            .map(|r| (r.id.as_str(), r))
            .collect();
        for (_, r) in &page {
            if let Some(p) = &r.patient
                && seen.insert(p.clone())
                && let Some(pr) = patients_by_id.get(p.as_str())
            {
                entries.push(format!(
                    "{{\"fullUrl\":\"{}/fhir/Patient/{}\",\"resource\":{},\"search\":{{\"mode\":\"include\"}}}}",
                    shared.origin, pr.id, pr.line
                ));
            }
        }
    }
    let mut links = Vec::new();
    let self_query = query.unwrap_or("");
    links.push(format!(
        "{{\"relation\":\"self\",\"url\":{}}}",
        Value::String(format!(
            "{}/fhir{}?{self_query}",
            shared.origin,
            rtype.as_ref().map_or_else(String::new, |t| format!("/{t}"))
        ))
    ));
    if offset + count < total {
        let mut next: Vec<(String, String)> = params
            .iter()
            .filter(|(k, _)| k != "_offset" && k != "_count")
            .cloned()
            .collect();
        next.push(("_count".into(), count.to_string()));
        let next_offset = if fault == Some(PageFault::LoopingNext) {
            offset
        } else {
            offset + count
        };
        next.push(("_offset".into(), next_offset.to_string()));
        let q = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(&next)
            .finish();
        let relative = match cfg.next_links {
            NextLinks::Absolute => false,
            NextLinks::Relative => true,
            NextLinks::Alternate => page_no.is_multiple_of(2),
        } && !cfg.next_link_other_origin;
        let url = match (&rtype, relative) {
            (Some(t), true) => format!("{t}?{q}"),
            (None, true) => format!("?{q}"),
            (Some(t), false) => format!("{origin}/fhir/{t}?{q}"),
            (None, false) => format!("{origin}/fhir?{q}"),
        };
        links.push(format!(
            "{{\"relation\":\"next\",\"url\":{}}}",
            Value::String(url)
        ));
    }
    let sep = if cfg.pretty { ",\n  " } else { "," };
    let body = format!(
        "{{\"resourceType\":\"Bundle\",\"type\":\"searchset\",\"total\":{total},\"link\":[{}],\"entry\":[{}]}}",
        links.join(","),
        entries.join(sep)
    );
    let body = if cfg.pretty { spread(&body) } else { body };
    let body = Bytes::from(body);
    if fault == Some(PageFault::Drop) {
        let half = body.slice(..body.len() / 2);
        let stream = futures_util::stream::unfold(0u8, move |step| {
            let half = half.clone();
            async move {
                match step {
                    0 => Some((Ok::<Bytes, std::io::Error>(half), 1)),
                    1 => {
                        // Let hyper flush the half, then abort the connection.
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        Some((Err(std::io::Error::other("simulated dropped page")), 2))
                    }
                    _ => None,
                }
            }
        });
        let mut resp = Response::new(Body::from_stream(stream));
        resp.headers_mut().insert(
            "content-type",
            axum::http::HeaderValue::from_static("application/fhir+json"),
        );
        return resp;
    }
    ([("content-type", "application/fhir+json")], body).into_response()
}

/// Spread JSON over lines: a newline and indent after every `{`, `[` and `,` and a space after
/// `:` outside strings (what a pretty-printing server sends; a client must compact it back).
fn spread(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 2);
    let (mut in_str, mut escaped) = (false, false);
    for c in text.chars() {
        out.push(c);
        if in_str {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_str = false;
            }
            continue;
        }
        match c {
            '"' => in_str = true,
            '{' | '[' | ',' => out.push_str("\n  "),
            ':' => out.push(' '),
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn spread_keeps_strings() {
        let s = super::spread(r#"{"a":"x, {y}: \"z\"","b":[1,2]}"#);
        assert!(s.contains(r#""x, {y}: \"z\"""#), "{s}");
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!(v["b"][1], 2);
    }
}
