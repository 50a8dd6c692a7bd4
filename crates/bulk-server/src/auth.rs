//! SMART Backend Services on the server side: the token endpoint (verifying `private_key_jwt`
//! client assertions against registered JWKS, or a client secret) and bearer-token checks.

// tokio's clock: the real one, except in tests with paused time, where tokens expire in
// virtual time.
use tokio::time::Instant;

use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, jwk::Jwk};
use serde::Deserialize;

use crate::Shared;

/// A client registered with the server.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RegisteredClient {
    /// `client_id`.
    pub client_id: String,
    /// Public keys (`{"keys": [...]}`) that verify its client assertions.
    pub jwks: serde_json::Value,
    /// A client secret for `client_secret_basic` / `client_secret_post`.
    pub client_secret: Option<String>,
}

impl RegisteredClient {
    /// A client authenticating with a signed JWT, verified against `jwks`.
    #[must_use]
    pub fn with_jwks(client_id: impl Into<String>, jwks: serde_json::Value) -> Self {
        Self {
            client_id: client_id.into(),
            jwks,
            client_secret: None,
        }
    }

    /// A client authenticating with a shared secret.
    #[must_use]
    pub fn with_secret(client_id: impl Into<String>, secret: impl Into<String>) -> Self {
        Self {
            client_id: client_id.into(),
            jwks: serde_json::json!({"keys": []}),
            client_secret: Some(secret.into()),
        }
    }
}

#[derive(Debug)]
pub(crate) struct Token {
    expires: Instant,
    uses: u32,
}

#[derive(Debug, Deserialize)]
struct Claims {
    iss: String,
    sub: String,
    exp: u64,
    jti: Option<String>,
}

fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    (
        status,
        [("content-type", "application/json")],
        serde_json::json!({"error": error, "error_description": description}).to_string(),
    )
        .into_response()
}

fn random_token() -> String {
    let mut bytes = [0u8; 24];
    aws_lc_rs::rand::fill(&mut bytes).expect("system randomness");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// `POST /auth/token`.
pub(crate) fn token_endpoint(shared: &Shared, headers: &HeaderMap, body: &[u8]) -> Response {
    let call = {
        let mut st = shared.lock();
        st.token_calls += 1;
        st.token_calls
    };
    if call <= shared.config.faults.token_5xx {
        return oauth_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
            "flaky",
        );
    }
    if let Some(status) = shared.config.faults.token_error_echo {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
        let echo = format!("cannot accept {}", String::from_utf8_lossy(body));
        return oauth_error(status, "invalid_request", &echo);
    }
    let form: Vec<(String, String)> = url::form_urlencoded::parse(body).into_owned().collect();
    let get = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    if get("grant_type") != Some("client_credentials") {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "need client_credentials",
        );
    }
    let token_url = format!("{}/auth/token", shared.origin);
    let client_ok = if let Some(assertion) = get("client_assertion") {
        if get("client_assertion_type")
            != Some("urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
        {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "bad client_assertion_type",
            );
        }
        verify_assertion(shared, assertion, &token_url)
    } else {
        verify_secret(shared, headers, &form)
    };
    if let Err(why) = client_ok {
        return oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", &why);
    }
    let token = random_token();
    let lifetime = shared.config.token_lifetime;
    shared.lock().tokens.insert(
        token.clone(),
        Token {
            expires: Instant::now() + lifetime,
            uses: 0,
        },
    );
    let expires_in = if shared.config.faults.expires_in_as_string {
        serde_json::Value::String(lifetime.as_secs().to_string())
    } else {
        serde_json::Value::from(lifetime.as_secs())
    };
    let scope = get("scope").unwrap_or("system/*.read");
    (
        [("content-type", "application/json")],
        serde_json::json!({
            "access_token": token, "token_type": "bearer", "expires_in": expires_in, "scope": scope
        })
        .to_string(),
    )
        .into_response()
}

fn verify_secret(
    shared: &Shared,
    headers: &HeaderMap,
    form: &[(String, String)],
) -> Result<(), String> {
    let (id, secret) = if let Some(basic) = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
    {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(basic)
            .map_err(|_| "bad Basic header")?;
        let raw = String::from_utf8(raw).map_err(|_| "bad Basic header")?;
        let (id, secret) = raw.split_once(':').ok_or("bad Basic header")?;
        (id.to_owned(), secret.to_owned())
    } else {
        let get = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        (
            get("client_id").ok_or("no client")?,
            get("client_secret").ok_or("no client secret")?,
        )
    };
    let client = shared
        .config
        .clients
        .iter()
        .find(|c| c.client_id == id)
        .ok_or("unknown client")?;
    if client.client_secret.as_deref() == Some(secret.as_str()) {
        Ok(())
    } else {
        Err("wrong secret".into())
    }
}

fn verify_assertion(shared: &Shared, assertion: &str, token_url: &str) -> Result<(), String> {
    let header = jsonwebtoken::decode_header(assertion).map_err(|e| format!("header: {e}"))?;
    if header.typ.as_deref() != Some("JWT") {
        return Err("typ must be JWT".into());
    }
    let kid = header.kid.clone().ok_or("kid missing")?;
    let unverified: Claims = jsonwebtoken::dangerous::insecure_decode_claims(assertion)
        .map_err(|e| format!("claims: {e}"))?;
    let client = shared
        .config
        .clients
        .iter()
        .find(|c| c.client_id == unverified.iss)
        .ok_or("unknown client")?;
    let jwk_value = client.jwks["keys"]
        .as_array()
        .and_then(|keys| keys.iter().find(|k| k["kid"] == kid.as_str()))
        .ok_or("no registered key with that kid")?;
    let jwk: Jwk = serde_json::from_value(jwk_value.clone()).map_err(|e| format!("jwk: {e}"))?;
    let key = DecodingKey::from_jwk(&jwk).map_err(|e| format!("jwk: {e}"))?;
    if !matches!(
        header.alg,
        Algorithm::RS256
            | Algorithm::RS384
            | Algorithm::RS512
            | Algorithm::ES256
            | Algorithm::ES384
            | Algorithm::PS256
            | Algorithm::PS384
            | Algorithm::PS512
    ) {
        return Err("alg not allowed".into());
    }
    let mut validation = Validation::new(header.alg);
    validation.set_audience(&[token_url]);
    validation.set_issuer(&[&client.client_id]);
    validation.sub = Some(client.client_id.clone());
    validation.set_required_spec_claims(&["exp", "iss", "sub", "aud"]);
    validation.leeway = 5;
    let data = jsonwebtoken::decode::<Claims>(assertion, &key, &validation)
        .map_err(|e| format!("assertion: {e}"))?;
    let now = jsonwebtoken::get_current_timestamp();
    // SMART Backend Services: exp no more than five minutes in the future.
    if data.claims.exp > now + 300 + 5 {
        return Err("exp more than 5 minutes ahead".into());
    }
    if data.claims.sub != data.claims.iss {
        return Err("sub must equal iss".into());
    }
    let jti = data.claims.jti.ok_or("jti missing")?;
    if !shared.lock().jtis.insert(jti) {
        return Err("jti replayed".into());
    }
    Ok(())
}

/// Check the bearer token when the server has registered clients.
// The error is the response to send; it is built once per refused request, so its size is moot.
#[allow(clippy::result_large_err)]
pub(crate) fn check_bearer(shared: &Shared, headers: &HeaderMap) -> Result<(), Response> {
    if shared.config.clients.is_empty() {
        return Ok(());
    }
    let unauthorized = || {
        (
            StatusCode::UNAUTHORIZED,
            [("www-authenticate", "Bearer error=\"invalid_token\"")],
            crate::export::outcome("error", "login", "missing, unknown or expired access token"),
        )
            .into_response()
    };
    let Some(token) = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return Err(unauthorized());
    };
    let mut st = shared.lock();
    let Some(t) = st.tokens.get_mut(token) else {
        return Err(unauthorized());
    };
    t.uses += 1;
    let worn_out = shared.config.faults.token_uses.is_some_and(|n| t.uses > n);
    if worn_out || Instant::now() >= t.expires {
        return Err(unauthorized());
    }
    Ok(())
}
