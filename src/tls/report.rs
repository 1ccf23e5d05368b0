//! What teal says about its certificates: the `tls` part of `GET /status`, the expiry gauges of
//! `/metrics`, and the lines of `teal check`. All three describe a [`Loaded`] the same way, so
//! an operator sees the same names and dates wherever they look.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use super::{load_entry, CertStore, Loaded, Source};
use crate::config::{AcmeConfig, TlsConfig};

const DAY: i64 = 24 * 3600;

/// Whole days from now until `loaded` expires (negative once it has).
fn days_left(loaded: &Loaded, now: SystemTime) -> i64 {
    let now = now
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    (loaded.expiry_unix() - now).div_euclid(DAY)
}

/// One certificate as `/status` lists it.
fn certificate_json(loaded: &Loaded, now: SystemTime) -> Value {
    let mut doc = json!({
        "names": loaded.names,
        "not_after": humantime::format_rfc3339_seconds(loaded.not_after).to_string(),
        "expires_unix": loaded.expiry_unix(),
        "days_left": days_left(loaded, now),
        "source": loaded.source.kind(),
    });
    if let Source::File { cert, key } = &loaded.source {
        doc["cert"] = json!(cert.display().to_string());
        doc["key"] = json!(key.display().to_string());
    }
    doc
}

/// The `tls` member of `GET /status`: `null` without `[tls]`, else every certificate served
/// (files in file order, then ACME).
pub fn status_json(configured: bool, certs: &CertStore) -> Value {
    if !configured {
        return Value::Null;
    }
    let now = SystemTime::now();
    let list: Vec<Value> = certs
        .all()
        .iter()
        .map(|c| certificate_json(c, now))
        .collect();
    json!({ "certificates": list })
}

/// Every name served, with its certificate's expiry (Unix seconds), for
/// [`crate::metrics::Metrics::set_cert_expiries`].
pub fn expiries(certs: &CertStore) -> Vec<(String, i64)> {
    certs
        .all()
        .iter()
        .flat_map(|c| c.names.iter().map(|n| (n.clone(), c.expiry_unix())))
        .collect()
}

/// `app.test, www.app.test; expires 2027-03-01 (89 days)`.
fn summary(loaded: &Loaded, now: SystemTime) -> String {
    let date = humantime::format_rfc3339_seconds(loaded.not_after).to_string();
    let days = days_left(loaded, now);
    let unit = if days == 1 { "day" } else { "days" };
    format!(
        "{}; expires {} ({days} {unit})",
        loaded.names.join(", "),
        &date[..10.min(date.len())]
    )
}

/// What `teal check` found in `[tls]`: a line per certificate (and for ACME), and the problems
/// that would make teal refuse to start or to load a pair.
#[derive(Debug, Default)]
pub struct CheckReport {
    /// For stdout.
    pub lines: Vec<String>,
    /// For stderr; any makes the check fail.
    pub problems: Vec<String>,
}

/// Loads every `[[tls.certs]]` pair as startup and reloads do, and looks at ACME's `state_dir`.
pub fn check(tls: &TlsConfig) -> CheckReport {
    let mut report = CheckReport::default();
    let now = SystemTime::now();
    for (i, files) in tls.certs.iter().enumerate() {
        match load_entry(i, files) {
            Ok(loaded) => report.lines.push(format!(
                "tls.certs[{i}]: {}: {}",
                files.cert.display(),
                summary(&loaded, now)
            )),
            Err(e) => report.problems.push(e),
        }
    }
    if let Some(acme) = &tls.acme {
        match acme_state(acme) {
            Ok(line) => report.lines.push(line),
            Err(e) => report.problems.push(e),
        }
    }
    report
}

/// `tls.acme: DOMAINS: state_dir PATH ...`: whether it exists and teal can write there (or
/// create it).
fn acme_state(acme: &AcmeConfig) -> Result<String, String> {
    let dir = &acme.state_dir;
    let head = format!(
        "tls.acme: {}: state_dir {}",
        acme.domains.join(", "),
        dir.display()
    );
    let fail = |reason: String| format!("tls.acme.state_dir: {}: {reason}", dir.display());
    match std::fs::metadata(dir) {
        Ok(m) if !m.is_dir() => Err(fail("not a directory".into())),
        Ok(_) => {
            writable(dir).map_err(|e| fail(format!("not writable: {e}")))?;
            let entries = std::fs::read_dir(dir).map_or(0, |d| d.count());
            let state = if entries == 0 {
                "exists and is writable, empty (the first certificate is ordered at startup)"
            } else {
                "exists and is writable, holds earlier ACME state"
            };
            Ok(format!("{head} {state}"))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let parent = dir
                .ancestors()
                .skip(1)
                .find(|a| a.as_os_str().is_empty() || a.is_dir())
                .map(|a| {
                    if a.as_os_str().is_empty() {
                        Path::new(".")
                    } else {
                        a
                    }
                });
            match parent.map(writable) {
                Some(Ok(())) => Ok(format!(
                    "{head} does not exist yet (created at startup; the first certificate is ordered then)"
                )),
                Some(Err(e)) => Err(fail(format!("does not exist and cannot be created: {e}"))),
                None => Err(fail("does not exist and cannot be created".into())),
            }
        }
        Err(e) => Err(fail(format!("cannot be read: {e}"))),
    }
}

/// Whether a file can be created in `dir` (made and removed at once).
fn writable(dir: &Path) -> std::io::Result<()> {
    let probe = dir.join(format!(".teal-check-{}", std::process::id()));
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)?;
    std::fs::remove_file(&probe)
}
