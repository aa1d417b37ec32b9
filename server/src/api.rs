//! The HTTP API (DESIGN section 6): one router, one error type, the signature and token checks.
//!
//! Client errors say what is wrong; internal errors say nothing and are logged once, inside the
//! request's span. Database and apply work runs in `spawn_blocking`.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Extension, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use proto::wire::{ErrorBody, Heartbeat, HeartbeatReply};
use serde::{Deserialize, Serialize};

use crate::fresh::State as Freshness;
use crate::ingest::IngestError;
use crate::{Server, lock};

/// The address a request came from: set on each connection by `serve`, absent in the tests
/// that call the router directly.
#[derive(Clone, Copy, Debug)]
pub struct Peer(pub std::net::SocketAddr);

/// Logs a refused agent request once a minute per peer and reason, at WARN: a key that does
/// not match, a replay, a domain the agent may not speak for are the operator's to fix. The
/// client's reply stays what it was (generic for an unauthenticated one).
fn log_refusal(server: &Server, peer: Option<Extension<Peer>>, path: &str, e: &ApiError) {
    if !e.status().is_client_error() {
        return;
    }
    let peer = peer.map_or("unknown".to_string(), |Extension(Peer(p))| {
        p.ip().to_string()
    });
    let key = format!("{peer} {}", e.code());
    let now = std::time::Instant::now();
    {
        let mut seen = lock(&server.refusals_logged);
        // Bounded however many peers are refused: the entries past their minute go.
        if seen.len() >= 1024 {
            seen.retain(|_, t| now.duration_since(*t) < std::time::Duration::from_secs(60));
        }
        if seen
            .get(&key)
            .is_some_and(|t| now.duration_since(*t) < std::time::Duration::from_secs(60))
        {
            return;
        }
        seen.insert(key, now);
    }
    tracing::warn!(
        peer,
        path,
        status = e.status().as_u16(),
        code = e.code(),
        reason = %e,
        "agent request refused (logged once a minute per peer and reason)"
    );
}

/// Shared state of the handlers.
#[derive(Clone)]
pub struct AppState {
    /// The server.
    pub server: Arc<Server>,
}

/// Every error an endpoint can return.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Malformed request (a body that cannot be read, a bad query).
    #[error("{0}")]
    BadRequest(String),
    /// Missing or bad signature or token.
    #[error("{1}")]
    Unauthorized(&'static str, String),
    /// Not allowed (an endpoint not configured).
    #[error("{0}")]
    Forbidden(String),
    /// Nothing there.
    #[error("{0}")]
    NotFound(String),
    /// Body too large.
    #[error("{0}")]
    TooLarge(String),
    /// A snapshot, delta or heartbeat the ingest path did not take.
    #[error(transparent)]
    Ingest(#[from] IngestError),
    /// Anything else; never shown to the client.
    #[error("internal error")]
    Internal(#[from] anyhow::Error),
}

impl ApiError {
    /// The stable `error` code.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) => "bad_request",
            ApiError::Unauthorized(code, _) => code,
            ApiError::Forbidden(_) => "forbidden",
            ApiError::NotFound(_) => "not_found",
            ApiError::TooLarge(_) => "too_large",
            ApiError::Ingest(e) => e.code(),
            ApiError::Internal(_) => "internal",
        }
    }

    fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(..) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Ingest(e) => match e {
                IngestError::BadRequest(_) => StatusCode::BAD_REQUEST,
                IngestError::Forbidden(_) => StatusCode::FORBIDDEN,
                IngestError::Conflict { .. } => StatusCode::CONFLICT,
                IngestError::UnsupportedMedia(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
                IngestError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
                IngestError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
                IngestError::UnknownBase(_) => StatusCode::PRECONDITION_FAILED,
                IngestError::Held(_) => StatusCode::LOCKED,
                IngestError::ApplyFailed | IngestError::Internal(_) => {
                    StatusCode::INTERNAL_SERVER_ERROR
                }
            },
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Internal(e) | ApiError::Ingest(IngestError::Internal(e)) = &self {
            tracing::error!(error = %format!("{e:#}"), "internal error");
        }
        let body = ErrorBody {
            error: self.code().to_string(),
            message: self.to_string(),
            applied_version: match &self {
                ApiError::Ingest(IngestError::Conflict {
                    applied_version, ..
                }) => Some(*applied_version),
                _ => None,
            },
        };
        (self.status(), Json(body)).into_response()
    }
}

/// The router: every endpoint of DESIGN section 6.
pub fn router(state: AppState) -> Router {
    let limit = usize::try_from(state.server.cfg().config.max_body_bytes).unwrap_or(usize::MAX);
    Router::new()
        .route("/v1/snapshots", post(post_snapshot).get(get_history))
        .route("/v1/deltas", post(post_delta))
        .route("/v1/heartbeat", post(post_heartbeat))
        .route("/v1/status", get(get_status))
        .route("/v1/plan/{address}", get(get_plan))
        .route("/metrics", get(get_metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .layer(DefaultBodyLimit::max(limit))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            std::time::Duration::from_secs(300),
        ))
        .with_state(state)
}

/// Checks the request's signature and takes its sequence number; returns the agent id.
async fn authenticate(
    server: &Arc<Server>,
    headers: &HeaderMap,
    method: &str,
    path: &str,
    body: &Bytes,
) -> Result<String, ApiError> {
    let unauthorized = |code, msg: String| ApiError::Unauthorized(code, msg);
    let value = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| unauthorized("unauthorized", "missing Authorization header".into()))?;
    let auth = proto::sign::parse_header(value)
        .map_err(|e| unauthorized("unauthorized", e.to_string()))?;
    let reject = |code: &'static str, msg: String| {
        server.metrics.reject(&auth.agent, code);
        ApiError::Unauthorized(code, msg)
    };
    let cfg = server.cfg();
    let Some(key) = cfg.keys.get(&auth.agent) else {
        return Err(reject("bad_signature", "bad signature".into()));
    };
    if proto::sign::verify(key, method, path, body, &auth).is_err() {
        return Err(reject("bad_signature", "bad signature".into()));
    }
    let s = Arc::clone(server);
    let (agent, seq) = (auth.agent.clone(), auth.seq);
    let fresh = tokio::task::spawn_blocking(move || lock(&s.db).accept_seq(&agent, seq))
        .await
        .map_err(|e| ApiError::Internal(e.into()))?
        .map_err(|e| server.storage_failed(&auth.agent, "the request's seq", e))?;
    if !fresh {
        return Err(reject(
            "replay",
            format!("seq {} is not above the last one accepted", auth.seq),
        ));
    }
    Ok(auth.agent)
}

fn body_or_error(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::TooLarge("request body too large".into())
        } else {
            ApiError::BadRequest(r.body_text())
        }
    })
}

#[tracing::instrument(skip_all, fields(agent))]
async fn post_snapshot(
    State(app): State<AppState>,
    peer: Option<Extension<Peer>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<proto::wire::SnapshotReply>, ApiError> {
    let path = "/v1/snapshots";
    let r = ingest_request(&app, headers, body, path, crate::ingest::snapshot).await;
    r.inspect_err(|e| log_refusal(&app.server, peer, path, e))
}

#[tracing::instrument(skip_all, fields(agent))]
async fn post_delta(
    State(app): State<AppState>,
    peer: Option<Extension<Peer>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<proto::wire::SnapshotReply>, ApiError> {
    let path = "/v1/deltas";
    let r = ingest_request(&app, headers, body, path, crate::ingest::delta).await;
    // A delta against a base this receiver does not hold is the agent's ordinary fallback.
    r.inspect_err(|e| {
        if e.code() != "unknown_base" {
            log_refusal(&app.server, peer, path, e)
        }
    })
}

/// `ingest::snapshot` or `ingest::delta`.
type IngestFn = fn(
    &Arc<Server>,
    &str,
    &[u8],
    crate::ingest::Coding<'_>,
) -> Result<proto::wire::SnapshotReply, IngestError>;

/// A signed snapshot or delta: authenticated, then handed to `ingest` off the async threads.
async fn ingest_request(
    app: &AppState,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
    path: &str,
    ingest: IngestFn,
) -> Result<Json<proto::wire::SnapshotReply>, ApiError> {
    let body = body_or_error(body)?;
    let agent = authenticate(&app.server, &headers, "POST", path, &body).await?;
    tracing::Span::current().record("agent", agent.as_str());
    let text = |name| {
        headers
            .get(name)
            .map(|v| v.to_str().unwrap_or("(not text)").to_string())
    };
    let (encoding, media) = (text(header::CONTENT_ENCODING), text(header::CONTENT_TYPE));
    let server = Arc::clone(&app.server);
    let reply = tokio::task::spawn_blocking(move || {
        let coding = crate::ingest::Coding {
            encoding: encoding.as_deref(),
            media: media.as_deref(),
        };
        ingest(&server, &agent, &body, coding)
    })
    .await
    .map_err(|e| ApiError::Internal(e.into()))??;
    Ok(Json(reply))
}

#[tracing::instrument(skip_all, fields(agent))]
async fn post_heartbeat(
    State(app): State<AppState>,
    peer: Option<Extension<Peer>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<HeartbeatReply>, ApiError> {
    let path = "/v1/heartbeat";
    let body = body_or_error(body).inspect_err(|e| log_refusal(&app.server, peer, path, e))?;
    let agent = (authenticate(&app.server, &headers, "POST", path, &body).await)
        .inspect_err(|e| log_refusal(&app.server, peer, path, e))?;
    tracing::Span::current().record("agent", agent.as_str());
    let hb: Heartbeat = serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadRequest(format!("malformed heartbeat json: {e}")))?;
    let server = Arc::clone(&app.server);
    let (version, hash) = (hb.version, hb.hash.clone());
    let a = agent.clone();
    tokio::task::spawn_blocking(move || server.contact(&a, version, &hash))
        .await
        .map_err(|e| ApiError::Internal(e.into()))??;
    let live = lock(&app.server.live);
    let l = live.get(&agent);
    let applied = l.and_then(|l| l.applied.as_ref());
    let held = l
        .and_then(|l| l.held.as_ref())
        .is_some_and(|h| h.hash == hb.hash);
    Ok(Json(HeartbeatReply {
        need_snapshot: applied.is_none_or(|a| a.hash != hb.hash) && !held,
        applied_version: applied.map(|a| a.version),
        applied_hash: applied.map(|a| a.hash.clone()),
    }))
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

/// Constant-time comparison of tokens (of equal length; the length is not secret).
fn same(a: &str, b: &str) -> bool {
    subtle::ConstantTimeEq::ct_eq(a.as_bytes(), b.as_bytes()).into()
}

fn need_token(expected: Option<&str>, headers: &HeaderMap, what: &str) -> Result<(), ApiError> {
    match (expected, bearer(headers)) {
        (None, _) => Ok(()),
        (Some(want), Some(got)) if same(want, got) => Ok(()),
        _ => Err(ApiError::Unauthorized(
            "unauthorized",
            format!("{what} needs a valid bearer token"),
        )),
    }
}

fn need_read_token(app: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    match &app.server.cfg().read_token {
        None => Err(ApiError::Forbidden(
            "plans and history are not served: read_token_file is not set".into(),
        )),
        Some(t) => need_token(Some(t), headers, "this endpoint"),
    }
}

/// One agent in `GET /v1/status`.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct AgentStatus {
    /// Agent id.
    pub agent: String,
    /// Its domains.
    pub domains: Vec<String>,
    /// fresh, late, stale, never.
    pub state: String,
    /// Applied version.
    pub version: Option<u64>,
    /// Applied hash.
    pub hash: Option<String>,
    /// When it was applied, Unix seconds.
    pub applied_at: Option<u64>,
    /// Last push or heartbeat, Unix seconds.
    pub last_contact_at: Option<u64>,
    /// Seconds since the last contact.
    pub age_seconds: Option<u64>,
    /// The hash the agent last reported.
    pub reported_hash: Option<String>,
    /// What is wrong (held snapshot, failed apply or hook).
    pub problem: Option<String>,
    /// What the MTA answers unknown recipients at the agent's domains now: `defer` (450, the
    /// copy is stale, held or never arrived, under the defer policy) or `reject` (550).
    #[serde(default)]
    pub unknown_recipients: String,
}

/// `GET /v1/status` body.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Status {
    /// The worst agent state.
    pub state: String,
    /// Every agent.
    pub agents: Vec<AgentStatus>,
}

/// What the MTA answers unknown recipients at agent `a`'s domains in `state`.
fn unknown_recipients(
    cfg: &crate::config::Loaded,
    a: &crate::config::AgentConfig,
    state: Freshness,
) -> String {
    crate::fresh::unknown_recipients(state, cfg.config.unknown_when_stale(a)).into()
}

/// The status now (no addresses in it).
pub fn status(server: &Server) -> Status {
    let cfg = server.cfg();
    let (warn, stale) = cfg.config.freshness.thresholds();
    let now = tokio::time::Instant::now();
    let live = lock(&server.live);
    let mut agents = Vec::new();
    let mut states = Vec::new();
    for a in &cfg.config.agents {
        let Some(l) = live.get(&a.id) else { continue };
        let state = crate::fresh::evaluate(now, &l.inputs(), warn, stale);
        states.push(state);
        agents.push(AgentStatus {
            agent: a.id.clone(),
            domains: a.domains.clone(),
            state: state.as_str().into(),
            version: l.applied.as_ref().map(|x| x.version),
            hash: l.applied.as_ref().map(|x| x.hash.clone()),
            applied_at: l.applied.as_ref().map(|x| x.applied_at),
            last_contact_at: l.last_contact_at,
            age_seconds: l
                .last_contact
                .map(|t| now.saturating_duration_since(t).as_secs()),
            reported_hash: l.reported_hash.clone(),
            problem: l
                .held
                .as_ref()
                .map(|h| h.why.clone())
                .or_else(|| l.problem.clone()),
            unknown_recipients: unknown_recipients(&cfg, a, state),
        });
    }
    Status {
        state: Freshness::worst(states).as_str().into(),
        agents,
    }
}

async fn get_status(State(app): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    need_token(
        app.server.cfg().status_token.as_deref(),
        &headers,
        "/v1/status",
    )?;
    let s = status(&app.server);
    let code = if s.state == "fresh" {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    Ok((code, Json(s)).into_response())
}

async fn get_metrics(
    State(app): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    need_token(
        app.server.cfg().status_token.as_deref(),
        &headers,
        "/metrics",
    )?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        app.server.metrics.encode(),
    )
        .into_response())
}

/// The plan of `address` from the applied snapshot of the agent serving its domain.
pub fn plan_of(server: &Server, address: &str) -> Option<proto::Plan> {
    let domain = address.rsplit_once('@')?.1.to_ascii_lowercase();
    let agent = server.cfg().domain_agent.get(&domain)?.clone();
    let applied = lock(&server.live).get(&agent)?.applied.clone()?;
    proto::Planner::sparse(&applied.content).plan(address)
}

async fn get_plan(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(address): Path<String>,
) -> Result<Json<proto::Plan>, ApiError> {
    need_read_token(&app, &headers)?;
    let server = Arc::clone(&app.server);
    let a = address.clone();
    let plan = tokio::task::spawn_blocking(move || plan_of(&server, &a))
        .await
        .map_err(|e| ApiError::Internal(e.into()))?;
    plan.map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("{address} is not a valid recipient here")))
}

/// Query of `GET /v1/snapshots`.
#[derive(Debug, Deserialize)]
struct HistoryQuery {
    agent: Option<String>,
    limit: Option<u32>,
}

async fn get_history(
    State(app): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<HistoryQuery>,
) -> Result<Json<Vec<crate::store::HistoryRow>>, ApiError> {
    need_read_token(&app, &headers)?;
    let server = Arc::clone(&app.server);
    let rows = tokio::task::spawn_blocking(move || {
        lock(&server.db).history(q.agent.as_deref(), q.limit.unwrap_or(100).min(10_000))
    })
    .await
    .map_err(|e| ApiError::Internal(e.into()))?
    .map_err(|e| ApiError::Internal(e.into()))?;
    Ok(Json(rows))
}

#[cfg(test)]
mod tests;

/// The status from the database alone (for `mxsync-server check`): cheap, it decodes no snapshot.
/// The time since the hashes started to disagree is not stored, so it is counted from the last
/// contact, as after a restart.
pub fn offline_status(
    cfg: &crate::config::Loaded,
    store: &crate::store::Store,
) -> anyhow::Result<Status> {
    let (warn, stale) = cfg.config.freshness.thresholds();
    let now = tokio::time::Instant::now();
    let wall = crate::now_secs();
    let mut agents = Vec::new();
    let mut states = Vec::new();
    for a in &cfg.config.agents {
        let row = store.agent(&a.id)?.unwrap_or_default();
        let age = row.last_contact_at.map(|t| wall.saturating_sub(t));
        let last_contact = age.map(|s| {
            now.checked_sub(std::time::Duration::from_secs(s))
                .unwrap_or(now)
        });
        let disagree = row.applied_hash.is_some() && row.reported_hash != row.applied_hash;
        let inputs = crate::fresh::Inputs {
            applied: row.applied_version.is_some(),
            last_contact,
            disagree_since: if disagree { last_contact } else { None },
            held: row.held_snapshot.is_some(),
        };
        let state = crate::fresh::evaluate(now, &inputs, warn, stale);
        states.push(state);
        let held = match row.held_snapshot {
            Some(id) => store
                .history(Some(&a.id), cfg.config.history.keep.max(1))?
                .into_iter()
                .find(|h| h.id == id)
                .and_then(|h| h.detail),
            None => None,
        };
        agents.push(AgentStatus {
            agent: a.id.clone(),
            domains: a.domains.clone(),
            state: state.as_str().into(),
            version: row.applied_version,
            hash: row.applied_hash,
            applied_at: row.applied_at,
            last_contact_at: row.last_contact_at,
            age_seconds: age,
            reported_hash: row.reported_hash,
            problem: held.or(row.problem),
            unknown_recipients: unknown_recipients(cfg, a, state),
        });
    }
    Ok(Status {
        state: Freshness::worst(states).as_str().into(),
        agents,
    })
}
