//! Local commands that need no network: `plan` prints every plan as JSON Lines, `lint` shows
//! aliases that punt only because of an inline pipe, file or include.

use std::io::Write;

use proto::{Content, Planner};

/// Writes every plan of `content` as JSON Lines (sorted by address) to `out`, and every
/// diagnostic, and every name the primary does not know, to `err`.
pub fn plan(content: &Content, out: &mut dyn Write, err: &mut dyn Write) -> std::io::Result<usize> {
    let mut planner = Planner::new(content);
    let plans = planner.plan_all();
    for p in &plans {
        serde_json::to_writer(&mut *out, p).map_err(std::io::Error::other)?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    report(content, &planner, err)?;
    Ok(plans.len())
}

/// Writes diagnostics and unknown names to `err`.
pub fn report(
    content: &Content,
    planner: &Planner<'_>,
    err: &mut dyn Write,
) -> std::io::Result<()> {
    for d in &content.diagnostics {
        writeln!(err, "{d}")?;
    }
    for (name, origin) in planner.unknown_names() {
        writeln!(
            err,
            "{origin}: warning: {name:?} is neither an alias nor a user; the primary will bounce it"
        )?;
    }
    Ok(())
}
