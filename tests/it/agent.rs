//! `mxsync-agent run` against a real `mxsync-server` on loopback, with real files and real
//! `notify` events: every kind of edit reaches the receiver's maps, none is lost.

use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(10);

struct Setup {
    _dir: tempfile::TempDir,
    primary: tests::Primary,
    server_config: std::path::PathBuf,
    maps: std::path::PathBuf,
    state: std::path::PathBuf,
    key: std::path::PathBuf,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let sdir = dir.path().join("secondary");
    std::fs::create_dir_all(&sdir).unwrap();
    let server_config = tests::server_config(&sdir, "");
    let primary = tests::Primary::new(&dir.path().join("primary"));
    let key = dir.path().join("agent.key");
    tests::write_key(&key, tests::KEY);
    Setup {
        maps: sdir.join("maps"),
        state: dir.path().join("agent-state"),
        server_config,
        primary,
        key,
        _dir: dir,
    }
}

async fn expect(s: &Setup, what: &str, needle: &str, present: bool) {
    let ok = tests::wait_virtual(&s.maps, LIMIT, |v| v.contains(needle) == present).await;
    let v = std::fs::read_to_string(s.maps.join("postfix/virtual")).unwrap_or_default();
    assert!(
        ok,
        "{what}: {needle:?} present={present} not reached in:\n{v}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_edit_reaches_the_maps() {
    let s = setup();
    let server = tests::RunningServer::start(&s.server_config).await;
    let agent =
        tests::RunningAgent::start(s.primary.agent_config(&s.state, &[(&server.url, &s.key)]));
    expect(&s, "first push", "a@example.org r1@remote.net\n", true).await;
    expect(&s, "include", "staff@example.org s1@remote.net\n", true).await;

    // An edit in place.
    let aliases = std::fs::read_to_string(s.primary.path("aliases")).unwrap();
    s.primary.write(
        "aliases",
        &aliases.replace("r1@remote.net", "r2@remote.net"),
    );
    expect(&s, "edit in place", "a@example.org r2@remote.net\n", true).await;

    // Rename over (what editors and postalias-style tools do).
    let tmp = s.primary.path("aliases.tmp");
    std::fs::write(&tmp, aliases.replace("r1@remote.net", "r3@remote.net")).unwrap();
    std::fs::rename(&tmp, s.primary.path("aliases")).unwrap();
    expect(&s, "rename over", "a@example.org r3@remote.net\n", true).await;

    // Delete and create again.
    std::fs::remove_file(s.primary.path("aliases")).unwrap();
    s.primary.write(
        "aliases",
        &aliases.replace("r1@remote.net", "r4@remote.net"),
    );
    expect(
        &s,
        "delete and recreate",
        "a@example.org r4@remote.net\n",
        true,
    )
    .await;

    // An edit of an :include: file.
    s.primary.write("lists/staff", "s2@remote.net\n");
    expect(
        &s,
        "include edit",
        "staff@example.org s2@remote.net\n",
        true,
    )
    .await;

    // A new ~/.procmailrc: alice becomes a punt unit of `al` either way, but `alice` itself
    // already punts; check the alias that names her keeps the split and the plan reason changes.
    expect(
        &s,
        "split before",
        "al@example.org alice@example.org, x@remote.net\n",
        true,
    )
    .await;
    s.primary
        .write("home/alice/.forward", "alice@elsewhere.net\n");
    expect(
        &s,
        "new .forward",
        "alice@example.org alice@elsewhere.net\n",
        true,
    )
    .await;
    s.primary.write("home/alice/.procmailrc", ":0\n");
    expect(
        &s,
        "new .procmailrc",
        "alice@example.org alice@elsewhere.net\n",
        false,
    )
    .await;
    expect(
        &s,
        "new .procmailrc",
        "al@example.org alice@example.org, x@remote.net\n",
        true,
    )
    .await;

    // A new user whose home appears later, moved in whole: then the watch moves from /home
    // into it, so an edit of the new .forward is seen too.
    let passwd = std::fs::read_to_string(s.primary.path("passwd")).unwrap();
    let bob = s.primary.path("home/bob");
    s.primary.write(
        "passwd",
        &format!("{passwd}bob:x:1001:1001::{}:/bin/sh\n", bob.display()),
    );
    let known = tests::wait_map(&s.maps, "postfix/relay_recipients", LIMIT, |r| {
        r.contains("bob@example.org")
    });
    assert!(known.await, "the new user never reached relay_recipients");
    let staged = s.primary.path("bob.new");
    std::fs::create_dir(&staged).unwrap();
    std::fs::write(staged.join(".forward"), "bob@elsewhere.net\n").unwrap();
    std::fs::rename(&staged, &bob).unwrap();
    expect(&s, "new home", "bob@example.org bob@elsewhere.net\n", true).await;
    s.primary.write("home/bob/.forward", "bob@faraway.net\n");
    expect(
        &s,
        "edit in the new home",
        "bob@example.org bob@faraway.net\n",
        true,
    )
    .await;

    agent.stop().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_same_size_edits_within_a_second_end_with_the_last() {
    let s = setup();
    let server = tests::RunningServer::start(&s.server_config).await;
    let agent =
        tests::RunningAgent::start(s.primary.agent_config(&s.state, &[(&server.url, &s.key)]));
    expect(&s, "first push", "a@example.org r1@remote.net\n", true).await;
    // Same size, same second: the case rsync's quick check misses.
    for i in 0..10 {
        s.primary.write(
            "aliases",
            &format!("a: v{i}@remote.net\nstaff: x@remote.net\nal: y@remote.net\n"),
        );
    }
    expect(
        &s,
        "last of ten edits",
        "a@example.org v9@remote.net\n",
        true,
    )
    .await;
    agent.stop().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_was_down_gets_the_latest_state_without_a_restart() {
    let s = setup();
    let server = tests::RunningServer::start(&s.server_config).await;
    let addr: std::net::SocketAddr = server.url.trim_start_matches("http://").parse().unwrap();
    let agent =
        tests::RunningAgent::start(s.primary.agent_config(&s.state, &[(&server.url, &s.key)]));
    expect(&s, "first push", "a@example.org r1@remote.net\n", true).await;
    server.stop().await;
    // The primary changes twice while the receiver is down.
    s.primary.write(
        "aliases",
        "a: down1@remote.net\nstaff: x@remote.net\nal: y@remote.net\n",
    );
    s.primary.write(
        "aliases",
        "a: down2@remote.net\nstaff: x@remote.net\nal: y@remote.net\n",
    );
    let server = tests::RunningServer::start_on(&s.server_config, addr).await;
    expect(
        &s,
        "after the receiver came back",
        "a@example.org down2@remote.net\n",
        true,
    )
    .await;
    agent.stop().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_receiver_does_not_slow_the_other() {
    let s = setup();
    let server = tests::RunningServer::start(&s.server_config).await;
    // A port nobody listens on.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_url = format!("http://{}", dead.local_addr().unwrap());
    drop(dead);
    let cfg = s
        .primary
        .agent_config(&s.state, &[(&dead_url, &s.key), (&server.url, &s.key)]);
    let agent = tests::RunningAgent::start(cfg);
    expect(&s, "first push", "a@example.org r1@remote.net\n", true).await;
    for i in 0..5 {
        let started = std::time::Instant::now();
        s.primary.write(
            "aliases",
            &format!("a: live{i}@remote.net\nstaff: x@remote.net\nal: y@remote.net\n"),
        );
        expect(
            &s,
            "edit with a dead receiver",
            &format!("a@example.org live{i}@remote.net\n"),
            true,
        )
        .await;
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "edit {i} took {:?}",
            started.elapsed()
        );
    }
    agent.stop().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarting_the_agent_does_not_bump_the_version() {
    let s = setup();
    let server = tests::RunningServer::start(&s.server_config).await;
    let version = |maps: &std::path::Path| {
        let v = std::fs::read_to_string(maps.join("postfix/relay_domains")).unwrap_or_default();
        v.lines()
            .find_map(|l| l.strip_prefix("# agent mx1 version "))
            .and_then(|r| r.split(' ').next().map(str::to_string))
    };
    let agent =
        tests::RunningAgent::start(s.primary.agent_config(&s.state, &[(&server.url, &s.key)]));
    expect(&s, "first push", "a@example.org r1@remote.net\n", true).await;
    let v1 = version(&s.maps);
    agent.stop().await;
    let agent =
        tests::RunningAgent::start(s.primary.agent_config(&s.state, &[(&server.url, &s.key)]));
    // One edit after the restart must be version 2: had the restart bumped it, it would be 3.
    s.primary.write(
        "aliases",
        "a: after@remote.net\nstaff: x@remote.net\nal: y@remote.net\n",
    );
    expect(
        &s,
        "edit after restart",
        "a@example.org after@remote.net\n",
        true,
    )
    .await;
    assert_eq!(v1.as_deref(), Some("1"));
    assert_eq!(version(&s.maps).as_deref(), Some("2"));
    agent.stop().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_that_lost_its_state_dir_recovers_by_itself() {
    let s = setup();
    let server = tests::RunningServer::start(&s.server_config).await;
    let agent =
        tests::RunningAgent::start(s.primary.agent_config(&s.state, &[(&server.url, &s.key)]));
    expect(&s, "first push", "a@example.org r1@remote.net\n", true).await;
    s.primary.write(
        "aliases",
        "a: second@remote.net\nstaff: x@remote.net\nal: y@remote.net\n",
    );
    expect(&s, "version 2", "a@example.org second@remote.net\n", true).await;
    agent.stop().await;
    // The state directory is lost and the primary changes: the agent starts again at version 1,
    // the receiver answers 409 with its version 2, and the agent moves above it.
    std::fs::remove_dir_all(&s.state).unwrap();
    s.primary.write(
        "aliases",
        "a: third@remote.net\nstaff: x@remote.net\nal: y@remote.net\n",
    );
    let agent =
        tests::RunningAgent::start(s.primary.agent_config(&s.state, &[(&server.url, &s.key)]));
    expect(
        &s,
        "after losing the state",
        "a@example.org third@remote.net\n",
        true,
    )
    .await;
    let v = std::fs::read_to_string(s.maps.join("postfix/relay_domains")).unwrap();
    assert!(v.contains("# agent mx1 version 3 "), "{v}");
    agent.stop().await;
    server.stop().await;
}

/// `mxsync_applied_total{agent="mx1",kind=KIND}` on the server at `url`.
async fn applied(url: &str, kind: &str) -> u64 {
    let text = tests::get_text(&format!("{url}/metrics")).await;
    let prefix = format!("mxsync_applied_total{{agent=\"mx1\",kind=\"{kind}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map_or(0, |v| v.trim().parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edits_travel_as_deltas_and_a_receiver_that_lost_its_state_gets_the_full_snapshot() {
    let s = setup();
    let server = tests::RunningServer::start(&s.server_config).await;
    let agent =
        tests::RunningAgent::start(s.primary.agent_config(&s.state, &[(&server.url, &s.key)]));
    expect(&s, "first push", "a@example.org r1@remote.net\n", true).await;
    let aliases = std::fs::read_to_string(s.primary.path("aliases")).unwrap();
    for i in 2..5 {
        s.primary.write(
            "aliases",
            &aliases.replace("r1@remote.net", &format!("r{i}@remote.net")),
        );
        let needle = format!("a@example.org r{i}@remote.net\n");
        expect(&s, "edit", &needle, true).await;
    }
    assert_eq!(applied(&server.url, "full").await, 1);
    assert_eq!(applied(&server.url, "delta").await, 3);

    // The receiver comes back with nothing (a new disk): the agent's delta has no base there,
    // so it sends the full snapshot; later edits are deltas again.
    let addr: std::net::SocketAddr = server.url.trim_start_matches("http://").parse().unwrap();
    server.stop().await;
    let sdir = s.server_config.parent().unwrap();
    std::fs::remove_dir_all(sdir.join("state")).unwrap();
    std::fs::remove_dir_all(&s.maps).unwrap();
    let server = tests::RunningServer::start_on(&s.server_config, addr).await;
    expect(&s, "after the loss", "a@example.org r4@remote.net\n", true).await;
    s.primary.write(
        "aliases",
        &aliases.replace("r1@remote.net", "r9@remote.net"),
    );
    expect(
        &s,
        "edit after the loss",
        "a@example.org r9@remote.net\n",
        true,
    )
    .await;
    assert_eq!(applied(&server.url, "full").await, 1);
    assert_eq!(applied(&server.url, "delta").await, 1);
    agent.stop().await;
    server.stop().await;
}

/// Under a Type=notify unit: READY=1 with the snapshot's version once the first snapshot is
/// made (a receiver that is down does not delay it), then WATCHDOG=1 from the main loop.
#[test]
fn systemd_hears_ready_after_the_first_snapshot_then_watchdog() {
    let s = setup();
    // A receiver nobody listens on: readiness does not wait for a push.
    let port = tests::free_port();
    s.primary
        .agent_config(&s.state, &[(&format!("http://127.0.0.1:{port}"), &s.key)]);
    let config = s.state.with_extension("toml");
    let agent = tests::Notified::start("mxsync-agent", &config, s.state.parent().unwrap());
    let next = || agent.next();
    let first = next();
    assert!(
        first.contains("READY=1") && first.contains("STATUS=snapshot version 1 hash "),
        "{first}"
    );
    let watchdog = (0..5).map(|_| next()).find(|m| m.contains("WATCHDOG=1"));
    assert!(watchdog.is_some(), "no WATCHDOG=1 after READY");
}
