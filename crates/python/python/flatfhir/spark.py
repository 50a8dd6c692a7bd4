"""flatfhir as a PySpark (4.x) Python Data Source: each shard of the input is one Spark
partition, flattened in Rust on the executor and handed over as Arrow record batches.

.. code-block:: python

    from flatfhir.spark import register, infer_schema
    register(spark)
    doc = infer_schema(spark, "export/", "Observation")          # a Spark job over the shards
    df = (spark.read.format("flatfhir")
          .option("resourceType", "Observation")
          .option("schemaJson", doc.json)                         # or .option("schema", "s.json")
          .load("export/"))

Without ``schema``/``schemaJson`` the data source computes the schema itself, shard after
shard in one process (Spark calls a data source's ``schema()`` outside any job): fine for an
export one machine reads in seconds; for larger ones run :func:`infer_schema` (or
``flatfhir schema --save``) first. See ``docs/scale-out.md``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Mapping, Optional, Tuple

import pyarrow as pa
from pyspark.sql.datasource import DataSource, DataSourceReader, InputPartition
from pyspark.sql.types import (
    BooleanType,
    DataType,
    DoubleType,
    LongType,
    StringType,
    StructField,
    StructType,
)

from . import scale
from ._engine import Rejected
from .spark_types import arrow_schema
from .errors import OptionsError

_TYPES: Dict[pa.DataType, DataType] = {
    pa.int64(): LongType(),
    pa.float64(): DoubleType(),
    pa.bool_(): BooleanType(),
    pa.string(): StringType(),
}


def spark_schema(schema: pa.Schema) -> StructType:
    """The Spark schema of a flattened table's Arrow schema (all columns nullable)."""
    return StructType([StructField(f.name, _TYPES[f.type], True) for f in schema])


def _flatten_options(options: Mapping[str, str]) -> Dict[str, Any]:
    o = {k.lower(): v for k, v in options.items()}
    known = {"resourcetype", "path", "paths", "sep", "exclude", "decimals", "on_error", "onerror",
             "shardbytes", "schema", "schemajson", "maxcolumns", "maxlinebytes", "rejected"}
    unknown = sorted(set(o) - known)
    if unknown:
        raise OptionsError(f"flatfhir data source: unknown option(s) {', '.join(unknown)}")
    out: Dict[str, Any] = {
        "sep": o.get("sep", "_"),
        "exclude": [k for k in o.get("exclude", "").split(",") if k],
        "decimals": o.get("decimals", "float"),
        "on_error": o.get("on_error", o.get("onerror", "fail")),
    }
    if "maxcolumns" in o:
        out["max_columns"] = int(o["maxcolumns"])
    if "maxlinebytes" in o:
        out["max_line_bytes"] = int(o["maxlinebytes"])
    return out


def _paths(options: Mapping[str, str]) -> List[str]:
    o = {k.lower(): v for k, v in options.items()}
    if "paths" in o:
        return list(json.loads(o["paths"]))
    if "path" in o:
        return [o["path"]]
    raise OptionsError("flatfhir data source: no path given (load(path))")


class ShardPartition(InputPartition):
    """One shard (its JSON spec)."""

    def __init__(self, spec: str) -> None:
        super().__init__(spec)
        self.spec = spec


def _schema_doc(options: Mapping[str, str], shards: List[scale.Shard],
                flat: Dict[str, Any]) -> scale.SchemaDocument:
    o = {k.lower(): v for k, v in options.items()}
    if "schemajson" in o:
        return scale.SchemaDocument(o["schemajson"])
    if "schema" in o:
        return scale.SchemaDocument.load(o["schema"])
    return scale.merge_schemas(scale.shard_schema(s, **flat) for s in shards)


class FlatfhirDataSource(DataSource):
    """``spark.read.format("flatfhir")``: options ``resourceType`` (needed when the input
    holds several types), ``schema`` (path of a schema document) or ``schemaJson`` (its
    text), ``shardBytes`` (default 128 MiB), ``sep``, ``exclude`` (comma-separated root keys),
    ``decimals`` (float/exact), ``on_error`` (fail/skip), ``maxColumns``, ``maxLineBytes``,
    ``rejected`` (a folder for the lines ``on_error=skip`` leaves out: one NDJSON file of
    ``{"file", "line", "reason"}`` per shard that has any)."""

    @classmethod
    def name(cls) -> str:
        return "flatfhir"

    def _plan(self) -> List[scale.Shard]:
        o = {k.lower(): v for k, v in self.options.items()}
        shard_bytes = int(o.get("shardbytes", scale.DEFAULT_SHARD_BYTES))
        return scale.plan_shards(_paths(self.options), o.get("resourcetype"),
                                 shard_bytes=shard_bytes)

    def _doc(self, shards: List[scale.Shard]) -> str:
        # Spark pickles this instance after schema() and calls reader() on the copy: keeping
        # the document spares a second schema pass over the whole input when no schema was
        # given.
        doc = getattr(self, "_doc_json", None)
        if doc is None:
            doc = _schema_doc(self.options, shards, _flatten_options(self.options)).json
            self._doc_json = doc
        return doc

    def schema(self) -> StructType:
        shards = self._plan()
        flat = _flatten_options(self.options)
        doc = scale.SchemaDocument(self._doc(shards))
        rt = shards[0].resource_type if shards else self.options.get("resourceType", "")
        return spark_schema(arrow_schema(doc, rt, flat["decimals"]))

    def reader(self, schema: StructType) -> "FlatfhirReader":
        shards = self._plan()
        return FlatfhirReader(self.options, shards, self._doc(shards))


class FlatfhirReader(DataSourceReader):
    def __init__(self, options: Mapping[str, str], shards: List[scale.Shard], doc: str) -> None:
        self.options = dict(options)
        self.shards = [s.spec for s in shards]
        self.doc = doc

    def partitions(self) -> List[InputPartition]:
        return [ShardPartition(s) for s in self.shards]

    def read(self, partition: InputPartition) -> Iterator[pa.RecordBatch]:
        # Batches stream out as Rust flattens them (one per chunk of lines): the task holds a
        # few chunks, not its whole shard, and the JVM works on a batch while the next one is
        # flattened.
        spec = partition.spec  # type: ignore[attr-defined]
        batches = scale.iter_shard(spec, self.doc, **_flatten_options(self.options))
        yield from batches
        where = {k.lower(): v for k, v in self.options.items()}.get("rejected")
        if batches.rejected and where:
            _write_rejected(where, scale.Shard.from_spec(spec), batches.rejected)


def _write_rejected(folder: str, shard: scale.Shard, rejected: List[Rejected]) -> None:
    """One NDJSON file per shard that left lines out (``{"file", "line", "reason"}`` a line),
    written under a temporary name and renamed, so a reader never sees half a file; a retried
    task replaces its own file."""
    os.makedirs(folder, exist_ok=True)
    name = f"{shard.resource_type}-{shard.file_index:05d}-{shard.start:015d}.ndjson"
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            for r in rejected:
                f.write(json.dumps({"file": r.file, "line": r.line, "reason": r.reason}) + "\n")
        os.replace(tmp, os.path.join(folder, name))
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def register(spark: Any) -> None:
    """Registers the ``flatfhir`` format with a SparkSession."""
    spark.dataSource.register(FlatfhirDataSource)


def infer_schema(spark: Any, paths: Any, resource_type: Optional[str] = None, *,
                 shard_bytes: int = scale.DEFAULT_SHARD_BYTES, **flatten: Any) -> scale.SchemaDocument:
    """The union schema as a Spark job: one task per shard computes its schema, the driver
    merges them (the merge is associative and commutative, so the order tasks finish in does
    not matter). Equals ``flatfhir schema --save`` up to where columns were first seen."""
    shards = scale.plan_shards(paths, resource_type, shard_bytes=shard_bytes)
    specs = [s.spec for s in shards]

    def one(spec: str) -> str:
        from flatfhir import scale as sc

        return sc.shard_schema(spec, **flatten).schema.json

    docs = spark.sparkContext.parallelize(specs, max(1, len(specs))).map(one).collect()
    return scale.merge_schemas(docs)


def _texts_fn(column: str, resource_type: str, doc: Optional[str],
              flatten: Dict[str, Any]) -> Any:
    """The function mapInArrow runs per partition: each batch's texts, lines numbered on
    through the partition, the partition's id ordering first-seen columns."""

    def fn(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from pyspark import TaskContext

        from flatfhir import scale as sc

        ctx = TaskContext.get()
        part = ctx.partitionId() if ctx is not None else 0
        line = 1
        for b in batches:
            texts = b.column(column).to_pylist()
            got = sc.read_texts(texts, resource_type, doc, source=f"{column} of partition {part}",
                                part=part, first_line=line, **flatten)
            line += len(texts)
            if doc is None:
                yield pa.RecordBatch.from_pydict({"doc": [got.schema.json]})  # type: ignore[union-attr]
            else:
                yield from got.table.to_batches()  # type: ignore[union-attr]

    return fn


def column_schema(df: Any, resource_type: str, *, column: str = "value",
                  **flatten: Any) -> scale.SchemaDocument:
    """The union schema of NDJSON texts in a DataFrame column (e.g. ``spark.read.text``'s
    ``value``), one task per partition, merged on the driver. Columns first seen in different
    partitions are ordered by partition, then row."""
    fn = _texts_fn(column, resource_type, None, flatten)
    docs = [r["doc"] for r in df.select(column).mapInArrow(fn, "doc string").collect()]
    return scale.merge_schemas(docs)


def flatten_column(df: Any, resource_type: str, schema: Any = None, *, column: str = "value",
                   **flatten: Any) -> Any:
    """Flattens NDJSON texts in a DataFrame column with ``mapInArrow``: a DataFrame with the
    schema's columns (computed with :func:`column_schema` when not given). A value that does
    not fit the schema fails the task, naming the partition and its row."""
    doc = column_schema(df, resource_type, column=column, **flatten) if schema is None \
        else (schema if isinstance(schema, scale.SchemaDocument) else scale.SchemaDocument(schema))
    arrow = arrow_schema(doc, resource_type, flatten.get("decimals", "float"))
    fn = _texts_fn(column, resource_type, doc.json, flatten)
    return df.select(column).mapInArrow(fn, spark_schema(arrow))


@dataclass
class WriteResult:
    """What :func:`write_parquet` wrote: the part files (in shard order), rows written, and
    the lines ``on_error="skip"`` left out (also written to ``rejected`` when given)."""

    out: str
    files: List[str]
    rows: int
    rejected: List[Rejected]


def _local_out(where: Any) -> str:
    out: str = os.fspath(where)
    if out.startswith("file://"):
        out = out[len("file://"):]
    if "://" in out:
        raise OptionsError(
            f"{out}: flatfhir.spark.write_parquet writes to a local or shared filesystem path "
            "(every executor must see it); to write tables to object storage use the CLI "
            "(flatfhir convert ... --out s3://bucket/prefix/)")
    # Absolute: the executors' working directory need not be the driver's.
    return os.path.abspath(out)


def _write_part_fn(staging: str, doc: str, flatten: Dict[str, Any], compression: str,
                   row_group_rows: int, rejected_dir: Optional[str]) -> Any:
    """The function each task runs on ``(index, shard spec)``: flattens the shard and writes
    ``staging/part-NNNNN.parquet`` with the CLI's writer, all in Rust without the GIL
    (:func:`flatfhir.scale.write_shard`: under a temporary name, renamed when whole, so a
    retried attempt replaces it). Returns (index, rows, rejected)."""

    def one(item: Tuple[int, str]) -> Tuple[int, int, List[Tuple[str, int, str]]]:
        from flatfhir import scale as sc
        from flatfhir.spark import _write_rejected

        index, spec = item
        got = sc.write_shard(spec, doc, os.path.join(staging, f"part-{index:05d}.parquet"),
                             compression=compression, row_group_rows=row_group_rows, **flatten)
        if got.rejected and rejected_dir:
            _write_rejected(rejected_dir, sc.Shard.from_spec(spec), got.rejected)
        return index, got.rows, [(r.file, r.line, r.reason) for r in got.rejected]

    return one


def write_parquet(spark: Any, paths: Any, out: Any, resource_type: Optional[str] = None, *,
                  schema: Any = None, shard_bytes: int = scale.DEFAULT_SHARD_BYTES,
                  partitions: Optional[int] = None, overwrite: bool = False,
                  rejected: Optional[str] = None, compression: str = "zstd",
                  row_group_rows: int = 128 * 1024, **flatten: Any) -> WriteResult:
    """Flattens one resource type to a folder of Parquet files with Spark scheduling the
    work, but without Spark's row conversion and Parquet writer: one Spark task per shard
    flattens it and writes ``part-NNNNN.parquet`` with the CLI's writer, all in Rust
    (:func:`flatfhir.scale.write_shard`; ``compression`` zstd, snappy or none, and row
    groups of ``row_group_rows``, as the CLI; every part has the schema's columns and types).
    The parts, read in name order and concatenated, are the table ``flatfhir convert``
    writes.

    ``paths``: local paths or object-store URLs, as for the data source. ``out``: a local
    or shared filesystem path that the driver and every executor see (object-store output
    raises :class:`~flatfhir.errors.OptionsError`: use ``flatfhir convert --out s3://...``).
    The commit follows Spark's file committer: parts are written to
    ``out/_temporary/<job>/``, and only when every task succeeded does the driver rename
    them into ``out`` and write ``out/_SUCCESS``; if a task fails the staging folder is
    removed and the error raised, leaving no parts. A non-empty ``out`` is refused unless
    ``overwrite=True`` (its old contents are removed at commit, after the job succeeded).

    ``schema``: a :class:`~flatfhir.scale.SchemaDocument` (or its JSON text, dict, or a
    path); without it :func:`infer_schema` runs first as a Spark job over the same shards.
    ``partitions``: cut the input into about this many shards (instead of ``shard_bytes``,
    default 128 MiB). ``rejected``: a folder for the lines ``on_error="skip"`` leaves out
    (as the data source's ``rejected`` option). Other keywords are the flatten options
    (``sep``, ``exclude``, ``decimals``, ``on_error``, ``max_columns``, ``max_line_bytes``)."""
    out = _local_out(out)
    if compression not in ("zstd", "snappy", "none"):
        raise OptionsError(f"compression={compression!r}: expected 'zstd', 'snappy' or 'none'")
    if partitions is not None:
        if partitions < 1:
            raise OptionsError(f"partitions={partitions}: expected at least 1")
        whole = scale.plan_shards(paths, resource_type, shard_bytes=1 << 62)
        total = sum(_shard_size(s) for s in whole)
        shard_bytes = max(1, -(-total // partitions))
    if os.path.isdir(out) and os.listdir(out) and not overwrite:
        raise OptionsError(f"{out}: the output folder is not empty (pass overwrite=True to "
                           "replace its contents)")
    if os.path.exists(out) and not os.path.isdir(out):
        raise OptionsError(f"{out}: exists and is not a folder")
    shards = scale.plan_shards(paths, resource_type, shard_bytes=shard_bytes)
    if not shards:
        raise OptionsError(f"{paths}: no input for {resource_type or 'any resource type'}")
    if schema is None:
        doc = infer_schema(spark, paths, resource_type, shard_bytes=shard_bytes, **flatten)
    else:
        doc = schema if isinstance(schema, scale.SchemaDocument) else scale.SchemaDocument(schema)

    created = not os.path.exists(out)
    staging = os.path.join(out, "_temporary", uuid.uuid4().hex)
    os.makedirs(staging)
    if rejected is not None:
        rejected = _local_out(rejected)
    fn = _write_part_fn(staging, doc.json, flatten, compression, row_group_rows, rejected)
    items = list(enumerate(s.spec for s in shards))
    try:
        got = spark.sparkContext.parallelize(items, len(items)).map(fn).collect()
        if sorted(i for i, _, _ in got) != list(range(len(items))):
            raise RuntimeError(f"flatfhir write_parquet: {len(got)} of {len(items)} parts came back")
    except BaseException:
        _remove_staging(out, staging, created)
        raise
    # Commit: the old contents go (overwrite), the parts move in, then _SUCCESS.
    names = [f"part-{i:05d}.parquet" for i in range(len(items))]
    for e in os.listdir(out):
        if e != "_temporary":
            p = os.path.join(out, e)
            if os.path.isdir(p) and not os.path.islink(p):
                shutil.rmtree(p)
            else:
                os.unlink(p)
    for name in names:
        os.replace(os.path.join(staging, name), os.path.join(out, name))
    _remove_staging(out, staging, False)
    with open(os.path.join(out, "_SUCCESS"), "w", encoding="utf-8"):
        pass
    rt = shards[0].resource_type
    rej = [Rejected(rt, f, line, reason) for _, _, rs in sorted(got) for f, line, reason in rs]
    return WriteResult(out, [os.path.join(out, n) for n in names], sum(r for _, r, _ in got), rej)


def _shard_size(s: scale.Shard) -> int:
    if s.end is not None:
        return s.end - s.start
    try:
        return os.path.getsize(s.path)
    except OSError as e:
        raise OptionsError(f"{s.path}: partitions= needs the input's size (a local file); "
                           "give shard_bytes= instead") from e


def _remove_staging(out: str, staging: str, created: bool) -> None:
    shutil.rmtree(staging, ignore_errors=True)
    try:
        os.rmdir(os.path.join(out, "_temporary"))
        if created:
            os.rmdir(out)
    except OSError:
        pass


__all__ = ["FlatfhirDataSource", "WriteResult", "column_schema", "flatten_column", "infer_schema", "register",
           "spark_schema", "write_parquet"]
