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
//!   health; `proxy`: the request path; `upgrade`: WebSocket pass-through;
//!   `admin`: the admin API; `metrics`: Prometheus text; `handover`: the
//!   listening sockets across a process replacement.

pub mod admin;
pub mod config;
pub mod handover;
pub mod metrics;
pub mod proxy;
pub mod table;
pub mod upgrade;

use std::convert::Infallible;
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{watch, Notify};

pub use config::EdgeConfig;
pub use proxy::Edge;

/// Errors of response bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The body of every response.
pub type BoxBody = http_body_util::combinators::UnsyncBoxBody<bytes::Bytes, BoxError>;

/// Routes one public request.
async fn dispatch(edge: Arc<Edge>, req: Request<Incoming>) -> Response<BoxBody> {
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

/// How long a connection accepted before a stop may take to send its first
/// request (it is answered, then closed).
const FIRST_REQUEST_GRACE: Duration = Duration::from_secs(2);

/// Open connections, and a wake-up when the last one closes.
#[derive(Default)]
struct Open {
    n: AtomicUsize,
    zero: Notify,
}

struct OpenGuard(Arc<Open>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        if self.0.n.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.zero.notify_waiters();
        }
    }
}

/// Serves `listener` with `handler` until `stop` resolves, then stops
/// accepting (the socket itself stays open while another process holds
/// it) and lets in-flight requests finish, at most `drain` long. Idle
/// keep-alive connections are closed at once; a connection that has not
/// sent its first request yet gets `FIRST_REQUEST_GRACE` to send it.
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
    let open = Arc::new(Open::default());
    let (closing_tx, closing_rx) = watch::channel(false);
    let lim = &edge.cfg.limits;
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        // hyper's header timeout would also close idle keep-alive
        // connections; `tandem_conn`'s slow-request rule replaces it.
        .header_read_timeout(None)
        .max_buf_size(lim.max_header_bytes.max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(lim.max_header_bytes as u32)
        .keep_alive_interval(Duration::from_secs(
            edge.cfg.upstream.h2_keepalive_interval_secs,
        ));
    let builder = Arc::new(builder);
    let base = std::time::Instant::now();
    let idle = Duration::from_secs(lim.idle_timeout_secs);
    // A request head must be in within this; waiting for the node after
    // that is bounded by the upstream timeout (see `tandem_conn`).
    let request = Duration::from_secs(lim.header_read_timeout_secs);
    tokio::pin!(stop);
    loop {
        let stream = tokio::select! {
            _ = &mut stop => break,
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        if open.n.load(Ordering::Acquire) >= lim.max_connections {
            edge.metrics.connection_refused();
            tokio::spawn(refuse(stream));
            continue;
        }
        open.n.fetch_add(1, Ordering::AcqRel);
        let guard = OpenGuard(Arc::clone(&open));
        let (edge, builder, handler) = (Arc::clone(&edge), Arc::clone(&builder), handler.clone());
        let mut closing = closing_rx.clone();
        tokio::spawn(async move {
            let _guard = guard;
            // Set (and notified) once the connection's first request
            // arrives; see the wait below.
            let first = Arc::new(Notify::new());
            let seen = Arc::new(AtomicBool::new(false));
            let (first_tx, seen_tx) = (Arc::clone(&first), Arc::clone(&seen));
            let timing = tandem_conn::Timing::new(base);
            let head_timing = Arc::clone(&timing);
            let svc = hyper::service::service_fn(move |req| {
                head_timing.head_read();
                if !seen_tx.swap(true, Ordering::AcqRel) {
                    first_tx.notify_one();
                }
                let (edge, handler) = (Arc::clone(&edge), handler.clone());
                async move { Ok::<_, Infallible>(handler(edge, req).await) }
            });
            let io = tandem_conn::TimedIo::new(stream, Arc::clone(&timing));
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), svc);
            tokio::pin!(conn);
            // A connection accepted just before the stop may not have had
            // its request read yet; shutting it down at once would close
            // it unanswered (the client sees a reset), which a hand-over
            // must never do. So it gets a grace to send its first request,
            // which is then answered with `connection: close`.
            let shut = async {
                let _ = closing.wait_for(|c| *c).await;
                if !seen.load(Ordering::Acquire) {
                    let _ = tokio::time::timeout(FIRST_REQUEST_GRACE, first.notified()).await;
                }
            };
            // Idle keep-alive connections close after `idle`; a request
            // trickling in (slowloris) is dropped after `request`.
            let rules = async {
                let mut tick =
                    tokio::time::interval(tandem_conn::Timing::check_every(idle, request));
                loop {
                    tick.tick().await;
                    match timing.verdict(idle, request) {
                        tandem_conn::Verdict::Keep => {}
                        v => return v,
                    }
                }
            };
            tokio::select! {
                _ = conn.as_mut() => return,
                _ = shut => conn.as_mut().graceful_shutdown(),
                v = rules => match v {
                    tandem_conn::Verdict::Slow => return,
                    _ => conn.as_mut().graceful_shutdown(),
                },
            }
            let _ = conn.await;
        });
    }
    drop(listener);
    let _ = closing_tx.send(true);
    let _ = tokio::time::timeout(drain, async {
        loop {
            let wait = open.zero.notified();
            if open.n.load(Ordering::Acquire) == 0 {
                break;
            }
            wait.await;
        }
    })
    .await;
}

async fn refuse(mut stream: tokio::net::TcpStream) {
    use tokio::io::AsyncWriteExt;
    let body = br#"{"error":"connections: the edge is at its connection limit"}"#;
    let head = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes()).await;
    let _ = stream.write_all(body).await;
    let _ = stream.shutdown().await;
}

/// Active health checks: `GET /readyz` on every node every interval; a
/// node that fails is not ready (gets nothing new) until one passes.
pub async fn health_loop(edge: Arc<Edge>) {
    let every = Duration::from_millis(edge.cfg.health.interval_ms);
    let timeout = Duration::from_millis(edge.cfg.health.timeout_ms);
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let checks = edge.routes.node_states().into_iter().map(|n| {
            let edge = Arc::clone(&edge);
            async move {
                let ok = edge.probe(&n.addr, timeout).await;
                n.ready.store(ok, Ordering::Relaxed);
            }
        });
        let handles: Vec<_> = checks.map(tokio::spawn).collect();
        for h in handles {
            let _ = h.await;
        }
    }
}

/// Runs the edge until SIGTERM/SIGINT (drain, exit) or a completed
/// SIGUSR2 hand-over (a new process took the sockets and the admin-set
/// weights with their generation; drain, exit). SIGHUP reloads
/// `config_path`: node sets, weights not set through the admin API, the
/// admin token and the body limit apply live; the log line names what was
/// applied, what needs a restart, and which admin weights were kept.
pub fn run(cfg: EdgeConfig, config_path: Option<PathBuf>) -> anyhow::Result<()> {
    use anyhow::Context;
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if cfg.worker_threads > 0 {
        rt.worker_threads(cfg.worker_threads);
    }
    let rt = rt
        .enable_all()
        .thread_name("tandem-edge")
        .build()
        .context("start runtime")?;
    rt.block_on(async move {
        let cfg = cfg.with_env(|k| std::env::var(k).ok());
        if cfg.admin_token.is_empty() {
            eprintln!("{}", admin::disabled_warning());
        }
        let (public, admin) = handover::listeners(cfg.listen, cfg.admin_listen)?;
        eprintln!(
            "{{\"msg\":\"edge listening\",\"public\":\"{}\",\"admin\":\"{}\",\"pid\":{},\"inherited\":{}}}",
            public.local_addr()?,
            admin.local_addr()?,
            std::process::id(),
            handover::inherited()
        );
        let drain = Duration::from_secs(cfg.drain_timeout_secs);
        let edge = Edge::new(cfg);
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
        let public_task = tokio::spawn(serve(
            public,
            Arc::clone(&edge),
            |e, r| async move { dispatch(e, r).await },
            stopped(stop_rx.clone()),
            drain,
        ));
        let path = config_path.clone();
        let admin_task = tokio::spawn(serve(
            admin,
            Arc::clone(&edge),
            move |e, r| {
                let path = path.clone();
                async move { admin::handle(&e, &path, r).await }
            },
            stopped(stop_rx.clone()),
            drain,
        ));
        handover::announce_ready();
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
        let mut int = signal(SignalKind::interrupt()).context("SIGINT handler")?;
        let mut hup = signal(SignalKind::hangup()).context("SIGHUP handler")?;
        let mut usr2 = signal(SignalKind::user_defined2()).context("SIGUSR2 handler")?;
        loop {
            tokio::select! {
                _ = term.recv() => break,
                _ = int.recv() => break,
                _ = hup.recv() => match admin::reload(&edge, &config_path, false) {
                    Ok(report) => {
                        for line in report.log_lines() {
                            eprintln!("{line}");
                        }
                    }
                    Err(e) => eprintln!("{{\"msg\":\"reload failed\",\"error\":{e:?}}}"),
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
        let _ = public_task.await;
        let _ = admin_task.await;
        eprintln!("{{\"msg\":\"edge stopped\",\"pid\":{}}}", std::process::id());
        Ok(())
    })
}
