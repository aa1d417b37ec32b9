//! The name index: every kind of entry a name has is found by one lookup, absent names are not.

use super::*;
use crate::snapshot::{Alias, User, VirtualEntry};

fn content(aliases: &[&str], users: &[&str], virtuals: &[&str]) -> Content {
    let name = |n: &&str| n.to_string();
    Content {
        aliases: (aliases.iter().map(name))
            .map(|name| Alias {
                name,
                file: 0,
                line: 1,
                targets: Vec::new(),
            })
            .collect(),
        users: (users.iter().map(name))
            .map(|name| User {
                name,
                file: 0,
                line: 1,
                procmail: None,
                forward: None,
            })
            .collect(),
        virtuals: (virtuals.iter().map(name))
            .map(|key| VirtualEntry {
                key,
                file: 0,
                line: 1,
                targets: Vec::new(),
            })
            .collect(),
        ..Content::default()
    }
}

fn check(c: &Content, name: &str, expected: (Option<usize>, Option<usize>, Option<usize>)) {
    let (alias, user, bare) = expected;
    let want = Named::new(alias, user, bare);
    assert_eq!(Names::of(c).get(name), want, "{name}");
}

#[test]
fn one_lookup_finds_every_kind_of_entry_a_name_has() {
    let c = content(
        &["bob", "list", "root"],
        &["bob", "carol"],
        &["carol", "list@example.org", "x"],
    );
    check(&c, "bob", (Some(0), Some(0), None));
    check(&c, "list", (Some(1), None, None));
    check(&c, "root", (Some(2), None, None));
    check(&c, "carol", (None, Some(1), Some(0)));
    check(&c, "x", (None, None, Some(2)));
    // A full-address virtual key is not a local name.
    check(&c, "list@example.org", (None, None, None));
    check(&c, "nobody", (None, None, None));
    check(&c, "", (None, None, None));
    check(&content(&[], &[], &[]), "bob", (None, None, None));
}

#[test]
fn many_names_each_found_where_it_is_and_absent_ones_not() {
    let aliases: Vec<String> = (0..200_000).map(|i| format!("a{i:07}")).collect();
    let users: Vec<String> = (0..50_000).map(|i| format!("a{:07}", i * 3)).collect();
    let a: Vec<&str> = aliases.iter().map(String::as_str).collect();
    let u: Vec<&str> = users.iter().map(String::as_str).collect();
    let c = content(&a, &u, &[]);
    let names = Names::of(&c);
    for (i, n) in a.iter().enumerate() {
        let user = (i % 3 == 0 && i / 3 < 50_000).then_some(i / 3);
        assert_eq!(names.get(n), Named::new(Some(i), user, None), "{n}");
    }
    for i in 200_000..210_000 {
        assert_eq!(names.get(&format!("a{i:07}")), Named::NOTHING);
    }
}

#[test]
fn names_alike_in_their_first_sixteen_bytes_are_told_apart() {
    let long = "x".repeat(300);
    let longer = "x".repeat(301);
    let c = content(
        &[
            "abcdefghijklmnop",
            "abcdefghijklmnopq",
            "abcdefghijklmnopr",
            &long,
        ],
        &["abcdefghijklmnopqrst", "abcdefghijklmnopq"],
        &["abcdefghijklmno", &longer],
    );
    check(&c, "abcdefghijklmnop", (Some(0), None, None));
    check(&c, "abcdefghijklmnopq", (Some(1), Some(1), None));
    check(&c, "abcdefghijklmnopr", (Some(2), None, None));
    check(&c, "abcdefghijklmnopqrst", (None, Some(0), None));
    check(&c, "abcdefghijklmno", (None, None, Some(0)));
    check(&c, &long, (Some(3), None, None));
    check(&c, &longer, (None, None, Some(1)));
    check(&c, "abcdefghijklmnops", (None, None, None));
    check(&c, "abcdefghijklmnopqrsu", (None, None, None));
    check(&c, &"x".repeat(299), (None, None, None));
    check(&c, &"x".repeat(302), (None, None, None));
    check(&c, "abcdefghijklmno\0", (None, None, None));
}

#[test]
fn a_repeated_name_resolves_to_its_last_entry() {
    let c = content(&["dup", "dup"], &["dup"], &[]);
    check(&c, "dup", (Some(1), Some(0), None));
}
