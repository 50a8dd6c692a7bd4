//! Options and output shared by `convert` and `schema`: reading and flattening flags, input
//! planning with `--types` (and the notes on what the plan leaves out), the progress bar,
//! and [`UsageError`], the error that makes the binary exit with status 64.

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::Context;
use flatfhir_core::{
    BundleMode, BundleOptions, BundleStats, Compression, ConvertOptions, Dates, Decimals,
    Duplicates, OnError, OutputFormat, Plan, ReadOptions, WriteOptions,
};
use indicatif::{ProgressBar, ProgressStyle};

/// A mistake on the command line found after parsing (an option that needs another, values
/// that do not go together). The binary exits with status 64 for it, as for clap's errors.
#[derive(Debug)]
pub(crate) struct UsageError(pub(crate) String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// A [`UsageError`] as an `anyhow::Error`.
pub(crate) fn usage(message: impl Into<String>) -> anyhow::Error {
    UsageError(message.into()).into()
}

/// A count that must be at least 1 (`--threads`, `--parallel`, `--repeat`).
pub(crate) fn at_least_one(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(format!("not a whole number: {e}")),
    }
}

/// `--decimals`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub(crate) enum DecimalsArg {
    /// Numbers with a fraction become Float64 (as pandas does).
    Float,
    /// Numbers with a fraction keep their exact source text (Utf8), e.g. `1.50`.
    Exact,
}

/// `--on-error`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub(crate) enum OnErrorArg {
    /// A bad line stops its resource type (no output for it); exit status 1.
    Fail,
    /// Bad lines are left out and the rest goes on; exit status 2. `convert` keeps them in
    /// DIR/_rejected/ with file, line and reason; `schema` names them on stderr; `bench`
    /// counts them.
    Skip,
}

/// `--dates`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub(crate) enum DatesArg {
    /// Dates and instants stay text, as in the reference workflow.
    Text,
    /// Columns of full instants with an offset become timestamp[us, UTC], columns of full dates
    /// date32; any other column stays text (the summary says why).
    Typed,
}

/// `--bundles`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub(crate) enum BundlesArg {
    /// Unpack `*.json` / `*.json.gz` files and files of other names (not `*.ndjson`) that hold a
    /// Bundle; Bundle lines of NDJSON files stay rows of the Bundle table.
    Auto,
    /// As `auto`, and unpack every Bundle line of NDJSON files too.
    Unpack,
    /// Unpack nothing: Bundles are resources like any other.
    Keep,
}

/// `--bundle-duplicates`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub(crate) enum DuplicatesArg {
    /// Keep every entry, as NDJSON input would.
    Keep,
    /// Keep the first resource of each (type, id) and count the others.
    First,
}

/// Flags that decide how resources become columns: shared by `convert`, `schema`, `bench`,
/// `views` (through [`FlattenArgs`]) and `export`.
#[derive(Debug, clap::Args)]
pub(crate) struct ColumnArgs {
    /// Separator between path parts in column names.
    #[arg(long, default_value = "_", value_name = "SEP")]
    pub(crate) sep: String,

    /// Root keys to leave out, e.g. `text` (the XHTML narrative).
    #[arg(long, value_delimiter = ',', value_name = "KEY,...")]
    pub(crate) exclude: Vec<String>,

    /// Worker threads (default: one per core).
    #[arg(long, value_name = "N", value_parser = at_least_one)]
    pub(crate) threads: Option<usize>,

    /// How to store numbers that have a fraction.
    #[arg(long, value_enum, default_value = "float", value_name = "MODE")]
    pub(crate) decimals: DecimalsArg,

    /// How to store FHIR dates and instants (see docs/columns.md, "Dates").
    #[arg(long, value_enum, default_value = "text", value_name = "MODE")]
    pub(crate) dates: DatesArg,

    /// Refuse a resource type whose schema is wider than this.
    #[arg(long, default_value_t = flatfhir_core::DEFAULT_MAX_COLUMNS, value_name = "N")]
    pub(crate) max_columns: usize,
}

impl ColumnArgs {
    /// The conversion options these flags set; the rest are defaults.
    pub(crate) fn convert_options(&self) -> ConvertOptions {
        ConvertOptions::default()
            .sep(self.sep.clone())
            .exclude(self.exclude.clone())
            .decimals(match self.decimals {
                DecimalsArg::Float => Decimals::Float,
                DecimalsArg::Exact => Decimals::Exact,
            })
            .dates(match self.dates {
                DatesArg::Text => Dates::Text,
                DatesArg::Typed => Dates::Typed,
            })
            .threads(self.threads.unwrap_or(0))
            .max_columns(self.max_columns)
    }
}

/// Flags that decide how lines are read and flattened.
#[derive(Debug, clap::Args)]
pub(crate) struct FlattenArgs {
    /// NDJSON files, Bundle files or directories (`*.ndjson`, `*.ndjson.gz`, `*.jsonl`, and
    /// `*.json` / `*.json.gz` that hold a Bundle; `error/` and `deleted/` are not read).
    /// Each may be an object-store URL, read like a file or a directory:
    /// `s3://bucket/export/`, `gs://…`, `az://container/…`, `abfss://container@account.dfs.core.windows.net/…`
    /// (credentials from the cloud's standard chain; see docs/scale-out.md), or `file://…`.
    #[arg(required = true, value_name = "INPUT", value_parser = location_arg)]
    pub(crate) inputs: Vec<PathBuf>,

    /// Only these resource types, comma-separated.
    #[arg(
        long,
        visible_alias = "type",
        value_delimiter = ',',
        value_name = "TYPE,..."
    )]
    pub(crate) types: Vec<String>,

    #[command(flatten)]
    pub(crate) columns: ColumnArgs,

    /// What to do with a bad line.
    #[arg(long, value_enum, default_value = "fail", value_name = "MODE")]
    pub(crate) on_error: OnErrorArg,

    /// Reject lines longer than this many bytes.
    #[arg(long, default_value_t = flatfhir_core::DEFAULT_MAX_LINE_BYTES, value_name = "BYTES")]
    pub(crate) max_line_bytes: usize,

    /// Which files are FHIR Bundles whose `entry[].resource` are converted as if they were
    /// NDJSON lines (see docs/columns.md, "Bundles").
    #[arg(long, value_enum, default_value = "auto", value_name = "MODE")]
    pub(crate) bundles: BundlesArg,

    /// Rewrite `urn:uuid:` references to another Bundle entry's fullUrl (in the same file)
    /// as `Type/id`; the count of those that name no entry is reported.
    #[arg(long)]
    pub(crate) resolve_references: bool,

    /// A resource whose (type, id) an earlier Bundle entry had: keep it, or keep only the first.
    #[arg(long, value_enum, default_value = "keep", value_name = "MODE")]
    pub(crate) bundle_duplicates: DuplicatesArg,

    /// No progress bar and no per-type lines on stderr.
    #[arg(long, short)]
    pub(crate) quiet: bool,

    /// Print the summary as JSON on stdout.
    #[arg(long)]
    pub(crate) json: bool,
}

impl FlattenArgs {
    pub(crate) fn read_options(&self) -> ReadOptions {
        ReadOptions::default().max_line_bytes(self.max_line_bytes)
    }

    pub(crate) fn convert_options(&self) -> ConvertOptions {
        self.columns
            .convert_options()
            .on_error(match self.on_error {
                OnErrorArg::Fail => OnError::Fail,
                OnErrorArg::Skip => OnError::Skip,
            })
            .read(self.read_options())
    }

    /// Groups the inputs by type and applies `--types`. Files of the given directories that
    /// are not read are named on stderr (unless `--quiet`); when nothing is left to read, the
    /// error says why for each input.
    pub(crate) fn plan(&self) -> anyhow::Result<Plan> {
        self.plan_in(None, false)
    }

    /// How Bundle files are read, with unpacked resources kept in `temp_dir` (when it
    /// exists; else the system's temporary directory).
    pub(crate) fn bundle_options(&self, temp_dir: Option<&std::path::Path>) -> BundleOptions {
        BundleOptions::default()
            .mode(match self.bundles {
                BundlesArg::Auto => BundleMode::Auto,
                BundlesArg::Unpack => BundleMode::Unpack,
                BundlesArg::Keep => BundleMode::Keep,
            })
            .resolve_references(self.resolve_references)
            .duplicates(match self.bundle_duplicates {
                DuplicatesArg::Keep => Duplicates::Keep,
                DuplicatesArg::First => Duplicates::First,
            })
            .temp_dir(temp_dir.filter(|d| d.is_dir()).map(|d| d.to_path_buf()))
    }

    /// [`plan`](Self::plan), keeping resources unpacked from Bundles in `temp_dir` (see
    /// [`bundle_options`](Self::bundle_options)). With `leave_packed` (and no `--types`),
    /// inputs that are all Bundle files are left packed ([`Plan::packed`]) for
    /// `convert_bundles`.
    pub(crate) fn plan_in(
        &self,
        temp_dir: Option<&std::path::Path>,
        leave_packed: bool,
    ) -> anyhow::Result<Plan> {
        if self.columns.sep.is_empty() {
            return Err(usage("--sep must not be empty"));
        }
        let bundles = self.bundle_options(temp_dir);
        let read = self.read_options();
        let mut plan = if leave_packed && self.types.is_empty() {
            flatfhir_core::plan_packed(&self.inputs, &read, &bundles)
        } else {
            flatfhir_core::plan_with(&self.inputs, &read, &bundles)
        }
        .context("cannot plan the inputs")?;
        if let (Some(b), false) = (&plan.bundles, self.quiet) {
            eprintln!("{}", bundle_note(b.stats(), self.resolve_references));
        }
        if !self.types.is_empty() {
            for t in &self.types {
                if !plan.groups.iter().any(|g| &g.resource_type == t) {
                    anyhow::bail!(
                        "--types {t}: no input of that type (found: {})",
                        plan.groups
                            .iter()
                            .map(|g| g.resource_type.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    );
                }
            }
            plan.groups
                .retain(|g| self.types.contains(&g.resource_type));
        }
        if plan.groups.is_empty() && plan.packed.is_empty() {
            anyhow::bail!(self.nothing_read(&plan.empty, &plan.skipped));
        }
        if !self.quiet {
            if let Some(note) = skipped_note(&plan.skipped) {
                eprintln!("note: {note}");
            }
            for p in plan.empty.iter().filter(|p| !is_layout_file(p)) {
                eprintln!(
                    "note: {} was not read: {}",
                    p.display(),
                    flatfhir_core::why_not_ndjson(p)
                );
            }
        }
        Ok(plan)
    }
}

impl FlattenArgs {
    /// The error when no input holds anything to convert: why for each file not read.
    pub(crate) fn nothing_read(&self, empty: &[PathBuf], skipped: &[PathBuf]) -> String {
        let mut why = Vec::new();
        for p in empty {
            why.push(format!(
                "{}: {}",
                p.display(),
                flatfhir_core::why_not_ndjson(p)
            ));
        }
        if let Some(note) = skipped_note(skipped) {
            why.push(note);
        }
        let mut msg = format!("no NDJSON input found in {}", display_list(&self.inputs));
        for w in why {
            msg.push_str("\n  ");
            msg.push_str(&w);
        }
        msg
    }
}

/// Files that a Bulk Data export directory (as `fetch` and `export` write it) holds besides
/// its NDJSON, and which are never input: the manifest, the export log, the job state, and
/// tables converted from it. They are not named in the notes (`--json` lists them all).
pub(crate) fn is_layout_file(path: &std::path::Path) -> bool {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    matches!(
        name.as_ref(),
        "manifest.json"
            | "log.ndjson"
            | flatfhir_fetch::JOB_FILE
            | flatfhir_fetch::search::SEARCH_STATE_FILE
    ) || path
        .extension()
        .is_some_and(|e| e == "parquet" || e == "arrow")
}

/// Skipped files worth naming: all but the export layout's own ([`is_layout_file`]).
pub(crate) fn unexpected(skipped: &[PathBuf]) -> Vec<&PathBuf> {
    skipped.iter().filter(|p| !is_layout_file(p)).collect()
}

/// How many files of the input directories were not read, and the first few of them
/// (leaving out the export layout's own files).
pub(crate) fn skipped_note(skipped: &[PathBuf]) -> Option<String> {
    const SHOWN: usize = 5;
    let skipped = unexpected(skipped);
    if skipped.is_empty() {
        return None;
    }
    let mut names: Vec<String> = skipped
        .iter()
        .take(SHOWN)
        .map(|p| p.display().to_string())
        .collect();
    if skipped.len() > SHOWN {
        names.push(format!("and {} more", skipped.len() - SHOWN));
    }
    Some(format!(
        "skipped {} file(s) whose names are not *.ndjson, *.ndjson.gz or *.jsonl: {} \
         (name a file on the command line to read it whatever its name)",
        skipped.len(),
        names.join(", ")
    ))
}

pub(crate) fn display_list(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// A byte-based progress bar on stderr, shown only on a terminal and without `--quiet`.
/// It counts input bytes in MB (10^6 bytes), the unit of the summaries; a pipeline that
/// reports each input byte more than once (`passes`: read, then written) is scaled back to
/// input bytes, so the total shown is the input's size.
pub(crate) struct Bar(Option<ProgressBar>);

impl Bar {
    pub(crate) fn new(input_bytes: u64, passes: u64, quiet: bool) -> Self {
        if quiet || !std::io::stderr().is_terminal() {
            return Self(None);
        }
        let passes = passes.max(1) as f64;
        let bar = ProgressBar::new(input_bytes.saturating_mul(passes as u64));
        let style = ProgressStyle::with_template(
            "{spinner} {msg:<24} [{bar:30}] {done}/{input} MB {rate} MB/s eta {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .with_key(
            "done",
            move |s: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = write!(w, "{:.1}", s.pos() as f64 / passes / 1e6);
            },
        )
        .with_key(
            "input",
            move |s: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = write!(w, "{:.1}", s.len().unwrap_or(0) as f64 / passes / 1e6);
            },
        )
        .with_key(
            "rate",
            move |s: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = write!(w, "{:.1}", s.per_sec() / passes / 1e6);
            },
        )
        .progress_chars("=> ");
        bar.set_style(style);
        crate::log::attach(&bar);
        Self(Some(bar))
    }

    pub(crate) fn message(&self, msg: String) {
        if let Some(b) = &self.0 {
            b.set_message(msg);
        }
    }

    /// Prints a line above the bar (or plainly when there is no bar).
    pub(crate) fn println(&self, line: &str) {
        match &self.0 {
            Some(b) => b.println(line),
            None => eprintln!("{line}"),
        }
    }

    pub(crate) fn finish(&self) {
        if let Some(b) = &self.0 {
            b.finish_and_clear();
        }
    }
}

impl flatfhir_core::Progress for Bar {
    fn advance(&self, bytes: u64) {
        if let Some(b) = &self.0 {
            b.inc(bytes);
        }
    }
}

pub(crate) fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1e6
}

/// `--format`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub(crate) enum FormatArg {
    /// Apache Parquet: DIR/TYPE.parquet.
    Parquet,
    /// Arrow IPC file: DIR/TYPE.arrow (opens in pyarrow and polars without conversion).
    Arrow,
    /// One JSON object per row (views only: --view/--column/--columns).
    Ndjson,
    /// Comma-separated values with a header (views only: --view/--column/--columns).
    Csv,
}

/// `--compression`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub(crate) enum CompressionArg {
    /// Zstandard.
    Zstd,
    /// Snappy (Parquet only).
    Snappy,
    /// None.
    None,
}

/// Flags that decide how tables are written.
#[derive(Debug, clap::Args)]
pub(crate) struct OutputArgs {
    /// Output format.
    #[arg(long, value_enum, default_value = "parquet")]
    pub(crate) format: FormatArg,

    /// Compression codec. Parquet columns whose values take at most 1 KiB in all are stored
    /// uncompressed (a codec would make them larger); with zstd, those of up to 8 KiB with
    /// few distinct values use Snappy, which compresses them as well without zstd's set-up
    /// cost per column.
    #[arg(long, value_enum, default_value = "zstd", value_name = "CODEC")]
    pub(crate) compression: CompressionArg,

    /// Rows per Parquet row group (a row group is also closed after 128 MiB of input).
    #[arg(long, default_value_t = 128 * 1024, value_name = "N")]
    pub(crate) row_group_rows: usize,

    /// Flattened rows held in memory, in MiB, until the union schema is known (after the
    /// whole input is read); beyond it they spill to a temporary file. Bundle files, whose
    /// types are all converted at once, share it among their types.
    #[arg(long, default_value_t = flatfhir_core::DEFAULT_MEMORY_BUDGET >> 20, value_name = "MIB")]
    pub(crate) memory_budget: usize,

    /// Where that temporary file goes (default: the output directory). It is unlinked as soon
    /// as it is created, so nothing is left behind.
    #[arg(long, value_name = "DIR")]
    pub(crate) spill_dir: Option<PathBuf>,
}

impl OutputArgs {
    /// Applies `--memory-budget` and `--spill-dir`.
    pub(crate) fn apply_spill(&self, opts: &mut ConvertOptions) {
        opts.memory_budget = self.memory_budget.saturating_mul(1 << 20);
        opts.spill_dir.clone_from(&self.spill_dir);
    }

    pub(crate) fn write_options(&self) -> anyhow::Result<WriteOptions> {
        if self.row_group_rows == 0 {
            return Err(usage("--row-group-rows must be at least 1"));
        }
        if matches!(
            (self.format, self.compression),
            (FormatArg::Arrow, CompressionArg::Snappy)
        ) {
            return Err(usage(
                "--format arrow supports --compression zstd or none, not snappy",
            ));
        }
        Ok(WriteOptions::default()
            .format(match self.format {
                FormatArg::Parquet => OutputFormat::Parquet,
                FormatArg::Arrow => OutputFormat::Arrow,
                FormatArg::Ndjson | FormatArg::Csv => {
                    return Err(usage(
                        "--format ndjson and csv need --view, --column or --columns",
                    ));
                }
            })
            .compression(match self.compression {
                CompressionArg::Zstd => Compression::Zstd,
                CompressionArg::Snappy => Compression::Snappy,
                CompressionArg::None => Compression::None,
            })
            .row_group_rows(self.row_group_rows))
    }
}

/// A path or URL argument: `file://` URLs become local paths; others are kept as given.
pub(crate) fn location_arg(text: &str) -> Result<PathBuf, String> {
    if text.starts_with("file://") {
        return flatfhir_cloud::local_path(text)
            .ok_or_else(|| format!("{text}: not a valid file:// URL (file:///absolute/path)"));
    }
    Ok(PathBuf::from(text))
}

/// Total size of the planned input files.
pub(crate) fn input_bytes(plan: &Plan) -> u64 {
    plan.groups
        .iter()
        .flat_map(|g| &g.files)
        .map(|f| flatfhir_core::remote::len(&f.path).unwrap_or(0))
        .sum()
}

/// What unpacking Bundles did, for stderr.
pub(crate) fn bundle_note(s: &BundleStats, resolving: bool) -> String {
    let mut note = format!(
        "note: unpacked {} Bundle(s) from {} file(s): {} resource(s)",
        s.bundles, s.files, s.resources
    );
    if s.bad_entries > 0 {
        note.push_str(&format!(
            ", {} {} that could not become a resource (reported as bad lines)",
            s.bad_entries,
            if s.bad_entries == 1 {
                "entry"
            } else {
                "entries"
            }
        ));
    }
    if s.duplicates > 0 {
        note.push_str(&format!(", {} duplicate (type, id) left out", s.duplicates));
    }
    if resolving {
        note.push_str(&format!(
            "; {} urn:uuid reference(s) resolved to Type/id, {} unresolved",
            s.references_resolved, s.references_unresolved
        ));
    }
    note
}
