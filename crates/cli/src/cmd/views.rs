//! `flatfhir convert --view/--column/--columns`: SQL on FHIR views instead of flattening.
//! Builds the views and hands them to `flatfhir_view::run_views`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use flatfhir_view::{Format, RunOptions, View, run_views_with};

use flatfhir_core::WriteOptions;

use super::common::{FormatArg, OutputArgs, mb};
use super::convert::Args;

mod toml_columns;
use toml_columns::columns_toml;

/// View flags of `flatfhir convert`.
#[derive(Debug, clap::Args)]
pub(crate) struct ViewArgs {
    /// SQL on FHIR ViewDefinition (JSON): write one table per view, named after the view's
    /// `name` (else the file's stem), instead of flattening. Repeatable.
    #[arg(long = "view", value_name = "VIEW.json")]
    pub(crate) views: Vec<PathBuf>,

    /// A view column in short form, TYPE:NAME=FHIRPATH, e.g. `Patient:gender=gender`.
    /// Repeatable; the columns of one type make one view named after the type.
    #[arg(long = "column", value_name = "TYPE:NAME=PATH")]
    pub(crate) columns: Vec<String>,

    /// A file of short-form columns. JSON: `{"Patient": [["id", "identifier[0].value"], ...]}`;
    /// or, named `*.toml`, `[Patient]` sections of `id = "identifier[0].value"` lines.
    #[arg(long = "columns", value_name = "FILE")]
    pub(crate) columns_file: Option<PathBuf>,
}

impl ViewArgs {
    /// Whether any view flag was given.
    pub(crate) fn any(&self) -> bool {
        !self.views.is_empty() || !self.columns.is_empty() || self.columns_file.is_some()
    }

    /// Compiles every view the flags describe.
    pub(crate) fn build(&self) -> anyhow::Result<Vec<View>> {
        let mut views = Vec::new();
        for path in &self.views {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read view {}", path.display()))?;
            let stem = path
                .file_stem()
                .map_or_else(|| "view".to_string(), |s| s.to_string_lossy().into_owned());
            let stem = stem.strip_suffix(".view").unwrap_or(&stem).to_string();
            views.push(
                View::from_json_str(&text, &stem)
                    .with_context(|| format!("in {}", path.display()))?,
            );
        }
        // Short forms: (type, name, path) in the order given.
        let mut pairs: Vec<(String, String, String)> = Vec::new();
        if let Some(file) = &self.columns_file {
            pairs.extend(columns_file(file)?);
        }
        for c in &self.columns {
            let (ty, rest) = c
                .split_once(':')
                .with_context(|| format!("--column {c}: expected TYPE:NAME=PATH"))?;
            let (name, path) = rest
                .split_once('=')
                .with_context(|| format!("--column {c}: expected TYPE:NAME=PATH"))?;
            pairs.push((ty.trim().into(), name.trim().into(), path.trim().into()));
        }
        let mut types: Vec<&str> = Vec::new();
        for (t, _, _) in &pairs {
            if !types.contains(&t.as_str()) {
                types.push(t);
            }
        }
        for t in types {
            let cols: Vec<(String, String)> = pairs
                .iter()
                .filter(|(ty, _, _)| ty == t)
                .map(|(_, n, p)| (n.clone(), p.clone()))
                .collect();
            views.push(View::from_columns(t, t, &cols)?);
        }
        let mut names: Vec<&str> = views.iter().map(View::name).collect();
        names.sort_unstable();
        if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
            anyhow::bail!(
                "two views are named '{}': their outputs would collide",
                w[0]
            );
        }
        Ok(views)
    }
}

/// Reads `{"Type": [["name", "path"], ...], ...}`, or the TOML form when the file is named
/// `*.toml`.
fn columns_file(path: &Path) -> anyhow::Result<Vec<(String, String, String)>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    if path.extension().is_some_and(|e| e == "toml") {
        return columns_toml(&text).with_context(|| format!("in {}", path.display()));
    }
    let v: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?;
    let bad = || {
        anyhow::anyhow!(
            "{}: expected {{\"Type\": [[\"name\", \"path\"], ...]}}",
            path.display()
        )
    };
    let mut out = Vec::new();
    for (ty, cols) in v.as_object().ok_or_else(bad)? {
        for pair in cols.as_array().ok_or_else(bad)? {
            match pair.as_array().map(Vec::as_slice) {
                Some([serde_json::Value::String(n), serde_json::Value::String(p)]) => {
                    out.push((ty.clone(), n.clone(), p.clone()));
                }
                _ => return Err(bad()),
            }
        }
    }
    Ok(out)
}

/// The view output format and Parquet/Arrow writer settings from `--format` and friends.
pub(crate) fn output_format(output: &OutputArgs) -> anyhow::Result<(Format, WriteOptions)> {
    Ok(match output.format {
        FormatArg::Parquet => (Format::Parquet, output.write_options()?),
        FormatArg::Arrow => (Format::Arrow, output.write_options()?),
        FormatArg::Ndjson => (Format::Ndjson, WriteOptions::default()),
        FormatArg::Csv => (Format::Csv, WriteOptions::default()),
    })
}

/// Whether `target` (an output file) is one of the `inputs` or a file in an input directory.
fn reads(inputs: &[PathBuf], target: &Path) -> bool {
    let Ok(target) = target.canonicalize() else {
        return false;
    };
    inputs.iter().any(|i| {
        i.canonicalize()
            .is_ok_and(|i| i == target || target.parent() == Some(i.as_path()))
    })
}

pub(crate) fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let start = std::time::Instant::now();
    let views = args.views.build()?;
    let (format, write) = output_format(&args.output)?;
    let will_write: Vec<String> = views
        .iter()
        .map(|v| flatfhir_view::output_file_name(v, format))
        .collect();
    for name in &will_write {
        let target = args.out.join(name);
        if reads(&args.flatten.inputs, &target) {
            anyhow::bail!(
                "the output {} would replace an input file; choose another --out",
                target.display()
            );
        }
    }
    let outdir = super::outdir::OutDir::prepare(
        &args.out,
        &will_write,
        args.overwrite,
        None,
        "--overwrite",
    )?;
    let inputs = &args.flatten.inputs;
    let read = args.flatten.read_options();
    let opts = RunOptions::default().format(format).write(write).read(read);
    let run = || run_views_with(inputs, &views, &args.out, &opts);
    let report = match args.flatten.columns.threads {
        Some(n) => rayon::ThreadPoolBuilder::new()
            .num_threads(n.max(1))
            .build()?
            .install(run)?,
        None => run()?,
    };
    let written: Vec<PathBuf> = report.views.iter().map(|v| v.path.clone()).collect();
    let outcome = outdir.finish(&written, true)?;
    let quiet = args.flatten.quiet;
    if !quiet {
        if let Some(line) = outcome.describe() {
            eprintln!("{}: {line}", args.out.display());
        }
        for v in &report.views {
            let mismatches = if v.mismatches > 0 {
                format!(
                    ", {} values did not fit their column type (written as null)",
                    v.mismatches
                )
            } else {
                String::new()
            };
            eprintln!(
                "{}: {} resources, {} rows{mismatches} -> {}",
                v.view,
                v.resources,
                v.rows,
                v.path.display()
            );
        }
        let bytes: u64 = report.views.iter().map(|v| v.input_bytes).sum();
        let secs = start.elapsed().as_secs_f64();
        eprintln!(
            "{} views, {:.1} MB read in {secs:.2} s ({:.1} MB/s)",
            report.views.len(),
            mb(bytes),
            mb(bytes) / secs.max(1e-9)
        );
    }
    if args.flatten.json {
        let views: Vec<serde_json::Value> = report
            .views
            .iter()
            .zip(&views)
            .map(|(v, view)| {
                // How each path reads a resource: `trie` (only the members it names are
                // built), `subtree` or `resource` (whole subtrees, or the whole resource).
                let reads: Vec<serde_json::Value> = view
                    .path_kinds()
                    .into_iter()
                    .map(|(at, expr, kind)| {
                        serde_json::json!({"at": at, "expr": expr, "reads": kind.label()})
                    })
                    .collect();
                serde_json::json!({
                    "view": v.view, "path": v.path, "resources": v.resources,
                    "rows": v.rows, "mismatches": v.mismatches, "input_bytes": v.input_bytes,
                    "paths": reads,
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({ "views": views, "output_dir": outcome })
            )?
        );
    }
    Ok(ExitCode::SUCCESS)
}
