//! Demo upstreams: stand-ins for the seed's Spring servers, for `teal demo`, `teal upstream`,
//! the docker example and the tests.
//!
//! - `GET /` (or `HEAD /`) answers the pool name and a newline, like the seed's app printing
//!   its `deployment` string.
//! - Any other path answers JSON: pool, name, version, and the request as received (method, path
//!   with query, headers, body length). The body is read as a stream and counted, not stored.
//! - `?delay_ms=N` on any path delays the answer by N ms (at most 60 s): a slow request on demand.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use serde_json::json;

use crate::config::Config;

/// Who a demo upstream says it is.
#[derive(Debug, Clone)]
pub struct Identity {
    /// The pool it belongs to, answered on `GET /`.
    pub pool: String,
    /// Its server name, like `server1-blue`.
    pub name: String,
    /// The app version it claims, like `0.0.1`.
    pub version: String,
}

/// Answers one request as the demo upstream `id`.
pub async fn handle(
    id: Arc<Identity>,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let delay = req
        .uri()
        .query()
        .and_then(|q| {
            q.split('&')
                .find_map(|kv| kv.strip_prefix("delay_ms="))
                .and_then(|v| v.parse::<u64>().ok())
        })
        .map(|ms| Duration::from_millis(ms.min(60_000)));
    let (parts, body) = req.into_parts();
    let mut body_bytes: u64 = 0;
    let mut body = body;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(f) => body_bytes += f.data_ref().map_or(0, |d| d.len() as u64),
            Err(_) => break,
        }
    }
    if let Some(d) = delay {
        tokio::time::sleep(d).await;
    }
    let root = parts.uri.path() == "/" && matches!(parts.method, Method::GET | Method::HEAD);
    let (text, content_type) = if root {
        (format!("{}\n", id.pool), "text/plain; charset=utf-8")
    } else {
        let headers: serde_json::Map<String, serde_json::Value> = parts
            .headers
            .keys()
            .map(|k| {
                let values: Vec<String> = parts
                    .headers
                    .get_all(k)
                    .iter()
                    .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                    .collect();
                (k.to_string(), json!(values.join(", ")))
            })
            .collect();
        let doc = json!({
            "pool": id.pool,
            "name": id.name,
            "version": id.version,
            "peer": peer.to_string(),
            "method": parts.method.as_str(),
            "path": parts.uri.path_and_query().map_or("/", |p| p.as_str()),
            "headers": headers,
            "body_bytes": body_bytes,
        });
        (format!("{doc}\n"), "application/json")
    };
    let mut res = Response::new(Full::new(Bytes::from(text)));
    res.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    Ok(res)
}

/// What `teal demo` prints on startup: where the proxy, the admin API and the dashboard are, and
/// what to try.
pub fn banner(proxy: SocketAddr, admin: SocketAddr) -> String {
    format!(
        "\n  teal demo: proxy http://{proxy}/  admin http://{admin}/status\n  dashboard: http://{admin}/\n\n    curl -s {proxy}/          # blue\n    curl -s {proxy}/green/    # preview of green\n    cargo run --release -- switch\n    curl -s {proxy}/          # green\n"
    )
}

/// The embedded demo config: proxy on 127.0.0.1:8080, admin on 127.0.0.1:9900, and the given
/// upstream addresses as pools blue and green.
pub fn config(blue: &[SocketAddr], green: &[SocketAddr]) -> Config {
    let list = |addrs: &[SocketAddr]| {
        addrs
            .iter()
            .map(|a| format!("\"{a}\""))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let text = format!(
        r#"active = "blue"
[proxy]
listen = "127.0.0.1:8080"
[admin]
listen = "127.0.0.1:9900"
[pools.blue]
servers = [{}]
[pools.green]
servers = [{}]
"#,
        list(blue),
        list(green)
    );
    Config::parse(&text, None).expect("the embedded demo config is valid")
}

#[cfg(test)]
mod tests {
    /// The startup banner names the dashboard at the admin listener's root.
    #[test]
    fn banner_names_the_dashboard() {
        let proxy = "127.0.0.1:8080".parse().unwrap();
        let admin = "127.0.0.1:9900".parse().unwrap();
        let text = super::banner(proxy, admin);
        assert!(
            text.contains("dashboard: http://127.0.0.1:9900/\n"),
            "{text}"
        );
        assert!(
            text.contains("admin http://127.0.0.1:9900/status"),
            "{text}"
        );
    }
}
