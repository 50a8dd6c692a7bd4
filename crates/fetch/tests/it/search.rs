//! The search crawl against the test server: paging with relative and absolute next links,
//! `_include` de-duplication, caps, retries, resume, outcome entries, capability checks and
//! where the token goes.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flatfhir_bulk_server::{NextLinks, PageFault, TestServer};
use flatfhir_fetch::search::{
    self, Error, NextOrigin, QueryStatus, SearchEvent, SearchObserver, SearchOptions, SearchSummary,
};

use crate::support::*;

fn opts(server: &TestServer, out: &Path, queries: &[&str]) -> SearchOptions {
    SearchOptions::new(
        conn(server),
        out,
        queries.iter().map(|q| (*q).to_owned()).collect(),
    )
}

#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<SearchEvent>>>);

impl Seen {
    fn observer(&self) -> Arc<dyn SearchObserver> {
        let inner = Arc::clone(&self.0);
        Arc::new(move |e: &SearchEvent| inner.lock().unwrap().push(e.clone()))
    }
}

async fn crawl(o: SearchOptions) -> Result<SearchSummary, Error> {
    search::search(o, Seen::default().observer()).await
}

/// The data file's lines of `rtype` (what the server holds, byte for byte).
fn data_lines(data: &Path, rtype: &str) -> Vec<String> {
    std::fs::read_to_string(data.join(format!("{rtype}.ndjson")))
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn out_lines(out: &Path, rel: &str) -> Vec<String> {
    read(out, rel).lines().map(str::to_owned).collect()
}

fn no_leftovers(out: &Path) {
    let left: Vec<_> = std::fs::read_dir(out)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".part") || n.ends_with(".tmp"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

fn search_paths(server: &TestServer) -> Vec<String> {
    server
        .requests()
        .into_iter()
        .filter(|r| r.path.starts_with("/fhir/Observation") || r.path.starts_with("/fhir?"))
        .map(|r| r.path)
        .collect()
}

/// Relative next links (`Observation?...`) resolve against the page URL, not the FHIR base
/// (which would give `/Observation`), and absolute ones are followed as they are; every page
/// arrives once and the resources are the server's bytes, in order.
#[tokio::test]
async fn pages_follow_relative_and_absolute_next_links() {
    let data = data_dir();
    for links in [
        NextLinks::Relative,
        NextLinks::Absolute,
        NextLinks::Alternate,
    ] {
        let mut cfg = config(data.path());
        cfg.search.next_links = links;
        let server = TestServer::start(cfg).await.unwrap();
        let out = tempfile::tempdir().unwrap();
        let mut o = opts(
            &server,
            out.path(),
            &["Observation", "?_type=Patient,Condition"],
        );
        o.count = Some(2);
        let s = crawl(o).await.unwrap();
        assert!(s.complete(), "{links:?}: {s:?}");
        // 7 Observations in pages of 2; 5 Patients + 3 Conditions in pages of 2.
        assert_eq!(s.pages, 4 + 4, "{links:?}");
        assert_eq!(
            server.search_requests(),
            8,
            "{links:?}: {:?}",
            search_paths(&server)
        );
        assert_eq!(
            out_lines(out.path(), "1.Observation.ndjson"),
            data_lines(data.path(), "Observation")
        );
        assert_eq!(
            out_lines(out.path(), "1.Patient.ndjson"),
            data_lines(data.path(), "Patient")
        );
        assert_eq!(
            out_lines(out.path(), "1.Condition.ndjson"),
            data_lines(data.path(), "Condition")
        );
        // Every request went to /fhir/Observation or /fhir?, never to /Observation.
        assert!(
            server
                .requests()
                .iter()
                .all(|r| r.path.starts_with("/fhir") || r.path.starts_with("/auth"))
        );
        no_leftovers(out.path());
        let manifest: serde_json::Value =
            serde_json::from_str(&read(out.path(), "manifest.json")).unwrap();
        let outputs: Vec<(String, u64)> = manifest["output"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["type"].as_str().unwrap().to_owned(),
                    e["count"].as_u64().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            outputs,
            [
                ("Observation".into(), 7),
                ("Patient".into(), 5),
                ("Condition".into(), 3)
            ]
        );
        let events = log_events(out.path());
        assert_eq!(events.iter().filter(|e| *e == "page_complete").count(), 8);
        assert_eq!(
            events.last().map(String::as_str),
            Some("search_complete"),
            "{events:?}"
        );
    }
}

/// A pretty-printing server: the resources are written compacted, equal to the data lines.
#[tokio::test]
async fn pretty_pages_are_compacted_to_the_same_bytes() {
    let data = data_dir();
    let mut cfg = config(data.path());
    cfg.search.pretty = true;
    let server = TestServer::start(cfg).await.unwrap();
    let out = tempfile::tempdir().unwrap();
    crawl(opts(&server, out.path(), &["Observation?_count=3"]))
        .await
        .unwrap();
    assert_eq!(
        out_lines(out.path(), "1.Observation.ndjson"),
        data_lines(data.path(), "Observation")
    );
}

/// `_include`d Patients come again on later pages (o5 and o6 reference p0 and p1 once more)
/// and a second query finds them all again: each (type, id) is written once, the rest counted.
#[tokio::test]
async fn included_resources_are_written_once() {
    let data = data_dir();
    let server = TestServer::start(config(data.path())).await.unwrap();
    let out = tempfile::tempdir().unwrap();
    let mut o = opts(
        &server,
        out.path(),
        &["Observation?_include=Observation:subject", "Patient"],
    );
    o.count = Some(2);
    let s = crawl(o).await.unwrap();
    assert_eq!(s.types["Observation"], 7);
    assert_eq!(s.types["Patient"], 5);
    assert_eq!(s.included, 5);
    // p0 and p1 on pages 3 and 4, then all five Patients of the second query.
    assert_eq!(s.duplicates, 2 + 5, "{:?}", s.queries);
    let mut ids: Vec<String> = out_lines(out.path(), "1.Patient.ndjson")
        .iter()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    ids.sort();
    assert_eq!(ids, ["p0", "p1", "p2", "p3", "p4"]);
}

/// `max_pages` and `max_resources` stop a query (summary and log say so, `capped`), and
/// `--resume` without the caps continues where it stopped: nothing lost, nothing twice.
#[tokio::test]
async fn caps_stop_and_resume_continues() {
    let data = data_dir();
    let server = TestServer::start(config(data.path())).await.unwrap();
    for (pages, resources) in [(Some(2), None), (None, Some(3))] {
        let out = tempfile::tempdir().unwrap();
        let mut o = opts(&server, out.path(), &["Observation"]);
        o.count = Some(2);
        o.max_pages = pages;
        o.max_resources = resources;
        let s = crawl(o).await.unwrap();
        assert!(s.capped && !s.complete());
        assert_eq!(s.queries[0].status, QueryStatus::Capped);
        let want = if pages.is_some() { 4 } else { 3 };
        assert_eq!(
            out_lines(out.path(), "1.Observation.ndjson"),
            data_lines(data.path(), "Observation")[..want]
        );
        assert_eq!(
            log_events(out.path()).last().map(String::as_str),
            Some("search_capped")
        );
        let mut o = opts(&server, out.path(), &[]);
        o.resume = true;
        let s = crawl(o).await.unwrap();
        assert!(s.complete(), "{s:?}");
        let mut all = out_lines(out.path(), "1.Observation.ndjson");
        if let Ok(more) = std::fs::read_to_string(out.path().join("2.Observation.ndjson")) {
            all.extend(more.lines().map(str::to_owned));
        }
        assert_eq!(
            all,
            data_lines(data.path(), "Observation"),
            "{pages:?} {resources:?}"
        );
    }
}

/// A 429 with `Retry-After`, a page whose connection drops mid-body and a 500 are each
/// retried (paused time: the waits pass at once; the waits chosen are checked), and logged.
#[tokio::test(start_paused = true)]
async fn rate_limit_dropped_page_and_500_are_retried() {
    let data = data_dir();
    let mut cfg = config(data.path());
    cfg.search.faults = vec![
        (2, PageFault::RateLimit(7)),
        (3, PageFault::Drop),
        (4, PageFault::ServerError),
    ];
    let server = TestServer::start(cfg).await.unwrap();
    let out = tempfile::tempdir().unwrap();
    let mut o = opts(&server, out.path(), &["Observation"]);
    o.count = Some(2);
    o.conn.timing.max_poll_wait = Duration::from_secs(60);
    let seen = Seen::default();
    let s = search::search(o, seen.observer()).await.unwrap();
    assert!(s.complete(), "{s:?}");
    assert_eq!(
        out_lines(out.path(), "1.Observation.ndjson"),
        data_lines(data.path(), "Observation")
    );
    // 4 pages + 3 failed answers.
    assert_eq!(server.search_requests(), 7);
    let waits: Vec<Duration> = seen
        .0
        .lock()
        .unwrap()
        .iter()
        .filter_map(|e| match e {
            SearchEvent::Retrying { wait, .. } => Some(*wait),
            _ => None,
        })
        .collect();
    assert_eq!(waits.len(), 3, "{waits:?}");
    assert_eq!(waits[0], Duration::from_secs(7), "Retry-After honoured");
    let log = read(out.path(), "log.ndjson");
    let retries: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["eventId"] == "page_retry")
        .collect();
    assert_eq!(retries.len(), 3, "{log}");
    assert_eq!(retries[0]["eventDetail"]["code"], 429);
    assert_eq!(retries[0]["eventDetail"]["retryAfter"], "7");
    assert_eq!(retries[0]["eventDetail"]["waitMs"], 7000);
    assert_eq!(retries[2]["eventDetail"]["code"], 500);
}

/// Interrupted after two pages, with a page's bytes on disk that the state never recorded
/// (a crash between the write and the state save): `--resume` cuts them off, fetches that
/// page again and finishes with exactly the server's resources, each once.
#[tokio::test]
async fn resume_after_interruption_loses_nothing_and_duplicates_nothing() {
    let data = data_dir();
    let server = TestServer::start(config(data.path())).await.unwrap();
    let out = tempfile::tempdir().unwrap();
    let mut o = opts(
        &server,
        out.path(),
        &["Observation?_include=Observation:subject"],
    );
    o.count = Some(2);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let observer: Arc<dyn SearchObserver> = Arc::new(move |e: &SearchEvent| {
        if let SearchEvent::Page { page: 2, .. } = e {
            let _ = tx.send(());
        }
    });
    tokio::select! {
        r = search::search(o, observer) => panic!("finished before the interruption: {r:?}"),
        _ = rx.recv() => {}
    }
    let events = log_events(out.path());
    assert_eq!(
        events.last().map(String::as_str),
        Some("search_interrupted"),
        "{events:?}"
    );
    assert!(
        !out.path().join("1.Observation.ndjson").exists(),
        "a final name before the end"
    );
    let part = out.path().join("1.Observation.ndjson.part");
    assert_eq!(
        read(out.path(), "1.Observation.ndjson.part")
            .lines()
            .count(),
        4
    );
    // The unrecorded write of page 3.
    let mut text = std::fs::read_to_string(&part).unwrap();
    text.push_str(&data_lines(data.path(), "Observation")[4]);
    text.push('\n');
    std::fs::write(&part, text).unwrap();
    let mut o = opts(&server, out.path(), &[]);
    o.resume = true;
    let s = crawl(o).await.unwrap();
    assert!(s.complete(), "{s:?}");
    assert_eq!(
        out_lines(out.path(), "1.Observation.ndjson"),
        data_lines(data.path(), "Observation")
    );
    assert_eq!(s.types["Patient"], 5);
    assert_eq!(out_lines(out.path(), "1.Patient.ndjson").len(), 5);
    no_leftovers(out.path());
}

/// OperationOutcome entries (`search.mode = outcome`) go to `error/`, their issues to the
/// summary; a warning does not make the crawl fail.
#[tokio::test]
async fn outcome_entries_go_to_error_files() {
    let data = data_dir();
    let mut cfg = config(data.path());
    cfg.search.warning_outcome = true;
    let server = TestServer::start(cfg).await.unwrap();
    let out = tempfile::tempdir().unwrap();
    let mut o = opts(&server, out.path(), &["Observation", "Condition"]);
    o.count = Some(3);
    let s = crawl(o).await.unwrap();
    let outcomes = out_lines(out.path(), "error/1.OperationOutcome.ndjson");
    assert_eq!(outcomes.len(), 2, "one per query's first page");
    assert!(outcomes.iter().all(|l| l.contains("\"OperationOutcome\"")));
    assert_eq!(s.issues.len(), 2);
    assert!(s.issues.iter().all(|i| i.severity == "warning"));
    assert!(s.complete());
    assert!(
        !out_lines(out.path(), "1.Observation.ndjson")
            .iter()
            .any(|l| l.contains("OperationOutcome"))
    );
    let manifest: serde_json::Value =
        serde_json::from_str(&read(out.path(), "manifest.json")).unwrap();
    assert_eq!(
        manifest["error"][0]["url"],
        "error/1.OperationOutcome.ndjson"
    );
}

/// A type or parameter the CapabilityStatement does not list is refused before any search
/// request; `force` sends it, and the server's 400 fails the query with its text. The
/// summary says whether `$export` is offered.
#[tokio::test]
async fn capability_refusal_force_and_export_hint() {
    let data = data_dir();
    let server = TestServer::start(config(data.path())).await.unwrap();
    let out = tempfile::tempdir().unwrap();
    let e = crawl(opts(
        &server,
        out.path(),
        &["Observation?code=123", "Encounter"],
    ))
    .await
    .unwrap_err();
    let text = e.to_string();
    assert!(matches!(e, Error::Unsupported { .. }), "{text}");
    assert!(
        text.contains("Observation has no search parameter code")
            && text.contains("no resource type Encounter"),
        "{text}"
    );
    assert_eq!(server.search_requests(), 0);
    assert!(!out.path().join(search::SEARCH_STATE_FILE).exists());

    let out = tempfile::tempdir().unwrap();
    let mut o = opts(&server, out.path(), &["Observation?code=123", "Patient"]);
    o.force = true;
    let s = crawl(o).await.unwrap();
    assert_eq!(s.export_offered, Some(true));
    assert_eq!(s.failed.len(), 1, "{s:?}");
    assert!(
        s.failed[0].1.contains("HTTP 400")
            && s.failed[0].1.contains("unknown search parameter code"),
        "{:?}",
        s.failed
    );
    assert_eq!(s.types["Patient"], 5, "the other query still ran");
    assert_eq!(
        log_events(out.path()).last().map(String::as_str),
        Some("search_failed")
    );

    // Lenient handling: the server ignores the parameter and says so in an outcome entry.
    let out = tempfile::tempdir().unwrap();
    let mut o = opts(&server, out.path(), &["Observation?code=123"]);
    o.force = true;
    o.lenient = true;
    let s = crawl(o).await.unwrap();
    assert!(s.failed.is_empty());
    assert!(
        s.issues[0].text.contains("unknown search parameter code"),
        "{:?}",
        s.issues
    );

    let mut cfg = config(data.path());
    cfg.search.export_offered = false;
    let server = TestServer::start(cfg).await.unwrap();
    let out = tempfile::tempdir().unwrap();
    let s = crawl(opts(&server, out.path(), &["Patient"]))
        .await
        .unwrap();
    assert_eq!(s.export_offered, Some(false));
}

/// A next link to another origin never receives the token: refused (the query fails and says
/// why), or with `NextOrigin::Rewrite` sent to the FHIR server's origin.
#[tokio::test]
async fn token_never_goes_to_another_origin() {
    let data = data_dir();
    let mut cfg = config(data.path());
    cfg.search.next_link_other_origin = true;
    let server = TestServer::start(cfg).await.unwrap();
    let other_host = server
        .other_origin()
        .trim_start_matches("http://")
        .to_owned();
    let out = tempfile::tempdir().unwrap();
    let mut o = opts(&server, out.path(), &["Observation"]);
    o.count = Some(3);
    let s = crawl(o).await.unwrap();
    assert_eq!(s.failed.len(), 1);
    assert!(s.failed[0].1.contains("another origin"), "{:?}", s.failed);
    assert_eq!(s.types["Observation"], 3, "the first page is kept");
    assert!(
        server.requests().iter().all(|r| r.host != other_host),
        "a request reached the other origin"
    );

    let out = tempfile::tempdir().unwrap();
    let mut o = opts(&server, out.path(), &["Observation"]);
    o.count = Some(3);
    o.next_origin = NextOrigin::Rewrite;
    let s = crawl(o).await.unwrap();
    assert!(s.complete(), "{s:?}");
    assert_eq!(s.types["Observation"], 7);
    assert!(server.requests().iter().all(|r| r.host != other_host));
}

/// Without a token, or with a wrong one, the server answers 401: auth is required for search.
#[tokio::test]
async fn search_needs_the_token_when_auth_is_on() {
    let data = data_dir();
    let server = TestServer::start(config(data.path())).await.unwrap();
    let out = tempfile::tempdir().unwrap();
    let mut o = opts(&server, out.path(), &["Patient"]);
    o.conn = flatfhir_fetch::Connection::new(
        server.base_url().parse().unwrap(),
        flatfhir_fetch::Credentials::None,
    );
    o.conn.timing = fast_timing();
    let s = crawl(o).await.unwrap();
    assert!(s.failed[0].1.contains("HTTP 401"), "{:?}", s.failed);
}

/// A server whose next link leads back to a page already read would keep a crawl busy
/// forever: the query fails, saying so, with the pages before it kept.
#[tokio::test]
async fn a_looping_next_link_fails_the_query() {
    let data = data_dir();
    let mut cfg = config(data.path());
    cfg.search.faults = vec![(2, PageFault::LoopingNext)];
    let server = TestServer::start(cfg).await.unwrap();
    let out = tempfile::tempdir().unwrap();
    let mut o = opts(&server, out.path(), &["Observation"]);
    o.count = Some(2);
    let s = crawl(o).await.unwrap();
    assert_eq!(s.failed.len(), 1, "{s:?}");
    assert!(s.failed[0].1.contains("paging loops"), "{:?}", s.failed);
    assert_eq!(s.types["Observation"], 2);
    assert_eq!(server.search_requests(), 2);
}

/// Files are closed at `lines_per_file` (at a page's end) and renamed into place; a crash
/// after such a rename but before the state recorded it is recognised on `--resume`.
#[tokio::test]
async fn full_files_are_published_and_a_rename_before_the_state_save_is_recognised() {
    let data = data_dir();
    let server = TestServer::start(config(data.path())).await.unwrap();
    let out = tempfile::tempdir().unwrap();
    let mut o = opts(&server, out.path(), &["Observation"]);
    o.count = Some(2);
    o.lines_per_file = 3;
    o.max_pages = Some(3);
    crawl(o).await.unwrap();
    // Pages of 2: the first file closes at 4 lines, the second holds the third page.
    assert_eq!(out_lines(out.path(), "1.Observation.ndjson").len(), 4);
    assert_eq!(out_lines(out.path(), "2.Observation.ndjson").len(), 2);
    no_leftovers(out.path());
    // Pretend the crawl died between the rename of file 2 and the state save.
    let state_path = out.path().join(search::SEARCH_STATE_FILE);
    let mut state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&state_path).unwrap()).unwrap();
    state["files"][1]["published"] = false.into();
    state["finished"] = false.into();
    std::fs::write(&state_path, state.to_string()).unwrap();
    let mut o = opts(&server, out.path(), &[]);
    o.resume = true;
    o.lines_per_file = 3;
    let s = crawl(o).await.unwrap();
    assert!(s.complete(), "{s:?}");
    let mut all = Vec::new();
    for n in 1..=3 {
        all.extend(out_lines(out.path(), &format!("{n}.Observation.ndjson")));
    }
    assert_eq!(all, data_lines(data.path(), "Observation"));
    no_leftovers(out.path());
}

/// A server that hides its CapabilityStatement: a warning (with the reason), nothing is
/// checked, and the crawl runs. Failing credentials stop the crawl with the auth error
/// before any search request, instead of being taken for an unreadable CapabilityStatement.
#[tokio::test]
async fn unreadable_metadata_warns_and_bad_credentials_stop() {
    let data = data_dir();
    let mut cfg = config(data.path());
    cfg.search.no_metadata = true;
    let server = TestServer::start(cfg).await.unwrap();
    let out = tempfile::tempdir().unwrap();
    let seen = Seen::default();
    let s = search::search(opts(&server, out.path(), &["Patient"]), seen.observer())
        .await
        .unwrap();
    assert_eq!(s.export_offered, None);
    assert_eq!(s.types["Patient"], 5);
    let warned = seen.0.lock().unwrap().iter().any(|e| {
        matches!(e, SearchEvent::Warning { message } if message.contains("CapabilityStatement") && message.contains("HTTP 404"))
    });
    assert!(warned);
    assert!(log_events(out.path()).contains(&"capability_unreadable".to_owned()));

    let server = TestServer::start(config(data.path())).await.unwrap();
    let out = tempfile::tempdir().unwrap();
    let mut o = opts(&server, out.path(), &["Patient"]);
    o.conn = flatfhir_fetch::Connection::new(
        server.base_url().parse().unwrap(),
        flatfhir_fetch::Credentials::ClientSecret {
            client_id: "secret-client".into(),
            secret: flatfhir_fetch::Secret::new("wrong-secret"),
            form_post: false,
        },
    );
    o.conn.timing = fast_timing();
    let e = crawl(o).await.unwrap_err();
    assert!(
        matches!(e, Error::Fetch(flatfhir_fetch::Error::Token { .. })),
        "{e}"
    );
    assert_eq!(server.search_requests(), 0);
    let events = log_events(out.path());
    assert!(
        !events.contains(&"capability_unreadable".to_owned()),
        "{events:?}"
    );
    assert_eq!(events.last().map(String::as_str), Some("search_failed"));
}

/// The test server's search parameters: `_lastUpdated` with a prefix, `_id` lists and
/// `patient`, through the whole crawl (the written resources are exactly the matches).
#[tokio::test]
async fn search_parameters_select_the_matches() {
    let data = tempfile::tempdir().unwrap();
    let obs: String = [("o1", "p1", "2024-01-01"), ("o2", "p1", "2025-01-01"), ("o3", "p2", "2026-01-01")]
        .iter()
        .map(|(id, p, d)| {
            format!(
                "{{\"resourceType\":\"Observation\",\"id\":\"{id}\",\"meta\":{{\"lastUpdated\":\"{d}T00:00:00Z\"}},\"subject\":{{\"reference\":\"Patient/{p}\"}}}}\n"
            )
        })
        .collect();
    std::fs::write(data.path().join("Observation.ndjson"), obs).unwrap();
    std::fs::write(
        data.path().join("Patient.ndjson"),
        "{\"resourceType\":\"Patient\",\"id\":\"p1\"}\n{\"resourceType\":\"Patient\",\"id\":\"p2\"}\n",
    )
    .unwrap();
    let server = TestServer::start(config(data.path())).await.unwrap();
    for (query, want) in [
        (
            "Observation?_lastUpdated=gt2024-06-01T00:00:00Z",
            vec!["o2", "o3"],
        ),
        (
            "Observation?_lastUpdated=le2025-01-01T00:00:00Z",
            vec!["o1", "o2"],
        ),
        ("Observation?_id=o1,o3&patient=Patient/p1", vec!["o1"]),
        ("Observation?subject=p2", vec!["o3"]),
        ("Patient?_id=p2", vec!["p2"]),
    ] {
        let out = tempfile::tempdir().unwrap();
        let s = crawl(opts(&server, out.path(), &[query])).await.unwrap();
        assert!(s.complete(), "{query}: {s:?}");
        let rtype = query.split('?').next().unwrap();
        let ids: Vec<String> = out_lines(out.path(), &format!("1.{rtype}.ndjson"))
            .iter()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["id"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        assert_eq!(ids, want, "{query}");
    }
}
