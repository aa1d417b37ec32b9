//! Classification: for every valid address at a served domain, forward / split / punt
//! (DESIGN section 5).
//!
//! Principle: **when in doubt, punt**. An address is forwarded by the secondary only when every
//! final target is a remote address the primary would itself send out by SMTP.
//!
//! Each alias and virtual entry is expanded at most twice (an iterative depth-first walk with
//! memoised, domain-free results; the walk's root is kept only when a later walk reaches it, and
//! is expanded again then), so planning is linear in the size of the alias graph and deep chains
//! cannot overflow the stack. An alias expansion names the punt units it reaches through local
//! names symbolically ([`Unit::Local`]) and is bound to a served domain only when a plan is made.
//! Loops are every alias on a cycle of the walk; depth is the height of an expansion, so results do
//! not depend on the order addresses are planned in. This module does not render maps.

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::sync::Arc;

use rustc_hash::{FxHashMap, FxHashSet};

use serde::{Deserialize, Serialize};

use crate::addr;
use crate::snapshot::{Content, Kind, Target, User};

mod affected;
mod keys;
mod lookup;
mod names;
mod resolve;
mod settle;
mod walk;
pub use affected::Affected;
use keys::{Key, keys};
pub use keys::{address_count, valid_addresses};
use lookup::{Maps, Served, cmp_joined, find, lower};
use names::Named;
#[cfg(test)]
use {
    affected::{Sieve, Slots, local_of},
    keys::{head, locals_in_address_order, sort_keys},
    lookup::FEW_DOMAINS,
    settle::push_number,
};

/// An expansion deeper than this many levels punts (reason `depth`).
pub const MAX_DEPTH: u32 = 20;
/// `:include:` files nested deeper than this punt (reason `include`).
const MAX_INCLUDE_NESTING: u32 = 8;
/// Reasons kept per expansion; the rest are dropped (they only explain, never decide).
const MAX_REASONS: usize = 32;

/// What the secondary does with an address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Class {
    /// Every final target is remote: the secondary delivers to them itself.
    Forward,
    /// Some targets are remote, the rest are named addresses on the primary.
    Split,
    /// The primary is needed: the message is relayed unchanged.
    Punt,
}

impl Class {
    /// The name used in JSON and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Class::Forward => "forward",
            Class::Split => "split",
            Class::Punt => "punt",
        }
    }
}

/// Why something punts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Code {
    /// A `|command` item.
    Pipe,
    /// A `/file` or `~/file` item.
    File,
    /// An `:include:` the secondary cannot follow (relative path, nesting, not read).
    Include,
    /// An `:include:` file the agent could not read.
    IncludeUnreadable,
    /// A `\user` item.
    Backslash,
    /// `:fail:`, `:defer:`, `:blackhole:`, `error:`, an empty value.
    Special,
    /// A mailbox on the primary.
    Mailbox,
    /// The user has a `~/.procmailrc`.
    Procmail,
    /// The user's `~/.forward` needs the primary.
    DotForward,
    /// Not understood, or a name the primary does not know.
    Unknown,
    /// The alias is on a loop.
    Loop,
    /// The expansion is deeper than [`MAX_DEPTH`].
    Depth,
}

/// One reason of a plan, with where it comes from.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Reason {
    /// The reason code.
    pub code: Code,
    /// The item or name that caused it.
    pub target: String,
    /// `file:line` (or `file`) of the cause.
    pub origin: String,
    /// The punt unit this reason belongs to, when it is not the planned address itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub via: Option<String>,
}

/// The plan for one address, in the JSON shape of DESIGN section 5.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// The planned address.
    pub address: String,
    /// What the secondary does.
    pub class: Class,
    /// Remote targets the secondary delivers to itself, sorted.
    pub forward: Vec<String>,
    /// Addresses sent to the primary, sorted (the address itself when the class is punt).
    pub punt: Vec<String>,
    /// Why anything punts.
    pub reasons: Vec<Reason>,
}

/// A plan borrowed from the planner that made it, as the maps are rendered from it: the same
/// as a [`Plan`] without its reasons, with no string built for it (at a million addresses,
/// building them was a twelfth of planning's instructions).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlanRef<'p> {
    /// The planned address's local part.
    pub local: &'p str,
    /// The planned address's domain.
    pub domain: &'p str,
    /// What the secondary does.
    pub class: Class,
    /// Remote targets the secondary delivers to itself, sorted.
    pub forward: &'p [&'p str],
    /// Addresses sent to the primary as `(local, domain)`, in the order of the addresses (the
    /// address itself when the class is punt).
    pub punt: &'p [(&'p str, &'p str)],
}

impl PlanRef<'_> {
    /// The planned address.
    pub fn address(&self) -> String {
        format!("{}@{}", self.local, self.domain)
    }

    /// The plan, owned, without reasons.
    pub fn to_plan(&self) -> Plan {
        Plan {
            address: self.address(),
            class: self.class,
            forward: self.forward.iter().map(|f| f.to_string()).collect(),
            punt: (self.punt.iter())
                .map(|(l, d)| format!("{l}@{d}"))
                .collect(),
            reasons: Vec::new(),
        }
    }
}

/// What [`Planner::settle`] decided for a key.
struct Settled<'a> {
    /// The node whose kept expansion is the plan's, or `None`: the scratch expansion.
    id: Option<usize>,
    /// The domain the expansion's local units bind to.
    bound: Option<&'a str>,
    class: Class,
    /// The unit that made a split plan punt, if one did.
    demoted: Option<(&'a str, &'a str)>,
}

/// A punt unit: an address on the primary, either symbolic (a local name, bound to the served
/// domain of the plan) or concrete.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Unit<'a> {
    Local(&'a str),
    Addr(&'a str, &'a str),
}

impl<'a> Unit<'a> {
    fn bind(self, domain: Option<&'a str>) -> Unit<'a> {
        match (self, domain) {
            (Unit::Local(n), Some(d)) => Unit::Addr(n, d),
            (u, _) => u,
        }
    }

    /// The unit as an address in the plan of an address at `domain` whose expansion binds its
    /// local names to `bound` (a local name left unbound is at `domain`).
    fn address(self, bound: Option<&'a str>, domain: &'a str) -> (&'a str, &'a str) {
        match self.bind(bound) {
            Unit::Local(n) => (n, domain),
            Unit::Addr(l, d) => (l, d),
        }
    }
}

/// Where a reason points: a file index and line, or nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct FileLine {
    file: u32,
    line: u32,
}

/// A reason while planning: borrowed from the content, made a [`Reason`] only for owned plans.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct ReasonRef<'a> {
    code: Code,
    target: &'a str,
    at: FileLine,
    via: Option<Unit<'a>>,
}

/// A memoised expansion. `forward` empty means the node is wholly punt.
#[derive(Clone, Debug, Default)]
struct Expansion<'a> {
    forward: Vec<&'a str>,
    units: Vec<Unit<'a>>,
    reasons: Vec<ReasonRef<'a>>,
    height: u32,
}

impl<'a> Expansion<'a> {
    fn punt(reasons: Vec<ReasonRef<'a>>) -> Self {
        Expansion {
            reasons,
            ..Expansion::default()
        }
    }
    fn is_punt(&self) -> bool {
        self.forward.is_empty()
    }
    fn add_reasons(&mut self, rs: impl Iterator<Item = ReasonRef<'a>>) {
        for r in rs {
            if self.reasons.len() >= MAX_REASONS * 4 {
                break;
            }
            self.reasons.push(r);
        }
    }
    fn seal(&mut self) {
        self.forward.sort_unstable();
        self.forward.dedup();
        self.units.sort_unstable();
        self.units.dedup();
        self.reasons.sort_unstable();
        self.reasons.dedup();
        self.reasons.truncate(MAX_REASONS);
    }
}

/// What one item resolves to.
enum Resolved<'a> {
    /// A remote address.
    Forward(&'a str),
    /// A punt unit that needs no expansion, with its reason.
    Leaf(Unit<'a>, ReasonRef<'a>),
    /// A local user whose `.forward` lists only remote addresses.
    UserForward(&'a [Target]),
    /// An alias or virtual entry, reached as `unit`, whose local names bind to `domain`.
    Node {
        id: usize,
        unit: Unit<'a>,
        domain: Option<&'a str>,
    },
}

impl<'a> Resolved<'a> {
    /// A leaf that punts `unit` for `code`, naming `target` at `at`.
    fn punt(unit: Unit<'a>, code: Code, target: &'a str, at: FileLine) -> Resolved<'a> {
        let reason = ReasonRef {
            code,
            target,
            at,
            via: None,
        };
        Resolved::Leaf(unit, reason)
    }
}

const UNSEEN: u8 = 0;
const ON_STACK: u8 = 1;
const DONE: u8 = 2;
/// No expansion kept for a node.
const NONE: u32 = u32::MAX;

struct Frame<'a> {
    node: usize,
    items: Vec<(&'a Target, u32)>,
    pos: usize,
    acc: Expansion<'a>,
}

/// Plans addresses of one content. Build once, then call [`Planner::plan_all`] or
/// [`Planner::plan`]; expansions are shared between calls.
pub struct Planner<'a> {
    c: &'a Content,
    domains: Served<'a>,
    /// Hash indexes of the entries, or `None`: found by binary search in the sorted lists of
    /// normalized content ([`Planner::sparse`]).
    maps: Option<Arc<Maps<'a>>>,
    /// `UNSEEN`, `ON_STACK` (being expanded, or finished but its strongly connected component
    /// not yet complete) or `DONE` (memoised).
    state: Vec<u8>,
    /// Tarjan's discovery index of each node.
    index: Vec<u32>,
    /// Tarjan's low-link of each node.
    low: Vec<u32>,
    /// The node names itself (a one-node loop such as `carol: carol`).
    self_loop: Vec<bool>,
    /// Tarjan's stack: nodes whose component is not complete yet.
    tarjan: Vec<usize>,
    /// Next discovery index.
    counter: u32,
    /// Each node's expansion in `exps`, or [`NONE`]: a planner on another thread expands only
    /// what its addresses reach, so an index per node costs less than a slot per node.
    memo: Vec<u32>,
    exps: Vec<Expansion<'a>>,
    /// Accumulators of finished frames, cleared, for the next ones.
    pool: Vec<Expansion<'a>>,
    /// Item lists of finished frames, cleared, and the walk's stack between walks: planning a
    /// million aliases otherwise allocated each of them once per alias.
    item_pool: Vec<Vec<(&'a Target, u32)>>,
    frames: Vec<Frame<'a>>,
    unknown: BTreeSet<(&'a str, FileLine)>,
    /// Whether the secondary would expand a split plan's unit again ([`Planner::again`]), by
    /// unit: the same few local users are units of many lists.
    again: FxHashMap<(&'a str, &'a str), bool>,
    /// Strings of plans' lists that became shorter, for the next plans' longer lists: a plan's
    /// strings are reused, not allocated again (at a million plans, growing strings was a
    /// seventh of planning's instructions).
    spare: Vec<String>,
    /// The expansion of the last walk's root, which is not kept in the memo: most aliases are
    /// named by no other, and an address's plan is made right after its walk. A root that
    /// another node names later is expanded again then, and kept.
    root: Expansion<'a>,
    /// Whether plans carry their reasons ([`Planner::without_reasons`]).
    reasons: bool,
    /// The punt units of the last plan settled ([`Planner::settle`]), bound and sorted.
    units: Vec<(&'a str, &'a str)>,
}

impl<'a> Planner<'a> {
    /// Indexes `content` (which should be [validated](Content::validate)) for planning many
    /// addresses.
    pub fn new(c: &'a Content) -> Self {
        Self::with(c, Some(Arc::new(Maps::of(c))))
    }

    /// A planner of the same content sharing this one's indexes, with nothing expanded yet: for
    /// planning on another thread.
    fn fork(&self) -> Planner<'a> {
        Planner {
            reasons: self.reasons,
            ..Self::with(self.c, self.maps.clone())
        }
    }

    /// Plans without their reasons (`Plan::reasons` left empty), otherwise the same: reasons
    /// explain a plan and decide nothing, and rendering maps reads none of them. Gathering
    /// them through the walk and writing them out as strings is about a tenth of planning's
    /// instructions.
    pub fn without_reasons(mut self) -> Self {
        self.reasons = false;
        self
    }

    /// For planning a few addresses of validated, [normalized](Content::normalize) content:
    /// entries are found by binary search in its sorted lists instead of indexing them all
    /// first (at a million aliases, indexing takes longer than planning a few hundred).
    pub fn sparse(c: &'a Content) -> Self {
        debug_assert!(
            c.aliases.is_sorted_by(|a, b| a.name < b.name)
                && c.users.is_sorted_by(|a, b| a.name < b.name)
                && c.virtuals.is_sorted_by(|a, b| a.key < b.key)
                && c.recipients.is_sorted_by(|a, b| a.address < b.address)
                && c.includes.is_sorted_by(|a, b| a.path < b.path),
            "Planner::sparse needs normalized content"
        );
        Self::with(c, None)
    }

    fn with(c: &'a Content, maps: Option<Arc<Maps<'a>>>) -> Self {
        let n = c.aliases.len() + c.virtuals.len();
        let room = if maps.is_some() { n } else { 0 };
        Planner {
            c,
            domains: Served::of(c),
            maps,
            state: vec![UNSEEN; n],
            index: vec![0; n],
            low: vec![0; n],
            self_loop: vec![false; n],
            tarjan: Vec::new(),
            counter: 0,
            memo: vec![NONE; n],
            // Room for an expansion of every node when planning them all, so that the list is
            // not copied as it grows (untouched room costs address space, not memory).
            exps: Vec::with_capacity(room),
            pool: Vec::new(),
            item_pool: Vec::new(),
            frames: Vec::new(),
            unknown: BTreeSet::new(),
            again: FxHashMap::default(),
            spare: Vec::new(),
            root: Expansion::default(),
            reasons: true,
            units: Vec::new(),
        }
    }

    /// Calls `f` with the plan of every valid address, in address order. The `Plan` passed is
    /// reused between calls (no allocation per plan once warm); clone it to keep it.
    pub fn plan_each(&mut self, f: impl FnMut(&Plan)) {
        let keys = keys(self.c);
        self.plan_keys(&keys, f);
    }

    fn plan_keys(&mut self, keys: &[Key<'a>], mut f: impl FnMut(&Plan)) {
        let mut plan = Plan::empty();
        let mut scratch = Expansion::default();
        for &key in keys {
            self.fill(key, &mut plan, &mut scratch);
            f(&plan);
        }
    }

    /// Calls `f` with the borrowed plan of each key, in order.
    fn view_keys(&mut self, keys: &[Key<'a>], mut f: impl FnMut(&PlanRef<'_>)) {
        let mut scratch = Expansion::default();
        for &key in keys {
            let s = self.settle(key, &mut scratch);
            f(&self.view(key, &s, &scratch));
        }
    }

    /// Like [`Planner::plan_each`], with each plan borrowed ([`PlanRef`], which carries no
    /// reasons: make the planner [without them](Planner::without_reasons)), on as many threads
    /// as there are `sinks`: the addresses, in order, are cut into that many runs of about the
    /// same length, and run `i` is planned into `sinks[i]` by a planner of its own that shares
    /// this one's indexes. A plan does not depend on what was planned before it (see the
    /// module), so the runs together make exactly the plans of [`Planner::plan_each`]; an
    /// expansion that two runs need is made by both. Returns the sinks, in order.
    /// [`Planner::unknown_names`] afterwards holds the first run's only.
    pub fn plan_runs<S: Send>(
        &mut self,
        sinks: Vec<S>,
        f: impl Fn(&mut S, &PlanRef<'_>) + Sync,
    ) -> Vec<S> {
        let keys = keys(self.c);
        let runs = sinks.len().max(1);
        let len = keys.len().div_ceil(runs);
        let run = |i: usize| &keys[(i * len).min(keys.len())..((i + 1) * len).min(keys.len())];
        let f = &f;
        std::thread::scope(|s| {
            let mut sinks = sinks.into_iter().enumerate();
            let first = sinks.next();
            let others: Vec<_> = sinks
                .map(|(i, mut sink)| {
                    let mut planner = self.fork();
                    let keys = run(i);
                    s.spawn(move || {
                        planner.view_keys(keys, |p| f(&mut sink, p));
                        sink
                    })
                })
                .collect();
            let mut out = Vec::with_capacity(runs);
            if let Some((i, mut sink)) = first {
                self.view_keys(run(i), |p| f(&mut sink, p));
                out.push(sink);
            }
            for h in others {
                out.push(
                    h.join()
                        .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
                );
            }
            out
        })
    }

    /// Like [`Planner::plan_each`], with each plan borrowed ([`PlanRef`]), for only the valid
    /// addresses whose local part is in `affected`.
    pub fn plan_affected(&mut self, affected: &Affected, f: impl FnMut(&PlanRef<'_>)) {
        let c = self.c;
        let mut keys: Vec<Key<'a>> = Vec::new();
        for name in &affected.names {
            keys.extend(c.domains.iter().filter_map(|d| self.key_of(name, d)));
        }
        keys.sort_unstable_by(|a, b| cmp_addr(a.addr, b.addr));
        keys.dedup_by(|b, a| a.addr == b.addr);
        self.view_keys(&keys, f);
    }

    /// The plan for one address, or `None` when it is not a valid recipient at a served domain.
    pub fn plan(&mut self, address: &str) -> Option<Plan> {
        let (local, domain) = addr::split(address)?;
        let key = self.key_of(local, &domain.to_ascii_lowercase())?;
        let mut plan = Plan::empty();
        let mut scratch = Expansion::default();
        self.fill(key, &mut plan, &mut scratch);
        Some(plan)
    }

    /// Plans every valid address, sorted by address.
    pub fn plan_all(&mut self) -> Vec<Plan> {
        let mut out = Vec::new();
        self.plan_each(|p| out.push(p.clone()));
        out
    }

    /// Local names and addresses the plans reached that the primary does not know, with their
    /// origins: the primary will bounce them.
    pub fn unknown_names(&self) -> Vec<(String, String)> {
        self.unknown
            .iter()
            .map(|&(n, at)| (n.to_string(), self.origin(at)))
            .collect()
    }
}

/// Orders `(local, domain)` pairs as the strings `local@domain` order, without building them.
/// (`@` never occurs in a local part, so where one local part is a prefix of the other, the `@`
/// that ends the shorter one decides against the longer one's next byte.)
fn cmp_addr(a: (&str, &str), b: (&str, &str)) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    let (la, lb) = (a.0.as_bytes(), b.0.as_bytes());
    let n = la.len().min(lb.len());
    match la[..n].cmp(&lb[..n]) {
        Ordering::Equal => match la.len().cmp(&lb.len()) {
            Ordering::Equal => a.1.cmp(b.1),
            Ordering::Less => b'@'.cmp(&lb[n]),
            Ordering::Greater => la[n].cmp(&b'@'),
        },
        o => o,
    }
}

/// The class of an expansion.
fn class(exp: &Expansion<'_>) -> Class {
    if exp.forward.is_empty() {
        Class::Punt
    } else if exp.units.is_empty() {
        Class::Forward
    } else {
        Class::Split
    }
}

impl Plan {
    fn empty() -> Plan {
        Plan {
            address: String::new(),
            class: Class::Punt,
            forward: Vec::new(),
            punt: Vec::new(),
            reasons: Vec::new(),
        }
    }
}

/// Plans every valid address of `content`, sorted by address.
pub fn plan_all(content: &Content) -> Vec<Plan> {
    Planner::new(content).plan_all()
}

/// The Fx hash of a name's bytes (no length mixed in, unlike `Hash for str`), for the
/// planner's own tables: its name table and the sieve of what a change reaches.
fn hash_name(name: &str) -> u64 {
    use std::hash::Hasher;
    let mut h = rustc_hash::FxHasher::default();
    h.write(name.as_bytes());
    h.finish()
}

#[cfg(test)]
mod tests;
