//! The files operators copy: `deploy/examples/*.toml` must pass `check-config`, and the example
//! primary must plan as its comments say.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Output};

/// Runs `mxsync-agent ARGS` in `dir`.
fn agent(dir: &Path, args: &[&str]) -> Output {
    Command::new(tests::bin("mxsync-agent"))
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap()
}

/// Copies `deploy/examples` to a temporary directory and creates the key files it names.
fn examples_with_keys() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    tests::copy_tree(&tests::workspace().join("deploy/examples"), dir.path()).unwrap();
    tests::write_key(&dir.path().join("keys/mx1.key"), &"k".repeat(64));
    tests::write_key(&dir.path().join("keys/read.token"), &"r".repeat(64));
    dir
}

#[test]
fn agent_example_passes_check_config() {
    let dir = examples_with_keys();
    let out = agent(dir.path(), &["--config", "agent.toml", "check-config"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn check_config_lists_problems_and_exits_2() {
    let dir = examples_with_keys();
    let toml = std::fs::read_to_string(dir.path().join("agent.toml")).unwrap();
    std::fs::write(
        dir.path().join("agent.toml"),
        toml.replace("agent_id = \"mx1\"", "agent_id = \"\"\nbogus = 1"),
    )
    .unwrap();
    let out = agent(dir.path(), &["--config", "agent.toml", "check-config"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown field `bogus`"), "{err}");
}

#[test]
fn example_primary_plans_as_documented() {
    let out = agent(
        &tests::workspace(),
        &["--config", "deploy/examples/agent.toml", "plan"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let plans: HashMap<String, serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (v["address"].as_str().unwrap().to_string(), v)
        })
        .collect();
    let class = |a: &str| {
        plans
            .get(a)
            .map(|p| p["class"].as_str().unwrap().to_string())
    };
    for (address, expected) in [
        ("postmaster@example.org", "forward"),
        ("webmaster@example.net", "forward"),
        ("trolls@example.org", "split"),
        ("trolls-archive@example.org", "punt"),
        ("announce@example.org", "punt"),
        ("staff@example.org", "punt"),
        ("alice@example.org", "punt"),
        ("bob@example.org", "forward"),
        ("dave@example.org", "punt"),
        ("info@example.org", "split"),
        ("shared-inbox@example.org", "punt"),
    ] {
        assert_eq!(class(address).as_deref(), Some(expected), "{address}");
    }
    assert_eq!(class("root@example.org").as_deref(), Some("forward"));
    assert!(!plans.contains_key("nobody@example.org"));
    let mut sorted: Vec<&String> = plans.keys().collect();
    sorted.sort();
    assert_eq!(sorted.len(), plans.len());
}

#[test]
fn server_example_passes_check_config() {
    let dir = examples_with_keys();
    let out = Command::new(tests::bin("mxsync-server"))
        .args(["--config", "server.toml", "check-config"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("configuration ok: listen 127.0.0.1:8025, 1 agent(s)"),
        "{said}"
    );
}
