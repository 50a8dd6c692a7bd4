"""Scale-out API (flatfhir.scale): shards, per-shard schemas, merging, reading a shard with a
given schema; the shards' tables in shard order equal the CLI's table."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import flatfhir
from flatfhir import scale
from conftest import BDS, FIXTURES, bds_types, need_shared


def _by_shards(path, rtype: str, shard_bytes: int, order=None) -> tuple:
    shards = scale.plan_shards(path, rtype, shard_bytes=shard_bytes)
    parts = [scale.shard_schema(s) for s in shards]
    merged = scale.merge_schemas(parts if order is None else [parts[i] for i in order(len(parts))])
    table = pa.concat_tables([scale.read_shard(s, merged).table for s in shards])
    return shards, merged, table


@pytest.mark.parametrize("rtype", bds_types())
def test_sample_shards_equal_the_cli(rtype, cli_bds, cli, tmp_path):
    need_shared()
    src = BDS / f"{rtype}.ndjson"
    size = os.path.getsize(src)
    # At least four shards per file (ranges cut mid-line), merged in reverse order.
    shards, merged, table = _by_shards(src, rtype, max(1, size // 4 + 1),
                                       order=lambda n: list(reversed(range(n))))
    assert len(shards) >= min(4, size)
    want = pq.read_table(cli_bds / f"{rtype}.parquet")
    assert table.schema.remove_metadata() == want.schema.remove_metadata()
    assert table.equals(want)
    # The merged document is what `flatfhir schema --save` writes for the whole input, up to
    # where columns were first seen (shards count lines from their own start).
    saved = tmp_path / "s.json"
    subprocess.run([str(cli), "schema", "-q", "--save", str(saved), str(src)], check=True,
                   stdout=subprocess.DEVNULL)
    whole = json.loads(saved.read_text())["types"][rtype]
    mine = merged.to_dict()["types"][rtype]
    strip = lambda cols: [{k: v for k, v in c.items() if k != "first_seen"} for c in cols]
    assert strip(mine["columns"]) == strip(whole["columns"])
    assert mine["rows"] == whole["rows"]


def test_fixture_in_tiny_shards_in_any_merge_order(cli, tmp_path):
    src = FIXTURES / "basic" / "Observation.ndjson"
    want = flatfhir.read(src, progress=False)["Observation"]
    for size in (1, 7, 64, 200, 10_000):
        for order in (None, lambda n: list(reversed(range(n))), lambda n: sorted(range(n), key=lambda i: i % 3)):
            shards, merged, table = _by_shards(src, "Observation", size, order)
            assert table.equals(want), size
            assert merged.rows("Observation") == want.num_rows


def test_document_round_trips_and_feeds_read(tmp_path):
    src = FIXTURES / "basic"
    shards = scale.plan_shards(src, "Patient", shard_bytes=50)
    doc = scale.merge_schemas(scale.shard_schema(s) for s in shards)
    path = tmp_path / "schema.json"
    doc.save(path)
    assert scale.SchemaDocument.load(path) == doc
    assert doc.types == ["Patient"]
    # schema= in read: same table as without, and the document's column order.
    a = flatfhir.read(src, types="Patient", schema=path, progress=False)["Patient"]
    b = flatfhir.read(src, types="Patient", progress=False)["Patient"]
    assert a.equals(b)
    assert a.column_names == [c["name"] for c in doc.columns("Patient")]


def test_a_value_that_does_not_fit_names_file_and_line(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "Basic.ndjson").write_text('{"resourceType":"Basic","n":1}\n')
    bad = tmp_path / "b" / "Basic.ndjson"
    bad.write_text('{"resourceType":"Basic","n":2}\n{"resourceType":"Basic","n":true}\n')
    doc = scale.merge_schemas(scale.shard_schema(s) for s in scale.plan_shards(tmp_path / "a"))
    shard = scale.plan_shards(tmp_path / "b")[0]
    with pytest.raises(flatfhir.BadLineError) as e:
        scale.read_shard(shard, doc)
    assert e.value.line == 2 and e.value.file.endswith("Basic.ndjson")
    assert "column n is int64 in the given schema" in str(e.value)
    with pytest.raises(flatfhir.BadLineError):
        flatfhir.read(tmp_path / "b", schema=doc, progress=False)


def test_skip_reports_rejected_lines_per_shard(tmp_path):
    f = tmp_path / "Basic.ndjson"
    f.write_text('{"resourceType":"Basic","id":"a"}\n{broken\n{"resourceType":"Basic","id":"b"}\n')
    shards = scale.plan_shards(tmp_path, shard_bytes=20)
    parts = [scale.shard_schema(s, on_error="skip") for s in shards]
    doc = scale.merge_schemas(parts)
    read = [scale.read_shard(s, doc, on_error="skip") for s in shards]
    rejected = [r for p in read for r in p.rejected]
    assert sum(p.table.num_rows for p in read) == 2
    assert len(rejected) == 1 and rejected[0].reason
    assert sum(len(p.rejected) for p in parts) == 1
    # Rows in = rows out + rows rejected.
    assert doc.rows("Basic") + sum(len(p.rejected) for p in parts) == 3


def test_bad_arguments():
    with pytest.raises(flatfhir.errors.OptionsError):
        scale.plan_shards(FIXTURES / "basic", "Patient", shard_bytes=0)
    with pytest.raises(flatfhir.errors.OptionsError):
        scale.read_shard(scale.plan_shards(FIXTURES / "basic", "Patient")[0], None)
    with pytest.raises(ValueError):
        scale.SchemaDocument('{"format": "something-else", "version": 1}')


def test_iter_shard_streams_batches_before_a_later_bad_line(tmp_path):
    # 5,000 good lines (more than one 4,096-line chunk), then a line that does not fit: the
    # first chunk's batch arrives before the error, which names the file and line.
    f = tmp_path / "Basic.ndjson"
    good = [f'{{"resourceType":"Basic","id":"{i}","n":{i}}}' for i in range(5000)]
    f.write_text("\n".join(good + ['{"resourceType":"Basic","id":"x","n":"text"}']) + "\n")
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "Basic.ndjson").write_text("\n".join(good[:10]) + "\n")
    doc = scale.merge_schemas(scale.shard_schema(s) for s in scale.plan_shards(tmp_path / "a", "Basic"))
    # A byte-range shard (the file is larger than shard_bytes) is read in 4,096-line chunks.
    shard = scale.plan_shards(f, shard_bytes=f.stat().st_size - 1)[0]
    assert shard.end is not None
    it = scale.iter_shard(shard, doc)
    first = next(it)
    assert first.num_rows == 4096
    assert first.column("n").to_pylist()[:3] == [0, 1, 2]
    with pytest.raises(flatfhir.BadLineError) as e:
        next(it)
    assert e.value.line == 5001 and e.value.file.endswith("Basic.ndjson")


def test_iter_shard_equals_read_shard_and_lists_rejected_at_the_end(tmp_path):
    f = tmp_path / "Basic.ndjson"
    lines = [f'{{"resourceType":"Basic","id":"{i}","n":{i}}}' for i in range(9000)]
    lines[4500] = "{broken"
    f.write_text("\n".join(lines) + "\n")
    shards = scale.plan_shards(tmp_path, shard_bytes=100_000)
    assert len(shards) > 1
    doc = scale.merge_schemas(scale.shard_schema(s, on_error="skip") for s in shards)
    rows, rejected = 0, []
    for s in shards:
        it = scale.iter_shard(s, doc, on_error="skip")
        assert it.rejected is None  # known only at the end
        batches = list(it)
        assert all(b.schema == it.schema for b in batches)
        whole = scale.read_shard(s, doc, on_error="skip")
        assert pa.Table.from_batches(batches, schema=it.schema).equals(whole.table)
        assert it.rejected == whole.rejected
        rows += whole.table.num_rows
        rejected += it.rejected
    # Rows in = rows out + rows rejected.
    assert rows + len(rejected) == 9000 and len(rejected) == 1
    assert rejected[0].reason and rejected[0].file.endswith("Basic.ndjson")


@pytest.mark.parametrize("fmt", ["parquet", "arrow"])
def test_write_shard_writes_read_shards_table(fmt, tmp_path):
    need_shared()
    src = BDS / "Observation.ndjson"
    shards = scale.plan_shards(src, "Observation", shard_bytes=os.path.getsize(src) // 3 + 1)
    doc = scale.merge_schemas(scale.shard_schema(s) for s in shards)
    for i, s in enumerate(shards):
        out = tmp_path / f"part-{i}.{fmt}"
        got = scale.write_shard(s, doc, out, format=fmt, row_group_rows=1000)
        want = scale.read_shard(s, doc).table
        table = pq.read_table(out) if fmt == "parquet" else pa.ipc.open_file(out).read_all()
        assert got.rows == want.num_rows == table.num_rows and got.rejected == []
        assert table.schema.remove_metadata() == want.schema
        assert table.equals(want)
        if fmt == "parquet":
            md = pq.ParquetFile(out).metadata
            assert md.num_row_groups == -(-want.num_rows // 1000)
            assert md.row_group(0).column(0).compression == "ZSTD"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        f"part-{i}.{fmt}" for i in range(len(shards))), "no temporary files left"


def test_write_shard_a_bad_line_names_file_and_line_and_leaves_nothing(tmp_path):
    (tmp_path / "in").mkdir()
    f = tmp_path / "in" / "Basic.ndjson"
    f.write_text('{"resourceType":"Basic","n":1}\n{"resourceType":"Basic","n":true}\n')
    good = tmp_path / "Basic.ndjson"
    good.write_text('{"resourceType":"Basic","n":1}\n')
    doc = scale.merge_schemas(scale.shard_schema(s) for s in scale.plan_shards(good))
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(flatfhir.BadLineError) as e:
        scale.write_shard(scale.plan_shards(f)[0], doc, out / "part-0.parquet")
    assert e.value.line == 2 and e.value.file.endswith("Basic.ndjson")
    assert list(out.iterdir()) == [], "no part and no temporary file"
    # on_error="skip": a broken line is left out and reported; rows in = rows out + rejected.
    f.write_text('{"resourceType":"Basic","n":1}\n{broken\n')
    got = scale.write_shard(scale.plan_shards(f)[0], doc, out / "part-0.parquet", on_error="skip")
    assert got.rows == 1 and [r.line for r in got.rejected] == [2]
    assert pq.read_table(out / "part-0.parquet").num_rows == 1
