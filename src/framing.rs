//! How a response body is delimited, and how it is relayed: a state machine without I/O.
//!
//! [`BodyRelay`] is fed the upstream's bytes as reads deliver them and says, for each read, how
//! many of them belong to the body, what goes to the client (the bytes themselves, or the
//! re-chunked ones it wrote into a buffer), and whether the body ended; at the upstream's end of
//! stream, [`BodyRelay::finish_at_eof`] says whether that was a proper end. The HTTP/1.1 path's
//! relay is a loop of reads and writes around it, and `h1::relay_in_memory` runs the same machine
//! over bytes in memory, for the fuzz target and the property tests.

/// How a response body is delimited, and how it is sent on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Framing {
    /// No body (HEAD, 204, 304).
    Empty,
    /// `Content-Length` bytes.
    Length(u64),
    /// Chunked; passed through as it is.
    Chunked,
    /// Until the upstream closes; sent to the client chunked.
    UntilClose,
    /// Until the upstream closes, under a transfer coding other than chunked: sent as it is, and
    /// the client's connection closes after it.
    UntilCloseAsIs,
}

/// What one read of the upstream's bytes means for the body.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Step {
    /// The first `taken` bytes of the input belong to the body; any after them do not.
    pub taken: usize,
    /// `input[..taken]` goes to the client as it is; otherwise what goes to the client (if
    /// anything) was appended to `out`.
    pub as_is: bool,
    /// Body data in these bytes (the decoded length for chunked), for the access log.
    pub data: u64,
    /// The body ended in this input.
    pub ended: bool,
    /// The body ended exactly at the end of the input: nothing more came on the upstream
    /// connection with this response, which may be reused.
    pub clean: bool,
}

impl Step {
    /// The bytes of `input` that go to the client as they are (empty unless `as_is`).
    pub fn as_is_part<'a>(&self, input: &'a [u8]) -> &'a [u8] {
        if self.as_is {
            &input[..self.taken]
        } else {
            &[]
        }
    }
}

/// A response body being relayed; see the module's documentation.
pub struct BodyRelay {
    framing: Framing,
    /// `Length`: bytes still to come.
    left: u64,
    /// `Chunked`: the scan so far.
    chunks: Chunked,
    ended: bool,
}

impl BodyRelay {
    pub fn new(framing: Framing) -> BodyRelay {
        BodyRelay {
            framing,
            left: match framing {
                Framing::Length(n) => n,
                _ => 0,
            },
            chunks: Chunked::default(),
            ended: false,
        }
    }

    pub fn framing(&self) -> Framing {
        self.framing
    }

    /// The bytes still to come of a `Content-Length` body; `None` for other framings.
    pub fn length_left(&self) -> Option<u64> {
        match self.framing {
            Framing::Length(_) if !self.ended => Some(self.left),
            _ => None,
        }
    }

    /// The client's connection closes after this body (its end is the connection's).
    pub fn closes_client(&self) -> bool {
        self.framing == Framing::UntilCloseAsIs
    }

    /// Takes the next bytes read from the upstream (possibly none: the bytes that came with the
    /// head). Re-chunked bytes for the client are appended to `out`. An error is a chunked body
    /// that is malformed; not to be called again once a step has `ended`.
    pub fn next(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<Step, &'static str> {
        let (taken, as_is, data, ended) = match self.framing {
            Framing::Empty => (0, true, 0, true),
            Framing::Length(_) => {
                let take = input
                    .len()
                    .min(usize::try_from(self.left).unwrap_or(usize::MAX));
                self.left -= take as u64;
                (take, true, take as u64, self.left == 0)
            }
            Framing::Chunked => {
                let before = self.chunks.data;
                let end = self.chunks.feed(input)?;
                let data = self.chunks.data - before;
                (end.unwrap_or(input.len()), true, data, end.is_some())
            }
            Framing::UntilClose => {
                if !input.is_empty() {
                    out.extend_from_slice(format!("{:x}\r\n", input.len()).as_bytes());
                    out.extend_from_slice(input);
                    out.extend_from_slice(b"\r\n");
                }
                (input.len(), false, input.len() as u64, false)
            }
            Framing::UntilCloseAsIs => (input.len(), true, input.len() as u64, false),
        };
        self.ended = ended;
        Ok(Step {
            taken,
            as_is,
            data,
            ended,
            clean: ended && taken == input.len(),
        })
    }

    /// The upstream closed its connection before the body ended: `Ok(true)` if that ends the
    /// body properly and the client's connection may stay open (the closing bytes of the
    /// re-chunked body appended to `out`), `Ok(false)` if it ends the body and the client's
    /// connection closes too, and an error if the body was cut short.
    pub fn finish_at_eof(&mut self, out: &mut Vec<u8>) -> Result<bool, &'static str> {
        match self.framing {
            _ if self.ended => Ok(true),
            Framing::UntilClose => {
                out.extend_from_slice(b"0\r\n\r\n");
                self.ended = true;
                Ok(true)
            }
            Framing::UntilCloseAsIs => {
                self.ended = true;
                Ok(false)
            }
            Framing::Empty | Framing::Length(_) | Framing::Chunked => {
                Err("upstream closed before the end of the body")
            }
        }
    }
}

/// Finds where a chunked body ends (RFC 9112 §7.1) without decoding it, and counts its data.
#[derive(Default)]
pub struct Chunked {
    state: ChunkState,
    size: u64,
    digits: u8,
    /// Data bytes seen so far.
    pub data: u64,
}

#[derive(Default, Clone, Copy, PartialEq, Debug)]
enum ChunkState {
    #[default]
    Size,
    SizeWhitespace,
    Extension,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    TrailerStart,
    TrailerLine,
    TrailerLf,
    EndLf,
    Done,
}

impl Chunked {
    /// Scans the next bytes of the body: `Some(n)` when the body ends after the first `n` of
    /// them, `None` when it goes on.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<Option<usize>, &'static str> {
        use ChunkState::*;
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            match self.state {
                Size | SizeWhitespace | Extension => self.size_line(b)?,
                SizeLf => {
                    expect(b, b'\n', "chunk size line not ended by CRLF")?;
                    self.state = if self.size == 0 { TrailerStart } else { Data };
                }
                Data => {
                    let take =
                        (bytes.len() - i).min(usize::try_from(self.size).unwrap_or(usize::MAX));
                    self.size -= take as u64;
                    self.data += take as u64;
                    i += take;
                    if self.size == 0 {
                        self.state = DataCr;
                    }
                    continue;
                }
                DataCr => {
                    expect(b, b'\r', "chunk data not followed by CRLF")?;
                    self.state = DataLf;
                }
                DataLf => {
                    expect(b, b'\n', "chunk data not followed by CRLF")?;
                    self.state = Size;
                    self.digits = 0;
                }
                TrailerStart | TrailerLine | TrailerLf => self.trailer(b)?,
                EndLf => {
                    expect(b, b'\n', "chunked body not ended by CRLF")?;
                    self.state = Done;
                    return Ok(Some(i + 1));
                }
                Done => return Ok(Some(i)),
            }
            i += 1;
        }
        Ok((self.state == Done).then_some(i))
    }

    /// One byte of a chunk size line, before its CR.
    fn size_line(&mut self, b: u8) -> Result<(), &'static str> {
        use ChunkState::*;
        match self.state {
            Size => match b {
                b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                    let digit = (b as char).to_digit(16).unwrap_or(0);
                    self.digits += 1;
                    if self.digits > 15 {
                        return Err("chunk size too large");
                    }
                    self.size = self.size * 16 + u64::from(digit);
                }
                b';' if self.digits > 0 => self.state = Extension,
                b' ' | b'\t' if self.digits > 0 => self.state = SizeWhitespace,
                b'\r' if self.digits > 0 => self.state = SizeLf,
                _ => return Err("invalid chunk size"),
            },
            // RFC 9112 §7.1.1: only whitespace, then an extension or the line's end.
            SizeWhitespace => match b {
                b' ' | b'\t' => {}
                b';' => self.state = Extension,
                b'\r' => self.state = SizeLf,
                _ => return Err("invalid chunk size"),
            },
            _ => match b {
                b'\r' => self.state = SizeLf,
                _ if is_control(b) => return Err("control byte in a chunk extension"),
                _ => {}
            },
        }
        Ok(())
    }

    /// One byte of the trailer section, before its last LF.
    fn trailer(&mut self, b: u8) -> Result<(), &'static str> {
        use ChunkState::*;
        match self.state {
            TrailerLf => {
                expect(b, b'\n', "trailer field not ended by CRLF")?;
                self.state = TrailerStart;
            }
            TrailerStart if b == b'\r' => self.state = EndLf,
            _ if b == b'\r' => self.state = TrailerLf,
            _ if is_control(b) => return Err("control byte in a trailer field"),
            _ => self.state = TrailerLine,
        }
        Ok(())
    }
}

/// A control byte where field content may stand (RFC 9110 §5.5: VCHAR, obs-text, SP and HTAB).
fn is_control(b: u8) -> bool {
    (b < 0x20 && b != b'\t') || b == 0x7f
}

fn expect(byte: u8, wanted: u8, otherwise: &'static str) -> Result<(), &'static str> {
    if byte == wanted {
        Ok(())
    } else {
        Err(otherwise)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan_whole(body: &[u8]) -> Result<Option<usize>, &'static str> {
        Chunked::default().feed(body)
    }

    /// The end of a chunked body is found wherever the bytes are split, trailers and extensions
    /// included, and what follows it is not taken.
    #[test]
    fn chunked_end_at_every_split() {
        let body = b"5;ext=1\r\nhello\r\n1A\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nx-t: 1\r\n\r\n";
        let mut bytes = body.to_vec();
        bytes.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
        assert_eq!(scan_whole(&bytes), Ok(Some(body.len())));
        for split in 0..bytes.len() {
            let mut c = Chunked::default();
            let first = c.feed(&bytes[..split]).unwrap();
            let end = match first {
                Some(n) => n,
                None => split + c.feed(&bytes[split..]).unwrap().unwrap(),
            };
            assert_eq!(end, body.len(), "split at {split}");
            assert_eq!(c.data, 31);
        }
    }

    /// Malformed framing is an error, not a guess.
    #[test]
    fn chunked_refuses_malformed() {
        for bad in [
            &b"x\r\n"[..],
            b"\r\n",
            b"5\nhello",
            b"5\r\nhelloX",
            b"ffffffffffffffff\r\n",
            b"0\r\nx-t: 1\n",
            b"5 junk\r\n",
            b"5;a=\x01\r\n",
            b"0\r\nx-t: a\x01b\r\n",
            b"0\r\n\n",
        ] {
            assert!(
                scan_whole(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(scan_whole(b"5 \t;x\r\nhello\r\n0\r\n\r\n"), Ok(Some(19)));
        assert_eq!(scan_whole(b"0\r\n"), Ok(None));
        assert_eq!(scan_whole(b"0\r\n\r\n"), Ok(Some(5)));
    }

    /// Runs `framing` over `reads`, then the upstream's end if the body has not ended: what the
    /// client gets, and the last step.
    fn run(framing: Framing, reads: &[&[u8]]) -> (Vec<u8>, Result<bool, &'static str>) {
        let mut body = BodyRelay::new(framing);
        let mut client = Vec::new();
        for read in reads {
            let step = body.next(read, &mut client).unwrap();
            client.extend_from_slice(step.as_is_part(read));
            if step.ended {
                return (client, Ok(step.clean));
            }
        }
        let end = body.finish_at_eof(&mut client);
        (client, end)
    }

    /// Each framing: what goes to the client, where the body ends, and what the end means.
    #[test]
    fn body_relay_by_framing() {
        assert_eq!(run(Framing::Empty, &[b""]), (vec![], Ok(true)));
        assert_eq!(run(Framing::Empty, &[b"x"]), (vec![], Ok(false)));
        assert_eq!(
            run(Framing::Length(5), &[b"he", b"llo"]),
            (b"hello".to_vec(), Ok(true))
        );
        assert_eq!(
            run(Framing::Length(5), &[b"he", b"lloX"]),
            (b"hello".to_vec(), Ok(false))
        );
        assert!(run(Framing::Length(5), &[b"he"]).1.is_err());
        assert_eq!(
            run(Framing::Chunked, &[b"2\r\nhi\r", b"\n0\r\n\r\n"]),
            (b"2\r\nhi\r\n0\r\n\r\n".to_vec(), Ok(true))
        );
        assert!(run(Framing::Chunked, &[b"2\r\nhi\r\n"]).1.is_err());
        assert_eq!(
            run(Framing::UntilClose, &[b"", b"hello", b"!"]),
            (b"5\r\nhello\r\n1\r\n!\r\n0\r\n\r\n".to_vec(), Ok(true))
        );
        assert_eq!(
            run(Framing::UntilCloseAsIs, &[b"ab", b"c"]),
            (b"abc".to_vec(), Ok(false))
        );
        assert!(BodyRelay::new(Framing::UntilCloseAsIs).closes_client());
    }
}
