//! TLS end to end with real processes (`tandem node`, `tandem edge`) and
//! certificate authorities made at run time: a node with `[tls]` that
//! requires client certificates of the edges' CA; an edge with TLS on its
//! public listener, mutual TLS to the node (`[upstream.tls]`), and an
//! admin listener that requires an operator's certificate as well as the
//! token.
//!
//! Checked: requests through the edge reach the node over mutual TLS; the
//! node refuses a client without a certificate; an edge (in process) that
//! trusts another CA for its nodes gets no answer from the node; the admin
//! API refuses a client without a certificate, and logs a change with the
//! token's id and the certificate's subject and the weights from → to,
//! never the token; SIGHUP with renewed certificates on the edge and the
//! node under a client loop through the edge (each request on a new
//! connection) fails no request, and new connections then see the new
//! serials.

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tandem_conn::test_pki::{Ca, Leaf};
use tandem_conn::tls::{cert_info, ClientFiles, ClientTls};
use tandem_control::supervise::{target_binary, Supervised};
use tandem_log::conformance::TempDir;

fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
}

fn client(ca: &Path, cert_key: Option<(&Path, &Path)>) -> ClientTls {
    ClientTls::load(
        &ClientFiles {
            ca: ca.into(),
            cert: cert_key.map(|c| c.0.into()),
            key: cert_key.map(|c| c.1.into()),
            server_name: None,
            section: "test".into(),
        },
        &[b"http/1.1"],
    )
    .expect("client TLS")
}

/// One request on a new TLS connection: status, body, and the serial of
/// the server's certificate.
async fn call(
    addr: SocketAddr,
    tls: &ClientTls,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Result<(u16, String, String), String> {
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let s = tls
        .connect("127.0.0.1", tcp, Duration::from_secs(5))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let serial = cert_info(&s.get_ref().1.peer_certificates().unwrap()[0])
        .unwrap()
        .serial;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "localhost");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = send
        .send_request(req.body(Full::new(Bytes::from(body.to_owned()))).unwrap())
        .await
        .map_err(|e| format!("request: {e:?}"))?;
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned(), serial))
}

/// A connection the server refused after the client's side of the TLS
/// 1.3 handshake: the request fails with the server's alert, a reset, or a
/// connection hyper saw closed before it could send (never a connect or
/// handshake error: those would be another failure).
fn refused(err: &str) -> bool {
    err.starts_with("request: ")
        && (err.contains("CertificateRequired")
            || err.contains("ConnectionReset")
            || err.contains("BrokenPipe")
            || err.contains("connection was not ready")
            || err.contains("IncompleteMessage"))
}

/// Polls `f` until it is true or `limit` passes.
async fn eventually(limit: Duration, mut f: impl AsyncFnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_through_the_edge_admin_certificates_and_reload_under_load() {
    let dir = TempDir::new("edge-tls");
    let d = dir.path();
    // Three authorities: the nodes', the edges' (client certificates the
    // nodes accept) and the operators' (admin clients).
    let (nodes_ca, edges_ca, ops_ca) = (
        Ca::new("nodes CA"),
        Ca::new("edges CA"),
        Ca::new("operators CA"),
    );
    let nodes_ca_file = nodes_ca.write(d, "nodes-ca");
    let edges_ca_file = edges_ca.write(d, "edges-ca");
    let ops_ca_file = ops_ca.write(d, "ops-ca");
    let (node_cert, node_key) = nodes_ca.issue(&Leaf::new("node-1", 0x10)).write(d, "node");
    let (edge_client_cert, edge_client_key) = edges_ca
        .issue(&Leaf::new("edge-1", 0x20))
        .write(d, "edge-client");
    // The edge's public and admin certificates come from the nodes' CA
    // (any CA the clients trust would do).
    let (edge_cert, edge_key) = nodes_ca
        .issue(&Leaf::new("edge-public", 1))
        .write(d, "edge");
    let (admin_cert, admin_key) = nodes_ca
        .issue(&Leaf::new("edge-admin", 3))
        .write(d, "admin");
    let (op_cert, op_key) = ops_ca.issue(&Leaf::new("operator-1", 0x42)).write(d, "op");

    let node_addr = free_addr();
    let node_cfg = d.join("node.toml");
    std::fs::write(
        &node_cfg,
        format!(
            "listen = \"{node_addr}\"\ndata_dir = \"{}\"\n\n[http]\ndrain_grace_ms = 0\n\n\
             [tls]\ncert = \"{}\"\nkey = \"{}\"\nclient_ca = \"{}\"\n",
            d.join("node-data").display(),
            node_cert.display(),
            node_key.display(),
            edges_ca_file.display()
        ),
    )
    .unwrap();
    let bin = target_binary("tandem", "TANDEM_BIN");
    let mut cmd = Command::new(&bin);
    cmd.args(["node", "--config"]).arg(&node_cfg);
    let node_log = d.join("node.log");
    let mut node = Supervised::start_logged("node", cmd, &node_log).expect("start the node");

    let (public, admin) = (free_addr(), free_addr());
    let token = "admin-s3cret-token";
    let edge_cfg_text = format!(
        "listen = \"{public}\"\nadmin_listen = \"{admin}\"\nadmin_token = \"{token}\"\n\
         zone = \"a\"\ndrain_timeout_secs = 5\n\n\
         [[clusters]]\nname = \"aws\"\nversion = \"1\"\nrole = \"stable\"\nweight = 100\n\
         nodes = [{{ addr = \"{node_addr}\", zone = \"a\" }}]\n\n\
         [[clusters]]\nname = \"gcp\"\nversion = \"1\"\nrole = \"stable\"\nweight = 0\n\
         nodes = [{{ addr = \"{node_addr}\", zone = \"a\" }}]\n\n\
         [health]\ninterval_ms = 100\n\n\
         [upstream.tls]\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n\n\
         [tls]\ncert = \"{}\"\nkey = \"{}\"\n\n\
         [admin_tls]\ncert = \"{}\"\nkey = \"{}\"\nclient_ca = \"{}\"\n",
        nodes_ca_file.display(),
        edge_client_cert.display(),
        edge_client_key.display(),
        edge_cert.display(),
        edge_key.display(),
        admin_cert.display(),
        admin_key.display(),
        ops_ca_file.display()
    );
    let edge_cfg = d.join("edge.toml");
    std::fs::write(&edge_cfg, &edge_cfg_text).unwrap();
    let mut cmd = Command::new(&bin);
    cmd.args(["edge", "--config"]).arg(&edge_cfg);
    let edge_log = d.join("edge.log");
    let mut edge = Supervised::start_logged("edge", cmd, &edge_log).expect("start the edge");
    let logs = || {
        format!(
            "node:\n{}\nedge:\n{}",
            std::fs::read_to_string(&node_log).unwrap_or_default(),
            std::fs::read_to_string(&edge_log).unwrap_or_default()
        )
    };

    let plain = client(&nodes_ca_file, None);
    // Through the edge, over mutual TLS to the node.
    let ok = eventually(Duration::from_secs(60), async || {
        matches!(
            call(public, &plain, "GET", "/v1/status", &[], "").await,
            Ok((200, _, _))
        )
    })
    .await;
    assert!(ok, "no answer through the edge:\n{}", logs());
    let (_, body, serial) = call(public, &plain, "GET", "/v1/status", &[], "")
        .await
        .unwrap();
    assert!(body.contains("\"node\":\"node-1\""), "{body}");
    assert_eq!(serial, "01");

    // The node refuses a client without a certificate, and serves the
    // edge's.
    let err = call(node_addr, &plain, "GET", "/v1/status", &[], "")
        .await
        .unwrap_err();
    assert!(refused(&err), "{err}");
    let as_edge = client(&nodes_ca_file, Some((&edge_client_cert, &edge_client_key)));
    let (status, _, serial) = call(node_addr, &as_edge, "GET", "/readyz", &[], "")
        .await
        .unwrap();
    assert_eq!((status, serial.as_str()), (200, "10"));

    // An edge trusting another CA for its nodes never gets an answer.
    let mut wrong = tandem_edge::EdgeConfig::parse(&edge_cfg_text).unwrap();
    wrong.listen = "127.0.0.1:0".parse().unwrap();
    wrong.admin_listen = "127.0.0.1:0".parse().unwrap();
    wrong.tls = None;
    wrong.admin_tls = None;
    wrong.upstream.tls.as_mut().unwrap().ca = ops_ca_file.clone();
    let served = tandem_edge::serve_in_process(wrong, Duration::from_secs(1))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (status, body) = {
        let tcp = tokio::net::TcpStream::connect(served.public).await.unwrap();
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .unwrap();
        tokio::spawn(conn);
        let resp = send
            .send_request(
                Request::get("/v1/status")
                    .header("host", "x")
                    .body(Full::new(Bytes::new()))
                    .unwrap(),
            )
            .await
            .unwrap();
        let s = resp.status().as_u16();
        (s, resp.into_body().collect().await.unwrap().to_bytes())
    };
    assert!(
        status == 502 || status == 503,
        "{status} {}",
        String::from_utf8_lossy(&body)
    );
    drop(served);

    // The admin API: no client certificate, refused at the handshake;
    // the operator's certificate without the token, 401; both, the
    // change is made and logged with who and what.
    let admin_plain = client(&nodes_ca_file, None);
    let err = call(admin, &admin_plain, "GET", "/admin/weights", &[], "")
        .await
        .unwrap_err();
    assert!(refused(&err), "{err}");
    let op = client(&nodes_ca_file, Some((&op_cert, &op_key)));
    // Counted: the refused handshake above, and one with a client that
    // trusts another CA on the public listener.
    let stranger = client(&ops_ca_file, None);
    assert!(call(public, &stranger, "GET", "/v1/status", &[], "")
        .await
        .unwrap_err()
        .starts_with("handshake: "));
    let failures = eventually(Duration::from_secs(5), async || {
        let Ok((200, metrics, _)) = call(admin, &op, "GET", "/metrics", &[], "").await else {
            return false;
        };
        metrics
            .lines()
            .any(|l| l == "tandem_edge_tls_handshake_failures_total{zone=\"a\"} 2")
    })
    .await;
    assert!(failures, "{}", logs());
    let (status, _, _) = call(
        admin,
        &op,
        "PUT",
        "/admin/weights",
        &[],
        r#"{"aws":90,"gcp":10}"#,
    )
    .await
    .unwrap();
    assert_eq!(status, 401);
    let bearer = format!("Bearer {token}");
    let (status, body, _) = call(
        admin,
        &op,
        "PUT",
        "/admin/weights",
        &[("authorization", &bearer)],
        r#"{"aws":90,"gcp":10}"#,
    )
    .await
    .unwrap();
    assert_eq!(status, 200, "{body}");
    let logged = eventually(Duration::from_secs(5), async || {
        std::fs::read_to_string(&edge_log)
            .unwrap_or_default()
            .lines()
            .any(|l| l.contains("\"msg\":\"admin change\""))
    })
    .await;
    assert!(logged, "{}", logs());
    let line = std::fs::read_to_string(&edge_log)
        .unwrap()
        .lines()
        .find(|l| l.contains("\"msg\":\"admin change\""))
        .unwrap()
        .to_owned();
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(
        v["by"]["cert_subject"], "CN=operator-1,O=tandem tests",
        "{line}"
    );
    assert_eq!(v["by"]["cert_serial"], "42", "{line}");
    assert!(
        v["by"]["token_id"].as_str().unwrap().starts_with("sha3:"),
        "{line}"
    );
    assert_eq!(
        v["changed"]["weights"]["aws"],
        serde_json::json!({"from": 100, "to": 90})
    );
    assert_eq!(
        v["changed"]["weights"]["gcp"],
        serde_json::json!({"from": 0, "to": 10})
    );
    assert_eq!(
        v["generation"]["to"].as_u64(),
        v["generation"]["from"].as_u64().map(|g| g + 1)
    );
    assert!(!logs().contains(token), "the token was logged");

    // Reload under load: clients through the edge, each request on a new
    // connection, while SIGHUP swaps the edge's and then the node's
    // certificate for renewed ones.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let errors = Arc::new(Mutex::new(Vec::<String>::new()));
    let new_serial_seen = Arc::new(AtomicU64::new(0));
    let mut loops = Vec::new();
    for _ in 0..3 {
        let (stop, ok, failed, errors, seen, tls) = (
            Arc::clone(&stop),
            Arc::clone(&ok),
            Arc::clone(&failed),
            Arc::clone(&errors),
            Arc::clone(&new_serial_seen),
            plain.clone(),
        );
        loops.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match call(public, &tls, "GET", "/v1/status", &[], "").await {
                    Ok((200, _, serial)) => {
                        ok.fetch_add(1, Ordering::Relaxed);
                        if serial == "02" {
                            seen.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    other => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        errors.lock().unwrap().push(format!("{other:?}"));
                    }
                }
            }
        }));
    }
    let until = |n: u64| {
        let ok = Arc::clone(&ok);
        async move {
            let end = Instant::now() + Duration::from_secs(60);
            while ok.load(Ordering::Relaxed) < n {
                assert!(Instant::now() < end, "the clients stalled");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };
    until(30).await;
    nodes_ca
        .issue(&Leaf::new("edge-public", 2))
        .write(d, "edge");
    edges_ca
        .issue(&Leaf::new("edge-1", 0x21))
        .write(d, "edge-client");
    edge.signal(libc::SIGHUP).expect("SIGHUP the edge");
    until(ok.load(Ordering::Relaxed) + 150).await;
    nodes_ca.issue(&Leaf::new("node-1", 0x11)).write(d, "node");
    node.signal(libc::SIGHUP).expect("SIGHUP the node");
    until(ok.load(Ordering::Relaxed) + 150).await;
    stop.store(true, Ordering::Relaxed);
    for l in loops {
        l.await.unwrap();
    }
    let (ok, failed, seen) = (
        ok.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed),
        new_serial_seen.load(Ordering::Relaxed),
    );
    eprintln!("reload under load through the edge: {ok} requests, {failed} failed, {seen} saw the edge's serial 02");
    assert_eq!(failed, 0, "{:?}\n{}", errors.lock().unwrap(), logs());
    assert!(seen >= 150, "{seen} of {ok} saw the renewed certificate");
    let (_, _, serial) = call(public, &plain, "GET", "/v1/status", &[], "")
        .await
        .unwrap();
    assert_eq!(serial, "02");
    let (status, _, serial) = call(node_addr, &as_edge, "GET", "/readyz", &[], "")
        .await
        .unwrap();
    assert_eq!((status, serial.as_str()), (200, "11"));
    let text = logs();
    assert!(
        text.contains(
            "\"msg\":\"tls certificate reloaded\",\"listener\":\"public\",\"serial\":\"02\""
        ),
        "{text}"
    );
    assert!(
        text.contains(
            "\"msg\":\"tls certificate reloaded\",\"listener\":\"public\",\"serial\":\"11\""
        ),
        "{text}"
    );

    // The edge's SIGHUP read its client files for the nodes too (renewed
    // in place: the edge's requests above kept passing the node's
    // client_ca check).
    assert!(
        text.contains("\"msg\":\"tls client files reloaded\",\"section\":\"upstream.tls\""),
        "{text}"
    );

    // A bad renewal keeps the certificate in use.
    std::fs::write(&edge_cert, "garbage").unwrap();
    edge.signal(libc::SIGHUP).expect("SIGHUP the edge");
    let refused = eventually(Duration::from_secs(5), async || {
        std::fs::read_to_string(&edge_log)
            .unwrap_or_default()
            .contains("tls reload refused")
    })
    .await;
    assert!(refused, "{}", logs());
    let (status, _, serial) = call(public, &plain, "GET", "/v1/status", &[], "")
        .await
        .unwrap();
    assert_eq!((status, serial.as_str()), (200, "02"));

    for (name, p) in [("edge", &mut edge), ("node", &mut node)] {
        let status = p.stop(Duration::from_secs(30)).expect("stops");
        assert!(status.success(), "{name}: {status}\n{}", logs());
    }
}
