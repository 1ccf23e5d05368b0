//! The admin API against browsers and shared addresses (issue 12). Cross-site requests a web page
//! can make without a preflight (a form post, a `text/plain` fetch, a foreign or `null` Origin, a
//! DNS-rebound Host) are refused, counted and switch nothing; the CLI, curl and same-origin
//! requests still work. Requests without a token, or with wrong ones, never lock out the right
//! token, and the `Bearer` scheme is matched case-insensitively.

mod support;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use support::raw::{send_raw, status_of};
use support::*;

const TEAL: &str = env!("CARGO_BIN_EXE_teal");

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

const JSON: (&str, &str) = ("content-type", "application/json");

/// Request headers, as (name, value).
type Headers<'a> = Vec<(&'a str, &'a str)>;

/// Every request a web page can send to the admin API without a CORS preflight, and every
/// DNS-rebound Host, is refused with 415 or 403 naming what is wrong, is counted as
/// `admin_csrf`, and switches nothing, even with `force=true`. With no token configured (the
/// example config), these were the only line of defence.
#[tokio::test]
async fn cross_site_requests_switch_nothing() {
    let (_b, _g, teal) = two_pools("").await;
    let port = teal.admin.port();
    let evil_port = format!("evil.test:{port}");
    let other_port = format!("http://127.0.0.1:{}", port.wrapping_add(1).max(1));
    let force = "/switch?to=green&force=true";
    let json = r#"{"to":"green","force":true}"#;
    let form = ("content-type", "application/x-www-form-urlencoded");
    let plain = ("content-type", "text/plain;charset=UTF-8");
    let cases: Vec<(&str, Headers, &str, u16, &str)> = vec![
        ("form post", vec![form], "to=green", 415, "Content-Type"),
        ("text/plain JSON", vec![plain], json, 415, "Content-Type"),
        ("text/plain, no body", vec![plain], "", 415, "Content-Type"),
        ("body, no Content-Type", vec![], json, 415, "Content-Type"),
        (
            "two Content-Types",
            vec![JSON, plain],
            json,
            415,
            "Content-Type",
        ),
        (
            "foreign Origin",
            vec![JSON, ("origin", "http://evil.test")],
            json,
            403,
            "Origin",
        ),
        (
            "null Origin",
            vec![JSON, ("origin", "null")],
            json,
            403,
            "Origin",
        ),
        (
            "Origin of another port",
            vec![JSON, ("origin", &other_port)],
            json,
            403,
            "Origin",
        ),
        (
            "rebound Host",
            vec![JSON, ("host", "evil.test")],
            json,
            403,
            "Host",
        ),
        (
            "rebound Host:port",
            vec![JSON, ("host", &evil_port)],
            json,
            403,
            "Host",
        ),
    ];
    for (what, headers, body, want, names) in &cases {
        let r = send(&teal, "POST", force, headers, body).await;
        assert_eq!(r.status.as_u16(), *want, "{what}: {}", r.body);
        let msg = r.json()["error"].as_str().unwrap_or_default().to_string();
        assert!(msg.contains(names), "{what}: {msg}");
        assert_eq!(teal.text("/").await, "blue", "{what} switched the pool");
    }
    // A rebound page cannot read the state either; a HEALTHCHECK may use any name.
    for path in ["/status", "/metrics", "/drain?pool=blue"] {
        let r = send(&teal, "GET", path, &[("host", &evil_port)], "").await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{path}: {}", r.body);
    }
    let r = send(&teal, "GET", "/healthz", &[("host", &evil_port)], "").await;
    assert_eq!(r.status, StatusCode::OK);
    // The same, on a raw socket: a form post as a browser sends it.
    let (text, _) = send_raw(
        teal.admin,
        format!(
            "POST {force} HTTP/1.1\r\nHost: {}\r\nOrigin: http://evil.test\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 8\r\n\r\nto=green",
            teal.admin
        ),
    )
    .await;
    let status = status_of(&text);
    assert!(status == 403 || status == 415, "{text}");
    assert_eq!(teal.text("/").await, "blue");
    assert_eq!(teal.rejected("admin_csrf").await, cases.len() as u64 + 4);
}

/// What non-browser clients and the admin's own origin send still switches: JSON (with a charset,
/// with the admin's own Origin, with Host `localhost:<port>`), and `curl -X POST` with no body
/// and no Content-Type.
#[tokio::test]
async fn same_origin_and_non_browser_requests_switch() {
    let (_b, _g, teal) = two_pools("").await;
    let own = format!("http://{}", teal.admin);
    let localhost = format!("localhost:{}", teal.admin.port());
    let json_utf8 = ("content-type", "application/json; charset=utf-8");
    let cases: Vec<(&str, Headers, &str)> = vec![
        ("JSON", vec![JSON], "green"),
        ("JSON with a charset", vec![json_utf8], "blue"),
        ("own Origin", vec![JSON, ("origin", &own)], "green"),
        ("Host localhost", vec![JSON, ("host", &localhost)], "blue"),
    ];
    for (what, headers, to) in &cases {
        let r = send(
            &teal,
            "POST",
            "/switch",
            headers,
            &format!("{{\"to\":\"{to}\"}}"),
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "{what}: {}", r.body);
        assert_eq!(teal.text("/").await, *to, "{what}");
    }
    let (text, _) = send_raw(
        teal.admin,
        format!(
            "POST /switch?to=green HTTP/1.1\r\nHost: {}\r\nUser-Agent: curl/8.5.0\r\nAccept: */*\r\n\r\n",
            teal.admin
        ),
    )
    .await;
    let status = status_of(&text);
    assert_eq!(status, 200, "{text}");
    assert_eq!(teal.text("/").await, "green");
    assert_eq!(teal.rejected("admin_csrf").await, 0);
}

/// `teal switch` and `teal status` (the binary) still work against the admin API, addressed as
/// `http://localhost:<port>`, `http://127.0.0.1:<port>` and a bare `127.0.0.1:<port>`.
#[tokio::test]
async fn cli_still_switches() {
    let (_b, _g, teal) = two_pools("").await;
    let port = teal.admin.port();
    let run = |args: Vec<String>| async move {
        tokio::process::Command::new(TEAL)
            .args(&args)
            .env_remove("TEAL_ADMIN_TOKEN")
            .env_remove("TEAL_CONFIG")
            .output()
            .await
            .unwrap()
    };
    for (admin, to) in [
        (format!("http://localhost:{port}"), "green"),
        (format!("http://127.0.0.1:{port}"), "blue"),
        (format!("127.0.0.1:{port}"), "green"),
    ] {
        let out = run(vec![
            "switch".into(),
            to.into(),
            "--admin".into(),
            admin.clone(),
        ])
        .await;
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{admin}: {err}");
        assert_eq!(teal.text("/").await, to, "{admin}");
        let out = run(vec!["status".into(), "--admin".into(), admin.clone()]).await;
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{admin}: {err}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.starts_with(&format!("active: {to}")),
            "{admin}: {text}"
        );
    }
}

/// Names in `admin.hosts` are accepted as Host (a name alone: on any port; `name:port`: on that
/// port only), so Prometheus can scrape `/metrics` through a service name.
#[tokio::test]
async fn configured_admin_hosts_are_accepted() {
    let (_b, _g, teal) = two_pools("hosts = [\"Teal-Admin.internal\", \"teal:9900\"]\n").await;
    let port = teal.admin.port();
    let named = format!("teal-admin.internal:{port}");
    for host in [named.as_str(), "TEAL-ADMIN.internal", "teal:9900"] {
        let r = send(&teal, "GET", "/metrics", &[("host", host)], "").await;
        assert_eq!(r.status, StatusCode::OK, "{host}: {}", r.body);
    }
    let r = send(&teal, "GET", "/metrics", &[("host", "teal:9901")], "").await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    let r = send(&teal, "GET", "/status", &[("host", "teal")], "").await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    let own = format!("http://{named}");
    let headers = [JSON, ("host", named.as_str()), ("origin", own.as_str())];
    let r = send(&teal, "POST", "/switch", &headers, r#"{"to":"green"}"#).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(teal.text("/").await, "green");
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
