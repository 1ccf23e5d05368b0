//! Certificates: a chain and key loaded and checked from PEM, and the store a handshake picks one
//! from by the name the client asked for (SNI).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// Where a certificate came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A `[[tls.certs]]` entry.
    File {
        /// The chain's file.
        cert: PathBuf,
        /// The key's file.
        key: PathBuf,
    },
    /// Issued over ACME, kept in `state_dir`.
    Acme,
}

impl Source {
    /// `file` or `acme`, as `/status` says it.
    pub fn kind(&self) -> &'static str {
        match self {
            Source::File { .. } => "file",
            Source::Acme => "acme",
        }
    }
}

/// A certificate ready to serve, with what teal reports about it.
pub struct Loaded {
    /// The DNS names (and IP addresses) it is valid for, from its subjectAltName (or its common
    /// name when it has none), lowercase.
    pub names: Vec<String>,
    /// When it expires.
    pub not_after: SystemTime,
    /// Where it came from.
    pub source: Source,
    /// The chain and signing key rustls serves.
    pub key: Arc<CertifiedKey>,
}

impl fmt::Debug for Loaded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Loaded")
            .field("names", &self.names)
            .field("not_after", &self.not_after)
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl Loaded {
    /// Whether this certificate covers `name` (exactly, or by a `*.` wildcard for one label).
    pub fn covers(&self, name: &str) -> bool {
        self.names.iter().any(|n| match n.strip_prefix("*.") {
            Some(parent) => name
                .split_once('.')
                .is_some_and(|(label, rest)| !label.is_empty() && rest == parent),
            None => n == name,
        })
    }

    /// Seconds since the Unix epoch when it expires.
    pub fn expiry_unix(&self) -> i64 {
        match self.not_after.duration_since(UNIX_EPOCH) {
            Ok(d) => d.as_secs() as i64,
            Err(e) => -(e.duration().as_secs() as i64),
        }
    }
}

/// Reads and checks the pair `cert` and `key`: both PEM, the key one of PKCS#8, SEC1 or PKCS#1,
/// the key matching the leaf certificate, the leaf not expired. The error names the file and the
/// reason.
pub fn load_pair(cert: &Path, key: &Path) -> Result<Loaded, String> {
    let (cert_pem, key_pem) = read_pair(cert, key)?;
    let source = Source::File {
        cert: cert.to_path_buf(),
        key: key.to_path_buf(),
    };
    pair_from_pem((cert, &cert_pem), (key, &key_pem), source)
}

/// The certificates of a PEM file (a CA bundle): at least one, each parsed. The error names the
/// file and the reason.
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: not PEM certificates: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{}: no CERTIFICATE block in the file (not PEM?)",
            path.display()
        ));
    }
    Ok(certs)
}

/// A client certificate chain and its key, for TLS to a server that asks for one (etcd). The
/// error names the file and the reason.
pub fn client_pair(
    cert: &Path,
    key: &Path,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), String> {
    let chain = read_certs(cert)?;
    let pem = std::fs::read(key).map_err(|e| format!("{}: cannot read: {e}", key.display()))?;
    let key_der = PrivateKeyDer::from_pem_slice(&pem)
        .map_err(|e| format!("{}: not a PEM private key: {e}", key.display()))?;
    Ok((chain, key_der))
}

/// Both files of a pair as they are now; the error names the file that cannot be read.
pub fn read_pair(cert: &Path, key: &Path) -> Result<(Vec<u8>, Vec<u8>), String> {
    let read =
        |p: &Path| std::fs::read(p).map_err(|e| format!("{}: cannot read: {e}", p.display()));
    Ok((read(cert)?, read(key)?))
}

/// [`from_pem`] for the PEM text read from the files `cert` and `key`; the error names the file
/// the problem is in.
pub fn pair_from_pem(
    (cert, cert_pem): (&Path, &[u8]),
    (key, key_pem): (&Path, &[u8]),
    source: Source,
) -> Result<Loaded, String> {
    from_pem(cert_pem, key_pem, source).map_err(|(which, reason)| {
        let file = if which == Which::Cert { cert } else { key };
        format!("{}: {reason}", file.display())
    })
}

/// Which of the pair a problem is in.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum Which {
    /// The certificate chain.
    Cert,
    /// The private key.
    Key,
}

/// Builds a [`Loaded`] from PEM text (see [`load_pair`]).
pub fn from_pem(
    cert_pem: &[u8],
    key_pem: &[u8],
    source: Source,
) -> Result<Loaded, (Which, String)> {
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| (Which::Cert, format!("not a PEM certificate chain: {e}")))?;
    let Some(leaf) = chain.first() else {
        return Err((
            Which::Cert,
            "no CERTIFICATE block in the file (not PEM?)".into(),
        ));
    };
    let (names, not_before, not_after) = describe(leaf).map_err(|e| (Which::Cert, e))?;
    let now = SystemTime::now();
    if not_after < now {
        return Err((
            Which::Cert,
            format!("expired on {}", httpdate::fmt_http_date(not_after)),
        ));
    }
    if not_before > now + Duration::from_secs(300) {
        return Err((
            Which::Cert,
            format!("not valid before {}", httpdate::fmt_http_date(not_before)),
        ));
    }
    let key_der = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| {
        (
            Which::Key,
            format!("not a PEM private key (PKCS#8, SEC1 or PKCS#1): {e}"),
        )
    })?;
    let provider = rustls::crypto::ring::default_provider();
    let signer = provider
        .key_provider
        .load_private_key(key_der)
        .map_err(|e| (Which::Key, format!("unusable private key: {e}")))?;
    let key = CertifiedKey::new(chain, signer);
    key.keys_match().map_err(|_| {
        (
            Which::Key,
            "does not match the certificate (the key of another pair?)".to_string(),
        )
    })?;
    Ok(Loaded {
        names,
        not_after,
        source,
        key: Arc::new(key),
    })
}

/// The leaf's names, and its validity period.
fn describe(leaf: &CertificateDer<'_>) -> Result<(Vec<String>, SystemTime, SystemTime), String> {
    use x509_parser::extensions::GeneralName;
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref())
        .map_err(|e| format!("the first certificate does not parse: {e}"))?;
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(n) => names.push(n.to_ascii_lowercase()),
                GeneralName::IPAddress(b) => {
                    if let Ok(a) = <[u8; 4]>::try_from(*b) {
                        names.push(std::net::IpAddr::from(a).to_string());
                    } else if let Ok(a) = <[u8; 16]>::try_from(*b) {
                        names.push(std::net::IpAddr::from(a).to_string());
                    }
                }
                _ => {}
            }
        }
    }
    if names.is_empty() {
        if let Some(cn) = cert.subject().iter_common_name().next() {
            if let Ok(cn) = cn.as_str() {
                names.push(cn.to_ascii_lowercase());
            }
        }
    }
    let time = |t: x509_parser::time::ASN1Time| {
        let secs = t.timestamp();
        if secs >= 0 {
            UNIX_EPOCH + Duration::from_secs(secs as u64)
        } else {
            UNIX_EPOCH
        }
    };
    let validity = cert.validity();
    Ok((names, time(validity.not_before), time(validity.not_after)))
}

/// The certificates being served: those from files (in file order, the first the default) and
/// those from ACME, each list replaced whole.
#[derive(Default)]
pub struct CertStore {
    files: ArcSwap<Vec<Arc<Loaded>>>,
    acme: ArcSwap<Vec<Arc<Loaded>>>,
}

impl fmt::Debug for CertStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertStore")
            .field("files", &self.files.load())
            .field("acme", &self.acme.load())
            .finish()
    }
}

impl CertStore {
    /// Serves `certs` as the file certificates from the next handshake on.
    pub fn set_files(&self, certs: Vec<Arc<Loaded>>) {
        self.files.store(Arc::new(certs));
    }

    /// Serves `certs` as the ACME certificates from the next handshake on.
    pub fn set_acme(&self, certs: Vec<Arc<Loaded>>) {
        self.acme.store(Arc::new(certs));
    }

    /// The file certificates now served.
    pub fn files(&self) -> Arc<Vec<Arc<Loaded>>> {
        self.files.load_full()
    }

    /// The ACME certificates now served.
    pub fn acme(&self) -> Arc<Vec<Arc<Loaded>>> {
        self.acme.load_full()
    }

    /// Every certificate now served: files first, then ACME.
    pub fn all(&self) -> Vec<Arc<Loaded>> {
        let mut all = self.files().to_vec();
        all.extend(self.acme().iter().cloned());
        all
    }

    /// The certificate for `name`: the first that covers it, files before ACME; without a name
    /// (or for a name none covers), the first file certificate, else the first from ACME.
    pub fn pick(&self, name: Option<&str>) -> Option<Arc<CertifiedKey>> {
        let (files, acme) = (self.files.load(), self.acme.load());
        let mut all = files.iter().chain(acme.iter());
        if let Some(name) = name {
            let name = name.to_ascii_lowercase();
            if let Some(found) = all.clone().find(|c| c.covers(&name)) {
                return Some(found.key.clone());
            }
        }
        all.next().map(|c| c.key.clone())
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let picked = self.pick(hello.server_name());
        if picked.is_none() {
            tracing::warn!(
                name = hello.server_name().unwrap_or("(none)"),
                "TLS handshake refused: no certificate yet (ACME order not done?)"
            );
        }
        picked
    }
}
