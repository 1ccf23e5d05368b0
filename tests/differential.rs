//! Differential tests of teal's two HTTP/1.1 request paths (issue 14): its own (`src/h1/`, heads
//! written as bytes) and the hyper path (`src/proxy.rs`, heads on `http::HeaderMap`). One teal,
//! one scripted upstream, real sockets. Every generated request head is sent twice: as it is
//! (teal's own path when the request qualifies) and with an extra `Connection: x-hyper` (any
//! `Connection` token but `keep-alive` and `close` moves a request to the hyper path); every
//! generated response head is the upstream's answer to a request sent on each path.
//! `teal_requests_total{path}` says which path served each send, and the test asserts it.
//!
//! What must agree:
//! - **Requests**: what the upstream received: the request line exactly; the header fields as a
//!   multiset (names case-insensitive, since hyper lowercases them; values exact; the order of
//!   different names free, the order of one name's fields kept). An `X-Request-Id` teal made is
//!   compared as "one, 32 hex digits" (the values differ), a usable one the client sent as
//!   itself. Or, when teal refuses the request, the same status line on both paths and nothing
//!   upstream.
//! - **Responses**: what the client received: the status line; the end-to-end header fields as
//!   above, `Date` by presence only (its value is the clock's); and the body as the client
//!   decodes it. The framing fields (`Content-Length`, `Transfer-Encoding`) are not compared:
//!   the own path relays the upstream's framing as it is, while hyper decodes the body and its
//!   server frames it its own way (chunked where the upstream said chunked or nothing, a length
//!   where it knows one). Both must leave them out of a 204 and a 304.
//!
//! Inherent differences, compared modulo: header-name case (above); the hyper path serves every
//! request the own path hands over, so a refusal is always the hyper path's (both sends of a
//! refused request are counted `hyper`).

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use support::raw::*;
use support::*;
use tokio::runtime::Runtime;

/// Sent with a request, this moves it to the hyper path. It names a field `x-hyper` that is then
/// dropped, so none is generated.
const VIA_HYPER: &str = "Connection: x-hyper\r\n";

/// What the upstream answers next: `None` for a plain 200 (no body to a HEAD).
type Answer = Arc<Mutex<Option<Vec<Step>>>>;

/// teal (one worker) in front of the scripted upstream, as the active pool `blue` and the
/// preview pool `green`.
struct Bench {
    teal: Teal,
    upstream: Scripted,
    answer: Answer,
}

impl Bench {
    async fn start() -> Bench {
        let answer: Answer = Arc::default();
        let next = answer.clone();
        let upstream = scripted(move |req| {
            next.lock().unwrap().clone().unwrap_or_else(|| {
                let body = if req.method == "HEAD" { "" } else { "ok" };
                vec![write(format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{body}"
                ))]
            })
        })
        .await;
        let pools = [
            ("blue", vec![upstream.addr]),
            ("green", vec![upstream.addr]),
        ];
        let text = with_proxy(&config("blue", &pools, ""), "workers = 1");
        let teal = Teal::start(&text).await;
        Bench {
            teal,
            upstream,
            answer,
        }
    }
}

/// A client connection per path, kept alive between sends while it may be.
#[derive(Default)]
struct Clients {
    own: Option<RawClient>,
    hyper: Option<RawClient>,
}

/// What one send came to.
struct Outcome {
    /// The response head the client read, or "closed" if the connection closed first.
    head: String,
    body: Vec<u8>,
    /// What the upstream received, if anything.
    forwarded: Option<Received>,
    /// The path `teal_requests_total` counted it under (`"none"` if neither).
    path: &'static str,
}

impl std::fmt::Debug for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let upstream = self
            .forwarded
            .as_ref()
            .map_or("nothing", |r| r.head.trim_end());
        write!(
            f,
            "counted {}; the client got\n{}\n{:?}\nthe upstream got\n{upstream}",
            self.path,
            self.head.trim_end(),
            String::from_utf8_lossy(&self.body),
        )
    }
}

impl Outcome {
    fn status_line(&self) -> &str {
        self.head.split("\r\n").next().unwrap_or("")
    }
}

/// Sends `head` on `slot`'s connection (a new one if there is none) and sees where it went.
/// The connection is kept for the next send unless it closes or, on the own path's slot, the
/// request was handed to hyper (a handed-over connection stays with hyper).
async fn send(
    bench: &Bench,
    slot: &mut Option<RawClient>,
    head: &str,
    head_request: bool,
    own_slot: bool,
) -> Outcome {
    let before = (bench.upstream.received().len(), bench.teal.served().await);
    let mut client = match slot.take() {
        Some(c) => c,
        None => RawClient::connect(bench.teal.proxy).await,
    };
    client.send(head).await;
    let response = client.response(head_request).await;
    let path = bench
        .teal
        .path_since(before.1, Duration::from_millis(500))
        .await;
    let received = bench.upstream.received();
    assert!(received.len() <= before.0 + 1, "one request, one forward");
    let closing = |h: &str| fields_of(h).contains(&("connection".into(), "close".into()));
    let (head_read, body) = match response {
        Some(r) => {
            if !closing(head) && !closing(&r.head) && (path == "own" || !own_slot) {
                *slot = Some(client);
            }
            (r.head, r.body)
        }
        None => ("closed".to_string(), Vec::new()),
    };
    Outcome {
        head: head_read,
        body,
        forwarded: received.get(before.0).cloned(),
        path,
    }
}

/// The header fields of a head (its first line left out): names lowercased, values trimmed, in
/// name order, the order of one name's fields kept.
fn fields_of(head: &str) -> Vec<(String, String)> {
    let mut fields: Vec<(String, String)> = head
        .split("\r\n")
        .skip(1)
        .filter_map(|line| {
            let (name, value) = line.split_once(':')?;
            Some((name.to_ascii_lowercase(), value.trim().to_string()))
        })
        .collect();
    fields.sort_by(|a, b| a.0.cmp(&b.0));
    fields
}

/// What one side has that the other has not, for a failure message.
fn difference(own: &[(String, String)], hyper: &[(String, String)]) -> String {
    let missing = |a: &[(String, String)], b: &[(String, String)]| {
        let mut rest = b.to_vec();
        a.iter()
            .filter(|f| match rest.iter().position(|r| r == *f) {
                Some(at) => {
                    rest.remove(at);
                    false
                }
                None => true,
            })
            .map(|(n, v)| format!("{n}: {v}"))
            .collect::<Vec<_>>()
    };
    format!(
        "only on the own path: {:?}\n  only on the hyper path: {:?}",
        missing(own, hyper),
        missing(hyper, own)
    )
}

// ---------------------------------------------------------------------------------------------
// Requests

/// A generated request head.
#[derive(Debug, Clone)]
struct Req {
    method: &'static str,
    target: String,
    /// The `Host` fields, in order (none, one, or two).
    hosts: Vec<&'static str>,
    /// The other fields, names spelled as sent.
    fields: Vec<(String, String)>,
}

impl Req {
    fn head(&self, extra: &str) -> String {
        let mut head = format!("{} {} HTTP/1.1\r\n", self.method, self.target);
        for host in &self.hosts {
            head.push_str(&format!("Host: {host}\r\n"));
        }
        for (name, value) in &self.fields {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str(extra);
        head.push_str("\r\n");
        head
    }

    fn values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        let named = move |(n, _): &&(String, String)| n.eq_ignore_ascii_case(name);
        self.fields.iter().filter(named).map(|(_, v)| v.as_str())
    }

    /// Whether teal's own path takes it as it is (README: "How", and `h1::request`): one valid
    /// Host, at most one Cookie and one Content-Length, no Upgrade, no Connection token but
    /// keep-alive and close.
    fn plain(&self) -> bool {
        let host_ok = matches!(&self.hosts[..], [h] if teal::headers::valid_host(h.as_bytes()));
        let tokens_ok = self.values("connection").all(|v| {
            v.split(',')
                .map(str::trim)
                .all(|t| t.is_empty() || ["keep-alive", "close"].contains(&&*t.to_lowercase()))
        });
        host_ok
            && tokens_ok
            && self.values("cookie").count() <= 1
            && self.values("content-length").count() <= 1
            && self.values("upgrade").count() == 0
    }

    /// The client's `X-Request-Id`, if teal keeps it (exactly one, 1 to 128 visible ASCII).
    fn given_id(&self) -> Option<&str> {
        let ids: Vec<&str> = self.values("x-request-id").collect();
        match ids[..] {
            [id] if (1..=128).contains(&id.len())
                && id.bytes().all(|b| (0x21..=0x7e).contains(&b)) =>
            {
                Some(id)
            }
            _ => None,
        }
    }
}

/// Path segments, sometimes behind a preview prefix, sometimes with a query.
fn target() -> impl Strategy<Value = String> {
    let prefix = prop_oneof![3 => Just(""), 1 => Just("/green"), 1 => Just("/blue")];
    let segments = proptest::collection::vec("[a-z0-9._~-]{1,6}", 0..3);
    let query = proptest::option::of("[a-z0-9=&%]{0,10}");
    (prefix, segments, query).prop_map(|(prefix, segments, query)| {
        let mut target = format!("{prefix}/{}", segments.join("/"));
        if let Some(q) = query {
            target.push('?');
            target.push_str(&q);
        }
        target
    })
}

fn hosts() -> impl Strategy<Value = Vec<&'static str>> {
    let valid = prop_oneof![
        Just("example.test"),
        Just("Shop.Example:8080"),
        Just("127.0.0.1"),
        Just("[::1]:80"),
    ];
    let invalid = prop_oneof![
        Just(""),
        Just("user@example.test"),
        Just("a/b"),
        Just("example.test:99999"),
        Just("bad host"),
    ];
    prop_oneof![
        6 => valid.clone().prop_map(|h| vec![h]),
        1 => invalid.prop_map(|h| vec![h]),
        1 => Just(vec![]),
        1 => (valid.clone(), valid).prop_map(|(a, b)| vec![a, b]),
    ]
}

/// A field name spelled as given, lowercased or uppercased.
fn spelled(name: &'static str) -> impl Strategy<Value = String> {
    prop_oneof![
        2 => Just(name.to_string()),
        1 => Just(name.to_lowercase()),
        1 => Just(name.to_uppercase()),
    ]
}

fn request_field() -> impl Strategy<Value = (String, String)> {
    let pairs: &[(&'static str, &'static str)] = &[
        ("Connection", "keep-alive"),
        ("Connection", "close"),
        ("Connection", "Keep-Alive, X-Trace"),
        ("Connection", "te, Cookie"),
        ("Connection", "Host, X-Forwarded-For"),
        ("Keep-Alive", "timeout=5"),
        ("Proxy-Connection", "keep-alive"),
        ("TE", "trailers"),
        ("TE", "gzip"),
        ("TE", "gzip, Trailers"),
        ("Trailer", "X-Checksum"),
        ("Proxy-Authorization", "Basic YTpi"),
        ("Upgrade", "h2c"),
        ("X-Forwarded-For", "203.0.113.7"),
        ("X-Forwarded-For", "198.51.100.1, 10.0.0.1"),
        ("X-Forwarded-For", "junk"),
        ("X-Forwarded-For", ""),
        ("X-Forwarded-Proto", "https"),
        ("X-Forwarded-Host", "evil.test"),
        ("X-Request-Id", "abc-123"),
        ("X-Request-Id", "has space"),
        ("Cookie", "a=1"),
        ("Cookie", "b=2; c=3"),
        ("User-Agent", "test/1.0"),
        ("User-Agent", "Mozilla/5.0 (X11; caf\u{e9})"),
        ("Accept", "*/*"),
        ("X-Trace", "1"),
        ("X-Custom", "one"),
        ("X-Custom", "two"),
        ("X-Empty", ""),
        ("X-Odd", "a  b\tc \"q,\\\"x\\\"\""),
        ("Content-Length", "0"),
        ("Referer", "http://example.test/from?x=1"),
    ];
    proptest::sample::select(pairs)
        .prop_flat_map(|(name, value)| (spelled(name), Just(value.to_string())))
}

fn request() -> impl Strategy<Value = Req> {
    let method = prop_oneof![
        4 => Just("GET"),
        1 => Just("HEAD"),
        1 => Just("DELETE"),
        1 => Just("OPTIONS"),
        1 => Just("POST"),
    ];
    let fields = proptest::collection::vec(request_field(), 0..=8);
    (method, target(), hosts(), fields).prop_map(|(method, target, hosts, fields)| Req {
        method,
        target,
        hosts,
        fields,
    })
}

/// The upstream's head with its `X-Request-Id` checked (the client's if it gave a usable one,
/// else one of 32 hex digits) and replaced by a placeholder, so both paths' heads compare.
fn forwarded_fields(head: &str, given: Option<&str>) -> Result<Vec<(String, String)>, String> {
    let mut fields = fields_of(head);
    let ids: Vec<&mut (String, String)> = fields
        .iter_mut()
        .filter(|(n, _)| n == "x-request-id")
        .collect();
    let [id] = &mut ids.into_iter().collect::<Vec<_>>()[..] else {
        return Err(format!("not one x-request-id in\n{head}"));
    };
    let ok = match given {
        Some(given) => id.1 == given,
        None => id.1.len() == 32 && id.1.bytes().all(|b| b.is_ascii_hexdigit()),
    };
    if !ok {
        return Err(format!("x-request-id {:?}, the client's {given:?}", id.1));
    }
    id.1 = "<id>".into();
    Ok(fields)
}

/// Both sends of `req` came to the same thing.
fn same_request(req: &Req, own: &Outcome, hyper: &Outcome) -> Result<(), TestCaseError> {
    let case = format!(
        "\n--- request:\n{}--- sent as is: {own:?}\n--- sent with {VIA_HYPER:?}: {hyper:?}",
        req.head("")
    );
    let expected = if req.plain() { "own" } else { "hyper" };
    prop_assert_eq!(own.path, expected, "the as-is send's path; {}", case);
    prop_assert_eq!(hyper.path, "hyper", "{}", case);
    prop_assert_eq!(own.status_line(), hyper.status_line(), "{}", case);
    match (&own.forwarded, &hyper.forwarded) {
        (None, None) => {
            prop_assert!(!own.status_line().contains(" 200 "), "refused: {}", case);
        }
        (Some(a), Some(b)) => {
            let line = |r: &Received| r.head.split("\r\n").next().unwrap_or("").to_string();
            prop_assert_eq!(line(a), line(b), "request line; {}", case);
            let given = req.given_id();
            let a = forwarded_fields(&a.head, given).map_err(TestCaseError::fail)?;
            let b = forwarded_fields(&b.head, given).map_err(TestCaseError::fail)?;
            prop_assert!(
                a == b,
                "upstream heads differ:\n  {}\n{}",
                difference(&a, &b),
                case
            );
        }
        _ => prop_assert!(false, "only one path forwarded: {}", case),
    }
    Ok(())
}

async fn requests_alike(
    bench: &Bench,
    clients: &mut Clients,
    reqs: &[Req],
) -> Result<(), TestCaseError> {
    *bench.answer.lock().unwrap() = None;
    for req in reqs {
        let head_request = req.method == "HEAD";
        let own = send(bench, &mut clients.own, &req.head(""), head_request, true).await;
        let hyper = send(
            bench,
            &mut clients.hyper,
            &req.head(VIA_HYPER),
            head_request,
            false,
        )
        .await;
        same_request(req, &own, &hyper)?;
    }
    Ok(())
}

/// A runtime and a teal for a property run; cases run one after another on it.
fn run<S: Strategy>(
    cases: u32,
    strategy: S,
    check: impl Fn(&Runtime, &Bench, &mut Clients, S::Value) -> Result<(), TestCaseError>,
) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let bench = rt.block_on(Bench::start());
    // PROPTEST_CASES=2000 for a longer hunt.
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(cases);
    let config = Config {
        cases,
        max_shrink_iters: 200,
        failure_persistence: None,
        ..Config::default()
    };
    let clients = Mutex::new(Clients::default());
    let result = TestRunner::new(config).run(&strategy, |value| {
        // A fresh pair of connections per case, so a shrunk case runs as it will be replayed.
        let mut clients = clients.lock().unwrap();
        *clients = Clients::default();
        check(&rt, &bench, &mut clients, value)
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

/// Generated request heads, 1 to 3 per kept-alive connection pair: the upstream receives the
/// same from both paths, or both refuse alike.
#[test]
fn requests_reach_the_upstream_alike_on_both_paths() {
    run(
        64,
        proptest::collection::vec(request(), 1..=3),
        |rt, bench, clients, reqs| rt.block_on(requests_alike(bench, clients, &reqs)),
    );
}

// ---------------------------------------------------------------------------------------------
// Responses

/// How the generated response's body is framed.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Framing {
    Length,
    Chunked,
    /// Neither: the body ends when the upstream closes.
    UntilClose,
}

/// A generated response head, and the request target it answers.
#[derive(Debug, Clone)]
struct Resp {
    target: String,
    status: &'static str,
    fields: Vec<(String, String)>,
    framing: Framing,
}

impl Resp {
    const BODY: &'static str = "hello world";

    fn no_content(&self) -> bool {
        self.status.starts_with("204") || self.status.starts_with("304")
    }

    /// The upstream's answer: head, body by its framing, and a close where the head says so.
    fn steps(&self) -> Vec<Step> {
        let (bytes, closes) = self.upstream_bytes();
        let mut steps = vec![write(bytes)];
        if closes {
            steps.push(Step::Close);
        }
        steps
    }

    /// What the upstream writes, and whether it closes the connection after it.
    fn upstream_bytes(&self) -> (String, bool) {
        let mut bytes = format!("HTTP/1.1 {}\r\n", self.status);
        for (name, value) in &self.fields {
            bytes.push_str(&format!("{name}: {value}\r\n"));
        }
        let body = if self.no_content() { "" } else { Self::BODY };
        match self.framing {
            Framing::Length => {
                bytes.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()))
            }
            Framing::Chunked if body.is_empty() => {
                bytes.push_str("Transfer-Encoding: chunked\r\n\r\n")
            }
            Framing::Chunked => bytes.push_str(
                "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
            ),
            Framing::UntilClose => bytes.push_str(&format!("\r\n{body}")),
        }
        let closes = self.framing == Framing::UntilClose
            || self.fields.iter().any(|(n, v)| {
                n.eq_ignore_ascii_case("connection") && v.to_lowercase().contains("close")
            });
        (bytes, closes)
    }
}

fn response_field() -> impl Strategy<Value = (String, String)> {
    let pairs: &[(&'static str, &'static str)] = &[
        ("Connection", "close"),
        ("Connection", "keep-alive"),
        ("Connection", "X-Drop"),
        ("Connection", "Date"),
        ("Connection", "Set-Cookie, x-drop"),
        ("Connection", "Host, X-Forwarded-For, Location"),
        ("X-Drop", "1"),
        ("Keep-Alive", "timeout=5, max=100"),
        ("Proxy-Connection", "keep-alive"),
        ("TE", "trailers"),
        ("Trailer", "X-Checksum"),
        ("Upgrade", "h2c"),
        ("Proxy-Authenticate", "Basic realm=\"x\""),
        ("Proxy-Authorization", "Basic YTpi"),
        ("Set-Cookie", "sid=1; Path=/; HttpOnly"),
        ("Set-Cookie", "theme=dark; path=/app"),
        ("Location", "/next"),
        ("Location", "http://example.test/abs?x=1"),
        ("Date", "Mon, 01 Jan 2024 00:00:00 GMT"),
        ("Content-Type", "text/plain; charset=utf-8"),
        ("Cache-Control", "no-cache"),
        ("X-Forwarded-For", "10.1.1.1"),
        ("Host", "upstream.test"),
        ("Vary", "Accept-Encoding"),
        ("X-Odd", "a  b\tc caf\u{e9}"),
        ("X-Empty", ""),
    ];
    proptest::sample::select(pairs)
        .prop_flat_map(|(name, value)| (spelled(name), Just(value.to_string())))
}

fn response() -> impl Strategy<Value = Resp> {
    let status = proptest::sample::select(
        &[
            "200 OK",
            "200 Fine",
            "201 Created",
            "204 No Content",
            "301 Moved Permanently",
            "304 Not Modified",
            "404 Not Found",
            "500 Internal Server Error",
        ][..],
    );
    let framing = prop_oneof![
        2 => Just(Framing::Length),
        2 => Just(Framing::Chunked),
        1 => Just(Framing::UntilClose),
    ];
    let fields = proptest::collection::vec(response_field(), 0..=8);
    (target(), status, fields, framing).prop_map(|(target, status, fields, framing)| Resp {
        target,
        status,
        fields,
        framing,
    })
}

/// The client's fields both paths must agree on: the framing ones left out, `Date`'s value.
fn end_to_end(head: &str) -> Vec<(String, String)> {
    fields_of(head)
        .into_iter()
        .filter(|(n, _)| n != "content-length" && n != "transfer-encoding")
        .map(|(n, v)| {
            if n == "date" {
                (n, "<date>".into())
            } else {
                (n, v)
            }
        })
        .collect()
}

/// Both clients got the same response to `resp`.
fn same_response(resp: &Resp, own: &Outcome, hyper: &Outcome) -> Result<(), TestCaseError> {
    let (answer, closes) = resp.upstream_bytes();
    let then = if closes { "\n(and closed)" } else { "" };
    let case = format!(
        "\n--- upstream answered GET {}:\n{answer}{then}\n--- sent as is: {own:?}\n--- sent with {VIA_HYPER:?}: {hyper:?}",
        resp.target,
    );
    prop_assert_eq!(own.path, "own", "{}", case);
    prop_assert_eq!(hyper.path, "hyper", "{}", case);
    prop_assert_eq!(own.status_line(), hyper.status_line(), "{}", case);
    let (a, b) = (end_to_end(&own.head), end_to_end(&hyper.head));
    prop_assert!(
        a == b,
        "client heads differ:\n  {}\n{}",
        difference(&a, &b),
        case
    );
    prop_assert_eq!(&own.body, &hyper.body, "body; {}", case);
    if resp.no_content() {
        for outcome in [own, hyper] {
            let framed = fields_of(&outcome.head)
                .iter()
                .any(|(n, _)| n == "content-length" || n == "transfer-encoding");
            prop_assert!(!framed, "framing fields on a 204/304; {}", case);
        }
    }
    Ok(())
}

async fn responses_alike(
    bench: &Bench,
    clients: &mut Clients,
    resps: &[Resp],
) -> Result<(), TestCaseError> {
    for resp in resps {
        *bench.answer.lock().unwrap() = Some(resp.steps());
        let head = format!("GET {} HTTP/1.1\r\nHost: example.test\r\n", resp.target);
        let own = send(bench, &mut clients.own, &format!("{head}\r\n"), false, true).await;
        let via_hyper = format!("{head}{VIA_HYPER}\r\n");
        let hyper = send(bench, &mut clients.hyper, &via_hyper, false, false).await;
        same_response(resp, &own, &hyper)?;
    }
    Ok(())
}

/// Generated response heads, 1 to 3 per kept-alive connection pair: the client receives the
/// same from both paths.
#[test]
fn responses_reach_the_client_alike_on_both_paths() {
    run(
        48,
        proptest::collection::vec(response(), 1..=3),
        |rt, bench, clients, resps| rt.block_on(responses_alike(bench, clients, &resps)),
    );
}

/// Runs `check` once on a new bench, for the regression cases below.
fn once(check: impl AsyncFnOnce(&Bench, &mut Clients) -> Result<(), TestCaseError>) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let bench = Bench::start().await;
        if let Err(e) = check(&bench, &mut Clients::default()).await {
            panic!("{e}");
        }
    });
}

/// A response field of the given name and value, spelled as given.
fn field(name: &str, value: &str) -> (String, String) {
    (name.to_string(), value.to_string())
}

/// A plain `200` to `GET /` with `fields`, framed by Content-Length.
fn plain_200(fields: &[(&str, &str)]) -> Resp {
    Resp {
        target: "/".into(),
        status: "200 OK",
        fields: fields.iter().map(|(n, v)| field(n, v)).collect(),
        framing: Framing::Length,
    }
}

/// Found by `responses_reach_the_client_alike_on_both_paths`: a response's `TE: trailers` went
/// on to the client on the hyper path (`strip_hop_by_hop` keeps it, rightly for a request), and
/// not on the own path. TE is a request field (RFC 9110 §10.1.4) and hop-by-hop; in a response
/// it means nothing, and both paths now drop it.
#[test]
fn a_response_te_goes_no_further() {
    once(async |bench, clients| {
        responses_alike(bench, clients, &[plain_200(&[("TE", "trailers")])]).await
    });
}

/// Found by `responses_reach_the_client_alike_on_both_paths`: a `Date` the upstream listed in
/// `Connection` was dropped by both paths, but only the hyper path (its server) then added one;
/// the own path counted the dropped field as the response's Date and sent none. A forwarded
/// response carries a Date (RFC 9110 §6.6.1): both paths now add it.
#[test]
fn a_date_listed_in_connection_is_replaced() {
    let fields = [
        ("Connection", "Date"),
        ("Date", "Mon, 01 Jan 2024 00:00:00 GMT"),
    ];
    once(async |bench, clients| responses_alike(bench, clients, &[plain_200(&fields)]).await);
}
