//! The right-hand side of an alias: a value split into items as Postfix's local(8) reads it.
//!
//! The tokenizer follows RFC 822 as `tok822` does: quoted strings, nested `(comments)` (dropped),
//! `<angle>` addresses, and specials. Items are separated by commas; two words separated only by
//! whitespace are two items (a missing comma), which is also how an unquoted `|prog -a` becomes
//! `|prog`, `-a`. Each item is then classified ([`Kind`]).

use std::borrow::Cow;

use crate::addr;
use crate::snapshot::{Diagnostic, Kind, Severity, Target};

#[derive(Debug)]
enum Tok<'a> {
    Word {
        text: Cow<'a, str>,
        quoted: bool,
        space_before: bool,
        line: u32,
    },
    Special {
        c: char,
        line: u32,
    },
}

impl Tok<'_> {
    fn line(&self) -> u32 {
        match self {
            Tok::Word { line, .. } | Tok::Special { line, .. } => *line,
        }
    }
    fn push_text(&self, out: &mut String) {
        match self {
            Tok::Word { text, .. } => out.push_str(text),
            Tok::Special { c, .. } => out.push(*c),
        }
    }
}

fn is_special(c: char) -> bool {
    matches!(c, '<' | '>' | '@' | ',' | ';' | ':' | '.' | '[' | ']')
}

/// Maps byte offsets of a logical line back to physical line numbers.
pub(crate) struct LineMap<'a> {
    /// `(offset, line)`: text from `offset` on was on `line`; sorted by offset.
    pub(crate) starts: &'a [(usize, u32)],
}

impl LineMap<'_> {
    fn line_at(&self, off: usize) -> u32 {
        if let [(_, only)] = self.starts {
            return *only;
        }
        let i = self.starts.partition_point(|&(o, _)| o <= off);
        self.starts.get(i.saturating_sub(1)).map_or(0, |&(_, l)| l)
    }
}

fn tokenize<'a>(s: &'a str, map: &LineMap<'_>) -> Vec<Tok<'a>> {
    let mut toks = Vec::with_capacity(8);
    let mut space = true;
    let mut it = s.char_indices().peekable();
    while let Some((off, c)) = it.next() {
        if c.is_whitespace() {
            space = true;
        } else if c == '(' {
            let mut depth = 1u32;
            while let Some((_, c)) = it.next() {
                match c {
                    '\\' => {
                        it.next();
                    }
                    '(' => depth += 1,
                    ')' => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    _ => {}
                }
            }
            space = true;
        } else if c == '"' {
            let line = map.line_at(off);
            let mut text = String::new();
            while let Some((_, c)) = it.next() {
                match c {
                    '\\' => {
                        if let Some((_, e)) = it.next() {
                            text.push(e);
                        }
                    }
                    '"' => break,
                    c => text.push(c),
                }
            }
            toks.push(Tok::Word {
                text: Cow::Owned(text),
                quoted: true,
                space_before: space,
                line,
            });
            space = false;
        } else if is_special(c) {
            toks.push(Tok::Special {
                c,
                line: map.line_at(off),
            });
            space = false;
        } else {
            let mut end = off + c.len_utf8();
            if c == '\\'
                && let Some(&(o, e)) = it.peek()
                && !e.is_whitespace()
            {
                end = o + e.len_utf8();
                it.next();
            }
            while let Some(&(o, c)) = it.peek() {
                if c.is_whitespace() || is_special(c) || c == '"' || c == '(' {
                    break;
                }
                end = o + c.len_utf8();
                it.next();
            }
            let line = map.line_at(off);
            toks.push(Tok::Word {
                text: Cow::Borrowed(&s[off..end]),
                quoted: false,
                space_before: space,
                line,
            });
            space = false;
        }
    }
    toks
}

/// Classifies one item's text as local(8) does, in the order it tests: file, command,
/// `:include:`, then addresses; with the backslash form and the Exim specials recognised.
fn classify(text: String, quoted_empty: bool) -> (Kind, String) {
    if quoted_empty {
        return (Kind::Special, "\"\"".to_string());
    }
    let at = addr::last_at(&text);
    classify_at(text, at)
}

/// [`classify`] of an item that is not a quoted empty string, whose last `@` the caller found
/// at `at`.
fn classify_at(text: String, at: Option<usize>) -> (Kind, String) {
    debug_assert_eq!(addr::last_at(&text), at);
    let starts = |p: &str| {
        text.get(..p.len())
            .is_some_and(|h| h.eq_ignore_ascii_case(p))
    };
    if text.starts_with('/') || text.starts_with('~') {
        return (Kind::File, text);
    }
    if text.starts_with('|') {
        return (Kind::Pipe, text);
    }
    if let Some(rest) = text.strip_prefix('\\') {
        return (Kind::Backslash, rest.to_string());
    }
    // Only these first bytes can open an include or a special (most items open with neither).
    if matches!(text.as_bytes().first(), Some(b':' | b'e' | b'E')) {
        if starts(":include:") {
            return (Kind::Include, text[":include:".len()..].trim().to_string());
        }
        if [":fail:", ":defer:", ":blackhole:", ":unknown:", "error:"]
            .iter()
            .any(|p| starts(p))
        {
            return (Kind::Special, text);
        }
    }
    if let Some(at) = at {
        return match addr::normalize_address_at(text, at) {
            Ok(a) => (Kind::Address, a),
            Err(t) => (Kind::Invalid, t),
        };
    }
    if addr::valid_local_part(&text) {
        (Kind::Local, text)
    } else {
        (Kind::Invalid, text)
    }
}

/// Splits an alias value into targets, with warnings for the constructs the MTAs read differently.
///
/// `map` gives the physical line of each byte offset; `file` names the file in diagnostics.
pub(crate) fn parse_value_mapped(
    value: &str,
    map: &LineMap<'_>,
    file: &str,
    diags: &mut Vec<Diagnostic>,
) -> Vec<Target> {
    special_value(value, map)
        .or_else(|| plain_items(value, map))
        .unwrap_or_else(|| tokenized(value, map, file, diags))
}

/// A value that opens with `:fail:`, `:defer:` or `error:`: Exim takes the rest of the list as
/// the message. One special item; its alias punts.
fn special_value(value: &str, map: &LineMap<'_>) -> Option<Vec<Target>> {
    let trimmed = value.trim_start();
    let starts = |p: &str| {
        trimmed
            .get(..p.len())
            .is_some_and(|h| h.eq_ignore_ascii_case(p))
    };
    if !(starts(":fail:") || starts(":defer:") || starts("error:")) {
        return None;
    }
    let off = value.len() - trimmed.len();
    Some(vec![Target {
        kind: Kind::Special,
        value: trimmed.trim_end().to_string(),
        line: map.line_at(off),
    }])
}

/// [`parse_value_mapped`] of any other value, through the tokenizer.
fn tokenized(
    value: &str,
    map: &LineMap<'_>,
    file: &str,
    diags: &mut Vec<Diagnostic>,
) -> Vec<Target> {
    let toks = tokenize(value, map);
    let mut out = Vec::with_capacity(2);
    let mut warn = |line: u32, message: String| {
        diags.push(Diagnostic {
            file: file.to_string(),
            line,
            severity: Severity::Warning,
            message,
        })
    };
    for item in split_items(&toks) {
        if item.is_empty() {
            continue;
        }
        let line = item[0].line();
        if let Some(lt) = item
            .iter()
            .position(|t| matches!(t, Tok::Special { c: '<', .. }))
        {
            let Some(gt) = item
                .iter()
                .rposition(|t| matches!(t, Tok::Special { c: '>', .. }))
            else {
                let mut text = String::new();
                item.iter().for_each(|t| t.push_text(&mut text));
                out.push(Target {
                    kind: Kind::Invalid,
                    value: text,
                    line,
                });
                continue;
            };
            let inner = if gt > lt {
                &item[lt + 1..gt]
            } else {
                &item[0..0]
            };
            let start = inner
                .iter()
                .rposition(|t| matches!(t, Tok::Special { c: ':', .. }))
                .map_or(0, |i| i + 1);
            let mut text = String::new();
            inner[start..].iter().for_each(|t| t.push_text(&mut text));
            let (kind, value) = classify(text, false);
            out.push(Target { kind, value, line });
            continue;
        }
        // Groups: a word preceded by whitespace right after another word starts a new item.
        let mut groups: Vec<&[Tok<'_>]> = Vec::new();
        let mut start = 0;
        for i in 1..item.len() {
            let prev_word = matches!(item[i - 1], Tok::Word { .. });
            if prev_word
                && matches!(
                    item[i],
                    Tok::Word {
                        space_before: true,
                        ..
                    }
                )
            {
                groups.push(&item[start..i]);
                start = i;
            }
        }
        groups.push(&item[start..]);
        let pipe_args = groups.len() > 1
            && matches!(&groups[0][0], Tok::Word { text, quoted: false, .. } if text.starts_with('|'));
        if pipe_args {
            warn(
                line,
                "unquoted command with arguments: postfix reads the arguments as more recipients; quote the whole command".into(),
            );
        } else if groups.len() > 1 {
            warn(
                line,
                "items separated by whitespace without a comma: read as separate recipients".into(),
            );
        }
        for (gi, g) in groups.iter().enumerate() {
            let text = match g {
                [Tok::Word { text, .. }] => text.to_string(),
                _ => {
                    let mut text = String::new();
                    g.iter().for_each(|t| t.push_text(&mut text));
                    text
                }
            };
            let quoted_empty = g.len() == 1
                && matches!(&g[0], Tok::Word { text, quoted: true, .. } if text.is_empty());
            let gline = g[0].line();
            if matches!(&g[0], Tok::Word { text, quoted: false, .. } if text.starts_with('#')) {
                warn(
                    gline,
                    format!(
                        "{text:?}: '#' in mid-line is not a comment for postfix; the alias punts"
                    ),
                );
                out.push(Target {
                    kind: Kind::Invalid,
                    value: text,
                    line: gline,
                });
                continue;
            }
            if pipe_args && gi > 0 {
                out.push(Target {
                    kind: Kind::Invalid,
                    value: text,
                    line: gline,
                });
                continue;
            }
            let (kind, value) = classify(text, quoted_empty);
            out.push(Target {
                kind,
                value,
                line: gline,
            });
        }
    }
    out
}

/// Whether ASCII byte `b` is whitespace as `char::is_whitespace` has it.
const fn ascii_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\x0b' | b'\x0c' | b'\r')
}

/// A byte's class on the plain path ([`plain_items`]): part of an item, its `@`, a comma, a
/// blank, or [`SYNTAX`]: a byte the plain path does not read (any non-ASCII byte, quotes,
/// comments, angle brackets, backslashes), which sends the value to the tokenizer.
const PLAIN_CLASS: [u8; 256] = {
    let mut t = [SYNTAX; 256];
    let mut b = 0;
    while b < 128 {
        t[b] = match b as u8 {
            b'"' | b'(' | b')' | b'\\' | b'<' | b'>' => SYNTAX,
            b',' => COMMA,
            b'@' => AT,
            c if ascii_space(c) => BLANK,
            _ => ITEM,
        };
        b += 1;
    }
    t
};
const ITEM: u8 = 0;
const AT: u8 = 1;
const COMMA: u8 = 2;
const BLANK: u8 = 3;
const SYNTAX: u8 = 4;

/// The targets of `value` when it is the common plain list, `a@x.net, b, :include:/l`: ASCII
/// without quotes, comments, angle brackets or backslashes, and each item between commas one
/// run of bytes without whitespace that does not open with `#`. Such an item is read by the
/// tokenizer as words and specials with nothing between them, so its text is its bytes, and
/// it raises no warning; this reads it without tokens, in one pass over the value's bytes
/// (most of a large aliases file is such values). `None`: anything else, for the tokenizer.
fn plain_items(value: &str, map: &LineMap<'_>) -> Option<Vec<Target>> {
    let b = value.as_bytes();
    let class = |i: usize| b.get(i).map(|&c| PLAIN_CLASS[usize::from(c)]);
    let mut out = Vec::with_capacity(2);
    let mut i = 0;
    loop {
        while class(i) == Some(BLANK) {
            i += 1;
        }
        // The item runs to a comma, a blank or the end; its last `@` is noted on the way.
        let (start, mut at) = (i, None);
        loop {
            match class(i) {
                Some(ITEM) => {}
                Some(AT) => at = Some(i - start),
                Some(SYNTAX) => return None,
                _ => break,
            }
            i += 1;
        }
        let end = i;
        while class(i) == Some(BLANK) {
            i += 1;
        }
        // After the item's blanks, a comma or the end: otherwise two words, for the tokenizer.
        let next = class(i);
        if next.is_some() && next != Some(COMMA) {
            return None;
        }
        if end > start {
            if b[start] == b'#' {
                return None;
            }
            let (kind, value) = classify_at(value[start..end].to_string(), at);
            out.push(Target {
                kind,
                value,
                line: map.line_at(start),
            });
        }
        if next.is_none() {
            return Some(out);
        }
        i += 1;
    }
}

/// Parses a one-line value (as found in an `:include:` file or `.forward` line) on `line`.
pub fn parse_value(value: &str, file: &str, line: u32, diags: &mut Vec<Diagnostic>) -> Vec<Target> {
    let starts = [(0usize, line)];
    parse_value_mapped(value, &LineMap { starts: &starts }, file, diags)
}

/// Splits tokens at top-level commas (commas inside `<...>` belong to a route).
fn split_items<'t, 'a>(toks: &'t [Tok<'a>]) -> Vec<&'t [Tok<'a>]> {
    let mut items = Vec::new();
    let mut depth = 0u32;
    let mut start = 0;
    for (i, t) in toks.iter().enumerate() {
        match t {
            Tok::Special { c: '<', .. } => depth += 1,
            Tok::Special { c: '>', .. } => depth = depth.saturating_sub(1),
            Tok::Special { c: ',', .. } if depth == 0 => {
                items.push(&toks[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    items.push(&toks[start..]);
    items
}

#[cfg(test)]
mod tests;
