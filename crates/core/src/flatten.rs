//! Flattening one line: the visitor that walks a resource with [`crate::scan`], collecting
//! column statistics for the chunk's schema and (when converting) each value's text per
//! column, and the per-line checks (length, UTF-8, object, resourceType).

use rustc_hash::FxHashMap;

use crate::scan::{self, Reason, Scalar, Visitor};
use crate::schema::{ColumnStats, FirstSeen, NO_COLUMN, PathTrie, ROOT, kind};

/// Checks length and UTF-8; the JSON itself is checked while walking.
pub fn line_text(bytes: &[u8], max_line_bytes: usize) -> Result<&str, String> {
    if bytes.len() > max_line_bytes {
        return Err(format!(
            "line is {} bytes, longer than the limit of {} (--max-line-bytes)",
            bytes.len(),
            max_line_bytes
        ));
    }
    // SIMD validation: std's check was a visible share of a conversion (docs/performance.md).
    simdutf8::compat::from_utf8(bytes)
        .map_err(|e| format!("not valid UTF-8 at byte {}", e.valid_up_to()))
}

/// The kind flag of a scalar, or 0 for no value (null, `[]`, `{}`). Inlined where the
/// walker knows the kind, so that only a number's test remains.
#[inline(always)]
fn kind_of(v: &Scalar<'_>) -> u8 {
    match v {
        Scalar::Str(_) => kind::STR,
        Scalar::Bool(_) => kind::BOOL,
        Scalar::Num { int: false, .. } => kind::FRAC,
        Scalar::Num { raw, int: true } => {
            let digits = raw.len() - usize::from(raw.starts_with('-'));
            if digits <= 18 {
                kind::INT
            } else {
                long_int_kind(raw)
            }
        }
        Scalar::Null | Scalar::EmptyArray | Scalar::EmptyObject => 0,
    }
}

/// The kind of an integer of 19 digits or more: `INT` while it fits in an `i64`.
#[cold]
#[inline(never)]
fn long_int_kind(raw: &str) -> u8 {
    if raw.parse::<i64>().is_ok() {
        kind::INT
    } else {
        kind::BIGINT
    }
}

/// Captures the root `resourceType` while walking and compares it with the group's type.
#[derive(Debug, Default)]
struct TypeCheck {
    in_type: bool,
    /// The type every line must have.
    want: String,
    found: Found,
}

/// What a line's root `resourceType` was.
#[derive(Debug, Default)]
enum Found {
    /// Not seen (yet).
    #[default]
    Nothing,
    /// The type wanted: the common case, which needs no copy of the value.
    Wanted,
    /// Why the line is rejected: another type, or a value that is not a string.
    Wrong(String),
}

impl TypeCheck {
    #[inline]
    fn enter(&mut self, depth: usize, key: &str) {
        if self.in_type {
            // A member of the root `resourceType`'s value: an object, not a string.
            self.not_a_string("an object");
        }
        self.in_type = depth == 1 && key == "resourceType";
    }

    /// An element of an array: when the array is the root `resourceType`'s value, the type is
    /// not a string (its first string element is not taken for the type).
    #[inline]
    fn enter_index(&mut self) {
        if self.in_type {
            self.not_a_string("an array");
        }
    }

    #[cold]
    #[inline(never)]
    fn not_a_string(&mut self, what: &str) {
        self.in_type = false;
        self.found = Found::Wrong(format!("resourceType is not a string ({what})"));
    }

    #[inline]
    fn scalar(&mut self, v: &Scalar<'_>) {
        if self.in_type {
            self.take(v);
        }
    }

    /// Compares the root `resourceType`'s value (once a line) with the type wanted.
    #[inline(never)]
    fn take(&mut self, v: &Scalar<'_>) {
        self.in_type = false;
        self.found = match v {
            Scalar::Str(s) if *s == self.want => Found::Wanted,
            Scalar::Str(s) => Found::Wrong(format!(
                "resourceType is {s}, but this file holds {}",
                self.want
            )),
            other => Found::Wrong(format!("resourceType is not a string ({other:?})")),
        };
    }

    /// Before a line: lines must have type `want`.
    #[inline]
    fn start(&mut self, want: &str) {
        self.in_type = false;
        self.found = Found::Nothing;
        if self.want != want {
            self.want = want.to_string();
        }
    }

    /// After the walk: the line's type must be the one wanted.
    fn check(&mut self) -> Result<(), String> {
        match std::mem::take(&mut self.found) {
            Found::Nothing => Err(format!("no resourceType (expected {})", self.want)),
            Found::Wanted => Ok(()),
            Found::Wrong(e) => Err(e),
        }
    }
}

/// One column's values in one chunk, sparse: the row of each value and its text (a string's
/// decoded text, a number's source text, `true`/`false`). Rows only grow, so the texts lie in
/// row order. A value equal to the last text stored is not stored again: flattened FHIR repeats
/// itself row after row (the same system URL, status or unit), and two thirds of an
/// Observation's values are such repeats. Holding them once keeps the memory held until the
/// schema is known, and the fresh pages it costs, at about half. Most columns have a value
/// in every row: their rows are not stored until a row goes without.
#[derive(Debug, Default, Clone)]
pub(crate) struct ColumnValues {
    /// The chunk-local row of each value, once `sparse`; empty before (value `i` is in row
    /// `i`).
    pub(crate) rows: Vec<u32>,
    /// Whether `rows` lists the rows: set when a row goes without a value.
    pub(crate) sparse: bool,
    /// The end of each value's text in `data`. A value whose end equals the one before it
    /// (or 0, for the first) stored no text: it is the empty string if its index is in
    /// `empties`, otherwise it repeats the last text stored before it.
    pub(crate) ends: Vec<u32>,
    /// The stored texts, back to back.
    pub(crate) data: Vec<u8>,
    /// Indexes of the values that are empty strings, ascending (FHIR forbids them: rare).
    pub(crate) empties: Vec<u32>,
    /// Where the last stored text starts in `data`, while the next value may repeat it.
    pub(crate) last: Option<usize>,
}

impl ColumnValues {
    /// Adds the value of `row` (rows must grow).
    #[inline]
    pub(crate) fn push(&mut self, row: u32, text: &[u8]) {
        if self.sparse {
            self.rows.push(row);
        } else if row as usize != self.ends.len() {
            self.spread(row);
        }
        if text.is_empty() {
            self.empties.push(self.ends.len() as u32);
        } else if self
            .last
            .is_none_or(|s| !scan::same_bytes(&self.data[s..], text))
        {
            self.last = Some(self.data.len());
            self.data.extend_from_slice(text);
        }
        self.ends.push(self.data.len() as u32);
    }

    /// Removes the value of `row`, if it is the last one (undoing a rejected line).
    fn pop_row(&mut self, row: u32) {
        if self.last_row() != Some(row) {
            return;
        }
        self.rows.pop();
        let end = self.ends.pop().unwrap_or(0);
        let before = self.ends.last().copied().unwrap_or(0);
        if self.empties.last() == Some(&(self.ends.len() as u32)) {
            self.empties.pop();
        }
        if end != before {
            // The value had stored its text: it goes, and with it what the next may repeat.
            self.data.truncate(before as usize);
            self.last = None;
        }
    }

    /// The first value not in the row of its index: from now on rows are listed.
    #[cold]
    #[inline(never)]
    fn spread(&mut self, row: u32) {
        self.rows
            .reserve(self.ends.capacity().max(self.ends.len() + 1));
        self.rows.extend(0..self.ends.len() as u32);
        self.rows.push(row);
        self.sparse = true;
    }

    /// How many values the column holds.
    pub(crate) fn len(&self) -> usize {
        self.ends.len()
    }

    /// The row of each value, in order.
    pub(crate) fn rows(&self) -> impl Iterator<Item = u32> + '_ {
        let listed = self.sparse.then_some(&self.rows[..]);
        (0..self.ends.len()).map(move |i| listed.map_or(i as u32, |r| r[i]))
    }

    /// The row of the last value.
    pub(crate) fn last_row(&self) -> Option<u32> {
        if self.sparse {
            self.rows.last().copied()
        } else {
            self.ends.len().checked_sub(1).map(|i| i as u32)
        }
    }

    /// Each value's text, in order.
    pub(crate) fn texts(&self) -> impl Iterator<Item = &[u8]> + '_ {
        let mut before = 0usize;
        let mut last = 0..0;
        let mut empties = self.empties.iter().peekable();
        self.ends.iter().enumerate().map(move |(i, &end)| {
            let end = end as usize;
            if empties.next_if_eq(&&(i as u32)).is_some() {
                return &[][..];
            }
            if end != before {
                last = before.min(end)..end;
                before = end;
            }
            self.data.get(last.clone()).unwrap_or_default()
        })
    }

    /// Checks the layout [`texts`](Self::texts) relies on: a row and an end per value, ends
    /// that never go back and finish at the stored texts' length, and empty values that
    /// store nothing, listed once each in order.
    pub(crate) fn check(&self) -> Result<(), String> {
        let listed = if self.sparse { self.ends.len() } else { 0 };
        if self.rows.len() != listed || !self.rows.is_sorted_by(|a, b| a < b) {
            return Err("value rows out of order".into());
        }
        if self.ends.last().map_or(0, |&e| e as usize) != self.data.len() {
            return Err("value texts over 4 GiB in one chunk".into());
        }
        if self.ends.is_sorted() && self.empties.is_sorted_by(|a, b| a < b) {
            let stores_nothing = |&i: &u32| {
                let i = i as usize;
                let before = if i == 0 {
                    Some(&0)
                } else {
                    self.ends.get(i - 1)
                };
                before.is_some_and(|b| self.ends.get(i) == Some(b))
            };
            if self.empties.iter().all(stores_nothing) {
                return Ok(());
            }
        }
        Err("value ends out of order".into())
    }

    /// Bytes held on the heap.
    pub(crate) fn heap_bytes(&self) -> usize {
        self.rows.capacity() * 4
            + self.ends.capacity() * 4
            + self.data.capacity()
            + self.empties.capacity() * 4
    }
}

/// Two columns are equal when they hold the same texts in the same rows, however stored.
impl PartialEq for ColumnValues {
    fn eq(&self, other: &Self) -> bool {
        self.rows().eq(other.rows()) && self.texts().eq(other.texts())
    }
}

impl Eq for ColumnValues {}

/// Capacity hints: how many values and bytes each column (by path) took in an earlier chunk,
/// so that the next chunk's columns are sized from them up front. Chunks of one type hold much the same columns in much the same
/// amounts; without the hint every column's vectors grow by doubling, copying their values
/// again and again and asking the system for fresh (zeroed) pages each time. A wrong hint
/// costs only memory or a regrowth, never a value.
#[derive(Debug, Default, Clone)]
pub(crate) struct CapacityHints(FxHashMap<u64, (u32, u32)>);

impl CapacityHints {
    /// Empty vectors for the column with path hash `path`, sized from the hint plus an
    /// eighth.
    fn column(&self, path: u64) -> ColumnValues {
        let Some(&(n, bytes)) = self.0.get(&path) else {
            return ColumnValues::default();
        };
        let (n, bytes) = (n as usize, bytes as usize);
        ColumnValues {
            ends: Vec::with_capacity(n + n / 8),
            data: Vec::with_capacity(bytes + bytes / 8),
            ..ColumnValues::default()
        }
    }
}

/// What the pass keeps per trie node; together, so that entering a node touches one entry.
#[derive(Debug, Clone, Copy)]
struct NodeState {
    /// Last line sequence number that entered the node, to catch duplicate keys.
    seen: u64,
    /// The node's column, or [`NO_COLUMN`].
    col: u32,
}

const NEW_NODE: NodeState = NodeState {
    seen: 0,
    col: NO_COLUMN,
};

/// A node being walked (entered and not yet left), and the position of its key child
/// expected next (see `PathTrie::get_key`). The position lives here, not per node, because
/// it only matters while the node is being walked; so finding the expected name needs no
/// lookup by node.
///
/// Both halves are one `u64`, always read and written whole: written as two `u32` fields
/// and read back as one value (each push onto the stack), the store could not be forwarded
/// to the load, which stalled the walk (docs/performance.md, "Design choices").
#[derive(Debug, Clone, Copy)]
struct Frame(u64);

impl Frame {
    #[inline]
    fn new(node: u32, hint: u32) -> Self {
        Self(u64::from(node) | (u64::from(hint) << 32))
    }

    #[inline]
    fn node(self) -> u32 {
        self.0 as u32
    }

    #[inline]
    fn hint(self) -> u32 {
        (self.0 >> 32) as u32
    }
}

const ROOT_FRAME: Frame = Frame(ROOT as u64);

/// The pass over a chunk: a local trie and column statistics in first-appearance order, and,
/// when converting, every accepted line's values.
#[derive(Debug)]
pub(crate) struct ChunkPass {
    trie: PathTrie,
    /// Per trie node.
    nodes: Vec<NodeState>,
    columns: Vec<ColumnStats>,
    /// The node being walked, innermost.
    top: Frame,
    /// The nodes around `top`, outermost first.
    stack: Vec<Frame>,
    /// The node of the member name [`Visitor::expected_key`] named last.
    expected: u32,
    buf: Vec<u8>,
    seq: u64,
    at: FirstSeen,
    /// Value kinds (and text lengths) seen on the current line, applied when the line is
    /// accepted.
    updates: Vec<(u32, u8, u32)>,
    types: TypeCheck,
    exclude: Vec<String>,
    /// Tests turn member-name guessing off, to compare with it on.
    #[cfg(test)]
    no_guess: bool,
    scratch: String,
    /// Column values (only when `collect`), parallel to `columns`.
    values: Vec<ColumnValues>,
    collect: bool,
    /// Classify strings as dates and instants (`--dates typed`).
    pub(crate) dates: bool,
    /// Sizes for new columns' vectors.
    hints: CapacityHints,
    /// Path hash of each column (when collecting), parallel to `values`.
    paths: Vec<u64>,
    /// Lines accepted so far: the chunk-local row of the current line.
    rows: u32,
}

impl ChunkPass {
    /// A pass that collects statistics only (`flatfhir schema`), or values too (`collect`,
    /// with new columns sized from `hints`).
    pub(crate) fn new(exclude: &[String], collect: bool, hints: CapacityHints) -> Self {
        Self {
            trie: PathTrie::new(),
            nodes: vec![NEW_NODE],
            columns: Vec::new(),
            top: ROOT_FRAME,
            stack: Vec::new(),
            expected: ROOT,
            buf: Vec::new(),
            seq: 0,
            at: FirstSeen { file: 0, line: 0 },
            updates: Vec::new(),
            types: TypeCheck::default(),
            exclude: exclude.to_vec(),
            #[cfg(test)]
            no_guess: false,
            scratch: String::new(),
            values: Vec::new(),
            collect,
            dates: false,
            hints,
            paths: Vec::new(),
            rows: 0,
        }
    }

    /// Adds one line; on error nothing of the line is kept and the reason is returned.
    pub(crate) fn line(
        &mut self,
        text: &str,
        at: FirstSeen,
        resource_type: &str,
    ) -> Result<(), String> {
        self.seq += 1;
        self.at = at;
        self.updates.clear();
        self.stack.clear();
        self.top = ROOT_FRAME;
        self.types.start(resource_type);
        let cols_before = self.columns.len();
        let mut scratch = std::mem::take(&mut self.scratch);
        let walked = scan::walk(text, self, &mut scratch);
        self.scratch = scratch;
        let result = walked.and_then(|()| self.types.check());
        if result.is_err() {
            for c in self.columns.drain(cols_before..) {
                self.nodes[c.node as usize].col = NO_COLUMN;
            }
            if self.collect {
                self.values.truncate(cols_before);
                self.paths.truncate(cols_before);
                for &(col, k, _) in &self.updates {
                    if k != 0 && (col as usize) < cols_before {
                        self.values[col as usize].pop_row(self.rows);
                    }
                }
            }
            return result;
        }
        for &(col, k, len) in &self.updates {
            let c = &mut self.columns[col as usize];
            c.kinds |= k;
            c.non_null += u64::from(k != 0);
            c.text_bytes += u64::from(len);
        }
        self.rows += 1;
        Ok(())
    }

    /// The room the chunk's columns took, to size the next chunk's (see [`CapacityHints`]).
    pub(crate) fn capacity_hints(&self) -> CapacityHints {
        CapacityHints(
            self.paths
                .iter()
                .zip(&self.values)
                .map(|(&p, v)| (p, (v.len() as u32, v.data.len() as u32)))
                .collect(),
        )
    }

    /// Lines accepted so far.
    pub(crate) fn rows(&self) -> u32 {
        self.rows
    }

    /// The chunk's schema and, when collecting, its values (parallel to the columns).
    pub(crate) fn finish(mut self) -> (crate::schema::ChunkSchema, Vec<ColumnValues>) {
        for (c, v) in self.columns.iter_mut().zip(&self.values) {
            c.stored_bytes = v.data.len() as u64;
        }
        let schema = crate::schema::ChunkSchema {
            trie: self.trie,
            columns: self.columns,
        };
        (schema, self.values)
    }

    /// Enters `node`: always inlined into its two callers, which run for every member and
    /// element (as a call, its prologue and the `Result` it returns through memory cost
    /// about as much as its work).
    #[inline(always)]
    fn enter(&mut self, node: u32) -> Result<(), Reason> {
        let n = node as usize;
        if n >= self.nodes.len() {
            self.new_node();
        }
        let state = &mut self.nodes[n];
        if state.seen == self.seq {
            return Err(duplicate_key(&self.trie, node).into());
        }
        state.seen = self.seq;
        self.stack.push(self.top);
        self.top = Frame::new(node, 0);
        Ok(())
    }

    /// Adds the column of `node`, seen for the first time in the chunk.
    #[cold]
    #[inline(never)]
    fn new_column(&mut self, node: u32) -> u32 {
        let col = self.columns.len() as u32;
        self.nodes[node as usize].col = col;
        self.columns.push(ColumnStats {
            node,
            kinds: 0,
            non_null: 0,
            text_bytes: 0,
            stored_bytes: 0,
            first_seen: self.at,
        });
        if self.collect {
            let path = self.trie.path_hash(node);
            self.values.push(self.hints.column(path));
            self.paths.push(path);
        }
        col
    }

    /// Makes room for the node the trie has just added.
    #[cold]
    #[inline(never)]
    fn new_node(&mut self) {
        self.nodes.push(NEW_NODE);
    }

    /// Enters member `key` at `depth`: the child the trie expected next when `expected`
    /// (the walker matched its name), otherwise the child looked up by name. Always inlined,
    /// like [`enter`](Self::enter): it runs for every member.
    #[inline(always)]
    fn enter_member(&mut self, depth: usize, key: &str, expected: bool) -> Result<bool, Reason> {
        if depth == 1 && self.exclude.iter().any(|e| e == key) {
            return Ok(false);
        }
        self.types.enter(depth, key);
        let parent = self.top.node();
        let mut hint = self.top.hint();
        let node = if expected {
            hint += 1;
            self.expected
        } else {
            self.trie.key(&mut self.buf, parent, key, &mut hint)
        };
        self.top = Frame::new(parent, hint);
        self.enter(node)?;
        Ok(true)
    }
}

impl Visitor for ChunkPass {
    #[inline]
    fn enter_key(&mut self, depth: usize, key: &str) -> Result<bool, Reason> {
        self.enter_member(depth, key, false)
    }

    #[inline]
    fn expected_key(&mut self, _depth: usize) -> Option<&str> {
        #[cfg(test)]
        if self.no_guess {
            return None;
        }
        let (key, node) = self.trie.expected_key(self.top.node(), self.top.hint())?;
        self.expected = node;
        Some(key)
    }

    #[inline]
    fn enter_expected(&mut self, depth: usize, key: &str) -> Result<bool, Reason> {
        self.enter_member(depth, key, true)
    }

    #[inline]
    fn enter_index(&mut self, index: usize) -> Result<(), Reason> {
        self.types.enter_index();
        let node = self.trie.index(self.top.node(), index as u32);
        self.enter(node)
    }

    #[inline]
    fn leave(&mut self) {
        self.top = self.stack.pop().unwrap_or(ROOT_FRAME);
    }

    /// Always inlined: the walker calls it where it knows the kind of value, so the matches
    /// on the kind fold away (as a call, the kind was dispatched through a jump table that
    /// mispredicted often).
    #[inline(always)]
    fn scalar(&mut self, v: Scalar<'_>) -> Result<(), Reason> {
        let node = self.top.node();
        if node == ROOT {
            return Err("the object is empty".into());
        }
        self.types.scalar(&v);
        let mut col = self.nodes[node as usize].col;
        if col == NO_COLUMN {
            col = self.new_column(node);
        }
        let mut k = kind_of(&v);
        if self.dates
            && let Scalar::Str(s) = v
        {
            k = crate::dates::classify(s);
        }
        let text = match v {
            Scalar::Str(s) => s,
            Scalar::Num { raw, .. } => raw,
            Scalar::Bool(true) => "true",
            Scalar::Bool(false) => "false",
            Scalar::Null | Scalar::EmptyArray | Scalar::EmptyObject => "",
        };
        self.updates
            .push((col, k, text.len().min(u32::MAX as usize) as u32));
        if self.collect && k != 0 {
            self.values[col as usize].push(self.rows, text.as_bytes());
        }
        Ok(())
    }
}

#[cold]
#[inline(never)]
fn duplicate_key(trie: &PathTrie, node: u32) -> String {
    format!(
        "duplicate key {} in one object (JSON readers keep only the last value; fix the source)",
        trie.display_path(node)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Small JSON objects from a grammar; member names include ones that need escaping.
    fn json_object() -> impl Strategy<Value = serde_json::Value> {
        use serde_json::Value;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            (-5i64..5).prop_map(Value::from),
            prop::sample::select(vec!["", "x", "x", "yy", "\u{e9}"]).prop_map(Value::from),
        ];
        let name = prop::sample::select(vec!["a", "b", "c", "d\"q", "\u{e9}"]);
        leaf.prop_recursive(3, 16, 4, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
                prop::collection::btree_map(name.clone().prop_map(String::from), inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
        .prop_filter("an object", Value::is_object)
    }

    proptest! {
        /// Guessing the next member name (the walker compares the line with the name the
        /// trie expects) gives the same lines, columns, statistics and values as looking
        /// every name up, on lines that repeat shapes, reorder members, spell a name with an
        /// escape or repeat a name in one object.
        #[test]
        fn guessed_member_names_change_nothing(
            docs in prop::collection::vec(json_object(), 1..4),
            picks in prop::collection::vec((0usize..4, 0u8..4), 1..12),
        ) {
            let lines: Vec<String> = picks
                .iter()
                .map(|&(i, edit)| {
                    let body = docs[i % docs.len()].to_string();
                    let body = match edit {
                        1 => body.replacen("\"a\"", "\"\\u0061\"", 1),
                        2 => body.replacen("\"b\":", "\"a\":", 1),
                        _ => body,
                    };
                    format!(r#"{{"resourceType":"Patient","r":{body}}}"#)
                })
                .collect();
            let run = |guess: bool| {
                let mut pass = ChunkPass::new(&[], true, CapacityHints::default());
                pass.no_guess = !guess;
                let results: Vec<Result<(), String>> = lines
                    .iter()
                    .enumerate()
                    .map(|(i, l)| {
                        let at = FirstSeen { file: 0, line: i as u64 + 1 };
                        pass.line(l, at, "Patient")
                    })
                    .collect();
                let (schema, values) = pass.finish();
                let columns: Vec<(String, u8, u64, u64, FirstSeen)> = schema
                    .columns
                    .iter()
                    .map(|c| {
                        let path = schema.trie.display_path(c.node);
                        (path, c.kinds, c.non_null, c.text_bytes, c.first_seen)
                    })
                    .collect();
                (results, columns, values)
            };
            let (guessed, looked_up) = (run(true), run(false));
            prop_assert_eq!(guessed, looked_up);
        }

        /// However values are pushed and undone (repeats, empty strings, a rejected line's
        /// value), a column gives back exactly the texts kept, in their rows, both as texts
        /// and as the Arrow string array of the write.
        #[test]
        fn column_values_keep_every_text(
            ops in prop::collection::vec(
                (
                    any::<bool>(),
                    any::<bool>(),
                    prop::sample::select(vec!["", "a", "a", "bb", "é", "a"]),
                ),
                0..60,
            ),
        ) {
            use arrow_array::cast::AsArray;
            let (mut got, mut want) = (ColumnValues::default(), Vec::<(u32, &str)>::new());
            let mut row = 0u32;
            for &(skip_row, undo, text) in &ops {
                row += u32::from(skip_row);
                got.push(row, text.as_bytes());
                want.push((row, text));
                if undo {
                    got.pop_row(row);
                    want.pop();
                }
                row += 1;
            }
            prop_assert!(got.check().is_ok());
            let texts: Vec<(u32, &[u8])> = got.rows().zip(got.texts()).collect();
            let expect: Vec<(u32, &[u8])> = want.iter().map(|&(r, t)| (r, t.as_bytes())).collect();
            prop_assert_eq!(texts, expect);
            let utf8 = arrow_schema::DataType::Utf8;
            let array = crate::stash::union_array(&utf8, Some(got), row as usize).unwrap();
            let array = array.as_string::<i32>();
            let mut model = vec![None; row as usize];
            for &(r, t) in &want {
                model[r as usize] = Some(t);
            }
            let got: Vec<Option<&str>> = array.iter().collect();
            prop_assert_eq!(got, model);
        }

        /// The SIMD UTF-8 check accepts exactly what std accepts and reports the same first
        /// bad byte, on mostly-ASCII lines of any length (the SIMD paths work in 64-byte
        /// blocks) with stray multi-byte and invalid bytes.
        #[test]
        fn utf8_check_agrees_with_std(
            parts in prop::collection::vec(
                prop_oneof![
                    4 => "[ -~]{0,80}".prop_map(String::into_bytes),
                    1 => "\\PC{1,3}".prop_map(String::into_bytes),
                    1 => prop::collection::vec(any::<u8>(), 1..4),
                ],
                0..12,
            )
        ) {
            let bytes = parts.concat();
            let want = std::str::from_utf8(&bytes)
                .map_err(|e| format!("not valid UTF-8 at byte {}", e.valid_up_to()));
            prop_assert_eq!(line_text(&bytes, usize::MAX), want);
        }
    }

    fn run(lines: &[&str], room: CapacityHints) -> (Vec<ColumnValues>, CapacityHints) {
        let mut pass = ChunkPass::new(&[], true, room);
        for (i, l) in lines.iter().enumerate() {
            let at = FirstSeen {
                file: 0,
                line: i as u64 + 1,
            };
            // The third line is rejected: its values must go, whatever the sizing.
            let _ = pass.line(l, at, "Patient");
        }
        let room = pass.capacity_hints();
        (pass.finish().1, room)
    }

    /// The root `resourceType` must be a string naming the type asked for, on every line;
    /// a rejected line leaves nothing behind for the next.
    #[test]
    fn resource_types_are_checked_per_line() {
        let mut pass = ChunkPass::new(&[], false, CapacityHints::default());
        let at = FirstSeen { file: 0, line: 1 };
        let mut line = |text: &str, want: &str| pass.line(text, at, want);
        assert_eq!(
            line(r#"{"resourceType":"Patient","id":"a"}"#, "Patient"),
            Ok(())
        );
        assert_eq!(
            line(r#"{"id":"b"}"#, "Patient"),
            Err("no resourceType (expected Patient)".into())
        );
        assert_eq!(
            line(r#"{"resourceType":"Observation"}"#, "Patient"),
            Err("resourceType is Observation, but this file holds Patient".into())
        );
        assert_eq!(
            line(r#"{"resourceType":5}"#, "Patient"),
            Err(r#"resourceType is not a string (Num { raw: "5", int: true })"#.into())
        );
        assert_eq!(
            line(r#"{"resourceType":"Observation"}"#, "Observation"),
            Ok(())
        );
        assert_eq!(
            line(r#"{"a":{"resourceType":"Observation"}}"#, "Observation"),
            Err("no resourceType (expected Observation)".into())
        );
        // An array or object is not a type, whatever it holds.
        assert_eq!(
            line(r#"{"resourceType":["Patient"]}"#, "Patient"),
            Err("resourceType is not a string (an array)".into())
        );
        assert_eq!(
            line(r#"{"resourceType":{"a":"Patient"}}"#, "Patient"),
            Err("resourceType is not a string (an object)".into())
        );
        assert_eq!(line(r#"{"resourceType":"Patient"}"#, "Patient"), Ok(()));
        assert_eq!(pass.rows(), 3);
    }

    /// A frame's two halves keep their values at the ends of their range.
    #[test]
    fn frames_keep_node_and_hint() {
        for (node, hint) in [
            (0, 0),
            (u32::MAX, 0),
            (0, u32::MAX),
            (u32::MAX, u32::MAX),
            (7, 3),
        ] {
            let f = Frame::new(node, hint);
            assert_eq!((f.node(), f.hint()), (node, hint));
        }
        assert_eq!((ROOT_FRAME.node(), ROOT_FRAME.hint()), (ROOT, 0));
    }

    /// Sizing columns from another chunk's room (right, too small, too large, or for other
    /// columns) never changes the values kept.
    #[test]
    fn room_hints_change_no_value() {
        let lines = [
            r#"{"resourceType":"Patient","id":"a","name":[{"given":["x","y"]}]}"#,
            r#"{"resourceType":"Patient","id":"bb","active":true}"#,
            r#"{"resourceType":"Patient","id":"c","active":false,"active":true}"#,
            r#"{"resourceType":"Patient","id":"d","name":[{"given":["z"]}],"n":1.5}"#,
        ];
        let (plain, exact) = run(&lines, CapacityHints::default());
        // The duplicate key rejected line 3, and its `id` went with it.
        assert_eq!(plain[1].data, b"abbd");
        assert_eq!(exact.0.len(), plain.len());
        let all = |n, bytes| CapacityHints(exact.0.keys().map(|&k| (k, (n, bytes))).collect());
        let (_, again) = run(&lines, exact.clone());
        assert_eq!(again.0, exact.0);
        let rooms = [all(1, 1), all(1000, 100_000), all(0, 0), exact];
        for room in rooms {
            let (got, _) = run(&lines, room);
            assert_eq!(got.len(), plain.len());
            for (g, p) in got.iter().zip(&plain) {
                assert_eq!(
                    (&g.rows, g.sparse, &g.ends, &g.data),
                    (&p.rows, p.sparse, &p.ends, &p.data)
                );
            }
        }
    }

    /// Each column's statistics count the texts of accepted lines only, in both modes; with
    /// values kept, they equal the bytes kept.
    #[test]
    fn text_bytes_count_accepted_values() {
        let lines = [
            r#"{"resourceType":"Patient","id":"a","name":[{"given":["x","y"]}]}"#,
            r#"{"resourceType":"Patient","id":"bb","active":true,"n":-1.50}"#,
            r#"{"resourceType":"Patient","id":"c","active":false,"active":true}"#,
            r#"{"resourceType":"Patient","id":"d\u00e9","active":false,"name":[]}"#,
        ];
        for collect in [false, true] {
            let mut pass = ChunkPass::new(&[], collect, CapacityHints::default());
            for (i, l) in lines.iter().enumerate() {
                let at = FirstSeen {
                    file: 0,
                    line: i as u64 + 1,
                };
                let _ = pass.line(l, at, "Patient");
            }
            let (schema, values) = pass.finish();
            let bytes: Vec<(String, u64)> = schema
                .columns
                .iter()
                .map(|c| (schema.trie.display_path(c.node), c.text_bytes))
                .collect();
            // resourceType: 3 × "Patient"; id: "a", "bb", "dé" (3 bytes); active: "true",
            // "false"; n: "-1.50"; name[0].given: "x" and "y"; `name: []` is a column that
            // holds no value.
            let want = [7 * 3, 1 + 2 + 3, 1, 1, 4 + 5, 5, 0];
            assert_eq!(
                bytes.iter().map(|(_, b)| *b).collect::<Vec<_>>(),
                want,
                "{bytes:?}"
            );
            if collect {
                for (c, v) in schema.columns.iter().zip(&values) {
                    let kept: usize = v.texts().map(<[u8]>::len).sum();
                    assert_eq!(c.text_bytes, kept as u64);
                }
            }
            // Stored bytes count a run of one value once, and only when values are kept:
            // resourceType "Patient" once; active "true", "false" (the rejected line's
            // "true" is undone).
            let stored: Vec<u64> = schema.columns.iter().map(|c| c.stored_bytes).collect();
            let want: [u64; 7] = if collect {
                [7, 1 + 2 + 3, 1, 1, 4 + 5, 5, 0]
            } else {
                [0; 7]
            };
            assert_eq!(stored, want, "collect {collect}");
        }
    }
}
