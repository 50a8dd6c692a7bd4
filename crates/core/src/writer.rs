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

use arrow_array::{ArrayRef, RecordBatch, RecordBatchOptions};
use arrow_ipc::writer::{FileWriter as IpcWriter, IpcWriteOptions};
use arrow_schema::{Schema, SchemaRef};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_writer::{
    ArrowColumnChunk, ArrowColumnWriter, ArrowRowGroupWriterFactory, ArrowWriterOptions,
    compute_leaves,
};
use parquet::basic::{Compression as PqCompression, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::file::writer::SerializedFileWriter;
use rayon::prelude::*;
use tempfile::TempPath;

use crate::error::{Error, Result};

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

/// One part of a column-wise write ([`TableWriter::write_columns`]): the rows it holds and
/// the size of the input behind them (for the row-group bound).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Part {
    /// Rows in the part.
    pub rows: usize,
    /// Input bytes behind the part.
    pub input_bytes: u64,
}

/// A run of a part's rows that goes into one row group.
#[derive(Debug, Clone, Copy)]
struct Piece {
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
        /// a VM traps (~20 µs a writer, 40 ms for a 1,000-column table done in one loop).
        factories: Vec<ArrowRowGroupWriterFactory>,
        row_groups: usize,
        /// The column writers of the row group being filled (encoded pages, not Arrow data).
        open: Option<Vec<ArrowColumnWriter>>,
    },
    Arrow(IpcWriter<BufWriter<File>>),
}

/// Writes record batches of one schema to `<dir>/<name>.<ext>`, atomically.
pub struct TableWriter {
    sink: Sink,
    schema: SchemaRef,
    temp: TempPath,
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
    /// does them no good: zstd makes column chunks under ~500 bytes larger, not smaller, and
    /// sets up a compression and a decompression context for every column of every row
    /// group (~20 µs each on a VM, where the `cpuid` in each traps), while Snappy needs no
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
        let temp = tempfile::Builder::new()
            .prefix(&format!(".{name}."))
            .suffix(".tmp")
            .tempfile_in(dir)
            .map_err(werr)?;
        let (file, temp) = temp.into_parts();
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
                let factories = column_factories(&schema, &props, codecs).map_err(pq)?;
                Sink::Parquet {
                    file,
                    factories,
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
        let part = Part {
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
    fn plan(&mut self, parts: &[Part]) -> (Vec<Piece>, usize) {
        let limit = self.opts.row_group_rows.max(1);
        let mut pieces = Vec::with_capacity(parts.len() + 1);
        let mut full = 0;
        for (p, part) in parts.iter().enumerate() {
            let total = part.rows;
            let mut offset = 0;
            while offset < total {
                let take = (limit - self.pending_rows).min(total - offset);
                pieces.push(Piece {
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
        parts: &[Part],
        mut columns: Vec<T>,
        array: F,
    ) -> Result<()>
    where
        T: Send,
        F: Fn(usize, &mut T, usize) -> Result<ArrayRef> + Sync,
    {
        let width = self.schema.fields().len();
        if columns.len() != width {
            return Err(Error::Options(format!(
                "{} column sources for {width} columns",
                columns.len()
            )));
        }
        if !matches!(self.sink, Sink::Parquet { .. }) {
            // Arrow IPC writes whole batches: assemble one per part.
            for (p, part) in parts.iter().enumerate() {
                if part.rows == 0 {
                    continue;
                }
                let arrays = columns
                    .iter_mut()
                    .enumerate()
                    .map(|(c, t)| array(c, t, p))
                    .collect::<Result<Vec<_>>>()?;
                let opts = RecordBatchOptions::new().with_row_count(Some(part.rows));
                let batch =
                    RecordBatch::try_new_with_options(Arc::clone(&self.schema), arrays, &opts)
                        .map_err(|source| Error::Arrow {
                            path: self.path.clone(),
                            source,
                        })?;
                self.write(&batch, part.input_bytes)?;
            }
            return Ok(());
        }
        let (pieces, full) = self.plan(parts);
        let Some(last) = pieces.last() else {
            return Ok(());
        };
        let needed = last.row_group + 1;
        let path = &self.path;
        let pq = |source| Error::Parquet {
            path: path.clone(),
            source,
        };
        let Sink::Parquet {
            factories,
            row_groups,
            open,
            ..
        } = &mut self.sink
        else {
            unreachable!("checked above")
        };
        // Writers of every row group the parts reach, held per column: [column][row group].
        // The open row group's writers are there already; each column's task creates the rest.
        let mut by_column: Vec<Vec<ArrowColumnWriter>> =
            (0..width).map(|_| Vec::with_capacity(needed)).collect();
        if let Some(group) = open.take() {
            for (c, w) in group.into_iter().enumerate() {
                by_column[c].push(w);
            }
        }
        // Row groups are numbered from the first one not yet closed, which is `open`'s.
        let base = *row_groups;
        let factories = &*factories;
        let fields = self.schema.fields();
        let encode_nanos = &self.encode_nanos;
        // One column per task. Rayon otherwise stops splitting at about four runs of columns
        // per thread, and a thread that runs out of work cannot take columns from a run
        // another thread has started: on a wide table (ExplanationOfBenefit: 1,031 columns)
        // one thread was left encoding the last run alone for about a third of the write.
        by_column
            .par_iter_mut()
            .zip(columns.par_iter_mut())
            .enumerate()
            .with_max_len(1)
            .try_for_each(|(c, (writers, source))| -> Result<()> {
                let start = Instant::now();
                while writers.len() < needed {
                    let mut created = factories[c]
                        .create_column_writers(base + writers.len())
                        .map_err(pq)?;
                    match (created.pop(), created.is_empty()) {
                        (Some(w), true) => writers.push(w),
                        _ => {
                            return Err(Error::Options(format!(
                                "column {}: nested columns are not supported here",
                                fields[c].name()
                            )));
                        }
                    }
                }
                encode_nanos.fetch_add(start.elapsed().as_nanos() as u64, Ordering::Relaxed);
                let mut i = 0;
                while i < pieces.len() {
                    let p = pieces[i].part;
                    let arr = array(c, source, p)?;
                    let start = Instant::now();
                    while i < pieces.len() && pieces[i].part == p {
                        let piece = pieces[i];
                        let leaves = if piece.len == parts[p].rows {
                            compute_leaves(&fields[c], &arr)
                        } else {
                            compute_leaves(&fields[c], &arr.slice(piece.offset, piece.len))
                        };
                        for leaf in leaves.map_err(pq)? {
                            writers[piece.row_group].write(&leaf).map_err(pq)?;
                        }
                        i += 1;
                    }
                    let took = start.elapsed().as_nanos() as u64;
                    encode_nanos.fetch_add(took, Ordering::Relaxed);
                }
                Ok(())
            })?;
        // Back to [row group][column]; close the full ones, keep the one being filled.
        let mut groups: Vec<Vec<ArrowColumnWriter>> = (0..needed).map(|_| Vec::new()).collect();
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
    fn close_row_group(&mut self, writers: Vec<ArrowColumnWriter>) -> Result<()> {
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
            // One column per task, as in `write_columns`.
            let chunks: Vec<ArrowColumnChunk> = writers
                .into_par_iter()
                .with_max_len(1)
                .map(|w| {
                    let start = Instant::now();
                    let chunk = w.close();
                    let took = start.elapsed().as_nanos() as u64;
                    encode_nanos.fetch_add(took, Ordering::Relaxed);
                    chunk
                })
                .collect::<parquet::errors::Result<_>>()
                .map_err(pq)?;
            let start = Instant::now();
            let mut rg = file.next_row_group().map_err(pq)?;
            for chunk in chunks {
                chunk.append_to_row_group(&mut rg).map_err(pq)?;
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
        file.sync_all().map_err(werr)?;
        let size = file.metadata().map_err(werr)?.len();
        drop(file);
        self.temp.persist(&path).map_err(|e| werr(e.error))?;
        publish_permissions(&path).map_err(werr)?;
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

/// One [`ArrowRowGroupWriterFactory`] per column of `schema`, each over a one-column file, so
/// that columns' writers can be created on the threads that use them. A flat column's
/// descriptor (name, type, levels) is the same in a one-column schema as in the whole one, so
/// its chunks append to the real file's row groups as they are. The file's key-value
/// metadata (which lists the source files) is left out of the factories' copies of `props`:
/// it is written once, by the real file, and column writers do not read it; nor do they read
/// the Arrow schema parquet would encode into each factory's file. A column gets props with
/// the codec `codecs` gives it (a column chunk records its own codec). They are built in
/// parallel, between the last chunk of the pass and the first column's encoding, where the
/// other core would wait: for 1,031 columns 4.5 ms one by one with the schema encoded,
/// 1.6 ms now (first build in a process; 1.5-2.0 → 0.6-1.0 ms when repeated).
fn column_factories(
    schema: &Schema,
    props: &WriterProperties,
    codecs: &[ColumnCodec],
) -> parquet::errors::Result<Vec<ArrowRowGroupWriterFactory>> {
    let builder = props.clone().into_builder().set_key_value_metadata(None);
    let with = |codec| builder.clone().set_compression(codec).build();
    let plain = with(PqCompression::UNCOMPRESSED);
    let snappy = with(PqCompression::SNAPPY);
    let props = builder.build();
    schema
        .fields()
        .par_iter()
        .enumerate()
        .map(|(i, field)| {
            let one = Arc::new(Schema::new(vec![Arc::clone(field)]));
            let props = match codecs.get(i).copied().unwrap_or_default() {
                ColumnCodec::File => &props,
                ColumnCodec::Uncompressed => &plain,
                ColumnCodec::Snappy => &snappy,
            };
            let options = ArrowWriterOptions::new()
                .with_properties(props.clone())
                .with_skip_arrow_metadata(true);
            let writer = ArrowWriter::try_new_with_options(std::io::sink(), one, options)?;
            let (_, factory) = writer.into_serialized_writer()?;
            Ok(factory)
        })
        .collect()
}

/// Temporary files are created private (0600); a finished output is an ordinary file that the
/// rest of the team's tools can read.
pub(crate) fn publish_permissions(path: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644))?;
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{Int64Array, StringArray};
    use arrow_schema::{DataType, Field, Schema};

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
                    let meta: Vec<Part> = chunk
                        .iter()
                        .enumerate()
                        .map(|(i, b)| Part {
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
}
