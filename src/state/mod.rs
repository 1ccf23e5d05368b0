//! Live state: one [`Snapshot`] behind one `ArcSwap`, and the one writer path that replaces it.
//!
//! Everything a request needs (the active pool, every pool, the preview allowlist, the timeouts)
//! sits in one immutable [`Snapshot`]. A request loads it once and keeps the `Arc` until its
//! response ends, so a request in flight finishes on the pool it started on while the next request
//! on the same connection sees the new snapshot.
//!
//! Every change (admin switch, config file edit, SIGHUP) goes through [`State::switch`] or
//! [`State::reload`], serialised by one async mutex around "compute new snapshot, store, persist".
//!
//! ## Who wins: the admin or the file
//! A switch made through the admin API is persisted: `active` in the config file is rewritten in
//! place (comments kept, written to a temporary file and renamed; through a symlink, the file it
//! names is rewritten and the link kept), or, when the file cannot be
//! written, a state file `<config>.state` beside it records the choice together with the file's own
//! `active` at that moment. A reload keeps the admin's choice unless the file's `active` differs from
//! what the file said last time, which means an operator edited it on purpose; then the file wins.
//! At startup the state file is used only if the file's `active` is still the one it recorded.

use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};
use tracing::{error, info, warn};

use crate::config::{Config, ConfigError};
use crate::events::Kind;

mod delivery;
mod mirror;
mod persist;
mod rollout;
mod shared;

use crate::metrics::Metrics;
use crate::pool::Pool;
pub use delivery::{CanaryError, Edited};
pub use mirror::MirrorError;
pub use persist::state_file;
use persist::{persist, remove_state_file, restore};
pub use rollout::StepError;
pub use shared::{Shared, Store, StoreError, StoreFuture};

/// An immutable view of the whole routing state.
#[derive(Debug)]
pub struct Snapshot {
    /// Grows by one with every switch or applied reload.
    pub generation: u64,
    /// The pool that takes the default route.
    pub active: Arc<Pool>,
    /// Every pool, sorted by name.
    pub pools: Vec<Arc<Pool>>,
    /// The configuration this snapshot was built from.
    pub config: Arc<Config>,
    /// The canary split of the default route in force, if any (`[canary]` with a percent above 0
    /// and a pool other than the active one).
    pub canary: Option<Canary>,
    /// Mirroring in force, if any (`[mirror]` with a percent above 0 and a pool other than the
    /// active one).
    pub mirror: Option<crate::mirror::Mirror>,
}

/// A canary split in force: `percent` of default-route clients go to `pool`.
#[derive(Debug, Clone)]
pub struct Canary {
    /// The canary pool.
    pub pool: Arc<Pool>,
    /// 1-100.
    pub percent: u8,
    /// How clients keep their bucket.
    pub sticky: crate::config::Sticky,
}

impl Snapshot {
    /// Builds a snapshot of `config` with `active` taking the default route, carrying runtime
    /// counters over from `previous`. `active` must name one of the config's pools.
    pub fn build(
        config: Arc<Config>,
        active: &str,
        previous: Option<&Snapshot>,
        generation: u64,
        metrics: &Metrics,
    ) -> Snapshot {
        let active = if config.pools.contains_key(active) {
            active
        } else {
            config.active.as_str()
        };
        let pools: Vec<Arc<Pool>> = config
            .pools
            .iter()
            .map(|(name, pc)| {
                let prev = previous.and_then(|s| s.pool(name)).map(|p| &**p);
                let is_active = name == active;
                let timeouts = crate::pool::PoolTimeouts {
                    connect: pc.connect_timeout.unwrap_or(config.proxy.connect_timeout),
                    response: pc.response_timeout.unwrap_or(config.proxy.response_timeout),
                    idle: config.proxy.upstream_idle_timeout,
                };
                let pool = Pool::build(name, &pc.servers, prev, is_active, metrics.pool(name));
                Arc::new(pool.with_timeouts(timeouts))
            })
            .collect();
        let active = pools
            .iter()
            .find(|p| &*p.name == active)
            .expect("a validated config names an existing active pool")
            .clone();
        let canary = config.canary.as_ref().and_then(|c| {
            let pool = pools.iter().find(|p| *p.name == *c.pool)?;
            (c.percent > 0 && pool.name != active.name).then(|| Canary {
                pool: pool.clone(),
                percent: c.percent,
                sticky: c.sticky,
            })
        });
        let mirror = crate::mirror::Mirror::build(config.mirror.as_ref(), &pools, &active, metrics);
        Snapshot {
            generation,
            active,
            pools,
            config,
            canary,
            mirror,
        }
    }

    /// The pool called `name`.
    pub fn pool(&self, name: &str) -> Option<&Arc<Pool>> {
        self.pools.iter().find(|p| &*p.name == name)
    }

    /// The mirror that copies a request going to `pool`, if any: only live traffic is copied,
    /// that is default-route requests (`preview`: false) that go to the active pool, not a preview
    /// route, not the canary's share, not a preview cookie's or header's pick. The one rule for
    /// both transports.
    pub fn mirror_for(&self, pool: &Pool, preview: bool) -> Option<&crate::mirror::Mirror> {
        let live = !preview && std::ptr::eq(pool, &*self.active);
        self.mirror.as_ref().filter(|_| live)
    }

    /// What the metrics' live gauges show now.
    pub fn live(&self) -> crate::metrics::Live<'_> {
        let pools = self
            .pools
            .iter()
            .map(|pool| {
                let open = pool.open();
                crate::metrics::LivePool {
                    name: &pool.name,
                    active: pool.name == self.active.name,
                    canary_percent: match &self.canary {
                        Some(c) if c.pool.name == pool.name => c.percent,
                        _ => 0,
                    },
                    in_flight: open.in_flight,
                    tunnels: open.tunnels,
                    servers: pool
                        .servers
                        .iter()
                        .map(|s| crate::metrics::LiveServer {
                            authority: s.authority.as_str(),
                            usable: s.health.usable(),
                            in_flight: s.in_flight(),
                            since: s.health.since(),
                            state: s.health.state(),
                            ips: s.ips(),
                        })
                        .collect(),
                }
            })
            .collect();
        crate::metrics::Live {
            generation: self.generation,
            pools,
        }
    }
}

/// Why a switch was refused.
#[derive(Debug, thiserror::Error)]
pub enum SwitchError {
    /// The target names no pool.
    #[error("no pool named {name:?}; pools: {pools}")]
    UnknownPool {
        /// The requested name.
        name: String,
        /// The pools there are, comma-separated.
        pools: String,
    },
    /// No target and not exactly two pools to flip between.
    #[error("no target pool given and there are {0} pools; name the pool to switch to")]
    NoTarget(usize),
    /// The change could not be committed to the cluster's store.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The target has no server ready to take traffic (and the switch was not forced).
    #[error("pool {pool} has no healthy server; fix it or switch with force")]
    Unhealthy {
        /// The target pool.
        pool: String,
        /// Its servers and their health.
        servers: Vec<(String, crate::health::Report)>,
    },
}

/// A switch that took effect.
#[derive(Debug, Clone, Serialize)]
pub struct Switched {
    /// The pool now active.
    pub active: String,
    /// The pool active before.
    pub previous: String,
    /// The new snapshot's generation (the current one when nothing changed).
    pub generation: u64,
    /// Where the choice was saved.
    pub persisted: Persisted,
    /// False when the pool was already active: nothing was done.
    pub changed: bool,
    /// In cluster mode, the store's revision of the change.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revision: Option<i64>,
    /// The previous pool as it was when the switch happened, to wait for its drain.
    #[serde(skip)]
    pub previous_pool: Arc<Pool>,
}

/// Where an admin switch was saved so that it survives a restart.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Persisted {
    /// `active` rewritten in the config file.
    Config,
    /// The config file could not be written; a state file beside it holds the choice.
    StateFile,
    /// Nothing could be written (the switch holds until restart); the reason is logged.
    Failed,
    /// There is no config file (the embedded demo).
    NoFile,
    /// The pool was already active: nothing to save.
    Unchanged,
    /// Committed to the cluster's store (`[cluster]`), which every instance follows.
    Cluster,
}

/// The outcome of a reload that was not refused.
#[derive(Debug, Clone, PartialEq)]
pub enum Reloaded {
    /// The file's text is what was last loaded or written: nothing to do.
    Unchanged,
    /// A new snapshot is in force.
    Applied {
        /// Its generation.
        generation: u64,
        /// The active pool in it.
        active: String,
    },
}

/// What is saved in the state file when the config file cannot be rewritten.
#[derive(Debug, Serialize, Deserialize)]
struct SavedState {
    active: String,
    config_active: String,
}

/// The writer's memory of the config file.
#[derive(Debug)]
struct Writer {
    /// `active` as the file said it when last read or written.
    file_active: String,
    /// The file's text when last read or written; a reload of the same text is skipped.
    file_text: Option<String>,
    /// The text of the last refused edit, so it is refused (and logged) once, not on every event.
    refused_text: Option<String>,
    /// In cluster mode, the shared part as the file said it when last read: an edit of it is
    /// refused (the store holds it).
    file_shared: Shared,
}

/// The shared live state of one teal process.
pub struct State {
    snapshot: ArcSwap<Snapshot>,
    /// Carries the generation of every new snapshot to background tasks (health checks,
    /// resolution) that follow the configuration.
    changed: tokio::sync::watch::Sender<u64>,
    writer: tokio::sync::Mutex<Writer>,
    metrics: Arc<Metrics>,
    /// Certificates and ACME challenges: they outlive configurations.
    tls: crate::tls::Tls,
    /// In cluster mode, where the shared state lives.
    store: Option<Arc<dyn Store>>,
    /// The last things that happened, for the dashboard.
    events: crate::events::Events,
}

impl State {
    /// Starts from `config`, restoring an admin switch from the state file when it still applies.
    pub fn new(config: Config, metrics: Arc<Metrics>) -> State {
        let file_text = config
            .path
            .as_deref()
            .and_then(|p| std::fs::read_to_string(p).ok());
        let file_active = config.active.clone();
        let file_shared = Shared::of(&config, &config.active);
        // In cluster mode the store, not a state file, holds an admin's switch.
        let active = config
            .path
            .as_deref()
            .filter(|_| config.cluster.is_none())
            .and_then(|p| restore(p, &config))
            .unwrap_or_else(|| config.active.clone());
        let snap = Snapshot::build(Arc::new(config), &active, None, 1, &metrics);
        State {
            snapshot: ArcSwap::from_pointee(snap),
            changed: tokio::sync::watch::Sender::new(1),
            writer: tokio::sync::Mutex::new(Writer {
                file_active,
                file_text,
                refused_text: None,
                file_shared,
            }),
            metrics,
            tls: crate::tls::Tls::new(),
            store: None,
            events: Default::default(),
        }
    }

    /// This state in cluster mode: its shared part lives in `store`. Nothing is written to the
    /// config file any more; an edit of the file's shared part is refused.
    pub fn with_store(mut self, store: Arc<dyn Store>) -> State {
        self.store = Some(store);
        self
    }

    /// Certificates being served and ACME challenges under way.
    pub fn tls(&self) -> &crate::tls::Tls {
        &self.tls
    }

    /// The current snapshot. Load it once per request and keep the `Arc`.
    pub fn load(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// The process's metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The last things that happened (switches, reloads, health changes...), for the dashboard.
    pub fn events(&self) -> &crate::events::Events {
        &self.events
    }

    /// A receiver that wakes on every new snapshot.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Holds the writer lock until the guard drops, so a test can line up changes behind it in
    /// the order it wants (the lock is fair).
    #[cfg(test)]
    pub(crate) async fn hold_writer(&self) -> impl Drop + '_ {
        self.writer.lock().await
    }

    fn publish(&self, snap: Snapshot) {
        let generation = snap.generation;
        self.snapshot.store(Arc::new(snap));
        self.changed.send_replace(generation);
    }

    /// Makes `to` the active pool (no target: the other of exactly two pools) and persists it.
    /// `who` is logged as the one who asked. A pool with no server ready (see [`ready`]) is
    /// refused unless `force`d.
    pub async fn switch(
        &self,
        to: Option<&str>,
        who: &str,
        force: bool,
    ) -> Result<Switched, SwitchError> {
        let mut writer = self.writer_for_change().await;
        self.switch_locked(&mut writer, to, who, force).await
    }

    /// [`State::switch`] with the writer lock held.
    async fn switch_locked(
        &self,
        writer: &mut Writer,
        to: Option<&str>,
        who: &str,
        force: bool,
    ) -> Result<Switched, SwitchError> {
        let cur = self.load();
        let target = choose_target(&cur, to, force);
        let target = match target {
            Ok(t) => t.name.to_string(),
            Err(e) => {
                self.metrics.switch(false);
                warn!(by = who, error = %e, "switch refused");
                return Err(e);
            }
        };
        let previous_pool = cur.active.clone();
        let previous = previous_pool.name.to_string();
        if target == previous {
            info!(active = %target, by = who, generation = cur.generation, "already active; nothing to do");
            return Ok(Switched {
                active: target,
                previous,
                generation: cur.generation,
                persisted: Persisted::Unchanged,
                changed: false,
                revision: None,
                previous_pool,
            });
        }
        let generation = cur.generation + 1;
        // A switch ends any canary: the new active pool takes the whole default route.
        let ended_canary = cur.config.canary.is_some();
        let config = if ended_canary {
            Arc::new(Config {
                canary: None,
                ..(*cur.config).clone()
            })
        } else {
            cur.config.clone()
        };
        let next = Snapshot::build(config, &target, Some(&cur), generation, &self.metrics);
        let revision = self.commit_shared(&cur, &next).await.inspect_err(|e| {
            self.metrics.switch(false);
            warn!(by = who, error = %e, "switch refused");
        })?;
        self.publish(next);
        let persisted = match cur.config.path.as_deref() {
            _ if self.store.is_some() => Persisted::Cluster,
            Some(path) => persist(path, &target, ended_canary, writer),
            None => Persisted::NoFile,
        };
        self.metrics.switch(true);
        info!(active = %target, previous = %previous, by = who, generation, force, persisted = ?persisted, revision, "switched");
        let forced = if force { ", forced" } else { "" };
        self.events.record(
            Kind::Switch,
            format!("switched from {previous} to {target} (by {who}{forced})"),
        );
        Ok(Switched {
            active: target,
            previous,
            generation,
            persisted,
            changed: true,
            revision,
            previous_pool,
        })
    }

    /// Re-reads the config file and applies it, or logs why not and keeps the running config.
    /// `cause` says what triggered it (file change, SIGHUP) for the log. Unless `force`d (SIGHUP,
    /// which also re-reads a `token_file`), text identical to what was last loaded is skipped.
    pub async fn reload(&self, cause: &str, force: bool) -> Result<Reloaded, ConfigError> {
        let mut writer = self.writer.lock().await;
        let cur = self.load();
        let Some(path) = cur.config.path.clone() else {
            return Ok(Reloaded::Unchanged);
        };
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(source) => {
                // Editors briefly remove the file while saving; the next event brings it back.
                let e = ConfigError::Io {
                    path: path.display().to_string(),
                    source,
                };
                self.metrics.reload(false);
                error!(path = %path.display(), cause, "reload refused, running config kept: {e}");
                self.record_refusal(cause, &e);
                return Err(e);
            }
        };
        let seen = |t: &Option<String>| t.as_deref() == Some(text.as_str());
        if !force && (seen(&writer.file_text) || seen(&writer.refused_text)) {
            return Ok(Reloaded::Unchanged);
        }
        // An editor that saves in place may be half-way through: read until the text holds still.
        let text = settled(&path, text).await;
        let parsed = Config::parse(&text, Some(&path)).and_then(|mut c| {
            c.read_token_file()?;
            Ok(c)
        });
        let config = match parsed.and_then(|c| self.keep_shared(&writer, &cur, c)) {
            Ok(c) => c,
            Err(e) => {
                self.metrics.reload(false);
                error!(path = %path.display(), cause, "reload refused, running config kept: {e}");
                self.record_refusal(cause, &e);
                writer.refused_text = Some(text);
                return Err(e);
            }
        };
        writer.refused_text = None;
        warn_restart_only(&cur.config, &config);
        let operator_edit = self.store.is_none() && config.active != writer.file_active;
        let keep = &*cur.active.name;
        let active = if operator_edit || !config.pools.contains_key(keep) {
            config.active.clone()
        } else {
            keep.to_string()
        };
        if operator_edit {
            remove_state_file(&path);
        }
        writer.file_active = config.active.clone();
        writer.file_text = Some(text);
        if self.store.is_none() {
            writer.file_shared = Shared::of(&config, &config.active);
        }
        let generation = cur.generation + 1;
        let next = Snapshot::build(
            Arc::new(config),
            &active,
            Some(&cur),
            generation,
            &self.metrics,
        );
        if !ready(&next, &next.active) {
            warn!(pool = %next.active.name, "the file makes a pool with no healthy server active; applied, as the file is the operator's word");
        }
        self.publish(next);
        self.metrics.reload(true);
        info!(path = %path.display(), cause, active = %active, generation, operator_edit, "config reloaded");
        self.events.record(
            Kind::Reload,
            format!("config reloaded ({cause}): generation {generation}, {active} active"),
        );
        Ok(Reloaded::Applied { generation, active })
    }
}

impl State {
    /// Records a refused reload, with its error, among the events.
    fn record_refusal(&self, cause: &str, e: &ConfigError) {
        let text = format!("reload refused ({cause}), running config kept: {e}");
        self.events.record(Kind::ReloadRefused, text);
    }

    /// In cluster mode, `config` (a new version of the file) with the store's shared state in
    /// place of the file's: the store is the source of truth. An edit of the file's `active`,
    /// `[canary]` or `[mirror]` is refused (it would apply to this instance alone), and so is a
    /// file that drops the pool the store makes active. Alone, `config` as it is.
    fn keep_shared(
        &self,
        writer: &Writer,
        cur: &Snapshot,
        config: Config,
    ) -> Result<Config, ConfigError> {
        let Some(store) = &self.store else {
            return Ok(config);
        };
        let refuse = |key: &str, reason: String| ConfigError::Invalid {
            path: config.display_path(),
            pos: None,
            key: Some(key.to_string()),
            reason,
        };
        let file = Shared::of(&config, &config.active);
        let edited = [
            (
                "active",
                file.active != writer.file_shared.active,
                "teal switch",
            ),
            (
                "canary",
                file.canary != writer.file_shared.canary,
                "teal canary",
            ),
            (
                "mirror",
                file.mirror != writer.file_shared.mirror,
                "teal mirror",
            ),
        ];
        if let Some((key, _, command)) = edited.iter().find(|(_, e, _)| *e) {
            return Err(refuse(
                key,
                format!("edited in the file, but in cluster mode the store holds it ({}); use `{command}`, and put the file's value back", store.describe()),
            ));
        }
        if !config.pools.contains_key(&*cur.active.name) {
            return Err(refuse(
                "pools",
                format!("the file drops pool {}, which the cluster's shared state makes active; switch away from it first", cur.active.name),
            ));
        }
        Ok(Config {
            active: cur.active.name.to_string(),
            canary: cur.config.canary.clone(),
            mirror: cur.config.mirror.clone(),
            ..config
        })
    }
}

/// `text` as read from `path`, read again until two reads 25 ms apart agree (at most a quarter
/// of a second): a file being written in place is not taken half-written.
async fn settled(path: &Path, mut text: String) -> String {
    for _ in 0..10 {
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        match std::fs::read_to_string(path) {
            Ok(again) if again == text => break,
            Ok(again) => text = again,
            Err(_) => break,
        }
    }
    text
}

/// Whether `pool` can take the default route: with active checks, some server is healthy (and not
/// ejected); without them, some server is not known to be down.
pub fn ready(snap: &Snapshot, pool: &Pool) -> bool {
    let checked = snap
        .config
        .pools
        .get(&*pool.name)
        .is_some_and(|p| p.health.is_some());
    pool.servers.iter().any(|s| {
        s.health.usable() && (!checked || s.health.status() == crate::health::Status::Healthy)
    })
}

/// The pool a switch to `to` (no target: the other of exactly two pools) goes to, if it may.
fn choose_target<'a>(
    cur: &'a Snapshot,
    to: Option<&str>,
    force: bool,
) -> Result<&'a Arc<Pool>, SwitchError> {
    let target = match to {
        Some(name) => cur.pool(name).ok_or_else(|| SwitchError::UnknownPool {
            name: name.to_string(),
            pools: pool_names(cur),
        }),
        None if cur.pools.len() == 2 => Ok(cur
            .pools
            .iter()
            .find(|p| p.name != cur.active.name)
            .expect("two pools with distinct names")),
        None => Err(SwitchError::NoTarget(cur.pools.len())),
    };
    target.and_then(|t| {
        if force || t.name == cur.active.name || ready(cur, t) {
            Ok(t)
        } else {
            Err(SwitchError::Unhealthy {
                pool: t.name.to_string(),
                servers: t
                    .servers
                    .iter()
                    .map(|s| (s.authority.to_string(), s.health.report()))
                    .collect(),
            })
        }
    })
}

fn pool_names(snap: &Snapshot) -> String {
    let names: Vec<&str> = snap.pools.iter().map(|p| &*p.name).collect();
    names.join(", ")
}

/// Settings bound at startup cannot change on reload; say so instead of ignoring them silently.
fn warn_restart_only(old: &Config, new: &Config) {
    let changed = [
        ("proxy.listen", old.proxy.listen != new.proxy.listen),
        ("admin.listen", old.admin.listen != new.admin.listen),
        (
            "tls.listen",
            old.tls.as_ref().map(|t| t.listen) != new.tls.as_ref().map(|t| t.listen),
        ),
        (
            "proxy.header_timeout",
            old.proxy.header_timeout != new.proxy.header_timeout,
        ),
        (
            "proxy.idle_timeout",
            old.proxy.idle_timeout != new.proxy.idle_timeout,
        ),
        ("proxy.workers", old.proxy.workers != new.proxy.workers),
        ("cluster", old.cluster != new.cluster),
        ("log.format", old.log.format != new.log.format),
    ];
    for (key, _) in changed.iter().filter(|(_, c)| *c) {
        warn!(
            key,
            "changed in the file; this setting applies after a restart"
        );
    }
}

#[cfg(test)]
mod tests;
