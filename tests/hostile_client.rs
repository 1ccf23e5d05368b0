//! Clients that send what an HTTP/1.1 server must refuse (RFC 9112), on both HTTP/1.1 paths:
//! teal's own path for plain requests and the hyper path (forced by an extra `Connection` token).
//! Each refusal is a 4xx or 5xx with a short reason, never reaches the upstream, and is never
//! held against a healthy server.

mod support;

use std::time::Duration;

use support::raw::*;
use support::*;

const VIA_HYPER: &str = "Connection: x-hyper\r\n";
const PATHS: [(&str, &str); 2] = [("own", ""), ("hyper", VIA_HYPER)];

/// teal in front of a scripted upstream that answers `<method> <path>`, with `proxy` lines.
async fn teal_on_scripted(proxy: &str) -> (Teal, Scripted) {
    let upstream = scripted(|req| vec![answer(req)]).await;
    let text = config("raw", &[("raw", vec![upstream.addr])], "");
    (Teal::start(&with_proxy(&text, proxy)).await, upstream)
}

/// Sends `bytes` on a new connection; the status of the first response, or 0 if the connection
/// closed without one.
async fn status_for(teal: &Teal, bytes: &str) -> u16 {
    let mut client = RawClient::connect(teal.proxy).await;
    client.send(bytes).await;
    client.response(false).await.map_or(0, |r| r.status)
}

/// RFC 9112 §3.2: a missing, repeated or invalid Host is a 400; so is an absolute-form target
/// with userinfo and the asterisk form on anything but OPTIONS. None reaches the upstream.
#[tokio::test]
async fn bad_hosts_and_targets_are_400() {
    let (teal, upstream) = teal_on_scripted("").await;
    let mut wrong = Vec::new();
    for (path, field) in PATHS {
        let cases = [
            ("no Host", format!("GET /a HTTP/1.1\r\n{field}\r\n")),
            (
                "two Hosts",
                format!("GET /a HTTP/1.1\r\nHost: x\r\nHost: y\r\n{field}\r\n"),
            ),
            (
                "empty Host",
                format!("GET /a HTTP/1.1\r\nHost:\r\n{field}\r\n"),
            ),
            (
                "malformed Host",
                format!("GET /a HTTP/1.1\r\nHost: a/b@c d\r\n{field}\r\n"),
            ),
            (
                "Host with userinfo",
                format!("GET /a HTTP/1.1\r\nHost: u@a\r\n{field}\r\n"),
            ),
            (
                "absolute-form with userinfo",
                format!("GET http://u@a/x HTTP/1.1\r\nHost: a\r\n{field}\r\n"),
            ),
            (
                "asterisk GET",
                format!("GET * HTTP/1.1\r\nHost: x\r\n{field}\r\n"),
            ),
        ];
        for (name, bytes) in cases {
            let status = status_for(&teal, &bytes).await;
            if status != 400 {
                wrong.push(format!("{name} on {path}: {status}"));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    assert!(upstream.received().is_empty(), "{:?}", upstream.received());
    // What stays valid: a host with a port, an IPv6 literal, HTTP/1.0 without Host, OPTIONS *.
    for (path, field) in PATHS {
        for ok in [
            format!("GET /p HTTP/1.1\r\nHost: shop.example:8080\r\n{field}\r\n"),
            format!("GET /p HTTP/1.1\r\nHost: [::1]:80\r\n{field}\r\n"),
            format!("GET /p HTTP/1.0\r\n{field}\r\n"),
            format!("OPTIONS * HTTP/1.1\r\nHost: x\r\n{field}\r\n"),
        ] {
            assert_eq!(status_for(&teal, &ok).await, 200, "{path}: {ok:?}");
        }
    }
}

/// RFC 9112 §6.1: a transfer coding teal does not implement gets 501 (only `chunked` is one it
/// does); RFC 9112 §2.3: a higher HTTP/1.x minor version is served as HTTP/1.1.
#[tokio::test]
async fn transfer_codings_and_minor_versions() {
    let (teal, upstream) = teal_on_scripted("").await;
    for (path, field) in PATHS {
        for coding in ["identity, chunked", "gzip, chunked"] {
            let bytes = format!(
                "POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: {coding}\r\n{field}\r\n5\r\nhello\r\n0\r\n\r\n"
            );
            assert_eq!(status_for(&teal, &bytes).await, 501, "{path}: {coding}");
        }
    }
    assert!(upstream.received().is_empty(), "{:?}", upstream.received());
    for (path, field) in PATHS {
        let mut client = RawClient::connect(teal.proxy).await;
        client
            .send(format!("GET /v HTTP/1.2\r\nHost: x\r\n{field}\r\n"))
            .await;
        let r = client.response(false).await.expect("a response");
        assert_eq!((r.status, r.text().as_str()), (200, "GET /v"), "{path}");
    }
}

/// A client that breaks its own request body (malformed chunks, closing mid-body, or sending too
/// slowly) gets 400 or 408, and the upstream server it was being sent to is not ejected for it.
#[tokio::test]
async fn client_body_errors_are_the_clients() {
    let (b, g) = (upstream("raw", "b").await, upstream("green", "g").await);
    let text = config("raw", &[("raw", vec![b.addr]), ("green", vec![g.addr])], "");
    let teal = Teal::start(&with_proxy(&text, "client_body_timeout = \"300ms\"")).await;
    let head = |framing: &str| format!("POST /up HTTP/1.1\r\nHost: x\r\n{framing}\r\n");

    let mut client = RawClient::connect(teal.proxy).await;
    client
        .send(head("Transfer-Encoding: chunked\r\n") + "5\r\nhello\r\nZZ\r\n")
        .await;
    let r = client.response(false).await.map(|r| r.status);
    assert_eq!(r, Some(400), "malformed chunked body");

    let mut client = RawClient::connect(teal.proxy).await;
    client.send(head("Content-Length: 100000\r\n")).await;
    client.send(vec![b'x'; 20_000]).await;
    client.tcp.shutdown_write().await;
    let r = client.response(false).await.map(|r| r.status);
    assert_eq!(r, Some(400), "client closed mid-body");

    let mut client = RawClient::connect(teal.proxy).await;
    client.send(head("Content-Length: 100000\r\n")).await;
    client.send(vec![b'x'; 20_000]).await;
    let r = client.response(false).await.map(|r| r.status);
    assert_eq!(r, Some(408), "a body slower than client_body_timeout");

    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_ne!(teal.health_of("raw").await, "ejected");
    assert_eq!(teal.text("/").await, "raw");
}

/// A client that sends its head and part of its body in one write and at once closes its
/// sending side gets 400 on both paths, never a silent close: teal may have read the whole of
/// what was sent, end of stream included, before it has even connected upstream.
#[tokio::test]
async fn a_body_cut_short_in_one_write_is_400_on_both_paths() {
    let (b, g) = (upstream("raw", "b").await, upstream("green", "g").await);
    let text = config("raw", &[("raw", vec![b.addr]), ("green", vec![g.addr])], "");
    let teal = Teal::start(&text).await;
    for connection in ["keep-alive", "x-hyper"] {
        for round in 0..20 {
            let mut client = RawClient::connect(teal.proxy).await;
            let mut bytes = format!(
                "POST /up HTTP/1.1\r\nHost: x\r\nConnection: {connection}\r\nContent-Length: 100000\r\n\r\n"
            )
            .into_bytes();
            bytes.extend_from_slice(&[b'x'; 1000]);
            client.send(bytes).await;
            client.tcp.shutdown_write().await;
            let r = client.response(false).await.map(|r| r.status);
            assert_eq!(r, Some(400), "{connection}, round {round}");
        }
    }
    assert_ne!(teal.health_of("raw").await, "ejected");
}

trait ShutdownWrite {
    async fn shutdown_write(&mut self);
}

impl ShutdownWrite for tokio::net::TcpStream {
    async fn shutdown_write(&mut self) {
        tokio::io::AsyncWriteExt::shutdown(self).await.unwrap();
    }
}
