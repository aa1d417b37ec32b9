//! Counters survive reloads and never go backwards.

use super::*;

#[test]
fn version_rises_only_when_the_hash_changes_and_survives_reload() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = Counters::load(dir.path()).unwrap();
    assert_eq!(c.observe("a").unwrap(), 1);
    assert_eq!(c.observe("a").unwrap(), 1);
    assert_eq!(c.observe("b").unwrap(), 2);
    let s1 = c.next_seq().unwrap();
    let s2 = c.next_seq().unwrap();
    assert!(s2 > s1);
    drop(c);
    let mut c = Counters::load(dir.path()).unwrap();
    assert_eq!(c.current(), (2, "b"));
    assert_eq!(c.observe("b").unwrap(), 2);
    assert!(c.next_seq().unwrap() > s2);
    assert_eq!(c.raise_above(7).unwrap(), 8);
    assert_eq!(c.raise_above(3).unwrap(), 8);
}

#[test]
fn a_lost_state_dir_still_gives_fresh_sequence_numbers() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let s1 = Counters::load(a.path()).unwrap().next_seq().unwrap();
    let before = now_micros();
    let s2 = Counters::load(b.path()).unwrap().next_seq().unwrap();
    assert!(s2 >= before && s2 >= s1, "{s2} >= {before}, {s1}");
}
