//! Polling: progress, transient errors, failures, odd Retry-After values, paged manifests.

use std::time::Duration;

use flatfhir_bulk_server::{RetryAfter, TestServer};
use flatfhir_fetch::Error;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_is_reported() {
    let data = data_dir();
    let mut cfg = config(data.path());
    cfg.polls_before_ready = 3;
    let server = TestServer::start(cfg).await.unwrap();
    let out = tempfile::tempdir().unwrap();
    let events = Events::default();
    flatfhir_fetch::fetch(options(&server, out.path()), events.observer())
        .await
        .unwrap();
    let percents: Vec<f64> = events
        .0
        .lock()
        .unwrap()
        .iter()
        .filter_map(|e| match e {
            flatfhir_fetch::Event::Progress { percent, .. } => *percent,
            _ => None,
        })
        .collect();
    assert_eq!(percents, [25.0, 50.0, 75.0]);
    let log = read(out.path(), "log.ndjson");
    assert!(log.contains("\"xProgress\":\"50% complete\""), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_status_errors_keep_polling() {
    let data = data_dir();
    let mut cfg = config(data.path());
    cfg.faults.transient_status_errors = 3;
    let server = TestServer::start(cfg).await.unwrap();
    let out = tempfile::tempdir().unwrap();
    let s = run(options(&server, out.path())).await.unwrap();
    assert_eq!(s.resources, 15);
    assert_eq!(
        server.requests().iter().filter(|r| r.status == 500).count(),
        3
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fatal_status_error_fails_with_its_text() {
    let data = data_dir();
    let mut cfg = config(data.path());
    cfg.faults.fatal_status_error = true;
    let server = TestServer::start(cfg).await.unwrap();
    let out = tempfile::tempdir().unwrap();
    let err = run(options(&server, out.path())).await.unwrap_err();
    assert!(matches!(err, Error::Status { status: 500, .. }), "{err}");
    assert!(
        err.to_string()
            .contains("export job failed: simulated failure"),
        "{err}"
    );
    assert!(log_events(out.path()).contains(&"status_error".to_owned()));
    // Only one poll: a non-transient failure is not retried.
    assert_eq!(
        server
            .requests()
            .iter()
            .filter(|r| r.path.starts_with("/jobs/"))
            .count(),
        1
    );
}

/// Retry-After values of hours (as seconds, an epoch second or an HTTP-date) are clamped to
/// `max_poll_wait` (50 ms here): hours would stall, no wait at all would storm. Paused time:
/// the test checks the waits the client chose, not how long it took.
#[tokio::test(start_paused = true)]
async fn odd_retry_after_values_neither_stall_nor_storm() {
    let data = data_dir();
    for ra in [
        RetryAfter::Seconds(7200),
        RetryAfter::EpochSeconds(3600),
        RetryAfter::HttpDateIn(7200),
    ] {
        let mut cfg = config(data.path());
        cfg.faults.rate_limit_polls = Some((3, ra.clone()));
        cfg.faults.rate_limit_downloads = Some(ra.clone());
        let server = TestServer::start(cfg).await.unwrap();
        let out = tempfile::tempdir().unwrap();
        let events = Events::default();
        let s = flatfhir_fetch::fetch(options(&server, out.path()), events.observer())
            .await
            .unwrap_or_else(|e| panic!("{ra:?}: {e}"));
        assert_eq!(s.resources, 15, "{ra:?}");
        let waits: Vec<Duration> = events
            .0
            .lock()
            .unwrap()
            .iter()
            .filter_map(|e| match e {
                flatfhir_fetch::Event::Retrying { wait, .. } => Some(*wait),
                _ => None,
            })
            .collect();
        // One wait per 429 (3 polls, 6 downloads), each the clamped maximum.
        assert_eq!(waits, vec![Duration::from_millis(50); 3 + 6], "{ra:?}");
        assert_eq!(
            server.requests().iter().filter(|r| r.status == 429).count(),
            3 + 6,
            "{ra:?}"
        );
    }
}

/// Paused time: the 200 ms of `--max-wait` pass as the poll waits do, in virtual time.
#[tokio::test(start_paused = true)]
async fn max_wait_gives_up() {
    let data = data_dir();
    let mut cfg = config(data.path());
    cfg.polls_before_ready = 1000;
    let server = TestServer::start(cfg).await.unwrap();
    let out = tempfile::tempdir().unwrap();
    let mut o = options(&server, out.path());
    o.conn.timing.give_up_after = Some(Duration::from_millis(200));
    let err = run(o).await.unwrap_err();
    assert!(matches!(err, Error::Timeout(_)), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paged_manifests_are_followed() {
    let data = data_dir();
    let mut cfg = config(data.path());
    cfg.page_size = Some(2);
    cfg.faults.deleted = true;
    let server = TestServer::start(cfg).await.unwrap();
    let out = tempfile::tempdir().unwrap();
    let mut o = options(&server, out.path());
    o.kickoff.allow_partial_manifests = true;
    let s = run(o).await.unwrap();
    assert_eq!(s.resources, 15);
    assert_standard_output(out.path());
    assert_eq!(lines(out.path(), "deleted/1.Bundle.ndjson"), 1);
    let pages = server
        .requests()
        .iter()
        .filter(|r| r.path.contains("?page="))
        .count();
    assert_eq!(pages, 3, "7 files at 2 per page: 3 next links");
    // manifest.json lists the files of every page, without the paging link.
    let manifest: serde_json::Value =
        serde_json::from_str(&read(out.path(), "manifest.json")).unwrap();
    let entries: usize = ["output", "deleted", "error"]
        .iter()
        .filter_map(|k| manifest[*k].as_array())
        .map(Vec::len)
        .sum();
    assert_eq!(entries, 7, "{manifest}");
    assert!(manifest.get("link").is_none(), "{manifest}");
    let log = read(out.path(), "log.ndjson");
    assert!(log.contains("\"totalManifests\":4"), "{log}");
    assert!(server.kickoff_params()[0].contains(&("allowPartialManifests".into(), "true".into())));
}

/// The SMART server's 429 sends `Retry-After: Date.now() + delay` (epoch milliseconds). Read
/// as epoch seconds it is the year 55,000, and the client waited the full `--max-poll-wait`.
/// Paused time: the waits pass at once; the test checks the waits the client chose.
#[tokio::test(start_paused = true)]
async fn epoch_millisecond_retry_after_is_honoured() {
    let data = data_dir();
    let mut cfg = config(data.path());
    cfg.faults.rate_limit_polls = Some((2, RetryAfter::EpochMillis(10)));
    cfg.faults.rate_limit_downloads = Some(RetryAfter::EpochMillis(10));
    let server = TestServer::start(cfg).await.unwrap();
    let out = tempfile::tempdir().unwrap();
    let mut o = options(&server, out.path());
    o.conn.timing.max_poll_wait = Duration::from_secs(120);
    let events = Events::default();
    let t = tokio::time::Instant::now();
    let s = flatfhir_fetch::fetch(o, events.observer()).await.unwrap();
    assert_eq!(s.resources, 15);
    let waits: Vec<Duration> = events
        .0
        .lock()
        .unwrap()
        .iter()
        .filter_map(|e| match e {
            flatfhir_fetch::Event::Retrying { wait, .. } => Some(*wait),
            _ => None,
        })
        .collect();
    assert_eq!(waits.len(), 2 + 6, "{waits:?}");
    for w in &waits {
        // "now + 10 s": at most 10 s (less the time the answer took), not 120 s.
        assert!(
            *w <= Duration::from_secs(10) && *w >= Duration::from_secs(5),
            "{waits:?}"
        );
    }
    // Paused (virtual) time: two poll waits, then the downloads' waits three at a time.
    assert!(t.elapsed() < Duration::from_secs(60), "{:?}", t.elapsed());
    // Every wait is in the log, with the server's value.
    let log = read(out.path(), "log.ndjson");
    let retries: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["eventId"] == "status_retry" || v["eventId"] == "download_retry")
        .collect();
    assert_eq!(retries.len(), 8, "{log}");
    for r in &retries {
        let d = &r["eventDetail"];
        assert_eq!(d["code"], 429, "{r}");
        assert!(d["retryAfter"].as_str().unwrap().len() >= 13, "{r}");
        assert!(d["waitMs"].as_u64().unwrap() <= 10_000, "{r}");
    }
}
