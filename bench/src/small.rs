//! Scenarios on a small primary with real agent and server processes: edit-to-map propagation
//! (`latency`, lsyncd beside it) and the cost at rest (`idle`).

use std::path::Path;
use std::time::{Duration, Instant};

use crate::{percentile, procs, summary};

/// A server and an agent (release binaries) over a small primary.
struct Pair {
    _tmp: tempfile::TempDir,
    server: procs::Proc,
    agent: procs::Proc,
    aliases: std::path::PathBuf,
    virt: std::path::PathBuf,
}

fn pair(debounce_ms: u64, heartbeat_secs: u64) -> anyhow::Result<Pair> {
    let tmp = tempfile::tempdir()?;
    let sdir = tmp.path().join("secondary");
    let pdir = tmp.path().join("primary");
    std::fs::create_dir_all(&sdir)?;
    std::fs::create_dir_all(&pdir)?;
    let port = procs::free_port()?;
    let scfg = procs::server_config(&sdir, port, "")?;
    let server = procs::spawn(&procs::bin("mxsync-server")?, &scfg)?;
    procs::wait_healthy(port)?;
    let aliases = pdir.join("aliases");
    std::fs::write(&aliases, small_aliases(0))?;
    std::fs::write(pdir.join("passwd"), "")?;
    procs::secret(&tmp.path().join("agent.key"), procs::KEY)?;
    let acfg = tmp.path().join("agent.toml");
    std::fs::write(
        &acfg,
        format!(
            "agent_id = \"mx1\"\ndomains = [\"example.org\"]\nstate_dir = \"agent-state\"\n\
             [sources]\naliases = [\"primary/aliases\"]\npasswd = \"primary/passwd\"\n\
             [timing]\ndebounce_ms = {debounce_ms}\nheartbeat_secs = {heartbeat_secs}\nrescan_secs = 300\n\
             [[receivers]]\nurl = \"http://127.0.0.1:{port}\"\nkey_file = \"agent.key\"\n"
        ),
    )?;
    let agent = procs::spawn(&procs::bin("mxsync-agent")?, &acfg)?;
    let virt = sdir.join("maps/postfix/virtual");
    let up = procs::wait(Duration::from_secs(30), || {
        std::fs::read_to_string(&virt).is_ok_and(|v| v.contains("marker@"))
    });
    anyhow::ensure!(up.is_some(), "the first snapshot never arrived");
    Ok(Pair {
        _tmp: tmp,
        server,
        agent,
        aliases,
        virt,
    })
}

/// 100 aliases plus a `marker` whose target carries `i` (always the same size).
fn small_aliases(i: usize) -> String {
    let mut s = format!("marker: m{i:07}@remote.example\n");
    for k in 0..100 {
        s.push_str(&format!(
            "a{k}: a{k}@remote{}.example, b{k}@other.example\n",
            k % 7
        ));
    }
    s
}

fn live(pr: &Pair, i: usize, limit: Duration) -> bool {
    let needle = format!("marker@example.org m{i:07}@remote.example");
    procs::wait(limit, || {
        std::fs::read_to_string(&pr.virt).is_ok_and(|v| v.contains(&needle))
    })
    .is_some()
}

/// Edit latencies (ms, sorted), lost edits and lost bursts for `write` then `live` checks.
struct Propagation {
    lat: Vec<f64>,
    lost: usize,
    burst_lost: usize,
}

fn propagate(
    edits: usize,
    write: &dyn Fn(usize) -> std::io::Result<()>,
    live: &dyn Fn(usize, Duration) -> bool,
) -> anyhow::Result<Propagation> {
    let mut lat = Vec::new();
    let mut lost = 0;
    for i in 1..=edits {
        let t = Instant::now();
        write(i)?;
        if live(i, Duration::from_secs(1)) {
            lat.push(t.elapsed().as_secs_f64() * 1000.0);
        } else {
            lost += 1;
        }
    }
    lat.sort_by(f64::total_cmp);
    // Bursts: ten same-size edits within half a second; the last must become live.
    let mut burst_lost = 0;
    for b in 0..20 {
        let base = 1_000_000 + b * 10;
        for k in 0..10 {
            write(base + k)?;
            std::thread::sleep(Duration::from_millis(50));
        }
        if !live(base + 9, Duration::from_secs(2)) {
            burst_lost += 1;
        }
    }
    Ok(Propagation {
        lat,
        lost,
        burst_lost,
    })
}

/// lsyncd + rsync with `delay = 0` from a source directory to a local target directory.
fn lsyncd_peer(edits: usize) -> anyhow::Result<Propagation> {
    for tool in ["lsyncd", "rsync"] {
        anyhow::ensure!(
            ["/usr/bin", "/usr/local/bin", "/bin"]
                .iter()
                .any(|d| Path::new(d).join(tool).exists()),
            "{tool} missing (apt-get install lsyncd rsync)"
        );
    }
    let tmp = tempfile::tempdir()?;
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    std::fs::create_dir_all(&src)?;
    std::fs::create_dir_all(&dst)?;
    std::fs::write(src.join("aliases"), small_aliases(0))?;
    let conf = tmp.path().join("lsyncd.conf");
    std::fs::write(
        &conf,
        format!(
            "settings {{ nodaemon = true, logfile = \"{log}\", insist = true }}\n\
             sync {{ default.rsync, source = \"{src}/\", target = \"{dst}/\", delay = 0, rsync = {{ archive = true }} }}\n",
            log = tmp.path().join("lsyncd.log").display(),
            src = src.display(),
            dst = dst.display()
        ),
    )?;
    let _peer = procs::Proc(
        std::process::Command::new("lsyncd")
            .arg(&conf)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()?,
    );
    let first = procs::wait(Duration::from_secs(30), || {
        std::fs::read_to_string(dst.join("aliases")).is_ok_and(|t| t == small_aliases(0))
    });
    anyhow::ensure!(first.is_some(), "lsyncd never made the first copy");
    let write = |i: usize| std::fs::write(src.join("aliases"), small_aliases(i));
    let live = |i: usize, limit: Duration| {
        let want = small_aliases(i);
        procs::wait(limit, || {
            std::fs::read_to_string(dst.join("aliases")).is_ok_and(|t| t == want)
        })
        .is_some()
    };
    propagate(edits, &write, &live)
}

pub(crate) fn latency_scenario(edits: usize) -> anyhow::Result<()> {
    let pr = pair(20, 30)?;
    let write = |i: usize| std::fs::write(&pr.aliases, small_aliases(i));
    let live_fn = |i: usize, limit: Duration| live(&pr, i, limit);
    let ours = propagate(edits, &write, &live_fn)?;
    drop(pr);
    let peer = lsyncd_peer(edits);
    println!(
        "scenario: propagation, {edits} sequential edits of a 101-alias file (same size every time), loopback; \
         mxsync: edit to rendered Postfix map, debounce_ms = 20; peer: lsyncd + rsync, delay = 0, edit to copied file"
    );
    println!("| measure | mxsync | lsyncd + rsync | ratio |");
    println!("|---|---|---|---|");
    let row = |name: &str, f: &dyn Fn(&Propagation) -> f64, unit: &str| match &peer {
        Ok(p) => println!(
            "| {name} | {:.1} {unit} | {:.1} {unit} | {:.2} |",
            f(&ours),
            f(p),
            f(&ours) / f(p)
        ),
        Err(e) => println!("| {name} | {:.1} {unit} | not run: {e} | - |", f(&ours)),
    };
    let peer_fig = |f: &dyn Fn(&Propagation) -> f64| match &peer {
        Ok(p) => (
            format!("lsyncd {:.1} ms", f(p)),
            format!("{:.2}", f(&ours) / f(p)),
        ),
        Err(_) => ("lsyncd missing".to_string(), "-".to_string()),
    };
    for (name, f) in [
        (
            "propagation p50",
            &(|p: &Propagation| percentile(&p.lat, 0.5)) as &dyn Fn(&Propagation) -> f64,
        ),
        ("propagation p99", &|p: &Propagation| {
            percentile(&p.lat, 0.99)
        }),
    ] {
        let (peer_s, ratio) = peer_fig(f);
        summary(
            "propagation",
            name,
            format!("{:.1} ms", f(&ours)),
            peer_s,
            ratio,
        );
    }
    summary(
        "propagation",
        "lost edits / lost bursts",
        format!("{} of {edits} / {} of 20", ours.lost, ours.burst_lost),
        match &peer {
            Ok(p) => format!("lsyncd {} of {edits} / {} of 20", p.lost, p.burst_lost),
            Err(_) => "lsyncd missing".into(),
        },
        "-".into(),
    );
    row("p50", &|p| percentile(&p.lat, 0.5), "ms");
    row("p99", &|p| percentile(&p.lat, 0.99), "ms");
    row("max", &|p| p.lat.last().copied().unwrap_or(f64::NAN), "ms");
    match &peer {
        Ok(p) => {
            println!(
                "| lost edits (not live within 1 s) | {} of {edits} | {} of {edits} | - |",
                ours.lost, p.lost
            );
            println!(
                "| lost bursts (10 same-size edits in 0.5 s, last not live) | {} of 20 | {} of 20 | - |",
                ours.burst_lost, p.burst_lost
            );
        }
        Err(_) => {
            println!(
                "| lost edits (not live within 1 s) | {} of {edits} | - | - |",
                ours.lost
            );
            println!("| lost bursts | {} of 20 | - | - |", ours.burst_lost);
        }
    }
    Ok(())
}

pub(crate) fn idle_scenario() -> anyhow::Result<()> {
    let pr = pair(50, 1)?;
    std::thread::sleep(Duration::from_secs(3));
    let (a, s) = (pr.agent.0.id(), pr.server.0.id());
    let (a0, s0) = (procs::cpu_secs(a), procs::cpu_secs(s));
    let secs = 20;
    std::thread::sleep(Duration::from_secs(secs));
    let (a1, s1) = (procs::cpu_secs(a), procs::cpu_secs(s));
    println!("scenario: idle, 101-alias primary, heartbeat_secs = 1, measured over {secs} s");
    println!("| measure | mxsync-agent | mxsync-server |");
    println!("|---|---|---|");
    println!(
        "| RSS at rest | {:.1} MiB | {:.1} MiB |",
        procs::status_mib(a, "VmRSS:"),
        procs::status_mib(s, "VmRSS:")
    );
    println!(
        "| CPU per heartbeat (user+sys; 10 ms clock ticks) | {:.2} ms | {:.2} ms |",
        (a1 - a0) * 1000.0 / secs as f64,
        (s1 - s0) * 1000.0 / secs as f64
    );
    summary(
        "idle",
        "RSS agent / server",
        format!(
            "{:.1} / {:.1} MiB",
            procs::status_mib(a, "VmRSS:"),
            procs::status_mib(s, "VmRSS:")
        ),
        "-".into(),
        "-".into(),
    );
    Ok(())
}
