//! What a content must be before anything is done with it: no string past [`MAX_STRING`],
//! names and keys a map can carry, valid addresses, file indices in range, no duplicate keys.

use std::collections::HashSet;

use super::{Alias, Content, Include, Kind, Recipient, Target, User, VirtualEntry};
use crate::addr;

/// The longest string a content may hold (a name, target, path or message), in bytes: far past
/// any real one (an address is at most 254), and checked before anything costly is done with a
/// content received.
pub const MAX_STRING: usize = 64 * 1024;

impl Content {
    /// The first string longer than [`MAX_STRING`], said in a few words, if there is one.
    pub fn overlong(&self) -> Option<String> {
        let long = |s: &str| s.len() > MAX_STRING;
        let say = |what: &str, s: &str| {
            Some(format!(
                "{what} of {} bytes (at most {MAX_STRING}), starting {:?}",
                s.len(),
                s.chars().take(40).collect::<String>()
            ))
        };
        let targets = |what: &str, ts: &[Target]| {
            ts.iter()
                .find(|t| long(&t.value))
                .and_then(|t| say(what, &t.value))
        };
        let strings =
            (self.domains.iter().map(|d| ("a domain", d.as_str())))
                .chain(self.files.iter().map(|f| ("a file name", f.as_str())))
                .chain(
                    self.aliases
                        .iter()
                        .map(|a| ("an alias name", a.name.as_str())),
                )
                .chain(
                    self.includes
                        .iter()
                        .map(|i| ("an include path", i.path.as_str())),
                )
                .chain(
                    (self.includes.iter())
                        .filter_map(|i| Some(("an include error", i.error.as_deref()?))),
                )
                .chain(
                    self.virtuals
                        .iter()
                        .map(|v| ("a virtual key", v.key.as_str())),
                )
                .chain(
                    self.recipients
                        .iter()
                        .map(|r| ("a recipient", r.address.as_str())),
                )
                .chain(self.users.iter().map(|u| ("a user name", u.name.as_str())))
                .chain((self.users.iter()).filter_map(|u| {
                    Some(("a .forward error", u.forward.as_ref()?.error.as_deref()?))
                }))
                .chain(
                    self.diagnostics
                        .iter()
                        .map(|d| ("a diagnostic's file", d.file.as_str())),
                )
                .chain(
                    self.diagnostics
                        .iter()
                        .map(|d| ("a diagnostic", d.message.as_str())),
                );
        for (what, s) in strings {
            if long(s) {
                return say(what, s);
            }
        }
        (self
            .aliases
            .iter()
            .find_map(|a| targets("an alias target", &a.targets)))
        .or_else(|| {
            self.includes
                .iter()
                .find_map(|i| targets("an include target", &i.targets))
        })
        .or_else(|| {
            self.virtuals
                .iter()
                .find_map(|v| targets("a virtual target", &v.targets))
        })
        .or_else(|| {
            (self.users.iter())
                .find_map(|u| targets("a .forward target", &u.forward.as_ref()?.targets))
        })
    }
}

/// Finds repeated keys in one list, in order: by comparing neighbours when the list is sorted
/// (normalized content, the usual case: no hashing at all), else with a set.
struct Dups<'a> {
    sorted: bool,
    prev: Option<&'a str>,
    seen: HashSet<&'a str>,
}

impl<'a> Dups<'a> {
    fn new(keys: impl Iterator<Item = &'a str> + Clone) -> Self {
        let mut prev: Option<&str> = None;
        let sorted = keys.clone().all(|k| {
            let ok = prev.is_none_or(|p| p <= k);
            prev = Some(k);
            ok
        });
        Dups {
            sorted,
            prev: None,
            seen: HashSet::new(),
        }
    }

    /// Whether `key` came before (call once per item, in list order).
    fn repeated(&mut self, key: &'a str) -> bool {
        if self.sorted {
            let again = self.prev == Some(key);
            self.prev = Some(key);
            again
        } else {
            !self.seen.insert(key)
        }
    }
}

/// Why a content is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid snapshot content: {}", .problems.join("; "))]
pub struct InvalidContent {
    /// Every problem found, each naming the entry.
    pub problems: Vec<String>,
}

impl Content {
    /// Checks everything the server will rely on: names and keys that can be written to a map,
    /// addresses of kind `address` valid, file indices in range, no duplicate keys.
    ///
    /// Every problem is listed (up to a bound), each naming the entry.
    pub fn validate(&self) -> Result<(), InvalidContent> {
        let mut p = Problems::default();
        for d in &self.domains {
            if !addr::valid_domain(d) {
                p.push(format!("domain {d:?} is not a valid lowercase domain"));
            }
        }
        dups(
            &mut p,
            "alias",
            self.aliases.iter().map(|a| a.name.as_str()),
        );
        dups(
            &mut p,
            "include",
            self.includes.iter().map(|i| i.path.as_str()),
        );
        dups(
            &mut p,
            "virtual key",
            self.virtuals.iter().map(|v| v.key.as_str()),
        );
        dups(
            &mut p,
            "recipient",
            self.recipients.iter().map(|r| r.address.as_str()),
        );
        dups(&mut p, "user", self.users.iter().map(|u| u.name.as_str()));
        let all = Entries {
            aliases: &self.aliases,
            includes: &self.includes,
            virtuals: &self.virtuals,
            recipients: &self.recipients,
            users: &self.users,
        };
        all.check(&mut p, self.files.len());
        p.finish()
    }

    /// What can be wrong with `entries` by themselves (names, keys, targets, file indices),
    /// against this content's file table: [`Content::validate`] without the checks across
    /// entries, for a delta's upserted ones (`delta::validate_changed`).
    pub(crate) fn validate_entries(&self, entries: &Entries<'_>) -> Result<(), InvalidContent> {
        let mut p = Problems::default();
        entries.check(&mut p, self.files.len());
        p.finish()
    }
}

/// Reports each key of a list that came before in it, as `{what} {key:?} is duplicated`.
fn dups<'a>(p: &mut Problems, what: &str, keys: impl Iterator<Item = &'a str> + Clone) {
    let mut seen = Dups::new(keys.clone());
    for k in keys {
        if seen.repeated(k) {
            p.push(format!("{what} {k:?} is duplicated"));
        }
    }
}

/// Collects validation problems, keeping the first few and counting the rest.
#[derive(Default)]
struct Problems {
    list: Vec<String>,
    more: usize,
}

impl Problems {
    const KEEP: usize = 20;

    fn push(&mut self, s: String) {
        if self.list.len() < Self::KEEP {
            self.list.push(s);
        } else {
            self.more += 1;
        }
    }

    fn finish(mut self) -> Result<(), InvalidContent> {
        if self.list.is_empty() {
            return Ok(());
        }
        if self.more > 0 {
            self.list.push(format!("and {} more", self.more));
        }
        Err(InvalidContent {
            problems: self.list,
        })
    }
}

/// Entries of each keyed list to check one by one.
pub(crate) struct Entries<'a> {
    pub(crate) aliases: &'a [Alias],
    pub(crate) includes: &'a [Include],
    pub(crate) virtuals: &'a [VirtualEntry],
    pub(crate) recipients: &'a [Recipient],
    pub(crate) users: &'a [User],
}

impl Entries<'_> {
    /// What can be wrong with an entry by itself: its name or key, its targets, its file indices
    /// (below `files`).
    fn check(&self, p: &mut Problems, files: usize) {
        let nfiles = files as u32;
        let check_targets = |p: &mut Problems, what: &dyn Fn() -> String, ts: &[Target]| {
            for t in ts {
                if t.kind == Kind::Address && !addr::valid_address(&t.value) {
                    p.push(format!(
                        "{}: target {:?} is not a valid address",
                        what(),
                        t.value
                    ));
                }
                // A local name can become a punt unit `name@domain` in a map.
                if t.kind == Kind::Local && !addr::valid_local_part(&t.value) {
                    p.push(format!(
                        "{}: target {:?} is not a valid local name",
                        what(),
                        t.value
                    ));
                }
            }
        };
        let check_file = |p: &mut Problems, what: &dyn Fn() -> String, f: u32| {
            if f >= nfiles {
                p.push(format!("{}: file index {f} out of range", what()));
            }
        };
        for a in self.aliases {
            let what = || format!("alias {:?}", a.name);
            if !addr::valid_local_part(&a.name) || !addr::is_folded(&a.name) {
                p.push(format!("{} is not a valid lowercase name", what()));
            }
            check_file(p, &what, a.file);
            check_targets(p, &what, &a.targets);
        }
        for i in self.includes {
            let what = || format!("include {:?}", i.path);
            check_file(p, &what, i.file);
            check_targets(p, &what, &i.targets);
        }
        for v in self.virtuals {
            let what = || format!("virtual key {:?}", v.key);
            let ok = if v.key.contains('@') {
                addr::valid_address(&v.key)
            } else {
                addr::valid_local_part(&v.key)
            };
            if !ok || !addr::is_folded(&v.key) {
                p.push(format!("{} is not a valid lowercase address", what()));
            }
            check_file(p, &what, v.file);
            check_targets(p, &what, &v.targets);
        }
        for r in self.recipients {
            let what = || format!("recipient {:?}", r.address);
            if !addr::valid_address(&r.address) || !addr::is_folded(&r.address) {
                p.push(format!("{} is not a valid lowercase address", what()));
            }
            check_file(p, &what, r.file);
        }
        for u in self.users {
            let what = || format!("user {:?}", u.name);
            if !addr::valid_local_part(&u.name) || !addr::is_folded(&u.name) {
                p.push(format!("{} is not a valid lowercase name", what()));
            }
            check_file(p, &what, u.file);
            if let Some(f) = u.procmail {
                check_file(p, &what, f);
            }
            if let Some(fw) = &u.forward {
                check_file(p, &what, fw.file);
                check_targets(p, &what, &fw.targets);
            }
        }
    }
}
