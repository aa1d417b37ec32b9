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

/// [`local_byte`] of every ASCII byte, looked up instead of matched in the loops below: a
/// million aliases are checked at each apply.
const LOCAL_BYTES: [bool; 128] = {
    let mut t = [false; 128];
    let mut b = 0;
    while b < 128 {
        t[b] = local_byte(b as u8);
        b += 1;
    }
    t
};

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
    let (Some(&first), Some(&last)) = (b.first(), b.last()) else {
        return false;
    };
    if b.len() > MAX_LOCAL
        || matches!(first, b'#' | b'|' | b'/' | b'~' | b'-' | b'.')
        || last == b'.'
    {
        return false;
    }
    if s.is_ascii() {
        // One pass: each byte allowed, and no dot after a dot.
        let mut prev = 0;
        return b.iter().all(|&c| {
            let ok = LOCAL_BYTES[usize::from(c)] && !(c == b'.' && prev == b'.');
            prev = c;
            ok
        });
    }
    !s.contains("..") && s.chars().all(local_char)
}

/// Whether `d` is a domain name we write to a map: dot-separated LDH labels, lowercase.
///
/// Address literals (`[192.0.2.1]`) and non-ASCII names are refused: an alias that targets one
/// punts, which is always correct.
pub fn valid_domain(d: &str) -> bool {
    if d.is_empty() || d.len() > MAX_DOMAIN {
        return false;
    }
    // One pass over the bytes: the length of the label so far and the byte before.
    let (mut dots, mut label, mut prev) = (0, 0, b'.');
    for &c in d.as_bytes() {
        if c == b'.' {
            if label == 0 || prev == b'-' {
                return false;
            }
            dots += 1;
            label = 0;
        } else {
            let ldh = c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-';
            if !ldh || (label == 0 && c == b'-') || label == 63 {
                return false;
            }
            label += 1;
        }
        prev = c;
    }
    dots > 0 && label > 0 && prev != b'-'
}

/// Whether `a` is `local@domain` with a valid local part and a lowercase valid domain.
pub fn valid_address(a: &str) -> bool {
    split(a).is_some_and(|(local, domain)| valid_parts(local, domain))
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
