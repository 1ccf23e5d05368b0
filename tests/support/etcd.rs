//! Real etcd (Debian's `etcd` 3.4 binary) for the cluster tests: one node or a three-node
//! cluster on loopback, each in its own temporary directory.
//!
//! - Ports are chosen below the ephemeral range, so a member restarted on its old ports cannot
//!   find one of them taken by some outgoing connection in the meantime, and each is reserved
//!   across processes (a file in `$TMPDIR/teal-etcd-ports`), so test binaries that `cargo test`
//!   runs side by side never pick the same one.
//! - [`Etcd::with`] takes [`Options`]: HTTPS client URLs (optionally with client-certificate
//!   auth) and extra etcd arguments. [`Etcd::enable_auth`] turns on authentication; the harness
//!   then speaks as `root`. [`Etcd::etcdctl`] runs etcdctl against the members.
//! - [`Etcd::freeze`] / [`Etcd::thaw`] send SIGSTOP / SIGCONT: a frozen member keeps its sockets
//!   open and says nothing, as a hung or cut-off member does.
//! - [`Etcd::kill`] sends SIGKILL; [`Etcd::restart`] starts the member again on the same data
//!   directory and ports and waits until it answers.
//! - Keys and values are read and written through etcd's v3 JSON gateway (base64 in JSON).
//! - Each member logs to `m<i>.log` in the temporary directory; the tails are printed when the
//!   harness is dropped during a panic.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::{json, Value};
use tokio::net::TcpStream;

use std::net::SocketAddr;

use super::{blue_green, config, upstream, Reply, Teal, Upstream};

/// Whether `etcd` and `etcdctl` are installed; says loudly when not.
pub fn etcd_installed() -> bool {
    let found = ["etcd", "etcdctl"]
        .iter()
        .all(|b| Command::new(b).arg("--version").output().is_ok());
    if !found {
        eprintln!("!!!!! SKIPPED: etcd not installed (apt-get install etcd-server) !!!!!");
    }
    found
}

/// A free loopback port below the ephemeral range (32768 and up on Linux), in a block of 300 that
/// depends on the pid, below tests/acme.rs's blocks (20 000 and up). The port is reserved for
/// this process until [`release_port`] (see [`reserve_port`]).
fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let base = 8_000 + (std::process::id() % 40) * 300;
    for _ in 0..300 {
        let port = (base + NEXT.fetch_add(1, Ordering::Relaxed) % 300) as u16;
        if reserve_port(port) {
            if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
                return port;
            }
            release_port(port);
        }
    }
    panic!("no free port in {base}..{}", base + 300)
}

fn port_file(port: u16) -> PathBuf {
    let dir = std::env::temp_dir().join("teal-etcd-ports");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(port.to_string())
}

/// Claims `port` for this process: creates its file (holding our pid) unless another live
/// process holds it. A file left by a process that is gone is taken over.
fn reserve_port(port: u16) -> bool {
    let path = port_file(port);
    for _ in 0..2 {
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(mut f) => {
                let _ = write!(f, "{}", std::process::id());
                return true;
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let holder = std::fs::read_to_string(&path).unwrap_or_default();
                let alive = holder.trim().parse::<u32>().is_ok_and(|pid| {
                    pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists()
                });
                // An empty file is one being written right now.
                if alive || holder.is_empty() {
                    return false;
                }
                let _ = std::fs::remove_file(&path);
            }
            Err(e) => panic!("{}: {e}", path.display()),
        }
    }
    false
}

fn release_port(port: u16) {
    let path = port_file(port);
    if std::fs::read_to_string(&path).is_ok_and(|p| p.trim() == std::process::id().to_string()) {
        let _ = std::fs::remove_file(path);
    }
}

/// How to start the members.
#[derive(Default)]
pub struct Options {
    /// Number of members (1 when 0).
    pub members: usize,
    /// HTTPS client URLs.
    pub tls: Option<EtcdTls>,
    /// More etcd arguments, for every member.
    pub args: Vec<String>,
}

/// The certificates of HTTPS client URLs (PEM files).
pub struct EtcdTls {
    /// The CA that signed the server's certificate and the clients' (`--trusted-ca-file`).
    pub ca: PathBuf,
    /// The members' certificate and key; the certificate must name 127.0.0.1.
    pub cert: PathBuf,
    pub key: PathBuf,
    /// `--client-cert-auth`: clients must present a certificate signed by `ca`.
    pub client_cert_auth: bool,
    /// The certificate and key the harness itself presents.
    pub client: Option<(PathBuf, PathBuf)>,
}

/// How the harness talks to the members: plain or TLS, with or without a token.
#[derive(Clone, Default)]
struct Client {
    tls: Option<Arc<rustls::ClientConfig>>,
    token: Option<String>,
}

impl Client {
    fn new(tls: Option<&EtcdTls>) -> Client {
        let tls = tls.map(|t| {
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_file_iter(&t.ca).unwrap() {
                roots.add(c.unwrap()).unwrap();
            }
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let builder = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots);
            let config = match &t.client {
                Some((cert, key)) => {
                    let certs = CertificateDer::pem_file_iter(cert)
                        .unwrap()
                        .map(|c| c.unwrap())
                        .collect();
                    let key = PrivateKeyDer::from_pem_file(key).unwrap();
                    builder.with_client_auth_cert(certs, key).unwrap()
                }
                None => builder.with_no_client_auth(),
            };
            Arc::new(config)
        });
        Client { tls, token: None }
    }
}

/// One etcd member: its ports and, while it runs, its process.
struct Member {
    name: String,
    client: u16,
    peer: u16,
    child: Option<Child>,
}

/// A running etcd cluster (one or three members).
pub struct Etcd {
    dir: tempfile::TempDir,
    members: Vec<Member>,
    token: String,
    tls: Option<EtcdTls>,
    args: Vec<String>,
    client: Client,
    /// `root`'s password once [`Etcd::enable_auth`] ran.
    root_password: Option<String>,
}

/// A key as etcd stores it.
#[derive(Debug, Clone)]
pub struct Kv {
    pub value: String,
    /// The store revision of the key's last write.
    pub mod_revision: i64,
    /// How many times the key was written since it was created (1 after creation).
    pub version: i64,
}

impl Etcd {
    /// One member.
    pub async fn single() -> Etcd {
        Etcd::with(Options::default()).await
    }

    /// Three members, one cluster.
    pub async fn three() -> Etcd {
        Etcd::with(Options {
            members: 3,
            ..Options::default()
        })
        .await
    }

    /// Members started as `options` say.
    pub async fn with(options: Options) -> Etcd {
        let n = options.members.max(1);
        use std::sync::atomic::{AtomicU32, Ordering};
        static CLUSTERS: AtomicU32 = AtomicU32::new(0);
        let dir = tempfile::tempdir().unwrap();
        let members = (0..n)
            .map(|i| Member {
                name: format!("m{i}"),
                client: free_port(),
                peer: free_port(),
                child: None,
            })
            .collect();
        let token = format!(
            "teal-test-{}-{}",
            std::process::id(),
            CLUSTERS.fetch_add(1, Ordering::Relaxed)
        );
        let client = Client::new(options.tls.as_ref());
        let mut etcd = Etcd {
            dir,
            members,
            token,
            tls: options.tls,
            args: options.args,
            client,
            root_password: None,
        };
        for i in 0..n {
            etcd.spawn(i);
        }
        etcd.wait_ready().await;
        etcd
    }

    /// The log file of member `i`.
    pub fn log_path(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("m{i}.log"))
    }

    fn spawn(&mut self, i: usize) {
        let initial: Vec<String> = self
            .members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer))
            .collect();
        let m = &self.members[i];
        let client = self.url(i);
        let peer = format!("http://127.0.0.1:{}", m.peer);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(i))
            .unwrap();
        let mut cmd = Command::new("etcd");
        if let Some(tls) = &self.tls {
            cmd.arg("--trusted-ca-file")
                .arg(&tls.ca)
                .arg("--cert-file")
                .arg(&tls.cert)
                .arg("--key-file")
                .arg(&tls.key);
            if tls.client_cert_auth {
                cmd.arg("--client-cert-auth");
            }
        }
        let child = cmd
            .args(["--name", &m.name])
            .arg("--data-dir")
            .arg(self.dir.path().join(format!("m{i}.etcd")))
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &initial.join(",")])
            .args(["--initial-cluster-state", "new"])
            .args(["--initial-cluster-token", &self.token])
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .args(["--logger", "zap", "--log-outputs", "stderr"])
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("etcd starts");
        self.members[i].child = Some(child);
    }

    /// The client URL ("http://127.0.0.1:P", https with [`Options::tls`]) of member `i`.
    pub fn url(&self, i: usize) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.members[i].client)
    }

    /// The client port of member `i`.
    pub fn port(&self, i: usize) -> u16 {
        self.members[i].client
    }

    /// The client URLs of all members, running or not.
    pub fn endpoints(&self) -> Vec<String> {
        (0..self.members.len()).map(|i| self.url(i)).collect()
    }

    /// The endpoints as the inside of a TOML array: `"http://...", "http://..."`.
    pub fn endpoints_toml(&self) -> String {
        let quoted: Vec<String> = self
            .endpoints()
            .iter()
            .map(|e| format!("\"{e}\""))
            .collect();
        quoted.join(", ")
    }

    /// Number of members.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether member `i`'s process runs (as far as this harness knows).
    pub fn is_running(&self, i: usize) -> bool {
        self.members[i].child.is_some()
    }

    fn live(&self) -> Vec<usize> {
        (0..self.members.len())
            .filter(|&i| self.is_running(i))
            .collect()
    }

    /// SIGKILLs member `i` and reaps it.
    pub fn kill(&mut self, i: usize) {
        let mut child = self.members[i]
            .child
            .take()
            .unwrap_or_else(|| panic!("etcd member {i} is not running"));
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Freezes member `i` (SIGSTOP): its sockets stay open and say nothing.
    pub fn freeze(&self, i: usize) {
        self.signal(i, "-STOP");
    }

    /// Lets a frozen member `i` go on (SIGCONT).
    pub fn thaw(&self, i: usize) {
        self.signal(i, "-CONT");
    }

    fn signal(&self, i: usize, sig: &str) {
        let child = self.members[i]
            .child
            .as_ref()
            .unwrap_or_else(|| panic!("etcd member {i} is not running"));
        let ok = Command::new("kill")
            .args([sig, &child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig} etcd member {i}");
    }

    /// Runs `etcdctl` with `args` against the running members (with the harness's TLS files,
    /// and as `root` once authentication is on); its output, whatever its exit status.
    pub fn etcdctl(&self, args: &[&str]) -> Output {
        let endpoints: Vec<String> = self.live().iter().map(|&i| self.url(i)).collect();
        let mut cmd = Command::new("etcdctl");
        cmd.env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", endpoints.join(",")))
            .arg("--dial-timeout=5s")
            .arg("--command-timeout=10s");
        if let Some(tls) = &self.tls {
            cmd.arg("--cacert").arg(&tls.ca);
            if let Some((cert, key)) = &tls.client {
                cmd.arg("--cert").arg(cert).arg("--key").arg(key);
            }
        }
        if let Some(password) = &self.root_password {
            cmd.arg(format!("--user=root:{password}"));
        }
        cmd.args(args).output().expect("etcdctl runs")
    }

    /// [`Etcd::etcdctl`] that must succeed; its stdout.
    pub fn etcdctl_ok(&self, args: &[&str]) -> String {
        let out = self.etcdctl(args);
        assert!(
            out.status.success(),
            "etcdctl {args:?}: {}\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Turns authentication on: user `root` (password `root_password`) with role `root`, then
    /// `auth enable`. From then on the harness's own requests carry a token of `root`'s.
    pub async fn enable_auth(&mut self, root_password: &str) {
        self.etcdctl_ok(&["user", "add", "root", "--new-user-password", root_password]);
        // etcd 3.4 knows the role `root` without it being added; adding it is harmless.
        let _ = self.etcdctl(&["role", "add", "root"]);
        self.etcdctl_ok(&["user", "grant-role", "root", "root"]);
        self.etcdctl_ok(&["auth", "enable"]);
        self.root_password = Some(root_password.to_string());
        let body = json!({ "name": "root", "password": root_password }).to_string();
        let mut answer = None;
        for i in self.live() {
            answer = post(&self.client, self.port(i), "/v3/auth/authenticate", &body).await;
            if answer.is_some() {
                break;
            }
        }
        let answer = answer.unwrap_or_else(|| panic!("root cannot authenticate\n{}", self.tails()));
        self.client.token = Some(answer["token"].as_str().expect("a token").to_string());
    }

    /// `POST path` with `body` to member `i` as the harness does (TLS, token); the JSON answer
    /// if 2xx within 2 s.
    pub async fn post(&self, i: usize, path: &str, body: &Value) -> Option<Value> {
        post(&self.client, self.port(i), path, &body.to_string()).await
    }

    /// Starts member `i` again (same data directory, same ports) and waits until it answers.
    pub async fn restart(&mut self, i: usize) {
        assert!(!self.is_running(i), "etcd member {i} is still running");
        self.spawn(i);
        self.wait_member(i, Duration::from_secs(20)).await;
    }

    /// Waits (up to 20 s) until every running member answers a linearizable range request.
    pub async fn wait_ready(&self) {
        for i in self.live() {
            self.wait_member(i, Duration::from_secs(20)).await;
        }
    }

    async fn wait_member(&self, i: usize, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        let port = self.members[i].client;
        while post(&self.client, port, "/v3/kv/range", r#"{"key":"AA=="}"#)
            .await
            .is_none()
        {
            if tokio::time::Instant::now() > deadline {
                panic!(
                    "etcd member {i} (client port {port}) not ready within {within:?}\n{}",
                    self.tails()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The index of the member that every running member names as leader (waits up to 10 s for
    /// them to agree on a running one).
    pub async fn leader(&self) -> usize {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let mut ids = Vec::new();
            let mut leaders = Vec::new();
            for i in self.live() {
                let Some(s) = post(
                    &self.client,
                    self.members[i].client,
                    "/v3/maintenance/status",
                    "{}",
                )
                .await
                else {
                    continue;
                };
                let id = s["header"]["member_id"].as_str().map(str::to_string);
                let leader = s["leader"].as_str().map(str::to_string);
                if let (Some(id), Some(leader)) = (id, leader) {
                    ids.push((i, id));
                    leaders.push(leader);
                }
            }
            let agreed = leaders.len() == self.live().len()
                && !leaders.is_empty()
                && leaders.iter().all(|l| *l == leaders[0]);
            if agreed {
                if let Some((i, _)) = ids.iter().find(|(_, id)| *id == leaders[0]) {
                    return *i;
                }
            }
            if tokio::time::Instant::now() > deadline {
                panic!(
                    "no agreed leader among running etcd members: ids {ids:?}, leaders {leaders:?}\n{}",
                    self.tails()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A range request answered by some running member (tried in turn for up to 10 s).
    async fn range(&self, body: Value) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            for i in self.live() {
                if let Some(v) = post(
                    &self.client,
                    self.members[i].client,
                    "/v3/kv/range",
                    &body.to_string(),
                )
                .await
                {
                    return v;
                }
            }
            if tokio::time::Instant::now() > deadline {
                panic!("no etcd member answered a range request\n{}", self.tails());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The key `key` with its revisions, if present.
    pub async fn kv(&self, key: &str) -> Option<Kv> {
        let v = self.range(json!({ "key": b64(key.as_bytes()) })).await;
        let kv = v["kvs"].as_array()?.first()?.clone();
        let int = |f: &str| {
            kv[f]
                .as_str()
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| panic!("{f} in {kv}"))
        };
        let value = kv["value"].as_str().map(unb64).unwrap_or_default();
        Some(Kv {
            value: String::from_utf8(value).unwrap(),
            mod_revision: int("mod_revision"),
            version: int("version"),
        })
    }

    /// The value of `key`, if present.
    pub async fn get(&self, key: &str) -> Option<String> {
        self.kv(key).await.map(|kv| kv.value)
    }

    /// The keys starting with `prefix`, in order.
    pub async fn keys(&self, prefix: &str) -> Vec<String> {
        let mut end = prefix.as_bytes().to_vec();
        *end.last_mut().expect("a non-empty prefix") += 1;
        let v = self
            .range(
                json!({ "key": b64(prefix.as_bytes()), "range_end": b64(&end), "keys_only": true }),
            )
            .await;
        v["kvs"]
            .as_array()
            .map(|kvs| {
                kvs.iter()
                    .map(|kv| String::from_utf8(unb64(kv["key"].as_str().unwrap())).unwrap())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Writes `key` = `value` through some running member; returns the store revision.
    pub async fn put(&self, key: &str, value: &str) -> i64 {
        let body =
            json!({ "key": b64(key.as_bytes()), "value": b64(value.as_bytes()) }).to_string();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            for i in self.live() {
                if let Some(v) =
                    post(&self.client, self.members[i].client, "/v3/kv/put", &body).await
                {
                    return v["header"]["revision"]
                        .as_str()
                        .and_then(|r| r.parse().ok())
                        .unwrap_or_else(|| panic!("a revision in {v}"));
                }
            }
            if tokio::time::Instant::now() > deadline {
                panic!("no etcd member took a put\n{}", self.tails());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Compacts the history up to store revision `revision` (physically, so watches from before
    /// it fail at once).
    pub async fn compact(&self, revision: i64) {
        let body = json!({ "revision": revision.to_string(), "physical": true }).to_string();
        for i in self.live() {
            if post(
                &self.client,
                self.members[i].client,
                "/v3/kv/compaction",
                &body,
            )
            .await
            .is_some()
            {
                return;
            }
        }
        panic!("no etcd member compacted to {revision}\n{}", self.tails());
    }

    /// The last 30 lines of every member's log.
    pub fn tails(&self) -> String {
        let mut out = String::new();
        for i in 0..self.members.len() {
            let text = std::fs::read_to_string(self.log_path(i)).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(30)..];
            out.push_str(&format!(
                "--- etcd m{i} log tail ---\n{}\n",
                tail.join("\n")
            ));
        }
        out
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let _ = writeln!(std::io::stderr(), "{}", self.tails());
        }
        for m in &mut self.members {
            if let Some(mut child) = m.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
            release_port(m.client);
            release_port(m.peer);
        }
    }
}

/// `POST path` with a JSON body to 127.0.0.1:`port` (TLS and a token as `client` says); the JSON
/// answer if 2xx within 2 s.
async fn post(client: &Client, port: u16, path: &str, body: &str) -> Option<Value> {
    let exchange = async {
        let tcp = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
        let mut req = Request::post(path)
            .header("host", format!("127.0.0.1:{port}"))
            .header("content-type", "application/json");
        if let Some(token) = &client.token {
            req = req.header("authorization", token.as_str());
        }
        let req = req.body(Full::new(Bytes::from(body.to_string()))).unwrap();
        let res = match &client.tls {
            Some(config) => {
                let name = ServerName::try_from("127.0.0.1").unwrap();
                let tls = tokio_rustls::TlsConnector::from(config.clone())
                    .connect(name, tcp)
                    .await
                    .ok()?;
                let (mut sender, conn) = http1::handshake(TokioIo::new(tls)).await.ok()?;
                tokio::spawn(conn);
                sender.send_request(req).await.ok()?
            }
            None => {
                let (mut sender, conn) = http1::handshake(TokioIo::new(tcp)).await.ok()?;
                tokio::spawn(conn);
                sender.send_request(req).await.ok()?
            }
        };
        let ok = res.status().is_success();
        let bytes = res.into_body().collect().await.ok()?.to_bytes();
        let v: Value = serde_json::from_slice(&bytes).ok()?;
        // The gateway answers errors as 200 with an "error" field in some versions.
        (ok && v.get("error").is_none()).then_some(v)
    };
    tokio::time::timeout(Duration::from_secs(2), exchange)
        .await
        .ok()
        .flatten()
}

// === teal in cluster mode ===

/// The `[cluster]` table for `endpoints` under `prefix`, with `extra` lines (TLS files,
/// credentials) at its end.
pub fn cluster_table(endpoints: &[String], prefix: &str, extra: &str) -> String {
    let quoted: Vec<String> = endpoints.iter().map(|e| format!("\"{e}\"")).collect();
    format!(
        "\n[cluster]\netcd = [{}]\nprefix = \"{prefix}\"\n{extra}\n",
        quoted.join(", ")
    )
}

/// `GET /status` on `teal` (must answer 200), as JSON.
pub async fn status(teal: &Teal) -> Value {
    let r = teal.admin("GET", "/status", "", None).await;
    assert_eq!(r.status, http::StatusCode::OK, "{}", r.body);
    r.json()
}

/// `/status`'s `cluster` object.
pub async fn cluster_status(teal: &Teal) -> Value {
    let s = status(teal).await;
    let c = s["cluster"].clone();
    assert!(c.is_object(), "no cluster object in /status: {s}");
    c
}

/// `POST /switch{query}` with `body` on `teal`.
pub async fn switch(teal: &Teal, query: &str, body: &str) -> Reply {
    teal.admin("POST", &format!("/switch{query}"), body, None)
        .await
}

/// A `/switch` body: `{"to":"POOL"}`.
pub fn to(pool: &str) -> String {
    format!("{{\"to\":\"{pool}\"}}")
}

/// For a test that needs etcd: `None` (the test returns) when etcd is not installed, else
/// `serial` locked for the test's whole run (one cluster test at a time).
pub async fn etcd_serial(
    serial: &'static tokio::sync::Mutex<()>,
) -> Option<tokio::sync::MutexGuard<'static, ()>> {
    if !etcd_installed() {
        return None;
    }
    Some(serial.lock().await)
}

/// Blue (`b1`) and green (`g1`) upstreams, and configs for instances in front of them.
pub struct Pools {
    pub blue: Upstream,
    pub green: Upstream,
}

impl Pools {
    pub async fn new() -> Pools {
        Pools {
            blue: upstream("blue", "b1").await,
            green: upstream("green", "g1").await,
        }
    }

    /// The pool list for [`config`]: blue, green.
    pub fn list(&self) -> Vec<(&'static str, Vec<SocketAddr>)> {
        blue_green(&self.blue, &self.green)
    }

    /// A config with `active = "active"` and `extra` (a `[cluster]` table) at its end.
    pub fn config(&self, active: &str, extra: &str) -> String {
        config(active, &self.list(), extra)
    }

    /// A config with `active = "blue"` and `[cluster]` on `endpoints` under `prefix`.
    pub fn cluster_config(&self, endpoints: &[String], prefix: &str) -> String {
        self.config("blue", &cluster_table(endpoints, prefix, ""))
    }
}

/// Polls `/status`'s `cluster` object on `teal` (every 20 ms) until `ok` holds for it, and
/// returns it; after `within`, panics with `what` and the last object.
pub async fn cluster_status_until(
    teal: &Teal,
    within: Duration,
    what: impl std::fmt::Display,
    ok: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let c = cluster_status(teal).await;
        if ok(&c) {
            return c;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("{what}: {c}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls `/` on `teal` (a new connection each) for up to `within`; the last pool it served.
pub async fn serves_within(teal: &Teal, pool: &str, within: Duration) -> String {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let served = teal.text("/").await;
        if served == pool || tokio::time::Instant::now() > deadline {
            return served;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The state stored under `prefix` (`{prefix}/state`, JSON); panics when there is none.
pub async fn stored_state(etcd: &Etcd, prefix: &str) -> Value {
    let key = format!("{prefix}/state");
    let text = etcd
        .get(&key)
        .await
        .unwrap_or_else(|| panic!("no {key} in etcd"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// The `active` pool stored under `prefix`.
pub async fn stored_active(etcd: &Etcd, prefix: &str) -> String {
    let v = stored_state(etcd, prefix).await;
    v["active"]
        .as_str()
        .unwrap_or_else(|| panic!("no active in {v}"))
        .to_string()
}

/// Runs the teal binary with `args` (without `TEAL_CONFIG` and `TEAL_ADMIN_TOKEN` from the
/// environment): its exit code, stdout and stderr.
pub async fn run_teal(args: &[&str]) -> (Option<i32>, String, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_teal"))
        .args(args)
        .env_remove("TEAL_CONFIG")
        .env_remove("TEAL_ADMIN_TOKEN")
        .output()
        .await
        .expect("teal runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding.
pub fn b64(data: &[u8]) -> String {
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for k in 0..4 {
            if k <= chunk.len() {
                out.push(B64[(n >> (18 - 6 * k) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Decodes standard base64 (padding optional).
pub fn unb64(text: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for c in text.bytes().filter(|&c| c != b'=') {
        let v = B64
            .iter()
            .position(|&x| x == c)
            .unwrap_or_else(|| panic!("not base64: {text:?}")) as u32;
        acc = acc << 6 | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}
