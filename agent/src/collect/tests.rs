//! Collection from real files in a temporary directory.

use super::*;
use proto::{Class, Planner};

struct Primary {
    dir: tempfile::TempDir,
}

impl Primary {
    fn new() -> Self {
        Primary {
            dir: tempfile::tempdir().unwrap(),
        }
    }
    fn path(&self, rel: &str) -> String {
        self.dir.path().join(rel).to_string_lossy().into_owned()
    }
    fn write(&self, rel: &str, text: &str) -> String {
        let p = self.dir.path().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, text).unwrap();
        p.to_string_lossy().into_owned()
    }
    fn sources(&self, aliases: Vec<String>) -> Sources {
        Sources {
            aliases,
            virtual_maps: vec![],
            recipients: vec![],
            passwd: self.path("passwd"),
            uid_min: 1000,
            markers: true,
        }
    }
}

fn class_of(c: &Content, address: &str) -> Option<Class> {
    Planner::new(c).plan(address).map(|p| p.class)
}

#[test]
fn reads_aliases_includes_users_and_markers() {
    let p = Primary::new();
    let home = |u: &str| p.path(&format!("home/{u}"));
    p.write(
        "passwd",
        &format!(
            "root:x:0:0::/root:/bin/sh\nann:x:1000:1000::{}:/bin/sh\nben:x:1001:1001::{}:/bin/sh\ncat:x:1002:1002::{}:/bin/sh\n",
            home("ann"),
            home("ben"),
            home("cat")
        ),
    );
    p.write("home/ann/.procmailrc", ":0\n");
    p.write("home/ben/.forward", "ben@remote.net\n");
    std::fs::create_dir_all(home("cat")).unwrap();
    // A .forward that exists but cannot be read (a directory in its place).
    std::fs::create_dir_all(format!("{}/.forward", home("cat"))).unwrap();
    let list = p.write("lists/staff", "a@x.net\nann\n");
    std::fs::create_dir_all(p.path("lists/broken")).unwrap();
    let aliases = p.write(
        "aliases",
        &format!(
            "staff: :include:{list}\nbroken: a@x.net, :include:{}\nmissing: :include:{}\nfw: ben\n",
            p.path("lists/broken"),
            p.path("lists/none")
        ),
    );
    let got = collect(&["example.org".into()], &p.sources(vec![aliases.clone()]));
    let c = &got.content;
    assert_eq!(c.validate(), Ok(()));
    assert_eq!(class_of(c, "staff@example.org"), Some(Class::Split));
    assert_eq!(class_of(c, "broken@example.org"), Some(Class::Punt));
    assert_eq!(class_of(c, "missing@example.org"), Some(Class::Punt));
    assert_eq!(class_of(c, "fw@example.org"), Some(Class::Forward));
    assert_eq!(class_of(c, "ann@example.org"), Some(Class::Punt));
    assert_eq!(class_of(c, "ben@example.org"), Some(Class::Forward));
    assert_eq!(class_of(c, "cat@example.org"), Some(Class::Punt));
    assert_eq!(class_of(c, "root@example.org"), None);
    for must in [
        aliases,
        list,
        p.path("lists/none"),
        format!("{}/.procmailrc", home("ann")),
        format!("{}/.forward", home("cat")),
    ] {
        assert!(
            got.paths.contains(Path::new(&must)),
            "{must} not watched: {:?}",
            got.paths
        );
    }
}

#[test]
fn globs_expand_sorted_and_missing_files_are_reported() {
    let p = Primary::new();
    p.write("passwd", "");
    p.write("aliases.d/20-b", "x: second@x.net\n");
    p.write("aliases.d/10-a", "x: first@x.net\n");
    let got = collect(
        &["example.org".into()],
        &p.sources(vec![
            p.path("aliases.d/*"),
            p.path("nope"),
            p.path("empty.d/*"),
        ]),
    );
    let plan = Planner::new(&got.content).plan("x@example.org").unwrap();
    assert_eq!(plan.forward, ["first@x.net"]);
    let diags: Vec<String> = got
        .content
        .diagnostics
        .iter()
        .map(|d| d.to_string())
        .collect();
    assert!(
        diags
            .iter()
            .any(|d| d.contains("nope") && d.contains("cannot read")),
        "{diags:?}"
    );
    assert!(
        diags
            .iter()
            .any(|d| d.contains("empty.d/*") && d.contains("matches no file")),
        "{diags:?}"
    );
    assert!(
        diags.iter().any(|d| d.contains("duplicate entry")),
        "{diags:?}"
    );
    assert!(got.paths.contains(Path::new(&p.path("aliases.d"))));
}

/// A collection with a cache, given the paths events named, against one without.
#[test]
fn a_cached_collection_reads_again_what_events_name() {
    let p = Primary::new();
    let home = p.path("home/ann");
    p.write(
        "passwd",
        &format!(
            "ann:x:1000:1000::{home}:/bin/sh\nben:x:1001:1001::{}:/bin/sh\n",
            p.path("home/ben")
        ),
    );
    let list = p.write("lists/staff", "a@x.net\n");
    let aliases = p.write(
        "aliases",
        &format!("staff: :include:{list}\nx: r@remote.net\n"),
    );
    let sources = p.sources(vec![aliases.clone()]);
    let domains = vec!["example.org".to_string()];
    let fresh = || collect(&domains, &sources).content;
    let mut cache = Cache::default();
    let names = |ps: &[&str]| -> Changed { Some(ps.iter().map(PathBuf::from).collect()) };
    let mut check = |changed: Changed, same_as_fresh: bool, what: &str| {
        let got = collect_with(&domains, &sources, &mut cache, &changed).content;
        assert_eq!(got == fresh(), same_as_fresh, "{what}");
        got
    };
    check(None, true, "first collection");
    // What the first collection found in the homes (looked at beside the includes) is kept:
    // a .forward no event names is not read (an event naming the include file, which is not
    // an aliases file, has the collection assembled again rather than patched).
    p.write("home/ann/.forward", "ann@remote.net\n");
    check(names(&[&list]), false, ".forward without an event");
    check(
        names(&[&format!("{home}/.forward")]),
        true,
        ".forward named",
    );
    // The aliases file is read every time, with or without an event.
    p.write(
        "aliases",
        &format!("staff: :include:{list}\nx: q@remote.net\n"),
    );
    check(names(&[]), true, "aliases file without an event");
    // An include file: read again when an event names it or its directory.
    p.write("lists/staff", "b@x.net\n");
    let stale = check(names(&[]), false, "include file without an event");
    assert!(format!("{stale:?}").contains("a@x.net"));
    check(names(&[&list]), true, "include file named by an event");
    p.write("lists/staff", "c@x.net\n");
    check(
        names(&[&p.path("lists")]),
        true,
        "its directory named by an event",
    );
    // Markers: a new .procmailrc, a new home.
    p.write("home/ann/.procmailrc", ":0\n");
    check(
        names(&[&format!("{home}/.procmailrc")]),
        true,
        ".procmailrc created",
    );
    p.write("home/ben/.forward", "ben@remote.net\n");
    check(names(&[&p.path("home")]), true, "a home directory created");
    // No record of events (the periodic rescan): everything again.
    p.write("lists/staff", "d@x.net\n");
    check(None, true, "rescan");
}

#[test]
fn edits_of_aliases_files_are_patched_only_where_a_full_collection_agrees() {
    let p = Primary::new();
    p.write(
        "passwd",
        &format!("ann:x:1000:1000::{}:/bin/sh\n", p.path("home/ann")),
    );
    let list = p.write("lists/staff", "a@x.net\n");
    let other = p.write("lists/other", "o@x.net\n");
    let a = p.write(
        "aliases",
        &format!(
            "staff: :include:{list}, boss@remote.net\nx: r@remote.net\ny: s@remote.net\ndup: a@remote.net\n# end\n"
        ),
    );
    let b = p.write("aliases.more", "dup: b@remote.net\nz: t@remote.net\n");
    let sources = p.sources(vec![a.clone(), b.clone()]);
    let domains = vec!["example.org".to_string()];
    let mut cache = Cache::default();
    let first = collect_with(&domains, &sources, &mut cache, &None);
    assert!(!first.patched());
    let mut last = first.content;
    // Whether the cache holds the content a patch was made from (after a patch that changed it).
    let mut prev = false;
    let mut moved = 0;
    // Each step: a file and its new text, the paths events named, and whether it is patched.
    // Every collection must equal a full one without a cache, and a patch's changes must be
    // what a diff from the last collection gives.
    let mut check = |file: &str, text: String, named: &[&str], patched: bool| {
        p.write(file, &text);
        let changed = Some(named.iter().map(PathBuf::from).collect());
        let got = collect_with(&domains, &sources, &mut cache, &changed);
        let fresh = collect(&domains, &sources);
        assert_eq!(got.content, fresh.content, "{file}: {text}");
        assert_eq!(got.paths, fresh.paths, "{file}: {text}");
        assert_eq!(got.patched(), patched, "{file}: {text}");
        if let Some((from, changes)) = &got.since {
            assert!(
                Arc::ptr_eq(from, &last),
                "{file}: patched from another content"
            );
            let want = proto::delta::diff(&last, &got.content);
            assert_eq!(**changes, want, "{file}: {text}");
        }
        // Nothing here holds the content two collections back: a patch that changes something
        // moves its entries, when the cache kept it.
        let changes = got.content != last;
        assert_eq!(got.in_place, patched && changes && prev, "{file}: {text}");
        moved += usize::from(got.in_place);
        if !patched {
            prev = false;
        } else if changes {
            prev = true;
        }
        last = got.content;
    };
    let staff = format!("staff: :include:{list}, boss@remote.net\n");
    let a_with = |rest: &str| format!("{staff}{rest}dup: a@remote.net\n# end\n");
    // A changed value, a renamed alias, an unchanged content (a comment).
    check(
        "aliases",
        a_with("x: q@remote.net\ny: s@remote.net\n"),
        &[&a],
        true,
    );
    check(
        "aliases",
        a_with("x: q@remote.net\nw: s@remote.net\n"),
        &[&a],
        true,
    );
    check(
        "aliases",
        a_with("x: q@remote.net\nw: s@remote.net\n").replace("# end", "# fin"),
        &[&a],
        true,
    );
    // No event at all: the aliases files are read anyway.
    check(
        "aliases",
        a_with("x: p@remote.net\nw: s@remote.net\n"),
        &[],
        true,
    );
    // A name defined in the other file: it is a duplicate now.
    check(
        "aliases",
        a_with("z: p@remote.net\nw: s@remote.net\n"),
        &[&a],
        false,
    );
    check(
        "aliases",
        a_with("x: p@remote.net\nw: s@remote.net\n"),
        &[&a],
        false,
    );
    // A duplicate's value.
    check(
        "aliases",
        a_with("x: p@remote.net\nw: s@remote.net\n").replace("dup: a@", "dup: c@"),
        &[&a],
        false,
    );
    // A line more: every later line number moves.
    check(
        "aliases",
        a_with("x: p@remote.net\nw: s@remote.net\nv: u@remote.net\n"),
        &[&a],
        false,
    );
    // A malformed entry (a diagnostic), and back.
    check(
        "aliases",
        a_with("x: p@remote.net\nw: s@remote.net\nv u@remote.net\n"),
        &[&a],
        false,
    );
    check(
        "aliases",
        a_with("x: p@remote.net\nw: s@remote.net\nv: u@remote.net\n"),
        &[&a],
        false,
    );
    // The other members of a list with an include, then a different include.
    let a_staff = |s: &str| {
        format!("{s}x: p@remote.net\nw: s@remote.net\nv: u@remote.net\ndup: a@remote.net\n# end\n")
    };
    check(
        "aliases",
        a_staff(&format!("staff: :include:{list}, chief@remote.net\n")),
        &[&a],
        true,
    );
    check(
        "aliases",
        a_staff(&format!("staff: :include:{other}, chief@remote.net\n")),
        &[&a],
        false,
    );
    // A line inserted above entries that are defined once: they move, and back.
    let staff_line = format!("staff: :include:{other}, chief@remote.net\n");
    check(
        "aliases",
        a_staff(&format!("{staff_line}u: k@remote.net\n")),
        &[&a],
        false,
    );
    check("aliases", a_staff(&staff_line), &[&a], false);
    // The other file; then an alias moved from one file to the other.
    check(
        "aliases.more",
        "dup: b@remote.net\nz: t2@remote.net\n".into(),
        &[&b],
        true,
    );
    p.write(
        "aliases",
        &a_staff(&format!("staff: :include:{other}, chief@remote.net\n")).replace("w: s@", "m: s@"),
    );
    check(
        "aliases.more",
        "dup: b@remote.net\nw: t2@remote.net\n".into(),
        &[&a, &b],
        true,
    );
    // Events that name another collected path, or a directory above one.
    check("lists/other", "o2@x.net\n".into(), &[&a, &other], false);
    check(
        "aliases.more",
        "dup: b@remote.net\nw: t3@remote.net\n".into(),
        &[&p.path("passwd")],
        false,
    );
    check(
        "aliases.more",
        "dup: b@remote.net\nw: t4@remote.net\n".into(),
        &[&p.path("")],
        false,
    );
    // A file an editor wrote and renamed: its temporary name is named too.
    let tmp = p.path("aliases.more.tmp");
    check(
        "aliases.more",
        "dup: b@remote.net\nw: t5@remote.net\n".into(),
        &[&tmp, &b],
        true,
    );
    // The table reaches the in-place patch several times.
    assert!(moved >= 3, "{moved} in-place patches");
}

#[test]
fn a_read_is_whole_only_if_the_file_stood_still() {
    use std::time::{Duration, SystemTime};
    let t = Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000));
    let later = Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_001));
    let check = |before: Stamp, got: u64, after: Stamp, expected: bool| {
        assert_eq!(
            whole(before, got, after),
            expected,
            "{before:?} {got} {after:?}"
        );
    };
    check((100, t), 100, (100, t), true);
    // Written to during the read: it grew, or was rewritten to the same size.
    check((40, t), 60, (100, t), false);
    check((100, t), 100, (100, later), false);
    // Truncated and not written back yet when the size was taken the second time.
    check((100, t), 100, (0, t), false);
    // Fewer bytes than the size says (the file grew between the read and the stat).
    check((100, t), 60, (100, t), false);
    check((0, None), 0, (0, None), true);
    // A file that stands still reads whole, at once.
    let p = Primary::new();
    let path = p.write("aliases", "a: b@remote.net\n");
    assert_eq!(read_whole(Path::new(&path)).unwrap(), b"a: b@remote.net\n");
    assert!(read_whole(Path::new(&p.path("none"))).is_err());
}

#[test]
fn the_path_set_is_the_set_of_paths_in_their_own_order() {
    fn check(paths: &[&str]) {
        let list: Vec<PathBuf> = paths.iter().map(PathBuf::from).collect();
        let want: BTreeSet<PathBuf> = list.iter().cloned().collect();
        let got = path_set(list);
        assert_eq!(got, want, "{paths:?}");
        assert!(got.iter().zip(got.iter().skip(1)).all(|(a, b)| a < b));
    }
    check(&[]);
    check(&["/etc/aliases"]);
    // `-` and `.` sort below `/` as bytes, above it as components.
    check(&[
        "/a-b", "/a/b", "/a", "/a.b", "/a/b/c", "/a/b-c", "/a/b/c", "/a0", "/",
    ]);
    check(&[
        "/home/user10/.forward",
        "/home/user1/.forward",
        "/home/user1/.procmailrc",
    ]);
    // Spelled differently, the same path: the set still decides, by component.
    check(&["/x//y", "/x/y", "/x/./y", "/x/y/", "/x"]);
    let many: Vec<String> = (0..3000)
        .map(|i| {
            format!(
                "/h/u{}/{}",
                i % 1000,
                [".forward", ".procmailrc", "x-y"][i % 3]
            )
        })
        .collect();
    check(&many.iter().map(String::as_str).collect::<Vec<_>>());
}
