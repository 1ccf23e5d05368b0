//! One process-wide monotonic clock in milliseconds, for deadlines kept in atomics (health
//! backoffs, connection timeouts, body progress) where an `Instant` would need a lock.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Milliseconds since this process first looked at the clock; never 0, so 0 can mean "unset".
pub fn now_ms() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

/// `d` in whole milliseconds, saturating.
pub fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
