//! Routing through a real teal to real upstreams: default route, preview routes, allowlist,
//! forwarding headers, round robin, failover, 502/504, streaming, HTTP/2 from clients.

mod support;

use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// `/` and any non-preview path go to the active pool with path and query unchanged;
/// `/blueberry` is not a preview route.
#[tokio::test]
async fn default_route_goes_to_active_pool_unchanged() {
    let (_b, _g, teal) = two_pools("").await;
    assert_eq!(teal.text("/").await, "blue");
    let j = teal.get("/api/items?id=7&x=%20").await.json();
    assert_eq!(
        (j["pool"].as_str(), j["path"].as_str()),
        (Some("blue"), Some("/api/items?id=7&x=%20"))
    );
    let j = teal.get("/blueberry").await.json();
    assert_eq!(
        (j["pool"].as_str(), j["path"].as_str()),
        (Some("blue"), Some("/blueberry"))
    );
    let j = teal.get("/greenhouse/x").await.json();
    assert_eq!(
        (j["pool"].as_str(), j["path"].as_str()),
        (Some("blue"), Some("/greenhouse/x"))
    );
}

/// `/<pool>`, `/<pool>/` and `/<pool>/x?q=1` reach that pool with the prefix stripped.
#[tokio::test]
async fn preview_routes_strip_the_prefix() {
    let (_b, _g, teal) = two_pools("").await;
    assert_eq!(teal.text("/green").await, "green");
    assert_eq!(teal.text("/green/").await, "green");
    assert_eq!(teal.text("/blue/").await, "blue");
    for (path, pool, upstream_path) in [
        ("/green/x?q=1", "green", "/x?q=1"),
        ("/green?q=1", "green", "/?q=1"),
        ("/blue/a/b/", "blue", "/a/b/"),
    ] {
        // `/` itself answers plain text, so ask for the JSON echo of a deeper path where needed.
        if upstream_path.starts_with("/?") {
            let r = teal.get(path).await;
            assert_eq!(r.body.trim(), pool, "{path}");
            continue;
        }
        let j = teal.get(path).await.json();
        assert_eq!(j["pool"], pool, "{path}");
        assert_eq!(j["path"], upstream_path, "{path}");
    }
}

/// Preview routes are gated by `preview.allow` on the peer address; the default route is not.
/// A refused request never reaches an upstream.
#[tokio::test]
async fn preview_allowlist_by_peer_address() {
    let (blue, green, teal) = two_pools("\n[preview]\nallow = [\"127.0.0.2\"]\n").await;
    let mut allowed = Conn::open_from("127.0.0.2", teal.proxy).await;
    assert_eq!(allowed.get("/green/").await.body.trim(), "green");
    let mut refused = Conn::open_from("127.0.0.3", teal.proxy).await;
    let hits = (blue.hits(), green.hits());
    let r = refused.get("/green/x").await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(r.body.starts_with("403"), "{}", r.body);
    let r = refused.get("/blue").await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(
        (blue.hits(), green.hits()),
        hits,
        "nothing was sent upstream"
    );
    // X-Forwarded-For from the client is not believed.
    let req = Request::get("/green/")
        .header("host", "x")
        .header("x-forwarded-for", "127.0.0.2")
        .body(Full::new(Bytes::new()))
        .unwrap();
    assert_eq!(refused.send(req).await.status, StatusCode::FORBIDDEN);
    // The default route is open to everyone, on the same connection.
    assert_eq!(refused.get("/").await.body.trim(), "blue");
    assert_eq!(refused.get("/blueberry").await.status, StatusCode::OK);
}

/// Host passes through; X-Forwarded-For is appended; X-Forwarded-Proto/Host are set; hop-by-hop
/// request headers (and the ones named in Connection) do not reach the upstream.
#[tokio::test]
async fn forwarding_and_hop_by_hop_request_headers() {
    let (_b, _g, teal) = two_pools("").await;
    let req = Request::get("/headers")
        .header("host", "shop.example:8443")
        .header("x-forwarded-for", "203.0.113.7")
        .header("connection", "keep-alive, x-secret-hop")
        .header("x-secret-hop", "1")
        .header("keep-alive", "timeout=5")
        .header("proxy-authorization", "Basic eA==")
        .header("te", "trailers")
        .header("x-end-to-end", "kept")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let j = Conn::open(teal.proxy).await.send(req).await.json();
    let h = &j["headers"];
    assert_eq!(h["host"], "shop.example:8443");
    assert_eq!(h["x-forwarded-for"], "203.0.113.7, 127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-host"], "shop.example:8443");
    assert_eq!(h["x-end-to-end"], "kept");
    assert_eq!(h["te"], "trailers");
    for gone in ["x-secret-hop", "keep-alive", "proxy-authorization"] {
        assert!(h.get(gone).is_none(), "{gone} reached the upstream: {h}");
    }
}

/// Hop-by-hop headers of the upstream's response do not reach the client.
#[tokio::test]
async fn hop_by_hop_response_headers_are_stripped() {
    let upstream = support::raw::scripted(|_| {
        vec![support::raw::write("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive, X-Internal\r\nKeep-Alive: timeout=5\r\nX-Internal: secret\r\nX-App: yes\r\n\r\nok")]
    })
    .await;
    let teal = Teal::start(&config("raw", &[("raw", vec![upstream.addr])], "")).await;
    let r = teal.get("/").await;
    assert_eq!(r.body, "ok");
    assert_eq!(r.headers["x-app"], "yes");
    for gone in ["x-internal", "keep-alive"] {
        assert!(r.headers.get(gone).is_none(), "{gone} reached the client");
    }
}

/// Requests are spread round robin over a pool's servers.
#[tokio::test]
async fn round_robin_over_the_pool() {
    let (b1, b2, _g, pools) = blue_pair_and_green().await;
    let teal = Teal::start(&config("blue", &pools, "")).await;
    let mut names = Vec::new();
    for _ in 0..6 {
        names.push(
            teal.get("/who").await.json()["name"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    assert_eq!(names, ["b1", "b2", "b1", "b2", "b1", "b2"]);
    assert_eq!((b1.hits(), b2.hits()), (3, 3));
}

/// A server that refuses connections is skipped: every request still succeeds on the other.
#[tokio::test]
async fn connect_failure_moves_to_the_next_server() {
    let live = upstream("blue", "live").await;
    let dead = dead_addr().await;
    let g = upstream("green", "g1").await;
    let pools = vec![("blue", vec![dead, live.addr]), ("green", vec![g.addr])];
    let teal = Teal::start(&config("blue", &pools, "")).await;
    for _ in 0..4 {
        assert_eq!(teal.text("/").await, "blue");
    }
    // A request with a body is re-sent whole to the next server after a connect failure.
    for _ in 0..2 {
        let req = Request::post("/upload")
            .header("host", "x")
            .body(Full::new(Bytes::from(vec![b'x'; 100_000])))
            .unwrap();
        let j = Conn::open(teal.proxy).await.send(req).await.json();
        assert_eq!(j["body_bytes"], 100_000);
    }
    assert_eq!(live.hits(), 6);
}

/// No reachable server: 502 with a short text body. A server too slow to answer: 504.
#[tokio::test]
async fn bad_gateway_and_gateway_timeout() {
    let slow = upstream("green", "slow").await;
    let pools = vec![
        ("blue", vec![dead_addr().await, dead_addr().await]),
        ("green", vec![slow.addr]),
    ];
    let text = config("blue", &pools, "")
        .replace("response_timeout = \"5s\"", "response_timeout = \"300ms\"");
    let teal = Teal::start(&text).await;
    let r = teal.get("/").await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY);
    assert!(r.body.starts_with("502 bad gateway"), "{}", r.body);
    assert!(r.body.len() < 100);
    let r = teal.get("/green/x?delay_ms=2000").await;
    assert_eq!(r.status, StatusCode::GATEWAY_TIMEOUT);
    assert!(r.body.starts_with("504 gateway timeout"), "{}", r.body);
    // The same server answers in time when it is quick.
    assert_eq!(
        teal.get("/green/x?delay_ms=10").await.status,
        StatusCode::OK
    );
}

/// A 10 MB upload streams to the upstream, sent in chunks with no Content-Length.
#[tokio::test]
async fn upload_streams_through() {
    let (_b, _g, teal) = two_pools("").await;
    let chunks =
        (0..160).map(|_| Ok::<_, std::io::Error>(Frame::data(Bytes::from(vec![7u8; 65536]))));
    let body = StreamBody::new(futures_util::stream::iter(chunks));
    let req = Request::post("/upload")
        .header("host", "x")
        .body(body)
        .unwrap();
    let tcp = tokio::net::TcpStream::connect(teal.proxy).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    let res = send.send_request(req).await.unwrap();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    let j: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(j["body_bytes"], 160 * 65536);
    assert_eq!(j["headers"]["transfer-encoding"], "chunked");
}

/// A slow chunked download reaches the client chunk by chunk: the first chunk arrives while the
/// upstream is still holding back the rest (nothing is buffered whole).
#[tokio::test]
async fn download_streams_through() {
    let raw = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = raw.local_addr().unwrap();
    let (release_tx, release_rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let (mut s, _) = raw.accept().await.unwrap();
        let mut buf = [0u8; 4096];
        let _ = s.read(&mut buf).await;
        s.write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n")
            .await
            .unwrap();
        let _ = release_rx.await;
        s.write_all(b"4\r\nlast\r\n0\r\n\r\n").await.unwrap();
    });
    let teal = Teal::start(&config("raw", &[("raw", vec![addr])], "")).await;
    let tcp = tokio::net::TcpStream::connect(teal.proxy).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = Request::get("/")
        .header("host", "x")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let mut body = send.send_request(req).await.unwrap().into_body();
    let first = tokio::time::timeout(Duration::from_secs(5), body.frame())
        .await
        .expect("first chunk arrives before the upstream finishes")
        .unwrap()
        .unwrap();
    assert_eq!(first.into_data().unwrap(), "first");
    release_tx.send(()).unwrap();
    let rest = body.collect().await.unwrap().to_bytes();
    assert_eq!(rest, "last");
}

/// HTTP/2 with prior knowledge from the client, HTTP/1.1 to the upstream, Host from :authority.
#[tokio::test]
async fn h2c_client_to_http1_upstream() {
    let (_b, _g, teal) = two_pools("").await;
    let tcp = tokio::net::TcpStream::connect(teal.proxy).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    for (path, pool) in [
        ("http://h2.example/x", "blue"),
        ("http://h2.example/green/y", "green"),
    ] {
        let req = Request::get(path).body(Full::new(Bytes::new())).unwrap();
        let res = send.send_request(req).await.unwrap();
        assert_eq!(res.version(), http::Version::HTTP_2);
        let body = res.into_body().collect().await.unwrap().to_bytes();
        let j: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(j["pool"], pool);
        assert_eq!(j["headers"]["host"], "h2.example");
        assert_eq!(j["headers"]["x-forwarded-host"], "h2.example");
    }
}
