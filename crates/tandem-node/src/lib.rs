//! A Tandem node: the order-entry API of `contracts/http-api.md` over the
//! order log, answered from the node's own replica.
//!
//! A node appends each client command to the log (concurrent commands are
//! batched into one append: one fsync, one Kafka message), waits until its
//! local replica has applied that seq, and answers with the events the
//! replica emitted for it. Reads come from the local replica; every answer
//! names the replica's position (`x-tandem-seq`), and a request can ask to
//! be served only from a position on (`x-tandem-min-seq`). The node never
//! matches anything itself.
//!
//! - `config`: the one config struct and its commented default file.
//! - `partition`: appender and replica threads of one log partition;
//!   `answers`: what a place, cancel or amend is answered (pure: no
//!   threads, clock or I/O; the simulation drives it too).
//! - `api`: routes and answers; `server`: connections, limits, drain.
//! - `auth`: signed orders (Ed25519 and EIP-712), key files, and the
//!   re-verification of a log (`tandem verify-log`).
//! - `metrics`: Prometheus exposition.
//! - `grpc`: the gRPC mirror (`proto/tandem/v1/tandem.proto`); `ws`: the
//!   WebSocket market stream; `feed`: the market feed both stream.

pub mod answers;
pub mod api;
pub mod auth;
pub mod checkpoints;
pub mod config;
pub mod feed;
pub mod grpc;
pub mod metrics;
pub mod node;
pub mod partition;
pub mod seed;
pub mod server;
pub mod window;
pub mod ws;

pub use config::{NodeConfig, Role};
pub use node::Node;

/// Errors of response bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The body of every response.
pub type BoxBody = http_body_util::combinators::UnsyncBoxBody<bytes::Bytes, BoxError>;

use std::time::Duration;

use tandem_conn::handover::{Announce, Handover};

/// The node's socket hand-over (SIGUSR2): the successor finds its
/// listener in this variable.
pub const HANDOVER: Handover = Handover::new("TANDEM_NODE_LISTEN_FDS");

/// How long a successor waits for its predecessor to close the file log
/// (drain, final snapshot, exit).
const HANDOVER_LOCK_WAIT: Duration = Duration::from_secs(120);

/// How long the file log's `open` waits for another holder of its lock:
/// a successor waits for its predecessor; any other start fails at once.
pub fn file_log_lock_wait() -> Duration {
    if HANDOVER.inherited() {
        HANDOVER_LOCK_WAIT
    } else {
        Duration::ZERO
    }
}

/// Runs a node until SIGTERM or SIGINT (drain, final snapshot, exit) or a
/// completed SIGUSR2 hand-over: a new copy of the process (same binary,
/// arguments and environment) inherits the listening socket, and this one
/// stops accepting, drains and exits; nothing is refused. On the file log
/// the successor cannot open the log until this process closes it, so
/// this one stops accepting as soon as the successor holds the socket, and
/// connections wait in the kernel's accept queue until the successor
/// serves; on Kafka the successor starts fully and says it is ready first.
///
/// With `[tls]` the listener serves TLS; SIGHUP reads the certificate and
/// key files again (new connections get the new certificate, open ones
/// keep theirs; files that do not load keep the old one, logged). Nothing
/// else of the config is reloaded.
pub fn run(cfg: NodeConfig) -> anyhow::Result<()> {
    let drain_grace = Duration::from_millis(cfg.http.drain_grace_ms);
    use anyhow::Context;
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if cfg.http.worker_threads > 0 {
        rt.worker_threads(cfg.http.worker_threads);
    }
    let rt = rt
        .enable_all()
        .thread_name("tandem-http")
        .build()
        .context("start runtime")?;
    rt.block_on(async move {
        // The handlers come first: a SIGTERM that arrives once the node
        // answers (or while it starts) must drain it, not kill it with
        // the default action. One that arrives during the start is acted
        // on once the node serves.
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
        let mut int = signal(SignalKind::interrupt()).context("SIGINT handler")?;
        let mut usr2 = signal(SignalKind::user_defined2()).context("SIGUSR2 handler")?;
        let mut hup = signal(SignalKind::hangup()).context("SIGHUP handler")?;
        let tls = match &cfg.tls {
            None => None,
            Some(t) => Some(
                tandem_conn::tls::ServerTls::load(t.files()).context("tls: load the certificate")?,
            ),
        };
        let listener = HANDOVER
            .listeners(&[cfg.listen])?
            .pop()
            .context("one listener")?;
        eprintln!(
            "{{\"msg\":\"listening\",\"addr\":\"{}\",\"node\":{:?},\"cluster\":{:?},\"zone\":{:?},\"role\":\"{}\",\"version\":{:?},\"pid\":{},\"inherited\":{}}}",
            listener.local_addr()?,
            cfg.node,
            cfg.cluster,
            cfg.zone,
            cfg.role.as_str(),
            cfg.version,
            std::process::id(),
            HANDOVER.inherited()
        );
        if let Some(t) = &tls {
            let c = t.cert();
            eprintln!(
                "{{\"msg\":\"tls\",\"serial\":{:?},\"subject\":{:?},\"not_after\":{},\"client_certificates\":{}}}",
                c.serial,
                c.subject,
                c.not_after,
                if t.requires_client_cert() { "\"required\"" } else { "\"not asked\"" }
            );
        }
        // A predecessor on the file log stops accepting now and closes the
        // log, which `Node::start` waits for (`file_log_lock_wait`).
        HANDOVER.announce(Announce::Sockets);
        let wait_for = match cfg.log.kind {
            config::LogKind::File => Announce::Sockets,
            config::LogKind::Kafka => Announce::Ready,
        };
        let fd = tandem_conn::handover::raw(&listener);
        let node = Node::start(cfg)?;
        if HANDOVER.inherited() {
            // Requests waiting in the accept queue were sent to a node that
            // was serving: take them only once the replicas have caught up
            // (else they would get 503 "catching up").
            let deadline = tokio::time::Instant::now() + HANDOVER_LOCK_WAIT;
            while !node.is_caught_up() && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
        let serving = tokio::spawn(server::serve_until_tls(
            listener,
            std::sync::Arc::clone(&node),
            tls.clone(),
            async move { stop_rx.await.unwrap_or(server::Stop::Drain) },
            drain_grace,
        ));
        HANDOVER.announce(Announce::Ready);
        let how = loop {
            tokio::select! {
                _ = term.recv() => break server::Stop::Drain,
                _ = int.recv() => break server::Stop::Drain,
                _ = hup.recv() => match &tls {
                    Some(t) => eprintln!("{}", t.reload_log_line("public", &t.reload())),
                    None => eprintln!(
                        "{{\"msg\":\"SIGHUP: nothing to reload (no [tls]; the rest of the config is read at start only)\"}}"
                    ),
                },
                _ = usr2.recv() => match HANDOVER
                    .spawn_successor(&[fd], &[], wait_for, HANDOVER_LOCK_WAIT)
                    .await
                {
                    Ok(pid) => {
                        eprintln!("{{\"msg\":\"handed over\",\"successor\":{pid}}}");
                        break server::Stop::HandOver;
                    }
                    Err(e) => eprintln!(
                        "{{\"msg\":\"hand-over failed, still serving\",\"error\":{:?}}}",
                        e.to_string()
                    ),
                },
            }
        };
        let _ = stop_tx.send(how);
        serving.await.context("serve")?;
        tokio::task::spawn_blocking(move || node.stop())
            .await
            .context("stop replicas")?;
        eprintln!("{{\"msg\":\"stopped\",\"pid\":{}}}", std::process::id());
        Ok(())
    })
}
