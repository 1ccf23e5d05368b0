//! teal's own HTTP/1.1 path for plain requests.
//!
//! Most requests through a blue/green proxy are plain: HTTP/1.1, no body, no upgrade. For those,
//! hyper's general machinery (a `Request` with a `HeaderMap` built and taken apart again, a client
//! connection with its own dispatch, 16 KiB of buffers kept by every connection for its whole
//! life) cost more than everything else together: about 40,000 instructions per request against
//! nginx's 18,500, and 20 KiB per idle client. Here a request head is parsed with `httparse`
//! straight from the bytes read, rewritten into the upstream's head as bytes (the rules of
//! [`crate::headers`]), the upstream's head is parsed and rewritten the same way, and the body is
//! relayed by its framing without being decoded: `Content-Length`, chunked (passed through as it
//! is), or until the upstream closes (re-chunked for the client, whose connection stays open).
//! The rest of a large `Content-Length` response body between two plain sockets (over 64 KiB
//! after the head's read) does not pass through teal's memory at all: it is spliced from one
//! socket to the other through a pipe (`splice`, Linux), with the same timeouts and ends. So is a
//! request body that does not fit in the buffer with its head, or whose client awaits
//! `100 Continue` (teal sends it), from a plain client socket when no mirror wants a copy: the
//! head and the body's first bytes go in one write, the rest is spliced while the upstream's
//! answer is watched for (one that comes before the whole body closes the client's connection
//! after it), under `client_body_timeout` and `upstream_body_timeout` as on the general path.
//!
//! Anything else is handed to hyper: the connection, with the bytes read so far, goes to the
//! general path ([`crate::proxy::Proxy::handle`]) for the rest of its life. That is a request with
//! a body over TLS or to a mirrored pool, an `Expect` but one `100-continue`,
//! `Transfer-Encoding`, `Upgrade`, several `Cookie` fields (joined there) or any
//! `Connection` token but `keep-alive` and `close`; an HTTP/1.0 or HTTP/2 client; an absolute-form
//! target or one with bytes that want a closer look; a head `httparse` refuses, that is over the
//! limits, or over 16 KiB; a route teal answers itself (a preview the client may not use). So
//! every refusal and error page a client can provoke with its request is the general path's, one
//! implementation.
//!
//! A connection holds no buffer while idle: buffers come from a per-thread free list when a
//! request arrives and go back once its response has been sent. After 250 ms idle it holds no task
//! either: it waits in its worker's lot ([`park`]) until its next request.

mod conn;
mod ending;
pub(crate) mod head;
mod inspect;
pub(crate) mod io;
mod park;
mod relay;
mod request;
mod response;
mod splice;
mod upstream;

pub use inspect::{relay_in_memory, rewrite_request, rewrite_response, RelayOutcome};

use std::sync::Arc;

use tokio::net::TcpListener;

use crate::h1::conn::{connection, Shared};
use crate::h1::park::Lot;
use crate::proxy::Proxy;
use crate::server::{self, Drain, Http, ServeOptions, Slot};
use crate::socket::ClientSocket;
use crate::tls::TlsSocket;

/// Serves proxy connections from `listener` until `shutdown` resolves: this path for plain
/// requests, hyper for the rest. See the module doc.
pub async fn serve(
    listener: TcpListener,
    options: ServeOptions,
    proxy: Proxy,
    shutdown: impl std::future::Future<Output = ()>,
) -> Drain {
    let http = Arc::new(Http::new(options));
    let drain = Drain::default();
    let lot = match Lot::new() {
        Ok(lot) => Some(Arc::new(lot)),
        Err(e) => {
            tracing::warn!(error = %e, "idle connections keep their tasks: no epoll instance for them");
            None
        }
    };
    let shared = Arc::new(Shared {
        proxy,
        http: http.clone(),
        lot: lot.clone(),
    });
    if let Some(lot) = lot {
        let connections = drain.connections().clone();
        let stop = drain.stop().clone();
        let resumed = shared.clone();
        park::spawn(lot, drain.connections(), stop.clone(), move |back| {
            let (shared, stop) = (resumed.clone(), stop.clone());
            connections.spawn(async move {
                // The lot saw input: let the runtime see it too before the connection looks at
                // the drain signal, so a request already here is served, not reset.
                let _ = tokio::time::timeout(park::PARK_AFTER, back.stream.readable()).await;
                let socket = ClientSocket::Plain(back.stream);
                connection(socket, back.peer, back.slot, shared, stop).await;
            });
        });
    }
    server::accept(
        listener,
        http.options.clone(),
        shutdown,
        drain,
        move |tcp, peer, slot, stop| {
            connection(ClientSocket::Plain(tcp), peer, slot, shared.clone(), stop)
        },
    )
    .await
}

/// Serves HTTPS connections from `listener` until `shutdown` resolves: the TLS handshake (bounded
/// by `header_timeout`, the certificate picked by SNI from the state's store), then HTTP/2 when
/// the client chose `h2` with ALPN, else this path over the TLS stream, as on the plain listener.
pub async fn serve_tls(
    listener: TcpListener,
    options: ServeOptions,
    proxy: Proxy,
    shutdown: impl std::future::Future<Output = ()>,
) -> Drain {
    let http = Arc::new(Http::new(options.secure()));
    let shared = Arc::new(Shared {
        proxy,
        http: http.clone(),
        lot: None,
    });
    server::accept(
        listener,
        http.options.clone(),
        shutdown,
        Drain::default(),
        move |tcp, peer, slot, stop| tls_connection(tcp, peer, slot, shared.clone(), stop),
    )
    .await
}

async fn tls_connection(
    tcp: tokio::net::TcpStream,
    peer: std::net::SocketAddr,
    slot: Slot,
    shared: Arc<Shared>,
    stop: tokio_util::sync::CancellationToken,
) {
    let (proxy, http) = (&shared.proxy, &shared.http);
    let state = proxy.forwarder().state();
    let config = state.tls().server_config();
    let timeout = http.options.timeouts.header;
    let tls = match TlsSocket::accept(tcp, config, timeout).await {
        Ok(tls) => tls,
        Err(e) => {
            state.metrics().tls_handshake(e.outcome());
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
            return;
        }
    };
    state.metrics().tls_handshake("ok");
    let h2 = tls.is_h2();
    let socket = ClientSocket::Tls(Box::new(tls));
    if h2 {
        let proxy = proxy.clone();
        let handler = move |req, peer| proxy.clone().handle(req, peer);
        Box::pin(http.serve(socket, Vec::new(), peer, handler, stop)).await;
        drop(slot);
    } else {
        connection(socket, peer, slot, shared.clone(), stop).await;
    }
}
