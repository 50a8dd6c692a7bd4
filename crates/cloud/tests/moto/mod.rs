//! A real S3-compatible server for tests: moto's server mode (`pip install "moto[server]"`),
//! started on a free port of 127.0.0.1 and killed when dropped. Found through
//! `FLATFHIR_MOTO_SERVER` (scripts/test-all sets it to the venv's), the workspace's
//! `.venv/bin/moto_server`, or `moto_server` on PATH; when there is none, [`Moto::start`]
//! prints why the test is skipped and returns `None`.
#![allow(dead_code, unreachable_pub)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The access key the tests use (moto accepts any).
pub const KEY_ID: &str = "AKIAFLATFHIRTEST";
/// A secret that must never appear in any output.
pub const SECRET: &str = "flatfhir-test-secret-DO-NOT-PRINT-1234";

pub struct Moto {
    child: Child,
    pub port: u16,
}

fn candidates() -> Vec<PathBuf> {
    let mut c = Vec::new();
    if let Some(p) = std::env::var_os("FLATFHIR_MOTO_SERVER") {
        c.push(PathBuf::from(p));
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    c.push(root.join(".venv/bin/moto_server"));
    c.push(PathBuf::from("moto_server"));
    c
}

impl Moto {
    /// Starts the server, or prints why not and returns `None`.
    pub fn start(test: &str) -> Option<Self> {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut child = None;
        for exe in candidates() {
            if exe.components().count() > 1 && !exe.exists() {
                continue;
            }
            if let Ok(c) = Command::new(&exe)
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
            {
                child = Some(c);
                break;
            }
        }
        let Some(child) = child else {
            eprintln!(
                "SKIPPED {test}: no moto_server (pip install \"moto[server]\", or set FLATFHIR_MOTO_SERVER)"
            );
            return None;
        };
        let moto = Moto { child, port };
        // Readiness: poll until it answers HTTP (it starts in a second or two).
        for _ in 0..600 {
            if moto.request("GET", "/moto-api/", b"").is_some() {
                return Some(moto);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("moto_server on port {port} did not answer within 30 s");
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The standard AWS environment pointing at this server (and nothing from the user's).
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint()),
            ("AWS_ALLOW_HTTP", "true".into()),
            ("AWS_ACCESS_KEY_ID", KEY_ID.into()),
            ("AWS_SECRET_ACCESS_KEY", SECRET.into()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_PROFILE", String::new()),
            ("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent".into()),
            ("AWS_CONFIG_FILE", "/nonexistent".into()),
        ]
    }

    /// One plain HTTP/1.1 request; the status code and body, or `None` if nothing answers.
    pub fn request(&self, method: &str, path: &str, body: &[u8]) -> Option<(u16, Vec<u8>)> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            self.port,
            body.len()
        );
        s.write_all(head.as_bytes()).ok()?;
        s.write_all(body).ok()?;
        let mut out = Vec::new();
        s.read_to_end(&mut out).ok()?;
        let text = String::from_utf8_lossy(&out);
        let code = text.split_whitespace().nth(1)?.parse().ok()?;
        let body = out
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map_or_else(Vec::new, |i| out[i + 4..].to_vec());
        Some((code, body))
    }

    /// Creates a bucket (moto accepts an unsigned CreateBucket).
    pub fn create_bucket(&self, name: &str) {
        let (code, body) = self
            .request("PUT", &format!("/{name}"), b"")
            .expect("moto answers");
        assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
