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
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use inotify::{EventMask, Inotify, WatchDescriptor, WatchMask, Watches};
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::sync::lock;

/// What a [`DirWatcher`] reports: the name in a watched directory that may have changed, or
/// `None` when anything in them may have: the kernel dropped events (its queue overflowed), or a
/// directory that went away is watched again.
pub type Change = Option<OsString>;

/// How often a watched directory that went away (removed, or moved elsewhere) is looked for at
/// its path again.
const REWATCH: Duration = Duration::from_secs(1);

/// The events that may be a change of a file in a watched directory (see the module doc), and
/// the directory's own end (removed or moved elsewhere; the kernel adds `IN_IGNORED` when a
/// watch ends).
fn changes() -> WatchMask {
    WatchMask::CLOSE_WRITE
        | WatchMask::CREATE
        | WatchMask::DELETE
        | WatchMask::MOVED_FROM
        | WatchMask::MOVED_TO
        | WatchMask::ATTRIB
        | WatchMask::DELETE_SELF
        | WatchMask::MOVE_SELF
        | WatchMask::ONLYDIR
}

/// The watched directories by path, each with its watch; `None` while the directory is gone and
/// looked for again.
type Dirs = Mutex<Vec<(PathBuf, Option<WatchDescriptor>)>>;

/// Watches directories (not recursively) for [`changes`], reported on the receiver
/// [`DirWatcher::spawn`] returns, by a task on the caller's runtime that ends with the receiver.
/// A directory that goes away (a deploy that replaces the whole directory, a `mv` aside) is
/// looked for at its path every [`REWATCH`] until it is back, and then reported as `None`: its
/// files may have changed meanwhile.
pub struct DirWatcher(Shared);

/// What the watcher, its reading task and its searches for gone directories share.
#[derive(Clone)]
struct Shared {
    watches: Watches,
    dirs: Arc<Dirs>,
    tx: mpsc::UnboundedSender<Change>,
}

impl DirWatcher {
    /// A watcher with no directories yet, and the receiver of its changes.
    pub fn spawn() -> io::Result<(DirWatcher, mpsc::UnboundedReceiver<Change>)> {
        let inotify = Inotify::init()?;
        let watches = inotify.watches();
        let events = inotify.into_event_stream([0u8; 4096])?;
        let (tx, rx) = mpsc::unbounded_channel();
        let shared = Shared {
            watches,
            dirs: Arc::default(),
            tx,
        };
        tokio::spawn(read(events, shared.clone()));
        Ok((DirWatcher(shared), rx))
    }

    /// Starts watching `dir`. When it cannot be watched now (it is not there yet), the error is
    /// returned and `dir` is looked for like a directory that went away (see [`rewatch`]).
    pub fn watch(&mut self, dir: &Path) -> io::Result<()> {
        let added = self.0.watches.add(dir, changes());
        let mut dirs = lock(&self.0.dirs);
        dirs.retain(|(d, _)| d != dir);
        dirs.push((dir.to_path_buf(), added.as_ref().ok().cloned()));
        drop(dirs);
        if added.is_err() {
            tokio::spawn(rewatch(dir.to_path_buf(), self.0.clone()));
        }
        added.map(drop)
    }

    /// The directories looked for because they cannot be watched now.
    #[cfg(test)]
    fn looked_for(&self) -> Vec<PathBuf> {
        let dirs = lock(&self.0.dirs);
        dirs.iter()
            .filter(|(_, w)| w.is_none())
            .map(|(d, _)| d.clone())
            .collect()
    }

    /// Stops watching `dir`, if it was. The kernel's watch stays while another path watched
    /// reaches the same directory (inotify gives both the one watch).
    pub fn unwatch(&mut self, dir: &Path) {
        let mut dirs = lock(&self.0.dirs);
        if let Some(i) = dirs.iter().position(|(d, _)| d == dir) {
            if let (_, Some(wd)) = dirs.swap_remove(i) {
                if !dirs.iter().any(|(_, w)| w.as_ref() == Some(&wd)) {
                    // Fails only when the directory is gone, which ended the watch already.
                    let _ = self.0.watches.remove(wd);
                }
            }
        }
    }
}

/// Reports the events of `events` until the receiver is gone; a directory that went away is
/// handed to [`rewatch`].
async fn read(mut events: inotify::EventStream<[u8; 4096]>, mut shared: Shared) {
    while let Some(event) = events.next().await {
        let event = match event {
            Ok(e) => e,
            Err(e) => {
                warn!(error = %e, "cannot read file events; edits are no longer seen");
                return;
            }
        };
        let change = if event.mask.contains(EventMask::Q_OVERFLOW) {
            // The lost events may have been a directory's end: every watch is checked.
            for dir in refresh(&shared.dirs, &mut shared.watches) {
                gone(dir, &shared);
            }
            None
        } else if let Some(name) = event.name {
            Some(name)
        } else {
            // The directory itself: moved elsewhere (its watch would follow it there), or its
            // watch ended (removed, unmounted). Either way it is looked for at its path again.
            if event
                .mask
                .intersects(EventMask::MOVE_SELF | EventMask::IGNORED)
            {
                let lost = lost(&shared.dirs, &event.wd);
                if !lost.is_empty() && event.mask.contains(EventMask::MOVE_SELF) {
                    let _ = shared.watches.remove(event.wd);
                }
                for dir in lost {
                    gone(dir, &shared);
                }
            }
            continue;
        };
        if shared.tx.send(change).is_err() {
            return;
        }
    }
}

/// The paths watched with `wd`, now marked as gone; none when `wd` is not a live watch (one
/// teal ended itself, or one already marked).
fn lost(dirs: &Dirs, wd: &WatchDescriptor) -> Vec<PathBuf> {
    let mut dirs = lock(dirs);
    let mut lost = Vec::new();
    for (dir, watch) in dirs.iter_mut().filter(|(_, w)| w.as_ref() == Some(wd)) {
        *watch = None;
        lost.push(dir.clone());
    }
    lost
}

/// After lost events: each live watch is added again by its path, which gives the same watch
/// for the same directory. A different one (the path now names another directory) replaces
/// it; a path that no longer names a directory is marked gone and returned.
fn refresh(dirs: &Dirs, watches: &mut Watches) -> Vec<PathBuf> {
    let mut dirs = lock(dirs);
    let mut lost = Vec::new();
    let mut replaced = Vec::new();
    for (dir, watch) in dirs.iter_mut() {
        let Some(old) = watch.clone() else { continue };
        match watches.add(&*dir, changes()) {
            Ok(wd) if wd == old => {}
            Ok(wd) => {
                replaced.push(old);
                *watch = Some(wd);
            }
            Err(_) => {
                replaced.push(old);
                *watch = None;
                lost.push(dir.clone());
            }
        }
    }
    // A replaced watch ends only when no other path still has it.
    for old in replaced {
        if !dirs.iter().any(|(_, w)| w.as_ref() == Some(&old)) {
            let _ = watches.remove(old);
        }
    }
    lost
}

/// Logs that `dir` went away and looks for it again (see [`rewatch`]).
fn gone(dir: PathBuf, shared: &Shared) {
    warn!(dir = %dir.display(), "a watched directory went away; looking for it every second");
    tokio::spawn(rewatch(dir, shared.clone()));
}

/// Watches `dir` again as soon as it exists, then reports `None` (its files may have changed
/// while it was not watched). Ends without that when `dir` is no longer wanted or nobody reads.
async fn rewatch(dir: PathBuf, mut shared: Shared) {
    let mut told = false;
    loop {
        {
            let mut dirs = lock(&shared.dirs);
            let Some((_, watch)) = dirs.iter_mut().find(|(d, w)| *d == dir && w.is_none()) else {
                return;
            };
            match shared.watches.add(&dir, changes()) {
                Ok(wd) => {
                    *watch = Some(wd);
                    break;
                }
                Err(e) if e.kind() != io::ErrorKind::NotFound && !told => {
                    told = true;
                    warn!(dir = %dir.display(), error = %e, "cannot watch the directory again yet");
                }
                Err(_) => {}
            }
        }
        if shared.tx.is_closed() {
            return;
        }
        tokio::time::sleep(REWATCH).await;
    }
    info!(dir = %dir.display(), "watching the directory again");
    let _ = shared.tx.send(None);
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

    /// Adds `path`'s directory and name and its target's (a symlink is followed): where it
    /// does not resolve (a dangling link, a directory that is gone), the directory and name the
    /// links lead to as far as they can be read, so that directory is looked for.
    pub fn add(&mut self, path: &Path) {
        self.push(parent(path), path.file_name());
        let real = std::fs::canonicalize(path).unwrap_or_else(|_| links(path));
        self.push(parent(&real), real.file_name());
    }

    /// Adds `dir` (canonical where it resolves, else absolute) and `name`, each once.
    fn push(&mut self, dir: PathBuf, name: Option<&OsStr>) {
        let dir = std::fs::canonicalize(&dir)
            .or_else(|_| std::path::absolute(&dir))
            .unwrap_or(dir);
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
    /// becomes `next`. A directory that cannot be watched now is looked for until it can (see
    /// [`DirWatcher::watch`]); one no longer on the paths goes (a Kubernetes `..data` swap
    /// deletes the old directory). `log` is told each new directory and whether watching it
    /// worked, in the caller's own words.
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

/// `path`'s directory (`.` for a bare name).
fn parent(path: &Path) -> PathBuf {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Where the symlinks from `path` lead, read link by link (at most 40, the kernel's limit) until
/// a path that is not a readable link: for a path that does not resolve.
fn links(path: &Path) -> PathBuf {
    let mut at = path.to_path_buf();
    for _ in 0..40 {
        match std::fs::read_link(&at) {
            Ok(to) => at = parent(&at).join(to),
            Err(_) => break,
        }
    }
    at
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Kubernetes-style `..data` swap: the old timestamped directory is deleted once the link
    /// points at the new one; it is dropped, not looked for. When the live target's directory is
    /// gone, the path the links lead to is looked for.
    #[tokio::test]
    async fn a_swapped_out_directory_goes_and_a_missing_target_is_looked_for() {
        let tmp = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(tmp.path()).unwrap();
        let (ts0, ts1) = (root.join("..ts0"), root.join("..ts1"));
        std::fs::create_dir(&ts0).unwrap();
        std::fs::write(ts0.join("teal.toml"), "x").unwrap();
        std::os::unix::fs::symlink("..ts0", root.join("..data")).unwrap();
        std::os::unix::fs::symlink("..data/teal.toml", root.join("teal.toml")).unwrap();
        let config = root.join("teal.toml");
        let (mut watcher, _rx) = DirWatcher::spawn().unwrap();
        let mut watched = Watched::default();
        watched.follow(Watched::of(&config), &mut watcher, |_, r| r.unwrap());
        assert_eq!(watched.dirs(), &[root.clone(), ts0.clone()]);

        std::fs::create_dir(&ts1).unwrap();
        std::fs::write(ts1.join("teal.toml"), "y").unwrap();
        std::os::unix::fs::symlink("..ts1", root.join("..data_tmp")).unwrap();
        std::fs::rename(root.join("..data_tmp"), root.join("..data")).unwrap();
        std::fs::remove_dir_all(&ts0).unwrap();
        watched.follow(Watched::of(&config), &mut watcher, |_, r| r.unwrap());
        assert_eq!(
            watched.dirs(),
            &[root.clone(), ts1.clone()],
            "..ts0 is gone for good"
        );

        // The live target's directory gone: the path the links lead to is looked for.
        std::fs::remove_dir_all(&ts1).unwrap();
        watched.follow(Watched::of(&config), &mut watcher, |_, _| {});
        assert_eq!(watched.dirs(), &[root.clone(), root.join("..data")]);
        assert_eq!(watcher.looked_for(), vec![root.join("..data")]);
    }

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
