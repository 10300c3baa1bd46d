//! The shutdown signal both binaries stop on.

/// Resolves on the first SIGTERM or SIGINT. If the handlers cannot be installed (no signal
/// support), it falls back to Ctrl-C.
pub async fn shutdown() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
