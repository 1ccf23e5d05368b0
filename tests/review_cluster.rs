//! Review of issue 17 (cluster mode): tests that show defects, against real etcd 3.4 processes
//! (tests/support/etcd.rs: loopback ports, temporary directories) and against a fake etcd (a raw
//! HTTP/1.1 server on 127.0.0.1) for answers a real one does not give.
mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use http::StatusCode;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use support::etcd::{
    cluster_status, cluster_status_until, etcd_installed, serves_within, status, Etcd, Pools,
};
use support::{config, upstream, Reply, Teal};

// ---------------------------------------------------------------------------------------------
// Defect: the watch is never checked for liveness. When the etcd member under it goes silent
// (hung, or cut off from the others: its sockets stay open), the keep-alive fails over to the
// next endpoint and the session carries on, connected, with a watch that will never deliver
// another change. The instance misses every switch made elsewhere, for good, while etcd's
// quorum is up and its /status says connected: a split fleet.

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_silent_member_under_the_watch_does_not_leave_the_instance_behind() {
    if !etcd_installed() {
        return;
    }
    let etcd = Etcd::three().await;
    let leader = etcd.leader().await;
    // The member to freeze is a follower, so the fleet keeps its leader and no election muddles
    // the picture.
    let frozen = (leader + 1) % 3;
    let other = 3 - leader - frozen;
    let pools = Pools::new().await;
    // A watches through the follower first (its first endpoint), B never touches it.
    let a = Teal::start(&pools.cluster_config(
        &[etcd.url(frozen), etcd.url(leader), etcd.url(other)],
        "/review/silent",
    ))
    .await;
    let b =
        Teal::start(&pools.cluster_config(&[etcd.url(leader), etcd.url(other)], "/review/silent"))
            .await;
    cluster_status_until(&a, Duration::from_secs(10), "A sees both instances", |c| {
        c["instances"].as_array().is_some_and(|i| i.len() == 2)
    })
    .await;
    assert_eq!(a.text("/").await, "blue");

    etcd.freeze(frozen);
    // Long enough for A's keep-alive to time out on the frozen member and go on with the next.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let r = b.admin("POST", "/switch", r#"{"to":"green"}"#, None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(b.text("/").await, "green");

    let last = serves_within(&a, "green", Duration::from_secs(15)).await;
    let st = cluster_status(&a).await;
    etcd.thaw(frozen);
    assert_eq!(
        last, "green",
        "15 s after a switch committed through B (etcd quorum up), A still serves {last}; A's cluster status: {st}"
    );
}

// ---------------------------------------------------------------------------------------------
// A fake etcd: a raw HTTP/1.1 server on 127.0.0.1 whose answers the test scripts.

/// How the fake answers one request.
enum Answer {
    /// 200 with this JSON.
    Json(Value),
    /// 200 headers of a chunked stream, these lines as chunks, then silence (the socket stays
    /// open).
    Stream(Vec<String>),
    /// 200 headers of a chunked stream, the `created` line, then chunks of `size` bytes with
    /// no newline, `total` bytes in all, then silence.
    Flood { size: usize, total: usize },
}

struct Fake {
    port: u16,
    calls: Arc<Mutex<Vec<String>>>,
}

impl Fake {
    fn count(&self, path: &str) -> usize {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .filter(|p| *p == path)
            .count()
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

async fn fake_etcd(answer: impl Fn(&str, &Value, usize) -> Answer + Send + Sync + 'static) -> Fake {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let calls = Arc::new(Mutex::new(Vec::new()));
    let answer = Arc::new(answer);
    let seen = calls.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let answer = answer.clone();
            let calls = seen.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    // One request: headers, then a Content-Length body.
                    let head_end = loop {
                        if let Some(at) = find(&buf, b"\r\n\r\n") {
                            break at;
                        }
                        let mut chunk = [0u8; 4096];
                        match sock.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
                    let len = head
                        .lines()
                        .find_map(|l| {
                            let (k, v) = l.split_once(':')?;
                            k.eq_ignore_ascii_case("content-length")
                                .then(|| v.trim().parse::<usize>().ok())
                                .flatten()
                        })
                        .unwrap_or(0);
                    while buf.len() < head_end + 4 + len {
                        let mut chunk = [0u8; 4096];
                        match sock.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let body: Value =
                        serde_json::from_slice(&buf[head_end + 4..head_end + 4 + len])
                            .unwrap_or(Value::Null);
                    buf.drain(..head_end + 4 + len);
                    let path = head.split(' ').nth(1).unwrap_or("").to_string();
                    let n = {
                        let mut calls = calls.lock().unwrap();
                        calls.push(path.clone());
                        calls.iter().filter(|p| **p == path).count()
                    };
                    match answer(&path, &body, n) {
                        Answer::Json(v) => {
                            let text = v.to_string();
                            let res = format!(
                                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{text}",
                                text.len()
                            );
                            if sock.write_all(res.as_bytes()).await.is_err() {
                                return;
                            }
                        }
                        Answer::Stream(lines) => {
                            let mut res = String::from("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n");
                            for l in lines {
                                let l = format!("{l}\n");
                                res.push_str(&format!("{:x}\r\n{l}\r\n", l.len()));
                            }
                            let _ = sock.write_all(res.as_bytes()).await;
                            // Say nothing more, keep the socket.
                            let mut sink = [0u8; 1024];
                            while matches!(sock.read(&mut sink).await, Ok(n) if n > 0) {}
                            return;
                        }
                        Answer::Flood { size, total } => {
                            let created = format!("{}\n", created_line());
                            let mut res = format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{created}\r\n", created.len());
                            let piece = format!("{:x}\r\n{}\r\n", size, "a".repeat(size));
                            let mut sent = 0;
                            while sent < total {
                                res.push_str(&piece);
                                sent += size;
                                if res.len() > 64 * 1024 {
                                    if sock.write_all(res.as_bytes()).await.is_err() {
                                        return;
                                    }
                                    res.clear();
                                }
                            }
                            let _ = sock.write_all(res.as_bytes()).await;
                            let mut sink = [0u8; 1024];
                            while matches!(sock.read(&mut sink).await, Ok(n) if n > 0) {}
                            return;
                        }
                    }
                }
            });
        }
    });
    Fake { port, calls }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn header(revision: i64) -> Value {
    json!({"cluster_id": "1", "member_id": "2", "revision": revision.to_string(), "raft_term": "2"})
}

fn created_line() -> String {
    json!({"result": {"header": header(5), "created": true}}).to_string()
}

/// The unary answers of a well-behaved etcd holding `{prefix}/state` = `state` at `revision`.
fn unary(path: &str, prefix: &str, state: &Value, revision: i64) -> Answer {
    let kv = json!({
        "key": B64.encode(format!("{prefix}/state")),
        "value": B64.encode(state.to_string()),
        "create_revision": "2",
        "mod_revision": revision.to_string(),
        "version": "1",
    });
    Answer::Json(match path {
        "/v3/kv/range" => json!({"header": header(revision), "kvs": [kv], "count": "1"}),
        "/v3/kv/txn" => {
            json!({"header": header(revision), "responses": [{"response_range": {"header": header(revision), "kvs": [kv], "count": "1"}}]})
        }
        "/v3/kv/put" => json!({"header": header(revision + 1)}),
        "/v3/lease/grant" => json!({"header": header(revision), "ID": "7587", "TTL": "10"}),
        "/v3/lease/keepalive" => {
            json!({"result": {"header": header(revision), "ID": "7587", "TTL": "10"}})
        }
        _ => json!({"header": header(revision)}),
    })
}

// ---------------------------------------------------------------------------------------------
// Defect: `Etcd::watch` waits for the stream's first line (`created`) with no time limit. An
// etcd (or a proxy before it) that sends the answer's headers and then nothing holds the session
// there for good: it never marks itself connected, never renews its lease, and never takes
// another change, even after the store has moved on.

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_watch_that_never_confirms_is_given_up_and_the_state_taken() {
    let prefix = "/review/unconfirmed";
    // Blue at revision 2 until the first watch comes in; then green at revision 5, as if
    // another instance had switched meanwhile.
    let moved = Arc::new(AtomicUsize::new(0));
    let flag = moved.clone();
    let fake = fake_etcd(move |path, _body, n| {
        let (state, rev) = if flag.load(Ordering::SeqCst) > 0 {
            (json!({"active": "green"}), 5)
        } else {
            (json!({"active": "blue"}), 2)
        };
        match path {
            "/v3/watch" if n == 1 => {
                flag.store(1, Ordering::SeqCst);
                // Headers, then silence.
                Answer::Stream(vec![])
            }
            "/v3/watch" => Answer::Stream(vec![created_line()]),
            p => unary(p, prefix, &state, rev),
        }
    })
    .await;
    let pools = Pools::new().await;
    let teal = Teal::start(&pools.cluster_config(&[fake.url()], prefix)).await;
    let last = serves_within(&teal, "green", Duration::from_secs(20)).await;
    let st = cluster_status(&teal).await;
    assert_eq!(
        last,
        "green",
        "20 s after a watch answered headers and nothing else, the store says green and teal serves {last}; watch requests made: {}, ranges: {}; cluster status: {st}",
        fake.count("/v3/watch"),
        fake.count("/v3/kv/range")
    );
}

// ---------------------------------------------------------------------------------------------
// Defect: in cluster mode `[rollout]` is no longer written to the config file (apply_edit leaves
// the file alone), but a reload still takes `[rollout]` from the file. Any reload during a
// rollout (an unrelated edit of the file, a SIGHUP) therefore drops `[rollout]` from the running
// config, and the controller aborts the rollout as "removed from the config file", leaving its
// canary split in the store with nobody driving it.

const ROLLOUT: &str =
    r#"{"pool":"green","steps":[10,50],"interval":"60s","max_error_rate":"5%","force":true}"#;

/// An instance alone on `etcd` under `prefix` that started [`ROLLOUT`] (answered 200): the
/// upstreams, the instance and the answer.
async fn start_rollout(etcd: &Etcd, prefix: &str) -> (Pools, Teal, Reply) {
    let pools = Pools::new().await;
    let teal = Teal::start(&pools.cluster_config(&[etcd.url(0)], prefix)).await;
    let r = teal.admin("POST", "/rollout", ROLLOUT, None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    (pools, teal, r)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unrelated_file_edit_does_not_abort_a_cluster_rollout() {
    if !etcd_installed() {
        return;
    }
    let etcd = Etcd::single().await;
    let (_pools, teal, r) = start_rollout(&etcd, "/review/rollout-edit").await;
    assert_eq!(r.json()["state"], "running", "{}", r.body);
    // Running on its own, before anything is edited.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let doc = teal.admin("GET", "/rollout", "", None).await.json();
    assert_eq!(doc["state"], "running", "{doc}");
    // An edit that has nothing to do with the switch state.
    let text = teal.file() + "\n# a comment added by the operator\n";
    std::fs::write(&teal.path, text).unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let doc = teal.admin("GET", "/rollout", "", None).await.json();
    assert_eq!(
        doc["state"], "running",
        "a comment added to the file ended the rollout: {doc}"
    );
}

// Defect (same cause): a rollout no longer survives a restart of the instance that runs it.
// Alone, `[rollout]` in the file resumes it; in cluster mode the file never gets it, so the
// restarted controller is idle while the canary split stays in the store.

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cluster_rollout_resumes_after_a_restart() {
    if !etcd_installed() {
        return;
    }
    let etcd = Etcd::single().await;
    let (_pools, teal, _) = start_rollout(&etcd, "/review/rollout-restart").await;
    let (_, dir) = teal.stop().await;
    let teal = Teal::start_in(dir).await;
    let doc = teal.admin("GET", "/rollout", "", None).await.json();
    let canary = status(&teal).await["canary"].clone();
    assert_eq!(
        doc["state"], "running",
        "after a restart the rollout is {} while the store still holds its canary ({canary})",
        doc["state"]
    );
}

// ---------------------------------------------------------------------------------------------
// Defect: while etcd cannot be reached (and the instance already knows it: /status says
// disconnected), every change still goes to etcd under the writer lock and waits out the call
// timeout (2 s per endpoint). Switches queue behind each other on that lock, so the n-th
// concurrent switch answers 503 only after n times the timeout.

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn switches_answer_503_in_bounded_time_while_etcd_is_silent() {
    if !etcd_installed() {
        return;
    }
    let etcd = Etcd::single().await;
    let pools = Pools::new().await;
    let teal =
        Arc::new(Teal::start(&pools.cluster_config(&[etcd.url(0)], "/review/silent503")).await);
    assert_eq!(status(&teal).await["cluster"]["connected"], true);
    etcd.freeze(0);
    assert_eventually!(
        status(&teal).await["cluster"]["connected"] == false,
        Duration::from_secs(15),
        "teal notices the silent etcd"
    );
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let teal = teal.clone();
        tasks.push(tokio::spawn(async move {
            let t = Instant::now();
            let r = teal
                .admin("POST", "/switch", r#"{"to":"green"}"#, None)
                .await;
            (r.status, t.elapsed())
        }));
    }
    let mut answers = Vec::new();
    for t in tasks {
        answers.push(t.await.unwrap());
    }
    etcd.thaw(0);
    for (status, took) in &answers {
        assert_eq!(*status, StatusCode::SERVICE_UNAVAILABLE, "{answers:?}");
        assert!(
            *took < Duration::from_secs(3),
            "a switch took {took:?} to be refused while the store was known to be unreachable: {answers:?}"
        );
    }
    assert_eq!(teal.text("/").await, "blue");
}

// ---------------------------------------------------------------------------------------------
// Defect: `Watch::message` looks for the end of a line from the start of its buffer after
// every frame, so a long line delivered in small chunks costs quadratic time: a 4 MiB line in
// 16-byte chunks keeps the session busy for minutes before the 4 MiB limit ends it (no
// keep-alive meanwhile, the lease lapses).

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_watch_line_over_the_limit_ends_the_session_quickly() {
    let prefix = "/review/flood";
    let fake = fake_etcd(move |path, _body, n| match path {
        "/v3/watch" if n == 1 => Answer::Flood {
            size: 16,
            total: 5 * 1024 * 1024,
        },
        "/v3/watch" => Answer::Stream(vec![created_line()]),
        p => unary(p, prefix, &json!({"active": "blue"}), 2),
    })
    .await;
    let pools = Pools::new().await;
    let _teal = Teal::start(&pools.cluster_config(&[fake.url()], prefix)).await;
    // The 4 MiB limit ends the first watch; the session starts over and opens a second one.
    assert_eventually!(
        fake.count("/v3/watch") >= 2,
        Duration::from_secs(20),
        "20 s after a watch started sending a line longer than 4 MiB, the session has not given it up (watch requests: {})",
        fake.count("/v3/watch")
    );
}

// ---------------------------------------------------------------------------------------------
// Defect: the contract says `[cluster]` changes apply on restart and "reload warns", but
// `warn_restart_only` (src/state/mod.rs) does not look at `cluster`: an operator who adds
// `[cluster]` to a running instance's file gets "config reloaded" and an instance that silently
// stays on its own.

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn adding_cluster_to_a_running_file_warns_that_it_needs_a_restart() {
    let blue = upstream("blue", "b1").await;
    let green = upstream("green", "g1").await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("teal.toml");
    let text = config("blue", &support::blue_green(&blue, &green), "");
    std::fs::write(&path, &text).unwrap();
    let (_child, _proxy, _admin, seen) = support::run_binary_logged(&path).await;
    let edited = text.replacen(
        "\n[pools.",
        "\n[cluster]\netcd = [\"http://127.0.0.1:13999\"]\nprefix = \"/review/late\"\n\n[pools.",
        1,
    );
    std::fs::write(&path, edited).unwrap();
    assert_eventually!(
        seen.lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("config reloaded")),
        Duration::from_secs(10),
        "the edit is reloaded: {:?}",
        seen.lock().unwrap()
    );
    let lines = seen.lock().unwrap().clone();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("cluster") && l.contains("restart")),
        "[cluster] added to the file of a running instance, and no line says it needs a restart: {lines:?}"
    );
}
