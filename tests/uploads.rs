//! Request bodies larger than a buffer on teal's own HTTP/1.1 path, streamed from the client's
//! socket to the upstream's (`splice`, `src/h1/splice.rs`): they arrive whole and exact, exactly
//! their bytes are taken (a pipelined request after them is served next), `Expect: 100-continue`
//! is answered (curl waits for it), and an upstream that answers before it read the whole body
//! has its answer reach the client. The timeouts and the client's own failures are in
//! `tests/body_timeouts.rs` and `tests/hostile_client.rs`, on both paths.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use support::raw::*;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const VIA_HYPER: &str = "Connection: x-hyper\r\n";
const PATHS: [(&str, &str); 2] = [("own", ""), ("hyper", VIA_HYPER)];

/// A body far over the buffer (16 KiB) and the pipe (1 MiB), not a multiple of either.
const SIZE: usize = 3 * 1024 * 1024 + 17;

/// Body bytes that show any byte lost, repeated or out of place.
fn pattern(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i % 251) as u8 ^ (i / 251 % 256) as u8)
        .collect()
}

async fn teal_on(upstream: SocketAddr) -> Teal {
    let text = config("raw", &[("raw", vec![upstream])], "");
    Teal::start(&with_proxy(&text, "workers = 1")).await
}

/// A large upload arrives whole and exact; the request pipelined right after its last byte is
/// served next on the same connection; both are the own path's, and the upstream connection,
/// whose exchange ended cleanly, is reused.
#[tokio::test]
async fn a_large_upload_arrives_whole_and_the_connection_goes_on() {
    let upstream = scripted(|req| vec![answer(req)]).await;
    let teal = teal_on(upstream.addr).await;
    let body = pattern(SIZE);
    let before = teal.served().await;
    let mut client = RawClient::connect(teal.proxy).await;
    for round in 0..2 {
        client
            .send(format!(
                "POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: {SIZE}\r\n\r\n"
            ))
            .await;
        client.send(&body[..1000]).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        let mut rest = body[1000..].to_vec();
        rest.extend_from_slice(b"GET /next HTTP/1.1\r\nHost: x\r\n\r\n");
        client.send(rest).await;
        let r = client.response(false).await.expect("the upload's answer");
        assert_eq!((r.status, r.text().as_str()), (200, "POST /up"), "{round}");
        assert_eq!(r.field("connection"), None, "{round}");
        let r = client.response(false).await.expect("the pipelined answer");
        assert_eq!((r.status, r.text().as_str()), (200, "GET /next"), "{round}");
    }
    let received = upstream.received();
    let bodies: Vec<bool> = received.iter().map(|r| r.body == body).collect();
    assert_eq!(bodies, [true, false, true, false], "the uploads differ");
    assert_eq!(received[1].path, "/next");
    assert_eq!(
        upstream.accepted(),
        1,
        "the upstream connection was not reused"
    );
    let after = teal.served().await;
    assert_eq!((after[0] - before[0], after[1] - before[1]), (4, 0));
}

/// curl sends `Expect: 100-continue` before a body over 1 MiB and waits for `100 Continue`:
/// teal answers it (the upstream here never does), and the whole file arrives.
#[tokio::test]
async fn curl_is_told_to_continue_and_its_upload_arrives() {
    let upstream = scripted(|req| {
        let len = req.body.len();
        let text = format!("{} {len}", req.field("expect").unwrap_or_default());
        vec![write(format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{text}",
            text.len()
        ))]
    })
    .await;
    let teal = teal_on(upstream.addr).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("upload.bin");
    std::fs::write(&file, pattern(SIZE)).unwrap();
    let before = teal.served().await;
    let out = tokio::process::Command::new("curl")
        .args(["-sS", "-v", "--expect100-timeout", "30", "-T"])
        .arg(&file)
        .arg(format!("http://{}/up", teal.proxy))
        .output()
        .await
        .expect("curl runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("Expect: 100-continue") && stderr.contains("< HTTP/1.1 100 Continue"),
        "{stderr}"
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("100-continue {SIZE}")
    );
    assert!(
        upstream.received()[0].body == pattern(SIZE),
        "the upload differs"
    );
    assert_eq!(teal.path_since(before, Duration::from_secs(2)).await, "own");
}

/// An upstream that reads each connection's first request head (byte by byte, so not a byte of
/// the body), then leaves the connection to `then`.
async fn after_the_head<F, Fut>(then: F) -> SocketAddr
where
    F: Fn(TcpStream) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let then = then.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    match s.read(&mut byte).await {
                        Ok(1) => head.push(byte[0]),
                        _ => return,
                    }
                }
                then(s).await;
            });
        }
    });
    addr
}

/// An upstream that answers a request head at once (a 413 of its own) and closes without reading
/// the body.
async fn early_answerer() -> SocketAddr {
    after_the_head(|mut s| async move {
        let answer = b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 4\r\n\r\nnope";
        let _ = s.write_all(answer).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    })
    .await
}

/// An upstream that answers before it read the body: the client gets that answer (not a 502),
/// the server is not held responsible, and the client's connection closes after it, its body
/// unread.
#[tokio::test]
async fn an_answer_before_the_whole_body_reaches_the_client() {
    let teal = teal_on(early_answerer().await).await;
    for (path, field) in PATHS {
        let mut client = RawClient::connect(teal.proxy).await;
        client
            .send(format!(
                "POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: {SIZE}\r\n{field}\r\n"
            ))
            .await;
        client.send(vec![b'u'; 64 * 1024]).await;
        let r = client.response(false).await.expect("the upstream's answer");
        assert_eq!((r.status, r.text().as_str()), (413, "nope"), "{path}");
        if path == "own" {
            assert_eq!(r.field("connection").as_deref(), Some("close"));
        }
        let (rest, closed) = client.rest(Duration::from_secs(2)).await;
        assert!(
            closed && rest.is_empty(),
            "{path}: {rest:?}, closed: {closed}"
        );
    }
    assert_ne!(teal.health_of("raw").await, "ejected");
}

/// An upstream that answers with its head at once and then echoes the body as it reads it.
async fn echoer() -> SocketAddr {
    after_the_head(|mut s| async move {
        let answer = format!("HTTP/1.1 200 OK\r\nContent-Length: {SIZE}\r\n\r\n");
        if s.write_all(answer.as_bytes()).await.is_err() {
            return;
        }
        let (mut left, mut buf) = (SIZE, vec![0u8; 64 * 1024]);
        while left > 0 {
            let n = match s.read(&mut buf[..left.min(64 * 1024)]).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if s.write_all(&buf[..n]).await.is_err() {
                return;
            }
            left -= n;
        }
    })
    .await
}

/// An upstream that answers first and goes on reading (an echo) gets the whole body while its
/// answer is relayed, on both paths: the client, writing and reading at once, gets it all back.
#[tokio::test]
async fn an_echo_that_answers_first_gets_the_whole_body() {
    let teal = teal_on(echoer().await).await;
    let body = pattern(SIZE);
    for (path, field) in PATHS {
        let client = RawClient::connect(teal.proxy).await;
        let (mut read, mut write) = client.tcp.into_split();
        let head =
            format!("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: {SIZE}\r\n{field}\r\n");
        let sent = body.clone();
        let writer = tokio::spawn(async move {
            write.write_all(head.as_bytes()).await.unwrap();
            for piece in sent.chunks(256 * 1024) {
                write.write_all(piece).await.unwrap();
            }
            write
        });
        // The head and the whole echo (the own path closes after them; the hyper path need not).
        let mut got = Vec::new();
        let read_all = async {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let at = got.windows(4).position(|w| w == b"\r\n\r\n");
                if at.is_some_and(|at| got.len() >= at + 4 + SIZE) {
                    return;
                }
                match read.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                }
            }
        };
        if tokio::time::timeout(Duration::from_secs(10), read_all)
            .await
            .is_err()
        {
            panic!("{path}: the echo stalled at {} bytes", got.len());
        }
        let _ = writer.await;
        let at = got
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("a head")
            + 4;
        let head = String::from_utf8_lossy(&got[..at]).to_string();
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{path}: {head}");
        assert_eq!(got.len() - at, SIZE, "{path}: {head}");
        assert!(got[at..] == body[..], "{path}: the echo differs");
    }
}
