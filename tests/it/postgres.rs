//! `[output.postgres]` against a real PostgreSQL cluster started for each test (`initdb` in a
//! temporary directory, a Unix socket only): the rows of every apply in one transaction, only
//! the changed rows after a one-line edit, two real Postfix instances routing from the tables,
//! a database that goes away and comes back, a server killed in the middle of a write, an HA
//! pair that never lets an older version overwrite a newer one, and TLS (`verify-full`).
//!
//! Needs PostgreSQL (and for the Postfix test postfix-pgsql, postfix-cdb and swaks); `.ci/run`
//! installs them. Without them a test says it was skipped, unless `CI=true`.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tests::Kill;
use tests::mta::{Mta, Postfix, prove, write_primary};
use tests::pg::{Cluster, READER_PASSWORD};
use tests::smtp::Sink;

/// A secondary writing to `cluster`, and an agent of the primary under `root/primary`.
struct Setup {
    root: PathBuf,
    pdir: PathBuf,
    config: PathBuf,
    port: u16,
    server: Option<Kill>,
    cfg: agent::config::Config,
    agent: Option<tests::RunningAgent>,
}

impl Setup {
    fn start(root: &Path, cluster: &Cluster, primary_port: u16) -> Setup {
        let (pdir, sdir) = (root.join("primary"), root.join("secondary"));
        std::fs::create_dir_all(&pdir).unwrap();
        write_primary(&pdir, 1);
        let config = tests::mta::server_config(&sdir, primary_port);
        let mut text = std::fs::read_to_string(&config).unwrap();
        text.push_str(&cluster.output_toml(&sdir));
        std::fs::write(&config, text).unwrap();
        let port = tests::free_port();
        let server = Kill(tests::server_process(&config, port));
        let url = format!("http://127.0.0.1:{port}");
        let key = root.join("agent.key");
        tests::write_key(&key, tests::KEY);
        let mut cfg = tests::Primary { dir: pdir.clone() }
            .agent_config(&root.join("agent-state"), &[(&url, &key)]);
        cfg.sources.virtual_maps = vec![pdir.join("virtual").display().to_string()];
        cfg.sources.recipients = vec![pdir.join("relay_recipients").display().to_string()];
        let agent = tests::RunningAgent::start(cfg.clone());
        Setup {
            root: root.to_path_buf(),
            pdir,
            config,
            port,
            server: Some(server),
            cfg,
            agent: Some(agent),
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    async fn status(&self) -> serde_json::Value {
        tests::status(&self.url()).await["agents"][0].clone()
    }

    /// The agent's status once `cond` holds of it, or the last one read when `limit` passed.
    async fn status_when(
        &self,
        limit: Duration,
        cond: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let status = self.status().await;
            if cond(&status) || tokio::time::Instant::now() >= deadline {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.config.with_file_name("server.log")).unwrap_or_default()
    }

    fn add_alias(&self, line: &str) {
        let aliases = self.pdir.join("aliases");
        let mut text = std::fs::read_to_string(&aliases).unwrap();
        text.push_str(line);
        text.push('\n');
        std::fs::write(&aliases, text).unwrap();
    }
}

/// The version the database holds for agent mx1, if any.
fn db_version(cluster: &Cluster) -> Option<i64> {
    let v = cluster
        .try_sql(
            "mail",
            "SELECT version FROM mxsync.agents WHERE agent = 'mx1'",
        )
        .ok()?;
    v.parse().ok()
}

fn count(cluster: &Cluster, table: &str) -> i64 {
    cluster
        .sql("mail", &format!("SELECT count(*) FROM mxsync.{table}"))
        .parse()
        .unwrap()
}

/// Waits until the database holds the version the server applied.
async fn caught_up(s: &Setup, cluster: &Cluster, limit: Duration) -> bool {
    let held = |status: &serde_json::Value| {
        (status["version"].as_i64()).is_some_and(|v| db_version(cluster) == Some(v))
    };
    held(&s.status_when(limit, held).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_line_edit_writes_its_rows_only_and_an_unreachable_database_catches_up() {
    if !tests::pg::available() {
        return;
    }
    let cluster = Cluster::start();
    cluster.roles();
    let tmp = tempfile::tempdir().unwrap();
    let s = Setup::start(tmp.path(), &cluster, 2525);
    assert!(
        caught_up(&s, &cluster, Duration::from_secs(30)).await,
        "never written: {}",
        s.log()
    );
    // check-config connects: the schema's version, or the database's refusal (exit 2).
    let check = |config: &Path| {
        std::process::Command::new(tests::bin("mxsync-server"))
            .arg("--config")
            .arg(config)
            .arg("check-config")
            .output()
            .unwrap()
    };
    let out = check(&s.config);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("schema mxsync version 1"), "{text}");
    let wrong = s.config.with_file_name("wrong.toml");
    let pw = s.root.join("wrong.password");
    tests::write_key(&pw, "not-the-password-0123456789abcdef");
    let text = std::fs::read_to_string(&s.config).unwrap();
    let at = text.find("password_file = ").unwrap();
    let end = at + text[at..].find('\n').unwrap();
    let bad = format!(
        "{}password_file = \"{}\"{}",
        &text[..at],
        pw.display(),
        &text[end..]
    );
    std::fs::write(&wrong, bad).unwrap();
    let out = check(&wrong);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("output.postgres") && err.contains("password"),
        "{err}"
    );
    // Every valid address, and the forward and split ones with their targets, as planned.
    let plans = tests::mta::plans_now(&s.cfg);
    assert_eq!(count(&cluster, "recipients"), plans.len() as i64);
    let forwards = (plans.values())
        .filter(|p| p.class != proto::Class::Punt)
        .count();
    assert_eq!(count(&cluster, "forwards"), forwards as i64);
    assert_eq!(
        cluster.sql(
            "mail",
            "SELECT domain, transport, route FROM mxsync.domains ORDER BY 1"
        ),
        "example.com|relay:[127.0.0.1]:2525|127.0.0.1::2525\nexample.org|relay:[127.0.0.1]:2525|127.0.0.1::2525"
    );
    // The reader role sees them (the default privileges of the README's set-up).
    let reader = std::process::Command::new("psql")
        .args(["-X", "-A", "-t", "-h"])
        .arg(&cluster.socket_dir)
        .args(["-U", "mta", "-d", "mail", "-c"])
        .arg("SELECT targets FROM mxsync.forwards WHERE address = 'f3@example.org'")
        .env("PGPASSWORD", READER_PASSWORD)
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&reader.stdout).trim(),
        "f3.a@remote3.example, f3.b@other.example",
        "{}",
        String::from_utf8_lossy(&reader.stderr)
    );

    // One line added: the transaction that wrote it touched its rows only (rows written in a
    // transaction carry its id as xmin, as does the agents row it updated).
    let before = db_version(&cluster).unwrap();
    s.add_alias("oneline: one@remote.example");
    let written = tests::wait_for(Duration::from_secs(30), || {
        cluster
            .try_sql(
                "mail",
                "SELECT targets FROM mxsync.forwards WHERE address = 'oneline@example.org'",
            )
            .is_ok_and(|t| t == "one@remote.example")
    });
    assert!(written, "the edit never reached the database: {}", s.log());
    let touched: i64 = cluster
        .sql(
            "mail",
            "SELECT (SELECT count(*) FROM mxsync.recipients r WHERE r.xmin = a.xmin)
                  + (SELECT count(*) FROM mxsync.forwards f WHERE f.xmin = a.xmin)
             FROM mxsync.agents a WHERE agent = 'mx1'",
        )
        .parse()
        .unwrap();
    // oneline@ at both domains, in recipients and in forwards.
    assert_eq!(touched, 4, "rows written by the one-line edit");
    assert!(db_version(&cluster).unwrap() > before);

    // The database goes away: the apply still makes the local maps live, and the agent has a
    // problem (an alert) naming the database.
    cluster.pg_ctl_stop();
    s.add_alias("whiledown: down@remote.example");
    let maps = s.config.with_file_name("maps");
    let live = tests::wait_virtual(&maps, Duration::from_secs(30), |v| {
        v.contains("whiledown@example.org down@remote.example")
    })
    .await;
    assert!(live, "the local maps did not go live without the database");
    let ours = |status: &serde_json::Value| {
        (status["problem"].as_str()).is_some_and(|p| p.starts_with("postgres:"))
    };
    let status = s.status_when(Duration::from_secs(10), ours).await;
    let problem = status["problem"].as_str().unwrap_or("");
    assert!(problem.starts_with("postgres:"), "no problem: {problem:?}");
    assert!(problem.contains("the local maps are live"), "{problem}");
    // Back: the next attempt (retry_secs = 1) catches it up, and the problem clears.
    cluster.pg_ctl_start();
    assert!(
        caught_up(&s, &cluster, Duration::from_secs(30)).await,
        "not caught up: {}",
        s.log()
    );
    assert_eq!(
        cluster.sql(
            "mail",
            "SELECT targets FROM mxsync.forwards WHERE address = 'whiledown@example.org'"
        ),
        "down@remote.example"
    );
    let status = (s.status_when(Duration::from_secs(10), |st| st["problem"].is_null())).await;
    assert!(status["problem"].is_null(), "{status}");
    // After the changed rows of each edit, the tables hold what the map files do.
    let file = |name: &str| std::fs::read_to_string(maps.join("postfix").join(name)).unwrap();
    let lines = |text: String| -> Vec<String> {
        let mut v: Vec<String> = (text.lines())
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .map(|l| l.replacen(' ', "|", 1))
            .collect();
        v.sort();
        v
    };
    let rows = |sql: &str| {
        let mut v: Vec<String> = cluster.sql("mail", sql).lines().map(String::from).collect();
        v.sort();
        v
    };
    assert_eq!(
        rows("SELECT address, targets FROM mxsync.forwards"),
        lines(file("virtual"))
    );
    assert_eq!(
        rows("SELECT address, 'OK' FROM mxsync.recipients"),
        lines(file("relay_recipients"))
    );
    drop(s);
}

/// A private Postfix under `dir` reading the tables through `pgsql:` as the shipped snippet
/// and pgsql-*.cf files say, pointed at `cluster` as role `mta`.
fn postfix_on_pgsql(dir: &Path, cluster: &Cluster, internet: u16, port: u16) {
    std::fs::create_dir_all(dir).unwrap();
    let deploy = tests::workspace().join("deploy/postfix");
    let snippet = std::fs::read_to_string(deploy.join("main.cf.pgsql.snippet"))
        .unwrap()
        .replace("/etc/postfix/", &format!("{}/", dir.display()));
    for entry in std::fs::read_dir(&deploy).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with("pgsql-") {
            let text = std::fs::read_to_string(&path)
                .unwrap()
                .replace(
                    "hosts = unix:/run/postgresql",
                    &format!("hosts = unix:{}", cluster.socket_dir.display()),
                )
                .replace(
                    "password = CHANGE-ME",
                    &format!("password = {READER_PASSWORD}"),
                );
            std::fs::write(dir.join(&name), text).unwrap();
        }
    }
    Postfix::configure_with(dir, &snippet, internet, port);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_postfix_instances_route_from_the_database_as_planned() {
    if !tests::pg::available() || !tests::pg::postfix_pgsql() || !tests::mta::available() {
        return;
    }
    let cluster = Cluster::start();
    cluster.roles();
    let tmp = tempfile::tempdir().unwrap();
    // Postfix runs as its own user: every directory on the way must be traversable.
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let internet = Sink::start("internet");
    let primary_sink = Sink::start("primary");
    let s = Setup::start(tmp.path(), &cluster, primary_sink.port);
    assert!(
        caught_up(&s, &cluster, Duration::from_secs(30)).await,
        "never written: {}",
        s.log()
    );
    let mut mtas = Vec::new();
    for name in ["mx2", "mx3"] {
        let port = tests::free_port();
        let dir = s.root.join(name);
        postfix_on_pgsql(&dir, &cluster, internet.port, port);
        mtas.push(Postfix::start(&dir, port));
    }
    let plans = tests::mta::plans_now(&s.cfg);
    // Some of each class, and unknown addresses at a served domain and elsewhere.
    let mut addresses: Vec<String> = Vec::new();
    for class in [
        proto::Class::Forward,
        proto::Class::Split,
        proto::Class::Punt,
    ] {
        addresses.extend(
            (plans.iter())
                .filter(|(_, p)| p.class == class)
                .take(12)
                .map(|(a, _)| a.clone()),
        );
    }
    addresses.extend(
        [
            "nobody@example.org",
            "nobody@example.com",
            "x@elsewhere.example",
        ]
        .map(String::from),
    );
    for pf in &mtas {
        internet.got.lock().unwrap().clear();
        primary_sink.got.lock().unwrap().clear();
        prove(pf, &internet, &primary_sink, &plans, &addresses);
    }
    // An edit on the primary: both answer it from the database, without a reload.
    s.add_alias("fleet: fleet@remote.example");
    for pf in &mtas {
        let accepted = tests::wait_for(Duration::from_secs(30), || {
            tests::mta::accepts(pf.port(), "fleet@example.org")
        });
        assert!(
            accepted,
            "the edit never reached port {}: {}",
            pf.port(),
            pf.log()
        );
    }
    let plans = tests::mta::plans_now(&s.cfg);
    for pf in &mtas {
        internet.got.lock().unwrap().clear();
        primary_sink.got.lock().unwrap().clear();
        prove(
            pf,
            &internet,
            &primary_sink,
            &plans,
            &["fleet@example.org".to_string()],
        );
    }
    drop(s);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_mid_write_leaves_the_previous_version_and_an_older_never_wins() {
    if !tests::pg::available() {
        return;
    }
    let cluster = Cluster::start();
    cluster.roles();
    let tmp = tempfile::tempdir().unwrap();
    let mut s = Setup::start(tmp.path(), &cluster, 2525);
    assert!(
        caught_up(&s, &cluster, Duration::from_secs(30)).await,
        "never written: {}",
        s.log()
    );
    let first = db_version(&cluster).unwrap();
    let first_rows = count(&cluster, "recipients");
    // A large change, whose write takes a while: the server is killed once the write's
    // transaction has written rows, and before it commits.
    let big: String = (0..150_000)
        .map(|i| format!("big{i}: big{i}@remote.example\n"))
        .collect();
    let aliases = s.pdir.join("aliases");
    let mut text = std::fs::read_to_string(&aliases).unwrap();
    text.push_str(&big);
    std::fs::write(&aliases, text).unwrap();
    let mid_write = tests::wait_for(Duration::from_secs(60), || {
        cluster
            .try_sql(
                "postgres",
                "SELECT count(*) FROM pg_stat_activity
                 WHERE application_name = 'mxsync-server' AND backend_xid IS NOT NULL",
            )
            .is_ok_and(|n| n == "1")
    });
    assert!(mid_write, "no write seen: {}", s.log());
    s.server.take();
    s.agent.take().unwrap().stop().await;
    let gone = tests::wait_for(Duration::from_secs(30), || {
        cluster
            .try_sql(
                "postgres",
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'mxsync-server'",
            )
            .is_ok_and(|n| n == "0")
    });
    assert!(gone, "the killed server's session stayed");
    assert_eq!(
        db_version(&cluster),
        Some(first),
        "the previous version stays"
    );
    assert_eq!(
        count(&cluster, "recipients"),
        first_rows,
        "and only its rows"
    );

    // Started again, it writes what it applied (the big version) in full.
    let server = Kill(tests::server_process(&s.config, s.port));
    assert!(
        caught_up(&s, &cluster, Duration::from_secs(60)).await,
        "not completed: {}",
        s.log()
    );
    let second = db_version(&cluster).unwrap();
    assert!(second > first);
    assert!(count(&cluster, "recipients") > first_rows + 2 * 150_000 - 1);

    // The other server of an HA pair, at the first version, never overwrites the second: a
    // copy of this secondary's state from before the big change would be at `first`; here the
    // database is made to hold a newer version than the server's, which it must leave alone.
    drop(server);
    let newer = second + 10;
    cluster.sql(
        "mail",
        &format!("UPDATE mxsync.agents SET version = {newer}, hash = 'other' WHERE agent = 'mx1'"),
    );
    let rows = count(&cluster, "recipients");
    let _server = Kill(tests::server_process(&s.config, s.port));
    let skipped = tests::wait_for(Duration::from_secs(30), || {
        s.log().contains("the database holds a newer version")
    });
    assert!(skipped, "{}", s.log());
    assert_eq!(db_version(&cluster), Some(newer));
    assert_eq!(
        cluster.sql("mail", "SELECT hash FROM mxsync.agents WHERE agent = 'mx1'"),
        "other"
    );
    assert_eq!(count(&cluster, "recipients"), rows);
}

/// `sslmode = "verify-full"` against a cluster serving TLS on 127.0.0.1: the right CA and host
/// name connect, encrypted; another CA, or a name the certificate does not carry, do not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_full_connects_only_with_the_right_ca_and_host_name() {
    if !tests::pg::available() {
        return;
    }
    let pki = crate::tls::pki();
    let cluster = Cluster::start_tls(&pki.cert_pem, &pki.key_pem);
    cluster.roles();
    let tmp = tempfile::tempdir().unwrap();
    let pw = tmp.path().join("pg.password");
    tests::write_key(&pw, tests::pg::WRITER_PASSWORD);
    let (ca, other) = (tmp.path().join("ca.pem"), tmp.path().join("other.pem"));
    std::fs::write(&ca, &pki.ca_pem).unwrap();
    std::fs::write(&other, &pki.other_ca_pem).unwrap();
    let target = |host: &str, root: &Path| {
        server::postgres::Settings {
            host: Some(host.into()),
            port: Some(cluster.port),
            dbname: Some("mail".into()),
            user: Some("mxsync".into()),
            password_file: Some(pw.clone()),
            sslrootcert: Some(root.to_path_buf()),
            connect_timeout_secs: 5,
            retry_secs: 1,
            ..Default::default()
        }
        .target()
        .expect("a client configuration")
    };
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = server::postgres::connect(&target("localhost", &ca))
        .await
        .expect("verify-full with the right CA");
    let ssl: bool = client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(ssl, "not encrypted");
    for (host, root, why) in [
        ("localhost", &other, "another CA"),
        ("127.0.0.1", &ca, "a name the certificate does not carry"),
    ] {
        let e = server::postgres::connect(&target(host, root)).await.err();
        assert!(e.is_some(), "connected with {why}");
        let e = e.unwrap().to_string();
        assert!(e.contains("invalid peer certificate"), "{why}: {e}");
    }
}
