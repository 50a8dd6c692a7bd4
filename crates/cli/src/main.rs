//! The `flatfhir` binary: argument parsing, dispatch to one module per subcommand, and
//! error reporting with exit codes. The work itself lives in the library crates.

mod cmd;
mod log;

/// mimalloc, told to keep freed pages and to use 4 KiB pages (see [`tune_memory`]): faster
/// than glibc malloc on the same pipeline, most on wide types (docs/performance.md,
/// "Design choices").
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Sets how the process takes memory from the kernel; called first thing in `main`.
///
/// - mimalloc never purges freed memory. The working set is bounded by design (see
///   docs/architecture.md), so keeping it costs nothing and saves re-faulting it every batch.
/// - Transparent huge pages are off for the process (Linux), unless `MIMALLOC_ALLOW_THP` is
///   set. mimalloc asks for huge pages on all its memory, so every first touch made the
///   kernel clear 2 MiB, which raised peak RSS, and on a VM whose host reclaims free memory
///   (virtio-balloon page reporting) each huge fault also waits for the host, which made short
///   conversions slower depending on what ran before (docs/performance.md, "Design choices").
#[allow(unsafe_code)]
fn tune_memory() {
    /// `mi_option_purge_delay` in mimalloc's `mi_option_e` (v2 and v3): -1 means never purge.
    const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
    // SAFETY: mi_option_set stores an integer in mimalloc's option table; it has no
    // preconditions and every value is valid for this option.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) }
    #[cfg(target_os = "linux")]
    if std::env::var_os("MIMALLOC_ALLOW_THP").is_none() {
        // SAFETY: PR_SET_THP_DISABLE takes plain integers and only sets a flag on this
        // process's memory map; it cannot fail in a way that matters (huge pages stay on).
        unsafe {
            libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
        }
    }
}

use std::process::ExitCode;

use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser as _};
use clap::{CommandFactory as _, FromArgMatches as _, Parser, Subcommand, ValueEnum as _};

use cmd::common::FormatArg;

/// The command line: the derived one, with `bench --format` limited to the table formats
/// (`ndjson` and `csv` are for views, which `bench` does not run).
fn command() -> clap::Command {
    Cli::command().mut_subcommand("bench", |c| {
        c.mut_arg("format", |a| {
            a.value_parser(
                PossibleValuesParser::new([
                    PossibleValue::new("parquet").help("Apache Parquet"),
                    PossibleValue::new("arrow").help("Arrow IPC file"),
                ])
                .map(|s| FormatArg::from_str(&s, false).unwrap_or(FormatArg::Parquet)),
            )
        })
    })
}

/// Take FHIR data out of Bulk Data servers and make it analysis-ready.
#[derive(Debug, Parser)]
#[command(name = "flatfhir", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Flatten FHIR NDJSON files into one Parquet (or Arrow) table per resource type.
    Convert(cmd::convert::Args),
    /// Print the union schema per resource type: column, type, non-null count, first seen.
    Schema(cmd::schema::Args),
    /// Run a FHIR Bulk Data export into a directory (SMART Backend Services auth, resumable).
    Fetch(Box<cmd::fetch::Args>),
    /// Crawl FHIR searches (for servers without $export) into the layout `fetch` writes.
    Search(Box<cmd::search::Args>),
    /// Show the export job recorded in a directory.
    Status(Box<cmd::status::Args>),
    /// Delete the export recorded in a directory on the server.
    Cancel(Box<cmd::cancel::Args>),
    /// Fetch and convert in one run, flattening each type as soon as it is downloaded
    /// (`--demo` runs against a built-in server over generated sample data).
    Export(Box<cmd::export::Args>),
    /// Measure the convert pipeline on your data: MB/s, rows/s, peak memory, time per stage.
    Bench(cmd::bench::Args),
}

/// Exit status for command-line usage errors (sysexits' EX_USAGE); 2 means "lines rejected".
const EXIT_USAGE: u8 = 64;

/// `export --demo` runs its own server with its own key: server and credential options given
/// on the command line with it are a mistake (refused); the same settings from the
/// environment (`FLATFHIR_FHIR_URL`, ...) are meant for real runs and are ignored, with a note.
fn check_demo(m: &clap::ArgMatches) -> Result<(), clap::Error> {
    use clap::parser::ValueSource;
    let Some(("export", sub)) = m.subcommand() else {
        return Ok(());
    };
    if !sub.get_flag("demo") {
        return Ok(());
    }
    let conn = [
        ("fhir_url", "FLATFHIR_FHIR_URL"),
        ("client_id", "FLATFHIR_CLIENT_ID"),
        ("private_key", "FLATFHIR_PRIVATE_KEY"),
        ("kid", ""),
        ("alg", ""),
        ("token_url", ""),
        ("client_secret", "FLATFHIR_CLIENT_SECRET"),
        ("bearer", "FLATFHIR_BEARER_TOKEN"),
    ];
    for (id, env) in conn {
        match sub.value_source(id) {
            Some(ValueSource::CommandLine) => {
                let mut cli = command();
                cli.build();
                let mut export = cli
                    .find_subcommand("export")
                    .cloned()
                    .unwrap_or_else(command);
                return Err(export.error(
                    clap::error::ErrorKind::ArgumentConflict,
                    format!(
                        "--demo runs a built-in server with its own key; it cannot be used with --{}",
                        id.replace('_', "-")
                    ),
                ));
            }
            Some(ValueSource::EnvVariable) => {
                eprintln!(
                    "note: --demo ignores {env} (it runs a built-in server with its own key)"
                );
            }
            _ => {}
        }
    }
    Ok(())
}

impl Command {
    /// Whether the subcommand was given `--quiet`: informational log lines are then hidden
    /// (warnings never are).
    fn quiet(&self) -> bool {
        match self {
            Command::Convert(a) => a.flatten.quiet,
            Command::Schema(a) => a.flatten.quiet,
            Command::Bench(a) => a.flatten.quiet,
            Command::Fetch(a) => a.export.quiet,
            Command::Export(a) => a.export.quiet,
            Command::Search(a) => a.quiet,
            Command::Status(_) | Command::Cancel(_) => false,
        }
    }
}

fn main() -> ExitCode {
    tune_memory();
    let cli = match command()
        .try_get_matches()
        .and_then(|m| check_demo(&m).and_then(|()| Cli::from_arg_matches(&m)))
    {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_USAGE } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    log::install(cli.command.quiet());
    // Inputs and outputs may be object-store URLs (s3://, gs://, az://; see docs/scale-out.md).
    flatfhir_cloud::install();
    let result = match cli.command {
        Command::Convert(args) => {
            remove_unfinished_files_on_signal();
            cmd::convert::run(args)
        }
        Command::Schema(args) => cmd::schema::run(args),
        Command::Fetch(args) => cmd::fetch::run(*args),
        Command::Search(args) => cmd::search::run(*args),
        Command::Status(args) => cmd::status::run(*args),
        Command::Cancel(args) => cmd::cancel::run(*args),
        Command::Export(args) => cmd::export::run(*args),
        Command::Bench(args) => cmd::bench::run(args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            if is_broken_pipe(&err) {
                return ExitCode::SUCCESS;
            }
            eprintln!("error: {}", error_text(&err));
            if is_usage(&err) {
                eprintln!("\nFor more information, try '--help'.");
                ExitCode::from(EXIT_USAGE)
            } else {
                ExitCode::from(1)
            }
        }
    }
}

/// The error and its causes joined by ": ", each said once: a cause whose text its parent
/// already shows (the library errors put their source in their own message, and so does
/// `std::io::Error` wrapped twice) is left out, so "No such file or directory (os error 2)"
/// does not appear twice. Any registered secret that slipped into a server's message is
/// replaced by `[redacted]`.
pub(crate) fn error_text(err: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in err.chain() {
        let part = cause.to_string();
        if part.is_empty() || out.contains(&part) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&part);
    }
    flatfhir_fetch::scrub(&out).into_owned()
}

/// Errors that mean the command line was wrong: exit status 64, as for clap's own errors.
fn is_usage(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause.is::<cmd::common::UsageError>()
            || matches!(
                cause.downcast_ref::<flatfhir_fetch::Error>(),
                Some(flatfhir_fetch::Error::Usage(_))
            )
    })
}

/// SIGINT or SIGTERM during `convert`: remove every unfinished output file (the hidden
/// `.<name>.<random>.flatfhir.tmp` ones; no table is renamed into place after this), then exit
/// 128 + the signal (130, 143). A handler thread, not code in signal context.
fn remove_unfinished_files_on_signal() {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let Ok(mut signals) = signal_hook::iterator::Signals::new([SIGINT, SIGTERM]) else {
        return;
    };
    std::thread::spawn(move || {
        if let Some(signal) = signals.forever().next() {
            let removed = flatfhir_core::outfile::abandon_all();
            // Multipart uploads in flight (an object-store --out): aborted, so no object
            // appears.
            let aborted = flatfhir_cloud::abort_uploads();
            cmd::remote_out::remove_staging();
            // Resources unpacked from Bundles (temporary, hidden directories).
            flatfhir_core::remove_unpacked();
            let uploads = if aborted > 0 {
                format!(", aborted {aborted} upload(s)")
            } else {
                String::new()
            };
            eprintln!(
                "interrupted: removed {removed} unfinished output file(s){uploads}; finished tables are complete"
            );
            std::process::exit(128 + signal);
        }
    });
}

/// A closed stdout (`flatfhir schema ... | head`) is not a failure.
fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
