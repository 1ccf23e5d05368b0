//! The rule for teal's relay of a response (`teal::h1::relay_in_memory`), checked with a decoder
//! of its own (httparse for heads; Content-Length, chunked and close framing written here, not
//! teal's): what the client receives is exactly one well-framed response per request, or a
//! closed connection. Shared by the fuzz target `h1_relay` and `tests/relay.rs`.

use teal::framing::Framing;
use teal::h1::{relay_in_memory, RelayOutcome};

/// Runs the relay over `upstream` read in pieces cut at `splits`, and in one piece, and panics
/// where the outcome breaks the rule.
pub fn check(upstream: &[u8], splits: &[usize], head_request: bool) {
    let split = relay_in_memory(upstream, splits, head_request);
    let whole = relay_in_memory(upstream, &[], head_request);
    for outcome in [&split, &whole] {
        check_outcome(upstream, outcome, head_request);
    }
    // A response relayed to its end does not depend on how it was read, but a re-chunked body
    // has a chunk per read.
    if !whole.bad_gateway && whole.client_open {
        assert!(!split.bad_gateway, "502 only when split");
        assert!(split.client_open, "client closed only when split");
        assert_eq!(
            comparable(&split),
            comparable(&whole),
            "split changed the response"
        );
        if whole.upstream_reused {
            assert!(split.upstream_reused, "upstream not reused only when split");
        }
    }
    if split.upstream_reused && !whole.upstream_reused {
        // Only a read ending exactly where the response does, with more after it.
        assert!(split.read < upstream.len());
    }
}

fn check_outcome(upstream: &[u8], outcome: &RelayOutcome, head_request: bool) {
    if outcome.bad_gateway {
        assert!(outcome.client.is_empty(), "a 502 sent upstream bytes");
        assert!(!outcome.upstream_reused);
        return;
    }
    let client = &outcome.client;
    let (head_len, kind, close) =
        head(client, head_request, false).expect("the client's head is complete and framed");
    assert!(kind.is_ok(), "the client's head frames no body: {kind:?}");
    let kind = kind.unwrap();
    let decoded = body(kind, &client[head_len..]);
    let body_len = client.len() - head_len;
    match decoded {
        Err(e) => panic!("the client's body is malformed: {e}"),
        Ok(Some((end, _))) => assert_eq!(end, body_len, "bytes after the end of the response"),
        Ok(None) => assert!(
            !outcome.client_open,
            "an incomplete response, connection open"
        ),
    }
    if outcome.client_open {
        assert_ne!(kind, Kind::Close, "a close-delimited body, connection open");
    }
    if kind == Kind::Close {
        assert!(close, "a close-delimited body without Connection: close");
    }
    if outcome.upstream_reused {
        let end = response_end(&upstream[..outcome.read], head_request);
        assert_eq!(
            end,
            Some(outcome.read),
            "upstream reused with bytes left over"
        );
    }
    if outcome.client_open {
        // The client's body carries the upstream's data.
        let up = upstream_payload(&upstream[..outcome.read], head_request);
        let (_, data) = decoded.unwrap().unwrap();
        assert_eq!(Some(data), up, "the client's body is not the upstream's");
    }
}

/// The response with teal's own `date:` values blanked out, and a re-chunked body decoded.
fn comparable(outcome: &RelayOutcome) -> (Vec<u8>, Vec<u8>) {
    let client = &outcome.client;
    let (head_len, kind, _) = head(client, false, false).unwrap();
    let mut text = Vec::new();
    for line in client[..head_len].split_inclusive(|&b| b == b'\n') {
        if line.starts_with(b"date: ") {
            text.extend_from_slice(b"date: -\r\n");
        } else {
            text.extend_from_slice(line);
        }
    }
    let rest = &client[head_len..];
    let body = if outcome.framing == Some(Framing::UntilClose) && kind == Ok(Kind::Chunked) {
        body(Kind::Chunked, rest).unwrap().unwrap().1
    } else {
        rest.to_vec()
    };
    (text, body)
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    None,
    Length(u64),
    Chunked,
    Close,
}

/// A complete final response head at the start of `bytes` (from the `upstream`, or teal's for
/// the client): its length, its body's framing
/// (`Err` for framing fields that cannot be trusted), and whether it says `Connection: close`.
/// `None` for an incomplete or malformed head, or an interim one.
#[allow(clippy::type_complexity)]
fn head(
    bytes: &[u8],
    head_request: bool,
    upstream: bool,
) -> Option<(usize, Result<Kind, String>, bool)> {
    let mut fields = [httparse::EMPTY_HEADER; 200];
    let mut res = httparse::Response::new(&mut fields);
    let Ok(httparse::Status::Complete(len)) = res.parse(bytes) else {
        return None;
    };
    let status = res.code?;
    let mut codings: Vec<String> = Vec::new();
    let (mut coded, mut close, mut length) = (false, false, None::<Vec<u8>>);
    for field in res.headers.iter() {
        let value = field.value.trim_ascii();
        let lower = |v: &[u8]| String::from_utf8_lossy(v).to_ascii_lowercase();
        if field.name.eq_ignore_ascii_case("transfer-encoding") {
            coded = true;
            let v = lower(value);
            codings.extend(
                v.split(',')
                    .map(|t| t.trim().to_string())
                    .filter(|t| !t.is_empty()),
            );
        } else if field.name.eq_ignore_ascii_case("content-length") {
            // The client's fields must agree as written; the upstream's, as numbers.
            let same = |l: &[u8]| l == value || (upstream && unpadded(l) == unpadded(value));
            if length.as_deref().is_some_and(|l| !same(l)) {
                return Some((len, Err("two Content-Length values".into()), close));
            }
            length = Some(value.to_vec());
        } else if field.name.eq_ignore_ascii_case("connection") {
            close |= lower(value).split(',').any(|t| t.trim() == "close");
        }
    }
    let kind = if (100..200).contains(&status) {
        Err(format!("interim status {status}"))
    } else if head_request || status == 204 || status == 304 {
        Ok(Kind::None)
    } else if coded {
        Ok(if codings.last().map(String::as_str) == Some("chunked") {
            Kind::Chunked
        } else {
            Kind::Close
        })
    } else if let Some(l) = length {
        match std::str::from_utf8(&l)
            .ok()
            .and_then(|l| l.parse::<u64>().ok())
        {
            Some(n) if l.iter().all(u8::is_ascii_digit) => Ok(Kind::Length(n)),
            _ => Err("invalid Content-Length".into()),
        }
    } else {
        Ok(Kind::Close)
    };
    Some((len, kind, close))
}

/// A body framed by `kind` at the start of `bytes`: `Some((end, data))` when it ends within
/// them, `None` when they are a proper beginning of it, an error when they cannot be.
fn body(kind: Kind, bytes: &[u8]) -> Result<Option<(usize, Vec<u8>)>, String> {
    match kind {
        Kind::None => Ok(Some((0, Vec::new()))),
        Kind::Length(n) => Ok(usize::try_from(n)
            .ok()
            .filter(|&n| n <= bytes.len())
            .map(|n| (n, bytes[..n].to_vec()))),
        Kind::Close => Ok(None),
        Kind::Chunked => chunked(bytes),
    }
}

/// A line ended by CRLF at `at`: its content and where the next starts; `None` if incomplete.
fn line(bytes: &[u8], at: usize) -> Result<Option<(&[u8], usize)>, String> {
    let rest = &bytes[at..];
    match rest.iter().position(|&b| b == b'\n') {
        None => Ok(None),
        Some(0) => Err("bare LF".into()),
        Some(lf) if rest[lf - 1] != b'\r' => Err("bare LF".into()),
        Some(lf) if rest[..lf - 1].contains(&b'\r') => Err("bare CR".into()),
        Some(lf) => Ok(Some((&rest[..lf - 1], at + lf + 1))),
    }
}

fn chunked(bytes: &[u8]) -> Result<Option<(usize, Vec<u8>)>, String> {
    let mut data = Vec::new();
    let mut at = 0;
    loop {
        let Some((size_line, next)) = line(bytes, at)? else {
            return Ok(None);
        };
        let digits = size_line
            .iter()
            .take_while(|b| b.is_ascii_hexdigit())
            .count();
        let size = std::str::from_utf8(&size_line[..digits])
            .ok()
            .and_then(|d| u64::from_str_radix(d, 16).ok())
            .ok_or("invalid chunk size")?;
        if !matches!(size_line.get(digits), None | Some(b' ' | b'\t' | b';')) {
            return Err("junk after the chunk size".into());
        }
        at = next;
        if size == 0 {
            loop {
                let Some((trailer, next)) = line(bytes, at)? else {
                    return Ok(None);
                };
                at = next;
                if trailer.is_empty() {
                    return Ok(Some((at, data)));
                }
            }
        }
        let size = usize::try_from(size).map_err(|e| e.to_string())?;
        if bytes.len() - at < size + 2 {
            let tail = &bytes[(at + size).min(bytes.len())..];
            if !b"\r\n".starts_with(tail) {
                return Err("chunk data not followed by CRLF".into());
            }
            return Ok(None);
        }
        data.extend_from_slice(&bytes[at..at + size]);
        if &bytes[at + size..at + size + 2] != b"\r\n" {
            return Err("chunk data not followed by CRLF".into());
        }
        at += size + 2;
    }
}

/// Skips interim heads: where the final response head starts.
fn final_head(bytes: &[u8], head_request: bool) -> Option<(usize, usize, Kind)> {
    let mut at = 0;
    loop {
        let mut fields = [httparse::EMPTY_HEADER; 200];
        let mut res = httparse::Response::new(&mut fields);
        let Ok(httparse::Status::Complete(len)) = res.parse(&bytes[at..]) else {
            return None;
        };
        if (100..200).contains(&res.code?) {
            at += len;
            continue;
        }
        let (_, kind, _) = head(&bytes[at..], head_request, true)?;
        return Some((at, len, kind.ok()?));
    }
}

/// Where the upstream's response in `bytes` ends, if it does.
fn response_end(bytes: &[u8], head_request: bool) -> Option<usize> {
    let (at, len, kind) = final_head(bytes, head_request)?;
    let (end, _) = body(kind, &bytes[at + len..]).ok()??;
    Some(at + len + end)
}

/// The data of the upstream's response in `bytes`, if it ends there (or at their end).
fn upstream_payload(bytes: &[u8], head_request: bool) -> Option<Vec<u8>> {
    let (at, len, kind) = final_head(bytes, head_request)?;
    if kind == Kind::Close {
        return Some(bytes[at + len..].to_vec());
    }
    Some(body(kind, &bytes[at + len..]).ok()??.1)
}

/// A number's digits without leading zeros.
fn unpadded(digits: &[u8]) -> &[u8] {
    let zeros = digits.iter().take_while(|&&d| d == b'0').count();
    &digits[zeros..]
}
