//! Line structure of the source formats: logical lines with continuation (aliases, virtual),
//! plain lines (`:include:` bodies, `.forward`, recipient lists, passwd).

use std::borrow::Cow;

use super::rhs::{LineMap, parse_value_mapped};
use crate::addr;
use crate::snapshot::{Diagnostic, Severity, Target};

/// One physical line and what it is.
struct Physical<'a> {
    line: u32,
    text: Result<&'a str, &'static str>,
    class: Class,
}

impl<'a> Physical<'a> {
    /// The line's text; a line that cannot be read is left out, with a diagnostic.
    fn readable(&self, file: &str, diags: &mut Vec<Diagnostic>) -> Option<&'a str> {
        self.text
            .map_err(|why| diags.push(left_out(file, self.line, why)))
            .ok()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Class {
    Blank,
    Comment,
    Continuation,
    Start,
}

fn is_blank_byte(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | 0x0b | 0x0c)
}

/// Splits bytes into physical lines, dropping the CR of CRLF, and checks each for NUL bytes and
/// UTF-8. `comment_anywhere`: a line whose first non-blank is `#` is a comment (aliases, maps);
/// otherwise only `#` in column 0 is (`.forward`, `:include:`).
fn physical(bytes: &[u8], comment_anywhere: bool) -> impl Iterator<Item = Physical<'_>> {
    physical_in(bytes, Parts::of(bytes), comment_anywhere)
}

/// [`physical`], with `bytes` cut into `parts`.
fn physical_in<'a>(
    bytes: &[u8],
    parts: Parts<'a>,
    comment_anywhere: bool,
) -> impl Iterator<Item = Physical<'a>> {
    let mut n = 0u32;
    let trailing_newline = bytes.last() == Some(&b'\n');
    let mut parts = parts.peekable();
    std::iter::from_fn(move || {
        let (raw, text) = parts.next()?;
        if trailing_newline && parts.peek().is_none() {
            return None;
        }
        n = n.saturating_add(1);
        let cr = raw.last() == Some(&b'\r');
        let raw = if cr { &raw[..raw.len() - 1] } else { raw };
        let first = raw.iter().position(|&b| !is_blank_byte(b));
        let class = match first {
            None => Class::Blank,
            Some(i) if raw[i] == b'#' && (comment_anywhere || i == 0) => Class::Comment,
            Some(0) => Class::Start,
            Some(_) => Class::Continuation,
        };
        let text = match text {
            // The CR is one byte, so the rest ends on a character boundary.
            Some(t) if cr => Ok(&t[..t.len() - 1]),
            Some(t) => Ok(t),
            None if raw.contains(&0) => Err("line contains a nul byte"),
            None => std::str::from_utf8(raw).map_err(|_| "line is not valid utf-8"),
        };
        Some(Physical {
            line: n,
            text,
            class,
        })
    })
}

/// The parts of bytes between newlines, each with its text when the whole is known to be
/// UTF-8 without NUL bytes (nearly every file: it is then checked once, and cut as a string,
/// which finds newlines a word at a time); otherwise each line is checked by itself.
enum Parts<'a> {
    Text(std::str::Split<'a, char>),
    Bytes(std::slice::Split<'a, u8, fn(&u8) -> bool>),
}

impl<'a> Parts<'a> {
    fn of(bytes: &'a [u8]) -> Self {
        match std::str::from_utf8(bytes) {
            Ok(s) if !bytes.contains(&0) => Parts::Text(s.split('\n')),
            _ => Self::each(bytes),
        }
    }

    /// Parts each checked by itself.
    fn each(bytes: &'a [u8]) -> Self {
        Parts::Bytes(bytes.split(|&b| b == b'\n'))
    }
}

impl<'a> Iterator for Parts<'a> {
    type Item = (&'a [u8], Option<&'a str>);

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            Parts::Text(lines) => lines.next().map(|l| (l.as_bytes(), Some(l))),
            Parts::Bytes(lines) => lines.next().map(|l| (l, None)),
        }
    }
}

/// A logical line (an entry and its continuation lines) of an aliases or virtual file.
struct Logical<'b> {
    line: u32,
    /// The text: the line itself when nothing continues it (most entries), so that reading an
    /// entry copies nothing.
    text: Cow<'b, str>,
    /// Where each continuation line starts in `text`, and its line (the first line starts at 0
    /// on `line`).
    more: Vec<(usize, u32)>,
    bad: Option<(u32, &'static str)>,
}

impl Logical<'_> {
    /// The line starts of the text from offset `shift` on, in `buf` (reused between entries):
    /// what a [`LineMap`] of that part holds.
    fn starts_after<'s>(&self, shift: usize, buf: &'s mut Vec<(usize, u32)>) -> &'s [(usize, u32)] {
        buf.clear();
        buf.push((0, self.line));
        buf.extend((self.more.iter()).map(|&(o, line)| (o.saturating_sub(shift), line)));
        buf
    }
}

/// Joins continuation lines as Postfix's `readllines` does: blank and comment lines inside an
/// entry are dropped and the entry goes on; text that continues nothing is reported.
fn logical<'b>(bytes: &'b [u8], file: &str, diags: &mut Vec<Diagnostic>) -> Vec<Logical<'b>> {
    let mut out: Vec<Logical<'_>> = Vec::new();
    let mut open = false;
    for p in physical(bytes, true) {
        match p.class {
            Class::Blank | Class::Comment => {
                if let (Err(why), Class::Comment) = (p.text, p.class) {
                    // A broken comment line cannot change anything; say so only once per line.
                    diags.push(diag(file, p.line, Severity::Warning, why.to_string()));
                }
            }
            Class::Continuation if !open => diags.push(diag(
                file,
                p.line,
                Severity::Error,
                "line starts with whitespace but continues no entry".into(),
            )),
            Class::Continuation => {
                if let Some(cur) = out.last_mut() {
                    match p.text {
                        Ok(t) => {
                            cur.more.push((cur.text.len(), p.line));
                            cur.text.to_mut().push_str(t);
                        }
                        Err(why) => {
                            cur.bad.get_or_insert((p.line, why));
                        }
                    }
                }
            }
            Class::Start => {
                open = true;
                let (text, bad) = match p.text {
                    Ok(t) => (Cow::Borrowed(t), None),
                    Err(why) => (Cow::Borrowed(""), Some((p.line, why))),
                };
                out.push(Logical {
                    line: p.line,
                    text,
                    more: Vec::new(),
                    bad,
                });
            }
        }
    }
    out
}

fn diag(file: &str, line: u32, severity: Severity, message: String) -> Diagnostic {
    Diagnostic {
        file: file.to_string(),
        line,
        severity,
        message,
    }
}

/// The error for an entry that cannot be read at all (`why`), left out of the content.
fn left_out(file: &str, line: u32, why: impl std::fmt::Display) -> Diagnostic {
    diag(
        file,
        line,
        Severity::Error,
        format!("{why}: entry left out"),
    )
}

/// An aliases(5) entry as read, before duplicates are resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedAlias {
    /// The name, lowercased.
    pub name: String,
    /// The line the entry starts on.
    pub line: u32,
    /// The items.
    pub targets: Vec<Target>,
}

/// Finds the first `:` outside quotes and comments, as postalias's tokenizer does.
fn name_colon(s: &str) -> Option<usize> {
    let mut quoted = false;
    let mut comment = 0u32;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' => escaped = true,
            '"' if comment == 0 => quoted = !quoted,
            '(' if !quoted => comment += 1,
            ')' if !quoted && comment > 0 => comment -= 1,
            ':' if !quoted && comment == 0 => return Some(i),
            _ => {}
        }
    }
    None
}

/// The name part of an alias, internalized: quotes and backslash escapes removed, comments
/// dropped, surrounding whitespace trimmed.
fn internal_name(raw: &str) -> String {
    if !raw.bytes().any(|b| matches!(b, b'\\' | b'"' | b'(')) {
        // Nothing to remove (a `)` outside a comment is kept as it is).
        return raw.trim().to_string();
    }
    let mut out = String::new();
    let mut quoted = false;
    let mut comment = 0u32;
    let mut it = raw.chars();
    while let Some(c) = it.next() {
        match c {
            '\\' => {
                if let Some(e) = it.next()
                    && comment == 0
                {
                    out.push(e);
                }
            }
            '"' if comment == 0 => quoted = !quoted,
            '(' if !quoted => comment += 1,
            ')' if !quoted && comment > 0 => comment -= 1,
            c if comment == 0 => out.push(c),
            _ => {}
        }
    }
    out.trim().to_string()
}

/// Parses an aliases(5) file. Duplicates are all returned (in file order); the caller keeps the
/// first, as postalias does. A large file is parsed in [pieces](crate::par) side by side.
pub fn parse_aliases(bytes: &[u8], file: &str, diags: &mut Vec<Diagnostic>) -> Vec<ParsedAlias> {
    let pieces = crate::par::pieces(bytes.len(), crate::par::LEAST_BYTES);
    let mut cuts: Vec<usize> = (crate::par::cuts(bytes.len(), pieces).skip(1))
        .filter_map(|r| entry_after(bytes, r.start))
        .collect();
    cuts.dedup();
    if cuts.is_empty() {
        parse_aliases_serial(bytes, file, diags)
    } else {
        parse_aliases_at(bytes, file, diags, &cuts)
    }
}

/// The first line at or after `at` that opens an entry whatever precedes it, if any.
pub(super) fn entry_after(bytes: &[u8], at: usize) -> Option<usize> {
    let mut at = at;
    while at < bytes.len() {
        if opens_entry(bytes, at) {
            return Some(at);
        }
        at += bytes[at..].iter().position(|&b| b == b'\n')? + 1;
    }
    None
}

/// [`parse_aliases`] of `bytes` cut at each of `cuts` (ascending), the pieces side by side,
/// each cut being a line that opens an entry ([`opens_entry`]): what comes before such a line
/// cannot change how it or the lines after it are read, so a piece parsed alone, its lines
/// moved down by those before it, is what the whole file gives there.
pub(super) fn parse_aliases_at(
    bytes: &[u8],
    file: &str,
    diags: &mut Vec<Diagnostic>,
    cuts: &[usize],
) -> Vec<ParsedAlias> {
    use rayon::prelude::*;
    let ends = cuts.iter().copied().chain([bytes.len()]);
    let pieces: Vec<&[u8]> = (std::iter::once(0).chain(cuts.iter().copied()))
        .zip(ends)
        .map(|(from, to)| &bytes[from..to])
        .collect();
    let parsed: Vec<_> = (pieces.par_iter())
        .map(|piece| {
            let mut d = Vec::new();
            (
                parse_aliases_serial(piece, file, &mut d),
                d,
                newlines(piece),
            )
        })
        .collect();
    let mut out = Vec::new();
    let mut by = 0i64;
    for (mut entries, mut later, lines) in parsed {
        entries.iter_mut().for_each(|e| move_entry(e, by));
        (later.iter_mut()).for_each(|d| d.line = moved(d.line, by));
        out.append(&mut entries);
        diags.append(&mut later);
        by += i64::from(lines);
    }
    out
}

/// `line` moved by `by` lines, within the range of a line number.
fn moved(line: u32, by: i64) -> u32 {
    (i64::from(line) + by).clamp(0, i64::from(u32::MAX)) as u32
}

/// Moves an entry's line, and its targets' lines, by `by` lines: a span parsed alone, put where
/// it starts in the file, or the entries after a span that grew or shrank.
fn move_entry(e: &mut ParsedAlias, by: i64) {
    e.line = moved(e.line, by);
    (e.targets.iter_mut()).for_each(|t| t.line = moved(t.line, by));
}

pub(super) fn parse_aliases_serial(
    bytes: &[u8],
    file: &str,
    diags: &mut Vec<Diagnostic>,
) -> Vec<ParsedAlias> {
    let mut out = Vec::new();
    let mut starts = Vec::new();
    for l in logical(bytes, file, diags) {
        if let Some((line, why)) = l.bad {
            diags.push(left_out(file, line, why));
            continue;
        }
        let Some(colon) = name_colon(&l.text) else {
            diags.push(diag(
                file,
                l.line,
                Severity::Error,
                "need name:value pair (no colon)".into(),
            ));
            continue;
        };
        let raw_name = &l.text[..colon];
        let raw_value = &l.text[colon + 1..];
        if raw_name.contains(',') {
            diags.push(diag(
                file,
                l.line,
                Severity::Error,
                "need name:value pair (comma before the colon)".into(),
            ));
            continue;
        }
        let mut name = internal_name(raw_name);
        if name.is_ascii() {
            name.make_ascii_lowercase();
        } else if name.chars().any(char::is_uppercase) {
            name = name.to_lowercase();
        }
        if name.is_empty() {
            diags.push(diag(
                file,
                l.line,
                Severity::Error,
                "need name:value pair (empty name)".into(),
            ));
            continue;
        }
        if name.contains('@') || name.contains('%') {
            diags.push(diag(
                file,
                l.line,
                Severity::Error,
                format!("{name:?}: name must be local and have no domain"),
            ));
            continue;
        }
        if raw_value.trim().is_empty() {
            diags.push(diag(
                file,
                l.line,
                Severity::Error,
                format!("{name:?}: need name:value pair (empty value)"),
            ));
            continue;
        }
        if !addr::valid_local_part(&name) {
            diags.push(diag(
                file,
                l.line,
                Severity::Error,
                format!(
                    "{name:?}: name cannot be written to a map as a local part; entry left out"
                ),
            ));
            continue;
        }
        // Offsets of line starts are into the whole logical line; the value starts after the
        // colon.
        let starts = l.starts_after(colon + 1, &mut starts);
        let targets = parse_value_mapped(raw_value, &LineMap { starts }, file, diags);
        if targets.is_empty() {
            diags.push(diag(
                file,
                l.line,
                Severity::Error,
                format!("{name:?}: value holds no recipient"),
            ));
            continue;
        }
        out.push(ParsedAlias {
            name,
            line: l.line,
            targets,
        });
    }
    out
}

mod others;
#[cfg(test)]
pub(super) use others::passwd_fields;
pub use others::{
    ParsedList, ParsedVirtual, PasswdEntry, parse_list, parse_passwd, parse_recipients,
    parse_virtual,
};

mod incremental;
pub use incremental::{AliasesFile, Splice};
#[cfg(test)]
pub(super) use incremental::{common_prefix, common_suffix};
pub(super) use incremental::{newlines, opens_entry};

#[cfg(test)]
mod tests;
