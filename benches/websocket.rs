//! WebSocket load tool for `benches/websocket.sh` (issue 19, targets 6 and 3): not a timed test.
//!
//! ```text
//! cargo bench --bench websocket -- echo    ADDR                       # echo upstream
//! cargo bench --bench websocket -- relay   URL CONNS WINDOW SIZE SECS # prints "msg/s N"
//! cargo bench --bench websocket -- latency URL CONNS ROUNDS SIZE      # prints "p50_us N p99_us N"
//! cargo bench --bench websocket -- idle    URL CONNS SECS [DONE_FILE] # prints "open N" when all are
//! ```
//!
//! - `echo`: accepts WebSockets on ADDR and sends every data message back.
//! - `relay`: CONNS connections, each keeping WINDOW binary messages of SIZE bytes in flight (a
//!   new one per echo) for SECS seconds; counts the echoes: messages per second, all connections.
//! - `latency`: CONNS connections, each doing ROUNDS ping-pong round trips (after 100 unmeasured
//!   ones) one at a time; p50 and p99 of all of them in microseconds.
//! - `idle`: opens CONNS WebSockets (the handshake by hand on a bare socket, so the holder costs a
//!   socket each and no buffers), prints `open N`, and holds them for SECS seconds or until
//!   DONE_FILE exists.
//!
//! Loopback only; every mode is bounded by its count and SECS.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

type Ws = tokio_tungstenite::WebSocketStream<TcpStream>;
type Error = Box<dyn std::error::Error + Send + Sync>;

fn config() -> WebSocketConfig {
    // Small read buffers: the upstream holds thousands of idle sockets in the idle runs.
    WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(4096)
}

fn main() -> Result<(), Error> {
    // cargo bench passes `--bench` to harness = false targets; skip flags.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let arg = |i: usize| args.get(i).map(String::as_str).unwrap_or("");
    let num = |i: usize| {
        arg(i)
            .parse::<u64>()
            .map_err(|_| format!("argument {i}: a number"))
    };
    let rt = tokio::runtime::Runtime::new()?;
    match arg(0) {
        "echo" => rt.block_on(echo(arg(1).to_string())),
        "relay" => rt.block_on(relay(arg(1), num(2)?, num(3)?, num(4)?, num(5)?)),
        "latency" => rt.block_on(latency(arg(1), num(2)?, num(3)?, num(4)?)),
        "idle" => rt.block_on(idle(arg(1), num(2)?, num(3)?, args.get(4).cloned())),
        // `cargo bench` without arguments (e.g. for every bench target) does nothing.
        _ => {
            eprintln!("usage: see the doc comment of benches/websocket.rs");
            Ok(())
        }
    }
}

/// Echo upstream: every data message goes back on the same socket.
async fn echo(addr: String) -> Result<(), Error> {
    let listener = TcpListener::bind(&addr).await?;
    loop {
        let (tcp, _) = listener.accept().await?;
        tokio::spawn(async move {
            tcp.set_nodelay(true).ok();
            let Ok(ws) = tokio_tungstenite::accept_async_with_config(tcp, Some(config())).await
            else {
                return;
            };
            let (tx, rx) = ws.split();
            let data = rx.filter_map(|m| async move {
                match m {
                    Ok(m) if m.is_binary() || m.is_text() => Some(Ok(m)),
                    Ok(_) => None,
                    Err(e) => Some(Err(e)),
                }
            });
            // `forward` flushes only when nothing more is waiting: echoes are batched under load.
            let _ = data.forward(tx).await;
        });
    }
}

/// `ws://host:port/path` -> (`host:port`, `/path`).
fn split_url(url: &str) -> Result<(&str, String), Error> {
    let rest = url.strip_prefix("ws://").ok_or("a ws:// URL")?;
    Ok(rest
        .split_once('/')
        .map_or((rest, "/".to_string()), |(h, p)| (h, format!("/{p}"))))
}

async fn connect(url: &str) -> Result<Ws, Error> {
    let tcp = TcpStream::connect(split_url(url)?.0).await?;
    tcp.set_nodelay(true)?;
    let (ws, _) = tokio_tungstenite::client_async_with_config(url, tcp, Some(config())).await?;
    Ok(ws)
}

/// Relay throughput: echoes per second over `conns` connections with `window` messages in flight.
async fn relay(url: &str, conns: u64, window: u64, size: u64, secs: u64) -> Result<(), Error> {
    let mut sockets = Vec::new();
    for _ in 0..conns {
        sockets.push(connect(url).await?);
    }
    let count = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let payload = vec![b'x'; size as usize];
    let mut tasks = Vec::new();
    for ws in sockets {
        let (mut tx, mut rx) = ws.split();
        let credits = Arc::new(Semaphore::new(window as usize));
        let (c, s, p) = (credits.clone(), stop.clone(), payload.clone());
        tasks.push(tokio::spawn(async move {
            while !s.load(Ordering::Relaxed) {
                // Feed while credits are there; flush before waiting for one.
                let permit = match c.try_acquire() {
                    Ok(permit) => permit,
                    Err(_) => {
                        tx.flush().await?;
                        c.acquire().await?
                    }
                };
                permit.forget();
                tx.feed(Message::binary(p.clone())).await?;
            }
            tx.close().await?;
            Ok::<_, Error>(())
        }));
        let (n, s) = (count.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            while let Some(m) = rx.next().await {
                if m?.is_binary() {
                    if !s.load(Ordering::Relaxed) {
                        n.fetch_add(1, Ordering::Relaxed);
                    }
                    credits.add_permits(1);
                }
            }
            Ok(())
        }));
    }
    let start = Instant::now();
    let begin = count.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let got = count.load(Ordering::Relaxed) - begin;
    let elapsed = start.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    // Bounded: the tasks end when the closes are echoed; give them a moment, then exit anyway.
    let _ = tokio::time::timeout(
        Duration::from_secs(2),
        futures_util::future::join_all(tasks),
    )
    .await;
    println!("msg/s {:.0}", got as f64 / elapsed);
    Ok(())
}

/// Round-trip latency: one message at a time per connection.
async fn latency(url: &str, conns: u64, rounds: u64, size: u64) -> Result<(), Error> {
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let mut ws = connect(url).await?;
        let payload = vec![b'x'; size as usize];
        tasks.push(tokio::spawn(async move {
            let mut times = Vec::with_capacity(rounds as usize);
            for i in 0..rounds + 100 {
                let start = Instant::now();
                ws.send(Message::binary(payload.clone())).await?;
                loop {
                    match ws.next().await {
                        Some(m) => {
                            if m?.is_binary() {
                                break;
                            }
                        }
                        None => return Err("closed".into()),
                    }
                }
                if i >= 100 {
                    times.push(start.elapsed().as_nanos() as u64);
                }
            }
            ws.close(None).await.ok();
            Ok::<_, Error>(times)
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await??);
    }
    all.sort_unstable();
    let at = |q: f64| all[((all.len() as f64 * q) as usize).min(all.len() - 1)] as f64 / 1000.0;
    println!("p50_us {:.1} p99_us {:.1}", at(0.50), at(0.99));
    Ok(())
}

/// Opens `conns` WebSockets by hand (no per-socket buffers here) and holds them.
async fn idle(url: &str, conns: u64, secs: u64, done: Option<String>) -> Result<(), Error> {
    let (host, path) = split_url(url)?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut held = Vec::with_capacity(conns as usize);
    // 64 handshakes at a time.
    let mut pending = futures_util::stream::iter(0..conns)
        .map(|_| open_raw(host, &request))
        .buffer_unordered(64);
    while let Some(tcp) = pending.next().await {
        held.push(tcp?);
    }
    println!("open {}", held.len());
    while Instant::now() < deadline
        && !done
            .as_deref()
            .is_some_and(|f| std::path::Path::new(f).exists())
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

async fn open_raw(host: &str, request: &str) -> Result<TcpStream, Error> {
    let mut tcp = TcpStream::connect(host).await?;
    tcp.write_all(request.as_bytes()).await?;
    let mut head = Vec::new();
    let mut byte = [0u8; 512];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tcp.read(&mut byte).await?;
        if n == 0 || head.len() > 8192 {
            return Err("no 101".into());
        }
        head.extend_from_slice(&byte[..n]);
    }
    if !head.starts_with(b"HTTP/1.1 101") {
        return Err(format!(
            "answer: {}",
            String::from_utf8_lossy(&head[..40.min(head.len())])
        )
        .into());
    }
    Ok(tcp)
}
