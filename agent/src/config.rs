//! The agent's configuration file (DESIGN section 11): TOML, unknown keys refused, every problem
//! reported at once, relative paths resolved against the file's directory.
//!
//! Loading checks what can be checked without the network: domains, URLs, that key files exist,
//! hold a long enough secret and are private. It does not read alias sources (see `collect`).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[path = "../../server/src/config/shared.rs"]
mod shared;
pub use shared::{ConfigError, read_secret};

/// The configuration of mxsync-agent, as written: `/etc/mxsync/agent.toml` unless `--config` or
/// `MXSYNC_CONFIG` names another file.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The name receivers know this agent by (their `[[agents]] id`).
    pub agent_id: String,
    /// Domains the primary is the final destination for; every alias name and user is valid at
    /// each of them.
    pub domains: Vec<String>,
    /// Where the version and sequence counters and the last pushed snapshot are kept: the
    /// unit's StateDirectory by default.
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// What to read on the primary.
    pub sources: Sources,
    /// Debounce, heartbeat and rescan intervals.
    #[serde(default)]
    pub timing: Timing,
    /// Secondaries to push to; none is fine for `plan` and `lint`.
    #[serde(default)]
    pub receivers: Vec<Receiver>,
}

/// The alias sources.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Sources {
    /// aliases(5) files, in the order of `alias_maps` (the first definition of a name wins);
    /// glob patterns are expanded and sorted.
    #[serde(default)]
    pub aliases: Vec<String>,
    /// Postfix virtual(5) alias maps (source text, not the .db).
    #[serde(default, rename = "virtual")]
    pub virtual_maps: Vec<String>,
    /// Recipient lists, one address a line (e.g. a `relay_recipients` source file).
    #[serde(default)]
    pub recipients: Vec<String>,
    /// passwd-format file of local users; empty for none.
    #[serde(default = "default_passwd")]
    pub passwd: String,
    /// Lowest uid that is a mailbox (Postfix delivers to every passwd entry, hence 0).
    #[serde(default)]
    pub uid_min: u32,
    /// Look for `~/.procmailrc` and `~/.forward` in each user's home directory.
    #[serde(default = "yes")]
    pub markers: bool,
}

fn default_passwd() -> String {
    "/etc/passwd".to_string()
}

fn yes() -> bool {
    true
}

/// Timing knobs.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Timing {
    /// Quiet time after a file event before the sources are read again, in milliseconds: each
    /// further event for a watched file starts it again, up to ten times this (at least 1 s)
    /// after the first.
    #[serde(default = "default_debounce")]
    pub debounce_ms: u64,
    /// Heartbeat interval when nothing changes, in seconds.
    #[serde(default = "default_heartbeat")]
    pub heartbeat_secs: u64,
    /// Full rescan interval whatever the file events said, in seconds.
    #[serde(default = "default_rescan")]
    pub rescan_secs: u64,
}

fn default_debounce() -> u64 {
    50
}
fn default_heartbeat() -> u64 {
    30
}
fn default_rescan() -> u64 {
    300
}

fn default_state_dir() -> PathBuf {
    PathBuf::from("/var/lib/mxsync-agent")
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            debounce_ms: default_debounce(),
            heartbeat_secs: default_heartbeat(),
            rescan_secs: default_rescan(),
        }
    }
}

/// One secondary.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Receiver {
    /// Base URL of the receiver's `mxsync-server`, `http://` or `https://`.
    pub url: String,
    /// File holding the secret shared with that receiver's `[[agents]] key_file`.
    pub key_file: PathBuf,
    /// CA certificate (PEM) to verify the receiver with; the system roots otherwise.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

impl Config {
    /// Loads `path` and checks its structure (what `plan` and `lint` need); see
    /// [`Config::load_for_push`] for the full check.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Self::load_checked(path, false)
    }

    /// Loads `path` and checks everything, including that the receivers' key files are private,
    /// hold a long enough secret, and that CA files exist (`check-config`, `run`, `once`).
    pub fn load_for_push(path: &Path) -> Result<Config, ConfigError> {
        Self::load_checked(path, true)
    }

    fn load_checked(path: &Path, secrets: bool) -> Result<Config, ConfigError> {
        let fail = |problems: Vec<String>| ConfigError {
            path: path.to_path_buf(),
            problems,
        };
        let text = std::fs::read_to_string(path).map_err(|e| fail(vec![e.to_string()]))?;
        let mut cfg: Config = toml::from_str(&text).map_err(|e| fail(vec![e.to_string()]))?;
        let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        let base = abs.parent().unwrap_or(Path::new("/"));
        cfg.resolve(base);
        let problems = cfg.problems(secrets);
        if problems.is_empty() {
            Ok(cfg)
        } else {
            Err(fail(problems))
        }
    }

    fn resolve(&mut self, base: &Path) {
        let join = |p: &str| -> String {
            if p.is_empty() || Path::new(p).is_absolute() {
                p.to_string()
            } else {
                base.join(p).to_string_lossy().into_owned()
            }
        };
        self.state_dir = base.join(&self.state_dir);
        let s = &mut self.sources;
        for list in [&mut s.aliases, &mut s.virtual_maps, &mut s.recipients] {
            for p in list.iter_mut() {
                *p = join(p);
            }
        }
        s.passwd = join(&s.passwd);
        for r in &mut self.receivers {
            r.key_file = base.join(&r.key_file);
            if let Some(ca) = &mut r.ca_file {
                *ca = base.join(&*ca);
            }
        }
    }

    fn problems(&self, secrets: bool) -> Vec<String> {
        let mut p = Vec::new();
        if self.agent_id.is_empty()
            || !self
                .agent_id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            p.push(format!(
                "agent_id {:?}: use letters, digits, '-', '_' and '.'",
                self.agent_id
            ));
        }
        if self.domains.is_empty() {
            p.push("domains: at least one domain is required".into());
        }
        for d in &self.domains {
            if !proto::addr::valid_domain(&d.to_ascii_lowercase()) {
                p.push(format!("domains: {d:?} is not a domain name"));
            }
        }
        let t = &self.timing;
        if t.heartbeat_secs == 0 || t.rescan_secs == 0 {
            p.push("timing: heartbeat_secs and rescan_secs must be at least 1".into());
        }
        for (i, r) in self.receivers.iter().enumerate() {
            let what = format!("receivers[{i}]");
            if !(r.url.starts_with("http://") || r.url.starts_with("https://")) {
                p.push(format!(
                    "{what}.url {:?}: must start with http:// or https://",
                    r.url
                ));
            }
            if !secrets {
                continue;
            }
            if let Err(e) = read_secret(&r.key_file) {
                p.push(format!("{what}.key_file {e}"));
            }
            if let Some(ca) = &r.ca_file
                && let Err(e) = std::fs::metadata(ca)
            {
                p.push(format!("{what}.ca_file {}: {e}", ca.display()));
            }
        }
        p
    }

    /// The served domains, lowercased.
    pub fn domains(&self) -> Vec<String> {
        self.domains
            .iter()
            .map(|d| d.to_ascii_lowercase())
            .collect()
    }
}

#[cfg(test)]
mod tests;
