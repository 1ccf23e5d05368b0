//! Name resolution that follows recreated containers.
//!
//! nginx resolves `server1-green` once at startup and keeps the old IP after
//! `docker compose up --force-recreate`. teal resolves every server hostname again every
//! `proxy.resolve_interval` (and soon after any connect failure), keeps the answers in a cache that
//! the upstream connector reads, and records them in each server's health: a name that does not
//! resolve makes its server `unresolved` (counted as down) instead of stopping teal.
//!
//! Names are looked up in `proxy.hosts_file` first (hosts(5) format, re-read on every round; also
//! the seam the tests use to move a name from one address to another), then with the system
//! resolver. A name with several addresses uses all of them: each new connection starts at the
//! next address.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use hyper_util::client::legacy::connect::dns::Name;
use tokio::sync::mpsc;
use tracing::debug;

use crate::state::State;

/// The resolver cache shared by the connector and the refresh task.
pub struct Resolver {
    state: Arc<State>,
    cache: Mutex<HashMap<String, Arc<Vec<IpAddr>>>>,
    rotate: AtomicUsize,
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
            cache: Mutex::new(HashMap::new()),
            rotate: AtomicUsize::new(0),
            refresh,
            wake: Mutex::new(Some(wake)),
        })
    }

    /// Asks for a resolution round now (after a connect failure: the name may have moved).
    pub fn refresh_soon(&self) {
        let _ = self.refresh.send(());
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Vec<IpAddr>>>> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
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

    /// The cached addresses of `host`, rotated by one per call, or a fresh lookup on a miss.
    async fn addresses(&self, host: &str) -> Result<Vec<SocketAddr>, String> {
        let cached = self.cache().get(host).cloned();
        let addrs = match cached {
            Some(a) if !a.is_empty() => a,
            _ => {
                let found = Arc::new(self.lookup(host).await?);
                self.cache().insert(host.to_string(), found.clone());
                found
            }
        };
        let start = self.rotate.fetch_add(1, Ordering::Relaxed) % addrs.len();
        Ok((0..addrs.len())
            .map(|i| SocketAddr::new(addrs[(start + i) % addrs.len()], 0))
            .collect())
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
        for server in snap.pools.iter().flat_map(|p| p.servers.iter()) {
            let host = host_of(&server.authority);
            if !results.contains_key(host) {
                let result = match host.parse::<IpAddr>() {
                    Ok(ip) => Ok(vec![ip]),
                    Err(_) => self.lookup(host).await,
                };
                if let Ok(addrs) = &result {
                    self.cache()
                        .insert(host.to_string(), Arc::new(addrs.clone()));
                }
                results.insert(host.to_string(), result);
            }
            server.health.resolved(&results[host], server);
        }
        debug!(names = results.len(), "resolution round done");
    }
}

/// The host of an authority without IPv6 brackets.
fn host_of(auth: &http::uri::Authority) -> &str {
    auth.host().trim_start_matches('[').trim_end_matches(']')
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

/// The resolver as `HttpConnector` wants it: a service from a name to socket addresses (port 0;
/// the connector fills in the port).
#[derive(Clone)]
pub struct ResolverService(pub Arc<Resolver>);

impl tower_service::Service<Name> for ResolverService {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let resolver = self.0.clone();
        Box::pin(async move {
            resolver
                .addresses(name.as_str())
                .await
                .map(Vec::into_iter)
                .map_err(std::io::Error::other)
        })
    }
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
