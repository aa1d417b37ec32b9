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
mod tests;
