//! What `convert` does to its output directory: one run's tables at a time (`--overwrite`),
//! files created with the user's umask, an unwritable place refused before the pass, and
//! no unfinished file left behind by SIGINT/SIGTERM or by a killed run.

use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use predicates::prelude::PredicateBooleanExt as _;
use predicates::str::contains;

use crate::support::{Created, fixture, flatfhir, read_parquet};

fn bin() -> PathBuf {
    assert_cmd::cargo::cargo_bin("flatfhir")
}

/// Hidden temporary files (`.*.tmp`) in `dir`.
fn temp_files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with('.') && n.ends_with(".tmp"))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn a_second_run_into_the_same_directory_is_refused_unless_overwrite() {
    let out = tempfile::tempdir().unwrap();
    flatfhir()
        .args(["convert", "-q"])
        .arg(fixture("basic"))
        .arg("--out")
        .arg(out.path())
        .assert()
        .success();
    let patient = out.path().join("Patient.parquet");
    let before = std::fs::read(&patient).unwrap();

    // Without --overwrite: refused, nothing touched.
    flatfhir()
        .args(["convert", "-q", "--types", "Patient", "--sep", "."])
        .arg(fixture("basic"))
        .arg("--out")
        .arg(out.path())
        .assert()
        .code(1)
        .stderr(contains("already holds tables of an earlier run"))
        .stderr(contains("Observation.parquet, Patient.parquet"))
        .stderr(contains("--overwrite"));
    assert_eq!(std::fs::read(&patient).unwrap(), before);

    // A file flatfhir did not write, and one of its own that changed since: both kept.
    std::fs::write(out.path().join("mine.parquet"), b"not flatfhir's").unwrap();
    std::fs::create_dir(out.path().join("_rejected")).unwrap();
    std::fs::write(out.path().join("_rejected/notes.txt"), b"mine too").unwrap();

    // With --overwrite: the new set replaces the old one.
    let assert = flatfhir()
        .args([
            "convert",
            "--types",
            "Patient",
            "--sep",
            ".",
            "--overwrite",
            "--json",
        ])
        .arg(fixture("basic"))
        .arg("--out")
        .arg(out.path())
        .assert()
        .success()
        .stderr(contains("replaced 1 file(s) (").and(contains("Patient.parquet")))
        .stderr(contains(
            "removed 1 file(s) of the earlier run that this run did not produce",
        ))
        .stderr(contains("kept 2 file(s) flatfhir did not write"));
    let t = read_parquet(&patient);
    assert!(t.names().contains(&"name.0.given.0"), "{:?}", t.names());
    // The earlier run's Observation table is gone: no mix of two runs.
    assert!(!out.path().join("Observation.parquet").exists());
    assert_eq!(
        std::fs::read(out.path().join("mine.parquet")).unwrap(),
        b"not flatfhir's"
    );
    assert!(out.path().join("_rejected/notes.txt").exists());
    let summary: serde_json::Value = serde_json::from_slice(&assert.get_output().stdout).unwrap();
    let names = |k: &str| -> Vec<String> {
        summary["output_dir"][k]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                Path::new(p.as_str().unwrap())
                    .strip_prefix(out.path())
                    .unwrap()
                    .display()
                    .to_string()
            })
            .collect()
    };
    assert_eq!(names("replaced"), ["Patient.parquet"]);
    assert_eq!(names("removed"), ["Observation.parquet"]);
    assert_eq!(names("kept"), ["_rejected/notes.txt", "mine.parquet"]);

    // A table of the last run changed by someone else is not flatfhir's any more: kept.
    std::fs::write(&patient, b"edited by hand").unwrap();
    flatfhir()
        .args(["convert", "-q", "--types", "Observation", "--overwrite"])
        .arg(fixture("basic"))
        .arg("--out")
        .arg(out.path())
        .assert()
        .success();
    assert_eq!(std::fs::read(&patient).unwrap(), b"edited by hand");
    assert!(out.path().join("Observation.parquet").exists());
}

/// Runs `flatfhir ARGS` under `umask MASK` (through the shell, which sets it for the child).
fn convert_under_umask(mask: &str, out: &Path) {
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!("umask {mask} && exec \"$0\" \"$@\""))
        .arg(bin())
        .args(["convert", "-q", "--on-error", "skip"])
        .arg(fixture("bad/truncated.Patient.ndjson"))
        .arg("--out")
        .arg(out)
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(2), "one line rejected");
}

#[test]
fn output_files_are_created_with_the_users_umask() {
    for (mask, want) in [("077", 0o600), ("022", 0o644), ("027", 0o640)] {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        convert_under_umask(mask, &out);
        for f in [
            "Patient.parquet",
            "_rejected/Patient.ndjson",
            "_rejected/Patient.errors.ndjson",
            ".flatfhir-tables.json",
        ] {
            assert_eq!(
                mode(&out.join(f)),
                want,
                "{f} under umask {mask}: {:o}",
                mode(&out.join(f))
            );
        }
    }
}

#[test]
fn an_unwritable_output_directory_is_refused_before_the_pass() {
    // A directory nobody may create files in. Root ignores mode bits, so root uses /sys
    // (sysfs refuses new files to everyone).
    let tmp = tempfile::tempdir().unwrap();
    let ro = tmp.path().join("ro");
    std::fs::create_dir(&ro).unwrap();
    std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o555)).unwrap();
    let dir = if std::fs::write(ro.join("probe"), b"").is_err() {
        ro.clone()
    } else if Path::new("/sys/kernel").is_dir()
        && std::fs::write("/sys/kernel/flatfhir-probe", b"").is_err()
    {
        PathBuf::from("/sys/kernel")
    } else {
        eprintln!("SKIPPED: no directory here refuses new files (root without /sys)");
        return;
    };
    // A bad line on line 2 and every chunk spilled to the output directory: the old code
    // ran the pass first and reported the spill file or the line, with a hint to use
    // --spill-dir that only led to a second failure.
    let assert = flatfhir()
        .args(["convert", "--memory-budget", "0"])
        .arg(fixture("bad/truncated.Patient.ndjson"))
        .arg("--out")
        .arg(&dir)
        .assert()
        .code(1)
        .stderr(contains(format!(
            "cannot write to output directory {}",
            dir.display()
        )));
    let stderr = String::from_utf8_lossy(&assert.get_output().stderr).into_owned();
    assert!(!stderr.contains("--spill-dir"), "{stderr}");
    assert!(!stderr.contains("truncated"), "{stderr}");
    std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o755)).unwrap();

    // An unwritable --spill-dir is named as such, up front too.
    let out = tmp.path().join("out");
    flatfhir()
        .args(["convert", "-q", "--spill-dir"])
        .arg(&dir)
        .arg(fixture("basic"))
        .arg("--out")
        .arg(&out)
        .assert()
        .code(1)
        .stderr(contains(format!(
            "cannot write the spill file in --spill-dir {}",
            dir.display()
        )));
}

/// Sends `signal` to a `convert` that is in the middle of its pass with an unfinished
/// `_rejected/` file open: its input is a FIFO that the test keeps open after a first bad
/// line and 10 MiB of lines. With one thread the pass keeps two 4 MiB chunks in flight, so
/// it has consumed the first chunk (and created the `_rejected/` files for its bad line)
/// before it waits for the third, which never comes: the process waits for input with the
/// temporary files in place, for as long as the test likes.
fn interrupt_convert(signal: &str, want_code: i32) {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("Patient.ndjson");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success(), "mkfifo");
    let out = dir.path().join("out");
    // Watched before the child starts, so no creation is missed. An empty `_rejected/` is
    // not "tables of an earlier run".
    let rejected = out.join("_rejected");
    std::fs::create_dir_all(&rejected).unwrap();
    let created = Created::watch(&rejected);
    let mut child = Command::new(bin())
        .args(["convert", "-q", "--on-error", "skip", "--threads", "1"])
        .arg(&fifo)
        .arg("--out")
        .arg(&out)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let writer = {
        let fifo = fifo.clone();
        std::thread::spawn(move || {
            let mut w = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
            let mut text = String::from("{not json\n");
            let mut i = 0;
            while text.len() < 10 << 20 {
                text.push_str(&format!(
                    "{{\"resourceType\":\"Patient\",\"id\":\"p{i}\",\"gender\":\"female\"}}\n"
                ));
                i += 1;
            }
            // The child may be gone already (the write then fails); the test says why.
            let _ = w.write_all(text.as_bytes());
            // Keep the FIFO open (no end of input) until the test is done.
            let _ = done_rx.recv();
        })
    };
    // Wait for both unfinished `_rejected/` files: an event (inotify), not a time; the child
    // cannot get past them without more input.
    let seen = created.wait_for(2, &mut child, |n| n.starts_with('.') && n.ends_with(".tmp"));
    assert!(
        seen.iter().all(|n| n.ends_with(".flatfhir.tmp")),
        "{seen:?}"
    );
    let killed = Command::new("kill")
        .args(["-s", signal])
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(killed.success());
    let output = child.wait_with_output().unwrap();
    let _ = done_tx.send(());
    writer.join().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(want_code), "{stderr}");
    assert!(
        seen.iter().all(|n| n.ends_with(".flatfhir.tmp")),
        "{seen:?}"
    );
    assert!(
        stderr.contains("interrupted: removed 2 unfinished output file(s)"),
        "{stderr}"
    );
    assert_eq!(temp_files(&rejected), Vec::<String>::new());
    assert_eq!(temp_files(&out), Vec::<String>::new());
}

#[test]
fn sigterm_removes_unfinished_files_and_exits_143() {
    interrupt_convert("TERM", 143);
}

#[test]
fn sigint_removes_unfinished_files_and_exits_130() {
    interrupt_convert("INT", 130);
}

#[test]
fn stale_temporary_files_of_a_killed_run_are_removed_at_the_next() {
    let out = tempfile::tempdir().unwrap();
    // Left by a run killed with SIGKILL: flatfhir's name, nobody holds its lock.
    let stale = out.path().join(".Patient.parquet.a1B2c3.flatfhir.tmp");
    std::fs::write(&stale, b"half a table").unwrap();
    // Being written right now by another flatfhir: it holds the lock.
    let live = out.path().join(".Observation.parquet.x9Y8z7.flatfhir.tmp");
    std::fs::write(&live, b"being written").unwrap();
    let lock = std::fs::File::open(&live).unwrap();
    lock.lock().unwrap();
    // Not flatfhir's.
    let other = out.path().join(".editor-swap.tmp");
    std::fs::write(&other, b"someone else's").unwrap();
    // An older flatfhir's name, without the lock that would tell: named, not removed.
    let old = out.path().join(".Observation.parquet.Qw3rTy.tmp");
    std::fs::write(&old, b"maybe half a table").unwrap();
    flatfhir()
        .args(["convert", "--types", "Patient"])
        .arg(fixture("basic"))
        .arg("--out")
        .arg(out.path())
        .assert()
        .success()
        .stderr(contains(
            "removed 1 unfinished file(s) of an interrupted run",
        ))
        .stderr(contains(".Patient.parquet.a1B2c3.flatfhir.tmp"))
        .stderr(contains(
            "found 1 hidden temporary file(s) an older flatfhir may have left (not removed",
        ))
        .stderr(contains(".Observation.parquet.Qw3rTy.tmp"));
    assert!(!stale.exists());
    assert!(old.exists());
    assert!(live.exists());
    assert!(other.exists());
    drop(lock);
}
