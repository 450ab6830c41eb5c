//! The request path: find the account and the pin, rank clusters with
//! `tandem-route`, pick the nearest available node of the best cluster,
//! forward, and on a connect error or a 502/503/504 retry on another node
//! (the API is idempotent by order id, so a retry never doubles an order),
//! within a budget so retries cannot amplify an outage.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{request::Parts, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::config::EdgeConfig;
use crate::metrics::EdgeMetrics;
use crate::table::{NodeState, Routes, Table, TableCluster};
use crate::{BoxBody, BoxError};

/// Headers that belong to one connection, never forwarded.
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
];

/// Retries allowed: a token bucket filled by requests (`ratio` per request)
/// and by time (`min_per_s`), capped, so retries stay a bounded fraction
/// of traffic even when every node fails.
#[derive(Debug)]
pub struct RetryBudget {
    ratio: f64,
    min_per_s: f64,
    state: Mutex<(f64, Instant)>,
}

impl RetryBudget {
    pub fn new(ratio: f64, min_per_s: u32) -> RetryBudget {
        let min_per_s = f64::from(min_per_s);
        RetryBudget {
            ratio,
            min_per_s,
            state: Mutex::new((min_per_s, Instant::now())),
        }
    }

    fn cap(&self) -> f64 {
        (self.min_per_s * 10.0).max(100.0)
    }

    /// A request arrived.
    pub fn deposit(&self) {
        let mut s = self.state.lock().expect("budget lock");
        s.0 = (s.0 + self.ratio).min(self.cap());
    }

    /// Takes one retry if the budget allows.
    pub fn try_retry(&self) -> bool {
        let mut s = self.state.lock().expect("budget lock");
        let now = Instant::now();
        let refill = now.duration_since(s.1).as_secs_f64() * self.min_per_s;
        s.0 = (s.0 + refill).min(self.cap());
        s.1 = now;
        if s.0 >= 1.0 {
            s.0 -= 1.0;
            true
        } else {
            false
        }
    }
}

/// The edge's shared state.
#[derive(Debug)]
pub struct Edge {
    pub cfg: EdgeConfig,
    pub routes: Routes,
    pub metrics: EdgeMetrics,
    pub budget: RetryBudget,
    pub draining: AtomicBool,
    client: Client<HttpConnector, Full<Bytes>>,
    stream_client: Client<HttpConnector, BoxBody>,
    counter: AtomicU64,
}

fn connector(cfg: &EdgeConfig) -> HttpConnector {
    let mut c = HttpConnector::new();
    c.set_nodelay(true);
    c.set_connect_timeout(Some(Duration::from_millis(cfg.upstream.connect_timeout_ms)));
    c
}

impl Edge {
    pub fn new(cfg: EdgeConfig) -> Arc<Edge> {
        let u = &cfg.upstream;
        let mut b = Client::builder(TokioExecutor::new());
        b.pool_idle_timeout(Duration::from_secs(u.pool_idle_secs))
            .pool_max_idle_per_host(u.pool_max_idle_per_node)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new());
        let client = b.build(connector(&cfg));
        let mut b = Client::builder(TokioExecutor::new());
        b.pool_idle_timeout(Duration::from_secs(u.pool_idle_secs))
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .http2_only(true)
            .http2_keep_alive_interval(Duration::from_secs(u.h2_keepalive_interval_secs))
            .http2_keep_alive_timeout(Duration::from_secs(u.h2_keepalive_timeout_secs))
            .http2_keep_alive_while_idle(true);
        let stream_client = b.build(connector(&cfg));
        Arc::new(Edge {
            routes: Routes::new(&cfg.clusters),
            metrics: EdgeMetrics::default(),
            budget: RetryBudget::new(cfg.retry.budget_ratio, cfg.retry.budget_min_per_s),
            draining: AtomicBool::new(false),
            client,
            stream_client,
            counter: AtomicU64::new(0),
            cfg,
        })
    }

    /// The cluster and node a request with this pin and account goes to
    /// now (no retry): for requests that are not buffered.
    pub fn choose(
        &self,
        pin: Option<tandem_route::Role>,
        account: Option<&[u8]>,
    ) -> Option<(TableCluster, Arc<NodeState>)> {
        let key = self.counter.fetch_add(1, Ordering::Relaxed);
        let table = self.routes.table();
        let now = self.routes.now_ms();
        let rc = table.route_clusters();
        let rreq = tandem_route::Request { pin, account, key };
        let mut excluded = unavailable(&table, now);
        loop {
            let ci = tandem_route::route_excluding(&rc, &rreq, excluded)?;
            match pick_node(self, &table.clusters[ci], now, &[], key) {
                Some(n) => return Some((table.clusters[ci].clone(), n)),
                None => excluded |= 1 << ci,
            }
        }
    }

    /// `GET http://addr/readyz` within `timeout`: true on 200.
    pub async fn probe(&self, addr: &str, timeout: Duration) -> bool {
        let Ok(req) = Request::get(format!("http://{addr}/readyz")).body(Full::new(Bytes::new()))
        else {
            return false;
        };
        match tokio::time::timeout(timeout, self.client.request(req)).await {
            Ok(Ok(resp)) => {
                let ok = resp.status() == StatusCode::OK;
                let _ = resp.into_body().collect().await;
                ok
            }
            _ => false,
        }
    }
}

/// A JSON error answer from the edge itself.
pub fn edge_error(status: StatusCode, msg: &str, retry_after: Option<u32>) -> Response<BoxBody> {
    let mut body = Vec::with_capacity(msg.len() + 12);
    body.extend_from_slice(b"{\"error\":");
    tandem_codec::json::write_str(&mut body, msg.as_bytes());
    body.push(b'}');
    let mut r = Response::new(
        Full::new(Bytes::from(body))
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Some(s) = retry_after {
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(s));
    }
    r
}

/// The account a request is for: header `x-tandem-account`, else query
/// `account=`, else the JSON body's `account` string.
pub fn find_account(parts: &Parts, body: &[u8]) -> Option<Vec<u8>> {
    if let Some(v) = parts.headers.get("x-tandem-account") {
        if !v.is_empty() {
            return Some(v.as_bytes().to_vec());
        }
    }
    if let Some(q) = parts.uri.query() {
        for pair in q.split('&') {
            if let Some(v) = pair.strip_prefix("account=") {
                if !v.is_empty() {
                    return Some(percent_decode(v));
                }
            }
        }
    }
    if body.first().is_some_and(|&c| c == b'{') || body.iter().take(16).any(|&c| c == b'{') {
        if let Ok(f) = tandem_codec::json::read_object(body) {
            if let Some(tandem_codec::json::Val::Str(s)) = &f[3] {
                if !s.is_empty() {
                    return Some(s.as_bytes().to_vec());
                }
            }
        }
    }
    None
}

fn percent_decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                match std::str::from_utf8(&b[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                {
                    Some(c) => {
                        out.push(c);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

/// The nearest available node of `cluster` not tried yet: this edge's zone
/// first, then the others; fewest requests in flight, ties rotated.
fn pick_node(
    edge: &Edge,
    cluster: &TableCluster,
    now_ms: u64,
    tried: &[Arc<NodeState>],
    spin: u64,
) -> Option<Arc<NodeState>> {
    let n = cluster.nodes.len();
    let mut best: Option<(bool, u32, &Arc<NodeState>)> = None;
    for k in 0..n {
        let node = &cluster.nodes[(k + spin as usize) % n];
        let s = &node.state;
        if !s.available(now_ms) || tried.iter().any(|t| Arc::ptr_eq(t, s)) {
            continue;
        }
        let far = node.zone != edge.cfg.zone;
        let load = s.in_flight.load(Ordering::Relaxed);
        if best.is_none_or(|(bf, bl, _)| (far, load) < (bf, bl)) {
            best = Some((far, load, s));
        }
    }
    best.map(|(_, _, s)| Arc::clone(s))
}

/// Clusters with no node that may take a request now, as a bit set.
fn unavailable(table: &Table, now_ms: u64) -> u64 {
    let mut mask = 0;
    for (i, c) in table.clusters.iter().enumerate().take(64) {
        if !c.nodes.iter().any(|n| n.state.available(now_ms)) {
            mask |= 1 << i;
        }
    }
    mask
}

fn retryable(status: StatusCode) -> bool {
    matches!(status.as_u16(), 502..=504)
}

/// Counts a failed attempt on `node`; ejects it after enough in a row.
fn failed(edge: &Edge, cluster: &TableCluster, node: &NodeState) {
    edge.metrics.upstream_error(&cluster.name, &cluster.version);
    let n = node.failures.fetch_add(1, Ordering::Relaxed) + 1;
    if n >= edge.cfg.health.eject_after_failures {
        node.failures.store(0, Ordering::Relaxed);
        node.ejected_until_ms.store(
            edge.routes.now_ms() + edge.cfg.health.eject_ms,
            Ordering::Relaxed,
        );
        // Back only when the ejection is over AND an active check has
        // passed since.
        node.ready.store(false, Ordering::Relaxed);
        edge.metrics.ejected(&cluster.name, &cluster.version);
    }
}

fn copy_request_headers(from: &http::HeaderMap, to: &mut http::HeaderMap) {
    for (k, v) in from {
        if !HOP_BY_HOP.contains(&k.as_str()) {
            to.append(k.clone(), v.clone());
        }
    }
}

fn upstream_uri(addr: &str, parts: &Parts) -> String {
    let pq = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    format!("http://{addr}{pq}")
}

/// Proxies one buffered request (everything but gRPC and upgrades).
pub async fn proxy(edge: &Arc<Edge>, req: Request<Incoming>) -> Response<BoxBody> {
    let started = Instant::now();
    edge.budget.deposit();
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, edge.cfg.limits.max_body_bytes)
        .collect()
        .await
    {
        Ok(c) => c.to_bytes(),
        Err(e) if e.is::<LengthLimitError>() => {
            edge.metrics.bad_request();
            return edge_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("body: larger than {} bytes", edge.cfg.limits.max_body_bytes),
                None,
            );
        }
        Err(e) => {
            edge.metrics.bad_request();
            return edge_error(
                StatusCode::BAD_REQUEST,
                &format!("body: could not be read: {e}"),
                None,
            );
        }
    };
    let account = find_account(&parts, &body);
    let pin = parts
        .headers
        .get("x-dex-version")
        .and_then(|v| tandem_route::Role::from_header(v.as_bytes()));
    let key = edge.counter.fetch_add(1, Ordering::Relaxed);
    let table = edge.routes.table();
    let now = edge.routes.now_ms();
    let route_clusters = table.route_clusters();
    let rreq = tandem_route::Request {
        pin,
        account: account.as_deref(),
        key,
    };
    let mut excluded = unavailable(&table, now);
    let mut tried: Vec<Arc<NodeState>> = Vec::new();
    let mut last: Option<Response<BoxBody>> = None;
    let mut attempts = 0;
    while attempts < edge.cfg.retry.max_attempts {
        let Some(ci) = tandem_route::route_excluding(&route_clusters, &rreq, excluded) else {
            break;
        };
        let cluster = &table.clusters[ci];
        let Some(node) = pick_node(edge, cluster, now, &tried, key) else {
            excluded |= 1 << ci;
            continue;
        };
        if attempts > 0 {
            if !edge.budget.try_retry() {
                edge.metrics.budget_exhausted();
                break;
            }
            edge.metrics.retried(&cluster.name, &cluster.version);
            tokio::time::sleep(Duration::from_millis(edge.cfg.retry.backoff_ms)).await;
        }
        attempts += 1;
        tried.push(Arc::clone(&node));
        let mut up = Request::new(Full::new(body.clone()));
        *up.method_mut() = parts.method.clone();
        *up.uri_mut() = match upstream_uri(&node.addr, &parts).parse() {
            Ok(u) => u,
            Err(_) => {
                edge.metrics.bad_request();
                return edge_error(StatusCode::BAD_REQUEST, "path: not a valid URI", None);
            }
        };
        copy_request_headers(&parts.headers, up.headers_mut());
        node.in_flight.fetch_add(1, Ordering::Relaxed);
        let res = tokio::time::timeout(
            Duration::from_millis(edge.cfg.upstream.request_timeout_ms),
            edge.client.request(up),
        )
        .await;
        node.in_flight.fetch_sub(1, Ordering::Relaxed);
        match res {
            Ok(Ok(resp)) if !retryable(resp.status()) => {
                node.failures.store(0, Ordering::Relaxed);
                let status = resp.status().as_u16();
                let mut resp = resp.map(|b| b.map_err(BoxError::from).boxed_unsync());
                if let Ok(v) = HeaderValue::from_str(&cluster.name) {
                    resp.headers_mut()
                        .insert(HeaderName::from_static("x-tandem-cluster"), v);
                }
                edge.metrics
                    .answered(&cluster.name, &cluster.version, status, started.elapsed());
                return resp;
            }
            Ok(Ok(resp)) => {
                failed(edge, cluster, &node);
                last = Some(resp.map(|b| b.map_err(BoxError::from).boxed_unsync()));
            }
            Ok(Err(_)) | Err(_) => failed(edge, cluster, &node),
        }
    }
    match last {
        Some(resp) => resp,
        None => {
            edge.metrics.unroutable();
            edge_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "no node could take the request: every eligible cluster is down or the retry budget is spent",
                Some(1),
            )
        }
    }
}

/// Proxies a streaming request (gRPC over HTTP/2) without buffering; it is
/// not retried (its body cannot be replayed), so gRPC clients retry
/// themselves, which the API's idempotency makes safe.
pub async fn proxy_stream(edge: &Arc<Edge>, req: Request<Incoming>) -> Response<BoxBody> {
    let started = Instant::now();
    let (parts, body) = req.into_parts();
    let account = parts
        .headers
        .get("x-tandem-account")
        .map(|v| v.as_bytes().to_vec());
    let pin = parts
        .headers
        .get("x-dex-version")
        .and_then(|v| tandem_route::Role::from_header(v.as_bytes()));
    let Some((cluster, node)) = edge.choose(pin, account.as_deref()) else {
        edge.metrics.unroutable();
        return edge_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "no cluster available",
            Some(1),
        );
    };
    let cluster = &cluster;
    let mut up = Request::new(body.map_err(BoxError::from).boxed_unsync());
    *up.method_mut() = parts.method.clone();
    *up.uri_mut() = match upstream_uri(&node.addr, &parts).parse() {
        Ok(u) => u,
        Err(_) => return edge_error(StatusCode::BAD_REQUEST, "path: not a valid URI", None),
    };
    copy_request_headers(&parts.headers, up.headers_mut());
    up.headers_mut()
        .insert(header::TE, HeaderValue::from_static("trailers"));
    match edge.stream_client.request(up).await {
        Ok(resp) => {
            edge.metrics.answered(
                &cluster.name,
                &cluster.version,
                resp.status().as_u16(),
                started.elapsed(),
            );
            resp.map(|b| b.map_err(BoxError::from).boxed_unsync())
        }
        Err(_) => {
            failed(edge, cluster, &node);
            edge_error(
                StatusCode::BAD_GATEWAY,
                "upstream: the node did not answer",
                Some(1),
            )
        }
    }
}
