//! The `[mirror]` table: a copy of default-route requests sent to another pool, its answers
//! compared with the live ones and thrown away.

use std::collections::BTreeMap;

use serde::Serialize;

use super::raw::RawMirror;
use super::{Ctx, PoolConfig, Result};

/// `[mirror]`: copies of `percent` of default-route requests whose method is in `methods` and
/// whose body is at most `max_body` bytes go to `pool`, at most `max_in_flight` at once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct MirrorConfig {
    /// The pool the copies go to. The file may name the active pool (a switch to the mirror pool
    /// leaves the table in place): mirroring then rests until another pool is active again.
    pub pool: String,
    /// 0-100: the share of eligible requests copied.
    pub percent: u8,
    /// Methods copied, upper case as sent (tokens, RFC 9110 §9.1).
    pub methods: Vec<String>,
    /// Requests with larger bodies (or a body of unknown length that grows past it) are not
    /// copied. Written back as a plain number of bytes.
    pub max_body: u64,
    /// Copies under way at once, process-wide; past it a copy is dropped and counted.
    pub max_in_flight: u32,
}

impl MirrorConfig {
    /// `[mirror]` for `pool` with every other key at its default.
    pub fn new(pool: &str) -> MirrorConfig {
        MirrorConfig {
            pool: pool.to_string(),
            percent: 100,
            methods: default_methods(),
            max_body: DEFAULT_MAX_BODY,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
        }
    }
}

/// 64 KiB.
pub const DEFAULT_MAX_BODY: u64 = 64 * 1024;
/// Copies under way at once by default.
pub const DEFAULT_MAX_IN_FLIGHT: u32 = 100;

/// `["GET", "HEAD"]`.
pub fn default_methods() -> Vec<String> {
    vec!["GET".into(), "HEAD".into()]
}

/// A size: a whole number of bytes, or a number with a unit `B`, `KB`/`KiB`, `MB`/`MiB`, `GB`/
/// `GiB` (powers of 1024 either way, as nginx reads `k` and `m`).
pub fn parse_size(text: &str) -> std::result::Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a size (a number of bytes, or like \"64KiB\")"))?;
    let scale: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        other => return Err(format!("{other:?} is not a size unit (B, KiB, MiB, GiB)")),
    };
    n.checked_mul(scale)
        .and_then(|n| check_size(n).ok())
        .ok_or_else(|| format!("{text:?} is too large (at most {MAX_SIZE} bytes)"))
}

/// The largest size: what a TOML integer holds, so that teal can write it back into the file.
pub const MAX_SIZE: u64 = i64::MAX as u64;

/// `n` bytes, if at most [`MAX_SIZE`].
pub fn check_size(n: u64) -> std::result::Result<u64, String> {
    if n > MAX_SIZE {
        return Err(format!("{n} is too large (at most {MAX_SIZE} bytes)"));
    }
    Ok(n)
}

/// Whether `m` is a method token (RFC 9110 §9.1: a `token`), upper case as methods are sent.
pub fn method_token(m: &str) -> std::result::Result<String, String> {
    let ok = !m.is_empty()
        && m.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if !ok {
        return Err(format!("{m:?} is not an HTTP method"));
    }
    Ok(m.to_ascii_uppercase())
}

/// Validates `[mirror]`: the pool exists; percent is 0-100; methods are tokens; `max_body` is a
/// size; `max_in_flight` is at least 1.
pub(super) fn mirror_config(
    raw: RawMirror,
    pools: &BTreeMap<String, PoolConfig>,
    ctx: &Ctx<'_>,
) -> Result<MirrorConfig> {
    super::known_pool(&raw.pool, pools, "mirror.pool", ctx)?;
    let percent = u8::try_from(raw.percent)
        .ok()
        .filter(|p| *p <= 100)
        .ok_or_else(|| {
            ctx.error(
                "mirror.percent",
                format!("{} is not a percentage from 0 to 100", raw.percent),
            )
        })?;
    let methods = match raw.methods {
        None => default_methods(),
        Some(list) => list
            .iter()
            .map(|m| method_token(m))
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| ctx.error("mirror.methods", e))?,
    };
    let max_body = match raw.max_body {
        None => DEFAULT_MAX_BODY,
        Some(super::raw::RawSize::Bytes(n)) => u64::try_from(n)
            .map_err(|_| ctx.error("mirror.max_body", format!("{n} is not a size")))?,
        Some(super::raw::RawSize::Text(t)) => {
            parse_size(&t).map_err(|e| ctx.error("mirror.max_body", e))?
        }
    };
    let max_in_flight = u32::try_from(raw.max_in_flight)
        .ok()
        .filter(|n| *n >= 1)
        .ok_or_else(|| {
            ctx.error(
                "mirror.max_in_flight",
                format!("{} is not a count of at least 1", raw.max_in_flight),
            )
        })?;
    Ok(MirrorConfig {
        pool: raw.pool,
        percent,
        methods,
        max_body,
        max_in_flight,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use std::path::Path;

    const POOLS: &str = "active = \"blue\"\n[pools.blue]\nservers = [\"b:1\"]\n[pools.green]\nservers = [\"g:1\"]\n";

    fn parse(mirror: &str) -> std::result::Result<Config, String> {
        Config::parse(
            &format!("{POOLS}[mirror]\n{mirror}"),
            Some(Path::new("t.toml")),
        )
        .map_err(|e| e.to_string())
    }

    /// Defaults, sizes, methods; bad values name line, column and key.
    #[test]
    fn mirror_table() {
        let m = parse("pool = \"green\"\n").unwrap().mirror.unwrap();
        assert_eq!(m, MirrorConfig::new("green"));
        let m = parse("pool = \"green\"\npercent = 5\nmethods = [\"get\", \"POST\"]\nmax_body = \"1MiB\"\nmax_in_flight = 3\n")
            .unwrap()
            .mirror
            .unwrap();
        assert_eq!(
            (m.percent, m.methods, m.max_body, m.max_in_flight),
            (5, vec!["GET".into(), "POST".into()], 1 << 20, 3)
        );
        let m = parse("pool = \"green\"\nmax_body = 10\n")
            .unwrap()
            .mirror
            .unwrap();
        assert_eq!(m.max_body, 10);
        // The active pool is accepted in the file: a switch to the mirror pool leaves it there.
        assert!(parse("pool = \"blue\"\n").is_ok());
        let e = parse("pool = \"red\"\n").unwrap_err();
        assert!(
            e.starts_with("t.toml:7:1: mirror.pool: no pool named \"red\""),
            "{e}"
        );
        let e = parse("pool = \"green\"\npercent = 101\n").unwrap_err();
        assert!(
            e.starts_with("t.toml:8:1: mirror.percent: 101 is not"),
            "{e}"
        );
        let e = parse("pool = \"green\"\nmethods = [\"GE T\"]\n").unwrap_err();
        assert!(
            e.starts_with("t.toml:8:") && e.contains("mirror.methods"),
            "{e}"
        );
        let e = parse("pool = \"green\"\nmax_body = \"64 parsecs\"\n").unwrap_err();
        assert!(
            e.starts_with("t.toml:8:") && e.contains("mirror.max_body"),
            "{e}"
        );
        let e = parse("pool = \"green\"\nmax_body = -1\n").unwrap_err();
        assert!(e.contains("mirror.max_body"), "{e}");
        let e = parse("pool = \"green\"\nmax_in_flight = 0\n").unwrap_err();
        assert!(e.starts_with("t.toml:8:1: mirror.max_in_flight"), "{e}");
        let e = parse("pool = \"green\"\nshadow = true\n").unwrap_err();
        assert!(e.contains("shadow"), "{e}");
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("64KiB"), Ok(65536));
        assert_eq!(parse_size("64k"), Ok(65536));
        assert_eq!(parse_size("2 MB"), Ok(2 << 20));
        assert_eq!(parse_size("100"), Ok(100));
        assert!(parse_size("KiB").is_err());
        assert!(parse_size("1TiB").is_err());
        assert!(parse_size("99999999999999999999GiB").is_err());
    }
}
