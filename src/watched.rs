//! The files a watcher follows by their *directories*: shared by the config reload (the config
//! file) and the certificate watch (the `[[tls.certs]]` files), which must agree on it.
//!
//! A directory is watched rather than the file because a rename over a file (editors, certbot,
//! Kubernetes secrets) replaces its inode and would silently end a watch on the file itself.
//! Events for other names in those directories are ignored. A path that is a symlink (or a chain
//! of them) counts with its target too: the target's directory is watched for the target's name.
//! Callers build a new [`Watched`] after each event and [`Watched::follow`] it, so a link pointed
//! elsewhere moves the watch.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};

use notify::{EventKind, RecursiveMode, Watcher};

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

    /// Whether an event on `paths` concerns a name that counts.
    pub fn matches(&self, paths: &[PathBuf]) -> bool {
        paths.iter().any(|p| {
            p.file_name()
                .is_some_and(|n| self.names.iter().any(|m| m == n))
        })
    }

    /// Watches the directories of `next` not watched yet and drops those no longer needed, then
    /// becomes `next`. `log` is told each new directory and whether watching it worked, in the
    /// caller's own words.
    pub fn follow(
        &mut self,
        next: Watched,
        watcher: &mut impl Watcher,
        log: impl Fn(&Path, notify::Result<()>),
    ) {
        for dir in next.dirs.iter().filter(|d| !self.dirs.contains(d)) {
            log(dir, watcher.watch(dir, RecursiveMode::NonRecursive));
        }
        for dir in self.dirs.iter().filter(|d| !next.dirs.contains(d)) {
            let _ = watcher.unwatch(dir);
        }
        *self = next;
    }
}

/// Whether a notify event of `kind` may be a change. Reads (teal's own included) are not; a close
/// after writing is. A write itself is not acted on: an editor that saves in place truncates, then
/// writes, and acting in between would read half a file; the close that ends the write counts.
pub fn relevant(kind: &EventKind) -> bool {
    use notify::event::{AccessKind, AccessMode, ModifyKind};
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) | EventKind::Modify(ModifyKind::Data(_)) => false,
        _ => true,
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
        assert!(watched.matches(&[PathBuf::from("/elsewhere/link.pem")]));
        assert!(watched.matches(&[PathBuf::from("/elsewhere/target.pem")]));
        assert!(!watched.matches(&[PathBuf::from("/elsewhere/other.pem")]));
    }
}
