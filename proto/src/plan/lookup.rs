//! Where the planner looks things up in a content: the served domains, the indexes of its
//! lists, and the comparisons of names and addresses those lookups use.

use std::borrow::Cow;

use rustc_hash::{FxHashMap, FxHashSet};

use super::names::Names;
use crate::addr;
use crate::snapshot::Content;

/// The served domains, for asking whether a domain is one (of every address item planned).
/// Most primaries serve a few, which are compared one by one: hashing a remote domain cost
/// more than comparing it with a few. Many are hashed.
pub(super) struct Served<'a> {
    few: Vec<&'a str>,
    pub(super) many: Option<FxHashSet<&'a str>>,
}

/// Served domains up to this many are compared one by one.
pub(super) const FEW_DOMAINS: usize = 8;

impl<'a> Served<'a> {
    pub(super) fn of(c: &'a Content) -> Self {
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
    pub(super) fn get(&self, domain: &str) -> Option<&'a str> {
        match &self.many {
            Some(set) => set.get(domain).copied(),
            None => self.few.iter().find(|&&d| d == domain).copied(),
        }
    }

    pub(super) fn contains(&self, domain: &str) -> bool {
        self.get(domain).is_some()
    }
}

/// Where each entry is in the content's lists, for planning many addresses.
pub(super) struct Maps<'a> {
    /// Alias names, user names and bare virtual keys.
    pub(super) names: Names<'a>,
    /// Virtual entries with full-address keys, by `(local, domain)`.
    pub(super) virtuals: FxHashMap<(&'a str, &'a str), usize>,
    pub(super) recipients: FxHashMap<(&'a str, &'a str), usize>,
    pub(super) includes: FxHashMap<&'a str, usize>,
}

impl<'a> Maps<'a> {
    pub(super) fn of(c: &'a Content) -> Self {
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
pub(super) fn find<T>(
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
pub(super) fn cmp_joined(s: &str, (local, domain): (&str, &str)) -> std::cmp::Ordering {
    let joined = local
        .bytes()
        .chain(std::iter::once(b'@'))
        .chain(domain.bytes());
    s.bytes().cmp(joined)
}

/// Lowercases only when needed (ASCII, the usual case, without decoding characters).
pub(super) fn lower(s: &str) -> Cow<'_, str> {
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
