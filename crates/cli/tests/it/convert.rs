//! `flatfhir convert`: the contract of the flatten-engine issue, one test per promise.

use serde_json::{Value, json};

use crate::support::{fixture, flatfhir, listing, read_arrow, read_parquet, shared};

fn out_dir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

#[test]
fn columns_follow_flatten_json_names_and_first_appearance() {
    let out = out_dir();
    flatfhir()
        .args(["convert", "--quiet"])
        .arg(fixture("basic"))
        .arg("--out")
        .arg(out.path())
        .assert()
        .success();
    let t = read_parquet(&out.path().join("Patient.parquet"));
    assert_eq!(
        t.names(),
        [
            "resourceType",
            "id",
            "meta_lastUpdated",
            "extension_0_url",
            "extension_0_extension_0_url",
            "extension_0_extension_0_valueString",
            "extension_1_url",
            "extension_1_valueInteger",
            "identifier_0_system",
            "identifier_0_value",
            "name_0_use",
            "name_0_family",
            "name_0_given_0",
            "name_0_given_1",
            "gender",
            "birthDate",
            "_birthDate_extension_0_url",
            "_birthDate_extension_0_valueCode",
            "active",
            "multipleBirthInteger",
            "name_1_use",
            "name_1_given_0",
            "deceasedBoolean",
            "extension_0_valueDecimal",
            "telecom",
            "maritalStatus_coding_0_system",
            "maritalStatus_coding_0_code",
            "maritalStatus_text",
            "photo"
        ]
    );
    assert_eq!(t.col("id"), [json!("p1"), json!("p2"), json!("p3")]);
    assert_eq!(
        t.col("name_0_given_1"),
        [json!("Maria"), Value::Null, Value::Null]
    );
    assert_eq!(
        t.col("name_0_family"),
        [json!("Müller"), json!("Øberg"), Value::Null]
    );
    // Partial dates stay strings.
    assert_eq!(
        t.col("birthDate"),
        [json!("1970"), json!("1985-07"), json!("2001-12-31")]
    );
    // `[]` and `{}` are no value.
    assert_eq!(t.col("telecom"), [Value::Null, Value::Null, Value::Null]);
    assert_eq!(t.col("photo"), [Value::Null, Value::Null, Value::Null]);
}

#[test]
fn type_policy_over_all_values() {
    use arrow_schema::DataType::*;
    let out = out_dir();
    flatfhir()
        .args(["convert", "-q"])
        .arg(fixture("basic"))
        .arg("--out")
        .arg(out.path())
        .assert()
        .success();
    let p = read_parquet(&out.path().join("Patient.parquet"));
    assert_eq!(p.data_type("extension_1_valueInteger"), Int64);
    assert_eq!(p.data_type("active"), Boolean);
    assert_eq!(p.col("active"), [json!(true), json!(false), Value::Null]);
    // Integer and boolean mixed: text, each value written as its JSON text.
    assert_eq!(p.data_type("multipleBirthInteger"), Utf8);
    assert_eq!(
        p.col("multipleBirthInteger"),
        [json!("2"), Value::Null, json!("true")]
    );
    // A column with no value at all is nullable text.
    assert_eq!(p.data_type("telecom"), Utf8);

    let o = read_parquet(&out.path().join("Observation.parquet"));
    // 170, 72.5 and 1.0e1: integers and fractions → Float64.
    assert_eq!(o.data_type("valueQuantity_value"), Float64);
    assert_eq!(
        o.col("valueQuantity_value"),
        [json!(170.0), json!(72.5), json!(10.0), Value::Null]
    );
    assert_eq!(o.data_type("component_0_valueInteger"), Int64);
    // A string "3" and a number 4: mixed kinds → text.
    assert_eq!(o.data_type("note_0_text"), Utf8);
    assert_eq!(
        o.col("note_0_text"),
        [Value::Null, Value::Null, json!("3"), json!("4")]
    );
    assert_eq!(o.col("component_1_valueString")[1], json!("x\"y\\zé\n"));
}

#[test]
fn input_hygiene_bom_crlf_blank_lines_gzip() {
    let out = out_dir();
    flatfhir()
        .args(["convert", "-q"])
        .arg(fixture("hygiene"))
        .arg(fixture("hygiene/Procedure.data"))
        .arg("--out")
        .arg(out.path())
        .assert()
        .success();
    let c = read_parquet(&out.path().join("Condition.parquet"));
    assert_eq!(c.col("id"), [json!("c1"), json!("c2"), json!("c3")]);
    assert_eq!(
        c.col("resourceType")[0],
        json!("Condition"),
        "the BOM must not stick to the first key"
    );
    let e = read_parquet(&out.path().join("Encounter.parquet"));
    assert_eq!(e.col("id"), [json!("e1"), json!("e2")]);
    // gzip detected by magic bytes, not by name
    let p = read_parquet(&out.path().join("Procedure.parquet"));
    assert_eq!(p.col("performedDateTime"), [Value::Null, json!("2019")]);
}

#[test]
fn natural_file_order_and_directory_rules() {
    let out = out_dir();
    flatfhir()
        .args(["convert", "-q"])
        .arg(fixture("multi"))
        .arg("--out")
        .arg(out.path())
        .assert()
        .success();
    let o = read_parquet(&out.path().join("Observation.parquet"));
    assert_eq!(
        o.col("id"),
        [
            "n1-1", "n1-2", "n2-1", "n2-2", "n10-1", "n10-2", "s000", "s001"
        ]
        .map(|s| json!(s))
    );
    // manifest.json, README.md, error/ and deleted/ are not read.
    assert_eq!(
        listing(out.path()),
        [
            ".flatfhir-tables.json",
            "Observation.parquet",
            "Patient.parquet"
        ]
    );
}

#[test]
fn files_without_a_type_in_their_name_are_typed_by_content() {
    let out = out_dir();
    flatfhir()
        .args(["convert", "-q"])
        .arg(fixture("sniffed"))
        .arg("--out")
        .arg(out.path())
        .assert()
        .success();
    assert_eq!(
        read_parquet(&out.path().join("Patient.parquet")).col("id"),
        [json!("sp1"), json!("sp2")]
    );
    assert_eq!(
        read_parquet(&out.path().join("Observation.parquet")).col("id"),
        [json!("so1")]
    );
}

/// Each kind of bad line: exit 1, file:line: reason on stderr, no output and no temp file left.
#[test]
fn bad_lines_fail_the_type_with_file_line_and_reason() {
    let cases = [
        ("not-json.Patient.ndjson", 2, "not valid JSON"),
        ("not-utf8.Patient.ndjson", 2, "not valid UTF-8"),
        ("not-object.Patient.ndjson", 2, "not a JSON object"),
        ("truncated.Patient.ndjson", 2, "truncated"),
        (
            "wrong-type.Patient.ndjson",
            2,
            "resourceType is Observation, but this file holds Patient",
        ),
        ("duplicate-key.Patient.ndjson", 2, "duplicate key gender"),
    ];
    for (file, line, reason) in cases {
        let out = out_dir();
        let path = fixture("bad").join(file);
        let assert = flatfhir()
            .args(["convert", "-q"])
            .arg(&path)
            .arg("--out")
            .arg(out.path())
            .assert()
            .code(1);
        let stderr = String::from_utf8_lossy(&assert.get_output().stderr).into_owned();
        let want = format!("{}:{line}: ", path.display());
        assert!(
            stderr.contains(&want) && stderr.contains(reason),
            "{file}: stderr was {stderr}"
        );
        assert!(
            listing(out.path()).is_empty(),
            "{file}: left {:?}",
            listing(out.path())
        );
    }
}

#[test]
fn on_error_skip_sets_bad_lines_aside_verbatim_and_exits_2() {
    let out = out_dir();
    let path = fixture("bad/not-json.Patient.ndjson");
    let assert = flatfhir()
        .args(["convert", "--on-error", "skip"])
        .arg(&path)
        .arg("--out")
        .arg(out.path())
        .assert()
        .code(2);
    let stderr = String::from_utf8_lossy(&assert.get_output().stderr).into_owned();
    assert!(stderr.contains("1 lines rejected"), "{stderr}");
    assert_eq!(
        read_parquet(&out.path().join("Patient.parquet")).col("id"),
        [json!("ok1"), json!("ok2")]
    );
    let rejected = std::fs::read(out.path().join("_rejected/Patient.ndjson")).unwrap();
    let source = std::fs::read(&path).unwrap();
    let bad_line = source.split(|&b| b == b'\n').nth(1).unwrap();
    assert_eq!(rejected, [bad_line, b"\n"].concat());
    let reasons =
        std::fs::read_to_string(out.path().join("_rejected/Patient.errors.ndjson")).unwrap();
    let rec: Value = serde_json::from_str(reasons.trim()).unwrap();
    assert_eq!(rec["line"], 2);
    assert_eq!(rec["file"], json!(path.display().to_string()));
    assert!(rec["reason"].as_str().unwrap().contains("not valid JSON"));
}

#[test]
fn non_utf8_lines_are_kept_byte_for_byte() {
    let out = out_dir();
    let path = fixture("bad/not-utf8.Patient.ndjson");
    flatfhir()
        .args(["convert", "-q", "--on-error", "skip"])
        .arg(&path)
        .arg("--out")
        .arg(out.path())
        .assert()
        .code(2);
    let rejected = std::fs::read(out.path().join("_rejected/Patient.ndjson")).unwrap();
    assert_eq!(
        rejected,
        b"{\"resourceType\":\"Patient\",\"name\":\"\xff\xfe\"}\n"
    );
}

#[test]
fn overlong_lines_are_rejected_and_kept_verbatim() {
    let dir = out_dir();
    let input = dir.path().join("Patient.ndjson");
    let long = format!(
        "{{\"resourceType\":\"Patient\",\"id\":\"{}\"}}",
        "x".repeat(5000)
    );
    std::fs::write(&input, format!("{{\"resourceType\":\"Patient\",\"id\":\"a\"}}\n{long}\n{{\"resourceType\":\"Patient\",\"id\":\"b\"}}\n")).unwrap();
    let out = dir.path().join("out");
    let assert = flatfhir()
        .args(["convert", "-q", "--max-line-bytes", "1000"])
        .arg(&input)
        .arg("--out")
        .arg(&out)
        .assert()
        .code(1);
    let stderr = String::from_utf8_lossy(&assert.get_output().stderr).into_owned();
    let want = format!(
        "Patient.ndjson:2: line is {} bytes, longer than the limit of 1000",
        long.len()
    );
    assert!(stderr.contains(&want), "{stderr}");
    flatfhir()
        .args([
            "convert",
            "-q",
            "--max-line-bytes",
            "1000",
            "--on-error",
            "skip",
        ])
        .arg(&input)
        .arg("--out")
        .arg(&out)
        .assert()
        .code(2);
    assert_eq!(
        read_parquet(&out.join("Patient.parquet")).col("id"),
        [json!("a"), json!("b")]
    );
    assert_eq!(
        std::fs::read_to_string(out.join("_rejected/Patient.ndjson")).unwrap(),
        format!("{long}\n")
    );
}

#[test]
fn name_collisions_fail_clearly() {
    let out = out_dir();
    let assert = flatfhir()
        .args(["convert", "-q"])
        .arg(fixture("collision"))
        .arg("--out")
        .arg(out.path())
        .assert()
        .code(1);
    let stderr = String::from_utf8_lossy(&assert.get_output().stderr).into_owned();
    assert!(
        stderr.contains("\"a_b\"") && stderr.contains("a_b and a.b") && stderr.contains("--sep"),
        "{stderr}"
    );
    // With another separator the two paths stay apart.
    flatfhir()
        .args(["convert", "-q", "--sep", "."])
        .arg(fixture("collision"))
        .arg("--out")
        .arg(out.path())
        .assert()
        .success();
    let t = read_parquet(&out.path().join("Basic.parquet"));
    assert_eq!(t.names(), ["resourceType", "id", "a_b", "a.b"]);
}

#[test]
fn decimals_float_by_default_exact_on_request() {
    let out = out_dir();
    flatfhir()
        .args(["convert", "-q"])
        .arg(fixture("decimals"))
        .arg("--out")
        .arg(out.path())
        .assert()
        .success();
    let t = read_parquet(&out.path().join("Observation.parquet"));
    assert_eq!(
        t.col("valueQuantity_value"),
        [json!(1.5), json!(1000.0), json!(2.0)]
    );
    flatfhir()
        .args(["convert", "-q", "--decimals", "exact", "--overwrite"])
        .arg(fixture("decimals"))
        .arg("--out")
        .arg(out.path())
        .assert()
        .success();
    let t = read_parquet(&out.path().join("Observation.parquet"));
    assert_eq!(
        t.col("valueQuantity_value"),
        [json!("1.50"), json!("1e3"), json!("2")]
    );
}

#[test]
fn options_sep_exclude_types() {
    let out = out_dir();
    flatfhir()
        .args([
            "convert",
            "-q",
            "--sep",
            ".",
            "--exclude",
            "meta,extension",
            "--types",
            "Patient",
        ])
        .arg(fixture("basic"))
        .arg("--out")
        .arg(out.path())
        .assert()
        .success();
    assert_eq!(
        listing(out.path()),
        [".flatfhir-tables.json", "Patient.parquet"]
    );
    let t = read_parquet(&out.path().join("Patient.parquet"));
    assert!(t.names().contains(&"name.0.given.1"));
    assert!(
        !t.names()
            .iter()
            .any(|n| n.starts_with("meta") || n.starts_with("extension")),
        "{:?}",
        t.names()
    );
    // A nested key of the same name is not a root key, so it stays.
    assert!(t.names().contains(&"_birthDate.extension.0.url"));
    flatfhir()
        .args(["convert", "-q", "--types", "Nope"])
        .arg(fixture("basic"))
        .arg("--out")
        .arg(out.path())
        .assert()
        .code(1);
}

#[test]
fn arrow_format_and_compression_choices_hold_the_same_table() {
    let out = out_dir();
    let base = out.path().join("zstd");
    flatfhir()
        .args(["convert", "-q"])
        .arg(fixture("basic"))
        .arg("--out")
        .arg(&base)
        .assert()
        .success();
    let want = read_parquet(&base.join("Observation.parquet"));
    for (format, compression) in [
        ("parquet", "snappy"),
        ("parquet", "none"),
        ("arrow", "zstd"),
        ("arrow", "none"),
    ] {
        let dir = out.path().join(format!("{format}-{compression}"));
        flatfhir()
            .args([
                "convert",
                "-q",
                "--format",
                format,
                "--compression",
                compression,
            ])
            .arg(fixture("basic"))
            .arg("--out")
            .arg(&dir)
            .assert()
            .success();
        let got = if format == "arrow" {
            read_arrow(&dir.join("Observation.arrow"))
        } else {
            read_parquet(&dir.join("Observation.parquet"))
        };
        assert_eq!(got, want, "{format}/{compression}");
    }
    flatfhir()
        .args([
            "convert",
            "-q",
            "--format",
            "arrow",
            "--compression",
            "snappy",
        ])
        .arg(fixture("basic"))
        .arg("--out")
        .arg(out.path().join("x"))
        .assert()
        .code(64);
}

#[test]
fn row_groups_and_parquet_metadata() {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    let out = out_dir();
    flatfhir()
        .args(["convert", "-q", "--row-group-rows", "2"])
        .arg(fixture("basic/Observation.ndjson"))
        .arg("--out")
        .arg(out.path())
        .assert()
        .success();
    let path = out.path().join("Observation.parquet");
    let reader = SerializedFileReader::new(std::fs::File::open(&path).unwrap()).unwrap();
    let meta = reader.metadata();
    assert_eq!(meta.num_row_groups(), 2);
    let kv = meta.file_metadata().key_value_metadata().unwrap();
    let get = |k: &str| kv.iter().find(|e| e.key == k).and_then(|e| e.value.clone());
    assert_eq!(
        get("flatfhir.version").as_deref(),
        Some(env!("CARGO_PKG_VERSION"))
    );
    assert!(
        get("flatfhir.source_files")
            .unwrap()
            .contains("Observation.ndjson")
    );
    // Column statistics are written.
    let col = meta.row_group(0).column(1);
    assert!(
        col.statistics().is_some(),
        "no statistics on {}",
        col.column_path()
    );
    // Strings carry the UTF8 (String) logical type.
    let descr = meta.file_metadata().schema_descr();
    assert_eq!(
        descr.column(1).logical_type_ref(),
        Some(&parquet::basic::LogicalType::String)
    );
    assert_eq!(read_parquet(&path).rows.len(), 4);
}

#[test]
fn max_columns_guard_names_the_widest_paths() {
    let out = out_dir();
    let assert = flatfhir()
        .args(["convert", "-q", "--max-columns", "5"])
        .arg(fixture("basic/Patient.ndjson"))
        .arg("--out")
        .arg(out.path())
        .assert()
        .code(1);
    let stderr = String::from_utf8_lossy(&assert.get_output().stderr).into_owned();
    assert!(
        stderr.contains("exceed the limit of 5") && stderr.contains("columns)"),
        "{stderr}"
    );
}

/// Converts the `basic` and `multi` fixtures into `dir` with extra flags: the Observation
/// output's bytes and the JSON summary.
fn convert_observations(dir: &std::path::Path, extra: &[&str]) -> (Vec<u8>, serde_json::Value) {
    let assert = flatfhir()
        .args(["convert", "-q", "--json"])
        .args(extra)
        .arg(fixture("basic"))
        .arg(fixture("multi"))
        .arg("--out")
        .arg(dir)
        .assert()
        .success();
    let summary = serde_json::from_slice(&assert.get_output().stdout).unwrap();
    (
        std::fs::read(dir.join("Observation.parquet")).unwrap(),
        summary,
    )
}

#[test]
fn output_does_not_depend_on_thread_count() {
    let out = out_dir();
    let mut files = Vec::new();
    for (name, args) in [
        ("1", ["--threads", "1"].as_slice()),
        ("2", &["--threads", "2"]),
        ("3", &["--threads", "3"]),
    ] {
        files.push(convert_observations(&out.path().join(name), args).0);
    }
    for (i, f) in files.iter().enumerate().skip(1) {
        assert!(files[0] == *f, "run {i} differs");
    }
}

#[test]
fn spilling_to_disk_changes_nothing_and_leaves_nothing() {
    let out = out_dir();
    let run = |name: &str, extra: &[&str]| convert_observations(&out.path().join(name), extra);
    let (held, summary) = run("memory", &[]);
    assert_eq!(summary["types"][0]["spilled_bytes"], 0, "{summary}");
    let spill = out.path().join("spill");
    std::fs::create_dir_all(&spill).unwrap();
    let spill_arg = spill.to_str().unwrap();
    let (spilled, summary) = run(
        "disk",
        &[
            "--memory-budget",
            "0",
            "--threads",
            "2",
            "--spill-dir",
            spill_arg,
        ],
    );
    assert!(
        summary["types"][0]["spilled_bytes"].as_u64().unwrap() > 0,
        "{summary}"
    );
    assert!(held == spilled, "output differs when spilled");
    assert_eq!(
        std::fs::read_dir(&spill).unwrap().count(),
        0,
        "spill file left behind"
    );
}

#[test]
fn json_summary_on_stdout() {
    let out = out_dir();
    let assert = flatfhir()
        .args(["convert", "-q", "--json"])
        .arg(fixture("multi"))
        .arg("--out")
        .arg(out.path())
        .assert()
        .success();
    let v: Value = serde_json::from_slice(&assert.get_output().stdout).unwrap();
    assert_eq!(v["rows"], 9);
    assert_eq!(v["types"][0]["resource_type"], "Observation");
    assert_eq!(v["types"][0]["rows"], 8);
    assert!(
        v["skipped_files"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f.as_str().unwrap().ends_with("manifest.json"))
    );
}

#[test]
fn usage_errors_exit_64_missing_input_exits_1() {
    flatfhir().args(["convert", "--out", "x"]).assert().code(64);
    flatfhir()
        .args(["convert", "/definitely/not/here", "--out", "x"])
        .assert()
        .code(1);
}

/// The real sample export (../shared): every type converts; the widest has 1,031 columns.
/// The cell-by-cell comparison with the Python reference runs in `.ci/run`.
#[test]
fn shared_sample_export_converts() {
    let Some(shared) = shared() else { return };
    let out = out_dir();
    let assert = flatfhir()
        .args(["convert", "-q", "--json"])
        .arg(shared.join("fixtures/bds-r4"))
        .arg("--out")
        .arg(out.path())
        .assert()
        .success();
    let v: Value = serde_json::from_slice(&assert.get_output().stdout).unwrap();
    assert_eq!(v["types"].as_array().unwrap().len(), 17);
    assert_eq!(v["rows"], 38472);
    let eob = v["types"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["resource_type"] == "ExplanationOfBenefit")
        .unwrap();
    assert_eq!(eob["columns"], 1031);
}
