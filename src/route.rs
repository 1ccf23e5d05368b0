//! The routing decision: which pool a request goes to and with what path. Pure, no I/O.
//!
//! - `/<pool>` and `/<pool>/...` are preview routes: they reach that pool with the prefix
//!   stripped (`/blue` -> `/`, `/blue/x?q=1` -> `/x?q=1`), if the peer is on `preview.allow`.
//! - Everything else goes to the active pool with path and query unchanged. Matching is by whole
//!   path segment and case-sensitive (RFC 3986 §6.2.2.1: paths are case-sensitive), so `/blueberry`
//!   and `/BLUE` are not preview routes, unlike nginx's `location /blue`.

use std::net::IpAddr;
use std::sync::Arc;

use http::uri::{PathAndQuery, Uri};

use crate::pool::Pool;
use crate::state::Snapshot;

/// Where a request goes.
#[derive(Debug)]
pub enum Decision<'a> {
    /// The default route: the active pool, path and query unchanged.
    Active(&'a Arc<Pool>),
    /// A preview route: `pool`, with the prefix stripped from the path.
    Preview {
        /// The pool named by the first path segment.
        pool: &'a Arc<Pool>,
        /// The path and query to send upstream.
        path_and_query: PathAndQuery,
    },
    /// A preview route the peer is not allowed to use: 403, nothing sent upstream.
    Forbidden(&'a Arc<Pool>),
}

impl Decision<'_> {
    /// Whether this is the default route.
    pub fn is_active(&self) -> bool {
        matches!(self, Decision::Active(_))
    }
}

/// Decides where the request for `uri` from `client` goes under `snap`. `client` is the
/// connection's peer, or the address trusted proxies forwarded for (see
/// [`crate::headers::client_ip`]).
pub fn decide<'a>(uri: &Uri, client: IpAddr, snap: &'a Snapshot) -> Decision<'a> {
    decide_target(uri.path(), uri.query(), client, snap)
}

/// [`decide`] for a request target already split into `path` and `query`.
pub fn decide_target<'a>(
    path: &str,
    query: Option<&str>,
    client: IpAddr,
    snap: &'a Snapshot,
) -> Decision<'a> {
    let Some((segment, rest)) = first_segment(path) else {
        return Decision::Active(&snap.active);
    };
    let Some(pool) = snap.pool(segment) else {
        return Decision::Active(&snap.active);
    };
    if !preview_allowed(snap, client) {
        return Decision::Forbidden(pool);
    }
    Decision::Preview {
        pool,
        path_and_query: strip(rest, query),
    }
}

/// Whether `peer` may use preview routes: no `preview.allow` means everyone.
pub fn preview_allowed(snap: &Snapshot, peer: IpAddr) -> bool {
    let peer = peer.to_canonical();
    match &snap.config.preview.allow {
        None => true,
        Some(nets) => nets.iter().any(|n| n.contains(&peer)),
    }
}

/// Splits `/seg/rest` into `("seg", "/rest")`; `/seg` gives `("seg", "")`. `None` for `/` or a
/// path that is not absolute (`*`).
fn first_segment(path: &str) -> Option<(&str, &str)> {
    let after = path.strip_prefix('/')?;
    let end = after.find('/').unwrap_or(after.len());
    let (segment, rest) = after.split_at(end);
    (!segment.is_empty()).then_some((segment, rest))
}

/// The upstream path for a preview route: `rest` (or `/` when empty) plus the query.
fn strip(rest: &str, query: Option<&str>) -> PathAndQuery {
    let path = if rest.is_empty() { "/" } else { rest };
    let pq = match query {
        Some(q) => format!("{path}?{q}"),
        None => path.to_string(),
    };
    // `rest` and `query` come from a URI that already parsed, and a leading '/' was kept.
    PathAndQuery::try_from(pq).expect("a suffix of a valid path stays valid")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::metrics::Metrics;

    fn snap(allow: Option<&str>) -> Snapshot {
        let preview = allow.map_or(String::new(), |a| format!("[preview]\nallow = [{a}]\n"));
        let text = format!(
            "active = \"blue\"\n[pools.blue]\nservers = [\"b:1\"]\n[pools.green]\nservers = [\"g:1\"]\n{preview}"
        );
        let config = Arc::new(Config::parse(&text, None).unwrap());
        Snapshot::build(config, "blue", None, 1, &Metrics::new())
    }

    /// `pool` is the pool's name; `path` is `None` for the active route (unchanged request).
    fn decide(s: &Snapshot, uri: &str, peer: &str) -> (String, Option<String>) {
        let uri: Uri = uri.parse().unwrap();
        match super::decide(&uri, peer.parse().unwrap(), s) {
            Decision::Active(p) => (p.name.to_string(), None),
            Decision::Preview {
                pool,
                path_and_query,
            } => (pool.name.to_string(), Some(path_and_query.to_string())),
            Decision::Forbidden(p) => (format!("403 {}", p.name), None),
        }
    }

    macro_rules! route_test {
        ($name:ident, $uri:expr, $pool:expr, $path:expr) => {
            #[test]
            fn $name() {
                let s = snap(None);
                let want: Option<&str> = $path;
                assert_eq!(
                    decide(&s, $uri, "203.0.113.9"),
                    ($pool.to_string(), want.map(String::from)),
                    "uri {}",
                    $uri
                );
            }
        };
    }

    route_test!(root_goes_active, "/", "blue", None);
    route_test!(path_goes_active, "/api/x?q=1", "blue", None);
    route_test!(bare_prefix, "/blue", "blue", Some("/"));
    route_test!(prefix_with_slash, "/blue/", "blue", Some("/"));
    route_test!(bare_prefix_with_query, "/blue?q=1", "blue", Some("/?q=1"));
    route_test!(nested_with_query, "/blue/x?q=1", "blue", Some("/x?q=1"));
    route_test!(other_pool, "/green/", "green", Some("/"));
    route_test!(deep_path_kept, "/green/a/b/", "green", Some("/a/b/"));
    route_test!(double_slash_kept, "/green//x", "green", Some("//x"));
    route_test!(blueberry_is_not_preview, "/blueberry", "blue", None);
    route_test!(green_suffix_is_not_preview, "/greenhouse/x", "blue", None);
    route_test!(uppercase_is_not_preview, "/BLUE", "blue", None);
    route_test!(absolute_form_active, "http://example.com/x", "blue", None);
    route_test!(
        absolute_form_preview,
        "http://example.com/green/x?y",
        "green",
        Some("/x?y")
    );
    route_test!(asterisk_form_active, "*", "blue", None);

    /// The allowlist gates preview routes only, by the peer address (IPv4-mapped IPv6 included).
    #[test]
    fn allowlist() {
        let s = snap(Some("\"127.0.0.2\", \"10.1.0.0/16\""));
        assert_eq!(decide(&s, "/green/x", "127.0.0.2").1.as_deref(), Some("/x"));
        assert_eq!(decide(&s, "/green/x", "10.1.200.3").0, "green");
        assert_eq!(decide(&s, "/green/x", "::ffff:127.0.0.2").0, "green");
        assert_eq!(decide(&s, "/green/x", "127.0.0.3").0, "403 green");
        assert_eq!(decide(&s, "/blue", "127.0.0.3").0, "403 blue");
        assert_eq!(decide(&s, "/x", "127.0.0.3"), ("blue".into(), None));
        assert_eq!(decide(&s, "/blueberry", "127.0.0.3"), ("blue".into(), None));
    }

    /// For many generated paths: a stripped path starts with '/', the query is kept, and the
    /// result is a suffix of the original path (no path escapes its prefix).
    #[test]
    fn stripping_properties() {
        let s = snap(None);
        let parts = [
            "", "/", "x", "green", "blue", "a.b", "%2F", "..", "?", "q=1&r",
        ];
        for a in parts {
            for b in parts {
                for c in parts {
                    let uri = format!("/green{a}{b}{c}");
                    let Ok(parsed) = uri.parse::<Uri>() else {
                        continue;
                    };
                    let (pool, path) = decide(&s, &uri, "127.0.0.1");
                    let Some(pq) = path else {
                        assert_eq!(pool, "blue", "{uri}");
                        continue;
                    };
                    assert_eq!(pool, "green");
                    assert!(pq.starts_with('/'), "{uri} -> {pq}");
                    let pq: PathAndQuery = pq.parse().unwrap();
                    assert_eq!(pq.query(), parsed.query(), "{uri}");
                    let suffix = parsed.path().ends_with(pq.path());
                    assert!(suffix || pq.path() == "/", "{uri} -> {pq}");
                }
            }
        }
    }
}
