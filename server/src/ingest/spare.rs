//! The spare content a delta is applied to in place, and freeing what an apply replaced.

use std::fmt;
use std::sync::Arc;

use proto::delta::Changes;

use crate::{Applied, Server, lock};

/// The content of an agent's snapshot before the applied one, and the changes from it to the
/// applied one (whose hash is `to`): the next delta against `to` is applied to it in place, its
/// entries moved rather than copied. A delta on a 1M-entry content otherwise starts with a deep
/// copy of the applied content, which readers share (0.1-0.2 s). The price is a second content
/// in memory between applies (the one a delta used to copy while it was applied).
pub struct Spare {
    content: proto::Content,
    changes: Changes,
    pub(super) to: String,
}

impl fmt::Debug for Spare {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Spare {{ to: {} }}", self.to)
    }
}

impl Spare {
    /// The applied content (hash `to`), then `changes` applied to it, made from the spare.
    pub(super) fn catch_up(
        self,
        changes: &Changes,
    ) -> Result<proto::Content, proto::delta::DeltaError> {
        let mut c = proto::delta::apply_owned(self.content, &self.changes)?;
        c.normalize_patched();
        proto::delta::apply_owned(c, changes)
    }
}

/// Frees `what` on another thread: a million aliases take a while, and a reply waits.
pub(super) fn free_later<T: Send + 'static>(what: T) {
    let _ = std::thread::Builder::new()
        .name("mxsync-free".into())
        .spawn(move || drop(what));
}

/// Whether the agent whose live state is `l` keeps a spare, and if so whether it leads to the
/// applied snapshot (tests).
#[cfg(test)]
pub(crate) fn spare_fits(l: &crate::Live) -> Option<bool> {
    let to = &l.spare.as_ref()?.to;
    Some(l.applied.as_ref().is_some_and(|a| &a.hash == to))
}

/// Last stage: after a delta, the snapshot this one replaced becomes the spare the next delta
/// is applied to, unless a reader still holds it; otherwise it is freed on another thread.
pub(super) fn keep_spare(
    server: &Server,
    agent: &str,
    old: Arc<Applied>,
    changes: Option<&Changes>,
    to: &str,
) {
    let spare = match changes {
        Some(c) => Arc::try_unwrap(old).map(|old| (old, c.clone())),
        None => Err(old),
    };
    match spare {
        Ok((old, changes)) => {
            let Applied { content, part, .. } = old;
            free_later(part);
            let spare = Spare {
                content,
                changes,
                to: to.to_string(),
            };
            if let Some(l) = lock(&server.live).get_mut(agent) {
                l.spare = Some(Box::new(spare));
            }
        }
        Err(old) => free_later(old),
    }
}
