//! `POST /mirror` and `DELETE /mirror`: set or end mirroring ([`State::set_mirror`]); and the
//! `mirror` part of `GET /status`.

use std::net::SocketAddr;

use http::{Method, Request, StatusCode};
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{json_response, read_body, Admin, AdminError, AdminResult};
use crate::config::{check_size, method_token, parse_size, MirrorConfig};
use crate::metrics::Metrics;
use crate::state::{Edited, MirrorError, Snapshot};

/// The body of `POST /mirror`: `pool` and, optionally, the other keys of `[mirror]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MirrorRequest {
    pool: String,
    percent: Option<i64>,
    methods: Option<Vec<String>>,
    max_body: Option<Size>,
    max_in_flight: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Size {
    Bytes(u64),
    Text(String),
}

impl Admin {
    /// `POST /mirror` sets mirroring, `DELETE /mirror` ends it; both answer the new state.
    pub(super) async fn mirror(&self, req: Request<Incoming>, peer: SocketAddr) -> AdminResult {
        let who = peer.to_string();
        let config = match *req.method() {
            Method::POST => Some(parse(req).await?),
            Method::DELETE => None,
            _ => return Err(AdminError::Method("POST, DELETE")),
        };
        let edited =
            self.state
                .set_mirror(config, &who)
                .await
                .map_err(|e: MirrorError| match e {
                    MirrorError::Store(e) => AdminError::Store(e),
                    e => AdminError::BadRequest(e.to_string()),
                })?;
        let Edited {
            generation,
            persisted,
            revision,
        } = edited;
        let snap = self.state.load();
        Ok(json_response(
            StatusCode::OK,
            &json!({
                "mirror": snap.config.mirror,
                "generation": generation,
                "persisted": persisted,
                "revision": revision,
            }),
        ))
    }
}

/// Reads and checks `POST /mirror`'s JSON body.
async fn parse(req: Request<Incoming>) -> Result<MirrorConfig, AdminError> {
    let body = read_body(req).await?;
    let bad = AdminError::BadRequest;
    let max_body = |e: String| bad(format!("max_body: {e}"));
    let r: MirrorRequest = serde_json::from_slice(&body).map_err(|e| {
        bad(format!(
            "body must be JSON like {{\"pool\":\"green\",\"percent\":100}}: {e}"
        ))
    })?;
    let mut m = MirrorConfig::new(&r.pool);
    if let Some(p) = r.percent {
        m.percent = u8::try_from(p)
            .ok()
            .filter(|p| *p <= 100)
            .ok_or_else(|| bad(MirrorError::Percent(p).to_string()))?;
    }
    if let Some(list) = r.methods {
        m.methods = list
            .iter()
            .map(|x| method_token(x))
            .collect::<Result<_, _>>()
            .map_err(bad)?;
    }
    match r.max_body {
        Some(Size::Bytes(n)) => m.max_body = check_size(n).map_err(max_body)?,
        Some(Size::Text(t)) => m.max_body = parse_size(&t).map_err(max_body)?,
        None => {}
    }
    if let Some(n) = r.max_in_flight {
        m.max_in_flight = u32::try_from(n)
            .ok()
            .filter(|n| *n >= 1)
            .ok_or_else(|| bad(MirrorError::MaxInFlight.to_string()))?;
    }
    Ok(m)
}

/// The `mirror` part of `GET /status`: the table, whether copies are being made (not while its
/// pool is active), and the summary of the latest copies.
pub(super) fn status(snap: &Snapshot, metrics: &Metrics) -> Value {
    let Some(config) = &snap.config.mirror else {
        return Value::Null;
    };
    json!({
        "pool": config.pool,
        "percent": config.percent,
        "methods": config.methods,
        "max_body": config.max_body,
        "max_in_flight": config.max_in_flight,
        "copying": snap.mirror.is_some(),
        "latest": metrics.mirror_summary(),
    })
}
