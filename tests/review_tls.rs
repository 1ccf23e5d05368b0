//! An attacker's review of HTTPS (issue 16): what a hostile client, upstream or operator mistake
//! can do to the TLS listener, the plain listener's redirect and challenge answers, and the
//! headers that say a request came over TLS. Each test states what a user would observe.
mod support;
use rustls::pki_types::pem::PemObject;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::tungstenite::Message;

use support::raw::*;
use support::tls::{client_config, connect, tls_table, TestCa};
use support::*;

/// The name the test certificate is for.
const NAME: &str = "app.test";

/// Sent with a request, this moves it to the hyper path.
const VIA_HYPER: &str = "Connection: x-hyper\r\n";

/// Both HTTP/1.1 paths, by name and the extra field that selects each.
const PATHS: [(&str, &str); 2] = [("own", ""), ("hyper", VIA_HYPER)];

/// teal with one worker and a certificate for [`NAME`], in front of `pools` (the first active);
/// `proxy` lines go into `[proxy]`, `tls` lines into `[tls]`.
async fn tls_teal(ca: &TestCa, pools: &[(&str, Vec<SocketAddr>)], proxy: &str, tls: &str) -> Teal {
    let dir = tempfile::tempdir().unwrap();
    ca.leaf(&[NAME]).write(dir.path(), "app");
    let text = config(
        pools[0].0,
        pools,
        &tls_table(&[("app.pem", "app.key")], tls),
    );
    let text = with_proxy(&text, &format!("workers = 1\n{proxy}"));
    std::fs::write(dir.path().join("teal.toml"), text).unwrap();
    Teal::start_in(dir).await
}

fn h1_config(ca: &TestCa) -> Arc<rustls::ClientConfig> {
    client_config(ca, &[b"http/1.1"], rustls::DEFAULT_VERSIONS)
}

async fn tls_connect(addr: SocketAddr, ca: &TestCa) -> TlsStream<TcpStream> {
    let stream = connect(addr, NAME, h1_config(ca)).await.unwrap();
    stream.get_ref().0.set_nodelay(true).unwrap();
    stream
}

/// Waits up to `within` for the peer to end the connection (EOF, reset, or an error); `Some`
/// with how long it took, `None` if it stayed open.
async fn closed_within<S: AsyncReadExt + Unpin>(
    stream: &mut S,
    within: Duration,
) -> Option<Duration> {
    let started = Instant::now();
    let mut more = [0u8; 4096];
    loop {
        let left = within.checked_sub(started.elapsed())?;
        match tokio::time::timeout(left, stream.read(&mut more)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Some(started.elapsed()),
            Ok(Ok(_)) => {}
            Err(_) => return None,
        }
    }
}

/// A keep-alive HTTPS connection left idle after its response is closed after `idle_timeout`,
/// on both HTTP/1.1 paths, as on the plain listener: an idle client must not hold a connection
/// (and its slot under `max_connections`) forever.
#[tokio::test]
async fn an_idle_tls_connection_is_closed_after_idle_timeout() {
    let ca = TestCa::new();
    let upstream = scripted(|req| vec![answer(req)]).await;
    let pools = [("raw", vec![upstream.addr])];
    let teal = tls_teal(&ca, &pools, "idle_timeout = \"1s\"", "").await;
    let addr = teal.tls.unwrap();
    for (path, field) in PATHS {
        let mut client = tls_connect(addr, &ca).await;
        let request = format!("GET /a HTTP/1.1\r\nHost: app.test\r\n{field}\r\n");
        client.write_all(request.as_bytes()).await.unwrap();
        let (head, body) = read_response(&mut client).await;
        assert!(head.starts_with("HTTP/1.1 200"), "{path}: {head}");
        assert_eq!(body, "GET /a", "{path}");
        let closed = closed_within(&mut client, Duration::from_secs(6)).await;
        assert!(
            closed.is_some(),
            "{path}: an idle HTTPS connection was still open 6 s after its response \
             (idle_timeout = 1s)"
        );
    }
}

/// A client that finishes its handshake and then sends only the first bytes of a TLS record
/// (never a whole one, so never a byte of a request) is closed within the request-head and idle
/// timeouts, on the own path as on hyper's.
#[tokio::test]
async fn part_of_a_record_after_the_handshake_is_closed_in_time() {
    let ca = TestCa::new();
    let upstream = scripted(|req| vec![answer(req)]).await;
    let pools = [("raw", vec![upstream.addr])];
    let proxy = "idle_timeout = \"1s\"\nheader_timeout = \"1s\"";
    let teal = tls_teal(&ca, &pools, proxy, "").await;
    let addr = teal.tls.unwrap();
    // At once after the handshake, and after a first request was answered.
    for first in [false, true] {
        let mut client = tls_connect(addr, &ca).await;
        if first {
            client
                .write_all(b"GET /first HTTP/1.1\r\nHost: app.test\r\n\r\n")
                .await
                .unwrap();
            let (_, body) = read_response(&mut client).await;
            assert_eq!(body, "GET /first");
        }
        // An application-data record header announcing 100 bytes, and nothing after it.
        let tcp = client.get_mut().0;
        tcp.write_all(&[0x17, 0x03, 0x03, 0x00, 0x64])
            .await
            .unwrap();
        let closed = closed_within(tcp, Duration::from_secs(6)).await;
        assert!(
            closed.is_some(),
            "after first request: {first}: a connection holding half a TLS record was still \
             open after 6 s (header_timeout and idle_timeout 1s)"
        );
    }
}

async fn open_wss(
    addr: SocketAddr,
    ca: &TestCa,
    path: &str,
) -> tokio_tungstenite::WebSocketStream<TlsStream<TcpStream>> {
    let tls = tls_connect(addr, ca).await;
    let url = format!("wss://{NAME}{path}");
    let (ws, res) = tokio::time::timeout(
        Duration::from_secs(5),
        tokio_tungstenite::client_async(url, tls),
    )
    .await
    .expect("an upgrade answer within 5 s")
    .expect("upgrade through teal over TLS");
    assert_eq!(res.status(), 101);
    ws
}

async fn echo(
    ws: &mut tokio_tungstenite::WebSocketStream<TlsStream<TcpStream>>,
    text: &str,
) -> String {
    ws_roundtrip(ws, text).await
}

/// A WebSocket opened over HTTPS (HTTP/1.1 Upgrade over TLS) is tunnelled both ways: small
/// messages, and messages larger than the record layer's buffer, are echoed whole and in time;
/// the close handshake goes through, and the tunnel is counted and uncounted.
#[tokio::test]
async fn websocket_over_tls_tunnels_both_ways() {
    let blue = ws_echo("blue").await;
    let ca = TestCa::new();
    let teal = tls_teal(&ca, &[("blue", vec![blue])], "", "").await;
    let addr = teal.tls.unwrap();
    let mut ws = open_wss(addr, &ca, "/chat").await;
    for i in 0..5 {
        assert_eq!(echo(&mut ws, &format!("m{i}")).await, format!("blue:m{i}"));
    }
    let big = "x".repeat(300 * 1024);
    let back = echo(&mut ws, &big).await;
    assert_eq!(back.len(), big.len() + 5, "a large message came back cut");
    assert!(back.starts_with("blue:xxx"));
    let status = teal.admin("GET", "/status", "", None).await.json();
    assert_eq!(status["pools"]["blue"]["tunnels"], 1, "{status}");
    tokio::time::timeout(Duration::from_secs(5), ws.close(None))
        .await
        .expect("close in time")
        .unwrap();
    // The server's close frame comes back through the tunnel.
    let end = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(msg) = ws.next().await {
            if matches!(msg, Ok(Message::Close(_)) | Err(_)) {
                return;
            }
        }
    })
    .await;
    assert!(end.is_ok(), "the close handshake did not come back");
    drop(ws);
    assert_eventually!(
        teal.admin("GET", "/status", "", None).await.json()["pools"]["blue"]["tunnels"] == 0,
        Duration::from_secs(3),
        "closing the TLS tunnel did not end its count"
    );
}

/// Every `x-forwarded-proto` line of a request head as the upstream received it.
fn forwarded_protos(r: &Received) -> Vec<String> {
    r.head
        .split("\r\n")
        .skip(1)
        .filter_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.eq_ignore_ascii_case("x-forwarded-proto")
                .then(|| v.trim().to_string())
        })
        .collect()
}

/// A client's own `X-Forwarded-Proto` never reaches the upstream: over plain HTTP it says
/// `http` however the client spelled or repeated it, over TLS `https`, on both paths, whether
/// or not `[tls]` redirects.
#[tokio::test]
async fn a_client_cannot_claim_https() {
    let ca = TestCa::new();
    let upstream = recording().await;
    let pools = [("raw", vec![upstream.addr])];
    let teal = tls_teal(&ca, &pools, "", "hsts = \"max-age=60\"").await;
    let spoof = "X-Forwarded-Proto: https\r\nx-forwarded-PROTO: https\r\n";
    for (path, field) in PATHS {
        let plain = format!("GET /plain HTTP/1.1\r\nHost: app.test\r\n{spoof}{field}\r\n");
        let (reply, _) = send_raw(teal.proxy, plain).await;
        assert_eq!(status_of(&reply), 200, "{path}: {reply}");
        assert!(
            !reply
                .to_ascii_lowercase()
                .contains("strict-transport-security"),
            "{path}: HSTS on a plain response: {reply}"
        );
        let mut tls = tls_connect(teal.tls.unwrap(), &ca).await;
        let spoof_http = "X-Forwarded-Proto: http\r\n";
        let secure = format!("GET /tls HTTP/1.1\r\nHost: app.test\r\n{spoof_http}{field}\r\n");
        tls.write_all(secure.as_bytes()).await.unwrap();
        let (head, _) = read_response(&mut tls).await;
        assert!(
            head.to_ascii_lowercase()
                .contains("strict-transport-security: max-age=60"),
            "{path}: {head}"
        );
    }
    let received = upstream.received();
    assert_eq!(received.len(), 4, "{received:?}");
    for r in &received {
        let want = if r.path == "/plain" { "http" } else { "https" };
        assert_eq!(forwarded_protos(r), [want], "{}", r.head);
    }
}

/// The plain listener's 308 never points anywhere but the host the client named, on the TLS
/// port: a Host with a path, userinfo, a backslash or a bad port is refused (400), never put in
/// `Location`; an absolute-form target that disagrees with Host is refused too; and no answer
/// carries HSTS.
#[tokio::test]
async fn the_redirect_is_not_an_open_redirect() {
    let ca = TestCa::new();
    let upstream = recording().await;
    let pools = [("raw", vec![upstream.addr])];
    let tls = "redirect_http = true\nhsts = \"max-age=60\"";
    let teal = tls_teal(&ca, &pools, "", tls).await;
    let port = teal.tls.unwrap().port();
    for (path, field) in PATHS {
        for host in [
            "evil.test/path",
            "evil.test\\@app.test",
            "user@evil.test",
            "evil.test:80@app.test",
            "app.test:99999",
            "app.test:x",
            "evil.test?x",
            "evil.test#x",
            "",
        ] {
            let req = format!("GET /a HTTP/1.1\r\nHost: {host}\r\n{field}\r\n");
            let (reply, _) = send_raw(teal.proxy, req).await;
            assert_eq!(status_of(&reply), 400, "{path}: Host {host:?}: {reply}");
            assert!(
                !reply.to_ascii_lowercase().contains("location:"),
                "{path}: Host {host:?}: {reply}"
            );
        }
        let req = format!("GET http://evil.test/a HTTP/1.1\r\nHost: app.test\r\n{field}\r\n");
        let (reply, _) = send_raw(teal.proxy, req).await;
        assert_eq!(status_of(&reply), 400, "{path}: {reply}");
        // A target that looks like another authority stays a path on the named host.
        let req = format!("GET //evil.test/a HTTP/1.1\r\nHost: app.test:8080\r\n{field}\r\n");
        let (reply, _) = send_raw(teal.proxy, req).await;
        assert_eq!(status_of(&reply), 308, "{path}: {reply}");
        let location = reply
            .lines()
            .find_map(|l| {
                l.strip_prefix("location: ")
                    .or(l.strip_prefix("Location: "))
            })
            .unwrap_or_default()
            .to_string();
        assert_eq!(
            location,
            format!("https://app.test:{port}//evil.test/a"),
            "{path}"
        );
        assert!(
            !reply
                .to_ascii_lowercase()
                .contains("strict-transport-security"),
            "{path}: {reply}"
        );
    }
    assert!(upstream.received().is_empty(), "{:?}", upstream.received());
}

/// `teal_acme_orders_total{outcome}` from `/metrics` (0 when absent).
async fn acme_orders(teal: &Teal, outcome: &str) -> u64 {
    let metrics = teal.admin("GET", "/metrics", "", None).await.body;
    let prefix = format!("teal_acme_orders_total{{outcome=\"{outcome}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&prefix)?.trim().parse().ok())
        .unwrap_or(0)
}

/// A hostile ACME server (HTTPS, trusted through `ca_file`) that answers every request with a
/// `200` head and then a body without end: `limit` bytes as fast as the client takes them, then
/// nothing (the connection held open).
async fn endless_acme(ca: &TestCa, limit: usize) -> SocketAddr {
    let leaf = ca.leaf(&["127.0.0.1"]);
    let certs: Vec<_> = rustls::pki_types::CertificateDer::pem_slice_iter(leaf.cert_pem.as_bytes())
        .collect::<Result<_, _>>()
        .unwrap();
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut head = [0u8; 4096];
                if tls.read(&mut head).await.unwrap_or(0) == 0 {
                    return;
                }
                let start = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\r\n{\"a\":\"";
                if tls.write_all(start.as_bytes()).await.is_err() {
                    return;
                }
                let chunk = vec![b'x'; 64 * 1024];
                let mut sent = 0;
                while sent < limit {
                    if tls.write_all(&chunk).await.is_err() {
                        return;
                    }
                    sent += chunk.len();
                }
                let _ = tls.flush().await;
                tokio::time::sleep(Duration::from_secs(3600)).await;
            });
        }
    });
    addr
}

/// A hostile ACME directory that sends a response body without end (64 MiB, then nothing) does
/// not hold issuance forever or fill teal's memory: the order fails (counted), and is retried.
#[tokio::test]
async fn an_acme_server_sending_a_body_without_end_fails_the_order() {
    let ca = TestCa::new();
    let acme = endless_acme(&ca, 64 * 1024 * 1024).await;
    let upstream = recording().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("acme-ca.pem"), ca.pem()).unwrap();
    let tls = format!(
        "\n[tls]\nlisten = \"127.0.0.1:0\"\n\n[tls.acme]\ndirectory = \"https://{acme}/dir\"\n\
         domains = [\"{NAME}\"]\nstate_dir = \"acme\"\nca_file = \"acme-ca.pem\"\n"
    );
    let text = config("raw", &[("raw", vec![upstream.addr])], &tls);
    std::fs::write(dir.path().join("teal.toml"), text).unwrap();
    let teal = Teal::start_in(dir).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    while acme_orders(&teal, "failed").await == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        acme_orders(&teal, "failed").await,
        1,
        "the order was not failed within 15 s of a directory answering without end"
    );
    // Plain traffic was served meanwhile.
    assert_eq!(teal.get("/x").await.status, 200);
}

/// SNI with a trailing dot (`b.test.`, the fully qualified form some clients send; rustls keeps
/// the dot) gets the certificate for `b.test`, not the default one, whose name would not match.
/// TLS 1.2, so the server's Certificate message is readable on the wire.
#[tokio::test]
async fn sni_with_a_trailing_dot_picks_the_named_certificate() {
    let ca = TestCa::new();
    let upstream = recording().await;
    let dir = tempfile::tempdir().unwrap();
    ca.leaf(&["a.test"]).write(dir.path(), "a");
    let b = ca.leaf(&["b.test"]);
    b.write(dir.path(), "b");
    let b_der = rustls::pki_types::CertificateDer::from_pem_slice(b.cert_pem.as_bytes()).unwrap();
    let tls = tls_table(&[("a.pem", "a.key"), ("b.pem", "b.key")], "");
    let text = config("raw", &[("raw", vec![upstream.addr])], &tls);
    std::fs::write(dir.path().join("teal.toml"), text).unwrap();
    let teal = Teal::start_in(dir).await;
    assert!(
        presents(teal.tls.unwrap(), &ca, "b.test", &b_der).await,
        "SNI b.test"
    );
    assert!(
        presents(teal.tls.unwrap(), &ca, "B.TEST", &b_der).await,
        "SNI B.TEST"
    );
    assert!(
        presents(teal.tls.unwrap(), &ca, "b.test.", &b_der).await,
        "SNI b.test. got the default certificate"
    );
    assert!(
        !presents(teal.tls.unwrap(), &ca, "c.test", &b_der).await,
        "SNI c.test (no certificate names it) gets the default one, a.test"
    );
}

/// Whether teal at `addr` presents the certificate `der` to a TLS 1.2 ClientHello whose SNI is
/// exactly `sni` (written over a rustls ClientHello for a name as long).
async fn presents(
    addr: SocketAddr,
    ca: &TestCa,
    sni: &str,
    der: &rustls::pki_types::CertificateDer<'_>,
) -> bool {
    // A ClientHello for a name as long as `sni`, with `sni` written over it.
    let stand_in = "x".repeat(sni.len() - 5) + ".test";
    let name = rustls::pki_types::ServerName::try_from(stand_in.clone()).unwrap();
    let config = client_config(ca, &[b"http/1.1"], &[&rustls::version::TLS12]);
    let mut conn = rustls::ClientConnection::new(config, name).unwrap();
    let mut hello = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut hello).unwrap();
    }
    let at = hello
        .windows(stand_in.len())
        .position(|w| w == stand_in.as_bytes())
        .unwrap();
    hello[at..at + sni.len()].copy_from_slice(sni.as_bytes());
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(&hello).await.unwrap();
    let mut got = Vec::new();
    let mut more = [0u8; 4096];
    while let Ok(Ok(n)) =
        tokio::time::timeout(Duration::from_millis(500), tcp.read(&mut more)).await
    {
        if n == 0 {
            break;
        }
        got.extend_from_slice(&more[..n]);
    }
    assert!(!got.is_empty(), "SNI {sni}: no answer to the ClientHello");
    got.windows(der.len()).any(|w| w == der.as_ref())
}

/// A client that asks for a large response over TLS and never reads it is dropped after
/// `client_send_timeout`, on both HTTP/1.1 paths: it does not keep its connection (and, at
/// `max_connections = 1`, every other client out) by leaving teal's close_notify unsent.
#[tokio::test]
async fn a_client_that_never_reads_over_tls_is_dropped_after_the_send_timeout() {
    const BIG: usize = 32 * 1024 * 1024;
    let upstream = scripted(|req| {
        if req.path == "/big" {
            let mut bytes =
                format!("HTTP/1.1 200 OK\r\nContent-Length: {BIG}\r\n\r\n").into_bytes();
            bytes.resize(bytes.len() + BIG, b'x');
            vec![write(bytes)]
        } else {
            vec![answer(req)]
        }
    })
    .await;
    let ca = TestCa::new();
    let dir = tempfile::tempdir().unwrap();
    ca.leaf(&[NAME]).write(dir.path(), "app");
    let text = config(
        "raw",
        &[("raw", vec![upstream.addr])],
        &(tls_table(&[("app.pem", "app.key")], "") + "\n[limits]\nmax_connections = 1\n"),
    );
    let text = with_proxy(&text, "workers = 1\nclient_send_timeout = \"1s\"");
    std::fs::write(dir.path().join("teal.toml"), text).unwrap();
    let teal = Teal::start_in(dir).await;
    let addr = teal.tls.unwrap();
    for (path, field) in PATHS {
        let mut stuck = tls_connect(addr, &ca).await;
        let request =
            format!("GET /big HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n{field}\r\n");
        let request = request.replace(
            "Connection: close\r\nConnection: x-hyper",
            "Connection: close, x-hyper",
        );
        stuck.write_all(request.as_bytes()).await.unwrap();
        stuck.flush().await.unwrap();
        // The stuck client reads nothing from here on; another client must get its answer once
        // the send timeout has dropped it.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let answered = tokio::time::timeout(Duration::from_secs(6), async {
            let mut other = tls_connect(addr, &ca).await;
            other
                .write_all(b"GET /other HTTP/1.1\r\nHost: app.test\r\n\r\n")
                .await
                .unwrap();
            read_response(&mut other).await
        })
        .await;
        assert!(
            answered.is_ok(),
            "{path}: a client reading nothing still held the only connection slot 9 s after \
             client_send_timeout = 1s"
        );
        assert_eq!(answered.unwrap().1, "GET /other", "{path}");
        drop(stuck);
    }
}

/// The challenge path on the plain listener answers only an exact token under way: a token with
/// `..`, an encoded slash, a query, or one far too long gets a 404 (or 414), never a file, the
/// upstream or the redirect; HSTS is on none of them; and the TLS listener does not answer
/// challenges at all (the request goes to the upstream).
#[tokio::test]
async fn the_challenge_path_answers_nothing_but_a_token_under_way() {
    let ca = TestCa::new();
    let upstream = recording().await;
    let pools = [("raw", vec![upstream.addr])];
    let acme = "redirect_http = true\nhsts = \"max-age=60\"\n\n[tls.acme]\n\
                directory = \"https://127.0.0.1:9/dir\"\ndomains = [\"app.test\"]\n\
                state_dir = \"acme\"";
    let teal = tls_teal(&ca, &pools, "", acme).await;
    let long = "a".repeat(20_000);
    for (path, field) in PATHS {
        for (token, status) in [
            ("../../../etc/passwd", 404),
            ("..%2f..%2facme%2faccount.json", 404),
            ("x?y=1", 404),
            ("", 404),
            (long.as_str(), 414),
        ] {
            let req = format!(
                "GET /.well-known/acme-challenge/{token} HTTP/1.1\r\nHost: app.test\r\n{field}\r\n"
            );
            let (reply, _) = send_raw(teal.proxy, req).await;
            assert_eq!(
                status_of(&reply),
                status,
                "{path}: {token:.40}: {reply:.300}"
            );
            let lower = reply.to_ascii_lowercase();
            assert!(
                !lower.contains("location:"),
                "{path}: {token:.40}: {reply:.300}"
            );
            assert!(
                !lower.contains("strict-transport-security"),
                "{path}: {reply:.300}"
            );
        }
        let mut tls = tls_connect(teal.tls.unwrap(), &ca).await;
        let req =
            format!("GET /.well-known/acme-challenge/t HTTP/1.1\r\nHost: app.test\r\n{field}\r\n");
        tls.write_all(req.as_bytes()).await.unwrap();
        let (head, body) = read_response(&mut tls).await;
        assert!(head.starts_with("HTTP/1.1 200"), "{path}: {head}");
        assert_eq!(body, "ok", "{path}: over TLS the path is the upstream's");
    }
    let paths: Vec<String> = upstream.received().iter().map(|r| r.path.clone()).collect();
    assert_eq!(
        paths,
        [
            "/.well-known/acme-challenge/t",
            "/.well-known/acme-challenge/t"
        ],
        "only the TLS requests reached the upstream"
    );
}
