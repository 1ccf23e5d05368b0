//! Cluster mode (issue 17) against a secured etcd 3.4: HTTPS client URLs with client-certificate
//! auth (certificates from tests/support/tls.rs's `TestCa`), and etcd's own authentication
//! (users, roles, `auth enable`). Real etcd processes (tests/support/etcd.rs), real teal
//! instances in this process, and the real `teal check`.

mod support;

use std::path::Path;
use std::time::Duration;

use http::StatusCode;
use support::etcd::{
    cluster_status, cluster_status_until, cluster_table, etcd_serial, run_teal, serves_within,
    stored_active, switch, to, Etcd, EtcdTls, Options, Pools,
};
use support::tls::TestCa;
use support::*;

/// One cluster test at a time (each starts its own etcd and measures delays).
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A one-member etcd serving HTTPS with `--client-cert-auth`; the CA, the server's pair and a
/// client pair (the harness presents it) are written to `dir`.
async fn etcd_tls(ca: &TestCa, dir: &Path) -> Etcd {
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    let (cert, key) = ca.leaf(&["127.0.0.1", "localhost"]).write(dir, "server");
    let client = ca.leaf(&["teal-client"]).write(dir, "client");
    Etcd::with(Options {
        members: 1,
        tls: Some(EtcdTls {
            ca: dir.join("ca.pem"),
            cert,
            key,
            client_cert_auth: true,
            client: Some(client),
        }),
        args: Vec::new(),
    })
    .await
}

/// Starts two instances on `table`; waits until both are connected (else panics with
/// `connects`) and the first lists both.
async fn start_pair(table: &str, connects: &str) -> (Pools, Teal, Teal) {
    let pools = Pools::new().await;
    let a = Teal::start(&pools.config("blue", table)).await;
    let b = Teal::start(&pools.config("blue", table)).await;
    for t in [&a, &b] {
        cluster_status_until(t, Duration::from_secs(10), connects, |c| {
            c["connected"] == true
        })
        .await;
    }
    cluster_status_until(&a, Duration::from_secs(10), "A sees both instances", |c| {
        c["instances"].as_array().is_some_and(|i| i.len() == 2)
    })
    .await;
    (pools, a, b)
}

/// What an instance that cannot get into the store does: a switch answers 503 (returned), it
/// serves its file's blue, /healthz is 200, and nothing is stored under `prefix`.
async fn assert_refused_and_serving(teal: &Teal, etcd: &Etcd, prefix: &str) -> Reply {
    let r = switch(teal, "", &to("green")).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.body);
    assert_eq!(teal.text("/").await, "blue");
    let h = teal.admin("GET", "/healthz", "", None).await;
    assert_eq!(h.status, StatusCode::OK, "{}", h.body);
    // Nothing was written by the instance that could not connect.
    assert_eq!(etcd.get(&format!("{prefix}/state")).await, None);
    r
}

/// A switch through one instance on an HTTPS etcd with client-certificate auth (teal presents
/// `cert`/`key` and trusts `ca_file`) is committed to the store and served by the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn https_etcd_with_client_certificates_carries_a_switch_to_the_other_instance() {
    let Some(_serial) = etcd_serial(&SERIAL).await else {
        return;
    };
    let ca = TestCa::new();
    let certs = tempfile::tempdir().unwrap();
    let etcd = etcd_tls(&ca, certs.path()).await;
    assert!(etcd.endpoints()[0].starts_with("https://"));
    let prefix = "/teal/secure-tls";
    let d = certs.path().display();
    let table = cluster_table(
        &etcd.endpoints(),
        prefix,
        &format!("ca_file = \"{d}/ca.pem\"\ncert = \"{d}/client.pem\"\nkey = \"{d}/client.key\"\n"),
    );
    let (_pools, a, b) = start_pair(
        &table,
        "an instance with the client certificate connects to the HTTPS etcd",
    )
    .await;
    assert_eq!(b.text("/").await, "blue");

    let r = switch(&a, "", &to("green")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(a.text("/").await, "green");
    let served = serves_within(&b, "green", Duration::from_secs(5)).await;
    assert_eq!(
        served,
        "green",
        "5 s after a switch through A, B serves {served}; B's cluster status: {}",
        cluster_status(&b).await
    );
    assert_eq!(stored_active(&etcd, prefix).await, "green");
}

/// Without `cert`/`key`, an instance cannot get through `--client-cert-auth`: /status says
/// disconnected, a switch is refused with 503, and traffic goes on with the file's pool.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn https_etcd_without_a_client_certificate_leaves_the_instance_disconnected() {
    let Some(_serial) = etcd_serial(&SERIAL).await else {
        return;
    };
    let ca = TestCa::new();
    let certs = tempfile::tempdir().unwrap();
    let etcd = etcd_tls(&ca, certs.path()).await;
    let prefix = "/teal/secure-nocert";
    let d = certs.path().display();
    let pools = Pools::new().await;
    let table = cluster_table(
        &etcd.endpoints(),
        prefix,
        &format!("ca_file = \"{d}/ca.pem\"\n"),
    );
    let teal = Teal::start(&pools.config("blue", &table)).await;
    // Time for a few attempts.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let c = cluster_status(&teal).await;
    eprintln!("without a client certificate: {c}");
    assert_eq!(
        c["connected"], false,
        "connected to an etcd that wants a client certificate without one: {c}"
    );
    assert!(
        c["error"]
            .as_str()
            .is_some_and(|e| e.to_ascii_lowercase().contains("certificate")),
        "cluster.error does not say the certificate was refused: {c}"
    );
    let r = assert_refused_and_serving(&teal, &etcd, prefix).await;
    assert!(
        r.json()["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("cluster store unreachable")),
        "{}",
        r.body
    );
}

/// etcd with authentication on: `root`, and a user `teal` allowed to read and write under
/// `prefix` only. Returns the etcd.
async fn etcd_auth(prefix: &str) -> Etcd {
    let mut etcd = Etcd::single().await;
    etcd.enable_auth("root-secret").await;
    etcd.etcdctl_ok(&["user", "add", "teal", "--new-user-password", "teal-secret"]);
    etcd.etcdctl_ok(&["role", "add", "teal-rw"]);
    etcd.etcdctl_ok(&[
        "role",
        "grant-permission",
        "teal-rw",
        "readwrite",
        prefix,
        "--prefix=true",
    ]);
    etcd.etcdctl_ok(&["user", "grant-role", "teal", "teal-rw"]);
    // Authentication is on: a client without credentials is refused.
    let anonymous = std::process::Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={}", etcd.endpoints()[0]))
        .args(["put", &format!("{prefix}/x"), "y"])
        .output()
        .unwrap();
    assert!(
        !anonymous.status.success(),
        "an anonymous put went through with auth enabled"
    );
    etcd
}

/// `[cluster]` with `username` and `password_file` (the password written to `dir`).
fn auth_table(etcd: &Etcd, prefix: &str, dir: &Path, password: &str) -> String {
    let file = dir.join(format!("password-{password}"));
    std::fs::write(&file, format!("{password}\n")).unwrap();
    cluster_table(
        &etcd.endpoints(),
        prefix,
        &format!(
            "username = \"teal\"\npassword_file = \"{}\"\n",
            file.display()
        ),
    )
}

/// With authentication on, instances logged in as `teal` switch and see each other's switches.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn etcd_with_authentication_carries_switches_between_instances() {
    let Some(_serial) = etcd_serial(&SERIAL).await else {
        return;
    };
    let prefix = "/teal/secure-auth";
    let etcd = etcd_auth(prefix).await;
    let dir = tempfile::tempdir().unwrap();
    let table = auth_table(&etcd, prefix, dir.path(), "teal-secret");
    let (_pools, a, b) = start_pair(&table, "an instance with the right password connects").await;
    let r = switch(&a, "?wait=applied", &to("green")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.json()["applied"]["all"], true, "{}", r.body);
    let served = serves_within(&b, "green", Duration::from_secs(5)).await;
    assert_eq!(served, "green", "{}", cluster_status(&b).await);
    assert_eq!(stored_active(&etcd, prefix).await, "green");

    // And back, through the other one.
    let r = switch(&b, "", &to("blue")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let served = serves_within(&a, "blue", Duration::from_secs(5)).await;
    assert_eq!(served, "blue", "{}", cluster_status(&a).await);
    assert_eq!(stored_active(&etcd, prefix).await, "blue");
}

/// A wrong password: the instance stays disconnected, `/status` says why (`cluster.error`),
/// switches are refused with 503, and it keeps serving the file's pool.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_wrong_etcd_password_leaves_the_instance_disconnected_and_says_why() {
    let Some(_serial) = etcd_serial(&SERIAL).await else {
        return;
    };
    let prefix = "/teal/secure-badpw";
    let etcd = etcd_auth(prefix).await;
    let dir = tempfile::tempdir().unwrap();
    let pools = Pools::new().await;
    let table = auth_table(&etcd, prefix, dir.path(), "not-the-password");
    let teal = Teal::start(&pools.config("blue", &table)).await;
    let c = cluster_status_until(
        &teal,
        Duration::from_secs(10),
        "no cluster.error after a refused login",
        |c| !c["error"].is_null(),
    )
    .await;
    eprintln!("with a wrong password: {c}");
    assert_eq!(c["connected"], false, "{c}");
    let error = c["error"].as_str().unwrap_or_default().to_ascii_lowercase();
    assert!(
        error.contains("authenticat") && error.contains("password"),
        "cluster.error does not say the login was refused: {c}"
    );
    assert_refused_and_serving(&teal, &etcd, prefix).await;
}

/// `teal check` on a `[cluster]` whose password file does not exist exits 1 naming
/// `cluster.password_file`.
#[tokio::test]
async fn check_names_a_missing_password_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("teal.toml");
    let missing = dir.path().join("no-such-password");
    let pools = [("blue", vec!["127.0.0.1:1".parse().unwrap()])];
    let text = config(
        "blue",
        &pools,
        &cluster_table(
            &["http://127.0.0.1:1".to_string()],
            "/teal/shop",
            &format!(
                "username = \"teal\"\npassword_file = \"{}\"\n",
                missing.display()
            ),
        ),
    );
    std::fs::write(&path, &text).unwrap();
    let check = ["check", "-c", path.to_str().unwrap()];
    let (code, stdout, stderr) = run_teal(&check).await;
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    assert!(
        stderr.contains("cluster.password_file") && stderr.contains("no-such-password"),
        "want cluster.password_file and the path named in {stderr:?}"
    );
    assert!(stdout.is_empty(), "{stdout}");

    // The same file with the password present passes.
    std::fs::write(&missing, "secret\n").unwrap();
    let (code, _, stderr) = run_teal(&check).await;
    assert_eq!(code, Some(0), "{stderr}");
}
