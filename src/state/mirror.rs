//! Admin changes of `[mirror]`, the same way as `[canary]` ([`super::delivery`]): validated
//! against the live snapshot, applied as a new snapshot with the same active pool, written back
//! into the config file, under the one writer lock.
//!
//! A switch leaves `[mirror]` alone. When the mirror pool becomes the active one, mirroring rests
//! (the snapshot has none: copies of live traffic to the live pool would only double its load)
//! and resumes by itself when another pool is active again; the file keeps the table either way,
//! so it stays valid.

use tracing::info;

use super::delivery::Edited;
use super::persist::set_table;
use super::{pool_names, Snapshot, State};
use crate::config::{Config, MirrorConfig};

/// Why a mirror change was refused.
#[derive(Debug, thiserror::Error)]
pub enum MirrorError {
    /// The pool does not exist.
    #[error("no pool named {name:?}; pools: {pools}")]
    UnknownPool {
        /// The requested name.
        name: String,
        /// The pools there are, comma-separated.
        pools: String,
    },
    /// The pool is the active one.
    #[error("{0:?} is the active pool; mirroring copies live traffic to another pool")]
    ActivePool(String),
    /// The percent is not 0-100.
    #[error("percent {0} is not from 0 to 100")]
    Percent(i64),
    /// `max_in_flight` is 0.
    #[error("max_in_flight must be at least 1")]
    MaxInFlight,
    /// The change could not be committed to the cluster's store.
    #[error(transparent)]
    Store(#[from] super::StoreError),
}

impl State {
    /// Sets mirroring (`None` ends it) and writes `[mirror]` into the config file.
    pub async fn set_mirror(
        &self,
        mirror: Option<MirrorConfig>,
        who: &str,
    ) -> Result<Edited, MirrorError> {
        let mut writer = self.writer_for_change().await;
        let cur = self.load();
        if let Some(m) = &mirror {
            check_mirror(&cur, m)?;
        }
        let config = Config {
            mirror: mirror.clone(),
            ..(*cur.config).clone()
        };
        let edited = self
            .apply_edit(&mut writer, &cur, config, "mirror", |doc| {
                set_table(doc, "mirror", mirror.as_ref())
            })
            .await?;
        // A new comparison starts.
        self.metrics.mirror_reset();
        let text = match &mirror {
            Some(m) => {
                info!(pool = %m.pool, percent = m.percent, methods = ?m.methods, max_body = m.max_body, max_in_flight = m.max_in_flight, by = who, generation = edited.generation, "mirroring set");
                format!(
                    "mirroring {}% of live traffic to {} (by {who})",
                    m.percent, m.pool
                )
            }
            None => {
                info!(by = who, generation = edited.generation, "mirroring ended");
                format!("mirroring ended (by {who})")
            }
        };
        self.events.record(crate::events::Kind::Mirror, text);
        Ok(edited)
    }
}

fn check_mirror(cur: &Snapshot, m: &MirrorConfig) -> Result<(), MirrorError> {
    let Some(pool) = cur.pool(&m.pool) else {
        return Err(MirrorError::UnknownPool {
            name: m.pool.clone(),
            pools: pool_names(cur),
        });
    };
    if pool.name == cur.active.name {
        return Err(MirrorError::ActivePool(m.pool.clone()));
    }
    if m.percent > 100 {
        return Err(MirrorError::Percent(m.percent.into()));
    }
    if m.max_in_flight == 0 {
        return Err(MirrorError::MaxInFlight);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;
    use std::sync::Arc;

    const TEXT: &str = "# live colour\nactive = \"blue\"\n\n[pools.blue]\nservers = [\"127.0.0.1:1\"]\n\n[pools.green]\nservers = [\"127.0.0.1:2\"]\n";

    /// Mirroring set through the state is in the snapshot and in the file (comments kept); it
    /// rests while its pool is active and resumes after a switch back; refusals name the reason.
    #[tokio::test]
    async fn mirror_written_back_rests_while_active() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("teal.toml");
        std::fs::write(&path, TEXT).unwrap();
        let state = State::new(Config::load(&path).unwrap(), Arc::new(Metrics::new()));
        let mut m = MirrorConfig::new("green");
        m.percent = 50;
        state.set_mirror(Some(m.clone()), "test").await.unwrap();
        let live = state.load();
        let mirror = live.mirror.as_ref().unwrap();
        assert_eq!((&*mirror.pool.name, mirror.config.percent), ("green", 50));
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("# live colour\n"), "{text}");
        assert_eq!(Config::load(&path).unwrap().mirror, Some(m.clone()));

        let e = state
            .set_mirror(Some(MirrorConfig::new("blue")), "test")
            .await;
        assert!(matches!(e, Err(MirrorError::ActivePool(_))), "{e:?}");
        let e = state
            .set_mirror(Some(MirrorConfig::new("red")), "test")
            .await;
        assert!(matches!(e, Err(MirrorError::UnknownPool { .. })), "{e:?}");

        state.switch(Some("green"), "test", true).await.unwrap();
        assert!(state.load().mirror.is_none(), "no copies to the live pool");
        let reread = Config::load(&path).unwrap();
        assert_eq!(
            (reread.active.as_str(), reread.mirror),
            ("green", Some(m.clone()))
        );
        state.switch(Some("blue"), "test", true).await.unwrap();
        assert!(
            state.load().mirror.is_some(),
            "resumes with green idle again"
        );

        state.set_mirror(None, "test").await.unwrap();
        assert!(state.load().mirror.is_none());
        assert_eq!(Config::load(&path).unwrap().mirror, None);
    }
}
