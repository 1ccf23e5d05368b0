//! Which requests teal refuses, decided once from a request's facts and `[limits]`, for both
//! paths. Each path gathers [`RequestFacts`] from what it parsed (httparse on teal's own path,
//! hyper's `Request` on the general one) and asks [`refuse`]; the own path hands a request that
//! would be refused to the general path, which answers it, so a limit added here holds on both.

use http::{Method, Version};

use crate::config::Limits;
use crate::error::ProxyError;
use crate::headers;

/// What the refusal rules look at in a request head.
#[derive(Debug)]
pub struct RequestFacts<'a> {
    /// The method.
    pub method: &'a Method,
    /// HTTP/1.0, HTTP/1.1 or HTTP/2.
    pub version: Version,
    /// The request target's authority (absolute form, or HTTP/2's `:authority`).
    pub authority: Option<&'a [u8]>,
    /// Whether the target is the asterisk form (`*`).
    pub asterisk: bool,
    /// The target's length as received: path and query, plus the authority if any.
    pub target_len: usize,
    /// The `Host` field values, at most the first two.
    pub hosts: [Option<&'a [u8]>; 2],
    /// Whether the request has `Transfer-Encoding`, and whether its codings are `chunked` alone.
    pub transfer_coding: Option<bool>,
    /// The declared `Content-Length`, if one parsed.
    pub content_length: Option<u64>,
}

/// Why `facts` is refused, if it is: 405 CONNECT, 400 Host or target, 501 transfer coding, 414,
/// 413. (hyper's parser refuses malformed heads before teal sees them; README "Limits and
/// defaults" lists all.)
pub fn refuse(facts: &RequestFacts<'_>, limits: &Limits) -> Option<ProxyError> {
    if *facts.method == Method::CONNECT {
        return Some(ProxyError::Method(Method::CONNECT));
    }
    // RFC 9112 §3.2: HTTP/1.1 needs exactly one valid Host; where one is sent it must be valid.
    let host_ok = match facts.hosts {
        [None, _] => facts.version != Version::HTTP_11,
        [Some(h), None] => headers::valid_host(h),
        [Some(_), Some(_)] => false,
    };
    if !host_ok {
        return Some(ProxyError::BadHost);
    }
    if facts.authority.is_some_and(|a| a.contains(&b'@')) {
        return Some(ProxyError::BadTarget("userinfo in the target"));
    }
    if facts.asterisk && *facts.method != Method::OPTIONS {
        return Some(ProxyError::BadTarget("asterisk form is for OPTIONS only"));
    }
    if facts.transfer_coding == Some(false) {
        return Some(ProxyError::TransferCoding);
    }
    // An HTTP/1 absolute-form target (`GET http://other.test/ HTTP/1.1`) is what a forward proxy
    // gets; a reverse proxy refuses one that disagrees with Host rather than pick either.
    if facts.version < Version::HTTP_2 {
        if let (Some(target), [Some(host), _]) = (facts.authority, facts.hosts) {
            if !target.eq_ignore_ascii_case(host) {
                return Some(ProxyError::MisdirectedTarget {
                    target: String::from_utf8_lossy(target).into_owned(),
                    host: String::from_utf8_lossy(host).into_owned(),
                });
            }
        }
    }
    if facts.target_len > limits.max_uri_bytes {
        return Some(ProxyError::UriTooLong(limits.max_uri_bytes));
    }
    match (limits.max_body_bytes, facts.content_length) {
        (Some(limit), Some(n)) if n > limit => Some(ProxyError::BodyTooLarge(limit)),
        _ => None,
    }
}

/// What the plain listener answers itself, before any routing, when `[tls]` is configured.
#[derive(Debug, PartialEq, Eq)]
pub enum PlainAnswer<'a> {
    /// An ACME HTTP-01 challenge (`[tls.acme]`): the key authorization for this token, or 404.
    Challenge(&'a str),
    /// `redirect_http`: 308 to the same target over `https://`.
    Redirect,
}

/// Whether a request for `path` on the plain listener is answered by teal itself (see
/// [`PlainAnswer`]); `None` on the TLS listener and without `[tls]`.
pub fn plain_answer<'a>(
    secure: bool,
    path: &'a str,
    tls: Option<&crate::config::TlsConfig>,
) -> Option<PlainAnswer<'a>> {
    let tls = tls.filter(|_| !secure)?;
    if tls.acme.is_some() {
        if let Some(token) = path.strip_prefix(crate::tls::CHALLENGE_PREFIX) {
            return Some(PlainAnswer::Challenge(token));
        }
    }
    tls.redirect_http.then_some(PlainAnswer::Redirect)
}

/// The `Location` of `redirect_http`'s 308: `https://`, the host the client addressed without
/// its port, the TLS listener's port unless 443, and the target as received. `None` when the
/// client named no host to redirect to.
pub fn https_location(host: Option<&[u8]>, tls_port: u16, target: &str) -> Option<String> {
    let host = std::str::from_utf8(host?).ok()?;
    let name = match host.rfind(':') {
        // An IPv6 literal keeps its brackets; a port after them (or after a name) goes.
        Some(at) if !host[at..].contains(']') => &host[..at],
        _ => host,
    };
    if name.is_empty() {
        return None;
    }
    let target = if target.starts_with('/') { target } else { "/" };
    Some(match tls_port {
        443 => format!("https://{name}{target}"),
        port => format!("https://{name}:{port}{target}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(method: &Method) -> RequestFacts<'_> {
        RequestFacts {
            method,
            version: Version::HTTP_11,
            authority: None,
            asterisk: false,
            target_len: 2,
            hosts: [Some(b"x"), None],
            transfer_coding: None,
            content_length: None,
        }
    }

    /// The redirect keeps the host's name and the target, and names the TLS port unless 443.
    #[test]
    fn https_locations() {
        assert_eq!(
            https_location(Some(b"app.test:8080"), 443, "/a?b=1").as_deref(),
            Some("https://app.test/a?b=1")
        );
        assert_eq!(
            https_location(Some(b"app.test"), 8443, "/").as_deref(),
            Some("https://app.test:8443/")
        );
        assert_eq!(
            https_location(Some(b"[::1]:80"), 443, "/x").as_deref(),
            Some("https://[::1]/x")
        );
        assert_eq!(
            https_location(Some(b"[::1]"), 443, "/x").as_deref(),
            Some("https://[::1]/x")
        );
        assert_eq!(https_location(None, 443, "/"), None);
        assert_eq!(https_location(Some(b":80"), 443, "/"), None);
    }

    /// Each rule gives its status; a plain request passes.
    #[test]
    fn refusals() {
        let limits = Limits {
            max_body_bytes: Some(10),
            ..Limits::default()
        };
        let get = Method::GET;
        let status = |f: RequestFacts<'_>| refuse(&f, &limits).map(|e| e.status().as_u16());
        assert_eq!(status(facts(&get)), None);
        assert_eq!(status(facts(&Method::CONNECT)), Some(405));
        assert_eq!(
            status(RequestFacts {
                hosts: [None, None],
                ..facts(&get)
            }),
            Some(400)
        );
        let old = RequestFacts {
            hosts: [None, None],
            version: Version::HTTP_10,
            ..facts(&get)
        };
        assert_eq!(status(old), None);
        let two = RequestFacts {
            hosts: [Some(b"x"), Some(b"y")],
            ..facts(&get)
        };
        assert_eq!(status(two), Some(400));
        let bad = RequestFacts {
            hosts: [Some(b"a b"), None],
            ..facts(&get)
        };
        assert_eq!(status(bad), Some(400));
        let userinfo = RequestFacts {
            authority: Some(b"u@x"),
            ..facts(&get)
        };
        assert_eq!(status(userinfo), Some(400));
        assert_eq!(
            status(RequestFacts {
                asterisk: true,
                ..facts(&get)
            }),
            Some(400)
        );
        assert_eq!(
            status(RequestFacts {
                asterisk: true,
                ..facts(&Method::OPTIONS)
            }),
            None
        );
        let coded = RequestFacts {
            transfer_coding: Some(false),
            ..facts(&get)
        };
        assert_eq!(status(coded), Some(501));
        let other = RequestFacts {
            authority: Some(b"y"),
            ..facts(&get)
        };
        assert_eq!(status(other), Some(400));
        let long = RequestFacts {
            target_len: limits.max_uri_bytes + 1,
            ..facts(&get)
        };
        assert_eq!(status(long), Some(414));
        let big = RequestFacts {
            content_length: Some(11),
            ..facts(&get)
        };
        assert_eq!(status(big), Some(413));
    }
}
