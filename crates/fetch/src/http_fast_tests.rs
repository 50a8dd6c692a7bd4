//! The hand-read downloads ([`crate::h1`]) against the test server and its faults, each next to
//! reqwest on the same file: the same bytes, the same statuses, the same errors; which path
//! took a request, and connection reuse, are counted ([`FastGet::counts`]), never timed.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use flatfhir_bulk_server::{Config, Gzip, TestServer, Tls};
use reqwest::Method;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use url::Url;

use super::*;

/// 40 Patients and 25 Observations of varying length.
fn data() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    let mut p = String::new();
    for i in 0..40 {
        let pad = "x".repeat(i * 37 % 500);
        p.push_str(&format!(
            "{{\"resourceType\":\"Patient\",\"id\":\"p{i}\",\"name\":[{{\"text\":\"{pad}\"}}]}}\n"
        ));
    }
    let mut o = String::new();
    for i in 0..25 {
        o.push_str(&format!(
            "{{\"resourceType\":\"Observation\",\"id\":\"o{i}\",\"valueQuantity\":{{\"value\":{i}.5}}}}\n"
        ));
    }
    std::fs::write(d.path().join("Patient.ndjson"), p).unwrap();
    std::fs::write(d.path().join("Observation.ndjson"), o).unwrap();
    d
}

fn config(data: &Path) -> Config {
    let mut c = Config::new(data);
    c.lines_per_file = 10;
    c
}

/// Kick off an export (through reqwest) and return its file URLs.
async fn file_urls(http: &Http, server: &TestServer) -> Vec<Url> {
    let kick = Url::parse(&format!("{}/$export", server.base_url())).unwrap();
    let (_, r) = http
        .send(Method::GET, &kick, None, |r| {
            r.header("prefer", "respond-async")
                .header("accept", "application/fhir+json")
        })
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let loc = r.headers()["content-location"].to_str().unwrap();
    let status = kick.join(loc).unwrap();
    loop {
        let (_, r) = http.send(Method::GET, &status, None, |r| r).await.unwrap();
        if r.status() == 202 {
            continue;
        }
        assert_eq!(r.status(), 200);
        let v: serde_json::Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
        return v["output"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| Url::parse(o["url"].as_str().unwrap()).unwrap())
            .collect();
    }
}

/// The body, or the error that ended it and the bytes before it.
async fn body(mut r: Response) -> (Vec<u8>, Option<String>) {
    let mut out = Vec::new();
    loop {
        match r.chunk().await {
            Ok(Some(c)) => out.extend_from_slice(&c),
            Ok(None) => return (out, None),
            Err(e) => {
                let mut chain = e.to_string();
                let mut source = std::error::Error::source(&e);
                while let Some(s) = source {
                    chain.push_str(&format!(": {s}"));
                    source = s.source();
                }
                return (out, Some(chain));
            }
        }
    }
}

fn ndjson(r: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
    r.header("accept", "application/fhir+ndjson")
}

fn fast(http: &Http) -> &FastGet {
    http.fast.as_deref().expect("no proxy configured in tests")
}

/// The path and query of `url`, as the test server records it.
fn target(url: &Url) -> String {
    match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_owned(),
    }
}

/// Request headers the server saw for `url`, sorted (hyper and we may order them apart).
fn headers_seen(server: &TestServer, url: &Url) -> Vec<Vec<(String, String)>> {
    server
        .requests()
        .into_iter()
        .filter(|r| r.path == target(url))
        .map(|r| {
            let mut h = r.headers;
            h.sort();
            h
        })
        .collect()
}

/// Every framing the test server uses (Content-Length in 64 KiB chunks, one HTTP chunk per
/// line, gzip with and without Content-Encoding): the hand-read body is reqwest's, byte for
/// byte, the request carries the same headers, and one connection serves every file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fast_path_reads_what_reqwest_reads_in_every_framing() {
    let d = data();
    for (per_line, gzip) in [
        (false, Gzip::Off),
        (true, Gzip::Off),
        (false, Gzip::WithHeader),
        (false, Gzip::Silent),
        (true, Gzip::Negotiated),
    ] {
        let mut cfg = config(d.path());
        cfg.chunk_per_line = per_line;
        cfg.gzip = gzip;
        let server = TestServer::start(cfg).await.unwrap();
        let http = Http::new(None, &[("X-Vendor".into(), "v1".into())]).unwrap();
        let urls = file_urls(&http, &server).await;
        assert_eq!(urls.len(), 7);
        for url in &urls {
            let (_, r) = http.send_download(url, None, ndjson).await.unwrap();
            let fast_headers = r.headers().clone();
            let (fast_bytes, err) = body(r).await;
            assert_eq!(err, None);
            let (_, r) = send_with(&http.client, Method::GET, url, None, ndjson)
                .await
                .unwrap();
            let slow_headers = r.headers().clone();
            let (slow_bytes, err) = body(r).await;
            assert_eq!(err, None);
            assert!(!fast_bytes.is_empty());
            assert_eq!(fast_bytes, slow_bytes, "{per_line} {gzip:?} {url}");
            assert_eq!(
                fast_headers.get("content-encoding"),
                slow_headers.get("content-encoding")
            );
            let seen = headers_seen(&server, url);
            assert_eq!(seen.len(), 2);
            assert_eq!(seen[0], seen[1], "request headers differ");
        }
        let (opened, served, fallbacks) = fast(&http).counts();
        assert_eq!((served, fallbacks), (7, 0), "{per_line} {gzip:?}");
        assert_eq!(opened, 1, "the connection was not kept for the next file");
    }
}

/// `Range` continues where asked (206), through the fast path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_range_request_continues_at_its_offset() {
    let d = data();
    let mut cfg = config(d.path());
    cfg.chunk_per_line = true;
    let server = TestServer::start(cfg).await.unwrap();
    let http = Http::new(None, &[]).unwrap();
    let url = &file_urls(&http, &server).await[0];
    let (_, r) = http.send_download(url, None, ndjson).await.unwrap();
    let (whole, _) = body(r).await;
    let (_, r) = http
        .send_download(url, None, |r| {
            ndjson(r)
                .header("range", "bytes=100-")
                .header("accept-encoding", "identity")
        })
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(body(r).await.0, whole[100..]);
    assert_eq!(fast(&http).counts().1, 2);
}

/// A connection cut mid-body is an error after the bytes that came (reqwest errs too), and
/// the cut connection is not reused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_body_is_an_error_and_its_connection_is_dropped() {
    let d = data();
    for per_line in [false, true] {
        let mut cfg = config(d.path());
        cfg.chunk_per_line = per_line;
        cfg.faults.drop_mid_file = true;
        let server = TestServer::start(cfg).await.unwrap();
        let http = Http::new(None, &[]).unwrap();
        let urls = file_urls(&http, &server).await;
        // The first download of a file is cut: through the fast path for urls[0], reqwest
        // for urls[1]; then both whole, to compare.
        let (_, r) = http.send_download(&urls[0], None, ndjson).await.unwrap();
        let (fast_part, fast_err) = body(r).await;
        let (_, r) = send_with(&http.client, Method::GET, &urls[1], None, ndjson)
            .await
            .unwrap();
        let (_, slow_err) = body(r).await;
        assert!(fast_err.is_some(), "a cut body read as complete");
        assert!(slow_err.is_some());
        let (_, r) = http.send_download(&urls[0], None, ndjson).await.unwrap();
        let (whole, err) = body(r).await;
        assert_eq!(err, None);
        assert!(fast_part.len() < whole.len());
        assert_eq!(fast_part, whole[..fast_part.len()], "{per_line}");
        let (opened, served, _) = fast(&http).counts();
        assert_eq!((opened, served), (2, 2), "a cut connection was reused");
    }
}

/// A private CA and a leaf for 127.0.0.1: (CA PEM, leaf PEM, key PEM).
fn private_ca() -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    (ca.pem(), leaf.pem(), key.serialize_pem())
}

/// HTTPS through the fast path with `--ca-cert`; without it the certificate is refused (by
/// the same verifier: reqwest, which the request falls back to, names the reason) and the
/// origin is not tried by hand again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_is_verified_as_reqwest_verifies() {
    let (ca, leaf, key) = private_ca();
    let d = data();
    let mut cfg = config(d.path());
    cfg.chunk_per_line = true;
    cfg.tls = Some(Tls::new(leaf, key));
    let server = TestServer::start(cfg).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca).unwrap();
    let http = Http::new(Some(&ca_file), &[]).unwrap();
    let urls = file_urls(&http, &server).await;
    assert!(urls[0].scheme() == "https");
    for url in &urls {
        let (_, r) = http.send_download(url, None, ndjson).await.unwrap();
        let (bytes, err) = body(r).await;
        assert_eq!(err, None);
        assert!(bytes.starts_with(b"{\"resourceType\":"));
    }
    assert_eq!(fast(&http).counts(), (1, 7, 0));

    let untrusting = Http::new(None, &[]).unwrap();
    for _ in 0..2 {
        let err = untrusting
            .send_download(&urls[0], None, ndjson)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("UnknownIssuer"), "{err}");
    }
    // One handshake tried by hand, then reqwest for both requests.
    assert_eq!(fast(&untrusting).counts(), (1, 0, 2));
    let files_seen = server
        .requests()
        .iter()
        .filter(|r| r.path == target(&urls[0]))
        .count();
    assert_eq!(
        files_seen, 1,
        "a request got through an untrusted connection"
    );
}

/// A redirect to another origin is followed by hand, and the token goes only to the first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_are_followed_and_the_token_stays_home() {
    let d = data();
    let mut cfg = config(d.path());
    cfg.faults.redirect_to_other_host = true;
    let server = TestServer::start(cfg).await.unwrap();
    let http = Http::new(None, &[]).unwrap();
    let urls = file_urls(&http, &server).await;
    let token = Secret::new("fast-path-test-token-0123456789");
    let (final_url, r) = http
        .send_download(&urls[0], Some(&token), ndjson)
        .await
        .unwrap();
    assert_ne!(final_url.origin(), urls[0].origin());
    let (bytes, err) = body(r).await;
    assert_eq!(err, None);
    assert!(bytes.starts_with(b"{\"resourceType\":"));
    assert_eq!(fast(&http).counts().1, 2, "both hops by hand");
    let reqs = server.requests();
    let first = reqs.iter().find(|r| r.status == 307).unwrap();
    assert_eq!(
        first.authorization.as_deref(),
        Some("Bearer fast-path-test-token-0123456789")
    );
    let other = server.other_origin();
    let other_host = other.trim_start_matches("http://");
    let second: Vec<_> = reqs.iter().filter(|r| r.host == other_host).collect();
    assert_eq!(second.len(), 1);
    assert_eq!(
        second[0].authorization, None,
        "token sent to another origin"
    );
    // Nor does the token show in the client's Debug.
    assert!(!format!("{http:?}").contains("fast-path-test-token"));
}

/// An HTTP/1.1 server answering every request with `answer`; with `one_per_connection`, the
/// second request on a connection is read and the connection closed without an answer (as a
/// server does whose idle timeout strikes as the request arrives). Counts answers.
async fn raw_server(answer: &'static [u8], one_per_connection: bool) -> (Url, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = Url::parse(&format!(
        "http://{}/f.ndjson",
        listener.local_addr().unwrap()
    ))
    .unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut b = [0u8; 4096];
                let mut answered = false;
                loop {
                    let Ok(n) = s.read(&mut b).await else { return };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&b[..n]);
                    while let Some(end) = memchr::memmem::find(&buf, b"\r\n\r\n") {
                        buf.drain(..end + 4);
                        if one_per_connection && answered {
                            return;
                        }
                        seen.fetch_add(1, Ordering::SeqCst);
                        if s.write_all(answer).await.is_err() {
                            return;
                        }
                        answered = true;
                    }
                }
            });
        }
    });
    (url, count)
}

/// A transfer coding other than `chunked` is left to reqwest (the request is sent again
/// there), which reads the body as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_transfer_coding_falls_back_to_reqwest() {
    let (url, requests) = raw_server(
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: foo, chunked\r\n\r\n6\r\n{\"a\":1\r\n2\r\n}\n\r\n0\r\n\r\n",
        false,
    )
    .await;
    let http = Http::new(None, &[]).unwrap();
    let (_, r) = http.send_download(&url, None, ndjson).await.unwrap();
    assert_eq!(body(r).await, (b"{\"a\":1}\n".to_vec(), None));
    assert_eq!(fast(&http).counts(), (1, 0, 1));
    assert_eq!(requests.load(Ordering::SeqCst), 2);
}

/// A kept connection the server closes as the next request arrives: the request goes again
/// on a new connection, still by hand.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_connection_closed_by_the_server_is_replaced() {
    let (url, requests) = raw_server(
        b"HTTP/1.1 200 OK\r\ncontent-length: 8\r\n\r\n{\"a\":1}\n",
        true,
    )
    .await;
    let http = Http::new(None, &[]).unwrap();
    for _ in 0..3 {
        let (_, r) = http.send_download(&url, None, ndjson).await.unwrap();
        assert_eq!(body(r).await, (b"{\"a\":1}\n".to_vec(), None));
    }
    assert_eq!(fast(&http).counts(), (3, 3, 0));
    assert_eq!(requests.load(Ordering::SeqCst), 3);
}

/// A gzip body cut short is an error, not a shorter file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_gzip_body_is_an_error() {
    use std::io::Write as _;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&b"{\"resourceType\":\"Patient\"}\n".repeat(50))
        .unwrap();
    let gz = gz.finish().unwrap();
    let cut = &gz[..gz.len() - 6];
    let mut answer = format!(
        "HTTP/1.1 200 OK\r\ncontent-encoding: gzip\r\ncontent-length: {}\r\n\r\n",
        cut.len()
    )
    .into_bytes();
    answer.extend_from_slice(cut);
    let (url, _) = raw_server(answer.leak(), false).await;
    let http = Http::new(None, &[]).unwrap();
    let (_, r) = http.send_download(&url, None, ndjson).await.unwrap();
    let (_, err) = body(r).await;
    assert!(
        err.is_some_and(|e| e.contains("gzip")),
        "a cut gzip stream read as whole"
    );
    assert_eq!(fast(&http).counts().1, 1);
}

/// An HTTP/1.1 server whose `k`-th answer on a connection is `script[k]` (the last one
/// repeated): the bytes, and whether the connection is then closed (`Some(true)`), kept
/// (`Some(false)`), or left open with nothing more ever sent (`None`, a stalled server).
/// Counts requests.
async fn scripted_server(
    script: &'static [(&'static [u8], Option<bool>)],
) -> (Url, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = Url::parse(&format!(
        "http://{}/f.ndjson",
        listener.local_addr().unwrap()
    ))
    .unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut b = [0u8; 4096];
                let mut k = 0;
                loop {
                    let Ok(n) = s.read(&mut b).await else { return };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&b[..n]);
                    while let Some(end) = memchr::memmem::find(&buf, b"\r\n\r\n") {
                        buf.drain(..end + 4);
                        seen.fetch_add(1, Ordering::SeqCst);
                        let (answer, close) = script[k.min(script.len() - 1)];
                        k += 1;
                        if s.write_all(answer).await.is_err() {
                            return;
                        }
                        match close {
                            Some(true) => return,
                            Some(false) => {}
                            None => std::future::pending::<()>().await,
                        }
                    }
                }
            });
        }
    });
    (url, count)
}

const A: &[u8] = b"{\"a\":1}\n";

/// Download `url` `n` times; the bodies (or errors) and the counts of the hand-read path.
async fn downloads(url: &Url, n: usize) -> (Vec<(Vec<u8>, Option<String>)>, (u64, u64, u64)) {
    let http = Http::new(None, &[]).unwrap();
    let mut got = Vec::new();
    for _ in 0..n {
        match http.send_download(url, None, ndjson).await {
            Ok((_, r)) => got.push(body(r).await),
            Err(e) => got.push((Vec::new(), Some(e.to_string()))),
        }
    }
    let counts = fast(&http).counts();
    (got, counts)
}

/// A `Content-Length` with a sign (Rust's `u64` parser takes `+8`), inner blanks, hex or
/// too many digits is not read by hand: hyper refuses such a length, and a length two
/// readers see apart is how responses are smuggled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_content_length_that_is_not_plain_digits_is_not_trusted() {
    static ANSWERS: [&[(&[u8], Option<bool>)]; 4] = [
        &[(
            b"HTTP/1.1 200 OK\r\ncontent-length: +8\r\n\r\n{\"a\":1}\n",
            Some(false),
        )],
        &[(
            b"HTTP/1.1 200 OK\r\ncontent-length: 8 8\r\n\r\n{\"a\":1}\n",
            Some(false),
        )],
        &[(
            b"HTTP/1.1 200 OK\r\ncontent-length: 0x8\r\n\r\n{\"a\":1}\n",
            Some(false),
        )],
        &[(
            b"HTTP/1.1 200 OK\r\ncontent-length: 99999999999999999999999\r\n\r\n{\"a\":1}\n",
            Some(false),
        )],
    ];
    for script in ANSWERS {
        let (url, _) = scripted_server(script).await;
        let (_, (_, served, fallbacks)) = downloads(&url, 1).await;
        assert_eq!(
            (served, fallbacks),
            (0, 1),
            "{:?}",
            String::from_utf8_lossy(script[0].0)
        );
    }
}

/// Lengths that disagree are left to reqwest; lengths that agree are one length.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_content_lengths_must_agree() {
    static DISAGREE: [(&[u8], Option<bool>); 1] = [(
        b"HTTP/1.1 200 OK\r\ncontent-length: 8\r\ncontent-length: 7\r\n\r\n{\"a\":1}\n",
        Some(false),
    )];
    let (url, _) = scripted_server(&DISAGREE).await;
    assert_eq!(downloads(&url, 1).await.1, (1, 0, 1));
    static AGREE: [(&[u8], Option<bool>); 1] = [(
        b"HTTP/1.1 200 OK\r\ncontent-length: 8\r\ncontent-length: 8\r\n\r\n{\"a\":1}\n",
        Some(false),
    )];
    let (url, _) = scripted_server(&AGREE).await;
    let (got, counts) = downloads(&url, 2).await;
    assert_eq!(got, vec![(A.to_vec(), None), (A.to_vec(), None)]);
    assert_eq!(counts, (1, 2, 0));
}

/// Both `Transfer-Encoding: chunked` and `Content-Length`: the chunks frame the body, the
/// length is not handed on (it would disagree with the bytes), and the connection is not
/// used again (RFC 9112 6.3: a sign of smuggling).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_with_a_content_length_drops_the_length_and_the_connection() {
    static S: [(&[u8], Option<bool>); 1] = [(
        b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n8\r\n{\"a\":1}\n\r\n0\r\n\r\n",
        Some(false),
    )];
    let (url, requests) = scripted_server(&S).await;
    let http = Http::new(None, &[]).unwrap();
    for _ in 0..2 {
        let (_, r) = http.send_download(&url, None, ndjson).await.unwrap();
        assert!(r.headers().get("content-length").is_none());
        assert_eq!(body(r).await, (A.to_vec(), None));
    }
    assert_eq!(fast(&http).counts(), (2, 2, 0));
    assert_eq!(requests.load(Ordering::SeqCst), 2);
}

/// A kept connection that answers in part (a head cut short) is not asked again by hand:
/// only a connection that gave not one byte is replaced. reqwest sends the GET again and
/// reads what a new connection answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_connection_that_answered_in_part_is_not_retried_by_hand() {
    static S: [(&[u8], Option<bool>); 2] = [
        (
            b"HTTP/1.1 200 OK\r\ncontent-length: 8\r\n\r\n{\"a\":1}\n",
            Some(false),
        ),
        (b"HTTP/1.1 200 OK\r\ncontent-", Some(true)),
    ];
    let (url, requests) = scripted_server(&S).await;
    let (got, counts) = downloads(&url, 2).await;
    assert_eq!(got, vec![(A.to_vec(), None), (A.to_vec(), None)]);
    // One connection by hand, one answer by hand, the second request left to reqwest.
    assert_eq!(counts, (1, 1, 1));
    assert_eq!(requests.load(Ordering::SeqCst), 3);
}

/// Bytes after a `Content-Length` body (here a whole second response, as a smuggling
/// server or proxy would send) keep the connection from the pool: the next request gets
/// its own answer, not the one that was waiting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_after_the_body_keep_the_connection_from_the_pool() {
    static S: [(&[u8], Option<bool>); 1] = [(
        b"HTTP/1.1 200 OK\r\ncontent-length: 8\r\n\r\n{\"a\":1}\nHTTP/1.1 200 OK\r\ncontent-length: 8\r\n\r\nSMUGGLED",
        Some(false),
    )];
    let (url, _) = scripted_server(&S).await;
    let (got, counts) = downloads(&url, 2).await;
    assert_eq!(got, vec![(A.to_vec(), None), (A.to_vec(), None)]);
    assert_eq!(counts, (2, 2, 0));
}

/// Interim answers (`100`, `103`) before the real one are skipped; `204` and `304` have no
/// body whatever their headers say, and their connection is used again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interim_and_bodiless_answers_are_framed_by_rule() {
    static INTERIM: [(&[u8], Option<bool>); 1] = [(
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 8\r\n\r\n{\"a\":1}\n",
        Some(false),
    )];
    let (url, _) = scripted_server(&INTERIM).await;
    let (got, counts) = downloads(&url, 2).await;
    assert_eq!(got, vec![(A.to_vec(), None), (A.to_vec(), None)]);
    assert_eq!(counts, (1, 2, 0));
    static BODILESS: [(&[u8], Option<bool>); 2] = [
        (
            b"HTTP/1.1 204 No Content\r\ntransfer-encoding: chunked\r\n\r\n",
            Some(false),
        ),
        (
            b"HTTP/1.1 304 Not Modified\r\ncontent-length: 100\r\n\r\n",
            Some(false),
        ),
    ];
    let (url, _) = scripted_server(&BODILESS).await;
    let (got, counts) = downloads(&url, 2).await;
    assert_eq!(got, vec![(Vec::new(), None), (Vec::new(), None)]);
    assert_eq!(counts, (1, 2, 0));
}

/// `Connection: close`, HTTP/1.0 and a body read to the connection's end: whole bodies,
/// and no connection kept (the first two servers keep theirs open, so a pooled one would be
/// used again and counted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_answers_are_read_whole_and_not_pooled() {
    static ANSWERS: [&[(&[u8], Option<bool>)]; 4] = [
        &[(
            b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 8\r\n\r\n{\"a\":1}\n",
            Some(false),
        )],
        &[(
            b"HTTP/1.0 200 OK\r\ncontent-length: 8\r\n\r\n{\"a\":1}\n",
            Some(false),
        )],
        &[(b"HTTP/1.0 200 OK\r\n\r\n{\"a\":1}\n", Some(true))],
        &[(b"HTTP/1.1 200 OK\r\n\r\n{\"a\":1}\n", Some(true))],
    ];
    for script in ANSWERS {
        let (url, _) = scripted_server(script).await;
        let (got, counts) = downloads(&url, 2).await;
        let what = String::from_utf8_lossy(script[0].0);
        assert_eq!(got, vec![(A.to_vec(), None), (A.to_vec(), None)], "{what}");
        assert_eq!(counts, (2, 2, 0), "{what}");
    }
}

/// A `Content-Length` body or a chunked body cut by the connection's end (also just before
/// the chunked body's final CRLF) is an error, never a short body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn framed_bodies_cut_short_are_errors() {
    static ANSWERS: [&[(&[u8], Option<bool>)]; 3] = [
        &[(
            b"HTTP/1.1 200 OK\r\ncontent-length: 20\r\n\r\n{\"a\":1}\n",
            Some(true),
        )],
        &[(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n8\r\n{\"a\":1}\n\r\n",
            Some(true),
        )],
        &[(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n8\r\n{\"a\":1}\n\r\n0\r\n",
            Some(true),
        )],
    ];
    for script in ANSWERS {
        let (url, _) = scripted_server(script).await;
        let (got, counts) = downloads(&url, 1).await;
        let what = String::from_utf8_lossy(script[0].0);
        let (data, err) = &got[0];
        assert!(
            err.as_deref()
                .is_some_and(|e| e.contains("connection closed before the end of the body")),
            "{what}: {got:?}"
        );
        assert_eq!(data, A, "{what}");
        assert_eq!(counts, (1, 1, 0), "{what}");
    }
}

/// A status line that is not HTTP/1.x is not read by hand.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_status_line_that_is_not_http1_is_left_to_reqwest() {
    static ANSWERS: [&[(&[u8], Option<bool>)]; 2] = [
        &[(
            b"HTTP/2 200\r\ncontent-length: 8\r\n\r\n{\"a\":1}\n",
            Some(true),
        )],
        &[(
            b"ICY 200 OK\r\ncontent-length: 8\r\n\r\n{\"a\":1}\n",
            Some(true),
        )],
    ];
    for script in ANSWERS {
        let (url, _) = scripted_server(script).await;
        let (_, (_, served, fallbacks)) = downloads(&url, 1).await;
        assert_eq!((served, fallbacks), (0, 1));
    }
}

/// A server that sends the head and part of the body, then nothing: the body neither ends
/// nor fails by itself (so the download's stall watchdog, `a_stalled_body_times_out_and_is_
/// retried` in tests/it/download.rs, decides), and a timer set beside it fires. Paused time:
/// the 300 s pass at once.
#[tokio::test(start_paused = true)]
async fn a_stalled_body_waits_without_spinning_and_a_timer_beside_it_fires() {
    static S: [(&[u8], Option<bool>); 1] = [(
        b"HTTP/1.1 200 OK\r\ncontent-length: 20\r\n\r\n{\"a\":1}\n",
        None,
    )];
    let (url, _) = scripted_server(&S).await;
    let http = Http::new(None, &[]).unwrap();
    let (_, mut r) = http.send_download(&url, None, ndjson).await.unwrap();
    assert_eq!(fast(&http).counts().1, 1);
    assert_eq!(r.chunk().await.unwrap().as_deref(), Some(A));
    let t = tokio::time::Instant::now();
    let stalled = tokio::time::timeout(READ_TIMEOUT, r.chunk()).await;
    assert!(stalled.is_err(), "{stalled:?}");
    assert_eq!(t.elapsed(), READ_TIMEOUT);
}

/// `--header` values (a vendor API key) and the token never show in a Debug print of the
/// client, whichever path it takes (reqwest's client prints its default headers).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_header_value_or_token_in_debug_prints() {
    let http = Http::new(None, &[("x-api-key".into(), "SECRET-KEY-1".into())]).unwrap();
    let shown = format!("{http:?} {:?}", fast(&http));
    assert!(!shown.contains("SECRET-KEY-1"), "{shown}");
    let token = Secret::new("SECRET-TOKEN-2");
    let (url, _) = scripted_server(&[(
        b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n",
        Some(false),
    )])
    .await;
    let (_, r) = http
        .send_download(&url, Some(&token), ndjson)
        .await
        .unwrap();
    let shown = format!("{http:?} {r:?}");
    assert!(!shown.contains("SECRET"), "{shown}");
}
