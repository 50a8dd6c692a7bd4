"""The Bulk Data client: SMART Backend Services auth, ``$export`` kick-off, polling and
resumable parallel downloads, as :class:`Client`; and :func:`export_to_pandas`, the whole
notebook in one call."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

from . import _native
from ._engine import DEFAULT_MAX_LINE_BYTES, Tables, read
from ._progress import ProgressArg
from ._views import ColumnsArg
from .errors import OptionsError

JOB_FILE = ".flatfhir-job.json"


def _list(v: Union[None, str, Iterable[str]]) -> List[str]:
    if v is None:
        return []
    if isinstance(v, str):
        return [x.strip() for x in v.split(",") if x.strip()]
    return list(v)


@dataclass
class ExportResult:
    """What an export produced, in ``out_dir`` (Bulk Data layout: ``1.Patient.ndjson``,
    ``error/``, ``deleted/``, ``manifest.json``, ``log.ndjson``)."""

    out_dir: str
    #: Status URL (query string redacted).
    status_url: str
    #: The server's ``transactionTime``: pass it as ``since=`` to the next export.
    transaction_time: Optional[str]
    files: int
    resources: int
    bytes: int
    #: Resources per type.
    types: Dict[str, int]
    #: ``(file, reason)`` for files that could not be downloaded (``resume=True`` retries).
    failed: List[Any]
    #: Issues from the manifest's error files: ``severity``, ``code``, ``text``, ``file``.
    errors: List[Dict[str, Any]]
    seconds: float
    deleted_on_server: bool
    #: ``manifest.json`` as the server sent it (pages merged). Its file URLs may be signed
    #: (a query string that grants access), so it is left out of ``repr``.
    manifest: Dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def transactionTime(self) -> Optional[str]:  # noqa: N802 - the spec's name
        return self.transaction_time

    @property
    def deleted(self) -> List[Dict[str, Any]]:
        """The manifest's ``deleted`` entries, each with ``path`` (its local file) when
        downloaded."""
        out = []
        for e in self.manifest.get("deleted", []) or []:
            out.append(dict(e))
        files = sorted(os.listdir(os.path.join(self.out_dir, "deleted"))) if os.path.isdir(
            os.path.join(self.out_dir, "deleted")) else []
        for i, f in enumerate(files):
            if i < len(out):
                out[i]["path"] = os.path.join(self.out_dir, "deleted", f)
        return out

    def read(self, **kwargs: Any) -> Tables:
        """The exported resources as tables: :func:`flatfhir.read` on ``out_dir`` (with
        ``columns=``/``views=``, those views)."""
        return read(self.out_dir, **kwargs)

    def to_pandas(self, **kwargs: Any) -> Dict[str, Any]:
        """:meth:`read`, as pandas DataFrames."""
        return self.read(**kwargs).to_pandas()


@dataclass
class ExportStatus:
    """The job recorded in an export directory, and the server's answer to one poll."""

    phase: str
    fhir_url: str
    status_url: Optional[str]
    transaction_time: Optional[str]
    #: Per file: ``path``, ``resource_type``, ``item`` (``output``/``error``/``deleted``),
    #: ``count`` (from the manifest), ``state`` (``pending``, ``done`` or ``failed``) and, when
    #: done, ``resources`` and ``bytes``, when failed, ``reason``.
    files: List[Dict[str, Any]]
    #: ``{"code": HTTP status, "x_progress": ..., "message": ...}`` or ``None``.
    server: Optional[Dict[str, Any]]

    @property
    def done(self) -> int:
        """Files complete."""
        return sum(1 for f in self.files if f.get("state") == "done")

    @property
    def pending(self) -> int:
        """Files not (fully) downloaded yet."""
        return sum(1 for f in self.files if f.get("state") == "pending")


class _Events:
    """Passes events to the user's callback and/or a tqdm bar of downloaded bytes."""

    def __init__(self, on_event: Optional[Callable[[Dict[str, Any]], Any]], progress: ProgressArg) -> None:
        self.on_event = on_event
        self.bar: Any = None
        self.callback = progress if callable(progress) else None
        self.bytes = 0
        if progress is True:
            try:
                from tqdm.auto import tqdm

                self.bar = tqdm(desc="export", unit="B", unit_scale=True, unit_divisor=1024, leave=False)
            except ImportError:
                pass

    def __call__(self, e: Dict[str, Any]) -> None:
        if e["event"] == "bytes":
            self.bytes += e["bytes"]
            if self.bar is not None:
                self.bar.update(e["bytes"])
            if self.callback is not None:
                self.callback(self.bytes, None)
        elif self.bar is not None:
            if e["event"] == "progress":
                self.bar.set_description(f"export: server {e.get('x_progress') or 'working'}", refresh=False)
            elif e["event"] == "file_done":
                self.bar.set_description(f"export: {e['path']}", refresh=False)
        if self.on_event is not None:
            self.on_event(e)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class Client:
    """A Bulk Data server and how to authenticate with it, like the CLI's connection flags.

    ``private_key`` is a PEM (PKCS#8 RSA/EC or PKCS#1 RSA) or JWK/JWKS, as text or a path;
    with ``client_id`` it selects SMART Backend Services (``private_key_jwt``), with ``kid``
    picking the key of a JWKS and ``alg`` the algorithm (default from the key). Otherwise
    ``client_secret`` (``client_secret_basic``, or the form body with
    ``client_secret_post``), or a ready-made ``bearer`` token, or nothing for an open
    server. ``token_url`` defaults to discovery (``.well-known/smart-configuration``).
    ``headers`` are sent with every request; ``ca_cert`` adds trusted CA certificates (PEM
    file; TLS verification is always on). ``min_wait``/``max_poll_wait`` (seconds) bound
    waits between polls and retries; ``retries`` per request for 429, 5xx and dropped
    connections.

    Secrets stay inside the object: ``repr`` shows the URL, client id and kind of
    authentication only, and no error text carries a secret.
    """

    def __init__(
        self,
        fhir_url: Optional[str] = None,
        *,
        client_id: Optional[str] = None,
        private_key: Union[None, str, "os.PathLike[str]"] = None,
        kid: Optional[str] = None,
        alg: Optional[str] = None,
        scope: str = "system/*.read",
        token_url: Optional[str] = None,
        client_secret: Optional[str] = None,
        client_secret_post: bool = False,
        bearer: Optional[str] = None,
        headers: Union[None, Mapping[str, str], Sequence[str]] = None,
        ca_cert: Union[None, str, "os.PathLike[str]"] = None,
        min_wait: float = 1.0,
        max_poll_wait: float = 120.0,
        retries: int = 8,
    ) -> None:
        pairs: List[Tuple[str, str]] = []
        if isinstance(headers, Mapping):
            pairs = [(str(k), str(v)) for k, v in headers.items()]
        elif headers:
            for h in headers:
                if ":" not in h:
                    raise OptionsError(f"header {h!r}: expected 'Name: value'")
                k, v = h.split(":", 1)
                pairs.append((k.strip(), v.strip()))
        self._native = _native.Client(
            fhir_url,
            client_id=client_id,
            private_key=os.fspath(private_key) if private_key is not None else None,
            kid=kid,
            alg=alg,
            scope=scope,
            token_url=token_url,
            client_secret=client_secret,
            client_secret_post=client_secret_post,
            bearer=bearer,
            headers=pairs,
            ca_cert=os.fspath(ca_cert) if ca_cert is not None else None,
            min_wait=min_wait,
            max_poll_wait=max_poll_wait,
            retries=retries,
        )
        # Fail early on a bad URL or an unusable key, as the CLI does.
        if fhir_url is not None:
            self._native.check()

    def __repr__(self) -> str:
        return repr(self._native)

    def export(
        self,
        out_dir: Union[str, "os.PathLike[str]"],
        *,
        types: Union[None, str, Iterable[str]] = None,
        level: str = "patient",
        group: Optional[str] = None,
        patients: Union[None, str, Iterable[str]] = None,
        since: Optional[str] = None,
        until: Optional[str] = None,
        elements: Union[None, str, Iterable[str]] = None,
        type_filters: Union[None, str, Iterable[str]] = None,
        include_associated_data: Union[None, str, Iterable[str]] = None,
        output_format: str = "application/fhir+ndjson",
        params: Optional[Mapping[str, str]] = None,
        post: bool = False,
        param_style: str = "comma",
        lenient: bool = False,
        allow_partial_manifests: bool = False,
        parallel: int = 4,
        max_wait: Optional[float] = None,
        resume: bool = False,
        delete_on_success: bool = False,
        max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
        on_event: Optional[Callable[[Dict[str, Any]], Any]] = None,
        progress: ProgressArg = True,
    ) -> ExportResult:
        """Runs a Bulk Data export into ``out_dir`` and returns what it produced.

        ``level``: ``"patient"`` (``Patient/$export``), ``"system"`` (``/$export``) or
        ``"group"`` with ``group=ID``. ``types`` (``_type``), ``since``/``until``,
        ``elements``, ``type_filters`` (``_typeFilter``), ``patients`` (implies POST),
        ``include_associated_data``, ``output_format``, ``params`` (other kick-off
        parameters), ``post``, ``param_style`` (``"comma"``/``"repeat"``), ``lenient``,
        ``allow_partial_manifests``: the kick-off. ``parallel`` downloads at a time;
        ``max_wait`` seconds before giving up (resumable). ``resume=True`` continues the job
        recorded in ``out_dir`` (polling, skipping complete files, resuming partial ones).

        ``on_event`` receives each event as a dict (``event``: ``kicked_off``, ``progress``,
        ``retrying``, ``manifest``, ``file_started``, ``bytes``, ``file_done``,
        ``type_complete``, ...), on the calling thread. Ctrl-C (KeyboardInterrupt), or an
        exception from ``on_event``, stops the export where it is; ``out_dir`` stays
        resumable. Raises :class:`~flatfhir.errors.AuthError`,
        :class:`~flatfhir.errors.ServerError` (with the server's OperationOutcome text),
        :class:`~flatfhir.errors.HttpError`, :class:`~flatfhir.errors.JobError`."""
        if group is not None:
            level = "group"
        if level == "group" and group is None:
            raise OptionsError("level='group' needs group=ID")
        args = {
            "level": level,
            "group": group,
            "types": _list(types),
            "since": since,
            "until": until,
            "elements": _list(elements),
            "type_filters": _list(type_filters) if not isinstance(type_filters, str) else [type_filters],
            "patients": _list(patients),
            "include_associated_data": _list(include_associated_data),
            "output_format": output_format,
            "params": [(str(k), str(v)) for k, v in (params or {}).items()],
            "post": post,
            "param_style": param_style,
            "lenient": lenient,
            "allow_partial_manifests": allow_partial_manifests,
            "parallel": parallel,
            "max_wait": max_wait,
            "resume": resume,
            "delete_on_success": delete_on_success,
            "max_line_bytes": max_line_bytes,
        }
        out = os.fspath(out_dir)
        events = _Events(on_event, progress)
        try:
            text = self._native.export(out, args, events)
        finally:
            events.close()
        s = json.loads(text)
        manifest: Dict[str, Any] = {}
        mpath = os.path.join(out, "manifest.json")
        if os.path.exists(mpath):
            with open(mpath, encoding="utf-8") as f:
                manifest = json.load(f)
        return ExportResult(
            out_dir=out,
            status_url=s["status_url"],
            transaction_time=s.get("transaction_time"),
            files=s["files"],
            resources=s["resources"],
            bytes=s["bytes"],
            types=dict(s["types"]),
            failed=[tuple(x) for x in s["failed"]],
            errors=list(s["issues"]),
            seconds=s["seconds"],
            deleted_on_server=s["deleted_on_server"],
            manifest=manifest,
        )

    def resume(self, out_dir: Union[str, "os.PathLike[str]"], **kwargs: Any) -> ExportResult:
        """Continues the export recorded in ``out_dir`` (``export(out_dir, resume=True)``)."""
        return self.export(out_dir, resume=True, **kwargs)

    def status(self, out_dir: Union[str, "os.PathLike[str]"], *, poll: bool = True) -> ExportStatus:
        """The job recorded in ``out_dir`` and, with ``poll`` while the server is still
        working, one status poll."""
        job_text, server = self._native.status(os.fspath(out_dir), poll)
        job = json.loads(job_text)
        return ExportStatus(
            phase=str(job.get("phase")),
            fhir_url=job.get("fhir_url", ""),
            status_url=job.get("status_url"),
            transaction_time=job.get("transaction_time"),
            files=[{k: f[k] for k in ("path", "resource_type", "item", "count", "state", "resources",
                                      "bytes", "reason") if k in f}
                   for f in job.get("files", [])],
            server=json.loads(server) if server else None,
        )

    def cancel(self, out_dir: Union[str, "os.PathLike[str]"]) -> None:
        """DELETEs the export recorded in ``out_dir`` on the server and marks it cancelled."""
        self._native.cancel(os.fspath(out_dir))


def export_to_pandas(
    fhir_url: str,
    *,
    types: Union[None, str, Iterable[str]] = None,
    columns: Optional[ColumnsArg] = None,
    out_dir: Union[None, str, "os.PathLike[str]"] = None,
    progress: ProgressArg = True,
    on_event: Optional[Callable[[Dict[str, Any]], Any]] = None,
    read_options: Optional[Mapping[str, Any]] = None,
    export_options: Optional[Mapping[str, Any]] = None,
    **client_options: Any,
) -> Dict[str, Any]:
    """The notebook's whole job in one call: export ``types`` from the server, then return a
    dict of pandas DataFrames, one per type, either fully flattened (flatten_json columns) or,
    with ``columns={"Patient": {"id": "identifier[0].value", "gender": "gender"}}``, with those
    FHIRPath columns.

    ``client_options`` are :class:`Client`'s (``client_id``, ``private_key``, ...);
    ``export_options`` go to :meth:`Client.export` and ``read_options`` to
    :func:`flatfhir.read`. With ``out_dir``, the export stays there and a second call after an
    interruption resumes it; without, it goes to a temporary directory removed afterwards.
    """
    client = Client(fhir_url, **client_options)
    tmp = None
    if out_dir is None:
        tmp = tempfile.mkdtemp(prefix="flatfhir-export-")
        out = tmp
    else:
        out = os.fspath(out_dir)
    try:
        resume = os.path.exists(os.path.join(out, JOB_FILE))
        wanted = _list(types) or (list(columns) if columns else [])
        result = client.export(out, types=wanted or None, resume=resume, progress=progress,
                               on_event=on_event, **dict(export_options or {}))
        if columns is not None:
            return result.read(columns=columns).to_pandas()
        return result.read(progress=progress, **dict(read_options or {})).to_pandas()
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
