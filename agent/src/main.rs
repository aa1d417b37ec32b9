//! The `mxsync-agent` binary: flags, logging, and a call into the library.

/// Many small allocations come and go with each collection and apply (a million aliases are
/// copied, planned and freed): mimalloc reuses freed memory instead of returning it to the
/// kernel and faulting it in again.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
#[path = "../../server/src/generate.rs"]
mod generate;
#[path = "../../server/src/logs.rs"]
mod logs;
#[path = "../../server/src/signals.rs"]
mod signals;

use clap::{CommandFactory, Parser, Subcommand};

use agent::config::Config;

/// Watches the primary's aliases and pushes signed snapshots to the secondaries.
#[derive(Parser)]
#[command(name = "mxsync-agent", version = concat!(env!("CARGO_PKG_VERSION"), env!("MXSYNC_COMMIT")))]
struct Cli {
    /// The configuration file (before or after the command).
    #[arg(
        long,
        short,
        env = "MXSYNC_CONFIG",
        global = true,
        default_value = "/etc/mxsync/agent.toml"
    )]
    config: PathBuf,
    /// How log lines are written: text (no colours unless standard error is a terminal, no
    /// timestamp under systemd) or json.
    #[arg(long, value_enum, default_value_t, global = true)]
    log_format: logs::Format,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Watch the sources and push to every receiver until SIGTERM or SIGINT.
    Run,
    /// Collect and push once; exit 0 only if every receiver accepted.
    Once,
    /// Print the plan of every valid address as JSON Lines (no network).
    Plan,
    /// Show aliases that punt only because of an inline pipe, file or include, and every
    /// diagnostic.
    Lint,
    /// Validate the configuration and exit 0, or list every problem and exit 2.
    CheckConfig,
    /// Write the man page and the shell completions into DIR (the package build runs this).
    #[command(hide = true)]
    Generate {
        /// The directory to write into.
        dir: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Generate { dir } = &cli.command {
        let schema = schemars::schema_for!(agent::config::Config);
        return generate::generate(Cli::command(), &schema, dir);
    }
    let config = cli.config.clone();
    logs::init(cli.log_format);
    let loaded = match cli.command {
        Command::CheckConfig | Command::Run | Command::Once => Config::load_for_push(&config),
        Command::Plan | Command::Lint | Command::Generate { .. } => Config::load(&config),
    };
    let cfg = match loaded {
        Ok(c) => c,
        Err(e) => {
            eprintln!("mxsync-agent: {e}");
            return ExitCode::from(2);
        }
    };
    match run(cli.command, &cfg, &config) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("mxsync-agent: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the tokio runtime")
}

/// Each SIGHUP: the configuration file at `path` is read and checked again and handed to the
/// running agent, or refused with every problem while the running one stays.
async fn reloads(
    path: PathBuf,
    mut hup: tokio::signal::unix::Signal,
    tx: tokio::sync::mpsc::UnboundedSender<Config>,
) {
    while hup.recv().await.is_some() {
        let p = path.clone();
        match tokio::task::spawn_blocking(move || Config::load_for_push(&p)).await {
            Ok(Ok(cfg)) => {
                if tx.send(cfg).is_err() {
                    return;
                }
            }
            Ok(Err(e)) => {
                tracing::error!(error = %e, "configuration not reloaded; the running one stays")
            }
            Err(e) => tracing::error!(error = %e, "the reload task failed"),
        }
    }
}

fn run(command: Command, cfg: &Config, path: &std::path::Path) -> anyhow::Result<ExitCode> {
    match command {
        Command::Run => {
            let token = tokio_util::sync::CancellationToken::new();
            runtime()?.block_on(async {
                tokio::spawn(signals::stop_on_signals(token.clone(), "waiting"));
                // Installed before READY: a SIGHUP from then on reloads, never kills.
                let hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
                    .context("installing the SIGHUP handler")?;
                let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
                tokio::spawn(reloads(path.to_path_buf(), hup, tx));
                agent::run::run_reloading(cfg.clone(), token, rx).await
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Once => {
            let all = runtime()?.block_on(agent::run::once(cfg.clone()))?;
            Ok(if all {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Lint => {
            let collected = agent::collect::collect(&cfg.domains(), &cfg.sources);
            let content = &collected.content;
            let findings = agent::commands::lint(content);
            for f in &findings {
                print!("{f}");
            }
            // Every diagnostic `plan` reports, and what Postfix would refuse.
            let planner = proto::Planner::new(content);
            let mut out = std::io::stdout().lock();
            agent::commands::report(content, &planner, &mut out)
                .context("writing to standard output")?;
            let relative = agent::commands::relative_includes(content);
            for r in &relative {
                writeln!(out, "{r}").context("writing to standard output")?;
            }
            let errors = (content.diagnostics.iter())
                .filter(|d| d.severity == proto::snapshot::Severity::Error)
                .count()
                + relative.len();
            writeln!(
                out,
                "{} alias(es) could be split, {} diagnostic(s), {errors} error(s)",
                findings.len(),
                content.diagnostics.len() + relative.len()
            )
            .context("writing to standard output")?;
            // Errors (lines left out, files unreadable, relative includes) fail the lint.
            Ok(if errors > 0 {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
        Command::CheckConfig => {
            println!(
                "configuration ok: agent {}, {} receiver(s)",
                cfg.agent_id,
                cfg.receivers.len()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Generate { .. } => unreachable!("handled before the configuration is read"),
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
