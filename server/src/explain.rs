//! `mxsync-server explain`: a plan in words a postmaster reads at a glance.

use std::fmt::Write;

use proto::{Class, Code, Plan};

fn code(c: Code) -> &'static str {
    match c {
        Code::Pipe => "a pipe to a command",
        Code::File => "delivery to a file",
        Code::Include => "an :include: the secondary cannot follow",
        Code::IncludeUnreadable => "an :include: file the agent could not read",
        Code::Backslash => "a \\user (mailbox without further aliasing)",
        Code::Special => "a special (:fail:, :defer:, :blackhole:, error:)",
        Code::Mailbox => "a mailbox on the primary",
        Code::Procmail => "a ~/.procmailrc (the primary's filter runs first)",
        Code::DotForward => "a ~/.forward only the primary can carry out",
        Code::Unknown => "something only the primary understands (or a name it will bounce)",
        Code::Loop => "an alias loop",
        Code::Depth => "an expansion deeper than 20 levels",
    }
}

/// The explanation of `plan`, several lines.
pub fn text(plan: &Plan) -> String {
    let mut out = String::new();
    let what = match plan.class {
        Class::Forward => "forward: the secondary delivers it itself",
        Class::Split => {
            "split: the secondary delivers the remote part and sends the rest to the primary"
        }
        Class::Punt => "punt: the secondary relays it unchanged to the primary",
    };
    let _ = writeln!(out, "{}: {what}", plan.address);
    if !plan.forward.is_empty() {
        let _ = writeln!(
            out,
            "  delivered by the secondary to: {}",
            plan.forward.join(", ")
        );
    }
    if plan.class == Class::Split {
        let _ = writeln!(out, "  sent to the primary as: {}", plan.punt.join(", "));
    }
    if !plan.reasons.is_empty() {
        let _ = writeln!(out, "  because of:");
        for r in &plan.reasons {
            let via = r
                .via
                .as_deref()
                .map(|v| format!("{v}: "))
                .unwrap_or_default();
            let at = if r.origin.is_empty() {
                String::new()
            } else {
                format!(" ({})", r.origin)
            };
            let _ = writeln!(out, "    {via}{} {:?}{at}", code(r.code), r.target);
        }
    }
    out
}
