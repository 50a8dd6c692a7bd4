"""Type stubs of the native module. Use the public API in :mod:`flatfhir` instead."""

from typing import Any, Callable, Optional, Sequence

import pyarrow

__version__: str

Progress = Optional[Callable[[int], Any]]

class Inputs:
    """Inputs planned once; unpacked Bundle files live as long as this object."""

    def groups(self) -> list[tuple[str, list[str]]]: ...
    def skipped(self) -> list[str]: ...
    def empty(self) -> list[str]: ...
    def bundles(self) -> Optional[dict[str, int]]: ...
    def packed(self) -> list[str]: ...

def plan(
    paths: Sequence[str], flatten: dict[str, Any], leave_packed: bool = False
) -> Inputs: ...
def convert(
    inputs: Inputs,
    types: Sequence[str],
    out_dir: str,
    flatten: dict[str, Any],
    write: dict[str, Any],
    progress: Progress = None,
) -> tuple[list[tuple[str, Any]], Optional[dict[str, int]]]: ...
def schema(
    inputs: Inputs,
    types: Sequence[str],
    flatten: dict[str, Any],
    progress: Progress = None,
) -> list[tuple[str, Any]]: ...
def plan_shards(
    paths: Sequence[str], resource_type: str, shard_bytes: int, flatten: dict[str, Any]
) -> list[str]: ...
def shard_schema(
    shard: str, flatten: dict[str, Any]
) -> tuple[str, list[tuple[str, int, str]]]: ...
def merge_schemas(docs: Sequence[str]) -> str: ...
def read_texts(
    texts: Sequence[Optional[str]],
    resource_type: str,
    source: str,
    file_index: int,
    first_line: int,
    flatten: dict[str, Any],
) -> tuple[Any, list[pyarrow.RecordBatch], list[tuple[str, int, str]]]: ...
def run_views(
    paths: Sequence[str],
    definitions: Sequence[tuple[str, str]],
    columns: Sequence[tuple[str, Sequence[tuple[str, str]]]],
    out_dir: str,
    max_line_bytes: int,
) -> list[tuple[str, str, int, int]]: ...

class ShardReader:
    def __init__(self, shard: str, flatten: dict[str, Any], bound: int) -> None: ...
    @property
    def schema(self) -> pyarrow.Schema: ...
    def next_batch(self) -> Optional[pyarrow.RecordBatch]: ...
    def rejected(self) -> Optional[list[tuple[str, int, str]]]: ...

class TypeReader:
    def __init__(
        self,
        inputs: Inputs,
        resource_type: str,
        flatten: dict[str, Any],
        out_dir: str,
        bound: int,
    ) -> None: ...
    def schema(self, progress: Progress = None) -> pyarrow.Schema: ...
    def next_batch(self, progress: Progress = None) -> Optional[pyarrow.RecordBatch]: ...
    def read_all(self, progress: Progress = None) -> pyarrow.Table: ...
    def report(self) -> Optional[dict[str, Any]]: ...
    def close(self) -> None: ...

class Client:
    def __init__(
        self,
        fhir_url: Optional[str] = None,
        *,
        client_id: Optional[str] = None,
        private_key: Optional[str] = None,
        kid: Optional[str] = None,
        alg: Optional[str] = None,
        scope: str = "system/*.read",
        token_url: Optional[str] = None,
        client_secret: Optional[str] = None,
        client_secret_post: bool = False,
        bearer: Optional[str] = None,
        headers: Sequence[tuple[str, str]] = (),
        ca_cert: Optional[str] = None,
        min_wait: float = 1.0,
        max_poll_wait: float = 120.0,
        retries: int = 8,
    ) -> None: ...
    def check(self) -> None: ...
    def export(
        self,
        out_dir: str,
        args: dict[str, Any],
        on_event: Optional[Callable[[dict[str, Any]], Any]] = None,
    ) -> str: ...
    def status(self, out_dir: str, poll: bool = True) -> tuple[str, Optional[str]]: ...
    def cancel(self, out_dir: str) -> None: ...

def large_strings(table: Any) -> pyarrow.Table: ...
def write_shard(
    shard: str, flatten: dict[str, Any], write: dict[str, Any], path: str
) -> tuple[int, list[tuple[str, int, str]]]: ...
