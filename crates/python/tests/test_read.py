"""flatfhir.read / iter_batches / convert / schema against the CLI and the reference."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import flatfhir
from conftest import BDS, FIXTURES, bds_types, need_shared, run_compare_flatten


def _same_table(got: pa.Table, want: pa.Table) -> None:
    assert got.column_names == want.column_names
    assert got.schema.remove_metadata() == want.schema.remove_metadata()
    assert got.num_rows == want.num_rows
    assert got.equals(want), "values differ"


@pytest.fixture(scope="module")
def bds_tables():
    need_shared()
    return flatfhir.read(BDS, progress=False)


@pytest.mark.parametrize("rtype", bds_types())
def test_every_sample_type_equals_the_cli_and_the_reference(rtype, bds_tables, cli_bds, tmp_path):
    got = bds_tables[rtype]
    _same_table(got, pq.read_table(cli_bds / f"{rtype}.parquet"))
    # The reference rules of ../shared/tools/compare_flatten.py, on what Python returned.
    out = tmp_path / f"{rtype}.parquet"
    pq.write_table(got, out)
    r = run_compare_flatten(out, [BDS / f"{rtype}.ndjson"])
    assert r.returncode == 0, r.stdout + r.stderr


def test_read_returns_every_type_in_order(bds_tables):
    assert list(bds_tables) == sorted(bds_types())


@pytest.mark.parametrize("rtype", ["Observation", "ExplanationOfBenefit", "Patient"])
def test_iter_batches_concatenated_equals_read(rtype, bds_tables):
    # memory_budget=0: every chunk goes through the spill file, as on inputs larger than RAM.
    batches = list(flatfhir.iter_batches(BDS / f"{rtype}.ndjson", memory_budget=0))
    assert len(batches) >= 1
    _same_table(pa.Table.from_batches(batches), bds_tables[rtype])


def test_batch_reader_is_an_arrow_stream(bds_tables):
    need_shared()
    reader = flatfhir.batch_reader(BDS, "Patient")
    assert hasattr(reader, "__arrow_c_stream__")
    import polars as pl

    df = pl.from_arrow(reader)
    assert df.shape == bds_tables["Patient"].shape


def test_basic_fixtures_equal_the_cli(cli, tmp_path):
    subprocess.run([str(cli), "convert", str(FIXTURES / "basic"), "--out", str(tmp_path), "--quiet"],
                   check=True)
    got = flatfhir.read(FIXTURES / "basic", progress=False)
    assert list(got) == ["Observation", "Patient"]
    for t, table in got.items():
        _same_table(table, pq.read_table(tmp_path / f"{t}.parquet"))


def test_options_reach_the_engine(cli, tmp_path):
    args = ["--sep", ".", "--exclude", "text", "--decimals", "exact", "--threads", "1"]
    subprocess.run([str(cli), "convert", str(FIXTURES / "decimals"), "--out", str(tmp_path), "--quiet", *args],
                   check=True)
    got = flatfhir.read(FIXTURES / "decimals", sep=".", exclude="text", decimals="exact", threads=1,
                        progress=False)
    for t, table in got.items():
        _same_table(table, pq.read_table(tmp_path / f"{t}.parquet"))


def test_types_filter_and_unknown_type():
    got = flatfhir.read(FIXTURES / "basic", types=["Patient"], progress=False)
    assert list(got) == ["Patient"]
    with pytest.raises(flatfhir.InputError) as e:
        flatfhir.read(FIXTURES / "basic", types="Medication", progress=False)
    assert "Medication" in str(e.value)


def test_a_bad_line_raises_with_file_line_and_reason():
    path = FIXTURES / "bad" / "truncated.Patient.ndjson"
    with pytest.raises(flatfhir.BadLineError) as e:
        flatfhir.read(path, progress=False)
    assert e.value.file == str(path)
    assert e.value.line == 2
    assert "ends inside a string" in e.value.reason
    assert isinstance(e.value, ValueError)


def test_skip_returns_rejected_lines_beside_the_tables(cli, tmp_path):
    path = FIXTURES / "bad" / "truncated.Patient.ndjson"
    got = flatfhir.read(path, on_error="skip", progress=False)
    assert got["Patient"].num_rows == 1
    assert [(r.file, r.line) for r in got.rejected] == [(str(path), 2)]
    assert got.rejected[0].text.startswith('{"resourceType":"Patient","id":"trunc"')
    # The same records as the CLI's _rejected/ file.
    subprocess.run([str(cli), "convert", str(path), "--out", str(tmp_path), "--on-error", "skip", "--quiet"])
    cli_records = [json.loads(l) for l in (tmp_path / "_rejected" / "Patient.errors.ndjson").read_text().splitlines()]
    assert [(r["file"], r["line"], r["reason"]) for r in cli_records] == [
        (r.file, r.line, r.reason) for r in got.rejected
    ]


def test_convert_returns_reports_like_the_cli(cli, tmp_path):
    res = flatfhir.convert(FIXTURES / "basic", tmp_path / "py", progress=False)
    out = subprocess.run([str(cli), "convert", str(FIXTURES / "basic"), "--out", str(tmp_path / "cli"),
                          "--quiet", "--json"], check=True, capture_output=True, text=True)
    cli_types = json.loads(out.stdout)["types"]
    assert [(t.resource_type, t.rows, t.columns) for t in res.types] == [
        (t["resource_type"], t["rows"], t["columns"]) for t in cli_types
    ]
    for t in res.types:
        assert Path(t.output).exists() and t.output_bytes > 0 and t.input_bytes > 0
        _same_table(pq.read_table(t.output), pq.read_table(tmp_path / "cli" / f"{t.resource_type}.parquet"))


def test_convert_failure_raises_the_typed_error_with_the_result(tmp_path):
    with pytest.raises(flatfhir.BadLineError) as e:
        flatfhir.convert([FIXTURES / "basic", FIXTURES / "bad" / "truncated.Patient.ndjson"], tmp_path,
                         progress=False)
    assert e.value.line == 2
    result = e.value.result
    assert "Patient" in result.failed
    assert [t.resource_type for t in result.types] == ["Observation"]
    assert not (tmp_path / "Patient.parquet").exists()


def test_schema_equals_the_cli(cli):
    out = subprocess.run([str(cli), "schema", str(FIXTURES / "basic"), "--json"], check=True,
                         capture_output=True, text=True)
    want = {t["resource_type"]: t for t in json.loads(out.stdout)}
    got = flatfhir.schema(FIXTURES / "basic", progress=False)
    assert list(got) == list(want)
    for t, s in got.items():
        assert s.rows == want[t]["rows"]
        assert [(c.name, c.type, c.non_null) for c in s.columns] == [
            (c["name"], c["type"], c["non_null"]) for c in want[t]["columns"]
        ]
        assert [c.first_seen.rsplit(":", 1)[1] for c in s.columns] == [
            c["first_seen"].rsplit(":", 1)[1] for c in want[t]["columns"]
        ]


def test_pandas_and_polars_helpers():
    tables = flatfhir.read(FIXTURES / "basic", progress=False)
    pdf = flatfhir.to_pandas(tables)
    assert list(pdf["Patient"]["id"]) == ["p1", "p2", "p3"]
    assert pdf["Patient"].shape == tables["Patient"].shape
    pl_frames = tables.to_polars()
    assert pl_frames["Observation"].shape == tables["Observation"].shape
    assert flatfhir.read_pandas(FIXTURES / "basic", progress=False)["Patient"].equals(pdf["Patient"])


def test_progress_callback_counts_every_byte_twice():
    calls = []
    flatfhir.read(FIXTURES / "basic", progress=lambda done, total: calls.append((done, total)))
    assert calls, "the callback never fired"
    size = sum(p.stat().st_size for p in (FIXTURES / "basic").glob("*.ndjson"))
    assert calls[-1] == (2 * size, 2 * size)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)


def test_tqdm_bar_fires(monkeypatch):
    import tqdm.auto

    updates = []

    class Recording(tqdm.auto.tqdm):  # type: ignore[misc, valid-type]
        def update(self, n=1):
            updates.append(n)
            return super().update(n)

    monkeypatch.setattr(tqdm.auto, "tqdm", Recording)
    flatfhir.read(FIXTURES / "basic", progress=True)
    size = sum(p.stat().st_size for p in (FIXTURES / "basic").glob("*.ndjson"))
    assert sum(updates) == 2 * size


def test_silent_when_asked(capfd):
    flatfhir.read(FIXTURES / "basic", progress=False)
    assert capfd.readouterr().err == ""


def _os_threads() -> list:
    """Names of this process's OS threads (Rust's included)."""
    names = []
    for t in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{t}/comm") as f:
                names.append(f.read().strip())
        except OSError:
            pass
    return names


def test_keyboard_interrupt_stops_a_read_cleanly():
    need_shared()
    assert not [t for t in _os_threads() if t.startswith("flatfhir-read")]

    def interrupt(done, total):
        signal.raise_signal(signal.SIGINT)

    import tempfile

    tmp = Path(tempfile.gettempdir())
    before = set(tmp.glob("flatfhir-read-*"))
    with pytest.raises(KeyboardInterrupt):
        flatfhir.read(BDS / "Observation.ndjson", progress=interrupt, threads=1)
    assert set(tmp.glob("flatfhir-read-*")) == before, "the temporary directory is removed"
    # The reading thread was stopped and joined before KeyboardInterrupt reached the caller
    # (the engine's own stop is tested in crates/core/tests/it/read.rs), and the engine
    # works again.
    assert not [t for t in _os_threads() if t.startswith("flatfhir-read")]
    assert flatfhir.read(FIXTURES / "basic", progress=False)["Patient"].num_rows == 3


def test_an_exception_in_the_callback_stops_the_read():
    class Stop(Exception):
        pass

    def boom(done, total):
        raise Stop()

    with pytest.raises(Stop):
        flatfhir.read(FIXTURES / "basic", progress=boom)


def test_a_type_whose_every_line_is_rejected_is_an_empty_table(tmp_path):
    bad = tmp_path / "Patient.ndjson"
    bad.write_text('{"resourceType":"Patient","id":\n')
    got = flatfhir.read(bad, on_error="skip", progress=False)
    assert got["Patient"].num_rows == 0
    assert [(r.line, r.resource_type) for r in got.rejected] == [(1, "Patient")]


class _RecordingTable:
    """Stands in for a pyarrow.Table: records the options of ``to_pandas``."""

    def __init__(self, nbytes: int) -> None:
        self.nbytes = nbytes
        self.schema = pa.schema([("n", pa.int64())])
        self.calls: list = []

    def get_total_buffer_size(self) -> int:
        return self.nbytes

    def to_pandas(self, **kwargs):
        self.calls.append(kwargs)
        return kwargs


def test_small_tables_go_to_pandas_on_the_calling_thread():
    from flatfhir._engine import SMALL_TABLE_BYTES

    small, large = _RecordingTable(1000), _RecordingTable(SMALL_TABLE_BYTES)
    flatfhir.to_pandas({"Patient": small, "Observation": large})
    assert small.calls == [{"use_threads": False}]
    assert large.calls == [{}], "pyarrow's default (threads) for large tables"
    # The caller's choice wins, and other options pass through.
    flatfhir.to_pandas({"Patient": small}, use_threads=True, strings_to_categorical=True)
    assert small.calls[-1] == {"use_threads": True, "strings_to_categorical": True}


def test_to_pandas_values_do_not_depend_on_threads():
    tables = flatfhir.read(FIXTURES / "basic", progress=False)
    for t, frame in tables.to_pandas().items():
        assert frame.equals(tables[t].to_pandas(use_threads=True)), t


def test_a_temporary_directory_only_for_rejected_lines(monkeypatch, tmp_path):
    import tempfile

    made = []
    real = tempfile.mkdtemp

    def spy(*args, **kwargs):
        d = real(*args, **kwargs)
        made.append(d)
        return d

    monkeypatch.setattr(tempfile, "mkdtemp", spy)
    assert flatfhir.read(FIXTURES / "basic", progress=False)["Patient"].num_rows == 3
    assert made == [], "on_error='fail' writes no rejected lines: no directory of its own"
    bad = tmp_path / "Patient.ndjson"
    bad.write_text('{"resourceType":"Patient","id":"a"}\n{"resourceType":"Patient","id":\n')
    got = flatfhir.read(bad, on_error="skip", progress=False)
    assert len(made) == 1 and not os.path.exists(made[0]), "made for _rejected/, then removed"
    assert [r.line for r in got.rejected] == [2]


@pytest.mark.parametrize("rtype", bds_types())
def test_to_pandas_is_pyarrows_own_conversion(rtype, bds_tables):
    """flatfhir.to_pandas widens string columns natively before pandas sees them; the
    DataFrame must be the one ``Table.to_pandas`` gives: same columns, dtypes and values."""
    table = bds_tables[rtype]
    got, want = flatfhir.to_pandas(table), table.to_pandas()
    assert list(got.columns) == list(want.columns)
    assert got.dtypes.to_dict() == want.dtypes.to_dict()
    assert got.equals(want)


def test_to_pandas_leaves_a_callers_types_mapper_alone(bds_tables):
    import pandas as pd

    table = bds_tables["Patient"]
    got = flatfhir.to_pandas(table, types_mapper=pd.ArrowDtype)
    assert got.equals(table.to_pandas(types_mapper=pd.ArrowDtype))
    assert all(isinstance(d, pd.ArrowDtype) for d in got.dtypes)


def test_large_strings_widens_offsets_and_shares_the_text():
    from flatfhir import _native

    t = pa.Table.from_batches([
        pa.record_batch({"s": pa.array(["a", None, "ccc"]), "n": pa.array([1, 2, None])}),
        pa.record_batch({"s": pa.array(["", "é"]), "n": pa.array([4, 5])}),
    ])
    got = _native.large_strings(t)
    assert got.schema == pa.schema([("s", pa.large_string()), ("n", pa.int64())])
    assert got.column("s").num_chunks == 2
    assert got.column("s").to_pylist() == ["a", None, "ccc", "", "é"]
    assert got.column("n").equals(t.column("n"))
    # The text buffer is the original's (no copy), only the offsets are new.
    for old, new in zip(t.column("s").chunks, got.column("s").chunks):
        assert new.buffers()[2].address == old.buffers()[2].address


def _threads() -> int:
    return len(os.listdir("/proc/self/task"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="counts threads in /proc (Linux)")
def test_a_failing_type_stops_the_type_read_ahead(tmp_path):
    # read() starts the next type while it takes the current one; when the current one fails
    # the next one's worker must be stopped and joined, not left running.
    (tmp_path / "Basic.ndjson").write_text('{"resourceType":"Basic","id":\n')
    line = json.dumps({"resourceType": "Patient", "id": "p", "name": [{"family": "x" * 100}]})
    (tmp_path / "Patient.ndjson").write_text((line + "\n") * 20_000)
    flatfhir.read(tmp_path / "Patient.ndjson", progress=False)  # pools and kept threads start
    before = _threads()
    with pytest.raises(flatfhir.BadLineError) as e:
        flatfhir.read(tmp_path, progress=False)
    assert e.value.line == 1
    assert _threads() == before
