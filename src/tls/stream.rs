//! A TLS connection to a client: a rustls [`ServerConnection`] driven over a tokio [`TcpStream`]
//! by readiness, through a shared reference.
//!
//! teal's own HTTP/1.1 path reads and writes its client socket through `&TcpStream` (readiness,
//! `try_read`, `try_write`, and a peek to notice the client leaving while a request is under
//! way). `tokio-rustls` wraps a stream behind `&mut`, which that path cannot hold, so this is the
//! same thing in the same shape: the record layer sits behind an uncontended mutex, the socket
//! stays shared. It also implements `AsyncRead`/`AsyncWrite` for hyper (HTTP/2, and the
//! connections the own path hands over), so both paths use one TLS stream.

use std::future::Future;
use std::io::{self, IoSlice, Read, Write};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use rustls::{ServerConfig, ServerConnection};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// A client connection after its TLS handshake.
pub struct TlsSocket {
    tcp: TcpStream,
    conn: Mutex<ServerConnection>,
}

/// Why a handshake did not complete.
#[derive(Debug)]
pub enum HandshakeError {
    /// The client closed the connection before the handshake ended.
    Closed,
    /// Not within `header_timeout`.
    Timeout,
    /// The client's bytes were not a TLS handshake teal accepts (garbage, plain HTTP, no
    /// certificate for the name asked for, no common version or cipher suite).
    Tls(rustls::Error),
    /// The socket failed.
    Io(io::Error),
}

impl HandshakeError {
    /// The outcome label for `teal_tls_handshakes_total`.
    pub fn outcome(&self) -> &'static str {
        match self {
            HandshakeError::Closed => "closed",
            HandshakeError::Timeout => "timeout",
            HandshakeError::Tls(rustls::Error::General(_)) => "no_certificate",
            HandshakeError::Tls(_) => "error",
            HandshakeError::Io(_) => "closed",
        }
    }
}

impl std::fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HandshakeError::Closed => {
                f.write_str("client closed the connection during the handshake")
            }
            HandshakeError::Timeout => f.write_str("handshake not complete within header_timeout"),
            HandshakeError::Tls(e) => write!(f, "{e}"),
            HandshakeError::Io(e) => write!(f, "{e}"),
        }
    }
}

/// Reads ciphertext from the socket without waiting (tokio clears its readiness on
/// `WouldBlock`).
struct Ciphertext<'a>(&'a TcpStream);

impl Read for Ciphertext<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.try_read(buf)
    }
}

impl Write for Ciphertext<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.try_write(buf)
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.0.try_write_vectored(bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl TlsSocket {
    /// Runs the server side of a handshake on `tcp`, bounded by `timeout`.
    pub async fn accept(
        tcp: TcpStream,
        config: Arc<ServerConfig>,
        timeout: Duration,
    ) -> Result<TlsSocket, HandshakeError> {
        let conn = ServerConnection::new(config).map_err(HandshakeError::Tls)?;
        let socket = TlsSocket {
            tcp,
            conn: Mutex::new(conn),
        };
        match tokio::time::timeout(
            timeout,
            std::future::poll_fn(|cx| socket.poll_handshake(cx)),
        )
        .await
        {
            Ok(Ok(())) => Ok(socket),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(HandshakeError::Timeout),
        }
    }

    fn poll_handshake(&self, cx: &mut Context<'_>) -> Poll<Result<(), HandshakeError>> {
        loop {
            ready!(self.poll_flush_tls(cx)).map_err(HandshakeError::Io)?;
            let mut conn = self.lock();
            if !conn.is_handshaking() {
                return Poll::Ready(Ok(()));
            }
            match conn.read_tls(&mut Ciphertext(&self.tcp)) {
                Ok(0) => return Poll::Ready(Err(HandshakeError::Closed)),
                Ok(_) => {
                    if let Err(e) = conn.process_new_packets() {
                        // The alert rustls queued goes out if the socket takes it at once.
                        let _ = conn.write_tls(&mut Ciphertext(&self.tcp));
                        return Poll::Ready(Err(HandshakeError::Tls(e)));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    drop(conn);
                    ready!(self.tcp.poll_read_ready(cx)).map_err(HandshakeError::Io)?;
                }
                Err(e) => return Poll::Ready(Err(HandshakeError::Io(e))),
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, ServerConnection> {
        // A panic while holding it cannot leave the record layer half-updated in a way a later
        // read would trust more than an error; take it anyway.
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the client and teal agreed on HTTP/2 with ALPN.
    pub fn is_h2(&self) -> bool {
        self.lock().alpn_protocol() == Some(b"h2")
    }

    /// The TCP socket underneath.
    pub fn tcp(&self) -> &TcpStream {
        &self.tcp
    }

    /// Resolves once decrypted bytes are waiting, or the stream has ended (the next read says
    /// so); an error when the client's records are not TLS teal accepts. Ciphertext is taken
    /// into the record layer meanwhile: TCP readiness alone is not enough, since a client that
    /// sends part of a record and stops would otherwise look like a request arriving (and the
    /// own path waits for a request's bytes without the idle timer).
    pub fn poll_plaintext(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Looks at the decrypted bytes without taking any.
        self.poll_read_with(cx, &mut |_, _| Ok(0)).map_ok(|_| ())
    }

    /// Reads decrypted bytes into `out`; `Ok(0)` at the end of the stream (with or without the
    /// client's close_notify: clients often close without one).
    pub fn poll_read_plain(&self, cx: &mut Context<'_>, out: &mut [u8]) -> Poll<io::Result<usize>> {
        self.poll_read_with(cx, &mut |reader, _| reader.read(out))
    }

    /// Waits for decrypted bytes and hands the reader to `fill` with how many there are (at least
    /// one), so hyper's uninitialised buffer is zeroed only as far as it is filled; returns what
    /// `fill` returns, or `Ok(0)` at the end of the stream.
    fn poll_read_with(
        &self,
        cx: &mut Context<'_>,
        fill: &mut dyn FnMut(&mut rustls::Reader<'_>, usize) -> io::Result<usize>,
    ) -> Poll<io::Result<usize>> {
        let mut ended = false;
        loop {
            let mut conn = self.lock();
            let state = match conn.process_new_packets() {
                Ok(state) => state,
                Err(e) => {
                    // The alert rustls queued goes out if the socket takes it at once.
                    let _ = conn.write_tls(&mut Ciphertext(&self.tcp));
                    return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, e)));
                }
            };
            let available = state.plaintext_bytes_to_read();
            if available > 0 {
                return Poll::Ready(fill(&mut conn.reader(), available));
            }
            if ended || state.peer_has_closed() {
                return Poll::Ready(Ok(0));
            }
            // A key update or a close_notify may want an answer; it goes with the next write, or
            // now if the socket takes it.
            if conn.wants_write() {
                let _ = conn.write_tls(&mut Ciphertext(&self.tcp));
            }
            match conn.read_tls(&mut Ciphertext(&self.tcp)) {
                Ok(0) => ended = true,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    drop(conn);
                    ready!(self.tcp.poll_read_ready(cx))?;
                }
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    /// Sends what the record layer holds for the client, waiting for the socket as needed.
    pub fn poll_flush_tls(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            let mut conn = self.lock();
            if !conn.wants_write() {
                return Poll::Ready(Ok(()));
            }
            match conn.write_tls(&mut Ciphertext(&self.tcp)) {
                Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    drop(conn);
                    ready!(self.tcp.poll_write_ready(cx))?;
                }
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    /// Encrypts as much of `bufs` as the record layer takes. The records wait there for the next
    /// flush (hyper flushes after each batch of frames), so a response is one write to the
    /// socket, not one per frame; only a full record layer is sent first.
    pub fn poll_write_plain(
        &self,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if bufs.iter().all(|b| b.is_empty()) {
            return Poll::Ready(Ok(0));
        }
        loop {
            let n = self.lock().writer().write_vectored(bufs)?;
            if n > 0 {
                return Poll::Ready(Ok(n));
            }
            ready!(self.poll_flush_tls(cx))?;
        }
    }

    /// Writes all of `bytes` and sends them. Only a client slow to read makes this wait, and
    /// only then is `timeout` armed: a timer per response cost more than the write.
    pub async fn write_all(&self, mut bytes: &[u8], timeout: Option<Duration>) -> io::Result<()> {
        let rest = std::future::poll_fn(|cx| {
            while !bytes.is_empty() {
                let n = ready!(self.poll_write_plain(cx, &[IoSlice::new(bytes)]))?;
                bytes = &bytes[n..];
            }
            self.poll_flush_tls(cx)
        });
        let mut rest = std::pin::pin!(rest);
        // The usual case: the record layer takes it all and the socket takes the records.
        let first = std::future::poll_fn(|cx| Poll::Ready(rest.as_mut().poll(cx))).await;
        if let Poll::Ready(done) = first {
            return done;
        }
        match timeout {
            None => rest.await,
            Some(t) => tokio::time::timeout(t, rest)
                .await
                .map_err(|_| send_timed_out(t))?,
        }
    }
}

/// The error of a write that waited `t` (`client_send_timeout`) for a client that reads nothing.
pub(crate) fn send_timed_out(t: Duration) -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        format!("the client read nothing for {t:?} (client_send_timeout)"),
    )
}

impl AsyncRead for TlsSocket {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        ready!(self.poll_read_with(cx, &mut |reader, available| {
            let n = reader.read(buf.initialize_unfilled_to(available.min(buf.remaining())))?;
            buf.advance(n);
            Ok(n)
        }))?;
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for TlsSocket {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_plain(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_plain(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_flush_tls(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.lock().send_close_notify();
        ready!(self.poll_flush_tls(cx))?;
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}
