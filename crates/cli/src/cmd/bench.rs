//! `flatfhir bench`: runs the real convert pipeline on the given input several times and
//! reports throughput (MB/s, rows/s), peak memory and the time per stage. Outputs go to a
//! temporary directory and are deleted after each run.

use std::process::ExitCode;

use flatfhir_core::{StageTimes, convert_groups};

use super::common::{FlattenArgs, OutputArgs, input_bytes, mb};

/// Arguments of `flatfhir bench`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(flatten)]
    pub(crate) flatten: FlattenArgs,

    #[command(flatten)]
    pub(crate) output: OutputArgs,

    /// How many times to run the conversion.
    #[arg(long, default_value_t = 3, value_name = "N", value_parser = super::common::at_least_one)]
    pub(crate) repeat: usize,

    /// Where to write the temporary outputs (default: the system temp directory). Use a
    /// directory on the disk you care about: writing is part of what is measured.
    #[arg(long, value_name = "DIR")]
    pub(crate) scratch: Option<std::path::PathBuf>,
}

#[derive(Debug, Default, Clone, serde::Serialize)]
struct Measurement {
    seconds: f64,
    mb_per_s: f64,
    rows_per_s: f64,
    rows: u64,
    /// Lines left out (`--on-error skip`); not kept, the outputs are deleted.
    rejected: u64,
    output_bytes: u64,
    stages: StageTimes,
}

#[derive(Debug, serde::Serialize)]
struct Report {
    input_bytes: u64,
    types: Vec<String>,
    threads: usize,
    runs: Vec<Measurement>,
    median_seconds: f64,
    median_mb_per_s: f64,
    median_rows_per_s: f64,
    peak_rss_bytes: Option<u64>,
}

pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    let plan = args.flatten.plan()?;
    let bytes = input_bytes(&plan);
    let mut opts = args.flatten.convert_options();
    opts.write = args.output.write_options()?;
    args.output.apply_spill(&mut opts);
    let threads = if opts.threads == 0 {
        rayon::current_num_threads()
    } else {
        opts.threads
    };
    let quiet = args.flatten.quiet;
    if !quiet {
        eprintln!(
            "bench: {} types, {:.1} MB, {threads} threads, {} runs",
            plan.groups.len(),
            mb(bytes),
            args.repeat
        );
    }
    let mut runs = Vec::new();
    for i in 0..args.repeat {
        let dir = match &args.scratch {
            Some(d) => tempfile::tempdir_in(d)?,
            None => tempfile::tempdir()?,
        };
        opts.out_dir = dir.path().to_path_buf();
        let start = std::time::Instant::now();
        let mut run = Measurement::default();
        let mut failed = None;
        convert_groups(
            &plan.groups,
            &opts,
            &flatfhir_core::NoProgress,
            |k, r| match r {
                Ok(r) => {
                    run.rows += r.rows;
                    run.rejected += r.rejected;
                    run.output_bytes += r.output_bytes;
                    let s = &mut run.stages;
                    s.read += r.stages.read;
                    s.flatten += r.stages.flatten;
                    s.widen += r.stages.widen;
                    s.encode += r.stages.encode;
                    s.write += r.stages.write;
                }
                Err(e) => {
                    failed.get_or_insert_with(|| format!("{}: {e}", plan.groups[k].resource_type));
                }
            },
        );
        if let Some(e) = failed {
            anyhow::bail!(e);
        }
        run.seconds = start.elapsed().as_secs_f64();
        run.mb_per_s = mb(bytes) / run.seconds;
        run.rows_per_s = run.rows as f64 / run.seconds;
        if run.rejected > 0 {
            eprintln!(
                "run {}: {} line(s) rejected and left out (bench keeps no outputs; see them with flatfhir schema --on-error skip)",
                i + 1,
                run.rejected
            );
        }
        if !quiet {
            let s = &run.stages;
            eprintln!(
                "run {}: {:.3} s, {:.1} MB/s, {:.0} rows/s | stages (CPU s): read {:.3}, flatten {:.3}, widen {:.3}, encode {:.3}, write {:.3}",
                i + 1,
                run.seconds,
                run.mb_per_s,
                run.rows_per_s,
                s.read,
                s.flatten,
                s.widen,
                s.encode,
                s.write
            );
        }
        runs.push(run);
    }
    // The median run by wall time; its throughput figures go with it.
    let mut by_time: Vec<&Measurement> = runs.iter().collect();
    by_time.sort_by(|a, b| a.seconds.total_cmp(&b.seconds));
    let mid = by_time[by_time.len() / 2].clone();
    let report = Report {
        input_bytes: bytes,
        types: plan
            .groups
            .iter()
            .map(|g| g.resource_type.clone())
            .collect(),
        threads,
        median_seconds: mid.seconds,
        median_mb_per_s: mid.mb_per_s,
        median_rows_per_s: mid.rows_per_s,
        peak_rss_bytes: peak_rss(),
        runs,
    };
    if args.flatten.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "median of {}: {:.3} s, {:.1} MB/s, {:.0} rows/s, peak RSS {}",
            report.runs.len(),
            report.median_seconds,
            report.median_mb_per_s,
            report.median_rows_per_s,
            report
                .peak_rss_bytes
                .map_or_else(|| "unknown".into(), |b| format!("{:.0} MB", mb(b)))
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Peak resident set size of this process (Linux: `VmHWM` in /proc/self/status).
fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}
