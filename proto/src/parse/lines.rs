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

/// Files at least this large are parsed in two halves side by side.
const HALVES: usize = 4 << 20;

/// Parses an aliases(5) file. Duplicates are all returned (in file order); the caller keeps the
/// first, as postalias does. A large file is parsed in two halves on two threads.
pub fn parse_aliases(bytes: &[u8], file: &str, diags: &mut Vec<Diagnostic>) -> Vec<ParsedAlias> {
    let half = (bytes.len() >= HALVES)
        .then(|| entry_after(bytes, bytes.len() / 2))
        .flatten();
    match half {
        Some(at) => parse_aliases_at(bytes, file, diags, at),
        None => parse_aliases_serial(bytes, file, diags),
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

/// [`parse_aliases`] of `bytes[..at]` and `bytes[at..]` side by side, `at` being a line that
/// opens an entry ([`opens_entry`]): what comes before such a line cannot change how it or the
/// lines after it are read, so the second half parsed alone, its lines moved down by the first
/// half's, is what the whole file gives there.
pub(super) fn parse_aliases_at(
    bytes: &[u8],
    file: &str,
    diags: &mut Vec<Diagnostic>,
    at: usize,
) -> Vec<ParsedAlias> {
    let (first, second) = bytes.split_at(at);
    let (mut out, (mut rest, mut later)) = crate::par::join(
        || parse_aliases_serial(first, file, diags),
        || {
            let mut d = Vec::new();
            (parse_aliases_serial(second, file, &mut d), d)
        },
    );
    let by = i64::from(newlines(first));
    rest.iter_mut().for_each(|e| move_entry(e, by));
    (later.iter_mut()).for_each(|d| d.line = moved(d.line, by));
    out.append(&mut rest);
    diags.append(&mut later);
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
            diags.push(diag(
                file,
                line,
                Severity::Error,
                format!("{why}: entry left out"),
            ));
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
            diags.push(diag(
                file,
                line,
                Severity::Error,
                format!("{why}: entry left out"),
            ));
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
                .extend(super::rhs::parse_value(t, file, p.line, diags)),
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
        let t = match p.text {
            Ok(t) => t,
            Err(why) => {
                diags.push(diag(
                    file,
                    p.line,
                    Severity::Error,
                    format!("{why}: entry left out"),
                ));
                continue;
            }
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
        let t = match p.text {
            Ok(t) => t,
            Err(why) => {
                diags.push(diag(
                    file,
                    p.line,
                    Severity::Error,
                    format!("{why}: entry left out"),
                ));
                continue;
            }
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
pub(super) fn passwd_fields(t: &str) -> Option<[&str; 7]> {
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

/// An aliases file as last parsed, so that its next version is parsed again only where it
/// changed (the agent watching a large file). [`AliasesFile::update`] gives exactly what
/// [`parse_aliases`] gives on the new bytes (property-tested), up to the order of diagnostics.
///
/// How: the bytes both versions share at the start and at the end are not read again. The span
/// between is widened to whole entries: back to a line that starts an entry in both versions
/// (its first byte is not blank and not `#`, so it opens a new logical line whatever came
/// before), and forward to the next such line. Only that span is parsed; the entries before it
/// are kept, and those after it are kept with their line numbers moved.
#[derive(Debug, Default, Clone)]
pub struct AliasesFile {
    file: String,
    bytes: Vec<u8>,
    entries: Vec<ParsedAlias>,
    diags: Vec<Diagnostic>,
}

/// Whether a line begins at `at` and starts an entry whatever precedes it.
pub(super) fn opens_entry(bytes: &[u8], at: usize) -> bool {
    let begins_line = at == 0 || bytes.get(at - 1) == Some(&b'\n');
    begins_line
        && bytes
            .get(at)
            .is_some_and(|&b| !is_blank_byte(b) && b != b'#' && b != b'\n')
}

/// Compared a block at a time (a memcmp each), then byte by byte in the block that differs: a
/// byte loop over a 50 MB file takes tens of milliseconds.
const BLOCK: usize = 4096;

/// How many leading bytes `a` and `b` share.
pub(super) fn common_prefix(a: &[u8], b: &[u8]) -> usize {
    let n = a.len().min(b.len());
    let mut at = 0;
    while at + BLOCK <= n && a[at..at + BLOCK] == b[at..at + BLOCK] {
        at += BLOCK;
    }
    at + (a[at..n].iter().zip(&b[at..n]))
        .take_while(|(x, y)| x == y)
        .count()
}

/// How many trailing bytes `a` and `b` share.
pub(super) fn common_suffix(a: &[u8], b: &[u8]) -> usize {
    let n = a.len().min(b.len());
    let (a, b) = (&a[a.len() - n..], &b[b.len() - n..]);
    let mut at = n;
    while at >= BLOCK && a[at - BLOCK..at] == b[at - BLOCK..at] {
        at -= BLOCK;
    }
    n - at
        + (a[..at].iter().rev().zip(b[..at].iter().rev()))
            .take_while(|(x, y)| x == y)
            .count()
}

/// How many newlines `bytes` holds: counted 64 bytes at a time into a byte, which the compiler
/// turns into a few vector instructions per block (a plain filter and count takes three times as
/// long: 26 ms over a 50 MB file, where an edit at its end counts every line before it).
pub(super) fn newlines(bytes: &[u8]) -> u32 {
    let mut blocks = bytes.chunks_exact(64);
    let mut n: u32 = 0;
    for b in &mut blocks {
        n += u32::from(b.iter().fold(0u8, |k, &c| k + u8::from(c == b'\n')));
    }
    n + blocks.remainder().iter().filter(|&&c| c == b'\n').count() as u32
}

impl AliasesFile {
    /// Parses `bytes` as the aliases file `file`.
    pub fn parse(file: &str, bytes: Vec<u8>) -> Self {
        let mut diags = Vec::new();
        let entries = parse_aliases(&bytes, file, &mut diags);
        AliasesFile {
            file: file.to_string(),
            bytes,
            entries,
            diags,
        }
    }

    /// The entries, in file order (duplicates included, as [`parse_aliases`] gives them).
    pub fn entries(&self) -> &[ParsedAlias] {
        &self.entries
    }

    /// What was found wrong.
    pub fn diagnostics(&self) -> &[Diagnostic] {
        &self.diags
    }

    /// Replaces the content with `bytes`, parsing only the entries that changed, and says what
    /// it replaced.
    pub fn update(&mut self, bytes: Vec<u8>) -> Splice {
        let (old, new) = (&self.bytes, &bytes);
        let prefix = common_prefix(old, new);
        if prefix == old.len() && prefix == new.len() {
            return Splice::default();
        }
        let max = old.len().min(new.len());
        let suffix = common_suffix(&old[prefix..], &new[prefix..]).min(max - prefix);
        // Back to a line that opens an entry in both (before `prefix` the bytes are the same).
        let line_start = |at: usize| {
            new[..at]
                .iter()
                .rposition(|&b| b == b'\n')
                .map_or(0, |i| i + 1)
        };
        let mut start = line_start(prefix);
        while start > 0 && !(opens_entry(old, start) && opens_entry(new, start)) {
            start = line_start(start - 1);
        }
        // Forward to a line that opens an entry in both, or the end (from `old_end` in the old
        // bytes and `new_end` in the new ones, the bytes are the same).
        let (old_end, new_end) = (old.len() - suffix, new.len() - suffix);
        let mut end = old_end;
        while end < old.len() {
            if opens_entry(old, end) && opens_entry(new, end - old_end + new_end) {
                break;
            }
            end = match old[end..].iter().position(|&b| b == b'\n') {
                Some(i) => end + i + 1,
                None => old.len(),
            };
        }
        let new_stop = end - old_end + new_end;
        let first = newlines(&new[..start]) + 1;
        // At the end of the file the span takes every line left (the last may have no newline).
        let at_end = end == old.len();
        let old_after = if at_end {
            u32::MAX
        } else {
            first + newlines(&old[start..end])
        };
        let new_after = first + newlines(&new[start..new_stop]);
        // The span, parsed alone, with its line numbers moved to where it starts.
        let mut diags = Vec::new();
        let mut mid = parse_aliases(&new[start..new_stop], &self.file, &mut diags);
        let by = i64::from(first) - 1;
        mid.iter_mut().for_each(|e| move_entry(e, by));
        diags.iter_mut().for_each(|d| d.line = moved(d.line, by));
        let parsed = new_stop - start;
        // Entries before the span end before it; those after it start at or after its end.
        let lo = self.entries.partition_point(|e| e.line < first);
        let hi = self.entries.partition_point(|e| e.line < old_after);
        let shift = i64::from(new_after) - i64::from(old_after);
        let tail = lo + mid.len();
        let replaced: Vec<ParsedAlias> = self.entries.splice(lo..hi, mid).collect();
        if shift != 0 {
            (self.entries[tail..].iter_mut()).for_each(|e| move_entry(e, shift));
        }
        let in_span = |d: &Diagnostic| d.line >= first && d.line < old_after;
        let mut gone: Vec<Diagnostic> = self.diags.iter().filter(|d| in_span(d)).cloned().collect();
        self.diags.retain(|d| !in_span(d));
        for d in &mut self.diags {
            if d.line >= old_after {
                d.line = moved(d.line, shift);
            }
        }
        gone.sort();
        let mut came = diags.clone();
        came.sort();
        self.diags.extend(diags);
        self.bytes = bytes;
        Splice {
            parsed,
            at: lo,
            old: replaced,
            new: tail - lo,
            // Nothing follows a span that runs to the end of the file.
            shift: if at_end { 0 } else { shift },
            diagnostics_changed: gone != came,
        }
    }
}

/// What [`AliasesFile::update`] replaced: `old`, the entries from index `at`, by the `new`
/// entries from `at` in [`AliasesFile::entries`]. The entries before are as they were; those
/// after moved by `shift` lines and are otherwise the same.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Splice {
    /// How many bytes were parsed again.
    pub parsed: usize,
    /// Where the replaced entries start.
    pub at: usize,
    /// The entries replaced.
    pub old: Vec<ParsedAlias>,
    /// How many entries replaced them.
    pub new: usize,
    /// By how many lines the entries after them moved.
    pub shift: i64,
    /// Whether the file's diagnostics changed (other than by moving with `shift`).
    pub diagnostics_changed: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    type Line = (u32, Result<String, &'static str>, Class);

    fn lines<'a>(ps: impl Iterator<Item = Physical<'a>>) -> Vec<Line> {
        ps.map(|p| (p.line, p.text.map(str::to_string), p.class))
            .collect()
    }

    /// Bytes made of pieces that matter to lines: newlines, CRs, blanks, comments, NUL bytes,
    /// a two-byte character and a byte that is never UTF-8.
    fn linish() -> impl Strategy<Value = Vec<u8>> {
        let piece = prop::sample::select(vec![
            &b"a"[..],
            b"b: c",
            b" ",
            b"\t",
            b"#",
            b"\n",
            b"\r",
            b"\r\n",
            b"\0",
            "\u{e9}".as_bytes(),
            b"\xff",
        ]);
        prop::collection::vec(piece, 0..30).prop_map(|v| v.concat())
    }

    fn check(bytes: &[u8], expected: &[(u32, Result<&str, &'static str>, Class)]) {
        let expected: Vec<Line> = (expected.iter())
            .map(|(n, t, c)| (*n, t.map(str::to_string), *c))
            .collect();
        assert_eq!(lines(physical(bytes, true)), expected, "{bytes:?}");
    }

    #[test]
    fn physical_lines() {
        use Class::*;
        check(b"", &[(1, Ok(""), Blank)]);
        check(b"\n", &[(1, Ok(""), Blank)]);
        check(b"a\n", &[(1, Ok("a"), Start)]);
        check(b"a", &[(1, Ok("a"), Start)]);
        check(
            b"a\r\n b\r\n",
            &[(1, Ok("a"), Start), (2, Ok(" b"), Continuation)],
        );
        check(
            b"a\n\n# c\n",
            &[
                (1, Ok("a"), Start),
                (2, Ok(""), Blank),
                (3, Ok("# c"), Comment),
            ],
        );
        check(
            b"a\n\xff\nb\0\n\xc3\xa9",
            &[
                (1, Ok("a"), Start),
                (2, Err("line is not valid utf-8"), Start),
                (3, Err("line contains a nul byte"), Start),
                (4, Ok("\u{e9}"), Start),
            ],
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// A file cut as one string gives the lines that checking each line gives.
        #[test]
        fn whole_text_gives_the_lines_checked_one_by_one(bytes in linish(), anywhere: bool) {
            prop_assert_eq!(
                lines(physical(&bytes, anywhere)),
                lines(physical_in(&bytes, Parts::each(&bytes), anywhere))
            );
        }
    }
}
