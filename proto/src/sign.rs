//! Request signing (DESIGN section 6): HMAC-SHA256 over method, path, sequence number and the
//! SHA-256 of the body exactly as sent (so a compressed body is verified before it is inflated).
//!
//! Header: `Authorization: Mxsync-HMAC-SHA256 agent=<id>,seq=<n>,sig=<hex>`.
//! This module knows nothing of replay state; the server keeps the last accepted `seq`.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::snapshot::{hex, sha256_hex};

/// The authorization scheme name.
pub const SCHEME: &str = "Mxsync-HMAC-SHA256";
/// Shortest secret accepted in a key or token file.
pub const MIN_SECRET_LEN: usize = 32;

/// A parsed `Authorization` header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Auth {
    /// The agent id.
    pub agent: String,
    /// The request's sequence number.
    pub seq: u64,
    /// The signature, lowercase hex.
    pub sig: String,
}

/// Why a request's signature is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    /// No header, another scheme, or a field missing or malformed.
    #[error("malformed authorization header: {0}")]
    Malformed(&'static str),
    /// The signature does not match.
    #[error("bad signature")]
    BadSignature,
}

/// Why a secret (key or token file content) is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SecretError {
    /// Fewer than [`MIN_SECRET_LEN`] characters after trimming.
    #[error(
        "secret is {0} characters long; at least {MIN_SECRET_LEN} are required (openssl rand -hex 32 makes one)"
    )]
    TooShort(usize),
    /// More than one line.
    #[error("secret must be one line")]
    MultiLine,
}

/// The secret held in a key or token file: one line, surrounding whitespace ignored.
pub fn parse_secret(text: &str) -> Result<String, SecretError> {
    let s = text.trim();
    if s.contains('\n') {
        return Err(SecretError::MultiLine);
    }
    if s.chars().count() < MIN_SECRET_LEN {
        return Err(SecretError::TooShort(s.chars().count()));
    }
    Ok(s.to_string())
}

fn mac(key: &[u8], method: &str, path: &str, seq: u64, body: &[u8]) -> Hmac<Sha256> {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("hmac takes keys of any length"));
    m.update(method.as_bytes());
    m.update(b"\n");
    m.update(path.as_bytes());
    m.update(b"\n");
    m.update(seq.to_string().as_bytes());
    m.update(b"\n");
    m.update(sha256_hex(body).as_bytes());
    m
}

/// The signature of a request, lowercase hex.
pub fn sign(key: &[u8], method: &str, path: &str, seq: u64, body: &[u8]) -> String {
    hex(&mac(key, method, path, seq, body).finalize().into_bytes())
}

/// The `Authorization` header value for a request.
pub fn header(key: &[u8], agent: &str, method: &str, path: &str, seq: u64, body: &[u8]) -> String {
    let sig = sign(key, method, path, seq, body);
    format!("{SCHEME} agent={agent},seq={seq},sig={sig}")
}

/// Parses an `Authorization` header value.
pub fn parse_header(value: &str) -> Result<Auth, AuthError> {
    let rest = value
        .strip_prefix(SCHEME)
        .and_then(|r| r.strip_prefix(' '))
        .ok_or(AuthError::Malformed("expected scheme Mxsync-HMAC-SHA256"))?;
    let (mut agent, mut seq, mut sig) = (None, None, None);
    for part in rest.split(',') {
        let (k, v) = part
            .trim()
            .split_once('=')
            .ok_or(AuthError::Malformed("expected key=value"))?;
        match k {
            "agent" => agent = Some(v.to_string()),
            "seq" => {
                seq = Some(
                    v.parse::<u64>()
                        .map_err(|_| AuthError::Malformed("seq is not a number"))?,
                )
            }
            "sig" => sig = Some(v.to_ascii_lowercase()),
            _ => return Err(AuthError::Malformed("unknown field")),
        }
    }
    let agent = agent
        .filter(|a| !a.is_empty())
        .ok_or(AuthError::Malformed("agent missing"))?;
    Ok(Auth {
        agent,
        seq: seq.ok_or(AuthError::Malformed("seq missing"))?,
        sig: sig.ok_or(AuthError::Malformed("sig missing"))?,
    })
}

/// Checks `auth.sig` against the request, in constant time.
pub fn verify(
    key: &[u8],
    method: &str,
    path: &str,
    body: &[u8],
    auth: &Auth,
) -> Result<(), AuthError> {
    let sig = ::hex::decode(&auth.sig).map_err(|_| AuthError::BadSignature)?;
    mac(key, method, path, auth.seq, body)
        .verify_slice(&sig)
        .map_err(|_| AuthError::BadSignature)
}

#[cfg(test)]
mod tests;

/// Why a secret file's permissions are refused: it must not be readable, writable or executable
/// by group or others (mode `0600` or `0400`).
pub fn check_secret_mode(mode: u32) -> Result<(), String> {
    if mode & 0o077 != 0 {
        Err(format!(
            "is accessible by group or others (mode {:04o}); chmod 600 it",
            mode & 0o7777
        ))
    } else {
        Ok(())
    }
}

/// The secret in a key or token file, given the file's mode bits and text: refused when the
/// file is open to group or others, or the text is not one long enough line.
pub fn secret_from(mode: u32, text: &str) -> Result<String, String> {
    check_secret_mode(mode)?;
    parse_secret(text).map_err(|e| e.to_string())
}
