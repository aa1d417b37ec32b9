//! Table tests for the address rules.

use super::*;

fn check(input: &str, expected: bool) {
    assert_eq!(valid_address(input), expected, "valid_address({input:?})");
}

#[test]
fn addresses() {
    for (input, expected) in [
        ("a@example.org", true),
        ("First.Last+tag@mail.example.org", true),
        ("o'brien@example.org", true),
        ("a#b@example.org", true),
        ("#a@example.org", false),
        ("|cmd@example.org", false),
        ("/x@example.org", false),
        ("-a@example.org", false),
        ("a b@example.org", false),
        ("a,b@example.org", false),
        ("a:b@example.org", false),
        ("\"a\"@example.org", false),
        ("a\n@example.org", false),
        ("a@Example.org", false),
        ("a@example", false),
        ("a@[192.0.2.1]", false),
        ("a@exa_mple.org", false),
        ("a@-x.org", false),
        ("a..b@x.org", false),
        (".a@x.org", false),
        ("@x.org", false),
        ("a@", false),
        ("a", false),
        ("jörg@example.org", true),
        ("a\u{0}@x.org", false),
    ] {
        check(input, expected);
    }
}

#[test]
fn normalize_lowercases_domain_only() {
    assert_eq!(
        normalize_address("Bob@Example.ORG").as_deref(),
        Some("Bob@example.org")
    );
    assert_eq!(normalize_address("bob@ex ample.org"), None);
}

#[test]
fn folded_means_lowercasing_changes_nothing() {
    for (s, folded) in [
        ("abc", true),
        ("Abc", false),
        ("jörg", true),
        ("JÖRG", false),
        ("\u{3d3}x", true),
        ("İ", false),
    ] {
        assert_eq!(is_folded(s), folded, "{s:?}");
        if folded {
            assert_eq!(s.to_lowercase(), s);
        }
    }
}
