//! Tandem's edge: a reverse proxy in front of the nodes of several
//! clusters. It pins requests by `x-dex-version`, keeps an account on one
//! cluster by weighted rendezvous hashing (`tandem-route`, the same code the
//! Cloudflare Worker runs as WebAssembly), splits the rest by weight, sends
//! each request to the nearest healthy node, and retries a failed attempt
//! on another node within a budget. Weights and node sets change live
//! (admin API, SIGHUP reload) and the process itself can be replaced
//! without refusing a connection (SIGUSR2: the listening sockets are handed
//! to a new process, which takes over the same accept queue).
//!
//! - `config`: the config file; `table`: the live routing table and node
//!   health; `proxy`: the request path; `upstream`: the keep-alive
//!   connections to the nodes it uses; `upgrade`: WebSocket pass-through;
//!   `admin`: the admin API; `metrics`: Prometheus text; `handover`: the
//!   listening sockets across a process replacement; `openapi`: the
//!   description of the public API, served at `/openapi.json`.

pub mod admin;
pub mod attempt;
pub mod config;
pub mod handover;
pub mod metrics;
pub mod openapi;
pub mod proxy;
pub mod table;
pub mod upgrade;
pub mod upstream;

use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use tokio::net::TcpListener;
use tokio::sync::watch;

pub use config::EdgeConfig;
pub use proxy::Edge;

/// Errors of response bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The body of every response.
pub type BoxBody = http_body_util::combinators::UnsyncBoxBody<bytes::Bytes, BoxError>;

/// Routes one public request: `GET /openapi.json` answered here, then
/// upgrades, gRPC and buffered HTTP each to their proxy (`run` serves this
/// on the public listener; tests too).
pub async fn dispatch(edge: Arc<Edge>, req: Request<Incoming>) -> Response<BoxBody> {
    if req.method() == http::Method::GET && req.uri().path() == "/openapi.json" {
        return openapi::answer();
    }
    if upgrade::is_upgrade(&req) {
        return upgrade::proxy_upgrade(&edge, req).await;
    }
    let grpc = req
        .headers()
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    if grpc {
        return proxy::proxy_stream(&edge, req).await;
    }
    proxy::proxy(&edge, req).await
}

/// The edge (public or admin listener) plugged into the shared scaffold
/// (`tandem_conn::server`): its handler, its refusal and its counters.
struct EdgeService<H> {
    edge: Arc<Edge>,
    handler: H,
    /// Set for one of several worker threads on one socket.
    balance: Option<Balance>,
}

/// The open connections of each worker accepting from one socket, and
/// which worker this is: a worker holding more than one connection above
/// the least loaded one leaves the next connection to the others (without
/// this, the first worker to wake takes a burst of new connections whole,
/// and one thread serves them all).
#[derive(Debug, Clone)]
struct Balance {
    open: Arc<[std::sync::atomic::AtomicUsize]>,
    me: usize,
}

impl Balance {
    fn may_accept(&self) -> bool {
        let mine = self.open[self.me].load(Ordering::Relaxed);
        let least = self
            .open
            .iter()
            .map(|n| n.load(Ordering::Relaxed))
            .min()
            .unwrap_or(0);
        mine <= least + 1
    }
}

impl<H, F> tandem_conn::server::Service for EdgeService<H>
where
    H: Fn(Arc<Edge>, Request<Incoming>) -> F + Send + Sync + 'static,
    F: Future<Output = Response<BoxBody>> + Send + 'static,
{
    fn call(
        self: Arc<Self>,
        req: Request<Incoming>,
    ) -> impl Future<Output = Response<BoxBody>> + Send + 'static {
        (self.handler)(Arc::clone(&self.edge), req)
    }

    fn refusal(&self) -> String {
        "connections: the edge is at its connection limit".into()
    }

    fn panicked(&self) {
        self.edge.metrics.panicked();
    }

    fn connection_refused(&self) {
        self.edge.metrics.connection_refused();
    }

    fn connection_opened(&self) {
        if let Some(b) = &self.balance {
            b.open[b.me].fetch_add(1, Ordering::Relaxed);
        }
    }

    fn connection_closed(&self) {
        if let Some(b) = &self.balance {
            b.open[b.me].fetch_sub(1, Ordering::Relaxed);
        }
    }

    fn may_accept(&self) -> bool {
        self.balance.as_ref().is_none_or(Balance::may_accept)
    }

    fn tls_handshake_failed(&self) {
        self.edge.metrics.tls_handshake_failed();
    }
}

/// Serves `listener` with `handler` until `stop` resolves, then stops
/// accepting (the socket itself stays open while another process holds
/// it) and lets in-flight requests finish, at most `drain` long. Idle
/// keep-alive connections are closed at once; a connection that has not
/// sent its first request yet gets a grace to send it. Connections,
/// limits, timeouts, the panic catch (500, counted) and early answers are
/// the scaffold's (`tandem_conn::server`).
pub async fn serve<H, F>(
    listener: TcpListener,
    edge: Arc<Edge>,
    handler: H,
    stop: impl Future<Output = ()>,
    drain: Duration,
) where
    H: Fn(Arc<Edge>, Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<BoxBody>> + Send + 'static,
{
    serve_tls(listener, edge, handler, None, stop, drain).await
}

/// [`serve`] with TLS when `tls` is given (the edge's `tls` for the public
/// listener, `admin_tls` for the admin one).
pub async fn serve_tls<H, F>(
    listener: TcpListener,
    edge: Arc<Edge>,
    handler: H,
    tls: Option<Arc<tandem_conn::tls::ServerTls>>,
    stop: impl Future<Output = ()>,
    drain: Duration,
) where
    H: Fn(Arc<Edge>, Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<BoxBody>> + Send + 'static,
{
    serve_share(listener, edge, handler, tls, stop, drain, None).await
}

/// [`serve_tls`], alone or as one of several accept loops on the same
/// socket (`balance`): each of those takes its part of
/// `limits.max_connections` (rounded up).
async fn serve_share<H, F>(
    listener: TcpListener,
    edge: Arc<Edge>,
    handler: H,
    tls: Option<Arc<tandem_conn::tls::ServerTls>>,
    stop: impl Future<Output = ()>,
    drain: Duration,
    balance: Option<Balance>,
) where
    H: Fn(Arc<Edge>, Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<BoxBody>> + Send + 'static,
{
    let lim = &edge.cfg.limits;
    let limits = tandem_conn::server::Limits {
        max_connections: lim
            .max_connections
            .div_ceil(balance.as_ref().map_or(1, |b| b.open.len())),
        max_header_bytes: lim.max_header_bytes,
        idle: Duration::from_secs(lim.idle_timeout_secs),
        // A request head must be in within this; waiting for the node
        // after that is bounded by the upstream timeout.
        request_head: Duration::from_secs(lim.header_read_timeout_secs),
        h2_keepalive_interval: Some(Duration::from_secs(
            edge.cfg.upstream.h2_keepalive_interval_secs,
        )),
        drain_grace: Duration::ZERO,
        drain_timeout: drain,
        ..tandem_conn::server::Limits::default()
    };
    let svc = Arc::new(EdgeService {
        edge,
        handler,
        balance,
    });
    tandem_conn::server::serve_tls(listener, svc, limits, tls, async move {
        stop.await;
        tandem_conn::server::Stop::HandOver
    })
    .await;
}

/// The worker threads serving the public listener (see [`spawn_workers`]).
#[derive(Debug)]
pub struct Workers {
    threads: Vec<std::thread::JoinHandle<()>>,
    open: Arc<[std::sync::atomic::AtomicUsize]>,
}

impl Workers {
    /// Open connections of each worker now.
    pub fn open(&self) -> Vec<usize> {
        self.open
            .iter()
            .map(|n| n.load(Ordering::Relaxed))
            .collect()
    }

    /// Waits until every worker has drained and stopped.
    pub fn join(self) {
        for t in self.threads {
            let _ = t.join();
        }
    }
}

/// Serves `listener` with `handler` on `workers` threads, each running its
/// own single-threaded runtime and accepting from the same socket, as
/// nginx's worker processes do: a connection, its requests and the
/// keep-alive connections to the nodes they use stay on one thread, so no
/// request wakes another thread (tokio's shared multi-thread scheduler
/// woke a parked worker about twice per proxied request: two futex calls
/// and a thread switch each). Each worker takes its part of
/// `limits.max_connections`, and one holding more than one connection
/// above the least loaded worker leaves new connections to the others.
/// When `stop` turns true every worker stops
/// accepting (dropping its copy of the socket) and drains as [`serve`]
/// does. `listener` itself goes to the first worker, so the socket stays
/// open (for a hand-over) until the workers stop.
pub fn spawn_workers<H, F>(
    listener: std::net::TcpListener,
    edge: Arc<Edge>,
    handler: H,
    workers: usize,
    stop: watch::Receiver<bool>,
    drain: Duration,
) -> std::io::Result<Workers>
where
    H: Fn(Arc<Edge>, Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<BoxBody>> + Send + 'static,
{
    let workers = workers.max(1);
    listener.set_nonblocking(true)?;
    let mut sockets = Vec::with_capacity(workers);
    for _ in 1..workers {
        sockets.push(listener.try_clone()?);
    }
    sockets.insert(0, listener);
    let open: Arc<[std::sync::atomic::AtomicUsize]> = (0..workers)
        .map(|_| std::sync::atomic::AtomicUsize::new(0))
        .collect();
    let mut threads = Vec::with_capacity(workers);
    for (i, socket) in sockets.into_iter().enumerate() {
        let balance = Balance {
            open: Arc::clone(&open),
            me: i,
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (edge, handler, mut stop) = (Arc::clone(&edge), handler.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name(format!("tandem-edge-w{i}"))
            .spawn(move || {
                upstream::set_worker(i);
                rt.block_on(async move {
                    let Ok(listener) = TcpListener::from_std(socket) else {
                        return;
                    };
                    let tls = edge.tls.clone();
                    let stopped = async move {
                        let _ = stop.wait_for(|s| *s).await;
                    };
                    serve_share(listener, edge, handler, tls, stopped, drain, Some(balance)).await;
                });
            })?;
        threads.push(thread);
    }
    Ok(Workers { threads, open })
}

/// Failed active checks in a row before a node is taken out. One is not
/// enough: a check that misses its timeout once because the host stalled
/// (every node's check at the same moment) took every node out together
/// and the edge answered 503 until the next round (seen in
/// tests/process.rs under a host load of 9: 3 of 7 runs failed, 1 of 15
/// with two checks). A node that really went away is also caught by
/// passive ejection (connect errors), and its requests are retried
/// elsewhere meanwhile.
pub const UNHEALTHY_AFTER_CHECKS: u32 = 2;

/// One active check's result against a node's failed checks in a row
/// (`row`, updated): `Some(true)` when it passed (the node is ready),
/// `Some(false)` once [`UNHEALTHY_AFTER_CHECKS`] failed in a row (it is
/// not), `None` when a failure leaves the node as it was.
pub fn after_check(row: &mut u32, ok: bool) -> Option<bool> {
    if ok {
        *row = 0;
        return Some(true);
    }
    *row = row.saturating_add(1);
    (*row >= UNHEALTHY_AFTER_CHECKS).then_some(false)
}

/// Active health checks: `GET /readyz` on every node every interval; a
/// node that fails [`UNHEALTHY_AFTER_CHECKS`] in a row is not ready (gets
/// nothing new) until one passes. Each
/// round also closes the keep-alive connections to the nodes that have
/// been idle too long.
pub async fn health_loop(edge: Arc<Edge>) {
    let every = Duration::from_millis(edge.cfg.health.interval_ms);
    let timeout = Duration::from_millis(edge.cfg.health.timeout_ms);
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Failed checks in a row, per node address.
    let mut failed: std::collections::BTreeMap<String, u32> = std::collections::BTreeMap::new();
    loop {
        tick.tick().await;
        let checks = edge.routes.node_states().into_iter().map(|n| {
            let edge = Arc::clone(&edge);
            tokio::spawn(async move {
                let ok = edge.probe(&n.addr, timeout).await;
                (n, ok)
            })
        });
        let handles: Vec<_> = checks.collect();
        let mut seen = std::collections::BTreeSet::new();
        for h in handles {
            let Ok((n, ok)) = h.await else { continue };
            let row = failed.entry(n.addr.clone()).or_insert(0);
            if let Some(ready) = after_check(row, ok) {
                n.ready.store(ready, Ordering::Relaxed);
            }
            seen.insert(n.addr.clone());
        }
        // Nodes no longer routed to are forgotten.
        failed.retain(|addr, _| seen.contains(addr));
        edge.prune_idle();
    }
}

/// An edge served on the current tokio runtime on loopback ports of the
/// config's listen addresses (port 0 for any): its public and admin
/// listeners with active health checks. Stops (drains, at most `drain`)
/// when dropped. For tests and embedding; `run` is the process (signals,
/// reload from a file, socket hand-over).
#[derive(Debug)]
pub struct Served {
    pub public: std::net::SocketAddr,
    pub admin: std::net::SocketAddr,
    pub edge: Arc<Edge>,
    stop: watch::Sender<bool>,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// Binds the config's listeners and serves an edge on them (see [`Served`]);
/// TLS files that cannot be loaded are an `InvalidInput` error naming the
/// field.
pub async fn serve_in_process(cfg: EdgeConfig, drain: Duration) -> std::io::Result<Served> {
    let public = TcpListener::bind(cfg.listen).await?;
    let admin = TcpListener::bind(cfg.admin_listen).await?;
    let (public_addr, admin_addr) = (public.local_addr()?, admin.local_addr()?);
    let edge = Edge::try_new(cfg)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))?;
    let (stop, rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    tokio::spawn(health_loop(Arc::clone(&edge)));
    tokio::spawn(serve_tls(
        public,
        Arc::clone(&edge),
        dispatch,
        edge.tls.clone(),
        stopped(rx.clone()),
        drain,
    ));
    tokio::spawn(serve_tls(
        admin,
        Arc::clone(&edge),
        |e, r| async move { admin::handle(&e, &None, r).await },
        edge.admin_tls.clone(),
        stopped(rx),
        drain,
    ));
    Ok(Served {
        public: public_addr,
        admin: admin_addr,
        edge,
        stop,
    })
}

/// Runs the edge until SIGTERM/SIGINT (drain, exit) or a completed
/// SIGUSR2 hand-over (a new process took the sockets and the admin-set
/// weights with their generation; drain, exit). SIGHUP reloads
/// `config_path`: node sets, weights not set through the admin API, the
/// admin token and the body limit apply live; the log line names what was
/// applied, what needs a restart, and which admin weights were kept. It
/// also reads the listeners' TLS certificate files again (`[tls]`,
/// `[admin_tls]`): new connections get the new certificate.
pub fn run(cfg: EdgeConfig, config_path: Option<PathBuf>) -> anyhow::Result<()> {
    use anyhow::Context;
    // This runtime runs the signals, the admin listener and the health
    // checks; the public listener has worker threads of its own
    // (`spawn_workers`).
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("start runtime")?;
    let workers = match cfg.worker_threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    rt.block_on(async move {
        // The handlers come first: a signal that arrives once the edge
        // answers must be acted on (drain, reload, hand over), not take
        // its default action (SIGTERM and SIGHUP kill).
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
        let mut int = signal(SignalKind::interrupt()).context("SIGINT handler")?;
        let mut hup = signal(SignalKind::hangup()).context("SIGHUP handler")?;
        let mut usr2 = signal(SignalKind::user_defined2()).context("SIGUSR2 handler")?;
        let cfg = cfg.with_env(|k| std::env::var(k).ok());
        if cfg.admin_token.is_empty() {
            eprintln!("{}", admin::disabled_warning());
        }
        // The TLS files first: an edge that cannot load them never listens.
        let (listen, admin_listen) = (cfg.listen, cfg.admin_listen);
        let drain = Duration::from_secs(cfg.drain_timeout_secs);
        let edge = Edge::try_new(cfg).context("tls")?;
        let (public, admin) = handover::listeners(listen, admin_listen)?;
        eprintln!(
            "{{\"msg\":\"edge listening\",\"public\":\"{}\",\"admin\":\"{}\",\"pid\":{},\"inherited\":{}}}",
            public.local_addr()?,
            admin.local_addr()?,
            std::process::id(),
            handover::inherited()
        );
        if let Ok(state) = std::env::var(admin::HANDOVER_ENV) {
            // A predecessor's live weights: refusing to start (it keeps
            // serving) beats silently undoing a rollback.
            let generation = admin::take_handover_state(&edge, &state).map_err(anyhow::Error::msg)?;
            eprintln!(
                "{}",
                serde_json::json!({"msg": "weights taken from the predecessor", "generation": generation, "admin_weights": edge.routes.admin_state().1})
            );
        }
        tokio::spawn(health_loop(Arc::clone(&edge)));
        let (stop_tx, stop_rx) = watch::channel(false);
        let public_fd = handover::raw(&public);
        let admin_fd = handover::raw(&admin);
        let stopped = |mut rx: watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        let public = public.into_std().context("public listener")?;
        let public_workers = spawn_workers(
            public,
            Arc::clone(&edge),
            |e, r| async move { dispatch(e, r).await },
            workers,
            stop_rx.clone(),
            drain,
        )
        .context("public listener's worker threads")?;
        let path = config_path.clone();
        let admin_task = tokio::spawn(serve_tls(
            admin,
            Arc::clone(&edge),
            move |e, r| {
                let path = path.clone();
                async move { admin::handle(&e, &path, r).await }
            },
            edge.admin_tls.clone(),
            stopped(stop_rx.clone()),
            drain,
        ));
        handover::announce_ready();
        loop {
            tokio::select! {
                _ = term.recv() => break,
                _ = int.recv() => break,
                _ = hup.recv() => {
                    // The certificates first: they do not depend on the
                    // config file, which may fail to load.
                    for line in edge.reload_tls() {
                        eprintln!("{line}");
                    }
                    match admin::reload(&edge, &config_path, false) {
                        Ok(report) => {
                            for line in report.log_lines() {
                                eprintln!("{line}");
                            }
                        }
                        Err(e) => eprintln!("{{\"msg\":\"reload failed\",\"error\":{e:?}}}"),
                    }
                },
                _ = usr2.recv() => {
                    // Admin writes are refused from here on, so none lands
                    // after the successor took the weights.
                    let state = admin::handover_state(&edge);
                    let env = [(admin::HANDOVER_ENV.to_string(), state)];
                    match handover::spawn_successor(public_fd, admin_fd, &env).await {
                        Ok(pid) => {
                            eprintln!("{{\"msg\":\"handed over\",\"successor\":{pid}}}");
                            break;
                        }
                        Err(e) => {
                            edge.routes.thaw();
                            eprintln!("{{\"msg\":\"hand-over failed, still serving\",\"error\":{e:?}}}");
                        }
                    }
                }
            }
        }
        edge.draining.store(true, Ordering::Relaxed);
        let _ = stop_tx.send(true);
        let _ = admin_task.await;
        let _ = tokio::task::spawn_blocking(move || public_workers.join()).await;
        eprintln!("{{\"msg\":\"edge stopped\",\"pid\":{}}}", std::process::id());
        Ok(())
    })
}

#[cfg(test)]
mod health_tests {
    use super::{after_check, UNHEALTHY_AFTER_CHECKS};

    #[test]
    fn a_node_is_out_only_after_two_failed_checks_in_a_row() {
        assert_eq!(UNHEALTHY_AFTER_CHECKS, 2);
        let mut row = 0;
        // One miss (a stalled host) leaves the node as it was.
        assert_eq!(after_check(&mut row, false), None);
        // A pass in between starts the count again.
        assert_eq!(after_check(&mut row, true), Some(true));
        assert_eq!(after_check(&mut row, false), None);
        // The second miss in a row takes it out, and so does every one
        // after it.
        assert_eq!(after_check(&mut row, false), Some(false));
        assert_eq!(after_check(&mut row, false), Some(false));
        // One pass brings it back.
        assert_eq!(after_check(&mut row, true), Some(true));
        assert_eq!(row, 0);
    }
}
