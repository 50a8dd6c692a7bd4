//! The crawl's state file `DIR/.flatfhir-search.json` and its output files.
//!
//! Pages are appended to one open `{n}.{Type}.ndjson.part` per type (and
//! `error/{n}.OperationOutcome.ndjson.part` for `search.mode = outcome` entries). After a
//! page, every part it touched is fsynced, and only then does the state (written atomically:
//! temp file, fsync, rename) record the part's new length and the query's next URL. So after
//! a crash the state never claims bytes the disk may not hold: `--resume` cuts each part back
//! to its recorded length (dropping a page the state does not list) and fetches that page
//! again; nothing is lost and nothing written twice. A part becomes `{n}.{Type}.ndjson`
//! (fsync, rename, fsync of the directory: [`crate::durable`]) once it holds
//! [`super::SearchOptions::lines_per_file`] lines and at the end of the crawl; final names
//! appear only for whole files. The state holds no secret (the key's path, never the key).

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead as _, Write as _};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::durable;
use crate::error::Error as FetchError;

use super::{Error, Result};

/// Name of the crawl's state file inside the output directory.
pub const SEARCH_STATE_FILE: &str = ".flatfhir-search.json";

/// Where a query stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum QueryStatus {
    /// Pages remain (`next` is the next one).
    Running,
    /// Every page was written.
    Done,
    /// Stopped at `--max-pages` or `--max-resources`; `next` is where `--resume` with higher
    /// caps continues.
    Capped,
    /// A page failed after its retries; `--resume` tries it again.
    Failed {
        /// Why.
        reason: String,
    },
}

/// One query of the crawl.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[non_exhaustive]
pub struct QueryState {
    /// The query as given.
    pub query: String,
    /// Its first page's URL.
    pub first_url: String,
    /// The next page to fetch (`None` once the last page is written).
    pub next: Option<String>,
    /// Pages written.
    pub pages: u64,
    /// `search.mode = match` resources written (after de-duplication).
    pub matches: u64,
    /// `search.mode = include` resources written (after de-duplication).
    pub included: u64,
    /// OperationOutcome entries (`search.mode = outcome`) written to `error/`.
    pub outcomes: u64,
    /// Entries left out because an earlier page or query already had their (type, id).
    pub duplicates: u64,
    /// State.
    #[serde(flatten)]
    pub status: QueryStatus,
}

/// Which kind of file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Item {
    /// Resources (`{n}.{Type}.ndjson`).
    Output,
    /// OperationOutcome entries (`error/{n}.OperationOutcome.ndjson`).
    Error,
}

/// An output file, open (a `.part`) or published.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[non_exhaustive]
pub struct FileRecord {
    /// Which list.
    pub item: Item,
    /// Resource type.
    pub resource_type: String,
    /// Path relative to DIR (the final name).
    pub path: String,
    /// Bytes committed.
    pub bytes: u64,
    /// Lines (resources) committed.
    pub lines: u64,
    /// Whether it has its final name (otherwise its bytes are in `{path}.part`).
    pub published: bool,
}

/// The whole crawl.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[non_exhaustive]
pub struct SearchJob {
    /// Format version.
    pub version: u32,
    /// FHIR base URL.
    pub fhir_url: String,
    /// When the crawl started (client clock), `transactionTime` of `manifest.json`.
    pub started: String,
    /// `_count` asked for.
    pub count: Option<u32>,
    /// The queries, in order.
    pub queries: Vec<QueryState>,
    /// Output files.
    pub files: Vec<FileRecord>,
    /// Whether every query ended (done, capped or failed) and the files were published.
    pub finished: bool,
    /// Client id (for `--resume` without flags).
    pub client_id: Option<String>,
    /// Private key path (never the key).
    pub private_key_path: Option<PathBuf>,
    /// Key id.
    pub kid: Option<String>,
    /// Token endpoint, when given.
    pub token_url: Option<String>,
}

impl SearchJob {
    /// The crawl state in `dir`, if any.
    ///
    /// # Errors
    /// The file exists but cannot be read or parsed.
    pub fn load(dir: &Path) -> Result<Option<Self>> {
        let path = dir.join(SEARCH_STATE_FILE);
        match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| Error::State(format!("{}: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(FetchError::io(&path, e).into()),
        }
    }

    /// Write the state atomically (`sync_dir`: also fsync DIR).
    pub(crate) fn save(&self, dir: &Path, sync_dir: bool) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(self).map_err(|e| Error::State(e.to_string()))?;
        durable::write_atomic(&dir.join(SEARCH_STATE_FILE), &bytes, sync_dir)?;
        Ok(())
    }
}

fn file_path(item: Item, n: usize, rtype: &str) -> String {
    match item {
        Item::Output => format!("{n}.{rtype}.ndjson"),
        Item::Error => format!("error/{n}.OperationOutcome.ndjson"),
    }
}

fn part_path(dir: &Path, rel: &str) -> PathBuf {
    dir.join(format!("{rel}.part"))
}

/// The output side of a crawl: open parts, the (type, id) pairs written so far, the state.
#[derive(Debug)]
pub(crate) struct Output {
    pub(crate) job: SearchJob,
    dir: PathBuf,
    lines_per_file: u64,
    seen: HashSet<(String, String)>,
    open: BTreeMap<(Item, String), std::fs::File>,
}

/// One line for the output.
pub(crate) struct Line {
    pub(crate) item: Item,
    pub(crate) resource_type: String,
    pub(crate) text: String,
}

#[derive(Deserialize)]
struct Head {
    #[serde(rename = "resourceType")]
    resource_type: Option<String>,
    id: Option<String>,
}

impl Output {
    /// A new crawl's output, or a resumed one: every unpublished part is cut back to its
    /// recorded length, and the (type, id) pairs of every written resource are read back.
    pub(crate) fn open(job: SearchJob, dir: &Path, lines_per_file: u64) -> Result<Self> {
        let mut out = Self {
            job,
            dir: dir.to_owned(),
            lines_per_file: lines_per_file.max(1),
            seen: HashSet::new(),
            open: BTreeMap::new(),
        };
        for f in &mut out.job.files {
            if f.published {
                continue;
            }
            let part = part_path(dir, &f.path);
            let fin = dir.join(&f.path);
            match std::fs::metadata(&part) {
                Ok(m) if m.len() >= f.bytes => {
                    let file = std::fs::OpenOptions::new()
                        .write(true)
                        .open(&part)
                        .map_err(|e| FetchError::io(&part, e))?;
                    file.set_len(f.bytes)
                        .map_err(|e| FetchError::io(&part, e))?;
                    file.sync_all().map_err(|e| FetchError::io(&part, e))?;
                }
                Ok(m) => {
                    return Err(Error::State(format!(
                        "{} holds {} bytes, fewer than the {} the crawl state records: the \
                         disk lost written data; start the crawl again in a new directory",
                        part.display(),
                        m.len(),
                        f.bytes
                    )));
                }
                // Renamed into place after the state was saved: the rename is the last step.
                Err(_) if std::fs::metadata(&fin).is_ok_and(|m| m.len() == f.bytes) => {
                    f.published = true;
                }
                Err(e) => return Err(FetchError::io(&part, e).into()),
            }
        }
        // Which (type, id) pairs are written: read back from the files themselves.
        let files: Vec<(PathBuf, bool)> = out
            .job
            .files
            .iter()
            .filter(|f| f.item == Item::Output)
            .map(|f| {
                if f.published {
                    (dir.join(&f.path), true)
                } else {
                    (part_path(dir, &f.path), false)
                }
            })
            .collect();
        for (path, _) in files {
            let file = std::fs::File::open(&path).map_err(|e| FetchError::io(&path, e))?;
            for line in std::io::BufReader::new(file).lines() {
                let line = line.map_err(|e| FetchError::io(&path, e))?;
                if let Ok(Head {
                    resource_type: Some(t),
                    id: Some(id),
                }) = serde_json::from_str::<Head>(&line)
                {
                    out.seen.insert((t, id));
                }
            }
        }
        Ok(out)
    }

    /// Whether (type, id) is new; records it.
    pub(crate) fn first_time(&mut self, rtype: &str, id: &str) -> bool {
        self.seen.insert((rtype.to_owned(), id.to_owned()))
    }

    fn next_n(&self, item: Item, rtype: &str) -> usize {
        self.job
            .files
            .iter()
            .filter(|f| f.item == item && f.resource_type == rtype)
            .count()
            + 1
    }

    /// The open part for (item, type): its index in `job.files`, created when there is none.
    fn part(&mut self, item: Item, rtype: &str) -> Result<usize> {
        if let Some(i) = self
            .job
            .files
            .iter()
            .position(|f| !f.published && f.item == item && f.resource_type == rtype)
        {
            if !self.open.contains_key(&(item, rtype.to_owned())) {
                let path = part_path(&self.dir, &self.job.files[i].path);
                let file = std::fs::OpenOptions::new()
                    .append(true)
                    .open(&path)
                    .map_err(|e| FetchError::io(&path, e))?;
                self.open.insert((item, rtype.to_owned()), file);
            }
            return Ok(i);
        }
        let rel = file_path(item, self.next_n(item, rtype), rtype);
        let path = part_path(&self.dir, &rel);
        let parent = path.parent().unwrap_or(&self.dir).to_owned();
        std::fs::create_dir_all(&parent).map_err(|e| FetchError::io(&parent, e))?;
        // Created empty: a part left by a crash before the state named it holds nothing of value.
        let file = std::fs::File::create(&path).map_err(|e| FetchError::io(&path, e))?;
        durable::sync_dir(&parent)?;
        self.open.insert((item, rtype.to_owned()), file);
        self.job.files.push(FileRecord {
            item,
            resource_type: rtype.to_owned(),
            path: rel,
            bytes: 0,
            lines: 0,
            published: false,
        });
        Ok(self.job.files.len() - 1)
    }

    /// Append a page's lines and make them durable, then record them (and whatever `update`
    /// changes, e.g. the query's next URL) in the saved state. Full parts are published.
    pub(crate) fn commit(
        &mut self,
        lines: &[Line],
        update: impl FnOnce(&mut SearchJob),
    ) -> Result<()> {
        let mut touched: Vec<usize> = Vec::new();
        let mut grouped: BTreeMap<(Item, String), Vec<&Line>> = BTreeMap::new();
        for l in lines {
            grouped
                .entry((l.item, l.resource_type.clone()))
                .or_default()
                .push(l);
        }
        for ((item, rtype), group) in grouped {
            let i = self.part(item, &rtype)?;
            let mut buf = Vec::new();
            for l in &group {
                buf.extend_from_slice(l.text.as_bytes());
                buf.push(b'\n');
            }
            let path = part_path(&self.dir, &self.job.files[i].path);
            let f = self
                .open
                .get_mut(&(item, rtype.clone()))
                .ok_or_else(|| Error::State("part not open".into()))?;
            f.write_all(&buf).map_err(|e| FetchError::io(&path, e))?;
            f.sync_data().map_err(|e| FetchError::io(&path, e))?;
            self.job.files[i].bytes += buf.len() as u64;
            self.job.files[i].lines += group.len() as u64;
            touched.push(i);
        }
        update(&mut self.job);
        self.job.save(&self.dir, false)?;
        let full: Vec<usize> = touched
            .into_iter()
            .filter(|&i| self.job.files[i].lines >= self.lines_per_file)
            .collect();
        if !full.is_empty() {
            for i in full {
                self.publish(i)?;
            }
            self.job.save(&self.dir, false)?;
        }
        Ok(())
    }

    fn publish(&mut self, i: usize) -> Result<()> {
        let f = &self.job.files[i];
        self.open.remove(&(f.item, f.resource_type.clone()));
        let from = part_path(&self.dir, &f.path);
        let to = self.dir.join(&f.path);
        durable::publish(&from, &to)?;
        self.job.files[i].published = true;
        Ok(())
    }

    /// Publish every open part and save the state (with an fsync of DIR).
    pub(crate) fn finish(&mut self) -> Result<()> {
        let open: Vec<usize> = (0..self.job.files.len())
            .filter(|&i| !self.job.files[i].published)
            .collect();
        for i in open {
            self.publish(i)?;
        }
        self.job.finished = true;
        self.job.save(&self.dir, true)
    }

    /// Save the state as it is (with an fsync of DIR).
    pub(crate) fn save(&self) -> Result<()> {
        self.job.save(&self.dir, true)
    }
}
