//! The planner's index of local names: every alias name, user name and bare virtual key of a
//! content in one open-addressing table, so that resolving a local name (procmail user, then
//! alias, then user) is one probe, not one hash-map lookup per kind. At a million aliases the
//! lookups were the largest part of planning's time; the table is built in two halves side by
//! side.

use crate::fxhash::hash_str as hash;
use crate::snapshot::Content;

/// No entry of that kind.
const NONE: u32 = u32::MAX;

/// The entries named by one local name, as positions in the content's lists (12 bytes: one is
/// kept beside each address planned).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Named {
    alias: u32,
    user: u32,
    /// A virtual entry whose key is this bare name.
    bare: u32,
}

fn some(i: u32) -> Option<usize> {
    (i != NONE).then_some(i as usize)
}

fn position(i: usize) -> u32 {
    u32::try_from(i).expect("fewer than 2^32 entries")
}

impl Named {
    pub(super) const NOTHING: Named = Named {
        alias: NONE,
        user: NONE,
        bare: NONE,
    };

    pub(super) fn new(alias: Option<usize>, user: Option<usize>, bare: Option<usize>) -> Named {
        let at = |i: Option<usize>| i.map_or(NONE, position);
        Named {
            alias: at(alias),
            user: at(user),
            bare: at(bare),
        }
    }

    pub(super) fn alias(self) -> Option<usize> {
        some(self.alias)
    }

    pub(super) fn user(self) -> Option<usize> {
        some(self.user)
    }

    pub(super) fn bare(self) -> Option<usize> {
        some(self.bare)
    }

    /// What `self` and `later` name together; where both name an entry of one kind, `later`'s
    /// (a repeated name resolves to its last entry, as in a map collected from the list).
    pub(super) fn and(self, later: Named) -> Named {
        let pick = |a: u32, b: u32| if b == NONE { a } else { b };
        Named {
            alias: pick(self.alias, later.alias),
            user: pick(self.user, later.user),
            bare: pick(self.bare, later.bare),
        }
    }
}

/// One slot: `tag` is 32 bits of the name's hash with the low bit set (0 marks an empty slot),
/// so most probes that miss never read the name; the name is beside it, so that a hit reads
/// the slot and the name's bytes and not the entry between them.
#[derive(Clone, Copy)]
struct Slot<'a> {
    name: &'a str,
    tag: u32,
    named: Named,
}

const EMPTY: Slot<'static> = Slot {
    name: "",
    tag: 0,
    named: Named::NOTHING,
};

/// One half of the table: the names whose hash has that top bit. Linear probing, at most three
/// quarters full.
struct Shard<'a> {
    mask: usize,
    slots: Vec<Slot<'a>>,
}

pub(super) struct Names<'a> {
    shards: [Shard<'a>; 2],
}

fn tag(h: u64) -> u32 {
    (h >> 32) as u32 | 1
}

fn shard_of(h: u64) -> usize {
    (h >> 63) as usize
}

/// Every local name of `c` (alias names, user names, bare virtual keys), each with the entry
/// it names as that kind: what the table holds, and the planner's keys start from.
pub(super) fn local_names(c: &Content) -> impl Iterator<Item = (&str, Named)> {
    let aliases = c.aliases.iter().enumerate();
    let aliases = aliases.map(|(i, a)| (a.name.as_str(), Named::new(Some(i), None, None)));
    let users = c.users.iter().enumerate();
    let users = users.map(|(i, u)| (u.name.as_str(), Named::new(None, Some(i), None)));
    let bare = (c.virtuals.iter().enumerate()).filter(|(_, v)| !v.key.contains('@'));
    let bare = bare.map(|(i, v)| (v.key.as_str(), Named::new(None, None, Some(i))));
    aliases.chain(users).chain(bare)
}

impl<'a> Shard<'a> {
    /// The half of `c`'s names whose hash's top bit is `which`. Its room is counted first (the
    /// names are hashed twice, a few milliseconds), so that however the names fall between the
    /// halves each is at most three quarters full and a probe always meets an empty slot.
    fn build(c: &'a Content, which: usize) -> Shard<'a> {
        let mine = (local_names(c))
            .filter(|(name, _)| shard_of(hash(name)) == which)
            .count();
        let cap = (mine + mine / 3 + 1).next_power_of_two().max(16);
        let mut shard = Shard {
            mask: cap - 1,
            slots: vec![EMPTY; cap],
        };
        for (name, named) in local_names(c) {
            let h = hash(name);
            if shard_of(h) == which {
                shard.insert(name, h, named);
            }
        }
        shard
    }

    /// Adds what `named` names to `name`'s slot ([`Named::and`]: a later entry of the same name
    /// and kind wins).
    fn insert(&mut self, name: &'a str, h: u64, named: Named) {
        let t = tag(h);
        let mut p = h as usize & self.mask;
        loop {
            let s = &mut self.slots[p];
            if s.tag == 0 {
                *s = Slot {
                    name,
                    tag: t,
                    ..EMPTY
                };
            } else if s.tag != t || s.name != name {
                p = (p + 1) & self.mask;
                continue;
            }
            s.named = s.named.and(named);
            return;
        }
    }

    fn get(&self, name: &str, h: u64) -> Named {
        let t = tag(h);
        let mut p = h as usize & self.mask;
        loop {
            let s = &self.slots[p];
            if s.tag == 0 {
                return Named::NOTHING;
            }
            if s.tag == t && s.name == name {
                return s.named;
            }
            p = (p + 1) & self.mask;
        }
    }
}

impl<'a> Names<'a> {
    /// Indexes `c`'s local names, a half on each of two threads.
    pub(super) fn of(c: &'a Content) -> Names<'a> {
        let (a, b) = crate::par::join(|| Shard::build(c, 0), || Shard::build(c, 1));
        Names { shards: [a, b] }
    }

    /// The entries named `name` (already folded, as the content's names are).
    pub(super) fn get(&self, name: &str) -> Named {
        let h = hash(name);
        self.shards[shard_of(h)].get(name, h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::{Alias, User, VirtualEntry};

    fn content(aliases: &[&str], users: &[&str], virtuals: &[&str]) -> Content {
        let name = |n: &&str| n.to_string();
        Content {
            aliases: (aliases.iter().map(name))
                .map(|name| Alias {
                    name,
                    file: 0,
                    line: 1,
                    targets: Vec::new(),
                })
                .collect(),
            users: (users.iter().map(name))
                .map(|name| User {
                    name,
                    file: 0,
                    line: 1,
                    procmail: None,
                    forward: None,
                })
                .collect(),
            virtuals: (virtuals.iter().map(name))
                .map(|key| VirtualEntry {
                    key,
                    file: 0,
                    line: 1,
                    targets: Vec::new(),
                })
                .collect(),
            ..Content::default()
        }
    }

    fn check(c: &Content, name: &str, expected: (Option<usize>, Option<usize>, Option<usize>)) {
        let (alias, user, bare) = expected;
        let want = Named::new(alias, user, bare);
        assert_eq!(Names::of(c).get(name), want, "{name}");
    }

    #[test]
    fn one_probe_finds_every_kind_of_entry_a_name_has() {
        let c = content(
            &["bob", "list", "root"],
            &["bob", "carol"],
            &["carol", "list@example.org", "x"],
        );
        check(&c, "bob", (Some(0), Some(0), None));
        check(&c, "list", (Some(1), None, None));
        check(&c, "root", (Some(2), None, None));
        check(&c, "carol", (None, Some(1), Some(0)));
        check(&c, "x", (None, None, Some(2)));
        // A full-address virtual key is not a local name.
        check(&c, "list@example.org", (None, None, None));
        check(&c, "nobody", (None, None, None));
        check(&c, "", (None, None, None));
        check(&content(&[], &[], &[]), "bob", (None, None, None));
    }

    #[test]
    fn many_names_each_found_where_it_is_and_absent_ones_not() {
        let aliases: Vec<String> = (0..200_000).map(|i| format!("a{i:07}")).collect();
        let users: Vec<String> = (0..50_000).map(|i| format!("a{:07}", i * 3)).collect();
        let a: Vec<&str> = aliases.iter().map(String::as_str).collect();
        let u: Vec<&str> = users.iter().map(String::as_str).collect();
        let c = content(&a, &u, &[]);
        let names = Names::of(&c);
        for (i, n) in a.iter().enumerate() {
            let user = (i % 3 == 0 && i / 3 < 50_000).then_some(i / 3);
            assert_eq!(names.get(n), Named::new(Some(i), user, None), "{n}");
        }
        for i in 200_000..210_000 {
            assert_eq!(names.get(&format!("a{i:07}")), Named::NOTHING);
        }
    }

    #[test]
    fn names_that_all_fall_in_one_half_are_all_found() {
        // Half the table's room per half would not hold them (and a full table would never
        // meet the empty slot that ends a probe).
        let names: Vec<String> = (0u32..)
            .map(|i| format!("n{i}"))
            .filter(|n| shard_of(hash(n)) == 1)
            .take(1500)
            .collect();
        let a: Vec<&str> = names.iter().map(String::as_str).collect();
        let c = content(&a, &[], &[]);
        let table = Names::of(&c);
        for (i, n) in a.iter().enumerate() {
            assert_eq!(table.get(n), Named::new(Some(i), None, None), "{n}");
        }
        assert_eq!(table.get("n-absent"), Named::NOTHING);
    }

    #[test]
    fn a_repeated_name_resolves_to_its_last_entry() {
        let c = content(&["dup", "dup"], &["dup"], &[]);
        check(&c, "dup", (Some(1), Some(0), None));
    }
}
