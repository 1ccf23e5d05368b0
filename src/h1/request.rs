//! The client's request head on teal's own HTTP/1.1 path: parsed with httparse, routed, and
//! written as the upstream's head, or left to the hyper path.

use std::mem::MaybeUninit;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use http::{HeaderValue, Method};

use crate::access::Logged;
use crate::forward::{self};
use crate::h1::io::BUFFER;
use crate::headers::{self, RequestId};
use crate::headers::{parse_length, push_field, tokens, Field};
use crate::policy::{self, RequestFacts};
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
    /// The bytes of the request body (`Content-Length`) that follow the head in the buffer: the
    /// whole body, unless it is streamed.
    pub(crate) body_len: usize,
    /// The rest of a streamed body, still in the client's socket: spliced to the upstream after
    /// the head ([`crate::h1::splice::upload`]).
    pub(crate) rest: u64,
    /// The client asked for `100 Continue` before it sends a streamed body.
    pub(crate) expect_continue: bool,
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
    /// The `Set-Cookie` teal appends to the response ([`route::Routed::set_cookie`]).
    pub(crate) set_cookie: Option<HeaderValue>,
    /// The `Strict-Transport-Security` of a response over TLS (`tls.hsts`).
    pub(crate) hsts: Option<HeaderValue>,
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
/// `out`: hop-by-hop fields dropped, `X-Forwarded-*` set, `Host` kept, by the rules the hyper
/// path follows ([`crate::headers::Field`]). A request [`crate::policy::refuse`] refuses, or one
/// this path cannot carry (see the module doc of `h1`), is handed to the hyper path.
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
    let Some((method, target)) = request_line(&req) else {
        return Parsed::HandOff;
    };
    let mut kinds = [Field::Other; REQUEST_FIELDS];
    let Some(scan) = Scan::of(req.headers, &mut kinds, snap.config.preview.header.as_ref()) else {
        return Parsed::HandOff;
    };
    if scan.refused(&method, target, snap) || answered_plain(options.secure, target, snap) {
        return Parsed::HandOff;
    }
    let (Some(host), length) = (scan.hosts[0], scan.length.unwrap_or(0)) else {
        return Parsed::HandOff;
    };
    let fields = Fields(req.headers, &kinds[..req.headers.len()]);
    let Some(to) = routed(&fields, target, peer, snap) else {
        return Parsed::HandOff;
    };
    let streams = || streams(options, snap, &to);
    let (body_len, rest) = match body_parts(buf.len() - head_len, head_len, length, &scan, streams)
    {
        Ok(parts) => parts,
        Err(NotNow::Body) => return Parsed::Body,
        Err(NotNow::HandOff) => return Parsed::HandOff,
    };
    let request_id = RequestId::of(fields.all(Field::XRequestId));
    let logged = snap.config.log.access.then(|| {
        let (agent, referer) = (fields.first(Field::UserAgent), fields.first(Field::Referer));
        let id = request_id.as_bytes();
        let logged = Logged::new("HTTP/1.1", target.as_bytes(), host, agent, referer, id);
        Box::new(logged)
    });
    write_upstream_head(
        out,
        (
            &method,
            to.rewritten.as_ref().map_or(target, |p| p.as_str()),
        ),
        &fields,
        peer,
        host,
        &request_id,
        options.secure,
    );
    Parsed::Ready(Plan {
        head_len,
        body_len,
        rest,
        expect_continue: scan.expect_continue && rest > 0,
        idempotent: length == 0 && forward::is_idempotent(&method),
        method,
        preview: to
            .rewritten
            .map(|_| Preview::new(&to.pool.name, Some(host))),
        set_cookie: to.set_cookie,
        hsts: (snap.config.tls.as_ref())
            .filter(|_| options.secure)
            .and_then(|t| t.hsts.clone()),
        pool: to.pool,
        client: to.client,
        logged,
        close: scan.close,
    })
}

/// The method and target of an HTTP/1.1 request this path writes as they are: origin form, plain
/// characters, not HTTP/2's preface.
fn request_line<'b>(req: &httparse::Request<'_, 'b>) -> Option<(Method, &'b str)> {
    let (Some(method), Some(target), Some(1)) = (req.method, req.path, req.version) else {
        return None;
    };
    if method == "PRI" || !target.starts_with('/') || !target.bytes().all(plain_target_byte) {
        return None;
    }
    Some((Method::from_bytes(method.as_bytes()).ok()?, target))
}

/// Whether teal answers this request itself on the plain listener (a redirect to https:// or an
/// ACME challenge, [`policy::plain_answer`]): the general path does.
fn answered_plain(secure: bool, target: &str, snap: &Snapshot) -> bool {
    policy::plain_answer(secure, target, snap.config.tls.as_ref()).is_some()
}

/// How a request body of `length` bytes goes, `here` of them in the buffer after the head: taken
/// with its head when it fits in the buffer (small JSON and form posts; not until it is all
/// here), streamed when it is larger or the client waits for `100 Continue` (if
/// [`streams`] says it can be): the bytes here and the rest still to come. Else the hyper path
/// takes it.
fn body_parts(
    here: usize,
    head_len: usize,
    length: u64,
    scan: &Scan<'_>,
    streams: impl FnOnce() -> bool,
) -> Result<(usize, u64), NotNow> {
    if length <= (BUFFER - head_len) as u64 && !scan.expect_continue {
        if here < length as usize {
            return Err(NotNow::Body);
        }
        Ok((length as usize, 0))
    } else if streams() {
        let here = here.min(length as usize);
        Ok((here, length - here as u64))
    } else {
        Err(NotNow::HandOff)
    }
}

/// Why [`body_parts`] does not take a body now: [`Parsed::Body`] or [`Parsed::HandOff`].
enum NotNow {
    Body,
    HandOff,
}

/// Whether a request body that is not all in the buffer is streamed on this path: spliced from a
/// plain client socket, and not wanted whole by a mirrored copy (the hyper path tees it).
fn streams(options: &ServeOptions, snap: &Snapshot, to: &Target) -> bool {
    !options.secure && snap.mirror_for(&to.pool, to.rewritten.is_some()).is_none()
}

/// Where a request goes ([`route::decide_target`]'s answer, owned).
struct Target {
    /// The client's address, after `trusted_proxies`.
    client: IpAddr,
    pool: Arc<Pool>,
    /// The target a preview route rewrote.
    rewritten: Option<http::uri::PathAndQuery>,
    set_cookie: Option<HeaderValue>,
}

/// Where the request goes; `None` for a preview the client may not use (the hyper path answers
/// 403).
fn routed(
    fields: &Fields<'_, '_>,
    target: &str,
    peer: SocketAddr,
    snap: &Snapshot,
) -> Option<Target> {
    let trusted = &snap.config.proxy.trusted_proxies;
    let client = if trusted.is_empty() {
        peer.ip()
    } else {
        headers::client_ip_from(peer.ip(), fields.all(Field::XForwardedFor), trusted)
    };
    let (path, query) = match target.bytes().position(|b| b == b'?') {
        Some(at) => (&target[..at], Some(&target[at + 1..])),
        None => (target, None),
    };
    // `Scan::of` handed off requests with several Cookie fields: there is at most one.
    let hints = route::Hints {
        cookie: fields.all(Field::Cookie).next(),
        pool: fields.all(Field::Routing).next(),
    };
    let routed = route::decide_target(path, query, client, hints, snap);
    let (pool, rewritten) = match routed.decision {
        Decision::Active(pool) => (pool.clone(), None),
        Decision::Preview {
            pool,
            path_and_query,
        } => (pool.clone(), Some(path_and_query)),
        Decision::Forbidden(_) => return None,
    };
    Some(Target {
        client,
        pool,
        rewritten,
        set_cookie: routed.set_cookie,
    })
}

/// What the field scan of a request head found.
struct Scan<'a> {
    hosts: [Option<&'a [u8]>; 2],
    length: Option<u64>,
    close: bool,
    /// One `Expect: 100-continue`.
    expect_continue: bool,
}

impl<'a> Scan<'a> {
    /// Classifies every field into `kinds`; `None` when the request is one for the hyper path:
    /// a body framing other than one plain Content-Length, an `Expect` but one `100-continue`
    /// (RFC 9110 §10.1.1; hyper answers 417 to others), `Upgrade`, a `Connection`
    /// token but `keep-alive` and `close`, or several `Cookie` fields (the hyper path joins them).
    /// Fields called `routing` (the `[preview] header`) are [`Field::Routing`].
    fn of(
        fields: &'a [httparse::Header<'a>],
        kinds: &mut [Field],
        routing: Option<&http::HeaderName>,
    ) -> Option<Scan<'a>> {
        let mut scan = Scan {
            hosts: [None, None],
            length: None,
            close: false,
            expect_continue: false,
        };
        let mut cookie = false;
        for (field, kind) in fields.iter().zip(kinds) {
            *kind = Field::of(field.name.as_bytes());
            if *kind == Field::Other
                && routing.is_some_and(|r| field.name.eq_ignore_ascii_case(r.as_str()))
            {
                *kind = Field::Routing;
            }
            match kind {
                Field::Host if scan.hosts[0].is_none() => scan.hosts[0] = Some(field.value),
                Field::Host => scan.hosts[1] = Some(field.value),
                Field::Cookie if std::mem::replace(&mut cookie, true) => return None,
                Field::ContentLength => match parse_length(field.value) {
                    Some(n) if scan.length.replace(n).is_none() => {}
                    _ => return None,
                },
                Field::Expect
                    if field.value.eq_ignore_ascii_case(b"100-continue")
                        && !std::mem::replace(&mut scan.expect_continue, true) => {}
                Field::TransferEncoding | Field::Expect | Field::Upgrade => return None,
                Field::Connection => {
                    for token in tokens(field.value) {
                        if token.eq_ignore_ascii_case(b"close") {
                            scan.close = true;
                        } else if !token.eq_ignore_ascii_case(b"keep-alive") {
                            return None;
                        }
                    }
                }
                _ => {}
            }
        }
        Some(scan)
    }

    /// Whether [`policy::refuse`] refuses this request (the hyper path then answers it).
    fn refused(&self, method: &Method, target: &str, snap: &Snapshot) -> bool {
        let facts = RequestFacts {
            method,
            version: http::Version::HTTP_11,
            authority: None,
            asterisk: false,
            target_len: target.len(),
            hosts: self.hosts,
            transfer_coding: None,
            content_length: self.length,
        };
        policy::refuse(&facts, &snap.config.limits).is_some()
    }
}

/// A request head's fields with their kinds.
struct Fields<'a, 'h>(&'a [httparse::Header<'h>], &'a [Field]);

impl<'a, 'h> Fields<'a, 'h> {
    fn iter(&self) -> impl Iterator<Item = (&'a httparse::Header<'h>, Field)> + Clone {
        self.0.iter().zip(self.1.iter().copied())
    }

    /// The values of every field of kind `wanted`, in order.
    fn all(&self, wanted: Field) -> impl DoubleEndedIterator<Item = &'h [u8]> + Clone + 'a {
        let (fields, kinds) = (self.0, self.1);
        fields
            .iter()
            .zip(kinds)
            .filter(move |(_, kind)| **kind == wanted)
            .map(|(f, _)| f.value)
    }

    /// The value of the first field of kind `wanted`, or nothing.
    fn first(&self, wanted: Field) -> &'h [u8] {
        self.all(wanted).next().unwrap_or_default()
    }
}

/// Writes the upstream's request head: the client's fields but the hop-by-hop ones and those teal
/// sets itself, `TE: trailers` if asked, then `X-Forwarded-For` (appended to), `-Proto`, `-Host`
/// and `X-Request-Id`, as `headers::set_forwarding` and `headers::set_request_id` do on the hyper
/// path.
fn write_upstream_head(
    out: &mut Vec<u8>,
    (method, target): (&Method, &str),
    fields: &Fields<'_, '_>,
    peer: SocketAddr,
    host: &[u8],
    request_id: &RequestId<'_>,
    secure: bool,
) {
    out.clear();
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let mut te_trailers = false;
    for (field, kind) in fields.iter() {
        match kind {
            Field::Te => {
                te_trailers |= tokens(field.value).any(|t| t.eq_ignore_ascii_case(b"trailers"));
            }
            k if k.is_hop_by_hop() || k.is_set_by_teal() || k == Field::Routing => {}
            _ => push_field(out, field.name.as_bytes(), field.value),
        }
    }
    if te_trailers {
        out.extend_from_slice(b"te: trailers\r\n");
    }
    out.extend_from_slice(b"x-forwarded-for: ");
    for value in fields.all(Field::XForwardedFor) {
        out.extend_from_slice(value);
        out.extend_from_slice(b", ");
    }
    headers::push_ip(out, peer.ip().to_canonical());
    out.extend_from_slice(if secure {
        b"\r\nx-forwarded-proto: https\r\n"
    } else {
        b"\r\nx-forwarded-proto: http\r\n"
    });
    push_field(out, b"x-forwarded-host", host);
    push_field(out, b"x-request-id", request_id.as_bytes());
    out.extend_from_slice(b"\r\n");
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
    /// there; streamed when it is larger or the client awaits `100 Continue`; and left to the
    /// general path when it is over the limit, its length is not one plain number, or it expects
    /// anything else.
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
        // Larger than the buffer, or awaited with `100 Continue`: streamed, with what is here.
        let parts = |request: Vec<u8>| match plan(&request, "") {
            Parsed::Ready(p) => (p.body_len, p.rest, p.expect_continue),
            _ => panic!("not taken: {}", String::from_utf8_lossy(&request)),
        };
        let big = format!("Content-Length: {}\r\n", BUFFER);
        assert_eq!(parts(post(&big, b"abc")), (3, BUFFER as u64 - 3, false));
        let expect = "Content-Length: 5\r\nExpect: 100-Continue\r\n";
        assert_eq!(parts(post(expect, b"")), (0, 5, true));
        // The body came anyway: taken whole, no 100 sent.
        assert_eq!(parts(post(expect, b"hello")), (5, 0, false));
        for handed_off in [
            post("Content-Length: 5\r\nContent-Length: 5\r\n", b"hello"),
            post("Content-Length: +5\r\n", b"hello"),
            post(
                "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
                b"hello",
            ),
            post("Content-Length: 5\r\nExpect: something-else\r\n", b""),
            post(
                "Content-Length: 5\r\nExpect: 100-continue\r\nExpect: 100-continue\r\n",
                b"",
            ),
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
