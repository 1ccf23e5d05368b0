//! Review of the dashboard (issue 18), from the attacker's side: what an open `/events` stream
//! keeps showing after the rules that let it open have changed.

mod support;

use std::time::Duration;

use http::StatusCode;
use serde_json::Value;
use support::feed::Feed;
use support::*;

const OLD: &str = "old-s3cret";
const NEW: &str = "new-s3cret";

/// Waits until `/status` answers `want` with `token` (the reload has applied).
async fn until_status(teal: &Teal, token: Option<&str>, want: StatusCode) {
    for _ in 0..100 {
        if teal.admin("GET", "/status", "", token).await.status == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("/status never answered {want}");
}

/// Rotating the admin token (a reload with a new `token`) revokes the old one: `/status` with
/// it gets 401 at once. A dashboard stream opened with the old token must not go on delivering
/// the live state, the events (with upstream errors and reload errors) and the history for as
/// long as its connection stays open. Today the token is checked once, when `/events` opens
/// (src/admin.rs `Admin::events`), and `dashboard::feed` never looks at it again.
#[tokio::test]
async fn a_rotated_token_ends_the_open_event_streams() {
    let (_b, _g, teal) = two_pools(&format!("token = \"{OLD}\"\n")).await;
    let mut feed = Feed::open(teal.admin, OLD).await;
    feed.next().await.expect("a first event");
    let text = teal.file().replace(OLD, NEW);
    std::fs::write(&teal.path, text).unwrap();
    until_status(&teal, Some(OLD), StatusCode::UNAUTHORIZED).await;
    assert_eq!(
        teal.admin("GET", "/status", "", Some(NEW)).await.status,
        StatusCode::OK
    );
    // Something happens after the rotation: it must not reach the holder of the old token.
    let r = teal
        .admin("POST", "/switch", r#"{"to":"green"}"#, Some(NEW))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let (seen, ended) = feed.drain_for(Duration::from_secs(3)).await;
    let leaked: Vec<&Value> = seen
        .iter()
        .filter(|e| e["status"]["active"] == "green")
        .collect();
    assert!(
        ended && leaked.is_empty(),
        "the stream opened with the revoked token is still open (ended: {ended}) and showed \
         {} events after the rotation, {} of them with the switch made after it",
        seen.len(),
        leaked.len()
    );
}

/// The same for `[admin] allow`: a reload that takes the operator's network off the list
/// refuses that address at once (403 on `/status`), but an `/events` stream it opened before
/// keeps streaming the live state.
#[tokio::test]
async fn a_reload_that_narrows_admin_allow_ends_the_open_event_streams() {
    let (_b, _g, teal) =
        two_pools(&format!("token = \"{OLD}\"\nallow = [\"127.0.0.0/8\"]\n")).await;
    let mut feed = Feed::open(teal.admin, OLD).await;
    feed.next().await.expect("a first event");
    let text = teal
        .file()
        .replace("allow = [\"127.0.0.0/8\"]", "allow = [\"10.0.0.0/8\"]");
    std::fs::write(&teal.path, text).unwrap();
    until_status(&teal, Some(OLD), StatusCode::FORBIDDEN).await;
    let (seen, ended) = feed.drain_for(Duration::from_secs(3)).await;
    assert!(
        ended,
        "a peer no longer on admin.allow still gets the live state: {} events in 3 s after the \
         reload, and the stream is still open",
        seen.len()
    );
}

/// The sum of a `/history` series.
fn sum(series: &Value) -> f64 {
    series
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap_or(0.0))
        .sum()
}

/// A server whose connections are refused takes every request of its pool and fails each: the
/// pool's history shows them (10 requests, all errors), but the server's own `req/s` row stays 0,
/// so the dashboard points at no server. `Upstream::started` claims "requests begun (sent, or
/// tried)", yet `Upstream::begin` (which counts them) is only called once a connection is checked
/// out (src/forward.rs `Forwarder::walk`); a connect failure is never counted.
#[tokio::test]
async fn a_server_refusing_connections_shows_the_requests_it_was_tried_for() {
    let blue = upstream("blue", "server1-blue").await;
    let dead = dead_addr().await;
    let pools = vec![("blue", vec![blue.addr]), ("green", vec![dead])];
    let teal = Teal::start(&config("blue", &pools, "")).await;
    teal.switch("green").await;
    for _ in 0..10 {
        let r = teal.get("/").await;
        assert!(r.status.is_server_error(), "{}", r.status);
    }
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let h = teal.admin("GET", "/history", "", None).await.json();
    let pool = sum(&h["pools"]["green"]["rps"]);
    assert!(pool > 9.0, "the pool's history misses the requests: {h}");
    let server = sum(&h["servers"][format!("green/{dead}")]["rps"]);
    assert!(
        server > 9.0,
        "pool green took {pool:.1} requests (all 5xx) but its only server shows {server:.1}: {h}"
    );
}

/// Runs `script` (Python, selenium) with `args`; its last stdout line is JSON. `None` (with a
/// loud message) when selenium, chromium or chromedriver are missing.
async fn in_browser(script: &str, args: &[&str]) -> Option<Value> {
    const PRELUDE: &str = r##"
import json, shutil, sys, time
try:
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service
except ImportError:
    print("SKIP selenium missing"); sys.exit(0)
browser = shutil.which("chromium") or shutil.which("chromium-browser")
driver = shutil.which("chromedriver")
if not browser or not driver:
    print("SKIP chromium or chromedriver missing"); sys.exit(0)
o = Options()
for a in ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,800"]:
    o.add_argument(a)
o.binary_location = browser
d = webdriver.Chrome(options=o, service=Service(driver))
"##;
    let code = format!("{PRELUDE}\ntry:\n{script}\nfinally:\n    d.quit()\n");
    let mut cmd = tokio::process::Command::new("python3");
    cmd.arg("-c").arg(code).args(args);
    let out = tokio::time::timeout(Duration::from_secs(90), cmd.output())
        .await
        .expect("the browser script finishes within 90 s")
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let last = stdout.trim().lines().last().unwrap_or_default().to_string();
    if let Some(why) = last.strip_prefix("SKIP ") {
        eprintln!("!!!!! SKIPPED the browser part of this test: {why} !!!!!");
        return None;
    }
    Some(serde_json::from_str(&last).expect("the browser's JSON"))
}

/// Each open dashboard holds one HTTP/1.1 connection for its `/events` stream while it is
/// visible, and a browser opens at most 6 connections to one host: if hidden tabs kept their
/// streams too, 6 dashboard tabs (two windows and a few forgotten tabs) would leave none for
/// the admin API, and every button would hang. After 6 tabs, a plain `fetch('/status')` from
/// the first one must be answered (it got no answer within 5 s before hidden tabs let go).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn six_open_dashboards_do_not_block_the_operator_s_actions() {
    let (_b, _g, teal) = two_pools("").await;
    let url = format!("http://{}/", teal.admin);
    let script = r##"
    url = sys.argv[1]
    d.get(url)
    first = d.current_window_handle
    for _ in range(5):
        d.switch_to.new_window("tab")
        d.get(url)
    time.sleep(2)
    d.switch_to.window(first)
    d.set_script_timeout(15)
    got = d.execute_async_script("""
        const done = arguments[arguments.length - 1];
        const t = setTimeout(() => done('no answer within 5 s'), 5000);
        fetch('/status', {cache: 'no-store'}).then((r) => { clearTimeout(t); done('answered ' + r.status); },
                                                   (e) => { clearTimeout(t); done('failed ' + e); });
    """)
    conn = d.find_element("id", "conn").text
    print(json.dumps({"fetch": got, "conn": conn}))
"##;
    let Some(view) = in_browser(script, &[&url]).await else {
        return;
    };
    assert_eq!(
        view["fetch"], "answered 200",
        "with 6 dashboard tabs open the admin API is out of reach from the browser: {view}"
    );
}
