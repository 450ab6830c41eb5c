//! The node as a service of the shared scaffold (`tandem_conn::server`):
//! connections, the limit and its refusal, HTTP/1.1 and HTTP/2 on one
//! port, idle and slow-request rules, the per-request panic catch, early
//! answers and the drain are the scaffold's; here are only the node's
//! parts: routing a request (gRPC, market streams, the API), the headers
//! every answer carries (also on the scaffold's own answers), the metrics
//! hooks, and the drain's first step (not ready).

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{HeaderMap, Request, Response};
use hyper::body::Incoming;
use tandem_conn::server::{Limits, Service};

pub use tandem_conn::server::{ConnSlot, Drained, Stop};

use crate::api;
use crate::node::Node;
use crate::BoxBody;

/// The node plugged into the scaffold.
#[derive(Debug)]
pub struct NodeService {
    node: Arc<Node>,
    drain_grace: Duration,
}

impl NodeService {
    pub fn new(node: Arc<Node>, drain_grace: Duration) -> Arc<NodeService> {
        Arc::new(NodeService { node, drain_grace })
    }
}

/// Answers one request: gRPC to `grpc`, market streams to `ws`, the rest
/// to `api`.
async fn dispatch(node: Arc<Node>, req: Request<Incoming>) -> Response<BoxBody> {
    let started = Instant::now();
    if crate::grpc::is_grpc(&req) {
        return crate::grpc::serve(node, req, started).await;
    }
    let route = api::route_of(req.method(), req.uri().path());
    if route == "stream" {
        return crate::ws::serve(node, req, started).await;
    }
    let answer = api::handle(&node, req).await;
    api::respond(&node, answer, started, route)
}

impl Service for NodeService {
    async fn call(self: Arc<Self>, req: Request<Incoming>) -> Response<BoxBody> {
        dispatch(Arc::clone(&self.node), req).await
    }

    fn answer_headers(&self, h: &mut HeaderMap) {
        api::common_headers(&self.node, None, 0, h);
    }

    fn refusal(&self) -> String {
        "connections: this node is at its connection limit; retry on another node".into()
    }

    fn panicked(&self) {
        self.node.metrics.panicked();
    }

    fn connection_opened(&self) {
        self.node.metrics.connection_opened();
    }

    fn connection_closed(&self) {
        self.node.metrics.connection_closed();
    }

    fn connection_refused(&self) {
        self.node.metrics.connection_refused();
    }

    fn draining(&self, open: usize) {
        self.node.start_draining();
        eprintln!(
            "{{\"msg\":\"draining\",\"grace_ms\":{},\"open_connections\":{open}}}",
            self.drain_grace.as_millis(),
        );
    }
}

/// The scaffold's limits from the node's config.
pub fn limits(node: &Node, drain_grace: Duration) -> Limits {
    let (l, http) = (&node.cfg.limits, &node.cfg.http);
    Limits {
        max_connections: l.max_connections,
        max_header_bytes: l.max_header_bytes,
        idle: Duration::from_secs(http.idle_timeout_secs),
        request_head: Duration::from_secs(http.header_read_timeout_secs),
        h2_keepalive_interval: Some(Duration::from_secs(http.h2_keepalive_interval_secs)),
        h2_keepalive_timeout: Duration::from_secs(http.h2_keepalive_timeout_secs),
        drain_grace,
        drain_timeout: Duration::from_secs(http.drain_timeout_secs),
        ..Limits::default()
    }
}

/// Serves `listener` until `stop` resolves, then drains: a `Stop::Drain`
/// marks the node not ready, keeps serving for `drain_grace` (so balancers
/// see `/readyz` fail and move away), stops accepting, lets in-flight
/// requests finish (idle connections are closed at once), and returns
/// when all connections are closed or `drain_timeout` has passed; a
/// `Stop::HandOver` (a successor accepts from the same socket) skips the
/// grace.
pub async fn serve_until(
    listener: tokio::net::TcpListener,
    node: Arc<Node>,
    stop: impl Future<Output = Stop>,
    drain_grace: Duration,
) -> Drained {
    serve_until_tls(listener, node, None, stop, drain_grace).await
}

/// [`serve_until`] with TLS when `tls` is given (`[tls]`; see
/// `tandem_conn::tls`).
pub async fn serve_until_tls(
    listener: tokio::net::TcpListener,
    node: Arc<Node>,
    tls: Option<Arc<tandem_conn::tls::ServerTls>>,
    stop: impl Future<Output = Stop>,
    drain_grace: Duration,
) -> Drained {
    let limits = limits(&node, drain_grace);
    let svc = NodeService::new(node, drain_grace);
    let drained = tandem_conn::server::serve_tls(listener, svc, limits, tls, stop).await;
    eprintln!(
        "{{\"msg\":\"drained\",\"clean\":{},\"open_connections\":{}}}",
        drained.clean, drained.open
    );
    drained
}

/// [`serve_until`] with a shutdown that drains (SIGTERM).
pub async fn serve(
    listener: tokio::net::TcpListener,
    node: Arc<Node>,
    shutdown: impl Future<Output = ()>,
    drain_grace: Duration,
) {
    serve_until(
        listener,
        node,
        async move {
            shutdown.await;
            Stop::Drain
        },
        drain_grace,
    )
    .await;
}
