//! The canary split's buckets and the cookies teal sets itself. No I/O; the random bucket is the
//! only impure part (a per-thread generator, no lock, no allocation).
//!
//! A default-route client has a bucket 0-99; bucket < percent goes to the canary pool. So raising
//! the percent keeps every client already on the canary there, and lowering it sends back only
//! the highest buckets. The bucket comes from:
//! - `sticky = "cookie"`: the `teal_bucket` cookie, or a random one that teal then sets
//!   (`teal_bucket=NN; Path=/; HttpOnly; SameSite=Lax`, a session cookie); a value that is not a
//!   number 0-99 is replaced the same way;
//! - `sticky = "ip"`: a fixed hash of the client address (after `trusted_proxies`), the same in
//!   every teal process and across restarts;
//! - `sticky = "none"`: a random bucket per request.

use std::cell::Cell;
use std::net::IpAddr;
use std::sync::LazyLock;

use http::HeaderValue;

/// The cookie that keeps a client's bucket with `sticky = "cookie"`.
pub const BUCKET_COOKIE: &str = "teal_bucket";

/// The attributes of every cookie teal sets: the whole site, not for scripts, sent on top-level
/// navigation from other sites but not on their subrequests.
const ATTRIBUTES: &str = "Path=/; HttpOnly; SameSite=Lax";

/// The value of cookie `name` in a `Cookie` field value (`a=1; b=2`, RFC 6265 §5.4): the first
/// pair of that name, its value trimmed and unquoted. Nothing is allocated.
pub fn cookie<'h>(header: &'h [u8], name: &[u8]) -> Option<&'h [u8]> {
    header.split(|&b| b == b';').find_map(|pair| {
        let eq = pair.iter().position(|&b| b == b'=')?;
        if pair[..eq].trim_ascii() != name {
            return None;
        }
        let value = pair[eq + 1..].trim_ascii();
        // RFC 6265 §4.1.1: a cookie-value may be in double quotes.
        let unquoted = value
            .strip_prefix(b"\"")
            .and_then(|v| v.strip_suffix(b"\""));
        Some(unquoted.unwrap_or(value))
    })
}

/// A `teal_bucket` value: one or two digits, 0-99. Anything else is no bucket.
pub fn parse_bucket(value: &[u8]) -> Option<u8> {
    match value {
        [d] if d.is_ascii_digit() => Some(d - b'0'),
        [a, b] if a.is_ascii_digit() && b.is_ascii_digit() => Some((a - b'0') * 10 + (b - b'0')),
        _ => None,
    }
}

/// The bucket of client address `ip`: a fixed mix of its bits (IPv4-mapped IPv6 as IPv4), so the
/// same address gets the same bucket in every process, and neighbouring addresses spread evenly.
pub fn ip_bucket(ip: IpAddr) -> u8 {
    let bits: u128 = match ip.to_canonical() {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6) ^ (1 << 127),
    };
    let high = mix((bits >> 64) as u64 ^ 0x7ea1_7ea1);
    to_bucket(mix(bits as u64 ^ high))
}

/// A random bucket, uniform over 0-99.
pub fn random_bucket() -> u8 {
    thread_local! {
        static STATE: Cell<u64> = Cell::new(seed());
    }
    STATE.with(|state| {
        // splitmix64: a counter through a good mixer; each thread starts at its own random seed.
        let next = state.get().wrapping_add(0x9e37_79b9_7f4a_7c15);
        state.set(next);
        to_bucket(mix(next))
    })
}

/// A random seed for this thread.
fn seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(0x7ea1);
    h.finish()
}

/// The splitmix64 finaliser: every input bit moves every output bit.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// 0-99 from 64 mixed bits, by the high half times 100 (no modulo bias worth the name).
fn to_bucket(z: u64) -> u8 {
    (((z >> 32) * 100) >> 32) as u8
}

/// `Set-Cookie` for `bucket`: made once for every bucket, so setting one allocates nothing.
pub fn bucket_cookie(bucket: u8) -> HeaderValue {
    static VALUES: LazyLock<Vec<HeaderValue>> = LazyLock::new(|| {
        (0..100)
            .map(|b| {
                let text = format!("{BUCKET_COOKIE}={b}; {ATTRIBUTES}");
                HeaderValue::from_str(&text).expect("digits and ASCII attributes")
            })
            .collect()
    });
    VALUES[usize::from(bucket.min(99))].clone()
}

/// `Set-Cookie` for the preview cookie `name` naming `pool` (a session cookie). Both are
/// validated tokens (a cookie name, a pool name), so the value is always valid.
pub fn preview_cookie(name: &str, pool: &str) -> HeaderValue {
    HeaderValue::from_str(&format!("{name}={pool}; {ATTRIBUTES}"))
        .expect("a cookie name and a pool name make a valid value")
}

/// `Set-Cookie` that removes the preview cookie `name`.
pub fn clear_cookie(name: &str) -> HeaderValue {
    HeaderValue::from_str(&format!("{name}=; Max-Age=0; {ATTRIBUTES}"))
        .expect("a cookie name makes a valid value")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The named pair is found among others, trimmed and unquoted; prefixes of names do not match.
    #[test]
    fn cookie_lookup() {
        let h = b"a=1; teal_bucket=42;x=\"q\" ; teal_bucket=7";
        assert_eq!(cookie(h, b"teal_bucket"), Some(&b"42"[..]));
        assert_eq!(cookie(h, b"x"), Some(&b"q"[..]));
        assert_eq!(cookie(h, b"a"), Some(&b"1"[..]));
        assert_eq!(
            cookie(b"teal_bucketx=1; bteal_bucket=2", b"teal_bucket"),
            None
        );
        assert_eq!(cookie(b"teal_bucket", b"teal_bucket"), None);
        assert_eq!(cookie(b"", b"teal_bucket"), None);
        assert_eq!(cookie(b"teal_bucket=", b"teal_bucket"), Some(&b""[..]));
    }

    /// Only 0-99 as one or two digits is a bucket.
    #[test]
    fn bucket_values() {
        assert_eq!(parse_bucket(b"0"), Some(0));
        assert_eq!(parse_bucket(b"07"), Some(7));
        assert_eq!(parse_bucket(b"99"), Some(99));
        for bad in [&b""[..], b"100", b"-1", b"x", b"4 2", b"1a", b"+5", b"\xff"] {
            assert_eq!(parse_bucket(bad), None, "{bad:?}");
        }
        for b in [0, 9, 10, 99] {
            let v = bucket_cookie(b);
            let v = v.to_str().unwrap();
            assert_eq!(
                v,
                format!("teal_bucket={b}; Path=/; HttpOnly; SameSite=Lax")
            );
            let value = cookie(v.as_bytes(), b"teal_bucket").unwrap();
            assert_eq!(parse_bucket(value), Some(b));
        }
    }

    /// Random buckets cover 0-99 evenly: 100,000 draws put 1,000 ± 150 in each bucket.
    #[test]
    fn random_buckets_are_uniform() {
        let mut counts = [0u32; 100];
        for _ in 0..100_000 {
            counts[usize::from(random_bucket())] += 1;
        }
        for (b, n) in counts.iter().enumerate() {
            assert!((850..=1150).contains(n), "bucket {b}: {n}");
        }
    }

    /// The address hash is fixed (the same in every process: known values), sees IPv4-mapped
    /// addresses as IPv4, and spreads consecutive addresses evenly.
    #[test]
    fn ip_buckets() {
        let a: IpAddr = "127.0.0.2".parse().unwrap();
        let mapped: IpAddr = "::ffff:127.0.0.2".parse().unwrap();
        assert_eq!(ip_bucket(a), ip_bucket(mapped));
        assert_eq!(ip_bucket(a), ip_bucket("127.0.0.2".parse().unwrap()));
        let mut counts = [0u32; 100];
        for i in 0..65_536u32 {
            let v4 = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            counts[usize::from(ip_bucket(v4))] += 1;
        }
        for (b, n) in counts.iter().enumerate() {
            assert!((500..=820).contains(n), "bucket {b}: {n}");
        }
        let mut v6 = [0u32; 100];
        for i in 0..10_000u128 {
            let ip = IpAddr::from(std::net::Ipv6Addr::from(0x2001_0db8_u128 << 96 | i << 64));
            v6[usize::from(ip_bucket(ip))] += 1;
        }
        assert!(v6.iter().all(|n| (50..=150).contains(n)), "{v6:?}");
    }
}
