//! The `teal` binary as a process: `check`, `run`, `switch`, `status`, and SIGTERM drain.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use http::StatusCode;
use support::*;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

const TEAL: &str = env!("CARGO_BIN_EXE_teal");

/// Prints expected and actual in blocks when they differ (ripgrep's `eqnice!`).
macro_rules! eqnice {
    ($expected:expr, $got:expr) => {{
        let (expected, got) = (&$expected, &$got);
        if expected != got {
            panic!("\nexpected:\n{}\n\ngot:\n{}\n", expected, got);
        }
    }};
}

struct Output {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

async fn teal(args: &[&str], env: &[(&str, &str)]) -> Output {
    teal_in(None, args, env).await
}

/// `teal args` with `dir` as its working directory (where `config/teal.toml` is looked for).
async fn teal_in(dir: Option<&Path>, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(TEAL);
    if let Some(dir) = dir {
        cmd.current_dir(dir);
    }
    cmd.args(args)
        .env_remove("TEAL_ADMIN_TOKEN")
        .env_remove("TEAL_CONFIG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = tokio::time::timeout(Duration::from_secs(30), cmd.output())
        .await
        .expect("teal exits")
        .unwrap();
    Output {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `teal run -c path` as a child process, logging at `log` to `stderr`, killed if dropped.
fn spawn_run(path: &Path, log: &str, stderr: Stdio) -> tokio::process::Child {
    Command::new(TEAL)
        .args(["run", "-c", path.to_str().unwrap()])
        .env("TEAL_LOG", log)
        .stderr(stderr)
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

/// Replaces the RFC 3339 time after every "since " with `<t>`.
fn mask_times(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find("since ") {
        out.push_str(&rest[..i + 6]);
        rest = &rest[i + 6..];
        let end = rest.find([' ', '\n']).unwrap_or(rest.len());
        out.push_str("<t>");
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

fn write_config(dir: &Path, text: &str) -> std::path::PathBuf {
    let path = dir.join("teal.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// `teal check` prints `ok` and exits 0 for a valid file.
#[tokio::test]
async fn check_ok() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(
        dir.path(),
        &config(
            "blue",
            &[("blue", vec!["127.0.0.1:1".parse().unwrap()])],
            "",
        ),
    );
    let out = teal(&["check", "-c", path.to_str().unwrap()], &[]).await;
    assert!(out.status.success());
    eqnice!("ok\n", out.stdout);
    // $TEAL_CONFIG is the default for -c.
    let out = teal(&["check"], &[("TEAL_CONFIG", path.to_str().unwrap())]).await;
    assert!(out.status.success(), "{}", out.stderr);
    // The shipped example config is valid.
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/config/teal.toml");
    let out = teal(&["check", "-c", example], &[]).await;
    eqnice!("ok\n", out.stdout);
}

/// `teal check` exits 1 naming file, line:column, key and reason, for each kind of mistake.
#[tokio::test]
async fn check_errors_name_where() {
    let dir = tempfile::tempdir().unwrap();
    let good = "active = \"blue\"\n[pools.blue]\nservers = [\"a:1\", \"b:2\"]\n[pools.green]\nservers = [\"c:3\"]\n[preview]\nallow = [\"10.0.0.0/8\"]\n";
    let cases = [
        (
            good.replace("[pools.blue]", "[pools.blue"),
            "2:12",
            "",
            "invalid table header; expected",
        ),
        (
            good.replace("active = \"blue\"", "active = \"red\""),
            "1:1",
            "active",
            "no pool named \"red\"",
        ),
        (
            good.replace("[\"c:3\"]", "[]"),
            "5:1",
            "pools.green.servers",
            "at least one server",
        ),
        (
            good.replace("\"b:2\"", "\"b\""),
            "3:19",
            "pools.blue.servers[1]",
            "no port",
        ),
        (
            good.replace("10.0.0.0/8", "10.0.0.0/99"),
            "7:10",
            "preview.allow[0]",
            "not an IP address or CIDR",
        ),
        (
            good.replace("[preview]", "[preview]\nblock = 1"),
            "7:1",
            "preview.block",
            "unknown field `block`",
        ),
        (
            good.replace(
                "[preview]",
                "[proxy]\nlisten = \"0.0.0.0:8080\"\n[admin]\nlisten = \"127.0.0.1:8080\"\n[preview]",
            ),
            "9:1",
            "admin.listen",
            "127.0.0.1:8080 is also where the proxy listens (proxy.listen = 0.0.0.0:8080)",
        ),
        (
            good.replace("\"b:2\"", "\"b:99999\""),
            "3:19",
            "pools.blue.servers[1]",
            "port 99999 is out of range",
        ),
        (
            good.replace("10.0.0.0/8", "10.0.0.1/8"),
            "7:10",
            "preview.allow[0]",
            "host bits set; did you mean \"10.0.0.0/8\"",
        ),
    ];
    for (text, pos, key, reason) in cases {
        let path = write_config(dir.path(), &text);
        let out = teal(&["check", "-c", path.to_str().unwrap()], &[]).await;
        assert_eq!(out.status.code(), Some(1), "{text}");
        let want = format!(
            "{}:{pos}: {}",
            path.display(),
            if key.is_empty() {
                String::new()
            } else {
                format!("{key}: ")
            }
        );
        assert!(
            out.stderr.starts_with(&want),
            "want prefix {want:?}\ngot {:?}",
            out.stderr
        );
        assert!(
            out.stderr.contains(reason),
            "want {reason:?} in {:?}",
            out.stderr
        );
        assert!(out.stdout.is_empty());
    }
    let out = teal(&["check", "-c", "/nonexistent/teal.toml"], &[]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        out.stderr.contains("/nonexistent/teal.toml: cannot read"),
        "{}",
        out.stderr
    );
}

/// `teal switch` and `teal status` against a running `teal run`, with a token from the flag and
/// from $TEAL_ADMIN_TOKEN; a refused switch exits non-zero with the reason.
#[tokio::test]
async fn switch_and_status_as_processes() {
    let blue = upstream("blue", "b1").await;
    let green = upstream("green", "g1").await;
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(
        dir.path(),
        &config("blue", &blue_green(&blue, &green), "token = \"tok\"\n"),
    );
    let (_child, proxy, admin) = run_binary(&path).await;
    let url = format!("http://{admin}");
    let text = |p: &'static str| async move {
        Conn::open(proxy).await.get(p).await.body.trim().to_string()
    };
    assert_eq!(text("/").await, "blue");

    let out = teal(&["status", "--admin", &url], &[]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stderr.contains("401"), "{}", out.stderr);

    let out = teal(&["switch", "--admin", &url, "--token", "tok"], &[]).await;
    assert!(out.status.success(), "{}", out.stderr);
    eqnice!(
        "switched: blue -> green (generation 2, saved in the config file)\n",
        out.stdout
    );
    assert_eq!(text("/").await, "green");
    assert!(std::fs::read_to_string(&path)
        .unwrap()
        .contains("active = \"green\""));

    let out = teal(
        &["switch", "purple", "--admin", &url],
        &[("TEAL_ADMIN_TOKEN", "tok")],
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        out.stderr
            .contains("switch refused (400): no pool named \"purple\""),
        "{}",
        out.stderr
    );
    assert_eq!(text("/").await, "green");

    let out = teal(
        &["switch", "blue", "--admin", &admin.to_string()],
        &[("TEAL_ADMIN_TOKEN", "tok")],
    )
    .await;
    assert!(out.status.success(), "{}", out.stderr);
    assert_eq!(text("/").await, "blue");

    // Switching to the pool already active is a no-op, and says so.
    let out = teal(&["switch", "blue", "--admin", &url, "--token", "tok"], &[]).await;
    assert!(out.status.success(), "{}", out.stderr);
    eqnice!("blue is already active; nothing to do\n", out.stdout);

    // The token and the address may come from the config file itself.
    let out = teal(
        &["status", "--admin", &url, "-c", path.to_str().unwrap()],
        &[],
    )
    .await;
    assert!(out.status.success(), "{}", out.stderr);
    let want = format!(
        "active: blue (generation 3)\nconfig: {}\n\npool blue  (active)  in-flight 0  tunnels 0\n  {:<32} unknown    in-flight 0  tunnels 0  since <t>  -> 127.0.0.1\n\npool green  in-flight 0  tunnels 0\n  {:<32} unknown    in-flight 0  tunnels 0  since <t>  -> 127.0.0.1\n",
        path.display(),
        blue.addr,
        green.addr
    );
    eqnice!(want, mask_times(&out.stdout));

    let out = teal(&["status", "--admin", "http://127.0.0.1:1"], &[]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        out.stderr
            .contains("cannot reach the admin API at http://127.0.0.1:1"),
        "{}",
        out.stderr
    );
}

/// SIGTERM: new connections are refused, the request in flight completes, exit code 0.
#[tokio::test]
async fn sigterm_drains_in_flight_and_exits_zero() {
    let blue = upstream("blue", "b1").await;
    let green = upstream("green", "g1").await;
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), &config("blue", &blue_green(&blue, &green), ""));
    let (mut child, proxy, _admin) = run_binary(&path).await;
    let mut idle = Conn::open(proxy).await;
    assert_eq!(idle.get("/").await.status, StatusCode::OK);
    let slow =
        tokio::spawn(async move { Conn::open(proxy).await.get("/slow?delay_ms=1500").await });
    assert_eventually!(
        blue.hits() == 2,
        Duration::from_secs(3),
        "slow request did not reach the upstream"
    );

    terminate_and_expect_refusal(&child, proxy).await;
    assert!(
        !slow.is_finished(),
        "the slow request was still running when accepting stopped"
    );
    let r = slow.await.unwrap();
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["pool"], "blue");
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("teal exits within the grace period")
        .unwrap();
    assert_eq!(status.code(), Some(0));
    assert_eventually!(
        !idle.is_open(),
        Duration::from_secs(2),
        "idle keep-alive connection left open"
    );
}

/// `[log] format = "json"`: every stderr line is a JSON object; requests get a `teal::access`
/// line with the contract's fields; the admin token appears nowhere, even after a wrong one.
#[tokio::test]
async fn json_logs_with_access_lines_and_no_token() {
    let blue = upstream("blue", "b1").await;
    let green = upstream("green", "g1").await;
    let dir = tempfile::tempdir().unwrap();
    let extra = "token = \"very-secret-token\"\n\n[log]\nformat = \"json\"\n";
    let path = write_config(
        dir.path(),
        &config("blue", &blue_green(&blue, &green), extra),
    );
    let mut child = spawn_run(&path, "info", Stdio::piped());
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    let (proxy, admin) = loop {
        let line = lines.next_line().await.unwrap().expect("teal runs");
        let v: serde_json::Value = serde_json::from_str(&line).expect("JSON log line");
        seen.push(line);
        if v["message"] == "teal is serving" {
            let addr = |k: &str| v[k].as_str().unwrap().parse::<SocketAddr>().unwrap();
            break (addr("proxy"), addr("admin"));
        }
    };
    Conn::open(proxy).await.get("/blue/x?y=1").await;
    let mut conn = Conn::open(admin).await;
    for token in ["wrong-token", "very-secret-token"] {
        let req = http::Request::post("/switch")
            .header("host", admin.to_string())
            .header("content-type", "application/json")
            .header("authorization", format!("Bearer {token}"))
            .body(http_body_util::Full::new(bytes::Bytes::from(
                r#"{"to":"green"}"#,
            )))
            .unwrap();
        conn.send(req).await;
    }
    send_signal(&child, "TERM").await;
    while let Ok(Some(line)) = lines.next_line().await {
        seen.push(line);
    }
    assert_eq!(child.wait().await.unwrap().code(), Some(0));
    let all = seen.join("\n");
    assert!(!all.contains("very-secret-token"), "token in logs:\n{all}");
    let events: Vec<serde_json::Value> = seen
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let access = events
        .iter()
        .find(|e| e["target"] == "teal::access")
        .expect("an access line");
    for field in [
        "timestamp",
        "peer",
        "method",
        "path",
        "pool",
        "upstream",
        "status",
        "bytes",
        "duration_ms",
    ] {
        assert!(
            !access[field].is_null(),
            "access line lacks {field}: {access}"
        );
    }
    assert_eq!(access["path"], "/blue/x?y=1");
    assert_eq!(access["pool"], "blue");
    assert_eq!(access["status"], 200);
    assert_eq!(access["upstream"], blue.addr.to_string());
    let switched = events
        .iter()
        .find(|e| e["message"] == "switched")
        .expect("switch logged");
    assert_eq!(
        switched["by"].as_str().unwrap().split(':').next(),
        Some("127.0.0.1")
    );
    assert!(events.iter().any(|e| e["message"]
        .as_str()
        .is_some_and(|m| m.contains("refused: missing or wrong token"))));
}

/// `teal upstream` runs one demo upstream: its pool name on `/`, JSON with name and version
/// elsewhere.
#[tokio::test]
async fn upstream_command() {
    let mut child = Command::new(TEAL)
        .args([
            "upstream",
            "--listen",
            "127.0.0.1:0",
            "--pool",
            "green",
            "--name",
            "server2-green",
            "--version",
            "0.0.2",
        ])
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let line = lines.next_line().await.unwrap().expect("a startup line");
    let start = line.find("addr=").expect("addr in the startup line") + 5;
    let addr: SocketAddr = line[start..].split(' ').next().unwrap().parse().unwrap();
    let mut conn = Conn::open(addr).await;
    assert_eq!(conn.get("/").await.body, "green\n");
    let j = conn.get("/info").await.json();
    assert_eq!(
        (
            j["pool"].as_str(),
            j["name"].as_str(),
            j["version"].as_str()
        ),
        (Some("green"), Some("server2-green"), Some("0.0.2"))
    );
    assert_eq!(j["path"], "/info");
}

/// teal refuses to start with the admin API off loopback and no token, saying why.
#[tokio::test]
async fn refuses_open_admin_without_token() {
    let dir = tempfile::tempdir().unwrap();
    let text = config(
        "blue",
        &[("blue", vec!["127.0.0.1:1".parse().unwrap()])],
        "",
    )
    .replace(
        "[admin]\nlisten = \"127.0.0.1:0\"",
        "[admin]\nlisten = \"0.0.0.0:0\"",
    );
    let path = write_config(dir.path(), &text);
    let out = teal(&["run", "-c", path.to_str().unwrap()], &[]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        out.stderr
            .contains("admin.listen: 0.0.0.0:0 is not a loopback address and no token is set"),
        "{}",
        out.stderr
    );
}

/// `token_file` is read at start and again on SIGHUP: a rotated token takes over.
#[tokio::test]
async fn token_file_is_reread_on_sighup() {
    let blue = upstream("blue", "b1").await;
    let green = upstream("green", "g1").await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), "first\n").unwrap();
    let path = write_config(
        dir.path(),
        &config(
            "blue",
            &blue_green(&blue, &green),
            "token_file = \"token\"\n",
        ),
    );
    let (child, _proxy, admin) = run_binary(&path).await;
    let status = |token: &'static str| async move {
        let req = http::Request::get("/status")
            .header("host", admin.to_string())
            .header("authorization", format!("Bearer {token}"))
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .unwrap();
        Conn::open(admin).await.send(req).await.status
    };
    assert_eq!(status("first").await, StatusCode::OK);
    std::fs::write(dir.path().join("token"), "second\n").unwrap();
    send_signal(&child, "HUP").await;
    // Wait on /metrics (no token needed): polling with a token not yet valid would, rightly,
    // run into the failed-authentication lockout.
    let reloaded = || async move {
        let req = http::Request::get("/metrics")
            .header("host", admin.to_string())
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .unwrap();
        let body = Conn::open(admin).await.send(req).await.body;
        body.contains("teal_reloads_total{result=\"ok\"} 1")
    };
    assert_eventually!(
        reloaded().await,
        Duration::from_secs(2),
        "SIGHUP did not reload"
    );
    assert_eq!(status("second").await, StatusCode::OK);
    assert_eq!(status("first").await, StatusCode::UNAUTHORIZED);
}

/// A stand-in for a teal on the default admin address 127.0.0.1:9900 that accepts anything, so
/// that a CLI falling back to it would succeed; `None` when the port is taken (the cases that
/// need it are then skipped, so a test never reaches someone else's teal).
async fn fake_default_admin() -> Option<tokio::task::JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:9900").await.ok()?;
    Some(tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut buf = [0u8; 4096];
                let _ = tcp.read(&mut buf).await;
                let body = r#"{"active":"green","previous":"blue","generation":2,"persisted":"config","status":"ok"}"#;
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                let _ = tcp.write_all(format!("{head}{body}").as_bytes()).await;
            });
        }
    }))
}

/// Arguments, environment and what stderr must say.
type Case<'a> = (Vec<&'a str>, Vec<(&'a str, &'a str)>, &'a str);

/// A config named with `-c` or `$TEAL_CONFIG` that cannot be read or parsed is an error (exit 2,
/// the reason on stderr), with or without `--admin`; never a silent fall back to 127.0.0.1:9900.
#[tokio::test]
async fn named_config_that_cannot_be_used_is_an_error() {
    let (_b, _g, running) = two_pools("").await;
    let url = format!("http://{}", running.admin);
    let dir = tempfile::tempdir().unwrap();
    let typo = dir.path().join("prod.tom");
    let typo = typo.to_str().unwrap();
    let broken = dir.path().join("broken.toml");
    std::fs::write(&broken, "active = \"blue\"\n[pools.blue\n").unwrap();
    let broken = broken.to_str().unwrap();
    let fake = fake_default_admin().await;
    if fake.is_none() {
        eprintln!("!!!!! 127.0.0.1:9900 is taken: the cases without --admin are SKIPPED");
    }
    let mut cases: Vec<Case> = vec![
        (
            vec!["switch", "green", "--admin", &url, "-c", typo],
            vec![],
            "prod.tom: cannot read",
        ),
        (
            vec!["status", "--admin", &url],
            vec![("TEAL_CONFIG", typo)],
            "prod.tom: cannot read",
        ),
        (
            vec!["switch", "green", "--admin", &url, "-c", broken],
            vec![],
            "broken.toml:2:",
        ),
    ];
    if fake.is_some() {
        cases.extend([
            (
                vec!["switch", "green", "-c", typo],
                vec![],
                "prod.tom: cannot read",
            ),
            (vec!["status", "-c", broken], vec![], "broken.toml:2:"),
            (
                vec!["health"],
                vec![("TEAL_CONFIG", typo)],
                "prod.tom: cannot read",
            ),
            (
                vec!["switch", "green"],
                vec![("TEAL_CONFIG", broken)],
                "broken.toml:2:",
            ),
        ]);
    }
    for (args, env, want) in &cases {
        let out = teal(args, env).await;
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?} {env:?}: {}{}",
            out.stdout,
            out.stderr
        );
        assert!(
            out.stderr.contains(want),
            "{args:?}: want {want:?} in {}",
            out.stderr
        );
        assert!(out.stdout.is_empty(), "{args:?}: {}", out.stdout);
    }
    assert_eq!(
        running.text("/").await,
        "blue",
        "a broken -c switched anyway"
    );
    // A broken default file (config/teal.toml in the working directory) is an error too.
    std::fs::create_dir(dir.path().join("config")).unwrap();
    let default = dir.path().join("config/teal.toml");
    std::fs::write(&default, "active = 1\n").unwrap();
    if fake.is_some() {
        let out = teal_in(Some(dir.path()), &["switch", "green"], &[]).await;
        assert_eq!(out.status.code(), Some(2), "{}{}", out.stdout, out.stderr);
        assert!(out.stderr.contains("config/teal.toml:1:"), "{}", out.stderr);
    }
    // With --admin, an unusable default file that nobody named does not stop the call.
    let out = teal_in(Some(dir.path()), &["switch", "green", "--admin", &url], &[]).await;
    assert!(out.status.success(), "{}", out.stderr);
    assert_eq!(running.text("/").await, "green");
    // `health --url` reads no config (upstream containers have the image's $TEAL_CONFIG but no
    // config mounted).
    let out = teal(
        &["health", "--url", &format!("{url}/healthz")],
        &[("TEAL_CONFIG", typo)],
    )
    .await;
    assert!(out.status.success(), "{}", out.stderr);
    // No -c, no $TEAL_CONFIG, no default file: the default admin address.
    std::fs::remove_file(&default).unwrap();
    let out = teal_in(Some(dir.path()), &["health"], &[]).await;
    let said = format!("{}{}", out.stdout, out.stderr);
    assert!(said.contains("http://127.0.0.1:9900/healthz"), "{said}");
    drop(fake);
}

/// With `[log] format = "json"`, an error after the config is read (a port already in use) is
/// one JSON log line like every other, and the exit code is 1.
#[tokio::test]
async fn startup_error_is_json_when_the_config_asks_for_json() {
    let taken = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = taken.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let text = config(
        "blue",
        &[("blue", vec!["127.0.0.1:1".parse().unwrap()])],
        "\n[log]\nformat = \"json\"\n",
    )
    .replace(
        "[admin]\nlisten = \"127.0.0.1:0\"",
        &format!("[admin]\nlisten = \"127.0.0.1:{port}\""),
    );
    let path = write_config(dir.path(), &text);
    let out = teal(
        &["run", "-c", path.to_str().unwrap()],
        &[("TEAL_LOG", "info")],
    )
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
    let events: Vec<serde_json::Value> = out
        .stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l:?}")))
        .collect();
    let error = events
        .iter()
        .find(|e| e["level"] == "ERROR")
        .unwrap_or_else(|| panic!("no ERROR event in {}", out.stderr));
    let message = error["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("cannot listen on 127.0.0.1:{port} (admin.listen)")),
        "{message}"
    );
    drop(taken);
}

/// Signals that arrive while teal is still starting (here its proxy port is bound while it waits
/// up to 5 s for an unreachable cluster store) are teal's, not the kernel's default: SIGHUP does
/// not kill it, and SIGTERM makes it finish starting, drain and exit 0, as `docker stop` right
/// after `docker start` expects.
#[tokio::test]
async fn signals_during_startup_do_not_kill() {
    let blue = upstream("blue", "b1").await;
    let green = upstream("green", "g1").await;
    let (proxy, store) = (dead_addr().await, dead_addr().await);
    let text =
        config("blue", &blue_green(&blue, &green), "").replacen(
            "listen = \"127.0.0.1:0\"",
            &format!("listen = \"{proxy}\""),
            1,
        ) + &format!("\n[cluster]\netcd = [\"http://{store}\"]\nprefix = \"/teal/startup\"\n");
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), &text);
    let mut child = spawn_run(&path, "warn", Stdio::null());
    assert_eventually!(
        tokio::net::TcpStream::connect(proxy).await.is_ok(),
        Duration::from_secs(5),
        "teal never bound its proxy port"
    );
    send_signal(&child, "HUP").await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    send_signal(&child, "TERM").await;
    let status = tokio::time::timeout(Duration::from_secs(15), child.wait())
        .await
        .expect("teal exits after SIGTERM")
        .unwrap();
    assert_eq!(status.code(), Some(0), "{status:?}");
}
