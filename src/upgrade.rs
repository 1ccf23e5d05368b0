//! HTTP/1.1 upgrade (WebSocket) tunnels.
//!
//! After the upstream answered `101`, the proxy returns that response to the client and spawns a
//! tunnel task here that waits for both upgraded halves and copies bytes both ways until either
//! side closes. Tunnels run on a `TaskTracker` of their own, because a client connection's task
//! (which [`crate::server::Drain`] waits for) ends once hyper hands the upgraded socket over;
//! shutdown waits on the tracker within the grace period. The upstream connection's state machine
//! runs on the same tracker until it has handed its socket over. The
//! tunnel owns the request's [`Exchange`], so it counts as in flight on its server (as a tunnel, not a request) until it closes.

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio_util::task::TaskTracker;
use tracing::{debug, Instrument};

use crate::access::Exchange;

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
        match tokio::io::copy_bidirectional(&mut down, &mut up).await {
            Ok((to_upstream, to_client)) => {
                exchange.bytes = to_client;
                debug!(to_upstream, to_client, "tunnel closed");
            }
            Err(e) => debug!(error = %e, "tunnel ended with an error"),
        }
    };
    tunnels.spawn(tunnel.in_current_span());
}
