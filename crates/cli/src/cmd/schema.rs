//! `flatfhir schema`: the union schema per resource type (column, type, non-null count, where
//! first seen), as a table or as JSON. Runs the schema pass only.

use std::io::Write;
use std::process::ExitCode;

use flatfhir_core::{SchemaReport, infer_schema, type_name};

use super::common::{Bar, FlattenArgs, input_bytes};

/// Rejected lines named per type on stderr (the report holds at most
/// [`flatfhir_core::SAMPLE_REJECTED`]).
const SHOW_REJECTED: usize = 5;

/// Arguments of `flatfhir schema`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(flatten)]
    pub(crate) flatten: FlattenArgs,

    /// Also write the union schemas as a mergeable schema document (format
    /// `flatfhir-schema` version 1, docs/scale-out.md), for `convert --schema` and the Spark
    /// and Dask readers. Written atomically; not written when a type failed.
    #[arg(long, value_name = "FILE")]
    pub(crate) save: Option<std::path::PathBuf>,
}

#[derive(Debug, serde::Serialize)]
struct JsonColumn<'a> {
    name: &'a str,
    #[serde(rename = "type")]
    data_type: String,
    non_null: u64,
    first_seen: String,
}

#[derive(Debug, serde::Serialize)]
struct JsonType<'a> {
    resource_type: &'a str,
    rows: u64,
    rejected: u64,
    /// The first rejected lines (file, line, reason).
    rejected_lines: &'a [flatfhir_core::RejectedLine],
    files: Vec<String>,
    columns: Vec<JsonColumn<'a>>,
}

pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    let plan = args.flatten.plan()?;
    let opts = args.flatten.convert_options();
    let total = input_bytes(&plan);
    let bar = Bar::new(total, 1, args.flatten.quiet);
    let mut reports = Vec::new();
    let mut failed = 0;
    for group in &plan.groups {
        bar.message(group.resource_type.clone());
        match infer_schema(group, &opts, &bar) {
            Ok(r) => {
                // Rejected lines are not part of the schema: say which (always, even with
                // --quiet, since the exit status 2 alone does not tell).
                if r.rejected > 0 {
                    bar.println(&rejected_text(&r));
                }
                reports.push(r);
            }
            Err(e) => {
                failed += 1;
                bar.println(&format!("error: {}: {e}", group.resource_type));
            }
        }
    }
    bar.finish();
    if let Some(path) = &args.save
        && failed == 0
    {
        let mut doc = flatfhir_core::SchemaDoc::new(&opts.sep, &opts.exclude);
        for r in &reports {
            doc.types.insert(r.resource_type.clone(), r.schema.clone());
        }
        save_atomically(path, doc.to_json().as_bytes())?;
    }
    let json: Vec<JsonType<'_>> = reports.iter().map(to_json).collect();
    let mut out = std::io::stdout().lock();
    if args.flatten.json {
        serde_json::to_writer_pretty(&mut out, &json)?;
        writeln!(out)?;
    } else {
        for t in &json {
            writeln!(
                out,
                "{} ({} rows, {} columns)",
                t.resource_type,
                t.rows,
                t.columns.len()
            )?;
            let w = t
                .columns
                .iter()
                .map(|c| c.name.len())
                .max()
                .unwrap_or(6)
                .max(6);
            writeln!(
                out,
                "  {:<w$}  {:<6}  {:>10}  first seen",
                "column", "type", "non-null"
            )?;
            for c in &t.columns {
                writeln!(
                    out,
                    "  {:<w$}  {:<6}  {:>10}  {}",
                    c.name, c.data_type, c.non_null, c.first_seen
                )?;
            }
        }
    }
    let rejected: u64 = reports.iter().map(|r| r.rejected).sum();
    Ok(if failed > 0 {
        ExitCode::from(1)
    } else if rejected > 0 {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}

/// `Patient: 2 lines rejected (not in the schema):` and the first few, as `file:line: reason`.
fn rejected_text(r: &SchemaReport) -> String {
    let mut text = format!(
        "{}: {} line(s) rejected, not counted in the schema (to keep them, run convert --on-error skip, which writes DIR/_rejected/):",
        r.resource_type, r.rejected
    );
    for b in r.rejected_sample.iter().take(SHOW_REJECTED) {
        text.push_str(&format!(
            "\n  {}:{}: {}",
            b.file.display(),
            b.line,
            b.reason
        ));
    }
    let shown = r.rejected_sample.len().min(SHOW_REJECTED) as u64;
    if r.rejected > shown {
        text.push_str(&format!("\n  ... and {} more", r.rejected - shown));
    }
    text
}

fn to_json(r: &SchemaReport) -> JsonType<'_> {
    JsonType {
        resource_type: &r.resource_type,
        rows: r.rows,
        rejected: r.rejected,
        rejected_lines: &r.rejected_sample,
        files: r.files.iter().map(|f| f.display().to_string()).collect(),
        columns: r
            .columns
            .iter()
            .map(|c| JsonColumn {
                name: &c.name,
                data_type: type_name(&c.data_type),
                non_null: c.non_null,
                first_seen: format!(
                    "{}:{}",
                    r.files
                        .get(c.first_seen.file as usize)
                        .map(|p| p.display().to_string())
                        .unwrap_or_default(),
                    c.first_seen.line
                ),
            })
            .collect(),
    }
}

/// Writes `bytes` to `path` through a temporary file in the same directory and a rename.
fn save_atomically(path: &std::path::Path, bytes: &[u8]) -> anyhow::Result<()> {
    use anyhow::Context;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => std::path::Path::new("."),
    };
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("cannot write {}", path.display()))?;
    tmp.write_all(bytes)
        .and_then(|()| tmp.as_file().sync_all())
        .with_context(|| format!("cannot write {}", path.display()))?;
    tmp.persist(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}
