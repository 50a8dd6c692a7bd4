//! `flatfhir convert --view/--column/--columns`: SQL on FHIR views from the command line.

use assert_cmd::Command;
use predicates::str::contains;

const PATIENTS: &str = r#"{"resourceType":"Patient","id":"p1","gender":"female","birthDate":"1970-01-02","identifier":[{"value":"MRN1"}],"maritalStatus":{"coding":[{"code":"M"}]}}
{"resourceType":"Patient","id":"p2","gender":"male","birthDate":"1980-05-06"}
"#;

fn input() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("Patient.ndjson"), PATIENTS).unwrap();
    dir
}

fn flatfhir() -> Command {
    Command::cargo_bin("flatfhir").unwrap()
}

#[test]
fn view_file_writes_one_table_named_after_the_view() {
    let dir = input();
    let view = dir.path().join("people.json");
    std::fs::write(
        &view,
        r#"{"resource": "Patient", "select": [{"column": [
            {"name": "id", "path": "identifier[0].value"},
            {"name": "gender", "path": "gender"},
            {"name": "date_of_birth", "path": "birthDate"},
            {"name": "marital_status", "path": "maritalStatus.coding[0].code"}]}]}"#,
    )
    .unwrap();
    let out = dir.path().join("out");
    flatfhir()
        .arg("convert")
        .arg(dir.path().join("Patient.ndjson"))
        .arg("--view")
        .arg(&view)
        .arg("--out")
        .arg(&out)
        .args(["--format", "ndjson"])
        .assert()
        .success()
        .stderr(contains("people: 2 resources, 2 rows"));
    let text = std::fs::read_to_string(out.join("people.ndjson")).unwrap();
    assert_eq!(
        text,
        "{\"id\":\"MRN1\",\"gender\":\"female\",\"date_of_birth\":\"1970-01-02\",\"marital_status\":\"M\"}\n\
         {\"id\":null,\"gender\":\"male\",\"date_of_birth\":\"1980-05-06\",\"marital_status\":null}\n"
    );
}

#[test]
fn column_flags_and_columns_file() {
    let dir = input();
    let out = dir.path().join("out");
    flatfhir()
        .arg("convert")
        .arg(dir.path())
        .args(["--column", "Patient:id=getResourceKey()"])
        .args(["--column", "Patient:gender=gender"])
        .arg("--out")
        .arg(&out)
        .args(["--format", "csv", "--quiet"])
        .assert()
        .success();
    let text = std::fs::read_to_string(out.join("Patient.csv")).unwrap();
    assert_eq!(text, "id,gender\np1,female\np2,male\n");

    let cols = dir.path().join("cols.json");
    std::fs::write(
        &cols,
        r#"{"Patient": [["born", "birthDate"], ["id", "id"]]}"#,
    )
    .unwrap();
    flatfhir()
        .arg("convert")
        .arg(dir.path().join("Patient.ndjson"))
        .arg("--columns")
        .arg(&cols)
        .arg("--out")
        .arg(&out)
        .args(["--format", "parquet", "--quiet", "--overwrite"])
        .assert()
        .success();
    assert!(out.join("Patient.parquet").exists());
    // The new set replaced the old one: the first run's Patient.csv is gone.
    assert!(!out.join("Patient.csv").exists());

    let toml = dir.path().join("cols.toml");
    std::fs::write(
        &toml,
        "# workshop columns\n[Patient]\nid = \"identifier[0].value\"\n\
         official = \"name.where(use = 'official').exists()\" # a comment\n\
         given = 'name.given.first()'\ngender = \"gender\"\n",
    )
    .unwrap();
    flatfhir()
        .arg("convert")
        .arg(dir.path().join("Patient.ndjson"))
        .arg("--columns")
        .arg(&toml)
        .arg("--out")
        .arg(&out)
        .args(["--format", "csv", "--quiet", "--overwrite"])
        .assert()
        .success();
    let text = std::fs::read_to_string(out.join("Patient.csv")).unwrap();
    assert_eq!(
        text,
        "id,official,given,gender\nMRN1,false,,female\n,false,,male\n"
    );

    std::fs::write(&toml, "id = \"id\"\n").unwrap();
    flatfhir()
        .arg("convert")
        .arg(dir.path())
        .arg("--columns")
        .arg(&toml)
        .arg("--out")
        .arg(&out)
        .assert()
        .code(1)
        .stderr(contains("line 1: a column before any [Type] section"));
}

#[test]
fn invalid_view_names_view_column_and_position() {
    let dir = input();
    flatfhir()
        .arg("convert")
        .arg(dir.path())
        .args(["--column", "Patient:bad=name.where(use = )"])
        .arg("--out")
        .arg(dir.path().join("out"))
        .assert()
        .code(1)
        .stderr(contains("view 'Patient', column 'bad'"))
        .stderr(contains("at position 17"));
}

#[test]
fn ndjson_format_without_views_is_refused() {
    let dir = input();
    flatfhir()
        .arg("convert")
        .arg(dir.path())
        .arg("--out")
        .arg(dir.path().join("out"))
        .args(["--format", "ndjson"])
        .assert()
        .code(64)
        .stderr(contains("need --view"));
}

#[test]
fn export_with_views_writes_view_tables_only() {
    let out = tempfile::tempdir().unwrap();
    flatfhir()
        .args(["export", "--demo", "--patients", "5", "--quiet", "--out"])
        .arg(out.path())
        .args(["--column", "Patient:id=getResourceKey()"])
        .args(["--column", "Patient:gender=gender"])
        .args(["--format", "ndjson"])
        .assert()
        .success();
    let tables = out.path().join("tables");
    let text = std::fs::read_to_string(tables.join("Patient.ndjson")).unwrap();
    assert_eq!(text.lines().count(), 5);
    assert!(text.lines().all(|l| l.starts_with("{\"id\":")), "{text}");
    assert!(!tables.join("Observation.parquet").exists());
}

#[test]
fn a_view_never_replaces_its_own_input() {
    let dir = input();
    let before = std::fs::read(dir.path().join("Patient.ndjson")).unwrap();
    for extra in [&[][..], &["--overwrite"][..]] {
        flatfhir()
            .arg("convert")
            .arg(dir.path())
            .args(["--column", "Patient:id=id", "--format", "ndjson", "--quiet"])
            .args(extra)
            .arg("--out")
            .arg(dir.path())
            .assert()
            .code(1)
            .stderr(contains("would replace an input file"));
        assert_eq!(
            std::fs::read(dir.path().join("Patient.ndjson")).unwrap(),
            before
        );
    }
}

/// `--json` says how each path reads a line: a view of plain paths is streamed, one with a
/// function the analysis follows is evaluated on a pruned tree, `children()` reads subtrees.
#[test]
fn json_summary_says_how_each_path_reads_a_line() {
    let dir = input();
    let out = dir.path().join("out");
    let run = |cols: &[&str]| -> serde_json::Value {
        let mut cmd = flatfhir();
        cmd.arg("convert").arg(dir.path()).arg("--out").arg(&out);
        for c in cols {
            cmd.args(["--column", c]);
        }
        let o = cmd
            .args(["--json", "--quiet", "--overwrite"])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        serde_json::from_slice(&o.stdout).unwrap()
    };
    let reads = |v: &serde_json::Value| -> Vec<String> {
        v["views"][0]["paths"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                format!(
                    "{}={}",
                    p["expr"].as_str().unwrap(),
                    p["reads"].as_str().unwrap()
                )
            })
            .collect()
    };
    let v = run(&["Patient:g=gender", "Patient:m=maritalStatus.coding[0].code"]);
    assert_eq!(
        reads(&v),
        ["gender=stream", "maritalStatus.coding[0].code=stream"]
    );
    let v = run(&[
        "Patient:k=getResourceKey()",
        "Patient:c=maritalStatus.children()",
    ]);
    assert_eq!(
        reads(&v),
        ["getResourceKey()=trie", "maritalStatus.children()=subtree"]
    );
}
