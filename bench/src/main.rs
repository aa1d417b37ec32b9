//! mxsync's benchmarks. Each scenario generates its data deterministically, runs, and prints a
//! table of figures (and, where a peer exists, the peer's figure from the same run and the ratio).
//! Nothing is asserted: results go to `bench/README.md` and the issue notes.
//!
//! - `bench proto [N]`: parse, hash and plan a generated N-alias primary (in process).
//! - `bench apply [N]`: time from request to 200 of an N-alias snapshot in a `mxsync-server`
//!   child process, its peak RSS, and `postalias` on the same aliases file in the same run.
//! - `bench latency [EDITS]`: edit-to-rendered-map latency through `mxsync-agent` and
//!   `mxsync-server` child processes on loopback, and same-size bursts within a second.
//! - `bench idle`: the agent's and server's RSS at rest and CPU per heartbeat.
//! - `bench cold [N]`: `mxsync-agent once` on a generated N-alias primary on disk until the
//!   server's 200; wall time and peak RSS of both processes; `postalias` on the same file.
//! - `bench edit [N] [EDITS]`: one changed line in that primary with `mxsync-agent run`
//!   watching, edit saved to live maps (and from the start of the bench's rewrite of the file).
//! - `bench load [AGENTS] [ALIASES] [ROUNDS]`: many agents pushing at once, status latency.
//! - `bench delta [N]`: the server's delta path for one changed alias, step by step.
//! - `bench mta [N] [EDITS]`: an alias added in that primary until a running Postfix reading
//!   the server's `cdb:` tables accepts it at RCPT; one Exim lookup in a CDB table against
//!   `lsearch`; `postmap` on the same maps beside them.
//! - `bench postgres [N] [EDITS]`: `[output.postgres]` on a private cluster: the cold load of
//!   that primary into the tables and one changed line until committed; `postalias` beside.
//! - `bench all`: every scenario at its default size, then one table of every figure.
//!
//! Build the binaries first: `cargo build --release --bins`.

mod big;
mod data;
mod mta;
mod pg;
mod procs;
mod small;

/// Rows of the closing table of `bench all`: scenario, measure, ours, peer, ratio.
static SUMMARY: std::sync::Mutex<Vec<[String; 5]>> = std::sync::Mutex::new(Vec::new());

/// Adds a row to the closing table.
pub(crate) fn summary(scenario: &str, measure: &str, ours: String, peer: String, ratio: String) {
    if let Ok(mut rows) = SUMMARY.lock() {
        rows.push([scenario.into(), measure.into(), ours, peer, ratio]);
    }
}

/// The allocator of `mxsync-agent` and `mxsync-server`, so that the steps timed in process
/// cost what they cost in the binaries.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::Path;
use std::time::{Duration, Instant};

/// Peak resident set size of this process so far, in MiB (VmHWM).
fn peak_rss_mib() -> f64 {
    rss_mib("VmHWM:")
}

/// This process's `VmRSS:` or `VmHWM:` in MiB.
fn rss_mib(field: &str) -> f64 {
    procs::status_mib(std::process::id(), field)
}

fn proto_scenario(n: usize) {
    let root = "/srv/primary";
    let t = Instant::now();
    let p = data::primary(n, root);
    let gen_s = t.elapsed().as_secs_f64();
    let input_mib = (p.aliases.len() + p.includes.iter().map(|(_, b)| b.len()).sum::<usize>())
        as f64
        / 1048576.0;
    let rss_before = peak_rss_mib();
    let t = Instant::now();
    let content = p.content(root);
    let parse_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let hash = content.hash();
    let hash_s = t.elapsed().as_secs_f64();
    // As the server plans a large content to render its maps: one run per core, side by side,
    // each plan borrowed from the planner and without its reasons (which the maps do not read).
    let cores = proto::par::threads();
    // The peak of planning alone, above what is resident before it (Linux resets VmHWM on a
    // write of 5 to clear_refs).
    let parse_peak = peak_rss_mib();
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let before = rss_mib("VmRSS:");
    let t = Instant::now();
    let runs = (proto::Planner::new(&content).without_reasons()).plan_runs(
        vec![([0usize; 3], 0usize); cores],
        |(classes, targets), pl| {
            classes[pl.class as usize] += 1;
            *targets += pl.forward.len() + pl.punt.len();
        },
    );
    let runs_mib = rss_mib("VmHWM:") - before;
    let plan_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let mut one = 0usize;
    (proto::Planner::new(&content).without_reasons()).plan_each(|_| one += 1);
    let one_s = t.elapsed().as_secs_f64();
    // With the reasons, as `GET /v1/plan` and `mxsync-agent plan` make plans, for comparison.
    let t = Instant::now();
    proto::Planner::new(&content).plan_each(|_| {});
    let reasons_s = t.elapsed().as_secs_f64();
    let mut classes = [0usize; 3];
    let mut targets = 0usize;
    for (c, t) in runs {
        (0..3).for_each(|k| classes[k] += c[k]);
        targets += t;
    }
    let plans = classes.iter().sum::<usize>();
    assert_eq!(plans, one, "planned in runs, every address once");
    println!(
        "scenario: proto (parse + hash + plan), {} aliases, {} include files, {} users",
        p.n,
        p.includes.len(),
        content.users.len()
    );
    println!(
        "input: {input_mib:.1} MiB (generated in {gen_s:.2} s), hash {}",
        &hash[..16]
    );
    println!("| step | seconds |");
    println!("|---|---|");
    println!("| parse + build (normalized content) | {parse_s:.3} |");
    println!("| canonical hash | {hash_s:.3} |");
    println!(
        "| plan every address ({plans} plans, {targets} targets), {cores} runs side by side, as the server renders (borrowed plans, without reasons) | {plan_s:.3} |"
    );
    println!("| owned plans (strings), without reasons, on one thread | {one_s:.3} |");
    println!("| owned plans with their reasons, on one thread | {reasons_s:.3} |");
    println!(
        "planning's peak RSS above the content: {runs_mib:.0} MiB (in {cores} runs; the one-thread run after it reuses that memory)"
    );
    println!("| parse + plan | {:.3} |", parse_s + plan_s);
    summary(
        "proto 1M",
        "parse + plan (in process)",
        format!("{:.2} s", parse_s + plan_s),
        "-".into(),
        "-".into(),
    );
    println!(
        "plans: {} forward, {} split, {} punt",
        classes[0], classes[1], classes[2]
    );
    println!(
        "peak RSS: {:.0} MiB (of which {rss_before:.0} MiB before parsing: generator and input)",
        peak_rss_mib().max(parse_peak)
    );
}

/// Where one changed alias in an N-alias primary costs time on the server's delta path, step by
/// step, in process.
fn delta_scenario(n: usize) -> anyhow::Result<()> {
    let root = "/srv/primary";
    let p = data::primary(n, root);
    let base = p.content(root);
    let mut new = base.clone();
    let k = new
        .aliases
        .iter()
        .position(|a| a.targets.len() == 1 && a.targets[0].kind == proto::Kind::Address)
        .ok_or_else(|| anyhow::anyhow!("no simple alias"))?;
    new.aliases[k].targets[0].value = "changed@remote.example".into();
    let hash = new.hash();
    let mut steps: Vec<(&str, f64)> = Vec::new();
    let mut time = |name: &'static str, t: Instant| steps.push((name, t.elapsed().as_secs_f64()));
    let t = Instant::now();
    let changes = proto::delta::diff(&base, &new);
    time("agent: diff against the receiver's base", t);
    let t = Instant::now();
    let mut got = proto::delta::apply(&base, &changes)?;
    time("server: apply the delta (copies the content)", t);
    let t = Instant::now();
    got.normalize();
    time("server: normalize", t);
    let t = Instant::now();
    proto::delta::validate_changed(&got, &changes).map_err(|e| anyhow::anyhow!("{e}"))?;
    time("server: validate (what the delta upserts)", t);
    let t = Instant::now();
    anyhow::ensure!(got.hash() == hash, "delta result differs");
    time("server: hash", t);
    let t = Instant::now();
    let maps = server::render::AgentMaps {
        id: "mx1",
        version: 2,
        hash: &hash,
        primary: "[127.0.0.1]:25",
        content: &got,
    };
    let formats = ["postfix".to_string(), "exim".to_string()];
    let part = server::render::render_agent(&maps, &formats)?;
    let full_render = t.elapsed().as_secs_f64();
    // What the server does: re-plan only what the change reaches, from the base's lines.
    let old_part = server::render::render_agent(
        &server::render::AgentMaps {
            content: &base,
            ..maps
        },
        &formats,
    )?;
    let t = Instant::now();
    let mut affected =
        proto::plan::Affected::of(&changes).ok_or_else(|| anyhow::anyhow!("domains changed"))?;
    affected.close_over(&got);
    let reached = affected.len();
    time("server: names the change reaches (reverse closure)", t);
    let t = Instant::now();
    drop(proto::Planner::new(&got));
    let index = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let part_inc = server::render::render_agent_affected(&maps, &formats, &old_part, &affected)?;
    time(
        "server: plan and render only those, merged into the base's lines",
        t,
    );
    anyhow::ensure!(
        part_inc == part,
        "incremental render differs from the full one"
    );
    // History keeps the delta as it came (its body, compressed), not the whole snapshot.
    let delta = proto::delta::Delta {
        format: proto::snapshot::FORMAT,
        agent: "mx1".into(),
        version: 2,
        base_hash: base.hash(),
        hash: hash.clone(),
        created_at: 0,
        changes: changes.clone(),
    };
    let stored = zstd::encode_all(serde_json::to_vec(&delta)?.as_slice(), 3)?;
    let total: f64 = steps.iter().map(|(_, s)| s).sum();
    println!(
        "(planning and rendering every address instead: {full_render:.3} s; the change reached {reached} names; indexing every entry for the planner, which planning a few skips: {index:.3} s)"
    );
    println!(
        "scenario: delta path, one changed alias in {n} aliases ({} changes, {} addresses, {} bytes stored)",
        changes.len(),
        part.counts.addresses,
        stored.len()
    );
    println!("| step | seconds |");
    println!("|---|---|");
    for (name, secs) in &steps {
        println!("| {name} | {secs:.3} |");
    }
    println!("| total (without collecting on the agent, SQLite, files and fsync) | {total:.3} |");
    // Installing: the base's set, then the delta's, whose unchanged files are linked; without
    // and with the CDB tables.
    let base_hash = base.hash();
    let base_maps = server::render::AgentMaps {
        content: &base,
        hash: &base_hash,
        version: 1,
        ..maps
    };
    let base_set = server::render::assemble(
        &[(&base_maps, std::sync::Arc::new(old_part.clone()))],
        &formats,
        &[],
    )?;
    let new_set =
        server::render::assemble(&[(&maps, std::sync::Arc::new(part_inc))], &formats, &[])?;
    println!("| install (write, fsync, switch) | base, every file | after the delta |");
    println!("|---|---|---|");
    for cdb in [false, true] {
        let dir = tempfile::tempdir()?;
        let opts = server::maps::Options { cdb, group: None };
        let mut last = server::maps::Last::default();
        procs::sync_disk("install");
        let t = Instant::now();
        server::maps::install(dir.path(), &base_set, &opts, |_| Ok(()), &mut last)?;
        let full = t.elapsed().as_secs_f64();
        let t = Instant::now();
        server::maps::install(dir.path(), &new_set, &opts, |_| Ok(()), &mut last)?;
        let after = t.elapsed().as_secs_f64();
        let what = if cdb {
            "text maps and CDB tables"
        } else {
            "text maps only"
        };
        println!("| {what} | {full:.3} s | {after:.3} s |");
    }
    Ok(())
}

fn post_snapshot(port: u16, body: Vec<u8>, seq: u64) -> anyhow::Result<(u16, String)> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let auth = proto::sign::header(
            procs::KEY.as_bytes(),
            "mx1",
            "POST",
            "/v1/snapshots",
            seq,
            &body,
        );
        let r = reqwest::Client::builder()
            .timeout(Duration::from_secs(600))
            .build()?
            .post(format!("http://127.0.0.1:{port}/v1/snapshots"))
            .header("authorization", auth)
            .header("content-encoding", "zstd")
            .header("content-type", proto::snapshot::MEDIA_TYPE)
            .body(body)
            .send()
            .await?;
        let status = r.status().as_u16();
        Ok((status, r.text().await?))
    })
}

fn apply_scenario(n: usize) -> anyhow::Result<()> {
    let server_bin = procs::bin("mxsync-server")?;
    let tmp = tempfile::tempdir()?;
    let root = tmp.path().join("primary");
    let root_s = root.display().to_string();
    let p = data::primary(n, &root_s);
    p.write(&root)?;
    procs::sync_disk("the apply");
    let content = p.content(&root_s);
    let hash = content.hash();
    let snap = proto::Snapshot {
        format: 1,
        agent: "mx1".into(),
        version: 1,
        hash,
        created_at: 0,
        content,
    };
    // The body the agent sends: binary, compressed as the agent compresses it.
    let plain = snap.to_binary();
    drop(snap);
    let body = agent::push::compress_pieces(&plain)?;
    let (plain_mib, body_mib) = (
        plain.len() as f64 / 1048576.0,
        body.len() as f64 / 1048576.0,
    );
    drop(plain);
    let sdir = tmp.path().join("secondary");
    std::fs::create_dir_all(&sdir)?;
    let port = procs::free_port()?;
    let cfg = procs::server_config(&sdir, port, "")?;
    let server = procs::spawn(&server_bin, &cfg)?;
    procs::wait_healthy(port)?;
    let rss_idle = procs::status_mib(server.0.id(), "VmRSS:");
    let t = Instant::now();
    let (status, reply) = post_snapshot(port, body, 1)?;
    let ours = t.elapsed().as_secs_f64();
    anyhow::ensure!(status == 200, "push refused: {status} {reply}");
    let peak = procs::status_mib(server.0.id(), "VmHWM:");
    drop(server);
    let aliases_mib = p.aliases.len() as f64 / 1048576.0;
    println!(
        "scenario: apply, {n} aliases ({aliases_mib:.1} MiB aliases file), snapshot {plain_mib:.0} MiB binary, {body_mib:.1} MiB zstd"
    );
    println!("| measure | mxsync-server | postalias | ratio |");
    println!("|---|---|---|---|");
    match postalias(&root.join("aliases")) {
        Ok(secs) => {
            println!(
                "| request to 200 (verify, inflate, plan, store, render, fsync, switch) | {ours:.2} s | {secs:.2} s | {:.2} |",
                ours / secs
            );
            summary(
                "apply 1M",
                "request to live maps (server only)",
                format!("{ours:.2} s"),
                format!("postalias {secs:.2} s"),
                format!("{:.2}", ours / secs),
            );
        }
        Err(e) => println!("| request to 200 | {ours:.2} s | not run: {e} | - |"),
    }
    println!("| peak RSS of the server process | {peak:.0} MiB (idle {rss_idle:.0} MiB) | - | - |");
    Ok(())
}

/// Times `postalias` on `aliases` (hash: table) with a private configuration directory.
fn postalias(aliases: &Path) -> anyhow::Result<f64> {
    let bin = ["/usr/sbin/postalias", "/usr/bin/postalias"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .ok_or_else(|| anyhow::anyhow!("postalias missing (apt-get install postfix)"))?;
    let conf = tempfile::tempdir()?;
    std::fs::write(
        conf.path().join("main.cf"),
        "compatibility_level = 3.6\nsmtputf8_enable = no\n",
    )?;
    let t = Instant::now();
    let out = std::process::Command::new(bin)
        .arg("-c")
        .arg(conf.path())
        .arg(format!("hash:{}", aliases.display()))
        .output()?;
    let secs = t.elapsed().as_secs_f64();
    anyhow::ensure!(
        out.status.success(),
        "postalias failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(secs)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let n = |d: usize| -> anyhow::Result<usize> {
        Ok(args.get(1).map(|s| s.parse()).transpose()?.unwrap_or(d))
    };
    let arg = |i: usize, d: usize| -> anyhow::Result<usize> {
        Ok(args.get(i).map(|s| s.parse()).transpose()?.unwrap_or(d))
    };
    match args.first().map(String::as_str) {
        Some("proto") => {
            proto_scenario(n(1_000_000)?);
            Ok(())
        }
        Some("apply") => apply_scenario(n(1_000_000)?),
        Some("latency") => small::latency_scenario(n(1000)?),
        Some("idle") => small::idle_scenario(),
        Some("delta") => delta_scenario(n(1_000_000)?),
        Some("cold") => big::cold_scenario(n(1_000_000)?),
        Some("collect") => big::collect_scenario(n(1_000_000)?),
        Some("edit") => big::edit_scenario(n(1_000_000)?, arg(2, 5)?),
        Some("load") => big::load_scenario(arg(1, 100)?, arg(2, 10_000)?, arg(3, 2)?),
        Some("mta") => mta::mta_scenario(n(1_000_000)?, arg(2, 5)?),
        Some("postgres") => pg::postgres_scenario(n(1_000_000)?, arg(2, 5)?),
        Some("all") => all(),
        _ => anyhow::bail!(
            "usage: bench proto [N] | apply [N] | latency [EDITS] | idle | delta [N] | cold [N] | \
             edit [N] [EDITS] | load [AGENTS] [ALIASES] [ROUNDS] | mta [N] [EDITS] | \
             postgres [N] [EDITS] | all"
        ),
    }
}

/// Every scenario at its default size, each printing its own table, then the summary.
fn all() -> anyhow::Result<()> {
    let started = Instant::now();
    let scenarios: [(&str, &dyn Fn() -> anyhow::Result<()>); 9] = [
        ("proto", &|| {
            proto_scenario(1_000_000);
            Ok(())
        }),
        ("apply", &|| apply_scenario(1_000_000)),
        ("cold", &|| big::cold_scenario(1_000_000)),
        ("edit", &|| big::edit_scenario(1_000_000, 5)),
        ("mta", &|| mta::mta_scenario(1_000_000, 5)),
        ("postgres", &|| pg::postgres_scenario(1_000_000, 5)),
        ("latency", &|| small::latency_scenario(1000)),
        ("idle", &small::idle_scenario),
        ("load", &|| big::load_scenario(100, 10_000, 2)),
    ];
    for (name, run) in scenarios {
        println!();
        // Each scenario starts with the disk clean: the one before leaves gigabytes written
        // and deleted, whose writeback would otherwise land in this one's fsyncs.
        procs::sync_disk(name);
        if let Err(e) = run() {
            println!("scenario {name} failed: {e:#}");
            summary(name, "failed", format!("{e:#}"), "-".into(), "-".into());
        }
    }
    println!();
    println!(
        "summary ({:.0} min, {} cores):",
        started.elapsed().as_secs_f64() / 60.0,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!("| scenario | measure | mxsync | peer (same run) | ratio |");
    println!("|---|---|---|---|---|");
    for r in SUMMARY.lock().map(|r| r.clone()).unwrap_or_default() {
        println!("| {} | {} | {} | {} | {} |", r[0], r[1], r[2], r[3], r[4]);
    }
    Ok(())
}
