//! Parquet column chunks for text columns, encoded straight from the held texts.
//!
//! Parquet's own writer takes a string column as an Arrow array and, per value, hashes it
//! into its dictionary and compares it with the page's minimum and maximum. The held texts
//! ([`ColumnValues`]) already store a run of one text once, so here a value that repeats the
//! text before it costs no hashing at all, and a page's minimum and maximum come from the
//! ranks of its dictionary entries (the dictionary is sorted once), not from comparing every
//! value. The chunk is what parquet's writer makes of the same values under the same
//! properties: a PLAIN dictionary page, then RLE_DICTIONARY data pages (format v1, definition
//! levels RLE-encoded), with chunk statistics, page index (column and offset index), level
//! histograms and unencoded sizes. Page boundaries may differ (pages here hold exactly the
//! page row limit, so the page index lists other pages); values and statistics do not.
//!
//! When a chunk's dictionary grows past the dictionary page limit, parquet would fall back to
//! plain pages; [`TextChunk::into_arrays`] then hands the values back as Arrow arrays, cut as
//! they came, for parquet's writer to encode as it always has.

use std::sync::Arc;

use arrow_array::{Array, ArrayRef, StringArray};
use arrow_buffer::{BooleanBufferBuilder, Buffer, NullBuffer, OffsetBuffer};
use bytes::Bytes;
use hashbrown::HashTable;
use parquet::basic::{
    BoundaryOrder, Compression, ConvertedType, Encoding, EncodingMask, PageType,
    Type as PhysicalType,
};
use parquet::column::page::{CompressedPage, Page, PageWriter};
use parquet::column::writer::ColumnCloseResult;
use parquet::data_type::ByteArray;
use parquet::errors::{ParquetError, Result};
use parquet::file::metadata::{
    ColumnChunkMetaData, ColumnIndexBuilder, LevelHistogram, OffsetIndexBuilder, PageEncodingStats,
};
use parquet::file::properties::{EnabledStatistics, WriterProperties, WriterVersion};
use parquet::file::statistics::{Statistics, ValueStatistics};
use parquet::file::writer::{SerializedPageWriter, TrackedWrite};
use parquet::schema::types::ColumnDescPtr;
use rustc_hash::FxBuildHasher;
use std::hash::BuildHasher;

use crate::flatten::ColumnValues;

/// How pages are compressed: the codecs flatfhir writes (others go through parquet's writer).
enum Compressor {
    None,
    Snappy(Box<snap::raw::Encoder>),
    Zstd(zstd::bulk::Compressor<'static>),
}

impl std::fmt::Debug for Compressor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::None => "None",
            Self::Snappy(_) => "Snappy",
            Self::Zstd(_) => "Zstd",
        })
    }
}

impl Compressor {
    fn for_codec(codec: Compression) -> Option<Self> {
        Some(match codec {
            Compression::UNCOMPRESSED => Self::None,
            Compression::SNAPPY => Self::Snappy(Box::new(snap::raw::Encoder::new())),
            Compression::ZSTD(level) => {
                Self::Zstd(zstd::bulk::Compressor::new(level.compression_level()).ok()?)
            }
            _ => return None,
        })
    }

    /// `data` compressed, as parquet's codecs compress a page.
    fn compress(&mut self, data: Vec<u8>) -> Result<Vec<u8>> {
        match self {
            Self::None => Ok(data),
            Self::Snappy(e) => e
                .compress_vec(&data)
                .map_err(|e| ParquetError::External(Box::new(e))),
            Self::Zstd(c) => {
                let mut out = Vec::with_capacity(zstd::zstd_safe::compress_bound(data.len()));
                c.compress_to_buffer(&data, &mut out)?;
                Ok(out)
            }
        }
    }
}

/// The column's distinct texts in first-seen order: the dictionary page's entries.
#[derive(Debug, Default)]
struct Dictionary {
    /// Entry ids, found by their text's hash.
    table: HashTable<u32>,
    /// Each entry's hash (for growing the table without rehashing texts).
    hashes: Vec<u64>,
    /// The entries' texts, back to back.
    data: Vec<u8>,
    /// Where each entry's text ends in `data`.
    ends: Vec<usize>,
    /// The dictionary page's PLAIN size: a 4-byte length and the text per entry.
    page_bytes: usize,
}

/// Entry `k`'s text, from a dictionary's texts and ends.
fn entry<'a>(data: &'a [u8], ends: &[usize], k: u32) -> &'a [u8] {
    let k = k as usize;
    let start = if k == 0 { 0 } else { ends[k - 1] };
    &data[start..ends[k]]
}

impl Dictionary {
    fn text(&self, k: u32) -> &[u8] {
        entry(&self.data, &self.ends, k)
    }

    /// The entry for `text`, added if new.
    #[inline]
    fn intern(&mut self, text: &[u8]) -> u32 {
        let hash = FxBuildHasher.hash_one(text);
        let Self {
            table,
            hashes,
            data,
            ends,
            ..
        } = self;
        let found = table.find(hash, |&k| entry(data, ends, k) == text);
        if let Some(&k) = found {
            return k;
        }
        let k = ends.len() as u32;
        data.extend_from_slice(text);
        ends.push(data.len());
        hashes.push(hash);
        self.page_bytes += 4 + text.len();
        let hashes = &self.hashes;
        self.table.insert_unique(hash, k, |&k| hashes[k as usize]);
        k
    }

    /// The entries in byte order (parquet's order for UTF-8 statistics), and each entry's
    /// rank in it.
    fn order_and_ranks(&self) -> (Vec<u32>, Vec<u32>) {
        let mut order: Vec<u32> = (0..self.ends.len() as u32).collect();
        order.sort_unstable_by(|&a, &b| self.text(a).cmp(self.text(b)));
        let mut rank = vec![0u32; order.len()];
        for (r, &k) in order.iter().enumerate() {
            rank[k as usize] = r as u32;
        }
        (order, rank)
    }

    /// The PLAIN-encoded dictionary page.
    fn plain_page(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.page_bytes);
        let mut start = 0usize;
        for &end in &self.ends {
            out.extend_from_slice(&((end - start) as u32).to_le_bytes());
            out.extend_from_slice(&self.data[start..end]);
            start = end;
        }
        out
    }
}

/// Limits and settings of one column, from the writer properties.
#[derive(Debug)]
struct Settings {
    codec: Compression,
    page_rows: usize,
    page_bytes: usize,
    dictionary_bytes: usize,
    index_truncate: Option<usize>,
    statistics_truncate: Option<usize>,
}

/// One row group's chunk of one text column, filled by [`push`](Self::push) and encoded by
/// [`close`](Self::close).
#[derive(Debug)]
pub(crate) struct TextChunk {
    descr: ColumnDescPtr,
    settings: Settings,
    compressor: Compressor,
    dict: Dictionary,
    /// The dictionary entry of each value (rows with a value only), in row order.
    keys: Vec<u32>,
    /// The rows without a value, as runs: (first row, rows).
    nulls: Vec<(usize, usize)>,
    rows: usize,
    /// Rows per [`push`](Self::push), to hand the values back as they came.
    pieces: Vec<usize>,
}

impl TextChunk {
    /// A chunk for the flat UTF-8 column `descr`, or `None` when `props` ask for something
    /// only parquet's own writer does (another codec or writer version, no dictionary, bloom
    /// filters, statistics other than per page, no offset index, page header statistics).
    pub(crate) fn new(descr: ColumnDescPtr, props: &WriterProperties) -> Option<Self> {
        let path = descr.path();
        let flat = descr.max_rep_level() == 0 && descr.max_def_level() <= 1;
        if !flat
            || descr.physical_type() != PhysicalType::BYTE_ARRAY
            || descr.converted_type() != ConvertedType::UTF8
            || props.writer_version() != WriterVersion::PARQUET_1_0
            || !props.dictionary_enabled(path)
            || props.statistics_enabled(path) != EnabledStatistics::Page
            || props.bloom_filter_properties(path).is_some()
            || props.offset_index_disabled()
            || props.write_page_header_statistics(path)
        {
            return None;
        }
        let codec = props.compression(path);
        let compressor = Compressor::for_codec(codec)?;
        let settings = Settings {
            codec,
            page_rows: props.column_data_page_row_count_limit(path).max(1),
            page_bytes: props.column_data_page_size_limit(path).max(1),
            dictionary_bytes: props.column_dictionary_page_size_limit(path),
            index_truncate: props.column_index_truncate_length(),
            statistics_truncate: props.statistics_truncate_length(),
        };
        Some(Self {
            descr,
            settings,
            compressor,
            dict: Dictionary::default(),
            keys: Vec::new(),
            nulls: Vec::new(),
            rows: 0,
            pieces: Vec::new(),
        })
    }

    /// Whether the dictionary has reached the dictionary page limit, where parquet falls back
    /// to plain pages: the chunk must then go through parquet's writer
    /// ([`into_arrays`](Self::into_arrays)).
    pub(crate) fn overflowed(&self) -> bool {
        self.dict.page_bytes >= self.settings.dictionary_bytes
    }

    #[inline]
    fn push_nulls(&mut self, n: usize) {
        if n == 0 {
            return;
        }
        match self.nulls.last_mut() {
            Some((start, len)) if *start + *len == self.rows => *len += n,
            _ => self.nulls.push((self.rows, n)),
        }
        self.rows += n;
    }

    #[inline]
    fn push_value(&mut self, key: u32) {
        self.keys.push(key);
        self.rows += 1;
    }

    /// The rows `from..to` as runs of definition levels (1: a value, 0: null), starting
    /// at null run `at` (moved on to the first run that may reach past `to`), and how many
    /// of the rows are null.
    fn levels(&self, from: usize, to: usize, at: &mut usize, out: &mut Vec<(u32, usize)>) -> usize {
        out.clear();
        let (mut pos, mut nulls) = (from, 0);
        while let Some(&(start, len)) = self.nulls.get(*at) {
            if start >= to {
                break;
            }
            let (s, e) = (start.max(from), (start + len).min(to));
            if s > pos {
                out.push((1, s - pos));
            }
            out.push((0, e - s));
            nulls += e - s;
            pos = e;
            if start + len > to {
                break;
            }
            *at += 1;
        }
        if pos < to {
            out.push((1, to - pos));
        }
        nulls
    }

    /// Adds rows `from..from + len` of a part whose values are `v` (`v` checked with
    /// [`ColumnValues::check`], its texts valid UTF-8); `at` is where the walk through `v`'s
    /// values stands, moved past the rows taken.
    pub(crate) fn push(&mut self, v: &ColumnValues, at: &mut ValuesCursor, from: u32, len: u32) {
        let end_row = from + len;
        let mut row = from;
        // The entry of the text a repeat stands for, once known in this chunk.
        let mut last_key: Option<u32> = None;
        let n = v.ends.len();
        while at.i < n {
            let r = if v.sparse { v.rows[at.i] } else { at.i as u32 };
            if r >= end_row {
                break;
            }
            self.push_nulls((r - row) as usize);
            let end = v.ends[at.i] as usize;
            let key = if at.next_empty == at.i {
                at.empties += 1;
                at.next_empty = v
                    .empties
                    .get(at.empties)
                    .map_or(usize::MAX, |&e| e as usize);
                self.dict.intern(b"")
            } else if end != at.stored {
                at.last = at.stored;
                at.stored = end;
                let k = self.dict.intern(&v.data[at.last..end]);
                last_key = Some(k);
                k
            } else {
                match last_key {
                    Some(k) => k,
                    None => {
                        let k = self.dict.intern(&v.data[at.last..end]);
                        last_key = Some(k);
                        k
                    }
                }
            };
            self.push_value(key);
            row = r + 1;
            at.i += 1;
        }
        self.push_nulls((end_row - row) as usize);
        self.pieces.push(len as usize);
    }

    /// Adds the values of a string array (a part that came as Arrow data).
    pub(crate) fn push_array(&mut self, array: &StringArray) {
        let mut last: Option<(&str, u32)> = None;
        for value in array.iter() {
            match value {
                None => self.push_nulls(1),
                Some(s) => {
                    let key = match last {
                        Some((t, k)) if t == s => k,
                        _ => self.dict.intern(s.as_bytes()),
                    };
                    last = Some((s, key));
                    self.push_value(key);
                }
            }
        }
        self.pieces.push(array.len());
    }

    /// The values as string arrays, one per push, for parquet's own writer.
    pub(crate) fn into_arrays(self) -> Vec<ArrayRef> {
        let mut arrays = Vec::with_capacity(self.pieces.len());
        let (mut row, mut key, mut at) = (0usize, 0usize, 0usize);
        let mut runs = Vec::new();
        for &len in &self.pieces {
            let null_rows = self.levels(row, row + len, &mut at, &mut runs);
            let mut offsets = Vec::with_capacity(len + 1);
            let mut data = Vec::new();
            offsets.push(0i32);
            let mut valid = BooleanBufferBuilder::new(len);
            for &(level, n) in &runs {
                valid.append_n(n, level == 1);
                for _ in 0..n {
                    if level == 1 {
                        data.extend_from_slice(self.dict.text(self.keys[key]));
                        key += 1;
                    }
                    offsets.push(data.len() as i32);
                }
            }
            let nulls = (null_rows > 0).then(|| NullBuffer::new(valid.finish()));
            // The texts are dictionary entries, each valid UTF-8 and whole.
            let array = StringArray::try_new(
                OffsetBuffer::new(offsets.into()),
                Buffer::from_vec(data),
                nulls,
            )
            .expect("dictionary texts make a valid string array");
            arrays.push(Arc::new(array) as ArrayRef);
            row += len;
        }
        arrays
    }

    /// Encodes the chunk: its bytes (dictionary page first) and what closing parquet's column
    /// writer would return for them, offsets counted from the start of the bytes.
    pub(crate) fn close(mut self) -> Result<(Bytes, ColumnCloseResult)> {
        let nullable = self.descr.max_def_level() > 0;
        let (order, ranks) = self.dict.order_and_ranks();
        let bit_width = bits_for(self.dict.ends.len().saturating_sub(1));
        let mut sink = TrackedWrite::new(Vec::new());
        let mut specs = Vec::new();
        let mut column_index = ColumnIndexBuilder::new(PhysicalType::BYTE_ARRAY);
        let mut offset_index = OffsetIndexBuilder::new();
        let (mut ascending, mut descending) = (true, true);
        let mut last_bounds: Option<(u32, u32)> = None;
        let mut unencoded_total = 0i64;
        {
            let mut writer = SerializedPageWriter::new(&mut sink);
            let dict_page = self.dict.plain_page();
            let uncompressed = dict_page.len();
            let page = Page::DictionaryPage {
                buf: Bytes::from(self.compressor.compress(dict_page)?),
                num_values: self.dict.ends.len() as u32,
                encoding: Encoding::PLAIN,
                is_sorted: false,
            };
            specs.push(writer.write_page(CompressedPage::new(page, uncompressed))?);

            // Rows per page: the row limit, and the values' encoded size under the byte limit.
            let by_bytes =
                self.settings.page_bytes.saturating_mul(8) / usize::from(bit_width.max(1));
            let page_rows = self.settings.page_rows.min(by_bytes.max(1));
            let (mut row, mut key, mut at) = (0usize, 0usize, 0usize);
            let mut runs = Vec::new();
            let mut levels = Vec::new();
            while row < self.rows {
                let len = page_rows.min(self.rows - row);
                let mut buf = Vec::new();
                let nulls = self.levels(row, row + len, &mut at, &mut runs);
                let values = len - nulls;
                if nullable {
                    let mut encoded = Vec::new();
                    if let [(level, n)] = runs[..] {
                        rle_run(level, n, 1, &mut encoded);
                    } else {
                        levels.clear();
                        for &(level, n) in &runs {
                            levels.extend(std::iter::repeat_n(level, n));
                        }
                        encode_hybrid(&levels, 1, &mut encoded);
                    }
                    buf.extend_from_slice(&(encoded.len() as u32).to_le_bytes());
                    buf.extend_from_slice(&encoded);
                } else if nulls > 0 {
                    return Err(ParquetError::General(format!(
                        "{} nulls in the required column {}",
                        nulls,
                        self.descr.path()
                    )));
                }
                let keys = &self.keys[key..key + values];
                buf.push(bit_width);
                encode_hybrid(keys, bit_width, &mut buf);
                let mut unencoded = 0i64;
                let mut bounds: Option<(u32, u32)> = None;
                let mut prev = u32::MAX;
                for &k in keys {
                    unencoded += self.dict.text(k).len() as i64;
                    if k != prev {
                        prev = k;
                        let r = ranks[k as usize];
                        bounds = Some(match bounds {
                            None => (r, r),
                            Some((lo, hi)) => (lo.min(r), hi.max(r)),
                        });
                    }
                }
                let uncompressed = buf.len();
                let page = Page::DataPage {
                    buf: Bytes::from(self.compressor.compress(buf)?),
                    num_values: len as u32,
                    encoding: Encoding::RLE_DICTIONARY,
                    def_level_encoding: Encoding::RLE,
                    rep_level_encoding: Encoding::RLE,
                    statistics: None,
                };
                let spec = writer.write_page(CompressedPage::new(page, uncompressed))?;

                // The page index, as parquet's writer keeps it.
                match bounds {
                    None => column_index.append(true, vec![], vec![], nulls as i64, None),
                    Some((lo, hi)) => {
                        if let Some((plo, phi)) = last_bounds {
                            ascending &= !(plo > lo || phi > hi);
                            descending &= !(lo > plo || hi > phi);
                        }
                        last_bounds = Some((lo, hi));
                        let (min, max) = (
                            self.dict.text(order[lo as usize]),
                            self.dict.text(order[hi as usize]),
                        );
                        column_index.append(
                            false,
                            truncate_min(min, self.settings.index_truncate).0,
                            truncate_max(max, self.settings.index_truncate).0,
                            nulls as i64,
                            None,
                        );
                    }
                }
                let page_histogram =
                    nullable.then(|| LevelHistogram::from(vec![nulls as i64, values as i64]));
                column_index.append_histograms(&None, &page_histogram);
                offset_index
                    .append_offset_and_size(spec.offset as i64, spec.compressed_size as i32);
                offset_index.append_row_count(len as i64);
                offset_index.append_unencoded_byte_array_data_bytes(Some(unencoded));
                unencoded_total += unencoded;
                specs.push(spec);
                row += len;
                key += values;
            }
            writer.close()?;
        }
        column_index.set_boundary_order(match (ascending, descending) {
            (true, _) => BoundaryOrder::ASCENDING,
            (false, true) => BoundaryOrder::DESCENDING,
            (false, false) => BoundaryOrder::UNORDERED,
        });

        // The dictionary holds exactly this chunk's texts: its first and last in byte order
        // are the chunk's bounds.
        let nulls_total = (self.rows - self.keys.len()) as u64;
        let signed = self.descr.sort_order().is_signed();
        let bound = |k: Option<&u32>| k.map(|&k| self.dict.text(k));
        let statistics = match (bound(order.first()), bound(order.last())) {
            (Some(min), Some(max)) => {
                let (min, min_cut) = truncate_min(min, self.settings.statistics_truncate);
                let (max, max_cut) = truncate_max(max, self.settings.statistics_truncate);
                // As parquet's writer builds them once truncated.
                ValueStatistics::new(
                    Some(ByteArray::from(min)),
                    Some(ByteArray::from(max)),
                    None,
                    Some(nulls_total),
                    signed,
                )
                .with_max_is_exact(!max_cut)
                .with_min_is_exact(!min_cut)
            }
            _ => ValueStatistics::new(None, None, None, Some(nulls_total), false)
                .with_backwards_compatible_min_max(signed),
        };
        let statistics = Statistics::ByteArray(statistics);

        let total = |f: fn(&parquet::column::page::PageWriteSpec) -> usize| {
            specs.iter().map(f).sum::<usize>() as i64
        };
        let metadata =
            ColumnChunkMetaData::builder(Arc::clone(&self.descr))
                .set_compression(self.settings.codec)
                .set_encodings_mask(EncodingMask::new_from_encodings(
                    [Encoding::PLAIN, Encoding::RLE, Encoding::RLE_DICTIONARY].iter(),
                ))
                .set_page_encoding_stats(vec![
                    PageEncodingStats {
                        page_type: PageType::DICTIONARY_PAGE,
                        encoding: Encoding::PLAIN,
                        count: 1,
                    },
                    PageEncodingStats {
                        page_type: PageType::DATA_PAGE,
                        encoding: Encoding::RLE_DICTIONARY,
                        count: (specs.len() - 1) as i32,
                    },
                ])
                .set_total_compressed_size(total(|s| s.compressed_size))
                .set_total_uncompressed_size(total(|s| s.uncompressed_size))
                .set_num_values(self.rows as i64)
                .set_data_page_offset(specs.get(1).map_or(0, |s| s.offset as i64))
                .set_dictionary_page_offset(Some(specs[0].offset as i64))
                .set_statistics(statistics)
                .set_unencoded_byte_array_data_bytes(Some(unencoded_total))
                .set_definition_level_histogram(nullable.then(|| {
                    LevelHistogram::from(vec![nulls_total as i64, self.keys.len() as i64])
                }))
                .build()?;
        let bytes_written = specs.iter().map(|s| s.bytes_written).sum();
        let close = ColumnCloseResult {
            bytes_written,
            rows_written: self.rows as u64,
            metadata,
            bloom_filter: None,
            column_index: column_index
                .valid()
                .then(|| column_index.build())
                .transpose()?,
            offset_index: Some(offset_index.build()),
        };
        Ok((Bytes::from(sink.into_inner()?), close))
    }
}

/// A cursor through one part's (one chunk's) held values: parts are cut into row groups, so
/// one part's values may go to two column chunks, the second continuing where this stands.
#[derive(Debug, Default)]
pub(crate) struct ValuesCursor {
    /// The next value.
    i: usize,
    /// The end of the texts stored so far.
    stored: usize,
    /// Where the last stored text starts.
    last: usize,
    /// Empty values passed.
    empties: usize,
    /// The next empty value's index.
    next_empty: usize,
}

impl ValuesCursor {
    /// The start of a walk through `v`.
    pub(crate) fn new(v: &ColumnValues) -> Self {
        Self {
            next_empty: v.empties.first().map_or(usize::MAX, |&e| e as usize),
            ..Self::default()
        }
    }
}

/// Bits needed for values up to `max`.
fn bits_for(max: usize) -> u8 {
    (usize::BITS - max.leading_zeros()) as u8
}

/// A minimum cut to `limit` bytes (on a character boundary for UTF-8), and whether it was
/// cut: parquet's rule for statistics and the column index.
fn truncate_min(data: &[u8], limit: Option<usize>) -> (Vec<u8>, bool) {
    limit
        .filter(|&l| data.len() > l)
        .and_then(|l| match std::str::from_utf8(data) {
            Ok(s) => (1..=l)
                .rfind(|&x| s.is_char_boundary(x))
                .map(|x| data[..x].to_vec()),
            Err(_) => Some(data[..l].to_vec()),
        })
        .map_or_else(|| (data.to_vec(), false), |t| (t, true))
}

/// A maximum cut to `limit` bytes and incremented so that it stays an upper bound, and
/// whether it was cut: parquet's rule.
fn truncate_max(data: &[u8], limit: Option<usize>) -> (Vec<u8>, bool) {
    limit
        .filter(|&l| data.len() > l)
        .and_then(|l| match std::str::from_utf8(data) {
            Ok(s) => {
                let split = (l.saturating_sub(3)..=l).rfind(|&x| s.is_char_boundary(x))?;
                increment_utf8(s.get(..split)?)
            }
            Err(_) => increment_bytes(data[..l].to_vec()),
        })
        .map_or_else(|| (data.to_vec(), false), |t| (t, true))
}

/// `s` with its last character that can be incremented without changing its width
/// incremented, and what followed it dropped.
fn increment_utf8(s: &str) -> Option<Vec<u8>> {
    for (i, c) in s.char_indices().rev() {
        if let Some(next) = char::from_u32(c as u32 + 1)
            && next.len_utf8() == c.len_utf8()
        {
            let mut out = s.as_bytes()[..i + c.len_utf8()].to_vec();
            next.encode_utf8(&mut out[i..]);
            return Some(out);
        }
    }
    None
}

/// `data` incremented as a big-endian number; `None` when every byte is 0xff.
fn increment_bytes(mut data: Vec<u8>) -> Option<Vec<u8>> {
    for b in data.iter_mut().rev() {
        let (v, overflow) = b.overflowing_add(1);
        *b = v;
        if !overflow {
            return Some(data);
        }
    }
    None
}

/// Groups of eight values per bit-packed run at most (so that a run's header is one byte,
/// as other writers keep it).
const MAX_GROUPS: usize = 63;

/// Appends `values` in parquet's RLE / bit-packing hybrid encoding with `bit_width` bits a
/// value: a run of eight or more equal values (once the values before it fill whole groups
/// of eight) is an RLE run, the rest go bit-packed in groups of eight, the last group
/// padded with zeros.
fn encode_hybrid(values: &[u32], bit_width: u8, out: &mut Vec<u8>) {
    let n = values.len();
    // Values from `literal` on wait to be bit-packed.
    let (mut literal, mut i) = (0usize, 0usize);
    while i < n {
        let v = values[i];
        let mut j = i + 1;
        while j < n && values[j] == v {
            j += 1;
        }
        if j - i >= 8 {
            // The waiting values take the run's first few to make whole groups.
            let pad = (8 - (i - literal) % 8) % 8;
            if j - i - pad >= 8 {
                bit_pack(&values[literal..i + pad], bit_width, out);
                rle_run(v, j - i - pad, bit_width, out);
                literal = j;
            }
        }
        i = j;
    }
    bit_pack(&values[literal..], bit_width, out);
}

/// Appends an RLE run of `n` copies of `v`.
fn rle_run(v: u32, n: usize, bit_width: u8, out: &mut Vec<u8>) {
    put_varint(out, (n as u64) << 1);
    let bytes = usize::from(bit_width).div_ceil(8);
    out.extend_from_slice(&v.to_le_bytes()[..bytes]);
}

/// Appends `values` as bit-packed runs (the last group padded with zeros).
fn bit_pack(values: &[u32], bit_width: u8, out: &mut Vec<u8>) {
    let width = u32::from(bit_width);
    for run in values.chunks(8 * MAX_GROUPS) {
        let groups = run.len().div_ceil(8);
        put_varint(out, ((groups as u64) << 1) | 1);
        for group in run.chunks(8) {
            let (mut acc, mut bits) = (0u64, 0u32);
            for k in 0..8 {
                acc |= u64::from(group.get(k).copied().unwrap_or(0)) << bits;
                bits += width;
                while bits >= 8 {
                    out.push(acc as u8);
                    acc >>= 8;
                    bits -= 8;
                }
            }
        }
    }
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Decodes the hybrid encoding (the format, read independently of the encoder).
    fn decode(bytes: &[u8], bit_width: u8, count: usize) -> Vec<u32> {
        let mut out = Vec::new();
        let mut at = 0;
        while out.len() < count {
            let mut header = 0u64;
            let mut shift = 0;
            loop {
                let b = bytes[at];
                at += 1;
                header |= u64::from(b & 0x7f) << shift;
                shift += 7;
                if b & 0x80 == 0 {
                    break;
                }
            }
            if header & 1 == 1 {
                let values = (header >> 1) as usize * 8;
                let total_bits = values * usize::from(bit_width);
                let packed = &bytes[at..at + total_bits.div_ceil(8)];
                at += total_bits.div_ceil(8);
                for j in 0..values {
                    let mut v = 0u32;
                    for b in 0..usize::from(bit_width) {
                        let bit = j * usize::from(bit_width) + b;
                        v |= u32::from((packed[bit / 8] >> (bit % 8)) & 1) << b;
                    }
                    if out.len() < count {
                        out.push(v);
                    }
                }
            } else {
                let n = (header >> 1) as usize;
                let w = usize::from(bit_width).div_ceil(8);
                let mut le = [0u8; 4];
                le[..w].copy_from_slice(&bytes[at..at + w]);
                at += w;
                out.extend(std::iter::repeat_n(u32::from_le_bytes(le), n));
            }
        }
        assert_eq!(at, bytes.len(), "bytes left after {count} values");
        out
    }

    fn values(bit_width: u8) -> impl Strategy<Value = Vec<u32>> {
        let max = if bit_width == 0 {
            0
        } else {
            u32::MAX >> (32 - u32::from(bit_width))
        };
        // Runs of random lengths, so that both RLE runs and literals occur.
        prop::collection::vec((0..=max, 1usize..20), 0..200).prop_map(|runs| {
            runs.into_iter()
                .flat_map(|(v, n)| std::iter::repeat_n(v, n))
                .collect()
        })
    }

    proptest! {
        #[test]
        fn rle_round_trips(
            (bit_width, vals) in (0u8..=20).prop_flat_map(|w| (Just(w), values(w))),
        ) {
            let mut bytes = Vec::new();
            encode_hybrid(&vals, bit_width, &mut bytes);
            prop_assert_eq!(decode(&bytes, bit_width, vals.len()), vals);
        }
    }

    #[test]
    fn rle_uses_runs_and_groups() {
        let mut bytes = Vec::new();
        encode_hybrid(&[5; 100], 3, &mut bytes);
        assert_eq!(
            bytes,
            vec![200, 1, 5],
            "one RLE run: header 100 << 1, value"
        );
        let mut bytes = Vec::new();
        encode_hybrid(&[1, 0, 1, 0, 1, 0, 1, 0, 1], 1, &mut bytes);
        // Two bit-packed groups (the second padded), LSB first.
        assert_eq!(bytes, vec![(2 << 1) | 1, 0b0101_0101, 0b0000_0001]);
        // Three values, then a run: the run lends five to fill the group, the rest is RLE.
        let mut bytes = Vec::new();
        encode_hybrid(
            &[1, 2, 3, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7],
            4,
            &mut bytes,
        );
        assert_eq!(bytes, vec![3, 0x21, 0x73, 0x77, 0x77, 16, 7]);
    }

    #[test]
    fn truncation_follows_parquet() {
        assert_eq!(truncate_min(b"abcdef", Some(3)), (b"abc".to_vec(), true));
        assert_eq!(truncate_max(b"abcdef", Some(3)), (b"abd".to_vec(), true));
        assert_eq!(truncate_min(b"abc", Some(3)), (b"abc".to_vec(), false));
        // "é" is two bytes: the cut falls back to a character boundary.
        assert_eq!(
            truncate_min("aéb".as_bytes(), Some(2)),
            (b"a".to_vec(), true)
        );
        assert_eq!(
            truncate_max("aéb".as_bytes(), Some(2)),
            (b"b".to_vec(), true)
        );
        assert_eq!(bits_for(0), 0);
        assert_eq!(bits_for(1), 1);
        assert_eq!(bits_for(255), 8);
        assert_eq!(bits_for(256), 9);
    }
}
