//! Answers the edge gives before (or instead of) reading a request, to a
//! client that writes its whole request before reading: an over-limit
//! body (8 MiB and 100 KiB) gets the `413` JSON with `connection: close`
//! and a clean close, not a reset; a head over the limit gets `431` and a
//! malformed head `400`, with the JSON error; a malformed `account=`
//! escape is a `400` naming `account`. And a handler that panics gets
//! `500` JSON, counted, while the edge keeps serving. Over raw TCP.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http::{Response, StatusCode};
use http_body_util::{BodyExt, Full};
use tandem_edge::config::Role;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Writes all of `req` before reading, then reads to the close; `None` if
/// the connection was reset (the answer then is lost).
async fn exchange(addr: SocketAddr, req: &[u8]) -> Option<String> {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(req).await.ok()?;
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut out))
        .await
        .expect("the edge closes after its answer")
        .ok()?;
    Some(String::from_utf8_lossy(&out).into_owned())
}

fn header<'a>(raw: &'a str, name: &str) -> Option<&'a str> {
    let head = raw.split("\r\n\r\n").next()?;
    head.split("\r\n").find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// The `error` of the JSON body.
fn error(raw: &str) -> String {
    let body = raw.split_once("\r\n\r\n").map(|x| x.1).unwrap_or("");
    let v: serde_json::Value =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {raw}"));
    v["error"].as_str().expect("error string").to_owned()
}

async fn edge() -> (MockNode, TestEdge) {
    let node = MockNode::start("n0").await;
    let cfg = edge_config(vec![cluster(
        "c0",
        Role::Stable,
        100,
        &[(node.addr, "z-a")],
    )]);
    let e = TestEdge::start(cfg, None).await;
    (node, e)
}

fn post(len: usize) -> Vec<u8> {
    let mut req = format!(
        "POST /v1/orders HTTP/1.1\r\nhost: e\r\ncontent-type: application/json\r\ncontent-length: {len}\r\n\r\n"
    )
    .into_bytes();
    req.resize(req.len() + len, b' ');
    req
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_limit_bodies_written_before_reading_get_the_413_with_connection_close() {
    let (_n, e) = edge().await;
    for len in [8 << 20, 100 << 10] {
        let raw = exchange(e.public, &post(len))
            .await
            .unwrap_or_else(|| panic!("{len} bytes: reset instead of the 413"));
        assert_eq!(raw_status(&raw), Some(413), "{raw}");
        assert!(error(&raw).starts_with("body:"), "{raw}");
        assert_eq!(header(&raw, "connection"), Some("close"), "{raw}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hyper_own_431_and_400_and_a_bad_account_escape_carry_the_json_error() {
    let (_n, e) = edge().await;
    let big = "a".repeat(64 << 10);
    let raw = exchange(
        e.public,
        format!("GET /v1/status HTTP/1.1\r\nhost: e\r\nx-big: {big}\r\n\r\n").as_bytes(),
    )
    .await
    .expect("the 431, not a reset");
    assert_eq!(raw_status(&raw), Some(431), "{raw}");
    assert!(error(&raw).starts_with("headers:"), "{raw}");
    let raw = exchange(
        e.public,
        b"GET /v1/status HTTP/1.1\r\nhost: e\r\nno colon\r\n\r\n",
    )
    .await
    .expect("the 400");
    assert_eq!(raw_status(&raw), Some(400), "{raw}");
    assert!(error(&raw).starts_with("request:"), "{raw}");
    let raw = exchange(
        e.public,
        b"GET /v1/orders/M/o1?account=a%zz HTTP/1.1\r\nhost: e\r\nconnection: close\r\n\r\n",
    )
    .await
    .expect("the 400");
    assert_eq!(raw_status(&raw), Some(400), "{raw}");
    assert!(error(&raw).starts_with("account:"), "{raw}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_handler_gets_500_and_the_edge_keeps_serving() {
    let node = MockNode::start("n0").await;
    let cfg = edge_config(vec![cluster(
        "c0",
        Role::Stable,
        100,
        &[(node.addr, "z-a")],
    )]);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let edge = tandem_edge::Edge::new(cfg);
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(tandem_edge::serve(
        listener,
        Arc::clone(&edge),
        |e, r| async move {
            if r.uri().path() == "/panic" {
                panic!("a handler bug");
            }
            let _ = e;
            Response::new(
                Full::new(Bytes::from_static(b"ok"))
                    .map_err(|never| match never {})
                    .boxed_unsync(),
            )
        },
        async move {
            let _ = rx.await;
        },
        Duration::from_secs(5),
    ));
    let get = |path: &str| {
        format!("GET {path} HTTP/1.1\r\nhost: e\r\nconnection: close\r\n\r\n").into_bytes()
    };
    let raw = exchange(addr, &get("/panic")).await.expect("an answer");
    assert_eq!(
        raw_status(&raw),
        Some(StatusCode::INTERNAL_SERVER_ERROR.as_u16()),
        "{raw}"
    );
    assert!(error(&raw).starts_with("internal:"), "{raw}");
    let raw = exchange(addr, &get("/ok")).await.expect("an answer");
    assert_eq!(raw_status(&raw), Some(200), "{raw}");
    let metrics = edge.metrics.render("");
    assert!(
        metrics.lines().any(|l| l == "tandem_edge_panics_total{} 1"),
        "{metrics}"
    );
    let _ = stop.send(());
    served.await.unwrap();
}
