//! The node's OpenAPI description (`crates/tandem-node/openapi.json`,
//! served at `GET /openapi.json`) kept equal to its router, and the node
//! fuzzed from it:
//!
//! - the (method, path) pairs the description lists are exactly
//!   `api::ROUTES`, the table `route_of` reads, and each operation is named
//!   as its route is in metrics;
//! - a node served in this process answers every described operation with
//!   a status that operation lists (never the router's 404 or 405), every
//!   other method on a described path with 405 and an `allow` header naming
//!   the described ones, and `GET /openapi.json` with the description.
//!
//! Schemathesis fuzzes a node and an edge in front of it from this
//! description in `crates/tandem-edge/tests/openapi.rs`.

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{place_body, request, Resp, TempDir};
use http::Method;
use serde_json::Value;
use tandem_node::api::{self, ROUTES};
use tandem_node::{Node, NodeConfig};

/// Methods tried on every described path.
const METHODS: [&str; 5] = ["GET", "POST", "PUT", "PATCH", "DELETE"];

fn description() -> Value {
    serde_json::from_str(api::OPENAPI_JSON).expect("openapi.json is JSON")
}

/// Every operation of the description: (METHOD, path template) → operation.
fn operations(doc: &Value) -> Vec<(String, String, Value)> {
    let mut ops = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (key, op) in item.as_object().expect("path item") {
            let method = key.to_ascii_uppercase();
            if Method::from_bytes(method.as_bytes()).is_ok()
                && op.is_object()
                && key != "parameters"
            {
                ops.push((method, path.clone(), op.clone()));
            }
        }
    }
    ops
}

/// A path the template fits: `{market}` → `BTC-USD`, `{id}` → `o1`,
/// `{partition}` → `0`.
fn concrete(template: &str) -> String {
    template
        .replace("{market}", "BTC-USD")
        .replace("{id}", "o1")
        .replace("{partition}", "0")
}

#[test]
fn the_description_lists_exactly_the_routes_of_the_router() {
    let doc = description();
    assert_eq!(doc["openapi"], "3.1.0");
    let described: BTreeSet<(String, String)> = operations(&doc)
        .into_iter()
        .map(|(m, p, _)| (m, p))
        .collect();
    let routed: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|r| (r.method.to_owned(), r.path.to_owned()))
        .collect();
    let undescribed: Vec<_> = routed.difference(&described).collect();
    let unrouted: Vec<_> = described.difference(&routed).collect();
    assert!(
        undescribed.is_empty() && unrouted.is_empty(),
        "routes without a description: {undescribed:?}; described routes the router does not \
         have: {unrouted:?}"
    );
    assert_eq!(routed.len(), ROUTES.len(), "a route is listed twice");
    for (method, path, op) in operations(&doc) {
        let m = Method::from_bytes(method.as_bytes()).unwrap();
        let name = api::route_of(&m, &concrete(&path));
        assert_eq!(op["operationId"], name, "{method} {path}");
        for status in op["responses"].as_object().expect("responses").keys() {
            assert!(
                status.len() == 3 && status.bytes().all(|b| b.is_ascii_digit()),
                "{method} {path}: response {status:?} is not one status (no ranges, no default)"
            );
        }
    }
}

/// A node served in this process (file log in `dir`).
struct TestNode {
    addr: SocketAddr,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    _rt: tokio::runtime::Runtime,
}

impl TestNode {
    fn start(dir: &TempDir) -> TestNode {
        let mut cfg = NodeConfig {
            data_dir: dir.path().to_path_buf(),
            ..NodeConfig::default()
        };
        cfg.log.fsync = false;
        cfg.limits.account_rate = 0;
        cfg.http.drain_timeout_secs = 2;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let node = Node::start(cfg).expect("start node");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        rt.spawn(tandem_node::server::serve(
            listener,
            Arc::clone(&node),
            async move {
                let _ = rx.await;
            },
            Duration::ZERO,
        ));
        let deadline = Instant::now() + Duration::from_secs(30);
        while !node.is_caught_up() {
            assert!(Instant::now() < deadline, "node did not catch up");
            std::thread::sleep(Duration::from_millis(10));
        }
        TestNode {
            addr,
            shutdown: Some(tx),
            _rt: rt,
        }
    }

    fn call(&self, method: &str, path: &str, body: &[u8]) -> Resp {
        request(self.addr, method, path, &[], body)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// The answer's `{"error":..}` message, if it has one.
fn error_of(r: &Resp) -> String {
    serde_json::from_slice::<Value>(&r.body)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

#[test]
fn every_described_operation_is_answered_and_other_methods_are_405() {
    let dir = TempDir::new("node-openapi-routes");
    let n = TestNode::start(&dir);
    let doc = description();
    let ops = operations(&doc);
    // The order entry routes in order (place, then cancel, amend, read),
    // so that they act on an order that exists.
    let mut answered = 0;
    for route in ROUTES {
        let (_, _, op) = ops
            .iter()
            .find(|(m, p, _)| m == route.method && p == route.path)
            .unwrap_or_else(|| panic!("{} {} is not described", route.method, route.path));
        let mut path = concrete(route.path);
        if route.path.starts_with("/v1/orders/") && route.method != "PATCH" {
            path.push_str("?account=a1");
        }
        let body = match route.name {
            "place" => place_body("BTC-USD", "o1", "a1", "buy", "100", "2"),
            "amend" => r#"{"account":"a1","qty":"1"}"#.to_owned(),
            _ => String::new(),
        };
        let r = n.call(route.method, &path, body.as_bytes());
        let listed = op["responses"].get(r.status.to_string()).is_some();
        let err = error_of(&r);
        assert!(
            listed && !err.starts_with("path: no route") && !err.starts_with("method:"),
            "{} {path} ({}): answered {r}, which the description does not list for it or is \
             the router's own refusal",
            route.method,
            route.name
        );
        answered += 1;
    }
    assert_eq!(answered, ROUTES.len());

    let served = n.call("GET", "/openapi.json", b"");
    assert_eq!(served.status, 200);
    assert_eq!(served.header("content-type"), Some("application/json"));
    assert_eq!(served.body, api::OPENAPI_JSON.as_bytes());

    for (path, item) in doc["paths"].as_object().unwrap() {
        let described: BTreeSet<String> = METHODS
            .iter()
            .filter(|m| item.get(m.to_ascii_lowercase()).is_some())
            .map(|m| m.to_string())
            .collect();
        for m in METHODS.iter().filter(|m| !described.contains(**m)) {
            let r = n.call(m, &concrete(path), b"");
            assert_eq!(r.status, 405, "{m} {path}: {r}");
            assert!(error_of(&r).starts_with("method:"), "{m} {path}: {r}");
            let allow: BTreeSet<String> = r
                .header("allow")
                .unwrap_or_else(|| panic!("{m} {path}: 405 without allow: {r}"))
                .split(',')
                .map(|s| s.trim().to_owned())
                .collect();
            assert_eq!(allow, described, "{m} {path}: allow");
        }
    }
    let r = n.call("GET", "/v1/nothing/here", b"");
    assert_eq!(r.status, 404, "{r}");
}
