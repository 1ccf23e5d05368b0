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

/// The longest pause allowed in a stream of bytes (a body on its way): expires once a wait has
/// lasted `timeout` since bytes last moved. The timer is made on the first wait and re-armed
/// (not made again) after progress, and the clock is read once per wait, not once per read.
pub struct Pause {
    timeout: Duration,
    deadline: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
    fresh: bool,
}

impl Pause {
    /// A pause limit of `timeout` (`Duration::MAX`: none).
    pub fn new(timeout: Duration) -> Pause {
        Pause {
            timeout,
            deadline: None,
            fresh: true,
        }
    }

    /// The limit.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Bytes moved: the next wait has the whole `timeout` again.
    pub fn progressed(&mut self) {
        self.fresh = true;
    }

    /// Ready once the wait under way has lasted `timeout`; call it while waiting.
    pub fn poll_expired(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        use std::future::Future;
        if std::mem::take(&mut self.fresh) {
            let Some(at) = tokio::time::Instant::now().checked_add(self.timeout) else {
                self.deadline = None;
                return std::task::Poll::Pending;
            };
            match &mut self.deadline {
                Some(deadline) => deadline.as_mut().reset(at),
                None => self.deadline = Some(Box::pin(tokio::time::sleep_until(at))),
            }
        }
        match &mut self.deadline {
            Some(deadline) => deadline.as_mut().poll(cx),
            None => std::task::Poll::Pending,
        }
    }
}
