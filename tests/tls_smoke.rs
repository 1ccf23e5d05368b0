//! The HTTPS listener's basics, end to end: a certificate made here, HTTP/1.1 and HTTP/2 chosen
//! by ALPN, `X-Forwarded-Proto: https` at the upstream.

mod support;

use support::tls::{client_config, get, tls_table, TestCa};
use support::{blue_green, config, upstream, Teal};

#[tokio::test]
async fn both_protocols_over_tls() {
    let ca = TestCa::new();
    let blue = upstream("blue", "b1").await;
    let green = upstream("green", "g1").await;
    let dir = tempfile::tempdir().unwrap();
    ca.leaf(&["app.test"]).write(dir.path(), "app");
    let text = config(
        "blue",
        &blue_green(&blue, &green),
        &tls_table(&[("app.pem", "app.key")], "hsts = \"max-age=60\""),
    );
    std::fs::write(dir.path().join("teal.toml"), text).unwrap();
    let teal = Teal::start_in(dir).await;
    let addr = teal.tls.unwrap();
    for alpn in [&b"h2"[..], &b"http/1.1"[..]] {
        let cfg = client_config(&ca, &[alpn], rustls::DEFAULT_VERSIONS);
        let answer = get(addr, "app.test", "/echo", cfg).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        let doc: serde_json::Value = serde_json::from_str(&answer.body).unwrap();
        assert_eq!(doc["pool"], "blue");
        assert_eq!(doc["headers"]["x-forwarded-proto"], "https", "{doc}");
        assert_eq!(answer.headers["strict-transport-security"], "max-age=60");
        let expected = if alpn == b"h2" {
            http::Version::HTTP_2
        } else {
            http::Version::HTTP_11
        };
        assert_eq!(answer.version, expected);
    }
}
