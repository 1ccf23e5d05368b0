//! Prometheus metrics, exposed by the admin API at `GET /metrics`.
//!
//! Families live in one [`Metrics`] registry for the process. The request path never looks a
//! label set up: each [`Pool`](crate::pool::Pool) holds a [`PoolMetrics`] with its counters and
//! histogram already resolved when the snapshot is built. Gauges that mirror live state (in-flight
//! per pool, the active pool, the generation) are set from the snapshot at scrape time.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::state::Snapshot;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    pool: String,
    class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolLabel {
    pool: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServerLabels {
    pool: String,
    server: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServerStateLabels {
    pool: String,
    server: String,
    state: &'static str,
}

/// Every state a server can be in, for the state-set gauge.
const STATES: [&str; 5] = ["unknown", "healthy", "unhealthy", "ejected", "unresolved"];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AddressLabels {
    pool: String,
    server: String,
    address: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

/// The status classes a response is counted under, indexed by `status / 100 - 1`.
const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

fn new_histogram() -> Histogram {
    // 0.5 ms .. ~16 s
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// All metric families of one teal process.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    duration: Family<PoolLabel, Histogram, fn() -> Histogram>,
    in_flight: Family<PoolLabel, Gauge>,
    tunnels: Family<PoolLabel, Gauge>,
    active: Family<PoolLabel, Gauge>,
    server_up: Family<ServerLabels, Gauge>,
    server_state: Family<ServerStateLabels, Gauge>,
    server_in_flight: Family<ServerLabels, Gauge>,
    server_since: Family<ServerLabels, Gauge>,
    server_address: Family<AddressLabels, Gauge>,
    generation: Gauge,
    switches: Family<ResultLabel, Counter>,
    reloads: Family<ResultLabel, Counter>,
    rejected: Family<ReasonLabel, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every family.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("teal");
        let requests = Family::<RequestLabels, Counter>::default();
        let duration = Family::<PoolLabel, Histogram, fn() -> Histogram>::new_with_constructor(
            new_histogram as fn() -> Histogram,
        );
        let in_flight = Family::<PoolLabel, Gauge>::default();
        let tunnels = Family::<PoolLabel, Gauge>::default();
        let active = Family::<PoolLabel, Gauge>::default();
        let server_up = Family::<ServerLabels, Gauge>::default();
        let server_state = Family::<ServerStateLabels, Gauge>::default();
        let server_in_flight = Family::<ServerLabels, Gauge>::default();
        let server_since = Family::<ServerLabels, Gauge>::default();
        let server_address = Family::<AddressLabels, Gauge>::default();
        let generation = Gauge::default();
        let switches = Family::<ResultLabel, Counter>::default();
        let reloads = Family::<ResultLabel, Counter>::default();
        let rejected = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "requests",
            "Requests answered, by pool and status class",
            requests.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Time from request head to the end of the response body, by pool",
            duration.clone(),
        );
        registry.register(
            "in_flight_requests",
            "Requests in flight to a pool's servers",
            in_flight.clone(),
        );
        registry.register(
            "open_tunnels",
            "Upgraded connections (WebSockets) open to a pool's servers",
            tunnels.clone(),
        );
        registry.register(
            "active_pool",
            "1 for the pool that takes the default route",
            active.clone(),
        );
        registry.register(
            "server_up",
            "1 while a server may take new requests (not unhealthy, ejected or unresolved)",
            server_up.clone(),
        );
        registry.register(
            "server_state",
            "1 for the state a server is in: unknown, healthy, unhealthy, ejected, unresolved",
            server_state.clone(),
        );
        registry.register(
            "server_in_flight_requests",
            "Requests in flight to one server",
            server_in_flight.clone(),
        );
        registry.register(
            "server_state_since_seconds",
            "Unix time when a server entered its current state",
            server_since.clone(),
        );
        registry.register(
            "server_address",
            "1 for each address a server's name currently resolves to",
            server_address.clone(),
        );
        registry.register(
            "generation",
            "Snapshot generation; grows by one per switch or reload",
            generation.clone(),
        );
        registry.register(
            "switches",
            "Switches of the active pool, by result",
            switches.clone(),
        );
        registry.register(
            "reloads",
            "Configuration reloads, by result",
            reloads.clone(),
        );
        registry.register(
            "rejected",
            "Requests and connections refused by limits and rules, by reason",
            rejected.clone(),
        );
        Metrics {
            registry,
            requests,
            duration,
            in_flight,
            tunnels,
            active,
            server_up,
            server_state,
            server_in_flight,
            server_since,
            server_address,
            generation,
            switches,
            reloads,
            rejected,
        }
    }

    /// The pre-resolved handles for pool `name`.
    pub fn pool(&self, name: &str) -> PoolMetrics {
        let requests = std::array::from_fn(|i| {
            self.requests
                .get_or_create(&RequestLabels {
                    pool: name.to_string(),
                    class: CLASSES[i],
                })
                .clone()
        });
        let duration = self
            .duration
            .get_or_create(&PoolLabel { pool: name.into() })
            .clone();
        PoolMetrics { requests, duration }
    }

    /// Counts one switch; `ok` false for a refused one.
    pub fn switch(&self, ok: bool) {
        let result = if ok { "ok" } else { "refused" };
        self.switches.get_or_create(&ResultLabel { result }).inc();
    }

    /// Counts one refused request or connection.
    pub fn reject(&self, reason: &'static str) {
        self.rejected.get_or_create(&ReasonLabel { reason }).inc();
    }

    /// Counts one reload; `ok` false for a refused edit.
    pub fn reload(&self, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.reloads.get_or_create(&ResultLabel { result }).inc();
    }

    /// The text exposition, with live gauges refreshed from `snap`.
    pub fn encode(&self, snap: &Snapshot) -> String {
        for pool in &snap.pools {
            let label = PoolLabel {
                pool: pool.name.to_string(),
            };
            let open = pool.open();
            self.in_flight
                .get_or_create(&label)
                .set(open.in_flight as i64);
            self.tunnels.get_or_create(&label).set(open.tunnels as i64);
            let is_active = i64::from(pool.name == snap.active.name);
            self.active.get_or_create(&label).set(is_active);
            for server in &pool.servers {
                let labels = ServerLabels {
                    pool: pool.name.to_string(),
                    server: server.authority.to_string(),
                };
                self.server_up
                    .get_or_create(&labels)
                    .set(i64::from(server.health.usable()));
                self.server_in_flight
                    .get_or_create(&labels)
                    .set(server.in_flight() as i64);
                let since = server
                    .health
                    .since()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs() as i64);
                self.server_since.get_or_create(&labels).set(since);
                let now = server.health.state();
                for state in STATES {
                    self.server_state
                        .get_or_create(&ServerStateLabels {
                            pool: labels.pool.clone(),
                            server: labels.server.clone(),
                            state,
                        })
                        .set(i64::from(state == now));
                }
            }
        }
        self.generation.set(snap.generation as i64);
        // Addresses come and go: rebuild that family from scratch on every scrape.
        self.server_address.clear();
        for pool in &snap.pools {
            for server in &pool.servers {
                for ip in server.ips() {
                    self.server_address
                        .get_or_create(&AddressLabels {
                            pool: pool.name.to_string(),
                            server: server.authority.to_string(),
                            address: ip.to_string(),
                        })
                        .set(1);
                }
            }
        }
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// One pool's request counters (by status class) and duration histogram.
#[derive(Clone, Debug)]
pub struct PoolMetrics {
    requests: [Counter; 5],
    duration: Histogram,
}

impl PoolMetrics {
    /// Records one finished exchange.
    pub fn observe(&self, status: u16, seconds: f64) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.requests[class].inc();
        self.duration.observe(seconds);
    }
}
