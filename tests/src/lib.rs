//! Helpers for the end-to-end tests in `it/`: finding the workspace's binaries, temporary
//! directories, and waiting on conditions with a deadline (never fixed sleeps).

pub mod mta;
pub mod pg;
pub mod smtp;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Path of one of the workspace's binaries, built (once per test process) so that it is the
/// binary of the code under test.
///
/// `cargo test --workspace` does not build the binaries of a package without integration tests
/// of its own, so one left in `target/` by an earlier build would otherwise be run, stale.
pub fn bin(name: &str) -> PathBuf {
    static BUILT: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/it-HASH -> target/<profile>/NAME
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target directory");
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if !built.iter().any(|b| b == name) {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "--bin", name]).current_dir(workspace());
        if dir.file_name().is_some_and(|d| d == "release") {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("run cargo build");
        assert!(status.success(), "cargo build --bin {name} failed");
        built.push(name.to_string());
    }
    dir.join(name)
}

/// A port on 127.0.0.1 that was free a moment ago (for processes that must bind it themselves).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// Starts the `mxsync-server` binary on `config`, rewritten to listen on 127.0.0.1:`port`, and
/// waits until it accepts connections. Its log goes to `server.log` beside the config. It runs
/// with umask 077, as under the shipped unit.
pub fn server_process(config: &Path, port: u16) -> std::process::Child {
    let text = std::fs::read_to_string(config).expect("read server config");
    let fixed: Vec<String> = text
        .lines()
        .map(|l| {
            if l.starts_with("listen") {
                format!("listen = \"127.0.0.1:{port}\"")
            } else {
                l.to_string()
            }
        })
        .collect();
    std::fs::write(config, fixed.join("\n") + "\n").expect("write server config");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(config.with_file_name("server.log"))
        .expect("open server.log");
    // Under the umask of the shipped unit: the server sets the modes the MTA needs itself.
    let child = Command::new("sh")
        .args(["-c", "umask 077 && exec \"$0\" \"$@\""])
        .arg(bin("mxsync-server"))
        .arg("--config")
        .arg(config)
        .arg("run")
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn mxsync-server");
    let up = wait_for(Duration::from_secs(20), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    assert!(up, "mxsync-server did not come up on port {port}");
    child
}

/// Kills a child process when the test ends, passed or not.
pub struct Kill(pub std::process::Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A request over a raw socket with `Connection: close`: the status and the body, or `None` if
/// the connection failed or died.
pub fn raw_request(port: u16, head: &str, body: &[u8]) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    write!(
        s,
        "{head}\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .ok()?;
    s.write_all(body).ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let status = out.split_whitespace().nth(1)?.parse().ok()?;
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b.to_string())?;
    Some((status, body))
}

/// A signed snapshot POST over a raw socket; the status, or `None` if the connection died.
pub fn raw_post(port: u16, body: &[u8], seq: u64) -> Option<u16> {
    let auth = proto::sign::header(KEY.as_bytes(), "mx1", "POST", "/v1/snapshots", seq, body);
    let head = format!(
        "POST /v1/snapshots HTTP/1.1\r\nAuthorization: {auth}\r\nContent-Type: application/json"
    );
    raw_request(port, &head, body).map(|(status, _)| status)
}

/// Polls `cond` until it holds or `limit` passes; returns whether it held.
pub fn wait_for(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    let mut pause = Duration::from_millis(5);
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

/// Copies a directory tree.
pub fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

/// Writes a secret file with mode 0600.
pub fn write_key(path: &Path, secret: &str) {
    use std::os::unix::fs::PermissionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).expect("key directory");
    }
    std::fs::write(path, format!("{secret}\n")).expect("write key");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("chmod key");
}

/// A secret of the right length for tests.
pub const KEY: &str = "test-key-0123456789abcdef0123456789abcdef";
/// The read token of test servers.
pub const READ_TOKEN: &str = "test-read-token-0123456789abcdef0123456789";

/// Content of a primary with `aliases` at example.org and example.com.
pub fn content_of(aliases: &str) -> proto::Content {
    let mut b = proto::Builder::new(&["example.org".to_string(), "example.com".to_string()]);
    b.aliases("/etc/aliases", aliases.as_bytes());
    b.finish()
}

/// The JSON body of agent mx1's snapshot of `content` at `version`.
pub fn snapshot_body(content: proto::Content, version: u64) -> Vec<u8> {
    let s = proto::Snapshot {
        format: proto::snapshot::FORMAT,
        agent: "mx1".into(),
        version,
        hash: content.hash(),
        created_at: 0,
        content,
    };
    serde_json::to_vec(&s).expect("serialize snapshot")
}

/// Writes a server configuration for agent `mx1` (domains example.org and example.com) under
/// `dir`, with `extra` appended, and returns its path.
pub fn server_config(dir: &Path, extra: &str) -> PathBuf {
    write_key(&dir.join("mx1.key"), KEY);
    write_key(&dir.join("read.token"), READ_TOKEN);
    let path = dir.join("server.toml");
    std::fs::write(
        &path,
        format!(
            "listen = \"127.0.0.1:0\"\nstate_dir = \"state\"\nread_token_file = \"read.token\"\n\
             [[agents]]\nid = \"mx1\"\nkey_file = \"mx1.key\"\ndomains = [\"example.org\", \"example.com\"]\n\
             primary = \"[127.0.0.1]:2525\"\n[output]\ndir = \"maps\"\n{extra}"
        ),
    )
    .expect("write server.toml");
    path
}

/// A running `mxsync-server` (library `run`) on 127.0.0.1:0.
pub struct RunningServer {
    /// Its base URL.
    pub url: String,
    /// Cancel to stop it.
    pub token: tokio_util::sync::CancellationToken,
    /// Finishes when it stopped.
    pub task: tokio::task::JoinHandle<anyhow_free::Result>,
}

/// Avoids a dependency on anyhow in this crate: the server's error as text.
pub mod anyhow_free {
    /// The result of a server run.
    pub type Result = std::result::Result<(), String>;
}

/// `GET url` without a token; the body as text, whatever the status (503 is a status too).
pub async fn get_text(url: &str) -> String {
    client()
        .get(url)
        .send()
        .await
        .expect("GET")
        .text()
        .await
        .expect("GET body")
}

/// `GET base/v1/status`, parsed.
pub async fn status(base: &str) -> serde_json::Value {
    let text = get_text(&format!("{base}/v1/status")).await;
    serde_json::from_str(&text).expect("status JSON")
}

impl RunningServer {
    /// Loads `config` and serves it on `listener` until stopped.
    async fn spawn(config: &Path, listener: tokio::net::TcpListener) -> RunningServer {
        let cfg = server::config::Loaded::load(config).expect("server config");
        let srv = server::Server::open(cfg).expect("open server state");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let token = tokio_util::sync::CancellationToken::new();
        let t = token.clone();
        let task = tokio::spawn(async move {
            server::run(srv, listener, t)
                .await
                .map_err(|e| format!("{e:#}"))
        });
        RunningServer { url, token, task }
    }

    /// Loads `config` and serves it on 127.0.0.1:0 until stopped.
    pub async fn start(config: &Path) -> RunningServer {
        let tls = server::config::Loaded::load(config)
            .expect("server config")
            .config
            .tls
            .is_some();
        let listener = server::serve::bind(([127, 0, 0, 1], 0).into()).expect("bind");
        let running = Self::spawn(config, listener).await;
        // The server answers only once its start-up work (rendering maps) is done. Over TLS the
        // caller checks that itself, with a client that trusts the server's CA.
        if tls {
            return running;
        }
        let url = running.url.clone();
        let c = client();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while c.get(format!("{url}/healthz")).send().await.is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "server at {url} did not come up"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        running
    }

    /// Stops it and waits until it stopped.
    pub async fn stop(self) {
        self.token.cancel();
        let r = self.task.await.expect("server task");
        assert_eq!(r, Ok(()), "server run failed");
    }
}

/// A signed POST as agent `mx1`.
pub async fn signed_post(
    client: &reqwest::Client,
    base: &str,
    path: &str,
    body: Vec<u8>,
    seq: u64,
) -> (u16, String) {
    signed_post_as(client, base, path, body, seq, ("mx1", KEY)).await
}

/// A signed POST as `agent` with its `key`.
pub async fn signed_post_as(
    client: &reqwest::Client,
    base: &str,
    path: &str,
    body: Vec<u8>,
    seq: u64,
    (agent, key): (&str, &str),
) -> (u16, String) {
    let auth = proto::sign::header(key.as_bytes(), agent, "POST", path, seq, &body);
    let r = client
        .post(format!("{base}{path}"))
        .header("authorization", auth)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("request");
    let status = r.status().as_u16();
    (status, r.text().await.unwrap_or_default())
}

/// Every live map file under `maps_dir`, by name, as text.
pub fn live_maps(maps_dir: &Path) -> std::collections::BTreeMap<String, String> {
    let mut out = std::collections::BTreeMap::new();
    for f in ["postfix", "exim"] {
        for e in std::fs::read_dir(maps_dir.join(f))
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = format!("{f}/{}", e.file_name().to_string_lossy());
            // The text maps; their CDB tables are checked against them by the server's tests.
            if !name.ends_with(".cdb") {
                out.insert(name, std::fs::read_to_string(e.path()).expect("read map"));
            }
        }
    }
    out
}

/// An HTTP client for tests (installs the ring TLS provider reqwest is built to use).
pub fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("http client")
}

impl RunningServer {
    /// Like [`RunningServer::start`] on a given address (to come back on the same port).
    pub async fn start_on(config: &Path, addr: std::net::SocketAddr) -> RunningServer {
        let listener = server::serve::bind(addr).expect("bind again");
        Self::spawn(config, listener).await
    }
}

/// A primary on disk: aliases, passwd with homes below it, an include list.
pub struct Primary {
    /// Its directory.
    pub dir: PathBuf,
}

impl Primary {
    /// Creates the files under `dir`.
    pub fn new(dir: &Path) -> Primary {
        let p = Primary {
            dir: dir.to_path_buf(),
        };
        std::fs::create_dir_all(dir.join("home/alice")).expect("home");
        std::fs::create_dir_all(dir.join("lists")).expect("lists");
        p.write(
            "passwd",
            &format!("alice:x:1000:1000::{}/home/alice:/bin/sh\n", dir.display()),
        );
        p.write("lists/staff", "s1@remote.net\n");
        p.write(
            "aliases",
            &format!(
                "a: r1@remote.net\nstaff: :include:{}/lists/staff\nal: alice, x@remote.net\n",
                dir.display()
            ),
        );
        p
    }
    /// Path of a file of the primary.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }
    /// Writes a file of the primary in place.
    pub fn write(&self, rel: &str, text: &str) {
        std::fs::write(self.path(rel), text).expect("write primary file");
    }
    /// Writes an agent configuration for `receivers` and returns it (not saved to disk).
    pub fn agent_config(&self, state: &Path, receivers: &[(&str, &Path)]) -> agent::config::Config {
        let mut text = format!(
            "agent_id = \"mx1\"\ndomains = [\"example.org\", \"example.com\"]\nstate_dir = \"{}\"\n\
             [sources]\naliases = [\"{}\"]\npasswd = \"{}\"\nuid_min = 1000\n\
             [timing]\ndebounce_ms = 20\nheartbeat_secs = 1\nrescan_secs = 300\n",
            state.display(),
            self.path("aliases").display(),
            self.path("passwd").display()
        );
        for (url, key) in receivers {
            text.push_str(&format!(
                "[[receivers]]\nurl = \"{url}\"\nkey_file = \"{}\"\n",
                key.display()
            ));
        }
        let path = state.with_extension("toml");
        std::fs::write(&path, text).expect("write agent config");
        agent::config::Config::load_for_push(&path).expect("agent config")
    }
}

/// A running agent (library `run`).
pub struct RunningAgent {
    token: tokio_util::sync::CancellationToken,
    task: tokio::task::JoinHandle<Result<(), String>>,
}

impl RunningAgent {
    /// Starts `agent::run::run` with `cfg`.
    pub fn start(cfg: agent::config::Config) -> RunningAgent {
        let token = tokio_util::sync::CancellationToken::new();
        let t = token.clone();
        let task =
            tokio::spawn(
                async move { agent::run::run(cfg, t).await.map_err(|e| format!("{e:#}")) },
            );
        RunningAgent { token, task }
    }
    /// Stops it and waits.
    pub async fn stop(self) {
        self.token.cancel();
        assert_eq!(self.task.await.expect("agent task"), Ok(()));
    }
}

/// Waits until the live `postfix/virtual` under `maps_dir` satisfies `cond`; returns whether it
/// did within `limit`.
pub async fn wait_virtual(maps_dir: &Path, limit: Duration, cond: impl Fn(&str) -> bool) -> bool {
    wait_map(maps_dir, "postfix/virtual", limit, cond).await
}

/// Waits until the live map `name` (e.g. `postfix/relay_recipients`) under `maps_dir`
/// satisfies `cond`; returns whether it did within `limit`.
pub async fn wait_map(
    maps_dir: &Path,
    name: &str,
    limit: Duration,
    cond: impl Fn(&str) -> bool,
) -> bool {
    let deadline = std::time::Instant::now() + limit;
    loop {
        let text = std::fs::read_to_string(maps_dir.join(name)).unwrap_or_default();
        if cond(&text) {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A TCP proxy on 127.0.0.1:0 to a loopback port that can be cut (every connection closed, new
/// ones refused at once) and healed: a network partition between agent and receiver.
pub struct Proxy {
    /// The port to connect to instead of the target.
    pub port: u16,
    cut: std::sync::Arc<std::sync::atomic::AtomicBool>,
    open: std::sync::Arc<std::sync::Mutex<Vec<std::net::TcpStream>>>,
}

impl Proxy {
    /// Starts a proxy to `target`.
    pub fn start(target: u16) -> Proxy {
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let port = listener.local_addr().expect("proxy addr").port();
        let cut = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let open = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (c, o) = (cut.clone(), open.clone());
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                // The check and the registration are one step under the lock that `cut` takes,
                // so no connection opened as the cut comes slips through it.
                let mut open = o.lock().expect("proxy lock");
                if c.load(Ordering::SeqCst) {
                    let _ = client.shutdown(std::net::Shutdown::Both);
                    continue;
                }
                let Ok(server) = std::net::TcpStream::connect(("127.0.0.1", target)) else {
                    continue;
                };
                for s in [&client, &server] {
                    if let Ok(s) = s.try_clone() {
                        open.push(s);
                    }
                }
                drop(open);
                let pump = |mut from: std::net::TcpStream, mut to: std::net::TcpStream| {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Write);
                    });
                };
                if let (Ok(c2), Ok(s2)) = (client.try_clone(), server.try_clone()) {
                    pump(client, s2);
                    pump(server, c2);
                }
            }
        });
        Proxy { port, cut, open }
    }

    /// Cuts every connection and refuses new ones.
    pub fn cut(&self) {
        let mut open = self.open.lock().expect("proxy lock");
        self.cut.store(true, std::sync::atomic::Ordering::SeqCst);
        for s in open.drain(..) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }

    /// Lets connections through again.
    pub fn heal(&self) {
        self.cut.store(false, std::sync::atomic::Ordering::SeqCst);
    }
}

/// What a [`webhook_receiver`] got: when, and the body.
pub type Received = std::sync::Arc<std::sync::Mutex<Vec<(std::time::Instant, String)>>>;

/// A loopback HTTP receiver that answers 200 and keeps every POST body (a webhook).
pub fn webhook_receiver() -> (String, Received) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind webhook");
    let url = format!(
        "http://{}/hook",
        listener.local_addr().expect("webhook addr")
    );
    let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let g = got.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut r = BufReader::new(stream);
            let (mut len, mut line) = (0usize, String::new());
            while r.read_line(&mut line).unwrap_or(0) > 2 {
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
                line.clear();
            }
            let mut body = vec![0; len];
            let _ = r.read_exact(&mut body);
            g.lock().expect("webhook lock").push((
                std::time::Instant::now(),
                String::from_utf8_lossy(&body).into_owned(),
            ));
            let _ = r
                .get_mut()
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        }
    });
    (url, got)
}

/// A systemd notification socket bound in `dir`, as a `Type=notify` unit gives one, and the
/// process `bin --config CONFIG run` started with it.
pub struct Notified {
    socket: std::os::unix::net::UnixDatagram,
    _child: Kill,
}

impl Notified {
    /// Binds `dir/notify.sock` and starts `bin` with `NOTIFY_SOCKET` pointing at it.
    pub fn start(bin: &str, config: &Path, dir: &Path) -> Notified {
        let path = dir.join("notify.sock");
        let socket = std::os::unix::net::UnixDatagram::bind(&path).expect("bind notify socket");
        socket
            .set_read_timeout(Some(Duration::from_secs(30)))
            .expect("socket timeout");
        let child = Command::new(self::bin(bin))
            .arg("--config")
            .arg(config)
            .arg("run")
            .env("NOTIFY_SOCKET", &path)
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn with NOTIFY_SOCKET");
        Notified {
            socket,
            _child: Kill(child),
        }
    }

    /// The next notification, within 30 s.
    pub fn next(&self) -> String {
        let mut buf = [0u8; 4096];
        let n = self
            .socket
            .recv(&mut buf)
            .expect("a notification within 30 s");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }
}
