//! mxsync's benchmarks. Each scenario generates its data deterministically, runs, and prints a
//! table of figures (and, where a peer exists, the peer's figure from the same run and the ratio).
//! Nothing is asserted: results go to `bench/README.md` and the issue notes.
//!
//! `cargo run --release -p bench -- proto [N]`: parse, hash and plan a generated N-alias primary.

mod data;

use std::time::Instant;

/// Peak resident set size of this process so far, in MiB (VmHWM).
fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
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
    let t = Instant::now();
    let mut classes = [0usize; 3];
    let mut targets = 0usize;
    proto::Planner::new(&content).plan_each(|pl| {
        classes[pl.class as usize] += 1;
        targets += pl.forward.len() + pl.punt.len();
    });
    let plan_s = t.elapsed().as_secs_f64();
    let plans = classes.iter().sum::<usize>();
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
    println!("| plan every address ({plans} plans, {targets} targets) | {plan_s:.3} |");
    println!("| parse + plan | {:.3} |", parse_s + plan_s);
    println!(
        "plans: {} forward, {} split, {} punt",
        classes[0], classes[1], classes[2]
    );
    println!(
        "peak RSS: {:.0} MiB (of which {rss_before:.0} MiB before parsing: generator and input)",
        peak_rss_mib()
    );
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("proto") => {
            let n = args
                .get(1)
                .map(|s| s.parse())
                .transpose()?
                .unwrap_or(1_000_000);
            proto_scenario(n);
            Ok(())
        }
        _ => anyhow::bail!("usage: bench proto [N]"),
    }
}
