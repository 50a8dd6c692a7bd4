//! Turning the libraries' typed errors into the Python exception classes of
//! `flatfhir.errors`, field by field (a bad line keeps its file, line and reason; a server
//! error its status and OperationOutcome text). The libraries never put a secret in an error,
//! and URLs arrive redacted, so the texts are safe to show.

use pyo3::IntoPyObjectExt;
use pyo3::prelude::*;
use pyo3::types::PyDict;

/// Builds `flatfhir.errors.<class>(message, **fields)`.
pub(crate) fn make(
    py: Python<'_>,
    class: &str,
    message: String,
    fields: &[(&str, Py<PyAny>)],
) -> PyErr {
    let build = || -> PyResult<PyErr> {
        let cls = py.import("flatfhir.errors")?.getattr(class)?;
        let kw = PyDict::new(py);
        for (k, v) in fields {
            kw.set_item(*k, v)?;
        }
        let exc = cls.call((message.clone(),), Some(&kw))?;
        Ok(PyErr::from_value(exc))
    };
    build().unwrap_or_else(|e| e)
}

pub(crate) fn obj<'py, T: IntoPyObjectExt<'py>>(py: Python<'py>, v: T) -> Py<PyAny> {
    v.into_py_any(py).unwrap_or_else(|_| py.None())
}

/// An engine error.
pub(crate) fn core(py: Python<'_>, e: flatfhir_core::Error) -> PyErr {
    use flatfhir_core::Error as E;
    let msg = e.to_string();
    match e {
        E::BadLine { file, line, reason } => make(
            py,
            "BadLineError",
            msg,
            &[
                ("file", obj(py, file.display().to_string())),
                ("line", obj(py, line)),
                ("reason", obj(py, reason)),
            ],
        ),
        E::Read { path, .. } | E::Write { path, .. } | E::Spill { path, .. } => make(
            py,
            "IoError",
            msg,
            &[("path", obj(py, path.display().to_string()))],
        ),
        E::Input { path, reason } => make(
            py,
            "InputError",
            msg,
            &[
                ("path", obj(py, path.display().to_string())),
                ("reason", obj(py, reason)),
            ],
        ),
        E::ColumnCollision { resource_type, .. } | E::TooManyColumns { resource_type, .. } => make(
            py,
            "SchemaError",
            msg,
            &[("resource_type", obj(py, resource_type))],
        ),
        E::Options(_) => make(py, "OptionsError", msg, &[]),
        E::Cancelled => pyo3::exceptions::PyKeyboardInterrupt::new_err(msg),
        _ => make(py, "FlatfhirError", msg, &[]),
    }
}

/// A view error.
pub(crate) fn view(py: Python<'_>, e: flatfhir_view::Error) -> PyErr {
    use flatfhir_view::Error as E;
    let msg = e.to_string();
    let view = match &e {
        E::Syntax { view, .. } | E::Invalid { view, .. } | E::Eval { view, .. } => {
            Some(view.clone())
        }
        _ => None,
    };
    match e {
        E::Io { context, .. } => make(py, "IoError", msg, &[("path", obj(py, context))]),
        E::Cancelled => pyo3::exceptions::PyKeyboardInterrupt::new_err(msg),
        _ => make(py, "ViewError", msg, &[("view", obj(py, view))]),
    }
}

/// A Bulk Data client error.
pub(crate) fn fetch(py: Python<'_>, e: flatfhir_fetch::Error) -> PyErr {
    use flatfhir_fetch::Error as E;
    let msg = e.to_string();
    let url = |u: &flatfhir_fetch::RedactedUrl| obj(py, u.redacted());
    match &e {
        E::KeyRead { path, .. } | E::Sec1Key { path } | E::BadKey { path, .. } => make(
            py,
            "AuthError",
            msg,
            &[("path", obj(py, path.display().to_string()))],
        ),
        E::Discovery { url: u, .. } => make(py, "AuthError", msg, &[("url", url(u))]),
        E::Token {
            url: u,
            status,
            message,
        } => make(
            py,
            "AuthError",
            msg.clone(),
            &[
                ("url", url(u)),
                ("status", obj(py, *status)),
                ("server_message", obj(py, message.clone())),
            ],
        ),
        E::Http { url: u, cause } => make(
            py,
            "HttpError",
            msg.clone(),
            &[("url", url(u)), ("cause", obj(py, cause.clone()))],
        ),
        E::Kickoff {
            url: u,
            status,
            message,
        }
        | E::Status {
            url: u,
            status,
            message,
        } => make(
            py,
            "ServerError",
            msg.clone(),
            &[
                ("url", url(u)),
                ("status", obj(py, *status)),
                ("server_message", obj(py, message.clone())),
            ],
        ),
        E::NoContentLocation { url: u, status } => make(
            py,
            "ServerError",
            msg.clone(),
            &[("url", url(u)), ("status", obj(py, *status))],
        ),
        E::Manifest { url: u, reason } | E::Download { url: u, reason } => make(
            py,
            "ServerError",
            msg.clone(),
            &[("url", url(u)), ("server_message", obj(py, reason.clone()))],
        ),
        E::Content { path, line, reason } => make(
            py,
            "ContentError",
            msg.clone(),
            &[
                ("file", obj(py, path.display().to_string())),
                ("line", obj(py, *line)),
                ("reason", obj(py, reason.clone())),
            ],
        ),
        E::Timeout(_) => make(py, "ExportTimeoutError", msg, &[]),
        E::Io { path, .. } => make(
            py,
            "IoError",
            msg.clone(),
            &[("path", obj(py, path.display().to_string()))],
        ),
        E::Usage(_) => make(py, "OptionsError", msg, &[]),
        _ => make(py, "JobError", msg, &[]),
    }
}
