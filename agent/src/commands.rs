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

/// Every `:include:` an alias names by a relative path, as an error line (`file:line: error:
/// ...`): Postfix's local(8) bounces the mail of such an alias, and mxsync punts it.
pub fn relative_includes(content: &Content) -> Vec<String> {
    (content.aliases.iter())
        .flat_map(|a| {
            let file = content
                .files
                .get(a.file as usize)
                .map_or("", String::as_str);
            (a.targets.iter())
                .filter(|t| t.kind == proto::Kind::Include && !t.value.starts_with('/'))
                .map(move |t| {
                    format!(
                        "{file}:{}: error: {}: :include:{} is a relative path, which Postfix \
                         refuses (the alias's mail bounces on the primary); write it absolute",
                        a.line, a.name, t.value
                    )
                })
        })
        .collect()
}

/// One `lint` finding: an alias that punts only because of inline items, and its rewrite.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// `file:line` of the alias.
    pub origin: String,
    /// The alias name.
    pub name: String,
    /// The items only the primary can deliver (as written).
    pub inline: Vec<String>,
    /// The items the secondary could deliver or pass on.
    pub rest: Vec<String>,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let helper = format!("{}-primary", self.name);
        writeln!(
            f,
            "{}: {} punts as a whole because of {}; split it so the secondary can deliver the rest:",
            self.origin,
            self.name,
            self.inline.join(", ")
        )?;
        writeln!(f, "    {}: {}, {helper}", self.name, self.rest.join(", "))?;
        writeln!(f, "    {helper}: {}", self.inline.join(", "))
    }
}

/// Aliases that punt only because a pipe, file or include is written directly in their list,
/// beside targets that the secondary could deliver (remote addresses, or names that forward).
pub fn lint(content: &Content) -> Vec<Finding> {
    use proto::{Class, Kind};
    let mut planner = Planner::new(content);
    let domain = content.domains.first().cloned().unwrap_or_default();
    let mut out = Vec::new();
    for a in &content.aliases {
        let inline: Vec<&proto::Target> = a
            .targets
            .iter()
            .filter(|t| matches!(t.kind, Kind::Pipe | Kind::File | Kind::Include))
            .collect();
        if inline.is_empty() || inline.len() == a.targets.len() {
            continue;
        }
        let rest: Vec<&proto::Target> = a.targets.iter().filter(|t| !inline.contains(t)).collect();
        if rest
            .iter()
            .any(|t| !matches!(t.kind, Kind::Address | Kind::Local))
        {
            continue;
        }
        let deliverable = rest.iter().any(|t| {
            let address = match t.kind {
                Kind::Local => format!("{}@{domain}", t.value),
                _ => t.value.clone(),
            };
            match planner.plan(&address) {
                Some(p) => p.class != Class::Punt,
                // Not a served address: a remote one, delivered by the secondary.
                None => {
                    t.kind == Kind::Address
                        && !content
                            .domains
                            .iter()
                            .any(|d| address.ends_with(&format!("@{d}")))
                }
            }
        });
        if deliverable {
            let quote = |t: &proto::Target| match t.kind {
                Kind::Pipe if t.value.contains([' ', ',']) => format!("\"{}\"", t.value),
                Kind::Include => format!(":include:{}", t.value),
                _ => t.value.clone(),
            };
            let file = content
                .files
                .get(a.file as usize)
                .map_or("", String::as_str);
            out.push(Finding {
                origin: format!("{file}:{}", a.line),
                name: a.name.clone(),
                inline: inline.iter().map(|t| quote(t)).collect(),
                rest: rest.iter().map(|t| quote(t)).collect(),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests;
