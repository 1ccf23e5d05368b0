//! HTTPS end to end: protocol versions, SNI, ALPN, routing and preview over HTTP/1.1 and HTTP/2,
//! `redirect_http`, HSTS, the certificate report of `/status`, `/metrics` and `teal check`, and
//! certificate files replaced (well and badly) while clients keep sending.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

use support::tls::{client_config, connect, get, presented, tls_table, Leaf, TestCa};
use support::{blue_green, config, dead_addr, promtool_check, upstream, Teal};

const H2: &[u8] = b"h2";
const H1: &[u8] = b"http/1.1";

/// The DER of a leaf's certificate, to compare with what a handshake presented.
fn der(leaf: &Leaf) -> CertificateDer<'static> {
    CertificateDer::from_pem_slice(leaf.cert_pem.as_bytes()).unwrap()
}

/// Writes `text` to `path` the way certbot and Kubernetes replace files: a temporary file beside
/// it, then a rename over it.
fn replace(path: &Path, text: &str) {
    let tmp = path.with_file_name(format!(
        "{}.tmp",
        path.file_name().unwrap().to_string_lossy()
    ));
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// A verifier that checks the handshake's signature but accepts any certificate for any name,
/// so a test can see which certificate teal presents for a name none covers.
#[derive(Debug)]
struct AnyName(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyName {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algs = &self.0.signature_verification_algorithms;
        rustls::crypto::verify_tls12_signature(message, cert, dss, algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algs = &self.0.signature_verification_algorithms;
        rustls::crypto::verify_tls13_signature(message, cert, dss, algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn any_name_config() -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyName(provider)))
        .with_no_client_auth();
    Arc::new(config)
}

/// teal with blue and green upstreams and `[tls]` serving the pairs `stems` (each `STEM.pem`,
/// `STEM.key` in teal's directory, written from `leaves`), with `extra` in `[tls]`.
async fn teal_with(
    leaves: &[(&str, &Leaf)],
    extra: &str,
) -> (Teal, support::Upstream, support::Upstream) {
    let blue = upstream("blue", "b1").await;
    let green = upstream("green", "g1").await;
    let dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    for (stem, leaf) in leaves {
        leaf.write(dir.path(), stem);
        files.push((format!("{stem}.pem"), format!("{stem}.key")));
    }
    let pairs: Vec<(&str, &str)> = files
        .iter()
        .map(|(c, k)| (c.as_str(), k.as_str()))
        .collect();
    let text = config(
        "blue",
        &blue_green(&blue, &green),
        &tls_table(&pairs, extra),
    );
    std::fs::write(dir.path().join("teal.toml"), text).unwrap();
    (Teal::start_in(dir).await, blue, green)
}

/// A client limited to TLS 1.3, and one limited to TLS 1.2, both complete a handshake and a
/// request, on the version they were limited to.
#[tokio::test]
async fn tls13_and_tls12_handshakes() {
    let ca = TestCa::new();
    let (teal, _b, _g) = teal_with(&[("app", &ca.leaf(&["app.test"]))], "").await;
    let addr = teal.tls.unwrap();
    for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
        let cfg = client_config(&ca, &[H1], &[version]);
        let stream = connect(addr, "app.test", cfg.clone()).await.unwrap();
        assert_eq!(stream.get_ref().1.protocol_version(), Some(version.version));
        let answer = get(addr, "app.test", "/echo", cfg).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
    }
}

/// With certificates for a.test and b.test, each name gets its own; a name neither covers, and
/// a handshake without SNI, get the first (the default).
#[tokio::test]
async fn sni_picks_the_certificate() {
    let ca = TestCa::new();
    let (a, b) = (ca.leaf(&["a.test"]), ca.leaf(&["b.test"]));
    let (teal, _b, _g) = teal_with(&[("a", &a), ("b", &b)], "").await;
    let addr = teal.tls.unwrap();
    let cfg = client_config(&ca, &[H1], rustls::DEFAULT_VERSIONS);
    for (name, leaf) in [("a.test", &a), ("b.test", &b)] {
        let stream = connect(addr, name, cfg.clone()).await.unwrap();
        assert_eq!(presented(&stream), der(leaf), "{name}");
        let answer = get(addr, name, "/echo", cfg.clone()).await;
        assert_eq!(answer.status, 200);
    }
    for name in ["c.test", "127.0.0.1"] {
        let stream = connect(addr, name, any_name_config()).await.unwrap();
        assert_eq!(presented(&stream), der(&a), "{name} gets the default");
    }
}

/// ALPN h2 gets HTTP/2 and http/1.1 gets HTTP/1.1, each with the default route, preview routes
/// (prefix stripped) and `X-Forwarded-Proto: https`.
#[tokio::test]
async fn routing_and_preview_over_h2_and_http11() {
    let ca = TestCa::new();
    let (teal, _b, _g) = teal_with(&[("app", &ca.leaf(&["app.test"]))], "").await;
    let addr = teal.tls.unwrap();
    for (alpn, version) in [(H2, http::Version::HTTP_2), (H1, http::Version::HTTP_11)] {
        let cfg = client_config(&ca, &[alpn], rustls::DEFAULT_VERSIONS);
        let stream = connect(addr, "app.test", cfg.clone()).await.unwrap();
        assert_eq!(stream.get_ref().1.alpn_protocol(), Some(alpn));
        for (path, pool, upstream_path) in [
            ("/echo?x=1", "blue", "/echo?x=1"),
            ("/green/x?q=1", "green", "/x?q=1"),
            ("/blue/a/b/", "blue", "/a/b/"),
        ] {
            let answer = get(addr, "app.test", path, cfg.clone()).await;
            assert_eq!(answer.status, 200, "{path}: {}", answer.body);
            assert_eq!(answer.version, version, "{path}");
            let doc: serde_json::Value = serde_json::from_str(&answer.body).unwrap();
            assert_eq!(doc["pool"], pool, "{path} over {version:?}");
            assert_eq!(doc["path"], upstream_path, "{path} over {version:?}");
            assert_eq!(doc["headers"]["x-forwarded-proto"], "https");
        }
    }
}

/// `redirect_http`: the plain listener answers 308 to the same path and query over https://
/// on the TLS port, without HSTS (it means nothing over plain HTTP).
#[tokio::test]
async fn plain_listener_redirects_to_https() {
    let ca = TestCa::new();
    let extra = "redirect_http = true\nhsts = \"max-age=60\"";
    let (teal, blue, _g) = teal_with(&[("app", &ca.leaf(&["app.test"]))], extra).await;
    let reply = teal.get("/a/b?x=1&y=2").await;
    assert_eq!(reply.status, 308, "{}", reply.body);
    let port = teal.tls.unwrap().port();
    assert_eq!(
        reply.headers["location"],
        format!("https://127.0.0.1:{port}/a/b?x=1&y=2").as_str()
    );
    assert!(reply.headers.get("strict-transport-security").is_none());
    assert_eq!(blue.hits(), 0, "a redirect never reaches the upstream");
    // curl follows it to the TLS listener, trusting the test CA.
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    let out = tokio::process::Command::new("curl")
        .args([
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{url_effective}",
            "-L",
        ])
        .arg("--cacert")
        .arg(&ca_file)
        .args([
            "--resolve",
            &format!("app.test:{}:127.0.0.1", teal.proxy.port()),
        ])
        .args(["--resolve", &format!("app.test:{port}:127.0.0.1")])
        .arg(format!("http://app.test:{}/echo?z=3", teal.proxy.port()))
        .output()
        .await
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        said,
        format!("200 https://app.test:{port}/echo?z=3"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// With `[tls.acme]`, the challenge path is answered on the plain listener (404 for a token no
/// order is waiting on), not redirected; other paths still are.
#[tokio::test]
async fn acme_challenges_are_not_redirected() {
    let ca = TestCa::new();
    let extra = "redirect_http = true\n\n[tls.acme]\ndirectory = \"https://127.0.0.1:1/directory\"\ndomains = [\"app.test\"]\n";
    let (teal, _b, _g) = teal_with(&[("app", &ca.leaf(&["app.test"]))], extra).await;
    let reply = teal.get("/.well-known/acme-challenge/no-such-token").await;
    assert_eq!(reply.status, 404);
    assert_eq!(reply.body, "no such ACME challenge\n");
    assert_eq!(teal.get("/.well-known/other").await.status, 308);
}

/// HSTS is on every TLS response (the upstream's over HTTP/1.1 and HTTP/2, and teal's own 502)
/// and on none over plain HTTP.
#[tokio::test]
async fn hsts_on_tls_only() {
    let ca = TestCa::new();
    let blue = upstream("blue", "b1").await;
    let dir = tempfile::tempdir().unwrap();
    ca.leaf(&["app.test"]).write(dir.path(), "app");
    let pools = [
        ("blue", vec![blue.addr]),
        ("green", vec![dead_addr().await]),
    ];
    let tls = tls_table(&[("app.pem", "app.key")], "hsts = \"max-age=60\"");
    std::fs::write(dir.path().join("teal.toml"), config("blue", &pools, &tls)).unwrap();
    let teal = Teal::start_in(dir).await;
    let addr = teal.tls.unwrap();
    for alpn in [H1, H2] {
        let cfg = client_config(&ca, &[alpn], rustls::DEFAULT_VERSIONS);
        for (path, status) in [("/echo", 200), ("/green/x", 502)] {
            let answer = get(addr, "app.test", path, cfg.clone()).await;
            assert_eq!(answer.status, status, "{path}");
            assert_eq!(
                answer.headers["strict-transport-security"], "max-age=60",
                "{path} over {:?}",
                answer.version
            );
        }
    }
    for (path, status) in [("/echo", 200), ("/green/x", 502)] {
        let reply = teal.get(path).await;
        assert_eq!(reply.status, status, "{path}");
        assert!(
            reply.headers.get("strict-transport-security").is_none(),
            "{path}"
        );
    }
}

/// `/status` lists each certificate with its names, expiry, source and files; `/metrics` has
/// an expiry gauge per name, and passes promtool.
#[tokio::test]
async fn status_and_metrics_list_certificates() {
    let ca = TestCa::new();
    let (a, b) = (ca.leaf(&["a.test", "www.a.test"]), ca.leaf(&["b.test"]));
    let (teal, _b, _g) = teal_with(&[("a", &a), ("b", &b)], "").await;
    let status = teal.admin("GET", "/status", "", None).await.json();
    let certs = status["tls"]["certificates"].as_array().unwrap();
    assert_eq!(certs.len(), 2, "{status}");
    assert_eq!(
        certs[0]["names"],
        serde_json::json!(["a.test", "www.a.test"])
    );
    assert_eq!(certs[1]["names"], serde_json::json!(["b.test"]));
    assert_eq!(certs[0]["source"], "file");
    assert!(certs[0]["cert"].as_str().unwrap().ends_with("/a.pem"));
    assert!(certs[0]["key"].as_str().unwrap().ends_with("/a.key"));
    let days = certs[0]["days_left"].as_i64().unwrap();
    assert!((364..=365).contains(&days), "{days}");
    let expires = certs[0]["expires_unix"].as_i64().unwrap();
    let not_after = certs[0]["not_after"].as_str().unwrap();
    let parsed = humantime::parse_rfc3339(not_after).unwrap();
    let unix = parsed
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert_eq!(unix, expires);
    let metrics = teal.admin("GET", "/metrics", "", None).await.body;
    for name in ["a.test", "www.a.test"] {
        let line = format!("teal_tls_cert_expiry_seconds{{name=\"{name}\"}} {expires}");
        assert!(metrics.contains(&line), "no {line:?} in:\n{metrics}");
    }
    assert!(metrics.contains("teal_tls_cert_expiry_seconds{name=\"b.test\"}"));
    promtool_check(&metrics, &[]);
}

/// One client: new TLS connections (alternating HTTP/2 and HTTP/1.1), 25 requests on each,
/// until `done` or 80 connections (2000 requests). Returns the failures, described.
async fn client_loop(addr: SocketAddr, ca: Arc<TestCa>, done: Arc<AtomicBool>) -> Vec<String> {
    let per = 25;
    let mut failures = Vec::new();
    for round in 0..80 {
        if done.load(Ordering::Relaxed) {
            break;
        }
        let alpn = if round % 2 == 0 { H2 } else { H1 };
        let cfg = client_config(&ca, &[alpn], rustls::DEFAULT_VERSIONS);
        let stream = match connect(addr, "app.test", cfg).await {
            Ok(s) => s,
            Err(e) => {
                failures.push(format!("handshake: {e}"));
                continue;
            }
        };
        let io = TokioIo::new(stream);
        let request = || {
            Request::get("https://app.test/echo")
                .header("host", "app.test")
                .body(Full::new(Bytes::new()))
                .unwrap()
        };
        let mut statuses = Vec::new();
        if alpn == H2 {
            let (mut sender, conn) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                    .await
                    .unwrap();
            tokio::spawn(conn);
            for _ in 0..per {
                statuses.push(match sender.send_request(request()).await {
                    Ok(r) => r
                        .into_body()
                        .collect()
                        .await
                        .map(|_| ())
                        .map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                });
            }
        } else {
            let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
            tokio::spawn(conn);
            for _ in 0..per {
                let sent = async {
                    sender.ready().await?;
                    let r = sender.send_request(request()).await?;
                    let status = r.status();
                    r.into_body().collect().await?;
                    Ok::<_, hyper::Error>(status)
                };
                statuses.push(match sent.await {
                    Ok(s) if s == 200 => Ok(()),
                    Ok(s) => Err(format!("status {s}")),
                    Err(e) => Err(e.to_string()),
                });
            }
        }
        failures.extend(statuses.into_iter().filter_map(Result::err));
    }
    failures
}

/// What a new handshake for app.test presents.
async fn now_presented(addr: SocketAddr, ca: &TestCa) -> CertificateDer<'static> {
    let cfg = client_config(ca, &[H1], rustls::DEFAULT_VERSIONS);
    presented(&connect(addr, "app.test", cfg).await.unwrap())
}

/// The certificate and key are replaced (temporary file, then rename) while four clients send
/// requests (at most 8000) over new and kept-alive connections: no request fails, and new handshakes
/// present the new certificate within seconds. Broken replacements (a garbage key, the key of
/// another pair, an expired pair) are refused and the good certificate keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_files_replaced_under_load() {
    let ca = Arc::new(TestCa::new());
    let (old, new) = (ca.leaf(&["app.test"]), ca.leaf(&["app.test"]));
    let (teal, _b, _g) = teal_with(&[("app", &old)], "").await;
    let addr = teal.tls.unwrap();
    let dir = teal.path.parent().unwrap().to_path_buf();
    let (cert, key) = (dir.join("app.pem"), dir.join("app.key"));
    assert_eq!(now_presented(addr, &ca).await, der(&old));
    let done = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..4)
        .map(|_| tokio::spawn(client_loop(addr, ca.clone(), done.clone())))
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    replace(&cert, &new.cert_pem);
    replace(&key, &new.key_pem);
    assert_eventually!(
        now_presented(addr, &ca).await == der(&new),
        Duration::from_secs(5),
        "new handshakes still present the old certificate"
    );
    let other = ca.leaf(&["app.test"]);
    let expired = ca.leaf_with(&["app.test"], |p| {
        let now = std::time::SystemTime::now();
        p.not_before = (now - Duration::from_secs(3 * 86400)).into();
        p.not_after = (now - Duration::from_secs(86400)).into();
    });
    for (what, cert_pem, key_pem) in [
        ("a garbage key", &new.cert_pem, "garbage\n"),
        (
            "the key of another pair",
            &new.cert_pem,
            other.key_pem.as_str(),
        ),
        (
            "an expired pair",
            &expired.cert_pem,
            expired.key_pem.as_str(),
        ),
    ] {
        replace(&cert, cert_pem);
        replace(&key, key_pem);
        // Past the debounce and the grace a pair gets for its second file.
        tokio::time::sleep(Duration::from_millis(1800)).await;
        assert_eq!(now_presented(addr, &ca).await, der(&new), "after {what}");
        let status = teal.admin("GET", "/status", "", None).await.json();
        assert_eq!(
            status["tls"]["certificates"].as_array().unwrap().len(),
            1,
            "after {what}"
        );
    }
    // A good pair after the bad ones is taken.
    let last = ca.leaf(&["app.test"]);
    replace(&cert, &last.cert_pem);
    replace(&key, &last.key_pem);
    assert_eventually!(
        now_presented(addr, &ca).await == der(&last),
        Duration::from_secs(5),
        "a good pair after refused ones is not served"
    );
    done.store(true, Ordering::Relaxed);
    let loops = tokio::time::timeout(
        Duration::from_secs(120),
        futures_util::future::join_all(clients),
    )
    .await
    .expect("the clients finish");
    let failures: Vec<String> = loops.into_iter().flat_map(Result::unwrap).collect();
    assert!(
        failures.is_empty(),
        "{} failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
}

/// A config reload that names other files in `[[tls.certs]]` serves them.
#[tokio::test]
async fn config_reload_follows_the_certificate_list() {
    let ca = TestCa::new();
    let (a, b) = (ca.leaf(&["app.test"]), ca.leaf(&["app.test"]));
    let (teal, _b, _g) = teal_with(&[("a", &a)], "").await;
    let addr = teal.tls.unwrap();
    b.write(teal.path.parent().unwrap(), "b");
    let text = std::fs::read_to_string(&teal.path).unwrap();
    replace(
        &teal.path,
        &text.replace("a.pem", "b.pem").replace("a.key", "b.key"),
    );
    assert_eventually!(
        now_presented(addr, &ca).await == der(&b),
        Duration::from_secs(5),
        "the reloaded list is not served"
    );
}

/// Runs `teal check -c path` (30 s at most): whether it passed, its stdout and its stderr.
async fn teal_check(path: &Path) -> (bool, String, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_teal"))
        .arg("check")
        .arg("-c")
        .arg(path)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(30), out)
        .await
        .unwrap()
        .unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.success(), text(&out.stdout), text(&out.stderr))
}

/// `teal check` prints each certificate's names and expiry; a bad pair fails it, naming the
/// entry, the file and the reason.
#[tokio::test]
async fn teal_check_reports_certificates() {
    let ca = TestCa::new();
    let dir = tempfile::tempdir().unwrap();
    ca.leaf(&["a.test", "www.a.test"]).write(dir.path(), "a");
    let other = ca.leaf(&["b.test"]);
    let (_, b_key) = other.write(dir.path(), "b");
    let pools = [("blue", vec!["127.0.0.1:1".parse().unwrap()])];
    let path = dir.path().join("teal.toml");
    let run = |text: String| {
        std::fs::write(&path, text).unwrap();
        let path = path.clone();
        async move { teal_check(&path).await }
    };
    let (ok, stdout, stderr) = run(config(
        "blue",
        &pools,
        &tls_table(&[("a.pem", "a.key")], ""),
    ))
    .await;
    assert!(ok, "{stderr}");
    let a_pem = dir.path().join("a.pem");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    let head = format!(
        "tls.certs[0]: {}: a.test, www.a.test; expires ",
        a_pem.display()
    );
    assert!(lines[0].starts_with(&head), "{stdout}");
    assert!(
        lines[0].ends_with(" (364 days)") || lines[0].ends_with(" (365 days)"),
        "{stdout}"
    );
    assert_eq!(lines[1], "ok");
    // The key of another pair, and a file that is not PEM.
    std::fs::write(&b_key, &ca.leaf(&["c.test"]).key_pem).unwrap();
    std::fs::write(dir.path().join("junk.pem"), "not a certificate\n").unwrap();
    let tls = tls_table(
        &[
            ("a.pem", "a.key"),
            ("b.pem", "b.key"),
            ("junk.pem", "a.key"),
        ],
        "",
    );
    let (ok, stdout, stderr) = run(config("blue", &pools, &tls)).await;
    assert!(!ok, "{stdout}");
    assert!(stdout.starts_with(&head), "{stdout}");
    assert!(!stdout.contains("ok"), "{stdout}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(
        lines[0],
        format!(
            "tls.certs[1]: {}: does not match the certificate (the key of another pair?)",
            b_key.display()
        ),
        "{stderr}"
    );
    let junk = format!(
        "tls.certs[2]: {}: no CERTIFICATE block in the file (not PEM?)",
        dir.path().join("junk.pem").display()
    );
    assert_eq!(lines[1], junk, "{stderr}");
    assert!(!stderr.contains("panick"), "{stderr}");
}

/// A Kubernetes secret volume: `app.pem` links to `..data/app.pem`, `..data` to a timestamped
/// directory; an update makes a new directory, swaps `..data` by renaming a new link over it and
/// removes the old directory. The new pair is served.
#[tokio::test]
async fn kubernetes_style_symlink_swap() {
    use std::os::unix::fs::symlink;
    let ca = TestCa::new();
    let (old, new) = (ca.leaf(&["app.test"]), ca.leaf(&["app.test"]));
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir(root.join("..v1")).unwrap();
    old.write(&root.join("..v1"), "app");
    symlink("..v1", root.join("..data")).unwrap();
    symlink("..data/app.pem", root.join("app.pem")).unwrap();
    symlink("..data/app.key", root.join("app.key")).unwrap();
    let blue = upstream("blue", "b1").await;
    let pools = [("blue", vec![blue.addr])];
    let tls = tls_table(&[("app.pem", "app.key")], "");
    std::fs::write(root.join("teal.toml"), config("blue", &pools, &tls)).unwrap();
    let teal = Teal::start_in(dir).await;
    let addr = teal.tls.unwrap();
    let root = teal.path.parent().unwrap();
    assert_eq!(now_presented(addr, &ca).await, der(&old));
    std::fs::create_dir(root.join("..v2")).unwrap();
    new.write(&root.join("..v2"), "app");
    symlink("..v2", root.join("..data_tmp")).unwrap();
    std::fs::rename(root.join("..data_tmp"), root.join("..data")).unwrap();
    std::fs::remove_dir_all(root.join("..v1")).unwrap();
    assert_eventually!(
        now_presented(addr, &ca).await == der(&new),
        Duration::from_secs(5),
        "the swapped secret is not served"
    );
}

/// `teal check` with `[tls.acme]` says where its state is kept and whether it can be, and fails
/// when the state_dir is a file.
#[tokio::test]
async fn teal_check_reports_acme_state() {
    let ca = TestCa::new();
    let dir = tempfile::tempdir().unwrap();
    ca.leaf(&["app.test"]).write(dir.path(), "app");
    let pools = [("blue", vec!["127.0.0.1:1".parse().unwrap()])];
    let path = dir.path().join("teal.toml");
    let acme = "\n[tls.acme]\ndirectory = \"https://127.0.0.1:1/directory\"\ndomains = [\"app.test\", \"www.app.test\"]\nstate_dir = \"acme\"\n";
    std::fs::write(
        &path,
        config("blue", &pools, &tls_table(&[("app.pem", "app.key")], acme)),
    )
    .unwrap();
    let state_dir = dir.path().join("acme");
    let head = format!(
        "tls.acme: app.test, www.app.test: state_dir {}",
        state_dir.display()
    );
    let (ok, stdout, stderr) = teal_check(&path).await;
    assert!(ok, "{stderr}");
    let line = format!(
        "{head} does not exist yet (created at startup; the first certificate is ordered then)"
    );
    assert!(stdout.lines().any(|l| l == line), "{stdout}");
    std::fs::create_dir(&state_dir).unwrap();
    let (ok, stdout, _) = teal_check(&path).await;
    assert!(ok);
    let line = format!(
        "{head} exists and is writable, empty (the first certificate is ordered at startup)"
    );
    assert!(stdout.lines().any(|l| l == line), "{stdout}");
    std::fs::remove_dir(&state_dir).unwrap();
    std::fs::write(&state_dir, "a file").unwrap();
    let (ok, _, stderr) = teal_check(&path).await;
    assert!(!ok);
    eqnice(
        &stderr,
        &format!(
            "tls.acme.state_dir: {}: not a directory\n",
            state_dir.display()
        ),
    );
}

fn eqnice(got: &str, expected: &str) {
    assert!(got == expected, "\nexpected:\n{expected}\ngot:\n{got}");
}
