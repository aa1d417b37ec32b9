//! Signing round trips, tampering and header parsing.

use super::*;

const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

#[test]
fn round_trip_and_tampering() {
    let h = header(KEY, "mx1", "POST", "/v1/snapshots", 7, b"body");
    let auth = parse_header(&h).unwrap();
    assert_eq!(auth.agent, "mx1");
    assert_eq!(auth.seq, 7);
    assert_eq!(verify(KEY, "POST", "/v1/snapshots", b"body", &auth), Ok(()));
    let tampered = [
        (KEY, "GET", "/v1/snapshots", &b"body"[..], 7),
        (KEY, "POST", "/v1/heartbeat", b"body", 7),
        (KEY, "POST", "/v1/snapshots", b"bodY", 7),
        (KEY, "POST", "/v1/snapshots", b"body", 8),
        (
            b"0123456789abcdef0123456789abcdeX",
            "POST",
            "/v1/snapshots",
            b"body",
            7,
        ),
    ];
    for (key, method, path, body, seq) in tampered {
        let a = Auth {
            seq,
            ..auth.clone()
        };
        assert_eq!(
            verify(key, method, path, body, &a),
            Err(AuthError::BadSignature),
            "{method} {path} {seq}"
        );
    }
}

#[test]
fn known_vector() {
    // Computed independently with Python's hmac module:
    // hmac(key, "POST\n/v1/heartbeat\n1\n" + sha256_hex(""), sha256).
    assert_eq!(
        sign(KEY, "POST", "/v1/heartbeat", 1, b""),
        "06df667a7af0569884e00697cb49411a724060d3ac717a8f4998d69466da6939"
    );
}

fn check_header(input: &str, expected: Result<(&str, u64), AuthError>) {
    let got = parse_header(input).map(|a| (a.agent, a.seq));
    assert_eq!(got, expected.map(|(a, s)| (a.to_string(), s)), "{input:?}");
}

#[test]
fn headers() {
    check_header("Mxsync-HMAC-SHA256 agent=mx1,seq=3,sig=ab", Ok(("mx1", 3)));
    check_header(
        "Mxsync-HMAC-SHA256 agent=mx1, seq=3, sig=AB",
        Ok(("mx1", 3)),
    );
    check_header(
        "Bearer x",
        Err(AuthError::Malformed("expected scheme Mxsync-HMAC-SHA256")),
    );
    check_header(
        "Mxsync-HMAC-SHA256 agent=mx1,sig=ab",
        Err(AuthError::Malformed("seq missing")),
    );
    check_header(
        "Mxsync-HMAC-SHA256 agent=mx1,seq=x,sig=ab",
        Err(AuthError::Malformed("seq is not a number")),
    );
    check_header(
        "Mxsync-HMAC-SHA256 agent=,seq=1,sig=ab",
        Err(AuthError::Malformed("agent missing")),
    );
    check_header(
        "Mxsync-HMAC-SHA256 agent=a,seq=1,sig=ab,x=1",
        Err(AuthError::Malformed("unknown field")),
    );
}

#[test]
fn secrets() {
    assert_eq!(
        parse_secret("  0123456789abcdef0123456789abcdef\n"),
        Ok("0123456789abcdef0123456789abcdef".into())
    );
    assert_eq!(parse_secret("short"), Err(SecretError::TooShort(5)));
    assert_eq!(
        parse_secret("0123456789abcdef\n0123456789abcdef"),
        Err(SecretError::MultiLine)
    );
}

#[test]
fn secret_modes() {
    for (mode, ok) in [
        (0o600, true),
        (0o400, true),
        (0o100600, true),
        (0o640, false),
        (0o604, false),
        (0o660, false),
        (0o700, true),
        (0o610, false),
    ] {
        assert_eq!(check_secret_mode(mode).is_ok(), ok, "{mode:o}");
    }
}
