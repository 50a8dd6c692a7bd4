//! Shared helpers: sample data, the test server with a registered client, fast timing.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flatfhir_bulk_server::{Config, RegisteredClient, TestServer};
use flatfhir_fetch::{Connection, Credentials, Event, Options, SigningKey, Summary, Timing};

pub(crate) const CLIENT_ID: &str = "test-client";

pub(crate) fn keys() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/keys")
}

/// A data directory: 5 Patients, 7 Observations, 3 Conditions.
pub(crate) fn data_dir() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    let mut p = String::new();
    for i in 0..5 {
        p.push_str(&format!(
            "{{\"resourceType\":\"Patient\",\"id\":\"p{i}\",\"gender\":\"female\"}}\n"
        ));
    }
    let mut o = String::new();
    for i in 0..7 {
        o.push_str(&format!(
            "{{\"resourceType\":\"Observation\",\"id\":\"o{i}\",\"status\":\"final\",\"subject\":{{\"reference\":\"Patient/p{}\"}},\"valueQuantity\":{{\"value\":{i}.5}}}}\n",
            i % 5
        ));
    }
    let mut c = String::new();
    for i in 0..3 {
        c.push_str(&format!(
            "{{\"resourceType\":\"Condition\",\"id\":\"c{i}\"}}\n"
        ));
    }
    std::fs::write(d.path().join("Patient.ndjson"), p).unwrap();
    std::fs::write(d.path().join("Observation.ndjson"), o).unwrap();
    std::fs::write(d.path().join("Condition.ndjson"), c).unwrap();
    d
}

pub(crate) fn jwks() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(keys().join("jwks.json")).unwrap()).unwrap()
}

/// A server config with auth on, quick polls, 3 lines per file.
pub(crate) fn config(data: &Path) -> Config {
    let mut c = Config::new(data);
    c.clients = vec![
        RegisteredClient::with_jwks(CLIENT_ID, jwks()),
        RegisteredClient::with_secret("secret-client", "s3cr3t-value"),
    ];
    c.lines_per_file = 3;
    c.polls_before_ready = 2;
    c.retry_after_secs = 0;
    c
}

pub(crate) fn fast_timing() -> Timing {
    let mut t = Timing::default();
    t.min_wait = Duration::from_millis(5);
    t.max_poll_wait = Duration::from_millis(50);
    t.retries = 5;
    t
}

pub(crate) fn rsa_key() -> SigningKey {
    SigningKey::load(&keys().join("rsa.pkcs8.pem"), Some("test-rsa"), None).unwrap()
}

pub(crate) fn conn(server: &TestServer) -> Connection {
    let mut c = Connection::new(
        server.base_url().parse().unwrap(),
        Credentials::PrivateKey {
            client_id: CLIENT_ID.into(),
            key: rsa_key(),
        },
    );
    c.timing = fast_timing();
    c
}

pub(crate) fn options(server: &TestServer, out: &Path) -> Options {
    let mut o = Options::new(conn(server), out);
    o.parallel = 3;
    o
}

/// Events seen during a run.
#[derive(Clone, Default)]
pub(crate) struct Events(pub(crate) Arc<Mutex<Vec<Event>>>);

impl Events {
    pub(crate) fn observer(&self) -> Arc<dyn flatfhir_fetch::Observer> {
        let inner = Arc::clone(&self.0);
        Arc::new(move |e: &Event| inner.lock().unwrap().push(e.clone()))
    }
}

pub(crate) async fn run(opts: Options) -> flatfhir_fetch::Result<Summary> {
    flatfhir_fetch::fetch(opts, Events::default().observer()).await
}

pub(crate) fn read(out: &Path, rel: &str) -> String {
    std::fs::read_to_string(out.join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

pub(crate) fn lines(out: &Path, rel: &str) -> usize {
    read(out, rel).lines().count()
}

/// `eventId`s in `log.ndjson`, in order.
pub(crate) fn log_events(out: &Path) -> Vec<String> {
    read(out, "log.ndjson")
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["eventId"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect()
}

/// All output files in the layout: 2 Patient, 3 Observation, 1 Condition at 3 lines per file.
pub(crate) fn assert_standard_output(out: &Path) {
    assert_eq!(lines(out, "1.Patient.ndjson"), 3);
    assert_eq!(lines(out, "2.Patient.ndjson"), 2);
    assert_eq!(lines(out, "1.Observation.ndjson"), 3);
    assert_eq!(lines(out, "2.Observation.ndjson"), 3);
    assert_eq!(lines(out, "3.Observation.ndjson"), 1);
    assert_eq!(lines(out, "1.Condition.ndjson"), 3);
    let leftovers: Vec<_> = std::fs::read_dir(out)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".part") || n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}
