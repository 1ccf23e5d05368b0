//! The `[rollout]` table's one writer: the rollout controller ([`crate::rollout`]) records the
//! step in force here, so a restarted teal resumes it, and removes the table when the rollout
//! ends. The canary split of each step is set through [`State::set_canary`].

use tracing::debug;

use super::delivery::{check_canary, CanaryError, Edited};
use super::persist::set_table;
use super::{Snapshot, State, SwitchError, Switched};
use crate::config::{CanaryConfig, Config, RolloutConfig};

/// Why a rollout's step or final switch was not made.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    /// Someone else changed the state the rollout set (the reason says what): nothing was
    /// written, their change stands.
    #[error("{0}")]
    Changed(String),
    /// The step's canary was refused.
    #[error(transparent)]
    Canary(#[from] CanaryError),
    /// The final switch was refused.
    #[error(transparent)]
    Switch(#[from] SwitchError),
    /// The change could not be committed to the cluster's store.
    #[error(transparent)]
    Store(#[from] super::StoreError),
}

impl State {
    /// Puts a rollout's step in force: `[rollout]` and `[canary]` in one snapshot and one write
    /// of the file, under the writer lock, and only if `changed` finds the live state still as
    /// the rollout left it (so a switch or canary change by someone else, however close to the
    /// step's edge, is never overwritten). `force` as for [`State::set_canary`].
    pub async fn set_rollout_step(
        &self,
        rollout: RolloutConfig,
        canary: CanaryConfig,
        force: bool,
        changed: impl FnOnce(&Snapshot) -> Option<String>,
    ) -> Result<Edited, StepError> {
        let mut writer = self.writer.lock().await;
        let cur = self.load();
        if let Some(why) = changed(&cur) {
            return Err(StepError::Changed(why));
        }
        check_canary(&cur, &canary, force)?;
        let config = Config {
            rollout: Some(rollout.clone()),
            canary: Some(canary.clone()),
            ..(*cur.config).clone()
        };
        let edited = self
            .apply_edit(&mut writer, &cur, config, "rollout", |doc| {
                set_table(doc, "rollout", Some(&rollout))?;
                set_table(doc, "canary", Some(&canary))
            })
            .await?;
        tracing::info!(pool = %canary.pool, percent = canary.percent, step = rollout.step, by = "rollout", generation = edited.generation, "rollout step set");
        Ok(edited)
    }

    /// Ends a rollout: removes `[rollout]`, and `[canary]` too when `end_canary`, in one
    /// snapshot and one write of the file (a teal stopped in between must not find `[rollout]`
    /// without its canary and resume a rollout that was rolled back).
    pub async fn end_rollout(&self, end_canary: bool) -> Result<Edited, super::StoreError> {
        let mut writer = self.writer.lock().await;
        let cur = self.load();
        let canary = if end_canary {
            None
        } else {
            cur.config.canary.clone()
        };
        let config = Config {
            rollout: None,
            canary,
            ..(*cur.config).clone()
        };
        let edited = self
            .apply_edit(&mut writer, &cur, config, "rollout", |doc| {
                doc.remove("rollout");
                if end_canary {
                    doc.remove("canary");
                }
                Ok(())
            })
            .await?;
        tracing::info!(
            by = "rollout",
            generation = edited.generation,
            end_canary,
            "rollout ended"
        );
        Ok(edited)
    }

    /// A rollout's final switch to `pool`, under the writer lock, only if `changed` finds the
    /// live state still as the rollout left it.
    pub async fn rollout_switch(
        &self,
        pool: &str,
        changed: impl FnOnce(&Snapshot) -> Option<String>,
    ) -> Result<Switched, StepError> {
        let mut writer = self.writer.lock().await;
        if let Some(why) = changed(&self.load()) {
            return Err(StepError::Changed(why));
        }
        Ok(self
            .switch_locked(&mut writer, Some(pool), "rollout", false)
            .await?)
    }

    /// Sets (or with `None` removes) `[rollout]` in the running config and the config file.
    /// Nothing is checked here: the controller validated the plan when it started.
    pub async fn set_rollout(
        &self,
        rollout: Option<RolloutConfig>,
        who: &str,
    ) -> Result<Edited, super::StoreError> {
        let mut writer = self.writer.lock().await;
        let cur = self.load();
        let config = Config {
            rollout: rollout.clone(),
            ..(*cur.config).clone()
        };
        let edited = self
            .apply_edit(&mut writer, &cur, config, "rollout", |doc| {
                set_table(doc, "rollout", rollout.as_ref())
            })
            .await?;
        debug!(
            by = who,
            generation = edited.generation,
            step = rollout.as_ref().map(|r| r.step),
            "rollout table written"
        );
        Ok(edited)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;
    use crate::state::Persisted;
    use std::sync::Arc;
    use std::time::Duration;

    const TEXT: &str = "# live colour\nactive = \"blue\"\n\n[pools.blue]\nservers = [\"127.0.0.1:1\"]\n\n[pools.green]\nservers = [\"127.0.0.1:2\"]\n";

    /// The table is written with the step, read back equal, and removed; comments stay.
    #[tokio::test]
    async fn rollout_written_back_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("teal.toml");
        std::fs::write(&path, TEXT).unwrap();
        let state = State::new(Config::load(&path).unwrap(), Arc::new(Metrics::new()));
        let plan = RolloutConfig {
            pool: "green".into(),
            steps: vec![5, 50, 100],
            interval: Duration::from_secs(60),
            max_error_rate: 0.01,
            max_p99: None,
            min_requests: 100,
            step: 1,
        };
        let edited = state.set_rollout(Some(plan.clone()), "test").await.unwrap();
        assert_eq!(edited.persisted, Persisted::Config);
        assert_eq!(state.load().config.rollout.as_ref(), Some(&plan));
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("# live colour\n"), "{text}");
        assert_eq!(Config::load(&path).unwrap().rollout, Some(plan));
        state.set_rollout(None, "test").await.unwrap();
        assert_eq!(state.load().config.rollout, None);
        assert_eq!(Config::load(&path).unwrap().rollout, None);
    }
}
