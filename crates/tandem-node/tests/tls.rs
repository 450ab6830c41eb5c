//! The node's API over TLS, in this process (`Node::start` over a file log
//! in a temporary directory, `server::serve_until_tls` on a loopback
//! listener) with a listener that requires client certificates
//! (`tls.client_ca`) and certificate authorities made at run time:
//! gRPC over HTTP/2 chosen by ALPN (hyper-util's client with
//! `tandem_conn::tls::Connector`, as the edge connects) places an order
//! and reads the status; the order reaches a WebSocket market stream
//! opened over TLS (HTTP/1.1 by ALPN, then the upgrade); a client with no
//! certificate gets nothing, by gRPC or WebSocket.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tandem_conn::test_pki::{Ca, Leaf};
use tandem_conn::tls::{ClientFiles, ClientTls, Connector, ServerTls};
use tandem_log::conformance::TempDir;
use tandem_node::grpc::pb;
use tandem_node::grpc::pb::order_entry_client::OrderEntryClient;
use tandem_node::{Node, NodeConfig};
use tokio_tungstenite::tungstenite::Message;

const WAIT: Duration = Duration::from_secs(10);

fn tls(ca: &Path, cert_key: Option<(&Path, &Path)>, alpn: &[&[u8]]) -> ClientTls {
    ClientTls::load(
        &ClientFiles {
            ca: ca.into(),
            cert: cert_key.map(|c| c.0.into()),
            key: cert_key.map(|c| c.1.into()),
            server_name: None,
            section: "test".into(),
        },
        alpn,
    )
    .expect("client TLS")
}

fn grpc(
    addr: std::net::SocketAddr,
    tls: ClientTls,
) -> OrderEntryClient<Client<Connector, tonic::body::Body>> {
    let connector = Connector::new(HttpConnector::new(), Some(tls), WAIT);
    let c = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build(connector);
    OrderEntryClient::with_origin(c, format!("http://{addr}").parse().expect("uri"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_and_websocket_over_mutual_tls() {
    let dir = TempDir::new("node-tls");
    let d = dir.path();
    let (nodes_ca, edges_ca) = (Ca::new("nodes CA"), Ca::new("edges CA"));
    let nodes_ca_file = nodes_ca.write(d, "nodes-ca");
    let edges_ca_file = edges_ca.write(d, "edges-ca");
    let (cert, key) = nodes_ca.issue(&Leaf::new("node-1", 0x31)).write(d, "node");
    let (ecert, ekey) = edges_ca.issue(&Leaf::new("edge-1", 0x32)).write(d, "edge");

    let mut cfg = NodeConfig {
        data_dir: d.join("data"),
        ..NodeConfig::default()
    };
    cfg.log.fsync = false;
    cfg.limits.account_rate = 0;
    cfg.http.drain_timeout_secs = 2;
    cfg.tls = Some(tandem_node::config::TlsConfig {
        cert,
        key,
        client_ca: Some(edges_ca_file),
    });
    let server_tls = ServerTls::load(cfg.tls.as_ref().unwrap().files()).expect("load TLS");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let node = Node::start(cfg).expect("start node");
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(tandem_node::server::serve_until_tls(
        listener,
        Arc::clone(&node),
        Some(server_tls),
        async move {
            let _ = rx.await;
            tandem_node::server::Stop::Drain
        },
        Duration::ZERO,
    ));
    let deadline = Instant::now() + WAIT;
    while !node.is_caught_up() {
        assert!(Instant::now() < deadline, "node did not catch up");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    // A market stream over TLS (HTTP/1.1 by ALPN), as the edge's client.
    let h1 = tls(&nodes_ca_file, Some((&ecert, &ekey)), &[b"http/1.1"]);
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let stream = h1.connect("127.0.0.1", tcp, WAIT).await.expect("TLS");
    let (mut ws, resp) =
        tokio_tungstenite::client_async("wss://localhost/v1/markets/BTC-USD/stream", stream)
            .await
            .expect("websocket handshake over TLS");
    assert_eq!(resp.status(), 101);

    // gRPC over HTTP/2 chosen by ALPN, with the edge's certificate.
    let h2 = tls(&nodes_ca_file, Some((&ecert, &ekey)), &[b"h2"]);
    let mut g = grpc(addr, h2);
    let status = g
        .get_status(pb::GetStatusRequest {})
        .await
        .expect("gRPC status over TLS")
        .into_inner();
    assert_eq!(status.node, "node-1");
    let reply = g
        .place_order(pb::PlaceOrderRequest {
            market: "BTC-USD".into(),
            id: "o1".into(),
            account: "alice".into(),
            side: pb::Side::Buy as i32,
            r#type: pb::OrderType::Limit as i32,
            price: Some("100".into()),
            qty: "1".into(),
            tif: pb::TimeInForce::Unspecified as i32,
            post_only: false,
        })
        .await
        .expect("gRPC place over TLS")
        .into_inner();
    assert!(!reply.events.is_empty(), "{reply:?}");

    // The stream sees the book change the order made.
    let saw_order = tokio::time::timeout(WAIT, async {
        while let Some(m) = ws.next().await {
            if let Ok(Message::Text(t)) = m {
                if t.contains("100") {
                    return true;
                }
            }
        }
        false
    })
    .await;
    assert_eq!(saw_order, Ok(true));

    // Without a client certificate: no gRPC answer, no stream.
    let mut stranger = grpc(addr, tls(&nodes_ca_file, None, &[b"h2"]));
    let err = stranger
        .get_status(pb::GetStatusRequest {})
        .await
        .unwrap_err();
    // hyper's connection error, as tonic without its transport maps it.
    assert!(
        matches!(err.code(), tonic::Code::Unknown | tonic::Code::Unavailable),
        "{err:?}"
    );
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let no_cert = tls(&nodes_ca_file, None, &[b"http/1.1"]);
    let stream = no_cert
        .connect("127.0.0.1", tcp, WAIT)
        .await
        .expect("client side of the handshake");
    let r =
        tokio_tungstenite::client_async("wss://localhost/v1/markets/BTC-USD/stream", stream).await;
    assert!(r.is_err(), "a stream without a client certificate");

    let _ = tx.send(());
    served.await.unwrap();
    tokio::task::spawn_blocking(move || node.stop())
        .await
        .unwrap();
}
