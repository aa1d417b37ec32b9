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

use proto::plan::Affected;
use proto::{Class, Content, PlanRef, Planner, addr};

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
    /// Every agent's part, in file order.
    pub parts: Vec<std::sync::Arc<AgentPart>>,
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
#[derive(Debug, Default, PartialEq, Eq)]
pub struct AgentPart {
    /// File name to lines.
    pub files: BTreeMap<&'static str, Text>,
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

/// The room to reserve for a piece of `piece` bytes: its last line takes it past the size, and a
/// buffer left to grow by doubling would end twice as large as its lines (0 when nothing is cut).
fn room(piece: usize) -> usize {
    if piece <= PIECE { piece + piece / 8 } else { 0 }
}

/// Whether file `name` names each agent's version and hash in its header: the small files
/// (domains, routes), written at every apply. The files with a line per address do not, so
/// that one whose lines did not change is the same file, and need not be written again.
pub fn carries_versions(name: &str) -> bool {
    !ADDRESS_FILES.contains(&name)
}

/// The files with one line per address, in the order of [`Lines`]' buffers.
const ADDRESS_FILES: [&str; 4] = [
    "postfix/relay_recipients",
    "exim/recipients",
    "postfix/virtual",
    "exim/forward",
];

/// One agent's address lines of each file being built, from plans in address order.
struct Lines<'x> {
    agent: &'x str,
    /// `relay_recipients`, exim `recipients`, `virtual`, exim `forward`, when rendered: the
    /// lines since the last full piece.
    bufs: [Option<String>; 4],
    /// The full pieces of each buffer.
    pieces: [Vec<Arc<String>>; 4],
    /// The size past which a buffer becomes a piece (after an address's lines).
    piece: usize,
    counts: Counts,
    error: Option<RenderError>,
    /// Reused per plan: the targets of a line, sorted and unique.
    order: Vec<(bool, usize)>,
    /// Reused per plan: the punt units of a split plan as addresses.
    units: Vec<String>,
}

impl<'x> Lines<'x> {
    fn new(agent: &'x str, formats: &[String], piece: usize) -> Self {
        let names: Vec<&str> = file_names(formats).collect();
        Lines {
            agent,
            bufs: ADDRESS_FILES.map(|n| {
                names
                    .contains(&n)
                    .then(|| String::with_capacity(room(piece)))
            }),
            pieces: Default::default(),
            piece,
            counts: Counts::default(),
            error: None,
            order: Vec::new(),
            units: Vec::new(),
        }
    }

    fn bad(&self, what: &'static str, value: &str) -> RenderError {
        RenderError::Invalid {
            agent: self.agent.to_string(),
            what,
            value: value.to_string(),
        }
    }

    /// Adds the lines of `p` (the next address in order).
    fn add(&mut self, p: &PlanRef<'_>) {
        if self.error.is_some() {
            return;
        }
        self.lines(p);
        // A piece ends between two addresses.
        for (b, pieces) in self.bufs.iter_mut().zip(&mut self.pieces) {
            if let Some(b) = b.as_mut().filter(|b| b.len() >= self.piece) {
                pieces.push(Arc::new(std::mem::replace(
                    b,
                    String::with_capacity(room(self.piece)),
                )));
            }
        }
    }

    /// The lines of every file, by [`ADDRESS_FILES`], for those rendered.
    fn finish(self) -> [Option<Text>; 4] {
        let mut pieces = self.pieces.into_iter();
        self.bufs.map(|b| {
            let mut pieces = pieces.next().unwrap_or_default();
            let mut b = b?;
            if !b.is_empty() {
                // The room reserved for a full piece is not kept for the last one's lines.
                b.shrink_to_fit();
                pieces.push(Arc::new(b));
            }
            Some(Text { pieces })
        })
    }

    fn lines(&mut self, p: &PlanRef<'_>) {
        if !addr::valid_parts(p.local, p.domain) {
            self.error = Some(self.bad("address", &p.address()));
            return;
        }
        let c = &mut self.counts;
        c.addresses += 1;
        let a = [p.local, "@", p.domain];
        let [relay, recipients, virt, forward] = &mut self.bufs;
        if let Some(b) = relay.as_mut() {
            push(b, &a);
            b.push_str(" OK\n");
        }
        if let Some(b) = recipients.as_mut() {
            push(b, &a);
            b.push('\n');
        }
        match p.class {
            Class::Punt => c.punt += 1,
            Class::Forward | Class::Split => {
                if p.class == Class::Forward {
                    c.forward += 1;
                } else {
                    c.split += 1;
                }
                // The punt units as addresses, in strings kept between plans.
                let units = &mut self.units;
                units.resize_with(units.len().max(p.punt.len()), String::new);
                for (s, (l, d)) in units.iter_mut().zip(p.punt) {
                    s.clear();
                    push(s, &[l, "@", d]);
                }
                let units = &units[..p.punt.len()];
                // Sorted and unique, through a reused index buffer (no allocation per address).
                let get = |&(punt, i): &(bool, usize)| -> &str {
                    if punt { &units[i] } else { p.forward[i] }
                };
                let order = &mut self.order;
                order.clear();
                order.extend((0..p.forward.len()).map(|i| (false, i)));
                order.extend((0..p.punt.len()).map(|i| (true, i)));
                order.sort_unstable_by(|x, y| get(x).cmp(get(y)));
                order.dedup_by(|x, y| get(x) == get(y));
                if let Some(t) = order.iter().map(get).find(|t| !addr::valid_address(t)) {
                    let t = t.to_string();
                    self.error = Some(self.bad("target", &t));
                    return;
                }
                for (b, sep) in [(virt, " "), (forward, ": ")] {
                    if let Some(b) = b.as_mut() {
                        push(b, &a);
                        b.push_str(sep);
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
    }
}

/// Checks the domains of `a` and renders the files with one line per domain.
fn domain_files(
    a: &AgentMaps<'_>,
    formats: &[String],
) -> Result<BTreeMap<&'static str, Text>, RenderError> {
    let mut bufs: BTreeMap<&'static str, String> = file_names(formats)
        .filter(|n| !ADDRESS_FILES.contains(n))
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

/// Entries per planning thread: below this, a content is planned on one thread.
const RUN: usize = 50_000;

/// How many threads plan `c`: one per core (at most four), each with at least [`RUN`] entries.
fn runs(c: &Content) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    cores.min(4).min(c.entries() / RUN).max(1)
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

/// The address a map line is for: up to the first space, `:` or end of line (none of which a
/// valid address holds).
fn line_address(line: &str) -> &str {
    let end = line
        .bytes()
        .position(|b| matches!(b, b' ' | b':' | b'\n'))
        .unwrap_or(line.len());
    &line[..end]
}

/// `old` (one agent's lines of one file, sorted by address) without the lines of the addresses
/// in `doomed` (sorted), merged with `new` (those addresses' lines now, sorted). The lines
/// between are copied in runs found by binary search, not looked at one by one. `gone` is called
/// with each line left out. `None` when `new` has a line for an address not in `doomed`.
fn merge(
    old: &str,
    new: &str,
    doomed: &[String],
    mut gone: impl FnMut(&str, &str),
) -> Option<String> {
    let mut out = String::with_capacity(old.len() + new.len());
    let mut fresh = new.split_inclusive('\n').peekable();
    let mut at = 0;
    for address in doomed {
        let start = at + seek(&old[at..], address);
        out.push_str(&old[at..start]);
        at = start;
        for line in old[start..].split_inclusive('\n') {
            if line_address(line) != address {
                break;
            }
            gone(address, line);
            at += line.len();
        }
        while let Some(n) = fresh.next_if(|n| line_address(n) == address) {
            out.push_str(n);
        }
    }
    out.push_str(&old[at..]);
    fresh.next().is_none().then_some(out)
}

/// [`merge`] over the pieces of `old`: the doomed addresses and new lines are handed to the
/// piece whose addresses they fall among, and only those pieces are merged (and cut again when
/// they grew past twice `piece` bytes); every other piece is shared with `old`.
fn merge_pieces(
    old: &Text,
    new: &str,
    doomed: &[String],
    piece: usize,
    mut gone: impl FnMut(&str, &str),
) -> Option<Text> {
    // Piece `k` holds the addresses from its first one up to the next piece's first one.
    let firsts: Vec<&str> = old.pieces.iter().map(|p| line_address(p)).collect();
    let fresh: Vec<&str> = new.split_inclusive('\n').collect();
    let mut out = Vec::with_capacity(old.pieces.len() + 1);
    let (mut d, mut f, mut copied) = (0, 0, 0);
    loop {
        let next = match (doomed.get(d), fresh.get(f)) {
            (None, None) => break,
            (Some(a), None) => a.as_str(),
            (None, Some(l)) => line_address(l),
            (Some(a), Some(l)) => a.as_str().min(line_address(l)),
        };
        let k = firsts.partition_point(|x| *x <= next).saturating_sub(1);
        out.extend(old.pieces[copied.min(k)..k].iter().cloned());
        let below_next_piece = |a: &str| firsts.get(k + 1).is_none_or(|e| a < *e);
        let d_end = d + doomed[d..].partition_point(|a| below_next_piece(a));
        let f_end = f + fresh[f..].partition_point(|l| below_next_piece(line_address(l)));
        let text = old.pieces.get(k).map_or("", |p| p.as_str());
        let merged = merge(
            text,
            &fresh[f..f_end].concat(),
            &doomed[d..d_end],
            &mut gone,
        )?;
        match old.pieces.get(k) {
            // Its addresses planned again to the same lines: the piece is kept, so that a file
            // whose pieces are all kept is known to be unchanged (`Rendered::same_file`).
            Some(p) if **p == merged => out.push(Arc::clone(p)),
            _ => cut(merged, piece, &mut out),
        }
        (d, f, copied) = (d_end, f_end, k + 1);
    }
    out.extend(old.pieces[copied.min(old.pieces.len())..].iter().cloned());
    Some(Text { pieces: out })
}

/// Appends `text` (lines sorted by address) to `out` as one piece, or as pieces of about
/// `piece` bytes when it holds more than twice that; never between two lines of one address.
fn cut(text: String, piece: usize, out: &mut Vec<Arc<String>>) {
    if text.len() < 2 * piece {
        if !text.is_empty() {
            out.push(Arc::new(text));
        }
        return;
    }
    let (mut start, mut at, mut last) = (0, 0, None);
    for line in text.split_inclusive('\n') {
        let address = line_address(line);
        if at - start >= piece && last != Some(address) {
            out.push(Arc::new(text[start..at].to_string()));
            start = at;
        }
        last = Some(address);
        at += line.len();
    }
    out.push(Arc::new(text[start..].to_string()));
}

/// The offset of the first line of `text` (lines sorted by address) whose address is not below
/// `address`: a binary search over bytes, each probe moved back to the start of its line.
fn seek(text: &str, address: &str) -> usize {
    let b = text.as_bytes();
    // Lines before `lo` are below `address`; the line at `hi` (a line start, or the end) is not.
    let (mut lo, mut hi) = (0, b.len());
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        let start = b[lo..mid]
            .iter()
            .rposition(|&c| c == b'\n')
            .map_or(lo, |i| lo + i + 1);
        let line = &text[start..];
        if line_address(line) < address {
            lo = line.find('\n').map_or(b.len(), |i| start + i + 1);
        } else {
            hi = start;
        }
    }
    lo
}

/// Like [`render_agent`], after a delta: `old` is this agent's part for the content the delta
/// was applied to, and `affected` (closed over `a.content`) names every address whose plan can
/// have changed. Only those are planned; their old lines are replaced in a copy of `old`. The
/// result equals what [`render_agent`] gives (property-tested); when `old` was rendered without
/// a file that tells the classes apart, everything is planned.
pub fn render_agent_affected(
    a: &AgentMaps<'_>,
    formats: &[String],
    old: &AgentPart,
    affected: &Affected,
) -> Result<AgentPart, RenderError> {
    render_agent_affected_in(a, formats, old, affected, PIECE)
}

/// [`render_agent_affected`] cutting grown pieces at `piece` bytes.
fn render_agent_affected_in(
    a: &AgentMaps<'_>,
    formats: &[String],
    old: &AgentPart,
    affected: &Affected,
    piece: usize,
) -> Result<AgentPart, RenderError> {
    // The counts of the old lines that go: every address has a line in a recipients file, and
    // a forward or split one a line in a forward file, whose targets at served domains (units
    // on the primary) tell a split from a forward.
    let recipients = ["postfix/relay_recipients", "exim/recipients"]
        .into_iter()
        .find(|n| old.files.contains_key(n));
    let forwards = ["postfix/virtual", "exim/forward"]
        .into_iter()
        .find(|n| old.files.contains_key(n));
    let (Some(recipients), Some(forwards)) = (recipients, forwards) else {
        return render_agent_in(a, formats, piece);
    };
    let mut lines = Lines::new(a.id, formats, usize::MAX);
    (Planner::sparse(a.content).without_reasons()).plan_affected(affected, |p| lines.add(p));
    if let Some(e) = lines.error.take() {
        return Err(e);
    }
    let counts_new = lines.counts;
    let new_lines = lines.finish().map(|t| t.map(|t| t.to_string()));
    // Every line is for an address at a served domain.
    let mut doomed: Vec<String> = affected
        .names()
        .iter()
        .flat_map(|n| a.content.domains.iter().map(move |d| format!("{n}@{d}")))
        .collect();
    doomed.sort_unstable();
    let served = |t: &str| {
        addr::split(t).is_some_and(|(_, d)| {
            a.content
                .domains
                .binary_search_by(|x| x.as_str().cmp(d))
                .is_ok()
        })
    };
    // What the lines that go counted: addresses, forwards, splits.
    let mut gone = [0u64; 3];
    let mut files: BTreeMap<&'static str, Text> = old
        .files
        .iter()
        .filter(|(n, _)| !ADDRESS_FILES.contains(n))
        .map(|(n, b)| (*n, b.clone()))
        .collect();
    for (name, new) in ADDRESS_FILES.into_iter().zip(&new_lines) {
        let (Some(new), Some(old)) = (new, old.files.get(name)) else {
            continue;
        };
        let merged = merge_pieces(old, new, &doomed, piece, |address, line| {
            if name == recipients {
                gone[0] += 1;
            } else if name == forwards {
                let targets = line[address.len()..].trim_start_matches(':');
                let split = targets.split(',').any(|t| served(t.trim()));
                gone[if split { 2 } else { 1 }] += 1;
            }
        });
        let Some(merged) = merged else {
            return render_agent_in(a, formats, piece);
        };
        files.insert(name, merged);
    }
    let (o, n) = (old.counts, counts_new);
    let counts = (|| {
        let punt_gone = gone[0].checked_sub(gone[1] + gone[2])?;
        Some(Counts {
            addresses: o.addresses.checked_sub(gone[0])? + n.addresses,
            forward: o.forward.checked_sub(gone[1])? + n.forward,
            split: o.split.checked_sub(gone[2])? + n.split,
            punt: o.punt.checked_sub(punt_gone)? + n.punt,
        })
    })();
    // Counts that do not add up mean `old` is not what this content's base rendered to.
    let Some(counts) = counts else {
        return render_agent_in(a, formats, piece);
    };
    Ok(AgentPart { files, counts })
}

#[cfg(test)]
mod tests;
