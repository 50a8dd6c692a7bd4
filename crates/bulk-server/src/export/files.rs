//! The files a job serves, built when the job is kicked off: the data directory's
//! `{Type}.ndjson` cut into files of [`Config::lines_per_file`](crate::Config) lines, their
//! gzip, and the error and deleted files the fault switches ask for.

use std::io::Write as _;

use axum::body::Bytes;
use serde_json::json;

use super::outcome;
use crate::{Gzip, Shared};

/// Which manifest list a file is listed in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// `output`: resources of one type.
    Output,
    /// `error` (STU4 `outcome`): OperationOutcomes.
    Error,
    /// `deleted`: Bundles of deleted resources.
    Deleted,
}

/// One file of a job, built at kick-off and held in memory until the job is deleted.
#[derive(Debug)]
pub(super) struct FileSpec {
    /// Its manifest list.
    pub(super) kind: Kind,
    /// `type` in the manifest entry.
    pub(super) rtype: String,
    /// The NDJSON as served without compression.
    pub(super) plain: Bytes,
    /// gzip of `plain` (when the server compresses at all).
    pub(super) gzip: Option<Bytes>,
    /// `count` in the manifest entry, if any.
    pub(super) manifest_count: Option<usize>,
    /// Answer downloads with an OperationOutcome line with this text (`fileError`).
    pub(super) file_error: Option<String>,
}

/// The file's bytes: (plain NDJSON, its gzip when the server compresses).
fn encode(shared: &Shared, lines: &[String]) -> (Bytes, Option<Bytes>) {
    let mut text = if shared.config.faults.messy_ndjson {
        // CRLF, a blank line in the middle, no final newline.
        let mut t = lines.join("\r\n");
        if let Some(pos) = t.find("\r\n") {
            t.insert_str(pos, "\r\n");
        }
        t
    } else {
        let mut t = lines.join("\n");
        t.push('\n');
        t
    };
    if lines.is_empty() {
        text.clear();
    }
    let gzip = (shared.config.gzip != Gzip::Off).then(|| {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(text.as_bytes()).expect("in-memory write");
        Bytes::from(enc.finish().expect("in-memory write"))
    });
    (Bytes::from(text.into_bytes()), gzip)
}

/// The files of a new job over `types` (all when empty): each `{Type}.ndjson` of the data
/// directory cut into files of [`Config::lines_per_file`](crate::Config) lines, with the
/// file faults applied (failing types become one error file; failed files become error
/// entries; `deleted` adds a Bundle of deletions).
pub(super) fn build_files(shared: &Shared, types: &[String]) -> Result<Vec<FileSpec>, String> {
    let cfg = &shared.config;
    let mut names: Vec<_> = std::fs::read_dir(&cfg.data_dir)
        .map_err(|e| format!("reading {}: {e}", cfg.data_dir.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "ndjson"))
        .collect();
    names.sort();
    let mut files = Vec::new();
    let mut errors = Vec::new();
    for path in names {
        let rtype = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default()
            .to_owned();
        if !types.is_empty() && !types.contains(&rtype) {
            continue;
        }
        if cfg.faults.failing_types.contains(&rtype) {
            errors.push(outcome(
                "error",
                "processing",
                &format!("Failed to generate {rtype} export file"),
            ));
            continue;
        }
        let text =
            std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let lines: Vec<String> = text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(str::to_owned)
            .collect();
        for (i, chunk) in lines.chunks(cfg.lines_per_file.max(1)).enumerate() {
            let n = i + 1;
            let is = |list: &[(String, usize)]| list.iter().any(|(t, k)| *t == rtype && *k == n);
            if is(&cfg.faults.failed_files) {
                // SMART's some_file_generation_failed: the error entry carries the failed
                // file's count, the error file one OperationOutcome.
                let (plain, gzip) = encode(
                    shared,
                    &[outcome(
                        "error",
                        "processing",
                        &format!("Failed to export {n}.{rtype}.ndjson"),
                    )],
                );
                files.push(FileSpec {
                    kind: Kind::Error,
                    rtype: "OperationOutcome".into(),
                    plain,
                    gzip,
                    manifest_count: Some(chunk.len()),
                    file_error: None,
                });
                continue;
            }
            let (plain, gzip) = encode(shared, chunk);
            files.push(FileSpec {
                kind: Kind::Output,
                rtype: rtype.clone(),
                plain,
                gzip,
                manifest_count: Some(chunk.len()),
                file_error: is(&cfg.faults.file_error)
                    .then(|| format!("Simulated file error: {n}.{rtype}.ndjson could not be read")),
            });
        }
    }
    if !errors.is_empty() {
        let (plain, gzip) = encode(shared, &errors);
        files.push(FileSpec {
            kind: Kind::Error,
            rtype: "OperationOutcome".into(),
            plain,
            gzip,
            manifest_count: None,
            file_error: None,
        });
    }
    if cfg.faults.deleted {
        let bundle = json!({
            "resourceType": "Bundle", "type": "transaction",
            "entry": [
                {"request": {"method": "DELETE", "url": "Patient/deleted-1"}},
                {"request": {"method": "DELETE", "url": "Patient/deleted-2"}}
            ]
        });
        let (plain, gzip) = encode(shared, &[bundle.to_string()]);
        files.push(FileSpec {
            kind: Kind::Deleted,
            rtype: "Bundle".into(),
            plain,
            gzip,
            manifest_count: None,
            file_error: None,
        });
    }
    Ok(files)
}
