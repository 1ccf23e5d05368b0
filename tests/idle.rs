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

/// A connection that came back and parked again must not be closed at its *first* deadline
/// (stale deadline / generation check).
#[tokio::test]
async fn a_reparked_connection_outlives_its_earlier_deadline() {
    let (teal, _b) = teal_with("idle_timeout = \"1500ms\"", "").await;
    let mut c = RawClient::connect(teal.proxy).await;
    assert_eq!(c.get("/", "").await.status, 200);
    tokio::time::sleep(PARKED).await; // parked, deadline ~1.5 s
    assert_eq!(c.get("/", "").await.status, 200); // back; re-parks at ~0.95 s, deadline ~2.2 s
    tokio::time::sleep(Duration::from_millis(1100)).await; // first deadline (1.5 s) passes
    assert_eq!(
        c.get("/", "").await.status,
        200,
        "closed at a stale deadline"
    );
    // and it still expires at its own deadline
    let (rest, closed) = c.rest(Duration::from_secs(4)).await;
    assert!(closed && rest.is_empty());
}

/// A parked connection closed at idle_timeout by the lot gives its slot back.
#[tokio::test]
async fn an_expired_parked_connection_gives_back_its_slot() {
    let (teal, _b) = teal_with("idle_timeout = \"1s\"", "\n[limits]\nmax_connections = 1\n").await;
    // max_connections is shared by all workers; one connection holds the only slot.
    let mut a = RawClient::connect(teal.proxy).await;
    assert_eq!(a.get("/", "").await.status, 200);
    let started = Instant::now();
    let proxy = teal.proxy;
    let waiting = tokio::spawn(async move { RawClient::connect(proxy).await.get("/", "").await });
    let r = tokio::time::timeout(Duration::from_secs(4), waiting)
        .await
        .expect("the waiting connection was never served: the expired one kept its slot")
        .unwrap();
    assert_eq!(r.status, 200);
    assert!(
        started.elapsed() >= Duration::from_millis(800),
        "{:?}",
        started.elapsed()
    );
    let (_, closed) = a.rest(Duration::from_secs(1)).await;
    assert!(closed);
}

/// Half a head sent to a parked connection: header_timeout applies, as on a task.
#[tokio::test]
async fn half_a_head_after_parking_meets_header_timeout() {
    let (teal, _b) = teal_with("idle_timeout = \"30s\"\nheader_timeout = \"1s\"", "").await;
    let mut c = RawClient::connect(teal.proxy).await;
    assert_eq!(c.get("/", "").await.status, 200);
    tokio::time::sleep(PARKED).await;
    let before = teal.rejected("header_timeout").await;
    c.send(b"GET /slow HTTP/1.1\r\nHo").await;
    let t = Instant::now();
    let (_, closed) = c.rest(Duration::from_secs(4)).await;
    assert!(closed, "still open 4 s after header_timeout = 1s");
    let e = t.elapsed();
    assert!(
        e >= Duration::from_millis(900) && e < Duration::from_millis(2500),
        "{e:?}"
    );
    assert_eq!(teal.rejected("header_timeout").await, before + 1);
}

/// A partial pipelined request buffered in teal: the connection must not park (the bytes would
/// be lost); the rest of the request, sent after the park delay, completes it.
#[tokio::test]
async fn a_partial_pipelined_request_is_not_lost_to_parking() {
    let (teal, b) = teal_with("idle_timeout = \"30s\"", "").await;
    let mut c = RawClient::connect(teal.proxy).await;
    c.send(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHo")
        .await;
    assert_eq!(c.response(false).await.unwrap().status, 200);
    tokio::time::sleep(PARKED).await;
    c.send(b"st: x\r\n\r\n").await;
    let r = c.response(false).await.expect("a response");
    assert_eq!(r.status, 200, "{}", r.head);
    assert_eq!(b.hits(), 2);
}

/// Requests timed to land right around the park (gaps of 200..300 ms): none is lost.
#[tokio::test]
async fn requests_racing_the_park_are_all_served() {
    let (teal, b) = teal_with("idle_timeout = \"30s\"", "").await;
    let mut tasks = Vec::new();
    for i in 0..40u64 {
        let proxy = teal.proxy;
        tasks.push(tokio::spawn(async move {
            let mut c = RawClient::connect(proxy).await;
            assert_eq!(c.get("/", "").await.status, 200);
            for round in 0..6u64 {
                let gap = 200 + (i * 7 + round * 13) % 100;
                tokio::time::sleep(Duration::from_millis(gap)).await;
                let r = c.get("/", "").await;
                assert_eq!(r.status, 200);
            }
        }));
    }
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(20), t)
            .await
            .expect("a request was lost")
            .unwrap();
    }
    assert_eq!(b.hits(), 40 * 7);
}

/// A client closing many parked connections at once (more than a batch of 64) frees every slot.
#[tokio::test]
async fn closing_many_parked_connections_frees_every_slot() {
    let n = 130;
    let (teal, _b) = teal_with(
        "idle_timeout = \"60s\"\nworkers = 1",
        &format!("\n[limits]\nmax_connections = {n}\n"),
    )
    .await;
    let mut clients = Vec::new();
    for _ in 0..n {
        let mut c = RawClient::connect(teal.proxy).await;
        assert_eq!(c.get("/", "").await.status, 200);
        clients.push(c);
    }
    tokio::time::sleep(PARKED).await;
    for c in &mut clients {
        c.tcp.shutdown().await.unwrap();
    }
    drop(clients);
    // every slot is back: n new connections are all served
    let mut again = Vec::new();
    for _ in 0..n {
        let mut c = tokio::time::timeout(Duration::from_secs(3), async {
            let mut c = RawClient::connect(teal.proxy).await;
            let r = c.get("/", "").await;
            (c, r)
        })
        .await
        .expect("a slot was not given back");
        assert_eq!(c.1.status, 200);
        c.0.tcp.flush().await.unwrap();
        again.push(c.0);
    }
}

/// SIGTERM-like shutdown with many parked connections (and max_connections) is immediate.
#[tokio::test]
async fn a_drain_with_many_parked_connections_is_immediate() {
    let (teal, _b) = teal_with("idle_timeout = \"60s\"", "").await;
    let mut clients = Vec::new();
    for _ in 0..100 {
        let mut c = RawClient::connect(teal.proxy).await;
        assert_eq!(c.get("/", "").await.status, 200);
        clients.push(c);
    }
    tokio::time::sleep(PARKED).await;
    let t = Instant::now();
    let (drained, _dir) = teal.stop().await;
    assert!(drained);
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    for c in &mut clients {
        let (rest, closed) = c.rest(Duration::from_secs(2)).await;
        assert!(closed && rest.is_empty());
    }
}

/// Requests written to parked connections just before shutdown: each is answered or the
/// connection closes cleanly; none is reset (before the fix all 60 were).
#[tokio::test]
async fn requests_at_the_drain_are_served_not_reset() {
    let (teal, _b) = teal_with("idle_timeout = \"60s\"\nworkers = 1", "").await;
    let mut clients = Vec::new();
    for _ in 0..60 {
        let mut c = RawClient::connect(teal.proxy).await;
        assert_eq!(c.get("/", "").await.status, 200);
        clients.push(c);
    }
    tokio::time::sleep(PARKED).await;
    for c in &mut clients {
        c.send(b"GET /late HTTP/1.1\r\nHost: x\r\n\r\n").await;
    }
    let (drained, _dir) = teal.stop().await;
    assert!(drained);
    let (mut served, mut reset, mut closed) = (0, 0, 0);
    for c in &mut clients {
        let mut buf = Vec::new();
        match tokio::time::timeout(
            Duration::from_secs(2),
            tokio::io::AsyncReadExt::read_to_end(&mut c.tcp, &mut buf),
        )
        .await
        {
            Ok(Ok(_)) if buf.starts_with(b"HTTP/1.1 200") => served += 1,
            Ok(Ok(_)) => closed += 1,
            Ok(Err(_)) => reset += 1,
            Err(_) => panic!("still open"),
        }
    }
    assert_eq!(reset, 0, "served={served} reset={reset} closed={closed}");
}
