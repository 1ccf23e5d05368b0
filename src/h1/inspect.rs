//! The same code the path runs, on bytes in memory: for the fuzz targets and micro-benchmarks.

use std::net::SocketAddr;

use crate::framing::Framing;
use crate::h1::io::Buffer;
use crate::h1::request::{plan_request, Parsed};
use crate::h1::response::{plan_response, Added, ParsedResponse};
use crate::h1::upstream::{first_step, next_head};
use crate::server::ServeOptions;
use crate::state::Snapshot;

/// The upstream request head this path writes for the request head in `buf` from `peer`, or
/// `None` when the general path would take the request. The same code the proxy runs, for the
/// micro-benchmarks (`benches/route.rs`).
pub fn rewrite_request(
    buf: &[u8],
    peer: SocketAddr,
    snap: &Snapshot,
    options: &ServeOptions,
) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    match plan_request(buf, peer, snap, options, &mut out) {
        Parsed::Ready(_) => Some(out),
        Parsed::Partial | Parsed::Body | Parsed::HandOff => None,
    }
}

/// The client's response head this path writes for the upstream response head in `buf`, or
/// `None` if it is incomplete or refused. For the micro-benchmarks, like [`rewrite_request`].
pub fn rewrite_response(buf: &[u8], head_request: bool) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    match plan_response(buf, head_request, false, None, Added::default(), &mut out) {
        ParsedResponse::Ready(_) => Some(out),
        _ => None,
    }
}

/// What [`relay_in_memory`] found: what teal would do with an upstream's response.
#[doc(hidden)]
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RelayOutcome {
    /// teal answers 502 itself (the head refused or cut short, a chunked body malformed from the
    /// start): nothing of the upstream's goes to the client, and `client` is empty.
    pub bad_gateway: bool,
    /// What the client receives.
    pub client: Vec<u8>,
    /// The client's connection stays open after it (else it closes after `client`).
    pub client_open: bool,
    /// The upstream connection goes back to the pool.
    pub upstream_reused: bool,
    /// Upstream bytes read by then.
    pub read: usize,
    /// The body's framing, once the head was taken.
    pub framing: Option<Framing>,
}

/// Runs the relay's decisions ([`plan_response`], then the body's [`BodyRelay`]) over the
/// upstream's bytes `upstream` as reads deliver them: cut at the offsets in `splits` (and by the
/// read buffer's size), the end of the bytes being the upstream's end of stream. The same code
/// the proxy runs, without the sockets, for the fuzz target `h1_relay` and the property tests.
#[doc(hidden)]
pub fn relay_in_memory(upstream: &[u8], splits: &[usize], head_request: bool) -> RelayOutcome {
    let mut reads = Reads::new(upstream, splits);
    let mut buffer = Buffer::take();
    let mut outcome = relay_buffered(&mut reads, &mut buffer, head_request);
    buffer.give();
    outcome.read = reads.at;
    outcome
}

pub(crate) fn relay_buffered(
    reads: &mut Reads<'_>,
    buffer: &mut Buffer,
    head_request: bool,
) -> RelayOutcome {
    let bad_gateway = RelayOutcome {
        bad_gateway: true,
        ..RelayOutcome::default()
    };
    let mut head = Vec::new();
    let mut interim = false;
    let plan = |bytes: &[u8], head: &mut Vec<u8>| {
        plan_response(bytes, head_request, false, None, Added::default(), head)
    };
    let response = loop {
        if reads.read(buffer) == 0 {
            return bad_gateway;
        }
        match next_head(buffer, &mut interim, &mut head, plan) {
            Ok(Some(response)) => break response,
            Ok(None) => {}
            Err(_) => return bad_gateway,
        }
    };
    let Ok((mut body, mut step)) = first_step(&response, buffer, &mut head) else {
        return bad_gateway;
    };
    let mut outcome = RelayOutcome {
        client: head,
        framing: Some(response.framing),
        ..RelayOutcome::default()
    };
    loop {
        outcome
            .client
            .extend_from_slice(step.as_is_part(buffer.filled()));
        if step.ended {
            outcome.client_open = true;
            outcome.upstream_reused = step.clean && response.keep_alive;
            return outcome;
        }
        buffer.clear();
        if reads.read(buffer) == 0 {
            outcome.client_open = body.finish_at_eof(&mut outcome.client) == Ok(true);
            return outcome;
        }
        match body.next(buffer.filled(), &mut outcome.client) {
            Ok(next) => step = next,
            Err(_) => return outcome,
        }
    }
}

/// Reads of an upstream's bytes in memory, for [`relay_in_memory`].
pub(crate) struct Reads<'a> {
    pub(crate) bytes: &'a [u8],
    /// Where reads stop, in order; the last is the end.
    pub(crate) cuts: Vec<usize>,
    pub(crate) at: usize,
}

impl<'a> Reads<'a> {
    pub(crate) fn new(bytes: &'a [u8], splits: &[usize]) -> Reads<'a> {
        let mut cuts: Vec<usize> = splits
            .iter()
            .copied()
            .filter(|&c| c > 0 && c < bytes.len())
            .collect();
        cuts.push(bytes.len());
        cuts.sort_unstable();
        cuts.dedup();
        Reads { bytes, cuts, at: 0 }
    }

    /// As [`read_into`]: what fits of the bytes up to the next cut; 0 at the end.
    pub(crate) fn read(&mut self, buffer: &mut Buffer) -> usize {
        let cut = self
            .cuts
            .iter()
            .copied()
            .find(|&c| c > self.at)
            .unwrap_or(self.at);
        let space = buffer.space();
        let n = (cut - self.at).min(space.len());
        space[..n].copy_from_slice(&self.bytes[self.at..self.at + n]);
        buffer.end += n;
        self.at += n;
        n
    }
}
