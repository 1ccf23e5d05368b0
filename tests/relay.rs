//! The fuzz target `h1_relay`'s rule in every test run: teal's own HTTP/1.1 path relays an
//! upstream's response, well-formed or not, read in random pieces, as exactly one well-framed
//! response per request or a closed connection (`fuzz/fuzz_targets/relay_check.rs`).

use proptest::prelude::*;

#[path = "../fuzz/fuzz_targets/relay_check.rs"]
mod relay_check;

/// A status line, some framing fields, a body framed by them (or not), and what may follow.
fn response() -> impl Strategy<Value = Vec<u8>> {
    let status = prop_oneof![
        Just("HTTP/1.1 200 OK\r\n"),
        Just("HTTP/1.1 204 No Content\r\n"),
        Just("HTTP/1.1 304 Not Modified\r\n"),
        Just("HTTP/1.0 200 OK\r\n"),
        Just("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n"),
    ];
    let field = prop_oneof![
        Just("Content-Length: 5\r\n".to_string()),
        (0u8..20).prop_map(|n| format!("Content-Length: {n}\r\n")),
        Just("Transfer-Encoding: chunked\r\n".to_string()),
        Just("Transfer-Encoding: gzip\r\n".to_string()),
        Just("Transfer-Encoding: gzip, chunked\r\n".to_string()),
        Just("Connection: close\r\n".to_string()),
        Just("Connection: keep-alive\r\n".to_string()),
        Just("Date: d\r\n".to_string()),
        Just("X-A: 1\r\n".to_string()),
    ];
    let piece = prop_oneof![
        Just("5\r\nhello\r\n".to_string()),
        Just("0\r\n\r\n".to_string()),
        Just("0\r\nx-t: 1\r\n\r\n".to_string()),
        Just("3;e=1\r\nabc\r\n".to_string()),
        Just("2 \r\nab\r\n".to_string()),
        Just("\r\n".to_string()),
        Just("5\nhello".to_string()),
        "[ -~]{0,8}",
    ];
    (
        status,
        proptest::collection::vec(field, 0..4),
        proptest::collection::vec(piece, 0..5),
    )
        .prop_map(|(status, fields, pieces)| {
            let mut bytes = status.to_string();
            bytes.extend(fields);
            bytes.push_str("\r\n");
            bytes.extend(pieces);
            bytes.into_bytes()
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn relay_sends_one_well_framed_response(
        upstream in response(),
        splits in proptest::collection::vec(0usize..200, 0..6),
        head_request in any::<bool>(),
    ) {
        relay_check::check(&upstream, &splits, head_request);
    }
}

/// Found by reading `plan_response` against the rule: a last `Transfer-Encoding` field with no
/// coding left the body framed "until close" though the client's head says chunked (the
/// codings of all the fields make one list, RFC 9110 §5.3).
#[test]
fn transfer_coding_list_spans_fields() {
    let upstream = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: \r\n\r\n0\r\n\r\nHTTP/1.1 200 OK\r\n\r\n";
    relay_check::check(upstream, &[], false);
}

/// Found by the fuzz target: `Content-Length` fields of one value spelled two ways ("5", "05")
/// went to the client as they were, two values a strict client refuses; it gets one.
#[test]
fn one_content_length_for_the_client() {
    let upstream = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 05\r\n\r\nhello";
    relay_check::check(upstream, &[2], false);
}
