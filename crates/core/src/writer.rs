//! Writing a table atomically: Parquet with each batch encoded column-parallel as it arrives
//! (rayon over parquet's `ArrowColumnWriter`s, which hold a row group's encoded pages until it
//! is full), or an Arrow IPC file. Output goes to a hidden temporary
//! file in the output directory and is renamed into place only by [`TableWriter::finish`].

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use arrow_array::{ArrayRef, RecordBatch, RecordBatchOptions, StringArray};
use arrow_ipc::writer::{FileWriter as IpcWriter, IpcWriteOptions};
use arrow_schema::{DataType, Fields, Schema, SchemaRef};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_writer::{
    ArrowColumnChunk, ArrowColumnWriter, ArrowRowGroupWriterFactory, ArrowWriterOptions,
    compute_leaves,
};
use parquet::basic::{Compression as PqCompression, ZstdLevel};
use parquet::errors::ParquetError;
use parquet::file::metadata::KeyValue;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::types::ColumnDescPtr;
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::flatten::ColumnValues;
use crate::outfile::TempOutput;
use crate::textchunk::{TextChunk, ValuesCursor};

/// Output file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OutputFormat {
    /// Apache Parquet (`<Type>.parquet`).
    #[default]
    Parquet,
    /// Arrow IPC file format (`<Type>.arrow`), readable by pyarrow and polars without conversion.
    Arrow,
}

impl OutputFormat {
    /// The file extension, without the dot.
    pub fn extension(self) -> &'static str {
        match self {
            Self::Parquet => "parquet",
            Self::Arrow => "arrow",
        }
    }
}

/// Compression codec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    /// Zstandard (default).
    #[default]
    Zstd,
    /// Snappy (Parquet only).
    Snappy,
    /// No compression.
    None,
}

/// How one Parquet column is compressed (see [`TableWriter::create_with_codecs`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ColumnCodec {
    /// The file's codec ([`WriteOptions::compression`]).
    #[default]
    File,
    /// No compression.
    Uncompressed,
    /// Snappy.
    Snappy,
}

/// How to write a table.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct WriteOptions {
    /// File format.
    pub format: OutputFormat,
    /// Compression codec.
    pub compression: Compression,
    /// A row group is flushed when it holds this many rows…
    pub row_group_rows: usize,
    /// …or when the input behind it reaches this many bytes (bounds memory for wide tables).
    pub row_group_input_bytes: u64,
}

impl Default for WriteOptions {
    fn default() -> Self {
        Self {
            format: OutputFormat::Parquet,
            compression: Compression::Zstd,
            row_group_rows: 128 * 1024,
            row_group_input_bytes: 128 << 20,
        }
    }
}

/// A finished output file.
#[derive(Debug, Clone)]
pub struct WrittenFile {
    /// Its final path.
    pub path: PathBuf,
    /// Its size in bytes.
    pub bytes: u64,
    /// CPU seconds spent encoding and compressing, summed over threads.
    pub encode_seconds: f64,
    /// Seconds spent writing to the file.
    pub write_seconds: f64,
}

/// The rows of one chunk in a column-wise write ([`TableWriter::write_columns`], which calls
/// each chunk a part): how many, and the size of the input behind them (for the row-group
/// bound).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkRows {
    /// Rows in the part.
    pub rows: usize,
    /// Input bytes behind the part.
    pub input_bytes: u64,
}

/// A run of one part's rows that goes into one row group (a part is cut where a row group
/// ends).
#[derive(Debug, Clone, Copy)]
struct RowGroupSlice {
    part: usize,
    offset: usize,
    len: usize,
    /// Which row group, counted from the one being filled (0).
    row_group: usize,
}

enum Sink {
    Parquet {
        file: SerializedFileWriter<BufWriter<File>>,
        /// One writer factory per column, so that each column's task creates its own writers:
        /// creating a writer sets up zstd contexts, which ask the CPU for its features, which
        /// a VM traps (tens of ms for a 1,000-column table done in one loop; docs/performance.md).
        factories: Vec<ArrowRowGroupWriterFactory>,
        /// Each column's descriptor and writer properties, for text chunks.
        descrs: Vec<ColumnDescPtr>,
        props: Vec<Arc<WriterProperties>>,
        /// Columns whose dictionary overflowed in a row group: parquet's writer takes their
        /// later row groups from the start (it falls back to plain pages itself).
        plain: Vec<bool>,
        row_groups: usize,
        /// The column writers of the row group being filled (encoded pages, not Arrow data);
        /// `None` until the column's first part for it arrives.
        open: Option<Vec<Option<ColumnSink>>>,
    },
    Arrow(IpcWriter<BufWriter<File>>),
}

/// One part of one column for [`TableWriter::write_parts`]: an Arrow array, or a text
/// column's held values (checked with [`crate::stash::checked_texts`]), which a text chunk
/// encodes without building an array.
#[derive(Debug)]
pub(crate) enum ColumnPart {
    Array(ArrayRef),
    Texts(ColumnValues),
}

/// Where one column's row group is being encoded.
enum ColumnSink {
    /// Parquet's writer, fed Arrow arrays.
    Arrow(Box<ArrowColumnWriter>),
    /// A text chunk, fed held texts (or string arrays).
    Text(Box<TextChunk>),
}

/// A closed column chunk, ready to append to its row group.
enum ClosedColumn {
    Arrow(ArrowColumnChunk),
    Text(bytes::Bytes, parquet::column::writer::ColumnCloseResult),
}

/// Writes record batches of one schema to `<dir>/<name>.<ext>`, atomically.
pub struct TableWriter {
    sink: Sink,
    schema: SchemaRef,
    temp: TempOutput,
    path: PathBuf,
    pending_rows: usize,
    pending_bytes: u64,
    rows: u64,
    opts: WriteOptions,
    /// CPU time spent encoding and compressing columns, summed over threads.
    encode_nanos: std::sync::atomic::AtomicU64,
    /// Time spent writing encoded data to the file.
    write_nanos: u64,
}

impl std::fmt::Debug for TableWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TableWriter")
            .field("path", &self.path)
            .field("rows", &self.rows)
            .finish_non_exhaustive()
    }
}

impl TableWriter {
    /// Starts `path` (written under a temporary name in the same directory until
    /// [`finish`](Self::finish)). `metadata` goes into the file's key-value metadata.
    pub fn create(
        path: &Path,
        schema: SchemaRef,
        opts: &WriteOptions,
        metadata: &[(String, String)],
    ) -> Result<Self> {
        Self::create_with_codecs(path, schema, opts, metadata, &[])
    }

    /// Like [`create`](Self::create), with Parquet column `i` compressed as `codecs[i]` says
    /// (missing entries: as `opts` says). Meant for columns so small that the file's codec
    /// does them no good: zstd makes the smallest column chunks larger, not smaller, and
    /// sets up a compression and a decompression context for every column of every row
    /// group (slow on a VM, where the `cpuid` in each traps), while Snappy needs no
    /// set-up and compresses a few KiB of few distinct values about as well as zstd does.
    /// Each Parquet column chunk records its own codec, so readers need nothing special.
    /// Arrow IPC output ignores it.
    pub fn create_with_codecs(
        path: &Path,
        schema: SchemaRef,
        opts: &WriteOptions,
        metadata: &[(String, String)],
        codecs: &[ColumnCodec],
    ) -> Result<Self> {
        let dir = path.parent().unwrap_or(Path::new("."));
        let werr = |source| Error::Write {
            path: path.to_path_buf(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(werr)?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let (file, temp) = TempOutput::create(dir, &name).map_err(werr)?;
        let out = BufWriter::with_capacity(1 << 20, file);
        let sink = match opts.format {
            OutputFormat::Parquet => {
                let codec = match opts.compression {
                    Compression::Zstd => PqCompression::ZSTD(ZstdLevel::default()),
                    Compression::Snappy => PqCompression::SNAPPY,
                    Compression::None => PqCompression::UNCOMPRESSED,
                };
                let kv = metadata
                    .iter()
                    .map(|(k, v)| KeyValue::new(k.clone(), v.clone()))
                    .collect();
                let props = WriterProperties::builder()
                    .set_compression(codec)
                    .set_statistics_enabled(EnabledStatistics::Page)
                    .set_created_by(format!("flatfhir version {}", env!("CARGO_PKG_VERSION")))
                    .set_key_value_metadata(Some(kv))
                    .set_max_row_group_row_count(Some(opts.row_group_rows.max(1)))
                    .build();
                let pq = |source| Error::Parquet {
                    path: path.to_path_buf(),
                    source,
                };
                let writer = ArrowWriter::try_new(out, Arc::clone(&schema), Some(props.clone()))
                    .map_err(pq)?;
                let (file, _) = writer.into_serialized_writer().map_err(pq)?;
                let (factories, props) = column_factories(&schema, &props, codecs).map_err(pq)?;
                let descrs = (0..schema.fields().len())
                    .map(|i| file.schema_descr().column(i))
                    .collect();
                Sink::Parquet {
                    file,
                    factories,
                    descrs,
                    plain: vec![false; props.len()],
                    props,
                    row_groups: 0,
                    open: None,
                }
            }
            OutputFormat::Arrow => {
                let ipc_opts = match opts.compression {
                    Compression::Zstd => IpcWriteOptions::default()
                        .try_with_compression(Some(arrow_ipc::CompressionType::ZSTD))
                        .map_err(|source| Error::Arrow {
                            path: path.to_path_buf(),
                            source,
                        })?,
                    Compression::None => IpcWriteOptions::default(),
                    Compression::Snappy => {
                        return Err(Error::Options(
                            "Arrow IPC files support --compression zstd or none, not snappy".into(),
                        ));
                    }
                };
                let with_meta = schema.as_ref().clone().with_metadata(
                    metadata
                        .iter()
                        .cloned()
                        .collect::<std::collections::HashMap<_, _>>(),
                );
                let w = IpcWriter::try_new_with_options(out, &with_meta, ipc_opts).map_err(
                    |source| Error::Arrow {
                        path: path.to_path_buf(),
                        source,
                    },
                )?;
                Sink::Arrow(w)
            }
        };
        Ok(Self {
            sink,
            schema,
            temp,
            path: path.to_path_buf(),
            pending_rows: 0,
            pending_bytes: 0,
            rows: 0,
            opts: opts.clone(),
            encode_nanos: std::sync::atomic::AtomicU64::new(0),
            write_nanos: 0,
        })
    }

    /// Encodes a batch into the current row group; `input_bytes` is the size of the input it
    /// came from, for the row-group bound. Full row groups are written.
    pub fn write(&mut self, batch: &RecordBatch, input_bytes: u64) -> Result<()> {
        let part = ChunkRows {
            rows: batch.num_rows(),
            input_bytes,
        };
        if matches!(self.sink, Sink::Parquet { .. }) {
            let columns = batch.columns().to_vec();
            return self.write_columns(&[part], columns, |_, array, _| Ok(Arc::clone(array)));
        }
        // Arrow IPC: one record batch per piece, cut where a Parquet row group would be.
        let (pieces, _) = self.plan(&[part]);
        let start = Instant::now();
        if let Sink::Arrow(w) = &mut self.sink {
            for piece in pieces {
                let result = if piece.len == part.rows {
                    w.write(batch)
                } else {
                    w.write(&batch.slice(piece.offset, piece.len))
                };
                result.map_err(|source| Error::Arrow {
                    path: self.path.clone(),
                    source,
                })?;
            }
        }
        let took = start.elapsed().as_nanos() as u64;
        self.encode_nanos.fetch_add(took, Ordering::Relaxed);
        Ok(())
    }

    /// Cuts consecutive parts into row groups: a row group ends at `row_group_rows` rows or
    /// `row_group_input_bytes` of input. Returns the pieces (runs of a part's rows in one row
    /// group, counted from the one being filled) and how many row groups they complete, and
    /// moves the row counts on accordingly.
    fn plan(&mut self, parts: &[ChunkRows]) -> (Vec<RowGroupSlice>, usize) {
        let limit = self.opts.row_group_rows.max(1);
        let mut pieces = Vec::with_capacity(parts.len() + 1);
        let mut full = 0;
        for (p, part) in parts.iter().enumerate() {
            let total = part.rows;
            let mut offset = 0;
            while offset < total {
                let take = (limit - self.pending_rows).min(total - offset);
                pieces.push(RowGroupSlice {
                    part: p,
                    offset,
                    len: take,
                    row_group: full,
                });
                self.pending_rows += take;
                self.pending_bytes += part.input_bytes * take as u64 / total as u64;
                offset += take;
                if self.pending_rows >= limit
                    || self.pending_bytes >= self.opts.row_group_input_bytes
                {
                    self.rows += self.pending_rows as u64;
                    self.pending_rows = 0;
                    self.pending_bytes = 0;
                    full += 1;
                }
            }
        }
        (pieces, full)
    }

    /// Writes consecutive parts (chunks of rows) column by column: column
    /// `c`'s array for part `p` comes from `array(c, &mut columns[c], p)`, called once per
    /// part that has rows, on the thread that encodes column `c`. Each column goes through all
    /// the parts on one thread while other threads take other columns, so building the arrays
    /// and encoding them share one parallel stage and a whole batch is never assembled.
    /// Row groups are cut as [`write`](Self::write) with one batch per part would cut them,
    /// and every column writer sees the same arrays, so the file is the same byte for byte.
    pub fn write_columns<T, F>(
        &mut self,
        parts: &[ChunkRows],
        columns: Vec<T>,
        array: F,
    ) -> Result<()>
    where
        T: Send,
        F: Fn(usize, &mut T, usize) -> Result<ArrayRef> + Sync,
    {
        self.write_parts(parts, columns, |c, t, p| {
            array(c, t, p).map(ColumnPart::Array)
        })
    }

    /// [`write_columns`](Self::write_columns) where a part may also be a text column's held
    /// values ([`ColumnPart::Texts`]): a row group whose first part for a column comes as
    /// texts is encoded by a [`TextChunk`] (unless the properties ask for what only parquet's
    /// writer does), which skips building the array and parquet's per-value dictionary work.
    /// Values, statistics and page index are what parquet's writer would write; pages are
    /// cut at the page row limit.
    pub(crate) fn write_parts<T, F>(
        &mut self,
        parts: &[ChunkRows],
        mut columns: Vec<T>,
        part: F,
    ) -> Result<()>
    where
        T: Send,
        F: Fn(usize, &mut T, usize) -> Result<ColumnPart> + Sync,
    {
        let width = self.schema.fields().len();
        if columns.len() != width {
            return Err(Error::Options(format!(
                "{} column sources for {width} columns",
                columns.len()
            )));
        }
        if !matches!(self.sink, Sink::Parquet { .. }) {
            let path = self.path.clone();
            let schema = Arc::clone(&self.schema);
            // Arrow IPC writes whole batches: assemble one per part.
            for (p, info) in parts.iter().enumerate() {
                if info.rows == 0 {
                    continue;
                }
                let arrays = columns
                    .iter_mut()
                    .enumerate()
                    .map(|(c, t)| match part(c, t, p)? {
                        ColumnPart::Array(a) => Ok(a),
                        ColumnPart::Texts(v) => {
                            texts_array(v, info.rows, &path, schema.field(c).name())
                        }
                    })
                    .collect::<Result<Vec<_>>>()?;
                let opts = RecordBatchOptions::new().with_row_count(Some(info.rows));
                let batch =
                    RecordBatch::try_new_with_options(Arc::clone(&self.schema), arrays, &opts)
                        .map_err(|source| Error::Arrow {
                            path: self.path.clone(),
                            source,
                        })?;
                self.write(&batch, info.input_bytes)?;
            }
            return Ok(());
        }
        let (pieces, full) = self.plan(parts);
        let Some(last) = pieces.last() else {
            return Ok(());
        };
        let needed = last.row_group + 1;
        let path = &self.path;
        let Sink::Parquet {
            factories,
            descrs,
            props,
            plain,
            row_groups,
            open,
            ..
        } = &mut self.sink
        else {
            unreachable!("checked above")
        };
        // Writers of every row group the parts reach, held per column: [column][row group].
        // The open row group's writers are there already; each column's task creates the rest
        // when its first part for them arrives (its kind picks the writer).
        let mut by_column: Vec<Vec<Option<ColumnSink>>> =
            (0..width).map(|_| Vec::with_capacity(needed)).collect();
        if let Some(group) = open.take() {
            for (c, w) in group.into_iter().enumerate() {
                by_column[c].push(w);
            }
        }
        // Row groups are numbered from the first one not yet closed, which is `open`'s.
        let base = *row_groups;
        let factories = &*factories;
        let (descrs, props) = (&*descrs, &*props);
        let encode_nanos = &self.encode_nanos;
        let fields = self.schema.fields();
        let column = ColumnContext {
            factories,
            descrs,
            props,
            fields,
            path,
            base,
        };
        // One column per task. Rayon otherwise stops splitting at about four runs of columns
        // per thread, and a thread that runs out of work cannot take columns from a run
        // another thread has started: on a wide table (ExplanationOfBenefit: 1,031 columns)
        // one thread was left encoding the last run alone for about a third of the write.
        by_column
            .par_iter_mut()
            .zip(columns.par_iter_mut())
            .zip(plain.par_iter_mut())
            .enumerate()
            .with_max_len(1)
            .try_for_each(|(c, ((writers, source), plain))| -> Result<()> {
                writers.resize_with(needed, || None);
                let mut i = 0;
                while i < pieces.len() {
                    let p = pieces[i].part;
                    let mut j = i;
                    while j < pieces.len() && pieces[j].part == p {
                        j += 1;
                    }
                    let got = part(c, source, p)?;
                    let start = Instant::now();
                    column.write_part(c, got, parts[p].rows, &pieces[i..j], writers, plain)?;
                    encode_nanos.fetch_add(start.elapsed().as_nanos() as u64, Ordering::Relaxed);
                    i = j;
                }
                Ok(())
            })?;
        // Back to [row group][column]; close the full ones, keep the one being filled.
        let mut groups: Vec<Vec<Option<ColumnSink>>> = (0..needed).map(|_| Vec::new()).collect();
        for column in by_column {
            for (g, w) in column.into_iter().enumerate() {
                groups[g].push(w);
            }
        }
        let mut groups = groups.into_iter();
        for _ in 0..full {
            let writers = groups.next().expect("planned row group");
            self.close_row_group(writers)?;
        }
        let rest = groups.next();
        if let Sink::Parquet { open, .. } = &mut self.sink {
            *open = rest;
        }
        Ok(())
    }

    /// Closes the current row group: finishes its columns (in parallel) and writes them.
    fn flush(&mut self) -> Result<()> {
        if self.pending_rows == 0 {
            return Ok(());
        }
        self.rows += self.pending_rows as u64;
        self.pending_rows = 0;
        self.pending_bytes = 0;
        let writers = match &mut self.sink {
            Sink::Parquet { open, .. } => open.take(),
            Sink::Arrow(_) => None,
        };
        match writers {
            Some(writers) => self.close_row_group(writers),
            None => Ok(()),
        }
    }

    /// Finishes a row group's column writers (in parallel) and appends the row group.
    fn close_row_group(&mut self, writers: Vec<Option<ColumnSink>>) -> Result<()> {
        let path = &self.path;
        let pq = |source| Error::Parquet {
            path: path.clone(),
            source,
        };
        let encode_nanos = &self.encode_nanos;
        if let Sink::Parquet {
            file, row_groups, ..
        } = &mut self.sink
        {
            // One column per task, as in `write_parts`.
            let chunks: Vec<ClosedColumn> = writers
                .into_par_iter()
                .with_max_len(1)
                .map(|w| {
                    let start = Instant::now();
                    let chunk = match w {
                        Some(ColumnSink::Arrow(w)) => w.close().map(ClosedColumn::Arrow),
                        Some(ColumnSink::Text(t)) => t
                            .close()
                            .map(|(bytes, close)| ClosedColumn::Text(bytes, close)),
                        None => Err(parquet::errors::ParquetError::General(
                            "a column got no rows for its row group".into(),
                        )),
                    };
                    let took = start.elapsed().as_nanos() as u64;
                    encode_nanos.fetch_add(took, Ordering::Relaxed);
                    chunk
                })
                .collect::<parquet::errors::Result<_>>()
                .map_err(pq)?;
            let start = Instant::now();
            let mut rg = file.next_row_group().map_err(pq)?;
            for chunk in chunks {
                match chunk {
                    ClosedColumn::Arrow(chunk) => chunk.append_to_row_group(&mut rg),
                    ClosedColumn::Text(bytes, close) => rg.append_column(&bytes, close),
                }
                .map_err(pq)?;
            }
            rg.close().map_err(pq)?;
            *row_groups += 1;
            self.write_nanos += start.elapsed().as_nanos() as u64;
        }
        Ok(())
    }

    /// Rows written (or queued) so far.
    pub fn rows(&self) -> u64 {
        self.rows + self.pending_rows as u64
    }

    /// Seconds spent so far encoding (CPU, summed over threads) and writing.
    pub fn timings(&self) -> (f64, f64) {
        (
            self.encode_nanos.load(Ordering::Relaxed) as f64 / 1e9,
            self.write_nanos as f64 / 1e9,
        )
    }

    /// Flushes, closes and renames the file into place.
    pub fn finish(mut self) -> Result<WrittenFile> {
        self.flush()?;
        let start = Instant::now();
        let path = self.path.clone();
        let werr = |source| Error::Write {
            path: path.clone(),
            source,
        };
        let file = match self.sink {
            Sink::Parquet { file, .. } => file.into_inner().map_err(|source| Error::Parquet {
                path: path.clone(),
                source,
            })?,
            Sink::Arrow(mut w) => {
                w.finish().map_err(|source| Error::Arrow {
                    path: path.clone(),
                    source,
                })?;
                w.into_inner().map_err(|source| Error::Arrow {
                    path: path.clone(),
                    source,
                })?
            }
        };
        let file = file.into_inner().map_err(|e| werr(e.into_error()))?;
        let size = file.metadata().map_err(werr)?.len();
        self.temp.commit(file, &path).map_err(werr)?;
        let encode_seconds = self.encode_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        let write_seconds = (self.write_nanos + start.elapsed().as_nanos() as u64) as f64 / 1e9;
        Ok(WrittenFile {
            path,
            bytes: size,
            encode_seconds,
            write_seconds,
        })
    }
}

/// A text column's held values as a string array (for parquet's writer or Arrow IPC).
fn texts_array(v: ColumnValues, rows: usize, path: &Path, name: &str) -> Result<ArrayRef> {
    crate::stash::union_array(&DataType::Utf8, Some(v), rows).map_err(|reason| Error::Parquet {
        path: path.to_path_buf(),
        source: ParquetError::General(format!("column {name}: {reason}")),
    })
}

/// What a column's task needs to create and feed its writers.
struct ColumnContext<'a> {
    factories: &'a [ArrowRowGroupWriterFactory],
    descrs: &'a [ColumnDescPtr],
    props: &'a [Arc<WriterProperties>],
    fields: &'a Fields,
    path: &'a Path,
    /// The number of the first row group not yet closed.
    base: usize,
}

impl ColumnContext<'_> {
    fn pq(&self, source: ParquetError) -> Error {
        Error::Parquet {
            path: self.path.to_path_buf(),
            source,
        }
    }

    /// Parquet's writer for column `c` of row group `g` (counted from `base`).
    fn arrow_writer(&self, c: usize, g: usize) -> Result<ArrowColumnWriter> {
        let mut created = self.factories[c]
            .create_column_writers(self.base + g)
            .map_err(|e| self.pq(e))?;
        match (created.pop(), created.is_empty()) {
            (Some(w), true) => Ok(w),
            _ => Err(Error::Options(format!(
                "column {}: nested columns are not supported here",
                self.fields[c].name()
            ))),
        }
    }

    fn write_arrow(&self, c: usize, w: &mut ArrowColumnWriter, array: &ArrayRef) -> Result<()> {
        for leaf in compute_leaves(&self.fields[c], array).map_err(|e| self.pq(e))? {
            w.write(&leaf).map_err(|e| self.pq(e))?;
        }
        Ok(())
    }

    /// Writes one part (`rows` rows) of column `c` into the row groups its `pieces` go to,
    /// creating their writers when this is their first part: a text chunk for texts (unless
    /// the column's dictionary overflowed before, `plain`), parquet's writer otherwise.
    fn write_part(
        &self,
        c: usize,
        part: ColumnPart,
        rows: usize,
        pieces: &[RowGroupSlice],
        writers: &mut [Option<ColumnSink>],
        plain: &mut bool,
    ) -> Result<()> {
        let texts = matches!(part, ColumnPart::Texts(_))
            && !*plain
            && self.fields[c].data_type() == &DataType::Utf8;
        for piece in pieces {
            if writers[piece.row_group].is_none() {
                let text = texts
                    .then(|| TextChunk::new(Arc::clone(&self.descrs[c]), &self.props[c]))
                    .flatten();
                writers[piece.row_group] = Some(match text {
                    Some(t) => ColumnSink::Text(Box::new(t)),
                    None => ColumnSink::Arrow(Box::new(self.arrow_writer(c, piece.row_group)?)),
                });
            }
        }
        let all_text = pieces
            .iter()
            .all(|p| matches!(writers[p.row_group], Some(ColumnSink::Text(_))));
        let array = match part {
            ColumnPart::Texts(v) if all_text => {
                let mut walk = ValuesCursor::new(&v);
                for piece in pieces {
                    if let Some(ColumnSink::Text(t)) = &mut writers[piece.row_group] {
                        t.push(&v, &mut walk, piece.offset as u32, piece.len as u32);
                    }
                    self.settle(c, piece.row_group, writers, plain)?;
                }
                return Ok(());
            }
            ColumnPart::Texts(v) => texts_array(v, rows, self.path, self.fields[c].name())?,
            ColumnPart::Array(a) => a,
        };
        for piece in pieces {
            let slice = if piece.len == rows {
                Arc::clone(&array)
            } else {
                array.slice(piece.offset, piece.len)
            };
            match &mut writers[piece.row_group] {
                Some(ColumnSink::Arrow(w)) => self.write_arrow(c, w, &slice)?,
                Some(ColumnSink::Text(t)) => match slice.as_any().downcast_ref::<StringArray>() {
                    Some(s) => t.push_array(s),
                    None => {
                        return Err(Error::Options(format!(
                            "column {}: {} values for a text column",
                            self.fields[c].name(),
                            slice.data_type()
                        )));
                    }
                },
                None => unreachable!("created above"),
            }
            self.settle(c, piece.row_group, writers, plain)?;
        }
        Ok(())
    }

    /// Hands a text chunk whose dictionary overflowed to parquet's writer, its values as
    /// they came, so that the chunk is what parquet alone would have made of them (it falls
    /// back to plain pages), and marks the column `plain` for its later row groups.
    fn settle(
        &self,
        c: usize,
        g: usize,
        writers: &mut [Option<ColumnSink>],
        plain: &mut bool,
    ) -> Result<()> {
        if !matches!(&writers[g], Some(ColumnSink::Text(t)) if t.overflowed()) {
            return Ok(());
        }
        let Some(ColumnSink::Text(t)) = writers[g].take() else {
            unreachable!("checked above")
        };
        let mut w = self.arrow_writer(c, g)?;
        for array in t.into_arrays() {
            self.write_arrow(c, &mut w, &array)?;
        }
        writers[g] = Some(ColumnSink::Arrow(Box::new(w)));
        *plain = true;
        Ok(())
    }
}

/// One [`ArrowRowGroupWriterFactory`] per column of `schema`, each over a one-column file, so
/// that columns' writers can be created on the threads that use them. A flat column's
/// descriptor (name, type, levels) is the same in a one-column schema as in the whole one, so
/// its chunks append to the real file's row groups as they are. The file's key-value
/// metadata (which lists the source files) is left out of the factories' copies of `props`:
/// it is written once, by the real file, and column writers do not read it; nor do they read
/// the Arrow schema parquet would encode into each factory's file. A column gets props with
/// the codec `codecs` gives it (a column chunk records its own codec). They are built in
/// parallel, between the last chunk of the pass and the first column's encoding, where the
/// other core would wait (docs/performance.md, "Design choices").
fn column_factories(
    schema: &Schema,
    props: &WriterProperties,
    codecs: &[ColumnCodec],
) -> parquet::errors::Result<(Vec<ArrowRowGroupWriterFactory>, Vec<Arc<WriterProperties>>)> {
    let builder = props.clone().into_builder().set_key_value_metadata(None);
    let with = |codec| Arc::new(builder.clone().set_compression(codec).build());
    let plain = with(PqCompression::UNCOMPRESSED);
    let snappy = with(PqCompression::SNAPPY);
    let props = Arc::new(builder.build());
    let per_column: Vec<Arc<WriterProperties>> = (0..schema.fields().len())
        .map(|i| {
            Arc::clone(match codecs.get(i).copied().unwrap_or_default() {
                ColumnCodec::File => &props,
                ColumnCodec::Uncompressed => &plain,
                ColumnCodec::Snappy => &snappy,
            })
        })
        .collect();
    let factories = schema
        .fields()
        .par_iter()
        .zip(per_column.par_iter())
        .map(|(field, props)| {
            let one = Arc::new(Schema::new(vec![Arc::clone(field)]));
            let options = ArrowWriterOptions::new()
                .with_properties(props.as_ref().clone())
                .with_skip_arrow_metadata(true);
            let writer = ArrowWriter::try_new_with_options(std::io::sink(), one, options)?;
            let (_, factory) = writer.into_serialized_writer()?;
            Ok(factory)
        })
        .collect::<parquet::errors::Result<_>>()?;
    Ok((factories, per_column))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{Int64Array, StringArray};
    use arrow_schema::{DataType, Field, Schema};
    use parquet::file::page_index::column_index::ColumnIndexMetaData;

    /// Parts of 0–9 rows; string column with nulls, int column.
    fn parts() -> Vec<RecordBatch> {
        let schema = schema();
        (0..23usize)
            .map(|p| {
                let n = (p * 7) % 10;
                let s: StringArray = (0..n)
                    .map(|i| (i % 3 != 0).then(|| format!("v{}", (p * 31 + i) % 11)))
                    .collect();
                let x: Int64Array = (0..n).map(|i| Some((p * 100 + i) as i64)).collect();
                RecordBatch::try_new_with_options(
                    Arc::clone(&schema),
                    vec![Arc::new(s), Arc::new(x)],
                    &RecordBatchOptions::new().with_row_count(Some(n)),
                )
                .unwrap()
            })
            .collect()
    }

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("s", DataType::Utf8, true),
            Field::new("x", DataType::Int64, true),
        ]))
    }

    /// Writes `parts()` with a `TableWriter` (column `i` compressed as `codecs[i]` says) and
    /// with parquet's own `ArrowWriter` given the same properties and per-column compression;
    /// asserts the files are the same bytes and returns them.
    fn same_file_as_arrow_writer(codecs: &[ColumnCodec]) -> Vec<u8> {
        let dir = tempfile::tempdir().unwrap();
        let opts = WriteOptions {
            row_group_rows: 4,
            row_group_input_bytes: u64::MAX,
            ..WriteOptions::default()
        };
        let ours = dir.path().join("ours.parquet");
        let mut w = TableWriter::create_with_codecs(&ours, schema(), &opts, &[], codecs).unwrap();
        let mut props = match &w.sink {
            Sink::Parquet { file, .. } => file.properties().as_ref().clone(),
            Sink::Arrow(_) => unreachable!("Parquet asked for"),
        }
        .into_builder();
        for (field, codec) in schema().fields().iter().zip(codecs) {
            let codec = match codec {
                ColumnCodec::File => continue,
                ColumnCodec::Uncompressed => PqCompression::UNCOMPRESSED,
                ColumnCodec::Snappy => PqCompression::SNAPPY,
            };
            props = props.set_column_compression(
                parquet::schema::types::ColumnPath::from(field.name().as_str()),
                codec,
            );
        }
        let mut theirs = ArrowWriter::try_new(Vec::new(), schema(), Some(props.build())).unwrap();
        for (i, b) in parts().iter().enumerate() {
            w.write(b, i as u64).unwrap();
            theirs.write(b).unwrap();
        }
        w.finish().unwrap();
        let ours = std::fs::read(&ours).unwrap();
        assert_eq!(ours, theirs.into_inner().unwrap());
        ours
    }

    /// Each column's writers come from a one-column factory: the file is still the one
    /// parquet's own `ArrowWriter` writes from the same batches and properties.
    #[test]
    fn per_column_writers_write_what_arrow_writer_writes() {
        same_file_as_arrow_writer(&[]);
    }

    /// Columns given their own codec are stored with it, the others with the file's: the
    /// file is what `ArrowWriter` writes with the same per-column compression.
    #[test]
    fn column_codecs_are_what_arrow_writer_writes_with_them() {
        use ColumnCodec::{File, Snappy, Uncompressed};
        for (codecs, want) in [
            (
                [Uncompressed, File],
                [
                    PqCompression::UNCOMPRESSED,
                    PqCompression::ZSTD(ZstdLevel::default()),
                ],
            ),
            (
                [File, Snappy],
                [
                    PqCompression::ZSTD(ZstdLevel::default()),
                    PqCompression::SNAPPY,
                ],
            ),
            (
                [Snappy, Uncompressed],
                [PqCompression::SNAPPY, PqCompression::UNCOMPRESSED],
            ),
        ] {
            let mut file = tempfile::tempfile().unwrap();
            std::io::Write::write_all(&mut file, &same_file_as_arrow_writer(&codecs)).unwrap();
            let reader = parquet::file::reader::SerializedFileReader::new(file).unwrap();
            let meta = parquet::file::reader::FileReader::metadata(&reader);
            assert!(meta.num_row_groups() > 1);
            for rg in meta.row_groups() {
                let got: Vec<_> = rg.columns().iter().map(|c| c.compression()).collect();
                assert_eq!(got, want, "{codecs:?}");
            }
        }
    }

    /// The same parts, written batch by batch and column by column in windows of 5, with row
    /// groups of 4 rows (cut inside parts) or 100 input bytes: the files are the same bytes.
    #[test]
    fn column_wise_writes_are_the_same_file_as_batch_writes() {
        let dir = tempfile::tempdir().unwrap();
        for format in [OutputFormat::Parquet, OutputFormat::Arrow] {
            for (rows, bytes) in [(4, u64::MAX), (1 << 20, 100), (1 << 20, u64::MAX)] {
                let opts = WriteOptions {
                    format,
                    row_group_rows: rows,
                    row_group_input_bytes: bytes,
                    ..WriteOptions::default()
                };
                let parts = parts();
                let a = dir.path().join(format!("a.{}", format.extension()));
                let mut w = TableWriter::create(&a, schema(), &opts, &[]).unwrap();
                for (i, b) in parts.iter().enumerate() {
                    w.write(b, 10 + i as u64).unwrap();
                }
                let a_rows = w.rows();
                w.finish().unwrap();

                let b = dir.path().join(format!("b.{}", format.extension()));
                let mut w = TableWriter::create(&b, schema(), &opts, &[]).unwrap();
                for (window, chunk) in parts.chunks(5).enumerate() {
                    let meta: Vec<ChunkRows> = chunk
                        .iter()
                        .enumerate()
                        .map(|(i, b)| ChunkRows {
                            rows: b.num_rows(),
                            input_bytes: 10 + (window * 5 + i) as u64,
                        })
                        .collect();
                    let columns = vec![(); 2];
                    w.write_columns(&meta, columns, |c, (), p| {
                        Ok(Arc::clone(chunk[p].column(c)))
                    })
                    .unwrap();
                }
                assert_eq!(w.rows(), a_rows);
                w.finish().unwrap();
                assert_eq!(
                    std::fs::read(&a).unwrap(),
                    std::fs::read(&b).unwrap(),
                    "{format:?}, row groups of {rows} rows / {bytes} bytes"
                );
            }
        }
    }

    /// Text columns as generated: parts of rows, each `Some(text)` or null. Texts come from
    /// a few common ones (runs and repeats), the empty string, long ones with two-byte
    /// characters around the 64-byte statistics cut, and arbitrary ones.
    fn text_parts() -> impl proptest::strategy::Strategy<Value = Vec<Vec<Option<String>>>> {
        use proptest::prelude::*;
        let text = prop_oneof![
            4 => prop::sample::select(vec!["final", "http://loinc.org", "a", "b", "ü"])
                .prop_map(str::to_string),
            1 => Just(String::new()),
            1 => (60usize..70, 0usize..3).prop_map(|(n, k)| {
                format!("{}{}", "x".repeat(n), "é".repeat(k))
            }),
            1 => (0usize..68).prop_map(|n| format!("{}\u{10FFFF}", "é".repeat(n / 2))),
            2 => ".{0,20}",
        ];
        let row = prop_oneof![3 => text.prop_map(Some), 1 => Just(None)];
        let part = prop_oneof![
            4 => prop::collection::vec(row.clone(), 0..40),
            // A part whose values repeat one text in every row.
            1 => (row, 0usize..40).prop_map(|(r, n)| vec![r; n]),
        ];
        prop::collection::vec(part, 1..10)
    }

    fn text_schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("s", DataType::Utf8, true),
            Field::new("r", DataType::Utf8, false),
        ]))
    }

    /// The `p`th part as a record batch: column `s` as generated, `r` never null.
    fn text_batch(part: &[Option<String>], p: usize) -> RecordBatch {
        let s: StringArray = part.iter().map(|v| v.as_deref()).collect();
        let r: StringArray = (0..part.len())
            .map(|i| Some(format!("{}", (p * 7 + i) % 5)))
            .collect();
        RecordBatch::try_new_with_options(
            text_schema(),
            vec![Arc::new(s), Arc::new(r)],
            &RecordBatchOptions::new().with_row_count(Some(part.len())),
        )
        .unwrap()
    }

    /// A string column's values as the pass holds them.
    fn held(array: &ArrayRef) -> ColumnValues {
        use arrow_array::Array;
        let array = array.as_any().downcast_ref::<StringArray>().unwrap();
        let mut v = ColumnValues::default();
        for (row, value) in array.iter().enumerate() {
            if let Some(text) = value {
                v.push(row as u32, text.as_bytes());
            }
        }
        crate::stash::checked_texts(Some(v), array.len()).unwrap()
    }

    /// Writes `parts` through `write_parts` as held texts, and through parquet's `ArrowWriter`
    /// as batches, both with the writer's properties changed by `tweak`; returns both files.
    fn texts_and_arrow_writer(
        parts: &[Vec<Option<String>>],
        row_group_rows: usize,
        tweak: impl Fn(
            parquet::file::properties::WriterPropertiesBuilder,
        ) -> parquet::file::properties::WriterPropertiesBuilder,
    ) -> (Vec<u8>, Vec<u8>) {
        let dir = tempfile::tempdir().unwrap();
        let opts = WriteOptions {
            row_group_rows,
            row_group_input_bytes: u64::MAX,
            ..WriteOptions::default()
        };
        let path = dir.path().join("ours.parquet");
        let mut w = TableWriter::create(&path, text_schema(), &opts, &[]).unwrap();
        let props = match &mut w.sink {
            Sink::Parquet {
                file,
                factories,
                props,
                ..
            } => {
                let tweaked = tweak(file.properties().as_ref().clone().into_builder()).build();
                (*factories, *props) = column_factories(&text_schema(), &tweaked, &[]).unwrap();
                tweaked
            }
            Sink::Arrow(_) => unreachable!("Parquet asked for"),
        };
        let batches: Vec<RecordBatch> = parts
            .iter()
            .enumerate()
            .map(|(p, part)| text_batch(part, p))
            .collect();
        // In windows of three parts, as the conversion hands them over.
        for (window, chunk) in batches.chunks(3).enumerate() {
            let meta: Vec<ChunkRows> = chunk
                .iter()
                .map(|b| ChunkRows {
                    rows: b.num_rows(),
                    input_bytes: 1,
                })
                .collect();
            let columns = vec![(); 2];
            w.write_parts(&meta, columns, |c, _, p| {
                let batch = &batches[window * 3 + p];
                Ok(ColumnPart::Texts(held(batch.column(c))))
            })
            .unwrap();
        }
        w.finish().unwrap();
        let mut theirs = ArrowWriter::try_new(Vec::new(), text_schema(), Some(props)).unwrap();
        for b in &batches {
            theirs.write(b).unwrap();
        }
        (std::fs::read(&path).unwrap(), theirs.into_inner().unwrap())
    }

    /// Each row group's column chunks as parquet reads them: values, chunk statistics, size
    /// statistics and, where a chunk has one page, its page index entries.
    fn read_back(
        file: Vec<u8>,
    ) -> (
        Vec<RecordBatch>,
        std::sync::Arc<parquet::file::metadata::ParquetMetaData>,
    ) {
        use parquet::arrow::arrow_reader::{ArrowReaderOptions, ParquetRecordBatchReaderBuilder};
        let options = ArrowReaderOptions::new()
            .with_page_index_policy(parquet::file::metadata::PageIndexPolicy::Required);
        let builder = ParquetRecordBatchReaderBuilder::try_new_with_options(
            bytes::Bytes::from(file),
            options,
        )
        .unwrap();
        let meta = Arc::clone(builder.metadata());
        let batches = builder
            .build()
            .unwrap()
            .collect::<std::result::Result<_, _>>()
            .unwrap();
        (batches, meta)
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

        /// Text chunks hold the same values as parquet's writer makes of them, with the same
        /// chunk statistics, size statistics and level histograms; where a chunk is one page
        /// (both writers then cut it the same), the same page index too.
        #[test]
        fn text_chunks_match_parquets_writer(
            parts in text_parts(),
            rows in 1usize..60,
            codec in proptest::sample::select(vec![
                PqCompression::ZSTD(ZstdLevel::default()),
                PqCompression::SNAPPY,
                PqCompression::UNCOMPRESSED,
            ]),
        ) {
            let (ours, theirs) = texts_and_arrow_writer(&parts, rows, |b| b.set_compression(codec));
            let (ours_batches, ours_meta) = read_back(ours);
            let (theirs_batches, theirs_meta) = read_back(theirs);
            let values = |b: &[RecordBatch], c: usize| -> Vec<Option<String>> {
                b.iter()
                    .flat_map(|b| {
                        let a = b.column(c).as_any().downcast_ref::<StringArray>().unwrap();
                        a.iter().map(|v| v.map(str::to_string)).collect::<Vec<_>>()
                    })
                    .collect()
            };
            let given: Vec<Option<String>> = parts.concat();
            proptest::prop_assert_eq!(&values(&ours_batches, 0), &given);
            proptest::prop_assert_eq!(values(&ours_batches, 1), values(&theirs_batches, 1));
            proptest::prop_assert_eq!(values(&theirs_batches, 0), given);
            let (ours_rgs, theirs_rgs) = (ours_meta.row_groups(), theirs_meta.row_groups());
            proptest::prop_assert_eq!(ours_rgs.len(), theirs_rgs.len());
            for (g, (a, b)) in ours_rgs.iter().zip(theirs_rgs).enumerate() {
                proptest::prop_assert_eq!(a.num_rows(), b.num_rows());
                for (c, (x, y)) in a.columns().iter().zip(b.columns()).enumerate() {
                    proptest::prop_assert_eq!(x.statistics(), y.statistics(), "rg {} col {}", g, c);
                    proptest::prop_assert_eq!(x.num_values(), y.num_values());
                    proptest::prop_assert_eq!(x.compression(), y.compression());
                    proptest::prop_assert_eq!(x.encodings_mask(), y.encodings_mask());
                    proptest::prop_assert_eq!(
                        x.unencoded_byte_array_data_bytes(),
                        y.unencoded_byte_array_data_bytes()
                    );
                    proptest::prop_assert_eq!(
                        x.definition_level_histogram(),
                        y.definition_level_histogram()
                    );
                    let (xp, yp) = (
                        ours_meta.page_index_for_row_group(g),
                        theirs_meta.page_index_for_row_group(g),
                    );
                    let (xi, yi) = (xp.column_index(c).unwrap(), yp.column_index(c).unwrap());
                    let (xo, yo) = (xp.offset_index(c).unwrap(), yp.offset_index(c).unwrap());
                    if yo.page_locations().len() == 1 {
                        proptest::prop_assert_eq!(xi, yi, "rg {} col {}", g, c);
                        proptest::prop_assert_eq!(xo.page_locations().len(), 1);
                        proptest::prop_assert_eq!(
                            xo.unencoded_byte_array_data_bytes(),
                            yo.unencoded_byte_array_data_bytes()
                        );
                    }
                }
            }
        }

        /// With pages of three rows, each page's index entry is what its rows hold (null
        /// count, histogram, bounds that hold every value, exact when not cut), the chunk
        /// statistics are still parquet's, and reading a row range through the page index
        /// gives exactly those rows.
        #[test]
        fn text_chunk_pages_are_indexed_by_their_rows(
            parts in text_parts(),
            rows in 1usize..60,
            skip in 0usize..100,
            take in 0usize..100,
        ) {
            use parquet::arrow::arrow_reader::{
                ArrowReaderOptions, ParquetRecordBatchReaderBuilder, RowSelection, RowSelector,
            };
            let (ours, theirs) = texts_and_arrow_writer(&parts, rows, |b| {
                b.set_data_page_row_count_limit(3).set_write_batch_size(1)
            });
            let given: Vec<Option<String>> = parts.concat();
            let (_, meta) = read_back(ours.clone());
            let (_, theirs_meta) = read_back(theirs);
            let mut first = 0usize;
            for (g, rg) in meta.row_groups().iter().enumerate() {
                let n = rg.num_rows() as usize;
                for c in 0..2 {
                    let col = &rg.columns()[c];
                    let want = theirs_meta.row_groups()[g].columns()[c].statistics();
                    proptest::prop_assert_eq!(col.statistics(), want);
                    let pages = meta.page_index_for_row_group(g);
                    let locations = pages.offset_index(c).unwrap().page_locations();
                    let Some(ColumnIndexMetaData::BYTE_ARRAY(index)) = pages.column_index(c) else {
                        panic!("no byte array column index");
                    };
                    for (i, loc) in locations.iter().enumerate() {
                        let start = loc.first_row_index as usize;
                        let end = locations.get(i + 1).map_or(n, |l| l.first_row_index as usize);
                        proptest::prop_assert!(end - start <= 3 && end > start);
                        if c == 1 {
                            // `r` has a value in every row.
                            proptest::prop_assert_eq!(index.null_count(i), Some(0));
                            continue;
                        }
                        let texts: Vec<&[u8]> = given[first + start..first + end]
                            .iter()
                            .flatten()
                            .map(|t| t.as_bytes())
                            .collect();
                        let nulls = (end - start - texts.len()) as i64;
                        proptest::prop_assert_eq!(index.null_count(i), Some(nulls));
                        proptest::prop_assert_eq!(
                            index.definition_level_histogram(i),
                            Some(&[nulls, texts.len() as i64][..])
                        );
                        proptest::prop_assert_eq!(index.is_null_page(i), texts.is_empty());
                        if let (Some(lo), Some(hi)) =
                            (texts.iter().min().copied(), texts.iter().max().copied())
                        {
                            let (min, max) = (index.min_value(i).unwrap(), index.max_value(i).unwrap());
                            proptest::prop_assert!(min <= lo && max >= hi);
                            if lo.len() <= 64 {
                                proptest::prop_assert_eq!(min, lo);
                            }
                            if hi.len() <= 64 {
                                proptest::prop_assert_eq!(max, hi);
                            }
                        }
                    }
                }
                first += n;
            }
            // A row range read through the page index.
            let total = given.len();
            let skip = skip.min(total);
            let take = take.min(total - skip);
            let selection = RowSelection::from(vec![RowSelector::skip(skip), RowSelector::select(take)]);
            let options = ArrowReaderOptions::new()
                .with_page_index_policy(parquet::file::metadata::PageIndexPolicy::Required);
            let reader = ParquetRecordBatchReaderBuilder::try_new_with_options(
                bytes::Bytes::from(ours),
                options,
            )
            .unwrap()
            .with_row_selection(selection)
            .build()
            .unwrap();
            let mut got = Vec::new();
            for b in reader {
                let b = b.unwrap();
                let a = b.column(0).as_any().downcast_ref::<StringArray>().unwrap();
                got.extend(a.iter().map(|v| v.map(str::to_string)));
            }
            proptest::prop_assert_eq!(&got[..], &given[skip..skip + take]);
        }
    }

    /// A chunk whose dictionary reaches the dictionary page limit goes to parquet's writer
    /// with its values as they came, and later row groups of that column go there directly:
    /// with a limit every chunk reaches, the file is the one `ArrowWriter` writes.
    #[test]
    fn text_chunks_past_the_dictionary_limit_are_parquets_own() {
        let parts: Vec<Vec<Option<String>>> = (0..9)
            .map(|p| {
                (0..(p * 5) % 13 + 1)
                    .map(|i| ((p + i) % 4 != 0).then(|| format!("text {}", (p * 3 + i) % 7)))
                    .collect()
            })
            .collect();
        for rows in [4, 7, 1000] {
            let (ours, theirs) =
                texts_and_arrow_writer(&parts, rows, |b| b.set_dictionary_page_size_limit(1));
            assert!(ours == theirs, "row groups of {rows}");
        }
        // With parquet's limit nothing overflows: the text chunks write a different file
        // (pages cut elsewhere), which `text_chunks_match_parquets_writer` checks.
        let (ours, theirs) = texts_and_arrow_writer(&parts, 7, |b| b);
        assert!(ours != theirs);
    }
}
