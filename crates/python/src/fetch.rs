//! The Bulk Data client in Python: [`Client`] holds how to reach and authenticate with a
//! server (like the CLI's connection flags) and runs `export`, `status` and `cancel` from
//! `flatfhir-fetch` on a Tokio runtime on a worker thread. Events reach a Python callback on
//! the caller's thread; Ctrl-C (KeyboardInterrupt) or an exception in the callback drops the
//! export future, which stops the downloads where they are: the job state in the output
//! directory is kept up to date as files complete, so `export(..., resume=True)` continues.
//! Secrets live only in this object and in the library's `Secret`s; `repr` never shows them.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flatfhir_fetch::{
    Connection, Credentials, Event, JobState, KickoffParams, Level, Options, ParamStyle, Secret,
    SigningKey,
};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::errors;
use crate::wait::{Shared, recv};

/// A Bulk Data server and the credentials for it.
#[pyclass(module = "flatfhir._native")]
pub(crate) struct Client {
    fhir_url: Option<String>,
    client_id: Option<String>,
    /// PEM or JWK(S) text, or a path to one.
    private_key: Option<String>,
    kid: Option<String>,
    alg: Option<String>,
    scope: String,
    token_url: Option<String>,
    client_secret: Option<String>,
    client_secret_post: bool,
    bearer: Option<String>,
    headers: Vec<(String, String)>,
    ca_cert: Option<PathBuf>,
    min_wait: f64,
    max_poll_wait: f64,
    retries: u32,
}

fn usage(py: Python<'_>, msg: String) -> PyErr {
    errors::make(py, "OptionsError", msg, &[])
}

impl Client {
    /// The connection, with what the job state in `dir` recorded (FHIR URL, client id, key
    /// path, kid, token URL) filling in what this client leaves out, as the CLI does.
    fn connection(&self, py: Python<'_>, job: Option<&JobState>) -> PyResult<Connection> {
        let fetch = |e| errors::fetch(py, e);
        let fhir_url: url::Url = match (&self.fhir_url, job) {
            (Some(u), _) => u.parse(),
            (None, Some(j)) => j.fhir_url.parse(),
            (None, None) => return Err(usage(py, "fhir_url is required".into())),
        }
        .map_err(|e| usage(py, format!("fhir_url: {e}")))?;
        let client_id = self
            .client_id
            .clone()
            .or_else(|| job.and_then(|j| j.client_id.clone()));
        let kid = self.kid.clone().or_else(|| job.and_then(|j| j.kid.clone()));
        let key_source = self.private_key.clone().or_else(|| {
            job.and_then(|j| j.private_key_path.as_ref().map(|p| p.display().to_string()))
        });
        let alg = self
            .alg
            .as_deref()
            .map(flatfhir_fetch::parse_alg)
            .transpose()
            .map_err(fetch)?;
        let mut key_path = None;
        let credentials = if let Some(token) = &self.bearer {
            Credentials::Bearer(Secret::new(token.clone()))
        } else if let Some(src) = &key_source {
            let client_id = client_id
                .ok_or_else(|| usage(py, "client_id is required with private_key".into()))?;
            let trimmed = src.trim_start();
            let key = if trimmed.starts_with("-----BEGIN") || trimmed.starts_with('{') {
                SigningKey::from_text(
                    src,
                    std::path::Path::new("private_key"),
                    kid.as_deref(),
                    alg,
                )
                .map_err(fetch)?
            } else {
                let p = PathBuf::from(src);
                let key = SigningKey::load(&p, kid.as_deref(), alg).map_err(fetch)?;
                key_path = Some(std::path::absolute(&p).unwrap_or(p));
                key
            };
            Credentials::PrivateKey { client_id, key }
        } else if let Some(secret) = &self.client_secret {
            let client_id = client_id
                .ok_or_else(|| usage(py, "client_id is required with client_secret".into()))?;
            Credentials::ClientSecret {
                client_id,
                secret: Secret::new(secret.clone()),
                form_post: self.client_secret_post,
            }
        } else {
            Credentials::None
        };
        let mut conn = Connection::new(fhir_url, credentials);
        conn.scope.clone_from(&self.scope);
        conn.token_url = match &self.token_url {
            Some(u) => Some(
                u.parse()
                    .map_err(|e| usage(py, format!("token_url: {e}")))?,
            ),
            None => job
                .and_then(|j| j.token_url.as_deref())
                .and_then(|u| u.parse().ok()),
        };
        conn.ca_cert.clone_from(&self.ca_cert);
        conn.private_key_path = key_path;
        conn.headers.clone_from(&self.headers);
        conn.timing.min_wait = secs(py, "min_wait", self.min_wait)?;
        conn.timing.max_poll_wait = secs(py, "max_poll_wait", self.max_poll_wait)?;
        conn.timing.retries = self.retries;
        Ok(conn)
    }

    fn auth_kind(&self) -> &'static str {
        if self.bearer.is_some() {
            "bearer token"
        } else if self.private_key.is_some() {
            "private_key_jwt"
        } else if self.client_secret.is_some() {
            "client secret"
        } else {
            "none"
        }
    }
}

fn secs(py: Python<'_>, what: &str, s: f64) -> PyResult<Duration> {
    Duration::try_from_secs_f64(s).map_err(|_| usage(py, format!("{what}: not a duration: {s}")))
}

/// Runs a future on a fresh runtime on a worker thread while the caller waits (see
/// [`recv`]); `events` are handed to `on_event` between waits. On KeyboardInterrupt or a
/// callback error the future is dropped (stopping the work) before the error is raised.
fn run<T: Send + 'static>(
    py: Python<'_>,
    fut: impl std::future::Future<Output = T> + Send + 'static,
    events: Option<std::sync::mpsc::Receiver<Event>>,
    on_event: Option<&Bound<'_, PyAny>>,
) -> PyResult<T> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| pyo3::exceptions::PyRuntimeError::new_err(format!("async runtime: {e}")))?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (tx, rx) = std::sync::mpsc::channel::<Option<T>>();
    let worker = std::thread::spawn(move || {
        let r = rt.block_on(async {
            tokio::select! {
                r = fut => Some(r),
                _ = stop_rx => None,
            }
        });
        // Dropping the runtime aborts the tasks the export spawned (downloads).
        drop(rt);
        let _ = tx.send(r);
    });
    let shared = Arc::new(Shared::default());
    let rx = Mutex::new(Some(rx));
    let mut pass_events = |py: Python<'_>| -> PyResult<()> {
        if let (Some(ev), Some(cb)) = (&events, on_event) {
            while let Ok(e) = ev.try_recv() {
                cb.call1((event_dict(py, &e)?,))?;
            }
        }
        Ok(())
    };
    let got = recv(py, &rx, &shared, None, &mut pass_events);
    if got.is_err() {
        let _ = stop_tx.send(());
    }
    py.detach(move || {
        let _ = worker.join();
    });
    // Events that arrived with the result.
    let flushed = pass_events(py);
    match got? {
        Some(Some(v)) => {
            flushed?;
            Ok(v)
        }
        _ => Err(pyo3::exceptions::PyKeyboardInterrupt::new_err(
            "export stopped",
        )),
    }
}

fn event_dict<'py>(py: Python<'py>, e: &Event) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    let kind = match e {
        Event::KickedOff { status_url } => {
            d.set_item("status_url", status_url)?;
            "kicked_off"
        }
        Event::Resumed {
            status_url,
            files,
            done,
        } => {
            d.set_item("status_url", status_url)?;
            d.set_item("files", files)?;
            d.set_item("done", done)?;
            "resumed"
        }
        Event::Progress {
            x_progress,
            percent,
            wait,
        } => {
            d.set_item("x_progress", x_progress)?;
            d.set_item("percent", percent)?;
            d.set_item("wait", wait.as_secs_f64())?;
            "progress"
        }
        Event::Retrying { what, wait } => {
            d.set_item("what", what)?;
            d.set_item("wait", wait.as_secs_f64())?;
            "retrying"
        }
        Event::Manifest { page, files } => {
            d.set_item("page", page)?;
            d.set_item("files", files)?;
            "manifest"
        }
        Event::Repolling { files } => {
            d.set_item("files", files)?;
            "repolling"
        }
        Event::Throttled { parallel } => {
            d.set_item("parallel", parallel)?;
            "throttled"
        }
        Event::FileStarted {
            path,
            resource_type,
        } => {
            d.set_item("path", path)?;
            d.set_item("resource_type", resource_type)?;
            "file_started"
        }
        Event::Bytes(n) => {
            d.set_item("bytes", n)?;
            "bytes"
        }
        Event::FileDone {
            path,
            resource_type,
            resources,
            bytes,
        } => {
            d.set_item("path", path)?;
            d.set_item("resource_type", resource_type)?;
            d.set_item("resources", resources)?;
            d.set_item("bytes", bytes)?;
            "file_done"
        }
        Event::FileFailed { path, reason } => {
            d.set_item("path", path)?;
            d.set_item("reason", reason)?;
            "file_failed"
        }
        Event::TypeComplete {
            resource_type,
            files,
        } => {
            d.set_item("resource_type", resource_type)?;
            d.set_item(
                "files",
                files
                    .iter()
                    .map(|f| f.display().to_string())
                    .collect::<Vec<_>>(),
            )?;
            "type_complete"
        }
        _ => "other",
    };
    d.set_item("event", kind)?;
    Ok(d)
}

/// Kick-off and download settings of `export`, as the Python layer passes them.
#[derive(Debug, FromPyObject)]
#[pyo3(from_item_all)]
pub(crate) struct ExportArgs {
    level: String,
    group: Option<String>,
    types: Vec<String>,
    since: Option<String>,
    until: Option<String>,
    elements: Vec<String>,
    type_filters: Vec<String>,
    patients: Vec<String>,
    include_associated_data: Vec<String>,
    output_format: String,
    params: Vec<(String, String)>,
    post: bool,
    param_style: String,
    lenient: bool,
    allow_partial_manifests: bool,
    parallel: usize,
    max_wait: Option<f64>,
    resume: bool,
    delete_on_success: bool,
    max_line_bytes: usize,
}

/// A job's recorded state as JSON text, with file URLs redacted (they may be signed).
fn job_json(job: &JobState) -> String {
    let mut v = serde_json::to_value(job).unwrap_or_default();
    if let Some(files) = v.get_mut("files").and_then(|f| f.as_array_mut()) {
        for f in files {
            if let Some(u) = f.get("url").and_then(|u| u.as_str())
                && let Ok(parsed) = u.parse::<url::Url>()
            {
                f["url"] = flatfhir_fetch::RedactedUrl::new(parsed).redacted().into();
            }
        }
    }
    for key in ["status_url", "kickoff_url"] {
        if let Some(u) = v.get(key).and_then(|u| u.as_str())
            && let Ok(parsed) = u.parse::<url::Url>()
        {
            v[key] = flatfhir_fetch::RedactedUrl::new(parsed).redacted().into();
        }
    }
    v.to_string()
}

fn load_job(py: Python<'_>, dir: &std::path::Path) -> PyResult<Option<JobState>> {
    JobState::load(dir).map_err(|e| errors::fetch(py, e))
}

#[pymethods]
impl Client {
    #[new]
    #[pyo3(signature = (fhir_url=None, *, client_id=None, private_key=None, kid=None, alg=None,
        scope="system/*.read".to_string(), token_url=None, client_secret=None,
        client_secret_post=false, bearer=None, headers=Vec::new(), ca_cert=None,
        min_wait=1.0, max_poll_wait=120.0, retries=8))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        fhir_url: Option<String>,
        client_id: Option<String>,
        private_key: Option<String>,
        kid: Option<String>,
        alg: Option<String>,
        scope: String,
        token_url: Option<String>,
        client_secret: Option<String>,
        client_secret_post: bool,
        bearer: Option<String>,
        headers: Vec<(String, String)>,
        ca_cert: Option<PathBuf>,
        min_wait: f64,
        max_poll_wait: f64,
        retries: u32,
    ) -> Self {
        Self {
            fhir_url,
            client_id,
            private_key,
            kid,
            alg,
            scope,
            token_url,
            client_secret,
            client_secret_post,
            bearer,
            headers,
            ca_cert,
            min_wait,
            max_poll_wait,
            retries,
        }
    }

    fn __repr__(&self) -> String {
        format!(
            "Client(fhir_url={:?}, client_id={:?}, auth={:?})",
            self.fhir_url.as_deref().unwrap_or("<from job state>"),
            self.client_id.as_deref().unwrap_or(""),
            self.auth_kind()
        )
    }

    /// Checks the settings (URL, key) without contacting the server.
    fn check(&self, py: Python<'_>) -> PyResult<()> {
        self.connection(py, None).map(|_| ())
    }

    /// Runs an export into `out_dir`; returns the summary as JSON text.
    #[pyo3(signature = (out_dir, args, on_event=None))]
    fn export(
        &self,
        py: Python<'_>,
        out_dir: PathBuf,
        args: ExportArgs,
        on_event: Option<Bound<'_, PyAny>>,
    ) -> PyResult<String> {
        let job = if args.resume {
            load_job(py, &out_dir)?
        } else {
            None
        };
        let mut conn = self.connection(py, job.as_ref())?;
        conn.timing.give_up_after = args.max_wait.map(|s| secs(py, "max_wait", s)).transpose()?;
        let mut k = KickoffParams::default();
        k.level = match (args.group, args.level.as_str()) {
            (Some(g), _) => Level::Group(g),
            (None, "system") => Level::System,
            (None, "patient") => Level::Patient,
            (None, other) => {
                return Err(usage(
                    py,
                    format!(
                        "level={other:?}: expected 'patient', 'system' or 'group' (with group=ID)"
                    ),
                ));
            }
        };
        k.types = args.types;
        k.since = args.since;
        k.until = args.until;
        k.elements = args.elements;
        k.type_filters = args.type_filters;
        k.patients = args.patients;
        k.include_associated_data = args.include_associated_data;
        k.output_format = args.output_format;
        k.extra = args.params;
        k.style = match (args.post, args.param_style.as_str()) {
            (true, _) => ParamStyle::Post,
            (false, "comma") => ParamStyle::CommaGet,
            (false, "repeat") => ParamStyle::RepeatGet,
            (false, other) => {
                return Err(usage(
                    py,
                    format!("param_style={other:?}: expected 'comma' or 'repeat'"),
                ));
            }
        };
        k.lenient = args.lenient;
        k.allow_partial_manifests = args.allow_partial_manifests;
        let mut o = Options::new(conn, &out_dir);
        o.kickoff = k;
        o.parallel = args.parallel.max(1);
        o.resume = args.resume;
        o.delete_on_success = args.delete_on_success;
        o.max_line_bytes = args.max_line_bytes;
        let (etx, erx) = std::sync::mpsc::channel::<Event>();
        let etx = Mutex::new(etx);
        let observer: Arc<dyn flatfhir_fetch::Observer> = Arc::new(move |e: &Event| {
            if let Ok(tx) = etx.lock() {
                let _ = tx.send(e.clone());
            }
        });
        let summary = run(
            py,
            flatfhir_fetch::fetch(o, observer),
            Some(erx),
            on_event.as_ref(),
        )?
        .map_err(|e| errors::fetch(py, e))?;
        Ok(serde_json::to_string(&summary).unwrap_or_default())
    }

    /// The job recorded in `out_dir` (JSON text) and, with `poll` while the export runs,
    /// one poll of the server (JSON text or `None`).
    #[pyo3(signature = (out_dir, poll=true))]
    fn status(
        &self,
        py: Python<'_>,
        out_dir: PathBuf,
        poll: bool,
    ) -> PyResult<(String, Option<String>)> {
        let job = load_job(py, &out_dir)?;
        let conn = if poll && job.is_some() {
            Some(self.connection(py, job.as_ref())?)
        } else {
            None
        };
        let (job, server) = run(
            py,
            async move { flatfhir_fetch::status(&out_dir, conn).await },
            None,
            None,
        )?
        .map_err(|e| errors::fetch(py, e))?;
        Ok((
            job_json(&job),
            server.map(|s| serde_json::to_string(&s).unwrap_or_default()),
        ))
    }

    /// DELETEs the export recorded in `out_dir` on the server and marks it cancelled.
    fn cancel(&self, py: Python<'_>, out_dir: PathBuf) -> PyResult<()> {
        let job = load_job(py, &out_dir)?;
        let conn = self.connection(py, job.as_ref())?;
        run(
            py,
            async move { flatfhir_fetch::cancel(&out_dir, conn).await },
            None,
            None,
        )?
        .map_err(|e| errors::fetch(py, e))
    }
}
