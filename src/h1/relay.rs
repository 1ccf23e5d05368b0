//! The response body from the upstream to the client, by its framing ([`crate::framing`]), with
//! the upstream connection given back when the body ended exactly where its framing said. The
//! rest of a large `Content-Length` body to a plain client socket is spliced ([`splice`]).

use std::io;
use std::time::Duration;

use tokio::net::TcpStream;

use crate::access::Exchange;
use crate::framing::BodyRelay;
use crate::h1::ending::{bad_chunk, body_wait, truncated, Ending};
use crate::h1::io::{read_into, Buffer, Client};
use crate::h1::splice;
use crate::h1::upstream::Sent;
use crate::socket::ClientSocket;
use crate::upstream::Connections;

/// Sends the client `head` and the body from the upstream (its first bytes already in `buffer`,
/// their step taken by [`first_step`]), a loop of reads and writes around the body's
/// [`BodyRelay`]. `Ok(false)` when the client's connection must close after it.
pub(crate) async fn relay(
    client: Client<'_>,
    sent: Sent<'_>,
    head: &mut Vec<u8>,
    buffer: &mut Buffer,
    mut exchange: Exchange,
    connections: &Connections,
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
        connections,
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
        if let Some((left, tcp, pipe)) = spliced(&body, client) {
            splice::relay_rest(&mut ending, tcp, client, pipe, left, read_timeout).await?;
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

/// The bytes left of `body` and a pipe if they go to the client by [`splice`]: a
/// `Content-Length` body with at least [`splice::SPLICE_MIN`] bytes to come, to a plain socket.
/// Without a pipe (out of descriptors) the loop relays them.
fn spliced<'a>(body: &BodyRelay, client: Client<'a>) -> Option<(u64, &'a TcpStream, splice::Pipe)> {
    let (left, tcp) = match (body.length_left()?, client.socket) {
        (left, ClientSocket::Plain(tcp)) if left >= splice::SPLICE_MIN => (left, tcp),
        _ => return None,
    };
    match splice::Pipe::take() {
        Ok(pipe) => Some((left, tcp, pipe)),
        Err(e) => {
            tracing::debug!(error = %e, "no pipe for splice, the body is copied");
            None
        }
    }
}

/// Reads the next bytes of a response body from the upstream into `buffer`.
pub(crate) async fn read_upstream(
    ending: &Ending<'_>,
    buffer: &mut Buffer,
    timeout: Duration,
    client: Client<'_>,
) -> io::Result<usize> {
    body_wait(read_into(ending.upstream()?, buffer), timeout, client).await
}
