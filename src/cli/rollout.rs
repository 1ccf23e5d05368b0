//! `teal rollout POOL --steps .. --interval .. --max-error-rate ..`, `teal rollout status`,
//! `teal rollout abort`.
//!
//! `rollout` takes either a subcommand (`status`, `abort`) or a pool with the plan's flags (clap's
//! `args_conflicts_with_subcommands`): a pool cannot be called `status` or `abort` here. The plan
//! is sent as it was typed; the admin API validates it (one set of rules for both).
//!
//! Without `--detach` the command follows the rollout (polling `GET /rollout`), prints every step
//! and verdict as it happens, and exits 0 on `done`, 3 on `rolled_back`, 4 on `aborted`. A refused
//! start or an unreachable admin API exits 1.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::bail;
use clap::Subcommand;
use http::{Method, StatusCode};
use serde_json::{json, Value};

use super::{call, AdminArgs};

/// Exit code when the rollout was rolled back.
const EXIT_ROLLED_BACK: u8 = 3;
/// Exit code when the rollout was aborted.
const EXIT_ABORTED: u8 = 4;
/// How often a followed rollout is polled.
const POLL: Duration = Duration::from_millis(200);

/// `teal rollout ...`.
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct RolloutArgs {
    #[command(subcommand)]
    action: Option<Action>,
    #[command(flatten)]
    start: StartArgs,
}

/// The rollout subcommands besides a start.
#[derive(Debug, Subcommand)]
enum Action {
    /// Print the current (or last) rollout: state, step, last window, events.
    Status {
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Abort the running rollout: the canary ends, all traffic on the active pool.
    Abort {
        #[command(flatten)]
        admin: AdminArgs,
    },
}

/// Starts a rollout of POOL.
#[derive(Debug, clap::Args)]
struct StartArgs {
    /// The pool to roll out (not `status` or `abort`).
    #[arg(required = true)]
    pool: Option<String>,
    /// Canary percents, ascending, like 5,25,50,100.
    #[arg(long, value_delimiter = ',', required = true)]
    steps: Vec<i64>,
    /// How long each step is judged over, like 60s.
    #[arg(long, required = true)]
    interval: Option<String>,
    /// The highest error rate a step may show, like 1% (responses >= 500 and upstream failures
    /// over the requests routed to the pool).
    #[arg(long, required = true)]
    max_error_rate: Option<String>,
    /// The highest p99 latency a step may show, like 800ms.
    #[arg(long)]
    max_p99: Option<String>,
    /// Requests a step needs before it is judged (default 100); fewer extend it.
    #[arg(long)]
    min_requests: Option<u64>,
    /// Start it and exit; do not follow it.
    #[arg(long)]
    detach: bool,
    /// Start even if the pool has no healthy server.
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    admin: AdminArgs,
}

/// Runs `teal rollout ...`.
pub async fn run(args: RolloutArgs) -> anyhow::Result<ExitCode> {
    match args.action {
        Some(Action::Status { admin }) => status(&admin).await,
        Some(Action::Abort { admin }) => abort(&admin).await,
        None => start(args.start).await,
    }
}

async fn start(a: StartArgs) -> anyhow::Result<ExitCode> {
    let mut body = json!({
        "pool": a.pool,
        "steps": a.steps,
        "interval": a.interval,
        "max_error_rate": a.max_error_rate,
        "force": a.force,
    });
    if let Some(p) = &a.max_p99 {
        body["max_p99"] = json!(p);
    }
    if let Some(n) = a.min_requests {
        body["min_requests"] = json!(n);
    }
    let (code, v) = call(&a.admin, Method::POST, "/rollout", Some(body)).await?;
    if code != StatusCode::OK {
        let reason = v["error"].as_str().unwrap_or("no reason given");
        bail!("rollout refused ({}): {reason}", code.as_u16());
    }
    let mut seen = print_events(&v, 0);
    if a.detach {
        println!("following it: teal rollout status; stopping it: teal rollout abort");
        return Ok(ExitCode::SUCCESS);
    }
    loop {
        tokio::time::sleep(POLL).await;
        let (code, v) = call(&a.admin, Method::GET, "/rollout", None).await?;
        if code != StatusCode::OK {
            let reason = v["error"].as_str().unwrap_or("no reason given");
            bail!("rollout status refused ({}): {reason}", code.as_u16());
        }
        seen = print_events(&v, seen);
        if v["state"] != "running" {
            return Ok(exit_code(&v));
        }
    }
}

/// Prints the events after the first `seen`; returns how many there are now. A shorter list
/// (teal restarted and resumed) is printed from its start.
fn print_events(v: &Value, seen: usize) -> usize {
    let events = v["events"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    let from = if events.len() < seen { 0 } else { seen };
    for e in &events[from..] {
        println!("{}", e["text"].as_str().unwrap_or("?"));
    }
    events.len()
}

/// 0 for `done`, 3 for `rolled_back`, 4 for `aborted`.
fn exit_code(v: &Value) -> ExitCode {
    match v["state"].as_str() {
        Some("done") => ExitCode::SUCCESS,
        Some("rolled_back") => ExitCode::from(EXIT_ROLLED_BACK),
        Some("aborted") => ExitCode::from(EXIT_ABORTED),
        _ => ExitCode::FAILURE,
    }
}

async fn status(admin: &AdminArgs) -> anyhow::Result<ExitCode> {
    let (code, v) = call(admin, Method::GET, "/rollout", None).await?;
    if code != StatusCode::OK {
        let reason = v["error"].as_str().unwrap_or("no reason given");
        bail!("rollout status refused ({}): {reason}", code.as_u16());
    }
    println!("{}", summary(&v));
    if let Some(w) = v["window"].as_object() {
        println!(
            "last window: {} requests, {} errors, p99 {}",
            w["requests"],
            w["errors"],
            w["p99_ms"]
                .as_f64()
                .map_or("-".into(), |ms| format!("{ms:.1}ms"))
        );
    }
    print_events(&v, 0);
    Ok(ExitCode::SUCCESS)
}

async fn abort(admin: &AdminArgs) -> anyhow::Result<ExitCode> {
    let (code, v) = call(admin, Method::POST, "/rollout/abort", None).await?;
    if code != StatusCode::OK {
        let reason = v["error"].as_str().unwrap_or("no reason given");
        bail!("abort refused ({}): {reason}", code.as_u16());
    }
    println!("{}", summary(&v));
    Ok(ExitCode::SUCCESS)
}

/// One line: `rollout: running, green step 2 of 4 (25%)`, with the reason when it ended badly.
pub fn summary(v: &Value) -> String {
    let state = v["state"].as_str().unwrap_or("?");
    let Some(pool) = v["pool"].as_str() else {
        return format!("rollout: {state}");
    };
    let steps = v["steps"].as_array().map_or(0, Vec::len);
    let step = v["step"].as_u64().map_or(0, |s| s + 1);
    let reason = v["reason"]
        .as_str()
        .map(|r| format!(": {r}"))
        .unwrap_or_default();
    format!(
        "rollout: {state}, {pool} step {step} of {steps} ({}%){reason}",
        v["percent"]
    )
}

#[cfg(test)]
mod tests {
    use crate::cli::{Cli, Command};
    use clap::Parser;

    fn parse(args: &str) -> Result<super::RolloutArgs, String> {
        let argv = format!("teal rollout {args}");
        match Cli::try_parse_from(argv.split_whitespace()) {
            Ok(Cli {
                command: Command::Rollout(r),
            }) => Ok(r),
            Ok(other) => Err(format!("{other:?}")),
            Err(e) => Err(e.to_string()),
        }
    }

    /// `rollout POOL ...` and `rollout status|abort` both parse; a start needs its plan.
    #[test]
    fn clap_shape() {
        let r =
            parse("green --steps 5,25,50,100 --interval 60s --max-error-rate 1% --detach").unwrap();
        assert!(r.action.is_none());
        assert_eq!(r.start.pool.as_deref(), Some("green"));
        assert_eq!(r.start.steps, [5, 25, 50, 100]);
        assert_eq!(r.start.max_error_rate.as_deref(), Some("1%"));
        assert!(r.start.detach && !r.start.force);
        let r = parse("status --admin http://127.0.0.1:1").unwrap();
        assert!(matches!(r.action, Some(super::Action::Status { .. })));
        let r = parse("abort").unwrap();
        assert!(matches!(r.action, Some(super::Action::Abort { .. })));
        let e = parse("green --interval 60s --max-error-rate 1%").unwrap_err();
        assert!(e.contains("--steps"), "{e}");
        let e = parse("green --steps 5").unwrap_err();
        assert!(
            e.contains("--interval") && e.contains("--max-error-rate"),
            "{e}"
        );
        let e = parse("").unwrap_err();
        assert!(e.contains("<POOL>") || e.contains("Usage"), "{e}");
    }
}
