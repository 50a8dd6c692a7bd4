//! Helpers shared by the CLI tests: running the binary, locating fixtures, reading outputs.

use std::fs::File;
use std::path::{Path, PathBuf};

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int64Type};
use arrow_array::{Array, RecordBatch};
use arrow_schema::DataType;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde_json::Value;

/// The project root.
pub(crate) fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// A fixture path under `fixtures/`.
pub(crate) fn fixture(rel: &str) -> PathBuf {
    root().join("fixtures").join(rel)
}

/// `../shared` (or `$FLATFHIR_SHARED`), or `None` (with a printed reason) when it is absent.
pub(crate) fn shared() -> Option<PathBuf> {
    let p =
        std::env::var_os("FLATFHIR_SHARED").map_or_else(|| root().join("../shared"), PathBuf::from);
    if p.join("fixtures/bds-r4").is_dir() {
        Some(p.canonicalize().unwrap())
    } else {
        eprintln!("skipped: ../shared/fixtures/bds-r4 is not present next to the project");
        None
    }
}

/// The `flatfhir` command.
pub(crate) fn flatfhir() -> assert_cmd::Command {
    assert_cmd::Command::cargo_bin("flatfhir").unwrap()
}

/// A table read back: column names, types, and rows as JSON values (null for no value).
#[derive(Debug, PartialEq)]
pub(crate) struct Table {
    pub(crate) columns: Vec<(String, DataType)>,
    pub(crate) rows: Vec<Vec<Value>>,
}

impl Table {
    pub(crate) fn names(&self) -> Vec<&str> {
        self.columns.iter().map(|(n, _)| n.as_str()).collect()
    }

    pub(crate) fn col(&self, name: &str) -> Vec<Value> {
        let i = self
            .columns
            .iter()
            .position(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("no column {name}"));
        self.rows.iter().map(|r| r[i].clone()).collect()
    }

    pub(crate) fn data_type(&self, name: &str) -> DataType {
        self.columns
            .iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("no column {name}"))
            .1
            .clone()
    }
}

fn cell(a: &dyn Array, i: usize) -> Value {
    if a.is_null(i) {
        return Value::Null;
    }
    match a.data_type() {
        DataType::Int64 => Value::from(a.as_primitive::<Int64Type>().value(i)),
        DataType::Float64 => Value::from(a.as_primitive::<Float64Type>().value(i)),
        DataType::Boolean => Value::from(a.as_boolean().value(i)),
        DataType::Utf8 => Value::from(a.as_string::<i32>().value(i)),
        other => panic!("unexpected type {other}"),
    }
}

fn collect(batches: Vec<RecordBatch>, schema: &arrow_schema::Schema) -> Table {
    let columns = schema
        .fields()
        .iter()
        .map(|f| (f.name().clone(), f.data_type().clone()))
        .collect();
    let mut rows = Vec::new();
    for b in batches {
        for i in 0..b.num_rows() {
            rows.push(b.columns().iter().map(|c| cell(c.as_ref(), i)).collect());
        }
    }
    Table { columns, rows }
}

/// Reads a Parquet file.
pub(crate) fn read_parquet(path: &Path) -> Table {
    let builder = ParquetRecordBatchReaderBuilder::try_new(File::open(path).unwrap()).unwrap();
    let schema = builder.schema().clone();
    let batches = builder
        .build()
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    collect(batches, &schema)
}

/// Reads an Arrow IPC file.
pub(crate) fn read_arrow(path: &Path) -> Table {
    let reader = arrow_ipc::reader::FileReader::try_new(File::open(path).unwrap(), None).unwrap();
    let schema = reader.schema();
    let batches = reader.collect::<Result<Vec<_>, _>>().unwrap();
    collect(batches, &schema)
}

/// Files in a directory (names), sorted, including hidden ones.
pub(crate) fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}
