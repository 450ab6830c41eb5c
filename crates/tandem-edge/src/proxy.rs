//! The request path: find the account and the pin, rank clusters with
//! `tandem-route`, pick the nearest available node of the best cluster,
//! forward, and retry on another node within a budget, so retries cannot
//! amplify an outage. A request is repeated only when that is known safe
//! ([`repeatable`]): one that never reached a node (the connection failed)
//! always; after a timeout, a dropped connection or a 502/503/504, only
//! reads and the order writes the nodes deduplicate. A 4xx is an answer,
//! never retried.
//!
//! Nodes name the log they serve in `x-tandem-log`; the edge learns it from
//! health checks and answers, and warns (log line, metric) when the nodes
//! it routes to serve different logs: they are different exchanges.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{request::Parts, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::{Body as _, Incoming};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tandem_conn::tls::{ClientTls, Connector, ServerTls, TlsError};

use crate::attempt;
pub use crate::attempt::repeatable;
use crate::config::EdgeConfig;
use crate::metrics::EdgeMetrics;
use crate::table::{lock, read, write, NodeState, Routes, TableCluster};
use crate::upstream::{Outgoing, SendError, Upstreams};
use crate::{BoxBody, BoxError};

/// Headers that belong to one connection, never forwarded (`host` is set
/// for the node instead).
static HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::HOST,
];

/// Retries allowed: a token bucket filled by requests (`ratio` per request)
/// and by time (`min_per_s`), capped, so retries stay a bounded fraction
/// of traffic even when every node fails. The tokens are an atomic (bits
/// of an `f64`), so the deposit every request makes takes no lock; the
/// rare retry takes one for the time of the last refill.
#[derive(Debug)]
pub struct RetryBudget {
    ratio: f64,
    min_per_s: f64,
    tokens: AtomicU64,
    refilled: Mutex<Instant>,
}

impl RetryBudget {
    pub fn new(ratio: f64, min_per_s: u32) -> RetryBudget {
        let min_per_s = f64::from(min_per_s);
        RetryBudget {
            ratio,
            min_per_s,
            tokens: AtomicU64::new(min_per_s.to_bits()),
            refilled: Mutex::new(Instant::now()),
        }
    }

    fn cap(&self) -> f64 {
        (self.min_per_s * 10.0).max(100.0)
    }

    /// Applies `f` to the tokens atomically; returns what `f` returned.
    fn update<T>(&self, f: impl Fn(f64) -> (f64, T)) -> T {
        let mut cur = self.tokens.load(Ordering::Relaxed);
        loop {
            let (next, out) = f(f64::from_bits(cur));
            match self.tokens.compare_exchange_weak(
                cur,
                next.to_bits(),
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return out,
                Err(seen) => cur = seen,
            }
        }
    }

    /// A request arrived.
    pub fn deposit(&self) {
        let cap = self.cap();
        if f64::from_bits(self.tokens.load(Ordering::Relaxed)) >= cap {
            return;
        }
        self.update(|t| ((t + self.ratio).min(cap), ()));
    }

    /// Takes one retry if the budget allows.
    pub fn try_retry(&self) -> bool {
        let cap = self.cap();
        let mut at = lock(&self.refilled);
        let now = Instant::now();
        let refill = now.duration_since(*at).as_secs_f64() * self.min_per_s;
        *at = now;
        self.update(|t| {
            let t = (t + refill).min(cap);
            if t >= 1.0 {
                (t - 1.0, true)
            } else {
                (t, false)
            }
        })
    }
}

/// The log id header nodes send on every answer.
pub const LOG_HEADER: &str = "x-tandem-log";

/// Longest log id the edge records (a longer or unprintable one is ignored).
const LOG_ID_MAX: usize = 128;

/// The edge's shared state.
#[derive(Debug)]
pub struct Edge {
    /// The config the process started with. What a reload applies live is
    /// held apart (`admin_token`, `max_body_bytes`, the routes); the rest
    /// needs a restart (or a hand-over).
    pub cfg: EdgeConfig,
    pub routes: Routes,
    pub metrics: EdgeMetrics,
    pub budget: RetryBudget,
    pub draining: AtomicBool,
    /// Health probes (`/readyz`).
    client: Client<Connector, Full<Bytes>>,
    /// Buffered requests: keep-alive connections driven on the request's
    /// own task (`upstream`).
    upstreams: Upstreams,
    stream_client: Client<Connector, BoxBody>,
    /// TLS to the nodes for HTTP/1.1 (the pooled client and WebSocket
    /// upgrades) and for HTTP/2 (gRPC); `None`: plaintext. The connectors
    /// share these, so a reload reaches them.
    pub(crate) upstream_tls: Option<ClientTls>,
    upstream_tls_h2: Option<ClientTls>,
    /// TLS of the public and admin listeners (`None`: plaintext).
    pub tls: Option<Arc<ServerTls>>,
    pub admin_tls: Option<Arc<ServerTls>>,
    counter: AtomicU64,
    /// The admin API's bearer token (empty: the admin API is disabled).
    admin_token: RwLock<String>,
    /// Largest request body accepted (`limits.max_body_bytes`, live).
    max_body_bytes: AtomicUsize,
    /// The config as last applied (start, then each reload): what the next
    /// reload is compared with.
    running: Mutex<EdgeConfig>,
    /// The distinct logs last warned about (none while they agree).
    logs_warned: Mutex<Vec<String>>,
}

/// TCP to a node, then TLS when `[upstream.tls]` is set (the handshake
/// has the connect timeout too).
fn connector(cfg: &EdgeConfig, tls: Option<ClientTls>) -> Connector {
    let mut c = HttpConnector::new();
    c.set_nodelay(true);
    let timeout = Duration::from_millis(cfg.upstream.connect_timeout_ms);
    c.set_connect_timeout(Some(timeout));
    Connector::new(c, tls, timeout)
}

impl Edge {
    /// An edge for `cfg`.
    ///
    /// # Panics
    /// When the config's TLS files cannot be loaded; [`Edge::try_new`]
    /// says why instead (the process and `serve_in_process` use it).
    pub fn new(cfg: EdgeConfig) -> Arc<Edge> {
        Edge::try_new(cfg).unwrap_or_else(|e| panic!("edge TLS: {e}"))
    }

    /// An edge for `cfg`, with its TLS files read: the listeners'
    /// certificates and the CA (and client certificate) for the nodes.
    pub fn try_new(cfg: EdgeConfig) -> Result<Arc<Edge>, TlsError> {
        let (h1_tls, h2_tls) = match &cfg.upstream.tls {
            None => (None, None),
            Some(t) => (
                Some(ClientTls::load(&t.files(), &[b"http/1.1"])?),
                Some(ClientTls::load(&t.files(), &[b"h2"])?),
            ),
        };
        let tls = match &cfg.tls {
            None => None,
            Some(t) => Some(ServerTls::load(t.files("tls"))?),
        };
        let admin_tls = match &cfg.admin_tls {
            None => None,
            Some(t) => Some(ServerTls::load(t.files("admin_tls"))?),
        };
        let u = &cfg.upstream;
        let mut b = Client::builder(TokioExecutor::new());
        b.pool_idle_timeout(Duration::from_secs(u.pool_idle_secs))
            .pool_max_idle_per_host(u.pool_max_idle_per_node)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new());
        let client = b.build(connector(&cfg, h1_tls.clone()));
        let upstreams = Upstreams::new(
            connector(&cfg, h1_tls.clone()),
            Duration::from_secs(u.pool_idle_secs),
            u.pool_max_idle_per_node,
        );
        let mut b = Client::builder(TokioExecutor::new());
        b.pool_idle_timeout(Duration::from_secs(u.pool_idle_secs))
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .http2_only(true)
            .http2_keep_alive_interval(Duration::from_secs(u.h2_keepalive_interval_secs))
            .http2_keep_alive_timeout(Duration::from_secs(u.h2_keepalive_timeout_secs))
            .http2_keep_alive_while_idle(true);
        let stream_client = b.build(connector(&cfg, h2_tls.clone()));
        Ok(Arc::new(Edge {
            routes: Routes::new(&cfg.clusters),
            metrics: EdgeMetrics::default(),
            budget: RetryBudget::new(cfg.retry.budget_ratio, cfg.retry.budget_min_per_s),
            draining: AtomicBool::new(false),
            client,
            upstreams,
            stream_client,
            upstream_tls: h1_tls,
            upstream_tls_h2: h2_tls,
            tls,
            admin_tls,
            counter: AtomicU64::new(0),
            admin_token: RwLock::new(cfg.admin_token.clone()),
            max_body_bytes: AtomicUsize::new(cfg.limits.max_body_bytes),
            running: Mutex::new(cfg.clone()),
            logs_warned: Mutex::default(),
            cfg,
        }))
    }

    /// Reads the TLS files again (SIGHUP): the listeners' certificates and
    /// `[upstream.tls]` (CA and client certificate: new connections to the
    /// nodes use them, pooled ones keep their session). One JSON log line
    /// per section with TLS; a section whose files do not load keeps what
    /// it had.
    pub fn reload_tls(&self) -> Vec<String> {
        let mut lines: Vec<String> = [("public", &self.tls), ("admin", &self.admin_tls)]
            .into_iter()
            .filter_map(|(name, t)| t.as_ref().map(|t| t.reload_log_line(name, &t.reload())))
            .collect();
        if let (Some(h1), Some(h2)) = (&self.upstream_tls, &self.upstream_tls_h2) {
            // Both or neither: h2 is loaded only when h1 loaded.
            let r = h1.reload().and_then(|()| h2.reload());
            lines.push(h1.reload_log_line(&r));
        }
        lines
    }

    /// Closes the nodes' keep-alive connections idle longer than
    /// `upstream.pool_idle_secs` (the health loop calls it every interval).
    pub fn prune_idle(&self) {
        for n in self.routes.node_states() {
            n.pool.prune(self.upstreams.max_idle());
        }
    }

    /// The admin API's token now (empty: disabled).
    pub fn admin_token(&self) -> String {
        read(&self.admin_token).clone()
    }

    /// The body limit now.
    pub fn max_body_bytes(&self) -> usize {
        self.max_body_bytes.load(Ordering::Relaxed)
    }

    /// The config as last applied.
    pub fn running(&self) -> EdgeConfig {
        lock(&self.running).clone()
    }

    /// Applies what a reloaded config can change live (the admin token and
    /// the body limit; the routes are installed by the caller) and records
    /// it as running. Returns the changed settings applied and those that
    /// need a restart, as dotted names.
    pub fn apply_live(&self, new: &EdgeConfig) -> (Vec<String>, Vec<String>) {
        let mut running = lock(&self.running);
        let (mut applied, mut restart) = (Vec::new(), Vec::new());
        for name in crate::config::changed_settings(&running, new) {
            if crate::config::APPLIED_LIVE.contains(&name.as_str()) {
                applied.push(name);
            } else {
                restart.push(name);
            }
        }
        let mut next = running.clone();
        next.admin_token = new.admin_token.clone();
        next.limits.max_body_bytes = new.limits.max_body_bytes;
        next.clusters = new.clusters.clone();
        *write(&self.admin_token) = new.admin_token.clone();
        self.max_body_bytes
            .store(new.limits.max_body_bytes, Ordering::Relaxed);
        *running = next;
        (applied, restart)
    }

    /// Records the log id a node sent (`x-tandem-log`), and warns once per
    /// change when the nodes now report more than one log.
    pub fn note_log(&self, node: &NodeState, value: Option<&HeaderValue>) {
        let Some(id) = value.and_then(|v| v.to_str().ok()) else {
            return;
        };
        if id.is_empty() || id.len() > LOG_ID_MAX || !id.bytes().all(|b| b.is_ascii_graphic()) {
            return;
        }
        if !node.set_log(id) {
            return;
        }
        let nodes = self.routes.node_states();
        let mut distinct: Vec<String> = nodes.iter().filter_map(|n| n.log()).collect();
        distinct.sort();
        distinct.dedup();
        let mut warned = lock(&self.logs_warned);
        if distinct.len() < 2 {
            warned.clear();
            return;
        }
        if *warned == distinct {
            return;
        }
        let by_node: serde_json::Map<String, serde_json::Value> = nodes
            .iter()
            .filter_map(|n| n.log().map(|l| (n.addr.clone(), l.into())))
            .collect();
        eprintln!(
            "{}",
            serde_json::json!({
                "level": "warn",
                "msg": "nodes the edge routes to serve different logs: they are different exchanges, and a client moved between them sees another order book",
                "logs_distinct": distinct.len(),
                "logs": by_node,
            })
        );
        *warned = distinct;
    }

    /// The log id of every node that reported one, by address, and how
    /// many distinct ids there are (for metrics).
    pub fn logs(&self) -> (Vec<(String, String)>, usize) {
        let per: Vec<(String, String)> = self
            .routes
            .node_states()
            .iter()
            .filter_map(|n| n.log().map(|l| (n.addr.clone(), l)))
            .collect();
        let mut distinct: Vec<&str> = per.iter().map(|(_, l)| l.as_str()).collect();
        distinct.sort_unstable();
        distinct.dedup();
        let n = distinct.len();
        (per, n)
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
        let mut excluded = attempt::unavailable(&table, now);
        loop {
            let ci = tandem_route::route_excluding(&rc, &rreq, excluded)?;
            match attempt::pick_node(&table.clusters[ci], &self.cfg.zone, now, &[], key) {
                Some(n) => return Some((table.clusters[ci].clone(), n)),
                None => excluded |= 1 << ci,
            }
        }
    }

    /// `GET http://addr/readyz` within `timeout`: true on 200. The log id
    /// the node names is recorded (see `note_log`).
    pub async fn probe(&self, addr: &str, timeout: Duration) -> bool {
        let Ok(req) = Request::get(format!("http://{addr}/readyz")).body(Full::new(Bytes::new()))
        else {
            return false;
        };
        match tokio::time::timeout(timeout, self.client.request(req)).await {
            Ok(Ok(resp)) => {
                let ok = resp.status() == StatusCode::OK;
                if let Some(node) = self
                    .routes
                    .node_states()
                    .into_iter()
                    .find(|n| n.addr == addr)
                {
                    self.note_log(&node, resp.headers().get(LOG_HEADER));
                }
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
/// `account=`, else the JSON body's `account` string. A malformed
/// percent-escape in `account=` is an error (the client gets `400`, as
/// from the node), never a guess.
pub fn find_account(
    parts: &Parts,
    body: &[u8],
) -> Result<Option<Vec<u8>>, tandem_conn::percent::PercentError> {
    if let Some(v) = parts.headers.get("x-tandem-account") {
        if !v.is_empty() {
            return Ok(Some(v.as_bytes().to_vec()));
        }
    }
    if let Some(q) = parts.uri.query() {
        for pair in q.split('&') {
            if let Some(v) = pair.strip_prefix("account=") {
                if !v.is_empty() {
                    return tandem_conn::percent::decode_query(v).map(|v| Some(v.into_owned()));
                }
            }
        }
    }
    if body.first().is_some_and(|&c| c == b'{') || body.iter().take(16).any(|&c| c == b'{') {
        if let Ok(f) = tandem_codec::json::read_object(body) {
            if let Some(tandem_codec::json::Val::Str(s)) = &f[3] {
                if !s.is_empty() {
                    return Ok(Some(s.as_bytes().to_vec()));
                }
            }
        }
    }
    Ok(None)
}

/// Counts a failed attempt on `node`; ejects it after enough in a row.
fn failed(edge: &Edge, cluster: &TableCluster, node: &NodeState) {
    edge.metrics.upstream_error(&cluster.name, &cluster.version);
    let h = &edge.cfg.health;
    if attempt::record_failure(
        node,
        h.eject_after_failures,
        h.eject_ms,
        edge.routes.now_ms(),
    ) {
        edge.metrics.ejected(&cluster.name, &cluster.version);
    }
}

/// Removes the hop-by-hop headers in place (buffered requests: the map
/// is then cloned for each attempt).
/// The names are built once (`HeaderName`s, not strings parsed again at
/// every lookup); the request's few names are compared with them first,
/// so only the names present (usually just `host`) cost a lookup.
fn strip_hop_by_hop(headers: &mut http::HeaderMap) {
    let mut present = 0u16;
    for k in headers.keys() {
        if let Some(i) = HOP_BY_HOP.iter().position(|h| h == k) {
            present |= 1 << i;
        }
    }
    for (i, name) in HOP_BY_HOP.iter().enumerate() {
        if present & (1 << i) != 0 {
            // Every value of the name goes (`remove` drops them all).
            let _ = headers.remove(name);
        }
    }
}

/// Whether `name` belongs to one connection (never passed on, either way).
pub(crate) fn is_hop_by_hop(name: &HeaderName) -> bool {
    HOP_BY_HOP.contains(name)
}

fn copy_request_headers(from: &http::HeaderMap, to: &mut http::HeaderMap) {
    for (k, v) in from {
        if !is_hop_by_hop(k) {
            to.append(k.clone(), v.clone());
        }
    }
}

fn upstream_uri(addr: &str, parts: &Parts) -> String {
    let pq = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    format!("http://{addr}{pq}")
}

/// Reads a request's body whole, at most `max_body` bytes; the answer to
/// give instead when it is larger (413) or cannot be read (400).
async fn read_body(
    body: Incoming,
    max_body: usize,
    edge: &Edge,
) -> Result<Bytes, Response<BoxBody>> {
    match Limited::new(body, max_body).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<LengthLimitError>() => {
            edge.metrics.bad_request();
            Err(edge_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("body: larger than {max_body} bytes"),
                None,
            ))
        }
        Err(e) => {
            edge.metrics.bad_request();
            Err(edge_error(
                StatusCode::BAD_REQUEST,
                &format!("body: could not be read: {e}"),
                None,
            ))
        }
    }
}

/// Proxies one buffered request (everything but gRPC and upgrades).
pub async fn proxy(edge: &Arc<Edge>, req: Request<Incoming>) -> Response<BoxBody> {
    let started = Instant::now();
    edge.budget.deposit();
    let (mut parts, body) = req.into_parts();
    let max_body = edge.max_body_bytes();
    // A request hyper knows to have no body (no `content-length` or one of
    // 0, no chunked encoding: most reads) skips the collecting.
    let body = if body.is_end_stream() {
        Bytes::new()
    } else {
        match read_body(body, max_body, edge).await {
            Ok(b) => b,
            Err(answer) => return answer,
        }
    };
    let account = match find_account(&parts, &body) {
        Ok(a) => a,
        Err(e) => {
            edge.metrics.bad_request();
            return edge_error(StatusCode::BAD_REQUEST, &format!("account: {e}"), None);
        }
    };
    let pin = parts
        .headers
        .get("x-dex-version")
        .and_then(|v| tandem_route::Role::from_header(v.as_bytes()));
    // What every attempt sends: the path and query (origin form; the
    // node's address goes in `host`) and the headers less hop-by-hop.
    let origin = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut forward = std::mem::take(&mut parts.headers);
    strip_hop_by_hop(&mut forward);
    let key = edge.counter.fetch_add(1, Ordering::Relaxed);
    let table = edge.routes.table();
    let mut plan = attempt::Plan::new(
        Arc::clone(&table),
        attempt::Routed { pin, account, key },
        (&parts.method, parts.uri.path()),
        &edge.cfg.zone,
        edge.routes.now_ms(),
        edge.cfg.retry.max_attempts,
    );
    let mut last: Option<Response<BoxBody>> = None;
    while let Some((ci, node)) = plan.next_node() {
        let cluster = &table.clusters[ci];
        if plan.attempts() > 0 {
            if !edge.budget.try_retry() {
                edge.metrics.budget_exhausted();
                break;
            }
            edge.metrics.retried(&cluster.name, &cluster.version);
            tokio::time::sleep(Duration::from_millis(edge.cfg.retry.backoff_ms)).await;
        }
        plan.sent(&node);
        let Some((authority, host)) = &node.authority else {
            edge.metrics.bad_request();
            return edge_error(StatusCode::BAD_REQUEST, "path: not a valid URI", None);
        };
        let up = Outgoing {
            method: &parts.method,
            path: origin,
            headers: &forward,
            host,
            body: &body,
        };
        node.in_flight.fetch_add(1, Ordering::Relaxed);
        let res = tokio::time::timeout(
            Duration::from_millis(edge.cfg.upstream.request_timeout_ms),
            edge.upstreams.send(&node, authority, up),
        )
        .await;
        node.in_flight.fetch_sub(1, Ordering::Relaxed);
        let (tried, resp) = match res {
            Ok(Ok(resp)) => (attempt::Tried::Answered(resp.status().as_u16()), Some(resp)),
            Ok(Err(SendError::Connect)) => (attempt::Tried::ConnectFailed, None),
            Ok(Err(SendError::Dropped)) => (attempt::Tried::Dropped, None),
            Err(_) => (attempt::Tried::TimedOut, None),
        };
        if attempt::is_failure(tried) {
            failed(edge, cluster, &node);
        } else {
            attempt::record_success(&node);
        }
        if let Some(r) = &resp {
            edge.note_log(&node, r.headers().get(LOG_HEADER));
        }
        match (plan.judge(tried), resp) {
            (attempt::Verdict::Answer, Some(resp)) => {
                let status = resp.status().as_u16();
                let mut resp = resp.map(|b| b.map_err(|never| match never {}).boxed_unsync());
                if let Some(v) = &cluster.name_header {
                    resp.headers_mut()
                        .insert(HeaderName::from_static("x-tandem-cluster"), v.clone());
                }
                edge.metrics
                    .answered(&cluster.name, &cluster.version, status, started.elapsed());
                return resp;
            }
            (attempt::Verdict::NotRepeated, _) | (attempt::Verdict::Answer, None) => {
                let timed_out = tried == attempt::Tried::TimedOut;
                edge.metrics.answered(
                    &cluster.name,
                    &cluster.version,
                    if timed_out { 504 } else { 502 },
                    started.elapsed(),
                );
                let msg = format!(
                    "upstream: the node {} and the request was not repeated: {} {} is not known to be safe to repeat",
                    if timed_out { "did not answer in time" } else { "dropped the connection" },
                    parts.method,
                    parts.uri.path()
                );
                let status = if timed_out {
                    StatusCode::GATEWAY_TIMEOUT
                } else {
                    StatusCode::BAD_GATEWAY
                };
                return edge_error(status, &msg, None);
            }
            (attempt::Verdict::TryAnother, resp) => {
                if let Some(resp) = resp {
                    last = Some(resp.map(|b| b.map_err(|never| match never {}).boxed_unsync()));
                }
            }
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

#[cfg(test)]
mod tests {
    use super::strip_hop_by_hop;
    use http::{HeaderMap, HeaderValue};

    #[test]
    fn every_hop_by_hop_header_goes_with_all_its_values_and_nothing_else_does() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("connection", "keep-alive"),
            ("keep-alive", "timeout=5"),
            ("keep-alive", "max=100"),
            ("proxy-authenticate", "Basic"),
            ("proxy-authorization", "Basic eA=="),
            ("te", "trailers"),
            ("trailer", "x-checksum"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("host", "edge.example"),
            ("x-tandem-account", "acct-1"),
            ("content-type", "application/json"),
            ("x-dex-version", "canary"),
        ] {
            h.append(k, HeaderValue::from_static(v));
        }
        strip_hop_by_hop(&mut h);
        let mut left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        left.sort_unstable();
        assert_eq!(left, ["content-type", "x-dex-version", "x-tandem-account"]);
        assert_eq!(h.len(), 3, "no value of a removed name is left");
    }
}
