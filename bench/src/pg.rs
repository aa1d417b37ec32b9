//! `postgres [N] [EDITS]`: `[output.postgres]` at scale, against a private cluster started for
//! the run (as the tests start theirs): the cold load of a generated primary into the tables,
//! and one changed line until it is committed there, with postalias on the same file beside.

use std::time::{Duration, Instant};

use crate::big::{marker, site_with, wait_map};
use crate::{data, percentile, postalias, procs, summary};

pub(crate) fn postgres_scenario(n: usize, edits: usize) -> anyhow::Result<()> {
    println!(
        "scenario: postgres, {n} aliases: [output.postgres] on a private cluster (Unix socket, \
         fsync on); the agent started until the rows are committed, then {edits} one-line edits \
         until each is committed"
    );
    if !tests::pg::installed() {
        println!("| measure | mxsync | postalias | ratio |\n|---|---|---|---|");
        println!("| all | not run: PostgreSQL missing (apt-get install postgresql) | - | - |");
        summary(
            "postgres 1M",
            "not run",
            "PostgreSQL missing".into(),
            "-".into(),
            "-".into(),
        );
        return Ok(());
    }
    let cluster = tests::pg::Cluster::start_with(true);
    cluster.roles();
    let keys = tempfile::tempdir()?;
    let s = site_with(n, &cluster.output_toml(keys.path()))?;
    let marker_target = |i: usize| {
        cluster
            .try_sql(
                "mail",
                &format!(
                    "SELECT targets FROM mxsync.forwards WHERE address = 'zzmarker@{}'",
                    data::DOMAIN
                ),
            )
            .is_ok_and(|t| t == format!("m{i:07}@remote.example"))
    };
    let t = Instant::now();
    let agent = procs::spawn(&procs::bin("mxsync-agent")?, &s.agent_config)?;
    let maps =
        wait_map(&s.virt, "zzmarker@", Duration::from_secs(600)).map(|_| t.elapsed().as_secs_f64());
    let db = procs::wait(Duration::from_secs(600), || marker_target(0))
        .map(|_| t.elapsed().as_secs_f64());
    let (Some(maps), Some(db)) = (maps, db) else {
        anyhow::bail!("the first snapshot never reached the maps or the database");
    };
    let rows = cluster.sql(
        "mail",
        "SELECT (SELECT count(*) FROM mxsync.recipients) || ' / ' || (SELECT count(*) FROM mxsync.forwards)",
    );
    let aliases = s.root.join("aliases");
    let mut text = std::fs::read(&aliases)?;
    let at = text.len() - marker(0).len();
    let mut lat = Vec::new();
    let mut lost = 0;
    for i in 1..=edits {
        text.truncate(at);
        text.extend_from_slice(marker(i).as_bytes());
        std::fs::write(&aliases, &text)?;
        let saved = Instant::now();
        match procs::wait(Duration::from_secs(60), || marker_target(i)) {
            Some(_) => lat.push(saved.elapsed().as_secs_f64()),
            None => lost += 1,
        }
    }
    lat.sort_by(f64::total_cmp);
    let server_rss = procs::status_mib(s.server.0.id(), "VmHWM:");
    let peer = postalias(&aliases);
    println!("| measure | mxsync | postalias | ratio |");
    println!("|---|---|---|---|");
    let (peer_s, ratio) = match &peer {
        Ok(p) => (format!("{p:.2} s"), format!("{:.2}", db / p)),
        Err(e) => (format!("not run: {e}"), "-".into()),
    };
    println!(
        "| cold: agent started to the rows committed ({rows} recipients / forwards) | {db:.2} s | {peer_s} | {ratio} |"
    );
    println!("| of which the maps live | {maps:.2} s | - | - |");
    let p50 = percentile(&lat, 0.5);
    let max = lat.last().copied().unwrap_or(f64::NAN);
    println!("| one changed line, saved to committed, p50 / max | {p50:.2} / {max:.2} s | - | - |");
    println!("| lost | {lost} of {edits} | - | - |");
    println!("| server peak RSS | {server_rss:.0} MiB | - | - |");
    summary(
        "postgres 1M",
        "cold: agent started to rows committed",
        format!("{db:.2} s (maps live at {maps:.2} s)"),
        match &peer {
            Ok(p) => format!("postalias {p:.2} s"),
            Err(_) => "postalias missing".into(),
        },
        ratio,
    );
    summary(
        "postgres 1M",
        "one changed line, saved to committed, p50",
        format!("{p50:.2} s (max {max:.2} s)"),
        "-".into(),
        "-".into(),
    );
    drop(agent);
    Ok(())
}
