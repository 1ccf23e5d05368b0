//! The one task that keeps an instance in step with etcd: read (or create) the shared state,
//! report this instance under a lease, watch the prefix, keep the lease alive; on any failure
//! mark the store disconnected, wait, try the next endpoint and start over from a fresh read.
//! A fresh read after every break also covers a compaction of the revisions the watch needed.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::etcd::{EtcdError, WatchEvent};
use super::{decode, Cluster, Instance};
use crate::state::{Shared, State, Store};

/// The lease of an instance key: it disappears this long after its instance stops renewing.
const LEASE_TTL: u64 = 10;
/// How often the lease is renewed; a failed renewal also ends the session.
const KEEP_ALIVE: Duration = Duration::from_secs(2);
/// The first wait before retrying a broken session; doubled up to [`MAX_BACKOFF`].
const BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(3);
/// How long startup waits for the store before serving the file's state.
const STARTUP_WAIT: Duration = Duration::from_secs(5);

/// Starts the session task for `state` (already in cluster mode through `cluster`) and waits up
/// to five seconds for its first read, so a new instance serves the fleet's state from its first
/// request. When the store cannot be reached by then, it starts on its file's state and says so;
/// the session adopts the stored state as soon as the store answers.
pub async fn start(
    state: Arc<State>,
    cluster: Arc<Cluster>,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let mut changed = cluster.changed.subscribe();
    let task = tokio::spawn(run(state, cluster.clone(), stop));
    let synced = tokio::time::timeout(STARTUP_WAIT, async {
        while !cluster.is_connected() {
            if changed.changed().await.is_err() {
                return;
            }
        }
    })
    .await;
    if synced.is_err() {
        error!(endpoint = %cluster.etcd.endpoint(), "the cluster's store cannot be reached: serving the config file's state until it can; switches are refused meanwhile");
    }
    task
}

async fn run(state: Arc<State>, cluster: Arc<Cluster>, stop: CancellationToken) {
    tokio::select! {
        () = stop.cancelled() => {}
        () = keep_in_step(&state, &cluster) => {}
    }
    // Leave the fleet at once rather than when the lease runs out, so a `wait=applied`
    // elsewhere does not wait for this instance.
    let lease = cluster.lease.swap(0, Ordering::Relaxed);
    if lease != 0 {
        let revoke = cluster.etcd.revoke(lease);
        match tokio::time::timeout(Duration::from_secs(1), revoke).await {
            Ok(Ok(())) => info!("left the fleet"),
            Ok(Err(e)) => {
                warn!(error = %e, "could not leave the fleet; this instance's key expires with its lease")
            }
            Err(_) => warn!(
                "could not leave the fleet within 1 s; this instance's key expires with its lease"
            ),
        }
    }
}

/// Sessions one after another, with a growing pause after each that breaks; never returns.
async fn keep_in_step(state: &Arc<State>, cluster: &Arc<Cluster>) {
    let mut backoff = BACKOFF;
    loop {
        let Err(e) = session(state, cluster).await;
        if cluster.is_connected() {
            warn!(error = %e, "lost the cluster's store; serving the last state applied");
            backoff = BACKOFF;
        } else {
            warn!(error = %e, endpoint = %cluster.etcd.endpoint(), "cluster's store unreachable");
        }
        cluster.set_connected(false, Some(e.0));
        cluster.etcd.rotate();
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// One connected stretch, until something breaks (or the caller stops polling it).
async fn session(
    state: &Arc<State>,
    cluster: &Arc<Cluster>,
) -> Result<std::convert::Infallible, EtcdError> {
    let etcd = &cluster.etcd;
    etcd.authenticate().await?;
    let from = sync(state, cluster).await?;
    let lease = etcd.grant(LEASE_TTL).await?;
    cluster.lease.store(lease, Ordering::Relaxed);
    report(state, cluster, lease).await?;
    let mut watch = etcd.watch(&cluster.prefix, from + 1).await?;
    // The lease is renewed through the member the watch is on: a member that goes silent or
    // loses its leader fails the renewal, so a watch that would never deliver again ends.
    let watch_at = etcd.at();
    let mut reported = cluster.applied.load(Ordering::Relaxed);
    let mut changed = cluster.changed.subscribe();
    cluster.set_connected(true, None);
    info!(endpoint = %etcd.endpoint(), prefix = %cluster.prefix, revision = reported, "connected to the cluster's store");
    let mut tick = tokio::time::interval(KEEP_ALIVE);
    tick.tick().await;
    loop {
        tokio::select! {
            next = watch.next() => {
                let Some((events, _)) = next? else {
                    return Err(EtcdError("the watch stream ended".into()));
                };
                for event in events {
                    take(state, cluster, event).await?;
                }
            }
            _ = tick.tick() => etcd.keep_alive(lease, watch_at).await?,
            Ok(()) = changed.changed() => {
                let applied = cluster.applied.load(Ordering::Relaxed);
                if applied != reported {
                    report(state, cluster, lease).await?;
                    reported = applied;
                }
            }
        }
    }
}

/// Reads the prefix: takes the stored state (or, when there is none, writes this instance's)
/// and the fleet. Returns the revision the read was made at, for the watch to go on from.
async fn sync(state: &State, cluster: &Cluster) -> Result<i64, EtcdError> {
    let (kvs, revision) = cluster.etcd.range(&cluster.prefix, true).await?;
    cluster.instances().clear();
    let key = cluster.state_key();
    let mut stored = None;
    for kv in &kvs {
        if kv.key == key {
            stored = Some(kv.clone());
        } else {
            cluster.instance_put(kv);
        }
    }
    match stored {
        Some(kv) => apply(state, cluster, &kv, true).await,
        None => {
            let mine = Shared::of_snapshot(&state.load());
            let value = serde_json::to_vec(&mine).expect("the shared state serialises");
            match cluster.etcd.swap(&key, 0, &value).await? {
                Ok(written) => {
                    info!(active = %mine.active, revision = written, "no shared state in the store yet: wrote this instance's");
                    cluster.forget();
                    cluster.record(written, true);
                }
                // Another instance was first: take its state.
                Err(Some(kv)) => apply(state, cluster, &kv, true).await,
                Err(None) => {
                    return Err(EtcdError(
                        "the state key vanished while it was written".into(),
                    ))
                }
            }
        }
    }
    Ok(revision)
}

/// Takes one watched change.
async fn take(state: &State, cluster: &Cluster, event: WatchEvent) -> Result<(), EtcdError> {
    let key = cluster.state_key();
    match event {
        WatchEvent::Put(kv) if kv.key == key => apply(state, cluster, &kv, false).await,
        WatchEvent::Put(kv) => cluster.instance_put(&kv),
        WatchEvent::Delete(k) if k == key => {
            // Someone removed the state by hand: put what this instance serves back, so the
            // fleet has one again.
            warn!(key = %k, "the shared state was deleted from the store; writing back what this instance serves");
            let mine = Shared::of_snapshot(&state.load());
            let value = serde_json::to_vec(&mine).expect("the shared state serialises");
            if let Ok(written) = cluster.etcd.swap(&key, 0, &value).await? {
                cluster.record(written, true);
            }
        }
        WatchEvent::Delete(k) => cluster.instance_gone(&k),
    }
    Ok(())
}

/// Puts the stored state `kv` in force (`fresh`: from a new read, see [`State::apply_shared`]).
async fn apply(state: &State, cluster: &Cluster, kv: &super::etcd::Kv, fresh: bool) {
    let revision = kv.mod_revision;
    match decode(&kv.value) {
        Ok(shared) => state.apply_shared(shared, revision, fresh).await,
        Err(e) => {
            error!(key = %cluster.state_key(), revision, "the stored state is not usable ({e}); NOT applied");
            if fresh {
                cluster.forget();
            }
            cluster.record(revision, false);
        }
    }
}

/// Writes this instance's key: the revision it serves, under `lease`.
async fn report(state: &State, cluster: &Cluster, lease: i64) -> Result<(), EtcdError> {
    let me = Instance {
        name: cluster.name.clone(),
        revision: cluster.applied.load(Ordering::Relaxed),
        active: state.load().active.name.to_string(),
        admin: cluster.admin.clone(),
    };
    let value = serde_json::to_vec(&me).expect("an instance serialises");
    cluster
        .etcd
        .put(&cluster.instance_key(), &value, lease)
        .await
        .map(drop)
}
