//! Where an apply's time went, for the `steps=` of its log line.

use std::fmt;
use std::time::Instant as StdInstant;

/// Where an apply's time went, step by step, for its log line.
pub struct Steps {
    pub(super) started: StdInstant,
    last: StdInstant,
    done: Vec<(&'static str, u128)>,
}

impl Steps {
    pub(super) fn start() -> Steps {
        let now = StdInstant::now();
        Steps {
            started: now,
            last: now,
            done: Vec::new(),
        }
    }

    /// Records `name`, which ran beside the current step and took `ms`.
    pub(super) fn beside(&mut self, name: &'static str, ms: u128) {
        self.done.push((name, ms));
    }

    /// Ends the step `name` (the time since the previous one ended).
    pub(super) fn mark(&mut self, name: &'static str) {
        let now = StdInstant::now();
        self.done
            .push((name, now.duration_since(self.last).as_millis()));
        self.last = now;
    }
}

impl fmt::Display for Steps {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (name, ms)) in self.done.iter().enumerate() {
            let sep = if i == 0 { "" } else { " " };
            write!(f, "{sep}{name}={ms}")?;
        }
        Ok(())
    }
}
