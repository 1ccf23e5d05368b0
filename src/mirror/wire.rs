//! A copy's way out and back, on bytes as teal's own HTTP/1.1 path works (`h1`): its request in
//! one write on a plain socket, the response head parsed with `httparse` for its status and
//! framing (`h1::head`, the live path's rules), the body read by its framing and thrown away.
//!
//! Copies have connections of their own: each worker thread keeps a second [`Connections`] for
//! them (its idle sockets checked quiet before reuse and swept as the live ones are), so a copy
//! never takes a live request's connection. A connection goes back to it only after a complete,
//! well-framed response with nothing after it, and keep-alive; any other is closed, so no stray
//! bytes are ever read as the next copy's answer.

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::net::TcpStream;

use crate::framing::{BodyRelay, Framing};
use crate::h1::head::{parse_response, ParsedResponse, ResponseHead};
use crate::h1::io::{read_into, write_all, Buffer, BUFFER};
use crate::pool::Pool;
use crate::upstream::{Connections, Timeouts};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

thread_local! {
    /// Each worker thread's connections for copies, apart from its live ones. Made on the first
    /// copy, on the worker's runtime (its sweeper runs there).
    static COPIES: Connections = Connections::new(Duration::from_secs(4));
}

/// Sends `request` (head and body) to the next server of `pool` and reads its response to the
/// end: its status and the time to its head. `head_request`: the answer has no body;
/// `retry_safe`: a reused connection that turns out closed before any answer may be replaced by
/// a fresh one, once.
pub(super) async fn exchange(
    pool: &Pool,
    request: &[u8],
    head_request: bool,
    retry_safe: bool,
) -> Result<(u16, Duration), BoxError> {
    let addr = {
        let server = pool.order().next().ok_or("the pool has no servers")?;
        let addrs = server.addrs();
        let target = server.rotate(&addrs).next();
        target.ok_or("the server's name is not resolved yet")?.addr
    };
    let timeouts = Timeouts {
        connect: pool.timeouts.connect,
        idle: pool.timeouts.idle,
    };
    let connections = COPIES.with(Connections::clone);
    let mut buffer = Buffer::take();
    let to = Target {
        connections: &connections,
        addr,
        timeouts,
    };
    let sent = Instant::now();
    // One timer for the copy: the head's deadline, then the body's if it is not all here.
    let timer = tokio::time::sleep_until((sent + timeouts.connect + pool.timeouts.response).into());
    tokio::pin!(timer);
    // Boxed: the copy's task is boxed whole, small enough for the allocator's fast path.
    let head = Box::pin(to.head(request, &mut buffer, head_request, retry_safe));
    let answer = tokio::select! {
        biased;
        answer = head => answer,
        () = &mut timer => Err("no response head in time".into()),
    };
    let result = match answer {
        Err(e) => Err(e),
        Ok((stream, head)) => {
            let time = sent.elapsed();
            buffer.consume(head.head_len);
            let mut body = Body::new(head.framing);
            let clean = match body.in_buffer(&mut buffer) {
                Some(done) => done,
                None => {
                    timer
                        .as_mut()
                        .reset(tokio::time::Instant::now() + pool.timeouts.response);
                    tokio::select! {
                        biased;
                        done = body.read(&stream, &mut buffer) => done,
                        () = &mut timer => Err("response body not read in time".into()),
                    }
                }
            };
            clean.map(|clean| {
                if clean && head.keep_alive {
                    connections.release_raw(addr, stream);
                }
                (head.status, time)
            })
        }
    };
    buffer.give();
    result
}

/// Where a copy goes: an address, and the connections it is taken from.
struct Target<'a> {
    connections: &'a Connections,
    addr: SocketAddr,
    timeouts: Timeouts,
}

impl Target<'_> {
    /// Sends `request` on an idle connection or a new one, and reads the final response head
    /// into `buffer`: the connection and the head.
    async fn head(
        &self,
        request: &[u8],
        buffer: &mut Buffer,
        head_request: bool,
        retry_safe: bool,
    ) -> Result<(TcpStream, ResponseHead), BoxError> {
        let (mut stream, mut reused) = self
            .connections
            .checkout_raw(self.addr, self.timeouts)
            .await?;
        loop {
            match round_trip(&stream, request, buffer, head_request).await {
                Ok(head) => return Ok((stream, head)),
                Err(Failure::Stale(_)) if reused && retry_safe => {
                    buffer.clear();
                    let fresh = self
                        .connections
                        .connect_raw(self.addr, self.timeouts.connect);
                    stream = Box::pin(fresh).await?;
                    reused = false;
                }
                Err(Failure::Stale(e)) => return Err(e.into()),
                Err(Failure::Other(why)) => return Err(why.into()),
            }
        }
    }
}

/// How a round trip failed.
enum Failure {
    /// The connection closed or reset before any byte of an answer.
    Stale(io::Error),
    Other(String),
}

/// An I/O error before any byte of an answer: stale if the connection was closed or reset (as
/// `forward::is_stale` finds for the live path).
fn before_answer(e: io::Error) -> Failure {
    use io::ErrorKind::*;
    match e.kind() {
        ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof => Failure::Stale(e),
        _ => Failure::Other(e.to_string()),
    }
}

/// Writes `request` on `stream` and reads the final response head into `buffer` (interim 1xx
/// heads are dropped).
async fn round_trip(
    stream: &TcpStream,
    request: &[u8],
    buffer: &mut Buffer,
    head_request: bool,
) -> Result<ResponseHead, Failure> {
    write_all(stream, request, None)
        .await
        .map_err(before_answer)?;
    let mut interim = false;
    loop {
        let answered = interim || !buffer.is_empty();
        match read_into(stream, buffer).await {
            Ok(0) if !answered => return Err(before_answer(io::ErrorKind::UnexpectedEof.into())),
            Ok(0) => {
                return Err(Failure::Other(
                    "connection closed in the response head".into(),
                ))
            }
            Ok(_) => {}
            Err(e) if !answered => return Err(before_answer(e)),
            Err(e) => return Err(Failure::Other(e.to_string())),
        }
        while !buffer.is_empty() {
            match parse_response(buffer.filled(), head_request, |_| {}) {
                ParsedResponse::Ready(head) => return Ok(head),
                ParsedResponse::Interim(len) => {
                    interim = true;
                    buffer.consume(len);
                }
                ParsedResponse::Partial if buffer.len() >= BUFFER => {
                    return Err(Failure::Other("response head larger than 16 KiB".into()))
                }
                ParsedResponse::Partial => break,
                ParsedResponse::Bad(reason) => return Err(Failure::Other(reason.into())),
            }
        }
    }
}

/// A response body being read and thrown away: whether it ends exactly where the bytes read do,
/// so the connection may serve again.
struct Body {
    relay: BodyRelay,
    /// Delimited by the close: read to the end, never clean.
    until_close: bool,
}

impl Body {
    fn new(framing: Framing) -> Body {
        Body {
            relay: BodyRelay::new(framing),
            until_close: matches!(framing, Framing::UntilClose | Framing::UntilCloseAsIs),
        }
    }

    /// Takes what `buffer` holds of the body (the bytes that came with the head): the outcome
    /// if the body ended in them, `None` if more is to be read.
    fn in_buffer(&mut self, buffer: &mut Buffer) -> Option<Result<bool, BoxError>> {
        if self.until_close {
            buffer.clear();
            return None;
        }
        // Written to only for a body delimited by the close, not here.
        let mut unused = Vec::new();
        let step = match self.relay.next(buffer.filled(), &mut unused) {
            Ok(step) => step,
            Err(e) => return Some(Err(e.into())),
        };
        buffer.clear();
        step.ended.then_some(Ok(step.clean))
    }

    /// Reads the rest of the body from `stream` into `buffer` (empty) and throws it away.
    async fn read(&mut self, stream: &TcpStream, buffer: &mut Buffer) -> Result<bool, BoxError> {
        loop {
            if read_into(stream, buffer).await? == 0 {
                return match self.until_close {
                    true => Ok(false),
                    false => Err("upstream closed before the end of the body".into()),
                };
            }
            if let Some(done) = self.in_buffer(buffer) {
                return done;
            }
        }
    }
}
