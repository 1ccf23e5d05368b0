//! The routing decision: which pool a request goes to and with what path. Pure, no I/O.
//!
//! - `/<pool>` and `/<pool>/...` are preview routes: they reach that pool with the prefix
//!   stripped (`/blue` -> `/`, `/blue/x?q=1` -> `/x?q=1`), if the peer is on `preview.allow`.
//! - Everything else goes to the active pool with path and query unchanged. Matching is by whole
//!   path segment and case-sensitive (RFC 3986 §6.2.2.1: paths are case-sensitive), so `/blueberry`
//!   and `/BLUE` are not preview routes, unlike nginx's `location /blue`.
//! - On the default route, an allowed client's preview header (`[preview] header`) or preview
//!   cookie (`[preview] cookie`) naming a pool sends it there, path untouched; else the canary
//!   split ([`crate::canary`]) may send it to the canary pool.

use std::net::IpAddr;
use std::sync::Arc;

use http::uri::{PathAndQuery, Uri};
use http::HeaderValue;

use crate::canary;
use crate::config::Sticky;
use crate::pool::Pool;
use crate::state::Snapshot;

/// Where a request goes.
#[derive(Debug)]
pub enum Decision<'a> {
    /// The default route, path and query unchanged: the active pool, or the pool a preview
    /// header or cookie or the canary split picked.
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

/// The decision and the cookie teal adds to the response: one value both transports act on.
#[derive(Debug)]
pub struct Routed<'a> {
    /// Where the request goes.
    pub decision: Decision<'a>,
    /// A `Set-Cookie` value teal appends to the response (besides any the upstream sets): a new
    /// canary bucket, or the preview cookie set or cleared.
    pub set_cookie: Option<HeaderValue>,
}

/// What routing reads from the request head besides its target: the `Cookie` field (one field;
/// the hyper path joins several first) and the `[preview] header` field, if configured.
#[derive(Debug, Default, Clone, Copy)]
pub struct Hints<'h> {
    /// The `Cookie` field's value.
    pub cookie: Option<&'h [u8]>,
    /// The value of the field `preview.header` names.
    pub pool: Option<&'h [u8]>,
}

/// Decides where the request for `uri` from `client` goes under `snap`. `client` is the
/// connection's peer, or the address trusted proxies forwarded for (see
/// [`crate::headers::client_ip`]).
pub fn decide<'a>(uri: &Uri, client: IpAddr, hints: Hints<'_>, snap: &'a Snapshot) -> Routed<'a> {
    decide_target(uri.path(), uri.query(), client, hints, snap)
}

/// [`decide`] for a request target already split into `path` and `query`. Precedence: a preview
/// prefix, then the preview header, then the preview cookie (both only for clients on
/// `preview.allow`, and only naming a pool there is), then the canary split, then the active pool.
pub fn decide_target<'a>(
    path: &str,
    query: Option<&str>,
    client: IpAddr,
    hints: Hints<'_>,
    snap: &'a Snapshot,
) -> Routed<'a> {
    if let Some((segment, rest)) = first_segment(path) {
        if let Some(pool) = snap.pool(segment) {
            return prefixed(pool, rest, query, client, hints, snap);
        }
    }
    let preview = &snap.config.preview;
    if preview.header.is_some() || preview.cookie.is_some() {
        if let Some(pool) = picked(client, hints, snap) {
            return routed(Decision::Active(pool), None);
        }
    }
    let Some(canary) = &snap.canary else {
        return routed(Decision::Active(&snap.active), None);
    };
    let (bucket, set_cookie) = match canary.sticky {
        Sticky::Cookie => {
            let kept = hints
                .cookie
                .and_then(|c| canary::cookie(c, canary::BUCKET_COOKIE.as_bytes()))
                .and_then(canary::parse_bucket);
            match kept {
                Some(bucket) => (bucket, None),
                None => {
                    let bucket = canary::random_bucket();
                    (bucket, Some(canary::bucket_cookie(bucket)))
                }
            }
        }
        Sticky::Ip => (canary::ip_bucket(client), None),
        Sticky::None => (canary::random_bucket(), None),
    };
    let pool = if bucket < canary.percent {
        &canary.pool
    } else {
        &snap.active
    };
    routed(Decision::Active(pool), set_cookie)
}

fn routed(decision: Decision<'_>, set_cookie: Option<HeaderValue>) -> Routed<'_> {
    Routed {
        decision,
        set_cookie,
    }
}

/// A preview route to `pool`: refused for a client not on `preview.allow`; with a preview cookie
/// configured, the response sets it to `pool`, or clears it when `pool` is the active one.
fn prefixed<'a>(
    pool: &'a Arc<Pool>,
    rest: &str,
    query: Option<&str>,
    client: IpAddr,
    hints: Hints<'_>,
    snap: &'a Snapshot,
) -> Routed<'a> {
    if !preview_allowed(snap, client) {
        return routed(Decision::Forbidden(pool), None);
    }
    let set_cookie = snap.config.preview.cookie.as_deref().and_then(|name| {
        let sent = hints
            .cookie
            .and_then(|c| canary::cookie(c, name.as_bytes()));
        if pool.name == snap.active.name {
            sent.map(|_| canary::clear_cookie(name))
        } else {
            (sent != Some(pool.name.as_bytes())).then(|| canary::preview_cookie(name, &pool.name))
        }
    });
    let decision = Decision::Preview {
        pool,
        path_and_query: strip(rest, query),
    };
    routed(decision, set_cookie)
}

/// The pool an allowed client picked with the preview header, or else the preview cookie; an
/// unknown name counts as none.
fn picked<'a>(client: IpAddr, hints: Hints<'_>, snap: &'a Snapshot) -> Option<&'a Arc<Pool>> {
    let preview = &snap.config.preview;
    let header = hints.pool.filter(|_| preview.header.is_some());
    let cookie = preview
        .cookie
        .as_deref()
        .and_then(|name| canary::cookie(hints.cookie?, name.as_bytes()));
    if header.is_none() && cookie.is_none() {
        return None;
    }
    if !preview_allowed(snap, client) {
        return None;
    }
    let by_name = |name: &[u8]| {
        let name = std::str::from_utf8(name.trim_ascii()).ok()?;
        snap.pool(name)
    };
    header
        .and_then(by_name)
        .or_else(|| cookie.and_then(by_name))
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
        match super::decide(&uri, peer.parse().unwrap(), Hints::default(), s).decision {
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

    /// A snapshot with blue active, green and red, and `extra` TOML.
    fn split(extra: &str) -> Snapshot {
        let text = format!(
            "active = \"blue\"\n{extra}\n[pools.blue]\nservers = [\"b:1\"]\n[pools.green]\nservers = [\"g:1\"]\n[pools.red]\nservers = [\"r:1\"]\n"
        );
        let config = Arc::new(Config::parse(&text, None).unwrap());
        Snapshot::build(config, "blue", None, 1, &Metrics::new())
    }

    fn canary(percent: u8, sticky: &str) -> Snapshot {
        split(&format!(
            "[canary]\npool = \"green\"\npercent = {percent}\nsticky = \"{sticky}\"\n"
        ))
    }

    /// The pool, the upstream path (`None`: unchanged) and the cookie set, for `path` with the
    /// given `Cookie` and preview header values.
    fn route(
        s: &Snapshot,
        path: &str,
        peer: &str,
        cookie: Option<&str>,
        header: Option<&str>,
    ) -> (String, Option<String>, Option<String>) {
        let hints = Hints {
            cookie: cookie.map(str::as_bytes),
            pool: header.map(str::as_bytes),
        };
        let r = decide_target(path, None, peer.parse().unwrap(), hints, s);
        let set = r.set_cookie.map(|v| v.to_str().unwrap().to_string());
        match r.decision {
            Decision::Active(p) => (p.name.to_string(), None, set),
            Decision::Preview {
                pool,
                path_and_query,
            } => (pool.name.to_string(), Some(path_and_query.to_string()), set),
            Decision::Forbidden(p) => (format!("403 {}", p.name), None, set),
        }
    }

    /// With `sticky = "cookie"`, a valid bucket decides (bucket < percent: canary) and sets
    /// nothing; no bucket or a bad one gets a fresh bucket, set in a cookie, and that bucket
    /// decides this very request.
    #[test]
    fn bucket_cookie_decides() {
        let s = canary(30, "cookie");
        for (bucket, pool) in [(0, "green"), (29, "green"), (30, "blue"), (99, "blue")] {
            let cookie = format!("a=1; teal_bucket={bucket}");
            let r = route(&s, "/x", "10.0.0.1", Some(&cookie), None);
            assert_eq!(r, (pool.into(), None, None), "bucket {bucket}");
        }
        for bad in [
            None,
            Some("teal_bucket=100"),
            Some("teal_bucket=x"),
            Some("teal_bucket="),
        ] {
            let (pool, path, set) = route(&s, "/x", "10.0.0.1", bad, None);
            let set = set.unwrap_or_else(|| panic!("{bad:?}: a new bucket is set"));
            assert!(set.ends_with("; Path=/; HttpOnly; SameSite=Lax"), "{set}");
            let bucket =
                canary::parse_bucket(canary::cookie(set.as_bytes(), b"teal_bucket").unwrap());
            let want = if bucket.unwrap() < 30 {
                "green"
            } else {
                "blue"
            };
            assert_eq!((pool.as_str(), path), (want, None), "{bad:?} -> {set}");
        }
    }

    /// Raising the percent keeps every bucket on the canary that was there; lowering sends back
    /// only the highest buckets.
    #[test]
    fn split_is_monotonic() {
        let pool_of = |s: &Snapshot, b: u8| {
            route(s, "/", "10.0.0.1", Some(&format!("teal_bucket={b}")), None).0
        };
        let snaps: Vec<Snapshot> = (1..=100).map(|p| canary(p, "cookie")).collect();
        for b in 0..100u8 {
            let on: Vec<bool> = snaps.iter().map(|s| pool_of(s, b) == "green").collect();
            // Off below percent b+1, on from it.
            let first = on.iter().position(|&x| x).unwrap();
            assert_eq!(first, usize::from(b), "bucket {b}");
            assert!(on[first..].iter().all(|&x| x), "bucket {b}");
        }
    }

    /// `ip`: one address always lands on one side; a spread of addresses splits near the percent.
    /// `none`: per request, near the percent. Neither sets a cookie.
    #[test]
    fn ip_and_none() {
        let s = canary(25, "ip");
        let mut green = 0;
        for i in 0..4000u32 {
            let ip = std::net::Ipv4Addr::from(0x0a00_0000 + i).to_string();
            let first = route(&s, "/", &ip, None, None);
            assert_eq!(first.2, None);
            assert_eq!(
                route(&s, "/", &ip, Some("teal_bucket=0"), None),
                first,
                "{ip}"
            );
            green += usize::from(first.0 == "green");
        }
        assert!((880..=1120).contains(&green), "{green} of 4000");
        let s = canary(25, "none");
        let green = (0..4000)
            .filter(|_| route(&s, "/", "10.0.0.1", None, None).0 == "green")
            .count();
        assert!((880..=1120).contains(&green), "{green} of 4000");
    }

    /// Precedence: prefix > header > cookie > canary > active; header and cookie only for
    /// allowed clients and known pools; the prefix sets the preview cookie, the active pool's
    /// prefix clears it.
    #[test]
    fn preview_cookie_and_header() {
        let s = split(
            "[preview]\nallow = [\"10.0.0.0/8\"]\ncookie = \"tp\"\nheader = \"X-Teal-Pool\"\n[canary]\npool = \"green\"\npercent = 100\nsticky = \"ip\"\n",
        );
        let ok = "10.0.0.1";
        let out = "192.0.2.1";
        let active = |p: &str| (p.to_string(), None, None);
        assert_eq!(route(&s, "/login", ok, Some("tp=red"), None), active("red"));
        assert_eq!(route(&s, "/login", ok, None, Some("red")), active("red"));
        assert_eq!(
            route(&s, "/login", ok, Some("tp=blue"), Some("red")),
            active("red")
        );
        assert_eq!(
            route(&s, "/login", ok, Some("tp=nope"), Some("nope")),
            active("green")
        );
        assert_eq!(
            route(&s, "/login", out, Some("tp=red"), Some("red")),
            active("green")
        );
        assert_eq!(
            route(&s, "/login", ok, Some("tp=blue"), None),
            active("blue")
        );
        // The prefix wins over both, and sets or clears the cookie.
        let r = route(&s, "/red/x", ok, Some("tp=green"), Some("green"));
        let set = "tp=red; Path=/; HttpOnly; SameSite=Lax";
        assert_eq!(r, ("red".into(), Some("/x".into()), Some(set.into())));
        assert_eq!(route(&s, "/red/x", ok, Some("tp=red"), None).2, None);
        let r = route(&s, "/blue/x", ok, Some("tp=red"), None);
        let clear = "tp=; Max-Age=0; Path=/; HttpOnly; SameSite=Lax";
        assert_eq!(r, ("blue".into(), Some("/x".into()), Some(clear.into())));
        assert_eq!(route(&s, "/blue/x", ok, None, None).2, None);
        assert_eq!(route(&s, "/red/x", out, None, None).0, "403 red");
        // Without the cookie and header configured, neither counts.
        let plain = canary(100, "ip");
        assert_eq!(
            route(&plain, "/", ok, Some("tp=red"), Some("red")).0,
            "green"
        );
    }
}
