//! From a verified request to live maps (blocking; called from `spawn_blocking`).
//!
//! Order (DESIGN section 3): decompress within the limit, parse, check the agent's domains,
//! validate and re-hash the content, compare versions, apply the shrink guard, store, plan,
//! render, install, record the apply, and only then answer. (A snapshot that claims to be new is
//! planned and rendered in memory while another thread hashes it; the checks come before
//! anything of it is stored or written.) Every refusal of an authenticated request is a history
//! row; nothing it carried reaches the maps.

use std::sync::Arc;
use std::time::Instant as StdInstant;

use anyhow::Context;
use proto::Snapshot;
use proto::delta::Changes;
use proto::plan::Affected;
use proto::wire::SnapshotReply;

use crate::render::{AgentMaps, AgentPart, render_agent, render_agent_affected};
use crate::store::{ApplyRecord, Counts, NewSnapshot};
use crate::{Applied, Held, Server, lock, now_secs};

fn refuse(server: &Server, agent: &str, snap: Option<&Snapshot>, err: IngestError) -> IngestError {
    let (version, hash) = snap.map_or((0, ""), |s| (s.version, s.hash.as_str()));
    let row = NewSnapshot {
        agent,
        version,
        hash,
        received_at: now_secs(),
        outcome: "refused",
        detail: Some(&err.to_string()),
        counts: None,
        body: None,
        base: None,
    };
    if let Err(e) = lock(&server.db).insert_snapshot(&row) {
        tracing::error!(agent, error = %e, "cannot record a refused snapshot");
    }
    server.metrics.reject(agent, err.code());
    err
}

/// How many stored deltas a snapshot may be rebuilt through at start (each a small body
/// replayed in well under a second at 1M aliases); past that a delta is stored as the whole
/// resulting snapshot, and the chain starts again.
pub const MAX_LINKS: usize = 32;

/// A history row, and how many stored deltas it is rebuilt through (a delta's base is the
/// applied row it was applied to).
#[derive(Clone, Copy)]
pub struct Stored {
    snapshot: i64,
    links: usize,
}

/// Inflates `body` within the size limit; a failure is a recorded refusal.
fn inflated(
    server: &Server,
    agent: &str,
    body: &[u8],
    coding: Coding<'_>,
    binary_ok: bool,
) -> Result<(Vec<u8>, bool), IngestError> {
    let refused = |e| refuse(server, agent, None, e);
    let binary = coding.binary(binary_ok).map_err(refused)?;
    let limit = server.cfg().config.max_body_bytes;
    let plain = inflate(body, coding.encoding, limit).map_err(refused)?;
    Ok((plain, binary))
}

/// Parses JSON as a `what`; a failure is a recorded refusal.
fn parse_json<T: serde::de::DeserializeOwned>(
    server: &Server,
    agent: &str,
    json: &[u8],
    what: &str,
) -> Result<T, IngestError> {
    serde_json::from_slice(json).map_err(|e| {
        let e = IngestError::BadRequest(format!("malformed {what} json: {e}"));
        refuse(server, agent, None, e)
    })
}

/// Handles `POST /v1/snapshots` after the signature and sequence number were verified.
pub fn snapshot(
    server: &Arc<Server>,
    agent: &str,
    body: &[u8],
    coding: Coding<'_>,
) -> Result<SnapshotReply, IngestError> {
    locked(
        server,
        agent,
        body,
        coding,
        true,
        |mut steps, plain, binary| {
            let snap = if binary {
                Snapshot::from_binary(&plain).map_err(|e| {
                    let e = IngestError::BadRequest(format!("malformed {e}"));
                    refuse(server, agent, None, e)
                })?
            } else {
                parse_json(server, agent, &plain, "snapshot")?
            };
            steps.mark("decode");
            let keep = Body::of(body, coding.encoding, plain);
            ingest(server, agent, snap, keep, None, steps)
        },
    )
}

/// What both handlers do first: the agent's ingest lock taken (and held until `then` returns)
/// and the body inflated; `binary_ok` says whether a binary body may come.
fn locked<R>(
    server: &Arc<Server>,
    agent: &str,
    body: &[u8],
    coding: Coding<'_>,
    binary_ok: bool,
    then: impl FnOnce(Steps, Vec<u8>, bool) -> Result<R, IngestError>,
) -> Result<R, IngestError> {
    let steps = Steps::start();
    let one = server.ingest_lock(agent);
    let _one = lock(&one);
    let (plain, binary) = inflated(server, agent, body, coding, binary_ok)?;
    then(steps, plain, binary)
}

/// Handles `POST /v1/deltas` after the signature and sequence number were verified: the changes
/// are applied to the content this receiver holds applied, and the result goes through exactly
/// the checks of a full snapshot (its hash must be the one the delta claims).
pub fn delta(
    server: &Arc<Server>,
    agent: &str,
    body: &[u8],
    coding: Coding<'_>,
) -> Result<SnapshotReply, IngestError> {
    locked(server, agent, body, coding, false, |steps, json, _| {
        delta_locked(server, agent, body, coding, steps, json)
    })
}

/// [`delta`], under the agent's ingest lock, its body inflated to `json`.
fn delta_locked(
    server: &Arc<Server>,
    agent: &str,
    body: &[u8],
    coding: Coding<'_>,
    mut steps: Steps,
    json: Vec<u8>,
) -> Result<SnapshotReply, IngestError> {
    let d: proto::delta::Delta = parse_json(server, agent, &json, "delta")?;
    steps.mark("decode");
    let base = lock(&server.live)
        .get(agent)
        .and_then(|l| l.applied.clone())
        .filter(|a| a.hash == d.base_hash);
    let Some(base) = base else {
        // The agent's ordinary fallback, not a refusal: it sends the full snapshot next.
        server.metrics.reject(agent, "unknown_base");
        return Err(IngestError::UnknownBase(format!(
            "this receiver does not hold {} applied; send the full snapshot",
            d.base_hash
        )));
    };
    // In place on the spare when there is one for this base (moved, not copied); a spare that
    // does not give the base is dropped, and the applied content copied.
    let spare = match (lock(&server.live).get_mut(agent)).and_then(|l| l.spare.take()) {
        Some(s) if s.to == d.base_hash => Some(s),
        other => {
            if let Some(s) = other {
                free_later(s);
            }
            None
        }
    };
    let in_place = spare.and_then(|s| s.catch_up(&d.changes).ok());
    let content = match in_place {
        Some(c) => {
            steps.mark("patch_in_place");
            c
        }
        None => {
            let c = proto::delta::apply(&base.content, &d.changes).map_err(|e| {
                let what = IngestError::Invalid(format!(
                    "the delta does not apply to {}: {e}",
                    d.base_hash
                ));
                refuse(server, agent, None, what)
            })?;
            steps.mark("patch");
            c
        }
    };
    // The base's rendered lines and the names the changes touch: only what reaches those is
    // planned again.
    let since = base.part.get().cloned().zip(Affected::of(&d.changes));
    let stored_on = Stored {
        snapshot: base.snapshot,
        links: base.links,
    };
    drop(base);
    let snap = d.result(content);
    let keep = Body::of(body, coding.encoding, json);
    let on = Since {
        stored: stored_on,
        changes: &d.changes,
        part: since,
    };
    ingest(server, agent, snap, keep, Some(on), steps)
}

/// What a delta was applied to, for [`ingest`].
struct Since<'a> {
    /// The base's row.
    stored: Stored,
    /// The changes applied to it.
    changes: &'a Changes,
    /// The base's rendered part, with the names the changes touch (None: plan everything).
    part: Option<(Arc<AgentPart>, Affected)>,
}

/// The checks, storage and apply shared by full snapshots and deltas (`keep` is the request's
/// body; for a delta, `delta` says what it was applied to).
/// Takes `agent`'s decoded snapshot (or a delta's result) to live maps, in stages:
/// 1. [`admit`]: format, string lengths, signer and domains, before anything costly;
/// 2. normalize, then validate and hash on one thread while another plans (a repeat is only
///    checked), and the contact recorded;
/// 3. [`repeat`]: the applied or held snapshot again, or a version not above the applied one;
/// 4. the body kept for history: a delta on its base's chain while short, else whole;
/// 5. the shrink guard ([`hold`]);
/// 6. the history row written on another thread while [`apply`] renders and installs the maps;
/// 7. the metrics, and [`keep_spare`] for the next delta.
///
/// Every refusal leaves the previous maps in force.
fn ingest(
    server: &Arc<Server>,
    agent: &str,
    mut snap: Snapshot,
    keep: Body<'_>,
    mut delta: Option<Since<'_>>,
    mut steps: Steps,
) -> Result<SnapshotReply, IngestError> {
    if let Err(e) = admit(server, agent, &snap) {
        return Err(refuse(server, agent, Some(&snap), e));
    }
    // A delta's result has its keyed lists sorted by the patch.
    match delta {
        Some(_) => snap.content.normalize_patched(),
        None => snap.content.normalize(),
    }
    steps.mark("normalize");
    let (applied, held) = {
        let live = lock(&server.live);
        let l = live.get(agent);
        (
            l.and_then(|l| l.applied.clone()),
            l.and_then(|l| l.held.clone()),
        )
    };
    // Planned once: the part gives the shrink guard its count and then goes into the maps. When
    // the snapshot claims to be new, it is planned while another thread validates and hashes it
    // (the plan has no effect before both are checked, and planning reads any content safely);
    // a repeat is only validated and hashed.
    let mut since = delta.as_mut().and_then(|d| d.part.take());
    let new = applied
        .as_ref()
        .is_none_or(|a| a.hash != snap.hash && snap.version > a.version)
        && held.as_ref().is_none_or(|h| h.hash != snap.hash);
    let changes = delta.as_ref().map(|d| d.changes);
    let checking = || {
        let started = StdInstant::now();
        // The content a delta was applied to was valid: only what it upserted is checked.
        let valid = match changes {
            Some(c) => proto::delta::validate_changed(&snap.content, c),
            None => snap.content.validate(),
        };
        let validate_ms = started.elapsed().as_millis();
        let hash = valid.map(|()| snap.content.hash());
        (
            hash,
            validate_ms,
            started.elapsed().as_millis() - validate_ms,
        )
    };
    let planning = || new.then(|| plan(server, agent, &snap, since.take()));
    let (mut part, (hash, validate_ms, hash_ms)) = proto::par::beside(planning, checking);
    steps.beside("validate", validate_ms);
    steps.beside("hash", hash_ms);
    steps.mark("plan");
    let hash = match hash {
        Ok(hash) => hash,
        Err(e) => {
            let e = IngestError::Invalid(e.to_string());
            return Err(refuse(server, agent, Some(&snap), e));
        }
    };
    if hash != snap.hash {
        let e = IngestError::Invalid(format!(
            "content hash is {hash}, not the claimed {}",
            snap.hash
        ));
        return Err(refuse(server, agent, Some(&snap), e));
    }
    server
        .contact(agent, snap.version, &hash)
        .map_err(|e| server.storage_failed(agent, "the contact", e))?;
    match repeat(applied.as_deref(), held.as_ref(), snap.version, &hash) {
        Ok(Some(reply)) => return Ok(reply),
        Ok(None) => {}
        Err(e @ IngestError::Held(_)) => return Err(e),
        Err(e) => return Err(refuse(server, agent, Some(&snap), e)),
    }
    // Kept compressed for a later restart or release: a zstd body as it came, else compressed here.
    let kind = if delta.is_some() { "delta" } else { "full" };
    // A delta is stored as such, on the row it was applied to, while the chain is short and that
    // row is still the applied one (the agent's lock keeps it so); otherwise whole.
    let (stored, base, links) = match &delta {
        None => (keep.stored()?, None, 0),
        Some(Since { stored: b, .. })
            if b.links < MAX_LINKS
                && applied.as_ref().is_some_and(|a| a.snapshot == b.snapshot) =>
        {
            (keep.stored()?, Some(b.snapshot), b.links + 1)
        }
        Some(_) => {
            drop(keep);
            (encode_full(&snap)?, None, 0)
        }
    };
    steps.mark("encode");
    let part = match part.take() {
        Some(p) => p,
        None => {
            let p = plan(server, agent, &snap, since.take());
            steps.mark("plan");
            p
        }
    };
    let addresses = match &part {
        Ok(p) => p.counts.addresses,
        Err(_) => proto::plan::address_count(&snap.content) as u64,
    };
    if let Some(a) = &applied {
        let pct = u64::from(server.cfg().config.guard.max_shrink_percent);
        let before = a.counts.addresses;
        if before > 0 && addresses * 100 < before * (100 - pct) {
            let why = format!(
                "held: version {} has {addresses} addresses, {} fewer than the applied {before} (more than {pct}%); \
                 a newer snapshot within the limit, or `mxsync-server release {agent}`, applies it",
                snap.version,
                before - addresses
            );
            let kept = Kept {
                body: &stored,
                base,
            };
            hold(server, agent, &snap, kept, addresses, &why).map_err(IngestError::Internal)?;
            return Err(refuse_quietly(server, agent, IngestError::Held(why)));
        }
    }
    let row = NewSnapshot {
        agent,
        version: snap.version,
        hash: &hash,
        received_at: now_secs(),
        outcome: "received",
        detail: None,
        counts: None,
        body: Some(&stored),
        base,
    };
    // The row is written on another thread while the maps are rendered and written (at a
    // million aliases both are tens of MiB, fsynced); they go live only once it is stored.
    let version = snap.version;
    let reply = std::thread::scope(|s| {
        let insert = s.spawn(|| {
            let started = StdInstant::now();
            let id = lock(&server.db).insert_snapshot(&row);
            (id, started.elapsed().as_millis())
        });
        let written = |steps: &mut Steps| {
            let (id, ms) = insert
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            steps.beside("store", ms);
            let id =
                id.map_err(|e| server.storage_failed(agent, &format!("version {version}"), e))?;
            Ok(Stored {
                snapshot: id,
                links,
            })
        };
        apply(
            server,
            agent,
            snap,
            written,
            part.ok().map(Arc::new),
            &mut steps,
        )
    })?;
    server
        .metrics
        .applied
        .get_or_create(&crate::metrics::KindLabel {
            agent: agent.to_string(),
            kind: kind.to_string(),
        })
        .inc();
    server
        .metrics
        .apply_duration
        .observe(steps.started.elapsed().as_secs_f64());
    if let Some(old) = applied {
        keep_spare(server, agent, old, delta.map(|d| d.changes), &reply.hash);
    }
    Ok(reply)
}

/// Stage 1, before anything costly: the format is this server's, no string is overlong, the
/// signer is the snapshot's agent, and it speaks only for its own domains.
fn admit(server: &Server, agent: &str, snap: &Snapshot) -> Result<(), IngestError> {
    // A format this server does not know is never read as its own (a newer agent's content
    // may mean something else).
    if snap.format != proto::snapshot::FORMAT {
        return Err(IngestError::Invalid(format!(
            "snapshot format {} is not {}, the one this server reads: upgrade mxsync-server",
            snap.format,
            proto::snapshot::FORMAT
        )));
    }
    // Checked before anything costly is done with the content.
    if let Some(what) = snap.content.overlong() {
        return Err(IngestError::Invalid(format!("content holds {what}")));
    }
    if snap.agent != agent {
        return Err(IngestError::Invalid(format!(
            "snapshot is from agent {:?} but signed by {agent:?}",
            snap.agent
        )));
    }
    let allowed = &server
        .cfg()
        .config
        .agent(agent)
        .map(|a| a.domains.clone())
        .unwrap_or_default();
    if let Some(d) = snap
        .content
        .domains
        .iter()
        .find(|d| !allowed.contains(&d.to_ascii_lowercase()))
    {
        return Err(IngestError::Forbidden(format!(
            "agent {agent} may not speak for domain {d:?}"
        )));
    }
    Ok(())
}

/// Stage 3, once the hash is checked: the applied snapshot again (its reply, nothing done), a
/// version not above the applied one (a conflict), or the held one again (still held).
fn repeat(
    applied: Option<&Applied>,
    held: Option<&Held>,
    version: u64,
    hash: &str,
) -> Result<Option<SnapshotReply>, IngestError> {
    if let Some(a) = applied {
        if a.hash == hash {
            return Ok(Some(SnapshotReply {
                version: a.version,
                hash: hash.to_string(),
                applied_at: a.applied_at,
            }));
        }
        if version <= a.version {
            return Err(IngestError::Conflict {
                message: format!(
                    "version {version} is not above the applied version {}",
                    a.version
                ),
                applied_version: a.version,
            });
        }
    }
    match held {
        Some(h) if h.hash == hash => Err(IngestError::Held(h.why.clone())),
        _ => Ok(None),
    }
}

/// Plans `snap` and renders its part: after a delta, only what the change reaches, into the
/// base's part (`since`); otherwise every address.
fn plan(
    server: &Server,
    agent: &str,
    snap: &Snapshot,
    since: Option<(Arc<AgentPart>, Affected)>,
) -> Result<AgentPart, crate::render::RenderError> {
    let cfg = server.cfg();
    let formats = &cfg.config.output.formats;
    let maps = AgentMaps {
        id: agent,
        version: snap.version,
        hash: &snap.hash,
        primary: cfg.config.primary(agent),
        content: &snap.content,
    };
    match since {
        Some((old, mut affected)) => {
            affected.close_over(&snap.content);
            render_agent_affected(&maps, formats, &old, &affected)
        }
        None => render_agent(&maps, formats),
    }
}

/// Counts a refusal whose history row was already written.
fn refuse_quietly(server: &Server, agent: &str, err: IngestError) -> IngestError {
    server.metrics.reject(agent, err.code());
    err
}

mod apply;
mod body;
mod spare;
mod steps;
pub use spare::Spare;
#[cfg(test)]
pub(crate) use spare::spare_fits;
use spare::{free_later, keep_spare};
pub use steps::Steps;
mod error;
mod install;
pub use apply::release;
use apply::{Kept, apply, hold};
use body::{Body, encode_full};
pub use body::{Coding, inflate};
pub use error::IngestError;
pub(crate) use install::install_current;
use install::{install, render_all};
pub use install::{render_at_start, render_if_deferring_changed};
