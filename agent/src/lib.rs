//! `mxsync-agent`: runs on the primary, reads the alias sources, and (in `run` and `once`) pushes
//! signed snapshots to the receivers.
//!
//! - [`config`]: the TOML file;
//! - [`collect`]: reading the sources from disk into a snapshot's content;
//! - [`commands`]: the `plan` and `lint` output;
//! - [`run`]: watching, versioning and the `run`/`once` loops; [`push`]: delivery to receivers;
//!   [`state`]: the persisted version and sequence counters.
//!
//! Invariant: the agent never modifies a watched file.

pub mod collect;
pub mod commands;
pub mod config;
pub mod push;
pub mod run;
pub mod state;

/// Locks `m`, taking the data of a lock poisoned by a panic elsewhere as it is (the counters and
/// the JSON fallback's time stay usable, as in the server's `lock`).
pub fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
