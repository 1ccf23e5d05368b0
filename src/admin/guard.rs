//! The rule against cross-site requests to the admin API (CSRF and DNS rebinding).
//!
//! A web page the operator has open can send the admin listener a form post or a `text/plain`
//! fetch without a CORS preflight, and a page on a name the attacker re-points at 127.0.0.1 can
//! even read the answers. [`check`] refuses both, for every endpoint but `/healthz`:
//!
//! - `Host` (and the authority of an absolute or HTTP/2 target) must be an address or name of the
//!   listener; see [`host_accepted`]. A rebound page's `Host` is the attacker's name.
//! - `Origin`, when present, must be the admin API's own: `http://` or `https://` followed by the
//!   request's `Host`. A cross-site page's is its own; a sandboxed one's is `null`.
//! - A request that changes state (any method but GET, HEAD, OPTIONS and TRACE) must carry
//!   `Content-Type: application/json`, or no body and no `Content-Type` (`curl -X POST`). Forms
//!   and `text/plain` are what a page can send without a preflight.

use std::net::SocketAddr;

use http::{header, HeaderValue, Request};
use hyper::body::Body;

use super::AdminError;
use crate::config::AdminHost;

/// Refuses a cross-site request: 403 for a `Host` or `Origin` that is not the admin API's, 415
/// for a state-changing request whose body is not declared JSON.
pub(super) fn check<B: Body>(
    req: &Request<B>,
    listen: SocketAddr,
    names: &[AdminHost],
) -> Result<(), AdminError> {
    let header_host = req.headers().get(header::HOST);
    let target_host = req.uri().authority().map(|a| a.as_str());
    let mut given = header_host.map(|v| v.to_str().unwrap_or("\u{fffd}"));
    if given.is_none() {
        given = target_host;
    }
    let Some(host) = given else {
        return Err(AdminError::CrossSite("a Host header is required".into()));
    };
    for h in [given, target_host].into_iter().flatten() {
        let ok = AdminHost::parse(h).is_ok_and(|h| host_accepted(&h, listen, names));
        if !ok {
            return Err(AdminError::CrossSite(format!(
                "Host {h:?} is not an address or name of this admin API; add the name to \
                 admin.hosts if it is one"
            )));
        }
    }
    if let Some(origin) = req.headers().get(header::ORIGIN) {
        let own = origin.to_str().ok().and_then(|o| {
            o.strip_prefix("http://")
                .or_else(|| o.strip_prefix("https://"))
        });
        if !own.is_some_and(|o| o.eq_ignore_ascii_case(host)) {
            return Err(AdminError::CrossSite(format!(
                "Origin {origin:?} is not this admin API's own (http://{host}); cross-site \
                 requests are refused"
            )));
        }
    }
    if !req.method().is_safe() {
        json_or_empty(req)?;
    }
    Ok(())
}

/// Whether a request's `Host` names the admin listener at `listen`: an entry of `names`
/// (`admin.hosts`); else the listener's own IP; any loopback IP or `localhost` when it listens on
/// loopback; any IP or `localhost` when it listens on all addresses (`0.0.0.0`, `[::]`).
///
/// The port is not compared here: DNS rebinding needs a name the attacker's DNS answers for, and
/// an IP literal or `localhost` cannot be re-pointed, while a published or tunnelled port (Docker
/// `-p 127.0.0.1:18499:9900`, `ssh -L`) differs from the one the listener has.
pub(super) fn host_accepted(host: &AdminHost, listen: SocketAddr, names: &[AdminHost]) -> bool {
    if names.iter().any(|n| n.accepts(host)) {
        return true;
    }
    let listen = listen.ip().to_canonical();
    match host.ip().map(|ip| ip.to_canonical()) {
        Some(ip) => {
            listen.is_unspecified() || ip == listen || (ip.is_loopback() && listen.is_loopback())
        }
        None => host.host == "localhost" && (listen.is_loopback() || listen.is_unspecified()),
    }
}

/// `Content-Type: application/json` (parameters like `charset` allowed), or no body and no
/// `Content-Type`.
fn json_or_empty<B: Body>(req: &Request<B>) -> Result<(), AdminError> {
    let mut types = req.headers().get_all(header::CONTENT_TYPE).iter();
    match (types.next(), types.next()) {
        (None, _) if req.body().size_hint().exact() == Some(0) => Ok(()),
        (None, _) => Err(AdminError::MediaType(
            "a request body needs Content-Type: application/json".into(),
        )),
        (Some(t), None) if is_json(t) => Ok(()),
        (Some(t), None) => Err(AdminError::MediaType(format!(
            "Content-Type must be application/json, not {t:?} (forms and text/plain are what \
             a web page can send without asking; a request without a body may omit it)"
        ))),
        (Some(_), Some(_)) => Err(AdminError::MediaType(
            "send one Content-Type: application/json".into(),
        )),
    }
}

fn is_json(value: &HeaderValue) -> bool {
    let essence = value.as_bytes().split(|&b| b == b';').next();
    essence.is_some_and(|e| e.trim_ascii().eq_ignore_ascii_case(b"application/json"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http_body_util::Full;

    fn host(text: &str) -> AdminHost {
        AdminHost::parse(text).unwrap()
    }

    /// Which Hosts name which listener.
    #[test]
    fn admin_host_rule() {
        let lo: SocketAddr = "127.0.0.1:9900".parse().unwrap();
        let any: SocketAddr = "0.0.0.0:9900".parse().unwrap();
        let one: SocketAddr = "10.0.0.5:9900".parse().unwrap();
        let names = [host("teal-admin.internal"), host("prom:9900")];
        for (h, listen, want) in [
            ("127.0.0.1:9900", lo, true),
            ("localhost:9900", lo, true),
            ("LOCALHOST", lo, true),
            ("[::1]:9900", lo, true),
            ("10.0.0.5:9900", lo, false),
            ("evil.test:9900", lo, false),
            ("localhost.evil.test", lo, false),
            ("teal-admin.internal:1", lo, true),
            ("prom:9900", one, true),
            ("prom:9901", one, false),
            ("10.0.0.5:9900", one, true),
            ("10.0.0.6:9900", one, false),
            ("localhost:9900", one, false),
            ("192.168.1.2:18499", any, true),
            ("localhost:18499", any, true),
            ("evil.test:9900", any, false),
        ] {
            assert_eq!(
                host_accepted(&host(h), listen, &names),
                want,
                "{h} on {listen}"
            );
        }
    }

    fn post(headers: &[(&str, &str)], body: &'static str) -> Result<(), AdminError> {
        let mut req = Request::post("/switch");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req
            .body(Full::new(Bytes::from_static(body.as_bytes())))
            .unwrap();
        check(&req, "127.0.0.1:9900".parse().unwrap(), &[])
    }

    /// What a web page can send is refused; what the CLI and curl send is not.
    #[test]
    fn admin_cross_site_rule() {
        let h = ("host", "127.0.0.1:9900");
        let json = ("content-type", "Application/JSON; charset=utf-8");
        assert!(post(&[h, json], "{}").is_ok());
        assert!(post(&[h], "").is_ok());
        assert!(post(&[h, json, ("origin", "http://127.0.0.1:9900")], "{}").is_ok());
        let media = |r: Result<(), AdminError>| matches!(r, Err(AdminError::MediaType(_)));
        let cross = |r: Result<(), AdminError>| matches!(r, Err(AdminError::CrossSite(_)));
        assert!(media(post(&[h], "{}")));
        assert!(media(post(&[h, ("content-type", "text/plain")], "")));
        assert!(media(post(
            &[h, ("content-type", "application/jsonx")],
            "{}"
        )));
        assert!(cross(post(&[json], "{}")));
        assert!(cross(post(&[("host", "evil.test:9900"), json], "{}")));
        assert!(cross(post(&[h, json, ("origin", "null")], "{}")));
        assert!(cross(post(
            &[h, json, ("origin", "http://127.0.0.1:9901")],
            "{}"
        )));
        assert!(cross(post(
            &[h, json, ("origin", "http://evil.test")],
            "{}"
        )));
    }
}
