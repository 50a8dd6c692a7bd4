//! Downloads: gzip, redirects, expired links, dropped connections, content checks, errors.

use flatfhir_bulk_server::{Gzip, TestServer};

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gzip_with_and_without_content_encoding() {
    let data = data_dir();
    for gz in [Gzip::WithHeader, Gzip::Silent] {
        let mut cfg = config(data.path());
        cfg.gzip = gz;
        let server = TestServer::start(cfg).await.unwrap();
        let out = tempfile::tempdir().unwrap();
        let s = run(options(&server, out.path()))
            .await
            .unwrap_or_else(|e| panic!("{gz:?}: {e}"));
        assert_eq!(s.resources, 15, "{gz:?}");
        assert_standard_output(out.path());
        assert!(read(out.path(), "1.Patient.ndjson").starts_with("{\"resourceType\":\"Patient\""));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirect_to_another_host_drops_the_token() {
    let data = data_dir();
    let mut cfg = config(data.path());
    cfg.faults.redirect_to_other_host = true;
    let server = TestServer::start(cfg).await.unwrap();
    let out = tempfile::tempdir().unwrap();
    let s = run(options(&server, out.path())).await.unwrap();
    assert_eq!(s.resources, 15);
    assert_standard_output(out.path());
    let reqs = server.requests();
    let other_host = server
        .other_origin()
        .trim_start_matches("http://")
        .to_owned();
    let on_other: Vec<_> = reqs.iter().filter(|r| r.host == other_host).collect();
    let redirects: Vec<_> = reqs.iter().filter(|r| r.status == 307).collect();
    assert_eq!(on_other.len(), 6, "downloads did not reach the other host");
    assert_eq!(redirects.len(), 6);
    assert!(
        redirects.iter().all(|r| r.authorization.is_some()),
        "token not sent to the FHIR server"
    );
    assert!(
        on_other.iter().all(|r| r.authorization.is_none()),
        "token leaked to another host"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_only_when_required() {
    let data = data_dir();
    let mut cfg = config(data.path());
    cfg.requires_access_token = false;
    let server = TestServer::start(cfg).await.unwrap();
    let out = tempfile::tempdir().unwrap();
    run(options(&server, out.path())).await.unwrap();
    let files: Vec<_> = server
        .requests()
        .into_iter()
        .filter(|r| r.path.starts_with("/files/"))
        .collect();
    assert_eq!(files.len(), 6);
    assert!(files.iter().all(|r| r.authorization.is_none()));

    // Missing requiresAccessToken means true (and STU4 `outcome` is read as `error`).
    let mut cfg = config(data.path());
    cfg.faults.omit_requires_access_token = true;
    cfg.faults.stu4_outcome = true;
    cfg.faults.failing_types = vec!["Condition".into()];
    let server = TestServer::start(cfg).await.unwrap();
    let out = tempfile::tempdir().unwrap();
    let s = run(options(&server, out.path())).await.unwrap();
    let files: Vec<_> = server
        .requests()
        .into_iter()
        .filter(|r| r.path.starts_with("/files/"))
        .collect();
    assert!(files.iter().all(|r| r.authorization.is_some()));
    assert_eq!(lines(out.path(), "error/1.OperationOutcome.ndjson"), 1);
    assert!(s.has_error_issues());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_in_manifest_are_downloaded_and_reported() {
    let data = data_dir();
    let mut cfg = config(data.path());
    cfg.faults.failing_types = vec!["Observation".into(), "Condition".into()];
    let server = TestServer::start(cfg).await.unwrap();
    let out = tempfile::tempdir().unwrap();
    let s = run(options(&server, out.path())).await.unwrap();
    assert_eq!(s.resources, 5, "Patient still downloaded");
    assert_eq!(lines(out.path(), "error/1.OperationOutcome.ndjson"), 2);
    assert_eq!(s.issues.len(), 2);
    assert!(s.has_error_issues());
    assert!(
        s.issues[0].text.contains("Failed to generate Condition"),
        "{:?}",
        s.issues
    );
    assert!(!out.path().join("1.Observation.ndjson").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_links_are_refreshed_by_repolling() {
    let data = data_dir();
    let mut cfg = config(data.path());
    cfg.faults.expire_links_once = true;
    let server = TestServer::start(cfg).await.unwrap();
    let out = tempfile::tempdir().unwrap();
    let s = run(options(&server, out.path())).await.unwrap();
    assert_eq!(s.resources, 15);
    assert_standard_output(out.path());
    let reqs = server.requests();
    assert_eq!(reqs.iter().filter(|r| r.status == 410).count(), 6);
    assert_eq!(
        reqs.iter()
            .filter(|r| r.path.contains("g=1") && r.status == 200)
            .count(),
        6
    );
    assert_eq!(
        log_events(out.path())
            .iter()
            .filter(|e| *e == "download_error")
            .count(),
        6
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_connection_resumes_with_range() {
    let data = data_dir();
    let mut cfg = config(data.path());
    cfg.faults.drop_mid_file = true;
    cfg.lines_per_file = 100;
    let server = TestServer::start(cfg).await.unwrap();
    let out = tempfile::tempdir().unwrap();
    let s = run(options(&server, out.path())).await.unwrap();
    assert_eq!(s.resources, 15);
    assert_eq!(lines(out.path(), "1.Observation.ndjson"), 7);
    let ranged: Vec<_> = server
        .requests()
        .into_iter()
        .filter(|r| r.range.is_some())
        .collect();
    assert_eq!(ranged.len(), 3, "one Range request per file");
    assert!(
        ranged
            .iter()
            .all(|r| r.status == 206 && r.range.as_deref() != Some("bytes=0-"))
    );
}

/// Counted, not timed: the server holds the file bodies until eight are open at once, which
/// only a client that runs eight downloads together gets past; and never more than eight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_download_in_parallel() {
    let data = data_dir();
    let mut cfg = config(data.path());
    cfg.lines_per_file = 1;
    cfg.faults.downloads_together = 8;
    let server = TestServer::start(cfg).await.unwrap();
    let out = tempfile::tempdir().unwrap();
    let mut o = options(&server, out.path());
    o.parallel = 8;
    let s = run(o).await.unwrap();
    assert_eq!(s.files, 15);
    assert_eq!(server.most_downloads_at_once(), 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_checks_count_and_messy_lines() {
    let data = data_dir();
    let mut cfg = config(data.path());
    cfg.faults.messy_ndjson = true;
    let server = TestServer::start(cfg).await.unwrap();
    let out = tempfile::tempdir().unwrap();
    let s = run(options(&server, out.path())).await.unwrap();
    assert!(s.failed.is_empty(), "{:?}", s.failed);
    assert_standard_output(out.path());
    assert!(!read(out.path(), "1.Patient.ndjson").contains('\r'));

    let mut cfg = config(data.path());
    cfg.faults.wrong_count = true;
    let server = TestServer::start(cfg).await.unwrap();
    let out = tempfile::tempdir().unwrap();
    let s = run(options(&server, out.path())).await.unwrap();
    assert_eq!(s.failed.len(), 1);
    assert!(
        s.failed[0]
            .1
            .contains("manifest count is 4 but the file has 3"),
        "{:?}",
        s.failed
    );
    assert!(
        !out.path().join(&s.failed[0].0).exists(),
        "an unverified file got its final name"
    );

    // A line cap smaller than a resource.
    let server = TestServer::start(config(data.path())).await.unwrap();
    let out = tempfile::tempdir().unwrap();
    let mut o = options(&server, out.path());
    o.max_line_bytes = 30;
    let s = run(o).await.unwrap();
    assert_eq!(s.failed.len(), 6);
    assert!(
        s.failed[0].1.contains("line longer than 30 bytes"),
        "{:?}",
        s.failed
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_resource_type_is_caught() {
    let data = data_dir();
    std::fs::write(
        data.path().join("Encounter.ndjson"),
        "{\"resourceType\":\"Patient\",\"id\":\"x\"}\n",
    )
    .unwrap();
    let server = TestServer::start(config(data.path())).await.unwrap();
    let out = tempfile::tempdir().unwrap();
    let s = run(options(&server, out.path())).await.unwrap();
    assert_eq!(s.failed.len(), 1);
    assert!(
        s.failed[0]
            .1
            .contains("resourceType \"Patient\" where the manifest says Encounter"),
        "{:?}",
        s.failed
    );
}

/// The download reads lines as `convert` does: what `convert` would reject fails the download,
/// naming file, line and reason, and what it reads passes (also with one HTTP chunk per
/// line). serde_json, the check before, took a JSON array for an object and a lone UTF-16
/// surrogate escape inside a string it skipped. Nesting is read to `convert`'s depth.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lines_are_checked_as_convert_reads_them() {
    let data = data_dir();
    let line = |t: &str, rest: &str| format!("{{\"resourceType\":\"{t}\",\"id\":\"x\"{rest}}}\n");
    std::fs::write(
        data.path().join("Encounter.ndjson"),
        format!("{}[\"Encounter\"]\n", line("Encounter", "")),
    )
    .unwrap();
    std::fs::write(
        data.path().join("Medication.ndjson"),
        line("Medication", "") + &line("Medication", ",\"note\":\"\\ud800\""),
    )
    .unwrap();
    let deep = format!(",\"a\":{}1{}", "[".repeat(200), "]".repeat(200));
    std::fs::write(
        data.path().join("Condition.ndjson"),
        line("Condition", "") + &line("Condition", &deep),
    )
    .unwrap();
    let mut cfg = config(data.path());
    cfg.chunk_per_line = true;
    cfg.lines_per_file = 100;
    let server = TestServer::start(cfg).await.unwrap();
    let out = tempfile::tempdir().unwrap();
    let s = run(options(&server, out.path())).await.unwrap();
    let mut failed: Vec<&str> = s.failed.iter().map(|f| f.1.as_str()).collect();
    failed.sort_unstable();
    assert_eq!(failed.len(), 2, "{failed:?}");
    assert!(
        failed[0].contains("Encounter.ndjson: line 2: not a JSON object (the line holds an array)"),
        "{failed:?}"
    );
    assert!(
        failed[1].contains("Medication.ndjson: line 2: not JSON: unpaired UTF-16 surrogate"),
        "{failed:?}"
    );
    // Nothing half-checked is left behind; the deep line is kept as sent.
    assert!(!out.path().join("1.Encounter.ndjson").exists());
    assert!(!out.path().join("1.Medication.ndjson").exists());
    assert_eq!(lines(out.path(), "1.Condition.ndjson"), 2);
}

/// One HTTP chunk per line, a connection dropped mid-file, and a bad line among the bytes
/// received before the drop: the bad line fails the file (it is not continued with `Range`,
/// and the drop is not what the error says).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_line_before_a_dropped_connection_fails_the_file() {
    let data = data_dir();
    let good = "{\"resourceType\":\"Encounter\",\"id\":\"ok\"}\n";
    std::fs::write(
        data.path().join("Encounter.ndjson"),
        format!(
            "{{\"resourceType\":\"Encounter\",\"id\":}}\n{}",
            good.repeat(5)
        ),
    )
    .unwrap();
    let mut cfg = config(data.path());
    cfg.chunk_per_line = true;
    cfg.faults.drop_mid_file = true;
    cfg.lines_per_file = 100;
    let server = TestServer::start(cfg).await.unwrap();
    let out = tempfile::tempdir().unwrap();
    let s = run(options(&server, out.path())).await.unwrap();
    assert_eq!(s.failed.len(), 1, "{:?}", s.failed);
    assert!(
        s.failed[0].1.contains("Encounter.ndjson: line 1: not JSON"),
        "{:?}",
        s.failed
    );
    let ranged = server
        .requests()
        .into_iter()
        .filter(|r| r.status == 206 && r.path.contains("/files/"))
        .count();
    // The other three files continue with Range; the bad one does not.
    assert_eq!(ranged, 3);
    assert!(!out.path().join("1.Encounter.ndjson").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limited_downloads_lower_the_parallelism() {
    let data = data_dir();
    let mut cfg = config(data.path());
    cfg.faults.rate_limit_downloads = Some(flatfhir_bulk_server::RetryAfter::Seconds(0));
    let server = TestServer::start(cfg).await.unwrap();
    let out = tempfile::tempdir().unwrap();
    let mut o = options(&server, out.path());
    o.parallel = 4;
    let events = Events::default();
    let s = flatfhir_fetch::fetch(o, events.observer()).await.unwrap();
    assert_eq!(s.resources, 15);
    let levels: Vec<usize> = events
        .0
        .lock()
        .unwrap()
        .iter()
        .filter_map(|e| match e {
            flatfhir_fetch::Event::Throttled { parallel } => Some(*parallel),
            _ => None,
        })
        .collect();
    // Six 429s (one per file) take 4 slots down to the floor of 1, never below.
    assert_eq!(levels, [3, 2, 1]);
}

/// SMART's `some_file_generation_failed`: the error entry carries the count of the file that
/// failed (here 3), the error file holds one OperationOutcome. The error file is kept, the
/// mismatch is a warning, the outcome's text reaches the summary, and `--resume` finishes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_files_are_kept_whatever_their_count_says() {
    let data = data_dir();
    let mut cfg = config(data.path());
    cfg.faults.failed_files = vec![("Observation".into(), 2)];
    let server = TestServer::start(cfg).await.unwrap();
    let out = tempfile::tempdir().unwrap();
    let events = Events::default();
    let s = flatfhir_fetch::fetch(options(&server, out.path()), events.observer())
        .await
        .unwrap();
    assert!(s.failed.is_empty(), "{:?}", s.failed);
    assert_eq!(s.resources, 12, "every output file but the failed one");
    assert_eq!(lines(out.path(), "error/1.OperationOutcome.ndjson"), 1);
    assert!(
        s.issues
            .iter()
            .any(|i| i.text == "Failed to export 2.Observation.ndjson"),
        "{:?}",
        s.issues
    );
    assert!(s.has_error_issues() && !s.complete());
    let warned = events.0.lock().unwrap().iter().any(|e| {
        matches!(e, flatfhir_fetch::Event::Warning { path, message }
            if path == "error/1.OperationOutcome.ndjson" && message.contains("count is 3"))
    });
    assert!(warned);
    let events_logged = log_events(out.path());
    assert!(events_logged.contains(&"count_mismatch".to_owned()));
    assert_eq!(
        events_logged.last().map(String::as_str),
        Some("export_partial")
    );
    assert!(!events_logged.contains(&"export_complete".to_owned()));

    // Nothing is left to do: a resume downloads nothing and reports the same.
    let downloads = |s: &TestServer| {
        s.requests()
            .iter()
            .filter(|r| r.path.starts_with("/files/"))
            .count()
    };
    let before = downloads(&server);
    let mut o = options(&server, out.path());
    o.resume = true;
    let s = run(o).await.unwrap();
    assert!(s.failed.is_empty(), "{:?}", s.failed);
    assert_eq!(downloads(&server), before);
    assert_eq!(s.issues.len(), 1);
}

/// SMART's `fileError`: a download answers 200 with an OperationOutcome; its text is shown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operation_outcome_instead_of_data_shows_its_text() {
    let data = data_dir();
    let mut cfg = config(data.path());
    cfg.faults.file_error = vec![("Patient".into(), 1)];
    let server = TestServer::start(cfg).await.unwrap();
    let out = tempfile::tempdir().unwrap();
    let s = run(options(&server, out.path())).await.unwrap();
    assert_eq!(s.failed.len(), 1, "{:?}", s.failed);
    let (path, why) = &s.failed[0];
    assert_eq!(path, "1.Patient.ndjson");
    assert!(
        why.contains("OperationOutcome instead of Patient resources")
            && why.contains("Simulated file error: 1.Patient.ndjson could not be read"),
        "{why}"
    );
    assert!(!out.path().join("1.Patient.ndjson").exists());
    assert!(!out.path().join("1.Patient.ndjson.part").exists());
}

/// A server that offers gzip gets asked for it, and the files arrive decoded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gzip_is_asked_for_where_the_server_offers_it() {
    let data = data_dir();
    let mut cfg = config(data.path());
    cfg.gzip = Gzip::Negotiated;
    let server = TestServer::start(cfg).await.unwrap();
    let out = tempfile::tempdir().unwrap();
    let s = run(options(&server, out.path())).await.unwrap();
    assert_eq!(s.resources, 15);
    assert_standard_output(out.path());
    let files: Vec<_> = server
        .requests()
        .into_iter()
        .filter(|r| r.path.starts_with("/files/"))
        .collect();
    assert_eq!(files.len(), 6);
    for r in &files {
        let ae = r
            .headers
            .iter()
            .find(|(k, _)| k == "accept-encoding")
            .map(|(_, v)| v.as_str());
        assert!(ae.is_some_and(|v| v.contains("gzip")), "{r:?}");
        assert_eq!(r.content_encoding.as_deref(), Some("gzip"), "{r:?}");
    }
    assert!(read(out.path(), "1.Patient.ndjson").starts_with("{\"resourceType\":\"Patient\""));
}

/// The SMART server sends one HTTP chunk per line; a dropped connection mid-file still
/// continues with Range, and the lines split across chunks are checked once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_chunk_per_line_with_a_dropped_connection() {
    let data = data_dir();
    let mut cfg = config(data.path());
    cfg.chunk_per_line = true;
    cfg.faults.drop_mid_file = true;
    cfg.lines_per_file = 100;
    let server = TestServer::start(cfg).await.unwrap();
    let out = tempfile::tempdir().unwrap();
    let s = run(options(&server, out.path())).await.unwrap();
    assert!(s.failed.is_empty(), "{:?}", s.failed);
    assert_eq!(s.resources, 15);
    assert_eq!(lines(out.path(), "1.Observation.ndjson"), 7);
    assert_eq!(
        server.requests().iter().filter(|r| r.status == 206).count(),
        3
    );
}

/// Downloaded files get the process umask's permissions (no forced mode).
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_are_created_with_the_umask() {
    use std::os::unix::fs::PermissionsExt as _;
    let Some(umask) = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Umask:"))
                .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
        })
    else {
        eprintln!("SKIPPED: no /proc/self/status to read the umask from");
        return;
    };
    let data = data_dir();
    let mut cfg = config(data.path());
    cfg.faults.messy_ndjson = true; // the rewrite path for one file type
    cfg.faults.failing_types = vec!["Condition".into()];
    let server = TestServer::start(cfg).await.unwrap();
    let out = tempfile::tempdir().unwrap();
    run(options(&server, out.path())).await.unwrap();
    for f in [
        "1.Patient.ndjson",
        "error/1.OperationOutcome.ndjson",
        "manifest.json",
        "log.ndjson",
        ".flatfhir-job.json",
    ] {
        let mode = std::fs::metadata(out.path().join(f))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o666 & !umask, "{f}: {mode:o}");
    }
}

/// A gzip answer cut off half way continues with a Range request for identity bytes at the
/// decoded offset (Range requests do not offer gzip), and the file comes out whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_gzip_download_continues_with_identity_bytes() {
    let data = data_dir();
    let mut cfg = config(data.path());
    cfg.gzip = Gzip::Negotiated;
    cfg.faults.drop_mid_file = true;
    cfg.lines_per_file = 100;
    let server = TestServer::start(cfg).await.unwrap();
    let out = tempfile::tempdir().unwrap();
    let s = run(options(&server, out.path())).await.unwrap();
    assert!(s.failed.is_empty(), "{:?}", s.failed);
    assert_eq!(s.resources, 15);
    assert_eq!(lines(out.path(), "1.Observation.ndjson"), 7);
    let data_lines: Vec<String> = std::fs::read_to_string(data.path().join("Observation.ndjson"))
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    let got: Vec<String> = read(out.path(), "1.Observation.ndjson")
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(got, data_lines);
    let ranged: Vec<_> = server
        .requests()
        .into_iter()
        .filter(|r| r.range.is_some())
        .collect();
    assert!(!ranged.is_empty());
    assert!(
        ranged.iter().all(|r| r.content_encoding.is_none()),
        "{ranged:?}"
    );
}

/// A server that gzips even a Range answer (whose bytes then cannot be decoded from the
/// middle): the file starts over without Range and still comes out whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compressed_range_answer_makes_the_file_start_over() {
    let data = data_dir();
    let mut cfg = config(data.path());
    cfg.gzip = Gzip::WithHeader;
    cfg.faults.drop_mid_file = true;
    cfg.lines_per_file = 100;
    let server = TestServer::start(cfg).await.unwrap();
    let out = tempfile::tempdir().unwrap();
    let s = run(options(&server, out.path())).await.unwrap();
    assert!(s.failed.is_empty(), "{:?}", s.failed);
    assert_eq!(s.resources, 15);
    assert_standard_output_at_100(out.path());
    let files: Vec<_> = server
        .requests()
        .into_iter()
        .filter(|r| r.path.starts_with("/files/"))
        .collect();
    // Per file: the cut-off first answer, the undecodable Range answer, a whole new download.
    assert_eq!(files.len(), 9, "{files:?}");
    assert_eq!(files.iter().filter(|r| r.range.is_some()).count(), 3);
}

fn assert_standard_output_at_100(out: &std::path::Path) {
    assert_eq!(lines(out, "1.Patient.ndjson"), 5);
    assert_eq!(lines(out, "1.Observation.ndjson"), 7);
    assert_eq!(lines(out, "1.Condition.ndjson"), 3);
}

/// A body that stops arriving fails after the read timeout (300 s without a byte, watched by
/// the download itself since reqwest's per-chunk read timeout was dropped for file bodies),
/// is retried, and when it never resumes the file fails with a message that says why.
/// Paused time: the server's 400 s pause before each chunk and the 300 s pass at once.
#[tokio::test(start_paused = true)]
async fn a_stalled_body_times_out_and_is_retried() {
    let data = data_dir();
    let mut cfg = config(data.path());
    cfg.faults.slow_chunks = Some(std::time::Duration::from_secs(400));
    let server = TestServer::start(cfg).await.unwrap();
    let out = tempfile::tempdir().unwrap();
    let mut o = options(&server, out.path());
    o.conn.timing.retries = 1;
    let t = tokio::time::Instant::now();
    let s = run(o).await.unwrap();
    assert!(!s.failed.is_empty());
    for (file, reason) in &s.failed {
        assert!(reason.contains("no data for 300 s"), "{file}: {reason}");
    }
    // Two attempts of 300 s each (had the watchdog waited 400 s, the first chunk would have
    // arrived and the download gone on, 1 KiB per 400 s, without failing).
    assert!(
        t.elapsed() >= std::time::Duration::from_secs(600),
        "{:?}",
        t.elapsed()
    );
    let log = read(out.path(), "log.ndjson");
    assert!(
        log.lines()
            .any(|l| l.contains("download_retry") && l.contains("no data for 300 s")),
        "{log}"
    );
}

/// Whatever the framing and faults (one HTTP chunk per line, Content-Length, gzip, a
/// connection cut mid-file and resumed with Range, HTTPS is in `tls.rs`), the files hold the
/// server's lines byte for byte, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_hold_the_servers_bytes_through_every_framing_and_fault() {
    let data = data_dir();
    for (per_line, drop_mid, gzip) in [
        (true, false, Gzip::Off),
        (true, true, Gzip::Off),
        (false, true, Gzip::Off),
        (false, false, Gzip::WithHeader),
        (false, true, Gzip::Negotiated),
    ] {
        let mut cfg = config(data.path());
        cfg.chunk_per_line = per_line;
        cfg.faults.drop_mid_file = drop_mid;
        cfg.gzip = gzip;
        let server = TestServer::start(cfg).await.unwrap();
        let out = tempfile::tempdir().unwrap();
        let s = run(options(&server, out.path())).await.unwrap();
        assert_eq!(s.resources, 15);
        for (ty, files) in [("Patient", 2), ("Observation", 3), ("Condition", 1)] {
            let got: String = (1..=files)
                .map(|n| read(out.path(), &format!("{n}.{ty}.ndjson")))
                .collect();
            let want = std::fs::read_to_string(data.path().join(format!("{ty}.ndjson"))).unwrap();
            assert_eq!(
                got, want,
                "{ty}: per line {per_line}, drop {drop_mid}, {gzip:?}"
            );
        }
        assert_standard_output(out.path());
    }
}
