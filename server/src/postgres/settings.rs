//! `[output.postgres]`: where the database is, as a libpq user writes it, and the client
//! configuration made from it (password from a private file, TLS through our rustls).

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// `[output.postgres]`: every apply also writes the agent's rows into the tables of schema
/// `mxsync` in this database, for Postfix `pgsql:` maps and Exim `pgsql` lookups (README, "Many
/// secondaries"). The local maps are written as before and never wait for the database.
#[derive(Debug, Clone, Default, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// A libpq connection string (`host=/run/postgresql dbname=mail user=mxsync`) or URI
    /// (`postgresql://mxsync@db.example.org/mail`). The keys below, when set, override its
    /// parts. A password in it is refused: use `password_file`.
    #[serde(default)]
    pub url: Option<String>,
    /// Host name or address, or the directory of the server's Unix socket
    /// (`/run/postgresql`).
    #[serde(default)]
    pub host: Option<String>,
    /// Port (5432 by default).
    #[serde(default)]
    pub port: Option<u16>,
    /// Database name.
    #[serde(default)]
    pub dbname: Option<String>,
    /// Role to connect as; it needs to create the schema `mxsync` (or own it) and write its
    /// tables.
    #[serde(default)]
    pub user: Option<String>,
    /// File holding the password: private to its owner and one line, as key files are.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// `disable` (no TLS: a Unix socket, or a trusted network) or `verify-full` (TLS, the
    /// server's certificate checked against `sslrootcert` and its name against the host).
    /// By default `disable` for a socket directory and `verify-full` for a network host.
    /// libpq's `prefer` and `require`, which accept any certificate, are not offered.
    #[serde(default)]
    pub sslmode: Option<String>,
    /// CA certificates (PEM) that sign the database server's certificate (`verify-full`).
    #[serde(default)]
    pub sslrootcert: Option<PathBuf>,
    /// Seconds to wait for a connection.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_secs: u64,
    /// Seconds between attempts while the database cannot be written; an apply tries at once.
    #[serde(default = "default_retry")]
    pub retry_secs: u64,
}

fn default_connect_timeout() -> u64 {
    5
}

fn default_retry() -> u64 {
    30
}

/// A validated `[output.postgres]`: the client configuration, and TLS when it is used.
#[derive(Clone)]
pub struct Target {
    /// What tokio-postgres connects with (password included).
    pub config: tokio_postgres::Config,
    /// The TLS connector (`verify-full`), or none (`disable`).
    pub tls: Option<tokio_postgres_rustls::MakeRustlsConnect>,
    /// Between attempts while the database cannot be written.
    pub retry: Duration,
    /// Where it is, without secrets, for logs and `check-config`.
    pub describe: String,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Target({})", self.describe)
    }
}

impl Settings {
    /// Makes paths absolute against `base` (the configuration file's directory).
    pub fn resolve(&mut self, base: &std::path::Path) {
        for p in [&mut self.password_file, &mut self.sslrootcert]
            .into_iter()
            .flatten()
        {
            *p = base.join(&*p);
        }
    }

    /// The client configuration, reading the password and CA files; every problem, each
    /// naming its key.
    pub fn target(&self) -> Result<Target, Vec<String>> {
        use tokio_postgres::config::Host;
        let mut p = Vec::new();
        let mut config = match self.url.as_deref() {
            Some(url) => url.parse::<tokio_postgres::Config>().unwrap_or_else(|e| {
                p.push(format!("output.postgres.url: {e}"));
                tokio_postgres::Config::new()
            }),
            None => tokio_postgres::Config::new(),
        };
        if config.get_password().is_some() {
            p.push("output.postgres.url: holds a password; put it in password_file".into());
        }
        if let Some(h) = &self.host {
            config.host(h);
        }
        if let Some(port) = self.port {
            config.port(port);
        }
        if let Some(d) = &self.dbname {
            config.dbname(d);
        }
        if let Some(u) = &self.user {
            config.user(u);
        }
        if config.get_hosts().is_empty() {
            p.push("output.postgres: name the database's host (host, or in url)".into());
        }
        if config.get_user().is_none() {
            p.push("output.postgres: name the role to connect as (user, or in url)".into());
        }
        if let Some(f) = &self.password_file {
            match crate::config::read_secret(f) {
                Ok(pw) => {
                    config.password(pw);
                }
                Err(e) => p.push(format!("output.postgres.password_file {e}")),
            }
        }
        if self.connect_timeout_secs == 0 || self.retry_secs == 0 {
            p.push("output.postgres: connect_timeout_secs and retry_secs are at least 1".into());
        }
        config.connect_timeout(Duration::from_secs(self.connect_timeout_secs.max(1)));
        config.application_name("mxsync-server");
        let socket = (config.get_hosts().iter()).all(|h| matches!(h, Host::Unix(_)));
        let mode =
            self.sslmode
                .as_deref()
                .unwrap_or(if socket { "disable" } else { "verify-full" });
        let tls = match mode {
            "disable" => {
                config.ssl_mode(tokio_postgres::config::SslMode::Disable);
                None
            }
            "verify-full" => {
                config.ssl_mode(tokio_postgres::config::SslMode::Require);
                match &self.sslrootcert {
                    None => {
                        p.push("output.postgres.sslrootcert: verify-full needs the CA file".into());
                        None
                    }
                    Some(ca) => match client_config(ca) {
                        Ok(c) => Some(tokio_postgres_rustls::MakeRustlsConnect::new(c)),
                        Err(e) => {
                            p.push(format!("output.postgres.sslrootcert {}: {e}", ca.display()));
                            None
                        }
                    },
                }
            }
            other => {
                p.push(format!(
                    "output.postgres.sslmode {other:?}: use \"disable\" or \"verify-full\""
                ));
                None
            }
        };
        let describe = describe(&config, mode);
        if p.is_empty() {
            Ok(Target {
                config,
                tls,
                retry: Duration::from_secs(self.retry_secs),
                describe,
            })
        } else {
            Err(p)
        }
    }
}

/// `user@host:port/dbname (sslmode)`, without the password.
fn describe(c: &tokio_postgres::Config, mode: &str) -> String {
    use tokio_postgres::config::Host;
    let host = match c.get_hosts().first() {
        Some(Host::Tcp(h)) => h.clone(),
        Some(Host::Unix(p)) => p.display().to_string(),
        None => "?".into(),
    };
    let port = c.get_ports().first().copied().unwrap_or(5432);
    format!(
        "{}@{host}:{port}/{} ({mode})",
        c.get_user().unwrap_or("?"),
        c.get_dbname()
            .unwrap_or_else(|| c.get_user().unwrap_or("?"))
    )
}

/// A rustls client that trusts the certificates of `ca` only.
fn client_config(ca: &std::path::Path) -> Result<rustls::ClientConfig, String> {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    let certs = rustls_pki_types::CertificateDer::pem_file_iter(ca).map_err(|e| e.to_string())?;
    for cert in certs {
        roots
            .add(cert.map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    }
    if roots.is_empty() {
        return Err("no certificate in it".into());
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth())
}
