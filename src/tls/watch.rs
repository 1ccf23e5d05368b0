//! Hot reload of the `[[tls.certs]]` files: edits, renames over them (certbot, Kubernetes
//! secrets), SIGHUP and config reloads that change the list all end in the same refresh, which
//! swaps the new list into [`CertStore::set_files`](super::CertStore::set_files) at once.
//!
//! As in [`crate::reload`], the *directories* are watched (a rename over a file would end a watch
//! on the file itself), events for other names are ignored, and symlinks are followed to their
//! targets, resolved again after every refresh. A burst of events is debounced; a changed pair is
//! read again until it holds still. A pair that does not load (unreadable, not PEM, key of
//! another pair, expired) keeps the certificate loaded before for that entry; it is only refused,
//! with an error line naming the entry, file and reason, after [`GRACE`] without further events,
//! so a pair replaced one file at a time is not refused between its two writes. Each refused
//! content is logged once. Handshakes pick their certificate from the store, so open connections
//! keep the one they started with.

use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use super::{pair_from_pem, read_pair, Loaded, Source};
use crate::config::CertFiles;
use crate::state::State;
use crate::watched::{Change, DirWatcher, Watched};

/// Quiet time after the last event before reading the files.
const DEBOUNCE: Duration = Duration::from_millis(100);
/// The longest a refresh waits for quiet after the first event.
const MAX_DELAY: Duration = Duration::from_millis(300);
/// How long a pair that does not load may wait for its second file before it is refused.
pub const GRACE: Duration = Duration::from_secs(1);

/// What a pair's files held when read: both contents, or why they could not be read.
type Content = Result<(Vec<u8>, Vec<u8>), String>;

/// One `[[tls.certs]]` entry and what was made of it.
struct Entry {
    files: CertFiles,
    /// The certificate served for this entry (the last that loaded).
    loaded: Option<Arc<Loaded>>,
    /// What the files held when `loaded` was read from them.
    served: Option<Content>,
    /// What the files held when last refused (logged once).
    refused: Option<Content>,
}

/// A pair that did not load: the entry, the content (to log it once), the reason.
struct Failure {
    index: usize,
    content: Content,
    reason: String,
}

/// The entries of the configured list, in order.
struct Pairs {
    entries: Vec<Entry>,
    /// The list changed shape since the store was last set.
    dirty: bool,
    /// Certificates loaded or refused since the task last took them, for the dashboard's events.
    news: Vec<String>,
}

impl Pairs {
    /// The configured `files`, starting from the certificates the store serves now (loaded at
    /// startup from the same list).
    fn new(files: &[CertFiles], serving: &[Arc<Loaded>]) -> Pairs {
        let entries = files
            .iter()
            .enumerate()
            .map(|(i, f)| Entry {
                files: f.clone(),
                loaded: serving.get(i).cloned(),
                served: None,
                refused: None,
            })
            .collect();
        Pairs {
            entries,
            dirty: false,
            news: Vec::new(),
        }
    }

    /// Whether the entries are exactly `files`, in order.
    fn lists(&self, files: &[CertFiles]) -> bool {
        self.entries.len() == files.len()
            && self.entries.iter().zip(files).all(|(e, f)| e.files == *f)
    }

    /// Follows a reloaded config's list: an entry naming the same files keeps its state; a new
    /// one keeps the certificate of the entry it replaces at its index until it loads.
    fn follow(&mut self, files: &[CertFiles]) {
        if self.lists(files) {
            return;
        }
        let mut old: Vec<Option<Entry>> = self.entries.drain(..).map(Some).collect();
        let mut next = Vec::with_capacity(files.len());
        for f in files {
            let same = old
                .iter_mut()
                .find(|e| e.as_ref().is_some_and(|e| e.files == *f));
            next.push(same.and_then(Option::take));
        }
        self.entries = next
            .into_iter()
            .enumerate()
            .map(|(i, e)| {
                e.unwrap_or_else(|| {
                    // What is left in `old` is no longer configured.
                    let before = old.get(i).and_then(|o| o.as_ref());
                    Entry {
                        files: files[i].clone(),
                        loaded: before.and_then(|o| o.loaded.clone()),
                        served: None,
                        refused: None,
                    }
                })
            })
            .collect();
        info!(
            entries = files.len(),
            "tls.certs changed in the config; loading the new list"
        );
        self.dirty = true;
    }

    /// Reads every pair whose files changed and loads it: a pair that loads replaces its entry's
    /// certificate; one that does not is returned, unless that same content was refused before.
    /// Returns whether the served list changed, and the new failures.
    async fn refresh(&mut self) -> (bool, Vec<Failure>) {
        let mut changed = std::mem::take(&mut self.dirty);
        let mut failures = Vec::new();
        for (index, entry) in self.entries.iter_mut().enumerate() {
            let content = read(&entry.files);
            if entry.served.as_ref() == Some(&content) {
                continue;
            }
            let content = settled(&entry.files, content).await;
            if entry.served.as_ref() == Some(&content) || entry.refused.as_ref() == Some(&content) {
                continue;
            }
            match load(&entry.files, &content) {
                Ok(loaded) => {
                    let expires = humantime::format_rfc3339_seconds(loaded.not_after);
                    info!(entry = %format!("tls.certs[{index}]"), cert = %entry.files.cert.display(), names = ?loaded.names, %expires, "certificate loaded");
                    self.news.push(format!(
                        "certificate loaded for {} (tls.certs[{index}], expires {expires})",
                        loaded.names.join(", ")
                    ));
                    entry.loaded = Some(Arc::new(loaded));
                    entry.served = Some(content);
                    entry.refused = None;
                    changed = true;
                }
                Err(reason) => failures.push(Failure {
                    index,
                    content,
                    reason,
                }),
            }
        }
        (changed, failures)
    }

    /// Logs `failures` as refused and remembers their content, so they are logged once.
    fn refuse(&mut self, failures: Vec<Failure>) {
        for f in failures {
            let Some(entry) = self.entries.get_mut(f.index) else {
                continue;
            };
            let kept = if entry.loaded.is_some() {
                "the previous certificate stays in use"
            } else {
                "this entry serves no certificate"
            };
            error!(entry = %format!("tls.certs[{}]", f.index), "certificate refused, {kept}: tls.certs[{}]: {}", f.index, f.reason);
            self.news.push(format!(
                "certificate refused, {kept}: tls.certs[{}]: {}",
                f.index, f.reason
            ));
            entry.refused = Some(f.content);
        }
    }

    /// The certificates to serve, in list order.
    fn serving(&self) -> Vec<Arc<Loaded>> {
        self.entries
            .iter()
            .filter_map(|e| e.loaded.clone())
            .collect()
    }

    /// The directories to watch and the file names that count in them.
    fn watched(&self) -> Watched {
        let mut watched = Watched::default();
        for e in &self.entries {
            watched.add(&e.files.cert);
            watched.add(&e.files.key);
        }
        watched
    }
}

/// Both files of `files`, as they are now.
fn read(files: &CertFiles) -> Content {
    read_pair(&files.cert, &files.key)
}

/// `content` read again until two reads 25 ms apart agree (at most a quarter of a second): a
/// file being written is not taken half-written.
async fn settled(files: &CertFiles, mut content: Content) -> Content {
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(25)).await;
        let again = read(files);
        if again == content {
            break;
        }
        content = again;
    }
    content
}

/// The certificate `content` makes, or why not (naming the file).
fn load(files: &CertFiles, content: &Content) -> Result<Loaded, String> {
    let (cert_pem, key_pem) = content.as_ref().map_err(Clone::clone)?;
    let source = Source::File {
        cert: files.cert.clone(),
        key: files.key.clone(),
    };
    pair_from_pem((&files.cert, cert_pem), (&files.key, key_pem), source)
}

/// What woke the watcher.
enum Wake {
    Files,
    Config,
    Hangup,
    Grace,
}

/// Watches the `[[tls.certs]]` files of the live config (following reloads of it) and SIGHUP
/// until `stop`, keeping `state.tls().certs` current (see the module doc).
pub fn spawn(state: Arc<State>, stop: CancellationToken) -> anyhow::Result<()> {
    let (watcher, rx) = DirWatcher::spawn()?;
    let files = configured(&state).unwrap_or_default();
    let pairs = Pairs::new(&files, &state.tls().certs.files());
    let mut task = Task {
        pairs,
        watched: Watched::default(),
        watcher,
        rx,
        hangup: signal(SignalKind::hangup())?,
        changes: state.subscribe(),
        state,
        stop,
    };
    task.follow_dirs();
    tokio::spawn(task.run());
    Ok(())
}

/// The watching task's state.
struct Task {
    state: Arc<State>,
    pairs: Pairs,
    watched: Watched,
    watcher: DirWatcher,
    rx: mpsc::UnboundedReceiver<Change>,
    hangup: tokio::signal::unix::Signal,
    changes: tokio::sync::watch::Receiver<u64>,
    stop: CancellationToken,
}

impl Task {
    /// Refreshes at once (the files may have changed since startup read them), then on every
    /// wake until stopped; refuses what still fails when its grace runs out.
    async fn run(mut self) {
        let mut pending = self.refresh().await;
        loop {
            let grace_until = (!pending.is_empty()).then(|| Instant::now() + GRACE);
            let Some(wake) = self.next(grace_until).await else {
                return;
            };
            match wake {
                Wake::Grace => {
                    self.pairs.refuse(std::mem::take(&mut pending));
                    self.tell();
                }
                Wake::Files | Wake::Hangup => {
                    debounce(&mut self.rx).await;
                    pending = self.refresh().await;
                }
                Wake::Config => pending = self.refresh().await,
            }
        }
    }

    /// Follows the configured list, loads what changed, serves the result and returns the new
    /// failures.
    async fn refresh(&mut self) -> Vec<Failure> {
        if let Some(files) = configured(&self.state) {
            self.pairs.follow(&files);
        }
        let (changed, failures) = self.pairs.refresh().await;
        if changed {
            self.state.tls().certs.set_files(self.pairs.serving());
        }
        self.follow_dirs();
        self.tell();
        failures
    }

    /// Records the certificates loaded or refused since the last call among the state's events.
    fn tell(&mut self) {
        for text in self.pairs.news.drain(..) {
            self.state.events().record(crate::events::Kind::Cert, text);
        }
    }

    /// Watches the directories of the listed pairs' files now.
    fn follow_dirs(&mut self) {
        let next = self.pairs.watched();
        self.watched.follow(next, &mut self.watcher, |dir, watching| match watching {
            Ok(()) => debug!(dir = %dir.display(), "watching for certificate changes"),
            Err(e) => {
                warn!(dir = %dir.display(), error = %e, "cannot watch a certificate directory; changes there need SIGHUP")
            }
        });
    }

    /// The next reason to act: an event on a watched name, SIGHUP, a config whose list differs,
    /// or the end of the grace; `None` once stopped.
    async fn next(&mut self, grace_until: Option<Instant>) -> Option<Wake> {
        loop {
            let grace = async {
                match grace_until {
                    Some(t) => tokio::time::sleep_until(t).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = self.stop.cancelled() => return None,
                () = grace => return Some(Wake::Grace),
                Some(()) = self.hangup.recv() => return Some(Wake::Hangup),
                changed = self.changes.changed() => {
                    changed.ok()?;
                    // Every switch makes a snapshot; only a changed list matters here.
                    if configured(&self.state).is_some_and(|f| !self.pairs.lists(&f)) {
                        return Some(Wake::Config);
                    }
                }
                Some(change) = self.rx.recv() => {
                    if self.watched.matches(&change) {
                        return Some(Wake::Files);
                    }
                }
            }
        }
    }
}

/// The `[[tls.certs]]` list of the live config; `None` without `[tls]` (the listener stays until
/// a restart, so its certificates do too).
fn configured(state: &State) -> Option<Vec<CertFiles>> {
    state.load().config.tls.as_ref().map(|t| t.certs.clone())
}

/// Waits for a quiet moment after an event: [`DEBOUNCE`] without events, at most [`MAX_DELAY`].
async fn debounce(rx: &mut mpsc::UnboundedReceiver<Change>) {
    let deadline = Instant::now() + MAX_DELAY;
    loop {
        let wake = deadline.min(Instant::now() + DEBOUNCE);
        tokio::select! {
            Some(_) = rx.recv() => {}
            () = tokio::time::sleep_until(wake) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn files(stem: &str) -> CertFiles {
        CertFiles {
            cert: PathBuf::from(format!("/c/{stem}.pem")),
            key: PathBuf::from(format!("/c/{stem}.key")),
        }
    }

    /// A reloaded list keeps entries by their files, and a new entry at an index starts from the
    /// certificate it replaces (kept until the new pair loads).
    #[test]
    fn follow_keeps_entries_by_files() {
        let mut pairs = Pairs::new(&[files("a"), files("b")], &[]);
        pairs.entries[0].served = Some(Err("a".into()));
        pairs.entries[1].served = Some(Err("b".into()));
        pairs.follow(&[files("b"), files("c")]);
        assert!(pairs.dirty);
        assert_eq!(pairs.entries[0].files, files("b"));
        assert_eq!(pairs.entries[0].served, Some(Err("b".into())));
        assert_eq!(pairs.entries[1].files, files("c"));
        assert_eq!(pairs.entries[1].served, None);
        pairs.dirty = false;
        pairs.follow(&[files("b"), files("c")]);
        assert!(!pairs.dirty, "the same list is no change");
    }
}
