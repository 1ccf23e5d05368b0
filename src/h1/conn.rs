//! A client connection on teal's own HTTP/1.1 path: requests in turn, each an exchange, until
//! the connection closes or is handed to the hyper path.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::Instant;

use http::Method;
use tokio::time::Sleep;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error};

use crate::access::Exchange;
use crate::h1::io::{Buffer, Client, Head, BUFFER};
use crate::h1::park::{Lot, PARK_AFTER};
use crate::h1::relay::relay;
use crate::h1::request::{plan_request, treat_minor_versions_as_1_1, Parsed, Plan};
use crate::h1::response::synthetic;
use crate::h1::splice::Upload;
use crate::h1::upstream::forward;
use crate::metrics::Served;
use crate::mirror;
use crate::proxy::{count_rejection, Proxy};
use crate::server::{Http, ServeOptions, Slot};
use crate::socket::ClientSocket;
use crate::state::Snapshot;

/// What the connection does after one exchange.
pub(crate) enum Next {
    /// Wait for the next request; bytes of it may already be here (pipelining).
    KeepAlive(Option<Buffer>),
    /// Close the connection.
    Close,
    /// Give the connection and these bytes of the current request to hyper.
    HandOff(Vec<u8>),
}

/// What a worker's connections from one listener share.
pub(crate) struct Shared {
    pub(crate) proxy: Proxy,
    pub(crate) http: Arc<Http>,
    /// Where this worker's idle plain connections wait ([`crate::h1::park`]); none for HTTPS.
    pub(crate) lot: Option<Arc<Lot>>,
}

impl Shared {
    /// The lot `socket` waits in once idle for [`PARK_AFTER`], for the rest of its idle time: for
    /// plain connections whose idle timeout is longer.
    fn lot_for(&self, socket: &ClientSocket) -> Option<&Arc<Lot>> {
        let longer = self.http.options.timeouts.idle > PARK_AFTER;
        match (&self.lot, socket) {
            (Some(lot), ClientSocket::Plain(_)) if longer && !lot.is_closed() => Some(lot),
            _ => None,
        }
    }
}

/// Serves `socket` from `peer`, request after request, holding `slot` while it is open (also
/// while parked).
pub(crate) async fn connection(
    mut socket: ClientSocket,
    peer: SocketAddr,
    slot: Slot,
    shared: Arc<Shared>,
    stop: CancellationToken,
) {
    let Shared { proxy, http, .. } = &*shared;
    let idle_timeout = http.options.timeouts.idle;
    let park = shared.lot_for(&socket);
    let idle_wait = park.map_or(idle_timeout, |_| PARK_AFTER);
    // The connection's one timer: the idle timeout between requests, the response timeout
    // during one (a timer made and dropped per request cost more than re-arming this one).
    let timer = tokio::time::sleep(idle_wait);
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
                .reset(tokio::time::Instant::now() + idle_wait);
            // The drain signal is polled last: a request already here is served (its response
            // says `Connection: close`), like one under way.
            tokio::select! {
                biased;
                ready = socket.readable() => if ready.is_err() { return },
                () = &mut timer => {
                    if let (Some(lot), ClientSocket::Plain(tcp)) = (park, socket) {
                        lot.park(tcp, peer, slot, idle_timeout - PARK_AFTER);
                        return;
                    }
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
            &socket,
            peer,
            proxy,
            &http.options,
            &stop,
            buffer,
            timer.as_mut(),
        ))
        .await;
        match next {
            Next::KeepAlive(rest) => pending = rest,
            Next::Close => {
                // Over TLS this sends close_notify after what the record layer still holds: a
                // client that reads nothing would otherwise hold the connection for ever.
                let send = http.options.timeouts.send;
                let _ = tokio::time::timeout(send, socket.shutdown()).await;
                return;
            }
            Next::HandOff(read) => {
                let proxy = proxy.clone();
                let handler = move |req, peer| proxy.clone().handle(req, peer);
                // Boxed: hyper's connection state is large, and only these connections need it.
                Box::pin(http.serve(socket, read, peer, handler, stop.clone())).await;
                return;
            }
        }
    }
}

/// Reads one request head, forwards it, and relays the response.
pub(crate) async fn exchange(
    socket: &ClientSocket,
    peer: SocketAddr,
    proxy: &Proxy,
    options: &ServeOptions,
    stop: &CancellationToken,
    input: Buffer,
    timer: Pin<&mut Sleep>,
) -> Next {
    let snap = proxy.forwarder().state().load();
    let mut request = Head::take();
    let start = Instant::now();
    let (mut plan, mut input) =
        match read_request(socket, peer, &snap, options, input, &mut request).await {
            Ok(read) => read,
            Err(next) => return next,
        };
    // Whether all of the request has been read from the client: an upload clears it until it
    // has read the last byte.
    let body_read = AtomicBool::new(true);
    let upload = match streamed_body(socket, &snap, &plan, &body_read) {
        Ok(upload) => upload,
        Err(e) => {
            debug!(%peer, error = %e, "no pipe for the request body: the general path streams it");
            return Next::HandOff(input.into_vec());
        }
    };
    // The body goes to the upstream in the same write as the head.
    let whole = plan.head_len + plan.body_len;
    request.extend_from_slice(&input.filled()[plan.head_len..whole]);
    input.consume(whole);
    plan.close |= stop.is_cancelled();
    let exchange = Exchange::new(
        start,
        peer,
        plan.client,
        plan.method.clone(),
        plan.logged.take(),
        plan.pool.clone(),
        Served::Own,
    );
    let client = Client {
        socket,
        send_timeout: snap.config.proxy.client_send_timeout,
    };
    let sending = (&request[..], upload, &body_read);
    let answered = answer(client, peer, proxy, &snap, &plan, sending, exchange, timer).await;
    if !answered || plan.close {
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

/// Resolves when the client has gone away, looked for only once all of its request has been read
/// (`body_read`): before that, the end of its stream is a body cut short, which the upload answers
/// with 400, and teal may have read the last bytes and the end before it has even connected
/// upstream. Until then it is pending without a waker: the `select!` it is in polls it again
/// whenever the exchange beside it moves, and the exchange is what reads the body.
async fn gone_after(client: &Client<'_>, body_read: &AtomicBool) {
    std::future::poll_fn(|_| match body_read.load(Ordering::Relaxed) {
        true => Poll::Ready(()),
        false => Poll::Pending,
    })
    .await;
    client.gone().await;
}

/// Runs `main` to its end with `aside` beside it, as long as `aside` has work (it is dropped
/// when `main` is done).
async fn beside<T>(main: impl Future<Output = T>, aside: impl Future<Output = ()>) -> T {
    let (mut main, mut aside) = (std::pin::pin!(main), std::pin::pin!(aside));
    let mut busy = true;
    loop {
        tokio::select! {
            biased;
            out = main.as_mut() => return out,
            () = aside.as_mut(), if busy => busy = false,
        }
    }
}

/// The source of `plan`'s streamed body: the client's plain socket and a pipe to the upstream
/// ([`Plan::rest`]); `None` for a body that came whole. An error when no pipe can be had.
fn streamed_body<'a>(
    socket: &'a ClientSocket,
    snap: &Snapshot,
    plan: &Plan,
    read_all: &'a AtomicBool,
) -> std::io::Result<Option<Box<Upload<'a>>>> {
    let (ClientSocket::Plain(tcp), true) = (socket, plan.rest > 0) else {
        return Ok(None);
    };
    let proxy = &snap.config.proxy;
    let timeouts = (
        proxy.client_body_timeout,
        proxy.upstream_body_timeout,
        proxy.client_send_timeout,
    );
    Upload::new(tcp, (plan.rest, read_all), timeouts).map(|u| Some(Box::new(u)))
}

/// Reads until `input` holds a whole request head this path takes, with its body; or says what
/// the connection does instead (hand over to the hyper path, or close).
async fn read_request(
    socket: &ClientSocket,
    peer: SocketAddr,
    snap: &Snapshot,
    options: &ServeOptions,
    mut input: Buffer,
    request: &mut Vec<u8>,
) -> Result<(Plan, Buffer), Next> {
    let mut head_deadline = None;
    let mut awaiting_body = false;
    loop {
        if !input.is_empty() {
            treat_minor_versions_as_1_1(input.filled_mut());
            match plan_request(input.filled(), peer, snap, options, request) {
                Parsed::Ready(plan) => return Ok((plan, input)),
                Parsed::HandOff => return Err(Next::HandOff(input.into_vec())),
                Parsed::Partial if input.len() >= BUFFER => {
                    return Err(Next::HandOff(input.into_vec()))
                }
                Parsed::Partial => {}
                Parsed::Body => awaiting_body = true,
            }
            head_deadline
                .get_or_insert_with(|| tokio::time::Instant::now() + options.timeouts.header);
        }
        let read = match head_deadline {
            None => read_client(socket, &mut input).await,
            Some(at) => match tokio::time::timeout_at(at, read_client(socket, &mut input)).await {
                Ok(read) => read,
                // A whole head whose body is slow: the general path streams the body to the
                // upstream as it comes, with its own rules.
                Err(_) if awaiting_body => return Err(Next::HandOff(input.into_vec())),
                Err(_) => {
                    options.reject("header_timeout");
                    debug!(%peer, reason = "request head not complete within header_timeout", "connection closed");
                    input.give();
                    return Err(Next::Close);
                }
            },
        };
        if !matches!(read, Ok(n) if n > 0) {
            input.give();
            return Err(Next::Close);
        }
    }
}

/// Reads what the client sent into the free part of `input`.
async fn read_client(socket: &ClientSocket, input: &mut Buffer) -> std::io::Result<usize> {
    let n = socket.read(input.space()).await?;
    input.end += n;
    Ok(n)
}

/// Forwards `request` and sends the client the answer: the upstream's response, or teal's own
/// for a failure. `false` when the client's connection must close (it went away, or the response
/// could not be relayed to its end).
#[allow(clippy::too_many_arguments)]
async fn answer(
    client: Client<'_>,
    peer: SocketAddr,
    proxy: &Proxy,
    snap: &Snapshot,
    plan: &Plan,
    sending: (&[u8], Option<Box<Upload<'_>>>, &AtomicBool),
    mut exchange: Exchange,
    timer: Pin<&mut Sleep>,
) -> bool {
    let (request, upload, body_read) = sending;
    let mut upstream_buffer = Buffer::take();
    let mut head = Head::take();
    let forwarder = proxy.forwarder();
    let mirror = snap.mirror_for(&plan.pool, plan.preview.is_some());
    let tap = mirror::own_path(mirror, &plan.method, request, plan.body_len);
    // A streamed body: whatever happens, the client's connection closes unless the whole body
    // went upstream and the answer came after it.
    let streamed = plan.rest > 0;
    let forwarded = tokio::select! {
        biased;
        forwarded = forward(forwarder, plan, (request, upload), &mut upstream_buffer, &mut head, timer) => forwarded,
        // The client went away: the exchange (and its upstream connection) ends here.
        () = gone_after(&client, body_read) => {
            debug!(%peer, "client closed its connection while its request was under way");
            exchange.status = 499;
            upstream_buffer.give();
            return false;
        }
    };
    if let Some(tap) = tap {
        match &forwarded {
            Ok(sent) => tap.report(sent.status, sent.upstream_time),
            Err(err) => tap.failed(err.status().as_u16()),
        }
    }
    let keep_client = match forwarded {
        Err(err) => {
            count_rejection(forwarder.state(), &err);
            error!(peer = %peer, pool = %plan.pool.name, error = %err, "request failed");
            let hsts = plan.hsts.as_ref().map(http::HeaderValue::as_bytes);
            let close = plan.close || streamed;
            let page = synthetic(&err, plan.method == Method::HEAD, close, hsts, &mut head);
            exchange.status = err.status().as_u16();
            exchange.bytes = page as u64;
            exchange.failed = err.server().map(str::to_string);
            drop(exchange);
            client.write(&head).await.is_ok() && !close
        }
        Ok(mut sent) => {
            let (early, rest) = (sent.early, sent.rest.take());
            let read_timeout = snap.config.proxy.upstream_body_timeout;
            let connections = forwarder.connections();
            // Pinned where it is made: moving the relay's state into a caller costs a copy.
            let mut relay = std::pin::pin!(relay(
                client,
                sent,
                &mut head,
                &mut upstream_buffer,
                exchange,
                connections,
                read_timeout,
            ));
            let relayed = match rest {
                // Boxed: its state would otherwise make every request's future larger.
                Some(rest) => Box::pin(beside(relay.as_mut(), rest.send())).await,
                None => relay.await,
            };
            let relayed = relayed.unwrap_or_else(|e| {
                debug!(%peer, error = %e, "response not relayed to its end");
                false
            });
            // After an early answer the rest of the body may still be in the client's socket.
            relayed && !early
        }
    };
    upstream_buffer.give();
    keep_client
}
