//! This path's [`Attempt`](crate::forward::Attempt): the request out on a plain socket, the response head
//! back, within `response_timeout`.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use http::Method;
use tokio::net::TcpStream;
use tokio::time::Sleep;

use crate::forward::{self, Attempt, Failed, Forwarder};
use crate::framing::{BodyRelay, Step};
use crate::h1::io::{read_into, write_all, Buffer, BUFFER};
use crate::h1::request::Plan;
use crate::h1::response::{plan_response, Added, ParsedResponse, ResponseHead};
use crate::pool::InFlight;
use crate::proxy::ProxyError;
use crate::upstream::{Connections, Timeouts};

/// A response head received from a server.
pub(crate) struct Sent {
    pub(crate) stream: TcpStream,
    pub(crate) addr: SocketAddr,
    pub(crate) in_flight: InFlight,
    pub(crate) status: u16,
    pub(crate) reusable: bool,
    /// The body being relayed, and its step over the bytes that came with the head (already in
    /// the buffer).
    pub(crate) body: (BodyRelay, Step),
    /// From sending the request to the response head.
    pub(crate) upstream_time: Duration,
}

/// Sends the request to the pool's servers in turn until one answers ([`Forwarder::walk`]).
pub(crate) async fn forward(
    forwarder: &Forwarder,
    plan: &Plan,
    request: &[u8],
    buffer: &mut Buffer,
    head: &mut Vec<u8>,
    timer: Pin<&mut Sleep>,
) -> Result<Sent, ProxyError> {
    let mut attempt = OwnAttempt {
        plan,
        request,
        buffer,
        head,
        timer,
        timeout: plan.pool.timeouts.response,
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
pub(crate) struct OwnAttempt<'a> {
    pub(crate) plan: &'a Plan,
    pub(crate) request: &'a [u8],
    pub(crate) buffer: &'a mut Buffer,
    pub(crate) head: &'a mut Vec<u8>,
    pub(crate) timer: Pin<&'a mut Sleep>,
    pub(crate) timeout: Duration,
}

impl Attempt for OwnAttempt<'_> {
    type Conn = TcpStream;
    type Answer = (ResponseHead, (BodyRelay, Step));

    async fn checkout(
        &mut self,
        connections: &Connections,
        addr: SocketAddr,
        timeouts: Timeouts,
    ) -> Result<(TcpStream, bool), BoxError> {
        connections.checkout_raw(addr, timeouts).await
    }

    async fn connect(
        &mut self,
        connections: &Connections,
        addr: SocketAddr,
        connect_timeout: Duration,
    ) -> Result<TcpStream, BoxError> {
        connections.connect_raw(addr, connect_timeout).await
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

pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// An I/O error before any byte of an answer: stale if the connection was closed or reset.
pub(crate) fn before_answer(e: io::Error) -> Failed {
    let why = format!("connection closed before a response: {e}");
    if forward::is_stale(&e) {
        Failed::Stale(why)
    } else {
        Failed::Upstream(why)
    }
}

/// Writes `request` on `stream` and reads the response head into `buffer`; the client's head goes
/// into `head`, as `plan`'s request needs it.
pub(crate) async fn round_trip(
    stream: &TcpStream,
    request: &[u8],
    buffer: &mut Buffer,
    head: &mut Vec<u8>,
    plan: &Plan,
) -> Result<ResponseHead, Failed> {
    let (head_request, preview) = (plan.method == Method::HEAD, plan.preview.as_ref());
    let added = Added {
        set_cookie: plan.set_cookie.as_ref().map(http::HeaderValue::as_bytes),
        hsts: plan.hsts.as_ref().map(http::HeaderValue::as_bytes),
    };
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
            plan_response(bytes, head_request, plan.close, preview, added, head)
        };
        let next = next_head(buffer, &mut interim, head, plan);
        if let Some(response) = next.map_err(|reason| Failed::Upstream(reason.into()))? {
            return Ok(response);
        }
    }
}

/// Parses what `buffer` holds with `plan` (`plan_response`): the final response head, or `None`
/// while it is incomplete. Interim (1xx) heads are dropped from the buffer, and `interim` set.
pub(crate) fn next_head(
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
pub(crate) fn first_step(
    response: &ResponseHead,
    buffer: &mut Buffer,
    head: &mut Vec<u8>,
) -> Result<(BodyRelay, Step), &'static str> {
    buffer.consume(response.head_len);
    let mut body = BodyRelay::new(response.framing);
    let step = body.next(buffer.filled(), head)?;
    Ok((body, step))
}
