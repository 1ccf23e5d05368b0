//! The files a watcher follows by their *directories*: shared by the config reload (the config
//! file) and the certificate watch (the `[[tls.certs]]` files), which must agree on it.
//!
//! A directory is watched rather than the file because a rename over a file (editors, certbot,
//! Kubernetes secrets) replaces its inode and would silently end a watch on the file itself.
//! Events for other names in those directories are ignored. A path that is a symlink (or a chain
//! of them) counts with its target too: the target's directory is watched for the target's name.
//! Callers build a new [`Watched`] after each event and [`Watched::follow`] it, so a link pointed
//! elsewhere moves the watch.
//!
//! [`DirWatcher`] asks the kernel (inotify) only for the events that may be a change: a close
//! after writing, a create, a delete, a rename, a change of mode or owner. Not for every write
//! or open: an editor that saves in place truncates, then writes, and acting in between would
//! read half a file, so the close that ends the write is what counts; and a file written often
//! beside the config (an access log, a benchmark's log) must not wake teal at each write (with
//! every write delivered, h2load's per-request log beside the config cost teal's watcher 8% of a
//! core).

use std::ffi::{OsStr, OsString};
use std::io;
use std::path::{Path, PathBuf};

use futures_util::StreamExt;
use inotify::{EventMask, Inotify, WatchDescriptor, WatchMask, Watches};
use tokio::sync::mpsc;

/// What a [`DirWatcher`] reports: the name in a watched directory that may have changed, or
/// `None` when the kernel dropped events (its queue overflowed) and anything may have.
pub type Change = Option<OsString>;

/// The events that may be a change of a file in a watched directory (see the module doc).
fn changes() -> WatchMask {
    WatchMask::CLOSE_WRITE
        | WatchMask::CREATE
        | WatchMask::DELETE
        | WatchMask::MOVED_FROM
        | WatchMask::MOVED_TO
        | WatchMask::ATTRIB
        | WatchMask::ONLYDIR
}

/// Watches directories (not recursively) for [`changes`], reported on the receiver
/// [`DirWatcher::spawn`] returns, by a task on the caller's runtime that ends with the receiver.
pub struct DirWatcher {
    watches: Watches,
    dirs: Vec<(PathBuf, WatchDescriptor)>,
}

impl DirWatcher {
    /// A watcher with no directories yet, and the receiver of its changes.
    pub fn spawn() -> io::Result<(DirWatcher, mpsc::UnboundedReceiver<Change>)> {
        let inotify = Inotify::init()?;
        let watches = inotify.watches();
        let mut events = inotify.into_event_stream([0u8; 4096])?;
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Some(event) = events.next().await {
                let change = match event {
                    Ok(e) if e.mask.contains(EventMask::Q_OVERFLOW) => None,
                    Ok(e) => match e.name {
                        Some(name) => Some(name),
                        // The end of a removed watch, or of a directory itself: no file's change.
                        None => continue,
                    },
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot read file events; edits are no longer seen");
                        return;
                    }
                };
                if tx.send(change).is_err() {
                    return;
                }
            }
        });
        Ok((
            DirWatcher {
                watches,
                dirs: Vec::new(),
            },
            rx,
        ))
    }

    /// Starts watching `dir`.
    pub fn watch(&mut self, dir: &Path) -> io::Result<()> {
        let wd = self.watches.add(dir, changes())?;
        self.dirs.retain(|(d, _)| d != dir);
        self.dirs.push((dir.to_path_buf(), wd));
        Ok(())
    }

    /// Stops watching `dir`, if it was.
    pub fn unwatch(&mut self, dir: &Path) {
        if let Some(i) = self.dirs.iter().position(|(d, _)| d == dir) {
            let (_, wd) = self.dirs.swap_remove(i);
            // Fails only when the directory is gone, which ended the watch already.
            let _ = self.watches.remove(wd);
        }
    }
}

/// Watched directories and the file names in them that count (the configured names and, for
/// symlinks, their targets' names). Directories are canonical, so a path's directory and its
/// target's compare equal.
#[derive(Default, PartialEq, Debug)]
pub struct Watched {
    dirs: Vec<PathBuf>,
    names: Vec<OsString>,
}

impl Watched {
    /// The directories and names for `path` alone.
    pub fn of(path: &Path) -> Watched {
        let mut watched = Watched::default();
        watched.add(path);
        watched
    }

    /// Adds `path`'s directory and name and, when it resolves (a symlink is followed), its
    /// target's.
    pub fn add(&mut self, path: &Path) {
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        self.push(dir, path.file_name());
        if let Ok(real) = std::fs::canonicalize(path) {
            if let Some(dir) = real.parent() {
                self.push(dir.to_path_buf(), real.file_name());
            }
        }
    }

    /// Adds `dir` (canonical where it resolves) and `name`, each once.
    fn push(&mut self, dir: PathBuf, name: Option<&OsStr>) {
        let dir = std::fs::canonicalize(&dir).unwrap_or(dir);
        if !self.dirs.contains(&dir) {
            self.dirs.push(dir);
        }
        if let Some(name) = name {
            if !self.names.iter().any(|n| n == name) {
                self.names.push(name.to_os_string());
            }
        }
    }

    /// The watched directories.
    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    /// Whether `change` concerns a name that counts (a lost event may concern any).
    pub fn matches(&self, change: &Change) -> bool {
        match change {
            Some(name) => self.names.iter().any(|n| n == name),
            None => true,
        }
    }

    /// Watches the directories of `next` not watched yet and drops those no longer needed, then
    /// becomes `next`. `log` is told each new directory and whether watching it worked, in the
    /// caller's own words.
    pub fn follow(
        &mut self,
        next: Watched,
        watcher: &mut DirWatcher,
        log: impl Fn(&Path, io::Result<()>),
    ) {
        for dir in next.dirs.iter().filter(|d| !self.dirs.contains(d)) {
            log(dir, watcher.watch(dir));
        }
        for dir in self.dirs.iter().filter(|d| !next.dirs.contains(d)) {
            watcher.unwatch(dir);
        }
        *self = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A symlink counts with its target: both names, both (canonical) directories, each once.
    #[test]
    fn symlink_adds_its_target() {
        let tmp = tempfile::tempdir().unwrap();
        let real_dir = tmp.path().join("real");
        std::fs::create_dir(&real_dir).unwrap();
        std::fs::write(real_dir.join("target.pem"), "x").unwrap();
        let link = tmp.path().join("link.pem");
        std::os::unix::fs::symlink(real_dir.join("target.pem"), &link).unwrap();

        let mut watched = Watched::of(&link);
        watched.add(&link);
        let root = std::fs::canonicalize(tmp.path()).unwrap();
        assert_eq!(watched.dirs(), &[root.clone(), root.join("real")]);
        assert!(watched.matches(&Some("link.pem".into())));
        assert!(watched.matches(&Some("target.pem".into())));
        assert!(!watched.matches(&Some("other.pem".into())));
        assert!(watched.matches(&None), "a lost event may be any file's");
    }
}
