//! The dashboard on the admin listener (issue 18): the page and its assets with their content
//! types and CSP, the `/events` stream (a switch shows within a second, the events ring shows
//! switches, refused reloads and health changes), `/history` (requests per second after load),
//! the token rules, and a shutdown that an open stream does not hold up.

mod support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, StatusCode};
use serde_json::Value;
use support::feed::Feed;
use support::*;

const TOKEN: &str = "dash-s3cret";
const CSP: &str = "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'";

fn with_token() -> String {
    format!("token = \"{TOKEN}\"\n")
}

/// The texts of the events of `kind` in an `/events` document.
fn texts(doc: &Value, kind: &str) -> Vec<String> {
    doc["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == kind)
        .map(|e| e["text"].as_str().unwrap().to_string())
        .collect()
}

/// The page, its script and its styles are served embedded, with their content types, no-cache,
/// nosniff and the strict CSP; no token is needed for them even when one is configured.
#[tokio::test]
async fn page_and_assets_are_served_with_their_types_and_csp() {
    let (_b, _g, teal) = two_pools(&with_token()).await;
    for (path, kind) in [
        ("/", "text/html; charset=utf-8"),
        ("/dashboard.js", "text/javascript; charset=utf-8"),
        ("/dashboard.css", "text/css; charset=utf-8"),
    ] {
        let r = teal.admin("GET", path, "", None).await;
        assert_eq!(r.status, StatusCode::OK, "{path}: {}", r.body);
        assert_eq!(r.headers["content-type"], kind, "{path}");
        assert_eq!(r.headers["content-security-policy"], CSP, "{path}");
        assert_eq!(r.headers["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(r.headers["cache-control"], "no-cache", "{path}");
        assert!(!r.body.trim().is_empty(), "{path} is empty");
    }
    let page = teal.admin("GET", "/", "", None).await.body;
    assert!(page.contains("/dashboard.js"), "{page}");
    assert!(page.contains("/dashboard.css"), "{page}");
    let wrong = teal.admin("POST", "/", "{}", Some(TOKEN)).await;
    assert_eq!(wrong.status, StatusCode::METHOD_NOT_ALLOWED);
    let missing = teal.admin("GET", "/dashboard.map", "", None).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert!(missing.body.contains("/events"), "{}", missing.body);
}

/// With a token configured, `/events`, `/history` and `POST /switch` without it get 401 (and
/// nothing switches); with it, they answer.
#[tokio::test]
async fn data_and_actions_need_the_token() {
    let (_b, _g, teal) = two_pools(&with_token()).await;
    for path in ["/events", "/history", "/status"] {
        let r = teal.admin("GET", path, "", None).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{path}: {}", r.body);
        assert_eq!(r.headers["www-authenticate"], "Bearer");
    }
    let r = teal
        .admin("POST", "/switch", r#"{"to":"green"}"#, None)
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.body);
    let wrong = teal
        .admin("POST", "/switch", r#"{"to":"green"}"#, Some("nope"))
        .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED, "{}", wrong.body);
    let status = teal.admin("GET", "/status", "", Some(TOKEN)).await.json();
    assert_eq!(status["active"], "blue");
    let history = teal.admin("GET", "/history", "", Some(TOKEN)).await;
    assert_eq!(history.status, StatusCode::OK, "{}", history.body);
    assert_eq!(history.json()["interval_s"], 1);
    let mut feed = Feed::open(teal.admin, TOKEN).await;
    assert_eq!(feed.next().await.unwrap()["status"]["active"], "blue");
}

/// The stream sends an event at once, then at least every second; a switch made through the
/// admin API shows in it (status.active and a `switch` event) within a second.
#[tokio::test]
async fn events_deliver_a_switch_within_a_second() {
    let (_b, _g, teal) = two_pools(&with_token()).await;
    let opened = Instant::now();
    let mut feed = Feed::open(teal.admin, TOKEN).await;
    let first = feed.next().await.unwrap();
    assert!(
        opened.elapsed() < Duration::from_millis(500),
        "{:?}",
        opened.elapsed()
    );
    assert_eq!(first["status"]["active"], "blue");
    assert!(first["now"].as_str().unwrap().ends_with('Z'), "{first}");
    assert!(first["history"]["pools"]["blue"].is_object(), "{first}");
    let server = &first["status"]["pools"]["blue"]["servers"][0];
    assert!(server["last_check"].is_null(), "no active checks: {server}");
    // Nothing changes: the next event still comes within about a second.
    let quiet = Instant::now();
    feed.next().await.unwrap();
    assert!(
        quiet.elapsed() < Duration::from_millis(1500),
        "{:?}",
        quiet.elapsed()
    );

    let asked = Instant::now();
    let r = teal
        .admin("POST", "/switch", r#"{"to":"green"}"#, Some(TOKEN))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let (event, seen) = feed
        .until(Duration::from_secs(2), |e| e["status"]["active"] == "green")
        .await;
    let took = seen - asked;
    assert!(
        took < Duration::from_secs(1),
        "the switch showed after {took:?}"
    );
    let (event, _) = if texts(&event, "switch").is_empty() {
        feed.until(Duration::from_secs(2), |e| !texts(e, "switch").is_empty())
            .await
    } else {
        (event, seen)
    };
    let switches = texts(&event, "switch");
    assert_eq!(switches.len(), 1, "{switches:?}");
    assert!(switches[0].contains("from blue to green"), "{switches:?}");
    let active = teal.admin("GET", "/status", "", Some(TOKEN)).await.json();
    assert_eq!(active["active"], "green");
}

/// After some load on the active pool, `/history` shows its requests per second (and its
/// server's), a p99, and no errors; the idle pool shows none.
#[tokio::test]
async fn history_shows_requests_per_second_after_load() {
    let (blue, _g, teal) = two_pools(&with_token()).await;
    let mut conn = Conn::open(teal.proxy).await;
    let started = Instant::now();
    let mut sent = 0;
    while started.elapsed() < Duration::from_millis(2500) && sent < 500 {
        assert_eq!(conn.get("/").await.status, StatusCode::OK);
        sent += 1;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Let the sampler take the last second in.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let doc = teal.admin("GET", "/history", "", Some(TOKEN)).await.json();
    let sum = |v: &Value| -> f64 { v.as_array().unwrap().iter().filter_map(Value::as_f64).sum() };
    let blue_rps = &doc["pools"]["blue"]["rps"];
    let len = blue_rps.as_array().unwrap().len();
    assert!((2..=60).contains(&len), "{doc}");
    let total = sum(blue_rps);
    // Rates per second over about as many seconds as the load ran: their sum is about `sent`.
    assert!(
        total > sent as f64 * 0.5 && total < sent as f64 * 1.5,
        "sent {sent}, history sums to {total}: {doc}"
    );
    assert_eq!(sum(&doc["pools"]["blue"]["error_rate"]), 0.0, "{doc}");
    assert_eq!(sum(&doc["pools"]["green"]["rps"]), 0.0, "{doc}");
    let p99s: Vec<f64> = doc["pools"]["blue"]["p99_ms"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_f64)
        .collect();
    assert!(
        !p99s.is_empty() && p99s.iter().all(|p| *p > 0.0 && *p < 1000.0),
        "{doc}"
    );
    assert!(doc["pools"]["green"]["p99_ms"][0].is_null(), "{doc}");
    let server = format!("blue/{}", blue.addr);
    let server_total = sum(&doc["servers"][&server]["rps"]);
    assert!(server_total > sent as f64 * 0.5, "{server}: {doc}");
    assert_eq!(
        doc["servers"][&server]["in_flight"]
            .as_array()
            .unwrap()
            .len(),
        doc["servers"][&server]["rps"].as_array().unwrap().len()
    );
}

/// The events ring shows a switch and a refused reload with its error, then an applied one.
#[tokio::test]
async fn events_show_a_switch_and_a_refused_reload_with_its_error() {
    let (_b, _g, teal) = two_pools(&with_token()).await;
    let mut feed = Feed::open(teal.admin, TOKEN).await;
    feed.next().await.unwrap();
    let r = teal
        .admin("POST", "/switch", r#"{"to":"green"}"#, Some(TOKEN))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let good = teal.file();
    std::fs::write(&teal.path, good.replace("[pools.blue]", "[pools.blue")).unwrap();
    let (doc, _) = feed
        .until(Duration::from_secs(5), |e| {
            !texts(e, "reload_refused").is_empty()
        })
        .await;
    let refused = texts(&doc, "reload_refused");
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert!(refused[0].contains("running config kept"), "{refused:?}");
    assert!(
        refused[0].contains("teal.toml"),
        "the error names the file: {refused:?}"
    );
    let kinds: Vec<&str> = doc["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    let switch = kinds.iter().position(|k| *k == "switch").expect("a switch");
    let refusal = kinds.iter().position(|k| *k == "reload_refused").unwrap();
    assert!(switch < refusal, "newest last: {kinds:?}");
    std::fs::write(
        &teal.path,
        good.replace("grace_period", "# edited\ngrace_period"),
    )
    .unwrap();
    let (doc, _) = feed
        .until(Duration::from_secs(5), |e| !texts(e, "reload").is_empty())
        .await;
    let applied = texts(&doc, "reload");
    assert!(applied[0].contains("green active"), "{applied:?}");
    assert_eq!(doc["status"]["active"], "green");
}

/// With active checks, `/status` carries each server's last check, and a server that goes down
/// shows in the events as a health change with its error.
#[tokio::test]
async fn health_changes_show_in_the_events() {
    let blue = upstream("blue", "server1-blue").await;
    let green = upstream("green", "server1-green").await;
    let health = "\n[pools.green.health]\npath = \"/\"\ninterval = \"100ms\"\ntimeout = \"300ms\"\nhealthy_after = 2\nunhealthy_after = 2\n";
    let text = config("blue", &blue_green(&blue, &green), &with_token()) + health;
    let teal = Teal::start(&text).await;
    let mut feed = Feed::open(teal.admin, TOKEN).await;
    let (doc, _) = feed
        .until(Duration::from_secs(3), |e| {
            e["status"]["pools"]["green"]["servers"][0]["health"] == "healthy"
        })
        .await;
    let check = &doc["status"]["pools"]["green"]["servers"][0]["last_check"];
    assert_eq!(check["ok"], true, "{check}");
    let detail = check["detail"].as_str().unwrap();
    assert!(
        detail.starts_with("200 in ") && detail.ends_with(" ms"),
        "{check}"
    );
    assert!(check["at"].as_str().unwrap().ends_with('Z'), "{check}");
    assert!(doc["status"]["pools"]["blue"]["servers"][0]["last_check"].is_null());
    let green_addr = green.stop().await;
    let (doc, _) = feed
        .until(Duration::from_secs(3), |e| {
            texts(e, "health")
                .iter()
                .any(|t| t.contains("-> unhealthy"))
        })
        .await;
    let changes = texts(&doc, "health");
    let down = changes.iter().find(|t| t.contains("-> unhealthy")).unwrap();
    assert!(
        down.contains(&format!(
            "server {green_addr} in pool green: healthy -> unhealthy ("
        )),
        "{changes:?}"
    );
    assert!(changes[0].contains("unknown -> healthy"), "{changes:?}");
    let check = &doc["status"]["pools"]["green"]["servers"][0]["last_check"];
    assert_eq!(check["ok"], false, "{check}");
}

/// An open `/events` stream ends when teal shuts down, and does not hold the shutdown for the
/// grace period (5 s in these tests).
#[tokio::test]
async fn an_open_stream_does_not_delay_shutdown() {
    let (_b, _g, teal) = two_pools(&with_token()).await;
    let mut feed = Feed::open(teal.admin, TOKEN).await;
    feed.next().await.unwrap();
    let reader = tokio::spawn(async move {
        while feed.next().await.is_some() {}
        Instant::now()
    });
    let stopping = Instant::now();
    let (drained, _dir) = teal.stop().await;
    let took = stopping.elapsed();
    assert!(drained, "shutdown did not drain");
    assert!(took < Duration::from_secs(2), "shutdown took {took:?}");
    let ended = tokio::time::timeout(Duration::from_secs(2), reader)
        .await
        .expect("the stream did not end")
        .unwrap();
    assert!(ended - stopping < Duration::from_secs(2));
}

/// A server ejected by a failure on live traffic (no active checks) shows in the events as a
/// health change with the error, within about a second.
#[tokio::test]
async fn a_passive_ejection_shows_in_the_events() {
    let (blue, _g, teal) = two_pools(&with_token()).await;
    let mut feed = Feed::open(teal.admin, TOKEN).await;
    feed.next().await.unwrap();
    let blue_addr = blue.stop().await;
    assert_eq!(teal.get("/").await.status, StatusCode::BAD_GATEWAY);
    let (doc, _) = feed
        .until(Duration::from_secs(3), |e| {
            texts(e, "health").iter().any(|t| t.contains("-> ejected"))
        })
        .await;
    let changes = texts(&doc, "health");
    let want = format!("server {blue_addr} in pool blue: unknown -> ejected (");
    assert!(changes.iter().any(|t| t.starts_with(&want)), "{changes:?}");
}

/// Canary and mirror changes made through the admin API show in the events; the page and the
/// stream are behind the same Host guard as the rest of the admin API.
#[tokio::test]
async fn canary_and_mirror_changes_show_and_the_guard_applies() {
    let (_b, _g, teal) = two_pools(&with_token()).await;
    let mut feed = Feed::open(teal.admin, TOKEN).await;
    feed.next().await.unwrap();
    let canary = r#"{"pool":"green","percent":25}"#;
    let r = teal.admin("POST", "/canary", canary, Some(TOKEN)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = teal.admin("DELETE", "/canary", "", Some(TOKEN)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = teal
        .admin("POST", "/mirror", r#"{"pool":"green"}"#, Some(TOKEN))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let (doc, _) = feed
        .until(Duration::from_secs(2), |e| !texts(e, "mirror").is_empty())
        .await;
    let canaries = texts(&doc, "canary");
    assert_eq!(canaries.len(), 2, "{canaries:?}");
    assert!(
        canaries[0].contains("25% of default-route clients to green"),
        "{canaries:?}"
    );
    assert!(canaries[1].starts_with("canary ended"), "{canaries:?}");
    assert!(texts(&doc, "mirror")[0].contains("to green"), "{doc}");
    for path in ["/", "/events", "/history"] {
        let req = Request::get(path)
            .header("host", format!("evil.test:{}", teal.admin.port()))
            .header("authorization", format!("Bearer {TOKEN}"))
            .body(http_body_util::Full::new(Bytes::new()))
            .unwrap();
        let r = Conn::open(teal.admin).await.send(req).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{path}: {}", r.body);
    }
}

/// A rollout started and aborted through the admin API shows its steps in the events.
#[tokio::test]
async fn rollout_steps_show_in_the_events() {
    let (_b, _g, teal) = two_pools(&with_token()).await;
    let mut feed = Feed::open(teal.admin, TOKEN).await;
    feed.next().await.unwrap();
    let body = r#"{"pool":"green","steps":[5,100],"interval":"1h","max_error_rate":"1%","min_requests":10}"#;
    let r = teal.admin("POST", "/rollout", body, Some(TOKEN)).await;
    assert!(r.status.is_success(), "{}: {}", r.status, r.body);
    let r = teal.admin("POST", "/rollout/abort", "", Some(TOKEN)).await;
    assert!(r.status.is_success(), "{}: {}", r.status, r.body);
    let (doc, _) = feed
        .until(Duration::from_secs(3), |e| {
            texts(e, "rollout").iter().any(|t| t.contains("abort"))
        })
        .await;
    let steps = texts(&doc, "rollout");
    assert!(steps[0].contains("rollout of green started"), "{steps:?}");
    assert!(
        steps[1].starts_with("step 1 of 2: 5% of default-route clients to green"),
        "{steps:?}"
    );
}
