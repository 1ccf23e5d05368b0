//! The admin API, on its own listener. Every answer is JSON except `/metrics`.
//!
//! | endpoint | token | what |
//! |---|---|---|
//! | `POST /switch` | yes | make a pool active: body `{"to":"green"}` or `?to=green`; no target flips between exactly two pools; `wait_drain` (seconds) answers once the old pool is idle or the time is up |
//! | `GET /drain?pool=P&timeout=30s` | yes | wait until pool P has nothing open (or the timeout), without switching |
//! | `GET /status` | yes | active pool, generation, every pool's servers with in-flight and tunnel counts, draining state |
//! | `GET /metrics` | no | Prometheus text 0.0.4, or OpenMetrics when `Accept` asks for it |
//! | `GET /healthz` | no | 200 while the proxy serves |
//!
//! When a token is configured, requests that need one must carry `Authorization: Bearer <token>`;
//! it is compared in constant time and never logged. A peer that fails authentication
//! [`MAX_FAILURES`] times within [`FAILURE_WINDOW`] gets 429 until the window ends, without its
//! guesses being checked. `[admin] allow` restricts who may call any endpoint at all (403).
//! Errors are `{"error": "..."}` with 400, 401, 403, 404, 405, 409, 413 or 429.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::{json, Value};
use tracing::warn;

use crate::metrics::Exposition;
use crate::state::{State, SwitchError};

/// Admin request bodies larger than this are refused with 413.
const MAX_BODY: usize = 64 * 1024;
/// Failed authentications a peer may make within [`FAILURE_WINDOW`] before it is refused (429).
pub const MAX_FAILURES: u32 = 5;
/// The window failed authentications are counted in.
pub const FAILURE_WINDOW: Duration = Duration::from_secs(60);

/// The longest an admin request may wait for a drain.
const MAX_WAIT: Duration = Duration::from_secs(3600);

/// A refusal from the admin API.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// Malformed request or impossible switch.
    #[error("{0}")]
    BadRequest(String),
    /// Missing or wrong token.
    #[error("missing or wrong bearer token")]
    Unauthorized,
    /// The peer is not on `[admin] allow`.
    #[error("this address may not use the admin API")]
    Forbidden,
    /// Too many failed authentications from this peer; retry after the given seconds.
    #[error("too many failed authentications; retry in {0} s")]
    TooManyFailures(u64),
    /// No such endpoint.
    #[error("no such endpoint; try /status, /switch, /drain, /metrics or /healthz")]
    NotFound,
    /// Endpoint exists, method does not.
    #[error("method not allowed; use {0}")]
    Method(&'static str),
    /// Body over [`MAX_BODY`].
    #[error("request body too large (limit {MAX_BODY} bytes)")]
    TooLarge,
    /// The switch would make a pool with no healthy server active.
    #[error("{0}")]
    Conflict(String, Value),
}

impl AdminError {
    fn status(&self) -> StatusCode {
        match self {
            AdminError::BadRequest(_) => StatusCode::BAD_REQUEST,
            AdminError::Unauthorized => StatusCode::UNAUTHORIZED,
            AdminError::Forbidden => StatusCode::FORBIDDEN,
            AdminError::TooManyFailures(_) => StatusCode::TOO_MANY_REQUESTS,
            AdminError::NotFound => StatusCode::NOT_FOUND,
            AdminError::Method(_) => StatusCode::METHOD_NOT_ALLOWED,
            AdminError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            AdminError::Conflict(..) => StatusCode::CONFLICT,
        }
    }
}

/// `POST /switch` body.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SwitchRequest {
    to: Option<String>,
    /// Seconds to wait for the previous pool to drain before answering.
    wait_drain: Option<f64>,
    /// Switch even to a pool with no healthy server.
    #[serde(default)]
    force: bool,
}

/// The admin service.
#[derive(Clone)]
pub struct Admin {
    state: Arc<State>,
    /// Failed authentications per peer: count and when the window started.
    failures: Arc<Mutex<HashMap<IpAddr, (u32, Instant)>>>,
}

type AdminResult = Result<Response<Full<Bytes>>, AdminError>;

impl Admin {
    /// An admin API over `state`.
    pub fn new(state: Arc<State>) -> Admin {
        Admin {
            state,
            failures: Arc::default(),
        }
    }

    /// Serves one admin request from `peer`.
    pub async fn handle(
        self,
        req: Request<Incoming>,
        peer: SocketAddr,
    ) -> Result<Response<Full<Bytes>>, Infallible> {
        let result = self.route(req, peer).await;
        Ok(result.unwrap_or_else(|e| {
            let mut doc = json!({ "error": e.to_string() });
            if let AdminError::Conflict(_, servers) = &e {
                doc["servers"] = servers.clone();
            }
            let mut res = json_response(e.status(), &doc);
            match e {
                AdminError::Unauthorized => {
                    res.headers_mut()
                        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                }
                AdminError::TooManyFailures(secs) => {
                    if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                        res.headers_mut().insert(header::RETRY_AFTER, v);
                    }
                }
                AdminError::Method(allow) => {
                    res.headers_mut()
                        .insert(header::ALLOW, HeaderValue::from_static(allow));
                }
                _ => {}
            }
            res
        }))
    }

    async fn route(&self, req: Request<Incoming>, peer: SocketAddr) -> AdminResult {
        if let Some(allow) = &self.state.load().config.admin.allow {
            let ip = peer.ip().to_canonical();
            if !allow.iter().any(|n| n.contains(&ip)) {
                self.state.metrics().reject("admin_forbidden");
                warn!(peer = %peer, "admin request refused: not on admin.allow");
                return Err(AdminError::Forbidden);
            }
        }
        let path = req.uri().path();
        let method = req.method();
        match path {
            "/healthz" => {
                only(method, &Method::GET, "GET")?;
                Ok(json_response(StatusCode::OK, &json!({ "status": "ok" })))
            }
            "/metrics" => {
                only(method, &Method::GET, "GET")?;
                let accept = req.headers().get(header::ACCEPT);
                let format = Exposition::negotiate(accept.and_then(|v| v.to_str().ok()));
                let text = self.state.metrics().expose(&self.state.load(), format);
                let mut res = Response::new(Full::new(Bytes::from(text)));
                res.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static(format.content_type()),
                );
                Ok(res)
            }
            "/status" => {
                only(method, &Method::GET, "GET")?;
                self.authorize(&req, peer)?;
                Ok(json_response(StatusCode::OK, &self.status()))
            }
            "/switch" => {
                only(method, &Method::POST, "POST")?;
                self.authorize(&req, peer)?;
                self.switch(req, peer).await
            }
            "/drain" => {
                only(method, &Method::GET, "GET")?;
                self.authorize(&req, peer)?;
                self.drain(&req).await
            }
            _ => Err(AdminError::NotFound),
        }
    }

    fn authorize(&self, req: &Request<Incoming>, peer: SocketAddr) -> Result<(), AdminError> {
        let snap = self.state.load();
        let Some(token) = &snap.config.admin.token else {
            return Ok(());
        };
        let ip = peer.ip().to_canonical();
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((count, since)) = failures.get(&ip) {
            let left = FAILURE_WINDOW.saturating_sub(since.elapsed());
            if *count >= MAX_FAILURES && !left.is_zero() {
                self.state.metrics().reject("admin_rate_limited");
                return Err(AdminError::TooManyFailures(left.as_secs().max(1)));
            }
        }
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
            .unwrap_or_default();
        if constant_time_eq(given, token.expose().as_bytes()) {
            failures.remove(&ip);
            return Ok(());
        }
        if failures.len() > 4096 {
            // Bounded memory under a spray from many addresses.
            failures.retain(|_, (_, since)| since.elapsed() < FAILURE_WINDOW);
        }
        let entry = failures.entry(ip).or_insert((0, Instant::now()));
        if entry.1.elapsed() >= FAILURE_WINDOW {
            *entry = (0, Instant::now());
        }
        entry.0 += 1;
        self.state.metrics().reject("admin_unauthorized");
        warn!(peer = %peer, path = req.uri().path(), failures = entry.0, "admin request refused: missing or wrong token");
        Err(AdminError::Unauthorized)
    }

    async fn switch(&self, req: Request<Incoming>, peer: SocketAddr) -> AdminResult {
        let query_to = query_param(&req, "to").map(str::to_string);
        let query_wait = query_param(&req, "wait_drain")
            .map(parse_wait)
            .transpose()?;
        let query_force = query_param(&req, "force") == Some("true");
        let body = Limited::new(req.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| {
                if e.is::<http_body_util::LengthLimitError>() {
                    AdminError::TooLarge
                } else {
                    AdminError::BadRequest(format!("could not read the body: {e}"))
                }
            })?
            .to_bytes();
        let parsed: SwitchRequest = if body.iter().all(u8::is_ascii_whitespace) {
            SwitchRequest::default()
        } else {
            serde_json::from_slice(&body).map_err(|e| {
                AdminError::BadRequest(format!("body must be JSON like {{\"to\":\"green\"}}: {e}"))
            })?
        };
        let to = match (parsed.to, query_to) {
            (Some(a), Some(b)) if a != b => {
                return Err(AdminError::BadRequest(format!(
                    "body says {a:?} but the query says {b:?}"
                )))
            }
            (a, b) => a.or(b),
        };
        let wait = match parsed.wait_drain {
            Some(secs) => Some(seconds(secs)?),
            None => query_wait,
        };
        let who = peer.to_string();
        let switched = self
            .state
            .switch(to.as_deref(), &who, parsed.force || query_force)
            .await
            .map_err(|e| match &e {
                SwitchError::UnknownPool { .. } | SwitchError::NoTarget(_) => {
                    AdminError::BadRequest(e.to_string())
                }
                SwitchError::Unhealthy { servers, .. } => {
                    let servers: serde_json::Map<String, Value> = servers
                        .iter()
                        .map(|(addr, report)| (addr.clone(), json!(report)))
                        .collect();
                    AdminError::Conflict(e.to_string(), Value::Object(servers))
                }
            })?;
        let mut doc = serde_json::to_value(&switched).unwrap_or(Value::Null);
        if let Some(wait) = wait {
            let open = if switched.active == switched.previous {
                // Nothing changed, so no pool was left behind to drain.
                Default::default()
            } else {
                switched.previous_pool.wait_idle(wait).await
            };
            doc["drained"] = json!(open.is_idle());
            doc["open"] = json!(open);
        }
        Ok(json_response(StatusCode::OK, &doc))
    }

    /// `GET /drain?pool=P&timeout=T`: waits up to T for pool P to have nothing open.
    async fn drain(&self, req: &Request<Incoming>) -> AdminResult {
        let name = query_param(req, "pool")
            .ok_or_else(|| AdminError::BadRequest("name the pool: /drain?pool=blue".into()))?;
        let timeout = query_param(req, "timeout")
            .map(parse_wait)
            .transpose()?
            .unwrap_or_default();
        let snap = self.state.load();
        let pool = snap
            .pool(name)
            .ok_or_else(|| AdminError::BadRequest(format!("no pool named {name:?}")))?;
        let open = pool.wait_idle(timeout).await;
        let active = self.state.load().active.name == pool.name;
        Ok(json_response(
            StatusCode::OK,
            &json!({ "pool": name, "active": active, "drained": open.is_idle(), "open": open }),
        ))
    }

    /// The `GET /status` document.
    fn status(&self) -> Value {
        let snap = self.state.load();
        let pools: serde_json::Map<String, Value> = snap
            .pools
            .iter()
            .map(|p| {
                let servers: Vec<Value> = p
                    .servers
                    .iter()
                    .map(|s| {
                        let health = s.health.report();
                        json!({
                            "address": s.authority.as_str(),
                            "in_flight": s.in_flight(),
                            "tunnels": s.tunnels(),
                            "health": health.state,
                            "since": health.since,
                            "last_error": health.last_error,
                            "resolved": s.ips().iter().map(|a| a.to_string()).collect::<Vec<_>>(),
                        })
                    })
                    .collect();
                let open = p.open();
                let active = p.name == snap.active.name;
                let draining = !active && !open.is_idle();
                let since = p
                    .inactive_since()
                    .filter(|_| draining)
                    .map(|t| humantime::format_rfc3339_seconds(t).to_string());
                let doc = json!({
                    "active": active,
                    "ready": crate::state::ready(&snap, p),
                    "in_flight": open.in_flight,
                    "tunnels": open.tunnels,
                    "draining": draining,
                    "draining_since": since,
                    "servers": servers,
                });
                (p.name.to_string(), doc)
            })
            .collect();
        json!({
            "active": &*snap.active.name,
            "generation": snap.generation,
            "config": snap.config.path.as_ref().map(|p| p.display().to_string()),
            "pools": pools,
        })
    }
}

/// The value of `name` in the request's query string.
fn query_param<'a>(req: &'a Request<Incoming>, name: &str) -> Option<&'a str> {
    req.uri()
        .query()?
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// A wait given as `30s`, `500ms`, `1m` or plain seconds (`30`, `0.5`).
fn parse_wait(text: &str) -> Result<Duration, AdminError> {
    match text.parse::<f64>() {
        Ok(secs) => seconds(secs),
        Err(_) => humantime::parse_duration(text)
            .map_err(|e| AdminError::BadRequest(format!("bad duration {text:?}: {e}")))
            .and_then(|d| seconds(d.as_secs_f64())),
    }
}

fn seconds(secs: f64) -> Result<Duration, AdminError> {
    if !(0.0..=MAX_WAIT.as_secs_f64()).contains(&secs) {
        return Err(AdminError::BadRequest(format!(
            "a wait must be between 0 and {} seconds",
            MAX_WAIT.as_secs()
        )));
    }
    Ok(Duration::from_secs_f64(secs))
}

fn only(method: &Method, want: &Method, name: &'static str) -> Result<(), AdminError> {
    if method == want {
        Ok(())
    } else {
        Err(AdminError::Method(name))
    }
}

fn json_response(status: StatusCode, value: &Value) -> Response<Full<Bytes>> {
    let mut body = value.to_string();
    body.push('\n');
    let mut res = Response::new(Full::new(Bytes::from(body)));
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res
}

/// Compares without an early exit on the first differing byte, so timing does not reveal how
/// much of a guess was right. Only the length can leak, which a token's strength does not rest on.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Equal only when every byte and the length match.
    #[test]
    fn token_compare() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"", b"x"));
    }

    /// Waits parse as durations or seconds, within bounds.
    #[test]
    fn waits() {
        assert_eq!(parse_wait("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_wait("0.5").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_wait("250ms").unwrap(), Duration::from_millis(250));
        assert!(parse_wait("-1").is_err());
        assert!(parse_wait("2h").is_err());
        assert!(parse_wait("soon").is_err());
    }
}
