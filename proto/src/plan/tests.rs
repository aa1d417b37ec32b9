//! The plan table: one row per rule of DESIGN section 5 and per MTA disagreement in
//! `reference/alias-semantics.md`, each checked through parsing, building and planning.

use super::*;
use crate::testkit::{content, summarize};

/// Plans `address` on the primary described by `fixture` and compares the one-line summary.
fn check(fixture: &str, address: &str, expected: &str) {
    let c = content(fixture);
    let mut planner = Planner::new(&c);
    let got = summarize(planner.plan(address).as_ref());
    assert_eq!(
        got, expected,
        "plan of {address} on:\n{fixture}\ndiagnostics: {:#?}",
        c.diagnostics
    );
    // plan_all must agree with plan for the same address, from a fresh planner and from the
    // one that planned it (with expansions kept already).
    let all = Planner::new(&c).plan_all();
    assert_eq!(planner.plan_all(), all, "plan_all after plan");
    let from_all = all.iter().find(|p| p.address == address.to_lowercase());
    assert_eq!(
        summarize(from_all),
        expected,
        "plan_all disagrees for {address}"
    );
    // Without reasons, as the maps are rendered: the same plan with none.
    let bare = Planner::new(&c).without_reasons().plan(address);
    let mut want = planner.plan(address);
    if let Some(p) = want.as_mut() {
        p.reasons.clear();
    }
    assert_eq!(bare, want, "without reasons, for {address}");
}

#[test]
fn remote_targets() {
    check(
        "== aliases\nbob: bob@remote.net\n",
        "bob@example.org",
        "forward: bob@remote.net",
    );
    check(
        "== aliases\nl: b@y.net, a@x.net, a@x.net\n",
        "l@example.org",
        "forward: a@x.net b@y.net",
    );
    check(
        "== aliases\nl: Ann@X.NET\n",
        "l@example.org",
        "forward: Ann@x.net",
    );
    check(
        "== aliases\nl: a@x.net (Alice)\n",
        "l@example.org",
        "forward: a@x.net",
    );
    check(
        "== aliases\nl: \"Bob B\" <b@y.net>\n",
        "l@example.org",
        "forward: b@y.net",
    );
    check(
        "== aliases\nl: Bob B <b@y.net>, <@route.net:c@z.net>\n",
        "l@example.org",
        "forward: b@y.net c@z.net",
    );
    check(
        "== aliases\nl: a@[192.0.2.1]\n",
        "l@example.org",
        "punt: unknown",
    );
    check(
        "== aliases\nl: \"john doe\"@x.net\n",
        "l@example.org",
        "punt: unknown",
    );
}

#[test]
fn line_structure() {
    check(
        "== aliases\nl: a@x.net,\n  b@y.net\n",
        "l@example.org",
        "forward: a@x.net b@y.net",
    );
    check(
        "== aliases\nl:\n  a@x.net,\n\tb@y.net\n",
        "l@example.org",
        "forward: a@x.net b@y.net",
    );
    // Postfix: a comment line inside a continued entry is dropped and the entry goes on
    // (Sendmail would end the entry there).
    check(
        "== aliases\nl: a@x.net,\n# note\n  b@y.net\n",
        "l@example.org",
        "forward: a@x.net b@y.net",
    );
    check(
        "== aliases\nl: a@x.net,\n\n  b@y.net\n",
        "l@example.org",
        "forward: a@x.net b@y.net",
    );
    check(
        "== aliases\nl: a@x.net,\n",
        "l@example.org",
        "forward: a@x.net",
    );
    check(
        "== aliases\nl: a@x.net,\r\n  b@y.net\r\n",
        "l@example.org",
        "forward: a@x.net b@y.net",
    );
    // A missing comma: Postfix's tokenizer makes two recipients.
    check(
        "== aliases\nl: a@x.net b@y.net\n",
        "l@example.org",
        "forward: a@x.net b@y.net",
    );
    // The first entry of a duplicate wins (postalias, Exim; Sendmail keeps the last).
    check(
        "== aliases\nd: r1@x.net\nd: r2@x.net\n",
        "d@example.org",
        "forward: r1@x.net",
    );
    // Names are case-insensitive; the address is planned in lower case.
    check(
        "== aliases\nBob: r@x.net\n",
        "BOB@Example.org",
        "forward: r@x.net",
    );
    check(
        "== aliases\n\"quoted\": r@x.net\n",
        "quoted@example.org",
        "forward: r@x.net",
    );
    check(
        "== aliases\nsp : r@x.net\n",
        "sp@example.org",
        "forward: r@x.net",
    );
}

#[test]
fn lines_left_out() {
    check("== aliases\n  l: a@x.net\n", "l@example.org", "-");
    check("== aliases\nl a@x.net\n", "l@example.org", "-");
    check("== aliases\nl:\n", "l@example.org", "-");
    check("== aliases\nl:   \n   \n", "l@example.org", "-");
    check("== aliases\nl@example.org: a@x.net\n", "l@example.org", "-");
    check("== aliases\nl%x: a@x.net\n", "l%x@example.org", "-");
    check("== aliases\na, b: a@x.net\n", "a@example.org", "-");
    check(
        "== aliases\nl: a@x\0.net\nm: b@y.net\n",
        "l@example.org",
        "-",
    );
    check(
        "== aliases\nl: a@x\0.net\nm: b@y.net\n",
        "m@example.org",
        "forward: b@y.net",
    );
    check("== aliases\n\"a b\": a@x.net\n", "a b@example.org", "-");
    check("== aliases\n\\#k: a@x.net\n", "#k@example.org", "-");
}

#[test]
fn invalid_utf8_line_left_out() {
    // The fixture language is text, so build this one by hand.
    let file = b"l: a@x.net,\n  b\xff@y.net\nm: c@z.net\n";
    let domains = vec!["example.org".to_string()];
    let mut b = crate::build::Builder::new(&domains);
    b.aliases("/etc/aliases", file);
    let c = b.finish();
    let mut p = Planner::new(&c);
    assert_eq!(summarize(p.plan("l@example.org").as_ref()), "-");
    assert_eq!(
        summarize(p.plan("m@example.org").as_ref()),
        "forward: c@z.net"
    );
    assert!(
        c.diagnostics
            .iter()
            .any(|d| d.line == 2 && d.message.contains("utf-8")),
        "{:?}",
        c.diagnostics
    );
}

#[test]
fn items_only_the_primary_can_deliver() {
    check(
        "== aliases\nl: a@x.net, \"|/usr/bin/prog a b\"\n",
        "l@example.org",
        "punt: pipe",
    );
    check(
        "== aliases\nl: a@x.net, |/usr/bin/prog\n",
        "l@example.org",
        "punt: pipe",
    );
    check(
        "== aliases\nl: \"|/cmd a,b\"\n",
        "l@example.org",
        "punt: pipe",
    );
    // Unquoted arguments: Postfix reads `-a` and `-b` as recipients; flagged, and punts.
    check(
        "== aliases\nl: |/usr/bin/prog -a -b\n",
        "l@example.org",
        "punt: pipe unknown",
    );
    check(
        "== aliases\nl: a@x.net, /var/archive/l\n",
        "l@example.org",
        "punt: file",
    );
    check(
        "== aliases\nl: a@x.net, ~/archive\n",
        "l@example.org",
        "punt: file",
    );
    check(
        "== aliases\nl: a@x.net, /dev/null\n",
        "l@example.org",
        "punt: file",
    );
    check(
        "== aliases\nl: a@x.net, \\alice\n",
        "l@example.org",
        "punt: backslash",
    );
    check(
        "== aliases\nl: :fail: gone, really\n",
        "l@example.org",
        "punt: special",
    );
    check(
        "== aliases\nl: :defer: later\n",
        "l@example.org",
        "punt: special",
    );
    check(
        "== aliases\nl: a@x.net, :blackhole:\n",
        "l@example.org",
        "punt: special",
    );
    check(
        "== aliases\nl: :unknown:\n",
        "l@example.org",
        "punt: special",
    );
    check(
        "== aliases\nl: error:5.1.1 user gone\n",
        "l@example.org",
        "punt: special",
    );
    check("== aliases\nl: \"\"\n", "l@example.org", "punt: special");
    // `#` in mid-line is not a comment for Postfix (Exim would drop the rest): flagged, punts.
    check(
        "== aliases\nl: a@x.net # old address\n",
        "l@example.org",
        "punt: unknown",
    );
}

#[test]
fn includes() {
    let list = "== /etc/lists/l\na@x.net\n# comment\n\nb@y.net, c@z.net\n";
    check(
        &format!("== aliases\nl: :include:/etc/lists/l\n{list}"),
        "l@example.org",
        "forward: a@x.net b@y.net c@z.net",
    );
    check(
        &format!("== aliases\nl: :INCLUDE:/etc/lists/l\n{list}"),
        "l@example.org",
        "forward: a@x.net b@y.net c@z.net",
    );
    check(
        &format!("== aliases\nl: :include: /etc/lists/l\n{list}"),
        "l@example.org",
        "forward: a@x.net b@y.net c@z.net",
    );
    check(
        "== aliases\nl: a@x.net, :include:/etc/lists/missing\n",
        "l@example.org",
        "punt: include-unreadable",
    );
    check(
        "== aliases\nl: :include:/etc/lists/l\n== !/etc/lists/l\n",
        "l@example.org",
        "punt: include-unreadable",
    );
    check(
        "== aliases\nl: :include:lists/l\n",
        "l@example.org",
        "punt: include",
    );
    check(
        "== aliases\nl: :include:/etc/lists/l\n== /etc/lists/l\na@x.net\n\"|/bin/archive\"\n",
        "l@example.org",
        "punt: pipe",
    );
    check(
        "== aliases\nl: :include:/etc/lists/l\n== /etc/lists/l\na@x.net\nalice\n",
        "l@example.org",
        "split: a@x.net | alice@example.org",
    );
    check(
        "== aliases\nl: :include:/a\n== /a\na@x.net\n:include:/b\n== /b\nb@y.net\n",
        "l@example.org",
        "forward: a@x.net b@y.net",
    );
    check(
        "== aliases\nl: :include:/a\n== /a\na@x.net\n:include:/b\n== /b\n:include:/a\n",
        "l@example.org",
        "punt: include",
    );
    // In an include file (as in .forward) only a `#` in column 0 starts a comment.
    check(
        "== aliases\nl: :include:/a\n== /a\na@x.net\n  # b@y.net\n",
        "l@example.org",
        "punt: unknown",
    );
}

#[test]
fn nested_aliases_and_units() {
    let list = "== aliases\nlist: a@x.net, b@y.net, list-archive\nlist-archive: /archive/list\n";
    check(
        list,
        "list@example.org",
        "split: a@x.net b@y.net | list-archive@example.org",
    );
    check(list, "list-archive@example.org", "punt: file");
    check(
        "== aliases\nlist: a@x.net, b@y.net, /archive/list\n",
        "list@example.org",
        "punt: file",
    );
    check(
        "== aliases\na: b, c@x.net\nb: d@y.net\n",
        "a@example.org",
        "forward: c@x.net d@y.net",
    );
    check(
        "== aliases\na: b\nb: d@y.net, alice\n",
        "a@example.org",
        "split: d@y.net | alice@example.org",
    );
    // Local names bind to the domain of the planned address.
    check(
        "== aliases\na: b\nb: d@y.net, alice\n",
        "a@example.com",
        "split: d@y.net | alice@example.com",
    );
    check(
        "== aliases\na: b@example.org\nb: x@y.net\n",
        "a@example.org",
        "forward: x@y.net",
    );
    check(
        "== aliases\na: alice@example.com, r@x.net\n",
        "a@example.org",
        "split: r@x.net | alice@example.com",
    );
    check(
        "== aliases\na: r@x.net, Alice\n",
        "a@example.org",
        "split: r@x.net | alice@example.org",
    );
    check("== aliases\nal: alice\n", "al@example.org", "punt: mailbox");
    check(
        "== aliases\nl: a@x.net, alice\n",
        "l@example.org",
        "split: a@x.net | alice@example.org",
    );
    check("", "alice@example.org", "punt: mailbox");
    check("", "alice@example.com", "punt: mailbox");
    check("", "root@example.org", "-");
}

#[test]
fn unknown_names_punt_to_the_primary() {
    check(
        "== aliases\na: r@x.net, nobody\n",
        "a@example.org",
        "split: r@x.net | nobody@example.org",
    );
    check(
        "== aliases\na: r@x.net, nobody@example.org\n",
        "a@example.org",
        "split: r@x.net | nobody@example.org",
    );
    check("== aliases\na: nobody\n", "a@example.org", "punt: unknown");
    check("== aliases\na: r@x.net\n", "nobody@example.org", "-");
}

#[test]
fn loops() {
    check(
        "== aliases\ncarol: carol\n",
        "carol@example.org",
        "punt: loop",
    );
    check(
        "== aliases\npostmaster: postmaster@example.org\n",
        "postmaster@example.org",
        "punt: loop",
    );
    let two = "== aliases\na: b, r@x.net\nb: a, s@y.net\nc: a, z@x.net\n";
    check(two, "a@example.org", "punt: loop");
    check(two, "b@example.org", "punt: loop");
    check(two, "c@example.org", "split: z@x.net | a@example.org");
    check(
        "== aliases\na: b\nb: c\nc: a\n",
        "c@example.org",
        "punt: loop",
    );
}

#[test]
fn depth() {
    // a0 -> a1 -> ... -> a20 -> r@x.net: a20 is 1 level deep, a0 is 21.
    let mut f = String::from("== aliases\n");
    for i in 0..20 {
        f.push_str(&format!("a{i}: a{}\n", i + 1));
    }
    f.push_str("a20: r@x.net\ntop: a0\n");
    check(&f, "a1@example.org", "forward: r@x.net");
    check(&f, "a0@example.org", "punt: depth");
    check(&f, "top@example.org", "punt: depth");
}

#[test]
fn procmail_and_dot_forward() {
    let rc = "== /home/alice/.procmailrc\n:0\n";
    check(rc, "alice@example.org", "punt: procmail");
    check(
        &format!("== aliases\nalice: alice@remote.net\n{rc}"),
        "alice@example.org",
        "punt: procmail",
    );
    check(
        &format!("== aliases\nl: r@x.net, alice\n{rc}"),
        "l@example.org",
        "split: r@x.net | alice@example.org",
    );
    let fw = |body: &str| format!("== /home/bob/.forward\n{body}");
    check(
        &fw("bob@remote.net\n"),
        "bob@example.org",
        "forward: bob@remote.net",
    );
    check(
        &fw("# kept for later\nbob@remote.net, b2@other.net\n"),
        "bob@example.org",
        "forward: b2@other.net bob@remote.net",
    );
    check(
        &fw("\"|/usr/bin/vacation bob\"\n"),
        "bob@example.org",
        "punt: dot-forward",
    );
    check(
        &fw("bob@remote.net\nbob\n"),
        "bob@example.org",
        "punt: dot-forward",
    );
    check(
        &fw("\\bob, bob@remote.net\n"),
        "bob@example.org",
        "punt: dot-forward",
    );
    check(
        &fw("bob@example.com\n"),
        "bob@example.org",
        "punt: dot-forward",
    );
    check(
        &fw("/home/bob/mail\n"),
        "bob@example.org",
        "punt: dot-forward",
    );
    check(&fw(""), "bob@example.org", "punt: mailbox");
    check(
        &fw("# Exim filter\nbob@remote.net\n"),
        "bob@example.org",
        "punt: dot-forward",
    );
    check(
        "== !/home/bob/.forward\n",
        "bob@example.org",
        "punt: dot-forward",
    );
    // Aliases are read before .forward.
    check(
        &format!("== aliases\nbob: r@x.net\n{}", fw("|/bin/x\n")),
        "bob@example.org",
        "forward: r@x.net",
    );
    check(
        &format!("== aliases\nl: bob, r@x.net\n{}", fw("bob@remote.net\n")),
        "l@example.org",
        "forward: bob@remote.net r@x.net",
    );
    check(
        &format!("== aliases\nl: bob, r@x.net\n{}", fw("|/bin/x\n")),
        "l@example.org",
        "split: r@x.net | bob@example.org",
    );
}

#[test]
fn virtual_maps() {
    check(
        "== virtual\nv@example.org  r@x.net\n",
        "v@example.org",
        "forward: r@x.net",
    );
    check(
        "== virtual\nV@Example.ORG  r@x.net, s@y.net\n",
        "v@example.org",
        "forward: r@x.net s@y.net",
    );
    check(
        "== virtual\nv@example.org  list@example.org\n== aliases\nlist: a@x.net, alice\n",
        "v@example.org",
        "split: a@x.net | alice@example.org",
    );
    check(
        "== virtual\nv@example.org  v@example.org, r@x.net\n",
        "v@example.org",
        "punt: loop",
    );
    check(
        "== virtual\nv@example.org  alice\n",
        "v@example.org",
        "punt: unknown",
    );
    check(
        "== virtual\nsales  r@x.net\n",
        "sales@example.com",
        "punt: unknown",
    );
    check("== virtual\nv@other.net  r@x.net\n", "v@other.net", "-");
    check(
        "== virtual\n@example.org  r@x.net\n",
        "anything@example.org",
        "-",
    );
    check("== virtual\nv@example.org: r@x.net\n", "v@example.org", "-");
    check(
        "== virtual\nx@example.org  r@x.net\n== aliases\nx: /var/x\n",
        "x@example.org",
        "forward: r@x.net",
    );
    check(
        "== virtual\nx@example.org  r@x.net\n== aliases\nx: /var/x\n",
        "x@example.com",
        "punt: file",
    );
    check(
        "== virtual\nv@example.org  r@x.net, alice@example.org\n",
        "v@example.org",
        "split: r@x.net | alice@example.org",
    );
    check(
        "== virtual\nv@example.org  r@x.net,\n  s@y.net\n",
        "v@example.org",
        "forward: r@x.net s@y.net",
    );
}

#[test]
fn recipient_lists() {
    let r = "== recipients\nbox@example.org OK\n# c\nOther@Example.com x\nfar@other.net OK\n@example.org OK\n";
    check(r, "box@example.org", "punt: mailbox");
    check(r, "other@example.com", "punt: mailbox");
    check(r, "far@other.net", "-");
    check(r, "random@example.org", "-");
    check(
        &format!("== aliases\nl: r@x.net, box@example.org\n{r}"),
        "l@example.org",
        "split: r@x.net | box@example.org",
    );
}

#[test]
fn unit_that_the_secondary_would_expand_again_demotes() {
    // l punts m@example.org to the primary, but the secondary has a virtual entry for
    // m@example.org that forwards: it would expand the unit again, so l must punt whole.
    let f = "== aliases\nl: r@x.net, m\nm: /var/m\n== virtual\nm@example.org  q@x.net\n";
    check(f, "l@example.org", "punt: unknown");
    check(f, "m@example.org", "forward: q@x.net");
}

#[test]
fn full_plan_shape() {
    let f = "== aliases\n\
trolls: adb@elsewhere.net, nemo@other.org,\n  trolls-archive\n\
trolls-archive: /com/archive/trolls\n";
    let c = content(f);
    let plan = Planner::new(&c).plan("trolls@example.org").unwrap();
    let json = serde_json::to_string(&plan).unwrap();
    assert_eq!(
        json,
        r#"{"address":"trolls@example.org","class":"split","forward":["adb@elsewhere.net","nemo@other.org"],"punt":["trolls-archive@example.org"],"reasons":[{"code":"file","target":"/com/archive/trolls","origin":"/etc/aliases:3","via":"trolls-archive@example.org"}]}"#
    );
    let user = Planner::new(&c).plan("alice@example.org").unwrap();
    assert_eq!(
        serde_json::to_string(&user).unwrap(),
        r#"{"address":"alice@example.org","class":"punt","forward":[],"punt":["alice@example.org"],"reasons":[{"code":"mailbox","target":"alice","origin":"/etc/passwd:2"}]}"#
    );
}

#[test]
fn reasons_carry_the_line_of_the_item() {
    let c = content("== aliases\nl: a@x.net,\n  b@y.net,\n  |/bin/x\n");
    let plan = Planner::new(&c).plan("l@example.org").unwrap();
    assert_eq!(plan.reasons.len(), 1);
    assert_eq!(plan.reasons[0].origin, "/etc/aliases:3");
    assert_eq!(plan.reasons[0].target, "|/bin/x");
}

#[test]
fn plan_all_lists_every_valid_address_once() {
    let c = content(
        "== aliases\nl: r@x.net\n== virtual\nv@example.org r@x.net\n== recipients\nbox@example.com\n",
    );
    let all: Vec<String> = Planner::new(&c)
        .plan_all()
        .into_iter()
        .map(|p| p.address)
        .collect();
    assert_eq!(
        all,
        [
            "alice@example.com",
            "alice@example.org",
            "bob@example.com",
            "bob@example.org",
            "box@example.com",
            "carol@example.com",
            "carol@example.org",
            "l@example.com",
            "l@example.org",
            "v@example.org",
        ]
    );
}

#[test]
fn served_domains_are_found_however_many() {
    // Up to FEW_DOMAINS compared one by one, more hashed: the same answers, and the content's
    // own string.
    let check = |n: usize, probe: &str, expected: bool| {
        let c = Content {
            domains: (0..n).map(|i| format!("d{i}.example")).collect(),
            ..Content::default()
        };
        let served = Served::of(&c);
        assert_eq!(served.many.is_some(), n > FEW_DOMAINS, "{n} domains");
        let got = served.get(probe);
        assert_eq!(got.is_some(), expected, "{probe} among {n}");
        if let Some(d) = got {
            assert!(c.domains.iter().any(|x| std::ptr::eq(x.as_str(), d)));
        }
    };
    for n in [1, 2, FEW_DOMAINS, FEW_DOMAINS + 1, 40] {
        check(n, "d0.example", true);
        check(n, &format!("d{}.example", n - 1), true);
        check(n, &format!("d{n}.example"), false);
        check(n, "d0.example.", false);
        check(n, "D0.example", false);
        check(n, "", false);
    }
    check(0, "d0.example", false);
}

#[test]
fn many_keys_come_in_address_order() {
    // Many names, in the order of the content's lists, where `nX` and `nX-y` order differently
    // as names and as addresses (`-` sorts before `@`).
    let mut text = String::from("== aliases\n");
    for i in 0..40_000u64 {
        let x = i.wrapping_mul(2_654_435_761) % 1_000_003;
        text.push_str(&format!("n{x}: r@x.net\nn{x}-y: r@x.net\n"));
    }
    let c = content(&text);
    let got: Vec<(&str, &str)> = keys(&c).iter().map(|k| k.addr).collect();
    assert!(got.len() > 1 << 16, "{} keys", got.len());
    let mut want: Vec<(&str, &str)> = c
        .domains
        .iter()
        .flat_map(|d| c.aliases.iter().map(move |a| (a.name.as_str(), d.as_str())))
        .chain(
            c.users
                .iter()
                .flat_map(|u| c.domains.iter().map(move |d| (u.name.as_str(), d.as_str()))),
        )
        .collect();
    want.sort_unstable_by(|a, b| format!("{}@{}", a.0, a.1).cmp(&format!("{}@{}", b.0, b.1)));
    want.dedup();
    assert_eq!(got, want);
}

mod properties {
    //! Invariants of DESIGN section 5 over arbitrary alias graphs.

    use super::*;
    use crate::snapshot::Content;
    use proptest::prelude::*;

    /// One item of a generated alias: a remote address, a reference to another alias (by index),
    /// a served address, a user, a non-address item, an unknown name.
    fn item(n: usize) -> impl Strategy<Value = String> {
        prop_oneof![
            4 => (0..6u8).prop_map(|i| format!("r{i}@remote{}.net", i % 3)),
            6 => (0..n).prop_map(|i| format!("a{i}")),
            2 => (0..n).prop_map(|i| format!("A{i}@Example.com")),
            1 => prop_oneof![Just("alice"), Just("bob"), Just("carol")].prop_map(String::from),
            1 => prop_oneof![
                Just("\"|/bin/prog\""), Just("/var/file"), Just("\\alice"), Just(":blackhole:"),
                Just(":include:/lists/x"), Just(":include:/lists/missing"), Just("nobody"),
                Just("box@example.org"), Just("# x"),
            ].prop_map(String::from),
        ]
    }

    fn primary() -> impl Strategy<Value = String> {
        (2..24usize).prop_flat_map(|n| {
            prop::collection::vec(prop::collection::vec(item(n), 1..5), n).prop_map(move |lists| {
                let mut f = String::from("== aliases\n");
                for (i, l) in lists.iter().enumerate() {
                    f.push_str(&format!("a{i}: {}\n", l.join(", ")));
                }
                f.push_str("== /lists/x\nr9@remote.net\na0\n");
                f.push_str("== recipients\nbox@example.org\na1@example.com\n");
                // Keys that share a local part with an alias or a user, full and bare.
                f.push_str("== virtual\na1@example.org r7@remote.net\na0 r8@remote.net\n");
                f.push_str("alice@example.com a1\ncarol r6@remote.net\nv@example.org a0, bob\n");
                f.push_str("== /home/bob/.forward\nbob@remote.net\n");
                f.push_str("== /home/carol/.procmailrc\n:0\n");
                f
            })
        })
    }

    fn map_safe(a: &str) -> bool {
        crate::addr::valid_address(a)
            && !a
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || matches!(c, ',' | '"' | ':'))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn invariants_hold(fixture in primary()) {
            let c = content(&fixture);
            prop_assert_eq!(c.validate(), Ok(()));
            let plans = Planner::new(&c).plan_all();
            let class: std::collections::HashMap<&str, Class> = plans.iter().map(|p| (p.address.as_str(), p.class)).collect();
            for p in &plans {
                for u in &p.punt {
                    let cu = class.get(u.as_str());
                    prop_assert!(cu.is_none() || cu == Some(&Class::Punt), "{} punts {} which is {:?}", p.address, u, cu);
                }
                for f in &p.forward {
                    prop_assert!(map_safe(f), "forward target {:?}", f);
                    let (_, d) = addr::split(f).unwrap();
                    prop_assert!(!c.domains.iter().any(|x| x == d), "served address {} forwarded", f);
                }
                match p.class {
                    Class::Forward => prop_assert!(!p.forward.is_empty() && p.punt.is_empty()),
                    Class::Split => prop_assert!(!p.forward.is_empty() && !p.punt.is_empty()),
                    Class::Punt => {
                        prop_assert!(p.forward.is_empty());
                        prop_assert_eq!(&p.punt, &vec![p.address.clone()]);
                    }
                }
                let mut sorted = p.forward.clone();
                sorted.sort();
                sorted.dedup();
                prop_assert_eq!(&sorted, &p.forward);
            }
            // Without their reasons, as the maps are rendered, the plans are the same but for
            // the reasons.
            let bare: Vec<Plan> = (plans.iter().cloned())
                .map(|mut p| {
                    p.reasons.clear();
                    p
                })
                .collect();
            let mut got = Vec::new();
            Planner::new(&c).without_reasons().plan_each(|p| got.push(p.clone()));
            prop_assert_eq!(&got, &bare, "without reasons");
            // Planned in runs side by side, however many, and borrowed, the plans are the same
            // (without reasons), in order, whether the walk gathers reasons or not.
            for runs in 1..=4 {
                let sinks = vec![Vec::new(); runs];
                let planner = if runs == 2 { Planner::new(&c).without_reasons() } else { Planner::new(&c) };
                let got = {planner}.plan_runs(sinks, |v: &mut Vec<Plan>, p| v.push(p.to_plan()));
                prop_assert_eq!(got.len(), runs);
                prop_assert_eq!(&got.concat(), &bare, "in {} runs", runs);
            }
            // The order of planning does not matter: each address alone gives the same plan.
            let mut fresh = Planner::new(&c);
            let mut fresh_bare = Planner::new(&c).without_reasons();
            for (p, b) in plans.iter().zip(&bare).rev() {
                let alone = fresh.plan(&p.address);
                prop_assert_eq!(alone.as_ref(), Some(p));
                let alone_bare = fresh_bare.plan(&p.address);
                prop_assert_eq!(alone_bare.as_ref(), Some(b));
                // As the receiver plans one address it is asked about: by binary search.
                let looked_up = Planner::sparse(&c).plan(&p.address.to_ascii_uppercase());
                prop_assert_eq!(looked_up.as_ref(), Some(p));
            }
        }

        #[test]
        fn hash_ignores_read_order(fixture in primary(), seed in any::<u64>()) {
            let c = content(&fixture);
            let mut shuffled: Content = c.clone();
            // A deterministic shuffle of every list and of the file table.
            let mut s = seed | 1;
            let mut next = move || { s ^= s << 13; s ^= s >> 7; s ^= s << 17; s };
            for i in (1..shuffled.aliases.len()).rev() {
                let j = (next() % (i as u64 + 1)) as usize;
                shuffled.aliases.swap(i, j);
            }
            let n = shuffled.files.len();
            let perm: Vec<u32> = {
                let mut p: Vec<u32> = (0..n as u32).collect();
                for i in (1..n).rev() {
                    let j = (next() % (i as u64 + 1)) as usize;
                    p.swap(i, j);
                }
                p
            };
            let mut files = vec![String::new(); n];
            for (old, &new) in perm.iter().enumerate() {
                files[new as usize] = shuffled.files[old].clone();
            }
            shuffled.files = files;
            shuffled.origins_mut(|f| *f = perm[*f as usize]);
            shuffled.diagnostics.reverse();
            shuffled.normalize();
            prop_assert_eq!(&shuffled, &c);
            prop_assert_eq!(shuffled.hash(), c.hash());
        }
    }

    #[test]
    fn sources_added_in_any_order_hash_the_same() {
        let domains = vec!["example.org".to_string()];
        let build = |order: &[usize]| {
            let mut b = crate::build::Builder::new(&domains);
            for &i in order {
                match i {
                    0 => b.aliases("/etc/aliases", b"a: r@x.net\n"),
                    1 => b.virtual_map("/etc/postfix/virtual", b"v@example.org r@x.net\n"),
                    2 => b.recipients("/etc/postfix/rr", b"box@example.org\n"),
                    _ => {
                        b.passwd("/etc/passwd", b"u:x:1000:1000::/h:/s\n", 1000);
                    }
                }
            }
            b.finish().hash()
        };
        assert_eq!(build(&[0, 1, 2, 3]), build(&[3, 2, 1, 0]));
        assert_eq!(build(&[0, 1, 2, 3]), build(&[1, 3, 0, 2]));
    }

    #[test]
    fn a_long_chain_does_not_overflow_the_stack() {
        let mut f = String::from("== aliases\n");
        for i in 0..200_000 {
            f.push_str(&format!("c{i}: c{}\n", i + 1));
        }
        f.push_str("c200000: r@x.net\n");
        let c = content(&f);
        let mut p = Planner::new(&c);
        assert_eq!(summarize(p.plan("c0@example.org").as_ref()), "punt: depth");
        assert_eq!(
            summarize(p.plan("c199990@example.org").as_ref()),
            "forward: r@x.net"
        );
    }
}

mod affected {
    //! Re-planning after a delta: which names a change reaches, and that every other address
    //! plans exactly as before.

    use super::*;
    use crate::delta::diff;
    use crate::testkit::model::{edit, walk};
    use proptest::prelude::*;

    /// The closure as its definition reads: pass over `c` adding whatever reaches an affected
    /// name or include, until a pass adds nothing.
    fn fixpoint(a: &mut Affected, c: &Content) {
        let domains: Vec<&str> = c.domains.iter().map(String::as_str).collect();
        let reaches = |a: &Affected, targets: &[Target]| {
            targets.iter().any(|t| match t.kind {
                Kind::Local => a.names.contains(lower(&t.value).as_ref()),
                Kind::Address => addr::split(&t.value).is_some_and(|(l, d)| {
                    domains.contains(&d) && a.names.contains(lower(l).as_ref())
                }),
                Kind::Include => a.includes.contains(t.value.as_str()),
                _ => false,
            })
        };
        loop {
            let before = a.len();
            for i in &c.includes {
                if reaches(a, &i.targets) {
                    a.includes.insert(i.path.clone());
                }
            }
            for e in &c.aliases {
                if reaches(a, &e.targets) {
                    a.names.insert(e.name.clone());
                }
            }
            for v in &c.virtuals {
                if reaches(a, &v.targets) {
                    a.names.insert(local_of(&v.key).into_owned());
                }
            }
            if a.len() == before {
                break;
            }
        }
    }

    /// The names `old` to `new` affects, comma-separated.
    fn check(old: &str, new: &str, expected: &str) {
        let (old, new) = (content(old), content(new));
        let mut a = Affected::of(&diff(&old, &new)).expect("domains unchanged");
        a.close_over(&new);
        assert_eq!(a.names().join(","), expected);
    }

    /// An affected set of these names and include paths.
    fn affected(names: &[&str], includes: &[&str]) -> Affected {
        Affected {
            names: names.iter().map(|n| n.to_string()).collect(),
            includes: includes.iter().map(|p| p.to_string()).collect(),
        }
    }

    #[test]
    fn the_sieve_never_turns_away_a_name_of_its_set() {
        let names = ["postmaster", "a", "", "émile", "x1", "info-list"];
        let includes = ["/etc/mail/l"];
        let sieve = Sieve::of(&affected(&names, &includes));
        let name = |n: &str| sieve.may_hold(Sieve::slot(n));
        let include = |p: &str| sieve.may_hold(Sieve::INCLUDE | Sieve::slot(p));
        for n in names {
            assert!(name(n), "{n:?}");
        }
        assert!(include("/etc/mail/l"));
        // Others: turned away (none of these shares a slot with the set's).
        for n in [
            "postmasters",
            "Postmaster",
            "b",
            "emile",
            "x2",
            "/etc/mail/l",
        ] {
            assert!(!name(n), "{n:?}");
        }
        assert!(!include("postmaster"));
        assert!(!include("/etc/mail/m"));
    }

    #[test]
    fn a_node_is_passed_over_only_when_none_of_its_items_can_reach_the_set() {
        let c = content(
            "== aliases\nbig: Postmaster, X1@example.org\nlist: :include:/etc/mail/l\n\
             far: x1@remote.net\nnone: someone@remote.net, \"|/bin/x\"\nlast: postmaster\n\
             == virtual\nv@example.org postmaster@example.org\n== /etc/mail/l\nInfo-List\n",
        );
        let domains = Served::of(&c);
        let nodes: Vec<&str> = (c.aliases.iter().map(|a| a.name.as_str()))
            .chain(c.virtuals.iter().map(|v| v.key.as_str()))
            .chain(c.includes.iter().map(|i| i.path.as_str()))
            .collect();
        let check = |names: &[&str], includes: &[&str], expected: &str| {
            let sieve = Sieve::of(&affected(names, includes));
            for half in [1, 2, usize::MAX] {
                let slots = Slots::of(&c, &domains, half);
                assert_eq!(slots.starts.len(), nodes.len() + 1);
                let may: Vec<&str> = slots.maybe(&sieve).map(|n| nodes[n]).collect();
                assert_eq!(may.join(","), expected, "halves from {half}");
            }
        };
        // Names are folded; an address at a domain not served names nothing; a node is named
        // once however many of its items may reach the set.
        check(&["postmaster"], &[], "big,last,v@example.org");
        check(&["postmaster", "x1"], &[], "big,last,v@example.org");
        check(&["x1"], &[], "big");
        check(&["info-list"], &[], "/etc/mail/l");
        check(&[], &["/etc/mail/l"], "list");
        check(&["/etc/mail/l"], &[], "");
        check(&["someone", "bin"], &[], "");
    }

    #[test]
    fn a_change_reaches_what_names_it() {
        let base = "== aliases\nx: r@remote.net\nl: x, s@remote.net\ntop: l\nother: o@remote.net\n";
        // The changed alias, the list naming it, and the alias naming the list.
        check(
            base,
            "== aliases\nx: q@remote.net\nl: x, s@remote.net\ntop: l\nother: o@remote.net\n",
            "l,top,x",
        );
        // Nothing changed, nothing affected.
        check(base, base, "");
        // A new user named by no alias: only itself.
        check(
            base,
            &format!("{base}== passwd\ndave:x:1003:1003::/home/dave:/bin/sh\n"),
            "alice,bob,carol,dave",
        );
        // Through an address at a served domain, and through an include file.
        check(
            "== aliases\nx: a@remote.net\nv: x@example.com\ni: :include:/l\n== /l\nx\n",
            "== aliases\nx: b@remote.net\nv: x@example.com\ni: :include:/l\n== /l\nx\n",
            "i,v,x",
        );
        // An include file's own change reaches the aliases that include it.
        check(
            "== aliases\ni: :include:/l\nj: i\n== /l\na@remote.net\n",
            "== aliases\ni: :include:/l\nj: i\n== /l\nb@remote.net\n",
            "i,j",
        );
        // A remote address with the same local part is not a reference.
        check(
            "== aliases\nx: a@remote.net\ny: x@remote.net\n",
            "== aliases\nx: b@remote.net\ny: x@remote.net\n",
            "x",
        );
        // A removed alias still affects what named it (it now bounces or is a user).
        check(
            "== aliases\nx: a@remote.net\ny: x\n",
            "== aliases\ny: x\n",
            "x,y",
        );
        // A loop joined by a change: every member.
        check(
            "== aliases\na: b\nb: c\nc: r@remote.net\n",
            "== aliases\na: b\nb: c\nc: a\n",
            "a,b,c",
        );
    }

    #[test]
    fn a_change_of_domains_plans_everything() {
        let old = content("== aliases\nx: r@remote.net\n");
        let mut new = old.clone();
        new.domains.push("example.net".into());
        assert_eq!(Affected::of(&diff(&old, &new)), None);
    }

    /// What a map line of `p` says.
    fn line(p: &Plan) -> (Class, &[String], &[String]) {
        (p.class, &p.forward, &p.punt)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn only_affected_addresses_plan_differently(
            start in prop::collection::vec(edit(), 0..24),
            edits in prop::collection::vec(edit(), 1..12),
        ) {
            walk(&start, &edits, |old, new| {
                let mut a = Affected::of(&diff(old, new)).expect("domains unchanged");
                let mut passes = a.clone();
                fixpoint(&mut passes, new);
                // However many passes come before the index walk, and passes in pieces side
                // by side or not, the same closure.
                for n in [0, 1, 2, usize::MAX] {
                    for least in [1, 3, usize::MAX] {
                        let mut b = a.clone();
                        b.close_over_in(new, n, least);
                        prop_assert_eq!(&passes, &b, "{} passes, pieces of {}", n, least);
                    }
                }
                a.close_over(new);
                prop_assert_eq!(&passes, &a);
                let before = plan_all(old);
                let after = plan_all(new);
                let local = |p: &Plan| addr::split(&p.address).map(|(l, _)| l.to_string());
                let kept = |ps: &[Plan]| -> Vec<Plan> {
                    ps.iter()
                        .filter(|p| !a.contains(&local(p).unwrap_or_default()))
                        .cloned()
                        .collect()
                };
                // Outside the affected names: the same addresses with the same lines.
                let (kb, ka) = (kept(&before), kept(&after));
                prop_assert_eq!(
                    kb.iter().map(|p| (&p.address, line(p))).collect::<Vec<_>>(),
                    ka.iter().map(|p| (&p.address, line(p))).collect::<Vec<_>>()
                );
                // Inside: plan_affected gives exactly the full plans (borrowed, without their
                // reasons), in order.
                let mut got = Vec::new();
                Planner::sparse(new).plan_affected(&a, |p| got.push(p.to_plan()));
                let want: Vec<Plan> = after
                    .iter()
                    .filter(|p| a.contains(&local(p).unwrap_or_default()))
                    .map(|p| Plan { reasons: Vec::new(), ..p.clone() })
                    .collect();
                prop_assert_eq!(got, want);
                // Found by binary search rather than hashed: the same plans.
                prop_assert_eq!(Planner::sparse(new).plan_all(), after);
                Ok(())
            })?;
        }
    }
}

#[test]
fn numbers_are_written_as_format_writes_them() {
    let check = |n: u32| {
        let mut s = String::from("f:");
        push_number(&mut s, n);
        assert_eq!(s, format!("f:{n}"));
    };
    (0..1000).for_each(check);
    let mut n = 1u32;
    while let Some(m) = n.checked_mul(7) {
        [m - 1, m, m + 1].into_iter().for_each(check);
        n = m;
    }
    [9_999, 10_000, 99_999, 100_000, u32::MAX - 1, u32::MAX]
        .into_iter()
        .for_each(check);
}

mod key_order {
    use super::*;
    use proptest::prelude::*;

    /// Sorts `addrs` with [`sort_keys`] and checks that they come out as the strings
    /// `local@domain` sort.
    fn check(addrs: &[(String, String)]) {
        for (l, d) in addrs {
            let joined = format!("{l}@{d}");
            assert_eq!(
                head((l, d)),
                crate::order::head(joined.bytes()),
                "{joined:?}"
            );
        }
        let mut keys: Vec<Key<'_>> = (addrs.iter())
            .map(|(l, d)| Key {
                addr: (l.as_str(), d.as_str()),
                named: Named::NOTHING,
            })
            .collect();
        sort_keys(&mut keys);
        let got: Vec<String> = keys
            .iter()
            .map(|k| format!("{}@{}", k.addr.0, k.addr.1))
            .collect();
        let mut want: Vec<String> = addrs.iter().map(|(l, d)| format!("{l}@{d}")).collect();
        want.sort();
        assert_eq!(got, want);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        // Bytes on both sides of `@`, and parts about eight bytes long, where the head ends;
        // many share their first seven bytes, so that heads are often equal.
        #[test]
        fn keys_sort_as_their_addresses(
            addrs in prop::collection::vec(
                ("(abcdefg)?[0?A_a~.\u{e9}]{0,10}", "[0?@A_a~.]{0,4}"),
                0..40,
            ),
        ) {
            check(&addrs);
        }
    }

    /// The keys of `c` in order, each as its address and the names of the entries it names.
    fn described(c: &Content) -> Vec<String> {
        let name = |list: Option<&str>| list.unwrap_or("-").to_string();
        (keys(c).iter())
            .map(|k| {
                let n = k.named;
                format!(
                    "{}@{} alias={} user={}{} bare={}",
                    k.addr.0,
                    k.addr.1,
                    name(n.alias().map(|i| c.aliases[i].name.as_str())),
                    name(n.user().map(|i| c.users[i].name.as_str())),
                    if n.has_procmail() { "+procmail" } else { "" },
                    name(n.bare().map(|i| c.virtuals[i].key.as_str())),
                )
            })
            .collect()
    }

    /// Normalized content takes the keys from its sorted lists without a sort
    /// ([`locals_in_address_order`]); they must be the keys the sort of every key gives (the
    /// same content with its lists reversed, which takes the sort), in the order of the strings
    /// `local@domain`.
    fn check_merged(aliases: &[String], users: &[String], bare: &[String], full: &[String]) {
        let mut fixture = String::from("== aliases\n");
        aliases
            .iter()
            .for_each(|n| fixture.push_str(&format!("{n}: r@x.net\n")));
        fixture.push_str("== passwd\n");
        for (i, n) in users.iter().enumerate() {
            fixture.push_str(&format!("{n}:x:{}:100::/home/{n}:/bin/sh\n", 1000 + i));
        }
        fixture.push_str("== virtual\n");
        bare.iter()
            .for_each(|n| fixture.push_str(&format!("{n} r@x.net\n")));
        full.iter()
            .for_each(|n| fixture.push_str(&format!("{n}@example.org r@x.net\n")));
        fixture.push_str("== recipients\n");
        full.iter()
            .for_each(|n| fixture.push_str(&format!("{n}@example.com\n")));
        if let Some(u) = users.first() {
            fixture.push_str(&format!("== /home/{u}/.procmailrc\n:0\n"));
        }
        let c = content(&fixture);
        assert!(
            locals_in_address_order(&c, |_, _| {}),
            "normalized content is merged:\n{fixture}"
        );
        let got = described(&c);
        let addrs: Vec<&str> = got
            .iter()
            .map(|k| k.split(' ').next().unwrap_or(""))
            .collect();
        let mut want = addrs.clone();
        want.sort_unstable();
        want.dedup();
        assert_eq!(addrs, want, "in the order of the addresses:\n{fixture}");
        let mut reversed = c.clone();
        reversed.aliases.reverse();
        reversed.users.reverse();
        reversed.virtuals.reverse();
        let lists = [c.aliases.len(), c.users.len(), c.virtuals.len()];
        if lists.iter().any(|&n| n > 1) {
            assert!(!locals_in_address_order(&reversed, |_, _| {}));
        }
        assert_eq!(described(&reversed), got, "merged and sorted:\n{fixture}");
    }

    #[test]
    fn names_in_order_become_addresses_in_order() {
        let v = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        // `a1` before `a10` as names, after it as addresses; `a` between `a-b` and `ab`.
        check_merged(&v(&["a", "a-b", "a1", "a10", "a2", "ab"]), &[], &[], &[]);
        check_merged(&v(&["a1", "a10", "a100", "a11", "a2"]), &[], &[], &[]);
        // A name that is an alias, a user and a bare virtual key is one key with all three.
        check_merged(
            &v(&["b", "b0"]),
            &v(&["b", "b0", "c"]),
            &v(&["b", "c.d"]),
            &v(&["b"]),
        );
        check_merged(&[], &v(&["u", "u.1"]), &v(&["u-1"]), &v(&["u1", "zz"]));
        check_merged(&[], &[], &[], &[]);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(500))]

        // Names that begin one another and go on with bytes below and above `@`.
        #[test]
        fn merged_keys_are_the_sorted_keys(
            aliases in prop::collection::vec("[ab][0a._~-]{0,3}", 0..24),
            users in prop::collection::vec("[ab][0a_]{0,2}", 0..6),
            bare in prop::collection::vec("[ab][0a.-]{0,2}", 0..6),
            full in prop::collection::vec("[ab][0a.-]{0,2}", 0..6),
        ) {
            check_merged(&aliases, &users, &bare, &full);
        }
    }

    #[test]
    fn many_keys_sorted_in_halves_sort_as_their_addresses() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let addrs: Vec<(String, String)> = (0..70_000)
            .map(|_| {
                let l = format!("{:x}", next() % 1_000_000_007);
                let cut = (next() % (l.len() as u64 + 1)) as usize;
                (
                    l[..cut].to_string(),
                    ["a", "a.b", "", "z"][(next() % 4) as usize].to_string(),
                )
            })
            .collect();
        check(&addrs);
    }
}
