//! Acting on a recorded job from outside a run: [`status`] (the job state, plus one poll of the
//! server) and [`cancel`] (DELETE the export on the server).

use std::path::Path;
use std::sync::Arc;

use reqwest::{Method, StatusCode};
use serde_json::json;
use url::Url;

use crate::ctx::RunContext;
use crate::error::{Error, Result};
use crate::event::Event;
use crate::http;
use crate::job::{JOB_FILE, JobState, Phase};
use crate::kickoff::KickoffParams;
use crate::options::{Connection, DEFAULT_MAX_LINE_BYTES};
use crate::redact::RedactedUrl;
use crate::redact::Secret;
use crate::retry::{Retries, send_with_token};

/// What a DELETE of the status URL found.
pub(crate) enum Deleted {
    /// The server deleted the export.
    Yes,
    /// 404: the server no longer knows the export (its text).
    NotFound(String),
}

/// DELETE the status URL.
pub(crate) async fn delete_export(ctx: &RunContext, status_url: &Url) -> Result<Deleted> {
    let mut retries = Retries::new(&ctx.opts.timing);
    let resp = send_with_token(
        &ctx.auth,
        true,
        &mut retries,
        |token: Option<Secret>| async move {
            ctx.http
                .send(Method::DELETE, status_url, token.as_ref(), |r| {
                    r.header("accept", "application/fhir+json")
                })
                .await
        },
    )
    .await??;
    let s = resp.status();
    if s.is_success() {
        return Ok(Deleted::Yes);
    }
    let text = resp.text().await.unwrap_or_default();
    if s == StatusCode::NOT_FOUND {
        return Ok(Deleted::NotFound(http::outcome_text(&text)));
    }
    Err(Error::Status {
        url: RedactedUrl::new(status_url.clone()),
        status: s.as_u16(),
        message: format!("DELETE refused: {}", http::outcome_text(&text)),
    })
}

fn job_and_ctx(dir: &Path, conn: Connection) -> Result<(JobState, Url, RunContext)> {
    let job = JobState::load(dir)?.ok_or_else(|| {
        Error::Job(format!(
            "{} holds no export job ({JOB_FILE} is missing)",
            dir.display()
        ))
    })?;
    let status = job.status_url.as_deref().ok_or_else(|| {
        Error::Job("the export was never accepted by the server (no status URL)".into())
    })?;
    let status =
        Url::parse(status).map_err(|e| Error::Job(format!("job state: bad status URL: {e}")))?;
    let ctx = RunContext::new(
        conn,
        dir,
        KickoffParams::default(),
        DEFAULT_MAX_LINE_BYTES,
        Arc::new(|_: &Event| {}),
        1,
    )?;
    ctx.log
        .set_export_id(RedactedUrl::new(status.clone()).redacted());
    Ok((job, status, ctx))
}

/// DELETE the export whose job state is in `dir` and mark it cancelled.
///
/// # Errors
/// No job in `dir`, auth failures, the server refusing the DELETE, or the server answering
/// 404 (it no longer has the export: already cancelled, deleted or expired; nothing was
/// deleted, and the job state is left as it was).
pub async fn cancel(dir: &Path, conn: Connection) -> Result<()> {
    let (mut job, status, ctx) = job_and_ctx(dir, conn)?;
    match delete_export(&ctx, &status).await? {
        Deleted::Yes => {
            ctx.log.emit("export_cancelled", json!({}));
            job.phase = Phase::Cancelled;
            job.save(dir)
        }
        Deleted::NotFound(text) => {
            let was = if job.phase == Phase::Cancelled || job.deleted_on_server {
                "it was already deleted"
            } else {
                "it was already deleted or has expired"
            };
            Err(Error::Status {
                url: RedactedUrl::new(status),
                status: 404,
                message: format!(
                    "{text}: the server no longer has this export ({was}); nothing was deleted"
                ),
            })
        }
    }
}

/// The server's answer to one status poll.
#[derive(Debug, Clone, serde::Serialize)]
#[non_exhaustive]
pub struct ServerStatus {
    /// HTTP status.
    pub code: u16,
    /// `X-Progress`.
    pub x_progress: Option<String>,
    /// OperationOutcome text on errors.
    pub message: Option<String>,
}

/// The job state in `dir`, plus (when `conn` is given and the job is still polling) one poll
/// of the server.
///
/// # Errors
/// No job in `dir`, or the poll could not be sent.
pub async fn status(
    dir: &Path,
    conn: Option<Connection>,
) -> Result<(JobState, Option<ServerStatus>)> {
    let Some(conn) = conn else {
        let job = JobState::load(dir)?.ok_or_else(|| {
            Error::Job(format!(
                "{} holds no export job ({JOB_FILE} is missing)",
                dir.display()
            ))
        })?;
        return Ok((job, None));
    };
    let (job, status_url, ctx) = job_and_ctx(dir, conn)?;
    if job.phase != Phase::Polling {
        return Ok((job, None));
    }
    let token = ctx.auth.token().await?;
    let (_, resp) = ctx
        .http
        .send(Method::GET, &status_url, token.as_ref(), |r| {
            r.header("accept", "application/fhir+json")
        })
        .await?;
    let code = resp.status();
    let x_progress = resp
        .headers()
        .get("x-progress")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let message = if code.is_success() {
        None
    } else {
        Some(http::outcome_text(&resp.text().await.unwrap_or_default()))
    };
    Ok((
        job,
        Some(ServerStatus {
            code: code.as_u16(),
            x_progress,
            message,
        }),
    ))
}
