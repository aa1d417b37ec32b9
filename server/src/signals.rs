//! Stopping on signals, for both binaries (the agent's `main` includes this file too): the first
//! SIGTERM or SIGINT cancels the token, and the binary stops within its bound; a second exits
//! at once.

use tokio_util::sync::CancellationToken;

/// Cancels `token` at the first SIGTERM or SIGINT; exits with 130 at the second, saying that
/// `skipped` (what the bounded stop was doing) is skipped.
pub(crate) async fn stop_on_signals(token: CancellationToken, skipped: &'static str) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
    token.cancel();
    tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
    tracing::warn!("second signal: exiting without {skipped}");
    std::process::exit(130);
}
