//! The Bulk Data endpoints: discovery, `$export` kick-off, status/manifest, file download and
//! DELETE, with the fault switches of [`crate::Faults`] applied. Auth lives in `auth`.

use std::io::Write as _;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use crate::{Gzip, RetryAfter, SeenRequest, Shared, auth};

type S = State<Arc<Shared>>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Output,
    Error,
    Deleted,
}

#[derive(Debug)]
struct FileSpec {
    kind: Kind,
    rtype: String,
    /// The NDJSON as served without compression.
    plain: Bytes,
    /// gzip of `plain` (when the server compresses at all).
    gzip: Option<Bytes>,
    /// `count` in the manifest entry, if any.
    manifest_count: Option<usize>,
    /// Answer downloads with an OperationOutcome line with this text (`fileError`).
    file_error: Option<String>,
}

#[derive(Debug)]
pub(crate) struct Job {
    pub(crate) deleted: bool,
    polls: u32,
    manifests_served: u32,
    files: Vec<FileSpec>,
    request: String,
    transaction_time: String,
}

#[derive(Debug, Default)]
pub(crate) struct Attempts {
    requests: u32,
    dropped: bool,
}

pub(crate) fn outcome(severity: &str, code: &str, text: &str) -> String {
    json!({
        "resourceType": "OperationOutcome",
        "issue": [{"severity": severity, "code": code, "diagnostics": text}]
    })
    .to_string()
}

fn fhir_error(status: StatusCode, severity: &str, code: &str, text: &str) -> Response {
    (
        status,
        [("content-type", "application/fhir+json")],
        outcome(severity, code, text),
    )
        .into_response()
}

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
        .route("/files/{job}/{idx}", get(download))
        .layer(middleware::from_fn_with_state(Arc::clone(&shared), record))
        .with_state(shared)
}

async fn record(State(shared): S, req: Request, next: Next) -> Response {
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

async fn smart_configuration(State(shared): S) -> Response {
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

async fn metadata(State(shared): S) -> Response {
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
            }]}
        }]
    });
    (
        [("content-type", "application/fhir+json")],
        body.to_string(),
    )
        .into_response()
}

async fn token(State(shared): S, headers: HeaderMap, body: Bytes) -> Response {
    auth::token_endpoint(&shared, &headers, &body)
}

#[derive(Debug, Clone, Copy)]
enum Level {
    System,
    Patient,
    Group,
}

async fn export_system(st: S, m: Method, h: HeaderMap, q: RawQuery, b: Bytes) -> Response {
    kickoff(st, Level::System, m, h, q, b)
}

async fn export_patient(st: S, m: Method, h: HeaderMap, q: RawQuery, b: Bytes) -> Response {
    kickoff(st, Level::Patient, m, h, q, b)
}

async fn export_group(
    st: S,
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

fn kickoff(
    State(shared): S,
    level: Level,
    method: Method,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Response {
    if let Err(r) = auth::check_bearer(&shared, &headers) {
        return r;
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
            transaction_time: httpdate_to_instant(SystemTime::now()),
        },
    );
    let location = if shared.config.faults.relative_content_location {
        format!("/jobs/{id}")
    } else {
        format!("{}/jobs/{id}", shared.origin)
    };
    (StatusCode::ACCEPTED, [("content-location", location)]).into_response()
}

/// A FHIR instant for `t` (seconds precision, UTC); the calendar is the `time` crate's.
fn httpdate_to_instant(t: SystemTime) -> String {
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

/// The file's bytes: (plain NDJSON, its gzip when the server compresses).
fn encode(shared: &Shared, lines: &[String]) -> (Bytes, Option<Bytes>) {
    let mut text = if shared.config.faults.messy_ndjson {
        // CRLF, a blank line in the middle, no final newline.
        let mut t = lines.join("\r\n");
        if let Some(pos) = t.find("\r\n") {
            t.insert_str(pos, "\r\n");
        }
        t
    } else {
        let mut t = lines.join("\n");
        t.push('\n');
        t
    };
    if lines.is_empty() {
        text.clear();
    }
    let gzip = (shared.config.gzip != Gzip::Off).then(|| {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(text.as_bytes()).expect("in-memory write");
        Bytes::from(enc.finish().expect("in-memory write"))
    });
    (Bytes::from(text.into_bytes()), gzip)
}

fn build_files(shared: &Shared, types: &[String]) -> Result<Vec<FileSpec>, String> {
    let cfg = &shared.config;
    let mut names: Vec<_> = std::fs::read_dir(&cfg.data_dir)
        .map_err(|e| format!("reading {}: {e}", cfg.data_dir.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "ndjson"))
        .collect();
    names.sort();
    let mut files = Vec::new();
    let mut errors = Vec::new();
    for path in names {
        let rtype = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default()
            .to_owned();
        if !types.is_empty() && !types.contains(&rtype) {
            continue;
        }
        if cfg.faults.failing_types.contains(&rtype) {
            errors.push(outcome(
                "error",
                "processing",
                &format!("Failed to generate {rtype} export file"),
            ));
            continue;
        }
        let text =
            std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let lines: Vec<String> = text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(str::to_owned)
            .collect();
        for (i, chunk) in lines.chunks(cfg.lines_per_file.max(1)).enumerate() {
            let n = i + 1;
            let is = |list: &[(String, usize)]| list.iter().any(|(t, k)| *t == rtype && *k == n);
            if is(&cfg.faults.failed_files) {
                // SMART's some_file_generation_failed: the error entry carries the failed
                // file's count, the error file one OperationOutcome.
                let (plain, gzip) = encode(
                    shared,
                    &[outcome(
                        "error",
                        "processing",
                        &format!("Failed to export {n}.{rtype}.ndjson"),
                    )],
                );
                files.push(FileSpec {
                    kind: Kind::Error,
                    rtype: "OperationOutcome".into(),
                    plain,
                    gzip,
                    manifest_count: Some(chunk.len()),
                    file_error: None,
                });
                continue;
            }
            let (plain, gzip) = encode(shared, chunk);
            files.push(FileSpec {
                kind: Kind::Output,
                rtype: rtype.clone(),
                plain,
                gzip,
                manifest_count: Some(chunk.len()),
                file_error: is(&cfg.faults.file_error)
                    .then(|| format!("Simulated file error: {n}.{rtype}.ndjson could not be read")),
            });
        }
    }
    if !errors.is_empty() {
        let (plain, gzip) = encode(shared, &errors);
        files.push(FileSpec {
            kind: Kind::Error,
            rtype: "OperationOutcome".into(),
            plain,
            gzip,
            manifest_count: None,
            file_error: None,
        });
    }
    if cfg.faults.deleted {
        let bundle = json!({
            "resourceType": "Bundle", "type": "transaction",
            "entry": [
                {"request": {"method": "DELETE", "url": "Patient/deleted-1"}},
                {"request": {"method": "DELETE", "url": "Patient/deleted-2"}}
            ]
        });
        let (plain, gzip) = encode(shared, &[bundle.to_string()]);
        files.push(FileSpec {
            kind: Kind::Deleted,
            rtype: "Bundle".into(),
            plain,
            gzip,
            manifest_count: None,
            file_error: None,
        });
    }
    Ok(files)
}

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

async fn status(
    State(shared): S,
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

async fn delete_job(State(shared): S, Path(id): Path<String>, headers: HeaderMap) -> Response {
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

#[allow(clippy::too_many_lines)]
async fn download(
    State(shared): S,
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
    let stream = futures_util::stream::unfold(
        (chunks.into_iter(), drop_half, false),
        move |(mut it, drop_half, done)| async move {
            if done {
                return None;
            }
            if let Some(c) = it.next() {
                if let Some(d) = slow {
                    tokio::time::sleep(d).await;
                }
                Some((Ok::<Bytes, std::io::Error>(c), (it, drop_half, false)))
            } else if drop_half {
                // Let hyper flush what was sent, so the client really holds half a file.
                tokio::time::sleep(Duration::from_millis(30)).await;
                // An error mid-body makes hyper abort the connection: the client sees a
                // truncated response, as with a proxy timeout.
                Some((
                    Err(std::io::Error::other("simulated dropped connection")),
                    (it, drop_half, true),
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
