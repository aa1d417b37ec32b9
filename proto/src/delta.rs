//! Incremental snapshots: the changes from one normalized [`Content`] to another.
//!
//! An agent that knows which hash a receiver holds sends a [`Delta`] against it instead of the
//! whole content (`POST /v1/deltas`). The receiver applies it to the content it holds and must
//! get exactly the content, and so the hash, that the full snapshot would have given: [`apply`]
//! of [`diff`] is the identity on normalized content (property-tested below), and the receiver
//! checks the resulting hash against the one the delta claims before it does anything else.
//!
//! Keyed lists (aliases, includes, virtual entries, recipients, users) travel as removed keys and
//! upserted entries; the small lists (domains, file table, diagnostics) are sent whole when they
//! changed. File indices in upserted entries refer to the new file table; when the file table
//! changes, every entry whose index moved is an upsert, so a delta is never wrong, only larger.

use serde::{Deserialize, Serialize};

use crate::snapshot::{
    Alias, Content, Diagnostic, Entries, Include, InvalidContent, Recipient, User, VirtualEntry,
};

/// A delta as pushed by an agent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delta {
    /// [`crate::snapshot::FORMAT`].
    pub format: u32,
    /// The agent's id.
    pub agent: String,
    /// The version the result has.
    pub version: u64,
    /// The hash of the content the changes apply to.
    pub base_hash: String,
    /// The hash of the result.
    pub hash: String,
    /// When the agent collected the new content, seconds since the Unix epoch.
    pub created_at: u64,
    /// The changes.
    pub changes: Changes,
}

impl Delta {
    /// The snapshot this delta gives once its changes are applied: `content`, with the
    /// delta's format, agent, version, hash and time.
    pub fn result(&self, content: crate::Content) -> crate::Snapshot {
        crate::Snapshot {
            format: self.format,
            agent: self.agent.clone(),
            version: self.version,
            hash: self.hash.clone(),
            created_at: self.created_at,
            content,
        }
    }
}

/// Changes to one keyed list.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(bound(deserialize = "T: Deserialize<'de>"))]
pub struct Section<T> {
    /// Keys of the entries that are gone, sorted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
    /// Entries that are new or changed, sorted by key.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub upsert: Vec<T>,
}

impl<T> Default for Section<T> {
    fn default() -> Self {
        Section {
            remove: Vec::new(),
            upsert: Vec::new(),
        }
    }
}

impl<T> Section<T> {
    fn is_empty(&self) -> bool {
        self.remove.is_empty() && self.upsert.is_empty()
    }
}

/// Everything that differs between two contents.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Changes {
    /// The new domains, when they changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domains: Option<Vec<String>>,
    /// The new file table, when it changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files: Option<Vec<String>>,
    /// Aliases, by name.
    #[serde(default, skip_serializing_if = "Section::is_empty")]
    pub aliases: Section<Alias>,
    /// Include files, by path.
    #[serde(default, skip_serializing_if = "Section::is_empty")]
    pub includes: Section<Include>,
    /// Virtual entries, by key.
    #[serde(default, rename = "virtual", skip_serializing_if = "Section::is_empty")]
    pub virtuals: Section<VirtualEntry>,
    /// Recipient-list entries, by address.
    #[serde(default, skip_serializing_if = "Section::is_empty")]
    pub recipients: Section<Recipient>,
    /// Local users, by name.
    #[serde(default, skip_serializing_if = "Section::is_empty")]
    pub users: Section<User>,
    /// The new diagnostics, when they changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diagnostics: Option<Vec<Diagnostic>>,
}

impl Changes {
    /// How many entries the changes carry (removed keys, upserts and whole lists' items).
    pub fn len(&self) -> usize {
        self.domains.as_ref().map_or(0, Vec::len)
            + self.files.as_ref().map_or(0, Vec::len)
            + self.diagnostics.as_ref().map_or(0, Vec::len)
            + self.aliases.remove.len()
            + self.aliases.upsert.len()
            + self.includes.remove.len()
            + self.includes.upsert.len()
            + self.virtuals.remove.len()
            + self.virtuals.upsert.len()
            + self.recipients.remove.len()
            + self.recipients.upsert.len()
            + self.users.remove.len()
            + self.users.upsert.len()
    }

    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.domains.is_none()
            && self.files.is_none()
            && self.diagnostics.is_none()
            && self.aliases.is_empty()
            && self.includes.is_empty()
            && self.virtuals.is_empty()
            && self.recipients.is_empty()
            && self.users.is_empty()
    }
}

/// Why a delta does not apply to the content it names.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum DeltaError {
    /// A list is not sorted by key, or has a key twice.
    #[error("{0}: keys not sorted and unique")]
    Unsorted(&'static str),
    /// A key is removed that the base does not have.
    #[error("{what}: cannot remove {key:?}, the base does not have it")]
    Missing {
        /// Which list.
        what: &'static str,
        /// The key.
        key: String,
    },
    /// A key is both removed and upserted.
    #[error("{what}: {key:?} is both removed and upserted")]
    Both {
        /// Which list.
        what: &'static str,
        /// The key.
        key: String,
    },
}

/// An entry of a keyed list.
trait Keyed: Clone + PartialEq {
    const WHAT: &'static str;
    fn key(&self) -> &str;
}

macro_rules! keyed {
    ($t:ty, $what:literal, $field:ident) => {
        impl Keyed for $t {
            const WHAT: &'static str = $what;
            fn key(&self) -> &str {
                &self.$field
            }
        }
    };
}
keyed!(Alias, "aliases", name);
keyed!(Include, "includes", path);
keyed!(VirtualEntry, "virtual", key);
keyed!(Recipient, "recipients", address);
keyed!(User, "users", name);

/// The changes that turn `old` into `new`. Both must be normalized (sorted, unique keys).
pub fn diff(old: &Content, new: &Content) -> Changes {
    Changes {
        domains: (old.domains != new.domains).then(|| new.domains.clone()),
        files: (old.files != new.files).then(|| new.files.clone()),
        aliases: diff_section(&old.aliases, &new.aliases),
        includes: diff_section(&old.includes, &new.includes),
        virtuals: diff_section(&old.virtuals, &new.virtuals),
        recipients: diff_section(&old.recipients, &new.recipients),
        users: diff_section(&old.users, &new.users),
        diagnostics: (old.diagnostics != new.diagnostics).then(|| new.diagnostics.clone()),
    }
}

fn diff_section<T: Keyed>(old: &[T], new: &[T]) -> Section<T> {
    let mut s = Section::default();
    let (mut i, mut j) = (0, 0);
    while i < old.len() || j < new.len() {
        match (old.get(i), new.get(j)) {
            (Some(o), Some(n)) => match o.key().cmp(n.key()) {
                std::cmp::Ordering::Less => {
                    s.remove.push(o.key().to_string());
                    i += 1;
                }
                std::cmp::Ordering::Greater => {
                    s.upsert.push(n.clone());
                    j += 1;
                }
                std::cmp::Ordering::Equal => {
                    if o != n {
                        s.upsert.push(n.clone());
                    }
                    i += 1;
                    j += 1;
                }
            },
            (Some(o), None) => {
                s.remove.push(o.key().to_string());
                i += 1;
            }
            (None, Some(n)) => {
                s.upsert.push(n.clone());
                j += 1;
            }
            (None, None) => break,
        }
    }
    s
}

/// `base` with `changes` applied. `base` must be normalized; the result then is too. Fails if
/// the changes are not sorted or name keys the base does not have.
pub fn apply(base: &Content, changes: &Changes) -> Result<Content, DeltaError> {
    apply_in(base, changes, crate::par::LEAST_ITEMS)
}

/// [`apply`], copying the aliases in pieces side by side when there are at least `parallel`.
fn apply_in(base: &Content, changes: &Changes, parallel: usize) -> Result<Content, DeltaError> {
    Ok(Content {
        domains: changes
            .domains
            .clone()
            .unwrap_or_else(|| base.domains.clone()),
        files: changes.files.clone().unwrap_or_else(|| base.files.clone()),
        aliases: merge_pieces(&base.aliases, &changes.aliases, parallel)?,
        includes: merge(&base.includes, &changes.includes, Clone::clone)?,
        virtuals: merge(&base.virtuals, &changes.virtuals, Clone::clone)?,
        recipients: merge(&base.recipients, &changes.recipients, Clone::clone)?,
        users: merge(&base.users, &changes.users, Clone::clone)?,
        diagnostics: changes
            .diagnostics
            .clone()
            .unwrap_or_else(|| base.diagnostics.clone()),
    })
}

/// Like [`apply`], consuming `base`: its entries stay where they are or move into the result
/// instead of being copied (the agent's and the receiver's patch of a spare content, replaying a
/// chain of stored deltas at start).
pub fn apply_owned(base: Content, changes: &Changes) -> Result<Content, DeltaError> {
    apply_owned_in(base, changes, IN_PLACE_MOVES)
}

/// A list whose changes remove and add at most this many keys is patched in place: an entry
/// that changed is replaced where it is, and each key removed or added shifts the entries after
/// it once. More than that, and the list is merged into a new one (one pass, one copy).
const IN_PLACE_MOVES: usize = 8;

/// [`apply_owned`], patching a list in place when it removes and adds at most `moves` keys.
fn apply_owned_in(base: Content, changes: &Changes, moves: usize) -> Result<Content, DeltaError> {
    Ok(Content {
        domains: changes.domains.clone().unwrap_or(base.domains),
        files: changes.files.clone().unwrap_or(base.files),
        aliases: patch(base.aliases, &changes.aliases, moves)?,
        includes: patch(base.includes, &changes.includes, moves)?,
        virtuals: patch(base.virtuals, &changes.virtuals, moves)?,
        recipients: patch(base.recipients, &changes.recipients, moves)?,
        users: patch(base.users, &changes.users, moves)?,
        diagnostics: changes.diagnostics.clone().unwrap_or(base.diagnostics),
    })
}

/// The sorted `base` with `s` applied: in place when it removes and adds at most `moves` keys,
/// else by [`merge_sorted`]. Refuses what the merge refuses, the same way: the first removed key
/// (in key order) that the base lacks or that is also upserted.
fn patch<T: Keyed>(mut base: Vec<T>, s: &Section<T>, moves: usize) -> Result<Vec<T>, DeltaError> {
    sorted(s)?;
    if s.remove.is_empty() && s.upsert.is_empty() {
        return Ok(base);
    }
    let find = |base: &[T], key: &str| base.binary_search_by(|e| e.key().cmp(key));
    let mut removed = Vec::with_capacity(s.remove.len());
    for key in &s.remove {
        let error = match find(&base, key) {
            Err(_) => DeltaError::Missing {
                what: T::WHAT,
                key: key.clone(),
            },
            Ok(_) if s.upsert.binary_search_by(|u| u.key().cmp(key)).is_ok() => DeltaError::Both {
                what: T::WHAT,
                key: key.clone(),
            },
            Ok(at) => {
                removed.push(at);
                continue;
            }
        };
        return Err(error);
    }
    let added = (s.upsert.iter())
        .filter(|u| find(&base, u.key()).is_err())
        .count();
    if removed.len() + added > moves {
        let capacity = base.len() + added;
        return merge_sorted(base.into_iter(), &s.remove, &s.upsert, |e| e, capacity);
    }
    // From the last removed key back, so that the positions found before stay right.
    for &at in removed.iter().rev() {
        base.remove(at);
    }
    for u in &s.upsert {
        match find(&base, u.key()) {
            Ok(at) => base[at] = u.clone(),
            Err(at) => base.insert(at, u.clone()),
        }
    }
    Ok(base)
}

/// Merges the sorted `base` (borrowed or owned entries; `own` makes an entry of one) with `s`.
fn merge<T: Keyed, X: std::borrow::Borrow<T>>(
    base: impl IntoIterator<Item = X, IntoIter: ExactSizeIterator>,
    s: &Section<T>,
    own: impl Fn(X) -> T,
) -> Result<Vec<T>, DeltaError> {
    let base = base.into_iter();
    sorted(s)?;
    let capacity = base.len() + s.upsert.len();
    merge_sorted(base, &s.remove, &s.upsert, own, capacity)
}

/// Refuses a section whose keys are not strictly ascending.
fn sorted<T: Keyed>(s: &Section<T>) -> Result<(), DeltaError> {
    if !strictly_sorted(s.remove.iter().map(String::as_str))
        || !strictly_sorted(s.upsert.iter().map(Keyed::key))
    {
        return Err(DeltaError::Unsorted(T::WHAT));
    }
    Ok(())
}

/// [`merge`] of a borrowed `base` of at least `parallel` entries: it is cut into
/// [pieces](crate::par::pieces), and each, with the changes that fall between its first key and
/// the next piece's, is copied side by side.
fn merge_pieces<T: Keyed + Send + Sync>(
    base: &[T],
    s: &Section<T>,
    parallel: usize,
) -> Result<Vec<T>, DeltaError> {
    use rayon::prelude::*;
    let pieces = crate::par::pieces(base.len(), parallel.max(1));
    if base.len() < parallel.max(2) || pieces == 1 {
        return merge(base, s, Clone::clone);
    }
    sorted(s)?;
    // Each piece's range of `base`, and of the removals and upserts, from where its first key
    // falls in them (the first piece takes every change below its first key).
    let cuts: Vec<_> = crate::par::cuts(base.len(), pieces).collect();
    let from = |at: usize| -> (usize, usize) {
        if at == 0 {
            return (0, 0);
        }
        let key = base[at].key();
        let r = s.remove.partition_point(|k| k.as_str() < key);
        (r, s.upsert.partition_point(|e| e.key() < key))
    };
    let starts: Vec<_> = cuts.iter().map(|c| from(c.start)).collect();
    let ends = starts
        .iter()
        .skip(1)
        .copied()
        .chain([(s.remove.len(), s.upsert.len())]);
    let jobs: Vec<_> = cuts
        .into_iter()
        .zip(starts.iter().copied().zip(ends))
        .collect();
    let capacity = base.len() + s.upsert.len();
    let merged: Vec<Result<Vec<T>, DeltaError>> = (jobs.into_par_iter())
        .map(|(b, ((r0, u0), (r1, u1)))| {
            let room = if b.start == 0 { capacity } else { 0 };
            let (remove, upsert) = (&s.remove[r0..r1], &s.upsert[u0..u1]);
            merge_sorted(base[b].iter(), remove, upsert, Clone::clone, room)
        })
        .collect();
    let mut out: Option<Vec<T>> = None;
    for piece in merged {
        let piece = piece?;
        match &mut out {
            None => out = Some(piece),
            Some(v) => v.extend(piece),
        }
    }
    Ok(out.unwrap_or_default())
}

/// The merge proper, of changes already known to be sorted, into a vector of `capacity`.
fn merge_sorted<T: Keyed, X: std::borrow::Borrow<T>>(
    base: impl Iterator<Item = X>,
    remove: &[String],
    upsert: &[T],
    own: impl Fn(X) -> T,
    capacity: usize,
) -> Result<Vec<T>, DeltaError> {
    let mut out = Vec::with_capacity(capacity);
    if remove.is_empty() && upsert.is_empty() {
        out.extend(base.map(own));
        return Ok(out);
    }
    let (mut removes, mut upserts) = (remove.iter().peekable(), upsert.iter().peekable());
    for item in base {
        let key = item.borrow().key();
        while let Some(u) = upserts.next_if(|u| u.key() < key) {
            out.push(u.clone());
        }
        if let Some(r) = removes.next_if(|r| r.as_str() < key) {
            return Err(DeltaError::Missing {
                what: T::WHAT,
                key: r.clone(),
            });
        }
        let removed = removes.next_if(|r| r.as_str() == key).is_some();
        let upserted = upserts.next_if(|u| u.key() == key);
        match (removed, upserted) {
            (true, Some(_)) => {
                return Err(DeltaError::Both {
                    what: T::WHAT,
                    key: key.to_string(),
                });
            }
            (true, None) => {}
            (false, Some(u)) => out.push(u.clone()),
            (false, None) => out.push(own(item)),
        }
    }
    if let Some(r) = removes.next() {
        return Err(DeltaError::Missing {
            what: T::WHAT,
            key: r.clone(),
        });
    }
    out.extend(upserts.cloned());
    Ok(out)
}

fn strictly_sorted<'a>(keys: impl Iterator<Item = &'a str>) -> bool {
    let mut prev: Option<&str> = None;
    for k in keys {
        if prev.is_some_and(|p| p >= k) {
            return false;
        }
        prev = Some(k);
    }
    true
}

/// [`Content::validate`] for `content`, the result of `changes` applied to validated content:
/// while the domains and the file table stay, the entries the delta did not upsert are as
/// valid as they were, and [`apply`] keeps keys unique, so only the upserted entries are
/// looked at (a changed line in a million aliases checks one alias, not a million).
pub fn validate_changed(content: &Content, changes: &Changes) -> Result<(), InvalidContent> {
    if changes.domains.is_some() || changes.files.is_some() {
        return content.validate();
    }
    content.validate_entries(&Entries {
        aliases: &changes.aliases.upsert,
        includes: &changes.includes.upsert,
        virtuals: &changes.virtuals.upsert,
        recipients: &changes.recipients.upsert,
        users: &changes.users.upsert,
    })
}

#[cfg(test)]
mod tests;
