//! The streaming order entry (`tandem.v1.OrderEntry/Submit`) against
//! nodes run in this process (`Node::start_with_logs` over a file log the
//! test opens itself, `server::serve` on a loopback listener); two tests
//! wrap the log (`GatedLog`) to hold its appends (the node's appender
//! stalls) or its reads (the replica cannot catch up). gRPC goes
//! through the generated client over a hyper-util HTTP/2 client; HTTP
//! through a hyper-util HTTP/1.1 client, to compare the stream's answers
//! with the HTTP API's for the same orders.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::StreamExt;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};
use tandem_core::Command;
use tandem_log::conformance::TempDir;
use tandem_log::{FileLog, FileLogConfig, FsyncPolicy, Log, LogError, Record};
use tandem_node::auth::keys::SecretKey;
use tandem_node::auth::{to_hex, Policy, Scheme};
use tandem_node::config::AuthMode;
use tandem_node::grpc::pb;
use tandem_node::grpc::pb::order_entry_client::OrderEntryClient;
use tandem_node::grpc::pb::submit_reply::Result as Outcome;
use tandem_node::grpc::pb::submit_request::Command as Cmd;
use tandem_node::{Node, NodeConfig};
use tokio::sync::mpsc;
use tonic::Code;

type Grpc = OrderEntryClient<Client<HttpConnector, tonic::body::Body>>;
type Replies = tonic::Streaming<pb::SubmitReply>;

/// Bound on every wait of these tests.
const WAIT: Duration = Duration::from_secs(20);
const CHAIN_ID: u64 = 31337;

struct TestNode {
    addr: SocketAddr,
    node: Arc<Node>,
    log: Arc<dyn Log>,
    http: Client<HttpConnector, Full<Bytes>>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    served: Option<tokio::task::JoinHandle<()>>,
    _dir: TempDir,
}

impl TestNode {
    async fn start(tag: &str, auth: Option<AuthMode>) -> TestNode {
        TestNode::start_with(tag, auth, |_| {}).await
    }

    async fn start_with(
        tag: &str,
        auth: Option<AuthMode>,
        adjust: impl FnOnce(&mut NodeConfig),
    ) -> TestNode {
        TestNode::start_over(tag, auth, adjust, |l| Arc::new(l), true).await
    }

    /// A node over the file log `wrap` makes into its log; with
    /// `caught_up`, once its replica has caught up.
    async fn start_over(
        tag: &str,
        auth: Option<AuthMode>,
        adjust: impl FnOnce(&mut NodeConfig),
        wrap: impl FnOnce(FileLog) -> Arc<dyn Log>,
        caught_up: bool,
    ) -> TestNode {
        let dir = TempDir::new(tag);
        let mut cfg = NodeConfig {
            data_dir: dir.path().to_path_buf(),
            auth,
            ..NodeConfig::default()
        };
        cfg.signing.chain_id = CHAIN_ID;
        cfg.log.fsync = false;
        cfg.limits.wait_ms = 2_000;
        cfg.limits.account_rate = 0;
        cfg.http.drain_timeout_secs = 2;
        adjust(&mut cfg);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let fc = FileLogConfig {
            fsync: FsyncPolicy::Never,
            ..FileLogConfig::default()
        };
        let log = wrap(FileLog::open(cfg.data_dir.join("log"), fc).expect("open file log"));
        let node = Node::start_with_logs(cfg, vec![Arc::clone(&log)]).expect("start node");
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
        while caught_up && !node.is_caught_up() {
            assert!(Instant::now() < deadline, "node did not catch up");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        TestNode {
            addr,
            node,
            log,
            http: Client::builder(TokioExecutor::new()).build_http(),
            shutdown: Some(tx),
            served: Some(served),
            _dir: dir,
        }
    }

    fn grpc(&self) -> Grpc {
        let c = Client::builder(TokioExecutor::new())
            .http2_only(true)
            .build_http();
        OrderEntryClient::with_origin(c, format!("http://{}", self.addr).parse().expect("uri"))
    }

    /// One HTTP request: status and body (JSON, or the text as a string).
    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
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
        let v = serde_json::from_slice(&body)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()));
        (parts.status, v)
    }

    /// A counter of `/metrics` (`name` or `name{labels}`, then the value).
    async fn counter(&self, name: &str) -> u64 {
        let (st, v) = self.call(Method::GET, "/metrics", None).await;
        assert_eq!(st, StatusCode::OK);
        let text = v.as_str().expect("metrics text").to_owned();
        text.lines()
            .find_map(|l| {
                let rest = l.strip_prefix(name)?;
                if !(rest.starts_with('{') || rest.starts_with(' ')) {
                    return None;
                }
                rest.rsplit(' ').next()?.parse::<f64>().ok()
            })
            .map(|f| f as u64)
            .unwrap_or_else(|| panic!("no counter {name} in {text}"))
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

/// A `Submit` call fed from a channel: requests go out as the test sends
/// them, replies are read as they come.
struct Call {
    tx: mpsc::UnboundedSender<pb::SubmitRequest>,
    replies: Replies,
}

impl Call {
    async fn open(c: &mut Grpc) -> Call {
        let (tx, rx) = mpsc::unbounded_channel();
        let requests =
            futures_util::stream::unfold(
                rx,
                |mut rx| async move { rx.recv().await.map(|m| (m, rx)) },
            );
        let replies = tokio::time::timeout(WAIT, c.submit(requests))
            .await
            .expect("call opened in time")
            .expect("call accepted")
            .into_inner();
        Call { tx, replies }
    }

    fn send(&self, tag: u64, cmd: Cmd) {
        self.tx
            .send(pb::SubmitRequest {
                tag,
                command: Some(cmd),
                ..Default::default()
            })
            .expect("call open");
    }

    async fn next(&mut self) -> pb::SubmitReply {
        tokio::time::timeout(WAIT, self.replies.next())
            .await
            .expect("a reply in time")
            .expect("call open")
            .expect("a reply, not an error")
    }

    /// Sends one command and waits for its reply.
    async fn ask(&mut self, tag: u64, cmd: Cmd) -> pb::SubmitReply {
        self.send(tag, cmd);
        let r = self.next().await;
        assert_eq!(r.tag, tag);
        r
    }
}

fn place(id: &str, account: &str, side: pb::Side, price: &str, qty: &str) -> Cmd {
    Cmd::Place(pb::PlaceOrderRequest {
        market: "BTC-USD".into(),
        id: id.into(),
        account: account.into(),
        side: side as i32,
        r#type: pb::OrderType::Limit as i32,
        price: Some(price.into()),
        qty: qty.into(),
        tif: 0,
        post_only: false,
    })
}

fn ok(r: &pb::SubmitReply) -> &pb::CommandReply {
    match &r.result {
        Some(Outcome::Reply(c)) => c,
        other => panic!("tag {}: expected a reply, got {other:?}", r.tag),
    }
}

fn err(r: &pb::SubmitReply) -> &pb::SubmitError {
    match &r.result {
        Some(Outcome::Error(e)) => e,
        other => panic!("tag {}: expected an error, got {other:?}", r.tag),
    }
}

fn kinds(c: &pb::CommandReply) -> Vec<pb::EventKind> {
    c.events
        .iter()
        .map(|e| pb::EventKind::try_from(e.kind).expect("known kind"))
        .collect()
}

/// A proto reply as the HTTP answer it mirrors.
fn reply_json(r: &pb::CommandReply) -> Value {
    let events: Vec<Value> = r
        .events
        .iter()
        .map(|e| {
            let name = match pb::EventKind::try_from(e.kind).expect("known kind") {
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
        })
        .collect();
    json!({"partition": r.partition, "seq": r.seq, "events": events})
}

/// The HTTP answer's fields that the proto reply carries.
fn http_view(v: &Value) -> Value {
    let keep = [
        "seq",
        "event",
        "market",
        "id",
        "maker",
        "taker",
        "price",
        "qty",
        "remaining",
        "reason",
    ];
    let events: Vec<Value> = v["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| {
            let m = e.as_object().expect("event object");
            Value::Object(
                m.iter()
                    .filter(|(k, _)| keep.contains(&k.as_str()))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            )
        })
        .collect();
    json!({"partition": v["partition"], "seq": v["seq"], "events": events})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_places_amends_and_cancels_as_http_does() {
    let n = TestNode::start("stream-basic", None).await;
    let mut c = n.grpc();
    let mut call = Call::open(&mut c).await;

    let r = call
        .ask(1, place("s1", "alice", pb::Side::Sell, "100", "2"))
        .await;
    let placed = ok(&r).clone();
    assert_eq!(kinds(&placed), [pb::EventKind::Accepted]);
    // The same order again over HTTP is a retry: the original answer,
    // event for event.
    let (st, http) = n
        .call(
            Method::POST,
            "/v1/orders",
            Some(
                json!({"market":"BTC-USD","id":"s1","account":"alice","side":"sell",
                        "type":"limit","price":"100","qty":"2"}),
            ),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{http}");
    assert_eq!(reply_json(&placed), http_view(&http));

    // A crossing order trades with it.
    let r = call
        .ask(2, place("b1", "bob", pb::Side::Buy, "101", "0.5"))
        .await;
    let traded = ok(&r);
    assert_eq!(
        kinds(traded),
        [pb::EventKind::Accepted, pb::EventKind::Trade]
    );
    let trade = &traded.events[1];
    assert_eq!(
        (trade.maker.as_deref(), trade.taker.as_deref()),
        (Some("s1"), Some("b1"))
    );
    assert!(traded.seq > placed.seq);

    let r = call
        .ask(
            3,
            Cmd::Amend(pb::AmendOrderRequest {
                market: "BTC-USD".into(),
                id: "s1".into(),
                account: "alice".into(),
                price: Some("102".into()),
                qty: None,
            }),
        )
        .await;
    let amended = ok(&r);
    assert_eq!(kinds(amended), [pb::EventKind::Amended]);
    assert_eq!(amended.events[0].price.as_deref(), Some("102"));

    let r = call
        .ask(
            4,
            Cmd::Cancel(pb::CancelOrderRequest {
                market: "BTC-USD".into(),
                id: "s1".into(),
                account: "alice".into(),
            }),
        )
        .await;
    let cancelled = ok(&r);
    assert_eq!(kinds(cancelled), [pb::EventKind::Cancelled]);
    assert_eq!(cancelled.events[0].remaining.as_deref(), Some("1.5"));

    let (st, v) = n
        .call(Method::GET, "/v1/orders/BTC-USD/s1?account=alice", None)
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(
        (v["status"].as_str(), v["price"].as_str()),
        (Some("cancelled"), Some("102"))
    );
    // The client ends its half: the node ends the call cleanly.
    drop(call.tx);
    let end = tokio::time::timeout(WAIT, call.replies.next())
        .await
        .expect("end in time");
    assert!(end.is_none(), "{end:?}");
    n.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_pipelined_orders_are_all_acknowledged_and_readable() {
    const N: u64 = 1000;
    let n = TestNode::start("stream-pipelined", None).await;
    let batches_before = n.counter("tandem_log_append_batches_total").await;
    let commands_before = n.counter("tandem_log_append_commands_total").await;
    let mut c = n.grpc();
    // Every request is sent at once, without waiting for any reply.
    let requests: Vec<pb::SubmitRequest> = (0..N)
        .map(|i| pb::SubmitRequest {
            tag: 10_000 + i,
            command: Some(place(
                &format!("p{i}"),
                &format!("acct{}", i % 7),
                if i % 2 == 0 {
                    pb::Side::Buy
                } else {
                    pb::Side::Sell
                },
                // Buys below sells: nothing trades, every order rests.
                if i % 2 == 0 { "90" } else { "110" },
                "1",
            )),
            ..Default::default()
        })
        .collect();
    let mut replies =
        tokio::time::timeout(WAIT, c.submit(futures_util::stream::iter(requests.clone())))
            .await
            .expect("in time")
            .expect("call accepted")
            .into_inner();
    let mut tags = BTreeSet::new();
    let mut seqs = BTreeSet::new();
    while let Some(r) = tokio::time::timeout(WAIT, replies.next())
        .await
        .expect("replies in time")
    {
        let r = r.expect("no call error");
        let reply = ok(&r);
        assert_eq!(kinds(reply), [pb::EventKind::Accepted], "tag {}", r.tag);
        let i = r.tag - 10_000;
        assert_eq!(reply.events[0].id.as_deref(), Some(&*format!("p{i}")));
        assert!(tags.insert(r.tag), "tag {} answered twice", r.tag);
        assert!(seqs.insert(reply.seq), "seq {} given twice", reply.seq);
    }
    assert_eq!(tags.len() as u64, N, "every request answered");
    assert_eq!(tags.first(), Some(&10_000));
    assert_eq!(tags.last(), Some(&(10_000 + N - 1)));
    // Many were in flight at once: the appender batched them.
    let batches = n.counter("tandem_log_append_batches_total").await - batches_before;
    let commands = n.counter("tandem_log_append_commands_total").await - commands_before;
    assert_eq!(commands, N);
    assert!(batches < N / 2, "{N} orders in {batches} appends");
    assert_eq!(n.log.last_seq(), *seqs.last().expect("seqs"));
    // Each acknowledged order is there to read.
    for i in 0..N {
        let (st, v) = n
            .call(
                Method::GET,
                &format!("/v1/orders/BTC-USD/p{i}?account=acct{}", i % 7),
                None,
            )
            .await;
        assert_eq!(st, StatusCode::OK, "p{i}: {v}");
        assert_eq!(v["status"], "open", "p{i}");
    }
    n.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_request_gets_an_error_naming_the_field_and_the_stream_goes_on() {
    let n = TestNode::start("stream-bad", None).await;
    let mut c = n.grpc();
    let mut call = Call::open(&mut c).await;
    let before = n.log.last_seq();

    let mut no_side = place("x1", "alice", pb::Side::Buy, "10", "1");
    if let Cmd::Place(p) = &mut no_side {
        p.side = pb::Side::Unspecified as i32;
    }
    let mut bad_qty = place("x2", "alice", pb::Side::Buy, "10", "1");
    if let Cmd::Place(p) = &mut bad_qty {
        p.qty = "-3".into();
    }
    let no_id = Cmd::Cancel(pb::CancelOrderRequest {
        market: "BTC-USD".into(),
        id: String::new(),
        account: "alice".into(),
    });
    let cases: Vec<(u64, Option<Cmd>, &str)> = vec![
        (1, Some(no_side), "side: "),
        (2, Some(bad_qty), "qty: "),
        (3, Some(no_id), "id: missing"),
        (4, None, "command: missing"),
    ];
    for (tag, cmd, field) in cases {
        call.tx
            .send(pb::SubmitRequest {
                tag,
                command: cmd,
                ..Default::default()
            })
            .expect("open");
        let r = call.next().await;
        assert_eq!(r.tag, tag);
        let e = err(&r);
        assert_eq!(e.code, Code::InvalidArgument as u32, "{e:?}");
        assert_eq!(e.http_status, 400);
        assert!(e.message.starts_with(field), "{field}: {e:?}");
    }
    assert_eq!(n.log.last_seq(), before, "nothing appended");
    // The call is still up and takes orders.
    let r = call
        .ask(5, place("x3", "alice", pb::Side::Buy, "10", "1"))
        .await;
    assert_eq!(kinds(ok(&r)), [pb::EventKind::Accepted]);
    n.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_order_id_is_refused_as_http_refuses_it() {
    let n = TestNode::start("stream-duplicate", None).await;
    let mut c = n.grpc();
    let mut call = Call::open(&mut c).await;
    let first = call
        .ask(1, place("d1", "alice", pb::Side::Buy, "10", "1"))
        .await;
    let first = ok(&first).clone();
    // The same id with other fields: refused, 409, naming the id.
    let r = call
        .ask(2, place("d1", "alice", pb::Side::Buy, "11", "1"))
        .await;
    let e = err(&r);
    assert_eq!(
        (e.code, e.http_status),
        (Code::AlreadyExists as u32, 409),
        "{e:?}"
    );
    let (st, v) = n
        .call(
            Method::POST,
            "/v1/orders",
            Some(
                json!({"market":"BTC-USD","id":"d1","account":"alice","side":"buy",
                        "type":"limit","price":"11","qty":"1"}),
            ),
        )
        .await;
    assert_eq!(st, StatusCode::CONFLICT);
    assert_eq!(v["error"].as_str(), Some(e.message.as_str()));
    assert!(e.message.starts_with("id: "), "{e:?}");
    // The same order again is a retry: the original seq and events.
    let r = call
        .ask(3, place("d1", "alice", pb::Side::Buy, "10", "1"))
        .await;
    assert_eq!(ok(&r), &first);
    n.stop().await;
}

fn policy() -> Policy {
    Policy::new(CHAIN_ID, 300, 5)
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_node_refuses_a_bad_signature_on_the_stream_naming_the_field() {
    let n = TestNode::start("stream-signed", Some(AuthMode::Signed)).await;
    let key = SecretKey::derive(Scheme::Ed25519, 7, 0);
    let other = SecretKey::derive(Scheme::Ed25519, 7, 1);
    let account = key.account();
    let line = format!(
        r#"{{"op":"place","market":"BTC-USD","id":"g1","account":"{account}","side":"buy","type":"limit","price":"3","qty":"1"}}"#
    );
    let cmd: Command = tandem_codec::decode_command(line.as_bytes());
    let expiry = now() + 60;
    let good = key.sign(&cmd, expiry, &policy()).expect("signs");
    let wrong = other.sign(&cmd, expiry, &policy()).expect("signs");
    let order = place("g1", &account, pb::Side::Buy, "3", "1");
    let request = |tag: u64, sig: String, expiry: u64| pb::SubmitRequest {
        tag,
        command: Some(order.clone()),
        signature: sig,
        expiry,
    };
    let mut c = n.grpc();
    let mut call = Call::open(&mut c).await;
    let before = n.log.last_seq();

    let cases = [
        (1, String::new(), 0, 16, 401, "x-tandem-signature: "),
        (
            2,
            to_hex(&wrong.sig),
            expiry,
            16,
            401,
            "x-tandem-signature: ",
        ),
        (3, "zz".to_owned(), expiry, 3, 400, "x-tandem-signature: "),
        (4, to_hex(&good.sig), 0, 3, 400, "x-tandem-expiry: "),
    ];
    for (tag, sig, exp, code, http, field) in cases {
        call.tx.send(request(tag, sig, exp)).expect("open");
        let r = call.next().await;
        assert_eq!(r.tag, tag);
        let e = err(&r);
        assert_eq!((e.code, e.http_status), (code, http), "tag {tag}: {e:?}");
        assert!(e.message.starts_with(field), "tag {tag}: {e:?}");
    }
    assert_eq!(n.log.last_seq(), before, "nothing appended");
    // The call's own metadata does not sign its requests.
    let mut signed_call =
        tonic::Request::new(futures_util::stream::iter([request(5, String::new(), 0)]));
    signed_call.metadata_mut().insert(
        "x-tandem-signature",
        to_hex(&good.sig).parse().expect("hex"),
    );
    signed_call.metadata_mut().insert(
        "x-tandem-expiry",
        expiry.to_string().parse().expect("digits"),
    );
    let mut replies = c.submit(signed_call).await.expect("call").into_inner();
    let r = replies.next().await.expect("a reply").expect("no error");
    assert_eq!(err(&r).http_status, 401);
    // The right signature on the request is taken.
    call.tx
        .send(request(6, to_hex(&good.sig), expiry))
        .expect("open");
    let r = call.next().await;
    assert_eq!(kinds(ok(&r)), [pb::EventKind::Accepted]);
    assert_eq!(n.log.last_seq(), before + 1);
    n.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_node_ends_the_stream_after_answering_what_it_read() {
    let n = TestNode::start("stream-drain", None).await;
    let mut c = n.grpc();
    let mut call = Call::open(&mut c).await;
    let r = call
        .ask(1, place("r1", "alice", pb::Side::Buy, "10", "1"))
        .await;
    assert_eq!(kinds(ok(&r)), [pb::EventKind::Accepted]);
    n.node.start_draining();
    let end = tokio::time::timeout(WAIT, call.replies.next())
        .await
        .expect("the call ends in time")
        .expect("an item");
    let status = end.expect_err("the call ends with an error");
    assert_eq!(status.code(), Code::Unavailable);
    assert!(status.message().starts_with("draining:"), "{status:?}");
    n.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_over_the_size_limit_ends_the_call_resource_exhausted() {
    let n = TestNode::start_with("stream-too-big", None, |c| c.limits.max_body_bytes = 4096).await;
    let mut c = n.grpc();
    let mut call = Call::open(&mut c).await;
    let r = call
        .ask(1, place("t1", "alice", pb::Side::Buy, "10", "1"))
        .await;
    assert_eq!(kinds(ok(&r)), [pb::EventKind::Accepted]);
    call.send(
        2,
        place(&"x".repeat(5000), "alice", pb::Side::Buy, "10", "1"),
    );
    let end = tokio::time::timeout(WAIT, call.replies.next())
        .await
        .expect("the call ends in time")
        .expect("an item");
    let status = end.expect_err("the call ends with an error");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    n.stop().await;
}

/// A file log whose appends wait while it is held, and which records the
/// size of every batch appended: the test stalls the node's appender to
/// see how far the node reads a call ahead of its replies.
struct GatedLog {
    inner: FileLog,
    held: Mutex<bool>,
    /// Reads wait too while this is set (the replica cannot catch up).
    reads_held: Mutex<bool>,
    opened: Condvar,
    batches: Mutex<Vec<usize>>,
}

impl GatedLog {
    fn new(inner: FileLog, appends: bool, reads: bool) -> GatedLog {
        GatedLog {
            inner,
            held: Mutex::new(appends),
            reads_held: Mutex::new(reads),
            opened: Condvar::new(),
            batches: Mutex::new(Vec::new()),
        }
    }

    fn release(&self) {
        *self.held.lock().expect("gate") = false;
        self.opened.notify_all();
    }

    fn release_reads(&self) {
        *self.reads_held.lock().expect("gate") = false;
        self.opened.notify_all();
    }
}

impl Log for GatedLog {
    fn append(&self, records: &[&[u8]]) -> Result<u64, LogError> {
        self.batches.lock().expect("batches").push(records.len());
        let mut held = self.held.lock().expect("gate");
        while *held {
            held = self.opened.wait(held).expect("gate");
        }
        drop(held);
        self.inner.append(records)
    }
    fn read_from(&self, from: u64, max: usize) -> Result<Vec<Record>, LogError> {
        let mut held = self.reads_held.lock().expect("gate");
        while *held {
            held = self.opened.wait(held).expect("gate");
        }
        drop(held);
        self.inner.read_from(from, max)
    }
    fn wait_for(&self, after: u64, timeout: Duration) -> Result<u64, LogError> {
        self.inner.wait_for(after, timeout)
    }
    fn first_seq(&self) -> u64 {
        self.inner.first_seq()
    }
    fn last_seq(&self) -> u64 {
        self.inner.last_seq()
    }
    fn truncate_before(&self, seq: u64) -> Result<(), LogError> {
        self.inner.truncate_before(seq)
    }
    fn identity(&self) -> String {
        self.inner.identity()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_log_stops_the_node_reading_a_call_at_the_in_flight_bound() {
    let bound = tandem_node::grpc::SUBMIT_IN_FLIGHT;
    let total = 3 * bound as u64;
    let gate: Arc<std::sync::OnceLock<Arc<GatedLog>>> = Arc::default();
    let keep = Arc::clone(&gate);
    let n = TestNode::start_over(
        "stream-stalled",
        None,
        // The appender would take everything queued in one batch.
        |c| c.log.max_batch = 65_535,
        move |inner| {
            let g = Arc::new(GatedLog::new(inner, true, false));
            let _ = keep.set(Arc::clone(&g));
            g
        },
        true,
    )
    .await;
    let g = Arc::clone(gate.get().expect("the node's log"));
    let mut c = n.grpc();
    let requests = (0..total).map(|i| pb::SubmitRequest {
        tag: i,
        command: Some(place(&format!("h{i}"), "dave", pb::Side::Buy, "40", "1")),
        ..Default::default()
    });
    let mut replies = c
        .submit(futures_util::stream::iter(requests))
        .await
        .expect("call accepted")
        .into_inner();
    // The first append is held: give the node time to read all it will.
    let deadline = Instant::now() + WAIT;
    while g.batches.lock().expect("batches").is_empty() {
        assert!(Instant::now() < deadline, "no append began");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    g.release();
    let mut answered = 0u64;
    while let Some(r) = tokio::time::timeout(WAIT, replies.next())
        .await
        .expect("replies in time")
    {
        let r = r.expect("no call error");
        assert_eq!(kinds(ok(&r)), [pb::EventKind::Accepted], "tag {}", r.tag);
        answered += 1;
    }
    assert_eq!(answered, total, "every request answered, none refused");
    let batches = g.batches.lock().expect("batches").clone();
    assert_eq!(batches.iter().sum::<usize>() as u64, total);
    // At no time did the node hold more than `bound` of the call's
    // requests, so no batch is larger; and it did read ahead that far
    // while the log was stalled.
    let largest = batches.iter().copied().max().unwrap_or(0);
    assert!(largest <= bound, "a batch of {largest}: {batches:?}");
    assert!(
        largest >= bound / 2,
        "the node read little ahead: {batches:?}"
    );
    n.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_still_catching_up_answers_each_request_unavailable() {
    let gate: Arc<std::sync::OnceLock<Arc<GatedLog>>> = Arc::default();
    let keep = Arc::clone(&gate);
    let n = TestNode::start_over(
        "stream-catching-up",
        None,
        |_| {},
        move |inner| {
            let g = Arc::new(GatedLog::new(inner, false, true));
            let _ = keep.set(Arc::clone(&g));
            g
        },
        false,
    )
    .await;
    let g = Arc::clone(gate.get().expect("the node's log"));
    assert!(!n.node.is_caught_up());
    let mut c = n.grpc();
    let mut call = Call::open(&mut c).await;
    let r = call
        .ask(1, place("c1", "alice", pb::Side::Buy, "10", "1"))
        .await;
    let e = err(&r);
    assert_eq!(
        (e.code, e.http_status),
        (Code::Unavailable as u32, 503),
        "{e:?}"
    );
    assert!(e.message.starts_with("catching up"), "{e:?}");
    assert!(e.retry_after > 0, "{e:?}");
    assert!(
        g.batches.lock().expect("batches").is_empty(),
        "nothing appended"
    );
    // Once caught up, the same call takes the order.
    g.release_reads();
    let deadline = Instant::now() + WAIT;
    while !n.node.is_caught_up() {
        assert!(Instant::now() < deadline, "node did not catch up");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let r = call
        .ask(2, place("c1", "alice", pb::Side::Buy, "10", "1"))
        .await;
    assert_eq!(kinds(ok(&r)), [pb::EventKind::Accepted]);
    n.stop().await;
}
