//! mxsync's end-to-end tests: one test binary, one module per area.
//!
//! - `tls`: agent to server over rustls with certificates made in the test.
//! - `tidy`: house rules that can be checked by reading the tree (STYLE.md habit 23).
//! - `agent`: `mxsync-agent run` against a real server: every kind of edit, none lost.
//! - `connections`: 10,000 idle connections: status still answers, the time limit closes them.
//! - `crash`: SIGKILL during applies never leaves a mixed or partial map set.
//! - `demo`: the README's demo command starts, serves status, follows an edit, stops.
//! - `exim`: the proof in a real Exim: `exim4 -bt` with the shipped routers, and a real daemon
//!   delivering every address to sinks, with unknown recipients deferred while stale.
//! - `disk`: a really full disk (a tmpfs filled up): the apply fails cleanly, the next succeeds.
//! - `examples`: `deploy/examples` are accepted by `check-config` and plan as documented.
//! - `generate`: man pages, completions and the configuration reference the packages ship.
//! - `partition`: a cut between agent and receiver: stale, then fresh again after the heal.
//! - `postfix`: the proof in a real Postfix (`cdb:` tables, no reload), driven by swaks, with
//!   unknown recipients deferred while stale.
//! - `truncate`: an aliases file cut in half on the primary is held; the whole one is applied.
//! - `server`: `mxsync-server` over a real socket and SQLite file, across restarts.
//! - `reload`: SIGHUP adds and removes agents without a restart and refuses a bad file.
//!
//! Helpers (binaries, temporary directories, waiting with deadlines) are in the crate's `src/lib.rs`.

// This whole binary is test code: a failed unwrap is a failed test with its message.
#![allow(clippy::unwrap_used)]

mod agent;
mod connections;
mod crash;
mod demo;
mod disk;
mod examples;
mod exim;
mod generate;
mod partition;
mod postfix;
mod postgres;
mod reload;
mod server;
mod tidy;
mod tls;
mod truncate;
