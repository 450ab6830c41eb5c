//! The public listener on worker threads (`spawn_workers`, as `tandem
//! edge` serves it): requests are proxied, new connections are spread over
//! the workers instead of going to whichever woke first, and a stop drains
//! and ends every worker.

mod common;

use std::time::Duration;

use common::{cluster, edge_config, request, MockNode};
use hyper_util::rt::TokioIo;
use tandem_edge::config::Role;
use tandem_edge::Edge;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_threads_share_the_connections_and_stop_together() {
    let node = MockNode::start("n1").await;
    let cfg = edge_config(vec![cluster(
        "blue",
        Role::Stable,
        100,
        &[(node.addr, "z-a")],
    )]);
    let edge = Edge::new(cfg);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    // 40 connections queued before the workers start (a burst, as a
    // client pool opening at once): the first worker to wake would take
    // them all.
    let mut streams = Vec::new();
    for _ in 0..40 {
        streams.push(tokio::net::TcpStream::connect(addr).await.expect("connect"));
    }
    let (stop, rx) = tokio::sync::watch::channel(false);
    let workers = tandem_edge::spawn_workers(
        listener,
        edge,
        tandem_edge::dispatch,
        2,
        rx,
        Duration::from_secs(2),
    )
    .expect("workers");
    let mut held = Vec::new();
    let mut answers = Vec::new();
    for stream in streams {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("handshake");
        tokio::spawn(conn);
        let req = request("GET", &format!("http://{addr}/v1/status"), &[], "");
        answers.push(tokio::spawn(async move {
            let r = sender.send_request(req).await.map(|r| r.status().as_u16());
            (sender, r)
        }));
    }
    for a in answers {
        let (sender, status) = a.await.expect("task");
        assert_eq!(status.expect("answer"), 200);
        held.push(sender);
    }
    let open = workers.open();
    assert_eq!(open.iter().sum::<usize>(), 40, "{open:?}");
    assert!(
        open.iter().all(|&n| n >= 15),
        "connections per worker {open:?}: one worker took most of them"
    );
    drop(held);
    let _ = stop.send(true);
    let joined = tokio::task::spawn_blocking(move || workers.join());
    tokio::time::timeout(Duration::from_secs(10), joined)
        .await
        .expect("every worker stops after the stop")
        .expect("join");
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "the socket is closed once the workers stopped"
    );
}
