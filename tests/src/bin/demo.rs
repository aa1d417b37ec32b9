//! `mxsync-demo`: a receiver and an agent on loopback over a copy of the example primary.
//!
//! It copies `deploy/examples/primary/` to a temporary directory, starts `mxsync-server` and
//! `mxsync-agent` (their library `run` functions) in this process, prints the aliases file to
//! edit, the rendered maps and the status URL, and runs until Ctrl-C. Everything it creates is
//! removed when it stops.

use std::io::Read;
use std::path::Path;
use std::time::Duration;

// The binaries' own log set-up and signal handling.
#[path = "../../../server/src/logs.rs"]
mod logs;
#[path = "../../../server/src/signals.rs"]
mod signals;

fn secret() -> String {
    let mut b = [0u8; 32];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        let _ = f.read_exact(&mut b);
    }
    proto::snapshot::hex(&b)
}

fn main() -> std::process::ExitCode {
    logs::init(logs::Format::Text);
    match demo() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mxsync-demo: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn demo() -> Result<(), String> {
    let rt = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    rt.block_on(async {
        let tmp = tempfile::Builder::new().prefix("mxsync-demo-").tempdir().map_err(|e| e.to_string())?;
        let dir = tmp.path();
        let primary = dir.join("primary");
        tests::copy_tree(&tests::workspace().join("deploy/examples/primary"), &primary).map_err(|e| e.to_string())?;
        // :include: paths must be absolute (Postfix bounces relative ones): point it at the copy.
        let aliases = primary.join("aliases");
        let text = std::fs::read_to_string(&aliases).map_err(|e| e.to_string())?;
        let list = primary.join("lists").display().to_string();
        std::fs::write(&aliases, text.replace(":include:lists/", &format!(":include:{list}/"))).map_err(|e| e.to_string())?;

        let key = secret();
        let read = secret();
        tests::write_key(&dir.join("keys/mx1.key"), &key);
        tests::write_key(&dir.join("keys/read.token"), &read);
        let listener = server::serve::bind(([127, 0, 0, 1], 0).into()).map_err(|e| e.to_string())?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let server_toml = dir.join("server.toml");
        std::fs::write(
            &server_toml,
            format!(
                "listen = \"{addr}\"\nstate_dir = \"state/server\"\nread_token_file = \"keys/read.token\"\n\
                 [[agents]]\nid = \"mx1\"\nkey_file = \"keys/mx1.key\"\ndomains = [\"example.org\", \"example.net\"]\n\
                 primary = \"[127.0.0.1]:25\"\n[freshness]\nwarn_after_secs = 10\nstale_after_secs = 30\n\
                 [output]\ndir = \"maps\"\n"
            ),
        )
        .map_err(|e| e.to_string())?;
        let agent_toml = dir.join("agent.toml");
        std::fs::write(
            &agent_toml,
            format!(
                "agent_id = \"mx1\"\ndomains = [\"example.org\", \"example.net\"]\nstate_dir = \"state/agent\"\n\
                 [sources]\naliases = [\"primary/aliases\"]\nvirtual = [\"primary/virtual\"]\n\
                 recipients = [\"primary/relay_recipients\"]\npasswd = \"primary/passwd\"\nuid_min = 1000\n\
                 [timing]\ndebounce_ms = 50\nheartbeat_secs = 5\nrescan_secs = 60\n\
                 [[receivers]]\nurl = \"http://{addr}\"\nkey_file = \"keys/mx1.key\"\n"
            ),
        )
        .map_err(|e| e.to_string())?;

        let cfg = server::config::Loaded::load(&server_toml).map_err(|e| e.to_string())?;
        let srv = server::Server::open(cfg).map_err(|e| format!("{e:#}"))?;
        let token = tokio_util::sync::CancellationToken::new();
        let server_task = tokio::spawn(server::run(srv, listener, token.clone()));
        let agent_cfg = agent::config::Config::load_for_push(&agent_toml).map_err(|e| e.to_string())?;
        let agent_task = tokio::spawn(agent::run::run(agent_cfg, token.clone()));

        print_banner(dir, &addr.to_string(), &read);
        // Ctrl-C, or SIGTERM (`timeout`, a closed terminal's shell): the directory goes either
        // way (a second signal exits at once and leaves it).
        tokio::spawn(signals::stop_on_signals(token.clone(), "removing the demo's directory"));
        token.cancelled().await;
        println!("\nstopping; removing {}", dir.display());
        let _ = tokio::time::timeout(Duration::from_secs(15), async {
            let _ = agent_task.await;
            let _ = server_task.await;
        })
        .await;
        drop(tmp);
        Ok(())
    })
}

fn print_banner(dir: &Path, addr: &str, read: &str) {
    println!("mxsync demo: a primary (agent) and a secondary (server) on loopback");
    println!();
    println!(
        "  edit the primary's aliases:  {}",
        dir.join("primary/aliases").display()
    );
    println!(
        "  (and its virtual map, recipients, passwd and home/*/.forward in the same directory)"
    );
    println!(
        "  rendered maps (secondary):   {}",
        dir.join("maps/postfix").display()
    );
    println!(
        "                               {}",
        dir.join("maps/exim").display()
    );
    println!("  status URL:                  http://{addr}/v1/status");
    println!("  metrics:                     http://{addr}/metrics");
    println!(
        "  a plan:                      curl -H 'Authorization: Bearer {read}' http://{addr}/v1/plan/trolls@example.org"
    );
    println!();
    println!(
        "  try: echo 'newlist: someone@elsewhere.example' >> {}",
        dir.join("primary/aliases").display()
    );
    println!(
        "       grep newlist {}",
        dir.join("maps/postfix/virtual").display()
    );
    println!();
    println!("Ctrl-C stops the demo and removes {}", dir.display());
}
