//! The SQLite store: per-agent state (replay counter, last contact, applied and held snapshot)
//! and the history of every snapshot received, with its outcome.
//!
//! All calls are blocking; the server makes them from `spawn_blocking` or from the apply thread,
//! never on an async worker. Schema changes go through [`MIGRATIONS`] and the `schema_version`
//! table. Snapshot bodies are kept (zstd-compressed JSON) only where they may be needed again:
//! the applied one and a held one. A row with a `base` keeps a delta against that row, not the
//! whole content; the applied row's chain of bases down to a full body is kept with it.

use std::path::Path;

use rusqlite::{Connection, OptionalExtension, params};

mod rows;
mod schema;
pub use rows::{AgentRow, ApplyRecord, Counts, HistoryRow, Link, NewSnapshot};
use schema::{MIGRATIONS, chain_cte};

/// `agents.release_requested` for a forced release (1: a release, applied only while the
/// agent reports the held snapshot).
const RELEASE_FORCED: i64 = 2;

/// A store error: the database said no.
#[derive(Debug, thiserror::Error)]
#[error("state database: {0}")]
pub struct StoreError(#[from] rusqlite::Error);

/// Result of store calls.
pub type Result<T> = std::result::Result<T, StoreError>;

/// The database.
pub struct Store {
    conn: Connection,
}

/// The statements of [`Store::set_applied`], in `tx`.
fn applied_in(tx: &rusqlite::Transaction<'_>, r: &ApplyRecord<'_>) -> Result<()> {
    let ApplyRecord {
        agent,
        snapshot,
        version,
        hash,
        applied_at,
        counts,
    } = *r;
    let addresses = counts.addresses;
    tx.execute(
        &format!(
            "WITH RECURSIVE {}, {}
             DELETE FROM bodies WHERE snapshot IN old AND snapshot NOT IN chain
               AND snapshot IN (SELECT id FROM snapshots WHERE agent = ?1)",
            chain_cte("chain", "?2"),
            chain_cte("old", "SELECT applied_snapshot FROM agents WHERE id = ?1"),
        ),
        params![agent, snapshot],
    )?;
    supersede_held_in(tx, agent, snapshot)?;
    tx.execute(
        "UPDATE agents SET applied_snapshot = ?2, applied_version = ?3, applied_hash = ?4,
                applied_at = ?5, applied_addresses = ?6, held_snapshot = NULL,
                release_requested = 0
         WHERE id = ?1",
        params![
            agent,
            snapshot,
            version as i64,
            hash,
            applied_at as i64,
            addresses as i64
        ],
    )?;
    Ok(())
}

/// Drops the body of `agent`'s held row unless it is `snapshot`, and marks it superseded.
fn supersede_held_in(tx: &rusqlite::Transaction<'_>, agent: &str, snapshot: i64) -> Result<()> {
    let held = "SELECT id FROM snapshots WHERE agent = ?1 AND id != ?2
                  AND id = (SELECT held_snapshot FROM agents WHERE id = ?1)";
    tx.execute(
        &format!("DELETE FROM bodies WHERE snapshot IN ({held})"),
        params![agent, snapshot],
    )?;
    tx.execute(
        &format!("UPDATE snapshots SET outcome = 'superseded' WHERE id IN ({held})"),
        params![agent, snapshot],
    )?;
    Ok(())
}

/// The statements of [`Store::prune`] (the rows, then the bodies they leave), on `conn` (or a
/// transaction).
fn prune_in(conn: &Connection, agent: &str, keep: u32) -> Result<usize> {
    let pruned = conn.execute(
        &format!(
            "WITH RECURSIVE {}
             DELETE FROM snapshots WHERE agent = ?1
               AND id NOT IN (SELECT id FROM snapshots WHERE agent = ?1 ORDER BY id DESC LIMIT ?2)
               AND id NOT IN chain",
            chain_cte(
                "chain",
                "SELECT applied_snapshot FROM agents WHERE id = ?1
                 UNION SELECT held_snapshot FROM agents WHERE id = ?1"
            )
        ),
        params![agent, keep as i64],
    )?;
    if pruned > 0 {
        conn.execute(
            "DELETE FROM bodies WHERE snapshot NOT IN (SELECT id FROM snapshots)",
            [],
        )?;
    }
    Ok(pruned)
}

fn u(v: Option<i64>) -> Option<u64> {
    v.map(|v| v.max(0) as u64)
}

impl Store {
    /// Opens (creating if needed) the database at `path`, in WAL mode, migrated.
    pub fn open(path: &Path) -> Result<Store> {
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        Self::migrate(conn)
    }

    /// An in-memory database (tests).
    pub fn open_in_memory() -> Result<Store> {
        Self::migrate(Connection::open_in_memory()?)
    }

    fn migrate(mut conn: Connection) -> Result<Store> {
        conn.execute_batch("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")?;
        let have: i64 = conn.query_row(
            "SELECT COALESCE(MAX(version), 0) FROM schema_version",
            [],
            |r| r.get(0),
        )?;
        for (i, m) in MIGRATIONS.iter().enumerate().skip(have.max(0) as usize) {
            let tx = conn.transaction()?;
            tx.execute_batch(m)?;
            tx.execute("DELETE FROM schema_version", [])?;
            tx.execute(
                "INSERT INTO schema_version (version) VALUES (?1)",
                [i as i64 + 1],
            )?;
            tx.commit()?;
        }
        Ok(Store { conn })
    }

    /// The schema version (for tests and `check-config`).
    pub fn schema_version(&self) -> Result<i64> {
        Ok(self
            .conn
            .query_row("SELECT MAX(version) FROM schema_version", [], |r| r.get(0))?)
    }

    /// Makes sure every configured agent has a row.
    pub fn ensure_agents<'a>(&self, ids: impl IntoIterator<Item = &'a str>) -> Result<()> {
        for id in ids {
            self.conn
                .execute("INSERT OR IGNORE INTO agents (id) VALUES (?1)", [id])?;
        }
        Ok(())
    }

    /// An agent's row.
    pub fn agent(&self, id: &str) -> Result<Option<AgentRow>> {
        Ok(self
            .conn
            .query_row(
                "SELECT id, last_seq, last_contact_at, reported_version, reported_hash, applied_snapshot,
                        applied_version, applied_hash, applied_at, applied_addresses, held_snapshot,
                        release_requested, problem, state
                 FROM agents WHERE id = ?1",
                [id],
                |r| {
                    Ok(AgentRow {
                        id: r.get(0)?,
                        last_seq: u(r.get(1)?).unwrap_or(0),
                        last_contact_at: u(r.get(2)?),
                        reported_version: u(r.get(3)?),
                        reported_hash: r.get(4)?,
                        applied_snapshot: r.get(5)?,
                        applied_version: u(r.get(6)?),
                        applied_hash: r.get(7)?,
                        applied_at: u(r.get(8)?),
                        applied_addresses: u(r.get(9)?),
                        held_snapshot: r.get(10)?,
                        release_requested: r.get::<_, i64>(11)? != 0,
                        release_forced: r.get::<_, i64>(11)? == RELEASE_FORCED,
                        problem: r.get(12)?,
                        state: r.get(13)?,
                    })
                },
            )
            .optional()?)
    }

    /// Accepts `seq` for `agent` only if it is above the last one accepted, and records it, in
    /// one statement (so two racing requests cannot both pass). Returns whether it was accepted.
    pub fn accept_seq(&self, agent: &str, seq: u64) -> Result<bool> {
        let n = self.conn.execute(
            "UPDATE agents SET last_seq = ?2 WHERE id = ?1 AND last_seq < ?2",
            params![agent, seq as i64],
        )?;
        Ok(n == 1)
    }

    /// Records contact from the agent and what it reported.
    pub fn touch(&self, agent: &str, at: u64, version: u64, hash: &str) -> Result<()> {
        self.conn.execute(
            "UPDATE agents SET last_contact_at = ?2, reported_version = ?3, reported_hash = ?4 WHERE id = ?1",
            params![agent, at as i64, version as i64, hash],
        )?;
        Ok(())
    }

    /// Adds a history row (and its body, if kept) and returns its id.
    pub fn insert_snapshot(&mut self, s: &NewSnapshot<'_>) -> Result<i64> {
        let c = s.counts;
        let tx = self.conn.transaction()?;
        tx.execute(
            "INSERT INTO snapshots (agent, version, hash, received_at, outcome, detail, addresses, forward, split, punt, base)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            params![
                s.agent,
                s.version as i64,
                s.hash,
                s.received_at as i64,
                s.outcome,
                s.detail,
                c.map(|c| c.addresses as i64),
                c.map(|c| c.forward as i64),
                c.map(|c| c.split as i64),
                c.map(|c| c.punt as i64),
                s.base,
            ],
        )?;
        let id = tx.last_insert_rowid();
        if let Some(body) = s.body {
            tx.execute(
                "INSERT INTO bodies (snapshot, body) VALUES (?1, ?2)",
                params![id, body],
            )?;
        }
        tx.commit()?;
        Ok(id)
    }

    /// Changes a history row's outcome.
    pub fn set_outcome(
        &self,
        id: i64,
        outcome: &str,
        detail: Option<&str>,
        applied_at: Option<u64>,
    ) -> Result<()> {
        self.conn.execute(
            "UPDATE snapshots SET outcome = ?2, detail = ?3, applied_at = COALESCE(?4, applied_at) WHERE id = ?1",
            params![id, outcome, detail, applied_at.map(|t| t as i64)],
        )?;
        Ok(())
    }

    /// Records that `snapshot` is now applied for `agent`, in one transaction: the previous
    /// applied row and its chain lose their bodies where the new chain does not need them, a
    /// held one is dropped.
    pub fn set_applied(&mut self, r: &ApplyRecord<'_>) -> Result<()> {
        let tx = self.conn.transaction()?;
        applied_in(&tx, r)?;
        tx.commit()?;
        Ok(())
    }

    /// Records an apply in one transaction: [`Store::set_applied`], the row's outcome
    /// (`applied`, at `applied_at`) and plan counts, and [`Store::prune`] with `keep`.
    pub fn record_applied(&mut self, r: &ApplyRecord<'_>, keep: u32) -> Result<()> {
        let tx = self.conn.transaction()?;
        applied_in(&tx, r)?;
        let c = r.counts;
        tx.execute(
            "UPDATE snapshots SET outcome = 'applied', detail = NULL, applied_at = ?2,
                    addresses = ?3, forward = ?4, split = ?5, punt = ?6
             WHERE id = ?1",
            params![
                r.snapshot,
                r.applied_at as i64,
                c.addresses as i64,
                c.forward as i64,
                c.split as i64,
                c.punt as i64
            ],
        )?;
        prune_in(&tx, r.agent, keep)?;
        tx.commit()?;
        Ok(())
    }

    /// Marks `snapshot` as held for `agent` (dropping the body of a previously held one).
    pub fn set_held(&mut self, agent: &str, snapshot: i64) -> Result<()> {
        let tx = self.conn.transaction()?;
        supersede_held_in(&tx, agent, snapshot)?;
        tx.execute(
            "UPDATE agents SET held_snapshot = ?2, release_requested = 0 WHERE id = ?1",
            params![agent, snapshot],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// The history row of `agent`'s snapshot `version` with `hash`, if its body is kept.
    pub fn find_with_body(&self, agent: &str, version: u64, hash: &str) -> Result<Option<i64>> {
        Ok(self
            .conn
            .query_row(
                "SELECT id FROM snapshots WHERE agent = ?1 AND version = ?2 AND hash = ?3
                   AND id IN (SELECT snapshot FROM bodies)
                 ORDER BY id DESC LIMIT 1",
                params![agent, version as i64, hash],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// Clears a release request that has nothing to release.
    pub fn set_held_released(&self, agent: &str) -> Result<()> {
        self.conn.execute(
            "UPDATE agents SET release_requested = 0 WHERE id = ?1",
            [agent],
        )?;
        Ok(())
    }

    /// Asks the running server to apply the held snapshot (`mxsync-server release`), `forced`
    /// or only while the agent reports it.
    pub fn request_release(&self, agent: &str, forced: bool) -> Result<bool> {
        let n = self.conn.execute(
            "UPDATE agents SET release_requested = ?2 WHERE id = ?1 AND held_snapshot IS NOT NULL",
            params![agent, if forced { RELEASE_FORCED } else { 1 }],
        )?;
        Ok(n == 1)
    }

    /// The version and hash of the snapshot held for `agent`, if any.
    pub fn held(&self, agent: &str) -> Result<Option<(u64, String)>> {
        Ok(self
            .conn
            .query_row(
                "SELECT version, hash FROM snapshots
                 WHERE id = (SELECT held_snapshot FROM agents WHERE id = ?1)",
                [agent],
                |r| Ok((u(r.get(0)?).unwrap_or(0), r.get(1)?)),
            )
            .optional()?)
    }

    /// Ends `agent`'s hold without applying it: the agent's content came back to the applied
    /// snapshot. The held row says so and its body goes.
    pub fn end_hold(&mut self, agent: &str) -> Result<()> {
        let tx = self.conn.transaction()?;
        let held = "SELECT held_snapshot FROM agents WHERE id = ?1";
        tx.execute(
            &format!("DELETE FROM bodies WHERE snapshot IN ({held})"),
            [agent],
        )?;
        tx.execute(
            &format!(
                "UPDATE snapshots SET outcome = 'dropped',
                   detail = 'the agent came back to the applied snapshot'
                 WHERE id IN ({held})"
            ),
            [agent],
        )?;
        tx.execute(
            "UPDATE agents SET held_snapshot = NULL, release_requested = 0 WHERE id = ?1",
            [agent],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Sets or clears an agent's problem.
    pub fn set_problem(&self, agent: &str, problem: Option<&str>) -> Result<()> {
        self.conn.execute(
            "UPDATE agents SET problem = ?2 WHERE id = ?1",
            params![agent, problem],
        )?;
        Ok(())
    }

    /// Records the freshness state the watcher computed.
    pub fn set_state(&self, agent: &str, state: &str) -> Result<()> {
        self.conn.execute(
            "UPDATE agents SET state = ?2 WHERE id = ?1",
            params![agent, state],
        )?;
        Ok(())
    }

    /// The rows `snapshot`'s content is rebuilt from, the full one first and `snapshot` last;
    /// empty if there is no such row. Ends early (with a row whose `base` is set) where a base
    /// row is gone.
    pub fn chain(&self, snapshot: i64) -> Result<Vec<Link>> {
        let mut stmt = self.conn.prepare(
            "SELECT s.id, s.base, b.body FROM snapshots s
                 LEFT JOIN bodies b ON b.snapshot = s.id WHERE s.id = ?1",
        )?;
        let mut out = Vec::new();
        let mut next = Some(snapshot);
        while let Some(id) = next {
            let link = stmt
                .query_row([id], |r| {
                    Ok(Link {
                        id: r.get(0)?,
                        base: r.get(1)?,
                        body: r.get(2)?,
                    })
                })
                .optional()?;
            let Some(link) = link else { break };
            // A cycle cannot be written by this code; stop rather than loop if one was.
            next = link.base.filter(|b| out.iter().all(|l: &Link| l.id != *b));
            out.push(link);
        }
        out.reverse();
        Ok(out)
    }

    /// A stored snapshot body (compressed).
    pub fn body(&self, snapshot: i64) -> Result<Option<Vec<u8>>> {
        Ok(self
            .conn
            .query_row(
                "SELECT body FROM bodies WHERE snapshot = ?1",
                [snapshot],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// History, newest first; of one agent or all.
    pub fn history(&self, agent: Option<&str>, limit: u32) -> Result<Vec<HistoryRow>> {
        let mut stmt = self.conn.prepare(
            "SELECT id, agent, version, hash, received_at, applied_at, outcome, detail, addresses, forward, split, punt
             FROM snapshots WHERE (?1 IS NULL OR agent = ?1) ORDER BY id DESC LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![agent, limit as i64], |r| {
            Ok(HistoryRow {
                id: r.get(0)?,
                agent: r.get(1)?,
                version: u(r.get(2)?).unwrap_or(0),
                hash: r.get(3)?,
                received_at: u(r.get(4)?).unwrap_or(0),
                applied_at: u(r.get(5)?),
                outcome: r.get(6)?,
                detail: r.get(7)?,
                addresses: u(r.get(8)?),
                forward: u(r.get(9)?),
                split: u(r.get(10)?),
                punt: u(r.get(11)?),
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    /// Deletes all but the newest `keep` rows of `agent`, never the applied or held one nor a
    /// row either is rebuilt from.
    pub fn prune(&self, agent: &str, keep: u32) -> Result<usize> {
        prune_in(&self.conn, agent, keep)
    }

    /// `PRAGMA integrity_check` says "ok".
    pub fn integrity_ok(&self) -> Result<bool> {
        let s: String = self
            .conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))?;
        Ok(s == "ok")
    }

    /// Runs `sql` on the database: for tests that make it fail in a given way.
    #[cfg(test)]
    pub(crate) fn execute_batch(&self, sql: &str) -> Result<()> {
        Ok(self.conn.execute_batch(sql)?)
    }
}

#[cfg(test)]
mod tests;
