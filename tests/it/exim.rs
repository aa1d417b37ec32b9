//! The proof in a real Exim, configured with the parts of the shipped `deploy/exim/mxsync.conf`
//! and reading only the CDB tables `mxsync-server` wrote:
//! - address testing (`exim4 -C CONF -bt`): every address is routed by the router its plan says;
//! - a real daemon (`exim4 -bd` on a loopback port) fed by a real agent through a server process
//!   under umask 077, as under the shipped unit: every forward, split and punt address is
//!   delivered over SMTP to the sinks exactly as its plan says, unknown recipients are refused
//!   550 at RCPT, and an alias added on the primary is accepted by the same daemon, no restart;
//! - the shipped `mxsync-pgsql.conf` in `exim4-daemon-heavy` (address testing), reading the
//!   rows a server wrote to a private PostgreSQL cluster, with the server stopped.
//!
//! Exim is not installed as a package (in Debian it conflicts with Postfix): `.ci/run` extracts
//! `exim4-daemon-light` into `target/exim` and `exim4-daemon-heavy` into `target/exim-heavy`,
//! and sets `MXSYNC_EXIM_ROOT` and `MXSYNC_EXIM_HEAVY_ROOT`. Without them the tests say they
//! were skipped, unless `CI=true`, where their absence fails them.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use proto::{Class, Planner};
use tests::mta::{Mta, have, prove, write_primary};
use tests::smtp::Sink;

/// The extracted Exim, when there is one; under CI there must be.
fn exim_root() -> Option<PathBuf> {
    let root = std::env::var_os("MXSYNC_EXIM_ROOT")
        .map(PathBuf::from)
        .filter(|r| r.join("usr/sbin/exim4").exists());
    if root.is_none() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "MXSYNC_EXIM_ROOT with an extracted exim4 is required under CI=true"
        );
        eprintln!("skipped: no extracted exim4 (set MXSYNC_EXIM_ROOT; .ci/run does)");
    }
    root
}

/// One part of the shipped snippet.
fn snippet_part(text: &str, part: &str) -> String {
    let start = text.find(&format!("# --- {part} ---")).unwrap();
    let rest = &text[start..];
    let end = rest[1..].find("# --- ").map_or(rest.len(), |e| e + 1);
    rest[..end].to_string()
}

fn exim(root: &Path) -> Command {
    let mut c = Command::new(root.join("usr/sbin/exim4"));
    c.env("LD_LIBRARY_PATH", root.join("usr/lib/x86_64-linux-gnu"));
    c
}

/// Writes an Exim configuration under `dir` made of the shipped snippet's parts, reading the
/// tables below `maps`, with an `internet` router that sends every other domain to the sink on
/// `internet`, listening on `port`. The primary and the sinks are on this host: the test adds
/// `self = send` (the snippet does not ship it).
fn configure(root: &Path, dir: &Path, maps: &Path, internet: u16, port: u16) -> PathBuf {
    let shipped =
        std::fs::read_to_string(tests::workspace().join("deploy/exim/mxsync.conf")).unwrap();
    let main = snippet_part(&shipped, "main").replace(
        "/var/lib/mxsync/maps/exim",
        &maps.join("exim").display().to_string(),
    );
    configure_with(root, dir, &shipped, &main, internet, port)
}

/// [`configure`] from the parts of `shipped`, its main part replaced by `main`.
fn configure_with(
    root: &Path,
    dir: &Path,
    shipped: &str,
    main: &str,
    internet: u16,
    port: u16,
) -> PathBuf {
    for d in ["spool", "log"] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
        std::fs::set_permissions(dir.join(d), std::fs::Permissions::from_mode(0o777)).unwrap();
    }
    let routers = snippet_part(shipped, "routers").replace(
        "  transport = mxsync_smtp\n",
        "  transport = mxsync_smtp\n  self = send\n",
    );
    assert!(routers.contains("self = send"), "{routers}");
    let conf = dir.join("exim.conf");
    std::fs::write(
        &conf,
        format!(
            "primary_hostname = mx2.test\nexim_path = {exim}\nspool_directory = {d}/spool\n\
             log_file_path = {d}/log/%slog\nkeep_environment =\nhost_lookup =\nrfc1413_hosts =\n\
             daemon_smtp_ports = {port}\nlocal_interfaces = 127.0.0.1\nacl_smtp_rcpt = acl_check_rcpt\n\
             {main}\n\
             begin acl\nacl_check_rcpt:\n{acl}\n  deny    message = relay not permitted\n\
             begin routers\n{routers}\n\
             internet:\n  driver = manualroute\n  domains = ! +mxsync_domains\n  route_list = * 127.0.0.1::{internet}\n  transport = mxsync_smtp\n  self = send\n\
             begin transports\n{transports}\n",
            exim = root.join("usr/sbin/exim4").display(),
            d = dir.display(),
            acl = snippet_part(shipped, "acl"),
            transports = snippet_part(shipped, "transports"),
        ),
    )
    .unwrap();
    conf
}

/// Routes `address` with `exim4 -bt`: each final address with its router, or `Err` when
/// undeliverable.
fn route(root: &Path, conf: &Path, address: &str) -> Result<BTreeMap<String, String>, String> {
    let out = exim(root)
        .arg("-C")
        .arg(conf)
        .args(["-bt", address])
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    if text.contains("is undeliverable") {
        return Err(text);
    }
    let mut routed = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        if !line.starts_with(' ') && line.contains('@') {
            current = Some(line.trim().to_string());
        } else if let (Some(a), Some(r)) = (&current, line.trim().strip_prefix("router = ")) {
            routed.insert(a.clone(), r.split(',').next().unwrap_or("").to_string());
        }
    }
    assert!(
        !routed.is_empty(),
        "{address}: unreadable exim output:\n{text}"
    );
    Ok(routed)
}

/// A primary with every class and several punt reasons.
fn every_class() -> proto::Content {
    let aliases = "fwd: a@remote.example, b@other.example\n\
        list: x@remote.example, list-archive\nlist-archive: /var/archive/list\n\
        pipe: y@remote.example, \"|/usr/bin/handler\"\nloop: loop\nunk: nosuch\n\
        chain: list, z@remote.example\nviauser: alice, w@remote.example\nUpper: u@remote.example\n";
    let mut b = proto::Builder::new(&["example.org".to_string(), "example.com".to_string()]);
    b.aliases("/etc/aliases", aliases.as_bytes());
    b.passwd(
        "/etc/passwd",
        b"alice:x:1000:1000::/nonexistent:/bin/sh\n",
        1000,
    );
    b.recipients("/etc/rr", b"box@example.org\n");
    b.finish()
}

/// Pushes `content` as version 1 to the server of `config`, and stops it once applied.
async fn push_once(config: &Path, content: &proto::Content) -> tests::RunningServer {
    let server = tests::RunningServer::start(config).await;
    let body = tests::snapshot_body(content.clone(), 1);
    let (status, reply) =
        tests::signed_post(&tests::client(), &server.url, "/v1/snapshots", body, 1).await;
    assert_eq!(status, 200, "{reply}");
    server
}

/// Every address of `content` is routed by `conf` as its plan says; unknown ones are not.
fn check_routes(root: &Path, conf: &Path, content: &proto::Content) {
    let plans: BTreeMap<String, proto::Plan> = Planner::new(content)
        .plan_all()
        .into_iter()
        .map(|p| (p.address.clone(), p))
        .collect();
    let classes: BTreeSet<Class> = plans.values().map(|p| p.class).collect();
    assert_eq!(classes.len(), 3, "every class is covered");
    for (address, plan) in &plans {
        let routed = route(root, conf, address).unwrap_or_else(|e| panic!("{address}: {e}"));
        let mut expect = BTreeMap::new();
        for f in &plan.forward {
            expect.insert(f.clone(), "internet".to_string());
        }
        match plan.class {
            Class::Forward => {}
            Class::Split => plan.punt.iter().for_each(|u| {
                expect.insert(u.clone(), "mxsync_primary".to_string());
            }),
            Class::Punt => {
                expect.insert(address.clone(), "mxsync_primary".to_string());
            }
        }
        assert_eq!(routed, expect, "{address} ({:?})", plan.class);
    }
    // The tables are keyed in lowercase, and so are the lookups: any case finds the address.
    assert!(
        plans.contains_key("upper@example.org"),
        "{:?}",
        plans.keys()
    );
    assert_eq!(
        route(root, conf, "UPPER@Example.ORG").map(|r| r.into_keys().collect::<Vec<_>>()),
        Ok(vec!["u@remote.example".to_string()])
    );
    for unknown in ["nobody@example.org", "list-archive2@example.com"] {
        assert!(
            route(root, conf, unknown).is_err(),
            "{unknown} should be undeliverable"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exim_routes_every_address_as_planned() {
    let Some(root) = exim_root() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let sdir = dir.join("secondary");
    let config = tests::mta::server_config(&sdir, 2525);
    let content = every_class();
    push_once(&config, &content).await.stop().await;
    let conf = configure(&root, dir, &sdir.join("maps"), 2526, 2527);
    check_routes(&root, &conf, &content);
}

/// The extracted exim4-daemon-heavy (it has the pgsql lookup), when there is one; under CI
/// there must be.
fn heavy_root() -> Option<PathBuf> {
    let root = std::env::var_os("MXSYNC_EXIM_HEAVY_ROOT")
        .map(PathBuf::from)
        .filter(|r| r.join("usr/sbin/exim4").exists());
    if root.is_none() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "MXSYNC_EXIM_HEAVY_ROOT with an extracted exim4-daemon-heavy is required under CI=true"
        );
        eprintln!(
            "skipped: no extracted exim4-daemon-heavy (set MXSYNC_EXIM_HEAVY_ROOT; .ci/run does)"
        );
    }
    root
}

/// The shipped `mxsync-pgsql.conf` in a real Exim (address testing), reading the rows a server
/// wrote to PostgreSQL, with the server stopped: every address routed as its plan says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exim_routes_every_address_from_postgres_as_planned() {
    let Some(root) = heavy_root() else {
        return;
    };
    if !tests::pg::available() {
        return;
    }
    let cluster = tests::pg::Cluster::start();
    cluster.roles();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let sdir = dir.join("secondary");
    let config = tests::mta::server_config(&sdir, 2525);
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&cluster.output_toml(&sdir));
    std::fs::write(&config, text).unwrap();
    let content = every_class();
    let server = push_once(&config, &content).await;
    let written = tests::wait_for(Duration::from_secs(30), || {
        cluster
            .try_sql(
                "mail",
                "SELECT version FROM mxsync.agents WHERE agent = 'mx1'",
            )
            .is_ok_and(|v| v == "1")
    });
    assert!(written, "never written to the database");
    // The MTA reads the database only: the server may be down.
    server.stop().await;
    let shipped =
        std::fs::read_to_string(tests::workspace().join("deploy/exim/mxsync-pgsql.conf")).unwrap();
    let servers = "(/run/postgresql/.s.PGSQL.5432)/mail/mta/CHANGE-ME";
    assert!(shipped.contains(servers));
    let main = snippet_part(&shipped, "main").replace(
        servers,
        &format!(
            "({}/.s.PGSQL.5432)/mail/mta/{}",
            cluster.socket_dir.display(),
            tests::pg::READER_PASSWORD
        ),
    );
    let conf = configure_with(&root, dir, &shipped, &main, 2526, 2527);
    check_routes(&root, &conf, &content);
}

/// A running Exim daemon.
struct Exim {
    root: PathBuf,
    conf: PathBuf,
    dir: PathBuf,
    port: u16,
    daemon: tests::Kill,
}

impl Exim {
    fn start(root: &Path, dir: &Path, conf: &Path, port: u16) -> Exim {
        let daemon = exim(root)
            .arg("-C")
            .arg(conf)
            .args(["-bd", "-oP"])
            .arg(dir.join("exim.pid"))
            .spawn()
            .unwrap();
        let exim = Exim {
            root: root.to_path_buf(),
            conf: conf.to_path_buf(),
            dir: dir.to_path_buf(),
            port,
            daemon: tests::Kill(daemon),
        };
        let up = tests::wait_for(Duration::from_secs(20), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        assert!(up, "exim did not listen: {}", exim.log());
        exim
    }
}

impl Drop for Exim {
    fn drop(&mut self) {
        // The daemon's children (deliveries) end with it or on their own.
        let _ = Command::new("kill")
            .arg(self.daemon.0.id().to_string())
            .output();
    }
}

impl Mta for Exim {
    fn port(&self) -> u16 {
        self.port
    }

    fn queue_empty(&self) -> bool {
        let out = exim(&self.root)
            .arg("-C")
            .arg(&self.conf)
            .arg("-bpc")
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim() == "0"
    }

    fn log(&self) -> String {
        ["main", "reject", "panic"]
            .iter()
            .map(|l| {
                std::fs::read_to_string(self.dir.join(format!("log/{l}log"))).unwrap_or_default()
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn refusal(&self, served: bool) -> &'static str {
        if served {
            "<** 550 unknown user"
        } else {
            "<** 550 relay not permitted"
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exim_daemon_delivers_every_address_as_planned() {
    let Some(root) = exim_root() else {
        return;
    };
    if !have("swaks") {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "swaks is required under CI=true"
        );
        eprintln!("skipped: swaks not installed (apt-get install swaks)");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let (pdir, sdir, edir) = (dir.join("primary"), dir.join("secondary"), dir.join("exim"));
    for d in [&pdir, &edir] {
        std::fs::create_dir_all(d).unwrap();
    }
    write_primary(&pdir, 1);
    let internet = Sink::start("internet");
    let primary_sink = Sink::start("primary");
    let (_server, cfg, agent) =
        tests::mta::secondary_and_agent(dir, &pdir, &sdir, primary_sink.port);
    let maps = sdir.join("maps");
    let applied = tests::wait_map(&maps, "exim/forward", Duration::from_secs(30), |v| {
        v.contains("f0@example.org")
    })
    .await;
    assert!(applied, "the maps were never rendered");
    let exim_port = tests::free_port();
    let conf = configure(&root, &edir, &maps, internet.port, exim_port);
    let mta = Exim::start(&root, &edir, &conf, exim_port);
    let plans_now = || tests::mta::plans_now(&cfg);
    let plans = plans_now();
    for class in [Class::Forward, Class::Split, Class::Punt] {
        assert!(
            plans.values().filter(|p| p.class == class).count() >= 20,
            "{class:?}"
        );
    }
    let mut addresses: Vec<String> = plans.keys().cloned().collect();
    addresses.extend((0..10).map(|i| format!("nobody{i}@example.org")));
    addresses.push("added@example.org".into());
    addresses.push("f1@example.net".into());
    prove(&mta, &internet, &primary_sink, &plans, &addresses);

    // An alias added and others changed on the primary: the same daemon takes them.
    write_primary(&pdir, 2);
    let plans2 = plans_now();
    assert_eq!(plans2["added@example.org"].class, Class::Forward);
    let again = [
        "added@example.org",
        "changed@example.org",
        "moved@example.org",
        "f5@example.org",
    ]
    .map(String::from);
    let live = tests::wait_for(Duration::from_secs(30), || {
        tests::mta::accepts(exim_port, "added@example.org")
    });
    assert!(live, "the added alias was never accepted: {}", mta.log());
    internet.got.lock().unwrap().clear();
    primary_sink.got.lock().unwrap().clear();
    prove(&mta, &internet, &primary_sink, &plans2, &again);
    assert_eq!(
        internet.rcpts_for("changed@example.org"),
        ["after@remote.example", "also@remote.example"]
    );
    let agent = tests::mta::prove_defer_while_stale(exim_port, agent, &cfg, &pdir, &internet).await;
    agent.stop().await;
}
