//! `teal mirror POOL [--percent N] ...` and `teal mirror off`, and the mirror lines of
//! `teal status`.

use std::process::ExitCode;

use anyhow::bail;
use http::{Method, StatusCode};
use serde_json::{json, Value};

use super::{call, AdminArgs};

/// What `teal mirror` was asked.
pub(super) struct MirrorArgs {
    pub(super) pool: String,
    pub(super) percent: Option<u8>,
    pub(super) methods: Option<Vec<String>>,
    pub(super) max_body: Option<String>,
    pub(super) max_in_flight: Option<u32>,
}

/// `POST /mirror` (or `DELETE /mirror` for `off`), and prints the new state.
pub(super) async fn mirror(m: MirrorArgs, args: AdminArgs) -> anyhow::Result<ExitCode> {
    let (status, v) = if m.pool == "off" {
        call(&args, Method::DELETE, "/mirror", None).await?
    } else {
        let mut body = json!({ "pool": m.pool });
        if let Some(p) = m.percent {
            body["percent"] = p.into();
        }
        if let Some(list) = m.methods {
            body["methods"] = list.into();
        }
        if let Some(size) = m.max_body {
            body["max_body"] = size.into();
        }
        if let Some(n) = m.max_in_flight {
            body["max_in_flight"] = n.into();
        }
        call(&args, Method::POST, "/mirror", Some(body)).await?
    };
    if status != StatusCode::OK {
        let reason = v["error"].as_str().unwrap_or("no reason given");
        bail!("mirror refused ({}): {reason}", status.as_u16());
    }
    let saved = match v["persisted"].as_str() {
        Some("config") => "saved in the config file",
        Some("no_file") => "not saved (no config file)",
        _ => "NOT saved: it holds until teal restarts (see teal's log)",
    };
    match v["mirror"].as_object() {
        None => println!("mirroring off (generation {}, {saved})", v["generation"]),
        Some(m) => println!(
            "mirroring {}% of {} to {} (max_body {} bytes, max_in_flight {}; generation {}, {saved})",
            m["percent"],
            methods(&v["mirror"]),
            m["pool"].as_str().unwrap_or("?"),
            m["max_body"],
            m["max_in_flight"],
            v["generation"]
        ),
    }
    Ok(ExitCode::SUCCESS)
}

fn methods(m: &Value) -> String {
    let list: Vec<&str> = m["methods"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    list.join(",")
}

/// The mirror lines of `teal status`, from the `mirror` part of `GET /status`.
pub(super) fn print_status(m: &Value) {
    if m.is_null() {
        return;
    }
    let resting = if m["copying"] == true {
        ""
    } else {
        "  (resting: the pool is active)"
    };
    println!(
        "\nmirror -> {}  {}% of {}{resting}",
        m["pool"].as_str().unwrap_or("?"),
        m["percent"],
        methods(m)
    );
    let l = &m["latest"];
    let pct = |k: &str| l[k].as_f64().unwrap_or(0.0) * 100.0;
    let ms = |k: &str| l[k].as_f64().unwrap_or(0.0) * 1000.0;
    println!(
        "  latest {} copies ({} under way): same {:.1}%  mirror 5xx where live was not {:.1}%  error {:.1}%",
        l["copies"],
        l["in_flight"],
        pct("same"),
        pct("mirror_5xx"),
        pct("error")
    );
    println!(
        "  live p50 {:.1} ms  p99 {:.1} ms   mirror p50 {:.1} ms  p99 {:.1} ms",
        ms("live_p50"),
        ms("live_p99"),
        ms("mirror_p50"),
        ms("mirror_p99")
    );
}
