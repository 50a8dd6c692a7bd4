//! Flattened chunks waiting for the union schema. The pass over the input flattens each chunk
//! once, against the chunk's own columns; the union schema (column order and types) is known
//! only when the whole input has been read. Until then the chunks are held here: in memory up
//! to a budget, then in an unlinked temporary file (the spill), so memory stays bounded
//! whatever the input size. At write time each chunk is loaded and widened to the union
//! schema: columns reordered, absent ones null, texts turned into the column's type.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use arrow_array::{
    ArrayRef, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray, new_null_array,
};
use arrow_buffer::{BooleanBufferBuilder, Buffer, NullBuffer, OffsetBuffer, ScalarBuffer};
use arrow_schema::{DataType, SchemaRef};

use crate::error::{Error, Result};
use crate::flatten::ColumnValues;

/// Default [`crate::ConvertOptions::memory_budget`]: flattened data held in memory before the
/// rest goes to the spill file (64 MiB).
pub const DEFAULT_MEMORY_BUDGET: usize = 64 << 20;

/// One chunk's rows: its columns' values in the chunk's own column order.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct ChunkTable {
    /// Rows (accepted lines) in the chunk.
    pub(crate) rows: u32,
    /// Input bytes behind the chunk, for the writer's row-group bound.
    pub(crate) input_bytes: u64,
    /// Values per chunk column.
    pub(crate) columns: Vec<ColumnValues>,
}

impl ChunkTable {
    /// Bytes held on the heap.
    pub(crate) fn heap_bytes(&self) -> usize {
        self.columns
            .iter()
            .map(ColumnValues::heap_bytes)
            .sum::<usize>()
            + self.columns.capacity() * std::mem::size_of::<ColumnValues>()
    }

    /// Serialises the table compactly for the spill (flattened FHIR repeats itself: the same
    /// system URL, status or encounter in row after row). Header: rows (u32), input bytes
    /// (u64), column count (u32), all little-endian. Per column: the value count and the
    /// stored text length (varints); a flag byte (1: the column has a value in every row, so
    /// the rows are not stored); unless flagged, each value's row as a varint gap from the
    /// previous row; per value a varint tag: `len << 1` for a value that stores its text
    /// (`len` > 0), 1 for a value that repeats the last stored text, 0 for the empty string;
    /// then the stored texts, back to back. This is the column's own layout
    /// ([`ColumnValues`] holds repeats once already), so encoding copies the texts in one
    /// piece and compares none of them. A column whose layout is broken (texts over 4 GiB in
    /// one chunk) is an error, not a wrong text.
    pub(crate) fn encode(&self, out: &mut Vec<u8>) -> std::result::Result<(), String> {
        for c in &self.columns {
            c.check()?;
        }
        out.extend_from_slice(&self.rows.to_le_bytes());
        out.extend_from_slice(&self.input_bytes.to_le_bytes());
        out.extend_from_slice(&(self.columns.len() as u32).to_le_bytes());
        for c in &self.columns {
            put_varint(out, c.len() as u64);
            put_varint(out, c.data.len() as u64);
            let dense = c.len() == self.rows as usize;
            out.push(u8::from(dense));
            if !dense {
                let mut next = 0u32;
                for r in c.rows() {
                    put_varint(out, u64::from(r.wrapping_sub(next)));
                    next = r.wrapping_add(1);
                }
            }
            // `check` has made sure: ends never go back and finish at the texts' length,
            // and the empties are values that store nothing, in order.
            let mut empties = c.empties.iter().peekable();
            let mut before = 0u32;
            for (i, &end) in c.ends.iter().enumerate() {
                if end != before {
                    put_varint(out, u64::from(end - before) << 1);
                } else if empties.next_if_eq(&&(i as u32)).is_some() {
                    out.push(0);
                } else {
                    out.push(1);
                }
                before = end;
            }
            out.extend_from_slice(&c.data);
        }
        Ok(())
    }

    /// Reads back what [`encode`](Self::encode) wrote, into the same layout.
    pub(crate) fn decode(bytes: &[u8]) -> std::result::Result<Self, String> {
        let mut r = Cursor { bytes, at: 0 };
        let rows = r.u32()?;
        let input_bytes = r.u64()?;
        let n = r.u32()? as usize;
        let mut columns = Vec::with_capacity(n.min(1 << 20));
        for _ in 0..n {
            let values = usize::try_from(r.varint()?).map_err(|e| e.to_string())?;
            if values > rows as usize {
                return Err(format!("{values} values in a chunk of {rows} rows"));
            }
            let stored = u32::try_from(r.varint()?).map_err(|_| "value texts over 4 GiB")?;
            let dense = r.take(1)?[0] == 1;
            let mut listed = Vec::new();
            if !dense {
                listed.reserve(values);
                let mut next = 0u32;
                for _ in 0..values {
                    let gap = u32::try_from(r.varint()?).map_err(|e| e.to_string())?;
                    let row = next.checked_add(gap).ok_or("row overflow")?;
                    if row >= rows {
                        return Err(format!("a value in row {row} of a chunk of {rows} rows"));
                    }
                    listed.push(row);
                    next = row.wrapping_add(1);
                }
            }
            // Rows are listed once a row goes without a value before the last value's row
            // (see `ColumnValues::push`); values in rows 0, 1, 2, ... are not.
            let sparse = listed.last().is_some_and(|&r| r as usize != values - 1);
            if !sparse {
                listed.clear();
            }
            let mut ends = Vec::with_capacity(values);
            let mut empties = Vec::new();
            let mut end = 0u32;
            let mut last = None;
            for i in 0..values {
                match r.varint()? {
                    0 => empties.push(i as u32),
                    1 if last.is_some() => {}
                    1 => return Err("a repeated value before any stored text".into()),
                    tag if tag & 1 == 1 => return Err(format!("bad value tag {tag}")),
                    tag => {
                        let len = u32::try_from(tag >> 1)
                            .ok()
                            .and_then(|len| end.checked_add(len))
                            .filter(|&e| e <= stored);
                        last = Some(end as usize);
                        end = len.ok_or("value text beyond the stored texts")?;
                    }
                }
                ends.push(end);
            }
            if end != stored {
                return Err(format!("{} bytes of text left over", stored - end));
            }
            let data = r.take(stored as usize)?.to_vec();
            columns.push(ColumnValues {
                rows: listed,
                sparse,
                ends,
                data,
                empties,
                last,
            });
        }
        if r.at != bytes.len() {
            return Err(format!("{} bytes left over", bytes.len() - r.at));
        }
        Ok(Self {
            rows,
            input_bytes,
            columns,
        })
    }

    /// Places the chunk's columns at their union positions: `to_union[i]` is the union
    /// column of the chunk's column `i`; union columns the chunk lacks are `None`.
    pub(crate) fn into_union_columns(
        self,
        to_union: &[u32],
        width: usize,
    ) -> std::result::Result<Vec<Option<ColumnValues>>, String> {
        if to_union.len() != self.columns.len() {
            return Err(format!(
                "{} columns in the chunk, {} mapped",
                self.columns.len(),
                to_union.len()
            ));
        }
        let mut by_union: Vec<Option<ColumnValues>> = (0..width).map(|_| None).collect();
        for (&u, values) in to_union.iter().zip(self.columns) {
            let slot = by_union
                .get_mut(u as usize)
                .ok_or_else(|| format!("column {u} is not in the union schema"))?;
            *slot = Some(values);
        }
        Ok(by_union)
    }

    /// Widens the chunk to the union schema as one batch (`schema`: the union's Arrow
    /// schema). The writer builds the same arrays column by column with [`union_array`].
    pub(crate) fn into_batch(
        self,
        to_union: &[u32],
        schema: &SchemaRef,
    ) -> std::result::Result<RecordBatch, String> {
        let n = self.rows as usize;
        let fields = schema.fields();
        let arrays = self
            .into_union_columns(to_union, fields.len())?
            .into_iter()
            .zip(fields)
            .map(|(values, f)| {
                union_array(f.data_type(), values, n)
                    .map_err(|e| format!("column {}: {e}", f.name()))
            })
            .collect::<std::result::Result<Vec<ArrayRef>, String>>()?;
        let opts = arrow_array::RecordBatchOptions::new().with_row_count(Some(n));
        RecordBatch::try_new_with_options(std::sync::Arc::clone(schema), arrays, &opts)
            .map_err(|e| e.to_string())
    }
}

/// One union column of a chunk of `n` rows, of type `t`: the chunk's values, or all nulls
/// when the chunk has none.
pub(crate) fn union_array(
    t: &DataType,
    values: Option<ColumnValues>,
    n: usize,
) -> std::result::Result<ArrayRef, String> {
    match values {
        Some(v) if v.len() > 0 => column_array(t, v, n),
        _ => Ok(new_null_array(t, n)),
    }
}
struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> std::result::Result<&'a [u8], String> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.bytes.len());
        let end = end.ok_or_else(|| format!("truncated at byte {}", self.at))?;
        let s = &self.bytes[self.at..end];
        self.at = end;
        Ok(s)
    }

    fn u32(&mut self) -> std::result::Result<u32, String> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> std::result::Result<u64, String> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    #[inline]
    fn varint(&mut self) -> std::result::Result<u64, String> {
        // Most varints here are one byte: a value's tag, a row gap.
        match self.bytes.get(self.at) {
            Some(&b) if b < 0x80 => {
                self.at += 1;
                Ok(u64::from(b))
            }
            _ => self.long_varint(),
        }
    }

    #[cold]
    #[inline(never)]
    fn long_varint(&mut self) -> std::result::Result<u64, String> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.take(1)?[0];
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(format!("varint too long at byte {}", self.at))
    }
}

/// Appends `v` as a LEB128 varint.
fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Which of `n` rows have a value; `None` when every row has one.
fn validity(v: &ColumnValues, n: usize) -> Option<NullBuffer> {
    if v.len() == n {
        return None;
    }
    let mut b = BooleanBufferBuilder::new(n);
    if v.sparse {
        b.append_n(n, false);
        for &r in &v.rows {
            b.set_bit(r as usize, true);
        }
    } else {
        b.append_n(v.len(), true);
        b.append_n(n - v.len(), false);
    }
    Some(NullBuffer::new(b.finish()))
}

/// A text column's values for `n` rows, checked for what
/// [`TextChunk::push`](crate::textchunk::TextChunk::push) relies on: the layout
/// ([`ColumnValues::check`]), rows within the chunk, UTF-8 texts that each end on a
/// character boundary. The checks `string_array` makes, without building an array.
pub(crate) fn checked_texts(
    values: Option<ColumnValues>,
    n: usize,
) -> std::result::Result<ColumnValues, String> {
    let v = values.unwrap_or_default();
    check_values(&v, n)?;
    let text = utf8_texts(&v)?;
    if let Some(e) = v.ends.iter().find(|&&e| !text.is_char_boundary(e as usize)) {
        return Err(format!("value end {e} is not a character boundary"));
    }
    Ok(v)
}

/// Checks the layout of `v` ([`ColumnValues::check`]) and that its rows are within `n`.
fn check_values(v: &ColumnValues, n: usize) -> std::result::Result<(), String> {
    v.check()?;
    if v.last_row().is_some_and(|r| r as usize >= n) {
        return Err("a value beyond the chunk's rows".into());
    }
    Ok(())
}

/// The stored texts of `v`, checked as UTF-8 (SIMD).
fn utf8_texts(v: &ColumnValues) -> std::result::Result<&str, String> {
    simdutf8::compat::from_utf8(&v.data).map_err(|e| {
        format!(
            "invalid UTF-8 at byte {} of a chunk's texts",
            e.valid_up_to()
        )
    })
}

/// One column of `n` rows from its sparse values. The union type covers every value's kind
/// (the schema saw them all), so a value that does not fit is a bug, reported as an error.
fn column_array(t: &DataType, v: ColumnValues, n: usize) -> std::result::Result<ArrayRef, String> {
    check_values(&v, n)?;
    let nulls = validity(&v, n);
    // Numbers and booleans are parsed from each value's text, checked as UTF-8 on the way
    // (strings are checked in `string_array`).
    let texts = || {
        v.texts()
            .map(|b| std::str::from_utf8(b).map_err(|e| format!("a value is not UTF-8: {e}")))
    };
    let array: ArrayRef = match t {
        DataType::Int64 => {
            let mut vals = vec![0i64; n];
            for (r, s) in v.rows().zip(texts()) {
                let s = s?;
                vals[r as usize] = s.parse().map_err(|_| format!("{s:?} is not an Int64"))?;
            }
            Arc::new(Int64Array::new(ScalarBuffer::from(vals), nulls))
        }
        DataType::Float64 => {
            let mut vals = vec![0f64; n];
            for (r, s) in v.rows().zip(texts()) {
                let s = s?;
                vals[r as usize] = s.parse().map_err(|_| format!("{s:?} is not a Float64"))?;
            }
            Arc::new(Float64Array::new(ScalarBuffer::from(vals), nulls))
        }
        DataType::Boolean => {
            let mut bits = BooleanBufferBuilder::new(n);
            bits.append_n(n, false);
            for (r, s) in v.rows().zip(texts()) {
                let s = s?;
                match s {
                    "true" => bits.set_bit(r as usize, true),
                    "false" => {}
                    _ => return Err(format!("{s:?} is not a Boolean")),
                }
            }
            Arc::new(BooleanArray::new(bits.finish(), nulls))
        }
        DataType::Utf8 => string_array(v, n, nulls)?,
        // `--dates typed`: the pass found every value a full date / instant.
        DataType::Date32 => {
            let mut vals = vec![0i32; n];
            for (r, s) in v.rows().zip(texts()) {
                let s = s?;
                vals[r as usize] =
                    crate::dates::date_days(s).ok_or_else(|| format!("{s:?} is not a date"))?;
            }
            Arc::new(arrow_array::Date32Array::new(
                ScalarBuffer::from(vals),
                nulls,
            ))
        }
        DataType::Timestamp(arrow_schema::TimeUnit::Microsecond, Some(tz)) => {
            let mut vals = vec![0i64; n];
            for (r, s) in v.rows().zip(texts()) {
                let s = s?;
                vals[r as usize] =
                    crate::dates::micros(s).ok_or_else(|| format!("{s:?} is not an instant"))?;
            }
            Arc::new(
                arrow_array::TimestampMicrosecondArray::new(ScalarBuffer::from(vals), nulls)
                    .with_timezone(tz.clone()),
            )
        }
        other => return Err(format!("unexpected column type {other}")),
    };
    Ok(array)
}

/// A string column of `n` rows from its sparse values (texts under 2 GiB in all). When no
/// value repeats a stored text, the stored texts become the array's buffer as they are;
/// otherwise the texts are gathered into a new buffer.
///
/// Arrow's own check (`StringArray::try_new`) validates the buffer with std's UTF-8 check,
/// a visible share of a conversion (docs/performance.md).
/// The same properties are checked here, with
/// SIMD UTF-8 validation: the stored texts are UTF-8, each value ends on a character
/// boundary, the ends never go back and the last one is the stored texts' length.
#[allow(unsafe_code)]
fn string_array(
    v: ColumnValues,
    n: usize,
    nulls: Option<NullBuffer>,
) -> std::result::Result<ArrayRef, String> {
    let text = utf8_texts(&v)?;
    let data = &v.data;
    let mut offsets: Vec<i32> = Vec::with_capacity(n + 1);
    offsets.push(0);
    // The caller checked the layout (`ColumnValues::check`): ends never go back, empties
    // store nothing. `stored`: the end of the stored texts so far; `last`: the last stored
    // text. Until a value repeats one, the array's buffer is `data` itself and a value ends
    // where its stored text does; from the first repeat on, texts are gathered into
    // `gathered`, starting with the stored texts before it (which are exactly those values').
    let (mut stored, mut last) = (0usize, 0..0);
    let mut gathered: Option<Vec<u8>> = None;
    let mut empties = v.empties.iter().map(|&i| i as usize);
    let mut next_empty = empties.next().unwrap_or(usize::MAX);
    // Ends value `i` at `end`, after null rows for the rows before it that have no value
    // (filled in one go: most of a wide table's cells are such rows).
    let push = |offsets: &mut Vec<i32>, i: usize, end: usize| {
        if v.sparse {
            let want = v.rows[i] as usize + 1;
            if offsets.len() < want {
                let before = *offsets.last().unwrap_or(&0);
                offsets.resize(want, before);
            }
        }
        offsets.push(end as i32);
    };
    let ends = &v.ends;
    let mut i = 0;
    while i < ends.len() {
        let e = ends[i] as usize;
        if i == next_empty {
            next_empty = empties.next().unwrap_or(usize::MAX);
            push(&mut offsets, i, gathered.as_ref().map_or(stored, Vec::len));
            i += 1;
        } else if e == stored {
            // A run of repeats of the last stored text: values `i..j`. The text is copied
            // once and the copy then doubled, instead of one copy per value (flattened FHIR
            // repeats a status, system or unit for rows on end).
            let mut j = i + 1;
            while j < ends.len() && j != next_empty && ends[j] as usize == stored {
                j += 1;
            }
            let out = gathered.get_or_insert_with(|| {
                // Sized for every value as long as the texts so far (a guess: a short one
                // costs regrowing, a long one only untouched memory), at most 64 MiB: one
                // long text repeated must not ask for its length times the column's values.
                let guess = last.len().max(stored / i.max(1)).saturating_mul(v.len());
                let mut out = Vec::with_capacity(guess.min(64 << 20).max(stored));
                out.extend_from_slice(&data[..stored]);
                out
            });
            let from = out.len();
            let len = last.len();
            let total = len.saturating_mul(j - i);
            if from.saturating_add(total) > i32::MAX as usize {
                return Err("value texts over 2 GiB in one chunk".into());
            }
            out.extend_from_slice(&data[last.clone()]);
            while out.len() - from < total {
                let have = out.len() - from;
                out.extend_from_within(from..from + have.min(total - have));
            }
            for k in i..j {
                push(&mut offsets, k, from + len * (k - i + 1));
            }
            i = j;
        } else {
            if !text.is_char_boundary(e) {
                return Err(format!(
                    "value end {e} is not a character boundary after {stored}"
                ));
            }
            last = stored..e;
            stored = e;
            if let Some(out) = &mut gathered {
                out.extend_from_slice(&data[last.clone()]);
            }
            push(&mut offsets, i, gathered.as_ref().map_or(stored, Vec::len));
            i += 1;
        }
    }
    let data = gathered.unwrap_or(v.data);
    if data.len() > i32::MAX as usize {
        return Err("value texts over 2 GiB in one chunk".into());
    }
    offsets.resize(n + 1, data.len() as i32);
    // SAFETY: `offsets` starts at 0 and never decreases: each value adds its text's length
    // (a stored text runs forward, `e > stored`; a repeat or an empty value adds its own
    // bytes or none), and null rows repeat the offset before them. It ends at `data.len()`,
    // which fits in an i32 (checked above, so no offset wrapped): ungathered, the last
    // value ends at the last stored end, `v.data.len()` (`check`); gathered, `data` is
    // what was gathered.
    let offsets = unsafe { OffsetBuffer::new_unchecked(ScalarBuffer::from(offsets)) };
    // SAFETY: `offsets` is valid for `data` (above). Each text is a run of `v.data` between
    // character boundaries (checked above, with 0 and the ends before it) of UTF-8 (checked
    // above), so `data` is UTF-8 and every offset a character boundary. `nulls`, when
    // present, has `n` bits, one per row (`validity`), and the rows' offsets are `n + 1`:
    // the caller checked that every row is below `n`.
    let array = unsafe { StringArray::new_unchecked(offsets, Buffer::from_vec(data), nulls) };
    Ok(Arc::new(array))
}

/// A chunk handed from the pass to the stash: as it is, or already written to the spill.
#[derive(Debug)]
pub(crate) enum Parked {
    /// In memory.
    Memory(ChunkTable),
    /// In the spill file at `offset`, `len` bytes.
    Spilled {
        /// Where it starts.
        offset: u64,
        /// Its encoded length.
        len: u64,
        /// Input bytes behind it.
        input_bytes: u64,
    },
}

impl Parked {
    /// Input bytes behind the chunk.
    pub(crate) fn input_bytes(&self) -> u64 {
        match self {
            Self::Memory(t) => t.input_bytes,
            Self::Spilled { input_bytes, .. } => *input_bytes,
        }
    }
}

/// A held chunk: where it is and how its columns map to the union schema.
#[derive(Debug)]
pub(crate) struct Held {
    pub(crate) chunk: Parked,
    pub(crate) to_union: Vec<u32>,
    /// Index of the input file the chunk came from.
    pub(crate) file: usize,
}

/// The chunks of one conversion, in input order.
#[derive(Debug)]
pub(crate) struct Stash {
    dir: PathBuf,
    budget: usize,
    /// Bytes held in memory, by this stash (and the others sharing its budget).
    in_memory: Arc<AtomicUsize>,
    /// Set once the budget is reached: workers then spill their chunks themselves.
    spilling: AtomicBool,
    file: Mutex<Option<Arc<File>>>,
    end: AtomicU64,
    held: Mutex<Vec<Held>>,
}

impl Stash {
    /// A stash that keeps up to `budget` bytes in memory and spills the rest to an unlinked
    /// temporary file in `dir` (created when first needed).
    pub(crate) fn new(dir: &Path, budget: usize) -> Self {
        Self::sharing(dir, budget, Arc::default())
    }

    /// A stash whose `budget` is shared with every other stash given the same `held`
    /// counter (the passes over several types at once, `convert::streamed`).
    pub(crate) fn sharing(dir: &Path, budget: usize, held: Arc<AtomicUsize>) -> Self {
        Self {
            dir: dir.to_path_buf(),
            budget,
            in_memory: held,
            spilling: AtomicBool::new(false),
            file: Mutex::new(None),
            end: AtomicU64::new(0),
            held: Mutex::new(Vec::new()),
        }
    }

    fn err(&self, source: std::io::Error) -> Error {
        Error::Spill {
            path: self.dir.clone(),
            source,
        }
    }

    fn spill_file(&self) -> Result<Arc<File>> {
        let mut guard = self
            .file
            .lock()
            .map_err(|_| self.err(std::io::Error::other("poisoned lock")))?;
        if let Some(f) = &*guard {
            return Ok(Arc::clone(f));
        }
        std::fs::create_dir_all(&self.dir).map_err(|e| self.err(e))?;
        let f = Arc::new(tempfile::tempfile_in(&self.dir).map_err(|e| self.err(e))?);
        *guard = Some(Arc::clone(&f));
        Ok(f)
    }

    /// Writes a table to the spill file (safe to call from several threads at once).
    fn spill(&self, table: &ChunkTable) -> Result<Parked> {
        let mut buf = Vec::with_capacity(table.heap_bytes() / 2 + 64);
        table
            .encode(&mut buf)
            .map_err(|reason| self.err(std::io::Error::other(reason)))?;
        let len = buf.len() as u64;
        let offset = self.end.fetch_add(len, Ordering::Relaxed);
        let file = self.spill_file()?;
        write_at(&file, &buf, offset).map_err(|e| self.err(e))?;
        Ok(Parked::Spilled {
            offset,
            len,
            input_bytes: table.input_bytes,
        })
    }

    /// Called by a worker with its finished chunk: spills it at once when the budget is
    /// already used up, so encoding and writing run in parallel.
    pub(crate) fn park(&self, table: ChunkTable) -> Result<Parked> {
        if self.spilling.load(Ordering::Relaxed) {
            self.spill(&table)
        } else {
            Ok(Parked::Memory(table))
        }
    }

    /// Appends the next chunk in input order (called by one thread, in order).
    pub(crate) fn push(&self, chunk: Parked, to_union: Vec<u32>, file: usize) -> Result<()> {
        let chunk = match chunk {
            Parked::Memory(t) => {
                let size = t.heap_bytes();
                let held = self.in_memory.fetch_add(size, Ordering::Relaxed);
                if held + size > self.budget {
                    self.in_memory.fetch_sub(size, Ordering::Relaxed);
                    self.spilling.store(true, Ordering::Relaxed);
                    self.spill(&t)?
                } else {
                    Parked::Memory(t)
                }
            }
            spilled => spilled,
        };
        self.held
            .lock()
            .map_err(|_| self.err(std::io::Error::other("poisoned lock")))?
            .push(Held {
                chunk,
                to_union,
                file,
            });
        Ok(())
    }

    /// Bytes written to the spill file.
    pub(crate) fn spilled_bytes(&self) -> u64 {
        self.end.load(Ordering::Relaxed)
    }

    /// Hands out the held chunks in input order, and a loader for spilled ones.
    pub(crate) fn into_parts(self) -> Result<(Vec<Held>, Loader)> {
        let poisoned = || Error::Spill {
            path: self.dir.clone(),
            source: std::io::Error::other("poisoned lock"),
        };
        let file = self.file.into_inner().map_err(|_| poisoned())?;
        let held = self.held.into_inner().map_err(|_| poisoned())?;
        Ok((
            held,
            Loader {
                dir: self.dir,
                file,
            },
        ))
    }
}

/// Loads held chunks back (from several threads at once).
#[derive(Debug)]
pub(crate) struct Loader {
    dir: PathBuf,
    file: Option<Arc<File>>,
}

impl Loader {
    /// The chunk's table, from memory or the spill file.
    pub(crate) fn load(&self, chunk: Parked) -> Result<ChunkTable> {
        match chunk {
            Parked::Memory(t) => Ok(t),
            Parked::Spilled { offset, len, .. } => {
                let err = |source| Error::Spill {
                    path: self.dir.clone(),
                    source,
                };
                let file = self
                    .file
                    .as_ref()
                    .ok_or_else(|| err(std::io::Error::other("no spill file")))?;
                let len = usize::try_from(len).map_err(|e| err(std::io::Error::other(e)))?;
                let mut buf = vec![0u8; len];
                read_at(file, &mut buf, offset).map_err(err)?;
                ChunkTable::decode(&buf).map_err(|reason| {
                    err(std::io::Error::new(std::io::ErrorKind::InvalidData, reason))
                })
            }
        }
    }
}

#[cfg(unix)]
fn write_at(file: &File, buf: &[u8], offset: u64) -> std::io::Result<()> {
    std::os::unix::fs::FileExt::write_all_at(file, buf, offset)
}

#[cfg(unix)]
fn read_at(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(file, buf, offset)
}

#[cfg(windows)]
fn write_at(file: &File, mut buf: &[u8], mut offset: u64) -> std::io::Result<()> {
    while !buf.is_empty() {
        let n = std::os::windows::fs::FileExt::seek_write(file, buf, offset)?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        buf = &buf[n..];
        offset += n as u64;
    }
    Ok(())
}

#[cfg(windows)]
fn read_at(file: &File, mut buf: &mut [u8], mut offset: u64) -> std::io::Result<()> {
    while !buf.is_empty() {
        let n = std::os::windows::fs::FileExt::seek_read(file, buf, offset)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf = &mut buf[n..];
        offset += n as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::Array;
    use arrow_array::cast::AsArray;
    use arrow_array::types::{Float64Type, Int64Type};
    use arrow_schema::{Field, Schema};

    fn values(v: &[(u32, &str)]) -> ColumnValues {
        let mut c = ColumnValues::default();
        for &(r, t) in v {
            c.push(r, t.as_bytes());
        }
        c
    }

    fn table() -> ChunkTable {
        ChunkTable {
            rows: 4,
            input_bytes: 99,
            columns: vec![
                values(&[(0, "a"), (2, ""), (3, "ü\"x")]),
                values(&[(1, "-7"), (3, "12")]),
                values(&[(0, "1.5"), (1, "2"), (2, "1e3"), (3, "-0.25")]),
                values(&[(2, "true"), (3, "false")]),
                values(&[]),
            ],
        }
    }

    #[test]
    fn encode_decode_round_trip() {
        let t = table();
        let mut buf = Vec::new();
        t.encode(&mut buf).unwrap();
        assert_eq!(ChunkTable::decode(&buf).unwrap(), t);
        assert!(ChunkTable::decode(&buf[..buf.len() - 1]).is_err());
        buf.push(0);
        assert!(ChunkTable::decode(&buf).is_err());
        // A value that repeats a text before any text was stored.
        let one = ChunkTable {
            rows: 1,
            input_bytes: 1,
            columns: vec![values(&[(0, "a")])],
        };
        let mut buf = Vec::new();
        one.encode(&mut buf).unwrap();
        let tag = buf.len() - 2;
        assert_eq!(buf[tag], 2, "one stored text of one byte");
        buf[tag] = 1;
        let e = ChunkTable::decode(&buf).unwrap_err();
        assert!(e.contains("before any stored text"), "{e}");
    }

    /// A column whose ends do not fit its texts (what texts over 4 GiB in one chunk would
    /// leave: the u32 ends wrap) is refused by the spill encoding, not stored wrong.
    #[test]
    fn a_broken_column_is_not_spilled() {
        let t = ChunkTable {
            rows: 1,
            input_bytes: 1,
            columns: vec![ColumnValues {
                ends: vec![5],
                data: b"abc".to_vec(),
                ..ColumnValues::default()
            }],
        };
        let e = t.encode(&mut Vec::new()).unwrap_err();
        assert!(e.contains("over 4 GiB"), "{e}");
    }

    #[test]
    fn repeated_texts_are_stored_once() {
        let url = "http://terminology.hl7.org/CodeSystem/observation-category";
        let rows: Vec<(u32, &str)> = (0..1000).map(|r| (r, url)).collect();
        let t = ChunkTable {
            rows: 1000,
            input_bytes: 1,
            columns: vec![values(&rows)],
        };
        let mut buf = Vec::new();
        t.encode(&mut buf).unwrap();
        // Header, then per value one length byte; the text itself once.
        assert!(buf.len() < 1000 + 2 * url.len() + 32, "{} bytes", buf.len());
        assert_eq!(ChunkTable::decode(&buf).unwrap(), t);
    }

    proptest::proptest! {
        #[test]
        fn any_table_round_trips(
            n in 1u32..40,
            cols in proptest::collection::vec(
                proptest::collection::vec((proptest::bool::ANY, "(|a|bb|ü\\\"x|[0-9]{1,200})"), 0..40),
                0..6,
            ),
        ) {
            let columns = cols
                .iter()
                .map(|c| {
                    let v: Vec<(u32, &str)> = c
                        .iter()
                        .enumerate()
                        .filter(|(r, (keep, _))| *keep && (*r as u32) < n)
                        .map(|(r, (_, t))| (r as u32, t.as_str()))
                        .collect();
                    values(&v)
                })
                .collect();
            let t = ChunkTable { rows: n, input_bytes: 7, columns };
            let mut buf = Vec::new();
            t.encode(&mut buf).unwrap();
            let back = ChunkTable::decode(&buf).unwrap();
            // The same layout, not only the same values: each repeat still stored once.
            for (a, b) in back.columns.iter().zip(&t.columns) {
                proptest::prop_assert_eq!(
                    (&a.rows, a.sparse, &a.ends, &a.data, &a.empties, a.last),
                    (&b.rows, b.sparse, &b.ends, &b.data, &b.empties, b.last)
                );
            }
            proptest::prop_assert_eq!(back, t);
        }
    }

    #[test]
    fn widens_to_union_order_types_and_nulls() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("absent", DataType::Utf8, true),
            Field::new("num", DataType::Float64, true),
            Field::new("s", DataType::Utf8, true),
            Field::new("i", DataType::Int64, true),
            Field::new("b", DataType::Boolean, true),
            Field::new("empty", DataType::Int64, true),
        ]));
        let batch = table().into_batch(&[2, 3, 1, 4, 5], &schema).unwrap();
        assert_eq!(batch.num_rows(), 4);
        assert_eq!(batch.column(0).null_count(), 4);
        let num = batch.column(1).as_primitive::<Float64Type>();
        assert_eq!(num.values().to_vec(), vec![1.5, 2.0, 1000.0, -0.25]);
        assert_eq!(num.null_count(), 0);
        let got: Vec<Option<&str>> = batch.column(2).as_string::<i32>().iter().collect();
        assert_eq!(got, vec![Some("a"), None, Some(""), Some("ü\"x")]);
        let got: Vec<Option<i64>> = batch.column(3).as_primitive::<Int64Type>().iter().collect();
        assert_eq!(got, vec![None, Some(-7), None, Some(12)]);
        let got: Vec<Option<bool>> = batch.column(4).as_boolean().iter().collect();
        assert_eq!(got, vec![None, None, Some(true), Some(false)]);
        assert_eq!(batch.column(5).null_count(), 4);
    }

    /// A sparse string column: runs of rows without a value before the first value,
    /// between values (a repeat after a gap too) and after the last are all null.
    #[test]
    fn sparse_strings_leave_every_gap_null() {
        let v = values(&[(3, "x"), (4, "yy"), (9, "yy"), (10, "z")]);
        assert!(v.sparse);
        let array = union_array(&DataType::Utf8, Some(v), 14).unwrap();
        let got: Vec<Option<&str>> = array.as_string::<i32>().iter().collect();
        let mut want = vec![None; 14];
        want[3] = Some("x");
        want[4] = Some("yy");
        want[9] = Some("yy");
        want[10] = Some("z");
        assert_eq!(got, want);
    }

    proptest::proptest! {
        /// Any string column (values in any rows, empties, runs of repeats of any length,
        /// before and after gaps) widens to exactly its values, null where a row has none.
        #[test]
        fn any_string_column_widens_to_its_values(
            cells in proptest::collection::vec(
                proptest::option::weighted(0.7, "(|a|a|a|bb|bb|ü\\\"x|[a-c]{1,40})"),
                1..120,
            ),
        ) {
            let rows: Vec<(u32, &str)> = cells
                .iter()
                .enumerate()
                .filter_map(|(r, c)| c.as_deref().map(|t| (r as u32, t)))
                .collect();
            let array = union_array(&DataType::Utf8, Some(values(&rows)), cells.len()).unwrap();
            let got: Vec<Option<&str>> = array.as_string::<i32>().iter().collect();
            let want: Vec<Option<&str>> = cells.iter().map(|c| c.as_deref()).collect();
            proptest::prop_assert_eq!(got, want);
        }
    }

    /// A long text repeated once in a column of many values: gathering asks for what the
    /// texts need, not the long text's length times the values (which would be 100 GB here
    /// and abort the process).
    #[test]
    fn a_long_repeated_text_is_gathered_without_a_huge_guess() {
        let long = "x".repeat(1 << 20);
        let n = 100_000u32;
        let mut c = ColumnValues::default();
        c.push(0, long.as_bytes());
        c.push(1, long.as_bytes());
        for r in 2..n {
            c.push(r, if r % 2 == 0 { b"0" } else { b"1" });
        }
        let array = union_array(&DataType::Utf8, Some(c), n as usize).unwrap();
        let array = array.as_string::<i32>();
        assert_eq!(
            (array.value(0), array.value(1)),
            (long.as_str(), long.as_str())
        );
        assert_eq!((array.value(2), array.value(3)), ("0", "1"));
        assert_eq!(array.value_data().len(), 2 * long.len() + (n as usize - 2));
    }

    #[test]
    fn a_value_that_does_not_fit_its_type_is_an_error() {
        let schema = Arc::new(Schema::new(vec![Field::new("i", DataType::Int64, true)]));
        let t = ChunkTable {
            rows: 1,
            input_bytes: 1,
            columns: vec![values(&[(0, "x")])],
        };
        let e = t.into_batch(&[0], &schema).unwrap_err();
        assert!(e.contains("is not an Int64"), "{e}");
    }

    #[test]
    fn invalid_utf8_in_a_string_column_is_an_error() {
        let schema = Arc::new(Schema::new(vec![Field::new("s", DataType::Utf8, true)]));
        let t = ChunkTable {
            rows: 1,
            input_bytes: 1,
            columns: vec![ColumnValues {
                rows: vec![0],
                sparse: true,
                ends: vec![2],
                data: vec![0xC3, 0x28],
                ..ColumnValues::default()
            }],
        };
        assert!(t.into_batch(&[0], &schema).is_err());
    }

    #[test]
    fn a_string_value_must_end_on_a_character_boundary_and_never_go_back() {
        let schema = Arc::new(Schema::new(vec![Field::new("s", DataType::Utf8, true)]));
        let table = |ends: Vec<u32>, data: &str| ChunkTable {
            rows: ends.len() as u32,
            input_bytes: 1,
            columns: vec![ColumnValues {
                rows: (0..ends.len() as u32).collect(),
                sparse: true,
                ends,
                data: data.as_bytes().to_vec(),
                ..ColumnValues::default()
            }],
        };
        // "é" is two bytes: a value may not end between them.
        let e = table(vec![1, 2], "é")
            .into_batch(&[0], &schema)
            .unwrap_err();
        assert!(e.contains("not a character boundary"), "{e}");
        // Past the texts, or going back.
        for (ends, data) in [(vec![3, 2], "ab"), (vec![2, 1, 3], "abc")] {
            let e = table(ends, data).into_batch(&[0], &schema).unwrap_err();
            assert!(e.contains("value ends out of order"), "{e}");
        }
        // The same shape with valid ends is accepted, values intact.
        let batch = table(vec![2, 3], "éa").into_batch(&[0], &schema).unwrap();
        let col = batch.column(0).as_string::<i32>();
        assert_eq!((col.value(0), col.value(1)), ("é", "a"));
    }

    #[test]
    fn spills_past_the_budget_and_loads_back() {
        let dir = tempfile::tempdir().unwrap();
        let stash = Stash::new(dir.path(), table().heap_bytes());
        // Until the budget is reached, workers park their chunks in memory.
        for _ in 0..2 {
            let parked = stash.park(table()).unwrap();
            assert!(matches!(parked, Parked::Memory(_)));
            stash.push(parked, vec![0, 1, 2, 3, 4], 0).unwrap();
        }
        // The budget holds one table: the second push spilled, and from then on the
        // workers spill their chunks themselves.
        let parked = stash.park(table()).unwrap();
        assert!(matches!(parked, Parked::Spilled { .. }));
        stash.push(parked, vec![0, 1, 2, 3, 4], 0).unwrap();
        assert!(stash.spilled_bytes() > 0);
        let (held, loader) = stash.into_parts().unwrap();
        assert_eq!(held.len(), 3);
        assert!(matches!(held[0].chunk, Parked::Memory(_)));
        assert!(
            held[1..]
                .iter()
                .all(|h| matches!(h.chunk, Parked::Spilled { .. }))
        );
        // No file is left in the directory: the spill is unlinked.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        for h in held {
            assert_eq!(h.chunk.input_bytes(), 99);
            assert_eq!(loader.load(h.chunk).unwrap(), table());
        }
    }
}
