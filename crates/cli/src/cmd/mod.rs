//! One module per subcommand; each exposes `Args` (clap) and `run`. `common` and `outdir`
//! hold what several share.

pub(crate) mod bench;
pub(crate) mod cancel;
pub(crate) mod common;
pub(crate) mod convert;
pub(crate) mod demo;
pub(crate) mod export;
pub(crate) mod fetch;
pub(crate) mod outdir;
pub(crate) mod remote_out;
pub(crate) mod schema;
pub(crate) mod search;
pub(crate) mod status;
pub(crate) mod views;
