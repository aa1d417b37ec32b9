//! Patching the last collection when events named nothing but aliases files.
//!
//! On a large primary most changes are a few lines of one aliases file. A full collection still
//! assembles and sorts every alias again (seconds at a million); a patch applies the entries the
//! file's [`Splice`] replaced to the last content instead, as a delta, and gives the same content
//! (tested against full collections). It gives up, and the full collection runs, wherever the
//! result could differ or needs more than the aliases files:
//! - events named another collected path (an include, a marker, a map) or a home directory;
//! - the aliases files, as patterns expand, are not the last ones, or one cannot be read;
//! - lines were added or removed (every later entry's line number moves), or the file's
//!   diagnostics changed;
//! - the entries replaced or added name a different set of `:include:` files;
//! - a name involved is defined more than once (which entry wins, and the warnings, change).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use proto::delta::{Changes, Section};
use proto::parse::{ParsedAlias, Splice};
use proto::snapshot::Alias;
use proto::{Builder, Content, Kind};

use super::{Cache, Collected, expand};
use crate::config::Sources;

/// The last collection, kept to patch.
#[derive(Debug)]
pub(super) struct Last {
    /// The served domains it was made for.
    pub domains: Vec<String>,
    /// The aliases files, as the patterns expanded, in order.
    pub aliases: Vec<String>,
    /// The content it gave.
    pub content: Arc<Content>,
    /// The paths it read or looked for.
    pub paths: Arc<BTreeSet<PathBuf>>,
    /// Names defined more than once across the aliases files.
    pub duplicates: HashSet<String>,
    /// After a patch: the content it was patched from, and the changes from that to `content`.
    /// Once nothing else holds that content (the receivers took `content`), the next patch moves
    /// its entries instead of copying the shared `content` (0.1-0.2 s at a million aliases).
    pub prev: Option<(Arc<Content>, Arc<Changes>)>,
}

/// The aliases files `sources` name now, in order.
pub(super) fn aliases_files(sources: &Sources) -> Vec<String> {
    // Diagnostics go to a builder that is dropped: the same files give the same ones.
    let mut b = Builder::new(&[]);
    let files = sources.aliases.iter().flat_map(|p| expand(p, &mut b));
    files.collect()
}

/// Why a patch gave up, for the log.
pub(super) type Why = &'static str;

/// The collection `changed` (paths events named since the last one) calls for, patched from the
/// last one; or why only a full collection can tell (see the module docs).
pub(super) fn patch(
    domains: &[String],
    sources: &Sources,
    cache: &mut Cache,
    changed: &BTreeSet<PathBuf>,
) -> Result<Collected, Why> {
    let prev = cache.last.as_mut().and_then(|l| l.prev.take());
    let last = cache.last.as_ref().ok_or("no earlier collection")?;
    let is_aliases = |p: &Path| last.aliases.iter().any(|a| Path::new(a) == p);
    // Paths order by component, so the ones under `c` follow it.
    let only_aliases = changed.iter().all(|c| {
        let under = last.paths.range(c.clone()..);
        under
            .take_while(|p| p.starts_with(c))
            .all(|p| is_aliases(p))
    });
    if !only_aliases {
        return Err("events named other paths than aliases files");
    }
    if last.domains != domains || aliases_files(sources) != last.aliases {
        return Err("the aliases files or the domains changed");
    }
    // Every aliases file is read, as in a full collection; each is parsed only where it changed.
    let mut read = Vec::with_capacity(last.aliases.len());
    for path in &last.aliases {
        let bytes =
            super::read_whole(Path::new(path)).map_err(|_| "an aliases file cannot be read")?;
        read.push((path, bytes));
    }
    let content = &last.content;
    let mut spliced = Vec::new();
    for (path, bytes) in read {
        let file = (cache.aliases.get_mut(path)).ok_or("an aliases file was not parsed before")?;
        let s = file.update(bytes);
        if s.old.is_empty() && s.new == 0 {
            continue;
        }
        let id = (content.files.binary_search(path))
            .map_err(|_| "an aliases file is not in the file table")? as u32;
        spliced.push((id, file.entries()[s.at..s.at + s.new].to_vec(), s));
    }
    let aliases = alias_changes(content, &last.duplicates, &spliced)?;
    let changes = Changes {
        aliases,
        ..Changes::default()
    };
    let from = Arc::clone(content);
    let changes = Arc::new(changes);
    let (content, prev, in_place) =
        if changes.aliases.remove.is_empty() && changes.aliases.upsert.is_empty() {
            (Arc::clone(content), prev, false)
        } else {
            // The content two collections back, if nothing else holds it, brought up to date
            // and patched in place; otherwise a copy of the last one, patched.
            let owned = prev.and_then(|(c, to_last)| Some((Arc::try_unwrap(c).ok()?, to_last)));
            let moved = owned.and_then(|(c, to_last)| {
                let c = proto::delta::apply_owned(c, &to_last).ok()?;
                proto::delta::apply_owned(c, &changes).ok()
            });
            let in_place = moved.is_some();
            let patched = match moved {
                Some(c) => c,
                None => proto::delta::apply(content, &changes)
                    .map_err(|_| "the changes do not apply")?,
            };
            let prev = Some((Arc::clone(&from), Arc::clone(&changes)));
            (Arc::new(patched), prev, in_place)
        };
    let paths = Arc::clone(&last.paths);
    if let Some(last) = &mut cache.last {
        last.content = Arc::clone(&content);
        last.prev = prev;
    }
    Ok(Collected {
        content,
        paths,
        in_place,
        since: Some((from, changes)),
    })
}

/// The aliases that change when each file `(id, new, splice)` replaced `splice.old` by `new`,
/// as changes to `content`; or why a patch cannot tell (see the module docs).
fn alias_changes(
    content: &Content,
    duplicates: &HashSet<String>,
    spliced: &[(u32, Vec<ParsedAlias>, Splice)],
) -> Result<Section<Alias>, Why> {
    let (mut old_names, mut new_names) = (HashSet::new(), HashSet::new());
    let mut upsert = Vec::new();
    for (file, new, s) in spliced {
        if s.shift != 0 {
            return Err("lines were added or removed");
        }
        if s.diagnostics_changed {
            return Err("the diagnostics changed");
        }
        if includes(&s.old) != includes(new) {
            return Err("the changed entries name other include files");
        }
        // The span is widened to whole entries: some are the same, at the same line.
        let by_line: HashMap<u32, &ParsedAlias> = s.old.iter().map(|e| (e.line, e)).collect();
        let same: HashSet<u32> = new
            .iter()
            .filter(|e| by_line.get(&e.line) == Some(e))
            .map(|e| e.line)
            .collect();
        let changed = |e: &&ParsedAlias| !same.contains(&e.line);
        // Each name that changed is defined once before (not a duplicate) and once after.
        for e in s.old.iter().filter(changed) {
            if duplicates.contains(&e.name) || !old_names.insert(e.name.as_str()) {
                return Err(TWICE);
            }
        }
        for e in new.iter().filter(changed) {
            if duplicates.contains(&e.name) || !new_names.insert(e.name.as_str()) {
                return Err(TWICE);
            }
            upsert.push(Alias {
                name: e.name.clone(),
                file: *file,
                line: e.line,
                targets: e.targets.clone(),
            });
        }
    }
    let find = |name: &str| {
        content
            .aliases
            .binary_search_by(|a| a.name.as_str().cmp(name))
            .is_ok()
    };
    // A name new to the files must be new to the content: else it is defined twice now.
    if new_names.iter().any(|n| !old_names.contains(n) && find(n)) {
        return Err(TWICE);
    }
    let mut remove: Vec<String> = old_names
        .difference(&new_names)
        .map(|n| n.to_string())
        .collect();
    remove.sort_unstable();
    upsert.sort_unstable_by(|a, b| a.name.cmp(&b.name));
    Ok(Section { remove, upsert })
}

const TWICE: Why = "a changed name is defined more than once";

/// The `:include:` files `entries` name.
fn includes(entries: &[ParsedAlias]) -> BTreeSet<&str> {
    let targets = entries.iter().flat_map(|e| &e.targets);
    targets
        .filter(|t| t.kind == Kind::Include)
        .map(|t| t.value.as_str())
        .collect()
}
