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
        counts: BTreeMap::new(),
    }
}

fn read_live(dir: &Path, name: &str) -> String {
    fs::read_to_string(dir.join(name)).unwrap_or_default()
}

#[test]
fn generations_switch_whole_and_old_ones_are_removed() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    assert!(!is_current(dir, &set("one")));
    install(dir, &set("one"), |_| Ok(()), &mut Last::default()).unwrap();
    assert!(is_current(dir, &set("one")));
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
        install(dir, &set(tag), |_| Ok(()), &mut Last::default()).unwrap();
        assert!(is_current(dir, &set(tag)));
    }
    // The live generation and the one before it are kept; the others go to the trash, which
    // another thread empties.
    assert_eq!(fs::read_dir(dir.join(".gen")).unwrap().count(), 2);
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
    install(dir, &set("old"), |_| Ok(()), &mut Last::default()).unwrap();
    let seen = std::cell::RefCell::new(None);
    let e = install(
        dir,
        &set("new"),
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
    assert!(is_current(dir, &set("old")));
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
    let e = install(&file, &set("x"), |_| Ok(()), &mut Last::default()).unwrap_err();
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
    let g1 = install(dir, &one, |_| Ok(()), &mut last).unwrap();
    let two = changed(&one, "two", "postfix/virtual");
    let g2 = install(dir, &two, |_| Ok(()), &mut last).unwrap();
    for name in &two.names {
        assert_eq!(fs::read(dir.join(name)).unwrap(), two.file(name), "{name}");
        // Linked: an address file whose pieces are the same. Written: the changed one, and the
        // small files, whose header names the versions.
        let linked = !name.ends_with("virtual") && !crate::render::carries_versions(name);
        assert_eq!(ino(&g1, name) == ino(&g2, name), linked, "{name}");
    }
    assert!(is_current(dir, &two));
    // An install the record does not know of (another process, a restart) makes the recorded
    // generation no longer live: nothing is linked from it.
    let before: Vec<u64> = two.names.iter().map(|n| ino(&g2, n)).collect();
    install(dir, &set("three"), |_| Ok(()), &mut Last::default()).unwrap();
    let four = changed(&two, "four", "exim/forward");
    let g4 = install(dir, &four, |_| Ok(()), &mut last).unwrap();
    for (name, old) in four.names.iter().zip(before) {
        assert_eq!(fs::read(dir.join(name)).unwrap(), four.file(name), "{name}");
        assert_ne!(old, ino(&g4, name), "{name}");
    }
    // A failed install leaves the record as it was: the next one links from the live set.
    let five = changed(&four, "five", "postfix/virtual");
    assert!(install(dir, &five, |_| Err("no".into()), &mut last).is_err());
    let g5 = install(dir, &five, |_| Ok(()), &mut last).unwrap();
    assert_eq!(
        ino(&g4, "postfix/relay_recipients"),
        ino(&g5, "postfix/relay_recipients")
    );
    assert!(is_current(dir, &five));
}
