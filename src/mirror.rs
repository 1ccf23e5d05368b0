//! Mirroring: a copy of a default-route request goes to the mirror pool, its response is read and
//! thrown away, and its status class and time are compared with the live response's.
//!
//! Written once for both request paths. Each path asks [`Mirror::sample`] once it knows the
//! request goes to the default route (not a preview route, not an upgrade, not `CONNECT`), hands
//! over the head it sends upstream (teal's own path as the bytes it wrote, [`own_path`]; the
//! hyper path as its parts, [`hyper_path`]) and the body (own path: in memory; hyper path: a [`Tee`] that keeps
//! the chunks as they pass to the live upstream, up to `max_body`), and reports the live outcome
//! on the [`Tap`]. Everything else happens here, on a task of its own:
//!
//! - the copy is bytes, as teal's own path works: the upstream head the live request got with
//!   `X-Teal-Mirror: 1` before its end (the hyper path's parts written out once in that form;
//!   an HTTP/2 request's copy is HTTP/1.1, with the `Host` the live request got), then the body;
//! - it goes out in one write on a plain connection of the worker's own for copies, never one of
//!   its live upstream connections ([`wire`]), to the next server of the pool in its round-robin
//!   order and one of its known addresses; one try (but one more on a fresh connection, as the
//!   live path does, when a reused one turns out closed before any answer and the method is
//!   idempotent);
//! - the response head is parsed and its body read by its framing and thrown away; the connection
//!   is kept for the next copy only after a complete, well-framed response with nothing after it;
//! - its head must come within the pool's `connect_timeout + response_timeout`, its body within
//!   `response_timeout` more; then it counts as `error`;
//! - nothing of it reaches the client, the live request's timing, the pool's passive health, the
//!   request counters or the in-flight gauges: a copy is not client traffic;
//! - at most `max_in_flight` copies are under way in the whole process; past that a copy is not
//!   made and counted `dropped`.

mod wire;

use std::io::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::uri::PathAndQuery;
use http::{header, Method};
use tokio::sync::oneshot;
use tracing::debug;

use crate::config::MirrorConfig;
use crate::h1::io::Head;
use crate::headers::push_field;
use crate::metrics::{Compared, InFlightCopy, Metrics, MirrorMetrics};
use crate::pool::Pool;

/// The field every copy carries (and a client's is dropped from live requests: `headers`), with
/// the end of the head after it.
const MIRROR_FIELD_AND_END: &[u8] = b"X-Teal-Mirror: 1\r\n\r\n";

/// Mirroring in force (part of the snapshot): `[mirror]` with a percent above 0 and a pool other
/// than the active one.
#[derive(Debug)]
pub struct Mirror {
    /// The mirror pool.
    pub pool: Arc<Pool>,
    /// The config it was built from.
    pub config: MirrorConfig,
    methods: Vec<Method>,
    metrics: MirrorMetrics,
    /// Requests seen, for an even sampling at `percent`.
    seen: AtomicU64,
}

impl Mirror {
    /// Mirroring under `config` (the snapshot's), or `None` when it is off or rests: a percent
    /// of 0, or the mirror pool is the active one (copies of live traffic to the live pool would
    /// only double its load).
    pub fn build(
        config: Option<&MirrorConfig>,
        pools: &[Arc<Pool>],
        active: &Pool,
        metrics: &Metrics,
    ) -> Option<Mirror> {
        let config = config?;
        let pool = pools.iter().find(|p| *p.name == *config.pool)?;
        if config.percent == 0 || pool.name == active.name {
            return None;
        }
        let methods = config
            .methods
            .iter()
            .filter_map(|m| Method::from_bytes(m.as_bytes()).ok())
            .collect();
        Some(Mirror {
            pool: pool.clone(),
            config: config.clone(),
            methods,
            metrics: metrics.mirror(&pool.name),
            seen: AtomicU64::new(0),
        })
    }

    /// Whether a default-route request with `method` and a body of `body_len` bytes (`None`:
    /// not known yet, a chunked or HTTP/2 body) is copied: its method is listed, its body fits
    /// `max_body`, it falls in the sampled `percent`, and a slot is free (else it is counted
    /// `dropped`).
    pub(crate) fn sample(&self, method: &Method, body_len: Option<u64>) -> Option<Sample> {
        if *method == Method::CONNECT || !self.methods.contains(method) {
            return None;
        }
        if body_len.is_some_and(|n| n > self.config.max_body) {
            return None;
        }
        if self.config.percent < 100 {
            // 37 is prime to 100: any 100 requests in a row cover every residue once.
            let n = self.seen.fetch_add(1, Ordering::Relaxed);
            if (n.wrapping_mul(37) % 100) as u8 >= self.config.percent {
                return None;
            }
        }
        let slot = self.metrics.begin(self.config.max_in_flight as usize)?;
        Some(Sample {
            pool: self.pool.clone(),
            metrics: self.metrics.clone(),
            slot,
            max_body: self.config.max_body,
        })
    }
}

/// Teal's own HTTP/1.1 path hands over a request: `request` is the head it wrote for the
/// upstream followed by the body's `body_len` bytes. The tap, if the request is copied.
pub(crate) fn own_path(
    mirror: Option<&Mirror>,
    method: &Method,
    request: &[u8],
    body_len: usize,
) -> Option<Tap> {
    let sample = mirror?.sample(method, Some(body_len as u64))?;
    let (head, body) = request.split_at(request.len() - body_len);
    // The head ends with an empty line; the copy's field goes before it.
    let fields = head.strip_suffix(b"\r\n")?;
    let mut wire = Head::take();
    wire.reserve(request.len() + MIRROR_FIELD_AND_END.len());
    wire.extend_from_slice(fields);
    let (tap, copy) = sample.copy(method.clone(), wire);
    copy.finish(body, false);
    Some(tap)
}

/// Ends a copy's head, `wire` (with the body's `Content-Length` if `length`), and appends `body`.
fn end_head(wire: &mut Vec<u8>, method: &Method, body: &[u8], length: bool) {
    // As hyper's client frames a body it knows: no length for an empty one where the method
    // gives a body no meaning.
    let bodiless = matches!(*method, Method::GET | Method::HEAD | Method::CONNECT);
    if length && !(body.is_empty() && bodiless) {
        let _ = write!(wire, "content-length: {}\r\n", body.len());
    }
    wire.extend_from_slice(MIRROR_FIELD_AND_END);
    wire.extend_from_slice(body);
}

/// The hyper path hands over a request: its head as sent upstream (`parts` after the rewrite,
/// `target`), and its body's length if known. The tap and the copy, waiting for its body, if
/// the request is copied.
pub(crate) fn hyper_path(
    mirror: Option<&Mirror>,
    parts: &http::request::Parts,
    target: &PathAndQuery,
    body_len: Option<u64>,
) -> Option<(Tap, Copy)> {
    let sample = mirror?.sample(&parts.method, body_len)?;
    let mut wire = Head::take();
    write_head(parts, target, &mut wire);
    Some(sample.copy(parts.method.clone(), wire))
}

/// Writes the head of the hyper path's request as HTTP/1.1 bytes, up to the end of its fields:
/// the request line with `target`, then the fields as hyper would send them, but the framing's
/// (the copy's body is in memory: [`Copy::send`] adds its length).
fn write_head(parts: &http::request::Parts, target: &PathAndQuery, out: &mut Vec<u8>) {
    out.extend_from_slice(parts.method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_str().as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let mut host = false;
    for (name, value) in &parts.headers {
        if name == header::CONTENT_LENGTH || name == header::TRANSFER_ENCODING {
            continue;
        }
        host |= name == header::HOST;
        push_field(out, name.as_str().as_bytes(), value.as_bytes());
    }
    // An HTTP/2 request names its host in `:authority` (`headers::ensure_host` made it a field
    // already; this is for one that came without).
    if let (false, Some(authority)) = (host, parts.uri.authority()) {
        push_field(out, b"host", authority.as_str().as_bytes());
    }
}

/// A request chosen to be copied, holding its slot.
pub(crate) struct Sample {
    pool: Arc<Pool>,
    metrics: MirrorMetrics,
    slot: InFlightCopy,
    max_body: u64,
}

impl Sample {
    /// The copy of the request with `method` whose head so far (request line and fields) is
    /// `wire`, and the tap its live outcome is reported on.
    fn copy(self, method: Method, wire: Head) -> (Tap, Copy) {
        let (tx, rx) = oneshot::channel();
        let tap = Tap {
            tx: Some(tx),
            started: Instant::now(),
        };
        let copy = Copy {
            sample: self,
            method,
            wire,
            live: rx,
        };
        (tap, copy)
    }
}

/// Where the live request's outcome is reported for the comparison. Dropped without a report
/// (the client went away), the live side counts as 499.
pub(crate) struct Tap {
    tx: Option<oneshot::Sender<(u16, Duration)>>,
    started: Instant,
}

impl Tap {
    /// The live response's status (teal's own for a failure) and the time to its head.
    pub(crate) fn report(mut self, status: u16, time: Duration) {
        if let Some(tx) = self.tx.take() {
            let _ = tx.send((status, time));
        }
    }
}

impl Tap {
    /// The live request failed: teal answered `status` itself.
    pub(crate) fn failed(self, status: u16) {
        let time = self.started.elapsed();
        self.report(status, time);
    }
}

impl Drop for Tap {
    fn drop(&mut self) {
        if let Some(tx) = self.tx.take() {
            let _ = tx.send((499, self.started.elapsed()));
        }
    }
}

/// A copy waiting for its body.
pub(crate) struct Copy {
    sample: Sample,
    method: Method,
    /// The copy's head so far: its request line and fields.
    wire: Head,
    live: oneshot::Receiver<(u16, Duration)>,
}

impl Copy {
    /// Sends the copy with `body` on a task of its own; its head gets the body's length.
    pub(crate) fn send(self, body: &[u8]) {
        self.finish(body, true);
    }

    /// Ends the head (with the body's `Content-Length` if `length`), appends `body`, and sends
    /// the copy on a task of its own.
    fn finish(mut self, body: &[u8], length: bool) {
        end_head(&mut self.wire, &self.method, body, length);
        // Boxed: the task's state is moved a few times by the runtime (spawned, finished), and
        // the exchange's is a kilobyte.
        tokio::spawn(Box::pin(self.run()));
    }

    /// A tee for a body that streams: the copy is sent when the body has passed whole.
    pub(crate) fn tee(self) -> Tee {
        Tee {
            copy: Some(self),
            buf: Vec::new(),
        }
    }

    async fn run(self) {
        let Copy {
            sample,
            method,
            wire,
            live,
        } = self;
        let head_request = method == Method::HEAD;
        // As the live path's retry rule (`forward::is_idempotent`).
        let retry_safe = matches!(
            method,
            Method::GET
                | Method::HEAD
                | Method::OPTIONS
                | Method::TRACE
                | Method::PUT
                | Method::DELETE
        );
        let mirror = wire::exchange(&sample.pool, &wire, head_request, retry_safe).await;
        drop(wire);
        if let Err(e) = &mirror {
            debug!(pool = %sample.pool.name, error = %e, "mirrored copy failed");
        }
        let (live_status, live_time) = live.await.unwrap_or((499, Duration::ZERO));
        sample.metrics.record(Compared {
            live_status,
            live_time,
            mirror: mirror.ok(),
        });
        drop(sample.slot);
    }
}

/// Keeps a streaming body's chunks for its copy as they pass to the live upstream, up to
/// `max_body`; a body that grows past it, or fails, is not copied.
pub(crate) struct Tee {
    copy: Option<Copy>,
    buf: Vec<u8>,
}

impl crate::request_body::Tee for Tee {
    fn data(&mut self, chunk: &[u8]) {
        let Some(copy) = &self.copy else { return };
        if (self.buf.len() + chunk.len()) as u64 > copy.sample.max_body {
            self.copy = None;
            self.buf = Vec::new();
            return;
        }
        self.buf.extend_from_slice(chunk);
    }

    fn end(&mut self) {
        if let Some(copy) = self.copy.take() {
            copy.send(&std::mem::take(&mut self.buf));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mirror(extra: &str) -> Mirror {
        let pools: &[(&str, &[&str])] = &[("blue", &["127.0.0.1:1"]), ("green", &["127.0.0.1:2"])];
        let snap = crate::testing::snapshot_of(
            pools,
            "blue",
            &format!("[mirror]\npool = \"green\"\n{extra}"),
        );
        snap.mirror.unwrap()
    }

    /// Methods listed, never CONNECT; bodies over max_body; an even share at `percent`; slots.
    #[tokio::test]
    async fn which_requests_are_copied() {
        let m = mirror("methods = [\"GET\", \"CONNECT\"]\nmax_body = 10\nmax_in_flight = 1000\n");
        assert!(m.sample(&Method::GET, Some(0)).is_some());
        assert!(
            m.sample(&Method::GET, None).is_some(),
            "length not known: the tee decides"
        );
        assert!(m.sample(&Method::GET, Some(10)).is_some());
        assert!(m.sample(&Method::GET, Some(11)).is_none());
        assert!(m.sample(&Method::HEAD, Some(0)).is_none());
        assert!(m.sample(&Method::CONNECT, Some(0)).is_none());
        let m = mirror("percent = 30\n");
        let taken = (0..1000)
            .filter(|_| m.sample(&Method::GET, Some(0)).is_some())
            .count();
        assert_eq!(taken, 300);
        let m = mirror("max_in_flight = 2\n");
        let held: Vec<_> = (0..5)
            .filter_map(|_| m.sample(&Method::GET, Some(0)))
            .collect();
        assert_eq!(held.len(), 2);
        drop(held);
        assert!(m.sample(&Method::GET, Some(0)).is_some());
    }

    /// No mirroring at percent 0 or to the active pool.
    #[test]
    fn rests() {
        let pools: &[(&str, &[&str])] = &[("blue", &["127.0.0.1:1"]), ("green", &["127.0.0.1:2"])];
        let snap = crate::testing::snapshot_of(pools, "blue", "[mirror]\npool = \"blue\"\n");
        assert!(snap.mirror.is_none());
        let snap =
            crate::testing::snapshot_of(pools, "blue", "[mirror]\npool = \"green\"\npercent = 0\n");
        assert!(snap.mirror.is_none());
    }

    /// The own path's head bytes, with the copy's field before their end, become the copy's;
    /// the hyper path's parts are written out in the same form, the body's length given.
    #[test]
    fn copy_heads() {
        let request = b"POST /a?b=1 HTTP/1.1\r\nhost: x\r\ncontent-length: 4\r\n\r\nbody";
        let head = &request[..request.len() - 4];
        let mut wire = head.strip_suffix(b"\r\n").unwrap().to_vec();
        end_head(&mut wire, &Method::POST, b"body", false);
        assert_eq!(
            String::from_utf8(wire).unwrap(),
            "POST /a?b=1 HTTP/1.1\r\nhost: x\r\ncontent-length: 4\r\nX-Teal-Mirror: 1\r\n\r\nbody"
        );

        let req = http::Request::post("http://example.test:8080/x")
            .header("x-a", "1")
            .header("x-a", "2")
            .header("content-length", "99")
            .header("transfer-encoding", "chunked")
            .body(())
            .unwrap();
        let (parts, ()) = req.into_parts();
        let target = PathAndQuery::from_static("/y?z");
        let mut wire = Vec::new();
        write_head(&parts, &target, &mut wire);
        end_head(&mut wire, &parts.method, b"abc", true);
        assert_eq!(
            String::from_utf8(wire).unwrap(),
            "POST /y?z HTTP/1.1\r\nx-a: 1\r\nx-a: 2\r\nhost: example.test:8080\r\n\
             content-length: 3\r\nX-Teal-Mirror: 1\r\n\r\nabc"
        );
        let mut wire = b"GET / HTTP/1.1\r\nhost: x\r\n".to_vec();
        end_head(&mut wire, &Method::GET, b"", true);
        assert!(wire.ends_with(b"host: x\r\nX-Teal-Mirror: 1\r\n\r\n"));
        let mut wire = Vec::new();
        end_head(&mut wire, &Method::DELETE, b"", true);
        assert_eq!(wire, b"content-length: 0\r\nX-Teal-Mirror: 1\r\n\r\n");
    }
}
