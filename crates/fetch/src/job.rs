//! The job state file `DIR/.flatfhir-job.json`: kick-off URL, status URL, manifests and each
//! file's state, written atomically after every change so Ctrl-C or a crash leaves DIR
//! resumable. It holds no secrets (file URLs may be signed; the file is local state, not a log).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::manifest::ItemType;

/// Name of the job state file inside the output directory.
pub const JOB_FILE: &str = ".flatfhir-job.json";

/// Where an export stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Kick-off not yet accepted.
    Starting,
    /// Waiting for the manifest (or more manifest pages).
    Polling,
    /// All manifests in; downloading.
    Downloading,
    /// Every file tried (some may have failed: `--resume` retries them).
    Complete,
    /// Deleted on the server by `cancel`: cannot be resumed.
    Cancelled,
}

/// A file's download state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum FileStatus {
    /// Not started, or partly downloaded (`{path}.part` holds the bytes so far).
    Pending,
    /// Complete under its final name.
    Done {
        /// Resources (lines) in it.
        resources: u64,
        /// Bytes as downloaded (before gunzip).
        bytes: u64,
    },
    /// Failed after retries.
    Failed {
        /// Why.
        reason: String,
    },
}

/// One file of the export.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FileState {
    /// Which manifest list it came from.
    pub item: ItemType,
    /// Manifest page (0-based) it came from.
    pub page: usize,
    /// Index within its list on that page.
    pub index: usize,
    /// Resource type (from the manifest entry, or implied by the list).
    pub resource_type: String,
    /// Source URL (latest link).
    pub url: String,
    /// `count` from the manifest.
    pub count: Option<u64>,
    /// Whether the token goes with the download.
    pub requires_token: bool,
    /// Path relative to DIR, e.g. `1.Patient.ndjson` or `error/1.OperationOutcome.ndjson`.
    pub path: String,
    /// State.
    #[serde(flatten)]
    pub status: FileStatus,
}

/// The whole job.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobState {
    /// Format version.
    pub version: u32,
    /// FHIR base URL.
    pub fhir_url: String,
    /// Kick-off URL (without secrets; kick-off parameters are not secret).
    pub kickoff_url: String,
    /// Status URL once accepted.
    pub status_url: Option<String>,
    /// Phase.
    pub phase: Phase,
    /// `transactionTime` of the manifest: the `_since` for the next incremental export.
    pub transaction_time: Option<String>,
    /// Every manifest page as received.
    pub manifests: Vec<serde_json::Value>,
    /// Every file.
    pub files: Vec<FileState>,
    /// Non-secret auth settings, so `status`/`cancel`/`--resume` need no repeated flags.
    pub client_id: Option<String>,
    /// Private key path (the path, never the key).
    pub private_key_path: Option<PathBuf>,
    /// Key id.
    pub kid: Option<String>,
    /// Token URL override.
    pub token_url: Option<String>,
    /// The export was deleted on the server after a complete download
    /// (`--delete-on-success`).
    #[serde(default)]
    pub deleted_on_server: bool,
}

impl JobState {
    /// Read `DIR/.flatfhir-job.json`; `Ok(None)` when absent.
    ///
    /// # Errors
    /// When the file exists but cannot be read or parsed.
    pub fn load(dir: &Path) -> Result<Option<Self>> {
        let path = dir.join(JOB_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| Error::Job(format!("{}: corrupt job state: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(path, e)),
        }
    }

    /// Write atomically and durably (temp file, fsync, rename, fsync of DIR); a failed save
    /// leaves no temporary file.
    ///
    /// # Errors
    /// On I/O failure.
    pub fn save(&self, dir: &Path) -> Result<()> {
        save_bytes(dir, &self.to_bytes()?, true)
    }

    pub(crate) fn to_bytes(&self) -> Result<Vec<u8>> {
        serde_json::to_vec_pretty(self).map_err(|e| Error::Job(e.to_string()))
    }

    /// Next `n` for a file of this list and type (counts from 1 per type, per the shared layout).
    pub(crate) fn next_n(&self, item: ItemType, resource_type: &str) -> usize {
        self.files
            .iter()
            .filter(|f| {
                f.item == item && (item != ItemType::Output || f.resource_type == resource_type)
            })
            .count()
            + 1
    }
}

/// Write serialised job state; `sync_parent` as in [`crate::durable::write_atomic`].
pub(crate) fn save_bytes(dir: &Path, bytes: &[u8], sync_parent: bool) -> Result<()> {
    crate::durable::write_atomic(&dir.join(JOB_FILE), bytes, sync_parent)
}

/// The final path of a file: `{n}.{Type}.ndjson`, `error/{n}.OperationOutcome.ndjson`,
/// `deleted/{n}.Bundle.ndjson`.
pub(crate) fn file_path(item: ItemType, n: usize, resource_type: &str) -> String {
    match item {
        ItemType::Output => format!("{n}.{resource_type}.ndjson"),
        ItemType::Error => format!("error/{n}.OperationOutcome.ndjson"),
        ItemType::Deleted => format!("deleted/{n}.Bundle.ndjson"),
    }
}

/// Where the raw bytes of an unfinished download live.
pub(crate) fn part_path(dir: &Path, rel: &str) -> PathBuf {
    dir.join(format!("{rel}.part"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_save_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        // A non-empty directory where the job file goes: the final rename fails.
        std::fs::create_dir(dir.path().join(JOB_FILE)).unwrap();
        std::fs::write(dir.path().join(JOB_FILE).join("x"), "x").unwrap();
        let job = JobState {
            version: 1,
            fhir_url: "http://x/fhir".into(),
            kickoff_url: "http://x/fhir/$export".into(),
            status_url: None,
            phase: Phase::Starting,
            transaction_time: None,
            manifests: Vec::new(),
            files: Vec::new(),
            client_id: None,
            private_key_path: None,
            kid: None,
            token_url: None,
            deleted_on_server: false,
        };
        assert!(job.save(dir.path()).is_err());
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(Result::ok)
            .map(|e| e.file_name())
            .collect();
        assert_eq!(left, [std::ffi::OsString::from(JOB_FILE)], "{left:?}");
    }
}
