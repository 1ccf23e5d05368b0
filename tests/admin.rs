//! The admin API against shared addresses (issue 12). Requests without a token, or with wrong
//! ones, never lock out the right token, and the `Bearer` scheme is matched case-insensitively.

mod support;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use support::*;

/// `method path` to the admin listener with `headers` and `body`; Host is the listener's address
/// unless `headers` names one. Nothing is added: no Content-Type unless given.
async fn send(
    teal: &Teal,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Reply {
    let mut req = Request::builder().method(method).uri(path);
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        req = req.header("host", teal.admin.to_string());
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Full::new(Bytes::from(body.to_string()))).unwrap();
    Conn::open(teal.admin).await.send(req).await
}

/// Requests without a token (every local client shares 127.0.0.1, every Docker host client the
/// gateway) are not failed logins: after six of them the right token is still accepted.
#[tokio::test]
async fn missing_tokens_never_lock_out_the_right_one() {
    let (_b, _g, teal) = two_pools("token = \"right\"\n").await;
    for _ in 0..6 {
        let r = teal.admin("GET", "/status", "", None).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.body);
    }
    let r = teal.admin("GET", "/status", "", Some("right")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
}

/// Wrong tokens are counted and limited (429 with Retry-After once over the limit), but the
/// right token is accepted even while its peer is limited.
#[tokio::test]
async fn wrong_tokens_are_limited_but_never_the_right_one() {
    let (_b, _g, teal) = two_pools("token = \"right\"\n").await;
    for i in 0..6 {
        let r = teal.admin("GET", "/status", "", Some("wrong")).await;
        let want = if i < teal::admin::MAX_FAILURES {
            StatusCode::UNAUTHORIZED
        } else {
            StatusCode::TOO_MANY_REQUESTS
        };
        assert_eq!(r.status, want, "guess {i}: {}", r.body);
    }
    let r = teal.admin("GET", "/status", "", Some("right")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = teal
        .admin("POST", "/switch", r#"{"to":"green"}"#, Some("right"))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = teal.admin("GET", "/status", "", Some("wrong")).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.body);
    assert!(r.headers.contains_key("retry-after"));
    // No token at all while limited: 401, as always, not counted.
    let r = teal.admin("GET", "/status", "", None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.body);
}

/// The auth scheme is case-insensitive and may be followed by more than one space (RFC 9110
/// §11.1); a different scheme or an empty token is refused.
#[tokio::test]
async fn bearer_scheme_is_case_insensitive() {
    let (_b, _g, teal) = two_pools("token = \"right\"\n").await;
    for (value, want) in [
        ("bearer right", 200),
        ("BEARER right", 200),
        ("Bearer    right", 200),
        ("Basic right", 401),
        ("Bearer", 401),
        ("Bearerright", 401),
        ("Bearer right2", 401),
    ] {
        let r = send(&teal, "GET", "/status", &[("authorization", value)], "").await;
        assert_eq!(r.status.as_u16(), want, "{value}: {}", r.body);
    }
}
