//! Installing a rendered file set: the only code that writes map files.
//!
//! A set is written into a fresh generation directory (`DIR/.gen/NAME/`): each text map and,
//! with [`Options::cdb`], its CDB table (`NAME.cdb`) beside it, every file and directory with
//! the modes [`Options`] gives whatever the process umask, and fsynced; an optional `prepare`
//! command runs there (e.g. `postmap`), and only then the symlink `DIR/current` is switched to
//! it with one atomic rename. `DIR/postfix` and `DIR/exim` are fixed links into `current/`. So
//! a reader, or a crash at any point, sees either the whole old set or the whole new set, never
//! a mix.
//!
//! The generation it replaced goes at once: its changed files are unlinked before `install`
//! returns, the rest is moved to `DIR/.trash/` and removed there on another thread. A process
//! that has one of its files open keeps reading it; a long-running Postfix daemon notices that
//! the table it holds has no link left and restarts before its next connection, so the new
//! tables are read without `postfix reload`.

use std::fs::{self, File};
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use crate::render::Rendered;

mod cdb;

/// How a generation is written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Options {
    /// Whether each map gets its CDB table (`NAME.cdb`) beside it.
    pub cdb: bool,
    /// The group that owns what is written: directories 0750 and files 0640 then, so that
    /// only that group's MTA reads the addresses; 0755 and 0644 without one.
    pub group: Option<u32>,
}

impl Options {
    fn dir_mode(&self) -> u32 {
        if self.group.is_some() { 0o750 } else { 0o755 }
    }

    fn file_mode(&self) -> u32 {
        if self.group.is_some() { 0o640 } else { 0o644 }
    }

    /// Gives `path` (a directory) its mode and group.
    fn own_dir(&self, path: &Path) -> Result<(), InstallError> {
        fs::set_permissions(path, fs::Permissions::from_mode(self.dir_mode()))
            .map_err(io("set the mode of", path))?;
        if let Some(gid) = self.group {
            std::os::unix::fs::chown(path, None, Some(gid))
                .map_err(io("set the group of", path))?;
        }
        Ok(())
    }

    /// Gives the open file `f` at `path` its mode and group.
    fn own_file(&self, f: &File, path: &Path) -> Result<(), InstallError> {
        f.set_permissions(fs::Permissions::from_mode(self.file_mode()))
            .map_err(io("set the mode of", path))?;
        if let Some(gid) = self.group {
            std::os::unix::fs::fchown(f, None, Some(gid)).map_err(io("set the group of", path))?;
        }
        Ok(())
    }
}

/// The CDB table of map `name` (`postfix/virtual.cdb`): what Postfix opens for
/// `cdb:DIR/postfix/virtual` and Exim for `cdb{DIR/exim/forward.cdb}`.
pub fn cdb_name(name: &str) -> String {
    format!("{name}.cdb")
}

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

/// Whether the live set equals `rendered` byte for byte, has a CDB table beside each map
/// exactly when `opts` asks for one, and has the modes `opts` gives.
pub fn is_current(dir: &Path, rendered: &Rendered, opts: &Options) -> bool {
    let Some(cur) = current(dir) else {
        return false;
    };
    let mode_ok = |path: &Path, mode: u32| {
        fs::metadata(path).is_ok_and(|m| {
            m.permissions().mode() & 0o777 == mode
                && opts
                    .group
                    .is_none_or(|g| std::os::unix::fs::MetadataExt::gid(&m) == g)
        })
    };
    mode_ok(&cur, opts.dir_mode())
        && rendered.names.iter().all(|name| {
            let table = cur.join(cdb_name(name));
            fs::read(cur.join(name)).is_ok_and(|b| b == rendered.file(name))
                && mode_ok(&cur.join(name), opts.file_mode())
                && table.exists() == opts.cdb
                && (!opts.cdb || mode_ok(&table, opts.file_mode()))
        })
}

/// The set a server installed last, and where: the next install links the files that did not
/// change from there instead of writing them again.
#[derive(Debug, Default)]
pub struct Last {
    /// Where the last set went, and the set.
    set: Option<(PathBuf, Rendered)>,
    /// The records of its tables' pieces, which the next tables reuse where they share them.
    tables: std::sync::Mutex<cdb::Cache>,
}

/// Writes `rendered` as a new generation, as `opts` says, and makes it live. `prepare` runs
/// in the new generation directory before the switch; its error aborts the install.
///
/// `last` records the install before (and then this one): a file that is the same as in that
/// set ([`Rendered::same_file`]) is hard-linked from its generation, when that generation is
/// still the live one: a generation is never written once it is complete, so the link is the
/// same bytes, already on disk. Anything else is written. A fresh [`Last`] writes everything.
pub fn install(
    dir: &Path,
    rendered: &Rendered,
    opts: &Options,
    prepare: impl FnOnce(&Path) -> Result<(), String>,
    last: &mut Last,
) -> Result<PathBuf, InstallError> {
    let gens = dir.join(".gen");
    fs::create_dir_all(&gens).map_err(io("create directory", &gens))?;
    // The MTA's user must reach the maps through these, whatever the umask made them.
    opts.own_dir(dir)?;
    opts.own_dir(&gens)?;
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let name = format!("{stamp}-{}", std::process::id());
    let new = gens.join(&name);
    let live = current(dir);
    let from = (last.set.as_ref())
        .filter(|(at, _)| live.as_deref() == Some(at.as_path()))
        .map(|(at, set)| (at.as_path(), set));
    fs::create_dir(&new).map_err(io("create directory", &new))?;
    let result = write_generation(&new, rendered, opts, from, &last.tables).and_then(|()| {
        prepare(&new).map_err(InstallError::Prepare)?;
        switch(dir, &name)
    });
    if result.is_err() {
        let _ = fs::remove_dir_all(&new);
        return result.map(|()| new);
    }
    if let Some(old) = live.as_deref() {
        retire(old);
    }
    cleanup(dir, &gens, &name);
    last.set = Some((new.clone(), rendered.clone()));
    Ok(new)
}

fn write_generation(
    new: &Path,
    rendered: &Rendered,
    opts: &Options,
    from: Option<(&Path, &Rendered)>,
    tables: &std::sync::Mutex<cdb::Cache>,
) -> Result<(), InstallError> {
    opts.own_dir(new)?;
    let mut dirs = vec![new.to_path_buf()];
    for name in &rendered.names {
        let path = new.join(name);
        if let Some(parent) = path.parent()
            && !dirs.iter().any(|d| d == parent)
        {
            fs::create_dir_all(parent).map_err(io("create directory", parent))?;
            opts.own_dir(parent)?;
            dirs.push(parent.to_path_buf());
        }
    }
    // Each table, then each map, the larger work first: (index into names, whether it is
    // the table).
    let jobs: Vec<(usize, bool)> = (0..rendered.names.len())
        .filter(|_| opts.cdb)
        .map(|i| (i, true))
        .chain((0..rendered.names.len()).map(|i| (i, false)))
        .collect();
    // Copying a million lines into the page cache is most of an install: a thread per core (at
    // least two, as fsync waits) takes the files in turn.
    let next = std::sync::atomic::AtomicUsize::new(0);
    let writer = || -> Result<(), InstallError> {
        loop {
            let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let Some(&(n, table)) = jobs.get(i) else {
                return Ok(());
            };
            let name = rendered.names[n];
            let file = if table {
                cdb_name(name)
            } else {
                name.to_string()
            };
            let path = new.join(&file);
            // The same text is the same table, already on disk with the same modes (the
            // options are the server's, unchanged since that install).
            if let Some((at, set)) = from
                && set.same_file(rendered, name)
                && fs::hard_link(at.join(&file), &path).is_ok()
            {
                continue;
            }
            if table {
                write_cdb(&path, rendered, name, opts, tables)?;
            } else {
                write_file(&path, opts, |f| rendered.write_file(name, f))?;
            }
        }
    };
    let writers = proto::par::threads().clamp(2, jobs.len().max(2));
    (proto::par::on_threads(writers, writer).into_iter()).collect::<Result<(), _>>()?;
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
    opts: &Options,
    fill: impl FnOnce(&mut File) -> std::io::Result<()>,
) -> Result<(), InstallError> {
    let mut f = File::create(path).map_err(io("create", path))?;
    opts.own_file(&f, path)?;
    fill(&mut f).map_err(io("write", path))?;
    f.sync_all().map_err(io("fsync", path))
}

/// Writes the CDB table of map `name` at `path` ([`cdb::write`]), reusing from `cache` the
/// records of the pieces it shares with the table before.
fn write_cdb(
    path: &Path,
    rendered: &Rendered,
    name: &'static str,
    opts: &Options,
    cache: &std::sync::Mutex<cdb::Cache>,
) -> Result<(), InstallError> {
    let f = File::create(path).map_err(io("create", path))?;
    opts.own_file(&f, path)?;
    let lock = || {
        cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    };
    let mut pieces = lock().take(name);
    let written = cdb::write(&f, rendered, name, &mut pieces);
    lock().put(name, pieces);
    written.map_err(io("write", path))?;
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

/// Unlinks, at once, the files of the replaced generation `old` that the new one did not link
/// (what changed): a Postfix daemon holding one sees it has no link left and restarts before
/// its next connection. (Unlinking a file that a process holds open frees nothing yet, so
/// this is quick; the rest goes with the trash.)
fn retire(old: &Path) {
    let mut dirs = vec![old.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in fs::read_dir(&d).into_iter().flatten().flatten() {
            let Ok(meta) = fs::symlink_metadata(e.path()) else {
                continue;
            };
            if meta.is_dir() {
                dirs.push(e.path());
            } else if std::os::unix::fs::MetadataExt::nlink(&meta) == 1 {
                let _ = fs::remove_file(e.path());
            }
        }
    }
}

/// Removes every generation but `keep` (the new one): each is moved to `DIR/.trash/` at once
/// (a rename), and the trash is emptied on another thread, since unlinking a million lines'
/// files takes a while and the apply's reply need not wait for it. What a crash leaves in the
/// trash goes with the next install's.
fn cleanup(dir: &Path, gens: &Path, keep: &str) {
    let Ok(entries) = fs::read_dir(gens) else {
        return;
    };
    let trash = dir.join(".trash");
    let _ = fs::create_dir_all(&trash);
    for e in entries.filter_map(Result::ok) {
        let name = e.file_name().to_string_lossy().into_owned();
        if name != keep && fs::rename(e.path(), trash.join(&name)).is_err() {
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
