//! Upstream health: passive ejection, active checks, the health-gated switch, names that do not
//! resolve, and names that move to another address.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use http::StatusCode;
use support::*;
use tokio::net::TcpListener;

/// `[pools.NAME.health]` with fast settings for tests.
fn fast_health(pool: &str) -> String {
    format!("\n[pools.{pool}.health]\npath = \"/\"\ninterval = \"100ms\"\ntimeout = \"300ms\"\nhealthy_after = 2\nunhealthy_after = 2\n")
}

async fn server_state(teal: &Teal, pool: &str, i: usize) -> String {
    let s = teal.admin("GET", "/status", "", None).await.json();
    s["pools"][pool]["servers"][i]["health"]
        .as_str()
        .unwrap()
        .to_string()
}

/// A stopped server is ejected on the first connect failure and traffic continues on the
/// other server with no failed request.
#[tokio::test]
async fn stopped_server_is_ejected_without_failed_requests() {
    let (b1, b2, _g, pools) = blue_pair_and_green().await;
    let teal = Teal::start(&config("blue", &pools, "")).await;
    for _ in 0..4 {
        assert_eq!(teal.get("/").await.status, StatusCode::OK);
    }
    let b2 = b2.stop().await;
    let mut names = Vec::new();
    for _ in 0..20 {
        let r = teal.get("/who").await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        names.push(r.json()["name"].as_str().unwrap().to_string());
    }
    assert!(names.iter().all(|n| n == "b1"), "{names:?}");
    let s = teal.admin("GET", "/status", "", None).await.json();
    let stopped = &s["pools"]["blue"]["servers"][1];
    assert_eq!(stopped["health"], "ejected", "{stopped}");
    assert!(
        stopped["last_error"].as_str().unwrap().contains("refused"),
        "{stopped}"
    );
    let m = teal.admin("GET", "/metrics", "", None).await.body;
    for line in [
        format!("teal_server_up{{pool=\"blue\",server=\"{b2}\"}} 0"),
        format!("teal_server_state{{pool=\"blue\",server=\"{b2}\",state=\"ejected\"}} 1"),
        format!("teal_server_state{{pool=\"blue\",server=\"{b2}\",state=\"healthy\"}} 0"),
        format!("teal_server_up{{pool=\"blue\",server=\"{}\"}} 1", b1.addr),
    ] {
        assert!(m.contains(&line), "missing {line} in\n{m}");
    }
}

/// Every server down: 502 at once (well under the connect timeout), with a short body.
#[tokio::test]
async fn all_servers_down_fail_fast_with_502() {
    let g = upstream("green", "g1").await;
    let pools = vec![
        ("blue", vec![dead_addr().await, dead_addr().await]),
        ("green", vec![g.addr]),
    ];
    let teal = Teal::start(&config("blue", &pools, "")).await;
    for _ in 0..3 {
        let started = Instant::now();
        let r = teal.get("/").await;
        assert_eq!(r.status, StatusCode::BAD_GATEWAY);
        assert!(r.body.starts_with("502 bad gateway"), "{}", r.body);
        assert!(
            started.elapsed() < Duration::from_millis(500),
            "took {:?}",
            started.elapsed()
        );
    }
}

/// A server that accepts but never answers gives 504 after the pool's own response timeout.
#[tokio::test]
async fn silent_server_gives_504_after_pool_timeout() {
    let addr = support::raw::silent().await;
    let b = upstream("blue", "b1").await;
    let pools = vec![("blue", vec![b.addr]), ("green", vec![addr])];
    let text = config("blue", &pools, "").replace(
        "[pools.green]\n",
        "[pools.green]\nresponse_timeout = \"300ms\"\n",
    );
    let teal = Teal::start(&text).await;
    let started = Instant::now();
    let r = teal.get("/green/").await;
    assert_eq!(r.status, StatusCode::GATEWAY_TIMEOUT);
    assert!(r.body.starts_with("504 gateway timeout"), "{}", r.body);
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(3),
        "took {took:?}"
    );
    // Blue keeps the global timeout and answers.
    assert_eq!(teal.text("/").await, "blue");
}

/// Active checks: a server that stops becomes unhealthy and gets no traffic; when it comes back
/// it is healthy again after `healthy_after` probes and gets traffic again.
#[tokio::test]
async fn server_that_comes_back_is_used_again() {
    let (_b1, b2, _g, pools) = blue_pair_and_green().await;
    let teal = Teal::start(&format!(
        "{}{}",
        config("blue", &pools, ""),
        fast_health("blue")
    ))
    .await;
    assert_eventually!(
        server_state(&teal, "blue", 1).await == "healthy",
        Duration::from_secs(3),
        "b2 never became healthy"
    );
    let b2_addr = b2.stop().await;
    assert_eventually!(
        server_state(&teal, "blue", 1).await == "unhealthy",
        Duration::from_secs(3),
        "b2 never became unhealthy"
    );
    for _ in 0..6 {
        assert_eq!(teal.get("/who").await.json()["name"], "b1");
    }
    let b2 = upstream_at(b2_addr, "blue", "b2").await;
    assert_eventually!(
        server_state(&teal, "blue", 1).await == "healthy",
        Duration::from_secs(3),
        "b2 did not come back"
    );
    let mut names = Vec::new();
    for _ in 0..6 {
        names.push(
            teal.get("/who").await.json()["name"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    assert!(
        names.iter().any(|n| n == "b2"),
        "b2 got no traffic back: {names:?}"
    );
    drop(b2);
}

/// `POST /switch` to a pool with no healthy server: 409 with the servers' states, nothing
/// changes; `force` overrides; `teal switch` exits non-zero and says why.
#[tokio::test]
async fn switch_to_dead_pool_is_refused_unless_forced() {
    let b = upstream("blue", "b1").await;
    let pools = vec![("blue", vec![b.addr]), ("green", vec![dead_addr().await])];
    let teal = Teal::start(&format!(
        "{}{}",
        config("blue", &pools, ""),
        fast_health("green")
    ))
    .await;
    // Not yet probed: unknown is not healthy, so the gate holds from the start.
    let r = teal
        .admin("POST", "/switch", r#"{"to":"green"}"#, None)
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
    assert_eventually!(
        server_state(&teal, "green", 0).await == "unhealthy",
        Duration::from_secs(3),
        "the dead server never became unhealthy"
    );
    let r = teal
        .admin("POST", "/switch", r#"{"to":"green"}"#, None)
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    let j = r.json();
    assert!(
        j["error"].as_str().unwrap().contains("no healthy server"),
        "{j}"
    );
    let (_, state) = j["servers"].as_object().unwrap().iter().next().unwrap();
    assert_eq!(state["state"], "unhealthy");
    assert!(state["last_error"].is_string());
    assert_eq!(
        teal.text("/").await,
        "blue",
        "a refused switch changed nothing"
    );

    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_teal"))
        .args([
            "switch",
            "green",
            "--admin",
            &format!("http://{}", teal.admin),
        ])
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr.contains("switch refused (409)") && stderr.contains(": unhealthy"),
        "{stderr}"
    );

    let r = teal
        .admin("POST", "/switch", r#"{"to":"green","force":true}"#, None)
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(teal.get("/").await.status, StatusCode::BAD_GATEWAY);
    // Back to blue is never gated by green's health.
    let r = teal
        .admin("POST", "/switch", r#"{"to":"blue"}"#, None)
        .await;
    assert_eq!(r.status, StatusCode::OK);
    // The file is the operator's word: an edit making green active applies despite its health.
    teal.edit_active("blue", "green");
    assert_eventually!(
        teal.admin("GET", "/status", "", None).await.json()["active"] == "green",
        Duration::from_secs(1),
        "the edit was not applied"
    );
}

/// A pool whose hostname does not resolve at start: teal starts, serves the other pool, shows
/// the server as unresolved, and refuses to switch to it.
#[tokio::test]
async fn unresolvable_name_does_not_stop_teal() {
    let b = upstream("blue", "b1").await;
    let text = config("blue", &[("blue", vec![b.addr])], "")
        + "\n[pools.green]\nservers = [\"teal-no-such-host.invalid:8080\"]\n";
    let teal = Teal::start(&text).await;
    assert_eq!(teal.text("/").await, "blue");
    assert_eventually!(
        server_state(&teal, "green", 0).await == "unresolved",
        Duration::from_secs(3),
        "not shown as unresolved"
    );
    let r = teal.get("/green/").await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY);
    let r = teal
        .admin("POST", "/switch", r#"{"to":"green"}"#, None)
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(
        r.json()["servers"]["teal-no-such-host.invalid:8080"]["state"],
        "unresolved"
    );
}

/// Binds the same free port on 127.0.0.2 and 127.0.0.3.
async fn twin_upstreams() -> (Upstream, Upstream) {
    for _ in 0..20 {
        let a = upstream_at("127.0.0.2:0".parse().unwrap(), "blue", "old").await;
        let twin: SocketAddr = SocketAddr::new("127.0.0.3".parse().unwrap(), a.addr.port());
        if TcpListener::bind(twin).await.is_ok() {
            // The probe listener is dropped here; bind the real one on the same address.
            let b = upstream_at(twin, "blue", "new").await;
            return (a, b);
        }
    }
    panic!("no port free on both 127.0.0.2 and 127.0.0.3");
}

/// A server name that moves from 127.0.0.2 to 127.0.0.3 (a recreated container) is followed
/// within the resolve interval, with no reload and no failed request while both overlap.
#[tokio::test]
async fn moving_name_is_followed_without_reload() {
    let (old, new) = twin_upstreams().await;
    let port = old.addr.port();
    let g = upstream("green", "g1").await;
    let dir = tempfile::tempdir().unwrap();
    let hosts = dir.path().join("hosts");
    std::fs::write(&hosts, "127.0.0.2 app-blue.test\n").unwrap();
    let text = with_proxy(
        &config("blue", &[("green", vec![g.addr])], ""),
        &format!(
            "resolve_interval = \"200ms\"\nhosts_file = \"{}\"",
            hosts.display()
        ),
    ) + &format!("\n[pools.blue]\nservers = [\"app-blue.test:{port}\"]\n");
    let teal = Teal::start(&text).await;
    let mut conn = Conn::open(teal.proxy).await;
    assert_eq!(conn.get("/who").await.json()["name"], "old");

    std::fs::write(&hosts, "127.0.0.3 app-blue.test\n").unwrap();
    let moved = Instant::now();
    let mut first_new = None;
    while moved.elapsed() < Duration::from_secs(2) {
        let r = conn.get("/who").await;
        assert_eq!(
            r.status,
            StatusCode::OK,
            "a request failed during the move: {}",
            r.body
        );
        if r.json()["name"] == "new" && first_new.is_none() {
            first_new = Some(moved.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let took = first_new.expect("traffic never reached the new address");
    assert!(
        took < Duration::from_millis(1000),
        "followed after {took:?}"
    );
    // Once moved, it stays on the new address, and the old one can go.
    old.stop().await;
    for _ in 0..10 {
        assert_eq!(conn.get("/who").await.json()["name"], "new");
    }
    let s = teal.admin("GET", "/status", "", None).await.json();
    assert_eq!(s["pools"]["blue"]["servers"][0]["resolved"][0], "127.0.0.3");
    drop(new);
}

/// A name with several addresses spreads requests over all of them.
#[tokio::test]
async fn name_with_several_addresses_uses_all() {
    let (a, b) = twin_upstreams().await;
    let port = a.addr.port();
    let g = upstream("green", "g1").await;
    let dir = tempfile::tempdir().unwrap();
    let hosts = dir.path().join("hosts");
    std::fs::write(&hosts, "127.0.0.2 app-blue.test\n127.0.0.3 app-blue.test\n").unwrap();
    let text = with_proxy(
        &config("blue", &[("green", vec![g.addr])], ""),
        &format!("hosts_file = \"{}\"", hosts.display()),
    ) + &format!("\n[pools.blue]\nservers = [\"app-blue.test:{port}\"]\n");
    let teal = Teal::start(&text).await;
    let mut names = std::collections::HashSet::new();
    for _ in 0..6 {
        names.insert(
            teal.get("/who").await.json()["name"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    assert_eq!(names.len(), 2, "{names:?}");
    let m = teal.admin("GET", "/metrics", "", None).await.body;
    for ip in ["127.0.0.2", "127.0.0.3"] {
        let line = format!("teal_server_address{{pool=\"blue\",server=\"app-blue.test:{port}\",address=\"{ip}\"}} 1");
        assert!(m.contains(&line), "missing {line}");
    }
    drop((a, b));
}
