//! What `export --demo` may delete: only files it can prove it wrote. At the end of every demo
//! run (finished, failed or interrupted) it records the files it created, with their size and
//! modification time, in `DIR/.flatfhir-demo.json`. Running the demo again into the same DIR
//! removes exactly those files, and only if each is unchanged; a DIR with an export the demo
//! did not record (a real one, whatever its server's address) or a recorded file that changed
//! since is refused with an error, and nothing is deleted.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use flatfhir_fetch::JOB_FILE;

use super::outdir::{Entry, entry_of};

/// The demo's record of the files it wrote, in DIR.
pub(crate) const DEMO_MARKER: &str = ".flatfhir-demo.json";

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Record {
    version: u32,
    /// Paths relative to DIR (absolute for tables outside it).
    files: Vec<Entry>,
}

/// The directories a demo run writes into: DIR, its `error/` and `deleted/`, the tables
/// directory and its `_rejected/`.
fn areas(out: &Path, tables: &Path) -> Vec<PathBuf> {
    vec![
        out.to_path_buf(),
        out.join("error"),
        out.join("deleted"),
        tables.to_path_buf(),
        tables.join("_rejected"),
    ]
}

/// The regular files in the demo's areas, as paths relative to `out` where they are under it.
fn files_in(out: &Path, tables: &Path) -> Vec<String> {
    let mut found = Vec::new();
    for dir in areas(out, tables) {
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in rd.filter_map(Result::ok) {
            if e.file_type().is_ok_and(|t| t.is_file()) {
                let p = e.path();
                let rel = p.strip_prefix(out).map_or_else(
                    |_| p.display().to_string(),
                    |r| {
                        r.components()
                            .map(|c| c.as_os_str().to_string_lossy().into_owned())
                            .collect::<Vec<_>>()
                            .join("/")
                    },
                );
                found.push(rel);
            }
        }
    }
    found.sort();
    found.dedup();
    found
}

/// A demo run's view of DIR: what was there before it wrote anything.
#[derive(Debug, Clone)]
pub(crate) struct DemoDir {
    out: PathBuf,
    tables: PathBuf,
    before: Vec<String>,
}

impl DemoDir {
    /// Clears a previous demo run from `out` (only its recorded, unchanged files), refuses an
    /// export the demo did not write, and notes what is there before this run. Returns the
    /// files removed too.
    pub(crate) fn begin(out: &Path, tables: &Path) -> anyhow::Result<(Self, Vec<PathBuf>)> {
        let removed = clear_previous(out)?;
        let dir = Self {
            out: out.to_path_buf(),
            tables: tables.to_path_buf(),
            before: files_in(out, tables),
        };
        Ok((dir, removed))
    }

    /// Records the files this run created (finished, failed or interrupted alike).
    pub(crate) fn record(&self) -> anyhow::Result<()> {
        let files: Vec<Entry> = files_in(&self.out, &self.tables)
            .into_iter()
            .filter(|rel| !self.before.contains(rel) && rel != DEMO_MARKER)
            .filter_map(|rel| entry_of(&self.out, &rel))
            .collect();
        let path = self.out.join(DEMO_MARKER);
        let werr = |e: std::io::Error| anyhow::anyhow!("cannot write {}: {e}", path.display());
        let (mut file, temp) =
            flatfhir_core::outfile::TempOutput::create(&self.out, DEMO_MARKER).map_err(werr)?;
        let mut text = serde_json::to_vec_pretty(&Record { version: 1, files })?;
        text.push(b'\n');
        std::io::Write::write_all(&mut file, &text).map_err(werr)?;
        temp.commit(file, &path).map_err(werr)?;
        Ok(())
    }
}

/// Records the demo's files when dropped without [`record`](Self::record) having been called:
/// on an early error return or a panic, so that the next demo run can still clear them.
#[derive(Debug)]
pub(crate) struct RecordOnDrop(Option<DemoDir>);

impl RecordOnDrop {
    pub(crate) fn new(dir: DemoDir) -> Self {
        Self(Some(dir))
    }

    /// A copy of the directory's record keeper (for a signal handler).
    pub(crate) fn dir(&self) -> DemoDir {
        self.0.clone().expect("recorded only once, by value")
    }

    /// Records now, reporting failure.
    pub(crate) fn record(mut self) -> anyhow::Result<()> {
        match self.0.take() {
            Some(d) => d.record(),
            None => Ok(()),
        }
    }
}

impl Drop for RecordOnDrop {
    fn drop(&mut self) {
        if let Some(d) = self.0.take() {
            let _ = d.record();
        }
    }
}

/// Removes the files a previous demo recorded in `out`, if every one is unchanged; refuses
/// (deleting nothing) when DIR holds an export the demo did not record.
fn clear_previous(out: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let marker = out.join(DEMO_MARKER);
    let record: Option<Record> = match std::fs::read_to_string(&marker) {
        Ok(text) => Some(
            serde_json::from_str(&text)
                .with_context(|| format!("{} is not a demo record", marker.display()))?,
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => anyhow::bail!("cannot read {}: {e}", marker.display()),
    };
    let job = out.join(JOB_FILE);
    let not_ours = || {
        let url = flatfhir_fetch::JobState::load(out)
            .ok()
            .flatten()
            .map(|j| format!(" from {}", super::export::redacted(&j.fhir_url)))
            .unwrap_or_default();
        anyhow::anyhow!(
            "{} holds an export{url} that `export --demo` did not write ({} is not in its record {DEMO_MARKER}); \
             the demo never deletes it: choose another --out",
            out.display(),
            JOB_FILE
        )
    };
    let Some(record) = record else {
        if job.exists() {
            return Err(not_ours());
        }
        return Ok(Vec::new());
    };
    if job.exists() && !record.files.iter().any(|e| e.path == JOB_FILE) {
        return Err(not_ours());
    }
    let mut remove = Vec::new();
    for e in &record.files {
        match entry_of(out, &e.path) {
            Some(now) if now == *e => remove.push(out.join(&e.path)),
            Some(_) => anyhow::bail!(
                "{} changed since `export --demo` wrote it; the demo deletes only its own unchanged files: \
                 choose another --out, or remove it yourself",
                out.join(&e.path).display()
            ),
            None => {}
        }
    }
    for p in &remove {
        std::fs::remove_file(p)
            .with_context(|| format!("removing the earlier demo's {}", p.display()))?;
    }
    std::fs::remove_file(&marker)
        .with_context(|| format!("removing the earlier demo's {}", marker.display()))?;
    // Directories the demo made, if that left them empty.
    for d in ["error", "deleted"] {
        let _ = std::fs::remove_dir(out.join(d));
    }
    Ok(remove)
}
