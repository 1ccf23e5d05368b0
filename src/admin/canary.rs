//! `/canary`: the canary split through the admin API.
//!
//! - `GET /canary`: the split in force, `{"canary": {"pool","percent","sticky"}}` or
//!   `{"canary": null}`.
//! - `POST /canary` `{"pool":"green","percent":25}` (optional `"sticky"`: `cookie` | `ip` |
//!   `none`, default: the split in force's, else `cookie`; optional `"force": true`): sets it,
//!   answers 200 with the new state and where it was saved. `"percent": 0` ends it (no pool
//!   needed). 400 for bad JSON, an unknown pool, the active pool or a percent outside 0-100; 409
//!   when the pool has no healthy server, unless forced (the answer lists its servers, as for
//!   `/switch`).
//! - `DELETE /canary`: ends it; 200 with the new state.

use http::{Method, Request, StatusCode};
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{json_response, read_body, Admin, AdminError, AdminResult};
use crate::config::{CanaryConfig, Sticky};
use crate::state::{CanaryError, Edited, Snapshot};

/// `POST /canary` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CanaryRequest {
    pool: Option<String>,
    percent: i64,
    sticky: Option<Sticky>,
    #[serde(default)]
    force: bool,
}

impl Admin {
    /// `/canary`, by method.
    pub(super) async fn canary(&self, req: Request<Incoming>, who: String) -> AdminResult {
        match *req.method() {
            Method::GET => Ok(json_response(
                StatusCode::OK,
                &json!({ "canary": status(&self.state.load()) }),
            )),
            Method::POST => {
                let body = read_body(req).await?;
                let parsed: CanaryRequest = serde_json::from_slice(&body).map_err(|e| {
                    AdminError::BadRequest(format!(
                        "body must be JSON like {{\"pool\":\"green\",\"percent\":25}}: {e}"
                    ))
                })?;
                self.set_canary(parsed, &who).await
            }
            Method::DELETE => {
                let edited = self.state.set_canary(None, &who, false).await;
                self.answer(edited)
            }
            _ => Err(AdminError::Method("GET, POST, DELETE")),
        }
    }

    async fn set_canary(&self, req: CanaryRequest, who: &str) -> AdminResult {
        let percent = u8::try_from(req.percent)
            .ok()
            .filter(|p| *p <= 100)
            .ok_or_else(|| AdminError::BadRequest(CanaryError::Percent(req.percent).to_string()))?;
        let canary = match (req.pool, percent) {
            (_, 0) => None,
            (None, _) => {
                return Err(AdminError::BadRequest(
                    "name the canary pool: {\"pool\":\"green\",\"percent\":25}".into(),
                ))
            }
            (Some(pool), percent) => {
                let current = self.state.load().canary.as_ref().map(|c| c.sticky);
                Some(CanaryConfig {
                    pool,
                    percent,
                    sticky: req.sticky.or(current).unwrap_or_default(),
                })
            }
        };
        let edited = self.state.set_canary(canary, who, req.force).await;
        self.answer(edited)
    }

    /// 200 with the new state, or the refusal: 409 for an unhealthy pool (with its servers), 400
    /// for the rest.
    fn answer(&self, edited: Result<Edited, CanaryError>) -> AdminResult {
        let snap = self.state.load();
        let edited = edited.map_err(|e| match &e {
            CanaryError::Unhealthy(pool) => {
                AdminError::Conflict(e.to_string(), servers(&snap, pool))
            }
            CanaryError::Store(e) => AdminError::Store(e.clone()),
            _ => AdminError::BadRequest(e.to_string()),
        })?;
        Ok(json_response(
            StatusCode::OK,
            &json!({
                "canary": status(&snap),
                "generation": edited.generation,
                "persisted": edited.persisted,
            }),
        ))
    }
}

/// The split in force as `/status` and `/canary` show it: `{"pool","percent","sticky"}` or null.
pub(super) fn status(snap: &Snapshot) -> Value {
    match &snap.canary {
        Some(c) => json!({
            "pool": &*c.pool.name,
            "percent": c.percent,
            "sticky": c.sticky.as_str(),
        }),
        None => Value::Null,
    }
}

/// The servers of `pool` and their health, as a 409 from `/switch` lists them.
fn servers(snap: &Snapshot, pool: &str) -> Value {
    let servers = snap.pool(pool).into_iter().flat_map(|p| p.servers.iter());
    Value::Object(
        servers
            .map(|s| (s.authority.to_string(), json!(s.health.report())))
            .collect(),
    )
}
