//! Freshness: the state table, and transitions with tokio's paused clock firing each alert sink
//! exactly once (a loopback HTTP receiver counts the webhook calls).

use super::*;
use crate::testkit::{Harness, snapshot};
use std::io::{BufRead, BufReader, Read, Write};
use std::sync::{Arc, Mutex};

const WARN: Duration = Duration::from_secs(90);
const STALE: Duration = Duration::from_secs(300);

fn check(
    contact_ago: Option<u64>,
    disagree_ago: Option<u64>,
    applied: bool,
    held: bool,
    expected: State,
) {
    let now = Instant::now() + Duration::from_secs(10_000);
    let ago = |s: u64| now - Duration::from_secs(s);
    let i = Inputs {
        applied,
        last_contact: contact_ago.map(ago),
        disagree_since: disagree_ago.map(ago),
        held,
    };
    assert_eq!(evaluate(now, &i, WARN, STALE), expected, "{i:?}");
}

#[test]
fn state_table() {
    check(Some(0), None, false, false, State::Never);
    check(Some(0), None, true, false, State::Fresh);
    check(Some(90), None, true, false, State::Fresh);
    check(Some(91), None, true, false, State::Late);
    check(Some(300), None, true, false, State::Late);
    check(Some(301), None, true, false, State::Stale);
    check(None, None, true, false, State::Stale);
    check(Some(1), Some(91), true, false, State::Late);
    check(Some(1), Some(301), true, false, State::Stale);
    check(Some(1), Some(10), true, false, State::Fresh);
    check(Some(0), None, true, true, State::Stale);
    assert_eq!(State::worst([State::Fresh, State::Late]), State::Late);
    assert_eq!(State::worst([State::Never, State::Late]), State::Never);
    assert_eq!(State::worst([State::Never, State::Stale]), State::Stale);
    assert_eq!(State::worst([]), State::Fresh);
}

/// A loopback HTTP server on its own thread that answers 200 and keeps every request body.
fn webhook_receiver() -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let got = Arc::new(Mutex::new(Vec::new()));
    let g = got.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut r = BufReader::new(stream);
            let mut len = 0usize;
            let mut line = String::new();
            let _ = r.read_line(&mut line);
            let request: String = line
                .split_whitespace()
                .take(2)
                .collect::<Vec<_>>()
                .join(" ");
            line.clear();
            while r.read_line(&mut line).unwrap_or(0) > 2 {
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
                line.clear();
            }
            let mut body = vec![0; len];
            let _ = r.read_exact(&mut body);
            // A POST is kept as its body (the JSON), anything else as its request line.
            let body = String::from_utf8_lossy(&body).into_owned();
            g.lock().unwrap().push(if request.starts_with("POST") {
                body
            } else {
                request
            });
            let _ = r
                .get_mut()
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        }
    });
    (url, got)
}

/// Waits (in real time, clock resumed) until `n` alerts arrived.
async fn alerts(got: &Arc<Mutex<Vec<String>>>, n: usize) -> Vec<serde_json::Value> {
    tokio::time::resume();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while got.lock().unwrap().len() < n && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::pause();
    got.lock()
        .unwrap()
        .iter()
        .map(|b| serde_json::from_str(b).unwrap())
        .collect()
}

/// Applies `s` as agent mx1's JSON push.
fn apply(server: &std::sync::Arc<crate::Server>, s: &proto::Snapshot) {
    let body = serde_json::to_vec(s).unwrap();
    crate::ingest::snapshot(server, "mx1", &body, Default::default()).unwrap();
}

#[tokio::test]
async fn transitions_fire_each_alert_exactly_once() {
    let (url, got) = webhook_receiver();
    let mut h = Harness::new(&format!("[alerts]\nwebhook_url = \"{url}\"\n"));
    let s = snapshot("a: r@remote.net\n", 1);
    tokio::time::pause();
    // Nothing applied yet: never, which is what the database says, so nothing is announced.
    let server = h.server.clone();
    server.check_freshness();
    assert_eq!(alerts(&got, 0).await.len(), 0);
    // The agent pushes: fresh.
    let _ = h.next_seq();
    apply(&server, &s);
    server.check_freshness();
    let mut expect = vec!["fresh"];
    assert_eq!(alerts(&got, 1).await[0]["old"], "never");
    for (advance, state) in [(91, "late"), (210, "stale")] {
        tokio::time::advance(Duration::from_secs(advance)).await;
        server.check_freshness();
        server.check_freshness();
        expect.push(state);
        let a = alerts(&got, expect.len()).await;
        assert_eq!(
            a.iter()
                .map(|v| v["new"].as_str().unwrap())
                .collect::<Vec<_>>(),
            expect
        );
    }
    // Contact again: fresh, announced once.
    server.contact("mx1", 1, &s.hash).unwrap();
    server.check_freshness();
    server.check_freshness();
    expect.push("fresh");
    let a = alerts(&got, expect.len()).await;
    assert_eq!(
        a.iter()
            .map(|v| v["new"].as_str().unwrap())
            .collect::<Vec<_>>(),
        expect
    );
    assert_eq!(a[2]["old"], "late");
    assert_eq!(a[2]["agent"], "mx1");
    assert_eq!(a[2]["version"], 1);
    assert!(a[2]["age_seconds"].as_u64().unwrap() >= 301);
    // Nothing more arrives.
    tokio::time::resume();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(got.lock().unwrap().len(), 4);
}

#[tokio::test]
async fn the_command_and_ping_sinks_follow_every_change() {
    let (url, got) = webhook_receiver();
    let base = url.trim_end_matches("/hook");
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("alerts.jsonl");
    // Each alert appended in one write: two commands may run at once, and `cat` then `echo`
    // let one's line fall between the other's object and its newline.
    let h = Harness::new(&format!(
        "[alerts]\ncommand = [\"/bin/sh\", \"-c\", \"line=$(cat); printf '%s\\\\n' \\\"$line\\\" >> {0}\"]\nping_url = \"{base}/hc\"\n",
        log.display()
    ));
    let s = snapshot("a: r@remote.net\n", 1);
    tokio::time::pause();
    let server = h.server.clone();
    apply(&server, &s);
    let steps = [
        (0, "fresh", Some("GET /hc")),
        (91, "late", None),
        (210, "stale", Some("GET /hc/fail")),
    ];
    let mut pings = 0;
    for (advance, state, ping) in steps {
        tokio::time::advance(Duration::from_secs(advance)).await;
        server.check_freshness();
        pings += usize::from(ping.is_some());
        let seen = requests(&got, pings).await;
        if let Some(p) = ping {
            assert_eq!(seen.last().map(String::as_str), Some(p), "{state}");
        }
        // The command got the change too (one JSON object per line).
        tokio::time::resume();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let lines = loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let lines: Vec<serde_json::Value> = text
                .lines()
                .filter(|l| !l.is_empty())
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
            if lines.iter().any(|v| v["new"] == state) || std::time::Instant::now() > deadline {
                break lines;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        tokio::time::pause();
        assert_eq!(
            lines.last().map(|v| v["new"].clone()),
            Some(serde_json::json!(state)),
            "{lines:?}"
        );
    }
    assert_eq!(requests(&got, 2).await, ["GET /hc", "GET /hc/fail"]);
}

/// Waits (in real time) until `n` requests arrived; returns them as recorded.
async fn requests(got: &Arc<Mutex<Vec<String>>>, n: usize) -> Vec<String> {
    tokio::time::resume();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while got.lock().unwrap().len() < n && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::pause();
    got.lock().unwrap().clone()
}
