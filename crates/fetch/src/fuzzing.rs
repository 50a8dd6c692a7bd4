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
