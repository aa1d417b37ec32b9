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

/// Whether `c` may appear in a local part we write to a map.
fn local_char(c: char) -> bool {
    match c {
        'a'..='z' | 'A'..='Z' | '0'..='9' => true,
        '!' | '#' | '$' | '%' | '&' | '\'' | '*' | '+' | '-' | '/' | '=' | '?' | '^' | '_'
        | '`' | '{' | '|' | '}' | '~' | '.' => true,
        c if !c.is_ascii() => c.is_alphanumeric(),
        _ => false,
    }
}

/// Whether `s` is a local part (or alias name) that every map format can carry unchanged.
///
/// Besides the character set, the first character may not be one an aliases reader takes as
/// syntax (`#` comment, `|` pipe, `/` file, `~` home file, `\` backslash, `:` special, `-` option),
/// and dots must separate non-empty atoms.
pub fn valid_local_part(s: &str) -> bool {
    if s.is_empty() || s.len() > MAX_LOCAL {
        return false;
    }
    if matches!(s.chars().next(), Some('#' | '|' | '/' | '~' | '-')) {
        return false;
    }
    if s.starts_with('.') || s.ends_with('.') || s.contains("..") {
        return false;
    }
    s.chars().all(local_char)
}

/// Whether `d` is a domain name we write to a map: dot-separated LDH labels, lowercase.
///
/// Address literals (`[192.0.2.1]`) and non-ASCII names are refused: an alias that targets one
/// punts, which is always correct.
pub fn valid_domain(d: &str) -> bool {
    if d.is_empty() || d.len() > MAX_DOMAIN || !d.contains('.') {
        return false;
    }
    d.split('.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    })
}

/// Whether `a` is `local@domain` with a valid local part and a lowercase valid domain.
pub fn valid_address(a: &str) -> bool {
    match a.rsplit_once('@') {
        Some((local, domain)) => valid_local_part(local) && valid_domain(domain),
        None => false,
    }
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
pub fn normalize_address_owned(mut a: String) -> Result<String, String> {
    let Some(at) = a.rfind('@') else {
        return Err(a);
    };
    a[at + 1..].make_ascii_lowercase();
    if valid_address(&a) { Ok(a) } else { Err(a) }
}

/// Whether `s` is already in the folded (lower case) form names and keys are stored in.
///
/// This is `to_lowercase(s) == s`, not "has no upper-case character": some upper-case letters
/// (e.g. U+03D3) have no lower-case form and stay as they are when folded.
pub fn is_folded(s: &str) -> bool {
    s.chars().all(|c| {
        let mut l = c.to_lowercase();
        l.next() == Some(c) && l.next().is_none()
    })
}

/// Splits a valid address into local part and domain.
pub fn split(a: &str) -> Option<(&str, &str)> {
    a.rsplit_once('@')
}

#[cfg(test)]
mod tests;
