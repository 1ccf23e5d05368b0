//! The `[rollout]` table: an automated rollout in progress, written by teal at each step so a
//! restarted teal resumes it (see [`crate::rollout`]). Operators rarely write it by hand; removing
//! it from the file while teal runs aborts the rollout.
//!
//! ```toml
//! [rollout]
//! pool = "green"
//! steps = [5, 25, 50, 100]
//! interval = "60s"
//! max_error_rate = "1%"
//! max_p99 = "800ms"     # optional
//! min_requests = 100    # default
//! step = 1              # index into steps of the step in force
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Ctx, PoolConfig, Result};

/// The shortest interval a rollout may judge over.
pub const MIN_INTERVAL: Duration = Duration::from_millis(100);

/// `[rollout]`: a rollout of `pool` through `steps`, now at `step`.
#[derive(Debug, Clone, PartialEq)]
pub struct RolloutConfig {
    /// The pool being rolled out.
    pub pool: String,
    /// Canary percents, ascending, each 1-100.
    pub steps: Vec<u8>,
    /// How long each step is judged over (extended while under `min_requests`).
    pub interval: Duration,
    /// The highest error rate (0-1) a step may show.
    pub max_error_rate: f64,
    /// The highest p99 latency a step may show, if judged.
    pub max_p99: Option<Duration>,
    /// Requests a window needs before it is judged.
    pub min_requests: u64,
    /// Index into `steps` of the step in force.
    pub step: usize,
}

/// `[rollout]` as the file holds it.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRollout {
    pool: String,
    steps: Vec<i64>,
    interval: String,
    max_error_rate: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    max_p99: Option<String>,
    #[serde(default = "default_min_requests")]
    min_requests: i64,
    #[serde(default)]
    step: i64,
}

/// `min_requests` when not given.
pub const DEFAULT_MIN_REQUESTS: u64 = 100;

fn default_min_requests() -> i64 {
    DEFAULT_MIN_REQUESTS as i64
}

impl Serialize for RolloutConfig {
    /// The file's spelling: durations as `"60s"`, the error rate as `"1%"`.
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        RawRollout {
            pool: self.pool.clone(),
            steps: self.steps.iter().map(|&p| p.into()).collect(),
            interval: humantime::format_duration(self.interval).to_string(),
            max_error_rate: format_rate(self.max_error_rate),
            max_p99: self
                .max_p99
                .map(|d| humantime::format_duration(d).to_string()),
            min_requests: self.min_requests as i64,
            step: self.step as i64,
        }
        .serialize(s)
    }
}

/// An error rate written as a percentage: `"1%"`, `"0.5%"`; the result is a fraction (0.01).
pub fn parse_rate(text: &str) -> std::result::Result<f64, String> {
    let bad = || format!("{text:?} is not a percentage like \"1%\" or \"0.5%\"");
    let number = text.trim().strip_suffix('%').ok_or_else(bad)?;
    let percent: f64 = number.trim().parse().map_err(|_| bad())?;
    if !(0.0..=100.0).contains(&percent) {
        return Err(format!("{text:?} is not between 0% and 100%"));
    }
    Ok(percent / 100.0)
}

/// A fraction as the percentage [`parse_rate`] reads: 0.01 -> `"1%"`.
pub fn format_rate(rate: f64) -> String {
    let percent = (rate * 100.0 * 1e6).round() / 1e6;
    format!("{percent}%")
}

/// Checks steps: at least one, each 1-100, strictly ascending.
pub fn check_steps(steps: &[i64]) -> std::result::Result<Vec<u8>, String> {
    if steps.is_empty() {
        return Err("give at least one step, like [5, 25, 50, 100]".into());
    }
    let mut out = Vec::with_capacity(steps.len());
    for &p in steps {
        let p = u8::try_from(p)
            .ok()
            .filter(|p| (1..=100).contains(p))
            .ok_or_else(|| format!("{p} is not a percent from 1 to 100"))?;
        if out.last().is_some_and(|&last| p <= last) {
            return Err(format!(
                "steps must go up: {p} after {}",
                out[out.len() - 1]
            ));
        }
        out.push(p);
    }
    Ok(out)
}

/// The longest interval: a step's deadline must stay a time the clock can hold (a far longer one
/// made the controller panic, leaving the rollout running for good).
pub const MAX_INTERVAL: Duration = Duration::from_secs(30 * 24 * 3600);

/// Checks an interval: a duration of at least `MIN_INTERVAL` (100 ms) and at most
/// `MAX_INTERVAL` (30 days).
pub fn parse_interval(text: &str) -> std::result::Result<Duration, String> {
    let d = humantime::parse_duration(text).map_err(|e| format!("{text:?}: {e}"))?;
    if d < MIN_INTERVAL {
        return Err(format!(
            "{text:?} is shorter than {}",
            humantime::format_duration(MIN_INTERVAL)
        ));
    }
    if d > MAX_INTERVAL {
        return Err(format!(
            "{text:?} is longer than {}",
            humantime::format_duration(MAX_INTERVAL)
        ));
    }
    Ok(d)
}

/// Checks `min_requests`: at most what a TOML integer holds, so that teal can write it back.
pub fn check_min_requests(n: u64) -> std::result::Result<u64, String> {
    if i64::try_from(n).is_err() {
        return Err(format!("{n} is too large (at most {})", i64::MAX));
    }
    Ok(n)
}

/// Validates `[rollout]`: the pool exists; steps, interval, rate and p99 read; `step` is in
/// range. The pool may be the file's active pool: a teal stopped between the final switch and the
/// removal of the table finishes the rollout when it starts.
pub(super) fn rollout_config(
    raw: RawRollout,
    pools: &BTreeMap<String, PoolConfig>,
    ctx: &Ctx<'_>,
) -> Result<RolloutConfig> {
    let err = |key: &str, reason: String| ctx.error(&format!("rollout.{key}"), reason);
    super::known_pool(&raw.pool, pools, "rollout.pool", ctx)?;
    let steps = check_steps(&raw.steps).map_err(|r| err("steps", r))?;
    let interval = parse_interval(&raw.interval).map_err(|r| err("interval", r))?;
    let max_error_rate = parse_rate(&raw.max_error_rate).map_err(|r| err("max_error_rate", r))?;
    let max_p99 = raw
        .max_p99
        .as_deref()
        .map(|t| humantime::parse_duration(t).map_err(|e| err("max_p99", format!("{t:?}: {e}"))))
        .transpose()?;
    let min_requests = u64::try_from(raw.min_requests)
        .map_err(|_| err("min_requests", format!("{} is negative", raw.min_requests)))?;
    let step = usize::try_from(raw.step)
        .ok()
        .filter(|&s| s < steps.len())
        .ok_or_else(|| {
            let reason = format!(
                "{} is not an index into steps (0-{})",
                raw.step,
                steps.len() - 1
            );
            err("step", reason)
        })?;
    Ok(RolloutConfig {
        pool: raw.pool,
        steps,
        interval,
        max_error_rate,
        max_p99,
        min_requests,
        step,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use std::path::Path;

    const POOLS: &str = "active = \"blue\"\n[pools.blue]\nservers = [\"b:1\"]\n[pools.green]\nservers = [\"g:1\"]\n";
    const GOOD: &str =
        "pool = \"green\"\nsteps = [5, 50, 100]\ninterval = \"2s\"\nmax_error_rate = \"1.5%\"\n";

    fn parse(rollout: &str) -> std::result::Result<Config, String> {
        Config::parse(
            &format!("{POOLS}[rollout]\n{rollout}"),
            Some(Path::new("t.toml")),
        )
        .map_err(|e| e.to_string())
    }

    /// A valid table parses with defaults; bad values name line and key.
    #[test]
    fn rollout_table() {
        let r = parse(GOOD).unwrap().rollout.unwrap();
        assert_eq!(
            (r.pool.as_str(), r.steps.as_slice()),
            ("green", &[5, 50, 100][..])
        );
        assert_eq!(r.interval, Duration::from_secs(2));
        assert!((r.max_error_rate - 0.015).abs() < 1e-12);
        assert_eq!((r.max_p99, r.min_requests, r.step), (None, 100, 0));
        let cases = [
            (
                "pool = \"red\"",
                "t.toml:7:1: rollout.pool: no pool named \"red\"",
            ),
            (
                "steps = [5, 5]",
                "t.toml:8:1: rollout.steps: steps must go up: 5 after 5",
            ),
            ("steps = [0, 5]", "rollout.steps: 0 is not a percent"),
            ("steps = []", "rollout.steps: give at least one step"),
            (
                "interval = \"10ms\"",
                "t.toml:9:1: rollout.interval: \"10ms\" is shorter than 100ms",
            ),
            (
                "max_error_rate = \"0.01\"",
                "t.toml:10:1: rollout.max_error_rate: \"0.01\" is not a percentage",
            ),
            (
                "max_error_rate = \"101%\"",
                "rollout.max_error_rate: \"101%\" is not between",
            ),
        ];
        for (line, want) in cases {
            let key = line.split(' ').next().unwrap();
            let text: String = GOOD
                .lines()
                .map(|l| if l.starts_with(key) { line } else { l })
                .map(|l| format!("{l}\n"))
                .collect();
            let e = parse(&text).unwrap_err();
            assert!(e.contains(want), "{line}: {e}");
        }
        let e = parse(&format!("{GOOD}step = 3\n")).unwrap_err();
        assert!(
            e.contains("t.toml:11:1: rollout.step: 3 is not an index"),
            "{e}"
        );
        let e = parse(&format!("{GOOD}max_p99 = \"soon\"\n")).unwrap_err();
        assert!(e.contains("rollout.max_p99"), "{e}");
        let e = parse(&format!("{GOOD}min_requests = -1\n")).unwrap_err();
        assert!(e.contains("rollout.min_requests"), "{e}");
        let e = parse(&format!("{GOOD}weight = 3\n")).unwrap_err();
        assert!(e.contains("weight"), "{e}");
    }

    /// What teal writes, it reads back the same.
    #[test]
    fn round_trip() {
        let r = RolloutConfig {
            pool: "green".into(),
            steps: vec![5, 25, 100],
            interval: Duration::from_millis(1500),
            max_error_rate: 0.005,
            max_p99: Some(Duration::from_millis(800)),
            min_requests: 7,
            step: 2,
        };
        let text = format!("{POOLS}[rollout]\n{}", toml::to_string(&r).unwrap());
        assert!(text.contains("max_error_rate = \"0.5%\""), "{text}");
        let back = Config::parse(&text, None).unwrap().rollout.unwrap();
        assert_eq!(back, r);
        assert_eq!(parse_rate(" 2 %").unwrap(), 0.02);
    }
}
