//! Reloading the configuration (SIGHUP, `systemctl reload`): the file is read and checked
//! again; an invalid one is refused with every problem and the running one stays. A valid one
//! takes effect without dropping connections or state: agents added (with whatever the
//! database holds for them) or removed (their rows leave the maps), keys, domains, policies,
//! tokens, freshness, guard, history, alerts and output hooks. What is bound or opened at start
//! (listen, TLS, state and output directories, map formats, modes, `[output.postgres]`) and an
//! agent's `primary` (its rendered rows are kept between applies) keep their running values
//! until a restart, and the reload says so.

use std::sync::Arc;

use serde::Serialize;

use crate::config::Loaded;
use crate::{Server, lock};

/// What a reload did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Reloaded {
    /// Agents now accepted that were not.
    pub added: Vec<String>,
    /// Agents no longer accepted.
    pub removed: Vec<String>,
    /// Settings that changed in the file but keep their running value until a restart.
    pub need_restart: Vec<String>,
}

impl Server {
    /// Reads the configuration file again and puts it in force; see the module doc.
    pub fn reload_from_disk(&self) -> Result<Reloaded, String> {
        let path = self.cfg().path.clone();
        let new = Loaded::load(&path).map_err(|e| e.to_string())?;
        self.reload(new).map_err(|e| format!("{e:#}"))
    }

    /// Puts `new` in force, but for what needs a restart; see the module doc.
    pub fn reload(&self, mut new: Loaded) -> anyhow::Result<Reloaded> {
        let old = self.cfg();
        let mut done = Reloaded {
            need_restart: keep_running(&old, &mut new),
            ..Reloaded::default()
        };
        let was: Vec<&str> = old.config.agents.iter().map(|a| a.id.as_str()).collect();
        let now: Vec<&str> = new.config.agents.iter().map(|a| a.id.as_str()).collect();
        done.added = (now.iter())
            .filter(|id| !was.contains(id))
            .map(|id| id.to_string())
            .collect();
        done.removed = (was.iter())
            .filter(|id| !now.contains(id))
            .map(|id| id.to_string())
            .collect();

        // Nothing applies while the agents and the configuration change together.
        let _apply = lock(&self.apply_lock);
        let mut added = Vec::new();
        {
            let store = lock(&self.db);
            store.ensure_agents(done.added.iter().map(String::as_str))?;
            for id in &done.added {
                added.push((id.clone(), crate::load_live(&store, id)?));
            }
        }
        let sinks = crate::fresh::Sinks::new(&new.config.alerts, self.sinks().client.clone());
        let sinks = Arc::new(sinks);
        {
            let mut live = lock(&self.live);
            live.extend(added);
            live.retain(|id, _| now.contains(&id.as_str()));
        }
        *self
            .cfg
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(new);
        *self
            .sinks
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = sinks;
        if !done.added.is_empty() || !done.removed.is_empty() {
            crate::ingest::install_current(self)?;
        }
        self.refresh_metrics();
        Ok(done)
    }
}

/// Sets in `new` the running value of every setting that needs a restart, and names those that
/// differed.
fn keep_running(old: &Loaded, new: &mut Loaded) -> Vec<String> {
    fn differs<T: Serialize>(a: &T, b: &T) -> bool {
        serde_json::to_value(a).ok() != serde_json::to_value(b).ok()
    }
    let mut named = Vec::new();
    let (o, n) = (&old.config, &mut new.config);
    macro_rules! keep {
        ($($field:ident).+) => {
            if differs(&o.$($field).+, &n.$($field).+) {
                named.push(stringify!($($field).+).replace(' ', ""));
                n.$($field).+ = o.$($field).+.clone();
            }
        };
    }
    keep!(listen);
    keep!(state_dir);
    keep!(tls);
    keep!(max_connections);
    keep!(header_timeout_secs);
    keep!(output.dir);
    keep!(output.formats);
    keep!(output.cdb);
    keep!(output.group);
    keep!(output.postgres);
    for agent in &mut n.agents {
        if let Some(was) = o.agent(&agent.id)
            && was.primary != agent.primary
        {
            named.push(format!("agents.{}.primary", agent.id));
            agent.primary = was.primary.clone();
        }
    }
    new.listen = old.listen;
    new.maps = old.maps;
    // The writer task holds the target it started with (and the password it read then).
    new.postgres = old.postgres.clone();
    named
}
