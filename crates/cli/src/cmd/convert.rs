//! `flatfhir convert` (placeholder until the flatten engine lands).

use std::process::ExitCode;

/// Arguments of `flatfhir convert`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {}

pub(crate) fn run(_args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not implemented yet")
}
