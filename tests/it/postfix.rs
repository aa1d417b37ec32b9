//! The proof in a real Postfix: a private instance on 127.0.0.1 whose only knowledge of the
//! domains is the maps `mxsync-server` rendered after a real agent pushed a generated primary.
//! One message per address goes in with `swaks`; each must come out exactly as its plan says:
//! forward targets at the "internet" sink, punt units (or the address itself) at the "primary"
//! sink, and unknown addresses refused with 550 at RCPT. Then the primary changes through the
//! agent (an alias added, others changed) and the new routing is proved the same way, by the
//! same running Postfix, without a reload.
//!
//! The instance's main.cf is the shipped snippet (`cdb:` tables that the server writes itself),
//! and the server runs as a process under umask 077, as under the shipped unit.
//!
//! Needs `postfix`, `postfix-cdb` and `swaks` (`.ci/run` installs them). Without them the test
//! says it was skipped, unless `CI=true`, where their absence fails it.

use std::os::unix::fs::PermissionsExt;

use std::time::Duration;

use proto::Class;
use tests::mta::{Mta, Postfix, available, expected, prove, write_primary};
use tests::smtp::Sink;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postfix_routes_every_address_as_planned() {
    if !available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    // Postfix runs as its own user: every directory on the way must be traversable.
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let root = tmp.path();
    let (pdir, sdir, pfdir) = (
        root.join("primary"),
        root.join("secondary"),
        root.join("postfix"),
    );
    for d in [&pdir, &sdir, &pfdir] {
        std::fs::create_dir_all(d).unwrap();
    }
    write_primary(&pdir, 1);
    let internet = Sink::start("internet");
    let primary_sink = Sink::start("primary");
    let pf_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let maps = sdir.join("maps");
    Postfix::configure(&pfdir, &maps, internet.port, pf_port);
    // As under the shipped unit: the state directory open to others only for traversal, the
    // server under umask 077, and no hook: Postfix reads the server's own cdb tables.
    let (server, cfg, agent) =
        tests::mta::secondary_and_agent(root, &pdir, &sdir, primary_sink.port);
    let applied = tests::wait_virtual(&maps, Duration::from_secs(30), |v| {
        v.contains("f0@example.org")
    })
    .await;
    assert!(applied, "the maps were never rendered");
    let pf = Postfix::start(&pfdir, pf_port);
    let plans_now = || tests::mta::plans_now(&cfg);
    let plans = plans_now();
    // Every class and every punt reason is covered.
    let codes: std::collections::BTreeSet<String> = plans
        .values()
        .flat_map(|p| p.reasons.iter().map(|r| format!("{:?}", r.code)))
        .collect();
    assert_eq!(codes.len(), 12, "{codes:?}");
    for class in [Class::Forward, Class::Split, Class::Punt] {
        assert!(
            plans.values().filter(|p| p.class == class).count() >= 20,
            "{class:?}"
        );
    }
    // A few literal expectations, so the proof does not rest on the planner alone.
    assert_eq!(
        expected(&plans, "f3@example.org").0,
        ["f3.a@remote3.example", "f3.b@other.example"]
    );
    assert_eq!(
        expected(&plans, "s2@example.com"),
        (
            vec!["s2@remote.example".to_string()],
            vec!["s2-archive@example.com".to_string()]
        )
    );
    assert_eq!(
        expected(&plans, "p1@example.org"),
        (vec![], vec!["p1@example.org".to_string()])
    );
    let mut addresses: Vec<String> = plans.keys().cloned().collect();
    addresses.extend((0..20).map(|i| format!("nobody{i}@example.org")));
    // Added on the primary in the second round.
    addresses.push("added@example.org".into());
    addresses.push("f1@example.net".into());
    assert!(addresses.len() >= 300, "{}", addresses.len());
    prove(&pf, &internet, &primary_sink, &plans, &addresses);

    // The primary changes through the agent; the new routing is proved the same way.
    write_primary(&pdir, 2);
    let changed = tests::wait_virtual(&maps, Duration::from_secs(30), |v| {
        v.contains("moved@example.org moved@remote.example")
    })
    .await;
    assert!(changed, "the change never reached the maps");
    let plans2 = plans_now();
    assert_eq!(plans2["moved@example.org"].class, Class::Forward);
    assert_eq!(plans2["added@example.org"].class, Class::Forward);
    let again = [
        "added@example.org",
        "changed@example.org",
        "moved@example.org",
        "moved@example.com",
        "f5@example.org",
    ]
    .map(String::from);
    // Probes are told apart by address; clear what the first round left.
    internet.got.lock().unwrap().clear();
    primary_sink.got.lock().unwrap().clear();
    prove(&pf, &internet, &primary_sink, &plans2, &again);
    assert_eq!(
        internet.rcpts_for("changed@example.org"),
        ["after@remote.example", "also@remote.example"]
    );
    // Without a reload: the daemons that held the old tables saw them unlinked and restarted.
    let log = pf.log();
    assert!(!log.contains("reload"), "postfix was reloaded:\n{log}");
    assert!(
        log.contains("has changed -- restarting"),
        "no daemon noticed the new tables:\n{log}"
    );

    let agent = tests::mta::prove_defer_while_stale(pf_port, agent, &cfg, &pdir, &internet).await;
    agent.stop().await;
    drop(server);
}
