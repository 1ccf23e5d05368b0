//! The metrics of mirroring: `teal_mirror_requests_total{pool,outcome}`,
//! `teal_mirror_duration_seconds{pool}`, the process-wide count of copies under way, and a window
//! of the latest copies for `GET /status`.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use serde::Serialize;

use crate::sync::lock;

/// How many of the latest copies `GET /status` summarises.
pub const WINDOW: usize = 1000;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    pool: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolLabel {
    pool: String,
}

/// How one copy went, compared with the live request it copied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The mirror's status class was the live response's.
    Same,
    /// It was another class.
    Differ,
    /// The mirror gave no answer: connect failure, timeout, a malformed or cut-off response.
    Error,
    /// Not sent: `max_in_flight` copies were under way.
    Dropped,
}

impl Outcome {
    const ALL: [Outcome; 4] = [
        Outcome::Same,
        Outcome::Differ,
        Outcome::Error,
        Outcome::Dropped,
    ];

    /// The `outcome` label.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Same => "same",
            Outcome::Differ => "differ",
            Outcome::Error => "error",
            Outcome::Dropped => "dropped",
        }
    }
}

/// One compared copy, as the window keeps it.
#[derive(Clone, Copy, Debug)]
pub struct Compared {
    /// The live response's status (teal's own for a failure, 499 when the client left).
    pub live_status: u16,
    /// From sending the live request to its response head.
    pub live_time: Duration,
    /// The mirror's status and time to its response head; `None` for an error.
    pub mirror: Option<(u16, Duration)>,
}

impl Compared {
    /// Same or differ (or error), by status class.
    pub fn outcome(&self) -> Outcome {
        match self.mirror {
            None => Outcome::Error,
            Some((status, _)) if status / 100 == self.live_status / 100 => Outcome::Same,
            Some(_) => Outcome::Differ,
        }
    }
}

/// The mirror families and the state every worker shares.
pub(super) struct MirrorFamilies {
    requests: Family<OutcomeLabels, Counter>,
    duration: Family<PoolLabel, Histogram, fn() -> Histogram>,
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    in_flight: AtomicUsize,
    window: Mutex<VecDeque<Compared>>,
}

impl MirrorFamilies {
    pub(super) fn register(registry: &mut Registry) -> MirrorFamilies {
        let requests = Family::<OutcomeLabels, Counter>::default();
        let duration = Family::<PoolLabel, Histogram, fn() -> Histogram>::new_with_constructor(
            super::new_histogram as fn() -> Histogram,
        );
        registry.register(
            "mirror_requests",
            "Mirrored copies of requests, by mirror pool and outcome (same or differ in status class from the live response, error, or dropped past max_in_flight)",
            requests.clone(),
        );
        registry.register(
            "mirror_duration_seconds",
            "Time from sending a mirrored copy to its response head, by mirror pool",
            duration.clone(),
        );
        MirrorFamilies {
            requests,
            duration,
            shared: Arc::default(),
        }
    }

    /// The pre-resolved handles for mirror pool `pool`.
    pub(super) fn pool(&self, pool: &str) -> MirrorMetrics {
        let outcomes = Outcome::ALL.map(|outcome| {
            self.requests
                .get_or_create(&OutcomeLabels {
                    pool: pool.to_string(),
                    outcome: outcome.as_str(),
                })
                .clone()
        });
        let duration = self
            .duration
            .get_or_create(&PoolLabel { pool: pool.into() })
            .clone();
        MirrorMetrics {
            outcomes,
            duration,
            shared: self.shared.clone(),
        }
    }

    pub(super) fn summary(&self) -> MirrorSummary {
        let window = lock(&self.shared.window);
        summarise(window.iter(), self.shared.in_flight.load(Ordering::Relaxed))
    }

    pub(super) fn reset(&self) {
        lock(&self.shared.window).clear();
    }
}

/// One mirror pool's counters, resolved when the snapshot is built.
#[derive(Clone, Debug)]
pub struct MirrorMetrics {
    outcomes: [Counter; 4],
    duration: Histogram,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").finish_non_exhaustive()
    }
}

impl MirrorMetrics {
    /// A slot for one more copy, unless `max` are under way (then the copy is counted dropped).
    pub fn begin(&self, max: usize) -> Option<InFlightCopy> {
        let n = &self.shared.in_flight;
        let taken = n.fetch_update(Ordering::AcqRel, Ordering::Acquire, |cur| {
            (cur < max).then_some(cur + 1)
        });
        if taken.is_err() {
            self.outcomes[3].inc();
            return None;
        }
        Some(InFlightCopy(self.shared.clone()))
    }

    /// Counts one finished copy and keeps it in the window.
    pub fn record(&self, copy: Compared) {
        let outcome = copy.outcome();
        let at = Outcome::ALL.iter().position(|o| *o == outcome).unwrap_or(2);
        self.outcomes[at].inc();
        if let Some((_, time)) = copy.mirror {
            self.duration.observe(time.as_secs_f64());
        }
        let mut window = lock(&self.shared.window);
        if window.len() == WINDOW {
            window.pop_front();
        }
        window.push_back(copy);
    }
}

/// A copy counted under way until dropped.
#[derive(Debug)]
pub struct InFlightCopy(Arc<Shared>);

impl Drop for InFlightCopy {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What `GET /status` says of the latest copies (at most [`WINDOW`]).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct MirrorSummary {
    /// Copies in the window (dropped ones are not: they were never sent).
    pub copies: usize,
    /// Copies under way now.
    pub in_flight: usize,
    /// Share (0-1) whose status class was the live one's.
    pub same: f64,
    /// Share where the mirror answered 5xx and the live response was not 5xx.
    pub mirror_5xx: f64,
    /// Share where the mirror gave no answer.
    pub error: f64,
    /// Live response head times, seconds.
    pub live_p50: f64,
    /// 99th percentile of the live times.
    pub live_p99: f64,
    /// Mirror response head times (copies that got one), seconds.
    pub mirror_p50: f64,
    /// 99th percentile of the mirror times.
    pub mirror_p99: f64,
}

fn summarise<'a>(copies: impl Iterator<Item = &'a Compared>, in_flight: usize) -> MirrorSummary {
    let (mut n, mut same, mut m5xx, mut error) = (0usize, 0usize, 0usize, 0usize);
    let (mut live, mut mirror) = (Vec::new(), Vec::new());
    for c in copies {
        n += 1;
        live.push(c.live_time.as_secs_f64());
        match c.outcome() {
            Outcome::Same => same += 1,
            Outcome::Error => error += 1,
            _ => {}
        }
        if let Some((status, time)) = c.mirror {
            mirror.push(time.as_secs_f64());
            m5xx += usize::from(status >= 500 && c.live_status < 500);
        }
    }
    let share = |k: usize| if n == 0 { 0.0 } else { k as f64 / n as f64 };
    MirrorSummary {
        copies: n,
        in_flight,
        same: share(same),
        mirror_5xx: share(m5xx),
        error: share(error),
        live_p50: quantile(&mut live, 0.50),
        live_p99: quantile(&mut live, 0.99),
        mirror_p50: quantile(&mut mirror, 0.50),
        mirror_p99: quantile(&mut mirror, 0.99),
    }
}

/// The `q` quantile of `values` (nearest rank); 0 for none.
fn quantile(values: &mut [f64], q: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let rank = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len());
    values[rank - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(live: u16, mirror: Option<u16>, ms: u64) -> Compared {
        Compared {
            live_status: live,
            live_time: Duration::from_millis(ms),
            mirror: mirror.map(|s| (s, Duration::from_millis(ms * 10))),
        }
    }

    /// Shares and quantiles over the window; the in-flight slots are bounded and given back.
    #[test]
    fn summary_and_slots() {
        let mut registry = Registry::default();
        let families = MirrorFamilies::register(&mut registry);
        let m = families.pool("green");
        for copy in [
            c(200, Some(204), 1),
            c(200, Some(500), 2),
            c(502, Some(503), 3),
            c(200, None, 4),
        ] {
            m.record(copy);
        }
        let s = families.summary();
        assert_eq!(
            (s.copies, s.same, s.mirror_5xx, s.error),
            (4, 0.5, 0.25, 0.25)
        );
        assert_eq!((s.live_p50, s.live_p99), (0.002, 0.004));
        assert_eq!((s.mirror_p50, s.mirror_p99), (0.02, 0.03));
        let a = m.begin(2).unwrap();
        let b = m.begin(2).unwrap();
        assert!(m.begin(2).is_none(), "a third copy past max_in_flight 2");
        assert_eq!(families.summary().in_flight, 2);
        drop((a, b));
        assert!(m.begin(2).is_some());
        families.reset();
        assert_eq!(families.summary().copies, 0);
    }
}
