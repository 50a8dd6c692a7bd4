"""Scale-out: flatten one export on many workers and get exactly the single-machine table.

The input is cut into :class:`Shard`\\ s (:func:`plan_shards`: byte ranges of plain NDJSON cut
at line boundaries by the Hadoop rule, gzip files whole). Each shard's union schema
(:func:`shard_schema`) is a :class:`SchemaDocument`; :func:`merge_schemas` merges them in any
order or tree into the whole input's schema; :func:`read_shard` then flattens a shard against
it. The shards' tables, concatenated in shard order, are the table ``flatfhir convert`` writes.
Shards and documents are plain JSON text, so they pickle and travel to Spark or Dask workers.
See ``docs/scale-out.md``.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Optional, Union

import pyarrow as pa

from . import _native
from ._engine import (
    DEFAULT_MAX_COLUMNS,
    DEFAULT_MAX_LINE_BYTES,
    DEFAULT_MEMORY_BUDGET,
    PathArg,
    Rejected,
    _flatten_args,
    _one_type,
    _paths,
    _schema_text,
    plan,
)
from .errors import OptionsError

#: Default shard size: 128 MiB (Hadoop's block size).
DEFAULT_SHARD_BYTES = 128 * 1024 * 1024


class SchemaDocument:
    """A union schema document (format ``flatfhir-schema``, version 1): per resource type its
    columns with JSON path, value kinds, non-null count and first-seen position. What
    ``flatfhir schema --save`` writes and ``flatfhir convert --schema`` reads."""

    def __init__(self, doc: Union[str, Dict[str, Any], "os.PathLike[str]"]) -> None:
        text = _schema_text(doc)
        assert text is not None
        # Checked (format, version, paths) by the engine; merging one document is a no-op.
        self.json: str = _native.merge_schemas([text])

    @classmethod
    def load(cls, path: Union[str, "os.PathLike[str]"]) -> "SchemaDocument":
        with open(path, encoding="utf-8") as f:
            return cls(f.read())

    def save(self, path: Union[str, "os.PathLike[str]"]) -> None:
        """Writes the document atomically (a temporary file in the same directory, renamed)."""
        path = os.fspath(path)
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path) or ".", prefix=".schema-", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(self.json)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise

    def to_dict(self) -> Dict[str, Any]:
        d: Dict[str, Any] = json.loads(self.json)
        return d

    @property
    def types(self) -> List[str]:
        return list(self.to_dict()["types"])

    def columns(self, resource_type: str) -> List[Dict[str, Any]]:
        """The columns of one type, in output order."""
        cols: List[Dict[str, Any]] = self.to_dict()["types"][resource_type]["columns"]
        return cols

    def rows(self, resource_type: str) -> int:
        return int(self.to_dict()["types"][resource_type]["rows"])

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SchemaDocument) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        return f"SchemaDocument(types={self.types})"


@dataclass(frozen=True)
class Shard:
    """A piece of one resource type's input, read by one task. ``end`` is ``None`` for a
    whole file (gzip, or a file smaller than the shard size)."""

    resource_type: str
    path: str
    file_index: int
    start: int
    end: Optional[int]
    #: The shard as the engine reads it (JSON text).
    spec: str = field(repr=False)

    @classmethod
    def from_spec(cls, spec: str) -> "Shard":
        d = json.loads(spec)
        return cls(d["resource_type"], d["path"], d["file_index"], d["start"], d["end"], spec)


@dataclass
class ShardSchema:
    """One shard's schema and the lines it left out (``on_error="skip"``)."""

    schema: SchemaDocument
    rejected: List[Rejected]


@dataclass
class ShardTable:
    """One shard flattened against the whole input's schema."""

    table: pa.Table
    rejected: List[Rejected]


def plan_shards(
    paths: PathArg,
    resource_type: Optional[str] = None,
    *,
    shard_bytes: int = DEFAULT_SHARD_BYTES,
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
) -> List[Shard]:
    """The shards of one resource type (may be left out when the inputs hold one), in input
    order: each plain file larger than ``shard_bytes`` in ranges of that size, others whole."""
    if shard_bytes < 1:
        raise OptionsError(f"shard_bytes={shard_bytes}: expected at least 1")
    p = plan(paths, max_line_bytes=max_line_bytes)
    rt = _one_type(p.groups, resource_type)
    flat = _flatten_args("_", (), "float", "fail", None, DEFAULT_MAX_COLUMNS, max_line_bytes,
                         DEFAULT_MEMORY_BUDGET, None)
    return [Shard.from_spec(s) for s in _native.plan_shards(_paths(paths), rt, shard_bytes, flat)]


def _flat(sep: str, exclude: Union[str, Iterable[str]], decimals: str, on_error: str,
          max_columns: int, max_line_bytes: int, schema: Any = None) -> Dict[str, Any]:
    return _flatten_args(sep, exclude, decimals, on_error, 1, max_columns, max_line_bytes,
                         DEFAULT_MEMORY_BUDGET, None, schema)


def _rejected(rt: str, got: List[Any]) -> List[Rejected]:
    return [Rejected(rt, f, line, reason) for f, line, reason in got]


def _spec(shard: Union[Shard, str]) -> Shard:
    return Shard.from_spec(shard) if isinstance(shard, str) else shard


def shard_schema(
    shard: Union[Shard, str],
    *,
    sep: str = "_",
    exclude: Union[str, Iterable[str]] = (),
    decimals: str = "float",
    on_error: str = "fail",
    max_columns: int = DEFAULT_MAX_COLUMNS,
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
) -> ShardSchema:
    """Reads one shard and returns its union schema (and, with ``on_error="skip"``, the lines
    left out). Line numbers are the file's own for a shard that starts at byte 0; otherwise
    they count from the shard's start, and the reason says from which byte."""
    s = _spec(shard)
    doc, rejected = _native.shard_schema(
        s.spec, _flat(sep, exclude, decimals, on_error, max_columns, max_line_bytes))
    return ShardSchema(SchemaDocument(doc), _rejected(s.resource_type, rejected))


def merge_schemas(docs: Iterable[Union[SchemaDocument, ShardSchema, str, Dict[str, Any]]]) -> SchemaDocument:
    """Merges shard schemas (in any order or grouping: the merge is associative and
    commutative) into the schema of their union."""
    texts = []
    for d in docs:
        if isinstance(d, ShardSchema):
            d = d.schema
        text = _schema_text(d)
        assert text is not None
        texts.append(text)
    if not texts:
        raise OptionsError("merge_schemas: no documents given")
    return SchemaDocument(_native.merge_schemas(texts))


def read_shard(
    shard: Union[Shard, str],
    schema: Any,
    *,
    sep: str = "_",
    exclude: Union[str, Iterable[str]] = (),
    decimals: str = "float",
    on_error: str = "fail",
    max_columns: int = DEFAULT_MAX_COLUMNS,
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
) -> ShardTable:
    """Flattens one shard against ``schema`` (the merged :class:`SchemaDocument` of the whole
    input): a table with exactly its columns and types. A value that does not fit raises
    :class:`~flatfhir.errors.BadLineError` naming file and line. :func:`iter_shard` gives the
    same batches one at a time, in bounded memory."""
    it = iter_shard(shard, schema, sep=sep, exclude=exclude, decimals=decimals,
                    on_error=on_error, max_columns=max_columns, max_line_bytes=max_line_bytes)
    table = pa.Table.from_batches(list(it), schema=it.schema)
    return ShardTable(table, it.rejected or [])


class ShardBatches:
    """One shard flattened against the whole input's schema, as an iterator of
    ``pyarrow.RecordBatch`` (one per chunk of up to 4,096 lines or 4 MiB), from
    :func:`iter_shard`. A Rust thread flattens the next chunks (without the GIL) while the
    caller handles the current one, at most ``bound`` batches ahead, so memory does not grow
    with the shard. Once the iterator is exhausted, ``rejected`` lists the lines
    ``on_error="skip"`` left out (``None`` before)."""

    def __init__(self, shard: Shard, flatten: Dict[str, Any], bound: int) -> None:
        self.resource_type = shard.resource_type
        self._reader = _native.ShardReader(shard.spec, flatten, bound)
        #: The shard's Arrow schema (the document's columns and types).
        self.schema: pa.Schema = self._reader.schema
        self.rejected: Optional[List[Rejected]] = None

    def __iter__(self) -> "ShardBatches":
        return self

    def __next__(self) -> pa.RecordBatch:
        b = self._reader.next_batch()
        if b is None:
            if self.rejected is None:
                self.rejected = _rejected(self.resource_type, self._reader.rejected() or [])
            raise StopIteration
        return b


def iter_shard(
    shard: Union[Shard, str],
    schema: Any,
    *,
    sep: str = "_",
    exclude: Union[str, Iterable[str]] = (),
    decimals: str = "float",
    on_error: str = "fail",
    max_columns: int = DEFAULT_MAX_COLUMNS,
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
    bound: int = 2,
) -> ShardBatches:
    """:func:`read_shard` as a stream of record batches (see :class:`ShardBatches`): what the
    Spark data source yields, so a task holds a few chunks, not its whole shard."""
    if schema is None:
        raise OptionsError("read_shard needs the schema of the whole input (merge_schemas)")
    return ShardBatches(_spec(shard), _flat(sep, exclude, decimals, on_error, max_columns,
                                            max_line_bytes, schema), bound)


@dataclass
class ShardWrite:
    """What :func:`write_shard` wrote: rows, and the lines ``on_error="skip"`` left out."""

    rows: int
    rejected: List[Rejected]


def write_shard(
    shard: Union[Shard, str],
    schema: Any,
    path: Union[str, "os.PathLike[str]"],
    *,
    format: str = "parquet",
    compression: str = "zstd",
    row_group_rows: int = 128 * 1024,
    sep: str = "_",
    exclude: Union[str, Iterable[str]] = (),
    decimals: str = "float",
    on_error: str = "fail",
    max_columns: int = DEFAULT_MAX_COLUMNS,
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
) -> ShardWrite:
    """Flattens one shard against ``schema`` (the merged :class:`SchemaDocument` of the whole
    input) and writes it to ``path`` with the CLI's table writer (``format`` parquet or arrow,
    ``compression``, row groups of ``row_group_rows``), atomically: under a temporary name in
    the same folder, renamed when whole; nothing is left on an error. The file holds exactly
    :func:`read_shard`'s table. All of it runs in Rust without the GIL: what each task of
    :func:`flatfhir.spark.write_parquet` runs."""
    if schema is None:
        raise OptionsError("write_shard needs the schema of the whole input (merge_schemas)")
    s = _spec(shard)
    rows, rejected = _native.write_shard(
        s.spec, _flat(sep, exclude, decimals, on_error, max_columns, max_line_bytes, schema),
        {"format": format, "compression": compression, "row_group_rows": row_group_rows},
        os.fspath(path))
    return ShardWrite(rows, _rejected(s.resource_type, rejected))


def read_texts(
    texts: Iterable[Optional[str]],
    resource_type: str,
    schema: Any = None,
    *,
    source: str = "<texts>",
    part: int = 0,
    first_line: int = 1,
    sep: str = "_",
    exclude: Union[str, Iterable[str]] = (),
    decimals: str = "float",
    on_error: str = "fail",
    max_columns: int = DEFAULT_MAX_COLUMNS,
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
) -> Union[ShardSchema, ShardTable]:
    """Flattens NDJSON texts already in memory (e.g. a DataFrame column), one resource each
    (``None`` or blank: no row). Without ``schema``, returns their :class:`ShardSchema`; with
    it, their :class:`ShardTable`. Errors name ``source`` and the line ``first_line + i`` of
    ``texts[i]``; ``part`` orders columns first seen in different calls (as a file index)."""
    flat = _flat(sep, exclude, decimals, on_error, max_columns, max_line_bytes, schema)
    got, batches, rejected = _native.read_texts(list(texts), resource_type, source, part,
                                                first_line, flat)
    rej = _rejected(resource_type, rejected)
    if schema is None:
        return ShardSchema(SchemaDocument(got), rej)
    return ShardTable(pa.Table.from_batches(batches, schema=got), rej)


__all__ = [
    "DEFAULT_SHARD_BYTES",
    "SchemaDocument",
    "Shard",
    "ShardSchema",
    "ShardTable",
    "ShardWrite",
    "merge_schemas",
    "plan_shards",
    "read_shard",
    "read_texts",
    "shard_schema",
    "write_shard",
]
