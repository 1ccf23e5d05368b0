//! The HTTP client the ACME protocol runs over: HTTPS only, trusting webpki-roots (Mozilla's
//! roots, compiled in) plus the certificates of `[tls.acme] ca_file`.
//!
//! instant-acme's own client trusts the platform's certificate store, which a `FROM scratch`
//! image does not have; compiled-in roots work anywhere, and `ca_file` adds a private or test CA
//! (pebble's, in the tests).

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use instant_acme::{BodyWrapper, BytesResponse, Error, HttpClient};
use rustls::RootCertStore;

/// How long connecting to the ACME server may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one request to the ACME server may take, its response body included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// The largest response body taken from the ACME server (a directory, an order or a
/// certificate chain is a few KiB): a server sending without end must not fill the memory.
const MAX_BODY: usize = 1024 * 1024;

/// hyper's pooled client over rustls, as instant-acme's [`HttpClient`].
#[derive(Clone)]
pub(super) struct AcmeHttp {
    client: Client<HttpsConnector<HttpConnector>, BodyWrapper<Bytes>>,
}

impl AcmeHttp {
    /// A client trusting webpki-roots and the certificates in `ca_file` (PEM, one or more). The
    /// error names the file and the reason.
    pub(super) fn new(ca_file: Option<&Path>) -> Result<AcmeHttp, String> {
        let mut roots = RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        if let Some(path) = ca_file {
            for cert in crate::tls::read_certs(path)? {
                roots
                    .add(cert)
                    .map_err(|e| format!("{}: not a usable CA certificate: {e}", path.display()))?;
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS client configuration: {e}"))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(CONNECT_TIMEOUT));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        Ok(AcmeHttp {
            client: Client::builder(TokioExecutor::new()).build(https),
        })
    }
}

impl HttpClient for AcmeHttp {
    fn request(
        &self,
        req: Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, Error>> + Send>> {
        let uri = req.uri().clone();
        let response = self.client.request(req);
        // The body is read here, within the timeout and the size limit: instant-acme reads it
        // later without either, so a server that stalls or never ends it would hold issuance
        // (and every renewal after it) forever.
        let whole = async move {
            let (parts, body) = response
                .await
                .map_err(|e| crate::error::error_chain(&e))?
                .into_parts();
            let body = http_body_util::Limited::new(body, MAX_BODY)
                .collect()
                .await
                .map_err(|e| format!("response body: {}", crate::error::error_chain(&*e)))?
                .to_bytes();
            Ok::<_, String>(http::Response::from_parts(parts, Full::new(body)))
        };
        Box::pin(async move {
            match tokio::time::timeout(REQUEST_TIMEOUT, whole).await {
                Ok(Ok(response)) => Ok(BytesResponse::from(response)),
                Ok(Err(e)) => Err(Error::Other(format!("{uri}: {e}").into())),
                Err(_) => Err(Error::Other(
                    format!("{uri}: no whole response within {REQUEST_TIMEOUT:?}").into(),
                )),
            }
        })
    }
}
