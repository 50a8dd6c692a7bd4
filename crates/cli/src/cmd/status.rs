//! `flatfhir status`: show the export job recorded in DIR and, while it is still running on the
//! server, one poll of its status; for a search crawl's DIR, the crawl's state.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use flatfhir_fetch::{FileStatus, JobState, RedactedUrl};

use super::fetch::ConnArgs;

/// Arguments of `flatfhir status`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Output directory of a `flatfhir fetch`
    #[arg(long, short, value_name = "DIR")]
    out: PathBuf,
    /// Only the local job state; do not contact the server
    #[arg(long)]
    offline: bool,
    /// Print JSON on stdout
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    conn: ConnArgs,
}

pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    if !args.out.join(flatfhir_fetch::JOB_FILE).exists()
        && let Some(crawl) = flatfhir_fetch::search::SearchJob::load(&args.out)?
    {
        // A search crawl: its state is all there is (nothing runs on the server).
        return super::search::show_state(&crawl, args.json);
    }
    let job = JobState::load(&args.out)?
        .with_context(|| format!("{} holds no export job", args.out.display()))?;
    let conn = if args.offline {
        None
    } else {
        Some(args.conn.connection(Some(&job))?)
    };
    let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let (job, server) = rt.block_on(flatfhir_fetch::status(&args.out, conn))?;
    let (mut done, mut failed, mut pending, mut resources) = (0, 0, 0, 0);
    for f in &job.files {
        match &f.status {
            FileStatus::Done { resources: r, .. } => {
                done += 1;
                resources += r;
            }
            FileStatus::Failed { .. } => failed += 1,
            FileStatus::Pending => pending += 1,
        }
    }
    let status_url = job
        .status_url
        .as_deref()
        .and_then(|u| u.parse().ok())
        .map(|u| RedactedUrl::new(u).to_string());
    if args.json {
        let v = serde_json::json!({
            "phase": job.phase, "statusUrl": status_url, "transactionTime": job.transaction_time,
            "files": {"done": done, "failed": failed, "pending": pending}, "resources": resources,
            "deletedOnServer": job.deleted_on_server, "server": server,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!(
            "phase: {}",
            serde_json::to_value(job.phase)?.as_str().unwrap_or("?")
        );
        if let Some(u) = &status_url {
            println!("status URL: {u}");
        }
        if job.deleted_on_server {
            println!("deleted on the server after the download (--delete-on-success)");
        }
        if let Some(t) = &job.transaction_time {
            println!("transactionTime: {t}");
        }
        println!("files: {done} done, {failed} failed, {pending} pending; {resources} resources");
        for f in &job.files {
            if let FileStatus::Failed { reason } = &f.status {
                println!("  failed {}: {reason}", f.path);
            }
        }
        if let Some(s) = &server {
            println!(
                "server: HTTP {}{}{}",
                s.code,
                s.x_progress
                    .as_deref()
                    .map_or_else(String::new, |p| format!(", {p}")),
                s.message
                    .as_deref()
                    .map_or_else(String::new, |m| format!(": {m}"))
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
