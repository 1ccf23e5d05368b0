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

use std::cell::RefCell;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::Duration;

use rustix::pipe::{fcntl_setpipe_size, pipe_with, PipeFlags, SpliceFlags};
use tokio::io::Interest;
use tokio::net::TcpStream;

use crate::h1::ending::{body_wait, truncated, Ending};
use crate::h1::io::Client;
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
        let got = fill(ending.upstream()?, &pipe, want, read_timeout, client).await?;
        if got == 0 {
            return Err(truncated("upstream closed before the end of the body"));
        }
        left -= got as u64;
        ending.count(got as u64);
        if left == 0 {
            ending.end(true);
        }
        drain(tcp, &pipe, got, client.send_timeout).await?;
    }
    pipe.give();
    Ok(())
}

/// Moves up to `want` bytes from `upstream` into the empty `pipe`: how many (0 at the end of the
/// stream). A pause longer than `timeout` is an error, and so is the client going away meanwhile.
async fn fill(
    upstream: &TcpStream,
    pipe: &Pipe,
    want: usize,
    timeout: Duration,
    client: Client<'_>,
) -> io::Result<usize> {
    let from = upstream.as_fd();
    let to = pipe.write.as_fd();
    loop {
        match upstream.try_io(Interest::READABLE, || splice(from, to, want)) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            done => return done,
        }
        let ready = std::future::poll_fn(|cx| upstream.poll_read_ready(cx));
        body_wait(ready, timeout, client).await?;
    }
}

/// Moves the `n` bytes in `pipe` to `tcp`; a wait of more than `timeout` for the client to take
/// more is an error.
async fn drain(tcp: &TcpStream, pipe: &Pipe, mut n: usize, timeout: Duration) -> io::Result<()> {
    let from = pipe.read.as_fd();
    let to = tcp.as_fd();
    while n > 0 {
        match tcp.try_io(Interest::WRITABLE, || splice(from, to, n)) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(sent) => n -= sent,
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
