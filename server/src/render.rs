//! Rendering plans into map files for the secondary's MTA (DESIGN section 7). Pure: bytes in
//! memory; writing them is `maps`.
//!
//! Only validated addresses, the word `OK`, domains and the transport syntax ever reach a line:
//! every key and target is checked again here with `proto::addr`, and anything else fails the
//! render (the previous maps stay in force). Each file starts with one comment line per agent
//! naming its version and hash, so a reader can tell which snapshot a file set came from.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Arc;

use proto::{Content, Planner, addr};

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

/// The first line of every rendered file.
pub const BANNER: &str = "# mxsync: generated file, do not edit\n";

/// The rendered file set: each file is its header, then every agent's part of it, in order.
/// The parts are shared with the server's memory, not copied into one buffer per file.
#[derive(Debug, Default, Clone)]
pub struct Rendered {
    /// File names (below the output directory), sorted.
    pub names: Vec<&'static str>,
    /// The header of the files that carry versions ([`carries_versions`]): [`BANNER`], then
    /// one comment line per agent with its version and hash. The other files start with the
    /// banner alone.
    pub header: String,
    /// Every agent's part, in file order, then the part of no agent (`stale_domains`).
    pub parts: Vec<std::sync::Arc<AgentPart>>,
    /// The domains whose unknown recipients the set defers, sorted.
    pub deferred: Vec<String>,
    /// Per agent, the plan counts.
    pub counts: BTreeMap<String, Counts>,
}

impl Rendered {
    /// Writes file `name` to `w`.
    pub fn write_file(&self, name: &str, w: &mut impl std::io::Write) -> std::io::Result<()> {
        let header = if carries_versions(name) {
            self.header.as_str()
        } else {
            BANNER
        };
        w.write_all(header.as_bytes())?;
        for p in &self.parts {
            if let Some(text) = p.files.get(name) {
                for piece in text.pieces() {
                    w.write_all(piece.as_bytes())?;
                }
            }
        }
        Ok(())
    }

    /// Whether file `name` is the same in `self` and `other`, known without reading it: a file
    /// without versions in its header, made of the very same pieces (the parts' pieces are
    /// shared, and `other` holds them, so equal pointers are equal text).
    pub fn same_file(&self, other: &Rendered, name: &str) -> bool {
        !carries_versions(name)
            && self.names.contains(&name)
            && other.names.contains(&name)
            && self.parts.len() == other.parts.len()
            && self.parts.iter().zip(&other.parts).all(|(a, b)| {
                match (a.files.get(name), b.files.get(name)) {
                    (Some(a), Some(b)) => {
                        a.pieces.len() == b.pieces.len()
                            && a.pieces
                                .iter()
                                .zip(&b.pieces)
                                .all(|(x, y)| Arc::ptr_eq(x, y))
                    }
                    (None, None) => true,
                    _ => false,
                }
            })
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

/// The files of each format (`stale_domains`: the domains whose unknown recipients are
/// deferred, with the reply, for `check_recipient_access`).
pub const POSTFIX: [&str; 5] = [
    "postfix/relay_recipients",
    "postfix/virtual",
    "postfix/transport",
    "postfix/relay_domains",
    "postfix/stale_domains",
];
/// The files of the Exim format (`routes`: each domain's primary, for a manualroute router;
/// `stale_domains`: the domains whose unknown recipients are deferred).
pub const EXIM: [&str; 5] = [
    "exim/forward",
    "exim/recipients",
    "exim/domains",
    "exim/routes",
    "exim/stale_domains",
];

/// The files that belong to no agent: rendered from the server's freshness, in the last part.
const SERVER_FILES: [&str; 2] = ["postfix/stale_domains", "exim/stale_domains"];

/// The reply Postfix gives an unknown recipient at a domain in `stale_domains`.
pub const DEFER_REPLY: &str = "450 4.1.1 Recipient list out of date, try again later";

/// The key and value that file `name`'s text `line` gives its MTA, as Postfix's `postmap` and
/// Exim's `lsearch` read the same line: the key up to the first blank (or, for Exim, `:`),
/// lowercased (`postmap` folds keys and queries; the shipped Exim snippet looks up
/// `${lc:...}`), the value after the blanks (and Exim's colon). A Postfix line without a value
/// (`relay_domains`) has the value `OK`, which a table needs (`postmap` skips such a line).
pub fn table_entry<'l>(name: &str, line: &'l str) -> (std::borrow::Cow<'l, str>, &'l str) {
    let line = line.trim_end_matches('\n');
    let exim = name.starts_with("exim/");
    let end = line
        .bytes()
        .position(|b| b == b' ' || b == b'\t' || (exim && b == b':'))
        .unwrap_or(line.len());
    let (key, rest) = line.split_at(end);
    let value = if exim {
        rest.trim_start_matches([' ', '\t'])
            .strip_prefix(':')
            .unwrap_or(rest)
            .trim_start_matches([' ', '\t'])
    } else {
        rest.trim_start_matches([' ', '\t'])
    };
    let value = if value.is_empty() && !exim {
        "OK"
    } else {
        value
    };
    let key = if key.bytes().any(|b| b.is_ascii_uppercase()) {
        std::borrow::Cow::Owned(key.to_ascii_lowercase())
    } else {
        std::borrow::Cow::Borrowed(key)
    };
    (key, value)
}

/// Calls `each` with the key and value of every line of file `name` in `rendered`, in file
/// order (the header's comment lines are not entries). The first error `each` returns ends the walk.
pub fn each_entry<E>(
    rendered: &Rendered,
    name: &str,
    mut each: impl FnMut(&str, &str) -> Result<(), E>,
) -> Result<(), E> {
    for p in &rendered.parts {
        if let Some(text) = p.files.get(name) {
            for line in text.pieces().flat_map(|piece| piece.split_inclusive('\n')) {
                let (k, v) = table_entry(name, line);
                each(&k, v)?;
            }
        }
    }
    Ok(())
}

/// `[host]:port` (validated by the configuration) as an Exim host list item: `host::port`
/// (a doubled colon is a literal one in Exim lists).
pub(crate) fn exim_route(primary: &str) -> String {
    let inner = primary.trim_start_matches('[');
    match inner.split_once(']') {
        Some((host, port)) => match port.strip_prefix(':') {
            Some(port) => format!("{host}::{port}"),
            None => host.to_string(),
        },
        None => inner.to_string(),
    }
}

/// The size in bytes past which a piece of a [`Text`] ends, at the next address.
const PIECE: usize = 64 * 1024;

/// One agent's lines of one map file, sorted by address, in pieces of about [`PIECE`] bytes
/// that end between two addresses. The part rendered after a delta shares every piece it did
/// not change with the part before it: a re-plan copies a few pieces, not the whole file (at a
/// million addresses, tens of MiB per file).
#[derive(Debug, Default, Clone)]
pub struct Text {
    /// Non-empty, each ending with a whole line.
    pieces: Vec<Arc<String>>,
}

impl Text {
    /// The pieces, in order: their concatenation is the text.
    pub fn pieces(&self) -> impl Iterator<Item = &str> {
        self.pieces.iter().map(|p| p.as_str())
    }

    /// A text of these pieces (each non-empty, ending with a whole line).
    #[cfg(test)]
    pub(crate) fn from_pieces(pieces: Vec<Arc<String>>) -> Text {
        Text { pieces }
    }

    /// The pieces themselves, shared with every text that did not change them.
    pub fn shared_pieces(&self) -> &[Arc<String>] {
        &self.pieces
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.pieces.iter().map(|p| p.len()).sum()
    }

    /// Whether there are no lines.
    pub fn is_empty(&self) -> bool {
        self.pieces.is_empty()
    }
}

impl From<String> for Text {
    /// One piece (no piece when `s` is empty).
    fn from(s: String) -> Text {
        let mut pieces = Vec::new();
        if !s.is_empty() {
            pieces.push(Arc::new(s));
        }
        Text { pieces }
    }
}

impl std::fmt::Display for Text {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.pieces().try_for_each(|p| f.write_str(p))
    }
}

impl PartialEq for Text {
    /// The same lines, however they are cut into pieces.
    fn eq(&self, other: &Text) -> bool {
        let theirs = other.pieces().flat_map(str::bytes);
        self.len() == other.len() && self.pieces().flat_map(str::bytes).eq(theirs)
    }
}

impl Eq for Text {}

/// One agent's lines of each file (no header) and its plan counts: what [`render_agent`] plans
/// once and the server keeps, so that another agent's apply does not plan this one again.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct AgentPart {
    /// File name to lines.
    pub files: BTreeMap<&'static str, Text>,
    /// Plan counts.
    pub counts: Counts,
}

/// Renders the maps of all `agents` in the requested `formats` (`postfix`, `exim`), with
/// the unknown recipients of the `deferred` domains deferred.
pub fn render(
    agents: &[AgentMaps<'_>],
    formats: &[String],
    deferred: &[String],
) -> Result<Rendered, RenderError> {
    let parts = agents
        .iter()
        .map(|a| render_agent(a, formats).map(std::sync::Arc::new))
        .collect::<Result<Vec<_>, _>>()?;
    let with: Vec<(&AgentMaps<'_>, std::sync::Arc<AgentPart>)> = agents.iter().zip(parts).collect();
    assemble(&with, formats, deferred)
}

/// The lines of `stale_domains` of each format, for the `deferred` domains (each checked).
fn server_part(formats: &[String], deferred: &[String]) -> Result<AgentPart, RenderError> {
    let mut files = BTreeMap::new();
    for name in file_names(formats).filter(|n| SERVER_FILES.contains(n)) {
        let mut b = String::new();
        for d in deferred {
            if !addr::valid_domain(d) {
                return Err(RenderError::Invalid {
                    agent: String::new(),
                    what: "domain",
                    value: d.clone(),
                });
            }
            if name.starts_with("postfix/") {
                let _ = writeln!(b, "{d} {DEFER_REPLY}");
            } else {
                let _ = writeln!(b, "{d}");
            }
        }
        files.insert(name, Text::from(b));
    }
    Ok(AgentPart {
        files,
        counts: Counts::default(),
    })
}

/// The file set of `agents`, each with its part rendered for the same `formats`, and the
/// `deferred` domains' `stale_domains` lines.
pub fn assemble(
    agents: &[(&AgentMaps<'_>, std::sync::Arc<AgentPart>)],
    formats: &[String],
    deferred: &[String],
) -> Result<Rendered, RenderError> {
    let mut header = String::from(BANNER);
    for (a, _) in agents {
        let _ = writeln!(
            header,
            "# agent {} version {} hash {}",
            a.id, a.version, a.hash
        );
    }
    let mut names: Vec<&'static str> = file_names(formats).collect();
    names.sort_unstable();
    let mut parts: Vec<Arc<AgentPart>> = agents.iter().map(|(_, p)| Arc::clone(p)).collect();
    parts.push(Arc::new(server_part(formats, deferred)?));
    Ok(Rendered {
        names,
        header,
        parts,
        deferred: deferred.to_vec(),
        counts: agents
            .iter()
            .map(|(a, p)| (a.id.to_string(), p.counts))
            .collect(),
    })
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

/// Whether file `name` names each agent's version and hash in its header: the small files
/// (domains, routes), written at every apply. The files with a line per address do not, so
/// that one whose lines did not change is the same file, and need not be written again.
pub fn carries_versions(name: &str) -> bool {
    !ADDRESS_FILES.contains(&name)
}

/// Checks the domains of `a` and renders the files with one line per domain.
fn domain_files(
    a: &AgentMaps<'_>,
    formats: &[String],
) -> Result<BTreeMap<&'static str, Text>, RenderError> {
    let mut bufs: BTreeMap<&'static str, String> = file_names(formats)
        .filter(|n| !ADDRESS_FILES.contains(n) && !SERVER_FILES.contains(n))
        .map(|n| (n, String::new()))
        .collect();
    for d in &a.content.domains {
        if !addr::valid_domain(d) {
            return Err(RenderError::Invalid {
                agent: a.id.to_string(),
                what: "domain",
                value: d.to_string(),
            });
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
    Ok(bufs.into_iter().map(|(n, b)| (n, Text::from(b))).collect())
}

/// Plans one agent and renders its lines of every file of `formats`.
pub fn render_agent(a: &AgentMaps<'_>, formats: &[String]) -> Result<AgentPart, RenderError> {
    render_agent_in(a, formats, PIECE)
}

/// How many threads plan `c`: one per [piece](proto::par::pieces) of its entries.
fn runs(c: &Content) -> usize {
    proto::par::pieces(c.entries(), proto::par::LEAST_ITEMS)
}

/// [`render_agent`] with pieces of `piece` bytes.
fn render_agent_in(
    a: &AgentMaps<'_>,
    formats: &[String],
    piece: usize,
) -> Result<AgentPart, RenderError> {
    render_agent_runs(a, formats, piece, runs(a.content))
}

/// [`render_agent_in`], planned in `runs` runs side by side ([`Planner::plan_runs`]), each run's
/// lines cut into pieces of its own, joined in order.
fn render_agent_runs(
    a: &AgentMaps<'_>,
    formats: &[String],
    piece: usize,
    runs: usize,
) -> Result<AgentPart, RenderError> {
    let mut files = domain_files(a, formats)?;
    let sinks = (0..runs)
        .map(|_| Lines::new(a.id, formats, piece))
        .collect();
    // The maps read no reasons (they explain a plan; `GET /v1/plan` makes them for one address).
    let runs =
        (Planner::new(a.content).without_reasons()).plan_runs(sinks, |lines, p| lines.add(p));
    let mut joined: [Option<Text>; 4] = Default::default();
    let mut counts = Counts::default();
    for mut lines in runs {
        if let Some(e) = lines.error.take() {
            return Err(e);
        }
        counts += lines.counts;
        for (text, run) in joined.iter_mut().zip(lines.finish()) {
            if let Some(run) = run {
                text.get_or_insert_with(Text::default)
                    .pieces
                    .extend(run.pieces);
            }
        }
    }
    for (name, b) in ADDRESS_FILES.into_iter().zip(joined) {
        if let Some(b) = b {
            files.insert(name, b);
        }
    }
    Ok(AgentPart { files, counts })
}

mod lines;
use lines::{ADDRESS_FILES, Lines};
mod splice;
pub use splice::render_agent_affected;
#[cfg(test)]
use {
    proto::plan::Affected,
    splice::{cut, line_address, merge, merge_pieces, render_agent_affected_in, seek},
};

#[cfg(test)]
mod tests;
