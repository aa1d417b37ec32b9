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

/// Copies `deploy/examples` to a temporary directory as it would sit in `/etc/mxsync`, with
/// the key files it names beside it and `/var/lib` moved into the directory.
fn examples_with_keys() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    tests::copy_tree(&tests::workspace().join("deploy/examples"), dir.path()).unwrap();
    tests::write_key(&dir.path().join("mx1.key"), &"k".repeat(64));
    tests::write_key(&dir.path().join("read.token"), &"r".repeat(64));
    let var = dir.path().join("var-lib");
    for f in ["agent.toml", "server.toml"] {
        let text = std::fs::read_to_string(dir.path().join(f)).unwrap();
        assert!(text.contains("\"/var/lib/mxsync"), "{f}");
        let moved = text.replace("\"/var/lib/", &format!("\"{}/", var.display()));
        std::fs::write(dir.path().join(f), moved).unwrap();
    }
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
    // What `run` needs: a state directory it cannot write is a problem check-config names.
    use std::os::unix::fs::PermissionsExt;
    let server_toml = dir.path().join("server.toml");
    let text = std::fs::read_to_string(&server_toml).unwrap();
    let locked = dir.path().join("locked");
    std::fs::create_dir(&locked).unwrap();
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o555)).unwrap();
    let var = dir.path().join("var-lib").display().to_string();
    std::fs::write(
        &server_toml,
        text.replace(
            &format!("\"{var}/mxsync\""),
            &format!("\"{}/state\"", locked.display()),
        ),
    )
    .unwrap();
    // As the service's user would: root may write anywhere, so a root test runs it as
    // `nobody`, owner of everything but the locked directory.
    let mut cmd = if rustix::process::geteuid().is_root() {
        chown_tree(dir.path(), 65534);
        std::os::unix::fs::chown(&locked, Some(0), Some(0)).unwrap();
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"]);
        c.arg(tests::bin("mxsync-server"));
        c
    } else {
        Command::new(tests::bin("mxsync-server"))
    };
    // `--config` after the command is taken too.
    let out = (cmd.args(["check-config", "--config", "server.toml"]))
        .current_dir(dir.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("state_dir") && err.contains("not writable by user") && err.contains("locked"),
        "{err}"
    );
    assert!(!err.contains("output.dir"), "{err}");
}

/// Gives `dir` and everything below it to `uid`.
fn chown_tree(dir: &Path, uid: u32) {
    std::os::unix::fs::chown(dir, Some(uid), Some(uid)).unwrap();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        if e.file_type().unwrap().is_dir() {
            chown_tree(&e.path(), uid);
        } else {
            std::os::unix::fs::chown(e.path(), Some(uid), Some(uid)).unwrap();
        }
    }
}

#[test]
fn logs_to_a_pipe_are_plain_and_a_refused_push_says_why() {
    let dir = examples_with_keys();
    let port = tests::free_port();
    let toml = std::fs::read_to_string(dir.path().join("agent.toml")).unwrap();
    let toml = toml.replace("http://127.0.0.1:8025", &format!("http://127.0.0.1:{port}"));
    std::fs::write(dir.path().join("agent.toml"), toml).unwrap();
    // (extra environment, extra flags) -> standard output and error.
    let once = |env: &[(&str, &str)], flags: &[&str]| {
        let out = Command::new(tests::bin("mxsync-agent"))
            .args(["--config", "agent.toml", "once"])
            .args(flags)
            .envs(env.iter().copied())
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1));
        (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (said, log) = once(&[], &[]);
    // The cause, in words, and no Rust debug form.
    assert!(
        said.contains("not accepted: ") && said.contains("Connection refused"),
        "{said}"
    );
    assert!(!said.contains("Retry("), "{said}");
    assert!(log.contains("WARN") && !log.contains('\x1b'), "{log:?}");
    assert!(
        log.lines().all(|l| l.starts_with("20")),
        "timestamps: {log}"
    );
    // Under systemd the journal stamps each line.
    let (_, log) = once(&[("JOURNAL_STREAM", "8:1")], &[]);
    assert!(
        log.lines()
            .all(|l| !l.starts_with("20") && !l.contains('\x1b')),
        "{log}"
    );
    // For log shippers, one JSON object a line.
    let (_, log) = once(&[], &["--log-format", "json"]);
    assert!(!log.is_empty());
    for line in log.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(v["level"].is_string(), "{line}");
    }
}

#[test]
fn lint_reports_what_plan_reports_and_fails_on_errors() {
    let out = agent(
        &tests::workspace(),
        &["--config", "deploy/examples/agent.toml", "lint"],
    );
    let said = String::from_utf8_lossy(&out.stdout);
    // The example's relative :include: is an error Postfix would bounce mail for.
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(
        said.contains("aliases:22: error: staff: :include:lists/staff is a relative path"),
        "{said}"
    );
    // Every line `plan` writes to standard error, lint writes too.
    let plan = agent(
        &tests::workspace(),
        &["--config", "deploy/examples/agent.toml", "plan"],
    );
    for line in String::from_utf8_lossy(&plan.stderr).lines() {
        assert!(said.contains(line), "lint misses {line:?}:\n{said}");
    }
}
