//! Scenarios with real agent and server processes on large data: the cold sync of a generated
//! primary (`cold`), one changed line in it (`edit`), and a receiver under load from many agents
//! at once (`load`).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::{data, percentile, postalias, procs, summary};

/// A generated primary on disk with a receiver running for it.
pub(crate) struct Site {
    /// Holds the primary and the secondary's directories.
    pub(crate) tmp: tempfile::TempDir,
    /// The primary's files.
    pub(crate) root: PathBuf,
    pub(crate) server: procs::Proc,
    pub(crate) agent_config: PathBuf,
    /// The live Postfix virtual map (text).
    pub(crate) virt: PathBuf,
}

/// The marker alias appended to generated primaries; its target changes with `i`, same size.
pub(crate) fn marker(i: usize) -> String {
    format!("zzmarker: m{i:07}@remote.example\n")
}

pub(crate) fn site(n: usize) -> anyhow::Result<Site> {
    site_with(n, "")
}

/// [`site`] with `extra` appended to the server's configuration (after `[output]`).
pub(crate) fn site_with(n: usize, extra: &str) -> anyhow::Result<Site> {
    let tmp = tempfile::tempdir()?;
    let root = tmp.path().join("primary");
    let p = data::primary(n, &root.display().to_string());
    p.write(&root)?;
    procs::sync_disk("the first push");
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(root.join("aliases"))?;
    f.write_all(marker(0).as_bytes())?;
    let sdir = tmp.path().join("secondary");
    std::fs::create_dir_all(&sdir)?;
    let port = procs::free_port()?;
    let scfg = procs::server_config(&sdir, port, extra)?;
    let server = procs::spawn(&procs::bin("mxsync-server")?, &scfg)?;
    procs::wait_healthy(port)?;
    procs::secret(&tmp.path().join("agent.key"), procs::KEY)?;
    let agent_config = tmp.path().join("agent.toml");
    std::fs::write(
        &agent_config,
        format!(
            "agent_id = \"mx1\"\ndomains = [\"{}\"]\nstate_dir = \"agent-state\"\n\
             [sources]\naliases = [\"primary/aliases\"]\npasswd = \"primary/passwd\"\nuid_min = 1000\n\
             [timing]\ndebounce_ms = 20\nheartbeat_secs = 30\nrescan_secs = 3600\n\
             [[receivers]]\nurl = \"http://127.0.0.1:{port}\"\nkey_file = \"agent.key\"\n",
            data::DOMAIN
        ),
    )?;
    Ok(Site {
        virt: sdir.join("maps/postfix/virtual"),
        tmp,
        root,
        server,
        agent_config,
    })
}

/// Runs `mxsync-agent once` to completion; wall seconds and the agent's peak RSS (MiB, sampled).
fn agent_once(s: &Site) -> anyhow::Result<(f64, f64)> {
    let t = Instant::now();
    let mut child =
        procs::command(&procs::bin("mxsync-agent")?, &s.agent_config, "once")?.spawn()?;
    let pid = child.id();
    let mut peak = 0f64;
    loop {
        let hwm = procs::status_mib(pid, "VmHWM:");
        if hwm.is_finite() {
            peak = peak.max(hwm);
        }
        if let Some(status) = child.try_wait()? {
            anyhow::ensure!(status.success(), "mxsync-agent once failed: {status}");
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok((t.elapsed().as_secs_f64(), peak))
}

/// Cold sync: agent collect + push + server apply of a generated N-alias primary.
pub(crate) fn cold_scenario(n: usize) -> anyhow::Result<()> {
    let s = site(n)?;
    let (secs, agent_peak) = agent_once(&s)?;
    let server_peak = procs::status_mib(s.server.0.id(), "VmHWM:");
    let mib = std::fs::metadata(s.root.join("aliases"))?.len() as f64 / 1048576.0;
    let peer = postalias(&s.root.join("aliases"));
    println!(
        "scenario: cold sync, {n} aliases ({mib:.1} MiB aliases file, plus includes and users): \
         `mxsync-agent once` (collect, hash, encode, push) until the server's 200 (store, plan, render, install)"
    );
    println!("| measure | mxsync | postalias | ratio |");
    println!("|---|---|---|---|");
    match &peer {
        Ok(p) => {
            println!("| wall time | {secs:.2} s | {p:.2} s | {:.2} |", secs / p);
            summary(
                "cold sync 1M",
                "agent collect + push + server apply",
                format!("{secs:.2} s"),
                format!("postalias {p:.2} s"),
                format!("{:.2}", secs / p),
            );
        }
        Err(e) => {
            println!("| wall time | {secs:.2} s | not run: {e} | - |");
            summary(
                "cold sync 1M",
                "agent collect + push + server apply",
                format!("{secs:.2} s"),
                "postalias missing".into(),
                "-".into(),
            );
        }
    }
    println!("| peak RSS, agent | {agent_peak:.0} MiB | - | - |");
    println!("| peak RSS, server | {server_peak:.0} MiB | - | - |");
    summary(
        "cold sync 1M",
        "peak RSS agent / server",
        format!("{agent_peak:.0} / {server_peak:.0} MiB"),
        "-".into(),
        "-".into(),
    );
    Ok(())
}

/// The agent's collection of a generated N-alias primary on disk, in process: the first one
/// (nothing cached), then again after one changed line (what `run` does after an event).
pub(crate) fn collect_scenario(n: usize) -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let root = tmp.path().join("primary");
    let p = data::primary(n, &root.display().to_string());
    p.write(&root)?;
    let aliases = root.join("aliases");
    let mut f = std::fs::OpenOptions::new().append(true).open(&aliases)?;
    f.write_all(marker(0).as_bytes())?;
    drop(f);
    let sources: agent::config::Sources = toml::from_str(&format!(
        "aliases = [\"{}\"]\npasswd = \"{}\"\nuid_min = 1000\n",
        aliases.display(),
        root.join("passwd").display()
    ))?;
    let domains = vec![data::DOMAIN.to_string()];
    let mut cache = agent::collect::Cache::default();
    let mut steps: Vec<(String, f64)> = Vec::new();
    let t = Instant::now();
    let first = agent::collect::collect_with(&domains, &sources, &mut cache, &None);
    steps.push((
        "first collection (cache empty)".into(),
        t.elapsed().as_secs_f64(),
    ));
    let t = Instant::now();
    let hash = first.content.hash();
    steps.push(("hash".into(), t.elapsed().as_secs_f64()));
    let mut text = std::fs::read(&aliases)?;
    let at = text.len() - marker(0).len();
    // Five edits, each collected with the cache warm: the median.
    let mut warm = Vec::new();
    let mut second = None;
    for i in 1..=5 {
        text.truncate(at);
        text.extend_from_slice(marker(i).as_bytes());
        std::fs::write(&aliases, &text)?;
        let t = Instant::now();
        // What `run` knows after the edit: the file event named the aliases file.
        let changed = Some([aliases.clone()].into_iter().collect());
        second = Some(agent::collect::collect_with(
            &domains, &sources, &mut cache, &changed,
        ));
        warm.push(t.elapsed().as_secs_f64());
    }
    let second = second.context("five edits")?;
    warm.sort_by(f64::total_cmp);
    let how = if second.patched() {
        "patched"
    } else {
        "assembled again"
    };
    steps.push((
        format!("after one changed line (cache warm, {how}; median of 5 edits)"),
        warm[2],
    ));
    let t = Instant::now();
    let cold = agent::collect::collect(&domains, &sources);
    steps.push(("the same without a cache".into(), t.elapsed().as_secs_f64()));
    anyhow::ensure!(
        second.content == cold.content,
        "the cached collection differs"
    );
    anyhow::ensure!(second.content.hash() != hash, "the edit was not seen");
    let t = Instant::now();
    let changes = proto::delta::diff(&first.content, &second.content);
    steps.push((
        format!("diff ({} changes)", changes.len()),
        t.elapsed().as_secs_f64(),
    ));
    println!("scenario: the agent's collection of {n} aliases on disk, in process");
    println!("| step | seconds |");
    println!("|---|---|");
    for (name, secs) in &steps {
        println!("| {name} | {secs:.3} |");
    }
    Ok(())
}

/// One changed line in a large primary, edit saved to live maps, with `mxsync-agent run`
/// watching.
pub(crate) fn edit_scenario(n: usize, edits: usize) -> anyhow::Result<()> {
    let s = site(n)?;
    let agent = procs::spawn(&procs::bin("mxsync-agent")?, &s.agent_config)?;
    let first = wait_map(&s.virt, "zzmarker@", Duration::from_secs(600));
    anyhow::ensure!(first.is_some(), "the first snapshot never arrived");
    // Let the agent settle (its first push answered, watches set up).
    let pid = agent.0.id();
    let mut last = procs::cpu_secs(pid);
    procs::wait(Duration::from_secs(120), || {
        std::thread::sleep(Duration::from_millis(500));
        let now = procs::cpu_secs(pid);
        let quiet = now - last < 0.02;
        last = now;
        quiet
    });
    let aliases = s.root.join("aliases");
    let mut text = std::fs::read(&aliases)?;
    let at = text.len() - marker(0).len();
    // Each edit's time from the edited file saved (the bench's rewrite of it closed: nothing
    // can read the edit before, and postalias beside it starts from the saved file too), and
    // from the start of that rewrite, which is the disk's time for 50 MiB, not mxsync's.
    let mut lat = Vec::new();
    let mut lat_write = Vec::new();
    let mut writes = Vec::new();
    let mut lost = 0;
    for i in 1..=edits {
        text.truncate(at);
        text.extend_from_slice(marker(i).as_bytes());
        let needle = format!("zzmarker@{} m{i:07}@remote.example", data::DOMAIN);
        let t = Instant::now();
        std::fs::write(&aliases, &text)?;
        let saved = Instant::now();
        writes.push((saved - t).as_secs_f64());
        let live = wait_map(&s.virt, &needle, Duration::from_secs(60));
        match live {
            Some(_) => {
                lat.push(saved.elapsed().as_secs_f64());
                lat_write.push(t.elapsed().as_secs_f64());
            }
            None => lost += 1,
        }
    }
    lat.sort_by(f64::total_cmp);
    lat_write.sort_by(f64::total_cmp);
    let agent_rss = procs::status_mib(pid, "VmHWM:");
    let server_rss = procs::status_mib(s.server.0.id(), "VmHWM:");
    let peer = postalias(&aliases);
    println!(
        "scenario: one changed line in a {n}-alias primary (same size, in place), edit saved to \
         live Postfix map through `mxsync-agent run` and the server; {edits} edits"
    );
    println!("| measure | mxsync | postalias (whole file) | ratio |");
    println!("|---|---|---|---|");
    let p50 = percentile(&lat, 0.5);
    let max = lat.last().copied().unwrap_or(f64::NAN);
    let p50_write = percentile(&lat_write, 0.5);
    let max_write = lat_write.last().copied().unwrap_or(f64::NAN);
    writes.sort_by(f64::total_cmp);
    let write = percentile(&writes, 0.5);
    match &peer {
        Ok(p) => {
            println!(
                "| p50, from the edit saved | {p50:.2} s | {p:.2} s | {:.2} |",
                p50 / p
            );
            summary(
                "one changed line in 1M",
                "edit saved to live maps, p50",
                format!("{p50:.2} s ({p50_write:.2} s from the start of the 50 MiB write)"),
                format!("postalias {p:.2} s"),
                format!("{:.2}", p50 / p),
            );
        }
        Err(e) => println!("| p50, from the edit saved | {p50:.2} s | not run: {e} | - |"),
    }
    println!("| max, from the edit saved | {max:.2} s | - | - |");
    println!(
        "| p50 / max from the start of the bench's rewrite of the aliases file (open with O_TRUNC, write, close) | {p50_write:.2} / {max_write:.2} s | - | - |"
    );
    println!("| the rewrite itself, p50 | {write:.2} s | - | - |");
    println!("| lost | {lost} of {edits} | - | - |");
    println!("| peak RSS agent / server | {agent_rss:.0} / {server_rss:.0} MiB | - | - |");
    drop(agent);
    Ok(())
}

/// Waits until the live map `virt` contains `needle`, reading it only when a new generation
/// appeared (a new inode behind the link), so that polling a large map costs the machine nothing.
pub(crate) fn wait_map(virt: &Path, needle: &str, limit: Duration) -> Option<Duration> {
    use std::os::unix::fs::MetadataExt;
    let mut seen = None;
    procs::wait(limit, || {
        let Ok(m) = std::fs::metadata(virt) else {
            return false;
        };
        let id = (m.dev(), m.ino(), m.mtime_nsec());
        if seen == Some(id) {
            std::thread::sleep(Duration::from_millis(2));
            return false;
        }
        seen = Some(id);
        std::fs::read_to_string(virt).is_ok_and(|v| v.contains(needle))
    })
}

/// One request over a plain socket with `Connection: close`: `head` is the request line and any
/// headers (without the final blank line); returns the status code (0 if unreadable).
fn request(port: u16, head: &str, body: &[u8], limit: Duration) -> anyhow::Result<u16> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(limit))?;
    write!(
        s,
        "{head}\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    s.write_all(body)?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0))
}

/// A signed, zstd-compressed snapshot POST; the status.
fn post(port: u16, agent: &str, seq: u64, body: &[u8]) -> anyhow::Result<u16> {
    let path = "/v1/snapshots";
    let auth = proto::sign::header(procs::KEY.as_bytes(), agent, "POST", path, seq, body);
    let head = format!(
        "POST {path} HTTP/1.1\r\nAuthorization: {auth}\r\nContent-Encoding: zstd\r\n\
         Content-Type: {}",
        proto::snapshot::MEDIA_TYPE
    );
    request(port, &head, body, Duration::from_secs(600))
}

fn get_status(port: u16) -> anyhow::Result<u16> {
    request(
        port,
        "GET /v1/status HTTP/1.1",
        b"",
        Duration::from_secs(60),
    )
}

/// `agents` agents with `aliases` aliases each push `rounds` versions at once, while status is
/// read every 50 ms.
pub(crate) fn load_scenario(agents: usize, aliases: usize, rounds: usize) -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path();
    let port = procs::free_port()?;
    let mut cfg = format!(
        "listen = \"127.0.0.1:{port}\"\nstate_dir = \"state\"\nmax_body_bytes = 2147483648\n\
         [freshness]\nwarn_after_secs = 600\nstale_after_secs = 1200\n[output]\ndir = \"maps\"\n"
    );
    for a in 0..agents {
        procs::secret(&dir.join(format!("a{a}.key")), procs::KEY)?;
        cfg.push_str(&format!(
            "[[agents]]\nid = \"a{a}\"\nkey_file = \"a{a}.key\"\ndomains = [\"d{a}.example\"]\n\
             primary = \"[127.0.0.1]:25\"\n"
        ));
    }
    let scfg = dir.join("server.toml");
    std::fs::write(&scfg, cfg)?;
    let server = procs::spawn(&procs::bin("mxsync-server")?, &scfg)?;
    procs::wait_healthy(port)?;
    // Every body prepared before the clock starts.
    let bodies: Vec<Vec<Vec<u8>>> = (0..agents)
        .map(|a| {
            (1..=rounds)
                .map(|v| {
                    let mut text = String::with_capacity(aliases * 40);
                    for k in 0..aliases {
                        let round = if k % 100 == 0 { v } else { 0 };
                        text.push_str(&format!("u{k}: u{k}.{round}@remote{}.example\n", k % 13));
                    }
                    let mut b = proto::Builder::new(&[format!("d{a}.example")]);
                    b.aliases("/etc/aliases", text.as_bytes());
                    let content = b.finish();
                    let snap = proto::Snapshot {
                        format: proto::snapshot::FORMAT,
                        agent: format!("a{a}"),
                        version: v as u64,
                        hash: content.hash(),
                        created_at: 0,
                        content,
                    };
                    let plain = snap.to_binary();
                    zstd::stream::encode_all(&plain[..], proto::wire::ZSTD_LEVEL)
                        .unwrap_or_default()
                })
                .collect()
        })
        .collect();
    let done = Arc::new(AtomicBool::new(false));
    let status_ms = Arc::new(Mutex::new(Vec::new()));
    let status_errors = Arc::new(Mutex::new(0usize));
    let poller = {
        let (done, ms, errs) = (
            Arc::clone(&done),
            Arc::clone(&status_ms),
            Arc::clone(&status_errors),
        );
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                let t = Instant::now();
                match get_status(port) {
                    Ok(200 | 503) => {
                        if let Ok(mut v) = ms.lock() {
                            v.push(t.elapsed().as_secs_f64() * 1000.0);
                        }
                    }
                    _ => {
                        if let Ok(mut e) = errs.lock() {
                            *e += 1;
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    let t = Instant::now();
    let refused = Arc::new(Mutex::new(Vec::new()));
    let threads: Vec<_> = bodies
        .into_iter()
        .enumerate()
        .map(|(a, versions)| {
            let refused = Arc::clone(&refused);
            std::thread::spawn(move || {
                for (i, body) in versions.iter().enumerate() {
                    let code = post(port, &format!("a{a}"), i as u64 + 1, body).unwrap_or(0);
                    if code != 200
                        && let Ok(mut r) = refused.lock()
                    {
                        r.push((a, i + 1, code));
                    }
                }
            })
        })
        .collect();
    for th in threads {
        let _ = th.join();
    }
    let wall = t.elapsed().as_secs_f64();
    done.store(true, Ordering::Relaxed);
    let _ = poller.join();
    let peak = procs::status_mib(server.0.id(), "VmHWM:");
    let mut ms = status_ms.lock().map(|v| v.clone()).unwrap_or_default();
    ms.sort_by(f64::total_cmp);
    let refused = refused.lock().map(|r| r.clone()).unwrap_or_default();
    let pushes = agents * rounds;
    let applied = pushes - refused.len();
    let status_errors = status_errors.lock().map_or(0, |e| *e);
    println!(
        "scenario: receiver under load, {agents} agents x {aliases} aliases, {rounds} versions each \
         pushed at once (one connection per push), GET /v1/status every 50 ms"
    );
    println!("| measure | mxsync-server |");
    println!("|---|---|");
    println!(
        "| pushes applied | {applied} of {pushes} in {wall:.1} s: {:.1} per second |",
        applied as f64 / wall
    );
    println!(
        "| refused | {} {:?} |",
        refused.len(),
        &refused[..refused.len().min(5)]
    );
    println!(
        "| status p50 / p99 / max | {:.1} / {:.1} / {:.1} ms ({} requests, {status_errors} failed) |",
        percentile(&ms, 0.5),
        percentile(&ms, 0.99),
        ms.last().copied().unwrap_or(f64::NAN),
        ms.len()
    );
    println!("| server peak RSS | {peak:.0} MiB |");
    summary(
        "load: 100 agents x 10k",
        "pushes applied per second",
        format!("{:.1}/s ({} refused)", applied as f64 / wall, refused.len()),
        "-".into(),
        "-".into(),
    );
    summary(
        "load: 100 agents x 10k",
        "status p99 under load",
        format!("{:.1} ms", percentile(&ms, 0.99)),
        "-".into(),
        "-".into(),
    );
    drop(server);
    Ok(())
}
