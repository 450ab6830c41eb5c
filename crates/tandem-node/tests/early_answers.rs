//! Answers a node gives before (or instead of) reading a request, to a
//! client that writes its whole request before reading (as Python's
//! `http.client` does): an over-limit body (8 MiB and 100 KiB) gets the
//! `413` with its JSON error and `connection: close`, and a clean close
//! rather than a reset; a head over the limit gets `431` and a malformed
//! head `400`, each with the JSON error and the headers every node answer
//! carries. Over raw TCP, on a node served in this process.

mod common;

use std::net::SocketAddr;

use common::{Conn, Resp, TempDir};
use tandem_node::{Node, NodeConfig};

struct TestNode {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    _rt: tokio::runtime::Runtime,
    _dir: TempDir,
}

impl TestNode {
    fn start() -> TestNode {
        let dir = TempDir::new("early-answers");
        let mut cfg = NodeConfig {
            data_dir: dir.path().to_path_buf(),
            ..NodeConfig::default()
        };
        cfg.log.fsync = false;
        cfg.http.drain_timeout_secs = 5;
        let (rt, listener, addr) = common::runtime_and_listener();
        let node = Node::start(cfg).expect("start node");
        let tx = common::serve_node(&rt, listener, &node);
        common::wait_caught_up(&node);
        TestNode {
            addr,
            stop: Some(tx),
            _rt: rt,
            _dir: dir,
        }
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        let _ = self.stop.take().map(|s| s.send(()));
    }
}

/// Writes a place's head and `len` body bytes, all before reading.
fn post_whole_body(addr: SocketAddr, len: usize) -> (Conn, Resp) {
    let mut c = Conn::open(addr).expect("connect");
    let mut req = format!(
        "POST /v1/orders HTTP/1.1\r\nhost: n\r\ncontent-type: application/json\r\ncontent-length: {len}\r\n\r\n"
    )
    .into_bytes();
    req.resize(req.len() + len, b' ');
    c.write_raw(&req)
        .expect("the node reads (or discards) the whole body");
    let r = c.read_response().expect("the 413, not a reset");
    (c, r)
}

fn assert_node_error(r: &Resp, status: u16, field: &str) {
    assert_eq!(r.status, status, "{r}");
    assert!(r.error().starts_with(field), "{r}");
    assert_eq!(r.header("content-type"), Some("application/json"), "{r}");
    assert!(r.header("x-tandem-seq").is_some(), "{r}");
    assert!(r.header("x-tandem-version").is_some(), "{r}");
}

#[test]
fn an_8_mib_body_written_before_reading_gets_the_413_and_a_clean_close() {
    let n = TestNode::start();
    let (mut c, r) = post_whole_body(n.addr, 8 << 20);
    assert_node_error(&r, 413, "body:");
    assert_eq!(r.header("connection"), Some("close"), "{r}");
    assert!(c.is_closed_by_peer());
}

#[test]
fn a_100_kib_body_gets_413_with_connection_close() {
    let n = TestNode::start();
    let (mut c, r) = post_whole_body(n.addr, 100 << 10);
    assert_node_error(&r, 413, "body:");
    assert_eq!(r.header("connection"), Some("close"), "{r}");
    assert!(c.is_closed_by_peer());
}

#[test]
fn hyper_own_431_and_400_carry_the_json_error_and_the_node_headers() {
    let n = TestNode::start();
    let mut c = Conn::open(n.addr).unwrap();
    let big = "a".repeat(64 << 10);
    c.write_raw(format!("GET /v1/status HTTP/1.1\r\nhost: n\r\nx-big: {big}\r\n\r\n").as_bytes())
        .unwrap();
    let r = c.read_response().expect("the 431, not a reset");
    assert_node_error(&r, 431, "headers:");
    assert_eq!(r.header("connection"), Some("close"), "{r}");
    let mut c = Conn::open(n.addr).unwrap();
    c.write_raw(b"GET /v1/status HTTP/1.1\r\nhost: n\r\nno colon\r\n\r\n")
        .unwrap();
    let r = c.read_response().expect("the 400");
    assert_node_error(&r, 400, "request:");
    // The node carries on.
    let r = common::request(n.addr, "GET", "/v1/status", &[], b"").unwrap();
    assert_eq!(r.status, 200, "{r}");
}
