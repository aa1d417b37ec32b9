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

/// The definitions the fast paths above must agree with: character by character.
mod reference {
    pub(super) fn valid_local_part(s: &str) -> bool {
        !s.is_empty()
            && s.len() <= super::MAX_LOCAL
            && !matches!(s.chars().next(), Some('#' | '|' | '/' | '~' | '-'))
            && !s.starts_with('.')
            && !s.ends_with('.')
            && !s.contains("..")
            && s.chars().all(super::local_char)
    }

    pub(super) fn is_folded(s: &str) -> bool {
        s.to_lowercase() == s
    }

    pub(super) fn valid_address(a: &str) -> bool {
        a.rsplit_once('@')
            .is_some_and(|(local, domain)| valid_local_part(local) && valid_domain(domain))
    }

    pub(super) fn valid_domain(d: &str) -> bool {
        !d.is_empty()
            && d.len() <= super::MAX_DOMAIN
            && d.contains('.')
            && d.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && !label.starts_with('-')
                    && !label.ends_with('-')
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            })
    }
}

mod props {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn the_fast_paths_agree_with_the_definitions(
            s in "[a-zA-Z0-9.#|/~\\-_+ :,\"@!İÖöϓ\u{0}]{0,70}"
        ) {
            prop_assert_eq!(valid_local_part(&s), reference::valid_local_part(&s), "{:?}", s);
            prop_assert_eq!(valid_address(&s), reference::valid_address(&s), "{:?}", s);
            prop_assert_eq!(is_folded(&s), reference::is_folded(&s), "{:?}", s);
            prop_assert_eq!(split(&s), s.rsplit_once('@'), "{:?}", s);
            prop_assert_eq!(normalize_address_owned(s.clone()).ok(), normalize_address(&s), "{:?}", s);
        }

        #[test]
        fn normalizing_in_place_agrees_with_normalizing_a_copy(
            local in "[a-zA-Z0-9.+_@-]{0,8}",
            domain in "([a-zA-Z0-9-]{1,5}\\.){0,2}[a-zA-Z@]{0,4}",
        ) {
            let s = format!("{local}@{domain}");
            prop_assert_eq!(normalize_address_owned(s.clone()).ok(), normalize_address(&s), "{:?}", s);
        }

        /// Mostly well-formed addresses, with the odd byte, dot, `@` or character anywhere.
        #[test]
        fn the_address_pass_agrees_with_the_definition(
            local in "[a-z0-9.+_'#|/~-]{0,6}(ö|[@ :\"]|[.]{2}|)[a-zA-Z0-9.-]{0,5}|a{60,66}",
            domain in "(([a-z0-9-]{1,4}|[A-Z@_ö]|a{62,64})[.]){0,3}[a-z0-9-]{0,4}[.@]?",
        ) {
            let s = format!("{local}@{domain}");
            prop_assert_eq!(valid_address(&s), reference::valid_address(&s), "{:?}", s);
            prop_assert_eq!(valid_parts(&local, &domain), reference::valid_address(&s) && !local.contains('@'), "{:?}", s);
        }

        #[test]
        fn the_domain_pass_agrees_with_the_definition(
            labels in prop::collection::vec("[a-z0-9-]{0,4}|[aA.-]{0,3}|a{60,66}|-?[a-z]_?ö?-?", 0..6),
            long in 0..2usize,
        ) {
            let mut d = labels.join(".");
            if long == 1 {
                d = format!("{}.{d}", "a.".repeat(125));
            }
            prop_assert_eq!(valid_domain(&d), reference::valid_domain(&d), "{:?}", d);
        }
    }

    #[test]
    fn every_ascii_byte_is_classed_as_the_character_is() {
        for b in 0..128u8 {
            let s = format!("a{}a", b as char);
            assert_eq!(
                valid_local_part(&s),
                reference::valid_local_part(&s),
                "{s:?}"
            );
            for a in [format!("{s}@x.org"), format!("a@x{}y.org", b as char)] {
                assert_eq!(valid_address(&a), reference::valid_address(&a), "{a:?}");
            }
        }
    }
}
