//! The dashboard on the admin listener: the page and its two assets, embedded in the binary, and
//! the `GET /events` stream the page reads.
//!
//! The page, `dashboard.js` and `dashboard.css` hold no data, so they need no token; they are
//! served with `Cache-Control: no-cache`, `X-Content-Type-Options: nosniff` and a strict
//! [`CSP`] (nothing but the listener's own scripts, styles and connections; no framing).
//!
//! `/events` is a `text/event-stream` (token like `/status`): an event at once, then every second
//! and right after every change of the live state ([`State::subscribe`](crate::state::State::subscribe))
//! or new entry in its events ([`Events`](crate::events::Events)):
//!
//! ```text
//! event: status
//! data: {"status": <GET /status>, "history": <GET /history>, "events": [...], "now": "RFC 3339"}
//! ```
//!
//! The stream ends when the admin listener shuts down (the app's stop token), so an open
//! dashboard does not hold the graceful shutdown for its grace period.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{header, HeaderValue, Response};
use http_body_util::Full;
use hyper::body::{Body, Frame};
use serde_json::json;
use tokio::sync::mpsc;

use super::Admin;

const INDEX: &str = include_str!("dashboard/index.html");
const SCRIPT: &str = include_str!("dashboard/dashboard.js");
const STYLE: &str = include_str!("dashboard/dashboard.css");

/// The Content-Security-Policy of the page and its assets.
pub const CSP: &str = "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'";

/// The longest the stream goes without an event.
const EVERY: Duration = Duration::from_secs(1);
/// The shortest time between two events.
const MIN_GAP: Duration = Duration::from_millis(100);

/// The embedded asset at `path` (`/`, `/dashboard.js`, `/dashboard.css`) with its headers.
pub(super) fn asset(path: &str) -> Option<Response<Full<Bytes>>> {
    let (body, content_type) = match path {
        "/" => (INDEX, "text/html; charset=utf-8"),
        "/dashboard.js" => (SCRIPT, "text/javascript; charset=utf-8"),
        "/dashboard.css" => (STYLE, "text/css; charset=utf-8"),
        _ => return None,
    };
    let mut res = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    let headers = res.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    Some(res)
}

/// The body of an `/events` response: what the feeding task sends, until it stops.
#[derive(Debug)]
pub struct EventStream {
    rx: mpsc::Receiver<Bytes>,
}

impl Body for EventStream {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.rx
            .poll_recv(cx)
            .map(|next| next.map(|bytes| Ok(Frame::data(bytes))))
    }
}

/// Starts an `/events` stream fed by a task of its own, which ends with the stream (the client
/// went away) or when the admin listener stops.
pub(super) fn open(
    admin: Admin,
    head: http::Request<http_body_util::Empty<Bytes>>,
    peer: std::net::SocketAddr,
) -> Response<EventStream> {
    let (tx, rx) = mpsc::channel(2);
    tokio::spawn(feed(admin, head, peer, tx));
    let mut res = Response::new(EventStream { rx });
    let headers = res.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // A buffering reverse proxy in front (nginx) would hold the events back.
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    res
}

/// Sends an event at once, then every [`EVERY`] and after every change, until the client goes
/// away or the admin listener stops.
async fn feed(
    admin: Admin,
    head: http::Request<http_body_util::Empty<Bytes>>,
    peer: std::net::SocketAddr,
    tx: mpsc::Sender<Bytes>,
) {
    let stop = admin.stop.clone();
    let mut changes = admin.state.subscribe();
    let mut events = admin.state.events().subscribe();
    changes.borrow_and_update();
    events.borrow_and_update();
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + EVERY, EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        if !admin.admits(&head, peer) {
            // The token was rotated, or the allow list or names narrowed, since the stream
            // opened: end it; the page reconnects and is asked again.
            return;
        }
        let sent_at = tokio::time::Instant::now();
        let event = frame(&admin);
        tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            sent = tx.send(event) => if sent.is_err() { return },
        }
        tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            _ = tx.closed() => return,
            changed = changes.changed() => if changed.is_err() { return },
            recorded = events.changed() => if recorded.is_err() { return },
            _ = tick.tick() => {}
        }
        // A burst of changes (a switch storm) is one event per [`MIN_GAP`], not one each.
        tokio::select! {
            _ = stop.cancelled() => return,
            () = tokio::time::sleep_until(sent_at + MIN_GAP) => {}
        }
    }
}

/// One `status` event: the status document, the history and the events, as one `data:` line.
fn frame(admin: &Admin) -> Bytes {
    let doc = json!({
        "status": admin.status(),
        "history": admin.history.doc(),
        "events": admin.state.events().list(),
        "now": humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
    });
    Bytes::from(format!("event: status\ndata: {doc}\n\n"))
}
