//! Cluster mode (`[cluster]`): the switch state of several teal instances in etcd.
//!
//! The shared state ([`Shared`]: the active pool, the canary split, mirroring) is one JSON value
//! at `{prefix}/state`. Each instance:
//! - at startup takes the stored state, or writes its file's when there is none
//!   ([`session`]);
//! - watches the prefix and puts every new state in force through the same snapshot swap as a
//!   local switch ([`State::apply_shared`]);
//! - commits its own changes (admin switch, canary, mirror, rollout steps) with a
//!   compare-and-swap on the revision it serves, so a concurrent change is never overwritten:
//!   the loser is told (409) and nothing changes ([`Cluster`] as the state's [`Store`]);
//! - keeps `{prefix}/instances/{name}`, bound to a lease, saying which revision it serves, so
//!   `POST /switch?wait=applied` and `teal status` can see the fleet.
//!
//! When etcd cannot be reached, an instance goes on serving the last state it applied; changes
//! are refused (503) rather than made locally, which would split the fleet. The client is
//! etcd's JSON gateway over hyper ([`etcd`]), not gRPC: no protobuf toolchain, no second HTTP
//! stack, a handful of calls.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::config::ClusterConfig;
use crate::metrics::Metrics;
use crate::state::{Shared, Store, StoreError, StoreFuture};

pub mod etcd;
mod session;

pub use session::start;

use etcd::{Etcd, Kv};

/// What an instance says about itself under `{prefix}/instances/`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Instance {
    /// `hostname:admin-port`.
    pub name: String,
    /// The revision of the shared state it serves.
    pub revision: i64,
    /// The pool it serves as active.
    pub active: String,
    /// Its admin listener.
    pub admin: String,
}

/// This instance's link to the cluster: the etcd client, what it has seen and applied, and the
/// fleet as the watch shows it.
pub struct Cluster {
    etcd: Etcd,
    prefix: String,
    name: String,
    admin: String,
    /// The revision of `{prefix}/state` last seen (compare-and-swap compares with it).
    seen: AtomicI64,
    /// The revision this instance serves.
    applied: AtomicI64,
    connected: AtomicBool,
    /// The lease of this instance's key in the current session (0: none).
    lease: AtomicI64,
    last_error: Mutex<Option<String>>,
    instances: Mutex<BTreeMap<String, Instance>>,
    /// Bumped when `applied` or the fleet changes: the session re-reports, waiters look again.
    changed: tokio::sync::watch::Sender<u64>,
    metrics: Arc<Metrics>,
}

impl Cluster {
    /// A link for `config`, named after this host and the admin listener `admin`.
    pub fn new(
        config: &ClusterConfig,
        admin: SocketAddr,
        metrics: Arc<Metrics>,
    ) -> Result<Cluster, String> {
        let host = hostname();
        Ok(Cluster {
            etcd: Etcd::new(config)?,
            prefix: config.prefix.clone(),
            name: format!("{host}:{}", admin.port()),
            admin: admin.to_string(),
            seen: AtomicI64::new(0),
            applied: AtomicI64::new(0),
            connected: AtomicBool::new(false),
            lease: AtomicI64::new(0),
            last_error: Mutex::new(None),
            instances: Mutex::default(),
            changed: tokio::sync::watch::Sender::new(0),
            metrics,
        })
    }

    fn state_key(&self) -> String {
        format!("{}/state", self.prefix)
    }

    fn instances_prefix(&self) -> String {
        format!("{}/instances/", self.prefix)
    }

    fn instance_key(&self) -> String {
        format!("{}{}", self.instances_prefix(), self.name)
    }

    /// Whether the store answers.
    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    fn set_connected(&self, connected: bool, error: Option<String>) {
        self.connected.store(connected, Ordering::Relaxed);
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = error;
        self.metrics
            .cluster(connected, self.applied.load(Ordering::Relaxed));
        self.bump();
    }

    fn bump(&self) {
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    fn instances(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Instance>> {
        self.instances.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes an instance key as read or watched.
    fn instance_put(&self, kv: &Kv) {
        let Some(name) = kv.key.strip_prefix(&self.instances_prefix()) else {
            return;
        };
        if let Ok(instance) = serde_json::from_slice::<Instance>(&kv.value) {
            self.instances().insert(name.to_string(), instance);
            self.bump();
        }
    }

    fn instance_gone(&self, key: &str) {
        if let Some(name) = key.strip_prefix(&self.instances_prefix()) {
            self.instances().remove(name);
            self.bump();
        }
    }
}

/// The stored state in `value`, checked as a config would be; the reason when it is not usable.
fn decode(value: &[u8]) -> Result<Shared, String> {
    let shared: Shared = serde_json::from_slice(value).map_err(|e| format!("not a state: {e}"))?;
    if let Some(c) = &shared.canary {
        if c.percent > 100 {
            return Err(format!("canary percent {} is over 100", c.percent));
        }
    }
    if let Some(m) = &shared.mirror {
        if m.percent > 100 || m.max_in_flight == 0 {
            return Err("mirror percent over 100 or max_in_flight 0".into());
        }
    }
    Ok(shared)
}

impl Store for Cluster {
    fn commit<'a>(&'a self, shared: &'a Shared) -> StoreFuture<'a, Result<i64, StoreError>> {
        Box::pin(async move {
            let value = serde_json::to_vec(shared).expect("the shared state serialises");
            let expected = self.seen.load(Ordering::Relaxed);
            match self.etcd.swap(&self.state_key(), expected, &value).await {
                Ok(Ok(revision)) => Ok(revision),
                Ok(Err(current)) => Err(StoreError::Conflict {
                    revision: current.as_ref().map_or(0, |kv| kv.mod_revision),
                    current: current.and_then(|kv| decode(&kv.value).ok()).map(Box::new),
                }),
                Err(e) => Err(StoreError::Unavailable(e.0)),
            }
        })
    }

    fn seen(&self) -> i64 {
        self.seen.load(Ordering::Relaxed)
    }

    fn record(&self, revision: i64, applied: bool) {
        self.seen.fetch_max(revision, Ordering::Relaxed);
        if applied {
            self.applied.fetch_max(revision, Ordering::Relaxed);
        }
        self.metrics
            .cluster(self.is_connected(), self.applied.load(Ordering::Relaxed));
        self.bump();
    }

    fn forget(&self) {
        self.seen.store(0, Ordering::Relaxed);
        self.applied.store(0, Ordering::Relaxed);
    }

    fn name(&self) -> String {
        self.name.clone()
    }

    fn describe(&self) -> String {
        format!("etcd, under {}", self.prefix)
    }

    fn status(&self) -> Value {
        let instances: Vec<Instance> = self.instances().values().cloned().collect();
        json!({
            "prefix": self.prefix,
            "name": self.name,
            "connected": self.is_connected(),
            "endpoint": self.etcd.endpoint(),
            "error": *self.last_error.lock().unwrap_or_else(|e| e.into_inner()),
            "revision": self.applied.load(Ordering::Relaxed),
            "instances": instances,
        })
    }

    fn wait_applied(&self, revision: i64, timeout: Duration) -> StoreFuture<'_, (bool, Value)> {
        Box::pin(async move {
            let mut changed = self.changed.subscribe();
            let deadline = tokio::time::Instant::now() + timeout;
            loop {
                let (all, list) = {
                    let instances = self.instances();
                    let all =
                        !instances.is_empty() && instances.values().all(|i| i.revision >= revision);
                    (all, json!(instances.values().collect::<Vec<_>>()))
                };
                if all {
                    return (true, list);
                }
                let wake = tokio::time::timeout_at(deadline, changed.changed()).await;
                if !matches!(wake, Ok(Ok(()))) {
                    return (false, list);
                }
            }
        })
    }
}

/// This host's name (`/proc/sys/kernel/hostname`, `$HOSTNAME`), or `teal`.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "teal".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_states_are_checked() {
        assert_eq!(decode(br#"{"active":"green"}"#).unwrap().active, "green");
        assert!(decode(b"{}").is_err());
        assert!(
            decode(br#"{"active":"g","canary":{"pool":"b","percent":200,"sticky":"ip"}}"#).is_err()
        );
    }
}
