//! Secrets as types: [`Secret`] (tokens, client assertions, client secrets) and [`RedactedUrl`]
//! (URLs whose signed query strings and passwords must not reach logs), and [`scrub`], the
//! last line of defence for text that came from elsewhere (a server's error message that
//! echoes the request) on its way to a log or the terminal.

use std::borrow::Cow;
use std::fmt;
use std::sync::{PoisonError, RwLock};

use url::Url;

/// A secret string that prints as `[redacted]` in `Debug` and `Display`.
///
/// Every secret made with [`Secret::new`] is also remembered (process-wide), so that
/// [`scrub`] can take it out of text that did not come through this type: a token endpoint
/// or FHIR server that echoes the request in its error message, for example.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

/// Values shorter than this are not scrubbed from text: replacing every `s` in a message
/// would garble it, and a secret that short protects nothing anyway.
const SCRUB_MIN_LEN: usize = 6;

/// Every secret value seen by [`Secret::new`] (deduplicated; a few per run: the configured
/// secret, one assertion and one access token per token request).
static KNOWN: RwLock<Vec<String>> = RwLock::new(Vec::new());

/// Remembers `value` so that [`scrub`] hides it. [`Secret::new`] does this itself; call it
/// for secret text that is never wrapped, such as a private key's lines.
pub fn register_secret(value: &str) {
    let value = value.trim();
    if value.len() < SCRUB_MIN_LEN {
        return;
    }
    // As sent in a form body (and echoed back so by some servers), too.
    let encoded: String = url::form_urlencoded::byte_serialize(value.as_bytes()).collect();
    let mut known = KNOWN.write().unwrap_or_else(PoisonError::into_inner);
    for v in [value, encoded.as_str()] {
        if !known.iter().any(|k| k == v) {
            known.push(v.to_owned());
        }
    }
    // Longest first, so that a secret containing another is replaced whole.
    known.sort_by_key(|k| std::cmp::Reverse(k.len()));
}

/// `text` with every registered secret replaced by `[redacted]`.
#[must_use]
pub fn scrub(text: &str) -> Cow<'_, str> {
    let known = KNOWN.read().unwrap_or_else(PoisonError::into_inner);
    let mut out = Cow::Borrowed(text);
    for k in known.iter() {
        if out.contains(k.as_str()) {
            out = Cow::Owned(out.replace(k.as_str(), "[redacted]"));
        }
    }
    out
}

impl Secret {
    /// Wrap a secret (and remember it for [`scrub`]).
    #[must_use]
    pub fn new(value: impl Into<String>) -> Self {
        let value = value.into();
        register_secret(&value);
        Self(value)
    }

    /// The secret itself, for the one place that must send it.
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Query parameter names (lowercase) that carry credentials in signed object-store URLs
/// (AWS `X-Amz-*`, Google `X-Goog-*`, Azure SAS `sig`/`se`/`sp`/..., generic `token`/`key`).
fn is_sensitive_param(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    const CONTAINS: [&str; 11] = [
        "sig", "token", "key", "cred", "secret", "auth", "pass", "session", "policy", "code",
        "expires",
    ];
    const EXACT: [&str; 11] = [
        "se", "sp", "sv", "st", "sr", "spr", "skoid", "sktid", "skt", "ske", "sks",
    ];
    n.starts_with("x-amz-")
        || n.starts_with("x-goog-")
        || CONTAINS.iter().any(|c| n.contains(c))
        || EXACT.contains(&n.as_str())
}

/// A URL that displays with its password and sensitive query values replaced by `[redacted]`.
#[derive(Clone, PartialEq, Eq)]
pub struct RedactedUrl(Url);

impl RedactedUrl {
    /// Wrap a URL.
    #[must_use]
    pub fn new(url: Url) -> Self {
        Self(url)
    }

    /// The real URL, for sending requests.
    #[must_use]
    pub fn expose(&self) -> &Url {
        &self.0
    }

    /// The display form as a `String` (for logs and `log.ndjson`).
    #[must_use]
    pub fn redacted(&self) -> String {
        self.to_string()
    }
}

impl From<Url> for RedactedUrl {
    fn from(u: Url) -> Self {
        Self(u)
    }
}

impl fmt::Display for RedactedUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut u = self.0.clone();
        if u.password().is_some() {
            let _ = u.set_password(Some("[redacted]"));
        }
        if u.query().is_some() {
            let pairs: Vec<(String, String)> = u
                .query_pairs()
                .map(|(k, v)| {
                    let v = if is_sensitive_param(&k) {
                        "[redacted]".to_owned()
                    } else {
                        v.into_owned()
                    };
                    (k.into_owned(), v)
                })
                .collect();
            let mut q = url::form_urlencoded::Serializer::new(String::new());
            for (k, v) in &pairs {
                q.append_pair(k, v);
            }
            let q = q.finish().replace("%5Bredacted%5D", "[redacted]");
            u.set_query(Some(&q));
        }
        f.write_str(u.as_str())
    }
}

impl fmt::Debug for RedactedUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RedactedUrl({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_query_values_are_hidden() {
        let u = Url::parse(
            "https://store.example/f/1.ndjson?X-Amz-Signature=abc&X-Amz-Credential=k&page=2&sig=zz",
        )
        .unwrap();
        let shown = RedactedUrl::new(u).to_string();
        assert!(
            !shown.contains("abc") && !shown.contains("=k&") && !shown.contains("zz"),
            "{shown}"
        );
        assert!(shown.contains("page=2"), "{shown}");
    }

    #[test]
    fn scrub_hides_every_secret_made() {
        let s = Secret::new("tok-0123456789");
        let _ = Secret::new("tok-0123456789-longer");
        let text = "server said: bad token tok-0123456789-longer and tok-0123456789.";
        assert_eq!(
            scrub(text),
            "server said: bad token [redacted] and [redacted]."
        );
        assert!(matches!(scrub("nothing here"), Cow::Borrowed(_)));
        assert_eq!(s.expose(), "tok-0123456789");
        // The form-encoded spelling, as a server may echo a request body.
        let _ = Secret::new("cs/secret+1 2");
        assert_eq!(
            scrub("got client_secret=cs%2Fsecret%2B1+2"),
            "got client_secret=[redacted]"
        );
        // Too short to scrub without garbling text.
        let _ = Secret::new("s");
        assert_eq!(scrub("status"), "status");
    }

    #[test]
    fn secrets_do_not_print() {
        let s = Secret::new("eyJhbGciOi");
        assert_eq!(format!("{s} {s:?}"), "[redacted] Secret([redacted])");
    }
}
