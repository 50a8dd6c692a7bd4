//! `flatfhir convert`: NDJSON files → one Parquet or Arrow file per resource type, with a
//! per-type report on stderr and an optional JSON summary on stdout.

use std::path::PathBuf;
use std::process::ExitCode;

use flatfhir_core::{TypeReport, convert_groups};

use super::common::{Bar, FlattenArgs, OutputArgs, input_bytes, mb};

/// Arguments of `flatfhir convert`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "DIR holds the tables of one run: a DIR that already holds tables (*.parquet, *.arrow, _rejected/) is \
refused unless --overwrite is given; then the new tables replace the old set, and files of the earlier run that this \
run does not produce are removed if flatfhir's run marker (DIR/.flatfhir-tables.json) proves it wrote them.\n\
Exit status: 0 all converted; 1 an error (nothing is written for a type that failed; also a DIR refused); \
2 converted, but bad lines were set aside under DIR/_rejected/ (--on-error skip); 130/143 interrupted by \
SIGINT/SIGTERM (unfinished files removed)."
)]
pub(crate) struct Args {
    #[command(flatten)]
    pub(crate) flatten: FlattenArgs,

    /// Output directory (created if missing), or an object-store prefix (`s3://bucket/tables/`,
    /// `gs://…`, `az://…`, `abfss://…`): each table is then staged locally (under
    /// --spill-dir or the temporary directory) and uploaded by a multipart upload that
    /// completes only when the file is whole, so a table appears whole or not at all.
    #[arg(long, short, value_name = "DIR", value_parser = super::common::location_arg)]
    pub(crate) out: PathBuf,

    /// Replace the tables of an earlier run in DIR: same-named files are replaced, and the
    /// earlier run's files this run does not produce are removed (only those flatfhir's run
    /// marker proves it wrote; other files are kept and named).
    #[arg(long)]
    pub(crate) overwrite: bool,

    /// Flatten with this precomputed union schema (a document from `flatfhir schema --save`,
    /// e.g. merged from shards): the tables get exactly its columns, order and types, and a
    /// value that does not fit it is an error naming file and line (exit 1).
    #[arg(long, value_name = "FILE")]
    pub(crate) schema: Option<PathBuf>,

    #[command(flatten)]
    pub(crate) output: OutputArgs,

    #[command(flatten)]
    pub(crate) views: super::views::ViewArgs,
}

#[derive(Debug, serde::Serialize)]
struct Failure {
    resource_type: String,
    error: String,
}

#[derive(Debug, serde::Serialize)]
struct Summary {
    types: Vec<TypeReport>,
    failed: Vec<Failure>,
    skipped_files: Vec<PathBuf>,
    /// What unpacking Bundle files did (absent when there were none).
    #[serde(skip_serializing_if = "Option::is_none")]
    bundles: Option<flatfhir_core::BundleStats>,
    /// What happened to files already in DIR.
    output_dir: super::outdir::Outcome,
    rows: u64,
    input_bytes: u64,
    output_bytes: u64,
    rejected: u64,
    seconds: f64,
}

pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    let remote_out = flatfhir_core::remote::url_of(&args.out).map(str::to_string);
    if args.views.any() {
        if remote_out.is_some() {
            anyhow::bail!(
                "--view/--views write to a local --out only; write the views to a directory and copy them"
            );
        }
        return super::views::run(&args);
    }
    let start = std::time::Instant::now();
    // An object-store --out: checked before any input is read; tables are staged locally.
    let mut remote = match &remote_out {
        Some(url) => Some(super::remote_out::RemoteOut::prepare(
            url,
            args.overwrite,
            args.output.spill_dir.as_deref(),
        )?),
        None => None,
    };
    let out_dir = remote
        .as_ref()
        .map_or_else(|| args.out.clone(), |r| r.staging().to_path_buf());
    // Resources unpacked from Bundles are kept next to the spill file (see --spill-dir).
    // Inputs that are all Bundle files are converted as they are unpacked (not with
    // --schema, which is checked against the types before anything is read).
    let temp_dir = args
        .output
        .spill_dir
        .as_deref()
        .unwrap_or(&out_dir)
        .to_path_buf();
    let plan = args
        .flatten
        .plan_in(Some(&temp_dir), args.schema.is_none())?;
    let mut opts = args.flatten.convert_options();
    opts.out_dir = out_dir.clone();
    opts.write = args.output.write_options()?;
    args.output.apply_spill(&mut opts);
    if let Some(path) = &args.schema {
        let doc = flatfhir_core::SchemaDoc::load(path)?;
        for g in &plan.groups {
            doc.get(&g.resource_type)
                .map_err(|e| anyhow::anyhow!("--schema {}: {e}", path.display()))?;
        }
        opts.schema = Some(std::sync::Arc::new(doc));
    }
    let outdir = match remote {
        Some(_) => None,
        None => Some(super::outdir::OutDir::prepare(
            &args.out,
            &[],
            args.overwrite,
            args.output.spill_dir.as_deref(),
            "--overwrite",
        )?),
    };

    let quiet = args.flatten.quiet;
    let mut summary = Summary {
        types: Vec::new(),
        failed: Vec::new(),
        skipped_files: plan.skipped.clone(),
        bundles: plan.bundles.as_ref().map(|b| b.stats().clone()),
        output_dir: super::outdir::Outcome::default(),
        rows: 0,
        input_bytes: 0,
        output_bytes: 0,
        rejected: 0,
        seconds: 0.0,
    };
    let bar;
    let types;
    if plan.packed.is_empty() {
        // Each input byte counts twice: once read and flattened, once written.
        bar = Bar::new(input_bytes(&plan), 2, quiet);
        // Small types run side by side (see `convert_groups`); the bar names the first type
        // not yet done.
        if let Some(first) = plan.groups.first() {
            bar.message(first.resource_type.clone());
        }
        convert_groups(&plan.groups, &opts, &bar, |k, result| {
            let group = &plan.groups[k];
            if let Some(next) = plan.groups.get(k + 1) {
                bar.message(next.resource_type.clone());
            }
            take_result(
                &group.resource_type,
                result,
                remote.as_mut(),
                &bar,
                quiet,
                &mut summary,
            );
        });
        types = plan.groups.len();
    } else {
        // Every type is converted while the Bundles are unpacked; the bar counts the Bundle
        // files' bytes as they are read.
        let sizes = plan
            .packed
            .iter()
            .map(|p| flatfhir_core::remote::len(p).unwrap_or(0))
            .sum();
        bar = Bar::new(sizes, 1, quiet);
        bar.message("Bundles".to_string());
        let stats = flatfhir_core::convert_bundles(
            &plan.packed,
            &args.flatten.bundle_options(Some(&temp_dir)),
            &opts,
            &bar,
            |stats| {
                if !quiet {
                    bar.println(&super::common::bundle_note(
                        stats,
                        args.flatten.resolve_references,
                    ));
                }
            },
            |name, result| take_result(name, result, remote.as_mut(), &bar, quiet, &mut summary),
        )?;
        if summary.types.is_empty() && summary.failed.is_empty() {
            // Not one entry became a resource.
            anyhow::bail!(args.flatten.nothing_read(&plan.packed, &plan.skipped));
        }
        summary.bundles = Some(stats);
        types = summary.types.len() + summary.failed.len();
    }
    bar.finish();
    summary.output_dir = match (outdir, remote) {
        (Some(outdir), _) => outdir.finish(&written_files(&summary.types), true)?,
        (None, Some(remote)) => remote.finish(true)?,
        (None, None) => unreachable!("one of a local and a remote output"),
    };
    summary.seconds = start.elapsed().as_secs_f64();
    if !quiet {
        if let Some(line) = summary.output_dir.describe() {
            eprintln!("{}: {line}", args.out.display());
        }
        eprintln!(
            "{} of {} types converted, {} rows, {:.1} MB in {:.2} s ({:.1} MB/s){}{}",
            summary.types.len(),
            types,
            summary.rows,
            mb(summary.input_bytes),
            summary.seconds,
            mb(summary.input_bytes) / summary.seconds.max(1e-9),
            if summary.rejected > 0 {
                format!(
                    ", {} lines rejected (see {})",
                    summary.rejected,
                    args.out.join("_rejected").display()
                )
            } else {
                String::new()
            },
            if summary.failed.is_empty() {
                String::new()
            } else {
                format!(
                    "; FAILED: {}",
                    summary
                        .failed
                        .iter()
                        .map(|f| f.resource_type.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            },
        );
        let skipped = super::common::unexpected(&summary.skipped_files).len();
        if skipped > 0 {
            eprintln!(
                "{skipped} file(s) of the input directories skipped: not NDJSON by name (named above)"
            );
        }
    }
    if args.flatten.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    }
    Ok(if !summary.failed.is_empty() {
        ExitCode::from(1)
    } else if summary.rejected > 0 {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}

/// Takes one type's result: uploads its files to an object-store `--out`, prints its line
/// and adds it to the summary.
fn take_result(
    resource_type: &str,
    result: flatfhir_core::Result<TypeReport>,
    remote: Option<&mut super::remote_out::RemoteOut>,
    bar: &Bar,
    quiet: bool,
    summary: &mut Summary,
) {
    // An object-store --out: the type's files are uploaded now (a failed upload fails the
    // type; its object does not appear).
    let result = match (result, remote) {
        (Ok(r), Some(remote)) => upload_report(remote, r)
            .map_err(|e| flatfhir_core::Error::Options(crate::error_text(&e))),
        (result, _) => result,
    };
    match result {
        Ok(r) => {
            if !quiet {
                bar.println(&describe(&r));
            }
            summary.rows += r.rows;
            summary.input_bytes += r.input_bytes;
            summary.output_bytes += r.output_bytes;
            summary.rejected += r.rejected;
            summary.types.push(r);
        }
        Err(e) => {
            bar.println(&format!("error: {resource_type}: {e}"));
            summary.failed.push(Failure {
                resource_type: resource_type.to_string(),
                error: e.to_string(),
            });
        }
    }
}

/// Uploads a converted type's files to the object-store prefix and points its report at
/// the objects.
fn upload_report(
    remote: &mut super::remote_out::RemoteOut,
    mut r: TypeReport,
) -> anyhow::Result<TypeReport> {
    if let Some(table) = &r.output {
        r.output = Some(remote.upload(table)?);
    }
    if let Some(lines) = &r.rejected_file {
        let errors = lines.with_file_name(format!("{}.errors.ndjson", r.resource_type));
        if errors.exists() {
            remote.upload(&errors)?;
        }
        r.rejected_file = Some(remote.upload(lines)?);
    }
    Ok(r)
}

/// Every file the converted types wrote: tables and `_rejected/` files.
pub(crate) fn written_files(types: &[TypeReport]) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for r in types {
        files.extend(r.output.clone());
        if let Some(lines) = &r.rejected_file {
            files.push(lines.clone());
            files.push(lines.with_file_name(format!("{}.errors.ndjson", r.resource_type)));
        }
    }
    files
}

fn describe(r: &TypeReport) -> String {
    let out = r.output.as_ref().map_or_else(
        || "no rows, nothing written".to_string(),
        |p| p.display().to_string(),
    );
    let rejected = if r.rejected > 0 {
        format!(", {} lines rejected", r.rejected)
    } else {
        String::new()
    };
    let mut line = format!(
        "{}: {} rows, {} columns, {:.1} MB in {:.2} s ({:.1} MB/s){rejected} -> {out}",
        r.resource_type,
        r.rows,
        r.columns,
        mb(r.input_bytes),
        r.seconds,
        mb(r.input_bytes) / r.seconds.max(1e-9),
    );
    // `--dates typed`: which columns became typed (the first few; `--json` lists all), and
    // why each other date-like column did not.
    const SHOWN: usize = 6;
    let typed: Vec<_> = r.dates.iter().filter(|d| d.reason.is_none()).collect();
    for d in typed.iter().take(SHOWN) {
        line.push_str(&format!("\n  {}: {}", d.column, d.data_type));
    }
    if typed.len() > SHOWN {
        line.push_str(&format!(
            "\n  and {} more typed date/instant columns (--json lists them)",
            typed.len() - SHOWN
        ));
    }
    for d in &r.dates {
        if let Some(why) = &d.reason {
            line.push_str(&format!("\n  {}: stays text: {why}", d.column));
        }
    }
    line
}
