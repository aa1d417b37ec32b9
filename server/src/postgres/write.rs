//! One agent's write: one transaction that checks the version the database holds, writes the
//! rows (only those that changed when it holds the version this server wrote last, all of them
//! by COPY otherwise) and records the new version, so a reader sees the old set or the new one.

use std::pin::pin;

use bytes::Bytes;
use futures_util::SinkExt;
use tokio_postgres::{Client, Transaction};

use super::rows::{Changes, Rows, changes, copy_field, entries};
use super::{Error, schema};

/// What a write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wrote {
    /// Every row, by COPY (the database held another version, or none).
    Full {
        /// Rows of `recipients` and `forwards`.
        rows: u64,
    },
    /// Only the rows that changed since the version this server wrote last.
    Changed {
        /// Rows inserted or updated.
        set: u64,
        /// Rows deleted.
        gone: u64,
    },
    /// The database already holds this version (another server wrote it).
    Already,
    /// The database holds a newer version (another server wrote it): nothing was written.
    Newer(u64),
}

/// Writes `rows` as `agent`'s, in one transaction. `known` is what this server wrote last for
/// the agent, if it is sure it did; the rows that changed since are written only if the
/// database still holds exactly that version.
pub async fn write(
    client: &mut Client,
    agent: &str,
    rows: &Rows,
    known: Option<&Rows>,
) -> Result<Wrote, Error> {
    let version = i64::try_from(rows.version).map_err(|_| Error::Version(rows.version))?;
    let tx = client.transaction().await?;
    // Two servers of an HA pair write the same agent one after the other, and the version
    // check below sees the other's commit.
    tx.execute(
        "SELECT pg_advisory_xact_lock($1, hashtext($2))",
        &[&schema::LOCK, &agent],
    )
    .await?;
    let held = (tx.query_opt(
        "SELECT version, hash FROM mxsync.agents WHERE agent = $1",
        &[&agent],
    ))
    .await?
    .map(|r| (r.get::<_, i64>(0), r.get::<_, String>(1)));
    match &held {
        Some((v, _)) if *v > version => return Ok(Wrote::Newer(*v as u64)),
        Some((v, h)) if *v == version => {
            if *h != rows.hash {
                tracing::warn!(
                    agent,
                    version = rows.version,
                    "postgres: the database holds this version with another hash; kept"
                );
            }
            return Ok(Wrote::Already);
        }
        _ => {}
    }
    let base = known.filter(|k| {
        held.as_ref()
            .is_some_and(|(v, h)| *v == k.version as i64 && *h == k.hash)
    });
    let wrote = match base {
        Some(base) => changed(&tx, agent, base, rows).await?,
        None => full(&tx, agent, rows).await?,
    };
    tx.execute("DELETE FROM mxsync.domains WHERE agent = $1", &[&agent])
        .await?;
    for d in &rows.domains {
        tx.execute(
            "INSERT INTO mxsync.domains (domain, agent, transport, route) VALUES ($1, $2, $3, $4)
             ON CONFLICT (domain) DO UPDATE SET agent = $2, transport = $3, route = $4",
            &[&d.domain, &agent, &d.transport, &d.route],
        )
        .await?;
    }
    tx.execute(
        "INSERT INTO mxsync.agents (agent, version, hash) VALUES ($1, $2, $3)
         ON CONFLICT (agent) DO UPDATE SET version = $2, hash = $3, written_at = now()",
        &[&agent, &version, &rows.hash],
    )
    .await?;
    tx.commit().await?;
    Ok(wrote)
}

/// Every row of `rows`, replacing the agent's, by COPY.
async fn full(tx: &Transaction<'_>, agent: &str, rows: &Rows) -> Result<Wrote, Error> {
    tx.execute("DELETE FROM mxsync.recipients WHERE agent = $1", &[&agent])
        .await?;
    tx.execute("DELETE FROM mxsync.forwards WHERE agent = $1", &[&agent])
        .await?;
    let mut n = 0;
    if let Some((name, text)) = rows.recipients() {
        n += copy(
            tx,
            "COPY mxsync.recipients (address, agent) FROM STDIN",
            entries(name, text.pieces()).map(|(k, _)| (k.into_owned(), None)),
            agent,
        )
        .await?;
    }
    if let Some((name, text)) = rows.forwards() {
        n += copy(
            tx,
            "COPY mxsync.forwards (address, targets, agent) FROM STDIN",
            entries(name, text.pieces()).map(|(k, v)| (k.into_owned(), Some(v.to_string()))),
            agent,
        )
        .await?;
    }
    Ok(Wrote::Full { rows: n })
}

/// COPY of `rows` (address, and targets when the table has them) each followed by `agent`, in chunks of
/// about a MiB. Returns the rows sent.
async fn copy(
    tx: &Transaction<'_>,
    statement: &str,
    rows: impl Iterator<Item = (String, Option<String>)>,
    agent: &str,
) -> Result<u64, Error> {
    const CHUNK: usize = 1 << 20;
    let mut sink = pin!(tx.copy_in::<_, Bytes>(statement).await?);
    let mut buf = Vec::with_capacity(CHUNK + 4096);
    let mut n = 0;
    for (address, targets) in rows {
        copy_field(&mut buf, &address);
        buf.push(b'\t');
        if let Some(targets) = targets {
            copy_field(&mut buf, &targets);
            buf.push(b'\t');
        }
        copy_field(&mut buf, agent);
        buf.push(b'\n');
        n += 1;
        if buf.len() >= CHUNK {
            let chunk = std::mem::replace(&mut buf, Vec::with_capacity(CHUNK + 4096));
            sink.send(Bytes::from(chunk)).await?;
        }
    }
    if !buf.is_empty() {
        sink.send(Bytes::from(buf)).await?;
    }
    sink.as_mut().finish().await?;
    Ok(n)
}

/// The rows that changed from `base` (what the database holds) to `rows`.
async fn changed(
    tx: &Transaction<'_>,
    agent: &str,
    base: &Rows,
    rows: &Rows,
) -> Result<Wrote, Error> {
    let (mut set, mut gone) = (0, 0);
    let empty = crate::render::Text::default();
    let diff = |old: Option<(&str, &crate::render::Text)>,
                new: Option<(&str, &crate::render::Text)>| {
        let name = new.or(old).map_or("", |(n, _)| n);
        changes(
            name,
            old.map_or(&empty, |(_, t)| t),
            new.map_or(&empty, |(_, t)| t),
        )
    };
    let Changes { gone: g, set: s } = diff(base.recipients(), rows.recipients());
    if !g.is_empty() {
        gone += tx
            .execute(
                "DELETE FROM mxsync.recipients WHERE agent = $1 AND address = ANY($2)",
                &[&agent, &g],
            )
            .await?;
    }
    if !s.is_empty() {
        let keys: Vec<String> = s.into_iter().map(|(k, _)| k).collect();
        set += tx
            .execute(
                "INSERT INTO mxsync.recipients (address, agent) SELECT a, $1 FROM unnest($2::text[]) a
                 ON CONFLICT (address) DO UPDATE SET agent = EXCLUDED.agent",
                &[&agent, &keys],
            )
            .await?;
    }
    let Changes { gone: g, set: s } = diff(base.forwards(), rows.forwards());
    if !g.is_empty() {
        gone += tx
            .execute(
                "DELETE FROM mxsync.forwards WHERE agent = $1 AND address = ANY($2)",
                &[&agent, &g],
            )
            .await?;
    }
    if !s.is_empty() {
        let (keys, targets): (Vec<String>, Vec<String>) = s.into_iter().unzip();
        set += tx
            .execute(
                "INSERT INTO mxsync.forwards (address, agent, targets)
                 SELECT a, $1, t FROM unnest($2::text[], $3::text[]) AS u(a, t)
                 ON CONFLICT (address) DO UPDATE SET agent = EXCLUDED.agent, targets = EXCLUDED.targets",
                &[&agent, &keys, &targets],
            )
            .await?;
    }
    Ok(Wrote::Changed { set, gone })
}

/// Replaces the domains whose unknown recipients are deferred (`mxsync.deferred`).
pub async fn deferred(client: &mut Client, domains: &[String]) -> Result<(), Error> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1, 1)", &[&schema::LOCK])
        .await?;
    tx.execute("DELETE FROM mxsync.deferred", &[]).await?;
    if !domains.is_empty() {
        tx.execute(
            "INSERT INTO mxsync.deferred (domain) SELECT unnest($1::text[])",
            &[&domains],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(())
}
