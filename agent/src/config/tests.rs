//! Configuration loading: defaults, relative paths, and every problem listed at once.

use super::*;
use std::os::unix::fs::PermissionsExt;

fn write(dir: &Path, name: &str, text: &str, mode: u32) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    p
}

fn check(toml: &str, expected_problems: &[&str]) -> Option<Config> {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "good.key",
        "0123456789abcdef0123456789abcdef\n",
        0o600,
    );
    write(
        dir.path(),
        "open.key",
        "0123456789abcdef0123456789abcdef\n",
        0o644,
    );
    write(dir.path(), "short.key", "abc\n", 0o600);
    let path = write(dir.path(), "agent.toml", toml, 0o644);
    match Config::load_for_push(&path) {
        Ok(c) => {
            assert!(
                expected_problems.is_empty(),
                "expected problems {expected_problems:?}"
            );
            Some(c)
        }
        Err(e) => {
            let text = e.to_string();
            assert_eq!(
                e.problems.len(),
                expected_count(expected_problems),
                "{text}"
            );
            for p in expected_problems {
                assert!(text.contains(p), "{p:?} not in {text}");
            }
            None
        }
    }
}

#[test]
fn minimal_config_takes_defaults_and_resolves_paths() {
    let c = check(
        "agent_id = \"mx1\"\ndomains = [\"Example.org\"]\nstate_dir = \"state\"\n[sources]\naliases = [\"aliases\", \"/etc/aliases\"]\n",
        &[],
    )
    .unwrap();
    assert!(c.state_dir.is_absolute() && c.state_dir.ends_with("state"));
    assert!(c.sources.aliases[0].starts_with('/') && c.sources.aliases[0].ends_with("/aliases"));
    assert_eq!(c.sources.aliases[1], "/etc/aliases");
    assert_eq!(c.sources.passwd, "/etc/passwd");
    assert!(c.sources.markers);
    assert_eq!(
        (
            c.timing.debounce_ms,
            c.timing.heartbeat_secs,
            c.timing.rescan_secs
        ),
        (50, 30, 300)
    );
    assert_eq!(c.domains(), ["example.org"]);
    assert!(c.receivers.is_empty());
}

#[test]
fn unknown_keys_are_refused() {
    check(
        "agent_id = \"mx1\"\ndomains = [\"example.org\"]\nstate_dir = \"s\"\n[sources]\nalias = []\n",
        &["unknown field `alias`"],
    );
    check(
        "agent_id = \"mx1\"\ndomains = [\"example.org\"]\nstate_dir = \"s\"\ncolour = 1\n[sources]\n",
        &["unknown field `colour`"],
    );
}

#[test]
fn missing_required_keys_are_named() {
    check(
        "domains = [\"example.org\"]\nstate_dir = \"s\"\n[sources]\n",
        &["missing field `agent_id`"],
    );
    check(
        "agent_id = \"mx1\"\ndomains = [\"example.org\"]\nstate_dir = \"s\"\n",
        &["missing field `sources`"],
    );
}

#[test]
fn every_problem_is_listed_at_once() {
    check(
        "agent_id = \"mx 1\"\ndomains = [\"not a domain\"]\nstate_dir = \"s\"\n[sources]\n[timing]\nheartbeat_secs = 0\n\
         [[receivers]]\nurl = \"ftp://x\"\nkey_file = \"open.key\"\n\
         [[receivers]]\nurl = \"http://127.0.0.1:1\"\nkey_file = \"short.key\"\nca_file = \"missing.pem\"\n\
         [[receivers]]\nurl = \"https://mx2.example.org\"\nkey_file = \"absent.key\"\n\
         [[receivers]]\nurl = \"https://mx3.example.org\"\nkey_file = \"good.key\"\n",
        &[
            "agent_id \"mx 1\"",
            "\"not a domain\" is not a domain name",
            "heartbeat_secs",
            "receivers[0].url",
            "receivers[0].key_file",
            "mode 0644",
            "receivers[1].key_file",
            "at least 32",
            "receivers[1].ca_file",
            "receivers[2].key_file",
        ],
    );
}

/// Expected needles that only qualify another problem (the mode of a key file, the minimum
/// length) do not count as problems of their own.
fn expected_count(needles: &[&str]) -> usize {
    needles
        .iter()
        .filter(|n| !matches!(**n, "mode 0644" | "at least 32"))
        .count()
}

#[test]
fn plan_does_not_need_the_receivers_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "agent.toml",
        "agent_id = \"mx1\"\ndomains = [\"example.org\"]\nstate_dir = \"s\"\n[sources]\n[[receivers]]\nurl = \"http://127.0.0.1:1\"\nkey_file = \"absent.key\"\n",
        0o644,
    );
    assert!(Config::load(&path).is_ok());
    let err = Config::load_for_push(&path).unwrap_err();
    assert_eq!(err.problems.len(), 1, "{err}");
}
