//! Running operator commands (`prepare`, `after_apply`, the alert command): argv, no shell, with a
//! time limit; the child is killed when the limit passes. Nothing from a snapshot ever reaches an
//! argument list.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncWriteExt;

/// `PROG: STATUS LAST-LINE-OF-STDERR`.
fn failure(prog: &str, status: std::process::ExitStatus, stderr: &str) -> String {
    let last = stderr
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim();
    format!("{prog}: {status} {last}").trim_end().to_string()
}

/// Runs `argv` in `dir` (or the current directory), feeding `stdin`, within `limit`.
/// Returns a short description of the failure.
pub async fn run(
    argv: &[String],
    dir: Option<&Path>,
    stdin: Option<&[u8]>,
    limit: Duration,
) -> Result<(), String> {
    let Some((prog, args)) = argv.split_first() else {
        return Ok(());
    };
    let mut cmd = tokio::process::Command::new(prog);
    cmd.args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(d) = dir {
        cmd.current_dir(d);
    }
    let mut child = cmd.spawn().map_err(|e| format!("{prog}: {e}"))?;
    if let (Some(data), Some(mut pipe)) = (stdin, child.stdin.take()) {
        let _ = pipe.write_all(data).await;
    }
    match tokio::time::timeout(limit, child.wait_with_output()).await {
        Err(_) => Err(format!(
            "{prog}: timed out after {} s and was killed",
            limit.as_secs()
        )),
        Ok(Err(e)) => Err(format!("{prog}: {e}")),
        Ok(Ok(out)) if out.status.success() => Ok(()),
        Ok(Ok(out)) => Err(failure(
            prog,
            out.status,
            &String::from_utf8_lossy(&out.stderr),
        )),
    }
}

/// Blocking variant for the apply thread (which is not async).
pub fn run_blocking(argv: &[String], dir: Option<&Path>, limit: Duration) -> Result<(), String> {
    let Some((prog, args)) = argv.split_first() else {
        return Ok(());
    };
    let mut cmd = std::process::Command::new(prog);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if let Some(d) = dir {
        cmd.current_dir(d);
    }
    let mut child = cmd.spawn().map_err(|e| format!("{prog}: {e}"))?;
    let deadline = std::time::Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return Ok(()),
            Ok(Some(status)) => {
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    use std::io::Read;
                    let _ = e.read_to_string(&mut err);
                }
                return Err(failure(prog, status, &err));
            }
            Ok(None) if std::time::Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "{prog}: timed out after {} s and was killed",
                    limit.as_secs()
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => return Err(format!("{prog}: {e}")),
        }
    }
}
