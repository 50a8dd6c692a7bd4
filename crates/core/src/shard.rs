//! Scale-out: the union schema as a mergeable, serialisable value ([`SchemaDoc`],
//! [`TypeSchema`]), shards of the input ([`plan_shards`]: byte ranges of plain NDJSON split at
//! line boundaries, whole files for gzip), and reading one shard on the calling thread
//! ([`read_shard`]): its schema alone, or its rows flattened against a given schema.
//!
//! Column order is the single-machine order: columns sorted by where they were first seen
//! ([`Position`]: file, shard start, line, place in the line). Merging is associative and
//! commutative (sums, bitwise or, minimum of positions, union of columns), so any reduce tree
//! gives the same document.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use arrow_array::RecordBatch;
use rustc_hash::FxHashMap;

use crate::convert::{ConvertOptions, OnError, RejectedLine, belongs};
use crate::error::{Error, Result};
use crate::flatten::{CapacityHints, ChunkPass, line_text};
use crate::input::{InputFile, TypeGroup};
use crate::reader::LineReader;
use crate::schema::{
    ChunkSchema, ColumnStats, Decimals, FirstSeen, PathTrie, ROOT, Seg, UnionSchema, column_type,
    kind, type_name,
};
use crate::stash::ChunkTable;

/// The `format` field of a schema document.
pub const SCHEMA_FORMAT: &str = "flatfhir-schema";
/// The `version` field this build writes and reads.
pub const SCHEMA_VERSION: u32 = 1;
/// Default shard size for [`plan_shards`]: 128 MiB, Hadoop's block size.
pub const DEFAULT_SHARD_BYTES: u64 = 128 << 20;
/// Lines per chunk of a shard read (the writer's batch size).
const CHUNK_LINES: usize = 4096;
const CHUNK_BYTES: usize = 4 << 20;

/// The union schemas of one or more resource types, as a stable JSON document
/// (`flatfhir schema --save`, `convert --schema`). See `docs/scale-out.md`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchemaDoc {
    /// Always [`SCHEMA_FORMAT`].
    pub format: String,
    /// Always [`SCHEMA_VERSION`].
    pub version: u32,
    /// The column-name separator the names were made with.
    pub sep: String,
    /// Root keys left out.
    pub exclude: Vec<String>,
    /// Per resource type.
    pub types: BTreeMap<String, TypeSchema>,
}

/// The union schema of one resource type (of a shard, or merged).
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TypeSchema {
    /// Accepted lines.
    pub rows: u64,
    /// Rejected lines (with `on_error = skip`).
    pub rejected: u64,
    /// Columns, in output order (by [`DocColumn::first_seen`]).
    pub columns: Vec<DocColumn>,
}

/// One column of a [`TypeSchema`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DocColumn {
    /// The flattened name.
    pub name: String,
    /// The JSON path: member names as strings, array indexes as numbers.
    pub path: Vec<PathSeg>,
    /// Kinds of value seen: `int`, `frac`, `bool`, `string`, `bigint` (sorted that way).
    pub kinds: Vec<String>,
    /// The type these kinds give under `decimals = float` (informative; `kinds` decide).
    #[serde(rename = "type")]
    pub data_type: String,
    /// Rows holding a value.
    pub non_null: u64,
    /// Where the column was first seen.
    pub first_seen: Position,
}

/// One step of a column's JSON path.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(untagged)]
pub enum PathSeg {
    /// An array index.
    Index(u32),
    /// A member name.
    Key(String),
}

/// Where a column was first seen; ordered as the fields are listed.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(deny_unknown_fields)]
pub struct Position {
    /// Index of the file in the type's file list.
    pub file: u32,
    /// Byte offset where the shard that saw it starts (0 for a whole file).
    pub start: u64,
    /// 1-based line number counted from `start` (the file's real line number when `start` is 0).
    pub line: u64,
    /// Place among the columns first seen in that line.
    pub pos: u32,
}

const KIND_NAMES: [(u8, &str); 5] = [
    (kind::INT, "int"),
    (kind::FRAC, "frac"),
    (kind::BOOL, "bool"),
    (kind::STR, "string"),
    (kind::BIGINT, "bigint"),
];

fn kind_names(k: u8) -> Vec<String> {
    KIND_NAMES
        .iter()
        .filter(|(b, _)| k & b != 0)
        .map(|(_, n)| (*n).to_string())
        .collect()
}

fn kind_bits(names: &[String]) -> Result<u8> {
    let mut k = 0;
    for n in names {
        let (b, _) = KIND_NAMES
            .iter()
            .find(|(_, name)| name == n)
            .ok_or_else(|| Error::Options(format!("schema document: unknown kind {n:?}")))?;
        k |= b;
    }
    Ok(k)
}

impl SchemaDoc {
    /// An empty document for these flatten options.
    pub fn new(sep: &str, exclude: &[String]) -> Self {
        Self {
            format: SCHEMA_FORMAT.into(),
            version: SCHEMA_VERSION,
            sep: sep.into(),
            exclude: exclude.to_vec(),
            types: BTreeMap::new(),
        }
    }

    /// Parses and checks a document.
    pub fn from_json(text: &str) -> Result<Self> {
        let doc: Self = serde_json::from_str(text)
            .map_err(|e| Error::Options(format!("not a flatfhir schema document: {e}")))?;
        if doc.format != SCHEMA_FORMAT || doc.version != SCHEMA_VERSION {
            return Err(Error::Options(format!(
                "schema document is {:?} version {}; this flatfhir reads {SCHEMA_FORMAT:?} version {SCHEMA_VERSION}",
                doc.format, doc.version
            )));
        }
        for (rt, t) in &doc.types {
            t.to_union(rt, &doc.sep)?;
        }
        Ok(doc)
    }

    /// Reads a document from a file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
            path: path.into(),
            source,
        })?;
        Self::from_json(&text).map_err(|e| Error::Input {
            path: path.into(),
            reason: e.to_string(),
        })
    }

    /// The document as pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a schema document serialises")
    }

    /// Merges another document (of shards of the same input, made with the same options).
    pub fn merge(&mut self, other: &SchemaDoc) -> Result<()> {
        if self.sep != other.sep || self.exclude != other.exclude {
            return Err(Error::Options(
                "cannot merge schema documents made with different sep or exclude".into(),
            ));
        }
        for (rt, t) in &other.types {
            let mine = self.types.entry(rt.clone()).or_default();
            mine.merge(rt, t)?;
        }
        Ok(())
    }

    /// The schema of one type, or an error naming what the document holds.
    pub fn get(&self, resource_type: &str) -> Result<&TypeSchema> {
        self.types.get(resource_type).ok_or_else(|| {
            Error::Options(format!(
                "the schema document has no {resource_type} (it has: {})",
                self.types.keys().cloned().collect::<Vec<_>>().join(", ")
            ))
        })
    }
}

impl TypeSchema {
    /// Adds another shard's schema: associative and commutative.
    pub fn merge(&mut self, resource_type: &str, other: &TypeSchema) -> Result<()> {
        self.rows += other.rows;
        self.rejected += other.rejected;
        let mut at: FxHashMap<String, usize> = self
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| (c.name.clone(), i))
            .collect();
        for c in &other.columns {
            match at.get(&c.name) {
                None => {
                    at.insert(c.name.clone(), self.columns.len());
                    self.columns.push(c.clone());
                }
                Some(&i) => {
                    let m = &mut self.columns[i];
                    if m.path != c.path {
                        let (first, second) = if m.first_seen <= c.first_seen {
                            (&m.path, &c.path)
                        } else {
                            (&c.path, &m.path)
                        };
                        return Err(Error::ColumnCollision {
                            resource_type: resource_type.into(),
                            name: c.name.clone(),
                            first: display(first),
                            second: display(second),
                        });
                    }
                    let k = kind_bits(&m.kinds)? | kind_bits(&c.kinds)?;
                    m.kinds = kind_names(k);
                    m.data_type = type_name(&column_type(k, Decimals::Float));
                    m.non_null += c.non_null;
                    m.first_seen = m.first_seen.min(c.first_seen);
                }
            }
        }
        self.columns.sort_by_key(|c| c.first_seen);
        // A column seen earlier elsewhere leaves its line's group: renumber each line's
        // columns 0, 1, … in their order, as a pass over the whole input numbers them (a
        // line is in one shard only, so its columns' order is never in question).
        let mut last = None;
        let mut pos = 0;
        for c in &mut self.columns {
            let p = c.first_seen;
            let line = (p.file, p.start, p.line);
            pos = if last == Some(line) { pos + 1 } else { 0 };
            last = Some(line);
            c.first_seen.pos = pos;
        }
        Ok(())
    }

    /// The Arrow schema the columns get.
    pub fn arrow_schema(&self, decimals: Decimals) -> Result<arrow_schema::SchemaRef> {
        let fields = self
            .columns
            .iter()
            .map(|c| {
                Ok(arrow_schema::Field::new(
                    &c.name,
                    column_type(kind_bits(&c.kinds)?, decimals),
                    true,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(std::sync::Arc::new(arrow_schema::Schema::new(fields)))
    }

    /// From a union schema built by a pass starting at byte `start` of its files.
    pub(crate) fn from_union(u: &UnionSchema, start: u64, rows: u64, rejected: u64) -> TypeSchema {
        let mut columns = Vec::with_capacity(u.columns.len());
        let mut last: Option<FirstSeen> = None;
        let mut pos = 0u32;
        for (i, s) in u.columns.iter().enumerate() {
            // Columns first seen in one line are contiguous, in their order in the line.
            pos = if last == Some(s.first_seen) {
                pos + 1
            } else {
                0
            };
            last = Some(s.first_seen);
            columns.push(DocColumn {
                name: u.name(i).to_string(),
                path: path_of(&u.trie, s.node),
                kinds: kind_names(s.kinds),
                data_type: type_name(&column_type(s.kinds, Decimals::Float)),
                non_null: s.non_null,
                first_seen: Position {
                    file: s.first_seen.file,
                    start,
                    line: s.first_seen.line,
                    pos,
                },
            });
        }
        TypeSchema {
            rows,
            rejected,
            columns,
        }
    }

    /// A union schema holding exactly these columns, in this order, with these kinds.
    pub(crate) fn to_union(&self, resource_type: &str, sep: &str) -> Result<UnionSchema> {
        let mut trie = PathTrie::new();
        let mut buf = Vec::new();
        let mut columns = Vec::with_capacity(self.columns.len());
        for c in &self.columns {
            let mut node = ROOT;
            for seg in &c.path {
                node = match seg {
                    PathSeg::Key(k) => trie.key(&mut buf, node, k, &mut 0),
                    PathSeg::Index(i) => trie.index(node, *i),
                };
            }
            if node == ROOT {
                return Err(Error::Options(format!(
                    "schema document: column {:?} has an empty path",
                    c.name
                )));
            }
            columns.push(ColumnStats {
                node,
                kinds: kind_bits(&c.kinds)?,
                non_null: 0,
                text_bytes: 0,
                stored_bytes: 0,
                first_seen: FirstSeen {
                    file: c.first_seen.file,
                    line: c.first_seen.line,
                },
            });
        }
        let mut u = UnionSchema::new(resource_type, sep);
        u.merge(&ChunkSchema { trie, columns })?;
        for (i, c) in self.columns.iter().enumerate() {
            if u.name(i) != c.name {
                return Err(Error::Options(format!(
                    "schema document: column {:?} has path {} whose name is {:?} with sep {sep:?}",
                    c.name,
                    display(&c.path),
                    u.name(i)
                )));
            }
        }
        Ok(u)
    }
}

fn path_of(trie: &PathTrie, mut node: u32) -> Vec<PathSeg> {
    let mut out = Vec::new();
    while node != ROOT {
        let (parent, seg) = trie.node(node);
        out.push(match seg {
            Seg::Key(k) => PathSeg::Key(k.to_string()),
            Seg::Index(i) => PathSeg::Index(*i),
        });
        node = *parent;
    }
    out.reverse();
    out
}

fn display(path: &[PathSeg]) -> String {
    let mut s = String::new();
    for seg in path {
        match seg {
            PathSeg::Key(k) => {
                if !s.is_empty() {
                    s.push('.');
                }
                s.push_str(k);
            }
            PathSeg::Index(i) => s.push_str(&format!("[{i}]")),
        }
    }
    s
}

/// A given schema and how the input must fit it.
pub(crate) struct Fit {
    /// The union schema as the document gives it (untouched, to test lines against).
    pub(crate) base: UnionSchema,
    width: usize,
    decimals: Decimals,
}

impl Fit {
    pub(crate) fn new(t: &TypeSchema, rt: &str, opts: &ConvertOptions) -> Result<Self> {
        let base = t.to_union(rt, &opts.sep)?;
        Ok(Self {
            width: base.columns.len(),
            base,
            decimals: opts.decimals,
        })
    }

    /// Why `u` (the base plus some input) does not fit the document, if it does not.
    pub(crate) fn check(&self, u: &UnionSchema) -> Option<String> {
        if u.columns.len() > self.width {
            let c = &u.columns[self.width];
            return Some(format!(
                "column {} ({}) is not in the given schema",
                u.name(self.width),
                u.trie.display_path(c.node)
            ));
        }
        for (i, (now, was)) in u.columns.iter().zip(&self.base.columns).enumerate() {
            let (t_now, t_was) = (
                column_type(now.kinds, self.decimals),
                column_type(was.kinds, self.decimals),
            );
            if t_now != t_was {
                return Some(format!(
                    "column {} is {} in the given schema, but this line has a {} value",
                    u.name(i),
                    type_name(&t_was),
                    kind_names(now.kinds & !was.kinds).join("/")
                ));
            }
        }
        None
    }

    /// The first of `lines` (number, bytes) that does not fit on its own, and why.
    pub(crate) fn first_misfit<'a>(
        &self,
        lines: impl Iterator<Item = (u64, &'a [u8])>,
        file: u32,
        rt: &str,
        opts: &ConvertOptions,
    ) -> Option<(u64, String)> {
        for (number, bytes) in lines {
            let Ok(text) = line_text(bytes, opts.read.max_line_bytes) else {
                continue;
            };
            let mut pass = ChunkPass::new(&opts.exclude, false, CapacityHints::default());
            let at = FirstSeen { file, line: number };
            if pass.line(text, at, rt).is_err() {
                continue;
            }
            let mut u = self.base.clone();
            if u.merge(&pass.finish().0).is_err() {
                continue;
            }
            if let Some(reason) = self.check(&u) {
                return Some((number, reason));
            }
        }
        None
    }
}

/// A piece of the input read by one task: a byte range of a plain file, or a whole file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Shard {
    /// The resource type.
    pub resource_type: String,
    /// Index of the file in the type's file list (orders columns across files).
    pub file_index: u32,
    /// The file.
    pub path: PathBuf,
    /// First byte of the range (0 for a whole file).
    pub start: u64,
    /// End of the range (exclusive), or `None` for the whole file (gzip, or one shard).
    pub end: Option<u64>,
    /// See [`InputFile::typed_by_name`].
    pub typed_by_name: bool,
    /// See [`InputFile::reports_untyped`].
    pub reports_untyped: bool,
}

fn is_gzip(path: &Path) -> Result<bool> {
    crate::remote::is_gzip(path).map_err(|source| Error::Read {
        path: path.into(),
        source,
    })
}

/// Splits a type's files into shards of about `shard_bytes` (gzip files whole), in input
/// order: concatenating the shards' rows in this order gives the single-machine table.
pub fn plan_shards(group: &TypeGroup, shard_bytes: u64) -> Result<Vec<Shard>> {
    if shard_bytes == 0 {
        return Err(Error::Options(
            "the shard size must be at least 1 byte".into(),
        ));
    }
    let mut out = Vec::new();
    for (i, f) in group.files.iter().enumerate() {
        let len = crate::remote::len(&f.path).map_err(|source| Error::Read {
            path: f.path.clone(),
            source,
        })?;
        let shard = |start, end| Shard {
            resource_type: group.resource_type.clone(),
            file_index: i as u32,
            path: f.path.clone(),
            start,
            end,
            typed_by_name: f.typed_by_name,
            reports_untyped: f.reports_untyped,
        };
        if len <= shard_bytes || is_gzip(&f.path)? {
            out.push(shard(0, None));
            continue;
        }
        let mut start = 0;
        while start < len {
            let end = (start + shard_bytes).min(len);
            out.push(shard(start, Some(end)));
            start = end;
        }
    }
    Ok(out)
}

/// What [`read_shard`] found.
#[derive(Debug, Clone)]
pub struct ShardOutcome {
    /// The shard's schema (with a given schema: the input's own, for checking).
    pub schema: TypeSchema,
    /// Rows read.
    pub rows: u64,
    /// Lines left out (with [`OnError::Skip`]); `line` counts from the shard's start (see
    /// [`Position::line`]) unless the shard starts at 0.
    pub rejected: Vec<RejectedLine>,
}

/// Reads one shard on the calling thread. Without `given`, only its schema is collected.
/// With `given` (the merged schema of the whole input), every chunk of lines is flattened
/// against it and handed to `batch`; a value that does not fit the schema (a column it lacks,
/// a kind its column's type cannot hold) is an error naming the file and line.
pub fn read_shard(
    shard: &Shard,
    opts: &ConvertOptions,
    given: Option<&TypeSchema>,
    batch: &mut dyn FnMut(RecordBatch) -> Result<()>,
) -> Result<ShardOutcome> {
    let lines = ShardLines::open(shard, opts)?;
    run(shard, lines, opts, given, batch)
}

/// Flattens lines held in memory (e.g. NDJSON text already in a DataFrame column) as
/// [`read_shard`] flattens a shard: `shard.path` names them in errors and `shard.file_index`
/// orders their columns among other calls' (`start`, `end` are ignored); `texts[0]` is line
/// `first_line`. Blank texts are skipped (and counted).
pub fn read_texts(
    shard: &Shard,
    texts: Vec<Vec<u8>>,
    first_line: u64,
    opts: &ConvertOptions,
    given: Option<&TypeSchema>,
    batch: &mut dyn FnMut(RecordBatch) -> Result<()>,
) -> Result<ShardOutcome> {
    let items: Vec<Item> = texts
        .into_iter()
        .enumerate()
        .filter(|(_, t)| !t.iter().all(|b| matches!(b, b' ' | b'\t' | b'\r' | b'\n')))
        .map(|(i, t)| (i as u64 + first_line, Ok(t)))
        .collect();
    run(
        shard,
        ShardLines::Memory(items.into_iter()),
        opts,
        given,
        batch,
    )
}

fn run(
    shard: &Shard,
    mut lines: ShardLines,
    opts: &ConvertOptions,
    given: Option<&TypeSchema>,
    batch: &mut dyn FnMut(RecordBatch) -> Result<()>,
) -> Result<ShardOutcome> {
    if opts.sep.is_empty() {
        return Err(Error::Options("the separator must not be empty".into()));
    }
    let rt = shard.resource_type.as_str();
    let fit = given.map(|g| Fit::new(g, rt, opts)).transpose()?;
    let arrow = given.map(|g| g.arrow_schema(opts.decimals)).transpose()?;
    let mut union = match &fit {
        Some(f) => f.base.clone(),
        None => UnionSchema::new(rt, &opts.sep),
    };
    let mut own = UnionSchema::new(rt, &opts.sep);
    let file = InputFile {
        path: shard.path.clone(),
        typed_by_name: shard.typed_by_name,
        reports_untyped: shard.reports_untyped,
    };
    let where_ = |line: u64| -> (PathBuf, u64, String) {
        let note = if shard.start == 0 {
            String::new()
        } else {
            format!(" (line {line} of the shard from byte {})", shard.start)
        };
        (shard.path.clone(), line, note)
    };
    let mut rows = 0u64;
    let mut rejected = Vec::new();
    let mut scratch = String::new();
    let mut chunk: Vec<Item> = Vec::new();
    loop {
        let more = lines.fill(&mut chunk)?;
        if chunk.is_empty() && !more {
            break;
        }
        let mut pass = ChunkPass::new(&opts.exclude, given.is_some(), CapacityHints::default());
        for (number, bytes) in &chunk {
            let text = match bytes {
                Ok(b) => line_text(b, opts.read.max_line_bytes),
                Err(reason) => Err(reason.clone()),
            };
            if !belongs(&file, text.as_ref().ok().copied(), rt, &mut scratch) {
                continue;
            }
            let at = FirstSeen {
                file: shard.file_index,
                line: *number,
            };
            if let Err(reason) = text.and_then(|t| pass.line(t, at, rt)) {
                let (path, line, note) = where_(*number);
                match opts.on_error {
                    OnError::Fail => {
                        return Err(Error::BadLine {
                            file: path,
                            line,
                            reason: format!("{reason}{note}"),
                        });
                    }
                    OnError::Skip => rejected.push(RejectedLine {
                        file: path,
                        line,
                        reason: format!("{reason}{note}"),
                    }),
                }
            }
        }
        let n = pass.rows();
        rows += u64::from(n);
        let (schema, values) = pass.finish();
        own.merge(&schema)?;
        if own.columns.len() > opts.max_columns {
            return Err(Error::TooManyColumns {
                resource_type: rt.into(),
                columns: own.columns.len(),
                limit: opts.max_columns,
                widest: own.widest_paths(5),
            });
        }
        if let (Some(fit), Some(arrow)) = (&fit, &arrow) {
            let to_union = union.merge(&schema)?;
            if fit.check(&union).is_some() {
                let found = fit.first_misfit(
                    chunk
                        .iter()
                        .filter_map(|(n, b)| b.as_ref().ok().map(|b| (*n, b.as_slice()))),
                    shard.file_index,
                    rt,
                    opts,
                );
                let (line, reason) =
                    found.unwrap_or((chunk[0].0, fit.check(&union).unwrap_or_default()));
                let (path, line, note) = where_(line);
                return Err(Error::BadLine {
                    file: path,
                    line,
                    reason: format!("{reason}{note}"),
                });
            }
            let table = ChunkTable {
                rows: n,
                input_bytes: 0,
                columns: values,
            };
            let b = table
                .into_batch(&to_union, arrow)
                .map_err(|reason| Error::Internal {
                    resource_type: rt.into(),
                    path: shard.path.clone(),
                    reason,
                })?;
            batch(b)?;
        }
        chunk.clear();
        if !more {
            break;
        }
    }
    Ok(ShardOutcome {
        schema: TypeSchema::from_union(&own, shard.start, rows, rejected.len() as u64),
        rows,
        rejected,
    })
}

/// A line of a shard: its number and bytes, or why it was not read (overlong).
type Item = (u64, std::result::Result<Vec<u8>, String>);

/// The lines of a shard: a whole file through [`LineReader`] (gzip, BOM, overlong lines as
/// everywhere else), or a byte range of a plain file by the Hadoop rule.
enum ShardLines {
    Whole(LineReader, usize),
    Memory(std::vec::IntoIter<Item>),
    Range {
        input: BufReader<Box<dyn Read + Send>>,
        path: PathBuf,
        /// Offset of the next line.
        at: u64,
        /// Lines starting after this belong to the next shard.
        last_start: u64,
        number: u64,
        first: bool,
    },
}

impl ShardLines {
    fn open(shard: &Shard, opts: &ConvertOptions) -> Result<Self> {
        let Some(end) = shard.end else {
            return Ok(Self::Whole(
                LineReader::open(&shard.path, &opts.read)?,
                opts.read.max_line_bytes,
            ));
        };
        let read_err = |source| Error::Read {
            path: shard.path.clone(),
            source,
        };
        // A ranged read from the shard's start (a ranged GET for an object), stopped
        // after the line that crosses `end`.
        let f = crate::remote::open(&shard.path, shard.start).map_err(read_err)?;
        let mut input = BufReader::with_capacity(1 << 20, f);
        let mut at = shard.start;
        if shard.start > 0 {
            // Skip to just after the first newline at or after the offset.
            let mut skipped = Vec::new();
            at += input.read_until(b'\n', &mut skipped).map_err(read_err)? as u64;
        }
        Ok(Self::Range {
            input,
            path: shard.path.clone(),
            at,
            last_start: end,
            number: 1,
            first: shard.start == 0,
        })
    }

    /// Appends the next chunk's non-blank lines; `false` once the shard is done.
    fn fill(&mut self, out: &mut Vec<Item>) -> Result<bool> {
        match self {
            Self::Memory(items) => {
                out.extend(items.by_ref().take(CHUNK_LINES));
                Ok(!items.as_slice().is_empty())
            }
            Self::Whole(r, max_line_bytes) => {
                let max_line_bytes = *max_line_bytes;
                let Some(chunk) = r.next_chunk()? else {
                    return Ok(false);
                };
                for o in &chunk.overlong {
                    out.push((
                        o.number,
                        Err(format!(
                            "line is {} bytes, longer than the limit of {} (--max-line-bytes)",
                            o.len, max_line_bytes
                        )),
                    ));
                }
                for l in chunk.lines() {
                    out.push((l.number, Ok(l.bytes.to_vec())));
                }
                out.sort_by_key(|(n, _)| *n);
                Ok(true)
            }
            Self::Range {
                input,
                path,
                at,
                last_start,
                number,
                first,
            } => {
                let mut bytes = 0;
                while out.len() < CHUNK_LINES && bytes < CHUNK_BYTES {
                    if *at > *last_start {
                        return Ok(false);
                    }
                    let mut line = Vec::new();
                    let n = input
                        .read_until(b'\n', &mut line)
                        .map_err(|source| Error::Read {
                            path: path.clone(),
                            source,
                        })?;
                    if n == 0 {
                        return Ok(false);
                    }
                    *at += n as u64;
                    if line.last() == Some(&b'\n') {
                        line.pop();
                    }
                    if line.last() == Some(&b'\r') {
                        line.pop();
                    }
                    if std::mem::take(first) && line.starts_with(b"\xEF\xBB\xBF") {
                        line.drain(..3);
                    }
                    let k = *number;
                    *number += 1;
                    if line.iter().all(|b| matches!(b, b' ' | b'\t' | b'\r')) {
                        continue;
                    }
                    bytes += line.len();
                    out.push((k, Ok(line)));
                }
                Ok(true)
            }
        }
    }
}
