//! `flatfhir-bulk-server`: generate sample data, or serve a directory of NDJSON files as a
//! Bulk Data server for manual testing and benchmarks.
//!
//! ```text
//! flatfhir-bulk-server generate --patients N [--seed S] --out DIR
//! flatfhir-bulk-server serve --data DIR [--open] [--lines-per-file N] [--gzip] [--chunk-per-line]
//!     [--polls-before-ready N] [--token-uses N] [--transient-status-errors N]
//!     [--slow-chunks-ms MS] [--drop-mid-file] [--deleted] [--failing-type T]...
//!     [--kickoff-failure] [--fatal-status-error] [--signed-urls]
//!     [--no-export] [--next-links absolute|relative|alternate] [--search-count N] [--search-warning]
//! ```
//! The last line sets up FHIR search (see `docs/search.md`): `$export` switched off (and left
//! out of `metadata`), the form of next links, the default page size, and a warning outcome
//! entry on every search's first page.
//! `--gzip` compresses downloads for clients whose `Accept-Encoding` offers gzip;
//! `--chunk-per-line` sends one HTTP chunk per NDJSON line (as the SMART reference server does).
//! The fault flags switch on the [`Faults`] of the same names (the Python package's tests
//! use them). On Ctrl-C, `serve` prints `token_calls N` and `requests N` on stdout, so a
//! test can check that a token was renewed or a request retried.
//! `serve` prints the FHIR base URL and, unless `--open`, writes a throw-away client key to
//! `DIR/demo-client.pem` (client id `flatfhir-demo`, kid `flatfhir-demo-es384`).

use std::path::PathBuf;
use std::process::ExitCode;

use flatfhir_bulk_server::demo::{self, DemoKey};
use flatfhir_bulk_server::{Config, Faults, Gzip, NextLinks, RegisteredClient, TestServer};

fn value(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

/// The fault switches given on the command line.
fn faults(args: &[String]) -> Faults {
    let mut f = Faults::default();
    let num = |name: &str| value(args, name).and_then(|s| s.parse::<u64>().ok());
    if let Some(n) = num("--token-uses") {
        f.token_uses = Some(n as u32);
    }
    if let Some(n) = num("--transient-status-errors") {
        f.transient_status_errors = n as u32;
    }
    if let Some(ms) = num("--slow-chunks-ms") {
        f.slow_chunks = Some(std::time::Duration::from_millis(ms));
    }
    f.drop_mid_file = args.iter().any(|a| a == "--drop-mid-file");
    f.kickoff_failure = args.iter().any(|a| a == "--kickoff-failure");
    f.signed_urls = args.iter().any(|a| a == "--signed-urls");
    f.fatal_status_error = args.iter().any(|a| a == "--fatal-status-error");
    f.deleted = args.iter().any(|a| a == "--deleted");
    f.failing_types = args
        .windows(2)
        .filter(|w| w[0] == "--failing-type")
        .map(|w| w[1].clone())
        .collect();
    f
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: flatfhir-bulk-server generate --patients N [--seed S] --out DIR\n       \
                 flatfhir-bulk-server serve --data DIR [--open] [--lines-per-file N] [--gzip] [--chunk-per-line]\n         \
                 [--polls-before-ready N] [--token-uses N] [--transient-status-errors N]\n         \
                 [--slow-chunks-ms MS] [--drop-mid-file] [--deleted] [--failing-type T]...\n         \
                 [--kickoff-failure] [--fatal-status-error] [--signed-urls]\n         \
                 [--no-export] [--next-links absolute|relative|alternate] [--search-count N] [--search-warning]";
    match args.first().map(String::as_str) {
        Some("generate") => {
            let (Some(n), Some(out)) = (value(&args, "--patients"), value(&args, "--out")) else {
                eprintln!("{usage}");
                return ExitCode::from(2);
            };
            let seed = value(&args, "--seed")
                .and_then(|s| s.parse().ok())
                .unwrap_or(42);
            let Ok(n) = n.parse::<usize>() else {
                eprintln!("--patients: not a number");
                return ExitCode::from(2);
            };
            match demo::generate(&PathBuf::from(&out), n, seed) {
                Ok(count) => {
                    eprintln!("{count} resources for {n} patients in {out}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {out}: {e}");
                    ExitCode::from(1)
                }
            }
        }
        Some("serve") => {
            let Some(data) = value(&args, "--data") else {
                eprintln!("{usage}");
                return ExitCode::from(2);
            };
            let mut cfg = Config::new(&data);
            if let Some(n) = value(&args, "--lines-per-file").and_then(|s| s.parse().ok()) {
                cfg.lines_per_file = n;
            }
            if args.iter().any(|a| a == "--gzip") {
                cfg.gzip = Gzip::Negotiated;
            }
            cfg.chunk_per_line = args.iter().any(|a| a == "--chunk-per-line");
            if let Some(n) = value(&args, "--polls-before-ready").and_then(|s| s.parse().ok()) {
                cfg.polls_before_ready = n;
            }
            cfg.faults = faults(&args);
            cfg.search.export_offered = !args.iter().any(|a| a == "--no-export");
            cfg.search.warning_outcome = args.iter().any(|a| a == "--search-warning");
            if let Some(n) = value(&args, "--search-count").and_then(|s| s.parse().ok()) {
                cfg.search.default_count = n;
            }
            match value(&args, "--next-links").as_deref() {
                None | Some("absolute") => {}
                Some("relative") => cfg.search.next_links = NextLinks::Relative,
                Some("alternate") => cfg.search.next_links = NextLinks::Alternate,
                Some(other) => {
                    eprintln!("--next-links: {other:?} is not absolute, relative or alternate");
                    return ExitCode::from(2);
                }
            }
            if !args.iter().any(|a| a == "--open") {
                let key = DemoKey::generate();
                let pem = PathBuf::from(&data).join("demo-client.pem");
                if let Err(e) = std::fs::write(&pem, &key.private_pem) {
                    eprintln!("error: {}: {e}", pem.display());
                    return ExitCode::from(1);
                }
                eprintln!(
                    "client id {}, kid {}, private key {}",
                    DemoKey::CLIENT_ID,
                    DemoKey::KID,
                    pem.display()
                );
                cfg.clients = vec![RegisteredClient::with_jwks(DemoKey::CLIENT_ID, key.jwks)];
            }
            let rt = match tokio::runtime::Runtime::new() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(1);
                }
            };
            rt.block_on(async {
                match TestServer::start(cfg).await {
                    Ok(server) => {
                        println!("{}", server.base_url());
                        let _ = tokio::signal::ctrl_c().await;
                        println!("token_calls {}", server.token_calls());
                        println!("requests {}", server.requests().len());
                        drop(server);
                        ExitCode::SUCCESS
                    }
                    Err(e) => {
                        eprintln!("error: {e}");
                        ExitCode::from(1)
                    }
                }
            })
        }
        _ => {
            eprintln!("{usage}");
            ExitCode::from(2)
        }
    }
}
