//! Rendering plans into map files for the secondary's MTA (DESIGN section 7). Pure: bytes in
//! memory; writing them is `maps`.
//!
//! Only validated addresses, the word `OK`, domains and the transport syntax ever reach a line:
//! every key and target is checked again here with `proto::addr`, and anything else fails the
//! render (the previous maps stay in force). Each file starts with one comment line per agent
//! naming its version and hash, so a reader can tell which snapshot a file set came from.

use std::collections::BTreeMap;
use std::fmt::Write;

use proto::{Class, Content, Planner, addr};

use crate::store::Counts;

/// What one agent contributes to the maps.
pub struct AgentMaps<'a> {
    /// Agent id.
    pub id: &'a str,
    /// Applied version.
    pub version: u64,
    /// Applied hash.
    pub hash: &'a str,
    /// `[host]:port` of the primary, from the server's config.
    pub primary: &'a str,
    /// The content to plan.
    pub content: &'a Content,
}

/// The rendered file set: each file is the header, then every agent's part of it, in order.
/// The parts are shared with the server's memory, not copied into one buffer per file.
#[derive(Debug, Default)]
pub struct Rendered {
    /// File names (below the output directory), sorted.
    pub names: Vec<&'static str>,
    /// The header of every file: one comment line per agent with its version and hash.
    pub header: String,
    /// Every agent's part, in file order.
    pub parts: Vec<std::sync::Arc<AgentPart>>,
    /// Per agent, the plan counts.
    pub counts: BTreeMap<String, Counts>,
}

impl Rendered {
    /// Writes file `name` to `w`.
    pub fn write_file(&self, name: &str, w: &mut impl std::io::Write) -> std::io::Result<()> {
        w.write_all(self.header.as_bytes())?;
        for p in &self.parts {
            if let Some(lines) = p.files.get(name) {
                w.write_all(lines.as_bytes())?;
            }
        }
        Ok(())
    }

    /// File `name` in one buffer.
    pub fn file(&self, name: &str) -> Vec<u8> {
        let mut out = Vec::new();
        let _ = self.write_file(name, &mut out);
        out
    }

    /// Every file in one buffer each, by name.
    pub fn files(&self) -> BTreeMap<String, Vec<u8>> {
        self.names
            .iter()
            .map(|n| (n.to_string(), self.file(n)))
            .collect()
    }
}

/// Why a render failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RenderError {
    /// An address or domain that a map could misread; never written.
    #[error("agent {agent}: {what} {value:?} cannot be written to a map")]
    Invalid {
        /// The agent whose plan held it.
        agent: String,
        /// Address, target or domain.
        what: &'static str,
        /// The offending text.
        value: String,
    },
}

/// The files of each format.
pub const POSTFIX: [&str; 4] = [
    "postfix/relay_recipients",
    "postfix/virtual",
    "postfix/transport",
    "postfix/relay_domains",
];
/// The files of the Exim format (`routes`: each domain's primary, for a manualroute router).
pub const EXIM: [&str; 4] = [
    "exim/forward",
    "exim/recipients",
    "exim/domains",
    "exim/routes",
];

/// `[host]:port` (validated by the configuration) as an Exim host list item: `host::port`
/// (a doubled colon is a literal one in Exim lists).
fn exim_route(primary: &str) -> String {
    let inner = primary.trim_start_matches('[');
    match inner.split_once(']') {
        Some((host, port)) => match port.strip_prefix(':') {
            Some(port) => format!("{host}::{port}"),
            None => host.to_string(),
        },
        None => inner.to_string(),
    }
}

/// One agent's lines of each file (no header) and its plan counts: what [`render_agent`] plans
/// once and the server keeps, so that another agent's apply does not plan this one again.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct AgentPart {
    /// File name to lines.
    pub files: BTreeMap<&'static str, String>,
    /// Plan counts.
    pub counts: Counts,
}

/// Renders the maps of all `agents` in the requested `formats` (`postfix`, `exim`).
pub fn render(agents: &[AgentMaps<'_>], formats: &[String]) -> Result<Rendered, RenderError> {
    let parts = agents
        .iter()
        .map(|a| render_agent(a, formats).map(std::sync::Arc::new))
        .collect::<Result<Vec<_>, _>>()?;
    let with: Vec<(&AgentMaps<'_>, std::sync::Arc<AgentPart>)> = agents.iter().zip(parts).collect();
    Ok(assemble(&with, formats))
}

/// The file set of `agents`, each with its part rendered for the same `formats`.
pub fn assemble(
    agents: &[(&AgentMaps<'_>, std::sync::Arc<AgentPart>)],
    formats: &[String],
) -> Rendered {
    let mut header = String::from("# mxsync: generated file, do not edit\n");
    for (a, _) in agents {
        let _ = writeln!(
            header,
            "# agent {} version {} hash {}",
            a.id, a.version, a.hash
        );
    }
    let mut names: Vec<&'static str> = file_names(formats).collect();
    names.sort_unstable();
    Rendered {
        names,
        header,
        parts: agents
            .iter()
            .map(|(_, p)| std::sync::Arc::clone(p))
            .collect(),
        counts: agents
            .iter()
            .map(|(a, p)| (a.id.to_string(), p.counts))
            .collect(),
    }
}

fn push(b: &mut String, parts: &[&str]) {
    for p in parts {
        b.push_str(p);
    }
}

fn file_names(formats: &[String]) -> impl Iterator<Item = &'static str> + '_ {
    let postfix = formats.iter().any(|f| f == "postfix");
    let exim = formats.iter().any(|f| f == "exim");
    POSTFIX
        .iter()
        .filter(move |_| postfix)
        .chain(EXIM.iter().filter(move |_| exim))
        .copied()
}

/// Plans one agent and renders its lines of every file of `formats`.
pub fn render_agent(a: &AgentMaps<'_>, formats: &[String]) -> Result<AgentPart, RenderError> {
    let mut bufs: BTreeMap<&'static str, String> =
        file_names(formats).map(|n| (n, String::new())).collect();
    let bad = |what, value: &str| RenderError::Invalid {
        agent: a.id.to_string(),
        what,
        value: value.to_string(),
    };
    for d in &a.content.domains {
        if !addr::valid_domain(d) {
            return Err(bad("domain", d));
        }
        if let Some(b) = bufs.get_mut("postfix/transport") {
            let _ = writeln!(b, "{d} relay:{}", a.primary);
        }
        if let Some(b) = bufs.get_mut("exim/routes") {
            let _ = writeln!(b, "{d}: {}", exim_route(a.primary));
        }
        for f in ["postfix/relay_domains", "exim/domains"] {
            if let Some(b) = bufs.get_mut(f) {
                let _ = writeln!(b, "{d}");
            }
        }
    }
    // One buffer per file taken out of the map, so the per-address loop does no lookups.
    let mut take = |name| bufs.remove(name);
    let (mut relay, mut recipients, mut virt, mut forward) = (
        take("postfix/relay_recipients"),
        take("exim/recipients"),
        take("postfix/virtual"),
        take("exim/forward"),
    );
    let mut c = Counts::default();
    let mut error = None;
    let mut order: Vec<(bool, usize)> = Vec::new();
    Planner::new(a.content).plan_each(|p| {
        if error.is_some() {
            return;
        }
        if !addr::valid_address(&p.address) {
            error = Some(bad("address", &p.address));
            return;
        }
        c.addresses += 1;
        let a = p.address.as_str();
        if let Some(b) = relay.as_mut() {
            push(b, &[a, " OK\n"]);
        }
        if let Some(b) = recipients.as_mut() {
            push(b, &[a, "\n"]);
        }
        match p.class {
            Class::Punt => c.punt += 1,
            Class::Forward | Class::Split => {
                if p.class == Class::Forward {
                    c.forward += 1;
                } else {
                    c.split += 1;
                }
                // Sorted and unique, through a reused index buffer (no allocation per address).
                let get = |&(punt, i): &(bool, usize)| -> &str {
                    if punt { &p.punt[i] } else { &p.forward[i] }
                };
                order.clear();
                order.extend((0..p.forward.len()).map(|i| (false, i)));
                order.extend((0..p.punt.len()).map(|i| (true, i)));
                order.sort_unstable_by(|x, y| get(x).cmp(get(y)));
                order.dedup_by(|x, y| get(x) == get(y));
                if let Some(t) = order.iter().map(get).find(|t| !addr::valid_address(t)) {
                    error = Some(bad("target", t));
                    return;
                }
                for (b, sep) in [(&mut virt, " "), (&mut forward, ": ")] {
                    if let Some(b) = b.as_mut() {
                        push(b, &[a, sep]);
                        for (i, t) in order.iter().map(get).enumerate() {
                            if i > 0 {
                                b.push_str(", ");
                            }
                            b.push_str(t);
                        }
                        b.push('\n');
                    }
                }
            }
        }
    });
    for (name, b) in [
        ("postfix/relay_recipients", relay),
        ("exim/recipients", recipients),
        ("postfix/virtual", virt),
        ("exim/forward", forward),
    ] {
        if let Some(b) = b {
            bufs.insert(name, b);
        }
    }
    match error {
        Some(e) => Err(e),
        None => Ok(AgentPart {
            files: bufs,
            counts: c,
        }),
    }
}

#[cfg(test)]
mod tests;
