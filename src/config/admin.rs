//! The `[admin]` table: listener, token, `allow` and `hosts`, and [`AdminHost`], the host names
//! the admin API answers to (also used to read a request's `Host`).

use std::net::{IpAddr, Ipv6Addr};

use super::raw::RawAdmin;
use super::{parse_listen, parse_net, relative_to, AdminConfig, Ctx, Result, Secret};

/// A host the admin API may be addressed as: an entry of `admin.hosts`, or a request's `Host`.
/// The name is lower-cased, without a trailing dot; IPv6 literals keep their brackets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminHost {
    /// A DNS name, an IPv4 literal or a bracketed IPv6 literal.
    pub host: String,
    /// The port, when one was given.
    pub port: Option<u16>,
}

impl AdminHost {
    /// Parses `name` or `name:port` (`[::1]:9900` for IPv6): no scheme, user, path or query.
    pub fn parse(text: &str) -> std::result::Result<AdminHost, String> {
        let hint = "expected a host name or host:port, like \"teal-admin.internal\" or \
                    \"teal-admin.internal:9900\"";
        if text.contains("://") {
            return Err(format!("{text:?} has a scheme; {hint}"));
        }
        if text.contains(['/', '?', '#', '@']) || text.contains(char::is_whitespace) {
            return Err(format!("{text:?}: {hint} (no path, query or user)"));
        }
        let (host, port) = if let Some(rest) = text.strip_prefix('[') {
            let (ip, after) = rest
                .split_once(']')
                .ok_or_else(|| format!("{text:?}: unclosed '['"))?;
            ip.parse::<Ipv6Addr>()
                .map_err(|_| format!("{text:?}: {ip:?} is not an IPv6 address"))?;
            match after {
                "" => (format!("[{ip}]"), None),
                _ => match after.strip_prefix(':') {
                    Some(port) => (format!("[{ip}]"), Some(port)),
                    None => return Err(format!("{text:?}: {hint}")),
                },
            }
        } else {
            let (name, port) = match text.split_once(':') {
                Some((name, port)) => (name, Some(port)),
                None => (text, None),
            };
            if port.is_some_and(|p| p.contains(':')) {
                return Err(format!(
                    "{text:?}: write an IPv6 address in brackets, like [::1]"
                ));
            }
            let name = name.strip_suffix('.').unwrap_or(name);
            let label_ok = |l: &str| {
                !l.is_empty()
                    && l.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            };
            if !name.split('.').all(label_ok) {
                return Err(format!("{text:?}: {hint}"));
            }
            (name.to_ascii_lowercase(), port)
        };
        let port = match port {
            None => None,
            Some(p) => match p.parse::<u16>() {
                Ok(n) if n > 0 && p.bytes().all(|b| b.is_ascii_digit()) => Some(n),
                _ => return Err(format!("{text:?}: {p:?} is not a port (1-65535)")),
            },
        };
        Ok(AdminHost { host, port })
    }

    /// The address, when the host is an IP literal.
    pub fn ip(&self) -> Option<IpAddr> {
        let bare = self.host.trim_start_matches('[').trim_end_matches(']');
        bare.parse().ok()
    }

    /// Whether this `admin.hosts` entry accepts `host`: the same name, and the same port when
    /// this entry names one (a request without a port is on port 80).
    pub fn accepts(&self, host: &AdminHost) -> bool {
        self.host == host.host && self.port.map_or(true, |p| p == host.port.unwrap_or(80))
    }
}

/// Validates the `[admin]` table. The admin API can redirect all traffic, so it is never open to
/// the network by accident: off loopback it needs a token unless that is explicitly waived.
pub(super) fn admin_config(raw: RawAdmin, ctx: &Ctx<'_>) -> Result<AdminConfig> {
    let token = match (&raw.token, &raw.token_file) {
        (Some(_), Some(_)) => {
            return Err(ctx.error(
                "admin.token_file",
                "set either token or token_file, not both",
            ))
        }
        (Some(t), None) if t.trim().is_empty() => {
            return Err(ctx.error(
                "admin.token",
                "the token is empty; remove the key to run without one",
            ))
        }
        (Some(t), None) => Some(Secret(t.clone())),
        _ => None,
    };
    let allow = raw
        .allow
        .map(|list| {
            list.iter()
                .enumerate()
                .map(|(i, s)| parse_net(s).map_err(|r| ctx.error(&format!("admin.allow[{i}]"), r)))
                .collect::<Result<Vec<_>>>()
        })
        .transpose()?;
    let hosts = raw
        .hosts
        .iter()
        .enumerate()
        .map(|(i, s)| AdminHost::parse(s).map_err(|r| ctx.error(&format!("admin.hosts[{i}]"), r)))
        .collect::<Result<Vec<_>>>()?;
    let admin = AdminConfig {
        listen: parse_listen(&raw.listen).map_err(|r| ctx.error("admin.listen", r))?,
        token,
        token_file: raw.token_file.map(|f| relative_to(ctx.path, f)),
        allow,
        hosts,
    };
    if !admin.listen.ip().is_loopback()
        && admin.token.is_none()
        && admin.token_file.is_none()
        && !raw.insecure_no_token
    {
        return Err(ctx.error(
            "admin.listen",
            format!(
                "{} is not a loopback address and no token is set; set admin.token or \
                 admin.token_file (or insecure_no_token = true if you really mean it)",
                admin.listen
            ),
        ));
    }
    Ok(admin)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(text: &str) -> AdminHost {
        AdminHost::parse(text).unwrap()
    }

    /// Names and IP literals, with or without a port, parse; names are lower-cased.
    #[test]
    fn admin_hosts_parse() {
        assert_eq!(
            host("Teal-Admin.internal."),
            AdminHost {
                host: "teal-admin.internal".into(),
                port: None
            }
        );
        assert_eq!(host("teal:9900").port, Some(9900));
        assert_eq!(host("[::1]:9900").host, "[::1]");
        assert_eq!(host("[::1]").ip(), Some("::1".parse().unwrap()));
        assert_eq!(host("127.0.0.1:1").ip(), Some("127.0.0.1".parse().unwrap()));
        assert_eq!(host("localhost").ip(), None);
        for bad in [
            "http://teal",
            "teal/metrics",
            "user@teal",
            "",
            "teal:",
            "teal:0",
            "teal:99999",
            "teal:+1",
            "::1",
            "[::1",
            "[nope]:1",
            "te al",
            "a..b",
            "[::1]x",
        ] {
            assert!(AdminHost::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    /// `teal check` names the file, line and entry of a bad `admin.hosts` entry.
    #[test]
    fn admin_hosts_errors_name_the_entry() {
        let text = "active = \"blue\"\n[admin]\nhosts = [\"teal\",\n  \"http://teal:9900/\"]\n\
                    [pools.blue]\nservers = [\"b:1\"]\n";
        let e = super::super::Config::parse(text, Some(std::path::Path::new("teal.toml")))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("teal.toml:4:3: admin.hosts[1]: "), "{e}");
        assert!(e.contains("has a scheme"), "{e}");
        let ok = text.replace("http://teal:9900/", "[::1]:9900");
        let c = super::super::Config::parse(&ok, None).unwrap();
        assert_eq!(c.admin.hosts.len(), 2);
    }

    /// An entry with a port accepts only that port (a Host without one is on 80); without a
    /// port, any.
    #[test]
    fn admin_hosts_accept() {
        assert!(host("teal").accepts(&host("TEAL:1234")));
        assert!(host("teal:9900").accepts(&host("teal:9900")));
        assert!(!host("teal:9900").accepts(&host("teal:9901")));
        assert!(!host("teal:9900").accepts(&host("teal")));
        assert!(host("teal:80").accepts(&host("teal")));
        assert!(!host("teal").accepts(&host("teal.evil.test")));
    }
}
