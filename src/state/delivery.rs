//! Admin changes of the progressive-delivery tables (`[canary]` here; mirroring and rollouts take
//! the same path): validated against the live snapshot, applied to the running config as a new
//! snapshot with the same active pool, and written back into the config file, all under the one
//! writer lock that switches and reloads take.

use std::sync::Arc;

use serde::Serialize;
use tracing::{info, warn};

use super::persist::{persist_edit, set_table};
use super::{pool_names, ready, Persisted, Snapshot, State, Writer};
use crate::config::{CanaryConfig, Config};

/// An admin change of the config that took effect.
#[derive(Debug, Clone, Serialize)]
pub struct Edited {
    /// The new snapshot's generation.
    pub generation: u64,
    /// Where the change was saved.
    pub persisted: Persisted,
    /// In cluster mode, the store's revision of the change (none when nothing shared changed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revision: Option<i64>,
}

/// Why a canary change was refused.
#[derive(Debug, thiserror::Error)]
pub enum CanaryError {
    /// The pool does not exist.
    #[error("no pool named {name:?}; pools: {pools}")]
    UnknownPool {
        /// The requested name.
        name: String,
        /// The pools there are, comma-separated.
        pools: String,
    },
    /// The pool is the active one.
    #[error("{0:?} is the active pool; a canary is another pool taking a share of its traffic")]
    ActivePool(String),
    /// The percent is not 0-100.
    #[error("percent {0} is not from 0 to 100")]
    Percent(i64),
    /// The pool has no server ready (and the change was not forced).
    #[error("pool {0} has no healthy server; fix it or set the canary with force")]
    Unhealthy(String),
    /// The change could not be committed to the cluster's store.
    #[error(transparent)]
    Store(#[from] super::StoreError),
}

impl State {
    /// Sets the canary split (`None`, or a percent of 0, ends it) and writes `[canary]` into the
    /// config file. A pool with no server ready is refused unless `force`d, as for a switch.
    pub async fn set_canary(
        &self,
        canary: Option<CanaryConfig>,
        who: &str,
        force: bool,
    ) -> Result<Edited, CanaryError> {
        let mut writer = self.writer_for_change().await;
        let cur = self.load();
        let canary = canary.filter(|c| c.percent > 0);
        if let Some(c) = &canary {
            check_canary(&cur, c, force)?;
        }
        let config = Config {
            canary: canary.clone(),
            ..(*cur.config).clone()
        };
        let edited = self
            .apply_edit(&mut writer, &cur, config, "canary", |doc| {
                set_table(doc, "canary", canary.as_ref())
            })
            .await?;
        let text = match &canary {
            Some(c) => {
                info!(pool = %c.pool, percent = c.percent, sticky = c.sticky.as_str(), by = who, generation = edited.generation, force, "canary set");
                format!(
                    "canary: {}% of default-route clients to {} (by {who})",
                    c.percent, c.pool
                )
            }
            None => {
                info!(by = who, generation = edited.generation, "canary ended");
                format!("canary ended (by {who})")
            }
        };
        self.events.record(crate::events::Kind::Canary, text);
        Ok(edited)
    }
}

impl State {
    /// Puts `config` in force with the same active pool, then writes the same change into the
    /// config file with `edit`. The caller holds the writer lock (`writer`) and validated the
    /// change against `cur`: the one place an admin edit of the delivery tables becomes a
    /// snapshot and a file. In cluster mode the shared part goes to the store first (refused:
    /// nothing changes) and the file is left alone.
    pub(super) async fn apply_edit(
        &self,
        writer: &mut Writer,
        cur: &Snapshot,
        config: Config,
        what: &str,
        edit: impl FnOnce(&mut toml_edit::DocumentMut) -> Result<(), String>,
    ) -> Result<Edited, super::StoreError> {
        let generation = cur.generation + 1;
        let next = Snapshot::build(
            Arc::new(config),
            &cur.active.name,
            Some(cur),
            generation,
            &self.metrics,
        );
        let revision = self.commit_shared(cur, &next).await?;
        // `[rollout]` is this instance's own (its controller runs here), so in cluster mode it
        // is still written to the file, for a restart to resume it; the shared tables are not.
        let rollout =
            (next.config.rollout != cur.config.rollout).then(|| next.config.rollout.clone());
        self.publish(next);
        let persisted = match (cur.config.path.as_deref(), rollout) {
            (Some(path), Some(rollout)) if self.store.is_some() => {
                persist_edit(path, what, writer, |doc| {
                    set_table(doc, "rollout", rollout.as_ref())
                })
            }
            _ if self.store.is_some() => Persisted::Cluster,
            (Some(path), _) => persist_edit(path, what, writer, edit),
            (None, _) => Persisted::NoFile,
        };
        Ok(Edited {
            generation,
            persisted,
            revision,
        })
    }
}

pub(super) fn check_canary(
    cur: &Snapshot,
    c: &CanaryConfig,
    force: bool,
) -> Result<(), CanaryError> {
    let Some(pool) = cur.pool(&c.pool) else {
        return Err(CanaryError::UnknownPool {
            name: c.pool.clone(),
            pools: pool_names(cur),
        });
    };
    if pool.name == cur.active.name {
        return Err(CanaryError::ActivePool(c.pool.clone()));
    }
    if c.percent > 100 {
        return Err(CanaryError::Percent(c.percent.into()));
    }
    if !force && !ready(cur, pool) {
        warn!(pool = %c.pool, "canary refused: no server ready");
        return Err(CanaryError::Unhealthy(c.pool.clone()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Sticky;
    use crate::metrics::Metrics;

    const TEXT: &str = "# live colour\nactive = \"blue\"\n\n[pools.blue]\nservers = [\"127.0.0.1:1\"]\n\n[pools.green]\nservers = [\"127.0.0.1:2\"]\n";

    fn canary(pool: &str, percent: u8) -> Option<CanaryConfig> {
        Some(CanaryConfig {
            pool: pool.into(),
            percent,
            sticky: Sticky::Ip,
        })
    }

    /// A canary set through the state is in the snapshot and in the file (comments kept); a
    /// switch ends it in both; refusals name the reason.
    #[tokio::test]
    async fn canary_written_back_and_ended_by_switch() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("teal.toml");
        std::fs::write(&path, TEXT).unwrap();
        let state = State::new(Config::load(&path).unwrap(), Arc::new(Metrics::new()));
        state
            .set_canary(canary("green", 25), "test", false)
            .await
            .unwrap();
        let snap = state.load();
        let live = snap.canary.as_ref().unwrap();
        assert_eq!((&*live.pool.name, live.percent), ("green", 25));
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("# live colour\n"), "{text}");
        let reread = Config::load(&path).unwrap();
        assert_eq!(reread.canary, canary("green", 25));

        let e = state.set_canary(canary("blue", 5), "test", false).await;
        assert!(matches!(e, Err(CanaryError::ActivePool(_))), "{e:?}");
        let e = state.set_canary(canary("red", 5), "test", false).await;
        assert!(matches!(e, Err(CanaryError::UnknownPool { .. })), "{e:?}");

        state.switch(Some("green"), "test", true).await.unwrap();
        assert!(state.load().canary.is_none());
        let reread = Config::load(&path).unwrap();
        assert_eq!((reread.active.as_str(), reread.canary), ("green", None));

        state
            .set_canary(canary("blue", 10), "test", false)
            .await
            .unwrap();
        state
            .set_canary(canary("blue", 0), "test", false)
            .await
            .unwrap();
        assert!(state.load().canary.is_none());
        assert_eq!(Config::load(&path).unwrap().canary, None);
    }
}
