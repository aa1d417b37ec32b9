//! What a write sends: the changes between two rendered parts, and COPY's escaping.

use std::sync::Arc;

use super::rows::{Changes, changes, copy_field};
use crate::render::Text;

fn text(pieces: &[&Arc<String>]) -> Text {
    Text::from_pieces(pieces.iter().map(|p| Arc::clone(p)).collect())
}

fn piece(lines: &str) -> Arc<String> {
    Arc::new(lines.to_string())
}

#[test]
fn only_the_pieces_a_change_touched_are_compared_and_only_changed_rows_come_out() {
    let check = |old: Text, new: Text, gone: &[&str], set: &[(&str, &str)]| {
        let got = changes("postfix/virtual", &old, &new);
        let want = Changes {
            gone: gone.iter().map(|s| s.to_string()).collect(),
            set: set
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        assert_eq!(got, want);
    };
    let a = piece("a@x.org r@remote.net\nb@x.org s@remote.net\n");
    let c = piece("c@x.org t@remote.net\n");
    let c2 = piece("c@x.org t@remote.net, u@remote.net\nd@x.org v@remote.net\n");
    let c3 = piece("c@x.org t@remote.net\n");
    // Shared pieces are not read; a value changed and an address added.
    check(
        text(&[&a, &c]),
        text(&[&a, &c2]),
        &[],
        &[
            ("c@x.org", "t@remote.net, u@remote.net"),
            ("d@x.org", "v@remote.net"),
        ],
    );
    // An address gone.
    check(
        text(&[&a, &c2]),
        text(&[&a, &c]),
        &["d@x.org"],
        &[("c@x.org", "t@remote.net")],
    );
    // A piece re-made with the same lines: nothing to write.
    check(text(&[&a, &c]), text(&[&a, &c3]), &[], &[]);
    // From nothing, and to nothing.
    check(text(&[]), text(&[&c]), &[], &[("c@x.org", "t@remote.net")]);
    check(text(&[&a]), text(&[]), &["a@x.org", "b@x.org"], &[]);
}

#[test]
fn copy_fields_escape_what_would_break_a_row() {
    let check = |field: &str, expected: &str| {
        let mut out = Vec::new();
        copy_field(&mut out, field);
        assert_eq!(String::from_utf8(out).unwrap(), expected, "{field:?}");
    };
    check("a@x.org", "a@x.org");
    check("a\\b", "a\\\\b");
    check("a\tb\nc\rd", "a\\tb\\nc\\rd");
    check("", "");
}
