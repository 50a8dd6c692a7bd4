//! Options and output shared by `convert` and `schema`: reading and flattening flags, input
//! planning with `--types`, and the progress bar.

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::Context;
use flatfhir_core::{
    Compression, ConvertOptions, Decimals, OnError, OutputFormat, Plan, ReadOptions, WriteOptions,
};
use indicatif::{ProgressBar, ProgressStyle};

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
    /// Bad lines go to DIR/_rejected/ with file, line and reason; exit status 2.
    Skip,
}

/// Flags that decide how lines are read and flattened.
#[derive(Debug, clap::Args)]
pub(crate) struct FlattenArgs {
    /// NDJSON files or directories (`*.ndjson`, `*.ndjson.gz`, `*.jsonl`; `error/` and `deleted/` are not read).
    #[arg(required = true, value_name = "INPUT")]
    pub(crate) inputs: Vec<PathBuf>,

    /// Separator between path parts in column names.
    #[arg(long, default_value = "_", value_name = "SEP")]
    pub(crate) sep: String,

    /// Root keys to leave out, e.g. `text` (the XHTML narrative).
    #[arg(long, value_delimiter = ',', value_name = "KEY,...")]
    pub(crate) exclude: Vec<String>,

    /// Only these resource types.
    #[arg(long, value_delimiter = ',', value_name = "TYPE,...")]
    pub(crate) types: Vec<String>,

    /// Worker threads (default: one per core).
    #[arg(long, value_name = "N")]
    pub(crate) threads: Option<usize>,

    /// How to store numbers that have a fraction.
    #[arg(long, value_enum, default_value = "float")]
    pub(crate) decimals: DecimalsArg,

    /// What to do with a bad line.
    #[arg(long, value_enum, default_value = "fail")]
    pub(crate) on_error: OnErrorArg,

    /// Reject lines longer than this many bytes.
    #[arg(long, default_value_t = flatfhir_core::DEFAULT_MAX_LINE_BYTES, value_name = "BYTES")]
    pub(crate) max_line_bytes: usize,

    /// Refuse a resource type whose schema is wider than this.
    #[arg(long, default_value_t = flatfhir_core::DEFAULT_MAX_COLUMNS, value_name = "N")]
    pub(crate) max_columns: usize,

    /// No progress bar and no per-type lines on stderr.
    #[arg(long, short)]
    pub(crate) quiet: bool,

    /// Print the summary as JSON on stdout.
    #[arg(long)]
    pub(crate) json: bool,
}

impl FlattenArgs {
    pub(crate) fn read_options(&self) -> ReadOptions {
        ReadOptions {
            max_line_bytes: self.max_line_bytes,
            ..ReadOptions::default()
        }
    }

    pub(crate) fn convert_options(&self) -> ConvertOptions {
        ConvertOptions {
            sep: self.sep.clone(),
            exclude: self.exclude.clone(),
            decimals: match self.decimals {
                DecimalsArg::Float => Decimals::Float,
                DecimalsArg::Exact => Decimals::Exact,
            },
            on_error: match self.on_error {
                OnErrorArg::Fail => OnError::Fail,
                OnErrorArg::Skip => OnError::Skip,
            },
            threads: self.threads.unwrap_or(0),
            max_columns: self.max_columns,
            read: self.read_options(),
            ..ConvertOptions::default()
        }
    }

    /// Groups the inputs by type and applies `--types`.
    pub(crate) fn plan(&self) -> anyhow::Result<Plan> {
        if self.sep.is_empty() {
            anyhow::bail!("--sep must not be empty");
        }
        let mut plan = flatfhir_core::plan(&self.inputs, &self.read_options())
            .context("cannot plan the inputs")?;
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
        if plan.groups.is_empty() {
            anyhow::bail!("no NDJSON input found in {}", display_list(&self.inputs));
        }
        Ok(plan)
    }
}

pub(crate) fn display_list(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// A byte-based progress bar on stderr, shown only on a terminal and without `--quiet`.
pub(crate) struct Bar(Option<ProgressBar>);

impl Bar {
    pub(crate) fn new(total: u64, quiet: bool) -> Self {
        if quiet || !std::io::stderr().is_terminal() {
            return Self(None);
        }
        let bar = ProgressBar::new(total);
        let style = ProgressStyle::with_template(
            "{spinner} {msg:<24} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
        bar.set_style(style);
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
    #[arg(long, value_enum, default_value = "zstd")]
    pub(crate) compression: CompressionArg,

    /// Rows per Parquet row group (a row group is also closed after 128 MiB of input).
    #[arg(long, default_value_t = 128 * 1024, value_name = "N")]
    pub(crate) row_group_rows: usize,

    /// Flattened rows held in memory, in MiB, until the union schema is known (after the
    /// whole input is read); beyond it they spill to a temporary file.
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
            anyhow::bail!("--row-group-rows must be at least 1");
        }
        if matches!(
            (self.format, self.compression),
            (FormatArg::Arrow, CompressionArg::Snappy)
        ) {
            anyhow::bail!("--format arrow supports --compression zstd or none, not snappy");
        }
        Ok(WriteOptions {
            format: match self.format {
                FormatArg::Parquet => OutputFormat::Parquet,
                FormatArg::Arrow => OutputFormat::Arrow,
                FormatArg::Ndjson | FormatArg::Csv => {
                    anyhow::bail!("--format ndjson and csv need --view, --column or --columns")
                }
            },
            compression: match self.compression {
                CompressionArg::Zstd => Compression::Zstd,
                CompressionArg::Snappy => Compression::Snappy,
                CompressionArg::None => Compression::None,
            },
            row_group_rows: self.row_group_rows,
            ..WriteOptions::default()
        })
    }
}

/// Total size of the planned input files.
pub(crate) fn input_bytes(plan: &Plan) -> u64 {
    plan.groups
        .iter()
        .flat_map(|g| &g.files)
        .map(|f| std::fs::metadata(&f.path).map_or(0, |m| m.len()))
        .sum()
}
