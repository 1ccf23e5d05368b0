//! Upstream pools: the servers of one colour, round robin over them, and in-flight counting.
//!
//! A [`Pool`] is immutable once built, except for its runtime counters, which are shared with the
//! pool of the same name in the next snapshot (see [`Pool::build`]): a switch or reload never
//! resets the round-robin cursor or an in-flight count.
//!
//! In-flight counts are held by [`InFlight`] guards. The proxy moves a guard into the response body
//! (or the upgrade tunnel), so a request counts until its last byte is sent, not until the handler
//! returns.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use http::uri::Authority;

use crate::metrics::PoolMetrics;

/// One upstream server: its address and live counters.
#[derive(Debug)]
pub struct Upstream {
    /// `host:port` as written in the config; also the URI authority requests are sent to.
    pub authority: Authority,
    in_flight: AtomicUsize,
}

impl Upstream {
    fn new(authority: Authority) -> Upstream {
        Upstream {
            authority,
            in_flight: AtomicUsize::new(0),
        }
    }

    /// Requests and tunnels currently open to this server.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Counts one request as in flight until the guard drops.
    pub fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }
}

/// Holds one in-flight count on an [`Upstream`]; dropping it ends the count.
#[derive(Debug)]
pub struct InFlight(Arc<Upstream>);

impl InFlight {
    /// The server this request went to.
    pub fn upstream(&self) -> &Arc<Upstream> {
        &self.0
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A named set of servers that requests are spread over.
#[derive(Debug)]
pub struct Pool {
    /// The pool's name, also its preview path segment.
    pub name: Arc<str>,
    /// Servers in config order.
    pub servers: Vec<Arc<Upstream>>,
    cursor: Arc<AtomicUsize>,
    /// Pre-resolved metric handles.
    pub metrics: PoolMetrics,
}

impl Pool {
    /// Builds pool `name` over `servers`, taking over the cursor and the per-server counters of
    /// `previous` (the pool of the same name in the snapshot being replaced) where addresses match.
    pub fn build(
        name: &str,
        servers: &[Authority],
        previous: Option<&Pool>,
        metrics: PoolMetrics,
    ) -> Pool {
        let servers = servers
            .iter()
            .map(|auth| {
                previous
                    .and_then(|p| p.servers.iter().find(|u| &u.authority == auth))
                    .cloned()
                    .unwrap_or_else(|| Arc::new(Upstream::new(auth.clone())))
            })
            .collect();
        Pool {
            name: name.into(),
            servers,
            cursor: previous.map_or_else(Default::default, |p| p.cursor.clone()),
            metrics,
        }
    }

    /// The servers in the order this request should try them: round robin for the first, then
    /// the rest of the pool in turn (connect failover).
    pub fn order(&self) -> impl Iterator<Item = &Arc<Upstream>> {
        let n = self.servers.len();
        let start = if n > 1 {
            self.cursor.fetch_add(1, Ordering::Relaxed) % n
        } else {
            0
        };
        (0..n).map(move |i| &self.servers[(start + i) % n])
    }

    /// Requests and tunnels open to any of this pool's servers.
    pub fn in_flight(&self) -> usize {
        self.servers.iter().map(|s| s.in_flight()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;

    fn pool(servers: &[&str], previous: Option<&Pool>) -> Pool {
        let servers: Vec<Authority> = servers.iter().map(|s| s.parse().unwrap()).collect();
        Pool::build("blue", &servers, previous, Metrics::new().pool("blue"))
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
}
