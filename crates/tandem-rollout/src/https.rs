//! An HTTPS client for the actuators that talk to services outside
//! Tandem: the Kubernetes API server (`kube_actuator`) and Cloudflare's
//! API (`layers::CloudflareLayer`). rustls with the `ring` provider, the
//! one TLS stack of the build (tandem-conn's listeners and upstream
//! connector use the same); HTTP/1.1 from hyper.
//!
//! Trust: CA certificates from PEM bytes (a kubeconfig's
//! `certificate-authority-data`), from a PEM file, or the system's roots
//! (Debian's bundle at [`SYSTEM_ROOTS`]); optionally a client certificate
//! and key (PEM bytes). Every request is bounded by one timeout covering
//! connect, handshake, answer and body, and by a body limit.
//!
//! One connection per request, no pool: the actuators send a request per
//! weight change or per readiness poll, so a handshake each time costs
//! nothing that matters and no idle connection outlives a call. Errors
//! name the URL, never a header (the bearer tokens stay out of them).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::net::TcpStream;

/// Debian's bundle of the system's trusted CA certificates
/// (`ca-certificates`), used when no CA is given.
pub const SYSTEM_ROOTS: &str = "/etc/ssl/certs/ca-certificates.crt";
/// Largest answer body read (a Kubernetes pod list is the largest).
pub const MAX_BODY_BYTES: usize = 16 << 20;

/// The CA certificates a server's certificate must chain to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Roots {
    /// [`SYSTEM_ROOTS`].
    System,
    /// A PEM file of CA certificates.
    File(PathBuf),
    /// PEM bytes of CA certificates.
    Pem(Vec<u8>),
}

/// A client certificate chain and its private key, PEM.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientAuth {
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
}

impl std::fmt::Debug for ClientAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("ClientAuth").finish_non_exhaustive()
    }
}

/// Why an HTTPS request or its setup failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HttpsError {
    /// The TLS settings cannot be used; `field` names where they came
    /// from (`clusters[aks].cluster.certificate-authority-data`).
    #[error("{field}: {message}")]
    Config { field: String, message: String },
    /// Not an `https://host[:port]/…` URL.
    #[error("{url}: {why}")]
    Url { url: String, why: String },
    /// The TLS handshake failed: the server's certificate does not chain
    /// to the trusted CAs or does not name the host, or the server
    /// refused the client certificate.
    #[error("{url}: TLS handshake failed: {cause}")]
    Tls { url: String, cause: String },
    /// No whole answer: connection refused or reset, or the timeout.
    #[error("{url}: unreachable: {cause}")]
    Unreachable { url: String, cause: String },
}

/// ring, named explicitly (no process-wide default is installed or read);
/// see tandem-conn's `tls` for why ring and not aws-lc-rs.
#[allow(deprecated)]
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certs(field: &str, what: &str, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, HttpsError> {
    let fail = |message: String| HttpsError::Config {
        field: field.to_owned(),
        message,
    };
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| fail(format!("{what}: not PEM certificates: {e}")))?;
    if certs.is_empty() {
        return Err(fail(format!("{what}: no PEM certificate in it")));
    }
    Ok(certs)
}

fn root_store(roots: &Roots, field: &str) -> Result<RootCertStore, HttpsError> {
    let fail = |message: String| HttpsError::Config {
        field: field.to_owned(),
        message,
    };
    let read = |p: &Path| std::fs::read(p).map_err(|e| fail(format!("{}: {e}", p.display())));
    let mut store = RootCertStore::empty();
    match roots {
        Roots::System => {
            let p = Path::new(SYSTEM_ROOTS);
            let (added, _) =
                store.add_parsable_certificates(certs(field, &p.display().to_string(), &read(p)?)?);
            if added == 0 {
                return Err(fail(format!("{SYSTEM_ROOTS}: no usable CA certificate")));
            }
        }
        Roots::File(p) => {
            for c in certs(field, &p.display().to_string(), &read(p)?)? {
                store.add(c).map_err(|e| {
                    fail(format!("{}: not a usable CA certificate: {e}", p.display()))
                })?;
            }
        }
        Roots::Pem(pem) => {
            for c in certs(field, "the CA data", pem)? {
                store
                    .add(c)
                    .map_err(|e| fail(format!("not a usable CA certificate: {e}")))?;
            }
        }
    }
    Ok(store)
}

/// The client: a TLS config and a timeout. Cheap to clone.
#[derive(Clone)]
pub struct Https {
    config: Arc<ClientConfig>,
    timeout: Duration,
}

impl std::fmt::Debug for Https {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Https")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Https {
    /// A client trusting `roots`, presenting `client` when given, whose
    /// every request completes within `timeout`. Errors name `field` (and
    /// `field` + `.cert` / `.key` for the client certificate).
    pub fn new(
        roots: &Roots,
        client: Option<&ClientAuth>,
        field: &str,
        timeout: Duration,
    ) -> Result<Https, HttpsError> {
        let store = root_store(roots, field)?;
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| HttpsError::Config {
                field: field.to_owned(),
                message: e.to_string(),
            })?
            .with_root_certificates(store);
        let mut config = match client {
            None => builder.with_no_client_auth(),
            Some(c) => {
                let cert_field = format!("{field}.cert");
                let chain = certs(&cert_field, "the client certificate", &c.cert_pem)?;
                let key =
                    PrivateKeyDer::from_pem_slice(&c.key_pem).map_err(|e| HttpsError::Config {
                        field: format!("{field}.key"),
                        message: format!("no usable PEM private key: {e}"),
                    })?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| HttpsError::Config {
                        field: format!("{field}.key"),
                        message: format!("the key does not fit the client certificate: {e}"),
                    })?
            }
        };
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Https {
            config: Arc::new(config),
            timeout,
        })
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Sends `req` (an absolute `https://` URI, headers and body as
    /// built) and returns the status and the whole body, within the
    /// timeout.
    pub async fn send(
        &self,
        req: http::Request<Vec<u8>>,
    ) -> Result<(StatusCode, Bytes), HttpsError> {
        let (mut parts, body) = req.into_parts();
        let url = parts.uri.to_string();
        let bad = |why: &str| HttpsError::Url {
            url: url.clone(),
            why: why.to_owned(),
        };
        if parts.uri.scheme_str() != Some("https") {
            return Err(bad("only https:// is sent by this client"));
        }
        let authority = parts
            .uri
            .authority()
            .cloned()
            .ok_or_else(|| bad("no host"))?;
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = authority.port_u16().unwrap_or(443);
        let name = ServerName::try_from(host.clone())
            .map_err(|e| bad(&format!("{host:?} is not a name to verify: {e}")))?;
        // HTTP/1.1 to the origin: the path in the request line, the
        // authority in Host.
        let path = parts
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned();
        parts.uri = path
            .parse::<Uri>()
            .map_err(|e| bad(&format!("path: {e}")))?;
        parts.headers.insert(
            header::HOST,
            header::HeaderValue::from_str(authority.as_str()).map_err(|_| bad("host"))?,
        );
        let req = http::Request::from_parts(parts, Full::new(Bytes::from(body)));
        let unreachable = |cause: String| HttpsError::Unreachable {
            url: url.clone(),
            cause,
        };
        let work = async {
            let tcp = TcpStream::connect((host.as_str(), port))
                .await
                .map_err(|e| unreachable(format!("connect: {e}")))?;
            let _ = tcp.set_nodelay(true);
            let tls = tokio_rustls::TlsConnector::from(Arc::clone(&self.config))
                .connect(name, tcp)
                .await
                .map_err(|e| HttpsError::Tls {
                    url: url.clone(),
                    cause: e.to_string(),
                })?;
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
                .await
                .map_err(|e| unreachable(tandem_control::client::error_chain(&e)))?;
            // The connection is driven here, beside the exchange, not in a
            // task of its own: it makes progress whichever thread polls the
            // call, and nothing outlives it (it ends once the exchange
            // drops its sender, or with the timeout).
            let exchange = async move {
                let resp = sender
                    .send_request(req)
                    .await
                    .map_err(|e| unreachable(tandem_control::client::error_chain(&e)))?;
                let status = resp.status();
                let body = Limited::new(resp.into_body(), MAX_BODY_BYTES)
                    .collect()
                    .await
                    .map_err(|e| unreachable(format!("reading the answer: {e}")))?
                    .to_bytes();
                drop(sender);
                Ok((status, body))
            };
            let (r, _) = tokio::join!(exchange, conn);
            r
        };
        match tokio::time::timeout(self.timeout, work).await {
            Ok(r) => r,
            Err(_) => Err(unreachable(format!(
                "no whole answer within {} ms",
                self.timeout.as_millis()
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unusable_trust_settings_name_their_field() {
        let t = Duration::from_secs(1);
        let e = Https::new(&Roots::Pem(b"not pem".to_vec()), None, "ca", t).unwrap_err();
        assert!(
            matches!(&e, HttpsError::Config { field, .. } if field == "ca"),
            "{e}"
        );
        let e = Https::new(
            &Roots::File(PathBuf::from("/nonexistent/ca.pem")),
            None,
            "users[u].user",
            t,
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("users[u].user: /nonexistent/ca.pem"),
            "{e}"
        );
        // The system bundle is there on Debian and usable.
        if Path::new(SYSTEM_ROOTS).exists() {
            Https::new(&Roots::System, None, "system", t).expect("system roots");
        }
    }
}
