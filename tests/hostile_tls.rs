//! Hostile clients and upstreams on the HTTPS listener: a ClientHello sent byte by byte, garbage
//! or plain HTTP where a ClientHello belongs, handshakes that never finish, requests trickled in
//! over TLS, clients that leave without close_notify, lying request framing, and an upstream
//! that sends bytes after a response. Each gets a clean close (a TLS alert at most) or the same
//! answer as on the plain listener, never a panic, and after each a normal HTTPS request still
//! gets its 200.

mod support;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use support::raw::*;
use support::tls::{client_config, connect, get, tls_table, TestCa};
use support::*;

/// The name the test certificate is for.
const NAME: &str = "app.test";

/// Sent with a request, this moves it to the hyper path (any `Connection` token but
/// `keep-alive` and `close` does).
const VIA_HYPER: &str = "Connection: x-hyper\r\n";

/// Both HTTP/1.1 paths, by name and the extra field that selects each.
const PATHS: [(&str, &str); 2] = [("own", ""), ("hyper", VIA_HYPER)];

/// teal with one worker and a certificate for [`NAME`], in front of `upstream` as pool `raw`;
/// `proxy` lines go into `[proxy]`.
async fn tls_teal(ca: &TestCa, upstream: &Scripted, proxy: &str) -> Teal {
    let dir = tempfile::tempdir().unwrap();
    ca.leaf(&[NAME]).write(dir.path(), "app");
    let text = config(
        "raw",
        &[("raw", vec![upstream.addr])],
        &tls_table(&[("app.pem", "app.key")], ""),
    );
    let text = with_proxy(&text, &format!("workers = 1\n{proxy}"));
    std::fs::write(dir.path().join("teal.toml"), text).unwrap();
    Teal::start_in(dir).await
}

/// [`tls_teal`] (with `proxy` lines) in front of an upstream that [`answer`]s every request: the
/// CA its certificate is from, the upstream, teal and teal's HTTPS address.
async fn echo_teal(proxy: &str) -> (TestCa, Scripted, Teal, SocketAddr) {
    let ca = TestCa::new();
    let upstream = scripted(|req| vec![answer(req)]).await;
    let teal = tls_teal(&ca, &upstream, proxy).await;
    let addr = teal.tls.unwrap();
    (ca, upstream, teal, addr)
}

/// A GET of `target` for [`NAME`], with `field` (a header line, or nothing) and no body.
fn get_request(target: &str, field: &str) -> String {
    format!("GET {target} HTTP/1.1\r\nHost: app.test\r\n{field}\r\n")
}

/// A client configuration trusting `ca` that speaks HTTP/1.1.
fn h1_config(ca: &TestCa) -> Arc<rustls::ClientConfig> {
    client_config(ca, &[b"http/1.1"], rustls::DEFAULT_VERSIONS)
}

/// Asserts that a normal HTTPS request, over both HTTP/1.1 and HTTP/2, still gets its answer.
async fn still_serves(addr: SocketAddr, ca: &TestCa, after: &str) {
    for alpn in [&b"http/1.1"[..], &b"h2"[..]] {
        let cfg = client_config(ca, &[alpn], rustls::DEFAULT_VERSIONS);
        let answer = tokio::time::timeout(Duration::from_secs(5), get(addr, NAME, "/ok", cfg))
            .await
            .unwrap_or_else(|_| panic!("no answer within 5 s after {after}"));
        assert_eq!(answer.status, 200, "after {after}: {}", answer.body);
        assert_eq!(answer.body, "GET /ok", "after {after}");
    }
}

/// The bytes of a ClientHello for [`NAME`], as a rustls client would send them first, and the
/// client that made it (to finish the handshake with).
fn client_hello(ca: &TestCa) -> (rustls::ClientConnection, Vec<u8>) {
    let name = ServerName::try_from(NAME).unwrap();
    let mut conn = rustls::ClientConnection::new(h1_config(ca), name).unwrap();
    let mut hello = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut hello).unwrap();
    }
    assert_eq!(hello[0], 0x16, "a handshake record");
    (conn, hello)
}

/// How a connection ended, as the client saw it.
#[derive(Debug)]
struct Ending {
    /// Everything read before the end.
    bytes: Vec<u8>,
    /// Whether the connection ended (EOF or reset) rather than going quiet for `within`.
    closed: bool,
    /// How long after the call it ended.
    after: Duration,
}

/// Reads from `tcp` until the connection ends or `within` passes.
async fn ending(tcp: &mut TcpStream, within: Duration) -> Ending {
    let started = Instant::now();
    let mut bytes = Vec::new();
    let mut more = [0u8; 4096];
    let closed = loop {
        match tokio::time::timeout_at((started + within).into(), tcp.read(&mut more)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(n)) => bytes.extend_from_slice(&more[..n]),
            Err(_) => break false,
        }
    };
    Ending {
        bytes,
        closed,
        after: started.elapsed(),
    }
}

/// Asserts that `e` is a clean refusal of a handshake: the connection closed, after nothing or
/// after TLS alert records only (content type 21, two-byte body each).
fn assert_refused(e: &Ending, case: &str) {
    assert!(e.closed, "{case}: the connection is still open: {e:?}");
    let mut rest = &e.bytes[..];
    while !rest.is_empty() {
        assert!(
            rest.len() >= 5 && rest[0] == 0x15,
            "{case}: something other than an alert came back: {:?}",
            String::from_utf8_lossy(&e.bytes)
        );
        let len = u16::from_be_bytes([rest[3], rest[4]]) as usize;
        assert!(rest.len() >= 5 + len, "{case}: a cut alert: {e:?}");
        rest = &rest[5 + len..];
    }
}

/// The number after `line` (a metric with its labels) in the Prometheus text `metrics`.
fn sample(metrics: &str, line: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(line)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// A ClientHello that arrives one byte per TCP segment still completes its handshake, and the
/// request after it gets its answer; garbage, plain HTTP and an unfinished handshake are each
/// closed (with an alert at most); and `/metrics` counts the handshakes by outcome.
#[tokio::test]
async fn bad_handshakes_are_closed_and_the_service_stays_up() {
    let (ca, _upstream, teal, addr) = echo_teal("").await;

    // A ClientHello byte by byte, then the rest of the handshake and a request, all by rustls
    // over a blocking socket (its own thread, so teal keeps running on this one).
    let (mut conn, hello) = client_hello(&ca);
    let answer = tokio::task::spawn_blocking(move || {
        let mut tcp = std::net::TcpStream::connect(addr).unwrap();
        tcp.set_nodelay(true).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        for byte in &hello {
            tcp.write_all(std::slice::from_ref(byte)).unwrap();
            std::thread::sleep(Duration::from_millis(1));
        }
        let mut tls = rustls::Stream::new(&mut conn, &mut tcp);
        tls.write_all(b"GET /split HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut answer = Vec::new();
        // teal closes after `Connection: close`; with or without close_notify, what came is kept.
        let _ = tls.read_to_end(&mut answer);
        String::from_utf8_lossy(&answer).into_owned()
    })
    .await
    .unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
    assert!(answer.ends_with("GET /split"), "{answer:?}");
    still_serves(addr, &ca, "a ClientHello byte by byte").await;

    let garbage: Vec<u8> = (0..200u32).map(|i| (i * 37 + 11) as u8).collect();
    let cases: [(&str, &[u8]); 3] = [
        ("garbage", &garbage),
        ("plain HTTP", b"GET / HTTP/1.1\r\nHost: app.test\r\n\r\n"),
        (
            "an alert-typed record",
            &[0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x28],
        ),
    ];
    for (case, bytes) in cases {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.write_all(bytes).await.unwrap();
        let e = ending(&mut tcp, Duration::from_secs(5)).await;
        assert_refused(&e, case);
        still_serves(addr, &ca, case).await;
    }

    let metrics = teal.admin("GET", "/metrics", "", None).await.body;
    let ok = sample(&metrics, "teal_tls_handshakes_total{outcome=\"ok\"}");
    let error = sample(&metrics, "teal_tls_handshakes_total{outcome=\"error\"}");
    // The byte-by-byte one and two per still_serves.
    assert!(ok >= 9.0, "ok handshakes: {ok}\n{metrics}");
    assert!(error >= 3.0, "failed handshakes: {error}\n{metrics}");
}

/// A handshake that never finishes (nothing sent, or half a ClientHello) is closed after
/// `header_timeout`, not before and not much after, and counted as a timeout.
#[tokio::test]
async fn an_unfinished_handshake_is_closed_after_header_timeout() {
    let (ca, _upstream, teal, addr) = echo_teal("header_timeout = \"1s\"").await;
    let (_, hello) = client_hello(&ca);
    let half = &hello[..hello.len() / 2];
    for (case, bytes) in [("nothing sent", &[][..]), ("half a ClientHello", half)] {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.write_all(bytes).await.unwrap();
        let e = ending(&mut tcp, Duration::from_secs(5)).await;
        assert_refused(&e, case);
        assert!(
            e.after >= Duration::from_millis(900),
            "{case}: closed after only {:?}",
            e.after
        );
        still_serves(addr, &ca, case).await;
    }
    let metrics = teal.admin("GET", "/metrics", "", None).await.body;
    let timeouts = sample(&metrics, "teal_tls_handshakes_total{outcome=\"timeout\"}");
    assert_eq!(timeouts, 2.0, "{metrics}");
}

/// A TLS client of its own, for bytes a test chooses (HTTP/1.1 by ALPN).
struct TlsRaw {
    stream: TlsStream<TcpStream>,
}

impl TlsRaw {
    async fn connect(addr: SocketAddr, ca: &TestCa) -> TlsRaw {
        let stream = connect(addr, NAME, h1_config(ca)).await.unwrap();
        stream.get_ref().0.set_nodelay(true).unwrap();
        TlsRaw { stream }
    }

    async fn send(&mut self, bytes: impl AsRef<[u8]>) {
        self.stream.write_all(bytes.as_ref()).await.unwrap();
        self.stream.flush().await.unwrap();
    }

    /// Sends a GET of `target` for [`NAME`] with the `field` line that picks its path.
    async fn get(&mut self, target: &str, field: &str) {
        self.send(get_request(target, field)).await;
    }

    /// Reads until the connection ends (with close_notify or without) or is quiet for 1 s: what
    /// was read, and whether it ended.
    async fn rest(&mut self) -> (String, bool) {
        let mut out = Vec::new();
        let mut more = [0u8; 4096];
        let closed = loop {
            match tokio::time::timeout(Duration::from_secs(1), self.stream.read(&mut more)).await {
                Ok(Ok(n)) if n > 0 => out.extend_from_slice(&more[..n]),
                Ok(_) => break true,
                Err(_) => break false,
            }
        };
        (String::from_utf8_lossy(&out).into_owned(), closed)
    }

    /// Reads one response framed by Content-Length: its status and body.
    async fn response(&mut self) -> (u16, String) {
        let (head, body) = support::raw::read_response(&mut self.stream).await;
        let status = head
            .get(9..12)
            .and_then(|s| s.parse().ok())
            .expect("a status");
        (status, body)
    }
}

/// A request that arrives over TLS one byte per record, on both HTTP/1.1 paths, gets its answer,
/// and so does the next one on the same connection.
#[tokio::test]
async fn a_request_trickled_in_over_tls_is_answered() {
    let (ca, _upstream, _teal, addr) = echo_teal("").await;
    for (path, field) in PATHS {
        let mut client = TlsRaw::connect(addr, &ca).await;
        let request = get_request("/slow", field);
        for byte in request.as_bytes() {
            client.send([*byte]).await;
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        assert_eq!(client.response().await, (200, "GET /slow".into()), "{path}");
        client.get("/next", field).await;
        assert_eq!(client.response().await, (200, "GET /next".into()), "{path}");
    }
    still_serves(addr, &ca, "requests byte by byte").await;
}

/// Requests pipelined in one TLS record (the second one's bytes already decrypted and waiting
/// in the record layer, not on the socket) are all answered, in order, on both HTTP/1.1 paths,
/// a POST with its body among them.
#[tokio::test]
async fn pipelined_requests_in_one_record_are_all_answered() {
    let (ca, upstream, _teal, addr) = echo_teal("").await;
    for (path, field) in PATHS {
        let mut client = TlsRaw::connect(addr, &ca).await;
        let one = |target: &str| get_request(target, field);
        let post =
            format!("POST /p3 HTTP/1.1\r\nHost: app.test\r\nContent-Length: 5\r\n{field}\r\nhello");
        client
            .send(format!("{}{}{post}{}", one("/p1"), one("/p2"), one("/p4")))
            .await;
        for want in ["GET /p1", "GET /p2", "POST /p3", "GET /p4"] {
            assert_eq!(client.response().await, (200, want.into()), "{path}");
        }
    }
    let bodies: Vec<Vec<u8>> = upstream
        .received()
        .iter()
        .filter(|r| r.path == "/p3")
        .map(|r| r.data())
        .collect();
    assert_eq!(bodies, [b"hello".to_vec(), b"hello".to_vec()]);
    still_serves(addr, &ca, "pipelined requests").await;
}

/// Clients that go without close_notify: after reading their answer, and at once after sending
/// a request (the TCP connection shut, no TLS close). teal ends its side and keeps serving.
#[tokio::test]
async fn clients_that_leave_without_close_notify() {
    let (ca, _upstream, _teal, addr) = echo_teal("").await;
    for (path, field) in PATHS {
        let mut client = TlsRaw::connect(addr, &ca).await;
        client.get("/a", field).await;
        assert_eq!(client.response().await, (200, "GET /a".into()), "{path}");
        // Dropping a tokio-rustls stream closes the socket without a close_notify.
        drop(client);

        let mut client = TlsRaw::connect(addr, &ca).await;
        client.get("/b", field).await;
        client.stream.get_mut().0.shutdown().await.unwrap();
        let (got, closed) = client.rest().await;
        assert!(
            closed,
            "{path}: teal kept a truncated TLS connection open: {got:?}"
        );
        assert!(
            got.is_empty() || got.starts_with("HTTP/1.1 200"),
            "{path}: {got:?}"
        );
    }
    still_serves(addr, &ca, "clients gone without close_notify").await;
}

/// Request framing a server must refuse (RFC 9112 §6) gets over TLS the same answer as on the
/// plain listener, on both HTTP/1.1 paths, and never reaches the upstream.
#[tokio::test]
async fn lying_request_framing_gets_the_plain_answer() {
    let (ca, upstream, teal, addr) = echo_teal("").await;
    let cases = [
        (
            "two different Content-Lengths",
            "Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        ),
        ("a bad Content-Length", "Content-Length: 5x\r\n\r\nhello"),
        (
            "a bad chunk size",
            "Transfer-Encoding: chunked\r\n\r\nZZ\r\nhello\r\n0\r\n\r\n",
        ),
        (
            "Content-Length with a bad chunked body",
            "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nZZ\r\n\r\n",
        ),
    ];
    let mut wrong = Vec::new();
    for (path, field) in PATHS {
        for (case, rest) in cases {
            let bytes = format!("POST /up HTTP/1.1\r\nHost: app.test\r\n{field}{rest}");
            let (plain, _) = send_raw(teal.proxy, &bytes).await;
            let mut client = TlsRaw::connect(addr, &ca).await;
            client.send(&bytes).await;
            let (tls, _) = client.rest().await;
            let (plain, tls) = (status_of(&plain), status_of(&tls));
            if plain != 400 || tls != plain {
                wrong.push(format!("{case} on {path}: plain {plain}, TLS {tls}"));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    assert!(upstream.received().is_empty(), "{:?}", upstream.received());
    still_serves(addr, &ca, "lying framing").await;
}

/// A forged response an attacker-controlled upstream leaves on a pooled connection.
const FORGED: &str =
    "HTTP/1.1 200 OK\r\nSet-Cookie: session=attacker\r\nContent-Length: 6\r\n\r\nforged";

/// Response-queue poisoning over TLS: an upstream that sends a forged response after a complete
/// one never gets it to the next HTTPS client, whichever path either client is on (HTTP/1.1 own
/// or hyper, HTTP/2).
#[tokio::test]
async fn bytes_after_a_response_never_reach_the_next_tls_client() {
    let ca = TestCa::new();
    let upstream = scripted(|req| match req.path.as_str() {
        "/poison" => vec![
            write("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"),
            pause(100),
            write(FORGED),
            Step::ExpectClose(Duration::from_secs(2)),
        ],
        _ => vec![answer(req)],
    })
    .await;
    let teal = tls_teal(&ca, &upstream, "").await;
    let addr = teal.tls.unwrap();
    let mut failures = Vec::new();
    for (first_path, field) in PATHS {
        for alpn in [&b"http/1.1"[..], &b"h2"[..]] {
            let mut victim = TlsRaw::connect(addr, &ca).await;
            victim.get("/poison", field).await;
            let first = victim.response().await;
            // The forged bytes arrive 100 ms after the response.
            tokio::time::sleep(Duration::from_millis(300)).await;
            let cfg = client_config(&ca, &[alpn], rustls::DEFAULT_VERSIONS);
            let next = get(addr, NAME, "/innocent", cfg).await;
            let case = format!("{first_path} then {}", String::from_utf8_lossy(alpn));
            if first != (200, "ok".into()) {
                failures.push(format!("{case}: the first answer was {first:?}"));
            }
            if next.body != "GET /innocent" || next.headers.contains_key("set-cookie") {
                failures.push(format!("{case}: the next client read {:?}", next.body));
            }
            victim.get("/again", field).await;
            let again = victim.response().await;
            if again != (200, "GET /again".into()) {
                failures.push(format!("{case}: the first client's next answer {again:?}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    upstream.assert_all_closed_by_teal(4).await;
}
