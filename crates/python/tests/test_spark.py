"""The PySpark data source (flatfhir.spark) in a local[2] session: every type of the sample
export, in at least four partitions where the file allows, equals the CLI's Parquet; the
schema pass as a Spark job equals `flatfhir schema --save` (up to first-seen positions)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import BDS, bds_types, need_shared

pyspark = pytest.importorskip("pyspark", reason="pyspark is not installed (pip install pyspark)")


@pytest.fixture(scope="module")
def spark():
    if shutil.which("java") is None:
        print("no Java runtime (java on PATH): skipping the Spark tests")
        pytest.skip("no Java runtime for Spark")
    os.environ["PYSPARK_PYTHON"] = sys.executable
    os.environ["PYSPARK_DRIVER_PYTHON"] = sys.executable
    from pyspark.sql import SparkSession

    jvm = "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC"
    s = (SparkSession.builder.master("local[2]").appName("flatfhir-test")
         .config("spark.ui.enabled", "false")
         .config("spark.driver.extraJavaOptions", jvm)
         .config("spark.executor.extraJavaOptions", jvm)
         .config("spark.sql.shuffle.partitions", "2")
         .getOrCreate())
    from flatfhir.spark import register

    register(s)
    yield s
    s.stop()


def _strip(cols):
    return [{k: v for k, v in c.items() if k != "first_seen"} for c in cols]


@pytest.mark.parametrize("rtype", bds_types())
def test_sample_types_through_spark_equal_the_cli(rtype, spark, cli, cli_bds, tmp_path):
    need_shared()
    from flatfhir.spark import infer_schema

    src = BDS / f"{rtype}.ndjson"
    shard_bytes = max(1, os.path.getsize(src) // 4 + 1)
    doc = infer_schema(spark, str(src), rtype, shard_bytes=shard_bytes)
    saved = tmp_path / "s.json"
    subprocess.run([str(cli), "schema", "-q", "--save", str(saved), str(src)], check=True,
                   stdout=subprocess.DEVNULL)
    whole = json.loads(saved.read_text())["types"][rtype]
    assert _strip(doc.columns(rtype)) == _strip(whole["columns"])

    df = (spark.read.format("flatfhir").option("resourceType", rtype)
          .option("schemaJson", doc.json).option("shardBytes", str(shard_bytes))
          .load(str(src)))
    if os.path.getsize(src) >= 4:
        assert df.rdd.getNumPartitions() >= 4
    got = df.toArrow()
    want = pq.read_table(cli_bds / f"{rtype}.parquet")
    assert got.column_names == want.column_names
    # Spark hands back the same values and types (it may change nothing but metadata).
    assert got.cast(want.schema).equals(want)
    assert [f.type for f in got.schema] == [f.type for f in want.schema]


def test_schema_file_option_and_inferred_schema(spark, tmp_path):
    f = tmp_path / "Basic.ndjson"
    f.write_text("".join(f'{{"resourceType":"Basic","id":"{i}","n":{i}}}\n' for i in range(50)))
    df = spark.read.format("flatfhir").option("shardBytes", "100").load(str(f))
    assert df.columns == ["resourceType", "id", "n"]
    assert df.rdd.getNumPartitions() > 4
    assert sorted(r.n for r in df.collect()) == list(range(50))
    subprocess_doc = tmp_path / "doc.json"
    from flatfhir import scale

    scale.merge_schemas([scale.shard_schema(s) for s in scale.plan_shards(f)]).save(subprocess_doc)
    df2 = (spark.read.format("flatfhir").option("schema", str(subprocess_doc))
           .option("shardBytes", "100").load(str(f)))
    assert df2.toArrow().equals(df.toArrow())


def test_skip_puts_rejected_lines_in_a_folder(spark, tmp_path):
    f = tmp_path / "Basic.ndjson"
    lines = [f'{{"resourceType":"Basic","id":"{i}"}}' for i in range(30)]
    lines[7] = "{broken"
    lines[22] = '{"resourceType":"Patient","id":"x"}'
    f.write_text("\n".join(lines) + "\n")
    rejected = tmp_path / "rejected"
    df = (spark.read.format("flatfhir").option("on_error", "skip").option("shardBytes", "90")
          .option("rejected", str(rejected)).load(str(f)))
    rows = df.count()
    found = [json.loads(l) for p in sorted(rejected.glob("*.ndjson")) for l in p.read_text().splitlines()]
    # Rows in = rows out + rows rejected.
    assert rows + len(found) == 30
    assert rows == 28
    assert all(r["file"].endswith("Basic.ndjson") and r["reason"] for r in found)
    assert not list(rejected.glob(".*"))  # no temporary files left


def test_flatten_column_of_spark_read_text(spark, tmp_path):
    import flatfhir
    from flatfhir.spark import column_schema, flatten_column

    f = tmp_path / "Basic.ndjson"
    f.write_text("".join(f'{{"resourceType":"Basic","id":"{i}","n":{i},"a":[{i % 3}]}}\n'
                         for i in range(100)))
    df = spark.read.text(str(f)).repartition(1)
    out = flatten_column(df, "Basic").toArrow()
    want = flatfhir.read(f, progress=False)["Basic"]
    assert out.column_names == want.column_names
    assert out.cast(want.schema).equals(want)
    doc = column_schema(df, "Basic")
    assert doc.rows("Basic") == 100
    # A value the given schema cannot hold fails, naming the partition's row.
    bad = spark.createDataFrame([('{"resourceType":"Basic","n":"x"}',)], "value string")
    with pytest.raises(Exception, match=r"value of partition \d+:1: column n is int64"):
        flatten_column(bad, "Basic", doc).collect()


def _basic(path, n):
    path.write_text("".join(f'{{"resourceType":"Basic","id":"{i}","n":{i}}}\n' for i in range(n)))


def test_without_a_schema_the_input_is_read_once_for_it(tmp_path, monkeypatch):
    # No Spark session needed: Spark calls schema(), pickles the data source, and calls
    # reader() on the copy (pyspark.sql.worker.create_data_source / plan_data_source_read).
    import pickle

    from flatfhir import scale
    from flatfhir.spark import FlatfhirDataSource

    f = tmp_path / "Basic.ndjson"
    _basic(f, 50)
    calls = []
    real = scale.shard_schema
    monkeypatch.setattr(scale, "shard_schema", lambda s, **k: calls.append(s) or real(s, **k))
    ds = FlatfhirDataSource({"path": str(f), "shardBytes": "100"})
    schema = ds.schema()
    shards = len(scale.plan_shards(f, shard_bytes=100))
    assert len(calls) == shards > 1
    reader = pickle.loads(pickle.dumps(ds)).reader(schema)
    assert len(calls) == shards  # the document came along; no second pass
    assert len(reader.partitions()) == shards


def test_read_yields_each_batch_as_it_is_flattened(tmp_path):
    # The first chunk's rows reach Spark before a bad line further on fails the task.
    import flatfhir
    from flatfhir import scale
    from flatfhir.spark import FlatfhirDataSource

    small, big = tmp_path / "small", tmp_path / "big"
    small.mkdir(), big.mkdir()
    _basic(small / "Basic.ndjson", 10)
    _basic(big / "Basic.ndjson", 5000)
    with open(big / "Basic.ndjson", "a") as out:
        out.write('{"resourceType":"Basic","id":"x","n":"text"}\n')
    doc = scale.merge_schemas(scale.shard_schema(s) for s in scale.plan_shards(small))
    # A byte-range shard (the file is larger than shardBytes) is read in 4,096-line chunks.
    size = (big / "Basic.ndjson").stat().st_size
    ds = FlatfhirDataSource({"path": str(big), "schemaJson": doc.json, "shardBytes": str(size - 1)})
    reader = ds.reader(ds.schema())
    it = reader.read(reader.partitions()[0])
    assert next(it).num_rows == 4096
    with pytest.raises(flatfhir.BadLineError) as e:
        next(it)
    assert e.value.line == 5001


# --- write_parquet: Spark schedules, Rust flattens, pyarrow writes (no JVM row conversion) --

def _parts(out):
    parts = sorted(out.glob("part-*.parquet"))
    return parts, pa.concat_tables([pq.read_table(p) for p in parts])


@pytest.mark.parametrize("rtype", bds_types())
def test_write_parquet_parts_equal_the_cli(rtype, spark, cli, cli_bds, tmp_path):
    need_shared()
    from flatfhir.spark import write_parquet

    src = BDS / f"{rtype}.ndjson"
    shard_bytes = max(1, os.path.getsize(src) // 4 + 1)
    out = tmp_path / "out"
    res = write_parquet(spark, str(src), str(out), rtype, shard_bytes=shard_bytes)
    parts, got = _parts(out)
    assert len(parts) >= 4 and [str(p) for p in parts] == res.files
    want = pq.read_table(cli_bds / f"{rtype}.parquet")
    # Every part has the same columns and types, and together they are the CLI's table.
    assert all(pq.read_schema(p) == pq.read_schema(parts[0]) for p in parts)
    assert got.equals(want)
    assert res.rows == want.num_rows
    assert (out / "_SUCCESS").exists() and not (out / "_temporary").exists()
    assert pq.ParquetFile(parts[0]).metadata.row_group(0).column(0).compression == "ZSTD"


def test_write_parquet_with_a_given_schema_and_partitions(spark, tmp_path):
    from flatfhir import scale
    from flatfhir.spark import write_parquet

    f = tmp_path / "Basic.ndjson"
    _basic(f, 200)
    doc = scale.merge_schemas(scale.shard_schema(s) for s in scale.plan_shards(f))
    out = tmp_path / "out"
    res = write_parquet(spark, f, out, schema=doc, partitions=3)
    parts, got = _parts(out)
    assert len(parts) == 3
    assert got.column("n").to_pylist() == list(range(200)) and res.rows == 200


def test_write_parquet_skip_rows_in_equal_rows_out_plus_rejected(spark, tmp_path):
    from flatfhir.spark import write_parquet

    f = tmp_path / "Basic.ndjson"
    lines = [f'{{"resourceType":"Basic","id":"{i}"}}' for i in range(30)]
    lines[7] = "{broken"
    lines[22] = '{"resourceType":"Patient","id":"x"}'
    f.write_text("\n".join(lines) + "\n")
    rejected, out = tmp_path / "rejected", tmp_path / "out"
    res = write_parquet(spark, f, out, on_error="skip", shard_bytes=90, rejected=str(rejected))
    _, got = _parts(out)
    found = [json.loads(l) for p in sorted(rejected.glob("*.ndjson")) for l in p.read_text().splitlines()]
    assert got.num_rows + len(found) == 30
    assert got.num_rows == res.rows == 28 and len(res.rejected) == 2
    assert all(r["file"].endswith("Basic.ndjson") and r["reason"] for r in found)


def test_write_parquet_a_failing_shard_leaves_no_parts(spark, tmp_path):
    from flatfhir.spark import write_parquet

    f = tmp_path / "Basic.ndjson"
    _basic(f, 40)
    with open(f, "a") as o:
        o.write("{broken\n")
    out = tmp_path / "out"
    with pytest.raises(Exception, match="Basic.ndjson"):
        write_parquet(spark, f, out, shard_bytes=200)
    assert not out.exists()  # created by the job, removed with its staging folder
    out.mkdir()
    with pytest.raises(Exception, match="Basic.ndjson"):
        write_parquet(spark, f, out, shard_bytes=200)
    assert list(out.iterdir()) == []


def test_write_parquet_refuses_a_non_empty_out_and_object_store_output(spark, tmp_path):
    from flatfhir.errors import OptionsError
    from flatfhir.spark import write_parquet

    f = tmp_path / "Basic.ndjson"
    _basic(f, 20)
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.parquet").write_text("x")
    with pytest.raises(OptionsError, match="not empty"):
        write_parquet(spark, f, out)
    assert (out / "old.parquet").read_text() == "x"
    write_parquet(spark, f, out, overwrite=True, shard_bytes=100)
    assert not (out / "old.parquet").exists()
    assert _parts(out)[1].column("n").to_pylist() == list(range(20))
    with pytest.raises(OptionsError, match="flatfhir convert"):
        write_parquet(spark, f, "s3://bucket/tables/")
