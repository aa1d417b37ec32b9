//! The rows the store reads and writes, as the rest of the server sees them.

use serde::Serialize;

/// An agent's row.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AgentRow {
    /// Agent id.
    pub id: String,
    /// Highest request sequence number accepted.
    pub last_seq: u64,
    /// Last push or heartbeat, Unix seconds.
    pub last_contact_at: Option<u64>,
    /// Version the agent last reported.
    pub reported_version: Option<u64>,
    /// Hash the agent last reported.
    pub reported_hash: Option<String>,
    /// History row of the applied snapshot.
    pub applied_snapshot: Option<i64>,
    /// Applied version.
    pub applied_version: Option<u64>,
    /// Applied hash.
    pub applied_hash: Option<String>,
    /// When it was applied, Unix seconds.
    pub applied_at: Option<u64>,
    /// Valid addresses in the applied snapshot.
    pub applied_addresses: Option<u64>,
    /// History row of a snapshot held by the shrink guard.
    pub held_snapshot: Option<i64>,
    /// An operator asked to release the held snapshot.
    pub release_requested: bool,
    /// The release was forced (`release --force VERSION`): the held snapshot is applied even
    /// though the agent reports other content now.
    pub release_forced: bool,
    /// What is wrong, for status (apply or hook failure).
    pub problem: Option<String>,
    /// Last freshness state written by the watcher.
    pub state: String,
}

/// One history row, as served by `GET /v1/snapshots` (no body).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HistoryRow {
    /// Row id.
    pub id: i64,
    /// Agent id.
    pub agent: String,
    /// Snapshot version.
    pub version: u64,
    /// Snapshot hash.
    pub hash: String,
    /// When it was received, Unix seconds.
    pub received_at: u64,
    /// When it was applied, Unix seconds.
    pub applied_at: Option<u64>,
    /// `applied`, `resent`, `held`, `released`, `refused`, `failed`, `superseded`.
    pub outcome: String,
    /// Why, for refusals and failures.
    pub detail: Option<String>,
    /// Valid addresses, when planned.
    pub addresses: Option<u64>,
    /// Forward plans.
    pub forward: Option<u64>,
    /// Split plans.
    pub split: Option<u64>,
    /// Punt plans.
    pub punt: Option<u64>,
}

/// Counts of a planned snapshot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Valid addresses.
    pub addresses: u64,
    /// Forward plans.
    pub forward: u64,
    /// Split plans.
    pub split: u64,
    /// Punt plans.
    pub punt: u64,
}

impl std::ops::AddAssign for Counts {
    fn add_assign(&mut self, o: Counts) {
        self.addresses += o.addresses;
        self.forward += o.forward;
        self.split += o.split;
        self.punt += o.punt;
    }
}

/// A new history row.
#[derive(Debug, Clone)]
pub struct NewSnapshot<'a> {
    /// Agent id.
    pub agent: &'a str,
    /// Version.
    pub version: u64,
    /// Hash.
    pub hash: &'a str,
    /// Received at, Unix seconds.
    pub received_at: u64,
    /// Outcome.
    pub outcome: &'a str,
    /// Detail.
    pub detail: Option<&'a str>,
    /// Counts, when planned.
    pub counts: Option<Counts>,
    /// The compressed body, when it must be kept.
    pub body: Option<&'a [u8]>,
    /// The row `body` is a delta against (None: the body is the whole snapshot).
    pub base: Option<i64>,
}

/// One row of a snapshot's chain, as [`Store::chain`] returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// History row.
    pub id: i64,
    /// The row its body is a delta against, if it is one.
    pub base: Option<i64>,
    /// The compressed body, if kept.
    pub body: Option<Vec<u8>>,
}

/// An apply, as the history and the agent's row record it.
#[derive(Debug, Clone, Copy)]
pub struct ApplyRecord<'a> {
    /// The agent.
    pub agent: &'a str,
    /// Its history row now applied.
    pub snapshot: i64,
    /// The snapshot's version.
    pub version: u64,
    /// The snapshot's hash.
    pub hash: &'a str,
    /// When it went live, Unix seconds.
    pub applied_at: u64,
    /// Its plan counts ([`Store::set_applied`] records `addresses` only).
    pub counts: Counts,
}
