"""Checks that pandas and DuckDB read every Parquet file in a directory with the same rows
and columns that the file's own metadata declares."""
import pathlib
import sys

import duckdb
import pandas as pd
import pyarrow.parquet as pq

out = pathlib.Path(sys.argv[1])
files = sorted(out.glob("*.parquet"))
if not files:
    sys.exit(f"no Parquet files in {out}")
for f in files:
    meta = pq.read_metadata(f)
    df = pd.read_parquet(f)
    assert df.shape == (meta.num_rows, meta.num_columns), (f, df.shape)
    con = duckdb.connect()
    n = con.execute("select count(*) from read_parquet(?)", [str(f)]).fetchone()[0]
    cols = con.execute("select * from read_parquet(?) limit 0", [str(f)]).description
    assert n == meta.num_rows and len(cols) == meta.num_columns, (f, n, len(cols))
    kv = meta.metadata or {}
    assert b"flatfhir.version" in kv, f
    print(f"OK: {f.name}: pandas and DuckDB read {n} rows x {len(cols)} columns")
