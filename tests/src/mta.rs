//! What the real-MTA tests share: a generated primary with every class and punt reason, SMTP
//! probes sent with `swaks`, and the proof that each address was delivered as its plan says.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use proto::Class;

use crate::smtp::Sink;

/// Whether `cmd` is installed in one of the usual directories.
pub fn have(cmd: &str) -> bool {
    ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]
        .iter()
        .any(|d| Path::new(d).join(cmd).exists())
}

/// A generated primary: hundreds of addresses of every class and every punt reason.
pub fn write_primary(dir: &Path, variant: u32) {
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
            "changed: after@remote.example, also@remote.example\nmoved: moved@remote.example\n\
             added: added@remote.example\n",
        );
    }
    std::fs::create_dir_all(dir.join("lists")).expect("write the generated primary");
    std::fs::write(dir.join("aliases"), aliases).expect("write the generated primary");
    for i in 0..8 {
        std::fs::write(
            dir.join(format!("lists/ok{i}")),
            format!("m{i}@list.example\nuser{i}\n"),
        )
        .expect("write the generated primary");
    }
    let mut passwd = String::new();
    for i in 0..24 {
        let h = home(&format!("user{i}"));
        std::fs::create_dir_all(&h).expect("write the generated primary");
        passwd.push_str(&format!(
            "user{i}:x:{}:100::{}:/bin/sh\n",
            1000 + i,
            h.display()
        ));
        match i % 4 {
            1 => std::fs::write(h.join(".procmailrc"), ":0\n").expect("write a marker"),
            2 => std::fs::write(h.join(".forward"), "\"|/usr/bin/vacation\"\n")
                .expect("write a marker"),
            3 => std::fs::write(h.join(".forward"), format!("user{i}@home.example\n"))
                .expect("write a marker"),
            _ => {}
        }
    }
    std::fs::write(dir.join("passwd"), passwd).expect("write the generated primary");
    let recipients: String = (0..10)
        .map(|i| format!("box{i}@example.org OK\n"))
        .collect();
    std::fs::write(dir.join("relay_recipients"), recipients).expect("write the generated primary");
    std::fs::write(
        dir.join("virtual"),
        "sales@example.com  f1@example.org, deals@partner.example\n",
    )
    .expect("write the generated primary");
}

/// Whether Postfix reads cdb: tables (Debian's postfix-cdb registers them).
pub fn cdb_maps() -> bool {
    std::fs::read_to_string("/etc/postfix/dynamicmaps.cf")
        .is_ok_and(|t| t.lines().any(|l| l.starts_with("cdb")))
}

/// Whether the test can run here; under CI it must.
pub fn available() -> bool {
    let ok = have("postfix") && have("swaks") && cdb_maps();
    if !ok {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "postfix, postfix-cdb and swaks are required under CI=true"
        );
        eprintln!(
            "skipped: postfix, postfix-cdb or swaks not installed (apt-get install postfix postfix-cdb swaks)"
        );
    }
    ok
}

/// A private Postfix instance under `dir`.
pub struct Postfix {
    dir: PathBuf,
    port: u16,
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run a postfix command");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd:?} failed: {text}");
    text
}

impl Postfix {
    /// Writes the instance's configuration: the shipped snippet, pointed at `maps`, and what
    /// makes it a private instance on 127.0.0.1 whose other mail goes to the `internet` sink.
    pub fn configure(dir: &Path, maps: &Path, internet: u16, port: u16) {
        let snippet =
            std::fs::read_to_string(crate::workspace().join("deploy/postfix/main.cf.snippet"))
                .expect("set up the postfix instance")
                .replace("/var/lib/mxsync/maps", &maps.display().to_string());
        Self::configure_with(dir, &snippet, internet, port);
    }

    /// Like [`Postfix::configure`], with `snippet` in place of the shipped one.
    pub fn configure_with(dir: &Path, snippet: &str, internet: u16, port: u16) {
        let d = dir.display();
        std::fs::create_dir_all(dir.join("queue")).expect("set up the postfix instance");
        std::fs::create_dir_all(dir.join("data")).expect("set up the postfix instance");
        run(Command::new("chown").arg("postfix").arg(dir.join("data")));
        std::fs::copy("/etc/postfix/master.cf", dir.join("master.cf"))
            .expect("set up the postfix instance");
        std::fs::write(
            dir.join("main.cf"),
            format!(
                "compatibility_level = 3.6\nqueue_directory = {d}/queue\ndata_directory = {d}/data\n\
                 mail_owner = postfix\nsetgid_group = postdrop\ninet_interfaces = 127.0.0.1\ninet_protocols = ipv4\n\
                 myhostname = mx2.test\nmydomain = mx2.test\nmyorigin = mx2.test\nmydestination =\n\
                 mynetworks = 192.0.2.0/24\nsmtputf8_enable = no\nbiff = no\nappend_dot_mydomain = no\n\
                 maillog_file = {d}/maillog\nmaillog_file_prefixes = {d}\n\
                 smtp_dns_support_level = disabled\nsmtp_host_lookup = native\n\
                 default_transport = smtp:[127.0.0.1]:{internet}\n{snippet}"
            ),
        )
        .expect("set up the postfix instance");
        let c = |args: &[&str]| run(Command::new("postconf").arg("-c").arg(dir).args(args));
        c(&["-F", "*/*/chroot = n"]);
        c(&["-MX", "smtp/inet"]);
        c(&[
            "-Me",
            &format!("127.0.0.1:{port}/inet = 127.0.0.1:{port} inet n - n - - smtpd"),
        ]);
    }

    pub fn start(dir: &Path, port: u16) -> Postfix {
        run(Command::new("postfix").arg("-c").arg(dir).arg("start"));
        let pf = Postfix {
            dir: dir.to_path_buf(),
            port,
        };
        let up = crate::wait_for(Duration::from_secs(20), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        assert!(up, "postfix did not listen: {}", pf.log());
        pf
    }
}

impl Mta for Postfix {
    fn port(&self) -> u16 {
        self.port
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("maillog")).unwrap_or_default()
    }

    fn refusal(&self, served: bool) -> &'static str {
        if served {
            "<** 550 5.1.1"
        } else {
            "<** 554 5.7.1"
        }
    }

    fn queue_empty(&self) -> bool {
        let out = Command::new("postqueue")
            .arg("-c")
            .arg(&self.dir)
            .arg("-p")
            .output()
            .expect("set up the postfix instance");
        String::from_utf8_lossy(&out.stdout).contains("Mail queue is empty")
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

/// A running MTA under test.
pub trait Mta {
    /// Its SMTP port on 127.0.0.1.
    fn port(&self) -> u16;
    /// Whether its queue is empty (everything delivered).
    fn queue_empty(&self) -> bool;
    /// Its log, for failure messages.
    fn log(&self) -> String;
    /// What swaks shows when it refuses a recipient at RCPT: an unknown user at a served
    /// domain, or (`served` false) an address it does not relay for.
    fn refusal(&self, served: bool) -> &'static str;
}

/// Sends one message to `to` through the MTA on `port`; returns whether it was accepted and
/// swaks' transcript.
pub fn send(port: u16, to: &str) -> (bool, String) {
    let out = Command::new("swaks")
        .args(["--server", &format!("127.0.0.1:{port}")])
        .args(["--from", "sender@outside.example", "--to", to])
        .args(["--header", &format!("X-Probe: {to}"), "--timeout", "20"])
        .output()
        .expect("run swaks");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// Whether the MTA on `port` accepts `to` at RCPT (the session ends there: nothing is sent).
pub fn accepts(port: u16, to: &str) -> bool {
    Command::new("swaks")
        .args(["--server", &format!("127.0.0.1:{port}")])
        .args(["--from", "sender@outside.example", "--to", to])
        .args(["--quit-after", "RCPT", "--timeout", "20"])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// What each sink must receive for `address` according to its plan.
pub fn expected(
    plans: &BTreeMap<String, proto::Plan>,
    address: &str,
) -> (Vec<String>, Vec<String>) {
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
pub fn prove(
    mta: &impl Mta,
    internet: &Sink,
    primary: &Sink,
    plans: &BTreeMap<String, proto::Plan>,
    addresses: &[String],
) {
    for a in addresses {
        let (accepted, transcript) = send(mta.port(), a);
        let valid = plans.contains_key(a);
        assert_eq!(accepted, valid, "{a}: accepted={accepted}\n{transcript}");
        if !valid {
            let served = a.ends_with("@example.org") || a.ends_with("@example.com");
            let refusal = mta.refusal(served);
            assert!(
                transcript.contains(refusal),
                "{a}: not refused with {refusal} at RCPT:\n{transcript}"
            );
        }
    }
    let done = crate::wait_for(Duration::from_secs(90), || {
        addresses.iter().all(|a| {
            let (f, p) = expected(plans, a);
            internet.rcpts_for(a).len() >= f.len() && primary.rcpts_for(a).len() >= p.len()
        }) && mta.queue_empty()
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
        mta.log()
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

/// A secondary's configuration under `sdir` for the real-MTA tests: agent `mx1`, its primary at
/// 127.0.0.1:`primary`, [`SHORT_FRESHNESS`], and the directory open to others only for
/// traversal, as the shipped unit makes it.
pub fn server_config(sdir: &Path, primary: u16) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(sdir).expect("create the secondary's directory");
    std::fs::set_permissions(sdir, std::fs::Permissions::from_mode(0o751))
        .expect("chmod the secondary's directory");
    let config = crate::server_config(sdir, SHORT_FRESHNESS);
    let text = std::fs::read_to_string(&config)
        .expect("read server.toml")
        .replace(
            "primary = \"[127.0.0.1]:2525\"",
            &format!("primary = \"[127.0.0.1]:{primary}\""),
        );
    std::fs::write(&config, text).expect("write server.toml");
    config
}

/// A secondary and the agent of the primary under `pdir` ([`write_primary`]) pushing to it:
/// the server a process under umask 077 on `sdir` ([`server_config`]), the agent reading
/// the aliases, virtual map, recipient list and users. Returns the server (killed when
/// dropped), the agent's configuration and the running agent.
pub fn secondary_and_agent(
    root: &Path,
    pdir: &Path,
    sdir: &Path,
    primary: u16,
) -> (crate::Kill, agent::config::Config, crate::RunningAgent) {
    let config = server_config(sdir, primary);
    let port = crate::free_port();
    let server = crate::Kill(crate::server_process(&config, port));
    let url = format!("http://127.0.0.1:{port}");
    let key = root.join("agent.key");
    crate::write_key(&key, crate::KEY);
    let mut cfg = crate::Primary {
        dir: pdir.to_path_buf(),
    }
    .agent_config(&root.join("agent-state"), &[(&url, &key)]);
    cfg.sources.virtual_maps = vec![pdir.join("virtual").display().to_string()];
    cfg.sources.recipients = vec![pdir.join("relay_recipients").display().to_string()];
    let agent = crate::RunningAgent::start(cfg.clone());
    (server, cfg, agent)
}

/// Every plan of the primary `cfg` reads, as it is on disk now, by address.
pub fn plans_now(cfg: &agent::config::Config) -> BTreeMap<String, proto::Plan> {
    let c = agent::collect::collect(&cfg.domains(), &cfg.sources).content;
    (proto::Planner::new(&c).plan_all().into_iter())
        .map(|p| (p.address.clone(), p))
        .collect()
}

/// The freshness a server needs for [`prove_defer_while_stale`]: stale soon after the agent
/// stops (it heartbeats every second).
pub const SHORT_FRESHNESS: &str = "[freshness]\nwarn_after_secs = 2\nstale_after_secs = 5\n";

/// Unknown recipients while the agent's copy is stale, through the MTA on `port` (its server
/// configured with [`SHORT_FRESHNESS`]): refused (550) while fresh; deferred (450) once the
/// agent stopped and the copy went stale, while a known address is still accepted and
/// delivered to `internet`; refused again once the agent is back; deferred again while the
/// shrink guard holds a cut aliases file; refused once the whole file (and a line more) is
/// back. Returns the agent it started again.
pub async fn prove_defer_while_stale(
    port: u16,
    agent: crate::RunningAgent,
    cfg: &agent::config::Config,
    primary: &Path,
    internet: &Sink,
) -> crate::RunningAgent {
    let (unknown, known) = ("nobody-stale@example.org", "f0@example.org");
    let code = |a: &str| crate::smtp::rcpt_status(port, a).expect("an SMTP session");
    let becomes = |want: u16| crate::wait_for(Duration::from_secs(30), || code(unknown) == want);
    assert_eq!(code(unknown), 550, "fresh: unknown refused");
    agent.stop().await;
    assert!(
        becomes(450),
        "stale: unknown not deferred: {}",
        code(unknown)
    );
    assert_eq!(code(known), 250, "stale: known still accepted");
    internet.got.lock().expect("sink lock").clear();
    let (accepted, transcript) = send(port, known);
    assert!(accepted, "{transcript}");
    let delivered = crate::wait_for(Duration::from_secs(60), || {
        internet.rcpts_for(known).len() == 2
    });
    assert!(
        delivered,
        "stale: {known} not delivered: {:?}",
        internet.rcpts_for(known)
    );
    let agent = crate::RunningAgent::start(cfg.clone());
    assert!(
        becomes(550),
        "fresh again: unknown not refused: {}",
        code(unknown)
    );
    // The shrink guard holds a cut file: stale, deferred.
    let aliases = primary.join("aliases");
    let full = std::fs::read_to_string(&aliases).expect("read aliases");
    let cut: String = full.lines().take(5).map(|l| format!("{l}\n")).collect();
    std::fs::write(&aliases, cut).expect("cut aliases");
    assert!(
        becomes(450),
        "held: unknown not deferred: {}",
        code(unknown)
    );
    assert_eq!(code(known), 250, "held: known still accepted");
    // Restored byte for byte: the applied snapshot again, which ends the hold by itself.
    std::fs::write(&aliases, &full).expect("restore");
    assert!(
        becomes(550),
        "released: unknown not refused: {}",
        code(unknown)
    );
    agent
}
