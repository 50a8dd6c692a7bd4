//! Durability: resume after failures, delete-on-success, cancel, status, type completion.

use flatfhir_bulk_server::TestServer;
use flatfhir_fetch::{Event, FileStatus, JobState, Phase};

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_continues_partial_files_with_range() {
    let data = data_dir();
    let mut cfg = config(data.path());
    cfg.faults.drop_mid_file = true;
    cfg.lines_per_file = 100;
    let server = TestServer::start(cfg).await.unwrap();
    let out = tempfile::tempdir().unwrap();
    // No retries: every file breaks off half way, like a crash mid-download.
    let mut o = options(&server, out.path());
    o.conn.timing.retries = 0;
    let s = run(o).await.unwrap();
    assert_eq!(s.failed.len(), 3);
    assert!(!out.path().join("1.Patient.ndjson").exists());
    assert!(out.path().join("1.Patient.ndjson.part").exists());
    let job = JobState::load(out.path()).unwrap().unwrap();
    assert!(
        job.files
            .iter()
            .all(|f| matches!(f.status, FileStatus::Failed { .. }))
    );

    let mut o = options(&server, out.path());
    o.resume = true;
    let s = run(o).await.unwrap();
    assert!(s.failed.is_empty(), "{:?}", s.failed);
    assert_eq!(s.resources, 15);
    assert_eq!(lines(out.path(), "1.Observation.ndjson"), 7);
    assert!(!out.path().join("1.Patient.ndjson.part").exists());
    let kickoffs = server
        .requests()
        .iter()
        .filter(|r| r.path.contains("$export"))
        .count();
    assert_eq!(kickoffs, 1, "resume must not kick off again");
    assert_eq!(
        server.requests().iter().filter(|r| r.status == 206).count(),
        3
    );
}

/// Paused time: `--max-wait` passes in virtual time.
#[tokio::test(start_paused = true)]
async fn resume_while_still_polling() {
    let data = data_dir();
    let mut cfg = config(data.path());
    cfg.polls_before_ready = 1000;
    let server = TestServer::start(cfg).await.unwrap();
    let out = tempfile::tempdir().unwrap();
    let mut o = options(&server, out.path());
    o.conn.timing.give_up_after = Some(std::time::Duration::from_millis(100));
    assert!(run(o).await.is_err());
    let job = JobState::load(out.path()).unwrap().unwrap();
    assert_eq!(job.phase, Phase::Polling);
    let (_, st) = flatfhir_fetch::status(out.path(), Some(conn(&server)))
        .await
        .unwrap();
    let st = st.unwrap();
    assert_eq!(st.code, 202);
    assert!(st.x_progress.unwrap().ends_with("% complete"));

    // Resume without a limit cannot finish here (1000 polls); cancel instead.
    flatfhir_fetch::cancel(out.path(), conn(&server))
        .await
        .unwrap();
    assert_eq!(server.live_jobs(), 0);
    assert_eq!(
        JobState::load(out.path()).unwrap().unwrap().phase,
        Phase::Cancelled
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_on_success_and_type_completion_events() {
    let data = data_dir();
    let server = TestServer::start(config(data.path())).await.unwrap();
    let out = tempfile::tempdir().unwrap();
    let mut o = options(&server, out.path());
    o.delete_on_success = true;
    let events = Events::default();
    let s = flatfhir_fetch::fetch(o, events.observer()).await.unwrap();
    assert!(s.deleted_on_server);
    assert_eq!(server.live_jobs(), 0);
    assert!(
        server
            .requests()
            .iter()
            .any(|r| r.method == "DELETE" && r.status == 202)
    );
    let mut complete: Vec<(String, usize)> = events
        .0
        .lock()
        .unwrap()
        .iter()
        .filter_map(|e| match e {
            Event::TypeComplete {
                resource_type,
                files,
            } => {
                assert!(files.iter().all(|f| f.exists()));
                Some((resource_type.clone(), files.len()))
            }
            _ => None,
        })
        .collect();
    complete.sort();
    assert_eq!(
        complete,
        [
            ("Condition".into(), 1),
            ("Observation".into(), 3),
            ("Patient".into(), 2)
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_after_giving_up_keeps_polling_the_same_export() {
    let data = data_dir();
    let server = TestServer::start(config(data.path())).await.unwrap();
    let out = tempfile::tempdir().unwrap();
    // Give up at once: kicked off, never polled (as if killed right after the kick-off).
    let mut o = options(&server, out.path());
    o.conn.timing.give_up_after = Some(std::time::Duration::ZERO);
    assert!(matches!(
        run(o).await,
        Err(flatfhir_fetch::Error::Timeout(_))
    ));
    assert_eq!(
        JobState::load(out.path()).unwrap().unwrap().phase,
        Phase::Polling
    );
    let mut o = options(&server, out.path());
    o.resume = true;
    let s = run(o).await.unwrap();
    assert_eq!(s.resources, 15);
    assert_standard_output(out.path());
    assert_eq!(
        server
            .requests()
            .iter()
            .filter(|r| r.path.contains("$export"))
            .count(),
        1
    );
    assert_eq!(
        JobState::load(out.path()).unwrap().unwrap().phase,
        Phase::Complete
    );
}
