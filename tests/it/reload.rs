//! SIGHUP (`systemctl reload`) on the binaries. The server: an added agent is accepted without
//! a restart while the applied state stays; an invalid file is refused and the running
//! configuration stays in force; a removed agent is refused and its rows leave the maps. The
//! agent: new receivers and sources are taken up; an invalid file is refused.

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
    let client = tests::client();
    let (status, _) =
        tests::signed_post_as(&client, base, "/v1/snapshots", body, seq, (agent, key)).await;
    status
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

/// SIGHUP on the `mxsync-agent` binary: a new receiver and a new aliases file are taken up
/// without a restart; an invalid file is refused and the agent goes on with the running one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_gives_the_agent_new_receivers_and_sources() {
    let dir = tempfile::tempdir().unwrap();
    let (a_dir, b_dir) = (dir.path().join("a"), dir.path().join("b"));
    std::fs::create_dir_all(&a_dir).unwrap();
    std::fs::create_dir_all(&b_dir).unwrap();
    let a = tests::RunningServer::start(&tests::server_config(&a_dir, "")).await;
    let b = tests::RunningServer::start(&tests::server_config(&b_dir, "")).await;
    let primary = tests::Primary::new(&dir.path().join("primary"));
    let key = dir.path().join("agent.key");
    tests::write_key(&key, tests::KEY);
    let state = dir.path().join("agent-state");
    primary.agent_config(&state, &[(&a.url, &key)]);
    let config = state.with_extension("toml");
    let log = dir.path().join("agent.log");
    let agent = tests::Kill(
        std::process::Command::new(tests::bin("mxsync-agent"))
            .arg("--config")
            .arg(&config)
            .arg("run")
            .env("RUST_LOG", "info")
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let limit = Duration::from_secs(20);
    let row = |v: &str, r: &str| v.contains(&format!("a@example.org {r}\n"));
    assert!(
        tests::wait_virtual(&a_dir.join("maps"), limit, |v| row(v, "r1@remote.net")).await,
        "first push never reached A: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );

    // Receiver B added, and the aliases read from another file.
    // The same names (the shrink guard would hold fewer), one target changed.
    let aliases = std::fs::read_to_string(primary.path("aliases")).unwrap();
    primary.write(
        "aliases2",
        &aliases.replace("r1@remote.net", "moved@remote.net"),
    );
    let text = std::fs::read_to_string(&config).unwrap();
    let text = text.replace(
        &primary.path("aliases").display().to_string(),
        &primary.path("aliases2").display().to_string(),
    );
    let both = format!(
        "{text}[[receivers]]\nurl = \"{}\"\nkey_file = \"{}\"\n",
        b.url,
        key.display()
    );
    std::fs::write(&config, &both).unwrap();
    hangup(&agent.0);
    for (name, d) in [("A", &a_dir), ("B", &b_dir)] {
        assert!(
            tests::wait_virtual(&d.join("maps"), limit, |v| row(v, "moved@remote.net")).await,
            "the new source never reached {name}: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }

    // An invalid file is refused; the running configuration goes on, B included.
    std::fs::write(&config, format!("{both}[timing]\nheartbeat = 1\n")).unwrap();
    hangup(&agent.0);
    let refused = tests::wait_for(limit, || {
        std::fs::read_to_string(&log).is_ok_and(|l| l.contains("configuration not reloaded"))
    });
    assert!(
        refused,
        "{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    primary.write(
        "aliases2",
        &aliases.replace("r1@remote.net", "after@remote.net"),
    );
    for (name, d) in [("A", &a_dir), ("B", &b_dir)] {
        assert!(
            tests::wait_virtual(&d.join("maps"), limit, |v| row(v, "after@remote.net")).await,
            "an edit after the refused reload never reached {name}"
        );
    }
    drop(agent);
    a.stop().await;
    b.stop().await;
}
