//! The rest of a large `Content-Length` body between two plain TCP sockets without copying it
//! through user space: `splice(2)` from the upstream's socket into a pipe, and from the pipe into
//! the client's. Exactly the body's remaining bytes are taken from the upstream (what follows them
//! stays in its socket, where the pool's quiet check finds it); the timeouts are the read/write
//! loop's (`upstream_body_timeout` for a pause in the body, `client_send_timeout` for a client
//! that reads nothing), and so are the ends: the upstream closing early is an error (the client's
//! connection closes), and the exchange ends before the last bytes go to the client.
//!
//! A pipe holds at most [`PIPE_SIZE`] bytes (in kernel pages, outside teal's RSS); each round
//! fills it from the upstream and empties it into the client before reading again, so a slow
//! client pauses the upstream as with the loop's one buffer. Pipes are kept per thread for reuse
//! once empty; one that may hold bytes (an error, a dropped exchange) is closed.
//!
//! A streamed request body goes the other way ([`upload`]): from the client's socket through a
//! pipe into the upstream's, exactly its remaining bytes, under `client_body_timeout` for the
//! client and `upstream_body_timeout` for the upstream.

use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use rustix::pipe::{fcntl_setpipe_size, pipe_with, PipeFlags, SpliceFlags};
use tokio::io::Interest;
use tokio::net::TcpStream;

use crate::forward::Failed;
use crate::h1::ending::{body_wait, truncated, Ending};
use crate::h1::io::Client;
use crate::proxy::ProxyError;
use crate::tls::send_timed_out;

/// Bodies with at least this many bytes left after the head's read are spliced; smaller ones take
/// the read/write loop, whose one or two rounds cost fewer system calls than a pipe's two.
pub(crate) const SPLICE_MIN: u64 = 64 * 1024;

/// The pipe's size asked for (`F_SETPIPE_SZ`; the default `fs.pipe-max-size` allows it): fewer,
/// larger moves than the default 64 KiB.
const PIPE_SIZE: usize = 1024 * 1024;

/// A pipe's size when it could not be changed (Linux's default).
const DEFAULT_PIPE_SIZE: usize = 64 * 1024;

/// Empty pipes each thread keeps.
const SPARE_PIPES: usize = 4;

/// Relays the `left` remaining bytes of a body from the upstream (`ending`'s connection) to the
/// client's plain socket `tcp` through `pipe`; see the module doc. The upstream connection is
/// given back (by `ending.end`) once the last byte is in the pipe.
pub(crate) async fn relay_rest(
    ending: &mut Ending<'_>,
    tcp: &TcpStream,
    client: Client<'_>,
    pipe: Pipe,
    mut left: u64,
    read_timeout: Duration,
) -> io::Result<()> {
    while left > 0 {
        let want = usize::try_from(left).unwrap_or(usize::MAX).min(pipe.size);
        let upstream = ending.upstream()?;
        let wait = || body_wait(readable(upstream), read_timeout, client);
        let got = fill(upstream, &pipe, want, wait).await?;
        if got == 0 {
            return Err(truncated("upstream closed before the end of the body"));
        }
        left -= got as u64;
        ending.count(got as u64);
        if left == 0 {
            ending.end(true);
        }
        let mut in_pipe = got;
        drain(tcp, &pipe, &mut in_pipe, client.send_timeout).await?;
        // Other connections on this worker get their turn between two rounds.
        tokio::task::yield_now().await;
    }
    pipe.give();
    Ok(())
}

/// Moves up to `want` bytes from `from` into the empty `pipe`: how many (0 at the end of the
/// stream). Whenever `from` has nothing, `wait` is awaited (its readiness with a timeout).
async fn fill<W: Future<Output = io::Result<()>>>(
    from: &TcpStream,
    pipe: &Pipe,
    want: usize,
    mut wait: impl FnMut() -> W,
) -> io::Result<usize> {
    let (source, to) = (from.as_fd(), pipe.write.as_fd());
    loop {
        match from.try_io(Interest::READABLE, || splice(source, to, want)) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => wait().await?,
            done => return done,
        }
    }
}

/// Waits for `tcp` to have bytes to read.
async fn readable(tcp: &TcpStream) -> io::Result<()> {
    std::future::poll_fn(|cx| tcp.poll_read_ready(cx)).await
}

/// A streamed request body on its way from the client's plain socket to the upstream: what is
/// left of it in the client's socket, and the pipe with what it holds, so that sending it can stop
/// (an answer came first) and go on (beside that answer's relay), exactly its bytes either way (a
/// pipelined request after them stays in the socket). Dropped with its pipe empty, the pipe goes
/// back to the spares.
pub(crate) struct Upload<'a> {
    client: &'a TcpStream,
    pipe: Option<Pipe>,
    /// Bytes still in the client's socket.
    left: u64,
    /// Set once the whole body has been read from the client. The connection's check for a
    /// client that went away waits for it without a waker (`h1::conn::gone_after`): it relies on
    /// the upload being polled only by the exchange in the same `select!`.
    read_all: &'a AtomicBool,
    /// Bytes in the pipe.
    in_pipe: usize,
    client_body_timeout: Duration,
    /// `upstream_body_timeout`: the longest the upstream may take none of the body (also its
    /// request head).
    pub(crate) stall: Duration,
    /// `client_send_timeout`, for teal's `100 Continue` to the client.
    pub(crate) send_timeout: Duration,
}

impl<'a> Upload<'a> {
    /// The `left` bytes of a body still in `client`, with a pipe for the way; its timeouts are
    /// `client_body_timeout`, `upstream_body_timeout` and `client_send_timeout`. `read_all` says
    /// whether the last of them has been read (cleared here while any are left).
    pub(crate) fn new(
        client: &'a TcpStream,
        (left, read_all): (u64, &'a AtomicBool),
        (client_body_timeout, stall, send_timeout): (Duration, Duration, Duration),
    ) -> io::Result<Upload<'a>> {
        let pipe = Pipe::take()?;
        read_all.store(left == 0, Ordering::Relaxed);
        Ok(Upload {
            client,
            pipe: Some(pipe),
            left,
            read_all,
            in_pipe: 0,
            client_body_timeout,
            stall,
            send_timeout,
        })
    }

    /// The client's socket.
    pub(crate) fn client(&self) -> &'a TcpStream {
        self.client
    }

    /// Sends what is left of the body to `upstream`: each round fills the pipe from the client and
    /// empties it into the upstream before reading again. Stopped (the future dropped) between two
    /// system calls, it goes on from there when called again. A client that sends nothing for
    /// `client_body_timeout` or ends the body early fails the client ([`Failed::Client`], not
    /// held against the server); an upstream that takes nothing for `stall` is
    /// [`Failed::Stalled`], and one whose socket fails is [`Failed::Upstream`] (it may have answered
    /// before it stopped reading: the caller looks).
    /// `waiting` holds since when the client has been waited for ([`crate::clock::now_ms`]; 0
    /// while bytes move).
    pub(crate) async fn send(
        &mut self,
        upstream: &TcpStream,
        waiting: &AtomicU64,
    ) -> Result<(), Failed> {
        let Some(pipe) = &self.pipe else {
            return Err(Failed::Upstream(
                "the request body went to an earlier attempt".into(),
            ));
        };
        let (client, timeout) = (self.client, self.client_body_timeout);
        let wait = || async move {
            let now = crate::clock::now_ms();
            let _ = waiting.compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed);
            match tokio::time::timeout(timeout, readable(client)).await {
                Ok(ready) => ready,
                Err(_) => Err(io::ErrorKind::TimedOut.into()),
            }
        };
        loop {
            if self.in_pipe > 0 {
                match drain(upstream, pipe, &mut self.in_pipe, self.stall).await {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                        return Err(Failed::Stalled(self.stall))
                    }
                    Err(e) => return Err(Failed::Upstream(format!("sending the body: {e}"))),
                }
            }
            if self.left == 0 {
                return Ok(());
            }
            // Other connections on this worker get their turn between two rounds.
            tokio::task::yield_now().await;
            let want = usize::try_from(self.left)
                .unwrap_or(usize::MAX)
                .min(pipe.size);
            match fill(client, pipe, want, wait).await {
                Ok(0) => {
                    let why = "the client closed its connection before the end of the body";
                    return Err(Failed::Client(ProxyError::ClientBody(why.into())));
                }
                Ok(got) => {
                    waiting.store(0, Ordering::Relaxed);
                    self.left -= got as u64;
                    self.in_pipe = got;
                    if self.left == 0 {
                        self.read_all.store(true, Ordering::Relaxed);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                    return Err(Failed::Client(ProxyError::ClientBodyTimeout(timeout)))
                }
                Err(e) => return Err(Failed::Client(ProxyError::ClientBody(e.to_string()))),
            }
        }
    }
}

impl Drop for Upload<'_> {
    fn drop(&mut self) {
        if let Some(pipe) = self.pipe.take() {
            if self.in_pipe == 0 {
                pipe.give();
            }
        }
    }
}

/// Moves the `n` bytes in `pipe` to `tcp`, counting `n` down as they go (so a drain stopped
/// between two moves knows what is left); a wait of more than `timeout` for `tcp` to take more is
/// an error.
async fn drain(tcp: &TcpStream, pipe: &Pipe, n: &mut usize, timeout: Duration) -> io::Result<()> {
    let from = pipe.read.as_fd();
    let to = tcp.as_fd();
    while *n > 0 {
        match tcp.try_io(Interest::WRITABLE, || splice(from, to, *n)) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(sent) => *n -= sent,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let writable = std::future::poll_fn(|cx| tcp.poll_write_ready(cx));
                tokio::time::timeout(timeout, writable)
                    .await
                    .map_err(|_| send_timed_out(timeout))??;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// One `splice(2)` of up to `len` bytes, never blocking (the sockets are non-blocking, and so is
/// the pipe). A socket that is gone is `EPIPE`, not a signal: Rust's runtime ignores `SIGPIPE`.
fn splice(from: BorrowedFd<'_>, to: BorrowedFd<'_>, len: usize) -> io::Result<usize> {
    let flags = SpliceFlags::MOVE | SpliceFlags::NONBLOCK;
    Ok(rustix::pipe::splice(from, None, to, None, len, flags)?)
}

/// A pipe between the two sockets, empty when taken. `size` bounds each move; a pipe the kernel
/// made smaller (over `fs.pipe-user-pages-soft`) only makes the moves shorter.
pub(crate) struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    size: usize,
}

thread_local! {
    static SPARE: RefCell<Vec<Pipe>> = const { RefCell::new(Vec::new()) };
}

impl Pipe {
    /// An empty pipe from this thread's spares, or a new one.
    pub(crate) fn take() -> io::Result<Pipe> {
        if let Some(pipe) = SPARE.with_borrow_mut(Vec::pop) {
            return Ok(pipe);
        }
        let (read, write) = pipe_with(PipeFlags::NONBLOCK | PipeFlags::CLOEXEC)?;
        // Over `fs.pipe-max-size` this fails, and the pipe keeps its size.
        let size = fcntl_setpipe_size(&write, PIPE_SIZE).unwrap_or(DEFAULT_PIPE_SIZE);
        Ok(Pipe { read, write, size })
    }

    /// Back to this thread's spares: only a pipe that is known to be empty.
    fn give(self) {
        SPARE.with_borrow_mut(|spare| {
            if spare.len() < SPARE_PIPES {
                spare.push(self);
            }
        });
    }
}
