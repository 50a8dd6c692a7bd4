"""Object storage in the Python readers, against a real S3-compatible server (moto's server
mode on 127.0.0.1, started here; skipped with the reason printed when moto is absent): the
sample export uploaded to a bucket and read from ``s3://`` by Spark (``local[2]``, at least
four partitions per large type, byte ranges of the objects) and by Dask equals the CLI's
Parquet of the local files, for every type; ``flatfhir.scale`` plans byte-range shards of
objects and lists a prefix like a directory.

The AWS environment is set when this module is imported (at collection, before any Spark
JVM starts), so Spark's Python workers inherit it as they would on a configured cluster.
"""

from __future__ import annotations

import gzip
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Iterator, Optional

import pyarrow.parquet as pq
import pytest

from conftest import BDS, bds_types, need_shared

SECRET = "flatfhir-test-secret-DO-NOT-PRINT-1234"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


PORT = _free_port()
ENDPOINT = f"http://127.0.0.1:{PORT}"
_ENV = {
    "AWS_ENDPOINT_URL": ENDPOINT,
    "AWS_ALLOW_HTTP": "true",
    "AWS_ACCESS_KEY_ID": "AKIAFLATFHIRTEST",
    "AWS_SECRET_ACCESS_KEY": SECRET,
    "AWS_REGION": "us-east-1",
}
os.environ.update(_ENV)


def _moto_server() -> Optional[str]:
    for c in (os.environ.get("FLATFHIR_MOTO_SERVER"),
              str(Path(sys.executable).parent / "moto_server"),
              shutil.which("moto_server")):
        if c and os.path.exists(c):
            return c
    return None


@pytest.fixture(scope="module")
def bucket() -> Iterator[str]:
    """A bucket holding the sample export under ``export/``; yields ``s3://bucket``."""
    exe = _moto_server()
    if exe is None:
        msg = 'no moto_server (pip install "moto[server]", or set FLATFHIR_MOTO_SERVER)'
        print(msg)
        pytest.skip(msg)
    boto3 = pytest.importorskip("boto3", reason="boto3 (installed with moto) is missing")
    proc = subprocess.Popen([exe, "-H", "127.0.0.1", "-p", str(PORT)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        # Readiness: poll until it answers (it starts in a second or two).
        for _ in range(600):
            try:
                urllib.request.urlopen(f"{ENDPOINT}/moto-api/", timeout=5)
                break
            except OSError:
                time.sleep(0.05)
        else:
            pytest.fail(f"moto_server on port {PORT} did not answer within 30 s")
        s3 = boto3.client("s3", endpoint_url=ENDPOINT, region_name="us-east-1",
                          aws_access_key_id=_ENV["AWS_ACCESS_KEY_ID"],
                          aws_secret_access_key=SECRET)
        s3.create_bucket(Bucket="flatfhir-py")
        if BDS.is_dir():
            for f in sorted(BDS.iterdir()):
                s3.upload_file(str(f), "flatfhir-py", f"export/{f.name}")
        s3.put_object(Bucket="flatfhir-py", Key="small/Basic.ndjson", Body="".join(
            f'{{"resourceType":"Basic","id":"{i}","n":{i}}}\n' for i in range(60)).encode())
        s3.put_object(Bucket="flatfhir-py", Key="gz/Basic.ndjson.gz", Body=gzip.compress("".join(
            f'{{"resourceType":"Basic","id":"{i}","n":{i}}}\n' for i in range(60)).encode()))
        yield "s3://flatfhir-py"
    finally:
        proc.kill()
        proc.wait()


def test_scale_plans_byte_ranges_of_objects_and_lists_prefixes(bucket):
    import flatfhir
    from flatfhir import scale

    shards = scale.plan_shards(f"{bucket}/small/", "Basic", shard_bytes=200)
    assert len(shards) > 4
    assert all(s.path == f"{bucket}/small/Basic.ndjson" for s in shards)
    doc = scale.merge_schemas(scale.shard_schema(s) for s in shards)
    got = [scale.read_shard(s, doc).table for s in shards]
    import pyarrow as pa

    table = pa.concat_tables(got)
    assert table.column("id").to_pylist() == [str(i) for i in range(60)]
    assert table.column("n").to_pylist() == list(range(60))
    # flatfhir.read takes the URL too (a prefix, listed like a directory).
    whole = flatfhir.read(f"{bucket}/small/", progress=False)["Basic"]
    assert whole.equals(table)


def test_gzip_objects_are_one_whole_shard(bucket):
    from flatfhir import scale

    shards = scale.plan_shards(f"{bucket}/gz/", "Basic", shard_bytes=100)
    assert len(shards) == 1 and shards[0].end is None
    doc = scale.merge_schemas([scale.shard_schema(shards[0])])
    t = scale.read_shard(shards[0], doc).table
    assert t.column("n").to_pylist() == list(range(60))


def test_missing_object_names_the_url_and_no_secret(bucket):
    from flatfhir import scale

    with pytest.raises(Exception) as e:
        scale.plan_shards(f"{bucket}/nothing/here.ndjson", "Basic")
    assert f"{bucket}/nothing/here.ndjson" in str(e.value)
    assert SECRET not in str(e.value)


@pytest.fixture(scope="module")
def spark(bucket):
    pytest.importorskip("pyspark", reason="pyspark is not installed (pip install pyspark)")
    if shutil.which("java") is None:
        print("no Java runtime (java on PATH): skipping the Spark tests")
        pytest.skip("no Java runtime for Spark")
    os.environ["PYSPARK_PYTHON"] = sys.executable
    os.environ["PYSPARK_DRIVER_PYTHON"] = sys.executable
    from pyspark.sql import SparkSession

    jvm = "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC"
    b = (SparkSession.builder.master("local[2]").appName("flatfhir-test-s3")
         .config("spark.ui.enabled", "false")
         .config("spark.driver.extraJavaOptions", jvm)
         .config("spark.executor.extraJavaOptions", jvm)
         .config("spark.sql.shuffle.partitions", "2"))
    # The executors' environment, as on a cluster (the credentials' standard chain).
    for k, v in _ENV.items():
        b = b.config(f"spark.executorEnv.{k}", v)
    s = b.getOrCreate()
    from flatfhir.spark import register

    register(s)
    yield s
    s.stop()


def _size(rtype: str) -> int:
    return (BDS / f"{rtype}.ndjson").stat().st_size


@pytest.mark.parametrize("rtype", bds_types())
def test_sample_types_from_s3_through_spark_equal_the_cli(rtype, bucket, spark, cli_bds):
    need_shared()
    from flatfhir.spark import infer_schema

    url = f"{bucket}/export/{rtype}.ndjson"
    shard_bytes = max(1, _size(rtype) // 4 + 1)
    doc = infer_schema(spark, url, rtype, shard_bytes=shard_bytes)
    df = (spark.read.format("flatfhir").option("resourceType", rtype)
          .option("schemaJson", doc.json).option("shardBytes", str(shard_bytes))
          .load(url))
    assert df.rdd.getNumPartitions() >= 4
    got = df.toArrow()
    want = pq.read_table(cli_bds / f"{rtype}.parquet")
    assert got.column_names == want.column_names
    assert got.cast(want.schema).equals(want)
    assert [f.type for f in got.schema] == [f.type for f in want.schema]


@pytest.mark.parametrize("rtype", bds_types())
def test_sample_types_from_s3_through_dask_equal_the_cli(rtype, bucket, cli_bds, tmp_path):
    need_shared()
    pytest.importorskip("dask.dataframe", reason="dask is not installed")
    import flatfhir.dask

    url = f"{bucket}/export/{rtype}.ndjson"
    shard_bytes = max(1, _size(rtype) // 4 + 1)
    ddf = flatfhir.dask.read(url, rtype, shard_bytes=shard_bytes)
    assert ddf.npartitions >= 4
    out = tmp_path / "out"
    ddf.to_parquet(str(out), write_index=False)
    got = pq.read_table(out).replace_schema_metadata(None)
    want = pq.read_table(cli_bds / f"{rtype}.parquet")
    assert got.column_names == want.column_names
    assert [f.type for f in got.schema] == [f.type for f in want.schema]
    assert got.equals(want.replace_schema_metadata(None))
