//! What the database gives back at start and on a reload: the stored bodies decoded, a delta
//! chain rebuilt into its snapshot (and checked against its hash), each agent's in-memory state,
//! and the live maps' generation adopted as the set the next install links from.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::time::Instant;

use crate::config::Loaded;
use crate::fresh::State;
use crate::store::{self, Counts, Store};
use crate::{Applied, Held, Live, maps, now_secs};

/// A crash between switching the maps and recording the apply leaves the live maps one version
/// ahead of the database. Adopt that version (its snapshot was stored, with its body, before the
/// apply began), so that the start-up render does not roll the maps back.
pub(crate) fn adopt_live_maps(cfg: &Loaded, store: &mut Store) -> anyhow::Result<()> {
    for (agent, version, hash) in maps::live_versions(&cfg.config.output.dir) {
        let Some(row) = store.agent(&agent)? else {
            continue;
        };
        if row.applied_version.is_some_and(|v| v >= version) {
            continue;
        }
        if let Some(id) = store.find_with_body(&agent, version, &hash)? {
            tracing::warn!(
                agent,
                version,
                "the live maps are newer than the recorded apply (a crash in between); adopting them"
            );
            store.set_applied(&store::ApplyRecord {
                agent: &agent,
                snapshot: id,
                version,
                hash: &hash,
                applied_at: now_secs(),
                counts: Counts::default(),
            })?;
            store.set_outcome(id, "applied", None, Some(now_secs()))?;
        }
    }
    Ok(())
}

/// Decompresses a stored body.
fn inflate_stored(body: &[u8], id: i64) -> anyhow::Result<Vec<u8>> {
    zstd::stream::decode_all(body).with_context(|| format!("decompressing stored snapshot {id}"))
}

/// Decompresses a stored body and parses it as JSON of a `T` (a delta).
fn decode_stored<T: serde::de::DeserializeOwned>(body: &[u8], id: i64) -> anyhow::Result<T> {
    parse_stored(&inflate_stored(body, id)?, id)
}

fn parse_stored<T: serde::de::DeserializeOwned>(json: &[u8], id: i64) -> anyhow::Result<T> {
    serde_json::from_slice(json).with_context(|| format!("parsing stored snapshot {id}"))
}

/// Decompresses a stored full snapshot, binary or JSON as it came.
fn decode_stored_snapshot(body: &[u8], id: i64) -> anyhow::Result<proto::Snapshot> {
    let plain = inflate_stored(body, id)?;
    if proto::snapshot::is_binary(&plain) {
        proto::Snapshot::from_binary(&plain)
            .with_context(|| format!("reading stored snapshot {id}"))
    } else {
        parse_stored(&plain, id)
    }
}

/// The snapshot of history row `id`, rebuilt from its chain (a full body, then the deltas
/// stored on it), with the number of deltas; `None` if the row or its body is gone. A chain
/// that does not rebuild the row's hash is an error: nothing is applied from it.
pub fn load_stored(store: &Store, id: i64) -> anyhow::Result<Option<(proto::Snapshot, usize)>> {
    rebuild(id, &store.chain(id)?)
}

/// [`load_stored`] of a chain already read (so the database need not stay locked meanwhile).
pub fn rebuild(id: i64, chain: &[store::Link]) -> anyhow::Result<Option<(proto::Snapshot, usize)>> {
    let Some((root, deltas)) = chain.split_first() else {
        return Ok(None);
    };
    if let Some(base) = root.base {
        anyhow::bail!(
            "stored snapshot {} is a delta against row {base}, which is gone",
            root.id
        );
    }
    let Some(body) = &root.body else {
        anyhow::ensure!(deltas.is_empty(), "stored snapshot {} has no body", root.id);
        return Ok(None);
    };
    let mut snap = decode_stored_snapshot(body, root.id)?;
    // Stored as the agent sent it; the server works on normalized content.
    snap.content.normalize();
    for link in deltas {
        let body = link
            .body
            .as_ref()
            .with_context(|| format!("stored delta {} has no body", link.id))?;
        let d: proto::delta::Delta = decode_stored(body, link.id)?;
        anyhow::ensure!(
            d.base_hash == snap.hash,
            "stored delta {} is against {}, not its base row's {}",
            link.id,
            d.base_hash,
            snap.hash
        );
        let content = proto::delta::apply_owned(std::mem::take(&mut snap.content), &d.changes)
            .with_context(|| format!("replaying stored delta {}", link.id))?;
        snap = d.result(content);
    }
    if !deltas.is_empty() {
        snap.content.normalize();
        let hash = snap.content.hash();
        anyhow::ensure!(
            hash == snap.hash,
            "stored snapshot {id} rebuilds to content hash {hash}, not its {}",
            snap.hash
        );
    }
    Ok(Some((snap, deltas.len())))
}

/// An agent's in-memory state from its database row: contact, state, and its applied and held
/// snapshots (at start, and for an agent a reload adds).
pub(crate) fn load_live(store: &Store, agent: &str) -> anyhow::Result<Live> {
    let now = Instant::now();
    let wall = now_secs();
    let row = store.agent(agent)?.unwrap_or_default();
    let mut l = Live {
        last_contact_at: row.last_contact_at,
        last_contact: row.last_contact_at.map(|t| {
            now.checked_sub(Duration::from_secs(wall.saturating_sub(t)))
                .unwrap_or(now)
        }),
        reported_hash: row.reported_hash.clone(),
        problem: row.problem.clone(),
        // The last announced state survives restarts, so a restart announces nothing new.
        state: Some(State::parse(&row.state)),
        ..Live::default()
    };
    if let Some(id) = row.applied_snapshot
        && let Some((snap, links)) =
            load_stored(store, id).with_context(|| format!("agent {agent}: applied snapshot"))?
    {
        let counts = Counts {
            addresses: row.applied_addresses.unwrap_or(0),
            ..Counts::default()
        };
        l.applied = Some(Arc::new(Applied {
            snapshot: id,
            links,
            version: snap.version,
            hash: snap.hash,
            applied_at: row.applied_at.unwrap_or(0),
            content: snap.content,
            part: std::sync::OnceLock::new(),
            counts,
        }));
    }
    if let Some(id) = row.held_snapshot {
        let held = store
            .history(Some(agent), u32::MAX)?
            .into_iter()
            .find(|h| h.id == id);
        if let Some(h) = held {
            l.held = Some(Held {
                snapshot: id,
                version: h.version,
                hash: h.hash,
                why: h.detail.unwrap_or_default(),
            });
        }
    }
    if let (Some(app), Some(rep)) = (&l.applied, &l.reported_hash)
        && app.hash != *rep
    {
        l.disagree_since = l.last_contact;
    }
    Ok(l)
}
