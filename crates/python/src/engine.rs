//! The engine in Python: planning inputs, reading a resource type as a stream of Arrow
//! record batches ([`TypeReader`]), converting to files ([`convert`]) and the union schema
//! ([`schema`]). The work runs on a worker thread (the engine's own thread pool below it);
//! the Python caller waits in [`crate::wait::recv`].

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use arrow_array::RecordBatch;
use arrow_pyarrow::{IntoPyArrow, ToPyArrow};
use arrow_schema::SchemaRef;
use flatfhir_core::{
    BundleMode, BundleOptions, Compression, ConvertOptions, Decimals, Duplicates, OnError,
    OutputFormat, ReadOptions, ReadReport, SchemaReport, TypeGroup, TypeReport, WriteOptions,
};
use pyo3::prelude::*;

use crate::errors;
use crate::wait::{Shared, drain, join_worker, recv};

/// Flattening options, as the Python layer passes them (a dict with every key).
#[derive(Debug, FromPyObject)]
#[pyo3(from_item_all)]
pub(crate) struct FlattenArgs {
    sep: String,
    exclude: Vec<String>,
    decimals: String,
    on_error: String,
    threads: usize,
    max_columns: usize,
    max_line_bytes: usize,
    memory_budget: usize,
    spill_dir: Option<PathBuf>,
    /// A precomputed schema document (JSON text), or `None`.
    schema: Option<String>,
    /// Which files are Bundles: `auto`, `unpack` or `keep` (the CLI's `--bundles`).
    bundles: String,
    /// Rewrite `urn:uuid:` references to `Type/id` (`--resolve-references`).
    resolve_references: bool,
    /// Duplicate (type, id) across Bundle entries: `keep` or `first` (`--bundle-duplicates`).
    bundle_duplicates: String,
}

impl FlattenArgs {
    /// How Bundle files are unpacked; the unpacked resources wait in `spill_dir` (else the
    /// system's temporary directory) while the inputs are in use.
    pub(crate) fn bundle_options(&self) -> PyResult<BundleOptions> {
        let bad = |what: &str, v: &str, allowed: &str| {
            pyo3::exceptions::PyValueError::new_err(format!(
                "{what}={v:?}: expected one of {allowed}"
            ))
        };
        let mode = match self.bundles.as_str() {
            "auto" => BundleMode::Auto,
            "unpack" => BundleMode::Unpack,
            "keep" => BundleMode::Keep,
            v => return Err(bad("bundles", v, "'auto', 'unpack', 'keep'")),
        };
        let duplicates = match self.bundle_duplicates.as_str() {
            "keep" => Duplicates::Keep,
            "first" => Duplicates::First,
            v => return Err(bad("bundle_duplicates", v, "'keep', 'first'")),
        };
        Ok(BundleOptions::default()
            .mode(mode)
            .resolve_references(self.resolve_references)
            .duplicates(duplicates)
            .temp_dir(self.spill_dir.clone()))
    }

    pub(crate) fn read_options(&self) -> ReadOptions {
        ReadOptions::default().max_line_bytes(self.max_line_bytes)
    }

    pub(crate) fn options(&self, out_dir: PathBuf) -> PyResult<ConvertOptions> {
        let bad = |what: &str, v: &str, allowed: &str| {
            pyo3::exceptions::PyValueError::new_err(format!(
                "{what}={v:?}: expected one of {allowed}"
            ))
        };
        Ok(ConvertOptions::default()
            .out_dir(out_dir)
            .sep(self.sep.clone())
            .exclude(self.exclude.clone())
            .decimals(match self.decimals.as_str() {
                "float" => Decimals::Float,
                "exact" => Decimals::Exact,
                v => return Err(bad("decimals", v, "'float', 'exact'")),
            })
            .on_error(match self.on_error.as_str() {
                "fail" => OnError::Fail,
                "skip" => OnError::Skip,
                v => return Err(bad("on_error", v, "'fail', 'skip'")),
            })
            .threads(self.threads)
            .max_columns(self.max_columns)
            .read(self.read_options())
            .memory_budget(self.memory_budget)
            .spill_dir(self.spill_dir.clone())
            .schema(match &self.schema {
                Some(text) => Some(Arc::new(
                    flatfhir_core::SchemaDoc::from_json(text).map_err(|e| {
                        pyo3::exceptions::PyValueError::new_err(format!("schema: {e}"))
                    })?,
                )),
                None => None,
            }))
    }
}

/// Writer options of `convert`.
#[derive(Debug, FromPyObject)]
#[pyo3(from_item_all)]
pub(crate) struct WriteArgs {
    format: String,
    compression: String,
    row_group_rows: usize,
}

impl WriteArgs {
    pub(crate) fn options(&self) -> PyResult<WriteOptions> {
        let bad = |m: String| pyo3::exceptions::PyValueError::new_err(m);
        if self.row_group_rows == 0 {
            return Err(bad("row_group_rows must be at least 1".into()));
        }
        let format = match self.format.as_str() {
            "parquet" => OutputFormat::Parquet,
            "arrow" => OutputFormat::Arrow,
            v => return Err(bad(format!("format={v:?}: expected 'parquet' or 'arrow'"))),
        };
        let compression = match self.compression.as_str() {
            "zstd" => Compression::Zstd,
            "snappy" => Compression::Snappy,
            "none" => Compression::None,
            v => {
                return Err(bad(format!(
                    "compression={v:?}: expected 'zstd', 'snappy' or 'none'"
                )));
            }
        };
        if format == OutputFormat::Arrow && compression == Compression::Snappy {
            return Err(bad(
                "Arrow IPC files support 'zstd' or 'none', not 'snappy'".into(),
            ));
        }
        Ok(WriteOptions::default()
            .format(format)
            .compression(compression)
            .row_group_rows(self.row_group_rows))
    }
}

pub(crate) fn plan_groups(
    py: Python<'_>,
    paths: &[PathBuf],
    read: &ReadOptions,
) -> PyResult<flatfhir_core::Plan> {
    let paths = paths.to_vec();
    let read = read.clone();
    py.detach(move || flatfhir_core::plan(&paths, &read))
        .map_err(|e| errors::core(py, e))
}

/// The inputs grouped by resource type, planned once: Bundle files are unpacked here, and
/// their temporary files live as long as this object (every reader, conversion and schema
/// pass made from it reads them), so a Bundle folder is read once whatever the number of
/// types.
#[pyclass(module = "flatfhir._native", frozen)]
pub(crate) struct Inputs {
    plan: flatfhir_core::Plan,
}

impl Inputs {
    fn group(&self, py: Python<'_>, rt: &str) -> PyResult<TypeGroup> {
        self.plan
            .groups
            .iter()
            .find(|g| g.resource_type == rt)
            .cloned()
            .ok_or_else(|| {
                let found: Vec<&str> = self
                    .plan
                    .groups
                    .iter()
                    .map(|g| g.resource_type.as_str())
                    .collect();
                errors::make(
                    py,
                    "InputError",
                    format!("no input of type {rt} (found: {})", found.join(", ")),
                    &[],
                )
            })
    }

    /// The groups named in `types` (all when empty), and what keeps their Bundle files alive.
    fn selected(&self, types: &[String]) -> flatfhir_core::Plan {
        let mut plan = self.plan.clone();
        if !types.is_empty() {
            plan.groups.retain(|g| types.contains(&g.resource_type));
        }
        plan
    }
}

#[pymethods]
impl Inputs {
    /// `[(type, [file, ...]), ...]`: the files each type is read from, a Bundle file named
    /// for the resources unpacked from it.
    fn groups(&self) -> Vec<(String, Vec<String>)> {
        let bundles = self.plan.bundles.as_deref();
        self.plan
            .groups
            .iter()
            .map(|g| {
                let mut files: Vec<String> = Vec::new();
                for f in &g.files {
                    let named: Vec<std::path::PathBuf> = match bundles {
                        Some(b) if b.holds(&f.path) => b.sources_of(&f.path),
                        _ => vec![f.path.clone()],
                    };
                    for p in named {
                        let p = p.display().to_string();
                        if !files.contains(&p) {
                            files.push(p);
                        }
                    }
                }
                (g.resource_type.clone(), files)
            })
            .collect()
    }

    /// Files in the given directories that are not inputs.
    fn skipped(&self) -> Vec<String> {
        show(&self.plan.skipped)
    }

    /// Files that held no resource.
    fn empty(&self) -> Vec<String> {
        show(&self.plan.empty)
    }

    /// What unpacking Bundles did (a dict of counts), or `None` when no file was a Bundle.
    fn bundles(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        let Some(b) = self.plan.bundles.as_deref() else {
            return Ok(None);
        };
        bundle_stats(py, b.stats()).map(Some)
    }

    /// Bundle files left packed, to be converted as they are unpacked (see `plan`).
    fn packed(&self) -> Vec<String> {
        show(&self.plan.packed)
    }
}

/// What unpacking Bundles counted, as a dict.
fn bundle_stats(py: Python<'_>, s: &flatfhir_core::BundleStats) -> PyResult<Py<PyAny>> {
    let d = pyo3::types::PyDict::new(py);
    d.set_item("files", s.files)?;
    d.set_item("bundles", s.bundles)?;
    d.set_item("resources", s.resources)?;
    d.set_item("bad_entries", s.bad_entries)?;
    d.set_item("duplicates", s.duplicates)?;
    d.set_item("references_resolved", s.references_resolved)?;
    d.set_item("references_unresolved", s.references_unresolved)?;
    Ok(d.into_any().unbind())
}

fn show(v: &[PathBuf]) -> Vec<String> {
    v.iter().map(|p| p.display().to_string()).collect()
}

/// Plans the inputs (see [`Inputs`]). With `leave_packed`, inputs that are all Bundle files
/// are not unpacked: `convert` converts them as it unpacks them (`Inputs.packed`).
#[pyfunction]
#[pyo3(signature = (paths, flatten, leave_packed=false))]
pub(crate) fn plan(
    py: Python<'_>,
    paths: Vec<PathBuf>,
    flatten: FlattenArgs,
    leave_packed: bool,
) -> PyResult<Inputs> {
    let read = flatten.read_options();
    let bundles = flatten.bundle_options()?;
    let plan = py
        .detach(move || {
            if leave_packed {
                flatfhir_core::plan_packed(&paths, &read, &bundles)
            } else {
                flatfhir_core::plan_with(&paths, &read, &bundles)
            }
        })
        .map_err(|e| errors::core(py, e))?;
    Ok(Inputs { plan })
}

pub(crate) fn group_of(
    py: Python<'_>,
    paths: &[PathBuf],
    read: &ReadOptions,
    rt: &str,
) -> PyResult<TypeGroup> {
    let plan = plan_groups(py, paths, read)?;
    if let Some(b) = &plan.bundles {
        // Their unpacked files would not outlive this plan.
        return Err(errors::make(
            py,
            "InputError",
            format!(
                "{} is a Bundle file; shards are made of NDJSON files (read Bundles with \
                 flatfhir.read or convert them to NDJSON/Parquet first)",
                b.sources()
                    .first()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default()
            ),
            &[],
        ));
    }
    let found: Vec<String> = plan
        .groups
        .iter()
        .map(|g| g.resource_type.clone())
        .collect();
    plan.groups
        .into_iter()
        .find(|g| g.resource_type == rt)
        .ok_or_else(|| {
            errors::make(
                py,
                "InputError",
                format!("no input of type {rt} (found: {})", found.join(", ")),
                &[],
            )
        })
}

enum Msg {
    Schema(SchemaRef),
    Batch(RecordBatch),
    Done(Result<ReadReport, flatfhir_core::Error>),
}

/// One resource type read as Arrow record batches. The engine's pass over the input runs
/// first (the union schema is known only after the last line); then batches arrive one per
/// input chunk, at most `bound` ahead of the consumer, so a consumer that does not keep them
/// reads in bounded memory.
#[pyclass(module = "flatfhir._native")]
pub(crate) struct TypeReader {
    rx: Mutex<Option<Receiver<Msg>>>,
    shared: Arc<Shared>,
    worker: Mutex<Option<JoinHandle<()>>>,
    schema: Mutex<Option<SchemaRef>>,
    report: Mutex<Option<ReadReport>>,
    resource_type: String,
}

impl TypeReader {
    fn next_msg(
        &self,
        py: Python<'_>,
        progress: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Option<Msg>> {
        let r = recv(py, &self.rx, &self.shared, progress, &mut |_| Ok(()));
        if r.is_err() {
            self.join(py);
        }
        r
    }

    fn join(&self, py: Python<'_>) {
        join_worker(py, &self.worker);
    }

    fn finish(&self, py: Python<'_>, r: Result<ReadReport, flatfhir_core::Error>) -> PyResult<()> {
        self.join(py);
        match r {
            Ok(rep) => {
                *self
                    .report
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(rep);
                Ok(())
            }
            Err(e) => Err(errors::core(py, e)),
        }
    }

    /// The union schema, waiting for the pass over the input the first time (no pyarrow
    /// object is made: `next_batch` and `read_all` only need it to be there).
    fn union_schema(
        &self,
        py: Python<'_>,
        progress: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<SchemaRef> {
        if let Some(s) = self
            .schema
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_ref()
        {
            return Ok(Arc::clone(s));
        }
        match self.next_msg(py, progress)? {
            Some(Msg::Schema(s)) => {
                *self
                    .schema
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Arc::clone(&s));
                Ok(s)
            }
            Some(Msg::Done(r)) => {
                self.finish(py, r)?;
                Err(self.gone(py))
            }
            Some(Msg::Batch(_)) | None => Err(self.gone(py)),
        }
    }

    fn gone(&self, py: Python<'_>) -> PyErr {
        self.join(py);
        errors::make(
            py,
            "FlatfhirError",
            format!("{}: the reader stopped unexpectedly", self.resource_type),
            &[],
        )
    }
}

#[pymethods]
impl TypeReader {
    /// Starts reading `resource_type` from `paths`; `out_dir` receives `_rejected/` (with
    /// `on_error="skip"`) and, without a `spill_dir`, the unlinked spill file.
    #[new]
    #[pyo3(signature = (inputs, resource_type, flatten, out_dir, bound))]
    fn new(
        py: Python<'_>,
        inputs: PyRef<'_, Inputs>,
        resource_type: String,
        flatten: FlattenArgs,
        out_dir: PathBuf,
        bound: usize,
    ) -> PyResult<Self> {
        let opts = flatten.options(out_dir)?;
        let group = inputs.group(py, &resource_type)?;
        // Unpacked Bundle files stay until the worker is done with them.
        let keep = inputs.plan.bundles.clone();
        let shared = Arc::new(Shared::default());
        let (tx, rx) = sync_channel::<Msg>(bound.max(1));
        let s = Arc::clone(&shared);
        let worker = std::thread::Builder::new()
            .name(format!("flatfhir-read-{resource_type}"))
            .spawn(move || {
                let gone = |_| flatfhir_core::Error::Cancelled;
                let r = flatfhir_core::read_group(
                    &group,
                    &opts,
                    &*s,
                    &mut |schema| tx.send(Msg::Schema(Arc::clone(schema))).map_err(gone),
                    &mut |b| tx.send(Msg::Batch(b)).map_err(gone),
                );
                let _ = tx.send(Msg::Done(r));
                drop(keep);
            })
            .map_err(|e| {
                pyo3::exceptions::PyRuntimeError::new_err(format!("cannot start a thread: {e}"))
            })?;
        Ok(Self {
            rx: Mutex::new(Some(rx)),
            shared,
            worker: Mutex::new(Some(worker)),
            schema: Mutex::new(None),
            report: Mutex::new(None),
            resource_type,
        })
    }

    /// The union schema (a `pyarrow.Schema`); waits for the pass over the input.
    #[pyo3(signature = (progress=None))]
    fn schema<'py>(
        &self,
        py: Python<'py>,
        progress: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.union_schema(py, progress.as_ref())?.to_pyarrow(py)
    }

    /// The next batch (a `pyarrow.RecordBatch`), or `None` at the end.
    #[pyo3(signature = (progress=None))]
    fn next_batch<'py>(
        &self,
        py: Python<'py>,
        progress: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        self.union_schema(py, progress.as_ref())?;
        if self
            .report
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .is_some()
        {
            return Ok(None);
        }
        match self.next_msg(py, progress.as_ref())? {
            Some(Msg::Batch(b)) => Ok(Some(b.to_pyarrow(py)?)),
            Some(Msg::Done(r)) => {
                self.finish(py, r)?;
                Ok(None)
            }
            Some(Msg::Schema(_)) | None => Err(self.gone(py)),
        }
    }

    /// Every batch not yet taken, as one `pyarrow.Table` with the union schema: they cross
    /// to pyarrow as one C stream (one schema import), not one import per batch.
    #[pyo3(signature = (progress=None))]
    fn read_all<'py>(
        &self,
        py: Python<'py>,
        progress: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let schema = self.union_schema(py, progress.as_ref())?;
        let done = self
            .report
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .is_some();
        let mut batches = Vec::new();
        if !done {
            loop {
                match self.next_msg(py, progress.as_ref())? {
                    Some(Msg::Batch(b)) => batches.push(b),
                    Some(Msg::Done(r)) => {
                        self.finish(py, r)?;
                        break;
                    }
                    Some(Msg::Schema(_)) | None => return Err(self.gone(py)),
                }
            }
        }
        let reader: Box<dyn arrow_array::RecordBatchReader + Send> = Box::new(
            arrow_array::RecordBatchIterator::new(batches.into_iter().map(Ok), schema),
        );
        reader
            .into_pyarrow(py)?
            .call_method0(pyo3::intern!(py, "read_all"))
    }

    /// What the read did (a dict), once the last batch has been taken; else `None`.
    fn report(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        let r = self
            .report
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        r.map(|r| {
            let d = pyo3::types::PyDict::new(py);
            d.set_item("resource_type", &r.resource_type)?;
            d.set_item(
                "files",
                r.files
                    .iter()
                    .map(|f| f.display().to_string())
                    .collect::<Vec<_>>(),
            )?;
            d.set_item("rows", r.rows)?;
            d.set_item("columns", r.columns)?;
            d.set_item("input_bytes", r.input_bytes)?;
            d.set_item("seconds", r.seconds)?;
            d.set_item("rejected", r.rejected)?;
            d.set_item(
                "rejected_file",
                r.rejected_file.map(|p| p.display().to_string()),
            )?;
            d.set_item("spilled_bytes", r.spilled_bytes)?;
            Ok(d.into_any().unbind())
        })
        .transpose()
    }

    /// Stops the read (if still running) and waits for the worker.
    fn close(&self, py: Python<'_>) {
        self.shared.cancel.store(true, Ordering::Relaxed);
        self.rx
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        self.join(py);
    }
}

impl Drop for TypeReader {
    fn drop(&mut self) {
        // The worker stops at its next chunk (and its sends fail once `rx` is dropped).
        self.shared.cancel.store(true, Ordering::Relaxed);
    }
}

fn type_report(py: Python<'_>, r: &TypeReport) -> PyResult<Py<PyAny>> {
    let d = pyo3::types::PyDict::new(py);
    d.set_item("resource_type", &r.resource_type)?;
    d.set_item(
        "files",
        r.files
            .iter()
            .map(|f| f.display().to_string())
            .collect::<Vec<_>>(),
    )?;
    d.set_item("rows", r.rows)?;
    d.set_item("columns", r.columns)?;
    d.set_item("input_bytes", r.input_bytes)?;
    d.set_item("output", r.output.as_ref().map(|p| p.display().to_string()))?;
    d.set_item("output_bytes", r.output_bytes)?;
    d.set_item("seconds", r.seconds)?;
    d.set_item("rejected", r.rejected)?;
    d.set_item(
        "rejected_file",
        r.rejected_file.as_ref().map(|p| p.display().to_string()),
    )?;
    d.set_item("spilled_bytes", r.spilled_bytes)?;
    Ok(d.into_any().unbind())
}

/// What [`convert`] returns: `(type, report dict | exception)` per type, and what unpacking
/// Bundles counted when they were converted as they were unpacked.
type Converted = (Vec<(String, Py<PyAny>)>, Option<Py<PyAny>>);

/// Converts the given types (all when `types` is empty) to `out_dir/<Type>.<ext>`, small
/// types side by side as the CLI does; inputs left packed (all Bundle files) are converted
/// as they are unpacked, every type at once. Returns `[(type, report dict | exception)]` in
/// type order (a type's failure is its own result) and, for packed inputs, what unpacking
/// counted.
#[pyfunction]
#[pyo3(signature = (inputs, types, out_dir, flatten, write, progress=None))]
pub(crate) fn convert(
    py: Python<'_>,
    inputs: PyRef<'_, Inputs>,
    types: Vec<String>,
    out_dir: PathBuf,
    flatten: FlattenArgs,
    write: WriteArgs,
    progress: Option<Bound<'_, PyAny>>,
) -> PyResult<Converted> {
    let mut opts = flatten.options(out_dir.clone())?;
    opts.write = write.options()?;
    let packed = !inputs.plan.packed.is_empty();
    let bundle_opts = if packed {
        Some(flatten.bundle_options()?)
    } else {
        None
    };
    let plan = inputs.selected(&types);
    std::fs::create_dir_all(&out_dir).map_err(|e| {
        errors::make(
            py,
            "IoError",
            format!("cannot create output directory {}: {e}", out_dir.display()),
            &[("path", errors::obj(py, out_dir.display().to_string()))],
        )
    })?;
    /// What the worker sends.
    enum Done {
        Type(String, Result<TypeReport, flatfhir_core::Error>),
        /// Every Bundle was read (packed inputs).
        Unpacked(flatfhir_core::BundleStats),
        /// The run stopped (packed inputs: a Bundle file that cannot be read, cancellation).
        Stopped(flatfhir_core::Error),
    }
    let shared = Arc::new(Shared::default());
    let (tx, rx) = std::sync::mpsc::channel::<Done>();
    let s = Arc::clone(&shared);
    // The plan (and the unpacked Bundle files it keeps) goes with the worker.
    let worker = std::thread::spawn(move || match bundle_opts {
        Some(bundles) => {
            let unpacked = tx.clone();
            let types = tx.clone();
            let r = flatfhir_core::convert_bundles(
                &plan.packed,
                &bundles,
                &opts,
                &*s,
                |stats| {
                    let _ = unpacked.send(Done::Unpacked(stats.clone()));
                },
                |name, r| {
                    let _ = types.send(Done::Type(name.to_string(), r));
                },
            );
            if let Err(e) = r {
                let _ = tx.send(Done::Stopped(e));
            }
        }
        None => {
            flatfhir_core::convert_groups(&plan.groups, &opts, &*s, |k, r| {
                let _ = tx.send(Done::Type(plan.groups[k].resource_type.clone(), r));
            });
        }
    });
    let mut stats = None;
    let mut stopped = None;
    let got = drain(py, rx, &shared, progress.as_ref(), worker, |done| {
        let (name, r) = match done {
            Done::Type(name, r) => (name, r),
            Done::Unpacked(s) => {
                stats = Some(bundle_stats(py, &s)?);
                return Ok(None);
            }
            Done::Stopped(flatfhir_core::Error::Cancelled) => return Ok(None),
            Done::Stopped(e) => {
                stopped = Some(e);
                return Ok(None);
            }
        };
        let v = match r {
            Ok(rep) => type_report(py, &rep)?,
            Err(flatfhir_core::Error::Cancelled) => return Ok(None),
            Err(e) => errors::core(py, e).into_value(py).into_any(),
        };
        Ok(Some((name, v)))
    })?;
    if let Some(e) = stopped {
        return Err(errors::core(py, e));
    }
    Ok((got, stats))
}

fn schema_report(py: Python<'_>, r: &SchemaReport) -> PyResult<Py<PyAny>> {
    let d = pyo3::types::PyDict::new(py);
    d.set_item("resource_type", &r.resource_type)?;
    d.set_item(
        "files",
        r.files
            .iter()
            .map(|f| f.display().to_string())
            .collect::<Vec<_>>(),
    )?;
    d.set_item("rows", r.rows)?;
    d.set_item("rejected", r.rejected)?;
    let cols = serde_json::to_string(&r.columns).unwrap_or_else(|_| "[]".into());
    d.set_item("columns_json", cols)?;
    Ok(d.into_any().unbind())
}

/// The union schema of each type: `[(type, report dict | exception)]`; the columns come as
/// JSON text (`columns_json`), in output order.
#[pyfunction]
#[pyo3(signature = (inputs, types, flatten, progress=None))]
pub(crate) fn schema(
    py: Python<'_>,
    inputs: PyRef<'_, Inputs>,
    types: Vec<String>,
    flatten: FlattenArgs,
    progress: Option<Bound<'_, PyAny>>,
) -> PyResult<Vec<(String, Py<PyAny>)>> {
    let opts = flatten.options(PathBuf::from("."))?;
    let plan = inputs.selected(&types);
    let shared = Arc::new(Shared::default());
    let (tx, rx) =
        std::sync::mpsc::channel::<(String, Result<SchemaReport, flatfhir_core::Error>)>();
    let s = Arc::clone(&shared);
    let worker = std::thread::spawn(move || {
        for g in &plan.groups {
            let r = flatfhir_core::infer_schema(g, &opts, &*s);
            let stop = matches!(r, Err(flatfhir_core::Error::Cancelled));
            if tx.send((g.resource_type.clone(), r)).is_err() || stop {
                return;
            }
        }
    });
    drain(py, rx, &shared, progress.as_ref(), worker, |(t, r)| {
        let v = match r {
            Ok(rep) => schema_report(py, &rep)?,
            Err(e) => errors::core(py, e).into_value(py).into_any(),
        };
        Ok(Some((t, v)))
    })
}
