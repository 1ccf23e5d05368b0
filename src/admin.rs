//! The admin API, on its own listener. Every answer is JSON except `/metrics`.
//!
//! | endpoint | token | what |
//! |---|---|---|
//! | `POST /switch` | yes | make a pool active: body `{"to":"green"}` or `?to=green`; no target flips between exactly two pools; `wait_drain` (seconds) answers once the old pool is idle or the time is up |
//! | `GET`, `POST`, `DELETE /canary` | yes | the canary split: `{"pool":"green","percent":25}` (optional `sticky`, `force`) sets it, percent 0 or `DELETE` ends it ([`canary`]) |
//! | `POST /rollout`, `GET /rollout`, `POST /rollout/abort` | yes | the automated rollout (see [`crate::rollout`] and `admin/rollout.rs`) |
//! | `GET /drain?pool=P&timeout=30s` | yes | wait until pool P has nothing open (or the timeout), without switching |
//! | `POST /mirror`, `DELETE /mirror` | yes | set mirroring: `{"pool":"green","percent":100}` (optional `methods`, `max_body`, `max_in_flight`); or end it |
//! | `GET /status` | yes | active pool, generation, every pool's servers with in-flight and tunnel counts, draining state, certificates served |
//! | `GET /`, `/dashboard.js`, `/dashboard.css` | no | the dashboard page and its assets, embedded ([`dashboard`]) |
//! | `GET /events` | yes | the dashboard's live feed: `text/event-stream` of status, history and events |
//! | `GET /history` | yes | the last minute of requests per second, error rate, p99 and in-flight per pool and server ([`crate::history`]) |
//! | `GET /metrics` | no | Prometheus text 0.0.4, or OpenMetrics when `Accept` asks for it |
//! | `GET /healthz` | no | 200 while the proxy serves |
//!
//! When a token is configured, requests that need one must carry `Authorization: Bearer <token>`
//! (the scheme in any case, any number of spaces before the token); it is compared in constant
//! time and never logged. A request without the header gets 401 and is not counted: every local
//! client shares 127.0.0.1 (every Docker host client the gateway), so counting them would let any
//! of them lock the operator out. A peer that sends a wrong token more than [`MAX_FAILURES`]
//! times within [`FAILURE_WINDOW`] gets 429 instead of 401 for further wrong ones until the
//! window ends; the right token is accepted even then. `[admin] allow` restricts who may call any
//! endpoint at all (403).
//!
//! Cross-site requests are refused for every endpoint but `/healthz`, token or not
//! ([`guard`]): a `Host` that is not an address or name of the listener (DNS rebinding) or an
//! `Origin` that is not the admin API's own gets 403, and a request that changes state (any
//! method but GET, HEAD, OPTIONS, TRACE) whose body is not declared `application/json` gets 415;
//! a request with no body may have no `Content-Type`. New state-changing endpoints get this
//! rule without doing anything: [`Admin`] applies it by method before routing.
//! Errors are `{"error": "..."}` with 400, 401, 403, 404, 405, 409, 413, 415 or 429.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Either, Full, Limited};
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::metrics::Exposition;
use crate::state::{State, StoreError, SwitchError};

mod canary;
pub mod dashboard;
mod guard;
mod mirror;
mod rollout;

/// Admin request bodies larger than this are refused with 413.
const MAX_BODY: usize = 64 * 1024;
/// Failed authentications a peer may make within [`FAILURE_WINDOW`] before it is refused (429).
pub const MAX_FAILURES: u32 = 5;
/// The window failed authentications are counted in.
pub const FAILURE_WINDOW: Duration = Duration::from_secs(60);

/// The longest `POST /switch?wait=applied` waits for every instance.
const APPLIED_WAIT: Duration = Duration::from_secs(10);

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
    /// A `Host` or `Origin` that is not the admin API's own: a cross-site or DNS-rebound request.
    #[error("{0}")]
    CrossSite(String),
    /// A state-changing request whose body is not declared JSON (a form, `text/plain`).
    #[error("{0}")]
    MediaType(String),
    /// Too many failed authentications from this peer; retry after the given seconds.
    #[error("too many failed authentications; retry in {0} s")]
    TooManyFailures(u64),
    /// No such endpoint.
    #[error(
        "no such endpoint; try / (the dashboard), /status, /events, /history, /switch, /canary, /mirror, /rollout, /drain, /metrics or /healthz"
    )]
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
    /// The cluster's store refused the change (409, someone changed it meanwhile) or cannot be
    /// reached (503).
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl AdminError {
    fn status(&self) -> StatusCode {
        match self {
            AdminError::BadRequest(_) => StatusCode::BAD_REQUEST,
            AdminError::Unauthorized => StatusCode::UNAUTHORIZED,
            AdminError::Forbidden | AdminError::CrossSite(_) => StatusCode::FORBIDDEN,
            AdminError::MediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            AdminError::TooManyFailures(_) => StatusCode::TOO_MANY_REQUESTS,
            AdminError::NotFound => StatusCode::NOT_FOUND,
            AdminError::Method(_) => StatusCode::METHOD_NOT_ALLOWED,
            AdminError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            AdminError::Conflict(..) => StatusCode::CONFLICT,
            AdminError::Store(StoreError::Conflict { .. }) => StatusCode::CONFLICT,
            AdminError::Store(StoreError::Unavailable(_) | StoreError::Uncertain(_)) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
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
    /// `"applied"`: in cluster mode, answer once every live instance serves the change.
    wait: Option<String>,
}

/// The admin service.
#[derive(Clone)]
pub struct Admin {
    state: Arc<State>,
    /// The address the admin listener is bound to (its `Host` when addressed by IP).
    listen: SocketAddr,
    /// Failed authentications per peer: count and when the window started.
    failures: Arc<Mutex<HashMap<IpAddr, (u32, Instant)>>>,
    /// The rollout controller.
    rollouts: Arc<crate::rollout::Rollouts>,
    /// The last minute of traffic, for `/history` and `/events`.
    history: Arc<crate::history::History>,
    /// Cancelled when the admin listener stops: ends the `/events` streams.
    stop: CancellationToken,
}

/// The body of an admin answer: whole, or the `/events` stream.
pub type AdminBody = Either<Full<Bytes>, dashboard::EventStream>;

type AdminResult = Result<Response<Full<Bytes>>, AdminError>;

impl Admin {
    /// An admin API over `state`, served by the listener bound to `listen`, driving `rollouts`.
    pub fn new(
        state: Arc<State>,
        listen: SocketAddr,
        rollouts: Arc<crate::rollout::Rollouts>,
    ) -> Admin {
        Admin {
            state,
            listen,
            failures: Arc::default(),
            rollouts,
            history: Arc::default(),
            stop: CancellationToken::new(),
        }
    }

    /// The same admin API showing `history`, its `/events` streams ending when `stop` is
    /// cancelled (the listener's shutdown).
    pub fn with_feed(
        mut self,
        history: Arc<crate::history::History>,
        stop: CancellationToken,
    ) -> Admin {
        self.history = history;
        self.stop = stop;
        self
    }

    /// Serves one admin request from `peer`.
    pub async fn handle(
        self,
        req: Request<Incoming>,
        peer: SocketAddr,
    ) -> Result<Response<AdminBody>, Infallible> {
        let result = if req.uri().path() == "/events" {
            self.events(&req, peer).map(|res| res.map(Either::Right))
        } else {
            self.route(req, peer).await.map(|res| res.map(Either::Left))
        };
        Ok(result.unwrap_or_else(|e| self.refusal(e).map(Either::Left)))
    }

    /// `GET /events`: the dashboard's live feed ([`dashboard`]).
    fn events(
        &self,
        req: &Request<Incoming>,
        peer: SocketAddr,
    ) -> Result<Response<dashboard::EventStream>, AdminError> {
        self.screen(req, peer)?;
        only(req.method(), &Method::GET, "GET")?;
        self.authorize(req, peer)?;
        // What the stream is asked again before every message (see `admits`).
        let mut head = Request::new(http_body_util::Empty::<Bytes>::new());
        *head.method_mut() = req.method().clone();
        *head.uri_mut() = req.uri().clone();
        *head.headers_mut() = req.headers().clone();
        Ok(dashboard::open(self.clone(), head, peer))
    }

    /// Whether `req` from `peer` still passes `admin.allow`, the Host/Origin guard and the token
    /// as the running config has them, without counting or logging: an open `/events` stream
    /// asks before every message, so a rotated token or a narrowed allow list ends it.
    pub(super) fn admits<B: hyper::body::Body>(&self, req: &Request<B>, peer: SocketAddr) -> bool {
        let snap = self.state.load();
        let admin = &snap.config.admin;
        let ip = peer.ip().to_canonical();
        let allowed = admin
            .allow
            .as_ref()
            .map_or(true, |allow| allow.iter().any(|n| n.contains(&ip)));
        let token_ok = admin.token.as_ref().map_or(true, |token| {
            req.headers()
                .get(header::AUTHORIZATION)
                .and_then(|h| bearer_token(h.as_bytes()))
                .is_some_and(|given| constant_time_eq(given, token.expose().as_bytes()))
        });
        allowed && token_ok && guard::check(req, self.listen, &admin.hosts).is_ok()
    }

    /// The answer to a refused request: `{"error": ...}` with its status and headers.
    fn refusal(&self, e: AdminError) -> Response<Full<Bytes>> {
        let mut doc = json!({ "error": e.to_string() });
        if let AdminError::Conflict(_, servers) = &e {
            doc["servers"] = servers.clone();
            if let Some(store) = self.state.store() {
                // The health judgement is this instance's own.
                doc["instance"] = json!(store.name());
            }
        }
        if let AdminError::Store(StoreError::Conflict { current, revision }) = &e {
            let mut now = serde_json::to_value(current).unwrap_or(Value::Null);
            if now.is_object() {
                now["revision"] = json!(revision);
            }
            doc["current"] = now;
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
    }

    async fn route(&self, req: Request<Incoming>, peer: SocketAddr) -> AdminResult {
        self.screen(&req, peer)?;
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
                let certs = crate::tls::expiries(&self.state.tls().certs);
                self.state.metrics().set_cert_expiries(&certs);
                let text = self
                    .state
                    .metrics()
                    .expose(&self.state.load().live(), format);
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
            "/" | "/dashboard.js" | "/dashboard.css" => {
                only(method, &Method::GET, "GET")?;
                dashboard::asset(path).ok_or(AdminError::NotFound)
            }
            "/history" => {
                only(method, &Method::GET, "GET")?;
                self.authorize(&req, peer)?;
                let doc = serde_json::to_value(self.history.doc()).unwrap_or(Value::Null);
                Ok(json_response(StatusCode::OK, &doc))
            }
            "/switch" => {
                only(method, &Method::POST, "POST")?;
                self.authorize(&req, peer)?;
                self.switch(req, peer).await
            }
            "/canary" => {
                self.authorize(&req, peer)?;
                self.canary(req, peer.to_string()).await
            }
            "/mirror" => {
                self.authorize(&req, peer)?;
                self.mirror(req, peer).await
            }
            "/drain" => {
                only(method, &Method::GET, "GET")?;
                self.authorize(&req, peer)?;
                self.drain(&req).await
            }
            "/rollout" | "/rollout/abort" => self.rollout(req, peer).await,
            _ => Err(AdminError::NotFound),
        }
    }

    /// The checks every request passes before its endpoint sees it: the peer must be on
    /// `admin.allow`, and, except for `/healthz` (a container HEALTHCHECK calls it by whatever
    /// name), the request must not be cross-site ([`guard::check`]). Endpoints that change state
    /// need not do anything for the latter: it applies by method.
    fn screen(&self, req: &Request<Incoming>, peer: SocketAddr) -> Result<(), AdminError> {
        let snap = self.state.load();
        if let Some(allow) = &snap.config.admin.allow {
            let ip = peer.ip().to_canonical();
            if !allow.iter().any(|n| n.contains(&ip)) {
                self.state.metrics().reject("admin_forbidden");
                warn!(peer = %peer, "admin request refused: not on admin.allow");
                return Err(AdminError::Forbidden);
            }
        }
        if req.uri().path() == "/healthz" {
            return Ok(());
        }
        guard::check(req, self.listen, &snap.config.admin.hosts).inspect_err(|e| {
            self.state.metrics().reject("admin_csrf");
            warn!(peer = %peer, method = %req.method(), path = req.uri().path(), "admin request refused: {e}");
        })
    }

    /// Checks the bearer token, when one is configured. Only a present but wrong token counts as
    /// a failed login: a request without one (every local client shares 127.0.0.1, every Docker
    /// host client the gateway) gets 401 and is not counted, and the right token is accepted even
    /// while its peer is limited, so no one can lock the operator out. Wrong tokens from a peer
    /// over [`MAX_FAILURES`] within [`FAILURE_WINDOW`] get 429 instead of 401.
    fn authorize(&self, req: &Request<Incoming>, peer: SocketAddr) -> Result<(), AdminError> {
        let snap = self.state.load();
        let Some(token) = &snap.config.admin.token else {
            return Ok(());
        };
        let Some(header) = req.headers().get(header::AUTHORIZATION) else {
            self.state.metrics().reject("admin_unauthorized");
            warn!(peer = %peer, path = req.uri().path(), token = "missing", "admin request refused: missing or wrong token");
            return Err(AdminError::Unauthorized);
        };
        let given = bearer_token(header.as_bytes()).unwrap_or_default();
        if constant_time_eq(given, token.expose().as_bytes()) {
            return Ok(());
        }
        let ip = peer.ip().to_canonical();
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if failures.len() > 4096 {
            // Bounded memory under a spray from many addresses.
            failures.retain(|_, (_, since)| since.elapsed() < FAILURE_WINDOW);
        }
        let entry = failures.entry(ip).or_insert((0, Instant::now()));
        if entry.1.elapsed() >= FAILURE_WINDOW {
            *entry = (0, Instant::now());
        }
        if entry.0 >= MAX_FAILURES {
            self.state.metrics().reject("admin_rate_limited");
            let left = FAILURE_WINDOW.saturating_sub(entry.1.elapsed());
            return Err(AdminError::TooManyFailures(left.as_secs().max(1)));
        }
        entry.0 += 1;
        self.state.metrics().reject("admin_unauthorized");
        warn!(peer = %peer, path = req.uri().path(), token = "wrong", failures = entry.0, "admin request refused: missing or wrong token");
        Err(AdminError::Unauthorized)
    }

    async fn switch(&self, req: Request<Incoming>, peer: SocketAddr) -> AdminResult {
        let query_to = query_param(&req, "to").map(str::to_string);
        let query_wait = query_param(&req, "wait_drain")
            .map(parse_wait)
            .transpose()?;
        let query_force = query_param(&req, "force") == Some("true");
        let query_wait_for = query_param(&req, "wait").map(str::to_string);
        let body = read_body(req).await?;
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
        let wait_applied = match parsed.wait.as_deref().or(query_wait_for.as_deref()) {
            None => false,
            Some("applied") if self.state.store().is_some() => true,
            Some("applied") => {
                return Err(AdminError::BadRequest(
                    "wait=applied needs [cluster]: a single instance has applied a switch when it answers".into(),
                ))
            }
            Some(other) => {
                return Err(AdminError::BadRequest(format!(
                    "wait must be \"applied\", not {other:?}"
                )))
            }
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
                SwitchError::Store(e) => AdminError::Store(e.clone()),
                SwitchError::Unhealthy { servers, .. } => {
                    let servers: serde_json::Map<String, Value> = servers
                        .iter()
                        .map(|(addr, report)| (addr.clone(), json!(report)))
                        .collect();
                    AdminError::Conflict(e.to_string(), Value::Object(servers))
                }
            })?;
        let mut doc = serde_json::to_value(&switched).unwrap_or(Value::Null);
        if let (true, Some(store)) = (wait_applied, self.state.store()) {
            let revision = switched.revision.unwrap_or_else(|| store.seen());
            let (all, instances) = store.wait_applied(revision, APPLIED_WAIT).await;
            doc["applied"] = json!({ "all": all, "revision": revision, "instances": instances });
        }
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
                            "last_check": s.health.last_check(),
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
            "canary": canary::status(&snap),
            "mirror": mirror::status(&snap, self.state.metrics()),
            "rollout": self.rollouts.status().to_json(),
            "tls": crate::tls::status_json(snap.config.tls.is_some(), &self.state.tls().certs),
            "cluster": self.state.store().map(|s| s.status()),
        })
    }
}

/// The value of `name` in the request's query string.
/// The request body, at most [`MAX_BODY`] bytes.
async fn read_body(req: Request<Incoming>) -> Result<Bytes, AdminError> {
    Limited::new(req.into_body(), MAX_BODY)
        .collect()
        .await
        .map(|b| b.to_bytes())
        .map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                AdminError::TooLarge
            } else {
                AdminError::BadRequest(format!("could not read the body: {e}"))
            }
        })
}

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

/// The token of an `Authorization: Bearer <token>` value: the scheme is case-insensitive and may
/// be followed by any number of spaces (RFC 9110 §11.1, RFC 6750 §2.1). `None` for another scheme.
fn bearer_token(value: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = value.split_at_checked(6)?;
    if !scheme.eq_ignore_ascii_case(b"bearer") || !rest.first().is_some_and(|&b| b == b' ') {
        return None;
    }
    Some(rest.trim_ascii())
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

    /// `Bearer` is matched case-insensitively, with any spaces before the token.
    #[test]
    fn bearer_scheme() {
        assert_eq!(bearer_token(b"Bearer abc"), Some(&b"abc"[..]));
        assert_eq!(bearer_token(b"bearer abc"), Some(&b"abc"[..]));
        assert_eq!(bearer_token(b"BEARER   abc"), Some(&b"abc"[..]));
        assert_eq!(bearer_token(b"Bearerabc"), None);
        assert_eq!(bearer_token(b"Bearer"), None);
        assert_eq!(bearer_token(b"Basic abc"), None);
        assert_eq!(bearer_token(b"Bear"), None);
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
