//! Shared pieces of the edge's integration tests: small hyper servers that
//! answer like a node (`/readyz` switchable to 503, every other path a small
//! JSON body naming the node, a switch to answer 502, and a `kill` that
//! closes the listener and every open connection at once, as a dying
//! process would), an edge running in this process on loopback ports, a
//! paced open-loop client that records every outcome, and raw-socket
//! helpers for the malformed-input tests.

#![allow(dead_code)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tandem_edge::config::{ClusterConfig, NodeAddr, Role};
use tandem_edge::{Edge, EdgeConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

/// What a mock node answers to requests other than `/readyz` and `/healthz`.
pub const MODE_OK: u8 = 0;
/// Every request (but the health paths) gets a 502.
pub const MODE_502: u8 = 1;
/// Every request (but the health paths) gets a 400 naming
/// `x-tandem-min-seq`, as a node answers a token of another log.
pub const MODE_400: u8 = 2;

/// A small server that answers like a node.
#[derive(Debug)]
pub struct MockNode {
    pub name: String,
    pub addr: SocketAddr,
    /// `/readyz` answers 200 while true, 503 (draining) while false.
    pub ready: Arc<AtomicBool>,
    /// `MODE_OK` or `MODE_502`.
    pub mode: Arc<AtomicU8>,
    /// Requests answered, health checks excluded.
    pub hits: Arc<AtomicU64>,
    /// Delay before answering (to keep requests in flight), milliseconds.
    pub delay_ms: Arc<AtomicU64>,
    /// Sent as `x-tandem-log` on every answer, health checks included,
    /// when not empty.
    pub log_id: Arc<std::sync::Mutex<String>>,
    task: JoinHandle<()>,
}

impl MockNode {
    pub async fn start(name: &str) -> MockNode {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind mock");
        let addr = listener.local_addr().expect("mock addr");
        let ready = Arc::new(AtomicBool::new(true));
        let mode = Arc::new(AtomicU8::new(MODE_OK));
        let hits = Arc::new(AtomicU64::new(0));
        let delay_ms = Arc::new(AtomicU64::new(0));
        let log_id = Arc::new(std::sync::Mutex::new(String::new()));
        let state = (
            name.to_owned(),
            Arc::clone(&ready),
            Arc::clone(&mode),
            Arc::clone(&hits),
            Arc::clone(&delay_ms),
            Arc::clone(&log_id),
        );
        let task = tokio::spawn(async move {
            // Dropping the set (when this task is aborted) aborts every
            // connection task, which closes their sockets.
            let mut conns = JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                while conns.try_join_next().is_some() {}
                let _ = stream.set_nodelay(true);
                let state = state.clone();
                conns.spawn(async move {
                    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let (name, ready, mode, hits, delay, log_id) = state.clone();
                        async move {
                            let log = log_id.lock().unwrap().clone();
                            Ok::<_, Infallible>(
                                answer(&name, &ready, &mode, &hits, &delay, &log, req).await,
                            )
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        MockNode {
            name: name.to_owned(),
            addr,
            ready,
            mode,
            hits,
            delay_ms,
            log_id,
            task,
        }
    }

    /// Makes the node name `id` as its log (`x-tandem-log`).
    pub fn set_log(&self, id: &str) {
        *self.log_id.lock().unwrap() = id.to_owned();
    }

    /// Dies: the listener and every connection close now; requests in
    /// flight get no answer.
    pub fn kill(&self) {
        self.task.abort();
    }

    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }
}

impl Drop for MockNode {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn answer(
    name: &str,
    ready: &AtomicBool,
    mode: &AtomicU8,
    hits: &AtomicU64,
    delay: &AtomicU64,
    log: &str,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_owned();
    let (status, body) = match path.as_str() {
        "/readyz" if ready.load(Ordering::Relaxed) => {
            (StatusCode::OK, "{\"status\":\"ready\"}".into())
        }
        "/readyz" => (
            StatusCode::SERVICE_UNAVAILABLE,
            "{\"status\":\"draining\"}".into(),
        ),
        "/healthz" => (StatusCode::OK, "{\"status\":\"ok\"}".into()),
        _ => {
            let _ = req.into_body().collect().await;
            let d = delay.load(Ordering::Relaxed);
            if d > 0 {
                tokio::time::sleep(Duration::from_millis(d)).await;
            }
            hits.fetch_add(1, Ordering::Relaxed);
            let m = mode.load(Ordering::Relaxed);
            if m == MODE_502 {
                (StatusCode::BAD_GATEWAY, "{\"error\":\"mock: 502\"}".into())
            } else if m == MODE_400 {
                (
                    StatusCode::BAD_REQUEST,
                    "{\"error\":\"x-tandem-min-seq: the token belongs to another log\"}".into(),
                )
            } else {
                (StatusCode::OK, format!("{{\"node\":\"{name}\"}}"))
            }
        }
    };
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        "x-node",
        http::HeaderValue::from_str(name).expect("node name"),
    );
    r.headers_mut().insert(
        "content-type",
        http::HeaderValue::from_static("application/json"),
    );
    r.headers_mut()
        .insert("x-tandem-seq", http::HeaderValue::from_static("0:1"));
    if !log.is_empty() {
        r.headers_mut().insert(
            "x-tandem-log",
            http::HeaderValue::from_str(log).expect("log id"),
        );
    }
    r
}

/// A cluster for [`edge_config`]: name, role, weight, nodes as (addr, zone).
pub fn cluster(name: &str, role: Role, weight: u32, nodes: &[(SocketAddr, &str)]) -> ClusterConfig {
    ClusterConfig {
        name: name.into(),
        version: "0.1.0".into(),
        role,
        weight,
        nodes: nodes
            .iter()
            .map(|(a, z)| NodeAddr {
                addr: a.to_string(),
                zone: (*z).into(),
            })
            .collect(),
    }
}

/// A config for tests: loopback port 0 listeners, zone `z-a`, fast health
/// checks (every 50 ms), ejection after 3 failures for 1 s.
pub fn edge_config(clusters: Vec<ClusterConfig>) -> EdgeConfig {
    let mut cfg = EdgeConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        admin_listen: "127.0.0.1:0".parse().expect("addr"),
        admin_token: TOKEN.into(),
        zone: "z-a".into(),
        clusters,
        drain_timeout_secs: 5,
        ..EdgeConfig::default()
    };
    cfg.health.interval_ms = 50;
    cfg.health.timeout_ms = 200;
    cfg.health.eject_after_failures = 3;
    cfg.health.eject_ms = 1_000;
    cfg.limits.max_body_bytes = 4096;
    cfg.limits.max_header_bytes = 8192;
    cfg.limits.header_read_timeout_secs = 1;
    cfg
}

/// The admin token of [`edge_config`].
pub const TOKEN: &str = "test-token-0123";

/// An edge serving in this process (public and admin listeners, health
/// loop), as `tandem_edge::run` wires it, minus signals.
#[derive(Debug)]
pub struct TestEdge {
    pub public: SocketAddr,
    pub admin: SocketAddr,
    pub edge: Arc<Edge>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl TestEdge {
    pub async fn start(cfg: EdgeConfig, config_path: Option<PathBuf>) -> TestEdge {
        let public = TcpListener::bind(cfg.listen).await.expect("bind public");
        let admin = TcpListener::bind(cfg.admin_listen)
            .await
            .expect("bind admin");
        let (public_addr, admin_addr) = (public.local_addr().unwrap(), admin.local_addr().unwrap());
        let drain = Duration::from_secs(cfg.drain_timeout_secs);
        let edge = Edge::new(cfg);
        let (stop, rx) = watch::channel(false);
        let stopped = |mut rx: watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        let tasks = vec![
            tokio::spawn(tandem_edge::health_loop(Arc::clone(&edge))),
            tokio::spawn(tandem_edge::serve(
                public,
                Arc::clone(&edge),
                tandem_edge::dispatch,
                stopped(rx.clone()),
                drain,
            )),
            tokio::spawn(tandem_edge::serve(
                admin,
                Arc::clone(&edge),
                move |e, r| {
                    let path = config_path.clone();
                    async move { tandem_edge::admin::handle(&e, &path, r).await }
                },
                stopped(rx),
                drain,
            )),
        ];
        TestEdge {
            public: public_addr,
            admin: admin_addr,
            edge,
            stop,
            tasks,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.public)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }
}

impl Drop for TestEdge {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// A pooled HTTP/1.1 client.
pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

pub fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build(HttpConnector::new())
}

/// A whole answer.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: String,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
    pub fn cluster(&self) -> &str {
        self.header("x-tandem-cluster").unwrap_or("")
    }
    pub fn node(&self) -> &str {
        self.header("x-node").unwrap_or("")
    }
}

/// Builds a request.
pub fn request(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Request<Full<Bytes>> {
    let mut b = Request::builder().method(method).uri(url);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(Full::new(Bytes::from(body.to_owned())))
        .expect("request")
}

/// Sends one request on the pooled client; a connection error is `Err`.
pub async fn send(c: &HttpClient, req: Request<Full<Bytes>>) -> Result<Answer, String> {
    let resp = tokio::time::timeout(Duration::from_secs(10), c.request(req))
        .await
        .map_err(|_| "timeout".to_string())?
        .map_err(|e| format!("{e:?}"))?;
    collect(resp).await
}

async fn collect(resp: Response<Incoming>) -> Result<Answer, String> {
    let (parts, body) = resp.into_parts();
    let body = body
        .collect()
        .await
        .map_err(|e| format!("body: {e}"))?
        .to_bytes();
    Ok(Answer {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// Sends one request on a new connection (closed afterwards), so a refused
/// or reset connection shows as an `Err`.
pub async fn send_fresh(addr: SocketAddr, req: Request<Full<Bytes>>) -> Result<Answer, String> {
    let go = async {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let _ = stream.set_nodelay(true);
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        tokio::spawn(conn);
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| format!("send: {e:?}"))?;
        collect(resp).await
    };
    tokio::time::timeout(Duration::from_secs(10), go)
        .await
        .map_err(|_| "timeout".to_string())?
}

/// One request of a paced run.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub i: u64,
    pub sent: Instant,
    pub done: Instant,
    pub account: Option<String>,
    pub result: Result<Answer, String>,
}

impl Outcome {
    /// A failure as a client sees it: no answer, or a 5xx.
    pub fn failed(&self) -> bool {
        match &self.result {
            Ok(a) => a.status >= 500,
            Err(_) => true,
        }
    }
}

/// How a paced run sends.
#[derive(Debug, Clone, Copy)]
pub enum Conn {
    /// One pooled keep-alive client.
    Pooled,
    /// A new connection per request.
    Fresh,
}

/// Sends `rate` requests per second for `duration` (open loop: request
/// `i` is due at `start + i / rate` whatever the answers), each built by
/// `make(i)` as (method, path, headers, body, account), and returns every
/// outcome in send order.
pub async fn paced<F>(
    addr: SocketAddr,
    rate: f64,
    duration: Duration,
    conn: Conn,
    make: F,
) -> Vec<Outcome>
where
    F: Fn(
        u64,
    ) -> (
        String,
        String,
        Vec<(String, String)>,
        String,
        Option<String>,
    ),
{
    let c = client();
    let start = Instant::now();
    let n = (duration.as_secs_f64() * rate) as u64;
    let mut tasks = Vec::with_capacity(n as usize);
    for i in 0..n {
        let due = start + Duration::from_secs_f64(i as f64 / rate);
        tokio::time::sleep_until(due.into()).await;
        let (method, path, headers, body, account) = make(i);
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            let h: Vec<(&str, &str)> = headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            let url = format!("http://{addr}{path}");
            let req = request(&method, &url, &h, &body);
            let sent = Instant::now();
            let result = match conn {
                Conn::Pooled => send(&c, req).await,
                Conn::Fresh => send_fresh(addr, req).await,
            };
            Outcome {
                i,
                sent,
                done: Instant::now(),
                account,
                result,
            }
        }));
    }
    let mut out = Vec::with_capacity(tasks.len());
    for t in tasks {
        out.push(t.await.expect("client task"));
    }
    out
}

/// Panics listing the failed outcomes, if any.
pub fn assert_no_failures(what: &str, outcomes: &[Outcome]) {
    let failed: Vec<String> = outcomes
        .iter()
        .filter(|o| o.failed())
        .take(10)
        .map(|o| match &o.result {
            Ok(a) => format!("#{}: {} {}", o.i, a.status, a.body),
            Err(e) => format!("#{}: {e}", o.i),
        })
        .collect();
    let n = outcomes.iter().filter(|o| o.failed()).count();
    assert!(
        n == 0,
        "{what}: {n} of {} requests failed; first ones: {failed:#?}",
        outcomes.len()
    );
}

/// Writes `bytes` on a new connection and reads until the server closes
/// it or `wait` passes; returns what was read.
pub async fn raw_exchange(addr: SocketAddr, bytes: &[u8], wait: Duration) -> String {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let _ = s.write_all(bytes).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(wait, s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// The status code of the first answer in raw response bytes.
pub fn raw_status(text: &str) -> Option<u16> {
    text.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

/// Waits until `f` holds, polling every 10 ms, at most `limit`.
pub async fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    f()
}

/// The `tandem` binary (built by `cargo build -p tandem-cli`), next to this
/// test's own directory, or `TANDEM_BIN`.
pub fn tandem_bin() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("TANDEM_BIN") {
        return Some(PathBuf::from(p));
    }
    let exe = std::env::current_exe().ok()?;
    // target/<profile>/deps/<test> → target/<profile>/tandem
    let p = exe.parent()?.parent()?.join("tandem");
    p.is_file().then_some(p)
}
