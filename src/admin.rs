//! The admin API, on its own listener. Every answer is JSON except `/metrics`.
//!
//! | endpoint | token | what |
//! |---|---|---|
//! | `POST /switch` | yes | make a pool active: body `{"to":"green"}` or `?to=green`; no target flips between exactly two pools |
//! | `GET /status` | yes | active pool, generation, every pool's servers with in-flight counts |
//! | `GET /metrics` | no | Prometheus text exposition |
//! | `GET /healthz` | no | 200 while the proxy serves |
//!
//! When a token is configured, requests that need one must carry `Authorization: Bearer <token>`;
//! it is compared in constant time and never logged. Errors are `{"error": "..."}` with 400, 401,
//! 404, 405 or 413.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::{json, Value};
use tracing::warn;

use crate::state::{State, SwitchError};

/// Admin request bodies larger than this are refused with 413.
const MAX_BODY: usize = 64 * 1024;

/// A refusal from the admin API.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// Malformed request or impossible switch.
    #[error("{0}")]
    BadRequest(String),
    /// Missing or wrong token.
    #[error("missing or wrong bearer token")]
    Unauthorized,
    /// No such endpoint.
    #[error("no such endpoint; try /status, /switch, /metrics or /healthz")]
    NotFound,
    /// Endpoint exists, method does not.
    #[error("method not allowed; use {0}")]
    Method(&'static str),
    /// Body over [`MAX_BODY`].
    #[error("request body too large (limit {MAX_BODY} bytes)")]
    TooLarge,
}

impl AdminError {
    fn status(&self) -> StatusCode {
        match self {
            AdminError::BadRequest(_) => StatusCode::BAD_REQUEST,
            AdminError::Unauthorized => StatusCode::UNAUTHORIZED,
            AdminError::NotFound => StatusCode::NOT_FOUND,
            AdminError::Method(_) => StatusCode::METHOD_NOT_ALLOWED,
            AdminError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        }
    }
}

/// `POST /switch` body.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SwitchRequest {
    to: Option<String>,
}

/// The admin service.
#[derive(Clone)]
pub struct Admin {
    state: Arc<State>,
}

type AdminResult = Result<Response<Full<Bytes>>, AdminError>;

impl Admin {
    /// An admin API over `state`.
    pub fn new(state: Arc<State>) -> Admin {
        Admin { state }
    }

    /// Serves one admin request from `peer`.
    pub async fn handle(
        self,
        req: Request<Incoming>,
        peer: SocketAddr,
    ) -> Result<Response<Full<Bytes>>, Infallible> {
        let result = self.route(req, peer).await;
        Ok(result.unwrap_or_else(|e| {
            let mut res = json_response(e.status(), &json!({ "error": e.to_string() }));
            match e {
                AdminError::Unauthorized => {
                    res.headers_mut()
                        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
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
        let path = req.uri().path();
        let method = req.method();
        match path {
            "/healthz" => {
                only(method, &Method::GET, "GET")?;
                Ok(json_response(StatusCode::OK, &json!({ "status": "ok" })))
            }
            "/metrics" => {
                only(method, &Method::GET, "GET")?;
                let text = self.state.metrics().encode(&self.state.load());
                let mut res = Response::new(Full::new(Bytes::from(text)));
                res.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static(
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    ),
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
            _ => Err(AdminError::NotFound),
        }
    }

    fn authorize(&self, req: &Request<Incoming>, peer: SocketAddr) -> Result<(), AdminError> {
        let snap = self.state.load();
        let Some(token) = &snap.config.admin.token else {
            return Ok(());
        };
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
            .unwrap_or_default();
        if constant_time_eq(given, token.expose().as_bytes()) {
            Ok(())
        } else {
            warn!(peer = %peer, path = req.uri().path(), "admin request refused: missing or wrong token");
            Err(AdminError::Unauthorized)
        }
    }

    async fn switch(&self, req: Request<Incoming>, peer: SocketAddr) -> AdminResult {
        let query_to = req.uri().query().and_then(|q| {
            q.split('&')
                .filter_map(|kv| kv.split_once('='))
                .find(|(k, _)| *k == "to")
                .map(|(_, v)| v.to_string())
        });
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
        let who = peer.to_string();
        match self.state.switch(to.as_deref(), &who).await {
            Ok(s) => Ok(json_response(
                StatusCode::OK,
                &serde_json::to_value(s).unwrap_or(Value::Null),
            )),
            Err(e @ (SwitchError::UnknownPool { .. } | SwitchError::NoTarget(_))) => {
                Err(AdminError::BadRequest(e.to_string()))
            }
        }
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
                    .map(|s| json!({ "address": s.authority.as_str(), "in_flight": s.in_flight() }))
                    .collect();
                let doc = json!({
                    "active": p.name == snap.active.name,
                    "in_flight": p.in_flight(),
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
}
