//! The end of the path: a snapshot past every check either held by the shrink guard, or
//! rendered with every other agent's maps, installed, and recorded; and the operator's release
//! of a held one.

use super::*;
use crate::postgres::Rows;

/// A body as stored, and the row it is a delta against, if it is one.
pub(super) struct Kept<'a> {
    pub(super) body: &'a [u8],
    pub(super) base: Option<i64>,
}

pub(super) fn hold(
    server: &Arc<Server>,
    agent: &str,
    snap: &Snapshot,
    stored: Kept<'_>,
    addresses: u64,
    why: &str,
) -> anyhow::Result<()> {
    let row = NewSnapshot {
        agent,
        version: snap.version,
        hash: &snap.hash,
        received_at: now_secs(),
        outcome: "held",
        detail: Some(why),
        counts: Some(Counts {
            addresses,
            ..Counts::default()
        }),
        body: Some(stored.body),
        base: stored.base,
    };
    let id = {
        let mut db = lock(&server.db);
        let id = db.insert_snapshot(&row)?;
        db.set_held(agent, id)?;
        id
    };
    tracing::error!(agent, version = snap.version, "{why}");
    if let Some(l) = lock(&server.live).get_mut(agent) {
        l.held = Some(Held {
            snapshot: id,
            version: snap.version,
            hash: snap.hash.clone(),
            why: why.to_string(),
        });
    }
    Ok(())
}

/// Renders every agent's maps with `snap` as `agent`'s, installs them, and records the apply.
/// `row` gives the snapshot's history row, waiting for it if it is being written: the new maps
/// are made live only once it is, and not at all if it cannot be. On failure the previous maps
/// stay in force, the row says `failed`, and the agent has a problem (which raises an alert).
pub(super) fn apply(
    server: &Arc<Server>,
    agent: &str,
    snap: Snapshot,
    row: impl FnOnce(&mut Steps) -> Result<Stored, IngestError>,
    part: Option<Arc<AgentPart>>,
    steps: &mut Steps,
) -> Result<SnapshotReply, IngestError> {
    let _apply = lock(&server.apply_lock);
    let mut row = Some(row);
    let mut stored = None;
    // The row, once: waited for before the switch, or after a failure that came first.
    let mut wait = |steps: &mut Steps| {
        if let Some(row) = row.take() {
            stored = Some(row(steps));
        }
        matches!(stored, Some(Ok(_)))
    };
    let result = match part {
        Some(p) => Ok(p),
        None => plan(server, agent, &snap, None).map(Arc::new),
    }
    .map_err(anyhow::Error::from)
    .and_then(|part| {
        let rendered = render_all(server, Some((agent, &snap, &part)))?;
        steps.mark("assemble");
        let ready = || {
            (wait(steps))
                .then_some(())
                .ok_or_else(|| "the snapshot's history row could not be written".to_string())
        };
        install(server, &rendered, ready)?;
        steps.mark("install");
        Ok((part, rendered.counts))
    });
    wait(steps);
    // A row that could not be written is the error (the maps did not change).
    let row = stored.expect("the row was waited for")?;
    let id = row.snapshot;
    let (part, counts) = match result {
        Ok(r) => r,
        Err(e) => {
            let detail = format!("{e:#}");
            tracing::error!(
                agent,
                version = snap.version,
                error = detail,
                "apply failed; the previous maps stay in force"
            );
            if let Err(e) = lock(&server.db).set_outcome(id, "failed", Some(&detail), None) {
                tracing::error!(agent, error = %e, "cannot record a failed apply");
            }
            server.set_problem(
                agent,
                Some(format!(
                    "apply of version {} failed: {detail}",
                    snap.version
                )),
            );
            return Err(IngestError::ApplyFailed);
        }
    };
    let c = counts.get(agent).copied().unwrap_or_default();
    let applied_at = now_secs();
    let cfg = server.cfg();
    {
        let mut db = lock(&server.db);
        let keep = cfg.config.history.keep;
        let record = ApplyRecord {
            agent,
            snapshot: id,
            version: snap.version,
            hash: &snap.hash,
            applied_at,
            counts: c,
        };
        let r = db.record_applied(&record, keep);
        if let Err(e) = r {
            // The maps are live; the database will say so after the next apply or restart.
            tracing::error!(agent, error = %e, "cannot record an apply in the database");
        }
    }
    steps.mark("record");
    let version = snap.version;
    let hash = snap.hash.clone();
    let applied = {
        let mut live = lock(&server.live);
        live.get_mut(agent).map(|l| {
            let agrees = l.reported_hash.as_deref() == Some(hash.as_str());
            if agrees {
                l.disagree_since = None;
            }
            l.held = None;
            // A spare made for the snapshot being replaced no longer fits (see `Spare`).
            if let Some(s) = l.spare.take() {
                free_later(s);
            }
            let applied = Arc::new(Applied {
                snapshot: id,
                links: row.links,
                version,
                hash: hash.clone(),
                applied_at,
                content: snap.content,
                part: part.into(),
                counts: c,
            });
            l.applied = Some(Arc::clone(&applied));
            applied
        })
    };
    // The maps are live: the database may have the rows now.
    if let (Some(feed), Some(applied), Some(a)) =
        (&server.postgres, &applied, cfg.config.agent(agent))
        && let Some(rows) = Rows::of(applied, &a.primary)
    {
        feed.publish(agent, rows);
    }
    let had_problem = lock(&server.live)
        .get(agent)
        .is_some_and(|l| l.problem.is_some());
    if had_problem {
        server.set_problem(agent, None);
    }
    server.refresh_metrics();
    tracing::info!(
        agent,
        version,
        addresses = c.addresses,
        forward = c.forward,
        split = c.split,
        punt = c.punt,
        ms = steps.started.elapsed().as_millis() as u64,
        %steps,
        "snapshot applied"
    );
    server.spawn_after_apply(agent.to_string());
    Ok(SnapshotReply {
        version,
        hash,
        applied_at,
    })
}

/// Applies the snapshot the shrink guard holds for `agent` (operator release): only while
/// the agent reports that snapshot as its content, unless `forced` (`release --force
/// VERSION`, the held version checked by the command). A release refused clears the request
/// and says why in the log.
pub fn release(server: &Arc<Server>, agent: &str, forced: bool) -> anyhow::Result<()> {
    let one = server.ingest_lock(agent);
    let _one = lock(&one);
    let (held, reported) = {
        let live = lock(&server.live);
        let l = live.get(agent);
        (
            l.and_then(|l| l.held.clone()),
            l.and_then(|l| l.reported_hash.clone()),
        )
    };
    let Some(h) = held else {
        lock(&server.db).set_held_released(agent)?;
        return Ok(());
    };
    if !forced && reported.as_deref() != Some(h.hash.as_str()) {
        lock(&server.db).set_held_released(agent)?;
        tracing::warn!(
            agent,
            held_version = h.version,
            reported_hash = reported.as_deref().unwrap_or("none"),
            "release refused: the agent now reports other content than the held snapshot; \
             `mxsync-server release {agent} --force {}` applies the held one anyway",
            h.version
        );
        return Ok(());
    }
    let chain = lock(&server.db).chain(h.snapshot)?;
    let (snap, links) =
        crate::rebuild(h.snapshot, &chain)?.context("the held snapshot's body is gone")?;
    drop(chain);
    tracing::warn!(
        agent,
        version = snap.version,
        "operator released the held snapshot"
    );
    let mut steps = Steps::start();
    let row = Stored {
        snapshot: h.snapshot,
        links,
    };
    apply(
        server,
        agent,
        snap,
        |_: &mut Steps| Ok(row),
        None,
        &mut steps,
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    lock(&server.db).set_outcome(h.snapshot, "released", Some(&h.why), None)?;
    Ok(())
}
