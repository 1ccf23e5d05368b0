//! The automated rollout: one controller per process walks a pool through canary steps, judges
//! each step on the canary pool's own counters, and rolls back or switches by itself.
//!
//! - [`Rollouts::start`] checks the plan against the live snapshot (400 for an unknown pool or the
//!   active one, 409 while another rollout runs or when the pool is not ready, unless forced),
//!   writes `[rollout]` (step 0) and sets the canary to the first step before it answers.
//! - For each step the controller waits `interval`, then judges the canary pool's
//!   [`crate::tally::Tally`] over that window alone ([`verdict::judge`]): fewer than
//!   `min_requests` extends the window by another interval (accumulating). A breach ends the canary
//!   at once (`rolled_back`), and so does the pool turning unready (checked several times a
//!   second: a pool seen ready during the rollout that stops being ready). Passing a step writes
//!   the next step into `[rollout]` and sets the next canary percent; passing the last switches to
//!   the pool (which ends the canary): `done`.
//! - An abort ([`Rollouts::abort`]) ends the canary: `aborted`.
//! - Someone else's change is detected on the snapshot, not by hooks in the endpoints: whenever a
//!   new snapshot is published during a step, the controller checks that the active pool, the
//!   canary (pool and percent) and the `[rollout]` table are still what it set. A `POST /switch`, a
//!   `POST /canary`/`DELETE /canary`, or a file edit of `[canary]` or `[rollout]` therefore aborts
//!   the rollout (`aborted`, the reason says what changed) and the new state is left as the other
//!   party made it.
//! - `[rollout]` is removed from the config file when the rollout ends, whatever the outcome.
//! - At startup ([`Rollouts::spawn`]) a `[rollout]` in the config resumes at its step with a fresh
//!   window. If its pool is already active (teal stopped between the final switch and the removal
//!   of the table), the rollout is finished as `done`.
//!
//! Every step, verdict and ending is one `info!` line (target `teal::rollout`) and an entry in
//! the status' `events`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde_json::{json, Value};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::config::{format_rate, CanaryConfig, RolloutConfig, Sticky};
use crate::state::{ready, CanaryError, Snapshot, State, StepError};
use crate::tally::Counts;

pub mod verdict;

use verdict::{judge, millis, percent, Verdict};

/// Events kept in the status; a rollout has a few per step.
const MAX_EVENTS: usize = 1000;

/// Where a rollout is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// None has run since teal started.
    Idle,
    /// Walking the steps.
    Running,
    /// Passed every step; the pool is active.
    Done,
    /// A breach or an unready pool ended the canary.
    RolledBack,
    /// Aborted by the operator or by someone else's switch or canary change.
    Aborted,
}

impl Phase {
    /// Every phase, for the state-set gauge.
    pub const ALL: [Phase; 5] = [
        Phase::Idle,
        Phase::Running,
        Phase::Done,
        Phase::RolledBack,
        Phase::Aborted,
    ];

    /// The name the API, the CLI and the metrics use.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Idle => "idle",
            Phase::Running => "running",
            Phase::Done => "done",
            Phase::RolledBack => "rolled_back",
            Phase::Aborted => "aborted",
        }
    }
}

/// The last judged window of the canary pool.
#[derive(Debug, Clone, Default)]
pub struct Window {
    /// Requests routed to the pool in the window.
    pub requests: u64,
    /// Of those, status >= 500 (teal's 502/504 included).
    pub errors: u64,
    /// The p99 latency (upper bound of its bucket).
    pub p99: Option<Duration>,
}

/// The state of the current (or last) rollout.
#[derive(Debug, Clone)]
pub struct Status {
    /// Where it is.
    pub phase: Phase,
    /// The plan, with `step` the step in force.
    pub plan: Option<RolloutConfig>,
    /// Why it ended, when it did not end `done`.
    pub reason: Option<String>,
    /// The last judged window.
    pub window: Option<Window>,
    /// When it started (or resumed).
    pub started: Option<SystemTime>,
    /// When anything last changed.
    pub updated: Option<SystemTime>,
    /// Every step, verdict and ending so far: (when, text).
    pub events: Vec<(SystemTime, String)>,
}

impl Status {
    fn idle() -> Status {
        Status {
            phase: Phase::Idle,
            plan: None,
            reason: None,
            window: None,
            started: None,
            updated: None,
            events: Vec::new(),
        }
    }

    /// The `GET /rollout` document.
    pub fn to_json(&self) -> Value {
        let time =
            |t: &Option<SystemTime>| t.map(|t| humantime::format_rfc3339_millis(t).to_string());
        let mut doc = json!({
            "state": self.phase.as_str(),
            "reason": self.reason,
            "started": time(&self.started),
            "updated": time(&self.updated),
            "events": self.events.iter().map(|(at, text)| json!({
                "at": humantime::format_rfc3339_millis(*at).to_string(),
                "text": text,
            })).collect::<Vec<_>>(),
        });
        if let Some(p) = &self.plan {
            doc["pool"] = json!(p.pool);
            doc["step"] = json!(p.step);
            doc["percent"] = json!(p.steps[p.step]);
            doc["steps"] = json!(p.steps);
            doc["interval"] = json!(humantime::format_duration(p.interval).to_string());
            doc["max_error_rate"] = json!(format_rate(p.max_error_rate));
            doc["max_p99"] = json!(p.max_p99.map(|d| humantime::format_duration(d).to_string()));
            doc["min_requests"] = json!(p.min_requests);
        }
        if let Some(w) = &self.window {
            let rate = if w.requests == 0 {
                0.0
            } else {
                w.errors as f64 / w.requests as f64
            };
            doc["window"] = json!({
                "requests": w.requests,
                "errors": w.errors,
                "error_rate": rate,
                "p99_ms": w.p99.map(|d| d.as_secs_f64() * 1000.0),
            });
        }
        doc
    }
}

/// Why a rollout request was refused.
#[derive(Debug, thiserror::Error)]
pub enum RolloutError {
    /// The pool does not exist, or is the active one, or the plan is malformed: 400.
    #[error("{0}")]
    Invalid(String),
    /// Another rollout runs, or there is none to abort: 409.
    #[error("{0}")]
    Conflict(String),
    /// The pool has no server ready and the start was not forced: 409.
    #[error("pool {0} has no healthy server; fix it or start the rollout with force")]
    Unhealthy(String),
}

/// How a run ended, before the controller acts on it.
enum End {
    /// Every step passed; the final switch is made if the state is still what the rollout set
    /// over the active pool given (none: the pool is already active, on resume).
    Done(Option<Arc<str>>),
    RolledBack(String),
    /// The reason, and whether the canary is to be ended (not when someone else changed it).
    Aborted(String, bool),
}

/// What a run carries from step to step besides the plan.
struct Run {
    /// The canary's stickiness, kept from the canary in force when the rollout started.
    sticky: Sticky,
    /// Cancelled by [`Rollouts::abort`].
    token: CancellationToken,
    /// Whether the pool has been ready during the rollout (a resumed rollout waits for its
    /// health checks before "turned unhealthy" can be said).
    seen_ready: bool,
    /// The active pool when the rollout started; another one means someone switched.
    active: Arc<str>,
}

/// The rollout controller of one teal process.
pub struct Rollouts {
    state: Arc<State>,
    status: watch::Sender<Status>,
    /// The running rollout's abort switch and the reason given for it.
    abort: Mutex<(CancellationToken, Option<String>)>,
    /// Serialises starts.
    starting: tokio::sync::Mutex<()>,
}

impl Rollouts {
    /// The controller over `state`; resumes a rollout the config holds (see the module doc).
    /// Needs a tokio runtime.
    pub fn spawn(state: Arc<State>) -> Arc<Rollouts> {
        let rollouts = Arc::new(Rollouts {
            state,
            status: watch::Sender::new(Status::idle()),
            abort: Mutex::new((CancellationToken::new(), None)),
            starting: tokio::sync::Mutex::new(()),
        });
        rollouts.publish_metrics(&Status::idle());
        if let Some(plan) = rollouts.state.load().config.rollout.clone() {
            let token = rollouts.arm();
            rollouts.set_running(&plan, "resumed");
            let me = rollouts.clone();
            tokio::spawn(async move { me.resume(plan, token).await });
        }
        rollouts
    }

    /// The current (or last) rollout's state.
    pub fn status(&self) -> Status {
        self.status.borrow().clone()
    }

    /// A receiver that sees every change of the status.
    pub fn subscribe(&self) -> watch::Receiver<Status> {
        self.status.subscribe()
    }

    /// Starts rolling `plan.pool` out (from its first step); answers once the first step is in
    /// force.
    pub async fn start(
        self: &Arc<Self>,
        mut plan: RolloutConfig,
        who: &str,
        force: bool,
    ) -> Result<Status, RolloutError> {
        let _one = self.starting.lock().await;
        let cur = self.status();
        if let (Phase::Running, Some(p)) = (cur.phase, &cur.plan) {
            return Err(RolloutError::Conflict(format!(
                "a rollout of {} is running (step {} of {}); abort it first",
                p.pool,
                p.step + 1,
                p.steps.len()
            )));
        }
        let snap = self.state.load();
        check_target(&snap, &plan.pool, force)?;
        plan.step = 0;
        let sticky = sticky(&snap);
        let active = snap.active.name.clone();
        // `[rollout]` and the first canary at once, and only over the active pool checked.
        let switched = |s: &Snapshot| {
            (s.active.name != active).then(|| {
                format!(
                    "the active pool was switched to {} meanwhile",
                    s.active.name
                )
            })
        };
        let first = canary(&plan, sticky);
        if let Err(e) = self
            .state
            .set_rollout_step(plan.clone(), first, force, switched)
            .await
        {
            return Err(match e {
                StepError::Canary(CanaryError::Unhealthy(pool)) => RolloutError::Unhealthy(pool),
                StepError::Changed(why) => RolloutError::Conflict(why),
                e => RolloutError::Invalid(e.to_string()),
            });
        }
        let token = self.arm();
        self.set_running(&plan, &format!("started by {who}"));
        self.step_event(&plan);
        let me = self.clone();
        let seen_ready = snap.pool(&plan.pool).is_some_and(|p| ready(&snap, p));
        let run = Run {
            sticky,
            token,
            seen_ready,
            active: snap.active.name.clone(),
        };
        tokio::spawn(async move { me.run(plan, run).await });
        Ok(self.status())
    }

    /// Aborts the running rollout: the canary ends, state `aborted`. Answers with the final state
    /// (or the state after 5 s, should the controller be slow to act).
    pub async fn abort(&self, who: &str) -> Result<Status, RolloutError> {
        if !self.running() {
            return Err(RolloutError::Conflict("no rollout is running".into()));
        }
        let mut changes = self.subscribe();
        {
            let mut abort = self.abort.lock().unwrap_or_else(|e| e.into_inner());
            abort.1 = Some(format!("aborted by {who}"));
            abort.0.cancel();
        }
        let ended = changes.wait_for(|s| s.phase != Phase::Running);
        let _ = tokio::time::timeout(Duration::from_secs(5), ended).await;
        Ok(self.status())
    }

    fn running(&self) -> bool {
        self.status.borrow().phase == Phase::Running
    }

    /// A fresh abort switch for a new run.
    fn arm(&self) -> CancellationToken {
        let mut abort = self.abort.lock().unwrap_or_else(|e| e.into_inner());
        *abort = (CancellationToken::new(), None);
        abort.0.clone()
    }

    fn set_running(&self, plan: &RolloutConfig, how: &str) {
        let now = SystemTime::now();
        self.update(|s| {
            *s = Status {
                phase: Phase::Running,
                plan: Some(plan.clone()),
                started: Some(now),
                ..Status::idle()
            }
        });
        self.event(
            plan,
            format!(
                "rollout of {} {how}: steps {:?}, interval {}, max error rate {}{}, min {} requests",
                plan.pool,
                plan.steps,
                humantime::format_duration(plan.interval),
                format_rate(plan.max_error_rate),
                plan.max_p99
                    .map(|d| format!(", max p99 {}", millis(d)))
                    .unwrap_or_default(),
                plan.min_requests
            ),
        );
    }

    /// A resumed rollout: sets its step's canary again, then runs as usual.
    async fn resume(self: Arc<Self>, plan: RolloutConfig, token: CancellationToken) {
        let snap = self.state.load();
        if snap.active.name.as_ref() == plan.pool {
            let text = format!(
                "{} is already active: the rollout had switched before teal stopped",
                plan.pool
            );
            return self.finish(&plan, End::Done(None), Some(text)).await;
        }
        let sticky = sticky(&snap);
        let want = canary(&plan, sticky);
        let same = snap
            .config
            .canary
            .as_ref()
            .is_some_and(|c| c.pool == want.pool && c.percent == want.percent);
        if !same {
            if let Err(e) = self.state.set_canary(Some(want), "rollout", true).await {
                let reason = format!("could not set the canary on resume: {e}");
                return self.finish(&plan, End::RolledBack(reason), None).await;
            }
        }
        self.step_event(&plan);
        let run = Run {
            sticky,
            token,
            seen_ready: false,
            active: snap.active.name.clone(),
        };
        self.run(plan, run).await;
    }

    /// Walks the steps from `plan.step` and acts on how that ends.
    async fn run(self: Arc<Self>, mut plan: RolloutConfig, mut run: Run) {
        let end = loop {
            match self.watch_step(&plan, &mut run).await {
                Ok(()) => {}
                Err(end) => break end,
            }
            if plan.step + 1 == plan.steps.len() {
                break End::Done(Some(run.active.clone()));
            }
            let next = RolloutConfig {
                step: plan.step + 1,
                ..plan.clone()
            };
            let percent = canary(&next, run.sticky);
            // Someone else's change since the step was last looked at wins, however late.
            let changed = |s: &Snapshot| foreign(s, &plan, &run.active);
            match self
                .state
                .set_rollout_step(next.clone(), percent, true, changed)
                .await
            {
                Ok(_) => plan = next,
                Err(StepError::Changed(why)) => break End::Aborted(why, false),
                Err(e) => {
                    break End::RolledBack(format!("the next step's canary was refused: {e}"))
                }
            }
            self.update(|s| s.plan = Some(plan.clone()));
            self.step_event(&plan);
        };
        self.finish(&plan, end, None).await;
    }

    /// Waits out one step (extended while under `min_requests`) and judges it. `Ok` when it
    /// passed; the ending otherwise.
    async fn watch_step(&self, plan: &RolloutConfig, run: &mut Run) -> Result<(), End> {
        let mut changes = self.state.subscribe();
        changes.borrow_and_update();
        let snap = self.state.load();
        if let Some(why) = foreign(&snap, plan, &run.active) {
            return Err(End::Aborted(why, false));
        }
        let Some(pool) = snap.pool(&plan.pool).cloned() else {
            return Err(End::RolledBack(format!("pool {} is gone", plan.pool)));
        };
        let base = pool.tally().read();
        let tick = (plan.interval / 4).min(Duration::from_secs(1));
        let mut deadline = Instant::now() + plan.interval;
        let mut extended = false;
        loop {
            let wake = (Instant::now() + tick).min(deadline);
            tokio::select! {
                _ = run.token.cancelled() => return Err(End::Aborted(self.abort_reason(), true)),
                _ = changes.changed() => {
                    if let Some(why) = foreign(&self.state.load(), plan, &run.active) {
                        return Err(End::Aborted(why, false));
                    }
                    continue;
                }
                _ = tokio::time::sleep_until(wake) => {}
            }
            let snap = self.state.load();
            let is_ready = snap.pool(&plan.pool).is_some_and(|p| ready(&snap, p));
            if is_ready {
                run.seen_ready = true;
            } else if run.seen_ready {
                let reason = format!("pool {} turned unhealthy (no server ready)", plan.pool);
                return Err(End::RolledBack(reason));
            }
            if Instant::now() < deadline {
                continue;
            }
            let window = pool.tally().read().since(&base);
            self.set_window(&window);
            match judge(&window, plan) {
                Verdict::TooFew => {
                    if !extended {
                        self.event(
                            plan,
                            format!(
                                "step {}: {} of {} requests so far; waiting longer",
                                plan.step + 1,
                                window.requests,
                                plan.min_requests
                            ),
                        );
                        extended = true;
                    }
                    deadline += plan.interval;
                }
                Verdict::Pass => {
                    self.event(
                        plan,
                        format!("step {} passed: {}", plan.step + 1, describe(&window)),
                    );
                    return Ok(());
                }
                Verdict::Breach(reason) => return Err(End::RolledBack(reason)),
            }
        }
    }

    fn abort_reason(&self) -> String {
        let abort = self.abort.lock().unwrap_or_else(|e| e.into_inner());
        abort.1.clone().unwrap_or_else(|| "aborted".into())
    }

    /// Acts on the ending: the final switch, or the end of the canary; then removes `[rollout]`.
    async fn finish(&self, plan: &RolloutConfig, end: End, note: Option<String>) {
        // Whether the canary ends with `[rollout]` (one write: see `State::end_rollout`).
        let mut end_canary = false;
        let (phase, reason, text) = match end {
            End::Done(active) => match self.final_switch(plan, active).await {
                Ok(_) => {
                    let text = note.unwrap_or_else(|| format!("switched to {}", plan.pool));
                    (
                        Phase::Done,
                        None,
                        format!("rollout of {} done: {text}", plan.pool),
                    )
                }
                Err(StepError::Changed(why)) => {
                    let text = format!("rollout of {} aborted at its end: {why}", plan.pool);
                    (Phase::Aborted, Some(why), text)
                }
                Err(e) => {
                    end_canary = true;
                    let reason = format!("the final switch was refused: {e}");
                    let text = format!("rollout of {} rolled back: {reason}", plan.pool);
                    (Phase::RolledBack, Some(reason), text)
                }
            },
            End::RolledBack(reason) => {
                end_canary = true;
                let text = format!("rollout of {} rolled back at step {} ({}%): {reason}; all traffic on the active pool", plan.pool, plan.step + 1, plan.steps[plan.step]);
                (Phase::RolledBack, Some(reason), text)
            }
            End::Aborted(reason, ours) => {
                end_canary = ours;
                let text = format!(
                    "rollout of {} aborted at step {}: {reason}",
                    plan.pool,
                    plan.step + 1
                );
                (Phase::Aborted, Some(reason), text)
            }
        };
        self.end_rollout(end_canary).await;
        self.event(plan, text);
        self.update(|s| {
            s.phase = phase;
            s.reason = reason;
        });
    }

    /// Removes `[rollout]` (and the canary with `end_canary`). In cluster mode the canary's end
    /// is a write to the store, retried for ten seconds while the store cannot be reached; after
    /// that the split stays in the store, and the log says how to end it.
    async fn end_rollout(&self, end_canary: bool) {
        for attempt in 1..=10 {
            match self.state.end_rollout(end_canary).await {
                Ok(_) => return,
                Err(e) if attempt == 10 => {
                    tracing::error!(error = %e, "the rollout's canary could not be ended in the cluster's store; end it with `teal canary off`");
                }
                Err(e) => {
                    tracing::warn!(error = %e, attempt, "ending the rollout: retrying in a second");
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                }
            }
        }
    }

    /// The switch to the pool after the last step: only if nothing changed over `active`.
    async fn final_switch(
        &self,
        plan: &RolloutConfig,
        active: Option<Arc<str>>,
    ) -> Result<crate::state::Switched, StepError> {
        match active {
            Some(active) => {
                let changed = |s: &Snapshot| foreign(s, plan, &active);
                self.state.rollout_switch(&plan.pool, changed).await
            }
            None => Ok(self
                .state
                .switch(Some(&plan.pool), "rollout", false)
                .await?),
        }
    }

    fn step_event(&self, plan: &RolloutConfig) {
        let text = format!(
            "step {} of {}: {}% of default-route clients to {} for {}",
            plan.step + 1,
            plan.steps.len(),
            plan.steps[plan.step],
            plan.pool,
            humantime::format_duration(plan.interval)
        );
        self.event(plan, text);
    }

    /// One log line and one status event.
    fn event(&self, plan: &RolloutConfig, text: String) {
        info!(target: "teal::rollout", pool = %plan.pool, step = plan.step, percent = plan.steps[plan.step], "{text}");
        let events = self.state.events();
        events.record(crate::events::Kind::Rollout, text.clone());
        let now = SystemTime::now();
        self.update(|s| {
            if s.events.len() < MAX_EVENTS {
                s.events.push((now, text));
            }
        });
    }

    fn set_window(&self, w: &Counts) {
        let window = Window {
            requests: w.requests,
            errors: w.errors,
            p99: w.p99(),
        };
        self.update(|s| s.window = Some(window));
    }

    fn update(&self, f: impl FnOnce(&mut Status)) {
        self.status.send_modify(|s| {
            f(s);
            s.updated = Some(SystemTime::now());
        });
        self.publish_metrics(&self.status.borrow());
    }

    fn publish_metrics(&self, s: &Status) {
        let step = s.plan.as_ref().map_or(0, |p| p.step as i64);
        self.state.metrics().rollout(s.phase.as_str(), step);
    }
}

/// The window in words: `1040 requests, error rate 0.2%, p99 12ms`.
fn describe(w: &Counts) -> String {
    let p99 = w.p99().map(millis).unwrap_or_else(|| "-".into());
    format!(
        "{} requests, error rate {}, p99 {p99}",
        w.requests,
        percent(w.error_rate())
    )
}

/// The canary of `plan`'s current step.
fn canary(plan: &RolloutConfig, sticky: Sticky) -> CanaryConfig {
    CanaryConfig {
        pool: plan.pool.clone(),
        percent: plan.steps[plan.step],
        sticky,
    }
}

/// The stickiness of the canary in force (or configured), else the default (cookie).
fn sticky(snap: &Snapshot) -> Sticky {
    snap.config
        .canary
        .as_ref()
        .map_or_else(Sticky::default, |c| c.sticky)
}

/// Whether `pool` may be rolled out: it exists, is not active, and is ready unless `force`d.
fn check_target(snap: &Snapshot, pool: &str, force: bool) -> Result<(), RolloutError> {
    let Some(p) = snap.pool(pool) else {
        let names: Vec<&str> = snap.pools.iter().map(|p| &*p.name).collect();
        return Err(RolloutError::Invalid(format!(
            "no pool named {pool:?}; pools: {}",
            names.join(", ")
        )));
    };
    if p.name == snap.active.name {
        return Err(RolloutError::Invalid(format!(
            "{pool:?} is already the active pool; roll out another pool"
        )));
    }
    if !force && !ready(snap, p) {
        return Err(RolloutError::Unhealthy(pool.to_string()));
    }
    Ok(())
}

/// What someone else changed, if the snapshot is no longer what the rollout set.
fn foreign(snap: &Snapshot, plan: &RolloutConfig, active: &str) -> Option<String> {
    if *snap.active.name != *active {
        return Some(format!(
            "the active pool was switched to {} during the rollout",
            snap.active.name
        ));
    }
    let percent = plan.steps[plan.step];
    match &snap.config.canary {
        Some(c) if c.pool == plan.pool && c.percent == percent => {}
        Some(c) => {
            return Some(format!(
                "the canary was changed to {}% of {} during the rollout",
                c.percent, c.pool
            ))
        }
        None => return Some("the canary was ended during the rollout".into()),
    }
    match &snap.config.rollout {
        Some(r) if r.pool == plan.pool => None,
        _ => Some("[rollout] was removed from the config file".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::metrics::Metrics;

    const TEXT: &str = "active = \"blue\"\n[pools.blue]\nservers = [\"127.0.0.1:1\"]\n[pools.green]\nservers = [\"127.0.0.1:2\"]\n[pools.red]\nservers = [\"127.0.0.1:3\"]\n";

    fn plan(steps: Vec<u8>) -> RolloutConfig {
        RolloutConfig {
            pool: "green".into(),
            steps,
            interval: Duration::from_millis(100),
            max_error_rate: 0.5,
            max_p99: None,
            min_requests: 1,
            step: 0,
        }
    }

    /// Starts a rollout of green with `steps`, lines `foreign` up behind the writer lock while
    /// the first step is judged, so that it lands at the very edge of the step (after the last
    /// look at the state, before the rollout's next write), and returns how the rollout ended.
    async fn at_step_edge<F>(steps: Vec<u8>, foreign: F) -> (Arc<State>, Status)
    where
        F: FnOnce(Arc<State>) -> tokio::task::JoinHandle<()>,
    {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("teal.toml");
        std::fs::write(&path, TEXT).unwrap();
        let state = Arc::new(State::new(
            Config::load(&path).unwrap(),
            Arc::new(Metrics::new()),
        ));
        let rollouts = Rollouts::spawn(state.clone());
        rollouts.start(plan(steps), "test", true).await.unwrap();
        let held = state.hold_writer().await;
        let change = foreign(state.clone());
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        let green = state.load().pool("green").unwrap().clone();
        green.tally().record(200, Duration::from_millis(1));
        let mut status = rollouts.subscribe();
        let passed = status.wait_for(|s| s.events.iter().any(|(_, t)| t.contains("passed")));
        tokio::time::timeout(Duration::from_secs(5), passed)
            .await
            .expect("step 1 passes")
            .unwrap();
        drop(held);
        change.await.unwrap();
        let ended = status.wait_for(|s| s.phase != Phase::Running);
        let _ = tokio::time::timeout(Duration::from_secs(1), ended).await;
        let end = rollouts.status();
        drop(dir);
        (state, end)
    }

    /// A `POST /canary` at the edge of a step aborts the rollout and stays as it was made; it
    /// was overwritten by the next step's canary, and the rollout went on.
    #[tokio::test]
    async fn canary_change_at_step_edge_aborts() {
        let (state, end) = at_step_edge(vec![10, 20, 30], |state| {
            tokio::spawn(async move {
                let c = CanaryConfig {
                    pool: "green".into(),
                    percent: 77,
                    sticky: Sticky::Cookie,
                };
                state.set_canary(Some(c), "operator", true).await.unwrap();
            })
        })
        .await;
        let canary = state.load().canary.as_ref().map(|c| c.percent);
        assert_eq!(
            (end.phase, canary),
            (Phase::Aborted, Some(77)),
            "{:?}",
            end.events
        );
        assert!(state.load().config.rollout.is_none());
    }

    /// A `POST /switch` at the edge of the last step wins and aborts the rollout; it was lost
    /// under the rollout's own final switch.
    #[tokio::test]
    async fn switch_at_last_step_edge_is_not_lost() {
        let (state, end) = at_step_edge(vec![10], |state| {
            tokio::spawn(async move {
                state.switch(Some("red"), "operator", true).await.unwrap();
            })
        })
        .await;
        let snap = state.load();
        assert_eq!(
            (end.phase, &*snap.active.name),
            (Phase::Aborted, "red"),
            "{:?}",
            end.events
        );
        assert!(snap.canary.is_none() && snap.config.rollout.is_none());
    }

    /// A `POST /switch` at the edge of a middle step leaves no canary on after the rollout ends;
    /// the next step's canary was set on top of the new active pool and left there.
    #[tokio::test]
    async fn switch_at_step_edge_leaves_no_canary() {
        let (state, end) = at_step_edge(vec![10, 20, 30], |state| {
            tokio::spawn(async move {
                state.switch(Some("red"), "operator", true).await.unwrap();
            })
        })
        .await;
        let snap = state.load();
        assert_eq!(end.phase, Phase::Aborted, "{:?}", end.events);
        assert_eq!(&*snap.active.name, "red");
        assert!(snap.canary.is_none(), "{:?}", snap.canary);
        assert!(snap.config.rollout.is_none());
    }

    /// A rollback ends the canary and removes `[rollout]` in one write of the file: a teal
    /// stopped between the two found `[rollout]` without `[canary]` at its next start, resumed
    /// the rolled-back rollout and sent clients to the bad pool again.
    #[tokio::test]
    async fn rollback_leaves_no_half_written_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("teal.toml");
        std::fs::write(&path, TEXT).unwrap();
        let metrics = Arc::new(Metrics::new());
        let state = Arc::new(State::new(Config::load(&path).unwrap(), metrics.clone()));
        let rollouts = Rollouts::spawn(state.clone());
        rollouts
            .start(plan(vec![10, 20]), "test", true)
            .await
            .unwrap();
        let held = state.hold_writer().await;
        // The controller takes its window's base first.
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        let green = state.load().pool("green").unwrap().clone();
        green.tally().record(500, Duration::from_millis(1));
        // Judged (a breach): the controller now waits for the lock to end the canary.
        let mut status = rollouts.subscribe();
        let judged = status.wait_for(|s| s.window.is_some());
        tokio::time::timeout(Duration::from_secs(5), judged)
            .await
            .expect("judged")
            .unwrap();
        drop(held);
        // The lock is fair: this comes right after the controller's first write.
        let held = state.hold_writer().await;
        let text = std::fs::read_to_string(&path).unwrap();
        drop(held);
        // A teal started on the file as it was then (stopped at that moment).
        let restart = dir.path().join("restart.toml");
        std::fs::write(&restart, &text).unwrap();
        let again = Arc::new(State::new(Config::load(&restart).unwrap(), metrics));
        let _resumed = Rollouts::spawn(again.clone());
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
        assert!(
            again.load().canary.is_none(),
            "canary back on after a rollback:\n{text}"
        );
        let ended = status.wait_for(|s| s.phase != Phase::Running);
        let _ = tokio::time::timeout(Duration::from_secs(2), ended).await;
        assert_eq!(rollouts.status().phase, Phase::RolledBack);
    }
}
