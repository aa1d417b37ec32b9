//! Running the workspace's release binaries as child processes and reading their memory and CPU
//! from `/proc`, so figures are per process, not of this bench.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The release binary `name` next to this bench.
pub(crate) fn bin(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let p = exe.parent().map(|d| d.join(name)).unwrap_or_default();
    anyhow::ensure!(
        p.exists(),
        "{} not built: run `cargo build --release --bins` first",
        p.display()
    );
    Ok(p)
}

/// Writes back what is dirty (`sync`), so that the bench's own writes (a generated primary,
/// the scenario before) do not land in the fsyncs of what it times. Says so if it fails.
pub(crate) fn sync_disk(before: &str) {
    if let Err(e) = std::process::Command::new("sync").status() {
        println!("(sync before {before} failed: {e})");
    }
}

/// A field of `/proc/PID/status` in MiB (VmHWM, VmRSS).
pub(crate) fn status_mib(pid: u32, field: &str) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// User + system CPU seconds of a process.
pub(crate) fn cpu_secs(pid: u32) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = s.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // Fields 14 and 15 (utime, stime) are at 11 and 12 after the ")".
    (ticks(11) + ticks(12)) / 100.0
}

/// A child process, killed on drop.
pub(crate) struct Proc(pub(crate) Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `bin --config CONFIG COMMAND`, quiet; with `MXSYNC_BENCH_LOGS=DIR` set it logs at info
/// level, with its steps' timings, to `DIR/NAME.log` (NAME: the binary's file name).
pub(crate) fn command(bin: &Path, config: &Path, what: &str) -> anyhow::Result<Command> {
    let mut cmd = Command::new(bin);
    cmd.arg("--config")
        .arg(config)
        .arg(what)
        .stdout(Stdio::null());
    match std::env::var_os("MXSYNC_BENCH_LOGS") {
        Some(dir) => {
            let name = bin.file_name().unwrap_or_default().to_string_lossy();
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(Path::new(&dir).join(format!("{name}.log")))?;
            let level = std::env::var("MXSYNC_BENCH_LOG_LEVEL").unwrap_or_else(|_| "info".into());
            cmd.env("RUST_LOG", level).stderr(log);
        }
        None => {
            cmd.env("RUST_LOG", "warn").stderr(Stdio::null());
        }
    }
    Ok(cmd)
}

/// Starts `bin --config CONFIG run` (see [`command`]).
pub(crate) fn spawn(bin: &Path, config: &Path) -> anyhow::Result<Proc> {
    Ok(Proc(command(bin, config, "run")?.spawn()?))
}

/// Waits until `cond` holds, polling every millisecond; `None` after `limit`.
pub(crate) fn wait(limit: Duration, mut cond: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if cond() {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    None
}

/// Writes a secret file (mode 0600).
pub(crate) fn secret(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(())
}

/// A free loopback port.
pub(crate) fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Writes a server config for agent mx1 (example.org) listening on `port`, maps in `dir/maps`.
pub(crate) fn server_config(dir: &Path, port: u16, extra: &str) -> anyhow::Result<PathBuf> {
    secret(&dir.join("mx1.key"), KEY)?;
    let p = dir.join("server.toml");
    std::fs::write(
        &p,
        format!(
            "listen = \"127.0.0.1:{port}\"\nstate_dir = \"state\"\nmax_body_bytes = 2147483648\n\
             [[agents]]\nid = \"mx1\"\nkey_file = \"mx1.key\"\ndomains = [\"example.org\"]\nprimary = \"[127.0.0.1]:25\"\n\
             [output]\ndir = \"maps\"\n{extra}"
        ),
    )?;
    Ok(p)
}

/// The shared secret of bench agents and servers.
pub(crate) const KEY: &str = "bench-key-0123456789abcdef0123456789abcdef";

/// Blocks until `GET url/healthz` answers.
pub(crate) fn wait_healthy(port: u16) -> anyhow::Result<()> {
    let up = wait(Duration::from_secs(60), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    anyhow::ensure!(up.is_some(), "server on port {port} did not come up");
    Ok(())
}
