//! teal's own HTTP/1.1 path on arbitrary bytes: a client's request head (and body) as received,
//! and an upstream's response head. Whatever the bytes, the path either hands the request to the
//! general path or writes a head that parses again, and never panics.
//! `cargo +nightly fuzz run --fuzz-dir fuzz h1_heads -- -dict=fuzz/h1_heads.dict -max_total_time=60`
#![no_main]

use libfuzzer_sys::fuzz_target;
use teal::server::{ServeOptions, Timeouts};

#[path = "shared.rs"]
mod shared;
use shared::snapshot;

fuzz_target!(|data: &[u8]| {
    let options = ServeOptions::from(Timeouts::both(std::time::Duration::from_secs(60)));
    let peer = "10.1.2.3:5000".parse().unwrap();
    if let Some(upstream) = teal::h1::rewrite_request(data, peer, snapshot(), &options) {
        // What goes upstream is one complete, well-formed request head.
        let mut fields = [httparse::EMPTY_HEADER; 80];
        let mut req = httparse::Request::new(&mut fields);
        assert_eq!(
            req.parse(&upstream).unwrap(),
            httparse::Status::Complete(upstream.len())
        );
    }
    for head_request in [false, true] {
        if let Some(client) = teal::h1::rewrite_response(data, head_request) {
            let mut fields = [httparse::EMPTY_HEADER; 140];
            let mut res = httparse::Response::new(&mut fields);
            assert_eq!(
                res.parse(&client).unwrap(),
                httparse::Status::Complete(client.len())
            );
        }
    }
});
