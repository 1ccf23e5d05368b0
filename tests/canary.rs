//! The canary split and the preview cookie and header, end to end: real upstreams, a real teal,
//! real clients on teal's own HTTP/1.1 path, on the hyper path (`Connection: x-hyper`) and over
//! h2c; the admin API's `/canary`; and `teal canary` through the real binary.

mod support;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;
use tokio::net::TcpSocket;

use support::{blue_green, config, upstream, Teal};

/// How a test client reaches teal.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Via {
    /// HTTP/1.1 on teal's own path.
    Own,
    /// HTTP/1.1 moved to the hyper path by `Connection: x-hyper`.
    Hyper,
    /// HTTP/2 with prior knowledge.
    H2c,
}

const ALL: [Via; 3] = [Via::Own, Via::Hyper, Via::H2c];

enum Sender {
    H1(http1::SendRequest<Full<Bytes>>),
    H2(http2::SendRequest<Full<Bytes>>),
}

/// One client connection from a chosen 127.0.0.x source.
struct Client {
    via: Via,
    sender: Sender,
    addr: SocketAddr,
}

/// An answer: status, headers and which pool and path the demo upstream saw.
#[derive(Debug)]
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    pool: String,
    /// The path and query the upstream received (`/` for the plain-text root answer).
    path: String,
    /// The request's header fields as the upstream received them (none for `/`).
    upstream_headers: Value,
}

impl Answer {
    /// The `Set-Cookie` values, in order.
    fn set_cookies(&self) -> Vec<String> {
        self.headers
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect()
    }

    /// The value of the cookie `name` set by this response, if one is.
    fn cookie(&self, name: &str) -> Option<String> {
        self.set_cookies().iter().find_map(|c| {
            let pair = c.split(';').next()?;
            let (n, v) = pair.split_once('=')?;
            (n == name).then(|| v.to_string())
        })
    }
}

impl Client {
    async fn open(via: Via, src: &str, addr: SocketAddr) -> Client {
        let socket = TcpSocket::new_v4().unwrap();
        socket
            .bind(SocketAddr::new(src.parse::<IpAddr>().unwrap(), 0))
            .unwrap();
        let io = TokioIo::new(socket.connect(addr).await.unwrap());
        let sender = if via == Via::H2c {
            let (send, conn) = http2::handshake(TokioExecutor::new(), io).await.unwrap();
            tokio::spawn(conn);
            Sender::H2(send)
        } else {
            let (send, conn) = http1::handshake(io).await.unwrap();
            tokio::spawn(conn);
            Sender::H1(send)
        };
        Client { via, sender, addr }
    }

    /// `GET path` with extra header `fields`.
    async fn get(&mut self, path: &str, fields: &[(&str, &str)]) -> Answer {
        let mut req = match self.via {
            Via::H2c => Request::get(format!("http://teal.test{path}")),
            _ => Request::get(path).header("host", self.addr.to_string()),
        };
        if self.via == Via::Hyper {
            req = req.header("connection", "x-hyper");
        }
        for (name, value) in fields {
            req = req.header(*name, *value);
        }
        let req = req.body(Full::new(Bytes::new())).unwrap();
        let res = match &mut self.sender {
            Sender::H1(s) => {
                s.ready().await.unwrap();
                s.send_request(req).await.unwrap()
            }
            Sender::H2(s) => {
                s.ready().await.unwrap();
                s.send_request(req).await.unwrap()
            }
        };
        let (status, headers) = (res.status(), res.headers().clone());
        let body = res.into_body().collect().await.unwrap().to_bytes();
        let body = String::from_utf8_lossy(&body).into_owned();
        let (pool, path, upstream_headers) = match serde_json::from_str::<Value>(&body) {
            Ok(j) => (
                j["pool"].as_str().unwrap_or_default().to_string(),
                j["path"].as_str().unwrap_or_default().to_string(),
                j["headers"].clone(),
            ),
            Err(_) => (body.trim().to_string(), "/".into(), Value::Null),
        };
        Answer {
            status,
            headers,
            pool,
            path,
            upstream_headers,
        }
    }
}

/// Blue active, green, and `extra` TOML (a `[canary]` or `[preview]` table).
async fn teal_with(extra: &str) -> (support::Upstream, support::Upstream, Teal) {
    let blue = upstream("blue", "b1").await;
    let green = upstream("green", "g1").await;
    let teal = Teal::start(&config("blue", &blue_green(&blue, &green), extra)).await;
    (blue, green, teal)
}

fn canary_table(percent: u8, sticky: &str) -> String {
    format!("\n[canary]\npool = \"green\"\npercent = {percent}\nsticky = \"{sticky}\"\n")
}

/// A bounded run: every load loop here finishes well within this.
async fn bounded<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(60), f)
        .await
        .expect("the test's requests finished within 60 s")
}

/// `sticky = "none"` at 25%: of 4,000 requests on one connection, 25% ± 3 reach green, on each
/// transport; the requests are counted on the path they were meant for; no cookie is set.
#[tokio::test]
async fn none_sends_a_quarter_to_green() {
    let (_b, _g, teal) = teal_with(&canary_table(25, "none")).await;
    for via in ALL {
        let before = teal.served().await;
        let mut c = Client::open(via, "127.0.0.1", teal.proxy).await;
        let green = bounded(async {
            let mut green = 0;
            for _ in 0..4000 {
                let a = c.get("/", &[]).await;
                assert_eq!(a.status, StatusCode::OK);
                assert!(a.set_cookies().is_empty(), "{:?}", a.headers);
                green += usize::from(a.pool == "green");
            }
            green
        })
        .await;
        assert!(
            (880..=1120).contains(&green),
            "{via:?}: {green} of 4000 to green"
        );
        let after = teal.served().await;
        let (own, hyper) = (after[0] - before[0], after[1] - before[1]);
        let want = if via == Via::Own {
            (4000, 0)
        } else {
            (0, 4000)
        };
        assert!(
            own.abs_diff(want.0) <= 1 && hyper.abs_diff(want.1) <= 1,
            "{via:?}: {own} own, {hyper} hyper"
        );
    }
}

/// One client's first request without a cookie gets a bucket cookie (`Path=/; HttpOnly;
/// SameSite=Lax`); sent back, it keeps all 50 requests on one pool and is not set again.
/// Clients land on both sides.
async fn cookie_client(teal: &Teal, via: Via, cookie: Option<&str>) -> (String, String) {
    let mut c = Client::open(via, "127.0.0.1", teal.proxy).await;
    let first = match cookie {
        Some(v) => {
            c.get("/", &[("cookie", &format!("a=1; teal_bucket={v}"))])
                .await
        }
        None => c.get("/", &[]).await,
    };
    let bucket = match cookie {
        Some(v) => v.to_string(),
        None => {
            let set = first.set_cookies();
            assert_eq!(set.len(), 1, "{via:?}: {set:?}");
            assert!(
                set[0].ends_with("; Path=/; HttpOnly; SameSite=Lax"),
                "{set:?}"
            );
            first.cookie("teal_bucket").unwrap()
        }
    };
    let n: u8 = bucket.parse().unwrap();
    assert!(n < 100, "{bucket}");
    for _ in 1..50 {
        let a = c
            .get("/", &[("cookie", &format!("x=y; teal_bucket={bucket}"))])
            .await;
        assert_eq!(a.pool, first.pool, "{via:?}: bucket {bucket}");
        assert!(a.set_cookies().is_empty(), "{via:?}: {:?}", a.headers);
    }
    (bucket, first.pool)
}

#[tokio::test]
async fn cookie_keeps_a_client_on_one_pool() {
    let (_b, _g, teal) = teal_with(&canary_table(50, "cookie")).await;
    for via in ALL {
        let pools: Vec<String> = bounded(async {
            let mut pools = Vec::new();
            for _ in 0..20 {
                let (bucket, pool) = cookie_client(&teal, via, None).await;
                let want = if bucket.parse::<u8>().unwrap() < 50 {
                    "green"
                } else {
                    "blue"
                };
                assert_eq!(pool, want, "{via:?}: bucket {bucket}");
                pools.push(pool);
            }
            pools
        })
        .await;
        assert!(pools.iter().any(|p| p == "green") && pools.iter().any(|p| p == "blue"));
    }
}

/// Raising 10% -> 50% keeps every client that was on green there; lowering back to 10% takes back
/// only clients whose bucket is 10 or more.
#[tokio::test]
async fn raising_the_percent_keeps_green_clients() {
    let (_b, _g, teal) = teal_with(&canary_table(10, "cookie")).await;
    for via in ALL {
        let teal = &teal;
        let set = |p: u8| async move {
            let body = format!("{{\"pool\":\"green\",\"percent\":{p}}}");
            let r = teal.admin("POST", "/canary", &body, None).await;
            assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        };
        set(10).await;
        let mut clients = Vec::new();
        bounded(async {
            for _ in 0..60 {
                clients.push(cookie_client(teal, via, None).await);
            }
        })
        .await;
        assert!(clients.iter().any(|(_, p)| p == "green"), "{clients:?}");
        set(50).await;
        let mut green_now = 0;
        for (bucket, before) in &clients {
            let (_, now) = cookie_client(teal, via, Some(bucket)).await;
            if before == "green" {
                assert_eq!(now, "green", "{via:?}: bucket {bucket} left the canary");
            }
            green_now += usize::from(now == "green");
        }
        let green_before = clients.iter().filter(|(_, p)| p == "green").count();
        assert!(green_now > green_before, "{green_before} -> {green_now}");
        set(10).await;
        for (bucket, before) in &clients {
            let (_, now) = cookie_client(teal, via, Some(bucket)).await;
            assert_eq!(&now, before, "{via:?}: bucket {bucket} back at 10%");
        }
    }
}

/// `sticky = "ip"`: each source address keeps one pool, no cookie is set, and the addresses
/// spread over both pools.
#[tokio::test]
async fn ip_keeps_an_address_on_one_pool() {
    let (_b, _g, teal) = teal_with(&canary_table(50, "ip")).await;
    for via in ALL {
        let mut seen = Vec::new();
        bounded(async {
            for i in 2..26 {
                let src = format!("127.0.0.{i}");
                let mut pools = Vec::new();
                // A fresh connection each time: the address, not the connection, decides.
                for _ in 0..5 {
                    let a = Client::open(via, &src, teal.proxy)
                        .await
                        .get("/", &[])
                        .await;
                    assert!(a.set_cookies().is_empty());
                    pools.push(a.pool);
                }
                pools.dedup();
                assert_eq!(pools.len(), 1, "{via:?} {src}: {pools:?}");
                seen.push(pools.remove(0));
            }
        })
        .await;
        assert!(
            seen.contains(&"green".into()) && seen.contains(&"blue".into()),
            "{seen:?}"
        );
    }
}

/// A bucket cookie that is not 0-99 is replaced by a valid one, never an error.
#[tokio::test]
async fn bad_bucket_cookie_is_replaced() {
    let (_b, _g, teal) = teal_with(&canary_table(50, "cookie")).await;
    for via in ALL {
        let mut c = Client::open(via, "127.0.0.1", teal.proxy).await;
        for bad in ["abc", "100", "-1", "", "5 5", "\"x\""] {
            let a = c
                .get("/", &[("cookie", &format!("teal_bucket={bad}"))])
                .await;
            assert_eq!(a.status, StatusCode::OK, "{via:?} {bad:?}");
            let new = a
                .cookie("teal_bucket")
                .unwrap_or_else(|| panic!("{bad:?}: {a:?}"));
            let n: u8 = new.parse().unwrap();
            assert!(n < 100);
            assert_eq!(a.pool, if n < 50 { "green" } else { "blue" });
        }
    }
}

const PREVIEW: &str =
    "\n[preview]\nallow = [\"127.0.0.2\"]\ncookie = \"teal_preview\"\nheader = \"X-Teal-Pool\"\n";

/// The cookie preview: `/green/` from an allowed address sets `teal_preview=green` for the whole
/// site (its `Path=/` is not rewritten under the prefix); sent back, `/login` reaches green with
/// the path untouched. The same cookie from a refused address gets the live pool. The active
/// pool's prefix clears it.
#[tokio::test]
async fn preview_cookie_follows_the_tester() {
    let (_b, _g, teal) = teal_with(PREVIEW).await;
    for via in ALL {
        let mut tester = Client::open(via, "127.0.0.2", teal.proxy).await;
        let a = tester.get("/green/", &[]).await;
        assert_eq!((a.status, a.pool.as_str()), (StatusCode::OK, "green"));
        assert_eq!(
            a.set_cookies(),
            ["teal_preview=green; Path=/; HttpOnly; SameSite=Lax"],
            "{via:?}"
        );
        let cookie = [("cookie", "session=1; teal_preview=green")];
        let a = tester.get("/login?next=%2F", &cookie).await;
        assert_eq!(
            (a.pool.as_str(), a.path.as_str()),
            ("green", "/login?next=%2F"),
            "{via:?}"
        );
        assert!(a.set_cookies().is_empty());
        // What the upstream gets: the cookies as sent (teal's own included).
        assert_eq!(
            a.upstream_headers["cookie"],
            "session=1; teal_preview=green"
        );
        // Again through the prefix: already set, nothing new.
        assert!(tester
            .get("/green/x", &cookie)
            .await
            .set_cookies()
            .is_empty());

        let mut other = Client::open(via, "127.0.0.3", teal.proxy).await;
        let a = other.get("/login", &cookie).await;
        assert_eq!(
            (a.pool.as_str(), a.path.as_str()),
            ("blue", "/login"),
            "{via:?}"
        );
        assert_eq!(
            other.get("/green/", &[]).await.status,
            StatusCode::FORBIDDEN
        );

        let a = tester.get("/blue/", &cookie).await;
        assert_eq!(a.pool, "blue");
        assert_eq!(
            a.set_cookies(),
            ["teal_preview=; Max-Age=0; Path=/; HttpOnly; SameSite=Lax"],
            "{via:?}"
        );
        // An unknown pool in the cookie is ignored.
        let a = tester
            .get("/login", &[("cookie", "teal_preview=red")])
            .await;
        assert_eq!(a.pool, "blue");
    }
}

/// The header: an allowed client's `X-Teal-Pool: green` reaches green at the path as sent; a
/// refused client's goes to the live pool; the field never reaches an upstream; it wins over the
/// cookie, and an unknown pool in it is ignored.
#[tokio::test]
async fn preview_header_picks_the_pool() {
    let (_b, _g, teal) = teal_with(PREVIEW).await;
    for via in ALL {
        let mut tester = Client::open(via, "127.0.0.2", teal.proxy).await;
        let a = tester.get("/login", &[("x-teal-pool", "green")]).await;
        assert_eq!(
            (a.pool.as_str(), a.path.as_str()),
            ("green", "/login"),
            "{via:?}"
        );
        assert!(a.upstream_headers.get("x-teal-pool").is_none(), "{via:?}");
        assert!(a.set_cookies().is_empty());
        let both = [("X-Teal-Pool", "blue"), ("cookie", "teal_preview=green")];
        assert_eq!(tester.get("/login", &both).await.pool, "blue");
        let unknown = [("X-Teal-Pool", "red"), ("cookie", "teal_preview=green")];
        assert_eq!(tester.get("/login", &unknown).await.pool, "green");

        let mut other = Client::open(via, "127.0.0.3", teal.proxy).await;
        let a = other.get("/login", &[("x-teal-pool", "green")]).await;
        assert_eq!(
            (a.pool.as_str(), a.path.as_str()),
            ("blue", "/login"),
            "{via:?}"
        );
        assert!(a.upstream_headers.get("x-teal-pool").is_none(), "{via:?}");
    }
}

/// teal's cookie is a field of its own beside the upstream's `Set-Cookie` fields, which keep
/// their values (their paths under the preview prefix, as before).
#[tokio::test]
async fn upstream_cookies_are_kept() {
    let blue = upstream("blue", "b1").await;
    let green = support::raw::scripted(|_| {
        vec![support::raw::write(
            "HTTP/1.1 200 OK\r\nSet-Cookie: app=1; Path=/\r\nSet-Cookie: b=2\r\nContent-Length: 2\r\n\r\nok",
        )]
    })
    .await;
    let pools = vec![("blue", vec![blue.addr]), ("green", vec![green.addr])];
    let teal = Teal::start(&config("blue", &pools, PREVIEW)).await;
    for via in ALL {
        let mut tester = Client::open(via, "127.0.0.2", teal.proxy).await;
        let a = tester.get("/green/x", &[]).await;
        assert_eq!(
            a.set_cookies(),
            [
                "app=1; Path=/green",
                "b=2",
                "teal_preview=green; Path=/; HttpOnly; SameSite=Lax"
            ],
            "{via:?}"
        );
    }
}

/// Admin: set, show, end; refusals with the reason and status; the file keeps the table.
#[tokio::test]
async fn admin_canary() {
    let (_b, _g, teal) = teal_with("").await;
    let post = |body: &'static str| teal.admin("POST", "/canary", body, None);
    let r = post("{\"pool\":\"green\",\"percent\":25,\"sticky\":\"ip\"}").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let j = r.json();
    assert_eq!(
        j["canary"],
        serde_json::json!({"pool":"green","percent":25,"sticky":"ip"})
    );
    assert_eq!(j["persisted"], "config");
    let file = teal.file();
    assert!(file.starts_with("# test config\n"), "{file}");
    assert!(
        file.contains("[canary]") && file.contains("percent = 25") && file.contains("\"ip\""),
        "{file}"
    );
    let status = teal.admin("GET", "/status", "", None).await.json();
    assert_eq!(status["canary"]["pool"], "green");
    let metrics = teal.admin("GET", "/metrics", "", None).await.body;
    assert!(
        metrics.contains("teal_canary_percent{pool=\"green\"} 25"),
        "{metrics}"
    );
    assert!(
        metrics.contains("teal_canary_percent{pool=\"blue\"} 0"),
        "{metrics}"
    );
    // Without `sticky`, the split keeps its stickiness.
    let r = post("{\"pool\":\"green\",\"percent\":40}").await;
    assert_eq!(r.json()["canary"]["sticky"], "ip");

    for (body, reason) in [
        ("{\"pool\":\"red\",\"percent\":5}", "no pool named \"red\""),
        ("{\"pool\":\"blue\",\"percent\":5}", "is the active pool"),
        ("{\"pool\":\"green\",\"percent\":101}", "percent 101"),
        ("{\"pool\":\"green\",\"percent\":-1}", "percent -1"),
        ("{\"pool\":\"green\"}", "body must be JSON"),
        ("{\"percent\":5}", "name the canary pool"),
        (
            "{\"pool\":\"green\",\"percent\":5,\"sticky\":\"session\"}",
            "body must be JSON",
        ),
        ("not json", "body must be JSON"),
    ] {
        let r = post(body).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}: {}", r.body);
        let error = r.json()["error"].as_str().unwrap().to_string();
        assert!(error.contains(reason), "{body}: {error}");
    }
    // Refusals changed nothing.
    assert_eq!(
        teal.admin("GET", "/canary", "", None).await.json()["canary"]["percent"],
        40
    );

    let r = teal.admin("DELETE", "/canary", "", None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.json()["canary"], Value::Null);
    assert!(!teal.file().contains("[canary]"), "{}", teal.file());
    let metrics = teal.admin("GET", "/metrics", "", None).await.body;
    assert!(
        metrics.contains("teal_canary_percent{pool=\"green\"} 0"),
        "{metrics}"
    );
    post("{\"pool\":\"green\",\"percent\":5}").await;
    let r = post("{\"percent\":0}").await;
    assert_eq!(
        (r.status, r.json()["canary"].clone()),
        (StatusCode::OK, Value::Null)
    );
    let r = teal.admin("PUT", "/canary", "{}", None).await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
}

/// A pool with no healthy server is refused with 409 and its servers, unless forced.
#[tokio::test]
async fn unhealthy_canary_needs_force() {
    let blue = upstream("blue", "b1").await;
    let dead = support::dead_addr().await;
    let pools = vec![("blue", vec![blue.addr]), ("green", vec![dead])];
    let text = config("blue", &pools, "") + "\n[pools.green.health]\ninterval = \"1s\"\n";
    let teal = Teal::start(&text).await;
    let r = teal
        .admin(
            "POST",
            "/canary",
            "{\"pool\":\"green\",\"percent\":10}",
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
    let j = r.json();
    assert!(
        j["error"].as_str().unwrap().contains("no healthy server"),
        "{j}"
    );
    assert!(j["servers"][dead.to_string()].is_object(), "{j}");
    assert!(!teal.file().contains("[canary]"));
    let r = teal
        .admin(
            "POST",
            "/canary",
            "{\"pool\":\"green\",\"percent\":10,\"force\":true}",
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
}

/// `teal canary` and `teal status` through the real binary against a running teal.
#[tokio::test]
async fn canary_cli() {
    let blue = upstream("blue", "b1").await;
    let green = upstream("green", "g1").await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("teal.toml");
    std::fs::write(&path, config("blue", &blue_green(&blue, &green), "")).unwrap();
    let (_child, proxy, admin) = support::run_binary(&path).await;
    let admin = format!("http://{admin}");
    let teal_cli = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_teal"))
            .args(args)
            .args(["--admin", &admin])
            .env_remove("TEAL_ADMIN_TOKEN")
            .output()
            .unwrap();
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        (out.status.code(), text(&out.stdout), text(&out.stderr))
    };
    let (code, out, err) = teal_cli(&["canary", "green", "100", "--sticky", "none"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("canary: green 100% (sticky none)"), "{out}");
    assert!(out.contains("saved in the config file"), "{out}");
    let mut c = Client::open(Via::Own, "127.0.0.1", proxy).await;
    assert_eq!(c.get("/", &[]).await.pool, "green");
    let (code, out, _) = teal_cli(&["status"]);
    assert_eq!(code, Some(0));
    assert!(out.contains("canary: green 100% (sticky none)"), "{out}");

    let (code, out, err) = teal_cli(&["canary", "blue", "10"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        err.contains("canary refused (400)") && err.contains("active pool"),
        "{err}"
    );
    let (code, _, err) = teal_cli(&["canary", "green", "101"]);
    assert_eq!(code, Some(2), "clap refuses it: {err}");
    let (code, _, err) = teal_cli(&["canary", "green"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("give the percent"), "{err}");

    let (code, out, err) = teal_cli(&["canary", "off"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("canary: none"), "{out}");
    assert_eq!(c.get("/", &[]).await.pool, "blue");
    assert!(!std::fs::read_to_string(&path).unwrap().contains("[canary]"));
    let (_, out, _) = teal_cli(&["status"]);
    assert!(
        out.starts_with("active: blue") && !out.contains("canary"),
        "{out}"
    );
}

/// Behind a trusted proxy, the address it forwards for decides: the `ip` bucket (stable per
/// forwarded address, spread over both pools) and `preview.allow` for the header.
#[tokio::test]
async fn forwarded_client_address_decides() {
    let extra = format!(
        "{}\n[preview]\nallow = [\"10.9.9.9\"]\nheader = \"X-Teal-Pool\"\n",
        canary_table(50, "ip")
    );
    let blue = upstream("blue", "b1").await;
    let green = upstream("green", "g1").await;
    let text = support::with_proxy(
        &config("blue", &blue_green(&blue, &green), &extra),
        "trusted_proxies = [\"127.0.0.1/32\"]",
    );
    let teal = Teal::start(&text).await;
    for via in ALL {
        let mut c = Client::open(via, "127.0.0.1", teal.proxy).await;
        let mut seen = Vec::new();
        for i in 1..21 {
            let xff = format!("10.0.0.{i}");
            let mut pools = Vec::new();
            for _ in 0..3 {
                pools.push(c.get("/", &[("x-forwarded-for", &xff)]).await.pool);
            }
            pools.dedup();
            assert_eq!(pools.len(), 1, "{via:?} {xff}: {pools:?}");
            seen.push(pools.remove(0));
        }
        assert!(
            seen.contains(&"green".into()) && seen.contains(&"blue".into()),
            "{seen:?}"
        );
        // Each forwarded address asks for the pool its bucket does not give it: only the
        // allowed one gets it; a pool that does not exist is ignored.
        for (xff, allowed) in [("10.9.9.9", true), ("10.9.9.8", false)] {
            let own = c.get("/", &[("x-forwarded-for", xff)]).await.pool;
            let other = if own == "blue" { "green" } else { "blue" };
            for _ in 0..5 {
                let ask = [("x-forwarded-for", xff), ("x-teal-pool", other)];
                let a = c.get("/login", &ask).await;
                let want = if allowed { other } else { own.as_str() };
                assert_eq!(a.pool, want, "{via:?} {xff}");
                let red = [("x-forwarded-for", xff), ("x-teal-pool", "red")];
                assert_eq!(c.get("/login", &red).await.pool, own, "{via:?} {xff}");
            }
        }
    }
}
