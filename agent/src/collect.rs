//! Reading the primary's alias sources from disk into a snapshot's content.
//!
//! This is the agent's only reader of watched files: it never writes them. Every file it reads or
//! looks for is recorded in [`Collected::paths`], so the watcher can follow the set as aliases
//! start or stop naming `:include:` files. A file that cannot be read becomes a diagnostic (and,
//! for an include or a `.forward`, makes its owner punt); it never stops the collection.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use proto::parse::AliasesFile;
use proto::{Builder, Content, Severity};

use crate::config::Sources;

mod patch;

/// The result of one collection.
#[derive(Debug, Clone)]
pub struct Collected {
    /// The normalized content.
    pub content: Arc<Content>,
    /// Every path read or looked for (existing or not), for the watcher.
    pub paths: Arc<BTreeSet<PathBuf>>,
    /// Whether the patch moved the entries of an earlier content no longer shared, instead of
    /// copying the last one.
    pub in_place: bool,
    /// When patched from the last collection (see [`Cache`]): the content it was patched from,
    /// and the changes from that content (what a diff of the two gives), so that a delta against
    /// it needs no diff.
    pub since: Option<(Arc<Content>, Arc<proto::delta::Changes>)>,
}

impl Collected {
    /// Whether it was patched from the last collection.
    pub fn patched(&self) -> bool {
        self.since.is_some()
    }
}

/// Expands a configured source: a glob pattern to its sorted matches, a plain path to itself.
fn expand(pattern: &str, b: &mut Builder) -> Vec<String> {
    if !pattern.contains(['*', '?', '[']) {
        return vec![pattern.to_string()];
    }
    match glob::glob(pattern) {
        Ok(paths) => {
            let mut out: Vec<String> = paths
                .filter_map(Result::ok)
                .map(|p| p.to_string_lossy().into_owned())
                .collect();
            out.sort();
            if out.is_empty() {
                b.diagnostic(
                    pattern,
                    0,
                    Severity::Warning,
                    "pattern matches no file".into(),
                );
            }
            out
        }
        Err(e) => {
            b.diagnostic(
                pattern,
                0,
                Severity::Error,
                format!("bad glob pattern: {e}"),
            );
            Vec::new()
        }
    }
}

fn read(path: &str, b: &mut Builder) -> Option<Vec<u8>> {
    match read_whole(Path::new(path)) {
        Ok(bytes) => Some(bytes),
        Err(e) => {
            b.diagnostic(path, 0, Severity::Error, format!("cannot read: {e}"));
            None
        }
    }
}

/// The bytes of `path`, read again (up to [`REREADS`] times, [`REREAD_WAIT`] apart) while a
/// writer is visibly at work: its size or modification time moved during the read, or the read
/// did not give as many bytes as its size. A large file rewritten in place (`O_TRUNC`, then one
/// long write) is otherwise read halfway whenever the write outlasts the debounce.
pub(crate) fn read_whole(path: &Path) -> std::io::Result<Vec<u8>> {
    let stamp = |m: std::fs::Metadata| (m.len(), m.modified().ok());
    let mut tries = 0;
    loop {
        let before = stamp(std::fs::metadata(path)?);
        let bytes = std::fs::read(path)?;
        let after = stamp(std::fs::metadata(path)?);
        tries += 1;
        if whole(before, bytes.len() as u64, after) || tries >= REREADS {
            return Ok(bytes);
        }
        std::thread::sleep(REREAD_WAIT);
    }
}

/// A file's size and modification time.
type Stamp = (u64, Option<std::time::SystemTime>);

/// Whether a read of `got` bytes between the stamps `before` and `after` saw the whole file.
fn whole(before: Stamp, got: u64, after: Stamp) -> bool {
    before == after && got == after.0
}

/// How often [`read_whole`] reads a file that changes under it before taking what it got.
const REREADS: u32 = 50;
/// How long [`read_whole`] waits between reads.
const REREAD_WAIT: std::time::Duration = std::time::Duration::from_millis(10);

/// What earlier collections read, kept by a long-running agent so that the next one reads
/// and parses only what changed:
/// - aliases files are read every time, but parsed again only where their bytes changed;
/// - `:include:` files, `~/.forward` and `~/.procmailrc` (tens of thousands on a large primary)
///   are read again only when a file event named them or a directory above them, or when there
///   is no record of events (the first collection, the periodic rescan, an event queue overflow).
///
/// When events named nothing but aliases files, and the entries that changed there are defined
/// once and name the same `:include:` files as before, the last collection is patched instead
/// of assembled again (see the `patch` module for exactly when): virtual maps, recipient lists
/// and the passwd file are then read again only when an event names them.
///
/// A collection with a cache gives what one without gives, given the events.
#[derive(Debug, Default)]
pub struct Cache {
    /// Each aliases file as last read, by path.
    aliases: HashMap<String, AliasesFile>,
    /// The small files as last read (or looked for), by path.
    small: HashMap<PathBuf, Small>,
    /// The last collection.
    last: Option<patch::Last>,
}

/// What reading (or looking for) a small file gave.
#[derive(Debug, Clone)]
enum Small {
    /// Read: the bytes, or the error and whether it was "not found".
    Read(Result<Vec<u8>, (bool, String)>),
    /// Looked for only: exists, does not, or could not be checked.
    Exists(Result<bool, String>),
}

/// Paths that file events named since the last collection; `None`: read everything again.
pub type Changed = Option<BTreeSet<PathBuf>>;

/// Whether file events named `path` or a directory above it (`changed`: the paths they named).
pub(crate) fn named(changed: &BTreeSet<PathBuf>, path: &Path) -> bool {
    // A few named paths (the usual case): compare with each; many: look up each ancestor.
    if changed.len() <= 8 {
        changed.iter().any(|c| path.starts_with(c))
    } else {
        path.ancestors().any(|p| changed.contains(p))
    }
}

/// Small-file reads for one collection: from `cache` unless `changed` names the path or a
/// directory above it.
struct Reader<'a> {
    cache: Option<&'a mut Cache>,
    changed: Option<&'a BTreeSet<PathBuf>>,
    /// What was read, kept for the next collection when there is a cache to keep it in.
    seen: HashMap<PathBuf, Small>,
    keep: bool,
}

impl Reader<'_> {
    fn cached(&mut self, path: &Path) -> Option<Small> {
        if named(self.changed?, path) {
            return None;
        }
        self.cache.as_mut()?.small.remove(path)
    }

    fn keep(&mut self, path: &Path, v: &Small) {
        if self.keep {
            self.seen.insert(path.to_path_buf(), v.clone());
        }
    }

    /// The bytes of `path`, or whether it was missing and the error.
    fn read(&mut self, path: &Path) -> Result<Vec<u8>, (bool, String)> {
        let v = match self.cached(path) {
            Some(Small::Read(r)) => r,
            _ => std::fs::read(path).map_err(|e| (e.kind() == ErrorKind::NotFound, e.to_string())),
        };
        self.keep(path, &Small::Read(v.clone()));
        v
    }

    /// Whether `path` exists.
    fn exists(&mut self, path: &Path) -> Result<bool, String> {
        let v = match self.cached(path) {
            Some(Small::Exists(r)) => r,
            _ => match std::fs::metadata(path) {
                Ok(_) => Ok(true),
                Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
                Err(e) => Err(e.to_string()),
            },
        };
        self.keep(path, &Small::Exists(v.clone()));
        v
    }
}

/// Reads every source named in `sources` for the served `domains`.
pub fn collect(domains: &[String], sources: &Sources) -> Collected {
    collect_inner(domains, sources, None, None).0
}

/// Like [`collect`], reading again only what changed since the collection that filled `cache`
/// (see [`Cache`]); `changed` lists the paths file events named since then.
pub fn collect_with(
    domains: &[String],
    sources: &Sources,
    cache: &mut Cache,
    changed: &Changed,
) -> Collected {
    if let Some(c) = changed {
        match patch::patch(domains, sources, cache, c) {
            Ok(got) => return got,
            Err(why) => tracing::debug!(why, "collecting in full"),
        }
    }
    let (got, aliases, duplicates) = collect_inner(domains, sources, Some(cache), changed.as_ref());
    cache.last = Some(patch::Last {
        domains: domains.to_vec(),
        aliases,
        content: Arc::clone(&got.content),
        paths: Arc::clone(&got.paths),
        duplicates,
        prev: None,
    });
    got
}

/// A collection, with the aliases files read, in order, and the names they define more than once.
fn collect_inner(
    domains: &[String],
    sources: &Sources,
    mut cache: Option<&mut Cache>,
    changed: Option<&BTreeSet<PathBuf>>,
) -> (Collected, Vec<String>, HashSet<String>) {
    let mut b = Builder::new(domains);
    // Gathered in a list and made a set at the end (see `path_set`).
    let mut paths = Vec::new();
    let mut seen = HashMap::new();
    let mut aliases = Vec::new();
    for pattern in &sources.aliases {
        for path in expand(pattern, &mut b) {
            aliases.push(path.clone());
            paths.push(PathBuf::from(&path));
            let Some(bytes) = read(&path, &mut b) else {
                continue;
            };
            match cache.as_deref_mut() {
                None => b.aliases(&path, &bytes),
                Some(c) => {
                    let parsed = match c.aliases.remove(&path) {
                        Some(mut f) => {
                            f.update(bytes);
                            f
                        }
                        None => AliasesFile::parse(&path, bytes),
                    };
                    b.aliases_parsed(&path, &parsed);
                    seen.insert(path, parsed);
                }
            }
        }
        if pattern.contains(['*', '?', '[']) {
            // New files matching the pattern appear in its directory.
            if let Some(dir) = Path::new(pattern).parent() {
                paths.push(dir.to_path_buf());
            }
        }
    }
    let keep = cache.is_some();
    let mut small = Reader {
        changed,
        seen: HashMap::new(),
        cache,
        keep,
    };
    // The users first, so that their homes can be looked at while the includes are read.
    let mut users = Vec::new();
    if !sources.passwd.is_empty() {
        paths.push(PathBuf::from(&sources.passwd));
        if let Some(bytes) = read(&sources.passwd, &mut b) {
            users = b.passwd(&sources.passwd, &bytes, sources.uid_min);
        }
    }
    if !sources.markers {
        users.clear();
    }
    let base = Path::new(&sources.passwd)
        .parent()
        .unwrap_or(Path::new("/"));
    // When everything is read again (no file events to go by), the homes are looked at on
    // another thread (at a large primary, tens of thousands of them, while the includes are
    // read: 0.2-0.3 s). Otherwise most answers come from the cache, here.
    let beside = changed.is_none() && !users.is_empty();
    let mut side = Reader {
        cache: None,
        changed: None,
        seen: HashMap::new(),
        keep,
    };
    let mut lists = || {
        loop {
            let pending = b.pending_includes();
            if pending.is_empty() {
                break;
            }
            // Read them all, then parse them (a large batch on every thread of the pool).
            let mut read = Vec::with_capacity(pending.len());
            for path in pending {
                paths.push(PathBuf::from(&path));
                let body = small.read(Path::new(&path)).map_err(|(_, e)| e);
                read.push((path, body));
            }
            b.includes(&read);
        }
        for pattern in &sources.virtual_maps {
            for path in expand(pattern, &mut b) {
                paths.push(PathBuf::from(&path));
                if let Some(bytes) = read(&path, &mut b) {
                    b.virtual_map(&path, &bytes);
                }
            }
        }
        for pattern in &sources.recipients {
            for path in expand(pattern, &mut b) {
                paths.push(PathBuf::from(&path));
                if let Some(bytes) = read(&path, &mut b) {
                    b.recipients(&path, &bytes);
                }
            }
        }
    };
    let homes = |r: &mut Reader<'_>| -> Vec<Option<Markers>> {
        users
            .iter()
            .map(|u| Markers::look(r, base, &u.home))
            .collect()
    };
    let found = if beside {
        let ((), found) = proto::par::beside(lists, || homes(&mut side));
        small.seen.extend(side.seen);
        found
    } else {
        lists();
        homes(&mut small)
    };
    for (u, m) in users.iter().zip(found) {
        if let Some(m) = m {
            m.add(&mut b, &mut paths, u.index);
        }
    }
    if let Some(c) = small.cache {
        // Files no longer read are forgotten.
        c.aliases = seen;
        c.small = small.seen;
    }
    let (content, duplicates) = b.finish_with_duplicates();
    let got = Collected {
        content: Arc::new(content),
        paths: Arc::new(path_set(paths)),
        in_place: false,
        since: None,
    };
    (got, aliases, duplicates)
}

/// The set of `paths`. A `BTreeSet<PathBuf>` orders paths component by component, which costs
/// far more than comparing bytes: inserting a large primary's 127,000 paths one by one took
/// 0.22-0.27 s. Sorted first as bytes with `/` lowest, which is that order for paths without
/// `.` components or doubled separators, the set is built from one sorted run (its own sort,
/// which still decides, then only checks the order).
fn path_set(mut paths: Vec<PathBuf>) -> BTreeSet<PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    paths.sort_unstable_by(|a, b| {
        let (a, b) = (a.as_os_str().as_bytes(), b.as_os_str().as_bytes());
        let same = a.iter().zip(b).take_while(|(x, y)| x == y).count();
        let low = |s: &[u8]| s.get(same).map(|&c| if c == b'/' { 0 } else { c });
        low(a).cmp(&low(b))
    });
    paths.dedup();
    paths.into_iter().collect()
}

/// What a user's home holds: whether `~/.procmailrc` exists, and `~/.forward`.
struct Markers {
    rc: PathBuf,
    rc_found: Result<bool, String>,
    fw: PathBuf,
    fw_read: Result<Vec<u8>, (bool, String)>,
}

impl Markers {
    /// Looks for `~/.procmailrc` and `~/.forward` in `home`.
    ///
    /// A relative home directory (never found in a real passwd file, but handy for example
    /// data) is taken relative to the passwd file's directory `base`; an empty one has no
    /// markers.
    fn look(small: &mut Reader<'_>, base: &Path, home: &str) -> Option<Markers> {
        if home.is_empty() {
            return None;
        }
        let home = base.join(home);
        let rc = home.join(".procmailrc");
        let rc_found = small.exists(&rc);
        let fw = home.join(".forward");
        let fw_read = small.read(&fw);
        Some(Markers {
            rc,
            rc_found,
            fw,
            fw_read,
        })
    }

    /// Adds what was found to user `user`. When the home directory cannot be examined, the
    /// user is treated as having a `.procmailrc` (it punts): the secondary must not guess.
    fn add(self, b: &mut Builder, paths: &mut Vec<PathBuf>, user: usize) {
        let rc_s = self.rc.to_string_lossy().into_owned();
        paths.push(self.rc);
        match self.rc_found {
            Ok(true) => b.procmail(user, &rc_s),
            Ok(false) => {}
            Err(e) => {
                b.diagnostic(
                    &rc_s,
                    0,
                    Severity::Warning,
                    format!("cannot check: {e}; treated as present, so the user punts"),
                );
                b.procmail(user, &rc_s);
            }
        }
        let fw_s = self.fw.to_string_lossy().into_owned();
        paths.push(self.fw);
        match self.fw_read {
            Ok(bytes) => b.forward(user, &fw_s, Ok(&bytes)),
            Err((true, _)) => {}
            Err((false, e)) => b.forward(user, &fw_s, Err(e)),
        }
    }
}

#[cfg(test)]
mod tests;
