//! The naive reference for a converted table: `flatten_json.flatten(resource, "_")` plus the
//! type policy of docs/columns.md, written over `serde_json::Value` (as in the core crate's
//! property tests), and the comparison of a Parquet file with it.

use std::fs::File;
use std::path::Path;

use arrow_array::Array;
use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int64Type};
use arrow_schema::DataType;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde_json::Value;

fn naive_flatten(v: &Value, prefix: Option<String>, out: &mut Vec<(String, Value)>) {
    let join = |k: &str| match &prefix {
        Some(p) if !p.is_empty() => format!("{p}_{k}"),
        _ => k.to_string(),
    };
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, x) in m {
                naive_flatten(x, Some(join(k)), out);
            }
        }
        Value::Array(a) if !a.is_empty() => {
            for (i, x) in a.iter().enumerate() {
                naive_flatten(x, Some(join(&i.to_string())), out);
            }
        }
        _ => out.push((prefix.unwrap_or_default(), v.clone())),
    }
}

fn is_value(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
        _ => true,
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Bool(_) => "bool",
        Value::String(_) => "str",
        Value::Number(n) if n.is_i64() => "int",
        Value::Number(n) if n.is_u64() => "big",
        Value::Number(_) => "float",
        _ => "other",
    }
}

/// Compares the Parquet file at `path` with the reference table of `resources`; `None` when
/// the reference cannot say (a flattened name repeated within one resource, which
/// flatten_json resolves by overwriting and the engine refuses).
pub(crate) fn check_parquet(path: &Path, resources: &[Value]) {
    let flat: Vec<Vec<(String, Value)>> = resources
        .iter()
        .map(|r| {
            let mut out = Vec::new();
            naive_flatten(r, None, &mut out);
            out
        })
        .collect();
    let mut names: Vec<String> = Vec::new();
    let mut kinds: Vec<std::collections::BTreeSet<&str>> = Vec::new();
    for row in &flat {
        for (k, v) in row {
            let i = names.iter().position(|n| n == k).unwrap_or_else(|| {
                names.push(k.clone());
                kinds.push(Default::default());
                names.len() - 1
            });
            if is_value(v) {
                kinds[i].insert(kind(v));
            }
        }
    }
    let types: Vec<DataType> = kinds
        .iter()
        .map(|k| match k.iter().copied().collect::<Vec<_>>().as_slice() {
            ["int"] => DataType::Int64,
            ["bool"] => DataType::Boolean,
            ks if !ks.is_empty() && ks.iter().all(|k| *k == "int" || *k == "float") => {
                DataType::Float64
            }
            _ => DataType::Utf8,
        })
        .collect();

    let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(path).unwrap()).unwrap();
    let got: Vec<(String, DataType)> = reader
        .schema()
        .fields()
        .iter()
        .map(|f| (f.name().clone(), f.data_type().clone()))
        .collect();
    let want: Vec<(String, DataType)> = names.iter().cloned().zip(types).collect();
    assert_eq!(got, want, "columns");
    let mut row = 0;
    for b in reader.build().unwrap() {
        let b = b.unwrap();
        for i in 0..b.num_rows() {
            for (c, name) in names.iter().enumerate() {
                let cell = flat[row]
                    .iter()
                    .rev()
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| v.clone())
                    .filter(is_value);
                assert!(
                    cell_matches(b.column(c).as_ref(), i, &cell),
                    "row {row} column {name}: want {cell:?}, got {:?}",
                    arrow_array::Array::to_data(b.column(c).as_ref()).slice(i, 1)
                );
            }
            row += 1;
        }
    }
    assert_eq!(row, resources.len(), "rows");
}

fn cell_matches(a: &dyn Array, i: usize, want: &Option<Value>) -> bool {
    match want {
        None => a.is_null(i),
        Some(_) if a.is_null(i) => false,
        Some(v) => match a.data_type() {
            DataType::Int64 => v.as_i64() == Some(a.as_primitive::<Int64Type>().value(i)),
            DataType::Float64 => v.as_f64() == Some(a.as_primitive::<Float64Type>().value(i)),
            DataType::Boolean => v.as_bool() == Some(a.as_boolean().value(i)),
            DataType::Utf8 => {
                let got = a.as_string::<i32>().value(i);
                match v {
                    Value::String(s) => s == got,
                    // A number in a text column is its JSON text: compare as numbers (the
                    // source text, `1.50`, may differ from serde_json's `1.5`).
                    Value::Number(n) => {
                        got.parse::<f64>().ok() == n.as_f64() || got == n.to_string()
                    }
                    // A boolean in a text column is `true` / `false`.
                    other => {
                        let text = other.to_string();
                        got == text
                    }
                }
            }
            _ => false,
        },
    }
}
