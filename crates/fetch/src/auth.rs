//! SMART Backend Services on the client side: loading the signing key (PEM or JWK), token
//! endpoint discovery, the signed client assertion, and the token cache with refresh. Other
//! credential kinds (client secret, fixed bearer token, none) share the same [`Credentials`].

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

// tokio's clock: the real one, except in tests with paused time, where token lifetimes then
// pass with the virtual time the waits take.
use tokio::time::Instant;

use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use tokio::sync::Mutex;
use url::Url;

use crate::error::{Error, Result};
use crate::http::Http;
use crate::redact::{RedactedUrl, Secret, register_secret, scrub};
use crate::retry::{Retries, Timing};

/// A private key that signs client assertions.
pub struct SigningKey {
    key: EncodingKey,
    alg: Algorithm,
    kid: String,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("alg", &self.alg)
            .field("kid", &self.kid)
            .field("key", &"[redacted]")
            .finish()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    Rsa,
    Ec(Algorithm),
}

// DER object identifiers, as their encoded bytes.
const OID_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
const OID_EC: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
const OID_P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const OID_P384: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x22];
const OID_P521: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x23];

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn ec_alg_for_der(der: &[u8]) -> Algorithm {
    if contains(der, OID_P256) {
        Algorithm::ES256
    } else if contains(der, OID_P521) {
        // jsonwebtoken has no ES512; reported when signing is attempted.
        Algorithm::ES384
    } else {
        let _ = OID_P384;
        Algorithm::ES384
    }
}

/// Parse an algorithm name (`RS384`, `ES384`, ...).
///
/// # Errors
/// For names that are not supported for client assertions.
pub fn parse_alg(name: &str) -> Result<Algorithm> {
    Ok(match name.to_ascii_uppercase().as_str() {
        "RS256" => Algorithm::RS256,
        "RS384" => Algorithm::RS384,
        "RS512" => Algorithm::RS512,
        "PS256" => Algorithm::PS256,
        "PS384" => Algorithm::PS384,
        "PS512" => Algorithm::PS512,
        "ES256" => Algorithm::ES256,
        "ES384" => Algorithm::ES384,
        other => {
            return Err(Error::Usage(format!(
                "--alg {other} is not supported (RS384, ES384, RS256, RS512, PS256, PS384, PS512, ES256)"
            )));
        }
    })
}

impl SigningKey {
    /// Load a PEM (PKCS#8 RSA/EC or PKCS#1 RSA) or JWK/JWKS file. `kid` picks the key from a
    /// JWKS and is required for PEM keys (the server looks the public key up by it); `alg`
    /// defaults from the key: RS384 for RSA, ES384 for P-384 (ES256 for P-256).
    ///
    /// # Errors
    /// Unreadable or unsupported keys; SEC1 EC keys get an error saying how to convert them.
    pub fn load(path: &Path, kid: Option<&str>, alg: Option<Algorithm>) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::KeyRead {
            path: path.to_owned(),
            source,
        })?;
        Self::from_text(&text, path, kid, alg)
    }

    /// A key from a value that is either a key file's path or the key itself, as
    /// `FLATFHIR_PRIVATE_KEY` may be: text that starts with `-----BEGIN` (PEM) or `{` (JWK)
    /// is the key; an existing file is read; anything else that looks like key material (a
    /// PEM body without its `-----BEGIN` line, several lines, a name too long for a file) is
    /// refused without showing it; the rest is taken as a path. `what` names the option in
    /// messages. Returns the key and, when it came from a file, the file's path.
    ///
    /// The value is never put in an error: only a path that does not look like a key is.
    ///
    /// # Errors
    /// As for [`SigningKey::load`], and [`Error::KeyText`] for text that is neither.
    pub fn from_source(
        value: &str,
        what: &str,
        kid: Option<&str>,
        alg: Option<Algorithm>,
    ) -> Result<(Self, Option<PathBuf>)> {
        let trimmed = value.trim_start();
        if trimmed.starts_with("-----BEGIN") || trimmed.starts_with('{') {
            return Ok((Self::from_text(value, Path::new(what), kid, alg)?, None));
        }
        let path = Path::new(value);
        if !path.is_file() && looks_like_key_text(value) {
            return Err(Error::KeyText {
                what: what.to_owned(),
            });
        }
        Ok((Self::load(path, kid, alg)?, Some(path.to_owned())))
    }

    /// Like [`SigningKey::load`], from the key text (e.g. from an environment variable).
    ///
    /// # Errors
    /// As for [`SigningKey::load`].
    pub fn from_text(
        text: &str,
        path: &Path,
        kid: Option<&str>,
        alg: Option<Algorithm>,
    ) -> Result<Self> {
        let bad = |reason: String| Error::BadKey {
            path: path.to_owned(),
            reason,
        };
        let trimmed = text.trim_start();
        // Remember the key's material so that no message can show it (see `scrub`).
        for line in trimmed.lines() {
            if !line.starts_with("-----") {
                register_secret(line);
            }
        }
        let (key, family, kid) = if trimmed.starts_with('{') {
            let (key, family, jwk_kid) = from_jwk_text(trimmed, kid).map_err(bad)?;
            (key, family, jwk_kid)
        } else {
            let kid = kid
                .ok_or_else(|| {
                    bad(
                        "--kid is required with a PEM key (the key id registered with the server)"
                            .into(),
                    )
                })?
                .to_owned();
            let (key, family) = from_pem(trimmed, path)?;
            (key, family, kid)
        };
        let default_alg = match family {
            Family::Rsa => Algorithm::RS384,
            Family::Ec(a) => a,
        };
        let alg = alg.unwrap_or(default_alg);
        let fits = match family {
            Family::Rsa => matches!(
                alg,
                Algorithm::RS256
                    | Algorithm::RS384
                    | Algorithm::RS512
                    | Algorithm::PS256
                    | Algorithm::PS384
                    | Algorithm::PS512
            ),
            Family::Ec(a) => alg == a,
        };
        if !fits {
            return Err(bad(format!(
                "--alg {alg:?} does not fit this key (use {default_alg:?})"
            )));
        }
        let sk = Self { key, alg, kid };
        // Sign once now so a bad key fails at start-up, not after a long kick-off.
        sk.assertion("probe", "https://probe.invalid/token")
            .map_err(|e| bad(format!("signing test failed: {e}")))?;
        Ok(sk)
    }

    /// The algorithm in use.
    #[must_use]
    pub fn alg(&self) -> Algorithm {
        self.alg
    }

    /// The key id in use.
    #[must_use]
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// A client assertion for `client_id` addressed to `token_url`: header `alg`, `kid`,
    /// `typ: JWT`; claims `iss = sub = client_id`, `aud`, `exp` 4 minutes ahead (the spec caps it
    /// at 5), a random `jti`.
    pub(crate) fn assertion(&self, client_id: &str, token_url: &str) -> Result<Secret, String> {
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.clone());
        header.typ = Some("JWT".into());
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let claims = serde_json::json!({
            "iss": client_id, "sub": client_id, "aud": token_url,
            "exp": now + 240, "iat": now, "jti": random_id(),
        });
        jsonwebtoken::encode(&header, &claims, &self.key)
            .map(Secret::new)
            .map_err(|e| e.to_string())
    }
}

fn random_id() -> String {
    let mut b = [0u8; 18];
    aws_lc_rs::rand::fill(&mut b).expect("system randomness");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

fn from_pem(text: &str, path: &Path) -> Result<(EncodingKey, Family)> {
    let bad = |reason: &str| Error::BadKey {
        path: path.to_owned(),
        reason: reason.to_owned(),
    };
    if text.contains("BEGIN EC PRIVATE KEY") {
        return Err(Error::Sec1Key {
            path: path.to_owned(),
        });
    }
    if text.contains("BEGIN ENCRYPTED PRIVATE KEY") {
        return Err(bad(
            "encrypted keys are not supported; decrypt with: openssl pkcs8 -topk8 -nocrypt -in KEY -out key.p8.pem",
        ));
    }
    if text.contains("BEGIN RSA PRIVATE KEY") {
        let key = EncodingKey::from_rsa_pem(text.as_bytes()).map_err(|e| bad(&e.to_string()))?;
        return Ok((key, Family::Rsa));
    }
    if !text.contains("BEGIN PRIVATE KEY") {
        return Err(bad(
            "not a PEM private key or JWK (expected BEGIN PRIVATE KEY or BEGIN RSA PRIVATE KEY)",
        ));
    }
    let body: String = text
        .lines()
        .skip_while(|l| !l.starts_with("-----BEGIN"))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END"))
        .collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(body.trim())
        // Not the decoder's message: it quotes a character of the key and its offset.
        .map_err(|_| bad("the PEM body is not valid base64"))?;
    if contains(&der, OID_RSA) {
        let key = EncodingKey::from_rsa_pem(text.as_bytes()).map_err(|e| bad(&e.to_string()))?;
        Ok((key, Family::Rsa))
    } else if contains(&der, OID_EC) {
        let alg = ec_alg_for_der(&der);
        let key = EncodingKey::from_ec_pem(text.as_bytes()).map_err(|e| bad(&e.to_string()))?;
        Ok((key, Family::Ec(alg)))
    } else {
        Err(bad(
            "unsupported key type (RSA and EC P-256/P-384 are supported)",
        ))
    }
}

/// Whether a value that names no existing file is more likely key text than a mistyped
/// path: a PEM body without its armour (base64 of a DER `SEQUENCE`), a `-----END` line
/// without the `-----BEGIN`, several lines, or a file-name component longer than any file
/// system allows (255 bytes). Such values are never echoed.
fn looks_like_key_text(value: &str) -> bool {
    let v = value.trim();
    if v.contains(['\n', '\r']) || v.contains("-----END") || v.contains("PRIVATE KEY") {
        return true;
    }
    if v.split('/').any(|part| part.len() > 255) {
        return true;
    }
    let compact: String = v.chars().filter(|c| !c.is_whitespace()).collect();
    compact.len() >= 32
        && compact
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=' | b'-' | b'_'))
        && [
            &base64::engine::general_purpose::STANDARD,
            &base64::engine::general_purpose::STANDARD_NO_PAD,
        ]
        .iter()
        .any(|e| {
            e.decode(&compact)
                .is_ok_and(|der| der.first() == Some(&0x30))
        })
}

fn b64u(v: &Value, field: &str) -> Result<Vec<u8>, String> {
    let s = v[field]
        .as_str()
        .ok_or_else(|| format!("JWK lacks `{field}`"))?;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s.trim_end_matches('='))
        .map_err(|e| format!("JWK `{field}`: {e}"))
}

/// DER of an unsigned big-endian INTEGER.
fn der_uint(bytes: &[u8]) -> Vec<u8> {
    let mut b: Vec<u8> = bytes.iter().copied().skip_while(|&x| x == 0).collect();
    if b.is_empty() || b[0] & 0x80 != 0 {
        b.insert(0, 0);
    }
    let mut out = vec![0x02];
    out.extend(der_len(b.len()));
    out.extend(b);
    out
}

fn der_len(n: usize) -> Vec<u8> {
    if n < 0x80 {
        vec![n as u8]
    } else {
        let bytes: Vec<u8> = n
            .to_be_bytes()
            .iter()
            .copied()
            .skip_while(|&x| x == 0)
            .collect();
        let mut v = vec![0x80 | bytes.len() as u8];
        v.extend(bytes);
        v
    }
}

fn from_jwk_text(text: &str, kid: Option<&str>) -> Result<(EncodingKey, Family, String), String> {
    let v: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let jwk = if let Some(keys) = v["keys"].as_array() {
        let private: Vec<&Value> = keys.iter().filter(|k| k.get("d").is_some()).collect();
        match kid {
            Some(kid) => *private
                .iter()
                .find(|k| k["kid"] == kid)
                .ok_or_else(|| format!("no private key with kid {kid} in the JWKS"))?,
            None if private.len() == 1 => private[0],
            None => return Err("the JWKS holds several private keys; choose one with --kid".into()),
        }
    } else {
        &v
    };
    if jwk.get("d").is_none() {
        return Err("the JWK is a public key (no `d`); pass the private key".into());
    }
    for field in ["d", "p", "q", "dp", "dq", "qi"] {
        if let Some(v) = jwk[field].as_str() {
            register_secret(v);
        }
    }
    let kid = kid
        .map(str::to_owned)
        .or_else(|| jwk["kid"].as_str().map(str::to_owned))
        .ok_or("the JWK has no kid; pass --kid")?;
    match jwk["kty"].as_str() {
        Some("RSA") => {
            // PKCS#1 RSAPrivateKey: SEQUENCE { 0, n, e, d, p, q, dp, dq, qi }.
            let mut seq = der_uint(&[0]);
            for f in ["n", "e", "d", "p", "q", "dp", "dq", "qi"] {
                seq.extend(der_uint(&b64u(jwk, f)?));
            }
            let mut der = vec![0x30];
            der.extend(der_len(seq.len()));
            der.extend(seq);
            Ok((EncodingKey::from_rsa_der(&der), Family::Rsa, kid))
        }
        Some("EC") => {
            use aws_lc_rs::signature::{
                ECDSA_P256_SHA256_FIXED_SIGNING, ECDSA_P384_SHA384_FIXED_SIGNING, EcdsaKeyPair,
            };
            let (alg, signing) = match jwk["crv"].as_str() {
                Some("P-256") => (Algorithm::ES256, &ECDSA_P256_SHA256_FIXED_SIGNING),
                Some("P-384") => (Algorithm::ES384, &ECDSA_P384_SHA384_FIXED_SIGNING),
                other => return Err(format!("unsupported EC curve {other:?} (P-256, P-384)")),
            };
            let mut public = vec![0x04];
            public.extend(b64u(jwk, "x")?);
            public.extend(b64u(jwk, "y")?);
            let pair =
                EcdsaKeyPair::from_private_key_and_public_key(signing, &b64u(jwk, "d")?, &public)
                    .map_err(|_| "the EC JWK's d, x and y do not form a key pair".to_owned())?;
            let doc = pair
                .to_pkcs8v1()
                .map_err(|_| "EC key encoding failed".to_owned())?;
            Ok((EncodingKey::from_ec_der(doc.as_ref()), Family::Ec(alg), kid))
        }
        other => Err(format!("unsupported JWK kty {other:?} (RSA, EC)")),
    }
}

/// How the client authenticates.
#[derive(Debug)]
#[non_exhaustive]
pub enum Credentials {
    /// An open server.
    None,
    /// A fixed bearer token (`--bearer`); cannot be refreshed.
    Bearer(Secret),
    /// `client_credentials` with a client secret (`client_secret_basic`, or form post).
    ClientSecret {
        /// `client_id`.
        client_id: String,
        /// The secret.
        secret: Secret,
        /// Send it in the form body instead of a Basic header.
        form_post: bool,
    },
    /// SMART Backend Services `private_key_jwt`.
    PrivateKey {
        /// `client_id`.
        client_id: String,
        /// The signing key.
        key: SigningKey,
    },
}

impl Credentials {
    /// The `client_id`, for the job state (which never holds the secret or the key).
    pub(crate) fn client_id(&self) -> Option<String> {
        match self {
            Credentials::PrivateKey { client_id, .. }
            | Credentials::ClientSecret { client_id, .. } => Some(client_id.clone()),
            _ => None,
        }
    }

    /// The signing key's `kid`, for the job state.
    pub(crate) fn kid(&self) -> Option<String> {
        match self {
            Credentials::PrivateKey { key, .. } => Some(key.kid().to_owned()),
            _ => None,
        }
    }
}

#[derive(Debug)]
struct Cached {
    token: Secret,
    refresh_at: Instant,
    /// A request sent with this token was answered with something other than a 401: the
    /// server takes the tokens it issues, so a 401 for this one is an expiry.
    accepted: bool,
}

/// Times one request may get a new token after a 401 (see
/// [`Authenticator::renew_after_401`]).
const RENEWALS_PER_REQUEST: u32 = 3;

/// Gets, caches and refreshes access tokens.
#[derive(Debug)]
pub(crate) struct Authenticator {
    http: Http,
    creds: Credentials,
    scope: String,
    fhir_base: Url,
    token_url: Mutex<Option<Url>>,
    cache: Mutex<Option<Cached>>,
    timing: Timing,
}

impl Authenticator {
    pub(crate) fn new(
        http: Http,
        creds: Credentials,
        scope: String,
        fhir_base: Url,
        token_url: Option<Url>,
        timing: Timing,
    ) -> Self {
        Self {
            http,
            creds,
            scope,
            fhir_base,
            token_url: Mutex::new(token_url),
            cache: Mutex::new(None),
            timing,
        }
    }

    /// After a 401 for a request sent with `used`: forgets that token, unless another
    /// request has already replaced it, so that the next [`token`](Self::token) is a new one.
    /// Returns whether to send the request again: the credentials can get tokens, and the
    /// request has not been refused [`RENEWALS_PER_REQUEST`] tokens that no request could
    /// use (counted in `renewals`), which is what a server that refuses every new token
    /// does. A 401 for a token that had worked (it expired, or parallel downloads used it
    /// up), or that another request already replaced, is not counted: a request may meet
    /// many of those while the export goes on.
    pub(crate) async fn renew_after_401(&self, used: Option<&Secret>, renewals: &mut u32) -> bool {
        let refreshable = matches!(
            self.creds,
            Credentials::ClientSecret { .. } | Credentials::PrivateKey { .. }
        );
        if !refreshable {
            return false;
        }
        let mut cache = self.cache.lock().await;
        let refused = match cache.as_ref() {
            Some(c) if Some(&c.token) == used => {
                let refused = !c.accepted;
                *cache = None;
                refused
            }
            _ => false,
        };
        if refused {
            if *renewals >= RENEWALS_PER_REQUEST {
                return false;
            }
            *renewals += 1;
        }
        true
    }

    /// A request sent with `token` was answered with something other than a 401.
    pub(crate) async fn accepted(&self, token: &Secret) {
        if let Some(c) = self.cache.lock().await.as_mut()
            && &c.token == token
        {
            c.accepted = true;
        }
    }

    /// The current access token, fetching or refreshing it when needed; `None` for open servers.
    pub(crate) async fn token(&self) -> Result<Option<Secret>> {
        match &self.creds {
            Credentials::None => return Ok(None),
            Credentials::Bearer(t) => return Ok(Some(t.clone())),
            _ => {}
        }
        let mut cache = self.cache.lock().await;
        if let Some(c) = cache.as_ref()
            && Instant::now() < c.refresh_at
        {
            return Ok(Some(c.token.clone()));
        }
        let (token, lifetime) = self.request_token().await?;
        // Refresh a little before expiry: at 80% of the lifetime, at most a minute early.
        let early = (lifetime / 5).min(Duration::from_secs(60));
        *cache = Some(Cached {
            token: token.clone(),
            refresh_at: Instant::now() + lifetime - early,
            accepted: false,
        });
        Ok(Some(token))
    }

    async fn token_url(&self) -> Result<Url> {
        let mut guard = self.token_url.lock().await;
        if let Some(u) = guard.as_ref() {
            return Ok(u.clone());
        }
        let u = discover(&self.http, &self.fhir_base).await?;
        *guard = Some(u.clone());
        Ok(u)
    }

    async fn request_token(&self) -> Result<(Secret, Duration)> {
        let token_url = self.token_url().await?;
        let mut retries = Retries::new(&self.timing);
        loop {
            let mut form: Vec<(&str, String)> = vec![
                ("grant_type", "client_credentials".into()),
                ("scope", self.scope.clone()),
            ];
            let mut basic = None;
            match &self.creds {
                Credentials::PrivateKey { client_id, key } => {
                    // A fresh assertion per attempt: the jti must be unique.
                    let a = key
                        .assertion(client_id, token_url.as_str())
                        .map_err(|reason| Error::BadKey {
                            path: PathBuf::from(key.kid()),
                            reason,
                        })?;
                    form.push((
                        "client_assertion_type",
                        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer".into(),
                    ));
                    form.push(("client_assertion", a.expose().to_owned()));
                }
                Credentials::ClientSecret {
                    client_id,
                    secret,
                    form_post: true,
                } => {
                    form.push(("client_id", client_id.clone()));
                    form.push(("client_secret", secret.expose().to_owned()));
                }
                Credentials::ClientSecret {
                    client_id,
                    secret,
                    form_post: false,
                } => {
                    basic = Some(
                        base64::engine::general_purpose::STANDARD
                            .encode(format!("{client_id}:{}", secret.expose())),
                    );
                }
                Credentials::None | Credentials::Bearer(_) => unreachable!("handled by token()"),
            }
            let body = {
                let mut ser = url::form_urlencoded::Serializer::new(String::new());
                for (k, v) in &form {
                    ser.append_pair(k, v);
                }
                ser.finish()
            };
            let sent = self
                .http
                .send(Method::POST, &token_url, None, |r| {
                    let r = r
                        .header("content-type", "application/x-www-form-urlencoded")
                        .header("accept", "application/json")
                        .body(body.clone());
                    match &basic {
                        Some(b) => r.header("authorization", format!("Basic {b}")),
                        None => r,
                    }
                })
                .await;
            let resp = match sent {
                Ok((_, r)) => r,
                Err(e) => {
                    let Some(wait) = retries.next(None) else {
                        return Err(e);
                    };
                    tracing::warn!("token request failed ({e}); retrying");
                    tokio::time::sleep(wait).await;
                    continue;
                }
            };
            let status = resp.status();
            let headers = resp.headers().clone();
            let text = resp.text().await.map_err(|e| Error::http(&token_url, e))?;
            if (status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS)
                && let Some(wait) = retries.next(Some(&headers))
            {
                tracing::warn!("token endpoint answered {status}; retrying in {wait:?}");
                tokio::time::sleep(wait).await;
                continue;
            }
            let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            if !status.is_success() {
                let message = match (v["error"].as_str(), v["error_description"].as_str()) {
                    (Some(e), Some(d)) => format!("{e}: {d}"),
                    (Some(e), None) => e.to_owned(),
                    _ => crate::http::outcome_text(&text),
                };
                // Some endpoints echo the request (assertion, secret) in their message.
                let message = scrub(&message).into_owned();
                return Err(Error::Token {
                    url: RedactedUrl::new(token_url),
                    status: status.as_u16(),
                    message,
                });
            }
            let token = v["access_token"].as_str().ok_or_else(|| Error::Token {
                url: RedactedUrl::new(token_url.clone()),
                status: status.as_u16(),
                message: "the response has no access_token".into(),
            })?;
            // expires_in is a number per RFC 6749, but some servers send a string.
            let expires_in = match &v["expires_in"] {
                Value::Number(n) => n.as_f64(),
                Value::String(s) => s.trim().parse::<f64>().ok(),
                _ => None,
            }
            .filter(|s| s.is_finite() && *s > 0.0)
            .unwrap_or(300.0);
            return Ok((
                Secret::new(token),
                Duration::from_secs_f64(expires_in.min(86_400.0)),
            ));
        }
    }
}

/// Find the token endpoint: `.well-known/smart-configuration`, then the CapabilityStatement's
/// `oauth-uris` extension (SMART App Launch 1.0 servers).
pub(crate) async fn discover(http: &Http, base: &Url) -> Result<Url> {
    let well_known = join(base, ".well-known/smart-configuration");
    let mut reasons = Vec::new();
    match get_json(http, &well_known).await {
        Ok(v) => {
            if let Some(t) = v["token_endpoint"].as_str() {
                return well_known.join(t).map_err(|e| Error::Discovery {
                    url: base.clone().into(),
                    reason: format!("bad token_endpoint: {e}"),
                });
            }
            reasons.push("smart-configuration has no token_endpoint".to_owned());
        }
        Err(e) => reasons.push(format!("smart-configuration: {e}")),
    }
    let metadata = join(base, "metadata");
    match get_json(http, &metadata).await {
        Ok(v) => {
            for rest in v["rest"].as_array().into_iter().flatten() {
                for ext in rest["security"]["extension"]
                    .as_array()
                    .into_iter()
                    .flatten()
                {
                    if ext["url"]
                        .as_str()
                        .is_some_and(|u| u.ends_with("oauth-uris"))
                    {
                        for inner in ext["extension"].as_array().into_iter().flatten() {
                            if inner["url"] == "token"
                                && let Some(t) = inner["valueUri"].as_str()
                                && let Ok(u) = metadata.join(t)
                            {
                                return Ok(u);
                            }
                        }
                    }
                }
            }
            reasons.push("CapabilityStatement has no oauth-uris token extension".to_owned());
        }
        Err(e) => reasons.push(format!("metadata: {e}")),
    }
    Err(Error::Discovery {
        url: base.clone().into(),
        reason: reasons.join("; "),
    })
}

/// `base` + `/` + `path`, whether or not the base ends in a slash.
pub(crate) fn join(base: &Url, path: &str) -> Url {
    let mut u = base.clone();
    let p = format!("{}/{}", u.path().trim_end_matches('/'), path);
    u.set_path(&p);
    u.set_query(None);
    u
}

pub(crate) async fn get_json(http: &Http, url: &Url) -> Result<Value, String> {
    let (_, resp) = http
        .send(Method::GET, url, None, |r| {
            r.header("accept", "application/json, application/fhir+json")
        })
        .await
        .map_err(|e| e.to_string())?;
    let status = resp.status();
    if !status.is_success() {
        return Err(format!("HTTP {status}"));
    }
    let text = resp.text().await.map_err(|e| e.without_url().to_string())?;
    serde_json::from_str(&text).map_err(|e| format!("not JSON: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn authenticator(creds: Credentials) -> Authenticator {
        let base = Url::parse("https://fhir.example/fhir/").unwrap();
        let http = Http::new(None, &[]).unwrap();
        Authenticator::new(
            http,
            creds,
            "system/*.read".into(),
            base,
            None,
            Timing::default(),
        )
    }

    async fn cache_with(auth: &Authenticator, token: &str) {
        *auth.cache.lock().await = Some(Cached {
            token: Secret::new(token),
            refresh_at: Instant::now() + Duration::from_secs(300),
            accepted: false,
        });
    }

    async fn cached(auth: &Authenticator) -> Option<Secret> {
        auth.cache.lock().await.as_ref().map(|c| c.token.clone())
    }

    /// A 401 drops the token it was sent with, but not a newer one another request already
    /// got; only tokens no request could use count against a request, at most
    /// `RENEWALS_PER_REQUEST` of them; a fixed bearer token is never renewed.
    #[tokio::test]
    async fn renewal_after_401() {
        let auth = authenticator(Credentials::ClientSecret {
            client_id: "c".into(),
            secret: Secret::new("s"),
            form_post: false,
        });
        let (old, new) = (Secret::new("old"), Secret::new("new"));
        cache_with(&auth, "new").await;
        let mut renewals = 0;
        // Another request already replaced the token: sent again, not counted.
        assert!(auth.renew_after_401(Some(&old), &mut renewals).await);
        assert_eq!(cached(&auth).await, Some(new.clone()));
        assert_eq!(renewals, 0);
        // A token that worked has expired (or was used up): dropped, not counted.
        auth.accepted(&new).await;
        assert!(auth.renew_after_401(Some(&new), &mut renewals).await);
        assert_eq!(cached(&auth).await, None);
        assert_eq!(renewals, 0);
        // New tokens refused before any use: counted, up to the limit.
        for k in 0..RENEWALS_PER_REQUEST {
            cache_with(&auth, &format!("t{k}")).await;
            let t = Secret::new(format!("t{k}"));
            assert!(auth.renew_after_401(Some(&t), &mut renewals).await);
            assert_eq!(cached(&auth).await, None);
        }
        assert_eq!(renewals, RENEWALS_PER_REQUEST);
        cache_with(&auth, "last").await;
        assert!(
            !auth
                .renew_after_401(Some(&Secret::new("last")), &mut renewals)
                .await
        );

        let bearer = authenticator(Credentials::Bearer(Secret::new("t")));
        assert!(
            !bearer
                .renew_after_401(Some(&Secret::new("t")), &mut 0)
                .await
        );
    }
}
