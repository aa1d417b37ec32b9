//! House rules checked by reading the tree: module docs, whitespace, banned macros, the
//! dependency boundary of `proto` (no I/O, no runtime), and the module import direction.

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if path.is_dir() {
            if !matches!(name.as_str(), "target" | ".git" | "fuzz") {
                rust_files(&path, out);
            }
        } else if name.ends_with(".rs") {
            out.push(path);
        }
    }
}

fn all_rust_files() -> Vec<PathBuf> {
    let mut files = Vec::new();
    rust_files(&tests::workspace(), &mut files);
    assert!(files.len() > 10, "found only {} .rs files", files.len());
    files
}

#[test]
fn every_rust_file_starts_with_a_module_doc() {
    let bad: Vec<_> = all_rust_files()
        .into_iter()
        .filter(|f| !std::fs::read_to_string(f).unwrap().starts_with("//!"))
        .collect();
    assert!(bad.is_empty(), "files without a leading //! doc: {bad:?}");
}

#[test]
fn no_trailing_whitespace_and_no_banned_macros() {
    let banned = [
        concat!("should", "_panic"),
        concat!("dbg", "!("),
        concat!("todo", "!("),
        concat!("unimplemented", "!("),
    ];
    let mut problems = Vec::new();
    for f in all_rust_files() {
        for (i, line) in std::fs::read_to_string(&f).unwrap().lines().enumerate() {
            if line.ends_with(' ') || line.ends_with('\t') {
                problems.push(format!("{}:{}: trailing whitespace", f.display(), i + 1));
            }
            for b in banned {
                if line.contains(b) {
                    problems.push(format!("{}:{}: {b}", f.display(), i + 1));
                }
            }
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
}

#[test]
fn proto_depends_on_nothing_that_does_io() {
    let manifest = std::fs::read_to_string(tests::workspace().join("proto/Cargo.toml")).unwrap();
    let deps = manifest
        .split("[dependencies]")
        .nth(1)
        .unwrap()
        .split("\n[")
        .next()
        .unwrap();
    // No I/O, async, process, network or logging crate: proto is computed, not run.
    let forbidden = [
        "tokio",
        "tokio-util",
        "futures",
        "async-trait",
        "mio",
        "reqwest",
        "hyper",
        "hyper-util",
        "axum",
        "tower",
        "rusqlite",
        "notify",
        "rustix",
        "libc",
        "nix",
        "tempfile",
        "tracing",
        "tracing-subscriber",
        "sd-notify",
        "rustls",
        "zstd",
        "flate2",
    ];
    // Test support for other crates' tests, only with the `testkit` feature.
    let optional = ["proptest"];
    for line in deps
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
    {
        let name = line.split(['.', '=', ' ']).next().unwrap();
        assert!(
            !forbidden.contains(&name),
            "proto may not depend on {name}: {line}"
        );
        assert!(
            !optional.contains(&name) || line.contains("optional = true"),
            "{name} is for the testkit feature only: {line}"
        );
    }
    assert!(
        manifest.contains("testkit = [\"dep:proptest\"]"),
        "proptest is for the testkit feature only"
    );
}

/// The module import direction: (file, what it may not name). Lower layers never reach up:
/// the snapshot model knows nothing of deltas or plans, ingest nothing of HTTP.
#[test]
fn modules_import_downwards_only() {
    let check = |file: &str, forbidden: &[&str]| {
        let text = std::fs::read_to_string(tests::workspace().join(file)).unwrap();
        let code: String = (text.lines())
            .filter(|l| !l.trim_start().starts_with("//"))
            .collect::<Vec<_>>()
            .join("\n");
        for f in forbidden {
            assert!(!code.contains(f), "{file} names {f}");
        }
    };
    // A module and every file under it but its tests, so that a file split off later is held
    // to the same rule.
    let module = |file: &str| -> Vec<String> {
        let root = tests::workspace();
        let mut files = vec![file.to_string()];
        let dir = root.join(file.trim_end_matches(".rs"));
        let mut under = Vec::new();
        if dir.is_dir() {
            rust_files(&dir, &mut under);
        }
        under.sort();
        files.extend(
            (under.iter())
                .filter(|p| p.file_name().is_some_and(|n| n != "tests.rs"))
                .map(|p| p.strip_prefix(&root).unwrap().display().to_string()),
        );
        files
    };
    for f in module("proto/src/snapshot.rs") {
        check(&f, &["crate::delta", "crate::plan"]);
    }
    let ingest = module("server/src/ingest.rs");
    assert!(ingest.len() > 4, "{ingest:?}");
    for f in ingest {
        check(&f, &["crate::api", "axum", "StatusCode"]);
    }
    for f in module("server/src/render.rs") {
        check(&f, &["crate::ingest", "crate::api", "crate::maps"]);
    }
    for f in module("server/src/maps.rs") {
        check(&f, &["crate::ingest", "crate::api"]);
    }
    check(
        "server/src/fresh.rs",
        &["crate::api", "crate::ingest", "api::"],
    );
    // What start and reload read back sits below ingest; a reload re-renders through ingest,
    // never through HTTP.
    check(
        "server/src/restore.rs",
        &["crate::api", "crate::ingest", "crate::render", "axum"],
    );
    check(
        "server/src/reload.rs",
        &["crate::api", "axum", "StatusCode"],
    );
}

/// Unit tests sit in a `tests.rs` beside their module, never inline.
#[test]
fn unit_tests_live_in_their_own_file() {
    let inline: Vec<_> = all_rust_files()
        .into_iter()
        .filter(|p| p.file_name().is_some_and(|n| n != "tests.rs"))
        .filter(|p| {
            let text = std::fs::read_to_string(p).unwrap();
            text.lines().any(|l| l.trim_end() == "mod tests {")
        })
        .collect();
    assert!(inline.is_empty(), "inline test modules: {inline:?}");
}
