//! Hostile and broken clients, on raw sockets: limits, request smuggling and framing, the admin
//! plane's refusals, and X-Forwarded-For spoofing. Each test writes bytes, reads bytes, and checks
//! what the upstream received.

mod support;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use http::StatusCode;
use support::raw::*;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// teal in front of a recording upstream (blue; green is dead), with `extra_proxy` lines in
/// `[proxy]` and `tables` appended; with that upstream.
async fn teal_with(extra_proxy: &str, tables: &str) -> (Teal, Scripted) {
    let upstream = recording().await;
    let g = dead_addr().await;
    let text = with_proxy(
        &config(
            "blue",
            &[("blue", vec![upstream.addr]), ("green", vec![g])],
            "",
        ),
        extra_proxy,
    ) + tables;
    (Teal::start(&text).await, upstream)
}

/// Every request the upstream received, as `<method> <target> body=<length of its data>`.
fn requests_seen(upstream: &Scripted) -> Vec<String> {
    upstream
        .received()
        .iter()
        .map(|r| format!("{} {} body={}", r.method, r.path, r.data().len()))
        .collect()
}

/// Over-large heads, too many headers, over-long targets and over-large bodies get 431, 414
/// and 413, never reach the upstream, and are counted.
#[tokio::test]
async fn limits_answer_the_right_status() {
    let (teal, upstream) =
        teal_with("", "\n[limits]\nmax_body_bytes = 1000\nmax_headers = 20\n").await;
    let big = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(70_000)
    );
    let (r, _) = send_raw(teal.proxy, big.as_bytes()).await;
    assert_eq!(status_of(&r), 431, "{r:.200}");
    let many: String = (0..30).map(|i| format!("X-H{i}: v\r\n")).collect();
    let (r, _) = send_raw(
        teal.proxy,
        format!("GET / HTTP/1.1\r\nHost: x\r\n{many}\r\n").as_bytes(),
    )
    .await;
    assert_eq!(status_of(&r), 431, "{r:.200}");
    let long = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "p".repeat(9000));
    let (r, _) = send_raw(teal.proxy, long.as_bytes()).await;
    assert_eq!(status_of(&r), 414, "{r:.200}");
    assert!(r.contains("414 request target too long"));
    let declared = "POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 2000\r\n\r\n";
    let (r, _) = send_raw(teal.proxy, declared.as_bytes()).await;
    assert_eq!(status_of(&r), 413, "{r:.200}");
    let chunk = format!("7d0\r\n{}\r\n0\r\n\r\n", "b".repeat(2000));
    let chunked =
        format!("POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n{chunk}");
    let (r, _) = send_raw(teal.proxy, chunked.as_bytes()).await;
    assert_eq!(status_of(&r), 413, "{r:.200}");
    // Within the limits everything passes.
    let ok = format!(
        "POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{}",
        "c".repeat(1000)
    );
    let (r, _) = send_raw(teal.proxy, ok.as_bytes()).await;
    assert_eq!(status_of(&r), 200, "{r:.200}");
    let seen = requests_seen(&upstream);
    assert!(
        seen.iter().all(|l| l.ends_with("body=1000")),
        "refused requests reached the upstream: {seen:?}"
    );
    assert_eq!(teal.rejected("uri_too_long").await, 1);
    assert_eq!(teal.rejected("body_too_large").await, 2);
    assert_eq!(teal.rejected("header_too_large").await, 2);
}

/// At `max_connections`, further connections wait (they are not refused or dropped) and are
/// served as soon as a slot frees up.
#[tokio::test]
async fn connections_over_the_limit_wait_their_turn() {
    let (teal, _) = teal_with("", "\n[limits]\nmax_connections = 2\n").await;
    let mut a = Conn::open(teal.proxy).await;
    let mut b = Conn::open(teal.proxy).await;
    assert_eq!(a.get("/").await.status, StatusCode::OK);
    assert_eq!(b.get("/").await.status, StatusCode::OK);
    let proxy = teal.proxy;
    let third = tokio::spawn(async move { Conn::open(proxy).await.get("/").await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !third.is_finished(),
        "a third connection was served over the limit"
    );
    drop(a);
    let r = tokio::time::timeout(Duration::from_secs(3), third)
        .await
        .expect("the waiting connection was served once a slot freed")
        .unwrap();
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(b.get("/").await.status, StatusCode::OK);
}

/// 200 slowloris clients trickling request heads do not keep a normal client from being served,
/// and each is closed after `header_timeout`.
#[tokio::test]
async fn slowloris_does_not_starve_others() {
    let (teal, upstream) = teal_with("header_timeout = \"1s\"", "").await;
    let mut slow = Vec::new();
    for _ in 0..200 {
        let mut s = TcpStream::connect(teal.proxy).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            .await
            .unwrap();
        slow.push(s);
    }
    let started = Instant::now();
    let r = teal.get("/").await;
    let took = started.elapsed();
    assert_eq!(r.status, StatusCode::OK);
    println!("normal request beside 200 slowloris clients: {took:?}");
    assert!(took < Duration::from_secs(1), "took {took:?}");
    // All 200 are closed by the header timeout.
    tokio::time::sleep(Duration::from_millis(1600)).await;
    let mut closed = 0;
    for s in &mut slow {
        let mut buf = [0u8; 64];
        if let Ok(Ok(0)) = tokio::time::timeout(Duration::from_millis(50), s.read(&mut buf)).await {
            closed += 1;
        }
    }
    assert_eq!(closed, 200);
    assert_eq!(upstream.received().len(), 1);
    assert!(teal.rejected("header_timeout").await >= 200);
}

/// Smuggling and framing attacks: each is refused (4xx, connection closed where framing is in
/// doubt), and the upstream never sees a request smuggled inside another.
#[tokio::test]
async fn smuggling_attempts_never_reach_the_upstream() {
    let (teal, upstream) = teal_with("", "").await;
    let smuggled = "GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n";
    let vectors: Vec<(&str, String)> = vec![
        ("CL and TE", format!("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{smuggled}")),
        ("differing CLs", format!("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nContent-Length: 40\r\n\r\n{smuggled}")),
        ("xchunked", format!("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n{smuggled}")),
        ("TE with space", format!("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n{smuggled}")),
        ("chunked, identity", format!("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n{smuggled}")),
        ("folded TE", format!("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n{smuggled}")),
        ("NUL in header", format!("GET / HTTP/1.1\r\nHost: x\r\nX-A: a\0b\r\n\r\n{smuggled}")),
        ("CR in header", format!("GET / HTTP/1.1\r\nHost: x\r\nX-A: a\rb\r\n\r\n{smuggled}")),
        ("invalid method", format!("G(T / HTTP/1.1\r\nHost: x\r\n\r\n{smuggled}")),
        ("HTTP/0.9", "GET /smuggled\r\n\r\n".to_string()),
        ("space in path", format!("GET /a b HTTP/1.1\r\nHost: x\r\n\r\n{smuggled}")),
    ];
    let mut wrong = Vec::new();
    for (name, bytes) in &vectors {
        let (r, closed) = send_raw(teal.proxy, bytes.as_bytes()).await;
        let status = status_of(&r);
        // CL with TE: hyper follows RFC 9112 §6.1 (TE wins, Content-Length is dropped) and closes
        // the connection after answering, so the bytes behind the body are never read.
        let refused = (400..500).contains(&status) || (r.is_empty() && closed);
        let ok = closed && (refused || *name == "CL and TE");
        if !ok {
            wrong.push(format!("{name}: closed={closed} {r:.120}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "not refused and closed:\n{}",
        wrong.join("\n")
    );
    let seen = requests_seen(&upstream);
    assert!(
        !seen.iter().any(|l| l.contains("smuggled")),
        "smuggled: {seen:?}"
    );
    // An absolute-form target naming another host than Host is refused; a matching one passes.
    let (r, _) = send_raw(
        teal.proxy,
        b"GET http://evil.test/smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&r), 400, "{r:.200}");
    let (r, _) = send_raw(teal.proxy, b"GET http://x/fine HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(status_of(&r), 200, "{r:.200}");
    // CONNECT is refused too.
    let (r, _) = send_raw(
        teal.proxy,
        b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&r), 405, "{r:.200}");
}

/// The admin plane: `allow` refuses other addresses (even /healthz), and repeated wrong tokens
/// get 429 (the right one is still accepted: see tests/admin.rs).
#[tokio::test]
async fn admin_plane_refusals() {
    let (b, g) = (upstream("blue", "b").await, upstream("green", "g").await);
    let teal = Teal::start(&config(
        "blue",
        &blue_green(&b, &g),
        "allow = [\"10.0.0.0/8\"]\n",
    ))
    .await;
    for path in ["/healthz", "/metrics", "/status"] {
        let r = teal.admin("GET", path, "", None).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{path}");
        assert!(r.json()["error"].is_string());
    }

    let teal = Teal::start(&config("blue", &blue_green(&b, &g), "token = \"right\"\n")).await;
    for _ in 0..teal::admin::MAX_FAILURES {
        let r = teal.admin("GET", "/status", "", Some("wrong")).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    }
    let r = teal.admin("GET", "/status", "", Some("wrong")).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.body);
    assert!(r.headers.contains_key("retry-after"));
    // Health checks and scrapes are not locked out.
    assert_eq!(
        teal.admin("GET", "/healthz", "", None).await.status,
        StatusCode::OK
    );
}

/// Behind a trusted proxy the client address comes from X-Forwarded-For; from anyone else the
/// header is ignored, so it cannot be used to reach preview routes.
#[tokio::test]
async fn forwarded_for_is_believed_only_from_trusted_proxies() {
    let (b, g) = (upstream("blue", "b").await, upstream("green", "g").await);
    let text = with_proxy(
        &config("blue", &blue_green(&b, &g), ""),
        "trusted_proxies = [\"127.0.0.3\"]",
    ) + "\n[preview]\nallow = [\"127.0.0.2\"]\n";
    let teal = Teal::start(&text).await;
    let get = |from: &'static str, xff: Option<&'static str>| {
        let proxy = teal.proxy;
        async move {
            let mut req = http::Request::get("/green/").header("host", "x");
            if let Some(v) = xff {
                req = req.header("x-forwarded-for", v);
            }
            let req = req
                .body(http_body_util::Full::new(bytes::Bytes::new()))
                .unwrap();
            Conn::open_from(from, proxy).await.send(req).await.status
        }
    };
    // A client spoofing an allowed address is not believed.
    assert_eq!(
        get("127.0.0.4", Some("127.0.0.2")).await,
        StatusCode::FORBIDDEN
    );
    // The trusted proxy forwarding for the allowed client is.
    assert_eq!(get("127.0.0.3", Some("127.0.0.2")).await, StatusCode::OK);
    // Right to left: the address the trusted proxy appended wins over one the client sent.
    assert_eq!(
        get("127.0.0.3", Some("127.0.0.2, 127.0.0.9")).await,
        StatusCode::FORBIDDEN
    );
    // The trusted proxy without a header is itself the client (not allowed).
    assert_eq!(get("127.0.0.3", None).await, StatusCode::FORBIDDEN);
    assert_eq!(
        b.hits.load(Ordering::SeqCst) + g.hits.load(Ordering::SeqCst),
        1
    );
}

/// `h2_max_concurrent_streams` caps the streams of one HTTP/2 connection: with a limit of 2, four
/// slow requests opened at once on one connection never have more than two in flight; the others
/// are refused with RST_STREAM(REFUSED_STREAM), which tells the client they were not processed
/// and are safe to retry (RFC 9113 §8.7), and never reach an upstream.
#[tokio::test]
async fn h2_streams_are_capped_per_connection() {
    let (b, g) = (upstream("blue", "b").await, upstream("green", "g").await);
    let text =
        config("blue", &blue_green(&b, &g), "") + "\n[limits]\nh2_max_concurrent_streams = 2\n";
    let teal = Teal::start(&text).await;
    let tcp = TcpStream::connect(teal.proxy).await.unwrap();
    let (send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let mut send = send.clone();
        tasks.push(tokio::spawn(async move {
            let req = http::Request::get("http://h2.test/x?delay_ms=400")
                .body(http_body_util::Full::new(bytes::Bytes::new()))
                .unwrap();
            send.ready().await.unwrap();
            send.send_request(req).await.map(|r| r.status())
        }));
    }
    let mut most = 0;
    while !tasks.iter().all(|t| t.is_finished()) {
        let s = teal.admin("GET", "/status", "", None).await.json();
        most = most.max(s["pools"]["blue"]["in_flight"].as_u64().unwrap());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(status) => {
                assert_eq!(status, StatusCode::OK);
                ok += 1;
            }
            Err(e) => assert!(format!("{e:?}").contains("REFUSED_STREAM"), "{e:?}"),
        }
    }
    assert!(most <= 2, "{most} streams in flight at once");
    assert!(ok >= 2, "only {ok} streams served");
    assert_eq!(
        b.hits.load(Ordering::SeqCst),
        ok,
        "refused streams reached the upstream"
    );
}
