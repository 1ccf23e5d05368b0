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

/// What the upstream answers for each path: a 302 with these fields.
fn redirects(req: &Received) -> Vec<Step> {
    let fields = match req.path.as_str() {
        "/sub" => "Location: /sub/\r\n",
        "/root" => "Location: /\r\n",
        "/query" => "Location: /?a=1\r\n",
        "/same-host" => "Location: http://shop.test/x\r\n",
        "/same-host-case" => "Location: HTTP://Shop.TEST/x?y\r\n",
        "/same-host-bare" => "Location: http://shop.test\r\n",
        "/other-host" => "Location: http://other.test/x\r\n",
        "/other-port" => "Location: http://shop.test:8080/x\r\n",
        "/relative" => "Location: next\r\n",
        "/dotdot" => "Location: ../x\r\n",
        "/network" => "Location: //other.test/x\r\n",
        "/doc" => "Content-Location: /doc\r\n",
        "/cookies" => concat!(
            "Set-Cookie: s=1; Path=/app; HttpOnly\r\n",
            "Set-Cookie: t=2; path=/\r\n",
            "Set-Cookie: u=3\r\n",
            "Set-Cookie: v=4;Domain=shop.test;PATH=/a/b;Secure\r\n",
        ),
        _ => "",
    };
    vec![write(format!(
        "HTTP/1.1 302 Found\r\n{fields}Content-Length: 0\r\n\r\n"
    ))]
}

/// For each upstream path: the field, its values on the default route (as the upstream sent
/// them), and through `/green`.
const CASES: &[(&str, &str, &[&str], &[&str])] = &[
    ("/sub", "location", &["/sub/"], &["/green/sub/"]),
    ("/root", "location", &["/"], &["/green/"]),
    ("/query", "location", &["/?a=1"], &["/green/?a=1"]),
    (
        "/same-host",
        "location",
        &["http://shop.test/x"],
        &["http://shop.test/green/x"],
    ),
    (
        "/same-host-case",
        "location",
        &["HTTP://Shop.TEST/x?y"],
        &["HTTP://Shop.TEST/green/x?y"],
    ),
    (
        "/same-host-bare",
        "location",
        &["http://shop.test"],
        &["http://shop.test/green/"],
    ),
    (
        "/other-host",
        "location",
        &["http://other.test/x"],
        &["http://other.test/x"],
    ),
    (
        "/other-port",
        "location",
        &["http://shop.test:8080/x"],
        &["http://shop.test:8080/x"],
    ),
    ("/relative", "location", &["next"], &["next"]),
    ("/dotdot", "location", &["../x"], &["../x"]),
    (
        "/network",
        "location",
        &["//other.test/x"],
        &["//other.test/x"],
    ),
    ("/doc", "content-location", &["/doc"], &["/green/doc"]),
    (
        "/cookies",
        "set-cookie",
        &[
            "s=1; Path=/app; HttpOnly",
            "t=2; path=/",
            "u=3",
            "v=4;Domain=shop.test;PATH=/a/b;Secure",
        ],
        &[
            "s=1; Path=/green/app; HttpOnly",
            "t=2; path=/green",
            "u=3",
            "v=4;Domain=shop.test;PATH=/green/a/b;Secure",
        ],
    ),
];

/// On a preview route, `Location`, `Content-Location` and `Set-Cookie`'s `Path` that point into
/// the upstream's own tree get the prefix back (nginx's `proxy_redirect` and
/// `proxy_cookie_path`), so the browser stays on the preview; other hosts, relative references
/// and the default route are left alone. Both paths, the same answers.
#[tokio::test]
async fn preview_redirects_and_cookie_paths_stay_under_the_prefix() {
    let upstream = scripted(redirects).await;
    let teal = teal_on(&upstream).await;
    let mut failures = Vec::new();
    for (name, via) in PATHS {
        let mut client = RawClient::connect(teal.proxy).await;
        for (path, field, live, preview) in CASES {
            for (target, want) in [(path.to_string(), live), (format!("/green{path}"), preview)] {
                client
                    .send(format!(
                        "GET {target} HTTP/1.1\r\nHost: shop.test\r\n{via}\r\n"
                    ))
                    .await;
                let r = client.response(false).await.expect("a response");
                let got = values(&r.head, field);
                if r.status != 302 || got != *want {
                    failures.push(format!(
                        "{name} {target}: {} {got:?}, want {want:?}",
                        r.status
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

/// An HTTP/2 client's preview route is compared with its `:authority` (it sends no `Host`).
#[tokio::test]
async fn h2_preview_redirects_stay_under_the_prefix() {
    let upstream = scripted(redirects).await;
    let teal = teal_on(&upstream).await;
    let tcp = TcpStream::connect(teal.proxy).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    for (target, want) in [
        (
            "http://shop.test/green/same-host",
            "http://shop.test/green/x",
        ),
        ("http://shop.test/green/sub", "/green/sub/"),
        ("http://shop.test/same-host", "http://shop.test/x"),
    ] {
        let req = Request::get(target).body(Full::new(Bytes::new())).unwrap();
        send.ready().await.unwrap();
        let res = send.send_request(req).await.unwrap();
        assert_eq!(res.status(), StatusCode::FOUND, "{target}");
        assert_eq!(res.headers()["location"], want, "{target}");
    }
}
