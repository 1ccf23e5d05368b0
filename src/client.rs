//! The pooled HTTP/1.1 client that talks to upstream servers.
//!
//! One `hyper_util` legacy [`Client`] serves every pool: its connection pool is keyed by
//! `(scheme, authority)`, and the proxy addresses requests to a resolved `IP:port` (see
//! [`crate::resolve`]), so each server address gets its own keep-alive connections, they survive
//! switches and reloads, and a name that moves gets new connections at once.
//!
//! The connect timeout is read from the current snapshot on each connect, so a reload changes it
//! without rebuilding the client (and without dropping its pooled connections). A timeout counts as
//! a connect error (`is_connect()`), which makes the proxy try the pool's next server.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;

use crate::body::RequestBody;
use crate::resolve::Resolver;
use crate::state::State;

/// The client type the proxy uses.
pub type UpstreamClient = Client<Connector, RequestBody>;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Builds the pooled upstream client. Idle connections are closed after
/// `proxy.upstream_idle_timeout` (default 4 s, below Node's 5 s and Tomcat's 60 s keep-alive), so
/// teal, not the upstream, closes them: a connection the upstream closed while teal reused it is
/// the classic source of spurious 502s (hyper#2136).
pub fn build(state: Arc<State>, resolver: Arc<Resolver>) -> UpstreamClient {
    let idle = state.load().config.proxy.upstream_idle_timeout;
    Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(idle)
        .build(connector(state, resolver))
}

/// A client that never reuses a connection, for the one retry after a pooled connection turned
/// out to be closed.
pub fn build_fresh(state: Arc<State>, resolver: Arc<Resolver>) -> UpstreamClient {
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(0)
        .build(connector(state, resolver))
}

fn connector(state: Arc<State>, resolver: Arc<Resolver>) -> Connector {
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    http.set_keepalive(Some(Duration::from_secs(60)));
    Connector {
        http,
        state,
        resolver,
    }
}

/// `HttpConnector` with a connect timeout taken from the live snapshot.
#[derive(Clone)]
pub struct Connector {
    http: HttpConnector,
    state: Arc<State>,
    resolver: Arc<Resolver>,
}

impl tower_service::Service<Uri> for Connector {
    type Response = TokioIo<TcpStream>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.http.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        // The proxy sends requests to resolved `IP:port`s; the resolver knows whose they are.
        let timeout = uri
            .authority()
            .and_then(|a| a.as_str().parse::<std::net::SocketAddr>().ok())
            .and_then(|addr| self.resolver.connect_timeout(&addr))
            .unwrap_or_else(|| self.state.load().config.proxy.connect_timeout);
        let connecting = self.http.call(uri);
        Box::pin(async move {
            match tokio::time::timeout(timeout, connecting).await {
                Ok(result) => result.map_err(Into::into),
                Err(_) => Err(format!("connect timed out after {timeout:?}").into()),
            }
        })
    }
}
