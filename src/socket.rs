//! A client's connection as both request paths see it: a plain TCP socket, or TLS over one.
//!
//! teal's own HTTP/1.1 path uses it through a shared reference (readiness, reads into its
//! buffers, writes bounded by `client_send_timeout`, and a peek to notice the client leaving);
//! hyper uses it through `AsyncRead`/`AsyncWrite`. A match on two variants is all plain
//! connections pay for TLS being possible. The readiness-based reads and writes of a plain socket
//! are here too; the own path uses them for its upstream connections as well.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;

use crate::tls::{send_timed_out, TlsSocket};

/// A client connection.
pub enum ClientSocket {
    /// Plain HTTP.
    Plain(TcpStream),
    /// HTTPS (boxed: the record layer's state is large and plain connections need none of it).
    Tls(Box<TlsSocket>),
}

impl ClientSocket {
    /// Resolves when there is something to read (or the end of the stream).
    pub(crate) async fn readable(&self) -> io::Result<()> {
        match self {
            ClientSocket::Plain(tcp) => std::future::poll_fn(|cx| tcp.poll_read_ready(cx)).await,
            ClientSocket::Tls(tls) => std::future::poll_fn(|cx| tls.poll_plaintext(cx)).await,
        }
    }

    /// Reads what the client sent into `space`; 0 at the end of the stream.
    pub(crate) async fn read(&self, space: &mut [u8]) -> io::Result<usize> {
        match self {
            ClientSocket::Plain(tcp) => read_some(tcp, space).await,
            ClientSocket::Tls(tls) => {
                std::future::poll_fn(|cx| tls.poll_read_plain(cx, space)).await
            }
        }
    }

    /// Writes all of `bytes`; a wait of more than `timeout` for the client to read is an error.
    pub(crate) async fn write_all(
        &self,
        bytes: &[u8],
        timeout: Option<Duration>,
    ) -> io::Result<()> {
        match self {
            ClientSocket::Plain(tcp) => write_all(tcp, bytes, timeout).await,
            ClientSocket::Tls(tls) => tls.write_all(bytes, timeout).await,
        }
    }

    /// Resolves when the client has closed its connection (or it failed). Bytes it sent
    /// meanwhile (a pipelined request, or TLS records) are left for later, and this never
    /// resolves then: such a client is still there.
    pub(crate) async fn gone(&self) {
        let tcp = match self {
            ClientSocket::Plain(tcp) => tcp,
            ClientSocket::Tls(tls) => tls.tcp(),
        };
        let mut byte = [0u8; 1];
        let mut buf = ReadBuf::new(&mut byte);
        match std::future::poll_fn(|cx| tcp.poll_peek(cx, &mut buf)).await {
            Ok(0) | Err(_) => {}
            Ok(_) => std::future::pending().await,
        }
    }

    /// Ends the connection (with close_notify on TLS).
    pub(crate) async fn shutdown(&mut self) -> io::Result<()> {
        tokio::io::AsyncWriteExt::shutdown(self).await
    }
}

/// Reads what `tcp` has into `space`; 0 at the end of the stream.
///
/// A read that does not fill the space it was given leaves the socket empty, so its readiness is
/// cleared then and there: otherwise the next wait for data would first make one more read that
/// finds nothing (a system call per request on each side). Tokio clears readiness only if no new
/// event arrived since it was reported, so data that comes in meanwhile is not missed.
pub(crate) async fn read_some(tcp: &TcpStream, space: &mut [u8]) -> io::Result<usize> {
    loop {
        // The socket's own waker slot, not a waiter list: one task reads each socket.
        std::future::poll_fn(|cx| tcp.poll_read_ready(cx)).await?;
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
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if got > 0 {
                    return Ok(got);
                }
            }
            Err(e) => return Err(e),
        }
    }
}

/// Writes all of `bytes`; a wait of more than `timeout` for the peer to take more is an error.
pub(crate) async fn write_all(
    tcp: &TcpStream,
    mut bytes: &[u8],
    timeout: Option<Duration>,
) -> io::Result<()> {
    while !bytes.is_empty() {
        match tcp.try_write(bytes) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let writable = std::future::poll_fn(|cx| tcp.poll_write_ready(cx));
                match timeout {
                    None => writable.await?,
                    Some(t) => tokio::time::timeout(t, writable)
                        .await
                        .map_err(|_| send_timed_out(t))??,
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

impl AsyncRead for ClientSocket {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientSocket::Plain(tcp) => Pin::new(tcp).poll_read(cx, buf),
            ClientSocket::Tls(tls) => Pin::new(&mut **tls).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ClientSocket {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ClientSocket::Plain(tcp) => Pin::new(tcp).poll_write(cx, buf),
            ClientSocket::Tls(tls) => Pin::new(&mut **tls).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ClientSocket::Plain(tcp) => Pin::new(tcp).poll_write_vectored(cx, bufs),
            ClientSocket::Tls(tls) => Pin::new(&mut **tls).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientSocket::Plain(tcp) => Pin::new(tcp).poll_flush(cx),
            ClientSocket::Tls(tls) => Pin::new(&mut **tls).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientSocket::Plain(tcp) => Pin::new(tcp).poll_shutdown(cx),
            ClientSocket::Tls(tls) => Pin::new(&mut **tls).poll_shutdown(cx),
        }
    }
}
