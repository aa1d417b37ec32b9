//! SIGHUP (`systemctl reload`) on the `mxsync-server` binary: an added agent is accepted without
//! a restart while the applied state stays; an invalid file is refused and the running
//! configuration stays in force; a removed agent is refused and its rows leave the maps.

use std::time::{Duration, Instant};

const KEY2: &str = "second-agent-key-0123456789abcdef01234567";

/// The JSON body of `agent`'s snapshot of `aliases` at example.net, at `version`.
fn snapshot_of(agent: &str, aliases: &str, version: u64) -> Vec<u8> {
    let mut b = proto::Builder::new(&["example.net".to_string()]);
    b.aliases("/etc/aliases", aliases.as_bytes());
    let content = b.finish();
    let s = proto::Snapshot {
        format: proto::snapshot::FORMAT,
        agent: agent.into(),
        version,
        hash: content.hash(),
        created_at: 0,
        content,
    };
    serde_json::to_vec(&s).unwrap()
}

/// A signed snapshot POST as `agent` with `key`: the status.
async fn push(base: &str, agent: &str, key: &str, body: Vec<u8>, seq: u64) -> u16 {
    let auth = proto::sign::header(key.as_bytes(), agent, "POST", "/v1/snapshots", seq, &body);
    tests::client()
        .post(format!("{base}/v1/snapshots"))
        .header("authorization", auth)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

fn hangup(child: &std::process::Child) {
    let ok = std::process::Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -HUP failed");
}

const MX2: &str = "[[agents]]\nid = \"mx2\"\nkey_file = \"mx2.key\"\n\
                   domains = [\"example.net\"]\nprimary = \"[127.0.0.1]:2525\"\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_adds_and_removes_agents_and_refuses_a_bad_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = tests::server_config(dir.path(), "");
    tests::write_key(&dir.path().join("mx2.key"), KEY2);
    let port = tests::free_port();
    let server = tests::Kill(tests::server_process(&config, port));
    let url = format!("http://127.0.0.1:{port}");
    let maps = dir.path().join("maps");
    let client = tests::client();
    let original = std::fs::read_to_string(&config).unwrap();

    let body = tests::snapshot_body(tests::content_of("a: r@remote.net\n"), 1);
    let (status, reply) = tests::signed_post(&client, &url, "/v1/snapshots", body, 1).await;
    assert_eq!(status, 200, "{reply}");
    let mut seq = 1;
    seq += 1;
    assert_eq!(
        push(
            &url,
            "mx2",
            KEY2,
            snapshot_of("mx2", "b: s@remote.net\n", 1),
            seq
        )
        .await,
        401,
        "mx2 accepted before it is configured"
    );

    // Added: accepted after the SIGHUP, with mx1's applied snapshot still in force.
    std::fs::write(&config, format!("{original}{MX2}")).unwrap();
    hangup(&server.0);
    let deadline = Instant::now() + Duration::from_secs(20);
    let accepted = loop {
        seq += 1;
        let got = push(
            &url,
            "mx2",
            KEY2,
            snapshot_of("mx2", "b: s@remote.net\n", 1),
            seq,
        )
        .await;
        if got == 200 || Instant::now() >= deadline {
            break got;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(accepted, 200, "mx2 never accepted after the reload");
    let st = tests::status(&url).await;
    let versions: Vec<(String, u64)> = (st["agents"].as_array().unwrap().iter())
        .map(|a| {
            let id = a["agent"].as_str().unwrap().to_string();
            (id, a["version"].as_u64().unwrap_or(0))
        })
        .collect();
    assert_eq!(
        versions,
        [("mx1".to_string(), 1), ("mx2".to_string(), 1)],
        "{st}"
    );
    let live = tests::live_maps(&maps);
    for row in ["a@example.org r@remote.net", "b@example.net s@remote.net"] {
        assert!(live["postfix/virtual"].contains(row), "{live:?}");
    }

    // An invalid file: refused with its problem logged; the running configuration stays.
    std::fs::write(
        &config,
        format!("{original}{MX2}[freshness]\nwarn_after = 5\n"),
    )
    .unwrap();
    hangup(&server.0);
    let log = config.with_file_name("server.log");
    let refused = tests::wait_for(Duration::from_secs(20), || {
        std::fs::read_to_string(&log).is_ok_and(|l| l.contains("configuration not reloaded"))
    });
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(refused, "no refusal logged: {text}");
    assert!(
        text.contains("warn_after"),
        "the problem is not named: {text}"
    );
    seq += 1;
    let body = snapshot_of("mx2", "b: s@remote.net\nc: t@remote.net\n", 2);
    assert_eq!(push(&url, "mx2", KEY2, body, seq).await, 200, "mx2 lost");
    assert_eq!(tests::status(&url).await["agents"][1]["version"], 2);

    // Removed: refused again, and its rows leave the maps; mx1's stay.
    std::fs::write(&config, &original).unwrap();
    hangup(&server.0);
    let gone = tests::wait_map(&maps, "postfix/virtual", Duration::from_secs(20), |v| {
        !v.contains("@example.net") && v.contains("a@example.org r@remote.net")
    })
    .await;
    assert!(gone, "{:?}", tests::live_maps(&maps));
    seq += 1;
    let body = snapshot_of("mx2", "b: s@remote.net\n", 3);
    assert_eq!(push(&url, "mx2", KEY2, body, seq).await, 401);
    let st = tests::status(&url).await;
    assert_eq!(st["agents"].as_array().unwrap().len(), 1, "{st}");
}
