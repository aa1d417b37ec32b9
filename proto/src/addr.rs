//! Address and name validation: the one place that decides what may be written into a map.
//!
//! Everything the secondary renders passes through [`valid_address`] or [`valid_local_part`].
//! The rules are deliberately narrower than RFC 5321: a map line is `key value` or `key: value`
//! and the MTAs read whitespace, `,`, `:`, `"`, `#` at the start and control characters as syntax,
//! so an address holding any of them is refused here and the alias that needed it punts.
//! This module does not decide what is served or remote; that is the planner's business.

/// Longest local part we accept (RFC 5321 section 4.5.3.1.1).
const MAX_LOCAL: usize = 64;
/// Longest domain we accept (RFC 5321 section 4.5.3.1.2).
const MAX_DOMAIN: usize = 253;

/// Whether ASCII byte `b` may appear in a local part we write to a map.
const fn local_byte(b: u8) -> bool {
    matches!(b,
        b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9'
        | b'!' | b'#' | b'$' | b'%' | b'&' | b'\'' | b'*' | b'+' | b'-' | b'/' | b'=' | b'?'
        | b'^' | b'_' | b'`' | b'{' | b'|' | b'}' | b'~' | b'.')
}

/// A byte's class in a local part, looked up instead of matched in the loops below (a million
/// aliases are checked at each apply, and every target again when the maps are rendered):
/// [`ATOM`] for a [`local_byte`] other than the dot, [`DOT`], and 0 for anything else, every
/// non-ASCII byte included (a local part holding one is checked by characters).
const LOCAL_CLASS: [u8; 256] = {
    let mut t = [0; 256];
    let mut b = 0;
    while b < 128 {
        if local_byte(b as u8) {
            t[b] = ATOM;
        }
        b += 1;
    }
    t[b'.' as usize] = DOT;
    t
};
const ATOM: u8 = 1;
const DOT: u8 = 2;

/// A byte's class in a domain: [`LDH`] for a lowercase letter or a digit, [`HYPHEN`] (both with
/// the [`IN_LABEL`] bit), [`DOT`], and 0 for anything else.
const DOMAIN_CLASS: [u8; 256] = {
    let mut t = [0; 256];
    let mut b = 0;
    while b < 128 {
        if (b as u8).is_ascii_lowercase() || (b as u8).is_ascii_digit() {
            t[b] = LDH;
        }
        b += 1;
    }
    t[b'-' as usize] = HYPHEN;
    t[b'.' as usize] = DOT;
    t
};
const IN_LABEL: u8 = 1;
const LDH: u8 = IN_LABEL;
const HYPHEN: u8 = IN_LABEL | 4;

/// How far `b` runs in [`local_byte`]s (to its first other byte, or its end), in one pass, and
/// whether a dot follows a dot in that run.
fn local_run(b: &[u8]) -> (usize, bool) {
    let (mut seen, mut prev) = (0, 0);
    for (i, &c) in b.iter().enumerate() {
        let k = LOCAL_CLASS[usize::from(c)];
        if k == 0 {
            return (i, seen & DOT != 0);
        }
        // Non-zero in the DOT bit only where a dot follows a dot.
        seen |= prev & k;
        prev = k;
    }
    (b.len(), seen & DOT != 0)
}

/// Whether local part `b` is within the length, and opens and ends with bytes it may (its
/// characters and dots are checked apart).
fn local_ends(b: &[u8]) -> bool {
    match (b.first(), b.last()) {
        (Some(&first), Some(&last)) => {
            b.len() <= MAX_LOCAL
                && !matches!(first, b'#' | b'|' | b'/' | b'~' | b'-' | b'.')
                && last != b'.'
        }
        _ => false,
    }
}

/// Whether `c` may appear in a local part we write to a map.
fn local_char(c: char) -> bool {
    if c.is_ascii() {
        local_byte(c as u8)
    } else {
        c.is_alphanumeric()
    }
}

/// Whether `s` is a local part (or alias name) that every map format can carry unchanged.
///
/// Besides the character set, the first character may not be one an aliases reader takes as
/// syntax (`#` comment, `|` pipe, `/` file, `~` home file, `\` backslash, `:` special, `-` option),
/// and dots must separate non-empty atoms.
pub fn valid_local_part(s: &str) -> bool {
    let b = s.as_bytes();
    match local_run(b) {
        (end, dotdot) if end == b.len() => !dotdot && local_ends(b),
        // A byte that is not a local byte: a non-ASCII one may begin an allowed character.
        (end, _) if !b[end].is_ascii() => valid_local_chars(s),
        _ => false,
    }
}

/// [`valid_local_part`] of a local part that is not ASCII, by characters.
fn valid_local_chars(s: &str) -> bool {
    local_ends(s.as_bytes()) && !s.contains("..") && s.chars().all(local_char)
}

/// Whether `d` is a domain name we write to a map: dot-separated LDH labels, lowercase.
///
/// Address literals (`[192.0.2.1]`) and non-ASCII names are refused: an alias that targets one
/// punts, which is always correct.
pub fn valid_domain(d: &str) -> bool {
    let b = d.as_bytes();
    if b.is_empty() || b.len() > MAX_DOMAIN {
        return false;
    }
    // One pass over the bytes; each label is checked where it ends.
    let label = |start: usize, end: usize| {
        (1..=63).contains(&(end - start)) && b[start] != b'-' && b[end - 1] != b'-'
    };
    let (mut start, mut dots) = (0, 0);
    for (i, &c) in b.iter().enumerate() {
        let k = DOMAIN_CLASS[usize::from(c)];
        if k & IN_LABEL != 0 {
            continue;
        }
        if k != DOT || !label(start, i) {
            return false;
        }
        start = i + 1;
        dots += 1;
    }
    dots > 0 && label(start, b.len())
}

/// Whether `a` is `local@domain` with a valid local part and a lowercase valid domain.
pub fn valid_address(a: &str) -> bool {
    let b = a.as_bytes();
    // The local part runs to the first byte that cannot be in one. When that is an `@`, it is
    // the last `@` of a valid address (a local part holds none, a domain none either), so the
    // address splits there; when it is a byte of a non-ASCII character, the address is checked
    // by its parts; anything else is in the local part of any split, and refused.
    let (at, dotdot) = local_run(b);
    match b.get(at) {
        Some(b'@') => !dotdot && local_ends(&b[..at]) && valid_domain(&a[at + 1..]),
        Some(c) if !c.is_ascii() => {
            split(a).is_some_and(|(local, domain)| valid_parts(local, domain))
        }
        _ => false,
    }
}

/// [`valid_address`] of `local@domain`, given in its two parts (a valid local part holds no
/// `@`, so the parts are where the address splits).
pub fn valid_parts(local: &str, domain: &str) -> bool {
    valid_local_part(local) && valid_domain(domain)
}

/// Lowercases the domain part of `a`, keeping the local part as written.
///
/// Returns `None` when the result is not a [`valid_address`].
pub fn normalize_address(a: &str) -> Option<String> {
    let (local, domain) = a.rsplit_once('@')?;
    let out = format!("{local}@{}", domain.to_ascii_lowercase());
    valid_address(&out).then_some(out)
}

/// Like [`normalize_address`], reusing `a`'s allocation; gives `a` back when it is not valid.
pub fn normalize_address_owned(a: String) -> Result<String, String> {
    match last_at(&a) {
        Some(at) => normalize_address_at(a, at),
        None => Err(a),
    }
}

/// [`normalize_address_owned`] of `a`, whose last `@` the caller found at `at`.
pub(crate) fn normalize_address_at(mut a: String, at: usize) -> Result<String, String> {
    debug_assert_eq!(last_at(&a), Some(at));
    a[at + 1..].make_ascii_lowercase();
    // Split where it was found (the same last `@`), not searched for again.
    if valid_parts(&a[..at], &a[at + 1..]) {
        Ok(a)
    } else {
        Err(a)
    }
}

/// Whether `s` is already in the folded (lower case) form names and keys are stored in.
///
/// This is `to_lowercase(s) == s`, not "has no upper-case character": some upper-case letters
/// (e.g. U+03D3) have no lower-case form and stay as they are when folded.
pub fn is_folded(s: &str) -> bool {
    if s.is_ascii() {
        // Lowercasing changes exactly the ASCII upper-case letters.
        return !s.bytes().any(|b| b.is_ascii_uppercase());
    }
    s.chars().all(|c| {
        let mut l = c.to_lowercase();
        l.next() == Some(c) && l.next().is_none()
    })
}

/// Splits a valid address into local part and domain (at its last `@`).
pub fn split(a: &str) -> Option<(&str, &str)> {
    let at = last_at(a)?;
    // `@` is one byte, so both sides are on character boundaries.
    Some((&a[..at], &a[at + 1..]))
}

/// Where the last `@` of `a` is: the one that splits an address. A byte loop from the end, where
/// an address's `@` is near: for addresses of a few dozen bytes it is several times quicker than
/// a string search, and the parser and the planner look for it in every item.
pub(crate) fn last_at(a: &str) -> Option<usize> {
    a.bytes().rposition(|b| b == b'@')
}

#[cfg(test)]
mod tests;
