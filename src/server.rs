//! The accept loop shared by the proxy, the admin API and the demo upstreams.
//!
//! `accept` is the loop itself; [`serve`] runs hyper on each connection (the admin API, the
//! demo upstreams, and the proxy's connections that teal's own HTTP/1.1 path (`h1`) hands over).
//! [`serve`] takes a bound listener, a handler and a shutdown future. Each connection is served by
//! hyper-util's auto builder (HTTP/1.1, or HTTP/2 with prior knowledge), with upgrades enabled.
//! When `shutdown` resolves the listener is dropped (new connections are refused) and a [`Drain`]
//! is returned: its [`Drain::finish`] lets HTTP/1 connections finish their current request and
//! close, sends GOAWAY on HTTP/2, and waits for them up to a deadline. Upgraded tunnels are not
//! seen here; see the `upgrade` module.
//!
//! ## Timeouts per connection
//! hyper's own HTTP/1 header timer also runs while a kept-alive connection waits for its next
//! request, so it cannot tell "slow request head" from "idle". teal keeps its own account instead:
//! the socket is wrapped so every byte read is seen, and every request holds a guard until its
//! response body ends. A watchdog per connection closes it when
//! - it is idle (no request under way, no byte since the last response) for `idle`, or
//! - a request head has been arriving for `header` without being complete (slowloris).
//!
//! hyper's own header timer is off: re-armed for every request, it cost more than the watchdog,
//! which covers both cases.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use crate::clock::now_ms;
use futures_util::task::AtomicWaker;
use http::{Request, Response};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulConnection;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

use crate::socket::ClientSocket;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Marks a request that came over TLS (a request extension on the hyper path).
#[derive(Debug, Clone, Copy)]
pub struct Secure;

/// How long a connection may take to send a request head, and may stay idle between requests.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// From the first byte of a request head to the whole head.
    pub header: Duration,
    /// From the end of a response (or the connection's start) to the next request's first byte.
    pub idle: Duration,
    /// The longest a write to the client may wait for it to read (`client_send_timeout`).
    pub send: Duration,
}

impl Timeouts {
    /// The same limit for all.
    pub fn both(d: Duration) -> Timeouts {
        Timeouts {
            header: d,
            idle: d,
            send: d,
        }
    }
}

/// Everything [`serve`] needs to know besides the handler.
#[derive(Clone)]
pub struct ServeOptions {
    /// Header and idle timeouts.
    pub timeouts: Timeouts,
    /// The largest request head (HTTP/1), in bytes; larger gets 431.
    pub max_header_bytes: usize,
    /// The most header fields per request (HTTP/1); more gets 431.
    pub max_headers: usize,
    /// Connections open at once; more wait in the listen backlog until one closes. Shared by
    /// every listener served with clones of these options (the proxy's workers).
    slots: Arc<tokio::sync::Semaphore>,
    max_connections: usize,
    /// Concurrent streams per HTTP/2 connection.
    pub h2_max_concurrent_streams: u32,
    /// Where to count refused requests and connections, if anywhere.
    pub metrics: Option<Arc<crate::metrics::Metrics>>,
    /// Whether this listener serves HTTPS (`X-Forwarded-Proto: https`, HSTS, no redirect).
    pub secure: bool,
}

impl From<Timeouts> for ServeOptions {
    fn from(timeouts: Timeouts) -> ServeOptions {
        let limits = crate::config::Limits::default();
        ServeOptions {
            timeouts,
            max_header_bytes: limits.max_header_bytes,
            max_headers: limits.max_headers,
            slots: Arc::new(tokio::sync::Semaphore::new(limits.max_connections)),
            max_connections: limits.max_connections,
            h2_max_concurrent_streams: limits.h2_max_concurrent_streams,
            metrics: None,
            secure: false,
        }
    }
}

impl ServeOptions {
    /// The client-facing options of `config`, counting refusals in `metrics`.
    pub fn from_config(
        config: &crate::config::Config,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> ServeOptions {
        let l = &config.limits;
        ServeOptions {
            timeouts: Timeouts {
                header: config.proxy.header_timeout,
                idle: config.proxy.idle_timeout,
                send: config.proxy.client_send_timeout,
            },
            max_header_bytes: l.max_header_bytes,
            max_headers: l.max_headers,
            slots: Arc::new(tokio::sync::Semaphore::new(l.max_connections)),
            max_connections: l.max_connections,
            h2_max_concurrent_streams: l.h2_max_concurrent_streams,
            metrics: Some(metrics),
            secure: false,
        }
    }

    /// The same options with a connection limit of their own (for another listener that must
    /// not share the proxy's, like the admin API's).
    pub fn with_own_limit(&self) -> ServeOptions {
        let mut own = self.clone();
        own.slots = Arc::new(tokio::sync::Semaphore::new(self.max_connections));
        own
    }

    /// The same options (and connection limit) for the HTTPS listener.
    pub fn secure(&self) -> ServeOptions {
        ServeOptions {
            secure: true,
            ..self.clone()
        }
    }

    pub(crate) fn reject(&self, reason: &'static str) {
        if let Some(m) = &self.metrics {
            m.reject(reason);
        }
    }
}

/// Names a connection-level refusal by hyper (it answers 431 or 400 itself, or closes).
fn rejection(e: &(dyn std::error::Error + 'static)) -> Option<&'static str> {
    let mut cause = Some(e);
    while let Some(err) = cause {
        if let Some(h) = err.downcast_ref::<hyper::Error>() {
            if h.is_parse_too_large() {
                return Some("header_too_large");
            }
            if h.is_parse() || h.is_parse_status() {
                return Some("bad_request");
            }
            if h.is_timeout() {
                return Some("header_timeout");
            }
        }
        cause = err.source();
    }
    None
}

/// A connection's place within the connection limit (`[limits] max_connections`), held for as
/// long as the connection is open.
pub(crate) type Slot = tokio::sync::OwnedSemaphorePermit;

/// The connections of a listener that stopped accepting, still finishing their work.
#[derive(Clone, Default)]
pub struct Drain {
    stop: CancellationToken,
    connections: TaskTracker,
}

impl Drain {
    /// Cancelled when the connections should finish.
    pub(crate) fn stop(&self) -> &CancellationToken {
        &self.stop
    }

    /// The tasks the drain waits for.
    pub(crate) fn connections(&self) -> &TaskTracker {
        &self.connections
    }

    /// Asks every connection to finish and waits until they have or `deadline` passes.
    /// Returns `true` when all finished in time.
    pub async fn finish(self, deadline: tokio::time::Instant) -> bool {
        self.stop.cancel();
        self.connections.close();
        tokio::time::timeout_at(deadline, self.connections.wait())
            .await
            .is_ok()
    }
}

/// Serves connections from `listener` with `handler` until `shutdown` resolves.
pub async fn serve<H, F, B>(
    listener: TcpListener,
    options: impl Into<ServeOptions>,
    handler: H,
    shutdown: impl Future<Output = ()>,
) -> Drain
where
    H: Fn(Request<Incoming>, SocketAddr) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Result<Response<B>, Infallible>> + Send + 'static,
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let http = Http::new(options.into());
    accept(
        listener,
        http.options.clone(),
        shutdown,
        Drain::default(),
        move |tcp, peer, slot, stop| {
            let served = http.serve(
                ClientSocket::Plain(tcp),
                Vec::new(),
                peer,
                handler.clone(),
                stop,
            );
            async move {
                let _slot = slot;
                served.await;
            }
        },
    )
    .await
}

/// Accepts connections from `listener` until `shutdown` resolves, and runs `connection(socket,
/// peer, slot, stop)` for each on a task of `drain`'s, within the connection limit (the
/// connection holds `slot` while it is open). `stop` is cancelled when the returned [`Drain`] is
/// finished: the connection should then end once its current request is done.
pub(crate) async fn accept<C, Fut>(
    listener: TcpListener,
    options: ServeOptions,
    shutdown: impl Future<Output = ()>,
    drain: Drain,
    mut connection: C,
) -> Drain
where
    C: FnMut(TcpStream, SocketAddr, Slot, CancellationToken) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let slots = options.slots.clone();
    let Drain { stop, connections } = drain;
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // At the connection limit (shared by all workers), this connection waits for a slot and
        // this listener stops accepting meanwhile: further connections wait in the backlog. A
        // slot is taken only once a connection exists, so an idle worker never holds one.
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
            () = &mut shutdown => break,
        };
        let _ = tcp.set_nodelay(true);
        connections.spawn(connection(tcp, peer, slot, stop.clone()));
    }
    drop(listener);
    Drain { stop, connections }
}

/// hyper's HTTP/1.1 and HTTP/2 server, configured once from [`ServeOptions`].
#[derive(Clone)]
pub(crate) struct Http {
    builder: auto::Builder<TokioExecutor>,
    pub(crate) options: ServeOptions,
}

impl Http {
    pub(crate) fn new(options: ServeOptions) -> Http {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(None)
            // hyper's read buffer bounds the request head (431 past it); 8 KiB is its minimum.
            .max_buf_size(options.max_header_bytes.max(8192))
            .max_headers(options.max_headers);
        // Set explicitly rather than inherited: these bound HTTP/2 abuse such as rapid reset
        // (CVE-2023-44487) and stream floods.
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(options.h2_max_concurrent_streams)
            .max_pending_accept_reset_streams(Some(20))
            .max_local_error_reset_streams(Some(1024))
            .max_header_list_size(options.max_header_bytes as u32);
        Http { builder, options }
    }

    /// Serves the connection `socket` from `peer` with `handler` until it ends; `read` holds
    /// bytes already read from it (a request head teal's own HTTP/1.1 path handed over). Requests
    /// on the HTTPS listener carry the [`Secure`] extension.
    pub(crate) fn serve<H, F, B>(
        &self,
        socket: ClientSocket,
        read: Vec<u8>,
        peer: SocketAddr,
        handler: H,
        stop: CancellationToken,
    ) -> impl Future<Output = ()> + Send + 'static
    where
        H: Fn(Request<Incoming>, SocketAddr) -> F + Clone + Send + Sync + 'static,
        F: Future<Output = Result<Response<B>, Infallible>> + Send + 'static,
        B: Body + Send + Unpin + 'static,
        B::Data: Send,
        B::Error: Into<BoxError>,
    {
        let timeouts = self.options.timeouts;
        let activity = Arc::new(Activity::new());
        let requests = activity.clone();
        let secure = self.options.secure;
        let service = service_fn(move |mut req: Request<Incoming>| {
            if secure {
                req.extensions_mut().insert(Secure);
            }
            let busy = Busy::enter(requests.clone());
            // Boxed: hyper keeps room for this future in every connection for its whole life,
            // idle or not; a box holds it only while a request is under way.
            let response = Box::pin(handler(req, peer));
            async move {
                let response = response.await?;
                Ok::<_, Infallible>(response.map(|body| Tracked {
                    inner: body,
                    _busy: busy,
                }))
            }
        });
        let io = TokioIo::new(Watched {
            inner: socket,
            read,
            at: 0,
            activity: activity.clone(),
        });
        let conn = self
            .builder
            .serve_connection_with_upgrades(io, service)
            .into_owned();
        let options = self.options.clone();
        async move {
            match run_connection(conn, activity.expired(timeouts), stop.cancelled()).await {
                Ended::Done(Ok(())) => {}
                Ended::Done(Err(e)) => {
                    if let Some(reason) = rejection(&*e) {
                        options.reject(reason);
                    }
                    debug!(%peer, error = %e, "connection ended with an error");
                }
                Ended::Expired(reason) => {
                    if reason == HEAD_TIMEOUT {
                        options.reject("header_timeout");
                    }
                    debug!(%peer, reason, "connection closed");
                }
            }
        }
    }
}

/// How a connection ended.
enum Ended {
    /// hyper finished with it (the client closed, a drain finished it, or an error).
    Done(Result<(), BoxError>),
    /// The watchdog closed it.
    Expired(&'static str),
}

/// Serves `conn` until it ends or `watchdog` expires; when `stop` resolves, asks it to finish
/// gracefully (HTTP/1: after the current request; HTTP/2: GOAWAY) and goes on serving it.
///
/// The watchdog and the stop signal are polled only when their own timers or notifications fire,
/// not on every wake-up of the connection (several per request), through a [`Gate`].
async fn run_connection<C, W, X>(conn: C, watchdog: W, stop: X) -> Ended
where
    C: GracefulConnection<Error = BoxError>,
    W: Future<Output = &'static str>,
    X: Future<Output = ()>,
{
    let mut conn = std::pin::pin!(conn);
    let mut watchdog = std::pin::pin!(watchdog);
    let mut stop = std::pin::pin!(stop);
    let mut stopping = false;
    let gate = Arc::new(Gate::default());
    let gate_waker = Waker::from(gate.clone());
    std::future::poll_fn(move |cx| {
        if let Poll::Ready(result) = conn.as_mut().poll(cx) {
            return Poll::Ready(Ended::Done(result));
        }
        // Register before looking at the flag, so a wake-up in between is not lost.
        gate.parent.register(cx.waker());
        if gate.woken.swap(false, Ordering::AcqRel) {
            let mut gated = Context::from_waker(&gate_waker);
            if let Poll::Ready(reason) = watchdog.as_mut().poll(&mut gated) {
                return Poll::Ready(Ended::Expired(reason));
            }
            if !stopping && stop.as_mut().poll(&mut gated).is_ready() {
                stopping = true;
                conn.as_mut().graceful_shutdown();
                // Let the connection act on it at once.
                cx.waker().wake_by_ref();
            }
        }
        Poll::Pending
    })
    .await
}

/// Wakes the connection's task, and remembers that it was this waker that did.
struct Gate {
    woken: AtomicBool,
    parent: AtomicWaker,
}

impl Default for Gate {
    fn default() -> Gate {
        // Woken at first, so the gated futures are polled once and arm their timers.
        Gate {
            woken: AtomicBool::new(true),
            parent: AtomicWaker::new(),
        }
    }
}

impl Wake for Gate {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.parent.wake();
    }
}

const HEAD_TIMEOUT: &str = "request head not complete within header_timeout";

/// What one connection is doing, as far as the timeouts care.
struct Activity {
    /// Requests under way (until their response bodies end).
    busy: AtomicUsize,
    /// When the connection last became idle.
    idle_since: AtomicU64,
    /// When the first byte of a request head arrived while idle; 0 when none is arriving.
    head_since: AtomicU64,
    /// Since when a write to the client has been waiting for it to read; 0 when none is.
    write_blocked_since: AtomicU64,
    /// Wakes the watchdog when a request head starts arriving: the only change that moves its
    /// deadline earlier (from `idle` to `header`).
    changed: tokio::sync::Notify,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            busy: AtomicUsize::new(0),
            idle_since: AtomicU64::new(now_ms()),
            head_since: AtomicU64::new(0),
            write_blocked_since: AtomicU64::new(0),
            changed: tokio::sync::Notify::new(),
        }
    }

    fn read_some(&self) {
        if self.busy.load(Ordering::Relaxed) == 0 && self.head_since.load(Ordering::Relaxed) == 0 {
            self.head_since.store(now_ms(), Ordering::Relaxed);
            self.changed.notify_one();
        }
    }

    /// A write to the client could not go on (`blocked`) or went on: the send timeout runs while
    /// it cannot.
    fn write_blocked(&self, blocked: bool) {
        let since = self.write_blocked_since.load(Ordering::Relaxed);
        if blocked && since == 0 {
            self.write_blocked_since.store(now_ms(), Ordering::Relaxed);
            self.changed.notify_one();
        } else if !blocked && since != 0 {
            self.write_blocked_since.store(0, Ordering::Relaxed);
        }
    }

    /// Resolves when a timeout expires; the caller then drops (closes) the connection.
    async fn expired(&self, t: Timeouts) -> &'static str {
        loop {
            let now = now_ms();
            let blocked = self.write_blocked_since.load(Ordering::Relaxed);
            let deadline = if self.busy.load(Ordering::Relaxed) > 0 && blocked != 0 {
                let end = blocked + t.send.as_millis() as u64;
                if now >= end {
                    return "the client read nothing for client_send_timeout";
                }
                end
            } else if self.busy.load(Ordering::Relaxed) > 0 {
                // A request is under way: response_timeout and the client govern it.
                now + t.idle.as_millis() as u64
            } else {
                let head = self.head_since.load(Ordering::Relaxed);
                if head != 0 {
                    let end = head + t.header.as_millis() as u64;
                    if now >= end {
                        return HEAD_TIMEOUT;
                    }
                    end
                } else {
                    let end = self.idle_since.load(Ordering::Relaxed) + t.idle.as_millis() as u64;
                    if now >= end {
                        return "idle longer than idle_timeout";
                    }
                    end
                }
            };
            // Re-evaluate at the deadline, or as soon as a request head starts; a permit stored
            // while not waiting is taken at once.
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(deadline - now)) => {}
                () = self.changed.notified() => {}
            }
        }
    }
}

/// Held by a request from the moment its head was parsed until its response body ends.
struct Busy(Arc<Activity>);

impl Busy {
    fn enter(activity: Arc<Activity>) -> Busy {
        activity.busy.fetch_add(1, Ordering::Relaxed);
        activity.head_since.store(0, Ordering::Relaxed);
        // No wake-up needed here or on drop: while busy or idle, the watchdog's pending deadline is
        // never later than the real one, and it re-reads the state when it fires.
        Busy(activity)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        if self.0.busy.fetch_sub(1, Ordering::Relaxed) == 1 {
            self.0.idle_since.store(now_ms(), Ordering::Relaxed);
        }
    }
}

/// A response body that keeps its request counted until it ends.
struct Tracked<B> {
    inner: B,
    _busy: Busy,
}

impl<B: Body + Unpin> Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The client socket, noting every read for [`Activity`]; bytes read before hyper took the
/// connection over come first.
struct Watched {
    inner: ClientSocket,
    read: Vec<u8>,
    at: usize,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.at < self.read.len() {
            let n = buf.remaining().min(self.read.len() - self.at);
            buf.put_slice(&self.read[self.at..self.at + n]);
            self.at += n;
            if self.at == self.read.len() {
                self.read = Vec::new();
                self.at = 0;
            }
            self.activity.read_some();
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.read_some();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.activity.write_blocked(polled.is_pending());
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.activity.write_blocked(polled.is_pending());
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
