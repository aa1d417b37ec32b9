//! What one write puts in the tables for an agent, taken from the lines the maps were rendered
//! from (so the database answers exactly as the map files do), and what changed between two
//! such sets.

use std::sync::Arc;

use rustc_hash::{FxHashMap, FxHashSet};

use crate::render::{AgentPart, Text, table_entry};

/// The files the rows come from: the Postfix ones when rendered, else Exim's (their keys and
/// values are the same: the address, and the targets joined by `, `).
const RECIPIENTS: [&str; 2] = ["postfix/relay_recipients", "exim/recipients"];
const FORWARDS: [&str; 2] = ["postfix/virtual", "exim/forward"];

/// One agent's rows at one version.
#[derive(Debug, Clone)]
pub struct Rows {
    /// The snapshot's version.
    pub version: u64,
    /// The snapshot's hash.
    pub hash: String,
    /// Its rendered lines (shared with the maps; pieces a delta did not touch are shared with
    /// the version before).
    pub part: Arc<AgentPart>,
    /// Its domains, each with the Postfix transport and the Exim route to the primary.
    pub domains: Vec<Domain>,
}

/// A row of `mxsync.domains`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Domain {
    /// The domain.
    pub domain: String,
    /// Postfix `transport(5)` value: `relay:[host]:port`.
    pub transport: String,
    /// Exim host list: `host::port`.
    pub route: String,
}

impl Rows {
    /// The rows of `part`, for `domains` whose primary is `primary` (`[host]:port`).
    pub fn new(
        version: u64,
        hash: &str,
        part: Arc<AgentPart>,
        domains: &[String],
        primary: &str,
    ) -> Rows {
        let domains = (domains.iter())
            .map(|d| Domain {
                domain: d.clone(),
                transport: format!("relay:{primary}"),
                route: crate::render::exim_route(primary),
            })
            .collect();
        Rows {
            version,
            hash: hash.to_string(),
            part,
            domains,
        }
    }

    /// The rows of snapshot `a` as applied (once its part is rendered), for domains whose
    /// primary is `primary`.
    pub fn of(a: &crate::Applied, primary: &str) -> Option<Rows> {
        let part = Arc::clone(a.part.get()?);
        Some(Rows::new(
            a.version,
            &a.hash,
            part,
            &a.content.domains,
            primary,
        ))
    }

    /// The valid addresses: (file name, its lines).
    pub fn recipients(&self) -> Option<(&'static str, &Text)> {
        file(&self.part, &RECIPIENTS)
    }

    /// The forwarded and split addresses with their targets: (file name, its lines).
    pub fn forwards(&self) -> Option<(&'static str, &Text)> {
        file(&self.part, &FORWARDS)
    }
}

fn file<'p>(part: &'p AgentPart, names: &[&'static str]) -> Option<(&'static str, &'p Text)> {
    (names.iter()).find_map(|&n| part.files.get(n).map(|t| (n, t)))
}

/// The entries (key, value) of file `name`'s lines in `pieces`.
pub fn entries<'t>(
    name: &'t str,
    pieces: impl Iterator<Item = &'t str> + 't,
) -> impl Iterator<Item = (std::borrow::Cow<'t, str>, &'t str)> + 't {
    pieces
        .flat_map(|p| p.split_inclusive('\n'))
        .map(move |l| table_entry(name, l))
}

/// What changed from `old` to `new` (lines of file `name`): keys to delete, and keys to set
/// with their values.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// Keys no longer there.
    pub gone: Vec<String>,
    /// Keys added, or whose value changed, with the new value.
    pub set: Vec<(String, String)>,
}

/// The changes from `old` to `new`. Pieces the two texts share (a delta re-renders only the
/// pieces its addresses fall in) are not read: an address in a shared piece is in no other
/// piece of either text, so only the pieces of each that the other lacks are compared.
pub fn changes(name: &str, old: &Text, new: &Text) -> Changes {
    let ptrs = |t: &Text| -> FxHashSet<*const String> {
        t.shared_pieces().iter().map(Arc::as_ptr).collect()
    };
    let (in_old, in_new) = (ptrs(old), ptrs(new));
    let only = |t: &'_ Text, other: &FxHashSet<*const String>| -> Vec<Arc<String>> {
        (t.shared_pieces().iter())
            .filter(|p| !other.contains(&Arc::as_ptr(p)))
            .cloned()
            .collect()
    };
    let (before, after) = (only(old, &in_new), only(new, &in_old));
    let mut was: FxHashMap<std::borrow::Cow<'_, str>, &str> =
        entries(name, before.iter().map(|p| p.as_str())).collect();
    let mut c = Changes::default();
    for (k, v) in entries(name, after.iter().map(|p| p.as_str())) {
        match was.remove(&k) {
            Some(old) if old == v => {}
            _ => c.set.push((k.into_owned(), v.to_string())),
        }
    }
    c.gone = was.into_keys().map(|k| k.into_owned()).collect();
    c.gone.sort_unstable();
    c
}

/// Appends `field` to a `COPY ... FROM STDIN` text row: backslash, tab, newline and carriage
/// return escaped (map lines hold none of them; the escape keeps the row whole if one did).
pub fn copy_field(out: &mut Vec<u8>, field: &str) {
    for b in field.bytes() {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\t' => out.extend_from_slice(b"\\t"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b => out.push(b),
        }
    }
}
