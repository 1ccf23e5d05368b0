//! The `[cluster]` table: several teal instances sharing their switch state in etcd.

use std::path::PathBuf;

use serde::Deserialize;

use super::{relative_to, Ctx, Result};

/// `[cluster]` as the file has it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCluster {
    etcd: Vec<String>,
    prefix: String,
    username: Option<String>,
    password_file: Option<PathBuf>,
    ca_file: Option<PathBuf>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
}

/// `[cluster]`: where the shared state lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// etcd client URLs (`http://host:port` or `https://host:port`), tried in order.
    pub etcd: Vec<http::Uri>,
    /// The keys of this deployment live under it (starts with `/`, no trailing `/`).
    pub prefix: String,
    /// etcd user, with `password_file`.
    pub username: Option<String>,
    /// The file holding the etcd user's password (read at startup).
    pub password_file: Option<PathBuf>,
    /// Extra trust roots for etcd's HTTPS.
    pub ca_file: Option<PathBuf>,
    /// Client certificate for etcd's HTTPS (PEM), with `key`.
    pub cert: Option<PathBuf>,
    /// Client key for etcd's HTTPS (PEM), with `cert`.
    pub key: Option<PathBuf>,
}

/// Validates `[cluster]`: at least one etcd URL, each `http://` or `https://` with a host and
/// nothing after the authority; a prefix that is an absolute key path; `username` and
/// `password_file` together; `cert` and `key` together; TLS files only with `https://` URLs.
pub(super) fn cluster_config(raw: RawCluster, ctx: &Ctx<'_>) -> Result<ClusterConfig> {
    if raw.etcd.is_empty() {
        return Err(ctx.error(
            "cluster.etcd",
            "empty: list etcd's client URLs, like [\"http://127.0.0.1:2379\"]",
        ));
    }
    let etcd = raw
        .etcd
        .iter()
        .enumerate()
        .map(|(i, url)| endpoint(url).map_err(|r| ctx.error(&format!("cluster.etcd[{i}]"), r)))
        .collect::<Result<Vec<_>>>()?;
    let prefix = raw.prefix;
    let bad_prefix = !prefix.starts_with('/')
        || prefix.len() < 2
        || prefix.ends_with('/')
        || prefix.chars().any(|c| c.is_control() || c.is_whitespace());
    if bad_prefix {
        return Err(ctx.error(
            "cluster.prefix",
            format!("{prefix:?} is not a key prefix: it starts with \"/\", has no trailing \"/\" and no spaces, like \"/teal/shop\""),
        ));
    }
    if raw.username.is_some() != raw.password_file.is_some() {
        let key = if raw.username.is_some() {
            "cluster.password_file"
        } else {
            "cluster.username"
        };
        return Err(ctx.error(key, "username and password_file go together"));
    }
    if raw.cert.is_some() != raw.key.is_some() {
        let key = if raw.cert.is_some() {
            "cluster.key"
        } else {
            "cluster.cert"
        };
        return Err(ctx.error(
            key,
            "cert and key go together (a client certificate and its key)",
        ));
    }
    let tls_files = raw.ca_file.is_some() || raw.cert.is_some();
    if tls_files && etcd.iter().any(|u| u.scheme_str() != Some("https")) {
        let key = if raw.ca_file.is_some() {
            "cluster.ca_file"
        } else {
            "cluster.cert"
        };
        return Err(ctx.error(key, "TLS files need https:// etcd URLs"));
    }
    let file = |f: Option<PathBuf>| f.map(|f| relative_to(ctx.path, f));
    Ok(ClusterConfig {
        etcd,
        prefix,
        username: raw.username,
        password_file: file(raw.password_file),
        ca_file: file(raw.ca_file),
        cert: file(raw.cert),
        key: file(raw.key),
    })
}

/// An etcd client URL: `http(s)://host:port`, nothing after the authority but an optional `/`.
fn endpoint(url: &str) -> std::result::Result<http::Uri, String> {
    let uri: http::Uri = url
        .parse()
        .map_err(|e| format!("{url:?} is not a URL: {e}"))?;
    let scheme_ok = matches!(uri.scheme_str(), Some("http" | "https"));
    let path_ok = matches!(uri.path(), "" | "/") && uri.query().is_none();
    match uri.authority() {
        Some(a) if scheme_ok && path_ok && !a.as_str().contains('@') => Ok(uri),
        _ => Err(format!(
            "{url:?} is not an etcd client URL like \"http://127.0.0.1:2379\""
        )),
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    const BASE: &str = "active = \"blue\"\n[pools.blue]\nservers = [\"127.0.0.1:1\"]\n";

    fn parse(cluster: &str) -> Result<Config, String> {
        Config::parse(&format!("{BASE}[cluster]\n{cluster}"), None).map_err(|e| e.to_string())
    }

    #[test]
    fn good_cluster_tables() {
        let c = parse(
            "etcd = [\"http://127.0.0.1:2379\", \"https://e:2379/\"]\nprefix = \"/teal/shop\"\n",
        )
        .unwrap()
        .cluster
        .unwrap();
        assert_eq!(c.etcd.len(), 2);
        assert_eq!(c.prefix, "/teal/shop");
    }

    #[test]
    fn bad_cluster_tables_name_the_key() {
        let cases = [
            ("etcd = []\nprefix = \"/t\"\n", "cluster.etcd: empty"),
            (
                "etcd = [\"127.0.0.1:2379\"]\nprefix = \"/t\"\n",
                "cluster.etcd[0]:",
            ),
            (
                "etcd = [\"ftp://e:1\"]\nprefix = \"/t\"\n",
                "cluster.etcd[0]:",
            ),
            (
                "etcd = [\"http://e:1/v3\"]\nprefix = \"/t\"\n",
                "cluster.etcd[0]:",
            ),
            (
                "etcd = [\"http://e:1\"]\nprefix = \"teal\"\n",
                "cluster.prefix:",
            ),
            (
                "etcd = [\"http://e:1\"]\nprefix = \"/teal/\"\n",
                "cluster.prefix:",
            ),
            (
                "etcd = [\"http://e:1\"]\nprefix = \"/\"\n",
                "cluster.prefix:",
            ),
            (
                "etcd = [\"http://e:1\"]\nprefix = \"/t\"\nusername = \"u\"\n",
                "cluster.password_file:",
            ),
            (
                "etcd = [\"http://e:1\"]\nprefix = \"/t\"\ncert = \"c.pem\"\n",
                "cluster.key:",
            ),
            (
                "etcd = [\"http://e:1\"]\nprefix = \"/t\"\nca_file = \"ca.pem\"\n",
                "cluster.ca_file: TLS files need https",
            ),
            (
                "etcd = [\"http://e:1\"]\nprefix = \"/t\"\nleader = true\n",
                "unknown field `leader`",
            ),
        ];
        for (text, want) in cases {
            let e = parse(text).unwrap_err();
            assert!(e.contains(want), "{text:?}: {e}");
        }
    }
}
