//! The binary's `tracing` subscriber: what the libraries log (retries, a failed write to
//! `log.ndjson`) goes to stderr as `warning: ...` lines, like the binary's own messages.
//! `--quiet` hides informational lines, never warnings or errors. Registered secrets are
//! scrubbed from every line.

use std::fmt;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// Installs the subscriber for the whole process (once, first thing after parsing).
pub(crate) fn install(quiet: bool) {
    let level = if quiet { Level::WARN } else { Level::INFO };
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(level)
        .with_ansi(false)
        .event_format(Plain)
        .try_init();
}

/// `warning: message` (fields after the message as `name=value`), with no time or target.
struct Plain;

impl<S, N> FormatEvent<S, N> for Plain
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let label = match *event.metadata().level() {
            Level::ERROR => "error",
            Level::WARN => "warning",
            Level::INFO => "info",
            _ => "debug",
        };
        let mut text = String::new();
        ctx.field_format()
            .format_fields(Writer::new(&mut text), event)?;
        writeln!(writer, "{label}: {}", flatfhir_fetch::scrub(&text))
    }
}
