//! Kick-off: levels, parameter styles, headers, failures, relative Content-Location.

use flatfhir_bulk_server::TestServer;
use flatfhir_fetch::{Error, Level, ParamStyle};

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_export_layout_and_log() {
    let data = data_dir();
    let server = TestServer::start(config(data.path())).await.unwrap();
    let out = tempfile::tempdir().unwrap();
    let s = run(options(&server, out.path())).await.unwrap();
    assert_eq!((s.files, s.resources), (6, 15));
    assert!(s.failed.is_empty() && s.issues.is_empty());
    assert_standard_output(out.path());
    let manifest: serde_json::Value =
        serde_json::from_str(&read(out.path(), "manifest.json")).unwrap();
    assert_eq!(manifest["output"].as_array().unwrap().len(), 6);
    assert_eq!(
        s.transaction_time.as_deref(),
        manifest["transactionTime"].as_str()
    );
    let events = log_events(out.path());
    for e in [
        "kickoff",
        "status_progress",
        "status_complete",
        "manifest_complete",
        "download_request",
        "download_complete",
        "export_complete",
    ] {
        assert!(events.iter().any(|x| x == e), "no {e} in {events:?}");
    }
    assert_eq!(
        events.iter().filter(|e| *e == "download_complete").count(),
        6
    );
    let first: serde_json::Value =
        serde_json::from_str(read(out.path(), "log.ndjson").lines().next().unwrap()).unwrap();
    assert!(first["exportId"].as_str().unwrap().contains("/jobs/"));
    assert!(first["timestamp"].as_str().unwrap().ends_with('Z'));
    assert_eq!(first["eventId"], "kickoff");
    assert_eq!(first["eventDetail"]["softwareName"], "flatfhir-bulk-server");
    assert_eq!(first["eventDetail"]["fhirVersion"], "4.0.1");
    assert!(
        first["eventDetail"]["exportUrl"]
            .as_str()
            .unwrap()
            .contains("/fhir/Patient/$export")
    );
    let job: flatfhir_fetch::JobState =
        serde_json::from_str(&read(out.path(), flatfhir_fetch::JOB_FILE)).unwrap();
    assert_eq!(job.phase, flatfhir_fetch::Phase::Complete);

    let reqs = server.requests();
    let kick = reqs.iter().find(|r| r.path.contains("$export")).unwrap();
    assert_eq!(kick.method, "GET");
    assert!(
        kick.path.starts_with("/fhir/Patient/$export"),
        "{}",
        kick.path
    );
    assert_eq!(kick.prefer.as_deref(), Some("respond-async"));
    assert_eq!(kick.accept.as_deref(), Some("application/fhir+json"));
    let files: Vec<_> = reqs
        .iter()
        .filter(|r| r.path.starts_with("/files/"))
        .collect();
    assert_eq!(files.len(), 6);
    assert!(
        files
            .iter()
            .all(|r| r.accept.as_deref() == Some("application/fhir+ndjson"))
    );
    assert!(
        files.iter().all(|r| r.authorization.is_some()),
        "requiresAccessToken: true but no token"
    );

    // A second run into the same directory refuses instead of mixing exports.
    let err = run(options(&server, out.path())).await.unwrap_err();
    assert!(err.to_string().contains("--resume"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn levels_and_parameter_styles() {
    let data = data_dir();
    let server = TestServer::start(config(data.path())).await.unwrap();
    let cases: Vec<(Level, ParamStyle, Vec<String>)> = vec![
        (Level::System, ParamStyle::CommaGet, vec![]),
        (Level::Group("g1".into()), ParamStyle::RepeatGet, vec![]),
        (Level::Patient, ParamStyle::Post, vec![]),
        (
            Level::Group("g1".into()),
            ParamStyle::CommaGet,
            vec!["Patient/p1".into()],
        ),
    ];
    for (level, style, patients) in cases {
        let out = tempfile::tempdir().unwrap();
        let mut o = options(&server, out.path());
        o.kickoff.level = level.clone();
        o.kickoff.style = style;
        o.kickoff.patients = patients.clone();
        o.kickoff.types = vec!["Patient".into(), "Condition".into()];
        o.kickoff.since = Some("2020-01-01T00:00:00Z".into());
        o.kickoff.type_filters = vec!["Patient?gender=female,male".into()];
        o.kickoff.lenient = true;
        let s = run(o)
            .await
            .unwrap_or_else(|e| panic!("{level:?} {style:?}: {e}"));
        assert_eq!(s.resources, 8, "{level:?} {style:?}");
        assert_eq!(
            s.types.keys().cloned().collect::<Vec<_>>(),
            ["Condition", "Patient"]
        );
    }
    let reqs: Vec<_> = server
        .requests()
        .into_iter()
        .filter(|r| r.path.contains("$export"))
        .collect();
    assert!(reqs[0].path.starts_with("/fhir/$export?"));
    assert!(
        reqs[0].path.contains("_type=Patient,Condition"),
        "{}",
        reqs[0].path
    );
    assert!(
        reqs[0]
            .path
            .contains("_typeFilter=Patient%3Fgender%3Dfemale%2Cmale"),
        "{}",
        reqs[0].path
    );
    assert_eq!(
        reqs[0].prefer.as_deref(),
        Some("respond-async, handling=lenient")
    );
    assert!(
        reqs[1].path.contains("_type=Patient&_type=Condition"),
        "{}",
        reqs[1].path
    );
    assert_eq!(reqs[2].method, "POST");
    assert_eq!(reqs[3].method, "POST", "--patient implies POST");
    let params = server.kickoff_params();
    assert!(
        params[2].contains(&("_type".into(), "Patient".into()))
            && params[2].contains(&("_type".into(), "Condition".into()))
    );
    assert!(params[3].contains(&("patient".into(), "Patient/p1".into())));
    assert!(params[3].contains(&("_since".into(), "2020-01-01T00:00:00Z".into())));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kickoff_failure_shows_operation_outcome() {
    let data = data_dir();
    let mut cfg = config(data.path());
    cfg.faults.kickoff_failure = true;
    let server = TestServer::start(cfg).await.unwrap();
    let out = tempfile::tempdir().unwrap();
    let err = run(options(&server, out.path())).await.unwrap_err();
    assert!(matches!(err, Error::Kickoff { status: 500, .. }), "{err}");
    assert!(
        err.to_string().contains("simulated kick-off failure"),
        "{err}"
    );
    let log = read(out.path(), "log.ndjson");
    assert!(log.contains("\"errorCode\":500"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relative_content_location_is_resolved() {
    let data = data_dir();
    let mut cfg = config(data.path());
    cfg.faults.relative_content_location = true;
    let server = TestServer::start(cfg).await.unwrap();
    let out = tempfile::tempdir().unwrap();
    let s = run(options(&server, out.path())).await.unwrap();
    assert_eq!(s.resources, 15);
    assert!(
        s.status_url.starts_with("http://127.0.0.1:"),
        "{}",
        s.status_url
    );
    assert!(
        server
            .requests()
            .iter()
            .any(|r| r.path.starts_with("/jobs/") && r.status == 200)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vendor_headers_go_with_every_request() {
    let data = data_dir();
    let mut cfg = config(data.path());
    cfg.faults.redirect_to_other_host = true;
    let server = TestServer::start(cfg).await.unwrap();
    let out = tempfile::tempdir().unwrap();
    let mut o = options(&server, out.path());
    o.conn.headers = vec![("Epic-Client-ID".into(), "vendor-123".into())];
    run(o).await.unwrap();
    let reqs = server.requests();
    assert!(reqs.len() > 10);
    for r in &reqs {
        assert!(
            r.headers
                .contains(&("epic-client-id".into(), "vendor-123".into())),
            "{} {} lacks the vendor header",
            r.method,
            r.path
        );
        assert!(
            r.headers
                .iter()
                .any(|(k, v)| k == "user-agent" && v.starts_with("flatfhir/"))
        );
    }
}
