//! `lint` finds exactly the aliases a split would help.

use super::*;

fn check(aliases: &str, expected: &[&str]) {
    let mut b = proto::Builder::new(&["example.org".to_string()]);
    b.aliases("/etc/aliases", aliases.as_bytes());
    b.passwd(
        "/etc/passwd",
        b"u:x:1000:1000::/nonexistent:/bin/sh\n",
        1000,
    );
    let c = b.finish();
    let got: Vec<String> = lint(&c).iter().map(|f| f.to_string()).collect();
    assert_eq!(got, expected, "{aliases}");
}

#[test]
fn relative_includes_are_errors() {
    let mut b = proto::Builder::new(&["example.org".to_string()]);
    b.aliases(
        "/etc/aliases",
        b"rel: :include:lists/staff\nabs: :include:/etc/lists/staff\nok: a@x.net\n",
    );
    let got = relative_includes(&b.finish());
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(
        got[0].starts_with("/etc/aliases:1: error: rel: :include:lists/staff is a relative path"),
        "{got:?}"
    );
}

#[test]
fn findings() {
    check(
        "announce: a@x.net, \"|/usr/bin/archive announce\"\n",
        &[
            "/etc/aliases:1: announce punts as a whole because of \"|/usr/bin/archive announce\"; split it so the secondary can deliver the rest:\n    announce: a@x.net, announce-primary\n    announce-primary: \"|/usr/bin/archive announce\"\n",
        ],
    );
    check(
        "l: fwd, /var/l\nfwd: r@x.net\n",
        &[
            "/etc/aliases:1: l punts as a whole because of /var/l; split it so the secondary can deliver the rest:\n    l: fwd, l-primary\n    l-primary: /var/l\n",
        ],
    );
    // Nothing to gain: every other target needs the primary too.
    check("l: u, /var/l\n", &[]);
    check("l: /var/l\n", &[]);
    check("l: a@x.net, \\u, /var/l\n", &[]);
    // Already split.
    check("l: a@x.net, l-archive\nl-archive: /var/l\n", &[]);
}
