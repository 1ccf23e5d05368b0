//! `teal canary POOL PERCENT [--sticky ip|cookie|none] [--force]` and `teal canary off`, through
//! the admin API's `/canary`.

use std::process::ExitCode;

use anyhow::bail;
use http::{Method, StatusCode};
use serde_json::{json, Value};

use super::{call, AdminArgs};

/// Sets the canary split (`pool` "off", or a percent of 0, ends it); refusals exit non-zero with
/// the admin API's reason.
pub(super) async fn canary(
    pool: String,
    percent: Option<u8>,
    sticky: Option<String>,
    force: bool,
    args: AdminArgs,
) -> anyhow::Result<ExitCode> {
    let (status, v) = match (pool.as_str(), percent) {
        ("off", None) => call(&args, Method::DELETE, "/canary", None).await?,
        (_, None) => bail!("give the percent: teal canary {pool} 10 (or teal canary off)"),
        (_, Some(percent)) => {
            let mut body = json!({ "pool": pool, "percent": percent, "force": force });
            if let Some(s) = sticky {
                body["sticky"] = s.into();
            }
            call(&args, Method::POST, "/canary", Some(body)).await?
        }
    };
    if status != StatusCode::OK {
        let reason = v["error"].as_str().unwrap_or("no reason given");
        let mut why = String::new();
        for (server, h) in v["servers"].as_object().into_iter().flatten() {
            why.push_str(&format!(
                "\n  {server}: {}",
                h["state"].as_str().unwrap_or("?")
            ));
        }
        bail!("canary refused ({}): {reason}{why}", status.as_u16());
    }
    let persisted = match v["persisted"].as_str() {
        Some("config") => "saved in the config file",
        Some("no_file") => "not saved (no config file)",
        _ => "NOT saved: it holds until teal restarts (see teal's log)",
    };
    println!(
        "{} (generation {}, {persisted})",
        describe(&v["canary"]),
        v["generation"]
    );
    Ok(ExitCode::SUCCESS)
}

/// `canary: green 25% (sticky cookie)`, or `canary: none`, from `/status`'s or `/canary`'s
/// `canary` member.
pub(super) fn describe(canary: &Value) -> String {
    match canary["pool"].as_str() {
        Some(pool) => format!(
            "canary: {pool} {}% (sticky {})",
            canary["percent"],
            canary["sticky"].as_str().unwrap_or("?")
        ),
        None => "canary: none".into(),
    }
}
