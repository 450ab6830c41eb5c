//! The clients against a real node and a real edge served in this
//! process on loopback: status, chain checkpoints and metrics from the
//! node; weights, routes and metrics from the edge; a weight write based
//! on the current generation installs and returns the next one, a stale
//! one gets `Stale` with the current generation and changes nothing, a
//! wrong token gets `Unauthorized`, an edge without a token `Disabled`;
//! an edge that refuses connections, or accepts and never answers, is
//! `Unreachable` within the timeout. Every metric name in `names` is in
//! what the node and the edge export.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use tandem_control::names::{edge, label, node};
use tandem_control::{AdminError, EdgeAdmin, Http, NodeClient};
use tandem_edge::config::{ClusterConfig, NodeAddr, Role};
use tandem_edge::EdgeConfig;
use tandem_log::conformance::TempDir;
use tandem_log::{FileLog, FileLogConfig, FsyncPolicy, Log};
use tandem_node::{Node, NodeConfig};
use tokio::net::TcpListener;

const TOKEN: &str = "control-test-token";

/// A node over a fresh file log, served on this runtime; stopped on drop.
struct TestNode {
    addr: SocketAddr,
    node: Arc<Node>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    _dir: TempDir,
}

impl TestNode {
    async fn start(every: u64) -> TestNode {
        let dir = TempDir::new("control-node");
        let mut cfg = NodeConfig {
            data_dir: dir.path().join("n"),
            cluster: "aws".into(),
            zone: "z-a".into(),
            ..NodeConfig::default()
        };
        cfg.log.fsync = false;
        cfg.limits.account_rate = 0;
        cfg.limits.checkpoint_every = every;
        let fc = FileLogConfig {
            fsync: FsyncPolicy::Never,
            ..FileLogConfig::default()
        };
        let log: Arc<dyn Log> =
            Arc::new(FileLog::open(dir.path().join("log"), fc).expect("open file log"));
        let node = Node::start_with_logs(cfg, vec![log]).expect("start node");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(tandem_node::server::serve(
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
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        TestNode {
            addr,
            node,
            stop: Some(tx),
            _dir: dir,
        }
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        let node = Arc::clone(&self.node);
        // Joins the node's threads off the runtime's workers.
        std::thread::spawn(move || node.stop());
    }
}

/// An edge (public and admin listeners, health loop) in this process.
struct TestEdge {
    public: SocketAddr,
    admin: SocketAddr,
    /// Stops the edge when dropped.
    _served: tandem_edge::Served,
}

impl TestEdge {
    async fn start(nodes: &[(&str, SocketAddr, u32)], token: &str) -> TestEdge {
        let clusters = nodes
            .iter()
            .map(|(name, addr, w)| ClusterConfig {
                name: (*name).into(),
                version: "0.1.0".into(),
                role: Role::Stable,
                weight: *w,
                nodes: vec![NodeAddr {
                    addr: addr.to_string(),
                    zone: "z-a".into(),
                }],
            })
            .collect();
        let mut cfg = EdgeConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            admin_listen: "127.0.0.1:0".parse().unwrap(),
            admin_token: token.into(),
            zone: "z-a".into(),
            clusters,
            drain_timeout_secs: 2,
            ..EdgeConfig::default()
        };
        cfg.health.interval_ms = 50;
        let served = tandem_edge::serve_in_process(cfg, Duration::from_secs(2))
            .await
            .expect("serve the edge");
        TestEdge {
            public: served.public,
            admin: served.admin,
            _served: served,
        }
    }
}

/// Places a resting buy order through `addr`; its status.
async fn place(addr: SocketAddr, id: &str) -> u16 {
    let c: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    let body = format!(
        r#"{{"market":"M","id":"{id}","account":"acc","side":"buy","type":"limit","price":"10","qty":"1"}}"#
    );
    let req = http::Request::post(format!("http://{addr}/v1/orders"))
        .header("content-type", "application/json")
        .header("x-tandem-account", "acc")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let r = c.request(req).await.expect("place");
    let s = r.status().as_u16();
    let _ = r.into_body().collect().await;
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_clients_read_a_real_node_and_steer_a_real_edge() {
    let n = TestNode::start(2).await;
    for i in 0..7 {
        assert_eq!(place(n.addr, &format!("o{i}")).await, 200);
    }
    let http = Http::new(Duration::from_secs(2));
    let nc = NodeClient::new(http.clone(), &format!("http://{}/", n.addr)).unwrap();

    // Status.
    let st = nc.status().await.unwrap();
    assert_eq!((st.cluster.as_str(), st.role.as_str()), ("aws", "stable"));
    assert_eq!(st.partitions.len(), 1);
    let p = &st.partitions[0];
    assert_eq!(p.applied_seq, 7);
    assert!(p.caught_up && p.log.starts_with("file:"), "{p:?}");
    assert_eq!(p.output_hash.len(), 32);
    assert!(nc.ready().await.unwrap());

    // Chain: checkpoints at 2, 4, 6; the head equals the status.
    let ch = nc.chain(0, None).await.unwrap();
    assert_eq!((ch.applied_seq, ch.checkpoint_every), (7, 2));
    assert_eq!(ch.output_hash, p.output_hash);
    assert_eq!(ch.log_id, p.log_id);
    let seqs: Vec<u64> = ch.checkpoints.iter().map(|c| c.seq).collect();
    assert_eq!(seqs, vec![2, 4, 6]);
    let from = nc.chain(0, Some(3)).await.unwrap();
    assert_eq!(from.checkpoints, ch.checkpoints[1..]);
    let page = nc.chain_page(0, Some(1), Some(1)).await.unwrap();
    assert_eq!(page.checkpoints, ch.checkpoints[..1]);
    let one = nc.checkpoint(0, 4).await.unwrap().expect("checkpoint at 4");
    assert_eq!(one, ch.checkpoints[1]);
    assert_eq!(nc.checkpoint(0, 3).await.unwrap(), None);
    assert_eq!(nc.checkpoint(0, 100).await.unwrap(), None);
    match nc.chain(5, None).await {
        Err(AdminError::Refused {
            status: 404,
            message,
            ..
        }) => assert!(message.starts_with("partition:"), "{message}"),
        other => panic!("{other:?}"),
    }

    // Node metrics carry the names the controller reads.
    let m = nc.metrics().await.unwrap();
    for name in [
        node::HTTP_REQUEST_DURATION_SECONDS,
        node::LOG_APPEND_DURATION_SECONDS,
        node::LOG_APPEND_COMMANDS_TOTAL,
        node::LOG_APPEND_ERRORS_TOTAL,
        node::REPLICA_FAILURES_TOTAL,
        node::HTTP_PANICS_TOTAL,
        node::REPLICA_APPLIED_SEQ,
        node::REPLICA_LAG_SEQS,
        node::THREAD_UP,
        node::BOOK_LIVE_ORDERS,
    ] {
        assert!(m.series(name, &[]).next().is_some(), "node metric {name}");
    }
    assert_eq!(
        m.total(node::REPLICA_APPLIED_SEQ, &[(label::PARTITION, "0")]),
        Some(7.0)
    );
    assert_eq!(m.total(node::LOG_APPEND_COMMANDS_TOTAL, &[]), Some(7.0));
    let b = m.buckets(
        node::HTTP_REQUEST_DURATION_SECONDS,
        &[
            (label::ROUTE, "place"),
            (label::STATUS, "200"),
            (label::CLUSTER, "aws"),
        ],
    );
    assert_eq!(b.last(), Some(&(f64::INFINITY, 7.0)), "{b:?}");

    // The edge: two clusters on the same node; one request through it.
    let e = TestEdge::start(&[("aws", n.addr, 100), ("gcp", n.addr, 0)], TOKEN).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while place(e.public, "via-edge").await != 200 {
        assert!(Instant::now() < deadline, "no order through the edge");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let admin = EdgeAdmin::new(http.clone(), &format!("http://{}", e.admin), TOKEN).unwrap();
    let w = admin.weights().await.unwrap();
    let expect: BTreeMap<String, u32> = [("aws".to_string(), 100), ("gcp".to_string(), 0)].into();
    assert_eq!(w.weights, expect);
    assert!(w.admin_weights.is_empty());
    let g0 = w.generation;

    // A write based on the current generation installs the next one.
    let new: BTreeMap<String, u32> = [("aws".to_string(), 95), ("gcp".to_string(), 5)].into();
    let g1 = admin.set_weights(&new, g0).await.unwrap();
    assert!(g1 > g0, "{g0} -> {g1}");
    let w = admin.weights().await.unwrap();
    assert_eq!(
        (w.generation, &w.weights, &w.admin_weights),
        (g1, &new, &new)
    );

    // A write based on the old one is refused and changes nothing.
    let back: BTreeMap<String, u32> = [("aws".to_string(), 100), ("gcp".to_string(), 0)].into();
    match admin.set_weights(&back, g0).await {
        Err(AdminError::Stale { current, .. }) => assert_eq!(current, g1),
        other => panic!("expected Stale, got {other:?}"),
    }
    assert_eq!(admin.weights().await.unwrap().weights, new);

    // Routes show the same, with the clusters and their node.
    let r = admin.routes().await.unwrap();
    assert_eq!((r.generation, &r.weights), (g1, &new));
    assert_eq!(r.clusters.len(), 2);
    assert_eq!(r.clusters[0].nodes[0].addr, n.addr.to_string());
    assert_eq!(r.pid, std::process::id());

    // A wrong token.
    let wrong = EdgeAdmin::new(http.clone(), &format!("http://{}", e.admin), "nope").unwrap();
    for res in [
        wrong.weights().await.map(|_| ()),
        wrong.set_weights(&back, g1).await.map(|_| ()),
    ] {
        match res {
            Err(AdminError::Unauthorized { message, .. }) => {
                assert!(message.starts_with("authorization:"), "{message}")
            }
            other => panic!("expected Unauthorized, got {other:?}"),
        }
    }
    assert_eq!(admin.weights().await.unwrap().generation, g1);

    // A bad write names the field.
    let bad: BTreeMap<String, u32> = [("azure".to_string(), 1)].into();
    match admin.set_weights(&bad, g1).await {
        Err(AdminError::Refused {
            status: 400,
            message,
            ..
        }) => assert!(message.contains("azure"), "{message}"),
        other => panic!("{other:?}"),
    }

    // Edge metrics carry the names the controller reads.
    let m = admin.metrics().await.unwrap();
    for name in [
        edge::REQUESTS_TOTAL,
        edge::REQUEST_DURATION_SECONDS,
        edge::UPSTREAM_ERRORS_TOTAL,
        edge::RETRIES_TOTAL,
        edge::EJECTIONS_TOTAL,
        edge::UNROUTABLE_TOTAL,
        edge::LOGS_DISTINCT,
    ] {
        assert!(m.series(name, &[]).next().is_some(), "edge metric {name}");
    }
    let aws = [(label::CLUSTER, "aws"), (label::ZONE, "z-a")];
    assert!(m.total(edge::REQUESTS_TOTAL, &aws).unwrap() >= 1.0);
    assert!(!m.buckets(edge::REQUEST_DURATION_SECONDS, &aws).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_without_a_token_is_disabled() {
    let e = TestEdge::start(&[("aws", "127.0.0.1:9".parse().unwrap(), 100)], "").await;
    let admin = EdgeAdmin::new(
        Http::new(Duration::from_secs(2)),
        &format!("http://{}", e.admin),
        "anything",
    )
    .unwrap();
    match admin.weights().await {
        Err(AdminError::Disabled { message, .. }) => {
            assert!(message.contains("admin_token"), "{message}")
        }
        other => panic!("expected Disabled, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_edge_is_reported_within_the_timeout() {
    let timeout = Duration::from_millis(300);
    let http = Http::new(timeout);
    // Nothing listens: refused at once.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let admin = EdgeAdmin::new(http.clone(), &format!("http://127.0.0.1:{port}"), TOKEN).unwrap();
    let t = Instant::now();
    let one: BTreeMap<String, u32> = [("aws".to_string(), 1)].into();
    match admin.set_weights(&one, 1).await {
        Err(AdminError::Unreachable { url, .. }) => assert!(url.contains(&port.to_string())),
        other => panic!("expected Unreachable, got {other:?}"),
    }
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());

    // Accepts, never answers: unreachable once the timeout passes.
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    let hold = tokio::spawn(async move {
        let mut conns = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            conns.push(s);
        }
    });
    let admin = EdgeAdmin::new(http, &format!("http://{addr}"), TOKEN).unwrap();
    let t = Instant::now();
    match admin.weights().await {
        Err(AdminError::Unreachable { cause, .. }) => {
            assert!(cause.contains("300 ms"), "{cause}")
        }
        other => panic!("expected Unreachable, got {other:?}"),
    }
    let took = t.elapsed();
    assert!(took >= timeout && took < Duration::from_secs(2), "{took:?}");
    hold.abort();
}
