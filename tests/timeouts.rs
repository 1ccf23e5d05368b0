//! Client-side connection timeouts: `idle_timeout` between requests, `header_timeout` for a
//! request head, and neither cutting a slow response or a quiet WebSocket.

mod support;

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use http::StatusCode;
use support::raw::RawClient;
use support::*;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

async fn teal_with(idle: &str, header: &str, pools: &[(&str, Vec<std::net::SocketAddr>)]) -> Teal {
    let text = with_proxy(
        &config("blue", pools, ""),
        &format!("idle_timeout = \"{idle}\"\nheader_timeout = \"{header}\""),
    );
    Teal::start(&text).await
}

/// Reads until `client`'s connection closes; returns what was read and when it closed. Panics if
/// it stays open `within` without a byte.
async fn read_to_close(client: &mut RawClient, within: Duration) -> (String, Instant) {
    let (text, closed) = client.rest(within).await;
    assert!(
        closed,
        "connection still open after {within:?}; read {text:?}"
    );
    (text, Instant::now())
}

/// A kept-alive connection with nothing to do is closed after `idle_timeout`, not before.
#[tokio::test]
async fn idle_connection_closed_after_idle_timeout() {
    let (b, g) = (upstream("blue", "b").await, upstream("green", "g").await);
    let teal = teal_with("400ms", "5s", &blue_green(&b, &g)).await;
    let mut client = RawClient::connect(teal.proxy).await;
    client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let answered = Instant::now();
    let (text, closed) = read_to_close(&mut client, Duration::from_secs(3)).await;
    assert!(
        text.starts_with("HTTP/1.1 200") && text.ends_with("blue\n"),
        "{text}"
    );
    let idle = closed - answered;
    assert!(
        idle >= Duration::from_millis(350),
        "closed after only {idle:?}"
    );
}

/// A client that starts a request head and never finishes it is closed after `header_timeout`,
/// even though `idle_timeout` is longer.
#[tokio::test]
async fn slow_request_head_closed_after_header_timeout() {
    let (b, g) = (upstream("blue", "b").await, upstream("green", "g").await);
    let teal = teal_with("30s", "300ms", &blue_green(&b, &g)).await;
    let mut client = RawClient::connect(teal.proxy).await;
    let started = Instant::now();
    client.send(b"GET / HTTP/1.1\r\nHost: x\r\n").await;
    let (_, closed) = read_to_close(&mut client, Duration::from_secs(3)).await;
    let took = closed - started;
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(3),
        "{took:?}"
    );
    assert_eq!(b.hits(), 0, "nothing reached the upstream");
    // A normal client is unaffected.
    assert_eq!(teal.text("/").await, "blue");
}

/// Neither timeout cuts a response that takes longer than both, nor a quiet WebSocket.
#[tokio::test]
async fn slow_response_and_quiet_websocket_stay_open() {
    let b = upstream("blue", "b").await;
    let ws = ws_echo("green").await;
    let teal = teal_with(
        "300ms",
        "300ms",
        &[("blue", vec![b.addr]), ("green", vec![ws])],
    )
    .await;
    let mut conn = Conn::open(teal.proxy).await;
    let r = conn.get("/slow?delay_ms=900").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["pool"], "blue");

    let tcp = TcpStream::connect(teal.proxy).await.unwrap();
    let (mut socket, _) =
        tokio_tungstenite::client_async(format!("ws://{}/green/chat", teal.proxy), tcp)
            .await
            .unwrap();
    tokio::time::sleep(Duration::from_millis(900)).await;
    socket.send(Message::text("still there?")).await.unwrap();
    let reply = tokio::time::timeout(Duration::from_secs(3), socket.next())
        .await
        .expect("echo after a quiet spell")
        .unwrap()
        .unwrap();
    assert_eq!(reply.to_text().unwrap(), "green:still there?");
}
