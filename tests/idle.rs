//! Kept-alive client connections idle for a quarter of a second wait outside their tasks (in the worker's
//! lot, `src/h1/park.rs`). What a client sees must not change: the next request is served, bytes
//! that arrive in pieces or pipelined are read as they would be, `idle_timeout` still closes the
//! connection, a client that closes gives its `max_connections` slot back at once, and a drain
//! closes parked connections without waiting for them.

mod support;

use std::time::{Duration, Instant};

use support::raw::RawClient;
use support::*;
use tokio::io::AsyncWriteExt;

/// Long enough for a connection to be parked (it parks after 250 ms of silence).
const PARKED: Duration = Duration::from_millis(700);

async fn teal_with(proxy: &str, extra: &str) -> (Teal, Upstream) {
    let (b, g) = (upstream("blue", "b").await, upstream("green", "g").await);
    let text = with_proxy(&config("blue", &blue_green(&b, &g), ""), proxy) + extra;
    (Teal::start(&text).await, b)
}

/// A parked connection serves its next request, whole, in pieces, or two pipelined, again and
/// again; each request reaches the upstream once.
#[tokio::test]
async fn a_parked_connection_serves_what_comes_next() {
    let (teal, b) = teal_with("idle_timeout = \"30s\"", "").await;
    let mut client = RawClient::connect(teal.proxy).await;
    assert_eq!(client.get("/", "").await.status, 200);
    tokio::time::sleep(PARKED).await;
    assert_eq!(client.get("/", "").await.status, 200, "whole request");
    tokio::time::sleep(PARKED).await;
    client.send(b"GET /one HTTP/1.1\r\nHo").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    client.send(b"st: x\r\n\r\n").await;
    let r = client.response(false).await.expect("a response");
    assert_eq!(r.status, 200, "request in two pieces");
    tokio::time::sleep(PARKED).await;
    client
        .send(b"GET /two HTTP/1.1\r\nHost: x\r\n\r\nGET /three HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    for n in ["two", "three"] {
        let r = client.response(false).await.expect("a response");
        assert_eq!(r.status, 200, "pipelined /{n}");
    }
    assert_eq!(b.hits(), 5);
}

/// Many connections parked at once (more than the lot takes per system call) all come back. (100:
/// the test upstream listens with a backlog of 128, and each request that comes back at once
/// needs an upstream connection of its own.)
#[tokio::test]
async fn hundreds_of_parked_connections_all_come_back() {
    let (teal, b) = teal_with("idle_timeout = \"30s\"", "").await;
    let mut clients = Vec::new();
    for _ in 0..100 {
        let mut client = RawClient::connect(teal.proxy).await;
        assert_eq!(client.get("/", "").await.status, 200);
        clients.push(client);
    }
    tokio::time::sleep(PARKED).await;
    for client in &mut clients {
        client.send(b"GET /again HTTP/1.1\r\nHost: x\r\n\r\n").await;
    }
    for client in &mut clients {
        let r = client.response(false).await.expect("a response");
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    }
    assert_eq!(b.hits(), 200);
}

/// A parked connection is still closed after `idle_timeout` (counted from its last response),
/// not before, and not much after.
#[tokio::test]
async fn a_parked_connection_is_closed_at_idle_timeout() {
    let (teal, _b) = teal_with("idle_timeout = \"2500ms\"", "").await;
    let mut client = RawClient::connect(teal.proxy).await;
    assert_eq!(client.get("/", "").await.status, 200);
    let answered = Instant::now();
    let (rest, closed) = client.rest(Duration::from_secs(6)).await;
    assert!(closed, "still open 6 s after idle_timeout = 2.5s");
    assert_eq!(rest, "", "nothing is sent on an idle close");
    let idle = answered.elapsed();
    assert!(
        idle >= Duration::from_millis(2400) && idle < Duration::from_millis(4000),
        "closed after {idle:?}"
    );
}

/// A client that closes its parked connection frees its `max_connections` slot at once, not at
/// `idle_timeout`: connections waiting for a slot are served.
#[tokio::test]
async fn a_parked_connection_the_client_closes_gives_back_its_slot() {
    let (teal, _b) = teal_with(
        "idle_timeout = \"60s\"",
        "\n[limits]\nmax_connections = 2\n",
    )
    .await;
    let mut a = RawClient::connect(teal.proxy).await;
    let mut b = RawClient::connect(teal.proxy).await;
    assert_eq!(a.get("/", "").await.status, 200);
    assert_eq!(b.get("/", "").await.status, 200);
    tokio::time::sleep(PARKED).await;
    let proxy = teal.proxy;
    let third = tokio::spawn(async move { RawClient::connect(proxy).await.get("/", "").await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!third.is_finished(), "served over the limit");
    a.tcp.shutdown().await.unwrap();
    drop(a);
    let r = tokio::time::timeout(Duration::from_secs(2), third)
        .await
        .expect("the waiting connection was served once a parked one closed")
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(b.get("/", "").await.status, 200, "the other parked one");
}

/// A drain closes parked connections at once: shutdown does not wait for them, and their
/// clients see the connection close without a byte.
#[tokio::test]
async fn a_drain_closes_parked_connections_at_once() {
    let (teal, _b) = teal_with("idle_timeout = \"60s\"", "").await;
    let mut client = RawClient::connect(teal.proxy).await;
    assert_eq!(client.get("/", "").await.status, 200);
    tokio::time::sleep(PARKED).await;
    let started = Instant::now();
    let (drained, _dir) = teal.stop().await;
    assert!(drained, "the drain finished in time");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "shutdown waited {:?} for an idle connection",
        started.elapsed()
    );
    let (rest, closed) = client.rest(Duration::from_secs(2)).await;
    assert!(closed && rest.is_empty(), "{closed} {rest:?}");
}
