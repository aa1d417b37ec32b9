//! What the packages ship beside the binaries, made by the hidden `generate` command: a man
//! page for each binary and each of its subcommands, completions that know the subcommands,
//! and a configuration reference (section 5) that lists exactly the keys the shipped example
//! configuration writes, so neither can drift from the config structs.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

/// Runs `BIN generate DIR` and returns the files it wrote.
fn generate(bin: &str, dir: &Path) -> BTreeSet<String> {
    let out = Command::new(tests::bin(bin))
        .arg("generate")
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{bin} generate: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

/// The subcommands `BIN --help` lists, without `help`.
fn subcommands(bin: &str) -> Vec<String> {
    let out = Command::new(tests::bin(bin))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    help.lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .map(str::to_string)
        .collect()
}

/// `table.key` for each key of a TOML file, commented-out examples included (`# key = ...`).
fn example_keys(text: &str) -> BTreeSet<String> {
    let mut table = String::new();
    let mut keys = BTreeSet::new();
    for line in text.lines() {
        let line = line.trim_start_matches(['#', ' ']);
        if line.starts_with('[') {
            table = line.trim_matches(['[', ']']).to_string();
        } else if let Some((key, _)) = line.split_once(" = ")
            && !key.is_empty()
            && key.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
        {
            keys.insert(qualified(&table, key));
        }
    }
    keys
}

/// `table.key` for each key the reference page describes.
fn reference_keys(page: &str) -> BTreeSet<String> {
    let mut table = String::new();
    let mut keys = BTreeSet::new();
    for line in page.lines() {
        if let Some(h) = line.strip_prefix(".SH ") {
            table = h.trim_matches('"').trim_matches(['[', ']']).to_string();
            if table == "KEYS" {
                table.clear();
            }
        } else if let Some(rest) = line.strip_prefix("\\fB")
            && let Some((key, _)) = rest.split_once("\\fR = ")
        {
            keys.insert(qualified(&table, key));
        }
    }
    keys
}

fn qualified(table: &str, key: &str) -> String {
    if table.is_empty() {
        key.to_string()
    } else {
        format!("{table}.{key}")
    }
}

#[test]
fn man_pages_completions_and_the_config_reference_match_the_binaries() {
    let check = |bin: &str, example: &str, expected_rows: &[&str]| {
        let dir = tempfile::tempdir().unwrap();
        let files = generate(bin, dir.path());
        let subs = subcommands(bin);
        assert!(subs.len() >= 4, "{bin} --help lists {subs:?}");
        for sub in &subs {
            assert!(
                files.contains(&format!("{bin}-{sub}.1")),
                "{bin}: no page for {sub} in {files:?}"
            );
        }
        let main = std::fs::read_to_string(dir.path().join(format!("{bin}.1"))).unwrap();
        let bash = std::fs::read_to_string(dir.path().join(format!("{bin}.bash"))).unwrap();
        for sub in &subs {
            let page = format!("{bin}-{sub}(1)").replace('-', "\\-");
            assert!(main.contains(&page), "{bin}.1 does not name {page}");
            assert!(bash.contains(sub.as_str()), "bash completion lacks {sub}");
        }
        assert!(
            !bash.contains("generate"),
            "the hidden command is completed"
        );
        for f in [format!("_{bin}"), format!("{bin}.fish")] {
            assert!(files.contains(&f), "{bin}: no {f} in {files:?}");
        }

        let page = std::fs::read_to_string(dir.path().join(format!("{bin}.toml.5"))).unwrap();
        let documented = reference_keys(&page);
        let shipped = example_keys(
            &std::fs::read_to_string(tests::workspace().join("deploy/examples").join(example))
                .unwrap(),
        );
        assert_eq!(
            documented, shipped,
            "{bin}: keys in the reference (left) and in deploy/examples/{example} (right)"
        );
        for row in expected_rows {
            assert!(page.contains(row), "{bin}.toml.5 lacks {row:?}");
        }
    };
    check(
        "mxsync-server",
        "server.toml",
        &[
            "\\fBlisten\\fR = \\fIstring\\fR (required)",
            "\\fBstale_after_secs\\fR = \\fIinteger\\fR (default: 300)",
            "\\fBformats\\fR = \\fIarray of string\\fR (default: [\"postfix\", \"exim\"])",
            ".SH \"[[agents]]\"",
            "\\fB\"defer\"\\fR",
        ],
    );
    check(
        "mxsync-agent",
        "agent.toml",
        &[
            "\\fBagent_id\\fR = \\fIstring\\fR (required)",
            "\\fBheartbeat_secs\\fR = \\fIinteger\\fR (default: 30)",
            "\\fBmarkers\\fR = \\fIboolean\\fR (default: true)",
            ".SH \"[[receivers]]\"",
        ],
    );
}
