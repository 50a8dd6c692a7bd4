//! `flatfhir fetch`, `status` and `cancel` against the in-process test server.

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use flatfhir_bulk_server::{Config, RegisteredClient, TestServer};
use predicates::prelude::*;

use crate::support::Created;

fn keys() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fetch/tests/it/keys")
}

struct Env {
    rt: tokio::runtime::Runtime,
    _data: tempfile::TempDir,
    server: Option<TestServer>,
}

fn start(tweak: impl FnOnce(&mut Config)) -> Env {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let data = tempfile::tempdir().unwrap();
    let pats: String = (0..4)
        .map(|i| format!("{{\"resourceType\":\"Patient\",\"id\":\"p{i}\"}}\n"))
        .collect();
    let obs: String = (0..3)
        .map(|i| format!("{{\"resourceType\":\"Observation\",\"id\":\"o{i}\"}}\n"))
        .collect();
    std::fs::write(data.path().join("Patient.ndjson"), pats).unwrap();
    std::fs::write(data.path().join("Observation.ndjson"), obs).unwrap();
    let jwks: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(keys().join("jwks.json")).unwrap()).unwrap();
    let mut cfg = Config::new(data.path());
    cfg.clients = vec![RegisteredClient::with_jwks("cli-client", jwks)];
    cfg.polls_before_ready = 2;
    tweak(&mut cfg);
    let server = rt.block_on(TestServer::start(cfg)).unwrap();
    Env {
        rt,
        _data: data,
        server: Some(server),
    }
}

impl Env {
    fn server(&self) -> &TestServer {
        self.server.as_ref().unwrap()
    }

    fn cmd(&self, sub: &str, out: &Path) -> Command {
        let mut c = Command::cargo_bin("flatfhir").unwrap();
        c.arg(sub)
            .arg("--out")
            .arg(out)
            .args(["--min-wait", "5ms", "--max-poll-wait", "50ms"])
            .env_remove("FLATFHIR_PRIVATE_KEY")
            .env_remove("FLATFHIR_BEARER_TOKEN")
            .env_remove("FLATFHIR_CLIENT_SECRET");
        c
    }

    fn fetch(&self, out: &Path) -> Command {
        let mut c = self.cmd("fetch", out);
        c.args([
            "--fhir-url",
            &self.server().base_url(),
            "--client-id",
            "cli-client",
            "--kid",
            "test-ec",
        ])
        .arg("--private-key")
        .arg(keys().join("ec.pkcs8.pem"));
        c
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        let _guard = self.rt.enter();
        self.server.take();
    }
}

#[test]
fn fetch_writes_the_layout_and_a_json_summary() {
    let env = start(|_| {});
    let out = tempfile::tempdir().unwrap();
    let assert = env
        .fetch(out.path())
        .args(["--json", "--parallel", "2"])
        .assert()
        .success();
    let summary: serde_json::Value = serde_json::from_slice(&assert.get_output().stdout).unwrap();
    assert_eq!(summary["resources"], 7);
    assert_eq!(summary["types"]["Patient"], 4);
    for f in [
        "1.Patient.ndjson",
        "1.Observation.ndjson",
        "manifest.json",
        "log.ndjson",
    ] {
        assert!(out.path().join(f).exists(), "{f}");
    }
    // Not a TTY: plain progress lines.
    let stderr = String::from_utf8_lossy(&assert.get_output().stderr);
    assert!(
        stderr.contains("export in progress: 33% complete"),
        "{stderr}"
    );

    env.cmd("status", out.path())
        .arg("--offline")
        .assert()
        .success()
        .stdout(
            predicate::str::contains("phase: complete")
                .and(predicate::str::contains("2 done, 0 failed")),
        );
}

#[test]
fn private_key_from_environment() {
    let env = start(|_| {});
    let out = tempfile::tempdir().unwrap();
    let pem = std::fs::read_to_string(keys().join("rsa.pkcs8.pem")).unwrap();
    env.cmd("fetch", out.path())
        .args([
            "--fhir-url",
            &env.server().base_url(),
            "--client-id",
            "cli-client",
            "--kid",
            "test-rsa",
            "-q",
        ])
        .env("FLATFHIR_PRIVATE_KEY", pem)
        .assert()
        .success()
        .stderr(predicate::str::is_empty());
    assert!(out.path().join("1.Patient.ndjson").exists());
}

#[test]
fn manifest_errors_exit_3_after_downloading_everything() {
    let env = start(|c| c.faults.failing_types = vec!["Observation".into()]);
    let out = tempfile::tempdir().unwrap();
    env.fetch(out.path())
        .assert()
        .code(3)
        .stderr(predicate::str::contains("Failed to generate Observation"));
    assert!(out.path().join("1.Patient.ndjson").exists());
    assert!(out.path().join("error/1.OperationOutcome.ndjson").exists());
}

#[test]
fn kickoff_failure_exits_1_with_the_servers_text() {
    let env = start(|c| c.faults.kickoff_failure = true);
    let out = tempfile::tempdir().unwrap();
    env.fetch(out.path())
        .assert()
        .code(1)
        .stderr(predicate::str::contains("simulated kick-off failure"));
}

#[test]
fn sec1_key_error_tells_how_to_convert() {
    let env = start(|_| {});
    let out = tempfile::tempdir().unwrap();
    env.cmd("fetch", out.path())
        .args([
            "--fhir-url",
            &env.server().base_url(),
            "--client-id",
            "cli-client",
            "--kid",
            "test-ec",
        ])
        .arg("--private-key")
        .arg(keys().join("ec.sec1.pem"))
        .assert()
        .code(1)
        .stderr(predicate::str::contains("openssl pkcs8 -topk8 -nocrypt"));
}

#[test]
fn status_and_cancel_use_the_recorded_job() {
    let env = start(|c| c.polls_before_ready = 100_000);
    let out = tempfile::tempdir().unwrap();
    env.fetch(out.path())
        .args(["--max-wait", "150ms"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("--max-wait"));
    // No auth flags: status and cancel reuse the client id, key path and kid saved in DIR.
    env.cmd("status", out.path()).assert().success().stdout(
        predicate::str::contains("phase: polling")
            .and(predicate::str::contains("server: HTTP 202")),
    );
    env.cmd("cancel", out.path()).assert().success();
    assert_eq!(env.server().live_jobs(), 0);
    env.cmd("status", out.path())
        .assert()
        .success()
        .stdout(predicate::str::contains("phase: cancelled"));
}

#[test]
fn help_names_the_secret_environment_variables() {
    Command::cargo_bin("flatfhir")
        .unwrap()
        .args(["fetch", "--help"])
        .assert()
        .success()
        .stdout(
            predicate::str::contains("FLATFHIR_PRIVATE_KEY")
                .and(predicate::str::contains("FLATFHIR_CLIENT_SECRET"))
                .and(predicate::str::contains("FLATFHIR_BEARER_TOKEN"))
                .and(predicate::str::contains("Exit codes")),
        );
}

#[test]
fn ctrl_c_leaves_a_resumable_directory() {
    // The server holds every file body until two are open at once; with `--parallel 1`
    // that never happens, so the first file is still downloading when the interrupt comes.
    let env = start(|c| {
        c.lines_per_file = 1;
        c.faults.downloads_together = 2;
    });
    let out = tempfile::tempdir().unwrap();
    let created = Created::watch(out.path());
    let bin = assert_cmd::cargo::cargo_bin("flatfhir");
    let mut child = std::process::Command::new(&bin)
        .args([
            "fetch",
            "--min-wait",
            "5ms",
            "--max-poll-wait",
            "50ms",
            "--parallel",
            "1",
            "-q",
        ])
        .args([
            "--fhir-url",
            &env.server().base_url(),
            "--client-id",
            "cli-client",
            "--kid",
            "test-ec",
        ])
        .arg("--private-key")
        .arg(keys().join("ec.pkcs8.pem"))
        .arg("--out")
        .arg(out.path())
        .env_remove("FLATFHIR_PRIVATE_KEY")
        .spawn()
        .unwrap();
    // Wait until the first download has begun (its `.part` file appears: an event, not a
    // time).
    let seen = created.wait_for(1, &mut child, |n| n.ends_with(".part"));
    assert!(seen[0].ends_with(".part"), "{seen:?}");
    let status = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let code = child.wait().unwrap().code();
    assert_eq!(code, Some(130));
    let finished = std::fs::read_dir(out.path())
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n.ends_with(".ndjson") && n != "log.ndjson"
        })
        .count();
    assert_eq!(
        finished, 0,
        "a file was finished although its body was held"
    );
    // The log says the run was interrupted (and not that it completed).
    let log = std::fs::read_to_string(out.path().join("log.ndjson")).unwrap();
    let last: serde_json::Value = serde_json::from_str(log.lines().last().unwrap()).unwrap();
    assert_eq!(last["eventId"], "export_interrupted", "{log}");

    env.fetch(out.path()).arg("--resume").assert().success();
    for n in 1..=4 {
        assert!(out.path().join(format!("{n}.Patient.ndjson")).exists());
    }
    for n in 1..=3 {
        assert!(out.path().join(format!("{n}.Observation.ndjson")).exists());
    }
    let kickoffs = env
        .server()
        .requests()
        .iter()
        .filter(|r| r.path.contains("$export"))
        .count();
    assert_eq!(kickoffs, 1);
}

/// SMART's `some_file_generation_failed`: everything else downloads, the error file's text is
/// shown, the exit code is 3 (not 1), no `--since` is advised, and `--resume` can finish.
#[test]
fn a_failed_server_file_exits_3_with_its_text_and_resume_finishes() {
    let env = start(|c| {
        c.lines_per_file = 2;
        c.faults.failed_files = vec![("Observation".into(), 2)];
    });
    let out = tempfile::tempdir().unwrap();
    let assert = env.fetch(out.path()).assert().code(3);
    let stderr = String::from_utf8_lossy(&assert.get_output().stderr);
    assert!(
        stderr.contains("Failed to export 2.Observation.ndjson"),
        "{stderr}"
    );
    assert!(!stderr.contains("--since"), "{stderr}");
    assert!(out.path().join("error/1.OperationOutcome.ndjson").exists());
    env.fetch(out.path())
        .arg("--resume")
        .assert()
        .code(3)
        .stderr(predicate::str::contains("failed:").not());
}

/// A run with failed files must not advise `--since`: the next export would skip them.
#[test]
fn only_a_complete_export_advises_since() {
    let env = start(|c| c.faults.wrong_count = true);
    let out = tempfile::tempdir().unwrap();
    env.fetch(out.path())
        .assert()
        .code(1)
        .stderr(predicate::str::contains("--since").not());
    let env = start(|_| {});
    let out = tempfile::tempdir().unwrap();
    env.fetch(out.path())
        .assert()
        .success()
        .stderr(predicate::str::contains("(use as --since next time)"));
}

/// Progress on `--resume` counts the files the job already knows (never `[1/0]`).
#[test]
fn resume_progress_counts_the_known_files() {
    let env = start(|c| c.faults.drop_mid_file = true);
    let out = tempfile::tempdir().unwrap();
    env.fetch(out.path())
        .args(["--retries", "0"])
        .assert()
        .code(1);
    let assert = env.fetch(out.path()).arg("--resume").assert().success();
    let stderr = String::from_utf8_lossy(&assert.get_output().stderr);
    assert!(stderr.contains("0 of 2 files already complete"), "{stderr}");
    assert!(stderr.contains("[2/2]"), "{stderr}");
    assert!(!stderr.contains("/0]"), "{stderr}");
}

/// `--resume` of a cancelled export and a second `cancel` fail (exit 1) and say why.
#[test]
fn cancelled_exports_cannot_be_resumed_or_cancelled_twice() {
    let env = start(|c| c.polls_before_ready = 100_000);
    let out = tempfile::tempdir().unwrap();
    env.fetch(out.path())
        .args(["--max-wait", "0s"])
        .assert()
        .code(1);
    env.cmd("cancel", out.path()).assert().success();
    env.fetch(out.path())
        .arg("--resume")
        .assert()
        .code(1)
        .stderr(predicate::str::contains("was cancelled"));
    env.cmd("cancel", out.path()).assert().code(1).stderr(
        predicate::str::contains("HTTP 404")
            .and(predicate::str::contains("no longer has this export"))
            .and(predicate::str::contains("export deleted").not()),
    );
}

/// An OS error's text appears once, not twice ("… (os error 20): … (os error 20)").
#[cfg(target_os = "linux")]
#[test]
fn os_error_text_is_said_once() {
    let env = start(|_| {});
    let assert = env.fetch(Path::new("/dev/full/out")).assert().code(1);
    let stderr = String::from_utf8_lossy(&assert.get_output().stderr);
    assert_eq!(stderr.matches("(os error 20)").count(), 1, "{stderr}");
}

/// Writes go through a large buffer: on a server that sends one HTTP chunk per NDJSON line,
/// the process makes at most 1.2 write calls to DIR per 64 KiB of NDJSON written (plus a few
/// for the job state, manifest and log). Counted with strace; skipped without it.
#[cfg(target_os = "linux")]
#[test]
fn downloads_write_in_large_blocks() {
    let probe = std::process::Command::new("strace")
        .args(["-f", "-o", "/dev/null", "true"])
        .status();
    if !probe.is_ok_and(|s| s.success()) {
        eprintln!("SKIPPED: strace is not installed or may not trace here");
        return;
    }
    let env = start(|c| {
        c.chunk_per_line = true;
        c.lines_per_file = 20_000;
    });
    // About 8 MB of Patients, in 3 files.
    let data_dir = env._data.path();
    let line = |i: usize| {
        format!(
            "{{\"resourceType\":\"Patient\",\"id\":\"p{i}\",\"gender\":\"female\",\"birthDate\":\"1970-01-01\",\"name\":[{{\"family\":\"Family{i}\",\"given\":[\"Given\"]}}]}}\n"
        )
    };
    let text: String = (0..60_000).map(line).collect();
    std::fs::write(data_dir.join("Patient.ndjson"), &text).unwrap();
    let out = tempfile::tempdir().unwrap();
    let trace = out.path().join("strace.txt");
    let dir = out.path().join("x");
    let fetch = env.fetch(&dir);
    let prog = fetch.get_program().to_owned();
    let args: Vec<_> = fetch.get_args().map(ToOwned::to_owned).collect();
    let status = std::process::Command::new("strace")
        .args([
            "-f",
            "-y",
            "-e",
            "trace=write,writev,pwrite64,pwritev",
            "-o",
        ])
        .arg(&trace)
        .arg(prog)
        .args(args)
        .arg("-q")
        .env_remove("FLATFHIR_PRIVATE_KEY")
        .status()
        .unwrap();
    assert!(status.success());
    let written: u64 = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().ends_with(".ndjson"))
        .map(|e| e.metadata().unwrap().len())
        .sum();
    assert!(written > 8_000_000, "{written}");
    let trace = std::fs::read_to_string(&trace).unwrap();
    // `-y` names each descriptor's file: count the writes to files in DIR (not the sockets
    // or the runtime's wake-ups).
    let in_dir = format!("<{}/", dir.display());
    let calls = trace.lines().filter(|l| l.contains(&in_dir)).count();
    assert!(
        calls >= 3,
        "no writes to {in_dir} seen: the count would prove nothing"
    );
    let blocks = written.div_ceil(64 * 1024);
    // 1.2 per 64 KiB, plus 40 for the job state, manifest and log.
    assert!(
        (calls as f64) <= 1.2 * blocks as f64 + 40.0,
        "{calls} write calls for {blocks} blocks of 64 KiB:\n{}",
        trace.lines().take(60).collect::<Vec<_>>().join("\n")
    );
}
