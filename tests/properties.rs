//! Property tests: the routing decision, the header rules and the config parser, on generated
//! input. Nothing here may panic, whatever the input.

use std::net::IpAddr;

use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::uri::{PathAndQuery, Uri};
use proptest::prelude::*;
use teal::config::Config;
use teal::route::{decide, Decision};
use teal::state::Snapshot;

/// Blue (active) and green, one server each, no preview allowlist.
fn snapshot() -> Snapshot {
    teal::testing::snapshot_of(&[("blue", &["b:1"]), ("green", &["g:1"])], "blue", "")
}

/// Path segments from characters that matter to routing.
fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("blue".to_string()),
        Just("green".to_string()),
        Just("..".to_string()),
        Just(String::new()),
        "[a-zA-Z0-9._~%-]{0,8}",
    ]
}

proptest! {
    /// A preview route's upstream path starts with '/', keeps the query, and is what followed
    /// the prefix (no path escapes its prefix); anything else goes to the active pool unchanged.
    #[test]
    fn routing(segs in proptest::collection::vec(segment(), 0..5), query in proptest::option::of("[a-z0-9=&%]{0,12}")) {
        let snap = snapshot();
        let mut path = format!("/{}", segs.join("/"));
        if let Some(q) = &query {
            path.push('?');
            path.push_str(q);
        }
        let Ok(uri) = path.parse::<Uri>() else { return Ok(()) };
        let peer: IpAddr = "127.0.0.1".parse().unwrap();
        match decide(&uri, peer, teal::route::Hints::default(), &snap).decision {
            Decision::Active(p) => {
                prop_assert_eq!(&*p.name, "blue");
                let first = uri.path().strip_prefix('/').unwrap_or("").split('/').next().unwrap_or("");
                prop_assert!(first != "blue" && first != "green");
            }
            Decision::Preview { pool, path_and_query } => {
                let pq: &PathAndQuery = &path_and_query;
                prop_assert!(pq.path().starts_with('/'));
                prop_assert_eq!(pq.query(), uri.query());
                let prefix = format!("/{}", pool.name);
                let rest = &uri.path()[prefix.len()..];
                prop_assert_eq!(pq.path(), if rest.is_empty() { "/" } else { rest });
            }
            Decision::Forbidden(_) => prop_assert!(false, "no allowlist configured"),
        }
    }

    /// Stripping never panics, leaves no hop-by-hop header, and removes what Connection names
    /// (except the protected few).
    #[test]
    fn hop_by_hop(pairs in proptest::collection::vec(("[a-z][a-z0-9-]{0,10}", "[ -~]{0,20}"), 0..12), listed in proptest::collection::vec("[a-z][a-z0-9-]{0,10}", 0..4)) {
        let mut h = HeaderMap::new();
        for (k, v) in &pairs {
            if let (Ok(k), Ok(v)) = (HeaderName::from_bytes(k.as_bytes()), HeaderValue::from_str(v)) {
                h.append(k, v);
            }
        }
        if let Ok(v) = HeaderValue::from_str(&listed.join(", ")) {
            h.insert("connection", v);
        }
        teal::headers::strip_hop_by_hop(&mut h);
        for gone in ["connection", "keep-alive", "proxy-connection", "trailer", "transfer-encoding", "upgrade", "proxy-authorization", "proxy-authenticate"] {
            prop_assert!(!h.contains_key(gone), "{} survived", gone);
        }
        for name in &listed {
            if !["host", "content-length", "x-forwarded-for", "te"].contains(&name.as_str()) {
                prop_assert!(!h.contains_key(name.as_str()), "{} listed in Connection survived", name);
            }
        }
        if let Some(te) = h.get("te") {
            prop_assert_eq!(te, "trailers");
        }
    }

    /// A preview route's rewrites never panic, leave a valid header value that holds the
    /// prefix, and never touch a cookie's name and value.
    #[test]
    fn preview_rewrites(value in "[ -~]{0,40}", cookie in "[a-z]=[0-9](;[ ]?(Path|path|Domain|HttpOnly)(=[ ]?[/a-z.]{0,6})?){0,4}") {
        let preview = teal::preview::Preview::new("green", Some(b"shop.test"));
        for (name, value) in [("location", value.as_str()), ("set-cookie", value.as_str()), ("set-cookie", cookie.as_str())] {
            let Some(new) = preview.rewrite(name.as_bytes(), value.as_bytes()) else { continue };
            prop_assert!(HeaderValue::from_bytes(&new).is_ok());
            let text = String::from_utf8(new).unwrap();
            prop_assert!(text.contains("/green") && text.len() >= value.len() + 5, "{} -> {}", value, text);
            if name == "set-cookie" {
                prop_assert_eq!(text.split(';').next(), value.split(';').next());
            }
        }
    }

    /// The config parser never panics, on noise or on a valid config with a line damaged.
    #[test]
    fn config_parser_never_panics(noise in "[ -~\n]{0,300}", cut in 0usize..400, insert in "[ -~\n]{0,20}") {
        let _ = Config::parse(&noise, None);
        let good = "active = \"blue\"\n[proxy]\nlisten = \"0.0.0.0:80\"\n[pools.blue]\nservers = [\"a:1\", \"b:2\"]\n[pools.blue.health]\npath = \"/\"\n[pools.green]\nservers = [\"c:3\"]\n[preview]\nallow = [\"10.0.0.0/8\"]\n[limits]\nmax_body_bytes = 10\n";
        let at = cut.min(good.len());
        let damaged = format!("{}{}{}", &good[..at], insert, &good[at..]);
        if let Err(e) = Config::parse(&damaged, Some(std::path::Path::new("t.toml"))) {
            // Every error names the file.
            prop_assert!(e.to_string().starts_with("t.toml"), "{}", e);
        }
    }
}
