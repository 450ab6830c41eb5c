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

/// An HTTP/1.1 server that counts the connections it accepted and closes
/// a keep-alive connection idle for `idle` (as a node's idle timeout does).
/// Every request gets 200 with its method and path as the body.
async fn counting_node(idle: Duration) -> (SocketAddr, Arc<AtomicU64>) {
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
            tokio::spawn(async move {
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
            });
        }
    });
    (addr, accepted)
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
