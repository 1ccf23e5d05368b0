//! A client's connection as both request paths see it: a plain TCP socket, or TLS over one.
//!
//! teal's own HTTP/1.1 path uses it through a shared reference (readiness, reads into its
//! buffers, writes bounded by `client_send_timeout`, and a peek to notice the client leaving);
//! hyper uses it through `AsyncRead`/`AsyncWrite`. A match on two variants is all plain
//! connections pay for TLS being possible.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::h1::io::Buffer;
use crate::tls::TlsSocket;

/// A client connection.
pub enum ClientSocket {
    /// Plain HTTP.
    Plain(TcpStream),
    /// HTTPS (boxed: the record layer's state is large and plain connections need none of it).
    Tls(Box<TlsSocket>),
}

impl ClientSocket {
    /// Whether the connection is TLS.
    pub fn is_tls(&self) -> bool {
        matches!(self, ClientSocket::Tls(_))
    }

    /// Resolves when there is something to read (or the end of the stream).
    pub(crate) async fn readable(&self) -> io::Result<()> {
        match self {
            ClientSocket::Plain(tcp) => std::future::poll_fn(|cx| tcp.poll_read_ready(cx)).await,
            ClientSocket::Tls(tls) => {
                if tls.has_plaintext() {
                    return Ok(());
                }
                std::future::poll_fn(|cx| tls.tcp().poll_read_ready(cx)).await
            }
        }
    }

    /// Reads what the client sent into the free part of `buffer`; 0 at the end of the stream.
    pub(crate) async fn read_into(&self, buffer: &mut Buffer) -> io::Result<usize> {
        match self {
            ClientSocket::Plain(tcp) => crate::h1::io::read_into(tcp, buffer).await,
            ClientSocket::Tls(tls) => {
                let n = std::future::poll_fn(|cx| tls.poll_read_plain(cx, buffer.space())).await?;
                buffer.end += n;
                Ok(n)
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
            ClientSocket::Plain(tcp) => crate::h1::io::write_all(tcp, bytes, timeout).await,
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
