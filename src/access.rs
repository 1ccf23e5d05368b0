//! The record of one request/response exchange: access log line, metrics, in-flight guard.
//!
//! An [`Exchange`] is created once routing picked a pool and travels inside the response body
//! (or the upgrade tunnel). When it drops, at the end of the body, it records the request in the
//! pool's metrics and writes one `teal::access` line (unless `[log] access = false`), and its
//! [`InFlight`] guard ends the server's in-flight count.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use http::uri::PathAndQuery;
use http::Method;

use crate::pool::{InFlight, Pool};

/// One request's record. See the module doc.
pub struct Exchange {
    start: Instant,
    peer: SocketAddr,
    /// The client as trusted proxies reported it (the peer's IP without them).
    client: IpAddr,
    method: Method,
    /// The path as received; `None` when the access log is off (nothing to capture).
    path: Option<PathAndQuery>,
    pool: Arc<Pool>,
    /// The server the request went to, counted in flight while this lives.
    pub upstream: Option<InFlight>,
    /// The status sent to the client.
    pub status: u16,
    /// Body bytes sent to the client so far.
    pub bytes: u64,
}

impl Exchange {
    /// Starts the record of a request routed to `pool`. `path` is captured only when `log` is on.
    pub fn new(
        start: Instant,
        peer: SocketAddr,
        client: IpAddr,
        method: Method,
        path: Option<PathAndQuery>,
        pool: Arc<Pool>,
    ) -> Exchange {
        Exchange {
            start,
            peer,
            client,
            method,
            path,
            pool,
            upstream: None,
            status: 0,
            bytes: 0,
        }
    }
}

impl Drop for Exchange {
    fn drop(&mut self) {
        let elapsed = self.start.elapsed();
        self.pool
            .metrics
            .observe(self.status, elapsed.as_secs_f64());
        if let Some(path) = &self.path {
            let upstream = self
                .upstream
                .as_ref()
                .map_or("-", |u| u.upstream().authority.as_str());
            tracing::info!(
                target: "teal::access",
                peer = %self.peer,
                client = %self.client,
                method = %self.method,
                path = %path,
                pool = %self.pool.name,
                upstream,
                status = self.status,
                bytes = self.bytes,
                duration_ms = %format_args!("{:.3}", elapsed.as_secs_f64() * 1000.0),
            );
        }
    }
}
