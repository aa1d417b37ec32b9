//! Parser tables (items and diagnostics) and no-panic property tests.

use super::*;
use crate::snapshot::Kind;
use proptest::prelude::*;

/// Parses one aliases file and renders each entry as `name=kind:value,...` plus each diagnostic
/// as `line:severity`.
fn check(input: &str, expected_entries: &[&str], expected_diags: &[&str]) {
    let mut diags = Vec::new();
    let entries = parse_aliases(input.as_bytes(), "f", &mut diags);
    let got: Vec<String> = entries
        .iter()
        .map(|e| {
            let items: Vec<String> = e
                .targets
                .iter()
                .map(|t| format!("{}:{}@{}", kind(t.kind), t.value, t.line))
                .collect();
            format!("{}={}", e.name, items.join(","))
        })
        .collect();
    assert_eq!(got, expected_entries, "entries of {input:?}");
    let got: Vec<String> = diags
        .iter()
        .map(|d| format!("{}:{:?}", d.line, d.severity))
        .collect();
    assert_eq!(got, expected_diags, "diagnostics of {input:?}: {diags:#?}");
}

fn kind(k: Kind) -> &'static str {
    match k {
        Kind::Address => "a",
        Kind::Local => "l",
        Kind::Pipe => "pipe",
        Kind::File => "file",
        Kind::Include => "inc",
        Kind::Backslash => "bs",
        Kind::Special => "sp",
        Kind::Invalid => "bad",
    }
}

#[test]
fn aliases_items() {
    check("a: b\n", &["a=l:b@1"], &[]);
    check("a: B@X.Org\n", &["a=a:B@x.org@1"], &[]);
    check("a: b,\n  c@x.org\n", &["a=l:b@1,a:c@x.org@2"], &[]);
    check("a: \"|/bin/x a, b\"\n", &["a=pipe:|/bin/x a, b@1"], &[]);
    check(
        "a: |/bin/x -v\n",
        &["a=pipe:|/bin/x@1,bad:-v@1"],
        &["1:Warning"],
    );
    check("a: /var/x, ~/y\n", &["a=file:/var/x@1,file:~/y@1"], &[]);
    check(
        "a: :include:/l, :Include: /m\n",
        &["a=inc:/l@1,inc:/m@1"],
        &[],
    );
    check("a: \\a\n", &["a=bs:a@1"], &[]);
    check(
        "a: :fail: no, such user\n",
        &["a=sp::fail: no, such user@1"],
        &[],
    );
    check(
        "a: b@x.org # gone\n",
        &["a=a:b@x.org@1,bad:#@1,l:gone@1"],
        &["1:Warning", "1:Warning"],
    );
    check(
        "a: b@x.org c@y.org\n",
        &["a=a:b@x.org@1,a:c@y.org@1"],
        &["1:Warning"],
    );
    check("a: b (comment, with comma) , c\n", &["a=l:b@1,l:c@1"], &[]);
    check("a: Name <b@x.org>\n", &["a=a:b@x.org@1"], &[]);
    check("a: <b@x.org\n", &["a=bad:<b@x.org@1"], &[]);
    check("a:b: x\n", &["a=bad:b:x@1"], &[]);
    check("a: b\r\n", &["a=l:b@1"], &[]);
    check("\r\n", &[], &[]);
    // Specials and includes after another item, in any case.
    check("a: b, Error:x\n", &["a=l:b@1,sp:Error:x@1"], &[]);
    check("a: b, eRRor:x\n", &["a=l:b@1,sp:eRRor:x@1"], &[]);
    check("a: b, :Defer:\n", &["a=l:b@1,sp::Defer:@1"], &[]);
    check("a: b, :INCLUDE:/x\n", &["a=l:b@1,inc:/x@1"], &[]);
    check("a: b, errors\n", &["a=l:b@1,l:errors@1"], &[]);
    // Names: quotes, comments and backslashes removed, then folded.
    check("\"bob\": c\n", &["bob=l:c@1"], &[]);
    check("bo(old)b : c\n", &["bob=l:c@1"], &[]);
    check("b\\ob: c\n", &["bob=l:c@1"], &[]);
    check("BoB: c\n", &["bob=l:c@1"], &[]);
    check("\"B\\.ob\": c\n", &["b.ob=l:c@1"], &[]);
    check("a) : c\n", &[], &["1:Error"]);
}

#[test]
fn aliases_diagnostics() {
    check("a b\n", &[], &["1:Error"]);
    check("  a: b\n", &[], &["1:Error"]);
    check("a:\n", &[], &["1:Error"]);
    check("a@x: b\n", &[], &["1:Error"]);
    check(": b\n", &[], &["1:Error"]);
    check(
        "a: b\n\0x: y\nc: d\n",
        &["a=l:b@1", "c=l:d@3"],
        &["2:Error"],
    );
    check("# only a comment\n\n", &[], &[]);
    check("a: b,\n# c\n  d\n", &["a=l:b@1,l:d@3"], &[]);
    check("a: ,\n", &[], &["1:Error"]);
}

#[test]
fn list_bodies() {
    let mut d = Vec::new();
    let l = parse_list(b"a@x.org\n#c\n  #d\nb, c\n\n", "f", &mut d);
    let got: Vec<(Kind, &str, u32)> = l
        .targets
        .iter()
        .map(|t| (t.kind, t.value.as_str(), t.line))
        .collect();
    assert_eq!(
        got,
        [
            (Kind::Address, "a@x.org", 1),
            (Kind::Invalid, "#d", 3),
            (Kind::Local, "b", 4),
            (Kind::Local, "c", 4)
        ]
    );
    assert!(!l.filter);
    assert!(parse_list(b"# Exim filter\n", "f", &mut d).filter);
    assert!(parse_list(b"#Sieve filter\n", "f", &mut d).filter);
    let bad = parse_list(b"a@x.org\nb\xff\n", "f", &mut d);
    assert_eq!(bad.targets[1].kind, Kind::Invalid);
}

#[test]
fn recipients_and_passwd() {
    let mut d = Vec::new();
    let r = parse_recipients(
        b"A@X.org OK\n# c\n  continued\n@x.org OK\nbare\nk@x.org: v\n",
        "f",
        &mut d,
    );
    assert_eq!(r, [("a@x.org".to_string(), 1)]);
    assert_eq!(d.iter().map(|d| d.line).collect::<Vec<_>>(), [4, 5, 6]);
    let mut d = Vec::new();
    let p = parse_passwd(
        b"a:x:1000:1000::/home/a:/bin/sh\nbroken\nb:x:NaN:1::/h:/s\n",
        "f",
        &mut d,
    );
    assert_eq!(p.len(), 1);
    assert_eq!(
        (p[0].name.as_str(), p[0].uid, p[0].home.as_str()),
        ("a", 1000, "/home/a")
    );
    assert_eq!(d.len(), 2);
}

#[test]
fn passwd_fields_are_the_seven_split_gives() {
    let check = |line: &str| {
        let split: Vec<&str> = line.split(':').collect();
        let want = (split.len() == 7).then(|| split.clone());
        assert_eq!(lines::passwd_fields(line).map(Vec::from), want, "{line:?}");
    };
    for line in [
        "",
        ":",
        "::::::",
        ":::::::",
        "::::::::",
        "a:x:1000:1000::/home/a:/bin/sh",
        "a:x:1000:1000::/home/a:/bin/sh:",
        "a:x:1000:1000:/home/a:/bin/sh",
        ":x:1:2:g:/h:",
        "\u{e9}t\u{e9}:x:1:2:\u{fc}ber:/h/\u{e9}:/s",
        "no colon at all",
    ] {
        check(line);
    }
}

#[test]
fn virtual_entries() {
    let mut d = Vec::new();
    let v = parse_virtual(b"A@X.org  b@y.org,\n  c\nk@x.org: v\nlonely\n", "f", &mut d);
    assert_eq!(v.len(), 1);
    assert_eq!(v[0].key, "a@x.org");
    assert_eq!(v[0].targets.len(), 2);
    assert_eq!(d.iter().map(|d| d.line).collect::<Vec<_>>(), [3, 4]);
}

/// Text that looks like alias files, to reach deep into the parsers.
fn aliasish() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        Just(b"a: ".to_vec()),
        Just(b"\n".to_vec()),
        Just(b"\n  ".to_vec()),
        Just(b"\r\n".to_vec()),
        Just(b"# c\n".to_vec()),
        Just(b", ".to_vec()),
        Just(b"\"".to_vec()),
        Just(b"(".to_vec()),
        Just(b")".to_vec()),
        Just(b"<".to_vec()),
        Just(b">".to_vec()),
        Just(b":include:".to_vec()),
        Just(b"|".to_vec()),
        Just(b"\\".to_vec()),
        Just(b"x@y.org".to_vec()),
        Just(b"\0".to_vec()),
        Just(vec![0xff]),
        "[a-z:@ ,\t]{0,6}".prop_map(String::into_bytes),
    ];
    prop::collection::vec(piece, 0..40).prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn parsers_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let mut d = Vec::new();
        let _ = parse_aliases(&bytes, "f", &mut d);
        let _ = parse_virtual(&bytes, "f", &mut d);
        let _ = parse_list(&bytes, "f", &mut d);
        let _ = parse_recipients(&bytes, "f", &mut d);
        let _ = parse_passwd(&bytes, "f", &mut d);
    }

    #[test]
    fn alias_like_input_never_panics_and_keeps_its_promises(bytes in aliasish()) {
        let mut d = Vec::new();
        for e in parse_aliases(&bytes, "f", &mut d) {
            prop_assert!(crate::addr::valid_local_part(&e.name), "{:?}", e.name);
            for t in &e.targets {
                if t.kind == Kind::Address {
                    prop_assert!(crate::addr::valid_address(&t.value), "{:?}", t.value);
                }
            }
        }
        for diag in &d {
            prop_assert!(diag.line >= 1);
        }
    }
}

/// Regression, found by `cargo fuzz run lists` (crash-4f28ee09): a virtual key holding U+03D3, an
/// upper-case letter with no lower-case form, was kept by the builder but refused by validate.
#[test]
fn builder_output_always_validates_fuzz_crash_4f28ee09() {
    let input = b"r vifix v# yPo<<<<<<<<</bin/sh\na/liostfifix vir<<><<<<\x01\x08<,,<oot:xix vifix v# yPo<<<<<<<<</bin/sh\na\xcf\x93iostfifix vir<<><<<<\x01\x08<,,<<<<,";
    let mut b = crate::Builder::new(&["example.org".to_string()]);
    b.virtual_map("/v", input);
    b.recipients("/r", input);
    b.aliases("/a", "\u{3d3}name: r@x.org\n".as_bytes());
    let c = b.finish();
    assert_eq!(c.validate(), Ok(()));
    assert!(
        c.virtuals.iter().any(|v| v.key.contains('\u{3d3}')),
        "{:?}",
        c.virtuals
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Whatever the input, what the builder keeps is valid content.
    #[test]
    fn builder_output_always_validates(bytes in aliasish()) {
        let mut b = crate::Builder::new(&["example.org".to_string()]);
        b.aliases("/a", &bytes);
        b.virtual_map("/v", &bytes);
        b.recipients("/r", &bytes);
        b.passwd("/p", &bytes, 0);
        prop_assert_eq!(b.finish().validate(), Ok(()));
    }
}

mod reparse {
    //! `AliasesFile::update` parses only the changed span and must give what a whole parse gives.

    use super::*;
    use crate::snapshot::Diagnostic;

    /// A physical line of an aliases file, tricky ones included.
    fn line() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            6 => "[a-d]{1,2}: [a-d]{1,2}(@remote\\.net)?(, [a-d]@example\\.org)?".prop_map(String::into_bytes),
            2 => "[ \t]+[a-d]@remote\\.net,?".prop_map(String::into_bytes),
            1 => Just(b"# comment".to_vec()),
            1 => Just(b"  # indented comment".to_vec()),
            1 => Just(Vec::new()),
            1 => Just(b"\r".to_vec()),
            1 => Just(b"broken line".to_vec()),
            1 => Just(b"x: \"|/bin/p\",".to_vec()),
            1 => Just(b"bad: \xff\xfe".to_vec()),
            1 => Just(b"nul: a\0b".to_vec()),
        ]
    }

    fn file() -> impl Strategy<Value = Vec<u8>> {
        (prop::collection::vec(line(), 0..16), any::<bool>()).prop_map(|(lines, last)| {
            let mut out = lines.join(&b'\n');
            if last && !out.is_empty() {
                out.push(b'\n');
            }
            out
        })
    }

    #[derive(Debug, Clone)]
    enum Edit {
        /// Replace bytes `at..at + len` (positions modulo length) with these.
        Bytes(usize, usize, Vec<u8>),
        /// Insert a whole line before line `at`.
        Line(usize, Vec<u8>),
    }

    fn edit() -> impl Strategy<Value = Edit> {
        prop_oneof![
            (
                any::<usize>(),
                0..8usize,
                prop::collection::vec(
                    prop_oneof![
                        Just(b'a'),
                        Just(b'\n'),
                        Just(b' '),
                        Just(b'#'),
                        Just(b':'),
                        Just(b','),
                        Just(b'@')
                    ],
                    0..6
                )
            )
                .prop_map(|(a, l, b)| Edit::Bytes(a, l, b)),
            (any::<usize>(), line()).prop_map(|(a, l)| Edit::Line(a, l)),
        ]
    }

    fn apply(bytes: &[u8], e: &Edit) -> Vec<u8> {
        let mut out = bytes.to_vec();
        match e {
            Edit::Bytes(at, len, with) => {
                let at = at % (out.len() + 1);
                let end = (at + len).min(out.len());
                out.splice(at..end, with.iter().copied());
            }
            Edit::Line(at, l) => {
                let starts: Vec<usize> = std::iter::once(0)
                    .chain(
                        out.iter()
                            .enumerate()
                            .filter(|(_, b)| **b == b'\n')
                            .map(|(i, _)| i + 1),
                    )
                    .collect();
                let at = starts[at % starts.len()];
                let mut l = l.clone();
                l.push(b'\n');
                out.splice(at..at, l);
            }
        }
        out
    }

    fn sorted(mut d: Vec<Diagnostic>) -> Vec<Diagnostic> {
        d.sort();
        d
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1024))]

        #[test]
        fn an_update_parses_as_the_whole_file_does(start in file(), edits in prop::collection::vec(edit(), 1..6)) {
            let mut cached = AliasesFile::parse("f", start.clone());
            let mut bytes = start;
            for e in &edits {
                bytes = apply(&bytes, e);
                let before = cached.entries().to_vec();
                let diags_before = sorted(cached.diagnostics().to_vec());
                let s = cached.update(bytes.clone());
                let mut diags = Vec::new();
                let whole = parse_aliases(&bytes, "f", &mut diags);
                prop_assert_eq!(cached.entries(), &whole[..], "{:?}", String::from_utf8_lossy(&bytes));
                prop_assert_eq!(sorted(cached.diagnostics().to_vec()), sorted(diags.clone()));
                // The splice says what changed: put back, it gives the entries before.
                let mut back = whole.clone();
                back.splice(s.at..s.at + s.new, s.old.iter().cloned());
                let moved = |e: &ParsedAlias| {
                    let mut e = e.clone();
                    let by = |l: &mut u32| *l = (i64::from(*l) - s.shift) as u32;
                    by(&mut e.line);
                    e.targets.iter_mut().for_each(|t| by(&mut t.line));
                    e
                };
                let tail = s.at + s.old.len();
                back[tail..].iter_mut().for_each(|e| *e = moved(e));
                prop_assert_eq!(&back, &before);
                if s.shift == 0 && !s.diagnostics_changed {
                    prop_assert_eq!(sorted(diags), diags_before);
                }
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn pieces_cut_where_an_entry_opens_parse_as_the_whole(bytes in file()) {
            let mut diags = Vec::new();
            let whole = lines::parse_aliases_serial(&bytes, "f", &mut diags);
            let mut cuts = 0;
            let mut every = Vec::new();
            for at in 0..=bytes.len() {
                if lines::entry_after(&bytes, at) != Some(at) {
                    prop_assert!(!lines::opens_entry(&bytes, at) || at == bytes.len());
                    continue;
                }
                cuts += 1;
                let mut got_diags = Vec::new();
                let got = lines::parse_aliases_at(&bytes, "f", &mut got_diags, &[at]);
                prop_assert_eq!(&got, &whole, "cut at {} of {:?}", at, String::from_utf8_lossy(&bytes));
                prop_assert_eq!(&got_diags, &diags, "cut at {}", at);
                every.push(at);
            }
            // And cut at all those places at once.
            every.dedup();
            let mut got_diags = Vec::new();
            let got = lines::parse_aliases_at(&bytes, "f", &mut got_diags, &every);
            prop_assert_eq!(&got, &whole, "cut at {:?}", every);
            prop_assert_eq!(&got_diags, &diags, "cut at {:?}", every);
            // Every entry that opens at the start of a line is a place to cut.
            let starts = bytes.split(|&b| b == b'\n').filter(|l| l.first().is_some_and(|&b| b.is_ascii_alphabetic())).count();
            prop_assert_eq!(cuts, starts);
        }
    }

    #[test]
    fn one_changed_line_parses_one_entry() {
        let mut text = String::new();
        for i in 0..1000 {
            text.push_str(&format!("a{i}: r{i}@remote.net,\n  s{i}@remote.net\n"));
        }
        let mut f = AliasesFile::parse("f", text.clone().into_bytes());
        let edited = text.replace("a500: r500@", "a500: q500@");
        let parsed = f.update(edited.clone().into_bytes()).parsed;
        assert!(parsed < 100, "parsed {parsed} bytes again");
        let mut diags = Vec::new();
        assert_eq!(
            f.entries(),
            &parse_aliases(edited.as_bytes(), "f", &mut diags)[..]
        );
        // A line inserted at the top moves every later entry by one line.
        let inserted = format!("new: n@remote.net\n{edited}");
        let parsed = f.update(inserted.clone().into_bytes()).parsed;
        assert!(parsed < 100, "parsed {parsed} bytes again");
        assert_eq!(f.entries()[1].line, 2);
        assert_eq!(
            f.entries(),
            &parse_aliases(inserted.as_bytes(), "f", &mut diags)[..]
        );
    }
}

/// Newlines counted by the block give the plain count, wherever they are around the block size.
#[test]
fn newlines_by_the_block_equal_a_plain_count() {
    let check = |bytes: &[u8]| {
        let plain = bytes.iter().filter(|&&c| c == b'\n').count() as u32;
        assert_eq!(lines::newlines(bytes), plain, "{} bytes", bytes.len());
    };
    for len in [0, 1, 63, 64, 65, 127, 128, 129, 300] {
        check(&vec![b'\n'; len]);
        check(&vec![b'x'; len]);
        for at in [0, 1, 62, 63, 64, 65, 128, 299]
            .into_iter()
            .filter(|&i| i < len)
        {
            let mut one = vec![b'x'; len];
            one[at] = b'\n';
            check(&one);
            let mut all_but = vec![b'\n'; len];
            all_but[at] = b'x';
            check(&all_but);
        }
    }
}

/// The block-at-a-time prefix and suffix give what a byte loop gives, whatever the lengths and
/// wherever the first difference is, around the block size.
#[test]
fn common_prefix_and_suffix_equal_a_byte_loop() {
    let naive_prefix = |a: &[u8], b: &[u8]| a.iter().zip(b).take_while(|(x, y)| x == y).count();
    let naive_suffix = |a: &[u8], b: &[u8]| {
        (a.iter().rev().zip(b.iter().rev()))
            .take_while(|(x, y)| x == y)
            .count()
    };
    for len in [0, 1, 4095, 4096, 4097, 8192, 10_000] {
        let a: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        for extra in [0, 1, 5000] {
            let mut longer = a.clone();
            longer.extend(std::iter::repeat_n(7u8, extra));
            let mut before = vec![9u8; extra];
            before.extend(&a);
            assert_eq!(lines::common_prefix(&a, &longer), len);
            assert_eq!(lines::common_suffix(&a, &before), len);
        }
        for at in [0, 1, 4095, 4096, 4097, 9999]
            .into_iter()
            .filter(|&i| i < len)
        {
            let mut b = a.clone();
            b[at] ^= 0xff;
            assert_eq!(
                lines::common_prefix(&a, &b),
                naive_prefix(&a, &b),
                "{len} {at}"
            );
            assert_eq!(
                lines::common_suffix(&a, &b),
                naive_suffix(&a, &b),
                "{len} {at}"
            );
            assert_eq!(lines::common_prefix(&a, &b), at);
            assert_eq!(lines::common_suffix(&a, &b), len - at - 1);
        }
    }
}
