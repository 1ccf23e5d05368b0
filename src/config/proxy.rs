//! The `[proxy]` table: the client-facing listener, its timeouts, trusted proxies, workers and
//! the hosts file.

use super::raw::RawProxy;
use super::values::{at_least, nonzero, parse_listen};
use super::{nets, relative_to, Ctx, ProxyConfig, Result};

/// Validates the `[proxy]` table; every timeout but `grace_period` must be above zero.
pub(super) fn proxy_config(raw: RawProxy, ctx: &Ctx<'_>) -> Result<ProxyConfig> {
    let trusted_proxies = nets(&raw.trusted_proxies, "proxy.trusted_proxies", ctx)?;
    Ok(ProxyConfig {
        listen: parse_listen(&raw.listen).map_err(|r| ctx.error("proxy.listen", r))?,
        connect_timeout: nonzero(raw.connect_timeout)
            .map_err(|r| ctx.error("proxy.connect_timeout", r))?,
        response_timeout: nonzero(raw.response_timeout)
            .map_err(|r| ctx.error("proxy.response_timeout", r))?,
        header_timeout: nonzero(raw.header_timeout)
            .map_err(|r| ctx.error("proxy.header_timeout", r))?,
        grace_period: raw.grace_period,
        upstream_idle_timeout: nonzero(raw.upstream_idle_timeout)
            .map_err(|r| ctx.error("proxy.upstream_idle_timeout", r))?,
        resolve_interval: nonzero(raw.resolve_interval)
            .map_err(|r| ctx.error("proxy.resolve_interval", r))?,
        idle_timeout: nonzero(raw.idle_timeout).map_err(|r| ctx.error("proxy.idle_timeout", r))?,
        client_body_timeout: nonzero(raw.client_body_timeout)
            .map_err(|r| ctx.error("proxy.client_body_timeout", r))?,
        upstream_body_timeout: nonzero(raw.upstream_body_timeout)
            .map_err(|r| ctx.error("proxy.upstream_body_timeout", r))?,
        client_send_timeout: nonzero(raw.client_send_timeout)
            .map_err(|r| ctx.error("proxy.client_send_timeout", r))?,
        hosts_file: raw.hosts_file.map(|f| relative_to(ctx.path, f)),
        trusted_proxies,
        workers: match raw.workers {
            Some(n) => at_least(n, 1).map_err(|r| ctx.error("proxy.workers", r))?,
            None => std::thread::available_parallelism().map_or(1, |n| n.get()),
        },
    })
}
