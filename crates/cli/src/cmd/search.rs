//! `flatfhir search`: crawl FHIR searches (for servers without `$export`) into the layout
//! `fetch` writes, so `convert`, `export` and the Python reader read it unchanged. The crawl
//! options shared with `export --search` live here ([`CrawlArgs`]); connection and auth
//! options are `fetch`'s ([`ConnArgs`]).
//!
//! Exit codes: 0 every query followed to its last page; 1 failure (a query failed: retry with
//! `--resume`; the server does not support a searched type or parameter; auth); 3 crawled,
//! but outcome entries report `error`/`fatal` issues; 4 a query stopped at `--max-pages` /
//! `--max-resources` (`--resume` without them continues); 64 usage error (a malformed query);
//! 130 interrupted (resume with `--resume`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use flatfhir_fetch::Connection;
use flatfhir_fetch::search::{
    NextOrigin, Query, QueryStatus, SEARCH_STATE_FILE, SearchEvent, SearchJob, SearchObserver,
    SearchOptions, SearchSummary,
};

use super::common::usage;
use super::fetch::{ConnArgs, Display, EXIT_INTERRUPTED, EXIT_MANIFEST_ERRORS};

/// Exit code when a query stopped at `--max-pages` or `--max-resources`.
pub(crate) const EXIT_CAPPED: u8 = 4;

/// `--next-origin`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub(crate) enum NextOriginArg {
    /// Refuse a next link to another origin (the query fails; nothing is sent there)
    Refuse,
    /// Send it to the FHIR server's origin instead (path and query kept)
    Rewrite,
}

/// Crawl options shared by `search` and `export --search`.
#[derive(Debug, clap::Args)]
pub(crate) struct CrawlArgs {
    /// A file of queries, one a line (blank lines and lines starting with # are skipped)
    #[arg(long = "queries", value_name = "FILE")]
    pub(crate) queries_file: Option<PathBuf>,
    /// Page size to ask for (`_count`) where a query sets none
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    count: Option<u32>,
    /// Stop each query after N pages (exit 4; `--resume` without it continues)
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    max_pages: Option<u64>,
    /// Stop each query after N matching resources; `_include`d ones come in addition (exit 4)
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    max_resources: Option<u64>,
    /// Search even when the server's CapabilityStatement does not list a type or parameter
    #[arg(long)]
    force: bool,
    /// A next link to another origin than the FHIR server: refuse (the token goes only to the
    /// FHIR server), or rewrite it to the FHIR server's origin
    #[arg(long, value_enum, default_value = "refuse", value_name = "POLICY")]
    next_origin: NextOriginArg,
}

impl CrawlArgs {
    /// The queries given on the command line and in `--queries`, each checked (a malformed
    /// one is a usage error: nothing is sent).
    pub(crate) fn queries(&self, given: &[String], base: &url::Url) -> anyhow::Result<Vec<String>> {
        let mut all: Vec<String> = given.to_vec();
        if let Some(path) = &self.queries_file {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("--queries {}", path.display()))?;
            all.extend(
                text.lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty() && !l.starts_with('#'))
                    .map(str::to_owned),
            );
        }
        for q in &all {
            Query::parse(q, base).map_err(|why| usage(format!("query {q:?}: {why}")))?;
        }
        Ok(all)
    }

    /// Library options.
    pub(crate) fn options(
        &self,
        conn: Connection,
        out: &Path,
        queries: Vec<String>,
        resume: bool,
        lenient: bool,
    ) -> SearchOptions {
        let mut o = SearchOptions::new(conn, out, queries);
        o.count = self.count;
        o.max_pages = self.max_pages;
        o.max_resources = self.max_resources;
        o.force = self.force;
        o.resume = resume;
        o.lenient = lenient;
        o.next_origin = match self.next_origin {
            NextOriginArg::Refuse => NextOrigin::Refuse,
            NextOriginArg::Rewrite => NextOrigin::Rewrite,
        };
        o
    }
}

/// Arguments of `flatfhir search`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Example: flatfhir search --fhir-url URL 'Observation?patient=123&_include=Observation:subject' --out DIR\n\
Queries are Type?params, ?_type=A,B&params, or a URL under --fhir-url. Connection and auth options are fetch's.\n\
Exit codes: 0 every query crawled to its last page; 1 failure (a query failed: retry with --resume; an unsupported \
type or parameter; auth); 3 crawled, but outcome entries report error/fatal issues; 4 stopped at --max-pages or \
--max-resources; 64 usage error; 130 interrupted (resume with --resume)."
)]
pub(crate) struct Args {
    #[command(flatten)]
    conn: ConnArgs,
    /// Search queries, e.g. 'Observation?patient=123&_include=Observation:subject'
    #[arg(value_name = "QUERY")]
    queries: Vec<String>,
    #[command(flatten)]
    crawl: CrawlArgs,
    /// Output directory
    #[arg(long, short, value_name = "DIR")]
    out: PathBuf,
    /// Continue the crawl recorded in DIR (the queries may be left out)
    #[arg(long)]
    resume: bool,
    /// Ask the server to ignore parameters it does not know (`Prefer: handling=lenient`)
    #[arg(long)]
    lenient: bool,
    /// No progress output
    #[arg(long, short)]
    pub(crate) quiet: bool,
    /// Print a JSON summary on stdout
    #[arg(long)]
    json: bool,
}

/// Progress lines and the `$export` hint.
pub(crate) struct Progress {
    pub(crate) display: Arc<Display>,
    pub(crate) quiet: bool,
}

impl SearchObserver for Progress {
    fn on_event(&self, e: &SearchEvent) {
        match e {
            SearchEvent::Capability {
                export_offered: Some(true),
            } if !self.quiet => self.display.println(
                "note: this server offers Bulk Data $export; `flatfhir fetch` gets whole resource \
                 types faster than paging through search",
            ),
            SearchEvent::Resumed {
                pages,
                queries_done,
            } => self.display.println(&format!(
                "resuming the crawl: {pages} page(s) written, {queries_done} query(ies) done"
            )),
            SearchEvent::Page {
                query,
                page,
                matches,
                included,
                duplicates,
            } => self.display.line(&format!(
                "{query}: page {page}: {matches} matches, {included} included, {duplicates} duplicates left out"
            )),
            SearchEvent::Retrying { what, wait } => self.display.println(&format!(
                "retrying in {:.1}s: {what}",
                wait.as_secs_f64()
            )),
            SearchEvent::QueryEnded {
                query,
                status: QueryStatus::Failed { reason },
            } => self.display.println(&format!("failed: {query}: {reason}")),
            SearchEvent::Warning { message } => {
                self.display.println(&format!("warning: {message}"));
            }
            _ => {}
        }
    }
}

/// Refuse a directory that holds a search crawl (for `fetch` and `export` without `--search`).
pub(crate) fn refuse_crawl_dir(out: &Path) -> anyhow::Result<()> {
    if out.join(SEARCH_STATE_FILE).exists() {
        anyhow::bail!(
            "{} holds a search crawl ({SEARCH_STATE_FILE}); continue it with `flatfhir search --resume`, \
             or choose another --out",
            out.display()
        );
    }
    Ok(())
}

pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    let job = if args.resume {
        SearchJob::load(&args.out)?
    } else {
        None
    };
    let conn = args.conn.connection(job.as_ref())?;
    let queries = args.crawl.queries(&args.queries, &conn.fhir_url)?;
    if queries.is_empty() && !args.resume {
        return Err(usage(
            "give at least one query (e.g. 'Observation?patient=123') or --queries FILE",
        ));
    }
    let opts = args
        .crawl
        .options(conn, &args.out, queries, args.resume, args.lenient);
    let display = Display::new(args.quiet);
    let observer: Arc<dyn SearchObserver> = Arc::new(Progress {
        display: Arc::clone(&display),
        quiet: args.quiet,
    });
    let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let result = rt.block_on(async {
        tokio::select! {
            r = flatfhir_fetch::search::search(opts, observer) => Some(r),
            _ = tokio::signal::ctrl_c() => None,
        }
    });
    display.finish();
    let Some(result) = result else {
        eprintln!(
            "interrupted; {} is resumable: run the same command with --resume",
            args.out.display()
        );
        return Ok(ExitCode::from(EXIT_INTERRUPTED));
    };
    let summary = result?;
    Ok(report(&summary, args.quiet, args.json))
}

/// Print the summary (stderr, or JSON on stdout) and choose the exit code.
pub(crate) fn report(s: &SearchSummary, quiet: bool, json: bool) -> ExitCode {
    if json {
        println!("{}", serde_json::to_string_pretty(s).unwrap_or_default());
    }
    if !quiet {
        eprintln!(
            "{} page(s), {} files, {} resources ({} included) in {:.1}s; {} duplicate entries left out",
            s.pages, s.files, s.resources, s.included, s.seconds, s.duplicates
        );
        for (t, n) in &s.types {
            eprintln!("  {t}: {n}");
        }
    }
    for w in &s.warnings {
        eprintln!("warning: {w}");
    }
    if !s.issues.is_empty() {
        eprintln!(
            "the server reported {} issue(s) in outcome entries (in error/):",
            s.issues.len()
        );
        for i in &s.issues {
            eprintln!("  {} {}: {}", i.severity, i.code, i.text);
        }
    }
    for (q, why) in &s.failed {
        eprintln!("failed: {q}: {why}");
    }
    let capped: Vec<&str> = s
        .queries
        .iter()
        .filter(|q| q.status == QueryStatus::Capped)
        .map(|q| q.query.as_str())
        .collect();
    if !capped.is_empty() {
        eprintln!(
            "capped: {} stopped at --max-pages/--max-resources with pages left; the output is \
             the first part of the results (--resume without the caps continues)",
            capped.join(", ")
        );
    }
    if !s.failed.is_empty() {
        eprintln!(
            "{} query(ies) failed; retry them with --resume",
            s.failed.len()
        );
        ExitCode::from(1)
    } else if s.has_error_issues() {
        ExitCode::from(EXIT_MANIFEST_ERRORS)
    } else if s.capped {
        ExitCode::from(EXIT_CAPPED)
    } else {
        ExitCode::SUCCESS
    }
}

/// `flatfhir status` on a crawl's directory: each query's state, pages and next URL.
pub(crate) fn show_state(job: &SearchJob, json: bool) -> anyhow::Result<ExitCode> {
    let redact = |u: &str| {
        u.parse::<url::Url>().map_or_else(
            |_| u.to_owned(),
            |u| flatfhir_fetch::RedactedUrl::new(u).to_string(),
        )
    };
    if json {
        let v = serde_json::json!({
            "kind": "search", "fhirUrl": redact(&job.fhir_url), "started": job.started,
            "finished": job.finished,
            "queries": job.queries.iter().map(|q| serde_json::json!({
                "query": q.query, "status": q.status, "pages": q.pages, "matches": q.matches,
                "included": q.included, "outcomes": q.outcomes, "duplicates": q.duplicates,
                "next": q.next.as_deref().map(redact),
            })).collect::<Vec<_>>(),
            "files": job.files.iter().map(|f| serde_json::json!({
                "path": f.path, "resources": f.lines, "published": f.published,
            })).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "search crawl of {} started {}{}",
        redact(&job.fhir_url),
        job.started,
        if job.finished {
            ", finished"
        } else {
            ", not finished (continue with --resume)"
        }
    );
    for q in &job.queries {
        let state = match &q.status {
            QueryStatus::Running => "running".to_owned(),
            QueryStatus::Done => "done".to_owned(),
            QueryStatus::Capped => "capped".to_owned(),
            QueryStatus::Failed { reason } => format!("failed: {reason}"),
        };
        println!(
            "  {}: {state}; {} page(s), {} matches, {} included, {} duplicates{}",
            q.query,
            q.pages,
            q.matches,
            q.included,
            q.duplicates,
            q.next
                .as_deref()
                .map_or_else(String::new, |n| format!("; next {}", redact(n)))
        );
    }
    let resources: u64 = job
        .files
        .iter()
        .filter(|f| f.item == flatfhir_fetch::search::Item::Output)
        .map(|f| f.lines)
        .sum();
    println!("files: {}; {resources} resources", job.files.len());
    Ok(ExitCode::SUCCESS)
}
