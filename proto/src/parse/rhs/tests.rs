//! The plain-list path against the tokenizer it stands in for.

use super::*;
use proptest::prelude::*;

/// What the tokenizer reads from `value` (lines from the byte offsets in `starts`), and
/// what the plain path reads when it takes the value.
fn both(
    value: &str,
    starts: &[(usize, u32)],
) -> (Vec<Target>, Vec<Diagnostic>, Option<Vec<Target>>) {
    let map = LineMap { starts };
    let mut diags = Vec::new();
    let slow = tokenized(value, &map, "f", &mut diags);
    (slow, diags, plain_items(value, &map))
}

#[test]
fn plain_lists_take_the_plain_path_and_others_do_not() {
    let check = |value: &str, plain: bool| {
        let (slow, diags, fast) = both(value, &[(0, 1)]);
        assert_eq!(fast.is_some(), plain, "{value:?}");
        if let Some(fast) = fast {
            assert_eq!(fast, slow, "{value:?}");
            assert!(diags.is_empty());
        }
    };
    check("a@x.net", true);
    check(
        " a@x.net, B@X.NET ,,local, :include:/l/x,|/bin/prog, /var/f, ~/f ",
        true,
    );
    check("a@[192.0.2.1], a;b, :blackhole:, a.b@x", true);
    check("", true);
    check(" , ,", true);
    check("a b", false);
    check("|/bin/prog -a", false);
    check("#x, a", false);
    check("\"quoted\"", false);
    check("a (comment)", false);
    check("<a@x.net>", false);
    check("\\root", false);
    check("jörg@x.net", false);
    check("a@x.net,\n\tb@x.net", true);
}

fn value() -> impl Strategy<Value = String> {
    let item = prop_oneof![
        4 => prop_oneof![
            Just("r1@remote.net"), Just("R2@Remote.NET"), Just("local"), Just("a.b"),
            Just(":include:/l/x"), Just(":INCLUDE: /l/y"), Just("|/bin/prog"), Just("/var/f"),
            Just("~/f"), Just("\\root"), Just(":blackhole:"), Just("#x"), Just("a..b"),
            Just("-opt"), Just("\"q x\""), Just("<a@x.net>"), Just("a@"), Just("@x.net"),
            Just("error:x"), Just(":fail:"),
        ].prop_map(String::from),
        1 => "[a-z@.:;#|/~\\[\\]!$%&'*+=?^_`{}\\-]{0,8}",
        1 => "[ \t\n\x0b\x0c\r\"()<>\\\\,a@é\x00]{0,4}",
    ];
    let sep = prop_oneof![Just(", "), Just(","), Just(" ,\n\t"), Just(" "), Just(",,")];
    prop::collection::vec((item, sep), 0..6).prop_map(|v| {
        v.into_iter()
            .map(|(i, s)| format!("{i}{s}"))
            .collect::<String>()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    #[test]
    fn the_plain_path_reads_as_the_tokenizer_does(
        v in value(),
        cuts in prop::collection::vec(0..80usize, 0..3),
    ) {
        let mut starts = vec![(0usize, 1u32)];
        let mut cuts: Vec<usize> = cuts.into_iter().filter(|&c| c > 0).collect();
        cuts.sort_unstable();
        cuts.dedup();
        starts.extend(cuts.into_iter().zip(2u32..));
        let (slow, diags, fast) = both(&v, &starts);
        if let Some(fast) = fast {
            prop_assert_eq!(fast, slow, "{:?}", v);
            prop_assert!(diags.is_empty(), "{:?}: {:?}", v, diags);
        }
    }
}
