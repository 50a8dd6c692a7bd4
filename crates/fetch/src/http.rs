//! The HTTP client: TLS (always verified; extra CA from `--ca-cert`), vendor headers, and
//! redirect following that drops `Authorization` when the origin changes. No retries here.
//! File downloads go through [`crate::h1`] (HTTP/1.1 read by hand) where it can take them,
//! else through reqwest; both get the one TLS configuration built in [`tls_config`].

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderName, HeaderValue, LOCATION};
use reqwest::{Method, Response};
use url::Url;

use crate::error::{Error, Result};
use crate::h1::{FastGet, Outcome};
use crate::redact::Secret;

/// Redirects followed per request before giving up.
const MAX_REDIRECTS: usize = 10;

/// A file download that sends nothing for this long fails (and is retried); every other
/// request (kick-off, status, manifest, token, DELETE: small answers) must finish within it.
pub(crate) const READ_TIMEOUT: Duration = Duration::from_secs(300);

/// A configured HTTP client.
#[derive(Debug, Clone)]
pub(crate) struct Http {
    /// No read timeout on the client: reqwest's reads the clock twice and resets a timer for
    /// every HTTP chunk of a body (one per NDJSON line on some servers; a visible share of such
    /// a download's profile: docs/performance.md, "Design choices"). [`Http::send`] gives each
    /// request a total timeout instead; a file download's headers are bounded in
    /// [`Http::send_download`] and its body by the download's own stall watchdog. One client,
    /// not two: each loads the system's root certificates (hundreds of syscalls).
    client: reqwest::Client,
    /// File downloads read by hand (`None` when a proxy is configured); shares the client's
    /// TLS configuration.
    fast: Option<Arc<FastGet>>,
}

impl Http {
    pub(crate) fn new(ca_cert: Option<&Path>, headers: &[(String, String)]) -> Result<Self> {
        let mut default_headers = HeaderMap::new();
        for (k, v) in headers {
            let name = HeaderName::from_bytes(k.trim().as_bytes())
                .map_err(|e| Error::Usage(format!("--header {k}: {e}")))?;
            let mut value = HeaderValue::from_str(v.trim())
                .map_err(|e| Error::Usage(format!("--header {k}: {e}")))?;
            // A vendor key: reqwest's client prints its default headers in Debug, but not
            // the value of a sensitive one.
            value.set_sensitive(true);
            default_headers.insert(name, value);
        }
        let tls = tls_config(ca_cert)?;
        // What reqwest sends unless a request sets it: its `Accept`, our `User-Agent`, then
        // `--header` over both.
        let user_agent = HeaderValue::from_static(concat!("flatfhir/", env!("CARGO_PKG_VERSION")));
        let mut fast_defaults = HeaderMap::new();
        fast_defaults.insert(reqwest::header::ACCEPT, HeaderValue::from_static("*/*"));
        fast_defaults.insert(reqwest::header::USER_AGENT, user_agent.clone());
        for (k, v) in &default_headers {
            fast_defaults.insert(k, v.clone());
        }
        let fast = FastGet::new(&tls, fast_defaults).map(Arc::new);
        // What reqwest offers by ALPN when it builds the configuration itself.
        let mut tls = tls;
        tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let client = reqwest::Client::builder()
            .user_agent(user_agent)
            .default_headers(default_headers)
            // Redirects are followed by hand so the token is dropped on a host change.
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(30))
            .tls_backend_preconfigured(tls)
            .build()
            .map_err(|e| Error::Usage(format!("building the HTTP client: {}", e.without_url())))?;
        Ok(Self { client, fast })
    }

    /// Send a request, following redirects by hand. `Authorization: Bearer` goes only to the
    /// origin of `url`; after a redirect to another origin it is dropped (a pre-signed
    /// cloud-storage URL must not receive the FHIR server's token).
    pub(crate) async fn send(
        &self,
        method: Method,
        url: &Url,
        token: Option<&Secret>,
        build: impl Fn(reqwest::RequestBuilder) -> reqwest::RequestBuilder,
    ) -> Result<(Url, Response)> {
        send_with(&self.client, method, url, token, |r| {
            build(r).timeout(READ_TIMEOUT)
        })
        .await
    }

    /// [`send`](Self::send) for a file download: the headers must arrive within
    /// [`READ_TIMEOUT`]; the body has no read timeout of its own (the caller watches it).
    pub(crate) async fn send_download(
        &self,
        url: &Url,
        token: Option<&Secret>,
        build: impl Fn(reqwest::RequestBuilder) -> reqwest::RequestBuilder,
    ) -> Result<(Url, Response)> {
        tokio::time::timeout(READ_TIMEOUT, async {
            match &self.fast {
                Some(fast) => send_fast(&self.client, fast, url, token, build).await,
                None => send_with(&self.client, Method::GET, url, token, build).await,
            }
        })
        .await
        .unwrap_or_else(|_| {
            Err(Error::Download {
                url: url.clone().into(),
                reason: format!("no response within {} s", READ_TIMEOUT.as_secs()),
            })
        })
    }
}

/// The request for `current`, with the token when `current` is on the origin the request
/// was first sent to.
fn request(
    client: &reqwest::Client,
    method: &Method,
    current: &Url,
    origin: &url::Origin,
    token: Option<&Secret>,
    build: &impl Fn(reqwest::RequestBuilder) -> reqwest::RequestBuilder,
) -> Result<reqwest::RequestBuilder> {
    let mut req = build(client.request(method.clone(), current.clone()));
    if let Some(t) = token
        && current.origin() == *origin
    {
        let mut v = HeaderValue::from_str(&format!("Bearer {}", t.expose()))
            .map_err(|_| Error::Usage("the access token is not a valid header value".into()))?;
        v.set_sensitive(true);
        req = req.header(AUTHORIZATION, v);
    }
    Ok(req)
}

/// Where a redirect answer points, if it is one.
fn redirect_target(current: &Url, resp: &Response) -> Result<Option<Url>> {
    if !resp.status().is_redirection() {
        return Ok(None);
    }
    let Some(loc) = resp.headers().get(LOCATION).and_then(|v| v.to_str().ok()) else {
        return Ok(None);
    };
    current.join(loc).map(Some).map_err(|e| Error::Download {
        url: current.clone().into(),
        reason: format!("bad redirect Location: {e}"),
    })
}

/// [`send_with`] for a file download: each hop through [`FastGet`] where it can, else through
/// reqwest, with the same headers and the same `Authorization` rule.
async fn send_fast(
    client: &reqwest::Client,
    fast: &FastGet,
    url: &Url,
    token: Option<&Secret>,
    build: impl Fn(reqwest::RequestBuilder) -> reqwest::RequestBuilder,
) -> Result<(Url, Response)> {
    let origin = url.origin();
    let mut current = url.clone();
    for _ in 0..=MAX_REDIRECTS {
        let req = request(client, &Method::GET, &current, &origin, token, &build)?
            .build()
            .map_err(|e| Error::http(&current, e))?;
        let resp = match fast.get(&req).await {
            Outcome::Response(r) => r,
            Outcome::Fallback => client
                .execute(req)
                .await
                .map_err(|e| Error::http(&current, e))?,
        };
        if let Some(next) = redirect_target(&current, &resp)? {
            current = next;
            continue;
        }
        return Ok((current, resp));
    }
    Err(Error::Download {
        url: url.clone().into(),
        reason: "too many redirects".into(),
    })
}

async fn send_with(
    client: &reqwest::Client,
    method: Method,
    url: &Url,
    token: Option<&Secret>,
    build: impl Fn(reqwest::RequestBuilder) -> reqwest::RequestBuilder,
) -> Result<(Url, Response)> {
    let origin = url.origin();
    let mut current = url.clone();
    for _ in 0..=MAX_REDIRECTS {
        let req = request(client, &method, &current, &origin, token, &build)?;
        let resp = req.send().await.map_err(|e| Error::http(&current, e))?;
        if let Some(next) = redirect_target(&current, &resp)? {
            current = next;
            continue;
        }
        return Ok((current, resp));
    }
    Err(Error::Download {
        url: url.clone().into(),
        reason: "too many redirects".into(),
    })
}

/// The TLS configuration of every request, built as reqwest builds its own by default (same
/// crypto provider, protocol versions and the platform verifier, with the `--ca-cert` roots
/// added), so that the hand-read downloads ([`crate::h1`]) verify exactly as reqwest does: it
/// is handed to reqwest too. ALPN is left to each user.
pub(crate) fn tls_config(ca_cert: Option<&Path>) -> Result<rustls::ClientConfig> {
    let extra = match ca_cert {
        Some(path) => {
            let pem = std::fs::read(path).map_err(|e| Error::io(path, e))?;
            // reqwest's parser, for its error message; the DER of each certificate for rustls.
            reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                Error::Usage(format!("--ca-cert {}: {}", path.display(), e.without_url()))
            })?;
            use rustls_pki_types::pem::PemObject as _;
            rustls_pki_types::CertificateDer::pem_slice_iter(&pem)
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|e| Error::Usage(format!("--ca-cert {}: {e}", path.display())))?
        }
        None => Vec::new(),
    };
    let provider = rustls::crypto::CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()));
    let verifier = if extra.is_empty() {
        rustls_platform_verifier::Verifier::new(provider.clone())
    } else {
        rustls_platform_verifier::Verifier::new_with_extra_roots(extra, provider.clone())
    }
    .map_err(|e| Error::Usage(format!("loading the TLS root certificates: {e}")))?;
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(rustls::ALL_VERSIONS)
        .map_err(|e| Error::Usage(format!("TLS set-up: {e}")))?
        .dangerous()
        // Not a weakening: the platform verifier verifies (chain, name, validity), as reqwest's.
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    Ok(config)
}

/// Response headers as a JSON object, for `log.ndjson`. Credentials never appear in response
/// headers we log except `Set-Cookie`, which is dropped.
pub(crate) fn headers_json(h: &HeaderMap) -> serde_json::Value {
    let mut m = serde_json::Map::new();
    for (k, v) in h {
        if k == reqwest::header::SET_COOKIE {
            continue;
        }
        if let Ok(s) = v.to_str() {
            m.insert(
                k.as_str().to_owned(),
                serde_json::Value::String(s.to_owned()),
            );
        }
    }
    serde_json::Value::Object(m)
}

/// The human text of an OperationOutcome body (diagnostics or details.text of each issue), or
/// the start of the body when it is not one.
pub(crate) fn outcome_text(body: &str) -> String {
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(body)
        && v["resourceType"] == "OperationOutcome"
    {
        let parts: Vec<String> = v["issue"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|i| {
                let text = i["diagnostics"]
                    .as_str()
                    .or_else(|| i["details"]["text"].as_str())
                    .unwrap_or("(no text)");
                format!(
                    "{} {}: {}",
                    i["severity"].as_str().unwrap_or("?"),
                    i["code"].as_str().unwrap_or("?"),
                    text
                )
            })
            .collect();
        if !parts.is_empty() {
            return parts.join("; ");
        }
    }
    let t = body.trim();
    if t.is_empty() {
        "(empty body)".into()
    } else {
        t.chars().take(500).collect()
    }
}

/// True when every issue of an OperationOutcome body has code `transient` (try again later).
pub(crate) fn is_transient(body: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(body).is_ok_and(|v| {
        v["resourceType"] == "OperationOutcome"
            && v["issue"]
                .as_array()
                .is_some_and(|a| !a.is_empty() && a.iter().all(|i| i["code"] == "transient"))
    })
}

#[cfg(test)]
#[path = "http_fast_tests.rs"]
mod fast_tests;
