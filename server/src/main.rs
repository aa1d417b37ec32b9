//! The `mxsync-server` binary: flags, logging, signals, and calls into the library.

/// Many small allocations come and go with each collection and apply (a million aliases are
/// copied, planned and freed): mimalloc reuses freed memory instead of returning it to the
/// kernel and faulting it in again.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
mod generate;
mod logs;
mod signals;

use clap::{CommandFactory, Parser, Subcommand};
use server::config::Loaded;
use server::fresh::State;
use server::{Server, lock};

/// Receives mxsync snapshots on a secondary MX and renders its maps.
#[derive(Parser)]
#[command(name = "mxsync-server", version = concat!(env!("CARGO_PKG_VERSION"), env!("MXSYNC_COMMIT")))]
struct Cli {
    /// The configuration file (before or after the command).
    #[arg(
        long,
        short,
        env = "MXSYNC_CONFIG",
        global = true,
        default_value = "/etc/mxsync/server.toml"
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
    /// Serve the API until SIGTERM or SIGINT.
    Run,
    /// Print one line on freshness; exit 0 fresh, 1 late, 2 stale, 3 unknown.
    Check,
    /// Validate the configuration and exit 0, or list every problem and exit 2.
    CheckConfig,
    /// Explain the plan of one address.
    Explain {
        /// The address.
        address: String,
    },
    /// Print the snapshot history.
    History {
        /// Only this agent.
        #[arg(long)]
        agent: Option<String>,
        /// At most this many rows.
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Apply the snapshot the shrink guard holds for AGENT, if the agent still reports it.
    Release {
        /// The agent.
        agent: String,
        /// Apply the held snapshot even though the agent now reports other content: name its
        /// version (see `history`).
        #[arg(long, value_name = "VERSION")]
        force: Option<u64>,
    },
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
        let schema = schemars::schema_for!(server::config::Config);
        return generate::generate(Cli::command(), &schema, dir);
    }
    let config = cli.config.clone();
    logs::init(cli.log_format);
    let cfg = match Loaded::load(&config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("mxsync-server: {e}");
            return ExitCode::from(if matches!(cli.command, Command::Check) {
                3
            } else {
                2
            });
        }
    };
    match dispatch(cli.command, cfg) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("mxsync-server: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn dispatch(command: Command, cfg: Loaded) -> anyhow::Result<ExitCode> {
    match command {
        Command::CheckConfig => {
            let problems = cfg.check_writable();
            if !problems.is_empty() {
                eprintln!(
                    "mxsync-server: {}: {} problem(s):\n  {}",
                    cfg.path.display(),
                    problems.len(),
                    problems.join("\n  ")
                );
                return Ok(ExitCode::from(2));
            }
            if let Some(target) = &cfg.postgres {
                match server::postgres::check(target) {
                    Ok(line) => println!("{line}"),
                    Err(e) => {
                        eprintln!(
                            "mxsync-server: {}: output.postgres {}: {e}",
                            cfg.path.display(),
                            target.describe
                        );
                        return Ok(ExitCode::from(2));
                    }
                }
            }
            println!(
                "configuration ok: listen {}, {} agent(s), maps in {}",
                cfg.listen,
                cfg.config.agents.len(),
                cfg.config.output.dir.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Run => serve(cfg),
        Command::Check => check(cfg),
        Command::Explain { address } => explain(cfg, &address),
        Command::History { agent, limit } => history(cfg, agent.as_deref(), limit),
        Command::Release { agent, force } => release(cfg, &agent, force),
        Command::Generate { .. } => unreachable!("handled before the configuration is read"),
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")
}

fn serve(cfg: Loaded) -> anyhow::Result<ExitCode> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = runtime()?;
    rt.block_on(async {
        let listen = cfg.listen;
        let server = Server::open(cfg)?;
        let listener = server::serve::bind(listen).with_context(|| format!("binding {listen}"))?;
        let token = tokio_util::sync::CancellationToken::new();
        tokio::spawn(signals::stop_on_signals(token.clone(), "draining"));
        // Installed before READY: a SIGHUP from then on reloads, never kills.
        let hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .context("installing the SIGHUP handler")?;
        tokio::spawn(reloads(Arc::clone(&server), hup));
        server::run(server, listener, token).await
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Each SIGHUP (`systemctl reload`): the configuration file is read again and put in force, or
/// refused with every problem while the running one stays (`Server::reload`).
async fn reloads(server: Arc<Server>, mut hup: tokio::signal::unix::Signal) {
    while hup.recv().await.is_some() {
        let s = Arc::clone(&server);
        match tokio::task::spawn_blocking(move || s.reload_from_disk()).await {
            Ok(Ok(done)) => {
                tracing::info!(
                    added = ?done.added,
                    removed = ?done.removed,
                    "configuration reloaded"
                );
                if !done.need_restart.is_empty() {
                    tracing::warn!(
                        settings = ?done.need_restart,
                        "these changed settings keep their running value until a restart"
                    );
                }
            }
            Ok(Err(e)) => {
                tracing::error!(error = %e, "configuration not reloaded; the running one stays")
            }
            Err(e) => tracing::error!(error = %e, "the reload task failed"),
        }
    }
}

/// Opens the server's state without serving (for the offline commands).
fn open(cfg: Loaded) -> anyhow::Result<Arc<Server>> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    Server::open(cfg)
}

fn check(cfg: Loaded) -> anyhow::Result<ExitCode> {
    // Only the agents' rows: a monitoring check must stay cheap however large the snapshots are.
    let path = cfg.config.state_dir.join("mxsync.db");
    let status = server::store::Store::open(&path)
        .map_err(anyhow::Error::from)
        .and_then(|store| server::api::offline_status(&cfg, &store));
    let status = match status {
        Ok(s) => s,
        Err(e) => {
            println!("MXSYNC UNKNOWN - {e:#}");
            return Ok(ExitCode::from(3));
        }
    };
    let state = State::parse(&status.state);
    let label = ["OK", "WARNING", "CRITICAL", "UNKNOWN"][usize::from(state.exit_code())];
    let detail: Vec<String> = status
        .agents
        .iter()
        .map(|a| {
            let age = a.age_seconds.map_or("no contact".to_string(), |s| {
                format!("last contact {s} s ago")
            });
            let mut d = format!(
                "{} {} (version {}, {age})",
                a.agent,
                a.state,
                a.version.map_or("none".into(), |v| v.to_string())
            );
            if let Some(p) = &a.problem {
                d.push_str(&format!(": {p}"));
            }
            if a.unknown_recipients == "defer" {
                d.push_str(", unknown recipients deferred (450)");
            }
            d
        })
        .collect();
    println!("MXSYNC {label} - {}", detail.join("; "));
    Ok(ExitCode::from(state.exit_code()))
}

fn explain(cfg: Loaded, address: &str) -> anyhow::Result<ExitCode> {
    let server = open(cfg)?;
    let Some(plan) = server::api::plan_of(&server, address) else {
        println!("{address}: not a valid recipient here (the secondary rejects it at RCPT time)");
        return Ok(ExitCode::from(1));
    };
    print!("{}", server::explain::text(&plan));
    Ok(ExitCode::SUCCESS)
}

fn history(cfg: Loaded, agent: Option<&str>, limit: u32) -> anyhow::Result<ExitCode> {
    if let Some(a) = agent
        && cfg.config.agent(a).is_none()
    {
        anyhow::bail!("no agent {a:?} in the configuration");
    }
    let server = open(cfg)?;
    let rows = lock(&server.db).history(agent, limit)?;
    println!(
        "{:<6} {:<10} {:>8} {:<16} {:<10} {:>10}  detail",
        "id", "agent", "version", "hash", "outcome", "addresses"
    );
    for r in rows {
        println!(
            "{:<6} {:<10} {:>8} {:<16} {:<10} {:>10}  {}",
            r.id,
            r.agent,
            r.version,
            r.hash.get(..16).unwrap_or(&r.hash),
            r.outcome,
            r.addresses.map_or("-".into(), |a| a.to_string()),
            r.detail.unwrap_or_default()
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn release(cfg: Loaded, agent: &str, force: Option<u64>) -> anyhow::Result<ExitCode> {
    if cfg.config.agent(agent).is_none() {
        anyhow::bail!("no agent {agent:?} in the configuration");
    }
    let server = open(cfg)?;
    let db = lock(&server.db);
    let Some((version, hash)) = db.held(agent)? else {
        println!("agent {agent} has no held snapshot");
        return Ok(ExitCode::from(1));
    };
    let reported = db.agent(agent)?.and_then(|r| r.reported_hash);
    let current = reported.as_deref() == Some(hash.as_str());
    if !current && force != Some(version) {
        println!(
            "agent {agent} now reports other content ({}) than the held version {version}: \
             nothing released. Once the agent reports the held content again, `release` \
             applies it; `mxsync-server release {agent} --force {version}` applies the held \
             snapshot anyway",
            reported
                .as_deref()
                .map_or("nothing".into(), |h| format!("hash {h}"))
        );
        return Ok(ExitCode::from(1));
    }
    db.request_release(agent, !current)?;
    println!(
        "release of agent {agent}'s held version {version} requested; the running server applies it within a second"
    );
    Ok(ExitCode::SUCCESS)
}
