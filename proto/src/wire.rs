//! Request and reply bodies of the HTTP API (DESIGN section 6), other than the snapshot itself.
//!
//! Every type tolerates unknown fields, so that either side can be upgraded first.

use serde::{Deserialize, Serialize};

/// The zstd level of the bodies the agent sends and the snapshots the server stores. At a
/// million aliases (162 MiB of JSON), level 1 beside the JSON encoder took 0.61-1.10 s and
/// gave 27.1 MiB, level 3 0.91-1.47 s and 29.1 MiB (its inflate 0.41-0.58 s against
/// 0.49-0.69 s): faster both ways, and no larger on this JSON.
pub const ZSTD_LEVEL: i32 = 1;

/// Reply to `POST /v1/snapshots` once the snapshot is stored and live in the maps.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotReply {
    /// The applied version.
    pub version: u64,
    /// The applied hash.
    pub hash: String,
    /// When it was applied, seconds since the Unix epoch.
    pub applied_at: u64,
}

/// `POST /v1/heartbeat` body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// The agent's current version.
    pub version: u64,
    /// The agent's current content hash.
    pub hash: String,
}

/// Reply to a heartbeat.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatReply {
    /// The server does not hold this hash applied and wants the full snapshot.
    pub need_snapshot: bool,
    /// The version the server has applied for this agent, if any.
    #[serde(default)]
    pub applied_version: Option<u64>,
    /// The hash the server has applied for this agent, if any.
    #[serde(default)]
    pub applied_hash: Option<String>,
}

/// Every error reply: `{"error": "<code>", "message": "<text>"}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// A stable code, e.g. `bad_signature`, `replay`, `version_conflict`, `held`.
    pub error: String,
    /// A human-readable explanation (never internal detail).
    pub message: String,
    /// The version the server holds, on a 409, so an agent that lost its state can move above it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_version: Option<u64>,
}
