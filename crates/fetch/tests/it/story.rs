//! The story a run tells: every failure, retry and wait in `log.ndjson`, a closing event that
//! says how the run ended, nothing temporary left behind, and `cancel`/`--resume` that tell
//! the truth about an export that is gone.

use flatfhir_bulk_server::{RetryAfter, TestServer};
use flatfhir_fetch::{Error, JobState, Phase};

use crate::support::*;

fn log(out: &std::path::Path) -> Vec<serde_json::Value> {
    read(out, "log.ndjson")
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Files anywhere under `dir` whose names end in `.part` or `.tmp`.
fn leftovers(dir: &std::path::Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap().filter_map(Result::ok) {
            let p = e.path();
            if p.is_dir() {
                todo.push(p);
            } else {
                let n = e.file_name().to_string_lossy().into_owned();
                if n.ends_with(".part") || n.ends_with(".tmp") {
                    found.push(n);
                }
            }
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_failure_and_retry_is_in_the_log() {
    let data = data_dir();
    // A wrong resource type, and a line that is not JSON.
    std::fs::write(
        data.path().join("Encounter.ndjson"),
        "{\"resourceType\":\"Patient\",\"id\":\"x\"}\n",
    )
    .unwrap();
    std::fs::write(
        data.path().join("Medication.ndjson"),
        "{\"resourceType\":\"Medication\",\"id\":\"m1\"}\n{\"resourceType\":\"Medication\",\n",
    )
    .unwrap();
    let mut cfg = config(data.path());
    cfg.faults.rate_limit_polls = Some((1, RetryAfter::Seconds(0)));
    cfg.faults.rate_limit_downloads = Some(RetryAfter::Seconds(0));
    cfg.faults.wrong_count = true; // the first file: Condition
    let server = TestServer::start(cfg).await.unwrap();
    let out = tempfile::tempdir().unwrap();
    let s = run(options(&server, out.path())).await.unwrap();
    assert_eq!(s.failed.len(), 3, "{:?}", s.failed);
    let log = log(out.path());
    let of = |id: &str| -> Vec<&serde_json::Value> {
        log.iter()
            .filter(|v| v["eventId"] == id)
            .map(|v| &v["eventDetail"])
            .collect()
    };
    assert_eq!(of("status_retry").len(), 1);
    // One 429 per file: 8 files.
    assert_eq!(of("download_retry").len(), 8);
    assert!(of("download_retry").iter().all(|d| d["code"] == 429));
    let messages: Vec<&str> = of("download_error")
        .iter()
        .filter_map(|d| d["message"].as_str())
        .collect();
    for want in [
        "the manifest count is 4 but the file has 3 resources",
        "resourceType \"Patient\" where the manifest says Encounter",
        "line 2: not JSON",
    ] {
        assert!(
            messages.iter().any(|m| m.contains(want)),
            "{want}: {messages:?}"
        );
    }
    // The run's last word is its failure, never `export_complete`.
    assert!(of("export_complete").is_empty());
    assert_eq!(log.last().unwrap()["eventId"], "export_failed");
    assert_eq!(log.last().unwrap()["eventDetail"]["failedFiles"], 3);
    assert!(
        leftovers(out.path()).is_empty(),
        "{:?}",
        leftovers(out.path())
    );
}

/// A write error (here: `.part` is a link to /dev/full, "No space left on device") fails the
/// file with the OS text said once, is logged, and leaves no temporary file.
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_error_is_logged_and_leaves_nothing_behind() {
    let data = data_dir();
    let server = TestServer::start(config(data.path())).await.unwrap();
    let out = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink("/dev/full", out.path().join("1.Patient.ndjson.part")).unwrap();
    let s = run(options(&server, out.path())).await.unwrap();
    assert_eq!(s.failed.len(), 1, "{:?}", s.failed);
    let (path, why) = &s.failed[0];
    assert_eq!(path, "1.Patient.ndjson");
    assert_eq!(why.matches("No space left on device").count(), 1, "{why}");
    assert!(!out.path().join("1.Patient.ndjson").exists());
    assert!(
        leftovers(out.path()).is_empty(),
        "{:?}",
        leftovers(out.path())
    );
    let log = log(out.path());
    assert!(log.iter().any(|v| {
        v["eventId"] == "download_error"
            && v["eventDetail"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("No space left on device"))
    }));
    assert_eq!(log.last().unwrap()["eventId"], "export_failed");
    // The space is back: --resume finishes the file.
    std::fs::remove_file(out.path().join("1.Patient.ndjson.part")).ok();
    let mut o = options(&server, out.path());
    o.resume = true;
    let s = run(o).await.unwrap();
    assert!(s.complete(), "{:?}", s.failed);
    assert_standard_output(out.path());
    assert_eq!(log_events(out.path()).last().unwrap(), "export_complete");
}

/// A run that stops with an error (here the server fails the export) ends the log with
/// `export_failed` and its reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_export_closes_the_log_with_its_reason() {
    let data = data_dir();
    let mut cfg = config(data.path());
    cfg.faults.fatal_status_error = true;
    let server = TestServer::start(cfg).await.unwrap();
    let out = tempfile::tempdir().unwrap();
    assert!(run(options(&server, out.path())).await.is_err());
    let log = log(out.path());
    let last = log.last().unwrap();
    assert_eq!(last["eventId"], "export_failed");
    assert!(
        last["eventDetail"]["message"]
            .as_str()
            .unwrap()
            .contains("simulated failure"),
        "{last}"
    );
}

/// A cancelled export cannot be resumed, and a second cancel says the server no longer has it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_exports_tell_the_truth() {
    let data = data_dir();
    let mut cfg = config(data.path());
    cfg.polls_before_ready = 1000;
    let server = TestServer::start(cfg).await.unwrap();
    let out = tempfile::tempdir().unwrap();
    let mut o = options(&server, out.path());
    o.conn.timing.give_up_after = Some(std::time::Duration::ZERO);
    assert!(matches!(run(o).await, Err(Error::Timeout(_))));
    flatfhir_fetch::cancel(out.path(), conn(&server))
        .await
        .unwrap();
    assert_eq!(
        JobState::load(out.path()).unwrap().unwrap().phase,
        Phase::Cancelled
    );

    let mut o = options(&server, out.path());
    o.resume = true;
    let err = run(o).await.unwrap_err();
    assert!(matches!(err, Error::Job(_)), "{err}");
    assert!(err.to_string().contains("was cancelled"), "{err}");

    let err = flatfhir_fetch::cancel(out.path(), conn(&server))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Status { status: 404, .. }), "{err}");
    assert!(
        err.to_string().contains("no longer has this export"),
        "{err}"
    );
}

/// `--delete-on-success` leaves a complete job that `--resume` reports without a new
/// download (and not as "cancelled").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_on_success_export_resumes_to_the_same_summary() {
    let data = data_dir();
    let server = TestServer::start(config(data.path())).await.unwrap();
    let out = tempfile::tempdir().unwrap();
    let mut o = options(&server, out.path());
    o.delete_on_success = true;
    assert!(run(o).await.unwrap().deleted_on_server);
    let job = JobState::load(out.path()).unwrap().unwrap();
    assert_eq!(job.phase, Phase::Complete);
    assert!(job.deleted_on_server);
    let mut o = options(&server, out.path());
    o.resume = true;
    let s = run(o).await.unwrap();
    assert!(s.complete());
    assert_eq!(s.resources, 15);
}

/// A file whose download never got an answer with a body leaves no empty `.part` behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_that_never_answers_leaves_no_empty_part_file() {
    let data = data_dir();
    let mut cfg = config(data.path());
    cfg.faults.rate_limit_downloads = Some(RetryAfter::Seconds(0));
    let server = TestServer::start(cfg).await.unwrap();
    let out = tempfile::tempdir().unwrap();
    let mut o = options(&server, out.path());
    o.conn.timing.retries = 0;
    let s = run(o).await.unwrap();
    assert_eq!(s.failed.len(), 6, "{:?}", s.failed);
    assert!(
        leftovers(out.path()).is_empty(),
        "{:?}",
        leftovers(out.path())
    );
}
