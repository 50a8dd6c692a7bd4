//! The output directory rule of `convert` and of `export`'s tables: a directory holds the
//! tables of one run, never a mix of two.
//!
//! - Before a run, the directory is created and checked for writing (a temporary file is made
//!   and removed), so an unwritable place fails at once, not after the whole pass. Stale
//!   temporary files of a killed run are removed (see `flatfhir_core::outfile`).
//! - A directory that already holds tables (`*.parquet`, `*.arrow`, a file this run would
//!   write, anything under `_rejected/`, or a file the last run recorded) is refused unless
//!   `--overwrite` is given.
//! - With `--overwrite`, the new set replaces the old one: same-named files are replaced
//!   (each atomically), and the earlier run's files that this run did not write are removed,
//!   but only those the run marker `.flatfhir-tables.json` proves flatfhir wrote (same path,
//!   size and modification time as recorded). Any other file is kept and named.
//! - After each run the marker lists the files that run wrote.

use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use anyhow::Context as _;
use flatfhir_core::outfile;

/// The run marker in an output directory.
pub(crate) const MARKER: &str = ".flatfhir-tables.json";

/// A file recorded in the marker.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Entry {
    /// Path relative to the output directory, `/`-separated.
    pub(crate) path: String,
    pub(crate) bytes: u64,
    /// Modification time, nanoseconds since the epoch.
    pub(crate) mtime_ns: u64,
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Marker {
    version: u32,
    files: Vec<Entry>,
}

/// What a run did to the files of the run before it.
#[derive(Debug, Default, serde::Serialize)]
pub(crate) struct Outcome {
    /// Files of an earlier run (or of someone else) that this run replaced.
    pub(crate) replaced: Vec<PathBuf>,
    /// Files of the earlier run that this run did not produce, removed (`--overwrite`).
    pub(crate) removed: Vec<PathBuf>,
    /// Files this run did not write and flatfhir cannot prove it wrote: left as they were.
    pub(crate) kept: Vec<PathBuf>,
    /// Stale temporary files of a killed run, removed before the run.
    pub(crate) stale_removed: Vec<PathBuf>,
    /// Hidden temporary files named like an older flatfhir's (`.Type.parquet.XXXXXX.tmp`),
    /// which carry no lock to tell a live writer from a dead one: named, not removed.
    pub(crate) old_temps: Vec<PathBuf>,
}

impl Outcome {
    /// One line for the human summary, or `None` when nothing happened to earlier files.
    pub(crate) fn describe(&self) -> Option<String> {
        let mut parts = Vec::new();
        if !self.stale_removed.is_empty() {
            parts.push(format!(
                "removed {} unfinished file(s) of an interrupted run ({})",
                self.stale_removed.len(),
                names(&self.stale_removed)
            ));
        }
        if !self.old_temps.is_empty() {
            parts.push(format!(
                "found {} hidden temporary file(s) an older flatfhir may have left (not removed; \
                 delete them if no flatfhir is writing here: {})",
                self.old_temps.len(),
                names(&self.old_temps)
            ));
        }
        if !self.replaced.is_empty() {
            parts.push(format!(
                "replaced {} file(s) ({})",
                self.replaced.len(),
                names(&self.replaced)
            ));
        }
        if !self.removed.is_empty() {
            parts.push(format!(
                "removed {} file(s) of the earlier run that this run did not produce ({})",
                self.removed.len(),
                names(&self.removed)
            ));
        }
        if !self.kept.is_empty() {
            parts.push(format!(
                "kept {} file(s) flatfhir did not write in its last run ({})",
                self.kept.len(),
                names(&self.kept)
            ));
        }
        (!parts.is_empty()).then(|| parts.join("; "))
    }
}

/// The first few file names of a list, for a message.
fn names(paths: &[PathBuf]) -> String {
    const SHOWN: usize = 5;
    let mut s = paths
        .iter()
        .take(SHOWN)
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    if paths.len() > SHOWN {
        s.push_str(&format!(", and {} more", paths.len() - SHOWN));
    }
    s
}

/// An output directory checked for a run.
#[derive(Debug)]
pub(crate) struct OutDir {
    dir: PathBuf,
    previous: Vec<Entry>,
    /// Table files present before the run (relative paths).
    existing: Vec<String>,
    stale_removed: Vec<PathBuf>,
    old_temps: Vec<PathBuf>,
}

impl OutDir {
    /// Prepares `dir` for a run that writes tables (and `will_write`, file names it knows in
    /// advance): creates it, checks it can be written (and `spill_dir`, when given), removes
    /// stale temporary files, and refuses earlier tables unless `overwrite`. `flag` names
    /// the option that allows replacing them, for the message.
    pub(crate) fn prepare(
        dir: &Path,
        will_write: &[String],
        overwrite: bool,
        spill_dir: Option<&Path>,
        flag: &str,
    ) -> anyhow::Result<Self> {
        outfile::check_writable(dir).map_err(|e| {
            anyhow::anyhow!("cannot write to output directory {}: {e}", dir.display())
        })?;
        if let Some(spill) = spill_dir {
            outfile::check_writable(spill).map_err(|e| {
                anyhow::anyhow!(
                    "cannot write the spill file in --spill-dir {}: {e}",
                    spill.display()
                )
            })?;
        }
        let mut stale_removed = outfile::sweep_stale(dir)
            .with_context(|| format!("removing stale temporary files in {}", dir.display()))?;
        let rejected = dir.join("_rejected");
        stale_removed.extend(outfile::sweep_stale(&rejected).with_context(|| {
            format!("removing stale temporary files in {}", rejected.display())
        })?);
        let mut old_temps = old_temp_files(dir);
        old_temps.extend(old_temp_files(&rejected));
        let previous = read_marker(dir)?;
        let existing = existing_tables(dir, will_write, &previous)?;
        if !existing.is_empty() && !overwrite {
            let shown: Vec<PathBuf> = existing.iter().map(PathBuf::from).collect();
            anyhow::bail!(
                "{} already holds tables of an earlier run ({}); flatfhir does not mix two runs in one directory: \
                 choose an empty output directory, or pass {flag} to replace them (files flatfhir did not write are kept)",
                dir.display(),
                names(&shown)
            );
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            previous,
            existing,
            stale_removed,
            old_temps,
        })
    }

    /// After the run: `written` are the files this run wrote. When the run is `complete`,
    /// the earlier run's files it did not write are removed where the marker proves
    /// flatfhir wrote them; then the marker is rewritten. Returns what happened.
    pub(crate) fn finish(self, written: &[PathBuf], complete: bool) -> anyhow::Result<Outcome> {
        let written_rel: Vec<String> = written.iter().filter_map(|p| self.relative(p)).collect();
        let mut outcome = Outcome {
            stale_removed: self.stale_removed.clone(),
            old_temps: self.old_temps.clone(),
            ..Outcome::default()
        };
        let mut keep_recorded = Vec::new();
        for rel in &self.existing {
            let path = self.dir.join(rel);
            if written_rel.contains(rel) {
                outcome.replaced.push(path);
                continue;
            }
            let proven = self
                .previous
                .iter()
                .find(|e| &e.path == rel)
                .filter(|e| entry_of(&self.dir, rel).as_ref() == Some(*e));
            match proven {
                Some(_) if complete => {
                    std::fs::remove_file(&path).with_context(|| {
                        format!("removing {} of the earlier run", path.display())
                    })?;
                    outcome.removed.push(path);
                }
                Some(e) => keep_recorded.push(e.clone()),
                None => outcome.kept.push(path),
            }
        }
        if !outcome.removed.is_empty() {
            // Only succeeds when empty.
            let _ = std::fs::remove_dir(self.dir.join("_rejected"));
        }
        let mut files: Vec<Entry> = written_rel
            .iter()
            .filter_map(|rel| entry_of(&self.dir, rel))
            .collect();
        files.extend(keep_recorded);
        if files.is_empty() {
            // Nothing to prove: a run that wrote nothing leaves no marker either.
            match std::fs::remove_file(self.dir.join(MARKER)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    anyhow::bail!("cannot remove {}: {e}", self.dir.join(MARKER).display())
                }
                _ => {}
            }
        } else {
            write_marker(&self.dir, &Marker { version: 1, files })?;
        }
        Ok(outcome)
    }

    fn relative(&self, path: &Path) -> Option<String> {
        let rel = path.strip_prefix(&self.dir).ok()?;
        Some(
            rel.components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join("/"),
        )
    }
}

/// Hidden files in `dir` named like the temporary files of flatfhir before
/// `flatfhir_core::outfile` (`.Patient.parquet.a1B2c3.tmp`, `.Patient.errors.a1B2c3.tmp`).
fn old_temp_files(dir: &Path) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = rd
        .filter_map(Result::ok)
        .filter(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.starts_with('.')
                && name.ends_with(".tmp")
                && !outfile::is_temp_name(&name)
                && [".parquet.", ".arrow.", ".ndjson.", ".csv.", ".errors."]
                    .iter()
                    .any(|k| name.contains(k))
        })
        .map(|e| e.path())
        .collect();
    found.sort();
    found
}

/// The marker's entry for `dir/rel` as it is now, or `None` when it is not a regular file.
pub(crate) fn entry_of(dir: &Path, rel: &str) -> Option<Entry> {
    let meta = std::fs::symlink_metadata(dir.join(rel)).ok()?;
    if !meta.is_file() {
        return None;
    }
    let mtime_ns = meta
        .modified()
        .ok()?
        .duration_since(UNIX_EPOCH)
        .ok()?
        .as_nanos() as u64;
    Some(Entry {
        path: rel.to_string(),
        bytes: meta.len(),
        mtime_ns,
    })
}

fn read_marker(dir: &Path) -> anyhow::Result<Vec<Entry>> {
    let path = dir.join(MARKER);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let m: Marker = serde_json::from_str(&text)
                .with_context(|| format!("{} is not a flatfhir run marker", path.display()))?;
            Ok(m.files)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(anyhow::anyhow!("cannot read {}: {e}", path.display())),
    }
}

/// Writes the marker atomically (mode 0666 less the umask, like the tables).
fn write_marker(dir: &Path, marker: &Marker) -> anyhow::Result<()> {
    let path = dir.join(MARKER);
    let werr = |e: std::io::Error| anyhow::anyhow!("cannot write {}: {e}", path.display());
    let (mut file, temp) = outfile::TempOutput::create(dir, MARKER).map_err(werr)?;
    let mut text = serde_json::to_vec_pretty(marker)?;
    text.push(b'\n');
    std::io::Write::write_all(&mut file, &text).map_err(werr)?;
    temp.commit(file, &path).map_err(werr)?;
    Ok(())
}

/// Table files in `dir` before a run: `*.parquet` and `*.arrow`, the names in `will_write`,
/// every file under `_rejected/`, and the files the marker lists; relative paths, sorted.
fn existing_tables(
    dir: &Path,
    will_write: &[String],
    previous: &[Entry],
) -> anyhow::Result<Vec<String>> {
    let mut found = Vec::new();
    let list = |d: &Path| -> anyhow::Result<Vec<(String, bool)>> {
        match std::fs::read_dir(d) {
            Ok(rd) => rd
                .map(|e| {
                    let e = e?;
                    Ok((
                        e.file_name().to_string_lossy().into_owned(),
                        e.file_type()?.is_file(),
                    ))
                })
                .collect::<std::io::Result<_>>()
                .with_context(|| format!("listing {}", d.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(anyhow::anyhow!("cannot list {}: {e}", d.display())),
        }
    };
    for (name, is_file) in list(dir)? {
        let table = name.ends_with(".parquet") || name.ends_with(".arrow");
        if is_file && !name.starts_with('.') && (table || will_write.contains(&name)) {
            found.push(name);
        }
    }
    for (name, is_file) in list(&dir.join("_rejected"))? {
        if is_file && !outfile::is_temp_name(&name) {
            found.push(format!("_rejected/{name}"));
        }
    }
    for e in previous {
        if entry_of(dir, &e.path).is_some() {
            found.push(e.path.clone());
        }
    }
    found.sort();
    found.dedup();
    Ok(found)
}
