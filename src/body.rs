//! The body sent to the client on the hyper path: the upstream's (or a synthetic one), streamed.
//! [`ResponseBody`] owns the [`Exchange`] record, so in-flight counts, metrics and the access log
//! end with the last byte, not when the handler returns, and it drives the upstream connection
//! the bytes arrive on and gives it back once the body is complete.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};

use crate::access::Exchange;
use crate::clock::Pause;
use crate::upstream::Lease;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body sent to the client.
pub struct ResponseBody {
    kind: Kind,
    exchange: Option<Exchange>,
}

enum Kind {
    /// The upstream's body, the connection it arrives on while it does, and the time the next
    /// bytes must come by.
    Upstream(Incoming, Option<Lease>, Pause),
    Full(Option<Bytes>),
}

impl ResponseBody {
    /// Streams an upstream body, driving its connection `lease` and releasing it for the next
    /// request once the body is complete; `exchange` ends when the body does.
    /// A pause of more than `read_timeout` between two reads of the body ends it with an error
    /// (the client's connection is closed, as the body cannot be completed).
    pub fn upstream(
        body: Incoming,
        lease: Lease,
        exchange: Exchange,
        read_timeout: std::time::Duration,
    ) -> ResponseBody {
        // No body at all (204, 304, HEAD, `Content-Length: 0`): hyper never polls this one.
        let lease = if body.is_end_stream() {
            lease.release();
            None
        } else {
            Some(lease)
        };
        ResponseBody {
            kind: Kind::Upstream(body, lease, Pause::new(read_timeout)),
            exchange: Some(exchange),
        }
    }

    /// A body made by teal (errors, refusals), recorded in `exchange` when given.
    pub fn full(bytes: impl Into<Bytes>, exchange: Option<Exchange>) -> ResponseBody {
        let bytes = bytes.into();
        let mut exchange = exchange;
        if let Some(ex) = &mut exchange {
            ex.bytes = bytes.len() as u64;
        }
        ResponseBody {
            kind: Kind::Full(Some(bytes).filter(|b| !b.is_empty())),
            exchange,
        }
    }
}

/// The body is complete: its connection may serve the next request.
fn release(lease: &mut Option<Lease>) {
    if let Some(lease) = lease.take() {
        lease.release();
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match &mut this.kind {
            Kind::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Kind::Upstream(body, lease, stall) => {
                if let Some(lease) = lease {
                    lease.drive(cx);
                }
                let polled = Pin::new(&mut *body).poll_frame(cx);
                match &polled {
                    Poll::Ready(Some(Ok(frame))) => {
                        stall.progressed();
                        if let (Some(data), Some(ex)) = (frame.data_ref(), &mut this.exchange) {
                            ex.bytes += data.len() as u64;
                        }
                        // hyper stops polling a body that says it has ended.
                        if body.is_end_stream() {
                            release(lease);
                        }
                    }
                    Poll::Ready(None) => release(lease),
                    // A failed or stalled body leaves its connection unusable: dropped with the
                    // lease.
                    Poll::Ready(Some(Err(_))) => {}
                    Poll::Pending => {
                        if stall.poll_expired(cx).is_ready() {
                            *lease = None;
                            let why = format!(
                                "upstream sent nothing of the body for {:?} (upstream_body_timeout)",
                                stall.timeout()
                            );
                            return Poll::Ready(Some(Err(why.into())));
                        }
                    }
                }
                polled.map(|p| p.map(|r| r.map_err(Into::into)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Full(bytes) => bytes.is_none(),
            Kind::Upstream(body, ..) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Full(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
            Kind::Upstream(body, ..) => body.size_hint(),
        }
    }
}
