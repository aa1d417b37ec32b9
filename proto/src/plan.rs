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

use crate::fxhash::{FxHashMap, FxHashSet};

use serde::{Deserialize, Serialize};

use crate::addr;
use crate::snapshot::{Content, Kind, Target, User};

mod names;
use names::{Named, Names};

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
struct At {
    file: u32,
    line: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct R<'a> {
    code: Code,
    target: &'a str,
    at: At,
    via: Option<Unit<'a>>,
}

/// A memoised expansion. `forward` empty means the node is wholly punt.
#[derive(Clone, Debug, Default)]
struct Exp<'a> {
    forward: Vec<&'a str>,
    units: Vec<Unit<'a>>,
    reasons: Vec<R<'a>>,
    height: u32,
}

impl<'a> Exp<'a> {
    fn punt(reasons: Vec<R<'a>>) -> Self {
        Exp {
            reasons,
            ..Exp::default()
        }
    }
    fn is_punt(&self) -> bool {
        self.forward.is_empty()
    }
    fn add_reasons(&mut self, rs: impl Iterator<Item = R<'a>>) {
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
enum Ref<'a> {
    /// A remote address.
    Forward(&'a str),
    /// A punt unit that needs no expansion, with its reason.
    Leaf(Unit<'a>, R<'a>),
    /// A local user whose `.forward` lists only remote addresses.
    UserForward(&'a [Target]),
    /// An alias or virtual entry, reached as `unit`, whose local names bind to `domain`.
    Node {
        id: usize,
        unit: Unit<'a>,
        domain: Option<&'a str>,
    },
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
    acc: Exp<'a>,
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
    exps: Vec<Exp<'a>>,
    /// Accumulators of finished frames, cleared, for the next ones.
    pool: Vec<Exp<'a>>,
    /// Item lists of finished frames, cleared, and the walk's stack between walks: planning a
    /// million aliases otherwise allocated each of them once per alias.
    item_pool: Vec<Vec<(&'a Target, u32)>>,
    frames: Vec<Frame<'a>>,
    unknown: BTreeSet<(&'a str, At)>,
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
    root: Exp<'a>,
    /// Whether plans carry their reasons ([`Planner::without_reasons`]).
    reasons: bool,
    /// The punt units of the last plan settled ([`Planner::settle`]), bound and sorted.
    units: Vec<(&'a str, &'a str)>,
}

/// The served domains, for asking whether a domain is one (of every address item planned).
/// Most primaries serve a few, which are compared one by one: hashing a remote domain cost
/// more than comparing it with a few. Many are hashed.
struct Served<'a> {
    few: Vec<&'a str>,
    many: Option<FxHashSet<&'a str>>,
}

/// Served domains up to this many are compared one by one.
const FEW_DOMAINS: usize = 8;

impl<'a> Served<'a> {
    fn of(c: &'a Content) -> Self {
        let all = c.domains.iter().map(String::as_str);
        if c.domains.len() <= FEW_DOMAINS {
            Served {
                few: all.collect(),
                many: None,
            }
        } else {
            Served {
                few: Vec::new(),
                many: Some(all.collect()),
            }
        }
    }

    /// The content's own string of `domain`, when it is served.
    fn get(&self, domain: &str) -> Option<&'a str> {
        match &self.many {
            Some(set) => set.get(domain).copied(),
            None => self.few.iter().find(|&&d| d == domain).copied(),
        }
    }

    fn contains(&self, domain: &str) -> bool {
        self.get(domain).is_some()
    }
}

/// Where each entry is in the content's lists, for planning many addresses.
struct Maps<'a> {
    /// Alias names, user names and bare virtual keys.
    names: Names<'a>,
    /// Virtual entries with full-address keys, by `(local, domain)`.
    virtuals: FxHashMap<(&'a str, &'a str), usize>,
    recipients: FxHashMap<(&'a str, &'a str), usize>,
    includes: FxHashMap<&'a str, usize>,
}

impl<'a> Maps<'a> {
    fn of(c: &'a Content) -> Self {
        Maps {
            names: Names::of(c),
            virtuals: c
                .virtuals
                .iter()
                .enumerate()
                .filter_map(|(i, v)| addr::split(&v.key).map(|k| (k, i)))
                .collect(),
            recipients: c
                .recipients
                .iter()
                .enumerate()
                .filter_map(|(i, r)| addr::split(&r.address).map(|k| (k, i)))
                .collect(),
            includes: index(c.includes.iter().map(|i| i.path.as_str())),
        }
    }
}

/// Each key's position in its list.
fn index<'a>(keys: impl Iterator<Item = &'a str>) -> FxHashMap<&'a str, usize> {
    keys.enumerate().map(|(i, k)| (k, i)).collect()
}

/// Where an entry is: `hashed` is the planner's index lookup when it has indexes, else `list`
/// (sorted) is searched with `cmp`.
fn find<T>(
    hashed: Option<Option<&usize>>,
    list: &[T],
    cmp: impl FnMut(&T) -> std::cmp::Ordering,
) -> Option<usize> {
    match hashed {
        Some(at) => at.copied(),
        None => list.binary_search_by(cmp).ok(),
    }
}

/// Orders the string `s` against the address `local@domain`, as strings.
fn cmp_joined(s: &str, (local, domain): (&str, &str)) -> std::cmp::Ordering {
    let joined = local
        .bytes()
        .chain(std::iter::once(b'@'))
        .chain(domain.bytes());
    s.bytes().cmp(joined)
}

/// Lowercases only when needed (ASCII, the usual case, without decoding characters).
fn lower(s: &str) -> Cow<'_, str> {
    let upper = if s.is_ascii() {
        s.bytes().any(|b| b.is_ascii_uppercase())
    } else {
        s.chars().any(char::is_uppercase)
    };
    if upper {
        Cow::Owned(s.to_lowercase())
    } else {
        Cow::Borrowed(s)
    }
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
            root: Exp::default(),
            reasons: true,
            units: Vec::new(),
        }
    }

    /// The alias, user and bare virtual entry named `name` (folded).
    fn named(&self, name: &str) -> Named {
        let c = self.c;
        if let Some(m) = &self.maps {
            return m.names.get(name);
        }
        let user = (c.users.binary_search_by(|u| u.name.as_str().cmp(name))).ok();
        Named::new(
            (c.aliases.binary_search_by(|a| a.name.as_str().cmp(name))).ok(),
            user,
            (c.virtuals.binary_search_by(|v| v.key.as_str().cmp(name)))
                .ok()
                .filter(|&i| !c.virtuals[i].key.contains('@')),
        )
        .procmail(user.is_some_and(|i| c.users[i].procmail.is_some()))
    }

    /// The virtual entry whose key is `local@domain`.
    fn virtual_at(&self, local: &str, domain: &str) -> Option<usize> {
        let hashed = self.maps.as_ref().map(|m| m.virtuals.get(&(local, domain)));
        find(hashed, &self.c.virtuals, |v| {
            cmp_joined(&v.key, (local, domain))
        })
    }

    fn recipient(&self, local: &str, domain: &str) -> Option<usize> {
        let hashed = self
            .maps
            .as_ref()
            .map(|m| m.recipients.get(&(local, domain)));
        find(hashed, &self.c.recipients, |r| {
            cmp_joined(&r.address, (local, domain))
        })
    }

    fn include(&self, path: &str) -> Option<usize> {
        let hashed = self.maps.as_ref().map(|m| m.includes.get(path));
        find(hashed, &self.c.includes, |i| i.path.as_str().cmp(path))
    }

    fn origin(&self, at: At) -> String {
        match self.c.files.get(at.file as usize) {
            Some(f) if at.line > 0 => format!("{f}:{}", at.line),
            Some(f) => f.clone(),
            None => String::new(),
        }
    }

    fn user_ref(&self, u: &'a User, unit: Unit<'a>) -> Ref<'a> {
        let at = At {
            file: u.file,
            line: u.line,
        };
        if let Some(p) = u.procmail {
            let target = self.c.files.get(p as usize).map_or("", String::as_str);
            return Ref::Leaf(
                unit,
                R {
                    code: Code::Procmail,
                    target,
                    at,
                    via: None,
                },
            );
        }
        let Some(fw) = &u.forward else {
            return Ref::Leaf(
                unit,
                R {
                    code: Code::Mailbox,
                    target: &u.name,
                    at,
                    via: None,
                },
            );
        };
        let fat = |line| At {
            file: fw.file,
            line,
        };
        let path = self
            .c
            .files
            .get(fw.file as usize)
            .map_or("", String::as_str);
        if fw.error.is_some() || fw.filter {
            return Ref::Leaf(
                unit,
                R {
                    code: Code::DotForward,
                    target: path,
                    at: fat(0),
                    via: None,
                },
            );
        }
        if fw.targets.is_empty() {
            return Ref::Leaf(
                unit,
                R {
                    code: Code::Mailbox,
                    target: &u.name,
                    at,
                    via: None,
                },
            );
        }
        for t in &fw.targets {
            let remote = t.kind == Kind::Address
                && addr::split(&t.value).is_some_and(|(_, d)| !self.domains.contains(d));
            if !remote {
                return Ref::Leaf(
                    unit,
                    R {
                        code: Code::DotForward,
                        target: &t.value,
                        at: fat(t.line),
                        via: None,
                    },
                );
            }
        }
        Ref::UserForward(&fw.targets)
    }

    /// The user of `named` when it has a `~/.procmailrc` (which comes before any alias).
    fn procmail_user(&self, named: Named) -> Option<&'a User> {
        if !named.has_procmail() {
            return None;
        }
        named.user().map(|i| &self.c.users[i])
    }

    /// A local name inside an alias list: alias first, then user; the primary bounces the rest.
    fn resolve_local(&mut self, name: &'a str, at: At) -> Ref<'a> {
        let folded = lower(name);
        let named = self.named(&folded);
        if let Some(u) = self.procmail_user(named) {
            return self.user_ref(u, Unit::Local(&u.name));
        }
        if let Some(i) = named.alias() {
            // The item's own text when folding left it as it was: it is the alias's name, and
            // the alias's entry is not read before its expansion is needed.
            let own = match folded {
                Cow::Borrowed(n) => n,
                Cow::Owned(_) => self.c.aliases[i].name.as_str(),
            };
            return Ref::Node {
                id: i,
                unit: Unit::Local(own),
                domain: None,
            };
        }
        if let Some(i) = named.user() {
            let u = &self.c.users[i];
            return self.user_ref(u, Unit::Local(&u.name));
        }
        self.unknown.insert((name, at));
        Ref::Leaf(
            Unit::Local(name),
            R {
                code: Code::Unknown,
                target: name,
                at,
                via: None,
            },
        )
    }

    /// An address at a served domain, resolved as the primary's MTA does: virtual, alias, user,
    /// recipient list. `full` is the address as written, for an unknown.
    fn resolve_addr(&mut self, local: &'a str, domain: &'a str, full: &'a str, at: At) -> Ref<'a> {
        let lkey = lower(local);
        let named = self.named(&lkey);
        self.resolve_named(local, &lkey, named, domain, full, at)
    }

    /// [`Planner::resolve_addr`] with `local` folded (`lkey`) and the entries it names found.
    fn resolve_named(
        &mut self,
        local: &'a str,
        lkey: &str,
        named: Named,
        domain: &'a str,
        full: &'a str,
        at: At,
    ) -> Ref<'a> {
        if let Some(u) = self.procmail_user(named) {
            return self.user_ref(u, Unit::Addr(&u.name, domain));
        }
        if let Some(i) = self.virtual_at(lkey, domain) {
            let key = self.c.virtuals[i].key.as_str();
            let (l, d) = addr::split(key).unwrap_or((key, domain));
            return Ref::Node {
                id: self.c.aliases.len() + i,
                unit: Unit::Addr(l, d),
                domain: Some(domain),
            };
        }
        if let Some(i) = named.bare() {
            let v = &self.c.virtuals[i];
            let at = At {
                file: v.file,
                line: v.line,
            };
            return Ref::Leaf(
                Unit::Addr(&v.key, domain),
                R {
                    code: Code::Unknown,
                    target: &v.key,
                    at,
                    via: None,
                },
            );
        }
        if let Some(i) = named.alias() {
            let name = self.c.aliases[i].name.as_str();
            return Ref::Node {
                id: i,
                unit: Unit::Addr(name, domain),
                domain: Some(domain),
            };
        }
        if let Some(i) = named.user() {
            let u = &self.c.users[i];
            return self.user_ref(u, Unit::Addr(&u.name, domain));
        }
        if let Some(i) = self.recipient(lkey, domain) {
            let r = &self.c.recipients[i];
            let (l, d) = addr::split(&r.address).unwrap_or((&r.address, domain));
            let at = At {
                file: r.file,
                line: r.line,
            };
            return Ref::Leaf(
                Unit::Addr(l, d),
                R {
                    code: Code::Mailbox,
                    target: &r.address,
                    at,
                    via: None,
                },
            );
        }
        self.unknown.insert((full, at));
        Ref::Leaf(
            Unit::Addr(local, domain),
            R {
                code: Code::Unknown,
                target: full,
                at,
                via: None,
            },
        )
    }

    /// The items of an alias with `:include:` files inlined (into `items`), or the reasons it
    /// must punt as a whole (an item only the primary can deliver, written directly in its list).
    fn own_items(&self, node: usize, items: &mut Vec<(&'a Target, u32)>) -> Result<(), Vec<R<'a>>> {
        let c = self.c;
        let (targets, file, key): (&'a [Target], u32, Option<&'a str>) = if node < c.aliases.len() {
            let a = &c.aliases[node];
            (&a.targets, a.file, None)
        } else {
            let v = &c.virtuals[node - c.aliases.len()];
            (&v.targets, v.file, Some(v.key.as_str()))
        };
        items.reserve(targets.len());
        let mut direct = Vec::new();
        // Include files still to read: (items, file, nesting). Most aliases have none.
        let mut work: Vec<(&'a [Target], u32, u32)> = Vec::new();
        let mut next = Some((targets, file, 0u32));
        let mut seen_includes: FxHashSet<&'a str> = FxHashSet::default();
        while let Some((ts, file, nesting)) = next.take().or_else(|| work.pop()) {
            for t in ts {
                let at = At { file, line: t.line };
                let r = |code| R {
                    code,
                    target: t.value.as_str(),
                    at,
                    via: None,
                };
                match t.kind {
                    Kind::Address | Kind::Local if key.is_none() => items.push((t, file)),
                    Kind::Address => {
                        let lk = lower(&t.value);
                        if Some(lk.as_ref()) == key {
                            direct.push(r(Code::Loop));
                        } else {
                            items.push((t, file));
                        }
                    }
                    Kind::Local => direct.push(r(Code::Unknown)),
                    Kind::Pipe => direct.push(r(Code::Pipe)),
                    Kind::File => direct.push(r(Code::File)),
                    Kind::Backslash => direct.push(r(Code::Backslash)),
                    Kind::Special => direct.push(r(Code::Special)),
                    Kind::Invalid => direct.push(r(Code::Unknown)),
                    Kind::Include => {
                        let inc = self.include(&t.value).map(|i| &c.includes[i]);
                        match inc {
                            _ if key.is_some() => direct.push(r(Code::Include)),
                            Some(inc) if inc.error.is_some() => {
                                direct.push(r(Code::IncludeUnreadable))
                            }
                            Some(inc)
                                if nesting < MAX_INCLUDE_NESTING
                                    && seen_includes.insert(inc.path.as_str()) =>
                            {
                                work.push((&inc.targets, inc.file, nesting + 1));
                            }
                            // Nested too deep, included twice, relative or never read: punt.
                            _ => direct.push(r(Code::Include)),
                        }
                    }
                }
            }
        }
        if direct.is_empty() {
            Ok(())
        } else {
            Err(direct)
        }
    }

    /// The expansion kept for `node`.
    fn memo(&self, node: usize) -> Option<&Exp<'a>> {
        self.exps.get(self.memo[node] as usize)
    }

    /// A plan's expansion: kept for node `id`, or, when `id` is `None`, the one [`Planner::top`]
    /// left in `scratch`.
    fn expansion<'s>(&'s self, id: Option<usize>, scratch: &'s Exp<'a>) -> &'s Exp<'a> {
        id.and_then(|i| self.memo(i)).unwrap_or(scratch)
    }

    /// Keeps `exp` as the expansion of `node`.
    fn keep(&mut self, node: usize, exp: Exp<'a>) {
        self.memo[node] = u32::try_from(self.exps.len()).expect("fewer than 2^32 nodes");
        self.exps.push(exp);
    }

    fn node_at(&self, node: usize) -> (&'a str, At) {
        let c = self.c;
        if node < c.aliases.len() {
            let a = &c.aliases[node];
            (
                &a.name,
                At {
                    file: a.file,
                    line: a.line,
                },
            )
        } else {
            let v = &c.virtuals[node - c.aliases.len()];
            (
                &v.key,
                At {
                    file: v.file,
                    line: v.line,
                },
            )
        }
    }

    fn resolve_item(&mut self, t: &'a Target, file: u32) -> Ref<'a> {
        let at = At { file, line: t.line };
        match t.kind {
            Kind::Local => self.resolve_local(&t.value, at),
            _ => match addr::split(&t.value).and_then(|(l, d)| Some((l, self.domains.get(d)?))) {
                Some((l, d)) => self.resolve_addr(l, d, &t.value, at),
                None => Ref::Forward(&t.value),
            },
        }
    }

    /// Merges what `r` resolved to into `acc`. Returns a node that must be expanded first.
    fn merge(&mut self, cur: usize, acc: &mut Exp<'a>, r: Ref<'a>) -> Option<usize> {
        match r {
            Ref::Forward(a) => acc.forward.push(a),
            Ref::Leaf(unit, reason) => {
                acc.units.push(unit);
                if self.reasons {
                    acc.add_reasons(std::iter::once(R {
                        via: Some(unit),
                        ..reason
                    }));
                }
            }
            Ref::UserForward(ts) => {
                acc.forward.extend(ts.iter().map(|t| t.value.as_str()));
                acc.height = acc.height.max(1);
            }
            Ref::Node { id, unit, domain } => match self.state[id] {
                DONE => {
                    let reasons = self.reasons;
                    let child = self.memo(id)?;
                    if child.is_punt() {
                        acc.units.push(unit);
                        if reasons {
                            acc.add_reasons(child.reasons.iter().map(|r| R {
                                via: Some(unit),
                                ..*r
                            }));
                        }
                    } else {
                        acc.forward.extend_from_slice(&child.forward);
                        acc.units.extend(child.units.iter().map(|u| u.bind(domain)));
                        if reasons {
                            acc.add_reasons(child.reasons.iter().map(|r| R {
                                via: r.via.map(|u| u.bind(domain)),
                                ..*r
                            }));
                        }
                        acc.height = acc.height.max(child.height);
                    }
                }
                ON_STACK => {
                    // A cycle: `cur` and `id` are in one strongly connected component, and every
                    // alias in it punts (reason `loop`), so nothing is merged.
                    if id == cur {
                        self.self_loop[cur] = true;
                    }
                    self.low[cur] = self.low[cur].min(self.low[id]);
                }
                _ => return Some(id),
            },
        }
        None
    }

    /// Expands `root` and everything it reaches, without recursion (Tarjan's strongly connected
    /// components, so that loop membership does not depend on where the walk starts). The
    /// expansions reached are kept; `root`'s is kept only when it punts as soon as its items are
    /// read or is on a loop, and is otherwise left in `self.root` with `root` still unseen.
    fn eval(&mut self, root: usize) {
        if self.state[root] == DONE {
            return;
        }
        let mut stack = std::mem::take(&mut self.frames);
        self.push(&mut stack, root);
        while let Some(mut frame) = stack.pop() {
            let mut child = None;
            while frame.pos < frame.items.len() {
                let (t, file) = frame.items[frame.pos];
                let r = self.resolve_item(t, file);
                if let Some(id) = self.merge(frame.node, &mut frame.acc, r) {
                    child = Some(id);
                    break;
                }
                frame.pos += 1;
            }
            match child {
                Some(id) => {
                    stack.push(frame);
                    self.push(&mut stack, id);
                }
                // The walk's first frame is its last.
                None => self.finish(frame, stack.is_empty()),
            }
        }
        self.frames = stack;
    }

    fn push(&mut self, stack: &mut Vec<Frame<'a>>, node: usize) {
        let mut items = self.item_pool.pop().unwrap_or_default();
        match self.own_items(node, &mut items) {
            Ok(()) => {
                self.state[node] = ON_STACK;
                self.index[node] = self.counter;
                self.low[node] = self.counter;
                self.counter += 1;
                self.tarjan.push(node);
                stack.push(Frame {
                    node,
                    items,
                    pos: 0,
                    acc: self.pool.pop().unwrap_or_default(),
                });
            }
            Err(mut direct) => {
                items.clear();
                self.item_pool.push(items);
                direct.sort_unstable();
                direct.dedup();
                direct.truncate(MAX_REASONS);
                direct.shrink_to_fit();
                self.state[node] = DONE;
                self.keep(node, Exp::punt(direct));
            }
        }
    }

    /// Completes `frame`'s node, and gives its accumulator and item list back to the pools.
    /// `root`: the node is the walk's root ([`Planner::eval`]).
    fn finish(&mut self, frame: Frame<'a>, root: bool) {
        let Frame {
            node,
            mut acc,
            mut items,
            ..
        } = frame;
        items.clear();
        self.item_pool.push(items);
        self.complete(node, &mut acc, root);
        acc.forward.clear();
        acc.units.clear();
        acc.reasons.clear();
        acc.height = 0;
        self.pool.push(acc);
    }

    /// Keeps the expansion of `node` from what its items gave (`acc`) once its strongly
    /// connected component is complete; a walk's `root` not on a loop goes to `self.root` in
    /// `acc`'s place instead.
    fn complete(&mut self, node: usize, acc: &mut Exp<'a>, root: bool) {
        if self.low[node] < self.index[node] {
            // Part of a larger component whose root is still being expanded: it will punt as a
            // loop when the root completes.
            return;
        }
        let at_node = self.tarjan.iter().rposition(|&n| n == node).unwrap_or(0);
        if at_node + 1 < self.tarjan.len() || self.self_loop[node] {
            for n in self.tarjan.split_off(at_node) {
                let (name, at) = self.node_at(n);
                self.state[n] = DONE;
                self.keep(
                    n,
                    Exp::punt(vec![R {
                        code: Code::Loop,
                        target: name,
                        at,
                        via: None,
                    }]),
                );
            }
            return;
        }
        // A component of one node, not a loop.
        self.tarjan.truncate(at_node);
        acc.height += 1;
        if acc.height > MAX_DEPTH && !acc.forward.is_empty() {
            let (name, at) = self.node_at(node);
            *acc = Exp::punt(vec![R {
                code: Code::Depth,
                target: name,
                at,
                via: None,
            }]);
        } else {
            acc.seal();
            if acc.is_punt() {
                acc.units.clear();
            }
        }
        if root {
            // Left unseen: `self.root` holds its expansion until the next walk.
            self.state[node] = UNSEEN;
            std::mem::swap(&mut self.root, acc);
            return;
        }
        self.state[node] = DONE;
        // Kept at its size: the accumulator's room would be most of the memo's memory.
        self.keep(node, acc.clone());
    }

    /// The content-owned `(local, domain)` of a valid address, or `None`.
    fn key_of(&self, local: &str, domain: &str) -> Option<Key<'a>> {
        let domain = self.domains.get(domain)?;
        let lkey = lower(local);
        let c = self.c;
        let named = self.named(&lkey);
        let local = if let Some(i) = self.virtual_at(&lkey, domain) {
            addr::split(&c.virtuals[i].key)?.0
        } else if let Some(i) = self.recipient(&lkey, domain) {
            addr::split(&c.recipients[i].address)?.0
        } else if let Some(i) = named.alias() {
            c.aliases[i].name.as_str()
        } else if let Some(i) = named.user() {
            c.users[i].name.as_str()
        } else {
            c.virtuals[named.bare()?].key.as_str()
        };
        Some(Key {
            addr: (local, domain),
            named,
        })
    }

    /// Resolves a valid address and expands what it needs. The expansion is then in the memo
    /// (the returned node) or in `scratch`; the returned domain binds its local units.
    fn top(&mut self, key: Key<'a>, scratch: &mut Exp<'a>) -> (Option<usize>, Option<&'a str>) {
        let (local, domain) = key.addr;
        let at = At {
            file: u32::MAX,
            line: 0,
        };
        scratch.forward.clear();
        scratch.units.clear();
        scratch.reasons.clear();
        // The key's local part is folded already.
        match self.resolve_named(local, local, key.named, domain, local, at) {
            Ref::Node { id, domain: d, .. } => {
                self.eval(id);
                if self.state[id] == DONE {
                    return (Some(id), d);
                }
                std::mem::swap(scratch, &mut self.root);
                return (None, d);
            }
            Ref::Leaf(_, reason) => scratch.reasons.push(reason),
            Ref::UserForward(ts) => {
                scratch.forward.extend(ts.iter().map(|t| t.value.as_str()));
                scratch.seal();
            }
            Ref::Forward(a) => scratch.forward.push(a),
        }
        (None, Some(domain))
    }

    /// The class of an address before the unit check, or `None` if it is not valid.
    fn class_of(&mut self, (local, domain): (&'a str, &'a str)) -> Option<Class> {
        let key = self.key_of(local, domain)?;
        let mut scratch = Exp::default();
        let (id, _) = self.top(key, &mut scratch);
        Some(class(self.expansion(id, &scratch)))
    }

    /// Whether the secondary would expand the address `unit` again: it is a valid address
    /// whose own plan does not punt.
    fn again(&mut self, unit: (&'a str, &'a str)) -> bool {
        if let Some(&again) = self.again.get(&unit) {
            return again;
        }
        let again = self.class_of(unit).is_some_and(|k| k != Class::Punt);
        self.again.insert(unit, again);
        again
    }

    /// Plans `key`: expands what it needs and decides its class. A split plan with a unit that
    /// the secondary would expand again is demoted to punt. The punt units are left in
    /// `self.units` for [`Planner::view`].
    fn settle(&mut self, key: Key<'a>, scratch: &mut Exp<'a>) -> Settled<'a> {
        let (id, bound) = self.top(key, scratch);
        let (local, domain) = key.addr;
        let mut units = std::mem::take(&mut self.units);
        units.clear();
        let exp = self.expansion(id, scratch);
        let mut class = class(exp);
        if class == Class::Split {
            units.extend(exp.units.iter().map(|&u| u.address(bound, domain)));
            units.sort_unstable_by(|a, b| cmp_addr(*a, *b));
            units.dedup();
        }
        let demoted = match class {
            Class::Split => units.iter().copied().find(|&u| self.again(u)),
            _ => None,
        };
        if demoted.is_some() {
            class = Class::Punt;
        }
        if class == Class::Punt {
            units.clear();
            units.push((local, domain));
        }
        self.units = units;
        Settled {
            id,
            bound,
            class,
            demoted,
        }
    }

    /// The plan of `key` as [`Planner::settle`] left it.
    fn view<'s>(&'s self, key: Key<'a>, s: &Settled<'a>, scratch: &'s Exp<'a>) -> PlanRef<'s> {
        let exp = self.expansion(s.id, scratch);
        PlanRef {
            local: key.addr.0,
            domain: key.addr.1,
            class: s.class,
            forward: if s.class == Class::Punt {
                &[]
            } else {
                &exp.forward
            },
            punt: if s.class == Class::Forward {
                &[]
            } else {
                &self.units
            },
        }
    }

    /// Fills `plan` for `key`, reusing its allocations.
    fn fill(&mut self, key: Key<'a>, plan: &mut Plan, scratch: &mut Exp<'a>) {
        let s = self.settle(key, scratch);
        // Taken out while the view borrows the planner, put back at the end.
        let mut spare = std::mem::take(&mut self.spare);
        let v = self.view(key, &s, scratch);
        set(&mut plan.address, &[v.local, "@", v.domain]);
        plan.class = v.class;
        fill_list(
            &mut plan.forward,
            v.forward.iter().map(|f| [*f, "", ""]),
            &mut spare,
        );
        fill_list(
            &mut plan.punt,
            v.punt.iter().map(|(l, d)| [*l, "@", *d]),
            &mut spare,
        );
        let exp = self.expansion(s.id, scratch);
        // A demoted plan's one reason is written below.
        let reasons: &[R<'a>] = match (self.reasons, s.demoted) {
            (true, None) => &exp.reasons,
            _ => &[],
        };
        for gone in plan.reasons.drain(reasons.len().min(plan.reasons.len())..) {
            spare.extend([gone.target, gone.origin]);
            spare.extend(gone.via);
        }
        for (i, r) in reasons.iter().enumerate() {
            if i == plan.reasons.len() {
                plan.reasons.push(Reason {
                    code: r.code,
                    target: spare.pop().unwrap_or_default(),
                    origin: spare.pop().unwrap_or_default(),
                    via: None,
                });
            }
            let slot = &mut plan.reasons[i];
            slot.code = r.code;
            set(&mut slot.target, &[r.target]);
            slot.origin.clear();
            if let Some(f) = self.c.files.get(r.at.file as usize) {
                slot.origin.push_str(f);
                if r.at.line > 0 {
                    slot.origin.push(':');
                    push_number(&mut slot.origin, r.at.line);
                }
            }
            match r.via.map(|u| u.address(s.bound, key.addr.1)) {
                Some((l, d)) => set(
                    slot.via
                        .get_or_insert_with(|| spare.pop().unwrap_or_default()),
                    &[l, "@", d],
                ),
                None => spare.extend(slot.via.take()),
            }
        }
        if let (Some((l, d)), true) = (s.demoted, self.reasons) {
            // Demoted: the unit the secondary would expand again is the reason.
            let unit = format!("{l}@{d}");
            plan.reasons.push(Reason {
                code: Code::Unknown,
                target: unit.clone(),
                origin: String::new(),
                via: Some(unit),
            });
        }
        self.spare = spare;
    }

    /// Calls `f` with the plan of every valid address, in address order. The `Plan` passed is
    /// reused between calls (no allocation per plan once warm); clone it to keep it.
    pub fn plan_each(&mut self, f: impl FnMut(&Plan)) {
        let keys = keys(self.c);
        self.plan_keys(&keys, f);
    }

    fn plan_keys(&mut self, keys: &[Key<'a>], mut f: impl FnMut(&Plan)) {
        let mut plan = Plan::empty();
        let mut scratch = Exp::default();
        for &key in keys {
            self.fill(key, &mut plan, &mut scratch);
            f(&plan);
        }
    }

    /// Calls `f` with the borrowed plan of each key, in order.
    fn view_keys(&mut self, keys: &[Key<'a>], mut f: impl FnMut(&PlanRef<'_>)) {
        let mut scratch = Exp::default();
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
        let mut scratch = Exp::default();
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

/// The names whose plans a change can alter, for re-planning only those after a delta.
///
/// A plan of `local@domain` is made only from lookups of names (a local part, folded, in the
/// alias, user, virtual and recipient tables; an `:include:` path) starting at `local` and
/// following the items of what each lookup found. So when the entries of a set of names change,
/// exactly the plans whose walk looks one of them up can change: the names themselves, and every
/// alias, virtual entry and include file whose items name an affected name, again and again
/// until nothing is added ([`Affected::close_over`]). Every other address plans the same before
/// and after, with the same lines in the maps (reasons carry file names, which lines do not).
/// The served domains decide which items are looked up at all: when they change, there is no
/// `Affected` ([`Affected::of`] says `None`) and everything is planned again.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Affected {
    /// Folded local parts (alias and user names, virtual keys' and recipients' local parts).
    names: FxHashSet<String>,
    /// `:include:` paths.
    includes: FxHashSet<String>,
}

/// The folded local part of a key (`local@domain`, or a bare name).
fn local_of(key: &str) -> Cow<'_, str> {
    lower(addr::split(key).map_or(key, |(l, _)| l))
}

/// Passes [`Affected::close_over`] makes before it indexes the alias graph.
const PASSES: usize = 32;
/// The [`Slots`] of at least twice this many aliases are made in two halves side by side.
const PASS_HALF: usize = 50_000;

/// What an item can name that a change reaches through it.
enum Reach<'a> {
    /// A folded local name: an alias, user or virtual key at a served domain.
    Name(Cow<'a, str>),
    /// An `:include:` file.
    Include(&'a str),
}

/// What `t` names, for [`Affected::close_over`]: a local name, an address at one of `domains`,
/// or an include file; nothing else reaches an entry of the content.
fn reference<'a>(t: &'a Target, domains: &Served<'_>) -> Option<Reach<'a>> {
    match t.kind {
        Kind::Local => Some(Reach::Name(lower(&t.value))),
        Kind::Address => match addr::split(&t.value) {
            Some((l, d)) if domains.contains(d) => Some(Reach::Name(lower(l))),
            _ => None,
        },
        Kind::Include => Some(Reach::Include(&t.value)),
        _ => None,
    }
}

/// A first test of whether a folded local name or an include path can be in an [`Affected`]
/// set: one bit per 16-bit hash of a name ([`Sieve::slot`]), and another 64 Ki bits for include
/// paths. A name whose bit is clear is not in the set; a set bit only says it may be (with a few
/// dozen names, one other name in a thousand).
struct Sieve(Vec<u64>);

impl Sieve {
    /// Include paths' slots follow the names'.
    const INCLUDE: usize = 1 << 16;

    fn of(a: &Affected) -> Sieve {
        let mut bits = vec![0u64; 2 * Sieve::INCLUDE / 64];
        let names = a.names.iter().map(|n| Sieve::slot(n));
        let includes = (a.includes.iter()).map(|p| Sieve::INCLUDE | Sieve::slot(p));
        for at in names.chain(includes) {
            bits[at / 64] |= 1 << (at % 64);
        }
        Sieve(bits)
    }

    fn slot(name: &str) -> usize {
        (crate::fxhash::hash_str(name) & 0xffff) as usize
    }

    fn may_hold(&self, slot: usize) -> bool {
        self.0[slot / 64] >> (slot % 64) & 1 == 1
    }
}

/// The items of every entry that can reach another ("nodes": the aliases, then the virtual
/// entries, then the include files), reduced to what a pass of [`Affected::close_over`] tests
/// first: the [`Sieve::slot`] of each name or include an item names ([`reference`]); items that
/// name neither are left out. Made by one look through the content's strings (the cost of one
/// pass: a million aliases' items are 2.4 million strings apart in memory); each pass after that
/// reads these few megabytes in order, and looks at a node's strings only when one of its slots
/// is set in the sieve.
struct Slots {
    /// The nodes' items' slots, node after node.
    items: Vec<u32>,
    /// Per node, where its slots start in `items`; then one more, the end.
    starts: Vec<u32>,
}

impl Slots {
    /// The slots of `c`, with the aliases looked through in two halves side by side when there
    /// are `2 * half` or more.
    fn of(c: &Content, domains: &Served<'_>, half: usize) -> Slots {
        let item = |t: &Target| match reference(t, domains) {
            Some(Reach::Name(n)) => Some(Sieve::slot(&n) as u32),
            Some(Reach::Include(p)) => Some((Sieve::INCLUDE | Sieve::slot(p)) as u32),
            None => None,
        };
        let nodes = |s: &mut Slots, targets: &mut dyn Iterator<Item = &Vec<Target>>| {
            for ts in targets {
                s.starts.push(s.items.len() as u32);
                s.items.extend(ts.iter().filter_map(item));
            }
        };
        let aliases = |aliases: &[crate::snapshot::Alias]| {
            let mut s = Slots {
                items: Vec::with_capacity(aliases.len() * 2),
                starts: Vec::with_capacity(aliases.len() + 1),
            };
            nodes(&mut s, &mut aliases.iter().map(|a| &a.targets));
            s
        };
        let mut s = if c.aliases.len() >= half.saturating_mul(2) {
            let (first, second) = c.aliases.split_at(c.aliases.len() / 2);
            let (mut s, more) = crate::par::join(|| aliases(first), || aliases(second));
            let at = s.items.len() as u32;
            s.starts.extend(more.starts.iter().map(|&i| i + at));
            s.items.extend(more.items);
            s
        } else {
            aliases(&c.aliases)
        };
        nodes(&mut s, &mut c.virtuals.iter().map(|v| &v.targets));
        nodes(&mut s, &mut c.includes.iter().map(|i| &i.targets));
        s.starts.push(s.items.len() as u32);
        s
    }

    /// The nodes with a slot set in `sieve`, in order.
    fn maybe<'s>(&'s self, sieve: &'s Sieve) -> impl Iterator<Item = usize> + 's {
        let mut from = 0;
        std::iter::from_fn(move || {
            let hit = from
                + (self.items.get(from..)?.iter()).position(|&i| sieve.may_hold(i as usize))?;
            // The last node starting at or before the hit holds it (nodes without items start
            // where the next one does).
            let node = self.starts.partition_point(|&s| s as usize <= hit) - 1;
            from = self.starts[node + 1] as usize;
            Some(node)
        })
    }
}

impl Affected {
    /// The names whose entries `changes` removes or replaces; `None` when the changes replace
    /// the served domains.
    pub fn of(changes: &crate::delta::Changes) -> Option<Affected> {
        if changes.domains.is_some() {
            return None;
        }
        let mut a = Affected::default();
        let mut add = |k: &str| {
            a.names.insert(local_of(k).into_owned());
        };
        let s = changes;
        s.aliases.remove.iter().for_each(|k| add(k));
        s.aliases.upsert.iter().for_each(|e| add(&e.name));
        s.virtuals.remove.iter().for_each(|k| add(k));
        s.virtuals.upsert.iter().for_each(|e| add(&e.key));
        s.recipients.remove.iter().for_each(|k| add(k));
        s.recipients.upsert.iter().for_each(|e| add(&e.address));
        s.users.remove.iter().for_each(|k| add(k));
        s.users.upsert.iter().for_each(|e| add(&e.name));
        a.includes.extend(s.includes.remove.iter().cloned());
        a.includes
            .extend(s.includes.upsert.iter().map(|i| i.path.clone()));
        Some(a)
    }

    /// Adds every alias, virtual entry and include file of `c` whose items reach an affected
    /// name or include, and what reaches those, and so on. `c` is the content after the change:
    /// a walk reaches a changed name through unchanged entries only, which are the same before
    /// and after.
    ///
    /// Most changes are reached by nothing, or through a few levels of names: passes over `c`
    /// that test each item against the affected set find those (each pass adds what reaches
    /// the last one's). Only the first looks through every item's strings, to make the
    /// content's [`Slots`]; the others read those (milliseconds each at a million aliases).
    /// Past [`PASSES`], one more pass indexes who names what (the reverse of the alias graph),
    /// and the rest is a walk through that index, so a long chain of aliases costs no more
    /// passes. The index costs several full looks through the strings: its map holds every
    /// name.
    pub fn close_over(&mut self, c: &Content) {
        self.close_over_in(c, PASSES, PASS_HALF);
    }

    /// [`Affected::close_over`] with at most `passes` passes before the index, the content's
    /// [`Slots`] made by looking through the aliases in two halves side by side when there are
    /// `2 * half` or more.
    fn close_over_in(&mut self, c: &Content, passes: usize, half: usize) {
        if self.is_empty() {
            return;
        }
        let domains = Served::of(c);
        let slots = Slots::of(c, &domains, half);
        for _ in 0..passes {
            if !self.pass(c, &domains, &slots) {
                return;
            }
        }
        self.walk_index(c, &domains);
    }

    /// One pass over `c`: adds every entry that reaches an affected name or include. Whether
    /// it added any.
    fn pass(&mut self, c: &Content, domains: &Served<'_>, slots: &Slots) -> bool {
        let sieve = Sieve::of(self);
        let reaches = |ts: &[Target]| {
            ts.iter().any(|t| match reference(t, domains) {
                Some(Reach::Name(n)) => self.names.contains(n.as_ref()),
                Some(Reach::Include(p)) => self.includes.contains(p),
                None => false,
            })
        };
        let (na, nv) = (c.aliases.len(), c.virtuals.len());
        let (mut new_names, mut new_includes) = (Vec::new(), Vec::new());
        // The slots rule out nearly every entry; the strings of the others decide.
        for node in slots.maybe(&sieve) {
            if let Some(a) = c.aliases.get(node) {
                if !self.names.contains(&a.name) && reaches(&a.targets) {
                    new_names.push(a.name.clone());
                }
            } else if let Some(v) = c.virtuals.get(node - na) {
                let name = local_of(&v.key);
                if !self.names.contains(name.as_ref()) && reaches(&v.targets) {
                    new_names.push(name.into_owned());
                }
            } else {
                let i = &c.includes[node - na - nv];
                if !self.includes.contains(&i.path) && reaches(&i.targets) {
                    new_includes.push(i.path.clone());
                }
            }
        }
        let before = self.len();
        self.names.extend(new_names);
        self.includes.extend(new_includes);
        self.len() > before
    }

    /// The closure through an index of who names what.
    fn walk_index(&mut self, c: &Content, domains: &Served<'_>) {
        const END: u32 = u32::MAX;
        // For each folded local name and include path, the first of the entries whose items
        // name it; `edges` holds each entry (alias, then virtual, then include, numbered in that
        // order) with the next one naming the same.
        let mut by_name: FxHashMap<Cow<'_, str>, u32> = FxHashMap::default();
        let mut by_include: FxHashMap<&str, u32> = FxHashMap::default();
        let mut edges: Vec<(u32, u32)> = Vec::new();
        let (na, nv) = (c.aliases.len(), c.virtuals.len());
        let targets = (c.aliases.iter().map(|a| &a.targets))
            .chain(c.virtuals.iter().map(|v| &v.targets))
            .chain(c.includes.iter().map(|i| &i.targets));
        for (node, ts) in targets.enumerate() {
            for t in ts {
                let head = match reference(t, domains) {
                    Some(Reach::Name(n)) => by_name.entry(n).or_insert(END),
                    Some(Reach::Include(p)) => by_include.entry(p).or_insert(END),
                    None => continue,
                };
                edges.push((node as u32, *head));
                *head = (edges.len() - 1) as u32;
            }
        }
        let mut walk: Vec<u32> = (self.names.iter())
            .filter_map(|n| by_name.get(n.as_str()).copied())
            .chain((self.includes.iter()).filter_map(|p| by_include.get(p.as_str()).copied()))
            .collect();
        while let Some(mut e) = walk.pop() {
            while e != END {
                let (node, next) = edges[e as usize];
                e = next;
                let node = node as usize;
                let first = if node < na + nv {
                    let name = match node.checked_sub(na) {
                        None => Cow::Borrowed(c.aliases[node].name.as_str()),
                        Some(v) => local_of(&c.virtuals[v].key),
                    };
                    let first = by_name.get(name.as_ref()).copied();
                    self.names.insert(name.into_owned()).then_some(first)
                } else {
                    let path = &c.includes[node - na - nv].path;
                    let first = by_include.get(path.as_str()).copied();
                    self.includes.insert(path.clone()).then_some(first)
                };
                walk.extend(first.flatten());
            }
        }
    }

    /// Whether plans of addresses with this (folded) local part can have changed.
    pub fn contains(&self, local: &str) -> bool {
        self.names.contains(local)
    }

    /// The affected names, sorted.
    pub fn names(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.names.iter().map(String::as_str).collect();
        v.sort_unstable();
        v
    }

    /// How many names and include paths are affected.
    pub fn len(&self) -> usize {
        self.names.len() + self.includes.len()
    }

    /// Whether nothing is affected.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
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

/// Appends `n` in decimal to `s` (the formatting machinery cost a twentieth of planning's
/// instructions, for the line of every reason).
fn push_number(s: &mut String, mut n: u32) {
    let mut digits = [0u8; 10];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    s.extend(digits[at..].iter().map(|&d| char::from(d)));
}

/// Sets `s` to the concatenation of `parts`, keeping its allocation (and growing it at most
/// once).
fn set(s: &mut String, parts: &[&str]) {
    s.clear();
    s.reserve(parts.iter().map(|p| p.len()).sum());
    for p in parts {
        s.push_str(p);
    }
}

/// Sets `v` to the given strings (each the concatenation of three parts), reusing its strings
/// and those in `spare`, and leaving the ones it no longer needs there.
fn fill_list<'x>(
    v: &mut Vec<String>,
    items: impl Iterator<Item = [&'x str; 3]>,
    spare: &mut Vec<String>,
) {
    let mut n = 0;
    for parts in items {
        if n == v.len() {
            v.push(spare.pop().unwrap_or_default());
        }
        set(&mut v[n], &parts);
        n += 1;
    }
    spare.extend(v.drain(n..));
}

/// The class of an expansion.
fn class(exp: &Exp<'_>) -> Class {
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

/// A valid address to plan: `(local, domain)` borrowed from the content, and the entries its
/// local part names.
#[derive(Clone, Copy)]
struct Key<'a> {
    addr: (&'a str, &'a str),
    named: Named,
}

/// Every valid recipient, sorted as the strings `local@domain` sort, without duplicates. The
/// entries each local part names come from merging the lists it was gathered from, so planning
/// a key looks nothing up to begin (validated content names each entry once). The local names
/// of normalized content come in order from its sorted lists ([`locals_in_address_order`]);
/// only its full addresses, and any other content's keys, are sorted (at a million aliases the
/// sort was a tenth of planning's wall time, on both cores, before the runs begin).
fn keys(c: &Content) -> Vec<Key<'_>> {
    let domains = Served::of(c);
    // A full address's local part is in the local names (at every served domain) when it names
    // any entry, and its key then merges with that one.
    let served = |k: &(&str, &str)| domains.contains(k.1);
    let full = |addr| Key {
        addr,
        named: Named::NOTHING,
    };
    let mut fulls: Vec<Key<'_>> = (c.virtuals.iter())
        .filter_map(|v| addr::split(&v.key))
        .filter(served)
        .map(full)
        .collect();
    fulls.extend(
        (c.recipients.iter())
            .filter_map(|r| addr::split(&r.address))
            .filter(served)
            .map(full),
    );
    let mut ds: Vec<&str> = c.domains.iter().map(String::as_str).collect();
    ds.sort_unstable();
    ds.dedup();
    let mut out = Vec::with_capacity(ds.len() * (c.aliases.len() + c.users.len()));
    // Normalized content: its local names at each domain come in order without a sort.
    let merged = locals_in_address_order(c, |name, named| {
        out.extend(ds.iter().map(|&d| Key {
            addr: (name, d),
            named,
        }))
    });
    let mut out = if !merged {
        sorted_keys(c, fulls)
    } else if fulls.is_empty() {
        out
    } else {
        sort_keys(&mut fulls);
        crate::order::merged(out, fulls, |x, y| cmp_addr(x.addr, y.addr)).collect()
    };
    out.dedup_by(|later, kept| {
        let same = later.addr == kept.addr;
        if same {
            kept.named = kept.named.and(later.named);
        }
        same
    });
    out
}

/// [`keys`] before the duplicates are merged, for any content: every local name at every
/// served domain and the full addresses `fulls`, sorted.
fn sorted_keys<'a>(c: &'a Content, mut fulls: Vec<Key<'a>>) -> Vec<Key<'a>> {
    let mut out = Vec::with_capacity(c.domains.len() * (c.aliases.len() + c.users.len()));
    for d in &c.domains {
        let d = d.as_str();
        out.extend(names::local_names(c).map(|(name, named)| Key {
            addr: (name, d),
            named,
        }));
    }
    out.append(&mut fulls);
    sort_keys(&mut out);
    out
}

/// Gives `out` the local names of `c` (alias names, user names, bare virtual keys, each once
/// with every entry it names) in the order of their addresses at one domain, when each of
/// those lists is sorted without repeats, as in normalized content (and says so); otherwise
/// gives it nothing and returns false.
///
/// Names in byte order are almost in address order: `name@...` orders as `name` does except
/// where one name begins another and the longer one goes on with a byte below `@` (`a1` before
/// `a10` as names, `a10@` before `a1@` as addresses). So each name waits on a stack while the
/// names after it begin with it and go on below `@`, and comes out before the first that does
/// not, longest waiting first: one pass, no sort.
fn locals_in_address_order<'a>(c: &'a Content, mut out: impl FnMut(&'a str, Named)) -> bool {
    use std::cmp::Ordering;
    let strictly = |a: &str, b: &str| a < b;
    if !(c.aliases.is_sorted_by(|a, b| strictly(&a.name, &b.name))
        && c.users.is_sorted_by(|a, b| strictly(&a.name, &b.name))
        && c.virtuals.is_sorted_by(|a, b| strictly(&a.key, &b.key)))
    {
        return false;
    }
    // Users and bare virtual keys (most names are aliases'), merged first.
    let users = (c.users.iter().enumerate()).map(|(i, u)| {
        let named = Named::new(None, Some(i), None).procmail(u.procmail.is_some());
        (u.name.as_str(), named)
    });
    let bare = (c.virtuals.iter().enumerate())
        .filter(|(_, v)| !v.key.contains('@'))
        .map(|(i, v)| (v.key.as_str(), Named::new(None, None, Some(i))));
    let others = merge_names(users.collect(), bare.collect());
    let aliases = (c.aliases.iter().enumerate())
        .map(|(i, a)| (a.name.as_str(), Named::new(Some(i), None, None)));
    let mut waiting: Vec<(&'a str, Named)> = Vec::new();
    let mut emit = |name: &'a str, named| {
        while let Some(&(w, n)) = waiting.last() {
            let below_at = name.len() > w.len()
                && name.as_bytes().starts_with(w.as_bytes())
                && name.as_bytes()[w.len()] < b'@';
            if below_at {
                break;
            }
            out(w, n);
            waiting.pop();
        }
        waiting.push((name, named));
    };
    let mut o = 0;
    for (name, mut named) in aliases {
        while let Some(&(other, n)) = others.get(o) {
            match other.cmp(name) {
                Ordering::Less => emit(other, n),
                Ordering::Equal => named = named.and(n),
                Ordering::Greater => break,
            }
            o += 1;
        }
        emit(name, named);
    }
    for &(other, n) in &others[o..] {
        emit(other, n);
    }
    for (w, n) in waiting.into_iter().rev() {
        out(w, n);
    }
    true
}

/// Two lists of names in byte order, merged into one in that order, a name in both once with
/// what it names in each.
fn merge_names<'a>(a: Vec<(&'a str, Named)>, b: Vec<(&'a str, Named)>) -> Vec<(&'a str, Named)> {
    if b.is_empty() {
        return a;
    }
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut a, mut b) = (a.into_iter().peekable(), b.into_iter().peekable());
    while let (Some(&(x, nx)), Some(&(y, ny))) = (a.peek(), b.peek()) {
        match x.cmp(y) {
            std::cmp::Ordering::Less => out.extend(a.next()),
            std::cmp::Ordering::Greater => out.extend(b.next()),
            std::cmp::Ordering::Equal => {
                out.push((x, nx.and(ny)));
                a.next();
                b.next();
            }
        }
    }
    out.extend(a.chain(b));
    out
}

/// Sorts `keys` by address, a half on each of two threads when there are many, then merged (at
/// a million keys sorting was a tenth of planning, before the runs begin). Each key is sorted
/// with the first eight bytes of its address as a number first ([`head`]), so that most comparisons
/// compare two numbers and not two pairs of strings.
fn sort_keys(keys: &mut Vec<Key<'_>>) {
    // The sort moves (head, place) pairs of 16 bytes, not keys; the keys are then taken in order.
    let order: Vec<(u64, u32)> = (keys.iter().enumerate())
        .map(|(i, k)| {
            (
                head(k.addr),
                u32::try_from(i).expect("fewer than 2^32 keys"),
            )
        })
        .collect();
    let addr = |i: u32| keys[i as usize].addr;
    let cmp = |&(h, i): &(u64, u32), &(g, j): &(u64, u32)| {
        (h.cmp(&g)).then_with(|| cmp_addr(addr(i), addr(j)))
    };
    let sorted: Vec<Key<'_>> = (crate::order::sorted(order, cmp, 1 << 16))
        .map(|(_, i)| keys[i as usize])
        .collect();
    *keys = sorted;
}

/// The first eight bytes of the string `local@domain` as a number ([`crate::order::head`]).
fn head((local, domain): (&str, &str)) -> u64 {
    // Copied in slices: a byte iterator over the three parts took about 75 instructions a key.
    let mut b = [0u8; 8];
    let l = local.len().min(8);
    b[..l].copy_from_slice(&local.as_bytes()[..l]);
    if l < 8 {
        b[l] = b'@';
        let d = domain.len().min(7 - l);
        b[l + 1..l + 1 + d].copy_from_slice(&domain.as_bytes()[..d]);
    }
    u64::from_be_bytes(b)
}

/// Every valid recipient at a served domain, sorted: alias names and users at every served
/// domain, virtual keys, recipient-list entries.
pub fn valid_addresses(c: &Content) -> Vec<String> {
    keys(c)
        .into_iter()
        .map(|k| format!("{}@{}", k.addr.0, k.addr.1))
        .collect()
}

/// How many valid recipients `c` has (for the shrink guard).
pub fn address_count(c: &Content) -> usize {
    keys(c).len()
}

/// Plans every valid address of `content`, sorted by address.
pub fn plan_all(content: &Content) -> Vec<Plan> {
    Planner::new(content).plan_all()
}

#[cfg(test)]
mod tests;
