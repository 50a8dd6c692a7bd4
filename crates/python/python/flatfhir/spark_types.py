"""The Arrow schema a schema document gives one resource type (the engine's type policy,
docs/columns.md), for the Spark and Dask readers, which need it before any shard is read."""

from __future__ import annotations

from typing import Dict

import pyarrow as pa

from .scale import SchemaDocument

_KINDS: Dict[str, int] = {"int": 1, "frac": 2, "bool": 4, "string": 8, "bigint": 16}


def arrow_schema(doc: SchemaDocument, resource_type: str, decimals: str = "float") -> pa.Schema:
    """Only integers: int64; integers and fractions: float64 (string with
    ``decimals="exact"``); only booleans: bool; anything else, or no value: string."""
    fields = []
    for c in doc.columns(resource_type):
        k = sum(_KINDS[x] for x in c["kinds"])
        if k == 1:
            t = pa.int64()
        elif k & ~3 == 0 and k & 2:
            t = pa.float64() if decimals == "float" else pa.string()
        elif k == 4:
            t = pa.bool_()
        else:
            t = pa.string()
        fields.append(pa.field(c["name"], t))
    return pa.schema(fields)
