"""flatfhir as a Dask DataFrame: one partition per shard (``dd.from_map``), ``meta`` from the
union schema, columns as pyarrow-backed pandas dtypes so types and nulls are kept exactly
(an ``int64`` column with nulls stays ``int64[pyarrow]``, not float).

.. code-block:: python

    import flatfhir.dask
    ddf = flatfhir.dask.read("export/", "Observation")
    ddf.to_parquet("tables/Observation", write_index=False)

The schema pass runs first, one Dask task per shard, merged on the client; or pass
``schema=`` (a document from ``flatfhir schema --save``). See ``docs/scale-out.md``.
"""

from __future__ import annotations

from typing import Any, Dict, Iterable, Optional, Union

import dask
import dask.dataframe as dd

# dask's functions are untyped: called through Any.
_dask: Any = dask
_dd: Any = dd
import pandas as pd
import pyarrow as pa

from . import scale
from ._engine import PathArg


def _frame(table: pa.Table) -> pd.DataFrame:
    return table.to_pandas(types_mapper=pd.ArrowDtype)


def _read_one(spec: str, doc: str, flatten: Dict[str, Any]) -> pd.DataFrame:
    from flatfhir import scale as sc

    return _frame(sc.read_shard(spec, doc, **flatten).table)


def _schema_one(spec: str, flatten: Dict[str, Any]) -> str:
    from flatfhir import scale as sc

    return sc.shard_schema(spec, **flatten).schema.json


def read(
    paths: PathArg,
    resource_type: Optional[str] = None,
    *,
    schema: Any = None,
    shard_bytes: int = scale.DEFAULT_SHARD_BYTES,
    sep: str = "_",
    exclude: Union[str, Iterable[str]] = (),
    decimals: str = "float",
    on_error: str = "fail",
) -> Any:
    """One resource type as a Dask DataFrame whose partitions are the shards, in input order:
    computed, it is the table ``flatfhir convert`` writes (lines left out with
    ``on_error="skip"`` are not returned; use :func:`flatfhir.scale.read_shard` for them)."""
    flatten = {"sep": sep, "exclude": exclude if isinstance(exclude, str) else list(exclude),
               "decimals": decimals, "on_error": on_error}
    shards = scale.plan_shards(paths, resource_type, shard_bytes=shard_bytes)
    specs = [s.spec for s in shards]
    if schema is None:
        docs = _dask.compute(*[_dask.delayed(_schema_one)(s, flatten) for s in specs])
        doc = scale.merge_schemas(list(docs))
    else:
        doc = schema if isinstance(schema, scale.SchemaDocument) else scale.SchemaDocument(schema)
    rt = shards[0].resource_type
    from .spark_types import arrow_schema  # no Spark import: shared with flatfhir.spark

    meta = _frame(arrow_schema(doc, rt, decimals).empty_table())
    return _dd.from_map(_read_one, specs, doc=doc.json, flatten=flatten, meta=meta,
                       enforce_metadata=False)


__all__ = ["read"]
