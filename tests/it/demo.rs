//! The README's demo command starts, serves status, picks up an edit, and stops on SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

fn field(lines: &[String], label: &str) -> Option<String> {
    lines
        .iter()
        .find_map(|l| l.split_once(label).map(|(_, v)| v.trim().to_string()))
}

#[test]
fn the_demo_starts_serves_status_and_follows_an_edit() {
    let mut child = Command::new(tests::bin("mxsync-demo"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut lines = Vec::new();
    while !lines.iter().any(|l: &String| l.starts_with("Ctrl-C")) {
        let mut l = String::new();
        assert!(
            out.read_line(&mut l).unwrap() > 0,
            "demo ended early: {lines:?}"
        );
        lines.push(l);
    }
    let status_url = field(&lines, "status URL:").unwrap();
    let aliases = field(&lines, "edit the primary's aliases:").unwrap();
    let maps = field(&lines, "rendered maps (secondary):").unwrap();
    let virt = format!("{maps}/virtual");
    let fresh = tests::wait_for(Duration::from_secs(30), || {
        let body = http_get(&status_url);
        body.contains("\"state\":\"fresh\"")
    });
    assert!(fresh, "demo status never fresh: {}", http_get(&status_url));
    assert!(
        std::fs::read_to_string(&virt)
            .unwrap()
            .contains("trolls@example.org")
    );
    // Editing the aliases file changes the maps within a second or so.
    let mut text = std::fs::read_to_string(&aliases).unwrap();
    text.push_str("newlist: someone@elsewhere.example\n");
    std::fs::write(&aliases, text).unwrap();
    let seen = tests::wait_for(Duration::from_secs(5), || {
        std::fs::read_to_string(&virt)
            .unwrap_or_default()
            .contains("newlist@example.org someone@elsewhere.example")
    });
    assert!(seen, "the edit never reached {virt}");
    // SIGTERM stops it cleanly and removes the temporary directory.
    let dir = aliases.trim_end_matches("/primary/aliases").to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
    let exited = tests::wait_for(Duration::from_secs(20), || {
        child.try_wait().unwrap().is_some()
    });
    assert!(exited, "demo did not stop");
    assert!(child.wait().unwrap().success());
    assert!(!std::path::Path::new(&dir).exists(), "{dir} left behind");
}

/// A GET over a plain socket; the body, or "" when the server is not there.
fn http_get(url: &str) -> String {
    use std::io::{Read, Write};
    let rest = url.trim_start_matches("http://");
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let Ok(mut s) = std::net::TcpStream::connect(host) else {
        return String::new();
    };
    let _ = write!(
        s,
        "GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    );
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default()
}
