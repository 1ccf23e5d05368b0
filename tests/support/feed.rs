//! An open `GET /events` stream of the dashboard, read as a browser's `fetch()` would.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpStream;

/// The stream and what has been read of it but not yet taken.
pub struct Feed {
    body: Incoming,
    buf: String,
}

impl Feed {
    /// Opens the stream on the admin listener `admin` with `token`; panics unless 200
    /// `text/event-stream`, `no-cache`.
    pub async fn open(admin: SocketAddr, token: &str) -> Feed {
        let tcp = TcpStream::connect(admin).await.unwrap();
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .unwrap();
        tokio::spawn(conn);
        let req = Request::get("/events")
            .header("host", admin.to_string())
            .header("authorization", format!("Bearer {token}"))
            .body(Empty::<Bytes>::new())
            .unwrap();
        let res = sender.send_request(req).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(res.headers()["content-type"], "text/event-stream");
        assert_eq!(res.headers()["cache-control"], "no-cache");
        Feed {
            body: res.into_body(),
            buf: String::new(),
        }
    }

    /// The next event's data (`event: status`, one `data:` line of JSON); `None` once the stream
    /// ended (or broke).
    pub async fn next(&mut self) -> Option<Value> {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let lines: Vec<&str> = block
                    .lines()
                    .filter(|l| !l.is_empty() && !l.starts_with(':'))
                    .collect();
                if lines.is_empty() {
                    continue;
                }
                assert_eq!(lines.len(), 2, "{block:?}");
                assert_eq!(lines[0], "event: status", "{block:?}");
                let data = lines[1].strip_prefix("data: ").expect("a data line");
                return Some(serde_json::from_str(data).expect("JSON data"));
            }
            let frame = self.body.frame().await?.ok()?;
            if let Some(data) = frame.data_ref() {
                self.buf.push_str(std::str::from_utf8(data).unwrap());
            }
        }
    }

    /// Reads events until `want` holds for one, within `within`; returns it and when it came.
    pub async fn until(
        &mut self,
        within: Duration,
        want: impl Fn(&Value) -> bool,
    ) -> (Value, Instant) {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let next = tokio::time::timeout_at(deadline, self.next()).await;
            let event = next
                .unwrap_or_else(|_| panic!("no such event within {within:?}"))
                .expect("the stream ended");
            if want(&event) {
                return (event, Instant::now());
            }
        }
    }

    /// Reads until the stream ends or `within` passes; the events read and whether it ended.
    pub async fn drain_for(&mut self, within: Duration) -> (Vec<Value>, bool) {
        let deadline = tokio::time::Instant::now() + within;
        let mut seen = Vec::new();
        loop {
            match tokio::time::timeout_at(deadline, self.next()).await {
                Err(_) => return (seen, false),
                Ok(None) => return (seen, true),
                Ok(Some(e)) => seen.push(e),
            }
        }
    }
}
