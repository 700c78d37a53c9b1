//! Waiting for the signals that stop a foreground command.

use tokio::signal::unix::{signal, SignalKind};

/// Returns when SIGINT or SIGTERM arrives.
pub async fn wait_for_stop() -> std::io::Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r,
        _ = term.recv() => Ok(()),
    }
}
