//! The last minute of traffic, one sample a second, for the dashboard's charts (`GET /history`).
//!
//! A task ([`spawn`]) wakes every second and reads, for every pool of the live snapshot, the
//! pool's [`Tally`](crate::tally::Tally) (requests, 5xx answers and the latency buckets the
//! rollout's verdicts use, kept across switches and reloads) and its in-flight count; for every
//! server, its count of requests begun ([`Upstream::started`](crate::pool::Upstream::started))
//! and its in-flight count. A sample is the difference from the previous read:
//!
//! - `rps`: requests finished over the second (per server: requests begun);
//! - `error_rate`: the share of them answered 5xx (teal's own 502/503/504 and upstream 5xx);
//! - `p99_ms`: the 99th percentile latency of that second, estimated from the tally's log-scale
//!   buckets (four per doubling) as the upper bound of the bucket it falls in, so it errs high by
//!   less than a quarter; `null` for a second without requests;
//! - `in_flight`: requests open at the moment of the sample.
//!
//! At most [`SAMPLES`] samples are kept, oldest first; a series starts empty and grows to that.
//! A pool or server that leaves the configuration leaves the history.
//!
//! The same task also looks at every server's health every 250 ms and records, among the state's
//! events, a server entering or leaving the states no active check reports: `ejected` (passive
//! checks on live traffic, at least a second each time) and `unresolved` (its name does not
//! resolve). Active checks record their own transitions as they happen.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::state::State;
use crate::tally::Counts;

/// Samples kept per series: one minute.
pub const SAMPLES: usize = 60;
/// The time between samples.
pub const INTERVAL: Duration = Duration::from_secs(1);
/// The time between looks at the servers' health words (shorter than the shortest ejection).
const HEALTH_EVERY: Duration = Duration::from_millis(250);

/// The series of one pool.
#[derive(Debug, Default, Clone, Serialize)]
pub struct PoolSeries {
    /// Requests finished per second.
    pub rps: VecDeque<f64>,
    /// The 5xx share of them, 0-1.
    pub error_rate: VecDeque<f64>,
    /// Their 99th percentile latency in milliseconds, `None` without requests.
    pub p99_ms: VecDeque<Option<f64>>,
    /// Requests in flight at the sample.
    pub in_flight: VecDeque<usize>,
}

/// The series of one server.
#[derive(Debug, Default, Clone, Serialize)]
pub struct ServerSeries {
    /// Requests begun per second.
    pub rps: VecDeque<f64>,
    /// Requests in flight at the sample.
    pub in_flight: VecDeque<usize>,
}

/// What `GET /history` answers: `{"interval_s": 1, "pools": {...}, "servers": {"pool/host:port": ...}}`.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Doc {
    /// Seconds between samples.
    pub interval_s: u64,
    /// Per pool name.
    pub pools: BTreeMap<String, PoolSeries>,
    /// Per `pool/server` (the server as written in the config).
    pub servers: BTreeMap<String, ServerSeries>,
}

/// The sampled history and what the previous sample read.
#[derive(Debug, Default)]
pub struct History {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    doc: Doc,
    /// The previous read: when, and each pool's tally and each server's count of requests begun.
    last: Option<Instant>,
    pool_counts: BTreeMap<String, Counts>,
    server_counts: BTreeMap<String, u64>,
}

fn push<T>(series: &mut VecDeque<T>, value: T) {
    if series.len() >= SAMPLES {
        series.pop_front();
    }
    series.push_back(value);
}

impl History {
    /// A copy of the history now.
    pub fn doc(&self) -> Doc {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        Doc {
            interval_s: INTERVAL.as_secs(),
            ..inner.doc.clone()
        }
    }

    /// Takes one sample of `state`'s live snapshot. The first call only reads the counters.
    pub fn sample(&self, state: &State) {
        let snap = state.load();
        let now = Instant::now();
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let elapsed = inner.last.map(|t| now.duration_since(t).as_secs_f64());
        inner.last = Some(now);
        let mut pool_counts = BTreeMap::new();
        let mut server_counts = BTreeMap::new();
        let mut doc = Doc::default();
        for pool in snap.pools.iter() {
            let name = pool.name.to_string();
            let counts = pool.tally().read();
            let mut series = inner.doc.pools.remove(&name).unwrap_or_default();
            if let Some(secs) = elapsed {
                let window = inner
                    .pool_counts
                    .get(&name)
                    .map_or_else(|| counts.clone(), |before| counts.since(before));
                push(&mut series.rps, rate(window.requests, secs));
                push(&mut series.error_rate, window.error_rate());
                let p99 = window.p99().map(|d| d.as_secs_f64() * 1000.0);
                push(&mut series.p99_ms, p99);
                push(&mut series.in_flight, pool.in_flight());
            }
            for server in &pool.servers {
                let key = format!("{}/{}", pool.name, server.authority);
                let started = server.started();
                let mut s = inner.doc.servers.remove(&key).unwrap_or_default();
                if let Some(secs) = elapsed {
                    let before = inner.server_counts.get(&key).copied().unwrap_or(started);
                    push(&mut s.rps, rate(started.saturating_sub(before), secs));
                    push(&mut s.in_flight, server.in_flight());
                }
                server_counts.insert(key.clone(), started);
                doc.servers.insert(key, s);
            }
            pool_counts.insert(name.clone(), counts);
            doc.pools.insert(name, series);
        }
        inner.doc = doc;
        inner.pool_counts = pool_counts;
        inner.server_counts = server_counts;
    }
}

/// Watches the servers' state words every [`HEALTH_EVERY`] for the changes no active check
/// reports (see [`passive_change`]). An ejection lasts at least a second, so none is missed.
#[derive(Debug, Default)]
struct HealthWatch {
    /// Each server's state word at the previous look, by `pool/server`.
    words: BTreeMap<String, &'static str>,
}

impl HealthWatch {
    fn look(&mut self, state: &State) {
        let snap = state.load();
        let mut words = BTreeMap::new();
        for pool in snap.pools.iter() {
            for server in &pool.servers {
                let key = format!("{}/{}", pool.name, server.authority);
                let word = server.health.state();
                if let Some(before) = self.words.get(&key) {
                    passive_change(state, server, before, word);
                }
                words.insert(key, word);
            }
        }
        self.words = words;
    }
}

/// Records a change of `server`'s state word from `before` to `now` among the events when it
/// goes into or out of `ejected` or `unresolved` (what no active check reports).
fn passive_change(
    state: &State,
    server: &crate::pool::Upstream,
    before: &'static str,
    now: &'static str,
) {
    let passive = ["ejected", "unresolved"];
    if before == now || !(passive.contains(&before) || passive.contains(&now)) {
        return;
    }
    let mut text = format!(
        "server {} in pool {}: {before} -> {now}",
        server.authority, server.pool
    );
    if passive.contains(&now) {
        if let Some(error) = server.health.report().last_error {
            text.push_str(&format!(" ({error})"));
        }
    }
    state.events().record(crate::events::Kind::Health, text);
}

/// `n` over `secs`, rounded to a hundredth.
fn rate(n: u64, secs: f64) -> f64 {
    if secs <= 0.0 {
        return 0.0;
    }
    (n as f64 / secs * 100.0).round() / 100.0
}

/// Samples `state` every [`INTERVAL`] into a new [`History`] until `stop`.
pub fn spawn(state: Arc<State>, stop: CancellationToken) -> Arc<History> {
    let history = Arc::new(History::default());
    // The first read: every pool and server is in the history (with no samples) from the start.
    history.sample(&state);
    let task = history.clone();
    let mut health = HealthWatch::default();
    health.look(&state);
    tokio::spawn(async move {
        let now = tokio::time::Instant::now();
        let mut tick = tokio::time::interval_at(now + INTERVAL, INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut look = tokio::time::interval_at(now + HEALTH_EVERY, HEALTH_EVERY);
        look.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => task.sample(&state),
                _ = look.tick() => health.look(&state),
            }
        }
    });
    history
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::metrics::Metrics;

    const TEXT: &str = "active = \"blue\"\n[pools.blue]\nservers = [\"127.0.0.1:1\"]\n[pools.green]\nservers = [\"127.0.0.1:2\"]\n";

    /// A sample is the difference from the previous read, per pool and per server.
    #[test]
    fn samples_are_differences() {
        let state = State::new(Config::parse(TEXT, None).unwrap(), Arc::new(Metrics::new()));
        let history = History::default();
        history.sample(&state);
        assert!(history.doc().pools["blue"].rps.is_empty());
        let snap = state.load();
        let blue = snap.pool("blue").unwrap();
        for status in [200, 200, 200, 502] {
            blue.tally().record(status, Duration::from_millis(3));
        }
        blue.servers[0].tried();
        history.sample(&state);
        let doc = history.doc();
        let series = &doc.pools["blue"];
        assert_eq!(series.rps.len(), 1);
        assert!(series.rps[0] > 0.0, "{series:?}");
        assert_eq!(series.error_rate[0], 0.25);
        let p99 = series.p99_ms[0].unwrap();
        assert!((3.0..4.0).contains(&p99), "{p99}");
        assert_eq!(doc.pools["green"].p99_ms[0], None);
        assert!(doc.servers["blue/127.0.0.1:1"].rps[0] > 0.0);
        assert_eq!(doc.servers["green/127.0.0.1:2"].rps[0], 0.0);
        let json = serde_json::to_value(&doc).unwrap();
        assert_eq!(json["interval_s"], 1);
        assert!(json["pools"]["green"]["p99_ms"][0].is_null());
    }
}
