//! Unfinished output files: every table and `_rejected/` file is written under a hidden
//! temporary name, `.<name>.<random>.flatfhir.tmp`, in its final directory and renamed into
//! place when complete. This module owns those names and three promises about them:
//!
//! - **Permissions follow the umask.** A temporary file is created with mode `0666` masked by
//!   the process umask (as `open(2)` does for any new file), so a restrictive umask (077)
//!   gives `0600` tables and the usual 022 gives `0644`. The rename keeps the mode.
//! - **A signal leaves nothing behind.** Every live temporary file is in a process-wide
//!   registry; [`abandon_all`] (called by the binary's SIGINT/SIGTERM handler) removes them
//!   and blocks any further rename, so an interrupted run leaves neither a half-written
//!   file nor a table renamed after the interruption.
//! - **Stale ones can be recognised.** A writer holds an advisory lock (`flock`) on its
//!   temporary file while it lives. [`sweep_stale`] removes files with the name pattern
//!   above that nobody holds locked and that are older than this process (left by a run that
//!   was killed with SIGKILL or lost power), and leaves everything else alone.

use std::collections::BTreeSet;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::SystemTime;

use tempfile::TempPath;

/// The end of every temporary output file's name.
pub const TEMP_SUFFIX: &str = ".flatfhir.tmp";

/// The registry of live temporary files: paths created and not yet renamed or removed.
fn registry() -> MutexGuard<'static, BTreeSet<PathBuf>> {
    static LIVE: Mutex<BTreeSet<PathBuf>> = Mutex::new(BTreeSet::new());
    LIVE.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// When this process started (first use of this module, which is before any output).
fn process_start() -> SystemTime {
    static START: OnceLock<SystemTime> = OnceLock::new();
    *START.get_or_init(SystemTime::now)
}

/// A temporary output file that is removed when dropped, unless [`persist`](Self::persist)ed.
#[derive(Debug)]
pub struct TempOutput {
    path: Option<TempPath>,
}

impl TempOutput {
    /// Creates `.<name>.<random>.flatfhir.tmp` in `dir` (mode 0666 less the umask), locks it,
    /// and registers it. `name` is the final file's name.
    ///
    /// # Errors
    /// The file cannot be created.
    pub fn create(dir: &Path, name: &str) -> std::io::Result<(File, Self)> {
        process_start();
        let mut live = registry();
        let prefix = format!(".{name}.");
        let mut builder = tempfile::Builder::new();
        builder.prefix(&prefix).suffix(TEMP_SUFFIX);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            // Masked by the umask at creation, as for any new file.
            builder.permissions(std::fs::Permissions::from_mode(0o666));
        }
        let (file, path) = builder.tempfile_in(dir)?.into_parts();
        // Advisory: a file system without locks still works, its stale files are then only
        // recognised by name.
        let _ = file.try_lock();
        live.insert(path.to_path_buf());
        Ok((file, Self { path: Some(path) }))
    }

    /// The temporary file's path.
    pub fn path(&self) -> &Path {
        self.path.as_deref().unwrap_or(Path::new(""))
    }

    /// Finishes the file: syncs `file` (the handle [`create`](Self::create) returned, with
    /// everything written and flushed) to disk, renames it to `to` while it is still open
    /// (and locked, so no other run takes it for stale), then closes it. Every output is
    /// finished this way, so a file appears complete under its name or not at all.
    ///
    /// # Errors
    /// The sync or the rename failed (the temporary file is then removed), or the process
    /// is being interrupted.
    pub fn commit(self, file: File, to: &Path) -> std::io::Result<()> {
        file.sync_all()?;
        self.persist(to)?;
        drop(file);
        Ok(())
    }

    /// Renames the file to `to`. Keep the file open until this returns: its lock tells
    /// [`sweep_stale`] in another process that the file is alive.
    ///
    /// # Errors
    /// The rename failed (the temporary file is then removed), or the process is being
    /// interrupted.
    pub fn persist(mut self, to: &Path) -> std::io::Result<()> {
        let Some(path) = self.path.take() else {
            return Err(std::io::Error::other("temporary file already gone"));
        };
        let mut live = registry();
        let key = path.to_path_buf();
        live.remove(&key);
        match path.persist(to) {
            Ok(()) => Ok(()),
            Err(e) => {
                // `e.path` is dropped here, which removes the temporary file.
                Err(e.error)
            }
        }
    }
}

impl Drop for TempOutput {
    fn drop(&mut self) {
        if let Some(path) = self.path.take() {
            let mut live = registry();
            live.remove::<Path>(path.as_ref());
            drop(path);
        }
    }
}

/// Removes every live temporary output file and keeps the registry locked for the rest of
/// the process, so that no thread renames a table into place or creates a new temporary
/// file afterwards. Returns how many files were removed. Meant for a signal handler thread
/// that exits the process right after.
pub fn abandon_all() -> usize {
    let live = registry();
    let mut removed = 0;
    for path in live.iter() {
        if std::fs::remove_file(path).is_ok() {
            removed += 1;
        }
    }
    // Never unlocked: the process is about to exit.
    std::mem::forget(live);
    removed
}

/// Whether `name` is a temporary output file's name.
pub fn is_temp_name(name: &str) -> bool {
    name.starts_with('.') && name.ends_with(TEMP_SUFFIX) && name.len() > TEMP_SUFFIX.len() + 1
}

/// Removes the stale temporary output files in `dir` (not recursive): those named like
/// [`TempOutput`]'s, not locked by a live writer, and last modified before this process
/// started. Returns the removed paths; a missing `dir` is empty.
///
/// # Errors
/// `dir` exists but cannot be listed, or a stale file cannot be removed.
pub fn sweep_stale(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let start = process_start();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut removed = Vec::new();
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        if !is_temp_name(&name.to_string_lossy()) || !entry.file_type()?.is_file() {
            continue;
        }
        let path = entry.path();
        let Ok(file) = File::open(&path) else {
            continue;
        };
        let old = file
            .metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|t| t < start);
        // A live writer (in this process or another) holds the lock.
        if old && file.try_lock().is_ok() {
            std::fs::remove_file(&path)?;
            removed.push(path);
        }
    }
    Ok(removed)
}

/// Checks that files can be created in `dir` (creating `dir` if missing) by creating and
/// removing a temporary output file there: the same call that writing a table makes later.
///
/// # Errors
/// `dir` cannot be created, or a file cannot be created in it.
pub fn check_writable(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let (_file, temp) = TempOutput::create(dir, "write-check")?;
    drop(temp);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_files_are_named_locked_and_removed_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let (_f, t) = TempOutput::create(dir.path(), "Patient.parquet").unwrap();
        let name = t.path().file_name().unwrap().to_string_lossy().into_owned();
        assert!(name.starts_with(".Patient.parquet."), "{name}");
        assert!(is_temp_name(&name), "{name}");
        // Locked by this writer: not stale even once old.
        assert!(sweep_stale(dir.path()).unwrap().is_empty());
        let p = t.path().to_path_buf();
        drop(t);
        assert!(!p.exists());
    }

    #[test]
    fn persist_renames_and_unregisters() {
        let dir = tempfile::tempdir().unwrap();
        let (f, t) = TempOutput::create(dir.path(), "A.csv").unwrap();
        let tmp = t.path().to_path_buf();
        t.persist(&dir.path().join("A.csv")).unwrap();
        drop(f);
        assert!(dir.path().join("A.csv").exists());
        assert!(!tmp.exists());
        assert!(!registry().contains(&tmp));
    }

    #[test]
    fn commit_writes_renames_and_cleans_up_on_failure() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let (mut f, t) = TempOutput::create(dir.path(), "A.ndjson").unwrap();
        f.write_all(b"{}\n").unwrap();
        let tmp = t.path().to_path_buf();
        t.commit(f, &dir.path().join("A.ndjson")).unwrap();
        assert_eq!(std::fs::read(dir.path().join("A.ndjson")).unwrap(), b"{}\n");
        assert!(!tmp.exists() && !registry().contains(&tmp));
        // A rename that cannot happen leaves neither file.
        let (f, t) = TempOutput::create(dir.path(), "B.ndjson").unwrap();
        let tmp = t.path().to_path_buf();
        let to = dir.path().join("missing").join("B.ndjson");
        assert!(t.commit(f, &to).is_err());
        assert!(!tmp.exists() && !to.exists() && !registry().contains(&tmp));
    }
}
