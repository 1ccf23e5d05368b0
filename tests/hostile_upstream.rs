//! Upstreams that lie about framing or stall, on both HTTP/1.1 paths: teal's own path (plain
//! requests) and the hyper path (forced by an extra `Connection` token). What a client receives
//! is exactly one well-framed response per request, or a closed connection; a pooled upstream
//! connection never carries bytes from one exchange into another.

mod support;

use std::time::{Duration, Instant};

use support::raw::*;
use support::*;

/// Sent with a request, this moves it to the hyper path (any `Connection` token but
/// `keep-alive` and `close` does).
const VIA_HYPER: &str = "Connection: x-hyper\r\n";

/// Both paths, by name and the extra field that selects each.
const PATHS: [(&str, &str); 2] = [("own", ""), ("hyper", VIA_HYPER)];

/// A forged response an attacker-controlled upstream leaves on a pooled connection.
const FORGED: &str =
    "HTTP/1.1 200 OK\r\nSet-Cookie: session=attacker\r\nContent-Length: 6\r\n\r\nforged";

/// teal with one worker (so every client shares one upstream connection cache) in front of
/// `upstream` as pool `raw`; `proxy` lines go into `[proxy]`.
async fn teal_on(upstream: &Scripted, proxy: &str) -> Teal {
    let text = config("raw", &[("raw", vec![upstream.addr])], "");
    Teal::start(&with_proxy(&text, &format!("workers = 1\n{proxy}"))).await
}

/// The first response of each kind, complete by its own framing, followed (in a later segment)
/// by bytes nobody asked for.
fn poisoning(req: &Received) -> Vec<Step> {
    let first = match req.path.as_str() {
        "/poison/length" => "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        "/poison/204" => "HTTP/1.1 204 No Content\r\n\r\n",
        "/poison/304" => "HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\n\r\n",
        "/poison/head" => "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n",
        _ => return vec![answer(req)],
    };
    vec![
        write(first),
        pause(100),
        write(FORGED),
        Step::ExpectClose(Duration::from_secs(2)),
    ]
}

/// Response-queue poisoning: an upstream that sends a forged response after a complete one, in a
/// later segment, never gets it to another client. The next client that gets a pooled connection
/// reads the answer to its own request, whichever path either client is on, and teal closes the
/// poisoned connection as soon as the bytes arrive.
#[tokio::test]
async fn bytes_after_a_response_never_reach_another_client() {
    let upstream = scripted(poisoning).await;
    let teal = teal_on(&upstream, "").await;
    let mut failures = Vec::new();
    for kind in ["length", "204", "304", "head"] {
        for (first_path, first_field) in PATHS {
            for (next_path, next_field) in PATHS {
                let method = if kind == "head" { "HEAD" } else { "GET" };
                let mut victim = RawClient::connect(teal.proxy).await;
                victim
                    .send(format!(
                        "{method} /poison/{kind} HTTP/1.1\r\nHost: x\r\n{first_field}\r\n"
                    ))
                    .await;
                let first = victim.response(kind == "head").await.unwrap();
                // The forged bytes arrive 100 ms after the response.
                tokio::time::sleep(Duration::from_millis(300)).await;
                let mut innocent = RawClient::connect(teal.proxy).await;
                let r = innocent.get("/innocent", next_field).await;
                let case = format!("{kind}: {first_path} then {next_path}");
                if r.text() != "GET /innocent" || r.field("set-cookie").is_some() {
                    failures.push(format!("{case}: the next client read {r:?}"));
                }
                let r = victim.get("/again", first_field).await;
                if r.text() != "GET /again" {
                    failures.push(format!("{case}: the first client's next answer {r:?}"));
                }
                if first.status >= 500 {
                    failures.push(format!("{case}: the first answer was {first:?}"));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    upstream.assert_all_closed_by_teal(16).await;
}

/// Bytes that arrive in the same read as the end of a response close that upstream connection
/// too: they are never taken as the start of the next response.
#[tokio::test]
async fn bytes_in_the_same_segment_close_the_connection() {
    let upstream = scripted(|req| match req.path.as_str() {
        "/glued" => vec![
            write(format!(
                "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok{FORGED}"
            )),
            Step::ExpectClose(Duration::from_secs(2)),
        ],
        _ => vec![answer(req)],
    })
    .await;
    let teal = teal_on(&upstream, "").await;
    for (path, field) in PATHS {
        let mut client = RawClient::connect(teal.proxy).await;
        let r = client.get("/glued", field).await;
        assert_eq!(r.text(), "ok", "{path}");
        let r = RawClient::connect(teal.proxy)
            .await
            .get("/innocent", field)
            .await;
        assert_eq!(r.text(), "GET /innocent", "{path}");
    }
    assert_eventually!(
        upstream.events().len() == 2,
        Duration::from_secs(2),
        "{:?}",
        upstream.events()
    );
    assert_eq!(upstream.events(), ["closed by teal", "closed by teal"]);
}

/// Framing an upstream cannot be trusted with is refused or closed on both paths, never relayed
/// as a whole response on a connection that is then reused.
#[tokio::test]
async fn malformed_upstream_framing_is_never_relayed_as_valid() {
    let upstream = scripted(|req| {
        let bad = match req.path.as_str() {
            "/chunk-size-junk" => {
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5 junk\r\nhello\r\n0\r\n\r\n"
            }
            "/trailer-control" => {
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX-T: a\x01b\r\n\r\n"
            }
            "/http10-chunked" => {
                "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
            }
            _ => return vec![answer(req)],
        };
        vec![write(bad), Step::ExpectClose(Duration::from_secs(2))]
    })
    .await;
    let teal = teal_on(&upstream, "").await;
    let mut failures = Vec::new();
    for bad in ["/chunk-size-junk", "/trailer-control", "/http10-chunked"] {
        for (path, field) in PATHS {
            let mut client = RawClient::connect(teal.proxy).await;
            client
                .send(format!("GET {bad} HTTP/1.1\r\nHost: x\r\n{field}\r\n"))
                .await;
            match client.response(false).await {
                // A whole response: only teal's own 502 is acceptable.
                Some(r) if r.status == 502 => {}
                Some(r) => failures.push(format!("{bad} on {path}: relayed {r:?}")),
                None => {}
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    upstream.assert_all_closed_by_teal(6).await;
    // The pool is not poisoned either: a normal request works on each path.
    for (path, field) in PATHS {
        let r = RawClient::connect(teal.proxy)
            .await
            .get("/fine", field)
            .await;
        assert_eq!(r.text(), "GET /fine", "{path}");
    }
}

/// RFC 9112 §6.3: when `Transfer-Encoding: chunked` and `Content-Length` are both present, the
/// chunked framing wins and the Content-Length goes; the client gets the whole body.
#[tokio::test]
async fn chunked_wins_over_content_length() {
    let upstream = scripted(|req| match req.path.as_str() {
        "/both" => vec![write(
            "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
        )],
        _ => vec![answer(req)],
    })
    .await;
    let teal = teal_on(&upstream, "").await;
    for (path, field) in PATHS {
        let mut client = RawClient::connect(teal.proxy).await;
        let r = client.get("/both", field).await;
        assert_eq!(r.text(), "hello world", "{path}: {r:?}");
        assert_eq!(r.field("content-length"), None, "{path}: {r:?}");
        assert_eq!(
            client.get("/next", field).await.text(),
            "GET /next",
            "{path}"
        );
    }
}

/// A 204 never carries a Content-Length (RFC 9110 §8.6), and a 304 is sent without one on both
/// paths alike (hyper's server drops it; the RFC makes it optional).
#[tokio::test]
async fn no_content_length_on_204_and_304() {
    let upstream = scripted(|req| match req.path.as_str() {
        "/204" => vec![write(
            "HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n",
        )],
        "/304" => vec![write(
            "HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\nContent-Length: 12\r\n\r\n",
        )],
        _ => vec![answer(req)],
    })
    .await;
    let teal = teal_on(&upstream, "").await;
    for (path, field) in PATHS {
        let mut client = RawClient::connect(teal.proxy).await;
        for status in ["204", "304"] {
            let r = client.get(&format!("/{status}"), field).await;
            assert_eq!(r.status.to_string(), status, "{path}");
            assert_eq!(r.field("content-length"), None, "{path} {status}: {r:?}");
        }
        assert_eq!(
            client.get("/next", field).await.text(),
            "GET /next",
            "{path}"
        );
    }
}

/// An upstream that stalls in the middle of a body is cut off after `upstream_body_timeout`:
/// both connections close, the client does not wait for the upstream to give up.
#[tokio::test]
async fn a_stalled_response_body_is_cut_off() {
    let upstream = scripted(|req| match req.path.as_str() {
        "/stall" => vec![
            write("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789"),
            Step::ExpectClose(Duration::from_secs(5)),
        ],
        _ => vec![answer(req)],
    })
    .await;
    let teal = teal_on(&upstream, "upstream_body_timeout = \"300ms\"").await;
    for (path, field) in PATHS {
        let mut client = RawClient::connect(teal.proxy).await;
        client
            .send(format!("GET /stall HTTP/1.1\r\nHost: x\r\n{field}\r\n"))
            .await;
        let started = Instant::now();
        let (got, closed) = client.rest(Duration::from_secs(3)).await;
        let took = started.elapsed();
        assert!(
            closed,
            "{path}: the client connection is still open: {got:?}"
        );
        assert!(got.starts_with("HTTP/1.1 200"), "{path}: {got:?}");
        assert!(
            took < Duration::from_secs(2),
            "{path}: closed only after {took:?}"
        );
    }
    assert_eventually!(
        upstream.events().len() == 2,
        Duration::from_secs(2),
        "{:?}",
        upstream.events()
    );
    assert_eq!(upstream.events(), ["closed by teal", "closed by teal"]);
}
