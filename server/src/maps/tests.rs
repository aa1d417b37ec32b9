//! Installing generations: the live set switches whole, a failed prepare changes nothing, old
//! generations are cleaned up.

use super::*;
use crate::render::BANNER;
use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;

fn set(tag: &str) -> Rendered {
    let mut part = crate::render::AgentPart::default();
    let mut names = Vec::new();
    for f in crate::render::POSTFIX
        .iter()
        .chain(crate::render::EXIM.iter())
    {
        part.files.insert(f, format!("{f} {tag}\n").into());
        names.push(*f);
    }
    names.sort_unstable();
    Rendered {
        names,
        header: format!("# {tag}\n"),
        parts: vec![std::sync::Arc::new(part)],
        deferred: Vec::new(),
        counts: BTreeMap::new(),
    }
}

/// The defaults: a CDB table beside each map, no group.
const OPTS: Options = Options {
    cdb: true,
    group: None,
};

fn read_live(dir: &Path, name: &str) -> String {
    fs::read_to_string(dir.join(name)).unwrap_or_default()
}

#[test]
fn generations_switch_whole_and_old_ones_are_removed() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    assert!(!is_current(dir, &set("one"), &OPTS));
    install(dir, &set("one"), &OPTS, |_| Ok(()), &mut Last::default()).unwrap();
    assert!(is_current(dir, &set("one"), &OPTS));
    // The address files start with the banner alone; the small ones name the versions.
    assert_eq!(
        read_live(dir, "postfix/virtual"),
        format!("{BANNER}postfix/virtual one\n")
    );
    assert_eq!(
        read_live(dir, "exim/forward"),
        format!("{BANNER}exim/forward one\n")
    );
    assert_eq!(
        read_live(dir, "postfix/relay_domains"),
        "# one\npostfix/relay_domains one\n"
    );
    for tag in ["two", "three", "four"] {
        install(dir, &set(tag), &OPTS, |_| Ok(()), &mut Last::default()).unwrap();
        assert!(is_current(dir, &set(tag), &OPTS));
    }
    // The live generation is kept; the others go to the trash, which another thread empties.
    assert_eq!(fs::read_dir(dir.join(".gen")).unwrap().count(), 1);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let left = || fs::read_dir(dir.join(".trash")).unwrap().count();
    while left() > 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert_eq!(left(), 0, "the trash is emptied");
    assert!(
        fs::symlink_metadata(dir.join("postfix"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
}

#[test]
fn a_failed_prepare_leaves_the_old_set_live() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    install(dir, &set("old"), &OPTS, |_| Ok(()), &mut Last::default()).unwrap();
    let seen = std::cell::RefCell::new(None);
    let e = install(
        dir,
        &set("new"),
        &OPTS,
        |gen_dir| {
            *seen.borrow_mut() = Some(fs::read_to_string(gen_dir.join("postfix/virtual")).unwrap());
            Err("postmap: fatal".into())
        },
        &mut Last::default(),
    )
    .unwrap_err();
    assert!(e.to_string().contains("postmap: fatal"));
    assert_eq!(
        seen.borrow().as_deref(),
        Some(format!("{BANNER}postfix/virtual new\n").as_str()),
        "prepare runs in the new generation"
    );
    assert!(is_current(dir, &set("old"), &OPTS));
    assert_eq!(
        fs::read_dir(dir.join(".gen")).unwrap().count(),
        1,
        "the failed generation is removed"
    );
}

#[test]
fn an_unwritable_output_directory_is_an_error_not_a_panic() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("not-a-dir");
    fs::write(&file, "").unwrap();
    let e = install(&file, &set("x"), &OPTS, |_| Ok(()), &mut Last::default()).unwrap_err();
    assert!(e.to_string().contains("not-a-dir"), "{e}");
}

/// `set`, with `changed`'s part new and every other file's part shared with `base`.
fn changed(base: &Rendered, tag: &str, changed: &str) -> Rendered {
    let mut part = crate::render::AgentPart::default();
    for (f, text) in &base.parts[0].files {
        let text = if *f == changed {
            format!("{f} {tag}\n").into()
        } else {
            text.clone()
        };
        part.files.insert(f, text);
    }
    Rendered {
        header: format!("# {tag}\n"),
        parts: vec![std::sync::Arc::new(part)],
        ..base.clone()
    }
}

#[test]
fn unchanged_address_files_are_linked_from_the_live_generation() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let ino = |gen_dir: &Path, name: &str| fs::metadata(gen_dir.join(name)).unwrap().ino();
    let mut last = Last::default();
    let one = set("one");
    let g1 = install(dir, &one, &OPTS, |_| Ok(()), &mut last).unwrap();
    // The replaced generation goes at once: its inodes are taken before.
    let files = |set: &Rendered| -> Vec<String> {
        (set.names.iter())
            .flat_map(|n| [n.to_string(), cdb_name(n)])
            .collect()
    };
    let first: Vec<u64> = files(&one).iter().map(|f| ino(&g1, f)).collect();
    let two = changed(&one, "two", "postfix/virtual");
    let g2 = install(dir, &two, &OPTS, |_| Ok(()), &mut last).unwrap();
    assert!(!g1.exists(), "the replaced generation is gone");
    for (file, old) in files(&two).iter().zip(first) {
        let name = file.trim_end_matches(".cdb");
        if !file.ends_with(".cdb") {
            assert_eq!(fs::read(dir.join(name)).unwrap(), two.file(name), "{name}");
        }
        // Linked, with its table: an address file whose pieces are the same. Written: the
        // changed one, and the small files, whose header names the versions.
        let linked = !name.ends_with("virtual") && !crate::render::carries_versions(name);
        assert_eq!(old == ino(&g2, file), linked, "{file}");
    }
    assert!(is_current(dir, &two, &OPTS));
    // An install the record does not know of (another process, a restart) makes the recorded
    // generation no longer live: nothing is linked from it.
    // (Its files are held open, so that their inodes are not reused while they are compared.)
    let held: Vec<(u64, File)> = (two.names.iter())
        .map(|n| (ino(&g2, n), File::open(g2.join(n)).unwrap()))
        .collect();
    install(dir, &set("three"), &OPTS, |_| Ok(()), &mut Last::default()).unwrap();
    let four = changed(&two, "four", "exim/forward");
    let g4 = install(dir, &four, &OPTS, |_| Ok(()), &mut last).unwrap();
    for (name, (old, _)) in four.names.iter().zip(&held) {
        assert_eq!(fs::read(dir.join(name)).unwrap(), four.file(name), "{name}");
        assert_ne!(*old, ino(&g4, name), "{name}");
    }
    drop(held);
    // A failed install leaves the record as it was: the next one links from the live set.
    let five = changed(&four, "five", "postfix/virtual");
    assert!(install(dir, &five, &OPTS, |_| Err("no".into()), &mut last).is_err());
    let kept = ino(&g4, "postfix/relay_recipients");
    let g5 = install(dir, &five, &OPTS, |_| Ok(()), &mut last).unwrap();
    assert_eq!(kept, ino(&g5, "postfix/relay_recipients"));
    assert!(is_current(dir, &five, &OPTS));
}

/// What the CDB table at `path` holds, in file order.
fn table(path: &Path) -> Vec<(String, String)> {
    let db = cdb2::CDB::open(path).unwrap();
    db.iter()
        .map(|r| {
            let (k, v) = r.unwrap();
            (String::from_utf8(k).unwrap(), String::from_utf8(v).unwrap())
        })
        .collect()
}

#[test]
fn each_map_has_its_table_with_the_keys_its_mta_looks_up() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut part = crate::render::AgentPart::default();
    let lines = [
        (
            "postfix/virtual",
            "Fwd@example.org a@remote.net, b@remote.net\nz@example.org c@remote.net\n",
        ),
        (
            "postfix/relay_recipients",
            "Fwd@example.org OK\nz@example.org OK\n",
        ),
        ("postfix/relay_domains", "example.org\n"),
        (
            "postfix/transport",
            "example.org relay:[mx1.example.org]:25\n",
        ),
        (
            "exim/forward",
            "Fwd@example.org: a@remote.net, b@remote.net\n",
        ),
        ("exim/recipients", "Fwd@example.org\nz@example.org\n"),
        ("exim/domains", "example.org\n"),
        ("exim/routes", "example.org: mx1.example.org::25\n"),
    ];
    for (name, text) in lines {
        part.files.insert(name, text.to_string().into());
    }
    let mut names: Vec<&'static str> = lines.iter().map(|(n, _)| *n).collect();
    names.sort_unstable();
    let set = Rendered {
        names,
        header: "# h\n".into(),
        parts: vec![std::sync::Arc::new(part)],
        deferred: Vec::new(),
        counts: BTreeMap::new(),
    };
    install(dir, &set, &OPTS, |_| Ok(()), &mut Last::default()).unwrap();
    let check = |name: &str, expected: &[(&str, &str)]| {
        let got = table(&dir.join(cdb_name(name)));
        let expected: Vec<(String, String)> = (expected.iter())
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(got, expected, "{name}");
    };
    check(
        "postfix/virtual",
        &[
            ("fwd@example.org", "a@remote.net, b@remote.net"),
            ("z@example.org", "c@remote.net"),
        ],
    );
    check(
        "postfix/relay_recipients",
        &[("fwd@example.org", "OK"), ("z@example.org", "OK")],
    );
    check("postfix/relay_domains", &[("example.org", "OK")]);
    check(
        "postfix/transport",
        &[("example.org", "relay:[mx1.example.org]:25")],
    );
    check(
        "exim/forward",
        &[("fwd@example.org", "a@remote.net, b@remote.net")],
    );
    check(
        "exim/recipients",
        &[("fwd@example.org", ""), ("z@example.org", "")],
    );
    check("exim/domains", &[("example.org", "")]);
    check("exim/routes", &[("example.org", "mx1.example.org::25")]);
    // Without tables, none is written, and a set with tables is not current for it.
    assert!(!is_current(
        dir,
        &set,
        &Options {
            cdb: false,
            group: None
        }
    ));
    install(
        dir,
        &set,
        &Options {
            cdb: false,
            group: None,
        },
        |_| Ok(()),
        &mut Last::default(),
    )
    .unwrap();
    assert!(!dir.join("postfix/virtual.cdb").exists());
    assert!(is_current(
        dir,
        &set,
        &Options {
            cdb: false,
            group: None
        }
    ));
}

#[test]
fn modes_are_set_whatever_the_umask() {
    let tmp = tempfile::tempdir().unwrap();
    // The umask of the shipped unit (process-wide while this test runs: it only makes what
    // other tests create more private).
    let old = rustix::process::umask(rustix::fs::Mode::from_bits_truncate(0o077));
    let gid = rustix::process::getgid().as_raw();
    let result = std::panic::catch_unwind(|| {
        // (options, directory mode, file mode, group)
        let check = |opts: Options, dir_mode: u32, file_mode: u32| {
            let dir = tmp.path().join(format!("{dir_mode:o}"));
            install(&dir, &set("one"), &opts, |_| Ok(()), &mut Last::default()).unwrap();
            let cur = current(&dir).unwrap();
            let mut dirs = vec![dir.clone(), dir.join(".gen"), cur.clone()];
            dirs.extend(["postfix", "exim"].map(|d| cur.join(d)));
            for d in dirs {
                let m = fs::metadata(&d).unwrap();
                assert_eq!(m.mode() & 0o777, dir_mode, "{}", d.display());
                if let Some(g) = opts.group {
                    assert_eq!(m.gid(), g, "{}", d.display());
                }
            }
            for name in set("one").names {
                for f in [name.to_string(), cdb_name(name)] {
                    let m = fs::metadata(cur.join(&f)).unwrap();
                    assert_eq!(m.mode() & 0o777, file_mode, "{f}");
                    if let Some(g) = opts.group {
                        assert_eq!(m.gid(), g, "{f}");
                    }
                }
            }
            assert!(is_current(&dir, &set("one"), &opts));
        };
        check(OPTS, 0o755, 0o644);
        check(
            Options {
                cdb: true,
                group: Some(gid),
            },
            0o750,
            0o640,
        );
    });
    rustix::process::umask(old);
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}
