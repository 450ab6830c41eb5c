//! The gRPC and WebSocket mirrors of the HTTP API, against nodes run in
//! this process (`Node::start` over a file log in a temporary directory,
//! `server::serve` on a loopback listener bound to port 0). gRPC goes
//! through the generated client over a hyper-util HTTP/2 client (no tonic
//! transport); WebSocket through tokio-tungstenite's client; HTTP through a
//! hyper-util HTTP/1.1 client. Answers are compared with the HTTP answers
//! to the same commands: the mirrors must mean exactly what HTTP means.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};
use tandem_log::conformance::TempDir;
use tandem_log::{FileLog, FileLogConfig, FsyncPolicy, Log};
use tandem_node::grpc::pb;
use tandem_node::grpc::pb::order_entry_client::OrderEntryClient;
use tandem_node::{Node, NodeConfig};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use tonic::Code;

type Grpc = OrderEntryClient<Client<HttpConnector, tonic::body::Body>>;
type Ws = WebSocketStream<TcpStream>;

/// Bound on every wait of these tests.
const WAIT: Duration = Duration::from_secs(10);

/// A node served on this test's runtime.
struct TestNode {
    addr: SocketAddr,
    node: Arc<Node>,
    http: Client<HttpConnector, Full<Bytes>>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    served: Option<tokio::task::JoinHandle<()>>,
    _dir: TempDir,
}

impl TestNode {
    async fn start(tag: &str) -> TestNode {
        TestNode::start_with(tag, |_| {}).await
    }

    async fn start_with(tag: &str, adjust: impl FnOnce(&mut NodeConfig)) -> TestNode {
        TestNode::start_over(tag, adjust, false).await.0
    }

    /// A node over a file log this test opens itself, and that log (to
    /// append to it behind the node's back, as another writer would).
    async fn start_with_log(tag: &str) -> (TestNode, Arc<dyn Log>) {
        let (n, log) = TestNode::start_over(tag, |_| {}, true).await;
        (n, log.expect("the test's log"))
    }

    async fn start_over(
        tag: &str,
        adjust: impl FnOnce(&mut NodeConfig),
        own_log: bool,
    ) -> (TestNode, Option<Arc<dyn Log>>) {
        let dir = TempDir::new(tag);
        let mut cfg = NodeConfig {
            data_dir: dir.path().to_path_buf(),
            version: "9.9.9-test".into(),
            ..NodeConfig::default()
        };
        cfg.log.fsync = false;
        cfg.limits.wait_ms = 300;
        cfg.limits.account_rate = 0;
        cfg.http.drain_timeout_secs = 2;
        adjust(&mut cfg);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let (node, log) = if own_log {
            let fc = FileLogConfig {
                fsync: FsyncPolicy::Never,
                ..FileLogConfig::default()
            };
            let log: Arc<dyn Log> =
                Arc::new(FileLog::open(cfg.data_dir.join("log"), fc).expect("open file log"));
            let node = Node::start_with_logs(cfg, vec![Arc::clone(&log)]).expect("start node");
            (node, Some(log))
        } else {
            (Node::start(cfg).expect("start node"), None)
        };
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let served = tokio::spawn(tandem_node::server::serve(
            listener,
            Arc::clone(&node),
            async move {
                let _ = rx.await;
            },
            Duration::ZERO,
        ));
        let deadline = Instant::now() + WAIT;
        while !node.is_caught_up() {
            assert!(Instant::now() < deadline, "node did not catch up");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let n = TestNode {
            addr,
            node,
            http: Client::builder(TokioExecutor::new()).build_http(),
            shutdown: Some(tx),
            served: Some(served),
            _dir: dir,
        };
        (n, log)
    }

    fn grpc(&self) -> Grpc {
        let c = Client::builder(TokioExecutor::new())
            .http2_only(true)
            .build_http();
        OrderEntryClient::with_origin(c, format!("http://{}", self.addr).parse().expect("uri"))
    }

    /// One HTTP request: status, headers, JSON body (`Null` if not JSON).
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, HeaderMap, Value) {
        let body = body.map_or_else(Bytes::new, |b| Bytes::from(b.to_string()));
        let req = Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", self.addr))
            .header("content-type", "application/json")
            .body(Full::new(body))
            .expect("request");
        let resp = tokio::time::timeout(WAIT, self.http.request(req))
            .await
            .expect("http in time")
            .expect("http answer");
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.expect("body").to_bytes();
        let v = serde_json::from_slice(&body).unwrap_or(Value::Null);
        (parts.status, parts.headers, v)
    }

    async fn place(&self, order: Value) -> Value {
        let (st, _, v) = self.call(Method::POST, "/v1/orders", Some(order)).await;
        assert_eq!(st, StatusCode::OK, "{v}");
        v
    }

    /// Opens the WebSocket stream of `market` (`query` after `?`).
    async fn ws(&self, market: &str, query: &str) -> Ws {
        let tcp = TcpStream::connect(self.addr).await.expect("connect");
        let url = format!("ws://{}/v1/markets/{market}/stream{query}", self.addr);
        let (ws, resp) = tokio_tungstenite::client_async(url, tcp)
            .await
            .expect("websocket handshake");
        assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
        assert!(resp.headers().contains_key("x-tandem-seq"));
        ws
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

fn order(market: &str, id: &str, account: &str, side: &str, price: &str, qty: &str) -> Value {
    json!({"market": market, "id": id, "account": account, "side": side,
           "type": "limit", "price": price, "qty": qty})
}

fn pb_place(
    market: &str,
    id: &str,
    account: &str,
    side: pb::Side,
    price: &str,
    qty: &str,
) -> pb::PlaceOrderRequest {
    pb::PlaceOrderRequest {
        market: market.into(),
        id: id.into(),
        account: account.into(),
        side: side as i32,
        r#type: pb::OrderType::Limit as i32,
        price: Some(price.into()),
        qty: qty.into(),
        tif: pb::TimeInForce::Unspecified as i32,
        post_only: false,
    }
}

/// A proto event as the JSON event it mirrors.
fn event_json(e: &pb::Event) -> Value {
    let kind = pb::EventKind::try_from(e.kind).expect("known kind");
    let name = match kind {
        pb::EventKind::Accepted => "accepted",
        pb::EventKind::Trade => "trade",
        pb::EventKind::Cancelled => "cancelled",
        pb::EventKind::Amended => "amended",
        pb::EventKind::Rejected => "rejected",
        pb::EventKind::Unspecified => "unspecified",
    };
    let mut m = serde_json::Map::new();
    m.insert("seq".into(), e.seq.into());
    m.insert("event".into(), name.into());
    for (k, v) in [
        ("market", &e.market),
        ("id", &e.id),
        ("maker", &e.maker),
        ("taker", &e.taker),
        ("price", &e.price),
        ("qty", &e.qty),
        ("remaining", &e.remaining),
        ("reason", &e.reason),
    ] {
        if let Some(v) = v {
            m.insert(k.into(), v.clone().into());
        }
    }
    Value::Object(m)
}

fn reply_json(r: &pb::CommandReply) -> Value {
    json!({"partition": r.partition, "seq": r.seq,
           "events": r.events.iter().map(event_json).collect::<Vec<_>>()})
}

fn levels_json(l: &[pb::Level]) -> Value {
    l.iter().map(|l| json!([l.price, l.qty])).collect()
}

fn book_json(b: &pb::Book) -> Value {
    json!({"partition": b.partition, "seq": b.seq,
           "bids": levels_json(&b.bids), "asks": levels_json(&b.asks)})
}

fn order_json(o: &pb::Order) -> Value {
    let side = match pb::Side::try_from(o.side).expect("side") {
        pb::Side::Buy => "buy",
        pb::Side::Sell => "sell",
        pb::Side::Unspecified => "?",
    };
    let ty = match pb::OrderType::try_from(o.r#type).expect("type") {
        pb::OrderType::Limit => "limit",
        pb::OrderType::Market => "market",
        pb::OrderType::Unspecified => "?",
    };
    let status = match pb::OrderStatus::try_from(o.status).expect("status") {
        pb::OrderStatus::Open => "open",
        pb::OrderStatus::Filled => "filled",
        pb::OrderStatus::Cancelled => "cancelled",
        pb::OrderStatus::Unspecified => "?",
    };
    let mut v = json!({"market": o.market, "id": o.id, "account": o.account, "side": side,
        "type": ty, "qty": o.qty, "remaining": o.remaining, "status": status,
        "post_only": o.post_only});
    if let Some(p) = &o.price {
        v["price"] = p.clone().into();
    }
    v
}

fn token(md: &tonic::metadata::MetadataMap) -> String {
    md.get("x-tandem-seq")
        .expect("x-tandem-seq metadata")
        .to_str()
        .expect("ascii token")
        .to_owned()
}

/// The same commands through HTTP on one node and gRPC on another give the
/// same answers, reads and output hash.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_order_entry_and_reads_equal_http_answers() {
    let h = TestNode::start("grpc-eq-http").await;
    let g = TestNode::start("grpc-eq-grpc").await;
    let mut c = g.grpc();
    let m = "BTC-USD";

    // (HTTP body, gRPC request) pairs of the same places.
    let mut market_sell = pb_place(m, "o3", "carol", pb::Side::Sell, "1", "2");
    market_sell.r#type = pb::OrderType::Market as i32;
    market_sell.price = None;
    let mut post_only = pb_place(m, "o5", "bob", pb::Side::Sell, "101", "1");
    post_only.post_only = true;
    let mut fok = pb_place(m, "o6", "carol", pb::Side::Buy, "101", "5");
    fok.tif = pb::TimeInForce::Fok as i32;
    let places = [
        (
            order(m, "o1", "alice", "buy", "100.25", "1.5"),
            pb_place(m, "o1", "alice", pb::Side::Buy, "100.25", "1.5"),
        ),
        (
            order(m, "o2", "bob", "sell", "100", "0.5"),
            pb_place(m, "o2", "bob", pb::Side::Sell, "100", "0.5"),
        ),
        (
            json!({"market": m, "id": "o3", "account": "carol", "side": "sell", "type": "market", "qty": "2"}),
            market_sell,
        ),
        (
            order(m, "o4", "alice", "buy", "99", "1"),
            pb_place(m, "o4", "alice", pb::Side::Buy, "99", "1"),
        ),
        (
            json!({"market": m, "id": "o5", "account": "bob", "side": "sell", "type": "limit", "price": "101", "qty": "1", "post_only": true}),
            post_only,
        ),
        (
            json!({"market": m, "id": "o6", "account": "carol", "side": "buy", "type": "limit", "price": "101", "qty": "5", "tif": "fok"}),
            fok,
        ),
    ];
    for (body, req) in places {
        let want = h.place(body).await;
        let got = c.place_order(req).await.expect("place over gRPC");
        assert!(token(got.metadata()).starts_with("0:"));
        assert_eq!(reply_json(got.get_ref()), want);
    }

    // Amend, cancel, and a cancel of an order that is gone.
    let (st, _, want) = h
        .call(
            Method::PATCH,
            "/v1/orders/BTC-USD/o4",
            Some(json!({"account": "alice", "price": "99.5", "qty": "2"})),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    let got = c
        .amend_order(pb::AmendOrderRequest {
            market: m.into(),
            id: "o4".into(),
            account: "alice".into(),
            price: Some("99.5".into()),
            qty: Some("2".into()),
        })
        .await
        .expect("amend");
    assert_eq!(reply_json(got.get_ref()), want);
    assert_eq!(want["events"][0]["event"], "amended");
    for _ in 0..2 {
        let (st, _, want) = h
            .call(Method::DELETE, "/v1/orders/BTC-USD/o4?account=alice", None)
            .await;
        assert_eq!(st, StatusCode::OK);
        let got = c
            .cancel_order(pb::CancelOrderRequest {
                market: m.into(),
                id: "o4".into(),
                account: "alice".into(),
            })
            .await
            .expect("cancel");
        assert_eq!(reply_json(got.get_ref()), want);
    }

    // Reads.
    for id in ["o1", "o3", "o4", "o5"] {
        let (st, _, want) = h
            .call(
                Method::GET,
                &format!(
                    "/v1/orders/BTC-USD/{id}?account={}",
                    match id {
                        "o1" | "o4" => "alice",
                        "o3" => "carol",
                        _ => "bob",
                    }
                ),
                None,
            )
            .await;
        assert_eq!(st, StatusCode::OK, "{want}");
        let account = want["account"].as_str().expect("account").to_owned();
        let got = c
            .get_order(pb::GetOrderRequest {
                market: m.into(),
                id: id.into(),
                account,
            })
            .await
            .expect("get order");
        assert_eq!(order_json(got.get_ref()), want);
    }
    let (st, _, _) = h
        .call(Method::GET, "/v1/orders/BTC-USD/o1?account=mallory", None)
        .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let e = c
        .get_order(pb::GetOrderRequest {
            market: m.into(),
            id: "o1".into(),
            account: "mallory".into(),
        })
        .await
        .expect_err("another account's order");
    assert_eq!(e.code(), Code::NotFound);
    assert!(e.message().starts_with("id:"), "{}", e.message());
    assert!(e.metadata().contains_key("x-tandem-seq"));

    for depth in [0, 1] {
        let q = if depth == 0 {
            String::new()
        } else {
            format!("?depth={depth}")
        };
        let (st, _, want) = h
            .call(Method::GET, &format!("/v1/markets/BTC-USD/book{q}"), None)
            .await;
        assert_eq!(st, StatusCode::OK);
        let got = c
            .get_book(pb::GetBookRequest {
                market: m.into(),
                depth,
            })
            .await
            .expect("book");
        assert_eq!(book_json(got.get_ref()), want);
    }

    let (st, _, want) = h.call(Method::GET, "/v1/status", None).await;
    assert_eq!(st, StatusCode::OK);
    let got = c.get_status(pb::GetStatusRequest {}).await.expect("status");
    let s = got.get_ref();
    assert_eq!(s.version, "9.9.9-test");
    assert_eq!(s.role, want["role"]);
    assert!(s.ready);
    let hp = &want["partitions"][0];
    assert_eq!(s.partitions[0].applied_seq, hp["applied_seq"]);
    // Same commands, same order: the same output hash chain.
    assert_eq!(s.partitions[0].output_hash, hp["output_hash"]);
    assert!(!s.partitions[0].output_hash.is_empty());

    h.stop().await;
    g.stop().await;
}

/// Bad input is INVALID_ARGUMENT with the HTTP error message (which names
/// the field).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_invalid_input_is_invalid_argument_naming_the_field() {
    let n = TestNode::start("grpc-invalid").await;
    let mut c = n.grpc();
    let m = "ETH-USD";
    let good = || pb_place(m, "x1", "alice", pb::Side::Buy, "10", "1");
    let cases: Vec<(pb::PlaceOrderRequest, Value, &str)> = vec![
        (
            pb::PlaceOrderRequest {
                qty: "1e3".into(),
                ..good()
            },
            json!({"market": m, "id": "x1", "account": "alice", "side": "buy", "price": "10", "qty": "1e3"}),
            "qty",
        ),
        (
            pb::PlaceOrderRequest {
                qty: String::new(),
                ..good()
            },
            json!({"market": m, "id": "x1", "account": "alice", "side": "buy", "price": "10", "qty": ""}),
            "qty",
        ),
        (
            pb::PlaceOrderRequest { side: 0, ..good() },
            json!({"market": m, "id": "x1", "account": "alice", "price": "10", "qty": "1"}),
            "side",
        ),
        (
            pb::PlaceOrderRequest {
                price: Some("-1".into()),
                ..good()
            },
            json!({"market": m, "id": "x1", "account": "alice", "side": "buy", "price": "-1", "qty": "1"}),
            "price",
        ),
        (
            pb::PlaceOrderRequest { tif: 42, ..good() },
            json!({"market": m, "id": "x1", "account": "alice", "side": "buy", "price": "10", "qty": "1", "tif": 42}),
            "tif",
        ),
        (
            pb::PlaceOrderRequest {
                market: String::new(),
                ..good()
            },
            json!({"id": "x1", "account": "alice", "side": "buy", "price": "10", "qty": "1"}),
            "market",
        ),
        (
            pb::PlaceOrderRequest {
                account: String::new(),
                ..good()
            },
            json!({"market": m, "id": "x1", "side": "buy", "price": "10", "qty": "1"}),
            "account",
        ),
    ];
    for (req, body, field) in cases {
        let (st, _, want) = n.call(Method::POST, "/v1/orders", Some(body)).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{want}");
        let e = c.place_order(req).await.expect_err("invalid place");
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        assert_eq!(e.message(), want["error"], "field {field}");
        assert!(
            e.message().starts_with(&format!("{field}:")),
            "{}",
            e.message()
        );
    }
    // An amend with neither price nor qty, and a malformed one.
    for (price, qty, field) in [(None, None, "price"), (None, Some("0"), "qty")] {
        let e = c
            .amend_order(pb::AmendOrderRequest {
                market: m.into(),
                id: "x1".into(),
                account: "alice".into(),
                price,
                qty: qty.map(Into::into),
            })
            .await
            .expect_err("invalid amend");
        assert_eq!(e.code(), Code::InvalidArgument);
        assert!(
            e.message().starts_with(&format!("{field}:")),
            "{}",
            e.message()
        );
    }
    let e = c
        .cancel_order(pb::CancelOrderRequest {
            market: m.into(),
            id: String::new(),
            account: "a".into(),
        })
        .await
        .expect_err("cancel without id");
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().starts_with("id:"), "{}", e.message());
    let max = n.node.cfg.limits.max_depth as u32;
    let e = c
        .get_book(pb::GetBookRequest {
            market: m.into(),
            depth: max + 1,
        })
        .await
        .expect_err("depth too large");
    assert_eq!(e.code(), Code::InvalidArgument);
    let (_, _, want) = n
        .call(
            Method::GET,
            &format!("/v1/markets/{m}/book?depth={}", max + 1),
            None,
        )
        .await;
    assert_eq!(e.message(), want["error"]);

    // A malformed consistency token names the header.
    let mut req = tonic::Request::new(pb::GetBookRequest {
        market: m.into(),
        depth: 0,
    });
    req.metadata_mut()
        .insert("x-tandem-min-seq", "nonsense".parse().expect("ascii"));
    let e = c.get_book(req).await.expect_err("bad token");
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(
        e.message().starts_with("x-tandem-min-seq:"),
        "{}",
        e.message()
    );

    // Nothing was appended by any of it.
    let got = c.get_status(pb::GetStatusRequest {}).await.expect("status");
    assert_eq!(got.get_ref().partitions[0].applied_seq, 0);
    n.stop().await;
}

/// A retried place answers the original seq and events, over gRPC and
/// across gRPC and HTTP; another body with the same id is ALREADY_EXISTS;
/// the consistency token works as in HTTP; gRPC calls are counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_idempotent_retry_returns_the_same_seq() {
    let n = TestNode::start("grpc-retry").await;
    let mut c = n.grpc();
    let m = "SOL-USD";
    let req = pb_place(m, "r1", "alice", pb::Side::Buy, "20.5", "3");
    let first = c.place_order(req.clone()).await.expect("place");
    let tok = token(first.metadata());
    // `P:N`, then `@` and the log's short id when the node gives one.
    assert_eq!(
        tok.split('@').next(),
        Some(format!("0:{}", first.get_ref().seq).as_str()),
        "{tok}"
    );
    let again = c.place_order(req.clone()).await.expect("retry");
    assert_eq!(again.get_ref(), first.get_ref());
    let over_http = n.place(order(m, "r1", "alice", "buy", "20.5", "3")).await;
    assert_eq!(over_http, reply_json(first.get_ref()));
    let e = c
        .place_order(pb::PlaceOrderRequest {
            qty: "4".into(),
            ..req
        })
        .await
        .expect_err("same id, other body");
    assert_eq!(e.code(), Code::AlreadyExists);
    assert!(e.message().starts_with("id:"), "{}", e.message());

    // A token the node has reached is served; one far ahead is UNAVAILABLE
    // with retry-after, after the node's bound.
    let mut r = tonic::Request::new(pb::GetBookRequest {
        market: m.into(),
        depth: 0,
    });
    r.metadata_mut()
        .insert("x-tandem-min-seq", tok.parse().expect("ascii"));
    let b = c.get_book(r).await.expect("book at token");
    assert_eq!(
        b.get_ref().bids,
        vec![pb::Level {
            price: "20.5".into(),
            qty: "3".into()
        }]
    );
    let mut r = tonic::Request::new(pb::GetOrderRequest {
        market: m.into(),
        id: "r1".into(),
        account: "alice".into(),
    });
    r.metadata_mut()
        .insert("x-tandem-min-seq", "0:999999".parse().expect("ascii"));
    let e = c.get_order(r).await.expect_err("token ahead");
    assert_eq!(e.code(), Code::Unavailable);
    assert!(
        e.metadata().contains_key("retry-after"),
        "{:?}",
        e.metadata()
    );
    assert!(
        e.message().starts_with("x-tandem-min-seq:"),
        "{}",
        e.message()
    );

    let (_, _, _) = n.call(Method::GET, "/healthz", None).await;
    let metrics = n.node.metrics.render();
    assert!(
        metrics.contains("route=\"grpc\",status=\"200\""),
        "{metrics}"
    );
    assert!(
        metrics.contains("route=\"grpc\",status=\"409\""),
        "{metrics}"
    );
    assert!(
        metrics.contains("route=\"grpc\",status=\"503\""),
        "{metrics}"
    );
    n.stop().await;
}

/// An upgraded WebSocket connection still holds its connection slot: it is
/// counted as open while the stream lives, and its slot comes back when the
/// client closes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_stream_keeps_its_connection_slot() {
    let n = TestNode::start("ws-slot").await;
    let open = || n.node.metrics.open_connections();
    let mut ws = n.ws("BTC-USD", "").await;
    let snap = next_json(&mut ws).await;
    assert_eq!(snap["type"], "book");
    assert_eq!(open(), 1, "the stream's connection is counted");
    // Well after the upgrade (hyper's connection task, which held the slot
    // before, ended when it handed the stream over): an order placed over
    // HTTP and its events received on the stream.
    let a = n
        .place(order("BTC-USD", "s1", "alice", "buy", "100", "1"))
        .await;
    let ev = next_json(&mut ws).await;
    assert_eq!((&ev["type"], &ev["seq"]), (&json!("events"), &a["seq"]));
    // The stream's connection and the HTTP client's pooled one.
    let before = open();
    assert_eq!(before, 2, "the live stream still holds its slot");
    ws.close(None).await.expect("close");
    drop(ws);
    let deadline = tokio::time::Instant::now() + WAIT;
    while open() >= before {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the stream's slot was never given back"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(open(), 1, "only the HTTP client's connection is left");
    n.stop().await;
}

/// The WebSocket stream: a snapshot, then each command's events of that
/// market in seq order (exactly the HTTP answers' events), each followed by
/// the book when its top levels changed, and nothing from other markets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ws_stream_sends_snapshot_events_and_book_changes_in_order() {
    let n = TestNode::start("ws-order").await;
    let m = "BTC-USD";
    n.place(order(m, "a0", "zed", "sell", "105", "1")).await;
    let mut ws = n.ws(m, "?depth=2").await;
    let snap = next_json(&mut ws).await;
    let (_, _, book) = n
        .call(Method::GET, "/v1/markets/BTC-USD/book?depth=2", None)
        .await;
    assert_eq!(snap["type"], "book");
    assert_eq!(snap["seq"], book["seq"]);
    assert_eq!(snap["asks"], json!([["105", "1"]]));
    assert_eq!(snap["bids"], book["bids"]);

    // A resting order: its events, then the book.
    let a = n.place(order(m, "b1", "alice", "buy", "100", "1")).await;
    let ev = next_json(&mut ws).await;
    assert_eq!(ev["type"], "events");
    assert_eq!(ev["seq"], a["seq"]);
    assert_eq!(ev["events"], a["events"]);
    let b = next_json(&mut ws).await;
    assert_eq!(b["type"], "book");
    assert_eq!(b["seq"], a["seq"]);
    assert_eq!(b["bids"], json!([["100", "1"]]));
    assert_eq!(b["asks"], json!([["105", "1"]]));

    // Another market: nothing. A rejected cancel: events, no book (the
    // levels did not change). A trade: events then the book.
    n.place(order("ETH-USD", "e1", "alice", "buy", "1", "1"))
        .await;
    let (st, _, rej) = n
        .call(
            Method::DELETE,
            "/v1/orders/BTC-USD/nope?account=alice",
            None,
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    let ev = next_json(&mut ws).await;
    assert_eq!(ev["type"], "events");
    assert_eq!(ev["events"], rej["events"]);
    assert_eq!(ev["events"][0]["event"], "rejected");
    let t = n.place(order(m, "s1", "bob", "sell", "100", "0.4")).await;
    let ev = next_json(&mut ws).await;
    assert_eq!(
        ev["type"], "events",
        "no book after the rejected cancel: {ev}"
    );
    assert_eq!(ev["seq"], t["seq"]);
    assert_eq!(ev["events"], t["events"]);
    assert_eq!(ev["events"][1]["event"], "trade");
    let b = next_json(&mut ws).await;
    assert_eq!(b["type"], "book");
    assert_eq!(b["bids"], json!([["100", "0.6"]]));
    let (_, _, book) = n
        .call(Method::GET, "/v1/markets/BTC-USD/book?depth=2", None)
        .await;
    assert_eq!(b["seq"], book["seq"]);
    assert_eq!((&b["bids"], &b["asks"]), (&book["bids"], &book["asks"]));

    // A level below the top `depth` changes nothing the stream shows.
    n.place(order(m, "b2", "alice", "buy", "99", "1")).await;
    assert_eq!(next_json(&mut ws).await["type"], "events");
    assert_eq!(
        next_json(&mut ws).await["bids"],
        json!([["100", "0.6"], ["99", "1"]])
    );
    let deep = n.place(order(m, "b3", "alice", "buy", "98", "1")).await;
    let ev = next_json(&mut ws).await;
    assert_eq!(ev["seq"], deep["seq"]);
    let last = n.place(order(m, "b4", "alice", "buy", "100", "1")).await;
    let ev = next_json(&mut ws).await;
    assert_eq!(
        (&ev["type"], &ev["seq"]),
        (&json!("events"), &last["seq"]),
        "{ev}"
    );
    assert_eq!(
        next_json(&mut ws).await["bids"],
        json!([["100", "1.6"], ["99", "1"]])
    );

    ws.close(None).await.expect("close");
    n.stop().await;
}

/// Orders entered while subscribers join: each subscriber's events start
/// right after its snapshot's seq, never repeat or go back, and its last
/// book is the book the node then reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ws_snapshot_and_events_neither_miss_nor_repeat() {
    let n = Arc::new(TestNode::start("ws-gapless").await);
    let m = "BTC-USD";
    // Subscriber k starts joining once the writer has placed JOIN[k]
    // orders, and the writer goes on only once it has started, so every
    // subscription races with orders in flight (no timing hoped for).
    const JOIN: [u32; 4] = [10, 35, 60, 85];
    let (placed_tx, mut placed) = tokio::sync::watch::channel(0u32);
    let (joining_tx, joining) = tokio::sync::watch::channel(0usize);
    let writer = {
        let n = Arc::clone(&n);
        tokio::spawn(async move {
            let mut seqs = Vec::new();
            let mut joining = joining;
            for i in 0..120u32 {
                if let Some(k) = JOIN.iter().position(|&j| j == i) {
                    tokio::time::timeout(WAIT, joining.wait_for(|&j| j > k))
                        .await
                        .expect("subscriber started joining in time")
                        .expect("test alive");
                }
                let side = if i.is_multiple_of(3) { "sell" } else { "buy" };
                let price = format!("{}", 100 + (i % 7));
                let a = n
                    .place(order(
                        m,
                        &format!("g{i}"),
                        &format!("acct{}", i % 5),
                        side,
                        &price,
                        "1",
                    ))
                    .await;
                seqs.push(a["seq"].as_u64().expect("seq"));
                placed_tx.send_replace(i + 1);
            }
            seqs
        })
    };
    let mut subs = Vec::new();
    for (k, &at) in JOIN.iter().enumerate() {
        tokio::time::timeout(WAIT, placed.wait_for(|&p| p >= at))
            .await
            .expect("writer progressed in time")
            .expect("writer alive");
        joining_tx.send_replace(k + 1);
        let mut ws = n.ws(m, "?depth=1000").await;
        let snap = next_json(&mut ws).await;
        assert_eq!(snap["type"], "book");
        subs.push((ws, snap));
    }
    let seqs = writer.await.expect("writer");
    let end = *seqs.last().expect("orders");
    let (_, _, book) = n
        .call(Method::GET, "/v1/markets/BTC-USD/book?depth=1000", None)
        .await;
    // A last order far from the top marks the end of each stream: what a
    // subscriber reads before its events is everything up to `end`.
    let sentinel = n.place(order(m, "sentinel", "zed", "buy", "1", "1")).await["seq"]
        .as_u64()
        .expect("seq");
    assert!(sentinel > end);
    for (mut ws, snap) in subs {
        let start = snap["seq"].as_u64().expect("seq");
        assert!(start < sentinel, "snapshots were taken before the sentinel");
        let mut want: Vec<u64> = seqs.iter().copied().filter(|&s| s > start).collect();
        let mut got = Vec::new();
        let mut last_book = snap;
        loop {
            let v = next_json(&mut ws).await;
            match v["type"].as_str() {
                Some("events") if v["seq"].as_u64() == Some(sentinel) => break,
                Some("events") => got.push(v["seq"].as_u64().expect("seq")),
                Some("book") => {
                    assert!(
                        v["seq"].as_u64() >= got.last().copied(),
                        "book before its events"
                    );
                    last_book = v;
                }
                _ => panic!("unexpected {v}"),
            }
        }
        want.sort_unstable();
        assert_eq!(got, want, "events after snapshot seq {start}");
        assert_eq!(
            (&last_book["bids"], &last_book["asks"]),
            (&book["bids"], &book["asks"])
        );
    }
    Arc::try_unwrap(n).ok().expect("sole owner").stop().await;
}

/// A subscriber that falls further behind than the stream buffer is told
/// so and closed with the policy code, never silently skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ws_subscriber_that_lags_gets_an_error_and_a_policy_close() {
    let (n, log) = TestNode::start_with_log("ws-lag").await;
    let m = "LAG-USD";
    // A client with a small, fixed receive window: once the node's send
    // buffer is full too, the node cannot send and must fall behind.
    let sock = tokio::net::TcpSocket::new_v4().expect("socket");
    sock.set_recv_buffer_size(16 << 10).expect("SO_RCVBUF");
    let tcp = sock.connect(n.addr).await.expect("connect");
    let url = format!("ws://{}/v1/markets/{m}/stream?depth=1000", n.addr);
    let (mut ws, _) = tokio_tungstenite::client_async(url, tcp)
        .await
        .expect("websocket handshake");
    assert_eq!(next_json(&mut ws).await["type"], "book");
    // Commands straight into the log while this client reads nothing: their
    // messages (about 200 bytes each) are far more than the socket buffers
    // (at most 4 MiB) plus the stream buffer can hold.
    let total = 60_000;
    let last = tokio::task::spawn_blocking(move || {
        let pad = "x".repeat(40);
        let recs: Vec<Vec<u8>> = (0..total)
            .map(|i| {
                format!(
                    r#"{{"op":"place","market":"{m}","id":"{pad}{i}","account":"a{}","side":"buy","type":"limit","price":"{}","qty":"1"}}"#,
                    i % 97,
                    1 + i % 1000
                )
                .into_bytes()
            })
            .collect();
        let mut last = 0;
        for chunk in recs.chunks(5_000) {
            let refs: Vec<&[u8]> = chunk.iter().map(|r| &r[..]).collect();
            last = log.append(&refs).expect("append") + chunk.len() as u64 - 1;
        }
        last
    })
    .await
    .expect("append task");
    // Only once the replica has applied them all does the client read, so
    // the node was blocked while the replica went on.
    assert!(
        n.node.partitions[0].wait_applied(last, WAIT).await,
        "replica applied the commands"
    );
    // Now read: whatever was sent before the lag, then the error and the
    // close frame with 1008.
    let mut error = None;
    let close = loop {
        let msg = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("message in time")
            .expect("stream open")
            .expect("message");
        match msg {
            Message::Text(t) => {
                let v: Value = serde_json::from_str(&t).expect("json");
                if v["type"] == "error" {
                    error = Some(v);
                }
            }
            Message::Close(f) => break f,
            _ => {}
        }
    };
    let error = error.expect("an error message before the close");
    assert!(
        error["error"]
            .as_str()
            .expect("text")
            .starts_with("lagged:"),
        "{error}"
    );
    assert_eq!(close.expect("close frame").code, CloseCode::Policy);
    // The node is fine and counts the stream.
    let (st, _, _) = n.call(Method::GET, "/readyz", None).await;
    assert_eq!(st, StatusCode::OK);
    assert!(n
        .node
        .metrics
        .render()
        .contains("route=\"stream\",status=\"101\""));
    n.stop().await;
}

/// Before the upgrade the stream route answers like HTTP: 426 to a plain
/// GET, 400 naming `depth`, `x-tandem-seq` on the 101.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ws_route_refuses_plain_gets_and_bad_depth() {
    let n = TestNode::start("ws-refuse").await;
    let (st, _, v) = n
        .call(Method::GET, "/v1/markets/BTC-USD/stream", None)
        .await;
    assert_eq!(st, StatusCode::UPGRADE_REQUIRED, "{v}");
    assert!(v["error"].as_str().expect("error").starts_with("upgrade:"));
    for q in ["?depth=0", "?depth=x", "?depth=100000"] {
        let tcp = TcpStream::connect(n.addr).await.expect("connect");
        let url = format!("ws://{}/v1/markets/BTC-USD/stream{q}", n.addr);
        match tokio_tungstenite::client_async(url, tcp).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
                assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
                let body: Value = serde_json::from_slice(resp.body().as_deref().unwrap_or(b"null"))
                    .expect("json error");
                assert!(
                    body["error"].as_str().expect("error").starts_with("depth:"),
                    "{body}"
                );
            }
            other => panic!("{q}: expected a 400, got {other:?}"),
        }
    }
    n.stop().await;
}

#[tokio::test]
async fn market_streams_beyond_the_limit_get_503_and_a_closed_one_frees_its_place() {
    let n = TestNode::start_with("ws-limit", |c| c.limits.max_streams = 1).await;
    let mut first = n.ws("BTC-USD", "").await;
    assert_eq!(next_json(&mut first).await["type"], "book");
    let refused = |r| match r {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
            let body: Value =
                serde_json::from_slice(resp.body().as_deref().unwrap_or(b"null")).expect("json");
            assert!(
                body["error"]
                    .as_str()
                    .expect("error")
                    .starts_with("streams:"),
                "{body}"
            );
        }
        Err(e) => panic!("expected a 503, got {e}"),
        Ok(_) => panic!("expected a 503, got a stream"),
    };
    let url = format!("ws://{}/v1/markets/ETH-USD/stream", n.addr);
    let tcp = TcpStream::connect(n.addr).await.expect("connect");
    refused(
        tokio_tungstenite::client_async(url.clone(), tcp)
            .await
            .map(|_| ()),
    );
    drop(first);
    let deadline = Instant::now() + WAIT;
    loop {
        let tcp = TcpStream::connect(n.addr).await.expect("connect");
        if tokio_tungstenite::client_async(url.clone(), tcp)
            .await
            .is_ok()
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the closed stream never freed its place"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    n.stop().await;
}

/// The next item of a gRPC market stream.
async fn next_update(s: &mut tonic::Streaming<pb::MarketUpdate>) -> pb::market_update::Update {
    tokio::time::timeout(WAIT, s.message())
        .await
        .expect("in time")
        .expect("stream ok")
        .expect("stream open")
        .update
        .expect("an update")
}

/// The gRPC market stream is the same feed: the snapshot, then events and
/// books.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_stream_market_sends_book_then_events() {
    let n = TestNode::start("grpc-stream").await;
    let mut c = n.grpc();
    let m = "BTC-USD";
    n.place(order(m, "a0", "zed", "sell", "105", "1")).await;
    let resp = c
        .stream_market(pb::StreamMarketRequest {
            market: m.into(),
            depth: 5,
        })
        .await
        .expect("subscribe");
    assert!(resp.metadata().contains_key("x-tandem-seq"));
    let mut s = resp.into_inner();
    use pb::market_update::Update;
    let Update::Book(b) = next_update(&mut s).await else {
        panic!("book first")
    };
    assert_eq!(levels_json(&b.asks), json!([["105", "1"]]));
    let a = n.place(order(m, "b1", "alice", "buy", "104", "2")).await;
    let Update::Events(e) = next_update(&mut s).await else {
        panic!("events")
    };
    assert_eq!(json!(e.seq), a["seq"]);
    assert_eq!(
        json!(e.events.iter().map(event_json).collect::<Vec<_>>()),
        a["events"]
    );
    let Update::Book(b) = next_update(&mut s).await else {
        panic!("book after events")
    };
    assert_eq!(json!(b.seq), a["seq"]);
    assert_eq!(levels_json(&b.bids), json!([["104", "2"]]));
    drop(s);

    // A gRPC websocket-free client cannot subscribe with a bad depth.
    let e = c
        .stream_market(pb::StreamMarketRequest {
            market: m.into(),
            depth: 1_000_000,
        })
        .await
        .expect_err("bad depth");
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().starts_with("depth:"));

    // Draining ends open streams with UNAVAILABLE.
    let mut s = c
        .stream_market(pb::StreamMarketRequest {
            market: m.into(),
            depth: 0,
        })
        .await
        .expect("subscribe")
        .into_inner();
    let Update::Book(_) = next_update(&mut s).await else {
        panic!("book first")
    };
    n.node.start_draining();
    let e = tokio::time::timeout(WAIT, s.message())
        .await
        .expect("in time")
        .expect_err("ended by the drain");
    assert_eq!(e.code(), Code::Unavailable);
    assert!(e.message().starts_with("draining:"), "{}", e.message());
    n.stop().await;
}

/// A WebSocket client's pings are answered and streams close with 1001
/// when the node drains.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ws_streams_answer_pings_and_close_on_drain() {
    let n = TestNode::start("ws-drain").await;
    let mut ws = n.ws("BTC-USD", "").await;
    assert_eq!(next_json(&mut ws).await["type"], "book");
    ws.send(Message::Ping(Bytes::from_static(b"hi")))
        .await
        .expect("ping");
    let pong = tokio::time::timeout(WAIT, ws.next())
        .await
        .expect("pong in time")
        .expect("open")
        .expect("message");
    assert_eq!(pong, Message::Pong(Bytes::from_static(b"hi")));
    n.node.start_draining();
    let close = loop {
        match tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("close in time")
        {
            Some(Ok(Message::Close(f))) => break f,
            Some(Ok(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    assert_eq!(close.expect("frame").code, CloseCode::Away);
    n.stop().await;
}
