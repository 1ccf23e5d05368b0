//! The request path's pure steps on arbitrary request targets and headers: routing (preview
//! prefix, header and cookie, canary bucket cookie), hop-by-hop stripping, forwarding headers,
//! the client address behind trusted proxies.
//! `cargo +nightly fuzz run request_path -- -max_total_time=60`
#![no_main]

use http::header::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;

#[path = "shared.rs"]
mod shared;
use shared::snapshot;

fuzz_target!(|data: &[u8]| {
    let mut parts = data.split(|b| *b == b'\n');
    let Some(target) = parts.next() else { return };
    let Ok(uri) = http::Uri::try_from(target) else {
        return;
    };
    let mut headers = HeaderMap::new();
    for line in parts {
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        if let (Ok(k), Ok(v)) = (
            HeaderName::from_bytes(&line[..colon]),
            HeaderValue::from_bytes(&line[colon + 1..]),
        ) {
            headers.append(k, v);
        }
    }
    let peer = "10.1.2.3".parse().unwrap();
    let trusted = ["10.0.0.0/8".parse().unwrap()];
    let client = teal::headers::client_ip(peer, &headers, &trusted);
    let hints = teal::route::Hints {
        cookie: headers.get("cookie").map(HeaderValue::as_bytes),
        pool: headers.get("x-teal-pool").map(HeaderValue::as_bytes),
    };
    let routed = teal::route::decide(&uri, client, hints, snapshot());
    if let teal::route::Decision::Preview { path_and_query, .. } = routed.decision {
        assert!(path_and_query.path().starts_with('/'));
    }
    teal::headers::strip_hop_by_hop(&mut headers);
    let secure = headers.len() % 2 == 1;
    teal::headers::set_forwarding(&mut headers, peer, None, secure);
    let proto = if secure { "https" } else { "http" };
    assert_eq!(headers.get_all("x-forwarded-proto").iter().count(), 1);
    assert_eq!(headers["x-forwarded-proto"], proto);
});
