//! The formats other than aliases(5): virtual(5) maps (logical lines, key and value), and the
//! plain-line ones: `:include:` and `.forward` bodies, recipient lists, passwd(5).

use super::*;

/// A virtual(5) entry as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedVirtual {
    /// The key, lowercased: `user@domain`, a bare `user`, or `@domain`.
    pub key: String,
    /// The line the entry starts on.
    pub line: u32,
    /// The items.
    pub targets: Vec<Target>,
}

/// Parses a Postfix virtual(5) map: key, whitespace, value; same line rules as aliases.
pub fn parse_virtual(bytes: &[u8], file: &str, diags: &mut Vec<Diagnostic>) -> Vec<ParsedVirtual> {
    let mut out = Vec::new();
    let mut starts = Vec::new();
    for l in logical(bytes, file, diags) {
        if let Some((line, why)) = l.bad {
            diags.push(left_out(file, line, why));
            continue;
        }
        let split = l
            .text
            .find(|c: char| c.is_whitespace())
            .unwrap_or(l.text.len());
        let key = l.text[..split].to_lowercase();
        let value = &l.text[split..];
        if key.ends_with(':') {
            diags.push(diag(
                file,
                l.line,
                Severity::Error,
                format!("{key:?}: record is in \"key: value\" format; postmap stores the colon and the key never matches"),
            ));
            continue;
        }
        if value.trim().is_empty() {
            diags.push(diag(
                file,
                l.line,
                Severity::Error,
                format!("{key:?}: no value"),
            ));
            continue;
        }
        let starts = l.starts_after(split, &mut starts);
        let targets = parse_value_mapped(value, &LineMap { starts }, file, diags);
        out.push(ParsedVirtual {
            key,
            line: l.line,
            targets,
        });
    }
    out
}

/// The body of an `:include:` file or a `.forward` file.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ParsedList {
    /// The items, with their lines.
    pub targets: Vec<Target>,
    /// The first line is an Exim or Sieve filter header.
    pub filter: bool,
}

/// Parses an `:include:` or `.forward` body: line by line, no continuation, `#` in column 0 is a
/// comment. A line that cannot be read becomes an `invalid` item, so its owner punts rather than
/// forwarding to fewer recipients than the primary would.
pub fn parse_list(bytes: &[u8], file: &str, diags: &mut Vec<Diagnostic>) -> ParsedList {
    let mut out = ParsedList::default();
    for p in physical(bytes, false) {
        if p.line == 1
            && let Ok(t) = p.text
        {
            let lower = t.to_ascii_lowercase();
            let lower = lower.trim_start_matches('#').trim_start();
            if t.starts_with('#')
                && (lower.starts_with("exim filter") || lower.starts_with("sieve filter"))
            {
                out.filter = true;
            }
        }
        if matches!(p.class, Class::Blank | Class::Comment) {
            continue;
        }
        match p.text {
            Ok(t) => out
                .targets
                .extend(crate::parse::rhs::parse_value(t, file, p.line, diags)),
            Err(why) => {
                diags.push(diag(
                    file,
                    p.line,
                    Severity::Error,
                    format!("{why}: the owner punts"),
                ));
                out.targets.push(Target {
                    kind: crate::snapshot::Kind::Invalid,
                    value: why.to_string(),
                    line: p.line,
                });
            }
        }
    }
    out
}

/// Parses a recipient list (e.g. `relay_recipients`): the first field of each line is an address;
/// the rest of the line and continuation lines are ignored. Returns `(address, line)` pairs with
/// the address lowercased; entries that are not full addresses are reported and left out.
pub fn parse_recipients(
    bytes: &[u8],
    file: &str,
    diags: &mut Vec<Diagnostic>,
) -> Vec<(String, u32)> {
    let mut out = Vec::new();
    for p in physical(bytes, true) {
        if p.class != Class::Start {
            continue;
        }
        let Some(t) = p.readable(file, diags) else {
            continue;
        };
        let key = t.split_whitespace().next().unwrap_or("").to_lowercase();
        if key.starts_with('@') {
            diags.push(diag(
                file,
                p.line,
                Severity::Warning,
                format!("{key:?}: a catch-all cannot be listed on the secondary; left out"),
            ));
        } else if key.ends_with(':') {
            diags.push(diag(
                file,
                p.line,
                Severity::Error,
                format!("{key:?}: record is in \"key: value\" format; left out"),
            ));
        } else if addr::valid_address(&key) {
            out.push((key, p.line));
        } else {
            diags.push(diag(
                file,
                p.line,
                Severity::Error,
                format!("{key:?}: not a full address that a map can carry; left out"),
            ));
        }
    }
    out
}

/// One passwd(5) entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswdEntry {
    /// Login name.
    pub name: String,
    /// Numeric user id.
    pub uid: u32,
    /// Home directory.
    pub home: String,
    /// Line in the file.
    pub line: u32,
}

/// Parses a passwd(5) file: `name:pw:uid:gid:gecos:home:shell`.
pub fn parse_passwd(bytes: &[u8], file: &str, diags: &mut Vec<Diagnostic>) -> Vec<PasswdEntry> {
    let mut out = Vec::new();
    for p in physical(bytes, true) {
        if matches!(p.class, Class::Blank | Class::Comment) {
            continue;
        }
        let Some(t) = p.readable(file, diags) else {
            continue;
        };
        let fields = passwd_fields(t);
        let uid = fields.and_then(|f| f[2].parse::<u32>().ok());
        match (fields, uid) {
            (Some(f), Some(uid)) => out.push(PasswdEntry {
                name: f[0].to_string(),
                uid,
                home: f[5].to_string(),
                line: p.line,
            }),
            _ => diags.push(diag(
                file,
                p.line,
                Severity::Error,
                "not a passwd entry (name:pw:uid:gid:gecos:home:shell); left out".into(),
            )),
        }
    }
    out
}

/// The seven fields of a passwd line (`t.split(':')` when that gives seven), found in one
/// pass over its bytes without collecting them.
pub(in crate::parse) fn passwd_fields(t: &str) -> Option<[&str; 7]> {
    let mut fields = [""; 7];
    let (mut n, mut start) = (0, 0);
    for (i, b) in t.bytes().enumerate() {
        if b == b':' {
            // `:` is one byte: both sides are on character boundaries.
            *fields.get_mut(n)? = &t[start..i];
            n += 1;
            start = i + 1;
        }
    }
    *fields.get_mut(n)? = &t[start..];
    (n == 6).then_some(fields)
}
