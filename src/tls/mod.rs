//! HTTPS: the certificates teal serves, the rustls configuration that picks one per handshake,
//! and the TLS stream both request paths run over.
//!
//! [`Tls`] lives as long as the process (in the state): its [`CertStore`] holds the
//! certificates from `[[tls.certs]]` files and from ACME, each list swapped whole and atomically,
//! so a handshake sees either the old certificate or the new one and open connections keep the
//! one they started with. The challenges of ACME orders under way wait in [`Challenges`] for the
//! plain listener to answer them.

mod certs;
mod report;
mod stream;
pub mod watch;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use rustls::ServerConfig;

pub use certs::{
    client_pair, from_pem, load_pair, pair_from_pem, read_certs, read_pair, CertStore, Loaded,
    Source,
};
pub use report::{check, expiries, status_json, CheckReport};
pub(crate) use stream::send_timed_out;
pub use stream::{HandshakeError, TlsSocket};

/// The path prefix of HTTP-01 challenges (RFC 8555 §8.3).
pub const CHALLENGE_PREFIX: &str = "/.well-known/acme-challenge/";

/// What the process knows about TLS, whatever the configuration says right now.
pub struct Tls {
    /// The certificates, by source.
    pub certs: Arc<CertStore>,
    /// The key authorizations of HTTP-01 challenges under way, by token.
    pub challenges: Challenges,
    server_config: Arc<ServerConfig>,
    /// The TLS listener's port (for redirects), once bound.
    port: std::sync::atomic::AtomicU16,
}

impl Default for Tls {
    fn default() -> Self {
        Tls::new()
    }
}

impl Tls {
    /// No certificates yet.
    pub fn new() -> Tls {
        let certs = Arc::new(CertStore::default());
        Tls {
            server_config: server_config(certs.clone()),
            certs,
            challenges: Challenges::default(),
            port: std::sync::atomic::AtomicU16::new(443),
        }
    }

    /// Where the TLS listener was bound (redirects name this port).
    pub fn set_port(&self, port: u16) {
        self.port.store(port, std::sync::atomic::Ordering::Relaxed);
    }

    /// The TLS listener's port (443 until bound).
    pub fn port(&self) -> u16 {
        self.port.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The configuration for new handshakes (certificates are chosen per handshake from
    /// [`Tls::certs`]).
    pub fn server_config(&self) -> Arc<ServerConfig> {
        self.server_config.clone()
    }
}

/// TLS 1.3 and 1.2 with rustls's ring provider (its cipher suites are the modern AEAD ones only),
/// ALPN `h2` then `http/1.1`, stateless session tickets for resumption, no 0-RTT data (it can be
/// replayed).
fn server_config(certs: Arc<CertStore>) -> Arc<ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .expect("ring supports TLS 1.2 and 1.3")
        .with_no_client_auth()
        .with_cert_resolver(certs);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    if let Ok(ticketer) = rustls::crypto::ring::Ticketer::new() {
        config.ticketer = ticketer;
        config.send_tls13_tickets = 2;
    }
    config.max_early_data_size = 0;
    Arc::new(config)
}

/// HTTP-01 challenges under way: token to key authorization.
#[derive(Default)]
pub struct Challenges(Mutex<HashMap<String, String>>);

impl Challenges {
    /// Answers `token` with `key_authorization` until removed.
    pub fn insert(&self, token: &str, key_authorization: &str) {
        self.lock()
            .insert(token.to_string(), key_authorization.to_string());
    }

    /// Stops answering `token`.
    pub fn remove(&self, token: &str) {
        self.lock().remove(token);
    }

    /// The key authorization for `token`, if a challenge for it is under way.
    pub fn get(&self, token: &str) -> Option<String> {
        self.lock().get(token).cloned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Loads every `[[tls.certs]]` pair of `config`, in order; the first problem is the error (see
/// [`load_entry`]).
pub fn load_files(config: &crate::config::TlsConfig) -> Result<Vec<Arc<Loaded>>, String> {
    (config.certs.iter().enumerate())
        .map(|(i, files)| load_entry(i, files).map(Arc::new))
        .collect()
}

/// Loads the `[[tls.certs]]` entry `i`; the error names the entry, the file and the reason.
pub fn load_entry(i: usize, files: &crate::config::CertFiles) -> Result<Loaded, String> {
    load_pair(&files.cert, &files.key).map_err(|e| format!("tls.certs[{i}]: {e}"))
}
