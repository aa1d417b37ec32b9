//! The primary's aliases file cut in half mid-write, with a real agent watching it: the shrink
//! guard holds the snapshot, the secondary keeps every address, status is `stale` with problem
//! `held`, the webhook gets the alert, and the complete file, once back, is applied without the
//! operator.

use std::time::Duration;

fn aliases(n: usize, tag: &str) -> String {
    (0..n)
        .map(|i| format!("user{i}: user{i}.{tag}@remote.net, archive{i}@other.net\n"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_aliases_file_is_held_and_the_complete_one_applied() {
    let (hook, got) = tests::webhook_receiver();
    let dir = tempfile::tempdir().unwrap();
    let sdir = dir.path().join("secondary");
    std::fs::create_dir_all(&sdir).unwrap();
    let config = tests::server_config(&sdir, &format!("[alerts]\nwebhook_url = \"{hook}\"\n"));
    let server = tests::RunningServer::start(&config).await;
    let primary = tests::Primary::new(&dir.path().join("primary"));
    let whole = aliases(200, "v1");
    primary.write("aliases", &whole);
    let key = dir.path().join("agent.key");
    tests::write_key(&key, tests::KEY);
    let agent = tests::RunningAgent::start(
        primary.agent_config(&dir.path().join("agent-state"), &[(&server.url, &key)]),
    );
    let maps = sdir.join("maps");
    assert!(
        tests::wait_virtual(&maps, Duration::from_secs(10), |v| v
            .contains("user199@example.org archive199@other.net, user199.v1@remote.net"))
        .await,
        "the complete file never reached the maps: {:?}",
        std::fs::read_to_string(maps.join("postfix/virtual"))
    );
    let before = tests::live_maps(&maps);

    // Cut in half, in the middle of a line, as a crashed editor or a full disk leaves it.
    let cut = &whole[..whole.len() / 2 - 7];
    assert!(!cut.ends_with('\n'));
    primary.write("aliases", cut);
    let held = tests::wait_for(Duration::from_secs(10), || {
        got.lock().unwrap().iter().any(|(_, b)| {
            let v: serde_json::Value = serde_json::from_str(b).unwrap();
            v["new"] == "stale" && v["problem"].as_str().unwrap_or("").starts_with("held")
        })
    });
    assert!(
        held,
        "no stale alert for the hold: {:?}",
        got.lock().unwrap()
    );
    let st = tests::status(&server.url).await;
    assert_eq!(st["state"], "stale", "{st}");
    assert!(
        st["agents"][0]["problem"]
            .as_str()
            .unwrap_or("")
            .starts_with("held"),
        "{st}"
    );
    // Every address is kept; what changes is that unknown recipients are now deferred.
    let without_stale = |m: std::collections::BTreeMap<String, String>| {
        m.into_iter()
            .filter(|(name, _)| !name.ends_with("stale_domains"))
            .collect::<std::collections::BTreeMap<_, _>>()
    };
    assert_eq!(
        without_stale(tests::live_maps(&maps)),
        without_stale(before.clone()),
        "the secondary keeps every address"
    );
    let deferring = tests::wait_for(Duration::from_secs(10), || {
        tests::live_maps(&maps)
            .get("postfix/stale_domains")
            .is_some_and(|t| t.contains("example.org 450 4.1.1"))
    });
    assert!(deferring, "unknown recipients are not deferred while held");

    // The complete file comes back, with one change: applied by itself, the hold gone.
    primary.write("aliases", &whole.replace("user7.v1@", "user7.v2@"));
    assert!(
        tests::wait_virtual(&maps, Duration::from_secs(10), |v| v
            .contains("user7@example.org archive7@other.net, user7.v2@remote.net"))
        .await,
        "the complete file was not applied"
    );
    let fresh_again = tests::wait_for(Duration::from_secs(10), || {
        let states: Vec<String> = got
            .lock()
            .unwrap()
            .iter()
            .map(|(_, b)| serde_json::from_str::<serde_json::Value>(b).unwrap())
            .filter(|v| v["event"] == "state")
            .map(|v| v["new"].as_str().unwrap_or("").to_string())
            .collect();
        let stale = states.iter().position(|s| s == "stale");
        stale.is_some_and(|i| states[i..].iter().any(|s| s == "fresh"))
    });
    assert!(
        fresh_again,
        "no fresh alert after the hold: {:?}",
        got.lock().unwrap()
    );
    assert!(
        tests::live_maps(&maps)["postfix/virtual"]
            .contains("user199@example.org archive199@other.net, user199.v1@")
    );
    let st = tests::status(&server.url).await;
    assert_eq!(st["state"], "fresh", "{st}");
    assert!(st["agents"][0]["problem"].is_null(), "{st}");
    agent.stop().await;
    server.stop().await;
}
