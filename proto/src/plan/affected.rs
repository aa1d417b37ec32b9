//! What a change reaches: the names whose plans a delta can alter, closed over every alias,
//! virtual entry and include file that names one of them, so that only those are planned
//! again after a delta.

use std::borrow::Cow;

use crate::addr;
use crate::snapshot::{Content, Kind, Target};
use rustc_hash::{FxHashMap, FxHashSet};

use super::{Served, lower};

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
    pub(super) names: FxHashSet<String>,
    /// `:include:` paths.
    pub(super) includes: FxHashSet<String>,
}

/// The folded local part of a key (`local@domain`, or a bare name).
pub(super) fn local_of(key: &str) -> Cow<'_, str> {
    lower(addr::split(key).map_or(key, |(l, _)| l))
}

/// Passes [`Affected::close_over`] makes before it indexes the alias graph.
const PASSES: usize = 32;

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
pub(super) struct Sieve(Vec<u64>);

impl Sieve {
    /// Include paths' slots follow the names'.
    pub(super) const INCLUDE: usize = 1 << 16;

    pub(super) fn of(a: &Affected) -> Sieve {
        let mut bits = vec![0u64; 2 * Sieve::INCLUDE / 64];
        let names = a.names.iter().map(|n| Sieve::slot(n));
        let includes = (a.includes.iter()).map(|p| Sieve::INCLUDE | Sieve::slot(p));
        for at in names.chain(includes) {
            bits[at / 64] |= 1 << (at % 64);
        }
        Sieve(bits)
    }

    pub(super) fn slot(name: &str) -> usize {
        (super::hash_name(name) & 0xffff) as usize
    }

    pub(super) fn may_hold(&self, slot: usize) -> bool {
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
pub(super) struct Slots {
    /// The nodes' items' slots, node after node.
    pub(super) items: Vec<u32>,
    /// Per node, where its slots start in `items`; then one more, the end.
    pub(super) starts: Vec<u32>,
}

impl Slots {
    /// The slots of `c`, with the aliases looked through in [pieces](crate::par::pieces) of
    /// at least `least`, side by side.
    pub(super) fn of(c: &Content, domains: &Served<'_>, least: usize) -> Slots {
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
        let pieces = crate::par::pieces(c.aliases.len(), least);
        let mut s = if pieces > 1 {
            use rayon::prelude::*;
            let ranges: Vec<_> = crate::par::cuts(c.aliases.len(), pieces).collect();
            let mut each = (ranges.into_par_iter())
                .map(|r| aliases(&c.aliases[r]))
                .collect::<Vec<_>>()
                .into_iter();
            let mut s = each.next().expect("at least two pieces");
            for more in each {
                let at = s.items.len() as u32;
                s.starts.extend(more.starts.iter().map(|&i| i + at));
                s.items.extend(more.items);
            }
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
    pub(super) fn maybe<'s>(&'s self, sieve: &'s Sieve) -> impl Iterator<Item = usize> + 's {
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
        self.close_over_in(c, PASSES, crate::par::LEAST_ITEMS);
    }

    /// [`Affected::close_over`] with at most `passes` passes before the index, the content's
    /// [`Slots`] made by looking through the aliases in [pieces](crate::par::pieces) of at
    /// least `least`.
    pub(super) fn close_over_in(&mut self, c: &Content, passes: usize, least: usize) {
        if self.is_empty() {
            return;
        }
        let domains = Served::of(c);
        let slots = Slots::of(c, &domains, least);
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
