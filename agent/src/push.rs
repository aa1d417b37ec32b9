//! Pushing to receivers: one loop per receiver, each with its own retry state, so a dead
//! receiver never delays the others.
//!
//! A loop pushes the current snapshot until that receiver has accepted its hash, then sends a
//! heartbeat every `heartbeat_secs`; when a heartbeat reply says `need_snapshot`, it pushes
//! again. Network errors and 5xx are retried with capped exponential backoff and jitter; a 409
//! asks the core to move the version above the receiver's; a 423 (held by the shrink guard) and
//! other 4xx are logged and not retried until the content changes.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use proto::wire::{ErrorBody, Heartbeat, HeartbeatReply, SnapshotReply};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::state::Counters;

mod body;
pub use body::{Current, compress_pieces, encode_delta};

/// What a receiver loop asks of the core.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// A receiver holds this version with another hash: move above it and push again.
    RaiseAbove(u64),
}

/// One receiver's connection details.
#[derive(Clone)]
pub struct Target {
    /// Base URL, no trailing slash.
    pub url: String,
    /// The shared secret.
    pub key: Vec<u8>,
    /// This agent's id.
    pub agent: String,
    /// Built once, with timeouts (and the receiver's CA, if any).
    pub client: reqwest::Client,
    /// When the receiver last turned a binary snapshot down as one too old to read it: it is
    /// sent JSON until `binary_retry` has passed, then binary again (it may have been upgraded).
    pub json_since: Arc<Mutex<Option<std::time::Instant>>>,
    /// [`BINARY_RETRY`], but for tests.
    pub binary_retry: Duration,
}

/// How long a receiver that cannot read binary snapshots is sent JSON before binary is tried
/// again: one refused request an hour at most, and an upgraded receiver is sent the smaller,
/// quicker body without a restart of the agent.
pub const BINARY_RETRY: Duration = Duration::from_secs(3600);

/// `e` and every error under it, as one line: `error sending request: client error
/// (Connect): tcp connect error: Connection refused (os error 111)`, where reqwest's own
/// message says only the first part.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut at = e.source();
    while let Some(cause) = at {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        at = cause.source();
    }
    out
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Accepted => f.write_str("accepted"),
            Outcome::Retry(e) => write!(f, "{e}"),
            Outcome::Conflict(v) => write!(
                f,
                "the receiver holds version {v} with other content; the next push goes above it"
            ),
            Outcome::Held(e) => write!(f, "held by the receiver's shrink guard: {e}"),
            Outcome::Refused(e) => write!(f, "refused: {e}"),
        }
    }
}

/// How one push ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Stored and live (200).
    Accepted,
    /// Worth trying again later: network error, timeout, 5xx.
    Retry(String),
    /// The receiver holds a higher version with another hash (409).
    Conflict(u64),
    /// Held by the shrink guard (423).
    Held(String),
    /// Refused for good (other 4xx): retrying the same bytes cannot help.
    Refused(String),
}

async fn seq(counters: &Arc<Mutex<Counters>>) -> Result<u64, String> {
    let c = Arc::clone(counters);
    tokio::task::spawn_blocking(move || crate::lock(&c).next_seq())
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("{e:#}"))
}

fn describe(status: reqwest::StatusCode, body: &str) -> (String, Option<ErrorBody>) {
    let parsed: Option<ErrorBody> = serde_json::from_str(body).ok();
    let msg = parsed.as_ref().map_or_else(
        || body.chars().take(200).collect(),
        |e| format!("{}: {}", e.error, e.message),
    );
    // What a postmaster does about the refusals that are a configuration mistake.
    let hint = match parsed.as_ref().map(|e| e.error.as_str()) {
        Some("bad_signature") => {
            " (this agent's key_file and the receiver's key_file for it hold different \
             secrets, or the receiver has no [[agents]] table with this agent_id)"
        }
        Some("forbidden") => {
            " (the receiver's [[agents]] domains for this agent do not list every domain here)"
        }
        _ => "",
    };
    (format!("{status} {msg}{hint}"), parsed)
}

impl Target {
    async fn post(
        &self,
        path: &str,
        body: Vec<u8>,
        (media, zstd): (&str, bool),
        counters: &Arc<Mutex<Counters>>,
    ) -> Result<(reqwest::StatusCode, String), String> {
        let seq = seq(counters).await?;
        let auth = proto::sign::header(&self.key, &self.agent, "POST", path, seq, &body);
        let mut req = self
            .client
            .post(format!("{}{path}", self.url))
            .header("authorization", auth)
            .header("content-type", media);
        if zstd {
            req = req.header("content-encoding", "zstd");
        }
        let resp = req
            .body(body)
            .send()
            .await
            .map_err(|e| format!("{}: {}", self.url, chain(&e)))?;
        let status = resp.status();
        let text = resp
            .text()
            .await
            .map_err(|e| format!("{}: {}", self.url, chain(&e)))?;
        Ok((status, text))
    }

    /// Pushes `cur` once: as a delta against `base` (what this receiver last accepted) when
    /// that is smaller, falling back to the full snapshot when the receiver does not hold the
    /// base or the delta does not give the content it claims.
    pub async fn push(
        &self,
        cur: &Arc<Current>,
        base: Option<&Arc<Current>>,
        counters: &Arc<Mutex<Counters>>,
    ) -> Outcome {
        if let Some(base) = base.filter(|b| b.hash != cur.hash) {
            let (agent, b, c) = (self.agent.clone(), Arc::clone(base), Arc::clone(cur));
            let body = tokio::task::spawn_blocking(move || encode_delta(&agent, &b, &c))
                .await
                .ok()
                .flatten();
            if let Some(body) = body {
                match self.post("/v1/deltas", body, (JSON, true), counters).await {
                    Ok((status, text)) if matches!(status.as_u16(), 404 | 405 | 412 | 422) => {
                        tracing::debug!(
                            receiver = self.url,
                            reply = describe(status, &text).0,
                            "delta not taken; sending the full snapshot"
                        );
                    }
                    Ok((status, text)) => return outcome(cur, status, &text),
                    Err(e) => return Outcome::Retry(e),
                }
            }
        }
        let binary = crate::lock(&self.json_since).is_none_or(|t| t.elapsed() >= self.binary_retry);
        match self.post_full(cur, binary, counters).await {
            Ok((status, text)) if binary && binary_refused(status, &text) => {
                tracing::warn!(
                    receiver = self.url,
                    reply = describe(status, &text).0,
                    "the receiver does not read binary snapshots; sending JSON for an hour before trying again (upgrade it)"
                );
                *crate::lock(&self.json_since) = Some(std::time::Instant::now());
                match self.post_full(cur, false, counters).await {
                    Ok((status, text)) => outcome(cur, status, &text),
                    Err(o) => o,
                }
            }
            Ok((status, text)) => outcome(cur, status, &text),
            Err(o) => o,
        }
    }

    /// Posts the full snapshot, binary or JSON, and returns the reply, or how the push ended
    /// without one.
    async fn post_full(
        &self,
        cur: &Arc<Current>,
        binary: bool,
        counters: &Arc<Mutex<Counters>>,
    ) -> Result<(reqwest::StatusCode, String), Outcome> {
        let c = Arc::clone(cur);
        let encode = move || if binary { c.full_body() } else { c.full_json() };
        let body = match tokio::task::spawn_blocking(encode).await {
            Ok(Ok(body)) => body,
            Ok(Err(e)) => {
                let msg = format!("cannot encode the snapshot: {e:#}");
                return Err(Outcome::Refused(msg));
            }
            Err(e) => return Err(Outcome::Retry(e.to_string())),
        };
        let media = if binary {
            proto::snapshot::MEDIA_TYPE
        } else {
            JSON
        };
        self.post("/v1/snapshots", body, (media, true), counters)
            .await
            .map_err(Outcome::Retry)
    }

    /// Sends a heartbeat; returns whether the receiver wants the snapshot.
    pub async fn heartbeat(
        &self,
        cur: &Current,
        counters: &Arc<Mutex<Counters>>,
    ) -> Result<bool, String> {
        let body = serde_json::to_vec(&Heartbeat {
            version: cur.version,
            hash: cur.hash.clone(),
        })
        .map_err(|e| e.to_string())?;
        let (status, text) = self
            .post("/v1/heartbeat", body, (JSON, false), counters)
            .await?;
        if !status.is_success() {
            return Err(describe(status, &text).0);
        }
        let r: HeartbeatReply =
            serde_json::from_str(&text).map_err(|e| format!("unreadable heartbeat reply: {e}"))?;
        Ok(r.need_snapshot)
    }
}

/// The media type of every other body.
const JSON: &str = "application/json";

/// Whether a reply to a binary snapshot says the receiver cannot read one: a 415, or the 400
/// of a receiver that reads every body as JSON (one from before the binary body).
fn binary_refused(status: reqwest::StatusCode, text: &str) -> bool {
    match status.as_u16() {
        415 => true,
        400 => describe(status, text)
            .1
            .is_some_and(|e| e.message.starts_with("malformed snapshot json")),
        _ => false,
    }
}

/// What a reply to a snapshot or delta push means for `cur`.
fn outcome(cur: &Current, status: reqwest::StatusCode, text: &str) -> Outcome {
    let (msg, err) = describe(status, text);
    match status.as_u16() {
        200 => match serde_json::from_str::<SnapshotReply>(text) {
            Ok(r) if r.hash == cur.hash => Outcome::Accepted,
            Ok(r) => Outcome::Retry(format!(
                "receiver answered with hash {} for {}",
                r.hash, cur.hash
            )),
            Err(e) => Outcome::Retry(format!("unreadable reply: {e}")),
        },
        409 => match err.and_then(|e| e.applied_version) {
            Some(v) => Outcome::Conflict(v),
            None => Outcome::Refused(msg),
        },
        423 => Outcome::Held(msg),
        // A replay (our sequence number behind) or a bad signature may clear: retry slowly.
        401 | 408 | 429 => Outcome::Retry(msg),
        s if s >= 500 => Outcome::Retry(msg),
        _ => Outcome::Refused(msg),
    }
}

/// Capped exponential backoff with jitter.
#[derive(Debug)]
pub struct Backoff {
    next: Duration,
    cap: Duration,
    seed: u64,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(100);
    /// The longest step, whatever the heartbeat interval.
    pub const CAP: Duration = Duration::from_secs(30);

    /// A fresh backoff whose steps never exceed `cap` (nor [`Backoff::CAP`]).
    pub fn new(seed: u64, cap: Duration) -> Self {
        Backoff {
            next: Self::FIRST,
            cap: cap.clamp(Self::FIRST, Self::CAP),
            seed: seed | 1,
        }
    }
    /// The next delay: the current step with ±25% jitter, then the step doubles up to the cap.
    pub fn delay(&mut self) -> Duration {
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        let base = self.next.as_millis() as u64;
        let jitter = (self.seed % (base / 2 + 1)) as i64 - (base / 4) as i64;
        self.next = (self.next * 2).min(self.cap);
        Duration::from_millis((base as i64 + jitter).max(1) as u64)
    }
    /// Back to the first step.
    pub fn reset(&mut self) {
        self.next = Self::FIRST;
    }
}

/// Delivers `current` to `target` until `shutdown`.
pub async fn receiver_loop(
    target: Target,
    mut current: watch::Receiver<Option<Arc<Current>>>,
    control: mpsc::UnboundedSender<Control>,
    counters: Arc<Mutex<Counters>>,
    heartbeat: Duration,
    shutdown: CancellationToken,
) {
    let url = target.url.clone();
    let mut delivered: Option<String> = None;
    // What this receiver last accepted: the base of the next delta.
    let mut base: Option<Arc<Current>> = None;
    let mut given_up: Option<String> = None;
    // A receiver that is down is tried again at least once a heartbeat interval, so it has the
    // latest state within one heartbeat of coming back.
    let mut backoff = Backoff::new(
        url.bytes()
            .fold(0u64, |a, b| a.wrapping_mul(31).wrapping_add(u64::from(b))),
        heartbeat,
    );
    let mut next_heartbeat = tokio::time::Instant::now() + heartbeat;
    let mut failing = false;
    loop {
        let cur = current.borrow_and_update().clone();
        let Some(cur) = cur else {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                r = current.changed() => if r.is_err() { return } else { continue },
            }
        };
        let wait =
            if delivered.as_deref() != Some(&cur.hash) && given_up.as_deref() != Some(&cur.hash) {
                let began = std::time::Instant::now();
                match target.push(&cur, base.as_ref(), &counters).await {
                    Outcome::Accepted => {
                        base = Some(Arc::clone(&cur));
                        if failing {
                            tracing::info!(
                                receiver = url,
                                version = cur.version,
                                "receiver reachable again"
                            );
                        }
                        tracing::info!(
                            receiver = url,
                            version = cur.version,
                            ms = began.elapsed().as_millis() as u64,
                            "snapshot accepted"
                        );
                        failing = false;
                        delivered = Some(cur.hash.clone());
                        backoff.reset();
                        next_heartbeat = tokio::time::Instant::now() + heartbeat;
                        None
                    }
                    Outcome::Retry(e) => {
                        let d = backoff.delay();
                        if !failing {
                            tracing::warn!(
                                receiver = url,
                                error = e,
                                retry_in_ms = d.as_millis() as u64,
                                "push failed; retrying"
                            );
                        }
                        failing = true;
                        Some(d)
                    }
                    Outcome::Conflict(v) => {
                        tracing::warn!(
                            receiver = url,
                            receiver_version = v,
                            "receiver holds a higher version; moving above it"
                        );
                        let _ = control.send(Control::RaiseAbove(v));
                        given_up = Some(cur.hash.clone());
                        None
                    }
                    Outcome::Held(e) => {
                        tracing::error!(
                            receiver = url,
                            version = cur.version,
                            error = e,
                            "snapshot held by the receiver's shrink guard"
                        );
                        given_up = Some(cur.hash.clone());
                        None
                    }
                    Outcome::Refused(e) => {
                        tracing::error!(
                            receiver = url,
                            version = cur.version,
                            error = e,
                            "snapshot refused"
                        );
                        given_up = Some(cur.hash.clone());
                        None
                    }
                }
            } else {
                None
            };
        let sleep_until = match wait {
            Some(d) => tokio::time::Instant::now() + d,
            None if delivered.as_deref() == Some(&cur.hash)
                || given_up.as_deref() == Some(&cur.hash) =>
            {
                next_heartbeat
            }
            None => continue,
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            r = current.changed() => if r.is_err() { return },
            _ = tokio::time::sleep_until(sleep_until) => {
                if wait.is_none() {
                    next_heartbeat = tokio::time::Instant::now() + heartbeat;
                    match target.heartbeat(&cur, &counters).await {
                        Ok(true) => {
                            delivered = None;
                            given_up = None;
                        }
                        Ok(false) => {
                            if failing {
                                tracing::info!(receiver = url, "receiver reachable again");
                            }
                            failing = false;
                        }
                        Err(e) => {
                            if !failing {
                                tracing::warn!(receiver = url, error = e, "heartbeat failed");
                            }
                            failing = true;
                            // Whatever the receiver holds now, find out by pushing when it is back.
                            delivered = None;
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
