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
//! - `partition`: appender and replica threads of one log partition.
//! - `api`: routes and answers; `server`: connections, limits, drain.
//! - `metrics`: Prometheus exposition.
//! - `grpc`: the gRPC mirror (`proto/tandem/v1/tandem.proto`); `ws`: the
//!   WebSocket market stream; `feed`: the market feed both stream.

pub mod api;
pub mod config;
pub mod feed;
pub mod grpc;
pub mod metrics;
pub mod node;
pub mod partition;
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

/// Runs a node until SIGTERM or SIGINT, then drains and stops: the whole
/// `tandem node` job.
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
        let listener = tokio::net::TcpListener::bind(cfg.listen)
            .await
            .with_context(|| format!("listen on {}", cfg.listen))?;
        eprintln!(
            "{{\"msg\":\"listening\",\"addr\":\"{}\",\"node\":{:?},\"cluster\":{:?},\"zone\":{:?},\"role\":\"{}\",\"version\":{:?}}}",
            listener.local_addr()?,
            cfg.node,
            cfg.cluster,
            cfg.zone,
            cfg.role.as_str(),
            cfg.version
        );
        let node = Node::start(cfg)?;
        server::serve(listener, std::sync::Arc::clone(&node), signal(), drain_grace).await;
        tokio::task::spawn_blocking(move || node.stop())
            .await
            .context("stop replicas")?;
        eprintln!("{{\"msg\":\"stopped\"}}");
        Ok(())
    })
}

/// Resolves on SIGTERM or SIGINT.
async fn signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("install SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
