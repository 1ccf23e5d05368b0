//! This path's [`Attempt`](crate::forward::Attempt): the request out on a plain socket, the response head
//! back, within `response_timeout`.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use http::Method;
use tokio::net::TcpStream;
use tokio::time::Sleep;

use crate::forward::{self, client_paused, Attempt, Failed, Forwarder};
use crate::framing::{BodyRelay, Step};
use crate::h1::io::{read_into, write_all, Buffer, BUFFER};
use crate::h1::request::Plan;
use crate::h1::response::{plan_response, Added, ParsedResponse, ResponseHead};
use crate::h1::splice::Upload;
use crate::pool::InFlight;
use crate::proxy::ProxyError;
use crate::upstream::{Connections, Timeouts};

/// A response head received from a server.
pub(crate) struct Sent<'a> {
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
    /// The upstream answered before the client's streamed body was all sent, so the client's
    /// connection closes after this response.
    pub(crate) early: bool,
    /// The rest of that body, sent on beside the response (as hyper's client does: an upstream
    /// may answer first and go on reading, an echo), if the upstream still took it.
    pub(crate) rest: Option<Box<Rest<'a>>>,
}

/// The rest of a streamed body after an early answer, and a second handle on the upstream's
/// socket to send it on (the first goes with the response).
pub(crate) struct Rest<'a> {
    pub(crate) upload: Box<Upload<'a>>,
    pub(crate) upstream: TcpStream,
}

impl Rest<'_> {
    /// Sends the rest of the body; its failure only ends it (the response says the rest).
    pub(crate) async fn send(mut self) {
        let waiting = AtomicU64::new(0);
        if let Err(e) = self.upload.send(&self.upstream, &waiting).await {
            tracing::debug!(error = ?e, "the rest of the body after an early answer was not sent");
        }
    }
}

/// Sends the request to the pool's servers in turn until one answers ([`Forwarder::walk`]).
pub(crate) async fn forward<'u>(
    forwarder: &Forwarder,
    plan: &Plan,
    (request, upload): (&[u8], Option<Box<Upload<'u>>>),
    buffer: &mut Buffer,
    head: &mut Vec<u8>,
    timer: Pin<&mut Sleep>,
) -> Result<Sent<'u>, ProxyError> {
    let mut attempt = OwnAttempt {
        plan,
        request,
        upload,
        buffer,
        head,
        timer,
        timeout: plan.pool.timeouts.response,
    };
    let answered = forwarder.walk(&plan.pool, &mut attempt).await?;
    let (response, body, (early, rest)) = answered.answer;
    Ok(Sent {
        stream: answered.conn,
        addr: answered.addr,
        in_flight: answered.in_flight,
        status: response.status,
        reusable: response.keep_alive && !early,
        body,
        upstream_time: answered.upstream_time,
        early,
        rest,
    })
}

/// This path's [`Attempt`]: the request head (and its small body) in one write on a plain socket,
/// the response head parsed here, within `response_timeout` on the connection's one timer.
pub(crate) struct OwnAttempt<'a, 'u> {
    pub(crate) plan: &'a Plan,
    pub(crate) request: &'a [u8],
    /// A streamed body's source, taken by the one attempt that sends it.
    pub(crate) upload: Option<Box<Upload<'u>>>,
    pub(crate) buffer: &'a mut Buffer,
    pub(crate) head: &'a mut Vec<u8>,
    pub(crate) timer: Pin<&'a mut Sleep>,
    pub(crate) timeout: Duration,
}

impl<'u> Attempt for OwnAttempt<'_, 'u> {
    type Conn = TcpStream;
    type Answer = Answer<'u>;

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
        if self.plan.rest > 0 {
            // Boxed: its state would otherwise make every request's future larger.
            return Box::pin(self.send_streamed(stream)).await;
        }
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
        Ok((response, body, (false, None)))
    }

    fn retry_safe(&self) -> bool {
        self.plan.idempotent
    }
}

/// The response head, the body's relay and its first step, whether the answer came before the
/// whole request body was sent, and the rest of that body to send on.
pub(crate) type Answer<'a> = (
    ResponseHead,
    (BodyRelay, Step),
    (bool, Option<Box<Rest<'a>>>),
);

impl<'u> OwnAttempt<'_, 'u> {
    /// Sends the head (and the body's first bytes), then the rest of the body from the client's
    /// socket while watching for the response head: an upstream may answer before it read the
    /// whole body (an error, a redirect, an echo), and that answer is the client's, with the
    /// connection closing after it. `response_timeout` counts from the end of the body, as on the
    /// hyper path.
    async fn send_streamed(&mut self, stream: &mut TcpStream) -> Result<Answer<'u>, Failed> {
        let Some(mut upload) = self.upload.take() else {
            return Err(Failed::Upstream(
                "the request body went to an earlier attempt".into(),
            ));
        };
        self.buffer.clear();
        let stream = &*stream;
        write_all(stream, self.request, Some(upload.stall))
            .await
            .map_err(before_answer)?;
        if self.plan.expect_continue {
            let continued = b"HTTP/1.1 100 Continue\r\n\r\n";
            let sent = write_all(upload.client(), continued, Some(upload.send_timeout)).await;
            sent.map_err(|e| Failed::Client(ProxyError::ClientBody(e.to_string())))?;
        }
        let (response, early) = self.body_and_head(stream, &mut upload).await?;
        let body = first_step(&response, self.buffer, self.head)
            .map_err(|reason| Failed::Upstream(reason.into()))?;
        // Answered early: the rest goes on beside the response, on a second handle.
        let rest = match early {
            Early::Answered => second_handle(stream)
                .ok()
                .map(|upstream| Box::new(Rest { upload, upstream })),
            Early::No | Early::NotTaken => None,
        };
        Ok((response, body, (early != Early::No, rest)))
    }

    /// The rest of the body to `stream` and its response head back: whether that came early.
    async fn body_and_head(
        &mut self,
        stream: &TcpStream,
        upload: &mut Upload<'_>,
    ) -> Result<(ResponseHead, Early), Failed> {
        let plan = self.plan;
        let sent = AtomicBool::new(false);
        let closing = || plan.close || !sent.load(Ordering::Relaxed);
        let mut response = std::pin::pin!(read_head(stream, self.buffer, self.head, plan, closing));
        let waiting = AtomicU64::new(0);
        let sending = async {
            let rest = upload.send(stream, &waiting).await;
            sent.store(rest.is_ok(), Ordering::Relaxed);
            rest
        };
        let early = tokio::select! {
            biased;
            rest = sending => match rest {
                Ok(()) => Early::No,
                // The upstream stopped reading: its answer, if one came, is the client's.
                Err(Failed::Upstream(_)) => Early::NotTaken,
                Err(failed) => return Err(failed),
            },
            response = response.as_mut() => return match response {
                Ok(head) => Ok((head, Early::Answered)),
                // Closed while the body waited for the client: the server gave up on it.
                Err(Failed::Stale(why)) if client_paused(waiting.load(Ordering::Relaxed)) => {
                    Err(Failed::GaveUpOnClient(why))
                }
                Err(failed) => Err(failed),
            },
        };
        let deadline = tokio::time::Instant::now() + self.timeout;
        self.timer.as_mut().reset(deadline);
        tokio::select! {
            biased;
            done = response => Ok((done?, early)),
            () = self.timer.as_mut() => Err(Failed::Timeout(self.timeout)),
        }
    }
}

/// Whether and how a response head came before the whole request body was sent.
#[derive(Clone, Copy, PartialEq)]
enum Early {
    /// After the whole body.
    No,
    /// While the body was being sent, which can go on.
    Answered,
    /// After the upstream stopped taking the body.
    NotTaken,
}

/// A second handle on `stream`'s socket (`dup`), registered with this worker's runtime.
fn second_handle(stream: &TcpStream) -> io::Result<TcpStream> {
    let fd = stream.as_fd().try_clone_to_owned()?;
    TcpStream::from_std(std::net::TcpStream::from(fd))
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
    write_all(stream, request, None)
        .await
        .map_err(before_answer)?;
    read_head(stream, buffer, head, plan, || plan.close).await
}

/// Reads the response head into `buffer` and writes the client's into `head`; `closing` says, when
/// the head is complete, whether it is the client's last response.
async fn read_head(
    stream: &TcpStream,
    buffer: &mut Buffer,
    head: &mut Vec<u8>,
    plan: &Plan,
    closing: impl Fn() -> bool,
) -> Result<ResponseHead, Failed> {
    let (head_request, preview) = (plan.method == Method::HEAD, plan.preview.as_ref());
    let added = Added {
        set_cookie: plan.set_cookie.as_ref().map(http::HeaderValue::as_bytes),
        hsts: plan.hsts.as_ref().map(http::HeaderValue::as_bytes),
    };
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
            plan_response(bytes, head_request, closing(), preview, added, head)
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
