//! The `[rollout]` table's one writer: the rollout controller ([`crate::rollout`]) records the
//! step in force here, so a restarted teal resumes it, and removes the table when the rollout
//! ends. The canary split of each step is set through [`State::set_canary`].

use std::sync::Arc;

use tracing::debug;

use super::delivery::Edited;
use super::persist::{persist_edit, set_table};
use super::{Persisted, Snapshot, State};
use crate::config::{Config, RolloutConfig};

impl State {
    /// Sets (or with `None` removes) `[rollout]` in the running config and the config file.
    /// Nothing is checked here: the controller validated the plan when it started.
    pub async fn set_rollout(&self, rollout: Option<RolloutConfig>, who: &str) -> Edited {
        let mut writer = self.writer.lock().await;
        let cur = self.load();
        let config = Config {
            rollout: rollout.clone(),
            ..(*cur.config).clone()
        };
        let generation = cur.generation + 1;
        let next = Snapshot::build(
            Arc::new(config),
            &cur.active.name,
            Some(&cur),
            generation,
            &self.metrics,
        );
        self.publish(next);
        let persisted = match cur.config.path.as_deref() {
            Some(path) => persist_edit(path, "rollout", &mut writer, |doc| {
                set_table(doc, "rollout", rollout.as_ref())
            }),
            None => Persisted::NoFile,
        };
        debug!(
            by = who,
            generation,
            step = rollout.as_ref().map(|r| r.step),
            "rollout table written"
        );
        Edited {
            generation,
            persisted,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;
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
        let edited = state.set_rollout(Some(plan.clone()), "test").await;
        assert_eq!(edited.persisted, Persisted::Config);
        assert_eq!(state.load().config.rollout.as_ref(), Some(&plan));
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("# live colour\n"), "{text}");
        assert_eq!(Config::load(&path).unwrap().rollout, Some(plan));
        state.set_rollout(None, "test").await;
        assert_eq!(state.load().config.rollout, None);
        assert_eq!(Config::load(&path).unwrap().rollout, None);
    }
}
