//! `flatfhir schema`: union schema per type, as a table and as JSON.

use serde_json::Value;

use crate::support::{fixture, flatfhir};

#[test]
fn schema_json_lists_columns_types_counts_and_first_seen() {
    let assert = flatfhir()
        .args(["schema", "-q", "--json"])
        .arg(fixture("basic"))
        .assert()
        .success();
    let v: Value = serde_json::from_slice(&assert.get_output().stdout).unwrap();
    let obs = v
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["resource_type"] == "Observation")
        .unwrap();
    assert_eq!(obs["rows"], 4);
    let col = |name: &str| {
        obs["columns"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .unwrap()
            .clone()
    };
    let value = col("valueQuantity_value");
    assert_eq!(value["type"], "double");
    assert_eq!(value["non_null"], 3);
    assert!(
        value["first_seen"]
            .as_str()
            .unwrap()
            .ends_with("Observation.ndjson:1")
    );
    let flag = col("valueBoolean");
    assert_eq!(flag["type"], "bool");
    assert!(
        flag["first_seen"]
            .as_str()
            .unwrap()
            .ends_with("Observation.ndjson:4")
    );
}

#[test]
fn schema_table_output() {
    let assert = flatfhir()
        .args(["schema", "-q"])
        .arg(fixture("decimals"))
        .assert()
        .success();
    let out = String::from_utf8_lossy(&assert.get_output().stdout).into_owned();
    assert!(out.starts_with("Observation (3 rows, 3 columns)"), "{out}");
    assert!(
        out.lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>()[..3]
                == ["valueQuantity_value", "double", "3"]),
        "{out}"
    );
}

#[test]
fn schema_reports_bad_lines() {
    let assert = flatfhir()
        .args(["schema", "-q"])
        .arg(fixture("bad/truncated.Patient.ndjson"))
        .assert()
        .code(1);
    let err = String::from_utf8_lossy(&assert.get_output().stderr).into_owned();
    assert!(err.contains("truncated.Patient.ndjson:2:"), "{err}");
}

/// `schema --save` writes a schema document; `convert --schema` with it writes the same
/// table as a plain `convert`, and fails with file and line on input that does not fit it.
#[test]
fn saved_schema_converts_to_the_same_table_and_refuses_misfits() {
    let dir = tempfile::tempdir().unwrap();
    let doc = dir.path().join("schema.json");
    flatfhir()
        .args(["schema", "-q", "--save"])
        .arg(&doc)
        .arg(fixture("basic"))
        .assert()
        .success();
    let v: Value = serde_json::from_slice(&std::fs::read(&doc).unwrap()).unwrap();
    assert_eq!(v["format"], "flatfhir-schema");
    assert_eq!(v["version"], 1);
    assert!(
        v["types"]["Observation"]["columns"]
            .as_array()
            .unwrap()
            .len()
            > 3
    );

    let plain = dir.path().join("plain");
    let given = dir.path().join("given");
    flatfhir()
        .args(["convert", "-q", "-o"])
        .arg(&plain)
        .arg(fixture("basic"))
        .assert()
        .success();
    flatfhir()
        .args(["convert", "-q", "--schema"])
        .arg(&doc)
        .arg("-o")
        .arg(&given)
        .arg(fixture("basic"))
        .assert()
        .success();
    for e in std::fs::read_dir(&plain).unwrap() {
        let name = e.unwrap().file_name();
        if name.to_string_lossy().ends_with(".parquet") {
            assert_eq!(
                std::fs::read(plain.join(&name)).unwrap(),
                std::fs::read(given.join(&name)).unwrap(),
                "{name:?}"
            );
        }
    }

    let input = dir.path().join("in");
    std::fs::create_dir(&input).unwrap();
    std::fs::write(
        input.join("Observation.ndjson"),
        "{\"resourceType\":\"Observation\",\"id\":\"x\"}\n{\"resourceType\":\"Observation\",\"unheardOf\":1}\n",
    )
    .unwrap();
    let out = flatfhir()
        .args(["convert", "-q", "--schema"])
        .arg(&doc)
        .arg("-o")
        .arg(dir.path().join("bad"))
        .arg(&input)
        .assert()
        .code(1);
    let err = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
    assert!(
        err.contains(
            "Observation.ndjson:2: column unheardOf (unheardOf) is not in the given schema"
        ),
        "{err}"
    );
    assert!(!dir.path().join("bad/Observation.parquet").exists());
}
