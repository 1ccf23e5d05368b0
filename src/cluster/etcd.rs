//! The few etcd v3 calls teal makes, over etcd's JSON gateway (`/v3/...`) with the hyper client
//! teal already has: range, a compare-and-swap transaction, put with a lease, lease grant and
//! keep-alive, authenticate, and a watch whose answer streams one JSON object per line.
//!
//! The gateway speaks protobuf's JSON mapping: keys and values are base64, 64-bit integers are
//! strings, and zero values are left out.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use bytes::{Buf, Bytes, BytesMut};
use http::{header, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::config::ClusterConfig;

/// How long connecting to one etcd endpoint may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How long one unary call may take, its answer included.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);
/// The largest answer taken from etcd (teal's keys are a few hundred bytes each).
const MAX_ANSWER: usize = 4 * 1024 * 1024;
/// The longest line of a watch stream.
const MAX_WATCH_LINE: usize = 4 * 1024 * 1024;

/// Why an etcd call failed.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct EtcdError(pub String);

/// One key as etcd holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct Kv {
    /// The key.
    pub key: String,
    /// The value.
    pub value: Vec<u8>,
    /// The revision of its last change.
    pub mod_revision: i64,
}

/// What a watch stream delivers.
#[derive(Debug)]
pub enum WatchEvent {
    /// `kv` was written.
    Put(Kv),
    /// `key` was deleted (or its lease expired).
    Delete(String),
}

/// An etcd client over the JSON gateway, trying its endpoints in turn.
pub struct Etcd {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    endpoints: Vec<Uri>,
    /// The endpoint that answered last: calls start there.
    current: AtomicUsize,
    credentials: Option<(String, String)>,
    token: Mutex<Option<String>>,
}

impl Etcd {
    /// A client for `[cluster]`: reads the password file and the TLS files. The error names
    /// the file and the reason.
    pub fn new(config: &ClusterConfig) -> Result<Etcd, String> {
        let credentials = match (&config.username, &config.password_file) {
            (Some(user), Some(file)) => {
                let text = std::fs::read_to_string(file).map_err(|e| {
                    format!("cluster.password_file: cannot read {}: {e}", file.display())
                })?;
                Some((
                    user.clone(),
                    text.trim_end_matches(['\r', '\n']).to_string(),
                ))
            }
            _ => None,
        };
        Ok(Etcd {
            client: Client::builder(TokioExecutor::new()).build(connector(config)?),
            endpoints: config.etcd.clone(),
            current: AtomicUsize::new(0),
            credentials,
            token: Mutex::new(None),
        })
    }

    /// The endpoint calls go to first.
    pub fn endpoint(&self) -> String {
        let i = self.current.load(Ordering::Relaxed) % self.endpoints.len();
        self.endpoints[i].to_string()
    }

    /// Moves on to the next endpoint (after a broken watch or keep-alive).
    pub fn rotate(&self) {
        self.current.fetch_add(1, Ordering::Relaxed);
    }

    /// Gets a token for the configured user, if any; called at the start of every session.
    pub async fn authenticate(&self) -> Result<(), EtcdError> {
        let Some((name, password)) = &self.credentials else {
            return Ok(());
        };
        *self.token.lock().unwrap_or_else(|e| e.into_inner()) = None;
        let answer = self
            .call(
                "/v3/auth/authenticate",
                json!({ "name": name, "password": password }),
            )
            .await?;
        let token = answer["token"]
            .as_str()
            .ok_or_else(|| EtcdError("authenticate: no token in the answer".into()))?;
        *self.token.lock().unwrap_or_else(|e| e.into_inner()) = Some(token.to_string());
        Ok(())
    }

    /// Every key from `key` (alone, or with `prefix` every key under it), and the store's
    /// revision at the time of the read (linearizable).
    pub async fn range(&self, key: &str, prefix: bool) -> Result<(Vec<Kv>, i64), EtcdError> {
        let mut body = json!({ "key": B64.encode(key) });
        if prefix {
            body["range_end"] = json!(B64.encode(prefix_end(key)));
        }
        let answer = self.call("/v3/kv/range", body).await?;
        Ok((kvs(&answer["kvs"])?, revision(&answer)?))
    }

    /// Writes `value` at `key` if the key's last change is `expected` (0: the key does not
    /// exist). `Ok(Ok(revision))`: written at that revision; `Ok(Err(current))`: not written,
    /// the key as it is now.
    pub async fn swap(
        &self,
        key: &str,
        expected: i64,
        value: &[u8],
    ) -> Result<Result<i64, Option<Kv>>, EtcdError> {
        let k = B64.encode(key);
        let body = json!({
            "compare": [{ "key": k, "target": "MOD", "result": "EQUAL", "mod_revision": expected.to_string() }],
            "success": [{ "request_put": { "key": k, "value": B64.encode(value) } }],
            "failure": [{ "request_range": { "key": k } }],
        });
        let answer = self.call("/v3/kv/txn", body).await?;
        if answer["succeeded"].as_bool() == Some(true) {
            return Ok(Ok(revision(&answer)?));
        }
        let current = kvs(&answer["responses"][0]["response_range"]["kvs"])?;
        Ok(Err(current.into_iter().next()))
    }

    /// Writes `value` at `key`, bound to `lease` (0: none).
    pub async fn put(&self, key: &str, value: &[u8], lease: i64) -> Result<i64, EtcdError> {
        let mut body = json!({ "key": B64.encode(key), "value": B64.encode(value) });
        if lease != 0 {
            body["lease"] = json!(lease.to_string());
        }
        revision(&self.call("/v3/kv/put", body).await?)
    }

    /// A new lease of `ttl` seconds.
    pub async fn grant(&self, ttl: u64) -> Result<i64, EtcdError> {
        let answer = self
            .call("/v3/lease/grant", json!({ "TTL": ttl.to_string() }))
            .await?;
        int(&answer["ID"]).ok_or_else(|| EtcdError("lease grant: no ID in the answer".into()))
    }

    /// Renews `lease`; an error when it is gone (expired while etcd was unreachable).
    pub async fn keep_alive(&self, lease: i64) -> Result<(), EtcdError> {
        let answer = self
            .call("/v3/lease/keepalive", json!({ "ID": lease.to_string() }))
            .await?;
        match int(&answer["result"]["TTL"]) {
            Some(ttl) if ttl > 0 => Ok(()),
            _ => Err(EtcdError(format!("lease {lease:x} expired"))),
        }
    }

    /// Revokes `lease` and with it the keys bound to it (at shutdown).
    pub async fn revoke(&self, lease: i64) -> Result<(), EtcdError> {
        self.call("/v3/lease/revoke", json!({ "ID": lease.to_string() }))
            .await
            .map(drop)
    }

    /// Watches every key under `prefix` from revision `from` on the current endpoint. The
    /// stream ends (`Ok(None)` from [`Watch::next`] or an error) when etcd goes away or the
    /// revision was compacted; the caller reads the state again and watches anew.
    pub async fn watch(&self, prefix: &str, from: i64) -> Result<Watch, EtcdError> {
        let body = json!({ "create_request": {
            "key": B64.encode(prefix),
            "range_end": B64.encode(prefix_end(prefix)),
            "start_revision": from.to_string(),
        }});
        let uri = self.uri(self.current.load(Ordering::Relaxed), "/v3/watch")?;
        let res =
            tokio::time::timeout(CALL_TIMEOUT, self.client.request(self.request(uri, &body)?))
                .await
                .map_err(|_| EtcdError(format!("watch: no answer within {CALL_TIMEOUT:?}")))?
                .map_err(|e| EtcdError(format!("watch: {}", crate::error::error_chain(&e))))?;
        if res.status() != StatusCode::OK {
            return Err(EtcdError(format!("watch: etcd answered {}", res.status())));
        }
        let mut watch = Watch {
            body: res.into_body(),
            buf: BytesMut::new(),
        };
        // The first message confirms the watch was created.
        match watch.message().await? {
            Some(m) if m["created"].as_bool() == Some(true) => Ok(watch),
            Some(m) => Err(EtcdError(format!("watch not created: {m}"))),
            None => Err(EtcdError("watch: the stream ended at once".into())),
        }
    }

    /// One unary call: POST `path` with `body`, on the current endpoint, then on each other one
    /// in turn while the endpoint cannot be reached or has no leader.
    async fn call(&self, path: &str, body: Value) -> Result<Value, EtcdError> {
        let start = self.current.load(Ordering::Relaxed);
        let mut last = EtcdError("no etcd endpoint".into());
        for i in 0..self.endpoints.len() {
            let at = start.wrapping_add(i);
            match self.call_at(at, path, &body).await {
                Ok(v) => {
                    self.current
                        .store(at % self.endpoints.len(), Ordering::Relaxed);
                    return Ok(v);
                }
                Err((e, retry)) => {
                    last = e;
                    if !retry {
                        break;
                    }
                }
            }
        }
        Err(last)
    }

    /// [`Etcd::call`] on endpoint `at`; the error says whether another endpoint may do better.
    async fn call_at(
        &self,
        at: usize,
        path: &str,
        body: &Value,
    ) -> Result<Value, (EtcdError, bool)> {
        let uri = self.uri(at, path).map_err(|e| (e, false))?;
        let name = uri.authority().map(|a| a.to_string()).unwrap_or_default();
        let req = self.request(uri, body).map_err(|e| (e, false))?;
        let whole = async {
            let res = self.client.request(req).await.map_err(|e| {
                (
                    EtcdError(format!("{name}: {}", crate::error::error_chain(&e))),
                    true,
                )
            })?;
            let status = res.status();
            let bytes = Limited::new(res.into_body(), MAX_ANSWER)
                .collect()
                .await
                .map_err(|e| (EtcdError(format!("{name}: answer: {e}")), true))?
                .to_bytes();
            let value: Value = serde_json::from_slice(&bytes)
                .map_err(|e| (EtcdError(format!("{name}: answer not JSON: {e}")), true))?;
            if status != StatusCode::OK {
                let reason = value["error"]
                    .as_str()
                    .or(value["message"].as_str())
                    .unwrap_or("");
                return Err((
                    EtcdError(format!("{name}: {status} {reason}")),
                    status.is_server_error(),
                ));
            }
            Ok(value)
        };
        tokio::time::timeout(CALL_TIMEOUT, whole)
            .await
            .unwrap_or_else(|_| {
                Err((
                    EtcdError(format!("{name}: no answer within {CALL_TIMEOUT:?}")),
                    true,
                ))
            })
    }

    fn uri(&self, at: usize, path: &str) -> Result<Uri, EtcdError> {
        let base = &self.endpoints[at % self.endpoints.len()];
        let scheme = base.scheme_str().unwrap_or("http");
        let authority = base.authority().map(|a| a.as_str()).unwrap_or_default();
        format!("{scheme}://{authority}{path}")
            .parse()
            .map_err(|e| EtcdError(format!("{base}: {e}")))
    }

    fn request(&self, uri: Uri, body: &Value) -> Result<Request<Full<Bytes>>, EtcdError> {
        let mut req = Request::post(uri).header(header::CONTENT_TYPE, "application/json");
        if let Some(token) = &*self.token.lock().unwrap_or_else(|e| e.into_inner()) {
            req = req.header(header::AUTHORIZATION, token.as_str());
        }
        req.body(Full::new(Bytes::from(body.to_string())))
            .map_err(|e| EtcdError(format!("request: {e}")))
    }
}

/// A watch stream: one JSON object per line, each `{"result": WatchResponse}`.
pub struct Watch {
    body: Incoming,
    buf: BytesMut,
}

impl Watch {
    /// The next events and the revision they bring the watcher to; `None` when the stream ended.
    /// A compaction or cancellation is an error: read the state again.
    pub async fn next(&mut self) -> Result<Option<(Vec<WatchEvent>, i64)>, EtcdError> {
        let Some(m) = self.message().await? else {
            return Ok(None);
        };
        if let Some(compacted) = int(&m["compact_revision"]).filter(|&r| r > 0) {
            return Err(EtcdError(format!(
                "watch: revisions up to {compacted} were compacted"
            )));
        }
        if m["canceled"].as_bool() == Some(true) {
            return Err(EtcdError(format!("watch canceled: {}", m["cancel_reason"])));
        }
        let rev = revision(&m)?;
        let mut events = Vec::new();
        for e in m["events"].as_array().into_iter().flatten() {
            let kv = kv(&e["kv"])?;
            if e["type"].as_str() == Some("DELETE") {
                events.push(WatchEvent::Delete(kv.key));
            } else {
                events.push(WatchEvent::Put(kv));
            }
        }
        Ok(Some((events, rev)))
    }

    /// The next line's `result` object (an `error` object is an error).
    async fn message(&mut self) -> Result<Option<Value>, EtcdError> {
        loop {
            if let Some(at) = self.buf.iter().position(|&b| b == b'\n') {
                let line = self.buf.split_to(at + 1);
                let v: Value = serde_json::from_slice(&line)
                    .map_err(|e| EtcdError(format!("watch: not JSON: {e}")))?;
                if !v["error"].is_null() {
                    return Err(EtcdError(format!("watch: {}", v["error"])));
                }
                return Ok(Some(v["result"].clone()));
            }
            if self.buf.len() > MAX_WATCH_LINE {
                return Err(EtcdError("watch: a line over 4 MiB".into()));
            }
            match self.body.frame().await {
                None => return Ok(None),
                Some(Err(e)) => {
                    return Err(EtcdError(format!(
                        "watch: {}",
                        crate::error::error_chain(&e)
                    )))
                }
                Some(Ok(frame)) => {
                    if let Ok(mut data) = frame.into_data() {
                        while data.has_remaining() {
                            let chunk = data.chunk();
                            self.buf.extend_from_slice(chunk);
                            let n = chunk.len();
                            data.advance(n);
                        }
                    }
                }
            }
        }
    }
}

/// The end of the range of every key that starts with `prefix`: its last byte plus one.
fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

fn int(v: &Value) -> Option<i64> {
    match v {
        Value::String(s) => s.parse().ok(),
        Value::Number(n) => n.as_i64(),
        Value::Null => Some(0),
        _ => None,
    }
}

fn revision(answer: &Value) -> Result<i64, EtcdError> {
    int(&answer["header"]["revision"]).ok_or_else(|| EtcdError("no revision in the answer".into()))
}

fn kvs(v: &Value) -> Result<Vec<Kv>, EtcdError> {
    v.as_array().into_iter().flatten().map(kv).collect()
}

fn kv(v: &Value) -> Result<Kv, EtcdError> {
    #[derive(Deserialize)]
    struct Raw {
        key: String,
        #[serde(default)]
        value: String,
        #[serde(default)]
        mod_revision: Option<Value>,
    }
    let raw: Raw =
        serde_json::from_value(v.clone()).map_err(|e| EtcdError(format!("a key: {e}")))?;
    let key = B64
        .decode(&raw.key)
        .ok()
        .and_then(|k| String::from_utf8(k).ok())
        .ok_or_else(|| EtcdError("a key that is not base64 UTF-8".into()))?;
    let value = B64
        .decode(&raw.value)
        .map_err(|e| EtcdError(format!("{key}: value not base64: {e}")))?;
    let mod_revision = raw.mod_revision.as_ref().and_then(int).unwrap_or(0);
    Ok(Kv {
        key,
        value,
        mod_revision,
    })
}

/// HTTP, or HTTPS trusting webpki-roots plus `ca_file`, with the client certificate if given.
fn connector(config: &ClusterConfig) -> Result<HttpsConnector<HttpConnector>, String> {
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if let Some(path) = &config.ca_file {
        for cert in crate::tls::read_certs(path).map_err(|e| format!("cluster.ca_file: {e}"))? {
            roots.add(cert).map_err(|e| {
                format!(
                    "cluster.ca_file: {}: not a usable CA certificate: {e}",
                    path.display()
                )
            })?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS client configuration: {e}"))?
        .with_root_certificates(roots);
    let tls = match (&config.cert, &config.key) {
        (Some(cert), Some(key)) => {
            let (certs, key) =
                crate::tls::client_pair(cert, key).map_err(|e| format!("cluster.cert: {e}"))?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| format!("cluster.cert: {e}"))?
        }
        _ => builder.with_no_client_auth(),
    };
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(CONNECT_TIMEOUT));
    http.set_nodelay(true);
    Ok(hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_ends() {
        assert_eq!(prefix_end("/teal/"), b"/teal0".to_vec());
        assert_eq!(prefix_end("a\u{7f}"), b"a\x80".to_vec());
    }

    #[test]
    fn keys_from_the_gateway() {
        let v =
            json!({"key": B64.encode("/t/state"), "value": B64.encode("x"), "mod_revision": "7"});
        let kv = kv(&v).unwrap();
        assert_eq!(
            (kv.key.as_str(), kv.value.as_slice(), kv.mod_revision),
            ("/t/state", &b"x"[..], 7)
        );
        assert!(super::kv(&json!({"key": "!!"})).is_err());
    }
}
