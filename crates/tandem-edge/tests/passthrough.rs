//! The edge's pass-through of the streamed protocols, end to end: a real
//! node (`tandem_node::Node` over a file log, served in this process on a
//! loopback port) behind a real edge (`common::TestEdge`). A WebSocket
//! market stream opened through the edge gets its snapshot and then the
//! events of orders placed through the edge, exactly the events the HTTP
//! answers carried; gRPC order entry (place, cancel, a refused request with
//! its status and message, a server-streamed market) works through the
//! edge as it does against the node. Every wait is on an answer or a
//! message, bounded by `WAIT`.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{cluster, edge_config, TestEdge};
use futures_util::{SinkExt, StreamExt};
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};
use tandem_edge::config::Role;
use tandem_log::conformance::TempDir;
use tandem_node::grpc::pb;
use tandem_node::grpc::pb::order_entry_client::OrderEntryClient;
use tandem_node::{Node, NodeConfig};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use tonic::Code;

/// Bound on every wait of these tests.
const WAIT: Duration = Duration::from_secs(10);

type Ws = WebSocketStream<TcpStream>;
type Grpc = OrderEntryClient<Client<HttpConnector, tonic::body::Body>>;

/// A node served in this process, and the edge in front of it.
struct Stack {
    node: Arc<Node>,
    node_addr: SocketAddr,
    edge: TestEdge,
    http: Client<HttpConnector, Full<Bytes>>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    served: Option<tokio::task::JoinHandle<()>>,
    _dir: TempDir,
}

impl Stack {
    /// Starts the node, then the edge with the node as its only cluster,
    /// and returns once a request through the edge reaches the node.
    async fn start(tag: &str) -> Stack {
        let dir = TempDir::new(tag);
        let mut cfg = NodeConfig {
            data_dir: dir.path().to_path_buf(),
            version: "9.9.9-test".into(),
            ..NodeConfig::default()
        };
        cfg.log.fsync = false;
        cfg.limits.account_rate = 0;
        cfg.http.drain_timeout_secs = 2;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind node");
        let node_addr = listener.local_addr().expect("node addr");
        let node = Node::start(cfg).expect("start node");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let served = tokio::spawn(tandem_node::server::serve(
            listener,
            Arc::clone(&node),
            async move {
                let _ = rx.await;
            },
            Duration::ZERO,
        ));
        // The node is caught up before the edge starts, so the edge's
        // first health check cannot find it catching up (that check could
        // otherwise land after the readiness wait below and eject it).
        let deadline = Instant::now() + WAIT;
        while !node.is_caught_up() {
            assert!(Instant::now() < deadline, "the node never caught up");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let edge = TestEdge::start(
            edge_config(vec![cluster(
                "stable-1",
                Role::Stable,
                100,
                &[(node_addr, "z-a")],
            )]),
            None,
        )
        .await;
        let s = Stack {
            node,
            node_addr,
            edge,
            http: Client::builder(TokioExecutor::new()).build_http(),
            shutdown: Some(tx),
            served: Some(served),
            _dir: dir,
        };
        // Ready once the node has caught up and the edge's health check
        // has seen it: a status read through the edge answers 200.
        let deadline = Instant::now() + WAIT;
        loop {
            let (st, _, v) = s.call(Method::GET, "/v1/status", None).await;
            if st == StatusCode::OK && v["ready"] == true {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the node behind the edge never became ready: {st} {v}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        s
    }

    /// One HTTP/1.1 request through the edge: status, headers, JSON body
    /// (`Null` if not JSON).
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, http::HeaderMap, Value) {
        let body = body.map_or_else(Bytes::new, |b| Bytes::from(b.to_string()));
        let req = Request::builder()
            .method(method)
            .uri(self.edge.url(path))
            .header("content-type", "application/json")
            .body(Full::new(body))
            .expect("request");
        let resp = tokio::time::timeout(WAIT, self.http.request(req))
            .await
            .expect("answer in time")
            .expect("answer");
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.expect("body").to_bytes();
        let v = serde_json::from_slice(&body).unwrap_or(Value::Null);
        (parts.status, parts.headers, v)
    }

    /// Places a limit order through the edge over HTTP; its answer.
    async fn place(&self, id: &str, account: &str, side: &str, price: &str, qty: &str) -> Value {
        let order = json!({"market": "BTC-USD", "id": id, "account": account, "side": side,
                           "type": "limit", "price": price, "qty": qty});
        let (st, h, v) = self.call(Method::POST, "/v1/orders", Some(order)).await;
        assert_eq!(st, StatusCode::OK, "{v}");
        assert_eq!(
            h.get("x-tandem-cluster").and_then(|v| v.to_str().ok()),
            Some("stable-1"),
            "answered through the edge: {h:?}"
        );
        v
    }

    /// Opens a WebSocket stream of `market` through the edge.
    async fn ws(&self, market: &str, query: &str) -> Ws {
        let tcp = TcpStream::connect(self.edge.public)
            .await
            .expect("connect to the edge");
        let url = format!(
            "ws://{}/v1/markets/{market}/stream{query}",
            self.edge.public
        );
        let (ws, resp) = tokio::time::timeout(WAIT, tokio_tungstenite::client_async(url, tcp))
            .await
            .expect("handshake in time")
            .expect("websocket handshake through the edge");
        assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
        assert!(
            resp.headers().contains_key("x-tandem-seq"),
            "the node's headers pass through: {:?}",
            resp.headers()
        );
        ws
    }

    /// A gRPC client whose origin is the edge (HTTP/2, prior knowledge).
    fn grpc(&self) -> Grpc {
        let c = Client::builder(TokioExecutor::new())
            .http2_only(true)
            .build_http();
        OrderEntryClient::with_origin(
            c,
            format!("http://{}", self.edge.public).parse().expect("uri"),
        )
    }

    async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(s) = self.served.take() {
            let _ = tokio::time::timeout(WAIT, s).await;
        }
        let node = Arc::clone(&self.node);
        let _ = tokio::task::spawn_blocking(move || node.stop()).await;
    }
}

/// The next item of a gRPC market stream.
async fn next_update(s: &mut tonic::Streaming<pb::MarketUpdate>) -> pb::market_update::Update {
    tokio::time::timeout(WAIT, s.message())
        .await
        .expect("stream item in time")
        .expect("stream ok")
        .expect("stream open")
        .update
        .expect("an update")
}

/// The next JSON text message of a stream (pings and pongs skipped).
async fn next_json(ws: &mut Ws) -> Value {
    loop {
        let m = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("a stream message in time")
            .expect("stream open")
            .expect("stream message");
        match m {
            Message::Text(t) => return serde_json::from_str(&t).expect("JSON message"),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("unexpected message {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_stream_through_the_edge_gets_the_snapshot_then_the_events() {
    let s = Stack::start("edge-ws").await;
    s.place("a0", "zed", "sell", "105", "1").await;
    let mut ws = s.ws("BTC-USD", "?depth=5").await;
    let snap = next_json(&mut ws).await;
    assert_eq!(snap["type"], "book", "{snap}");
    assert_eq!(snap["asks"], json!([["105", "1"]]));
    assert_eq!(snap["bids"], json!([]));

    // A resting bid: its events (as the HTTP answer had them), then the
    // book, both through the edge's joined connections.
    let a = s.place("b1", "alice", "buy", "100", "2").await;
    let ev = next_json(&mut ws).await;
    assert_eq!(ev["type"], "events", "{ev}");
    assert_eq!(ev["seq"], a["seq"]);
    assert_eq!(ev["events"], a["events"]);
    let book = next_json(&mut ws).await;
    assert_eq!(book["type"], "book", "{book}");
    assert_eq!(book["bids"], json!([["100", "2"]]));

    // A crossing sell: the trade's events, in the same order.
    let t = s.place("s1", "bob", "sell", "100", "0.5").await;
    let names: Vec<&str> = t["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["event"].as_str().unwrap_or("?"))
        .collect();
    assert!(names.contains(&"trade"), "{t}");
    let ev = next_json(&mut ws).await;
    assert_eq!((&ev["seq"], &ev["events"]), (&t["seq"], &t["events"]));
    let book = next_json(&mut ws).await;
    assert_eq!(book["bids"], json!([["100", "1.5"]]));

    // The client's ping is answered by the node through the edge.
    ws.send(Message::Ping(b"edge".to_vec().into()))
        .await
        .expect("ping");
    let pong = tokio::time::timeout(WAIT, ws.next())
        .await
        .expect("pong in time")
        .expect("open")
        .expect("message");
    assert!(
        matches!(pong, Message::Pong(ref p) if &p[..] == b"edge"),
        "{pong:?}"
    );

    ws.close(None).await.expect("close");
    drop(ws);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_place_cancel_and_stream_through_the_edge() {
    let s = Stack::start("edge-grpc").await;
    let mut c = s.grpc();
    let place = |id: &str, side: pb::Side, price: &str, qty: &str| pb::PlaceOrderRequest {
        market: "SOL-USD".into(),
        id: id.into(),
        account: "alice".into(),
        side: side as i32,
        r#type: pb::OrderType::Limit as i32,
        price: Some(price.into()),
        qty: qty.into(),
        tif: pb::TimeInForce::Unspecified as i32,
        post_only: false,
    };

    // A server-streamed market, opened first: its snapshot now, then the
    // events of what follows.
    let mut stream = c
        .clone()
        .stream_market(pb::StreamMarketRequest {
            market: "SOL-USD".into(),
            depth: 5,
        })
        .await
        .expect("stream through the edge")
        .into_inner();
    match next_update(&mut stream).await {
        pb::market_update::Update::Book(b) => assert!(b.bids.is_empty() && b.asks.is_empty()),
        other => panic!("snapshot first, got {other:?}"),
    }

    // Place.
    let placed = c
        .place_order(place("g1", pb::Side::Buy, "20.5", "3"))
        .await
        .expect("place through the edge");
    assert!(
        placed.metadata().contains_key("x-tandem-seq"),
        "the node's metadata passes through: {:?}",
        placed.metadata()
    );
    let placed = placed.into_inner();
    let kinds: Vec<i32> = placed.events.iter().map(|e| e.kind).collect();
    assert_eq!(kinds, [pb::EventKind::Accepted as i32], "{placed:?}");
    match next_update(&mut stream).await {
        pb::market_update::Update::Events(e) => {
            assert_eq!(e.seq, placed.seq);
            assert_eq!(e.events, placed.events);
        }
        other => panic!("the place's events, got {other:?}"),
    }

    // Cancel.
    let cancelled = c
        .cancel_order(pb::CancelOrderRequest {
            market: "SOL-USD".into(),
            id: "g1".into(),
            account: "alice".into(),
        })
        .await
        .expect("cancel through the edge")
        .into_inner();
    assert!(cancelled.seq > placed.seq);
    let kinds: Vec<i32> = cancelled.events.iter().map(|e| e.kind).collect();
    assert_eq!(kinds, [pb::EventKind::Cancelled as i32], "{cancelled:?}");
    // The order is cancelled for HTTP readers through the edge too.
    let (st, _, o) = s
        .call(Method::GET, "/v1/orders/SOL-USD/g1?account=alice", None)
        .await;
    assert_eq!(st, StatusCode::OK, "{o}");
    assert_eq!(o["status"], "cancelled");
    // The stream saw the cancel after the place (books in between).
    loop {
        match next_update(&mut stream).await {
            pb::market_update::Update::Book(_) => continue,
            pb::market_update::Update::Events(e) => {
                assert_eq!((e.seq, &e.events), (cancelled.seq, &cancelled.events));
                break;
            }
        }
    }

    // A refused request keeps its status and message through the edge.
    let e = c
        .place_order(pb::PlaceOrderRequest {
            market: String::new(),
            ..place("g2", pb::Side::Sell, "21", "1")
        })
        .await
        .expect_err("an empty market is refused");
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().starts_with("market:"), "{}", e.message());

    drop(stream);
    assert_ne!(s.node_addr, s.edge.public, "two servers");
    s.stop().await;
}
