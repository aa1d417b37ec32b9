//! `mxsync-server`: runs on a secondary MX. It verifies and stores the snapshots agents push,
//! plans every address itself (it never trusts a plan from an agent), renders maps for Postfix
//! and Exim, and tracks how fresh each agent's copy is.
//!
//! - [`config`]: the TOML file and its secrets;
//! - [`api`]: the HTTP API (axum), one error type, the signature and token checks;
//! - [`ingest`]: the blocking path from a verified request to live maps, and `release`;
//! - [`render`] (pure) and [`maps`] (the only writer of map files);
//! - [`store`]: SQLite; [`fresh`]: freshness and alerts; [`hooks`]: operator commands;
//!   [`metrics`]: Prometheus.
//!
//! Invariant: nothing from a snapshot is executed, and only validated addresses are written.

pub mod api;
pub mod config;
pub mod explain;
pub mod fresh;
pub mod hooks;
pub mod ingest;
pub mod maps;
pub mod metrics;
pub mod postgres;
mod reload;
pub mod render;
mod restore;
pub mod serve;
pub mod store;
#[cfg(test)]
mod testkit;
pub mod tls;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::Context;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use config::Loaded;
use fresh::{Alert, Sinks, State};
use metrics::Metrics;
use store::{Counts, Store};

use restore::{adopt_live_maps, load_live};
pub use restore::{load_stored, rebuild};

/// An applied snapshot, kept in memory for planning and rendering.
#[derive(Debug)]
pub struct Applied {
    /// Its history row.
    pub snapshot: i64,
    /// How many stored deltas lie between its row and the full body it is rebuilt from.
    pub links: usize,
    /// Version.
    pub version: u64,
    /// Hash.
    pub hash: String,
    /// When it was applied, Unix seconds.
    pub applied_at: u64,
    /// The content (normalized, validated).
    pub content: proto::Content,
    /// Its rendered lines, once planned (kept so other agents' applies need not plan it).
    pub part: std::sync::OnceLock<Arc<render::AgentPart>>,
    /// Plan counts.
    pub counts: Counts,
}

/// A snapshot held by the shrink guard.
#[derive(Debug, Clone)]
pub struct Held {
    /// History row (with body).
    pub snapshot: i64,
    /// Version.
    pub version: u64,
    /// Hash.
    pub hash: String,
    /// Why it is held.
    pub why: String,
}

/// What the server knows of one agent in memory. Mirrors the database row, plus the tokio
/// instants that freshness is computed from.
#[derive(Debug, Default)]
pub struct Live {
    /// The applied snapshot.
    pub applied: Option<Arc<Applied>>,
    /// Last push or heartbeat (tokio clock).
    pub last_contact: Option<Instant>,
    /// Last push or heartbeat, Unix seconds (for display).
    pub last_contact_at: Option<u64>,
    /// The hash the agent last reported.
    pub reported_hash: Option<String>,
    /// Since when the reported hash differs from the applied one.
    pub disagree_since: Option<Instant>,
    /// A snapshot held by the shrink guard.
    pub held: Option<Held>,
    /// An apply or hook failure, until the next success.
    pub problem: Option<String>,
    /// The freshness state last announced.
    pub state: Option<State>,
    /// The content the applied one replaced, kept to apply the next delta to in place.
    pub spare: Option<Box<ingest::Spare>>,
}

impl Live {
    /// What its freshness is computed from.
    pub fn inputs(&self) -> fresh::Inputs {
        fresh::Inputs {
            applied: self.applied.is_some(),
            last_contact: self.last_contact,
            disagree_since: self.disagree_since,
            held: self.held.is_some(),
        }
    }
}

/// The server: configuration, database, in-memory state, metrics and alert sinks.
/// Shared as `Arc<Server>` by every task; every field takes part in shutdown only through
/// `tracker`, which `run` waits on.
pub struct Server {
    /// Configuration and secrets; SIGHUP swaps them (`Server::reload`). Read through
    /// [`Server::cfg`], which hands out the current one.
    cfg: std::sync::RwLock<Arc<Loaded>>,
    /// The database. A std mutex: it is locked only in blocking sections, never across `.await`.
    pub db: Mutex<Store>,
    /// Per-agent state, by agent id.
    pub live: Mutex<BTreeMap<String, Live>>,
    /// Serializes applies, so that two agents' snapshots never render over each other.
    pub apply_lock: Mutex<()>,
    /// The set installed last, whose unchanged files the next install links.
    pub installed: Mutex<maps::Last>,
    /// Per agent: see [`Server::ingest_lock`].
    ingesting: Mutex<BTreeMap<String, Arc<Mutex<()>>>>,
    /// Prometheus metrics.
    pub metrics: Metrics,
    /// Where alerts go (a reload swaps them).
    sinks: std::sync::RwLock<Arc<Sinks>>,
    /// Hook and alert tasks; `run` waits for them (bounded) on shutdown.
    pub tracker: TaskTracker,
    /// Serializes `after_apply` runs, so a reload never overlaps another.
    pub hook_lock: tokio::sync::Mutex<()>,
    /// The domains whose unknown recipients the live maps defer (`stale_domains`), once maps
    /// were installed: a freshness change that alters them installs the maps again.
    pub deferring: Mutex<Option<Vec<String>>>,
    /// When each refused agent request was last logged, by peer and reason (rate limit).
    pub refusals_logged: Mutex<std::collections::HashMap<String, std::time::Instant>>,
    /// The rows waiting for the database, with `[output.postgres]` (fixed at start).
    pub postgres: Option<Arc<postgres::Feed>>,
}

impl Server {
    /// The configuration in force (a reload swaps it; a caller keeps the one it got).
    pub fn cfg(&self) -> Arc<Loaded> {
        Arc::clone(
            &self
                .cfg
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }

    /// The alert sinks in force.
    pub fn sinks(&self) -> Arc<Sinks> {
        Arc::clone(
            &self
                .sinks
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }

    /// Serializes `agent`'s pushes and releases, so that the row a stored delta is based on
    /// stays applied, with its body, until the delta is stored and applied.
    pub fn ingest_lock(&self, agent: &str) -> Arc<Mutex<()>> {
        Arc::clone(lock(&self.ingesting).entry(agent.to_string()).or_default())
    }
}

/// Unix seconds now.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Locks a std mutex, recovering from poisoning (a panicked holder left consistent data: every
/// critical section here is a few field assignments).
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Server {
    /// Opens the database under `state_dir` and loads every agent's applied and held snapshot.
    pub fn open(cfg: Loaded) -> anyhow::Result<Arc<Server>> {
        let dir = &cfg.config.state_dir;
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join("mxsync.db");
        let store = Store::open(&path).with_context(|| format!("opening {}", path.display()))?;
        Self::with_store(cfg, store)
    }

    /// Like [`Server::open`] with a given store (tests use an in-memory one).
    pub fn with_store(cfg: Loaded, mut store: Store) -> anyhow::Result<Arc<Server>> {
        store.ensure_agents(cfg.config.agents.iter().map(|a| a.id.as_str()))?;
        adopt_live_maps(&cfg, &mut store)?;
        let mut live = BTreeMap::new();
        for a in &cfg.config.agents {
            live.insert(a.id.clone(), load_live(&store, &a.id)?);
        }
        // reqwest is built without a default TLS provider; ring is ours (installing twice is a no-op).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .connect_timeout(Duration::from_secs(5))
            .build()
            .context("building the alert http client")?;
        let sinks = Sinks::new(&cfg.config.alerts, client);
        let server = Server {
            db: Mutex::new(store),
            live: Mutex::new(live),
            apply_lock: Mutex::new(()),
            ingesting: Mutex::default(),
            metrics: Metrics::default(),
            sinks: std::sync::RwLock::new(Arc::new(sinks)),
            tracker: TaskTracker::new(),
            hook_lock: tokio::sync::Mutex::new(()),
            installed: Mutex::new(maps::Last::default()),
            deferring: Mutex::new(None),
            refusals_logged: Mutex::default(),
            postgres: cfg.postgres.is_some().then(Arc::default),
            cfg: std::sync::RwLock::new(Arc::new(cfg)),
        };
        server.refresh_metrics();
        Ok(Arc::new(server))
    }

    /// Sets the per-agent gauges from the in-memory state.
    fn refresh_metrics(&self) {
        let live = lock(&self.live);
        for (id, l) in live.iter() {
            let label = metrics::AgentLabel { agent: id.clone() };
            if let Some(a) = &l.applied {
                self.metrics
                    .version
                    .get_or_create(&label)
                    .set(a.version as i64);
                self.metrics
                    .last_apply
                    .get_or_create(&label)
                    .set(a.applied_at as f64);
                for (class, n) in [
                    ("forward", a.counts.forward),
                    ("split", a.counts.split),
                    ("punt", a.counts.punt),
                ] {
                    self.metrics
                        .addresses
                        .get_or_create(&metrics::ClassLabel {
                            agent: id.clone(),
                            class: class.into(),
                        })
                        .set(n as i64);
                }
            }
            if let Some(t) = l.last_contact_at {
                self.metrics
                    .last_contact
                    .get_or_create(&label)
                    .set(t as f64);
            }
        }
    }

    /// Records contact from an agent reporting `hash` at `version`.
    pub fn contact(&self, agent: &str, version: u64, hash: &str) -> anyhow::Result<()> {
        let now = Instant::now();
        let wall = now_secs();
        lock(&self.db).touch(agent, wall, version, hash)?;
        let mut ended = None;
        {
            let mut live = lock(&self.live);
            if let Some(l) = live.get_mut(agent) {
                l.last_contact = Some(now);
                l.last_contact_at = Some(wall);
                l.reported_hash = Some(hash.to_string());
                let agrees = l.applied.as_ref().is_some_and(|a| a.hash == hash);
                if agrees {
                    l.disagree_since = None;
                    // The content a truncation cut came back whole: nothing to hold any more.
                    ended = l.held.take();
                } else {
                    l.disagree_since.get_or_insert(now);
                }
            }
        }
        if let Some(h) = ended {
            lock(&self.db).end_hold(agent)?;
            tracing::info!(
                agent,
                held_version = h.version,
                "the agent reports the applied snapshot again: the shrink guard's hold ends, nothing is released"
            );
        }
        self.metrics
            .last_contact
            .get_or_create(&metrics::AgentLabel {
                agent: agent.into(),
            })
            .set(wall as f64);
        Ok(())
    }

    /// A database write for `agent`'s request failed (a full disk, most likely): the agent gets
    /// a problem, which raises an alert, and the request an internal error. The maps stay.
    pub fn storage_failed(
        self: &Arc<Self>,
        agent: &str,
        what: &str,
        e: impl Into<anyhow::Error>,
    ) -> ingest::IngestError {
        let e = e.into();
        let detail = format!("cannot record {what}: {e:#}");
        tracing::error!(agent, "{detail}; the previous maps stay in force");
        self.set_problem(agent, Some(detail));
        ingest::IngestError::Internal(e)
    }

    /// Sets or clears an agent's problem; a new problem raises an alert.
    pub fn set_problem(self: &Arc<Self>, agent: &str, problem: Option<String>) {
        if let Err(e) = lock(&self.db).set_problem(agent, problem.as_deref()) {
            tracing::error!(agent, error = %e, "cannot record a problem in the database");
        }
        let alert = {
            let mut live = lock(&self.live);
            let Some(l) = live.get_mut(agent) else {
                return;
            };
            let changed = l.problem != problem;
            l.problem = problem.clone();
            let state = l.state.unwrap_or(State::Never);
            (changed && problem.is_some()).then(|| Alert {
                event: "problem".into(),
                agent: agent.into(),
                old: state,
                new: state,
                age_seconds: l.last_contact.map(|t| t.elapsed().as_secs()),
                version: l.applied.as_ref().map(|a| a.version),
                problem: problem.clone(),
                unknown_recipients: self.unknown_recipients(agent, state),
            })
        };
        if let Some(alert) = alert {
            tracing::error!(
                agent,
                problem = alert.problem.as_deref().unwrap_or(""),
                "problem"
            );
            let me = Arc::clone(self);
            self.tracker
                .spawn(async move { me.sinks().send(&alert).await });
        }
    }

    /// Runs `after_apply` in the background (one at a time); a failure becomes a problem.
    pub fn spawn_after_apply(self: &Arc<Self>, agent: String) {
        let argv = self.cfg().config.output.after_apply.clone();
        if argv.is_empty() {
            return;
        }
        let me = Arc::clone(self);
        self.tracker.spawn(async move {
            let _guard = me.hook_lock.lock().await;
            let limit = Duration::from_secs(me.cfg().config.output.after_apply_timeout_secs);
            match hooks::run(&argv, None, None, limit).await {
                Ok(()) => {
                    let had = lock(&me.live)
                        .get(&agent)
                        .and_then(|l| l.problem.clone())
                        .is_some_and(|p| p.starts_with("after_apply"));
                    if had {
                        me.set_problem(&agent, None);
                    }
                }
                Err(e) => me.set_problem(&agent, Some(format!("after_apply failed: {e}"))),
            }
        });
    }

    /// Tells systemd `state` and the freshness in a line (`STATUS=`, shown by `systemctl
    /// status`), when it runs the server (`NOTIFY_SOCKET`); a failure is logged, never fatal.
    pub fn notify_systemd(&self, state: sd_notify::NotifyState<'_>) {
        if std::env::var_os("NOTIFY_SOCKET").is_none() {
            return;
        }
        let s = api::status(self);
        let line: Vec<String> = (s.agents.iter())
            .map(|a| {
                let deferred = if a.unknown_recipients == "defer" {
                    ", unknown recipients deferred"
                } else {
                    ""
                };
                format!("{} {}{deferred}", a.agent, a.state)
            })
            .collect();
        let status = sd_notify::NotifyState::Status(&format!("{}: {}", s.state, line.join("; ")));
        if let Err(e) = sd_notify::notify(&[state, status]) {
            tracing::warn!(error = %e, "cannot notify systemd");
        }
    }
    /// Applies held snapshots that an operator released (`mxsync-server release`).
    pub fn apply_releases(self: &Arc<Self>) {
        let ids: Vec<String> = self
            .cfg()
            .config
            .agents
            .iter()
            .map(|a| a.id.clone())
            .collect();
        for id in ids {
            let row = lock(&self.db).agent(&id).ok().flatten();
            let Some(row) = row.filter(|r| r.release_requested) else {
                continue;
            };
            if let Err(e) = ingest::release(self, &id, row.release_forced) {
                tracing::error!(agent = id, error = %format!("{e:#}"), "release failed");
            }
        }
    }
}

/// Serves the API on `listener` until `shutdown` is cancelled; meanwhile checks freshness every
/// second and renders the maps again at start if they are missing or differ from the database.
pub async fn run(
    server: Arc<Server>,
    listener: tokio::net::TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let addr = listener.local_addr().context("listener address")?;
    let s = Arc::clone(&server);
    let changed = tokio::task::spawn_blocking(move || ingest::render_at_start(&s))
        .await
        .context("start-up render task")??;
    let cfg = server.cfg();
    if changed && let Some(first) = cfg.config.agents.first() {
        server.spawn_after_apply(first.id.clone());
    }
    tracing::info!(%addr, agents = cfg.config.agents.len(), "mxsync-server started");
    // Under a Type=notify unit: started once the listener is bound and the maps are in place.
    server.notify_systemd(sd_notify::NotifyState::Ready);
    // The database is written beside the maps, never before them (`postgres`).
    if let (Some(feed), Some(target)) = (&server.postgres, cfg.postgres.clone()) {
        let (s, feed, stop) = (Arc::clone(&server), Arc::clone(feed), shutdown.clone());
        server.tracker.spawn(postgres::run(s, target, feed, stop));
    }
    let watcher = {
        let s = Arc::clone(&server);
        let stop = shutdown.clone();
        server.tracker.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tick.tick() => {
                        s.check_freshness();
                        s.notify_systemd(sd_notify::NotifyState::Watchdog);
                        let s2 = Arc::clone(&s);
                        let _ = tokio::task::spawn_blocking(move || {
                            s2.apply_releases();
                            ingest::render_if_deferring_changed(&s2);
                        })
                        .await;
                    }
                }
            }
        })
    };
    let app = api::router(api::AppState {
        server: Arc::clone(&server),
    });
    let tls = match &cfg.config.tls {
        Some(tls) => Some(tls::acceptor(&tls.cert_file, &tls.key_file)?),
        None => None,
    };
    let limits = serve::Limits {
        max_connections: serve::fit_connections(cfg.config.max_connections),
        header_timeout: Duration::from_secs(cfg.config.header_timeout_secs),
    };
    serve::serve(
        listener,
        tls,
        app,
        limits,
        shutdown.clone(),
        Duration::from_secs(30),
    )
    .await
    .context("api server")?;
    tracing::info!("mxsync-server stop requested; API closed, finishing hook and alert tasks");
    let _ = watcher.await;
    server.tracker.close();
    if tokio::time::timeout(Duration::from_secs(30), server.tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("some hook or alert tasks did not finish within 30 s");
    }
    tracing::info!("mxsync-server stopped");
    Ok(())
}
