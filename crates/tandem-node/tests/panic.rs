//! A request that panics gets 500 and nothing else changes. The node's
//! own service is wrapped by a test service that, for one path, panics
//! inside the request while holding the partition's answer maps and a
//! metrics lock (as a bug in a handler would), and otherwise hands the
//! request to the node. Served by the same scaffold the node runs on:
//! the panicking request is answered 500 with the JSON error and the
//! node's headers, the panic is counted, and every request after it,
//! on the same connection and on new ones, is answered as before.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{event_names, place_body, request, Conn, TempDir};
use http::{HeaderMap, Request, Response};
use hyper::body::Incoming;
use tandem_conn::server::{BoxBody, Service, Stop};
use tandem_node::server::NodeService;
use tandem_node::{Node, NodeConfig};

struct PanicsOnce {
    inner: Arc<NodeService>,
    node: Arc<Node>,
}

impl Service for PanicsOnce {
    async fn call(self: Arc<Self>, req: Request<Incoming>) -> Response<BoxBody> {
        if req.uri().path() == "/test/panic" {
            self.node.partitions[0].panic_holding_locks();
        }
        Arc::clone(&self.inner).call(req).await
    }
    fn answer_headers(&self, h: &mut HeaderMap) {
        self.inner.answer_headers(h)
    }
    fn panicked(&self) {
        self.inner.panicked()
    }
}

#[test]
fn a_request_that_panics_gets_500_and_nothing_else_changes() {
    let dir = TempDir::new("panic");
    let mut cfg = NodeConfig {
        data_dir: dir.path().to_path_buf(),
        ..NodeConfig::default()
    };
    cfg.log.fsync = false;
    cfg.limits.account_rate = 0;
    let (rt, listener, addr) = common::runtime_and_listener();
    let node = Node::start(cfg).expect("node");
    let svc = Arc::new(PanicsOnce {
        inner: NodeService::new(Arc::clone(&node), Duration::ZERO),
        node: Arc::clone(&node),
    });
    let limits = tandem_node::server::limits(&node, Duration::ZERO);
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let served = rt.spawn(tandem_conn::server::serve(
        listener,
        svc,
        limits,
        async move {
            let _ = rx.await;
            Stop::Drain
        },
    ));
    common::wait_caught_up(&node);

    let mut conn = Conn::open(addr).expect("connect");
    let body = place_body("M", "o1", "acc", "buy", "10", "1");
    let first = conn
        .send("POST", "/v1/orders", &[], body.as_bytes())
        .expect("place");
    assert_eq!(first.status, 200, "{first}");

    let boom = conn
        .send("GET", "/test/panic", &[], b"")
        .expect("an answer, not a reset");
    assert_eq!(boom.status, 500, "{boom}");
    assert!(boom.error().contains("internal"), "{boom}");
    assert!(boom.header("x-tandem-seq").is_some(), "{boom}");

    // The same connection, then new ones: answered as before.
    let again = conn
        .send("POST", "/v1/orders", &[], body.as_bytes())
        .expect("retry");
    assert_eq!((again.status, &again.body), (200, &first.body), "{again}");
    let second = place_body("M", "o2", "acc", "sell", "11", "2");
    let o2 = request(addr, "POST", "/v1/orders", &[], second.as_bytes()).expect("place o2");
    assert_eq!(event_names(&o2.json()), ["accepted"], "{o2}");
    let c = request(addr, "DELETE", "/v1/orders/M/o2?account=acc", &[], b"").expect("cancel");
    assert_eq!(event_names(&c.json()), ["cancelled"], "{c}");
    let o1 = request(addr, "GET", "/v1/orders/M/o1?account=acc", &[], b"").expect("read");
    assert_eq!(o1.json()["status"], "open", "{o1}");
    assert_eq!(
        request(addr, "GET", "/readyz", &[], b"")
            .expect("ready")
            .status,
        200
    );
    let m = request(addr, "GET", "/metrics", &[], b"")
        .expect("metrics")
        .text();
    let panics = m
        .lines()
        .find(|l| l.starts_with("tandem_http_panics_total"))
        .unwrap_or_else(|| panic!("no panic counter:\n{m}"));
    assert!(panics.ends_with(" 1"), "{panics}");

    let _ = tx.send(());
    rt.block_on(async { tokio::time::timeout(Duration::from_secs(30), served).await })
        .expect("drained")
        .expect("served");
    node.stop();
}
