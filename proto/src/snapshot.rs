//! The snapshot model: what the agent read on the primary, and its canonical SHA-256 hash.
//!
//! [`Content`] is the parsed state of every alias source, with origins (`file:line`) kept so that
//! a plan can say why it punts. The hash is defined here once and used by both sides: it covers a
//! canonical, length-prefixed binary encoding of the *normalized* content (every list sorted, file
//! table sorted), so the order in which entries were read never changes it, while any change of
//! content does. Version, agent and timestamps are deliberately outside the hash.
//! This module holds no I/O and does not plan; see `plan`.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashSet;

use crate::addr;

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
    /// ([`crate::delta::apply`] and its kin): the keyed lists come out of the patch sorted by key
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

    /// SHA-256 over the canonical encoding, lowercase hex. Call on normalized content.
    ///
    /// A large content is encoded on this thread while another runs SHA-256 over what is
    /// encoded so far (each takes about half the time at a million aliases).
    pub fn hash(&self) -> String {
        self.hash_with(self.entries() >= HASH_BESIDE)
    }

    /// How many entries its lists hold: aliases, include files, virtual entries, recipients
    /// and users (what decides whether a step is worth a second thread).
    pub fn entries(&self) -> usize {
        self.aliases.len()
            + self.includes.len()
            + self.virtuals.len()
            + self.recipients.len()
            + self.users.len()
    }

    /// [`Content::hash`], with SHA-256 on another thread (`beside`) or on this one.
    fn hash_with(&self, beside: bool) -> String {
        if !beside {
            let mut c = Canon::new(Out::Here(Sha256::new()));
            self.encode(&mut c);
            c.flush();
            let Out::Here(h) = c.out else {
                unreachable!("made with Out::Here")
            };
            return hex(&h.finalize());
        }
        let (full, chunks) = std::sync::mpsc::sync_channel::<Vec<u8>>(4);
        let (give_back, empty) = std::sync::mpsc::channel::<Vec<u8>>();
        let encoding = || {
            let mut c = Canon::new(Out::Beside {
                full,
                empty: &empty,
            });
            self.encode(&mut c);
            c.flush();
            // The last chunk is sent; dropping the sender (with `c`) ends the hashing loop.
        };
        let hashing = move || {
            let mut h = Sha256::new();
            for mut chunk in chunks {
                h.update(&chunk);
                chunk.clear();
                let _ = give_back.send(chunk);
            }
            h.finalize()
        };
        let ((), digest) = crate::par::join(encoding, hashing);
        hex(&digest)
    }

    /// The canonical encoding, into `c`.
    fn encode(&self, c: &mut Canon<'_>) {
        c.bytes(b"mxsync-content");
        c.u32(FORMAT);
        c.strs(&self.domains);
        c.strs(&self.files);
        c.u64(self.aliases.len() as u64);
        for a in &self.aliases {
            c.str(&a.name);
            c.u32(a.file);
            c.u32(a.line);
            c.targets(&a.targets);
        }
        c.u64(self.includes.len() as u64);
        for i in &self.includes {
            c.str(&i.path);
            c.u32(i.file);
            c.targets(&i.targets);
            c.opt_str(i.error.as_deref());
        }
        c.u64(self.virtuals.len() as u64);
        for v in &self.virtuals {
            c.str(&v.key);
            c.u32(v.file);
            c.u32(v.line);
            c.targets(&v.targets);
        }
        c.u64(self.recipients.len() as u64);
        for r in &self.recipients {
            c.str(&r.address);
            c.u32(r.file);
            c.u32(r.line);
        }
        c.u64(self.users.len() as u64);
        for u in &self.users {
            c.str(&u.name);
            c.u32(u.file);
            c.u32(u.line);
            match u.procmail {
                Some(p) => {
                    c.u8(1);
                    c.u32(p);
                }
                None => c.u8(0),
            }
            match &u.forward {
                Some(fw) => {
                    c.u8(1);
                    c.u32(fw.file);
                    c.targets(&fw.targets);
                    c.u8(u8::from(fw.filter));
                    c.opt_str(fw.error.as_deref());
                }
                None => c.u8(0),
            }
        }
        c.u64(self.diagnostics.len() as u64);
        for d in &self.diagnostics {
            c.str(&d.file);
            c.u32(d.line);
            c.u8(d.severity as u8);
            c.str(&d.message);
        }
    }

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

    /// [`Content::validate`] for the result of a delta applied to validated content: while the
    /// domains and the file table stay, the entries the delta did not upsert are as valid as
    /// they were, and [`crate::delta::apply`] keeps keys unique, so only the upserted entries
    /// are looked at (a changed line in a million aliases checks one alias, not a million).
    pub fn validate_changed(&self, changes: &crate::delta::Changes) -> Result<(), InvalidContent> {
        if changes.domains.is_some() || changes.files.is_some() {
            return self.validate();
        }
        let mut p = Problems::default();
        let upserted = Entries {
            aliases: &changes.aliases.upsert,
            includes: &changes.includes.upsert,
            virtuals: &changes.virtuals.upsert,
            recipients: &changes.recipients.upsert,
            users: &changes.users.upsert,
        };
        upserted.check(&mut p, self.files.len());
        p.finish()
    }

    /// How many addresses the content makes valid at its served domains (for the shrink guard).
    pub fn address_count(&self) -> usize {
        crate::plan::valid_addresses(self).len()
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
struct Entries<'a> {
    aliases: &'a [Alias],
    includes: &'a [Include],
    virtuals: &'a [VirtualEntry],
    recipients: &'a [Recipient],
    users: &'a [User],
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

/// Contents with at least this many entries are hashed on two threads.
const HASH_BESIDE: usize = 50_000;
/// The encoding goes to SHA-256 in chunks of about this many bytes.
const CHUNK: usize = 1 << 16;

/// Where [`Canon`]'s chunks go: SHA-256 here, another thread running it, or a writer (the
/// binary body, see [`binary`]).
enum Out<'a> {
    Here(Sha256),
    /// Written out; the first error is kept and ends the writing.
    Write(&'a mut dyn std::io::Write, Option<std::io::Error>),
    Beside {
        full: std::sync::mpsc::SyncSender<Vec<u8>>,
        /// Chunks the other thread hashed, for reuse.
        empty: &'a std::sync::mpsc::Receiver<Vec<u8>>,
    },
}

/// The canonical encoding, streamed straight into SHA-256: fixed-width little-endian integers,
/// length-prefixed strings and lists, one tag byte per enum.
struct Canon<'a> {
    out: Out<'a>,
    buf: Vec<u8>,
}

impl<'a> Canon<'a> {
    fn new(out: Out<'a>) -> Self {
        Canon {
            out,
            buf: Vec::with_capacity(CHUNK),
        }
    }
    fn flush_if_full(&mut self) {
        if self.buf.len() >= CHUNK {
            self.flush();
        }
    }
    /// Hands what is buffered on.
    fn flush(&mut self) {
        match &mut self.out {
            Out::Write(w, err) => {
                if err.is_none()
                    && let Err(e) = w.write_all(&self.buf)
                {
                    *err = Some(e);
                }
                self.buf.clear();
            }
            Out::Here(h) => {
                h.update(&self.buf);
                self.buf.clear();
            }
            Out::Beside { full, empty } => {
                let next = empty
                    .try_recv()
                    .unwrap_or_else(|_| Vec::with_capacity(CHUNK));
                let chunk = std::mem::replace(&mut self.buf, next);
                // The other thread only stops by panicking, which its join passes on.
                let _ = full.send(chunk);
            }
        }
    }
    fn bytes(&mut self, b: &[u8]) {
        self.buf.extend_from_slice(&(b.len() as u64).to_le_bytes());
        self.buf.extend_from_slice(b);
        self.flush_if_full();
    }
    fn str(&mut self, s: &str) {
        self.bytes(s.as_bytes());
    }
    fn opt_str(&mut self, s: Option<&str>) {
        match s {
            Some(s) => {
                self.u8(1);
                self.str(s);
            }
            None => self.u8(0),
        }
    }
    fn strs(&mut self, v: &[String]) {
        self.u64(v.len() as u64);
        for s in v {
            self.str(s);
        }
    }
    fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }
    fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    fn targets(&mut self, ts: &[Target]) {
        self.u64(ts.len() as u64);
        for t in ts {
            self.u8(t.kind.tag());
            self.str(&t.value);
            self.u32(t.line);
        }
    }
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

/// SHA-256 of `bytes`, lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

mod binary;
pub use binary::{BinaryError, Head, MEDIA_TYPE, is_binary, write_binary};

#[cfg(test)]
mod tests;
