//! Input that is not a local file: object-store URLs (`s3://bucket/key`, `gs://…`, `az://…`).
//!
//! Core stays synchronous and free of network code. A process installs one [`RemoteInput`]
//! (the `flatfhir` binary and the Python module install `flatfhir-cloud`'s), and every place
//! that opens, sizes or lists input goes through `open`, `len` and `list` here, which
//! hand a path that is a URL to it and read local files as before. A URL travels through the
//! planner and readers as a `PathBuf` holding the URL text, so file names, natural order,
//! type-from-name and error messages (which name the URL) work unchanged.
//!
//! Why a process-wide hook instead of a parameter: input paths are opened in a dozen places
//! (planning, sniffing, Bundles, shards, the chunk reader, size estimates) that share no
//! context object; threading a store through all of them would change most public
//! signatures of this crate for one capability that a process sets once.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::{Arc, OnceLock};

/// One object found under a prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteObject {
    /// Its full URL.
    pub url: String,
    /// The key relative to the listed prefix (`/`-separated).
    pub relative: String,
    /// Its size in bytes.
    pub size: u64,
}

/// What a URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoteStat {
    /// An object of this size.
    Object(u64),
    /// A prefix with objects under it (read like a directory).
    Prefix,
}

/// Object storage as input, installed once per process with [`install`].
pub trait RemoteInput: Send + Sync + std::fmt::Debug {
    /// What `url` names; an error (`NotFound`) when it is neither an object nor a prefix.
    fn stat(&self, url: &str) -> io::Result<RemoteStat>;
    /// Every object under the prefix `url` (recursively), in key order.
    fn list(&self, url: &str) -> io::Result<Vec<RemoteObject>>;
    /// The object's bytes from `offset` to its end, streamed (ranged GETs).
    fn open(&self, url: &str, offset: u64) -> io::Result<Box<dyn Read + Send>>;
    /// Bytes `start..end` of the object (fewer at its end): one bounded request, for peeking
    /// at magic bytes without starting a whole download.
    fn read_range(&self, url: &str, start: u64, end: u64) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        self.open(url, start)?
            .take(end.saturating_sub(start))
            .read_to_end(&mut out)?;
        Ok(out)
    }
}

static REMOTE: OnceLock<Arc<dyn RemoteInput>> = OnceLock::new();

/// Installs the process's object-store reader; `false` if one was installed already (the
/// first stays).
pub fn install(remote: Arc<dyn RemoteInput>) -> bool {
    REMOTE.set(remote).is_ok()
}

/// The URL text when `path` is a URL (`scheme://…`, scheme of letters, digits, `+-.`, at
/// least two characters so that a Windows drive letter is never one).
pub fn url_of(path: &Path) -> Option<&str> {
    let s = path.to_str()?;
    let (scheme, rest) = s.split_once("://")?;
    (scheme.len() >= 2
        && scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
        && !rest.is_empty())
    .then_some(s)
}

fn remote(url: &str) -> io::Result<&'static Arc<dyn RemoteInput>> {
    REMOTE.get().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::Unsupported,
            format!("{url}: URLs are read by the flatfhir binary and Python package; this program installed no object-store reader"),
        )
    })
}

/// Opens a local file or a URL at `offset`.
pub(crate) fn open(path: &Path, offset: u64) -> io::Result<Box<dyn Read + Send>> {
    match url_of(path) {
        Some(url) => remote(url)?.open(url, offset),
        None => {
            let mut f = File::open(path)?;
            if offset > 0 {
                f.seek(SeekFrom::Start(offset))?;
            }
            Ok(Box::new(f))
        }
    }
}

/// The size of a local file or an object.
///
/// # Errors
/// It cannot be found or read.
pub fn len(path: &Path) -> io::Result<u64> {
    match url_of(path) {
        Some(url) => match remote(url)?.stat(url)? {
            RemoteStat::Object(n) => Ok(n),
            RemoteStat::Prefix => Err(io::Error::other(format!(
                "{url} is a prefix, not an object"
            ))),
        },
        None => std::fs::metadata(path).map(|m| m.len()),
    }
}

/// What a URL names (see [`RemoteInput::stat`]).
pub(crate) fn stat(url: &str) -> io::Result<RemoteStat> {
    remote(url)?.stat(url)
}

/// The objects under a prefix URL.
pub(crate) fn list(url: &str) -> io::Result<Vec<RemoteObject>> {
    remote(url)?.list(url)
}

/// Whether the file starts with the gzip magic bytes.
pub(crate) fn is_gzip(path: &Path) -> io::Result<bool> {
    if let Some(url) = url_of(path) {
        let remote = remote(url)?;
        // An empty object has no range to ask for.
        if matches!(remote.stat(url)?, RemoteStat::Object(0)) {
            return Ok(false);
        }
        return Ok(remote.read_range(url, 0, 2)? == [0x1f, 0x8b]);
    }
    let mut f = open(path, 0)?;
    let mut magic = [0u8; 2];
    let mut n = 0;
    while n < 2 {
        match f.read(&mut magic[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n == 2 && magic == [0x1f, 0x8b])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_told_from_paths() {
        assert_eq!(url_of(Path::new("s3://b/k")), Some("s3://b/k"));
        assert!(url_of(Path::new("abfs://c@a.dfs.core.windows.net/x")).is_some());
        assert_eq!(url_of(Path::new("C://x")), None);
        assert_eq!(url_of(Path::new("export/Patient.ndjson")), None);
        assert_eq!(url_of(Path::new("s3://")), None);
        assert_eq!(url_of(Path::new("dir/a://b")), None);
    }
}
