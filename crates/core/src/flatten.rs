//! Flattening one line: the two visitors that walk a resource with [`crate::scan`] — one
//! collects column statistics (schema pass), the other appends values to column builders
//! (writing pass) — and the per-line checks (length, UTF-8, object, resourceType).

use std::sync::Arc;

use arrow_array::builder::{BooleanBuilder, Float64Builder, Int64Builder, StringBuilder};
use arrow_array::{ArrayRef, RecordBatch, new_null_array};
use arrow_schema::{DataType, Schema};

use crate::scan::{self, Scalar, Visitor};
use crate::schema::{ColumnStats, FirstSeen, NO_COLUMN, PathTrie, ROOT, UnionSchema, kind};

/// Checks length and UTF-8; the JSON itself is checked while walking.
pub(crate) fn line_text(bytes: &[u8], max_line_bytes: usize) -> Result<&str, String> {
    if bytes.len() > max_line_bytes {
        return Err(format!(
            "line is {} bytes, longer than the limit of {} (--max-line-bytes)",
            bytes.len(),
            max_line_bytes
        ));
    }
    std::str::from_utf8(bytes).map_err(|e| format!("not valid UTF-8 at byte {}", e.valid_up_to()))
}

/// The kind flag of a scalar, or 0 for no value (null, `[]`, `{}`).
#[inline]
fn kind_of(v: &Scalar<'_>) -> u8 {
    match v {
        Scalar::Str(_) => kind::STR,
        Scalar::Bool(_) => kind::BOOL,
        Scalar::Num { int: false, .. } => kind::FRAC,
        Scalar::Num { raw, int: true } => {
            let digits = raw.len() - usize::from(raw.starts_with('-'));
            if digits <= 18 || raw.parse::<i64>().is_ok() {
                kind::INT
            } else {
                kind::BIGINT
            }
        }
        Scalar::Null | Scalar::EmptyArray | Scalar::EmptyObject => 0,
    }
}

/// Captures the root `resourceType` while walking.
#[derive(Debug, Default)]
struct TypeCheck {
    in_type: bool,
    found: Option<Result<String, String>>,
}

impl TypeCheck {
    #[inline]
    fn enter(&mut self, depth: usize, key: &str) {
        self.in_type = depth == 1 && key == "resourceType";
    }

    #[inline]
    fn scalar(&mut self, v: &Scalar<'_>) {
        if self.in_type {
            self.in_type = false;
            self.found = Some(match v {
                Scalar::Str(s) => Ok((*s).to_string()),
                other => Err(format!("resourceType is not a string ({other:?})")),
            });
        }
    }

    /// After the walk: the line's type must be the group's.
    fn check(&mut self, want: &str) -> Result<(), String> {
        match self.found.take() {
            None => Err(format!("no resourceType (expected {want})")),
            Some(Err(e)) => Err(e),
            Some(Ok(t)) if t == want => Ok(()),
            Some(Ok(t)) => Err(format!("resourceType is {t}, but this file holds {want}")),
        }
    }
}

/// Schema pass over a chunk: a local trie and column statistics in first-appearance order.
#[derive(Debug)]
pub(crate) struct SchemaPass {
    trie: PathTrie,
    node_col: Vec<u32>,
    /// Last line sequence number that entered each node, to catch duplicate keys.
    node_seen: Vec<u64>,
    /// Per node: position of the key child expected next (see `PathTrie::get_key`).
    hints: Vec<u32>,
    columns: Vec<ColumnStats>,
    stack: Vec<u32>,
    buf: Vec<u8>,
    seq: u64,
    at: FirstSeen,
    /// Value kinds seen on the current line, applied when the line is accepted.
    updates: Vec<(u32, u8)>,
    types: TypeCheck,
    exclude: Vec<String>,
    scratch: String,
}

impl SchemaPass {
    pub(crate) fn new(exclude: &[String]) -> Self {
        Self {
            trie: PathTrie::new(),
            node_col: vec![NO_COLUMN],
            node_seen: vec![0],
            hints: vec![0],
            columns: Vec::new(),
            stack: vec![ROOT],
            buf: Vec::new(),
            seq: 0,
            at: FirstSeen { file: 0, line: 0 },
            updates: Vec::new(),
            types: TypeCheck::default(),
            exclude: exclude.to_vec(),
            scratch: String::new(),
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
        self.stack.truncate(1);
        self.hints[ROOT as usize] = 0;
        let cols_before = self.columns.len();
        let mut scratch = std::mem::take(&mut self.scratch);
        let walked = scan::walk(text, self, &mut scratch);
        self.scratch = scratch;
        let result = walked.and_then(|()| self.types.check(resource_type));
        if result.is_err() {
            for c in self.columns.drain(cols_before..) {
                self.node_col[c.node as usize] = NO_COLUMN;
            }
            self.types = TypeCheck::default();
            return result;
        }
        for &(col, k) in &self.updates {
            let c = &mut self.columns[col as usize];
            c.kinds |= k;
            c.non_null += u64::from(k != 0);
        }
        Ok(())
    }

    pub(crate) fn finish(self) -> crate::schema::ChunkSchema {
        crate::schema::ChunkSchema {
            trie: self.trie,
            columns: self.columns,
        }
    }

    #[inline]
    fn enter(&mut self, node: u32) -> Result<(), String> {
        let n = node as usize;
        if n >= self.node_col.len() {
            self.node_col.push(NO_COLUMN);
            self.node_seen.push(0);
            self.hints.push(0);
        }
        self.hints[n] = 0;
        if self.node_seen[n] == self.seq {
            return Err(duplicate_key(&self.trie, node));
        }
        self.node_seen[n] = self.seq;
        self.stack.push(node);
        Ok(())
    }
}

impl Visitor for SchemaPass {
    #[inline]
    fn enter_key(&mut self, depth: usize, key: &str) -> Result<bool, String> {
        if depth == 1 && self.exclude.iter().any(|e| e == key) {
            return Ok(false);
        }
        self.types.enter(depth, key);
        let parent = *self.stack.last().unwrap_or(&ROOT);
        let node = self
            .trie
            .key(&mut self.buf, parent, key, &mut self.hints[parent as usize]);
        self.enter(node)?;
        Ok(true)
    }

    #[inline]
    fn enter_index(&mut self, index: usize) -> Result<(), String> {
        let parent = *self.stack.last().unwrap_or(&ROOT);
        let node = self.trie.index(parent, index as u32);
        self.enter(node)
    }

    #[inline]
    fn leave(&mut self) {
        self.stack.pop();
    }

    #[inline]
    fn scalar(&mut self, v: Scalar<'_>) -> Result<(), String> {
        let node = *self.stack.last().unwrap_or(&ROOT);
        if node == ROOT {
            return Err("the object is empty".into());
        }
        self.types.scalar(&v);
        let mut col = self.node_col[node as usize];
        if col == NO_COLUMN {
            col = self.columns.len() as u32;
            self.node_col[node as usize] = col;
            self.columns.push(ColumnStats {
                node,
                kinds: 0,
                non_null: 0,
                first_seen: self.at,
            });
        }
        self.updates.push((col, kind_of(&v)));
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

/// A column being filled for one chunk.
#[derive(Debug)]
enum Builder {
    Int(Int64Builder),
    Float(Float64Builder),
    Bool(BooleanBuilder),
    Str(StringBuilder),
}

#[derive(Debug)]
struct ColumnBuffer {
    rows: usize,
    b: Builder,
}

impl ColumnBuffer {
    fn new(t: &DataType) -> Self {
        let b = match t {
            DataType::Int64 => Builder::Int(Int64Builder::new()),
            DataType::Float64 => Builder::Float(Float64Builder::new()),
            DataType::Boolean => Builder::Bool(BooleanBuilder::new()),
            _ => Builder::Str(StringBuilder::new()),
        };
        Self { rows: 0, b }
    }

    fn pad(&mut self, rows: usize) {
        let n = rows - self.rows;
        if n > 0 {
            match &mut self.b {
                Builder::Int(b) => b.append_nulls(n),
                Builder::Float(b) => b.append_nulls(n),
                Builder::Bool(b) => b.append_nulls(n),
                Builder::Str(b) => b.append_nulls(n),
            }
            self.rows = rows;
        }
    }

    #[inline]
    fn append(&mut self, row: usize, v: &Scalar<'_>) -> Result<(), String> {
        self.pad(row);
        match (&mut self.b, v) {
            (Builder::Str(b), Scalar::Str(s)) => b.append_value(s),
            (Builder::Str(b), Scalar::Num { raw, .. }) => b.append_value(raw),
            (Builder::Str(b), Scalar::Bool(x)) => b.append_value(if *x { "true" } else { "false" }),
            (Builder::Int(b), Scalar::Num { raw, int: true }) => {
                b.append_value(raw.parse::<i64>().map_err(|_| changed())?);
            }
            (Builder::Float(b), Scalar::Num { raw, .. }) => {
                b.append_value(raw.parse::<f64>().map_err(|_| changed())?);
            }
            (Builder::Bool(b), Scalar::Bool(x)) => b.append_value(*x),
            _ => return Err(changed()),
        }
        self.rows = row + 1;
        Ok(())
    }

    fn finish(mut self, rows: usize) -> ArrayRef {
        self.pad(rows);
        match self.b {
            Builder::Int(mut b) => Arc::new(b.finish()),
            Builder::Float(mut b) => Arc::new(b.finish()),
            Builder::Bool(mut b) => Arc::new(b.finish()),
            Builder::Str(mut b) => Arc::new(b.finish()),
        }
    }
}

/// The marker reason for a line that differs from what the schema pass saw.
pub(crate) const CHANGED: &str = "the line differs from the schema pass";

fn changed() -> String {
    CHANGED.to_string()
}

/// Writing pass over a chunk: appends each line's values to the columns of the frozen schema.
#[derive(Debug)]
pub(crate) struct RowPass<'s> {
    schema: &'s UnionSchema,
    arrow: &'s Arc<Schema>,
    columns: Vec<Option<ColumnBuffer>>,
    stack: Vec<u32>,
    buf: Vec<u8>,
    hints: Vec<u32>,
    row: usize,
    exclude: &'s [String],
    scratch: String,
}

impl<'s> RowPass<'s> {
    pub(crate) fn new(
        schema: &'s UnionSchema,
        arrow: &'s Arc<Schema>,
        exclude: &'s [String],
    ) -> Self {
        Self {
            schema,
            arrow,
            columns: (0..arrow.fields().len()).map(|_| None).collect(),
            stack: vec![ROOT],
            buf: Vec::new(),
            hints: vec![0; schema.trie.len()],
            row: 0,
            exclude,
            scratch: String::new(),
        }
    }

    /// Appends one line (already accepted by the schema pass) as a row.
    pub(crate) fn line(&mut self, text: &str) -> Result<(), String> {
        self.stack.truncate(1);
        self.hints[ROOT as usize] = 0;
        let mut scratch = std::mem::take(&mut self.scratch);
        let r = scan::walk(text, self, &mut scratch);
        self.scratch = scratch;
        r?;
        self.row += 1;
        Ok(())
    }

    /// The chunk as a record batch of the full schema.
    pub(crate) fn finish(self) -> Result<RecordBatch, arrow_schema::ArrowError> {
        let rows = self.row;
        let arrays: Vec<ArrayRef> = self
            .columns
            .into_iter()
            .zip(self.arrow.fields())
            .map(|(c, f)| match c {
                Some(c) => c.finish(rows),
                None => new_null_array(f.data_type(), rows),
            })
            .collect();
        let opts = arrow_array::RecordBatchOptions::new().with_row_count(Some(rows));
        RecordBatch::try_new_with_options(Arc::clone(self.arrow), arrays, &opts)
    }
}

impl Visitor for RowPass<'_> {
    #[inline]
    fn enter_key(&mut self, depth: usize, key: &str) -> Result<bool, String> {
        if depth == 1 && self.exclude.iter().any(|e| e == key) {
            return Ok(false);
        }
        let parent = *self.stack.last().unwrap_or(&ROOT);
        let hint = &mut self.hints[parent as usize];
        let node = self
            .schema
            .trie
            .get_key(&mut self.buf, parent, key, hint)
            .ok_or_else(changed)?;
        self.hints[node as usize] = 0;
        self.stack.push(node);
        Ok(true)
    }

    #[inline]
    fn enter_index(&mut self, index: usize) -> Result<(), String> {
        let parent = *self.stack.last().unwrap_or(&ROOT);
        let node = self
            .schema
            .trie
            .get_index(parent, index as u32)
            .ok_or_else(changed)?;
        self.hints[node as usize] = 0;
        self.stack.push(node);
        Ok(())
    }

    #[inline]
    fn leave(&mut self) {
        self.stack.pop();
    }

    #[inline]
    fn scalar(&mut self, v: Scalar<'_>) -> Result<(), String> {
        if matches!(v, Scalar::Null | Scalar::EmptyArray | Scalar::EmptyObject) {
            return Ok(());
        }
        let node = *self.stack.last().unwrap_or(&ROOT);
        let col = *self
            .schema
            .node_col
            .get(node as usize)
            .ok_or_else(changed)?;
        if col == NO_COLUMN {
            return Err(changed());
        }
        let slot = &mut self.columns[col as usize];
        let buf = slot
            .get_or_insert_with(|| ColumnBuffer::new(self.arrow.field(col as usize).data_type()));
        buf.append(self.row, &v)
    }
}
