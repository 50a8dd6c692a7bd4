//! Keeping secrets out of messages. Stores' errors may quote a request URL, and a URL may
//! carry a signature or SAS token in its query string; a server's message could echo a
//! header. [`redact`] replaces every URL query string and every credential value found in the
//! environment variables the stores read.

/// Environment variables whose values are secrets.
const SECRET_VARS: &[&str] = &[
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_ACCESS_KEY_ID",
    "AZURE_STORAGE_ACCOUNT_KEY",
    "AZURE_STORAGE_ACCESS_KEY",
    "AZURE_STORAGE_MASTER_KEY",
    "AZURE_STORAGE_SAS_KEY",
    "AZURE_STORAGE_SAS_TOKEN",
    "AZURE_STORAGE_TOKEN",
    "AZURE_CLIENT_SECRET",
    "AZURE_FEDERATED_TOKEN",
    "GOOGLE_SERVICE_ACCOUNT_KEY",
];

/// `text` with URL query strings and known secret values replaced by `[redacted]`.
pub fn redact(text: &str) -> String {
    let mut out = strip_queries(text);
    for var in SECRET_VARS {
        if let Ok(v) = std::env::var(var)
            && v.len() >= 8
        {
            out = out.replace(&v, "[redacted]");
        }
    }
    for v in crate::location::profile_secrets() {
        out = out.replace(&v, "[redacted]");
    }
    out
}

/// Replaces the query of every `http(s)://` URL in `text` with `?[redacted]`.
fn strip_queries(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("http") {
        let (before, from) = rest.split_at(i);
        out.push_str(before);
        if !(from.starts_with("http://") || from.starts_with("https://")) {
            out.push_str("http");
            rest = &from[4..];
            continue;
        }
        let end = from
            .find(|c: char| c.is_whitespace() || matches!(c, ')' | '"' | '\'' | '>' | ','))
            .unwrap_or(from.len());
        let url = &from[..end];
        match url.find('?') {
            Some(q) => {
                out.push_str(&url[..q]);
                out.push_str("?[redacted]");
            }
            None => out.push_str(url),
        }
        rest = &from[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_removed() {
        assert_eq!(
            strip_queries(
                "error sending request for url (https://a.blob.core.windows.net/c/k?sv=1&sig=SECRET): timed out"
            ),
            "error sending request for url (https://a.blob.core.windows.net/c/k?[redacted]): timed out"
        );
        assert_eq!(strip_queries("no url here, httpx"), "no url here, httpx");
        assert_eq!(strip_queries("http://h/p"), "http://h/p");
    }
}
