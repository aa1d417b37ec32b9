//! Physical and logical lines: comments, continuation, CR, NUL and the line each piece came from.

use super::*;
use proptest::prelude::*;

type Line = (u32, Result<String, &'static str>, Class);

fn lines<'a>(ps: impl Iterator<Item = Physical<'a>>) -> Vec<Line> {
    ps.map(|p| (p.line, p.text.map(str::to_string), p.class))
        .collect()
}

/// Bytes made of pieces that matter to lines: newlines, CRs, blanks, comments, NUL bytes,
/// a two-byte character and a byte that is never UTF-8.
fn linish() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop::sample::select(vec![
        &b"a"[..],
        b"b: c",
        b" ",
        b"\t",
        b"#",
        b"\n",
        b"\r",
        b"\r\n",
        b"\0",
        "\u{e9}".as_bytes(),
        b"\xff",
    ]);
    prop::collection::vec(piece, 0..30).prop_map(|v| v.concat())
}

fn check(bytes: &[u8], expected: &[(u32, Result<&str, &'static str>, Class)]) {
    let expected: Vec<Line> = (expected.iter())
        .map(|(n, t, c)| (*n, t.map(str::to_string), *c))
        .collect();
    assert_eq!(lines(physical(bytes, true)), expected, "{bytes:?}");
}

#[test]
fn physical_lines() {
    use Class::*;
    check(b"", &[(1, Ok(""), Blank)]);
    check(b"\n", &[(1, Ok(""), Blank)]);
    check(b"a\n", &[(1, Ok("a"), Start)]);
    check(b"a", &[(1, Ok("a"), Start)]);
    check(
        b"a\r\n b\r\n",
        &[(1, Ok("a"), Start), (2, Ok(" b"), Continuation)],
    );
    check(
        b"a\n\n# c\n",
        &[
            (1, Ok("a"), Start),
            (2, Ok(""), Blank),
            (3, Ok("# c"), Comment),
        ],
    );
    check(
        b"a\n\xff\nb\0\n\xc3\xa9",
        &[
            (1, Ok("a"), Start),
            (2, Err("line is not valid utf-8"), Start),
            (3, Err("line contains a nul byte"), Start),
            (4, Ok("\u{e9}"), Start),
        ],
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// A file cut as one string gives the lines that checking each line gives.
    #[test]
    fn whole_text_gives_the_lines_checked_one_by_one(bytes in linish(), anywhere: bool) {
        prop_assert_eq!(
            lines(physical(&bytes, anywhere)),
            lines(physical_in(&bytes, Parts::each(&bytes), anywhere))
        );
    }
}
