//! `flatfhir export --demo`: the whole pipeline against the built-in server, with real auth;
//! and what `export` may do to a directory that already holds an export or tables.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use assert_cmd::Command;
use flatfhir_bulk_server::{Config, RegisteredClient, TestServer};
use predicates::str::contains;

use crate::support::read_parquet;

fn keys() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fetch/tests/it/keys")
}

/// Every file under `dir` with its bytes.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                files.insert(p.clone(), std::fs::read(&p).unwrap());
            }
        }
    }
    files
}

/// The project's Bulk Data server on 127.0.0.1 over four Patients (its runtime, data
/// directory and server, kept alive together).
fn local_server(
    polls_before_ready: u32,
) -> (tokio::runtime::Runtime, tempfile::TempDir, TestServer) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let data = tempfile::tempdir().unwrap();
    let pats: String = (0..4)
        .map(|i| format!("{{\"resourceType\":\"Patient\",\"id\":\"p{i}\"}}\n"))
        .collect();
    std::fs::write(data.path().join("Patient.ndjson"), pats).unwrap();
    let jwks: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(keys().join("jwks.json")).unwrap()).unwrap();
    let mut cfg = Config::new(data.path());
    cfg.clients = vec![RegisteredClient::with_jwks("cli-client", jwks)];
    cfg.polls_before_ready = polls_before_ready;
    let server = rt.block_on(TestServer::start(cfg)).unwrap();
    (rt, data, server)
}

/// `flatfhir export` against `server` into `out`, with the test key.
fn export_from(server: &TestServer, out: &Path) -> std::process::Command {
    let url = server.base_url();
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    let mut c = std::process::Command::new(assert_cmd::cargo::cargo_bin("flatfhir"));
    c.args(["export", "--min-wait", "5ms", "--max-poll-wait", "50ms"])
        .args([
            "--fhir-url",
            &url,
            "--client-id",
            "cli-client",
            "--kid",
            "test-ec",
        ])
        .arg("--private-key")
        .arg(keys().join("ec.pkcs8.pem"))
        .arg("--out")
        .arg(out)
        .env_remove("FLATFHIR_PRIVATE_KEY")
        .env_remove("FLATFHIR_BEARER_TOKEN")
        .env_remove("FLATFHIR_CLIENT_SECRET");
    c
}

/// A real export (not the demo) into `out` from the project's Bulk Data server on
/// 127.0.0.1, with its tables: what a local HAPI or an SSH tunnel looks like to flatfhir.
fn real_export(out: &Path) {
    let (_rt, _data, server) = local_server(1);
    let status = export_from(&server, out).arg("-q").status().unwrap();
    assert!(status.success());
    assert!(out.join("tables/Patient.parquet").exists());
}

#[test]
fn sigterm_stops_an_export_resumably_with_143() {
    use std::io::BufRead as _;
    // The export never completes, so the signal always arrives while it is polled.
    let (_rt, _data, server) = local_server(u32::MAX);
    let out = tempfile::tempdir().unwrap();
    let mut child = export_from(&server, out.path())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        let accepted = line.contains("export accepted");
        seen.push(line);
        if accepted {
            break;
        }
    }
    assert!(
        seen.iter().any(|l| l.contains("export accepted")),
        "{seen:?}"
    );
    let killed = std::process::Command::new("kill")
        .args(["-s", "TERM"])
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(killed.success());
    let rest: Vec<String> = lines.map(Result::unwrap).collect();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(143), "{rest:?}");
    assert!(rest.iter().any(|l| l.contains("is resumable")), "{rest:?}");
    assert!(out.path().join(".flatfhir-job.json").exists());
}

#[test]
fn the_demo_never_deletes_a_real_export() {
    let out = tempfile::tempdir().unwrap();
    real_export(out.path());
    let before = snapshot(out.path());
    for extra in [&[][..], &["--overwrite"][..]] {
        Command::cargo_bin("flatfhir")
            .unwrap()
            .args(["export", "--demo", "--patients", "5", "-q"])
            .args(extra)
            .arg("--out")
            .arg(out.path())
            .assert()
            .code(1)
            .stderr(contains("that `export --demo` did not write"))
            .stderr(contains("choose another --out"));
        assert_eq!(snapshot(out.path()), before, "byte for byte");
    }
}

#[test]
fn the_demo_deletes_only_its_own_unchanged_files() {
    let out = tempfile::tempdir().unwrap();
    let demo = || {
        let mut c = Command::cargo_bin("flatfhir").unwrap();
        c.args(["export", "--demo", "--patients", "5", "-q", "--out"])
            .arg(out.path());
        c
    };
    demo().assert().success();
    // A file of the user's beside the demo's is kept by the next demo run.
    std::fs::write(out.path().join("notes.txt"), b"mine").unwrap();
    demo().assert().success();
    assert_eq!(
        std::fs::read(out.path().join("notes.txt")).unwrap(),
        b"mine"
    );
    // A demo file changed since (someone wrote their own data there): refused, kept.
    let patients = out.path().join("1.Patient.ndjson");
    std::fs::write(
        &patients,
        b"{\"resourceType\":\"Patient\",\"id\":\"real\"}\n",
    )
    .unwrap();
    let before = snapshot(out.path());
    demo()
        .assert()
        .code(1)
        .stderr(contains("changed since `export --demo` wrote it"));
    assert_eq!(snapshot(out.path()), before);
}

#[test]
fn export_tables_follow_the_output_rule() {
    let out = tempfile::tempdir().unwrap();
    let tables = out.path().join("tables");
    std::fs::create_dir(&tables).unwrap();
    std::fs::write(tables.join("Patient.parquet"), b"an earlier table").unwrap();
    let demo = || {
        let mut c = Command::cargo_bin("flatfhir").unwrap();
        c.args(["export", "--demo", "--patients", "5", "-q", "--out"])
            .arg(out.path());
        c
    };
    demo().assert().code(1).stderr(contains(
        "already holds tables of an earlier run (Patient.parquet)",
    ));
    assert_eq!(
        std::fs::read(tables.join("Patient.parquet")).unwrap(),
        b"an earlier table"
    );
    // Nothing was downloaded: the refusal comes before the export.
    assert!(!out.path().join("1.Patient.ndjson").exists());
    demo().arg("--overwrite").assert().success();
    assert_eq!(read_parquet(&tables.join("Patient.parquet")).rows.len(), 5);
}

#[test]
fn types_without_a_view_are_flattened_whole_in_the_same_run() {
    let out = tempfile::tempdir().unwrap();
    let assert = Command::cargo_bin("flatfhir")
        .unwrap()
        .args(["export", "--demo", "--patients", "5", "--json"])
        .args(["--type", "Patient,Condition"])
        .args([
            "--column",
            "Patient:id=id",
            "--column",
            "Patient:gender=gender",
        ])
        .arg("--out")
        .arg(out.path())
        .assert()
        .success()
        .stderr(contains("no view for Condition: flattened whole"));
    let tables = out.path().join("tables");
    let patient = read_parquet(&tables.join("Patient.parquet"));
    assert_eq!(patient.names(), ["id", "gender"]);
    let condition = read_parquet(&tables.join("Condition.parquet"));
    for c in [
        "resourceType",
        "id",
        "code_coding_0_code",
        "subject_reference",
    ] {
        assert!(
            condition.names().contains(&c),
            "{c}: {:?}",
            condition.names()
        );
    }
    assert!(!condition.rows.is_empty());
    let summary: serde_json::Value = serde_json::from_slice(&assert.get_output().stdout).unwrap();
    assert_eq!(summary["tables"][0]["resource_type"], "Condition");
    assert_eq!(summary["views"][0]["view"], "Patient");

    // CSV holds views only: the type without one is named at the start and in the summary.
    let out = tempfile::tempdir().unwrap();
    let assert = Command::cargo_bin("flatfhir")
        .unwrap()
        .args([
            "export",
            "--demo",
            "--patients",
            "5",
            "--json",
            "--format",
            "csv",
        ])
        .args(["--type", "Patient,Condition", "--column", "Patient:id=id"])
        .arg("--out")
        .arg(out.path())
        .assert()
        .success()
        .stderr(contains(
            "no view for Condition: downloaded but not converted (--format csv holds views only",
        ));
    let summary: serde_json::Value = serde_json::from_slice(&assert.get_output().stdout).unwrap();
    assert_eq!(summary["not_converted"], serde_json::json!(["Condition"]));
    assert!(out.path().join("tables/Patient.csv").exists());
}

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

/// `export` takes convert's column flags (one shared clap struct), and they reach the
/// conversion: `--dates typed`, `--sep` and `--max-columns` (`--dates` and `--max-columns`
/// were convert's only).
#[test]
fn export_takes_converts_column_flags() {
    let out = tempfile::tempdir().unwrap();
    let assert = Command::cargo_bin("flatfhir")
        .unwrap()
        .args(["export", "--demo", "--patients", "5", "--json", "--quiet"])
        .args(["--type", "Patient", "--dates", "typed", "--sep", "."])
        .arg("--out")
        .arg(out.path())
        .assert()
        .success();
    let summary: serde_json::Value = serde_json::from_slice(&assert.get_output().stdout).unwrap();
    let dates = summary["tables"][0]["dates"].as_array().unwrap();
    assert!(
        dates
            .iter()
            .any(|d| d["column"] == "birthDate" && d["type"] == "date32"),
        "{dates:?}"
    );
    let file = std::fs::File::open(out.path().join("tables/Patient.parquet")).unwrap();
    let schema = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .schema()
        .clone();
    let names: Vec<&String> = schema.fields().iter().map(|f| f.name()).collect();
    assert!(names.iter().any(|n| n.starts_with("name.0.")), "{names:?}");

    let out = tempfile::tempdir().unwrap();
    let assert = Command::cargo_bin("flatfhir")
        .unwrap()
        .args(["export", "--demo", "--patients", "5", "--quiet", "--json"])
        .args(["--type", "Patient", "--max-columns", "3"])
        .arg("--out")
        .arg(out.path())
        .assert()
        .code(1);
    let summary: serde_json::Value = serde_json::from_slice(&assert.get_output().stdout).unwrap();
    let failed = summary["failed_conversions"].to_string();
    assert!(failed.contains("max-columns"), "{failed}");
    assert!(!out.path().join("tables/Patient.parquet").exists());
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
