//! Upgrade tunnels byte by byte, on raw sockets: bytes sent right behind the upgrade request and
//! the 101, half-close in each direction, and a transfer larger than every buffer on the way
//! (the reader slow, so the relay must wait for it).

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::time::timeout;

const REQUEST: &[u8] = b"GET /t HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: raw\r\n\r\n";
const SWITCH: &[u8] =
    b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: raw\r\n\r\n";

/// Reads a head up to its blank line; returns the bytes after it.
async fn read_head(tcp: &mut TcpStream) -> (Vec<u8>, Vec<u8>) {
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = got.split_off(end + 4);
            return (got, rest);
        }
        let n = timeout(Duration::from_secs(5), tcp.read(&mut chunk))
            .await
            .unwrap()
            .unwrap();
        assert!(
            n > 0,
            "the stream ended inside a head: {:?}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&chunk[..n]);
    }
}

/// Reads exactly `n` bytes, given `have` already read.
async fn read_exact(tcp: &mut TcpStream, mut have: Vec<u8>, n: usize) -> Vec<u8> {
    let start = have.len();
    have.resize(n, 0);
    timeout(Duration::from_secs(10), tcp.read_exact(&mut have[start..]))
        .await
        .unwrap()
        .unwrap();
    have
}

async fn read_to_end(tcp: &mut TcpStream) -> Vec<u8> {
    let mut all = Vec::new();
    timeout(Duration::from_secs(10), tcp.read_to_end(&mut all))
        .await
        .unwrap()
        .unwrap();
    all
}

/// An upstream that answers one upgrade with `101` plus `behind` in one write, then runs `then`
/// on the socket (with whatever the client sent behind its request); its result, all the bytes
/// the upstream received, comes through the receiver.
async fn upgrade_upstream<F, Fut>(
    behind: &'static [u8],
    then: F,
) -> (SocketAddr, oneshot::Receiver<Vec<u8>>)
where
    F: FnOnce(TcpStream, Vec<u8>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Vec<u8>> + Send,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = oneshot::channel();
    tokio::spawn(async move {
        let (mut tcp, _) = listener.accept().await.unwrap();
        let (_, rest) = read_head(&mut tcp).await;
        tcp.write_all(&[SWITCH, behind].concat()).await.unwrap();
        let _ = tx.send(then(tcp, rest).await);
    });
    (addr, rx)
}

async fn upstream_got(rx: oneshot::Receiver<Vec<u8>>) -> Vec<u8> {
    timeout(Duration::from_secs(30), rx)
        .await
        .unwrap()
        .expect("the upstream finished")
}

/// Opens the tunnel through teal, with `behind` sent in the same write as the request; returns
/// the socket and what came after the 101.
async fn open(teal: &Teal, behind: &[u8]) -> (TcpStream, Vec<u8>) {
    let mut tcp = TcpStream::connect(teal.proxy).await.unwrap();
    tcp.write_all(&[REQUEST, behind].concat()).await.unwrap();
    let (head, rest) = read_head(&mut tcp).await;
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    (tcp, rest)
}

async fn teal_for(upstream: SocketAddr) -> Teal {
    Teal::start(&config("blue", &[("blue", vec![upstream])], "")).await
}

/// Bytes right behind the upgrade request reach the upstream, bytes right behind the 101 reach the
/// client, and both come before anything sent later.
#[tokio::test]
async fn bytes_behind_the_handshake_come_first() {
    let (up, rx) = upgrade_upstream(b"early-down", |mut tcp, rest| async move {
        let got = read_exact(&mut tcp, rest, 16).await;
        tcp.write_all(b"|late-down").await.unwrap();
        tcp.shutdown().await.unwrap();
        got
    })
    .await;
    let teal = teal_for(up).await;
    let (mut tcp, rest) = open(&teal, b"early-up").await;
    tcp.write_all(b"|late-up").await.unwrap();
    let mut got = rest;
    got.extend(read_to_end(&mut tcp).await);
    assert_eq!(got, b"early-down|late-down");
    assert_eq!(upstream_got(rx).await, b"early-up|late-up");
}

/// The client ends its side first: the upstream sees the end of the stream and can still answer,
/// and the client gets all of it and then the end.
#[tokio::test]
async fn client_half_close_lets_the_upstream_finish() {
    let (up, rx) = upgrade_upstream(b"", |mut tcp, rest| async move {
        let mut got = rest;
        got.extend(read_to_end(&mut tcp).await);
        tcp.write_all(b"answer after your end").await.unwrap();
        tcp.shutdown().await.unwrap();
        got
    })
    .await;
    let teal = teal_for(up).await;
    let (mut tcp, rest) = open(&teal, b"").await;
    tcp.write_all(b"question").await.unwrap();
    tcp.shutdown().await.unwrap();
    let mut got = rest;
    got.extend(read_to_end(&mut tcp).await);
    assert_eq!(got, b"answer after your end");
    assert_eq!(upstream_got(rx).await, b"question");
}

/// The upstream ends its side first: the client sees the end and can still send, and the
/// upstream gets all of it.
#[tokio::test]
async fn upstream_half_close_lets_the_client_finish() {
    let (up, rx) = upgrade_upstream(b"bye", |mut tcp, rest| async move {
        tcp.shutdown().await.unwrap();
        let mut got = rest;
        got.extend(read_to_end(&mut tcp).await);
        got
    })
    .await;
    let teal = teal_for(up).await;
    let (mut tcp, rest) = open(&teal, b"").await;
    let mut got = rest;
    got.extend(read_to_end(&mut tcp).await);
    assert_eq!(got, b"bye");
    tcp.write_all(b"still talking").await.unwrap();
    tcp.shutdown().await.unwrap();
    assert_eq!(upstream_got(rx).await, b"still talking");
}

/// 32 MiB each way, through a reader that takes its time: every byte arrives, in order.
#[tokio::test]
async fn large_transfer_waits_for_slow_readers() {
    const SIZE: usize = 32 << 20;
    let pattern = |i: usize| (i % 251) as u8;
    let (up, rx) = upgrade_upstream(b"", move |tcp, rest| async move {
        let (mut rd, mut wr) = tcp.into_split();
        let sender = tokio::spawn(async move {
            let data: Vec<u8> = (0..SIZE).map(pattern).collect();
            wr.write_all(&data).await.unwrap();
            wr.shutdown().await.unwrap();
        });
        let mut got = rest;
        timeout(Duration::from_secs(30), rd.read_to_end(&mut got))
            .await
            .unwrap()
            .unwrap();
        sender.await.unwrap();
        got
    })
    .await;
    let teal = teal_for(up).await;
    let (tcp, rest) = open(&teal, b"").await;
    let (mut rd, mut wr) = tcp.into_split();
    let sender = tokio::spawn(async move {
        let data: Vec<u8> = (0..SIZE).map(pattern).collect();
        wr.write_all(&data).await.unwrap();
        wr.shutdown().await.unwrap();
    });
    // A slow start: teal's buffers and both sockets' fill up while this waits.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut got = rest;
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let n = timeout(Duration::from_secs(30), rd.read(&mut chunk))
            .await
            .unwrap()
            .unwrap();
        if n == 0 {
            break;
        }
        got.extend_from_slice(&chunk[..n]);
    }
    assert_eq!(got.len(), SIZE);
    assert!(got.iter().enumerate().all(|(i, b)| *b == pattern(i)));
    sender.await.unwrap();
    let got = upstream_got(rx).await;
    assert_eq!(got.len(), SIZE);
    assert!(got.iter().enumerate().all(|(i, b)| *b == pattern(i)));
}
