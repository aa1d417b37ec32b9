//! `bench mta`: the last mile, into a real, running MTA, on a generated N-alias primary.
//!
//! - An alias added on the primary (one line changed in place), from the file saved until a
//!   private Postfix on loopback, reading the server's `cdb:` tables through the shipped snippet
//!   and running all along (its smtpd processes alive between connections), answers 250 at
//!   RCPT; then a message to it reaches the sink as the alias's target.
//! - One Exim lookup in the server's CDB table, and in the text map with `lsearch`, timed in
//!   one `exim -be` per kind (the process's own start taken off).
//! - Beside them, in the same run: `postmap` building the three `hash:` tables the old setup
//!   rebuilt at every change, and `postmap cdb:` on the same files.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use tests::mta::{Mta, Postfix};
use tests::smtp::{Sink, rcpt_status};

use crate::{big, data, percentile, procs, summary};

/// The alias the `i`th edit adds (in place of the one before): a new name each time.
fn added(i: usize) -> String {
    format!("zzadd{i:04}: m{i:07}@remote.example\n")
}

pub(crate) fn mta_scenario(n: usize, edits: usize) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let s = big::site(n)?;
    // Postfix runs as its own user: the directories on the way to the maps must be traversable.
    for d in [s.tmp.path().to_path_buf(), s.tmp.path().join("secondary")] {
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755))?;
    }
    let maps = s.tmp.path().join("secondary/maps");
    let agent = procs::spawn(&procs::bin("mxsync-agent")?, &s.agent_config)?;
    let first = big::wait_map(&s.virt, "zzmarker@", Duration::from_secs(600));
    anyhow::ensure!(first.is_some(), "the first snapshot never arrived");
    let postfix = postfix_latency(&s, &maps, edits);
    // The peak through the cold sync and every edit (the tables' kept records included).
    let server_peak = procs::status_mib(s.server.0.id(), "VmHWM:");
    let exim = exim_lookup(&maps);
    let peers = postmap_peers(&maps);
    drop(agent);

    println!(
        "scenario: the last mile at {n} aliases: an alias added on the primary until a running \
         Postfix (cdb: tables, no reload) accepts it at RCPT; one Exim lookup; postmap beside them"
    );
    println!("| measure | mxsync | peer (same run) | ratio |");
    println!("|---|---|---|---|");
    let (peer_hash, peer_cdb) = match &peers {
        Ok((h, c)) => (Some(*h), Some(*c)),
        Err(e) => {
            println!("| postmap | not run: {e:#} | - | - |");
            (None, None)
        }
    };
    match &postfix {
        Ok(p) => {
            let ratio = peer_hash.map_or("-".into(), |h| format!("{:.2}", p.p50 / h));
            let peer = peer_hash.map_or("-".into(), |h| {
                format!("postmap of the 3 hash: tables {h:.2} s (before the reload)")
            });
            println!(
                "| added alias, saved to 250 at RCPT, p50 / max of {} | {:.3} / {:.3} s | {peer} | {ratio} |",
                p.lat.len(),
                p.p50,
                p.max
            );
            println!(
                "| then delivered to its target at the sink | {:.3} s | - | - |",
                p.delivered
            );
            println!(
                "| Postfix daemons restarted for a changed table | {} | - | - |",
                p.restarts
            );
            println!("| lost (never 250 within 60 s) | {} | - | - |", p.lost);
            summary(
                "mta 1M",
                "alias added, saved to RCPT 250 in a running Postfix, p50",
                format!("{:.3} s (max {:.3} s)", p.p50, p.max),
                peer_hash.map_or("postmap missing".into(), |h| {
                    format!("postmap hash: {h:.2} s")
                }),
                ratio,
            );
        }
        Err(e) => {
            println!("| added alias to 250 at RCPT | failed: {e:#} | - | - |");
            summary(
                "mta 1M",
                "alias added to RCPT 250",
                format!("failed: {e:#}"),
                "-".into(),
                "-".into(),
            );
        }
    }
    match &exim {
        Ok(x) => {
            println!(
                "| Exim lookup, cdb (mean of {}) / lsearch (mean of {}) | {:.3} ms | lsearch {:.1} ms | {:.4} |",
                x.cdb_n,
                x.lsearch_n,
                x.cdb_ms,
                x.lsearch_ms,
                x.cdb_ms / x.lsearch_ms
            );
            summary(
                "mta 1M",
                "one Exim lookup from the cdb table",
                format!("{:.3} ms", x.cdb_ms),
                format!("lsearch {:.1} ms", x.lsearch_ms),
                format!("{:.4}", x.cdb_ms / x.lsearch_ms),
            );
        }
        Err(e) => println!("| Exim lookup | not run: {e:#} | - | - |"),
    }
    if let Some(c) = peer_cdb {
        println!("| postmap cdb: of the same 3 files (for scale) | - | {c:.2} s | - |");
    }
    println!(
        "| peak RSS, server, through the cold sync and the edits | {server_peak:.0} MiB | - | - |"
    );
    summary(
        "mta 1M",
        "peak RSS, server",
        format!("{server_peak:.0} MiB"),
        "-".into(),
        "-".into(),
    );
    Ok(())
}

/// What the Postfix part measured.
struct Latency {
    lat: Vec<f64>,
    p50: f64,
    max: f64,
    lost: usize,
    delivered: f64,
    restarts: usize,
}

fn postfix_latency(s: &big::Site, maps: &Path, edits: usize) -> anyhow::Result<Latency> {
    anyhow::ensure!(
        tests::mta::have("postfix") && tests::mta::cdb_maps(),
        "postfix with cdb: tables missing (apt-get install postfix postfix-cdb)"
    );
    let internet = Sink::start("internet");
    let pfdir = s.tmp.path().join("postfix");
    let port = procs::free_port()?;
    Postfix::configure(&pfdir, maps, internet.port, port);
    let pf = Postfix::start(&pfdir, port);
    let domain = data::DOMAIN;
    // The daemons are up and hold the tables: a known address is accepted.
    let known = format!("zzmarker@{domain}");
    anyhow::ensure!(
        rcpt_status(port, &known)? == 250,
        "postfix refused {known}: {}",
        pf.log()
    );
    let aliases = s.root.join("aliases");
    let mut text = std::fs::read(&aliases)?;
    let at = text.len() - big::marker(0).len();
    let (mut lat, mut lost) = (Vec::new(), 0);
    for i in 1..=edits {
        let address = format!("zzadd{i:04}@{domain}");
        anyhow::ensure!(
            rcpt_status(port, &address)? != 250,
            "{address} accepted before it was added"
        );
        text.truncate(at);
        text.extend_from_slice(added(i).as_bytes());
        std::fs::write(&aliases, &text)?;
        let saved = Instant::now();
        let ok = procs::wait(Duration::from_secs(60), || {
            std::thread::sleep(Duration::from_millis(2));
            rcpt_status(port, &address).is_ok_and(|c| c == 250)
        });
        match ok {
            Some(_) => lat.push(saved.elapsed().as_secs_f64()),
            None => lost += 1,
        }
    }
    // The last alias, by a whole message: forwarded to its target.
    let address = format!("zzadd{edits:04}@{domain}");
    let t = Instant::now();
    let (accepted, transcript) = tests::mta::send(port, &address);
    anyhow::ensure!(accepted, "{address} not accepted: {transcript}");
    let target = format!("m{edits:07}@remote.example");
    let delivered = procs::wait(Duration::from_secs(60), || {
        internet.rcpts_for(&address) == [target.clone()]
    });
    anyhow::ensure!(delivered.is_some(), "{address} never reached {target}");
    let delivered = t.elapsed().as_secs_f64();
    let restarts = pf.log().matches("has changed -- restarting").count();
    lat.sort_by(f64::total_cmp);
    Ok(Latency {
        p50: percentile(&lat, 0.5),
        max: lat.last().copied().unwrap_or(f64::NAN),
        lat,
        lost,
        delivered,
        restarts,
    })
}

/// What the Exim part measured.
struct Lookup {
    cdb_ms: f64,
    cdb_n: usize,
    lsearch_ms: f64,
    lsearch_n: usize,
}

/// The extracted Exim (`MXSYNC_EXIM_ROOT`, or `target/exim` as `.ci/run` leaves it).
fn exim_root() -> anyhow::Result<PathBuf> {
    let root = std::env::var_os("MXSYNC_EXIM_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| tests::workspace().join("target/exim"));
    anyhow::ensure!(
        root.join("usr/sbin/exim4").exists(),
        "no extracted exim4 at {} (set MXSYNC_EXIM_ROOT; .ci/run extracts one)",
        root.display()
    );
    Ok(root)
}

/// Seconds for one `exim -be` expanding each of `lines`.
fn exim_be(root: &Path, conf: &Path, lines: &[String]) -> anyhow::Result<f64> {
    let t = Instant::now();
    let mut child = Command::new(root.join("usr/sbin/exim4"))
        .env("LD_LIBRARY_PATH", root.join("usr/lib/x86_64-linux-gnu"))
        .arg("-C")
        .arg(conf)
        .arg("-be")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let mut stdin = child.stdin.take().context("exim stdin")?;
    for l in lines {
        writeln!(stdin, "{l}")?;
    }
    drop(stdin);
    let out = child.wait_with_output()?;
    let secs = t.elapsed().as_secs_f64();
    let text = String::from_utf8_lossy(&out.stdout);
    // Each expansion gives a line `> RESULT` (empty for a key not found), and a last prompt.
    let found = (text.lines())
        .filter(|l| !l.trim_start_matches('>').trim().is_empty())
        .count();
    anyhow::ensure!(
        found == lines.len(),
        "exim -be found {found} of {} keys: {}",
        lines.len(),
        text.lines().take(3).collect::<Vec<_>>().join(" / ")
    );
    Ok(secs)
}

fn exim_lookup(maps: &Path) -> anyhow::Result<Lookup> {
    let root = exim_root()?;
    let dir = tempfile::tempdir()?;
    let conf = dir.path().join("exim.conf");
    std::fs::write(
        &conf,
        format!(
            "keep_environment =\nspool_directory = {}\n",
            dir.path().display()
        ),
    )?;
    // Keys spread over the whole map: every 997th forward line.
    let forward = maps.join("exim/forward");
    let text = std::fs::read_to_string(&forward)?;
    let keys: Vec<&str> = (text.lines())
        .filter(|l| !l.starts_with('#'))
        .step_by(997)
        .filter_map(|l| l.split(':').next())
        .collect();
    anyhow::ensure!(keys.len() >= 100, "only {} keys", keys.len());
    let cdb = forward.with_extension("cdb");
    // `n` keys spread over the whole map (a scan costs more the further its key).
    let lookups = |kind: &str, file: &Path, n: usize| -> Vec<String> {
        (keys.iter().step_by(keys.len() / n).take(n))
            .map(|k| format!("${{lookup{{{k}}}{kind}{{{}}}}}", file.display()))
            .collect()
    };
    let best = |lines: &[String]| -> anyhow::Result<f64> {
        let mut runs = (0..3)
            .map(|_| exim_be(&root, &conf, lines))
            .collect::<anyhow::Result<Vec<f64>>>()?;
        runs.sort_by(f64::total_cmp);
        Ok(runs[0])
    };
    let cdb_n = keys.len();
    let lsearch_n = 10;
    let idle = |n: usize| vec!["x".to_string(); n];
    let cdb_s = best(&lookups("cdb", &cdb, cdb_n))? - best(&idle(cdb_n))?;
    let lsearch_s = best(&lookups("lsearch", &forward, lsearch_n))? - best(&idle(lsearch_n))?;
    Ok(Lookup {
        cdb_ms: cdb_s.max(0.0) * 1000.0 / cdb_n as f64,
        cdb_n,
        lsearch_ms: lsearch_s.max(0.0) * 1000.0 / lsearch_n as f64,
        lsearch_n,
    })
}

/// `postmap` building the three `hash:` tables of the old setup from the live text maps, and
/// `cdb:` tables of the same files: seconds for each, copies in a directory of their own.
fn postmap_peers(maps: &Path) -> anyhow::Result<(f64, f64)> {
    anyhow::ensure!(
        tests::mta::have("postmap"),
        "postmap missing (apt-get install postfix)"
    );
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("main.cf"), "compatibility_level = 3.6\n")?;
    let files = ["virtual", "relay_recipients", "transport"];
    for f in files {
        std::fs::copy(maps.join("postfix").join(f), dir.path().join(f))?;
    }
    procs::sync_disk("postmap");
    let time = |kind: &str| -> anyhow::Result<f64> {
        let t = Instant::now();
        for f in files {
            let out = Command::new("postmap")
                .arg("-c")
                .arg(dir.path())
                .arg(format!("{kind}:{}", dir.path().join(f).display()))
                .output()?;
            anyhow::ensure!(
                out.status.success(),
                "postmap {kind}:{f}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(t.elapsed().as_secs_f64())
    };
    Ok((time("hash")?, time("cdb")?))
}
