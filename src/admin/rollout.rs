//! `POST /rollout` (start), `GET /rollout` (state), `POST /rollout/abort`.
//!
//! The start body: `{"pool":"green","steps":[5,25,50,100],"interval":"60s","max_error_rate":"1%",
//! "max_p99":"800ms","min_requests":100,"force":false}`; `pool`, `steps`, `interval` and
//! `max_error_rate` are required. Every answer is the rollout's state document
//! ([`crate::rollout::Status::to_json`]); refusals are 400 (bad plan, unknown or active pool) or
//! 409 (a rollout runs, none runs to abort, the pool is not ready without `force`).

use std::net::SocketAddr;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::json;

use super::{json_response, read_body, Admin, AdminError, AdminResult};
use crate::config::{check_min_requests, check_steps, parse_interval, parse_rate, RolloutConfig};
use crate::rollout::RolloutError;

/// `POST /rollout` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StartRequest {
    pool: String,
    steps: Vec<i64>,
    interval: String,
    max_error_rate: String,
    max_p99: Option<String>,
    min_requests: Option<u64>,
    #[serde(default)]
    force: bool,
}

impl Admin {
    /// Serves `/rollout` and `/rollout/abort`.
    pub(super) async fn rollout(&self, req: Request<Incoming>, peer: SocketAddr) -> AdminResult {
        let abort = req.uri().path() == "/rollout/abort";
        match (abort, req.method()) {
            (false, &Method::GET) => {
                self.authorize(&req, peer)?;
                let doc = self.rollouts.status().to_json();
                Ok(json_response(StatusCode::OK, &doc))
            }
            (false, &Method::POST) => {
                self.authorize(&req, peer)?;
                let (plan, force) = start_request(read_body(req).await?)?;
                let who = peer.to_string();
                let status = self.rollouts.start(plan, &who, force).await;
                Ok(json_response(
                    StatusCode::OK,
                    &status.map_err(refusal)?.to_json(),
                ))
            }
            (true, &Method::POST) => {
                self.authorize(&req, peer)?;
                let status = self.rollouts.abort(&peer.to_string()).await;
                Ok(json_response(
                    StatusCode::OK,
                    &status.map_err(refusal)?.to_json(),
                ))
            }
            (false, _) => Err(AdminError::Method("GET, POST")),
            (true, _) => Err(AdminError::Method("POST")),
        }
    }
}

fn refusal(e: RolloutError) -> AdminError {
    match e {
        RolloutError::Invalid(reason) => AdminError::BadRequest(reason),
        RolloutError::Conflict(_) | RolloutError::Unhealthy(_) => {
            AdminError::Conflict(e.to_string(), json!(null))
        }
    }
}

/// The plan and `force` of a start body, each bad field named.
fn start_request(body: Bytes) -> Result<(RolloutConfig, bool), AdminError> {
    let r: StartRequest = serde_json::from_slice(&body).map_err(|e| {
        AdminError::BadRequest(format!(
            "body must be JSON like {{\"pool\":\"green\",\"steps\":[5,25,50,100],\"interval\":\"60s\",\"max_error_rate\":\"1%\"}}: {e}"
        ))
    })?;
    fn bad(key: &'static str) -> impl Fn(String) -> AdminError {
        move |reason| AdminError::BadRequest(format!("{key}: {reason}"))
    }
    let plan = RolloutConfig {
        steps: check_steps(&r.steps).map_err(bad("steps"))?,
        interval: parse_interval(&r.interval).map_err(bad("interval"))?,
        max_error_rate: parse_rate(&r.max_error_rate).map_err(bad("max_error_rate"))?,
        max_p99: r
            .max_p99
            .as_deref()
            .map(|t| humantime::parse_duration(t).map_err(|e| format!("{t:?}: {e}")))
            .transpose()
            .map_err(bad("max_p99"))?,
        min_requests: r
            .min_requests
            .map(check_min_requests)
            .transpose()
            .map_err(bad("min_requests"))?
            .unwrap_or(crate::config::DEFAULT_MIN_REQUESTS),
        pool: r.pool,
        step: 0,
    };
    Ok((plan, r.force))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each bad field is named; defaults fill the rest.
    #[test]
    fn start_bodies() {
        let ok = json!({"pool":"green","steps":[5,100],"interval":"1s","max_error_rate":"1%"});
        let (plan, force) = start_request(Bytes::from(ok.to_string())).unwrap();
        assert_eq!((plan.min_requests, plan.max_p99, force), (100, None, false));
        let cases = [
            ("steps", json!([50, 5]), "steps: steps must go up"),
            ("steps", json!([]), "steps: give at least one step"),
            ("interval", json!("soon"), "interval: \"soon\""),
            (
                "max_error_rate",
                json!("0.01"),
                "max_error_rate: \"0.01\" is not a percentage",
            ),
            ("max_p99", json!("x"), "max_p99: \"x\""),
            ("colour", json!("x"), "unknown field `colour`"),
        ];
        for (key, value, want) in cases {
            let mut body = ok.clone();
            body[key] = value;
            let e = start_request(Bytes::from(body.to_string()))
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{body}: {e}");
        }
        let e = start_request(Bytes::from("{}")).unwrap_err().to_string();
        assert!(e.contains("missing field `pool`"), "{e}");
    }
}
