//! Name resolution that follows recreated containers.
//!
//! nginx resolves `server1-green` once at startup and keeps the old IP after
//! `docker compose up --force-recreate`. teal resolves every server hostname again every
//! `proxy.resolve_interval` (and soon after any connect failure), stores the answers on each
//! server, and records them in its health: a name that does not resolve makes its server
//! `unresolved` (counted as down) instead of stopping teal.
//!
//! The proxy sends each request to one resolved `IP:port` (the `Host` header keeps the name), so
//! the upstream client pools connections per address: when a name moves, new requests open
//! connections to the new address at once, and connections to the old one simply idle out.
//!
//! Names are looked up in `proxy.hosts_file` first (hosts(5) format, re-read on every round; also
//! the seam the tests use to move a name from one address to another), then with the system
//! resolver. A name with several addresses uses all of them: each request starts at the next
//! address, and a connect failure moves on to the following one.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;
use tracing::debug;

use crate::pool::{Target, Upstream};
use crate::state::State;

/// Resolution for the servers of the live snapshot.
pub struct Resolver {
    state: Arc<State>,
    refresh: mpsc::UnboundedSender<()>,
    wake: Mutex<Option<mpsc::UnboundedReceiver<()>>>,
}

impl Resolver {
    /// A resolver for the servers of `state`'s snapshots. Start its refresh loop with
    /// [`Resolver::spawn`].
    pub fn new(state: Arc<State>) -> Arc<Resolver> {
        let (refresh, wake) = mpsc::unbounded_channel();
        Arc::new(Resolver {
            state,
            refresh,
            wake: Mutex::new(Some(wake)),
        })
    }

    /// Asks for a resolution round now (after a connect failure: the name may have moved).
    pub fn refresh_soon(&self) {
        let _ = self.refresh.send(());
    }

    /// Looks `host` up: the hosts file first, then the system resolver.
    pub async fn lookup(&self, host: &str) -> Result<Vec<IpAddr>, String> {
        let hosts_file = self.state.load().config.proxy.hosts_file.clone();
        if let Some(file) = hosts_file {
            let found = tokio::task::spawn_blocking(move || read_hosts(&file))
                .await
                .map_err(|e| e.to_string())?;
            if let Some(addrs) = found.get(&host.to_ascii_lowercase()) {
                return Ok(addrs.clone());
            }
        }
        let addrs: Vec<IpAddr> = tokio::net::lookup_host((host, 0))
            .await
            .map_err(|e| format!("cannot resolve {host}: {e}"))?
            .map(|a| a.ip())
            .collect();
        if addrs.is_empty() {
            return Err(format!("{host} has no addresses"));
        }
        Ok(dedup(addrs))
    }

    /// The addresses of `server`: the last resolution, or a lookup now if there is none yet
    /// (a server added by a reload, or the first request before the first round finished).
    pub async fn addresses_of(&self, server: &Upstream) -> Result<Arc<Vec<Target>>, String> {
        let known = server.addrs();
        if !known.is_empty() {
            return Ok(known);
        }
        // Boxed: the lookup is rare, and its future would otherwise make every request's larger.
        let result = Box::pin(self.lookup(server.host())).await;
        server.health.resolved(&result, &[]);
        server.set_ips(&result?);
        Ok(server.addrs())
    }

    /// Runs the refresh loop: every `resolve_interval`, on a new snapshot, or soon after a
    /// connect failure, resolves every server name and records the result in its health.
    pub fn spawn(self: &Arc<Self>) {
        let this = self.clone();
        let Some(mut wake) = self.wake.lock().unwrap_or_else(|e| e.into_inner()).take() else {
            return;
        };
        let mut changes = self.state.subscribe();
        tokio::spawn(async move {
            loop {
                this.round().await;
                let interval = this.state.load().config.proxy.resolve_interval;
                tokio::select! {
                    () = tokio::time::sleep(interval) => {}
                    Some(()) = wake.recv() => {
                        // One round answers every request for one made so far.
                        while wake.try_recv().is_ok() {}
                    }
                    changed = changes.changed() => if changed.is_err() { return },
                }
            }
        });
    }

    async fn round(&self) {
        let snap = self.state.load();
        let mut results: HashMap<String, Result<Vec<IpAddr>, String>> = HashMap::new();
        for pool in &snap.pools {
            for server in &pool.servers {
                if !server.is_literal() {
                    let host = server.host();
                    if !results.contains_key(host) {
                        results.insert(host.to_string(), self.lookup(host).await);
                    }
                    let result = &results[host];
                    server.health.resolved(result, &server.ips());
                    if let Ok(ips) = result {
                        server.set_ips(ips);
                    }
                }
            }
        }
        debug!(names = results.len(), "resolution round done");
    }
}

fn dedup(addrs: Vec<IpAddr>) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = Vec::with_capacity(addrs.len());
    for a in addrs {
        if !out.contains(&a) {
            out.push(a);
        }
    }
    out
}

/// Reads a hosts(5) file: `IP name [alias...]` per line, `#` comments. Unreadable: empty.
fn read_hosts(path: &Path) -> HashMap<String, Vec<IpAddr>> {
    let mut map: HashMap<String, Vec<IpAddr>> = HashMap::new();
    let Ok(text) = std::fs::read_to_string(path) else {
        return map;
    };
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("");
        let mut words = line.split_whitespace();
        let Some(Ok(ip)) = words.next().map(str::parse::<IpAddr>) else {
            continue;
        };
        for name in words {
            let entry = map.entry(name.to_ascii_lowercase()).or_default();
            if !entry.contains(&ip) {
                entry.push(ip);
            }
        }
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;

    /// hosts(5) lines: comments, aliases, several addresses per name, case-insensitive names.
    #[test]
    fn hosts_file_format() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hosts");
        std::fs::write(
            &path,
            "# comment\n127.0.0.2 app.test Alias  # trailing\n127.0.0.3\tapp.test\nnot-an-ip x\n::1 six.test\n",
        )
        .unwrap();
        let map = read_hosts(&path);
        let two: Vec<IpAddr> = vec!["127.0.0.2".parse().unwrap(), "127.0.0.3".parse().unwrap()];
        assert_eq!(map["app.test"], two);
        assert_eq!(map["alias"], two[..1]);
        assert_eq!(map["six.test"], vec!["::1".parse::<IpAddr>().unwrap()]);
        assert!(!map.contains_key("x"));
        assert!(read_hosts(&dir.path().join("missing")).is_empty());
    }
}
