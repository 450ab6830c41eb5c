//! The edge's node connections over TLS (`[upstream.tls]`) carry bodies
//! far larger than a socket's buffers (12 MiB), whole, both ways, one
//! after another on a kept connection. The edge's client flushes after
//! writing a request, for records rustls may hold back while the socket
//! is full (`upstream.rs`); this test also passed with that flush taken
//! out, so it shows that large bodies cross TLS whole, not that the flush
//! is needed.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::{cluster, edge_config, TestEdge};
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use tandem_conn::server::{BoxBody, Limits, Service, Stop};
use tandem_conn::test_pki::{Ca, Leaf};
use tandem_conn::tls::{ServerFiles, ServerTls};
use tandem_edge::config::{Role, UpstreamTls};
use tokio::net::TcpListener;

/// Bytes of each body: several times a loopback socket's buffers.
const BIG: usize = 12 << 20;

/// The body of size `n` for `seed`: bytes that differ from one position
/// to the next, so that a lost, repeated or reordered record shows.
fn pattern(seed: u64, n: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// FNV-1a of the bytes, as hex.
fn digest(b: &[u8]) -> String {
    let h = b.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &c| {
        (h ^ u64::from(c)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    format!("{h:016x}")
}

/// A node stand-in behind TLS: answers each request with the length and
/// digest of the body it read, in `x-got`, and a body of `pattern(seed,
/// BIG)` for `/big?seed=N` (else `ok`). Counts the connections it served.
struct Echo {
    connections: AtomicU64,
}

impl Service for Echo {
    async fn call(self: Arc<Self>, req: Request<Incoming>) -> Response<BoxBody> {
        let seed: Option<u64> = req
            .uri()
            .query()
            .and_then(|q| q.strip_prefix("seed="))
            .and_then(|s| s.parse().ok());
        let body = req.into_body().collect().await.expect("body").to_bytes();
        let got = format!("{} {}", body.len(), digest(&body));
        let out = match seed {
            Some(s) => Bytes::from(pattern(s, BIG)),
            None => Bytes::from_static(b"ok"),
        };
        Response::builder()
            .header("x-got", got)
            .header("content-type", "application/octet-stream")
            .body(Full::new(out).map_err(|e| match e {}).boxed_unsync())
            .expect("answer")
    }
    fn connection_opened(&self) {
        self.connections.fetch_add(1, Ordering::Relaxed);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_larger_than_the_socket_buffers_cross_tls_to_the_node_whole() {
    let dir = std::env::temp_dir().join(format!("tandem-upstream-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let ca = Ca::new("nodes");
    let ca_file = ca.write(&dir, "ca");
    let (cert, key) = ca.issue(&Leaf::new("node-1", 7)).write(&dir, "node");
    let tls = ServerTls::load(ServerFiles {
        cert,
        key,
        client_ca: None,
        section: "tls".into(),
    })
    .expect("server tls");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let node = listener.local_addr().expect("addr");
    let echo = Arc::new(Echo {
        connections: AtomicU64::new(0),
    });
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(tandem_conn::server::serve_tls(
        listener,
        Arc::clone(&echo),
        Limits::default(),
        Some(tls),
        async move {
            let _ = stop_rx.await;
            Stop::Drain
        },
    ));

    let mut cfg = edge_config(vec![cluster("blue", Role::Stable, 100, &[(node, "z-a")])]);
    cfg.health.interval_ms = 10_000;
    cfg.limits.max_body_bytes = 2 * BIG;
    cfg.upstream.tls = Some(UpstreamTls {
        ca: ca_file,
        cert: None,
        key: None,
        server_name: None,
    });
    let edge = TestEdge::start(cfg, None).await;
    let client = common::client();

    for seed in 1..=3u64 {
        // A large request body, answered with a large body.
        let sent = pattern(seed + 100, BIG);
        let req = Request::builder()
            .method("POST")
            .uri(edge.url(&format!("/v1/echo/big?seed={seed}")))
            .header("content-type", "application/octet-stream")
            .body(Full::new(Bytes::from(sent.clone())))
            .expect("request");
        let resp = tokio::time::timeout(Duration::from_secs(60), client.request(req))
            .await
            .expect("in time")
            .expect("answer");
        assert_eq!(resp.status(), 200, "seed {seed}");
        let got = resp.headers()["x-got"].to_str().expect("x-got").to_owned();
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        assert_eq!(
            got,
            format!("{BIG} {}", digest(&sent)),
            "request body, seed {seed}"
        );
        assert_eq!(body.len(), BIG, "answer body length, seed {seed}");
        assert!(
            body[..] == pattern(seed, BIG)[..],
            "answer body, seed {seed}"
        );

        // A small request on the same kept connection stays in step.
        let req = Request::builder()
            .method("POST")
            .uri(edge.url("/v1/echo/small"))
            .body(Full::new(Bytes::from_static(b"{}")))
            .expect("request");
        let resp = client.request(req).await.expect("answer");
        assert_eq!(resp.status(), 200);
        assert_eq!(
            resp.headers()["x-got"].to_str().expect("x-got"),
            format!("2 {}", digest(b"{}"))
        );
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        assert_eq!(&body[..], b"ok");
    }
    // The health checks' connection and one for the requests, reused.
    let conns = echo.connections.load(Ordering::Relaxed);
    assert!(conns <= 2, "{conns} connections to the node");

    drop(edge);
    let _ = stop_tx.send(());
    let _ = served.await;
    let _ = std::fs::remove_dir_all(&dir);
}
