//! Server configuration: the example shape, and every problem listed at once.

use super::*;
use crate::testkit::{config_text, load, write_secret};

#[test]
fn a_minimal_config_loads_with_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let c = load(dir.path(), "");
    assert_eq!(c.listen.port(), 0);
    assert_eq!(c.config.freshness.warn_after_secs, 90);
    assert_eq!(c.config.guard.max_shrink_percent, 20);
    assert_eq!(c.config.output.formats, ["postfix", "exim"]);
    assert!(c.config.output.dir.is_absolute());
    assert_eq!(c.keys["mx1"].len(), 36);
    assert_eq!(c.domain_agent["example.com"], "mx1");
    assert!(c.read_token.is_some() && c.status_token.is_none());
}

#[test]
fn every_problem_is_listed() {
    let dir = tempfile::tempdir().unwrap();
    write_secret(
        &dir.path().join("mx1.key"),
        "0123456789abcdef0123456789abcdef",
    );
    write_secret(&dir.path().join("read.token"), "short");
    let text = config_text(
        "formats = [\"sendmail\"]\n[freshness]\nwarn_after_secs = 100\nstale_after_secs = 10\n",
    )
    .replace(
        "primary = \"[127.0.0.1]:2525\"",
        "primary = \"mx1.example.org\"",
    ) + "[[agents]]\nid = \"mx2\"\nkey_file = \"none.key\"\ndomains = [\"example.org\"]\nprimary = \"[h]:99999\"\n";
    std::fs::write(dir.path().join("server.toml"), text).unwrap();
    let e = Loaded::load(&dir.path().join("server.toml")).unwrap_err();
    let msg = e.to_string();
    for needle in [
        "read_token_file",
        "agents[0] (\"mx1\").primary",
        "agents[1] (\"mx2\").key_file",
        "already served by agent \"mx1\"",
        "agents[1] (\"mx2\").primary",
        "freshness",
        "\"sendmail\"",
    ] {
        assert!(msg.contains(needle), "{needle:?} missing from {msg}");
    }
    assert_eq!(e.problems.len(), 7, "{msg}");
}

#[test]
fn unknown_keys_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    write_secret(
        &dir.path().join("mx1.key"),
        "0123456789abcdef0123456789abcdef",
    );
    write_secret(
        &dir.path().join("read.token"),
        "0123456789abcdef0123456789abcdef",
    );
    std::fs::write(
        dir.path().join("server.toml"),
        config_text("colour = \"blue\"\n"),
    )
    .unwrap();
    let e = Loaded::load(&dir.path().join("server.toml")).unwrap_err();
    assert!(e.to_string().contains("unknown field `colour`"), "{e}");
}
