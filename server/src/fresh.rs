//! Freshness (DESIGN section 8): the state of each agent's copy, computed from last contact and
//! hash agreement, and the alerts sent when it changes.
//!
//! [`evaluate`] is a pure function of the tokio clock, so tests drive it with a paused clock.
//! Staleness never touches the maps: the last good maps stay in force.

use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

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

#[cfg(test)]
mod tests;
