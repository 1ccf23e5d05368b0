//! The access log as operators grep it: one JSON object per request with numbers as numbers, the
//! fields people look for, the server that failed on a 502, and a request id that the upstream
//! sees too. Runs the real binary and reads its stderr.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::raw::*;
use support::*;
use tokio::io::AsyncWriteExt;

const VIA_HYPER: &str = "Connection: x-hyper\r\n";

/// `teal run` on `text`; its proxy address, every line it writes to stderr, and its directory.
async fn teal_binary(
    text: &str,
) -> (
    tokio::process::Child,
    std::net::SocketAddr,
    Arc<Mutex<Vec<String>>>,
    tempfile::TempDir,
) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("teal.toml");
    std::fs::write(&path, text).unwrap();
    let (child, proxy, _admin, seen) = run_binary_logged(&path).await;
    (child, proxy, seen, dir)
}

/// Each access line is JSON with numbers as numbers and the fields people grep for, on both
/// paths; the client's X-Request-Id is passed upstream and logged, and one is made when the
/// client sent none; a 502 line names the server that failed.
#[tokio::test]
async fn access_lines_carry_what_operators_grep_for() {
    let upstream = scripted(|req| vec![answer(req)]).await;
    let dead = dead_addr().await;
    let text = config(
        "raw",
        &[("raw", vec![upstream.addr]), ("gone", vec![dead])],
        "",
    ) + "\n[log]\nformat = \"json\"\n";
    let (_child, proxy, seen, _dir) = teal_binary(&text).await;
    for (n, field) in [(1, ""), (2, VIA_HYPER)] {
        let mut client = RawClient::connect(proxy).await;
        let r = client
            .get(
                &format!("/page/{n}?q=1"),
                &format!(
                    "User-Agent: curl/8.0\r\nReferer: http://shop.test/\r\nX-Request-Id: trace-{n}\r\n{field}"
                ),
            )
            .await;
        assert_eq!(r.status, 200);
        let r = client.get("/made", field).await;
        assert_eq!(r.status, 200);
        let r = client.get("/gone/x", field).await;
        assert_eq!(r.status, 502);
    }
    let received = upstream.received();
    let ids: Vec<String> = received
        .iter()
        .map(|r| r.field("x-request-id").unwrap_or_default())
        .collect();
    assert_eq!(ids[0], "trace-1");
    assert_eq!(ids[2], "trace-2");
    for made in [&ids[1], &ids[3]] {
        assert!(
            made.len() == 32 && made.bytes().all(|b| b.is_ascii_hexdigit()),
            "{ids:?}"
        );
    }
    assert_eventually!(
        access_lines(&seen).len() == 6,
        Duration::from_secs(2),
        "{:?}",
        seen.lock().unwrap()
    );
    let lines = access_lines(&seen);
    for (i, line) in lines.iter().enumerate() {
        assert!(line["duration_ms"].is_f64(), "{line}");
        assert_eq!(line["protocol"], "HTTP/1.1", "{line}");
        assert_eq!(line["host"], "x", "{line}");
        if i % 3 == 2 {
            assert_eq!(line["status"], 502, "{line}");
            assert_eq!(line["upstream"], dead.to_string(), "{line}");
        } else {
            assert!(line["upstream_ms"].is_f64(), "{line}");
            assert_eq!(line["upstream"], upstream.addr.to_string(), "{line}");
        }
    }
    assert_eq!(lines[0]["path"], "/page/1?q=1");
    assert_eq!(lines[0]["user_agent"], "curl/8.0");
    assert_eq!(lines[0]["referer"], "http://shop.test/");
    assert_eq!(lines[0]["request_id"], "trace-1");
    assert_eq!(lines[3]["request_id"], "trace-2");
    assert_eq!(lines[1]["request_id"], ids[1].as_str());
}

/// A busy worker holds its access lines and writes several with one system call: every request
/// still gets exactly one whole line, on both paths, as soon as the worker has nothing else to
/// run; and the lines of requests answered just before a SIGTERM are all written before teal
/// exits.
#[tokio::test]
async fn every_answered_request_gets_one_whole_line_under_load_and_at_exit() {
    let upstream = scripted(|req| vec![answer(req)]).await;
    let text = config("raw", &[("raw", vec![upstream.addr])], "") + "\n[log]\nformat = \"json\"\n";
    let (mut child, proxy, seen, _dir) = teal_binary(&text).await;
    let load = |round: usize, requests: usize| {
        (0..8).map(move |c| {
            tokio::spawn(async move {
                let mut client = RawClient::connect(proxy).await;
                let field = if c % 2 == 1 { VIA_HYPER } else { "" };
                let mut answered = 0;
                for n in 0..requests {
                    let request =
                        format!("GET / HTTP/1.1\r\nHost: x\r\nX-Request-Id: r{round}-c{c}-n{n}\r\n{field}\r\n");
                    // After SIGTERM teal answers what it has and closes: the client stops there.
                    if client.tcp.write_all(request.as_bytes()).await.is_err() {
                        break;
                    }
                    match client.response(false).await {
                        Some(r) if r.status == 200 => answered += 1,
                        _ => break,
                    }
                }
                answered
            })
        })
    };
    let ids = |round: usize| -> Vec<String> {
        let prefix = format!("r{round}-");
        access_lines(&seen)
            .iter()
            .filter_map(|l| l["request_id"].as_str().map(str::to_string))
            .filter(|id| id.starts_with(&prefix))
            .collect()
    };
    for task in load(0, 100) {
        assert_eq!(task.await.unwrap(), 100);
    }
    assert_eventually!(
        ids(0).len() >= 800,
        Duration::from_secs(5),
        "{} lines",
        ids(0).len()
    );
    let mut lines = ids(0);
    lines.sort();
    lines.dedup();
    assert_eq!(lines.len(), 800, "one line per request, each once");

    // Round two is cut by SIGTERM: teal finishes what is under way, then exits.
    let tasks: Vec<_> = load(1, 100_000).collect();
    assert_eventually!(ids(1).len() >= 200, Duration::from_secs(10), "no load");
    send_signal(&child, "TERM").await;
    let mut answered = 0;
    for task in tasks {
        answered += task.await.unwrap();
    }
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
    assert!(status.expect("teal exits after SIGTERM").unwrap().success());
    assert_eventually!(
        ids(1).len() >= answered,
        Duration::from_secs(2),
        "{} answered, {} lines",
        answered,
        ids(1).len()
    );
    let mut lines = ids(1);
    lines.sort();
    lines.dedup();
    assert_eq!(lines.len(), answered, "one line per answered request");
}
