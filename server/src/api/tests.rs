//! Every endpoint and status code of DESIGN section 6, through the router without a socket.
//! Each refusal asserts that nothing changed: the maps are byte-identical and the history row
//! records the refusal.

use super::*;
use crate::testkit::{Harness, KEY, READ, snapshot};
use axum::body::Body;
use axum::http::Request;
use tower::ServiceExt;

const ALIASES: &str = "a: r1@remote.net, r2@remote.net\nlist: x@remote.net, list-archive\nlist-archive: /var/archive\n";
/// The same addresses, `a` forwarded elsewhere: a change the shrink guard lets through.
const CHANGED: &str =
    "a: other@remote.net\nlist: x@remote.net, list-archive\nlist-archive: /var/archive\n";

struct Reply {
    status: StatusCode,
    json: serde_json::Value,
}

async fn send(h: &Harness, req: Request<Body>) -> Reply {
    let resp = router(AppState {
        server: h.server.clone(),
    })
    .oneshot(req)
    .await
    .unwrap();
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap();
    let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::String(
        String::from_utf8_lossy(&bytes).into(),
    ));
    Reply { status, json }
}

fn signed(path: &str, body: Vec<u8>, seq: u64, key: &str, encoding: Option<&str>) -> Request<Body> {
    signed_as(path, body, seq, key, encoding, Some("application/json"))
}

/// A signed request with `Content-Encoding` `encoding` and `Content-Type` `media`.
fn signed_as(
    path: &str,
    body: Vec<u8>,
    seq: u64,
    key: &str,
    encoding: Option<&str>,
    media: Option<&str>,
) -> Request<Body> {
    let auth = proto::sign::header(key.as_bytes(), "mx1", "POST", path, seq, &body);
    let mut b = Request::post(path).header("authorization", auth);
    if let Some(m) = media {
        b = b.header("content-type", m);
    }
    if let Some(e) = encoding {
        b = b.header("content-encoding", e);
    }
    b.body(Body::from(body)).unwrap()
}

async fn push(h: &mut Harness, snap: &proto::Snapshot) -> Reply {
    let body = serde_json::to_vec(snap).unwrap();
    let seq = h.next_seq();
    send(h, signed("/v1/snapshots", body, seq, KEY, None)).await
}

async fn push_raw(h: &mut Harness, body: Vec<u8>, encoding: Option<&str>) -> Reply {
    let seq = h.next_seq();
    send(h, signed("/v1/snapshots", body, seq, KEY, encoding)).await
}

fn get(path: &str, token: Option<&str>) -> Request<Body> {
    let mut b = Request::get(path);
    if let Some(t) = token {
        b = b.header("authorization", format!("Bearer {t}"));
    }
    b.body(Body::empty()).unwrap()
}

fn history(h: &Harness) -> Vec<crate::store::HistoryRow> {
    lock(&h.server.db).history(None, 100).unwrap()
}

/// Asserts that `reply` has `status` and `code`, that the maps did not change, and that the last
/// history row (if `recorded`) is a refusal mentioning `needle`.
fn check_refused(
    h: &Harness,
    before: &std::collections::BTreeMap<String, Vec<u8>>,
    reply: &Reply,
    status: StatusCode,
    code: &str,
    recorded: Option<&str>,
) {
    assert_eq!(reply.status, status, "{}", reply.json);
    assert_eq!(reply.json["error"], code, "{}", reply.json);
    assert!(
        reply.json["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty())
    );
    assert_eq!(&h.maps(), before, "maps changed after a refused request");
    if let Some(needle) = recorded {
        let last = &history(h)[0];
        assert!(
            matches!(last.outcome.as_str(), "refused" | "held"),
            "{last:?}"
        );
        assert!(
            last.detail.as_deref().unwrap_or("").contains(needle),
            "{last:?} lacks {needle:?}"
        );
    }
}

async fn applied(h: &mut Harness) -> std::collections::BTreeMap<String, Vec<u8>> {
    let r = push(h, &snapshot(ALIASES, 1)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    h.maps()
}

#[tokio::test]
async fn a_valid_snapshot_is_applied_and_live_before_200() {
    let mut h = Harness::new("");
    let snap = snapshot(ALIASES, 1);
    let r = push(&mut h, &snap).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    assert_eq!(r.json["version"], 1);
    assert_eq!(r.json["hash"], snap.hash.as_str());
    let virt = h.map("postfix/virtual");
    assert!(
        virt.contains("a@example.org r1@remote.net, r2@remote.net\n"),
        "{virt}"
    );
    assert!(
        virt.contains("list@example.com list-archive@example.com, x@remote.net\n"),
        "{virt}"
    );
    assert!(
        !virt.contains("list-archive@example.org "),
        "a punt address has no virtual entry: {virt}"
    );
    assert!(
        h.map("postfix/relay_recipients")
            .contains("list-archive@example.org OK\n")
    );
    assert!(
        h.map("postfix/transport")
            .contains("example.org relay:[127.0.0.1]:2525\n")
    );
    assert!(
        h.map("exim/forward")
            .contains("a@example.org: r1@remote.net, r2@remote.net\n")
    );
    assert!(
        h.map("postfix/virtual")
            .starts_with("# mxsync: generated file")
    );
    assert!(
        h.map("exim/domains")
            .contains(&format!("# agent mx1 version 1 hash {}\n", snap.hash))
    );
    let rows = history(&h);
    assert_eq!(rows.len(), 1);
    assert_eq!(
        (rows[0].outcome.as_str(), rows[0].addresses, rows[0].split),
        ("applied", Some(6), Some(2))
    );
    // A resend of the applied hash is 200 and changes nothing.
    let before = h.maps();
    let r = push(&mut h, &snap).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(h.maps(), before);
    assert_eq!(history(&h).len(), 1);
}

#[tokio::test]
async fn compressed_bodies_are_accepted() {
    for enc in ["zstd", "gzip"] {
        let mut h = Harness::new("");
        let json = serde_json::to_vec(&snapshot(ALIASES, 1)).unwrap();
        let body = if enc == "zstd" {
            zstd::stream::encode_all(&json[..], 3).unwrap()
        } else {
            use std::io::Write;
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(&json).unwrap();
            e.finish().unwrap()
        };
        let r = push_raw(&mut h, body, Some(enc)).await;
        assert_eq!(r.status, StatusCode::OK, "{enc}: {}", r.json);
    }
}

#[tokio::test]
async fn signatures_and_replays_are_refused_with_401() {
    let mut h = Harness::new("");
    let before = applied(&mut h).await;
    let body = serde_json::to_vec(&snapshot("a: other@remote.net\n", 2)).unwrap();
    // Wrong key.
    let r = send(
        &h,
        signed(
            "/v1/snapshots",
            body.clone(),
            10,
            "another-key-0123456789abcdef0123456",
            None,
        ),
    )
    .await;
    check_refused(
        &h,
        &before,
        &r,
        StatusCode::UNAUTHORIZED,
        "bad_signature",
        None,
    );
    // No header at all.
    let req = Request::post("/v1/snapshots")
        .body(Body::from(body.clone()))
        .unwrap();
    check_refused(
        &h,
        &before,
        &send(&h, req).await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        None,
    );
    // A signature over another path.
    let auth = proto::sign::header(KEY.as_bytes(), "mx1", "POST", "/v1/heartbeat", 11, &body);
    let req = Request::post("/v1/snapshots")
        .header("authorization", auth)
        .body(Body::from(body.clone()))
        .unwrap();
    check_refused(
        &h,
        &before,
        &send(&h, req).await,
        StatusCode::UNAUTHORIZED,
        "bad_signature",
        None,
    );
    // A replay of the sequence number of the applied push, and one from the past.
    for seq in [1, 0] {
        let r = send(&h, signed("/v1/snapshots", body.clone(), seq, KEY, None)).await;
        check_refused(&h, &before, &r, StatusCode::UNAUTHORIZED, "replay", None);
    }
    let metrics = h.server.metrics.encode();
    assert!(
        metrics.contains("mxsync_ingest_rejected_total{agent=\"mx1\",reason=\"replay\"} 2"),
        "{metrics}"
    );
}

#[tokio::test]
async fn invalid_snapshots_are_refused_and_recorded() {
    let mut h = Harness::new("");
    let before = applied(&mut h).await;
    // Malformed JSON.
    let r = push_raw(&mut h, b"{not json".to_vec(), None).await;
    check_refused(
        &h,
        &before,
        &r,
        StatusCode::BAD_REQUEST,
        "bad_request",
        Some("malformed snapshot json"),
    );
    // Each snapshot refused 422 as invalid, with what the message says, and nothing changed.
    let base = || snapshot("a: other@remote.net\n", 2);
    let rehashed = |mut s: proto::Snapshot| {
        s.hash = s.content.hash();
        s
    };
    let mut cases: Vec<(proto::Snapshot, &str)> = Vec::new();
    // The claimed hash does not match the content.
    let mut s = base();
    s.hash = "0".repeat(64);
    cases.push((s, "content hash"));
    // Addresses made to break a map line.
    for bad in [
        "a@x.net\nroot@y.net OK",
        "a b@x.net",
        "a,b@x.net",
        "a:b@x.net",
        "\"a\"@x.net",
    ] {
        let mut s = base();
        s.content.recipients.push(proto::snapshot::Recipient {
            address: bad.into(),
            file: 0,
            line: 1,
        });
        s.content.aliases[0].targets[0].value = bad.into();
        cases.push((rehashed(s), "not a valid"));
    }
    // A local name that would become a map-breaking punt unit (`a b@example.org`).
    let mut s = snapshot("a: r@remote.net, other@remote.net\n", 2);
    s.content.aliases[0].targets[0] = proto::Target {
        kind: proto::Kind::Local,
        value: "a b".into(),
        line: 1,
    };
    cases.push((rehashed(s), "not a valid local name"));
    // A format this server does not know, even with a good hash: refused, the format named.
    let mut s = base();
    s.format = proto::snapshot::FORMAT + 1;
    cases.push((s, "snapshot format 2 is not 1"));
    // Strings past the limit (a name of 64 KiB and a byte, a target), with good hashes.
    let huge = "x".repeat(proto::snapshot::MAX_STRING + 1);
    let mut s = base();
    s.content.aliases[0].name = huge.clone();
    cases.push((rehashed(s), "at most 65536"));
    let mut s = base();
    s.content.aliases[0].targets[0].value = huge;
    cases.push((rehashed(s), "at most 65536"));
    // A snapshot signed by mx1 that claims to be from another agent.
    let mut s = base();
    s.agent = "mx9".into();
    cases.push((s, "mx9"));
    for (s, why) in cases {
        let r = push(&mut h, &s).await;
        check_refused(
            &h,
            &before,
            &r,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_snapshot",
            Some(why),
        );
    }
}

#[tokio::test]
async fn binary_snapshots_apply_as_json_ones_do_and_bad_ones_change_nothing() {
    use proto::snapshot::MEDIA_TYPE;
    // The same snapshot as JSON and as a binary body (compressed, as the agent sends it):
    // the same reply and byte-identical maps.
    let snap = snapshot(ALIASES, 1);
    let mut json = Harness::new("");
    let before = applied(&mut json).await;
    let mut h = Harness::new("");
    let body = zstd::stream::encode_all(&snap.to_binary()[..], 1).unwrap();
    let seq = h.next_seq();
    let req = signed_as(
        "/v1/snapshots",
        body,
        seq,
        KEY,
        Some("zstd"),
        Some(MEDIA_TYPE),
    );
    let r = send(&h, req).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    assert_eq!(r.json["hash"], snap.hash.as_str());
    assert_eq!(h.maps(), before);

    // Each refusal changes nothing: (body, encoding, content-type, status, code, recorded).
    let next = snapshot(CHANGED, 2);
    let mut truncated = next.to_binary();
    truncated.truncate(truncated.len() - 3);
    let mut bad_kind = next.to_binary();
    let at = bad_kind.len() - 1;
    bad_kind[at] = 9;
    let cases: Vec<(Vec<u8>, &str, StatusCode, &str, &str)> = vec![
        (
            truncated,
            MEDIA_TYPE,
            StatusCode::BAD_REQUEST,
            "bad_request",
            "malformed binary snapshot, byte",
        ),
        (
            bad_kind,
            MEDIA_TYPE,
            StatusCode::BAD_REQUEST,
            "bad_request",
            "malformed binary snapshot, byte",
        ),
        // A binary body sent as JSON, and JSON sent as binary.
        (
            next.to_binary(),
            "application/json",
            StatusCode::BAD_REQUEST,
            "bad_request",
            "malformed snapshot json",
        ),
        (
            serde_json::to_vec(&next).unwrap(),
            MEDIA_TYPE,
            StatusCode::BAD_REQUEST,
            "bad_request",
            "\"mxsync-snapshot\" expected",
        ),
        (
            next.to_binary(),
            "text/plain",
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "unsupported content-type \"text/plain\"",
        ),
    ];
    for (body, media, status, code, recorded) in cases {
        let seq = h.next_seq();
        let r = send(
            &h,
            signed_as("/v1/snapshots", body, seq, KEY, None, Some(media)),
        )
        .await;
        check_refused(&h, &before, &r, status, code, Some(recorded));
    }
    // Deltas are JSON only.
    let seq = h.next_seq();
    let req = signed_as(
        "/v1/deltas",
        next.to_binary(),
        seq,
        KEY,
        None,
        Some(MEDIA_TYPE),
    );
    let r = send(&h, req).await;
    check_refused(
        &h,
        &before,
        &r,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
        Some("snapshot\": use application/json"),
    );
    // The same binary snapshot with a parameter on its type applies.
    let seq = h.next_seq();
    let media = format!("{MEDIA_TYPE}; charset=binary");
    let req = signed_as(
        "/v1/snapshots",
        next.to_binary(),
        seq,
        KEY,
        None,
        Some(&media),
    );
    let r = send(&h, req).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    assert_ne!(h.maps(), before);
}

#[tokio::test]
async fn a_domain_the_agent_may_not_speak_for_is_403() {
    let mut h = Harness::new("");
    let before = applied(&mut h).await;
    let mut b = proto::Builder::new(&["example.org".to_string(), "victim.example".to_string()]);
    b.aliases("/etc/aliases", b"postmaster: attacker@evil.example\n");
    let content = b.finish();
    let s = proto::Snapshot {
        format: 1,
        agent: "mx1".into(),
        version: 2,
        hash: content.hash(),
        created_at: 0,
        content,
    };
    let r = push(&mut h, &s).await;
    check_refused(
        &h,
        &before,
        &r,
        StatusCode::FORBIDDEN,
        "forbidden",
        Some("victim.example"),
    );
}

#[tokio::test]
async fn an_older_version_with_another_hash_is_409() {
    let mut h = Harness::new("");
    let r = push(&mut h, &snapshot(ALIASES, 5)).await;
    assert_eq!(r.status, StatusCode::OK);
    let before = h.maps();
    for v in [5, 4] {
        let r = push(&mut h, &snapshot("a: other@remote.net\n", v)).await;
        check_refused(
            &h,
            &before,
            &r,
            StatusCode::CONFLICT,
            "version_conflict",
            Some("not above"),
        );
        assert_eq!(r.json["applied_version"], 5);
    }
}

#[tokio::test]
async fn bodies_over_the_limit_are_413_including_zstd_bombs() {
    let mut h = Harness::new("");
    let before = applied(&mut h).await;
    let r = push_raw(&mut h, vec![b' '; 1_000_001], None).await;
    check_refused(
        &h,
        &before,
        &r,
        StatusCode::PAYLOAD_TOO_LARGE,
        "too_large",
        None,
    );
    // 64 MB of zeros compress to a few kB: the limit applies to the decompressed size.
    let bomb = zstd::stream::encode_all(std::io::repeat(0).take(64 << 20), 19).unwrap();
    assert!(bomb.len() < 100_000);
    let r = push_raw(&mut h, bomb, Some("zstd")).await;
    check_refused(
        &h,
        &before,
        &r,
        StatusCode::PAYLOAD_TOO_LARGE,
        "too_large",
        Some("exceeds"),
    );
}

use std::io::Read;

/// Twenty aliases, each forwarded: a content the shrink guard holds when cut in half.
fn twenty_aliases() -> String {
    (0..20)
        .map(|i| format!("u{i}: u{i}@remote.net\n"))
        .collect()
}

#[tokio::test]
async fn the_shrink_guard_holds_then_release_applies() {
    let mut h = Harness::new("");
    let big = twenty_aliases();
    assert_eq!(
        push(&mut h, &snapshot(&big, 1)).await.status,
        StatusCode::OK
    );
    let before = h.maps();
    // The file cut in half: 10 of 20 aliases.
    let half: String = big.lines().take(10).map(|l| format!("{l}\n")).collect();
    let r = push(&mut h, &snapshot(&half, 2)).await;
    check_refused(&h, &before, &r, StatusCode::LOCKED, "held", Some("held"));
    let s = status(&h.server);
    assert_eq!(s.state, "stale");
    assert!(
        s.agents[0]
            .problem
            .as_deref()
            .unwrap_or("")
            .contains("release mx1"),
        "{s:?}"
    );
    // A heartbeat with the held hash does not ask for it again.
    let hb = serde_json::to_vec(&Heartbeat {
        version: 2,
        hash: snapshot(&half, 2).hash,
    })
    .unwrap();
    let seq = h.next_seq();
    let r = send(&h, signed("/v1/heartbeat", hb, seq, KEY, None)).await;
    assert_eq!(r.json["need_snapshot"], false);
    // The operator releases it.
    assert!(lock(&h.server.db).request_release("mx1", false).unwrap());
    h.server.apply_releases();
    assert!(
        h.map("postfix/relay_domains")
            .contains("# agent mx1 version 2 ")
    );
    assert!(!h.map("postfix/virtual").contains("u15@example.org"));
    assert_eq!(
        history(&h)
            .iter()
            .filter(|r| r.outcome == "released")
            .count(),
        1
    );
}

#[tokio::test]
async fn heartbeat_says_whether_a_snapshot_is_needed() {
    let mut h = Harness::new("");
    let snap = snapshot(ALIASES, 1);
    for (hash, applied_first, need) in [
        (snap.hash.clone(), false, true),
        (snap.hash.clone(), true, false),
        ("f".repeat(64), true, true),
    ] {
        if applied_first && h.server.live.lock().unwrap()["mx1"].applied.is_none() {
            push(&mut h, &snap).await;
        }
        let body = serde_json::to_vec(&Heartbeat { version: 1, hash }).unwrap();
        let seq = h.next_seq();
        let r = send(&h, signed("/v1/heartbeat", body, seq, KEY, None)).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.json);
        assert_eq!(r.json["need_snapshot"], need, "{}", r.json);
    }
    let seq = h.next_seq();
    let r = send(
        &h,
        signed("/v1/heartbeat", b"nope".to_vec(), seq, KEY, None),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn status_metrics_and_healthz_carry_no_addresses() {
    let mut h = Harness::new("");
    let r = send(&h, get("/v1/status", None)).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.json["state"], "never");
    applied(&mut h).await;
    let r = send(&h, get("/v1/status", None)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    assert_eq!(r.json["state"], "fresh");
    assert_eq!(r.json["agents"][0]["version"], 1);
    let body = r.json.to_string();
    let metrics = match send(&h, get("/metrics", None)).await.json {
        serde_json::Value::String(s) => s,
        other => other.to_string(),
    };
    for name in [
        "mxsync_snapshot_version",
        "mxsync_last_contact_timestamp_seconds",
        "mxsync_last_apply_success_timestamp_seconds",
        "mxsync_addresses",
        "mxsync_apply_duration_seconds",
    ] {
        assert!(metrics.contains(name), "{name} missing: {metrics}");
    }
    for text in [&body, &metrics] {
        assert!(
            !text.contains("remote.net")
                && !text.contains("a@example.org")
                && !text.contains("list@"),
            "{text}"
        );
    }
    assert_eq!(send(&h, get("/healthz", None)).await.status, StatusCode::OK);
}

#[tokio::test]
async fn a_status_token_protects_status_and_metrics() {
    let h = Harness::new("");
    drop(h);
    let dir = tempfile::tempdir().unwrap();
    crate::testkit::write_secret(
        &dir.path().join("status.token"),
        "status-token-0123456789abcdef012345",
    );
    let cfg = crate::testkit::load(dir.path(), "");
    let mut cfg2 = cfg.clone();
    cfg2.status_token = Some("status-token-0123456789abcdef012345".into());
    let server = Server::with_store(cfg2, crate::store::Store::open_in_memory().unwrap()).unwrap();
    let h = Harness {
        dir,
        server,
        seq: 0,
    };
    for path in ["/v1/status", "/metrics"] {
        assert_eq!(
            send(&h, get(path, None)).await.status,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            send(&h, get(path, Some("wrong"))).await.status,
            StatusCode::UNAUTHORIZED
        );
        assert_ne!(
            send(&h, get(path, Some("status-token-0123456789abcdef012345")))
                .await
                .status,
            StatusCode::UNAUTHORIZED
        );
    }
}

#[tokio::test]
async fn plans_and_history_need_the_read_token() {
    let mut h = Harness::new("");
    applied(&mut h).await;
    let r = send(&h, get("/v1/plan/list@example.org", Some(READ))).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    assert_eq!(r.json["class"], "split");
    assert_eq!(r.json["punt"][0], "list-archive@example.org");
    assert_eq!(r.json["reasons"][0]["code"], "file");
    assert_eq!(
        send(&h, get("/v1/plan/nobody@example.org", Some(READ)))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        send(&h, get("/v1/plan/a@other.example", Some(READ)))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        send(&h, get("/v1/plan/list@example.org", None))
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        send(&h, get("/v1/plan/list@example.org", Some("x")))
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    let r = send(&h, get("/v1/snapshots", Some(READ))).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json[0]["outcome"], "applied");
    assert_eq!(
        send(&h, get("/v1/snapshots", None)).await.status,
        StatusCode::UNAUTHORIZED
    );
    // A server without a read token serves neither.
    let mut cfg = (*h.server.cfg()).clone();
    cfg.read_token = None;
    let server = Server::with_store(cfg, crate::store::Store::open_in_memory().unwrap()).unwrap();
    let h2 = Harness {
        dir: tempfile::tempdir().unwrap(),
        server,
        seq: 0,
    };
    assert_eq!(
        send(&h2, get("/v1/plan/list@example.org", Some(READ)))
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        send(&h2, get("/v1/snapshots", Some(READ))).await.status,
        StatusCode::FORBIDDEN
    );
}

#[tokio::test]
async fn a_failed_apply_keeps_the_old_maps_and_shows_a_problem() {
    let mut h = Harness::new("");
    let fail = h.dir.path().join("fail-prepare");
    let mut cfg = (*h.server.cfg()).clone();
    cfg.config.output.prepare = vec![
        "/bin/sh".into(),
        "-c".into(),
        format!("test ! -e {}", fail.display()),
    ];
    h.server = Server::with_store(cfg, crate::store::Store::open_in_memory().unwrap()).unwrap();
    let before = applied(&mut h).await;
    std::fs::write(&fail, "").unwrap();
    let r = push(&mut h, &snapshot(CHANGED, 2)).await;
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(r.json["error"], "apply_failed");
    assert!(
        !r.json["message"].as_str().unwrap().contains("/bin/sh"),
        "no internal detail: {}",
        r.json
    );
    assert_eq!(h.maps(), before);
    assert_eq!(history(&h)[0].outcome, "failed");
    let s = status(&h.server);
    assert!(
        s.agents[0]
            .problem
            .as_deref()
            .unwrap_or("")
            .contains("prepare command failed"),
        "{s:?}"
    );
    // The fault clears; the next push succeeds and the problem goes.
    std::fs::remove_file(&fail).unwrap();
    let r = push(&mut h, &snapshot(CHANGED, 3)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    assert!(
        h.map("postfix/virtual")
            .contains("a@example.org other@remote.net")
    );
    assert_eq!(status(&h.server).agents[0].problem, None);
}

/// The history row is written while the new maps are, and they go live only once it is: a row
/// that cannot be written (refused here by a trigger, as a full or failing disk would) leaves the
/// old maps in force and no generation behind, says so, and the next push applies.
#[tokio::test]
async fn maps_go_live_only_once_their_history_row_is_written() {
    let mut h = Harness::new("");
    let before = applied(&mut h).await;
    let refuse = "CREATE TRIGGER no_room BEFORE INSERT ON bodies \
                  BEGIN SELECT RAISE(ABORT, 'no room for the body'); END;";
    lock(&h.server.db).execute_batch(refuse).unwrap();
    let r = push(&mut h, &snapshot(CHANGED, 2)).await;
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR, "{}", r.json);
    assert_eq!(h.maps(), before);
    let gens = std::fs::read_dir(h.dir.path().join("maps/.gen")).unwrap();
    assert_eq!(gens.count(), 1, "only the live generation is left");
    assert!(
        history(&h).iter().all(|row| row.version != 2),
        "no row of version 2: {:?}",
        history(&h)
    );
    let s = status(&h.server);
    assert!(
        (s.agents[0].problem.as_deref()).is_some_and(|p| p.contains("cannot record version 2")),
        "{s:?}"
    );
    lock(&h.server.db)
        .execute_batch("DROP TRIGGER no_room;")
        .unwrap();
    let r = push(&mut h, &snapshot(CHANGED, 3)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    assert!(
        h.map("postfix/virtual")
            .contains("a@example.org other@remote.net")
    );
    assert_eq!(history(&h)[0].outcome, "applied");
    assert_eq!(status(&h.server).agents[0].problem, None);
}

#[tokio::test]
async fn a_later_complete_snapshot_replaces_a_held_one_without_the_operator() {
    let mut h = Harness::new("");
    let full = twenty_aliases();
    assert_eq!(
        push(&mut h, &snapshot(&full, 1)).await.status,
        StatusCode::OK
    );
    let half: String = full.lines().take(10).map(|l| format!("{l}\n")).collect();
    assert_eq!(
        push(&mut h, &snapshot(&half, 2)).await.status,
        StatusCode::LOCKED
    );
    assert_eq!(status(&h.server).state, "stale");
    // The file is whole again (one alias changed): applied at once, the hold is gone.
    let fixed = full.replace("u3@remote.net", "u3@elsewhere.net");
    let r = push(&mut h, &snapshot(&fixed, 3)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    assert!(
        h.map("postfix/virtual")
            .contains("u3@example.org u3@elsewhere.net\n")
    );
    let s = status(&h.server);
    assert_eq!(
        (s.state.as_str(), s.agents[0].problem.as_deref()),
        ("fresh", None),
        "{s:?}"
    );
    assert_eq!(
        history(&h)
            .iter()
            .filter(|r| r.outcome == "superseded")
            .count(),
        1
    );
}

fn delta_between(old: &str, new: &str, version: u64) -> proto::delta::Delta {
    let (a, b) = (crate::testkit::content(old), crate::testkit::content(new));
    proto::delta::Delta {
        format: proto::snapshot::FORMAT,
        agent: "mx1".into(),
        version,
        base_hash: a.hash(),
        hash: b.hash(),
        created_at: 0,
        changes: proto::delta::diff(&a, &b),
    }
}

async fn push_delta(h: &mut Harness, d: &proto::delta::Delta) -> Reply {
    let body = serde_json::to_vec(d).unwrap();
    let seq = h.next_seq();
    send(h, signed("/v1/deltas", body, seq, KEY, None)).await
}

#[tokio::test]
async fn a_delta_gives_the_maps_the_full_snapshot_gives() {
    let (mut by_delta, mut by_full) = (Harness::new(""), Harness::new(""));
    applied(&mut by_delta).await;
    applied(&mut by_full).await;
    let r = push_delta(&mut by_delta, &delta_between(ALIASES, CHANGED, 2)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    assert_eq!(r.json["version"], 2);
    let r = push(&mut by_full, &snapshot(CHANGED, 2)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    assert_eq!(by_delta.maps(), by_full.maps());
    assert!(
        by_delta
            .map("postfix/virtual")
            .contains("a@example.org other@remote.net")
    );
    // Stored as the delta on the row it was applied to; rebuilt, it is the full snapshot.
    let rows = history(&by_delta);
    assert_eq!((rows[0].version, rows[0].outcome.as_str()), (2, "applied"));
    let db = lock(&by_delta.server.db);
    let chain = db.chain(rows[0].id).unwrap();
    assert_eq!(
        chain.iter().map(|l| (l.id, l.base)).collect::<Vec<_>>(),
        vec![(rows[1].id, None), (rows[0].id, Some(rows[1].id))]
    );
    let (snap, links) = crate::load_stored(&db, rows[0].id)
        .unwrap()
        .expect("stored");
    assert_eq!(links, 1);
    assert_eq!((snap.version, &snap.hash), (2, &rows[0].hash));
    assert_eq!(snap.content, crate::testkit::content(CHANGED));
}

/// How a step of [`deltas_in_a_row_give_what_full_snapshots_give`] reaches the receiver.
#[derive(Debug, Clone, Copy)]
enum How {
    Delta,
    Full,
    /// A delta claiming a wrong hash (refused), then the right one.
    RefusedFirst,
}

#[tokio::test]
async fn deltas_in_a_row_give_what_full_snapshots_give() {
    let (mut by_delta, mut by_full) = (Harness::new(""), Harness::new(""));
    applied(&mut by_delta).await;
    applied(&mut by_full).await;
    let with = |a: &str, extra: &str| {
        format!("a: {a}\nlist: x@remote.net, list-archive\nlist-archive: /var/archive\n{extra}")
    };
    // Each step: the aliases now, how they reach `by_delta`, and whether it then keeps the
    // replaced content as the spare the next delta is applied to in place (only after a delta).
    let steps = [
        (CHANGED.to_string(), How::Delta, true),
        (with("b@remote.net", ""), How::Delta, true),
        (
            with("b@remote.net", "new: n@remote.net\n"),
            How::Delta,
            true,
        ),
        (
            with("c@remote.net", "new: n@remote.net\n"),
            How::Full,
            false,
        ),
        (
            with("c@remote.net", "new: m@remote.net\n"),
            How::Delta,
            true,
        ),
        (with("c@remote.net", "new: a\n"), How::RefusedFirst, true),
        (with("d@remote.net", "new: a\nz: list\n"), How::Delta, true),
        (with("d@remote.net", "z: list\n"), How::Delta, true),
    ];
    let mut old = ALIASES.to_string();
    for (version, (new, how, spare)) in (2..).zip(steps) {
        let d = delta_between(&old, &new, version);
        if let How::RefusedFirst = how {
            let mut bad = d.clone();
            bad.hash = crate::testkit::content("x: y@remote.net\n").hash();
            let r = push_delta(&mut by_delta, &bad).await;
            assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.json);
        }
        let r = match how {
            How::Full => push(&mut by_delta, &snapshot(&new, version)).await,
            How::Delta | How::RefusedFirst => push_delta(&mut by_delta, &d).await,
        };
        assert_eq!(r.status, StatusCode::OK, "{how:?} {new:?}: {}", r.json);
        let r = push(&mut by_full, &snapshot(&new, version)).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.json);
        assert_eq!(by_delta.maps(), by_full.maps(), "{how:?} {new:?}");
        let content = |h: &Harness| {
            let live = lock(&h.server.live);
            let a = live["mx1"].applied.as_ref().expect("applied");
            (a.hash.clone(), a.content.clone())
        };
        assert_eq!(content(&by_delta), content(&by_full), "{how:?} {new:?}");
        let kept = crate::ingest::spare_fits(&lock(&by_delta.server.live)["mx1"]);
        assert_eq!(kept, spare.then_some(true), "{how:?} {new:?}");
        old = new;
    }
}

#[tokio::test]
async fn deltas_that_do_not_fit_are_refused_and_change_nothing() {
    let mut h = Harness::new("");
    // Before anything is applied, every delta has an unknown base.
    let r = push_delta(&mut h, &delta_between(ALIASES, CHANGED, 2)).await;
    check_refused(
        &h,
        &Default::default(),
        &r,
        StatusCode::PRECONDITION_FAILED,
        "unknown_base",
        None,
    );
    let before = applied(&mut h).await;
    let rows = history(&h).len();
    // Against a base this receiver does not hold: the agent falls back to the full snapshot.
    let other = "a: x@remote.net\n";
    let r = push_delta(&mut h, &delta_between(other, CHANGED, 2)).await;
    check_refused(
        &h,
        &before,
        &r,
        StatusCode::PRECONDITION_FAILED,
        "unknown_base",
        None,
    );
    assert_eq!(history(&h).len(), rows, "a fallback is not a refusal");
    // Claiming a hash the changes do not give.
    let mut d = delta_between(ALIASES, CHANGED, 2);
    d.hash = crate::testkit::content(other).hash();
    let r = push_delta(&mut h, &d).await;
    check_refused(
        &h,
        &before,
        &r,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_snapshot",
        Some("content hash"),
    );
    // Changes that name what the base does not have.
    let mut d = delta_between(ALIASES, CHANGED, 2);
    d.changes.aliases.remove = vec!["nobody-here".into()];
    let r = push_delta(&mut h, &d).await;
    check_refused(
        &h,
        &before,
        &r,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_snapshot",
        Some("nobody-here"),
    );
    // A delta may not smuggle in what a full snapshot may not carry.
    let mut d = delta_between(ALIASES, CHANGED, 2);
    d.changes.aliases.upsert[0].targets[0].value = "a@x\nroot@y OK".into();
    let r = push_delta(&mut h, &d).await;
    check_refused(
        &h,
        &before,
        &r,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_snapshot",
        Some("not a valid address"),
    );
    // Signed for the other endpoint.
    let body = serde_json::to_vec(&delta_between(ALIASES, CHANGED, 2)).unwrap();
    let seq = h.next_seq();
    let mut req = signed("/v1/snapshots", body, seq, KEY, None);
    *req.uri_mut() = "/v1/deltas".parse().unwrap();
    let r = send(&h, req).await;
    check_refused(
        &h,
        &before,
        &r,
        StatusCode::UNAUTHORIZED,
        "bad_signature",
        None,
    );
    // And the right one still applies.
    let r = push_delta(&mut h, &delta_between(ALIASES, CHANGED, 2)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
}

#[tokio::test]
async fn another_agents_apply_keeps_this_agents_lines_as_a_fresh_render_gives_them() {
    let extra = "[[agents]]\nid = \"mx2\"\nkey_file = \"mx2.key\"\ndomains = [\"example.net\"]\n\
                 primary = \"[127.0.0.2]:25\"\n";
    let dir = tempfile::tempdir().unwrap();
    crate::testkit::write_secret(&dir.path().join("mx2.key"), &format!("{KEY}-2"));
    let cfg = crate::testkit::load(dir.path(), extra);
    let mut h = Harness {
        server: Server::with_store(cfg, crate::store::Store::open_in_memory().unwrap()).unwrap(),
        dir,
        seq: 0,
    };
    let two = |aliases: &str, version: u64| {
        let mut b = proto::Builder::new(&["example.net".to_string()]);
        b.aliases("/etc/aliases", aliases.as_bytes());
        let content = b.finish();
        let snap = proto::Snapshot {
            format: proto::snapshot::FORMAT,
            agent: "mx2".into(),
            version,
            hash: content.hash(),
            created_at: 0,
            content,
        };
        serde_json::to_vec(&snap).unwrap()
    };
    let key2 = format!("{KEY}-2");
    let sign2 = |body: Vec<u8>, seq: u64| {
        let auth = proto::sign::header(key2.as_bytes(), "mx2", "POST", "/v1/snapshots", seq, &body);
        Request::post("/v1/snapshots")
            .header("authorization", auth)
            .body(Body::from(body))
            .unwrap()
    };
    assert_eq!(
        push(&mut h, &snapshot(ALIASES, 1)).await.status,
        StatusCode::OK
    );
    let r = send(&h, sign2(two("n: x@remote.net\n", 1), 1)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    assert_eq!(
        push(&mut h, &snapshot(CHANGED, 2)).await.status,
        StatusCode::OK
    );
    let r = send(&h, sign2(two("n: y@remote.net\nm: n\n", 2), 2)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    // Every file equals what rendering both applied snapshots from scratch gives.
    let (c1, c2) = (
        crate::testkit::content(CHANGED),
        serde_json::from_slice::<proto::Snapshot>(&two("n: y@remote.net\nm: n\n", 2))
            .unwrap()
            .content,
    );
    let (h1, h2) = (c1.hash(), c2.hash());
    let fresh = crate::render::render(
        &[
            crate::render::AgentMaps {
                id: "mx1",
                version: 2,
                hash: &h1,
                primary: "[127.0.0.1]:2525",
                content: &c1,
            },
            crate::render::AgentMaps {
                id: "mx2",
                version: 2,
                hash: &h2,
                primary: "[127.0.0.2]:25",
                content: &c2,
            },
        ],
        &["postfix".to_string(), "exim".to_string()],
        &[],
    )
    .unwrap();
    assert_eq!(h.maps(), fresh.files());
    assert!(
        h.map("postfix/virtual")
            .contains("m@example.net y@remote.net\n")
    );
}

/// The domains the live `stale_domains` maps defer: (postfix, exim), each sorted.
fn deferred_in_maps(h: &Harness) -> (Vec<String>, Vec<String>) {
    let domains = |name: &str| -> Vec<String> {
        (h.map(name).lines())
            .filter(|l| !l.starts_with('#'))
            .map(|l| l.split(' ').next().unwrap_or("").to_string())
            .collect()
    };
    (
        domains("postfix/stale_domains"),
        domains("exim/stale_domains"),
    )
}

#[tokio::test(start_paused = true)]
async fn unknown_recipients_are_deferred_while_stale_or_held_and_refused_when_fresh() {
    let both = vec!["example.com".to_string(), "example.org".to_string()];
    for (policy, deferred) in [("defer", both.clone()), ("reject", vec![])] {
        let mut h = Harness::new(&format!(
            "[freshness]\nwarn_after_secs = 1\nstale_after_secs = 2\nunknown_when_stale = \"{policy}\"\n"
        ));
        // (what the maps defer, what status says, the metric) after a freshness pass.
        let check = |h: &Harness, maps: &[String], said: &str| {
            h.server.check_freshness();
            crate::ingest::render_if_deferring_changed(&h.server);
            assert_eq!(
                deferred_in_maps(h),
                (maps.to_vec(), maps.to_vec()),
                "{policy}"
            );
            assert_eq!(
                status(&h.server).agents[0].unknown_recipients,
                said,
                "{policy}"
            );
            let metric = format!(
                "mxsync_unknown_recipients_deferred{{agent=\"mx1\"}} {}",
                i32::from(said == "defer")
            );
            assert!(
                h.server.metrics.encode().contains(&metric),
                "{policy}: {metric}"
            );
        };
        let big = twenty_aliases();
        assert_eq!(
            push(&mut h, &snapshot(&big, 1)).await.status,
            StatusCode::OK
        );
        check(&h, &[], "reject");
        // No contact past stale_after: stale.
        tokio::time::advance(std::time::Duration::from_secs(3)).await;
        let said = if policy == "defer" { "defer" } else { "reject" };
        check(&h, &deferred, said);
        // The agent is back: fresh, unknown recipients refused again.
        assert_eq!(
            push(&mut h, &snapshot(&format!("{big}v: v@remote.net\n"), 2))
                .await
                .status,
            StatusCode::OK
        );
        check(&h, &[], "reject");
        // A snapshot held by the shrink guard: stale at once.
        let half: String = big.lines().take(5).map(|l| format!("{l}\n")).collect();
        assert_eq!(
            push(&mut h, &snapshot(&half, 3)).await.status,
            StatusCode::LOCKED
        );
        check(&h, &deferred, said);
        // The address maps are those of the applied snapshot throughout.
        assert!(
            h.map("postfix/virtual")
                .contains("v@example.org v@remote.net")
        );
    }
}

/// Sends a signed heartbeat for `version` of `aliases`.
async fn heartbeat_of(h: &mut Harness, aliases: &str, version: u64) {
    let hb = serde_json::to_vec(&Heartbeat {
        version,
        hash: snapshot(aliases, version).hash,
    })
    .unwrap();
    let seq = h.next_seq();
    let r = send(h, signed("/v1/heartbeat", hb, seq, KEY, None)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
}

#[tokio::test]
async fn a_hold_ends_when_the_agent_comes_back_and_release_applies_only_what_it_reports() {
    let mut h = Harness::new("");
    let big = twenty_aliases();
    let half: String = big.lines().take(10).map(|l| format!("{l}\n")).collect();
    let other = format!("{big}v: v@remote.net\n");
    assert_eq!(
        push(&mut h, &snapshot(&big, 1)).await.status,
        StatusCode::OK
    );
    let full = h.maps();
    let held = |h: &Harness| lock(&h.server.db).held("mx1").unwrap();
    let fresh_again = |h: &Harness| {
        h.server.check_freshness();
        let s = status(&h.server);
        (s.state == "fresh" && s.agents[0].problem.is_none() && held(h).is_none())
            .then_some(())
            .ok_or(format!("{s:?}"))
    };
    // Cut, then restored byte for byte: the push is the applied snapshot again, and the hold
    // ends; there is nothing left to release (before, `release` installed the cut file).
    assert_eq!(
        push(&mut h, &snapshot(&half, 2)).await.status,
        StatusCode::LOCKED
    );
    assert_eq!(held(&h).map(|(v, _)| v), Some(2));
    assert_eq!(
        push(&mut h, &snapshot(&big, 3)).await.status,
        StatusCode::OK
    );
    fresh_again(&h).unwrap();
    assert!(!lock(&h.server.db).request_release("mx1", false).unwrap());
    h.server.apply_releases();
    assert_eq!(h.maps(), full);
    assert!(
        history(&h)
            .iter()
            .any(|r| r.version == 2 && r.outcome == "dropped")
    );
    // The same by a heartbeat of the applied content.
    assert_eq!(
        push(&mut h, &snapshot(&half, 4)).await.status,
        StatusCode::LOCKED
    );
    heartbeat_of(&mut h, &big, 5).await;
    fresh_again(&h).unwrap();
    assert_eq!(h.maps(), full);
    // Held while the agent reports other content: a release is refused, a forced one applies.
    assert_eq!(
        push(&mut h, &snapshot(&half, 6)).await.status,
        StatusCode::LOCKED
    );
    heartbeat_of(&mut h, &other, 7).await;
    assert!(lock(&h.server.db).request_release("mx1", false).unwrap());
    h.server.apply_releases();
    assert_eq!(
        h.maps(),
        full,
        "a release of content the agent no longer reports"
    );
    assert_eq!(held(&h).map(|(v, _)| v), Some(6));
    assert!(
        !lock(&h.server.db)
            .agent("mx1")
            .unwrap()
            .unwrap()
            .release_requested
    );
    assert!(lock(&h.server.db).request_release("mx1", true).unwrap());
    h.server.apply_releases();
    assert!(!h.map("postfix/virtual").contains("u15@example.org"));
    assert!(held(&h).is_none());
}
