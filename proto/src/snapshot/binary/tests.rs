//! The binary body: it reads back what was written, its content part is the canonical encoding,
//! and anything malformed is an error naming where, never a panic or a large allocation.

use super::*;
use crate::testkit::content;

/// Every optional part of the content set: an unreadable include, a `.forward` that is a
/// filter and one that cannot be read, a `.procmailrc`, a bad line (a diagnostic), every kind.
const FIXTURE: &str = "== aliases\n\
postmaster: root\n\
root: ops@remote.net, \\root\n\
trolls: adb@elsewhere.net, trolls-archive, \"|/bin/prog\", :fail: no\n\
trolls-archive: /com/archive/trolls\n\
staff: :include:/etc/mail/staff, :include:/etc/mail/gone\n\
no colon here\n\
== /etc/mail/staff\nalice\nbob@remote.net\n\
== !/etc/mail/gone\n\
== virtual\nsales@example.com  alice@example.org, deals@partner.net\n\
== recipients\nbox@example.org OK\n\
== /home/bob/.forward\n# Exim filter\n\
== !/home/alice/.forward\n\
== /home/carol/.procmailrc\n:0\n";

fn snapshot(c: Content) -> Snapshot {
    Snapshot {
        format: FORMAT,
        agent: "mx1".into(),
        version: 7,
        hash: c.hash(),
        created_at: 1_700_000_000,
        content: c,
    }
}

fn sample() -> Snapshot {
    snapshot(content(FIXTURE))
}

#[test]
fn the_fixture_sets_every_optional_part() {
    let c = sample().content;
    assert!(c.includes.iter().any(|i| i.error.is_some()));
    assert!(c.users.iter().any(|u| u.procmail.is_some()));
    let forwards: Vec<&Forward> = c.users.iter().filter_map(|u| u.forward.as_ref()).collect();
    assert!(forwards.iter().any(|f| f.filter));
    assert!(forwards.iter().any(|f| f.error.is_some()));
    for s in [Severity::Warning, Severity::Error] {
        assert!(c.diagnostics.iter().any(|d| d.severity == s), "{s:?}");
    }
    let kinds: std::collections::BTreeSet<Kind> = c
        .aliases
        .iter()
        .flat_map(|a| a.targets.iter().map(|t| t.kind))
        .collect();
    for k in Kind::ALL.into_iter().filter(|&k| k != Kind::Invalid) {
        assert!(kinds.contains(&k), "{k:?}");
    }
}

#[test]
fn a_snapshot_reads_back_as_written_and_its_content_part_is_what_is_hashed() {
    let s = sample();
    let bytes = s.to_binary();
    assert!(is_binary(&bytes));
    assert_eq!(Snapshot::from_binary(&bytes), Ok(s.clone()));
    // The content part is the canonical encoding: its SHA-256 is the content hash.
    let content_at = bytes
        .windows(CONTENT_MAGIC.len())
        .position(|w| w == CONTENT_MAGIC)
        .expect("the content magic")
        - 8;
    assert_eq!(super::super::sha256_hex(&bytes[content_at..]), s.hash);
    // And JSON says the same.
    let json = serde_json::to_vec(&s).unwrap();
    assert!(!is_binary(&json));
    assert_eq!(serde_json::from_slice::<Snapshot>(&json).unwrap(), s);
}

#[test]
fn an_empty_content_reads_back() {
    let s = snapshot(Content::default());
    assert_eq!(Snapshot::from_binary(&s.to_binary()), Ok(s));
}

#[test]
fn every_truncation_is_an_error_and_so_is_a_byte_over() {
    let bytes = sample().to_binary();
    for n in 0..bytes.len() {
        let e = Snapshot::from_binary(&bytes[..n]).expect_err("a truncated body");
        assert!(e.at <= n, "{n}: {e}");
    }
    let mut over = bytes.clone();
    over.push(0);
    let e = Snapshot::from_binary(&over).unwrap_err();
    assert_eq!(
        (e.at, e.what.as_str()),
        (bytes.len(), "1 bytes after the end of the content")
    );
}

/// The error got when the bytes at `at` (found by `find` in the sample body) are replaced.
fn corrupt(find: &[u8], skip: usize, with: &[u8]) -> BinaryError {
    let mut bytes = sample().to_binary();
    let at = bytes
        .windows(find.len())
        .position(|w| w == find)
        .expect("found")
        + skip;
    bytes[at..at + with.len()].copy_from_slice(with);
    Snapshot::from_binary(&bytes).expect_err("corrupted")
}

#[test]
fn corrupted_bodies_name_what_and_where() {
    let check = |e: BinaryError, want: &str| {
        assert!(e.what.contains(want), "{e} lacks {want:?}");
    };
    check(
        corrupt(b"mxsync-snapshot", 0, b"X"),
        "\"mxsync-snapshot\" expected",
    );
    check(
        corrupt(b"mxsync-content", 0, b"X"),
        "\"mxsync-content\" expected",
    );
    // The format after the magic.
    check(corrupt(b"mxsync-snapshot", 15, &[9]), "format 9 is not 1");
    check(corrupt(b"mxsync-content", 14, &[2]), "format 2 is not 1");
    // The kind tag before a target's length and value, "root".
    let mut bytes = sample().to_binary();
    let root = bytes
        .windows(12)
        .position(|w| w == b"\x04\0\0\0\0\0\0\0root")
        .unwrap();
    bytes[root - 1] = 8;
    let e = Snapshot::from_binary(&bytes).unwrap_err();
    assert_eq!(
        (e.at, e.what.as_str()),
        (root - 1, "target kind 8 is not known")
    );
    // A string that is not UTF-8.
    check(corrupt(b"ops@remote.net", 0, &[0xff]), "is not UTF-8");
    // A count far beyond the body: refused before any allocation.
    let mut bytes = sample().to_binary();
    let first = b"\x0b\0\0\0\0\0\0\0example.com";
    let domains = bytes
        .windows(first.len())
        .position(|w| w == first)
        .expect("the first domain")
        - 8;
    bytes[domains..domains + 8].copy_from_slice(&u64::MAX.to_le_bytes());
    let e = Snapshot::from_binary(&bytes).unwrap_err();
    assert_eq!(e.at, domains);
    assert!(
        e.what
            .starts_with("a count of 18446744073709551615 does not fit"),
        "{e}"
    );
}

#[test]
fn flags_other_than_0_and_1_are_errors() {
    // The include that could not be read: its error flag, then its message.
    let mut bytes = sample().to_binary();
    let path = b"/etc/mail/gone";
    // Its path, file (4), an empty target list (8), then the flag.
    let flag = (0..bytes.len() - path.len() - 13)
        .filter(|&at| &bytes[at..at + path.len()] == path)
        .map(|at| at + path.len() + 4 + 8)
        .find(|&f| bytes[f - 8..f] == [0; 8] && bytes[f] == 1)
        .expect("the include entry");
    bytes[flag] = 2;
    let e = Snapshot::from_binary(&bytes).unwrap_err();
    assert_eq!(
        (e.at, e.what.as_str()),
        (flag, "flag byte 2 is neither 0 nor 1")
    );
}

mod props {
    use super::*;
    use crate::testkit::model::{content_after, edit};
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn random_contents_read_back(edits in prop::collection::vec(edit(), 0..40)) {
            let s = snapshot(content_after(&edits));
            prop_assert_eq!(Snapshot::from_binary(&s.to_binary()), Ok(s));
        }
    }
}

/// A content with `n` aliases, each with a target or two.
fn many(n: usize) -> Content {
    let aliases = (0..n)
        .map(|i| Alias {
            name: format!("a{i:07}"),
            file: 0,
            line: i as u32 + 1,
            targets: (0..1 + i % 2)
                .map(|t| Target {
                    kind: Kind::Address,
                    value: format!("r{i}.{t}@remote.net"),
                    line: i as u32 + 1,
                })
                .collect(),
        })
        .collect();
    Content {
        domains: vec!["example.org".into()],
        files: vec!["/etc/aliases".into()],
        aliases,
        ..Content::default()
    }
}

#[test]
fn a_long_alias_list_read_in_pieces_is_the_list_and_an_error_in_any_piece_is_found() {
    let s = snapshot(many(2 * crate::par::LEAST_ITEMS + 1));
    let bytes = s.to_binary();
    assert_eq!(Snapshot::from_binary(&bytes), Ok(s.clone()));
    // A kind tag out of range in the first piece, then in the last: the byte it stopped at.
    for name in ["a0000007", "a0090000"] {
        let mut bad = bytes.clone();
        let value = format!("r{}.0@remote.net", &name[1..].trim_start_matches('0'));
        let at = bad
            .windows(value.len())
            .position(|w| w == value.as_bytes())
            .expect("the target")
            - 8
            - 1;
        bad[at] = 9;
        let e = Snapshot::from_binary(&bad).unwrap_err();
        assert_eq!(
            (e.at, e.what.as_str()),
            (at, "target kind 9 is not known"),
            "{name}"
        );
    }
    // Cut inside the second half: found while skipping to it or reading it.
    let e = Snapshot::from_binary(&bytes[..bytes.len() * 3 / 4]).unwrap_err();
    assert!(e.what.contains("left"), "{e}");
}

#[test]
fn every_kind_reads_back_from_its_tag_and_no_other_tag_is_a_kind() {
    for k in Kind::ALL {
        // `tag` is the declaration order the canonical encoding writes; `ALL` must follow it.
        assert_eq!(Kind::from_tag(k.tag()), Some(k), "{k:?}");
    }
    for tag in Kind::ALL.len() as u8..=u8::MAX {
        assert_eq!(Kind::from_tag(tag), None, "{tag}");
    }
}

#[test]
fn a_string_past_the_limit_is_refused_before_it_is_copied() {
    let mut b = crate::Builder::new(&["example.org".to_string()]);
    b.aliases("/etc/aliases", b"a: r@remote.net\n");
    let mut content = b.finish();
    use crate::snapshot::MAX_STRING;
    for (len, ok) in [(MAX_STRING, true), (MAX_STRING + 1, false)] {
        content.aliases[0].name = "x".repeat(len);
        let snap = Snapshot {
            format: FORMAT,
            agent: "mx1".into(),
            version: 1,
            hash: content.hash(),
            created_at: 0,
            content: content.clone(),
        };
        let got = Snapshot::from_binary(&snap.to_binary());
        match (got, ok) {
            (Ok(s), true) => assert_eq!(s, snap),
            (Err(e), false) => assert!(e.to_string().contains("at most 65536"), "{e}"),
            (got, _) => panic!("{len}: {:?}", got.map(|_| ())),
        }
        assert_eq!(content.overlong().is_none(), ok, "{len}");
    }
}
