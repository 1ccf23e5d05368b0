//! Mirroring: a copy of a default-route request goes to the mirror pool, its response is read and
//! thrown away, and its status class and time are compared with the live response's.
//!
//! Written once for both request paths. Each path asks [`Mirror::sample`] once it knows the
//! request goes to the default route (not a preview route, not an upgrade, not `CONNECT`), hands
//! over the head it sends upstream ([`CopyHead`]: teal's own path as the bytes it wrote, the
//! hyper path as its parts) and the body (own path: in memory; hyper path: a [`Tee`] that keeps
//! the chunks as they pass to the live upstream, up to `max_body`), and reports the live outcome
//! on the [`Tap`]. Everything else happens here, on a task of its own:
//!
//! - the copy is sent on a connection of its own (a per-thread hyper client, not the workers'
//!   upstream connections), to the next server of the pool in its round-robin order and one of
//!   its known addresses; one try, no retry;
//! - its head must come within the pool's `connect_timeout + response_timeout`, its body within
//!   `response_timeout` more; then it counts as `error`;
//! - nothing of it reaches the client, the live request's timing, the pool's passive health, the
//!   request counters or the in-flight gauges: a copy is not client traffic;
//! - at most `max_in_flight` copies are under way in the whole process; past that a copy is not
//!   made and counted `dropped`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::uri::PathAndQuery;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::sync::oneshot;
use tracing::debug;

use crate::config::MirrorConfig;
use crate::metrics::{Compared, InFlightCopy, Metrics, MirrorMetrics};
use crate::pool::Pool;

/// The field every copy carries (and a client's is dropped from live requests: `headers`).
static X_TEAL_MIRROR: HeaderName = HeaderName::from_static("x-teal-mirror");

/// Header fields a copy's head may have: what teal's own path takes (64) and the fields it adds.
const HEAD_FIELDS: usize = 80;

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
    let head = CopyHead::from_h1(request)?;
    let (tap, copy) = sample.copy(head);
    let body = &request[request.len() - body_len..];
    copy.send(Bytes::copy_from_slice(body));
    Some(tap)
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
    Some(sample.copy(CopyHead {
        method: parts.method.clone(),
        target: target.clone(),
        headers: parts.headers.clone(),
    }))
}

/// A request chosen to be copied, holding its slot.
pub(crate) struct Sample {
    pool: Arc<Pool>,
    metrics: MirrorMetrics,
    slot: InFlightCopy,
    max_body: u64,
}

impl Sample {
    /// The copy of the request with `head`, and the tap its live outcome is reported on.
    pub(crate) fn copy(self, head: CopyHead) -> (Tap, Copy) {
        let (tx, rx) = oneshot::channel();
        let tap = Tap {
            tx: Some(tx),
            started: Instant::now(),
        };
        let copy = Copy {
            sample: self,
            head,
            live: rx,
        };
        (tap, copy)
    }
}

/// The head of a copy: what teal sends upstream for the live request.
pub(crate) struct CopyHead {
    pub(crate) method: Method,
    pub(crate) target: PathAndQuery,
    pub(crate) headers: HeaderMap,
}

impl CopyHead {
    /// The head teal's own HTTP/1.1 path wrote for the upstream (`bytes` holds it, and perhaps
    /// the body after it); `None` if it does not parse, which it always does.
    pub(crate) fn from_h1(bytes: &[u8]) -> Option<CopyHead> {
        let mut fields = [httparse::EMPTY_HEADER; HEAD_FIELDS];
        let mut req = httparse::Request::new(&mut fields);
        req.parse(bytes).ok()?.is_complete().then_some(())?;
        let method = Method::from_bytes(req.method?.as_bytes()).ok()?;
        let target = PathAndQuery::try_from(req.path?).ok()?;
        let mut headers = HeaderMap::with_capacity(req.headers.len() + 1);
        for f in req.headers.iter() {
            let name = HeaderName::from_bytes(f.name.as_bytes()).ok()?;
            headers.append(name, HeaderValue::from_bytes(f.value).ok()?);
        }
        Some(CopyHead {
            method,
            target,
            headers,
        })
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
    head: CopyHead,
    live: oneshot::Receiver<(u16, Duration)>,
}

impl Copy {
    /// Sends the copy with `body` on a task of its own.
    pub(crate) fn send(self, body: Bytes) {
        tokio::spawn(self.run(body));
    }

    /// A tee for a body that streams: the copy is sent when the body has passed whole.
    pub(crate) fn tee(self) -> Tee {
        Tee {
            copy: Some(self),
            buf: BytesMut::new(),
        }
    }

    async fn run(self, body: Bytes) {
        let Copy { sample, head, live } = self;
        let mirror = exchange(&sample.pool, head, body).await;
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
    buf: BytesMut,
}

impl Tee {
    /// A chunk passed to the live upstream.
    pub(crate) fn data(&mut self, chunk: &[u8]) {
        let Some(copy) = &self.copy else { return };
        if (self.buf.len() + chunk.len()) as u64 > copy.sample.max_body {
            self.copy = None;
            self.buf = BytesMut::new();
            return;
        }
        self.buf.extend_from_slice(chunk);
    }

    /// The body ended: the copy goes out.
    pub(crate) fn end(&mut self) {
        if let Some(copy) = self.copy.take() {
            copy.send(std::mem::take(&mut self.buf).freeze());
        }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Sends the copy to the next server of `pool` and reads its response to the end: its status
/// and the time to its head.
async fn exchange(pool: &Pool, head: CopyHead, body: Bytes) -> Result<(u16, Duration), BoxError> {
    let server = pool.order().next().ok_or("the pool has no servers")?;
    let addrs = server.addrs();
    let target = server
        .rotate(&addrs)
        .next()
        .ok_or("the server's name is not resolved yet")?;
    let uri = Uri::builder()
        .scheme("http")
        .authority(target.addr.to_string())
        .path_and_query(head.target)
        .build()?;
    let mut req = Request::new(Full::new(body));
    *req.method_mut() = head.method;
    *req.uri_mut() = uri;
    *req.headers_mut() = head.headers;
    req.headers_mut()
        .insert(&X_TEAL_MIRROR, HeaderValue::from_static("1"));
    let client = CLIENT.with(Client::clone);
    let timeouts = pool.timeouts;
    let sent = Instant::now();
    let response = tokio::time::timeout(timeouts.connect + timeouts.response, client.request(req))
        .await
        .map_err(|_| "no response head in time")??;
    let time = sent.elapsed();
    let status = response.status().as_u16();
    let mut body = response.into_body();
    let drained = async {
        while let Some(frame) = body.frame().await {
            frame?;
        }
        Ok::<_, hyper::Error>(())
    };
    tokio::time::timeout(timeouts.response, drained)
        .await
        .map_err(|_| "response body not read in time")??;
    Ok((status, time))
}

thread_local! {
    /// Each worker thread's client for copies: connections of their own, never the workers'
    /// upstream connections, so copies take nothing from live traffic.
    static CLIENT: Client<HttpConnector, Full<Bytes>> = {
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(4))
            .pool_max_idle_per_host(32)
            .build(http)
    };
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

    /// The own path's head bytes become the copy's head.
    #[test]
    fn head_from_bytes() {
        let head =
            CopyHead::from_h1(b"POST /a?b=1 HTTP/1.1\r\nhost: x\r\nx-a: 1\r\nx-a: 2\r\n\r\nbody")
                .unwrap();
        assert_eq!(
            (head.method, head.target.as_str()),
            (Method::POST, "/a?b=1")
        );
        let xa: Vec<_> = head.headers.get_all("x-a").iter().collect();
        assert_eq!(xa, ["1", "2"]);
        assert!(CopyHead::from_h1(b"GET / HTTP/1.1\r\nhost: x\r\n").is_none());
    }
}
