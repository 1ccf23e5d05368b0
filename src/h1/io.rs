//! Buffers and socket I/O for teal's own HTTP/1.1 path: read buffers and head buffers from a
//! per-thread free list, reads that clear readiness, writes bounded by `client_send_timeout`, and
//! the client's end of an exchange.

use std::cell::RefCell;
use std::io;
use std::time::Duration;

use tokio::net::TcpStream;

use crate::socket::ClientSocket;

/// Every read buffer's size, and so the largest request or response head this path handles.
pub(crate) const BUFFER: usize = 16 * 1024;

/// Buffers each thread keeps for reuse.
pub(crate) const SPARE_BUFFERS: usize = 256;

/// The client's end of an exchange: its socket, and how long a write to it may wait for the
/// client to read (`client_send_timeout`, nginx's `send_timeout`).
#[derive(Clone, Copy)]
pub(crate) struct Client<'a> {
    pub(crate) socket: &'a ClientSocket,
    pub(crate) send_timeout: Duration,
}

impl Client<'_> {
    pub(crate) async fn write(&self, bytes: &[u8]) -> io::Result<()> {
        self.socket.write_all(bytes, Some(self.send_timeout)).await
    }

    /// Writes `head` and the start of `body`: in one system call when the body is small (copied
    /// after the head).
    pub(crate) async fn write_two(&self, head: &mut Vec<u8>, body: &[u8]) -> io::Result<()> {
        if body.len() <= 4096 {
            head.extend_from_slice(body);
            return self.write(head).await;
        }
        self.write(head).await?;
        self.write(body).await
    }

    /// Resolves when the client has closed its connection (or it failed). Bytes it sent meanwhile
    /// (a pipelined request) are left for later, and this never resolves then: such a client is
    /// still there.
    pub(crate) async fn gone(&self) {
        self.socket.gone().await
    }
}

/// Reads what `tcp` has into the free part of `buffer`; 0 at the end of the stream (see
/// [`crate::socket::read_some`]).
pub(crate) async fn read_into(tcp: &TcpStream, buffer: &mut Buffer) -> io::Result<usize> {
    let n = crate::socket::read_some(tcp, buffer.space()).await?;
    buffer.end += n;
    Ok(n)
}

pub(crate) use crate::socket::write_all;

/// A head being written (the upstream's request, the client's response), from this thread's free
/// list and back to it when dropped.
pub(crate) struct Head(Vec<u8>);

thread_local! {
    static SPARE_HEADS: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}
impl Head {
    pub(crate) fn take() -> Head {
        let mut bytes = SPARE_HEADS
            .with_borrow_mut(Vec::pop)
            .unwrap_or_else(|| Vec::with_capacity(1024));
        bytes.clear();
        Head(bytes)
    }
}

impl Drop for Head {
    fn drop(&mut self) {
        let bytes = std::mem::take(&mut self.0);
        // Kept only while small: a head that grew for a large body is let go.
        if bytes.capacity() <= 8192 {
            SPARE_HEADS.with_borrow_mut(|spare| {
                if spare.len() < SPARE_BUFFERS {
                    spare.push(bytes);
                }
            });
        }
    }
}

impl std::ops::Deref for Head {
    type Target = Vec<u8>;
    fn deref(&self) -> &Vec<u8> {
        &self.0
    }
}

impl std::ops::DerefMut for Head {
    fn deref_mut(&mut self) -> &mut Vec<u8> {
        &mut self.0
    }
}

/// A read buffer: `data[start..end]` holds bytes read and not yet used.
pub(crate) struct Buffer {
    pub(crate) data: Vec<u8>,
    pub(crate) start: usize,
    pub(crate) end: usize,
}

thread_local! {
    static SPARE: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}
impl Buffer {
    /// A buffer from this thread's free list, or a new one.
    pub(crate) fn take() -> Buffer {
        let data = SPARE
            .with_borrow_mut(Vec::pop)
            .unwrap_or_else(|| vec![0; BUFFER]);
        Buffer {
            data,
            start: 0,
            end: 0,
        }
    }

    /// Back to this thread's free list.
    pub(crate) fn give(self) {
        SPARE.with_borrow_mut(|spare| {
            if spare.len() < SPARE_BUFFERS {
                spare.push(self.data);
            }
        });
    }

    pub(crate) fn filled(&self) -> &[u8] {
        &self.data[self.start..self.end]
    }

    pub(crate) fn filled_mut(&mut self) -> &mut [u8] {
        &mut self.data[self.start..self.end]
    }

    pub(crate) fn len(&self) -> usize {
        self.end - self.start
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.start == self.end
    }

    pub(crate) fn clear(&mut self) {
        self.start = 0;
        self.end = 0;
    }

    pub(crate) fn consume(&mut self, n: usize) {
        self.start += n;
        if self.start == self.end {
            self.clear();
        }
    }

    /// The free part, after moving what is unread to the front if the end is full.
    pub(crate) fn space(&mut self) -> &mut [u8] {
        if self.end == self.data.len() && self.start > 0 {
            self.data.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        &mut self.data[self.end..]
    }

    /// The unread bytes, for hyper.
    pub(crate) fn into_vec(self) -> Vec<u8> {
        let bytes = self.filled().to_vec();
        self.give();
        bytes
    }
}
