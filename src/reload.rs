//! Hot reload: config file edits and SIGHUP, fed into [`State::reload`].
//!
//! The watch is on the config file's *directory*, not the file: editors save by writing a temporary
//! file and renaming it over the original, which replaces the inode and would silently end a watch
//! on the file itself. Events for other names in the directory (including teal's own temporary
//! files) are ignored. A config that is a symlink (or a chain of them) is followed: the target's
//! directory is watched too, for the target's name, and the link is resolved again after every
//! event, so pointing it elsewhere moves the watch. A burst of events (write, chmod, rename) is
//! debounced into one reload; a reload of unchanged text is a no-op, so teal's own persisted
//! switch does not count as an edit.
//!
//! The kernel reports only the events that may be a change (see [`crate::watched`]).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::state::State;
use crate::watched::{DirWatcher, Watched};

/// Quiet time after the last event before reloading.
const DEBOUNCE: Duration = Duration::from_millis(100);
/// The longest a reload waits for quiet after the first event.
const MAX_DELAY: Duration = Duration::from_millis(300);

/// What asked for a reload.
#[derive(Debug, Clone, Copy)]
enum Cause {
    File,
    Hangup,
}

/// Watches `path` (and a symlink's target) and SIGHUP until `stop` is cancelled, reloading
/// `state` on each change.
pub fn spawn(state: Arc<State>, path: &Path, stop: CancellationToken) -> anyhow::Result<()> {
    let (mut watcher, mut rx) = DirWatcher::spawn()?;
    let mut files = Watched::of(path);
    for dir in files.dirs() {
        watcher.watch(dir)?;
        info!(dir = %dir.display(), "watching the config directory for edits");
    }
    let path = path.to_path_buf();
    let mut hangup = signal(SignalKind::hangup())?;
    tokio::spawn(async move {
        loop {
            let mut cause = tokio::select! {
                () = stop.cancelled() => return,
                Some(()) = hangup.recv() => Cause::Hangup,
                Some(change) = rx.recv() => {
                    if !files.matches(&change) {
                        continue;
                    }
                    Cause::File
                }
            };
            // Debounce: wait for a quiet moment, folding a SIGHUP in the burst into the reload,
            // but never longer than MAX_DELAY: a steady stream of events (a switch storm persists
            // a switch every few ms) must not postpone an operator's edit forever.
            let deadline = tokio::time::Instant::now() + MAX_DELAY;
            loop {
                let wake = deadline.min(tokio::time::Instant::now() + DEBOUNCE);
                tokio::select! {
                    Some(_) = rx.recv() => {}
                    Some(()) = hangup.recv() => cause = Cause::Hangup,
                    () = tokio::time::sleep_until(wake) => break,
                }
            }
            // The link may point elsewhere now.
            files.follow(Watched::of(&path), &mut watcher, |dir, watching| match watching {
                Ok(()) => info!(dir = %dir.display(), "watching the config's target directory"),
                Err(e) => {
                    warn!(dir = %dir.display(), error = %e, "cannot watch the config's target directory")
                }
            });
            debug!(?cause, "reloading");
            let (label, force) = match cause {
                Cause::File => ("file changed", false),
                Cause::Hangup => ("SIGHUP", true),
            };
            // Errors are logged by `reload` itself, in the words `teal check` uses.
            if let Ok(outcome) = state.reload(label, force).await {
                debug!(?outcome, "reload done");
            }
        }
    });
    Ok(())
}

/// Logs that a config without a file has nothing to watch.
pub fn no_file() {
    warn!("no config file: edits and SIGHUP cannot reload, switches are not persisted");
}
