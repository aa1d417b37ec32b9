//! The server's configuration file (DESIGN section 11): TOML, unknown keys refused, every problem
//! reported at once, relative paths resolved against the file's directory, secrets read from
//! private files (never from the TOML itself).

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

mod shared;
pub use shared::{ConfigError, read_secret};

/// The configuration of mxsync-server, as written: `/etc/mxsync/server.toml` unless `--config` or
/// `MXSYNC_CONFIG` names another file.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address and port to listen on, e.g. `0.0.0.0:8025`.
    pub listen: String,
    /// Where the SQLite database lives: the unit's StateDirectory by default.
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// Bearer token file for `/v1/plan` and `/v1/snapshots`; without one, neither is served.
    #[serde(default)]
    pub read_token_file: Option<PathBuf>,
    /// Bearer token file that, when set, also protects `/v1/status` and `/metrics`.
    #[serde(default)]
    pub status_token_file: Option<PathBuf>,
    /// Largest snapshot accepted, compressed and decompressed, in bytes.
    #[serde(default = "default_max_body")]
    pub max_body_bytes: u64,
    /// Most connections served at once; more wait in the kernel's backlog. Lowered to what the
    /// file-descriptor limit allows.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Seconds a connection may take to send a request's headers, and may stay idle between
    /// requests, before it is closed.
    #[serde(default = "default_header_timeout")]
    pub header_timeout_secs: u64,
    /// Serve HTTPS with this certificate and key.
    #[serde(default)]
    pub tls: Option<Tls>,
    /// The agents (primaries) this server accepts snapshots from.
    #[serde(default)]
    pub agents: Vec<AgentConfig>,
    /// When an agent's copy is late or stale.
    #[serde(default)]
    pub freshness: Freshness,
    /// The shrink guard.
    #[serde(default)]
    pub guard: Guard,
    /// How much history to keep.
    #[serde(default)]
    pub history: History,
    /// Where and how maps are written.
    pub output: Output,
    /// Where state changes are sent.
    #[serde(default)]
    pub alerts: Alerts,
}

fn default_state_dir() -> PathBuf {
    PathBuf::from("/var/lib/mxsync")
}

fn default_max_body() -> u64 {
    256 * 1024 * 1024
}

fn default_max_connections() -> usize {
    16384
}

fn default_header_timeout() -> u64 {
    10
}

/// TLS certificate and key (PEM).
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    /// Certificate chain, PEM.
    pub cert_file: PathBuf,
    /// Private key, PEM.
    pub key_file: PathBuf,
}

/// One agent.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// The agent's `agent_id`.
    pub id: String,
    /// File holding the secret shared with the agent.
    pub key_file: PathBuf,
    /// Domains this agent may speak for; no two agents may share one.
    pub domains: Vec<String>,
    /// Where punted mail is relayed: `[host]` or `[host]:port` (brackets: no MX lookup, so the
    /// secondary cannot loop back to itself).
    pub primary: String,
    /// This agent's own policy for unknown recipients while its copy is not fresh; the
    /// `[freshness]` one when not set.
    #[serde(default)]
    pub unknown_when_stale: Option<UnknownWhenStale>,
}

/// What the MTA answers a recipient that is not in the maps, at a domain whose agent's copy is
/// `stale` or `never` (or held by the shrink guard).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum UnknownWhenStale {
    /// 450 4.1.1: the sender retries, and the mail reaches the primary or a refreshed
    /// secondary, instead of bouncing for an address the secondary may not know yet.
    #[default]
    Defer,
    /// 550, as when fresh: known addresses only, whatever the age of the copy.
    Reject,
}

impl UnknownWhenStale {
    /// The name in the configuration and the status.
    pub fn as_str(self) -> &'static str {
        match self {
            UnknownWhenStale::Defer => "defer",
            UnknownWhenStale::Reject => "reject",
        }
    }
}

/// Freshness thresholds.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Freshness {
    /// No contact (or hashes disagreeing) for longer than this: `late`.
    #[serde(default = "default_warn")]
    pub warn_after_secs: u64,
    /// No contact (or hashes disagreeing) for longer than this: `stale`.
    #[serde(default = "default_stale")]
    pub stale_after_secs: u64,
    /// Unknown recipients at an agent's domains while its copy is `stale` or `never`, or held
    /// by the shrink guard: `defer` (450 4.1.1, the default) or `reject` (550).
    #[serde(default)]
    pub unknown_when_stale: UnknownWhenStale,
}

impl Freshness {
    /// The (late, stale) thresholds.
    pub fn thresholds(&self) -> (std::time::Duration, std::time::Duration) {
        (
            std::time::Duration::from_secs(self.warn_after_secs),
            std::time::Duration::from_secs(self.stale_after_secs),
        )
    }
}

fn default_warn() -> u64 {
    90
}
fn default_stale() -> u64 {
    300
}

impl Default for Freshness {
    fn default() -> Self {
        Freshness {
            warn_after_secs: default_warn(),
            stale_after_secs: default_stale(),
            unknown_when_stale: UnknownWhenStale::default(),
        }
    }
}

/// The shrink guard.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Guard {
    /// A snapshot removing more than this share of an agent's addresses is held.
    #[serde(default = "default_shrink")]
    pub max_shrink_percent: u32,
}

fn default_shrink() -> u32 {
    20
}

impl Default for Guard {
    fn default() -> Self {
        Guard {
            max_shrink_percent: default_shrink(),
        }
    }
}

/// History retention.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct History {
    /// Snapshots kept per agent (the applied and the held one are always kept).
    #[serde(default = "default_keep")]
    pub keep: u32,
}

fn default_keep() -> u32 {
    50
}

impl Default for History {
    fn default() -> Self {
        History {
            keep: default_keep(),
        }
    }
}

/// Map output.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Output {
    /// Maps are written below it: `postfix/` and `exim/` (see README).
    pub dir: PathBuf,
    /// Which map sets to write: `postfix`, `exim`.
    #[serde(default = "default_formats")]
    pub formats: Vec<String>,
    /// Command (argv, no shell) run in the new map directory before it goes live, e.g.
    /// `postmap` on the new files; if it fails the new maps never go live.
    #[serde(default)]
    pub prepare: Vec<String>,
    /// Command (argv, no shell) run after each apply, e.g. `postfix reload`.
    #[serde(default)]
    pub after_apply: Vec<String>,
    /// Time limit for `prepare` and `after_apply`, in seconds.
    #[serde(default = "default_hook_timeout")]
    pub after_apply_timeout_secs: u64,
    /// Write a CDB table (`NAME.cdb`) beside each map, in the same generation, for Postfix
    /// `cdb:` and Exim `cdb` lookups: no `postmap` step, and a lookup costs a probe or two
    /// instead of a scan.
    #[serde(default = "default_true")]
    pub cdb: bool,
    /// The group (name or number) that owns the maps: directories 0750 and files 0640, for
    /// that group's MTA. Without it, directories are 0755 and files 0644 (the list of valid
    /// addresses is then readable by every local user). The server must be a member of it.
    #[serde(default)]
    pub group: Option<String>,
    /// Also write every agent's rows into PostgreSQL (README, "Many secondaries").
    #[serde(default)]
    pub postgres: Option<crate::postgres::Settings>,
}

fn default_true() -> bool {
    true
}

fn default_formats() -> Vec<String> {
    vec!["postfix".into(), "exim".into()]
}
fn default_hook_timeout() -> u64 {
    60
}

/// Alert sinks; each is optional.
#[derive(Debug, Clone, Default, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Alerts {
    /// POST a JSON body to this URL on every state change.
    #[serde(default)]
    pub webhook_url: Option<String>,
    /// Run this command (argv, no shell) with the same JSON on standard input.
    #[serde(default)]
    pub command: Vec<String>,
    /// healthchecks-style URL: pinged when fresh, `/fail` appended when stale.
    #[serde(default)]
    pub ping_url: Option<String>,
}

/// A validated configuration with its secrets loaded.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The configuration, with paths made absolute.
    pub config: Config,
    /// The file it came from.
    pub path: PathBuf,
    /// Listen address.
    pub listen: SocketAddr,
    /// Each agent's HMAC key.
    pub keys: HashMap<String, Vec<u8>>,
    /// The read token, when configured.
    pub read_token: Option<String>,
    /// The status token, when configured.
    pub status_token: Option<String>,
    /// Which agent serves each domain.
    pub domain_agent: BTreeMap<String, String>,
    /// How the maps are written (`[output] cdb` and `group`, the group resolved).
    pub maps: crate::maps::Options,
    /// `[output.postgres]`, its secrets read.
    pub postgres: Option<crate::postgres::Target>,
}

/// The id of group `name` (a name in `/etc/group`, or a number).
pub fn group_id(name: &str) -> Result<u32, String> {
    if let Ok(gid) = name.parse::<u32>() {
        return Ok(gid);
    }
    let groups = std::fs::read_to_string("/etc/group").map_err(|e| format!("/etc/group: {e}"))?;
    groups
        .lines()
        .filter_map(|l| {
            let mut f = l.split(':');
            let (n, _, gid) = (f.next()?, f.next()?, f.next()?);
            (n == name).then(|| gid.parse().ok()).flatten()
        })
        .next()
        .ok_or_else(|| format!("no group {name:?} in /etc/group"))
}

/// Whether `p` is `[host]` or `[host]:port`.
fn valid_primary(p: &str) -> bool {
    let Some(rest) = p.strip_prefix('[') else {
        return false;
    };
    let Some((host, after)) = rest.split_once(']') else {
        return false;
    };
    let host_ok = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':'));
    let port_ok = after.is_empty()
        || after
            .strip_prefix(':')
            .is_some_and(|n| n.parse::<u16>().is_ok_and(|n| n > 0));
    host_ok && port_ok
}

impl Loaded {
    /// Loads and validates `path`, reading every secret it names.
    pub fn load(path: &Path) -> Result<Loaded, ConfigError> {
        let fail = |problems: Vec<String>| ConfigError {
            path: path.to_path_buf(),
            problems,
        };
        let text = std::fs::read_to_string(path).map_err(|e| fail(vec![e.to_string()]))?;
        let mut config: Config = toml::from_str(&text).map_err(|e| fail(vec![e.to_string()]))?;
        let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        let base = abs.parent().unwrap_or(Path::new("/")).to_path_buf();
        config.resolve(&base);
        let mut p = Vec::new();
        let listen = match config.listen.parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(e) => {
                p.push(format!("listen {:?}: {e}", config.listen));
                None
            }
        };
        let mut keys = HashMap::new();
        let mut domain_agent = BTreeMap::new();
        if config.agents.is_empty() {
            p.push("agents: at least one [[agents]] table is required".into());
        }
        for (i, a) in config.agents.iter_mut().enumerate() {
            let what = format!("agents[{i}] ({:?})", a.id);
            if a.id.is_empty()
                || !a
                    .id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            {
                p.push(format!("{what}.id: use letters, digits, '-', '_' and '.'"));
            }
            if keys.contains_key(&a.id) {
                p.push(format!("{what}.id: duplicated"));
            }
            match read_secret(&a.key_file) {
                Ok(k) => {
                    keys.insert(a.id.clone(), k.into_bytes());
                }
                Err(e) => p.push(format!("{what}.key_file {e}")),
            }
            if a.domains.is_empty() {
                p.push(format!("{what}.domains: at least one domain is required"));
            }
            for d in &mut a.domains {
                *d = d.to_ascii_lowercase();
                if !proto::addr::valid_domain(d) {
                    p.push(format!("{what}.domains: {d:?} is not a domain name"));
                } else if let Some(other) = domain_agent.insert(d.clone(), a.id.clone()) {
                    p.push(format!(
                        "{what}.domains: {d:?} is already served by agent {other:?}"
                    ));
                }
            }
            if !valid_primary(&a.primary) {
                p.push(format!(
                    "{what}.primary {:?}: write [host] or [host]:port (brackets turn off the MX lookup)",
                    a.primary
                ));
            }
        }
        let f = &config.freshness;
        if f.warn_after_secs == 0 || f.stale_after_secs < f.warn_after_secs {
            p.push("freshness: need 0 < warn_after_secs <= stale_after_secs".into());
        }
        if config.guard.max_shrink_percent > 100 {
            p.push("guard.max_shrink_percent: at most 100".into());
        }
        for fmt in &config.output.formats {
            if !matches!(fmt.as_str(), "postfix" | "exim") {
                p.push(format!(
                    "output.formats: {fmt:?} is not one of \"postfix\", \"exim\""
                ));
            }
        }
        if config.max_connections == 0 {
            p.push("max_connections: at least 1".into());
        }
        if config.header_timeout_secs == 0 {
            p.push("header_timeout_secs: at least 1".into());
        }
        if config.output.after_apply_timeout_secs == 0 {
            p.push("output.after_apply_timeout_secs: at least 1".into());
        }
        let group = match config.output.group.as_deref() {
            None => None,
            Some(g) => match group_id(g) {
                Ok(gid) => Some(gid),
                Err(e) => {
                    p.push(format!("output.group: {e}"));
                    None
                }
            },
        };
        let maps = crate::maps::Options {
            cdb: config.output.cdb,
            group,
        };
        let mut token = |file: &Option<PathBuf>, key: &str| match file {
            Some(f) => match read_secret(f) {
                Ok(t) => Some(t),
                Err(e) => {
                    p.push(format!("{key} {e}"));
                    None
                }
            },
            None => None,
        };
        let read_token = token(&config.read_token_file, "read_token_file");
        let status_token = token(&config.status_token_file, "status_token_file");
        if let Some(tls) = &config.tls {
            for (k, f) in [
                ("tls.cert_file", &tls.cert_file),
                ("tls.key_file", &tls.key_file),
            ] {
                if let Err(e) = std::fs::metadata(f) {
                    p.push(format!("{k} {}: {e}", f.display()));
                }
            }
        }
        for (k, u) in [
            ("alerts.webhook_url", &config.alerts.webhook_url),
            ("alerts.ping_url", &config.alerts.ping_url),
        ] {
            if let Some(u) = u
                && !(u.starts_with("http://") || u.starts_with("https://"))
            {
                p.push(format!("{k} {u:?}: must start with http:// or https://"));
            }
        }
        let postgres = match config.output.postgres.as_ref().map(|s| s.target()) {
            Some(Ok(t)) => Some(t),
            Some(Err(problems)) => {
                p.extend(problems);
                None
            }
            None => None,
        };
        match (p.is_empty(), listen) {
            (true, Some(listen)) => Ok(Loaded {
                config,
                path: abs,
                listen,
                keys,
                read_token,
                status_token,
                domain_agent,
                maps,
                postgres,
            }),
            _ => Err(fail(p)),
        }
    }
}

impl Loaded {
    /// What `run` will need of the file system, checked as the user this process runs as:
    /// the state and map directories writable (or creatable). Each problem names the
    /// directory, the user and the reason.
    pub fn check_writable(&self) -> Vec<String> {
        let uid = rustix::process::getuid().as_raw();
        let user = std::fs::read_to_string("/etc/passwd")
            .ok()
            .and_then(|p| {
                p.lines().find_map(|l| {
                    let f: Vec<&str> = l.split(':').collect();
                    (f.get(2) == Some(&uid.to_string().as_str())).then(|| f[0].to_string())
                })
            })
            .unwrap_or_else(|| "?".into());
        let c = &self.config;
        [("state_dir", &c.state_dir), ("output.dir", &c.output.dir)]
            .into_iter()
            .filter_map(|(key, dir)| {
                writable(dir).err().map(|e| {
                    format!(
                        "{key} {}: not writable by user {user} (uid {uid}): {e}",
                        dir.display()
                    )
                })
            })
            .collect()
    }
}

/// Whether a file can be made in `dir`, or in the nearest directory above it that exists (where
/// `run` would create it): tried with a file made and removed at once.
fn writable(dir: &Path) -> std::io::Result<()> {
    let mut at = dir;
    while !at.exists() {
        at = at.parent().unwrap_or(Path::new("/"));
    }
    let probe = at.join(format!(".mxsync-check-{}", std::process::id()));
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
        .map(|_| ())?;
    std::fs::remove_file(&probe)
}

impl Config {
    fn resolve(&mut self, base: &Path) {
        let abs = |p: &mut PathBuf| *p = base.join(&*p);
        abs(&mut self.state_dir);
        abs(&mut self.output.dir);
        // An empty path means "not set" (the examples show `status_token_file = ""`).
        for f in [&mut self.read_token_file, &mut self.status_token_file] {
            match f {
                Some(p) if p.as_os_str().is_empty() => *f = None,
                Some(p) => abs(p),
                None => {}
            }
        }
        for a in &mut self.agents {
            abs(&mut a.key_file);
        }
        if let Some(t) = &mut self.tls {
            abs(&mut t.cert_file);
            abs(&mut t.key_file);
        }
        if let Some(pg) = &mut self.output.postgres {
            pg.resolve(base);
        }
    }

    /// The agent named `id`.
    pub fn agent(&self, id: &str) -> Option<&AgentConfig> {
        self.agents.iter().find(|a| a.id == id)
    }

    /// Where agent `id`'s punted mail is relayed (empty for an agent not configured).
    pub fn primary(&self, id: &str) -> &str {
        self.agent(id).map_or("", |a| a.primary.as_str())
    }

    /// Agent `a`'s policy for unknown recipients while its copy is not fresh.
    pub fn unknown_when_stale(&self, a: &AgentConfig) -> UnknownWhenStale {
        a.unknown_when_stale
            .unwrap_or(self.freshness.unknown_when_stale)
    }
}

#[cfg(test)]
mod tests;
