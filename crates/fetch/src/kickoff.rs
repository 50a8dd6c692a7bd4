//! The `$export` kick-off: building the URL and parameters (comma-GET, repeated-GET or POST
//! `Parameters`), sending it with `Prefer: respond-async`, and resolving `Content-Location`.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use url::Url;

use crate::ctx::RunContext;
use crate::error::{Error, Result};
use crate::event::Event;
use crate::http::{headers_json, outcome_text};
use crate::poll::body_json;
use crate::redact::RedactedUrl;
use crate::redact::Secret;
use crate::retry::{Retries, send_with_token};

/// Export level.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Level {
    /// `Patient/$export` (the default).
    Patient,
    /// `/$export`.
    System,
    /// `Group/{id}/$export`.
    Group(String),
}

/// How kick-off parameters are sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ParamStyle {
    /// GET with comma-separated lists (`_type=A,B`): what most servers accept.
    #[default]
    CommaGet,
    /// GET with repeated parameters (`_type=A&_type=B`).
    RepeatGet,
    /// POST a `Parameters` resource, one parameter per value (required by the STU4 ballot).
    Post,
}

/// Kick-off parameters.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct KickoffParams {
    /// Level.
    pub level: Level,
    /// `_type`.
    pub types: Vec<String>,
    /// `_since`.
    pub since: Option<String>,
    /// `_until` (STU3).
    pub until: Option<String>,
    /// `_elements`.
    pub elements: Vec<String>,
    /// `_typeFilter`, one per filter.
    pub type_filters: Vec<String>,
    /// `patient` references (POST only).
    pub patients: Vec<String>,
    /// `includeAssociatedData`.
    pub include_associated_data: Vec<String>,
    /// `_outputFormat`.
    pub output_format: String,
    /// Anything else.
    pub extra: Vec<(String, String)>,
    /// Parameter style; `patients` forces POST.
    pub style: ParamStyle,
    /// `Prefer: handling=lenient`.
    pub lenient: bool,
    /// `allowPartialManifests=true` (STU3).
    pub allow_partial_manifests: bool,
}

impl Default for KickoffParams {
    fn default() -> Self {
        Self {
            level: Level::Patient,
            types: Vec::new(),
            since: None,
            until: None,
            elements: Vec::new(),
            type_filters: Vec::new(),
            patients: Vec::new(),
            include_associated_data: Vec::new(),
            output_format: "application/fhir+ndjson".into(),
            extra: Vec::new(),
            style: ParamStyle::CommaGet,
            lenient: false,
            allow_partial_manifests: false,
        }
    }
}

impl KickoffParams {
    with! {
        /// Export level.
        with_level: level: Level;
        /// `_type`.
        with_types: types: Vec<String>;
        /// `_since`.
        with_since: since: Option<String>;
        /// `_until` (STU3).
        with_until: until: Option<String>;
        /// `_elements`.
        with_elements: elements: Vec<String>;
        /// `_typeFilter`, one per filter.
        with_type_filters: type_filters: Vec<String>;
        /// `patient` references (forces POST).
        with_patients: patients: Vec<String>;
        /// `includeAssociatedData`.
        with_include_associated_data: include_associated_data: Vec<String>;
        /// `_outputFormat`.
        with_output_format: output_format: String;
        /// Any other parameters.
        with_extra: extra: Vec<(String, String)>;
        /// Parameter style.
        with_style: style: ParamStyle;
        /// `Prefer: handling=lenient`.
        with_lenient: lenient: bool;
        /// `allowPartialManifests=true` (STU3).
        with_allow_partial_manifests: allow_partial_manifests: bool;
    }
}

/// One parameter: a name and either one value or a list (joined by commas in comma-GET).
fn param_list(p: &KickoffParams) -> Vec<(&str, Vec<String>)> {
    let mut v: Vec<(&str, Vec<String>)> = vec![("_outputFormat", vec![p.output_format.clone()])];
    if !p.types.is_empty() {
        v.push(("_type", p.types.clone()));
    }
    if let Some(s) = &p.since {
        v.push(("_since", vec![s.clone()]));
    }
    if let Some(s) = &p.until {
        v.push(("_until", vec![s.clone()]));
    }
    if !p.elements.is_empty() {
        v.push(("_elements", p.elements.clone()));
    }
    // One _typeFilter parameter per filter: inner commas would be ambiguous in a list.
    for f in &p.type_filters {
        v.push(("_typeFilter", vec![f.clone()]));
    }
    if !p.include_associated_data.is_empty() {
        v.push(("includeAssociatedData", p.include_associated_data.clone()));
    }
    if p.allow_partial_manifests {
        v.push(("allowPartialManifests", vec!["true".into()]));
    }
    for (k, val) in &p.extra {
        v.push((k.as_str(), vec![val.clone()]));
    }
    v
}

/// The kick-off URL (with the query for GET).
pub(crate) fn kickoff_url(base: &Url, p: &KickoffParams) -> Url {
    let path = match &p.level {
        Level::Patient => "Patient/$export".to_owned(),
        Level::System => "$export".to_owned(),
        Level::Group(id) => format!("Group/{id}/$export"),
    };
    let mut url = crate::auth::join(base, &path);
    if style(p) != ParamStyle::Post {
        let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
        let mut parts = Vec::new();
        for (name, values) in param_list(p) {
            match style(p) {
                ParamStyle::CommaGet => {
                    // Each value is escaped (an inner comma becomes %2C); the list separator stays a comma.
                    let joined: Vec<String> = values.iter().map(|v| enc(v)).collect();
                    parts.push(format!("{}={}", enc(name), joined.join(",")));
                }
                _ => {
                    for v in &values {
                        parts.push(format!("{}={}", enc(name), enc(v)));
                    }
                }
            }
        }
        url.set_query(Some(&parts.join("&")));
    }
    url
}

fn style(p: &KickoffParams) -> ParamStyle {
    if p.patients.is_empty() {
        p.style
    } else {
        ParamStyle::Post
    }
}

fn parameters_body(p: &KickoffParams) -> Value {
    let mut params = Vec::new();
    for (name, values) in param_list(p) {
        for v in values {
            let value_key = match name {
                "_since" | "_until" => "valueInstant",
                "allowPartialManifests" => "valueBoolean",
                _ => "valueString",
            };
            let value = if value_key == "valueBoolean" {
                json!(v == "true")
            } else {
                json!(v)
            };
            params.push(json!({"name": name, value_key: value}));
        }
    }
    for r in &p.patients {
        params.push(json!({"name": "patient", "valueReference": {"reference": r}}));
    }
    json!({"resourceType": "Parameters", "parameter": params})
}

/// Send the kick-off; returns the absolute status URL.
pub(crate) async fn kickoff(ctx: &RunContext, base: &Url) -> Result<Url> {
    let p = &ctx.opts.kickoff;
    let url = kickoff_url(base, p);
    let post = style(p) == ParamStyle::Post;
    let body = post.then(|| parameters_body(p).to_string());
    let prefer = if p.lenient {
        "respond-async, handling=lenient"
    } else {
        "respond-async"
    };
    // The kickoff log event describes the server's software (as the reference client logs it),
    // from its CapabilityStatement; best effort, a server without one still exports.
    let cap = crate::auth::get_json(&ctx.http, &crate::auth::join(base, "metadata"))
        .await
        .unwrap_or(Value::Null);
    let mut retries = Retries::new(&ctx.opts.timing);
    loop {
        let method = if post { Method::POST } else { Method::GET };
        let (method, target, body) = (&method, &url, &body);
        let resp = send_with_token(
            &ctx.auth,
            true,
            &mut retries,
            |token: Option<Secret>| async move {
                ctx.http
                    .send(method.clone(), target, token.as_ref(), |r| {
                        let r = r
                            .header("accept", "application/fhir+json")
                            .header("prefer", prefer);
                        match body {
                            Some(b) => r
                                .header("content-type", "application/fhir+json")
                                .body(b.clone()),
                            None => r,
                        }
                    })
                    .await
            },
        )
        .await??;
        let status = resp.status();
        let headers = resp.headers().clone();
        let busy = status == StatusCode::SERVICE_UNAVAILABLE
            || (status == StatusCode::TOO_MANY_REQUESTS && headers.contains_key("retry-after"));
        if busy && let Some(wait) = retries.next(Some(&headers)) {
            ctx.observe(Event::Retrying {
                what: format!("kick-off: HTTP {status}"),
                wait,
            });
            tokio::time::sleep(wait).await;
            continue;
        }
        let text = resp.text().await.map_err(|e| Error::http(&url, e))?;
        let location = headers
            .get("content-location")
            .and_then(|v| v.to_str().ok())
            .and_then(|l| url.join(l.trim()).ok());
        let detail = |code: Option<u16>, body: Value| {
            json!({
                "exportUrl": RedactedUrl::new(url.clone()).redacted(),
                "softwareName": cap["software"]["name"],
                "softwareVersion": cap["software"]["version"],
                "softwareReleaseDate": cap["software"]["releaseDate"],
                "fhirVersion": cap["fhirVersion"],
                "requestParameters": request_parameters(p),
                "errorCode": code,
                "errorBody": body,
                "responseHeaders": headers_json(&headers),
            })
        };
        if status == StatusCode::ACCEPTED || status == StatusCode::OK {
            let Some(location) = location else {
                ctx.log
                    .emit("kickoff", detail(Some(status.as_u16()), body_json(&text)));
                return Err(Error::NoContentLocation {
                    url: url.into(),
                    status: status.as_u16(),
                });
            };
            ctx.log
                .set_export_id(RedactedUrl::new(location.clone()).redacted());
            ctx.log.emit("kickoff", detail(None, Value::Null));
            return Ok(location);
        }
        ctx.log
            .emit("kickoff", detail(Some(status.as_u16()), body_json(&text)));
        return Err(Error::Kickoff {
            url: url.into(),
            status: status.as_u16(),
            message: outcome_text(&text),
        });
    }
}

fn request_parameters(p: &KickoffParams) -> Value {
    let mut m = serde_json::Map::new();
    for (name, values) in param_list(p) {
        m.insert(name.to_owned(), json!(values.join(",")));
    }
    if !p.patients.is_empty() {
        m.insert("patient".into(), json!(p.patients));
    }
    Value::Object(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comma_get_escapes_inner_commas_of_type_filters() {
        let base = Url::parse("https://x.example/fhir/").unwrap();
        let p = KickoffParams {
            types: vec!["Patient".into(), "Observation".into()],
            type_filters: vec!["Observation?code=a,b".into()],
            ..KickoffParams::default()
        };
        let u = kickoff_url(&base, &p);
        assert_eq!(u.path(), "/fhir/Patient/$export");
        let q = u.query().unwrap();
        assert!(q.contains("_type=Patient,Observation"), "{q}");
        assert!(q.contains("_typeFilter=Observation%3Fcode%3Da%2Cb"), "{q}");
    }

    #[test]
    fn repeat_get() {
        let base = Url::parse("https://x.example/fhir").unwrap();
        let p = KickoffParams {
            level: Level::Group("g1".into()),
            types: vec!["Patient".into(), "Observation".into()],
            style: ParamStyle::RepeatGet,
            ..KickoffParams::default()
        };
        let u = kickoff_url(&base, &p);
        assert_eq!(u.path(), "/fhir/Group/g1/$export");
        assert!(
            u.query()
                .unwrap()
                .contains("_type=Patient&_type=Observation")
        );
    }
}
