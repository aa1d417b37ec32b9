//! Assembling a [`Content`] from parsed sources, in the order the primary's MTA consults them.
//!
//! The agent reads files and hands their bytes (or the read error) to a [`Builder`]; the builder
//! parses, resolves duplicates the way postalias does (the first entry wins, across files too,
//! with a warning), keeps only what concerns the served domains, and produces normalized content.
//! It does no I/O itself: it tells the caller which `:include:` files it still needs.

use std::collections::{BTreeSet, HashSet};

use rustc_hash::FxHashMap;

use crate::addr;
use crate::parse;
use crate::snapshot::{
    Alias, Content, Diagnostic, Forward, Include, Kind, Recipient, Severity, Target, User,
    VirtualEntry,
};

/// Builds one snapshot's content. See the module docs.
#[derive(Debug)]
pub struct Builder {
    content: Content,
    file_ids: FxHashMap<String, u32>,
    virtual_at: FxHashMap<String, (String, u32)>,
    recipient_at: FxHashMap<String, usize>,
    user_at: FxHashMap<String, usize>,
    includes_added: BTreeSet<String>,
    /// How many aliases and include files [`Builder::pending_includes`] has looked through.
    scanned: (usize, usize),
    /// `:include:` paths found by it and not added yet.
    pending: BTreeSet<String>,
}

/// A passwd entry accepted as a local user, for the caller to look up its markers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRef {
    /// Index to pass to [`Builder::procmail`] and [`Builder::forward`].
    pub index: usize,
    /// Login name.
    pub name: String,
    /// Home directory from passwd.
    pub home: String,
}

impl Builder {
    /// A builder for the given served domains (lowercased here).
    pub fn new(domains: &[String]) -> Self {
        Builder {
            content: Content {
                domains: domains.iter().map(|d| d.to_ascii_lowercase()).collect(),
                ..Content::default()
            },
            file_ids: FxHashMap::default(),
            virtual_at: FxHashMap::default(),
            recipient_at: FxHashMap::default(),
            user_at: FxHashMap::default(),
            includes_added: BTreeSet::new(),
            scanned: (0, 0),
            pending: BTreeSet::new(),
        }
    }

    fn file_id(&mut self, path: &str) -> u32 {
        if let Some(&id) = self.file_ids.get(path) {
            return id;
        }
        let id = self.content.files.len() as u32;
        self.content.files.push(path.to_string());
        self.file_ids.insert(path.to_string(), id);
        id
    }

    fn served(&self, domain: &str) -> bool {
        self.content.domains.iter().any(|d| d == domain)
    }

    /// Records a problem the caller found (an unreadable source, say).
    pub fn diagnostic(&mut self, file: &str, line: u32, severity: Severity, message: String) {
        self.content.diagnostics.push(Diagnostic {
            file: file.to_string(),
            line,
            severity,
            message,
        });
    }

    /// Adds an aliases(5) file. Earlier files win over later ones, as in `alias_maps`.
    pub fn aliases(&mut self, path: &str, bytes: &[u8]) {
        let mut diags = Vec::new();
        let parsed = parse::parse_aliases(bytes, path, &mut diags);
        self.add_aliases(path, parsed, diags);
    }

    /// Like [`Builder::aliases`], from a file parsed before (and kept by the caller). A large
    /// file's entries are copied on every thread of the pool.
    pub fn aliases_parsed(&mut self, path: &str, parsed: &parse::AliasesFile) {
        use rayon::prelude::*;
        let all = parsed.entries();
        let entries = if all.len() < crate::par::LEAST_ITEMS {
            all.to_vec()
        } else {
            let least = all.len() / crate::par::pieces(all.len(), crate::par::LEAST_ITEMS);
            (all.par_iter().with_min_len(least)).cloned().collect()
        };
        self.add_aliases(path, entries, parsed.diagnostics().to_vec());
    }

    fn add_aliases(&mut self, path: &str, parsed: Vec<parse::ParsedAlias>, diags: Vec<Diagnostic>) {
        let file = self.file_id(path);
        self.content.aliases.reserve(parsed.len());
        for a in parsed {
            self.content.aliases.push(Alias {
                name: a.name,
                file,
                line: a.line,
                targets: a.targets,
            });
        }
        self.content.diagnostics.extend(diags);
    }

    /// `:include:` paths named by the aliases and include files added so far that have not been
    /// given to [`Builder::include`] yet, sorted. Relative paths are left out (they punt).
    /// Each call looks only through the aliases and include files added since the last one.
    pub fn pending_includes(&mut self) -> Vec<String> {
        let (aliases, includes) = self.scanned;
        let lists = self.content.aliases[aliases..]
            .iter()
            .map(|a| &a.targets)
            .chain(self.content.includes[includes..].iter().map(|i| &i.targets));
        for ts in lists {
            for t in ts {
                if t.kind == Kind::Include && t.value.starts_with('/') {
                    self.pending.insert(t.value.clone());
                }
            }
        }
        self.scanned = (self.content.aliases.len(), self.content.includes.len());
        let added = &self.includes_added;
        self.pending.retain(|p| !added.contains(p));
        self.pending.iter().cloned().collect()
    }

    /// Adds an `:include:` file's body, or why it could not be read.
    pub fn include(&mut self, path: &str, body: Result<&[u8], String>) {
        self.includes(&[(path.to_string(), body)]);
    }

    /// [`Builder::include`] of each file in turn, the bodies of a large batch (such as every
    /// list a large aliases file names) parsed on every thread of the pool.
    pub fn includes<B: AsRef<[u8]> + Sync>(&mut self, files: &[(String, Result<B, String>)]) {
        use rayon::prelude::*;
        let added = &self.includes_added;
        // A file added before is not parsed again.
        let parse = |(path, body): &(String, Result<B, String>)| -> Option<ParsedInclude> {
            (!added.contains(path)).then(|| {
                let body = body.as_ref().map(AsRef::as_ref).map_err(Clone::clone);
                parse_include(path, body)
            })
        };
        let parsed: Vec<Option<ParsedInclude>> = if files.len() < PARALLEL_INCLUDES {
            files.iter().map(parse).collect()
        } else {
            (files.par_iter().with_min_len(PARALLEL_INCLUDES / 2))
                .map(parse)
                .collect()
        };
        for ((path, _), p) in files.iter().zip(parsed) {
            // A file named twice in the batch is added once, the first time.
            if let Some(p) = p.filter(|_| !self.includes_added.contains(path.as_str())) {
                self.add_include(path, p);
            }
        }
    }

    fn add_include(&mut self, path: &str, p: ParsedInclude) {
        self.includes_added.insert(path.to_string());
        let file = self.file_id(path);
        self.content.diagnostics.extend(p.diags);
        self.content.includes.push(Include {
            path: path.to_string(),
            file,
            targets: p.targets,
            error: p.error,
        });
    }

    /// Adds a Postfix virtual(5) map. Keys at domains that are not served are ignored (counted in
    /// one warning); a catch-all is reported and left out; a bare key applies to every served
    /// domain and punts (the primary decides what `$myorigin` makes of it).
    pub fn virtual_map(&mut self, path: &str, bytes: &[u8]) {
        let mut diags = Vec::new();
        let parsed = parse::parse_virtual(bytes, path, &mut diags);
        let file = self.file_id(path);
        let mut foreign = 0usize;
        for v in parsed {
            let line = v.line;
            let mut problem = |sev, message| {
                diags.push(Diagnostic {
                    file: path.to_string(),
                    line,
                    severity: sev,
                    message,
                })
            };
            if v.key.starts_with('@') {
                problem(
                    Severity::Warning,
                    format!(
                        "{:?}: a catch-all cannot be listed on the secondary; left out",
                        v.key
                    ),
                );
                continue;
            }
            if let Some((_, domain)) = v.key.rsplit_once('@') {
                if !addr::valid_address(&v.key) {
                    problem(
                        Severity::Error,
                        format!("{:?}: key cannot be written to a map; left out", v.key),
                    );
                    continue;
                }
                if !self.served(domain) {
                    foreign += 1;
                    continue;
                }
            } else if !addr::valid_local_part(&v.key) {
                problem(
                    Severity::Error,
                    format!("{:?}: key cannot be written to a map; left out", v.key),
                );
                continue;
            }
            if let Some((f, l)) = self.virtual_at.get(&v.key) {
                problem(
                    Severity::Warning,
                    format!("duplicate entry {:?}: the first one ({f}:{l}) wins", v.key),
                );
                continue;
            }
            self.virtual_at
                .insert(v.key.clone(), (path.to_string(), v.line));
            self.content.virtuals.push(VirtualEntry {
                key: v.key,
                file,
                line: v.line,
                targets: v.targets,
            });
        }
        diags.extend(foreign_ignored(path, foreign));
        self.content.diagnostics.extend(diags);
    }

    /// Adds a recipient list. Entries at domains that are not served are ignored.
    pub fn recipients(&mut self, path: &str, bytes: &[u8]) {
        let mut diags = Vec::new();
        let parsed = parse::parse_recipients(bytes, path, &mut diags);
        let file = self.file_id(path);
        let mut foreign = 0usize;
        for (address, line) in parsed {
            let served = addr::split(&address).is_some_and(|(_, d)| self.served(d));
            if !served {
                foreign += 1;
                continue;
            }
            if self.recipient_at.contains_key(&address) {
                continue;
            }
            self.recipient_at
                .insert(address.clone(), self.content.recipients.len());
            self.content.recipients.push(Recipient {
                address,
                file,
                line,
            });
        }
        diags.extend(foreign_ignored(path, foreign));
        self.content.diagnostics.extend(diags);
    }

    /// Adds the local users of a passwd file with `uid >= uid_min`, and returns them so the caller
    /// can look for their markers. A name Postfix cannot deliver to (it folds recipients to lower
    /// case) or a map cannot carry is reported and left out; the first of duplicate names wins.
    pub fn passwd(&mut self, path: &str, bytes: &[u8], uid_min: u32) -> Vec<UserRef> {
        let mut diags = Vec::new();
        let parsed = parse::parse_passwd(bytes, path, &mut diags);
        let file = self.file_id(path);
        let mut out = Vec::new();
        for e in parsed {
            if e.uid < uid_min || self.user_at.contains_key(&e.name) {
                continue;
            }
            let problem = if !addr::is_folded(&e.name) {
                Some("has upper case: postfix folds recipients to lower case and never reaches it")
            } else if !addr::valid_local_part(&e.name) {
                Some("cannot be written to a map as a local part")
            } else {
                None
            };
            if let Some(why) = problem {
                diags.push(Diagnostic {
                    file: path.to_string(),
                    line: e.line,
                    severity: Severity::Warning,
                    message: format!("user {:?} {why}; left out", e.name),
                });
                continue;
            }
            let index = self.content.users.len();
            self.user_at.insert(e.name.clone(), index);
            self.content.users.push(User {
                name: e.name.clone(),
                file,
                line: e.line,
                procmail: None,
                forward: None,
            });
            out.push(UserRef {
                index,
                name: e.name,
                home: e.home,
            });
        }
        self.content.diagnostics.extend(diags);
        out
    }

    /// Records that the user has a `~/.procmailrc` at `path`.
    pub fn procmail(&mut self, user: usize, path: &str) {
        let file = self.file_id(path);
        if let Some(u) = self.content.users.get_mut(user) {
            u.procmail = Some(file);
        }
    }

    /// Records the user's `~/.forward` at `path`: its body, or why it exists but cannot be read.
    pub fn forward(&mut self, user: usize, path: &str, body: Result<&[u8], String>) {
        let file = self.file_id(path);
        let mut diags = Vec::new();
        let fw = match body {
            Ok(bytes) => {
                let list = parse::parse_list(bytes, path, &mut diags);
                Forward {
                    file,
                    targets: list.targets,
                    filter: list.filter,
                    error: None,
                }
            }
            Err(e) => {
                diags.push(Diagnostic {
                    file: path.to_string(),
                    line: 0,
                    severity: Severity::Warning,
                    message: format!("cannot read .forward: {e}; the user punts"),
                });
                Forward {
                    file,
                    targets: Vec::new(),
                    filter: false,
                    error: Some(e),
                }
            }
        };
        self.content.diagnostics.extend(diags);
        if let Some(u) = self.content.users.get_mut(user) {
            u.forward = Some(fw);
        }
    }

    /// The normalized content. Of aliases defined more than once, the first one added wins
    /// (postalias: first entry; `alias_maps`: first map), with a warning for each other.
    pub fn finish(self) -> Content {
        self.finish_with_duplicates().0
    }

    /// Like [`Builder::finish`], with the names of the aliases defined more than once.
    pub fn finish_with_duplicates(mut self) -> (Content, HashSet<String>) {
        let mut duplicates = HashSet::new();
        let mut aliases = std::mem::take(&mut self.content.aliases);
        // Sorted as (name, place added), which puts the first of each name first. Each place
        // is sorted with its name's first eight bytes as a number, compared first: most of a
        // large sort's comparisons then read no name, and the sort moves 16 bytes, not aliases.
        let order: Vec<(u64, u32)> = {
            let heads = (aliases.iter().enumerate())
                .map(|(i, a)| (crate::order::head(a.name.bytes()), i as u32))
                .collect();
            let name = |i: u32| aliases[i as usize].name.as_str();
            let by_name = |&(h, i): &(u64, u32), &(g, j): &(u64, u32)| {
                (h.cmp(&g))
                    .then_with(|| name(i).cmp(name(j)))
                    .then(i.cmp(&j))
            };
            crate::order::sorted(heads, by_name, crate::par::LEAST_ITEMS).collect()
        };
        let mut kept: Vec<Alias> = Vec::with_capacity(order.len());
        let mut last_head = None;
        for (h, i) in order {
            let empty = Alias {
                name: String::new(),
                file: 0,
                line: 0,
                targets: Vec::new(),
            };
            let a = std::mem::replace(&mut aliases[i as usize], empty);
            match kept.last() {
                Some(first) if last_head == Some(h) && first.name == a.name => {
                    duplicates.insert(a.name.clone());
                    let f = &self.content.files[first.file as usize];
                    self.content.diagnostics.push(Diagnostic {
                        file: self.content.files[a.file as usize].clone(),
                        line: a.line,
                        severity: Severity::Warning,
                        message: format!(
                            "duplicate entry {:?}: the first one ({f}:{}) wins",
                            a.name, first.line
                        ),
                    });
                }
                _ => {
                    last_head = Some(h);
                    kept.push(a);
                }
            }
        }
        self.content.aliases = kept;
        self.content.normalize();
        (self.content, duplicates)
    }
}

/// An include file read: its items, or why it could not be read, and what parsing said.
struct ParsedInclude {
    targets: Vec<Target>,
    error: Option<String>,
    diags: Vec<Diagnostic>,
}

/// Parses an `:include:` file's body (or notes why it could not be read).
fn parse_include(path: &str, body: Result<&[u8], String>) -> ParsedInclude {
    let mut diags = Vec::new();
    let (targets, error) = match body {
        Ok(bytes) => (parse::parse_list(bytes, path, &mut diags).targets, None),
        Err(e) => {
            diags.push(Diagnostic {
                file: path.to_string(),
                line: 0,
                severity: Severity::Error,
                message: format!("cannot read include file: {e}; aliases that include it punt"),
            });
            (Vec::new(), Some(e))
        }
    };
    ParsedInclude {
        targets,
        error,
        diags,
    }
}

/// The warning for `n` entries of file `path` at domains that are not served, if there are any.
fn foreign_ignored(path: &str, n: usize) -> Option<Diagnostic> {
    (n > 0).then(|| Diagnostic {
        file: path.to_string(),
        line: 0,
        severity: Severity::Warning,
        message: format!("{n} entries at domains that are not served were ignored"),
    })
}

/// The fewest include files worth a thread of their own (most are a few lines).
const PARALLEL_INCLUDES: usize = 2_000;

#[cfg(test)]
mod tests;
