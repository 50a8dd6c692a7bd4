//! The union schema of one resource type: the trie of JSON paths, flattened column names
//! (flatten_json's rules), first-appearance column order, per-column value kinds and the type
//! policy, and name-collision detection. It does not read input.

use std::sync::Arc;

use arrow_schema::{DataType, Field, Schema};
use rustc_hash::FxHashMap;

use crate::error::{Error, Result};

/// Node id of the trie root (the resource object itself).
pub(crate) const ROOT: u32 = 0;
/// Marks a trie node that is not (yet) a column.
pub(crate) const NO_COLUMN: u32 = u32::MAX;

/// A kind of JSON value seen in a column, as bit flags.
pub(crate) mod kind {
    /// An integer that fits in i64.
    pub(crate) const INT: u8 = 1;
    /// A number written with a fraction or exponent.
    pub(crate) const FRAC: u8 = 2;
    /// `true` / `false`.
    pub(crate) const BOOL: u8 = 4;
    /// A string.
    pub(crate) const STR: u8 = 8;
    /// An integer outside the i64 range (kept as text).
    pub(crate) const BIGINT: u8 = 16;
    /// A string that is a full date (`--dates typed` only; otherwise strings are [`STR`]).
    pub(crate) const DATE: u8 = 32;
    /// A string that is a full instant with an offset (`--dates typed` only).
    pub(crate) const INSTANT: u8 = 64;
    /// A string that starts like a date but is not a valid full date or instant (`--dates
    /// typed` only).
    pub(crate) const BADDATE: u8 = 128;
}

/// How FHIR dates and instants are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Dates {
    /// As text, as the reference workflow does.
    #[default]
    Text,
    /// A column whose every value is a full instant with an offset becomes
    /// `timestamp[µs, UTC]`; one whose every value is a full date becomes `date32`; any other
    /// stays text (see `docs/columns.md`, "Dates").
    Typed,
}

/// The Arrow type of an instant column under [`Dates::Typed`].
pub(crate) fn instant_type() -> DataType {
    DataType::Timestamp(arrow_schema::TimeUnit::Microsecond, Some("UTC".into()))
}

/// Why a column with date-like values stayed text under [`Dates::Typed`], from its kinds
/// (`None`: it holds no date-like value, or it became typed).
pub(crate) fn text_dates_reason(kinds: u8) -> Option<&'static str> {
    use kind::*;
    if kinds & (DATE | INSTANT | BADDATE) == 0 || kinds == DATE || kinds == INSTANT {
        return None;
    }
    Some(if kinds & BADDATE != 0 {
        "a value starts like a date but is not a valid full date or instant with an offset \
         (e.g. 2019-02-30, 24:00:00, a time without offset, finer than a microsecond)"
    } else if kinds & DATE != 0 && kinds & INSTANT != 0 {
        "it mixes dates and instants"
    } else {
        "not every value is a date or instant (partial dates such as 2019-07, or other values)"
    })
}

/// How numbers with fractions are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Decimals {
    /// As `Float64` (the reference workflow's behaviour): `1.50` reads back as `1.5`.
    #[default]
    Float,
    /// As their exact source text (`Utf8`), as FHIR requires for decimals: `1.50` stays `1.50`.
    Exact,
}

/// The Arrow type a column gets from the kinds of value seen in it.
///
/// Only integers → `Int64`; integers and fractions → `Float64` (`Utf8` source text under
/// [`Decimals::Exact`]); only booleans → `Boolean`; anything else, including no value at all →
/// `Utf8`.
pub(crate) fn column_type(kinds: u8, decimals: Decimals) -> DataType {
    column_type_with(kinds, decimals, Dates::Text)
}

/// [`column_type`] with a dates policy: under [`Dates::Typed`], only full instants →
/// [`instant_type`], only full dates → `Date32`.
pub(crate) fn column_type_with(kinds: u8, decimals: Decimals, dates: Dates) -> DataType {
    use kind::*;
    match kinds {
        INSTANT if dates == Dates::Typed => instant_type(),
        DATE if dates == Dates::Typed => DataType::Date32,
        INT => DataType::Int64,
        k if k & !(INT | FRAC) == 0 && k & FRAC != 0 => match decimals {
            Decimals::Float => DataType::Float64,
            Decimals::Exact => DataType::Utf8,
        },
        BOOL => DataType::Boolean,
        _ => DataType::Utf8,
    }
}

/// One step of a JSON path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Seg {
    /// An object member.
    Key(Box<str>),
    /// An array element.
    Index(u32),
}

/// Marks an absent child in [`PathTrie`]'s index lists.
const NONE: u32 = u32::MAX;

/// Interns JSON paths as a trie: (parent node, segment) → node.
///
/// Lookups are cheap on FHIR data because resources of a type repeat their key order: each
/// node keeps its key children in insertion order, and the caller's per-node `hint` points at
/// the child expected next, so most lookups are one string comparison. Misses fall back to a
/// short linear scan or a hash map. Array elements are a direct index. A frozen trie is read
/// by many threads, each with its own hints.
#[derive(Debug, Clone)]
pub(crate) struct PathTrie {
    map: FxHashMap<Box<[u8]>, u32>,
    nodes: Vec<(u32, Seg)>,
    /// Per node: key children in insertion order.
    keys: Vec<Vec<Kid>>,
    /// Per node: position in its parent's `keys`.
    pos: Vec<u32>,
    /// Per node: index children (`NONE` where absent).
    idx: Vec<Vec<u32>>,
}

/// A key child in [`PathTrie`]'s per-node lists.
#[derive(Debug, Clone)]
struct Kid {
    key: Box<str>,
    id: u32,
    /// The key's JSON form is its text between quotes (no quote, backslash or control
    /// character), so the line can be compared with it as it is.
    plain: bool,
}

fn map_key<'b>(buf: &'b mut Vec<u8>, parent: u32, key: &str) -> &'b [u8] {
    buf.clear();
    buf.extend_from_slice(&parent.to_le_bytes());
    buf.extend_from_slice(key.as_bytes());
    buf
}

/// String equality for short keys: a plain loop beats a call to `memcmp` for the 2–20 byte
/// keys of FHIR (docs/performance.md, "Design choices").
#[inline]
fn same(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x == y)
}

/// Below this many key children a miss scans linearly instead of hashing.
const LINEAR_MAX: usize = 12;

impl PathTrie {
    pub(crate) fn new() -> Self {
        Self {
            map: FxHashMap::default(),
            nodes: vec![(ROOT, Seg::Index(0))],
            keys: vec![Vec::new()],
            pos: vec![0],
            idx: vec![Vec::new()],
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.nodes.len()
    }

    pub(crate) fn node(&self, id: u32) -> &(u32, Seg) {
        &self.nodes[id as usize]
    }

    /// Finds key child `key` of `parent`; `hint` is the caller's guess of its position and is
    /// moved past the match.
    #[inline]
    pub(crate) fn get_key(
        &self,
        buf: &mut Vec<u8>,
        parent: u32,
        key: &str,
        hint: &mut u32,
    ) -> Option<u32> {
        let kids = &self.keys[parent as usize];
        let h = *hint as usize;
        if let Some(kid) = kids.get(h)
            && same(&kid.key, key)
        {
            *hint = h as u32 + 1;
            return Some(kid.id);
        }
        let found = if kids.len() <= LINEAR_MAX {
            kids.iter().position(|kid| same(&kid.key, key))
        } else {
            self.map
                .get(map_key(buf, parent, key))
                .map(|&id| self.pos[id as usize] as usize)
        };
        found.map(|p| {
            *hint = p as u32 + 1;
            kids[p].id
        })
    }

    /// The key child of `parent` at position `hint` (the one expected next) and its node,
    /// when its JSON form is its text in quotes: a line that has those bytes there names
    /// that child (whose position is then `hint + 1`).
    #[inline]
    pub(crate) fn expected_key(&self, parent: u32, hint: u32) -> Option<(&str, u32)> {
        let kid = self.keys[parent as usize].get(hint as usize)?;
        kid.plain.then_some((&*kid.key, kid.id))
    }

    #[inline]
    pub(crate) fn get_index(&self, parent: u32, index: u32) -> Option<u32> {
        self.idx[parent as usize]
            .get(index as usize)
            .copied()
            .filter(|&id| id != NONE)
    }

    #[inline]
    pub(crate) fn key(&mut self, buf: &mut Vec<u8>, parent: u32, key: &str, hint: &mut u32) -> u32 {
        if let Some(id) = self.get_key(buf, parent, key, hint) {
            return id;
        }
        let id = self.push(parent, Seg::Key(key.into()));
        let kids = &mut self.keys[parent as usize];
        self.pos[id as usize] = kids.len() as u32;
        kids.push(Kid {
            key: key.into(),
            id,
            plain: crate::scan::find_special(key.as_bytes(), 0) == key.len(),
        });
        *hint = kids.len() as u32;
        self.map.insert(map_key(buf, parent, key).into(), id);
        id
    }

    #[inline]
    pub(crate) fn index(&mut self, parent: u32, index: u32) -> u32 {
        if let Some(id) = self.get_index(parent, index) {
            return id;
        }
        let id = self.push(parent, Seg::Index(index));
        let list = &mut self.idx[parent as usize];
        if list.len() <= index as usize {
            list.resize(index as usize + 1, NONE);
        }
        list[index as usize] = id;
        id
    }

    /// Finds or adds `seg` under `parent`.
    pub(crate) fn seg(&mut self, buf: &mut Vec<u8>, parent: u32, seg: &Seg) -> u32 {
        match seg {
            Seg::Key(k) => self.key(buf, parent, k, &mut 0),
            Seg::Index(i) => self.index(parent, *i),
        }
    }

    fn push(&mut self, parent: u32, seg: Seg) -> u32 {
        let id = self.nodes.len() as u32;
        self.nodes.push((parent, seg));
        self.keys.push(Vec::new());
        self.pos.push(0);
        self.idx.push(Vec::new());
        id
    }

    /// A 64-bit hash of a node's path, the same in every chunk's trie (for sizing hints; a
    /// collision costs nothing but a poor hint).
    pub(crate) fn path_hash(&self, mut id: u32) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = rustc_hash::FxHasher::default();
        while id != ROOT {
            let (parent, seg) = &self.nodes[id as usize];
            match seg {
                Seg::Key(k) => k.hash(&mut h),
                Seg::Index(i) => (u64::from(*i) | 1 << 63).hash(&mut h),
            }
            id = *parent;
        }
        h.finish()
    }

    /// The path of a node for messages, e.g. `contained[0].code.coding`.
    pub(crate) fn display_path(&self, mut id: u32) -> String {
        let mut segs = Vec::new();
        while id != ROOT {
            let (parent, seg) = &self.nodes[id as usize];
            segs.push(seg.clone());
            id = *parent;
        }
        let mut out = String::new();
        for seg in segs.iter().rev() {
            match seg {
                Seg::Key(k) => {
                    if !out.is_empty() {
                        out.push('.');
                    }
                    if k.is_empty() || k.contains(['.', '[', ']', ' ']) {
                        out.push_str(&format!("{k:?}"));
                    } else {
                        out.push_str(k);
                    }
                }
                Seg::Index(i) => out.push_str(&format!("[{i}]")),
            }
        }
        out
    }
}

/// Where a column was first seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct FirstSeen {
    /// Index of the file in the group's file list.
    pub file: u32,
    /// 1-based line number.
    pub line: u64,
}

/// Statistics of one column, in a chunk or over the whole input.
#[derive(Debug, Clone)]
pub(crate) struct ColumnStats {
    pub(crate) node: u32,
    pub(crate) kinds: u8,
    pub(crate) non_null: u64,
    /// Bytes of the values' texts (a string's decoded text, a number's source text,
    /// `true`/`false`): what the column holds before encoding.
    pub(crate) text_bytes: u64,
    /// Bytes of the texts a converting pass keeps: a value equal to the one before it in its
    /// column and chunk is not kept again (see `ColumnValues`), so a column of a few
    /// distinct values in long runs keeps little. 0 where no values are kept (`flatfhir
    /// schema`).
    pub(crate) stored_bytes: u64,
    pub(crate) first_seen: FirstSeen,
}

/// What one worker learned from one chunk: its local trie and columns in first-appearance
/// order.
#[derive(Debug)]
pub(crate) struct ChunkSchema {
    pub(crate) trie: PathTrie,
    pub(crate) columns: Vec<ColumnStats>,
}

/// A column of the union schema.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Column {
    /// The flattened name, e.g. `code_coding_0_code`.
    pub name: String,
    /// The Arrow type from the type policy.
    #[serde(serialize_with = "ser_type")]
    pub data_type: DataType,
    /// How many rows hold a value (not null, `[]` or `{}`).
    pub non_null: u64,
    /// Where the column first appeared.
    pub first_seen: FirstSeen,
}

fn ser_type<S: serde::Serializer>(t: &DataType, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(&type_name(t))
}

/// The short type names used in reports: `int64`, `double`, `bool`, `string`.
pub fn type_name(t: &DataType) -> String {
    match t {
        DataType::Int64 => "int64".into(),
        DataType::Float64 => "double".into(),
        DataType::Boolean => "bool".into(),
        DataType::Utf8 => "string".into(),
        DataType::Date32 => "date32".into(),
        DataType::Timestamp(arrow_schema::TimeUnit::Microsecond, Some(tz)) => {
            format!("timestamp[us, {tz}]")
        }
        other => other.to_string(),
    }
}

/// The union schema of one resource type, built by merging chunk schemas in input order.
#[derive(Debug, Clone)]
pub(crate) struct UnionSchema {
    pub(crate) trie: PathTrie,
    /// Node → column index, or [`NO_COLUMN`].
    pub(crate) node_col: Vec<u32>,
    /// Flattened name of every node (a node's name is its would-be column name).
    names: Vec<String>,
    pub(crate) columns: Vec<ColumnStats>,
    by_name: FxHashMap<String, u32>,
    sep: String,
    resource_type: String,
    buf: Vec<u8>,
    /// The dates policy the column types follow.
    pub(crate) dates: Dates,
}

impl UnionSchema {
    pub(crate) fn new(resource_type: &str, sep: &str) -> Self {
        Self {
            trie: PathTrie::new(),
            node_col: vec![NO_COLUMN],
            names: vec![String::new()],
            columns: Vec::new(),
            by_name: FxHashMap::default(),
            sep: sep.to_string(),
            resource_type: resource_type.to_string(),
            buf: Vec::new(),
            dates: Dates::Text,
        }
    }

    /// Adds a chunk's columns. Chunks must be merged in input order: the union's column order
    /// is then the first-appearance order of a sequential read, whatever the chunking.
    /// Returns the union column of each of the chunk's columns.
    pub(crate) fn merge(&mut self, chunk: &ChunkSchema) -> Result<Vec<u32>> {
        // Local node → global node; parents always precede children in the local trie.
        let mut map = vec![ROOT; chunk.trie.len()];
        for local in 1..chunk.trie.len() {
            let (parent, seg) = chunk.trie.node(local as u32);
            let gparent = map[*parent as usize];
            let before = self.trie.len();
            let g = self.trie.seg(&mut self.buf, gparent, seg);
            if g as usize == before {
                let pname = &self.names[gparent as usize];
                let segtext = match seg {
                    Seg::Key(k) => k.to_string(),
                    Seg::Index(i) => i.to_string(),
                };
                // flatten_json's _construct_key: no separator after an empty prefix.
                let name = if pname.is_empty() {
                    segtext
                } else {
                    format!("{pname}{}{segtext}", self.sep)
                };
                self.names.push(name);
                self.node_col.push(NO_COLUMN);
            }
            map[local] = g;
        }
        let mut cols = Vec::with_capacity(chunk.columns.len());
        for c in &chunk.columns {
            let g = map[c.node as usize];
            let col = self.node_col[g as usize];
            if col == NO_COLUMN {
                let name = &self.names[g as usize];
                if let Some(&other) = self.by_name.get(name) {
                    let other_node = self.columns[other as usize].node;
                    return Err(Error::ColumnCollision {
                        resource_type: self.resource_type.clone(),
                        name: name.clone(),
                        first: self.trie.display_path(other_node),
                        second: self.trie.display_path(g),
                    });
                }
                let idx = self.columns.len() as u32;
                self.by_name.insert(name.clone(), idx);
                self.node_col[g as usize] = idx;
                self.columns.push(ColumnStats {
                    node: g,
                    ..c.clone()
                });
                cols.push(idx);
            } else {
                let s = &mut self.columns[col as usize];
                s.kinds |= c.kinds;
                s.non_null += c.non_null;
                s.text_bytes += c.text_bytes;
                s.stored_bytes += c.stored_bytes;
                cols.push(col);
            }
        }
        Ok(cols)
    }

    /// Roughly what the column's values take plain-encoded over the whole input: their texts
    /// plus seven bytes each (a Parquet string's four-byte length prefix, and about three for
    /// the run of definition levels a value of a sparse column starts).
    pub(crate) fn plain_bytes(&self, col: usize) -> u64 {
        let s = &self.columns[col];
        s.text_bytes + 7 * s.non_null
    }

    /// Bytes of the column's texts kept by the pass, runs of one value kept once (see
    /// [`ColumnStats::stored_bytes`]): at least what its distinct values take.
    pub(crate) fn stored_bytes(&self, col: usize) -> u64 {
        self.columns[col].stored_bytes
    }

    pub(crate) fn name(&self, col: usize) -> &str {
        &self.names[self.columns[col].node as usize]
    }

    /// The finished columns with their types.
    pub(crate) fn columns(&self, decimals: Decimals) -> Vec<Column> {
        (0..self.columns.len())
            .map(|i| {
                let s = &self.columns[i];
                Column {
                    name: self.name(i).to_string(),
                    data_type: column_type_with(s.kinds, decimals, self.dates),
                    non_null: s.non_null,
                    first_seen: s.first_seen,
                }
            })
            .collect()
    }

    /// The Arrow schema (all fields nullable).
    pub(crate) fn arrow_schema(&self, decimals: Decimals) -> Arc<Schema> {
        let fields: Vec<Field> = self
            .columns(decimals)
            .into_iter()
            .map(|c| Field::new(c.name, c.data_type, true))
            .collect();
        Arc::new(Schema::new(fields))
    }

    /// The path patterns (indexes replaced by `*`) contributing most columns, for the
    /// `--max-columns` error.
    pub(crate) fn widest_paths(&self, top: usize) -> String {
        let mut counts: FxHashMap<String, usize> = FxHashMap::default();
        for c in &self.columns {
            // Pattern: the path up to and including its first array, indexes as `*`.
            let path = self.trie.display_path(c.node);
            let cut = path.find('[').map_or(path.len(), |i| {
                path[i..].find(']').map_or(path.len(), |j| i + j + 1)
            });
            let mut pattern = String::with_capacity(cut);
            let mut in_index = false;
            for ch in path[..cut].chars() {
                match ch {
                    '[' => {
                        in_index = true;
                        pattern.push_str("[*]");
                    }
                    ']' => in_index = false,
                    _ if in_index => {}
                    _ => pattern.push(ch),
                }
            }
            *counts.entry(pattern).or_default() += 1;
        }
        let mut v: Vec<_> = counts.into_iter().collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        v.iter()
            .take(top)
            .map(|(p, n)| format!("{p} ({n} columns)"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kind::*;

    #[test]
    fn type_policy() {
        let f = Decimals::Float;
        assert_eq!(column_type(INT, f), DataType::Int64);
        assert_eq!(column_type(INT | FRAC, f), DataType::Float64);
        assert_eq!(column_type(FRAC, f), DataType::Float64);
        assert_eq!(column_type(FRAC, Decimals::Exact), DataType::Utf8);
        assert_eq!(column_type(INT, Decimals::Exact), DataType::Int64);
        assert_eq!(column_type(BOOL, f), DataType::Boolean);
        assert_eq!(column_type(BOOL | INT, f), DataType::Utf8);
        assert_eq!(column_type(STR | INT, f), DataType::Utf8);
        assert_eq!(column_type(BIGINT, f), DataType::Utf8);
        assert_eq!(column_type(BIGINT | INT, f), DataType::Utf8);
        assert_eq!(column_type(0, f), DataType::Utf8);
    }

    #[test]
    fn lookups_with_and_without_hints() {
        let mut t = PathTrie::new();
        let mut b = Vec::new();
        let names: Vec<String> = (0..40).map(|i| format!("k{i}")).collect();
        let ids: Vec<u32> = names
            .iter()
            .map(|n| t.key(&mut b, ROOT, n, &mut 0))
            .collect();
        for hint_start in [0, 7, 39, 1000] {
            for (n, id) in names.iter().zip(&ids).rev() {
                let mut h = hint_start;
                assert_eq!(t.get_key(&mut b, ROOT, n, &mut h), Some(*id));
            }
        }
        let mut h = 0;
        for (n, id) in names.iter().zip(&ids) {
            assert_eq!(t.get_key(&mut b, ROOT, n, &mut h), Some(*id));
        }
        assert_eq!(t.get_key(&mut b, ROOT, "nope", &mut 0), None);
        assert_eq!(t.get_key(&mut b, ids[0], "k1", &mut 0), None);
    }

    #[test]
    fn display_paths() {
        let mut t = PathTrie::new();
        let mut b = Vec::new();
        let a = t.key(&mut b, ROOT, "contained", &mut 0);
        let i = t.index(a, 3);
        let c = t.key(&mut b, i, "a.b", &mut 0);
        assert_eq!(t.display_path(c), "contained[3].\"a.b\"");
        assert_eq!(t.key(&mut b, ROOT, "contained", &mut 5), a);
        assert_eq!(t.get_index(a, 2), None);
    }
}
