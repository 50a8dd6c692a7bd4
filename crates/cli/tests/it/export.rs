//! `flatfhir export --demo`: the whole pipeline against the built-in server, with real auth.

use assert_cmd::Command;

#[test]
fn demo_exports_and_converts_every_type() {
    let out = tempfile::tempdir().unwrap();
    let assert = Command::cargo_bin("flatfhir")
        .unwrap()
        .args([
            "export",
            "--demo",
            "--patients",
            "30",
            "--json",
            "--quiet",
            "--out",
        ])
        .arg(out.path())
        .assert()
        .success();
    let summary: serde_json::Value = serde_json::from_slice(&assert.get_output().stdout).unwrap();
    let tables: Vec<&str> = summary["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["resource_type"].as_str().unwrap())
        .collect();
    for t in [
        "Condition",
        "Encounter",
        "ExplanationOfBenefit",
        "Observation",
        "Patient",
    ] {
        assert!(tables.contains(&t), "{t} not converted: {tables:?}");
        assert!(
            out.path()
                .join("tables")
                .join(format!("{t}.parquet"))
                .exists(),
            "{t}.parquet"
        );
        assert!(out.path().join(format!("1.{t}.ndjson")).exists());
    }
    let patient = summary["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["resource_type"] == "Patient")
        .unwrap();
    assert_eq!(patient["rows"], 30);
    assert_eq!(summary["fetch"]["types"]["Patient"], 30);
    // Real auth: the export log shows a token-protected manifest.
    let manifest = std::fs::read_to_string(out.path().join("manifest.json")).unwrap();
    assert!(
        manifest.contains("\"requiresAccessToken\": true"),
        "{manifest}"
    );
    // The README's first command, run twice into the same directory, just works.
    Command::cargo_bin("flatfhir")
        .unwrap()
        .args(["export", "--demo", "--patients", "5", "--quiet", "--out"])
        .arg(out.path())
        .assert()
        .success();
    let patients = std::fs::read_to_string(out.path().join("1.Patient.ndjson")).unwrap();
    assert_eq!(patients.lines().count(), 5);
}

#[test]
fn export_help_builds() {
    // clap's debug assertions (unique argument ids, etc.) run when the command is built.
    Command::cargo_bin("flatfhir")
        .unwrap()
        .args(["export", "--help"])
        .assert()
        .success();
    Command::cargo_bin("flatfhir")
        .unwrap()
        .args(["status", "--help"])
        .assert()
        .success();
    Command::cargo_bin("flatfhir")
        .unwrap()
        .args(["cancel", "--help"])
        .assert()
        .success();
}
