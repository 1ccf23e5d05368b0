//! The accept loop shared by the proxy, the admin API and the demo upstreams.
//!
//! [`serve`] takes a bound listener, a handler and a shutdown future. Each connection is served by
//! hyper-util's auto builder (HTTP/1.1, or HTTP/2 with prior knowledge), with upgrades enabled and
//! the HTTP/1 header-read timeout armed (it needs a timer). When `shutdown` resolves the listener is
//! dropped (new connections are refused) and a [`Drain`] is returned: its [`Drain::finish`] lets
//! HTTP/1 connections finish their current request and close, sends GOAWAY on HTTP/2, and waits
//! for them up to a deadline. Upgraded tunnels are not seen here; see [`crate::upgrade`].

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::{Body, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::time::Instant;
use tracing::{debug, info_span, warn, Instrument};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The connections of a listener that stopped accepting, still finishing their work.
pub struct Drain {
    graceful: GracefulShutdown,
}

impl Drain {
    /// Asks every connection to finish and waits until they have or `deadline` passes.
    /// Returns `true` when all finished in time.
    pub async fn finish(self, deadline: Instant) -> bool {
        tokio::time::timeout_at(deadline, self.graceful.shutdown())
            .await
            .is_ok()
    }
}

/// Serves connections from `listener` with `handler` until `shutdown` resolves.
pub async fn serve<H, F, B>(
    listener: TcpListener,
    header_timeout: Duration,
    handler: H,
    shutdown: impl Future<Output = ()>,
) -> Drain
where
    H: Fn(Request<Incoming>, SocketAddr) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Result<Response<B>, Infallible>> + Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    builder.http2().timer(TokioTimer::new());
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = tcp.set_nodelay(true);
        let handler = handler.clone();
        let service = service_fn(move |req| handler(req, peer));
        let conn = builder
            .serve_connection_with_upgrades(TokioIo::new(tcp), service)
            .into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(
            async move {
                if let Err(e) = conn.await {
                    debug!(error = %e, "connection ended with an error");
                }
            }
            .instrument(info_span!("conn", %peer)),
        );
    }
    drop(listener);
    Drain { graceful }
}
