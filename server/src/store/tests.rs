//! The store: migrations, the replay counter, applied/held bookkeeping, pruning.

use super::*;

fn row<'a>(
    agent: &'a str,
    version: u64,
    outcome: &'a str,
    body: Option<&'a [u8]>,
) -> NewSnapshot<'a> {
    NewSnapshot {
        agent,
        version,
        hash: "h",
        received_at: 1,
        outcome,
        detail: None,
        counts: None,
        body,
    }
}

#[test]
fn migrations_run_once_and_survive_reopening() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("db");
    let s = Store::open(&path).unwrap();
    assert_eq!(s.schema_version().unwrap(), MIGRATIONS.len() as i64);
    s.ensure_agents(["mx1"]).unwrap();
    assert!(s.accept_seq("mx1", 5).unwrap());
    drop(s);
    let s = Store::open(&path).unwrap();
    assert_eq!(s.schema_version().unwrap(), MIGRATIONS.len() as i64);
    assert_eq!(s.agent("mx1").unwrap().unwrap().last_seq, 5);
    assert!(s.integrity_ok().unwrap());
}

#[test]
fn sequence_numbers_only_go_up() {
    let s = Store::open_in_memory().unwrap();
    s.ensure_agents(["mx1"]).unwrap();
    for (seq, accepted) in [
        (1, true),
        (1, false),
        (0, false),
        (5, true),
        (4, false),
        (6, true),
    ] {
        assert_eq!(s.accept_seq("mx1", seq).unwrap(), accepted, "seq {seq}");
    }
    assert!(!s.accept_seq("nobody", 100).unwrap());
}

#[test]
fn applied_and_held_rows_keep_their_bodies_and_survive_pruning() {
    let mut s = Store::open_in_memory().unwrap();
    s.ensure_agents(["mx1"]).unwrap();
    let a1 = s
        .insert_snapshot(&row("mx1", 1, "received", Some(b"one")))
        .unwrap();
    s.set_applied("mx1", a1, 1, "h", 10, 100).unwrap();
    let held = s
        .insert_snapshot(&row("mx1", 2, "held", Some(b"two")))
        .unwrap();
    s.set_held("mx1", held).unwrap();
    for v in 3..20 {
        s.insert_snapshot(&row("mx1", v, "refused", None)).unwrap();
    }
    assert_eq!(s.prune("mx1", 5).unwrap(), 12);
    let ids: Vec<i64> = s
        .history(Some("mx1"), 100)
        .unwrap()
        .iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(ids.len(), 7);
    assert!(ids.contains(&a1) && ids.contains(&held));
    assert_eq!(s.body(a1).unwrap().as_deref(), Some(&b"one"[..]));
    assert!(s.request_release("mx1").unwrap());
    assert!(s.agent("mx1").unwrap().unwrap().release_requested);
    // Applying a newer one drops the old bodies and the hold.
    let a2 = s
        .insert_snapshot(&row("mx1", 21, "received", Some(b"new")))
        .unwrap();
    s.set_applied("mx1", a2, 21, "h2", 20, 90).unwrap();
    let r = s.agent("mx1").unwrap().unwrap();
    assert_eq!(
        (r.applied_snapshot, r.held_snapshot, r.release_requested),
        (Some(a2), None, false)
    );
    assert_eq!(s.body(a1).unwrap(), None);
    assert_eq!(s.body(held).unwrap(), None);
    assert!(!s.request_release("mx1").unwrap());
}
