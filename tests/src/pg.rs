//! A private PostgreSQL cluster for a test or a benchmark: `initdb` in a temporary directory,
//! `postgres` on a Unix socket in it only (no TCP port), removed when dropped. Run as root (as CI does), the
//! cluster belongs to the `postgres` user, as `initdb` refuses root.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The superuser's password, and the password of the roles [`Cluster::roles`] makes.
pub const ADMIN_PASSWORD: &str = "admin-password-for-tests-only";
pub const WRITER_PASSWORD: &str = "writer-password-for-tests-0123456789";
pub const READER_PASSWORD: &str = "reader-password-for-tests-0123456789";

/// A running cluster.
pub struct Cluster {
    /// Holds the data directory and the socket.
    _dir: tempfile::TempDir,
    data: PathBuf,
    /// The directory of the Unix socket (a libpq `host`).
    pub socket_dir: PathBuf,
    /// The port in the socket's name (`.s.PGSQL.PORT`); nothing listens on TCP.
    pub port: u16,
    bin: PathBuf,
    owner: Option<(u32, u32)>,
    fsync: bool,
    /// With TLS: the certificate and key files, and TCP on 127.0.0.1 as well as the socket.
    tls: Option<(PathBuf, PathBuf)>,
}

/// The directory holding `initdb` and `pg_ctl`: on PATH, or Debian's versioned directory.
fn bin_dir() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p).find(|d| d.join("pg_ctl").is_file() && d.join("initdb").is_file())
    });
    on_path.or_else(|| {
        let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .filter_map(|e| Some(e.ok()?.path().join("bin")))
            .filter(|b| b.join("pg_ctl").is_file())
            .collect();
        found.sort();
        found.pop()
    })
}

/// The uid and gid of `user` in /etc/passwd.
fn ids(user: &str) -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.first() == Some(&user))
            .then(|| Some((f.get(2)?.parse().ok()?, f.get(3)?.parse().ok()?)))?
    })
}

/// Whether `initdb` and `pg_ctl` are installed (and, as root, a `postgres` user to run them).
pub fn installed() -> bool {
    bin_dir().is_some() && (rustix::process::geteuid().as_raw() != 0 || ids("postgres").is_some())
}

/// Whether PostgreSQL tests can run here; under CI they must.
pub fn available() -> bool {
    let ok = installed();
    if !ok {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "PostgreSQL is required under CI=true"
        );
        eprintln!("skipped: PostgreSQL not installed (apt-get install postgresql)");
    }
    ok
}

/// Whether Postfix reads pgsql: tables (Debian's postfix-pgsql registers them).
pub fn postfix_pgsql() -> bool {
    let ok = std::fs::read_to_string("/etc/postfix/dynamicmaps.cf")
        .is_ok_and(|t| t.lines().any(|l| l.starts_with("pgsql")));
    if !ok {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "postfix-pgsql is required under CI=true"
        );
        eprintln!("skipped: postfix-pgsql not installed (apt-get install postfix-pgsql)");
    }
    ok
}

impl Cluster {
    /// Creates and starts a cluster (password authentication for every connection), without
    /// fsync: tests need no durability across a power cut.
    pub fn start() -> Cluster {
        Self::start_with(false)
    }

    /// [`Cluster::start`], with `fsync` on or off (a benchmark measures with it on).
    pub fn start_with(fsync: bool) -> Cluster {
        Self::make(fsync, None)
    }

    /// [`Cluster::start`] serving TLS with `cert_pem` and `key_pem` on 127.0.0.1:[`Cluster::port`]
    /// (a port free a moment before) as well as on the socket.
    pub fn start_tls(cert_pem: &str, key_pem: &str) -> Cluster {
        Self::make(false, Some((cert_pem, key_pem)))
    }

    fn make(fsync: bool, tls: Option<(&str, &str)>) -> Cluster {
        let bin = bin_dir().expect("PostgreSQL's initdb and pg_ctl");
        let owner = (rustix::process::geteuid().as_raw() == 0)
            .then(|| ids("postgres").expect("a postgres user to run the cluster as"));
        let dir = tempfile::Builder::new()
            .prefix("mxsync-pg-")
            .tempdir()
            .expect("a temporary directory");
        let data = dir.path().join("data");
        let socket_dir = dir.path().join("socket");
        std::fs::create_dir_all(&socket_dir).expect("the socket directory");
        let pwfile = dir.path().join("pw");
        std::fs::write(&pwfile, ADMIN_PASSWORD).expect("the password file");
        {
            use std::os::unix::fs::PermissionsExt;
            // Open for traversal: the MTA's lookups connect to the socket in it.
            for d in [dir.path(), socket_dir.as_path()] {
                std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755))
                    .expect("chmod the cluster's directory");
            }
        }
        let tls = tls.map(|(cert, key)| {
            use std::os::unix::fs::PermissionsExt;
            let (c, k) = (dir.path().join("server.crt"), dir.path().join("server.key"));
            std::fs::write(&c, cert).expect("write the certificate");
            std::fs::write(&k, key).expect("write the key");
            std::fs::set_permissions(&k, std::fs::Permissions::from_mode(0o600))
                .expect("chmod the key");
            (c, k)
        });
        if let Some((uid, gid)) = owner {
            let files = tls.iter().flat_map(|(c, k)| [c.as_path(), k.as_path()]);
            for p in [dir.path(), socket_dir.as_path(), pwfile.as_path()]
                .into_iter()
                .chain(files)
            {
                std::os::unix::fs::chown(p, Some(uid), Some(gid))
                    .expect("chown the cluster's directory");
            }
        }
        let c = Cluster {
            _dir: dir,
            data,
            socket_dir,
            // The socket is private to this directory: the default port cannot clash. Over TCP,
            // a port of its own.
            port: if tls.is_some() {
                crate::free_port()
            } else {
                5432
            },
            bin,
            owner,
            fsync,
            tls,
        };
        c.run(
            Command::new(c.bin.join("initdb"))
                .arg("-D")
                .arg(&c.data)
                .args([
                    "-U",
                    "admin",
                    "-A",
                    "scram-sha-256",
                    "--no-sync",
                    "-E",
                    "UTF8",
                    "--locale=C",
                ])
                .arg(format!("--pwfile={}", pwfile.display())),
        );
        c.pg_ctl_start();
        c
    }

    fn run(&self, cmd: &mut Command) -> String {
        if let Some((uid, gid)) = self.owner {
            cmd.uid(uid).gid(gid);
        }
        let out = cmd.output().expect("run a PostgreSQL command");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{cmd:?}: {text}");
        text
    }

    /// Starts the cluster (again) and waits until it answers.
    pub fn pg_ctl_start(&self) {
        let mut opts = format!(
            "-c unix_socket_directories='{}' -c port={} -c fsync={} -c max_connections=40",
            self.socket_dir.display(),
            self.port,
            if self.fsync { "on" } else { "off" }
        );
        match &self.tls {
            None => opts.push_str(" -c listen_addresses=''"),
            Some((cert, key)) => opts.push_str(&format!(
                " -c listen_addresses='127.0.0.1' -c ssl=on -c ssl_cert_file='{}' -c ssl_key_file='{}'",
                cert.display(),
                key.display()
            )),
        }
        self.run(
            Command::new(self.bin.join("pg_ctl"))
                .arg("-D")
                .arg(&self.data)
                .args(["-w", "-t", "60", "-o", &opts, "-l"])
                .arg(self.data.with_file_name("server.log"))
                .arg("start"),
        );
        let up = crate::wait_for(Duration::from_secs(30), || {
            self.try_sql("postgres", "SELECT 1").is_ok()
        });
        assert!(up, "the cluster does not answer: {}", self.log());
    }

    /// Stops the cluster at once (connections are cut).
    pub fn pg_ctl_stop(&self) {
        self.run(
            Command::new(self.bin.join("pg_ctl"))
                .arg("-D")
                .arg(&self.data)
                .args(["-w", "-m", "immediate", "stop"]),
        );
    }

    /// The cluster's log, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.data.with_file_name("server.log")).unwrap_or_default()
    }

    /// Runs `sql` as the superuser in database `db`; its rows, `|`-separated, one per line.
    pub fn try_sql(&self, db: &str, sql: &str) -> Result<String, String> {
        let out = Command::new("psql")
            .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h"])
            .arg(&self.socket_dir)
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                "admin",
                "-d",
                db,
                "-c",
                sql,
            ])
            .env("PGPASSWORD", ADMIN_PASSWORD)
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim_end().to_string())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// [`Cluster::try_sql`] that must succeed.
    pub fn sql(&self, db: &str, sql: &str) -> String {
        self.try_sql(db, sql)
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// Database `mail` with the roles the README's "Many secondaries" sets up: `mxsync`, who
    /// owns schema `mxsync`, and `mta`, who may only read it.
    pub fn roles(&self) {
        self.sql("postgres", "CREATE DATABASE mail");
        for stmt in [
            format!("CREATE ROLE mxsync LOGIN PASSWORD '{WRITER_PASSWORD}'"),
            format!("CREATE ROLE mta LOGIN PASSWORD '{READER_PASSWORD}'"),
            "CREATE SCHEMA mxsync AUTHORIZATION mxsync".into(),
            "GRANT USAGE ON SCHEMA mxsync TO mta".into(),
            "ALTER DEFAULT PRIVILEGES FOR ROLE mxsync IN SCHEMA mxsync GRANT SELECT ON TABLES TO mta".into(),
        ] {
            self.sql("mail", &stmt);
        }
    }

    /// server.toml's `[output.postgres]` for the writer role, its password in `dir/pg.password`.
    pub fn output_toml(&self, dir: &Path) -> String {
        let pw = dir.join("pg.password");
        crate::write_key(&pw, WRITER_PASSWORD);
        format!(
            "[output.postgres]\nhost = \"{}\"\nport = {}\ndbname = \"mail\"\nuser = \"mxsync\"\npassword_file = \"{}\"\nretry_secs = 1\n",
            self.socket_dir.display(),
            self.port,
            pw.display()
        )
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let mut cmd = Command::new(self.bin.join("pg_ctl"));
        cmd.arg("-D")
            .arg(&self.data)
            .args(["-w", "-m", "immediate", "stop"]);
        if let Some((uid, gid)) = self.owner {
            cmd.uid(uid).gid(gid);
        }
        let _ = cmd.output();
    }
}
