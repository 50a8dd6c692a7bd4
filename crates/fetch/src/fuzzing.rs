//! Entry points for the fuzz targets in `fuzz/` (not a stable API): the readers of what a
//! Bulk Data server sends back — the completion manifest and OperationOutcome bodies and
//! error files, and the de-framer of chunked file downloads.

use std::path::Path;

use url::Url;

use crate::manifest::ItemType;
use crate::summary::Issue;

/// One file of a manifest, as the manifest reader kept it.
#[derive(Debug, Clone)]
pub struct ManifestEntry {
    /// Which list it came from.
    pub item: ItemType,
    /// Position within its list.
    pub index: usize,
    /// `type`.
    pub resource_type: Option<String>,
    /// The file URL, resolved.
    pub url: String,
    /// `count`.
    pub count: Option<u64>,
}

/// A manifest page, as the manifest reader kept it.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// `transactionTime`.
    pub transaction_time: Option<String>,
    /// `requiresAccessToken` (true when absent).
    pub requires_access_token: bool,
    /// The files of every list.
    pub entries: Vec<ManifestEntry>,
    /// `link[relation=next]`, resolved.
    pub next: Option<String>,
}

/// Reads a manifest page as the client does; `base` resolves relative URLs.
pub fn manifest(v: &serde_json::Value, base: &Url) -> Result<Manifest, String> {
    let m = crate::manifest::Manifest::parse(v, base)?;
    Ok(Manifest {
        transaction_time: m.transaction_time,
        requires_access_token: m.requires_access_token,
        entries: m
            .entries
            .into_iter()
            .map(|e| ManifestEntry {
                item: e.item,
                index: e.index,
                resource_type: e.resource_type,
                url: e.url.to_string(),
                count: e.count,
            })
            .collect(),
        next: m.next.map(|u| u.to_string()),
    })
}

/// The text shown for an error response body.
pub fn outcome_text(body: &str) -> String {
    crate::http::outcome_text(body)
}

/// Whether an error response body asks to try again later.
pub fn is_transient(body: &str) -> bool {
    crate::http::is_transient(body)
}

/// The issues of an export's error file `rel` under `dir`.
pub fn read_issues(dir: &Path, rel: &str) -> Vec<Issue> {
    crate::summary::read_issues(dir, rel)
}

/// De-frames a chunked body as a file download does (the hand-read HTTP/1.1 reader), the input fed in reads of
/// the sizes in `steps` (cycled): the body and the input bytes its framing took, `None` when
/// the input ends first (an error at a connection's end), or why the framing is refused.
pub fn dechunk(wire: &[u8], steps: &[usize]) -> Result<Option<(Vec<u8>, usize)>, String> {
    crate::h1::dechunk_whole(wire, steps)
}

/// The chunked grammar read plainly, all input at once (RFC 9112 7.1, with `httparse`'s
/// leniency: blanks after the size, any octets but CR in an extension; at most 16 hex
/// digits): `Ok(Some((body, bytes taken)))`, `Ok(None)` when the input ends first, `Err` with why it is refused.
/// The oracle [`dechunk`] is checked against (by the `chunked` fuzz target and the reader's
/// property tests): written apart from the reader, on purpose, and used by nothing else.
pub fn reference_dechunk(w: &[u8]) -> Result<Option<(Vec<u8>, usize)>, &'static str> {
    let mut p = 0;
    let mut out = Vec::new();
    loop {
        let mut size = 0u64;
        let mut digits = 0;
        while let Some(d) = w.get(p).and_then(|b| (*b as char).to_digit(16)) {
            digits += 1;
            if digits > 16 {
                return Err("more than 16 hex digits");
            }
            size = size * 16 + u64::from(d);
            p += 1;
        }
        if p == w.len() {
            return Ok(None);
        }
        if digits == 0 {
            return Err("a size line without a digit");
        }
        while matches!(w.get(p), Some(b' ' | b'\t')) {
            p += 1;
        }
        if w.get(p) == Some(&b';') {
            while !matches!(w.get(p), None | Some(b'\r')) {
                p += 1;
            }
        }
        match (w.get(p), w.get(p + 1)) {
            (None, _) | (Some(b'\r'), None) => return Ok(None),
            (Some(b'\r'), Some(b'\n')) => p += 2,
            _ => return Err("a size line not ended by CRLF"),
        }
        if size == 0 {
            loop {
                let Some(nl) = w[p..].windows(2).position(|x| x == b"\r\n") else {
                    return Ok(None);
                };
                p += nl + 2;
                if nl == 0 {
                    return Ok(Some((out, p)));
                }
            }
        }
        if ((w.len() - p) as u64) < size.saturating_add(2) {
            return Ok(None);
        }
        let size = size as usize;
        out.extend_from_slice(&w[p..p + size]);
        p += size;
        if &w[p..p + 2] != b"\r\n" {
            return Err("chunk data not followed by CRLF");
        }
        p += 2;
    }
}
