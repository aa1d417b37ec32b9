//! What both binaries' configurations share (the agent's `config` includes this file too): the
//! error that lists every problem of a file, and reading a secret file.

use std::path::{Path, PathBuf};

/// Every problem found in a configuration file.
#[derive(Debug, thiserror::Error)]
#[error("{}: {} problem(s):\n  {}", .path.display(), .problems.len(), .problems.join("\n  "))]
pub struct ConfigError {
    /// The file.
    pub path: PathBuf,
    /// Each problem, naming the key.
    pub problems: Vec<String>,
}

/// Reads a secret file: private to its owner, one line, long enough.
pub fn read_secret(path: &Path) -> Result<String, String> {
    use std::os::unix::fs::PermissionsExt;
    let ctx = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
    let mode = std::fs::metadata(path)
        .map_err(|e| ctx(&e))?
        .permissions()
        .mode();
    let text = std::fs::read_to_string(path).map_err(|e| ctx(&e))?;
    proto::sign::secret_from(mode, &text).map_err(|e| ctx(&e))
}
