//! Upstream health: what is known about each server, from active probes, passive failures on real
//! traffic, and name resolution.
//!
//! Every upstream server holds a [`Health`]. The request path only reads two
//! atomics ([`Health::usable`]); everything else sits behind a mutex touched on state changes.
//!
//! - **Active checks** (`[pools.NAME.health]`): a task per server probes `GET path` every
//!   `interval`; `healthy_after` consecutive successes make it healthy, `unhealthy_after` consecutive
//!   failures unhealthy. A server starts `unknown` and is used while unknown.
//! - **Passive checks**: a connect failure, reset or response timeout on real traffic ejects the
//!   server for a backoff (1 s, doubling to 30 s while failures go on); a success ends the backoff.
//! - **Resolution**: a server whose hostname does not resolve is `unresolved` and counts as down.
//!
//! A pool skips servers that are unhealthy, ejected or unresolved while another is usable; if none
//! is, it tries them all rather than fail without trying. Transitions are logged once each.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde::Serialize;
use tracing::{info, warn};

use crate::clock::now_ms;
use crate::config::HealthConfig;

/// What the active checks last concluded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Not probed yet, or no active checks: used.
    Unknown,
    /// `healthy_after` probes in a row succeeded.
    Healthy,
    /// `unhealthy_after` probes in a row failed.
    Unhealthy,
}

impl Status {
    /// `unknown`, `healthy` or `unhealthy`.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Unknown => "unknown",
            Status::Healthy => "healthy",
            Status::Unhealthy => "unhealthy",
        }
    }

    fn from_u8(v: u8) -> Status {
        match v {
            1 => Status::Healthy,
            2 => Status::Unhealthy,
            _ => Status::Unknown,
        }
    }
}

/// Passive ejection backoff: first and longest.
const BACKOFF_FIRST: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// The health of one server. See the module doc.
#[derive(Debug)]
pub struct Health {
    /// The pool and server it belongs to, for its log lines.
    pool: Arc<str>,
    server: String,
    status: AtomicU8,
    unresolved: AtomicBool,
    /// `now_ms()` until which passive checks keep the server out; 0 = not ejected.
    ejected_until: AtomicU64,
    detail: Mutex<Detail>,
}

#[derive(Debug)]
struct Detail {
    since: SystemTime,
    last_error: Option<String>,
    successes: u32,
    failures: u32,
    passive_failures: u32,
    last_check: Option<LastCheck>,
}

/// The last active probe of a server, as `/status` shows it (`last_check`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LastCheck {
    /// When it finished (RFC 3339, milliseconds).
    pub at: String,
    /// Whether it succeeded.
    pub ok: bool,
    /// `200 in 3 ms`, or the error.
    pub detail: String,
}

/// What `/status` shows about a server.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// `unknown`, `healthy`, `unhealthy`, `ejected` or `unresolved`.
    pub state: &'static str,
    /// When the state last changed (RFC 3339).
    pub since: String,
    /// The last error seen by a probe or on real traffic.
    pub last_error: Option<String>,
}

impl Health {
    /// The health of `server` in `pool`, unknown so far.
    pub fn new(pool: Arc<str>, server: String) -> Health {
        Health {
            pool,
            server,
            status: AtomicU8::new(0),
            unresolved: AtomicBool::new(false),
            ejected_until: AtomicU64::new(0),
            detail: Mutex::new(Detail {
                since: SystemTime::now(),
                last_error: None,
                successes: 0,
                failures: 0,
                passive_failures: 0,
                last_check: None,
            }),
        }
    }

    fn detail(&self) -> std::sync::MutexGuard<'_, Detail> {
        self.detail.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The active checks' conclusion.
    pub fn status(&self) -> Status {
        Status::from_u8(self.status.load(Ordering::Relaxed))
    }

    /// Whether new requests may go here: not unhealthy, not ejected, resolved.
    pub fn usable(&self) -> bool {
        self.status() != Status::Unhealthy && !self.unresolved() && !self.ejected()
    }

    /// Whether passive checks keep the server out right now.
    pub fn ejected(&self) -> bool {
        now_ms() < self.ejected_until.load(Ordering::Relaxed)
    }

    /// Whether the server's name failed to resolve.
    pub fn unresolved(&self) -> bool {
        self.unresolved.load(Ordering::Relaxed)
    }

    /// The state word `/status` shows.
    pub fn state(&self) -> &'static str {
        if self.unresolved() {
            "unresolved"
        } else if self.status() == Status::Unhealthy {
            "unhealthy"
        } else if self.ejected() {
            "ejected"
        } else if self.status() == Status::Healthy {
            "healthy"
        } else {
            "unknown"
        }
    }

    /// When the state last changed.
    pub fn since(&self) -> SystemTime {
        self.detail().since
    }

    /// A snapshot for `/status`.
    pub fn report(&self) -> Report {
        let d = self.detail();
        Report {
            state: self.state(),
            since: humantime::format_rfc3339_seconds(d.since).to_string(),
            last_error: d.last_error.clone(),
        }
    }

    /// The last active probe, if one ran.
    pub fn last_check(&self) -> Option<LastCheck> {
        self.detail().last_check.clone()
    }

    /// Records one active probe (`Ok`: what it saw, like `200 in 3 ms`); logs when it changes
    /// the status, and returns the change as a sentence (`server S in pool P: healthy ->
    /// unhealthy (error)`), for the dashboard's events.
    pub fn probe(&self, result: Result<String, String>, cfg: &HealthConfig) -> Option<String> {
        let mut d = self.detail();
        d.last_check = Some(LastCheck {
            at: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
            ok: result.is_ok(),
            detail: match &result {
                Ok(seen) => seen.clone(),
                Err(e) => e.clone(),
            },
        });
        let before = self.status();
        let after = match &result {
            Ok(_) => {
                d.successes += 1;
                d.failures = 0;
                if d.successes >= cfg.healthy_after {
                    Status::Healthy
                } else {
                    before
                }
            }
            Err(e) => {
                d.failures += 1;
                d.successes = 0;
                d.last_error = Some(e.clone());
                if d.failures >= cfg.unhealthy_after {
                    Status::Unhealthy
                } else {
                    before
                }
            }
        };
        if after == before {
            return None;
        }
        self.status.store(after as u8, Ordering::Relaxed);
        d.since = SystemTime::now();
        let change = format!(
            "server {} in pool {}: {} -> {}",
            self.server,
            self.pool,
            before.as_str(),
            after.as_str()
        );
        match (after, &result) {
            (Status::Unhealthy, Err(e)) => {
                warn!(pool = %self.pool, server = %self.server, error = %e, "server is unhealthy");
                Some(format!("{change} ({e})"))
            }
            _ => {
                info!(pool = %self.pool, server = %self.server, status = ?after, "server health changed");
                Some(change)
            }
        }
    }

    /// Records a failure on real traffic: ejects the server for a growing backoff.
    pub fn passive_failure(&self, error: &str) {
        let mut d = self.detail();
        d.passive_failures = d.passive_failures.saturating_add(1);
        d.last_error = Some(error.to_string());
        let shift = (d.passive_failures - 1).min(5);
        let backoff = (BACKOFF_FIRST * (1u32 << shift)).min(BACKOFF_MAX);
        let was_ejected = self.ejected();
        self.ejected_until
            .store(now_ms() + backoff.as_millis() as u64, Ordering::Relaxed);
        if !was_ejected {
            d.since = SystemTime::now();
            warn!(pool = %self.pool, server = %self.server, error, ?backoff, "server ejected after a failure on live traffic");
        }
    }

    /// Records a success on real traffic: ends any backoff.
    pub fn passive_success(&self) {
        if self.ejected_until.load(Ordering::Relaxed) != 0 {
            self.ejected_until.store(0, Ordering::Relaxed);
            let mut d = self.detail();
            d.passive_failures = 0;
            d.since = SystemTime::now();
        }
    }

    /// Records a resolution of the server's name (`previous`: the addresses known before).
    pub fn resolved(
        &self,
        result: &Result<Vec<std::net::IpAddr>, String>,
        previous: &[std::net::IpAddr],
    ) {
        match result {
            Ok(addrs) => {
                if self.unresolved.swap(false, Ordering::Relaxed) {
                    self.detail().since = SystemTime::now();
                    info!(pool = %self.pool, server = %self.server, ?addrs, "server name resolves again");
                } else if !previous.is_empty() && previous != addrs.as_slice() {
                    info!(pool = %self.pool, server = %self.server, ?addrs, ?previous, "server name moved");
                }
            }
            Err(e) => {
                let mut d = self.detail();
                d.last_error = Some(e.clone());
                if !self.unresolved.swap(true, Ordering::Relaxed) {
                    d.since = SystemTime::now();
                    warn!(pool = %self.pool, server = %self.server, error = %e, "server name does not resolve; counted as down");
                }
            }
        }
    }
}
