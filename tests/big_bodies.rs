//! Large `Content-Length` bodies on teal's own HTTP/1.1 path between plain sockets, where the
//! rest of the body after the head's read is spliced (`src/h1/splice.rs`): it arrives whole and
//! byte-exact, exactly its bytes are taken from the upstream (never what follows them), a slow
//! client pauses the upstream, and the read/write loop's ends hold: a body cut short, an upstream
//! that stalls, a client that goes away, and the byte count in the access line.

mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::raw::*;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;

/// A response body far over the splice threshold (64 KiB), not a multiple of any buffer size.
const SIZE: usize = 3 * 1024 * 1024 + 17;

/// A forged response an upstream leaves after a body.
const FORGED: &str =
    "HTTP/1.1 200 OK\r\nSet-Cookie: session=attacker\r\nContent-Length: 6\r\n\r\nforged";

/// Body bytes that show any byte lost, repeated or out of place.
fn pattern(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i % 251) as u8 ^ (i / 251 % 256) as u8)
        .collect()
}

fn response(body: &[u8]) -> Vec<u8> {
    let mut r = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
    r.extend_from_slice(body);
    r
}

async fn teal_on(upstream: std::net::SocketAddr, proxy: &str) -> Teal {
    let text = config("raw", &[("raw", vec![upstream])], "");
    Teal::start(&with_proxy(&text, &format!("workers = 1\n{proxy}"))).await
}

async fn open_requests(teal: &Teal) -> u64 {
    let status = teal.admin("GET", "/status", "", None).await.json();
    status["pools"]["raw"]["in_flight"].as_u64().unwrap()
}

/// A large body arrives whole and byte-exact, the client's connection stays open for the next
/// request, and the upstream connection, whose body ended where its length said, is reused.
#[tokio::test]
async fn a_large_body_arrives_whole_and_exact() {
    let body = pattern(SIZE);
    let sent = response(&body);
    let upstream = scripted(move |req| match req.path.as_str() {
        "/big" => vec![write(&sent[..1000]), pause(50), write(&sent[1000..])],
        _ => vec![answer(req)],
    })
    .await;
    let teal = teal_on(upstream.addr, "").await;
    let mut client = RawClient::connect(teal.proxy).await;
    for _ in 0..2 {
        let r = client.get("/big", "").await;
        assert_eq!(r.status, 200);
        assert_eq!(r.body.len(), SIZE);
        assert!(
            r.body == body,
            "the body differs from what the upstream sent"
        );
        assert_eq!(client.get("/next", "").await.text(), "GET /next");
    }
    assert_eq!(
        upstream.accepted(),
        1,
        "the upstream connection was not reused"
    );
}

/// An upstream that closes before its Content-Length is reached: the client gets what came and
/// then a closed connection, not a hang and not a whole-looking response.
#[tokio::test]
async fn a_large_body_cut_short_closes_the_client() {
    let body = pattern(SIZE);
    let mut sent = response(&body);
    sent.truncate(sent.len() - SIZE / 2);
    let upstream = scripted(move |_| vec![write(&sent), Step::Close]).await;
    let teal = teal_on(upstream.addr, "").await;
    let mut client = RawClient::connect(teal.proxy).await;
    client.send("GET /short HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let started = Instant::now();
    let (got, closed) = client.rest(Duration::from_secs(3)).await;
    assert!(closed, "the client connection is still open");
    assert!(started.elapsed() < Duration::from_secs(2));
    let head_end = got.find("\r\n\r\n").unwrap() + 4;
    assert!(
        got.len() - head_end < SIZE,
        "{} bytes",
        got.len() - head_end
    );
}

/// Bytes after a large body (in the same write) never reach the client, and the upstream
/// connection that carried them is closed, not reused for another client.
#[tokio::test]
async fn bytes_after_a_large_body_are_not_relayed() {
    let body = pattern(SIZE);
    let mut sent = response(&body);
    sent.extend_from_slice(FORGED.as_bytes());
    let upstream = scripted(move |req| match req.path.as_str() {
        "/glued" => vec![write(&sent), Step::ExpectClose(Duration::from_secs(2))],
        _ => vec![answer(req)],
    })
    .await;
    let teal = teal_on(upstream.addr, "").await;
    let mut client = RawClient::connect(teal.proxy).await;
    let r = client.get("/glued", "").await;
    assert!(
        r.body == body,
        "the body differs from what the upstream sent"
    );
    let r = RawClient::connect(teal.proxy)
        .await
        .get("/innocent", "")
        .await;
    assert_eq!(r.text(), "GET /innocent");
    assert!(r.field("set-cookie").is_none(), "{r:?}");
    assert_eq!(client.get("/again", "").await.text(), "GET /again");
    closed_by_teal(&upstream).await;
}

/// Waits until teal has closed `upstream`'s one connection, and that was all that happened.
async fn closed_by_teal(upstream: &Scripted) {
    assert_eventually!(
        upstream.events().len() == 1,
        Duration::from_secs(2),
        "{:?}",
        upstream.events()
    );
    assert_eq!(upstream.events(), ["closed by teal"]);
}

/// An upstream that sends the head and half of a large body, then nothing until teal closes.
async fn stalling_upstream() -> Scripted {
    let body = pattern(SIZE);
    let mut sent = response(&body);
    sent.truncate(sent.len() - SIZE / 2);
    scripted(move |_| vec![write(&sent), Step::ExpectClose(Duration::from_secs(5))]).await
}

/// An upstream that stalls in the middle of a large body is cut off after
/// `upstream_body_timeout`: both connections close.
#[tokio::test]
async fn a_large_body_that_stalls_is_cut_off() {
    let upstream = stalling_upstream().await;
    let teal = teal_on(upstream.addr, "upstream_body_timeout = \"300ms\"").await;
    let mut client = RawClient::connect(teal.proxy).await;
    client.send("GET /stall HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let started = Instant::now();
    let (got, closed) = client.rest(Duration::from_secs(3)).await;
    let took = started.elapsed();
    assert!(closed, "the client connection is still open");
    assert!(got.starts_with("HTTP/1.1 200"));
    assert!(took < Duration::from_secs(2), "closed only after {took:?}");
    closed_by_teal(&upstream).await;
}

/// A client that goes away while the upstream pauses in a large body ends the exchange: the
/// upstream connection closes and nothing stays in flight.
#[tokio::test]
async fn a_client_that_leaves_a_large_body_ends_it() {
    let upstream = stalling_upstream().await;
    let teal = teal_on(upstream.addr, "").await;
    let mut client = RawClient::connect(teal.proxy).await;
    client.send("GET /leave HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let mut some = vec![0u8; 256 * 1024];
    client.tcp.read_exact(&mut some).await.unwrap();
    drop(client);
    closed_by_teal(&upstream).await;
    assert_eventually!(
        open_requests(&teal).await == 0,
        Duration::from_secs(2),
        "the request is still in flight after its client left"
    );
}

/// An upstream that writes a `total`-byte pattern body as fast as it is taken, from a socket with
/// a small send buffer, counting what it got written.
async fn counting_upstream(total: usize) -> (std::net::SocketAddr, Arc<AtomicU64>) {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_send_buffer_size(SMALL_BUFFER).unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(16).unwrap();
    let addr = listener.local_addr().unwrap();
    let written = Arc::new(AtomicU64::new(0));
    let count = written.clone();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut head = [0u8; 4096];
        let _ = s.read(&mut head).await;
        let body = pattern(total);
        let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {total}\r\n\r\n");
        s.write_all(head.as_bytes()).await.unwrap();
        for chunk in body.chunks(64 * 1024) {
            if s.write_all(chunk).await.is_err() {
                return;
            }
            count.fetch_add(chunk.len() as u64, Ordering::SeqCst);
        }
    });
    (addr, written)
}

/// The send and receive buffers of the test's own sockets: small, so what the upstream can run
/// ahead of the client is mostly what teal holds (its sockets' buffers and its pipe).
const SMALL_BUFFER: u32 = 128 * 1024;

/// A client that stops reading holds the upstream back: the upstream stops writing well before
/// the end of the body (what it got written beyond what the client read stays within the socket
/// buffers and one pipe), goes on when the client reads again, and the body arrives exact.
#[tokio::test]
async fn a_slow_client_pauses_the_upstream() {
    let total = 64 * 1024 * 1024;
    let (addr, written) = counting_upstream(total).await;
    let teal = teal_on(addr, "client_send_timeout = \"10s\"").await;
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(SMALL_BUFFER).unwrap();
    let mut tcp = socket.connect(teal.proxy).await.unwrap();
    tcp.write_all(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    // The client reads nothing: the upstream stops once the buffers on the way are full.
    let mut paused = u64::MAX;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = written.load(Ordering::SeqCst);
        if now == paused || Instant::now() > deadline {
            assert_eq!(now, paused, "the upstream was not paused");
            break;
        }
        paused = now;
    }
    assert!(
        paused < 32 * 1024 * 1024,
        "the upstream ran {paused} bytes ahead of a client that read nothing"
    );
    let mut got = Vec::with_capacity(total + 1024);
    let mut chunk = vec![0u8; 64 * 1024];
    let deadline = Instant::now() + Duration::from_secs(20);
    while got.len() < total && Instant::now() < deadline {
        let n = tcp.read(&mut chunk).await.unwrap();
        assert!(n > 0, "closed after {} bytes", got.len());
        got.extend_from_slice(&chunk[..n]);
    }
    let head_end = got.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert_eq!(got.len() - head_end, total);
    assert!(got[head_end..] == pattern(total), "the body differs");
}

/// The access line counts a spliced body's bytes, all of them.
#[tokio::test]
async fn the_access_line_counts_a_large_body() {
    let sent = response(&pattern(SIZE));
    let upstream = scripted(move |_| vec![write(&sent)]).await;
    let text = config("raw", &[("raw", vec![upstream.addr])], "") + "\n[log]\nformat = \"json\"\n";
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("teal.toml");
    std::fs::write(&path, text).unwrap();
    let (_child, proxy, _admin, seen) = run_binary_logged(&path).await;
    let r = RawClient::connect(proxy).await.get("/big", "").await;
    assert_eq!(r.body.len(), SIZE);
    let lines = || access_lines(&seen);
    assert_eventually!(
        lines().len() == 1,
        Duration::from_secs(2),
        "{:?}",
        seen.lock().unwrap()
    );
    assert_eq!(lines()[0]["bytes"], SIZE as u64);
}
