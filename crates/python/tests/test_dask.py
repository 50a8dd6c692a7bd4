"""flatfhir.dask.read: one partition per shard; computed, and written with to_parquet, it
equals the CLI's table for every type of the sample export."""

from __future__ import annotations

import os

import pyarrow.parquet as pq
import pytest

from conftest import BDS, FIXTURES, bds_types, need_shared

pytest.importorskip("dask.dataframe", reason="dask is not installed (pip install 'dask[dataframe]')")


@pytest.mark.parametrize("rtype", bds_types())
def test_sample_types_through_dask_equal_the_cli(rtype, cli_bds, tmp_path):
    need_shared()
    import flatfhir.dask

    src = BDS / f"{rtype}.ndjson"
    shard_bytes = max(1, os.path.getsize(src) // 4 + 1)
    ddf = flatfhir.dask.read(str(src), rtype, shard_bytes=shard_bytes)
    assert ddf.npartitions >= min(4, os.path.getsize(src))
    out = tmp_path / "out"
    ddf.to_parquet(str(out), write_index=False)
    got = pq.read_table(out).replace_schema_metadata(None)
    want = pq.read_table(cli_bds / f"{rtype}.parquet")
    assert got.column_names == want.column_names
    assert [f.type for f in got.schema] == [f.type for f in want.schema]
    assert got.equals(want.replace_schema_metadata(None))


def test_given_schema_and_nulls_keep_their_types(tmp_path):
    import flatfhir
    import flatfhir.dask
    from flatfhir import scale

    f = tmp_path / "Basic.ndjson"
    f.write_text("".join(
        f'{{"resourceType":"Basic","id":"{i}"' + (f',"n":{i}' if i % 2 else "") + "}\n"
        for i in range(40)))
    doc = scale.merge_schemas(scale.shard_schema(s) for s in scale.plan_shards(f))
    ddf = flatfhir.dask.read(str(f), schema=doc, shard_bytes=120)
    assert ddf.npartitions > 4
    assert str(ddf.dtypes["n"]) == "int64[pyarrow]"
    got = ddf.compute()
    want = flatfhir.read(f, progress=False)["Basic"].to_pandas()
    assert got["n"].isna().sum() == 20
    assert list(got["id"]) == list(want["id"])
