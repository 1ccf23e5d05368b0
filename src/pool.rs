//! Upstream pools: the servers of one colour, round robin over them, and in-flight counting.
//!
//! A [`Pool`] is immutable once built, except for its runtime counters, which are shared with the
//! pool of the same name in the next snapshot (see [`Pool::build`]): a switch or reload never
//! resets the round-robin cursor or an in-flight count.
//!
//! In-flight counts are held by [`InFlight`] guards. The proxy moves a guard into the response body
//! (or the upgrade tunnel), so a request counts until its last byte is sent, not until the handler
//! returns. An upgraded connection moves its count from requests to tunnels.
//!
//! A pool that stops being active is *draining* while it still has requests or tunnels open;
//! [`Pool::inactive_since`] says since when, and [`Pool::wait_idle`] waits for the end of it.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use std::time::{Duration, SystemTime};

use http::uri::Authority;

use crate::health::Health;
use crate::metrics::PoolMetrics;

/// One upstream server: its address, live counters and health.
#[derive(Debug)]
pub struct Upstream {
    /// The pool it belongs to (for logs).
    pub pool: Arc<str>,
    /// `host:port` as written in the config; also the URI authority requests are sent to.
    pub authority: Authority,
    /// What is known of its health.
    pub health: Health,
    /// The addresses its host resolved to (fixed for an IP literal); empty until resolved.
    addrs: ArcSwap<Vec<Target>>,
    /// Rotates the first address tried, so a name with several addresses uses all of them.
    next_addr: AtomicUsize,
    in_flight: AtomicUsize,
    tunnels: AtomicUsize,
    /// Requests begun since the server was first configured (for the dashboard's rate).
    started: AtomicU64,
}

impl Upstream {
    fn new(pool: &str, authority: Authority) -> Upstream {
        let literal = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>();
        Upstream {
            pool: pool.into(),
            addrs: ArcSwap::from_pointee(Target::all(
                &literal.into_iter().collect::<Vec<_>>(),
                authority.port_u16().unwrap_or(80),
            )),
            next_addr: AtomicUsize::new(0),
            health: Health::new(pool.into(), authority.to_string()),
            authority,
            in_flight: AtomicUsize::new(0),
            tunnels: AtomicUsize::new(0),
            started: AtomicU64::new(0),
        }
    }

    /// The host part of the authority, without IPv6 brackets.
    pub fn host(&self) -> &str {
        self.authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
    }

    /// Whether the host is an IP literal (never resolved).
    pub fn is_literal(&self) -> bool {
        self.host().parse::<IpAddr>().is_ok()
    }

    /// The addresses currently known for this server (with its port).
    pub fn addrs(&self) -> Arc<Vec<Target>> {
        self.addrs.load_full()
    }

    /// The IPs currently known for this server.
    pub fn ips(&self) -> Vec<IpAddr> {
        self.addrs.load().iter().map(|t| t.addr.ip()).collect()
    }

    /// Replaces the known addresses (after a resolution), unless they are the same.
    pub fn set_ips(&self, ips: &[IpAddr]) {
        if self.ips() != ips {
            let port = self.authority.port_u16().unwrap_or(80);
            self.addrs.store(Arc::new(Target::all(ips, port)));
        }
    }

    /// `targets` in the order to try them, starting one further on each call.
    pub fn rotate<'a>(&self, targets: &'a [Target]) -> impl Iterator<Item = &'a Target> {
        let n = targets.len().max(1);
        let start = self.next_addr.fetch_add(1, Ordering::Relaxed) % n;
        (0..targets.len()).map(move |i| &targets[(start + i) % n])
    }

    /// Requests currently in flight to this server (until their response body ends).
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Upgraded connections (WebSockets) currently open to this server.
    pub fn tunnels(&self) -> usize {
        self.tunnels.load(Ordering::Relaxed)
    }

    /// Requests begun (sent, or tried) to this server so far.
    pub fn started(&self) -> u64 {
        self.started.load(Ordering::Relaxed)
    }

    /// Counts one request tried on this server (before connecting, so a server that refuses
    /// connections shows the requests it failed).
    pub fn tried(&self) {
        self.started.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one request as in flight until the guard drops.
    pub fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight {
            upstream: self.clone(),
            tunnel: false,
        }
    }
}

/// One resolved address of a server, with the URI authority that names it, built once per
/// resolution instead of per request.
#[derive(Debug, Clone)]
pub struct Target {
    /// The socket address.
    pub addr: SocketAddr,
    /// `IP:port` as a URI authority.
    pub authority: Authority,
}

impl Target {
    fn all(ips: &[IpAddr], port: u16) -> Vec<Target> {
        ips.iter()
            .map(|ip| {
                let addr = SocketAddr::new(*ip, port);
                Target {
                    addr,
                    authority: Authority::try_from(addr.to_string())
                        .expect("a socket address is an authority"),
                }
            })
            .collect()
    }
}

/// Holds one in-flight count (a request, or a tunnel) on an [`Upstream`]; dropping it ends it.
#[derive(Debug)]
pub struct InFlight {
    upstream: Arc<Upstream>,
    tunnel: bool,
}

impl InFlight {
    /// The server this request went to.
    pub fn upstream(&self) -> &Arc<Upstream> {
        &self.upstream
    }

    /// The request became an upgraded tunnel: count it as one from now on.
    pub fn into_tunnel(&mut self) {
        if !self.tunnel {
            // Up first, then down, so the server never looks idle in between.
            self.upstream.tunnels.fetch_add(1, Ordering::Relaxed);
            self.upstream.in_flight.fetch_sub(1, Ordering::Relaxed);
            self.tunnel = true;
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let counter = if self.tunnel {
            &self.upstream.tunnels
        } else {
            &self.upstream.in_flight
        };
        counter.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What is still open on a pool or server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct Open {
    /// Requests in flight.
    pub in_flight: usize,
    /// Upgraded tunnels.
    pub tunnels: usize,
}

impl Open {
    /// Nothing open.
    pub fn is_idle(&self) -> bool {
        self.in_flight == 0 && self.tunnels == 0
    }
}

/// Runtime state of a pool that outlives snapshots (carried over by pool name).
#[derive(Debug, Default)]
struct Runtime {
    cursor: AtomicUsize,
    /// When the pool last stopped being active; `None` while it is active.
    inactive_since: Mutex<Option<SystemTime>>,
    /// Requests, errors and latencies, for the rollout's verdicts.
    tally: crate::tally::Tally,
}

/// A named set of servers that requests are spread over.
#[derive(Debug)]
pub struct Pool {
    /// The pool's name, also its preview path segment.
    pub name: Arc<str>,
    /// Servers in config order.
    pub servers: Vec<Arc<Upstream>>,
    runtime: Arc<Runtime>,
    /// Pre-resolved metric handles.
    pub metrics: PoolMetrics,
    /// The pool's timeouts under its snapshot, looked up once when the snapshot is built.
    pub timeouts: PoolTimeouts,
}

/// A pool's timeouts: its own overrides, else the `[proxy]` values.
#[derive(Debug, Clone, Copy)]
pub struct PoolTimeouts {
    /// Time to open a TCP connection to one server address.
    pub connect: Duration,
    /// Time from the end of the request to the response head.
    pub response: Duration,
    /// How long an idle upstream connection may be reused.
    pub idle: Duration,
}

impl Default for PoolTimeouts {
    /// The `[proxy]` defaults.
    fn default() -> PoolTimeouts {
        PoolTimeouts {
            connect: Duration::from_secs(2),
            response: Duration::from_secs(60),
            idle: Duration::from_secs(4),
        }
    }
}

impl Pool {
    /// Builds pool `name` over `servers`, taking over the cursor, the draining clock and the
    /// per-server counters of `previous` (the pool of the same name in the snapshot being
    /// replaced) where addresses match. `active` says whether it takes the default route now.
    pub fn build(
        name: &str,
        servers: &[Authority],
        previous: Option<&Pool>,
        active: bool,
        metrics: PoolMetrics,
    ) -> Pool {
        let servers = servers
            .iter()
            .map(|auth| {
                previous
                    .and_then(|p| p.servers.iter().find(|u| &u.authority == auth))
                    .cloned()
                    .unwrap_or_else(|| Arc::new(Upstream::new(name, auth.clone())))
            })
            .collect();
        let runtime: Arc<Runtime> = previous.map_or_else(Default::default, |p| p.runtime.clone());
        {
            let mut since = runtime
                .inactive_since
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            match (active, *since) {
                (true, _) => *since = None,
                (false, None) => *since = Some(SystemTime::now()),
                (false, Some(_)) => {}
            }
        }
        Pool {
            name: name.into(),
            servers,
            runtime,
            metrics,
            timeouts: PoolTimeouts::default(),
        }
    }

    /// The same pool with `timeouts`.
    pub fn with_timeouts(mut self, timeouts: PoolTimeouts) -> Pool {
        self.timeouts = timeouts;
        self
    }

    /// The servers in the order this request should try them: round robin for the first, then
    /// the rest of the pool in turn (connect failover). Servers that are down (unhealthy, ejected,
    /// unresolved) are left out while any other is usable; when none is, all are tried.
    pub fn order(&self) -> impl Iterator<Item = &Arc<Upstream>> {
        let n = self.servers.len();
        let start = if n > 1 {
            self.runtime.cursor.fetch_add(1, Ordering::Relaxed) % n
        } else {
            0
        };
        let any_usable = self.servers.iter().any(|s| s.health.usable());
        (0..n)
            .map(move |i| &self.servers[(start + i) % n])
            .filter(move |s| !any_usable || s.health.usable())
    }

    /// The pool's request counters (kept across snapshots, like the cursor).
    pub fn tally(&self) -> &crate::tally::Tally {
        &self.runtime.tally
    }

    /// Requests in flight to any of this pool's servers.
    pub fn in_flight(&self) -> usize {
        self.servers.iter().map(|s| s.in_flight()).sum()
    }

    /// Requests and tunnels open to this pool's servers.
    pub fn open(&self) -> Open {
        self.servers.iter().fold(Open::default(), |acc, s| Open {
            in_flight: acc.in_flight + s.in_flight(),
            tunnels: acc.tunnels + s.tunnels(),
        })
    }

    /// When the pool stopped being active (`None` while active).
    pub fn inactive_since(&self) -> Option<SystemTime> {
        *self
            .runtime
            .inactive_since
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until nothing is open on the pool or `timeout` passes; returns what is still open.
    pub async fn wait_idle(&self, timeout: Duration) -> Open {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let open = self.open();
            if open.is_idle() || tokio::time::Instant::now() >= deadline {
                return open;
            }
            // Polling keeps the request path free of wake-up bookkeeping; 20 ms is far below
            // anything an operator waits for.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;

    fn pool(servers: &[&str], previous: Option<&Pool>) -> Pool {
        let servers: Vec<Authority> = servers.iter().map(|s| s.parse().unwrap()).collect();
        Pool::build(
            "blue",
            &servers,
            previous,
            false,
            Metrics::new().pool("blue"),
        )
    }

    fn first(p: &Pool) -> String {
        p.order().next().unwrap().authority.to_string()
    }

    /// Round robin starts one server further on every request and covers the whole pool.
    #[test]
    fn round_robin_and_failover_order() {
        let p = pool(&["a:1", "b:1", "c:1"], None);
        let order: Vec<String> = p.order().map(|u| u.authority.to_string()).collect();
        assert_eq!(order, ["a:1", "b:1", "c:1"]);
        let order: Vec<String> = p.order().map(|u| u.authority.to_string()).collect();
        assert_eq!(order, ["b:1", "c:1", "a:1"]);
        assert_eq!(first(&p), "c:1");
        assert_eq!(first(&p), "a:1");
    }

    /// A rebuilt pool keeps the cursor and the counters of servers it still has.
    #[test]
    fn rebuild_carries_runtime_state() {
        let old = pool(&["a:1", "b:1"], None);
        assert_eq!(first(&old), "a:1");
        let guard = old.servers[1].begin();
        let new = pool(&["b:1", "c:1"], Some(&old));
        assert_eq!(new.servers[0].in_flight(), 1);
        assert_eq!(new.in_flight(), 1);
        assert_eq!(first(&new), "c:1", "cursor carried over (position 1)");
        drop(guard);
        assert_eq!(new.in_flight(), 0);
        assert_eq!(old.in_flight(), 0);
    }

    /// A request that becomes a tunnel moves from one count to the other and ends there.
    #[test]
    fn tunnel_counts() {
        let p = pool(&["a:1"], None);
        let mut g = p.servers[0].begin();
        assert_eq!(
            p.open(),
            Open {
                in_flight: 1,
                tunnels: 0
            }
        );
        g.into_tunnel();
        assert_eq!(
            p.open(),
            Open {
                in_flight: 0,
                tunnels: 1
            }
        );
        drop(g);
        assert!(p.open().is_idle());
    }

    /// The draining clock starts when a pool stops being active and survives rebuilds.
    #[test]
    fn inactive_since_follows_activity() {
        let servers: Vec<Authority> = vec!["a:1".parse().unwrap()];
        let m = Metrics::new();
        let active = Pool::build("blue", &servers, None, true, m.pool("blue"));
        assert_eq!(active.inactive_since(), None);
        let idle = Pool::build("blue", &servers, Some(&active), false, m.pool("blue"));
        let since = idle.inactive_since().unwrap();
        let again = Pool::build("blue", &servers, Some(&idle), false, m.pool("blue"));
        assert_eq!(again.inactive_since(), Some(since));
        let back = Pool::build("blue", &servers, Some(&again), true, m.pool("blue"));
        assert_eq!(back.inactive_since(), None);
    }
}
