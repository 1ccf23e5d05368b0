//! The client's request head on teal's own HTTP/1.1 path: parsed with httparse, routed, and
//! written as the upstream's head, or left to the hyper path.

use std::mem::MaybeUninit;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use http::Method;

use crate::access::Logged;
use crate::forward::{self};
use crate::h1::io::BUFFER;
use crate::headers::{self, RequestId};
use crate::headers::{parse_length, push_field, tokens, Field};
use crate::pool::Pool;
use crate::preview::Preview;
use crate::route::{self, Decision};
use crate::server::ServeOptions;
use crate::state::Snapshot;

/// Header fields parsed per request; more go to hyper (which applies `limits.max_headers`).
pub(crate) const REQUEST_FIELDS: usize = 64;

/// A request this path forwards, its upstream head already written.
pub(crate) struct Plan {
    pub(crate) head_len: usize,
    /// The request body's length (`Content-Length`); the whole body follows the head in the
    /// buffer.
    pub(crate) body_len: usize,
    pub(crate) method: Method,
    pub(crate) pool: Arc<Pool>,
    pub(crate) client: IpAddr,
    /// The target as received, for the access log (only when it is on).
    pub(crate) logged: Option<Box<Logged>>,
    /// The client's connection closes after this response (it asked, or teal is draining).
    pub(crate) close: bool,
    /// Safe to send again on a fresh connection if a pooled one turns out closed: idempotent and
    /// without a body, as on the general path.
    pub(crate) idempotent: bool,
    /// Set for a preview route: what its response needs rewritten.
    pub(crate) preview: Option<Preview>,
}

pub(crate) enum Parsed {
    Ready(Plan),
    /// The head is not complete yet.
    Partial,
    /// The head is complete and this path takes it once its body is in the buffer too.
    Body,
    HandOff,
}

/// RFC 9112 §2.3: a request of a higher HTTP/1.x minor version is served as HTTP/1.1. Once the
/// request line is complete, an `HTTP/1.N` (N >= 2) at its end is rewritten to `HTTP/1.1` in
/// place, for this path and for hyper alike (hyper's parser refuses other versions).
pub(crate) fn treat_minor_versions_as_1_1(buf: &mut [u8]) {
    let Some(end) = buf.iter().position(|&b| b == b'\n') else {
        return;
    };
    let line = &mut buf[..end];
    let line = line.strip_suffix(b"\r").map_or(line.len(), <[u8]>::len);
    if let Some(version) = buf[..line].rsplit(|&b| b == b' ').next() {
        if version.len() == 8
            && version.starts_with(b"HTTP/1.")
            && (b'2'..=b'9').contains(&version[7])
        {
            buf[line - 1] = b'1';
        }
    }
}

/// Target bytes taken as they are; anything else (`"#<>\`{|}`, controls, non-ASCII) is left to
/// hyper's URI parser to accept or refuse.
pub(crate) fn plain_target_byte(b: u8) -> bool {
    matches!(b, 0x21 | 0x24..=0x3B | 0x3D | 0x3F..=0x5F | 0x61..=0x7A | 0x7E)
}

/// Parses a request head from `buf` and, if this path takes it, writes the upstream's head into
/// `out`: hop-by-hop fields dropped, `X-Forwarded-*` set, `Host` kept, as
/// [`crate::proxy::Proxy::handle`] does.
pub(crate) fn plan_request(
    buf: &[u8],
    peer: SocketAddr,
    snap: &Snapshot,
    options: &ServeOptions,
    out: &mut Vec<u8>,
) -> Parsed {
    let mut fields = [const { MaybeUninit::uninit() }; REQUEST_FIELDS];
    let mut req = httparse::Request::new(&mut []);
    let head_len = match req.parse_with_uninit_headers(buf, &mut fields) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(_) => return Parsed::HandOff,
    };
    if head_len > options.max_header_bytes || req.headers.len() > options.max_headers {
        return Parsed::HandOff;
    }
    let (Some(method), Some(target), Some(1)) = (req.method, req.path, req.version) else {
        return Parsed::HandOff;
    };
    if method == "CONNECT"
        || method == "PRI"
        || !target.starts_with('/')
        || target.len() > snap.config.limits.max_uri_bytes
        || !target.bytes().all(plain_target_byte)
    {
        return Parsed::HandOff;
    }
    let Ok(method) = Method::from_bytes(method.as_bytes()) else {
        return Parsed::HandOff;
    };
    let mut host = None;
    let mut length = None;
    let mut close = false;
    let mut cookie = false;
    let mut kinds = [Field::Other; REQUEST_FIELDS];
    for (field, kind) in req.headers.iter().zip(&mut kinds) {
        *kind = Field::of(field.name.as_bytes());
        match kind {
            // Two Hosts: the general path decides.
            Field::Host if host.replace(field.value).is_some() => return Parsed::HandOff,
            // Two Cookies: the general path joins them (`headers::join_cookies`).
            Field::Cookie if std::mem::replace(&mut cookie, true) => return Parsed::HandOff,
            // Repeated or not plain digits: the general path decides.
            Field::ContentLength => match parse_length(field.value) {
                Some(n) if length.replace(n).is_none() => {}
                _ => return Parsed::HandOff,
            },
            Field::TransferEncoding | Field::Expect | Field::Upgrade => return Parsed::HandOff,
            Field::Connection => {
                for token in tokens(field.value) {
                    if token.eq_ignore_ascii_case(b"close") {
                        close = true;
                    } else if !token.eq_ignore_ascii_case(b"keep-alive") {
                        return Parsed::HandOff;
                    }
                }
            }
            _ => {}
        }
    }
    // No Host, or one the general path refuses (it answers 400).
    let Some(host) = host.filter(|h| headers::valid_host(h)) else {
        return Parsed::HandOff;
    };
    // A body is taken when it fits in the buffer with its head (small JSON and form posts);
    // larger ones, and ones over `max_body_bytes` (413), are the general path's.
    let body_len = length.unwrap_or(0);
    if body_len > 0
        && (body_len > (BUFFER - head_len) as u64
            || snap
                .config
                .limits
                .max_body_bytes
                .is_some_and(|max| body_len > max))
    {
        return Parsed::HandOff;
    }
    let body_len = body_len as usize;
    let fields = req.headers.iter().zip(kinds);
    let forwarded_for = || {
        fields
            .clone()
            .filter(|(_, kind)| *kind == Field::XForwardedFor)
            .map(|(f, _)| f.value)
    };
    let trusted = &snap.config.proxy.trusted_proxies;
    let client = if trusted.is_empty() {
        peer.ip()
    } else {
        headers::client_ip_from(peer.ip(), forwarded_for(), trusted)
    };
    let (path, query) = match target.bytes().position(|b| b == b'?') {
        Some(at) => (&target[..at], Some(&target[at + 1..])),
        None => (target, None),
    };
    let (pool, rewritten) = match route::decide_target(path, query, client, snap) {
        Decision::Active(pool) => (pool.clone(), None),
        Decision::Preview {
            pool,
            path_and_query,
        } => (pool.clone(), Some(path_and_query)),
        Decision::Forbidden(_) => return Parsed::HandOff,
    };
    // Decided: the rest is done once the body is here.
    if buf.len() < head_len + body_len {
        return Parsed::Body;
    }
    let preview = rewritten
        .is_some()
        .then(|| Preview::new(&pool.name, Some(host)));
    let field = |wanted: Field| {
        fields
            .clone()
            .find(|(_, kind)| *kind == wanted)
            .map_or(&b""[..], |(f, _)| f.value)
    };
    let request_id = RequestId::of(
        fields
            .clone()
            .filter(|(_, kind)| *kind == Field::XRequestId)
            .map(|(f, _)| f.value),
    );
    let logged = snap.config.log.access.then(|| {
        Box::new(Logged::new("HTTP/1.1").path(target.as_bytes()).fields(
            host,
            field(Field::UserAgent),
            field(Field::Referer),
            request_id.as_bytes(),
        ))
    });

    out.clear();
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(rewritten.as_ref().map_or(target, |p| p.as_str()).as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let mut te_trailers = false;
    for (field, kind) in fields.clone() {
        match kind {
            // Hop-by-hop, and the forwarding fields teal sets itself.
            Field::Connection
            | Field::KeepAlive
            | Field::ProxyConnection
            | Field::Trailer
            | Field::ProxyAuthenticate
            | Field::ProxyAuthorization
            | Field::XForwardedFor
            | Field::XForwardedProto
            | Field::XForwardedHost
            | Field::XRequestId => {}
            Field::Te => {
                te_trailers |= tokens(field.value).any(|t| t.eq_ignore_ascii_case(b"trailers"));
            }
            _ => push_field(out, field.name.as_bytes(), field.value),
        }
    }
    if te_trailers {
        out.extend_from_slice(b"te: trailers\r\n");
    }
    out.extend_from_slice(b"x-forwarded-for: ");
    for value in forwarded_for() {
        out.extend_from_slice(value);
        out.extend_from_slice(b", ");
    }
    headers::push_ip(out, peer.ip().to_canonical());
    out.extend_from_slice(b"\r\nx-forwarded-proto: http\r\n");
    push_field(out, b"x-forwarded-host", host);
    push_field(out, b"x-request-id", request_id.as_bytes());
    out.extend_from_slice(b"\r\n");
    Parsed::Ready(Plan {
        head_len,
        body_len,
        idempotent: body_len == 0 && forward::is_idempotent(&method),
        method,
        pool,
        client,
        logged,
        close,
        preview,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(request: &[u8], limits: &str) -> Parsed {
        let text =
            format!("active = \"blue\"\n[pools.blue]\nservers = [\"127.0.0.1:8080\"]\n{limits}");
        let config = Arc::new(crate::config::Config::parse(&text, None).unwrap());
        let snap = Snapshot::build(config, "blue", None, 1, &crate::metrics::Metrics::new());
        let options = ServeOptions::from(crate::server::Timeouts::both(
            std::time::Duration::from_secs(60),
        ));
        let peer = "127.0.0.1:5000".parse().unwrap();
        plan_request(request, peer, &snap, &options, &mut Vec::new())
    }

    /// A body is taken with its head when both fit in the buffer, waited for until it is all
    /// there, and left to the general path when it is too large, over the limit, or its length
    /// is not one plain number.
    #[test]
    fn request_bodies_this_path_takes() {
        let post = |length: &str, body: &[u8]| {
            let mut r = format!("POST /a HTTP/1.1\r\nHost: x\r\n{length}\r\n").into_bytes();
            r.extend_from_slice(body);
            r
        };
        let Parsed::Ready(p) = plan(&post("Content-Length: 5\r\n", b"helloGET"), "") else {
            panic!("a whole body is taken");
        };
        assert_eq!((p.body_len, p.idempotent), (5, false));
        let put = |length: &str, body: &[u8]| {
            let mut r = post(length, body);
            r.splice(..4, *b"PUT");
            plan(&r, "")
        };
        let Parsed::Ready(p) = put("Content-Length: 0\r\n", b"") else {
            panic!("an empty body is no body");
        };
        assert_eq!((p.body_len, p.idempotent), (0, true));
        let Parsed::Ready(p) = put("Content-Length: 2\r\n", b"{}") else {
            panic!("a whole body is taken");
        };
        assert_eq!(
            (p.body_len, p.idempotent),
            (2, false),
            "a body is never sent twice"
        );
        assert!(matches!(
            plan(&post("Content-Length: 5\r\n", b"hel"), ""),
            Parsed::Body
        ));
        let big = format!("Content-Length: {}\r\n", BUFFER);
        for handed_off in [
            post(&big, b""),
            post("Content-Length: 5\r\nContent-Length: 5\r\n", b"hello"),
            post("Content-Length: +5\r\n", b"hello"),
            post(
                "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
                b"hello",
            ),
            post("Content-Length: 5\r\nExpect: 100-continue\r\n", b""),
        ] {
            assert!(
                matches!(plan(&handed_off, ""), Parsed::HandOff),
                "{}",
                String::from_utf8_lossy(&handed_off)
            );
        }
        assert!(matches!(
            plan(
                &post("Content-Length: 5\r\n", b"hello"),
                "[limits]\nmax_body_bytes = 4\n"
            ),
            Parsed::HandOff
        ));
    }
}
