//! No secret reaches any output: each secret input (key text, a key file's contents, client
//! secret, bearer token, the access tokens the server hands out, client assertions) is sent
//! through every failure this test server can produce, and stdout (`--json`), stderr,
//! `log.ndjson` and every other file `fetch` leaves in DIR are searched for it.

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use flatfhir_bulk_server::{Config, RegisteredClient, TestServer};

fn keys() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fetch/tests/it/keys")
}

/// A client secret with characters that a form body encodes, so an echo is not verbatim.
const CLIENT_SECRET: &str = "cs/S3CRET+value 42";
const BEARER: &str = "bt-S3CRET-bearer-token-value";

pub(crate) struct Env {
    rt: tokio::runtime::Runtime,
    _data: tempfile::TempDir,
    server: Option<TestServer>,
}

pub(crate) fn start(tweak: impl FnOnce(&mut Config)) -> Env {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let data = tempfile::tempdir().unwrap();
    std::fs::write(
        data.path().join("Patient.ndjson"),
        "{\"resourceType\":\"Patient\",\"id\":\"p1\"}\n",
    )
    .unwrap();
    let jwks: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(keys().join("jwks.json")).unwrap()).unwrap();
    let mut cfg = Config::new(data.path());
    cfg.clients = vec![
        RegisteredClient::with_jwks("cli-client", jwks),
        RegisteredClient::with_secret("sec-client", "the-right-secret"),
    ];
    cfg.polls_before_ready = 1;
    tweak(&mut cfg);
    let server = rt.block_on(TestServer::start(cfg)).unwrap();
    Env {
        rt,
        _data: data,
        server: Some(server),
    }
}

impl Env {
    pub(crate) fn server(&self) -> &TestServer {
        self.server.as_ref().unwrap()
    }

    pub(crate) fn url(&self) -> String {
        self.server().base_url()
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        let _guard = self.rt.enter();
        self.server.take();
    }
}

/// `flatfhir fetch --json` into `out`, with no secret from the test's own environment, fast
/// waits and no retries (each failure path is taken at once).
fn fetch(out: &Path) -> Command {
    let mut c = Command::cargo_bin("flatfhir").unwrap();
    c.arg("fetch")
        .arg("--out")
        .arg(out)
        .args(["--json", "--retries", "0", "--min-wait", "5ms"])
        .args(["--max-poll-wait", "20ms", "--max-wait", "20s"])
        .env_remove("FLATFHIR_PRIVATE_KEY")
        .env_remove("FLATFHIR_BEARER_TOKEN")
        .env_remove("FLATFHIR_CLIENT_SECRET")
        .env_remove("FLATFHIR_FHIR_URL")
        .env_remove("FLATFHIR_CLIENT_ID");
    c
}

/// The base64 lines of a PEM file: what must never be shown of a key.
fn pem_lines(name: &str) -> Vec<String> {
    std::fs::read_to_string(keys().join(name))
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("-----") && l.len() >= 16)
        .map(str::to_owned)
        .collect()
}

/// Every secret the tests use, plus the JWT prefix every client assertion and many access
/// tokens start with.
fn secrets() -> Vec<String> {
    let mut v = pem_lines("ec.pkcs8.pem");
    v.extend(pem_lines("rsa.pkcs8.pem"));
    let jwks: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(keys().join("private.jwks.json")).unwrap())
            .unwrap();
    for k in jwks["keys"].as_array().unwrap() {
        for f in ["d", "p", "q", "dp", "dq", "qi"] {
            if let Some(s) = k[f].as_str() {
                v.push(s.to_owned());
            }
        }
    }
    v.push(CLIENT_SECRET.to_owned());
    v.push(url::form_urlencoded::byte_serialize(CLIENT_SECRET.as_bytes()).collect());
    v.push(BEARER.to_owned());
    v.push("eyJ".to_owned());
    v
}

/// Runs `cmd`, expects `code`, and checks that no secret (nor any access token the server
/// issued) is in stdout, stderr or any file under `out` other than downloaded resources.
/// Returns stderr.
fn run_clean(env: Option<&Env>, mut cmd: Command, out: &Path, code: i32) -> String {
    let output = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(code), "stderr: {stderr}");
    let mut texts = vec![
        ("stdout".to_owned(), stdout),
        ("stderr".to_owned(), stderr.clone()),
    ];
    for e in walk(out) {
        let name = e.display().to_string();
        let resources = name.ends_with(".ndjson") && !name.ends_with("log.ndjson");
        if !resources && let Ok(t) = std::fs::read_to_string(&e) {
            texts.push((name, t));
        }
    }
    let mut needles = secrets();
    if let Some(env) = env {
        for r in env.server().requests() {
            if let Some(token) = r
                .authorization
                .as_deref()
                .and_then(|a| a.strip_prefix("Bearer "))
            {
                needles.push(token.to_owned());
            }
        }
    }
    for (where_, text) in &texts {
        for n in &needles {
            assert!(
                !text.contains(n.as_str()),
                "secret {n:?} appears in {where_}:\n{text}"
            );
        }
    }
    stderr
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut v = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.filter_map(Result::ok) {
            let p = e.path();
            if p.is_dir() {
                v.extend(walk(&p));
            } else {
                v.push(p);
            }
        }
    }
    v
}

/// The reported bug: key text without its `-----BEGIN` line in `FLATFHIR_PRIVATE_KEY` was
/// taken as a path and printed whole in "reading the private key ...".
#[test]
fn key_text_without_its_begin_line_is_refused_unseen() {
    let body = pem_lines("ec.pkcs8.pem").join("\n");
    let one_line = body.replace('\n', "");
    for value in [
        body.clone(),
        one_line,
        format!("{body}\n-----END PRIVATE KEY-----\n"),
    ] {
        let out = tempfile::tempdir().unwrap();
        let mut c = fetch(out.path());
        c.args(["--fhir-url", "http://127.0.0.1:9/fhir", "--client-id", "c"])
            .args(["--kid", "test-ec"])
            .env("FLATFHIR_PRIVATE_KEY", &value);
        let stderr = run_clean(None, c, out.path(), 1);
        assert!(
            stderr.contains("looks like key text without its -----BEGIN line"),
            "{stderr}"
        );
    }
}

#[test]
fn key_file_contents_never_show() {
    let out = tempfile::tempdir().unwrap();
    // A PEM whose body is not a key (and not valid base64 at one place).
    let bad = out.path().join("bad.pem");
    let garbage = "QmFkS2V5TWF0ZXJpYWxUaGF0TXVzdE5vdEJlU2hvd24hQmFkS2V5TWF0ZXJpYWw";
    std::fs::write(
        &bad,
        format!("-----BEGIN PRIVATE KEY-----\n{garbage}*\n-----END PRIVATE KEY-----\n"),
    )
    .unwrap();
    let mut c = fetch(out.path());
    c.args(["--fhir-url", "http://127.0.0.1:9/fhir", "--client-id", "c"])
        .args(["--kid", "k", "--private-key"])
        .arg(&bad);
    let stderr = run_clean(None, c, out.path(), 1);
    assert!(!stderr.contains(garbage), "{stderr}");
    assert!(stderr.contains("not valid base64"), "{stderr}");

    // A JWKS without the kid asked for: the private members stay hidden.
    let out = tempfile::tempdir().unwrap();
    let mut c = fetch(out.path());
    c.args(["--fhir-url", "http://127.0.0.1:9/fhir", "--client-id", "c"])
        .args(["--kid", "nope", "--private-key"])
        .arg(keys().join("private.jwks.json"));
    let stderr = run_clean(None, c, out.path(), 1);
    assert!(stderr.contains("no private key with kid nope"), "{stderr}");
}

/// Key text from the environment and from a file, refused by the server (a kid it does not
/// know), and a token endpoint that fails in every way, echoing the request (with the
/// signed assertion) in its message.
#[test]
fn private_key_and_assertion_through_token_failures() {
    let pem = std::fs::read_to_string(keys().join("ec.pkcs8.pem")).unwrap();
    let env = start(|_| {});
    let out = tempfile::tempdir().unwrap();
    let mut c = fetch(out.path());
    c.args(["--fhir-url", &env.url(), "--client-id", "cli-client"])
        .args(["--kid", "not-registered"])
        .env("FLATFHIR_PRIVATE_KEY", &pem);
    let stderr = run_clean(Some(&env), c, out.path(), 1);
    assert!(stderr.contains("HTTP 401"), "{stderr}");

    for status in [400, 401, 500] {
        let env = start(|c| c.faults.token_error_echo = Some(status));
        let out = tempfile::tempdir().unwrap();
        let mut c = fetch(out.path());
        c.args(["--fhir-url", &env.url(), "--client-id", "cli-client"])
            .args(["--kid", "test-ec", "--private-key"])
            .arg(keys().join("ec.pkcs8.pem"));
        let stderr = run_clean(Some(&env), c, out.path(), 1);
        assert!(stderr.contains(&format!("HTTP {status}")), "{stderr}");
        // The echo was there, and was scrubbed.
        assert!(stderr.contains("client_assertion=[redacted]"), "{stderr}");
    }
}

#[test]
fn client_secret_through_token_failures() {
    let env = start(|_| {});
    let out = tempfile::tempdir().unwrap();
    let mut c = fetch(out.path());
    c.args(["--fhir-url", &env.url(), "--client-id", "sec-client"])
        .args(["--client-secret", CLIENT_SECRET]);
    let stderr = run_clean(Some(&env), c, out.path(), 1);
    assert!(stderr.contains("wrong secret"), "{stderr}");

    let env = start(|c| c.faults.token_error_echo = Some(400));
    let out = tempfile::tempdir().unwrap();
    let mut c = fetch(out.path());
    c.args(["--fhir-url", &env.url(), "--client-id", "sec-client"])
        .arg("--client-secret-post")
        .env("FLATFHIR_CLIENT_SECRET", CLIENT_SECRET);
    let stderr = run_clean(Some(&env), c, out.path(), 1);
    assert!(stderr.contains("client_secret=[redacted]"), "{stderr}");

    // The server cannot be reached at all.
    let out = tempfile::tempdir().unwrap();
    let mut c = fetch(out.path());
    c.args([
        "--fhir-url",
        "http://127.0.0.1:9/fhir",
        "--client-id",
        "sec-client",
    ])
    .args(["--client-secret", CLIENT_SECRET]);
    run_clean(None, c, out.path(), 1);
}

#[test]
fn bearer_token_rejected_or_unreachable() {
    let env = start(|_| {});
    let out = tempfile::tempdir().unwrap();
    let mut c = fetch(out.path());
    c.args(["--fhir-url", &env.url(), "--bearer", BEARER]);
    let stderr = run_clean(Some(&env), c, out.path(), 1);
    assert!(stderr.contains("401"), "{stderr}");

    let out = tempfile::tempdir().unwrap();
    let mut c = fetch(out.path());
    c.args(["--fhir-url", "http://127.0.0.1:9/fhir"])
        .env("FLATFHIR_BEARER_TOKEN", BEARER);
    run_clean(None, c, out.path(), 1);
}

/// Access tokens the server issued, then refused (worn out after one use): the client
/// renews them and finally gives up; none of them is shown.
#[test]
fn access_tokens_refused_by_the_server() {
    let env = start(|c| c.faults.token_uses = Some(0));
    let out = tempfile::tempdir().unwrap();
    let mut c = fetch(out.path());
    c.args(["--fhir-url", &env.url(), "--client-id", "cli-client"])
        .args(["--kid", "test-ec", "--private-key"])
        .arg(keys().join("ec.pkcs8.pem"));
    let stderr = run_clean(Some(&env), c, out.path(), 1);
    assert!(stderr.contains("401"), "{stderr}");
    assert!(
        env.server().token_calls() > 1,
        "the client should have renewed its token"
    );
}

/// A PEM key given on the command line starts with `-----`: it is the option's value, not an
/// "unexpected argument" that clap would print whole; the same for a secret starting with `-`.
#[test]
fn secrets_that_start_with_a_dash_are_values() {
    let pem = std::fs::read_to_string(keys().join("ec.pkcs8.pem")).unwrap();
    let out = tempfile::tempdir().unwrap();
    let mut c = fetch(out.path());
    c.args([
        "--fhir-url",
        "http://127.0.0.1:9/fhir",
        "--private-key",
        &pem,
    ]);
    let stderr = run_clean(None, c, out.path(), 64);
    assert!(stderr.contains("--client-id is required"), "{stderr}");

    let out = tempfile::tempdir().unwrap();
    let mut c = fetch(out.path());
    c.args(["--fhir-url", "http://127.0.0.1:9/fhir", "--bearer"])
        .arg(format!("-{BEARER}"));
    run_clean(None, c, out.path(), 1);
}
