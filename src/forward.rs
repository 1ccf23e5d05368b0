//! The pool walk, once for both request paths: which server and address to try, connecting,
//! one retry of a stale pooled connection, moving to the next server, and what a failure means
//! (502 or 504, its reason, and whether the server's passive health hears of it).
//!
//! A path brings an [`Attempt`]: how its request goes out on one kind of upstream connection (a
//! plain socket for teal's own HTTP/1.1 path, a hyper connection for the general path) and how the
//! answer comes back, with that path's timeouts. [`Forwarder::walk`] does the rest, as pingora's
//! proxy loop does for its HTTP/1 and HTTP/2 sessions:
//!
//! - servers in round-robin order, skipping those known to be down while another is usable;
//! - a server's addresses, looked up when not known yet; a lookup or connect failure moves on to
//!   the next address or server (nothing was sent, so that is always safe) and is a passive
//!   failure of that server, with a new lookup soon (a recreated container moves);
//! - a request that fails before any byte of an answer on a *reused* connection (the upstream
//!   closed it just as it was reused) is sent once more on a fresh connection, when the attempt
//!   says that is safe (idempotent, no body);
//! - any other failure ends the walk: [`Failed`] says whose fault it was and what the client gets.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::Method;
use tracing::warn;

use crate::error::{error_chain, LastFailure, ProxyError};
use crate::pool::{InFlight, Pool, Target, Upstream};
use crate::resolve::Resolver;
use crate::state::State;
use crate::upstream::{Connections, Timeouts};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How one attempt failed, and so what the client gets.
#[derive(Debug)]
pub(crate) enum Failed {
    /// The connection closed or reset before any byte of an answer: a stale pooled connection if
    /// it was reused (then retried once when safe), else the upstream's failure.
    Stale(String),
    /// The upstream failed after the request went out (a malformed answer, a reset mid-way): 502.
    Upstream(String),
    /// No response head within `response_timeout` of the end of the request: 504.
    Timeout(Duration),
    /// The upstream stopped taking the request body for `upstream_body_timeout`: 504.
    Stalled(Duration),
    /// The client's own fault (its body was malformed, too large or too slow): the server is not
    /// held responsible.
    Client(ProxyError),
    /// The upstream closed or reset the connection before any byte of an answer while the
    /// request body had been waiting for the client for [`CLIENT_PAUSE`] or more (the server's
    /// own body timeout, shorter than teal's `client_body_timeout`): a 502, not held against the
    /// server, which only gave up on a slow client. Anything else it does then (a malformed
    /// answer, a close during a client that keeps sending) is still its own failure.
    GaveUpOnClient(String),
}

/// How long the client must have kept the request body waiting for an upstream that closes then
/// to be taken as giving up on the client ([`Failed::GaveUpOnClient`]): no server gives up on a
/// body sooner, and a client that keeps sending cannot hide a crash behind its pace.
pub(crate) const CLIENT_PAUSE: Duration = Duration::from_millis(250);

/// Whether the client has kept the body waiting for [`CLIENT_PAUSE`] since `since`
/// ([`crate::clock::now_ms`]; 0 when it is not waited for).
pub(crate) fn client_paused(since: u64) -> bool {
    since != 0 && crate::clock::now_ms().saturating_sub(since) >= crate::clock::ms(CLIENT_PAUSE)
}

impl Failed {
    /// The client's error, recorded against `server`'s passive health unless it was the client's.
    fn into_error(self, server: &Upstream) -> ProxyError {
        match self {
            Failed::Stale(why) | Failed::Upstream(why) => ProxyError::upstream_failed(server, why),
            Failed::Timeout(d) => ProxyError::timed_out(server, d),
            Failed::Stalled(d) => ProxyError::stalled(server, d),
            Failed::Client(err) => err,
            Failed::GaveUpOnClient(why) => ProxyError::Upstream {
                server: server.authority.to_string(),
                reason: format!("{why}, while the request body waited for the client"),
            },
        }
    }
}

/// One request's way out and back on one kind of upstream connection. See the module doc.
pub(crate) trait Attempt {
    /// An upstream connection.
    type Conn;
    /// What a successful attempt got: the response head.
    type Answer;

    /// The most recently used idle connection to `addr` that is still usable, else a new one; and
    /// whether it served a request before. The error is a connect failure.
    fn checkout(
        &mut self,
        connections: &Connections,
        addr: SocketAddr,
        timeouts: Timeouts,
    ) -> impl Future<Output = Result<(Self::Conn, bool), BoxError>> + Send;

    /// A new connection to `addr`, within `connect_timeout`.
    fn connect(
        &mut self,
        connections: &Connections,
        addr: SocketAddr,
        connect_timeout: Duration,
    ) -> impl Future<Output = Result<Self::Conn, BoxError>> + Send;

    /// Sends the request on `conn` and waits for the answer, within the path's timeouts.
    fn send(
        &mut self,
        conn: &mut Self::Conn,
    ) -> impl Future<Output = Result<Self::Answer, Failed>> + Send;

    /// Whether the request may be sent again after a stale reused connection: idempotent, and
    /// without a body that may already be gone.
    fn retry_safe(&self) -> bool;
}

/// A walk that found a server to answer.
pub(crate) struct Answered<C, A> {
    /// The connection the answer arrived on (its body follows on it).
    pub(crate) conn: C,
    /// The answer.
    pub(crate) answer: A,
    /// The address it went to.
    pub(crate) addr: SocketAddr,
    /// The request counted in flight on its server.
    pub(crate) in_flight: InFlight,
    /// From sending the request to the answer.
    pub(crate) upstream_time: Duration,
}

/// What both paths forward with: the live state, name resolution and this worker's upstream
/// connections.
pub struct Forwarder {
    state: Arc<State>,
    resolver: Arc<Resolver>,
    connections: Connections,
}

impl Forwarder {
    /// A forwarder over `state` that resolves names through `resolver`, with connections of its
    /// own (one per worker).
    pub fn new(state: Arc<State>, resolver: Arc<Resolver>) -> Forwarder {
        let idle_timeout = state.load().config.proxy.upstream_idle_timeout;
        let connections = Connections::new(idle_timeout);
        Forwarder {
            state,
            resolver,
            connections,
        }
    }

    /// The live configuration and runtime state.
    pub(crate) fn state(&self) -> &Arc<State> {
        &self.state
    }

    /// This worker's connections to upstream servers.
    pub(crate) fn connections(&self) -> &Connections {
        &self.connections
    }

    /// Walks `pool` until a server answers `attempt`. See the module doc.
    pub(crate) async fn walk<A: Attempt>(
        &self,
        pool: &Pool,
        attempt: &mut A,
    ) -> Result<Answered<A::Conn, A::Answer>, ProxyError> {
        let mut last = LastFailure::default();
        let timeouts = self.timeouts(pool);
        for server in pool.order() {
            let Some(addrs) = self.targets_of(server, &mut last).await else {
                continue;
            };
            for target in server.rotate(&addrs) {
                let addr = target.addr;
                server.tried();
                let (mut conn, mut reused) =
                    match attempt.checkout(&self.connections, addr, timeouts).await {
                        Ok(got) => got,
                        Err(e) => {
                            last = self.connect_failed(pool, server, addr, &*e);
                            continue;
                        }
                    };
                loop {
                    let in_flight = server.begin();
                    let sent_at = Instant::now();
                    let why = match attempt.send(&mut conn).await {
                        Ok(answer) => {
                            server.health.passive_success();
                            return Ok(Answered {
                                conn,
                                answer,
                                addr,
                                in_flight,
                                upstream_time: sent_at.elapsed(),
                            });
                        }
                        Err(Failed::Stale(why)) if reused && attempt.retry_safe() => why,
                        Err(failed) => return Err(failed.into_error(server)),
                    };
                    // A pooled connection the upstream closed while it was reused: the request got
                    // no answer and is safe to repeat once, on a new connection.
                    warn!(pool = %pool.name, server = %server.authority, error = %why, "pooled connection failed before a response; retrying once on a fresh connection");
                    match Box::pin(attempt.connect(&self.connections, addr, timeouts.connect)).await
                    {
                        Ok(fresh) => {
                            conn = fresh;
                            reused = false;
                        }
                        Err(e) => {
                            // The server went away (stopped, recreated): nothing was answered,
                            // so the next one may take the request.
                            last = self.connect_failed(pool, server, addr, &*e);
                            break;
                        }
                    }
                }
            }
        }
        Err(ProxyError::no_upstream(pool, last))
    }

    /// What `pool`'s connections are taken with under the live snapshot: its own connect timeout
    /// (else `proxy.connect_timeout`) and `proxy.upstream_idle_timeout`.
    fn timeouts(&self, pool: &Pool) -> Timeouts {
        Timeouts {
            connect: pool.timeouts.connect,
            idle: pool.timeouts.idle,
        }
    }

    /// `server`'s addresses, looked up if not known yet; when the lookup fails, `None`, and what
    /// the 502 says if no other server answers goes into `last`.
    async fn targets_of(
        &self,
        server: &Upstream,
        last: &mut LastFailure,
    ) -> Option<Arc<Vec<Target>>> {
        match self.resolver.addresses_of(server).await {
            Ok(addrs) => Some(addrs),
            Err(e) => {
                *last = LastFailure {
                    server: server.authority.to_string(),
                    text: format!("{}: {e}", server.authority),
                };
                None
            }
        }
    }

    /// Records a failed connect to `server` at `addr` (passive health, a new lookup soon, one log
    /// line) and returns what the 502 says if no other server answers.
    fn connect_failed(
        &self,
        pool: &Pool,
        server: &Upstream,
        addr: SocketAddr,
        e: &(dyn std::error::Error + 'static),
    ) -> LastFailure {
        let reason = error_chain(e);
        server.health.passive_failure(&reason);
        // The name may have moved (a recreated container): look it up again.
        self.resolver.refresh_soon();
        warn!(pool = %pool.name, server = %server.authority, %addr, error = %reason, "connect failed");
        LastFailure {
            server: server.authority.to_string(),
            text: format!("{} ({addr}): {reason}", server.authority),
        }
    }
}

/// Idempotent methods (RFC 9110 §9.2.2): repeating one has the same effect as sending it once.
pub(crate) fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

/// Whether `e` is a connection that closed or reset before an answer: what a pooled keep-alive
/// connection looks like when the upstream closed it just as it was reused. One rule for both
/// paths' errors (hyper's and plain I/O ones).
pub(crate) fn is_stale(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cause {
        if let Some(h) = err.downcast_ref::<hyper::Error>() {
            if h.is_incomplete_message() || h.is_canceled() {
                return true;
            }
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind::*;
            if matches!(
                io.kind(),
                ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof
            ) {
                return true;
            }
        }
        cause = err.source();
    }
    false
}
