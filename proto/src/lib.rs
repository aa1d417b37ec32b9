//! mxsync's pure core, shared by the agent and the server.
//!
//! - [`parse`]: every alias source from bytes to entries and diagnostics;
//! - [`build`]: assembling parsed sources into a snapshot's [`Content`];
//! - [`snapshot`]: the model and its canonical SHA-256 hash; [`delta`]: changes between two;
//! - [`plan`]: forward / split / punt for every valid address;
//! - [`sign`]: HMAC request signing; [`wire`]: the other HTTP bodies;
//! - [`addr`]: what may be written into a map; [`par`]: how the work uses the cores.
//!
//! Invariant: this crate does no I/O (no files, no network, no clock) and depends on no runtime.

pub mod addr;
pub mod build;
pub mod delta;
mod order;
pub mod par;
pub mod parse;
pub mod plan;
pub mod sign;
pub mod snapshot;
pub mod wire;

#[cfg(any(test, feature = "testkit"))]
#[doc(hidden)]
pub mod testkit;

pub use build::Builder;
pub use plan::{Class, Code, Plan, PlanRef, Planner, Reason};
pub use snapshot::{Content, Diagnostic, Kind, Severity, Snapshot, Target};
