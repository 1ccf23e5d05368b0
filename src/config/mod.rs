//! Configuration: TOML text in, a validated [`Config`] out.
//!
//! Parsing happens in two steps, as sozu does it: serde reads the text into [`RawConfig`] (unknown
//! keys are errors, defaults filled in), then [`Config::from_raw`] checks what serde cannot (that
//! `active` names a pool, that pools are non-empty, that servers are `host:port`, that CIDRs parse)
//! and produces the typed [`Config`]. `teal check`, startup and every hot reload call the same
//! [`Config::parse`], so they agree on what is valid.
//!
//! Every error names the file, the line and column, the dotted key and the reason
//! (`teal.toml:14:1: pools.green.servers[1]: ...`). Positions are found by re-reading the text with
//! `toml_edit`, which keeps spans, so validation code only has to name the key.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::uri::Authority;
use ipnet::IpNet;
use serde::Deserialize;

mod admin;
mod canary;
mod cluster;
mod mirror;
mod pools;
mod position;
mod preview;
mod proxy;
mod raw;
mod rollout;
mod tls;
mod values;

pub use admin::AdminHost;
pub use canary::{CanaryConfig, Sticky};
pub use cluster::ClusterConfig;
pub use mirror::{check_size, method_token, parse_size, MirrorConfig};
pub use rollout::{
    check_min_requests, check_steps, format_rate, parse_interval, parse_rate, RolloutConfig,
    DEFAULT_MIN_REQUESTS,
};
pub use tls::{AcmeConfig, CertFiles, TlsConfig};

use position::{key_at, line_col, locate};
use raw::*;
use values::*;

/// A validated configuration. Built only by [`Config::parse`] / [`Config::load`].
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The file this came from, for error messages and persistence; `None` for the embedded demo.
    pub path: Option<PathBuf>,
    /// The pool the file names as active.
    pub active: String,
    /// The `[proxy]` table.
    pub proxy: ProxyConfig,
    /// The `[admin]` table.
    pub admin: AdminConfig,
    /// Pools by name, sorted.
    pub pools: BTreeMap<String, PoolConfig>,
    /// The `[preview]` table.
    pub preview: PreviewConfig,
    /// The `[log]` table.
    pub log: LogConfig,
    /// The `[limits]` table.
    pub limits: Limits,
    /// The `[canary]` table: a share of default-route clients sent to another pool.
    pub canary: Option<CanaryConfig>,
    /// The `[mirror]` table: copies of default-route requests sent to another pool.
    pub mirror: Option<MirrorConfig>,
    /// The `[rollout]` table: an automated rollout in progress, resumed at startup.
    pub rollout: Option<RolloutConfig>,
    /// The `[tls]` table: HTTPS.
    pub tls: Option<TlsConfig>,
    /// The `[cluster]` table: the switch state shared with other instances in etcd.
    pub cluster: Option<ClusterConfig>,
}

/// `[limits]`: what a client may send, and how many may at once.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// The request head (request line and headers), in bytes: past it, 431.
    pub max_header_bytes: usize,
    /// Header fields per request: past it, 431.
    pub max_headers: usize,
    /// The request target, in bytes: past it, 414.
    pub max_uri_bytes: usize,
    /// A request body, in bytes (counted while streaming): past it, 413. `None` (also for 0 in
    /// the file): no limit.
    pub max_body_bytes: Option<u64>,
    /// Client connections open at once; more wait in the listen backlog.
    pub max_connections: usize,
    /// Concurrent streams per HTTP/2 connection.
    pub h2_max_concurrent_streams: u32,
}

impl Default for Limits {
    /// The defaults of an empty `[limits]` table (one source: the serde defaults).
    fn default() -> Self {
        Limits::from(RawLimits::default())
    }
}

impl From<RawLimits> for Limits {
    fn from(raw: RawLimits) -> Limits {
        Limits {
            max_header_bytes: raw.max_header_bytes,
            max_headers: raw.max_headers,
            max_uri_bytes: raw.max_uri_bytes,
            // 0 means no limit, as nginx's `client_max_body_size 0`.
            max_body_bytes: raw.max_body_bytes.filter(|&n| n > 0),
            max_connections: raw.max_connections,
            h2_max_concurrent_streams: raw.h2_max_concurrent_streams,
        }
    }
}

impl Limits {
    /// Refuses limits too small to work, naming the key.
    fn validate(self, ctx: &Ctx<'_>) -> Result<Limits> {
        let minimums = [
            ("max_header_bytes", self.max_header_bytes, 8192),
            ("max_headers", self.max_headers, 1),
            ("max_uri_bytes", self.max_uri_bytes, 16),
            ("max_connections", self.max_connections, 1),
            (
                "h2_max_concurrent_streams",
                self.h2_max_concurrent_streams as usize,
                1,
            ),
        ];
        for (key, value, min) in minimums {
            at_least(value, min).map_err(|r| ctx.error(&format!("limits.{key}"), r))?;
        }
        Ok(self)
    }
}

/// `[proxy]`: the client-facing listener and its timeouts.
#[derive(Debug, Clone, PartialEq)]
pub struct ProxyConfig {
    /// Where the proxy accepts clients.
    pub listen: SocketAddr,
    /// Time to open a TCP connection to one upstream server before trying the next.
    pub connect_timeout: Duration,
    /// Time from sending the request to the upstream's response head; past it, 504.
    pub response_timeout: Duration,
    /// Time a client has to send its whole request head.
    pub header_timeout: Duration,
    /// How long in-flight work may take to finish after SIGTERM.
    pub grace_period: Duration,
    /// How long an idle pooled upstream connection is kept. Must stay below the upstreams' own
    /// keep-alive timeout, so that teal, not the upstream, closes idle connections.
    pub upstream_idle_timeout: Duration,
    /// How often server hostnames are resolved again (also after every connect failure).
    pub resolve_interval: Duration,
    /// How long a client connection may sit idle between requests before teal closes it.
    pub idle_timeout: Duration,
    /// Longest pause between two reads of a request body from the client; then 408.
    pub client_body_timeout: Duration,
    /// Longest pause between two reads of a response body (or two writes of a request body) on
    /// the upstream connection; then both connections close.
    pub upstream_body_timeout: Duration,
    /// Longest a write to a client that does not read may wait; then the connection closes.
    pub client_send_timeout: Duration,
    /// Peers whose `X-Forwarded-For` is believed (another proxy in front of teal).
    pub trusted_proxies: Vec<IpNet>,
    /// Proxy worker threads, each with its own runtime, listener and upstream pool.
    pub workers: usize,
    /// A hosts(5) file consulted before the system resolver, re-read on every resolution.
    pub hosts_file: Option<PathBuf>,
}

/// `[admin]`: the admin API listener and its bearer token.
#[derive(Debug, Clone, PartialEq)]
pub struct AdminConfig {
    /// Where the admin API listens.
    pub listen: SocketAddr,
    /// The token admin requests must carry, from `token` or `token_file`.
    pub token: Option<Secret>,
    /// Where the token was read from, if from a file (re-read on every reload).
    pub token_file: Option<PathBuf>,
    /// `None`: any peer may call the admin API; `Some`: only these networks.
    pub allow: Option<Vec<IpNet>>,
    /// Names accepted in `Host` besides the listener's own address (`admin.hosts`).
    pub hosts: Vec<AdminHost>,
}

/// One `[pools.NAME]` table.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolConfig {
    /// `host:port` of each server, in file order.
    pub servers: Vec<Authority>,
    /// Overrides `proxy.connect_timeout` for this pool.
    pub connect_timeout: Option<Duration>,
    /// Overrides `proxy.response_timeout` for this pool.
    pub response_timeout: Option<Duration>,
    /// Active health checks, when configured.
    pub health: Option<HealthConfig>,
}

/// `[pools.NAME.health]`: active health checks of every server of the pool.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthConfig {
    /// The path probed with `GET`.
    pub path: String,
    /// Time between probes.
    pub interval: Duration,
    /// Time a probe may take.
    pub timeout: Duration,
    /// Consecutive successes that make a server healthy.
    pub healthy_after: u32,
    /// Consecutive failures that make a server unhealthy.
    pub unhealthy_after: u32,
    /// Statuses that count as success (inclusive range).
    pub expect_status: std::ops::RangeInclusive<u16>,
}

/// `[preview]`: who may use the `/<pool>/...` routes, and the cookie and header that pick a pool
/// for those clients at the real paths.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PreviewConfig {
    /// `None`: everyone. `Some`: only peers inside one of these networks.
    pub allow: Option<Vec<IpNet>>,
    /// The sticky preview cookie's name (`teal_preview`), when enabled.
    pub cookie: Option<String>,
    /// The field an allowed client names a pool in per request (`X-Teal-Pool`), when enabled.
    pub header: Option<http::HeaderName>,
}

/// `[log]`: event format and the access log switch.
#[derive(Debug, Clone, PartialEq)]
pub struct LogConfig {
    /// Text for people, JSON for log shippers.
    pub format: LogFormat,
    /// One `teal::access` line per request.
    pub access: bool,
}

/// How log events are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// A string that never shows up in `Debug` output or logs.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// The secret itself, for the one place that compares it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// A configuration that cannot be used, with where and why.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: cannot read: {source}")]
    Io {
        /// The file.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The text is not valid TOML or does not fit the schema.
    #[error("{path}{}: {}{reason}", pos_text(*.pos), key_text(.key))]
    Invalid {
        /// The file (or `<embedded>`).
        path: String,
        /// 1-based line and column, when known.
        pos: Option<(usize, usize)>,
        /// The dotted key, when known.
        key: Option<String>,
        /// What is wrong and what to do.
        reason: String,
    },
}

fn pos_text(pos: Option<(usize, usize)>) -> String {
    pos.map(|(l, c)| format!(":{l}:{c}")).unwrap_or_default()
}

fn key_text(key: &Option<String>) -> String {
    key.as_ref().map(|k| format!("{k}: ")).unwrap_or_default()
}

/// The result of parsing or validating configuration.
pub type Result<T> = std::result::Result<T, ConfigError>;

impl Config {
    /// Reads and validates the file at `path`, including a `token_file` it names.
    pub fn load(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.display().to_string(),
            source,
        })?;
        let mut config = Config::parse(&text, Some(path))?;
        config.read_token_file()?;
        Ok(config)
    }

    /// Validates `text` without touching the file system. `path` is only used in messages and
    /// to resolve a relative `token_file` later.
    pub fn parse(text: &str, path: Option<&Path>) -> Result<Config> {
        let ctx = Ctx { text, path };
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let reason = e.message().trim_end().replace('\n', "; ");
            ctx.error_at(e.span().map(|s| s.start), None, reason)
        })?;
        Config::from_raw(raw, &ctx)
    }

    fn from_raw(raw: RawConfig, ctx: &Ctx<'_>) -> Result<Config> {
        let pools = pools::pools(raw.pools, ctx)?;
        known_pool(&raw.active, &pools, "active", ctx)?;
        let preview = preview::preview_config(raw.preview, ctx)?;
        let proxy = proxy::proxy_config(raw.proxy, ctx)?;
        let admin = admin::admin_config(raw.admin, ctx)?;
        check_listeners_apart(&admin, &proxy, ctx)?;
        let limits = Limits::from(raw.limits).validate(ctx)?;
        let canary = raw
            .canary
            .map(|c| canary::canary_config(c, &raw.active, &pools, ctx))
            .transpose()?;
        let mirror = raw
            .mirror
            .map(|m| mirror::mirror_config(m, &pools, ctx))
            .transpose()?;
        let rollout = raw
            .rollout
            .map(|r| rollout::rollout_config(r, &pools, ctx))
            .transpose()?;
        let tls = raw
            .tls
            .map(|t| tls::tls_config(t, &proxy, &admin, ctx))
            .transpose()?;
        let cluster = raw
            .cluster
            .map(|c| cluster::cluster_config(c, ctx))
            .transpose()?;
        Ok(Config {
            path: ctx.path.map(Path::to_path_buf),
            active: raw.active,
            proxy,
            admin,
            pools,
            preview,
            log: LogConfig {
                format: raw.log.format,
                access: raw.log.access,
            },
            limits,
            canary,
            mirror,
            rollout,
            tls,
            cluster,
        })
    }

    /// Reads `admin.token_file`, if set, into `admin.token`. A trailing newline is not part of
    /// the token (files written by `echo` or editors end in one).
    pub fn read_token_file(&mut self) -> Result<()> {
        let Some(file) = &self.admin.token_file else {
            return Ok(());
        };
        let path = self.display_path();
        let text = std::fs::read_to_string(file).map_err(|e| ConfigError::Invalid {
            path: path.clone(),
            pos: None,
            key: Some("admin.token_file".into()),
            reason: format!("cannot read {}: {e}", file.display()),
        })?;
        let token = text.trim_end_matches(['\r', '\n']);
        if token.trim().is_empty() {
            return Err(ConfigError::Invalid {
                path,
                pos: None,
                key: Some("admin.token_file".into()),
                reason: format!("{} is empty", file.display()),
            });
        }
        self.admin.token = Some(Secret(token.to_string()));
        Ok(())
    }

    /// The file name for messages, or `<embedded>`.
    pub fn display_path(&self) -> String {
        display_path(self.path.as_deref())
    }
}

fn display_path(path: Option<&Path>) -> String {
    path.map_or_else(|| "<embedded>".into(), |p| p.display().to_string())
}

/// The text being validated, so errors can point into it.
struct Ctx<'a> {
    text: &'a str,
    path: Option<&'a Path>,
}

impl Ctx<'_> {
    /// An error at the dotted `key`, with its line and column looked up in the text.
    fn error(&self, key: &str, reason: impl Into<String>) -> ConfigError {
        let offset = locate(self.text, key);
        let mut err = self.error_at(offset, None, reason.into());
        if let ConfigError::Invalid { key: k, .. } = &mut err {
            *k = Some(key.to_string());
        }
        err
    }

    /// An error at byte `offset`; the key is derived from the offset when not given.
    fn error_at(&self, offset: Option<usize>, key: Option<String>, reason: String) -> ConfigError {
        let key = key.or_else(|| offset.and_then(|o| key_at(self.text, o)));
        ConfigError::Invalid {
            path: display_path(self.path),
            pos: offset.map(|o| line_col(self.text, o)),
            key,
            reason,
        }
    }
}

/// The admin API and the proxy cannot share a socket: `run` would fail to bind.
fn check_listeners_apart(admin: &AdminConfig, proxy: &ProxyConfig, ctx: &Ctx<'_>) -> Result<()> {
    if listeners_clash(admin.listen, proxy.listen) {
        return Err(ctx.error(
            "admin.listen",
            format!(
                "{} is also where the proxy listens (proxy.listen = {}); give the admin API \
                 its own port",
                admin.listen, proxy.listen
            ),
        ));
    }
    Ok(())
}

/// `name` names one of `pools`; otherwise an error at `key` that lists the pools there are.
fn known_pool(
    name: &str,
    pools: &BTreeMap<String, PoolConfig>,
    key: &str,
    ctx: &Ctx<'_>,
) -> Result<()> {
    if pools.contains_key(name) {
        return Ok(());
    }
    let names: Vec<&str> = pools.keys().map(String::as_str).collect();
    let reason = format!(
        "no pool named {name:?}; defined pools: {}",
        names.join(", ")
    );
    Err(ctx.error(key, reason))
}

/// A list of networks (`IP` or CIDR), each error naming its entry (`key[i]`).
fn nets(list: &[String], key: &str, ctx: &Ctx<'_>) -> Result<Vec<IpNet>> {
    list.iter()
        .enumerate()
        .map(|(i, s)| parse_net(s).map_err(|r| ctx.error(&format!("{key}[{i}]"), r)))
        .collect()
}

/// A path from the config, relative to the config file's directory.
fn relative_to(config: Option<&Path>, file: PathBuf) -> PathBuf {
    match config {
        Some(p) if file.is_relative() => p.parent().unwrap_or(Path::new(".")).join(file),
        _ => file,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
active = "blue"
[proxy]
listen = "127.0.0.1:8080"
[pools.blue]
servers = ["server1-blue:8080", "server2-blue:8080"]
[pools.green]
servers = ["server1-green:8080", "server2-green:8080"]
[preview]
allow = ["192.168.0.10", "10.1.0.0/16"]
"#;

    fn err(text: &str) -> String {
        Config::parse(text, Some(Path::new("teal.toml")))
            .unwrap_err()
            .to_string()
    }

    /// The seed's deployment parses with every default filled in.
    #[test]
    fn parses_seed_deployment() {
        let c = Config::parse(GOOD, None).unwrap();
        assert_eq!(c.active, "blue");
        assert_eq!(c.pools["green"].servers[1].as_str(), "server2-green:8080");
        assert_eq!(c.proxy.connect_timeout, Duration::from_secs(2));
        assert_eq!(c.proxy.response_timeout, Duration::from_secs(60));
        assert_eq!(c.admin.listen, "127.0.0.1:9900".parse().unwrap());
        assert_eq!(c.preview.allow.as_ref().unwrap().len(), 2);
        assert!(c.log.access);
    }

    /// Broken TOML names file, line and column.
    #[test]
    fn bad_toml_names_line() {
        let e = err("active = \"blue\"\n[pools.blue\nservers = []\n");
        assert!(e.starts_with("teal.toml:2:"), "{e}");
    }

    /// `active` naming no pool points at the `active` line and lists the pools.
    #[test]
    fn active_without_pool() {
        let e = err(&GOOD.replace("active = \"blue\"", "active = \"purple\""));
        assert!(e.starts_with("teal.toml:2:1: active:"), "{e}");
        assert!(e.contains("blue, green"), "{e}");
    }

    /// An empty pool names the pool's servers key.
    #[test]
    fn empty_pool() {
        let e = err(&GOOD.replace(
            "servers = [\"server1-green:8080\", \"server2-green:8080\"]",
            "servers = []",
        ));
        assert!(e.starts_with("teal.toml:8:1: pools.green.servers:"), "{e}");
    }

    /// A server without a port is named down to its index.
    #[test]
    fn malformed_server() {
        let e = err(&GOOD.replace("\"server2-green:8080\"", "\"server2-green\""));
        assert!(
            e.starts_with("teal.toml:8:34: pools.green.servers[1]:"),
            "{e}"
        );
        assert!(e.contains("no port"), "{e}");
        for bad in ["http://a:80", "a:0", ":80", "a b:80", "a:99999"] {
            assert!(parse_server(bad).is_err(), "{bad} accepted");
        }
        for good in ["a:80", "127.0.0.1:8080", "[::1]:80", "server1-blue:8080"] {
            assert!(parse_server(good).is_ok(), "{good} refused");
        }
    }

    /// A bad CIDR names its index in preview.allow.
    #[test]
    fn bad_cidr() {
        let e = err(&GOOD.replace("10.1.0.0/16", "10.1.0.0/33"));
        assert!(e.starts_with("teal.toml:10:26: preview.allow[1]:"), "{e}");
    }

    /// Unknown keys are refused with their dotted name and line.
    #[test]
    fn unknown_key() {
        let e = err(&GOOD.replace("[preview]", "[preview]\ndeny = [\"1.2.3.4\"]"));
        assert!(e.starts_with("teal.toml:10:1: preview.deny:"), "{e}");
        assert!(e.contains("unknown field"), "{e}");
        let e = err(&format!("{GOOD}\n[pools.blue.weights]\n"));
        assert!(e.contains("teal.toml:"), "{e}");
    }

    /// Bad durations and listen addresses name their key.
    #[test]
    fn bad_values() {
        let e = err(&GOOD.replace("[proxy]", "[proxy]\nconnect_timeout = \"soon\""));
        assert!(e.starts_with("teal.toml:4:"), "{e}");
        assert!(e.contains("proxy.connect_timeout"), "{e}");
        let e = err(&GOOD.replace("127.0.0.1:8080", "localhost:8080"));
        assert!(e.starts_with("teal.toml:4:1: proxy.listen:"), "{e}");
    }

    /// Pool names must be usable as one path segment.
    #[test]
    fn pool_name_is_a_segment() {
        let e = err(&GOOD.replace("[pools.green]", "[pools.\"gr/een\"]"));
        assert!(e.contains("pools.gr/een"), "{e}");
        assert!(check_pool_name("green-2").is_ok());
        assert!(check_pool_name("..").is_err());
    }

    /// Health checks: defaults, and errors naming the key.
    #[test]
    fn health_section() {
        let c = Config::parse(
            &format!("{GOOD}\n[pools.green.health]\npath = \"/ready\"\n"),
            None,
        )
        .unwrap();
        let h = c.pools["green"].health.as_ref().unwrap();
        assert_eq!(
            (
                h.path.as_str(),
                h.interval,
                h.healthy_after,
                h.unhealthy_after
            ),
            ("/ready", Duration::from_secs(2), 2, 3)
        );
        assert_eq!(h.expect_status, 200..=399);
        assert!(c.pools["blue"].health.is_none());
        let e = err(&format!(
            "{GOOD}\n[pools.green.health]\nexpect_status = \"2xx\"\n"
        ));
        assert!(e.contains("pools.green.health.expect_status:"), "{e}");
        let e = err(&format!("{GOOD}\n[pools.green.health]\npath = \"ready\"\n"));
        assert!(e.contains("pools.green.health.path:"), "{e}");
        let e = err(&format!(
            "{GOOD}\n[pools.green.health]\nunhealthy_after = 0\n"
        ));
        assert!(e.contains("pools.green.health.unhealthy_after:"), "{e}");
        let e = err(&GOOD.replace("[pools.green]", "[pools.green]\nresponse_timeout = \"0s\""));
        assert!(e.contains("pools.green.response_timeout:"), "{e}");
        assert_eq!(parse_status_range("204").unwrap(), 204..=204);
        assert!(parse_status_range("399-200").is_err());
    }

    /// The admin API on a non-loopback address needs a token, unless that is explicitly waived.
    #[test]
    fn admin_off_loopback_needs_token() {
        let open = GOOD.replace("[preview]", "[admin]\nlisten = \"0.0.0.0:9900\"\n[preview]");
        let e = err(&open);
        assert!(e.contains("admin.listen:") && e.contains("no token"), "{e}");
        let with_token = open.replace("0.0.0.0:9900\"", "0.0.0.0:9900\"\ntoken = \"t\"");
        assert!(Config::parse(&with_token, None).is_ok());
        let waived = open.replace("0.0.0.0:9900\"", "0.0.0.0:9900\"\ninsecure_no_token = true");
        assert!(Config::parse(&waived, None).is_ok());
        let e = err(&GOOD.replace("[preview]", "[admin]\nallow = [\"nope\"]\n[preview]"));
        assert!(e.contains("admin.allow[0]:"), "{e}");
        let e = err(&GOOD.replace("[preview]", "[limits]\nmax_headers = 0\n[preview]"));
        assert!(e.contains("limits.max_headers:"), "{e}");
    }

    /// The admin API and the proxy cannot share a socket address (an unspecified IP covers every
    /// IP of its family, and `[::]` both families); port 0 means any and never clashes.
    #[test]
    fn admin_and_proxy_listen_apart() {
        let both = |proxy: &str, admin: &str| {
            GOOD.replace("127.0.0.1:8080", proxy).replace(
                "[preview]",
                &format!("[admin]\nlisten = \"{admin}\"\n[preview]"),
            )
        };
        for (proxy, admin) in [
            ("127.0.0.1:8080", "127.0.0.1:8080"),
            ("0.0.0.0:8080", "127.0.0.1:8080"),
            ("127.0.0.1:9900", "0.0.0.0:9900"),
            ("[::]:8080", "127.0.0.1:8080"),
        ] {
            let text = both(proxy, admin).replace("[admin]", "[admin]\ntoken = \"t\"");
            let e = err(&text);
            assert!(
                e.contains("admin.listen:") && e.contains("proxy.listen"),
                "{proxy} {admin}: {e}"
            );
        }
        for (proxy, admin) in [
            ("127.0.0.1:8080", "127.0.0.1:9900"),
            ("127.0.0.1:0", "127.0.0.1:0"),
            ("127.0.0.1:8080", "127.0.0.2:8080"),
            ("0.0.0.0:8080", "[::1]:8080"),
        ] {
            let text = both(proxy, admin);
            assert!(
                Config::parse(&text, None).is_ok(),
                "{proxy} {admin} refused"
            );
        }
    }

    /// A port over 65535 is out of range, not missing.
    #[test]
    fn port_out_of_range() {
        let e = err(&GOOD.replace("\"server2-green:8080\"", "\"127.0.0.1:99999\""));
        assert!(e.contains("pools.green.servers[1]:"), "{e}");
        assert!(e.contains("port 99999 is out of range"), "{e}");
        assert!(parse_server("[::1]:70000")
            .unwrap_err()
            .contains("out of range"));
        assert!(parse_server("a:").unwrap_err().contains("no port"));
    }

    /// A CIDR with host bits set is refused with the network it probably meant, in every list.
    #[test]
    fn cidr_with_host_bits() {
        let e = err(&GOOD.replace("10.1.0.0/16", "10.1.0.1/16"));
        assert!(e.starts_with("teal.toml:10:26: preview.allow[1]:"), "{e}");
        assert!(e.contains("did you mean \"10.1.0.0/16\""), "{e}");
        let e = err(&GOOD.replace("[preview]", "[admin]\nallow = [\"10.0.0.1/8\"]\n[preview]"));
        assert!(
            e.contains("admin.allow[0]:") && e.contains("\"10.0.0.0/8\""),
            "{e}"
        );
        let text = GOOD.replace("[proxy]", "[proxy]\ntrusted_proxies = [\"fd00::1/64\"]");
        let e = err(&text);
        assert!(
            e.contains("proxy.trusted_proxies[0]:") && e.contains("\"fd00::/64\""),
            "{e}"
        );
        assert!(parse_net("10.0.0.1/32").is_ok());
        assert!(parse_net("10.0.0.0/8").is_ok());
    }

    /// `max_body_bytes = 0` means no limit, as nginx's `client_max_body_size 0` does.
    #[test]
    fn max_body_bytes_zero_is_unlimited() {
        let limit = |v: &str| {
            let text = GOOD.replace(
                "[preview]",
                &format!("[limits]\nmax_body_bytes = {v}\n[preview]"),
            );
            Config::parse(&text, None).unwrap().limits.max_body_bytes
        };
        assert_eq!(limit("0"), None);
        assert_eq!(limit("1024"), Some(1024));
    }

    /// A token and a token file together are refused; the secret never prints.
    #[test]
    fn token_rules() {
        let e = err(&format!(
            "{GOOD}\n[admin]\ntoken = \"s3cret\"\ntoken_file = \"/x\"\n"
        ));
        assert!(e.contains("admin.token_file"), "{e}");
        let c = Config::parse(&format!("{GOOD}\n[admin]\ntoken = \"s3cret\"\n"), None).unwrap();
        assert!(!format!("{c:?}").contains("s3cret"));
    }

    /// A token file's trailing newline is not part of the token; relative paths follow the config.
    #[test]
    fn token_file_is_read() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("tok"), "abc\n").unwrap();
        let path = dir.path().join("teal.toml");
        std::fs::write(&path, format!("{GOOD}\n[admin]\ntoken_file = \"tok\"\n")).unwrap();
        let c = Config::load(&path).unwrap();
        assert_eq!(c.admin.token.unwrap().expose(), "abc");
    }
}
