"""Reading, converting and describing NDJSON with the flatfhir engine."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Union

import pyarrow as pa

from . import _native
from ._progress import ProgressArg, Reporter
from .errors import InputError, OptionsError

PathArg = Union[str, "os.PathLike[str]", Sequence[Union[str, "os.PathLike[str]"]]]

#: Default longest accepted line, as the CLI's ``--max-line-bytes``.
DEFAULT_MAX_LINE_BYTES = 64 * 1024 * 1024
#: Default widest accepted schema, as the CLI's ``--max-columns``.
DEFAULT_MAX_COLUMNS = 20_000
#: Flattened data held in memory until the union schema is known (then spilled), as the
#: CLI's ``--memory-budget``.
DEFAULT_MEMORY_BUDGET = 64 * 1024 * 1024


def _path(p: Union[str, "os.PathLike[str]"]) -> str:
    """A path or URL as the native module takes it: ``file://`` URLs become local paths;
    object-store URLs (``s3://``, ``gs://``, ``az://``, ``abfss://``) stay as they are."""
    text = os.fspath(p)
    if text.startswith("file://"):
        from urllib.parse import urlparse
        from urllib.request import url2pathname

        u = urlparse(text)
        if u.netloc not in ("", "localhost"):
            raise OptionsError(f"{text}: a file:// URL names a local path (file:///abs/path)")
        return url2pathname(u.path)
    return text


def _paths(paths: PathArg) -> List[str]:
    if isinstance(paths, (str, os.PathLike)):
        return [_path(paths)]
    out = [_path(p) for p in paths]
    if not out:
        raise OptionsError("no input paths given")
    return out


def _types(types: Union[None, str, Iterable[str]]) -> List[str]:
    if types is None:
        return []
    if isinstance(types, str):
        return [t.strip() for t in types.split(",") if t.strip()]
    return list(types)


def _flatten_args(
    sep: str,
    exclude: Union[str, Iterable[str]],
    decimals: str,
    on_error: str,
    threads: Optional[int],
    max_columns: int,
    max_line_bytes: int,
    memory_budget: int,
    spill_dir: Optional[str],
    schema_doc: Any = None,
    bundles: str = "auto",
    resolve_references: bool = False,
    bundle_duplicates: str = "keep",
) -> Dict[str, Any]:
    if not sep:
        raise OptionsError("sep must not be empty")
    if decimals not in ("float", "exact"):
        raise OptionsError(f"decimals={decimals!r}: expected 'float' or 'exact'")
    if on_error not in ("fail", "skip"):
        raise OptionsError(f"on_error={on_error!r}: expected 'fail' or 'skip'")
    if bundles not in ("auto", "unpack", "keep"):
        raise OptionsError(f"bundles={bundles!r}: expected 'auto', 'unpack' or 'keep'")
    if bundle_duplicates not in ("keep", "first"):
        raise OptionsError(f"bundle_duplicates={bundle_duplicates!r}: expected 'keep' or 'first'")
    if threads is not None and threads < 1:
        raise OptionsError(f"threads={threads}: expected at least 1 (or None: one per core)")
    return {
        "sep": sep,
        "exclude": [exclude] if isinstance(exclude, str) else list(exclude),
        "decimals": decimals,
        "on_error": on_error,
        "threads": threads or 0,
        "max_columns": max_columns,
        "max_line_bytes": max_line_bytes,
        "memory_budget": memory_budget,
        "spill_dir": os.fspath(spill_dir) if spill_dir is not None else None,
        "schema": _schema_text(schema_doc),
        "bundles": bundles,
        "resolve_references": bool(resolve_references),
        "bundle_duplicates": bundle_duplicates,
    }


def _schema_text(doc: Any) -> Optional[str]:
    """A schema document as JSON text: a :class:`flatfhir.scale.SchemaDocument`, a dict, JSON
    text, or a path to a file written by ``flatfhir schema --save``."""
    if doc is None:
        return None
    if hasattr(doc, "json") and isinstance(doc.json, str):
        return doc.json
    if isinstance(doc, dict):
        return json.dumps(doc)
    if isinstance(doc, str) and doc.lstrip().startswith("{"):
        return doc
    if isinstance(doc, (str, os.PathLike)):
        with open(doc, encoding="utf-8") as f:
            return f.read()
    raise OptionsError(f"schema={doc!r}: expected a SchemaDocument, a dict, JSON text or a path")


@dataclass(frozen=True)
class Plan:
    """The inputs grouped by resource type (what :func:`plan` returns)."""

    #: Resource type → its files, in the order they are read.
    groups: Dict[str, List[str]]
    #: Files that are not NDJSON inputs (skipped, as the CLI does).
    skipped: List[str]
    #: Empty files.
    empty: List[str]
    #: What unpacking FHIR Bundles did (counts: ``files``, ``bundles``, ``resources``,
    #: ``bad_entries``, ``duplicates``, ``references_resolved``, ``references_unresolved``);
    #: ``None`` when no input was a Bundle.
    bundles: Optional[Dict[str, int]] = None


def plan(paths: PathArg, *, types: Union[None, str, Iterable[str]] = None,
         max_line_bytes: int = DEFAULT_MAX_LINE_BYTES, bundles: str = "auto",
         resolve_references: bool = False, bundle_duplicates: str = "keep") -> Plan:
    """Finds the inputs in ``paths`` (NDJSON files or directories, plain or gzip; ``error/``,
    ``deleted/`` and ``manifest.json`` are skipped; FHIR Bundle files as ``bundles`` says) and
    groups them by resource type. With ``types``, keeps only those and raises
    :class:`InputError` for a type with no input. A type's files name the Bundle files its
    resources were unpacked from."""
    flat = _flatten_args("_", (), "float", "fail", None, DEFAULT_MAX_COLUMNS, max_line_bytes,
                         DEFAULT_MEMORY_BUDGET, None, None, bundles, resolve_references,
                         bundle_duplicates)
    return _plan(paths, types, flat)[1]


def _plan(paths: PathArg, types: Union[None, str, Iterable[str]],
          flat: Dict[str, Any], leave_packed: bool = False) -> "tuple[Any, Plan]":
    """The native plan (which keeps unpacked Bundles alive while it is in use) and its
    description. With ``leave_packed``, inputs that are all Bundle files are not unpacked
    (``inputs.packed()``; the plan's groups are empty): :func:`convert` converts them as it
    unpacks them."""
    inputs = _native.plan(_paths(paths), flat, leave_packed)
    if inputs.packed():
        return inputs, Plan({}, inputs.skipped(), inputs.empty(), None)
    by_type = dict(inputs.groups())
    skipped, empty = inputs.skipped(), inputs.empty()
    wanted = _types(types)
    for t in wanted:
        if t not in by_type:
            raise InputError(
                f"types: no input of type {t} (found: {', '.join(by_type) or 'none'})",
                path=None, reason="no input of that type",
            )
    if wanted:
        by_type = {t: f for t, f in by_type.items() if t in wanted}
    if not by_type:
        raise InputError(f"no NDJSON input found in {', '.join(_paths(paths))}", path=None,
                         reason="no NDJSON input")
    return inputs, Plan(by_type, skipped, empty, inputs.bundles())


def _size(files: Iterable[str]) -> int:
    total = 0
    for f in files:
        try:
            total += os.path.getsize(f)
        except OSError:
            pass
    return total


@dataclass(frozen=True)
class Rejected:
    """A line left out with ``on_error="skip"``: where it was, why, and its text."""

    resource_type: str
    file: str
    line: int
    reason: str
    #: The line's bytes as text (invalid UTF-8 replaced).
    text: Optional[str] = None


def _rejected(resource_type: str, lines_file: Optional[str]) -> List[Rejected]:
    """The records of ``_rejected/<Type>.ndjson`` (the lines) and ``<Type>.errors.ndjson``
    (file, line, reason of each, in the same order)."""
    if not lines_file or not lines_file.endswith(".ndjson"):
        return []
    errors_file = lines_file[: -len(".ndjson")] + ".errors.ndjson"
    if not os.path.exists(errors_file):
        return []
    texts: List[Optional[str]] = []
    if os.path.exists(lines_file):
        with open(lines_file, "rb") as f:
            texts = [ln.rstrip(b"\r\n").decode("utf-8", "replace") for ln in f]
    out = []
    with open(errors_file, encoding="utf-8") as f:
        for i, ln in enumerate(f):
            r = json.loads(ln)
            out.append(Rejected(resource_type, r["file"], int(r["line"]), r["reason"],
                                texts[i] if i < len(texts) else None))
    return out


class Tables(Dict[str, pa.Table]):
    """A ``dict`` of resource type → ``pyarrow.Table`` (in type order), with what was left
    out beside it: ``rejected`` (lines refused with ``on_error="skip"``) and ``reports``
    (per type: rows, columns, input bytes, seconds)."""

    rejected: List[Rejected]
    reports: Dict[str, Dict[str, Any]]
    #: What unpacking FHIR Bundles did (see :class:`Plan`), or ``None``.
    bundles: Optional[Dict[str, int]]

    def __init__(self) -> None:
        super().__init__()
        self.rejected = []
        self.reports = {}
        self.bundles = None

    def to_pandas(self, **kwargs: Any) -> Dict[str, Any]:
        """Each table as a pandas DataFrame (``pyarrow.Table.to_pandas(**kwargs)``; small
        tables single-threaded unless ``use_threads`` is given, see :func:`to_pandas`)."""
        return {t: _table_to_pandas(tbl, kwargs) for t, tbl in self.items()}

    def to_polars(self) -> Dict[str, Any]:
        """Each table as a polars DataFrame (zero-copy where polars allows)."""
        import polars as pl

        return {t: pl.from_arrow(tbl) for t, tbl in self.items()}


class _Stream:
    """One resource type, read batch by batch from the engine."""

    def __init__(self, inputs: Any, resource_type: str, flat: Dict[str, Any],
                 bound: int, reporter: Reporter) -> None:
        self.resource_type = resource_type
        # A directory of our own only for `_rejected/` (on_error="skip"); the spill file is
        # an unlinked temporary file, made in the directory directly and only when needed.
        self._tmp: Optional[str] = None
        if flat["on_error"] == "skip":
            self._tmp = tempfile.mkdtemp(prefix="flatfhir-read-", dir=flat["spill_dir"])
        out_dir = self._tmp or flat["spill_dir"] or tempfile.gettempdir()
        self._reporter = reporter
        try:
            self._native = _native.TypeReader(inputs, resource_type, flat, out_dir, bound)
        except BaseException:
            self._remove_tmp()
            raise
        self.rejected: List[Rejected] = []
        self.report: Optional[Dict[str, Any]] = None

    @property
    def schema(self) -> pa.Schema:
        return self._native.schema(self._reporter.hook)

    def __iter__(self) -> Iterator[pa.RecordBatch]:
        try:
            while True:
                b = self._native.next_batch(self._reporter.hook)
                if b is None:
                    break
                yield b
            self.report = self._native.report()
            if self.report is not None:
                self.rejected = _rejected(self.resource_type, self.report.get("rejected_file"))
        finally:
            self.close()

    def table(self) -> pa.Table:
        """Every batch as one table (one Arrow stream from the native side), then closes."""
        try:
            t = self._native.read_all(self._reporter.hook)
            self.report = self._native.report()
            if self.report is not None:
                self.rejected = _rejected(self.resource_type, self.report.get("rejected_file"))
            return t
        finally:
            self.close()

    def close(self) -> None:
        self._native.close()
        self._remove_tmp()

    def _remove_tmp(self) -> None:
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)


def _one_type(groups: Mapping[str, List[str]], resource_type: Optional[str]) -> str:
    if resource_type is not None:
        if resource_type not in groups:
            raise InputError(
                f"no input of type {resource_type} (found: {', '.join(groups)})",
                path=None, reason="no input of that type",
            )
        return resource_type
    if len(groups) != 1:
        raise OptionsError(
            f"the inputs hold {len(groups)} resource types ({', '.join(groups)}); choose one with resource_type="
        )
    return next(iter(groups))


def read(
    paths: PathArg,
    *,
    types: Union[None, str, Iterable[str]] = None,
    sep: str = "_",
    exclude: Union[str, Iterable[str]] = (),
    decimals: str = "float",
    on_error: str = "fail",
    threads: Optional[int] = None,
    max_columns: int = DEFAULT_MAX_COLUMNS,
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    spill_dir: Optional[str] = None,
    schema: Any = None,
    bundles: str = "auto",
    resolve_references: bool = False,
    bundle_duplicates: str = "keep",
    columns: Optional[Mapping[str, Any]] = None,
    views: Any = None,
    progress: ProgressArg = True,
) -> Tables:
    """Reads NDJSON files or export directories into one ``pyarrow.Table`` per resource type:
    exactly the tables ``flatfhir convert`` writes (same columns, order, types and values).

    Options mirror the CLI's flags: ``types`` (``--types``), ``sep``, ``exclude`` (root keys
    to leave out, e.g. ``"text"``), ``decimals`` (``"float"`` or ``"exact"``), ``on_error``
    (``"fail"`` raises :class:`~flatfhir.errors.BadLineError` with file and line;
    ``"skip"`` leaves bad lines out and lists them in ``result.rejected``), ``threads``
    (``None``: one per core), ``max_columns``, ``max_line_bytes``,
    ``memory_budget`` and ``spill_dir`` (flattened data beyond the budget waits in an
    unlinked temporary file there; default: the system's temporary directory). ``schema``
    (a :class:`flatfhir.scale.SchemaDocument`, dict, JSON text or path of a document from
    ``flatfhir schema --save``) fixes the columns, order and types; a value that does not
    fit it raises :class:`~flatfhir.errors.BadLineError` with file and line.

    FHIR Bundles (``*.json`` / ``*.json.gz``, pretty or one line; one per NDJSON line with
    ``bundles="unpack"``) give their ``entry[].resource`` as if they were NDJSON lines, as
    the CLI does: ``bundles`` (``"auto"``, ``"unpack"`` or ``"keep"``, the CLI's
    ``--bundles``), ``resolve_references`` (rewrite ``urn:uuid:`` references to
    ``Type/id``) and ``bundle_duplicates`` (``"keep"`` or ``"first"``); the counts are in
    ``result.bundles``. A bad entry is named by its Bundle file, line and ``entry[i]``.

    With ``columns`` (``{"Patient": {"id": "identifier[0].value", "gender": "gender"}}``) or
    ``views`` (SQL on FHIR ViewDefinitions), returns those views' tables instead (see
    :func:`read_views`).

    Raises :class:`~flatfhir.errors.BadLineError`, :class:`~flatfhir.errors.InputError`,
    :class:`~flatfhir.errors.SchemaError`; KeyboardInterrupt stops the read.
    """
    if columns is not None or views is not None:
        from ._views import read_views

        return read_views(paths, columns=columns, views=views, max_line_bytes=max_line_bytes)
    flat = _flatten_args(sep, exclude, decimals, on_error, threads, max_columns, max_line_bytes,
                         memory_budget, spill_dir, schema, bundles, resolve_references,
                         bundle_duplicates)
    inputs, p = _plan(paths, types, flat)
    out = Tables()
    out.bundles = p.bundles
    total = 2 * sum(_size(f) for f in p.groups.values())
    types = list(p.groups)
    with Reporter(progress, total, "flatfhir") as rep:
        # Two types at a time: the next type's stream starts (its native worker begins its
        # pass) while this one is taken, so a small type's pass overlaps a large one's instead
        # of following it, and the cores are not left idle at each type's start and end.
        ahead: Dict[int, _Stream] = {}
        try:
            for i, rt in enumerate(types):
                s = ahead.pop(i, None) or _Stream(inputs, rt, flat, 16, rep)
                try:
                    if i + 1 < len(types):
                        ahead[i + 1] = _Stream(inputs, types[i + 1], flat, 16, rep)
                    rep.describe(rt)
                    out[rt] = s.table()
                finally:
                    s.close()  # also on KeyboardInterrupt: stops the worker, removes the temp dir
                out.rejected.extend(s.rejected)
                if s.report is not None:
                    out.reports[rt] = s.report
        finally:
            for s in ahead.values():  # a failure (or Ctrl-C) stops the type started ahead too
                s.close()
    return out


def read_pandas(paths: PathArg, **kwargs: Any) -> Dict[str, Any]:
    """:func:`read`, each table converted to a pandas DataFrame."""
    return read(paths, **kwargs).to_pandas()


def read_polars(paths: PathArg, **kwargs: Any) -> Dict[str, Any]:
    """:func:`read`, each table converted to a polars DataFrame."""
    return read(paths, **kwargs).to_polars()


#: Tables of fewer bytes are converted to pandas on the calling thread (``use_threads=False``)
#: unless the caller says otherwise: pyarrow's thread pool then costs more than it saves.
#: On the sample export's Observation table (16,315 rows, 42 columns, ~7 MB) the threaded
#: conversion took 130 thread switches per call, and under load its wall time was several
#: times its CPU time; the values are the same either way.
SMALL_TABLE_BYTES = 64 * 1024 * 1024


def _string_dtype(table: pa.Table, kwargs: Mapping[str, Any]) -> Any:
    """The pandas dtype ``Table.to_pandas(**kwargs)`` gives the table's ``string`` columns
    when it is pandas' string dtype for all of them (pandas 3, or 2.3 with
    ``future.infer_string``; no ``types_mapper``, ``categories``, ``strings_to_categorical``
    or pandas metadata in the schema that could choose otherwise); else ``None``."""
    if (kwargs.get("types_mapper") is not None or kwargs.get("categories")
            or kwargs.get("strings_to_categorical") or table.schema.pandas_metadata is not None
            or not any(t == pa.string() for t in table.schema.types)):
        return None
    try:
        from pyarrow.pandas_compat import _pandas_api

        if not _pandas_api.uses_string_dtype():
            return None
        import numpy as np

        # What pyarrow.pandas_compat._get_extension_dtypes picks for such columns.
        return _pandas_api.pd.StringDtype(na_value=np.nan)
    except Exception:  # another pyarrow or pandas: leave it to Table.to_pandas
        return None


def _table_to_pandas(table: pa.Table, kwargs: Mapping[str, Any]) -> Any:
    # get_total_buffer_size: the buffers' sizes, summed without nbytes's walk over slices
    # (0.4 ms for the sample export's two tables).
    if "use_threads" not in kwargs and table.get_total_buffer_size() < SMALL_TABLE_BYTES:
        kwargs = {**kwargs, "use_threads": False}
    dtype = _string_dtype(table, kwargs)
    if dtype is not None:
        # pandas keeps strings as large_string and would cast each string column itself, one
        # Python-level call per column; the native module casts them all in one call (text
        # buffers shared), and the mapper gives them the dtype pandas would have given.
        large = pa.large_string()
        return _native.large_strings(table).to_pandas(
            types_mapper=lambda t: dtype if t == large else None, **kwargs)
    return table.to_pandas(**kwargs)


def to_pandas(tables: Union[pa.Table, Mapping[str, pa.Table]], **kwargs: Any) -> Any:
    """A table, or a dict of tables, as pandas DataFrames (``pyarrow.Table.to_pandas``, with
    ``kwargs`` passed on). Tables under :data:`SMALL_TABLE_BYTES` are converted on the
    calling thread unless ``use_threads`` is given."""
    if isinstance(tables, pa.Table):
        return _table_to_pandas(tables, kwargs)
    return {t: _table_to_pandas(tbl, kwargs) for t, tbl in tables.items()}


def to_polars(tables: Union[pa.Table, Mapping[str, pa.Table]]) -> Any:
    """A table, or a dict of tables, as polars DataFrames."""
    import polars as pl

    if isinstance(tables, pa.Table):
        return pl.from_arrow(tables)
    return {t: pl.from_arrow(tbl) for t, tbl in tables.items()}


def iter_batches(
    paths: PathArg,
    resource_type: Optional[str] = None,
    *,
    sep: str = "_",
    exclude: Union[str, Iterable[str]] = (),
    decimals: str = "float",
    on_error: str = "fail",
    threads: Optional[int] = None,
    max_columns: int = DEFAULT_MAX_COLUMNS,
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    spill_dir: Optional[str] = None,
    schema: Any = None,
    bundles: str = "auto",
    resolve_references: bool = False,
    bundle_duplicates: str = "keep",
    progress: ProgressArg = False,
) -> Iterator[pa.RecordBatch]:
    """Reads one resource type (``resource_type``; may be left out when the inputs hold only
    one) as ``pyarrow.RecordBatch``es, one per input chunk, in input order. The union schema
    needs the whole input, so the first batch comes after the pass over it; flattened data
    beyond ``memory_budget`` waits in a temporary file, and batches are made only as they
    are taken, so memory stays bounded for inputs larger than RAM. Concatenated, the batches
    are :func:`read`'s table. Options as for :func:`read`; rejected lines (with
    ``on_error="skip"``) are not returned here (use :func:`read` or :func:`convert`)."""
    return iter(batch_reader(paths, resource_type, sep=sep, exclude=exclude, decimals=decimals,
                             on_error=on_error, threads=threads, max_columns=max_columns,
                             max_line_bytes=max_line_bytes, memory_budget=memory_budget,
                             spill_dir=spill_dir, schema=schema, bundles=bundles,
                             resolve_references=resolve_references,
                             bundle_duplicates=bundle_duplicates, progress=progress))


def batch_reader(
    paths: PathArg,
    resource_type: Optional[str] = None,
    *,
    sep: str = "_",
    exclude: Union[str, Iterable[str]] = (),
    decimals: str = "float",
    on_error: str = "fail",
    threads: Optional[int] = None,
    max_columns: int = DEFAULT_MAX_COLUMNS,
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    spill_dir: Optional[str] = None,
    schema: Any = None,
    bundles: str = "auto",
    resolve_references: bool = False,
    bundle_duplicates: str = "keep",
    progress: ProgressArg = False,
) -> pa.RecordBatchReader:
    """:func:`iter_batches` as a ``pyarrow.RecordBatchReader``: it has
    ``__arrow_c_stream__``, so polars (``pl.from_arrow``), DuckDB and pandas take it as a
    stream. Waits for the pass over the input (for the schema) before it returns."""
    flat = _flatten_args(sep, exclude, decimals, on_error, threads, max_columns, max_line_bytes,
                         memory_budget, spill_dir, schema, bundles, resolve_references,
                         bundle_duplicates)
    inputs, p = _plan(paths, None, flat)
    rt = _one_type(p.groups, resource_type)
    rep = Reporter(progress, 2 * _size(p.groups[rt]), rt)
    s = _Stream(inputs, rt, flat, 2, rep)
    try:
        schema = s.schema
    except BaseException:
        s.close()
        rep.close()
        raise

    def gen() -> Iterator[pa.RecordBatch]:
        try:
            yield from s
        finally:
            rep.close()

    return pa.RecordBatchReader.from_batches(schema, gen())


@dataclass(frozen=True)
class TypeReport:
    """What converting one resource type did."""

    resource_type: str
    files: List[str]
    rows: int
    columns: int
    input_bytes: int
    #: The file written; ``None`` when there were no rows.
    output: Optional[str]
    output_bytes: int
    seconds: float
    rejected: int
    rejected_file: Optional[str]
    spilled_bytes: int


@dataclass
class ConvertResult:
    """What :func:`convert` did: a report per converted type, the rejected lines, and per
    failed type its exception."""

    types: List[TypeReport] = field(default_factory=list)
    rejected: List[Rejected] = field(default_factory=list)
    failed: Dict[str, BaseException] = field(default_factory=dict)
    #: What unpacking FHIR Bundles did (see :class:`Plan`), or ``None``.
    bundles: Optional[Dict[str, int]] = None

    @property
    def rows(self) -> int:
        return sum(t.rows for t in self.types)


def convert(
    paths: PathArg,
    out: Union[str, "os.PathLike[str]"],
    *,
    types: Union[None, str, Iterable[str]] = None,
    format: str = "parquet",
    compression: str = "zstd",
    row_group_rows: int = 128 * 1024,
    sep: str = "_",
    exclude: Union[str, Iterable[str]] = (),
    decimals: str = "float",
    on_error: str = "fail",
    threads: Optional[int] = None,
    max_columns: int = DEFAULT_MAX_COLUMNS,
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    spill_dir: Optional[str] = None,
    schema: Any = None,
    bundles: str = "auto",
    resolve_references: bool = False,
    bundle_duplicates: str = "keep",
    raise_on_error: bool = True,
    progress: ProgressArg = True,
) -> ConvertResult:
    """``flatfhir convert`` from Python: writes ``out/<Type>.parquet`` (or ``.arrow``) per
    resource type, each atomically, small types side by side. Options are the CLI's flags.
    Rejected lines (``on_error="skip"``) go to ``out/_rejected/`` and into
    ``result.rejected``. A type that fails writes nothing and the others go on; then, with
    ``raise_on_error`` (default), the first failure is raised with the whole result attached
    as its ``result`` attribute. Bundle options (``bundles``, ``resolve_references``,
    ``bundle_duplicates``) as for :func:`read`; the counts are in ``result.bundles``. The
    inputs may be object-store URLs; ``out`` is a local directory (for an object-store
    prefix, use the CLI: ``flatfhir convert ... --out s3://...``)."""
    out = _path(out)
    if "://" in out:
        raise OptionsError(f"{out}: flatfhir.convert writes to a local directory; to write "
                           "tables to object storage use the CLI (flatfhir convert --out URL)")
    flat = _flatten_args(sep, exclude, decimals, on_error, threads, max_columns, max_line_bytes,
                         memory_budget, spill_dir, schema, bundles, resolve_references,
                         bundle_duplicates)
    write = {"format": format, "compression": compression, "row_group_rows": row_group_rows}
    # Inputs that are all Bundle files convert as they are unpacked, every type at once (not
    # with ``types`` or ``schema``, which are checked against the types first).
    inputs, p = _plan(paths, types, flat, leave_packed=not _types(types) and schema is None)
    packed = inputs.packed()
    if packed:
        # The Bundles' bytes, counted as each file is unpacked.
        total = _size(packed)
    else:
        total = 2 * sum(_size(f) for f in p.groups.values())
    result = ConvertResult(bundles=p.bundles)
    with Reporter(progress, total, "flatfhir convert") as rep:
        got, unpacked = _native.convert(inputs, list(p.groups), out, flat, write, rep.hook)
    if unpacked is not None:
        result.bundles = unpacked
    if packed and not got:
        raise InputError(f"no NDJSON input found in {', '.join(_paths(paths))}: no Bundle "
                         "entry held a resource", path=None, reason="no NDJSON input")
    for rt, r in got:
        if isinstance(r, BaseException):
            result.failed[rt] = r
        else:
            tr = TypeReport(**r)
            result.types.append(tr)
            result.rejected.extend(_rejected(rt, tr.rejected_file))
    if raise_on_error and result.failed:
        first = next(iter(result.failed.values()))
        setattr(first, "result", result)
        raise first
    return result


@dataclass(frozen=True)
class SchemaColumn:
    """One column of a union schema."""

    name: str
    #: ``int64``, ``double``, ``bool`` or ``string``.
    type: str
    non_null: int
    #: ``file:line`` where the column first appeared.
    first_seen: str


@dataclass(frozen=True)
class TypeSchema:
    """The union schema of one resource type (what ``flatfhir schema`` prints)."""

    resource_type: str
    files: List[str]
    rows: int
    rejected: int
    columns: List[SchemaColumn]

    def to_pandas(self) -> Any:
        import pandas as pd

        return pd.DataFrame([c.__dict__ for c in self.columns])


def schema(
    paths: PathArg,
    *,
    types: Union[None, str, Iterable[str]] = None,
    sep: str = "_",
    exclude: Union[str, Iterable[str]] = (),
    decimals: str = "float",
    on_error: str = "fail",
    threads: Optional[int] = None,
    max_columns: int = DEFAULT_MAX_COLUMNS,
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
    bundles: str = "auto",
    resolve_references: bool = False,
    bundle_duplicates: str = "keep",
    progress: ProgressArg = True,
) -> Dict[str, TypeSchema]:
    """The union schema of each resource type: every column with its type, non-null count and
    where it was first seen (every resource is read; nothing is sampled). Bundle options as
    for :func:`read`; a column first seen in a Bundle is named by the Bundle file and line."""
    flat = _flatten_args(sep, exclude, decimals, on_error, threads, max_columns, max_line_bytes,
                         DEFAULT_MEMORY_BUDGET, None, None, bundles, resolve_references,
                         bundle_duplicates)
    inputs, p = _plan(paths, types, flat)
    total = sum(_size(f) for f in p.groups.values())
    with Reporter(progress, total, "flatfhir schema") as rep:
        got = _native.schema(inputs, list(p.groups), flat, rep.hook)
    out: Dict[str, TypeSchema] = {}
    for rt, r in got:
        if isinstance(r, BaseException):
            raise r
        files = r["files"]
        cols = [
            SchemaColumn(c["name"], c["data_type"], c["non_null"],
                         f"{files[c['first_seen']['file']]}:{c['first_seen']['line']}")
            for c in json.loads(r["columns_json"])
        ]
        out[rt] = TypeSchema(rt, files, r["rows"], r["rejected"], cols)
    return out
