//! The planner's index of local names: every alias name, user name and bare virtual key of a
//! content in one open-addressing table, so that resolving a local name (procmail user, then
//! alias, then user) is one probe, not one hash-map lookup per kind. At a million aliases the
//! lookups were the largest part of planning's time; the table is built in two halves side by
//! side.

use super::hash_name as hash;
use crate::snapshot::Content;

/// No entry of that kind.
const NONE: u32 = u32::MAX;
/// In [`Named::user`]: the user has a `~/.procmailrc`.
const PROCMAIL: u32 = 1 << 31;

/// The entries named by one local name, as positions in the content's lists (12 bytes: one is
/// kept beside each address planned).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Named {
    alias: u32,
    /// The user's position, with [`PROCMAIL`] set when the user has a `~/.procmailrc`: the
    /// first thing planning asks of a name, answered without reading the user's entry.
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
        let user = user.map_or(NONE, |i| {
            let i = position(i);
            assert!(i < PROCMAIL - 1, "fewer than 2^31 - 1 users");
            i
        });
        Named {
            alias: at(alias),
            user,
            bare: at(bare),
        }
    }

    /// `self`, marked as naming a user with a `~/.procmailrc` when `procmail` (and it names a
    /// user).
    pub(super) fn procmail(self, procmail: bool) -> Named {
        let user = if procmail && self.user != NONE {
            self.user | PROCMAIL
        } else {
            self.user
        };
        Named { user, ..self }
    }

    /// Whether the user named has a `~/.procmailrc`.
    pub(super) fn has_procmail(self) -> bool {
        self.user != NONE && self.user & PROCMAIL != 0
    }

    pub(super) fn alias(self) -> Option<usize> {
        some(self.alias)
    }

    pub(super) fn user(self) -> Option<usize> {
        some(self.user).map(|i| i & !(PROCMAIL as usize))
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

/// One slot, 32 bytes: `tag` is 24 bits of the name's hash and, in its low byte, the name's
/// length plus one (at most 255; 0 marks an empty slot); `head` is the name's first 16 bytes,
/// zero-padded. A name of up to 16 bytes is compared in the slot alone; a longer one is then
/// compared with the entry's own name. Most names are short, so a hit costs one read of the
/// table, not a second one of the name's bytes elsewhere in memory.
#[derive(Clone, Copy)]
struct Slot {
    tag: u32,
    named: Named,
    head: [u8; HEAD],
}

/// Bytes of a name kept in its slot.
const HEAD: usize = 16;

const EMPTY: Slot = Slot {
    tag: 0,
    named: Named::NOTHING,
    head: [0; HEAD],
};

/// One half of the table: the names whose hash has that top bit. Linear probing, at most three
/// quarters full.
struct Shard {
    mask: usize,
    slots: Vec<Slot>,
}

pub(super) struct Names<'a> {
    c: &'a Content,
    shards: [Shard; 2],
}

/// A name as a probe sees it: its hash, tag and head.
struct Probe<'n> {
    name: &'n str,
    h: u64,
    tag: u32,
    head: [u8; HEAD],
}

impl<'n> Probe<'n> {
    fn of(name: &'n str) -> Probe<'n> {
        let h = hash(name);
        let len = name.len().min(254) as u32 + 1;
        let mut head = [0; HEAD];
        let n = name.len().min(HEAD);
        head[..n].copy_from_slice(&name.as_bytes()[..n]);
        Probe {
            name,
            h,
            tag: (h >> 32) as u32 & !0xff | len,
            head,
        }
    }

    /// Whether `s` holds this name; `c` gives the names longer than a head.
    fn is_in(&self, s: &Slot, c: &Content) -> bool {
        s.tag == self.tag
            && s.head == self.head
            && (self.name.len() <= HEAD || name_of(c, s.named) == self.name)
    }
}

/// The name of the entries `named` names (they all have that name).
fn name_of(c: &Content, named: Named) -> &str {
    if let Some(i) = named.alias() {
        &c.aliases[i].name
    } else if let Some(i) = named.user() {
        &c.users[i].name
    } else {
        named.bare().map_or("", |i| &c.virtuals[i].key)
    }
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
    let users = users.map(|(i, u)| {
        let named = Named::new(None, Some(i), None).procmail(u.procmail.is_some());
        (u.name.as_str(), named)
    });
    let bare = (c.virtuals.iter().enumerate()).filter(|(_, v)| !v.key.contains('@'));
    let bare = bare.map(|(i, v)| (v.key.as_str(), Named::new(None, None, Some(i))));
    aliases.chain(users).chain(bare)
}

impl Shard {
    /// The half of `c`'s names whose hash's top bit is `which`. They are gathered first, so
    /// that however the names fall between the halves each is at most three quarters full and
    /// a probe always meets an empty slot.
    fn build(c: &Content, which: usize) -> Shard {
        let mine: Vec<(Probe<'_>, Named)> = local_names(c)
            .map(|(name, named)| (Probe::of(name), named))
            .filter(|(p, _)| shard_of(p.h) == which)
            .collect();
        let cap = (mine.len() + mine.len() / 3 + 1)
            .next_power_of_two()
            .max(16);
        let mut shard = Shard {
            mask: cap - 1,
            slots: vec![EMPTY; cap],
        };
        for (p, named) in &mine {
            shard.insert(c, p, *named);
        }
        shard
    }

    /// Adds what `named` names to `p`'s slot ([`Named::and`]: a later entry of the same name
    /// and kind wins).
    fn insert(&mut self, c: &Content, p: &Probe<'_>, named: Named) {
        let mut at = p.h as usize & self.mask;
        loop {
            let s = &mut self.slots[at];
            if s.tag == 0 {
                *s = Slot {
                    tag: p.tag,
                    head: p.head,
                    ..EMPTY
                };
            } else if !p.is_in(s, c) {
                at = (at + 1) & self.mask;
                continue;
            }
            s.named = s.named.and(named);
            return;
        }
    }

    fn get(&self, c: &Content, p: &Probe<'_>) -> Named {
        let mut at = p.h as usize & self.mask;
        loop {
            let s = &self.slots[at];
            if s.tag == 0 {
                return Named::NOTHING;
            }
            if p.is_in(s, c) {
                return s.named;
            }
            at = (at + 1) & self.mask;
        }
    }
}

impl<'a> Names<'a> {
    /// Indexes `c`'s local names, a half on each of two threads.
    pub(super) fn of(c: &'a Content) -> Names<'a> {
        let (a, b) = crate::par::join(|| Shard::build(c, 0), || Shard::build(c, 1));
        Names { c, shards: [a, b] }
    }

    /// The entries named `name` (already folded, as the content's names are).
    pub(super) fn get(&self, name: &str) -> Named {
        let p = Probe::of(name);
        self.shards[shard_of(p.h)].get(self.c, &p)
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
    fn names_alike_in_their_first_sixteen_bytes_are_told_apart() {
        // Each pair shares a head; long names are compared with their entry's name.
        let long = "x".repeat(300);
        let longer = "x".repeat(301);
        let c = content(
            &[
                "abcdefghijklmnop",
                "abcdefghijklmnopq",
                "abcdefghijklmnopr",
                &long,
            ],
            &["abcdefghijklmnopqrst", "abcdefghijklmnopq"],
            &["abcdefghijklmno", &longer],
        );
        check(&c, "abcdefghijklmnop", (Some(0), None, None));
        check(&c, "abcdefghijklmnopq", (Some(1), Some(1), None));
        check(&c, "abcdefghijklmnopr", (Some(2), None, None));
        check(&c, "abcdefghijklmnopqrst", (None, Some(0), None));
        check(&c, "abcdefghijklmno", (None, None, Some(0)));
        check(&c, &long, (Some(3), None, None));
        check(&c, &longer, (None, None, Some(1)));
        check(&c, "abcdefghijklmnops", (None, None, None));
        check(&c, "abcdefghijklmnopqrsu", (None, None, None));
        check(&c, &"x".repeat(299), (None, None, None));
        check(&c, &"x".repeat(302), (None, None, None));
        check(&c, "abcdefghijklmno\0", (None, None, None));
    }

    #[test]
    fn a_long_name_whose_tag_and_head_match_another_is_not_taken_for_it() {
        // Two 21-byte names with one head, in one half, with equal tags and the same first slot
        // in a table of 16 (found among some tens of thousands): only the comparison with the
        // entry's own name tells them apart.
        let mut seen = std::collections::HashMap::new();
        let (a, b) = (0u32..)
            .map(|i| format!("abcdefghijklmnop{i:05x}"))
            .find_map(|n| {
                let p = Probe::of(&n);
                let key = (p.tag, shard_of(p.h), p.h & 15);
                seen.insert(key, n.clone()).map(|first| (first, n))
            })
            .expect("a collision");
        let c = content(&[&a], &[], &[]);
        check(&c, &a, (Some(0), None, None));
        check(&c, &b, (None, None, None));
        let c = content(&[&a, &b], &[], &[]);
        check(&c, &a, (Some(0), None, None));
        check(&c, &b, (Some(1), None, None));
    }

    #[test]
    fn a_repeated_name_resolves_to_its_last_entry() {
        let c = content(&["dup", "dup"], &["dup"], &[]);
        check(&c, "dup", (Some(1), Some(0), None));
    }
}
