//! Prometheus metrics. No label carries an address: only agent ids, states, classes and reasons.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

/// `{agent}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AgentLabel {
    /// Agent id.
    pub agent: String,
}

/// `{agent, state}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    /// Agent id.
    pub agent: String,
    /// fresh, late, stale, never.
    pub state: String,
}

/// `{agent, class}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClassLabel {
    /// Agent id.
    pub agent: String,
    /// forward, split, punt.
    pub class: String,
}

/// `{agent, reason}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RejectLabel {
    /// Agent id as claimed (or `unknown`).
    pub agent: String,
    /// The error code sent back.
    pub reason: String,
}

/// `{agent, kind}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    /// Agent id.
    pub agent: String,
    /// `full` or `delta`.
    pub kind: String,
}

type FloatGauge = Gauge<f64, AtomicU64>;

/// Every metric the server exports.
pub struct Metrics {
    registry: Registry,
    /// Applied snapshot version.
    pub version: Family<AgentLabel, Gauge>,
    /// Last push or heartbeat.
    pub last_contact: Family<AgentLabel, FloatGauge>,
    /// Last successful apply.
    pub last_apply: Family<AgentLabel, FloatGauge>,
    /// 1 for the current state.
    pub freshness: Family<StateLabel, Gauge>,
    /// 1 while unknown recipients at the agent's domains are deferred (the defer policy in
    /// force: stale, held or never), 0 while they are refused.
    pub unknown_deferred: Family<AgentLabel, Gauge>,
    /// Addresses by class.
    pub addresses: Family<ClassLabel, Gauge>,
    /// Time from request to live maps.
    pub apply_duration: Histogram,
    /// Refused requests.
    pub rejected: Family<RejectLabel, Counter>,
    /// Applied snapshots, by how they came.
    pub applied: Family<KindLabel, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let version = Family::<AgentLabel, Gauge>::default();
        let last_contact = Family::<AgentLabel, FloatGauge>::default();
        let last_apply = Family::<AgentLabel, FloatGauge>::default();
        let freshness = Family::<StateLabel, Gauge>::default();
        let unknown_deferred = Family::<AgentLabel, Gauge>::default();
        let addresses = Family::<ClassLabel, Gauge>::default();
        let apply_duration = Histogram::new(exponential_buckets(0.005, 2.0, 14));
        let rejected = Family::<RejectLabel, Counter>::default();
        let applied = Family::<KindLabel, Counter>::default();
        registry.register(
            "mxsync_snapshot_version",
            "Applied snapshot version",
            version.clone(),
        );
        registry.register(
            "mxsync_last_contact_timestamp_seconds",
            "Last push or heartbeat from the agent",
            last_contact.clone(),
        );
        registry.register(
            "mxsync_last_apply_success_timestamp_seconds",
            "Last successful apply of the agent's snapshot",
            last_apply.clone(),
        );
        registry.register(
            "mxsync_freshness",
            "1 for the agent's current freshness state",
            freshness.clone(),
        );
        registry.register(
            "mxsync_unknown_recipients_deferred",
            "1 while unknown recipients at the agent's domains are deferred (450) because its copy is stale, held or never arrived",
            unknown_deferred.clone(),
        );
        registry.register(
            "mxsync_addresses",
            "Valid addresses by class",
            addresses.clone(),
        );
        registry.register(
            "mxsync_apply_duration_seconds",
            "Time from a snapshot request to live maps",
            apply_duration.clone(),
        );
        registry.register(
            "mxsync_ingest_rejected",
            "Refused agent requests",
            rejected.clone(),
        );
        registry.register(
            "mxsync_applied",
            "Snapshots applied, by kind (full or delta)",
            applied.clone(),
        );
        Metrics {
            registry,
            version,
            last_contact,
            last_apply,
            freshness,
            unknown_deferred,
            addresses,
            apply_duration,
            rejected,
            applied,
        }
    }
}

impl Metrics {
    /// The text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// Sets the freshness family so exactly `state` is 1 for `agent`.
    pub fn set_state(&self, agent: &str, state: &str) {
        for s in ["fresh", "late", "stale", "never"] {
            self.freshness
                .get_or_create(&StateLabel {
                    agent: agent.to_string(),
                    state: s.to_string(),
                })
                .set(i64::from(s == state));
        }
    }

    /// Sets whether `agent`'s unknown recipients are deferred now.
    pub fn set_deferred(&self, agent: &str, deferred: bool) {
        self.unknown_deferred
            .get_or_create(&AgentLabel {
                agent: agent.to_string(),
            })
            .set(i64::from(deferred));
    }

    /// Counts a refused request.
    pub fn reject(&self, agent: &str, reason: &str) {
        self.rejected
            .get_or_create(&RejectLabel {
                agent: agent.to_string(),
                reason: reason.to_string(),
            })
            .inc();
    }
}
