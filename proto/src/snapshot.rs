//! The snapshot model: what the agent read on the primary, and its canonical SHA-256 hash.
//!
//! [`Content`] is the parsed state of every alias source, with origins (`file:line`) kept so that
//! a plan can say why it punts. The hash is defined here once and used by both sides: it covers a
//! canonical, length-prefixed binary encoding of the *normalized* content (every list sorted, file
//! table sorted), so the order in which entries were read never changes it, while any change of
//! content does. Version, agent and timestamps are deliberately outside the hash.
//! This module holds no I/O and does not plan; see `plan`.

use serde::{Deserialize, Serialize};

/// Wire format version of [`Snapshot`] and of the canonical encoding.
pub const FORMAT: u32 = 1;

/// What kind of thing one item of an alias value is (aliases(5), DESIGN section 4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// `user@domain`, validated and with the domain lowercased.
    Address,
    /// A bare local name, looked up again as an alias and then as a user.
    Local,
    /// `|command`: delivery to a program.
    Pipe,
    /// `/path` or `~/path`: delivery to a file or directory.
    File,
    /// `:include:/path`: more items from a list file.
    Include,
    /// `\user`: mailbox delivery without further alias expansion.
    Backslash,
    /// `:fail:`, `:defer:`, `:blackhole:`, `:unknown:`, `error:` and the empty `""`.
    Special,
    /// Anything else: not understood, or flagged as read differently by the MTAs.
    Invalid,
}

impl Kind {
    /// Every kind, in the order of their tags.
    const ALL: [Kind; 8] = [
        Kind::Address,
        Kind::Local,
        Kind::Pipe,
        Kind::File,
        Kind::Include,
        Kind::Backslash,
        Kind::Special,
        Kind::Invalid,
    ];

    /// Its byte in the canonical encoding.
    fn tag(self) -> u8 {
        self as u8
    }

    /// The kind whose byte is `tag`.
    fn from_tag(tag: u8) -> Option<Kind> {
        Kind::ALL.get(usize::from(tag)).copied()
    }
}

/// One item of an alias, virtual, include or `.forward` value.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Target {
    /// What the item is.
    #[serde(rename = "k")]
    pub kind: Kind,
    /// The item as the MTA reads it (quotes removed; for an address, domain lowercased).
    #[serde(rename = "v")]
    pub value: String,
    /// The line of the containing file the item was written on.
    #[serde(rename = "l")]
    pub line: u32,
}

/// An aliases(5) entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alias {
    /// The name, folded to lowercase.
    pub name: String,
    /// Index into [`Content::files`] of the aliases file.
    pub file: u32,
    /// Line the entry starts on.
    pub line: u32,
    /// The items of the value in written order.
    pub targets: Vec<Target>,
}

/// An `:include:` file named by some alias (or by another include file).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Include {
    /// The absolute path, as written after `:include:`.
    pub path: String,
    /// Index into [`Content::files`] of this path (origins of its items).
    pub file: u32,
    /// The items, when the file could be read.
    #[serde(default)]
    pub targets: Vec<Target>,
    /// Why the file could not be read; an alias that includes it punts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A Postfix virtual(5) entry whose key is an address at a served domain (or a bare name).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VirtualEntry {
    /// `user@domain` lowercased, or a bare lowercase name (which applies to every served domain).
    pub key: String,
    /// Index into [`Content::files`].
    pub file: u32,
    /// Line the entry starts on.
    pub line: u32,
    /// The items of the value.
    pub targets: Vec<Target>,
}

/// An entry of a recipient list: a valid address whose mailbox is on the primary.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recipient {
    /// The address, lowercased.
    pub address: String,
    /// Index into [`Content::files`].
    pub file: u32,
    /// Line of the entry.
    pub line: u32,
}

/// What a user's `~/.forward` holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Forward {
    /// Index into [`Content::files`] of the `.forward` path.
    pub file: u32,
    /// The items, one or more a line.
    #[serde(default)]
    pub targets: Vec<Target>,
    /// The file starts with an Exim or Sieve filter header: only the primary can run it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub filter: bool,
    /// Why the file exists but could not be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A local user of the primary: a mailbox, possibly with markers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// The login name (lowercase: Postfix folds recipients before the user lookup).
    pub name: String,
    /// Index into [`Content::files`] of the passwd file.
    pub file: u32,
    /// Line of the passwd entry.
    pub line: u32,
    /// Index into [`Content::files`] of `~/.procmailrc`, when it exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub procmail: Option<u32>,
    /// `~/.forward`, when it exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forward: Option<Forward>,
}

/// How bad a diagnostic is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Accepted, but worth a look (a duplicate, a construct the MTAs read differently).
    Warning,
    /// Left out of the snapshot.
    Error,
}

/// A problem found while reading a source, with its place.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Diagnostic {
    /// The file.
    pub file: String,
    /// The line, 1-based; 0 for the file as a whole.
    pub line: u32,
    /// Left out (error) or only worth a look (warning).
    pub severity: Severity,
    /// What is wrong, lowercase, naming the thing.
    pub message: String,
}

impl std::fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sev = match self.severity {
            Severity::Warning => "warning",
            Severity::Error => "error",
        };
        if self.line == 0 {
            write!(f, "{}: {sev}: {}", self.file, self.message)
        } else {
            write!(f, "{}:{}: {sev}: {}", self.file, self.line, self.message)
        }
    }
}

/// Everything the agent read, normalized. The hash covers exactly this.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Content {
    /// The served domains, lowercase.
    pub domains: Vec<String>,
    /// Every file an origin can name; items refer to it by index.
    pub files: Vec<String>,
    /// Aliases, unique by name.
    pub aliases: Vec<Alias>,
    /// Include files, unique by path.
    #[serde(default)]
    pub includes: Vec<Include>,
    /// Virtual entries, unique by key.
    #[serde(default, rename = "virtual")]
    pub virtuals: Vec<VirtualEntry>,
    /// Recipient-list entries, unique by address.
    #[serde(default)]
    pub recipients: Vec<Recipient>,
    /// Local users, unique by name.
    #[serde(default)]
    pub users: Vec<User>,
    /// What the agent could not read or flagged.
    #[serde(default)]
    pub diagnostics: Vec<Diagnostic>,
}

/// A snapshot as pushed by an agent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// [`FORMAT`].
    pub format: u32,
    /// The agent's id.
    pub agent: String,
    /// The agent's version counter (rises only when the hash changes).
    pub version: u64,
    /// [`Content::hash`], lowercase hex.
    pub hash: String,
    /// When the agent collected it, seconds since the Unix epoch.
    pub created_at: u64,
    /// The content.
    pub content: Content,
}

impl Content {
    /// Sorts every list and the file table, so that equal content has equal encoding.
    ///
    /// Origins are remapped to the sorted file table; files no item refers to are kept.
    pub fn normalize(&mut self) {
        self.normalize_whole();
        self.aliases.sort_by(|a, b| a.name.cmp(&b.name));
        self.includes.sort_by(|a, b| a.path.cmp(&b.path));
        self.virtuals.sort_by(|a, b| a.key.cmp(&b.key));
        self.recipients.sort_by(|a, b| a.address.cmp(&b.address));
        self.users.sort_by(|a, b| a.name.cmp(&b.name));
    }

    /// [`Content::normalize`] of a content patched by a delta from a normalized one
    /// (`delta::apply` and its kin): the keyed lists come out of the patch sorted by key
    /// (it refuses changes that are not), so only what a delta sends whole is sorted: the
    /// domains, the file table (with the origins remapped) and the diagnostics. Sorting a
    /// million sorted aliases again costs about 10 ms.
    pub fn normalize_patched(&mut self) {
        self.normalize_whole();
        debug_assert!(self.aliases.is_sorted_by(|a, b| a.name <= b.name));
        debug_assert!(self.users.is_sorted_by(|a, b| a.name <= b.name));
    }

    /// The part of [`Content::normalize`] for the lists a delta sends whole.
    fn normalize_whole(&mut self) {
        self.domains.sort();
        self.domains.dedup();
        let mut order: Vec<u32> = (0..self.files.len() as u32).collect();
        order.sort_by(|&a, &b| self.files[a as usize].cmp(&self.files[b as usize]));
        let already_sorted = order.iter().enumerate().all(|(i, &o)| i as u32 == o);
        if !already_sorted {
            let mut remap = vec![0u32; self.files.len()];
            for (new, &old) in order.iter().enumerate() {
                remap[old as usize] = new as u32;
            }
            self.origins_mut(|f| {
                if let Some(&n) = remap.get(*f as usize) {
                    *f = n;
                }
            });
            let mut files = std::mem::take(&mut self.files);
            let mut sorted = Vec::with_capacity(files.len());
            for &old in &order {
                sorted.push(std::mem::take(&mut files[old as usize]));
            }
            self.files = sorted;
        }
        self.diagnostics.sort();
        self.diagnostics.dedup();
    }

    /// Calls `f` on every index into the file table that the entries hold: each alias's,
    /// include's, virtual entry's, recipient's and user's origin, and a user's `.procmail` and
    /// `.forward` files.
    pub(crate) fn origins_mut(&mut self, mut f: impl FnMut(&mut u32)) {
        self.aliases.iter_mut().for_each(|a| f(&mut a.file));
        self.includes.iter_mut().for_each(|i| f(&mut i.file));
        self.virtuals.iter_mut().for_each(|v| f(&mut v.file));
        self.recipients.iter_mut().for_each(|r| f(&mut r.file));
        for u in &mut self.users {
            f(&mut u.file);
            if let Some(p) = &mut u.procmail {
                f(p);
            }
            if let Some(fw) = &mut u.forward {
                f(&mut fw.file);
            }
        }
    }
}

mod binary;
mod canon;
mod validate;
pub use binary::{BinaryError, Head, MEDIA_TYPE, is_binary, write_binary};
#[cfg(test)]
use canon::HASH_BESIDE;
use canon::{Canon, Out};
pub use canon::{hex, sha256_hex};
pub(crate) use validate::Entries;
pub use validate::{InvalidContent, MAX_STRING};

#[cfg(test)]
mod tests;
