//! Logging for both binaries (the agent's `main` includes this file too): to standard error,
//! with ANSI colours only on a terminal, without a timestamp of our own under systemd (the
//! journal stamps each line), or as JSON lines for log shippers (`--log-format json`).

use std::io::IsTerminal;

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Format {
    /// One line of text per event.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Installs the subscriber, at the level `RUST_LOG` says (`info` by default).
pub(crate) fn init(format: Format) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let lines = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        Format::Json => lines.json().init(),
        Format::Text if std::env::var_os("JOURNAL_STREAM").is_some() => lines.without_time().init(),
        Format::Text => lines.init(),
    }
}
