//! `flatfhir export`: `fetch` and `convert` in one run. Each resource type is converted as
//! soon as all its files are downloaded (the manifest being final), on a separate thread, so
//! downloading and flattening overlap. `--demo` runs the whole pipeline against the built-in
//! test server over generated sample data, with real SMART Backend Services auth.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex, mpsc};

use anyhow::Context as _;
use flatfhir_bulk_server::demo::{self, DemoKey};
use flatfhir_bulk_server::{Config, RegisteredClient, TestServer};
use flatfhir_core::{InputFile, NoProgress, TypeGroup, TypeReport, convert_group};
use flatfhir_fetch::{Connection, Credentials, Event, SigningKey};

use super::common::{ColumnArgs, OutputArgs};
use super::fetch::{ConnArgs, Display, ExportArgs, report};

/// Arguments of `flatfhir export`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Try it without a server: flatfhir export --demo --out demo-out\n\
Secrets can come from the environment: FLATFHIR_PRIVATE_KEY, FLATFHIR_CLIENT_SECRET, FLATFHIR_BEARER_TOKEN.\n\
The tables directory follows convert's rule: earlier tables are refused unless --overwrite (or --resume).\n\
Exit codes: 0 success; 1 failure (a download or a conversion; also a DIR refused); 3 converted, but the server reported \
error/fatal issues; 4 (--search) a query stopped at --max-pages/--max-resources; 130 interrupted (SIGINT), 143 (SIGTERM)."
)]
pub(crate) struct Args {
    #[command(flatten)]
    conn: ConnArgs,
    #[command(flatten)]
    pub(crate) export: ExportArgs,
    /// Crawl this FHIR search instead of running `$export` (repeatable), e.g.
    /// 'Observation?patient=123&_include=Observation:subject'; every type is converted once
    /// the crawl ends. See `flatfhir search`
    #[arg(
        long = "search",
        value_name = "QUERY",
        conflicts_with_all = ["system", "group", "types", "since", "until", "elements",
            "type_filters", "patients", "include_associated_data", "params", "post",
            "allow_partial_manifests", "delete_on_success", "max_wait"]
    )]
    search: Vec<String>,
    #[command(flatten)]
    crawl: super::search::CrawlArgs,
    /// Where the tables go (default: DIR/tables)
    #[arg(long, value_name = "DIR")]
    tables: Option<PathBuf>,
    #[command(flatten)]
    output: OutputArgs,
    #[command(flatten)]
    columns: ColumnArgs,
    /// Replace the tables of an earlier run in the tables directory (as `convert --overwrite`)
    #[arg(long)]
    overwrite: bool,
    /// Run against a built-in test server over generated sample data (no outside server needed;
    /// not with the server and credential options). It deletes only files an earlier demo run
    /// recorded in DIR/.flatfhir-demo.json
    #[arg(long)]
    demo: bool,
    /// Views instead of flattening: each downloaded type is run through the views of that
    /// resource type; types without a view are flattened whole (Parquet and Arrow).
    #[command(flatten)]
    views: super::views::ViewArgs,
    /// Patients in the generated sample data (with --demo)
    #[arg(
        long = "patients",
        id = "demo_patients",
        default_value_t = 50,
        value_name = "N",
        requires = "demo"
    )]
    demo_patients: usize,
}

/// A recorded URL for a message, without credentials or signed query values.
pub(crate) fn redacted(url: &str) -> String {
    url.parse::<url::Url>().map_or_else(
        |_| "an unreadable URL".to_string(),
        |u| flatfhir_fetch::RedactedUrl::new(u).to_string(),
    )
}

/// Exit code after SIGTERM (128 + 15).
const EXIT_TERMINATED: u8 = 143;

/// A resource type whose files are all downloaded, and those files.
type Ready = (String, Vec<PathBuf>);

/// Sends each completed type to the converter thread, and shows progress.
struct Pipeline {
    display: Arc<Display>,
    tx: Mutex<Option<mpsc::Sender<Ready>>>,
}

impl flatfhir_fetch::Observer for Pipeline {
    fn on_event(&self, e: &Event) {
        if let Event::TypeComplete {
            resource_type,
            files,
        } = e
            && let Some(tx) = self
                .tx
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .as_ref()
        {
            let _ = tx.send((resource_type.clone(), files.clone()));
        }
        flatfhir_fetch::Observer::on_event(self.display.as_ref(), e);
    }
}

#[derive(Debug, serde::Serialize)]
struct ExportSummary {
    #[serde(skip_serializing_if = "Option::is_none")]
    fetch: Option<flatfhir_fetch::Summary>,
    /// With `--search`: the crawl's summary.
    #[serde(skip_serializing_if = "Option::is_none")]
    search: Option<flatfhir_fetch::search::SearchSummary>,
    tables: Vec<TypeReport>,
    views: Vec<serde_json::Value>,
    failed_conversions: Vec<(String, String)>,
    /// Types downloaded but not converted (no view, and `--format csv|ndjson`).
    not_converted: Vec<String>,
    /// What happened to files already in the tables directory.
    tables_dir: super::outdir::Outcome,
}

/// What `export` runs: a Bulk Data export, or a search crawl (`--search`).
enum Job {
    Fetch(Box<flatfhir_fetch::Options>),
    Search(Box<flatfhir_fetch::search::SearchOptions>),
}

/// What it produced.
enum Crawled {
    Fetch(flatfhir_fetch::Summary),
    Search(flatfhir_fetch::search::SearchSummary),
}

/// Run the job. A search crawl's types are handed to the converter when the crawl ends (an
/// `_include` of a later page may still add to any type until then), and only when no query
/// failed: converting a crawl with a hole would make tables that look complete.
async fn run_job(job: Job, pipeline: Arc<Pipeline>, quiet: bool) -> anyhow::Result<Crawled> {
    match job {
        Job::Fetch(opts) => {
            let observer: Arc<dyn flatfhir_fetch::Observer> = pipeline;
            Ok(Crawled::Fetch(
                flatfhir_fetch::fetch(*opts, observer).await?,
            ))
        }
        Job::Search(opts) => {
            let observer: Arc<dyn flatfhir_fetch::search::SearchObserver> =
                Arc::new(super::search::Progress {
                    display: Arc::clone(&pipeline.display),
                    quiet,
                });
            let s = flatfhir_fetch::search::search(*opts, observer).await?;
            if s.failed.is_empty() {
                for (resource_type, files) in &s.outputs {
                    flatfhir_fetch::Observer::on_event(
                        pipeline.as_ref(),
                        &Event::TypeComplete {
                            resource_type: resource_type.clone(),
                            files: files.clone(),
                        },
                    );
                }
            } else {
                pipeline.display.println(
                    "not converted: queries failed, so the crawl is incomplete; finish it with --resume",
                );
            }
            Ok(Crawled::Search(s))
        }
    }
}

pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    let searching = !args.search.is_empty() || args.crawl.queries_file.is_some();
    let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let out = args.export.out.clone();
    let quiet = args.export.quiet;
    // The demo server lives as long as this function; its data in a temporary directory.
    let mut demo_server = None;
    let demo_data = tempfile::tempdir().context("creating a temporary directory")?;
    let tables = args.tables.clone().unwrap_or_else(|| out.join("tables"));
    let mut demo_dir = None;
    let conn = if args.demo {
        let (dir, cleared) = super::demo::DemoDir::begin(&out, &tables)?;
        if !quiet && !cleared.is_empty() {
            eprintln!(
                "demo: removed {} file(s) of the earlier demo run in {}",
                cleared.len(),
                out.display()
            );
        }
        demo_dir = Some(super::demo::RecordOnDrop::new(dir));
        let n = demo::generate(demo_data.path(), args.demo_patients, 42)
            .context("generating sample data")?;
        let key = DemoKey::generate();
        let mut cfg = Config::new(demo_data.path());
        cfg.clients = vec![RegisteredClient::with_jwks(
            DemoKey::CLIENT_ID,
            key.jwks.clone(),
        )];
        cfg.lines_per_file = 100;
        cfg.polls_before_ready = 2;
        cfg.retry_after_secs = 1;
        let server = rt
            .block_on(TestServer::start(cfg))
            .context("starting the demo server")?;
        if !quiet {
            eprintln!(
                "demo: {n} synthetic resources for {} patients, served at {} (SMART Backend Services, ES384)",
                args.demo_patients,
                server.base_url()
            );
        }
        let signing = SigningKey::from_text(
            &key.private_pem,
            std::path::Path::new("demo key"),
            Some(DemoKey::KID),
            None,
        )?;
        let mut conn = Connection::new(
            server.base_url().parse()?,
            Credentials::PrivateKey {
                client_id: DemoKey::CLIENT_ID.into(),
                key: signing,
            },
        );
        conn.timing.min_wait = std::time::Duration::from_millis(200);
        conn.timing.max_poll_wait = std::time::Duration::from_secs(2);
        demo_server = Some(server);
        conn
    } else if searching {
        let job = if args.export.resume {
            flatfhir_fetch::search::SearchJob::load(&out)?
        } else {
            None
        };
        args.conn.connection(job.as_ref())?
    } else {
        super::search::refuse_crawl_dir(&out)?;
        let job = if args.export.resume {
            flatfhir_fetch::JobState::load(&out)?
        } else {
            None
        };
        args.conn.connection(job.as_ref())?
    };
    let job = if searching {
        let queries = args.crawl.queries(&args.search, &conn.fhir_url)?;
        if queries.is_empty() && !args.export.resume {
            return Err(super::common::usage(
                "--queries FILE holds no query (give --search QUERY or queries in the file)",
            ));
        }
        Job::Search(Box::new(args.crawl.options(
            conn,
            &out,
            queries,
            args.export.resume,
            args.export.lenient,
        )))
    } else {
        Job::Fetch(Box::new(args.export.options(conn)?))
    };

    if !args.export.resume
        && !args.demo
        && let Some(job) = flatfhir_fetch::JobState::load(&out)?
    {
        // Said here, before the tables directory is checked, so that the hint is the one
        // that helps.
        anyhow::bail!(
            "{} already holds an export ({:?}, from {}); continue it with --resume, or choose another --out",
            out.display(),
            job.phase,
            redacted(&job.fhir_url)
        );
    }
    if searching
        && !args.export.resume
        && out.join(flatfhir_fetch::search::SEARCH_STATE_FILE).exists()
    {
        // Said before the tables directory is checked, as for an export above.
        anyhow::bail!(
            "{} already holds a search crawl; continue it with --resume, or choose another --out",
            out.display()
        );
    }
    let views = args.views.build()?;
    let (view_format, view_write) = super::views::output_format(&args.output)?;
    // Types without a view are flattened whole, which Parquet and Arrow can hold.
    let flatten_write = if views.is_empty() {
        // Without views, --format csv|ndjson is refused here.
        Some(args.output.write_options()?)
    } else {
        match view_format {
            flatfhir_view::Format::Parquet | flatfhir_view::Format::Arrow => {
                Some(args.output.write_options()?)
            }
            // Ndjson, Csv: views only.
            _ => None,
        }
    };
    let unviewed: Vec<&String> = args
        .export
        .types
        .iter()
        .filter(|t| !views.iter().any(|v| v.resource() == t.as_str()))
        .collect();
    if !views.is_empty() && !unviewed.is_empty() && !quiet {
        let list = unviewed
            .iter()
            .map(|t| t.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        if flatten_write.is_some() {
            eprintln!("no view for {list}: flattened whole");
        } else {
            eprintln!(
                "no view for {list}: downloaded but not converted (--format {} holds views only; \
                 give them a view, or use --format parquet or arrow to flatten them)",
                view_format.extension()
            );
        }
    }
    let will_write: Vec<String> = views
        .iter()
        .map(|v| flatfhir_view::output_file_name(v, view_format))
        .collect();
    let tables_dir = super::outdir::OutDir::prepare(
        &tables,
        &will_write,
        args.overwrite || args.export.resume,
        args.output.spill_dir.as_deref(),
        "--overwrite",
    )?;
    let mut convert_opts = args
        .columns
        .convert_options()
        .out_dir(tables)
        .write(flatten_write.clone().unwrap_or_default());
    args.output.apply_spill(&mut convert_opts);
    let convert_opts_dir = convert_opts.out_dir.clone();

    let (tx, rx) = mpsc::channel::<Ready>();
    let display = Display::new(quiet);
    let converter_display = Arc::clone(&display);
    let converter = std::thread::spawn(move || {
        let mut done = Vec::new();
        let mut view_reports = Vec::new();
        let mut failed = Vec::new();
        let mut not_converted = Vec::new();
        for (resource_type, files) in rx {
            let selected: Vec<flatfhir_view::View> = views
                .iter()
                .filter(|v| v.resource() == resource_type)
                .cloned()
                .collect();
            if !views.is_empty() && selected.is_empty() && flatten_write.is_none() {
                converter_display.println(&format!(
                    "{resource_type}: downloaded, not converted (no view; --format {} holds views only)",
                    view_format.extension()
                ));
                not_converted.push(resource_type);
                continue;
            }
            if !selected.is_empty() {
                let view_opts = flatfhir_view::RunOptions::default()
                    .format(view_format)
                    .write(view_write.clone())
                    .read(convert_opts.read.clone());
                match flatfhir_view::run_views_with(
                    &files,
                    &selected,
                    &convert_opts.out_dir,
                    &view_opts,
                ) {
                    Ok(r) => {
                        for v in r.views {
                            converter_display.println(&format!(
                                "view {}: {} rows -> {}",
                                v.view,
                                v.rows,
                                v.path.display()
                            ));
                            view_reports.push(v);
                        }
                    }
                    Err(e) => {
                        converter_display
                            .println(&format!("error in views of {resource_type}: {e}"));
                        failed.push((resource_type, e.to_string()));
                    }
                }
                continue;
            }
            let group = TypeGroup {
                resource_type: resource_type.clone(),
                files: files
                    .into_iter()
                    .map(|path| InputFile {
                        path,
                        typed_by_name: true,
                        reports_untyped: false,
                    })
                    .collect(),
            };
            match convert_group(&group, &convert_opts, &NoProgress) {
                Ok(r) => {
                    converter_display.println(&format!(
                        "converted {}: {} rows, {} columns -> {}",
                        r.resource_type,
                        r.rows,
                        r.columns,
                        r.output
                            .as_ref()
                            .map_or_else(|| "(no rows)".into(), |p| p.display().to_string())
                    ));
                    done.push(r);
                }
                Err(e) => {
                    converter_display.println(&format!("error converting {resource_type}: {e}"));
                    failed.push((resource_type, e.to_string()));
                }
            }
        }
        (done, view_reports, failed, not_converted)
    });
    let pipeline = Arc::new(Pipeline {
        display: Arc::clone(&display),
        tx: Mutex::new(Some(tx)),
    });
    let result = rt.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("listening for SIGTERM")?;
        anyhow::Ok(tokio::select! {
            r = run_job(job, Arc::clone(&pipeline), quiet) => Ok(r),
            _ = tokio::signal::ctrl_c() => Err(super::fetch::EXIT_INTERRUPTED),
            _ = term.recv() => Err(EXIT_TERMINATED),
        })
    })?;
    // The download is over (or interrupted); the converter finishes the types already handed
    // to it. A signal now stops it at once, leaving no unfinished file (and the demo's record).
    let demo_record = demo_dir.as_ref().map(super::demo::RecordOnDrop::dir);
    rt.spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut int), Ok(mut term)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) else {
            return;
        };
        let code = tokio::select! {
            _ = int.recv() => super::fetch::EXIT_INTERRUPTED,
            _ = term.recv() => EXIT_TERMINATED,
        };
        let removed = flatfhir_core::outfile::abandon_all();
        if let Some(d) = &demo_record {
            let _ = d.record();
        }
        eprintln!("interrupted: removed {removed} unfinished output file(s)");
        std::process::exit(i32::from(code));
    });
    // Close the channel so the converter finishes the types already handed to it.
    pipeline
        .tx
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .take();
    let (tables_done, view_reports, failed_conversions, not_converted) = converter
        .join()
        .map_err(|_| anyhow::anyhow!("the converter thread panicked"))?;
    display.finish();
    drop(demo_server);
    let mut written = super::convert::written_files(&tables_done);
    written.extend(view_reports.iter().map(|v| v.path.clone()));
    let complete = matches!(result, Ok(Ok(_)));
    let tables_outcome = tables_dir.finish(&written, complete);
    if let Some(d) = demo_dir.take() {
        d.record()?;
    }
    let tables_outcome = tables_outcome?;
    if !quiet && let Some(line) = tables_outcome.describe() {
        eprintln!("{}: {line}", convert_opts_dir.display());
    }
    let result = match result {
        Ok(r) => r,
        Err(code) => {
            eprintln!(
                "interrupted; {} is resumable: run the same command with --resume",
                out.display()
            );
            return Ok(ExitCode::from(code));
        }
    };
    let (fetch_summary, search_summary, code) = match result? {
        Crawled::Fetch(s) => {
            let code = report(&s, quiet, false);
            (Some(s), None, code)
        }
        Crawled::Search(s) => {
            let code = super::search::report(&s, quiet, false);
            (None, Some(s), code)
        }
    };
    let summary = ExportSummary {
        fetch: fetch_summary,
        search: search_summary,
        tables: tables_done,
        views: view_reports
            .iter()
            .map(|v| {
                serde_json::json!({
                    "view": v.view, "path": v.path, "resources": v.resources,
                    "rows": v.rows, "mismatches": v.mismatches, "input_bytes": v.input_bytes,
                })
            })
            .collect(),
        failed_conversions,
        not_converted,
        tables_dir: tables_outcome,
    };
    if args.export.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    }
    if !summary.failed_conversions.is_empty() {
        return Ok(ExitCode::from(1));
    }
    Ok(code)
}
