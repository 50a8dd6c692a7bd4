"""flatfhir: FHIR Bulk Data → analysis-ready tables, fast and without losing anything.

- :func:`read` — NDJSON files or export directories → ``{type: pyarrow.Table}``, exactly the
  tables ``flatfhir convert`` writes (flatten_json columns over the union schema); with
  ``columns=``/``views=``, FHIRPath / SQL on FHIR views instead.
- :func:`iter_batches` / :func:`batch_reader` — one type as a stream of record batches, in
  bounded memory.
- :func:`convert` — ``flatfhir convert``: Parquet/Arrow files and reports.
- :func:`schema` — the union schema per type.
- :class:`Client` — the Bulk Data client (SMART Backend Services, ``$export``, resumable
  downloads); :func:`export_to_pandas` — the whole notebook in one call.

Errors are :mod:`flatfhir.errors` classes with typed fields.
"""

from . import errors
from ._engine import (
    ConvertResult,
    Plan,
    SMALL_TABLE_BYTES,
    Rejected,
    SchemaColumn,
    Tables,
    TypeReport,
    TypeSchema,
    batch_reader,
    convert,
    iter_batches,
    plan,
    read,
    read_pandas,
    read_polars,
    schema,
    to_pandas,
    to_polars,
)
from ._native import __version__
from ._views import read_views
from .bulk import Client, ExportResult, ExportStatus, export_to_pandas
from .errors import (
    AuthError,
    BadLineError,
    FetchError,
    FlatfhirError,
    HttpError,
    InputError,
    ServerError,
    ViewError,
)

__all__ = [
    "AuthError",
    "BadLineError",
    "Client",
    "ConvertResult",
    "ExportResult",
    "ExportStatus",
    "FetchError",
    "FlatfhirError",
    "HttpError",
    "InputError",
    "Plan",
    "Rejected",
    "SMALL_TABLE_BYTES",
    "SchemaColumn",
    "ServerError",
    "Tables",
    "TypeReport",
    "TypeSchema",
    "ViewError",
    "__version__",
    "batch_reader",
    "convert",
    "errors",
    "export_to_pandas",
    "iter_batches",
    "plan",
    "read",
    "read_pandas",
    "read_polars",
    "read_views",
    "schema",
    "to_pandas",
    "to_polars",
]
