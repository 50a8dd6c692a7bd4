//! SQL on FHIR views in Python: ViewDefinitions (JSON text) and FHIRPath column lists are
//! compiled by `flatfhir-view` and run over the inputs into Arrow IPC files, which the Python
//! layer memory-maps as `pyarrow.Table`s (the same tables `flatfhir convert --view` writes).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use flatfhir_view::{Format, View};
use pyo3::prelude::*;

use crate::errors;
use crate::wait::{Shared, recv};

/// Compiles the views and runs them. `definitions`: `(ViewDefinition JSON text, name to use
/// when it has none)`; `columns`: `(resource type, [(column name, FHIRPath)])`, one view per
/// type named after it. Returns `[(view name, Arrow file, resources read, rows)]` in order.
#[pyfunction]
#[pyo3(signature = (paths, definitions, columns, out_dir, max_line_bytes))]
#[allow(clippy::type_complexity)]
pub(crate) fn run_views(
    py: Python<'_>,
    paths: Vec<PathBuf>,
    definitions: Vec<(String, String)>,
    columns: Vec<(String, Vec<(String, String)>)>,
    out_dir: PathBuf,
    max_line_bytes: usize,
) -> PyResult<Vec<(String, String, u64, u64)>> {
    let mut views = Vec::new();
    for (text, fallback) in &definitions {
        views.push(View::from_json_str(text, fallback).map_err(|e| errors::view(py, e))?);
    }
    for (ty, cols) in &columns {
        views.push(View::from_columns(ty, ty, cols).map_err(|e| errors::view(py, e))?);
    }
    let mut names: Vec<&str> = views.iter().map(View::name).collect();
    names.sort_unstable();
    if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
        return Err(errors::make(
            py,
            "ViewError",
            format!("two views are named '{}': their tables would collide", w[0]),
            &[],
        ));
    }
    let read = flatfhir_core::ReadOptions::default().max_line_bytes(max_line_bytes);
    let write =
        flatfhir_core::WriteOptions::default().compression(flatfhir_core::Compression::None);
    let shared = Arc::new(Shared::default());
    let (tx, rx) = std::sync::mpsc::channel();
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    let worker = std::thread::spawn(move || {
        let opts = flatfhir_view::RunOptions::default()
            .format(Format::Arrow)
            .write(write)
            .read(read)
            .cancel(Some(flag));
        let r = flatfhir_view::run_views_with(&paths, &views, &out_dir, &opts);
        let _ = tx.send(r);
    });
    let rx = Mutex::new(Some(rx));
    let got = recv(py, &rx, &shared, None, &mut |_| Ok(()));
    if got.is_err() {
        // Ctrl-C: the runner stops before its next batch of chunks.
        stop.store(true, Ordering::Relaxed);
    }
    py.detach(move || {
        let _ = worker.join();
    });
    match got? {
        Some(Ok(report)) => Ok(report
            .views
            .iter()
            .map(|v| {
                (
                    v.view.clone(),
                    v.path.display().to_string(),
                    v.resources,
                    v.rows,
                )
            })
            .collect()),
        Some(Err(e)) => Err(errors::view(py, e)),
        None => Err(errors::make(
            py,
            "FlatfhirError",
            "the view runner stopped unexpectedly".into(),
            &[],
        )),
    }
}
