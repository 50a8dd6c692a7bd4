//! Running views over NDJSON inputs and writing one table per view: the entry point the CLI
//! calls. Reading (plain/gzip NDJSON, file:line numbers) and the atomic Parquet/Arrow writer
//! come from `flatfhir-core`; NDJSON and CSV outputs are written here.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use flatfhir_core::internal::{Chunk, TableWriter, run_chunks};
use flatfhir_core::{OutputFormat, Progress, ReadOptions, WriteOptions};

use crate::error::{Error, Result};
use crate::rows::{Cell, Row, Scalar};
use crate::table::{BatchBuilder, Kinds, ValueType, declared_type, schema};
use crate::view::View;

/// Output format of [`run_views`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Format {
    /// Apache Parquet (default).
    #[default]
    Parquet,
    /// Arrow IPC file.
    Arrow,
    /// One JSON object per row; collection columns as arrays.
    Ndjson,
    /// Comma-separated values with a header; collections as JSON array text.
    Csv,
}

impl Format {
    /// The file extension, without the dot.
    pub fn extension(self) -> &'static str {
        match self {
            Format::Parquet => "parquet",
            Format::Arrow => "arrow",
            Format::Ndjson => "ndjson",
            Format::Csv => "csv",
        }
    }
}

/// What one view produced.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ViewReport {
    /// The view's name.
    pub view: String,
    /// The file written.
    pub path: PathBuf,
    /// Resources of the view's type read.
    pub resources: u64,
    /// Rows written.
    pub rows: u64,
    /// Values written as null because they did not fit the column's declared type.
    pub mismatches: u64,
    /// Bytes of input read for the view (uncompressed, one pass).
    pub input_bytes: u64,
}

/// What [`run_views`] did, one entry per view.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct Report {
    /// Per view, in the order given.
    pub views: Vec<ViewReport>,
}

/// How [`run_views_with`] runs views: the output format, Parquet/Arrow writer and reader
/// settings, and a stop flag. `#[non_exhaustive]`: start from `Default` and chain the
/// setters, e.g. `RunOptions::default().format(Format::Csv)`.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct RunOptions {
    /// Output format (Parquet by default).
    pub format: Format,
    /// Parquet/Arrow writer settings (compression, row-group size); their `format` is taken
    /// from [`format`](Self::format).
    pub write: WriteOptions,
    /// Reader settings (the line cap; the chunk size is the view runner's own).
    pub read: ReadOptions,
    /// Once set, the run stops with [`Error::Cancelled`] before the rows of its next chunk
    /// are used; outputs are written atomically, so a stopped view leaves no file. The
    /// Python package sets it on Ctrl-C.
    pub cancel: Option<Arc<AtomicBool>>,
}

impl RunOptions {
    /// Sets the output format.
    #[must_use]
    pub fn format(mut self, format: Format) -> Self {
        self.format = format;
        self
    }

    /// Sets the Parquet/Arrow writer settings.
    #[must_use]
    pub fn write(mut self, write: WriteOptions) -> Self {
        self.write = write;
        self
    }

    /// Sets the reader settings.
    #[must_use]
    pub fn read(mut self, read: ReadOptions) -> Self {
        self.read = read;
        self
    }

    /// Sets the stop flag.
    #[must_use]
    pub fn cancel(mut self, cancel: Option<Arc<AtomicBool>>) -> Self {
        self.cancel = cancel;
        self
    }
}

/// Runs each view over the inputs (files or directories of NDJSON, plain or gzip) and writes
/// `<out_dir>/<view name>.<ext>` atomically. Input lines are processed in parallel chunks.
pub fn run_views(
    inputs: &[PathBuf],
    views: &[View],
    out_dir: &Path,
    format: Format,
) -> Result<Report> {
    run_views_with(
        inputs,
        views,
        out_dir,
        &RunOptions::default().format(format),
    )
}

/// [`run_views`] with the settings of [`RunOptions`].
pub fn run_views_with(
    inputs: &[PathBuf],
    views: &[View],
    out_dir: &Path,
    opts: &RunOptions,
) -> Result<Report> {
    let (format, write) = (opts.format, &opts.write);
    let cancel = Cancel(opts.cancel.clone());
    // Smaller chunks than the flatten engine's: a view does less work per byte, and more
    // chunks keep both cores busy on small inputs. A view keeps no per-column state per
    // chunk, so long lines are no reason to grow them.
    let read = opts.read.clone().chunk_bytes(1 << 20).chunk_rows(0);
    let plan = flatfhir_core::plan(inputs, &read)?;
    std::fs::create_dir_all(out_dir).map_err(|source| Error::Io {
        context: out_dir.display().to_string(),
        source,
    })?;
    let mut report = Report::default();
    for view in views {
        let files: Vec<PathBuf> = plan
            .groups
            .iter()
            .filter(|g| g.resource_type == view.resource())
            .flat_map(|g| g.files.iter().map(|f| f.path.clone()))
            .collect();
        let path = out_dir.join(output_file_name(view, format));
        let run = ViewRun {
            view,
            files: &files,
            read: &read,
            cancel: &cancel,
        };
        let r = match format {
            Format::Parquet | Format::Arrow => run_table(&run, &path, format, write)?,
            Format::Ndjson | Format::Csv => run_text(&run, &path, format)?,
        };
        report.views.push(r);
    }
    Ok(report)
}

/// One view's run over its files.
struct ViewRun<'a> {
    view: &'a View,
    files: &'a [PathBuf],
    read: &'a ReadOptions,
    cancel: &'a Cancel,
}

impl ViewRun<'_> {
    /// [`for_each_chunk`] over this run's files.
    fn for_each_chunk<T: Send>(
        &self,
        f: impl Fn(&Path, &Chunk) -> Result<T> + Sync,
        sink: impl FnMut(T, u64) -> Result<()>,
    ) -> Result<()> {
        for_each_chunk(self.files, self.read, self.cancel, f, sink)
    }
}

/// The name of the file a view is written to in the output directory: its name made safe
/// as a file name, and the format's extension.
pub fn output_file_name(view: &View, format: Format) -> String {
    format!("{}.{}", file_name(view.name()), format.extension())
}

/// A view name made safe as a file name.
fn file_name(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() || s.starts_with('.') {
        format!("view{s}")
    } else {
        s
    }
}

/// The stop flag of [`RunOptions::cancel`] as the pipeline's [`Progress`] (which a view uses
/// only for cancelling).
struct Cancel(Option<Arc<AtomicBool>>);

impl Progress for Cancel {
    fn advance(&self, _: u64) {}

    fn cancelled(&self) -> bool {
        self.0.as_ref().is_some_and(|f| f.load(Ordering::Relaxed))
    }
}

/// Reads every file as chunks of lines and runs `f` on the chunks in parallel, handing the
/// results with the chunk's size to `sink` in input order: core's pipeline
/// (`flatfhir_core::internal::run_chunks`, the one `convert` runs on), on the current rayon
/// pool. A read error, an error of `f` or `sink`, or cancellation stops it.
fn for_each_chunk<T: Send>(
    files: &[PathBuf],
    read: &ReadOptions,
    cancel: &Cancel,
    f: impl Fn(&Path, &Chunk) -> Result<T> + Sync,
    mut sink: impl FnMut(T, u64) -> Result<()>,
) -> Result<()> {
    let paths: Vec<&Path> = files.iter().map(PathBuf::as_path).collect();
    run_chunks(
        None,
        &paths,
        read,
        cancel,
        None,
        &|_, _| {},
        |i, c| f(&files[i], c),
        |c, r| sink(r?, c.data.len() as u64),
    )
}

/// Parses each line of a chunk and runs the view on it.
fn chunk_rows(
    view: &View,
    path: &Path,
    chunk: &Chunk,
    max_line_bytes: usize,
    sink: &mut dyn crate::stream::Sink,
) -> Result<u64> {
    if let Some(o) = chunk.overlong.first() {
        return Err(Error::BadLine {
            context: format!("{}:{}", path.display(), o.number),
            reason: format!(
                "line is {} bytes, longer than the limit of {max_line_bytes} (--max-line-bytes)",
                o.len
            ),
        });
    }
    let mut resources = 0;
    // Bundle entries that could not become a resource (see flatfhir_core::internal::line_origin).
    let refused = flatfhir_core::internal::is_refused_entries(path);
    for line in chunk.lines() {
        // A line unpacked from a Bundle is named by its Bundle file, line and entry.
        let ctx = || flatfhir_core::internal::line_origin(path, line.number).0;
        if refused {
            let (at, why) = flatfhir_core::internal::line_origin(path, line.number);
            return Err(Error::BadLine {
                context: at,
                reason: why.unwrap_or_default(),
            });
        }
        // The length and UTF-8 checks `convert` makes, with its reasons.
        let text = flatfhir_core::internal::walk::line_text(line.bytes, max_line_bytes).map_err(
            |reason| Error::Json {
                context: ctx(),
                source: crate::json::JsonError { reason },
            },
        )?;
        if view.line_into(text, &ctx, sink)? {
            resources += 1;
        }
    }
    Ok(resources)
}

fn run_table(
    run: &ViewRun<'_>,
    path: &Path,
    format: Format,
    write: &WriteOptions,
) -> Result<ViewReport> {
    let (view, read) = (run.view, run.read);
    let declared: Vec<Option<ValueType>> = view.columns().iter().map(declared_type).collect();
    let mut types: Vec<ValueType> = declared
        .iter()
        .map(|t| t.unwrap_or(ValueType::Utf8))
        .collect();
    if declared.iter().any(Option::is_none) {
        // Schema pass: infer the undeclared columns' types from their values.
        let mut kinds = vec![Kinds::default(); types.len()];
        run.for_each_chunk(
            |p, c| {
                let mut k = vec![Kinds::default(); declared.len()];
                let mut each = |rows: &[Row<'_>]| {
                    for row in rows {
                        for (k, cell) in k.iter_mut().zip(row) {
                            k.observe_cell(cell);
                        }
                    }
                };
                chunk_rows(
                    view,
                    p,
                    c,
                    read.max_line_bytes,
                    &mut crate::stream::RowsSink(&mut each),
                )?;
                Ok(k)
            },
            |k, _| {
                for (a, b) in kinds.iter_mut().zip(k) {
                    a.merge(b);
                }
                Ok(())
            },
        )?;
        for ((t, d), k) in types.iter_mut().zip(&declared).zip(&kinds) {
            if d.is_none() {
                *t = k.value_type();
            }
        }
    }
    let schema = schema(view, &types);
    let collection: Vec<bool> = view.columns().iter().map(|c| c.collection).collect();
    let opts = write.clone().format(if format == Format::Arrow {
        OutputFormat::Arrow
    } else {
        OutputFormat::Parquet
    });
    let meta = vec![
        ("flatfhir.view".to_string(), view.name().to_string()),
        ("flatfhir.resource".to_string(), view.resource().to_string()),
    ];
    let mut writer = TableWriter::create(path, schema.clone(), &opts, &meta)?;
    let (mut resources, mut mismatches, mut input_bytes) = (0, 0, 0);
    run.for_each_chunk(
        |p, c| {
            let mut b = BatchBuilder::new(schema.clone(), &types, &collection);
            let n = chunk_rows(view, p, c, read.max_line_bytes, &mut b)?;
            let m = b.mismatches();
            Ok((b.finish()?, n, m))
        },
        |(batch, n, m), bytes| {
            resources += n;
            input_bytes += bytes;
            mismatches += m;
            Ok(writer.write(&batch, bytes)?)
        },
    )?;
    let rows = writer.rows();
    let path = writer.finish()?.path;
    Ok(ViewReport {
        view: view.name().to_string(),
        path,
        resources,
        rows,
        mismatches,
        input_bytes,
    })
}

fn csv_field(out: &mut Vec<u8>, s: &str) {
    if s.contains([',', '"', '\n', '\r']) {
        out.push(b'"');
        out.extend_from_slice(s.replace('"', "\"\"").as_bytes());
        out.push(b'"');
    } else {
        out.extend_from_slice(s.as_bytes());
    }
}

fn write_text_row(out: &mut Vec<u8>, names: &[String], row: &Row<'_>, format: Format) {
    if format == Format::Ndjson {
        out.push(b'{');
        for (i, (name, cell)) in names.iter().zip(row).enumerate() {
            if i > 0 {
                out.push(b',');
            }
            let _ = serde_json::to_writer(&mut *out, name);
            out.push(b':');
            cell.write_json(out);
        }
        out.extend_from_slice(b"}\n");
    } else {
        for (i, cell) in row.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            csv_cell(out, cell);
        }
        out.push(b'\n');
    }
}

fn csv_cell(out: &mut Vec<u8>, cell: &Cell<'_>) {
    match cell.scalar() {
        Some(Scalar::Str(s)) if !cell.is_list() => csv_field(out, s),
        None if !cell.is_list() => {}
        // Numbers (decimals with their precision), booleans, objects and lists as JSON text.
        _ => {
            let mut text = Vec::new();
            cell.write_json(&mut text);
            csv_field(out, &String::from_utf8_lossy(&text));
        }
    }
}

fn run_text(run: &ViewRun<'_>, path: &Path, format: Format) -> Result<ViewReport> {
    let (view, read) = (run.view, run.read);
    let dir = path.parent().unwrap_or(Path::new("."));
    let io = |source| Error::Io {
        context: path.display().to_string(),
        source,
    };
    let base = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let (file, tmp) = flatfhir_core::outfile::TempOutput::create(dir, &base).map_err(io)?;
    let mut w = std::io::BufWriter::with_capacity(1 << 20, file);
    let names: Vec<String> = view.columns().iter().map(|c| c.name.clone()).collect();
    if format == Format::Csv {
        let mut header = Vec::new();
        for (i, n) in names.iter().enumerate() {
            if i > 0 {
                header.push(b',');
            }
            csv_field(&mut header, n);
        }
        header.push(b'\n');
        w.write_all(&header).map_err(io)?;
    }
    let (mut resources, mut rows, mut input_bytes) = (0, 0, 0);
    run.for_each_chunk(
        |p, c| {
            let mut buf = Vec::new();
            let mut count = 0u64;
            let mut each = |rs: &[Row<'_>]| {
                for row in rs {
                    write_text_row(&mut buf, &names, row, format);
                    count += 1;
                }
            };
            let n = chunk_rows(
                view,
                p,
                c,
                read.max_line_bytes,
                &mut crate::stream::RowsSink(&mut each),
            )?;
            Ok((buf, n, count))
        },
        |(buf, n, count), bytes| {
            resources += n;
            input_bytes += bytes;
            rows += count;
            w.write_all(&buf).map_err(io)
        },
    )?;
    let file = w.into_inner().map_err(|e| io(e.into_error()))?;
    // Synced and renamed as every table is; the mode is 0666 less the umask.
    tmp.commit(file, path).map_err(io)?;
    Ok(ViewReport {
        view: view.name().to_string(),
        path: path.to_path_buf(),
        resources,
        rows,
        mismatches: 0,
        input_bytes,
    })
}
