//! The canonical hash and the wire encoding, pinned by golden files.
//!
//! Set `MXSYNC_BLESS=1` to rewrite the golden files after an intended format change; the diff is
//! then the visible record of it.

use super::*;
use crate::plan::Planner;
use crate::testkit::content;

const FIXTURE: &str = "== aliases\n\
postmaster: root\n\
root: ops@remote.net\n\
trolls: adb@elsewhere.net, nemo@other.org,\n  trolls-archive\n\
trolls-archive: /com/archive/trolls\n\
staff: :include:/etc/mail/staff\n\
no colon here\n\
== /etc/mail/staff\nalice\nbob@remote.net\n\
== virtual\nsales@example.com  alice@example.org, deals@partner.net\n\
== recipients\nbox@example.org OK\n\
== /home/bob/.forward\nbob@remote.net\n\
== /home/carol/.procmailrc\n:0\n";

fn golden(name: &str, actual: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    if std::env::var_os("MXSYNC_BLESS").is_some() {
        std::fs::write(&path, actual).unwrap();
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_default();
    assert_eq!(
        actual,
        expected,
        "golden file {} differs (MXSYNC_BLESS=1 rewrites it)",
        path.display()
    );
}

#[test]
fn snapshot_wire_encoding_is_pinned() {
    let c = content(FIXTURE);
    let snap = Snapshot {
        format: FORMAT,
        agent: "mx1".into(),
        version: 3,
        hash: c.hash(),
        created_at: 1_700_000_000,
        content: c,
    };
    let json = serde_json::to_string_pretty(&snap).unwrap() + "\n";
    golden("snapshot.json", &json);
    let back: Snapshot = serde_json::from_str(&json).unwrap();
    assert_eq!(back, snap);
    assert_eq!(back.content.hash(), snap.hash);
}

#[test]
fn plans_are_pinned() {
    let c = content(FIXTURE);
    let mut out = String::new();
    for p in Planner::new(&c).plan_all() {
        out.push_str(&serde_json::to_string(&p).unwrap());
        out.push('\n');
    }
    golden("plans.jsonl", &out);
}

#[test]
fn hash_is_pinned() {
    // Same content, same hash, on any machine: the value is part of the format.
    golden("hash.txt", &(content(FIXTURE).hash() + "\n"));
}

#[test]
fn unknown_fields_are_tolerated() {
    let c = content("== aliases\na: r@x.net\n");
    let mut v = serde_json::to_value(Snapshot {
        format: FORMAT,
        agent: "mx1".into(),
        version: 1,
        hash: c.hash(),
        created_at: 0,
        content: c.clone(),
    })
    .unwrap();
    v["future_field"] = serde_json::json!({"x": 1});
    v["content"]["aliases"][0]["future"] = serde_json::json!(true);
    let back: Snapshot = serde_json::from_value(v).unwrap();
    assert_eq!(back.content, c);
}

#[test]
fn every_change_of_content_changes_the_hash() {
    let base = content(FIXTURE);
    let h = base.hash();
    type Change = Box<dyn Fn(&mut Content)>;
    let mut changes: Vec<(&str, Change)> = vec![
        (
            "target value",
            Box::new(|c| c.aliases[0].targets[0].value.push('x')),
        ),
        (
            "target kind",
            Box::new(|c| c.aliases[0].targets[0].kind = Kind::Invalid),
        ),
        (
            "target line",
            Box::new(|c| c.aliases[0].targets[0].line += 1),
        ),
        ("alias name", Box::new(|c| c.aliases[0].name.push('x'))),
        ("alias line", Box::new(|c| c.aliases[0].line += 1)),
        ("domain", Box::new(|c| c.domains.push("z.example".into()))),
        ("file name", Box::new(|c| c.files[0].push('x'))),
        (
            "include error",
            Box::new(|c| c.includes[0].error = Some("x".into())),
        ),
        ("virtual key", Box::new(|c| c.virtuals[0].key.push('x'))),
        (
            "recipient",
            Box::new(|c| c.recipients[0].address.insert(0, 'x')),
        ),
        ("procmail", Box::new(|c| c.users[0].procmail = Some(0))),
        ("forward", Box::new(|c| c.users[1].forward = None)),
        ("diagnostic", Box::new(|c| c.diagnostics.clear())),
        (
            "moved target",
            Box::new(|c| {
                let t = c.aliases[0].targets.pop().unwrap();
                c.aliases[1].targets.push(t);
            }),
        ),
    ];
    // Two fields that could be confused by a naive concatenation must still differ.
    changes.push((
        "boundary",
        Box::new(|c| {
            let n = c.aliases[0].name.clone();
            c.aliases[0].name = n[..1].to_string();
            c.aliases[0].targets[0].value.insert_str(0, &n[1..]);
        }),
    ));
    for (what, change) in changes {
        let mut c = base.clone();
        change(&mut c);
        assert_ne!(c.hash(), h, "{what}");
    }
}

#[test]
fn validate_names_every_problem() {
    let mut c = content(FIXTURE);
    assert_eq!(c.validate(), Ok(()));
    c.aliases[0].name = "a b".into();
    c.recipients[0].address = "x@example.org\nroot@y OK".into();
    c.aliases[1].targets[0] = Target {
        kind: Kind::Address,
        value: "a,b@x.net".into(),
        line: 1,
    };
    c.users[0].file = 999;
    c.aliases[3].targets.push(Target {
        kind: Kind::Local,
        value: "a b".into(),
        line: 1,
    });
    let dup = c.aliases[2].clone();
    c.aliases.push(dup);
    let err = c.validate().unwrap_err();
    let text = err.to_string();
    for needle in [
        "\"a b\"",
        "root@y OK",
        "a,b@x.net",
        "out of range",
        "duplicated",
        "not a valid local name",
    ] {
        assert!(text.contains(needle), "{needle} missing from {text}");
    }
}

#[test]
fn a_delta_is_checked_by_what_it_upserts() {
    use crate::delta::{Changes, apply, diff};
    let old = content("== aliases\nx: r@remote.net\ny: x\n== virtual\nv@example.org x\n");
    let new = content(
        "== aliases\nx: s@remote.net\ny: x\nz: r@remote.net\n== virtual\nv@example.org x\n\
         w@example.org y\n",
    );
    let check = |corrupt: &dyn Fn(&mut Changes), expected: Option<&str>| {
        let mut changes = diff(&old, &new);
        corrupt(&mut changes);
        let mut got = apply(&old, &changes).expect("the changes apply");
        got.normalize();
        let only = crate::delta::validate_changed(&got, &changes).map_err(|e| e.to_string());
        let full = got.validate().map_err(|e| e.to_string());
        assert_eq!(only.is_ok(), full.is_ok(), "{only:?} but in full {full:?}");
        match expected {
            None => assert_eq!(only, Ok(())),
            Some(needle) => {
                let e = only.expect_err(needle);
                assert!(e.contains(needle), "{needle:?} not in {e}");
            }
        }
    };
    check(&|_| {}, None);
    check(
        &|c| c.aliases.upsert[0].targets[0].value = "s b@remote.net".into(),
        Some("alias \"x\": target \"s b@remote.net\" is not a valid address"),
    );
    check(
        &|c| c.aliases.upsert[0].name = "X".into(),
        Some("alias \"X\" is not a valid lowercase name"),
    );
    check(
        &|c| c.aliases.upsert[1].file = 9,
        Some("file index 9 out of range"),
    );
    check(
        &|c| c.virtuals.upsert[0].key = "w@example.org\nroot".into(),
        Some("is not a valid lowercase address"),
    );
    // The file table changed: every entry is checked, an unchanged one's index too.
    check(
        &|c| c.files = Some(Vec::new()),
        Some("alias \"y\": file index 0 out of range"),
    );
}

#[test]
fn duplicates_are_found_sorted_or_not() {
    let check = |names: &[&str], expected: &[&str]| {
        let mut c = content("== aliases\nx: r@remote.net\n");
        let a = c.aliases[0].clone();
        c.aliases = names
            .iter()
            .map(|n| {
                let mut a = a.clone();
                a.name = n.to_string();
                a
            })
            .collect();
        let text = c
            .validate()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        for n in expected {
            assert!(
                text.contains(&format!("alias \"{n}\" is duplicated")),
                "{names:?}: {text}"
            );
        }
        assert_eq!(
            text.matches("duplicated").count(),
            expected.len(),
            "{names:?}: {text}"
        );
    };
    check(&["a", "b", "c"], &[]);
    check(&["a", "b", "b", "c"], &["b"]);
    check(&["a", "a", "a"], &["a", "a"]);
    check(&["b", "a", "b"], &["b"]);
    check(&["c", "a", "c", "a"], &["c", "a"]);
}

/// SHA-256 on another thread, beside the encoding, gives the hash: empty, the pinned fixture,
/// contents around the chunk size and over many chunks; past the threshold `hash` is that one.
#[test]
fn hashing_beside_the_encoding_gives_the_same_hash() {
    let check = |c: &Content, what: &str| {
        assert_eq!(c.hash_with(true), c.hash_with(false), "{what}");
    };
    check(&Content::default(), "empty");
    check(&content(FIXTURE), "fixture");
    let aliases = |n: usize| {
        let text: String = (0..n)
            .map(|i| format!("a{i}: r{i}@remote.net, l{i}\n"))
            .collect();
        content(&format!("== aliases\n{text}"))
    };
    for n in [1, 100, 1000, 1500, 20_000] {
        check(&aliases(n), &format!("{n} aliases"));
    }
    let big = aliases(HASH_BESIDE);
    assert_eq!(big.hash(), big.hash_with(false));
}
