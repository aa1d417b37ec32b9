//! Rendered files: golden files for each format, and a property test that no rendered line holds
//! anything but validated addresses, `OK`, and the transport syntax.

use super::*;
use proptest::prelude::*;
use proto::Class;

fn content(aliases: &str, virtual_map: &str) -> Content {
    let mut b = proto::Builder::new(&["example.org".to_string()]);
    b.aliases("/etc/aliases", aliases.as_bytes());
    b.virtual_map("/etc/postfix/virtual", virtual_map.as_bytes());
    b.recipients("/etc/postfix/relay_recipients", b"box@example.org OK\n");
    b.finish()
}

const ALIASES: &str = "postmaster: root\nroot: ops@remote.net\n\
trolls: adb@elsewhere.net, nemo@other.org,\n  trolls-archive\ntrolls-archive: /com/archive/trolls\n\
announce: a@x.net, \"|/usr/bin/archive\"\nloop: loop\n";

fn golden(name: &str, actual: &[u8]) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name.replace('/', "."));
    if std::env::var_os("MXSYNC_BLESS").is_some() {
        std::fs::write(&path, actual).unwrap();
    }
    let expected = std::fs::read(&path).unwrap_or_default();
    assert_eq!(
        String::from_utf8_lossy(actual),
        String::from_utf8_lossy(&expected),
        "golden file {} differs (MXSYNC_BLESS=1 rewrites it)",
        path.display()
    );
}

#[test]
fn every_format_is_pinned() {
    let c = content(
        ALIASES,
        "sales@example.org  trolls@example.org, deals@partner.net\n",
    );
    let hash = c.hash();
    let mut b = proto::Builder::new(&["example.net".to_string()]);
    b.aliases("/etc/aliases", b"info: desk@agency.example\n");
    let c2 = b.finish();
    let hash2 = c2.hash();
    let agents = [
        AgentMaps {
            id: "mx1",
            version: 7,
            hash: &hash,
            primary: "[mx1.example.org]:25",
            content: &c,
        },
        AgentMaps {
            id: "mx9",
            version: 2,
            hash: &hash2,
            primary: "[192.0.2.9]",
            content: &c2,
        },
    ];
    // A deferred domain pins the stale_domains format too.
    let r = render(
        &agents,
        &["postfix".into(), "exim".into()],
        &["example.org".into()],
    )
    .unwrap();
    assert_eq!(r.files().len(), 10);
    for (name, bytes) in &r.files() {
        golden(name, bytes);
    }
    let c1 = r.counts["mx1"];
    assert_eq!((c1.addresses, c1.forward, c1.split, c1.punt), (8, 2, 2, 4));
    let only = render(&agents[..1], &["exim".into()], &[]).unwrap();
    assert_eq!(
        only.files().keys().collect::<Vec<_>>(),
        [
            "exim/domains",
            "exim/forward",
            "exim/recipients",
            "exim/routes",
            "exim/stale_domains"
        ]
    );
}

#[test]
fn an_invalid_address_fails_the_render() {
    let mut c = content("a: r@remote.net\n", "");
    c.aliases[0].targets[0].value = "r@remote.net\nroot@x.net OK".into();
    let hash = c.hash();
    let agents = [AgentMaps {
        id: "mx1",
        version: 1,
        hash: &hash,
        primary: "[h]",
        content: &c,
    }];
    let e = render(&agents, &["postfix".into()], &[]).unwrap_err();
    assert!(e.to_string().contains("cannot be written to a map"), "{e}");
}

/// A line is a comment, or every token is a valid address, a domain, `OK`, or `relay:[...]`.
fn line_ok(file: &str, line: &str) -> bool {
    if line.starts_with('#') {
        return !line.contains('\n');
    }
    let tokens: Vec<&str> = line.split([' ', ',']).filter(|t| !t.is_empty()).collect();
    let addr_or = |t: &str| proto::addr::valid_address(t.trim_end_matches(':'));
    match file {
        "postfix/relay_recipients" => tokens.len() == 2 && addr_or(tokens[0]) && tokens[1] == "OK",
        "exim/routes" => {
            tokens.len() == 2 && proto::addr::valid_domain(tokens[0].trim_end_matches(':'))
        }
        "postfix/transport" => {
            tokens.len() == 2
                && proto::addr::valid_domain(tokens[0])
                && tokens[1].starts_with("relay:[")
        }
        "postfix/relay_domains" | "exim/domains" | "exim/stale_domains" => {
            tokens.len() == 1 && proto::addr::valid_domain(tokens[0])
        }
        "postfix/stale_domains" => line
            .split_once(' ')
            .is_some_and(|(d, reply)| proto::addr::valid_domain(d) && reply == DEFER_REPLY),
        "exim/recipients" => tokens.len() == 1 && addr_or(tokens[0]),
        "exim/forward" => {
            tokens.len() >= 2 && tokens[0].ends_with(':') && tokens.iter().all(|t| addr_or(t))
        }
        _ => tokens.len() >= 2 && tokens.iter().all(|t| addr_or(t)),
    }
}

fn item() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z]{1,3}@remote[0-2]\\.net".prop_map(String::from),
        "a[0-9]".prop_map(String::from),
        "[a-z]{1,3}@example\\.org".prop_map(String::from),
        Just("\"|/bin/x y\"".to_string()),
        Just("/var/file".to_string()),
        Just(":include:/etc/l".to_string()),
        Just(":fail: no".to_string()),
        Just("\\a0".to_string()),
        Just("x y@remote.net".to_string()),
        Just("\"a,b\"@remote.net".to_string()),
        Just("\"a:b\"@remote.net".to_string()),
        Just("<a@remote.net>".to_string()),
        "[ -~]{1,12}".prop_map(String::from),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn no_rendered_line_holds_anything_but_addresses(lists in prop::collection::vec(prop::collection::vec(item(), 1..4), 1..12)) {
        let mut text = String::new();
        for (i, l) in lists.iter().enumerate() {
            text.push_str(&format!("a{i}: {}\n", l.join(", ")));
        }
        let c = content(&text, "");
        prop_assert_eq!(c.validate(), Ok(()));
        let hash = c.hash();
        let agents = [AgentMaps { id: "mx1", version: 1, hash: &hash, primary: "[mx1.example.org]:25", content: &c }];
        // A deferred domain pins the stale_domains format too.
    let r = render(
        &agents,
        &["postfix".into(), "exim".into()],
        &["example.org".into()],
    )
    .unwrap();
        for (name, bytes) in &r.files() {
            let text = std::str::from_utf8(bytes).unwrap();
            for line in text.lines() {
                prop_assert!(line_ok(name, line), "{}: {:?}", name, line);
                // An MTA reads an item as a pipe, file, include or special by how it starts.
                let items = line.split([' ', ',']).filter(|t| !t.is_empty());
                for t in items.filter(|_| !line.starts_with('#')) {
                    for bad in ["|", "/", "~", ":", "\\", "\"", "-"] {
                        prop_assert!(!t.starts_with(bad), "{}: {:?} in {:?}", name, t, line);
                    }
                }
            }
        }
    }
}

#[test]
fn seek_finds_the_first_line_not_below_an_address() {
    let text = "a@x.org OK\nb.c@x.org OK\nb@x.org: t@r.net\nbb@x.org OK\nz@x.org OK\n";
    let check = |text: &str, address: &str, expected: &str| {
        let at = seek(text, address);
        assert_eq!(&text[at..], expected, "seek {address:?}");
    };
    for (address, rest) in [
        ("0@x.org", text),
        ("a@x.org", text),
        ("a@y.org", &text[11..]),
        ("b.c@x.org", &text[11..]),
        ("b@x.org", &text[24..]),
        ("b@y.org", &text[41..]),
        ("z@x.org", &text[53..]),
        ("zz@x.org", ""),
    ] {
        check(text, address, rest);
    }
    check("", "a@x.org", "");
    // The last line without its newline.
    check("a@x.org OK\nc@x.org OK", "b@x.org", "c@x.org OK");
    check("a@x.org OK\nc@x.org OK", "d@x.org", "");
}

#[test]
fn merge_replaces_only_the_doomed_lines() {
    let old = "a@x.org OK\nb@x.org OK\nc@x.org OK\nd@x.org OK\n";
    let check = |doomed: &[&str], new: &str, expected: Option<(&str, Vec<&str>)>| {
        let doomed: Vec<String> = doomed.iter().map(|d| d.to_string()).collect();
        let mut gone = Vec::new();
        let got = merge(old, new, &doomed, |a, _| gone.push(a.to_string()));
        let got = got
            .as_deref()
            .map(|m| (m, gone.iter().map(String::as_str).collect()));
        assert_eq!(got, expected, "doomed {doomed:?}, new {new:?}");
    };
    check(&[], "", Some((old, vec![])));
    check(
        &["b@x.org"],
        "b@x.org: t@r.net\n",
        Some((
            "a@x.org OK\nb@x.org: t@r.net\nc@x.org OK\nd@x.org OK\n",
            vec!["b@x.org"],
        )),
    );
    // A doomed address with no line now, and one with no line before.
    check(
        &["a@x.org", "bb@x.org", "e@x.org"],
        "bb@x.org OK\ne@x.org OK\n",
        Some((
            "b@x.org OK\nbb@x.org OK\nc@x.org OK\nd@x.org OK\ne@x.org OK\n",
            vec!["a@x.org"],
        )),
    );
    // A new line for an address not doomed: the caller renders everything instead.
    check(&["b@x.org"], "c@x.org OK\n", None);
}

/// `text` cut by [`Lines`] into pieces of `piece` bytes: after every line past the size.
fn pieces(text: &str, piece: usize) -> Text {
    let mut out = Vec::new();
    let mut cur = String::new();
    for line in text.split_inclusive('\n') {
        cur.push_str(line);
        if cur.len() >= piece {
            out.push(Arc::new(std::mem::take(&mut cur)));
        }
    }
    if !cur.is_empty() {
        out.push(Arc::new(cur));
    }
    Text { pieces: out }
}

#[test]
fn merge_over_pieces_equals_merge_and_shares_what_it_leaves() {
    let old = "a@x.org OK\nb@x.org OK\nc@x.org OK\nd@x.org OK\ne@x.org OK\nf@x.org OK\n";
    // (doomed, new lines): the result of `merge` on the whole text is the expected one.
    let check = |doomed: &[&str], new: &str| {
        let doomed: Vec<String> = doomed.iter().map(|d| d.to_string()).collect();
        let mut gone_whole = Vec::new();
        let whole = merge(old, new, &doomed, |a, _| gone_whole.push(a.to_string()));
        for piece in [1, 11, 12, 22, 23, 1000] {
            let before = pieces(old, piece);
            let mut gone = Vec::new();
            let got = merge_pieces(&before, new, &doomed, piece, |a, _| {
                gone.push(a.to_string())
            });
            let got_text = got.as_ref().map(Text::to_string);
            assert_eq!(
                got_text, whole,
                "piece {piece}, doomed {doomed:?}, new {new:?}"
            );
            assert_eq!(gone, gone_whole, "piece {piece}, doomed {doomed:?}");
            let Some(got) = got else { continue };
            // A piece of `before` is shared, not copied, unless a doomed address falls among
            // its addresses (from its first one to the next piece's first one) whose lines
            // are not the same again.
            let n = before.pieces.len();
            let lines_of = |text: &str, a: &str| -> String {
                (text.split_inclusive('\n'))
                    .filter(|l| line_address(l) == a)
                    .collect()
            };
            for (k, p) in before.pieces.iter().enumerate() {
                let first = (k > 0).then(|| line_address(p));
                let end = before.pieces.get(k + 1).map(|q| line_address(q));
                let among = |d: &str| first.is_none_or(|f| f <= d) && end.is_none_or(|e| d < e);
                let shared = got.pieces.iter().any(|q| Arc::ptr_eq(p, q));
                let changed = (doomed.iter())
                    .filter(|d| among(d))
                    .any(|d| lines_of(old, d) != lines_of(new, d));
                assert_eq!(shared, !changed, "piece {piece}: {k} of {n}, {p:?}");
            }
            assert!(got.pieces.iter().all(|p| !p.is_empty()), "an empty piece");
        }
    };
    check(&[], "");
    check(&["a@x.org"], "");
    check(&["a@x.org"], "a@x.org: t@r.net\n");
    // Planned again to the same line: nothing changed, every piece shared.
    check(&["c@x.org"], "c@x.org OK\n");
    check(&["a@x.org", "f@x.org"], "a@x.org OK\nf@x.org OK\n");
    check(&["0@x.org"], "0@x.org OK\n");
    check(&["c@x.org", "cc@x.org"], "cc@x.org OK\n");
    check(
        &["b@x.org", "e@x.org"],
        "b@x.org: t@r.net\ne@x.org: u@r.net\n",
    );
    check(
        &["f@x.org", "g@x.org", "h@x.org"],
        "g@x.org OK\nh@x.org OK\n",
    );
    check(
        &[
            "a@x.org", "b@x.org", "c@x.org", "d@x.org", "e@x.org", "f@x.org",
        ],
        "",
    );
    // A new line for an address not doomed: the caller renders everything instead.
    check(&["b@x.org"], "c@x.org OK\n");
}

#[test]
fn texts_are_equal_by_their_lines_however_they_are_cut() {
    let check = |a: (&str, usize), b: (&str, usize), expected: bool| {
        assert_eq!(
            pieces(a.0, a.1) == pieces(b.0, b.1),
            expected,
            "{a:?} {b:?}"
        );
    };
    let text = "a@x OK\nb@x OK\nc@x OK\n";
    check((text, 1), (text, 1000), true);
    check((text, 8), (text, 15), true);
    check(("", 1), ("", 8), true);
    // The same length, one byte apart; a line more.
    check((text, 1), (&text.replace("b@x", "d@x"), 1), false);
    check((text, 8), (&text.replace("c@x", "c@y"), 1000), false);
    check((text, 1), (&format!("{text}d@x OK\n"), 1), false);
}

#[test]
fn a_grown_piece_is_cut_between_addresses() {
    let check = |text: &str, piece: usize, expected: &[&str]| {
        let mut out = Vec::new();
        cut(text.to_string(), piece, &mut out);
        let got: Vec<&str> = out.iter().map(|p| p.as_str()).collect();
        assert_eq!(got, expected, "{text:?} at {piece}");
    };
    check("", 4, &[]);
    check("a@x OK\n", 4, &["a@x OK\n"]);
    check("a@x OK\nb@x OK\n", 4, &["a@x OK\n", "b@x OK\n"]);
    check("a@x OK\nb@x OK\n", 8, &["a@x OK\nb@x OK\n"]);
    // Two lines of one address stay in one piece.
    check("a@x 1\na@x 2\nb@x 3\n", 2, &["a@x 1\na@x 2\n", "b@x 3\n"]);
}

mod after_a_delta {
    //! The incremental render after a delta equals the full render of the result, lines and
    //! counts, over random edit sequences of a model primary.

    use super::*;
    use proto::delta::diff;
    use proto::testkit::content;
    use proto::testkit::model::{edit, walk};

    fn part(c: &Content, formats: &[String]) -> AgentPart {
        part_in(c, formats, PIECE)
    }

    fn part_in(c: &Content, formats: &[String], piece: usize) -> AgentPart {
        let maps = AgentMaps {
            id: "mx1",
            version: 1,
            hash: "h",
            primary: "[mx1.example.org]:25",
            content: c,
        };
        render_agent_in(&maps, formats, piece).expect("the model renders")
    }

    /// Renders `new` from `old`'s part and the delta between them, and fully.
    fn both(old: &Content, new: &Content, formats: &[String]) -> (AgentPart, AgentPart) {
        both_in(old, new, formats, PIECE)
    }

    /// [`both`], with the old part and the merge in pieces of `piece` bytes.
    fn both_in(
        old: &Content,
        new: &Content,
        formats: &[String],
        piece: usize,
    ) -> (AgentPart, AgentPart) {
        let mut affected = Affected::of(&diff(old, new)).expect("same domains");
        affected.close_over(new);
        let maps = AgentMaps {
            id: "mx1",
            version: 2,
            hash: "h",
            primary: "[mx1.example.org]:25",
            content: new,
        };
        let before = part_in(old, formats, piece);
        let got = render_agent_affected_in(&maps, formats, &before, &affected, piece)
            .expect("the model renders");
        (got, part(new, formats))
    }

    #[test]
    fn one_changed_alias_replaces_its_lines_and_what_reaches_it() {
        let old = content(
            "== aliases\nx: r@remote.net\nl: x, s@remote.net\nsplit: r@remote.net, alice\n\
             pipe: \"|/bin/p\"\n== /home/bob/.forward\nb@remote.net\n",
        );
        let new = content(
            "== aliases\nx: alice\nl: x, s@remote.net\nsplit: r@remote.net, alice\n\
             pipe: \"|/bin/p\"\nnew: n@remote.net\n== /home/bob/.forward\nb@remote.net\n",
        );
        let formats = ["postfix".to_string(), "exim".to_string()];
        let (got, want) = both(&old, &new, &formats);
        assert_eq!(got, want);
        // A real change at both served domains: x forwarded and punts now, l became a split,
        // `new` forwards.
        let before = part(&old, &formats);
        assert_ne!(got.files, before.files);
        assert_eq!(
            (got.counts.forward, got.counts.split, got.counts.addresses),
            (
                before.counts.forward - 4 + 2,
                before.counts.split + 2,
                before.counts.addresses + 2
            )
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn incremental_render_equals_the_full_one(
            start in prop::collection::vec(edit(), 0..24),
            edits in prop::collection::vec(edit(), 1..10),
            formats in prop_oneof![
                Just(vec!["postfix".to_string(), "exim".to_string()]),
                Just(vec!["postfix".to_string()]),
                Just(vec!["exim".to_string()]),
            ],
            piece in prop_oneof![Just(1usize), 2usize..200, Just(PIECE)],
        ) {
            walk(&start, &edits, |old, new| {
                let (got, want) = both_in(old, new, &formats, piece);
                prop_assert_eq!(got, want);
                Ok(())
            })?;
        }

        #[test]
        fn planned_in_runs_side_by_side_the_part_is_the_same(
            edits in prop::collection::vec(edit(), 1..32),
            piece in prop_oneof![Just(1usize), 2usize..200, Just(PIECE)],
            runs in 2usize..6,
        ) {
            let formats = ["postfix".to_string(), "exim".to_string()];
            walk(&[], &edits, |_, new| {
                let maps = AgentMaps {
                    id: "mx1",
                    version: 1,
                    hash: "h",
                    primary: "[mx1.example.org]:25",
                    content: new,
                };
                let one = render_agent_runs(&maps, &formats, piece, 1).expect("renders");
                let many = render_agent_runs(&maps, &formats, piece, runs).expect("renders");
                let plans = proto::plan::plan_all(new);
                let count = |k| plans.iter().filter(|p| p.class == k).count() as u64;
                let counts = Counts {
                    addresses: plans.len() as u64,
                    forward: count(Class::Forward),
                    split: count(Class::Split),
                    punt: count(Class::Punt),
                };
                prop_assert_eq!(one.counts, counts);
                prop_assert_eq!(many, one);
                Ok(())
            })?;
        }
    }
}

#[test]
fn table_entries_are_what_postmap_and_lsearch_read() {
    // (file, line, key, value): `postmap -q KEY` on the text file, and Exim's
    // `${lookup{KEY}lsearch{FILE}}`, give VALUE (both checked against the real programs).
    let check = |name: &str, line: &str, key: &str, value: &str| {
        let (k, v) = table_entry(name, line);
        assert_eq!((k.as_ref(), v), (key, value), "{name}: {line:?}");
    };
    check(
        "postfix/relay_recipients",
        "a@example.org OK\n",
        "a@example.org",
        "OK",
    );
    check(
        "postfix/virtual",
        "Trolls@Example.org adb@elsewhere.net, nemo@other.org\n",
        "trolls@example.org",
        "adb@elsewhere.net, nemo@other.org",
    );
    check(
        "postfix/transport",
        "example.org relay:[mx1.example.org]:25\n",
        "example.org",
        "relay:[mx1.example.org]:25",
    );
    // A list file: a table needs a value.
    check(
        "postfix/relay_domains",
        "example.org\n",
        "example.org",
        "OK",
    );
    check(
        "exim/forward",
        "a@example.org: x@remote.net, y@remote.net\n",
        "a@example.org",
        "x@remote.net, y@remote.net",
    );
    check("exim/recipients", "A@example.org\n", "a@example.org", "");
    check("exim/domains", "example.org\n", "example.org", "");
    check(
        "exim/routes",
        "example.org: 127.0.0.1::2525\n",
        "example.org",
        "127.0.0.1::2525",
    );
}

#[test]
fn each_entry_walks_every_agents_lines_in_order_and_stops_at_an_error() {
    let c = content(ALIASES, "");
    let formats = ["postfix".to_string(), "exim".to_string()];
    let maps = AgentMaps {
        id: "mx1",
        version: 1,
        hash: "h",
        primary: "[127.0.0.1]:2525",
        content: &c,
    };
    let r = render(&[maps], &formats, &["example.org".into()]).unwrap();
    for name in &r.names {
        let text = String::from_utf8(r.file(name)).unwrap();
        let expected: Vec<(String, String)> = (text.lines())
            .filter(|l| !l.starts_with('#'))
            .map(|l| {
                let (k, v) = table_entry(name, l);
                (k.into_owned(), v.to_string())
            })
            .collect();
        assert!(!expected.is_empty(), "{name}");
        let mut got = Vec::new();
        each_entry(&r, name, |k, v| {
            got.push((k.to_string(), v.to_string()));
            Ok::<(), ()>(())
        })
        .unwrap();
        assert_eq!(got, expected, "{name}");
        let mut calls = 0;
        assert_eq!(
            each_entry(&r, name, |_, _| {
                calls += 1;
                Err("stop")
            }),
            Err("stop")
        );
        assert_eq!(calls, 1);
    }
}
