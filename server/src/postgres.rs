//! `[output.postgres]`: every agent's rows in PostgreSQL, for a fleet of MTAs that query the
//! database (Postfix `pgsql:`, Exim `pgsql`) and replicate it with its own tools.
//!
//! An apply publishes the agent's rows ([`Feed::publish`]) once its local maps are live; one
//! task ([`run`]) writes them, one transaction per agent ([`write::write`]), and never holds up
//! an apply or the maps. While the database cannot be written, each agent waiting on it has a
//! problem (an alert), and the task tries again every `retry_secs` and at each apply, with the
//! latest rows only: the database catches up in one write. A server killed during a write
//! leaves the transaction uncommitted; the database keeps the previous version, and the next
//! start writes the current one.
//!
//! - [`settings`]: the configuration; [`schema`]: tables and migrations;
//! - [`rows`]: what is written, and what changed; [`write`]: the transaction.

pub mod rows;
pub mod schema;
pub mod settings;
pub mod write;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;

pub use rows::Rows;
pub use settings::{Settings, Target};
pub use write::Wrote;

use crate::{Server, lock};

/// A database error, or a version the database cannot hold.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The client or the server said no.
    #[error("{}", pg_error(.0))]
    Db(#[from] tokio_postgres::Error),
    /// The connection attempt took longer than `connect_timeout_secs`.
    #[error("no connection within {0} s")]
    Timeout(u64),
    /// The schema was migrated by a newer mxsync-server.
    #[error("the schema mxsync is at version {0}, newer than this server's {v}", v = schema::VERSION)]
    Newer(i64),
    /// Versions are 63-bit in the database.
    #[error("version {0} does not fit a bigint")]
    Version(u64),
}

/// The database's own message and detail where it sent one, else the client's.
fn pg_error(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => match db.detail() {
            Some(d) => format!("{}: {} ({d})", db.severity(), db.message()),
            None => format!("{}: {}", db.severity(), db.message()),
        },
        None => match std::error::Error::source(e) {
            Some(cause) => format!("{e}: {cause}"),
            None => e.to_string(),
        },
    }
}

/// The rows waiting to be written: the latest per agent.
#[derive(Default)]
pub struct Feed {
    wanted: Mutex<BTreeMap<String, Arc<Rows>>>,
    wake: tokio::sync::Notify,
}

impl Feed {
    /// `agent`'s rows to write (replacing any not written yet).
    pub fn publish(&self, agent: &str, rows: Rows) {
        lock(&self.wanted).insert(agent.to_string(), Arc::new(rows));
        self.wake.notify_one();
    }
}

/// Connects (TLS or not, as `target` says) and migrates the schema.
pub async fn connect(target: &Target) -> Result<Client, Error> {
    let timeout = target.config.get_connect_timeout().copied();
    let attempt = async {
        match &target.tls {
            Some(tls) => open(&target.config, tls.clone()).await,
            None => open(&target.config, tokio_postgres::NoTls).await,
        }
    };
    let secs = timeout.unwrap_or(Duration::from_secs(5));
    let mut client = tokio::time::timeout(secs + Duration::from_secs(1), attempt)
        .await
        .map_err(|_| Error::Timeout(secs.as_secs()))??;
    schema::migrate(&mut client).await?;
    Ok(client)
}

/// Connects through `tls`, the connection driven by a task of its own.
async fn open<T>(config: &tokio_postgres::Config, tls: T) -> Result<Client, Error>
where
    T: tokio_postgres::tls::MakeTlsConnect<tokio_postgres::Socket>,
    T::Stream: Send + 'static,
{
    let (client, conn) = config.connect(tls).await?;
    tokio::spawn(drive(conn));
    Ok(client)
}

/// Runs a connection until it closes, logging why it did.
async fn drive<S, T>(conn: tokio_postgres::Connection<S, T>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    if let Err(e) = conn.await {
        tracing::warn!(error = %pg_error(&e), "postgres: connection closed");
    }
}

/// The rows of `agent` as its live state gives them (at start, before any apply).
pub fn live_rows(server: &Server, agent: &str) -> Option<Rows> {
    let cfg = server.cfg();
    let primary = cfg.config.agent(agent)?.primary.clone();
    let applied = lock(&server.live).get(agent)?.applied.clone()?;
    Rows::of(&applied, &primary)
}

/// What the task knows of one agent.
#[derive(Default)]
struct Known {
    /// The rows the database holds as this server wrote them (for writing only changes).
    held: Option<Arc<Rows>>,
    /// The version and hash last dealt with (written, found there, or found older).
    settled: Option<(u64, String)>,
}

/// Writes every published set of rows until `stop`; see the module.
pub async fn run(server: Arc<Server>, target: Target, feed: Arc<Feed>, stop: CancellationToken) {
    let agents: Vec<String> = (server.cfg().config.agents.iter())
        .map(|a| a.id.clone())
        .collect();
    for a in &agents {
        if let Some(rows) = live_rows(&server, a) {
            lock(&feed.wanted)
                .entry(a.clone())
                .or_insert_with(|| Arc::new(rows));
        }
    }
    tracing::info!(database = %target.describe, "postgres: writing every apply");
    let mut client: Option<Client> = None;
    let mut known: BTreeMap<String, Known> = BTreeMap::new();
    let mut deferred_written: Option<Vec<String>> = None;
    loop {
        let wanted: Vec<(String, Arc<Rows>)> = (lock(&feed.wanted).iter())
            .filter(|(a, r)| {
                let k = known.get(*a).and_then(|k| k.settled.as_ref());
                k.is_none_or(|(v, h)| *v != r.version || *h != r.hash)
            })
            .map(|(a, r)| (a.clone(), Arc::clone(r)))
            .collect();
        let deferred = lock(&server.deferring).clone();
        let stale_set = deferred.is_some() && deferred != deferred_written;
        let mut failed = false;
        if !wanted.is_empty() || stale_set {
            if client.as_ref().is_none_or(Client::is_closed) {
                client = match connect(&target).await {
                    Ok(c) => Some(c),
                    Err(e) => {
                        for (agent, rows) in &wanted {
                            problem(&server, agent, Some(failure(&target, rows, &e))).await;
                        }
                        tracing::error!(database = %target.describe, error = %e, "postgres: cannot connect");
                        None
                    }
                };
            }
            failed = client.is_none();
            if let Some(c) = client.as_mut() {
                for (agent, rows) in &wanted {
                    let k = known.entry(agent.clone()).or_default();
                    failed |= !write_agent(&server, &target, c, agent, rows, k).await;
                }
                if stale_set && let Some(d) = &deferred {
                    match write::deferred(c, d).await {
                        Ok(()) => deferred_written = deferred.clone(),
                        Err(e) => {
                            failed = true;
                            tracing::error!(error = %e, "postgres: cannot write the deferred domains");
                        }
                    }
                }
            }
        }
        // The deferred domains change with freshness, not with an apply: looked at each second.
        let wait = if failed {
            target.retry
        } else {
            Duration::from_secs(1)
        };
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = feed.wake.notified() => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// Writes `agent`'s `rows` and records in `k` what the database then holds; whether it could.
async fn write_agent(
    server: &Arc<Server>,
    target: &Target,
    client: &mut Client,
    agent: &str,
    rows: &Arc<Rows>,
    k: &mut Known,
) -> bool {
    let started = std::time::Instant::now();
    let wrote = match write::write(client, agent, rows, k.held.as_deref()).await {
        Ok(wrote) => wrote,
        Err(e) => {
            tracing::error!(agent, version = rows.version, error = %e, "postgres: write failed; the local maps are live");
            problem(server, agent, Some(failure(target, rows, &e))).await;
            return false;
        }
    };
    k.settled = Some((rows.version, rows.hash.clone()));
    if let Wrote::Newer(theirs) = wrote {
        // Another server of an HA pair is ahead; this one catches up when the agent pushes
        // to it.
        tracing::warn!(
            agent,
            version = rows.version,
            theirs,
            "postgres: the database holds a newer version; left as it is"
        );
        k.held = None;
    } else {
        tracing::info!(
            agent,
            version = rows.version,
            ?wrote,
            ms = started.elapsed().as_millis() as u64,
            "postgres: written"
        );
        k.held = Some(Arc::clone(rows));
        problem(server, agent, None).await;
    }
    true
}

/// The problem an agent has while its rows cannot be written.
fn failure(target: &Target, rows: &Rows, e: &Error) -> String {
    format!(
        "postgres: version {} not written to {}: {e}; the local maps are live, retrying every {} s",
        rows.version,
        target.describe,
        target.retry.as_secs()
    )
}

/// Sets `agent`'s problem to a database one, or clears a database one (never another).
async fn problem(server: &Arc<Server>, agent: &str, new: Option<String>) {
    let current = lock(&server.live)
        .get(agent)
        .and_then(|l| l.problem.clone());
    let ours = current
        .as_deref()
        .is_some_and(|p| p.starts_with("postgres:"));
    let change = match &new {
        Some(n) => current.as_deref() != Some(n.as_str()),
        None => ours,
    };
    if change {
        let (s, agent) = (Arc::clone(server), agent.to_string());
        let _ = tokio::task::spawn_blocking(move || s.set_problem(&agent, new)).await;
    }
}

/// `check-config`: connects and migrates within the connect timeout; what to print.
pub fn check(target: &Target) -> Result<String, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        let client = connect(target).await.map_err(|e| e.to_string())?;
        let v: i32 = client
            .query_one("SELECT version FROM mxsync.schema_version", &[])
            .await
            .map_err(|e| e.to_string())?
            .get(0);
        Ok(format!(
            "postgres {}: schema mxsync version {v}",
            target.describe
        ))
    })
}

#[cfg(test)]
mod tests;
