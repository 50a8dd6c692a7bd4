//! The binary's `tracing` subscriber: what the libraries log (retries, a failed write to
//! `log.ndjson`) goes to stderr as `warning: ...` lines, like the binary's own messages.
//! `--quiet` hides informational lines, never warnings or errors. Registered secrets are
//! scrubbed from every line; a line said once is not repeated (a full disk fails every write
//! to `log.ndjson` the same way); and a progress bar on the terminal is hidden while a line is
//! printed ([`attach`]), so the bar's next redraw does not erase it.

use std::collections::HashSet;
use std::fmt;
use std::io::Write as _;
use std::sync::{Mutex, PoisonError};

use indicatif::{ProgressBar, WeakProgressBar};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::registry::LookupSpan;

/// The progress bar on the terminal, if any; log lines are printed above it.
static BAR: Mutex<Option<WeakProgressBar>> = Mutex::new(None);

/// Lines already printed.
static SEEN: Mutex<Option<HashSet<String>>> = Mutex::new(None);

/// Installs the subscriber for the whole process (once, first thing after parsing).
pub(crate) fn install(quiet: bool) {
    let level = if quiet { Level::WARN } else { Level::INFO };
    let _ = tracing_subscriber::fmt()
        .with_writer(AboveBar)
        .with_max_level(level)
        .with_ansi(false)
        .event_format(Plain)
        .try_init();
}

/// Log lines from now on are printed above `bar` (which stays drawn below them).
pub(crate) fn attach(bar: &ProgressBar) {
    *BAR.lock().unwrap_or_else(PoisonError::into_inner) = Some(bar.downgrade());
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

/// Makes a [`Line`] per event.
struct AboveBar;

impl<'a> MakeWriter<'a> for AboveBar {
    type Writer = Line;

    fn make_writer(&'a self) -> Line {
        Line(Vec::new())
    }
}

/// One formatted event, printed when dropped: once, above the progress bar.
struct Line(Vec<u8>);

impl std::io::Write for Line {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for Line {
    fn drop(&mut self) {
        let text = String::from_utf8_lossy(&self.0).into_owned();
        if text.is_empty() {
            return;
        }
        let first_time = SEEN
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_or_insert_with(HashSet::new)
            .insert(text.clone());
        if !first_time {
            return;
        }
        let print = || {
            let _ = std::io::stderr().lock().write_all(text.as_bytes());
        };
        let bar = BAR
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .and_then(WeakProgressBar::upgrade);
        match bar {
            Some(b) if !b.is_finished() => b.suspend(print),
            _ => print(),
        }
    }
}
