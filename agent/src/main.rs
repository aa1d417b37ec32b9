//! The `mxsync-agent` binary: flags, logging, and a call into the library.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use agent::config::Config;

/// Watches the primary's aliases and pushes signed snapshots to the secondaries.
#[derive(Parser)]
#[command(name = "mxsync-agent", version)]
struct Cli {
    /// The configuration file.
    #[arg(long, short, env = "MXSYNC_CONFIG")]
    config: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the plan of every valid address as JSON Lines (no network).
    Plan,
    /// Validate the configuration and exit 0, or list every problem and exit 2.
    CheckConfig,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let loaded = match cli.command {
        Command::CheckConfig => Config::load_for_push(&cli.config),
        Command::Plan => Config::load(&cli.config),
    };
    let cfg = match loaded {
        Ok(c) => c,
        Err(e) => {
            eprintln!("mxsync-agent: {e}");
            return ExitCode::from(2);
        }
    };
    match run(cli.command, &cfg) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("mxsync-agent: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command, cfg: &Config) -> anyhow::Result<ExitCode> {
    match command {
        Command::CheckConfig => {
            println!(
                "configuration ok: agent {}, {} receiver(s)",
                cfg.agent_id,
                cfg.receivers.len()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Plan => {
            let collected = agent::collect::collect(&cfg.domains(), &cfg.sources);
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            let mut err = std::io::stderr().lock();
            agent::commands::plan(&collected.content, &mut out, &mut err)
                .context("writing plans to standard output")?;
            out.flush().context("writing plans to standard output")?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
