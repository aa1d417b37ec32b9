//! Backoff bounds; deltas from a patch's changes; receivers too old for binary snapshots.

use super::*;

#[test]
fn a_delta_uses_the_patch_changes_only_against_the_content_they_start_from() {
    let content = |aliases: &str| {
        let mut b = proto::Builder::new(&["example.org".to_string()]);
        // Enough unchanged aliases that a delta is worth sending.
        let rest: String = (0..10)
            .map(|i| format!("same{i}: s{i}@remote.net\n"))
            .collect();
        b.aliases("/etc/aliases", format!("{aliases}{rest}").as_bytes());
        Arc::new(b.finish())
    };
    let a = content("x: r@remote.net\ny: s@remote.net\n");
    let b = content("x: q@remote.net\ny: s@remote.net\n");
    let c = content("x: q@remote.net\ny: t@remote.net\n");
    let snap = |v: u64, content: &Arc<proto::Content>, since| {
        crate::run::current("mx1", v, Arc::clone(content), content.hash(), since)
    };
    let changes = |body: Option<Vec<u8>>| -> proto::delta::Changes {
        let json = zstd::stream::decode_all(&body.expect("a delta")[..]).expect("zstd");
        serde_json::from_slice::<proto::delta::Delta>(&json)
            .expect("a delta")
            .changes
    };
    let (sa, sb) = (snap(1, &a, None), snap(2, &b, None));
    // c was patched from b: against b the changes it carries are sent as they are, against a
    // (an older base) the two contents are diffed. The second set is not b's to c (a
    // stand-in): it is used only against b, as told.
    for carried in [proto::delta::diff(&b, &c), proto::delta::diff(&a, &b)] {
        let carried = Arc::new(carried);
        let sc = snap(3, &c, Some((sb.hash.clone(), Arc::clone(&carried))));
        assert_eq!(changes(encode_delta("mx1", &sb, &sc)), *carried);
        let against_a = changes(encode_delta("mx1", &sa, &sc));
        assert_eq!(against_a, proto::delta::diff(&a, &c));
    }
}

/// A receiver from before the binary body, on loopback: it answers a binary snapshot with
/// 415 and a JSON one with 200 and `reply`, and keeps the media type of each request.
async fn old_receiver(reply: SnapshotReply) -> (String, Arc<Mutex<Vec<String>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let kept = Arc::clone(&seen);
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 65536];
            // The head, then as many bytes as it says the body has.
            let end = loop {
                let n = sock.read(&mut chunk).await.unwrap();
                assert!(n > 0, "the request ended early");
                buf.extend_from_slice(&chunk[..n]);
                if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    break i + 4;
                }
            };
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let header = |name: &str| {
                (head.lines())
                    .find_map(|l| l.strip_prefix(name))
                    .map(|v| v.trim().to_string())
                    .unwrap_or_default()
            };
            let length: usize = header("content-length:").parse().unwrap();
            while buf.len() < end + length {
                let n = sock.read(&mut chunk).await.unwrap();
                assert!(n > 0, "the body ended early");
                buf.extend_from_slice(&chunk[..n]);
            }
            let media = header("content-type:");
            let (status, body) = if media == proto::snapshot::MEDIA_TYPE {
                let e = serde_json::json!({
                    "error": "unsupported_media_type",
                    "message": "unsupported content-type",
                });
                ("415 Unsupported Media Type", e.to_string())
            } else {
                ("200 OK", serde_json::to_string(&reply).unwrap())
            };
            kept.lock().unwrap().push(media);
            let out = format!(
                "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            sock.write_all(out.as_bytes()).await.unwrap();
        }
    });
    (url, seen)
}

#[tokio::test]
async fn a_receiver_that_cannot_read_binary_is_sent_json_and_binary_again_later() {
    let mut b = proto::Builder::new(&["example.org".to_string()]);
    b.aliases("/etc/aliases", b"x: r@remote.net\n");
    let content = Arc::new(b.finish());
    let cur = Arc::new(crate::run::current(
        "mx1",
        1,
        Arc::clone(&content),
        content.hash(),
        None,
    ));
    let reply = SnapshotReply {
        version: 1,
        hash: cur.hash.clone(),
        applied_at: 0,
    };
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let counters = Arc::new(Mutex::new(Counters::load(dir.path()).unwrap()));
    let (bin, json) = (proto::snapshot::MEDIA_TYPE, JSON);
    // Two pushes to a receiver that turns binary down, with `retry` before binary is tried
    // again, and the media types it was sent.
    let check = async |retry: Duration, expected: &[&str]| {
        let (url, seen) = old_receiver(reply.clone()).await;
        let target = Target {
            url,
            key: b"secret".to_vec(),
            agent: "mx1".into(),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
            json_since: Arc::default(),
            binary_retry: retry,
        };
        for _ in 0..2 {
            assert_eq!(target.push(&cur, None, &counters).await, Outcome::Accepted);
        }
        assert_eq!(*seen.lock().unwrap(), expected, "retry after {retry:?}");
    };
    // Within the hour, JSON only after the first refusal.
    check(BINARY_RETRY, &[bin, json, json]).await;
    // Once the time has passed (here at once), binary is tried again each time.
    check(Duration::ZERO, &[bin, json, bin, json]).await;
}

#[test]
fn a_receiver_that_cannot_read_binary_snapshots_is_told_apart_from_other_refusals() {
    let check = |status: u16, body: &str, expected: bool| {
        let status = reqwest::StatusCode::from_u16(status).unwrap();
        assert_eq!(binary_refused(status, body), expected, "{status} {body}");
    };
    let error = |code: &str, message: &str| {
        serde_json::json!({"error": code, "message": message}).to_string()
    };
    // What this receiver says to a type it does not know, and what one from before the
    // binary body said to it.
    let old = "malformed snapshot json: expected value at line 1 column 1";
    check(
        415,
        &error("unsupported_media_type", "unsupported content-type"),
        true,
    );
    check(400, &error("bad_request", old), true);
    // Refusals of the snapshot itself, which JSON would not change.
    let bad = "malformed binary snapshot, byte 9: format 2 is not 1";
    check(400, &error("bad_request", bad), false);
    check(400, "malformed snapshot json, not an error body", false);
    check(422, &error("invalid_snapshot", old), false);
    check(
        413,
        &error("too_large", "the decompressed snapshot exceeds 10 bytes"),
        false,
    );
    check(200, "{}", false);
}

#[test]
fn backoff_doubles_with_jitter_up_to_the_cap() {
    let mut b = Backoff::new(42, Backoff::CAP);
    let mut prev_base = 100u64;
    for i in 0..20 {
        let d = b.delay().as_millis() as u64;
        let base = (100u64 << i.min(9)).min(30_000);
        assert!(
            d >= base * 3 / 4 && d <= base * 5 / 4 + 1,
            "step {i}: {d} vs {base}"
        );
        assert!(base >= prev_base);
        prev_base = base;
    }
    b.reset();
    assert!(b.delay() <= Duration::from_millis(126));
    let mut short = Backoff::new(3, Duration::from_secs(1));
    for _ in 0..10 {
        assert!(short.delay() <= Duration::from_millis(1251));
    }
}
