//! The Prometheus source (`tandem_rollout::prometheus`): its queries,
//! requests and answer reading on recorded answers, and then against a
//! REAL Prometheus (Debian's `prometheus` package; `scripts/test.sh`
//! installs it) scraping an edge served in this process in front of a
//! real node (cluster `aws`, stable) and a small mock node (cluster `gcp`,
//! canary, slower, every fifth answer a 500). After each burst of load
//! the test waits until Prometheus has scraped after the load stopped,
//! then checks that Prometheus' reading and a direct scrape of the same
//! edge and node agree exactly (requests, 5xx, every bucket, lag), that a
//! cluster without traffic is absent from both (no data, not zeros), and
//! that the window between two readings gets the same judgement from
//! both. Prometheus is stopped at the end (and killed on drop if the test
//! fails).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tandem_control::names::{edge, label, node};
use tandem_control::{EdgeAdmin, Exposition, Http, NodeClient, SampleKind};
use tandem_edge::config::{ClusterConfig, NodeAddr, Role};
use tandem_edge::EdgeConfig;
use tandem_log::conformance::TempDir;
use tandem_log::{FileLog, FileLogConfig, FsyncPolicy, Log};
use tandem_node::{Node, NodeConfig};
use tandem_rollout::judge::{self, CanaryTest, Gate, Hist, JudgeError, Verdict, WindowStats};
use tandem_rollout::plan::Gates;
use tandem_rollout::prometheus::{
    assemble, base_url, parse_answer, query_url, PromClient, PromQueryError, Query, Reading, Series,
};
use tokio::net::TcpListener;

mod prom_server;
use prom_server::PromServer;

// ---------------------------------------------------------------------
// Pure: queries, requests, answers.

fn series(labels: &[(&str, &str)], value: f64) -> Series {
    Series {
        labels: labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        value,
    }
}

#[test]
fn the_queries_are_cumulative_sums_by_cluster() {
    assert_eq!(
        Query::Requests.promql(),
        "sum by (cluster, status) (tandem_edge_requests_total)"
    );
    assert_eq!(
        Query::Buckets.promql(),
        "sum by (cluster, le) (tandem_edge_request_duration_seconds_bucket)"
    );
    assert_eq!(
        Query::Lag.promql(),
        "max by (cluster, node) (tandem_replica_lag_seqs)"
    );
    assert_eq!(
        Query::Edges.promql(),
        "count by (instance) (tandem_edge_unroutable_total)"
    );
}

#[test]
fn the_request_encodes_the_query_and_the_instant() {
    assert_eq!(
        query_url("http://127.0.0.1:9090", "sum by (a) (x{b=\"c\"})", 1_700_000_000_042),
        "http://127.0.0.1:9090/api/v1/query?query=sum%20by%20%28a%29%20%28x%7Bb%3D%22c%22%7D%29&time=1700000000.042"
    );
    assert_eq!(base_url("http://h:9090/").unwrap(), "http://h:9090");
    assert_eq!(
        base_url("http://h:9090/prom/").unwrap(),
        "http://h:9090/prom"
    );
    for bad in [
        "https://h:9090",
        "h:9090",
        "http://h:9090/?a=1",
        "not a url",
    ] {
        assert!(
            matches!(base_url(bad), Err(PromQueryError::Url { .. })),
            "{bad}"
        );
    }
}

#[test]
fn answers_are_read_as_instant_vectors() {
    let body = br#"{"status":"success","data":{"resultType":"vector","result":[
        {"metric":{"cluster":"aws","status":"200"},"value":[1700000000.5,"123"]},
        {"metric":{"cluster":"aws","le":"+Inf"},"value":[1700000000.5,"NaN"]}]}}"#;
    let s = parse_answer("q", 200, body).unwrap();
    assert_eq!(s.len(), 2);
    assert_eq!(
        s[0],
        series(&[("cluster", "aws"), ("status", "200")], 123.0)
    );
    assert!(s[1].value.is_nan());
    // An empty vector is no series (no data), not an error.
    let empty = br#"{"status":"success","data":{"resultType":"vector","result":[]}}"#;
    assert_eq!(parse_answer("q", 200, empty).unwrap(), vec![]);

    let err = br#"{"status":"error","errorType":"bad_data","error":"parse error at char 4"}"#;
    assert_eq!(
        parse_answer("q", 400, err).unwrap_err(),
        PromQueryError::Refused {
            query: "q".into(),
            status: 400,
            error_type: "bad_data".into(),
            error: "parse error at char 4".into()
        }
    );
    let scalar = br#"{"status":"success","data":{"resultType":"scalar","result":[1,"1"]}}"#;
    let e = parse_answer("q", 200, scalar).unwrap_err().to_string();
    assert!(e.contains("resultType \"scalar\""), "{e}");
    let e = parse_answer("q", 502, b"<html>bad gateway</html>")
        .unwrap_err()
        .to_string();
    assert!(e.contains("HTTP 502") && e.contains("bad gateway"), "{e}");
    let bad_value = br#"{"status":"success","data":{"resultType":"vector","result":[
        {"metric":{"cluster":"aws"},"value":[1,"twelve"]}]}}"#;
    let e = parse_answer("q", 200, bad_value).unwrap_err().to_string();
    assert!(e.contains("cluster=\"aws\"") && e.contains("twelve"), "{e}");
    let no_value = br#"{"status":"success","data":{"resultType":"vector","result":[
        {"metric":{"cluster":"aws"},"histogram":[1,{}]}]}}"#;
    assert!(matches!(
        parse_answer("q", 200, no_value),
        Err(PromQueryError::BadAnswer { .. })
    ));
}

#[test]
fn readings_sum_statuses_and_keep_missing_series_missing() {
    let requests = [
        series(&[("cluster", "aws"), ("status", "200")], 90.0),
        series(&[("cluster", "aws"), ("status", "503")], 4.0),
        series(&[("cluster", "aws"), ("status", "500")], 6.0),
        series(&[("cluster", "aws"), ("status", "404")], 3.0),
        series(&[("cluster", "gcp"), ("status", "200")], 5.0),
        // Requests but no buckets: no data for azure.
        series(&[("cluster", "azure"), ("status", "200")], 7.0),
    ];
    let buckets = [
        series(&[("cluster", "aws"), ("le", "0.001")], 40.0),
        series(&[("cluster", "aws"), ("le", "+Inf")], 103.0),
        series(&[("cluster", "aws"), ("le", "0.01")], 100.0),
        series(&[("cluster", "gcp"), ("le", "+Inf")], 5.0),
        // Buckets but no requests: no data for oci.
        series(&[("cluster", "oci"), ("le", "+Inf")], 5.0),
    ];
    let lag = [
        series(&[("cluster", "aws"), ("node", "aws-1")], 0.0),
        series(&[("cluster", "gcp"), ("node", "gcp-1")], 12.0),
    ];
    let edges = [
        series(&[("instance", "127.0.0.1:8001")], 1.0),
        series(&[("instance", "127.0.0.1:8002")], 1.0),
    ];
    let r = assemble(&requests, &buckets, &lag, &edges).unwrap();
    assert_eq!(
        r.edges.iter().collect::<Vec<_>>(),
        ["127.0.0.1:8001", "127.0.0.1:8002"]
    );
    assert_eq!(r.clusters.keys().collect::<Vec<_>>(), ["aws", "gcp"]);
    let aws = &r.clusters["aws"];
    assert_eq!((aws.requests, aws.errors), (103, 10));
    assert_eq!(
        aws.latency,
        Hist::from_counts(&[0.001, 0.01], &[40, 60, 3]).unwrap()
    );
    assert_eq!(
        (r.clusters["gcp"].requests, r.clusters["gcp"].errors),
        (5, 0)
    );
    assert_eq!(r.lag["gcp"]["gcp-1"], 12);
    assert_eq!(r.lag["aws"]["aws-1"], 0);
    // Nothing at all: nothing, not zeros.
    assert_eq!(assemble(&[], &[], &[], &[]).unwrap(), Reading::default());
}

#[test]
fn readings_refuse_series_the_edge_does_not_write() {
    let ok_b = [series(&[("cluster", "aws"), ("le", "+Inf")], 1.0)];
    // (requests, buckets, lag, what the error says)
    type Case = (Vec<Series>, Vec<Series>, Vec<Series>, &'static str);
    let cases: Vec<Case> = vec![
        (
            vec![series(&[("status", "200")], 1.0)],
            vec![],
            vec![],
            "no cluster label",
        ),
        (
            vec![series(&[("cluster", "aws"), ("status", "2xx")], 1.0)],
            vec![],
            vec![],
            "not an HTTP status",
        ),
        (
            vec![series(&[("cluster", "aws"), ("status", "200")], 1.5)],
            vec![],
            vec![],
            "value 1.5 is not a count",
        ),
        (
            vec![series(&[("cluster", "aws"), ("status", "200")], -1.0)],
            vec![],
            vec![],
            "is not a count",
        ),
        (
            vec![],
            vec![series(&[("cluster", "aws"), ("le", "fast")], 1.0)],
            vec![],
            "le \"fast\" is not a bound",
        ),
        (
            vec![],
            vec![],
            vec![series(&[("cluster", "aws")], 1.0)],
            "no node label",
        ),
        (
            vec![],
            vec![],
            vec![series(&[("cluster", "aws"), ("node", "n")], f64::NAN)],
            "not a count",
        ),
    ];
    for (r, b, l, want) in cases {
        let e = assemble(&r, &b, &l, &[]).unwrap_err().to_string();
        assert!(e.contains(want), "{e} (wanted {want})");
    }
    // Buckets that are not cumulative name the cluster.
    let r = [series(&[("cluster", "aws"), ("status", "200")], 5.0)];
    let b = [
        series(&[("cluster", "aws"), ("le", "0.1")], 5.0),
        series(&[("cluster", "aws"), ("le", "+Inf")], 4.0),
    ];
    let e = assemble(&[], &[], &[], &[series(&[("job", "edge")], 1.0)]).unwrap_err();
    assert!(e.to_string().contains("no instance label"), "{e}");
    assert!(matches!(
        assemble(&r, &b, &[], &[]),
        Err(PromQueryError::Hist { cluster, source: JudgeError::NotCumulative { .. } }) if cluster == "aws"
    ));
    assert!(assemble(&r, &ok_b, &[], &[]).is_ok());
}

// ---------------------------------------------------------------------
// Against a real Prometheus.

const TOKEN: &str = "prometheus-test-token";

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as u64
}

/// A real node over a fresh file log, served on this runtime.
struct TestNode {
    addr: SocketAddr,
    node: Arc<Node>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    _dir: TempDir,
}

impl TestNode {
    async fn start(name: &str, cluster: &str) -> TestNode {
        let dir = TempDir::new("prom-node");
        let mut cfg = NodeConfig {
            data_dir: dir.path().join("n"),
            node: name.into(),
            cluster: cluster.into(),
            zone: "z-a".into(),
            ..NodeConfig::default()
        };
        cfg.log.fsync = false;
        cfg.limits.account_rate = 0;
        let fc = FileLogConfig {
            fsync: FsyncPolicy::Never,
            ..FileLogConfig::default()
        };
        let log: Arc<dyn Log> =
            Arc::new(FileLog::open(dir.path().join("log"), fc).expect("open file log"));
        let node = Node::start_with_logs(cfg, vec![log]).expect("start node");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("node addr");
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
        // Joins the node's threads off the runtime's workers, before its
        // directory goes (its final snapshot is written there).
        let _ = std::thread::spawn(move || node.stop()).join();
    }
}

/// A node stand-in: health paths answer 200; every other request waits
/// `delay` and answers 200, but every fifth a 500.
async fn mock_node(delay: Duration) -> (SocketAddr, Arc<AtomicU64>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind mock");
    let addr = listener.local_addr().expect("mock addr");
    let hits = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&hits);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let hits = Arc::clone(&counter);
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let hits = Arc::clone(&hits);
                    async move {
                        let health = matches!(req.uri().path(), "/readyz" | "/healthz");
                        let _ = req.into_body().collect().await;
                        let status = if health {
                            StatusCode::OK
                        } else {
                            tokio::time::sleep(delay).await;
                            let n = hits.fetch_add(1, Ordering::Relaxed) + 1;
                            if n.is_multiple_of(5) {
                                StatusCode::INTERNAL_SERVER_ERROR
                            } else {
                                StatusCode::OK
                            }
                        };
                        let mut r = Response::new(Full::new(Bytes::from_static(b"{}")));
                        *r.status_mut() = status;
                        r.headers_mut()
                            .insert("x-tandem-seq", http::HeaderValue::from_static("0:1"));
                        Ok::<_, Infallible>(r)
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (addr, hits)
}

/// An edge (public and admin listeners, health loop) in this process.
struct TestEdge {
    public: SocketAddr,
    admin: SocketAddr,
    /// Stops the edge when dropped.
    _served: tandem_edge::Served,
}

impl TestEdge {
    async fn start(clusters: Vec<ClusterConfig>) -> TestEdge {
        let mut cfg = EdgeConfig {
            listen: "127.0.0.1:0".parse().expect("addr"),
            admin_listen: "127.0.0.1:0".parse().expect("addr"),
            admin_token: TOKEN.into(),
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

fn cluster(name: &str, role: Role, weight: u32, addr: SocketAddr) -> ClusterConfig {
    ClusterConfig {
        name: name.into(),
        version: "0.1.0".into(),
        role,
        weight,
        nodes: vec![NodeAddr {
            addr: addr.to_string(),
            zone: "z-a".into(),
        }],
    }
}

/// Sends `n` orders through the edge pinned to `pin` (`stable`/`canary`);
/// the statuses seen, by code.
async fn load(edge: SocketAddr, pin: &str, from: usize, n: usize) -> BTreeMap<u16, u64> {
    let c: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    let mut seen = BTreeMap::new();
    for i in from..from + n {
        let body = format!(
            r#"{{"market":"M","id":"o{i}","account":"acc{i}","side":"buy","type":"limit","price":"10","qty":"1"}}"#
        );
        let req = Request::post(format!("http://{edge}/v1/orders"))
            .header("content-type", "application/json")
            .header("x-tandem-account", format!("acc{i}"))
            .header("x-dex-version", pin)
            .body(Full::new(Bytes::from(body)))
            .expect("request");
        let r = c.request(req).await.expect("an answer through the edge");
        *seen.entry(r.status().as_u16()).or_default() += 1;
        let _ = r.into_body().collect().await;
    }
    seen
}

/// What a direct scrape of the edge says per cluster, read with the
/// control plane's parser (the scrape source's way).
fn direct_clusters(ex: &Exposition) -> BTreeMap<String, WindowStats> {
    let names: std::collections::BTreeSet<&str> = ex
        .series(edge::REQUESTS_TOTAL, &[])
        .filter_map(|s| s.labels.get(label::CLUSTER).map(String::as_str))
        .collect();
    names
        .into_iter()
        .map(|c| {
            let m = [(label::CLUSTER, c)];
            let mut requests = 0;
            let mut errors = 0;
            for s in ex.series(edge::REQUESTS_TOTAL, &m) {
                requests += s.value as u64;
                if s.labels
                    .get(label::STATUS)
                    .is_some_and(|x| x.starts_with('5'))
                {
                    errors += s.value as u64;
                }
            }
            let buckets: Vec<(f64, u64)> = ex
                .buckets(edge::REQUEST_DURATION_SECONDS, &m)
                .into_iter()
                .map(|(le, n)| (le, n as u64))
                .collect();
            let latency = Hist::from_cumulative(&buckets).expect("the edge's buckets");
            (
                c.to_owned(),
                WindowStats {
                    requests,
                    errors,
                    latency,
                    appends: None,
                },
            )
        })
        .collect()
}

/// The node's lag per node name, from a direct scrape of it.
fn direct_lag(ex: &Exposition) -> BTreeMap<String, BTreeMap<String, u64>> {
    let mut out: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    for s in ex.series(node::REPLICA_LAG_SEQS, &[]) {
        assert_eq!(s.kind, SampleKind::Gauge);
        let e = out
            .entry(s.labels[label::CLUSTER].clone())
            .or_default()
            .entry(s.labels[label::NODE].clone())
            .or_insert(0);
        *e = (*e).max(s.value as u64);
    }
    out
}

/// Waits (polling Prometheus, with a deadline) until every target was
/// last scraped after `t_ms` and is up.
async fn wait_scraped_after(prom: &PromClient, t_ms: u64, targets: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        // `timestamp` of a plain selector is the scrape's time (of an
        // expression it would be the evaluation's).
        let t = now_ms();
        let s = prom.query("timestamp(up)", t).await.expect("query up");
        let up = prom.query("up", t).await.expect("query up");
        let after = s.iter().filter(|s| s.value * 1000.0 > t_ms as f64).count();
        if after == targets && up.len() == targets && up.iter().all(|u| u.value == 1.0) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus did not scrape all {targets} targets after {t_ms} within 30 s: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_and_a_direct_scrape_read_the_same_and_judge_alike() {
    let started = Instant::now();
    prom_server::prometheus_binary();

    let aws = TestNode::start("aws-1", "aws").await;
    let (gcp, gcp_hits) = mock_node(Duration::from_millis(4)).await;
    let (azure, azure_hits) = mock_node(Duration::ZERO).await;
    let e = TestEdge::start(vec![
        cluster("aws", Role::Stable, 90, aws.addr),
        cluster("gcp", Role::Canary, 10, gcp),
        // Weight 0 and never pinned to: no traffic, so no series.
        cluster("azure", Role::Canary, 0, azure),
    ])
    .await;

    // Prometheus, scraping the edge's admin listener and the node.
    let mut server = PromServer::start(
        &[("edge", vec![e.admin]), ("node", vec![aws.addr])],
        Duration::from_millis(200),
    );
    let prom_addr = server.addr;
    let prom_started_ms = now_ms();

    let prom =
        PromClient::new(&format!("http://{prom_addr}/"), Duration::from_secs(5)).expect("client");
    let http = Http::new(Duration::from_secs(5));
    let admin = EdgeAdmin::new(http.clone(), &format!("http://{}", e.admin), TOKEN).unwrap();
    let node_client = NodeClient::new(http, &format!("http://{}", aws.addr)).unwrap();

    // Before any request, the edge has no per-cluster series: no data.
    wait_scraped_after(&prom, prom_started_ms, 2).await;
    let before = prom.read(now_ms()).await.expect("read before load");
    assert!(before.clusters.is_empty(), "{before:?}");
    assert_eq!(
        before.edges.iter().collect::<Vec<_>>(),
        [&e.admin.to_string()],
        "the edge is in the sums, by its scraped address"
    );
    assert_eq!(before.lag.keys().collect::<Vec<_>>(), ["aws"]);

    // Refusals from the real server, and an unreachable one.
    match prom.query("sum by (", now_ms()).await {
        Err(PromQueryError::Refused {
            status, error_type, ..
        }) => assert_eq!((status, error_type.as_str()), (400, "bad_data")),
        other => panic!("a bad query: {other:?}"),
    }
    let gone = PromClient::new(
        &format!("http://127.0.0.1:{}", prom_server::free_port()),
        Duration::from_secs(2),
    )
    .unwrap();
    assert!(matches!(
        gone.read(now_ms()).await,
        Err(PromQueryError::Unreachable { .. })
    ));

    // Two bursts; after each, Prometheus' reading equals a direct scrape.
    let mut readings = Vec::new();
    let mut sent = 0;
    for (stable_n, canary_n) in [(150, 50), (300, 100)] {
        let s = load(e.public, "stable", sent, stable_n).await;
        sent += stable_n;
        assert_eq!(s.get(&200), Some(&(stable_n as u64)), "stable: {s:?}");
        let c = load(e.public, "canary", sent, canary_n).await;
        sent += canary_n;
        assert_eq!(
            c.get(&500),
            Some(&(canary_n as u64 / 5)),
            "every fifth canary answer is a 500: {c:?}"
        );
        // The load is over once the edge has counted every answer (it may
        // count just after the client has its answer).
        let deadline = Instant::now() + Duration::from_secs(10);
        let direct = loop {
            let d = direct_clusters(&admin.metrics().await.expect("scrape edge"));
            if d.values().map(|w| w.requests).sum::<u64>() == sent as u64 {
                break d;
            }
            assert!(Instant::now() < deadline, "the edge counted {d:?}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        // Prometheus may move a scrape's timestamp by up to 2 ms to align
        // it with the interval: ask for scrapes clearly after.
        let stopped_ms = now_ms() + 5;
        let direct_lag = direct_lag(&node_client.metrics().await.expect("scrape node"));
        wait_scraped_after(&prom, stopped_ms, 2).await;
        let via_prom = prom.read(now_ms()).await.expect("read prometheus");
        assert_eq!(via_prom.clusters, direct, "prometheus vs direct scrape");
        assert_eq!(via_prom.lag, direct_lag, "lag: prometheus vs direct scrape");
        assert_eq!(
            via_prom.clusters.keys().collect::<Vec<_>>(),
            ["aws", "gcp"],
            "azure had no traffic: absent, not zero"
        );
        let totals: u64 = via_prom.clusters.values().map(|w| w.requests).sum();
        assert_eq!(totals, sent as u64);
        readings.push((via_prom, direct));
    }
    assert_eq!(azure_hits.load(Ordering::Relaxed), 0);
    assert_eq!(gcp_hits.load(Ordering::Relaxed), 150);

    // The window between the two readings, judged from either source.
    let gates = Gates {
        latency_p99_ms_max: Some(1000.0),
        latency_p99_vs_baseline_max: None,
        error_ratio_max: Some(0.01),
        replica_lag_seq_max: Some(1000),
        output_hash_divergence: 0,
        min_requests: 50,
        breach_for: Duration::from_secs(2),
    };
    let test = CanaryTest::default();
    let window = |a: &BTreeMap<String, WindowStats>, b: &BTreeMap<String, WindowStats>| {
        b.iter()
            .map(|(k, v)| (k.clone(), v.since(&a[k]).expect("no reset")))
            .collect::<BTreeMap<_, _>>()
    };
    let ((p1, d1), (p2, d2)) = (&readings[0], &readings[1]);
    let wp = window(&p1.clusters, &p2.clusters);
    let wd = window(d1, d2);
    assert_eq!((wp["aws"].requests, wp["gcp"].requests), (300, 100));
    assert_eq!(wp["gcp"].errors, 20);
    let verdicts = |w: &BTreeMap<String, WindowStats>| {
        let stable = judge::judge(&gates, &w["aws"], None, None, &test).expect("judge aws");
        let canary =
            judge::judge(&gates, &w["gcp"], None, Some(&w["aws"]), &test).expect("judge gcp");
        (stable, canary)
    };
    let (ps, pc) = verdicts(&wp);
    let (ds, dc) = verdicts(&wd);
    assert_eq!(ps, ds, "stable judged alike");
    assert_eq!(pc, dc, "canary judged alike");
    assert_eq!(ps.verdict(), Verdict::Holds, "{ps:?}");
    assert_eq!(pc.verdict(), Verdict::Breached, "{pc:?}");
    assert!(pc.gates.iter().any(|g| g.gate == Gate::ErrorRatioMax
        && g.verdict == Verdict::Breached
        && g.value == Some(0.2)));
    eprintln!(
        "canary vs stable: {:?}; stable p99 {:?} ms, canary p99 {:?} ms",
        pc.comparison
            .as_ref()
            .map(|c| (c.u_p_value, c.tail_p_value, c.slower)),
        ps.p99_ms,
        pc.p99_ms
    );

    // Long before Prometheus started there is no data, not zeros.
    let old = prom
        .read(prom_started_ms - 3_600_000)
        .await
        .expect("read an hour ago");
    assert_eq!(old, Reading::default());

    let status = server
        .proc
        .stop(Duration::from_secs(20))
        .expect("prometheus stops on SIGTERM");
    eprintln!(
        "prometheus exited {status}; test ran {} ms",
        started.elapsed().as_millis()
    );
}
