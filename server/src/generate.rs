//! What the packages ship beside each binary, made from its clap definition so that it cannot
//! drift from the flags and keys: the man pages (section 1, one per subcommand too), the
//! configuration reference (section 5, from the config structs' schema) and shell completions
//! for bash, zsh and fish.
//! Both binaries include this file (the agent's `main` through `#[path]`); the hidden command
//! `generate DIR` writes them, and the package build runs it.

use std::path::Path;

use anyhow::Context;

/// Writes `NAME.1`, `NAME-SUBCOMMAND.1`, `NAME.bash`, `_NAME` (zsh) and `NAME.fish` for `cmd`
/// into `dir`, and `NAME.toml.5` from `config`, the JSON schema of the configuration; an error
/// is printed with the command's name.
pub(crate) fn generate(
    cmd: clap::Command,
    config: &schemars::Schema,
    dir: &Path,
) -> std::process::ExitCode {
    let name = cmd.get_name().to_string();
    match write_all(cmd, config, dir) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name}: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn write_all(mut cmd: clap::Command, config: &schemars::Schema, dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let name = cmd.get_name().to_string();
    // clap_complete completes hidden subcommands too: complete a copy without them.
    let mut completed = clap::Command::new(name.clone())
        .version(cmd.get_version().unwrap_or_default().to_string())
        .args(cmd.get_arguments().cloned())
        .subcommands(
            (cmd.get_subcommands())
                .filter(|s| !s.is_hide_set())
                .cloned(),
        );
    cmd.build();
    // One page for the command and one per subcommand (`mxsync-server-run(1)`), which the
    // first page's SUBCOMMANDS section names.
    let subs = (cmd.get_subcommands())
        .filter(|s| !s.is_hide_set() && s.get_name() != "help")
        .cloned();
    for page in std::iter::once(cmd.clone()).chain(subs) {
        let file = format!("{}.1", page.get_display_name().unwrap_or(page.get_name()));
        let mut text = Vec::new();
        clap_mangen::Man::new(page)
            .render(&mut text)
            .with_context(|| format!("rendering {file}"))?;
        write(&dir.join(file), &text)?;
    }
    let page = format!("{name}.toml");
    let reference = config_reference(config.as_value(), &page, &name);
    write(&dir.join(format!("{page}.5")), reference.as_bytes())?;
    for (shell, file) in [
        (clap_complete::Shell::Bash, format!("{name}.bash")),
        (clap_complete::Shell::Zsh, format!("_{name}")),
        (clap_complete::Shell::Fish, format!("{name}.fish")),
    ] {
        let mut text = Vec::new();
        clap_complete::generate(shell, &mut completed, &name, &mut text);
        write(&dir.join(file), &text)?;
    }
    Ok(())
}

fn write(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
}

/// The configuration reference, a man page of section 5 named `page` (`mxsync-server.toml`),
/// rendered from the JSON schema of the config structs: every key with its type, its default
/// and its doc comment, top-level keys first, then one section per table.
pub(crate) fn config_reference(schema: &serde_json::Value, page: &str, binary: &str) -> String {
    let mut out = format!(
        ".TH {} 5 \"\" \"{binary} {}\" \"File Formats\"\n.SH NAME\n{} \\- the {binary} \
         configuration file\n.SH DESCRIPTION\n{}\n.PP\nTOML. A key not listed here is refused, \
         and so is a value of the wrong type; \\fB{binary} check-config\\fR lists every problem \
         at once. Relative paths are taken from the file's directory.\n",
        roff(&page.to_uppercase()),
        env!("CARGO_PKG_VERSION"),
        roff(page),
        roff(text(schema)),
    );
    let defs = &schema["$defs"];
    let mut tables = Vec::new();
    out.push_str(".SH KEYS\n");
    keys(schema, defs, &mut out, &mut tables, "");
    while let Some((header, def)) = tables.pop() {
        out.push_str(&format!(".SH \"{}\"\n{}\n", roff(&header), roff(text(def))));
        keys(def, defs, &mut out, &mut tables, &header);
    }
    out.push_str(&format!(
        ".SH SEE ALSO\n\\fB{binary}\\fR(1); the examples under /usr/share/doc/{binary}/ and \
         /etc/mxsync/.\n"
    ));
    out
}

/// The entries of object `obj`; its tables are pushed onto `tables` (in reverse, so popping
/// them gives the file's order).
fn keys<'a>(
    obj: &'a serde_json::Value,
    defs: &'a serde_json::Value,
    out: &mut String,
    tables: &mut Vec<(String, &'a serde_json::Value)>,
    parent: &str,
) {
    let required: Vec<&str> = (obj["required"].as_array().into_iter().flatten())
        .filter_map(|v| v.as_str())
        .collect();
    let mut found = Vec::new();
    let Some(props) = obj["properties"].as_object() else {
        return;
    };
    for (key, prop) in props {
        let name = if parent.is_empty() {
            key.clone()
        } else {
            format!("{}.{key}", parent.trim_matches(['[', ']']))
        };
        let shape = resolve(prop, defs);
        let (table, repeated) = match &shape {
            Shape::Table(def) => (Some(*def), false),
            Shape::List(item) => match resolve(item, defs) {
                Shape::Table(def) => (Some(def), true),
                _ => (None, false),
            },
            _ => (None, false),
        };
        if let Some(def) = table {
            let header = if repeated {
                format!("[[{name}]]")
            } else {
                format!("[{name}]")
            };
            found.push((header, def));
            continue;
        }
        let mut head = format!(
            "\\fB{}\\fR = \\fI{}\\fR",
            roff(key),
            roff(&shape.name(defs))
        );
        if required.contains(&key.as_str()) {
            head.push_str(" (required)");
        } else if let Some(d) = prop.get("default").filter(|d| !d.is_null()) {
            head.push_str(&format!(" (default: {})", roff(&toml_value(d))));
        }
        out.push_str(&format!(".TP\n{head}\n{}\n", roff(text(prop))));
        if let Shape::Choice(values) = &shape {
            for v in values {
                out.push_str(&format!(
                    ".RS\n.TP\n\\fB\"{}\"\\fR\n{}\n.RE\n",
                    roff(v["const"].as_str().unwrap_or("")),
                    roff(text(v))
                ));
            }
        }
    }
    tables.extend(found.into_iter().rev());
}

/// What a property holds, with options and references seen through.
enum Shape<'a> {
    Table(&'a serde_json::Value),
    List(&'a serde_json::Value),
    Choice(Vec<&'a serde_json::Value>),
    Scalar(String),
}

impl Shape<'_> {
    fn name(&self, defs: &serde_json::Value) -> String {
        match self {
            Shape::Table(_) => "table".into(),
            Shape::List(item) => format!("array of {}", resolve(item, defs).name(defs)),
            Shape::Choice(_) => "string".into(),
            Shape::Scalar(t) => t.clone(),
        }
    }
}

fn resolve<'a>(prop: &'a serde_json::Value, defs: &'a serde_json::Value) -> Shape<'a> {
    if let Some(r) = prop["$ref"].as_str() {
        let def = &defs[r.trim_start_matches("#/$defs/")];
        return match def["oneOf"].as_array() {
            Some(values) => Shape::Choice(values.iter().collect()),
            None if def["properties"].is_object() => Shape::Table(def),
            None => resolve(def, defs),
        };
    }
    if let Some(any) = prop["anyOf"].as_array()
        && let Some(some) = any.iter().find(|v| v["type"] != "null")
    {
        return resolve(some, defs);
    }
    let ty = match &prop["type"] {
        serde_json::Value::Array(types) => types.iter().find(|t| *t != "null").unwrap_or(&types[0]),
        t => t,
    };
    match ty.as_str() {
        Some("array") => Shape::List(&prop["items"]),
        Some("object") if prop["properties"].is_object() => Shape::Table(prop),
        Some(t) => Shape::Scalar(t.into()),
        None => Shape::Scalar("value".into()),
    }
}

/// A schema node's doc comment, on one line.
fn text(node: &serde_json::Value) -> &str {
    node["description"].as_str().unwrap_or("")
}

/// A default as it would be written in the file.
fn toml_value(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Array(items) => {
            let items: Vec<String> = items.iter().map(toml_value).collect();
            format!("[{}]", items.join(", "))
        }
        other => other.to_string(),
    }
}

/// Escapes text for roff: backslashes, and a leading dot or quote that would read as a request.
fn roff(s: &str) -> String {
    let s = s
        .replace('\\', "\\e")
        .replace('-', "\\-")
        .replace('\n', " ");
    if s.starts_with(['.', '\'']) {
        format!("\\&{s}")
    } else {
        s
    }
}
