//! SMART Backend Services: key formats, discovery, token refresh and retries, secrets.

use flatfhir_bulk_server::TestServer;
use flatfhir_fetch::{Connection, Credentials, Error, Secret, SigningKey, parse_alg};

use crate::support::*;

async fn export_with(
    server: &TestServer,
    creds: Credentials,
) -> flatfhir_fetch::Result<flatfhir_fetch::Summary> {
    let out = tempfile::tempdir().unwrap();
    let mut conn = Connection::new(server.base_url().parse().unwrap(), creds);
    conn.timing = fast_timing();
    let mut o = flatfhir_fetch::Options::new(conn, out.path());
    o.kickoff.types = vec!["Patient".into()];
    run(o).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_key_format_authenticates() {
    let data = data_dir();
    let server = TestServer::start(config(data.path())).await.unwrap();
    let k = keys();
    let cases = [
        SigningKey::load(&k.join("rsa.pkcs8.pem"), Some("test-rsa"), None).unwrap(),
        SigningKey::load(&k.join("rsa.pkcs1.pem"), Some("test-rsa"), None).unwrap(),
        SigningKey::load(
            &k.join("rsa.pkcs8.pem"),
            Some("test-rsa"),
            Some(parse_alg("RS256").unwrap()),
        )
        .unwrap(),
        SigningKey::load(
            &k.join("rsa.pkcs8.pem"),
            Some("test-rsa"),
            Some(parse_alg("PS384").unwrap()),
        )
        .unwrap(),
        SigningKey::load(&k.join("ec.pkcs8.pem"), Some("test-ec"), None).unwrap(),
        SigningKey::load(&k.join("private.jwks.json"), Some("test-rsa"), None).unwrap(),
        SigningKey::load(&k.join("private.jwks.json"), Some("test-ec"), None).unwrap(),
    ];
    for key in cases {
        let alg = key.alg();
        let s = export_with(
            &server,
            Credentials::PrivateKey {
                client_id: CLIENT_ID.into(),
                key,
            },
        )
        .await
        .unwrap_or_else(|e| panic!("{alg:?}: {e}"));
        assert_eq!(s.resources, 5, "{alg:?}");
    }
    let algs: Vec<_> = [
        SigningKey::load(&k.join("ec.pkcs8.pem"), Some("test-ec"), None)
            .unwrap()
            .alg(),
        SigningKey::load(&k.join("rsa.pkcs1.pem"), Some("test-rsa"), None)
            .unwrap()
            .alg(),
    ]
    .into();
    assert_eq!(format!("{algs:?}"), "[ES384, RS384]");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_key_is_refused_with_the_servers_reason() {
    let data = data_dir();
    let server = TestServer::start(config(data.path())).await.unwrap();
    // The EC key presented under the RSA key's kid: the signature cannot verify.
    let key = SigningKey::load(&keys().join("ec.pkcs8.pem"), Some("test-rsa"), None).unwrap();
    let err = export_with(
        &server,
        Credentials::PrivateKey {
            client_id: CLIENT_ID.into(),
            key,
        },
    )
    .await
    .unwrap_err();
    assert!(matches!(err, Error::Token { status: 401, .. }), "{err}");
    assert!(err.to_string().contains("invalid_client"), "{err}");
}

#[test]
fn sec1_key_error_says_how_to_convert() {
    let err = SigningKey::load(&keys().join("ec.sec1.pem"), Some("k"), None).unwrap_err();
    assert!(matches!(err, Error::Sec1Key { .. }));
    assert!(
        err.to_string()
            .contains("openssl pkcs8 -topk8 -nocrypt -in"),
        "{err}"
    );
}

#[test]
fn pem_needs_a_kid_and_a_fitting_alg() {
    let err = SigningKey::load(&keys().join("rsa.pkcs8.pem"), None, None).unwrap_err();
    assert!(err.to_string().contains("--kid"), "{err}");
    let err = SigningKey::load(
        &keys().join("ec.pkcs8.pem"),
        Some("k"),
        Some(parse_alg("RS384").unwrap()),
    )
    .unwrap_err();
    assert!(err.to_string().contains("does not fit"), "{err}");
    let err = SigningKey::load(&keys().join("jwks.json"), None, None).unwrap_err();
    assert!(
        err.to_string().contains("several private keys") || err.to_string().contains("public key"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_falls_back_to_capability_statement() {
    let data = data_dir();
    let mut cfg = config(data.path());
    cfg.faults.no_smart_configuration = true;
    let server = TestServer::start(cfg).await.unwrap();
    let s = export_with(
        &server,
        Credentials::PrivateKey {
            client_id: CLIENT_ID.into(),
            key: rsa_key(),
        },
    )
    .await
    .unwrap();
    assert_eq!(s.resources, 5);
    let reqs = server.requests();
    assert!(
        reqs.iter()
            .any(|r| r.path.ends_with("/.well-known/smart-configuration") && r.status == 404)
    );
    // Once for the kickoff log event, once more for the token endpoint.
    assert_eq!(
        reqs.iter()
            .filter(|r| r.path.ends_with("/fhir/metadata"))
            .count(),
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expires_in_as_string_and_flaky_token_endpoint() {
    let data = data_dir();
    let mut cfg = config(data.path());
    cfg.faults.expires_in_as_string = true;
    cfg.faults.token_5xx = 2;
    let server = TestServer::start(cfg).await.unwrap();
    let s = export_with(
        &server,
        Credentials::PrivateKey {
            client_id: CLIENT_ID.into(),
            key: rsa_key(),
        },
    )
    .await
    .unwrap();
    assert_eq!(s.resources, 5);
    // Two 503s, then one success; the token is then cached for every later request.
    assert_eq!(server.token_calls(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_expiring_mid_export_is_renewed_on_401() {
    let data = data_dir();
    let mut cfg = config(data.path());
    cfg.faults.token_uses = Some(3);
    let server = TestServer::start(cfg).await.unwrap();
    let out = tempfile::tempdir().unwrap();
    let s = run(options(&server, out.path())).await.unwrap();
    assert_eq!(s.resources, 15);
    assert!(s.failed.is_empty(), "{:?}", s.failed);
    assert_standard_output(out.path());
    let unauthorized = server.requests().iter().filter(|r| r.status == 401).count();
    assert!(unauthorized >= 1, "the fault never fired");
    assert!(server.token_calls() >= 2, "no re-authentication");
}

/// Paused time: token lifetimes (client and server) and the poll waits pass in virtual time,
/// so the test takes no 3 s and its margins cannot be eaten by a loaded machine.
#[tokio::test(start_paused = true)]
async fn token_is_refreshed_before_expiry() {
    let data = data_dir();
    let mut cfg = config(data.path());
    // 2-second tokens are refreshed at 80% of their life (1.6 s); polls 600 ms apart (the
    // shortest wait) run past 3 s, so a token kept past its life would be sent stale.
    cfg.token_lifetime = std::time::Duration::from_secs(2);
    cfg.polls_before_ready = 6;
    let server = TestServer::start(cfg).await.unwrap();
    let out = tempfile::tempdir().unwrap();
    let mut o = options(&server, out.path());
    o.kickoff.types = vec!["Patient".into()];
    o.conn.timing.min_wait = std::time::Duration::from_millis(600);
    o.conn.timing.max_poll_wait = std::time::Duration::from_millis(600);
    let t = tokio::time::Instant::now();
    let s = run(o).await.unwrap();
    assert_eq!(s.resources, 5, "{:?}", s.failed);
    assert!(
        t.elapsed() >= std::time::Duration::from_secs(3),
        "{:?}",
        t.elapsed()
    );
    assert!(server.token_calls() >= 2, "token never refreshed");
    assert_eq!(
        server.requests().iter().filter(|r| r.status == 401).count(),
        0,
        "a stale token was sent"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_secret_basic_and_form_post() {
    let data = data_dir();
    let server = TestServer::start(config(data.path())).await.unwrap();
    for form_post in [false, true] {
        let creds = Credentials::ClientSecret {
            client_id: "secret-client".into(),
            secret: Secret::new("s3cr3t-value"),
            form_post,
        };
        let s = export_with(&server, creds).await.unwrap();
        assert_eq!(s.resources, 5);
    }
    let creds = Credentials::ClientSecret {
        client_id: "secret-client".into(),
        secret: Secret::new("wr0ng-XYZ-42"),
        form_post: false,
    };
    let err = export_with(&server, creds).await.unwrap_err();
    assert!(
        !err.to_string().contains("wr0ng-XYZ-42"),
        "secret in error: {err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_token_and_open_server() {
    let data = data_dir();
    let server = TestServer::start(config(data.path())).await.unwrap();
    let err = export_with(
        &server,
        Credentials::Bearer(Secret::new("not-a-real-token")),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, Error::Kickoff { status: 401, .. }), "{err}");
    assert!(!err.to_string().contains("not-a-real-token"));

    let open = TestServer::start(flatfhir_bulk_server::Config::new(data.path()))
        .await
        .unwrap();
    let s = export_with(&open, Credentials::None).await.unwrap();
    assert_eq!(s.resources, 5);
    assert!(open.requests().iter().all(|r| r.authorization.is_none()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_log_or_job_state() {
    let data = data_dir();
    let mut cfg = config(data.path());
    cfg.faults.signed_urls = true;
    cfg.faults.failing_types = vec!["Condition".into()];
    cfg.faults.expire_links_once = true;
    let server = TestServer::start(cfg).await.unwrap();
    let out = tempfile::tempdir().unwrap();
    let s = run(options(&server, out.path())).await.unwrap();
    let tokens: Vec<String> = server
        .requests()
        .iter()
        .filter_map(|r| r.authorization.clone())
        .map(|a| a.trim_start_matches("Bearer ").to_owned())
        .collect();
    assert!(!tokens.is_empty());
    let log = read(out.path(), "log.ndjson");
    let job = read(out.path(), flatfhir_fetch::JOB_FILE);
    let summary = serde_json::to_string(&s).unwrap();
    for t in &tokens {
        assert!(
            !log.contains(t.as_str()) && !job.contains(t.as_str()) && !summary.contains(t.as_str())
        );
    }
    assert!(
        !log.contains("SECRETSIGNATURE123"),
        "signed URL query in log.ndjson"
    );
    assert!(log.contains("sig=[redacted]"));
    assert!(!log.contains("eyJ"), "a JWT reached log.ndjson");
}
