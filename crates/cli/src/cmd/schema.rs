//! `flatfhir schema`: the union schema per resource type (column, type, non-null count, where
//! first seen), as a table or as JSON. Runs the schema pass only.

use std::io::Write;
use std::process::ExitCode;

use flatfhir_core::{SchemaReport, infer_schema, type_name};

use super::common::{Bar, FlattenArgs, input_bytes};

/// Arguments of `flatfhir schema`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(flatten)]
    pub(crate) flatten: FlattenArgs,
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
    files: Vec<String>,
    columns: Vec<JsonColumn<'a>>,
}

pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    let plan = args.flatten.plan()?;
    let opts = args.flatten.convert_options();
    let total = input_bytes(&plan);
    let bar = Bar::new(total, args.flatten.quiet);
    let mut reports = Vec::new();
    let mut failed = 0;
    for group in &plan.groups {
        bar.message(group.resource_type.clone());
        match infer_schema(group, &opts, &bar) {
            Ok(r) => reports.push(r),
            Err(e) => {
                failed += 1;
                bar.println(&format!("error: {}: {e}", group.resource_type));
            }
        }
    }
    bar.finish();
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

fn to_json(r: &SchemaReport) -> JsonType<'_> {
    JsonType {
        resource_type: &r.resource_type,
        rows: r.rows,
        rejected: r.rejected,
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
