//! The upstream's response head on teal's own HTTP/1.1 path: parsed, its framing found
//! (RFC 9112 §6.3), and written as the client's head; and teal's own answers.

use std::cell::RefCell;
use std::time::SystemTime;

use http::StatusCode;

use crate::framing::Framing;
use crate::h1::head::{parse_response, Parts};
pub(crate) use crate::h1::head::{ParsedResponse, ResponseHead};
use crate::headers::{push_field, Field};
use crate::preview::Preview;
use crate::proxy::ProxyError;

/// Parses an upstream response head from `buf` ([`crate::h1::head`]) and writes the client's
/// into `out`: hop-by-hop fields dropped (but the framing's), `Date` added if missing,
/// `Connection: close` if this is the client's last response, a `preview` route's redirects and
/// cookie paths under its prefix, and teal's own `set_cookie` appended after the upstream's
/// fields (never replacing one).
pub(crate) fn plan_response(
    buf: &[u8],
    head_request: bool,
    close: bool,
    preview: Option<&Preview>,
    added: Added<'_>,
    out: &mut Vec<u8>,
) -> ParsedResponse {
    parse_response(buf, head_request, |p| {
        push_status_line(out, p.status, p.reason);
        let no_content = p.status == 204 || p.status == 304;
        let dated = write_fields(out, p, no_content, preview, added.hsts.is_some());
        if let Some(cookie) = added.set_cookie {
            push_field(out, b"set-cookie", cookie);
        }
        if let Some(hsts) = added.hsts {
            push_field(out, b"strict-transport-security", hsts);
        }
        if p.framing == Framing::UntilClose {
            out.extend_from_slice(b"transfer-encoding: chunked\r\n");
        }
        if !dated {
            out.extend_from_slice(b"date: ");
            push_date(out);
            out.extend_from_slice(b"\r\n");
        }
        if close || p.framing == Framing::UntilCloseAsIs {
            out.extend_from_slice(b"connection: close\r\n");
        }
        out.extend_from_slice(b"\r\n");
    })
}

/// The fields teal adds to a response: its `Set-Cookie` (after the upstream's, never replacing
/// one) and, over TLS, `tls.hsts` (replacing the upstream's).
#[derive(Clone, Copy, Default)]
pub(crate) struct Added<'a> {
    pub(crate) set_cookie: Option<&'a [u8]>,
    pub(crate) hsts: Option<&'a [u8]>,
}

/// Starts the client's head in `out` with its status line.
fn push_status_line(out: &mut Vec<u8>, status: u16, reason: &str) {
    out.clear();
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(&[
        b'0' + (status / 100) as u8,
        b'0' + (status / 10 % 10) as u8,
        b'0' + (status % 10) as u8,
        b' ',
    ]);
    out.extend_from_slice(reason.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Writes the response's fields the client gets ([`Field`]'s policy), a preview route's
/// redirects and cookie paths under its prefix; whether a `Date` was among them (one the upstream
/// listed in `Connection` is gone, and the caller adds one, as hyper's server does: RFC 9110
/// §6.6.1, a forwarded response has a Date).
fn write_fields(
    out: &mut Vec<u8>,
    p: &Parts<'_, '_>,
    no_content: bool,
    preview: Option<&Preview>,
    own_hsts: bool,
) -> bool {
    let scan = p.scan;
    let mut sized = false;
    let mut dated = false;
    for (field, kind) in p.fields.iter().zip(p.kinds) {
        let name = field.name.as_bytes();
        let keep = match kind {
            // A proxy removes Content-Length when Transfer-Encoding frames the message (RFC 9112
            // §6.3). A 204 has neither (RFC 9110 §8.6), and a 304 is sent without them as hyper's
            // server sends it (the RFC makes them optional there). Of several fields of one
            // value (perhaps spelled "5" and "05"), the client gets the first.
            Field::ContentLength => {
                !scan.coded && !no_content && !std::mem::replace(&mut sized, true)
            }
            // Hop-by-hop, but the body is relayed in its own transfer coding, so it stays.
            Field::TransferEncoding => !no_content,
            k if k.is_hop_by_hop() => false,
            k if k.is_protected() => true,
            _ if own_hsts && name.eq_ignore_ascii_case(b"strict-transport-security") => false,
            _ => !scan.listed.iter().any(|l| l.eq_ignore_ascii_case(name)),
        };
        if keep {
            dated |= *kind == Field::Date;
            let value = preview.and_then(|p| p.rewrite(name, field.value));
            push_field(out, name, value.as_deref().unwrap_or(field.value));
        }
    }
    dated
}

/// Appends the current time as an HTTP date, formatted at most once a second per thread.
pub(crate) fn push_date(out: &mut Vec<u8>) {
    thread_local! {
        static DATE: RefCell<(u64, String)> = const { RefCell::new((0, String::new())) };
    }
    let now = SystemTime::now();
    let secs = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    DATE.with_borrow_mut(|(at, text)| {
        if *at != secs || text.is_empty() {
            *at = secs;
            *text = httpdate::fmt_http_date(now);
        }
        out.extend_from_slice(text.as_bytes());
    });
}

/// Writes teal's own answer for `err` into `out`; returns the body's length.
pub(crate) fn synthetic(
    err: &ProxyError,
    head_request: bool,
    close: bool,
    hsts: Option<&[u8]>,
    out: &mut Vec<u8>,
) -> usize {
    let status = err.status();
    let body = err.body();
    out.clear();
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(
        status
            .canonical_reason()
            .unwrap_or(StatusCode::BAD_GATEWAY.as_str())
            .as_bytes(),
    );
    out.extend_from_slice(b"\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: ");
    out.extend_from_slice(body.len().to_string().as_bytes());
    out.extend_from_slice(b"\r\ndate: ");
    push_date(out);
    if close {
        out.extend_from_slice(b"\r\nconnection: close");
    }
    if let Some(hsts) = hsts {
        out.extend_from_slice(b"\r\nstrict-transport-security: ");
        out.extend_from_slice(hsts);
    }
    out.extend_from_slice(b"\r\n\r\n");
    if !head_request {
        out.extend_from_slice(body.as_bytes());
    }
    body.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(head: &str, head_request: bool, close: bool) -> (ParsedResponse, String) {
        let mut out = Vec::new();
        let parsed = plan_response(
            head.as_bytes(),
            head_request,
            close,
            None,
            Added::default(),
            &mut out,
        );
        (parsed, String::from_utf8(out).unwrap())
    }

    fn ready(p: ParsedResponse) -> ResponseHead {
        match p {
            ParsedResponse::Ready(r) => r,
            _ => panic!("not a complete response head"),
        }
    }

    /// Framing follows RFC 9112 §6.3, and only the framing's own hop-by-hop field survives.
    #[test]
    fn response_framing_and_fields() {
        let (p, out) = response(
            "HTTP/1.1 200 OK\r\nContent-Length: 4\r\nConnection: keep-alive, X-Drop\r\nX-Drop: 1\r\nKeep-Alive: timeout=5\r\nDate: d\r\n\r\n",
            false,
            false,
        );
        let r = ready(p);
        assert_eq!(
            (r.status, r.framing, r.keep_alive),
            (200, Framing::Length(4), true)
        );
        assert_eq!(
            out,
            "HTTP/1.1 200 OK\r\nContent-Length: 4\r\nDate: d\r\n\r\n"
        );

        let (p, out) = response(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 9\r\nDate: d\r\n\r\n",
            false,
            true,
        );
        assert_eq!(ready(p).framing, Framing::Chunked);
        assert_eq!(
            out,
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nDate: d\r\nconnection: close\r\n\r\n"
        );

        let (p, out) = response("HTTP/1.0 200 OK\r\nDate: d\r\n\r\n", false, false);
        let r = ready(p);
        assert_eq!((r.framing, r.keep_alive), (Framing::UntilClose, false));
        assert!(out.contains("transfer-encoding: chunked\r\n"), "{out}");

        let (p, _) = response(
            "HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n",
            false,
            false,
        );
        assert_eq!(ready(p).framing, Framing::Empty);
        let (p, out) = response("HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n", true, false);
        assert_eq!(ready(p).framing, Framing::Empty);
        assert!(out.contains("Content-Length: 9\r\ndate: "), "{out}");
        let (p, _) = response(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
            false,
            false,
        );
        assert_eq!(ready(p).framing, Framing::UntilCloseAsIs);
        // The codings of all the fields are one list: an empty last field changes nothing.
        let (p, _) = response(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: \r\n\r\n",
            false,
            false,
        );
        assert_eq!(ready(p).framing, Framing::Chunked);
    }

    /// What the upstream cannot be trusted with is refused, not passed on.
    #[test]
    fn response_refusals() {
        for bad in [
            "HTTP/1.1 200 OK\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 1,1\r\n\r\n",
            "HTTP/1.1 101 Switching Protocols\r\n\r\n",
            "HTTP/1.1 2000 OK\r\n\r\n",
        ] {
            assert!(
                matches!(response(bad, false, false).0, ParsedResponse::Bad(_)),
                "{bad}"
            );
        }
        assert!(matches!(
            response("HTTP/1.1 103 Early Hints\r\nLink: x\r\n\r\nHTTP/1.1 200", false, false).0,
            ParsedResponse::Interim(n) if n == 37
        ));
        assert!(matches!(
            response("HTTP/1.1 200 OK\r\n", false, false).0,
            ParsedResponse::Partial
        ));
    }
}
