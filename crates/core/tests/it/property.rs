//! Property tests: for generated resources, the engine's table equals a naive recursive
//! flatten_json + pandas reference written here over `serde_json::Value`; and the output does
//! not depend on the thread count or on how the input is cut into chunks.

use std::fs::File;
use std::path::Path;

use arrow_array::Array;
use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int64Type};
use arrow_schema::DataType;
use flatfhir_core::{ConvertOptions, NoProgress, ReadOptions, TypeGroup, convert_group, plan};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use proptest::prelude::*;
use serde_json::{Map, Value};

/// flatten_json.flatten(resource, "_"): keys joined by the separator, no separator after an
/// empty prefix, empty containers and scalars are leaves.
fn naive_flatten(v: &Value, prefix: Option<String>, sep: &str, out: &mut Vec<(String, Value)>) {
    let join = |k: &str| match &prefix {
        Some(p) if !p.is_empty() => format!("{p}{sep}{k}"),
        _ => k.to_string(),
    };
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, x) in m {
                naive_flatten(x, Some(join(k)), sep, out);
            }
        }
        Value::Array(a) if !a.is_empty() => {
            for (i, x) in a.iter().enumerate() {
                naive_flatten(x, Some(join(&i.to_string())), sep, out);
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

/// The kind the type policy sees: "int", "float", "bool", "str", "big".
fn kind(v: &Value) -> &'static str {
    match v {
        Value::Bool(_) => "bool",
        Value::String(_) => "str",
        Value::Number(n) if n.is_i64() => "int",
        Value::Number(n) if n.is_u64() => "big",
        Value::Number(_) => "float",
        _ => unreachable!(),
    }
}

struct Expected {
    columns: Vec<(String, DataType)>,
    rows: Vec<Vec<Option<Value>>>,
}

fn expected(resources: &[Value]) -> Expected {
    let flat: Vec<Vec<(String, Value)>> = resources
        .iter()
        .map(|r| {
            let mut out = Vec::new();
            naive_flatten(r, None, "_", &mut out);
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
    let columns = names
        .iter()
        .zip(&kinds)
        .map(|(n, k)| {
            let t = match k.iter().copied().collect::<Vec<_>>().as_slice() {
                ["int"] => DataType::Int64,
                ["bool"] => DataType::Boolean,
                ks if !ks.is_empty() && ks.iter().all(|k| *k == "int" || *k == "float") => {
                    DataType::Float64
                }
                _ => DataType::Utf8,
            };
            (n.clone(), t)
        })
        .collect();
    let rows = flat
        .iter()
        .map(|row| {
            names
                .iter()
                .map(|n| {
                    row.iter()
                        .find(|(k, _)| k == n)
                        .map(|(_, v)| v.clone())
                        .filter(is_value)
                })
                .collect()
        })
        .collect();
    Expected { columns, rows }
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
                    // Numbers and booleans in a text column are their JSON text.
                    other => got == other.to_string().as_str(),
                }
            }
            _ => false,
        },
    }
}

fn convert(dir: &Path, threads: usize, chunk_bytes: usize, budget: usize) -> std::path::PathBuf {
    let out = dir.join(format!("out-{threads}-{chunk_bytes}-{budget}"));
    let read = ReadOptions::default().chunk_bytes(chunk_bytes);
    let p = plan(&[dir.join("Basic.ndjson")], &read).unwrap();
    let group: &TypeGroup = &p.groups[0];
    let opts = ConvertOptions::default()
        .out_dir(out.clone())
        .threads(threads)
        .read(read)
        .memory_budget(budget);
    let report = convert_group(group, &opts, &NoProgress).unwrap();
    // The spill file is unlinked: the output directory holds the output and nothing else.
    let left: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, vec![std::ffi::OsString::from("Basic.parquet")]);
    report.output.unwrap()
}

fn check(resources: &[Value]) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let text: String = resources.iter().map(|r| format!("{r}\n")).collect();
    std::fs::write(dir.path().join("Basic.ndjson"), &text).unwrap();
    let want = expected(resources);

    let reference = convert(dir.path(), 1, 1 << 20, 64 << 20);
    let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(&reference).unwrap()).unwrap();
    let schema = reader.schema().clone();
    let got_cols: Vec<(String, DataType)> = schema
        .fields()
        .iter()
        .map(|f| (f.name().clone(), f.data_type().clone()))
        .collect();
    prop_assert_eq!(&got_cols, &want.columns);
    let batches: Vec<_> = reader.build().unwrap().collect::<Result<_, _>>().unwrap();
    let mut row = 0;
    for b in &batches {
        for i in 0..b.num_rows() {
            for (c, w) in want.rows[row].iter().enumerate() {
                prop_assert!(
                    cell_matches(b.column(c).as_ref(), i, w),
                    "row {} column {}: want {:?}",
                    row,
                    want.columns[c].0,
                    w
                );
            }
            row += 1;
        }
    }
    prop_assert_eq!(row, resources.len());

    // Same bytes with more threads, with tiny chunks (many chunk merges), and with every
    // chunk (budget 0) or some chunks (budget 300 bytes) spilled to disk.
    let bytes = std::fs::read(&reference).unwrap();
    for (threads, chunk, budget) in [
        (2, 1 << 20, 64 << 20),
        (3, 64, 64 << 20),
        (1, 200, 64 << 20),
        (2, 64, 0),
        (2, 200, 300),
    ] {
        let other = std::fs::read(convert(dir.path(), threads, chunk, budget)).unwrap();
        prop_assert!(
            bytes == other,
            "threads {} chunk {} budget {} differ",
            threads,
            chunk,
            budget
        );
    }
    Ok(())
}

fn key() -> impl Strategy<Value = String> {
    prop::sample::select(vec!["a", "b", "code", "value", "given", "é", "x y", "url"])
        .prop_map(str::to_string)
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        (0u64..4).prop_map(|n| Value::from(u64::MAX - n)),
        (-1e6f64..1e6).prop_map(Value::from),
        prop::sample::select(vec![0.5, 1.0, 1e300, -2.5e-8]).prop_map(Value::from),
        "[a-z0-9 \"\\\\é\n-]{0,8}".prop_map(Value::String),
    ]
}

fn value() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(4, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((key(), inner), 0..4).prop_map(|kv| {
                let mut m = Map::new();
                for (k, v) in kv {
                    m.entry(k).or_insert(v);
                }
                Value::Object(m)
            }),
        ]
    })
}

pub(crate) fn resource() -> impl Strategy<Value = Value> {
    prop::collection::vec((key(), value()), 0..5).prop_map(|kv| {
        let mut m = Map::new();
        m.insert("resourceType".into(), Value::from("Basic"));
        for (k, v) in kv {
            m.entry(k).or_insert(v);
        }
        Value::Object(m)
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn engine_matches_naive_reference(resources in prop::collection::vec(resource(), 1..12)) {
        check(&resources)?;
    }
}
