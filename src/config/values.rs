//! The values inside the file that are more than a type: server addresses, networks, listen
//! addresses, status ranges, pool names, and the rules between them. Each returns the reason a
//! value is wrong; the caller adds the file, position and key.

use std::net::SocketAddr;
use std::time::Duration;

use http::uri::Authority;
use ipnet::IpNet;

/// `"200"` or `"200-399"`.
pub(super) fn parse_status_range(s: &str) -> Result<std::ops::RangeInclusive<u16>, String> {
    let bad = || format!("{s:?} is not a status or range like \"200-399\"");
    let (lo, hi) = s.split_once('-').unwrap_or((s, s));
    let lo: u16 = lo.trim().parse().map_err(|_| bad())?;
    let hi: u16 = hi.trim().parse().map_err(|_| bad())?;
    if !(100..=599).contains(&lo) || !(100..=599).contains(&hi) || lo > hi {
        return Err(bad());
    }
    Ok(lo..=hi)
}

/// Pool names are URL path segments (`/blue/...`), so they are limited to unreserved characters.
pub(super) fn check_pool_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "pool name {name:?} must be a URL path segment: letters, digits, '-', '_', '.', '~'"
        ))
    }
}

/// `host:port`, where host is a DNS name or an IP literal (`[::1]` for IPv6). Names are resolved
/// later by the proxy, so one that does not resolve yet is fine here.
pub(super) fn parse_server(s: &str) -> Result<Authority, String> {
    let hint = "expected host:port, like \"server1-blue:8080\"";
    if s.contains("://") || s.contains('/') || s.contains('@') {
        return Err(format!("{s:?}: {hint} (no scheme, path or user)"));
    }
    // `Authority` takes a port over 65535 for no port at all; say what is wrong instead.
    if let Some((_, port)) = s.rsplit_once(':') {
        if !port.is_empty()
            && port.bytes().all(|b| b.is_ascii_digit())
            && port.parse::<u16>().is_err()
        {
            return Err(format!("{s:?}: port {port} is out of range (1-65535)"));
        }
    }
    let auth: Authority = s.parse().map_err(|_| format!("{s:?}: {hint}"))?;
    match auth.port_u16() {
        None => Err(format!("{s:?} has no port; {hint}")),
        Some(0) => Err(format!("{s:?}: port 0 is not a server port")),
        Some(_) if auth.host().is_empty() => Err(format!("{s:?} has no host; {hint}")),
        Some(_) => Ok(auth),
    }
}

/// An IP (`192.168.0.10`) or a CIDR network (`10.1.0.0/16`). A network with host bits set
/// (`10.0.0.1/8`) is refused, naming the network it probably meant.
pub(super) fn parse_net(s: &str) -> Result<IpNet, String> {
    let s = s.trim();
    if let Ok(net) = s.parse::<IpNet>() {
        if net.trunc() != net {
            return Err(format!(
                "{s:?} has host bits set; did you mean \"{}\"?",
                net.trunc()
            ));
        }
        return Ok(net);
    }
    match s.parse::<std::net::IpAddr>() {
        Ok(ip) => Ok(IpNet::from(ip)),
        Err(_) => Err(format!(
            "{s:?} is not an IP address or CIDR network (like \"10.1.0.0/16\")"
        )),
    }
}

pub(super) fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    s.parse()
        .map_err(|_| format!("{s:?} is not an IP:port address (like \"0.0.0.0:80\")"))
}

pub(super) fn at_least(v: usize, min: usize) -> Result<usize, String> {
    if v < min {
        Err(format!("must be at least {min}"))
    } else {
        Ok(v)
    }
}

pub(super) fn nonzero(d: Duration) -> Result<Duration, String> {
    if d.is_zero() {
        Err("must be longer than zero".into())
    } else {
        Ok(d)
    }
}

/// Whether listeners on `a` and `b` would want the same socket: the same port (not 0, which picks
/// a free one) and the same IP, or an unspecified IP covering the other (`0.0.0.0` every IPv4
/// address, `[::]` every address of both families, as Linux binds it dual-stack).
pub(super) fn listeners_clash(a: SocketAddr, b: SocketAddr) -> bool {
    let covers = |x: SocketAddr, y: SocketAddr| {
        x.ip() == y.ip() || (x.ip().is_unspecified() && (x.is_ipv6() || x.is_ipv4() == y.is_ipv4()))
    };
    a.port() != 0 && a.port() == b.port() && (covers(a, b) || covers(b, a))
}
