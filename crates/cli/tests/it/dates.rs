//! `--dates typed`: columns of full instants are `timestamp[us, UTC]` holding the right
//! instants, columns of full dates `date32`, every other column stays text, and the summary
//! says which and why. Off by default.

use std::fs::File;
use std::process::Command;

use arrow_array::cast::AsArray;
use arrow_array::types::{Date32Type, TimestampMicrosecondType};
use arrow_array::{Array, RecordBatch};
use arrow_schema::{DataType, TimeUnit};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde_json::Value;

use crate::support::{fixture, flatfhir, root};

fn batch(path: &std::path::Path) -> RecordBatch {
    let b = ParquetRecordBatchReaderBuilder::try_new(File::open(path).unwrap())
        .unwrap()
        .build()
        .unwrap();
    let mut batches: Vec<RecordBatch> = b.map(Result::unwrap).collect();
    assert_eq!(batches.len(), 1, "a small file is one batch");
    batches.remove(0)
}

/// The source texts of a column, by row (None: no value).
fn source(column: &str) -> Vec<Option<String>> {
    std::fs::read_to_string(fixture("dates/Observation.ndjson"))
        .unwrap()
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            v[column].as_str().map(str::to_string)
        })
        .collect()
}

#[test]
fn typed_dates_hold_the_right_instants_and_say_why_others_stay_text() {
    let out = tempfile::tempdir().unwrap();
    let run = flatfhir()
        .args(["convert", "--json", "--dates", "typed"])
        .arg(fixture("dates"))
        .arg("--out")
        .arg(out.path())
        .assert()
        .success();
    let b = batch(&out.path().join("Observation.parquet"));
    let utc = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    for name in ["effectiveDateTime", "issued"] {
        let col = b.column_by_name(name).unwrap();
        assert_eq!(col.data_type(), &utc, "{name}");
        let got = col.as_primitive::<TimestampMicrosecondType>();
        for (row, text) in source(name).iter().enumerate() {
            match text {
                None => assert!(got.is_null(row)),
                Some(t) => {
                    // An independent parser: the `time` crate's RFC 3339.
                    let want = time::OffsetDateTime::parse(
                        t,
                        &time::format_description::well_known::Rfc3339,
                    )
                    .unwrap()
                    .unix_timestamp_nanos()
                        / 1000;
                    assert_eq!(i128::from(got.value(row)), want, "{name} {t}");
                }
            }
        }
    }
    let recorded = b.column_by_name("recorded").unwrap();
    assert_eq!(recorded.data_type(), &DataType::Date32);
    let days: Vec<Option<i32>> = recorded.as_primitive::<Date32Type>().iter().collect();
    // 2019-02-28, 2020-02-29, none, 1900-03-01 in days since 1970-01-01.
    assert_eq!(days, [Some(17_955), Some(18_321), None, Some(-25_508)]);
    for name in ["invalid", "partial", "noOffset"] {
        assert_eq!(
            b.column_by_name(name).unwrap().data_type(),
            &DataType::Utf8,
            "{name}"
        );
    }
    let summary: Value = serde_json::from_slice(&run.get_output().stdout).unwrap();
    let dates = &summary["types"][0]["dates"];
    let by_name = |n: &str| {
        dates
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["column"] == n)
            .unwrap_or_else(|| panic!("{n} not in {dates}"))
            .clone()
    };
    assert_eq!(by_name("issued")["type"], "timestamp[us, UTC]");
    assert_eq!(by_name("recorded")["type"], "date32");
    assert!(
        by_name("invalid")["reason"]
            .as_str()
            .unwrap()
            .contains("2019-02-30")
    );
    assert!(
        by_name("noOffset")["reason"]
            .as_str()
            .unwrap()
            .contains("without offset")
    );
    assert!(
        by_name("partial")["reason"]
            .as_str()
            .unwrap()
            .contains("partial dates")
    );

    // By default every column stays text.
    let plain = tempfile::tempdir().unwrap();
    flatfhir()
        .args(["convert", "-q"])
        .arg(fixture("dates"))
        .arg("--out")
        .arg(plain.path())
        .assert()
        .success();
    let b = batch(&plain.path().join("Observation.parquet"));
    assert!(
        b.schema()
            .fields()
            .iter()
            .all(|f| f.data_type() == &DataType::Utf8)
    );
}

/// pandas and DuckDB read the typed columns as the instants Python's
/// `datetime.fromisoformat` makes of the source text (needs `.venv` with pandas, pyarrow and
/// duckdb at the project root).
#[test]
fn pandas_and_duckdb_read_the_same_instants_as_python() {
    let python = root().join(".venv/bin/python");
    if !python.is_file() {
        eprintln!(
            "SKIPPED: {} is absent (python3 -m venv .venv && .venv/bin/pip install pandas pyarrow duckdb)",
            python.display()
        );
        return;
    }
    let import = Command::new(&python)
        .args(["-c", "import pandas, pyarrow, duckdb"])
        .output()
        .unwrap();
    if !import.status.success() {
        eprintln!(
            "SKIPPED: {} cannot import pandas, pyarrow and duckdb (scripts/test-all installs them)",
            python.display()
        );
        return;
    }
    let out = tempfile::tempdir().unwrap();
    flatfhir()
        .args(["convert", "-q", "--dates", "typed"])
        .arg(fixture("dates"))
        .arg("--out")
        .arg(out.path())
        .assert()
        .success();
    let script = r#"
import json, sys, datetime, re
import pandas as pd, duckdb
path, src = sys.argv[1], sys.argv[2]
rows = [json.loads(l) for l in open(src)]
df = pd.read_parquet(path)
con = duckdb.connect()
for col in ["effectiveDateTime", "issued"]:
    assert str(df[col].dtype) in ("datetime64[us, UTC]", "datetime64[ns, UTC]"), (col, df[col].dtype)
    db = con.execute(f"select {col} from read_parquet('{path}')").fetchall()
    typ = con.execute(f"select typeof({col}) from read_parquet('{path}') limit 1").fetchone()[0]
    assert typ == "TIMESTAMP WITH TIME ZONE", (col, typ)
    for i, r in enumerate(rows):
        text = r.get(col)
        if text is None:
            assert pd.isna(df[col][i]) and db[i][0] is None
            continue
        # Nanosecond digits that are zeros (the only ones flatfhir types) are dropped for
        # Pythons whose fromisoformat takes at most six.
        iso = re.sub(r"(\.\d{6})0+(?=[Z+-])", r"\1", text).replace("Z", "+00:00")
        want = datetime.datetime.fromisoformat(iso).astimezone(datetime.timezone.utc)
        got_pd = df[col][i].to_pydatetime()
        got_db = db[i][0].astimezone(datetime.timezone.utc)
        assert got_pd == want, (col, text, got_pd, want)
        assert got_db == want, (col, text, got_db, want)
for i, r in enumerate(rows):
    text = r.get("recorded")
    got = con.execute(f"select recorded from read_parquet('{path}')").fetchall()[i][0]
    assert (got is None and text is None) or got == datetime.date.fromisoformat(text), (text, got)
assert str(df["invalid"].dtype) in ("object", "str", "string"), df["invalid"].dtype
print("ok")
"#;
    let run = Command::new(python)
        .arg("-c")
        .arg(script)
        .arg(out.path().join("Observation.parquet"))
        .arg(fixture("dates/Observation.ndjson"))
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
}
