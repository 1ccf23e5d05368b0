//! The record of one request/response exchange: access log line, metrics, in-flight guard.
//!
//! An [`Exchange`] is created once routing picked a pool and travels inside the response body
//! (or the upgrade tunnel). When it drops, at the end of the body, it records the request in the
//! pool's metrics and writes one `teal::access` line (unless `[log] access = false`), and its
//! [`InFlight`] guard ends the server's in-flight count.
//!
//! The access line's fields: `peer`, `client` (after `trusted_proxies`), `method`, `path` (as
//! received), `protocol`, `host`, `user_agent`, `referer`, `request_id`, `pool`, `upstream` (the
//! server that answered, or the one that failed for a 502/504), `status`, `bytes` (body bytes
//! sent to the client), `upstream_ms` (from sending the request to the response head) and
//! `duration_ms` (to the last byte), both numbers.

mod line;

use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::Method;

pub use line::init as init_line;
pub use line::Line;
pub use line::{flush as flush_lines, hold as hold_lines};

use crate::metrics::Served;
use crate::pool::{InFlight, Pool};

/// What the access line says of the request besides its method, captured only while the access
/// log is on: one string holding every text, and where each is in it.
#[derive(Debug, Default)]
pub struct Logged {
    text: String,
    path: Range<usize>,
    host: Range<usize>,
    user_agent: Range<usize>,
    referer: Range<usize>,
    request_id: Range<usize>,
    protocol: &'static str,
    /// All of it is printable ASCII without `"` or `\\` (see [`line::plain`]).
    plain: bool,
}

impl Logged {
    /// The record of a request made over `protocol` (`HTTP/1.1`, `HTTP/2.0`) for `path` (the
    /// target as received), with its `Host` (or HTTP/2 authority), `User-Agent`, `Referer` and
    /// request id, each empty when the request had none. One allocation holds them all.
    pub fn new(
        protocol: &'static str,
        path: &[u8],
        host: &[u8],
        user_agent: &[u8],
        referer: &[u8],
        id: &[u8],
    ) -> Logged {
        let len = path.len() + host.len() + user_agent.len() + referer.len() + id.len();
        let fields = [path, host, user_agent, referer, id];
        let mut logged = Logged {
            text: String::with_capacity(len),
            protocol,
            plain: fields.iter().all(|f| line::plain(f)),
            ..Logged::default()
        };
        logged.path = logged.push(path);
        logged.host = logged.push(host);
        logged.user_agent = logged.push(user_agent);
        logged.referer = logged.push(referer);
        logged.request_id = logged.push(id);
        logged
    }

    fn push(&mut self, bytes: &[u8]) -> Range<usize> {
        let start = self.text.len();
        match std::str::from_utf8(bytes) {
            Ok(text) => self.text.push_str(text),
            Err(_) => self.text.push_str(&String::from_utf8_lossy(bytes)),
        }
        start..self.text.len()
    }

    /// The line's fields taken from the request; the outcome's (peer, pool, status, times..)
    /// are blank, for the caller to fill with struct update syntax.
    pub fn line(&self) -> Line<'_> {
        Line {
            peer: SocketAddr::from(([0, 0, 0, 0], 0)),
            client: IpAddr::from([0, 0, 0, 0]),
            method: "",
            path: self.get(&self.path),
            protocol: self.protocol,
            host: self.get(&self.host),
            user_agent: self.get(&self.user_agent),
            referer: self.get(&self.referer),
            request_id: self.get(&self.request_id),
            plain: self.plain,
            pool: "",
            upstream: "-",
            status: 0,
            bytes: 0,
            upstream_us: None,
            duration_us: 0,
        }
    }

    fn get(&self, range: &Range<usize>) -> &str {
        let text = &self.text[range.clone()];
        if text.is_empty() {
            "-"
        } else {
            text
        }
    }
}

/// One request's record. See the module doc.
pub struct Exchange {
    start: Instant,
    peer: SocketAddr,
    /// The client as trusted proxies reported it (the peer's IP without them).
    client: IpAddr,
    method: Method,
    /// `None` when the access log is off (nothing to capture).
    logged: Option<Box<Logged>>,
    pool: Arc<Pool>,
    /// The path serving it, for `teal_requests_total{path}`.
    served: Served,
    /// The server the request went to, counted in flight while this lives.
    pub upstream: Option<InFlight>,
    /// The server that failed, for a response teal made after an upstream failure.
    pub failed: Option<String>,
    /// The status sent to the client.
    pub status: u16,
    /// Body bytes sent to the client so far.
    pub bytes: u64,
    /// From sending the request upstream to its response head.
    pub upstream_time: Option<Duration>,
}

impl Exchange {
    /// Starts the record of a request routed to `pool` and served by `served`; `logged` only
    /// when the log is on.
    pub fn new(
        start: Instant,
        peer: SocketAddr,
        client: IpAddr,
        method: Method,
        logged: Option<Box<Logged>>,
        pool: Arc<Pool>,
        served: Served,
    ) -> Exchange {
        Exchange {
            start,
            peer,
            client,
            method,
            logged,
            pool,
            served,
            upstream: None,
            failed: None,
            status: 0,
            bytes: 0,
            upstream_time: None,
        }
    }
}

/// Whole microseconds, rounded.
fn micros(d: Duration) -> u64 {
    u64::try_from((d.as_nanos() + 500) / 1000).unwrap_or(u64::MAX)
}

impl Drop for Exchange {
    fn drop(&mut self) {
        let elapsed = self.start.elapsed();
        self.pool
            .metrics
            .observe(self.served, self.status, elapsed.as_secs_f64());
        // The rollout judges the upstream's latency: to the response head, or the whole exchange
        // when teal answered itself.
        let latency = self.upstream_time.unwrap_or(elapsed);
        self.pool.tally().record(self.status, latency);
        let Some(logged) = &self.logged else {
            return;
        };
        let upstream = match (&self.upstream, &self.failed) {
            (Some(u), _) => u.upstream().authority.as_str(),
            (None, Some(failed)) => failed.as_str(),
            (None, None) => "-",
        };
        Line {
            peer: self.peer,
            client: self.client,
            method: self.method.as_str(),
            pool: &self.pool.name,
            upstream,
            status: self.status,
            bytes: self.bytes,
            upstream_us: self.upstream_time.map(micros),
            duration_us: micros(elapsed),
            ..logged.line()
        }
        .emit();
    }
}
