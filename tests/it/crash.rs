//! Crash during apply: `mxsync-server` killed with SIGKILL at random points while snapshots are
//! applied. After each kill every rendered file is wholly the old set or wholly the new set (never
//! a mix, never a partial file), the database passes `PRAGMA integrity_check`, and after a
//! restart the server converges to the latest version.
//!
//! 200 kills by default; `MXSYNC_CRASH_KILLS=1000` is the soak mode.

use std::collections::BTreeMap;
use std::time::Duration;

fn content(version: u64) -> proto::Content {
    let mut text = String::new();
    for i in 0..400 {
        text.push_str(&format!(
            "a{i}: v{version}.{i}@remote.example, b{i}@other.example\n"
        ));
        if i % 10 == 0 {
            text.push_str(&format!(
                "l{i}: x{i}@remote.example, l{i}-archive\nl{i}-archive: /var/archive/{i}\n"
            ));
        }
    }
    tests::content_of(&text)
}

fn body(version: u64) -> Vec<u8> {
    tests::snapshot_body(content(version), version)
}

/// The file set `mxsync-server` renders for `version` (what the live maps must equal).
fn expected(version: u64) -> BTreeMap<String, String> {
    let c = content(version);
    let hash = c.hash();
    let agents = [server::render::AgentMaps {
        id: "mx1",
        version,
        hash: &hash,
        primary: "[127.0.0.1]:2525",
        content: &c,
    }];
    let r = server::render::render(&agents, &["postfix".into(), "exim".into()], &[]).unwrap();
    r.files()
        .into_iter()
        .map(|(k, v)| (k, String::from_utf8(v).unwrap()))
        .collect()
}

#[test]
fn sigkill_during_apply_never_leaves_a_mixed_or_partial_set() {
    let kills: u64 = std::env::var("MXSYNC_CRASH_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let dir = tempfile::tempdir().unwrap();
    let config = tests::server_config(dir.path(), "");
    let maps = dir.path().join("maps");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut sets: BTreeMap<u64, BTreeMap<String, String>> = BTreeMap::new();
    let mut seq = 0;
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut killed_mid_apply = 0;
    // The last version answered with 200: the live maps may never fall behind it.
    let mut acked = 0u64;
    // The live version seen after the previous kill: it may never go backwards, not even to the
    // version the database had recorded when a kill fell between the switch and the record.
    let mut last_live = 0u64;
    for v in 1..=kills {
        let mut child = tests::server_process(&config, port);
        let b = body(v);
        sets.entry(v).or_insert_with(|| expected(v));
        seq += 1;
        let s = seq;
        let sender = std::thread::spawn(move || tests::raw_post(port, &b, s));
        // Kill at a random point within the first 40 ms of the request.
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        std::thread::sleep(Duration::from_micros(rng % 40_000));
        child.kill().unwrap();
        child.wait().unwrap();
        if sender.join().unwrap() == Some(200) {
            acked = v;
        } else {
            killed_mid_apply += 1;
        }
        // Whole sets only: every file equals one version's rendering, and that version is not
        // older than the last one acknowledged (no roll back).
        let live = tests::live_maps(&maps);
        assert!(
            !live.is_empty() || acked == 0,
            "after kill {v}: no maps although version {acked} was acknowledged"
        );
        if !live.is_empty() {
            let matching: Vec<u64> = (acked.max(1)..=v)
                .filter(|k| sets.get(k).is_some_and(|set| *set == live))
                .collect();
            let headers: Vec<String> = live
                .iter()
                .map(|(f, t)| format!("{f}: {}", t.lines().nth(1).unwrap_or("")))
                .collect();
            if let Some(&now) = matching.first() {
                assert!(
                    now >= last_live,
                    "after kill {v}: live maps went back from {last_live} to {now}"
                );
                last_live = now;
            }
            assert!(
                !matching.is_empty(),
                "after kill {v}: the live maps are no whole set from version {acked} to {v}: {headers:#?}"
            );
        }
        let store = server::store::Store::open(&dir.path().join("state/mxsync.db")).unwrap();
        assert!(
            store.integrity_ok().unwrap(),
            "after kill {v}: integrity_check failed"
        );
        sets.retain(|k, _| *k >= acked.min(last_live));
    }
    // Restarted, the server converges to the agent's latest version once the agent pushes again.
    let mut child = tests::server_process(&config, port);
    seq += 1;
    assert_eq!(tests::raw_post(port, &body(kills), seq), Some(200));
    assert_eq!(tests::live_maps(&maps), expected(kills));
    child.kill().unwrap();
    child.wait().unwrap();
    eprintln!("{kills} kills, {killed_mid_apply} before the 200");
    assert!(
        killed_mid_apply > 0,
        "no kill landed during an apply; the test proved nothing"
    );
}
