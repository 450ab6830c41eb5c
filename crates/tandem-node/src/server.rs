//! The node's listener: accepts connections (HTTP/1.1 and HTTP/2 on one
//! port), bounds them, closes idle keep-alive connections only after a long
//! timeout, catches a panicking handler (500, counted), and drains on
//! shutdown: not ready first, then no new connections, then in-flight
//! requests finish, within a bound.

use std::convert::Infallible;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify};

use crate::api::{self, Answer};
use crate::node::Node;
use crate::BoxBody;

/// Counts open connections and wakes the drain when the last one closes.
#[derive(Default)]
struct Open {
    n: AtomicUsize,
    zero: Notify,
}

struct OpenGuard(Arc<Open>, Arc<Node>);

/// A share of a connection's slot, put in each request's extensions: a
/// WebSocket stream keeps it after the upgrade (when hyper's connection
/// task ends), so an upgraded connection still counts against
/// `limits.max_connections` and holds up the drain until it closes.
#[derive(Clone)]
pub struct ConnSlot(#[allow(dead_code)] Arc<OpenGuard>);

impl std::fmt::Debug for ConnSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ConnSlot")
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.1.metrics.connection_closed();
        if self.0.n.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.zero.notify_waiters();
        }
    }
}

/// Answers one request: routes it (gRPC to `grpc`, market streams to
/// `ws`), catches a panic.
async fn dispatch(node: Arc<Node>, req: Request<Incoming>) -> Response<BoxBody> {
    let started = Instant::now();
    if crate::grpc::is_grpc(&req) {
        return crate::grpc::serve(node, req, started).await;
    }
    let route = api::route_of(req.method(), req.uri().path());
    if route == "stream" {
        return crate::ws::serve(node, req, started).await;
    }
    let answer = AssertUnwindSafe(api::handle(&node, req))
        .catch_unwind()
        .await
        .unwrap_or_else(|_| {
            node.metrics.panicked();
            Answer::error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal: the handler failed; nothing was appended by this request's failure",
            )
        });
    api::respond(&node, answer, started, route)
}

/// What every accepted connection needs: the limit, the protocol
/// builder, the drain signal and the idle timeout.
struct Conns {
    open: Arc<Open>,
    node: Arc<Node>,
    builder: Arc<hyper_util::server::conn::auto::Builder<TokioExecutor>>,
    closing: watch::Receiver<bool>,
    base: Instant,
    idle: Duration,
    /// A request must be answered this long after its first byte.
    request: Duration,
}

impl Conns {
    /// Serves one accepted connection on its own task (or refuses it when
    /// the node is at its connection limit). The connection closes
    /// gracefully when the drain starts or after `idle` without a byte.
    fn accept(&self, stream: TcpStream) {
        let node = &self.node;
        let _ = stream.set_nodelay(true);
        if self.open.n.load(Ordering::Acquire) >= node.cfg.limits.max_connections {
            node.metrics.connection_refused();
            tokio::spawn(refuse(stream, Arc::clone(node)));
            return;
        }
        self.open.n.fetch_add(1, Ordering::AcqRel);
        node.metrics.connection_opened();
        let guard = Arc::new(OpenGuard(Arc::clone(&self.open), Arc::clone(node)));
        let (idle, request) = (self.idle, self.request);
        let timing = tandem_conn::Timing::new(self.base);
        let io = tandem_conn::TimedIo::new(stream, Arc::clone(&timing));
        let node = Arc::clone(node);
        let builder = Arc::clone(&self.builder);
        let mut closing = self.closing.clone();
        tokio::spawn(async move {
            let guard = guard;
            let head_timing = Arc::clone(&timing);
            let slot = ConnSlot(Arc::clone(&guard));
            let svc = hyper::service::service_fn(move |mut req: Request<Incoming>| {
                head_timing.head_read();
                req.extensions_mut().insert(slot.clone());
                let node = Arc::clone(&node);
                async move { Ok::<_, Infallible>(dispatch(node, req).await) }
            });
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), svc);
            tokio::pin!(conn);
            let mut tick = tokio::time::interval(tandem_conn::Timing::check_every(idle, request));
            let mut closed = *closing.borrow();
            if closed {
                conn.as_mut().graceful_shutdown();
            }
            loop {
                tokio::select! {
                    _ = conn.as_mut() => break,
                    r = closing.changed(), if !closed => {
                        if r.is_err() || *closing.borrow() {
                            closed = true;
                            conn.as_mut().graceful_shutdown();
                        }
                    }
                    _ = tick.tick() => match timing.verdict(idle, request) {
                        tandem_conn::Verdict::Keep => {}
                        // Idle: close between requests, as a keep-alive
                        // timeout does.
                        tandem_conn::Verdict::Idle if !closed => {
                            closed = true;
                            conn.as_mut().graceful_shutdown();
                        }
                        tandem_conn::Verdict::Idle => {}
                        // A request trickling in (slowloris) or never
                        // answered: drop the connection.
                        tandem_conn::Verdict::Slow => break,
                    },
                }
            }
        });
    }
}

/// Serves `listener` until `shutdown` resolves, then drains: marks the node
/// not ready, keeps serving for `drain_grace` (so balancers see `/readyz`
/// fail and move away), stops accepting, lets in-flight requests finish
/// (idle connections are closed at once), and returns when all connections
/// are closed or `drain_timeout` has passed.
pub async fn serve(
    listener: TcpListener,
    node: Arc<Node>,
    shutdown: impl Future<Output = ()>,
    drain_grace: Duration,
) {
    let open = Arc::new(Open::default());
    let (closing_tx, closing_rx) = watch::channel(false);
    let base = Instant::now();
    let http = &node.cfg.http;
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        // hyper's header timeout also runs on idle keep-alive connections
        // (it closed them after 10 s, under the edge's 60 s pool); the
        // slow-request rule of `tandem_conn` takes its place.
        .header_read_timeout(None)
        .max_buf_size(node.cfg.limits.max_header_bytes.max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Duration::from_secs(http.h2_keepalive_interval_secs))
        .keep_alive_timeout(Duration::from_secs(http.h2_keepalive_timeout_secs))
        .max_header_list_size(node.cfg.limits.max_header_bytes as u32);
    let conns = Arc::new(Conns {
        open: Arc::clone(&open),
        node: Arc::clone(&node),
        builder: Arc::new(builder),
        closing: closing_rx,
        base,
        idle: Duration::from_secs(http.idle_timeout_secs),
        request: Duration::from_secs(http.header_read_timeout_secs),
    });
    tokio::pin!(shutdown);
    loop {
        let (stream, _peer) = tokio::select! {
            _ = &mut shutdown => break,
            r = listener.accept() => match r {
                Ok(s) => s,
                Err(e) => {
                    // Out of descriptors and the like: back off, keep going.
                    eprintln!("{{\"msg\":\"accept failed\",\"error\":{:?}}}", e.to_string());
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        conns.accept(stream);
    }
    // Drain.
    node.start_draining();
    eprintln!(
        "{{\"msg\":\"draining\",\"grace_ms\":{},\"open_connections\":{}}}",
        drain_grace.as_millis(),
        open.n.load(Ordering::Acquire)
    );
    // Keep accepting during the grace period: balancers still route here
    // until they see /readyz fail.
    let grace_end = tokio::time::Instant::now() + drain_grace;
    let listener = Arc::new(listener);
    let accept_more = {
        let listener = Arc::clone(&listener);
        let conns = Arc::clone(&conns);
        tokio::spawn(async move {
            loop {
                if let Ok((stream, _)) = listener.accept().await {
                    conns.accept(stream);
                }
            }
        })
    };
    tokio::time::sleep_until(grace_end).await;
    accept_more.abort();
    drop(listener);
    let _ = closing_tx.send(true);
    let deadline = Duration::from_secs(node.cfg.http.drain_timeout_secs);
    let drained = tokio::time::timeout(deadline, async {
        loop {
            let wait = open.zero.notified();
            if open.n.load(Ordering::Acquire) == 0 {
                break;
            }
            wait.await;
        }
    })
    .await
    .is_ok();
    eprintln!(
        "{{\"msg\":\"drained\",\"clean\":{drained},\"open_connections\":{}}}",
        open.n.load(Ordering::Acquire)
    );
}

/// Over the connection limit: one `503` with `retry-after` and the headers
/// every answer carries, then close.
async fn refuse(mut stream: TcpStream, node: Arc<Node>) {
    let body =
        br#"{"error":"connections: this node is at its connection limit; retry on another node"}"#;
    let token = api::seq_token(&node, None, 0);
    let head = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\n\
         x-dex-version: {}\r\nx-tandem-version: {}\r\nx-tandem-seq: {}\r\n\
         connection: close\r\ncontent-length: {}\r\n\r\n",
        node.cfg.role.as_str(),
        node.cfg.version,
        token.to_str().unwrap_or(""),
        body.len()
    );
    let _ = stream.write_all(head.as_bytes()).await;
    let _ = stream.write_all(body).await;
    let _ = stream.shutdown().await;
}
