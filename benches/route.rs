//! Micro-benchmarks for the pure functions on every request: the routing decision, header
//! rewriting and the allowlist match. Run with `cargo bench --bench route`.

use std::hint::black_box;
use std::net::IpAddr;

use criterion::{criterion_group, criterion_main, Criterion};
use http::{HeaderMap, HeaderValue, Request, Uri};
use teal::state::Snapshot;

/// Blue (active) and green, two servers each, and `allow` appended (a `[preview]` table).
fn snapshot(allow: &str) -> Snapshot {
    teal::testing::snapshot_of(
        &[
            ("blue", &["server1-blue:8080", "server2-blue:8080"]),
            ("green", &["server1-green:8080", "server2-green:8080"]),
        ],
        "blue",
        allow,
    )
}

fn routing(c: &mut Criterion) {
    let snap =
        snapshot("[preview]\nallow = [\"192.168.0.10\", \"10.1.0.0/16\", \"127.0.0.0/8\"]\n");
    let peer: IpAddr = "127.0.0.1".parse().unwrap();
    let active: Uri = "/api/orders?page=2".parse().unwrap();
    let preview: Uri = "/green/api/orders?page=2".parse().unwrap();
    let lookalike: Uri = "/blueberry/pie".parse().unwrap();
    let none = teal::route::Hints::default();
    c.bench_function("route/active", |b| {
        b.iter(|| {
            black_box(teal::route::decide(black_box(&active), peer, none, &snap))
                .decision
                .is_active()
        })
    });
    c.bench_function("route/preview_strip", |b| {
        b.iter(|| {
            black_box(teal::route::decide(black_box(&preview), peer, none, &snap))
                .decision
                .is_active()
        })
    });
    c.bench_function("route/lookalike", |b| {
        b.iter(|| {
            black_box(teal::route::decide(
                black_box(&lookalike),
                peer,
                none,
                &snap,
            ))
            .decision
            .is_active()
        })
    });
    let outsider: IpAddr = "203.0.113.5".parse().unwrap();
    c.bench_function("route/allowlist_miss", |b| {
        b.iter(|| teal::route::preview_allowed(&snap, black_box(outsider)))
    });
}

/// The canary split's share of the routing decision: a 50% canary with the bucket in a cookie
/// among others, and by client address.
fn canary(c: &mut Criterion) {
    let peer: IpAddr = "127.0.0.1".parse().unwrap();
    let uri: Uri = "/api/orders?page=2".parse().unwrap();
    let cookies = teal::route::Hints {
        cookie: Some(b"session=abcdef0123456789; teal_bucket=42; theme=dark"),
        pool: None,
    };
    for sticky in ["cookie", "ip", "none"] {
        let snap = snapshot(&format!(
            "[canary]\npool = \"green\"\npercent = 50\nsticky = \"{sticky}\"\n"
        ));
        c.bench_function(&format!("route/canary_{sticky}"), |b| {
            b.iter(|| {
                black_box(teal::route::decide(black_box(&uri), peer, cookies, &snap))
                    .decision
                    .is_active()
            })
        });
    }
}

fn typical_headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in [
        ("host", "shop.example.com"),
        (
            "user-agent",
            "Mozilla/5.0 (X11; Linux x86_64) Gecko/20100101 Firefox/130.0",
        ),
        ("accept", "text/html,application/xhtml+xml"),
        ("accept-encoding", "gzip, deflate, br"),
        ("accept-language", "ko-KR,ko;q=0.9,en;q=0.8"),
        ("connection", "keep-alive"),
        ("cookie", "session=abcdef0123456789"),
        ("x-forwarded-for", "203.0.113.7"),
    ] {
        h.insert(k, HeaderValue::from_static(v));
    }
    h
}

fn headers(c: &mut Criterion) {
    let base = typical_headers();
    let peer: IpAddr = "10.1.2.3".parse().unwrap();
    c.bench_function("headers/strip_hop_by_hop", |b| {
        b.iter(|| {
            let mut h = base.clone();
            teal::headers::strip_hop_by_hop(&mut h);
            h
        })
    });
    c.bench_function("headers/full_rewrite", |b| {
        b.iter(|| {
            let (mut parts, _) = Request::get("/x").body(()).unwrap().into_parts();
            parts.headers = base.clone();
            let host = teal::headers::original_host(&parts);
            teal::headers::strip_hop_by_hop(&mut parts.headers);
            teal::headers::set_forwarding(&mut parts.headers, peer, host, false);
            teal::headers::ensure_host(&mut parts);
            parts
        })
    });
}

/// teal's own HTTP/1.1 path: a browser's request head and an app server's response head, as
/// bytes, rewritten for the other side.
fn h1(c: &mut Criterion) {
    let snap = snapshot("[preview]\nallow = [\"10.0.0.0/8\"]\n");
    let options = teal::server::ServeOptions::from(teal::server::Timeouts::both(
        std::time::Duration::from_secs(60),
    ));
    let peer: std::net::SocketAddr = "10.1.2.3:50000".parse().unwrap();
    let mut request = String::from("GET /green/cart?item=42 HTTP/1.1\r\n");
    for (k, v) in typical_headers().iter() {
        request.push_str(&format!("{k}: {}\r\n", v.to_str().unwrap()));
    }
    request.push_str("\r\n");
    assert!(teal::h1::rewrite_request(request.as_bytes(), peer, &snap, &options).is_some());
    c.bench_function("h1/request_head", |b| {
        b.iter(|| teal::h1::rewrite_request(black_box(request.as_bytes()), peer, &snap, &options))
    });
    let response = "HTTP/1.1 200 OK\r\nServer: nginx\r\nDate: Sat, 28 Nov 2026 12:00:00 GMT\r\nContent-Type: text/html;charset=UTF-8\r\nContent-Length: 1234\r\nConnection: keep-alive\r\nSet-Cookie: JSESSIONID=0123456789ABCDEF; Path=/; HttpOnly\r\nCache-Control: no-cache\r\n\r\n";
    assert!(teal::h1::rewrite_response(response.as_bytes(), false).is_some());
    c.bench_function("h1/response_head", |b| {
        b.iter(|| teal::h1::rewrite_response(black_box(response.as_bytes()), false))
    });
}

criterion_group!(benches, routing, canary, headers, h1);
criterion_main!(benches);
