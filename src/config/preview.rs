//! The `[preview]` table: who may use the `/<pool>/...` routes, and the optional cookie and
//! header that let those clients browse a pool at its real paths.

use http::HeaderName;

use super::raw::RawPreview;
use super::{nets, Ctx, PreviewConfig, Result};
use crate::headers::Field;

/// Validates `[preview]`: `allow` as networks, `cookie` as a cookie name, `header` as a field
/// name teal does not handle itself.
pub(super) fn preview_config(raw: RawPreview, ctx: &Ctx<'_>) -> Result<PreviewConfig> {
    let allow = raw
        .allow
        .as_deref()
        .map(|l| nets(l, "preview.allow", ctx))
        .transpose()?;
    let cookie = raw
        .cookie
        .map(|name| cookie_name(&name).map(|()| name))
        .transpose()
        .map_err(|r| ctx.error("preview.cookie", r))?;
    let header = raw
        .header
        .map(|name| header_name(&name))
        .transpose()
        .map_err(|r| ctx.error("preview.header", r))?;
    Ok(PreviewConfig {
        allow,
        cookie,
        header,
    })
}

/// A cookie name is an RFC 9110 token (RFC 6265 §4.1.1), and not the canary's own cookie.
fn cookie_name(name: &str) -> std::result::Result<(), String> {
    if !is_token(name) {
        return Err(format!(
            "{name:?} is not a cookie name: letters, digits and !#$%&'*+-.^_`|~ only"
        ));
    }
    if name == crate::canary::BUCKET_COOKIE {
        return Err(format!(
            "{name:?} is the canary's bucket cookie; pick another name"
        ));
    }
    Ok(())
}

/// A header field name (an RFC 9110 token) that is none of those teal reads or sets itself
/// (`Host`, `Cookie`, hop-by-hop fields, `X-Forwarded-*`, `X-Request-Id`, ...).
fn header_name(name: &str) -> std::result::Result<HeaderName, String> {
    if !is_token(name) {
        return Err(format!(
            "{name:?} is not a header field name: letters, digits and !#$%&'*+-.^_`|~ only"
        ));
    }
    if Field::of(name.as_bytes()) != Field::Other {
        return Err(format!(
            "{name:?} is a field teal handles itself; pick another name, like X-Teal-Pool"
        ));
    }
    HeaderName::from_bytes(name.as_bytes()).map_err(|e| format!("{name:?}: {e}"))
}

/// RFC 9110 §5.6.2: `token = 1*tchar`.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use std::path::Path;

    const POOLS: &str = "active = \"blue\"\n[pools.blue]\nservers = [\"b:1\"]\n[pools.green]\nservers = [\"g:1\"]\n";

    fn parse(preview: &str) -> Result<Config, String> {
        Config::parse(
            &format!("{POOLS}[preview]\n{preview}"),
            Some(Path::new("t.toml")),
        )
        .map_err(|e| e.to_string())
    }

    /// Valid names parse (the header lower-cased); bad ones name file, line and key.
    #[test]
    fn preview_names() {
        let c = parse("cookie = \"teal_preview\"\nheader = \"X-Teal-Pool\"\n").unwrap();
        assert_eq!(c.preview.cookie.as_deref(), Some("teal_preview"));
        assert_eq!(c.preview.header.unwrap().as_str(), "x-teal-pool");
        let none = parse("allow = [\"10.0.0.0/8\"]\n").unwrap();
        assert_eq!((none.preview.cookie, none.preview.header), (None, None));
        for (line, key, reason) in [
            ("cookie = \"a b\"", "preview.cookie", "not a cookie name"),
            ("cookie = \"\"", "preview.cookie", "not a cookie name"),
            ("cookie = \"a;b\"", "preview.cookie", "not a cookie name"),
            (
                "cookie = \"teal_bucket\"",
                "preview.cookie",
                "bucket cookie",
            ),
            (
                "header = \"X Teal\"",
                "preview.header",
                "not a header field name",
            ),
            (
                "header = \"X-Teal:\"",
                "preview.header",
                "not a header field name",
            ),
            (
                "header = \"Cookie\"",
                "preview.header",
                "teal handles itself",
            ),
            ("header = \"host\"", "preview.header", "teal handles itself"),
            (
                "header = \"X-Forwarded-For\"",
                "preview.header",
                "teal handles itself",
            ),
        ] {
            let e = parse(&format!("{line}\n")).unwrap_err();
            assert!(
                e.starts_with(&format!("t.toml:7:1: {key}:")) && e.contains(reason),
                "{line}: {e}"
            );
        }
    }
}
