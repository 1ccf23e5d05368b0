//! The client's request body on its way upstream (the hyper path), streamed, never buffered
//! whole. A [`Reclaim`] owner keeps the body in a shared slot that a send attempt takes only when
//! hyper first polls it, so when a connect fails (before hyper touched the body) the proxy can hand
//! the same body to the next server. Each attempt's [`RequestBody`] enforces `max_body_bytes` and
//! `client_body_timeout`, tells the client's failures apart from the upstream's
//! ([`ClientBodyError`]), and reports its [`Progress`].

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};

use crate::clock::Pause;
use crate::sync::lock;

type Slot = Arc<Mutex<Option<Incoming>>>;
type TeeSlot = Arc<Mutex<Option<Box<dyn Tee>>>>;

/// Takes a copy of the body's chunks as they pass to the upstream (a mirrored copy's,
/// `mirror::Tee`).
pub(crate) trait Tee: Send {
    /// A chunk passed to the upstream.
    fn data(&mut self, chunk: &[u8]);
    /// The body ended.
    fn end(&mut self);
}

/// A request body longer than `limits.max_body_bytes`; the proxy answers 413.
#[derive(Debug, thiserror::Error)]
#[error("request body over {0} bytes")]
pub struct BodyTooLarge(pub u64);

/// The client's request body failed: malformed framing, the client closed mid-body, or it paused
/// longer than `client_body_timeout`. The client's fault, never the upstream's.
#[derive(Debug, thiserror::Error)]
pub enum ClientBodyError {
    /// Malformed, or ended before its framing said.
    #[error("{0}")]
    Broken(String),
    /// No bytes for this long.
    #[error("no bytes of the request body for {0:?}")]
    Timeout(std::time::Duration),
}

/// How the sending of a request body goes, shared by the body and the proxy waiting for the
/// response: `response_timeout` starts when the body has been sent, and an upstream that stops
/// taking the body (while the client has more) is told apart from a client that is slow.
#[derive(Debug, Default)]
pub struct Progress {
    /// When the last byte of the body was handed on ([`crate::clock::now_ms`]); 0 until then.
    done_at: AtomicU64,
    /// When bytes were last handed on, or the send began.
    moved_at: AtomicU64,
    /// The body is waiting for the client (so a pause is the client's, not the upstream's).
    waiting_on_client: AtomicBool,
    /// Woken when the body is done.
    done: tokio::sync::Notify,
}

impl Progress {
    fn new(empty: bool) -> Arc<Progress> {
        let now = crate::clock::now_ms();
        let progress = Progress::default();
        progress.moved_at.store(now, Ordering::Relaxed);
        if empty {
            progress.done_at.store(now, Ordering::Relaxed);
        }
        Arc::new(progress)
    }

    /// When the whole body had been handed on, if it has.
    pub fn done_at(&self) -> Option<u64> {
        Some(self.done_at.load(Ordering::Acquire)).filter(|&t| t != 0)
    }

    /// When bytes last moved, unless the body is waiting for the client now.
    pub fn stalled_since(&self) -> Option<u64> {
        (!self.waiting_on_client.load(Ordering::Relaxed))
            .then(|| self.moved_at.load(Ordering::Relaxed))
    }

    /// Since when the body has been waiting for the client's next bytes ([`crate::clock::now_ms`]),
    /// or 0 when it is not (done, or handing bytes on).
    pub fn client_wait_since(&self) -> u64 {
        let waiting = self.done_at().is_none() && self.waiting_on_client.load(Ordering::Relaxed);
        if waiting {
            self.moved_at.load(Ordering::Relaxed)
        } else {
            0
        }
    }

    /// Resolves once the body is done.
    pub async fn finished(&self) {
        let notified = self.done.notified();
        if self.done_at().is_none() {
            notified.await;
        }
    }

    fn moved(&self) {
        self.waiting_on_client.store(false, Ordering::Relaxed);
        self.moved_at
            .store(crate::clock::now_ms(), Ordering::Relaxed);
    }

    fn finish(&self) {
        self.done_at
            .store(crate::clock::now_ms(), Ordering::Release);
        self.done.notify_waiters();
    }
}

/// Owns a client's request body across send attempts. See the module doc.
pub struct Reclaim {
    slot: Option<Slot>,
    /// A mirrored copy's share of the body ([`Tee`]), taken with the body by the
    /// attempt that reads it.
    tee: Option<TeeSlot>,
    hint: SizeHint,
    limit: Option<u64>,
    timeout: std::time::Duration,
    progress: Arc<Progress>,
}

impl Reclaim {
    /// Takes the client's body, to be cut off with [`BodyTooLarge`] past `limit` bytes. A body
    /// that is already complete (no bytes) needs no slot.
    /// A pause longer than `timeout` between two reads of the body ends it with
    /// [`ClientBodyError::Timeout`].
    pub fn new(body: Incoming, limit: Option<u64>, timeout: std::time::Duration) -> Reclaim {
        if body.is_end_stream() {
            return Reclaim {
                slot: None,
                tee: None,
                hint: SizeHint::with_exact(0),
                limit,
                timeout,
                progress: Progress::new(true),
            };
        }
        Reclaim {
            tee: None,
            hint: body.size_hint(),
            slot: Some(Arc::new(Mutex::new(Some(body)))),
            limit,
            timeout,
            progress: Progress::new(false),
        }
    }

    /// How the sending of the body goes.
    pub fn progress(&self) -> &Arc<Progress> {
        &self.progress
    }

    /// The body's size as the client announced it.
    pub fn size_hint(&self) -> &SizeHint {
        &self.hint
    }

    /// Passes the body's chunks to `tee` as they go to the upstream, and tells it when the body
    /// ended.
    pub(crate) fn tee(&mut self, tee: Box<dyn Tee>) {
        self.tee = Some(Arc::new(Mutex::new(Some(tee))));
    }

    /// Whether the request has no body at all (so it can always be sent again).
    pub fn is_empty(&self) -> bool {
        self.slot.is_none()
    }

    /// A body for one more send attempt, or `None` when an earlier attempt started reading it
    /// (its bytes may be gone, so it must not be sent again).
    pub fn attempt(&self) -> Option<RequestBody> {
        if let Some(slot) = &self.slot {
            if lock(slot).is_none() {
                return None;
            }
        }
        Some(RequestBody {
            slot: self.slot.clone(),
            tee_slot: self.tee.clone(),
            tee: None,
            taken: None,
            hint: self.hint,
            seen: 0,
            limit: self.limit,
            pause: Pause::new(self.timeout),
            progress: Some(self.progress.clone()),
        })
    }
}

/// The body of one send attempt upstream.
pub struct RequestBody {
    slot: Option<Slot>,
    tee_slot: Option<TeeSlot>,
    /// Taken from `tee_slot` with the body.
    tee: Option<Box<dyn Tee>>,
    taken: Option<Incoming>,
    hint: SizeHint,
    /// Bytes passed on so far, against `limit`.
    seen: u64,
    limit: Option<u64>,
    /// `client_body_timeout`: the longest wait for the client's next bytes.
    pause: Pause,
    progress: Option<Arc<Progress>>,
}

impl RequestBody {
    /// A request body with no bytes (health probes).
    pub fn empty() -> RequestBody {
        RequestBody {
            slot: None,
            tee_slot: None,
            tee: None,
            taken: None,
            hint: SizeHint::with_exact(0),
            seen: 0,
            limit: None,
            pause: Pause::new(std::time::Duration::MAX),
            progress: None,
        }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if this.taken.is_none() {
            match this.slot.take() {
                Some(slot) => {
                    this.taken = lock(&slot).take();
                    this.tee = this.tee_slot.take().and_then(|t| lock(&t).take());
                }
                None => return Poll::Ready(None),
            }
        }
        let Some(body) = &mut this.taken else {
            return Poll::Ready(None);
        };
        let polled = Pin::new(&mut *body).poll_frame(cx);
        if let Some(progress) = &this.progress {
            match &polled {
                Poll::Ready(Some(Ok(_))) if body.is_end_stream() => progress.finish(),
                Poll::Ready(Some(Ok(_))) => progress.moved(),
                Poll::Ready(None) => progress.finish(),
                Poll::Ready(Some(Err(_))) => {}
                Poll::Pending => progress.waiting_on_client.store(true, Ordering::Relaxed),
            }
        }
        let ended = body.is_end_stream();
        match polled {
            Poll::Ready(Some(Ok(frame))) => {
                this.pause.progressed();
                this.seen += frame.data_ref().map_or(0, |d| d.len() as u64);
                match this.limit {
                    // Counted while streaming: a chunked body has no length to check up front.
                    Some(limit) if this.seen > limit => {
                        this.tee = None;
                        Poll::Ready(Some(Err(Box::new(BodyTooLarge(limit)))))
                    }
                    _ => {
                        if let Some(tee) = &mut this.tee {
                            tee.data(frame.data_ref().map_or(&[][..], |d| &d[..]));
                            if ended {
                                tee.end();
                            }
                        }
                        Poll::Ready(Some(Ok(frame)))
                    }
                }
            }
            Poll::Ready(Some(Err(e))) => {
                let broken = ClientBodyError::Broken(e.to_string());
                Poll::Ready(Some(Err(Box::new(broken))))
            }
            Poll::Ready(None) => {
                if let Some(tee) = &mut this.tee {
                    tee.end();
                }
                Poll::Ready(None)
            }
            Poll::Pending => match this.pause.poll_expired(cx) {
                Poll::Ready(()) => {
                    let timeout = this.pause.timeout();
                    Poll::Ready(Some(Err(Box::new(ClientBodyError::Timeout(timeout)))))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.taken {
            Some(body) => body.is_end_stream(),
            None => self.slot.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.taken {
            Some(body) => body.size_hint(),
            None => self.hint,
        }
    }
}
