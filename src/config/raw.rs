//! What the file says, as serde reads it: every table and key with its default, unknown keys
//! refused. [`super::Config::from_raw`] turns this into the validated [`super::Config`].

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::LogFormat;

/// What the file says, as serde reads it. Only [`super::Config`] leaves the config module.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub(super) active: String,
    #[serde(default)]
    pub(super) proxy: RawProxy,
    #[serde(default)]
    pub(super) admin: RawAdmin,
    #[serde(default)]
    pub(super) pools: BTreeMap<String, RawPool>,
    #[serde(default)]
    pub(super) preview: RawPreview,
    #[serde(default)]
    pub(super) log: RawLog,
    #[serde(default)]
    pub(super) limits: RawLimits,
    pub(super) canary: Option<RawCanary>,
    pub(super) rollout: Option<super::rollout::RawRollout>,
    pub(super) mirror: Option<RawMirror>,
    pub(super) tls: Option<super::tls::RawTls>,
    pub(super) cluster: Option<super::cluster::RawCluster>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMirror {
    pub(super) pool: String,
    #[serde(default = "default_percent")]
    pub(super) percent: i64,
    pub(super) methods: Option<Vec<String>>,
    pub(super) max_body: Option<RawSize>,
    #[serde(default = "default_mirror_in_flight")]
    pub(super) max_in_flight: i64,
}

/// A size in the file: a number of bytes or a string like `"64KiB"`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum RawSize {
    Bytes(i64),
    Text(String),
}

fn default_percent() -> i64 {
    100
}

fn default_mirror_in_flight() -> i64 {
    super::mirror::DEFAULT_MAX_IN_FLIGHT.into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCanary {
    pub(super) pool: String,
    pub(super) percent: i64,
    #[serde(default)]
    pub(super) sticky: super::Sticky,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLimits {
    #[serde(default = "default_max_header_bytes")]
    pub(super) max_header_bytes: usize,
    #[serde(default = "default_max_headers")]
    pub(super) max_headers: usize,
    #[serde(default = "default_max_uri_bytes")]
    pub(super) max_uri_bytes: usize,
    pub(super) max_body_bytes: Option<u64>,
    #[serde(default = "default_max_connections")]
    pub(super) max_connections: usize,
    #[serde(default = "default_h2_max_concurrent_streams")]
    pub(super) h2_max_concurrent_streams: u32,
}

impl Default for RawLimits {
    fn default() -> Self {
        RawLimits {
            max_header_bytes: default_max_header_bytes(),
            max_headers: default_max_headers(),
            max_uri_bytes: default_max_uri_bytes(),
            max_body_bytes: None,
            max_connections: default_max_connections(),
            h2_max_concurrent_streams: default_h2_max_concurrent_streams(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawProxy {
    #[serde(default = "default_proxy_listen")]
    pub(super) listen: String,
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    pub(super) connect_timeout: Duration,
    #[serde(default = "default_response_timeout", with = "humantime_serde")]
    pub(super) response_timeout: Duration,
    #[serde(default = "default_header_timeout", with = "humantime_serde")]
    pub(super) header_timeout: Duration,
    #[serde(default = "default_grace_period", with = "humantime_serde")]
    pub(super) grace_period: Duration,
    #[serde(default = "default_upstream_idle_timeout", with = "humantime_serde")]
    pub(super) upstream_idle_timeout: Duration,
    #[serde(default = "default_resolve_interval", with = "humantime_serde")]
    pub(super) resolve_interval: Duration,
    #[serde(default = "default_idle_timeout", with = "humantime_serde")]
    pub(super) idle_timeout: Duration,
    #[serde(default = "default_body_timeout", with = "humantime_serde")]
    pub(super) client_body_timeout: Duration,
    #[serde(default = "default_body_timeout", with = "humantime_serde")]
    pub(super) upstream_body_timeout: Duration,
    #[serde(default = "default_body_timeout", with = "humantime_serde")]
    pub(super) client_send_timeout: Duration,
    pub(super) hosts_file: Option<PathBuf>,
    #[serde(default)]
    pub(super) trusted_proxies: Vec<String>,
    pub(super) workers: Option<usize>,
}

impl Default for RawProxy {
    fn default() -> Self {
        RawProxy {
            listen: default_proxy_listen(),
            connect_timeout: default_connect_timeout(),
            response_timeout: default_response_timeout(),
            header_timeout: default_header_timeout(),
            grace_period: default_grace_period(),
            upstream_idle_timeout: default_upstream_idle_timeout(),
            resolve_interval: default_resolve_interval(),
            idle_timeout: default_idle_timeout(),
            client_body_timeout: default_body_timeout(),
            upstream_body_timeout: default_body_timeout(),
            client_send_timeout: default_body_timeout(),
            hosts_file: None,
            trusted_proxies: Vec::new(),
            workers: None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAdmin {
    #[serde(default = "default_admin_listen")]
    pub(super) listen: String,
    pub(super) token: Option<String>,
    pub(super) token_file: Option<PathBuf>,
    #[serde(default)]
    pub(super) insecure_no_token: bool,
    pub(super) allow: Option<Vec<String>>,
    #[serde(default)]
    pub(super) hosts: Vec<String>,
}

impl Default for RawAdmin {
    fn default() -> Self {
        RawAdmin {
            listen: default_admin_listen(),
            token: None,
            token_file: None,
            insecure_no_token: false,
            allow: None,
            hosts: Vec::new(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPool {
    pub(super) servers: Vec<String>,
    #[serde(default, with = "humantime_serde::option")]
    pub(super) connect_timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde::option")]
    pub(super) response_timeout: Option<Duration>,
    pub(super) health: Option<RawHealth>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHealth {
    #[serde(default = "default_health_path")]
    pub(super) path: String,
    #[serde(default = "default_health_interval", with = "humantime_serde")]
    pub(super) interval: Duration,
    #[serde(default = "default_health_timeout", with = "humantime_serde")]
    pub(super) timeout: Duration,
    #[serde(default = "default_healthy_after")]
    pub(super) healthy_after: u32,
    #[serde(default = "default_unhealthy_after")]
    pub(super) unhealthy_after: u32,
    #[serde(default = "default_expect_status")]
    pub(super) expect_status: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPreview {
    pub(super) allow: Option<Vec<String>>,
    pub(super) cookie: Option<String>,
    pub(super) header: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLog {
    #[serde(default)]
    pub(super) format: LogFormat,
    #[serde(default = "yes")]
    pub(super) access: bool,
}

impl Default for RawLog {
    fn default() -> Self {
        RawLog {
            format: LogFormat::default(),
            access: true,
        }
    }
}

pub(super) fn default_proxy_listen() -> String {
    "0.0.0.0:80".into()
}
pub(super) fn default_admin_listen() -> String {
    "127.0.0.1:9900".into()
}
pub(super) fn default_connect_timeout() -> Duration {
    Duration::from_secs(2)
}
pub(super) fn default_response_timeout() -> Duration {
    Duration::from_secs(60)
}
pub(super) fn default_header_timeout() -> Duration {
    Duration::from_secs(10)
}
pub(super) fn default_grace_period() -> Duration {
    Duration::from_secs(30)
}
pub(super) fn default_upstream_idle_timeout() -> Duration {
    Duration::from_secs(4)
}
pub(super) fn default_max_header_bytes() -> usize {
    64 * 1024
}
pub(super) fn default_max_headers() -> usize {
    100
}
pub(super) fn default_max_uri_bytes() -> usize {
    8 * 1024
}
pub(super) fn default_max_connections() -> usize {
    10_000
}
pub(super) fn default_h2_max_concurrent_streams() -> u32 {
    100
}
pub(super) fn default_idle_timeout() -> Duration {
    Duration::from_secs(60)
}
/// Between two reads or writes of a body, as nginx's `client_body_timeout`, `proxy_read_timeout`
/// and `send_timeout` (60 s each).
pub(super) fn default_body_timeout() -> Duration {
    Duration::from_secs(60)
}
pub(super) fn default_resolve_interval() -> Duration {
    Duration::from_secs(5)
}
pub(super) fn default_health_path() -> String {
    "/".into()
}
pub(super) fn default_health_interval() -> Duration {
    Duration::from_secs(2)
}
pub(super) fn default_health_timeout() -> Duration {
    Duration::from_secs(1)
}
pub(super) fn default_healthy_after() -> u32 {
    2
}
pub(super) fn default_unhealthy_after() -> u32 {
    3
}
pub(super) fn default_expect_status() -> String {
    "200-399".into()
}
pub(super) fn yes() -> bool {
    true
}
