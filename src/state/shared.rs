//! The switch state several instances share (`[cluster]`): which pool is active, the canary
//! split and mirroring. Alone, an instance keeps it in its config file; in a cluster it lives in
//! a [`Store`] (etcd, [`crate::cluster`]) and every change goes there first, with a
//! compare-and-swap on the revision the instance serves, and is put in force once committed.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tracing::{error, info};

use super::{Snapshot, State};
use crate::config::{CanaryConfig, Config, MirrorConfig};

/// The shared part of the routing state, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shared {
    /// The pool that takes the default route.
    pub active: String,
    /// The canary split, if any.
    #[serde(default)]
    pub canary: Option<CanaryConfig>,
    /// Mirroring, if any.
    #[serde(default)]
    pub mirror: Option<MirrorConfig>,
}

impl Shared {
    /// The shared part of `config` with `active` as the active pool.
    pub fn of(config: &Config, active: &str) -> Shared {
        Shared {
            active: active.to_string(),
            canary: config.canary.clone(),
            mirror: config.mirror.clone(),
        }
    }

    /// What `snap` serves.
    pub fn of_snapshot(snap: &Snapshot) -> Shared {
        Shared::of(&snap.config, &snap.active.name)
    }
}

/// Why a change could not be committed to the store.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// Someone changed the state since this instance last read it: nothing was written.
    #[error("the shared state changed meanwhile (now revision {revision}); nothing was written: look at the current state and retry")]
    Conflict {
        /// The state as it is now, if there is one.
        current: Option<Box<Shared>>,
        /// Its revision.
        revision: i64,
    },
    /// The store cannot be reached: nothing was written, and nothing changed here either (a
    /// local-only change would split the fleet).
    #[error("cluster store unreachable: {0}; nothing was changed")]
    Unavailable(String),
    /// The change was sent but its answer did not come: it may or may not be in force.
    #[error("the cluster store did not answer in time ({0}): the change may or may not have been committed; `teal status` shows what every instance serves")]
    Uncertain(String),
}

/// A boxed future, for the object-safe [`Store`].
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Where the shared state lives when it is not this instance's own.
pub trait Store: Send + Sync {
    /// Writes `shared` if the stored state is still the revision this instance last saw; the
    /// new revision. Called with the state's writer lock held.
    fn commit<'a>(&'a self, shared: &'a Shared) -> StoreFuture<'a, Result<i64, StoreError>>;
    /// The revision this instance last saw (what [`Store::commit`] compares with).
    fn seen(&self) -> i64;
    /// Records that this instance saw `revision` and serves it (`applied`) or could not.
    fn record(&self, revision: i64, applied: bool);
    /// Forgets what was seen: the next state is taken whatever its revision (a fresh read of
    /// the store, which may have been wiped and restarted its revisions).
    fn forget(&self);
    /// Returns once the store is connected, or after a short while when it is not (a session
    /// that just lost its endpoint is usually back on another one by then). Awaited before
    /// taking the writer lock, so changes wait for it side by side, not one behind another.
    fn ready(&self) -> StoreFuture<'_, ()>;
    /// This instance's name in the fleet.
    fn name(&self) -> String;
    /// What to say in logs and refusals about where the state lives.
    fn describe(&self) -> String;
    /// The `cluster` object of `GET /status`.
    fn status(&self) -> serde_json::Value;
    /// Waits up to `timeout` until every live instance serves `revision` or later; whether they
    /// all do, and each one's report.
    fn wait_applied(
        &self,
        revision: i64,
        timeout: std::time::Duration,
    ) -> StoreFuture<'_, (bool, serde_json::Value)>;
}

impl State {
    /// The store of the shared state, in cluster mode.
    pub fn store(&self) -> Option<&Arc<dyn Store>> {
        self.store.as_ref()
    }

    /// Puts the stored `shared` state, at `revision`, in force: the same snapshot swap as a
    /// local switch. A revision already seen is skipped (this instance's own commits come back
    /// through the watch). A state naming a pool this instance's file lacks is not applied, and
    /// said loudly: the instance keeps serving what it served. With `fresh` (a new read of the
    /// store rather than a watched change) the state is taken whatever was seen before: a
    /// restored or wiped store starts its revisions again, and a read that raced this
    /// instance's own commit is corrected by the watch that follows it.
    pub async fn apply_shared(&self, shared: Shared, revision: i64, fresh: bool) {
        let Some(store) = &self.store else { return };
        let _writer = self.writer.lock().await;
        if fresh {
            store.forget();
        } else if revision <= store.seen() {
            return;
        }
        let cur = self.load();
        if Shared::of_snapshot(&cur) == shared {
            store.record(revision, true);
            return;
        }
        if !cur.config.pools.contains_key(&shared.active) {
            error!(pool = %shared.active, revision, "the shared state names a pool this instance's config lacks; NOT applied, still serving {}", cur.active.name);
            store.record(revision, false);
            return;
        }
        let previous = cur.active.name.to_string();
        let config = Config {
            canary: shared.canary.clone(),
            mirror: shared.mirror.clone(),
            ..(*cur.config).clone()
        };
        let generation = cur.generation + 1;
        let next = Snapshot::build(
            Arc::new(config),
            &shared.active,
            Some(&cur),
            generation,
            &self.metrics,
        );
        if next.active.name != cur.active.name {
            self.metrics.switch(true);
        }
        self.publish(next);
        store.record(revision, true);
        info!(active = %shared.active, previous = %previous, revision, generation, canary = shared.canary.as_ref().map(|c| c.percent), mirror = shared.mirror.is_some(), "shared state applied");
        let canary = shared.canary.as_ref().map_or("no canary".to_string(), |c| {
            format!("canary {}% to {}", c.percent, c.pool)
        });
        let mirror = shared
            .mirror
            .as_ref()
            .map_or("no mirroring".to_string(), |m| {
                format!("mirroring to {}", m.pool)
            });
        self.events.record(
            crate::events::Kind::Cluster,
            format!("shared state applied from the cluster (revision {revision}): {} active (was {previous}), {canary}, {mirror}", shared.active),
        );
    }

    /// The writer lock, for an admin change: in cluster mode, once the store is ready (see
    /// [`Store::ready`]); a commit made while it is still not connected is refused at once.
    pub(super) async fn writer_for_change(&self) -> tokio::sync::MutexGuard<'_, super::Writer> {
        if let Some(store) = &self.store {
            store.ready().await;
        }
        self.writer.lock().await
    }

    /// In cluster mode, commits what `next` serves to the store when it differs from what `cur`
    /// serves: `Ok(Some(revision))` once committed; `Ok(None)` when there is nothing to commit
    /// (alone, or nothing shared changed). The caller holds the writer lock and publishes
    /// `next` only after this succeeds.
    pub(super) async fn commit_shared(
        &self,
        cur: &Snapshot,
        next: &Snapshot,
    ) -> Result<Option<i64>, StoreError> {
        let Some(store) = &self.store else {
            return Ok(None);
        };
        let shared = Shared::of_snapshot(next);
        if shared == Shared::of_snapshot(cur) {
            return Ok(None);
        }
        let revision = store.commit(&shared).await?;
        store.record(revision, true);
        Ok(Some(revision))
    }
}
