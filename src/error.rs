//! Why a request got a response made by teal: [`ProxyError`], its status and short body, and the
//! constructors that record an upstream's failure in its passive health. Both request paths
//! answer with these.

use std::time::Duration;

use http::{Method, StatusCode};

use crate::pool::{Pool, Upstream};

/// Why a request got a response made by teal instead of the upstream's.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// A preview route from an address outside `preview.allow`.
    #[error("preview route not open to this address")]
    Forbidden,
    /// A method teal does not proxy.
    #[error("method {0} is not supported")]
    Method(Method),
    /// An absolute-form target naming a different host than the `Host` header.
    #[error("absolute-form target names {target} but Host says {host}")]
    MisdirectedTarget {
        /// The target's authority.
        target: String,
        /// The Host header.
        host: String,
    },
    /// A missing, repeated or invalid `Host` (RFC 9112 §3.2).
    #[error("missing, repeated or invalid Host")]
    BadHost,
    /// A request target teal does not forward: userinfo in an absolute-form target, or the
    /// asterisk form on a method other than OPTIONS.
    #[error("request target not accepted: {0}")]
    BadTarget(&'static str),
    /// A transfer coding other than `chunked` (RFC 9112 §6.1).
    #[error("transfer coding other than chunked")]
    TransferCoding,
    /// The client's request body was malformed or ended early.
    #[error("the request body was malformed or cut short: {0}")]
    ClientBody(String),
    /// The client paused longer than `client_body_timeout` while sending its body.
    #[error("the request body paused longer than {0:?}")]
    ClientBodyTimeout(Duration),
    /// The request target is longer than `limits.max_uri_bytes`.
    #[error("request target longer than {0} bytes")]
    UriTooLong(usize),
    /// The body is longer than `limits.max_body_bytes`.
    #[error("request body longer than {0} bytes")]
    BodyTooLarge(u64),
    /// Every server of the pool refused or timed out the connection.
    #[error("no server of pool {pool} reachable: {last}")]
    NoUpstream {
        /// The pool.
        pool: String,
        /// The last server tried (empty when none was).
        server: String,
        /// The last connect error.
        last: String,
    },
    /// The upstream failed after the request was sent (reset, malformed response).
    #[error("upstream {server} failed: {reason}")]
    Upstream {
        /// The server.
        server: String,
        /// What happened.
        reason: String,
    },
    /// The upstream took none of the request body for `upstream_body_timeout`.
    #[error("upstream {server} took none of the request body for {timeout:?}")]
    Stalled {
        /// The server.
        server: String,
        /// The timeout in force.
        timeout: Duration,
    },
    /// No response head within `response_timeout`.
    #[error("upstream {server} sent no response within {timeout:?}")]
    Timeout {
        /// The server.
        server: String,
        /// The timeout in force.
        timeout: Duration,
    },
}

impl ProxyError {
    /// The status the client gets.
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::Forbidden => StatusCode::FORBIDDEN,
            ProxyError::Method(_) => StatusCode::METHOD_NOT_ALLOWED,
            ProxyError::MisdirectedTarget { .. }
            | ProxyError::BadHost
            | ProxyError::BadTarget(_)
            | ProxyError::ClientBody(_) => StatusCode::BAD_REQUEST,
            ProxyError::TransferCoding => StatusCode::NOT_IMPLEMENTED,
            ProxyError::ClientBodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ProxyError::UriTooLong(_) => StatusCode::URI_TOO_LONG,
            ProxyError::BodyTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::NoUpstream { .. } | ProxyError::Upstream { .. } => StatusCode::BAD_GATEWAY,
            ProxyError::Timeout { .. } | ProxyError::Stalled { .. } => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// The short body the client gets: status line words and a reason, nothing internal.
    pub(crate) fn body(&self) -> &'static str {
        match self {
            ProxyError::Forbidden => "403 forbidden: preview routes are not open to your address\n",
            ProxyError::Method(_) => "405 method not allowed\n",
            ProxyError::MisdirectedTarget { .. } => {
                "400 bad request: the request target names another host\n"
            }
            ProxyError::BadHost => "400 bad request: missing, repeated or invalid Host\n",
            ProxyError::BadTarget(_) => "400 bad request: request target not accepted\n",
            ProxyError::TransferCoding => {
                "501 not implemented: transfer coding other than chunked\n"
            }
            ProxyError::ClientBody(_) => {
                "400 bad request: the request body was malformed or cut short\n"
            }
            ProxyError::ClientBodyTimeout(_) => {
                "408 request timeout: the request body was too slow\n"
            }
            ProxyError::UriTooLong(_) => "414 request target too long\n",
            ProxyError::BodyTooLarge(_) => "413 request body too large\n",
            ProxyError::NoUpstream { .. } => "502 bad gateway: no upstream server reachable\n",
            ProxyError::Upstream { .. } => "502 bad gateway: the upstream server failed\n",
            ProxyError::Timeout { .. } | ProxyError::Stalled { .. } => {
                "504 gateway timeout: the upstream server did not answer in time\n"
            }
        }
    }
}

impl ProxyError {
    /// `server` failed after the request was sent: recorded in its passive health.
    pub(crate) fn upstream_failed(server: &Upstream, reason: String) -> ProxyError {
        server.health.passive_failure(&reason);
        ProxyError::Upstream {
            server: server.authority.to_string(),
            reason,
        }
    }

    /// `server` sent no response head within `timeout`: recorded in its passive health.
    pub(crate) fn timed_out(server: &Upstream, timeout: Duration) -> ProxyError {
        let err = ProxyError::Timeout {
            server: server.authority.to_string(),
            timeout,
        };
        server.health.passive_failure(&err.to_string());
        err
    }

    /// `server` stopped taking the request body for `timeout`: recorded in its passive health.
    pub(crate) fn stalled(server: &Upstream, timeout: Duration) -> ProxyError {
        let err = ProxyError::Stalled {
            server: server.authority.to_string(),
            timeout,
        };
        server.health.passive_failure(&err.to_string());
        err
    }

    /// No server of `pool` could be reached; `last` is the last failure.
    pub(crate) fn no_upstream(pool: &Pool, last: LastFailure) -> ProxyError {
        ProxyError::NoUpstream {
            pool: pool.name.to_string(),
            server: last.server,
            last: last.text,
        }
    }

    /// The server that failed, for the access log.
    pub fn server(&self) -> Option<&str> {
        match self {
            ProxyError::NoUpstream { server, .. } if !server.is_empty() => Some(server),
            ProxyError::Upstream { server, .. }
            | ProxyError::Timeout { server, .. }
            | ProxyError::Stalled { server, .. } => Some(server),
            _ => None,
        }
    }
}

/// The last failure of a walk through a pool: the server and what the 502 says.
#[derive(Debug, Default)]
pub(crate) struct LastFailure {
    pub(crate) server: String,
    pub(crate) text: String,
}

/// An error and its causes on one line (`a: b: c`), as linkerd and ripgrep print them. A cause
/// whose text is already there (an error that prints its source itself, as instant-acme's do) is
/// not repeated.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_chain_names_each_cause_once() {
        let inner = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let outer = instant_acme::Error::Other(Box::new(inner));
        assert_eq!(error_chain(&outer), "refused");
        #[derive(Debug)]
        struct Outer(std::io::Error);
        impl std::fmt::Display for Outer {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("client error (Connect)")
            }
        }
        impl std::error::Error for Outer {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let e = Outer(std::io::Error::other("tcp connect error"));
        assert_eq!(error_chain(&e), "client error (Connect): tcp connect error");
    }

    /// Each error maps to the status the contract names; bodies are short and end in a newline.
    #[test]
    fn error_statuses() {
        let cases = [
            (ProxyError::Forbidden, 403),
            (ProxyError::Method(Method::CONNECT), 405),
            (ProxyError::UriTooLong(8), 414),
            (
                ProxyError::MisdirectedTarget {
                    target: "a".into(),
                    host: "b".into(),
                },
                400,
            ),
            (ProxyError::BodyTooLarge(8), 413),
            (ProxyError::BadHost, 400),
            (ProxyError::BadTarget("x"), 400),
            (ProxyError::ClientBody(String::new()), 400),
            (ProxyError::ClientBodyTimeout(Duration::from_secs(1)), 408),
            (ProxyError::TransferCoding, 501),
            (
                ProxyError::NoUpstream {
                    pool: "g".into(),
                    server: String::new(),
                    last: String::new(),
                },
                502,
            ),
            (
                ProxyError::Upstream {
                    server: "s".into(),
                    reason: String::new(),
                },
                502,
            ),
            (
                ProxyError::Timeout {
                    server: "s".into(),
                    timeout: Duration::from_secs(1),
                },
                504,
            ),
        ];
        for (err, code) in cases {
            assert_eq!(err.status().as_u16(), code, "{err}");
            assert!(err.body().starts_with(&code.to_string()));
            assert!(err.body().ends_with('\n') && err.body().len() < 100);
        }
    }
}
