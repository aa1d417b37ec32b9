//! Installing a rendered file set: the only code that writes map files.
//!
//! A set is written into a fresh generation directory (`DIR/.gen/NAME/`), every file and
//! directory fsynced, an optional `prepare` command run there (e.g. `postmap`), and only then the
//! symlink `DIR/current` is switched to it with one atomic rename. `DIR/postfix` and `DIR/exim`
//! are fixed links into `current/`. So a reader, or a crash at any point, sees either the whole
//! old set or the whole new set, never a mix. The previous generation is kept (the MTA may still
//! have its files open); older ones are moved to `DIR/.trash/` and removed there on another
//! thread.

use std::fs::{self, File};
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use crate::render::Rendered;

/// Why installing failed (the previous maps stay in force).
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// A file system operation failed.
    #[error("{what} {}: {source}", .path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// On which path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The `prepare` command failed.
    #[error("prepare command failed: {0}")]
    Prepare(String),
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> InstallError {
    let path = path.to_path_buf();
    move |source| InstallError::Io { what, path, source }
}

fn fsync_dir(dir: &Path) -> Result<(), InstallError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("fsync directory", dir))
}

/// The directory `current` points at, if any.
pub fn current(dir: &Path) -> Option<PathBuf> {
    let target = fs::read_link(dir.join("current")).ok()?;
    Some(dir.join(target))
}

/// The agents, versions and hashes named in the header of the live set (`# agent ID version V
/// hash H` lines), read from its first file that carries them; empty when nothing is live.
pub fn live_versions(dir: &Path) -> Vec<(String, u64, String)> {
    let Some(cur) = current(dir) else {
        return Vec::new();
    };
    let files = (crate::render::POSTFIX.iter())
        .chain(crate::render::EXIM.iter())
        .filter(|f| crate::render::carries_versions(f));
    let Some(text) = files
        .filter_map(|f| fs::read_to_string(cur.join(f)).ok())
        .next()
    else {
        return Vec::new();
    };
    text.lines()
        .take_while(|l| l.starts_with('#'))
        .filter_map(|l| {
            let mut w = l.strip_prefix("# agent ")?.split(' ');
            let (id, _, v, _, h) = (w.next()?, w.next()?, w.next()?, w.next()?, w.next()?);
            Some((id.to_string(), v.parse().ok()?, h.to_string()))
        })
        .collect()
}

/// Whether the live set equals `rendered` byte for byte.
pub fn is_current(dir: &Path, rendered: &Rendered) -> bool {
    let Some(cur) = current(dir) else {
        return false;
    };
    rendered
        .names
        .iter()
        .all(|name| fs::read(cur.join(name)).is_ok_and(|b| b == rendered.file(name)))
}

/// The set a server installed last, and where: the next install links the files that did not
/// change from there instead of writing them again.
#[derive(Debug, Default)]
pub struct Last(Option<(PathBuf, Rendered)>);

/// Writes `rendered` as a new generation and makes it live. `prepare` runs in the new
/// generation directory before the switch; its error aborts the install.
///
/// `last` records the install before (and then this one): a file that is the same as in that
/// set ([`Rendered::same_file`]) is hard-linked from its generation, when that generation is
/// still the live one: a generation is never written once it is complete, so the link is the
/// same bytes, already on disk. Anything else is written. A fresh [`Last`] writes everything.
pub fn install(
    dir: &Path,
    rendered: &Rendered,
    prepare: impl FnOnce(&Path) -> Result<(), String>,
    last: &mut Last,
) -> Result<PathBuf, InstallError> {
    let gens = dir.join(".gen");
    fs::create_dir_all(&gens).map_err(io("create directory", &gens))?;
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let name = format!("{stamp}-{}", std::process::id());
    let new = gens.join(&name);
    let live = current(dir);
    let previous =
        (live.as_deref()).and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()));
    let from = (last.0.as_ref())
        .filter(|(at, _)| live.as_deref() == Some(at.as_path()))
        .map(|(at, set)| (at.as_path(), set));
    fs::create_dir(&new).map_err(io("create directory", &new))?;
    let result = write_generation(&new, rendered, from).and_then(|()| {
        prepare(&new).map_err(InstallError::Prepare)?;
        switch(dir, &name)
    });
    if result.is_err() {
        let _ = fs::remove_dir_all(&new);
        return result.map(|()| new);
    }
    cleanup(dir, &gens, &[Some(name.as_str()), previous.as_deref()]);
    last.0 = Some((new.clone(), rendered.clone()));
    Ok(new)
}

fn write_generation(
    new: &Path,
    rendered: &Rendered,
    from: Option<(&Path, &Rendered)>,
) -> Result<(), InstallError> {
    let mut dirs = vec![new.to_path_buf()];
    for name in &rendered.names {
        let path = new.join(name);
        if let Some(parent) = path.parent()
            && !dirs.iter().any(|d| d == parent)
        {
            fs::create_dir_all(parent).map_err(io("create directory", parent))?;
            dirs.push(parent.to_path_buf());
        }
    }
    // Copying a million lines into the page cache is most of an install: two threads take the
    // files in turn.
    let next = std::sync::atomic::AtomicUsize::new(0);
    let writer = || -> Result<(), InstallError> {
        loop {
            let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let Some(name) = rendered.names.get(i) else {
                return Ok(());
            };
            let path = new.join(name);
            if let Some((at, set)) = from
                && set.same_file(rendered, name)
                && fs::hard_link(at.join(name), &path).is_ok()
            {
                continue;
            }
            write_file(&path, |f| rendered.write_file(name, f))?;
        }
    };
    let (mine, theirs) = proto::par::join(writer, writer);
    mine.and(theirs)?;
    for d in dirs.iter().rev() {
        fsync_dir(d)?;
    }
    Ok(())
}

/// Creates `path`, fills it with `fill` and fsyncs it. Unbuffered: `fill` writes pieces of a
/// file's lines (tens of KiB), a copy into a buffer would only add to the copy into the page
/// cache.
fn write_file(
    path: &Path,
    fill: impl FnOnce(&mut File) -> std::io::Result<()>,
) -> Result<(), InstallError> {
    let mut f = File::create(path).map_err(io("create", path))?;
    fill(&mut f).map_err(io("write", path))?;
    f.sync_all().map_err(io("fsync", path))
}

/// Points `DIR/current` at `.gen/NAME` atomically and makes sure the fixed links exist.
fn switch(dir: &Path, name: &str) -> Result<(), InstallError> {
    let tmp = dir.join(".current.tmp");
    let _ = fs::remove_file(&tmp);
    symlink(Path::new(".gen").join(name), &tmp).map_err(io("create symlink", &tmp))?;
    let cur = dir.join("current");
    fs::rename(&tmp, &cur).map_err(io("rename", &cur))?;
    for fixed in ["postfix", "exim"] {
        let link = dir.join(fixed);
        if fs::symlink_metadata(&link).is_err() {
            symlink(Path::new("current").join(fixed), &link)
                .map_err(io("create symlink", &link))?;
        }
    }
    fsync_dir(dir)
}

/// Removes every generation but those in `keep` (the new one and the one it replaced): each is
/// moved to `DIR/.trash/` at once (a rename), and the trash is emptied on another thread, since
/// unlinking a million lines' files takes a while and the apply's reply need not wait for it.
/// What a crash leaves in the trash goes with the next install's.
fn cleanup(dir: &Path, gens: &Path, keep: &[Option<&str>]) {
    let Ok(entries) = fs::read_dir(gens) else {
        return;
    };
    let trash = dir.join(".trash");
    let _ = fs::create_dir_all(&trash);
    for e in entries.filter_map(Result::ok) {
        let name = e.file_name().to_string_lossy().into_owned();
        if !keep.contains(&Some(name.as_str())) && fs::rename(e.path(), trash.join(&name)).is_err()
        {
            let _ = fs::remove_dir_all(e.path());
        }
    }
    let empty = move || {
        for e in fs::read_dir(&trash).into_iter().flatten().flatten() {
            let _ = fs::remove_dir_all(e.path());
        }
    };
    let _ = std::thread::Builder::new()
        .name("mxsync-cleanup".into())
        .spawn(empty);
}

#[cfg(test)]
mod tests;
