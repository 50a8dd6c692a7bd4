//! The Bulk Data endpoints: discovery (`.well-known/smart-configuration`, `metadata`),
//! `$export` kick-off, status polling and manifests, and DELETE, with the fault switches of
//! [`crate::Faults`] applied; every request is recorded for the tests. The files a job
//! serves are built in `files` and served in `download`; tokens are checked in `auth`.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use crate::{RetryAfter, SeenRequest, Shared, auth};

mod download;
mod files;

pub(crate) use download::OpenBodies;
use files::{FileSpec, Kind, build_files};

/// The state every handler gets: the server's config and its mutable state.
type AppState = State<Arc<Shared>>;

/// An export job, from kick-off until it is deleted.
#[derive(Debug)]
pub(crate) struct Job {
    /// DELETEd: status and files answer 404 from now on.
    pub(crate) deleted: bool,
    /// Status polls so far (the job is ready after [`Config::polls_before_ready`](crate::Config)).
    polls: u32,
    /// Complete manifests handed out: each has fresh file URLs (`?g=`), as a re-poll would.
    manifests_served: u32,
    /// Its files, in manifest order.
    files: Vec<FileSpec>,
    /// The kick-off URL, for the manifest's `request`.
    request: String,
    /// The manifest's `transactionTime`.
    transaction_time: String,
}

/// Download attempts of one file, for the faults that strike once.
#[derive(Debug, Default)]
pub(crate) struct Attempts {
    /// Requests so far (the 429 fault answers the first).
    pub(super) requests: u32,
    /// The mid-file drop has happened.
    pub(super) dropped: bool,
}

/// An OperationOutcome with one issue, as JSON text.
pub(crate) fn outcome(severity: &str, code: &str, text: &str) -> String {
    json!({
        "resourceType": "OperationOutcome",
        "issue": [{"severity": severity, "code": code, "diagnostics": text}]
    })
    .to_string()
}

/// An error answer whose body is an OperationOutcome.
fn fhir_error(status: StatusCode, severity: &str, code: &str, text: &str) -> Response {
    (
        status,
        [("content-type", "application/fhir+json")],
        outcome(severity, code, text),
    )
        .into_response()
}

/// Every route of the FHIR server and of the "other host", each request recorded by
/// [`record`].
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route(
            "/fhir/.well-known/smart-configuration",
            get(smart_configuration),
        )
        .route("/fhir/metadata", get(metadata))
        .route("/auth/token", post(token))
        .route("/fhir/$export", get(export_system).post(export_system))
        .route(
            "/fhir/Patient/$export",
            get(export_patient).post(export_patient),
        )
        .route(
            "/fhir/Group/{id}/$export",
            get(export_group).post(export_group),
        )
        .route("/jobs/{id}", get(status).delete(delete_job))
        .route("/fhir", get(crate::search::system_search))
        .route("/fhir/", get(crate::search::system_search))
        .route("/fhir/{rtype}", get(crate::search::type_search))
        .route("/files/{job}/{idx}", get(download::download))
        .layer(middleware::from_fn_with_state(Arc::clone(&shared), record))
        .with_state(shared)
}

/// Middleware: records each request with the status of its answer ([`crate::TestServer::requests`]).
async fn record(State(shared): AppState, req: Request, next: Next) -> Response {
    // Built in a block: `&Request` is not `Send` and must not live across the await.
    let mut seen = {
        let h = |name: &str| {
            req.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        SeenRequest {
            method: req.method().to_string(),
            host: h("host").unwrap_or_default(),
            path: req
                .uri()
                .path_and_query()
                .map_or_else(String::new, ToString::to_string),
            authorization: h("authorization"),
            range: h("range"),
            prefer: h("prefer"),
            accept: h("accept"),
            status: 0,
            content_encoding: None,
            headers: req
                .headers()
                .iter()
                .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
                .collect(),
        }
    };
    let resp = next.run(req).await;
    seen.status = resp.status().as_u16();
    seen.content_encoding = resp
        .headers()
        .get("content-encoding")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    shared.lock().seen.push(seen);
    resp
}

/// `.well-known/smart-configuration` (404 with the `no_smart_configuration` fault).
async fn smart_configuration(State(shared): AppState) -> Response {
    if shared.config.faults.no_smart_configuration {
        return StatusCode::NOT_FOUND.into_response();
    }
    axum::Json(json!({
        "token_endpoint": format!("{}/auth/token", shared.origin),
        "token_endpoint_auth_methods_supported": ["private_key_jwt", "client_secret_basic"],
        "token_endpoint_auth_signing_alg_values_supported": ["RS384", "ES384"],
        "grant_types_supported": ["client_credentials"],
        "scopes_supported": ["system/*.read", "system/*.rs"],
        "capabilities": ["client-confidential-asymmetric"]
    }))
    .into_response()
}

/// The CapabilityStatement, with the SMART `oauth-uris` extension naming the token endpoint,
/// the searchable types and `$export` (unless turned off). 404 when `metadata` is hidden.
async fn metadata(State(shared): AppState) -> Response {
    if shared.config.search.no_metadata {
        return StatusCode::NOT_FOUND.into_response();
    }
    let (resources, operations) = crate::search::capability(&shared);
    let body = json!({
        "resourceType": "CapabilityStatement",
        "status": "active",
        "kind": "instance",
        "fhirVersion": "4.0.1",
        "format": ["json"],
        "software": {"name": "flatfhir-bulk-server", "version": env!("CARGO_PKG_VERSION")},
        "rest": [{
            "mode": "server",
            "security": {"extension": [{
                "url": "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris",
                "extension": [{"url": "token", "valueUri": format!("{}/auth/token", shared.origin)}]
            }]},
            "resource": resources,
            "operation": operations
        }]
    });
    (
        [("content-type", "application/fhir+json")],
        body.to_string(),
    )
        .into_response()
}

/// `POST /auth/token`: see [`auth::token_endpoint`].
async fn token(State(shared): AppState, headers: HeaderMap, body: Bytes) -> Response {
    auth::token_endpoint(&shared, &headers, &body)
}

/// The `$export` level kicked off (all three export the same data here).
#[derive(Debug, Clone, Copy)]
enum Level {
    System,
    Patient,
    Group,
}

/// `[GET|POST] /$export`.
async fn export_system(st: AppState, m: Method, h: HeaderMap, q: RawQuery, b: Bytes) -> Response {
    kickoff(st, Level::System, m, h, q, b)
}

/// `[GET|POST] /Patient/$export`.
async fn export_patient(st: AppState, m: Method, h: HeaderMap, q: RawQuery, b: Bytes) -> Response {
    kickoff(st, Level::Patient, m, h, q, b)
}

/// `[GET|POST] /Group/{id}/$export`.
async fn export_group(
    st: AppState,
    Path(_id): Path<String>,
    m: Method,
    h: HeaderMap,
    q: RawQuery,
    b: Bytes,
) -> Response {
    kickoff(st, Level::Group, m, h, q, b)
}

/// Parameters from a GET query or a POST `Parameters` resource.
fn kickoff_params(
    method: &Method,
    query: Option<&str>,
    body: &[u8],
) -> Result<Vec<(String, String)>, String> {
    let mut params: Vec<(String, String)> = query
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default();
    if method == Method::POST {
        let v: Value = serde_json::from_slice(body).map_err(|e| format!("POST body: {e}"))?;
        if v["resourceType"] != "Parameters" {
            return Err("POST body must be a Parameters resource".into());
        }
        for p in v["parameter"].as_array().into_iter().flatten() {
            let name = p["name"].as_str().unwrap_or_default().to_owned();
            let value = p
                .as_object()
                .and_then(|o| {
                    o.iter()
                        .find(|(k, _)| k.starts_with("value"))
                        .map(|(_, v)| match v {
                            Value::String(s) => s.clone(),
                            Value::Object(o) => o
                                .get("reference")
                                .and_then(Value::as_str)
                                .unwrap_or_default()
                                .to_owned(),
                            other => other.to_string(),
                        })
                })
                .unwrap_or_default();
            params.push((name, value));
        }
    }
    Ok(params)
}

/// The kick-off: checks the token and `Prefer: respond-async`, refuses unsupported
/// parameters, builds the job's files and answers 202 with `Content-Location`.
fn kickoff(
    State(shared): AppState,
    level: Level,
    method: Method,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Response {
    if let Err(r) = auth::check_bearer(&shared, &headers) {
        return r;
    }
    if !shared.config.search.export_offered {
        return fhir_error(
            StatusCode::NOT_FOUND,
            "error",
            "not-supported",
            "this server does not offer $export",
        );
    }
    let prefer = headers
        .get("prefer")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !prefer.contains("respond-async") {
        return fhir_error(
            StatusCode::BAD_REQUEST,
            "error",
            "invalid",
            "Prefer: respond-async is required",
        );
    }
    let params = match kickoff_params(&method, query.as_deref(), &body) {
        Ok(p) => p,
        Err(e) => return fhir_error(StatusCode::BAD_REQUEST, "error", "invalid", &e),
    };
    shared.lock().kickoff_params.push(params.clone());
    if shared.config.faults.kickoff_failure {
        return fhir_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "fatal",
            "exception",
            "simulated kick-off failure: the export could not be started",
        );
    }
    for (k, v) in &params {
        if k == "_outputFormat"
            && !matches!(
                v.as_str(),
                "application/fhir+ndjson" | "application/ndjson" | "ndjson"
            )
        {
            return fhir_error(
                StatusCode::BAD_REQUEST,
                "error",
                "invalid",
                "unsupported _outputFormat",
            );
        }
    }
    let types: Vec<String> = params
        .iter()
        .filter(|(k, _)| k == "_type")
        .flat_map(|(_, v)| v.split(',').map(str::trim).map(str::to_owned))
        .filter(|t| !t.is_empty())
        .collect();
    let files = match build_files(&shared, &types) {
        Ok(f) => f,
        Err(e) => return fhir_error(StatusCode::INTERNAL_SERVER_ERROR, "fatal", "exception", &e),
    };
    let _ = level;
    let request = format!(
        "{}{}",
        shared.origin,
        query
            .as_deref()
            .map_or_else(String::new, |q| format!("?{q}"))
    );
    let mut st = shared.lock();
    st.next_job += 1;
    let id = format!("job{}", st.next_job);
    st.jobs.insert(
        id.clone(),
        Job {
            deleted: false,
            polls: 0,
            manifests_served: 0,
            files,
            request,
            transaction_time: fhir_instant(SystemTime::now()),
        },
    );
    let location = if shared.config.faults.relative_content_location {
        format!("/jobs/{id}")
    } else {
        format!("{}/jobs/{id}", shared.origin)
    };
    (StatusCode::ACCEPTED, [("content-location", location)]).into_response()
}

/// A FHIR instant for "now" (seconds precision, UTC).
fn fhir_instant(t: SystemTime) -> String {
    let t = time::OffsetDateTime::from(t);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// The `Retry-After` text of a 429, in the form the fault asks for.
fn retry_after_value(r: &RetryAfter) -> String {
    let now = SystemTime::now();
    match r {
        RetryAfter::Seconds(s) => s.to_string(),
        RetryAfter::EpochSeconds(ahead) => (now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
            + ahead)
            .to_string(),
        RetryAfter::EpochMillis(ahead) => (now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis())
            + u128::from(*ahead) * 1000)
            .to_string(),
        RetryAfter::HttpDateIn(s) => httpdate::fmt_http_date(now + Duration::from_secs(*s)),
    }
}

/// A 429 with a `Retry-After`.
fn too_many(r: &RetryAfter) -> Response {
    let mut resp = fhir_error(
        StatusCode::TOO_MANY_REQUESTS,
        "error",
        "throttled",
        "slow down",
    );
    if let Ok(v) = HeaderValue::from_str(&retry_after_value(r)) {
        resp.headers_mut().insert("retry-after", v);
    }
    resp
}

/// `GET /jobs/{id}` (`?page=N` for later manifest pages): 202 with `X-Progress` until the
/// job is ready, then the manifest; the poll faults (429s, transient and fatal errors) first.
async fn status(
    State(shared): AppState,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = auth::check_bearer(&shared, &headers) {
        return r;
    }
    let page: usize = query
        .as_deref()
        .and_then(|q| q.strip_prefix("page="))
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    let faults = &shared.config.faults;
    let mut st = shared.lock();
    let Some(job) = st.jobs.get_mut(&id) else {
        return fhir_error(
            StatusCode::NOT_FOUND,
            "error",
            "not-found",
            "no such export",
        );
    };
    if job.deleted {
        return fhir_error(
            StatusCode::NOT_FOUND,
            "error",
            "not-found",
            "export was deleted",
        );
    }
    if page == 0 {
        job.polls += 1;
        let mut p = job.polls;
        if let Some((n, r)) = &faults.rate_limit_polls {
            if p <= *n {
                return too_many(r);
            }
            p -= n;
        }
        if p <= faults.transient_status_errors {
            return fhir_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "error",
                "transient",
                "database briefly unavailable, try again",
            );
        }
        p -= faults.transient_status_errors;
        if faults.fatal_status_error {
            return fhir_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "fatal",
                "processing",
                "export job failed: simulated failure",
            );
        }
        if p <= shared.config.polls_before_ready {
            // In u64: a job that is never ready (`polls_before_ready: u32::MAX`) must not
            // overflow the percentage.
            let pct = u64::from(p) * 100 / (u64::from(shared.config.polls_before_ready) + 1);
            return (
                StatusCode::ACCEPTED,
                [
                    ("retry-after", shared.config.retry_after_secs.to_string()),
                    ("x-progress", format!("{pct}% complete")),
                ],
            )
                .into_response();
        }
    }
    let generation = job.manifests_served;
    if page == 0 {
        job.manifests_served += 1;
    }
    let manifest = manifest(&shared, &id, job, page, generation);
    ([("content-type", "application/json")], manifest.to_string()).into_response()
}

/// Manifest page `page` of a job; `generation` makes its file URLs differ from earlier ones.
fn manifest(shared: &Shared, id: &str, job: &Job, page: usize, generation: u32) -> Value {
    let faults = &shared.config.faults;
    let per_page = shared.config.page_size.unwrap_or(usize::MAX).max(1);
    let start = page.saturating_mul(per_page).min(job.files.len());
    let end = start.saturating_add(per_page).min(job.files.len());
    let mut out = Vec::new();
    let mut err = Vec::new();
    let mut del = Vec::new();
    for (idx, f) in job.files.iter().enumerate().take(end).skip(start) {
        let mut url = format!("{}/files/{id}/{idx}?g={generation}", shared.origin);
        if faults.signed_urls {
            url.push_str("&sig=SECRETSIGNATURE123&se=2099-01-01");
        }
        let mut entry = json!({"type": f.rtype, "url": url});
        if let Some(count) = f.manifest_count {
            let count = if faults.wrong_count && idx == 0 {
                count + 1
            } else {
                count
            };
            entry["count"] = json!(count);
        }
        match f.kind {
            Kind::Output => out.push(entry),
            Kind::Error => err.push(entry),
            Kind::Deleted => del.push(entry),
        }
    }
    let mut m = json!({
        "transactionTime": job.transaction_time,
        "request": job.request,
        "output": out,
    });
    if !shared.config.clients.is_empty() {
        if !faults.omit_requires_access_token {
            m["requiresAccessToken"] = json!(shared.config.requires_access_token);
        }
    } else {
        m["requiresAccessToken"] = json!(false);
    }
    m[if faults.stu4_outcome {
        "outcome"
    } else {
        "error"
    }] = json!(err);
    if !del.is_empty() {
        m["deleted"] = json!(del);
    }
    if end < job.files.len() {
        m["link"] = json!([{"relation": "next", "url": format!("{}/jobs/{id}?page={}", shared.origin, page + 1)}]);
    }
    m
}

/// `DELETE /jobs/{id}`: 202, then 404 for the job and its files.
async fn delete_job(
    State(shared): AppState,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = auth::check_bearer(&shared, &headers) {
        return r;
    }
    let mut st = shared.lock();
    match st.jobs.get_mut(&id) {
        Some(job) if !job.deleted => {
            job.deleted = true;
            // Free the files: a long benchmark session kicks off many exports.
            job.files.clear();
            StatusCode::ACCEPTED.into_response()
        }
        _ => fhir_error(
            StatusCode::NOT_FOUND,
            "error",
            "not-found",
            "no such export",
        ),
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::fhir_instant;

    #[test]
    fn transaction_time_is_a_utc_instant_in_seconds() {
        let at = |s: u64| fhir_instant(SystemTime::UNIX_EPOCH + Duration::from_secs(s));
        assert_eq!(at(0), "1970-01-01T00:00:00Z");
        assert_eq!(at(951_868_799), "2000-02-29T23:59:59Z");
        assert_eq!(at(4_107_542_400), "2100-03-01T00:00:00Z");
    }
}
