//! Raw-socket peers: a scripted upstream that answers byte for byte what a test tells it to (a
//! hostile one included; [`recording`] answers `ok` to everything), a [`silent`] one, and a client
//! that writes bytes and reads whole responses ([`RawClient`], or [`send_raw`] for one exchange).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// One request as the scripted upstream received it.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    pub path: String,
    /// The head as it arrived, request line and fields.
    pub head: String,
    /// The body, by Content-Length or chunked framing (a chunked body is kept as it arrived).
    pub body: Vec<u8>,
    /// Which accepted connection (1, 2, ...) it came on.
    pub conn: usize,
}

impl Received {
    /// The value of the first field called `name` (case-insensitive).
    pub fn field(&self, name: &str) -> Option<String> {
        self.head.split("\r\n").skip(1).find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    }

    /// The body's data: [`Received::body`] with a chunked framing decoded.
    pub fn data(&self) -> Vec<u8> {
        match self.field("transfer-encoding") {
            Some(te) if te.contains("chunked") => {
                dechunk(&self.body).map_or_else(Vec::new, |d| d.1)
            }
            _ => self.body.clone(),
        }
    }
}

/// What the scripted upstream does in answer to one request.
#[derive(Debug, Clone)]
pub enum Step {
    /// Writes these bytes; if teal closed the connection, records `"write failed"` in the
    /// upstream's events.
    Write(Vec<u8>),
    /// Waits.
    Pause(Duration),
    /// Closes the connection.
    Close,
    /// Waits up to this long for the peer (teal) to close the connection, and records in the
    /// upstream's events `"closed by teal"` or `"left open"`.
    ExpectClose(Duration),
}

/// Shorthand for [`Step::Write`].
pub fn write(bytes: impl AsRef<[u8]>) -> Step {
    Step::Write(bytes.as_ref().to_vec())
}

/// Shorthand for [`Step::Pause`] in milliseconds.
pub fn pause(ms: u64) -> Step {
    Step::Pause(Duration::from_millis(ms))
}

/// A plain `200` whose body says which request it answers: `<method> <path>`.
pub fn answer(req: &Received) -> Step {
    let body = format!("{} {}", req.method, req.path);
    write(format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    ))
}

/// A plain `200` with the body `ok`.
pub fn ok() -> Step {
    write("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
}

/// A scripted upstream: every request is answered by the steps its script returns.
pub struct Scripted {
    pub addr: SocketAddr,
    /// Connections accepted so far.
    pub accepted: Arc<AtomicUsize>,
    /// Every request received, in order.
    pub received: Arc<Mutex<Vec<Received>>>,
    /// What [`Step::ExpectClose`] saw.
    pub events: Arc<Mutex<Vec<String>>>,
    /// Connections ended so far, by either side.
    pub ended: Arc<AtomicUsize>,
}

impl Scripted {
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    pub fn events(&self) -> Vec<String> {
        self.events.lock().unwrap().clone()
    }

    pub fn ended(&self) -> usize {
        self.ended.load(Ordering::SeqCst)
    }

    /// Waits (2 s at most) until [`Step::ExpectClose`] has seen `count` connections end, and
    /// asserts that teal closed every one: a poisoned connection must not go back to the pool.
    pub async fn assert_all_closed_by_teal(&self, count: usize) {
        crate::assert_eventually!(
            self.events().len() == count,
            Duration::from_secs(2),
            "{:?}",
            self.events()
        );
        let events = self.events();
        assert!(
            events.iter().all(|e| e == "closed by teal"),
            "a poisoned idle connection was left open: {events:?}"
        );
    }
}

type Script = dyn Fn(&Received) -> Vec<Step> + Send + Sync;

/// Starts a scripted upstream on 127.0.0.1; `script` decides the answer to each request.
pub async fn scripted(script: impl Fn(&Received) -> Vec<Step> + Send + Sync + 'static) -> Scripted {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let upstream = Scripted {
        addr,
        accepted: Arc::default(),
        received: Arc::default(),
        events: Arc::default(),
        ended: Arc::default(),
    };
    let script: Arc<Script> = Arc::new(script);
    let (accepted, received, events, ended) = (
        upstream.accepted.clone(),
        upstream.received.clone(),
        upstream.events.clone(),
        upstream.ended.clone(),
    );
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            let conn = accepted.fetch_add(1, Ordering::SeqCst) + 1;
            let (script, received, events) = (script.clone(), received.clone(), events.clone());
            let ended = ended.clone();
            tokio::spawn(async move {
                serve(s, conn, &*script, &received, &events).await;
                ended.fetch_add(1, Ordering::SeqCst);
            });
        }
    });
    upstream
}

/// A scripted upstream that answers every request [`ok`]; [`Scripted::received`] records them.
pub async fn recording() -> Scripted {
    scripted(|_| vec![ok()]).await
}

/// An upstream that accepts connections and holds them open, never reading or answering.
pub async fn silent() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    addr
}

async fn serve(
    mut s: TcpStream,
    conn: usize,
    script: &Script,
    received: &Mutex<Vec<Received>>,
    events: &Mutex<Vec<String>>,
) {
    let mut buf = Vec::new();
    loop {
        let Some(req) = read_request(&mut s, &mut buf, conn).await else {
            return;
        };
        received.lock().unwrap().push(req.clone());
        for step in script(&req) {
            match step {
                Step::Write(bytes) => {
                    if s.write_all(&bytes).await.is_err() {
                        events.lock().unwrap().push("write failed".to_string());
                        return;
                    }
                }
                Step::Pause(d) => tokio::time::sleep(d).await,
                Step::Close => return,
                Step::ExpectClose(within) => {
                    let mut byte = [0u8; 1];
                    let seen = match tokio::time::timeout(within, s.read(&mut byte)).await {
                        Ok(Ok(0)) | Ok(Err(_)) => "closed by teal",
                        Ok(Ok(_)) => "sent more",
                        Err(_) => "left open",
                    };
                    events.lock().unwrap().push(seen.to_string());
                    if seen != "left open" {
                        return;
                    }
                }
            }
        }
    }
}

/// Reads one request head and its body (by Content-Length, or chunked up to its last chunk).
async fn read_request(s: &mut TcpStream, buf: &mut Vec<u8>, conn: usize) -> Option<Received> {
    loop {
        let mut fields = [httparse::EMPTY_HEADER; 128];
        let mut req = httparse::Request::new(&mut fields);
        if let Ok(httparse::Status::Complete(n)) = req.parse(buf) {
            let field = |name: &str| {
                req.headers
                    .iter()
                    .find(|f| f.name.eq_ignore_ascii_case(name))
                    .and_then(|f| std::str::from_utf8(f.value).ok())
            };
            let chunked = field("transfer-encoding").is_some_and(|te| te.contains("chunked"));
            let mut length: usize = field("content-length")
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            let (method, path) = (req.method?.to_string(), req.path?.to_string());
            if chunked {
                length = loop {
                    if let Some((used, _)) = dechunk(&buf[n..]) {
                        break used;
                    }
                    read_more(s, buf).await?;
                };
            }
            while buf.len() < n + length {
                read_more(s, buf).await?;
            }
            let all: Vec<u8> = buf.drain(..n + length).collect();
            return Some(Received {
                method,
                path,
                head: String::from_utf8_lossy(&all[..n]).into_owned(),
                body: all[n..].to_vec(),
                conn,
            });
        }
        read_more(s, buf).await?;
    }
}

async fn read_more(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<()> {
    let mut more = [0u8; 8192];
    match s.read(&mut more).await {
        Ok(0) | Err(_) => None,
        Ok(n) => {
            buf.extend_from_slice(&more[..n]);
            Some(())
        }
    }
}

/// A response a raw client read, its body decoded from its framing.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    /// The head, status line and fields, as received.
    pub head: String,
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The value of the first field called `name` (case-insensitive).
    pub fn field(&self, name: &str) -> Option<String> {
        self.head.split("\r\n").skip(1).find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    }
}

/// A client on a raw socket: writes bytes, reads whole responses (Content-Length, chunked, or
/// none for HEAD, 1xx, 204 and 304), keeping what arrives after one for the next.
pub struct RawClient {
    pub tcp: TcpStream,
    buf: Vec<u8>,
}

impl RawClient {
    pub async fn connect(addr: SocketAddr) -> RawClient {
        let tcp = TcpStream::connect(addr).await.unwrap();
        tcp.set_nodelay(true).unwrap();
        RawClient {
            tcp,
            buf: Vec::new(),
        }
    }

    pub async fn send(&mut self, bytes: impl AsRef<[u8]>) {
        self.tcp.write_all(bytes.as_ref()).await.unwrap();
    }

    /// `GET path` with `Host: x` and the extra header lines `fields` (each ending in CRLF).
    pub async fn get(&mut self, path: &str, fields: &str) -> RawResponse {
        self.send(format!("GET {path} HTTP/1.1\r\nHost: x\r\n{fields}\r\n"))
            .await;
        self.response(false).await.expect("a response")
    }

    /// Reads one response (`head_request`: the request was HEAD, so there is no body); `None`
    /// when the connection closes first. Panics after 5 s without one.
    pub async fn response(&mut self, head_request: bool) -> Option<RawResponse> {
        tokio::time::timeout(Duration::from_secs(5), self.read_response(head_request))
            .await
            .expect("a response or a close within 5 s")
    }

    async fn read_response(&mut self, head_request: bool) -> Option<RawResponse> {
        loop {
            if let Some(r) = self.parse(head_request) {
                return Some(r);
            }
            read_more(&mut self.tcp, &mut self.buf).await?;
        }
    }

    fn parse(&mut self, head_request: bool) -> Option<RawResponse> {
        let mut fields = [httparse::EMPTY_HEADER; 128];
        let mut res = httparse::Response::new(&mut fields);
        let httparse::Status::Complete(n) = res.parse(&self.buf).ok()? else {
            return None;
        };
        let status = res.code?;
        let field = |name: &str| {
            res.headers
                .iter()
                .find(|f| f.name.eq_ignore_ascii_case(name))
                .map(|f| String::from_utf8_lossy(f.value).into_owned())
        };
        let no_body = head_request || status < 200 || status == 204 || status == 304;
        let (end, body) = if no_body {
            (n, Vec::new())
        } else if field("transfer-encoding").is_some_and(|t| t.contains("chunked")) {
            dechunk(&self.buf[n..]).map(|(used, body)| (n + used, body))?
        } else {
            let length: usize = field("content-length")?.trim().parse().ok()?;
            (self.buf.len() >= n + length)
                .then(|| (n + length, self.buf[n..n + length].to_vec()))?
        };
        let head = String::from_utf8_lossy(&self.buf[..n]).into_owned();
        self.buf.drain(..end);
        Some(RawResponse { status, head, body })
    }

    /// Reads until the connection closes or nothing arrives for `quiet`; returns what was read
    /// (besides anything left over from a response) and whether it closed.
    pub async fn rest(&mut self, quiet: Duration) -> (String, bool) {
        let mut out = std::mem::take(&mut self.buf);
        let mut more = [0u8; 8192];
        let closed = loop {
            match tokio::time::timeout(quiet, self.tcp.read(&mut more)).await {
                Ok(Ok(0)) | Ok(Err(_)) => break true,
                Ok(Ok(n)) => out.extend_from_slice(&more[..n]),
                Err(_) => break false,
            }
        };
        (String::from_utf8_lossy(&out).into_owned(), closed)
    }
}

/// Sends `bytes` on a new connection to `addr`, then reads until it closes or is quiet for 1 s:
/// what was read, and whether it closed.
pub async fn send_raw(addr: SocketAddr, bytes: impl AsRef<[u8]>) -> (String, bool) {
    let mut client = RawClient::connect(addr).await;
    client.send(bytes).await;
    client.rest(Duration::from_secs(1)).await
}

/// The status code of the response at the start of `text`, or 0 if there is none.
pub fn status_of(text: &str) -> u16 {
    text.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// Decodes a chunked body at the start of `bytes`: how many bytes it took, and the data.
fn dechunk(bytes: &[u8]) -> Option<(usize, Vec<u8>)> {
    let mut at = 0;
    let mut data = Vec::new();
    loop {
        let line_end = at + bytes[at..].windows(2).position(|w| w == b"\r\n")?;
        let line = std::str::from_utf8(&bytes[at..line_end]).ok()?;
        let size = usize::from_str_radix(line.split(';').next()?.trim(), 16).ok()?;
        at = line_end + 2;
        if size == 0 {
            // Trailers until an empty line.
            loop {
                let end = at + bytes[at..].windows(2).position(|w| w == b"\r\n")?;
                let empty = end == at;
                at = end + 2;
                if empty {
                    return Some((at, data));
                }
            }
        }
        if bytes.len() < at + size + 2 {
            return None;
        }
        data.extend_from_slice(&bytes[at..at + size]);
        at += size + 2;
    }
}

/// Reads one Content-Length-framed response from `stream`: its head and body.
pub async fn read_response<S: AsyncReadExt + Unpin>(stream: &mut S) -> (String, String) {
    let mut buf = Vec::new();
    let mut more = [0u8; 4096];
    let read = async {
        loop {
            let mut fields = [httparse::EMPTY_HEADER; 64];
            let mut res = httparse::Response::new(&mut fields);
            if let Ok(httparse::Status::Complete(n)) = res.parse(&buf) {
                let length: usize = res
                    .headers
                    .iter()
                    .find(|f| f.name.eq_ignore_ascii_case("content-length"))
                    .and_then(|f| std::str::from_utf8(f.value).ok()?.parse().ok())
                    .expect("a Content-Length");
                if buf.len() >= n + length {
                    let head = String::from_utf8_lossy(&buf[..n]).into_owned();
                    let body = String::from_utf8_lossy(&buf[n..n + length]).into_owned();
                    return (head, body);
                }
            }
            let got = stream.read(&mut more).await.unwrap();
            assert!(got > 0, "closed before a whole response: {buf:?}");
            buf.extend_from_slice(&more[..got]);
        }
    };
    tokio::time::timeout(Duration::from_secs(5), read)
        .await
        .expect("a response within 5 s")
}
