//! Per-pool interval counters for the rollout's verdicts: requests, errors and a latency
//! distribution, kept in relaxed atomics (no lock on the request path) and read as a [`Counts`]
//! copy, so a window is the difference of two reads.
//!
//! One [`Tally`] lives in each pool's runtime, which a rebuilt snapshot takes over from the
//! previous one (see `Pool::build`), so switches and reloads never reset it.
//! The access record (`Exchange`) records every exchange of both transports when it drops.
//!
//! Latency buckets are log-scale with four buckets per doubling of microseconds (each at most 25%
//! wider than its lower bound) up to about 67 s; a p99 is reported as the upper bound of the bucket
//! it falls in, so it errs on the high side by less than a quarter.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Bucket count: 4 per doubling of microseconds, up to 2^27 µs (about 134 s).
pub const BUCKETS: usize = 27 * 4;

/// The live counters of one pool.
#[derive(Debug)]
pub struct Tally {
    requests: AtomicU64,
    errors: AtomicU64,
    buckets: [AtomicU64; BUCKETS],
}

impl Default for Tally {
    fn default() -> Tally {
        Tally {
            requests: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

impl Tally {
    /// Records one finished exchange: `status` as sent to the client (teal's own 502/504 for an
    /// upstream failure included; >= 500 is an error) and its latency.
    pub fn record(&self, status: u16, latency: Duration) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if status >= 500 {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        self.buckets[bucket(latency)].fetch_add(1, Ordering::Relaxed);
    }

    /// A copy of the counters now.
    pub fn read(&self) -> Counts {
        Counts {
            requests: self.requests.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            buckets: std::array::from_fn(|i| self.buckets[i].load(Ordering::Relaxed)),
        }
    }
}

/// Counters as read at one moment, or the difference of two reads (a window).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counts {
    /// Exchanges finished.
    pub requests: u64,
    /// Of those, answered with a status >= 500.
    pub errors: u64,
    /// Exchanges per latency bucket.
    pub buckets: [u64; BUCKETS],
}

impl Default for Counts {
    fn default() -> Counts {
        Counts {
            requests: 0,
            errors: 0,
            buckets: [0; BUCKETS],
        }
    }
}

impl Counts {
    /// What happened between `earlier` and `self` (counters only grow; a wrap reads as 0).
    pub fn since(&self, earlier: &Counts) -> Counts {
        Counts {
            requests: self.requests.saturating_sub(earlier.requests),
            errors: self.errors.saturating_sub(earlier.errors),
            buckets: std::array::from_fn(|i| self.buckets[i].saturating_sub(earlier.buckets[i])),
        }
    }

    /// Errors over requests, 0 for no requests.
    pub fn error_rate(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.errors as f64 / self.requests as f64
        }
    }

    /// The latency below which `q` (0-1) of the exchanges fell, as the upper bound of its bucket;
    /// `None` with no exchanges.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        let total: u64 = self.buckets.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        for (i, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Some(upper_bound(i));
            }
        }
        Some(upper_bound(BUCKETS - 1))
    }

    /// The 99th percentile latency (see [`Counts::quantile`]).
    pub fn p99(&self) -> Option<Duration> {
        self.quantile(0.99)
    }
}

/// The bucket of `latency`: 0-3 hold 0-3 µs, then four per doubling.
fn bucket(latency: Duration) -> usize {
    let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
    if us < 4 {
        return us as usize;
    }
    let log = 63 - us.leading_zeros() as usize;
    let sub = ((us >> (log - 2)) & 3) as usize;
    (log * 4 + sub).min(BUCKETS - 1)
}

/// The exclusive upper bound of bucket `i`.
fn upper_bound(i: usize) -> Duration {
    if i < 4 {
        return Duration::from_micros(i as u64 + 1);
    }
    let (log, sub) = (i / 4, i % 4);
    Duration::from_micros((4 + sub as u64 + 1) << (log - 2))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every latency falls in a bucket whose upper bound is above it and at most 25% past it.
    #[test]
    fn buckets_are_tight() {
        for us in [
            0u64, 1, 3, 4, 5, 7, 8, 9, 100, 999, 1000, 12_345, 800_000, 5_000_000,
        ] {
            let d = Duration::from_micros(us);
            let up = upper_bound(bucket(d));
            assert!(up > d, "{us} µs -> {up:?}");
            if us >= 4 {
                assert!(
                    up.as_micros() as f64 <= us as f64 * 1.25 + 1.0,
                    "{us} µs -> {up:?}"
                );
            }
        }
        assert_eq!(bucket(Duration::from_secs(3600)), BUCKETS - 1);
    }

    /// A window is the difference of two reads; rate and p99 come from it alone.
    #[test]
    fn window_rate_and_p99() {
        let t = Tally::default();
        for _ in 0..50 {
            t.record(500, Duration::from_secs(5));
        }
        let before = t.read();
        for i in 0..1000 {
            let status = if i % 50 == 0 { 502 } else { 200 };
            let ms = if i < 985 { 10 } else { 900 };
            t.record(status, Duration::from_millis(ms));
        }
        let w = t.read().since(&before);
        assert_eq!((w.requests, w.errors), (1000, 20));
        assert!((w.error_rate() - 0.02).abs() < 1e-9);
        let p99 = w.p99().unwrap();
        assert!(
            p99 >= Duration::from_millis(900) && p99 <= Duration::from_millis(1125),
            "{p99:?}"
        );
        let p50 = w.quantile(0.5).unwrap();
        assert!(p50 > Duration::from_millis(10) && p50 <= Duration::from_micros(12_500));
        assert_eq!(Counts::default().p99(), None);
        assert_eq!(Counts::default().error_rate(), 0.0);
    }
}
