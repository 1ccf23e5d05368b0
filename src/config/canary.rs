//! The `[canary]` table: which pool takes what share of the default route, and how a client keeps
//! its side of the split.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::raw::RawCanary;
use super::{Ctx, PoolConfig, Result};

/// `[canary]`: `percent` of default-route clients go to `pool` instead of the active pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct CanaryConfig {
    /// The canary pool: any pool but the active one.
    pub pool: String,
    /// 0-100: clients whose bucket (0-99) is below it go to `pool`. 0 routes nobody.
    pub percent: u8,
    /// How a client keeps its bucket from one request to the next.
    pub sticky: Sticky,
}

/// How a default-route client's bucket is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Sticky {
    /// A random bucket kept in the `teal_bucket` cookie that teal sets.
    #[default]
    Cookie,
    /// A hash of the client address (after `trusted_proxies`).
    Ip,
    /// A new bucket for every request.
    None,
}

impl Sticky {
    /// The name the file and the admin API use.
    pub fn as_str(self) -> &'static str {
        match self {
            Sticky::Cookie => "cookie",
            Sticky::Ip => "ip",
            Sticky::None => "none",
        }
    }
}

/// Validates `[canary]`: the pool exists and is not the file's active pool; percent is 0-100.
pub(super) fn canary_config(
    raw: RawCanary,
    active: &str,
    pools: &BTreeMap<String, PoolConfig>,
    ctx: &Ctx<'_>,
) -> Result<CanaryConfig> {
    super::known_pool(&raw.pool, pools, "canary.pool", ctx)?;
    if raw.pool == active {
        return Err(ctx.error(
            "canary.pool",
            format!(
                "{:?} is the active pool; a canary is another pool taking a share of its traffic",
                raw.pool
            ),
        ));
    }
    let percent = u8::try_from(raw.percent)
        .ok()
        .filter(|p| *p <= 100)
        .ok_or_else(|| {
            ctx.error(
                "canary.percent",
                format!("{} is not a percentage from 0 to 100", raw.percent),
            )
        })?;
    Ok(CanaryConfig {
        pool: raw.pool,
        percent,
        sticky: raw.sticky,
    })
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, Sticky};
    use std::path::Path;

    const POOLS: &str = "active = \"blue\"\n[pools.blue]\nservers = [\"b:1\"]\n[pools.green]\nservers = [\"g:1\"]\n";

    fn parse(canary: &str) -> Result<Config, String> {
        Config::parse(
            &format!("{POOLS}[canary]\n{canary}"),
            Some(Path::new("t.toml")),
        )
        .map_err(|e| e.to_string())
    }

    /// A valid table parses with `cookie` stickiness by default; bad values name line and key.
    #[test]
    fn canary_table() {
        let c = parse("pool = \"green\"\npercent = 10\n").unwrap();
        let canary = c.canary.unwrap();
        assert_eq!((canary.pool.as_str(), canary.percent), ("green", 10));
        assert_eq!(canary.sticky, Sticky::Cookie);
        let ip = parse("pool = \"green\"\npercent = 0\nsticky = \"ip\"\n").unwrap();
        assert_eq!(ip.canary.unwrap().sticky, Sticky::Ip);
        let e = parse("pool = \"red\"\npercent = 10\n").unwrap_err();
        assert!(
            e.starts_with("t.toml:7:1: canary.pool: no pool named \"red\""),
            "{e}"
        );
        let e = parse("pool = \"blue\"\npercent = 10\n").unwrap_err();
        assert!(
            e.contains("canary.pool: \"blue\" is the active pool"),
            "{e}"
        );
        let e = parse("pool = \"green\"\npercent = 101\n").unwrap_err();
        assert!(
            e.starts_with("t.toml:8:1: canary.percent: 101 is not"),
            "{e}"
        );
        let e = parse("pool = \"green\"\npercent = -1\n").unwrap_err();
        assert!(e.contains("canary.percent"), "{e}");
        let e = parse("pool = \"green\"\npercent = 5\nsticky = \"session\"\n").unwrap_err();
        assert!(
            e.contains("t.toml:9:") && e.contains("canary.sticky"),
            "{e}"
        );
        let e = parse("pool = \"green\"\npercent = 5\nweight = 3\n").unwrap_err();
        assert!(e.contains("weight"), "{e}");
    }
}
