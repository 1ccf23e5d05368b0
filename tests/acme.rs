//! ACME for real: Debian's `pebble` (Let's Encrypt's test CA server) on loopback issues teal a
//! certificate through HTTP-01, validated against teal's own plain listener.
//!
//! Each test starts its own `pebble-challtestsrv` as pebble's DNS server (it answers every A
//! query with 127.0.0.1 and no AAAA, so `app.test` is this machine) and its own pebble, whose
//! HTTPS listener has a certificate from a test CA that teal trusts through `ca_file`. pebble's
//! `httpPort` is teal's plain listener port, chosen free beforehand. A test is skipped, loudly,
//! only when the pebble binaries are not installed (`apt-get install pebble`).

mod support;

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use support::tls::{client_config, connect, presented, TestCa};
use support::{blue_green, config, upstream, Teal, Upstream};
use tokio::process::{Child, Command};
use tokio::time::Instant;

/// The name teal gets a certificate for.
const DOMAIN: &str = "app.test";
/// How long an issuance may take in these tests (pebble without its validation sleeps issues in
/// about a second).
const ISSUANCE: Duration = Duration::from_secs(60);

/// A free port below the kernel's ephemeral range (32768 up), so that no outgoing connection of
/// a test running meanwhile can take it as its local port before teal binds it again on restart.
fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let base = 20_000 + (std::process::id() % 40) * 300;
    for _ in 0..300 {
        let port = (base + NEXT.fetch_add(1, Ordering::Relaxed) % 300) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {base}..{}", base + 300)
}

/// Whether `pebble` and `pebble-challtestsrv` are installed; says loudly when not.
fn pebble_installed() -> bool {
    let found = ["pebble", "pebble-challtestsrv"]
        .iter()
        .all(|b| std::process::Command::new(b).arg("-h").output().is_ok());
    if !found {
        eprintln!("!!!!! SKIPPED: pebble not installed (apt-get install pebble) !!!!!");
    }
    found
}

/// pebble's DNS server: every name is 127.0.0.1.
struct Dns {
    addr: SocketAddr,
    _child: Child,
}

impl Dns {
    async fn start(logs: &Path) -> Dns {
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let management = format!("127.0.0.1:{}", free_port());
        let child = Command::new("pebble-challtestsrv")
            .args(["-management", &management, "-dns01", &addr.to_string()])
            .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
            .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""])
            .stdout(log_file(logs, "challtestsrv.log"))
            .stderr(log_file(logs, "challtestsrv.err"))
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        wait_for_port(management.parse().unwrap(), logs).await;
        Dns {
            addr,
            _child: child,
        }
    }
}

/// A pebble to be started (on ports known in advance), or running.
struct Pebble {
    acme: SocketAddr,
    management: SocketAddr,
    /// Its own HTTPS certificate's CA (teal's `ca_file`).
    ca: TestCa,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Pebble {
    /// Writes the config for a pebble validating HTTP-01 on `http_port`, issuing certificates
    /// valid for `validity`, resolving names through `dns`.
    fn new(http_port: u16, validity: Duration) -> Pebble {
        let ca = TestCa::new();
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = ca
            .leaf(&["127.0.0.1", "localhost"])
            .write(dir.path(), "pebble");
        let acme: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let management: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let config = serde_json::json!({"pebble": {
            "listenAddress": acme.to_string(),
            "managementListenAddress": management.to_string(),
            "certificate": cert,
            "privateKey": key,
            "httpPort": http_port,
            "tlsPort": free_port(),
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false,
            "certificateValidityPeriod": validity.as_secs(),
        }});
        std::fs::write(dir.path().join("pebble.json"), config.to_string()).unwrap();
        Pebble {
            acme,
            management,
            ca,
            dir,
            child: None,
        }
    }

    /// Starts it and waits until it accepts connections.
    async fn start(&mut self, dns: &Dns) {
        let child = Command::new("pebble")
            .arg("-config")
            .arg(self.dir.path().join("pebble.json"))
            .args(["-dnsserver", &dns.addr.to_string()])
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .env("PEBBLE_AUTHZREUSE", "0")
            .stdout(log_file(self.dir.path(), "pebble.log"))
            .stderr(log_file(self.dir.path(), "pebble.err"))
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        self.child = Some(child);
        wait_for_port(self.acme, self.dir.path()).await;
        wait_for_port(self.management, self.dir.path()).await;
    }

    /// Stops it; it forgets every account and order (pebble keeps nothing).
    async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().await.unwrap();
        }
    }

    fn directory(&self) -> String {
        format!("https://{}/dir", self.acme)
    }

    /// The root pebble issues under (made anew each time pebble starts), from its management
    /// API.
    async fn issuing_root(&self) -> CertificateDer<'static> {
        let cfg = client_config(&self.ca, &[b"http/1.1"], rustls::DEFAULT_VERSIONS);
        let answer = support::tls::get(self.management, "127.0.0.1", "/roots/0", cfg).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        CertificateDer::from_pem_slice(answer.body.as_bytes()).unwrap()
    }

    /// What pebble logged, for failure messages.
    fn logs(&self) -> String {
        logs_in(self.dir.path())
    }
}

fn log_file(dir: &Path, name: &str) -> std::fs::File {
    std::fs::File::create(dir.join(name)).unwrap()
}

fn logs_in(dir: &Path) -> String {
    let mut text = String::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".log") || name.ends_with(".err") {
            let body = std::fs::read_to_string(entry.path()).unwrap_or_default();
            text.push_str(&format!("--- {name}\n{body}\n"));
        }
    }
    text
}

async fn wait_for_port(addr: SocketAddr, logs: &Path) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        assert!(
            Instant::now() < deadline,
            "nothing listens on {addr} after 10 s:\n{}",
            logs_in(logs)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A TLS client trusting only `root`.
fn trusting(root: CertificateDer<'static>) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(root).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// The teal config: plain listener on `http_port` (pebble validates there), HTTPS on port 0,
/// `[tls.acme]` at `pebble`, its CA in `pebble-ca.pem` beside the config.
fn teal_dir(
    pebble: &Pebble,
    http_port: u16,
    renew_before: &str,
    pools: (&Upstream, &Upstream),
) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pebble-ca.pem"), pebble.ca.pem()).unwrap();
    let acme = format!(
        "\n[tls]\nlisten = \"127.0.0.1:0\"\n\n[tls.acme]\ndirectory = \"{}\"\nemail = \"ops@app.test\"\ndomains = [\"{DOMAIN}\"]\nstate_dir = \"acme\"\nrenew_before = \"{renew_before}\"\nca_file = \"pebble-ca.pem\"\n",
        pebble.directory()
    );
    let text = config("blue", &blue_green(pools.0, pools.1), &acme).replacen(
        "listen = \"127.0.0.1:0\"",
        &format!("listen = \"127.0.0.1:{http_port}\""),
        1,
    );
    std::fs::write(dir.path().join("teal.toml"), text).unwrap();
    dir
}

/// A pebble issuing certificates valid for `validity` (not started yet), its DNS server, and the
/// free port it validates HTTP-01 on (teal's plain listener).
async fn pebble_and_dns(validity: Duration) -> (Pebble, Dns, u16) {
    let http_port = free_port();
    let pebble = Pebble::new(http_port, validity);
    let dns = Dns::start(pebble.dir.path()).await;
    (pebble, dns, http_port)
}

/// teal from [`teal_dir`] in front of a blue and a green upstream (returned to keep them up).
async fn acme_teal(
    pebble: &Pebble,
    http_port: u16,
    renew_before: &str,
) -> (Teal, Upstream, Upstream) {
    let (blue, green) = (upstream("blue", "b1").await, upstream("green", "g1").await);
    let teal = Teal::start_in(teal_dir(pebble, http_port, renew_before, (&blue, &green))).await;
    (teal, blue, green)
}

/// Starts teal again in `dir` (its ACME state kept) after replacing `from` by `to` in its config.
async fn start_edited(dir: tempfile::TempDir, from: &str, to: &str) -> Teal {
    let path = dir.path().join("teal.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.replace(from, to)).unwrap();
    Teal::start_in(dir).await
}

/// The certificate teal presents for `app.test` to a client trusting `root`, at once (the
/// handshake must succeed).
async fn presented_now(teal: &Teal, root: &CertificateDer<'static>) -> Vec<u8> {
    let stream = connect(teal.tls.unwrap(), DOMAIN, trusting(root.clone()));
    presented(&stream.await.unwrap()).to_vec()
}

/// [`served_cert_for`] `name`, failing the test with pebble's logs if none comes.
async fn issued(
    teal: &Teal,
    name: &str,
    root: &CertificateDer<'static>,
    pebble: &Pebble,
) -> Vec<u8> {
    let Some(served) = served_cert_for(teal, name, root).await else {
        panic!(
            "no certificate for {name} within {ISSUANCE:?}:\n{}",
            pebble.logs()
        );
    };
    served
}

/// Asserts that `/metrics` counts one ACME order issued and none failed.
async fn assert_one_order_and_no_failure(teal: &Teal) {
    assert_eq!(orders(teal, "issued").await, 1);
    assert_eq!(orders(teal, "failed").await, 0);
}

/// The certificate teal presents for `app.test` to a client trusting `root`, once it has one
/// (polling up to [`ISSUANCE`]); `None` if it never does.
async fn served_cert(teal: &Teal, root: &CertificateDer<'static>) -> Option<Vec<u8>> {
    served_cert_for(teal, DOMAIN, root).await
}

/// [`served_cert`] for `name`.
async fn served_cert_for(
    teal: &Teal,
    name: &str,
    root: &CertificateDer<'static>,
) -> Option<Vec<u8>> {
    let tls = teal.tls.unwrap();
    let deadline = Instant::now() + ISSUANCE;
    while Instant::now() < deadline {
        if let Ok(stream) = connect(tls, name, trusting(root.clone())).await {
            return Some(presented(&stream).to_vec());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

/// The leaf certificate of `state_dir/cert.pem`, DER.
fn stored_leaf(state_dir: &Path) -> Vec<u8> {
    let pem = std::fs::read(state_dir.join("cert.pem")).unwrap();
    CertificateDer::pem_slice_iter(&pem)
        .next()
        .unwrap()
        .unwrap()
        .to_vec()
}

/// `teal_acme_orders_total{outcome}` from `/metrics` (0 when absent).
async fn orders(teal: &Teal, outcome: &str) -> u64 {
    let metrics = teal.admin("GET", "/metrics", "", None).await.body;
    let prefix = format!("teal_acme_orders_total{{outcome=\"{outcome}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map_or(0, |n| n.trim().parse().unwrap())
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test]
async fn obtains_a_certificate_over_http01_and_serves_it() {
    if !pebble_installed() {
        return;
    }
    let (mut pebble, dns, http_port) = pebble_and_dns(Duration::from_secs(7 * 86_400)).await;
    pebble.start(&dns).await;
    let (teal, _blue, _green) = acme_teal(&pebble, http_port, "1d").await;
    let root = pebble.issuing_root().await;
    let served = issued(&teal, DOMAIN, &root, &pebble).await;
    // The handshake above verified the chain to pebble's root for app.test; now a request.
    let answer = support::tls::get(teal.tls.unwrap(), DOMAIN, "/", trusting(root)).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.body.trim(), "blue");
    let state_dir = teal.path.parent().unwrap().join("acme");
    assert_eq!(mode(&state_dir), 0o700);
    for file in ["account.json", "cert.pem", "key.pem"] {
        assert_eq!(mode(&state_dir.join(file)), 0o600, "{file}");
    }
    assert_eq!(stored_leaf(&state_dir), served, "served is not cert.pem");
    assert_one_order_and_no_failure(&teal).await;
    // The challenge is withdrawn once done, and plain traffic was never in the way.
    assert_eq!(teal.get("/").await.status, 200);
    let stray = teal.get("/.well-known/acme-challenge/none").await;
    assert_eq!(stray.status, 404, "{}", stray.body);
}

/// Plain HTTP requests to teal, one after another every 20 ms (at most 3000), until stopped;
/// what they got back.
struct PlainLoad {
    stop: tokio_util::sync::CancellationToken,
    task: tokio::task::JoinHandle<(usize, Vec<String>)>,
}

impl PlainLoad {
    fn start(proxy: SocketAddr) -> PlainLoad {
        let stop = tokio_util::sync::CancellationToken::new();
        let until = stop.clone();
        let task = tokio::spawn(async move {
            let (mut sent, mut bad) = (0, Vec::new());
            while !until.is_cancelled() && sent < 3000 {
                let reply = support::Conn::open(proxy).await.get("/").await;
                sent += 1;
                if reply.status != 200 || reply.body.trim() != "blue" {
                    bad.push(format!("{} {}", reply.status, reply.body));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (sent, bad)
        });
        PlainLoad { stop, task }
    }

    /// Stops; asserts every request was answered by the upstream.
    async fn check(self) -> usize {
        self.stop.cancel();
        let (sent, bad) = self.task.await.unwrap();
        assert!(sent > 0);
        assert!(
            bad.is_empty(),
            "{} of {sent} plain requests failed: {bad:?}",
            bad.len()
        );
        sent
    }
}

#[tokio::test]
async fn renews_when_renew_before_reaches_past_the_lifetime() {
    if !pebble_installed() {
        return;
    }
    let (mut pebble, dns, http_port) = pebble_and_dns(Duration::from_secs(3600)).await;
    pebble.start(&dns).await;
    let root = pebble.issuing_root().await;
    let (teal, _blue, _green) = acme_teal(&pebble, http_port, "30m").await;
    let first = issued(&teal, DOMAIN, &root, &pebble).await;
    let (_, dir) = teal.stop().await;
    let state_dir = dir.path().join("acme");
    let account = std::fs::read(state_dir.join("account.json")).unwrap();
    // Restarted with renew_before (2 h) past the certificate's lifetime (1 h): due at once.
    let teal = start_edited(dir, "\"30m\"", "\"2h\"").await;
    // The kept certificate is served at once, before any exchange with the CA.
    assert_eq!(presented_now(&teal, &root).await, first);
    let load = PlainLoad::start(teal.proxy);
    let deadline = Instant::now() + ISSUANCE;
    let renewed = loop {
        let stream = connect(teal.tls.unwrap(), DOMAIN, trusting(root.clone())).await;
        let served = presented(&stream.unwrap()).to_vec();
        if served != first {
            break served;
        }
        assert!(
            Instant::now() < deadline,
            "not renewed within {ISSUANCE:?}:\n{}",
            pebble.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    load.check().await;
    assert_eq!(stored_leaf(&state_dir), renewed);
    assert_eq!(
        std::fs::read(state_dir.join("account.json")).unwrap(),
        account,
        "the account was not reused"
    );
    assert_one_order_and_no_failure(&teal).await;
}

#[tokio::test]
async fn serves_plain_traffic_while_the_ca_is_down_and_retries() {
    if !pebble_installed() {
        return;
    }
    let (mut pebble, dns, http_port) = pebble_and_dns(Duration::from_secs(7 * 86_400)).await;
    let (teal, _blue, _green) = acme_teal(&pebble, http_port, "1d").await;
    let load = PlainLoad::start(teal.proxy);
    assert_eventually!(
        orders(&teal, "failed").await >= 1,
        Duration::from_secs(15),
        "no failed ACME order counted while the CA is down"
    );
    // No certificate yet: the handshake fails (an alert), it does not hang or crash teal.
    let refused = tokio::time::timeout(
        Duration::from_secs(5),
        connect(
            teal.tls.unwrap(),
            DOMAIN,
            client_config(&pebble.ca, &[], rustls::DEFAULT_VERSIONS),
        ),
    )
    .await
    .expect("the handshake neither finished nor failed");
    assert!(
        refused.is_err(),
        "a handshake succeeded without a certificate"
    );
    pebble.start(&dns).await;
    let root = pebble.issuing_root().await;
    // The first retry comes 10 s after the first failure.
    let served = issued(&teal, DOMAIN, &root, &pebble).await;
    load.check().await;
    let state_dir = teal.path.parent().unwrap().join("acme");
    assert_eq!(stored_leaf(&state_dir), served);
    assert_eq!(orders(&teal, "issued").await, 1);
}

#[tokio::test]
async fn a_new_domain_and_a_ca_that_forgot_the_account_get_a_new_order_and_account() {
    if !pebble_installed() {
        return;
    }
    let (mut pebble, dns, http_port) = pebble_and_dns(Duration::from_secs(7 * 86_400)).await;
    pebble.start(&dns).await;
    let root = pebble.issuing_root().await;
    let (teal, _blue, _green) = acme_teal(&pebble, http_port, "1d").await;
    let first = issued(&teal, DOMAIN, &root, &pebble).await;
    let (_, dir) = teal.stop().await;
    let account = std::fs::read(dir.path().join("acme/account.json")).unwrap();
    // A restarted pebble knows no account; the config now names a second domain too.
    pebble.stop().await;
    pebble.start(&dns).await;
    let new_root = pebble.issuing_root().await;
    let teal = start_edited(dir, "[\"app.test\"]", "[\"app.test\", \"www.app.test\"]").await;
    // The kept certificate still serves the name it covers while the new one is ordered.
    assert_eq!(presented_now(&teal, &root).await, first);
    let both = issued(&teal, "www.app.test", &new_root, &pebble).await;
    assert_eq!(served_cert(&teal, &new_root).await, Some(both));
    let state_dir = teal.path.parent().unwrap().join("acme");
    assert_ne!(
        std::fs::read(state_dir.join("account.json")).unwrap(),
        account,
        "the forgotten account was kept"
    );
    assert_one_order_and_no_failure(&teal).await;
}

#[tokio::test]
async fn an_unusable_ca_file_or_state_dir_stops_startup_with_the_key_and_file() {
    let (blue, green) = (upstream("blue", "b1").await, upstream("green", "g1").await);
    let pebble = Pebble::new(free_port(), Duration::from_secs(3600));
    let dir = teal_dir(&pebble, free_port(), "1d", (&blue, &green));
    let ca_file = dir.path().join("pebble-ca.pem");
    std::fs::write(&ca_file, "not a certificate\n").unwrap();
    let config = teal::config::Config::load(&dir.path().join("teal.toml")).unwrap();
    let Err(e) = teal::app::start(config).await else {
        panic!("started with a ca_file holding no certificate");
    };
    let said = format!("{e:#}");
    assert!(said.contains("tls.acme.ca_file"), "{said}");
    assert!(
        said.contains("pebble-ca.pem: no CERTIFICATE block"),
        "{said}"
    );
    std::fs::write(&ca_file, pebble.ca.pem()).unwrap();
    // The first attempt made state_dir; a file stands there now.
    std::fs::remove_dir(dir.path().join("acme")).unwrap();
    std::fs::write(dir.path().join("acme"), "a file, not a directory").unwrap();
    let config = teal::config::Config::load(&dir.path().join("teal.toml")).unwrap();
    let Err(e) = teal::app::start(config).await else {
        panic!("started with a file as state_dir");
    };
    let said = format!("{e:#}");
    assert!(said.contains("tls.acme.state_dir"), "{said}");
    assert!(said.contains("acme"), "{said}");
}
