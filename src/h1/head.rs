//! An upstream's response head parsed with `httparse`, and its framing found (RFC 9112 §6.3):
//! the status, how the body is delimited, and whether the connection may take another request.
//! What the client's head is made of is left to the caller (`h1::response` writes it; a
//! mirrored copy needs none).

use std::mem::MaybeUninit;

use crate::framing::Framing;
use crate::headers::{parse_length, tokens, Field};

/// Header fields accepted per upstream response.
pub(crate) const RESPONSE_FIELDS: usize = 128;

/// An upstream response head, parsed.
pub(crate) struct ResponseHead {
    pub(crate) head_len: usize,
    pub(crate) status: u16,
    pub(crate) framing: Framing,
    /// The upstream may take another request on this connection after the body.
    pub(crate) keep_alive: bool,
}

pub(crate) enum ParsedResponse {
    Ready(ResponseHead),
    /// A 1xx other than 101, of this length: dropped, the final response follows.
    Interim(usize),
    Partial,
    Bad(&'static str),
}

/// A final response head as parsed, for writing the client's head from it.
pub(crate) struct Parts<'h, 'b> {
    pub(crate) status: u16,
    pub(crate) reason: &'b str,
    pub(crate) fields: &'h [httparse::Header<'b>],
    /// Each field's kind, in the order of `fields`.
    pub(crate) kinds: &'h [Field],
    pub(crate) scan: &'h Scan<'b>,
    pub(crate) framing: Framing,
}

/// Parses an upstream response head from `buf` (the answer to a `HEAD` request if
/// `head_request`), and hands a final one's parts to `write` before saying what it was.
pub(crate) fn parse_response(
    buf: &[u8],
    head_request: bool,
    write: impl FnOnce(&Parts<'_, '_>),
) -> ParsedResponse {
    let mut fields = [const { MaybeUninit::uninit() }; RESPONSE_FIELDS];
    let mut res = httparse::Response::new(&mut []);
    let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut res,
        buf,
        &mut fields,
    );
    let head_len = match parsed {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return ParsedResponse::Partial,
        Err(httparse::Error::TooManyHeaders) => {
            return ParsedResponse::Bad("too many header fields in the response")
        }
        Err(_) => return ParsedResponse::Bad("malformed response head"),
    };
    let (Some(status), Some(version)) = (res.code, res.version) else {
        return ParsedResponse::Bad("malformed response head");
    };
    if status == 101 {
        return ParsedResponse::Bad("101 to a request that did not ask to upgrade");
    }
    if (100..200).contains(&status) {
        return ParsedResponse::Interim(head_len);
    }
    let mut kinds = [Field::Other; RESPONSE_FIELDS];
    let scan = match Scan::of(res.headers, &mut kinds) {
        Ok(scan) => scan,
        Err(reason) => return ParsedResponse::Bad(reason),
    };
    // RFC 9112 §6.1: Transfer-Encoding is HTTP/1.1's; an HTTP/1.0 response with one cannot be
    // framed with any confidence (hyper refuses it too).
    if scan.coded && version == 0 {
        return ParsedResponse::Bad("Transfer-Encoding in an HTTP/1.0 response");
    }
    let framing = scan.framing(head_request, status);
    // HTTP/1.1 keeps the connection unless told to close; HTTP/1.0 only if asked to keep it; a
    // body delimited by the close ends it.
    let keep_alive = !scan.closes
        && (version == 1 || scan.keeps)
        && !matches!(framing, Framing::UntilClose | Framing::UntilCloseAsIs);
    write(&Parts {
        status,
        reason: res.reason.unwrap_or(""),
        fields: res.headers,
        kinds: &kinds[..res.headers.len()],
        scan: &scan,
        framing,
    });
    ParsedResponse::Ready(ResponseHead {
        head_len,
        status,
        framing,
        keep_alive,
    })
}

/// What the field scan of a response head found.
pub(crate) struct Scan<'a> {
    closes: bool,
    keeps: bool,
    /// A `Transfer-Encoding` was sent, and whether its last coding is chunked.
    pub(crate) coded: bool,
    chunked: bool,
    length: Option<u64>,
    /// Names `Connection` lists (besides `close` and `keep-alive`).
    pub(crate) listed: Vec<&'a [u8]>,
}

impl<'a> Scan<'a> {
    /// Classifies every field into `kinds`; an error for a Content-Length that cannot be trusted.
    fn of(
        fields: &'a [httparse::Header<'a>],
        kinds: &mut [Field],
    ) -> Result<Scan<'a>, &'static str> {
        let mut scan = Scan {
            closes: false,
            keeps: false,
            coded: false,
            chunked: false,
            length: None,
            listed: Vec::new(),
        };
        for (field, kind) in fields.iter().zip(kinds) {
            *kind = Field::of(field.name.as_bytes());
            match kind {
                Field::Connection => {
                    for token in tokens(field.value) {
                        if token.eq_ignore_ascii_case(b"close") {
                            scan.closes = true;
                        } else if token.eq_ignore_ascii_case(b"keep-alive") {
                            scan.keeps = true;
                        } else {
                            scan.listed.push(token);
                        }
                    }
                }
                Field::TransferEncoding => {
                    scan.coded = true;
                    // The last coding frames the message; all the fields make one list (RFC
                    // 9110 §5.3), so a field without codings leaves it as it was.
                    if let Some(last) = tokens(field.value).last() {
                        scan.chunked = last.eq_ignore_ascii_case(b"chunked");
                    }
                }
                Field::ContentLength => {
                    let n = parse_length(field.value)
                        .ok_or("invalid Content-Length in the response")?;
                    if scan.length.is_some_and(|l| l != n) {
                        return Err("conflicting Content-Length in the response");
                    }
                    scan.length = Some(n);
                }
                _ => {}
            }
        }
        Ok(scan)
    }

    /// How the body is delimited (RFC 9112 §6.3).
    fn framing(&self, head_request: bool, status: u16) -> Framing {
        if head_request || status == 204 || status == 304 {
            Framing::Empty
        } else if self.coded && self.chunked {
            Framing::Chunked
        } else if self.coded {
            Framing::UntilCloseAsIs
        } else if let Some(n) = self.length {
            Framing::Length(n)
        } else {
            Framing::UntilClose
        }
    }
}
