//! The agent's persisted counters: the snapshot version (rises only when the content hash
//! changes) and the request sequence number (strictly increasing across restarts).
//!
//! Both live in `STATE_DIR/state.json`, written atomically (temp file, fsync, rename). The
//! sequence number is also at least the current time in microseconds, so even an agent whose
//! state directory was lost never reuses a number a receiver has already accepted.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// What is kept on disk.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Saved {
    /// The current snapshot version.
    pub version: u64,
    /// The hash of that version's content.
    pub hash: String,
    /// The highest sequence number handed out.
    pub seq: u64,
}

/// The counters and where they are kept.
#[derive(Debug)]
pub struct Counters {
    path: PathBuf,
    saved: Saved,
}

fn now_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

impl Counters {
    /// Loads `dir/state.json` (creating `dir`); a missing file starts from zero.
    pub fn load(dir: &Path) -> anyhow::Result<Counters> {
        use anyhow::Context;
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join("state.json");
        let saved = match std::fs::read(&path) {
            Ok(b) => {
                serde_json::from_slice(&b).with_context(|| format!("parsing {}", path.display()))?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Saved::default(),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        Ok(Counters { path, saved })
    }

    /// The current version and hash.
    pub fn current(&self) -> (u64, &str) {
        (self.saved.version, &self.saved.hash)
    }

    /// Records that the content now hashes to `hash`: the version rises only if the hash
    /// changed. Returns the version.
    pub fn observe(&mut self, hash: &str) -> anyhow::Result<u64> {
        if self.saved.hash != hash {
            self.saved.version += 1;
            self.saved.hash = hash.to_string();
            self.save()?;
        }
        Ok(self.saved.version)
    }

    /// Moves the version above `floor` (a receiver holds a higher version: our state was lost).
    pub fn raise_above(&mut self, floor: u64) -> anyhow::Result<u64> {
        if self.saved.version <= floor {
            self.saved.version = floor + 1;
            self.save()?;
        }
        Ok(self.saved.version)
    }

    /// The next sequence number, persisted before it is used.
    pub fn next_seq(&mut self) -> anyhow::Result<u64> {
        self.saved.seq = (self.saved.seq + 1).max(now_micros());
        self.save()?;
        Ok(self.saved.seq)
    }

    fn save(&self) -> anyhow::Result<()> {
        use anyhow::Context;
        let tmp = self.path.with_extension("json.tmp");
        let mut f =
            std::fs::File::create(&tmp).with_context(|| format!("writing {}", tmp.display()))?;
        f.write_all(&serde_json::to_vec(&self.saved)?)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &self.path)
            .with_context(|| format!("renaming to {}", self.path.display()))?;
        if let Some(dir) = self.path.parent() {
            std::fs::File::open(dir).and_then(|d| d.sync_all())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
