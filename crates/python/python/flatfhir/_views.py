"""SQL on FHIR views and FHIRPath columns as tables."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from typing import Any, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import pyarrow as pa
import pyarrow.ipc

from . import _native
from ._engine import DEFAULT_MAX_LINE_BYTES, PathArg, Tables, _paths
from .errors import OptionsError

#: A ViewDefinition: a dict, its JSON text, or the path of a JSON file.
ViewArg = Union[Mapping[str, Any], str, "os.PathLike[str]"]
#: FHIRPath columns per resource type: ``{"Patient": {"id": "identifier[0].value"}}`` or
#: ``{"Patient": [("id", "identifier[0].value"), ...]}``.
ColumnsArg = Mapping[str, Union[Mapping[str, str], Sequence[Tuple[str, str]]]]


def _definition(v: ViewArg, i: int) -> Tuple[str, str]:
    if isinstance(v, Mapping):
        return json.dumps(v), f"view{i}"
    s = os.fspath(v)
    if isinstance(v, str) and s.lstrip().startswith("{"):
        return s, f"view{i}"
    with open(s, encoding="utf-8") as f:
        text = f.read()
    stem = os.path.basename(s)
    stem = stem[: -len(".json")] if stem.endswith(".json") else stem
    stem = stem[: -len(".view")] if stem.endswith(".view") else stem
    return text, stem


def _columns(columns: ColumnsArg) -> List[Tuple[str, List[Tuple[str, str]]]]:
    out = []
    for rt, cols in columns.items():
        pairs = list(cols.items()) if isinstance(cols, Mapping) else [tuple(c) for c in cols]
        for p in pairs:
            if len(p) != 2 or not all(isinstance(x, str) for x in p):
                raise OptionsError(f"columns[{rt!r}]: expected name → FHIRPath pairs, got {p!r}")
        out.append((rt, [(n, path) for n, path in pairs]))
    return out


def read_views(
    paths: PathArg,
    *,
    columns: Optional[ColumnsArg] = None,
    views: Union[None, ViewArg, Iterable[ViewArg]] = None,
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
) -> Tables:
    """Runs views over NDJSON inputs and returns one ``pyarrow.Table`` per view, keyed by the
    view's name: the tables ``flatfhir convert --view``/``--column`` writes.

    ``columns`` is the notebook's short form: per resource type, column name → FHIRPath
    (``{"Patient": {"id": "identifier[0].value", "gender": "gender"}}``); each type makes a
    view named after it. ``views`` is one ViewDefinition or a list of them, each a dict, JSON
    text or a path (named by its ``name``, else the file's stem). Raises
    :class:`~flatfhir.errors.ViewError` for an invalid view or an expression that fails on a
    resource."""
    defs: List[Tuple[str, str]] = []
    if views is not None:
        many = views if isinstance(views, (list, tuple)) else [views]
        defs = [_definition(v, i) for i, v in enumerate(many)]
    cols = _columns(columns) if columns is not None else []
    if not defs and not cols:
        raise OptionsError("give columns= or views=")
    tmp = tempfile.mkdtemp(prefix="flatfhir-views-")
    out = Tables()
    try:
        got = _native.run_views(_paths(paths), defs, cols, tmp, max_line_bytes)
        for name, path, resources, rows in got:
            # The file is memory-mapped: the table's buffers are the file's pages, which stay
            # readable after the file is removed.
            with pa.memory_map(path) as src:
                out[name] = pa.ipc.open_file(src).read_all()
            out.reports[name] = {"view": name, "resources": resources, "rows": rows}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out
