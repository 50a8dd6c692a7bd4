//! `flatfhir cancel`: DELETE the export whose job state is in DIR, so the server can free it.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use flatfhir_fetch::JobState;

use super::fetch::ConnArgs;

/// Arguments of `flatfhir cancel`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Output directory of a `flatfhir fetch`
    #[arg(long, short, value_name = "DIR")]
    out: PathBuf,
    #[command(flatten)]
    conn: ConnArgs,
}

pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    let job = JobState::load(&args.out)?
        .with_context(|| format!("{} holds no export job", args.out.display()))?;
    let conn = args.conn.connection(Some(&job))?;
    let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    rt.block_on(flatfhir_fetch::cancel(&args.out, conn))?;
    eprintln!(
        "export deleted on the server; files already in {} are kept",
        args.out.display()
    );
    Ok(ExitCode::SUCCESS)
}
