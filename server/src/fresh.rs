//! Freshness (DESIGN section 8): the state of each agent's copy, computed from last contact and
//! hash agreement, and the alerts sent when it changes.
//!
//! [`evaluate`] is a pure function of the tokio clock, so tests drive it with a paused clock.
//! Staleness never empties or rolls back the maps: the last good maps stay in force. What it
//! changes is which domains `stale_domains` lists, whose unknown recipients are then deferred.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use crate::{Server, lock};

/// An agent's freshness.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Contact within `warn_after` and the reported hash is the applied one.
    Fresh,
    /// No contact, or disagreement, for more than `warn_after`.
    Late,
    /// No contact, or disagreement, for more than `stale_after`; or a snapshot is held.
    Stale,
    /// Nothing applied yet.
    Never,
}

impl State {
    /// The name used in JSON, metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Fresh => "fresh",
            State::Late => "late",
            State::Stale => "stale",
            State::Never => "never",
        }
    }

    /// Monitoring-plugin exit code of `check`.
    pub fn exit_code(self) -> u8 {
        match self {
            State::Fresh => 0,
            State::Late => 1,
            State::Stale => 2,
            State::Never => 3,
        }
    }

    /// Parses [`State::as_str`].
    pub fn parse(s: &str) -> State {
        match s {
            "fresh" => State::Fresh,
            "late" => State::Late,
            "stale" => State::Stale,
            _ => State::Never,
        }
    }

    /// Orders states by how bad they are, for the overall state.
    fn badness(self) -> u8 {
        match self {
            State::Fresh => 0,
            State::Late => 1,
            State::Never => 2,
            State::Stale => 3,
        }
    }

    /// The worst of several states (`fresh` for none).
    pub fn worst(states: impl IntoIterator<Item = State>) -> State {
        states
            .into_iter()
            .max_by_key(|s| s.badness())
            .unwrap_or(State::Fresh)
    }
}

/// What freshness depends on.
#[derive(Clone, Debug, Default)]
pub struct Inputs {
    /// A snapshot has been applied.
    pub applied: bool,
    /// Last push or heartbeat.
    pub last_contact: Option<Instant>,
    /// Since when the agent's reported hash differs from the applied one.
    pub disagree_since: Option<Instant>,
    /// The shrink guard holds a snapshot.
    pub held: bool,
}

/// The state at `now`.
pub fn evaluate(now: Instant, i: &Inputs, warn: Duration, stale: Duration) -> State {
    if !i.applied {
        return State::Never;
    }
    if i.held {
        return State::Stale;
    }
    let age = i
        .last_contact
        .map_or(Duration::MAX, |t| now.saturating_duration_since(t));
    let disagree = i
        .disagree_since
        .map_or(Duration::ZERO, |t| now.saturating_duration_since(t));
    let worst = age.max(disagree);
    if worst > stale {
        State::Stale
    } else if worst > warn {
        State::Late
    } else {
        State::Fresh
    }
}

/// Whether unknown recipients at an agent's domains are deferred (450) rather than refused
/// (550) in its `state` under `policy`: while its copy is `stale` (which a held snapshot makes
/// it) or `never` arrived.
pub fn defers(state: State, policy: crate::config::UnknownWhenStale) -> bool {
    policy == crate::config::UnknownWhenStale::Defer && matches!(state, State::Stale | State::Never)
}

/// What the MTA answers unknown recipients in `state` under `policy`, as the status, the
/// alerts and `check` say it: `defer` or `reject`.
pub fn unknown_recipients(state: State, policy: crate::config::UnknownWhenStale) -> &'static str {
    if defers(state, policy) {
        "defer"
    } else {
        "reject"
    }
}

/// The JSON sent to every alert sink.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Alert {
    /// `state` for a freshness change, `problem` for an apply or hook failure.
    pub event: String,
    /// Agent id.
    pub agent: String,
    /// Previous state.
    pub old: State,
    /// New state.
    pub new: State,
    /// Seconds since the last contact, if any.
    pub age_seconds: Option<u64>,
    /// Applied version.
    pub version: Option<u64>,
    /// What is wrong, if anything.
    pub problem: Option<String>,
    /// What the MTA answers unknown recipients at the agent's domains now: `defer` (450) while
    /// the defer policy is in force, `reject` (550) otherwise.
    pub unknown_recipients: &'static str,
}

/// The alert sinks of the configuration.
#[derive(Clone)]
pub struct Sinks {
    /// POST JSON here.
    pub webhook_url: Option<String>,
    /// Run this with the JSON on stdin.
    pub command: Vec<String>,
    /// healthchecks-style ping URL.
    pub ping_url: Option<String>,
    /// Built once, with timeouts.
    pub client: reqwest::Client,
}

impl Sinks {
    /// The sinks `alerts` names, sending through `client`.
    pub fn new(alerts: &crate::config::Alerts, client: reqwest::Client) -> Sinks {
        Sinks {
            webhook_url: alerts.webhook_url.clone(),
            command: alerts.command.clone(),
            ping_url: alerts.ping_url.clone(),
            client,
        }
    }

    /// Sends `alert` to every sink; failures are logged, never fatal.
    pub async fn send(&self, alert: &Alert) {
        let body = serde_json::to_vec(alert).unwrap_or_default();
        if let Some(url) = &self.webhook_url {
            let r = self
                .client
                .post(url)
                .header("content-type", "application/json")
                .body(body.clone())
                .send()
                .await;
            match r {
                Ok(resp) if resp.status().is_success() => {}
                Ok(resp) => {
                    tracing::warn!(url, status = %resp.status(), "alert webhook refused the alert")
                }
                Err(e) => tracing::warn!(url, error = %e, "alert webhook failed"),
            }
        }
        if !self.command.is_empty()
            && let Err(e) =
                crate::hooks::run(&self.command, None, Some(&body), Duration::from_secs(30)).await
        {
            tracing::warn!(command = ?self.command, error = %e, "alert command failed");
        }
        if let Some(url) = &self.ping_url {
            let target = match alert.new {
                State::Fresh => Some(url.clone()),
                State::Stale => Some(format!("{}/fail", url.trim_end_matches('/'))),
                _ => None,
            };
            if let Some(target) = target
                && let Err(e) = self.client.get(&target).send().await
            {
                tracing::warn!(url = target, error = %e, "alert ping failed");
            }
        }
    }
}

/// The server's side of freshness: each agent's state now, the alerts on a change, the domains
/// whose unknown recipients are deferred, and what systemd is told.
impl Server {
    /// What the MTA answers unknown recipients at agent `id`'s domains in `state`: `defer`
    /// or `reject` ([`fresh::unknown_recipients`]).
    pub fn unknown_recipients(&self, id: &str, state: State) -> &'static str {
        let cfg = self.cfg();
        (cfg.config.agent(id)).map_or("reject", |a| {
            unknown_recipients(state, cfg.config.unknown_when_stale(a))
        })
    }

    /// The domains whose unknown recipients are deferred now (sorted): those of every agent
    /// whose copy is stale, held or never arrived, under the defer policy. `applying`, whose
    /// snapshot is being installed, counts as fresh.
    pub fn deferred_domains(&self, applying: Option<&str>) -> Vec<String> {
        let cfg = self.cfg();
        let (warn, stale) = cfg.config.freshness.thresholds();
        let now = Instant::now();
        let live = lock(&self.live);
        let mut out: Vec<String> = (cfg.config.agents.iter())
            .filter(|a| Some(a.id.as_str()) != applying)
            .filter(|a| {
                let state = live
                    .get(&a.id)
                    .map_or(State::Never, |l| evaluate(now, &l.inputs(), warn, stale));
                unknown_recipients(state, cfg.config.unknown_when_stale(a)) == "defer"
            })
            .flat_map(|a| a.domains.iter().cloned())
            .collect();
        out.sort_unstable();
        out
    }

    /// One freshness pass: recomputes every agent's state; announces changes.
    pub fn check_freshness(self: &Arc<Self>) {
        let (warn, stale) = self.cfg().config.freshness.thresholds();
        let now = Instant::now();
        let mut changes = Vec::new();
        {
            let mut live = lock(&self.live);
            for (id, l) in live.iter_mut() {
                let state = evaluate(now, &l.inputs(), warn, stale);
                let old = l.state.replace(state);
                if old != Some(state) {
                    changes.push(Alert {
                        event: "state".into(),
                        agent: id.clone(),
                        old: old.unwrap_or(State::Never),
                        new: state,
                        age_seconds: l
                            .last_contact
                            .map(|t| now.saturating_duration_since(t).as_secs()),
                        version: l.applied.as_ref().map(|a| a.version),
                        problem: l
                            .held
                            .as_ref()
                            .map(|h| h.why.clone())
                            .or_else(|| l.problem.clone()),
                        unknown_recipients: self.unknown_recipients(id, state),
                    });
                }
            }
        }
        for alert in changes {
            self.metrics.set_state(&alert.agent, alert.new.as_str());
            (self.metrics).set_deferred(&alert.agent, alert.unknown_recipients == "defer");
            if let Err(e) = lock(&self.db).set_state(&alert.agent, alert.new.as_str()) {
                tracing::error!(agent = alert.agent, error = %e, "cannot record the state in the database");
            }
            let (agent, old, new) = (alert.agent.as_str(), alert.old.as_str(), alert.new.as_str());
            match alert.new {
                State::Stale => tracing::error!(
                    agent,
                    old,
                    new,
                    age = alert.age_seconds,
                    problem = alert.problem,
                    unknown_recipients = alert.unknown_recipients,
                    "agent's copy is stale"
                ),
                State::Late => tracing::warn!(
                    agent,
                    old,
                    new,
                    age = alert.age_seconds,
                    "agent's copy is late"
                ),
                _ => tracing::info!(agent, old, new, "agent freshness changed"),
            }
            let me = Arc::clone(self);
            self.tracker
                .spawn(async move { me.sinks().send(&alert).await });
        }
    }
}

#[cfg(test)]
mod tests;
