//! Header rules for forwarding: hop-by-hop stripping, forwarding headers, Host, upgrades.
//!
//! All functions are pure and table-tested below. The order the proxy applies them in matters:
//! capture the original host first, then strip, then add forwarding headers, then fix `Host`
//! (rpxy's "every Host rewrite happens after add_forwarding_header()").

use std::net::IpAddr;

use bytes::BytesMut;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;
use http::Version;

/// Hop-by-hop headers that are never forwarded, besides `Connection` and the names it lists
/// (RFC 9110 §7.6.1; `Keep-Alive` and `Proxy-Connection` are the legacy ones every proxy drops).
static HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
];

/// `X-Forwarded-For`, `-Proto` and `-Host`: the de facto forwarding headers nginx users expect.
pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// See [`X_FORWARDED_FOR`].
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// Marks a mirrored copy (see the `mirror` module); only teal sets it.
pub static X_TEAL_MIRROR: HeaderName = HeaderName::from_static("x-teal-mirror");
/// See [`X_FORWARDED_FOR`].
pub static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Names a client may list in `Connection` that are never removed for it: dropping them would
/// change the request's meaning or framing rather than a hop's ("Connection: Host" is a known trick
/// to strip headers a proxy relies on).
static PROTECTED: [HeaderName; 3] = [
    header::HOST,
    header::CONTENT_LENGTH,
    HeaderName::from_static("x-forwarded-for"),
];

/// Removes `Connection`, every header it names, and the fixed hop-by-hop set (RFC 9110 §7.6.1).
/// `TE: trailers` is kept, as it is end-to-end in meaning (RFC 9110 §10.1.4; gRPC needs it).
/// Used for requests and responses alike, except a `101` response, which is relayed untouched.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Which of the fixed names are present, in one pass over the names: most requests carry none,
    // and most responses only `Connection: keep-alive`, so removing all nine by hash is waste.
    let mut present = [false; HOP_BY_HOP.len()];
    for name in headers.keys() {
        if let Some(i) = HOP_BY_HOP.iter().position(|h| h == name) {
            present[i] = true;
        }
    }
    if !present.contains(&true) {
        return;
    }
    let te_trailers = headers
        .get_all(header::TE)
        .iter()
        .any(|v| has_token(v, "trailers"));
    if present[0] {
        // The names `Connection` lists, past the fixed ones (removed below). No allocation
        // unless there is one.
        let mut listed: Vec<HeaderName> = Vec::new();
        for value in headers.get_all(header::CONNECTION) {
            let Ok(value) = value.to_str() else {
                continue;
            };
            for token in value.split(',').map(str::trim) {
                if token.eq_ignore_ascii_case("keep-alive") {
                    continue;
                }
                if let Ok(name) = HeaderName::from_bytes(token.as_bytes()) {
                    if !PROTECTED.contains(&name) && !HOP_BY_HOP.contains(&name) {
                        listed.push(name);
                    }
                }
            }
        }
        for name in listed {
            headers.remove(name);
        }
    }
    for (name, _) in HOP_BY_HOP.iter().zip(present).filter(|(_, p)| *p) {
        headers.remove(name);
    }
    if te_trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
}

/// The protocol an HTTP/1.1 request asks to upgrade to (`Upgrade: websocket` with `upgrade` in
/// `Connection`), or `None`. HTTP/2 has no upgrades (RFC 9113 §8.6).
pub fn upgrade_protocol(headers: &HeaderMap, version: Version) -> Option<HeaderValue> {
    if version != Version::HTTP_11 {
        return None;
    }
    let asks = headers
        .get_all(header::CONNECTION)
        .iter()
        .any(|v| has_token(v, "upgrade"));
    if asks {
        headers.get(header::UPGRADE).cloned()
    } else {
        None
    }
}

/// Puts back what an upgrade request needs after [`strip_hop_by_hop`] took it out.
pub fn restore_upgrade(headers: &mut HeaderMap, protocol: HeaderValue) {
    headers.insert(header::UPGRADE, protocol);
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
}

/// The host the client addressed: the authority of an absolute-form or HTTP/2 request target,
/// else the `Host` header. Captured before any rewrite, for `X-Forwarded-Host`.
pub fn original_host(parts: &Parts) -> Option<HeaderValue> {
    match parts.uri.authority() {
        Some(auth) => HeaderValue::from_str(auth.as_str()).ok(),
        None => parts.headers.get(header::HOST).cloned(),
    }
}

/// The host the client addressed, as it sent it: an absolute-form target's (or HTTP/2's
/// `:authority`), else the `Host` field.
pub fn addressed_host<B>(req: &http::Request<B>) -> Option<&[u8]> {
    match req.uri().authority() {
        Some(a) => Some(a.as_str().as_bytes()),
        None => req.headers().get(header::HOST).map(HeaderValue::as_bytes),
    }
}

/// Appends `peer` to `X-Forwarded-For` (one header, comma-joined) and sets `X-Forwarded-Proto`
/// and `X-Forwarded-Host`, and drops a client's `X-Teal-Mirror`. `host` comes from [`original_host`].
pub fn set_forwarding(
    headers: &mut HeaderMap,
    peer: IpAddr,
    host: Option<HeaderValue>,
    secure: bool,
) {
    let mut xff = BytesMut::new();
    for v in headers.get_all(&X_FORWARDED_FOR).iter() {
        xff.extend_from_slice(v.as_bytes());
        xff.extend_from_slice(b", ");
    }
    push_ip(&mut xff, peer.to_canonical());
    // The old values were valid header values and an IP adds no control characters.
    let value = HeaderValue::from_maybe_shared(xff.freeze()).expect("valid header value");
    headers.insert(&X_FORWARDED_FOR, value);
    let proto = if secure { "https" } else { "http" };
    headers.insert(&X_FORWARDED_PROTO, HeaderValue::from_static(proto));
    // Only teal marks a request as a mirrored copy.
    headers.remove(&X_TEAL_MIRROR);
    match host {
        Some(h) => headers.insert(&X_FORWARDED_HOST, h),
        None => headers.remove(&X_FORWARDED_HOST),
    };
}

/// Makes `Host` agree with the request target: a proxy receiving an absolute-form target "MUST
/// ignore the received Host header field … and instead replace it with the host information of
/// the request-target" (RFC 9112 §3.2.2), and an HTTP/2 `:authority` becomes `Host` for an
/// HTTP/1.1 upstream (RFC 9113 §8.3.1). An origin-form request keeps its `Host` unchanged.
pub fn ensure_host(parts: &mut Parts) {
    if let Some(auth) = parts.uri.authority() {
        if let Ok(v) = HeaderValue::from_str(auth.as_str()) {
            parts.headers.insert(header::HOST, v);
        }
    }
}

/// Joins several `Cookie` fields into one, the values in order with "; " between them: RFC 9113
/// §8.2.3 requires it when an HTTP/2 request (whose client may split `cookie` into one field per
/// cookie for compression) goes on over HTTP/1.1, where parsers such as Django's and Werkzeug's
/// read a second `Cookie` line as part of one cookie's value. Applied to HTTP/1.1 clients too
/// (RFC 6265 §5.4: a user agent sends one `Cookie`), so an upstream gets the same head whichever
/// path or protocol a request came by. Empty values are dropped; one field is left as it is.
pub fn join_cookies(headers: &mut HeaderMap) {
    let mut values = headers.get_all(header::COOKIE).iter();
    if values.next().is_none() || values.next().is_none() {
        return;
    }
    let mut joined = BytesMut::new();
    for value in headers.get_all(header::COOKIE) {
        if value.is_empty() {
            continue;
        }
        if !joined.is_empty() {
            joined.extend_from_slice(b"; ");
        }
        joined.extend_from_slice(value.as_bytes());
    }
    // Valid values joined by "; " make a valid value.
    let value = HeaderValue::from_maybe_shared(joined.freeze()).expect("valid header value");
    headers.insert(header::COOKIE, value);
}

/// The client's address: the connection's peer, unless the peer is one of `trusted` proxies, in
/// which case `X-Forwarded-For` is read right to left, skipping trusted hops, to the first address
/// that is not trusted. A client's own `X-Forwarded-For` is never believed: only what a trusted
/// proxy appended counts. An unparsable entry stops the walk at the last trusted hop.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[ipnet::IpNet]) -> IpAddr {
    let values = headers.get_all(&X_FORWARDED_FOR);
    client_ip_from(peer, values.iter().map(HeaderValue::as_bytes), trusted)
}

/// [`client_ip`] from the raw values of the `X-Forwarded-For` fields, in the order received.
pub fn client_ip_from<'a>(
    peer: IpAddr,
    forwarded_for: impl DoubleEndedIterator<Item = &'a [u8]>,
    trusted: &[ipnet::IpNet],
) -> IpAddr {
    let peer = peer.to_canonical();
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let mut client = peer;
    let hops = forwarded_for.rev().flat_map(|v| {
        let list = std::str::from_utf8(v).unwrap_or("");
        list.rsplit(',').map(str::trim).collect::<Vec<_>>()
    });
    for hop in hops {
        match hop.parse::<IpAddr>() {
            Ok(ip) => {
                client = ip.to_canonical();
                if !is_trusted(&client) {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    client
}

/// Whether `value` is a valid `Host` (RFC 9112 §3.2, RFC 3986 §3.2.2): a non-empty reg-name, an
/// IPv4 address or a bracketed IPv6 literal, then optionally `:` and a port. Userinfo, paths,
/// spaces and control bytes make it invalid. An empty Host, which the grammar allows, is refused
/// too: a reverse proxy has nothing to route or forward with it.
pub fn valid_host(value: &[u8]) -> bool {
    let (host, port) = match value.iter().rposition(|&b| b == b':') {
        // A colon inside brackets is part of an IPv6 literal, not a port separator.
        Some(at) if !value[at..].contains(&b']') => (&value[..at], &value[at + 1..]),
        _ => (value, &b""[..]),
    };
    // RFC 3986 `port = *DIGIT`, here at most 65535 (an empty port is allowed).
    let port_ok = port.len() <= 5
        && port.iter().all(u8::is_ascii_digit)
        && port.iter().fold(0u32, |n, &d| n * 10 + u32::from(d - b'0')) <= 65535;
    let host_ok = match host {
        [b'[', inner @ .., b']'] => {
            std::str::from_utf8(inner).is_ok_and(|ip| ip.parse::<std::net::Ipv6Addr>().is_ok())
        }
        _ => !host.is_empty() && reg_name(host),
    };
    port_ok && host_ok
}

/// The bytes a reg-name takes as they are (RFC 3986 §3.2.2): unreserved and sub-delims. A table,
/// because this runs on every request's Host (callgrind: a `match` per byte cost ~25 instructions
/// a byte).
static REG_NAME_BYTES: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric()
            || matches!(c, b'-' | b'.' | b'_' | b'~')
            || matches!(
                c,
                b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b';' | b'='
            );
        b += 1;
    }
    table
};

/// RFC 3986 reg-name: unreserved, percent-encoded and sub-delims characters (an IPv4 address is
/// one too).
fn reg_name(host: &[u8]) -> bool {
    let mut i = 0;
    while i < host.len() {
        let b = host[i];
        if b == b'%' {
            let hex = host.get(i + 1..i + 3);
            if !hex.is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) {
                return false;
            }
            i += 3;
            continue;
        }
        if !REG_NAME_BYTES[usize::from(b)] {
            return false;
        }
        i += 1;
    }
    true
}

/// Whether the `Transfer-Encoding` values of a request name only `chunked`, the one transfer
/// coding teal implements (RFC 9112 §6.1: anything else is answered 501).
pub fn only_chunked<'a>(values: impl Iterator<Item = &'a [u8]>) -> bool {
    let mut codings = values
        .flat_map(|v| v.split(|&b| b == b','))
        .map(<[u8]>::trim_ascii);
    codings
        .next()
        .is_some_and(|c| c.eq_ignore_ascii_case(b"chunked"))
        && codings.next().is_none()
}

/// The `X-Request-Id` field name.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// A request's id: the client's `X-Request-Id` when it sent exactly one that is usable (1 to 128
/// visible ASCII characters), otherwise one made here (32 hex digits, unique within the process
/// and random across processes). It goes upstream as the one `X-Request-Id` and into the access
/// log.
pub enum RequestId<'a> {
    /// The client's.
    Given(&'a [u8]),
    /// Made by teal.
    Made([u8; 32]),
}

impl RequestId<'_> {
    /// The id for a request whose `X-Request-Id` fields are `given`.
    pub fn of<'a>(mut given: impl Iterator<Item = &'a [u8]>) -> RequestId<'a> {
        match (given.next(), given.next()) {
            (Some(id), None) if usable_id(id) => RequestId::Given(id),
            _ => RequestId::Made(make_id()),
        }
    }

    /// The id's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            RequestId::Given(id) => id,
            RequestId::Made(id) => id,
        }
    }
}

fn usable_id(id: &[u8]) -> bool {
    (1..=128).contains(&id.len()) && id.iter().all(|b| (0x21..=0x7e).contains(b))
}

/// 32 hex digits: a per-process random half and a mixed counter.
fn make_id() -> [u8; 32] {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::OnceLock;
    // The seed and its 16 hex digits, made once.
    static SEED: OnceLock<(u64, [u8; 16])> = OnceLock::new();
    static COUNT: AtomicU64 = AtomicU64::new(0);
    let (seed, seed_hex) = SEED.get_or_init(|| {
        let seed = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        (seed, hex16(seed))
    });
    // splitmix64 of the counter: consecutive ids look unrelated.
    let mut z = COUNT
        .fetch_add(1, Ordering::Relaxed)
        .wrapping_add(*seed)
        .wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    let mut out = [0u8; 32];
    out[..16].copy_from_slice(seed_hex);
    out[16..].copy_from_slice(&hex16(z));
    out
}

/// `word` as 16 lowercase hex digits, most significant first.
fn hex16(word: u64) -> [u8; 16] {
    let mut out = [0u8; 16];
    for (j, digit) in out.iter_mut().enumerate() {
        *digit = b"0123456789abcdef"[((word >> (60 - 4 * j)) & 0xf) as usize];
    }
    out
}

/// Makes the request's `X-Request-Id` the one [`RequestId::of`] chooses; returns it.
pub fn set_request_id(headers: &mut HeaderMap) -> HeaderValue {
    let id = RequestId::of(
        headers
            .get_all(&X_REQUEST_ID)
            .iter()
            .map(HeaderValue::as_bytes),
    );
    let value = match id {
        RequestId::Given(_) => return headers[&X_REQUEST_ID].clone(),
        RequestId::Made(made) => HeaderValue::from_bytes(&made).expect("hex digits"),
    };
    headers.insert(&X_REQUEST_ID, value.clone());
    value
}

/// Appends `ip` in its usual text form. IPv4 by hand: `Display` through `fmt` cost more than the
/// rest of the header rewrite together (callgrind).
pub(crate) fn push_ip(buf: &mut impl bytes::BufMut, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    buf.put_slice(b".");
                }
                if octet >= 100 {
                    buf.put_u8(b'0' + octet / 100);
                }
                if octet >= 10 {
                    buf.put_u8(b'0' + octet / 10 % 10);
                }
                buf.put_u8(b'0' + octet % 10);
            }
        }
        IpAddr::V6(v6) => {
            use std::io::Write;
            // Formatted straight into the buffer, no String in between.
            let _ = write!(bytes::BufMut::writer(&mut *buf), "{v6}");
        }
    }
}

/// Whether a comma-separated header value lists `token` (case-insensitive).
fn has_token(value: &HeaderValue, token: &str) -> bool {
    tokens(value.as_bytes()).any(|t| t.eq_ignore_ascii_case(token.as_bytes()))
}

/// The header fields the own HTTP/1.1 path looks at, and the byte helpers both its request and
/// response sides use.
///
/// This is the one header policy: [`Field::is_hop_by_hop`], [`Field::is_set_by_teal`] and
/// [`Field::is_protected`] decide for both paths (the `HeaderName` sets the hyper path strips by
/// are checked against them in the tests below).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Field {
    Host,
    Date,
    Cookie,
    ContentLength,
    TransferEncoding,
    Expect,
    Upgrade,
    Connection,
    KeepAlive,
    ProxyConnection,
    Te,
    Trailer,
    ProxyAuthenticate,
    ProxyAuthorization,
    XForwardedFor,
    XForwardedProto,
    XForwardedHost,
    XRequestId,
    /// Set by teal on mirrored copies only; a client's is dropped.
    XTealMirror,
    UserAgent,
    Referer,
    /// The `[preview] header` field: teal's routing instruction, read and never forwarded (set
    /// by the own path's request scan; [`Field::of`] does not know the configured name).
    Routing,
    Other,
}

impl Field {
    /// Hop-by-hop (RFC 9110 §7.6.1; `Keep-Alive` and `Proxy-Connection` are the legacy ones every
    /// proxy drops): never forwarded as received, besides the names `Connection` lists.
    pub(crate) fn is_hop_by_hop(self) -> bool {
        matches!(
            self,
            Field::Connection
                | Field::KeepAlive
                | Field::ProxyConnection
                | Field::Te
                | Field::Trailer
                | Field::TransferEncoding
                | Field::Upgrade
                | Field::ProxyAuthenticate
                | Field::ProxyAuthorization
        )
    }

    /// Set by teal on every upstream request, whatever the client sent: the forwarding fields
    /// and the request id.
    pub(crate) fn is_set_by_teal(self) -> bool {
        matches!(
            self,
            Field::XForwardedFor
                | Field::XForwardedProto
                | Field::XForwardedHost
                | Field::XRequestId
                | Field::XTealMirror
        )
    }

    /// Never removed because `Connection` lists it: that would change the message's meaning or
    /// framing rather than a hop's ("Connection: Host" is a known trick to strip fields a proxy
    /// relies on).
    pub(crate) fn is_protected(self) -> bool {
        matches!(
            self,
            Field::Host | Field::ContentLength | Field::XForwardedFor
        )
    }

    /// The kind of the field called `name`, told apart by length first.
    pub(crate) fn of(name: &[u8]) -> Field {
        let is = |known: &[u8]| name.eq_ignore_ascii_case(known);
        match name.len() {
            2 if is(b"te") => Field::Te,
            4 if is(b"host") => Field::Host,
            4 if is(b"date") => Field::Date,
            6 if is(b"expect") => Field::Expect,
            6 if is(b"cookie") => Field::Cookie,
            7 if is(b"upgrade") => Field::Upgrade,
            7 if is(b"trailer") => Field::Trailer,
            7 if is(b"referer") => Field::Referer,
            10 if is(b"connection") => Field::Connection,
            10 if is(b"keep-alive") => Field::KeepAlive,
            10 if is(b"user-agent") => Field::UserAgent,
            12 if is(b"x-request-id") => Field::XRequestId,
            13 if is(b"x-teal-mirror") => Field::XTealMirror,
            14 if is(b"content-length") => Field::ContentLength,
            15 if is(b"x-forwarded-for") => Field::XForwardedFor,
            16 if is(b"proxy-connection") => Field::ProxyConnection,
            16 if is(b"x-forwarded-host") => Field::XForwardedHost,
            17 if is(b"transfer-encoding") => Field::TransferEncoding,
            17 if is(b"x-forwarded-proto") => Field::XForwardedProto,
            18 if is(b"proxy-authenticate") => Field::ProxyAuthenticate,
            19 if is(b"proxy-authorization") => Field::ProxyAuthorization,
            _ => Field::Other,
        }
    }
}

pub(crate) fn push_field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// The tokens of a comma-separated field value, trimmed.
pub(crate) fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(|t| t.trim_ascii())
        .filter(|t| !t.is_empty())
}

/// A `Content-Length` value: digits only, at most 19 of them.
pub(crate) fn parse_length(value: &[u8]) -> Option<u64> {
    if value.is_empty() || value.len() > 19 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(value.iter().fold(0, |n, d| n * 10 + u64::from(d - b'0')))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Request;

    /// The hand-written IPv4 form is `Display`'s, at every digit count; IPv6 goes through
    /// `Display`.
    #[test]
    fn ip_text() {
        for text in [
            "0.0.0.0",
            "1.2.3.4",
            "10.0.0.255",
            "99.100.109.110",
            "192.168.100.9",
            "255.255.255.255",
            "::1",
            "2001:db8::8a2e:370:7334",
        ] {
            let ip: IpAddr = text.parse().unwrap();
            let mut buf = BytesMut::new();
            push_ip(&mut buf, ip);
            assert_eq!(&buf[..], ip.to_string().as_bytes(), "{text}");
        }
    }

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn names(h: &HeaderMap) -> Vec<String> {
        let mut v: Vec<String> = h.keys().map(|k| k.to_string()).collect();
        v.sort();
        v
    }

    /// The fixed hop-by-hop set goes; end-to-end headers stay.
    #[test]
    fn strips_fixed_set() {
        let mut h = map(&[
            ("connection", "keep-alive"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("trailer", "x"),
            ("proxy-authorization", "Basic x"),
            ("proxy-authenticate", "Basic"),
            ("content-type", "text/plain"),
            ("authorization", "Bearer x"),
        ]);
        strip_hop_by_hop(&mut h);
        assert_eq!(names(&h), ["authorization", "content-type"]);
    }

    /// Names listed in Connection are removed, case-insensitively and across several values.
    #[test]
    fn strips_connection_listed() {
        let mut h = map(&[
            ("connection", "X-Foo , x-bar"),
            ("connection", "X-BAZ,,"),
            ("x-foo", "1"),
            ("x-bar", "2"),
            ("x-baz", "3"),
            ("x-keep", "4"),
        ]);
        strip_hop_by_hop(&mut h);
        assert_eq!(names(&h), ["x-keep"]);
    }

    /// Connection cannot be used to strip Host, Content-Length or X-Forwarded-For.
    #[test]
    fn connection_cannot_strip_protected() {
        let mut h = map(&[
            ("connection", "host, content-length, x-forwarded-for"),
            ("host", "a"),
            ("content-length", "3"),
            ("x-forwarded-for", "1.2.3.4"),
        ]);
        strip_hop_by_hop(&mut h);
        assert_eq!(names(&h), ["content-length", "host", "x-forwarded-for"]);
    }

    /// `TE: trailers` survives (as the only TE value); other TE values do not.
    #[test]
    fn te_trailers_kept() {
        let mut h = map(&[("te", "gzip, Trailers")]);
        strip_hop_by_hop(&mut h);
        assert_eq!(h.get("te").unwrap(), "trailers");
        let mut h = map(&[("te", "gzip")]);
        strip_hop_by_hop(&mut h);
        assert!(h.get("te").is_none());
    }

    /// Upgrade is detected only on HTTP/1.1 with `upgrade` in Connection, and restored after strip.
    #[test]
    fn upgrade_detection_and_restore() {
        let mut h = map(&[
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "websocket"),
        ]);
        let p = upgrade_protocol(&h, Version::HTTP_11).unwrap();
        assert_eq!(p, "websocket");
        assert!(upgrade_protocol(&h, Version::HTTP_2).is_none());
        assert!(upgrade_protocol(&map(&[("upgrade", "websocket")]), Version::HTTP_11).is_none());
        strip_hop_by_hop(&mut h);
        assert!(h.get("upgrade").is_none());
        restore_upgrade(&mut h, p);
        assert_eq!(h.get("upgrade").unwrap(), "websocket");
        assert_eq!(h.get("connection").unwrap(), "upgrade");
    }

    /// X-Forwarded-For is appended to (several headers become one list); Proto and Host are set.
    #[test]
    fn forwarding_headers() {
        let mut h = map(&[
            ("x-forwarded-for", "1.1.1.1"),
            ("x-forwarded-for", "2.2.2.2"),
            ("x-forwarded-proto", "https"),
        ]);
        let peer: IpAddr = "::ffff:127.0.0.2".parse().unwrap();
        set_forwarding(
            &mut h,
            peer,
            Some(HeaderValue::from_static("example.com")),
            false,
        );
        assert_eq!(h.get_all("x-forwarded-for").iter().count(), 1);
        assert_eq!(h["x-forwarded-for"], "1.1.1.1, 2.2.2.2, 127.0.0.2");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "example.com");
        let mut h = HeaderMap::new();
        set_forwarding(&mut h, "10.0.0.1".parse().unwrap(), None, true);
        assert_eq!(h["x-forwarded-for"], "10.0.0.1");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert!(h.get("x-forwarded-host").is_none());
    }

    /// Several Cookie fields become one, "; "-joined in order; one field, none or empty ones
    /// are handled without surprises.
    #[test]
    fn cookies_joined() {
        let joined = |values: &[&str]| {
            let mut h = map(&values.iter().map(|v| ("cookie", *v)).collect::<Vec<_>>());
            h.append("x-other", HeaderValue::from_static("1"));
            join_cookies(&mut h);
            assert_eq!(h["x-other"], "1");
            let all: Vec<_> = h
                .get_all("cookie")
                .iter()
                .map(|v| v.to_str().unwrap().to_string())
                .collect();
            all
        };
        assert_eq!(joined(&["a=1", "b=2", "c=3"]), ["a=1; b=2; c=3"]);
        assert_eq!(joined(&["a=1", "", "b=2; c=3"]), ["a=1; b=2; c=3"]);
        assert_eq!(joined(&["a=1, b"]), ["a=1, b"]);
        assert_eq!(joined(&[""]), [""]);
        assert!(joined(&[]).is_empty());
    }

    /// X-Forwarded-For counts only behind trusted proxies, read right to left past them.
    #[test]
    fn client_ip_rules() {
        let trusted: Vec<ipnet::IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let xff = |v: &[&str]| {
            map(&v
                .iter()
                .map(|x| ("x-forwarded-for", *x))
                .collect::<Vec<_>>())
        };
        // An untrusted peer's header is ignored.
        assert_eq!(
            client_ip(ip("203.0.113.9"), &xff(&["127.0.0.2"]), &trusted),
            ip("203.0.113.9")
        );
        // A trusted peer: the rightmost untrusted entry.
        let h = xff(&["1.1.1.1, 192.0.2.7, 10.0.0.5"]);
        assert_eq!(client_ip(ip("10.1.1.1"), &h, &trusted), ip("192.0.2.7"));
        // Across several header lines, right to left.
        let h = xff(&["198.51.100.1", "10.0.0.9"]);
        assert_eq!(client_ip(ip("10.1.1.1"), &h, &trusted), ip("198.51.100.1"));
        // Only trusted hops: the leftmost one.
        let h = xff(&["10.0.0.7, 10.0.0.8"]);
        assert_eq!(client_ip(ip("10.1.1.1"), &h, &trusted), ip("10.0.0.7"));
        // Garbage stops the walk at the last trusted hop; no header: the peer.
        let h = xff(&["1.1.1.1, bogus, 10.0.0.8"]);
        assert_eq!(client_ip(ip("10.1.1.1"), &h, &trusted), ip("10.0.0.8"));
        assert_eq!(
            client_ip(ip("10.1.1.1"), &HeaderMap::new(), &trusted),
            ip("10.1.1.1")
        );
        // No trusted proxies configured: always the peer.
        assert_eq!(
            client_ip(ip("10.1.1.1"), &xff(&["1.1.1.1"]), &[]),
            ip("10.1.1.1")
        );
    }

    /// A client's usable X-Request-Id is kept; none, several or an unusable one gets a made id,
    /// and made ids differ.
    #[test]
    fn request_ids() {
        let id = |given: &[&str]| {
            let mut h = HeaderMap::new();
            for g in given {
                h.append(&X_REQUEST_ID, HeaderValue::from_str(g).unwrap());
            }
            let v = set_request_id(&mut h);
            assert_eq!(h.get_all(&X_REQUEST_ID).iter().count(), 1);
            assert_eq!(h[&X_REQUEST_ID], v);
            v.to_str().unwrap().to_string()
        };
        assert_eq!(id(&["abc-123"]), "abc-123");
        for made in [
            id(&[]),
            id(&["a", "b"]),
            id(&["has space"]),
            id(&[&"x".repeat(129)]),
        ] {
            assert_eq!(made.len(), 32, "{made}");
            assert!(made.bytes().all(|b| b.is_ascii_hexdigit()), "{made}");
        }
        assert_ne!(id(&[]), id(&[]));
    }

    /// The `HeaderName` sets the hyper path strips by are exactly what `Field` says.
    #[test]
    fn name_sets_follow_the_field_policy() {
        let all = [
            "connection",
            "keep-alive",
            "proxy-connection",
            "te",
            "trailer",
            "transfer-encoding",
            "upgrade",
            "proxy-authenticate",
            "proxy-authorization",
            "host",
            "content-length",
            "x-forwarded-for",
            "x-forwarded-proto",
            "x-forwarded-host",
            "x-request-id",
            "cookie",
            "date",
            "expect",
            "user-agent",
            "referer",
            "x-other",
        ];
        for name in all {
            let kind = Field::of(name.as_bytes());
            let header = HeaderName::from_static(name);
            assert_eq!(HOP_BY_HOP.contains(&header), kind.is_hop_by_hop(), "{name}");
            assert_eq!(PROTECTED.contains(&header), kind.is_protected(), "{name}");
            assert_eq!(Field::of(name.to_uppercase().as_bytes()), kind, "{name}");
        }
    }

    /// Host values: names, IPv4 and bracketed IPv6 with optional ports; nothing else.
    #[test]
    fn host_values() {
        for good in [
            "x",
            "shop.example:8080",
            "127.0.0.1",
            "[::1]",
            "[::1]:80",
            "a-b_c~d.e",
            "xn--bcher-kva.example",
            "%41bc",
            "host:",
            "a:65535",
            "!$&'()*+,;=",
        ] {
            assert!(valid_host(good.as_bytes()), "{good}");
        }
        for bad in [
            "", "a/b@c d", "u@a", "a b", "a:b", "a:99999", "a:123456", "[::1", "[zz]", "a\tb",
            "%4", ":80", "a,b/", "a:65536", "a\"b", "a\u{80}", "a<b", "a^b",
        ] {
            assert!(!valid_host(bad.as_bytes()), "{bad:?}");
        }
        assert!(only_chunked([&b"chunked"[..]].into_iter()));
        assert!(only_chunked([&b" Chunked "[..]].into_iter()));
        for bad in [
            &b"identity, chunked"[..],
            b"gzip, chunked",
            b"chunked, chunked",
            b"",
        ] {
            assert!(!only_chunked([bad].into_iter()), "{bad:?}");
        }
    }

    /// Host: unchanged for origin-form, taken from the authority for absolute-form and h2.
    #[test]
    fn host_rules() {
        let (mut p, _) = Request::get("/x")
            .header("host", "example.com")
            .body(())
            .unwrap()
            .into_parts();
        assert_eq!(original_host(&p).unwrap(), "example.com");
        ensure_host(&mut p);
        assert_eq!(p.headers["host"], "example.com");

        let (mut p, _) = Request::get("http://other.test:8080/x")
            .header("host", "example.com")
            .body(())
            .unwrap()
            .into_parts();
        assert_eq!(original_host(&p).unwrap(), "other.test:8080");
        ensure_host(&mut p);
        assert_eq!(p.headers.get_all("host").iter().count(), 1);
        assert_eq!(p.headers["host"], "other.test:8080");

        // h2: no Host header, only :authority (in the URI).
        let (mut p, _) = Request::get("http://h2.test/x")
            .version(Version::HTTP_2)
            .body(())
            .unwrap()
            .into_parts();
        ensure_host(&mut p);
        assert_eq!(p.headers["host"], "h2.test");
    }
}
