//! HTTP/1.1 upgrade (WebSocket) tunnels.
//!
//! After the upstream answered `101`, the proxy returns that response to the client and spawns a
//! tunnel task here that waits for both upgraded halves and copies bytes both ways until either
//! side closes. Tunnels run on a `TaskTracker` of their own, because a client connection's task
//! (which [`crate::server::Drain`] waits for) ends once hyper hands the upgraded socket over;
//! shutdown waits on the tracker within the grace period. The upstream connection's state machine
//! runs on the same tracker until it has handed its socket over. The
//! tunnel owns the request's [`Exchange`], so it counts as in flight on its server (as a tunnel, not a request) until it closes.
//!
//! The bytes are copied by [`relay`], which holds a buffer only while bytes are on their way:
//! an idle tunnel costs its two sockets and its task.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::task::TaskTracker;
use tracing::{debug, Instrument};

use crate::access::Exchange;
use crate::h1::io::Buffer;

/// Spawns the tunnel between the client (`downstream`) and the upstream (`upstream`).
pub fn spawn_tunnel(
    tunnels: &TaskTracker,
    downstream: OnUpgrade,
    upstream: OnUpgrade,
    mut exchange: Exchange,
) {
    if let Some(guard) = &mut exchange.upstream {
        guard.into_tunnel();
    }
    let tunnel = async move {
        // Own the whole record here: it ends (logs, counts) when the tunnel does.
        let mut exchange = exchange;
        // The client half resolves only after the 101 was written to it, so this must not run
        // inline in the handler.
        let (down, up) = match tokio::try_join!(downstream, upstream) {
            Ok(halves) => halves,
            Err(e) => {
                debug!(error = %e, "upgrade did not complete");
                return;
            }
        };
        let mut down = TokioIo::new(down);
        let mut up = TokioIo::new(up);
        match relay(&mut down, &mut up).await {
            Ok((to_upstream, to_client)) => {
                exchange.bytes = to_client;
                debug!(to_upstream, to_client, "tunnel closed");
            }
            Err(e) => debug!(error = %e, "tunnel ended with an error"),
        }
    };
    tunnels.spawn(tunnel.in_current_span());
}

/// Copies bytes both ways between `a` and `b` until both directions have ended, as
/// [`tokio::io::copy_bidirectional`] does (the end of one side's stream shuts the other side's
/// writing down, and the other direction goes on), but holding no buffer while the tunnel is idle:
/// a read is tried with a buffer from the thread's free list, which goes straight back if the
/// read would wait, and otherwise once its bytes have all been written to the other side. An
/// idle WebSocket so costs its sockets and this task, not two 8 KiB buffers for its whole life.
/// Returns the bytes copied from `a` to `b` and from `b` to `a`.
pub async fn relay<A, B>(a: &mut A, b: &mut B) -> io::Result<(u64, u64)>
where
    A: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    let mut a_to_b = Direction::default();
    let mut b_to_a = Direction::default();
    std::future::poll_fn(|cx| {
        let there = a_to_b.poll(cx, &mut *a, &mut *b)?;
        let back = b_to_a.poll(cx, &mut *b, &mut *a)?;
        match (there, back) {
            (Poll::Ready(there), Poll::Ready(back)) => Poll::Ready(Ok((there, back))),
            _ => Poll::Pending,
        }
    })
    .await
}

/// One direction of a tunnel.
#[derive(Default)]
struct Direction {
    /// Bytes read and not yet all written (backpressure: held until the writer takes them).
    pending: Option<Buffer>,
    /// Bytes were written since the last flush.
    unflushed: bool,
    /// The reader's stream ended: the writer is being shut down.
    ended: bool,
    done: bool,
    copied: u64,
}

impl Direction {
    fn poll<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        from: &mut R,
        to: &mut W,
    ) -> Poll<io::Result<u64>>
    where
        R: AsyncRead + Unpin + ?Sized,
        W: AsyncWrite + Unpin + ?Sized,
    {
        while !self.done {
            if self.ended {
                if self.unflushed {
                    ready!(Pin::new(&mut *to).poll_flush(cx))?;
                    self.unflushed = false;
                }
                ready!(Pin::new(&mut *to).poll_shutdown(cx))?;
                self.done = true;
                break;
            }
            if let Some(buffer) = &mut self.pending {
                while !buffer.is_empty() {
                    let n = ready!(Pin::new(&mut *to).poll_write(cx, buffer.filled()))?;
                    if n == 0 {
                        return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                    }
                    buffer.consume(n);
                    self.copied += n as u64;
                }
                if let Some(buffer) = self.pending.take() {
                    buffer.give();
                }
                self.unflushed = true;
            }
            ready!(self.poll_read(cx, from, to))?;
        }
        Poll::Ready(Ok(self.copied))
    }

    /// Reads into a buffer lent for the read: kept if bytes came (or the stream ended), given
    /// back if the read would wait, after flushing what was written.
    fn poll_read<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        from: &mut R,
        to: &mut W,
    ) -> Poll<io::Result<()>>
    where
        R: AsyncRead + Unpin + ?Sized,
        W: AsyncWrite + Unpin + ?Sized,
    {
        let mut buffer = Buffer::take();
        let mut space = ReadBuf::new(&mut buffer.data);
        match Pin::new(&mut *from).poll_read(cx, &mut space) {
            Poll::Pending => {
                buffer.give();
                if self.unflushed {
                    ready!(Pin::new(&mut *to).poll_flush(cx))?;
                    self.unflushed = false;
                }
                Poll::Pending
            }
            Poll::Ready(Err(e)) => {
                buffer.give();
                Poll::Ready(Err(e))
            }
            Poll::Ready(Ok(())) => {
                let n = space.filled().len();
                if n == 0 {
                    buffer.give();
                    self.ended = true;
                } else {
                    buffer.end = n;
                    self.pending = Some(buffer);
                }
                Poll::Ready(Ok(()))
            }
        }
    }
}
