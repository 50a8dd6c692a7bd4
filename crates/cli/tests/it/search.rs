//! `flatfhir search` and `export --search` against the in-process test server: the crawl
//! converts to the same tables as a Bulk Data export of the same data, exit codes, the
//! `$export` hint and capability refusals.

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use flatfhir_bulk_server::{Config, NextLinks, RegisteredClient, TestServer};
use predicates::prelude::*;

use crate::support::read_parquet;

const TYPES: [&str; 5] = [
    "Condition",
    "Encounter",
    "ExplanationOfBenefit",
    "Observation",
    "Patient",
];

fn keys() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fetch/tests/it/keys")
}

struct Env {
    _rt: tokio::runtime::Runtime,
    _data: tempfile::TempDir,
    server: TestServer,
}

/// The demo generator's data (nested, extensions, `value[x]` variety) for 6 patients.
fn start(tweak: impl FnOnce(&mut Config)) -> Env {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let data = tempfile::tempdir().unwrap();
    flatfhir_bulk_server::demo::generate(data.path(), 6, 7).unwrap();
    let jwks: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(keys().join("jwks.json")).unwrap()).unwrap();
    let mut cfg = Config::new(data.path());
    cfg.clients = vec![RegisteredClient::with_jwks("cli-client", jwks)];
    cfg.polls_before_ready = 1;
    cfg.lines_per_file = 40;
    cfg.search.next_links = NextLinks::Alternate;
    tweak(&mut cfg);
    let server = rt.block_on(TestServer::start(cfg)).unwrap();
    Env {
        _rt: rt,
        _data: data,
        server,
    }
}

impl Env {
    fn cmd(&self, sub: &str, out: &Path) -> Command {
        let mut c = Command::cargo_bin("flatfhir").unwrap();
        c.arg(sub)
            .arg("--out")
            .arg(out)
            .args(["--min-wait", "5ms", "--max-poll-wait", "50ms"])
            .args([
                "--fhir-url",
                &self.server.base_url(),
                "--client-id",
                "cli-client",
                "--kid",
                "test-ec",
            ])
            .arg("--private-key")
            .arg(keys().join("ec.pkcs8.pem"))
            .env_remove("FLATFHIR_PRIVATE_KEY")
            .env_remove("FLATFHIR_BEARER_TOKEN")
            .env_remove("FLATFHIR_CLIENT_SECRET");
        c
    }
}

fn convert(input: &Path, out: &Path) {
    Command::cargo_bin("flatfhir")
        .unwrap()
        .arg("convert")
        .arg(input)
        .arg("--out")
        .arg(out)
        .arg("--quiet")
        .assert()
        .success();
}

/// One query per type, pages of 3 with relative and absolute next links: the crawl's
/// directory converts into the same tables (columns, order, values) as `fetch` of the same
/// server's `$export`.
#[test]
fn a_crawl_converts_to_the_tables_of_an_export() {
    let env = start(|_| {});
    let tmp = tempfile::tempdir().unwrap();
    let (exported, crawled) = (tmp.path().join("export"), tmp.path().join("crawl"));
    env.cmd("fetch", &exported)
        .args(["--system", "--quiet"])
        .assert()
        .success();
    env.cmd("search", &crawled)
        .args(TYPES)
        .args(["--count", "3", "--quiet"])
        .assert()
        .success();
    let (t1, t2) = (tmp.path().join("t1"), tmp.path().join("t2"));
    convert(&exported, &t1);
    convert(&crawled, &t2);
    let mut pages = 0;
    for t in TYPES {
        let a = read_parquet(&t1.join(format!("{t}.parquet")));
        let b = read_parquet(&t2.join(format!("{t}.parquet")));
        assert!(!a.rows.is_empty(), "{t}");
        assert_eq!(a.names(), b.names(), "{t}: columns");
        assert_eq!(a.rows, b.rows, "{t}: values");
        pages += a.rows.len().div_ceil(3);
    }
    // One request per page of 3, and several types span pages.
    assert_eq!(env.server.search_requests(), pages);
    assert!(pages > 2 * TYPES.len(), "{pages}");
}

/// `export --search` crawls, then converts every type it wrote (included Patients too).
#[test]
fn export_search_crawls_and_converts() {
    let env = start(|_| {});
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    env.cmd("export", &out)
        .args([
            "--search",
            "Observation?_include=Observation:subject",
            "--count",
            "20",
            "--json",
        ])
        .assert()
        .success()
        .stdout(predicate::str::contains("\"search\""));
    let obs = read_parquet(&out.join("tables/Observation.parquet"));
    let pats = read_parquet(&out.join("tables/Patient.parquet"));
    assert!(!obs.rows.is_empty());
    assert_eq!(pats.rows.len(), 6, "each included Patient once");
    // Again into the same DIR: refused before anything is touched; --resume is the way.
    env.cmd("export", &out)
        .args(["--search", "Condition"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("already holds a search crawl"));
    env.cmd("export", &out)
        .args([
            "--search",
            "Observation?_include=Observation:subject",
            "--resume",
        ])
        .assert()
        .success();
}

/// Exit codes: 4 when capped (and the summary says so), 1 with the reason when the server
/// lists no such parameter (nothing crawled), 64 for a malformed query; the `$export` hint;
/// `status` shows a crawl's state.
#[test]
fn exit_codes_caps_refusals_and_the_export_hint() {
    let env = start(|_| {});
    let tmp = tempfile::tempdir().unwrap();
    env.cmd("search", &tmp.path().join("a"))
        .args(["Observation", "--count", "5", "--max-pages", "2"])
        .assert()
        .code(4)
        .stderr(predicate::str::contains("capped: Observation stopped"))
        .stderr(predicate::str::contains("offers Bulk Data $export"));
    Command::cargo_bin("flatfhir")
        .unwrap()
        .args(["status", "--out"])
        .arg(tmp.path().join("a"))
        .assert()
        .success()
        .stdout(predicate::str::contains(
            "Observation: capped; 2 page(s), 10 matches",
        ));
    env.cmd("search", &tmp.path().join("a"))
        .args(["--resume"])
        .assert()
        .success();
    env.cmd("search", &tmp.path().join("b"))
        .args(["Observation?code=1234"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains(
            "Observation has no search parameter code",
        ))
        .stderr(predicate::str::contains("--force"));
    env.cmd("search", &tmp.path().join("c"))
        .args(["observation?x=1"])
        .assert()
        .code(64);
    // A crawl directory is not a place for an export.
    env.cmd("fetch", &tmp.path().join("a"))
        .args(["--system"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("holds a search crawl"));

    let env = start(|c| c.search.export_offered = false);
    env.cmd("search", &tmp.path().join("d"))
        .args(["Patient"])
        .assert()
        .success()
        .stderr(predicate::str::contains("$export").not());
}

/// A refused bearer token (401 on `metadata` and on the page) is never shown: not on stdout,
/// stderr, in `log.ndjson`, the crawl state or any other file of DIR.
#[test]
fn a_refused_bearer_token_is_never_shown() {
    let env = start(|_| {});
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let token = "bearer-value-4711-do-not-print";
    let run = Command::cargo_bin("flatfhir")
        .unwrap()
        .args([
            "search",
            "Patient",
            "--json",
            "--min-wait",
            "5ms",
            "--fhir-url",
        ])
        .arg(env.server.base_url())
        .arg("--out")
        .arg(&out)
        .env("FLATFHIR_BEARER_TOKEN", token)
        .env_remove("FLATFHIR_PRIVATE_KEY")
        .env_remove("FLATFHIR_CLIENT_SECRET")
        .assert()
        .code(1)
        .stderr(predicate::str::contains("HTTP 401"));
    let o = run.get_output();
    let mut seen = String::from_utf8_lossy(&o.stdout).into_owned();
    seen.push_str(&String::from_utf8_lossy(&o.stderr));
    let mut files = vec![out.clone()];
    while let Some(p) = files.pop() {
        if p.is_dir() {
            files.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        } else {
            seen.push_str(&String::from_utf8_lossy(&std::fs::read(&p).unwrap()));
        }
    }
    assert!(seen.contains("search_failed"), "the log was written");
    assert!(!seen.contains(token), "the token was shown");
    // The token did reach the FHIR server (it was refused there).
    assert!(env.server.requests().iter().any(|r| {
        r.authorization
            .as_deref()
            .is_some_and(|a| a.ends_with(token))
    }));
}
