//! teal's own HTTP/1.1 path (src/h1.rs): the framings it relays without decoding, pipelining, and
//! the hand-over to the general path in the middle of a connection. The upstream here is scripted
//! byte for byte, so each framing is exactly what a real server could send.

mod support;

use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use support::raw::*;
use support::*;

/// An upstream that answers by path, with the framings an HTTP/1.1 server may use:
/// - `/chunked`: a chunked body with an extension and a trailer;
/// - `/close`: an HTTP/1.0 response delimited by closing the connection;
/// - `/interim`: `103 Early Hints` before the final response;
/// - `/conflict`: two different `Content-Length`s (teal must refuse it);
/// - `/echo`: the request as it arrived, head and body, as the response body;
/// - anything else: `<method> <path> <body length>` with a `Content-Length`, and a hop-by-hop
///   field listed in `Connection` that must not reach the client.
fn by_path(req: &Received) -> Vec<Step> {
    let response = match req.path.as_str() {
        "/echo" => format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{}{}",
            req.head.len() + req.body.len(),
            req.head,
            String::from_utf8_lossy(&req.body)
        ),
        "/chunked" => "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;note=x\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n".to_string(),
        "/close" => return vec![write("HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the upstream closes"), Step::Close],
        "/interim" => "HTTP/1.1 103 Early Hints\r\nLink: </style.css>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfinal".to_string(),
        "/conflict" => "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nabc".to_string(),
        _ => {
            let body = format!("{} {} {}", req.method, req.path, req.body.len());
            format!("HTTP/1.1 200 OK\r\nConnection: x-hop\r\nX-Hop: secret\r\nContent-Length: {}\r\n\r\n{body}", body.len())
        }
    };
    vec![write(response)]
}

/// teal with one pool, `raw`, of the [`by_path`] upstream, and `proxy` lines added to `[proxy]`;
/// with that upstream (it counts the connections it accepted).
async fn teal_on_scripted(proxy: &str) -> (Teal, Scripted) {
    let upstream = scripted(by_path).await;
    let text = config("raw", &[("raw", vec![upstream.addr])], "");
    let teal = Teal::start(&with_proxy(&text, proxy)).await;
    (teal, upstream)
}

/// Chunked bodies pass through whole (extension and trailer included) and their upstream
/// connection is reused; a body delimited by the upstream closing reaches the client chunked, so
/// the client's connection stays open; a 1xx before the final response is dropped; and a field
/// the upstream listed in `Connection` goes no further.
#[tokio::test]
async fn every_response_framing_reaches_the_client_whole() {
    let (teal, upstream) = teal_on_scripted("").await;
    let mut conn = Conn::open(teal.proxy).await;

    let r = conn.get("/chunked").await;
    assert_eq!((r.status, r.body.as_str()), (StatusCode::OK, "hello world"));
    assert!(
        r.headers.contains_key("date"),
        "a Date is added when missing"
    );
    let r = conn.get("/interim").await;
    assert_eq!((r.status, r.body.as_str()), (StatusCode::OK, "final"));
    assert_eq!(
        upstream.accepted(),
        1,
        "the connection that carried a chunked body is reused"
    );

    let r = conn.get("/close").await;
    assert_eq!(r.body, "until the upstream closes");
    assert_eq!(r.headers["transfer-encoding"], "chunked");
    assert!(
        conn.is_open(),
        "the client's connection outlives the upstream's"
    );

    let r = conn.get("/plain").await;
    assert_eq!(r.body, "GET /plain 0");
    assert!(!r.headers.contains_key("x-hop"), "{:?}", r.headers);
    assert!(!r.headers.contains_key("connection"), "{:?}", r.headers);
    assert_eq!(upstream.accepted(), 2, "a new one after the close");
}

/// An upstream response whose framing cannot be trusted becomes teal's 502, and the client's
/// connection goes on.
#[tokio::test]
async fn conflicting_content_lengths_are_a_502() {
    let (teal, _) = teal_on_scripted("").await;
    let mut conn = Conn::open(teal.proxy).await;
    let r = conn.get("/conflict").await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY);
    assert_eq!(r.body, "502 bad gateway: the upstream server failed\n");
    assert_eq!(conn.get("/after").await.body, "GET /after 0");
}

/// Requests sent back to back in one write are answered in order, each once.
#[tokio::test]
async fn pipelined_requests_are_answered_in_order() {
    let (teal, _) = teal_on_scripted("").await;
    let mut client = RawClient::connect(teal.proxy).await;
    client.send(
        b"GET /one HTTP/1.1\r\nHost: x\r\n\r\nGET /two HTTP/1.1\r\nHost: x\r\n\r\nGET /three HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    let (text, closed) = client.rest(Duration::from_secs(5)).await;
    assert!(
        closed,
        "teal closes after the request that asked it to: {text}"
    );
    let bodies: Vec<&str> = text
        .split("HTTP/1.1 200 OK\r\n")
        .skip(1)
        .map(|r| r.split("\r\n\r\n").nth(1).unwrap())
        .collect();
    assert_eq!(
        bodies,
        ["GET /one 0", "GET /two 0", "GET /three 0"],
        "{text}"
    );
    assert!(text.ends_with("GET /three 0"));
    assert!(text.contains("connection: close\r\n"), "{text}");
}

/// A request this path does not take (a body larger than its buffer) moves the connection to the
/// general path in the middle, without losing the request or the ones after it.
#[tokio::test]
async fn connection_moves_to_the_general_path_mid_way() {
    let (teal, upstream) = teal_on_scripted("").await;
    let mut conn = Conn::open(teal.proxy).await;
    assert_eq!(conn.get("/first").await.body, "GET /first 0");
    let post = Request::post("/order")
        .header("host", "x")
        .body(Full::new(Bytes::from(vec![b'x'; 20_000])))
        .unwrap();
    assert_eq!(conn.send(post).await.body, "POST /order 20000");
    assert_eq!(conn.get("/third").await.body, "GET /third 0");
    assert!(conn.is_open());
    assert_eq!(
        upstream.accepted(),
        1,
        "both paths share the idle upstream connection"
    );
}

/// The next response on `client`, which must come whole and framed by `Content-Length`: its head
/// and body.
async fn read_response(client: &mut RawClient) -> (String, String) {
    let r = client
        .response(false)
        .await
        .expect("a whole response before the connection closed");
    assert!(r.field("content-length").is_some(), "{}", r.head);
    (r.head, String::from_utf8(r.body).unwrap())
}

const POST_HEAD: &str =
    "POST /echo HTTP/1.1\r\nHost: x\r\nX-Spelled-So: 1\r\nContent-Length: 22\r\n\r\n";
const POST_BODY: &str = "{\"item\": 10, \"qty\": 2}";

/// A small body that comes with its head is forwarded on teal's own path (the header names keep
/// the client's spelling there; hyper would lowercase them), byte for byte, and a request
/// pipelined behind it is answered after it.
#[tokio::test]
async fn a_small_body_is_forwarded_whole_on_the_plain_path() {
    let (teal, upstream) = teal_on_scripted("").await;
    let mut client = RawClient::connect(teal.proxy).await;
    let pipelined = format!("{POST_HEAD}{POST_BODY}GET /after HTTP/1.1\r\nHost: x\r\n\r\n");
    client.send(pipelined).await;
    let (head, echoed) = read_response(&mut client).await;
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(echoed.starts_with("POST /echo HTTP/1.1\r\n"), "{echoed}");
    assert!(echoed.contains("\r\nX-Spelled-So: 1\r\n"), "{echoed}");
    assert!(echoed.contains("\r\nContent-Length: 22\r\n"), "{echoed}");
    assert!(
        echoed.ends_with(&format!("\r\n\r\n{POST_BODY}")),
        "{echoed}"
    );
    assert_eq!(read_response(&mut client).await.1, "GET /after 0");
    assert_eq!(upstream.accepted(), 1);
    assert_eventually!(
        teal.served().await == [2, 0],
        Duration::from_secs(2),
        "both on teal's own path: {:?}",
        teal.served().await
    );
}

/// A body that arrives after its head, in pieces, is waited for and still forwarded on teal's
/// own path; one slower than `header_timeout` goes to the general path, which streams it, and
/// arrives whole too.
#[tokio::test]
async fn a_late_body_is_waited_for_and_a_slow_one_handed_over() {
    let (teal, _) = teal_on_scripted("header_timeout = \"400ms\"").await;
    let (first, second) = POST_BODY.split_at(9);
    for (pause, own_path) in [
        (Duration::from_millis(50), true),
        (Duration::from_millis(700), false),
    ] {
        let before = teal.served().await;
        let mut client = RawClient::connect(teal.proxy).await;
        client.send(POST_HEAD).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        client.send(first).await;
        tokio::time::sleep(pause).await;
        client.send(second).await;
        let (head, echoed) = read_response(&mut client).await;
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert!(
            echoed.ends_with(&format!("\r\n\r\n{POST_BODY}")),
            "{echoed}"
        );
        let path = if own_path { "own" } else { "hyper" };
        assert_eq!(
            teal.path_since(before, Duration::from_secs(2)).await,
            path,
            "pause {pause:?}"
        );
    }
}

/// A POST with its body, then a GET, sent one byte per write: every way the bytes can be cut
/// between a head and its body is met on the way, the POST stays on teal's own path, and both
/// requests are answered once, in order.
#[tokio::test]
async fn a_body_dribbled_byte_by_byte_arrives_whole() {
    let (teal, _) = teal_on_scripted("").await;
    let mut client = RawClient::connect(teal.proxy).await;
    let stream = format!("{POST_HEAD}{POST_BODY}GET /after HTTP/1.1\r\nHost: x\r\n\r\n");
    for byte in stream.as_bytes() {
        client.send(std::slice::from_ref(byte)).await;
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let (_, echoed) = read_response(&mut client).await;
    assert!(
        echoed.ends_with(&format!("\r\n\r\n{POST_BODY}")),
        "{echoed}"
    );
    assert_eq!(read_response(&mut client).await.1, "GET /after 0");
    assert_eventually!(
        teal.served().await == [2, 0],
        Duration::from_secs(2),
        "both on teal's own path: {:?}",
        teal.served().await
    );
}
