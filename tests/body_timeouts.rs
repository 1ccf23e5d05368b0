//! The timeouts around bodies, on both HTTP/1.1 paths, as nginx's `client_body_timeout`,
//! `proxy_read_timeout` and `send_timeout` have them: `response_timeout` counts from the end of
//! the request (an upload may take as long as it keeps moving), a client that does not read is
//! cut off after `client_send_timeout`, and a client that goes away is noticed and its upstream
//! exchange ended. None of them is held against the upstream server.

mod support;

use std::time::Duration;

use support::raw::*;
use support::*;

const VIA_HYPER: &str = "Connection: x-hyper\r\n";
const PATHS: [(&str, &str); 2] = [("own", ""), ("hyper", VIA_HYPER)];

/// teal with one worker in front of `upstream`; `proxy` lines go into `[proxy]` (a
/// `response_timeout` there replaces the test config's).
async fn teal_on(upstream: &Scripted, proxy: &str) -> Teal {
    let text = config("raw", &[("raw", vec![upstream.addr])], "");
    let text = if proxy.starts_with("response_timeout") {
        text.replace("response_timeout = \"5s\"", proxy)
    } else {
        with_proxy(&text, proxy)
    };
    Teal::start(&with_proxy(&text, "workers = 1")).await
}

async fn open_requests(teal: &Teal) -> u64 {
    let status = teal.admin("GET", "/status", "", None).await.json();
    status["pools"]["raw"]["in_flight"].as_u64().unwrap()
}

/// An upload that keeps moving may take longer than `response_timeout`: that timeout counts from
/// the end of the request to the response head (nginx sent the same 150 MB at 2 MB/s in 75 s).
#[tokio::test]
async fn a_steady_upload_outlasts_response_timeout() {
    let upstream = scripted(|req| vec![answer(req)]).await;
    let teal = teal_on(&upstream, "response_timeout = \"400ms\"").await;
    for (path, field) in PATHS {
        let mut client = RawClient::connect(teal.proxy).await;
        client
            .send(format!(
                "POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n{field}\r\n"
            ))
            .await;
        for _ in 0..10 {
            client.send(vec![b'u'; 10_000]).await;
            tokio::time::sleep(Duration::from_millis(120)).await;
        }
        let r = client.response(false).await.expect("a response");
        assert_eq!(
            (r.status, r.text().as_str()),
            (200, "POST /upload"),
            "{path}"
        );
    }
    let bodies: Vec<usize> = upstream.received().iter().map(|r| r.body.len()).collect();
    assert_eq!(bodies, [100_000, 100_000]);
    assert_ne!(teal.health_of("raw").await, "ejected");
}

/// A client that stops reading a large response is cut off after `client_send_timeout`: its
/// connection and the upstream's close, and nothing stays in flight.
#[tokio::test]
async fn a_client_that_does_not_read_is_cut_off() {
    let upstream = scripted(|req| match req.path.as_str() {
        "/big" => {
            let mut r = b"HTTP/1.1 200 OK\r\nContent-Length: 268435456\r\n\r\n".to_vec();
            r.resize(r.len() + 64 * 1024 * 1024, b'b');
            vec![Step::Write(r)]
        }
        _ => vec![answer(req)],
    })
    .await;
    let teal = teal_on(&upstream, "client_send_timeout = \"300ms\"").await;
    let mut clients = Vec::new();
    for (_, field) in PATHS {
        let mut client = RawClient::connect(teal.proxy).await;
        client
            .send(format!("GET /big HTTP/1.1\r\nHost: x\r\n{field}\r\n"))
            .await;
        clients.push(client);
    }
    assert_eventually!(
        upstream.events().len() == 2,
        Duration::from_secs(5),
        "teal still writes to clients that do not read: {:?}",
        upstream.events()
    );
    assert_eq!(upstream.events(), ["write failed", "write failed"]);
    assert_eventually!(
        open_requests(&teal).await == 0,
        Duration::from_secs(2),
        "requests still in flight"
    );
    assert_ne!(teal.health_of("raw").await, "ejected");
    drop(clients);
}

/// A client that goes away while its request waits for the upstream is noticed: the upstream
/// connection is closed at once and nothing stays in flight (on the own path the socket sat in
/// CLOSE-WAIT and `teal switch --wait-drain` reported the pool never drained). Also after a body
/// that was streamed (sent after its head, so it is not read with it).
#[tokio::test]
async fn a_client_that_goes_away_ends_its_exchange() {
    let upstream = scripted(|req| match req.path.as_str() {
        "/slow" => vec![Step::ExpectClose(Duration::from_secs(3)), answer(req)],
        _ => vec![answer(req)],
    })
    .await;
    let teal = teal_on(&upstream, "").await;
    let size = 300_000;
    let mut ended = 0;
    for body in [false, true] {
        for (path, field) in PATHS {
            let mut client = RawClient::connect(teal.proxy).await;
            if body {
                client
                    .send(format!(
                        "POST /slow HTTP/1.1\r\nHost: x\r\nContent-Length: {size}\r\n{field}\r\n"
                    ))
                    .await;
                tokio::time::sleep(Duration::from_millis(100)).await;
                client.send(vec![b'b'; size]).await;
            } else {
                client
                    .send(format!("GET /slow HTTP/1.1\r\nHost: x\r\n{field}\r\n"))
                    .await;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            assert_eq!(open_requests(&teal).await, 1, "{path}, body {body}");
            drop(client);
            assert_eventually!(
                open_requests(&teal).await == 0,
                Duration::from_secs(1),
                "{path}, body {body}: the request is still in flight after its client left"
            );
            ended += 1;
            assert_eventually!(
                upstream.events().len() == ended,
                Duration::from_secs(1),
                "{path}, body {body}: {:?}",
                upstream.events()
            );
        }
    }
    assert!(
        upstream.events().iter().all(|e| e == "closed by teal"),
        "{:?}",
        upstream.events()
    );
    assert_ne!(teal.health_of("raw").await, "ejected");
}

/// An upstream that stops taking a request body (while the client has more) is given up on after
/// `upstream_body_timeout`: a 504, counted against that server, not a hang.
#[tokio::test]
async fn an_upstream_that_stops_reading_the_body_is_a_504() {
    let addr = silent().await;
    let text = config("raw", &[("raw", vec![addr])], "");
    let teal = Teal::start(&with_proxy(
        &text,
        "workers = 1\nupstream_body_timeout = \"300ms\"",
    ))
    .await;
    let mut client = RawClient::connect(teal.proxy).await;
    let size = 64 * 1024 * 1024;
    client
        .send(format!(
            "POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: {size}\r\n\r\n"
        ))
        .await;
    let started = std::time::Instant::now();
    let writer = tokio::spawn(async move {
        let chunk = vec![b'u'; 1024 * 1024];
        for _ in 0..64 {
            if tokio::io::AsyncWriteExt::write_all(&mut client.tcp, &chunk)
                .await
                .is_err()
            {
                break;
            }
        }
        client
    });
    let mut client = tokio::time::timeout(Duration::from_secs(5), writer)
        .await
        .expect("teal stops taking the body once it gave up on the upstream")
        .unwrap();
    let r = client.response(false).await.map(|r| r.status);
    assert!(matches!(r, Some(504) | None), "{r:?}");
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(3),
        "given up on only after {took:?} (response_timeout is 5 s)"
    );
    assert_eq!(teal.health_of("raw").await, "ejected");
}

/// An upstream with a body timeout of its own (500 ms): it reads a request head and its body,
/// and when the body pauses that long, sends `last` (nothing: it just closes) and closes.
async fn impatient(last: &'static [u8]) -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                let pause = Duration::from_millis(500);
                while let Ok(Ok(n)) = tokio::time::timeout(pause, s.read(&mut buf)).await {
                    if n == 0 {
                        return;
                    }
                }
                let _ = s.write_all(last).await;
            });
        }
    });
    addr
}

/// Sends a request whose body stops after 20,000 of its 100,000 bytes; the status teal answers.
async fn paused_upload(teal: &Teal, field: &str) -> Option<u16> {
    let mut client = RawClient::connect(teal.proxy).await;
    client
        .send(format!(
            "POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n{field}\r\n"
        ))
        .await;
    client.send(vec![b'u'; 20_000]).await;
    client.response(false).await.map(|r| r.status)
}

/// A client that pauses mid-body past the upstream's own body timeout (shorter than teal's
/// `client_body_timeout`) gets a 502 when the upstream closes, and the server, which only gave
/// up on a slow client, is not ejected: one such client could otherwise take a healthy server
/// out of its pool, on either path. An upstream that answers garbage then is still held
/// responsible: only a close before any byte of an answer is put down to the client.
#[tokio::test]
async fn an_upstream_that_gives_up_on_a_slow_client_is_not_ejected() {
    let text = config("raw", &[("raw", vec![impatient(b"").await])], "");
    let teal = Teal::start(&with_proxy(&text, "workers = 1")).await;
    for (path, field) in PATHS {
        assert_eq!(paused_upload(&teal, field).await, Some(502), "{path}");
        assert_ne!(teal.health_of("raw").await, "ejected", "{path}");
    }
    let text = config(
        "raw",
        &[("raw", vec![impatient(b"NOT HTTP AT ALL\r\n\r\n").await])],
        "",
    );
    for (path, field) in PATHS {
        let teal = Teal::start(&with_proxy(&text, "workers = 1")).await;
        assert_eq!(paused_upload(&teal, field).await, Some(502), "{path}");
        assert_eq!(teal.health_of("raw").await, "ejected", "{path}");
    }
}
