//! The planner's index of local names: every alias name, user name and bare virtual key of a
//! content in one map, so that resolving a local name (procmail user, then alias, then user) is
//! one lookup, not one per kind.

use rustc_hash::FxHashMap;

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

pub(super) struct Names<'a> {
    map: FxHashMap<&'a str, Named>,
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

impl<'a> Names<'a> {
    /// Indexes `c`'s local names.
    pub(super) fn of(c: &'a Content) -> Names<'a> {
        let mut map = FxHashMap::default();
        map.reserve(c.aliases.len() + c.users.len());
        for (name, named) in local_names(c) {
            map.entry(name)
                .and_modify(|n: &mut Named| *n = n.and(named))
                .or_insert(named);
        }
        Names { map }
    }

    /// The entries named `name` (already folded, as the content's names are).
    pub(super) fn get(&self, name: &str) -> Named {
        self.map.get(name).copied().unwrap_or(Named::NOTHING)
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
    fn one_lookup_finds_every_kind_of_entry_a_name_has() {
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
    fn names_alike_in_their_first_sixteen_bytes_are_told_apart() {
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
    fn a_repeated_name_resolves_to_its_last_entry() {
        let c = content(&["dup", "dup"], &["dup"], &[]);
        check(&c, "dup", (Some(1), Some(0), None));
    }
}
