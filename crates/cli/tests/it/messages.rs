//! What the binary tells its user: usage errors (exit 64, as docs/architecture.md says),
//! options that mean the same across subcommands, causes said once, skipped inputs named with
//! the reason, and library warnings on stderr.

use std::path::Path;

use predicates::prelude::*;

use crate::support::{fixture, flatfhir};

/// Mistakes on the command line exit 64 and say what is wrong, whether clap or the command
/// finds them.
#[test]
fn usage_errors_exit_64() {
    let out = tempfile::tempdir().unwrap();
    let o = out.path().to_str().unwrap();
    let basic = fixture("basic");
    let b = basic.to_str().unwrap();
    let key = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fetch/tests/it/keys/ec.pkcs8.pem");
    let k = key.to_str().unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["convert", b, "-o", o, "--format", "csv"],
            "need --view",
        ),
        (
            vec![
                "convert",
                b,
                "-o",
                o,
                "--format",
                "arrow",
                "--compression",
                "snappy",
            ],
            "not snappy",
        ),
        (vec!["convert", b, "-o", o, "--threads", "0"], "at least 1"),
        (vec!["schema", b, "--threads", "0"], "at least 1"),
        (vec!["bench", b, "--repeat", "0"], "at least 1"),
        (
            vec!["bench", b, "--format", "csv"],
            "possible values: parquet, arrow",
        ),
        (
            vec!["bench", b, "--format", "ndjson"],
            "possible values: parquet, arrow",
        ),
        (vec!["fetch", "-o", o], "--fhir-url is required"),
        (
            vec![
                "fetch",
                "-o",
                o,
                "--fhir-url",
                "http://127.0.0.1:9/",
                "--private-key",
                k,
            ],
            "--client-id is required",
        ),
        (
            vec![
                "fetch",
                "-o",
                o,
                "--fhir-url",
                "http://127.0.0.1:9/",
                "--client-secret",
                "abcdefgh",
            ],
            "--client-id is required",
        ),
        (
            vec![
                "fetch",
                "-o",
                o,
                "--fhir-url",
                "http://127.0.0.1:9/",
                "--since",
                "yesterday",
            ],
            "not a FHIR instant",
        ),
        (
            vec![
                "fetch",
                "-o",
                o,
                "--fhir-url",
                "http://127.0.0.1:9/",
                "--since",
                "2024-01-31",
            ],
            "use 2024-01-31T00:00:00Z",
        ),
        (
            vec![
                "fetch",
                "-o",
                o,
                "--fhir-url",
                "http://127.0.0.1:9/",
                "--until",
                "2024-02-30T00:00:00Z",
            ],
            "not a FHIR instant",
        ),
        (
            vec![
                "fetch",
                "-o",
                o,
                "--fhir-url",
                "http://127.0.0.1:9/",
                "--since",
                "2024-01-31t00:00:00z",
            ],
            "not a FHIR instant",
        ),
        (
            vec![
                "fetch",
                "-o",
                o,
                "--fhir-url",
                "http://127.0.0.1:9/",
                "--parallel",
                "0",
            ],
            "at least 1",
        ),
        (
            vec!["export", "--demo", "-o", o, "--threads", "0"],
            "at least 1",
        ),
        (
            vec![
                "export",
                "--demo",
                "-o",
                o,
                "--fhir-url",
                "http://127.0.0.1:9/",
            ],
            "cannot be used with --fhir-url",
        ),
    ];
    for (args, says) in cases {
        flatfhir()
            .args(&args)
            .env_remove("FLATFHIR_FHIR_URL")
            .env_remove("FLATFHIR_CLIENT_ID")
            .env_remove("FLATFHIR_PRIVATE_KEY")
            .env_remove("FLATFHIR_CLIENT_SECRET")
            .env_remove("FLATFHIR_BEARER_TOKEN")
            .assert()
            .code(64)
            .stderr(predicate::str::contains(says));
    }
    // Nothing was started for any of them.
    assert!(!out.path().join("tables").exists());
}

/// Valid instants pass the check (the run then fails for want of a server: exit 1, not 64).
#[test]
fn fhir_instants_are_accepted() {
    let out = tempfile::tempdir().unwrap();
    for since in [
        "2024-01-31T00:00:00Z",
        "2024-01-31T08:30:00.123+01:00",
        "2024-01-31T08:30:00-05:00",
    ] {
        flatfhir()
            .args([
                "fetch",
                "--retries",
                "0",
                "--fhir-url",
                "http://127.0.0.1:9/fhir",
            ])
            .args(["--since", since, "--until", since])
            .arg("-o")
            .arg(out.path())
            .env_remove("FLATFHIR_BEARER_TOKEN")
            .env_remove("FLATFHIR_PRIVATE_KEY")
            .env_remove("FLATFHIR_CLIENT_SECRET")
            .assert()
            .code(1);
    }
}

/// A cause is said once: "reading the private key X: No such file or directory (os error 2)",
/// not the io error twice.
#[test]
fn causes_are_said_once() {
    let out = tempfile::tempdir().unwrap();
    let assert = flatfhir()
        .args([
            "fetch",
            "--fhir-url",
            "http://127.0.0.1:9/fhir",
            "--client-id",
            "c",
        ])
        .args(["--kid", "k", "--private-key", "/nonexistent/key.pem", "-o"])
        .arg(out.path())
        .env_remove("FLATFHIR_PRIVATE_KEY")
        .env_remove("FLATFHIR_BEARER_TOKEN")
        .assert()
        .code(1);
    let stderr = String::from_utf8_lossy(&assert.get_output().stderr).into_owned();
    assert!(stderr.contains("/nonexistent/key.pem"), "{stderr}");
    assert_eq!(stderr.matches("os error 2").count(), 1, "{stderr}");
}

/// One name per thing: `--types` (alias `--type`) and `-o` everywhere there is `--out`.
#[test]
fn the_same_options_across_subcommands() {
    let out = tempfile::tempdir().unwrap();
    for flag in ["--type", "--types"] {
        flatfhir()
            .args(["schema", "-q", flag, "Observation"])
            .arg(fixture("basic"))
            .assert()
            .success()
            .stdout(
                predicate::str::contains("Observation (4 rows")
                    .and(predicate::str::contains("Patient (").not()),
            );
        flatfhir()
            .args(["convert", "-q", "--overwrite", flag, "Patient", "-o"])
            .arg(out.path())
            .arg(fixture("basic"))
            .assert()
            .success();
    }
    for sub in ["fetch", "export"] {
        for flag in ["--type", "--types"] {
            // Parsed (both names exist); the run stops later, for want of a server.
            flatfhir()
                .args([sub, flag, "Patient", "-o"])
                .arg(out.path())
                .env_remove("FLATFHIR_FHIR_URL")
                .assert()
                .code(64)
                .stderr(predicate::str::contains("--fhir-url is required"));
        }
    }
    for sub in ["status", "cancel"] {
        flatfhir()
            .args([sub, "-o"])
            .arg(out.path())
            .assert()
            .stderr(predicate::str::contains("unexpected argument").not());
    }
}

/// Files of an input directory that are not read are named on stderr, not only in --json.
#[test]
fn skipped_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        fixture("basic/Patient.ndjson"),
        dir.path().join("Patient.ndjson"),
    )
    .unwrap();
    std::fs::write(dir.path().join("bundle.json"), "{\n}\n").unwrap();
    std::fs::write(dir.path().join("table.csv"), "id,name\n1,a\n").unwrap();
    // The Bulk Data layout's own files are expected, and not named.
    std::fs::write(dir.path().join("manifest.json"), "{}\n").unwrap();
    std::fs::write(dir.path().join("log.ndjson"), "{\"eventId\":\"kickoff\"}\n").unwrap();
    let out = tempfile::tempdir().unwrap();
    flatfhir()
        .arg("convert")
        .arg(dir.path())
        .arg("-o")
        .arg(out.path())
        .assert()
        .success()
        .stderr(
            predicate::str::contains("skipped 2 file(s)")
                .and(predicate::str::contains(
                    "2 file(s) of the input directories skipped",
                ))
                .and(predicate::str::contains("bundle.json"))
                .and(predicate::str::contains("table.csv"))
                .and(predicate::str::contains("manifest.json").not())
                .and(predicate::str::contains("log.ndjson").not()),
        );
}

/// A FHIR Bundle read as NDJSON (`--bundles keep`) or other multi-line JSON named .ndjson gets
/// the reason and what to do, not "truncated?".
#[test]
fn pretty_printed_json_is_recognised() {
    let dir = tempfile::tempdir().unwrap();
    let bundle = "{\n  \"resourceType\": \"Bundle\",\n  \"type\": \"collection\",\n  \"entry\": [\n    {\"resource\": {\"resourceType\": \"Patient\", \"id\": \"p1\"}}\n  ]\n}\n";
    let json = dir.path().join("bundle.json");
    std::fs::write(&json, bundle).unwrap();
    let out = tempfile::tempdir().unwrap();
    // A Bundle file is converted (docs/columns.md, "Bundles"); with --bundles keep it is
    // read as NDJSON, and the message says how to have it unpacked.
    flatfhir()
        .arg("convert")
        .arg(&json)
        .arg("-o")
        .arg(out.path())
        .assert()
        .success();
    assert!(out.path().join("Patient.parquet").is_file());
    let out = tempfile::tempdir().unwrap();
    flatfhir()
        .args(["convert", "--bundles", "keep"])
        .arg(&json)
        .arg("-o")
        .arg(out.path())
        .assert()
        .code(1)
        .stderr(
            predicate::str::contains("it is a FHIR Bundle")
                .and(predicate::str::contains("--bundles unpack")),
        );

    let named = dir.path().join("Patient.ndjson");
    std::fs::write(&named, bundle).unwrap();
    flatfhir()
        .arg("convert")
        .arg(&named)
        .arg("-o")
        .arg(out.path())
        .assert()
        .code(1)
        .stderr(
            predicate::str::contains("Patient.ndjson:1")
                .and(predicate::str::contains(
                    "pretty-printed (multi-line) JSON document",
                ))
                .and(predicate::str::contains("truncated?").not()),
        );
}

/// `schema --on-error skip` says which lines it left out (exit 2), and its help promises no
/// directory it never writes.
#[test]
fn schema_names_the_lines_it_rejects() {
    flatfhir()
        .args(["schema", "-q", "--on-error", "skip"])
        .arg(fixture("bad/truncated.Patient.ndjson"))
        .assert()
        .code(2)
        .stderr(
            predicate::str::contains("1 line(s) rejected").and(predicate::str::contains(
                "truncated.Patient.ndjson:2: not valid JSON",
            )),
        );
    flatfhir()
        .args(["schema", "--help"])
        .assert()
        .success()
        .stdout(predicate::str::contains("`schema` names them on stderr"));
}

/// Warnings that the fetch library logs (through `tracing`) reach stderr, also with
/// `--quiet`: a flaky token endpoint, and a `log.ndjson` that cannot be written.
#[test]
fn library_warnings_reach_stderr() {
    let env = crate::secrets::start(|c| c.faults.token_5xx = 1);
    let out = tempfile::tempdir().unwrap();
    // log.ndjson on a full disk: every write fails.
    std::os::unix::fs::symlink("/dev/full", out.path().join("log.ndjson")).unwrap();
    let key = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fetch/tests/it/keys/ec.pkcs8.pem");
    flatfhir()
        .args([
            "fetch",
            "-q",
            "--retries",
            "1",
            "--min-wait",
            "5ms",
            "--max-poll-wait",
            "20ms",
        ])
        .args([
            "--fhir-url",
            &env.url(),
            "--client-id",
            "cli-client",
            "--kid",
            "test-ec",
        ])
        .arg("--private-key")
        .arg(&key)
        .arg("-o")
        .arg(out.path())
        .env_remove("FLATFHIR_PRIVATE_KEY")
        .env_remove("FLATFHIR_BEARER_TOKEN")
        .assert()
        .success()
        .stderr(
            predicate::str::contains("warning: token endpoint answered 503")
                .and(predicate::str::contains("warning: writing log.ndjson")),
        );
}

/// The progress bar (drawn only on a terminal: run under `script`, which gives the command a
/// pseudo-terminal) counts the input once, in MB like the summary: its total is the input's
/// size, not twice it in MiB.
#[test]
fn progress_bar_counts_input_mb() {
    if std::process::Command::new("script")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("SKIPPED: `script` (util-linux) is not installed, so no pseudo-terminal");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("Patient.ndjson");
    // 25,000 lines of 100 bytes: 2.5 MB (2.4 MiB; the old bar said 4.8 MiB).
    let line = format!(
        "{{\"resourceType\":\"Patient\",\"id\":\"{}\"}}\n",
        "x".repeat(65)
    );
    assert_eq!(line.len(), 100);
    std::fs::write(&input, line.repeat(25_000)).unwrap();
    let out = dir.path().join("out");
    let log = dir.path().join("tty.log");
    let bin = assert_cmd::cargo::cargo_bin("flatfhir");
    let command = format!(
        "{} convert {} -o {}",
        bin.display(),
        input.display(),
        out.display()
    );
    let status = std::process::Command::new("script")
        .args(["-qfec", &command])
        .arg(&log)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let screen = String::from_utf8_lossy(&std::fs::read(&log).unwrap()).into_owned();
    assert!(screen.contains("/2.5 MB"), "{screen}");
    assert!(
        !screen.contains("MiB") && !screen.contains("/5.0 MB"),
        "{screen}"
    );
    assert!(screen.contains("1 of 1 types converted"), "{screen}");
}

/// On a terminal, a warning is printed above the live progress display, once: the display's
/// redraws neither erase it nor leave stale copies of themselves around it. Run in a tmux
/// pane (a real terminal emulator), read back from its screen.
#[test]
fn warnings_stay_readable_above_the_progress_display() {
    if std::process::Command::new("tmux")
        .arg("-V")
        .output()
        .is_err()
    {
        eprintln!("SKIPPED: tmux is not installed, so no terminal to read back");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("export");
    std::fs::create_dir(&out).unwrap();
    std::os::unix::fs::symlink("/dev/full", out.join("log.ndjson")).unwrap();
    let socket = format!("flatfhir-it-{}", std::process::id());
    let tmux = |args: &[&str]| {
        std::process::Command::new("tmux")
            .args(["-L", &socket])
            .args(args)
            .output()
            .unwrap()
    };
    let bin = assert_cmd::cargo::cargo_bin("flatfhir");
    // The pane signals `done` when the export ends, then stays open until `closed`.
    let script = format!(
        "{} export --demo --patients 5 -o {}; tmux -L {socket} wait-for -S done; tmux -L {socket} wait-for closed",
        bin.display(),
        out.display()
    );
    tmux(&[
        "new-session",
        "-d",
        "-x",
        "200",
        "-y",
        "100",
        "sh",
        "-c",
        &script,
    ]);
    tmux(&["wait-for", "done"]);
    let screen =
        String::from_utf8_lossy(&tmux(&["capture-pane", "-p", "-S", "-"]).stdout).into_owned();
    tmux(&["wait-for", "-S", "closed"]);
    tmux(&["kill-server"]);
    assert_eq!(
        screen.matches("warning: writing log.ndjson").count(),
        1,
        "{screen}"
    );
    assert!(
        screen.contains("Patient: all 1 file(s) downloaded"),
        "{screen}"
    );
    // No stale spinner line (`⠁ [00:00:00] ...`) left behind by a redraw.
    assert!(!screen.contains("[00:00:0"), "{screen}");
}
