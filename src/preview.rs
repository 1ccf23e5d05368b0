//! Keeping a preview route's responses under its prefix. Pure, no I/O.
//!
//! A request for `/green/sub` reaches pool green as `/sub` (see the `route` module), and the
//! upstream answers as if it were at the root: `Location: /sub/` would send the browser back to
//! the live pool, and `Set-Cookie: s=1; Path=/app` would set a cookie the preview never gets back.
//! So on preview routes only, as nginx's `proxy_redirect` and `proxy_cookie_path` do for a
//! `location /green/ { proxy_pass http://green/; }`, a response's
//!
//! - `Location` and `Content-Location` (RFC 9110 §10.2.2, §8.7) that are an absolute path
//!   (`/sub/` -> `/green/sub/`, `/` -> `/green/`) or an `http`/`https` URL whose authority is the
//!   host the client addressed, compared case-insensitively (`http://shop.test/x` ->
//!   `http://shop.test/green/x`), get the prefix back. A relative reference without a leading
//!   slash (`next`, `../x`) already resolves under the prefix (RFC 3986 §5.2), and a
//!   network-path reference (`//other/x`) or another host's URL is not the upstream's tree: those
//!   stay as they are.
//! - `Set-Cookie` `Path` attributes (RFC 6265 §5.2.4; the name case-insensitive) get the prefix:
//!   `Path=/app` -> `Path=/green/app`, and `Path=/` -> `Path=/green`, which path-matches `/green`
//!   itself and everything under `/green/` (RFC 6265 §5.1.4), where `/green/` would miss the bare
//!   `/green`. A cookie without a `Path` gets none: the browser's default is the request path's
//!   directory, already under the prefix. A `Path` that does not start with `/` is ignored by
//!   browsers, and left alone here.
//!
//! The default route's responses are never touched.

use bytes::Bytes;
use http::{HeaderMap, HeaderValue};

/// The preview route a request came by: what its response needs rewritten.
#[derive(Debug, Clone)]
pub struct Preview {
    /// `/<pool>`.
    prefix: Box<[u8]>,
    /// The host the client addressed (`Host`, or the request target's authority); `None` when it
    /// sent none, and then no absolute URL is its own.
    host: Option<Box<[u8]>>,
}

impl Preview {
    /// The preview of `pool` for a client that addressed `host`.
    pub fn new(pool: &str, host: Option<&[u8]>) -> Preview {
        let mut prefix = Vec::with_capacity(pool.len() + 1);
        prefix.push(b'/');
        prefix.extend_from_slice(pool.as_bytes());
        Preview {
            prefix: prefix.into(),
            host: host.map(Into::into),
        }
    }

    /// The new value of the response field `name: value`, or `None` if it stays as it is. Only
    /// `Location`, `Content-Location` and `Set-Cookie` are looked at, told apart by length first.
    pub fn rewrite(&self, name: &[u8], value: &[u8]) -> Option<Vec<u8>> {
        let is = |known: &[u8]| name.eq_ignore_ascii_case(known);
        match name.len() {
            8 if is(b"location") => self.location(value),
            16 if is(b"content-location") => self.location(value),
            10 if is(b"set-cookie") => self.cookie_path(value),
            _ => None,
        }
    }

    /// [`Preview::rewrite`] for every field of `headers`.
    pub fn rewrite_headers(&self, headers: &mut HeaderMap) {
        for (name, value) in headers.iter_mut() {
            if let Some(new) = self.rewrite(name.as_str().as_bytes(), value.as_bytes()) {
                // The old value with a path segment inserted: still a valid value.
                if let Ok(new) = HeaderValue::from_maybe_shared(Bytes::from(new)) {
                    *value = new;
                }
            }
        }
    }

    /// A `Location` or `Content-Location` value with the prefix put back, or `None` (see the
    /// module doc).
    pub fn location(&self, value: &[u8]) -> Option<Vec<u8>> {
        if value.starts_with(b"//") {
            return None;
        }
        if value.starts_with(b"/") {
            return Some([&self.prefix[..], value].concat());
        }
        let colon = value.iter().position(|&b| b == b':')?;
        let scheme = &value[..colon];
        if !scheme.eq_ignore_ascii_case(b"http") && !scheme.eq_ignore_ascii_case(b"https") {
            return None;
        }
        let rest = value[colon + 1..].strip_prefix(b"//")?;
        let end = rest
            .iter()
            .position(|&b| matches!(b, b'/' | b'?' | b'#'))
            .unwrap_or(rest.len());
        if !self
            .host
            .as_deref()
            .is_some_and(|host| rest[..end].eq_ignore_ascii_case(host))
        {
            return None;
        }
        // Where the path starts; an empty path is `/` (RFC 9110 §4.2.3).
        let at = colon + 3 + end;
        let slash: &[u8] = if value[at..].starts_with(b"/") {
            b""
        } else {
            b"/"
        };
        Some([&value[..at], &self.prefix, slash, &value[at..]].concat())
    }

    /// A `Set-Cookie` value with the prefix put in front of each `Path` attribute that starts
    /// with `/`, or `None` if it has none (see the module doc). The cookie's name and value, and
    /// every other byte, stay as sent.
    pub fn cookie_path(&self, value: &[u8]) -> Option<Vec<u8>> {
        let mut out: Option<Vec<u8>> = None;
        // Bytes of `value` already copied to `out`.
        let mut copied = 0;
        // The attributes follow the first ';' (RFC 6265 §5.2).
        let mut at = value.iter().position(|&b| b == b';')?;
        while at < value.len() {
            let start = at + 1;
            let end = value[start..]
                .iter()
                .position(|&b| b == b';')
                .map_or(value.len(), |i| start + i);
            let attribute = &value[start..end];
            at = end;
            let Some(eq) = attribute.iter().position(|&b| b == b'=') else {
                continue;
            };
            if !attribute[..eq].trim_ascii().eq_ignore_ascii_case(b"path") {
                continue;
            }
            let raw = &attribute[eq + 1..];
            let path = raw.trim_ascii();
            if !path.starts_with(b"/") {
                continue;
            }
            let from = start + eq + 1 + (raw.len() - raw.trim_ascii_start().len());
            let out = out.get_or_insert_with(|| Vec::with_capacity(value.len() + 16));
            out.extend_from_slice(&value[copied..from]);
            out.extend_from_slice(&self.prefix);
            if path != b"/" {
                out.extend_from_slice(path);
            }
            copied = from + path.len();
        }
        let mut out = out?;
        out.extend_from_slice(&value[copied..]);
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn green() -> Preview {
        Preview::new("green", Some(b"shop.test"))
    }

    fn text(v: Option<Vec<u8>>) -> Option<String> {
        v.map(|v| String::from_utf8(v).unwrap())
    }

    /// Absolute paths and same-host URLs get the prefix; everything else stays.
    #[test]
    fn locations() {
        let cases: &[(&str, Option<&str>)] = &[
            ("/sub/", Some("/green/sub/")),
            ("/", Some("/green/")),
            ("/?a=1#f", Some("/green/?a=1#f")),
            ("/green/x", Some("/green/green/x")),
            ("http://shop.test/sub", Some("http://shop.test/green/sub")),
            ("HTTPS://SHOP.test/a?b", Some("HTTPS://SHOP.test/green/a?b")),
            ("http://shop.test", Some("http://shop.test/green/")),
            ("http://shop.test?q", Some("http://shop.test/green/?q")),
            ("http://shop.test#f", Some("http://shop.test/green/#f")),
            ("http://shop.test:8080/x", None),
            ("http://shop.test.evil/x", None),
            ("http://user@shop.test/x", None),
            ("http://other.test/x", None),
            ("ftp://shop.test/x", None),
            ("http:/x", None),
            ("//other/x", None),
            ("//shop.test/x", None),
            ("next", None),
            ("../x", None),
            ("?q=1", None),
            ("#top", None),
            ("", None),
        ];
        for (value, want) in cases {
            assert_eq!(
                text(green().location(value.as_bytes())).as_deref(),
                *want,
                "{value}"
            );
        }
        // No Host: only paths.
        let p = Preview::new("blue", None);
        assert_eq!(text(p.location(b"/x")).as_deref(), Some("/blue/x"));
        assert_eq!(p.location(b"http://shop.test/x"), None);
    }

    /// `Path` attributes that start with `/` get the prefix, `/` itself becoming `/green`; the
    /// rest of the value stays byte for byte.
    #[test]
    fn cookie_paths() {
        let cases: &[(&str, Option<&str>)] = &[
            (
                "s=1; Path=/app; HttpOnly",
                Some("s=1; Path=/green/app; HttpOnly"),
            ),
            ("t=2; path=/", Some("t=2; path=/green")),
            ("t=2;PATH=/a/b;Secure", Some("t=2;PATH=/green/a/b;Secure")),
            (
                "t=2; Path = /a ; Max-Age=1",
                Some("t=2; Path = /green/a ; Max-Age=1"),
            ),
            (
                "t=2; Path=/a; Path=/",
                Some("t=2; Path=/green/a; Path=/green"),
            ),
            ("path=/x", None),
            ("u=3", None),
            ("u=3; HttpOnly", None),
            ("u=3; Path=", None),
            ("u=3; Path=x/y", None),
            ("u=3; Pathx=/y", None),
            ("u=3; Domain=shop.test", None),
            ("u=3;", None),
        ];
        for (value, want) in cases {
            assert_eq!(
                text(green().cookie_path(value.as_bytes())).as_deref(),
                *want,
                "{value}"
            );
        }
    }

    /// Only the three fields are looked at, by name case-insensitively, in a map too.
    #[test]
    fn fields() {
        let p = green();
        assert!(p.rewrite(b"Location", b"/x").is_some());
        assert!(p.rewrite(b"content-location", b"/x").is_some());
        assert!(p.rewrite(b"SET-COOKIE", b"a=1; Path=/").is_some());
        assert!(p.rewrite(b"Refresh", b"0; url=/x").is_none());
        assert!(p.rewrite(b"x-location", b"/x").is_none());
        let mut h = HeaderMap::new();
        h.append("location", HeaderValue::from_static("/x"));
        h.append("set-cookie", HeaderValue::from_static("a=1; Path=/"));
        h.append("set-cookie", HeaderValue::from_static("b=2"));
        h.append("link", HeaderValue::from_static("</x>"));
        p.rewrite_headers(&mut h);
        assert_eq!(h["location"], "/green/x");
        let cookies: Vec<_> = h.get_all("set-cookie").iter().collect();
        assert_eq!(cookies, ["a=1; Path=/green", "b=2"]);
        assert_eq!(h["link"], "</x>");
    }
}
