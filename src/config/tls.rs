//! The `[tls]` table: the HTTPS listener, its certificates (files, and ACME), the redirect of
//! plain HTTP and HSTS.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use http::HeaderValue;
use serde::Deserialize;

use super::values::listeners_clash;
use super::values::parse_listen;
use super::{relative_to, AdminConfig, Ctx, ProxyConfig, Result};

/// `[tls]` as the file has it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTls {
    listen: String,
    #[serde(default)]
    redirect_http: bool,
    hsts: Option<String>,
    #[serde(default)]
    certs: Vec<RawCert>,
    acme: Option<RawAcme>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCert {
    cert: PathBuf,
    key: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAcme {
    directory: String,
    email: Option<String>,
    domains: Vec<String>,
    #[serde(default = "default_state_dir")]
    state_dir: PathBuf,
    #[serde(default = "default_renew_before", with = "humantime_serde")]
    renew_before: Duration,
    ca_file: Option<PathBuf>,
}

fn default_state_dir() -> PathBuf {
    PathBuf::from("acme")
}

fn default_renew_before() -> Duration {
    Duration::from_secs(30 * 24 * 3600)
}

/// `[tls]`: HTTPS on its own listener.
#[derive(Debug, Clone, PartialEq)]
pub struct TlsConfig {
    /// Where HTTPS is served.
    pub listen: SocketAddr,
    /// The plain listener answers 308 to `https://` (ACME challenges excepted).
    pub redirect_http: bool,
    /// The `Strict-Transport-Security` value added to responses over TLS.
    pub hsts: Option<HeaderValue>,
    /// Certificate files, in file order: SNI picks among them, the first is the default.
    pub certs: Vec<CertFiles>,
    /// Certificates obtained and renewed over ACME.
    pub acme: Option<AcmeConfig>,
}

/// One `[[tls.certs]]` entry: a chain and its key, paths resolved against the config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFiles {
    /// The certificate chain, PEM, leaf first.
    pub cert: PathBuf,
    /// The private key, PEM (PKCS#8, SEC1 or PKCS#1).
    pub key: PathBuf,
}

/// `[tls.acme]`: one certificate for `domains`, from the ACME server at `directory`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcmeConfig {
    /// The ACME directory URL.
    pub directory: String,
    /// The account's contact, if any.
    pub email: Option<String>,
    /// The names the certificate is for (the first is its subject).
    pub domains: Vec<String>,
    /// Where the account key and issued certificates are kept.
    pub state_dir: PathBuf,
    /// How long before its expiry a certificate is renewed.
    pub renew_before: Duration,
    /// Extra trust roots for the directory's HTTPS (a private or test CA).
    pub ca_file: Option<PathBuf>,
}

/// Validates `[tls]`: an address apart from the other listeners, at least one source of
/// certificates, a well-formed HSTS value and ACME domains that are DNS names.
pub(super) fn tls_config(
    raw: RawTls,
    proxy: &ProxyConfig,
    admin: &AdminConfig,
    ctx: &Ctx<'_>,
) -> Result<TlsConfig> {
    let listen = parse_listen(&raw.listen).map_err(|r| ctx.error("tls.listen", r))?;
    for (other, key) in [
        (proxy.listen, "proxy.listen"),
        (admin.listen, "admin.listen"),
    ] {
        if listeners_clash(listen, other) {
            return Err(ctx.error(
                "tls.listen",
                format!("{listen} is also {key} ({other}); HTTPS needs a port of its own"),
            ));
        }
    }
    let hsts = raw
        .hsts
        .map(|h| {
            if !h.trim_start().to_ascii_lowercase().starts_with("max-age=") {
                return Err(ctx.error(
                    "tls.hsts",
                    format!("{h:?} is not a Strict-Transport-Security value (like \"max-age=31536000\")"),
                ));
            }
            HeaderValue::from_str(&h)
                .map_err(|_| ctx.error("tls.hsts", format!("{h:?} cannot be a header value")))
        })
        .transpose()?;
    let certs = raw
        .certs
        .into_iter()
        .map(|c| CertFiles {
            cert: relative_to(ctx.path, c.cert),
            key: relative_to(ctx.path, c.key),
        })
        .collect::<Vec<_>>();
    let acme = raw.acme.map(|a| acme_config(a, ctx)).transpose()?;
    if certs.is_empty() && acme.is_none() {
        return Err(ctx.error(
            "tls",
            "no certificate: add [[tls.certs]] (cert and key files) or [tls.acme]",
        ));
    }
    Ok(TlsConfig {
        listen,
        redirect_http: raw.redirect_http,
        hsts,
        certs,
        acme,
    })
}

fn acme_config(raw: RawAcme, ctx: &Ctx<'_>) -> Result<AcmeConfig> {
    let url = raw.directory.parse::<http::Uri>().ok();
    if !url.is_some_and(|u| u.scheme_str() == Some("https") && u.host().is_some()) {
        return Err(ctx.error(
            "tls.acme.directory",
            format!("{:?} is not an https:// URL", raw.directory),
        ));
    }
    if raw.domains.is_empty() {
        return Err(ctx.error("tls.acme.domains", "name at least one domain"));
    }
    for (i, domain) in raw.domains.iter().enumerate() {
        if !dns_name(domain) {
            return Err(ctx.error(
                &format!("tls.acme.domains[{i}]"),
                format!("{domain:?} is not a DNS name (HTTP-01 cannot validate IP addresses or wildcards)"),
            ));
        }
    }
    if let Some(email) = &raw.email {
        if !email.contains('@') || email.contains(char::is_whitespace) {
            return Err(ctx.error(
                "tls.acme.email",
                format!("{email:?} is not an email address"),
            ));
        }
    }
    if raw.renew_before.is_zero() {
        return Err(ctx.error("tls.acme.renew_before", "must be above zero"));
    }
    Ok(AcmeConfig {
        directory: raw.directory,
        email: raw.email,
        domains: raw.domains,
        state_dir: relative_to(ctx.path, raw.state_dir),
        renew_before: raw.renew_before,
        ca_file: raw.ca_file.map(|f| relative_to(ctx.path, f)),
    })
}

/// A host name HTTP-01 can validate: dot-separated labels of letters, digits and hyphens.
fn dns_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.parse::<std::net::IpAddr>().is_err()
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}
