//! The edge's keep-alive connections to the nodes (`upstream.rs`): buffered
//! requests reuse them, and a connection the node closed while it sat idle
//! costs no request, not even one the edge may not repeat (an amend).

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::{cluster, edge_config, request, send_fresh, TestEdge};
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tandem_edge::config::Role;
use tokio::net::TcpListener;

/// Listens on a loopback port and runs `serve` on a task of its own for
/// each connection accepted; returns the address and the count of
/// connections accepted so far.
async fn counting_listener<F, Fut>(serve: F) -> (SocketAddr, Arc<AtomicU64>)
where
    F: Fn(tokio::net::TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let accepted = Arc::new(AtomicU64::new(0));
    let count = Arc::clone(&accepted);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            count.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(serve(stream));
        }
    });
    (addr, accepted)
}

/// An HTTP/1.1 server that counts the connections it accepted and closes
/// a keep-alive connection idle for `idle` (as a node's idle timeout does).
/// Every request gets 200 with its method and path as the body.
async fn counting_node(idle: Duration) -> (SocketAddr, Arc<AtomicU64>) {
    counting_listener(move |stream| async move {
        let svc = hyper::service::service_fn(|req: Request<Incoming>| async move {
            let what = format!("{} {}", req.method(), req.uri().path());
            let _ = req.into_body().collect().await;
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(what))))
        });
        let _ = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(idle)
            .serve_connection(TokioIo::new(stream), svc)
            .await;
    })
    .await
}

/// Health checks every 10 s: their connection is one more, opened once.
async fn edge_for(node: SocketAddr) -> TestEdge {
    let mut cfg = edge_config(vec![cluster("blue", Role::Stable, 100, &[(node, "z-a")])]);
    cfg.health.interval_ms = 10_000;
    TestEdge::start(cfg, None).await
}

#[tokio::test]
async fn buffered_requests_reuse_keep_alive_connections_to_the_node() {
    let (node, accepted) = counting_node(Duration::from_secs(30)).await;
    let edge = edge_for(node).await;
    for i in 0..100 {
        // A new client connection each time: only the edge's side pools.
        let a = send_fresh(
            edge.public,
            request("GET", &edge.url(&format!("/v1/status?i={i}")), &[], ""),
        )
        .await
        .expect("answer");
        assert_eq!((a.status, a.body.as_str()), (200, "GET /v1/status"));
    }
    // One connection for the requests (they are sequential), one for the
    // first health check.
    let n = accepted.load(Ordering::Relaxed);
    assert!(
        n <= 2,
        "100 sequential requests opened {n} connections to the node"
    );
    let pooled = edge.edge.routes.node_states()[0].pooled();
    assert_eq!(pooled, 1, "the connection is back in the pool, idle");
}

#[tokio::test]
async fn a_connection_the_node_closed_while_idle_costs_no_request() {
    let (node, accepted) = counting_node(Duration::from_millis(100)).await;
    let edge = edge_for(node).await;
    for round in 0..3 {
        let a = send_fresh(
            edge.public,
            request("GET", &edge.url("/v1/status"), &[], ""),
        )
        .await
        .expect("answer");
        assert_eq!(a.status, 200, "round {round}: {a:?}");
        // The node closes the pooled connection meanwhile.
        tokio::time::sleep(Duration::from_millis(400)).await;
        // An amend may not be repeated after it reached a node, so a
        // pooled connection that turned out dead must be noticed before
        // sending, not answered with a 502.
        let a = send_fresh(
            edge.public,
            request(
                "PATCH",
                &edge.url("/v1/orders/BTC-USD/o-1"),
                &[("content-type", "application/json")],
                r#"{"account":"acct-1","qty":"1"}"#,
            ),
        )
        .await
        .expect("answer");
        assert_eq!(
            (a.status, a.body.as_str()),
            (200, "PATCH /v1/orders/BTC-USD/o-1"),
            "round {round}"
        );
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    assert!(
        accepted.load(Ordering::Relaxed) >= 6,
        "the node closed idle connections"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_keep_their_connections_to_the_node() {
    let (node, accepted) = counting_node(Duration::from_secs(30)).await;
    let edge = edge_for(node).await;
    let lanes: Vec<_> = (0..8)
        .map(|lane| {
            let url = edge.url(&format!("/v1/status?lane={lane}"));
            let client = common::client();
            tokio::spawn(async move {
                for _ in 0..100 {
                    let a = common::send(&client, request("GET", &url, &[], ""))
                        .await
                        .expect("answer");
                    assert_eq!(a.status, 200);
                }
            })
        })
        .collect();
    for l in lanes {
        l.await.expect("lane");
    }
    // At most one connection per request in flight (8), one for the
    // health check, not one per request.
    let n = accepted.load(Ordering::Relaxed);
    assert!(
        n <= 9,
        "800 requests in 8 lanes opened {n} connections to the node"
    );
}

/// A node that answers from a script by path, with the bytes as written
/// (framings and answers hyper's server would never send), and counts its
/// connections. It reads each request's head and `content-length` body,
/// keeps the connection for the next, and closes it after `/close`.
async fn scripted_node() -> (SocketAddr, Arc<AtomicU64>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    counting_listener(|mut stream| async move {
        let mut buf = Vec::new();
        loop {
            let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                let mut chunk = [0u8; 4096];
                match stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
                continue;
            };
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let body_len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if buf.len() < end + 4 + body_len {
                let mut chunk = [0u8; 4096];
                match stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
                continue;
            }
            let path = head.split(' ').nth(1).unwrap_or("/").to_owned();
            buf.drain(..end + 4 + body_len);
            let answer: &[u8] = match path.as_str() {
                "/chunked" => b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nx-node: s\r\nkeep-alive: timeout=5\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\nx-trailer: t\r\n\r\n",
                "/interim" => b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\nok",
                "/head" => b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\nx-node: s\r\n\r\n",
                "/malformed" => b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\nabc",
                "/close" => b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nbye",
                _ => b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
            };
            if stream.write_all(answer).await.is_err()
                || path == "/close"
                || path == "/malformed"
            {
                return;
            }
        }
    })
    .await
}

#[tokio::test]
async fn answers_in_every_framing_pass_through_and_a_malformed_one_is_not_passed_on() {
    let (node, accepted) = scripted_node().await;
    let edge = edge_for(node).await;
    let client = common::client();
    let get = |path: &str| request("GET", &edge.url(path), &[], "");

    // Chunked: de-chunked, sent on with its length, hop-by-hop headers
    // (`transfer-encoding`, `keep-alive`) left behind.
    let a = common::send(&client, get("/chunked"))
        .await
        .expect("answer");
    assert_eq!((a.status, a.body.as_str()), (200, "hello world"));
    assert_eq!(a.header("x-node"), Some("s"));
    assert_eq!(a.header("content-length"), Some("11"));
    assert!(a.header("transfer-encoding").is_none() && a.header("keep-alive").is_none());

    // An interim 100 before the answer is skipped.
    let a = common::send(&client, get("/interim"))
        .await
        .expect("answer");
    assert_eq!((a.status, a.body.as_str()), (201, "ok"));

    // A HEAD's answer has no body whatever its length says, and the
    // connection stays in step for the next request.
    let a = common::send(&client, request("HEAD", &edge.url("/head"), &[], ""))
        .await
        .expect("answer");
    assert_eq!((a.status, a.body.as_str()), (200, ""));
    assert_eq!(a.header("content-length"), Some("9"));
    let a = common::send(&client, get("/after-head"))
        .await
        .expect("answer");
    assert_eq!((a.status, a.body.as_str()), (200, "ok"));
    let before = accepted.load(Ordering::Relaxed);

    // Framed by the close: the body is whole, and the connection is not
    // kept (the next request opens one).
    let a = common::send(&client, get("/close")).await.expect("answer");
    assert_eq!((a.status, a.body.as_str()), (200, "bye"));
    let a = common::send(&client, get("/next")).await.expect("answer");
    assert_eq!((a.status, a.body.as_str()), (200, "ok"));
    assert_eq!(accepted.load(Ordering::Relaxed), before + 1);

    // Two different lengths: the answer is not passed on. The one node
    // dropped it, so the edge answers with its own 5xx, JSON.
    let a = common::send(&client, get("/malformed"))
        .await
        .expect("answer");
    assert!(a.status == 502 || a.status == 503, "{a:?}");
    assert!(a.body.contains("\"error\""), "{a:?}");
    // And goes on serving.
    let a = common::send(&client, get("/chunked"))
        .await
        .expect("answer");
    assert_eq!((a.status, a.body.as_str()), (200, "hello world"));
}
