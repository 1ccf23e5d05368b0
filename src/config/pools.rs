//! The `[pools.NAME]` tables: each pool's servers, timeout overrides and `[pools.NAME.health]`.

use std::collections::BTreeMap;
use std::time::Duration;

use http::uri::Authority;

use super::raw::{RawHealth, RawPool};
use super::values::{check_pool_name, nonzero, parse_server, parse_status_range};
use super::{Ctx, HealthConfig, PoolConfig, Result};

/// Validates every pool, in name order; there must be at least one.
pub(super) fn pools(
    raw: BTreeMap<String, RawPool>,
    ctx: &Ctx<'_>,
) -> Result<BTreeMap<String, PoolConfig>> {
    if raw.is_empty() {
        return Err(ctx.error(
            "pools",
            "no pools defined; add [pools.blue] and [pools.green] with servers = [\"host:port\"]",
        ));
    }
    let mut pools = BTreeMap::new();
    for (name, pool) in raw {
        let config = pool_config(&name, pool, ctx)?;
        pools.insert(name, config);
    }
    Ok(pools)
}

/// Validates `[pools.NAME]`: its name, its servers (at least one, none twice), its timeout
/// overrides and its health checks.
fn pool_config(name: &str, pool: RawPool, ctx: &Ctx<'_>) -> Result<PoolConfig> {
    let key = format!("pools.{name}");
    check_pool_name(name).map_err(|reason| ctx.error(&key, reason))?;
    let servers = servers(&pool.servers, &key, ctx)?;
    let timeout = |d: Option<Duration>, k: &str| {
        d.map(nonzero)
            .transpose()
            .map_err(|r| ctx.error(&format!("{key}.{k}"), r))
    };
    let connect_timeout = timeout(pool.connect_timeout, "connect_timeout")?;
    let response_timeout = timeout(pool.response_timeout, "response_timeout")?;
    let health = pool
        .health
        .map(|h| health_config(h, &format!("{key}.health"), ctx))
        .transpose()?;
    Ok(PoolConfig {
        servers,
        connect_timeout,
        response_timeout,
        health,
    })
}

/// `pools.NAME.servers`: `host:port` each, at least one, none listed twice.
fn servers(list: &[String], key: &str, ctx: &Ctx<'_>) -> Result<Vec<Authority>> {
    if list.is_empty() {
        return Err(ctx.error(
            &format!("{key}.servers"),
            "a pool needs at least one server (\"host:port\")",
        ));
    }
    let mut servers: Vec<Authority> = Vec::with_capacity(list.len());
    for (i, s) in list.iter().enumerate() {
        let key = format!("{key}.servers[{i}]");
        let server = parse_server(s).map_err(|reason| ctx.error(&key, reason))?;
        if servers.contains(&server) {
            return Err(ctx.error(&key, format!("{s} is listed twice in this pool")));
        }
        servers.push(server);
    }
    Ok(servers)
}

/// Validates `[pools.NAME.health]`; `key` is its dotted name.
fn health_config(raw: RawHealth, key: &str, ctx: &Ctx<'_>) -> Result<HealthConfig> {
    if !raw.path.starts_with('/') || raw.path.parse::<http::uri::PathAndQuery>().is_err() {
        return Err(ctx.error(
            &format!("{key}.path"),
            format!(
                "{:?} is not an absolute path like \"/actuator/health\"",
                raw.path
            ),
        ));
    }
    let interval = nonzero(raw.interval).map_err(|r| ctx.error(&format!("{key}.interval"), r))?;
    let timeout = nonzero(raw.timeout).map_err(|r| ctx.error(&format!("{key}.timeout"), r))?;
    for (k, v) in [
        ("healthy_after", raw.healthy_after),
        ("unhealthy_after", raw.unhealthy_after),
    ] {
        if v == 0 {
            return Err(ctx.error(&format!("{key}.{k}"), "must be at least 1"));
        }
    }
    let expect_status = parse_status_range(&raw.expect_status)
        .map_err(|r| ctx.error(&format!("{key}.expect_status"), r))?;
    Ok(HealthConfig {
        path: raw.path,
        interval,
        timeout,
        healthy_after: raw.healthy_after,
        unhealthy_after: raw.unhealthy_after,
        expect_status,
    })
}
