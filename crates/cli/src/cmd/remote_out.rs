//! `convert --out URL`: tables written to an object-store prefix (`s3://bucket/tables/`,
//! `gs://…`, `az://…`) under the rules of a local output directory (see `outdir`):
//!
//! - **Checked first.** Before any input is read, the prefix is listed and a probe object is
//!   written and deleted, so missing credentials, a missing bucket or a refused write fail at
//!   once with the URL and the store's reason.
//! - **No mixing.** A prefix that already holds tables (`*.parquet`, `*.arrow`, anything under
//!   `_rejected/`, or an object the last run's marker lists) is refused unless `--overwrite`.
//! - **`--overwrite` replaces the set**: same-named objects are replaced; objects of the
//!   earlier run this run does not produce are deleted only where the marker
//!   `PREFIX/.flatfhir-tables.json` proves flatfhir wrote them (same key, size and ETag).
//! - **Whole or nothing.** Each table is written to a local staging directory (under
//!   `--spill-dir`, or the system's temporary directory) exactly as for a local `--out`, then
//!   uploaded by one multipart upload, completed only when the whole file is stored and
//!   aborted on any error or SIGINT/SIGTERM; the staged file is removed once uploaded. A table
//!   appears whole or not at all.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::Context as _;

use super::outdir::{MARKER, Outcome};

/// A file recorded in a prefix's marker.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Entry {
    /// Key relative to the prefix.
    path: String,
    bytes: u64,
    e_tag: Option<String>,
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Marker {
    version: u32,
    store: String,
    files: Vec<Entry>,
}

/// An object-store output prefix checked for a run, and the local staging directory.
#[derive(Debug)]
pub(crate) struct RemoteOut {
    /// The prefix URL, without a trailing `/`.
    url: String,
    previous: Vec<Entry>,
    /// Table objects present before the run (relative keys), with their size and ETag.
    existing: Vec<Entry>,
    staging: tempfile::TempDir,
    written: Vec<Entry>,
}

/// The live staging directory, for [`remove_staging`].
static STAGING: Mutex<Option<PathBuf>> = Mutex::new(None);

/// Removes the staging directory of a run being interrupted (SIGINT/SIGTERM handler: the
/// process exits without running destructors).
pub(crate) fn remove_staging() {
    let dir = STAGING
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .take();
    if let Some(dir) = dir {
        let _ = std::fs::remove_dir_all(dir);
    }
}

fn is_table(rel: &str) -> bool {
    rel.ends_with(".parquet") || rel.ends_with(".arrow") || rel.starts_with("_rejected/")
}

impl RemoteOut {
    /// Checks the prefix `url` (see the module docs) and makes the staging directory.
    pub(crate) fn prepare(
        url: &str,
        overwrite: bool,
        spill_dir: Option<&Path>,
    ) -> anyhow::Result<Self> {
        let url = url.trim_end_matches('/').to_string();
        let listing = flatfhir_cloud::list_tagged(&url)
            .with_context(|| format!("cannot list the output prefix {url}"))?;
        let marker_url = format!("{url}/{MARKER}");
        let previous = if listing.iter().any(|(o, _)| o.relative == MARKER) {
            let bytes = flatfhir_cloud::get(&marker_url)?;
            serde_json::from_slice::<Marker>(&bytes)
                .with_context(|| format!("{marker_url}: not a flatfhir run marker"))?
                .files
        } else {
            Vec::new()
        };
        let existing: Vec<Entry> = listing
            .iter()
            .filter(|(o, _)| is_table(&o.relative) || previous.iter().any(|e| e.path == o.relative))
            .map(|(o, tag)| Entry {
                path: o.relative.clone(),
                bytes: o.size,
                e_tag: tag.clone(),
            })
            .collect();
        if !existing.is_empty() && !overwrite {
            let shown: Vec<&str> = existing.iter().take(5).map(|e| e.path.as_str()).collect();
            let more = if existing.len() > 5 {
                format!(", and {} more", existing.len() - 5)
            } else {
                String::new()
            };
            anyhow::bail!(
                "{url}/ already holds tables of an earlier run ({}{more}); flatfhir does not mix two runs under one prefix: \
                 choose an empty output prefix, or pass --overwrite to replace them (objects flatfhir did not write are kept)",
                shown.join(", ")
            );
        }
        // A probe: the credentials may list but not write.
        let probe = format!(
            "{url}/.flatfhir-probe-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        );
        flatfhir_cloud::put(&probe, Vec::new())
            .and_then(|_| flatfhir_cloud::delete(&probe))
            .map_err(|e| anyhow::anyhow!("cannot write to the output prefix {url}/: {e}"))?;
        let parent = spill_dir.map_or_else(std::env::temp_dir, Path::to_path_buf);
        let staging = tempfile::Builder::new()
            .prefix(".flatfhir-staging-")
            .tempdir_in(&parent)
            .with_context(|| {
                format!(
                    "cannot make a staging directory for the tables in {} (--spill-dir)",
                    parent.display()
                )
            })?;
        *STAGING
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(staging.path().into());
        Ok(Self {
            url,
            previous,
            existing,
            staging,
            written: Vec::new(),
        })
    }

    /// Where the tables are written before upload.
    pub(crate) fn staging(&self) -> &Path {
        self.staging.path()
    }

    /// The URL a staged file goes to.
    pub(crate) fn url_of(&self, staged: &Path) -> PathBuf {
        let rel = staged.strip_prefix(self.staging.path()).unwrap_or(staged);
        PathBuf::from(format!("{}/{}", self.url, rel.to_string_lossy()))
    }

    /// Uploads a staged file (a multipart upload, aborted on failure) and removes it; returns
    /// its URL.
    pub(crate) fn upload(&mut self, staged: &Path) -> anyhow::Result<PathBuf> {
        let url = self.url_of(staged);
        let text = url.to_string_lossy().into_owned();
        let done = flatfhir_cloud::upload_file(staged, &text)?;
        let _ = std::fs::remove_file(staged);
        let rel = text[self.url.len() + 1..].to_string();
        self.written.retain(|e| e.path != rel);
        self.written.push(Entry {
            path: rel,
            bytes: done.size,
            e_tag: done.e_tag,
        });
        Ok(url)
    }

    /// After the run: when `complete`, the earlier run's objects this run did not write are
    /// deleted where the marker proves flatfhir wrote them; then the marker is rewritten.
    pub(crate) fn finish(self, complete: bool) -> anyhow::Result<Outcome> {
        let mut outcome = Outcome::default();
        let mut files = self.written.clone();
        for e in &self.existing {
            let url = PathBuf::from(format!("{}/{}", self.url, e.path));
            if self.written.iter().any(|w| w.path == e.path) {
                outcome.replaced.push(url);
                continue;
            }
            let proven = self.previous.iter().any(|p| p == e);
            if proven && complete {
                flatfhir_cloud::delete(&url.to_string_lossy())?;
                outcome.removed.push(url);
            } else {
                if proven {
                    files.push(e.clone());
                }
                outcome.kept.push(url);
            }
        }
        let marker = Marker {
            version: 1,
            store: self.url.clone(),
            files,
        };
        flatfhir_cloud::put(
            &format!("{}/{MARKER}", self.url),
            serde_json::to_vec_pretty(&marker)?,
        )
        .context("cannot write the run marker")?;
        Ok(outcome)
    }
}
