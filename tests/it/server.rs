//! `mxsync-server` over a real socket with a real SQLite file: what survives a restart.

fn snapshot(aliases: &str, version: u64) -> Vec<u8> {
    tests::snapshot_body(tests::content_of(aliases), version)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maps_status_and_replay_protection_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let config = tests::server_config(dir.path(), "");
    let maps_dir = dir.path().join("maps");
    let client = tests::client();

    let s = tests::RunningServer::start(&config).await;
    let body = snapshot(
        "a: r@remote.net\nlist: x@remote.net, list-archive\nlist-archive: /var/a\n",
        1,
    );
    let (status, reply) =
        tests::signed_post(&client, &s.url, "/v1/snapshots", body.clone(), 1).await;
    assert_eq!(status, 200, "{reply}");
    let maps = tests::live_maps(&maps_dir);
    assert!(
        maps["postfix/virtual"].contains("a@example.org r@remote.net"),
        "{maps:?}"
    );
    s.stop().await;

    // Restart on the same state directory: status and maps as before.
    let s = tests::RunningServer::start(&config).await;
    let st = tests::status(&s.url).await;
    assert_eq!(st["agents"][0]["version"], 1, "{st}");
    assert_eq!(st["state"], "fresh", "{st}");
    assert_eq!(tests::live_maps(&maps_dir), maps);
    // The same request again is a replay, even though the server restarted.
    let (status, reply) =
        tests::signed_post(&client, &s.url, "/v1/snapshots", body.clone(), 1).await;
    assert_eq!(status, 401, "{reply}");
    assert!(reply.contains("replay"), "{reply}");
    // The plan is served to read-token holders from the restored snapshot.
    let plan = client
        .get(format!("{}/v1/plan/list@example.com", s.url))
        .header("authorization", format!("Bearer {}", tests::READ_TOKEN))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let plan: serde_json::Value = serde_json::from_str(&plan).unwrap();
    assert_eq!(plan["class"], "split", "{plan}");
    s.stop().await;

    // Maps lost while the server was down are rendered again at start, byte for byte.
    std::fs::remove_dir_all(&maps_dir).unwrap();
    let s = tests::RunningServer::start(&config).await;
    assert_eq!(tests::live_maps(&maps_dir), maps);
    s.stop().await;
}

/// The JSON body of agent mx1's delta from the `old` aliases to the `new` ones.
fn delta(old: &str, new: &str, version: u64) -> Vec<u8> {
    let (a, b) = (tests::content_of(old), tests::content_of(new));
    let d = proto::delta::Delta {
        format: proto::snapshot::FORMAT,
        agent: "mx1".into(),
        version,
        base_hash: a.hash(),
        hash: b.hash(),
        created_at: 0,
        changes: proto::delta::diff(&a, &b),
    };
    serde_json::to_vec(&d).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deltas_stored_as_chains_rebuild_the_same_maps_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let config = tests::server_config(dir.path(), "[history]\nkeep = 3\n");
    let maps_dir = dir.path().join("maps");
    let client = tests::client();
    let s = tests::RunningServer::start(&config).await;
    let mut aliases =
        "a: r@remote.net\nlist: x@remote.net, list-archive\nlist-archive: /var/a\n".to_string();
    let (status, reply) =
        tests::signed_post(&client, &s.url, "/v1/snapshots", snapshot(&aliases, 1), 1).await;
    assert_eq!(status, 200, "{reply}");
    // Past the chain limit, so one delta is stored whole and a new chain starts on it; history
    // is pruned to 3 rows meanwhile, which must not take a base away.
    let last = server::ingest::MAX_LINKS as u64 + 5;
    for v in 2..=last {
        let old = aliases.clone();
        aliases.push_str(&format!("u{v}: a, r{v}@remote.net\n"));
        if v % 3 == 0 {
            aliases = aliases.replace(&format!("u{}: a,", v - 1), &format!("u{}: list,", v - 1));
        }
        let (status, reply) =
            tests::signed_post(&client, &s.url, "/v1/deltas", delta(&old, &aliases, v), v).await;
        assert_eq!(status, 200, "version {v}: {reply}");
    }
    let maps = tests::live_maps(&maps_dir);
    assert!(
        maps["postfix/virtual"].contains(&format!("u{last}@example.org")),
        "{maps:?}"
    );
    s.stop().await;

    // Restarted without its maps: rebuilt from the chain, the content renders the same maps,
    // and it is the content the agent holds (a delta against its hash applies).
    std::fs::remove_dir_all(&maps_dir).unwrap();
    let s = tests::RunningServer::start(&config).await;
    assert_eq!(tests::live_maps(&maps_dir), maps);
    let st = tests::status(&s.url).await;
    assert_eq!(st["agents"][0]["version"], last, "{st}");
    let next = format!("{aliases}z: r@remote.net\n");
    let seq = last + 1;
    let (status, reply) = tests::signed_post(
        &client,
        &s.url,
        "/v1/deltas",
        delta(&aliases, &next, seq),
        seq,
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    assert!(tests::live_maps(&maps_dir)["postfix/virtual"].contains("z@example.org r@remote.net"));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_prints_one_line_with_monitoring_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let config = tests::server_config(dir.path(), "");
    let check = || {
        let out = std::process::Command::new(tests::bin("mxsync-server"))
            .arg("--config")
            .arg(&config)
            .arg("check")
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let s = tests::RunningServer::start(&config).await;
    let (code, line) = check();
    assert_eq!(code, Some(3), "{line}");
    assert!(line.starts_with("MXSYNC UNKNOWN - mx1 never"), "{line}");
    let (status, reply) = tests::signed_post(
        &tests::client(),
        &s.url,
        "/v1/snapshots",
        snapshot("a: r@remote.net\n", 4),
        1,
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    let (code, line) = check();
    assert_eq!(code, Some(0), "{line}");
    assert!(
        line.starts_with("MXSYNC OK - mx1 fresh (version 4, last contact"),
        "{line}"
    );
    assert_eq!(line.lines().count(), 1);
    s.stop().await;
}

#[test]
fn systemd_hears_ready_only_once_the_server_listens_then_watchdog_and_status() {
    let dir = tempfile::tempdir().unwrap();
    let config = tests::server_config(dir.path(), "");
    let port = tests::free_port();
    let text = std::fs::read_to_string(&config).unwrap();
    let text = text.replace("127.0.0.1:0", &format!("127.0.0.1:{port}"));
    std::fs::write(&config, text).unwrap();
    let server = tests::Notified::start("mxsync-server", &config, dir.path());
    let next = || server.next();
    let first = next();
    assert!(first.contains("READY=1"), "{first}");
    // READY comes after the bind: the port answers at once.
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
    assert!(
        first.contains("STATUS=never: mx1 never, unknown recipients deferred"),
        "{first}"
    );
    let second = next();
    assert!(
        second.contains("WATCHDOG=1") && second.contains("STATUS="),
        "{second}"
    );
}
