//! Signals: SIGTERM and SIGINT start a graceful shutdown; SIGHUP asks for a config reload.

use tokio::signal::unix::{signal as listen, SignalKind};

/// Resolves on the first SIGTERM or SIGINT (Ctrl-C), which both mean "drain and exit 0".
pub async fn signal() {
    let mut term = listen(SignalKind::terminate()).expect("SIGTERM handler installs");
    let mut int = listen(SignalKind::interrupt()).expect("SIGINT handler installs");
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received; shutting down"),
        _ = int.recv() => tracing::info!("SIGINT received; shutting down"),
    }
}
