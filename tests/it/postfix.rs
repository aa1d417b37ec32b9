//! The proof in a real Postfix: a private instance on 127.0.0.1 whose only knowledge of the
//! domains is the maps `mxsync-server` rendered after a real agent pushed a generated primary.
//! One message per address goes in with `swaks`; each must come out exactly as its plan says:
//! forward targets at the "internet" sink, punt units (or the address itself) at the "primary"
//! sink, and unknown addresses refused with 550 at RCPT. Then the primary changes through the
//! agent and the new routing is proved the same way.
//!
//! Needs `postfix` and `swaks` (`.ci/run` installs them). Without them the test says it was
//! skipped, unless `CI=true`, where their absence fails it.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use proto::{Class, Planner};
use tests::smtp::Sink;

fn have(cmd: &str) -> bool {
    ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]
        .iter()
        .any(|d| Path::new(d).join(cmd).exists())
}

/// Whether the test can run here; under CI it must.
fn available() -> bool {
    let ok = have("postfix") && have("postmap") && have("swaks");
    if !ok {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "postfix, postmap and swaks are required under CI=true"
        );
        eprintln!(
            "skipped: postfix, postmap or swaks not installed (apt-get install postfix swaks)"
        );
    }
    ok
}

/// A generated primary: hundreds of addresses of every class and every punt reason.
fn write_primary(dir: &Path, variant: u32) {
    let home = |u: &str| dir.join("home").join(u);
    let mut aliases = String::new();
    for i in 0..60 {
        aliases.push_str(&format!(
            "f{i}: f{i}.a@remote{}.example, f{i}.b@other.example\n",
            i % 5
        ));
    }
    for i in 0..30 {
        aliases.push_str(&format!(
            "s{i}: s{i}@remote.example, s{i}-archive\ns{i}-archive: /var/archive/s{i}\n"
        ));
    }
    for i in 0..8 {
        aliases.push_str(&format!(
            "p{i}: x{i}@remote.example, \"|/usr/bin/handler {i}\"\n"
        ));
        aliases.push_str(&format!("file{i}: /var/mail/file{i}\n"));
        aliases.push_str(&format!("rel{i}: :include:lists/l{i}\n"));
        aliases.push_str(&format!(
            "unread{i}: :include:{}/lists/missing{i}\n",
            dir.display()
        ));
        aliases.push_str(&format!("bs{i}: \\user{i}\n"));
        aliases.push_str(&format!("fail{i}: :fail: gone\n"));
        aliases.push_str(&format!("loop{i}: loop{i}\n"));
        aliases.push_str(&format!("unk{i}: nosuch{i}\n"));
        aliases.push_str(&format!("inc{i}: :include:{}/lists/ok{i}\n", dir.display()));
        aliases.push_str(&format!("usr{i}: user{i}, u{i}@remote.example\n"));
    }
    // A chain deeper than 20 levels.
    for i in 0..22 {
        aliases.push_str(&format!("deep{i}: deep{}\n", i + 1));
    }
    aliases.push_str("deep22: deep@remote.example\n");
    // What the second round changes.
    if variant == 1 {
        aliases.push_str("changed: before@remote.example\nmoved: /var/mail/moved\n");
    } else {
        aliases.push_str(
            "changed: after@remote.example, also@remote.example\nmoved: moved@remote.example\n",
        );
    }
    std::fs::create_dir_all(dir.join("lists")).unwrap();
    std::fs::write(dir.join("aliases"), aliases).unwrap();
    for i in 0..8 {
        std::fs::write(
            dir.join(format!("lists/ok{i}")),
            format!("m{i}@list.example\nuser{i}\n"),
        )
        .unwrap();
    }
    let mut passwd = String::new();
    for i in 0..24 {
        let h = home(&format!("user{i}"));
        std::fs::create_dir_all(&h).unwrap();
        passwd.push_str(&format!(
            "user{i}:x:{}:100::{}:/bin/sh\n",
            1000 + i,
            h.display()
        ));
        match i % 4 {
            1 => std::fs::write(h.join(".procmailrc"), ":0\n").unwrap(),
            2 => std::fs::write(h.join(".forward"), "\"|/usr/bin/vacation\"\n").unwrap(),
            3 => std::fs::write(h.join(".forward"), format!("user{i}@home.example\n")).unwrap(),
            _ => {}
        }
    }
    std::fs::write(dir.join("passwd"), passwd).unwrap();
    let recipients: String = (0..10)
        .map(|i| format!("box{i}@example.org OK\n"))
        .collect();
    std::fs::write(dir.join("relay_recipients"), recipients).unwrap();
    std::fs::write(
        dir.join("virtual"),
        "sales@example.com  f1@example.org, deals@partner.example\n",
    )
    .unwrap();
}

/// A private Postfix instance under `dir`.
struct Postfix {
    dir: PathBuf,
    port: u16,
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd:?} failed: {text}");
    text
}

impl Postfix {
    /// Writes the instance's configuration (the server's `prepare` hook runs postmap with it).
    fn configure(dir: &Path, maps: &Path, internet: u16, port: u16) {
        let d = dir.display();
        let m = maps.join("postfix");
        let m = m.display();
        std::fs::create_dir_all(dir.join("queue")).unwrap();
        std::fs::create_dir_all(dir.join("data")).unwrap();
        run(Command::new("chown").arg("postfix").arg(dir.join("data")));
        std::fs::copy("/etc/postfix/master.cf", dir.join("master.cf")).unwrap();
        std::fs::write(
            dir.join("main.cf"),
            format!(
                "compatibility_level = 3.6\nqueue_directory = {d}/queue\ndata_directory = {d}/data\n\
                 mail_owner = postfix\nsetgid_group = postdrop\ninet_interfaces = 127.0.0.1\ninet_protocols = ipv4\n\
                 myhostname = mx2.test\nmydomain = mx2.test\nmyorigin = mx2.test\nmydestination =\n\
                 mynetworks = 192.0.2.0/24\nsmtputf8_enable = no\nbiff = no\nappend_dot_mydomain = no\n\
                 maillog_file = {d}/maillog\nmaillog_file_prefixes = {d}\n\
                 smtp_dns_support_level = disabled\nsmtp_host_lookup = native\n\
                 default_transport = smtp:[127.0.0.1]:{internet}\n\
                 relay_domains = {m}/relay_domains\n\
                 relay_recipient_maps = hash:{m}/relay_recipients\n\
                 virtual_alias_maps = hash:{m}/virtual\n\
                 transport_maps = hash:{m}/transport\n\
                 smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination\n\
                 propagate_unmatched_extensions = canonical\n"
            ),
        )
        .unwrap();
        let c = |args: &[&str]| run(Command::new("postconf").arg("-c").arg(dir).args(args));
        c(&["-F", "*/*/chroot = n"]);
        c(&["-MX", "smtp/inet"]);
        c(&[
            "-Me",
            &format!("127.0.0.1:{port}/inet = 127.0.0.1:{port} inet n - n - - smtpd"),
        ]);
    }

    fn start(dir: &Path, port: u16) -> Postfix {
        run(Command::new("postfix").arg("-c").arg(dir).arg("start"));
        let pf = Postfix {
            dir: dir.to_path_buf(),
            port,
        };
        let up = tests::wait_for(Duration::from_secs(20), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        assert!(up, "postfix did not listen: {}", pf.log());
        pf
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("maillog")).unwrap_or_default()
    }

    fn queue_empty(&self) -> bool {
        let out = Command::new("postqueue")
            .arg("-c")
            .arg(&self.dir)
            .arg("-p")
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).contains("Mail queue is empty")
    }

    /// Sends one message to `to`; returns whether it was accepted and swaks' transcript.
    fn send(&self, to: &str) -> (bool, String) {
        let out = Command::new("swaks")
            .args([
                "--server",
                &format!("127.0.0.1:{}", self.port),
                "--from",
                "sender@outside.example",
            ])
            .args([
                "--to",
                to,
                "--header",
                &format!("X-Probe: {to}"),
                "--timeout",
                "20",
            ])
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    }
}

impl Drop for Postfix {
    fn drop(&mut self) {
        let _ = Command::new("postfix")
            .arg("-c")
            .arg(&self.dir)
            .arg("stop")
            .output();
    }
}

/// What each sink must receive for `address` according to its plan.
fn expected(plans: &BTreeMap<String, proto::Plan>, address: &str) -> (Vec<String>, Vec<String>) {
    match plans.get(address) {
        None => (vec![], vec![]),
        Some(p) => {
            let mut fwd = p.forward.clone();
            fwd.sort();
            let punt = match p.class {
                Class::Forward => vec![],
                _ => p.punt.clone(),
            };
            (fwd, punt)
        }
    }
}

/// Sends one message per address and checks both sinks against the plans.
fn prove(
    pf: &Postfix,
    internet: &Sink,
    primary: &Sink,
    plans: &BTreeMap<String, proto::Plan>,
    addresses: &[String],
) {
    for a in addresses {
        let (accepted, transcript) = pf.send(a);
        let valid = plans.contains_key(a);
        assert_eq!(accepted, valid, "{a}: accepted={accepted}\n{transcript}");
        if !valid {
            // An unknown user of a served domain is unknown (550); another domain is no relay (554).
            let served = a.ends_with("@example.org") || a.ends_with("@example.com");
            let refusal = if served {
                "<** 550 5.1.1"
            } else {
                "<** 554 5.7.1"
            };
            assert!(
                transcript.contains(refusal),
                "{a}: not refused with {refusal} at RCPT:\n{transcript}"
            );
        }
    }
    let done = tests::wait_for(Duration::from_secs(90), || {
        addresses.iter().all(|a| {
            let (f, p) = expected(plans, a);
            internet.rcpts_for(a).len() >= f.len() && primary.rcpts_for(a).len() >= p.len()
        }) && pf.queue_empty()
    });
    let missing: Vec<&String> = addresses
        .iter()
        .filter(|a| {
            let (f, p) = expected(plans, a);
            internet.rcpts_for(a).len() < f.len() || primary.rcpts_for(a).len() < p.len()
        })
        .take(5)
        .collect();
    assert!(
        done,
        "not delivered: {missing:?}\n{}",
        pf.log()
            .lines()
            .rev()
            .take(30)
            .collect::<Vec<_>>()
            .join("\n")
    );
    for a in addresses {
        let (f, p) = expected(plans, a);
        assert_eq!(
            internet.rcpts_for(a),
            f,
            "{a}: internet sink ({:?})",
            plans.get(a).map(|p| p.class)
        );
        assert_eq!(
            primary.rcpts_for(a),
            p,
            "{a}: primary sink ({:?})",
            plans.get(a).map(|p| p.class)
        );
    }
}

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
    let extra = format!(
        "prepare = [\"/usr/sbin/postmap\", \"-c\", \"{0}\", \"postfix/virtual\", \"postfix/relay_recipients\", \"postfix/transport\"]\n\
         after_apply = [\"/usr/sbin/postfix\", \"-c\", \"{0}\", \"reload\"]\n",
        pfdir.display()
    );
    Postfix::configure(&pfdir, &maps, internet.port, pf_port);
    let config = tests::server_config(&sdir, &extra);
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "primary = \"[127.0.0.1]:2525\"",
        &format!("primary = \"[127.0.0.1]:{}\"", primary_sink.port),
    );
    std::fs::write(&config, text).unwrap();
    let server = tests::RunningServer::start(&config).await;
    let key = root.join("agent.key");
    tests::write_key(&key, tests::KEY);
    let mut cfg = tests::Primary { dir: pdir.clone() }
        .agent_config(&root.join("agent-state"), &[(&server.url, &key)]);
    cfg.sources.virtual_maps = vec![pdir.join("virtual").display().to_string()];
    cfg.sources.recipients = vec![pdir.join("relay_recipients").display().to_string()];
    let agent = tests::RunningAgent::start(cfg.clone());
    let applied = tests::wait_virtual(&maps, Duration::from_secs(30), |v| {
        v.contains("f0@example.org")
    })
    .await;
    let status = tests::get_text(&format!("{}/v1/status", server.url)).await;
    assert!(applied, "the maps were never rendered: {status}");
    let pf = Postfix::start(&pfdir, pf_port);
    let plans_now = || {
        let c = agent::collect::collect(&cfg.domains(), &cfg.sources).content;
        Planner::new(&c)
            .plan_all()
            .into_iter()
            .map(|p| (p.address.clone(), p))
            .collect::<BTreeMap<_, _>>()
    };
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
    let reloaded = tests::wait_for(Duration::from_secs(30), || {
        pf.log().matches("reload -- version").count() >= 1
    });
    assert!(reloaded, "postfix was not reloaded: {}", pf.log());
    let plans2 = plans_now();
    assert_eq!(plans2["moved@example.org"].class, Class::Forward);
    let again = [
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

    agent.stop().await;
    server.stop().await;
}
