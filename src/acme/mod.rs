//! Automatic certificates over ACME (RFC 8555) with the HTTP-01 challenge, for `[tls.acme]`.
//!
//! [`start`] runs once at startup, on the admin runtime (never on a proxy worker):
//!
//! 1. It opens `state_dir` (created 0700) and, before any network, serves the certificate kept
//!    there if it is usable and for exactly the configured domains. A certificate for other
//!    domains is served meanwhile (it still covers its own names) but a new one is ordered.
//! 2. It spawns the task that keeps a certificate current: it orders one at once when there is
//!    none (or the kept one is for other domains, or already inside `renew_before`), and then
//!    sleeps until `renew_before` the certificate's expiry. A failed attempt keeps whatever is
//!    served and is retried after 10 s, doubling up to 1 h. After an issuance the next renewal is
//!    at least [`RENEW_FLOOR`] away, so a `renew_before` longer than the CA's certificate lifetime
//!    renews once a minute (with a warning) instead of in a tight loop.
//!
//! Issuance only touches the request path through two shared structures: the challenges under
//! way ([`crate::tls::Challenges`], read by the plain listener) and the ACME certificate list
//! ([`crate::tls::CertStore::set_acme`], read per handshake); both are swapped, never held
//! across I/O. Until a certificate arrives, a handshake naming one of the domains gets no
//! certificate (an alert, and a log line), or the first file certificate if there is one.
//!
//! Files: see [`store`]. Metrics: `teal_acme_orders_total{outcome="issued"|"failed"}`, one per
//! attempt.

mod client;
mod order;
mod store;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::config::AcmeConfig;
use crate::state::State;
use crate::tls::Loaded;

/// The shortest wait before renewing a certificate just issued.
pub const RENEW_FLOOR: Duration = Duration::from_secs(60);
/// The wait before retrying after the first failed attempt; it doubles with each failure.
pub const RETRY_FIRST: Duration = Duration::from_secs(10);
/// The longest single sleep before the wall clock is read again (see [`sleep_wall`]).
const WALL_STEP: Duration = Duration::from_secs(3600);
/// The longest wait between failed attempts.
pub const RETRY_MAX: Duration = Duration::from_secs(3600);

/// Opens `state_dir`, serves the certificate kept there (see the module doc) and spawns the task
/// that orders and renews, on the current runtime, until `stop`. Fails only on what the operator
/// must fix before ACME can work: a `state_dir` that cannot be created, a `ca_file` that cannot
/// be read or holds no certificate.
pub fn start(state: Arc<State>, config: AcmeConfig, stop: CancellationToken) -> anyhow::Result<()> {
    let store = store::StateDir::open(&config.state_dir)
        .map_err(|e| anyhow::anyhow!("tls.acme.state_dir: {e}"))?;
    let http = client::AcmeHttp::new(config.ca_file.as_deref())
        .map_err(|e| anyhow::anyhow!("tls.acme.ca_file: {e}"))?;
    let kept = kept_certificate(&store, &config);
    let first_wait = match &kept {
        Some(cert) if order::for_domains(cert, &config) => {
            let wait = renew_wait(cert.not_after, config.renew_before, SystemTime::now());
            info!(names = ?cert.names, expires = %httpdate::fmt_http_date(cert.not_after), renew_in = %secs(wait), "ACME certificate loaded from state_dir");
            wait
        }
        Some(cert) => {
            info!(names = ?cert.names, domains = ?config.domains, "the ACME certificate in state_dir is for other domains; serving it until a new one is issued");
            Duration::ZERO
        }
        None => Duration::ZERO,
    };
    if let Some(cert) = kept {
        state.tls().certs.set_acme(vec![Arc::new(cert)]);
    }
    let issuer = order::Issuer::new(config.clone(), http, store);
    tokio::spawn(run(state, config, issuer, first_wait, stop));
    Ok(())
}

/// The usable certificate in `store`, logging why there is none.
fn kept_certificate(store: &store::StateDir, config: &AcmeConfig) -> Option<Loaded> {
    match store.certificate() {
        Ok(Some(cert)) => Some(cert),
        Ok(None) => {
            info!(state_dir = %config.state_dir.display(), domains = ?config.domains, "no ACME certificate in state_dir yet; ordering one");
            None
        }
        Err(reason) => {
            warn!(reason, domains = ?config.domains, "the ACME certificate in state_dir is unusable; ordering a new one");
            None
        }
    }
}

/// Waits `first_wait`, then issues, forever: after an issuance until the next renewal is due,
/// after a failure for the backoff. Ends when `stop` is cancelled, even mid-order.
async fn run(
    state: Arc<State>,
    config: AcmeConfig,
    mut issuer: order::Issuer,
    first_wait: Duration,
    stop: CancellationToken,
) {
    let mut wait = first_wait;
    let mut retry = RETRY_FIRST;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = sleep_wall(wait) => {}
        }
        info!(domains = ?config.domains, directory = config.directory, "ACME order starting");
        let outcome = tokio::select! {
            _ = stop.cancelled() => return,
            outcome = issuer.issue(&state.tls().challenges) => outcome,
        };
        match outcome {
            Ok(cert) => {
                state.metrics().acme_order("issued");
                wait = after_issuance(&cert, &config);
                let text = format!("ACME certificate issued for {}", cert.names.join(", "));
                state.events().record(crate::events::Kind::Cert, text);
                state.tls().certs.set_acme(vec![Arc::new(cert)]);
                retry = RETRY_FIRST;
            }
            Err(reason) => {
                state.metrics().acme_order("failed");
                let served = state.tls().certs.acme();
                let still = served.first().map(|c| httpdate::fmt_http_date(c.not_after));
                if served.is_empty() {
                    error!(reason, retry_in = %secs(retry), domains = ?config.domains, "ACME order failed; no ACME certificate is served yet");
                } else {
                    warn!(reason, retry_in = %secs(retry), serving_until = still, "ACME order failed; keeping the current certificate");
                }
                let text = format!("ACME order failed, retry in {}: {reason}", secs(retry));
                state.events().record(crate::events::Kind::Cert, text);
                wait = retry;
                retry = (retry * 2).min(RETRY_MAX);
            }
        }
    }
}

/// Sleeps until `wait` from now by the wall clock, which expiry dates are in: in steps of at
/// most [`WALL_STEP`], so a suspended host or a clock set forward is noticed within one step
/// rather than after the whole monotonic wait.
async fn sleep_wall(wait: Duration) {
    let until = SystemTime::now() + wait;
    loop {
        let left = until.duration_since(SystemTime::now()).unwrap_or_default();
        if left.is_zero() {
            return;
        }
        tokio::time::sleep(left.min(WALL_STEP)).await;
    }
}

/// Logs a fresh certificate and returns the wait until it is due for renewal (at least
/// [`RENEW_FLOOR`]).
fn after_issuance(cert: &Loaded, config: &AcmeConfig) -> Duration {
    let due = renew_wait(cert.not_after, config.renew_before, SystemTime::now());
    let wait = due.max(RENEW_FLOOR);
    info!(names = ?cert.names, expires = %httpdate::fmt_http_date(cert.not_after), renew_in = %secs(wait), file = %config.state_dir.join(store::CERT).display(), "ACME certificate issued; serving it");
    if due < RENEW_FLOOR {
        let lifetime = cert
            .not_after
            .duration_since(SystemTime::now())
            .unwrap_or_default();
        warn!(renew_before = %secs(config.renew_before), lifetime = %secs(lifetime), renew_in = %secs(wait), "tls.acme.renew_before is longer than the certificate's remaining lifetime; it will be renewed again in a minute, each minute");
    }
    wait
}

/// How long from `now` until `renew_before` ahead of `not_after` (zero when that has passed).
pub fn renew_wait(not_after: SystemTime, renew_before: Duration, now: SystemTime) -> Duration {
    let due = not_after
        .checked_sub(renew_before)
        .unwrap_or(SystemTime::UNIX_EPOCH);
    due.duration_since(now).unwrap_or_default()
}

/// A duration for a log line, in whole seconds (`1h 30m 5s`).
fn secs(d: Duration) -> humantime::FormattedDuration {
    humantime::format_duration(Duration::from_secs(d.as_secs()))
}

/// A certificate's names as they compare with the configured domains: sorted, distinct.
fn names_of(cert: &Loaded) -> Vec<String> {
    let mut names = cert.names.clone();
    names.sort();
    names.dedup();
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_is_due_renew_before_the_expiry() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let day = Duration::from_secs(86_400);
        assert_eq!(renew_wait(now + 90 * day, 30 * day, now), 60 * day);
        assert_eq!(renew_wait(now + 10 * day, 30 * day, now), Duration::ZERO);
        assert_eq!(
            renew_wait(now, Duration::from_secs(u64::MAX / 4), now),
            Duration::ZERO
        );
    }
}
