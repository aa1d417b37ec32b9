//! 10,000 idle connections held open against the `mxsync-server` binary: status still answers
//! quickly while they are open, the header time limit closes every one of them, and a snapshot
//! is still applied afterwards (the connections never took the descriptors the maps need).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

const IDLE: usize = 10_000;
const HEADER_TIMEOUT_SECS: u64 = 3;

/// Raises this process's soft open-files limit to the hard one; fails with advice if even that
/// cannot hold the idle connections.
fn enough_descriptors() {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    let _ = setrlimit(
        Resource::Nofile,
        Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        },
    );
    let now = getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX);
    assert!(
        now >= IDLE as u64 + 500,
        "this test holds {IDLE} sockets but the open-files limit is {now}: raise the hard limit \
         (ulimit -Hn, or LimitNOFILE) to 20000 or more"
    );
}

fn status_ms(port: u16) -> (u16, f64) {
    let start = Instant::now();
    let (status, body) = tests::raw_request(port, "GET /v1/status HTTP/1.1", b"")
        .expect("status request failed while idle connections were open");
    assert!(body.contains("\"state\""), "{body}");
    (status, start.elapsed().as_secs_f64() * 1000.0)
}

#[test]
fn ten_thousand_idle_connections_neither_starve_status_nor_stay_forever() {
    enough_descriptors();
    let dir = tempfile::tempdir().unwrap();
    let config = tests::server_config(dir.path(), "");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        format!("header_timeout_secs = {HEADER_TIMEOUT_SECS}\n{text}"),
    )
    .unwrap();
    let port = tests::free_port();
    let _server = tests::Kill(tests::server_process(&config, port));

    // Half of them say nothing; the other half start a request and never finish its headers.
    let opened = Instant::now();
    let mut idle: Vec<TcpStream> = Vec::with_capacity(IDLE);
    for i in 0..IDLE {
        let mut s = TcpStream::connect(("127.0.0.1", port))
            .unwrap_or_else(|e| panic!("connection {i} of {IDLE}: {e}"));
        if i % 2 == 1 {
            s.write_all(b"GET /v1/status HTTP/1.1\r\nHost: x\r\n")
                .unwrap();
        }
        idle.push(s);
    }
    let open_secs = opened.elapsed().as_secs_f64();

    // While they are all open (well inside the header time limit), status answers at once.
    let mut times: Vec<f64> = (0..20)
        .map(|_| {
            let (status, ms) = status_ms(port);
            assert_eq!(status, 503, "no snapshot yet: never");
            ms
        })
        .collect();
    assert!(
        opened.elapsed() < Duration::from_secs(HEADER_TIMEOUT_SECS),
        "opening {IDLE} connections took {open_secs:.1} s; status was not measured while all \
         were open"
    );
    times.sort_by(f64::total_cmp);
    let worst = times[times.len() - 1];
    assert!(
        worst < 1000.0,
        "status took {worst:.0} ms with {IDLE} idle connections open: {times:?}"
    );

    // The server closes every one of them after the header time limit: a read sees the end.
    let deadline = opened + Duration::from_secs(HEADER_TIMEOUT_SECS + 20);
    let mut still_open = 0;
    for s in &mut idle {
        let left = deadline.saturating_duration_since(Instant::now());
        s.set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .unwrap();
        let mut buf = [0u8; 512];
        let closed = loop {
            match s.read(&mut buf) {
                Ok(0) => break true,
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break true,
                Err(_) => break false,
            }
        };
        if !closed {
            still_open += 1;
        }
    }
    assert_eq!(
        still_open, 0,
        "connections left open past the header time limit"
    );
    drop(idle);

    // Afterwards the server works as before: status, and a snapshot applied.
    let (status, _) = status_ms(port);
    assert_eq!(status, 503);
    let body = tests::snapshot_body(tests::content_of("a: r@remote.net\n"), 1);
    assert_eq!(tests::raw_post(port, &body, 1), Some(200));
    let (status, _) = status_ms(port);
    assert_eq!(status, 200);
    let maps = tests::live_maps(&dir.path().join("maps"));
    assert!(
        maps["postfix/virtual"].contains("a@example.org r@remote.net"),
        "{maps:?}"
    );
    eprintln!(
        "{IDLE} idle connections opened in {open_secs:.2} s; status with all open: median \
         {:.1} ms, worst {worst:.1} ms",
        times[times.len() / 2]
    );
}
