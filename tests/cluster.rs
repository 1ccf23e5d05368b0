//! Several teal instances on one etcd flip as one (issue 17): real etcd processes (one node or
//! a three-node cluster, tests/support/etcd.rs), real teal instances in this process, real
//! clients on loopback.
//!
//! The tests hold one lock for their whole run (they measure delays and kill etcd processes on
//! a shared machine), and each uses its own key prefix.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use support::etcd::{
    cluster_status, cluster_status_until, cluster_table, etcd_serial, run_teal, stored_active,
    stored_state, switch, to, Etcd, Pools,
};
use support::*;
use tokio::net::TcpStream;

/// One cluster test at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A prefix no other test (or test process) uses.
fn new_prefix() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "/teal/t{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A tiny xorshift generator (no `rand` among the dev-dependencies); the seed is printed.
struct Rng(u64);

impl Rng {
    fn new() -> Rng {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
            ^ u64::from(std::process::id());
        eprintln!("rng seed {seed}");
        Rng(seed | 1)
    }

    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

/// Blue and green upstreams and `n` teal instances, all with `active = "blue"` in their files
/// and the same `[cluster]` (started one after the other: the first one writes the state).
struct Fleet {
    upstreams: Pools,
    teals: Vec<Teal>,
    prefix: String,
}

impl Fleet {
    async fn start(etcd: &Etcd, n: usize) -> Fleet {
        let mut fleet = Fleet {
            upstreams: Pools::new().await,
            teals: Vec::new(),
            prefix: new_prefix(),
        };
        for _ in 0..n {
            fleet.join(etcd, "blue").await;
        }
        fleet
    }

    /// The config text of an instance whose file says `active`.
    fn text(&self, etcd: &Etcd, active: &str) -> String {
        self.upstreams
            .config(active, &cluster_table(&etcd.endpoints(), &self.prefix, ""))
    }

    /// Starts one more instance whose file says `active`.
    async fn join(&mut self, etcd: &Etcd, active: &str) -> &Teal {
        let teal = Teal::start(&self.text(etcd, active)).await;
        self.teals.push(teal);
        self.teals.last().unwrap()
    }

    fn state_key(&self) -> String {
        format!("{}/state", self.prefix)
    }

    /// Where the instances register themselves: `{prefix}/instances/`.
    fn instances_prefix(&self) -> String {
        format!("{}/instances/", self.prefix)
    }

    /// The pool each instance serves on `/` (a new connection each).
    async fn serving(&self) -> Vec<String> {
        let mut out = Vec::new();
        for t in &self.teals {
            out.push(t.text("/").await);
        }
        out
    }

    async fn all_serve(&self, pool: &str) -> bool {
        self.serving().await.iter().all(|p| p == pool)
    }

    /// Waits up to `within` until every instance serves `pool`; else panics with `what` and
    /// what each serves.
    async fn assert_all_serve(&self, pool: &str, within: Duration, what: &str) {
        assert_eventually!(
            self.all_serve(pool).await,
            within,
            "{what}: {:?}",
            self.serving().await
        );
    }

    /// `POST /switch` `{"to":pool}` through instance `via`: must answer 200; its revision.
    async fn switch_to(&self, via: usize, pool: &str) -> i64 {
        revision_of(&switch(&self.teals[via], "", &to(pool)).await)
    }

    /// Waits up to `within` until `ok` holds for every instance's `/status` `cluster` object;
    /// else panics with `what` and the object.
    async fn assert_cluster_status(
        &self,
        within: Duration,
        what: &str,
        ok: impl Fn(&Value) -> bool + Copy,
    ) {
        for t in &self.teals {
            cluster_status_until(t, within, what, ok).await;
        }
    }

    /// Every instance's `teal_cluster_connected` metric is `value`.
    async fn assert_connected_metric(&self, value: f64) {
        for t in &self.teals {
            assert_eq!(
                metric(t, "teal_cluster_connected").await,
                Some(value),
                "teal_cluster_connected of {}",
                t.admin
            );
        }
    }

    /// Waits up to a second until `ok` holds for every instance's `/canary` `canary`; else panics
    /// with `what`, the instance and its canary.
    async fn assert_canary(&self, what: &str, ok: impl Fn(&Value) -> bool) {
        let canary_of = |t: &Teal| {
            let admin = t.admin;
            async move {
                let r = Conn::open(admin).await.get("/canary").await;
                serde_json::from_str::<Value>(&r.body).unwrap()["canary"].clone()
            }
        };
        for t in &self.teals {
            assert_eventually!(
                ok(&canary_of(t).await),
                Duration::from_secs(1),
                "{what} on {}: {}",
                t.admin,
                canary_of(t).await
            );
        }
    }

    /// The active pool stored in etcd.
    async fn stored_active(&self, etcd: &Etcd) -> String {
        stored_active(etcd, &self.prefix).await
    }

    fn proxies(&self) -> Vec<SocketAddr> {
        self.teals.iter().map(|t| t.proxy).collect()
    }
}

/// The `revision` of a 200 switch answer.
fn revision_of(r: &Reply) -> i64 {
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    r.json()["revision"]
        .as_i64()
        .unwrap_or_else(|| panic!("no numeric revision in {}", r.body))
}

/// The value of a metric line `name value` (no labels) in `/metrics`.
async fn metric(teal: &Teal, name: &str) -> Option<f64> {
    let body = teal.admin("GET", "/metrics", "", None).await.body;
    body.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
}

// === load ===

/// Keep-alive clients on `/` of every proxy until stopped (or 60 s, or 20 000 requests each):
/// every answer must be 200 with body `blue` or `green`.
struct Load {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<(u64, Vec<String>)>>,
}

impl Load {
    fn start(proxies: &[SocketAddr], per_proxy: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        for &addr in proxies {
            for _ in 0..per_proxy {
                tasks.push(tokio::spawn(client_loop(addr, stop.clone())));
            }
        }
        Load { stop, tasks }
    }

    /// Stops the clients; returns the number of good answers and every failure.
    async fn finish(self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        let (mut ok, mut failures) = (0, Vec::new());
        for t in self.tasks {
            let (n, f) = t.await.expect("a load task panicked");
            ok += n;
            failures.extend(f);
        }
        (ok, failures)
    }

    /// [`Load::finish`], and no request may have failed.
    async fn finish_clean(self) -> u64 {
        let (ok, failures) = self.finish().await;
        assert_no_failures(ok, &failures);
        ok
    }
}

/// Panics with the count and the first ten failures if there are any.
fn assert_no_failures(ok: u64, failures: &[String]) {
    assert!(
        failures.is_empty(),
        "{} failed requests ({ok} ok), first: {:?}",
        failures.len(),
        &failures[..failures.len().min(10)]
    );
}

async fn client_loop(addr: SocketAddr, stop: Arc<AtomicBool>) -> (u64, Vec<String>) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let (mut ok, mut failures) = (0u64, Vec::new());
    let mut sender: Option<http1::SendRequest<Full<Bytes>>> = None;
    let mut sent = 0;
    while !stop.load(Ordering::SeqCst) && Instant::now() < deadline && sent < 20_000 {
        sent += 1;
        if !sender.as_ref().is_some_and(|s| !s.is_closed()) {
            let opened = async {
                let tcp = TcpStream::connect(addr).await?;
                let (s, conn) = http1::handshake(TokioIo::new(tcp)).await?;
                tokio::spawn(conn);
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>(s)
            };
            match opened.await {
                Ok(s) => sender = Some(s),
                Err(e) => {
                    failures.push(format!("{addr}: connect: {e}"));
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            }
        }
        let s = sender.as_mut().unwrap();
        let req = Request::get("/")
            .header("host", addr.to_string())
            .body(Full::new(Bytes::new()))
            .unwrap();
        let exchange = async {
            s.ready().await?;
            let res = s.send_request(req).await?;
            let status = res.status();
            let body = res.into_body().collect().await?.to_bytes();
            Ok::<_, hyper::Error>((status, String::from_utf8_lossy(&body).trim().to_string()))
        };
        match tokio::time::timeout(Duration::from_secs(5), exchange).await {
            Ok(Ok((StatusCode::OK, body))) if body == "blue" || body == "green" => ok += 1,
            Ok(Ok((status, body))) => failures.push(format!("{addr}: {status} {body:?}")),
            Ok(Err(e)) => {
                failures.push(format!("{addr}: {e}"));
                sender = None;
            }
            Err(_) => {
                failures.push(format!("{addr}: no answer within 5 s"));
                sender = None;
            }
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    (ok, failures)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

// === the tests ===

/// The harness itself: a three-node cluster elects a new leader when its leader is killed, and
/// the killed member comes back on its ports and data.
#[tokio::test]
async fn etcd_harness_three_nodes_reelect() {
    let Some(_serial) = etcd_serial(&SERIAL).await else {
        return;
    };
    let mut etcd = Etcd::three().await;
    assert_eq!(etcd.endpoints().len(), 3);
    let rev = etcd.put("/harness/k", "v1 ü").await;
    assert!(rev > 1);
    assert_eq!(etcd.get("/harness/k").await.as_deref(), Some("v1 ü"));
    let old = etcd.leader().await;
    etcd.kill(old);
    let new = etcd.leader().await;
    assert_ne!(new, old, "the killed member is still named leader");
    etcd.put("/harness/k", "v2").await;
    etcd.restart(old).await;
    etcd.wait_ready().await;
    let kv = etcd.kv("/harness/k").await.unwrap();
    assert_eq!((kv.value.as_str(), kv.version), ("v2", 2));
    assert_eq!(etcd.keys("/harness/").await, vec!["/harness/k".to_string()]);
    // The restarted member rejoined: all three agree on one leader again.
    let _ = etcd.leader().await;
}

/// A switch through A is served by B and C within a second; then 100 sequential switches through
/// random instances, each timed from its answer until all three serve the new pool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switch_through_one_is_served_by_all_within_a_second() {
    let Some(_serial) = etcd_serial(&SERIAL).await else {
        return;
    };
    let etcd = Etcd::single().await;
    let fleet = Fleet::start(&etcd, 3).await;
    assert_eq!(fleet.serving().await, ["blue", "blue", "blue"]);
    assert_eq!(fleet.stored_active(&etcd).await, "blue");

    let r = switch(&fleet.teals[0], "", &to("green")).await;
    let rev = revision_of(&r);
    assert_eq!(r.json()["active"], "green", "{}", r.body);
    fleet
        .assert_all_serve(
            "green",
            Duration::from_secs(1),
            "a switch through A not served by all within 1 s",
        )
        .await;
    let kv = etcd.kv(&fleet.state_key()).await.unwrap();
    assert_eq!(
        kv.mod_revision, rev,
        "the answer's revision is the state key's"
    );
    assert_eq!(fleet.stored_active(&etcd).await, "green");

    let mut rng = Rng::new();
    let mut delays = Vec::new();
    let mut pool = "green";
    for i in 0..100 {
        pool = if pool == "green" { "blue" } else { "green" };
        let via = rng.below(3);
        let r = switch(&fleet.teals[via], "", &to(pool)).await;
        assert_eq!(r.status, StatusCode::OK, "switch {i} via {via}: {}", r.body);
        let answered = Instant::now();
        loop {
            if fleet.all_serve(pool).await {
                break;
            }
            assert!(
                answered.elapsed() < Duration::from_secs(5),
                "switch {i} to {pool} via {via} not served by all after 5 s: {:?}",
                fleet.serving().await
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        delays.push(answered.elapsed());
    }
    delays.sort();
    let (p50, p99) = (percentile(&delays, 0.50), percentile(&delays, 0.99));
    eprintln!(
        "switch propagation over {} switches (answer -> all 3 serve): p50 {p50:?}, p99 {p99:?}, max {:?}",
        delays.len(),
        delays.last().unwrap()
    );
    assert!(p99 < Duration::from_secs(1), "p99 {p99:?} is not under 1 s");
}

/// Under load through all three instances, 100 flips from random instances, four at a time:
/// no failed request, some 409s, no switch lost, and all end on the last one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switch_storm_under_load_loses_nothing() {
    let Some(_serial) = etcd_serial(&SERIAL).await else {
        return;
    };
    let etcd = Etcd::single().await;
    let fleet = Fleet::start(&etcd, 3).await;
    let before = etcd.kv(&fleet.state_key()).await.expect("state written");
    let load = Load::start(&fleet.proxies(), 4);
    tokio::time::sleep(Duration::from_millis(200)).await;

    let rng = std::sync::Mutex::new(Rng::new());
    // (revision, active) of each 200; the 409s; anything else.
    let won = std::sync::Mutex::new(Vec::<(i64, String)>::new());
    let lost = AtomicU32::new(0);
    let other = std::sync::Mutex::new(Vec::<String>::new());
    let storm = |task: usize| {
        let (fleet, rng, won, lost, other) = (&fleet, &rng, &won, &lost, &other);
        async move {
            for i in 0..25 {
                let via = rng.lock().unwrap().below(3);
                // A flip: every committed one changes the state key.
                let r = switch(&fleet.teals[via], "", "").await;
                match r.status {
                    StatusCode::OK => {
                        let j = r.json();
                        assert_eq!(j["changed"], true, "a committed flip: {}", r.body);
                        let active = j["active"].as_str().unwrap().to_string();
                        won.lock().unwrap().push((revision_of(&r), active));
                    }
                    StatusCode::CONFLICT => {
                        let j = r.json();
                        assert!(j["error"].is_string(), "409 without error: {}", r.body);
                        assert!(
                            j["current"]["active"].is_string() && j["current"]["revision"].is_i64(),
                            "409 without the current state: {}",
                            r.body
                        );
                        lost.fetch_add(1, Ordering::SeqCst);
                    }
                    s => other
                        .lock()
                        .unwrap()
                        .push(format!("task {task} switch {i} via {via}: {s} {}", r.body)),
                }
            }
        }
    };
    let started = Instant::now();
    tokio::join!(storm(0), storm(1), storm(2), storm(3));
    let storm_took = started.elapsed();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (ok, failures) = load.finish().await;

    let won = won.into_inner().unwrap();
    let lost = lost.into_inner();
    let other = other.into_inner().unwrap();
    eprintln!(
        "storm: {} committed, {lost} conflicts, {} other in {storm_took:?}; load: {ok} ok, {} failed",
        won.len(),
        other.len(),
        failures.len()
    );
    assert_no_failures(ok, &failures);
    assert!(ok > 100, "the load barely ran: {ok}");
    assert!(other.is_empty(), "switch answers not 200/409: {other:?}");
    assert!(lost >= 1, "no concurrent switch got 409");
    assert!(!won.is_empty(), "no switch committed");

    let mut revisions: Vec<i64> = won.iter().map(|(r, _)| *r).collect();
    revisions.sort();
    revisions.dedup();
    assert_eq!(
        revisions.len(),
        won.len(),
        "two committed switches share a revision: {won:?}"
    );
    let after = etcd.kv(&fleet.state_key()).await.unwrap();
    assert_eq!(
        after.version - before.version,
        won.len() as i64,
        "the state key was written {} times, {} switches answered 200",
        after.version - before.version,
        won.len()
    );
    let (last_rev, last_pool) = won.iter().max_by_key(|(r, _)| *r).unwrap().clone();
    assert_eq!(after.mod_revision, last_rev, "the last committed switch");
    assert_eq!(fleet.stored_active(&etcd).await, last_pool);
    fleet
        .assert_all_serve(
            &last_pool,
            Duration::from_secs(1),
            &format!("not all serve the last switch's {last_pool}"),
        )
        .await;
    fleet
        .assert_cluster_status(
            Duration::from_secs(1),
            &format!("/status revision != {last_rev}"),
            |c| c["revision"].as_i64() == Some(last_rev),
        )
        .await;
    for t in &fleet.teals {
        assert_eq!(
            metric(t, "teal_cluster_revision").await,
            Some(last_rev as f64)
        );
    }
}

/// Single etcd killed mid-load: traffic goes on, a switch answers 503 (never a local switch),
/// /healthz stays 200, /status and /metrics say disconnected; etcd back: connected again and a
/// switch is served by all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_down_keeps_serving_and_refuses_switches() {
    let Some(_serial) = etcd_serial(&SERIAL).await else {
        return;
    };
    let mut etcd = Etcd::single().await;
    let fleet = Fleet::start(&etcd, 3).await;
    for t in &fleet.teals {
        assert_eq!(cluster_status(t).await["connected"], true);
    }
    fleet.assert_connected_metric(1.0).await;
    let load = Load::start(&fleet.proxies(), 4);
    tokio::time::sleep(Duration::from_millis(300)).await;

    etcd.kill(0);
    let killed = Instant::now();
    let r = tokio::time::timeout(
        Duration::from_secs(15),
        switch(&fleet.teals[1], "", &to("green")),
    )
    .await
    .expect("a switch with etcd down answers within 15 s");
    eprintln!(
        "etcd down: the switch answered {} after {:?}",
        r.status,
        killed.elapsed()
    );
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.body);
    let err = r.json()["error"].as_str().unwrap_or_default().to_string();
    assert!(
        err.starts_with("cluster store unreachable"),
        "503 error: {}",
        r.body
    );
    for t in &fleet.teals {
        let h = t.admin("GET", "/healthz", "", None).await;
        assert_eq!(
            h.status,
            StatusCode::OK,
            "/healthz with etcd down: {}",
            h.body
        );
    }
    fleet
        .assert_cluster_status(
            Duration::from_secs(10),
            "/status still says connected",
            |c| c["connected"] == false,
        )
        .await;
    fleet.assert_connected_metric(0.0).await;
    assert_eq!(
        fleet.serving().await,
        ["blue", "blue", "blue"],
        "a refused switch changed something"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;

    etcd.restart(0).await;
    let back = Instant::now();
    fleet
        .assert_cluster_status(
            Duration::from_secs(15),
            "not connected again 15 s after etcd came back",
            |c| c["connected"] == true,
        )
        .await;
    fleet.assert_connected_metric(1.0).await;
    eprintln!("etcd back: all connected after {:?}", back.elapsed());
    let r = switch(&fleet.teals[2], "", &to("green")).await;
    let rev = revision_of(&r);
    fleet
        .assert_all_serve(
            "green",
            Duration::from_secs(1),
            "the switch after etcd came back not served by all within 1 s",
        )
        .await;
    fleet
        .assert_cluster_status(
            Duration::from_secs(1),
            &format!("/status revision behind {rev}"),
            |c| c["revision"].as_i64() >= Some(rev),
        )
        .await;
    load.finish_clean().await;
}

/// Three-node etcd: kill its leader under load; a switch succeeds after the election and all
/// instances serve it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_leader_killed_switches_go_on() {
    let Some(_serial) = etcd_serial(&SERIAL).await else {
        return;
    };
    let mut etcd = Etcd::three().await;
    let fleet = Fleet::start(&etcd, 3).await;
    let load = Load::start(&fleet.proxies(), 2);
    fleet.switch_to(0, "green").await;
    fleet
        .assert_all_serve("green", Duration::from_secs(1), "not all serve green")
        .await;

    let leader = etcd.leader().await;
    eprintln!("killing etcd member {leader}, the leader");
    etcd.kill(leader);
    let killed = Instant::now();
    let mut tries = Vec::new();
    let rev = loop {
        let via = tries.len() % 3;
        let r = tokio::time::timeout(
            Duration::from_secs(10),
            switch(&fleet.teals[via], "", &to("blue")),
        )
        .await
        .expect("a switch answers within 10 s");
        if r.status == StatusCode::OK {
            break revision_of(&r);
        }
        tries.push(format!("{} {}", r.status, r.body));
        assert!(
            killed.elapsed() < Duration::from_secs(10),
            "no switch committed 10 s after the leader was killed: {tries:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let committed = killed.elapsed();
    fleet
        .assert_all_serve(
            "blue",
            Duration::from_secs(3),
            "the switch after the election not served by all within 3 s",
        )
        .await;
    eprintln!(
        "leader killed: switch committed after {committed:?} ({} refused first: {tries:?}), served by all after {:?}",
        tries.len(),
        killed.elapsed()
    );
    let new = etcd.leader().await;
    assert_ne!(new, leader);
    assert_eq!(etcd.kv(&fleet.state_key()).await.unwrap().mod_revision, rev);
    load.finish_clean().await;
}

/// An instance started after a switch takes the stored state, not its file's, from its first
/// request on, and registers itself.
#[tokio::test]
async fn late_joiner_takes_the_stored_state() {
    let Some(_serial) = etcd_serial(&SERIAL).await else {
        return;
    };
    let etcd = Etcd::single().await;
    let mut fleet = Fleet::start(&etcd, 1).await;
    let rev = fleet.switch_to(0, "green").await;
    assert_eventually!(
        fleet.teals[0].text("/").await == "green",
        Duration::from_secs(1),
        "A does not serve its own switch"
    );
    let late = fleet.join(&etcd, "blue").await;
    assert_eq!(
        late.text("/").await,
        "green",
        "the late instance serves its file's pool"
    );
    let c = cluster_status(late).await;
    assert_eq!(c["revision"].as_i64(), Some(rev), "{c}");
    assert_eq!(c["prefix"], fleet.prefix.as_str(), "{c}");
    assert_eq!(fleet.stored_active(&etcd).await, "green");
    let instances = fleet.instances_prefix();
    assert_eventually!(
        etcd.keys(&instances).await.len() == 2,
        Duration::from_secs(2),
        "instance keys: {:?}",
        etcd.keys(&instances).await
    );
    cluster_status_until(
        &fleet.teals[0],
        Duration::from_secs(2),
        "A's /status does not list both",
        |c| c["instances"].as_array().map(Vec::len) == Some(2),
    )
    .await;
}

/// `?wait=applied` (and `"wait":"applied"` in the body) answers once every instance serves the
/// switch: `applied.all` true, each instance at >= the revision, and all serve it at once.
#[tokio::test]
async fn wait_applied_answers_after_every_instance_applied() {
    let Some(_serial) = etcd_serial(&SERIAL).await else {
        return;
    };
    let etcd = Etcd::single().await;
    let fleet = Fleet::start(&etcd, 3).await;
    let admins: Vec<String> = fleet.teals.iter().map(|t| t.admin.to_string()).collect();
    for (query, body, pool) in [
        ("?wait=applied", to("green"), "green"),
        ("", r#"{"to":"blue","wait":"applied"}"#.to_string(), "blue"),
    ] {
        let r = switch(&fleet.teals[1], query, &body).await;
        let rev = revision_of(&r);
        let j = r.json();
        assert_eq!(j["active"], pool, "{}", r.body);
        assert_eq!(j["applied"]["all"], true, "{}", r.body);
        let listed = j["applied"]["instances"]
            .as_array()
            .unwrap_or_else(|| panic!("no applied.instances: {}", r.body));
        assert_eq!(listed.len(), 3, "{}", r.body);
        for i in listed {
            assert!(
                i["revision"].as_i64() >= Some(rev) && i["active"] == pool && i["name"].is_string(),
                "instance behind {rev}: {i}"
            );
        }
        // Applied means swapped: no waiting here.
        assert_eq!(fleet.serving().await, [pool, pool, pool], "{body}");
        for t in &fleet.teals {
            let c = cluster_status(t).await;
            assert!(c["revision"].as_i64() >= Some(rev), "{c}");
            // Every instance's /status lists the fleet as the keys say it.
            let fleet_ok = |c: &Value| {
                c["instances"].as_array().is_some_and(|l| {
                    l.len() == 3
                        && l.iter().all(|i| {
                            i["revision"].as_i64() >= Some(rev)
                                && i["active"] == pool
                                && i["name"].is_string()
                                && admins.iter().any(|a| i["admin"] == a.as_str())
                        })
                })
            };
            cluster_status_until(
                t,
                Duration::from_secs(1),
                format!("/status instances of {}", t.admin),
                fleet_ok,
            )
            .await;
        }
        // The instance keys say the same, and name the admin addresses.
        let prefix = fleet.instances_prefix();
        let keys = etcd.keys(&prefix).await;
        assert_eq!(keys.len(), 3, "{keys:?}");
        for k in keys {
            let v: Value = serde_json::from_str(&etcd.get(&k).await.unwrap()).unwrap();
            assert!(
                v["revision"].as_i64() >= Some(rev) && v["active"] == pool,
                "{k}: {v}"
            );
            let admin = v["admin"].as_str().unwrap_or_default().to_string();
            assert!(
                admins.contains(&admin),
                "{k}: admin {admin} not in {admins:?}"
            );
            assert_eq!(Some(&k[prefix.len()..]), v["name"].as_str(), "{k}: {v}");
        }
    }
}

/// Editing `active` in a file in cluster mode is refused: the instance keeps serving the
/// store's pool (so does the other), and an admin switch still works.
#[tokio::test]
async fn file_edit_of_active_is_refused_in_cluster_mode() {
    let Some(_serial) = etcd_serial(&SERIAL).await else {
        return;
    };
    let etcd = Etcd::single().await;
    let fleet = Fleet::start(&etcd, 2).await;
    let errors = |t: &Teal| {
        let t = t.admin;
        async move {
            let body = Conn::open(t).await.get("/metrics").await.body;
            body.lines()
                .find_map(|l| l.strip_prefix("teal_reloads_total{result=\"error\"} "))
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
        }
    };
    let errors_before = errors(&fleet.teals[0]).await;
    fleet.teals[0].edit_active("blue", "green");
    assert_eventually!(
        errors(&fleet.teals[0]).await > errors_before,
        Duration::from_secs(2),
        "the edit of active was not refused as a reload"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        fleet.serving().await,
        ["blue", "blue"],
        "a file edit switched in cluster mode"
    );
    assert_eq!(fleet.stored_active(&etcd).await, "blue");
    fleet.switch_to(0, "green").await;
    fleet
        .assert_all_serve(
            "green",
            Duration::from_secs(1),
            "an admin switch after the refused edit",
        )
        .await;
}

/// `teal check` validates `[cluster]`: a good one is ok (without contacting etcd); an empty
/// endpoint list, a prefix without a leading "/" or with a trailing one, and an unknown key
/// exit 1 naming the key.
#[tokio::test]
async fn check_validates_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("teal.toml");
    let pools = [("blue", vec!["127.0.0.1:1".parse().unwrap()])];
    let good = "[cluster]\netcd = [\"http://127.0.0.1:1\"]\nprefix = \"/teal/shop\"\n";
    let check = |text: String| {
        let path = path.clone();
        async move {
            std::fs::write(&path, &text).unwrap();
            run_teal(&["check", "-c", path.to_str().unwrap()]).await
        }
    };
    let (code, stdout, stderr) = check(config("blue", &pools, good)).await;
    assert_eq!((code, stdout.as_str()), (Some(0), "ok\n"), "{stderr}");
    for (from, into, key) in [
        (
            "etcd = [\"http://127.0.0.1:1\"]",
            "etcd = []",
            "cluster.etcd",
        ),
        (
            "prefix = \"/teal/shop\"",
            "prefix = \"teal/shop\"",
            "cluster.prefix",
        ),
        (
            "prefix = \"/teal/shop\"",
            "prefix = \"/teal/shop/\"",
            "cluster.prefix",
        ),
        (
            "prefix = \"/teal/shop\"",
            "prefix = \"/teal/shop\"\ncolour = \"teal\"",
            "cluster.colour",
        ),
    ] {
        let text = config("blue", &pools, &good.replace(from, into));
        let (code, stdout, stderr) = check(text.clone()).await;
        assert_eq!(code, Some(1), "{into}: {stdout}{stderr}");
        assert!(
            stderr.starts_with(&format!("{}:", path.display())) && stderr.contains(key),
            "{into}: want {key} named in {stderr:?}"
        );
        assert!(stdout.is_empty(), "{stdout}");
    }
}

/// An instance cut off from etcd (its only endpoint killed) while the fleet switches through
/// the rest of the cluster, and the history compacted meanwhile: on reconnect it re-reads the
/// state and serves the switch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnect_after_compaction_rereads_the_state() {
    let Some(_serial) = etcd_serial(&SERIAL).await else {
        return;
    };
    let mut etcd = Etcd::three().await;
    let mut fleet = Fleet::start(&etcd, 1).await;
    // A second instance that knows only member 0.
    let only_m0 = fleet.text(&etcd, "blue").replace(
        &format!("etcd = [{}]", etcd.endpoints_toml()),
        &format!("etcd = [\"{}\"]", etcd.endpoints()[0]),
    );
    assert!(only_m0.contains(&format!("etcd = [\"{}\"]", etcd.endpoints()[0])));
    fleet.teals.push(Teal::start(&only_m0).await);
    assert_eq!(fleet.serving().await, ["blue", "blue"]);

    etcd.kill(0);
    cluster_status_until(
        &fleet.teals[1],
        Duration::from_secs(10),
        "the instance on member 0 still says connected",
        |c| c["connected"] == false,
    )
    .await;
    let rev = fleet.switch_to(0, "green").await;
    assert_eq!(
        fleet.teals[1].text("/").await,
        "blue",
        "served a switch it cannot have seen"
    );
    // Compact everything up to now: a watch resuming from before the switch cannot.
    let now = etcd.put(&format!("{}-other", fleet.prefix), "x").await;
    assert!(now > rev);
    etcd.compact(now).await;

    etcd.restart(0).await;
    fleet
        .assert_all_serve(
            "green",
            Duration::from_secs(15),
            "not all serve green 15 s after member 0 came back",
        )
        .await;
    cluster_status_until(
        &fleet.teals[1],
        Duration::from_secs(2),
        format!("the instance on member 0 behind {rev}"),
        |c| c["revision"].as_i64() >= Some(rev),
    )
    .await;
    // And it follows later switches again.
    fleet.switch_to(0, "blue").await;
    fleet
        .assert_all_serve(
            "blue",
            Duration::from_secs(1),
            "a switch after the re-read not served by all",
        )
        .await;
}

/// `teal switch POOL --wait` exits once every instance serves it; `teal status` lists the
/// instances and the revision each serves.
#[tokio::test]
async fn cli_switch_wait_and_status_list_the_fleet() {
    let Some(_serial) = etcd_serial(&SERIAL).await else {
        return;
    };
    let etcd = Etcd::single().await;
    let fleet = Fleet::start(&etcd, 3).await;
    let url = format!("http://{}", fleet.teals[2].admin);
    let (code, stdout, stderr) = run_teal(&["switch", "green", "--wait", "--admin", &url]).await;
    let said = format!("{stdout}{stderr}");
    assert_eq!(code, Some(0), "{said}");
    assert_eq!(
        fleet.serving().await,
        ["green", "green", "green"],
        "--wait returned before all served: {said}"
    );
    let rev = etcd.kv(&fleet.state_key()).await.unwrap().mod_revision;
    let (code, stdout, stderr) = run_teal(&["status", "--admin", &url]).await;
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    let c = cluster_status(&fleet.teals[0]).await;
    let instances = c["instances"].as_array().unwrap().clone();
    assert_eq!(instances.len(), 3, "{c}");
    for i in instances {
        let name = i["name"].as_str().unwrap();
        let line = stdout
            .lines()
            .find(|l| l.contains(name))
            .unwrap_or_else(|| panic!("{name} not in teal status:\n{stdout}"));
        assert!(
            line.split(|c: char| !c.is_ascii_digit())
                .any(|w| w == rev.to_string()),
            "revision {rev} not on {name}'s line: {line:?}\n{stdout}"
        );
    }
}

/// A health-gated switch is judged by the instance that receives it: 409 naming that instance,
/// nothing written; a forced switch through another instance is followed by the first.
#[tokio::test]
async fn health_gated_refusal_names_the_instance() {
    let Some(_serial) = etcd_serial(&SERIAL).await else {
        return;
    };
    let etcd = Etcd::single().await;
    let blue = upstream("blue", "b1").await;
    let pools = vec![
        ("blue", vec![blue.addr]),
        ("green", vec![dead_addr().await]),
    ];
    let prefix = new_prefix();
    let extra = cluster_table(&etcd.endpoints(), &prefix, "");
    let health = "\n[pools.green.health]\npath = \"/\"\ninterval = \"100ms\"\ntimeout = \"300ms\"\nhealthy_after = 2\nunhealthy_after = 2\n";
    let a = Teal::start(&format!("{}{health}", config("blue", &pools, &extra))).await;
    let b = Teal::start(&config("blue", &pools, &extra)).await;
    let state_key = format!("{prefix}/state");
    let before = etcd.kv(&state_key).await.unwrap();

    let r = switch(&a, "", &to("green")).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
    let name = cluster_status(&a).await["name"]
        .as_str()
        .expect("a cluster name")
        .to_string();
    let j = r.json();
    let err = j["error"].as_str().unwrap_or_default();
    assert!(err.contains("no healthy server"), "{}", r.body);
    // The contract: "the error names the instance" (in its text or in an `instance` field).
    assert!(
        err.contains(&name) || j["instance"] == name.as_str(),
        "the refusal does not name {name}: {}",
        r.body
    );
    let after = etcd.kv(&state_key).await.unwrap();
    assert_eq!(
        (after.mod_revision, after.value.as_str()),
        (before.mod_revision, before.value.as_str()),
        "a refused switch wrote the store"
    );
    assert_eq!(
        (a.text("/").await, b.text("/").await),
        ("blue".into(), "blue".into())
    );

    let r = switch(&b, "", r#"{"to":"green","force":true}"#).await;
    let rev = revision_of(&r);
    for t in [&a, &b] {
        assert_eventually!(
            {
                let s = t.admin("GET", "/status", "", None).await.json();
                s["active"] == "green" && s["cluster"]["revision"].as_i64() >= Some(rev)
            },
            Duration::from_secs(1),
            "the forced switch not applied: {}",
            t.admin("GET", "/status", "", None).await.body
        );
    }
}

/// A canary set through one instance is applied by all (it goes through the store); ending it
/// through another ends it everywhere.
#[tokio::test]
async fn canary_goes_through_the_store() {
    let Some(_serial) = etcd_serial(&SERIAL).await else {
        return;
    };
    let etcd = Etcd::single().await;
    let fleet = Fleet::start(&etcd, 3).await;
    let r = fleet.teals[0]
        .admin("POST", "/canary", r#"{"pool":"green","percent":25}"#, None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let stored = stored_state(&etcd, &fleet.prefix).await;
    assert_eq!(stored["canary"]["pool"], "green", "{stored}");
    assert_eq!(stored["canary"]["percent"], 25, "{stored}");
    fleet
        .assert_canary("the canary not applied", |c| c["percent"] == 25)
        .await;
    let r = fleet.teals[2].admin("DELETE", "/canary", "", None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    fleet
        .assert_canary("the canary not ended", Value::is_null)
        .await;
    let stored = stored_state(&etcd, &fleet.prefix).await;
    assert!(stored["canary"].is_null(), "{stored}");
    assert_eq!(fleet.serving().await, ["blue", "blue", "blue"]);
}

/// An instance that stops gracefully leaves the fleet at once: `?wait=applied` right after
/// waits only for the live ones, and the stopped one's key is gone.
#[tokio::test]
async fn a_stopped_instance_leaves_the_fleet() {
    let Some(_serial) = etcd_serial(&SERIAL).await else {
        return;
    };
    let etcd = Etcd::single().await;
    let mut fleet = Fleet::start(&etcd, 3).await;
    let instances = fleet.instances_prefix();
    assert_eventually!(
        etcd.keys(&instances).await.len() == 3,
        Duration::from_secs(2),
        "{:?}",
        etcd.keys(&instances).await
    );
    let gone = fleet.teals.pop().unwrap();
    let gone_admin = gone.admin;
    let _ = gone.stop().await;
    let started = Instant::now();
    let r = switch(&fleet.teals[0], "?wait=applied", &to("green")).await;
    let took = started.elapsed();
    revision_of(&r);
    let j = r.json();
    assert!(
        j["applied"]["all"] == true && took < Duration::from_secs(2),
        "wait=applied right after a graceful stop took {took:?}: {}\ninstance keys: {:?}",
        r.body,
        etcd.keys(&instances).await
    );
    let listed = j["applied"]["instances"].as_array().unwrap();
    assert_eq!(listed.len(), 2, "{}", r.body);
    assert!(
        !r.body.contains(&gone_admin.to_string()),
        "the stopped instance is listed: {}",
        r.body
    );
    assert_eq!(etcd.keys(&instances).await.len(), 2);
    assert_eq!(fleet.serving().await, ["green", "green"]);
}

/// An instance that starts while etcd is down serves its file's state (after its startup wait)
/// and adopts the store's once etcd is back.
#[tokio::test]
async fn started_while_etcd_down_adopts_the_store_later() {
    let Some(_serial) = etcd_serial(&SERIAL).await else {
        return;
    };
    let mut etcd = Etcd::single().await;
    let mut fleet = Fleet::start(&etcd, 1).await;
    fleet.switch_to(0, "green").await;
    fleet
        .assert_all_serve(
            "green",
            Duration::from_secs(1),
            "A does not serve its switch",
        )
        .await;
    etcd.kill(0);
    let started = Instant::now();
    let late = tokio::time::timeout(Duration::from_secs(15), fleet.join(&etcd, "blue"))
        .await
        .expect("teal starts within 15 s with etcd down");
    eprintln!("started with etcd down after {:?}", started.elapsed());
    assert_eq!(late.text("/").await, "blue", "serves its file's state");
    assert_eq!(cluster_status(late).await["connected"], false);
    etcd.restart(0).await;
    fleet
        .assert_all_serve(
            "green",
            Duration::from_secs(10),
            "the late instance did not adopt the store's green",
        )
        .await;
    assert_eq!(
        fleet.stored_active(&etcd).await,
        "green",
        "the file's blue was written"
    );
}

/// `[cluster]` applies on restart: an edit of the prefix in the file leaves the running prefix
/// alone, while the rest of the same edit (a new server) applies.
#[tokio::test]
async fn cluster_table_edits_wait_for_a_restart() {
    let Some(_serial) = etcd_serial(&SERIAL).await else {
        return;
    };
    let etcd = Etcd::single().await;
    let fleet = Fleet::start(&etcd, 2).await;
    let g2 = upstream("green", "g2").await;
    let a = &fleet.teals[0];
    let servers = |t: &Teal| {
        let admin = t.admin;
        async move {
            let r = Conn::open(admin).await.get("/status").await;
            serde_json::from_str::<Value>(&r.body).unwrap()["pools"]["green"]["servers"]
                .as_array()
                .map_or(0, Vec::len)
        }
    };
    assert_eq!(servers(a).await, 1);
    let green = format!("servers = [\"{}\"]", fleet.upstreams.green.addr);
    let text = a.file();
    assert!(text.contains(&green), "{text}");
    let edited = text
        .replace(
            &format!("prefix = \"{}\"", fleet.prefix),
            "prefix = \"/teal/elsewhere\"",
        )
        .replace(
            &green,
            &format!(
                "servers = [\"{}\", \"{}\"]",
                fleet.upstreams.green.addr, g2.addr
            ),
        );
    std::fs::write(&a.path, edited).unwrap();
    assert_eventually!(
        servers(a).await == 2,
        Duration::from_secs(2),
        "the rest of an edit touching [cluster] was not applied"
    );
    assert_eq!(cluster_status(a).await["prefix"], fleet.prefix.as_str());
    revision_of(&switch(a, "", &to("green")).await);
    assert_eq!(fleet.stored_active(&etcd).await, "green");
    fleet
        .assert_all_serve("green", Duration::from_secs(1), "not all serve green")
        .await;
    assert!(etcd.keys("/teal/elsewhere").await.is_empty());
}

/// The real binary, stopped by SIGTERM right after it joined, has left the fleet by the time
/// it exits: its drain is instant (nothing open), and the process must not end before the
/// session has revoked its lease (a key left behind makes `wait=applied` elsewhere wait 10 s).
/// Five rounds, as the race was a matter of milliseconds.
#[tokio::test]
async fn the_binary_leaves_the_fleet_before_it_exits() {
    let Some(_serial) = etcd_serial(&SERIAL).await else {
        return;
    };
    let etcd = Etcd::single().await;
    let pools = Pools::new().await;
    let prefix = format!("/teal/bin{}", std::process::id());
    let instances = format!("{prefix}/instances/");
    for round in 0..5 {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("teal.toml");
        std::fs::write(&path, pools.cluster_config(&etcd.endpoints(), &prefix)).unwrap();
        let (mut child, _, admin) = run_binary(&path).await;
        assert_eventually!(
            etcd.keys(&instances).await.len() == 1,
            Duration::from_secs(5),
            "round {round}: the instance never reported: {:?}",
            etcd.keys(&instances).await
        );
        send_signal(&child, "TERM").await;
        let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
            .await
            .expect("teal exits after SIGTERM")
            .unwrap();
        assert!(status.success(), "round {round}: {status:?}");
        let left = etcd.keys(&instances).await;
        assert!(
            left.is_empty(),
            "round {round}: the instance on {admin} exited with its key still in etcd: {left:?}"
        );
    }
}
