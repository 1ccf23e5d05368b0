//! Drain tracking and waiting (`/status` draining, `POST /switch` with `wait_drain`, `GET /drain`,
//! `teal switch --wait-drain`), and no spurious 502 from upstreams that close idle connections.

mod support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use support::raw::{scripted, write, Step};
use support::*;
use tokio::net::TcpListener;

/// Starts a slow request on blue and waits until teal counts it.
async fn slow_on_blue(teal: &Teal, ms: u64) -> tokio::task::JoinHandle<Reply> {
    let proxy = teal.proxy;
    let slow = tokio::spawn(async move {
        Conn::open(proxy)
            .await
            .get(&format!("/slow?delay_ms={ms}"))
            .await
    });
    assert_eventually!(
        teal.admin("GET", "/status", "", None).await.json()["pools"]["blue"]["in_flight"] == 1,
        Duration::from_secs(3),
        "slow request not in flight"
    );
    slow
}

/// A pool left behind by a switch shows `draining` with a start time until its work ends.
#[tokio::test]
async fn status_shows_draining_pool() {
    let (_b, _g, teal) = two_pools("").await;
    let slow = slow_on_blue(&teal, 800).await;
    let s = teal.admin("GET", "/status", "", None).await.json();
    assert_eq!(
        s["pools"]["blue"]["draining"], false,
        "active pools never drain"
    );
    teal.switch("green").await;
    let s = teal.admin("GET", "/status", "", None).await.json();
    assert_eq!(s["pools"]["blue"]["draining"], true);
    let since = s["pools"]["blue"]["draining_since"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(since.ends_with('Z') && since.len() == 20, "{since}");
    assert_eq!(s["pools"]["green"]["draining"], false);
    assert_eq!(slow.await.unwrap().json()["pool"], "blue");
    let s = teal.admin("GET", "/status", "", None).await.json();
    assert_eq!(s["pools"]["blue"]["draining"], false);
    assert!(s["pools"]["blue"]["draining_since"].is_null());
}

/// `wait_drain` answers when the old pool is idle (`drained: true`), or when the time is up with
/// what is still open (`drained: false`).
#[tokio::test]
async fn switch_waits_for_drain() {
    let (_b, _g, teal) = two_pools("").await;
    let slow = slow_on_blue(&teal, 700).await;
    let started = Instant::now();
    let r = teal
        .admin("POST", "/switch", r#"{"to":"green","wait_drain":10}"#, None)
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let j = r.json();
    assert_eq!(j["drained"], true, "{j}");
    assert_eq!(j["open"]["in_flight"], 0);
    assert!(slow.is_finished() || started.elapsed() >= Duration::from_millis(300));
    assert_eq!(slow.await.unwrap().status, StatusCode::OK);

    // Time runs out first: green keeps a slow request past a 200 ms wait.
    let proxy = teal.proxy;
    let slow = tokio::spawn(async move { Conn::open(proxy).await.get("/x?delay_ms=1500").await });
    assert_eventually!(
        teal.admin("GET", "/status", "", None).await.json()["pools"]["green"]["in_flight"] == 1,
        Duration::from_secs(3),
        "slow request not in flight"
    );
    let j = teal
        .admin("POST", "/switch?to=blue&wait_drain=0.2", "", None)
        .await
        .json();
    assert_eq!(j["drained"], false, "{j}");
    assert_eq!(j["open"]["in_flight"], 1);
    assert_eq!(j["active"], "blue");
    // The same question without switching.
    let j = teal
        .admin("GET", "/drain?pool=green&timeout=100ms", "", None)
        .await
        .json();
    assert_eq!(
        (j["drained"].as_bool(), j["active"].as_bool()),
        (Some(false), Some(false))
    );
    let j = teal
        .admin("GET", "/drain?pool=green&timeout=5s", "", None)
        .await
        .json();
    assert_eq!(j["drained"], true, "{j}");
    assert_eq!(slow.await.unwrap().json()["pool"], "green");

    for bad in [
        "/drain",
        "/drain?pool=purple",
        "/drain?pool=blue&timeout=soon",
    ] {
        let r = teal.admin("GET", bad, "", None).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}");
    }
    let r = teal
        .admin("POST", "/switch", r#"{"wait_drain":-1}"#, None)
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
}

/// `teal switch POOL --wait-drain` prints progress and exits 0 only when the old pool drained.
#[tokio::test]
async fn cli_switch_waits_for_drain() {
    let (_b, _g, teal) = two_pools("").await;
    let teal_bin = env!("CARGO_BIN_EXE_teal");
    let admin = format!("http://{}", teal.admin);
    // Long enough that the last CLI's first one-second poll still finds it in flight, however
    // slowly the processes before it start on a loaded machine.
    let slow = slow_on_blue(&teal, 3000).await;
    let out = tokio::process::Command::new(teal_bin)
        .args([
            "switch",
            "green",
            "--wait-drain",
            "300ms",
            "--admin",
            &admin,
        ])
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.starts_with("switched: blue -> green"), "{stdout}");
    assert!(
        stdout.contains("blue did not drain within 300ms: 1 in flight, 0 tunnels still open"),
        "{stdout}"
    );

    let out = tokio::process::Command::new(teal_bin)
        .args(["switch", "blue", "--admin", &admin])
        .output()
        .await
        .unwrap();
    assert!(out.status.success());
    let out = tokio::process::Command::new(teal_bin)
        .args(["switch", "green", "--wait-drain", "10s", "--admin", &admin])
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("waiting for blue to drain: 1 in flight, 0 tunnels"),
        "{stdout}"
    );
    assert!(stdout.contains("blue drained after"), "{stdout}");
    assert!(slow.is_finished());
}

/// An upstream that closes idle keep-alive connections quickly never causes a 502, whatever the
/// gap between requests.
#[tokio::test]
async fn upstream_closing_idle_connections_causes_no_502() {
    let blue = upstream_idle_close("blue", Duration::from_millis(200)).await;
    let green = upstream_idle_close("green", Duration::from_millis(200)).await;
    let pools = vec![("blue", vec![blue]), ("green", vec![green])];
    let text = with_proxy(
        &config("blue", &pools, ""),
        "upstream_idle_timeout = \"100ms\"",
    );
    let teal = Teal::start(&text).await;
    let mut conn = Conn::open(teal.proxy).await;
    for gap in [0, 50, 90, 110, 150, 190, 200, 210, 250, 0, 120, 199, 201] {
        tokio::time::sleep(Duration::from_millis(gap)).await;
        let r = conn.get("/").await;
        assert_eq!(r.status, StatusCode::OK, "after {gap} ms idle: {}", r.body);
    }
}

/// A demo upstream whose keep-alive connections close after `idle` without a request.
async fn upstream_idle_close(pool: &str, idle: Duration) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let id = std::sync::Arc::new(teal::demo::Identity {
        pool: pool.into(),
        name: pool.into(),
        version: "0".into(),
    });
    // hyper's header-read timer runs while a connection waits for its next request, so it closes
    // idle keep-alive connections too.
    tokio::spawn(teal::server::serve(
        listener,
        teal::server::Timeouts::both(idle),
        move |req, peer| teal::demo::handle(id.clone(), req, peer),
        std::future::pending(),
    ));
    addr
}

/// A pooled connection that fails before any response is retried once on a fresh connection for
/// an idempotent request without a body; a POST with a body is never repeated.
#[tokio::test]
async fn stale_pooled_connection_is_retried_once_when_safe() {
    // Every connection answers its first request, then reads the next one and closes without
    // answering: the second request on a reused connection fails like a stale one.
    let answered = std::sync::Mutex::new(std::collections::HashSet::new());
    let upstream = scripted(move |req| {
        if answered.lock().unwrap().insert(req.conn) {
            vec![write("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n")]
        } else {
            vec![Step::Close]
        }
    })
    .await;
    let addr = upstream.addr;
    let teal = Teal::start(&config("raw", &[("raw", vec![addr])], "")).await;
    let mut conn = Conn::open(teal.proxy).await;
    assert_eq!(conn.get("/").await.body, "ok\n");
    // Reuses the pooled connection, which fails; retried on a new one.
    let r = conn.get("/").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(upstream.received().len(), 3);

    // A POST with a body on a reused connection is not repeated: 502, seen upstream once.
    assert_eq!(
        conn.get("/").await.body,
        "ok\n",
        "opens a new pooled connection"
    );
    let before = upstream.received().len();
    let req = Request::post("/order")
        .header("host", "x")
        .body(Full::new(Bytes::from("item=1")))
        .unwrap();
    let r = conn.send(req).await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY);
    assert_eq!(upstream.received().len(), before + 1);
}

/// teal keeps its upstream connections alive: one upstream connection serves request after
/// request, whether the response has a body, none (204) or is to a HEAD, and teal itself closes
/// it after `upstream_idle_timeout` without traffic.
#[tokio::test]
async fn upstream_connections_are_reused_then_closed_when_idle() {
    let upstream = scripted(|req| {
        vec![write(match (req.method.as_str(), req.path.as_str()) {
            ("GET", "/empty") => "HTTP/1.1 204 No Content\r\n\r\n",
            ("HEAD", _) => "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n",
            _ => "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n",
        })]
    })
    .await;
    let addr = upstream.addr;
    let text = with_proxy(
        &config("raw", &[("raw", vec![addr])], ""),
        "upstream_idle_timeout = \"300ms\"",
    );
    let teal = Teal::start(&text).await;
    let mut conn = Conn::open(teal.proxy).await;
    for path in ["/", "/empty", "/", "/a", "/empty", "/b"] {
        let r = conn.get(path).await;
        assert!(r.status.is_success(), "{path}: {}", r.status);
    }
    let head = Request::head("/")
        .header("host", "x")
        .body(Full::new(Bytes::new()))
        .unwrap();
    assert_eq!(conn.send(head).await.status, StatusCode::OK);
    assert_eq!(conn.get("/").await.body, "ok\n");
    assert_eq!(
        upstream.accepted(),
        1,
        "every request went over the one upstream connection"
    );
    assert_eq!(upstream.ended(), 0);
    assert_eventually!(
        upstream.ended() == 1,
        Duration::from_secs(3),
        "teal did not close its idle upstream connection"
    );
    // The next request opens a new one.
    assert_eq!(conn.get("/").await.body, "ok\n");
    assert_eq!(upstream.accepted(), 2);
}
