//! TLS on the scaffold, over real sockets, with certificate authorities
//! made at run time (`tandem_conn::test_pki`): a client that trusts
//! another CA is refused; an expired certificate is refused by the client
//! (server side) and by the server (client side), and is never loaded;
//! a listener that requires client certificates refuses a client with
//! none or with one of another CA and gives the handler the subject of a
//! good one; ALPN gives HTTP/2 or HTTP/1.1; a reload under load (new
//! connections in a loop and one long keep-alive connection) fails no
//! request, new connections get the new serial, the open one keeps its
//! session; a bad new certificate or key keeps the old one.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tandem_conn::server::{self, BoxBody, Limits, Service, Stop};
use tandem_conn::test_pki::{Ca, Leaf};
use tandem_conn::tls::{cert_info, ClientFiles, ClientTls, PeerCert, ServerFiles, ServerTls};
use tokio::net::TcpStream;

struct Echo;

impl Service for Echo {
    async fn call(self: Arc<Self>, req: Request<Incoming>) -> Response<BoxBody> {
        let who = req
            .extensions()
            .get::<PeerCert>()
            .map_or("-".to_string(), |p| p.subject.clone());
        let mut r = Response::new(
            Full::new(Bytes::from(format!("{:?} {who}", req.version())))
                .map_err(|never| match never {})
                .boxed_unsync(),
        );
        *r.status_mut() = StatusCode::OK;
        r
    }
}

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("tandem-conn-tls-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Serves `Echo` with `tls` on a loopback port until the returned sender
/// is dropped.
async fn serve(tls: Arc<ServerTls>) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let limits = Limits {
        drain_timeout: Duration::from_secs(2),
        ..Limits::default()
    };
    tokio::spawn(server::serve_tls(
        l,
        Arc::new(Echo),
        limits,
        Some(tls),
        async move {
            let _ = rx.await;
            Stop::HandOver
        },
    ));
    (addr, tx)
}

fn server_files(cert: &Path, key: &Path, client_ca: Option<&Path>) -> ServerFiles {
    ServerFiles {
        cert: cert.into(),
        key: key.into(),
        client_ca: client_ca.map(Into::into),
        section: "tls".into(),
    }
}

fn client(ca: &Path, cert_key: Option<(&Path, &Path)>, alpn: &[&[u8]]) -> ClientTls {
    ClientTls::load(
        &ClientFiles {
            ca: ca.into(),
            cert: cert_key.map(|c| c.0.into()),
            key: cert_key.map(|c| c.1.into()),
            server_name: None,
            section: "upstream.tls".into(),
        },
        alpn,
    )
    .unwrap()
}

/// One request on a new connection: the answer's body, and the serial of
/// the certificate the server presented.
async fn get(addr: SocketAddr, tls: &ClientTls) -> Result<(String, String), String> {
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let s = tls
        .connect("127.0.0.1", tcp, Duration::from_secs(5))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let serial = cert_info(&s.get_ref().1.peer_certificates().unwrap()[0])
        .unwrap()
        .serial;
    let h2 = s.get_ref().1.alpn_protocol() == Some(b"h2");
    let body = if h2 {
        let (mut send, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(s))
                .await
                .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let resp = send
            .send_request(
                Request::get("https://localhost/")
                    .body(Empty::<Bytes>::new())
                    .unwrap(),
            )
            .await
            .map_err(|e| format!("request: {e:?}"))?;
        resp.into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes()
    } else {
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let resp = send
            .send_request(
                Request::get("/")
                    .header("host", "localhost")
                    .body(Empty::<Bytes>::new())
                    .unwrap(),
            )
            .await
            .map_err(|e| format!("request: {e:?}"))?;
        resp.into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes()
    };
    Ok((String::from_utf8_lossy(&body).into_owned(), serial))
}

#[tokio::test]
async fn a_client_trusting_another_ca_is_refused_and_alpn_picks_the_protocol() {
    let d = dir("ca");
    let (ca, other) = (Ca::new("tandem test CA"), Ca::new("another CA"));
    let (cert, key) = ca.issue(&Leaf::new("node-1", 11)).write(&d, "node");
    let (ca_file, other_file) = (ca.write(&d, "ca"), other.write(&d, "other"));
    let tls = ServerTls::load(server_files(&cert, &key, None)).unwrap();
    assert_eq!(tls.cert().serial, "0b");
    assert_eq!(tls.cert().subject, "CN=node-1,O=tandem tests");
    let (addr, _stop) = serve(tls).await;

    let (body, serial) = get(addr, &client(&ca_file, None, &[b"h2", b"http/1.1"]))
        .await
        .unwrap();
    assert_eq!((body.as_str(), serial.as_str()), ("HTTP/2.0 -", "0b"));
    let (body, _) = get(addr, &client(&ca_file, None, &[b"http/1.1"]))
        .await
        .unwrap();
    assert_eq!(body, "HTTP/1.1 -");

    let wrong = client(&other_file, None, &[b"h2"]);
    let err = get(addr, &wrong).await.unwrap_err();
    assert!(
        err.contains("handshake") && err.contains("UnknownIssuer"),
        "{err}"
    );
    // The client's files reloaded (the right CA now in that file): every
    // clone of it (as the edge's connectors hold) uses them; a file that
    // does not load keeps them.
    let shared = wrong.clone();
    std::fs::write(&other_file, &ca.pem).unwrap();
    assert!(get(addr, &shared).await.is_err(), "read only on reload");
    wrong.reload().unwrap();
    assert_eq!(get(addr, &shared).await.unwrap().1, "0b");
    std::fs::write(&other_file, "garbage").unwrap();
    let r = wrong.reload();
    assert_eq!(r.as_ref().unwrap_err().field, "upstream.tls.ca");
    assert!(wrong.reload_log_line(&r).contains("refused"));
    assert_eq!(get(addr, &shared).await.unwrap().1, "0b");
    // The name is checked too: the certificate is not for elsewhere.example.
    let other_name = ClientTls::load(
        &ClientFiles {
            ca: ca_file.clone(),
            cert: None,
            key: None,
            server_name: Some("elsewhere.example".into()),
            section: "upstream.tls".into(),
        },
        &[b"h2"],
    )
    .unwrap();
    let err = get(addr, &other_name).await.unwrap_err();
    assert!(err.contains("not valid for name"), "{err}");
    let _ = std::fs::remove_dir_all(&d);
}

/// A server presenting `chain` with `key` (no checks of ours: the
/// scaffold refuses to load an expired certificate at all).
async fn raw_server(cert_pem: &str, key_pem: &str) -> SocketAddr {
    let chain = vec![CertificateDer::from_pem_slice(cert_pem.as_bytes()).unwrap()];
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap();
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let a = acceptor.clone();
            tokio::spawn(async move {
                let _ = a.accept(s).await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn expired_certificates_are_refused_on_both_sides_and_never_loaded() {
    let d = dir("expired");
    let ca = Ca::new("tandem test CA");
    let ca_file = ca.write(&d, "ca");
    let expired = ca.issue(&Leaf {
        expired: true,
        ..Leaf::new("node-old", 5)
    });
    let (cert, key) = expired.write(&d, "expired");

    // Our listener will not serve it, and says which field and why.
    let err = ServerTls::load(server_files(&cert, &key, None)).unwrap_err();
    assert_eq!(err.field, "tls.cert");
    assert!(err.message.contains("expired"), "{err}");
    // Nor present it as a client certificate.
    let err = ClientTls::load(
        &ClientFiles {
            ca: ca_file.clone(),
            cert: Some(cert.clone()),
            key: Some(key.clone()),
            server_name: None,
            section: "upstream.tls".into(),
        },
        &[b"h2"],
    )
    .unwrap_err();
    assert!(err.to_string().starts_with("upstream.tls.cert: ") && err.message.contains("expired"));

    // A server that does present it is refused by our client.
    let addr = raw_server(&expired.cert_pem, &expired.key_pem).await;
    let err = get(addr, &client(&ca_file, None, &[b"h2"]))
        .await
        .unwrap_err();
    assert!(err.contains("certificate expired"), "{err}");

    // A client presenting it is refused by a listener requiring client
    // certificates (a rustls client config made by hand: ours refuses).
    let (scert, skey) = ca.issue(&Leaf::new("node-1", 6)).write(&d, "node");
    let tls = ServerTls::load(server_files(&scert, &skey, Some(&ca_file))).unwrap();
    let (addr, _stop) = serve(tls).await;
    let err = raw_client_get(addr, &ca_file, Some((&expired.cert_pem, &expired.key_pem)))
        .await
        .unwrap_err();
    assert!(refused(&err, "CertificateExpired"), "{err}");
    let good = ca.issue(&Leaf::new("edge-1", 7));
    let (body, _) = raw_client_get(addr, &ca_file, Some((&good.cert_pem, &good.key_pem)))
        .await
        .unwrap();
    assert_eq!(body, "HTTP/1.1 CN=edge-1,O=tandem tests");
    let _ = std::fs::remove_dir_all(&d);
}

/// A client refused by the server during or right after the handshake:
/// TLS 1.3 finishes the client's side of the handshake before the server
/// has checked the client's certificate, so the server's `alert` is what
/// the client's first read gets (or, when the server's close overtook the
/// request, a reset).
fn refused(err: &str, alert: &str) -> bool {
    err.contains(&format!("AlertReceived({alert})"))
        || err.contains("ConnectionReset")
        || err.contains("BrokenPipe")
}

/// An HTTP/1.1 request with a rustls client built by hand, presenting
/// `cert` if given (no checks of ours on it).
async fn raw_client_get(
    addr: SocketAddr,
    ca: &Path,
    cert: Option<(&String, &String)>,
) -> Result<(String, ()), String> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let b = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let cfg = match cert {
        None => b.with_no_client_auth(),
        Some((c, k)) => b
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_slice(c.as_bytes()).unwrap()],
                PrivateKeyDer::from_pem_slice(k.as_bytes()).unwrap(),
            )
            .unwrap(),
    };
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let s = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let resp = send
        .send_request(
            Request::get("/")
                .header("host", "localhost")
                .body(Empty::<Bytes>::new())
                .unwrap(),
        )
        .await
        .map_err(|e| format!("request: {e:?}"))?;
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((String::from_utf8_lossy(&body).into_owned(), ()))
}

#[tokio::test]
async fn a_listener_requiring_client_certificates_refuses_clients_without_one() {
    let d = dir("mtls");
    let (ca, other) = (Ca::new("tandem test CA"), Ca::new("another CA"));
    let ca_file = ca.write(&d, "ca");
    let (cert, key) = ca.issue(&Leaf::new("node-1", 21)).write(&d, "node");
    let (edge_cert, edge_key) = ca.issue(&Leaf::new("edge-1", 22)).write(&d, "edge");
    let (stranger_cert, stranger_key) = other
        .issue(&Leaf::new("stranger", 23))
        .write(&d, "stranger");
    let tls = ServerTls::load(server_files(&cert, &key, Some(&ca_file))).unwrap();
    assert!(tls.requires_client_cert());
    let (addr, _stop) = serve(tls).await;

    // No certificate: refused (TLS 1.3 reports it on the first read).
    let err = get(addr, &client(&ca_file, None, &[b"http/1.1"]))
        .await
        .unwrap_err();
    assert!(refused(&err, "CertificateRequired"), "{err}");
    // A certificate of another CA: refused.
    let err = get(
        addr,
        &client(
            &ca_file,
            Some((&stranger_cert, &stranger_key)),
            &[b"http/1.1"],
        ),
    )
    .await
    .unwrap_err();
    assert!(refused(&err, "UnknownCA"), "{err}");
    // The edge's certificate: served, and the handler sees its subject.
    let (body, _) = get(
        addr,
        &client(&ca_file, Some((&edge_cert, &edge_key)), &[b"h2"]),
    )
    .await
    .unwrap();
    assert_eq!(body, "HTTP/2.0 CN=edge-1,O=tandem tests");
    let _ = std::fs::remove_dir_all(&d);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewed_certificate_is_reloaded_under_load_without_a_failed_request() {
    let d = dir("reload");
    let ca = Ca::new("tandem test CA");
    let ca_file = ca.write(&d, "ca");
    let (cert, key) = ca.issue(&Leaf::new("node-1", 1)).write(&d, "node");
    let tls = ServerTls::load(server_files(&cert, &key, None)).unwrap();
    let (addr, _stop) = serve(Arc::clone(&tls)).await;
    let h1 = client(&ca_file, None, &[b"http/1.1"]);

    // Clients: each request on a new connection (a new handshake), in a
    // loop, recording the serial each saw; failures counted.
    let stop = Arc::new(AtomicBool::new(false));
    let (failed, ok) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let seen_new = Arc::new(AtomicU64::new(0));
    let mut loops = Vec::new();
    for _ in 0..4 {
        let (stop, failed, ok, seen_new, tls) = (
            Arc::clone(&stop),
            Arc::clone(&failed),
            Arc::clone(&ok),
            Arc::clone(&seen_new),
            h1.clone(),
        );
        loops.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match get(addr, &tls).await {
                    Ok((_, serial)) => {
                        ok.fetch_add(1, Ordering::Relaxed);
                        if serial == "02" {
                            seen_new.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Err(_) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    // One long keep-alive connection opened before the reload.
    let tcp = TcpStream::connect(addr).await.unwrap();
    let s = h1
        .connect("127.0.0.1", tcp, Duration::from_secs(5))
        .await
        .unwrap();
    let long_serial = cert_info(&s.get_ref().1.peer_certificates().unwrap()[0])
        .unwrap()
        .serial;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
        .await
        .unwrap();
    tokio::spawn(conn);
    let long_req = || {
        Request::get("/")
            .header("host", "localhost")
            .body(Empty::<Bytes>::new())
            .unwrap()
    };
    assert_eq!(send.send_request(long_req()).await.unwrap().status(), 200);

    let until = |n: u64| {
        let ok = Arc::clone(&ok);
        async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
            while ok.load(Ordering::Relaxed) < n {
                assert!(tokio::time::Instant::now() < deadline, "clients stalled");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    };
    until(50).await;
    // Renew: a new certificate (serial 2) and key in the same files.
    ca.issue(&Leaf::new("node-1", 2)).write(&d, "node");
    let before = ok.load(Ordering::Relaxed);
    assert_eq!(tls.reload().unwrap().serial, "02");
    until(before + 100).await;
    // A bad renewal keeps the good one: garbage, then a key of another
    // certificate.
    std::fs::write(&cert, "not a certificate").unwrap();
    let r = tls.reload();
    assert_eq!(r.as_ref().unwrap_err().field, "tls.cert");
    assert!(tls
        .reload_log_line("public", &r)
        .contains("\"serial_kept\":\"02\""));
    ca.issue(&Leaf::new("node-1", 3)).write(&d, "node");
    let (_, other_key) = ca.issue(&Leaf::new("node-1", 4)).write(&d, "other");
    std::fs::copy(&other_key, &key).unwrap();
    assert_eq!(tls.reload().unwrap_err().field, "tls.key");
    assert_eq!(tls.cert().serial, "02");
    let before = ok.load(Ordering::Relaxed);
    until(before + 50).await;
    stop.store(true, Ordering::Relaxed);
    for l in loops {
        l.await.unwrap();
    }
    // The connection opened before the reload carries on, still with the
    // session of the old certificate.
    assert_eq!(long_serial, "01");
    assert_eq!(send.send_request(long_req()).await.unwrap().status(), 200);

    let (ok, failed, seen_new) = (
        ok.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed),
        seen_new.load(Ordering::Relaxed),
    );
    eprintln!("reload under load: {ok} requests on new connections, {failed} failed, {seen_new} saw serial 02");
    assert_eq!(failed, 0);
    assert!(
        seen_new >= 150,
        "{seen_new} of {ok} saw the new certificate"
    );
    // After the reload every new connection sees the new serial.
    let (_, serial) = get(addr, &h1).await.unwrap();
    assert_eq!(serial, "02");
    let _ = std::fs::remove_dir_all(&d);
}
