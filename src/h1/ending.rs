//! What ends with a response on teal's own HTTP/1.1 path ([`Ending`]), whichever way its body is
//! relayed (the read/write loop or `splice`), the wait for its next bytes, and the errors that end
//! it early.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpStream;

use crate::access::Exchange;
use crate::h1::io::Client;
use crate::upstream::Connections;

/// What ends with the response: the request's record and the upstream connection.
pub(crate) struct Ending<'a> {
    pub(crate) exchange: Option<Exchange>,
    pub(crate) upstream: Option<TcpStream>,
    pub(crate) addr: SocketAddr,
    pub(crate) reusable: bool,
    pub(crate) connections: &'a Connections,
}

impl Ending<'_> {
    pub(crate) fn upstream(&self) -> io::Result<&TcpStream> {
        self.upstream
            .as_ref()
            .ok_or_else(|| io::Error::other("upstream connection already given back"))
    }

    pub(crate) fn count(&mut self, bytes: u64) {
        if let Some(exchange) = &mut self.exchange {
            exchange.bytes += bytes;
        }
    }

    /// The response's last bytes are about to be written: the request ends (in flight, metrics,
    /// access log) before the client can see it has, as on the general path; and when the body
    /// ended exactly where its framing said (`clean`), the upstream connection goes back for the
    /// next request.
    pub(crate) fn end(&mut self, clean: bool) {
        self.exchange = None;
        if let Some(stream) = self.upstream.take() {
            if clean && self.reusable {
                self.connections.release_raw(self.addr, stream);
            }
        }
    }
}

/// Waits for `next`, the upstream's next bytes of a response body (however they are taken). A
/// pause longer than `timeout` (`upstream_body_timeout`) is an error, and so is the client going
/// away meanwhile; both connections close then.
pub(crate) async fn body_wait<T>(
    next: impl std::future::Future<Output = io::Result<T>>,
    timeout: Duration,
    client: Client<'_>,
) -> io::Result<T> {
    let next = tokio::time::timeout(timeout, next);
    tokio::select! {
        biased;
        next = next => next.unwrap_or_else(|_| Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("upstream sent nothing of the body for {timeout:?} (upstream_body_timeout)"),
        ))),
        () = client.gone() => Err(io::Error::new(
            io::ErrorKind::ConnectionAborted,
            "client closed its connection during the response",
        )),
    }
}

pub(crate) fn truncated(reason: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, reason)
}

pub(crate) fn bad_chunk(reason: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, reason)
}
