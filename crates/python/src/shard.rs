//! Scale-out from Python: planning shards, a shard's schema, merging schema documents and
//! reading one shard against a given schema (what the Spark and Dask readers run on each
//! task). Shards and schemas cross as JSON text, so they pickle and travel to workers as
//! plain strings. Each call works without the GIL: the schema calls on the calling thread (a
//! cluster runs one task per core), [`ShardReader`] on one thread of its own that stays a
//! couple of batches ahead of the Python consumer.

use std::path::PathBuf;
use std::sync::mpsc::{Receiver, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use arrow_array::{ArrayRef, RecordBatch};
use arrow_pyarrow::ToPyArrow;
use arrow_schema::SchemaRef;
use flatfhir_core::internal::{ChunkRows, TableWriter};
use flatfhir_core::{SchemaDoc, Shard};
use pyo3::prelude::*;

use crate::engine::{FlattenArgs, WriteArgs, group_of};
use crate::errors;
use crate::wait::{Shared, join_worker, recv};

fn value_error(what: &str, e: impl std::fmt::Display) -> PyErr {
    pyo3::exceptions::PyValueError::new_err(format!("{what}: {e}"))
}

fn shard_of(text: &str) -> PyResult<Shard> {
    serde_json::from_str(text).map_err(|e| value_error("not a flatfhir shard", e))
}

/// The shards of one type's inputs, in input order, as JSON texts.
#[pyfunction]
#[pyo3(signature = (paths, resource_type, shard_bytes, flatten))]
pub(crate) fn plan_shards(
    py: Python<'_>,
    paths: Vec<PathBuf>,
    resource_type: String,
    shard_bytes: u64,
    flatten: FlattenArgs,
) -> PyResult<Vec<String>> {
    let group = group_of(py, &paths, &flatten.read_options(), &resource_type)?;
    let shards = py
        .detach(|| flatfhir_core::plan_shards(&group, shard_bytes))
        .map_err(|e| errors::core(py, e))?;
    Ok(shards
        .iter()
        .map(|s| serde_json::to_string(s).expect("a shard serialises"))
        .collect())
}

/// Rejected lines as `(file, line, reason)`.
type RejectedList = Vec<(String, u64, String)>;

fn rejected_list(rejected: &[flatfhir_core::RejectedLine]) -> RejectedList {
    rejected
        .iter()
        .map(|r| (r.file.display().to_string(), r.line, r.reason.clone()))
        .collect()
}

/// One shard's schema document (JSON text) and its rejected lines `[(file, line, reason)]`.
#[pyfunction]
#[pyo3(signature = (shard, flatten))]
pub(crate) fn shard_schema(
    py: Python<'_>,
    shard: &str,
    flatten: FlattenArgs,
) -> PyResult<(String, RejectedList)> {
    let shard = shard_of(shard)?;
    let opts = flatten.options(PathBuf::from("."))?;
    let out = py
        .detach(|| flatfhir_core::read_shard(&shard, &opts, None, &mut |_| Ok(())))
        .map_err(|e| errors::core(py, e))?;
    let mut doc = SchemaDoc::new(&opts.sep, &opts.exclude);
    doc.types.insert(shard.resource_type.clone(), out.schema);
    Ok((doc.to_json(), rejected_list(&out.rejected)))
}

/// Merges schema documents (JSON texts) into one.
#[pyfunction]
pub(crate) fn merge_schemas(py: Python<'_>, docs: Vec<String>) -> PyResult<String> {
    let mut it = docs.iter();
    let first = it
        .next()
        .ok_or_else(|| value_error("merge_schemas", "no documents given"))?;
    let mut doc = SchemaDoc::from_json(first).map_err(|e| errors::core(py, e))?;
    for d in it {
        let other = SchemaDoc::from_json(d).map_err(|e| errors::core(py, e))?;
        doc.merge(&other).map_err(|e| errors::core(py, e))?;
    }
    Ok(doc.to_json())
}

/// Flattens NDJSON texts held in memory (`None`: no line), named `source` in errors, line
/// `first_line` being `texts[0]`, columns ordered by `file_index` among calls. Without a schema in `flatten`: `(schema document, [], rejected)`; with
/// one: `(pyarrow schema, [batch...], rejected)`.
#[pyfunction]
#[pyo3(signature = (texts, resource_type, source, file_index, first_line, flatten))]
pub(crate) fn read_texts(
    py: Python<'_>,
    texts: Vec<Option<String>>,
    resource_type: String,
    source: String,
    file_index: u32,
    first_line: u64,
    flatten: FlattenArgs,
) -> PyResult<(Py<PyAny>, Vec<Py<PyAny>>, RejectedList)> {
    let opts = flatten.options(PathBuf::from("."))?;
    let shard = Shard {
        resource_type: resource_type.clone(),
        file_index,
        path: PathBuf::from(source),
        start: 0,
        end: None,
        typed_by_name: true,
        reports_untyped: true,
    };
    let texts: Vec<Vec<u8>> = texts
        .into_iter()
        .map(|t| t.map(String::into_bytes).unwrap_or_default())
        .collect();
    let given = match &opts.schema {
        Some(doc) => Some(doc.get(&resource_type).map_err(|e| errors::core(py, e))?),
        None => None,
    };
    let mut batches: Vec<RecordBatch> = Vec::new();
    let out = py
        .detach(|| {
            flatfhir_core::read_texts(&shard, texts, first_line, &opts, given, &mut |b| {
                batches.push(b);
                Ok(())
            })
        })
        .map_err(|e| errors::core(py, e))?;
    let rejected = rejected_list(&out.rejected);
    match given {
        None => {
            let mut doc = SchemaDoc::new(&opts.sep, &opts.exclude);
            doc.types.insert(resource_type, out.schema);
            Ok((errors::obj(py, doc.to_json()), Vec::new(), rejected))
        }
        Some(t) => {
            let arrow = t
                .arrow_schema(opts.decimals)
                .map_err(|e| errors::core(py, e))?;
            let batches = batches
                .into_iter()
                .map(|b| b.to_pyarrow(py).map(Bound::unbind))
                .collect::<PyResult<Vec<_>>>()?;
            Ok((arrow.to_pyarrow(py)?.unbind(), batches, rejected))
        }
    }
}

/// Flattens `shard` against the schema in `flatten["schema"]` and writes it to `path` with
/// the CLI's table writer (`write`: format, compression, row-group rows), atomically: the
/// file is written under a temporary name in its folder and renamed only when whole; on an
/// error nothing is left. Runs on the calling thread without the GIL (a Spark or Dask task
/// is one per core; the writer encodes a row group's columns on the engine's thread pool).
/// Returns `(rows, rejected)`.
#[pyfunction]
#[pyo3(signature = (shard, flatten, write, path))]
pub(crate) fn write_shard(
    py: Python<'_>,
    shard: &str,
    flatten: FlattenArgs,
    write: WriteArgs,
    path: PathBuf,
) -> PyResult<(u64, RejectedList)> {
    let shard = shard_of(shard)?;
    let opts = flatten.options(PathBuf::from("."))?;
    let write = write.options()?;
    let doc = opts
        .schema
        .clone()
        .ok_or_else(|| value_error("write_shard", "a schema is needed"))?;
    let out = py
        .detach(|| {
            let rt = shard.resource_type.as_str();
            let given = doc.get(rt)?;
            let arrow = given.arrow_schema(opts.decimals)?;
            let meta = [
                ("flatfhir.version", env!("CARGO_PKG_VERSION").to_string()),
                ("flatfhir.resource_type", rt.to_string()),
                ("flatfhir.separator", opts.sep.clone()),
                (
                    "flatfhir.decimals",
                    match opts.decimals {
                        flatfhir_core::Decimals::Float => "float".to_string(),
                        flatfhir_core::Decimals::Exact => "exact".to_string(),
                    },
                ),
            ]
            .map(|(k, v)| (k.to_string(), v));
            let width = arrow.fields().len();
            let mut writer = TableWriter::create(&path, arrow, &write, &meta)?;
            // Batches (one per chunk of lines) are gathered up to a row group and written in
            // one call: the writer encodes each call's columns in parallel, and one parallel
            // stage per row group costs less than one per 4,096 lines. The file is the same
            // (row groups are cut by rows either way).
            let mut pending: Vec<RecordBatch> = Vec::new();
            let mut rows = 0usize;
            let flush = |writer: &mut TableWriter, pending: &mut Vec<RecordBatch>| {
                if pending.is_empty() {
                    return Ok(());
                }
                let parts: Vec<ChunkRows> = pending
                    .iter()
                    .map(|b| ChunkRows {
                        rows: b.num_rows(),
                        input_bytes: 0,
                    })
                    .collect();
                let columns: Vec<Vec<ArrayRef>> = (0..width)
                    .map(|c| pending.iter().map(|b| Arc::clone(b.column(c))).collect())
                    .collect();
                pending.clear();
                writer.write_columns(&parts, columns, |_, col, p| Ok(Arc::clone(&col[p])))
            };
            let got = flatfhir_core::read_shard(&shard, &opts, Some(given), &mut |b| {
                rows += b.num_rows();
                pending.push(b);
                if rows >= write.row_group_rows {
                    rows = 0;
                    flush(&mut writer, &mut pending)?;
                }
                Ok(())
            })?;
            flush(&mut writer, &mut pending)?;
            if writer.rows() != got.rows {
                return Err(flatfhir_core::Error::Internal {
                    resource_type: rt.to_string(),
                    path: shard.path.clone(),
                    reason: format!("{} rows written, {} flattened", writer.rows(), got.rows),
                });
            }
            // Dropped unfinished (an error above), the writer removes its temporary file.
            writer.finish()?;
            Ok(got)
        })
        .map_err(|e| errors::core(py, e))?;
    Ok((out.rows, rejected_list(&out.rejected)))
}

enum ShardMsg {
    Batch(RecordBatch),
    Done(Result<flatfhir_core::ShardOutcome, flatfhir_core::Error>),
}

/// One shard flattened against a given schema, as a stream of pyarrow record batches (what
/// the Spark data source's `read()` yields). A worker thread flattens chunk after chunk and
/// stays at most `bound` batches ahead of the consumer, so the flattening of the next chunk
/// runs while the consumer (Spark's Python worker) sends the previous batch to the JVM, and
/// memory is bounded by a few chunks instead of growing with the shard, as one call that
/// returned every batch did. The caller waits without the GIL ([`recv`]); Ctrl-C stops the
/// work.
#[pyclass(module = "flatfhir._native")]
pub(crate) struct ShardReader {
    rx: Mutex<Option<Receiver<ShardMsg>>>,
    shared: Arc<Shared>,
    worker: Mutex<Option<JoinHandle<()>>>,
    schema: SchemaRef,
    rejected: Mutex<Option<RejectedList>>,
}

impl ShardReader {
    fn join(&self, py: Python<'_>) {
        join_worker(py, &self.worker);
    }
}

#[pymethods]
impl ShardReader {
    /// Starts flattening `shard` (JSON text) against the schema in `flatten["schema"]`.
    #[new]
    #[pyo3(signature = (shard, flatten, bound))]
    fn new(py: Python<'_>, shard: &str, flatten: FlattenArgs, bound: usize) -> PyResult<Self> {
        let shard = shard_of(shard)?;
        let opts = flatten.options(PathBuf::from("."))?;
        let doc = opts
            .schema
            .clone()
            .ok_or_else(|| value_error("ShardReader", "a schema is needed"))?;
        let schema = doc
            .get(&shard.resource_type)
            .and_then(|t| t.arrow_schema(opts.decimals))
            .map_err(|e| errors::core(py, e))?;
        let shared = Arc::new(Shared::default());
        let (tx, rx) = sync_channel::<ShardMsg>(bound.max(1));
        let worker = std::thread::Builder::new()
            .name(format!("flatfhir-shard-{}", shard.resource_type))
            .spawn(move || {
                let r = doc.get(&shard.resource_type).and_then(|t| {
                    flatfhir_core::read_shard(&shard, &opts, Some(t), &mut |b| {
                        // The consumer is gone (dropped or interrupted): stop here.
                        tx.send(ShardMsg::Batch(b))
                            .map_err(|_| flatfhir_core::Error::Cancelled)
                    })
                });
                let _ = tx.send(ShardMsg::Done(r));
            })
            .map_err(|e| {
                pyo3::exceptions::PyRuntimeError::new_err(format!("cannot start a thread: {e}"))
            })?;
        Ok(Self {
            rx: Mutex::new(Some(rx)),
            shared,
            worker: Mutex::new(Some(worker)),
            schema,
            rejected: Mutex::new(None),
        })
    }

    /// The shard's Arrow schema (the given document's columns and types).
    #[getter]
    fn schema<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.schema.to_pyarrow(py)
    }

    /// The next batch, or `None` once the shard is done (a bad line raises, naming file and
    /// line).
    fn next_batch<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        if self
            .rejected
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .is_some()
        {
            return Ok(None);
        }
        let got = recv(py, &self.rx, &self.shared, None, &mut |_| Ok(()));
        match got {
            Ok(Some(ShardMsg::Batch(b))) => Ok(Some(b.to_pyarrow(py)?)),
            Ok(Some(ShardMsg::Done(r))) => {
                self.join(py);
                let out = r.map_err(|e| errors::core(py, e))?;
                *self
                    .rejected
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) =
                    Some(rejected_list(&out.rejected));
                Ok(None)
            }
            Ok(None) => {
                self.join(py);
                Err(errors::make(
                    py,
                    "FlatfhirError",
                    "the shard reader stopped unexpectedly".to_string(),
                    &[],
                ))
            }
            Err(e) => {
                self.join(py);
                Err(e)
            }
        }
    }

    /// The lines `on_error="skip"` left out, `[(file, line, reason)]`, once the last batch
    /// has been taken; else `None`.
    fn rejected(&self) -> Option<RejectedList> {
        self.rejected
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

impl Drop for ShardReader {
    fn drop(&mut self) {
        // Dropping the receiver makes the worker's next send fail, which ends it.
        self.rx
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
    }
}
