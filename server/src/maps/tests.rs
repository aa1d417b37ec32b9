//! Installing generations: the live set switches whole, a failed prepare changes nothing, old
//! generations are cleaned up.

use super::*;
use std::collections::BTreeMap;

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
    install(dir, &set("one"), |_| Ok(())).unwrap();
    assert!(is_current(dir, &set("one")));
    assert_eq!(
        read_live(dir, "postfix/virtual"),
        "# one\npostfix/virtual one\n"
    );
    assert_eq!(read_live(dir, "exim/forward"), "# one\nexim/forward one\n");
    for tag in ["two", "three", "four"] {
        install(dir, &set(tag), |_| Ok(())).unwrap();
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
    install(dir, &set("old"), |_| Ok(())).unwrap();
    let seen = std::cell::RefCell::new(None);
    let e = install(dir, &set("new"), |gen_dir| {
        *seen.borrow_mut() = Some(fs::read_to_string(gen_dir.join("postfix/virtual")).unwrap());
        Err("postmap: fatal".into())
    })
    .unwrap_err();
    assert!(e.to_string().contains("postmap: fatal"));
    assert_eq!(
        seen.borrow().as_deref(),
        Some("# new\npostfix/virtual new\n"),
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
    let e = install(&file, &set("x"), |_| Ok(())).unwrap_err();
    assert!(e.to_string().contains("not-a-dir"), "{e}");
}
