//! The access line by itself (issue 19: under 1 µs): capturing a request's fields when it
//! arrives ([`Logged::new`]) and writing the line when it ends, text and JSON, into memory and
//! to a file. Run with `cargo bench --bench access_line`; the per-request cost inside the proxy,
//! in instructions with and without the log, is `LOG=1 MODE=instructions benches/load/run.sh`.

use std::hint::black_box;
use std::io::Write;
use std::time::SystemTime;

use criterion::{criterion_group, criterion_main, Criterion};
use teal::access::{Line, Logged};
use teal::config::LogFormat;

/// What wrk or a browser sends, and the id teal makes.
fn captured(user_agent: &[u8]) -> Logged {
    Logged::new(
        "HTTP/1.1",
        b"/api/orders?page=2",
        b"shop.example.com",
        user_agent,
        b"https://shop.example.com/cart",
        b"1651170c811f7b20e9cf54420857c0f6",
    )
}

/// The line of `logged` with an ordinary outcome: 200, five bytes, from one upstream.
fn line_of(logged: &Logged) -> Line<'_> {
    Line {
        peer: "127.0.0.1:41234".parse().unwrap(),
        client: "10.1.2.3".parse().unwrap(),
        method: "GET",
        pool: "blue",
        upstream: "127.0.0.1:18081",
        status: 200,
        bytes: 5,
        upstream_us: Some(1234),
        duration_us: 2500,
        ..logged.line()
    }
}

const BROWSER: &[u8] = b"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) \
Chrome/131.0.0.0 Safari/537.36";

fn line(c: &mut Criterion) {
    c.bench_function("capture the request's fields", |b| {
        b.iter(|| black_box(captured(black_box(BROWSER))))
    });
    let logged = captured(BROWSER);
    let mut out = Vec::with_capacity(1024);
    for (name, format) in [("text", LogFormat::Text), ("json", LogFormat::Json)] {
        c.bench_function(&format!("write the {name} line into memory"), |b| {
            b.iter(|| {
                out.clear();
                line_of(black_box(&logged)).write(format, SystemTime::now(), &mut out);
                black_box(out.len())
            })
        });
    }
    // With the one write(2) a line costs, to a file as a deployment's log goes (tmpfs or disk,
    // wherever the temp dir is); the file is emptied every 65,536 lines so it stays small.
    let dir = tempfile::tempdir().unwrap();
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.path().join("access.log"))
        .unwrap();
    let mut lines = 0u32;
    c.bench_function(
        "capture, write the text line and write(2) it to a file",
        |b| {
            b.iter(|| {
                let logged = captured(black_box(BROWSER));
                out.clear();
                line_of(&logged).write(LogFormat::Text, SystemTime::now(), &mut out);
                file.write_all(&out).unwrap();
                lines += 1;
                if lines % 65_536 == 0 {
                    file.set_len(0).unwrap();
                }
            });
        },
    );
    let plain = captured(b"curl/7.88.1");
    let odd = captured("Mozilla/5.0 \"quoted\" ünïcode\t".as_bytes());
    for (name, logged) in [("curl", &plain), ("escaped", &odd)] {
        c.bench_function(&format!("write the json line, {name} user agent"), |b| {
            b.iter(|| {
                out.clear();
                line_of(logged).write(LogFormat::Json, SystemTime::now(), &mut out);
                black_box(out.len())
            })
        });
    }
}

criterion_group!(benches, line);
criterion_main!(benches);
