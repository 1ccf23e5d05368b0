//! Field values teal rewrites on the way through, on both HTTP/1.1 paths (teal's own and hyper's,
//! forced by an extra `Connection` token) and from HTTP/2 clients: `Cookie` fields joined into one
//! for HTTP/1.1 upstreams, and a preview route's redirects and cookie paths kept under its prefix.

mod support;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use support::raw::*;
use support::*;
use tokio::net::TcpStream;

/// Sent with a request, this moves it to the hyper path.
const VIA_HYPER: &str = "Connection: x-hyper\r\n";

/// Both paths, by name and the extra field that selects each.
const PATHS: [(&str, &str); 2] = [("own", ""), ("hyper", VIA_HYPER)];

/// teal with one worker and pools `blue` (active) and `green`, both on `upstream`.
async fn teal_on(upstream: &Scripted) -> Teal {
    let pools = [
        ("blue", vec![upstream.addr]),
        ("green", vec![upstream.addr]),
    ];
    Teal::start(&with_proxy(&config("blue", &pools, ""), "workers = 1")).await
}

/// Every value of the fields called `name` in `head`, in order.
fn values(head: &str, name: &str) -> Vec<String> {
    head.split("\r\n")
        .skip(1)
        .filter_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
        .collect()
}

/// RFC 9113 §8.2.3: an HTTP/2 client may split `cookie` into several fields; an HTTP/1.1
/// upstream gets them as one `Cookie`, joined with "; " in order (else Django and Werkzeug read
/// one cookie `a="1,b=2,c=3"`).
#[tokio::test]
async fn h2_cookie_fields_reach_the_upstream_as_one() {
    let upstream = scripted(|req| vec![answer(req)]).await;
    let teal = teal_on(&upstream).await;
    let tcp = TcpStream::connect(teal.proxy).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    for target in ["http://shop.test/x", "http://shop.test/green/x"] {
        let req = Request::get(target)
            .header("cookie", "a=1")
            .header("cookie", "b=2")
            .header("cookie", "c=3")
            .body(Full::new(Bytes::new()))
            .unwrap();
        send.ready().await.unwrap();
        let res = send.send_request(req).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK, "{target}");
        let got = upstream.received().pop().unwrap();
        assert_eq!(got.path, "/x", "{target}");
        assert_eq!(values(&got.head, "cookie"), ["a=1; b=2; c=3"], "{target}");
    }
}

/// Several `Cookie` lines from an HTTP/1.1 client are joined the same way on both paths, so an
/// upstream sees the same head whichever path a request took (RFC 6265 §5.4: a user agent sends
/// one). One line passes as it is.
#[tokio::test]
async fn h1_cookie_lines_are_joined_on_both_paths() {
    let upstream = scripted(|req| vec![answer(req)]).await;
    let teal = teal_on(&upstream).await;
    for (name, via) in PATHS {
        let mut client = RawClient::connect(teal.proxy).await;
        let r = client
            .get("/x", &format!("{via}Cookie: a=1\r\nCookie: b=2; c=3\r\n"))
            .await;
        assert_eq!(r.status, 200, "{name}");
        let got = upstream.received().pop().unwrap();
        assert_eq!(values(&got.head, "cookie"), ["a=1; b=2; c=3"], "{name}");
        let r = client.get("/y", &format!("{via}Cookie: a=1, b\r\n")).await;
        assert_eq!(r.status, 200, "{name}");
        let got = upstream.received().pop().unwrap();
        assert_eq!(values(&got.head, "cookie"), ["a=1, b"], "{name}");
    }
}
