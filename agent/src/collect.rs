//! Reading the primary's alias sources from disk into a snapshot's content.
//!
//! This is the agent's only reader of watched files: it never writes them. Every file it reads or
//! looks for is recorded in [`Collected::paths`], so the watcher can follow the set as aliases
//! start or stop naming `:include:` files. A file that cannot be read becomes a diagnostic (and,
//! for an include or a `.forward`, makes its owner punt); it never stops the collection.

use std::collections::BTreeSet;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use proto::{Builder, Content, Severity};

use crate::config::Sources;

/// The result of one collection.
#[derive(Debug, Clone)]
pub struct Collected {
    /// The normalized content.
    pub content: Content,
    /// Every path read or looked for (existing or not), for the watcher.
    pub paths: BTreeSet<PathBuf>,
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
    match std::fs::read(path) {
        Ok(bytes) => Some(bytes),
        Err(e) => {
            b.diagnostic(path, 0, Severity::Error, format!("cannot read: {e}"));
            None
        }
    }
}

/// Reads every source named in `sources` for the served `domains`.
pub fn collect(domains: &[String], sources: &Sources) -> Collected {
    let mut b = Builder::new(domains);
    let mut paths = BTreeSet::new();
    for pattern in &sources.aliases {
        for path in expand(pattern, &mut b) {
            paths.insert(PathBuf::from(&path));
            if let Some(bytes) = read(&path, &mut b) {
                b.aliases(&path, &bytes);
            }
        }
        if pattern.contains(['*', '?', '[']) {
            // New files matching the pattern appear in its directory.
            if let Some(dir) = Path::new(pattern).parent() {
                paths.insert(dir.to_path_buf());
            }
        }
    }
    loop {
        let pending = b.pending_includes();
        if pending.is_empty() {
            break;
        }
        for path in pending {
            paths.insert(PathBuf::from(&path));
            match std::fs::read(&path) {
                Ok(bytes) => b.include(&path, Ok(&bytes)),
                Err(e) => b.include(&path, Err(e.to_string())),
            }
        }
    }
    for pattern in &sources.virtual_maps {
        for path in expand(pattern, &mut b) {
            paths.insert(PathBuf::from(&path));
            if let Some(bytes) = read(&path, &mut b) {
                b.virtual_map(&path, &bytes);
            }
        }
    }
    for pattern in &sources.recipients {
        for path in expand(pattern, &mut b) {
            paths.insert(PathBuf::from(&path));
            if let Some(bytes) = read(&path, &mut b) {
                b.recipients(&path, &bytes);
            }
        }
    }
    if !sources.passwd.is_empty() {
        paths.insert(PathBuf::from(&sources.passwd));
        if let Some(bytes) = read(&sources.passwd, &mut b) {
            let users = b.passwd(&sources.passwd, &bytes, sources.uid_min);
            if sources.markers {
                let base = Path::new(&sources.passwd)
                    .parent()
                    .unwrap_or(Path::new("/"));
                for u in users {
                    markers(&mut b, &mut paths, base, u);
                }
            }
        }
    }
    Collected {
        content: b.finish(),
        paths,
    }
}

/// Looks for `~/.procmailrc` and `~/.forward`. When the home directory cannot be examined, the
/// user is treated as having a `.procmailrc` (it punts): the secondary must not guess.
///
/// A relative home directory (never found in a real passwd file, but handy for example data) is
/// taken relative to the passwd file's directory `base`; an empty one has no markers.
fn markers(b: &mut Builder, paths: &mut BTreeSet<PathBuf>, base: &Path, u: proto::build::UserRef) {
    if u.home.is_empty() {
        return;
    }
    let home = base.join(&u.home);
    let rc = home.join(".procmailrc");
    let rc_s = rc.to_string_lossy().into_owned();
    paths.insert(rc.clone());
    match std::fs::metadata(&rc) {
        Ok(_) => b.procmail(u.index, &rc_s),
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => {
            b.diagnostic(
                &rc_s,
                0,
                Severity::Warning,
                format!("cannot check: {e}; treated as present, so the user punts"),
            );
            b.procmail(u.index, &rc_s);
        }
    }
    let fw = home.join(".forward");
    let fw_s = fw.to_string_lossy().into_owned();
    paths.insert(fw.clone());
    match std::fs::read(&fw) {
        Ok(bytes) => b.forward(u.index, &fw_s, Ok(&bytes)),
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => b.forward(u.index, &fw_s, Err(e.to_string())),
    }
}

#[cfg(test)]
mod tests;
