//! The connections to upstream servers.
//!
//! Each proxy worker owns one [`Connections`] (and a second one for mirrored copies, so they never
//! take a live request's connection): idle HTTP/1.1 keep-alive connections per server address
//! (`IP:port`), so they survive switches and reloads and a name that moves gets new
//! connections at once. A connection has no task of its own: whoever holds it drives it. The
//! request's task sends on it and polls it until the response head arrives, then the response
//! body (the hyper path's response body) keeps polling it while the bytes stream to the client,
//! and hands it back to the worker's idle list once the body is complete. Nothing crosses a task or
//! a thread on the way, unlike a pooled client whose connections run on tasks of their own.
//!
//! Two kinds of idle connection sit here: plain sockets of teal's own HTTP/1.1 path
//! (`h1`, most traffic) and hyper connections of the general path, which takes a plain
//! socket (after a probe) when it has none of its own to the address.
//!
//! Idle connections are closed after `proxy.upstream_idle_timeout` (default 4 s, below Node's 5 s
//! and Tomcat's 60 s keep-alive), so teal, not the upstream, closes them: a connection the
//! upstream closed while teal reused it is the classic source of spurious 502s (hyper#2136). A
//! connection that turns out closed when taken from the idle list is dropped and the next one (or
//! a new one) is used.
//!
//! The cache reads no configuration: each checkout is handed its pool's [`Timeouts`] (so a reload
//! changes them without dropping idle connections), and the reaper closes idle connections past
//! the latest idle timeout it was handed. The health checker uses [`ProbeClient`], a plain client
//! that never reuses.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http::{Request, Response, Uri};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;
use tower_service::Service;
use tracing::debug;

use crate::request_body::RequestBody;
use crate::sync::lock;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A connection's state machine (hyper's, with upgrades): reads, writes, and after a `101` hands
/// the socket to the upgrade.
type Driver = dyn Future<Output = hyper::Result<()>> + Send;

/// One proxy worker's connections to upstream servers. See the module doc. A clone shares them.
#[derive(Clone)]
pub struct Connections {
    shared: Arc<Shared>,
}

struct Shared {
    idle: Mutex<HashMap<SocketAddr, Vec<Idle>>>,
    /// Plain sockets of teal's own HTTP/1.1 path (`h1`), idle between responses, per
    /// address. A list, not a hash map: there are a handful of addresses, and hashing one cost
    /// more than comparing them all.
    raw: Mutex<Vec<(SocketAddr, Vec<IdleRaw>)>>,
    sweeper: Sweeper,
    http: HttpConnector,
    /// The latest `upstream_idle_timeout` handed in, for the reaper.
    idle_timeout: NanosCell,
}

/// What a connection is taken with: its pool's connect timeout and `proxy.upstream_idle_timeout`,
/// both from the live snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Time to open a TCP connection to one address.
    pub connect: Duration,
    /// How long an idle connection may be reused.
    pub idle: Duration,
}

/// An idle plain socket and since when.
type IdleRaw = (TcpStream, Instant);

struct Idle {
    conn: Conn,
    since: Instant,
}

impl Connections {
    /// An empty set of connections; closes idle ones past `idle_timeout` (or the latest one a
    /// checkout was handed) from a task on the current runtime (which must exist).
    pub fn new(idle_timeout: Duration) -> Connections {
        let shared = Arc::new(Shared {
            idle: Mutex::new(HashMap::new()),
            raw: Mutex::new(Vec::new()),
            sweeper: Sweeper::default(),
            http: http_connector(),
            idle_timeout: NanosCell::new(idle_timeout),
        });
        tokio::spawn(reap(Arc::downgrade(&shared)));
        Connections { shared }
    }

    /// A connection to `addr` ready for a request: the most recently used idle one that is still
    /// open, else a new one. The error is a connect failure, worth trying the next address for.
    pub async fn checkout(&self, addr: SocketAddr, timeouts: Timeouts) -> Result<Lease, BoxError> {
        self.shared.idle_timeout.set(timeouts.idle);
        let max_idle = timeouts.idle;
        loop {
            let idle = {
                let mut all = lock(&self.shared.idle);
                all.get_mut(&addr).and_then(Vec::pop)
            };
            let Some(Idle { mut conn, since }) = idle else {
                break;
            };
            if since.elapsed() >= max_idle {
                continue;
            }
            if std::future::poll_fn(|cx| Poll::Ready(conn.poll_ready_now(cx))).await {
                return Ok(self.lease(conn, true));
            }
        }
        // An idle socket of teal's own HTTP/1.1 path serves as well.
        if let Some(stream) = self.idle_raw(addr, max_idle) {
            return Ok(self.lease(Self::handshake(stream, addr).await?, true));
        }
        // Boxed: connecting is rare, and its future would otherwise make every request's larger.
        Box::pin(self.connect(addr, timeouts.connect)).await
    }

    /// A new connection to `addr`, never a pooled one, within `connect_timeout`.
    pub async fn connect(
        &self,
        addr: SocketAddr,
        connect_timeout: Duration,
    ) -> Result<Lease, BoxError> {
        let stream = self.connect_raw(addr, connect_timeout).await?;
        Ok(self.lease(Self::handshake(stream, addr).await?, false))
    }

    async fn handshake(stream: TcpStream, addr: SocketAddr) -> Result<Conn, BoxError> {
        let (sender, driver) = hyper::client::conn::http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await?;
        Ok(Conn {
            sender,
            driver: Some(Box::pin(driver.with_upgrades())),
            addr,
        })
    }

    /// A socket to `addr` for teal's own HTTP/1.1 path, and whether it served a request before:
    /// the most recently used idle one that is still quiet, else a new one. The error is a
    /// connect failure.
    pub async fn checkout_raw(
        &self,
        addr: SocketAddr,
        timeouts: Timeouts,
    ) -> Result<(TcpStream, bool), BoxError> {
        self.shared.idle_timeout.set(timeouts.idle);
        if let Some(stream) = self.idle_raw(addr, timeouts.idle) {
            return Ok((stream, true));
        }
        Ok((
            Box::pin(self.connect_raw(addr, timeouts.connect)).await?,
            false,
        ))
    }

    /// The most recently used idle plain socket to `addr` that is not past its time and is quiet:
    /// one that the upstream closed or sent bytes on while it was idle is never used (the bytes
    /// would be taken as the answer to the next request, another client's).
    fn idle_raw(&self, addr: SocketAddr, max_idle: Duration) -> Option<TcpStream> {
        loop {
            let (stream, since) = lock(&self.shared.raw)
                .iter_mut()
                .find(|(a, _)| *a == addr)
                .and_then(|(_, idle)| idle.pop())?;
            if since.elapsed() < max_idle && quiet(&stream) {
                return Some(stream);
            }
        }
    }

    /// A new socket to `addr` for teal's own HTTP/1.1 path, within `connect_timeout`.
    pub async fn connect_raw(
        &self,
        addr: SocketAddr,
        connect_timeout: Duration,
    ) -> Result<TcpStream, BoxError> {
        let uri = Uri::try_from(format!("http://{addr}/"))?;
        let connecting = self.shared.http.clone().call(uri);
        Ok(within(connect_timeout, connecting).await?.into_inner())
    }

    /// Keeps `stream` for the next request to `addr`: its last response was read to the end, and
    /// nothing followed it. From now on the worker's sweeper is woken if the upstream sends
    /// anything or closes, and closes the socket then (see [`Shared::sweep`]).
    pub fn release_raw(&self, addr: SocketAddr, stream: TcpStream) {
        if let Some(waker) = self.shared.sweeper.waker() {
            let mut cx = Context::from_waker(&waker);
            if stream.poll_read_ready(&mut cx).is_ready() && !quiet(&stream) {
                return;
            }
        }
        let mut all = lock(&self.shared.raw);
        let since = Instant::now();
        match all.iter_mut().find(|(a, _)| *a == addr) {
            Some((_, idle)) => idle.push((stream, since)),
            None => all.push((addr, vec![(stream, since)])),
        }
    }

    fn lease(&self, conn: Conn, reused: bool) -> Lease {
        Lease {
            conn: Some(conn),
            reused,
            home: self.shared.clone(),
        }
    }
}

impl Shared {
    fn put_back(&self, mut conn: Conn) {
        if let Some(waker) = self.sweeper.waker() {
            // Drive it once on the sweeper's behalf, so whatever the upstream does while the
            // connection is idle wakes the sweeper.
            if !conn.poll_ready_now(&mut Context::from_waker(&waker)) {
                return;
            }
        }
        let mut all = lock(&self.idle);
        all.entry(conn.addr).or_default().push(Idle {
            conn,
            since: Instant::now(),
        });
    }

    /// Closes every idle connection the upstream closed or sent bytes on since it went idle, as
    /// nginx's keep-alive close handler does; registers `cx` to be woken by the next such event.
    fn sweep(&self, cx: &mut Context<'_>) {
        lock(&self.raw).retain_mut(|(_, conns)| {
            conns.retain(|(stream, _)| stream.poll_read_ready(cx).is_pending() || quiet(stream));
            !conns.is_empty()
        });
        lock(&self.idle).retain(|_, conns| {
            conns.retain_mut(|c| c.conn.poll_ready_now(cx));
            !conns.is_empty()
        });
    }

    /// Closes idle connections older than `max_idle` (the latest `upstream_idle_timeout`).
    fn reap(&self, max_idle: Duration) {
        let mut all = lock(&self.idle);
        all.retain(|_, conns| {
            conns.retain(|c| c.since.elapsed() < max_idle);
            !conns.is_empty()
        });
        drop(all);
        lock(&self.raw).retain_mut(|(_, conns)| {
            conns.retain(|(_, since)| since.elapsed() < max_idle);
            !conns.is_empty()
        });
    }
}

/// The worker's upkeep of its idle connections: closes those past their time every so often, and
/// those the upstream closes or writes to as soon as it does (see [`Shared::sweep`]).
async fn reap(shared: std::sync::Weak<Shared>) {
    loop {
        let Some(max_idle) = shared.upgrade().map(|s| s.idle_timeout.get()) else {
            return;
        };
        let period = (max_idle / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
        let mut timer = std::pin::pin!(tokio::time::sleep(period));
        let ended = std::future::poll_fn(|cx| {
            let Some(shared) = shared.upgrade() else {
                return Poll::Ready(true);
            };
            shared.sweeper.set(cx.waker());
            shared.sweep(cx);
            timer.as_mut().poll(cx).map(|()| false)
        })
        .await;
        let Some(shared) = shared.upgrade().filter(|_| !ended) else {
            return;
        };
        shared.reap(max_idle);
    }
}

/// Whether an idle socket is still as it was left: open, with nothing to read. One non-blocking
/// read; a quiet socket's readiness is cleared by it.
fn quiet(stream: &TcpStream) -> bool {
    let mut byte = [0u8; 1];
    matches!(stream.try_read(&mut byte), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

/// The waker of the task that sweeps a worker's idle connections ([`reap`]), for registering
/// idle sockets with it when they are put back.
#[derive(Default)]
struct Sweeper(Mutex<Option<std::task::Waker>>);

impl Sweeper {
    fn set(&self, waker: &std::task::Waker) {
        let mut slot = lock(&self.0);
        if !slot.as_ref().is_some_and(|w| w.will_wake(waker)) {
            *slot = Some(waker.clone());
        }
    }

    /// The sweeper's waker, once it has run.
    fn waker(&self) -> Option<std::task::Waker> {
        lock(&self.0).clone()
    }
}

/// One HTTP/1.1 connection to an upstream server and the state machine that drives it.
struct Conn {
    sender: http1::SendRequest<RequestBody>,
    /// `None` once the connection has ended (closed, failed, or upgraded).
    driver: Option<Pin<Box<Driver>>>,
    addr: SocketAddr,
}

impl Conn {
    /// Drives the connection's reads and writes; `false` once it has ended.
    fn drive(&mut self, cx: &mut Context<'_>) -> bool {
        if let Some(driver) = &mut self.driver {
            if let Poll::Ready(result) = driver.as_mut().poll(cx) {
                if let Err(e) = result {
                    debug!(addr = %self.addr, error = %e, "upstream connection failed");
                }
                self.driver = None;
            }
        }
        self.driver.is_some()
    }

    /// Whether an idle connection can take a request right now (it may have been closed by the
    /// upstream while idle).
    fn poll_ready_now(&mut self, cx: &mut Context<'_>) -> bool {
        self.drive(cx) && matches!(self.sender.poll_ready(cx), Poll::Ready(Ok(())))
    }
}

/// A connection taken for one request: goes back to the idle list when [`Lease::release`]d after
/// a complete response, and is closed when dropped otherwise.
pub struct Lease {
    conn: Option<Conn>,
    reused: bool,
    home: Arc<Shared>,
}

impl Lease {
    /// Whether the connection served an earlier request (so it may have gone stale).
    pub fn reused(&self) -> bool {
        self.reused
    }

    /// Sends `req` and drives the connection until the response head arrives.
    pub async fn send(
        &mut self,
        req: Request<RequestBody>,
    ) -> Result<Response<Incoming>, hyper::Error> {
        let conn = self.conn.as_mut().expect("a lease holds its connection");
        let mut response = std::pin::pin!(conn.sender.send_request(req));
        std::future::poll_fn(|cx| {
            conn.drive(cx);
            response.as_mut().poll(cx)
        })
        .await
    }

    /// Drives the connection while its response body is read.
    pub fn drive(&mut self, cx: &mut Context<'_>) {
        if let Some(conn) = &mut self.conn {
            conn.drive(cx);
        }
    }

    /// The response was read to its end: the connection may serve the next request.
    pub fn release(mut self) {
        if let Some(conn) = self.conn.take() {
            if conn.driver.is_some() && !conn.sender.is_closed() {
                self.home.put_back(conn);
            }
        }
    }

    /// The connection's state machine, to be run to its end: after a `101`, it hands the socket
    /// to the upgrade.
    pub fn into_driver(mut self) -> impl Future<Output = ()> + Send {
        let driver = self.conn.take().and_then(|c| c.driver);
        async move {
            if let Some(driver) = driver {
                if let Err(e) = driver.await {
                    debug!(error = %e, "upstream connection failed during the upgrade");
                }
            }
        }
    }
}

/// The health checker's client: never reuses a connection, and connects within the timeout its
/// caller last set (one client per checked server, so that is the server's pool's).
pub struct ProbeClient {
    client: Client<ProbeConnector, RequestBody>,
    connect_timeout: Arc<NanosCell>,
}

impl ProbeClient {
    /// A client that connects anew for every request.
    pub fn new(connect_timeout: Duration) -> ProbeClient {
        let connect_timeout = Arc::new(NanosCell::new(connect_timeout));
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(0)
            .build(ProbeConnector {
                http: http_connector(),
                timeout: connect_timeout.clone(),
            });
        ProbeClient {
            client,
            connect_timeout,
        }
    }

    /// Sends `req` on a new connection, opened within `connect_timeout`.
    pub async fn request(
        &self,
        req: Request<RequestBody>,
        connect_timeout: Duration,
    ) -> Result<Response<Incoming>, hyper_util::client::legacy::Error> {
        self.connect_timeout.set(connect_timeout);
        self.client.request(req).await
    }
}

fn http_connector() -> HttpConnector {
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    http.set_keepalive(Some(Duration::from_secs(60)));
    http
}

/// `connecting`, failed when it takes longer than `timeout`.
async fn within<T>(
    timeout: Duration,
    connecting: impl Future<Output = Result<T, impl Into<BoxError>>>,
) -> Result<T, BoxError> {
    match tokio::time::timeout(timeout, connecting).await {
        Ok(result) => result.map_err(Into::into),
        Err(_) => Err(format!("connect timed out after {timeout:?}").into()),
    }
}

/// `HttpConnector` with the connect timeout its [`ProbeClient`] was last handed.
#[derive(Clone)]
struct ProbeConnector {
    http: HttpConnector,
    timeout: Arc<NanosCell>,
}

impl tower_service::Service<Uri> for ProbeConnector {
    type Response = TokioIo<TcpStream>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.http.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        Box::pin(within(self.timeout.get(), self.http.call(uri)))
    }
}

/// A duration that can be replaced while shared (nanoseconds in an atomic).
struct NanosCell(AtomicU64);

impl NanosCell {
    fn new(d: Duration) -> NanosCell {
        NanosCell(AtomicU64::new(nanos(d)))
    }

    fn set(&self, d: Duration) {
        self.0.store(nanos(d), Ordering::Relaxed);
    }

    fn get(&self) -> Duration {
        Duration::from_nanos(self.0.load(Ordering::Relaxed))
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}
