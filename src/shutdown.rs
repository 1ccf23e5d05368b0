//! Signals: SIGTERM and SIGINT start a graceful shutdown; SIGHUP asks for a config reload.

use tokio::signal::unix::{signal as listen, Signal, SignalKind};

/// The signals teal answers, taken over from the kernel's default (which ends the process) from
/// the moment this is made: made first, before anything binds, so a SIGTERM while teal is still
/// starting (a cluster store awaited for up to 5 s, say) drains once it has started instead of
/// killing it, and an early SIGHUP does no harm.
pub struct Signals {
    term: Signal,
    int: Signal,
    /// Registered only so an early SIGHUP does not end the process: the reload watcher listens
    /// for it once it runs.
    _hangup: Signal,
}

impl Signals {
    /// Takes over SIGTERM, SIGINT and SIGHUP; needs a Tokio runtime.
    pub fn install() -> std::io::Result<Signals> {
        Ok(Signals {
            term: listen(SignalKind::terminate())?,
            int: listen(SignalKind::interrupt())?,
            _hangup: listen(SignalKind::hangup())?,
        })
    }

    /// Resolves on the first SIGTERM or SIGINT (Ctrl-C) since [`Signals::install`], which both
    /// mean "drain and exit 0".
    pub async fn shutdown(&mut self) {
        tokio::select! {
            _ = self.term.recv() => tracing::info!("SIGTERM received; shutting down"),
            _ = self.int.recv() => tracing::info!("SIGINT received; shutting down"),
        }
    }
}
