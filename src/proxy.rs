//! The general request handler: route, rewrite, forward, stream back, on hyper's types.
//!
//! Plain HTTP/1.1 requests are served by teal's own path (`h1`), which hands this handler everything else:
//! requests with bodies, upgrades, HTTP/2, and every request teal refuses or answers itself.
//!
//! [`Proxy::handle`] loads the snapshot once, routes, and is the single error boundary: every
//! failure becomes one short text response with the right status and one log line.
//! [`Proxy::forward`] does the upstream work: it rewrites headers ([`crate::headers`]), tries the
//! pool's servers in round-robin order, moving on only when a connect failed (the body was not
//! touched then, see [`crate::request_body::Reclaim`]), and bounds the wait for response headers by
//! `response_timeout`. Bodies stream both ways.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::uri::{PathAndQuery, Uri};
use http::{header, HeaderValue, Method, Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use tokio_util::task::TaskTracker;
use tracing::error;

use crate::access::{Exchange, Logged};
use crate::body::ResponseBody;
pub(crate) use crate::error::{error_chain, ProxyError};
use crate::forward::{client_paused, is_idempotent, is_stale, Attempt, Failed, Forwarder};
use crate::headers;
use crate::metrics::Served;
use crate::mirror;
use crate::policy::{self, RequestFacts};
use crate::pool::{InFlight, Pool};
use crate::preview::Preview;
use crate::request_body::{ClientBodyError, Reclaim};
use crate::resolve::Resolver;
use crate::route::{self, Decision};
use crate::state::{Snapshot, State};
use crate::upgrade;
use crate::upstream::{Connections, Lease, Timeouts};

/// What a successful forward produced.
struct Forwarded {
    response: Response<Incoming>,
    /// The connection the response arrives on.
    lease: Lease,
    in_flight: InFlight,
    /// The client side of an upgrade the request asked for.
    downstream: Option<OnUpgrade>,
    /// From sending the request to the response head.
    upstream_time: Duration,
}

/// The proxy service, cheap to clone into every connection.
#[derive(Clone)]
pub struct Proxy {
    inner: Arc<Inner>,
}

struct Inner {
    /// The pool walk and this worker's upstream connections.
    forwarder: Forwarder,
    tunnels: TaskTracker,
}

impl Proxy {
    /// A proxy over `state`, resolving names through `resolver`; upgraded connections are
    /// spawned on `tunnels`.
    pub fn new(state: Arc<State>, resolver: Arc<Resolver>, tunnels: TaskTracker) -> Proxy {
        Proxy {
            inner: Arc::new(Inner {
                forwarder: Forwarder::new(state, resolver),
                tunnels,
            }),
        }
    }

    /// The pool walk both paths forward with.
    pub(crate) fn forwarder(&self) -> &Forwarder {
        &self.inner.forwarder
    }

    fn state(&self) -> &Arc<State> {
        self.inner.forwarder.state()
    }

    /// Serves one request from `peer`.
    pub async fn handle(
        self,
        req: Request<Incoming>,
        peer: SocketAddr,
    ) -> Result<Response<ResponseBody>, Infallible> {
        let snap = self.state().load();
        let secure = req.extensions().get::<crate::server::Secure>().is_some();
        let hsts = (snap.config.tls.as_ref())
            .filter(|_| secure)
            .and_then(|t| t.hsts.clone());
        let mut response = self.answer(req, peer, snap, secure).await;
        if let Some(hsts) = hsts {
            response
                .headers_mut()
                .insert(header::STRICT_TRANSPORT_SECURITY, hsts);
        }
        Ok(response)
    }

    /// The response to `req`: teal's own, or the upstream's.
    async fn answer(
        self,
        mut req: Request<Incoming>,
        peer: SocketAddr,
        snap: Arc<Snapshot>,
        secure: bool,
    ) -> Response<ResponseBody> {
        let start = Instant::now();
        let request_id = headers::set_request_id(req.headers_mut());
        let logged = (snap.config.log.access).then(|| Box::new(logged(&req, &request_id)));
        let trusted = &snap.config.proxy.trusted_proxies;
        let client = if trusted.is_empty() {
            peer.ip()
        } else {
            headers::client_ip(peer.ip(), req.headers(), trusted)
        };
        let Route {
            pool,
            rewritten,
            set_cookie,
            refused,
        } = routed(&mut req, client, &snap);
        let refused = refused.or_else(|| refuse(&req, &snap));
        let mut exchange = Exchange::new(
            start,
            peer,
            client,
            req.method().clone(),
            logged,
            pool.clone(),
            Served::Hyper,
        );
        if let Some(err) = refused {
            count_rejection(self.state(), &err);
            return synthetic(err, exchange);
        }
        let tls = snap.config.tls.as_ref();
        if let Some(answer) = policy::plain_answer(secure, req.uri().path(), tls) {
            return crate::plain::answer(answer, &req, self.state(), exchange);
        }
        // The host the client addressed, for its preview route's redirects.
        let preview = rewritten
            .as_ref()
            .map(|_| Preview::new(&pool.name, headers::addressed_host(&req)));
        match self
            .forward(req, &pool, rewritten, peer, &snap, secure)
            .await
        {
            Ok(f) => self.respond(f, exchange, preview, set_cookie),
            Err(err) => {
                count_rejection(self.state(), &err);
                error!(peer = %peer, pool = %pool.name, error = %err, "request failed");
                exchange.upstream = None;
                exchange.failed = err.server().map(str::to_string);
                synthetic(err, exchange)
            }
        }
    }

    /// Sends the request to the pool's servers in turn until one answers.
    async fn forward(
        &self,
        mut req: Request<Incoming>,
        pool: &Pool,
        rewritten: Option<PathAndQuery>,
        peer: SocketAddr,
        snap: &Snapshot,
        secure: bool,
    ) -> Result<Forwarded, ProxyError> {
        let upgrade = headers::upgrade_protocol(req.headers(), req.version());
        let mirror = snap.mirror_for(pool, rewritten.is_some());
        let mirror = mirror.filter(|_| upgrade.is_none());
        // Take the client half of an upgrade before the request is taken apart.
        let downstream = upgrade.as_ref().map(|_| hyper::upgrade::on(&mut req));
        let (mut parts, body) = req.into_parts();
        let path_and_query = rewritten
            .or_else(|| parts.uri.path_and_query().cloned())
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        let host = headers::original_host(&parts);
        headers::strip_hop_by_hop(&mut parts.headers);
        headers::set_forwarding(&mut parts.headers, peer.ip(), host, secure);
        headers::ensure_host(&mut parts);
        if let Some(protocol) = upgrade {
            headers::restore_upgrade(&mut parts.headers, protocol);
        }
        let mut body = Reclaim::new(
            body,
            snap.config.limits.max_body_bytes,
            snap.config.proxy.client_body_timeout,
        );
        let hint = body.size_hint().exact();
        let tap = mirror::hyper_path(mirror, &parts, &path_and_query, hint).map(|(tap, copy)| {
            match body.is_empty() {
                true => copy.send(&[]),
                false => body.tee(Box::new(copy.tee())),
            }
            tap
        });
        let mut attempt = HyperAttempt {
            retry_safe: body.is_empty() && is_idempotent(&parts.method),
            method: parts.method,
            uri: Uri::from(path_and_query),
            headers: parts.headers,
            body: &body,
            timeout: pool.timeouts.response,
            stall: snap.config.proxy.upstream_body_timeout,
        };
        let answered = self.inner.forwarder.walk(pool, &mut attempt).await;
        if let Some(tap) = tap {
            match &answered {
                Ok(a) => tap.report(a.answer.status().as_u16(), a.upstream_time),
                Err(err) => tap.failed(err.status().as_u16()),
            }
        }
        let answered = answered?;
        Ok(Forwarded {
            response: answered.answer,
            lease: answered.conn,
            in_flight: answered.in_flight,
            downstream,
            upstream_time: answered.upstream_time,
        })
    }

    /// Turns the upstream's answer into the client's response (or an upgrade tunnel); a preview
    /// route's redirects and cookie paths get its prefix back ([`crate::preview`]), and teal's
    /// own `set_cookie` is appended after the upstream's (never replacing one).
    fn respond(
        &self,
        f: Forwarded,
        mut exchange: Exchange,
        preview: Option<Preview>,
        set_cookie: Option<HeaderValue>,
    ) -> Response<ResponseBody> {
        let Forwarded {
            mut response,
            lease,
            in_flight,
            downstream,
            upstream_time,
        } = f;
        exchange.upstream_time = Some(upstream_time);
        exchange.status = response.status().as_u16();
        exchange.upstream = Some(in_flight);
        if response.status() == StatusCode::SWITCHING_PROTOCOLS {
            let Some(downstream) = downstream else {
                let err = ProxyError::Upstream {
                    server: upstream_name(&exchange),
                    reason: "101 to a request that did not ask to upgrade".into(),
                };
                error!(error = %err, "request failed");
                exchange.upstream = None;
                return synthetic(err, exchange);
            };
            let upstream = hyper::upgrade::on(&mut response);
            // The connection's state machine hands its socket over once it runs to its end.
            self.inner.tunnels.spawn(lease.into_driver());
            upgrade::spawn_tunnel(&self.inner.tunnels, downstream, upstream, exchange);
            // The 101's own headers (Upgrade, Connection, Sec-WebSocket-*) pass untouched.
            return response.map(|_| ResponseBody::full("", None));
        }
        // RFC 9112 §6.3: Transfer-Encoding framed the body (hyper decoded it), so a
        // Content-Length beside it is wrong and must not reach the client.
        if response.headers().contains_key(header::TRANSFER_ENCODING) {
            response.headers_mut().remove(header::CONTENT_LENGTH);
        }
        headers::strip_hop_by_hop(response.headers_mut());
        // `strip_hop_by_hop` keeps `TE: trailers` for a request; in a response TE means nothing
        // (RFC 9110 §10.1.4) and goes, as on the own path (`h1::response`).
        response.headers_mut().remove(header::TE);
        if let Some(preview) = preview {
            preview.rewrite_headers(response.headers_mut());
        }
        if let Some(cookie) = set_cookie {
            response.headers_mut().append(header::SET_COOKIE, cookie);
        }
        let read_timeout = self.state().load().config.proxy.upstream_body_timeout;
        response.map(|body| ResponseBody::upstream(body, lease, exchange, read_timeout))
    }
}

/// [`route::decide`]'s answer, owned.
struct Route {
    pool: Arc<Pool>,
    /// The path a preview route rewrote.
    rewritten: Option<PathAndQuery>,
    set_cookie: Option<HeaderValue>,
    /// A preview route the client may not use.
    refused: Option<ProxyError>,
}

/// Routes `req` ([`route::decide`]). The `Cookie` fields are joined first (routing reads one),
/// and the `[preview] header` field is removed: it is teal's instruction, never the upstream's.
fn routed(req: &mut Request<Incoming>, client: std::net::IpAddr, snap: &Snapshot) -> Route {
    headers::join_cookies(req.headers_mut());
    let routing = snap.config.preview.header.as_ref();
    let hints = route::Hints {
        cookie: req.headers().get(header::COOKIE).map(HeaderValue::as_bytes),
        pool: routing
            .and_then(|h| req.headers().get(h))
            .map(HeaderValue::as_bytes),
    };
    let routed = route::decide(req.uri(), client, hints, snap);
    let set_cookie = routed.set_cookie;
    let (pool, rewritten, refused) = match routed.decision {
        Decision::Active(p) => (p.clone(), None, None),
        Decision::Preview {
            pool,
            path_and_query,
        } => (pool.clone(), Some(path_and_query), None),
        Decision::Forbidden(p) => (p.clone(), None, Some(ProxyError::Forbidden)),
    };
    if let Some(name) = routing {
        req.headers_mut().remove(name);
    }
    Route {
        pool,
        rewritten,
        set_cookie,
        refused,
    }
}

fn upstream_name(exchange: &Exchange) -> String {
    exchange
        .upstream
        .as_ref()
        .map_or_else(String::new, |u| u.upstream().authority.to_string())
}

/// The access log's record of `req` (taken before it is rewritten).
fn logged(req: &Request<Incoming>, request_id: &HeaderValue) -> Logged {
    let field = |name| {
        req.headers()
            .get(name)
            .map_or(&b""[..], HeaderValue::as_bytes)
    };
    let host = match req.uri().authority() {
        Some(a) => a.as_str().as_bytes(),
        None => field(header::HOST),
    };
    let target = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let protocol = match req.version() {
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_10 => "HTTP/1.0",
        _ => "HTTP/1.1",
    };
    Logged::new(
        protocol,
        target.as_bytes(),
        host,
        field(header::USER_AGENT),
        field(header::REFERER),
        request_id.as_bytes(),
    )
}

/// A response made by teal for `err`, recorded in `exchange`.
pub(crate) fn synthetic(err: ProxyError, mut exchange: Exchange) -> Response<ResponseBody> {
    let status = err.status();
    exchange.status = status.as_u16();
    let mut response = Response::new(ResponseBody::full(err.body(), Some(exchange)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// The hyper path's [`Attempt`]: the request's head, sent on a hyper connection with its body
/// streamed; `response_timeout` counts from the end of the body ([`answer_within`]).
struct HyperAttempt<'a> {
    method: Method,
    uri: Uri,
    /// Taken by the last attempt that may be made (cloned while a retry is possible).
    headers: http::HeaderMap,
    body: &'a Reclaim,
    retry_safe: bool,
    timeout: Duration,
    stall: Duration,
}

impl Attempt for HyperAttempt<'_> {
    type Conn = Lease;
    type Answer = Response<Incoming>;

    async fn checkout(
        &mut self,
        connections: &Connections,
        addr: SocketAddr,
        timeouts: Timeouts,
    ) -> Result<(Lease, bool), BoxError> {
        let lease = connections.checkout(addr, timeouts).await?;
        let reused = lease.reused();
        Ok((lease, reused))
    }

    async fn connect(
        &mut self,
        connections: &Connections,
        addr: SocketAddr,
        connect_timeout: Duration,
    ) -> Result<Lease, BoxError> {
        connections.connect(addr, connect_timeout).await
    }

    async fn send(&mut self, lease: &mut Lease) -> Result<Response<Incoming>, Failed> {
        let Some(body) = self.body.attempt() else {
            // An earlier attempt started sending the body; it cannot be sent again.
            return Err(Failed::Upstream(
                "the request body went to an earlier attempt".into(),
            ));
        };
        let mut req = Request::new(body);
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = self.uri.clone();
        *req.version_mut() = Version::HTTP_11;
        *req.headers_mut() = if self.retry_safe && lease.reused() {
            self.headers.clone()
        } else {
            std::mem::take(&mut self.headers)
        };
        let progress = self.body.progress();
        match answer_within(lease.send(req), progress, self.timeout, self.stall).await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(e)) => Err(match client_fault(&e) {
                Some(err) => Failed::Client(err),
                None if is_stale(&e) && client_paused(progress.client_wait_since()) => {
                    Failed::GaveUpOnClient(error_chain(&e))
                }
                None if is_stale(&e) => Failed::Stale(error_chain(&e)),
                None => Failed::Upstream(error_chain(&e)),
            }),
            Err(Late::Response) => Err(Failed::Timeout(self.timeout)),
            Err(Late::Body) => Err(Failed::Stalled(self.stall)),
        }
    }

    fn retry_safe(&self) -> bool {
        self.retry_safe
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Which wait ran out.
enum Late {
    /// No response head within `response_timeout` of the end of the request.
    Response,
    /// The upstream took none of the request body for `upstream_body_timeout` while the client
    /// had more.
    Body,
}

/// Waits for `send` (the response head): `response_timeout` counts from the moment the request
/// body has been sent, so an upload may take as long as it keeps moving; while it is being sent,
/// an upstream that stops taking it for `stall` is given up on (a pause that is the client's is
/// bounded by the body's own `client_body_timeout` instead).
async fn answer_within<F: std::future::Future>(
    send: F,
    progress: &crate::request_body::Progress,
    response: Duration,
    stall: Duration,
) -> Result<F::Output, Late> {
    use crate::clock::{ms, now_ms};
    let mut send = std::pin::pin!(send);
    loop {
        let now = now_ms();
        let (at, late) = match (progress.done_at(), progress.stalled_since()) {
            (Some(done), _) => (done.saturating_add(ms(response)), Late::Response),
            (None, Some(moved)) => (moved.saturating_add(ms(stall)), Late::Body),
            // Waiting for the client: look again within `stall`.
            (None, None) => (now.saturating_add(ms(stall)), Late::Body),
        };
        if at <= now && (progress.done_at().is_some() || progress.stalled_since().is_some()) {
            return Err(late);
        }
        let wait = Duration::from_millis(at.saturating_sub(now));
        tokio::select! {
            biased;
            answer = send.as_mut() => return Ok(answer),
            () = progress.finished(), if progress.done_at().is_none() => {}
            () = tokio::time::sleep(wait) => {}
        }
    }
}

/// Refusals decided from the request head alone ([`crate::policy::refuse`], the rule both paths
/// ask).
fn refuse(req: &Request<Incoming>, snap: &Snapshot) -> Option<ProxyError> {
    let uri = req.uri();
    let mut hosts = req
        .headers()
        .get_all(header::HOST)
        .iter()
        .map(HeaderValue::as_bytes);
    let codings = req.headers().get_all(header::TRANSFER_ENCODING);
    let transfer_coding = (codings.iter().next().is_some())
        .then(|| headers::only_chunked(codings.iter().map(HeaderValue::as_bytes)));
    let facts = RequestFacts {
        method: req.method(),
        version: req.version(),
        authority: uri.authority().map(|a| a.as_str().as_bytes()),
        asterisk: uri.path() == "*",
        target_len: uri.path_and_query().map_or(0, |p| p.as_str().len())
            + uri.authority().map_or(0, |a| a.as_str().len()),
        hosts: [hosts.next(), hosts.next()],
        transfer_coding,
        content_length: req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok()),
    };
    policy::refuse(&facts, &snap.config.limits)
}

/// The client's error, if `e` is the request body failing on the client's side: over the body
/// limit, malformed, cut short or too slow.
fn client_fault(e: &(dyn std::error::Error + 'static)) -> Option<ProxyError> {
    let mut cause = Some(e);
    while let Some(err) = cause {
        if let Some(b) = err.downcast_ref::<crate::request_body::BodyTooLarge>() {
            return Some(ProxyError::BodyTooLarge(b.0));
        }
        match err.downcast_ref::<ClientBodyError>() {
            Some(ClientBodyError::Broken(why)) => return Some(ProxyError::ClientBody(why.clone())),
            Some(ClientBodyError::Timeout(d)) => return Some(ProxyError::ClientBodyTimeout(*d)),
            None => {}
        }
        cause = err.source();
    }
    None
}

/// Counts refusals of the client's request in `teal_rejected_total`.
pub(crate) fn count_rejection(state: &State, err: &ProxyError) {
    let reason = match err {
        ProxyError::Forbidden => "preview_forbidden",
        ProxyError::Method(_) => "method",
        ProxyError::UriTooLong(_) => "uri_too_long",
        ProxyError::MisdirectedTarget { .. } => "misdirected_target",
        ProxyError::BodyTooLarge(_) => "body_too_large",
        ProxyError::BadHost => "bad_host",
        ProxyError::BadTarget(_) => "bad_target",
        ProxyError::TransferCoding => "transfer_coding",
        ProxyError::ClientBody(_) => "bad_body",
        ProxyError::ClientBodyTimeout(_) => "body_timeout",
        _ => return,
    };
    state.metrics().reject(reason);
}
