//! The automated rollout against real upstreams: verdicts on real traffic, rollback, done, abort,
//! someone else's switch, restart and resume, and the CLI through the real binary.
//!
//! Client load runs over teal's own HTTP/1.1 path, the hyper path (`Connection: x-hyper`) and h2c
//! in turn, bounded in count and time. The canary split uses `sticky = "none"` (a bucket per
//! request), so each step's percent of the load reaches green.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;
use support::*;
use tokio::net::{TcpListener, TcpStream};

const TEAL: &str = env!("CARGO_BIN_EXE_teal");

/// `[canary]` with no split yet but `sticky = "none"`, which the rollout keeps.
const PER_REQUEST: &str = "\n[canary]\npool = \"green\"\npercent = 0\nsticky = \"none\"\n";

/// An upstream of `pool` that answers 500 to every `every`-th request it receives (0: never),
/// each after `delay_ms`, and counts them.
async fn flaky(pool: &'static str, every: u64, delay_ms: u64) -> (SocketAddr, Arc<AtomicU64>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(AtomicU64::new(0));
    let count = seen.clone();
    let handler = move |_req: Request<Incoming>, _peer: SocketAddr| {
        let n = count.fetch_add(1, Ordering::SeqCst) + 1;
        async move {
            tokio::time::sleep(Duration::from_millis(delay_ms)).await;
            let status = if every > 0 && n % every == 0 {
                StatusCode::INTERNAL_SERVER_ERROR
            } else {
                StatusCode::OK
            };
            let mut res = Response::new(Full::new(Bytes::from(pool)));
            *res.status_mut() = status;
            Ok::<_, std::convert::Infallible>(res)
        }
    };
    let serving = teal::server::serve(
        listener,
        teal::server::Timeouts::both(Duration::from_secs(10)),
        handler,
        std::future::pending::<()>(),
    );
    tokio::spawn(serving);
    (addr, seen)
}

/// Client load in the background: `workers` tasks, each sending requests over the own path,
/// the hyper path and h2c in turn, until stopped, 20,000 requests or 40 s.
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(proxy: SocketAddr, workers: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let sent = Arc::new(AtomicU64::new(0));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
        let tasks = (0..workers)
            .map(|w| {
                let (stop, ok, failed, sent) =
                    (stop.clone(), ok.clone(), failed.clone(), sent.clone());
                tokio::spawn(async move {
                    let mut i = w;
                    while !stop.load(Ordering::SeqCst)
                        && sent.fetch_add(1, Ordering::SeqCst) < 20_000
                        && tokio::time::Instant::now() < deadline
                    {
                        let good = one_request(proxy, i % 3).await;
                        let counter = if good { &ok } else { &failed };
                        counter.fetch_add(1, Ordering::SeqCst);
                        i += 1;
                    }
                })
            })
            .collect();
        Load {
            stop,
            ok,
            failed,
            tasks,
        }
    }

    /// Stops the load; returns (ok, failed).
    async fn finish(self) -> (u64, u64) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.tasks {
            t.await.unwrap();
        }
        (
            self.ok.load(Ordering::SeqCst),
            self.failed.load(Ordering::SeqCst),
        )
    }
}

/// One `GET /` on a new connection over `kind` (0 own path, 1 hyper path, 2 h2c); true for a
/// 200 with a body.
async fn one_request(proxy: SocketAddr, kind: usize) -> bool {
    matches!(fetch(proxy, kind, "/").await, Some((StatusCode::OK, body)) if !body.is_empty())
}

/// `GET path` on a new connection over `kind` (0 own path, 1 hyper path, 2 h2c): the status and
/// the body, or `None` when the exchange failed.
async fn fetch(proxy: SocketAddr, kind: usize, path: &str) -> Option<(StatusCode, Bytes)> {
    let io = TokioIo::new(TcpStream::connect(proxy).await.ok()?);
    let res = if kind == 2 {
        let (mut send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .ok()?;
        tokio::spawn(conn);
        let req = Request::get(format!("http://{proxy}{path}"));
        send.send_request(req.body(Full::new(Bytes::new())).unwrap())
            .await
            .ok()?
    } else {
        let (mut send, conn) = hyper::client::conn::http1::handshake(io).await.ok()?;
        tokio::spawn(conn);
        let mut req = Request::get(path).header("host", proxy.to_string());
        if kind == 1 {
            req = req.header("connection", "x-hyper");
        }
        send.send_request(req.body(Full::new(Bytes::new())).unwrap())
            .await
            .ok()?
    };
    let status = res.status();
    Some((status, res.into_body().collect().await.ok()?.to_bytes()))
}

/// Fails fast, saying why, when the canary split sends nothing to the canary pool (this branch
/// was written before the canary routing landed).
async fn expect_canary_traffic(green: &AtomicU64) {
    assert_eventually!(
        green.load(Ordering::SeqCst) > 0,
        Duration::from_secs(5),
        "no request reached the canary pool within 5 s: is the canary routing in?"
    );
}

async fn rollout(teal: &Teal) -> Value {
    teal.admin("GET", "/rollout", "", None).await.json()
}

/// Polls `GET /rollout` until `done` holds for it (or panics after `within`); returns it.
async fn wait_rollout(teal: &Teal, within: Duration, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let v = rollout(teal).await;
        if done(&v) {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "rollout never got there: {v:#}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn start_body(steps: &str, interval: &str, min_requests: u64) -> String {
    format!(
        r#"{{"pool":"green","steps":{steps},"interval":"{interval}","max_error_rate":"1%","min_requests":{min_requests}}}"#
    )
}

async fn start(teal: &Teal, body: &str) -> Value {
    let r = teal.admin("POST", "/rollout", body, None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    r.json()
}

/// The table `name` of the config file as TOML text, if the file has it.
fn table(teal: &Teal, name: &str) -> Option<toml::Value> {
    let doc: toml::Value = toml::from_str(&teal.file()).unwrap();
    doc.get(name).cloned()
}

/// Every exchange with a pool is counted in its tally on all three transports, 5xx as errors,
/// teal's own 502 for a pool that cannot be reached included: the counters the verdicts read
/// (here through preview routes, which need no canary split).
#[tokio::test]
async fn tally_counts_every_transport() {
    let blue = upstream("blue", "b").await;
    let (green, _) = flaky("green", 2, 0).await;
    let pools = [
        ("blue", vec![blue.addr]),
        ("green", vec![green]),
        ("red", vec![dead_addr().await]),
    ];
    let config = teal::config::Config::parse(&config("blue", &pools, ""), None).unwrap();
    let running = teal::app::start(config).await.unwrap();
    let state = running.state.clone();
    let tally = |pool: &str| state.load().pool(pool).unwrap().tally().read();
    let (green_before, red_before) = (tally("green"), tally("red"));
    for kind in 0..3 {
        for _ in 0..10 {
            let (status, _) = fetch(running.proxy_addr, kind, "/green/x").await.unwrap();
            assert!(status == 200 || status == 500, "{status}");
        }
        let (status, _) = fetch(running.proxy_addr, kind, "/red/x").await.unwrap();
        assert_eq!(status, StatusCode::BAD_GATEWAY);
    }
    assert_eventually!(
        tally("green").since(&green_before).requests == 30
            && tally("red").since(&red_before).requests == 3,
        Duration::from_secs(2),
        "every exchange counted"
    );
    let green = tally("green").since(&green_before);
    assert_eq!((green.requests, green.errors), (30, 15));
    assert!(green.p99().is_some());
    let red = tally("red").since(&red_before);
    assert_eq!((red.requests, red.errors), (3, 3), "502s are errors");
    assert_eq!(tally("blue").requests, 0, "nothing went to blue");
    running.shutdown();
}

/// Bad plans get 400, a running rollout or an unready pool 409, with the reason; GET shows idle
/// before anything ran; the metrics show the state.
#[tokio::test]
async fn refusals_and_idle_state() {
    let blue = upstream("blue", "b").await;
    let green = upstream("green", "g").await;
    let dead = dead_addr().await;
    let pools = [
        ("blue", vec![blue.addr]),
        ("green", vec![green.addr]),
        ("red", vec![dead]),
    ];
    let mut text = config("blue", &pools, "");
    text.push_str("[pools.red.health]\ninterval = \"1h\"\n");
    let teal = Teal::start(&text).await;
    assert_eq!(rollout(&teal).await["state"], "idle");
    let m = teal.admin("GET", "/metrics", "", None).await.body;
    assert!(m.contains("teal_rollout_state{state=\"idle\"} 1"), "{m}");
    let cases = [
        (
            start_body("[5,100]", "1s", 10).replace("green", "purple"),
            400,
            "no pool named \"purple\"",
        ),
        (
            start_body("[5,100]", "1s", 10).replace("green", "blue"),
            400,
            "already the active pool",
        ),
        (start_body("[50,5]", "1s", 10), 400, "steps must go up"),
        (
            start_body("[5]", "1s", 10).replace("1%", "2"),
            400,
            "is not a percentage",
        ),
        ("{\"pool\":\"green\"}".into(), 400, "missing field"),
        (
            start_body("[5,100]", "1s", 10).replace("green", "red"),
            409,
            "no healthy server",
        ),
    ];
    for (body, status, reason) in cases {
        let r = teal.admin("POST", "/rollout", &body, None).await;
        assert_eq!(r.status.as_u16(), status, "{body}: {}", r.body);
        assert!(
            r.json()["error"].as_str().unwrap().contains(reason),
            "{}",
            r.body
        );
    }
    let r = teal.admin("POST", "/rollout/abort", "", None).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
    assert!(r.body.contains("no rollout is running"), "{}", r.body);
    let r = teal.admin("DELETE", "/rollout", "", None).await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);

    let v = start(&teal, &start_body("[5,100]", "1h", 10)).await;
    assert_eq!(
        (
            v["state"].as_str(),
            v["step"].as_u64(),
            v["percent"].as_u64()
        ),
        (Some("running"), Some(0), Some(5))
    );
    let r = teal
        .admin("POST", "/rollout", &start_body("[5,100]", "1h", 10), None)
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
    assert!(
        r.body.contains("a rollout of green is running"),
        "{}",
        r.body
    );
    let m = teal.admin("GET", "/metrics", "", None).await.body;
    assert!(m.contains("teal_rollout_state{state=\"running\"} 1"), "{m}");
    assert!(m.contains("teal_rollout_state{state=\"idle\"} 0"), "{m}");
    assert!(m.contains("teal_rollout_step 0"), "{m}");
    let status = teal.admin("GET", "/status", "", None).await.json();
    assert_eq!(status["rollout"]["state"], "running");
    assert_eq!(status["rollout"]["pool"], "green");
}

/// A green that answers 500 to 5% of its requests is rolled back in its first step: the canary
/// ends (all traffic on blue), the reason names the error rate, `[rollout]` and `[canary]` leave
/// the file. Needs the canary routing.
#[tokio::test]
async fn error_rate_breach_rolls_back_in_the_first_step() {
    let blue = upstream("blue", "b").await;
    let (green, green_seen) = flaky("green", 20, 0).await;
    let pools = [("blue", vec![blue.addr]), ("green", vec![green])];
    let teal = Teal::start(&config("blue", &pools, PER_REQUEST)).await;
    let load = Load::start(teal.proxy, 4);
    start(&teal, &start_body("[5,25,50,100]", "400ms", 40)).await;
    assert!(table(&teal, "rollout").is_some(), "{}", teal.file());
    expect_canary_traffic(&green_seen).await;
    let v = wait_rollout(&teal, Duration::from_secs(30), |v| v["state"] != "running").await;
    load.finish().await;
    assert_eq!(v["state"], "rolled_back", "{v:#}");
    assert_eq!(v["step"], 0, "{v:#}");
    let reason = v["reason"].as_str().unwrap();
    let rate: f64 = reason
        .strip_prefix("error rate ")
        .and_then(|r| r.split('%').next())
        .and_then(|r| r.parse().ok())
        .unwrap_or_else(|| panic!("{reason}"));
    assert!((2.0..=10.0).contains(&rate), "about 5%: {reason}");
    assert!(reason.contains("% > 1.0% over "), "{reason}");
    assert!(v["window"]["errors"].as_u64().unwrap() > 0, "{v:#}");
    assert!(table(&teal, "rollout").is_none(), "{}", teal.file());
    assert!(table(&teal, "canary").is_none(), "{}", teal.file());
    let before = blue.hits();
    for _ in 0..20 {
        assert!(teal.text("/").await.contains("blue"));
    }
    assert_eq!(blue.hits() - before, 20, "all traffic on blue");
    let m = teal.admin("GET", "/metrics", "", None).await.body;
    assert!(
        m.contains("teal_rollout_state{state=\"rolled_back\"} 1"),
        "{m}"
    );
}

/// A green slower than `max_p99` is rolled back on its p99, named in the reason. Needs the
/// canary routing.
#[tokio::test]
async fn slow_green_rolls_back_on_p99() {
    let blue = upstream("blue", "b").await;
    let (green, green_seen) = flaky("green", 0, 30).await;
    let pools = [("blue", vec![blue.addr]), ("green", vec![green])];
    let teal = Teal::start(&config("blue", &pools, PER_REQUEST)).await;
    let load = Load::start(teal.proxy, 4);
    let body = r#"{"pool":"green","steps":[50,100],"interval":"300ms","max_error_rate":"1%","max_p99":"10ms","min_requests":20}"#;
    start(&teal, body).await;
    expect_canary_traffic(&green_seen).await;
    let v = wait_rollout(&teal, Duration::from_secs(30), |v| v["state"] != "running").await;
    let (_, failed) = load.finish().await;
    assert_eq!(
        (v["state"].as_str(), failed),
        (Some("rolled_back"), 0),
        "{v:#}"
    );
    let reason = v["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("p99 ") && reason.contains(" > 10ms over "),
        "{reason}"
    );
    assert!(v["window"]["p99_ms"].as_f64().unwrap() >= 30.0, "{v:#}");
    assert_eq!(
        teal.admin("GET", "/status", "", None).await.json()["active"],
        "blue"
    );
}

/// A healthy green goes through every step to `done`: green active, the canary and `[rollout]`
/// gone, and not one client request failed while the load ran throughout. Needs the canary
/// routing.
#[tokio::test]
async fn healthy_rollout_is_done_without_a_failed_request() {
    let blue = upstream("blue", "b").await;
    let (green, green_seen) = flaky("green", 0, 0).await;
    let pools = [("blue", vec![blue.addr]), ("green", vec![green])];
    let teal = Teal::start(&config("blue", &pools, PER_REQUEST)).await;
    let load = Load::start(teal.proxy, 4);
    let body = r#"{"pool":"green","steps":[10,50,100],"interval":"300ms","max_error_rate":"1%","max_p99":"5s","min_requests":20}"#;
    start(&teal, body).await;
    expect_canary_traffic(&green_seen).await;
    let v = wait_rollout(&teal, Duration::from_secs(30), |v| v["state"] != "running").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (ok, failed) = load.finish().await;
    assert_eq!(v["state"], "done", "{v:#}");
    assert_eq!((failed, ok > 100), (0, true), "ok {ok}, failed {failed}");
    let texts: Vec<&str> = v["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["text"].as_str().unwrap())
        .collect();
    for n in 1..=3 {
        let step = format!("step {n} of 3");
        assert!(texts.iter().any(|t| t.starts_with(&step)), "{texts:#?}");
        assert!(
            texts
                .iter()
                .any(|t| t.starts_with(&format!("step {n} passed"))),
            "{texts:#?}"
        );
    }
    let status = teal.admin("GET", "/status", "", None).await.json();
    assert_eq!(status["active"], "green");
    let doc: toml::Value = toml::from_str(&teal.file()).unwrap();
    assert_eq!(doc["active"].as_str(), Some("green"));
    assert!(
        doc.get("rollout").is_none() && doc.get("canary").is_none(),
        "{}",
        teal.file()
    );
    assert!(teal.file().starts_with("# test config\n"), "comments kept");
}

/// An abort mid-way ends the canary at once and removes `[rollout]`: `aborted`, and a new
/// rollout may start.
#[tokio::test]
async fn abort_midway() {
    let (_b, _g, teal) = two_pools(PER_REQUEST).await;
    start(&teal, &start_body("[5,50,100]", "1h", 10)).await;
    let canary = table(&teal, "canary").unwrap();
    assert_eq!(canary["percent"].as_integer(), Some(5));
    assert_eq!(canary["sticky"].as_str(), Some("none"), "stickiness kept");
    let r = teal.admin("POST", "/rollout/abort", "", None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let v = r.json();
    assert_eq!(v["state"], "aborted", "{v:#}");
    assert!(
        v["reason"]
            .as_str()
            .unwrap()
            .starts_with("aborted by 127.0.0.1:"),
        "{v:#}"
    );
    assert!(table(&teal, "canary").is_none(), "{}", teal.file());
    assert!(table(&teal, "rollout").is_none(), "{}", teal.file());
    assert_eq!(
        teal.admin("GET", "/status", "", None).await.json()["active"],
        "blue"
    );
    let again = teal
        .admin("POST", "/rollout", &start_body("[5]", "1h", 10), None)
        .await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.body);
}

/// A `POST /switch` made during a rollout aborts it; the switch stands.
#[tokio::test]
async fn switch_during_rollout_aborts_it() {
    let (_b, _g, teal) = two_pools(PER_REQUEST).await;
    start(&teal, &start_body("[5,50,100]", "1h", 10)).await;
    teal.switch("green").await;
    let v = wait_rollout(&teal, Duration::from_secs(5), |v| v["state"] != "running").await;
    assert_eq!(v["state"], "aborted", "{v:#}");
    assert_eq!(
        v["reason"],
        "the active pool was switched to green during the rollout"
    );
    assert!(table(&teal, "rollout").is_none(), "{}", teal.file());
    let doc: toml::Value = toml::from_str(&teal.file()).unwrap();
    assert_eq!(doc["active"].as_str(), Some("green"));
    assert_eq!(
        teal.admin("GET", "/status", "", None).await.json()["active"],
        "green"
    );
}

/// A teal started on a file with `[rollout]` at step 2 resumes there with a fresh window; one
/// whose rollout pool is already active finishes it as `done` and removes the table.
#[tokio::test]
async fn startup_resumes_the_persisted_step() {
    let blue = upstream("blue", "b").await;
    let green = upstream("green", "g").await;
    let rollout = "\n[rollout]\npool = \"green\"\nsteps = [5, 25, 50, 100]\ninterval = \"1h\"\nmax_error_rate = \"1%\"\nstep = 2\n";
    let text = config("blue", &blue_green(&blue, &green), PER_REQUEST) + rollout;
    let teal = Teal::start(&text).await;
    let v = wait_rollout(&teal, Duration::from_secs(5), |v| v["percent"] == 50).await;
    assert_eq!(
        (v["state"].as_str(), v["step"].as_u64()),
        (Some("running"), Some(2)),
        "{v:#}"
    );
    assert!(v["window"].is_null(), "a fresh window: {v:#}");
    assert!(
        v["events"][0]["text"].as_str().unwrap().contains("resumed"),
        "{v:#}"
    );
    assert_eq!(
        table(&teal, "canary").unwrap()["percent"].as_integer(),
        Some(50)
    );
    drop(teal);

    let finished = config("green", &blue_green(&blue, &green), "") + rollout;
    let teal = Teal::start(&finished).await;
    let v = wait_rollout(&teal, Duration::from_secs(5), |v| v["state"] != "running").await;
    assert_eq!(v["state"], "done", "{v:#}");
    assert!(table(&teal, "rollout").is_none(), "{}", teal.file());
}

/// Stopped mid-way, a teal restarted on the same file resumes at the step it had reached, with a
/// fresh window, and finishes. Needs the canary routing.
#[tokio::test]
async fn restart_midway_resumes() {
    let blue = upstream("blue", "b").await;
    let (green, green_seen) = flaky("green", 0, 0).await;
    let pools = [("blue", vec![blue.addr]), ("green", vec![green])];
    let teal = Teal::start(&config("blue", &pools, PER_REQUEST)).await;
    let load = Load::start(teal.proxy, 4);
    start(&teal, &start_body("[5,25,50,100]", "300ms", 60)).await;
    expect_canary_traffic(&green_seen).await;
    wait_rollout(&teal, Duration::from_secs(30), |v| {
        v["step"].as_u64() >= Some(1)
    })
    .await;
    load.finish().await;
    // Without load no step can pass: the rollout holds where it is.
    let v = rollout(&teal).await;
    let step = v["step"].as_u64().unwrap();
    assert_eq!(v["state"], "running", "{v:#}");
    let (_, dir) = teal.stop().await;
    let teal = Teal::start_in(dir).await;
    let persisted = table(&teal, "rollout").unwrap();
    assert_eq!(
        persisted["step"].as_integer(),
        Some(step as i64),
        "{}",
        teal.file()
    );
    let v = wait_rollout(&teal, Duration::from_secs(5), |v| v["state"] == "running").await;
    assert_eq!(v["step"].as_u64(), Some(step), "{v:#}");
    assert!(v["window"].is_null(), "a fresh window: {v:#}");
    let load = Load::start(teal.proxy, 4);
    let v = wait_rollout(&teal, Duration::from_secs(30), |v| v["state"] != "running").await;
    let (_, failed) = load.finish().await;
    assert_eq!((v["state"].as_str(), failed), (Some("done"), 0), "{v:#}");
}

/// `teal rollout` as a process: `--detach` returns at once, `status` prints the state, `abort`
/// ends it, and a followed rollout exits 4 when aborted by someone else; 1 when nothing runs.
#[tokio::test]
async fn cli_detach_status_abort() {
    let (_b, _g, teal) = two_pools(PER_REQUEST).await;
    let admin = format!("http://{}", teal.admin);
    let dir = tempfile::tempdir().unwrap();
    let out = cli(
        dir.path(),
        &[
            "rollout",
            "green",
            "--steps",
            "5,100",
            "--interval",
            "1h",
            "--max-error-rate",
            "1%",
            "--detach",
            "--admin",
            &admin,
        ],
    )
    .await;
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("step 1 of 2: 5% of default-route clients to green"),
        "{stdout}"
    );
    let out = cli(dir.path(), &["rollout", "status", "--admin", &admin]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.starts_with("rollout: running, green step 1 of 2 (5%)"),
        "{stdout}"
    );
    let out = cli(dir.path(), &["status", "--admin", &admin]).await;
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("rollout: running, green step 1 of 2"),
        "{out:?}"
    );
    let out = cli(dir.path(), &["rollout", "abort", "--admin", &admin]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.starts_with("rollout: aborted"),
        "{stdout}"
    );
    let out = cli(dir.path(), &["rollout", "abort", "--admin", &admin]).await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no rollout is running"),
        "{out:?}"
    );

    let args = [
        "rollout",
        "green",
        "--steps",
        "5,100",
        "--interval",
        "1h",
        "--max-error-rate",
        "1%",
        "--admin",
        &admin,
    ];
    let follow = tokio::process::Command::new(TEAL)
        .args(args)
        .current_dir(dir.path())
        .env_remove("TEAL_CONFIG")
        .output();
    let follow = tokio::spawn(follow);
    wait_rollout(&teal, Duration::from_secs(10), |v| v["state"] == "running").await;
    teal.admin("POST", "/rollout/abort", "", None).await;
    let out = tokio::time::timeout(Duration::from_secs(10), follow)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    let out = cli(
        dir.path(),
        &[
            "rollout",
            "green",
            "--steps",
            "5,5",
            "--interval",
            "1s",
            "--max-error-rate",
            "1%",
            "--admin",
            &admin,
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("rollout refused (400): steps: steps must go up"),
        "{out:?}"
    );
}

/// A followed rollout prints each step as it happens and exits 0 on `done`, 3 on `rolled_back`.
/// Needs the canary routing.
#[tokio::test]
async fn cli_follows_to_done_and_rolled_back() {
    for (every, code, last) in [(0, 0, "done"), (10, 3, "rolled back")] {
        let blue = upstream("blue", "b").await;
        let (green, _) = flaky("green", every, 0).await;
        let pools = [("blue", vec![blue.addr]), ("green", vec![green])];
        let teal = Teal::start(&config("blue", &pools, PER_REQUEST)).await;
        let load = Load::start(teal.proxy, 4);
        let admin = format!("http://{}", teal.admin);
        let dir = tempfile::tempdir().unwrap();
        let out = cli(
            dir.path(),
            &[
                "rollout",
                "green",
                "--steps",
                "20,100",
                "--interval",
                "300ms",
                "--max-error-rate",
                "1%",
                "--min-requests",
                "20",
                "--admin",
                &admin,
            ],
        )
        .await;
        load.finish().await;
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            out.status.code(),
            Some(code),
            "{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains("step 1 of 2: 20%"), "{stdout}");
        assert!(stdout.lines().last().unwrap().contains(last), "{stdout}");
    }
}

async fn cli(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    let cmd = tokio::process::Command::new(TEAL)
        .args(args)
        .current_dir(dir)
        .env_remove("TEAL_CONFIG")
        .env_remove("TEAL_ADMIN_TOKEN")
        .output();
    tokio::time::timeout(Duration::from_secs(40), cmd)
        .await
        .expect("teal exits")
        .unwrap()
}

/// A canary change by someone else during a rollout (what `POST /canary` does, through the same
/// `State::set_canary`) aborts the rollout and stands; so does removing `[rollout]` from the
/// config file.
#[tokio::test]
async fn foreign_canary_change_or_file_edit_aborts() {
    let blue = upstream("blue", "b").await;
    let green = upstream("green", "g").await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("teal.toml");
    std::fs::write(
        &path,
        config("blue", &blue_green(&blue, &green), PER_REQUEST),
    )
    .unwrap();
    let running = teal::app::start(teal::config::Config::load(&path).unwrap())
        .await
        .unwrap();
    let plan = teal::config::RolloutConfig {
        pool: "green".into(),
        steps: vec![5, 50, 100],
        interval: Duration::from_secs(3600),
        max_error_rate: 0.01,
        max_p99: None,
        min_requests: 10,
        step: 0,
    };
    let rollouts = running.rollouts.clone();
    rollouts.start(plan.clone(), "test", false).await.unwrap();
    let theirs = teal::config::CanaryConfig {
        pool: "green".into(),
        percent: 30,
        sticky: teal::config::Sticky::Ip,
    };
    running
        .state
        .set_canary(Some(theirs.clone()), "someone", false)
        .await
        .unwrap();
    assert_eventually!(
        rollouts.status().phase != teal::rollout::Phase::Running,
        Duration::from_secs(5),
        "still running"
    );
    let s = rollouts.status();
    assert_eq!(s.phase, teal::rollout::Phase::Aborted);
    assert_eq!(
        s.reason.as_deref(),
        Some("the canary was changed to 30% of green during the rollout")
    );
    assert_eq!(
        running.state.load().config.canary,
        Some(theirs),
        "theirs stands"
    );
    let file = teal::config::Config::load(&path).unwrap();
    assert_eq!(file.rollout, None);

    rollouts.start(plan, "test", false).await.unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    let start = text.find("[rollout]").unwrap();
    std::fs::write(&path, &text[..start]).unwrap();
    assert_eventually!(
        rollouts.status().phase != teal::rollout::Phase::Running,
        Duration::from_secs(10),
        "the file edit was not seen"
    );
    let s = rollouts.status();
    assert_eq!(s.phase, teal::rollout::Phase::Aborted);
    assert_eq!(
        s.reason.as_deref(),
        Some("[rollout] was removed from the config file")
    );
    running.shutdown();
}
