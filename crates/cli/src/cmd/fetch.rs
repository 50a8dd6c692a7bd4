//! `flatfhir fetch`: run a Bulk Data export into a directory, with a live display on a TTY,
//! plain progress lines otherwise, and a `--json` summary. Shared connection flags for
//! `status` and `cancel` live here too.
//!
//! Exit codes: 0 success; 1 failure (including files that could not be downloaded, `--resume`
//! of a cancelled export, and `cancel` of an export the server no longer has); 3 everything
//! downloaded but the server's error files report `error`/`fatal` issues; 130 interrupted
//! (DIR stays resumable).

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;

use super::common::usage;
use flatfhir_fetch::{
    Connection, Credentials, Event, JobState, KickoffParams, Level, Options, ParamStyle, Secret,
    SigningKey, Summary,
};

/// Exit code when the export completed but the manifest's error files hold error/fatal issues.
pub(crate) const EXIT_MANIFEST_ERRORS: u8 = 3;
/// Exit code after Ctrl-C.
pub(crate) const EXIT_INTERRUPTED: u8 = 130;

/// How to reach and authenticate with the server.
///
/// The secret options take values that start with `-` (`-----BEGIN PRIVATE KEY-----`): clap
/// would otherwise call such a value an unexpected argument and print it whole.
#[derive(Debug, clap::Args)]
pub(crate) struct ConnArgs {
    /// FHIR base URL (the server's base, where `metadata` lives) [env: FLATFHIR_FHIR_URL]
    #[arg(long, env = "FLATFHIR_FHIR_URL", hide_env = true, value_name = "URL")]
    fhir_url: Option<url::Url>,
    /// Client id registered with the server [env: FLATFHIR_CLIENT_ID]
    #[arg(long, env = "FLATFHIR_CLIENT_ID", hide_env = true, value_name = "ID")]
    client_id: Option<String>,
    /// Private key for SMART Backend Services: PEM (PKCS#8 RSA/EC or PKCS#1 RSA; needs --kid)
    /// or JWK/JWKS file. The env var may hold a path or the key itself [env: FLATFHIR_PRIVATE_KEY]
    #[arg(
        long,
        env = "FLATFHIR_PRIVATE_KEY",
        hide_env = true,
        value_name = "FILE",
        value_parser = hidden_arg,
        allow_hyphen_values = true
    )]
    private_key: Option<Hidden>,
    /// Key id (`kid`) registered with the server; picks the key from a JWKS
    #[arg(long, value_name = "KID")]
    kid: Option<String>,
    /// Signing algorithm (default from the key: RS384 or ES384; also RS256, RS512, PS256, PS384, PS512, ES256)
    #[arg(long, value_name = "ALG")]
    alg: Option<String>,
    /// OAuth scope
    #[arg(long, default_value = "system/*.read", value_name = "SCOPE")]
    scope: String,
    /// Token endpoint (default: discovered from .well-known/smart-configuration)
    #[arg(long, value_name = "URL")]
    token_url: Option<url::Url>,
    /// Client secret (client_secret_basic) [env: FLATFHIR_CLIENT_SECRET]
    #[arg(
        long,
        env = "FLATFHIR_CLIENT_SECRET",
        hide_env = true,
        value_name = "SECRET",
        value_parser = secret_arg,
        allow_hyphen_values = true
    )]
    client_secret: Option<Secret>,
    /// Send the client secret in the form body (client_secret_post) instead of a Basic header
    #[arg(long)]
    client_secret_post: bool,
    /// A ready-made access token [env: FLATFHIR_BEARER_TOKEN]
    #[arg(
        long,
        env = "FLATFHIR_BEARER_TOKEN",
        hide_env = true,
        value_name = "TOKEN",
        value_parser = secret_arg,
        allow_hyphen_values = true
    )]
    bearer: Option<Secret>,
    /// Extra CA certificates (PEM) to trust; TLS verification is always on
    #[arg(long, value_name = "FILE")]
    ca_cert: Option<PathBuf>,
    /// Extra request header, e.g. `Epic-Client-ID: abc` (repeatable)
    #[arg(long = "header", value_name = "NAME:VALUE")]
    headers: Vec<String>,
    /// Shortest wait between polls and retries
    #[arg(long, default_value = "1s", value_parser = parse_duration, value_name = "DURATION")]
    min_wait: Duration,
    /// Longest single wait: a Retry-After of hours (or an epoch number) is clamped to this
    #[arg(long, default_value = "2m", value_parser = parse_duration, value_name = "DURATION")]
    max_poll_wait: Duration,
    /// Retries per request for 429, 5xx and dropped connections
    #[arg(long, default_value_t = 8, value_name = "N")]
    retries: u32,
}

/// A secret option's value: never shown by `Debug` or in a message (see [`Secret`]).
fn secret_arg(s: &str) -> Result<Secret, std::convert::Infallible> {
    Ok(Secret::new(s))
}

/// `--private-key`'s value, which is a path or the key itself: hidden from `Debug` like a
/// secret, but not scrubbed from messages (a path is shown when a file cannot be read).
#[derive(Clone)]
pub(crate) struct Hidden(String);

impl std::fmt::Debug for Hidden {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

fn hidden_arg(s: &str) -> Result<Hidden, std::convert::Infallible> {
    Ok(Hidden(s.to_owned()))
}

/// `--since` / `--until`: a FHIR `instant` (`2024-01-31T00:00:00Z`, with seconds and a time
/// zone; fractions allowed), checked here so that a typo fails at once instead of at the
/// server, or worse, being ignored by a lenient one.
pub(crate) fn parse_instant(s: &str) -> Result<String, String> {
    let t = s.trim();
    let hint = "a FHIR instant such as 2024-01-31T00:00:00Z or 2024-01-31T08:30:00+01:00 \
                (date, time with seconds, and a time zone)";
    // FHIR's pattern: YYYY-MM-DDThh:mm:ss(.s+)?(Z|+hh:mm|-hh:mm), upper-case T and Z.
    let shape = t.len() >= 20
        && t.as_bytes()[10] == b'T'
        && !t.contains('t')
        && !t.contains('z')
        && (t.ends_with('Z') || matches!(t.as_bytes()[t.len() - 6], b'+' | b'-'));
    let parsed = time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339);
    if !shape || parsed.is_err() {
        let date_only = t.len() == 10
            && time::Date::parse(t, time::macros::format_description!("[year]-[month]-[day]"))
                .is_ok();
        return Err(if date_only {
            format!("not {hint}; for the start of that day in UTC use {t}T00:00:00Z")
        } else {
            format!("not {hint}")
        });
    }
    Ok(t.to_owned())
}

/// The longest duration a flag takes: a year. Longer waits are surely a typo, and keeping
/// every duration this small means no deadline computed from one (`now + wait`) can overflow.
const MAX_DURATION: Duration = Duration::from_secs(366 * 24 * 3600);

/// Parse `500ms`, `2s`, `5m`, `1h`, or a bare number of seconds (decimals allowed, e.g.
/// `1.5h`), up to [`MAX_DURATION`]. Any other input is an error, never a panic.
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .map_or((s, "s"), |i| (&s[..i], &s[i..]));
    let n: f64 = num
        .parse()
        .map_err(|_| format!("not a duration: {s} (e.g. 500ms, 30s, 5m, 2h)"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("unknown unit in {s} (ms, s, m, h)")),
    };
    // `num` holds only digits and dots, so `secs` is finite or +inf, never negative or NaN.
    match Duration::try_from_secs_f64(secs) {
        Ok(d) if d <= MAX_DURATION => Ok(d),
        _ => Err(format!(
            "duration {s} is too long (at most 366 days, 8784h)"
        )),
    }
}

/// The FHIR URL and non-secret auth settings a directory recorded: an export's job state or
/// a search crawl's state, so `--resume`, `status` and `cancel` need no connection flags.
pub(crate) trait Recorded {
    /// FHIR base URL.
    fn fhir_url(&self) -> &str;
    /// Client id.
    fn client_id(&self) -> Option<&String>;
    /// Key id.
    fn kid(&self) -> Option<&String>;
    /// Private key path.
    fn private_key_path(&self) -> Option<&PathBuf>;
    /// Token endpoint.
    fn token_url(&self) -> Option<&str>;
}

impl Recorded for JobState {
    fn fhir_url(&self) -> &str {
        &self.fhir_url
    }
    fn client_id(&self) -> Option<&String> {
        self.client_id.as_ref()
    }
    fn kid(&self) -> Option<&String> {
        self.kid.as_ref()
    }
    fn private_key_path(&self) -> Option<&PathBuf> {
        self.private_key_path.as_ref()
    }
    fn token_url(&self) -> Option<&str> {
        self.token_url.as_deref()
    }
}

impl Recorded for flatfhir_fetch::search::SearchJob {
    fn fhir_url(&self) -> &str {
        &self.fhir_url
    }
    fn client_id(&self) -> Option<&String> {
        self.client_id.as_ref()
    }
    fn kid(&self) -> Option<&String> {
        self.kid.as_ref()
    }
    fn private_key_path(&self) -> Option<&PathBuf> {
        self.private_key_path.as_ref()
    }
    fn token_url(&self) -> Option<&str> {
        self.token_url.as_deref()
    }
}

impl ConnArgs {
    /// Build a connection; `job` supplies the FHIR URL and non-secret auth settings recorded
    /// at kick-off when the flags leave them out.
    pub(crate) fn connection<R: Recorded>(&self, job: Option<&R>) -> anyhow::Result<Connection> {
        let fhir_url = match (&self.fhir_url, job) {
            (Some(u), _) => u.clone(),
            (None, Some(j)) => j.fhir_url().parse().context("job state: FHIR URL")?,
            (None, None) => {
                return Err(usage(
                    "--fhir-url is required (or FLATFHIR_FHIR_URL): the server's FHIR base URL",
                ));
            }
        };
        let client_id = self
            .client_id
            .clone()
            .or_else(|| job.and_then(|j| j.client_id().cloned()));
        let kid = self
            .kid
            .clone()
            .or_else(|| job.and_then(|j| j.kid().cloned()));
        let key_source =
            self.private_key.as_ref().map(|h| h.0.clone()).or_else(|| {
                job.and_then(|j| j.private_key_path().map(|p| p.display().to_string()))
            });
        let alg = self
            .alg
            .as_deref()
            .map(flatfhir_fetch::parse_alg)
            .transpose()?;
        let mut key_path = None;
        let credentials = if let Some(token) = &self.bearer {
            Credentials::Bearer(token.clone())
        } else if let Some(src) = &key_source {
            let client_id = client_id.ok_or_else(|| {
                usage("--client-id is required with --private-key (or FLATFHIR_CLIENT_ID)")
            })?;
            let (key, path) = SigningKey::from_source(
                src,
                "--private-key / FLATFHIR_PRIVATE_KEY",
                kid.as_deref(),
                alg,
            )?;
            key_path = path.map(|p| std::path::absolute(&p).unwrap_or(p));
            Credentials::PrivateKey { client_id, key }
        } else if let Some(secret) = &self.client_secret {
            let client_id = client_id.ok_or_else(|| {
                usage("--client-id is required with --client-secret (or FLATFHIR_CLIENT_ID)")
            })?;
            Credentials::ClientSecret {
                client_id,
                secret: secret.clone(),
                form_post: self.client_secret_post,
            }
        } else {
            Credentials::None
        };
        let mut conn = Connection::new(fhir_url, credentials);
        conn.scope.clone_from(&self.scope);
        conn.token_url = self
            .token_url
            .clone()
            .or_else(|| job.and_then(|j| j.token_url()).and_then(|u| u.parse().ok()));
        conn.ca_cert.clone_from(&self.ca_cert);
        conn.private_key_path = key_path;
        for h in &self.headers {
            // The value may be a credential (an API key header): never echo it.
            let (k, v) = h.split_once(':').ok_or_else(|| {
                usage(format!(
                    "--header: expected NAME:VALUE, got {} characters without a colon",
                    h.len()
                ))
            })?;
            conn.headers
                .push((k.trim().to_owned(), v.trim().to_owned()));
        }
        conn.timing.min_wait = self.min_wait;
        conn.timing.max_poll_wait = self.max_poll_wait;
        conn.timing.retries = self.retries;
        Ok(conn)
    }
}

/// GET parameter style.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub(crate) enum Style {
    /// `_type=A,B`
    Comma,
    /// `_type=A&_type=B`
    Repeat,
}

/// Kick-off and download options shared by `fetch` and `export`.
#[derive(Debug, clap::Args)]
pub(crate) struct ExportArgs {
    /// Output directory
    #[arg(long, short, value_name = "DIR")]
    pub(crate) out: PathBuf,
    /// System-level export (`/$export`) instead of Patient-level
    #[arg(long, conflicts_with = "group")]
    system: bool,
    /// Group-level export (`Group/ID/$export`)
    #[arg(long, value_name = "ID")]
    group: Option<String>,
    /// Only these resource types (`_type`), comma-separated
    #[arg(
        long,
        visible_alias = "type",
        value_delimiter = ',',
        value_name = "TYPE,..."
    )]
    pub(crate) types: Vec<String>,
    /// Only resources changed since this FHIR instant (`_since`), e.g. 2024-01-31T00:00:00Z
    #[arg(long, value_name = "INSTANT", value_parser = parse_instant)]
    since: Option<String>,
    /// Only resources changed before this FHIR instant (`_until`, STU3)
    #[arg(long, value_name = "INSTANT", value_parser = parse_instant)]
    until: Option<String>,
    /// Elements to include (`_elements`), comma-separated
    #[arg(long, value_delimiter = ',', value_name = "ELEMENT,...")]
    elements: Vec<String>,
    /// A `_typeFilter` search, e.g. `Observation?category=laboratory` (repeatable)
    #[arg(long = "type-filter", value_name = "QUERY")]
    type_filters: Vec<String>,
    /// Restrict to a patient reference, e.g. `Patient/123` (repeatable; implies --post)
    #[arg(long = "patient", value_name = "REF")]
    patients: Vec<String>,
    /// `includeAssociatedData` values, comma-separated
    #[arg(long, value_delimiter = ',', value_name = "VALUE,...")]
    include_associated_data: Vec<String>,
    /// `_outputFormat`
    #[arg(long, default_value = "application/fhir+ndjson", value_name = "MIME")]
    output_format: String,
    /// Any other kick-off parameter, `k=v` (repeatable)
    #[arg(long = "param", value_name = "K=V")]
    params: Vec<String>,
    /// Kick off with POST and a Parameters body
    #[arg(long)]
    post: bool,
    /// List style for GET kick-off
    #[arg(long, value_enum, default_value = "comma", value_name = "STYLE")]
    param_style: Style,
    /// Ask the server to ignore unsupported parameters (`Prefer: handling=lenient`)
    #[arg(long)]
    pub(crate) lenient: bool,
    /// Ask for manifest pages while the export runs (STU3 `allowPartialManifests`)
    #[arg(long)]
    allow_partial_manifests: bool,
    /// Concurrent downloads
    #[arg(long, default_value_t = 4, value_name = "N", value_parser = super::common::at_least_one)]
    parallel: usize,
    /// Give up waiting for the export after this long (default: wait as long as it takes)
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    max_wait: Option<Duration>,
    /// Continue the export recorded in DIR: keep polling, skip complete files, resume partial ones
    #[arg(long)]
    pub(crate) resume: bool,
    /// DELETE the export on the server once every file is downloaded
    #[arg(long)]
    delete_on_success: bool,
    /// Longest NDJSON line accepted, in bytes
    #[arg(long, default_value_t = flatfhir_fetch::DEFAULT_MAX_LINE_BYTES, value_name = "BYTES")]
    max_line_bytes: usize,
    /// No progress output
    #[arg(long, short)]
    pub(crate) quiet: bool,
    /// Print a JSON summary on stdout
    #[arg(long)]
    pub(crate) json: bool,
}

impl ExportArgs {
    pub(crate) fn options(&self, conn: Connection) -> anyhow::Result<Options> {
        let mut k = KickoffParams::default();
        k.level = match (&self.group, self.system) {
            (Some(g), _) => Level::Group(g.clone()),
            (None, true) => Level::System,
            (None, false) => Level::Patient,
        };
        k.types.clone_from(&self.types);
        k.since.clone_from(&self.since);
        k.until.clone_from(&self.until);
        k.elements.clone_from(&self.elements);
        k.type_filters.clone_from(&self.type_filters);
        k.patients.clone_from(&self.patients);
        k.include_associated_data
            .clone_from(&self.include_associated_data);
        k.output_format.clone_from(&self.output_format);
        for p in &self.params {
            let (key, v) = p
                .split_once('=')
                .ok_or_else(|| usage(format!("--param {p:?}: expected K=V")))?;
            k.extra.push((key.to_owned(), v.to_owned()));
        }
        k.style = match (self.post, self.param_style) {
            (true, _) => ParamStyle::Post,
            (false, Style::Comma) => ParamStyle::CommaGet,
            (false, Style::Repeat) => ParamStyle::RepeatGet,
        };
        k.lenient = self.lenient;
        k.allow_partial_manifests = self.allow_partial_manifests;
        let mut conn = conn;
        conn.timing.give_up_after = self.max_wait;
        let mut o = Options::new(conn, &self.out);
        o.kickoff = k;
        o.parallel = self.parallel;
        o.resume = self.resume;
        o.delete_on_success = self.delete_on_success;
        o.max_line_bytes = self.max_line_bytes;
        Ok(o)
    }
}

/// Arguments of `flatfhir fetch`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Secrets can come from the environment instead of the command line: \
FLATFHIR_PRIVATE_KEY, FLATFHIR_CLIENT_SECRET, FLATFHIR_BEARER_TOKEN (also FLATFHIR_FHIR_URL, FLATFHIR_CLIENT_ID).\n\
Exit codes: 0 success; 1 failure (files failed: retry with --resume; or the export was cancelled); 3 downloaded, but the server reported error/fatal issues; 64 usage error; 130 interrupted (resume with --resume)."
)]
pub(crate) struct Args {
    #[command(flatten)]
    pub(crate) conn: ConnArgs,
    #[command(flatten)]
    pub(crate) export: ExportArgs,
}

pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    let job = if args.export.resume {
        JobState::load(&args.export.out)?
    } else {
        None
    };
    super::search::refuse_crawl_dir(&args.export.out)?;
    let conn = args.conn.connection(job.as_ref())?;
    let opts = args.export.options(conn)?;
    let display = Display::new(args.export.quiet);
    let observer: Arc<dyn flatfhir_fetch::Observer> = display.clone();
    let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let out = args.export.out.clone();
    let result = rt.block_on(async {
        tokio::select! {
            r = flatfhir_fetch::fetch(opts, observer) => Some(r),
            _ = tokio::signal::ctrl_c() => None,
        }
    });
    display.finish();
    let Some(result) = result else {
        eprintln!(
            "interrupted; {} is resumable: run the same command with --resume",
            out.display()
        );
        return Ok(ExitCode::from(EXIT_INTERRUPTED));
    };
    let summary = result?;
    Ok(report(&summary, args.export.quiet, args.export.json))
}

/// Print the summary (stderr, or JSON on stdout) and choose the exit code.
pub(crate) fn report(s: &Summary, quiet: bool, json: bool) -> ExitCode {
    if json {
        println!("{}", serde_json::to_string_pretty(s).unwrap_or_default());
    }
    if !quiet {
        // Only a complete export may advise a --since: after failures it would skip them.
        eprintln!(
            "{} files, {} resources, {} bytes in {:.1}s{}",
            s.files,
            s.resources,
            s.bytes,
            s.seconds,
            s.transaction_time
                .as_deref()
                .filter(|_| s.complete())
                .map_or_else(String::new, |t| format!(
                    "; transactionTime {t} (use as --since next time)"
                ))
        );
        for (t, n) in &s.types {
            eprintln!("  {t}: {n}");
        }
    }
    for (path, why) in &s.failed {
        eprintln!("failed: {path}: {why}");
    }
    if !s.issues.is_empty() {
        eprintln!(
            "the server reported {} issue(s) in its error files:",
            s.issues.len()
        );
        for i in &s.issues {
            eprintln!("  {} {} ({}): {}", i.severity, i.code, i.file, i.text);
        }
    }
    if !s.failed.is_empty() {
        eprintln!(
            "{} file(s) failed; retry them with --resume",
            s.failed.len()
        );
        ExitCode::from(1)
    } else if s.has_error_issues() {
        ExitCode::from(EXIT_MANIFEST_ERRORS)
    } else {
        ExitCode::SUCCESS
    }
}

/// Progress: indicatif on a TTY, plain lines otherwise, nothing with `--quiet`.
#[derive(Debug)]
pub(crate) struct Display {
    bar: Option<indicatif::ProgressBar>,
    plain: bool,
    state: Mutex<(usize, usize)>,
}

impl Display {
    pub(crate) fn new(quiet: bool) -> Arc<Self> {
        let tty = std::io::stderr().is_terminal();
        let bar = (!quiet && tty).then(|| {
            let b = indicatif::ProgressBar::new_spinner();
            b.set_style(
                indicatif::ProgressStyle::with_template(
                    "{spinner} [{elapsed_precise}] {msg} {decimal_bytes} ({decimal_bytes_per_sec})",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
            );
            b.enable_steady_tick(Duration::from_millis(120));
            crate::log::attach(&b);
            b
        });
        Arc::new(Self {
            bar,
            plain: !quiet && !tty,
            state: Mutex::new((0, 0)),
        })
    }

    pub(crate) fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }

    /// A status line: the bar's message on a TTY (replaced by the next), a line otherwise.
    pub(crate) fn line(&self, text: &str) {
        if let Some(b) = &self.bar {
            b.set_message(text.to_owned());
        } else if self.plain {
            eprintln!("{text}");
        }
    }

    /// A line that also stays above the bar on a TTY.
    pub(crate) fn println(&self, text: &str) {
        if let Some(b) = &self.bar {
            b.println(text);
        } else if self.plain {
            eprintln!("{text}");
        }
    }
}

impl flatfhir_fetch::Observer for Display {
    fn on_event(&self, e: &Event) {
        let mut st = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match e {
            Event::KickedOff { status_url } => {
                self.line(&format!("export accepted; status at {status_url}"))
            }
            Event::Resumed {
                status_url,
                files,
                done,
            } => {
                *st = (*done, *files);
                if *files == 0 {
                    self.line(&format!(
                        "resuming export {status_url} (no manifest yet: polling)"
                    ));
                } else {
                    self.line(&format!(
                        "resuming export {status_url} ({done} of {files} files already complete)"
                    ));
                }
            }
            Event::Progress {
                x_progress, wait, ..
            } => self.line(&format!(
                "export in progress: {} (next check in {:.1}s)",
                x_progress.as_deref().unwrap_or("no progress reported"),
                wait.as_secs_f64()
            )),
            Event::Retrying { what, wait } => {
                self.println(&format!("retrying in {:.1}s: {what}", wait.as_secs_f64()))
            }
            Event::Manifest { files, .. } => {
                st.1 = *files;
                self.line(&format!("manifest: {files} files"));
            }
            Event::Repolling { files } => self.println(&format!(
                "{files} link(s) failed; asking the server for fresh ones"
            )),
            Event::Throttled { parallel } => {
                self.println(&format!(
                    "rate-limited: now {parallel} download(s) at a time"
                ));
            }
            Event::FileStarted { .. } => {}
            Event::Bytes(n) => {
                if let Some(b) = &self.bar {
                    b.inc(*n);
                }
            }
            Event::FileDone {
                path, resources, ..
            } => {
                st.0 += 1;
                if self.bar.is_some() {
                    self.line(&format!("downloading: {}/{} files", st.0, st.1));
                } else {
                    self.line(&format!(
                        "[{}/{}] {path}: {resources} resources",
                        st.0, st.1
                    ));
                }
            }
            Event::FileFailed { path, reason } => self.println(&format!("failed {path}: {reason}")),
            Event::Warning { path, message } => {
                self.println(&format!("warning: {path}: {message}"))
            }
            Event::TypeComplete {
                resource_type,
                files,
            } => {
                self.println(&format!(
                    "{resource_type}: all {} file(s) downloaded",
                    files.len()
                ));
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    #[derive(Debug, clap::Parser)]
    struct Cli {
        #[command(flatten)]
        conn: super::ConnArgs,
    }

    /// A `Debug` print of the parsed options (a panic message, a log line) shows no secret.
    #[test]
    fn debug_shows_no_secret() {
        let cli = Cli::try_parse_from([
            "t",
            "--client-secret",
            "cs-value-0001",
            "--bearer",
            "bt-value-0002",
            "--private-key",
            "-----BEGIN PRIVATE KEY-----\nkey-value-0003\n-----END PRIVATE KEY-----",
        ])
        .unwrap();
        let shown = format!("{cli:?} {cli:#?}");
        for secret in ["cs-value-0001", "bt-value-0002", "key-value-0003"] {
            assert!(!shown.contains(secret), "{shown}");
        }
    }

    #[test]
    fn instants() {
        for ok in ["2024-01-31T00:00:00Z", "2024-01-31T00:00:00.5+14:00"] {
            assert_eq!(super::parse_instant(ok).as_deref(), Ok(ok));
        }
        for bad in [
            "yesterday",
            "2024-01-31",
            "2024-01-31T00:00Z",
            "2024-01-31T00:00:00",
            "2024-01-31 00:00:00Z",
            "2024-02-30T00:00:00Z",
        ] {
            assert!(super::parse_instant(bad).is_err(), "{bad}");
        }
    }
}

#[cfg(test)]
mod duration_tests {
    use std::time::Duration;

    use proptest::prelude::*;

    use super::{MAX_DURATION, parse_duration};

    #[test]
    fn units_and_bare_seconds() {
        for (text, want) in [
            ("500ms", Duration::from_millis(500)),
            ("2s", Duration::from_secs(2)),
            (" 5m ", Duration::from_secs(300)),
            ("1.5h", Duration::from_secs(5400)),
            ("90", Duration::from_secs(90)),
            ("8784h", MAX_DURATION),
        ] {
            assert_eq!(parse_duration(text), Ok(want), "{text}");
        }
    }

    /// Values that overflowed `Duration` panicked (`Duration::from_secs_f64`); now they are
    /// usage errors, as is anything over a year.
    #[test]
    fn huge_values_are_errors() {
        for text in [
            "99999999999999999999999999h",
            &"9".repeat(400),
            "18446744073709551616s",
            "8785h",
            "367d",
            "1e9s",
            "",
            ".",
            "-1s",
            "NaN",
            "inf",
        ] {
            assert!(parse_duration(text).is_err(), "{text:?}");
        }
        let e = parse_duration("99999999999999999999h").unwrap_err();
        assert!(e.contains("too long"), "{e}");
    }

    proptest! {
        /// No input panics: any string, and numbers of any size with every unit.
        #[test]
        fn never_panics(s in "\\PC*") {
            let _ = parse_duration(&s);
        }

        #[test]
        fn numbers_never_panic(
            digits in "[0-9]{1,400}(\\.[0-9]{0,20})?",
            unit in prop::sample::select(vec!["", "ms", "s", "m", "h", "x"]),
        ) {
            let text = format!("{digits}{unit}");
            if let Ok(d) = parse_duration(&text) {
                prop_assert!(d <= MAX_DURATION, "{text} gave {d:?}");
            }
        }
    }
}
