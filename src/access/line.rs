//! The access line, written by hand.
//!
//! tracing's formatter took about 16,000 instructions a line (a visitor per field, `fmt::Write`
//! through several layers, a JSON map serializer); nginx writes its line in well under a
//! microsecond. [`Line::write`] writes the same bytes as tracing's `fmt` subscriber would, text or
//! JSON (`flatten_event`), into a per-thread buffer that goes to stderr in one `write`, as
//! tracing's did. It is used when [`init`] was told the format and stderr is not a terminal;
//! otherwise (colours on a terminal, a subscriber teal did not install) the line goes through
//! `tracing::info!` as before. Either way `TEAL_LOG` filters it: the line is written only when
//! tracing would have enabled an INFO event of target `teal::access`.
//!
//! The tests below hold the two writers to the same bytes for any field values.

use std::cell::{Cell, RefCell};
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::config::LogFormat;

/// The format the line is written in by hand; unset means through tracing.
static DIRECT: OnceLock<LogFormat> = OnceLock::new();

/// Tells the writer the format of the subscriber just installed, which writes to stderr with
/// `ansi` colours or not. Lines are written by hand from now on unless `ansi`.
pub fn init(format: LogFormat, ansi: bool) {
    if !ansi {
        let _ = DIRECT.set(format);
    }
}

/// One access line's fields; see the module doc of [`crate::access`].
pub struct Line<'a> {
    pub peer: SocketAddr,
    pub client: IpAddr,
    pub method: &'a str,
    pub path: &'a str,
    pub protocol: &'a str,
    pub host: &'a str,
    pub user_agent: &'a str,
    pub referer: &'a str,
    pub request_id: &'a str,
    /// Whether `path` to `request_id` are known to be [`plain`] (checked once when captured).
    pub plain: bool,
    pub pool: &'a str,
    pub upstream: &'a str,
    pub status: u16,
    pub bytes: u64,
    /// Microseconds from sending the request to the response head.
    pub upstream_us: Option<u64>,
    /// Microseconds to the last byte.
    pub duration_us: u64,
}

thread_local! {
    /// The buffer a line is made in; it keeps its capacity between lines. On a thread that
    /// [`hold`]s its lines, it holds those not yet written.
    static BUF: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(512));
    /// Whether this thread holds its lines until [`flush`] (or until [`HOLD_BYTES`]).
    static HELD: Cell<bool> = const { Cell::new(false) };
}

/// Lines a thread holds at most before it writes them, whatever its runtime is doing.
const HOLD_BYTES: usize = 16 * 1024;

/// From now on this thread holds its access lines and writes them together when [`flush`] is
/// called, which its runtime must do whenever it has nothing left to run (tokio's
/// `on_thread_park`) and when the thread ends; or once they reach 16 KiB. A proxy worker under
/// load so writes many lines with one system call instead of one each; an idle one writes each
/// line as soon as the exchange that made it has ended and nothing else is ready.
pub fn hold() {
    HELD.set(true);
}

/// Writes the lines this thread holds.
pub fn flush() {
    BUF.with(|buf| {
        if let Ok(mut buf) = buf.try_borrow_mut() {
            write_out(&mut buf);
        }
    });
}

/// Writes `buf` to stderr and empties it. As tracing's writer does, lines that cannot be written
/// are dropped.
fn write_out(buf: &mut Vec<u8>) {
    if !buf.is_empty() {
        let _ = std::io::stderr().write_all(buf);
        buf.clear();
    }
}

impl Line<'_> {
    /// Writes the line if the log filter lets `teal::access` through at INFO.
    pub fn emit(&self) {
        // Asked for an event with the line's fields (kept in step with `trace`), so directives
        // on field names (`[{error}]=off`) decide as they would for tracing's own event.
        let enabled = tracing::event_enabled!(
            target: "teal::access",
            tracing::Level::INFO,
            peer,
            client,
            method,
            path,
            protocol,
            host,
            user_agent,
            referer,
            request_id,
            pool,
            upstream,
            status,
            bytes,
            upstream_ms,
            duration_ms
        );
        if !enabled {
            return;
        }
        let Some(&format) = DIRECT.get() else {
            return self.trace();
        };
        BUF.with(|buf| {
            let Ok(mut buf) = buf.try_borrow_mut() else {
                return self.trace();
            };
            // Empty unless this thread holds lines: `write_out` empties it.
            self.write(format, SystemTime::now(), &mut buf);
            if !HELD.get() || buf.len() >= HOLD_BYTES {
                write_out(&mut buf);
            }
        });
    }

    /// The line through tracing's formatter (the reference the hand-written one matches).
    fn trace(&self) {
        tracing::info!(
            target: "teal::access",
            peer = %self.peer,
            client = %self.client,
            method = %self.method,
            path = self.path,
            protocol = self.protocol,
            host = self.host,
            user_agent = self.user_agent,
            referer = self.referer,
            request_id = self.request_id,
            pool = %self.pool,
            upstream = self.upstream,
            status = self.status,
            bytes = self.bytes,
            upstream_ms = self.upstream_us.map(|us| us as f64 / 1000.0),
            duration_ms = self.duration_us as f64 / 1000.0,
        );
    }

    /// Appends the line, as of `now`, in `format` with its newline to `out`.
    pub fn write(&self, format: LogFormat, now: SystemTime, out: &mut Vec<u8>) {
        match format {
            LogFormat::Text => self.text(now, out),
            LogFormat::Json => self.json(now, out),
        }
    }

    /// `<time>  INFO teal::access: peer=.. client=.. method=.. path=".." ..`: what the `fmt`
    /// subscriber's `Full` format makes; strings as Rust's `{:?}`, the `%` fields as `{}`.
    fn text(&self, now: SystemTime, out: &mut Vec<u8>) {
        timestamp(now, out);
        out.extend_from_slice(b"  INFO teal::access: peer=");
        socket_addr(self.peer, out);
        out.extend_from_slice(b" client=");
        ip_addr(self.client, out);
        out.extend_from_slice(b" method=");
        out.extend_from_slice(self.method.as_bytes());
        let quoted = [
            (&b" path="[..], self.path),
            (b" protocol=", self.protocol),
            (b" host=", self.host),
            (b" user_agent=", self.user_agent),
            (b" referer=", self.referer),
            (b" request_id=", self.request_id),
        ];
        for (name, value) in quoted {
            out.extend_from_slice(name);
            if self.plain {
                as_is(value, out);
            } else {
                debug_str(value, out);
            }
        }
        out.extend_from_slice(b" pool=");
        out.extend_from_slice(self.pool.as_bytes());
        out.extend_from_slice(b" upstream=");
        debug_str(self.upstream, out);
        out.extend_from_slice(b" status=");
        number(self.status.into(), out);
        out.extend_from_slice(b" bytes=");
        number(self.bytes, out);
        if let Some(us) = self.upstream_us {
            out.extend_from_slice(b" upstream_ms=");
            millis(us, out);
        }
        out.extend_from_slice(b" duration_ms=");
        millis(self.duration_us, out);
        out.push(b'\n');
    }

    /// `{"timestamp":"..","level":"INFO","peer":"..",..,"target":"teal::access"}`: what the
    /// `fmt` subscriber's JSON format with `flatten_event(true)` makes, fields in their order.
    fn json(&self, now: SystemTime, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"timestamp\":\"");
        timestamp(now, out);
        out.extend_from_slice(b"\",\"level\":\"INFO\",\"peer\":\"");
        socket_addr(self.peer, out);
        out.extend_from_slice(b"\",\"client\":\"");
        ip_addr(self.client, out);
        out.push(b'"');
        let strings = [
            (&b",\"method\":"[..], self.method, false),
            (b",\"path\":", self.path, self.plain),
            (b",\"protocol\":", self.protocol, false),
            (b",\"host\":", self.host, self.plain),
            (b",\"user_agent\":", self.user_agent, self.plain),
            (b",\"referer\":", self.referer, self.plain),
            (b",\"request_id\":", self.request_id, self.plain),
            (b",\"pool\":", self.pool, false),
            (b",\"upstream\":", self.upstream, false),
        ];
        for (name, value, plain) in strings {
            out.extend_from_slice(name);
            if plain {
                as_is(value, out);
            } else {
                json_str(value, out);
            }
        }
        out.extend_from_slice(b",\"status\":");
        number(self.status.into(), out);
        out.extend_from_slice(b",\"bytes\":");
        number(self.bytes, out);
        if let Some(us) = self.upstream_us {
            out.extend_from_slice(b",\"upstream_ms\":");
            millis(us, out);
        }
        out.extend_from_slice(b",\"duration_ms\":");
        millis(self.duration_us, out);
        out.extend_from_slice(b",\"target\":\"teal::access\"}\n");
    }
}

/// `2026-12-02T18:33:00.123456Z`, UTC, as tracing's `SystemTime` timer writes it (years 0 to
/// 9999; the clock is not read before 1970 here).
fn timestamp(now: SystemTime, out: &mut Vec<u8>) {
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let mut s = *b"0000-00-00T00:00:00.000000Z";
    // The date and time change once a second: made then, copied for every line in between.
    let (cached, mut date_time) = SECOND.get();
    if cached != secs + 1 {
        let (year, month, day) = civil(secs / 86_400);
        let second_of_day = (secs % 86_400) as u32;
        digits(&mut date_time[0..4], year);
        digits(&mut date_time[5..7], month);
        digits(&mut date_time[8..10], day);
        digits(&mut date_time[11..13], second_of_day / 3600);
        digits(&mut date_time[14..16], second_of_day / 60 % 60);
        digits(&mut date_time[17..19], second_of_day % 60);
        SECOND.set((secs + 1, date_time));
    }
    s[..19].copy_from_slice(&date_time[..19]);
    digits(&mut s[20..26], since.subsec_micros());
    out.extend_from_slice(&s);
}

thread_local! {
    /// The second (plus one: 0 is none yet) and its `2026-12-02T18:33:00` last written here.
    static SECOND: Cell<(u64, [u8; 19])> = const { Cell::new((0, *b"0000-00-00T00:00:00")) };
}

/// Writes `n` as decimal digits filling `to`, zero-padded (the high digits dropped).
fn digits(to: &mut [u8], mut n: u32) {
    for d in to.iter_mut().rev() {
        *d = b'0' + (n % 10) as u8;
        n /= 10;
    }
}

/// Year, month and day of the day `days` after 1970-01-01 (proleptic Gregorian; Howard
/// Hinnant's `civil_from_days`).
fn civil(days: u64) -> (u32, u32, u32) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = (yoe + era * 400 + u64::from(month <= 2)) as u32;
    (year.min(9999), month, day)
}

fn number(n: u64, out: &mut Vec<u8>) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// Microseconds as milliseconds, the shortest decimal that is the `f64` `us / 1000`: what both
/// `{:?}` and serde_json print for it (`12.0`, `0.25`, `1.005`).
fn millis(us: u64, out: &mut Vec<u8>) {
    number(us / 1000, out);
    let frac = us % 1000;
    out.push(b'.');
    if frac == 0 {
        out.push(b'0');
        return;
    }
    let mut d = [b'0'; 3];
    digits(&mut d, frac as u32);
    let len = if d[2] != b'0' {
        3
    } else if d[1] != b'0' {
        2
    } else {
        1
    };
    out.extend_from_slice(&d[..len]);
}

fn socket_addr(addr: SocketAddr, out: &mut Vec<u8>) {
    match addr {
        SocketAddr::V4(v4) => {
            ipv4(v4.ip().octets(), out);
            out.push(b':');
            number(v4.port().into(), out);
        }
        SocketAddr::V6(_) => {
            let _ = write!(out, "{addr}");
        }
    }
}

fn ip_addr(ip: IpAddr, out: &mut Vec<u8>) {
    match ip {
        IpAddr::V4(v4) => ipv4(v4.octets(), out),
        IpAddr::V6(_) => {
            let _ = write!(out, "{ip}");
        }
    }
}

/// The dotted quad, made in a stack buffer and appended at once.
fn ipv4(octets: [u8; 4], out: &mut Vec<u8>) {
    let mut s = [0u8; 15];
    let mut len = 0;
    for (i, o) in octets.into_iter().enumerate() {
        if i > 0 {
            s[len] = b'.';
            len += 1;
        }
        if o >= 100 {
            s[len] = b'0' + o / 100;
            len += 1;
        }
        if o >= 10 {
            s[len] = b'0' + o / 10 % 10;
            len += 1;
        }
        s[len] = b'0' + o % 10;
        len += 1;
    }
    out.extend_from_slice(&s[..len]);
}

/// Which bytes each format writes as they are: for `{:?}` printable ASCII but `"` and `\`; for
/// JSON anything but `"`, `\` and control characters below 0x20.
const fn plain_bytes(json: bool) -> [bool; 256] {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let quote_or_slash = b == b'"' as usize || b == b'\\' as usize;
        table[b] = !quote_or_slash && b >= 0x20 && (json || b < 0x7f);
        b += 1;
    }
    table
}

static PLAIN_DEBUG: [bool; 256] = plain_bytes(false);
static PLAIN_JSON: [bool; 256] = plain_bytes(true);

/// Whether every byte of `bytes` is printable ASCII other than `"` and `\`, which both formats
/// write as they are; eight bytes at a time (the word tests of "Bit Twiddling Hacks": a byte
/// below 0x20, above 0x7e, or equal to `"` or `\`), the tail by the table.
pub fn plain(bytes: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let has_zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGH;
    let mut words = bytes.chunks_exact(8);
    for word in &mut words {
        let mut w = [0u8; 8];
        w.copy_from_slice(word);
        let x = u64::from_le_bytes(w);
        let below_space = x.wrapping_sub(ONES * 0x20) & !x & HIGH;
        let above_tilde = (x.wrapping_add(ONES) | x) & HIGH;
        let quote = has_zero(x ^ (ONES * u64::from(b'"')));
        let slash = has_zero(x ^ (ONES * u64::from(b'\\')));
        if below_space | above_tilde | quote | slash != 0 {
            return false;
        }
    }
    words
        .remainder()
        .iter()
        .all(|&b| PLAIN_DEBUG[usize::from(b)])
}

/// `"value"` for a value known to be [`plain`].
fn as_is(value: &str, out: &mut Vec<u8>) {
    out.push(b'"');
    out.extend_from_slice(value.as_bytes());
    out.push(b'"');
}

/// `"value"` as Rust's `{:?}` writes a `str`: printable ASCII other than `"` and `\` as it is,
/// anything else through `escape_debug` (the rare case: written by `fmt`).
fn debug_str(value: &str, out: &mut Vec<u8>) {
    if plain(value.as_bytes()) {
        as_is(value, out);
    } else {
        let _ = write!(out, "{value:?}");
    }
}

/// A JSON string as serde_json writes it: `"` and `\` escaped, control characters as `\n`,
/// `\t`.. or `\u00XX`, everything else (DEL, any non-ASCII character) as it is.
fn json_str(value: &str, out: &mut Vec<u8>) {
    out.push(b'"');
    let bytes = value.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if PLAIN_JSON[usize::from(b)] {
            continue;
        }
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            _ => b"",
        };
        out.extend_from_slice(&bytes[start..i]);
        if escape.is_empty() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(b >> 4)]);
            out.push(HEX[usize::from(b & 0xf)]);
        } else {
            out.extend_from_slice(escape);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use proptest::prelude::*;
    use tracing_subscriber::fmt::MakeWriter;

    use super::*;

    /// What tracing's subscriber wrote.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Captured {
        type Writer = Captured;
        fn make_writer(&'a self) -> Captured {
            self.clone()
        }
    }

    /// The line as tracing's subscriber in `format` writes it, as teal's `init_tracing` sets it
    /// up (without colours).
    fn through_tracing(line: &Line<'_>, format: LogFormat) -> String {
        let captured = Captured::default();
        let builder = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(captured.clone());
        match format {
            LogFormat::Text => {
                tracing::subscriber::with_default(builder.finish(), || line.trace());
            }
            LogFormat::Json => {
                let subscriber = builder.json().flatten_event(true).finish();
                tracing::subscriber::with_default(subscriber, || line.trace());
            }
        }
        let bytes = captured.0.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    fn by_hand(line: &Line<'_>, format: LogFormat) -> String {
        let mut out = Vec::new();
        line.write(format, SystemTime::now(), &mut out);
        String::from_utf8(out).unwrap()
    }

    /// The two with the timestamp (27 bytes, where each format puts it) taken out.
    fn same_but_time(line: &Line<'_>, format: LogFormat) {
        let (ours, theirs) = (by_hand(line, format), through_tracing(line, format));
        let at = if format == LogFormat::Json { 14 } else { 0 };
        let cut = |s: &str| format!("{}{}", &s[..at], &s[at + 27..]);
        assert_eq!(cut(&ours), cut(&theirs), "ours: {ours}theirs: {theirs}");
    }

    fn sample<'a>(text: &'a str, upstream_us: Option<u64>, duration_us: u64) -> Line<'a> {
        Line {
            peer: "127.0.0.1:41234".parse().unwrap(),
            client: "10.1.2.3".parse().unwrap(),
            method: "GET",
            path: text,
            protocol: "HTTP/1.1",
            host: "shop.example",
            user_agent: text,
            referer: "-",
            request_id: "0123456789abcdef0123456789abcdef",
            plain: false,
            pool: "blue",
            upstream: "127.0.0.1:18081",
            status: 200,
            bytes: 5,
            upstream_us,
            duration_us,
        }
    }

    #[test]
    fn matches_tracing_for_an_ordinary_request() {
        for format in [LogFormat::Text, LogFormat::Json] {
            same_but_time(&sample("/api/items?id=1", Some(1234), 2500), format);
            same_but_time(&sample("/", None, 0), format);
            let mut v6 = sample("/x", Some(1), 1_000_000);
            v6.peer = "[::1]:8080".parse().unwrap();
            v6.client = "2001:db8::1".parse().unwrap();
            same_but_time(&v6, format);
        }
    }

    /// The line is written exactly when tracing would write it, under any `TEAL_LOG`: also
    /// with directives on field names (`[{error}]=off` applies to events with an `error` field
    /// only, which the access line has not; a check without the fields took it as "off").
    #[test]
    fn the_filter_decides_as_for_tracing_s_own_event() {
        let line = sample("/", Some(1), 2);
        let filters = [
            "info",
            "warn",
            "info,teal::access=off",
            "off,teal::access=info",
            "info,[{error}]=off",
            "warn,[{error}]=info",
            "warn,[{status}]=info",
        ];
        for filter in filters {
            let under = |f: &dyn Fn()| {
                let captured = Captured::default();
                let subscriber = tracing_subscriber::fmt()
                    .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
                    .with_ansi(false)
                    .with_writer(captured.clone())
                    .finish();
                tracing::subscriber::with_default(subscriber, f);
                let written = !captured.0.lock().unwrap().is_empty();
                written
            };
            let by_tracing = under(&|| line.trace());
            // DIRECT is not set in unit tests: a line let through goes to trace().
            assert_eq!(under(&|| line.emit()), by_tracing, "TEAL_LOG={filter}");
        }
    }

    #[test]
    fn the_timestamp_is_tracing_s() {
        let cases = [
            (0, "1970-01-01T00:00:00.000000Z"),
            (951_782_400, "2000-02-29T00:00:00.000000Z"),
            (1_796_236_380, "2026-12-02T18:33:00.000000Z"),
            (4_102_444_799, "2099-12-31T23:59:59.000000Z"),
        ];
        for (secs, want) in cases {
            let mut out = Vec::new();
            let at = UNIX_EPOCH + Duration::new(secs, 7_654_321);
            timestamp(at, &mut out);
            let want = want.replace(".000000", ".007654");
            assert_eq!(String::from_utf8(out).unwrap(), want);
        }
    }

    #[test]
    fn plain_is_the_table_for_every_byte_in_every_place() {
        for b in 0..=255u8 {
            for at in 0..17 {
                let mut bytes = vec![b'a'; 17];
                bytes[at] = b;
                assert_eq!(plain(&bytes), PLAIN_DEBUG[usize::from(b)], "{b:#x} at {at}");
            }
        }
    }

    proptest! {
        #[test]
        fn plain_is_the_table(bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
            let want = bytes.iter().all(|&b| PLAIN_DEBUG[usize::from(b)]);
            prop_assert_eq!(plain(&bytes), want);
        }

        /// Any path and header text (they come from the wire through `from_utf8_lossy`), any
        /// numbers: the same bytes as tracing's, and the JSON line parses to the same values.
        #[test]
        fn matches_tracing_for_any_fields(
            text in any::<String>(),
            ascii in "[\\x00-\\x7f]{0,40}",
            status in any::<u16>(),
            bytes in any::<u64>(),
            upstream_us in proptest::option::of(0u64..10_000_000_000),
            duration_us in 0u64..10_000_000_000,
        ) {
            let mut line = sample(&text, upstream_us, duration_us);
            line.host = &ascii;
            line.referer = &ascii;
            line.status = status;
            line.bytes = bytes;
            for format in [LogFormat::Text, LogFormat::Json] {
                same_but_time(&line, format);
            }
            // As the capture marks them: plain when all five are.
            let fields = [line.path, line.host, line.user_agent, line.referer, line.request_id];
            line.plain = fields.iter().all(|f| plain(f.as_bytes()));
            for format in [LogFormat::Text, LogFormat::Json] {
                same_but_time(&line, format);
            }
            let json = by_hand(&line, LogFormat::Json);
            let doc: serde_json::Value = serde_json::from_str(&json).unwrap();
            prop_assert_eq!(doc["path"].as_str(), Some(text.as_str()));
            prop_assert_eq!(doc["host"].as_str(), Some(ascii.as_str()));
            prop_assert_eq!(doc["bytes"].as_u64(), Some(bytes));
        }
    }
}
