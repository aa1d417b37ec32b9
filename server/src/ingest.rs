//! From a verified request to live maps (blocking; called from `spawn_blocking`).
//!
//! Order (DESIGN section 3): decompress within the limit, parse, check the agent's domains,
//! validate and re-hash the content, compare versions, apply the shrink guard, store, plan,
//! render, install, record the apply, and only then answer. (A snapshot that claims to be new is
//! planned and rendered in memory while another thread hashes it; the checks come before
//! anything of it is stored or written.) Every refusal of an authenticated request is a history
//! row; nothing it carried reaches the maps.

use std::fmt;
use std::io::Read;
use std::sync::Arc;
use std::time::Instant as StdInstant;

use anyhow::Context;
use proto::Snapshot;
use proto::delta::Changes;
use proto::plan::Affected;
use proto::wire::SnapshotReply;

use crate::api::ApiError;
use crate::render::{
    AgentMaps, AgentPart, Rendered, assemble, render_agent, render_agent_affected,
};
use crate::store::{ApplyRecord, Counts, NewSnapshot};
use crate::{Applied, Held, Server, lock, maps, now_secs};

/// Where an apply's time went, step by step, for its log line.
pub struct Steps {
    started: StdInstant,
    last: StdInstant,
    done: Vec<(&'static str, u128)>,
}

impl Steps {
    fn start() -> Steps {
        let now = StdInstant::now();
        Steps {
            started: now,
            last: now,
            done: Vec::new(),
        }
    }

    /// Records `name`, which ran beside the current step and took `ms`.
    fn beside(&mut self, name: &'static str, ms: u128) {
        self.done.push((name, ms));
    }

    /// Ends the step `name` (the time since the previous one ended).
    fn mark(&mut self, name: &'static str) {
        let now = StdInstant::now();
        self.done
            .push((name, now.duration_since(self.last).as_millis()));
        self.last = now;
    }
}

impl fmt::Display for Steps {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (name, ms)) in self.done.iter().enumerate() {
            let sep = if i == 0 { "" } else { " " };
            write!(f, "{sep}{name}={ms}")?;
        }
        Ok(())
    }
}

/// How a request body is written: its `Content-Encoding` and `Content-Type` headers.
#[derive(Clone, Copy, Debug, Default)]
pub struct Coding<'a> {
    /// `Content-Encoding`: none, `zstd` or `gzip`.
    pub encoding: Option<&'a str>,
    /// `Content-Type`: JSON (or none), or for a full snapshot [`proto::snapshot::MEDIA_TYPE`].
    pub media: Option<&'a str>,
}

impl Coding<'_> {
    /// Whether the body is a binary snapshot rather than JSON (`binary_ok`: whether the
    /// endpoint takes one).
    fn binary(&self, binary_ok: bool) -> Result<bool, ApiError> {
        let media = self.media.map(|m| {
            let essence = m.split(';').next().unwrap_or_default();
            essence.trim().to_ascii_lowercase()
        });
        match media.as_deref() {
            None | Some("") | Some("application/json") => Ok(false),
            Some(proto::snapshot::MEDIA_TYPE) if binary_ok => Ok(true),
            Some(other) => Err(ApiError::UnsupportedMedia(format!(
                "unsupported content-type {other:?}: use application/json{}",
                if binary_ok {
                    format!(" or {}", proto::snapshot::MEDIA_TYPE)
                } else {
                    String::new()
                }
            ))),
        }
    }
}

/// Decompresses `body` per `Content-Encoding`, refusing output larger than `limit`.
pub fn inflate(body: &[u8], encoding: Option<&str>, limit: u64) -> Result<Vec<u8>, ApiError> {
    let mut out = Vec::new();
    let read = |r: &mut dyn Read, out: &mut Vec<u8>| -> Result<(), ApiError> {
        r.take(limit.saturating_add(1))
            .read_to_end(out)
            .map_err(|e| ApiError::BadRequest(format!("cannot decompress the body: {e}")))?;
        Ok(())
    };
    match encoding.map(str::trim) {
        None | Some("") | Some("identity") => out.extend_from_slice(body),
        Some("zstd") if let Some(two) = two_frames(body) => return inflate_two(two, limit),
        Some("zstd") => {
            let mut d = zstd::stream::read::Decoder::new(body)
                .map_err(|e| ApiError::BadRequest(format!("cannot decompress the body: {e}")))?;
            read(&mut d, &mut out)?;
        }
        Some("gzip") => read(&mut flate2::read::GzDecoder::new(body), &mut out)?,
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "unsupported content-encoding {other:?}: use zstd, gzip or none"
            )));
        }
    }
    if out.len() as u64 > limit {
        return Err(ApiError::TooLarge(format!(
            "the decompressed snapshot exceeds {limit} bytes"
        )));
    }
    Ok(out)
}

/// A zstd frame and the size it inflates to.
type Frame<'a> = (&'a [u8], u64);

/// `body` as exactly two zstd frames that each say their size (how the agent sends a full
/// snapshot); `None` for anything else, which is read as a stream.
fn two_frames(body: &[u8]) -> Option<[Frame<'_>; 2]> {
    fn frame(at: &[u8]) -> Option<Frame<'_>> {
        use zstd::zstd_safe::{find_frame_compressed_size, get_frame_content_size};
        let n = find_frame_compressed_size(at).ok()?;
        let f = at.get(..n)?;
        Some((f, get_frame_content_size(f).ok()??))
    }
    let first = frame(body)?;
    let rest = &body[first.0.len()..];
    let second = frame(rest)?;
    (second.0.len() == rest.len()).then_some([first, second])
}

/// Inflates two frames side by side, into one buffer, refusing more than `limit` bytes.
fn inflate_two([(a, an), (b, bn)]: [Frame<'_>; 2], limit: u64) -> Result<Vec<u8>, ApiError> {
    let total = an.checked_add(bn).filter(|&t| t <= limit).ok_or_else(|| {
        ApiError::TooLarge(format!("the decompressed snapshot exceeds {limit} bytes"))
    })?;
    let (an, total) = (an as usize, total as usize);
    let mut out = vec![0; total];
    let (head, tail) = out.split_at_mut(an);
    let inflate = |frame: &[u8], into: &mut [u8]| {
        let want = into.len();
        match zstd::bulk::decompress_to_buffer(frame, into) {
            Ok(n) if n == want => Ok(()),
            Ok(n) => Err(format!(
                "a frame gave {n} bytes, not the {want} it declares"
            )),
            Err(e) => Err(e.to_string()),
        }
    };
    let (x, y) = proto::par::join(|| inflate(a, head), || inflate(b, tail));
    x.and(y)
        .map_err(|e| ApiError::BadRequest(format!("cannot decompress the body: {e}")))?;
    Ok(out)
}

fn refuse(server: &Server, agent: &str, snap: Option<&Snapshot>, err: ApiError) -> ApiError {
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

/// How to keep a request's body (snapshot or delta) for a later restart or release.
enum Body<'a> {
    /// The zstd body as the agent sent it.
    Zstd(&'a [u8]),
    /// The body uncompressed (JSON or binary), to be compressed.
    Plain(Vec<u8>),
}

impl Body<'_> {
    /// The inflated body can be as large as the content itself: keep it only if it is what
    /// will be stored (compressed).
    fn of<'a>(body: &'a [u8], encoding: Option<&str>, plain: Vec<u8>) -> Body<'a> {
        match encoding.map(str::trim) {
            Some("zstd") => {
                drop(plain);
                Body::Zstd(body)
            }
            _ => Body::Plain(plain),
        }
    }

    /// The compressed bytes to store.
    fn stored(self) -> Result<Vec<u8>, ApiError> {
        match self {
            Body::Zstd(body) => Ok(body.to_vec()),
            Body::Plain(plain) => zstd::stream::encode_all(&plain[..], proto::wire::ZSTD_LEVEL)
                .map_err(|e| ApiError::Internal(e.into())),
        }
    }
}

/// The whole snapshot, compressed for history: its binary body, streamed into the encoder
/// (no second copy of the content in memory).
fn encode_full(snap: &Snapshot) -> Result<Vec<u8>, ApiError> {
    let internal = |e: std::io::Error| ApiError::Internal(e.into());
    let mut enc =
        zstd::stream::Encoder::new(Vec::new(), proto::wire::ZSTD_LEVEL).map_err(internal)?;
    // Compressed by a zstd worker while this thread encodes, as the agent does.
    enc.multithread(1).map_err(internal)?;
    let head = proto::snapshot::Head {
        agent: &snap.agent,
        version: snap.version,
        hash: &snap.hash,
        created_at: snap.created_at,
    };
    proto::snapshot::write_binary(&mut enc, head, &snap.content).map_err(internal)?;
    enc.finish().map_err(internal)
}

/// Inflates `body` within the size limit; a failure is a recorded refusal.
fn inflated(
    server: &Server,
    agent: &str,
    body: &[u8],
    coding: Coding<'_>,
    binary_ok: bool,
) -> Result<(Vec<u8>, bool), ApiError> {
    let refused = |e| refuse(server, agent, None, e);
    let binary = coding.binary(binary_ok).map_err(refused)?;
    let limit = server.cfg.config.max_body_bytes;
    let plain = inflate(body, coding.encoding, limit).map_err(refused)?;
    Ok((plain, binary))
}

/// Parses JSON as a `what`; a failure is a recorded refusal.
fn parse_json<T: serde::de::DeserializeOwned>(
    server: &Server,
    agent: &str,
    json: &[u8],
    what: &str,
) -> Result<T, ApiError> {
    serde_json::from_slice(json).map_err(|e| {
        let e = ApiError::BadRequest(format!("malformed {what} json: {e}"));
        refuse(server, agent, None, e)
    })
}

/// Handles `POST /v1/snapshots` after the signature and sequence number were verified.
pub fn snapshot(
    server: &Arc<Server>,
    agent: &str,
    body: &[u8],
    coding: Coding<'_>,
) -> Result<SnapshotReply, ApiError> {
    let mut steps = Steps::start();
    let _one = server.ingesting.get(agent).map(lock);
    let (plain, binary) = inflated(server, agent, body, coding, true)?;
    let snap = if binary {
        Snapshot::from_binary(&plain).map_err(|e| {
            let e = ApiError::BadRequest(format!("malformed {e}"));
            refuse(server, agent, None, e)
        })?
    } else {
        parse_json(server, agent, &plain, "snapshot")?
    };
    steps.mark("decode");
    let keep = Body::of(body, coding.encoding, plain);
    ingest(server, agent, snap, keep, None, steps)
}

/// Handles `POST /v1/deltas` after the signature and sequence number were verified: the changes
/// are applied to the content this receiver holds applied, and the result goes through exactly
/// the checks of a full snapshot (its hash must be the one the delta claims).
pub fn delta(
    server: &Arc<Server>,
    agent: &str,
    body: &[u8],
    coding: Coding<'_>,
) -> Result<SnapshotReply, ApiError> {
    let mut steps = Steps::start();
    let _one = server.ingesting.get(agent).map(lock);
    let (json, _) = inflated(server, agent, body, coding, false)?;
    let d: proto::delta::Delta = parse_json(server, agent, &json, "delta")?;
    steps.mark("decode");
    let base = lock(&server.live)
        .get(agent)
        .and_then(|l| l.applied.clone())
        .filter(|a| a.hash == d.base_hash);
    let Some(base) = base else {
        // The agent's ordinary fallback, not a refusal: it sends the full snapshot next.
        server.metrics.reject(agent, "unknown_base");
        return Err(ApiError::UnknownBase(format!(
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
                let what =
                    ApiError::Invalid(format!("the delta does not apply to {}: {e}", d.base_hash));
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
    let snap = Snapshot {
        format: d.format,
        agent: d.agent,
        version: d.version,
        hash: d.hash,
        created_at: d.created_at,
        content,
    };
    let keep = Body::of(body, coding.encoding, json);
    let on = Since {
        stored: stored_on,
        changes: &d.changes,
        part: since,
    };
    ingest(server, agent, snap, keep, Some(on), steps)
}

/// The content of an agent's snapshot before the applied one, and the changes from it to the
/// applied one (whose hash is `to`): the next delta against `to` is applied to it in place, its
/// entries moved rather than copied. A delta on a 1M-entry content otherwise starts with a deep
/// copy of the applied content, which readers share (0.1-0.2 s). The price is a second content
/// in memory between applies (the one a delta used to copy while it was applied).
pub struct Spare {
    content: proto::Content,
    changes: Changes,
    to: String,
}

impl fmt::Debug for Spare {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Spare {{ to: {} }}", self.to)
    }
}

impl Spare {
    /// The applied content (hash `to`), then `changes` applied to it, made from the spare.
    fn catch_up(self, changes: &Changes) -> Result<proto::Content, proto::delta::DeltaError> {
        let mut c = proto::delta::apply_owned(self.content, &self.changes)?;
        c.normalize_patched();
        proto::delta::apply_owned(c, changes)
    }
}

/// Frees `what` on another thread: a million aliases take a while, and a reply waits.
fn free_later<T: Send + 'static>(what: T) {
    let _ = std::thread::Builder::new()
        .name("mxsync-free".into())
        .spawn(move || drop(what));
}

/// Whether the agent whose live state is `l` keeps a spare, and if so whether it leads to the
/// applied snapshot (tests).
#[cfg(test)]
pub(crate) fn spare_fits(l: &crate::Live) -> Option<bool> {
    let to = &l.spare.as_ref()?.to;
    Some(l.applied.as_ref().is_some_and(|a| &a.hash == to))
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
fn ingest(
    server: &Arc<Server>,
    agent: &str,
    mut snap: Snapshot,
    keep: Body<'_>,
    mut delta: Option<Since<'_>>,
    mut steps: Steps,
) -> Result<SnapshotReply, ApiError> {
    if snap.agent != agent {
        let e = ApiError::Invalid(format!(
            "snapshot is from agent {:?} but signed by {agent:?}",
            snap.agent
        ));
        return Err(refuse(server, agent, Some(&snap), e));
    }
    let allowed = &server
        .cfg
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
        let e = ApiError::Forbidden(format!("agent {agent} may not speak for domain {d:?}"));
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
            Some(c) => snap.content.validate_changed(c),
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
    let (mut part, (hash, validate_ms, hash_ms)) = proto::par::join(planning, checking);
    steps.beside("validate", validate_ms);
    steps.beside("hash", hash_ms);
    steps.mark("plan");
    let hash = match hash {
        Ok(hash) => hash,
        Err(e) => {
            let e = ApiError::Invalid(e.to_string());
            return Err(refuse(server, agent, Some(&snap), e));
        }
    };
    if hash != snap.hash {
        let e = ApiError::Invalid(format!(
            "content hash is {hash}, not the claimed {}",
            snap.hash
        ));
        return Err(refuse(server, agent, Some(&snap), e));
    }
    server
        .contact(agent, snap.version, &hash)
        .map_err(|e| server.storage_failed(agent, "the contact", e))?;
    if let Some(a) = &applied {
        if a.hash == hash {
            return Ok(SnapshotReply {
                version: a.version,
                hash,
                applied_at: a.applied_at,
            });
        }
        if snap.version <= a.version {
            let e = ApiError::Conflict {
                message: format!(
                    "version {} is not above the applied version {}",
                    snap.version, a.version
                ),
                applied_version: a.version,
            };
            return Err(refuse(server, agent, Some(&snap), e));
        }
    }
    if let Some(h) = &held
        && h.hash == hash
    {
        return Err(ApiError::Held(h.why.clone()));
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
        let pct = u64::from(server.cfg.config.guard.max_shrink_percent);
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
            hold(server, agent, &snap, kept, addresses, &why).map_err(ApiError::Internal)?;
            return Err(refuse_quietly(server, agent, ApiError::Held(why)));
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
    // After a delta, the snapshot this one replaced becomes the spare the next delta is applied
    // to, unless a reader still holds it; otherwise it is freed on another thread.
    if let Some(old) = applied {
        let spare = match delta {
            Some(d) => Arc::try_unwrap(old).map(|old| (old, d.changes.clone())),
            None => Err(old),
        };
        match spare {
            Ok((old, changes)) => {
                let Applied { content, part, .. } = old;
                free_later(part);
                let spare = Spare {
                    content,
                    changes,
                    to: reply.hash.clone(),
                };
                if let Some(l) = lock(&server.live).get_mut(agent) {
                    l.spare = Some(Box::new(spare));
                }
            }
            Err(old) => free_later(old),
        }
    }
    Ok(reply)
}

/// Plans `snap` and renders its part: after a delta, only what the change reaches, into the
/// base's part (`since`); otherwise every address.
fn plan(
    server: &Server,
    agent: &str,
    snap: &Snapshot,
    since: Option<(Arc<AgentPart>, Affected)>,
) -> Result<AgentPart, crate::render::RenderError> {
    let formats = &server.cfg.config.output.formats;
    let maps = AgentMaps {
        id: agent,
        version: snap.version,
        hash: &snap.hash,
        primary: primary_of(server, agent),
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
fn refuse_quietly(server: &Server, agent: &str, err: ApiError) -> ApiError {
    server.metrics.reject(agent, err.code());
    err
}

/// A body as stored, and the row it is a delta against, if it is one.
struct Kept<'a> {
    body: &'a [u8],
    base: Option<i64>,
}

fn hold(
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
fn apply(
    server: &Arc<Server>,
    agent: &str,
    snap: Snapshot,
    row: impl FnOnce(&mut Steps) -> Result<Stored, ApiError>,
    part: Option<Arc<AgentPart>>,
    steps: &mut Steps,
) -> Result<SnapshotReply, ApiError> {
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
            return Err(ApiError::ApplyFailed);
        }
    };
    let c = counts.get(agent).copied().unwrap_or_default();
    let applied_at = now_secs();
    {
        let mut db = lock(&server.db);
        let keep = server.cfg.config.history.keep;
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
    {
        let mut live = lock(&server.live);
        if let Some(l) = live.get_mut(agent) {
            let agrees = l.reported_hash.as_deref() == Some(hash.as_str());
            if agrees {
                l.disagree_since = None;
            }
            l.held = None;
            // A spare made for the snapshot being replaced no longer fits (see `Spare`).
            if let Some(s) = l.spare.take() {
                free_later(s);
            }
            l.applied = Some(Arc::new(Applied {
                snapshot: id,
                links: row.links,
                version,
                hash: hash.clone(),
                applied_at,
                content: snap.content,
                part: part.into(),
                counts: c,
            }));
        }
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

fn primary_of<'a>(server: &'a Server, agent: &str) -> &'a str {
    server
        .cfg
        .config
        .agent(agent)
        .map_or("", |a| a.primary.as_str())
}

/// Renders all agents' maps, with `replace` (snapshot and its rendered part) standing for its
/// agent's applied snapshot. Other agents' parts are planned once and kept.
fn render_all(
    server: &Server,
    replace: Option<(&str, &Snapshot, &Arc<AgentPart>)>,
) -> anyhow::Result<Rendered> {
    let applied: Vec<(String, Option<Arc<Applied>>)> = {
        let live = lock(&server.live);
        live.iter()
            .map(|(id, l)| (id.clone(), l.applied.clone()))
            .collect()
    };
    let formats = &server.cfg.config.output.formats;
    let mut agents = Vec::new();
    let mut kept: Vec<Arc<AgentPart>> = Vec::new();
    for (id, applied) in &applied {
        let primary = primary_of(server, id);
        match (replace, applied) {
            (Some((agent, snap, _)), _) if agent == id => agents.push(AgentMaps {
                id,
                version: snap.version,
                hash: &snap.hash,
                primary,
                content: &snap.content,
            }),
            (_, Some(a)) => {
                let maps = AgentMaps {
                    id,
                    version: a.version,
                    hash: &a.hash,
                    primary,
                    content: &a.content,
                };
                let part = match a.part.get() {
                    Some(p) => Arc::clone(p),
                    None => {
                        let p = Arc::new(render_agent(&maps, formats)?);
                        let _ = a.part.set(Arc::clone(&p));
                        p
                    }
                };
                kept.push(part);
                agents.push(maps);
            }
            (_, None) => {}
        }
    }
    let mut kept = kept.iter();
    let mut with = Vec::with_capacity(agents.len());
    for a in &agents {
        let part = match replace {
            Some((agent, _, part)) if agent == a.id => part,
            _ => kept.next().context("a kept part per applied agent")?,
        };
        with.push((a, Arc::clone(part)));
    }
    Ok(assemble(&with, formats))
}

/// Installs `rendered` as the live maps, running `prepare` in the new generation first; the
/// files that did not change since the last install are linked, not written. `ready` is asked,
/// once the files are written, whether they may go live; its error aborts the install.
fn install(
    server: &Server,
    rendered: &Rendered,
    ready: impl FnOnce() -> Result<(), String>,
) -> anyhow::Result<()> {
    let cfg = &server.cfg.config;
    let limit = std::time::Duration::from_secs(cfg.output.after_apply_timeout_secs);
    let prepare = |dir: &std::path::Path| {
        ready()?;
        crate::hooks::run_blocking(&cfg.output.prepare, Some(dir), limit)
    };
    let mut last = lock(&server.installed);
    maps::install(&cfg.output.dir, rendered, prepare, &mut last)?;
    Ok(())
}

/// At start: renders every agent's applied snapshot and installs the maps if they are missing or
/// differ. Returns whether anything was installed.
pub fn render_at_start(server: &Arc<Server>) -> anyhow::Result<bool> {
    let _apply = lock(&server.apply_lock);
    if lock(&server.live).values().all(|l| l.applied.is_none()) {
        return Ok(false);
    }
    let rendered = render_all(server, None)?;
    {
        // The counts are not stored with a snapshot; set them now that nothing else holds it.
        let mut live = lock(&server.live);
        for (id, c) in &rendered.counts {
            if let Some(a) = live
                .get_mut(id)
                .and_then(|l| l.applied.as_mut())
                .and_then(Arc::get_mut)
            {
                a.counts = *c;
            }
        }
    }
    server.refresh_metrics();
    let cfg = &server.cfg.config;
    if maps::is_current(&cfg.output.dir, &rendered) {
        return Ok(false);
    }
    install(server, &rendered, || Ok(())).context("installing the maps at start")?;
    tracing::info!(dir = %cfg.output.dir.display(), "maps rendered again at start (missing or different)");
    Ok(true)
}

/// Applies the snapshot the shrink guard holds for `agent` (operator release).
pub fn release(server: &Arc<Server>, agent: &str) -> anyhow::Result<()> {
    let _one = server.ingesting.get(agent).map(lock);
    let held = lock(&server.live).get(agent).and_then(|l| l.held.clone());
    let Some(h) = held else {
        lock(&server.db).set_held_released(agent)?;
        return Ok(());
    };
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

#[cfg(test)]
mod tests {
    //! Inflating bodies: one stream, or two frames side by side, each within the limit.

    use super::*;

    fn frame(plain: &[u8]) -> Vec<u8> {
        zstd::bulk::compress(plain, 1).unwrap()
    }

    #[test]
    fn two_frames_inflate_to_what_one_stream_gives_and_lies_are_refused() {
        let plain: Vec<u8> = (0..200_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        let (a, b) = plain.split_at(300_001);
        let two = [frame(a), frame(b)].concat();
        let check = |body: &[u8], limit: u64, expected: Result<&[u8], &str>| {
            let got = inflate(body, Some("zstd"), limit);
            match (got, expected) {
                (Ok(got), Ok(want)) => assert!(got == want, "{} bytes", got.len()),
                (Err(e), Err(code)) => assert_eq!(e.code(), code, "{e}"),
                (got, want) => panic!("{:?} against {want:?}", got.map(|g| g.len())),
            }
        };
        assert!(two_frames(&two).is_some());
        check(&two, 1 << 30, Ok(&plain));
        // One frame, and a stream without sizes, are read as a stream.
        let one = frame(&plain);
        assert!(two_frames(&one).is_none());
        check(&one, 1 << 30, Ok(&plain));
        let stream = zstd::stream::encode_all(&plain[..], 1).unwrap();
        check(&stream, 1 << 30, Ok(&plain));
        // Three frames: a stream too.
        let (b1, b2) = b.split_at(10);
        let three = [frame(a), frame(b1), frame(b2)].concat();
        assert!(two_frames(&three).is_none());
        check(&three, 1 << 30, Ok(&plain));
        // Over the limit, by their declared sizes or by what they hold.
        check(&two, plain.len() as u64 - 1, Err("too_large"));
        check(&one, plain.len() as u64 - 1, Err("too_large"));
        // A frame that declares less than it holds.
        let mut small = frame(&plain[..1000]);
        let mut liar = frame(&plain[..2000]);
        let header = |f: &[u8]| zstd::zstd_safe::get_frame_content_size(f).unwrap();
        assert_eq!(header(&liar), Some(2000));
        // The size sits in the frame header; swap in a smaller frame's header to make it lie.
        let n = (1..20)
            .find(|&n| zstd::zstd_safe::get_frame_content_size(&small[..n]).is_ok())
            .unwrap();
        assert!(zstd::zstd_safe::get_frame_content_size(&liar[..n]).is_ok());
        liar[..n].copy_from_slice(&small[..n]);
        assert_eq!(header(&liar), Some(1000));
        small.extend_from_slice(&liar);
        assert!(two_frames(&small).is_some());
        check(&small, 1 << 30, Err("bad_request"));
        // A truncated second frame: not two frames, and the stream fails.
        let cut = &two[..two.len() - 5];
        check(cut, 1 << 30, Err("bad_request"));
    }
}
