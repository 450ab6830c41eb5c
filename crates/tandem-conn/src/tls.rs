//! TLS for the scaffold's listeners and for the edge's connections to its
//! nodes, with rustls (the `ring` provider, named explicitly; no process
//! default is installed or read).
//!
//! - [`ServerTls`]: a listener's certificate and key (PEM files), offered
//!   with ALPN `h2` and `http/1.1`, and optionally a CA whose client
//!   certificates are required (mutual TLS). [`ServerTls::reload`] reads
//!   the files again and, when they make a usable config, new handshakes
//!   use it; open connections keep the session they have. A file that does
//!   not parse, a key that does not match the certificate, or a
//!   certificate already expired keeps the old config and says why.
//! - [`ClientTls`] and [`Connector`]: connections to upstreams verified
//!   against a CA file, optionally presenting a client certificate; the
//!   connector plugs into hyper-util's pooled client. Clones share one
//!   config, so [`ClientTls::reload`] reaches every connector.
//! - [`PeerCert`]: the verified client certificate of a connection, put
//!   in every request's extensions by the server (the edge's admin API
//!   logs its subject).

use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::Uri;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::TokioIo;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::net::TcpStream;

pub use crate::x509::{cert_info, CertInfo};

/// ALPN names the servers offer, preferred first.
pub const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// A TLS file or setting that cannot be used; `field` is the config's
/// dotted name (`tls.cert`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct TlsError {
    pub field: String,
    pub message: String,
}

/// rustls 0.23.48 marks ring's provider deprecated because ring has no
/// post-quantum key exchange (X25519MLKEM768, which aws-lc-rs has). The
/// choice is deliberate: ring builds with cc alone and quickly on 2 cores,
/// and X25519 key exchange protects today's sessions; moving to aws-lc-rs
/// is this one function and the workspace's feature flags.
#[allow(deprecated)]
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// The certificate chain of a PEM file (leaf first).
fn read_certs(field: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let fail = |message: String| TlsError {
        field: field.into(),
        message,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| fail(format!("{}: {e}", path.display())))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| fail(format!("{}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(fail(format!(
            "{}: no PEM certificate in the file",
            path.display()
        )));
    }
    Ok(certs)
}

fn read_key(field: &str, path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| TlsError {
        field: field.into(),
        message: format!("{}: no usable PEM private key: {e}", path.display()),
    })
}

fn read_roots(field: &str, path: &Path) -> Result<Arc<RootCertStore>, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in read_certs(field, path)? {
        roots.add(cert).map_err(|e| TlsError {
            field: field.into(),
            message: format!("{}: not a usable CA certificate: {e}", path.display()),
        })?;
    }
    Ok(Arc::new(roots))
}

/// The leaf's fields, refusing a certificate that is already expired.
fn leaf_info(field: &str, path: &Path, leaf: &CertificateDer<'_>) -> Result<CertInfo, TlsError> {
    let info = cert_info(leaf).ok_or_else(|| TlsError {
        field: field.into(),
        message: format!("{}: the first certificate cannot be read", path.display()),
    })?;
    if info.not_after < now_unix() {
        return Err(TlsError {
            field: field.into(),
            message: format!(
                "{}: the certificate (serial {}) expired at {} (Unix seconds)",
                path.display(),
                info.serial,
                info.not_after
            ),
        });
    }
    Ok(info)
}

/// The files of a listener's TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerFiles {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// PEM CA certificates; when given, every client must present a
    /// certificate issued by one of them.
    pub client_ca: Option<PathBuf>,
    /// The config section the files come from, for errors (`tls`).
    pub section: String,
}

/// A listener's TLS config, replaceable while connections are open.
#[derive(Debug)]
pub struct ServerTls {
    files: ServerFiles,
    current: RwLock<(Arc<ServerConfig>, CertInfo)>,
}

impl ServerTls {
    /// Reads the files and builds the config.
    pub fn load(files: ServerFiles) -> Result<Arc<ServerTls>, TlsError> {
        let built = build_server(&files)?;
        Ok(Arc::new(ServerTls {
            files,
            current: RwLock::new(built),
        }))
    }

    /// Reads the files again; on success new handshakes use them and the
    /// new certificate is returned, else the old config stays.
    pub fn reload(&self) -> Result<CertInfo, TlsError> {
        let built = build_server(&self.files)?;
        let info = built.1.clone();
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = built;
        Ok(info)
    }

    /// The certificate new handshakes get.
    pub fn cert(&self) -> CertInfo {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .1
            .clone()
    }

    /// Whether clients must present a certificate.
    pub fn requires_client_cert(&self) -> bool {
        self.files.client_ca.is_some()
    }

    pub(crate) fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        let cfg = Arc::clone(&self.current.read().unwrap_or_else(|p| p.into_inner()).0);
        tokio_rustls::TlsAcceptor::from(cfg)
    }

    /// The JSON log line of a reload's outcome.
    pub fn reload_log_line(&self, listener: &str, r: &Result<CertInfo, TlsError>) -> String {
        match r {
            Ok(c) => format!(
                "{{\"msg\":\"tls certificate reloaded\",\"listener\":{listener:?},\"serial\":{:?},\"subject\":{:?},\"not_after\":{}}}",
                c.serial, c.subject, c.not_after
            ),
            Err(e) => format!(
                "{{\"level\":\"error\",\"msg\":\"tls reload refused, the previous certificate stays\",\"listener\":{listener:?},\"error\":{:?},\"serial_kept\":{:?}}}",
                e.to_string(),
                self.cert().serial
            ),
        }
    }
}

fn build_server(files: &ServerFiles) -> Result<(Arc<ServerConfig>, CertInfo), TlsError> {
    let s = &files.section;
    let (cert_field, key_field) = (format!("{s}.cert"), format!("{s}.key"));
    let chain = read_certs(&cert_field, &files.cert)?;
    let info = leaf_info(&cert_field, &files.cert, &chain[0])?;
    let key = read_key(&key_field, &files.key)?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError {
            field: s.clone(),
            message: e.to_string(),
        })?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let field = format!("{s}.client_ca");
            let roots = read_roots(&field, ca)?;
            let verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(roots, provider())
                    .build()
                    .map_err(|e| TlsError {
                        field,
                        message: format!("{}: {e}", ca.display()),
                    })?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut cfg = builder.with_single_cert(chain, key).map_err(|e| TlsError {
        field: key_field,
        message: format!(
            "{} does not fit the certificate in {}: {e}",
            files.key.display(),
            files.cert.display()
        ),
    })?;
    cfg.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    Ok((Arc::new(cfg), info))
}

/// The verified certificate a client presented, in each request's
/// extensions (only on listeners that require one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerCert {
    pub subject: String,
    pub serial: String,
}

/// The client certificate of an accepted TLS connection, if any.
pub(crate) fn peer_cert(conn: &rustls::ServerConnection) -> Option<PeerCert> {
    let leaf = conn.peer_certificates()?.first()?;
    let info = cert_info(leaf)?;
    Some(PeerCert {
        subject: info.subject,
        serial: info.serial,
    })
}

/// The files of TLS to upstreams.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientFiles {
    /// PEM CA certificates the upstreams' certificates must chain to.
    pub ca: PathBuf,
    /// A client certificate and key to present (mutual TLS), both or
    /// neither.
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// The name to verify upstream certificates for; `None`: the host of
    /// each upstream's address (a DNS name or an IP address).
    pub server_name: Option<String>,
    /// The config section, for errors (`upstream.tls`).
    pub section: String,
}

/// TLS to upstreams: one rustls config per ALPN choice. Clones share it,
/// so a [`ClientTls::reload`] reaches every [`Connector`] made with a
/// clone (new connections; pooled ones keep their session).
#[derive(Debug, Clone)]
pub struct ClientTls {
    current: Arc<RwLock<ClientState>>,
    files: ClientFiles,
    alpn: Vec<Vec<u8>>,
}

#[derive(Debug)]
struct ClientState {
    config: Arc<ClientConfig>,
    server_name: Option<ServerName<'static>>,
}

impl ClientTls {
    /// Reads the files; `alpn` is what the connections offer (`h2` for
    /// gRPC, `http/1.1` for the pooled HTTP/1 client).
    pub fn load(files: &ClientFiles, alpn: &[&[u8]]) -> Result<ClientTls, TlsError> {
        let alpn: Vec<Vec<u8>> = alpn.iter().map(|p| p.to_vec()).collect();
        let state = build_client(files, &alpn)?;
        Ok(ClientTls {
            current: Arc::new(RwLock::new(state)),
            files: files.clone(),
            alpn,
        })
    }

    /// Reads the files again; on success new connections use them, else
    /// the old config stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let state = build_client(&self.files, &self.alpn)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = state;
        Ok(())
    }

    /// The JSON log line of a reload's outcome.
    pub fn reload_log_line(&self, r: &Result<(), TlsError>) -> String {
        let section = &self.files.section;
        match r {
            Ok(()) => format!("{{\"msg\":\"tls client files reloaded\",\"section\":{section:?}}}"),
            Err(e) => format!(
                "{{\"level\":\"error\",\"msg\":\"tls client reload refused, the previous files stay\",\"section\":{section:?},\"error\":{:?}}}",
                e.to_string()
            ),
        }
    }

    fn state(&self) -> std::sync::RwLockReadGuard<'_, ClientState> {
        self.current.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The name to verify for an upstream at `host` (brackets of an IPv6
    /// literal removed).
    fn name_for(&self, host: &str) -> io::Result<ServerName<'static>> {
        if let Some(n) = &self.state().server_name {
            return Ok(n.clone());
        }
        let host = host.trim_start_matches('[').trim_end_matches(']');
        ServerName::try_from(host.to_owned()).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("tls: {host:?} is not a name to verify: {e}"),
            )
        })
    }

    /// TLS over an open connection to `host`, within `timeout`.
    pub async fn connect(
        &self,
        host: &str,
        tcp: TcpStream,
        timeout: Duration,
    ) -> io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        let name = self.name_for(host)?;
        let connector = tokio_rustls::TlsConnector::from(Arc::clone(&self.state().config));
        tokio::time::timeout(timeout, connector.connect(name, tcp))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "tls: handshake timed out"))?
    }
}

fn build_client(files: &ClientFiles, alpn: &[Vec<u8>]) -> Result<ClientState, TlsError> {
    let s = &files.section;
    let roots = read_roots(&format!("{s}.ca"), &files.ca)?;
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError {
            field: s.clone(),
            message: e.to_string(),
        })?
        .with_root_certificates(roots);
    let mut cfg = match (&files.cert, &files.key) {
        (None, None) => builder.with_no_client_auth(),
        (Some(cert), Some(key)) => {
            let cert_field = format!("{s}.cert");
            let chain = read_certs(&cert_field, cert)?;
            leaf_info(&cert_field, cert, &chain[0])?;
            let key_der = read_key(&format!("{s}.key"), key)?;
            builder
                .with_client_auth_cert(chain, key_der)
                .map_err(|e| TlsError {
                    field: format!("{s}.key"),
                    message: format!(
                        "{} does not fit the certificate in {}: {e}",
                        key.display(),
                        cert.display()
                    ),
                })?
        }
        _ => {
            return Err(TlsError {
                field: format!("{s}.cert"),
                message: "cert and key go together: give both or neither".into(),
            })
        }
    };
    cfg.alpn_protocols = alpn.to_vec();
    let server_name = match &files.server_name {
        None => None,
        Some(n) => Some(ServerName::try_from(n.clone()).map_err(|e| TlsError {
            field: format!("{s}.server_name"),
            message: format!("{n:?}: {e}"),
        })?),
    };
    Ok(ClientState {
        config: Arc::new(cfg),
        server_name,
    })
}

/// hyper-util's client connector: TCP, then TLS when configured.
#[derive(Debug, Clone)]
pub struct Connector {
    http: HttpConnector,
    tls: Option<ClientTls>,
    handshake_timeout: Duration,
}

impl Connector {
    pub fn new(http: HttpConnector, tls: Option<ClientTls>, handshake_timeout: Duration) -> Self {
        Connector {
            http,
            tls,
            handshake_timeout,
        }
    }
}

/// A connection the [`Connector`] made.
#[derive(Debug)]
pub enum MaybeTls {
    Plain(TokioIo<TcpStream>),
    Tls(Box<TokioIo<tokio_rustls::client::TlsStream<TcpStream>>>),
}

type ConnectFuture =
    Pin<Box<dyn Future<Output = Result<MaybeTls, crate::server::BoxError>> + Send>>;

impl tower_service::Service<Uri> for Connector {
    type Response = MaybeTls;
    type Error = crate::server::BoxError;
    type Future = ConnectFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.http.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let tcp = self.http.call(uri.clone());
        let tls = self.tls.clone();
        let timeout = self.handshake_timeout;
        Box::pin(async move {
            let io = tcp.await?;
            let Some(tls) = tls else {
                return Ok(MaybeTls::Plain(io));
            };
            let host = uri.host().unwrap_or("");
            let stream = tls.connect(host, io.into_inner(), timeout).await?;
            Ok(MaybeTls::Tls(Box::new(TokioIo::new(stream))))
        })
    }
}

impl Connection for MaybeTls {
    fn connected(&self) -> Connected {
        match self {
            MaybeTls::Plain(io) => io.connected(),
            MaybeTls::Tls(io) => {
                let (tcp, conn) = io.inner().get_ref();
                let c = tcp.connected();
                if conn.alpn_protocol() == Some(b"h2") {
                    c.negotiated_h2()
                } else {
                    c
                }
            }
        }
    }
}

/// Runs `$e` with `$io` bound to the connection's `TokioIo`, plain or TLS.
macro_rules! with_io {
    ($this:expr, |$io:ident| $e:expr) => {
        match $this {
            MaybeTls::Plain($io) => $e,
            MaybeTls::Tls(boxed) => {
                let $io = &mut **boxed;
                $e
            }
        }
    };
}

impl hyper::rt::Read for MaybeTls {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        with_io!(self.get_mut(), |io| Pin::new(io).poll_read(cx, buf))
    }
}

impl hyper::rt::Write for MaybeTls {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        with_io!(self.get_mut(), |io| Pin::new(io).poll_write(cx, buf))
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        with_io!(self.get_mut(), |io| Pin::new(io).poll_flush(cx))
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        with_io!(self.get_mut(), |io| Pin::new(io).poll_shutdown(cx))
    }
}

/// The same connection as tokio I/O, for the clients that read and write
/// it themselves (the edge's HTTP/1.1 connections to its nodes).
impl tokio::io::AsyncRead for MaybeTls {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        with_io!(self.get_mut(), |io| Pin::new(io.inner_mut())
            .poll_read(cx, buf))
    }
}

impl tokio::io::AsyncWrite for MaybeTls {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        with_io!(self.get_mut(), |io| Pin::new(io.inner_mut())
            .poll_write(cx, buf))
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        with_io!(self.get_mut(), |io| Pin::new(io.inner_mut()).poll_flush(cx))
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        with_io!(self.get_mut(), |io| Pin::new(io.inner_mut())
            .poll_shutdown(cx))
    }
}
