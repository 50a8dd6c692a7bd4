//! Files that survive a power cut: a file is complete under its final name only after its
//! bytes were fsynced, it was renamed into place and its directory fsynced. Both the
//! downloaded files and the job state that lists them are published this way, in that order,
//! so the job state never claims a file the disk may not hold. Files are created with the
//! process umask (no mode is forced).

use std::io::Write as _;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// fsync a directory, so a rename inside it is on disk.
#[cfg(unix)]
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    let d = std::fs::File::open(dir).map_err(|e| Error::io(dir, e))?;
    d.sync_all().map_err(|e| Error::io(dir, e))
}

/// Directories cannot be opened for fsync here; the rename is as durable as the OS makes it.
#[cfg(not(unix))]
#[allow(clippy::unnecessary_wraps)]
pub(crate) fn sync_dir(_dir: &Path) -> Result<()> {
    Ok(())
}

/// Rename the fsynced file `from` to `to` and fsync the directory of `to`.
pub(crate) fn publish(from: &Path, to: &Path) -> Result<()> {
    std::fs::rename(from, to).map_err(|e| Error::io(to, e))?;
    sync_dir(to.parent().unwrap_or(Path::new(".")))
}

/// Write `bytes` to `path` atomically: `{path}.tmp`, fsync, rename, and with `sync_parent`
/// an fsync of the directory. Without it, a power cut may bring back the previous version
/// (complete, never a torn one): enough for the job state saved after each file, whose
/// last save of a run does sync the directory. On any error the temporary file is removed.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8], sync_parent: bool) -> Result<()> {
    let tmp = PathBuf::from(format!("{}.tmp", path.display()));
    let written = (|| {
        let mut f = std::fs::File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
        f.write_all(bytes).map_err(|e| Error::io(&tmp, e))?;
        f.sync_all().map_err(|e| Error::io(&tmp, e))?;
        drop(f);
        std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    if sync_parent {
        sync_dir(path.parent().unwrap_or(Path::new(".")))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_rename_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        // The target is a non-empty directory: the rename fails after the temp file exists.
        let target = dir.path().join("state.json");
        std::fs::create_dir(&target).unwrap();
        std::fs::write(target.join("x"), "x").unwrap();
        assert!(write_atomic(&target, b"{}", true).is_err());
        assert!(!dir.path().join("state.json.tmp").exists());
    }
}
