//! Zero loss under switch storms: the proof.
//!
//! Real upstreams on loopback (closing idle keep-alive connections after 200 ms), and all at once
//! for a fixed time: keep-alive HTTP/1.1 and HTTP/2 clients on `/`, `/green/...` and `/blue/...`,
//! streaming uploads and slow chunked downloads, WebSockets opened before the first switch, and a
//! storm of admin switches interleaved with config file rewrites (some by rename, some invalid).
//!
//! `switch_storm_loses_nothing` runs teal in-process; `sigterm_under_load_drains` runs the binary
//! and sends SIGTERM in the middle of the same kind of load.

mod support;

use std::collections::HashSet;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use support::*;
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

type UpBody = UnsyncBoxBody<Bytes, Infallible>;

const UPLOAD_BYTES: usize = 10 * 1024 * 1024;
const CHUNK: usize = 64 * 1024;
const DOWNLOAD_CHUNKS: usize = 8;

// === the upstream ===

/// What the chaos upstreams saw: every request id, for the SIGTERM test.
#[derive(Default)]
struct Seen(Mutex<HashSet<String>>);

/// An upstream of `pool` that answers `"{pool} {request-id}"`, counts uploads, streams slow
/// downloads, echoes WebSockets as `"{pool}:{text}"`, and closes idle connections after 200 ms.
async fn chaos_upstream(pool: &'static str, seen: Arc<Seen>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(teal::server::serve(
        listener,
        teal::server::Timeouts::both(Duration::from_millis(200)),
        move |req, _peer| answer(pool, seen.clone(), req),
        std::future::pending(),
    ));
    addr
}

async fn answer(
    pool: &'static str,
    seen: Arc<Seen>,
    mut req: Request<Incoming>,
) -> Result<Response<UpBody>, Infallible> {
    let id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_string();
    // The clients' own ids are `r<N>`; teal gives a request without one (the WebSocket opens
    // here) an id of its own, which no client tracks.
    if id.starts_with('r') {
        seen.0.lock().unwrap().insert(id.clone());
    }
    let full = |s: String| Full::new(Bytes::from(s)).boxed_unsync();
    if let Some(key) = req.headers().get("sec-websocket-key") {
        let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
        let upgrade = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            let Ok(io) = upgrade.await else { return };
            let mut ws =
                WebSocketStream::from_raw_socket(TokioIo::new(io), Role::Server, None).await;
            while let Some(Ok(msg)) = ws.next().await {
                if let Message::Text(t) = msg {
                    if ws.send(Message::text(format!("{pool}:{t}"))).await.is_err() {
                        break;
                    }
                }
            }
        });
        let res = Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header("upgrade", "websocket")
            .header("connection", "upgrade")
            .header("sec-websocket-accept", accept)
            .body(full(String::new()))
            .unwrap();
        return Ok(res);
    }
    let path = req.uri().path().to_string();
    if path.ends_with("/upload") {
        let mut body = req.into_body();
        let mut n = 0usize;
        while let Some(Ok(f)) = body.frame().await {
            n += f.data_ref().map_or(0, |d| d.len());
        }
        return Ok(Response::new(full(format!("{pool} {id} {n}"))));
    }
    if path.ends_with("/download") {
        let chunks = futures_util::stream::unfold(0usize, move |i| async move {
            if i == DOWNLOAD_CHUNKS {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(30)).await;
            let data = Bytes::from(format!("{pool}:{i};"));
            Some((Ok::<_, Infallible>(Frame::data(data)), i + 1))
        });
        return Ok(Response::new(StreamBody::new(chunks).boxed_unsync()));
    }
    Ok(Response::new(full(format!("{pool} {id}"))))
}

// === the clients ===

/// Shared bookkeeping of a load run.
#[derive(Default)]
struct Log {
    next_id: AtomicU64,
    ok: AtomicU64,
    failures: Mutex<Vec<Failure>>,
    /// Default-route answers: (sent, answered, pool).
    default_route: Mutex<Vec<(Instant, Instant, String)>>,
    /// Ids answered completely.
    completed: Mutex<HashSet<String>>,
}

#[derive(Debug)]
#[allow(dead_code)] // read through Debug in failure messages
struct Failure {
    id: String,
    at: Instant,
    what: String,
}

impl Log {
    fn id(&self) -> String {
        format!("r{}", self.next_id.fetch_add(1, Ordering::Relaxed))
    }

    fn fail(&self, id: &str, what: impl Into<String>) {
        self.failures.lock().unwrap().push(Failure {
            id: id.to_string(),
            at: Instant::now(),
            what: what.into(),
        });
    }

    fn done(&self, id: String) {
        self.ok.fetch_add(1, Ordering::Relaxed);
        self.completed.lock().unwrap().insert(id);
    }

    /// Checks one `"{pool} {id}"` answer for `path`; records it.
    fn check(&self, path: &str, id: String, sent: Instant, status: StatusCode, body: &[u8]) {
        let text = String::from_utf8_lossy(body);
        let mut words = text.split(' ');
        let (pool, echoed) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
        if status != StatusCode::OK || echoed != id {
            return self.fail(&id, format!("{path}: {status} {text:?}"));
        }
        match path.split('/').nth(1) {
            Some(p @ ("blue" | "green")) if p != pool => {
                return self.fail(&id, format!("{path} answered by {pool}"))
            }
            Some("blue" | "green") => {}
            _ => self
                .default_route
                .lock()
                .unwrap()
                .push((sent, Instant::now(), pool.to_string())),
        }
        self.done(id);
    }
}

fn path_for(i: u64) -> &'static str {
    ["/", "/green/x", "/blue/x", "/api/y"][(i % 4) as usize]
}

/// One keep-alive HTTP/1.1 client until `until`; reconnects only after a failure.
async fn h1_client(proxy: SocketAddr, log: Arc<Log>, until: Instant) {
    let mut i = 0u64;
    'conn: while Instant::now() < until {
        let Ok(tcp) = TcpStream::connect(proxy).await else {
            log.fail("-", "h1 connect refused");
            return;
        };
        let Ok((mut send, conn)) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await
        else {
            log.fail("-", "h1 handshake");
            return;
        };
        tokio::spawn(conn);
        while Instant::now() < until {
            i += 1;
            let (path, id) = (path_for(i), log.id());
            let req = Request::get(path)
                .header("host", "shop.test")
                .header("x-request-id", &id)
                .body(Full::new(Bytes::new()))
                .unwrap();
            let sent = Instant::now();
            if send.ready().await.is_err() {
                log.fail(&id, "h1 connection closed");
                continue 'conn;
            }
            match send.send_request(req).await {
                Ok(res) => {
                    let status = res.status();
                    match res.into_body().collect().await {
                        Ok(b) => log.check(path, id, sent, status, &b.to_bytes()),
                        Err(e) => log.fail(&id, format!("h1 body: {e}")),
                    }
                }
                Err(e) => {
                    log.fail(&id, format!("h1: {e}"));
                    continue 'conn;
                }
            }
        }
    }
}

/// One HTTP/2 (prior knowledge) client on one connection until `until`.
async fn h2_client(proxy: SocketAddr, log: Arc<Log>, until: Instant) {
    let Ok(tcp) = TcpStream::connect(proxy).await else {
        return log.fail("-", "h2 connect refused");
    };
    let Ok((mut send, conn)) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp)).await
    else {
        return log.fail("-", "h2 handshake");
    };
    tokio::spawn(conn);
    let mut i = 0u64;
    while Instant::now() < until {
        i += 1;
        let (path, id) = (path_for(i), log.id());
        let req = Request::get(format!("http://shop.test{path}"))
            .header("x-request-id", &id)
            .body(Full::new(Bytes::new()))
            .unwrap();
        let sent = Instant::now();
        match send.send_request(req).await {
            Ok(res) => {
                let status = res.status();
                match res.into_body().collect().await {
                    Ok(b) => log.check(path, id, sent, status, &b.to_bytes()),
                    Err(e) => log.fail(&id, format!("h2 body: {e}")),
                }
            }
            Err(e) => return log.fail(&id, format!("h2: {e}")),
        }
    }
}

/// Streams 10 MB uploads (chunked, no Content-Length) until `until`.
async fn uploader(proxy: SocketAddr, log: Arc<Log>, until: Instant, path: &'static str) {
    while Instant::now() < until {
        let id = log.id();
        let Ok(tcp) = TcpStream::connect(proxy).await else {
            return log.fail(&id, "upload connect refused");
        };
        let Ok((mut send, conn)) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await
        else {
            return log.fail(&id, "upload handshake");
        };
        tokio::spawn(conn);
        let chunks = (0..UPLOAD_BYTES / CHUNK)
            .map(|_| Ok::<_, Infallible>(Frame::data(Bytes::from_static(&[b'u'; CHUNK]))));
        let req = Request::post(path)
            .header("host", "shop.test")
            .header("x-request-id", &id)
            .body(StreamBody::new(futures_util::stream::iter(chunks)))
            .unwrap();
        match send.send_request(req).await {
            Ok(res) => {
                let status = res.status();
                let body = res.into_body().collect().await.map(|b| b.to_bytes());
                let text = body
                    .as_ref()
                    .map(|b| String::from_utf8_lossy(b).into_owned());
                match text {
                    Ok(t)
                        if status == StatusCode::OK
                            && t.ends_with(&format!(" {id} {UPLOAD_BYTES}")) =>
                    {
                        log.done(id)
                    }
                    other => log.fail(&id, format!("upload: {status} {other:?}")),
                }
            }
            Err(e) => log.fail(&id, format!("upload: {e}")),
        }
    }
}

/// Reads slow chunked downloads until `until`, checking every chunk arrived in order.
async fn downloader(proxy: SocketAddr, log: Arc<Log>, until: Instant) {
    let Ok(tcp) = TcpStream::connect(proxy).await else {
        return log.fail("-", "download connect refused");
    };
    let Ok((mut send, conn)) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await
    else {
        return log.fail("-", "download handshake");
    };
    tokio::spawn(conn);
    while Instant::now() < until {
        let id = log.id();
        let req = Request::get("/download")
            .header("host", "shop.test")
            .header("x-request-id", &id)
            .body(Full::new(Bytes::new()))
            .unwrap();
        if send.ready().await.is_err() {
            return log.fail(&id, "download connection closed");
        }
        match send.send_request(req).await {
            Ok(res) => {
                let body = res.into_body().collect().await.map(|b| b.to_bytes());
                let text = body.map(|b| String::from_utf8_lossy(&b).into_owned());
                let complete = text.as_ref().is_ok_and(|t| {
                    let pool = t.split(':').next().unwrap_or("");
                    let want: String = (0..DOWNLOAD_CHUNKS)
                        .map(|i| format!("{pool}:{i};"))
                        .collect();
                    *t == want
                });
                if complete {
                    log.done(id);
                } else {
                    log.fail(&id, format!("download: {text:?}"));
                }
            }
            Err(e) => return log.fail(&id, format!("download: {e}")),
        }
    }
}

/// Opens a WebSocket through teal on the default route; returns it with the pool that answered.
async fn open_ws(proxy: SocketAddr) -> (WebSocketStream<TcpStream>, String) {
    let tcp = TcpStream::connect(proxy).await.unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async(format!("ws://{proxy}/ws"), tcp)
        .await
        .unwrap();
    ws.send(Message::text("hello")).await.unwrap();
    let first = ws.next().await.unwrap().unwrap().into_text().unwrap();
    let pool = first.split(':').next().unwrap().to_string();
    (ws, pool)
}

/// Sends a message every 50 ms until `until`; every echo must come from `pool`. Returns the
/// socket for the final check, or the failure.
async fn ws_chatter(
    mut ws: WebSocketStream<TcpStream>,
    pool: String,
    until: Instant,
) -> Result<(WebSocketStream<TcpStream>, u64), String> {
    let mut n = 0u64;
    while Instant::now() < until {
        n += 1;
        ws.send(Message::text(format!("m{n}")))
            .await
            .map_err(|e| format!("ws send: {e}"))?;
        let reply = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .map_err(|_| "ws echo timed out".to_string())?
            .ok_or("ws closed")?
            .map_err(|e| format!("ws: {e}"))?;
        let want = format!("{pool}:m{n}");
        if reply.to_text().map_err(|e| e.to_string())? != want {
            return Err(format!("ws echo {reply:?}, want {want:?}"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok((ws, n))
}

/// A switch as the test saw it: sent, answered, target.
type SwitchLog = Vec<(Instant, Instant, String)>;

/// The pools a default-route request sent at `s` and answered at `e` may have reached: the one
/// active when it was sent, and every target of a switch under way during it.
fn allowed_pools(switches: &SwitchLog, s: Instant, e: Instant) -> HashSet<&str> {
    let mut allowed = HashSet::new();
    let before = switches.iter().rev().find(|(_, done, _)| *done <= s);
    allowed.insert(before.map_or("blue", |(_, _, to)| to.as_str()));
    for (start, done, to) in switches {
        if *start <= e && *done >= s {
            allowed.insert(to.as_str());
        }
    }
    allowed
}

/// The config file the storm writes: the current active pool, a varying comment and timeout.
fn storm_config(active: &str, blue: &[SocketAddr], green: &[SocketAddr], n: usize) -> String {
    let list = |a: &[SocketAddr]| {
        a.iter()
            .map(|a| format!("\"{a}\""))
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        "# rewrite {n}\nactive = \"{active}\"\n\n[proxy]\nlisten = \"127.0.0.1:0\"\nconnect_timeout = \"{}ms\"\nresponse_timeout = \"10s\"\ngrace_period = \"3s\"\nupstream_idle_timeout = \"100ms\"\n\n[admin]\nlisten = \"127.0.0.1:0\"\n\n[log]\naccess = false\n\n[pools.blue]\nservers = [{}]\n\n[pools.green]\nservers = [{}]\n",
        500 + n,
        list(blue),
        list(green)
    )
}

async fn metrics(admin: SocketAddr) -> String {
    let req = Request::get("/metrics")
        .header("host", admin.to_string())
        .body(Full::new(Bytes::new()))
        .unwrap();
    Conn::open(admin).await.send(req).await.body
}

/// 200 admin switches and 20 config rewrites (every other one by rename, two invalid),
/// interleaved over `span`. Returns the switch log.
async fn storm(
    teal_admin: SocketAddr,
    path: std::path::PathBuf,
    blue: Vec<SocketAddr>,
    green: Vec<SocketAddr>,
    span: Duration,
) -> SwitchLog {
    let mut log = SwitchLog::new();
    let ops = 220usize;
    let step = span / ops as u32;
    let mut active = "blue".to_string();
    let mut rewrites = 0usize;
    for op in 0..ops {
        let began = Instant::now();
        if op % 11 == 10 {
            rewrites += 1;
            let text = match rewrites {
                5 => storm_config("purple", &blue, &green, rewrites),
                15 => "active = \"blue\"\n[pools.blue\n".to_string(),
                n => storm_config(&active, &blue, &green, n),
            };
            if rewrites % 2 == 0 {
                let tmp = path.with_file_name(format!(".teal.toml.{rewrites}.tmp"));
                std::fs::write(&tmp, text).unwrap();
                std::fs::rename(&tmp, &path).unwrap();
            } else {
                std::fs::write(&path, text).unwrap();
            }
            if matches!(rewrites, 5 | 15) {
                // Let teal see (and refuse) the invalid file before the next switch rewrites it.
                let refused = format!(
                    "teal_reloads_total{{result=\"error\"}} {}",
                    rewrites / 10 + 1
                );
                assert_eventually!(
                    metrics(teal_admin).await.contains(&refused),
                    Duration::from_secs(2),
                    "invalid rewrite {rewrites} not refused in time"
                );
            }
        } else {
            let to = if active == "blue" { "green" } else { "blue" };
            let mut conn = Conn::open(teal_admin).await;
            let req = Request::post("/switch")
                .header("host", teal_admin.to_string())
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(format!("{{\"to\":\"{to}\"}}"))))
                .unwrap();
            let r = conn.send(req).await;
            assert_eq!(r.status, StatusCode::OK, "switch {op}: {}", r.body);
            log.push((began, Instant::now(), to.to_string()));
            active = to.to_string();
        }
        tokio::time::sleep(step.saturating_sub(began.elapsed())).await;
    }
    assert_eq!((log.len(), rewrites), (200, 20));
    log
}

/// The whole storm against an in-process teal. See the module doc.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switch_storm_loses_nothing() {
    let seen = Arc::new(Seen::default());
    let blue = vec![
        chaos_upstream("blue", seen.clone()).await,
        chaos_upstream("blue", seen.clone()).await,
    ];
    let green = vec![
        chaos_upstream("green", seen.clone()).await,
        chaos_upstream("green", seen.clone()).await,
    ];
    let teal = Teal::start(&storm_config("blue", &blue, &green, 0)).await;
    let proxy = teal.proxy;

    let mut sockets = Vec::new();
    for _ in 0..8 {
        let (ws, pool) = open_ws(proxy).await;
        assert_eq!(pool, "blue");
        sockets.push((ws, pool));
    }
    let log = Arc::new(Log::default());
    let span = Duration::from_secs(18);
    let until = Instant::now() + span + Duration::from_millis(500);
    let mut tasks = Vec::new();
    for _ in 0..32 {
        tasks.push(tokio::spawn(h1_client(proxy, log.clone(), until)));
    }
    for _ in 0..8 {
        tasks.push(tokio::spawn(h2_client(proxy, log.clone(), until)));
    }
    for path in ["/upload", "/green/upload", "/blue/upload", "/upload"] {
        tasks.push(tokio::spawn(uploader(proxy, log.clone(), until, path)));
    }
    for _ in 0..4 {
        tasks.push(tokio::spawn(downloader(proxy, log.clone(), until)));
    }
    let chatters: Vec<_> = sockets
        .into_iter()
        .map(|(ws, pool)| tokio::spawn(ws_chatter(ws, pool, until)))
        .collect();

    let switches = storm(
        teal.admin,
        teal.path.clone(),
        blue.clone(),
        green.clone(),
        span,
    )
    .await;
    for t in tasks {
        t.await.unwrap();
    }
    let failures = std::mem::take(&mut *log.failures.lock().unwrap());
    assert!(
        failures.is_empty(),
        "{} failed requests, first: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );

    // Every WebSocket still echoes, on the pool it opened on.
    let mut messages = 0;
    for c in chatters {
        let (mut ws, n) = c
            .await
            .unwrap()
            .expect("websocket kept working through the storm");
        messages += n;
        ws.send(Message::text("last")).await.unwrap();
        let reply = ws.next().await.unwrap().unwrap();
        assert_eq!(reply.to_text().unwrap(), "blue:last");
        ws.close(None).await.unwrap();
    }

    // Every default-route answer came from a pool active while it was under way.
    let answers = std::mem::take(&mut *log.default_route.lock().unwrap());
    for (s, e, pool) in answers.iter() {
        let allowed = allowed_pools(&switches, *s, *e);
        assert!(
            allowed.contains(pool.as_str()),
            "answered by {pool}, allowed {allowed:?}"
        );
    }
    // The final pool is the last one switched to.
    let last = &switches.last().unwrap().2;
    let status = teal.admin("GET", "/status", "", None).await.json();
    assert_eq!(status["active"], last.as_str());
    assert_eq!(
        teal.get("/api").await.body.split(' ').next(),
        Some(last.as_str())
    );
    // In-flight and tunnel counts return to zero.
    assert_eventually!(
        {
            let s = teal.admin("GET", "/status", "", None).await.json();
            ["blue", "green"]
                .iter()
                .all(|p| s["pools"][p]["in_flight"] == 0 && s["pools"][p]["tunnels"] == 0)
        },
        Duration::from_secs(5),
        "counts did not return to zero"
    );
    let metrics = teal.admin("GET", "/metrics", "", None).await.body;
    assert!(
        metrics.contains("teal_reloads_total{result=\"error\"} 2"),
        "two invalid rewrites refused:\n{metrics}"
    );
    println!(
        "storm: {} requests ok ({} default-route answers checked), {} websocket messages, 200 switches, 20 rewrites, 0 failures",
        log.ok.load(Ordering::Relaxed),
        answers.len(),
        messages
    );
}

/// SIGTERM to the binary under the same kind of load: every request the upstreams received is
/// answered completely, failures only hit requests teal never accepted (after the signal), new
/// connections are refused, tunnels end by the grace period, and the exit code is 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_drains() {
    let seen = Arc::new(Seen::default());
    let blue = vec![chaos_upstream("blue", seen.clone()).await];
    let green = vec![chaos_upstream("green", seen.clone()).await];
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("teal.toml");
    std::fs::write(&path, storm_config("blue", &blue, &green, 0)).unwrap();
    let (mut child, proxy, _admin) = run_binary(&path).await;

    let mut sockets = Vec::new();
    for _ in 0..4 {
        sockets.push(open_ws(proxy).await);
    }
    let log = Arc::new(Log::default());
    let until = Instant::now() + Duration::from_secs(8);
    let mut tasks = Vec::new();
    for _ in 0..16 {
        tasks.push(tokio::spawn(h1_client(proxy, log.clone(), until)));
    }
    for _ in 0..4 {
        tasks.push(tokio::spawn(h2_client(proxy, log.clone(), until)));
    }
    for path in ["/upload", "/green/upload"] {
        tasks.push(tokio::spawn(uploader(proxy, log.clone(), until, path)));
    }
    for _ in 0..2 {
        tasks.push(tokio::spawn(downloader(proxy, log.clone(), until)));
    }
    let chatters: Vec<_> = sockets
        .into_iter()
        .map(|(ws, pool)| {
            tokio::spawn(async move {
                let result = ws_chatter(ws, pool, until).await.map(|(_, n)| n);
                (result, Instant::now())
            })
        })
        .collect();

    tokio::time::sleep(Duration::from_millis(1500)).await;
    let accepted_before = log.ok.load(Ordering::Relaxed);
    let signal = Instant::now();
    terminate_and_expect_refusal(&child, proxy).await;
    let status = tokio::time::timeout(Duration::from_secs(6), child.wait())
        .await
        .expect("teal exits within the grace period")
        .unwrap();
    let exited = Instant::now();
    assert_eq!(status.code(), Some(0));
    assert!(
        exited - signal < Duration::from_millis(4500),
        "took {:?}",
        exited - signal
    );
    for t in tasks {
        t.await.unwrap();
    }

    // Every request an upstream received was answered completely.
    let completed = log.completed.lock().unwrap().clone();
    let seen = seen.0.lock().unwrap().clone();
    let lost: Vec<&String> = seen.iter().filter(|id| !completed.contains(*id)).collect();
    assert!(lost.is_empty(), "accepted but not answered: {lost:?}");
    // Failures only after the signal, and only for requests teal never forwarded.
    let failures = std::mem::take(&mut *log.failures.lock().unwrap());
    for f in &failures {
        assert!(f.at >= signal, "failure before the signal: {f:?}");
        assert!(!seen.contains(&f.id), "a forwarded request failed: {f:?}");
    }
    // Tunnels worked until the signal and ended by the grace period.
    for c in chatters {
        let (result, ended) = c.await.unwrap();
        assert!(result.is_err(), "a websocket outlived teal");
        assert!(ended >= signal && ended <= exited + Duration::from_millis(500));
    }
    println!(
        "sigterm: {accepted_before} requests before the signal, {} in all, exit after {:?}",
        log.ok.load(Ordering::Relaxed),
        exited - signal
    );
}
