//! One export run, start to end ([`fetch`]): a new job is kicked off (or a recorded one
//! resumed), the status URL is polled to its manifest pages, each page's files are downloaded
//! as it arrives, expired links are re-polled once, and the job state, `manifest.json` and
//! `log.ndjson` are kept up to date throughout.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
// tokio's clock (the real one outside tests with paused time): `--max-wait` and the run's
// duration count the same time the waits do.
use tokio::time::Instant;

use serde_json::json;
use url::Url;

use crate::control::delete_export;
use crate::ctx::RunContext;
use crate::download::{self, Failure};
use crate::error::{Error, Result};
use crate::event::{Event, Observer};
use crate::job::{self, FileState, FileStatus, JOB_FILE, JobState, Phase};
use crate::manifest::{ItemType, Manifest, merge_manifest_page, write_manifest};
use crate::options::Options;
use crate::redact::RedactedUrl;
use crate::summary::{Summary, read_issues};
use crate::{kickoff, poll};

struct ExportRun {
    ctx: RunContext,
    job: Mutex<JobState>,
    save_turn: Mutex<()>,
    manifests_final: AtomicBool,
    types_announced: Mutex<HashSet<String>>,
}

impl ExportRun {
    fn lock(&self) -> std::sync::MutexGuard<'_, JobState> {
        self.job
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Save the job state on a blocking thread (it fsyncs). Saves take turns (they share the
    /// temp file) and each writes the state as it is when its turn comes, so a later save is
    /// never overwritten by an older one; downloads keep the job lock only to serialise.
    /// `last`: also fsync DIR (the run's final save).
    async fn save(self: &Arc<Self>, last: bool) -> Result<()> {
        let run = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let _turn = run
                .save_turn
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let bytes = run.lock().to_bytes()?;
            job::save_bytes(&run.ctx.dir, &bytes, last)
        })
        .await
        .map_err(|e| Error::Job(format!("saving the job state: {e}")))?
    }

    /// Record a manifest page: new files get their `{n}` names, known ones a fresh URL.
    fn record_page(&self, page: usize, raw: &serde_json::Value, m: &Manifest) -> Vec<usize> {
        let mut job = self.lock();
        if page < job.manifests.len() {
            job.manifests[page] = raw.clone();
        } else {
            job.manifests.push(raw.clone());
        }
        if job.transaction_time.is_none() {
            job.transaction_time.clone_from(&m.transaction_time);
        }
        let mut touched = Vec::new();
        for e in &m.entries {
            let rt = match e.item {
                ItemType::Output => e.resource_type.clone().unwrap_or_else(|| "Unknown".into()),
                ItemType::Error => "OperationOutcome".into(),
                ItemType::Deleted => "Bundle".into(),
            };
            if let Some(i) = job
                .files
                .iter()
                .position(|f| f.page == page && f.item == e.item && f.index == e.index)
            {
                job.files[i].url = e.url.to_string();
                job.files[i].requires_token = m.requires_access_token;
                touched.push(i);
                continue;
            }
            let n = job.next_n(e.item, &rt);
            job.files.push(FileState {
                item: e.item,
                page,
                index: e.index,
                path: job::file_path(e.item, n, &rt),
                resource_type: rt,
                url: e.url.to_string(),
                count: e.count,
                requires_token: m.requires_access_token,
                status: FileStatus::Pending,
            });
            touched.push(job.files.len() - 1);
        }
        touched
    }

    /// Announce resource types whose files are all complete, once the manifest is final.
    fn announce_complete_types(&self) {
        if !self.manifests_final.load(Ordering::SeqCst) {
            return;
        }
        let job = self.lock();
        let mut by_type: BTreeMap<&str, (bool, Vec<PathBuf>)> = BTreeMap::new();
        for f in job.files.iter().filter(|f| f.item == ItemType::Output) {
            let entry = by_type
                .entry(&f.resource_type)
                .or_insert((true, Vec::new()));
            entry.0 &= matches!(f.status, FileStatus::Done { .. });
            entry.1.push(self.ctx.dir.join(&f.path));
        }
        let mut announced = self
            .types_announced
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for (t, (done, files)) in by_type {
            if done && announced.insert(t.to_owned()) {
                self.ctx.observe(Event::TypeComplete {
                    resource_type: t.to_owned(),
                    files,
                });
            }
        }
    }
}

/// Download file `i`; `Some(i)` when its link looked expired and a re-poll may help.
async fn run_one(run: Arc<ExportRun>, i: usize, expired_is_final: bool) -> Result<Option<usize>> {
    let slot = run
        .ctx
        .slots
        .acquire()
        .await
        .map_err(|_| Error::Job("semaphore closed".into()))?;
    let file = run.lock().files[i].clone();
    if matches!(file.status, FileStatus::Done { .. }) {
        return Ok(None);
    }
    let result = download::download(&run.ctx, &file, slot).await;
    let status = match result {
        Ok(d) => {
            run.ctx.observe(Event::FileDone {
                path: file.path.clone(),
                resource_type: file.resource_type.clone(),
                resources: d.resources,
                bytes: d.bytes,
            });
            FileStatus::Done {
                resources: d.resources,
                bytes: d.bytes,
            }
        }
        Err(Failure::Expired(_)) if !expired_is_final => return Ok(Some(i)),
        Err(Failure::Expired(reason)) => FileStatus::Failed {
            reason: format!("link still failing after a re-poll: {reason}"),
        },
        Err(Failure::Failed(e)) => FileStatus::Failed {
            reason: e.to_string(),
        },
    };
    if let FileStatus::Failed { reason } = &status {
        run.ctx.observe(Event::FileFailed {
            path: file.path.clone(),
            reason: reason.clone(),
        });
    }
    run.lock().files[i].status = status;
    run.save(false).await?;
    run.announce_complete_types();
    Ok(None)
}

/// Run (or with `resume`, continue) an export into `opts.out_dir`.
///
/// Returns a [`Summary`] once every file has been tried; files that failed are listed in it
/// (and in the job state, so `--resume` retries them). `log.ndjson` ends with
/// `export_complete` only when [`Summary::complete`]; otherwise with `export_partial` (the
/// server's error files report errors), `export_failed` (files failed, or the run stopped
/// with an error) or `export_interrupted` (the future was dropped, e.g. on Ctrl-C).
///
/// # Errors
/// Kick-off refusal, a failed export, auth failures, `--max-wait` exceeded, local I/O, and
/// `resume` of a cancelled export.
pub async fn fetch(opts: Options, observer: Arc<dyn Observer>) -> Result<Summary> {
    let started = Instant::now();
    let dir = opts.out_dir.clone();
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let existing = JobState::load(&dir)?;
    let job = match (existing, opts.resume) {
        (Some(j), true) if j.phase == Phase::Cancelled => {
            return Err(Error::Job(format!(
                "--resume: the export in {} was cancelled (deleted on the server), so it cannot \
                 be continued; its {} finished file(s) stay in place. Start a new export in \
                 another directory",
                dir.display(),
                j.files
                    .iter()
                    .filter(|f| matches!(f.status, FileStatus::Done { .. }))
                    .count()
            )));
        }
        (Some(mut j), true) => {
            // Failed files get another chance on resume.
            for f in &mut j.files {
                if matches!(f.status, FileStatus::Failed { .. }) {
                    f.status = FileStatus::Pending;
                }
            }
            j
        }
        (None, true) => {
            return Err(Error::Job(format!(
                "--resume: {} holds no job state ({JOB_FILE}); start a new export without --resume",
                dir.display()
            )));
        }
        (Some(j), false) => {
            return Err(Error::Job(format!(
                "{} already holds an export ({:?}); continue it with --resume, or choose another --out",
                dir.display(),
                j.phase
            )));
        }
        (None, false) => JobState {
            version: 1,
            fhir_url: opts.conn.fhir_url.to_string(),
            kickoff_url: kickoff::kickoff_url(&opts.conn.fhir_url, &opts.kickoff).to_string(),
            status_url: None,
            phase: Phase::Starting,
            transaction_time: None,
            manifests: Vec::new(),
            files: Vec::new(),
            client_id: opts.conn.credentials.client_id(),
            private_key_path: opts.conn.private_key_path.clone(),
            kid: opts.conn.credentials.kid(),
            token_url: opts.conn.token_url.as_ref().map(ToString::to_string),
            deleted_on_server: false,
        },
    };
    let fhir_url = opts.conn.fhir_url.clone();
    let delete = opts.delete_on_success;
    let ctx = RunContext::new(
        opts.conn,
        &dir,
        opts.kickoff,
        opts.max_line_bytes,
        observer,
        opts.parallel,
    )?;
    let mut closing =
        crate::log::InterruptGuard::new(Arc::clone(&ctx.log), started, "export_interrupted");
    let result = run_export(ctx, job, &fhir_url, delete, started).await;
    closing.armed = false;
    if let Err(e) = &result {
        closing.log.emit(
            "export_failed",
            json!({"message": e.to_string(), "duration": closing.millis()}),
        );
    }
    closing.log.flush();
    result
}

async fn run_export(
    ctx: RunContext,
    mut job: JobState,
    fhir_url: &Url,
    delete: bool,
    started: Instant,
) -> Result<Summary> {
    let dir = ctx.dir.clone();
    let status_url = if let Some(s) = &job.status_url {
        let u = Url::parse(s).map_err(|e| Error::Job(format!("job state: bad status URL: {e}")))?;
        ctx.log
            .set_export_id(RedactedUrl::new(u.clone()).redacted());
        ctx.observe(Event::Resumed {
            status_url: RedactedUrl::new(u.clone()).redacted(),
            files: job.files.len(),
            done: job
                .files
                .iter()
                .filter(|f| matches!(f.status, FileStatus::Done { .. }))
                .count(),
        });
        u
    } else {
        let u = kickoff::kickoff(&ctx, fhir_url).await?;
        job.status_url = Some(u.to_string());
        job.phase = Phase::Polling;
        job.save(&dir)?;
        ctx.observe(Event::KickedOff {
            status_url: RedactedUrl::new(u.clone()).redacted(),
        });
        u
    };
    let polling = job.phase == Phase::Polling;
    let run = Arc::new(ExportRun {
        ctx,
        job: Mutex::new(job),
        save_turn: Mutex::new(()),
        manifests_final: AtomicBool::new(!polling),
        types_announced: Mutex::new(HashSet::new()),
    });
    let mut tasks = tokio::task::JoinSet::new();
    if polling {
        let pages = follow_manifests(&run, &status_url, started, &mut tasks, false).await?;
        let (o, d, e) = {
            let mut job = run.lock();
            job.phase = Phase::Downloading;
            counts(&job)
        };
        run.save(false).await?;
        run.ctx.log.emit(
            "manifest_complete",
            json!({"transactionTime": run.lock().transaction_time, "totalOutputFileCount": o,
                   "totalDeletedFileCount": d, "totalErrorFileCount": e, "totalManifests": pages}),
        );
        run.manifests_final.store(true, Ordering::SeqCst);
        run.announce_complete_types();
    } else {
        let n = run.lock().files.len();
        for i in 0..n {
            tasks.spawn(run_one(Arc::clone(&run), i, false));
        }
    }
    let mut expired = Vec::new();
    while let Some(r) = tasks.join_next().await {
        if let Some(i) = r.map_err(|e| Error::Job(format!("download task: {e}")))?? {
            expired.push(i);
        }
    }
    if !expired.is_empty() {
        // File links expire (HAPI: ~2 h); the status URL hands out fresh ones.
        run.ctx.observe(Event::Repolling {
            files: expired.len(),
        });
        let _ = follow_manifests(&run, &status_url, started, &mut tasks, true).await?;
        for i in expired {
            tasks.spawn(run_one(Arc::clone(&run), i, true));
        }
        while let Some(r) = tasks.join_next().await {
            r.map_err(|e| Error::Job(format!("download task: {e}")))??;
        }
    }
    finish(&run, &status_url, delete, started).await
}

fn counts(job: &JobState) -> (usize, usize, usize) {
    let c = |k| job.files.iter().filter(|f| f.item == k).count();
    (
        c(ItemType::Output),
        c(ItemType::Deleted),
        c(ItemType::Error),
    )
}

/// Poll the status URL to a manifest and follow `next` pages, starting downloads for each page
/// as it arrives (unless `links_only`, when only URLs are refreshed). Returns the page count.
async fn follow_manifests(
    run: &Arc<ExportRun>,
    status_url: &Url,
    started: Instant,
    tasks: &mut tokio::task::JoinSet<Result<Option<usize>>>,
    links_only: bool,
) -> Result<usize> {
    let mut page_url = status_url.clone();
    let mut page = 0;
    let mut merged: Option<serde_json::Value> = None;
    loop {
        let raw = poll::until_manifest(&run.ctx, &page_url, started).await?;
        let m = Manifest::parse(&raw, &page_url).map_err(|reason| Error::Manifest {
            url: page_url.clone().into(),
            reason,
        })?;
        if !links_only {
            merge_manifest_page(&mut merged, &raw);
            if let Some(all) = &merged {
                write_manifest(&run.ctx.dir, all)?;
            }
        }
        if page == 0 && !links_only {
            let c = |k| m.entries.iter().filter(|e| e.item == k).count();
            run.ctx.log.emit(
                "status_complete",
                json!({"transactionTime": m.transaction_time, "outputFileCount": c(ItemType::Output),
                       "deletedFileCount": c(ItemType::Deleted), "errorFileCount": c(ItemType::Error)}),
            );
        }
        let touched = run.record_page(page, &raw, &m);
        let total = run.lock().files.len();
        run.ctx.observe(Event::Manifest { page, files: total });
        if !links_only {
            for i in touched {
                tasks.spawn(run_one(Arc::clone(run), i, false));
            }
        }
        // After the downloads started: the save (an fsync) need not delay them, and a crash
        // before it only means the page is polled again on --resume.
        run.save(false).await?;
        page += 1;
        match m.next {
            Some(next) => page_url = next,
            None => return Ok(page),
        }
    }
}

async fn finish(
    run: &Arc<ExportRun>,
    status_url: &Url,
    delete: bool,
    started: Instant,
) -> Result<Summary> {
    let mut summary = Summary {
        status_url: RedactedUrl::new(status_url.clone()).redacted(),
        transaction_time: run.lock().transaction_time.clone(),
        files: 0,
        resources: 0,
        bytes: 0,
        types: BTreeMap::new(),
        failed: Vec::new(),
        issues: Vec::new(),
        seconds: 0.0,
        deleted_on_server: false,
    };
    let files = run.lock().files.clone();
    for f in &files {
        match &f.status {
            FileStatus::Done { resources, bytes } => {
                summary.files += 1;
                summary.bytes += bytes;
                if f.item == ItemType::Output {
                    summary.resources += resources;
                    *summary.types.entry(f.resource_type.clone()).or_default() += resources;
                }
                if f.item == ItemType::Error {
                    summary.issues.extend(read_issues(&run.ctx.dir, &f.path));
                }
            }
            FileStatus::Failed { reason } => summary.failed.push((f.path.clone(), reason.clone())),
            FileStatus::Pending => summary
                .failed
                .push((f.path.clone(), "not downloaded".into())),
        }
    }
    if delete && summary.failed.is_empty() {
        // A 404 counts: HAPI answers it for finished jobs.
        delete_export(&run.ctx, status_url).await?;
        summary.deleted_on_server = true;
    }
    summary.seconds = started.elapsed().as_secs_f64();
    {
        let mut job = run.lock();
        job.phase = Phase::Complete;
        job.deleted_on_server |= summary.deleted_on_server;
    }
    run.save(true).await?;
    let duration = (summary.seconds * 1000.0) as u64;
    if !summary.failed.is_empty() {
        let failures: Vec<_> = summary
            .failed
            .iter()
            .map(|(file, reason)| json!({"file": file, "message": reason}))
            .collect();
        run.ctx.log.emit(
            "export_failed",
            json!({"message": format!("{} file(s) failed; retry them with --resume", summary.failed.len()),
                   "files": summary.files, "failedFiles": summary.failed.len(), "failures": failures,
                   "resources": summary.resources, "bytes": summary.bytes, "duration": duration}),
        );
    } else if summary.has_error_issues() {
        run.ctx.log.emit(
            "export_partial",
            json!({"message": "every file downloaded, but the server's error files report errors",
                   "files": summary.files, "resources": summary.resources, "bytes": summary.bytes,
                   "issues": summary.issues.len(), "duration": duration}),
        );
    } else {
        run.ctx.log.emit(
            "export_complete",
            json!({"files": summary.files, "resources": summary.resources, "bytes": summary.bytes,
                   "attachments": 0, "duration": duration}),
        );
    }
    Ok(summary)
}
