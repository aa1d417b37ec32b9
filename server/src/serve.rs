//! The accept loop for the API, plain or TLS. Unlike `axum::serve` it bounds what clients can
//! hold: at most `max_connections` at once (the rest wait in the kernel's backlog, so the server
//! keeps file descriptors for its database and maps), a time limit for TLS handshakes, and a time
//! limit for request headers that also closes connections idle between requests.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How long a client may take to complete a TLS handshake.
const HANDSHAKE_LIMIT: Duration = Duration::from_secs(10);

/// File descriptors kept back from connections for the database, the maps and hooks.
const RESERVED_FDS: u64 = 256;

/// Pending connections the kernel may queue for accept (capped by `net.core.somaxconn`). Large,
/// so that a burst of agents or monitoring probes is not met by dropped SYNs and 1 s retries.
const BACKLOG: u32 = 4096;

/// Binds the API's listening socket, with address reuse and a deep accept queue.
pub fn bind(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

/// What one connection may hold.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections served at once.
    pub max_connections: usize,
    /// Time to send a request's headers, and to stay idle between requests.
    pub header_timeout: Duration,
}

/// Raises this process's soft open-files limit to its hard limit, and returns `wanted` lowered
/// so that connections leave [`RESERVED_FDS`] descriptors free.
pub fn fit_connections(wanted: usize) -> usize {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    let hard = limit.maximum.unwrap_or(1 << 20).min(1 << 20);
    let soft = match limit.current {
        Some(soft) if soft < hard => {
            let raised = rustix::process::Rlimit {
                current: Some(hard),
                maximum: limit.maximum,
            };
            match setrlimit(Resource::Nofile, raised) {
                Ok(()) => hard,
                Err(e) => {
                    tracing::warn!(error = %e, soft, hard, "cannot raise the open-files limit");
                    soft
                }
            }
        }
        Some(soft) => soft,
        None => hard,
    };
    let room = usize::try_from(soft.saturating_sub(RESERVED_FDS).max(1)).unwrap_or(usize::MAX);
    if room < wanted {
        tracing::warn!(
            max_connections = wanted,
            open_files_limit = soft,
            serving = room,
            "max_connections lowered to fit the open-files limit (raise LimitNOFILE)"
        );
    }
    wanted.min(room)
}

/// Serves `app` on `listener` until `shutdown` is cancelled, then lets requests in flight finish
/// (idle connections close at once) for up to `drain`.
pub async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    app: axum::Router,
    limits: Limits,
    shutdown: CancellationToken,
    drain: Duration,
) -> anyhow::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let conns = TaskTracker::new();
    let mut accept_errors = 0u64;
    loop {
        let permit = tokio::select! {
            p = Arc::clone(&slots).acquire_owned() => p.context("connection slots closed")?,
            _ = shutdown.cancelled() => break,
        };
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // EMFILE and friends: say so once in a while, back off, and go on.
                    accept_errors += 1;
                    if accept_errors.is_power_of_two() {
                        tracing::warn!(error = %e, count = accept_errors, "accept failed");
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        let _ = stream.set_nodelay(true);
        // Each request knows the peer (the log of refused agent requests names it).
        let app = app.clone().layer(axum::Extension(crate::api::Peer(peer)));
        let (stop, tls) = (shutdown.clone(), tls.clone());
        conns.spawn(async move {
            let _slot = permit;
            match tls {
                None => connection(stream, app, limits, stop).await,
                Some(acceptor) => {
                    match tokio::time::timeout(HANDSHAKE_LIMIT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => connection(tls, app, limits, stop).await,
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "tls handshake failed"),
                        Err(_) => tracing::debug!(%peer, "tls handshake timed out"),
                    }
                }
            }
        });
    }
    drop(listener);
    conns.close();
    if tokio::time::timeout(drain, conns.wait()).await.is_err() {
        tracing::warn!(
            left = conns.len(),
            "connections still open after the drain time; closing them"
        );
    }
    Ok(())
}

/// Serves HTTP/1.1 on one connection.
async fn connection<I>(io: I, app: axum::Router, limits: Limits, stop: CancellationToken)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let conn = http.serve_connection(TokioIo::new(io), TowerToHyperService::new(app));
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::trace!(error = %e, "connection ended");
            }
        }
        _ = stop.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}
