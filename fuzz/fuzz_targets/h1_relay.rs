//! teal's own HTTP/1.1 path relaying an upstream's response of arbitrary framing, read in
//! arbitrary pieces: the client receives exactly one well-framed response per request, or a
//! closed connection (see `relay_check.rs`), whatever the bytes and wherever reads cut them.
//! `cargo +nightly fuzz run --fuzz-dir fuzz h1_relay -- -dict=fuzz/h1_relay.dict -max_total_time=60`
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "relay_check.rs"]
mod relay_check;

fuzz_target!(|data: &[u8]| {
    // One byte of flags (bit 0: a HEAD request; bits 1-3: how many splits), the splits as
    // little-endian u16 offsets, then the upstream's bytes.
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let count = usize::from(flags >> 1 & 7);
    if rest.len() < count * 2 {
        return;
    }
    let (offsets, upstream) = rest.split_at(count * 2);
    let splits: Vec<usize> = offsets
        .chunks(2)
        .map(|p| usize::from(u16::from_le_bytes([p[0], p[1]])) % (upstream.len() + 1))
        .collect();
    relay_check::check(upstream, &splits, flags & 1 == 1);
});
