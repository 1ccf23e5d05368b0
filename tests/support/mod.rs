//! Test harness: real upstreams, a real teal, real clients, all on `127.0.0.1:0`.
//!
//! - [`upstream`] starts a demo upstream (the same code `teal upstream` runs) that also counts the
//!   requests it received.
//! - [`Teal::start`] writes a config file into a temporary directory and starts teal in-process
//!   with it, so file edits, persistence and restarts can be tested.
//! - [`Conn`] is one client connection (HTTP/1.1, optionally from a chosen source address), so
//!   tests can show what happens to a kept-alive connection.
//! - [`raw`] has the raw-socket peers: scripted, recording and silent upstreams, and a raw client.
#![allow(dead_code)]

pub mod etcd;
pub mod feed;
pub mod raw;
pub mod tls;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio_util::sync::CancellationToken;

/// Polls `$cond` (an async expression giving bool) every 20 ms until it holds or `$within` passes.
#[macro_export]
macro_rules! assert_eventually {
    ($cond:expr, $within:expr, $($msg:tt)+) => {{
        let deadline = tokio::time::Instant::now() + $within;
        loop {
            if $cond {
                break;
            }
            if tokio::time::Instant::now() > deadline {
                panic!($($msg)+);
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }};
}

/// A demo upstream serving in this process.
pub struct Upstream {
    pub addr: SocketAddr,
    pub hits: Arc<AtomicUsize>,
    stop: CancellationToken,
    stopped: Option<tokio::task::JoinHandle<()>>,
}

impl Upstream {
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    /// Stops it like a stopped container: the listener closes and open connections are closed.
    pub async fn stop(mut self) -> SocketAddr {
        self.stop.cancel();
        if let Some(task) = self.stopped.take() {
            let _ = task.await;
        }
        self.addr
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Starts a demo upstream of `pool` called `name`.
pub async fn upstream(pool: &str, name: &str) -> Upstream {
    upstream_at("127.0.0.1:0".parse().unwrap(), pool, name).await
}

/// Starts a demo upstream on `addr` (port 0: any).
pub async fn upstream_at(addr: SocketAddr, pool: &str, name: &str) -> Upstream {
    let listener = TcpListener::bind(addr).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let id = Arc::new(teal::demo::Identity {
        pool: pool.into(),
        name: name.into(),
        version: "0.0.1".into(),
    });
    let hits = Arc::new(AtomicUsize::new(0));
    let stop = CancellationToken::new();
    let counter = hits.clone();
    let serving = teal::server::serve(
        listener,
        teal::server::Timeouts::both(Duration::from_secs(10)),
        move |req, peer| {
            counter.fetch_add(1, Ordering::SeqCst);
            teal::demo::handle(id.clone(), req, peer)
        },
        stop.clone().cancelled_owned(),
    );
    let stopped = tokio::spawn(async move {
        let drain = serving.await;
        // Idle keep-alive connections close at once; give busy ones a moment.
        drain
            .finish(tokio::time::Instant::now() + Duration::from_millis(200))
            .await;
    });
    Upstream {
        addr,
        hits,
        stop,
        stopped: Some(stopped),
    }
}

/// An address where nothing listens (bound, then closed).
pub async fn dead_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap()
}

/// A config with both listeners on port 0, `active`, the given pools and `extra` TOML appended.
pub fn config(active: &str, pools: &[(&str, Vec<SocketAddr>)], extra: &str) -> String {
    let mut text = format!(
        "# test config\nactive = \"{active}\"  # live colour\n\n[proxy]\nlisten = \"127.0.0.1:0\"\nconnect_timeout = \"500ms\"\nresponse_timeout = \"5s\"\ngrace_period = \"5s\"\n\n[admin]\nlisten = \"127.0.0.1:0\"\n"
    );
    text.push_str(extra);
    for (name, servers) in pools {
        let list: Vec<String> = servers.iter().map(|a| format!("\"{a}\"")).collect();
        text.push_str(&format!(
            "\n[pools.{name}]\nservers = [{}]\n",
            list.join(", ")
        ));
    }
    text
}

/// Upstreams `b1` and `b2` in blue and `g1` in green, and the two pools naming them.
pub async fn blue_pair_and_green() -> (
    Upstream,
    Upstream,
    Upstream,
    Vec<(&'static str, Vec<SocketAddr>)>,
) {
    let b1 = upstream("blue", "b1").await;
    let b2 = upstream("blue", "b2").await;
    let g = upstream("green", "g1").await;
    let pools = vec![("blue", vec![b1.addr, b2.addr]), ("green", vec![g.addr])];
    (b1, b2, g, pools)
}

/// The usual two pools with one server each.
pub fn blue_green(blue: &Upstream, green: &Upstream) -> Vec<(&'static str, Vec<SocketAddr>)> {
    vec![("blue", vec![blue.addr]), ("green", vec![green.addr])]
}

/// Adds `lines` to the `[proxy]` table of a config made by [`config`].
pub fn with_proxy(text: &str, lines: &str) -> String {
    text.replacen(
        "grace_period = \"5s\"",
        &format!("grace_period = \"5s\"\n{lines}"),
        1,
    )
}

/// Upstreams `server1-blue` and `server1-green` and a teal with blue active; `extra` is TOML
/// inserted in the `[admin]` table (and may open further tables).
pub async fn two_pools(extra: &str) -> (Upstream, Upstream, Teal) {
    let blue = upstream("blue", "server1-blue").await;
    let green = upstream("green", "server1-green").await;
    let teal = Teal::start(&config("blue", &blue_green(&blue, &green), extra)).await;
    (blue, green, teal)
}

/// teal running in this process from a config file in its own temporary directory.
pub struct Teal {
    pub proxy: SocketAddr,
    pub admin: SocketAddr,
    /// The HTTPS listener, when the config has `[tls]`.
    pub tls: Option<SocketAddr>,
    pub path: PathBuf,
    dir: Option<tempfile::TempDir>,
    running: Option<teal::app::Running>,
}

impl Teal {
    /// Writes `text` as `teal.toml` in a new directory and starts teal on it.
    pub async fn start(text: &str) -> Teal {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("teal.toml"), text).unwrap();
        Teal::start_in(dir).await
    }

    /// Starts teal on the `teal.toml` already in `dir` (a restart).
    pub async fn start_in(dir: tempfile::TempDir) -> Teal {
        let path = dir.path().join("teal.toml");
        let config = teal::config::Config::load(&path).unwrap();
        let running = teal::app::start(config).await.unwrap();
        Teal {
            proxy: running.proxy_addr,
            admin: running.admin_addr,
            tls: running.tls_addr,
            path,
            dir: Some(dir),
            running: Some(running),
        }
    }

    /// Shuts down gracefully; returns whether it drained in time, and the directory.
    pub async fn stop(mut self) -> (bool, tempfile::TempDir) {
        let running = self.running.take().unwrap();
        running.shutdown();
        let drained = running.wait().await;
        (drained, self.dir.take().unwrap())
    }

    /// `GET path` on a new connection.
    pub async fn get(&self, path: &str) -> Reply {
        Conn::open(self.proxy).await.get(path).await
    }

    /// The body of `GET path`, trimmed.
    pub async fn text(&self, path: &str) -> String {
        self.get(path).await.body.trim().to_string()
    }

    /// An admin request: `method path` with a JSON `body` (sent as `application/json` unless
    /// empty) and an optional bearer token, as the CLI sends it.
    pub async fn admin(&self, method: &str, path: &str, body: &str, token: Option<&str>) -> Reply {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", self.admin.to_string());
        if !body.is_empty() {
            req = req.header("content-type", "application/json");
        }
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let req = req.body(Full::new(Bytes::from(body.to_string()))).unwrap();
        Conn::open(self.admin).await.send(req).await
    }

    /// `POST /switch {"to": pool}` without a token; panics unless 200.
    pub async fn switch(&self, pool: &str) -> Value {
        let r = self
            .admin("POST", "/switch", &format!("{{\"to\":\"{pool}\"}}"), None)
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        r.json()
    }

    /// Requests counted so far in `teal_requests_total`, summed over pools and classes, by the
    /// path that served them: `[own, hyper]`.
    pub async fn served(&self) -> [u64; 2] {
        let body = Conn::open(self.admin).await.get("/metrics").await.body;
        let mut served = [0; 2];
        for line in body
            .lines()
            .filter(|l| l.starts_with("teal_requests_total{"))
        {
            let count = line.rsplit(' ').next().and_then(|n| n.parse::<f64>().ok());
            let count = count.unwrap_or_else(|| panic!("a count in {line:?}")) as u64;
            if line.contains("path=\"own\"") {
                served[0] += count;
            } else if line.contains("path=\"hyper\"") {
                served[1] += count;
            }
        }
        served
    }

    /// The path (`"own"`, `"hyper"`) that served the one request answered since
    /// [`Teal::served`] said `before`, waiting up to `within` for it to be counted (it is when
    /// its exchange ends, just after the client has the response); `"none"` if nothing was.
    pub async fn path_since(&self, before: [u64; 2], within: Duration) -> &'static str {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let now = self.served().await;
            match (now[0] - before[0], now[1] - before[1]) {
                (0, 0) if tokio::time::Instant::now() < deadline => {}
                (0, 0) => return "none",
                (1, 0) => return "own",
                (0, 1) => return "hyper",
                other => panic!("more than one request counted: {other:?}"),
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// `teal_rejected_total{reason}` as `/metrics` shows it (0 when absent).
    pub async fn rejected(&self, reason: &str) -> u64 {
        let m = self.admin("GET", "/metrics", "", None).await.body;
        let key = format!("teal_rejected_total{{reason=\"{reason}\"}} ");
        m.lines()
            .find_map(|l| l.strip_prefix(&key))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    /// The health word `/status` shows for the first server of `pool`.
    pub async fn health_of(&self, pool: &str) -> String {
        let status = self.admin("GET", "/status", "", None).await.json();
        status["pools"][pool]["servers"][0]["health"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// The config file's text.
    pub fn file(&self) -> String {
        std::fs::read_to_string(&self.path).unwrap()
    }

    /// Edits `active` in the config file in place, as an operator would.
    pub fn edit_active(&self, from: &str, to: &str) {
        let text = self.file().replace(
            &format!("active = \"{from}\""),
            &format!("active = \"{to}\""),
        );
        std::fs::write(&self.path, text).unwrap();
    }
}

impl Drop for Teal {
    fn drop(&mut self) {
        if let Some(r) = &self.running {
            r.shutdown();
        }
    }
}

/// A response, fully read.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }
}

/// One HTTP/1.1 client connection.
pub struct Conn {
    sender: http1::SendRequest<Full<Bytes>>,
    addr: SocketAddr,
}

impl Conn {
    pub async fn open(addr: SocketAddr) -> Conn {
        Conn::over(TcpStream::connect(addr).await.unwrap(), addr).await
    }

    /// Connects from source address `src` (127.0.0.2, 127.0.0.3, ...: all loopback on Linux).
    pub async fn open_from(src: &str, addr: SocketAddr) -> Conn {
        let socket = TcpSocket::new_v4().unwrap();
        socket
            .bind(SocketAddr::new(src.parse::<IpAddr>().unwrap(), 0))
            .unwrap();
        Conn::over(socket.connect(addr).await.unwrap(), addr).await
    }

    async fn over(tcp: TcpStream, addr: SocketAddr) -> Conn {
        let (sender, conn) = http1::handshake(TokioIo::new(tcp)).await.unwrap();
        tokio::spawn(async move {
            let _ = conn.with_upgrades().await;
        });
        Conn { sender, addr }
    }

    pub async fn get(&mut self, path: &str) -> Reply {
        let req = Request::get(path)
            .header("host", self.addr.to_string())
            .body(Full::new(Bytes::new()))
            .unwrap();
        self.send(req).await
    }

    pub async fn send(&mut self, req: Request<Full<Bytes>>) -> Reply {
        self.sender.ready().await.unwrap();
        let res = self.sender.send_request(req).await.unwrap();
        let status = res.status();
        let headers = res.headers().clone();
        let body = res.into_body().collect().await.unwrap().to_bytes();
        Reply {
            status,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        }
    }

    /// Whether the connection is still open and usable.
    pub fn is_open(&self) -> bool {
        !self.sender.is_closed()
    }
}

/// `teal run -c path` as a child process; returns it with its proxy and admin addresses, read
/// from its startup log line (text or JSON logs).
pub async fn run_binary(path: &std::path::Path) -> (tokio::process::Child, SocketAddr, SocketAddr) {
    let (child, proxy, admin, _) = run_binary_logged(path).await;
    (child, proxy, admin)
}

/// The `teal::access` lines among the JSON lines `run_binary_logged` has seen.
pub fn access_lines(seen: &std::sync::Mutex<Vec<String>>) -> Vec<Value> {
    seen.lock()
        .unwrap()
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["target"] == "teal::access")
        .collect()
}

/// [`run_binary`], also keeping every line teal writes to stderr after its startup line.
pub async fn run_binary_logged(
    path: &std::path::Path,
) -> (
    tokio::process::Child,
    SocketAddr,
    SocketAddr,
    Arc<std::sync::Mutex<Vec<String>>>,
) {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_teal"))
        .args(["run", "-c", path.to_str().unwrap()])
        .env("TEAL_LOG", "info")
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines =
        tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(child.stderr.take().unwrap()));
    // `proxy=127.0.0.1:1 ` in text, `"proxy":"127.0.0.1:1"` in JSON.
    let field = |line: &str, name: &str| -> SocketAddr {
        let json = serde_json::from_str::<Value>(line).ok();
        if let Some(v) = json.as_ref().and_then(|j| j[name].as_str()) {
            return v.parse().unwrap();
        }
        let start = line.find(&format!("{name}=")).unwrap() + name.len() + 1;
        let rest = &line[start..];
        rest[..rest.find(' ').unwrap_or(rest.len())]
            .parse()
            .unwrap()
    };
    let line = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let line = lines.next_line().await.unwrap().expect("teal exited early");
            if line.contains("teal is serving") {
                return line;
            }
        }
    })
    .await
    .expect("teal started");
    // Keep draining stderr so teal never blocks on a full pipe.
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            log.lock().unwrap().push(line);
        }
    });
    (child, field(&line, "proxy"), field(&line, "admin"), seen)
}

/// A WebSocket echo server that prefixes every echo with `pool:`.
pub async fn ws_echo(pool: &'static str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else {
                    return;
                };
                while let Some(Ok(msg)) = futures_util::StreamExt::next(&mut ws).await {
                    if let tokio_tungstenite::tungstenite::Message::Text(t) = msg {
                        if futures_util::SinkExt::send(
                            &mut ws,
                            tokio_tungstenite::tungstenite::Message::text(format!("{pool}:{t}")),
                        )
                        .await
                        .is_err()
                        {
                            break;
                        }
                    }
                }
            });
        }
    });
    addr
}

/// Sends `signal` (`"TERM"`, `"HUP"`) to a running teal binary; panics if it cannot be sent.
pub async fn send_signal(child: &tokio::process::Child, signal: &str) {
    let pid = child.id().expect("the process is running").to_string();
    let sent = tokio::process::Command::new("kill")
        .args([format!("-{signal}"), pid])
        .status()
        .await
        .unwrap();
    assert!(sent.success(), "kill -{signal} failed");
}

/// Sends SIGTERM and waits (up to 1 s) until new connections to `proxy` are refused.
pub async fn terminate_and_expect_refusal(child: &tokio::process::Child, proxy: SocketAddr) {
    send_signal(child, "TERM").await;
    assert_eventually!(
        TcpStream::connect(proxy).await.is_err(),
        Duration::from_secs(1),
        "new connections still accepted after SIGTERM"
    );
}

/// Runs `promtool check metrics` on `text`; every line it prints must be in `allowed`. Skipped,
/// loudly, when promtool is not installed.
pub fn promtool_check(text: &str, allowed: &[String]) {
    use std::io::Write;
    let child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    let Ok(mut child) = child else {
        eprintln!("!!!!! SKIPPED: promtool not installed (apt-get install prometheus) !!!!!");
        return;
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let unexpected: Vec<&str> = said
        .lines()
        .filter(|l| !allowed.iter().any(|a| a == l.trim()))
        .collect();
    assert!(unexpected.is_empty(), "promtool: {said}\non:\n{text}");
    if allowed.is_empty() {
        assert!(out.status.success(), "promtool: {said}");
    }
}

/// Sends `text` on the WebSocket `ws` and returns the text message that comes back within 5 s.
pub async fn ws_roundtrip<S>(ws: &mut tokio_tungstenite::WebSocketStream<S>, text: &str) -> String
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use futures_util::{SinkExt, StreamExt};
    ws.send(tokio_tungstenite::tungstenite::Message::text(text))
        .await
        .unwrap();
    let reply = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .expect("echo in time")
        .unwrap()
        .unwrap();
    reply.into_text().unwrap().to_string()
}
