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
        base: None,
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
fn a_database_of_schema_2_keeps_its_bodies_in_the_table_of_their_own() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("db");
    {
        // As the server before schema 3 left it: bodies on the history rows.
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(&format!(
            "CREATE TABLE schema_version (version INTEGER NOT NULL);
             INSERT INTO schema_version (version) VALUES (2);
             {}{}
             INSERT INTO agents (id, applied_snapshot) VALUES ('mx1', 2);
             INSERT INTO snapshots (id, agent, version, hash, received_at, outcome, body, base)
               VALUES (1, 'mx1', 1, 'h1', 1, 'applied', X'66756c6c', NULL),
                      (2, 'mx1', 2, 'h2', 2, 'applied', X'6431', 1),
                      (3, 'mx1', 3, 'h3', 3, 'refused', NULL, NULL);",
            MIGRATIONS[0], MIGRATIONS[1]
        ))
        .unwrap();
    }
    let s = Store::open(&path).unwrap();
    assert_eq!(s.schema_version().unwrap(), 3);
    let chain: Vec<(i64, Option<Vec<u8>>)> = s
        .chain(2)
        .unwrap()
        .into_iter()
        .map(|l| (l.id, l.body))
        .collect();
    assert_eq!(
        chain,
        vec![(1, Some(b"full".to_vec())), (2, Some(b"d1".to_vec()))]
    );
    assert_eq!(s.body(3).unwrap(), None);
    assert_eq!(s.find_with_body("mx1", 2, "h2").unwrap(), Some(2));
    assert_eq!(s.find_with_body("mx1", 3, "h3").unwrap(), None);
    let outcomes: Vec<String> = s
        .history(None, 10)
        .unwrap()
        .into_iter()
        .map(|r| r.outcome)
        .collect();
    assert_eq!(outcomes, ["refused", "applied", "applied"]);
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

/// mx1's apply of history row `snapshot`, with `addresses` addresses.
fn applied(
    snapshot: i64,
    version: u64,
    hash: &str,
    applied_at: u64,
    addresses: u64,
) -> ApplyRecord<'_> {
    ApplyRecord {
        agent: "mx1",
        snapshot,
        version,
        hash,
        applied_at,
        counts: Counts {
            addresses,
            ..Counts::default()
        },
    }
}

#[test]
fn applied_and_held_rows_keep_their_bodies_and_survive_pruning() {
    let mut s = Store::open_in_memory().unwrap();
    s.ensure_agents(["mx1"]).unwrap();
    let a1 = s
        .insert_snapshot(&row("mx1", 1, "received", Some(b"one")))
        .unwrap();
    s.set_applied(&applied(a1, 1, "h", 10, 100)).unwrap();
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
    assert!(s.request_release("mx1", false).unwrap());
    assert!(s.agent("mx1").unwrap().unwrap().release_requested);
    // Applying a newer one drops the old bodies and the hold.
    let a2 = s
        .insert_snapshot(&row("mx1", 21, "received", Some(b"new")))
        .unwrap();
    s.set_applied(&applied(a2, 21, "h2", 20, 90)).unwrap();
    let r = s.agent("mx1").unwrap().unwrap();
    assert_eq!(
        (r.applied_snapshot, r.held_snapshot, r.release_requested),
        (Some(a2), None, false)
    );
    assert_eq!(s.body(a1).unwrap(), None);
    assert_eq!(s.body(held).unwrap(), None);
    assert!(!s.request_release("mx1", false).unwrap());
    // Only the applied row's body is left, and no body outlives its row.
    assert_eq!(count(&s, "SELECT COUNT(*) FROM bodies"), 1);
    s.insert_snapshot(&row("mx1", 22, "received", Some(b"x")))
        .unwrap();
    for v in 23..40 {
        s.insert_snapshot(&row("mx1", v, "refused", None)).unwrap();
    }
    assert!(s.prune("mx1", 3).unwrap() > 0);
    assert_eq!(
        count(
            &s,
            "SELECT COUNT(*) FROM bodies WHERE snapshot NOT IN (SELECT id FROM snapshots)"
        ),
        0
    );
    assert_eq!(count(&s, "SELECT COUNT(*) FROM bodies"), 1);
}

/// A count from the database.
fn count(s: &Store, sql: &str) -> i64 {
    s.conn.query_row(sql, [], |r| r.get(0)).unwrap()
}

#[test]
fn an_apply_is_recorded_in_one_transaction_with_its_counts_and_the_pruning() {
    let mut s = Store::open_in_memory().unwrap();
    s.ensure_agents(["mx1"]).unwrap();
    let old = s
        .insert_snapshot(&row("mx1", 1, "received", Some(b"old")))
        .unwrap();
    s.set_applied(&applied(old, 1, "h1", 1, 5)).unwrap();
    for v in 2..=6 {
        s.insert_snapshot(&row("mx1", v, "refused", None)).unwrap();
    }
    let id = s
        .insert_snapshot(&row("mx1", 7, "received", Some(b"new")))
        .unwrap();
    let c = Counts {
        addresses: 10,
        forward: 4,
        split: 3,
        punt: 3,
    };
    let record = ApplyRecord {
        counts: c,
        ..applied(id, 7, "h7", 70, 0)
    };
    s.record_applied(&record, 3).unwrap();
    let h = s.history(Some("mx1"), 100).unwrap();
    let got: Vec<(u64, &str)> = h.iter().map(|r| (r.version, r.outcome.as_str())).collect();
    assert_eq!(got, [(7, "applied"), (6, "refused"), (5, "refused")]);
    let r = &h[0];
    assert_eq!(
        (r.id, r.applied_at, r.detail.as_deref()),
        (id, Some(70), None)
    );
    assert_eq!(
        (r.addresses, r.forward, r.split, r.punt),
        (Some(10), Some(4), Some(3), Some(3))
    );
    let a = s.agent("mx1").unwrap().unwrap();
    assert_eq!(
        (a.applied_snapshot, a.applied_version, a.applied_addresses),
        (Some(id), Some(7), Some(10))
    );
    assert_eq!(s.body(id).unwrap().as_deref(), Some(&b"new"[..]));
}

#[test]
fn a_delta_keeps_its_chain_of_bases_until_a_full_snapshot_replaces_it() {
    let mut s = Store::open_in_memory().unwrap();
    s.ensure_agents(["mx1"]).unwrap();
    let insert = |s: &mut Store, version, body: &'static [u8], base| {
        s.insert_snapshot(&NewSnapshot {
            base,
            ..row("mx1", version, "received", Some(body))
        })
        .unwrap()
    };
    let bodies = |s: &Store, id| -> Vec<(i64, Option<i64>, Option<String>)> {
        s.chain(id)
            .unwrap()
            .into_iter()
            .map(|l| (l.id, l.base, l.body.map(|b| String::from_utf8(b).unwrap())))
            .collect()
    };
    let text = |t: &str| Some(t.to_string());
    let full = insert(&mut s, 1, b"full", None);
    s.set_applied(&applied(full, 1, "h1", 1, 10)).unwrap();
    let d1 = insert(&mut s, 2, b"d1", Some(full));
    s.set_applied(&applied(d1, 2, "h2", 2, 10)).unwrap();
    let d2 = insert(&mut s, 3, b"d2", Some(d1));
    s.set_applied(&applied(d2, 3, "h3", 3, 10)).unwrap();
    // A held delta on the applied one, then history to prune.
    let held = insert(&mut s, 4, b"held", Some(d2));
    s.set_held("mx1", held).unwrap();
    for v in 5..30 {
        s.insert_snapshot(&row("mx1", v, "refused", None)).unwrap();
    }
    assert_eq!(
        bodies(&s, d2),
        vec![
            (full, None, text("full")),
            (d1, Some(full), text("d1")),
            (d2, Some(d1), text("d2")),
        ]
    );
    assert_eq!(s.prune("mx1", 2).unwrap(), 23);
    assert_eq!(
        bodies(&s, held).len(),
        4,
        "the held row's chain survives pruning"
    );
    assert_eq!(bodies(&s, held)[0], (full, None, text("full")));
    // A full snapshot applied: the old chain and the held row lose their bodies.
    let f2 = insert(&mut s, 31, b"full2", None);
    s.set_applied(&applied(f2, 31, "h31", 31, 10)).unwrap();
    assert_eq!(bodies(&s, f2), vec![(f2, None, text("full2"))]);
    for id in [full, d1, d2, held] {
        assert_eq!(s.body(id).unwrap(), None, "row {id}");
    }
    assert_eq!(s.prune("mx1", 1).unwrap(), 6);
    assert_eq!(s.history(Some("mx1"), 100).unwrap().len(), 1);
    assert_eq!(
        s.chain(full).unwrap(),
        Vec::new(),
        "a pruned row has no chain"
    );
    // A delta whose base was pruned: the chain ends at the row with the missing base.
    let orphan = insert(&mut s, 32, b"d", Some(d2));
    assert_eq!(bodies(&s, orphan), vec![(orphan, Some(d2), text("d"))]);
}
