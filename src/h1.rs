//! teal's own HTTP/1.1 path for plain requests.
//!
//! Most requests through a blue/green proxy are plain: HTTP/1.1, no body, no upgrade. For those,
//! hyper's general machinery (a `Request` with a `HeaderMap` built and taken apart again, a client
//! connection with its own dispatch, 16 KiB of buffers kept by every connection for its whole
//! life) cost more than everything else together: about 40,000 instructions per request against
//! nginx's 18,500, and 20 KiB per idle client. Here a request head is parsed with `httparse`
//! straight from the bytes read, rewritten into the upstream's head as bytes (the rules of
//! [`crate::headers`]), the upstream's head is parsed and rewritten the same way, and the body is
//! relayed by its framing without being decoded: `Content-Length`, chunked (passed through as it
//! is), or until the upstream closes (re-chunked for the client, whose connection stays open).
//!
//! Anything else is handed to hyper: the connection, with the bytes read so far, goes to the
//! general path ([`crate::proxy::Proxy::handle`]) for the rest of its life. That is a request with
//! a body, `Expect`, `Transfer-Encoding`, `Upgrade`, several `Cookie` fields (joined there) or any
//! `Connection` token but `keep-alive` and `close`; an HTTP/1.0 or HTTP/2 client; an absolute-form
//! target or one with bytes that want a closer look; a head `httparse` refuses, that is over the
//! limits, or over 16 KiB; a route teal answers itself (a preview the client may not use). So
//! every refusal and error page a client can provoke with its request is the general path's, one
//! implementation.
//!
//! A connection holds no buffer while idle: buffers come from a per-thread free list when a
//! request arrives and go back once its response has been sent.

use std::cell::RefCell;
use std::io;
use std::mem::MaybeUninit;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use http::{Method, StatusCode};
use tokio::io::{AsyncWriteExt, Interest};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Sleep;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error};

use crate::access::{Exchange, Logged};
use crate::client::Upstreams;
use crate::forward::{self, Attempt, Failed, Forwarder};
use crate::framing::{BodyRelay, Framing, Step};
use crate::headers::{self, RequestId};
use crate::pool::{InFlight, Pool};
use crate::preview::Preview;
use crate::proxy::{Proxy, ProxyError};
use crate::route::{self, Decision};
use crate::server::{self, Drain, Http, ServeOptions};
use crate::state::Snapshot;

/// Every read buffer's size, and so the largest request or response head this path handles.
const BUFFER: usize = 16 * 1024;
/// Header fields parsed per request; more go to hyper (which applies `limits.max_headers`).
const REQUEST_FIELDS: usize = 64;
/// Header fields accepted per upstream response.
const RESPONSE_FIELDS: usize = 128;
/// Buffers each thread keeps for reuse.
const SPARE_BUFFERS: usize = 256;

/// Serves proxy connections from `listener` until `shutdown` resolves: this path for plain
/// requests, hyper for the rest. See the module doc.
pub async fn serve(
    listener: TcpListener,
    options: ServeOptions,
    proxy: Proxy,
    shutdown: impl std::future::Future<Output = ()>,
) -> Drain {
    let http = Arc::new(Http::new(options));
    server::accept(
        listener,
        http.options.clone(),
        shutdown,
        move |tcp, peer, stop| connection(tcp, peer, proxy.clone(), http.clone(), stop),
    )
    .await
}

/// What the connection does after one exchange.
enum Next {
    /// Wait for the next request; bytes of it may already be here (pipelining).
    KeepAlive(Option<Buffer>),
    /// Close the connection.
    Close,
    /// Give the connection and these bytes of the current request to hyper.
    HandOff(Vec<u8>),
}

async fn connection(
    mut tcp: TcpStream,
    peer: SocketAddr,
    proxy: Proxy,
    http: Arc<Http>,
    stop: CancellationToken,
) {
    let idle_timeout = http.options.timeouts.idle;
    // The connection's one timer: the idle timeout between requests, the response timeout
    // during one (a timer made and dropped per request cost more than re-arming this one).
    let timer = tokio::time::sleep(idle_timeout);
    tokio::pin!(timer);
    // Made once: registering for the drain signal anew for every request cost more than
    // anything else in this loop.
    let stopped = stop.cancelled();
    tokio::pin!(stopped);
    let mut pending: Option<Buffer> = None;
    loop {
        if pending.is_none() {
            // Re-arming a timer to a later deadline only moves a number; it is not re-inserted.
            timer
                .as_mut()
                .reset(tokio::time::Instant::now() + idle_timeout);
            // The drain signal is polled last: a request already here is served (its response
            // says `Connection: close`), like one under way.
            tokio::select! {
                biased;
                ready = std::future::poll_fn(|cx| tcp.poll_read_ready(cx)) => if ready.is_err() { return },
                () = &mut timer => {
                    debug!(%peer, reason = "idle longer than idle_timeout", "connection closed");
                    return;
                }
                () = &mut stopped => return,
            }
        } else if stop.is_cancelled() {
            return;
        }
        let buffer = pending.take().unwrap_or_else(Buffer::take);
        // Boxed: only a connection with a request under way holds the exchange's state.
        let next = Box::pin(exchange(
            &tcp,
            peer,
            &proxy,
            &http.options,
            &stop,
            buffer,
            timer.as_mut(),
        ))
        .await;
        match next {
            Next::KeepAlive(rest) => pending = rest,
            Next::Close => {
                let _ = tcp.shutdown().await;
                return;
            }
            Next::HandOff(read) => {
                let handler = move |req, peer| proxy.clone().handle(req, peer);
                // Boxed: hyper's connection state is large, and only these connections need it.
                Box::pin(http.serve(tcp, read, peer, handler, stop.clone())).await;
                return;
            }
        }
    }
}

/// Reads one request head, forwards it, and relays the response.
async fn exchange(
    tcp: &TcpStream,
    peer: SocketAddr,
    proxy: &Proxy,
    options: &ServeOptions,
    stop: &CancellationToken,
    mut input: Buffer,
    timer: Pin<&mut Sleep>,
) -> Next {
    let snap = proxy.forwarder().state().load();
    let mut request = Head::take();
    let mut head_deadline = None;
    let mut awaiting_body = false;
    let start = Instant::now();
    let mut plan = loop {
        if !input.is_empty() {
            treat_minor_versions_as_1_1(input.filled_mut());
            match plan_request(input.filled(), peer, &snap, options, &mut request) {
                Parsed::Ready(plan) => break plan,
                Parsed::HandOff => return Next::HandOff(input.into_vec()),
                Parsed::Partial if input.len() >= BUFFER => return Next::HandOff(input.into_vec()),
                Parsed::Partial => {}
                Parsed::Body => awaiting_body = true,
            }
            head_deadline
                .get_or_insert_with(|| tokio::time::Instant::now() + options.timeouts.header);
        }
        let read = match head_deadline {
            None => read_into(tcp, &mut input).await,
            Some(at) => match tokio::time::timeout_at(at, read_into(tcp, &mut input)).await {
                Ok(read) => read,
                // A whole head whose body is slow: the general path streams the body to the
                // upstream as it comes, with its own rules.
                Err(_) if awaiting_body => return Next::HandOff(input.into_vec()),
                Err(_) => {
                    options.reject("header_timeout");
                    debug!(%peer, reason = "request head not complete within header_timeout", "connection closed");
                    input.give();
                    return Next::Close;
                }
            },
        };
        if !matches!(read, Ok(n) if n > 0) {
            input.give();
            return Next::Close;
        }
    };
    // The body goes to the upstream in the same write as the head.
    let whole = plan.head_len + plan.body_len;
    request.extend_from_slice(&input.filled()[plan.head_len..whole]);
    input.consume(whole);
    plan.close |= stop.is_cancelled();
    let close = plan.close;
    let mut exchange = Exchange::new(
        start,
        peer,
        plan.client,
        plan.method.clone(),
        plan.logged.take(),
        plan.pool.clone(),
    );
    let mut upstream_buffer = Buffer::take();
    let mut head = Head::take();
    let client = Client {
        tcp,
        send_timeout: snap.config.proxy.client_send_timeout,
    };
    let forwarded = tokio::select! {
        biased;
        forwarded = forward(
            proxy.forwarder(),
            &plan,
            &request,
            &mut upstream_buffer,
            &mut head,
            &snap,
            timer,
        ) => forwarded,
        // The client went away: the exchange (and its upstream connection) ends here.
        () = client.gone() => {
            debug!(%peer, "client closed its connection while its request was under way");
            exchange.status = 499;
            upstream_buffer.give();
            input.give();
            return Next::Close;
        }
    };
    let keep_client = match forwarded {
        Err(err) => {
            error!(peer = %peer, pool = %plan.pool.name, error = %err, "request failed");
            let page = synthetic(&err, plan.method == Method::HEAD, close, &mut head);
            exchange.status = err.status().as_u16();
            exchange.bytes = page as u64;
            exchange.failed = err.server().map(str::to_string);
            drop(exchange);
            client.write(&head).await.is_ok()
        }
        Ok(sent) => {
            let relayed = relay(
                client,
                sent,
                &mut head,
                &mut upstream_buffer,
                exchange,
                proxy.forwarder().upstreams(),
                snap.config.proxy.upstream_body_timeout,
            )
            .await;
            relayed.unwrap_or_else(|e| {
                debug!(%peer, error = %e, "response not relayed to its end");
                false
            })
        }
    };
    upstream_buffer.give();
    if !keep_client || close {
        input.give();
        return Next::Close;
    }
    if input.is_empty() {
        input.give();
        Next::KeepAlive(None)
    } else {
        Next::KeepAlive(Some(input))
    }
}

/// The upstream request head this path writes for the request head in `buf` from `peer`, or
/// `None` when the general path would take the request. The same code the proxy runs, for the
/// micro-benchmarks (`benches/route.rs`).
pub fn rewrite_request(
    buf: &[u8],
    peer: SocketAddr,
    snap: &Snapshot,
    options: &ServeOptions,
) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    match plan_request(buf, peer, snap, options, &mut out) {
        Parsed::Ready(_) => Some(out),
        Parsed::Partial | Parsed::Body | Parsed::HandOff => None,
    }
}

/// The client's response head this path writes for the upstream response head in `buf`, or
/// `None` if it is incomplete or refused. For the micro-benchmarks, like [`rewrite_request`].
pub fn rewrite_response(buf: &[u8], head_request: bool) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    match plan_response(buf, head_request, false, None, &mut out) {
        ParsedResponse::Ready(_) => Some(out),
        _ => None,
    }
}

/// What [`relay_in_memory`] found: what teal would do with an upstream's response.
#[doc(hidden)]
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RelayOutcome {
    /// teal answers 502 itself (the head refused or cut short, a chunked body malformed from the
    /// start): nothing of the upstream's goes to the client, and `client` is empty.
    pub bad_gateway: bool,
    /// What the client receives.
    pub client: Vec<u8>,
    /// The client's connection stays open after it (else it closes after `client`).
    pub client_open: bool,
    /// The upstream connection goes back to the pool.
    pub upstream_reused: bool,
    /// Upstream bytes read by then.
    pub read: usize,
    /// The body's framing, once the head was taken.
    pub framing: Option<Framing>,
}

/// Runs the relay's decisions ([`plan_response`], then the body's [`BodyRelay`]) over the
/// upstream's bytes `upstream` as reads deliver them: cut at the offsets in `splits` (and by the
/// read buffer's size), the end of the bytes being the upstream's end of stream. The same code
/// the proxy runs, without the sockets, for the fuzz target `h1_relay` and the property tests.
#[doc(hidden)]
pub fn relay_in_memory(upstream: &[u8], splits: &[usize], head_request: bool) -> RelayOutcome {
    let mut reads = Reads::new(upstream, splits);
    let mut buffer = Buffer::take();
    let mut outcome = relay_buffered(&mut reads, &mut buffer, head_request);
    buffer.give();
    outcome.read = reads.at;
    outcome
}

fn relay_buffered(reads: &mut Reads<'_>, buffer: &mut Buffer, head_request: bool) -> RelayOutcome {
    let bad_gateway = RelayOutcome {
        bad_gateway: true,
        ..RelayOutcome::default()
    };
    let mut head = Vec::new();
    let mut interim = false;
    let plan =
        |bytes: &[u8], head: &mut Vec<u8>| plan_response(bytes, head_request, false, None, head);
    let response = loop {
        if reads.read(buffer) == 0 {
            return bad_gateway;
        }
        match next_head(buffer, &mut interim, &mut head, plan) {
            Ok(Some(response)) => break response,
            Ok(None) => {}
            Err(_) => return bad_gateway,
        }
    };
    let Ok((mut body, mut step)) = first_step(&response, buffer, &mut head) else {
        return bad_gateway;
    };
    let mut outcome = RelayOutcome {
        client: head,
        framing: Some(response.framing),
        ..RelayOutcome::default()
    };
    loop {
        outcome
            .client
            .extend_from_slice(step.as_is_part(buffer.filled()));
        if step.ended {
            outcome.client_open = true;
            outcome.upstream_reused = step.clean && response.keep_alive;
            return outcome;
        }
        buffer.clear();
        if reads.read(buffer) == 0 {
            outcome.client_open = body.finish_at_eof(&mut outcome.client) == Ok(true);
            return outcome;
        }
        match body.next(buffer.filled(), &mut outcome.client) {
            Ok(next) => step = next,
            Err(_) => return outcome,
        }
    }
}

/// Reads of an upstream's bytes in memory, for [`relay_in_memory`].
struct Reads<'a> {
    bytes: &'a [u8],
    /// Where reads stop, in order; the last is the end.
    cuts: Vec<usize>,
    at: usize,
}

impl<'a> Reads<'a> {
    fn new(bytes: &'a [u8], splits: &[usize]) -> Reads<'a> {
        let mut cuts: Vec<usize> = splits
            .iter()
            .copied()
            .filter(|&c| c > 0 && c < bytes.len())
            .collect();
        cuts.push(bytes.len());
        cuts.sort_unstable();
        cuts.dedup();
        Reads { bytes, cuts, at: 0 }
    }

    /// As [`read_into`]: what fits of the bytes up to the next cut; 0 at the end.
    fn read(&mut self, buffer: &mut Buffer) -> usize {
        let cut = self
            .cuts
            .iter()
            .copied()
            .find(|&c| c > self.at)
            .unwrap_or(self.at);
        let space = buffer.space();
        let n = (cut - self.at).min(space.len());
        space[..n].copy_from_slice(&self.bytes[self.at..self.at + n]);
        buffer.end += n;
        self.at += n;
        n
    }
}

/// A request this path forwards, its upstream head already written.
struct Plan {
    head_len: usize,
    /// The request body's length (`Content-Length`); the whole body follows the head in the
    /// buffer.
    body_len: usize,
    method: Method,
    pool: Arc<Pool>,
    client: IpAddr,
    /// The target as received, for the access log (only when it is on).
    logged: Option<Box<Logged>>,
    /// The client's connection closes after this response (it asked, or teal is draining).
    close: bool,
    /// Safe to send again on a fresh connection if a pooled one turns out closed: idempotent and
    /// without a body, as on the general path.
    idempotent: bool,
    /// Set for a preview route: what its response needs rewritten.
    preview: Option<Preview>,
}

enum Parsed {
    Ready(Plan),
    /// The head is not complete yet.
    Partial,
    /// The head is complete and this path takes it once its body is in the buffer too.
    Body,
    HandOff,
}

/// RFC 9112 §2.3: a request of a higher HTTP/1.x minor version is served as HTTP/1.1. Once the
/// request line is complete, an `HTTP/1.N` (N >= 2) at its end is rewritten to `HTTP/1.1` in
/// place, for this path and for hyper alike (hyper's parser refuses other versions).
fn treat_minor_versions_as_1_1(buf: &mut [u8]) {
    let Some(end) = buf.iter().position(|&b| b == b'\n') else {
        return;
    };
    let line = &mut buf[..end];
    let line = line.strip_suffix(b"\r").map_or(line.len(), <[u8]>::len);
    if let Some(version) = buf[..line].rsplit(|&b| b == b' ').next() {
        if version.len() == 8
            && version.starts_with(b"HTTP/1.")
            && (b'2'..=b'9').contains(&version[7])
        {
            buf[line - 1] = b'1';
        }
    }
}

/// Target bytes taken as they are; anything else (`"#<>\`{|}`, controls, non-ASCII) is left to
/// hyper's URI parser to accept or refuse.
fn plain_target_byte(b: u8) -> bool {
    matches!(b, 0x21 | 0x24..=0x3B | 0x3D | 0x3F..=0x5F | 0x61..=0x7A | 0x7E)
}

/// Parses a request head from `buf` and, if this path takes it, writes the upstream's head into
/// `out`: hop-by-hop fields dropped, `X-Forwarded-*` set, `Host` kept, as
/// [`crate::proxy::Proxy::handle`] does.
fn plan_request(
    buf: &[u8],
    peer: SocketAddr,
    snap: &Snapshot,
    options: &ServeOptions,
    out: &mut Vec<u8>,
) -> Parsed {
    let mut fields = [const { MaybeUninit::uninit() }; REQUEST_FIELDS];
    let mut req = httparse::Request::new(&mut []);
    let head_len = match req.parse_with_uninit_headers(buf, &mut fields) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(_) => return Parsed::HandOff,
    };
    if head_len > options.max_header_bytes || req.headers.len() > options.max_headers {
        return Parsed::HandOff;
    }
    let (Some(method), Some(target), Some(1)) = (req.method, req.path, req.version) else {
        return Parsed::HandOff;
    };
    if method == "CONNECT"
        || method == "PRI"
        || !target.starts_with('/')
        || target.len() > snap.config.limits.max_uri_bytes
        || !target.bytes().all(plain_target_byte)
    {
        return Parsed::HandOff;
    }
    let Ok(method) = Method::from_bytes(method.as_bytes()) else {
        return Parsed::HandOff;
    };
    let mut host = None;
    let mut length = None;
    let mut close = false;
    let mut cookie = false;
    let mut kinds = [Field::Other; REQUEST_FIELDS];
    for (field, kind) in req.headers.iter().zip(&mut kinds) {
        *kind = Field::of(field.name.as_bytes());
        match kind {
            // Two Hosts: the general path decides.
            Field::Host if host.replace(field.value).is_some() => return Parsed::HandOff,
            // Two Cookies: the general path joins them (`headers::join_cookies`).
            Field::Cookie if std::mem::replace(&mut cookie, true) => return Parsed::HandOff,
            // Repeated or not plain digits: the general path decides.
            Field::ContentLength => match parse_length(field.value) {
                Some(n) if length.replace(n).is_none() => {}
                _ => return Parsed::HandOff,
            },
            Field::TransferEncoding | Field::Expect | Field::Upgrade => return Parsed::HandOff,
            Field::Connection => {
                for token in tokens(field.value) {
                    if token.eq_ignore_ascii_case(b"close") {
                        close = true;
                    } else if !token.eq_ignore_ascii_case(b"keep-alive") {
                        return Parsed::HandOff;
                    }
                }
            }
            _ => {}
        }
    }
    // No Host, or one the general path refuses (it answers 400).
    let Some(host) = host.filter(|h| headers::valid_host(h)) else {
        return Parsed::HandOff;
    };
    // A body is taken when it fits in the buffer with its head (small JSON and form posts);
    // larger ones, and ones over `max_body_bytes` (413), are the general path's.
    let body_len = length.unwrap_or(0);
    if body_len > 0
        && (body_len > (BUFFER - head_len) as u64
            || snap
                .config
                .limits
                .max_body_bytes
                .is_some_and(|max| body_len > max))
    {
        return Parsed::HandOff;
    }
    let body_len = body_len as usize;
    let fields = req.headers.iter().zip(kinds);
    let forwarded_for = || {
        fields
            .clone()
            .filter(|(_, kind)| *kind == Field::XForwardedFor)
            .map(|(f, _)| f.value)
    };
    let trusted = &snap.config.proxy.trusted_proxies;
    let client = if trusted.is_empty() {
        peer.ip()
    } else {
        headers::client_ip_from(peer.ip(), forwarded_for(), trusted)
    };
    let (path, query) = match target.bytes().position(|b| b == b'?') {
        Some(at) => (&target[..at], Some(&target[at + 1..])),
        None => (target, None),
    };
    let (pool, rewritten) = match route::resolve_target(path, query, client, snap) {
        Decision::Active(pool) => (pool.clone(), None),
        Decision::Preview {
            pool,
            path_and_query,
        } => (pool.clone(), Some(path_and_query)),
        Decision::Forbidden(_) => return Parsed::HandOff,
    };
    // Decided: the rest is done once the body is here.
    if buf.len() < head_len + body_len {
        return Parsed::Body;
    }
    let preview = rewritten
        .is_some()
        .then(|| Preview::new(&pool.name, Some(host)));
    let field = |wanted: Field| {
        fields
            .clone()
            .find(|(_, kind)| *kind == wanted)
            .map_or(&b""[..], |(f, _)| f.value)
    };
    let request_id = RequestId::of(
        fields
            .clone()
            .filter(|(_, kind)| *kind == Field::XRequestId)
            .map(|(f, _)| f.value),
    );
    let logged = snap.config.log.access.then(|| {
        Box::new(Logged::new("HTTP/1.1").path(target.as_bytes()).fields(
            host,
            field(Field::UserAgent),
            field(Field::Referer),
            request_id.as_bytes(),
        ))
    });

    out.clear();
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(rewritten.as_ref().map_or(target, |p| p.as_str()).as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let mut te_trailers = false;
    for (field, kind) in fields.clone() {
        match kind {
            // Hop-by-hop, and the forwarding fields teal sets itself.
            Field::Connection
            | Field::KeepAlive
            | Field::ProxyConnection
            | Field::Trailer
            | Field::ProxyAuthenticate
            | Field::ProxyAuthorization
            | Field::XForwardedFor
            | Field::XForwardedProto
            | Field::XForwardedHost
            | Field::XRequestId => {}
            Field::Te => {
                te_trailers |= tokens(field.value).any(|t| t.eq_ignore_ascii_case(b"trailers"));
            }
            _ => push_field(out, field.name.as_bytes(), field.value),
        }
    }
    if te_trailers {
        out.extend_from_slice(b"te: trailers\r\n");
    }
    out.extend_from_slice(b"x-forwarded-for: ");
    for value in forwarded_for() {
        out.extend_from_slice(value);
        out.extend_from_slice(b", ");
    }
    headers::push_ip(out, peer.ip().to_canonical());
    out.extend_from_slice(b"\r\nx-forwarded-proto: http\r\n");
    push_field(out, b"x-forwarded-host", host);
    push_field(out, b"x-request-id", request_id.as_bytes());
    out.extend_from_slice(b"\r\n");
    Parsed::Ready(Plan {
        head_len,
        body_len,
        idempotent: body_len == 0 && forward::is_idempotent(&method),
        method,
        pool,
        client,
        logged,
        close,
        preview,
    })
}

/// The header fields this path looks at, told apart by length first.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Field {
    Host,
    Date,
    Cookie,
    ContentLength,
    TransferEncoding,
    Expect,
    Upgrade,
    Connection,
    KeepAlive,
    ProxyConnection,
    Te,
    Trailer,
    ProxyAuthenticate,
    ProxyAuthorization,
    XForwardedFor,
    XForwardedProto,
    XForwardedHost,
    XRequestId,
    UserAgent,
    Referer,
    Other,
}

impl Field {
    fn of(name: &[u8]) -> Field {
        let is = |known: &[u8]| name.eq_ignore_ascii_case(known);
        match name.len() {
            2 if is(b"te") => Field::Te,
            4 if is(b"host") => Field::Host,
            4 if is(b"date") => Field::Date,
            6 if is(b"expect") => Field::Expect,
            6 if is(b"cookie") => Field::Cookie,
            7 if is(b"upgrade") => Field::Upgrade,
            7 if is(b"trailer") => Field::Trailer,
            7 if is(b"referer") => Field::Referer,
            10 if is(b"connection") => Field::Connection,
            10 if is(b"keep-alive") => Field::KeepAlive,
            10 if is(b"user-agent") => Field::UserAgent,
            12 if is(b"x-request-id") => Field::XRequestId,
            14 if is(b"content-length") => Field::ContentLength,
            15 if is(b"x-forwarded-for") => Field::XForwardedFor,
            16 if is(b"proxy-connection") => Field::ProxyConnection,
            16 if is(b"x-forwarded-host") => Field::XForwardedHost,
            17 if is(b"transfer-encoding") => Field::TransferEncoding,
            17 if is(b"x-forwarded-proto") => Field::XForwardedProto,
            18 if is(b"proxy-authenticate") => Field::ProxyAuthenticate,
            19 if is(b"proxy-authorization") => Field::ProxyAuthorization,
            _ => Field::Other,
        }
    }
}

fn push_field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// The tokens of a comma-separated field value, trimmed.
fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(|t| t.trim_ascii())
        .filter(|t| !t.is_empty())
}

/// An upstream response head, parsed; the client's head is in the caller's buffer.
struct ResponseHead {
    head_len: usize,
    status: u16,
    framing: Framing,
    /// The upstream may take another request on this connection after the body.
    keep_alive: bool,
}

enum ParsedResponse {
    Ready(ResponseHead),
    /// A 1xx other than 101, of this length: dropped, the final response follows.
    Interim(usize),
    Partial,
    Bad(&'static str),
}

/// Parses an upstream response head from `buf` and writes the client's into `out`: hop-by-hop
/// fields dropped (but the framing's), `Date` added if missing, `Connection: close` if this is
/// the client's last response, a `preview` route's redirects and cookie paths under its prefix.
fn plan_response(
    buf: &[u8],
    head_request: bool,
    close: bool,
    preview: Option<&Preview>,
    out: &mut Vec<u8>,
) -> ParsedResponse {
    let mut fields = [const { MaybeUninit::uninit() }; RESPONSE_FIELDS];
    let mut res = httparse::Response::new(&mut []);
    let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut res,
        buf,
        &mut fields,
    );
    let head_len = match parsed {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return ParsedResponse::Partial,
        Err(httparse::Error::TooManyHeaders) => {
            return ParsedResponse::Bad("too many header fields in the response")
        }
        Err(_) => return ParsedResponse::Bad("malformed response head"),
    };
    let (Some(status), Some(version)) = (res.code, res.version) else {
        return ParsedResponse::Bad("malformed response head");
    };
    if status == 101 {
        return ParsedResponse::Bad("101 to a request that did not ask to upgrade");
    }
    if (100..200).contains(&status) {
        return ParsedResponse::Interim(head_len);
    }
    let (mut closes, mut keeps) = (false, false);
    let mut coded = false;
    let mut chunked = false;
    let mut length: Option<u64> = None;
    let mut dated = false;
    let mut listed: Vec<&[u8]> = Vec::new();
    let mut kinds = [Field::Other; RESPONSE_FIELDS];
    for (field, kind) in res.headers.iter().zip(&mut kinds) {
        *kind = Field::of(field.name.as_bytes());
        match kind {
            Field::Connection => {
                for token in tokens(field.value) {
                    if token.eq_ignore_ascii_case(b"close") {
                        closes = true;
                    } else if token.eq_ignore_ascii_case(b"keep-alive") {
                        keeps = true;
                    } else {
                        listed.push(token);
                    }
                }
            }
            Field::TransferEncoding => {
                coded = true;
                // The last coding of the last field is the one that frames the message.
                chunked = tokens(field.value)
                    .last()
                    .is_some_and(|t| t.eq_ignore_ascii_case(b"chunked"));
            }
            Field::ContentLength => {
                let Some(n) = parse_length(field.value) else {
                    return ParsedResponse::Bad("invalid Content-Length in the response");
                };
                if length.is_some_and(|l| l != n) {
                    return ParsedResponse::Bad("conflicting Content-Length in the response");
                }
                length = Some(n);
            }
            Field::Date => dated = true,
            _ => {}
        }
    }
    // RFC 9112 §6.1: Transfer-Encoding is HTTP/1.1's; an HTTP/1.0 response with one cannot be
    // framed with any confidence (hyper refuses it too).
    if coded && version == 0 {
        return ParsedResponse::Bad("Transfer-Encoding in an HTTP/1.0 response");
    }
    // HTTP/1.1 keeps the connection unless told to close; HTTP/1.0 only if asked to keep it.
    let mut keep_alive = !closes && (version == 1 || keeps);
    // RFC 9112 §6.3.
    let framing = if head_request || status == 204 || status == 304 {
        Framing::Empty
    } else if coded {
        if chunked {
            Framing::Chunked
        } else {
            Framing::UntilCloseAsIs
        }
    } else if let Some(n) = length {
        Framing::Length(n)
    } else {
        Framing::UntilClose
    };
    if matches!(framing, Framing::UntilClose | Framing::UntilCloseAsIs) {
        keep_alive = false;
    }

    let no_content = status == 204 || status == 304;
    out.clear();
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(&[
        b'0' + (status / 100) as u8,
        b'0' + (status / 10 % 10) as u8,
        b'0' + (status % 10) as u8,
        b' ',
    ]);
    out.extend_from_slice(res.reason.unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    for (field, kind) in res.headers.iter().zip(kinds) {
        let name = field.name.as_bytes();
        let keep = match kind {
            // Hop-by-hop (RFC 9110 §7.6.1), as `headers::strip_hop_by_hop`; but the body is
            // relayed in its own transfer coding, so that field stays.
            Field::Connection
            | Field::KeepAlive
            | Field::ProxyConnection
            | Field::Te
            | Field::Trailer
            | Field::Upgrade
            | Field::ProxyAuthenticate
            | Field::ProxyAuthorization => false,
            // A proxy removes Content-Length when Transfer-Encoding frames the message (RFC 9112
            // §6.3). A 204 has neither (RFC 9110 §8.6), and a 304 is sent without them as hyper's
            // server sends it (the RFC makes them optional there).
            Field::ContentLength => !coded && !no_content,
            Field::TransferEncoding => !no_content,
            // What `Connection` may not remove (see `headers`).
            Field::Host | Field::XForwardedFor => true,
            _ => !listed.iter().any(|l| l.eq_ignore_ascii_case(name)),
        };
        if keep {
            let value = preview.and_then(|p| p.rewrite(name, field.value));
            push_field(out, name, value.as_deref().unwrap_or(field.value));
        }
    }
    if framing == Framing::UntilClose {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    if !dated {
        out.extend_from_slice(b"date: ");
        push_date(out);
        out.extend_from_slice(b"\r\n");
    }
    if close || framing == Framing::UntilCloseAsIs {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    ParsedResponse::Ready(ResponseHead {
        head_len,
        status,
        framing,
        keep_alive,
    })
}

/// A `Content-Length` value: digits only, at most 19 of them.
fn parse_length(value: &[u8]) -> Option<u64> {
    if value.is_empty() || value.len() > 19 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(value.iter().fold(0, |n, d| n * 10 + u64::from(d - b'0')))
}

/// Appends the current time as an HTTP date, formatted at most once a second per thread.
fn push_date(out: &mut Vec<u8>) {
    thread_local! {
        static DATE: RefCell<(u64, String)> = const { RefCell::new((0, String::new())) };
    }
    let now = SystemTime::now();
    let secs = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    DATE.with_borrow_mut(|(at, text)| {
        if *at != secs || text.is_empty() {
            *at = secs;
            *text = httpdate::fmt_http_date(now);
        }
        out.extend_from_slice(text.as_bytes());
    });
}

/// Writes teal's own answer for `err` into `out`; returns the body's length.
fn synthetic(err: &ProxyError, head_request: bool, close: bool, out: &mut Vec<u8>) -> usize {
    let status = err.status();
    let body = err.body();
    out.clear();
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(
        status
            .canonical_reason()
            .unwrap_or(StatusCode::BAD_GATEWAY.as_str())
            .as_bytes(),
    );
    out.extend_from_slice(b"\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: ");
    out.extend_from_slice(body.len().to_string().as_bytes());
    out.extend_from_slice(b"\r\ndate: ");
    push_date(out);
    if close {
        out.extend_from_slice(b"\r\nconnection: close");
    }
    out.extend_from_slice(b"\r\n\r\n");
    if !head_request {
        out.extend_from_slice(body.as_bytes());
    }
    body.len()
}

/// A response head received from a server.
struct Sent {
    stream: TcpStream,
    addr: SocketAddr,
    in_flight: InFlight,
    status: u16,
    reusable: bool,
    /// The body being relayed, and its step over the bytes that came with the head (already in
    /// the buffer).
    body: (BodyRelay, Step),
    /// From sending the request to the response head.
    upstream_time: Duration,
}

/// Sends the request to the pool's servers in turn until one answers ([`Forwarder::walk`]).
async fn forward(
    forwarder: &Forwarder,
    plan: &Plan,
    request: &[u8],
    buffer: &mut Buffer,
    head: &mut Vec<u8>,
    snap: &Snapshot,
    timer: Pin<&mut Sleep>,
) -> Result<Sent, ProxyError> {
    let mut attempt = OwnAttempt {
        plan,
        request,
        buffer,
        head,
        timer,
        timeout: snap.response_timeout_for(&plan.pool.name),
    };
    let answered = forwarder.walk(&plan.pool, &mut attempt).await?;
    let (response, body) = answered.answer;
    Ok(Sent {
        stream: answered.conn,
        addr: answered.addr,
        in_flight: answered.in_flight,
        status: response.status,
        reusable: response.keep_alive,
        body,
        upstream_time: answered.upstream_time,
    })
}

/// This path's [`Attempt`]: the request head (and its small body) in one write on a plain socket,
/// the response head parsed here, within `response_timeout` on the connection's one timer.
struct OwnAttempt<'a> {
    plan: &'a Plan,
    request: &'a [u8],
    buffer: &'a mut Buffer,
    head: &'a mut Vec<u8>,
    timer: Pin<&'a mut Sleep>,
    timeout: Duration,
}

impl Attempt for OwnAttempt<'_> {
    type Conn = TcpStream;
    type Answer = (ResponseHead, (BodyRelay, Step));

    async fn checkout(
        &mut self,
        upstreams: &Upstreams,
        addr: SocketAddr,
    ) -> Result<(TcpStream, bool), BoxError> {
        upstreams.checkout_raw(addr).await
    }

    async fn connect(
        &mut self,
        upstreams: &Upstreams,
        addr: SocketAddr,
    ) -> Result<TcpStream, BoxError> {
        upstreams.connect_raw(addr).await
    }

    async fn send(&mut self, stream: &mut TcpStream) -> Result<Self::Answer, Failed> {
        self.buffer.clear();
        let deadline = tokio::time::Instant::now() + self.timeout;
        self.timer.as_mut().reset(deadline);
        let attempt = round_trip(stream, self.request, self.buffer, self.head, self.plan);
        let response = tokio::select! {
            biased;
            done = attempt => done?,
            () = self.timer.as_mut() => return Err(Failed::Timeout(self.timeout)),
        };
        let body = first_step(&response, self.buffer, self.head)
            .map_err(|reason| Failed::Upstream(reason.into()))?;
        Ok((response, body))
    }

    fn retry_safe(&self) -> bool {
        self.plan.idempotent
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// An I/O error before any byte of an answer: stale if the connection was closed or reset.
fn before_answer(e: io::Error) -> Failed {
    let why = format!("connection closed before a response: {e}");
    if forward::is_stale(&e) {
        Failed::Stale(why)
    } else {
        Failed::Upstream(why)
    }
}

/// Writes `request` on `stream` and reads the response head into `buffer`; the client's head goes
/// into `head`, as `plan`'s request needs it.
async fn round_trip(
    stream: &TcpStream,
    request: &[u8],
    buffer: &mut Buffer,
    head: &mut Vec<u8>,
    plan: &Plan,
) -> Result<ResponseHead, Failed> {
    let (head_request, preview) = (plan.method == Method::HEAD, plan.preview.as_ref());
    write_all(stream, request, None)
        .await
        .map_err(before_answer)?;
    let mut interim = false;
    loop {
        let read = read_into(stream, buffer).await;
        match read {
            Ok(0) if buffer.is_empty() && !interim => {
                return Err(before_answer(io::ErrorKind::UnexpectedEof.into()))
            }
            Ok(0) => {
                return Err(Failed::Upstream(
                    "connection closed in the response head".into(),
                ))
            }
            Ok(_) => {}
            Err(e) if buffer.is_empty() && !interim => return Err(before_answer(e)),
            Err(e) => return Err(Failed::Upstream(e.to_string())),
        }
        let plan = |bytes: &[u8], head: &mut Vec<u8>| {
            plan_response(bytes, head_request, plan.close, preview, head)
        };
        let next = next_head(buffer, &mut interim, head, plan);
        if let Some(response) = next.map_err(|reason| Failed::Upstream(reason.into()))? {
            return Ok(response);
        }
    }
}

/// Parses what `buffer` holds with `plan` (`plan_response`): the final response head, or `None`
/// while it is incomplete. Interim (1xx) heads are dropped from the buffer, and `interim` set.
fn next_head(
    buffer: &mut Buffer,
    interim: &mut bool,
    head: &mut Vec<u8>,
    plan: impl Fn(&[u8], &mut Vec<u8>) -> ParsedResponse,
) -> Result<Option<ResponseHead>, &'static str> {
    while !buffer.is_empty() {
        match plan(buffer.filled(), head) {
            ParsedResponse::Ready(response) => return Ok(Some(response)),
            ParsedResponse::Interim(len) => {
                *interim = true;
                buffer.consume(len);
            }
            ParsedResponse::Partial if buffer.len() >= BUFFER => {
                return Err("response head larger than 16 KiB")
            }
            ParsedResponse::Partial => break,
            ParsedResponse::Bad(reason) => return Err(reason),
        }
    }
    Ok(None)
}

/// The body's first step, over the bytes that came with `response`'s head (taken out of
/// `buffer`); re-chunked bytes go after the client's `head`. A chunked body's first bytes are
/// checked so before anything is sent: one malformed from the start is a 502 like a bad head.
fn first_step(
    response: &ResponseHead,
    buffer: &mut Buffer,
    head: &mut Vec<u8>,
) -> Result<(BodyRelay, Step), &'static str> {
    buffer.consume(response.head_len);
    let mut body = BodyRelay::new(response.framing);
    let step = body.next(buffer.filled(), head)?;
    Ok((body, step))
}

/// What ends with the response: the request's record and the upstream connection.
struct Ending<'a> {
    exchange: Option<Exchange>,
    upstream: Option<TcpStream>,
    addr: SocketAddr,
    reusable: bool,
    upstreams: &'a Upstreams,
}

impl Ending<'_> {
    fn upstream(&self) -> io::Result<&TcpStream> {
        self.upstream
            .as_ref()
            .ok_or_else(|| io::Error::other("upstream connection already given back"))
    }

    fn count(&mut self, bytes: u64) {
        if let Some(exchange) = &mut self.exchange {
            exchange.bytes += bytes;
        }
    }

    /// The response's last bytes are about to be written: the request ends (in flight, metrics,
    /// access log) before the client can see it has, as on the general path; and when the body
    /// ended exactly where its framing said (`clean`), the upstream connection goes back for the
    /// next request.
    fn end(&mut self, clean: bool) {
        self.exchange = None;
        if let Some(stream) = self.upstream.take() {
            if clean && self.reusable {
                self.upstreams.release_raw(self.addr, stream);
            }
        }
    }
}

/// Sends the client `head` and the body from the upstream (its first bytes already in `buffer`,
/// their step taken by [`first_step`]), a loop of reads and writes around the body's
/// [`BodyRelay`]. `Ok(false)` when the client's connection must close after it.
async fn relay(
    client: Client<'_>,
    sent: Sent,
    head: &mut Vec<u8>,
    buffer: &mut Buffer,
    mut exchange: Exchange,
    upstreams: &Upstreams,
    read_timeout: Duration,
) -> io::Result<bool> {
    let (mut body, mut step) = sent.body;
    exchange.status = sent.status;
    exchange.upstream_time = Some(sent.upstream_time);
    exchange.upstream = Some(sent.in_flight);
    let mut ending = Ending {
        exchange: Some(exchange),
        upstream: Some(sent.stream),
        addr: sent.addr,
        reusable: sent.reusable,
        upstreams,
    };
    // The client's head, then the bytes of each step: re-chunked ones (after the head at first)
    // or those read, as they are.
    let out = head;
    let mut first = true;
    loop {
        ending.count(step.data);
        if step.ended {
            ending.end(step.clean);
        }
        let part = step.as_is_part(buffer.filled());
        if first {
            client.write_two(out, part).await?;
            first = false;
        } else if !out.is_empty() {
            client.write(out).await?;
        } else if !part.is_empty() {
            client.write(part).await?;
        }
        out.clear();
        if step.ended {
            return Ok(true);
        }
        buffer.clear();
        if read_upstream(&ending, buffer, read_timeout, client).await? == 0 {
            let keep_client = body.finish_at_eof(out).map_err(truncated)?;
            ending.end(false);
            if !out.is_empty() {
                client.write(out).await?;
            }
            return Ok(keep_client);
        }
        step = body.next(buffer.filled(), out).map_err(bad_chunk)?;
    }
}

/// Reads the next bytes of a response body from the upstream. A pause longer than `timeout`
/// (`upstream_body_timeout`) is an error, and so is the client going away meanwhile; both
/// connections close then.
async fn read_upstream(
    ending: &Ending<'_>,
    buffer: &mut Buffer,
    timeout: Duration,
    client: Client<'_>,
) -> io::Result<usize> {
    let read = tokio::time::timeout(timeout, read_into(ending.upstream()?, buffer));
    tokio::select! {
        biased;
        read = read => read.unwrap_or_else(|_| Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("upstream sent nothing of the body for {timeout:?} (upstream_body_timeout)"),
        ))),
        () = client.gone() => Err(io::Error::new(
            io::ErrorKind::ConnectionAborted,
            "client closed its connection during the response",
        )),
    }
}

fn truncated(reason: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, reason)
}

fn bad_chunk(reason: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, reason)
}

/// The client's end of an exchange: its socket, and how long a write to it may wait for the
/// client to read (`client_send_timeout`, nginx's `send_timeout`).
#[derive(Clone, Copy)]
struct Client<'a> {
    tcp: &'a TcpStream,
    send_timeout: Duration,
}

impl Client<'_> {
    async fn write(&self, bytes: &[u8]) -> io::Result<()> {
        write_all(self.tcp, bytes, Some(self.send_timeout)).await
    }

    /// Writes `head` and the start of `body`: in one system call when the body is small (copied
    /// after the head).
    async fn write_two(&self, head: &mut Vec<u8>, body: &[u8]) -> io::Result<()> {
        if body.len() <= 4096 {
            head.extend_from_slice(body);
            return self.write(head).await;
        }
        self.write(head).await?;
        self.write(body).await
    }

    /// Resolves when the client has closed its connection (or it failed). Bytes it sent meanwhile
    /// (a pipelined request) are left for later, and this never resolves then: such a client is
    /// still there.
    async fn gone(&self) {
        let mut byte = [0u8; 1];
        let mut buf = tokio::io::ReadBuf::new(&mut byte);
        match std::future::poll_fn(|cx| self.tcp.poll_peek(cx, &mut buf)).await {
            Ok(0) | Err(_) => {}
            Ok(_) => std::future::pending().await,
        }
    }
}

/// Reads what `tcp` has into the free part of `buffer`; 0 at the end of the stream.
///
/// A read that does not fill the space it was given leaves the socket empty, so its readiness is
/// cleared then and there: otherwise the next wait for data would first make one more read that
/// finds nothing (a system call per request on each side). Tokio clears readiness only if no new
/// event arrived since it was reported, so data that comes in meanwhile is not missed.
async fn read_into(tcp: &TcpStream, buffer: &mut Buffer) -> io::Result<usize> {
    loop {
        // The socket's own waker slot, not a waiter list: one task reads each socket.
        std::future::poll_fn(|cx| tcp.poll_read_ready(cx)).await?;
        let space = buffer.space();
        let room = space.len();
        let mut got = 0;
        let result = tcp.try_io(Interest::READABLE, || {
            got = tcp.try_read(space)?;
            if got > 0 && got < room {
                Err(io::ErrorKind::WouldBlock.into())
            } else {
                Ok(got)
            }
        });
        match result {
            Ok(n) => {
                buffer.end += n;
                return Ok(n);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if got > 0 {
                    buffer.end += got;
                    return Ok(got);
                }
            }
            Err(e) => return Err(e),
        }
    }
}

/// Writes all of `bytes`; a wait of more than `timeout` for the peer to take more is an error.
async fn write_all(tcp: &TcpStream, mut bytes: &[u8], timeout: Option<Duration>) -> io::Result<()> {
    while !bytes.is_empty() {
        match tcp.try_write(bytes) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let writable = std::future::poll_fn(|cx| tcp.poll_write_ready(cx));
                match timeout {
                    None => writable.await?,
                    Some(t) => tokio::time::timeout(t, writable).await.map_err(|_| {
                        io::Error::new(
                            io::ErrorKind::TimedOut,
                            format!("the client read nothing for {t:?} (client_send_timeout)"),
                        )
                    })??,
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// A head being written (the upstream's request, the client's response), from this thread's free
/// list and back to it when dropped.
struct Head(Vec<u8>);

thread_local! {
    static SPARE_HEADS: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

impl Head {
    fn take() -> Head {
        let mut bytes = SPARE_HEADS
            .with_borrow_mut(Vec::pop)
            .unwrap_or_else(|| Vec::with_capacity(1024));
        bytes.clear();
        Head(bytes)
    }
}

impl Drop for Head {
    fn drop(&mut self) {
        let bytes = std::mem::take(&mut self.0);
        // Kept only while small: a head that grew for a large body is let go.
        if bytes.capacity() <= 8192 {
            SPARE_HEADS.with_borrow_mut(|spare| {
                if spare.len() < SPARE_BUFFERS {
                    spare.push(bytes);
                }
            });
        }
    }
}

impl std::ops::Deref for Head {
    type Target = Vec<u8>;
    fn deref(&self) -> &Vec<u8> {
        &self.0
    }
}

impl std::ops::DerefMut for Head {
    fn deref_mut(&mut self) -> &mut Vec<u8> {
        &mut self.0
    }
}

/// A read buffer: `data[start..end]` holds bytes read and not yet used.
struct Buffer {
    data: Vec<u8>,
    start: usize,
    end: usize,
}

thread_local! {
    static SPARE: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

impl Buffer {
    /// A buffer from this thread's free list, or a new one.
    fn take() -> Buffer {
        let data = SPARE
            .with_borrow_mut(Vec::pop)
            .unwrap_or_else(|| vec![0; BUFFER]);
        Buffer {
            data,
            start: 0,
            end: 0,
        }
    }

    /// Back to this thread's free list.
    fn give(self) {
        SPARE.with_borrow_mut(|spare| {
            if spare.len() < SPARE_BUFFERS {
                spare.push(self.data);
            }
        });
    }

    fn filled(&self) -> &[u8] {
        &self.data[self.start..self.end]
    }

    fn filled_mut(&mut self) -> &mut [u8] {
        &mut self.data[self.start..self.end]
    }

    fn len(&self) -> usize {
        self.end - self.start
    }

    fn is_empty(&self) -> bool {
        self.start == self.end
    }

    fn clear(&mut self) {
        self.start = 0;
        self.end = 0;
    }

    fn consume(&mut self, n: usize) {
        self.start += n;
        if self.start == self.end {
            self.clear();
        }
    }

    /// The free part, after moving what is unread to the front if the end is full.
    fn space(&mut self) -> &mut [u8] {
        if self.end == self.data.len() && self.start > 0 {
            self.data.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        &mut self.data[self.end..]
    }

    /// The unread bytes, for hyper.
    fn into_vec(self) -> Vec<u8> {
        let bytes = self.filled().to_vec();
        self.give();
        bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(request: &[u8], limits: &str) -> Parsed {
        let text =
            format!("active = \"blue\"\n[pools.blue]\nservers = [\"127.0.0.1:8080\"]\n{limits}");
        let config = Arc::new(crate::config::Config::parse(&text, None).unwrap());
        let snap = Snapshot::build(config, "blue", None, 1, &crate::metrics::Metrics::new());
        let options = ServeOptions::from(crate::server::Timeouts::both(
            std::time::Duration::from_secs(60),
        ));
        let peer = "127.0.0.1:5000".parse().unwrap();
        plan_request(request, peer, &snap, &options, &mut Vec::new())
    }

    /// A body is taken with its head when both fit in the buffer, waited for until it is all
    /// there, and left to the general path when it is too large, over the limit, or its length
    /// is not one plain number.
    #[test]
    fn request_bodies_this_path_takes() {
        let post = |length: &str, body: &[u8]| {
            let mut r = format!("POST /a HTTP/1.1\r\nHost: x\r\n{length}\r\n").into_bytes();
            r.extend_from_slice(body);
            r
        };
        let Parsed::Ready(p) = plan(&post("Content-Length: 5\r\n", b"helloGET"), "") else {
            panic!("a whole body is taken");
        };
        assert_eq!((p.body_len, p.idempotent), (5, false));
        let put = |length: &str, body: &[u8]| {
            let mut r = post(length, body);
            r.splice(..4, *b"PUT");
            plan(&r, "")
        };
        let Parsed::Ready(p) = put("Content-Length: 0\r\n", b"") else {
            panic!("an empty body is no body");
        };
        assert_eq!((p.body_len, p.idempotent), (0, true));
        let Parsed::Ready(p) = put("Content-Length: 2\r\n", b"{}") else {
            panic!("a whole body is taken");
        };
        assert_eq!(
            (p.body_len, p.idempotent),
            (2, false),
            "a body is never sent twice"
        );
        assert!(matches!(
            plan(&post("Content-Length: 5\r\n", b"hel"), ""),
            Parsed::Body
        ));
        let big = format!("Content-Length: {}\r\n", BUFFER);
        for handed_off in [
            post(&big, b""),
            post("Content-Length: 5\r\nContent-Length: 5\r\n", b"hello"),
            post("Content-Length: +5\r\n", b"hello"),
            post(
                "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
                b"hello",
            ),
            post("Content-Length: 5\r\nExpect: 100-continue\r\n", b""),
        ] {
            assert!(
                matches!(plan(&handed_off, ""), Parsed::HandOff),
                "{}",
                String::from_utf8_lossy(&handed_off)
            );
        }
        assert!(matches!(
            plan(
                &post("Content-Length: 5\r\n", b"hello"),
                "[limits]\nmax_body_bytes = 4\n"
            ),
            Parsed::HandOff
        ));
    }

    fn response(head: &str, head_request: bool, close: bool) -> (ParsedResponse, String) {
        let mut out = Vec::new();
        let parsed = plan_response(head.as_bytes(), head_request, close, None, &mut out);
        (parsed, String::from_utf8(out).unwrap())
    }

    fn ready(p: ParsedResponse) -> ResponseHead {
        match p {
            ParsedResponse::Ready(r) => r,
            _ => panic!("not a complete response head"),
        }
    }

    /// Framing follows RFC 9112 §6.3, and only the framing's own hop-by-hop field survives.
    #[test]
    fn response_framing_and_fields() {
        let (p, out) = response(
            "HTTP/1.1 200 OK\r\nContent-Length: 4\r\nConnection: keep-alive, X-Drop\r\nX-Drop: 1\r\nKeep-Alive: timeout=5\r\nDate: d\r\n\r\n",
            false,
            false,
        );
        let r = ready(p);
        assert_eq!(
            (r.status, r.framing, r.keep_alive),
            (200, Framing::Length(4), true)
        );
        assert_eq!(
            out,
            "HTTP/1.1 200 OK\r\nContent-Length: 4\r\nDate: d\r\n\r\n"
        );

        let (p, out) = response(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 9\r\nDate: d\r\n\r\n",
            false,
            true,
        );
        assert_eq!(ready(p).framing, Framing::Chunked);
        assert_eq!(
            out,
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nDate: d\r\nconnection: close\r\n\r\n"
        );

        let (p, out) = response("HTTP/1.0 200 OK\r\nDate: d\r\n\r\n", false, false);
        let r = ready(p);
        assert_eq!((r.framing, r.keep_alive), (Framing::UntilClose, false));
        assert!(out.contains("transfer-encoding: chunked\r\n"), "{out}");

        let (p, _) = response(
            "HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n",
            false,
            false,
        );
        assert_eq!(ready(p).framing, Framing::Empty);
        let (p, out) = response("HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n", true, false);
        assert_eq!(ready(p).framing, Framing::Empty);
        assert!(out.contains("Content-Length: 9\r\ndate: "), "{out}");
        let (p, _) = response(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
            false,
            false,
        );
        assert_eq!(ready(p).framing, Framing::UntilCloseAsIs);
    }

    /// What the upstream cannot be trusted with is refused, not passed on.
    #[test]
    fn response_refusals() {
        for bad in [
            "HTTP/1.1 200 OK\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 1,1\r\n\r\n",
            "HTTP/1.1 101 Switching Protocols\r\n\r\n",
            "HTTP/1.1 2000 OK\r\n\r\n",
        ] {
            assert!(
                matches!(response(bad, false, false).0, ParsedResponse::Bad(_)),
                "{bad}"
            );
        }
        assert!(matches!(
            response("HTTP/1.1 103 Early Hints\r\nLink: x\r\n\r\nHTTP/1.1 200", false, false).0,
            ParsedResponse::Interim(n) if n == 37
        ));
        assert!(matches!(
            response("HTTP/1.1 200 OK\r\n", false, false).0,
            ParsedResponse::Partial
        ));
    }
}
