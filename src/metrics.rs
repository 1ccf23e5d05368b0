//! Prometheus metrics, exposed by the admin API at `GET /metrics`.
//!
//! Families live in one [`Metrics`] registry for the process. The request path never looks a
//! label set up: each pool holds a [`PoolMetrics`] with its counters and
//! histogram already resolved when the snapshot is built. Gauges that mirror live state (in-flight
//! per pool, the active pool, the generation) are set from the snapshot at scrape time.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

mod mirror;
mod tls;

pub use mirror::{Compared, InFlightCopy, MirrorMetrics, MirrorSummary, Outcome};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    pool: String,
    class: &'static str,
    path: &'static str,
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
struct StateLabel {
    state: &'static str,
}

/// Every state of a rollout, for the `teal_rollout_state` state set.
const ROLLOUT_STATES: [&str; 5] = ["idle", "running", "done", "rolled_back", "aborted"];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

/// The status classes a response is counted under, indexed by `status / 100 - 1`.
const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// Which of the two HTTP request paths served a request: the `path` label of
/// `teal_requests_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Served {
    /// teal's own HTTP/1.1 path (`h1`).
    Own,
    /// The hyper path (`proxy`): everything `h1` hands over, HTTP/2 included.
    Hyper,
}

impl Served {
    const ALL: [Served; 2] = [Served::Own, Served::Hyper];

    /// The label value: `own` or `hyper`.
    pub fn as_str(self) -> &'static str {
        match self {
            Served::Own => "own",
            Served::Hyper => "hyper",
        }
    }
}

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
    canary: Family<PoolLabel, Gauge>,
    server_up: Family<ServerLabels, Gauge>,
    server_state: Family<ServerStateLabels, Gauge>,
    server_in_flight: Family<ServerLabels, Gauge>,
    server_since: Family<ServerLabels, Gauge>,
    server_address: Family<AddressLabels, Gauge>,
    generation: Gauge,
    switches: Family<ResultLabel, Counter>,
    reloads: Family<ResultLabel, Counter>,
    rejected: Family<ReasonLabel, Counter>,
    mirror: mirror::MirrorFamilies,
    tls: tls::TlsFamilies,
    rollout_state: Family<StateLabel, Gauge>,
    rollout_step: Gauge,
    cluster_connected: Gauge,
    cluster_revision: Gauge,
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
        let (rollout_state, rollout_step) = register_rollout(&mut registry);
        registry.register(
            "requests",
            "Requests answered, by pool, status class and the path that served them (own or hyper)",
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
        let canary = Family::<PoolLabel, Gauge>::default();
        registry.register(
            "canary_percent",
            "Share of default-route clients the canary split sends to the pool (0: none)",
            canary.clone(),
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
        let mirror = mirror::MirrorFamilies::register(&mut registry);
        let tls = tls::TlsFamilies::register(&mut registry);
        Metrics {
            registry,
            requests,
            duration,
            in_flight,
            tunnels,
            active,
            canary,
            server_up,
            server_state,
            server_in_flight,
            server_since,
            server_address,
            generation,
            switches,
            reloads,
            rejected,
            mirror,
            tls,
            rollout_state,
            rollout_step,
            cluster_connected: Gauge::default(),
            cluster_revision: Gauge::default(),
        }
    }

    /// Adds the `[cluster]` gauges (`teal_cluster_connected`, `teal_cluster_revision`) to what is
    /// exposed; called once at startup in cluster mode.
    pub fn register_cluster(&mut self) {
        self.registry.register(
            "cluster_connected",
            "1 while the cluster's store (etcd) answers, 0 while it cannot be reached",
            self.cluster_connected.clone(),
        );
        self.registry.register(
            "cluster_revision",
            "The store revision of the shared state this instance serves",
            self.cluster_revision.clone(),
        );
    }

    /// Sets the `[cluster]` gauges.
    pub fn cluster(&self, connected: bool, revision: i64) {
        self.cluster_connected.set(i64::from(connected));
        self.cluster_revision.set(revision);
    }

    /// Sets the rollout gauges: `state` (one of the rollout states) and the step index.
    pub fn rollout(&self, state: &str, step: i64) {
        for s in ROLLOUT_STATES {
            self.rollout_state
                .get_or_create(&StateLabel { state: s })
                .set(i64::from(s == state));
        }
        self.rollout_step.set(step);
    }

    /// Counts a TLS handshake by its outcome (`ok`, or [`crate::tls::HandshakeError::outcome`]).
    pub fn tls_handshake(&self, outcome: &'static str) {
        self.tls.handshake(outcome);
    }

    /// Counts an ACME order by its outcome (`issued`, `failed`).
    pub fn acme_order(&self, outcome: &'static str) {
        self.tls.acme_order(outcome);
    }

    /// The certificates served, by name and expiry (Unix seconds), for the next scrape.
    pub fn set_cert_expiries(&self, certs: &[(String, i64)]) {
        self.tls.set_expiries(certs);
    }

    /// The pre-resolved mirroring handles for mirror pool `pool`.
    pub fn mirror(&self, pool: &str) -> MirrorMetrics {
        self.mirror.pool(pool)
    }

    /// What `GET /status` says of the latest mirrored copies.
    pub fn mirror_summary(&self) -> MirrorSummary {
        self.mirror.summary()
    }

    /// Forgets the latest copies (mirroring was set anew).
    pub fn mirror_reset(&self) {
        self.mirror.reset()
    }

    /// The pre-resolved handles for pool `name`.
    pub fn pool(&self, name: &str) -> PoolMetrics {
        let requests = Served::ALL.map(|served| {
            CLASSES.map(|class| {
                self.requests
                    .get_or_create(&RequestLabels {
                        pool: name.to_string(),
                        class,
                        path: served.as_str(),
                    })
                    .clone()
            })
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

    /// The exposition in `format`, with the live gauges set from `live`.
    pub fn expose(&self, live: &Live<'_>, format: Exposition) -> String {
        let text = self.encode(live);
        match format {
            Exposition::OpenMetrics => text,
            Exposition::Prometheus => to_prometheus_text(&text),
        }
    }

    /// The OpenMetrics text exposition, with the live gauges set from `live`.
    pub fn encode(&self, live: &Live<'_>) -> String {
        // Addresses come and go: that family is rebuilt from scratch on every scrape.
        self.server_address.clear();
        for pool in &live.pools {
            let label = PoolLabel {
                pool: pool.name.to_string(),
            };
            self.in_flight
                .get_or_create(&label)
                .set(pool.in_flight as i64);
            self.tunnels.get_or_create(&label).set(pool.tunnels as i64);
            self.active
                .get_or_create(&label)
                .set(i64::from(pool.active));
            self.canary
                .get_or_create(&label)
                .set(i64::from(pool.canary_percent));
            for server in &pool.servers {
                self.set_server(pool.name, server);
            }
        }
        self.generation.set(live.generation as i64);
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Registers `teal_rollout_state` and `teal_rollout_step`.
fn register_rollout(registry: &mut Registry) -> (Family<StateLabel, Gauge>, Gauge) {
    let state = Family::<StateLabel, Gauge>::default();
    let step = Gauge::default();
    registry.register(
        "rollout_state",
        "1 for the state of the current or last rollout: idle, running, done, rolled_back, aborted",
        state.clone(),
    );
    registry.register(
        "rollout_step",
        "Index (from 0) into the steps of the current or last rollout",
        step.clone(),
    );
    (state, step)
}

/// The two text formats `GET /metrics` serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exposition {
    /// Prometheus text format 0.0.4: what `promtool check metrics` and most tools read.
    Prometheus,
    /// OpenMetrics 1.0, for scrapers that ask for it.
    OpenMetrics,
}

impl Exposition {
    /// OpenMetrics when the `Accept` header names it (Prometheus itself does), else 0.0.4.
    pub fn negotiate(accept: Option<&str>) -> Exposition {
        match accept {
            Some(a) if a.contains("application/openmetrics-text") => Exposition::OpenMetrics,
            _ => Exposition::Prometheus,
        }
    }

    /// The `Content-Type` of an answer in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Exposition::Prometheus => "text/plain; version=0.0.4; charset=utf-8",
            Exposition::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

/// OpenMetrics text as prometheus-client writes it (it has no 0.0.4 encoder) to Prometheus text
/// 0.0.4: a counter family's HELP and TYPE take its samples' `_total` name, `_created` samples,
/// `# UNIT` and `# EOF` go, `unknown` becomes `untyped`, and HELP loses the `\"` escape 0.0.4
/// does not have. Histograms, gauges and sample lines are the same in both.
pub fn to_prometheus_text(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let total = |name: &str| {
        if counters.contains(name) {
            format!("{name}_total")
        } else {
            name.to_string()
        }
    };
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        let converted = if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        } else if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            format!("# HELP {} {}", total(name), help.replace("\\\"", "\""))
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, "unknown"));
            let kind = if kind == "unknown" { "untyped" } else { kind };
            format!("# TYPE {} {kind}", total(name))
        } else {
            let name = line.split(['{', ' ']).next().unwrap_or_default();
            let created = name
                .strip_suffix("_created")
                .is_some_and(|family| counters.contains(family));
            if created {
                continue;
            }
            line.to_string()
        };
        out.push_str(&converted);
        out.push('\n');
    }
    out
}

impl Metrics {
    fn set_server(&self, pool: &str, server: &LiveServer<'_>) {
        let labels = ServerLabels {
            pool: pool.to_string(),
            server: server.authority.to_string(),
        };
        self.server_up
            .get_or_create(&labels)
            .set(i64::from(server.usable));
        self.server_in_flight
            .get_or_create(&labels)
            .set(server.in_flight as i64);
        let since = server
            .since
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        self.server_since.get_or_create(&labels).set(since);
        for state in STATES {
            self.server_state
                .get_or_create(&ServerStateLabels {
                    pool: labels.pool.clone(),
                    server: labels.server.clone(),
                    state,
                })
                .set(i64::from(state == server.state));
        }
        for ip in &server.ips {
            self.server_address
                .get_or_create(&AddressLabels {
                    pool: labels.pool.clone(),
                    server: labels.server.clone(),
                    address: ip.to_string(),
                })
                .set(1);
        }
    }
}

/// What the gauges that mirror live state show, read by the caller at scrape time (the metrics
/// know nothing of pools and snapshots).
#[derive(Debug, Default)]
pub struct Live<'a> {
    /// The snapshot's generation.
    pub generation: u64,
    /// Every pool.
    pub pools: Vec<LivePool<'a>>,
}

/// One pool's live gauges.
#[derive(Debug)]
pub struct LivePool<'a> {
    /// Its name.
    pub name: &'a str,
    /// Whether it takes the default route.
    pub active: bool,
    /// The share of default-route clients the canary split sends to it (0: none).
    pub canary_percent: u8,
    /// Requests in flight to its servers.
    pub in_flight: usize,
    /// Tunnels open to its servers.
    pub tunnels: usize,
    /// Its servers.
    pub servers: Vec<LiveServer<'a>>,
}

/// One server's live gauges.
#[derive(Debug)]
pub struct LiveServer<'a> {
    /// `host:port` as configured.
    pub authority: &'a str,
    /// Whether it may take new requests.
    pub usable: bool,
    /// Requests in flight to it.
    pub in_flight: usize,
    /// When it entered its state.
    pub since: std::time::SystemTime,
    /// Its state word (one of `STATES`).
    pub state: &'static str,
    /// The addresses its name resolves to.
    pub ips: Vec<std::net::IpAddr>,
}

/// One pool's request counters (by path, then status class) and duration histogram.
#[derive(Clone, Debug)]
pub struct PoolMetrics {
    requests: [[Counter; 5]; 2],
    duration: Histogram,
}

impl PoolMetrics {
    /// Records one finished exchange, served by `served`.
    pub fn observe(&self, served: Served, status: u16, seconds: f64) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.requests[served as usize][class].inc();
        self.duration.observe(seconds);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each OpenMetrics-only feature is converted or dropped; the rest passes through.
    #[test]
    fn openmetrics_to_prometheus_text() {
        let om = "# HELP x_requests Requests, \\\"all\\\" of them.\n# TYPE x_requests counter\n# UNIT x_requests requests\nx_requests_total{a=\"1\"} 2\nx_requests_created{a=\"1\"} 1.7e9\n# HELP x_up Up.\n# TYPE x_up gauge\nx_up 1\n# HELP x_seconds Time.\n# TYPE x_seconds histogram\nx_seconds_sum 0.5\nx_seconds_count 1\nx_seconds_bucket{le=\"+Inf\"} 1\n# HELP x_other Other.\n# TYPE x_other unknown\nx_other 3\n# EOF\n";
        let want = "# HELP x_requests_total Requests, \"all\" of them.\n# TYPE x_requests_total counter\nx_requests_total{a=\"1\"} 2\n# HELP x_up Up.\n# TYPE x_up gauge\nx_up 1\n# HELP x_seconds Time.\n# TYPE x_seconds histogram\nx_seconds_sum 0.5\nx_seconds_count 1\nx_seconds_bucket{le=\"+Inf\"} 1\n# HELP x_other Other.\n# TYPE x_other untyped\nx_other 3\n";
        assert_eq!(to_prometheus_text(om), want);
    }

    /// An exchange is counted under the path that served it, both labels resolved up front.
    #[test]
    fn requests_counted_by_path() {
        let metrics = Metrics::new();
        let blue = metrics.pool("blue");
        blue.observe(Served::Hyper, 404, 0.001);
        blue.observe(Served::Own, 200, 0.001);
        blue.observe(Served::Own, 204, 0.001);
        let out = metrics.expose(&Live::default(), Exposition::Prometheus);
        for line in [
            "teal_requests_total{pool=\"blue\",class=\"2xx\",path=\"own\"} 2",
            "teal_requests_total{pool=\"blue\",class=\"4xx\",path=\"hyper\"} 1",
            "teal_requests_total{pool=\"blue\",class=\"2xx\",path=\"hyper\"} 0",
        ] {
            assert!(out.lines().any(|l| l == line), "no {line} in\n{out}");
        }
    }

    /// Every sample of teal's own 0.0.4 exposition belongs to a family with HELP and TYPE.
    #[test]
    fn every_metric_has_help_and_type() {
        let text = "active = \"blue\"\n[pools.blue]\nservers = [\"a:1\"]\n";
        let config = crate::config::Config::parse(text, None).unwrap();
        let metrics = std::sync::Arc::new(Metrics::new());
        let state = crate::state::State::new(config, metrics.clone());
        metrics.switch(true);
        metrics.reload(false);
        metrics.reject("x");
        let out = metrics.expose(&state.load().live(), Exposition::Prometheus);
        let declared = |kind: &str, name: &str| {
            out.lines().any(|l| {
                l.strip_prefix(kind)
                    .and_then(|r| r.strip_prefix(name))
                    .is_some_and(|r| r.starts_with(' '))
            })
        };
        for sample in out.lines().filter(|l| !l.starts_with('#')) {
            let name = sample.split(['{', ' ']).next().unwrap();
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s).filter(|f| declared("# TYPE ", f)))
                .unwrap_or(name);
            assert!(
                declared("# HELP ", family) && declared("# TYPE ", family),
                "{name}:\n{out}"
            );
        }
        assert!(
            out.contains("# TYPE teal_requests_total counter\n"),
            "{out}"
        );
        assert!(!out.contains("# EOF"));
        let om = metrics.expose(&state.load().live(), Exposition::OpenMetrics);
        assert!(om.ends_with("# EOF\n") && om.contains("# TYPE teal_requests counter\n"));
        assert_eq!(Exposition::negotiate(None), Exposition::Prometheus);
        assert_eq!(
            Exposition::negotiate(Some("text/plain")),
            Exposition::Prometheus
        );
        let prometheus = "application/openmetrics-text;version=1.0.0;q=0.5,text/plain;q=0.3";
        assert_eq!(
            Exposition::negotiate(Some(prometheus)),
            Exposition::OpenMetrics
        );
    }
}
