//! Deltas: what `diff` sends for small edits, what `apply` refuses, and the property that the
//! receiver's content and hash after any sequence of deltas equal those of the full snapshot.

use super::*;
use crate::testkit::content;

/// A one-line picture of the changes: keyed lists as `name: -removed +upserted`, whole lists
/// by name.
fn summary(c: &Changes) -> String {
    fn sec<T: Keyed>(out: &mut Vec<String>, s: &Section<T>) {
        if !s.is_empty() {
            let mut parts: Vec<String> = s.remove.iter().map(|k| format!("-{k}")).collect();
            parts.extend(s.upsert.iter().map(|u| format!("+{}", u.key())));
            out.push(format!("{}: {}", T::WHAT, parts.join(" ")));
        }
    }
    let mut out = Vec::new();
    if c.domains.is_some() {
        out.push("domains".to_string());
    }
    if c.files.is_some() {
        out.push("files".to_string());
    }
    sec(&mut out, &c.aliases);
    sec(&mut out, &c.includes);
    sec(&mut out, &c.virtuals);
    sec(&mut out, &c.recipients);
    sec(&mut out, &c.users);
    if c.diagnostics.is_some() {
        out.push("diagnostics".to_string());
    }
    if out.is_empty() {
        "-".to_string()
    } else {
        out.join("; ")
    }
}

/// [`apply_owned`] both ways, which must agree: every list merged into a new one, and every list
/// patched in place however many keys it removes and adds.
fn owned(base: &Content, changes: &Changes) -> Result<Content, DeltaError> {
    let merged = apply_owned_in(base.clone(), changes, 0);
    let in_place = apply_owned_in(base.clone(), changes, usize::MAX);
    assert_eq!(
        in_place,
        merged,
        "in place and merged: {}",
        summary(changes)
    );
    in_place
}

fn check(old: &str, new: &str, expected: &str) {
    let (a, b) = (content(old), content(new));
    let changes = diff(&a, &b);
    assert_eq!(summary(&changes), expected, "{old:?} -> {new:?}");
    let got = apply(&a, &changes).expect("applies to its base");
    assert_eq!(got, b, "{old:?} -> {new:?}");
    let owned = owned(&a, &changes).expect("applies to its base, owned");
    assert_eq!(owned, b, "owned: {old:?} -> {new:?}");
    let halves = apply_in(&a, &changes, 0).expect("applies to its base, in halves");
    assert_eq!(halves, b, "in halves: {old:?} -> {new:?}");
    assert_eq!(got.hash(), b.hash());
}

#[test]
fn diff_sends_only_what_changed() {
    let base = "== aliases\na: r@remote.net\nb: s@remote.net\nc: a, b\n";
    let rows: &[(&str, &str)] = &[
        (base, "-"),
        (
            "== aliases\na: r@remote.net\nb: t@remote.net\nc: a, b\n",
            "aliases: +b",
        ),
        (
            "== aliases\na: r@remote.net\nb: s@remote.net\nc: a, b\nd: x@remote.net\n",
            "aliases: +d",
        ),
        (
            "== aliases\na: r@remote.net\nb: s@remote.net\n",
            "aliases: -c",
        ),
        (
            "== aliases\naa: r@remote.net\nb: s@remote.net\nc: aa, b\n",
            "aliases: -a +aa +c",
        ),
        // A line moved: its origin changed, so it is sent again.
        (
            "== aliases\nb: s@remote.net\na: r@remote.net\nc: a, b\n",
            "aliases: +a +b",
        ),
        (
            "== aliases\na: r@remote.net\nb: s@remote.net\nc: a, b, :include:/l/x\n== /l/x\nq@remote.net\n",
            "files; aliases: +c; includes: +/l/x",
        ),
        (
            "== aliases\na: r@remote.net\nb: s@remote.net\nc: a, b\n== virtual\nv@example.org r@remote.net\n",
            "files; virtual: +v@example.org",
        ),
        (
            "== aliases\na: r@remote.net\nb: s@remote.net\nc: a, b\nd e\n",
            "diagnostics",
        ),
        (
            "== aliases\na: r@remote.net\nb: s@remote.net\nc: a, b\n== /home/bob/.forward\nbob@remote.net\n",
            "files; users: +bob",
        ),
    ];
    for (new, expected) in rows {
        check(base, new, expected);
    }
}

#[test]
fn apply_refuses_changes_that_do_not_fit_the_base() {
    let base = content("== aliases\na: r@remote.net\nb: s@remote.net\n");
    let alias = |name: &str| base.aliases[0].clone().tap_name(name);
    let cases: Vec<(Changes, DeltaError)> = vec![
        (
            Changes {
                aliases: Section {
                    remove: vec!["zz".into()],
                    upsert: vec![],
                },
                ..Changes::default()
            },
            DeltaError::Missing {
                what: "aliases",
                key: "zz".into(),
            },
        ),
        (
            Changes {
                aliases: Section {
                    remove: vec!["0".into()],
                    upsert: vec![],
                },
                ..Changes::default()
            },
            DeltaError::Missing {
                what: "aliases",
                key: "0".into(),
            },
        ),
        (
            Changes {
                aliases: Section {
                    remove: vec!["b".into(), "a".into()],
                    upsert: vec![],
                },
                ..Changes::default()
            },
            DeltaError::Unsorted("aliases"),
        ),
        (
            Changes {
                aliases: Section {
                    remove: vec![],
                    upsert: vec![alias("c"), alias("c")],
                },
                ..Changes::default()
            },
            DeltaError::Unsorted("aliases"),
        ),
        (
            Changes {
                aliases: Section {
                    remove: vec!["a".into()],
                    upsert: vec![alias("a")],
                },
                ..Changes::default()
            },
            DeltaError::Both {
                what: "aliases",
                key: "a".into(),
            },
        ),
    ];
    for (changes, expected) in cases {
        assert_eq!(apply(&base, &changes), Err(expected.clone()), "{changes:?}");
        let halves = apply_in(&base, &changes, 0);
        assert_eq!(halves, Err(expected.clone()), "in halves: {changes:?}");
        assert_eq!(owned(&base, &changes), Err(expected), "{changes:?}");
    }
}

trait TapName {
    fn tap_name(self, name: &str) -> Self;
}

impl TapName for Alias {
    fn tap_name(mut self, name: &str) -> Self {
        self.name = name.to_string();
        self
    }
}

#[test]
fn a_delta_survives_the_wire() {
    let a = content("== aliases\na: r@remote.net\nb: s@remote.net\n");
    let b = content("== aliases\nb: t@remote.net, \"|/bin/x\"\n== virtual\nv@example.org b\n");
    let d = Delta {
        format: crate::snapshot::FORMAT,
        agent: "mx1".into(),
        version: 2,
        base_hash: a.hash(),
        hash: b.hash(),
        created_at: 0,
        changes: diff(&a, &b),
    };
    let json = serde_json::to_vec(&d).expect("encode");
    let back: Delta = serde_json::from_slice(&json).expect("decode");
    assert_eq!(back, d);
    assert_eq!(apply(&a, &back.changes).expect("applies"), b);
}

/// `c` with the lists a delta sends whole out of order, as an agent might send them: domains
/// and diagnostics reversed, and the file table reversed with every origin moved along.
fn disorder_whole(c: &mut Content) {
    c.domains.reverse();
    c.diagnostics.reverse();
    c.files.reverse();
    let last = c.files.len() as u32;
    c.origins_mut(|f| *f = last - 1 - *f);
}

mod properties {
    //! A primary edited at random, one line at a time: the receiver that only ever gets deltas
    //! holds exactly what the full snapshot would give, at every step.

    use super::*;
    use crate::testkit::model::{content_after, edit, walk};
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn deltas_give_what_full_snapshots_give(
            start in prop::collection::vec(edit(), 0..20),
            edits in prop::collection::vec(edit(), 1..16),
        ) {
            let mut receiver = content_after(&start);
            // What a restart does with the stored chain: the same deltas, applied owned.
            let mut replayed = receiver.clone();
            walk(&start, &edits, |full, next| {
                let changes = diff(full, next);
                // Over the wire, as the agent sends it.
                let json = serde_json::to_vec(&changes).expect("encode");
                let changes: Changes = serde_json::from_slice(&json).expect("decode");
                let halves = apply_in(&receiver, &changes, 0).expect("applies in halves");
                prop_assert_eq!(&halves, next);
                receiver = apply(&receiver, &changes).expect("a delta applies to its base");
                prop_assert_eq!(&receiver, next);
                // What a patch gives needs only its whole lists sorted, whatever their order.
                let mut patched = receiver.clone();
                disorder_whole(&mut patched);
                patched.normalize_patched();
                prop_assert_eq!(&patched, next);
                prop_assert_eq!(receiver.hash(), next.hash());
                prop_assert_eq!(owned(&replayed, &changes), Ok(next.clone()));
                replayed = apply_owned(std::mem::take(&mut replayed), &changes)
                    .expect("a delta applies to its base, owned");
                prop_assert_eq!(&replayed, next);
                prop_assert_eq!(changes.is_empty(), full == next);
                Ok(())
            })?;
        }

        #[test]
        fn a_delta_for_another_base_never_passes_for_the_right_result(
            a in prop::collection::vec(edit(), 1..12),
            b in prop::collection::vec(edit(), 1..12),
            c in prop::collection::vec(edit(), 1..12),
        ) {
            // The receiver holds `other`, the agent diffs from `base`: either apply refuses, or
            // the result's hash differs from the claimed one (the server checks it) unless the
            // contents happen to be equal.
            let (base, other, next) = (content_after(&a), content_after(&b), content_after(&c));
            let changes = diff(&base, &next);
            prop_assert_eq!(owned(&other, &changes), apply(&other, &changes));
            if let Ok(got) = apply(&other, &changes) {
                prop_assert!(got.hash() != next.hash() || got == next);
            }
        }
    }
}
