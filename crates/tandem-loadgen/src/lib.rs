//! `tandem-loadgen`: an open-loop HTTP load generator for Tandem nodes.
//!
//! Requests follow a fixed schedule (`rate` per second) and each one's
//! latency is measured from its intended send time, so a slow server cannot
//! hide its stalls by slowing the generator (no coordinated omission). The
//! order flow is reproducible from a seed; every acknowledged order is
//! recorded (32 bytes) and, after the run, read back to count orders that
//! were lost, and replayed in part to count orders that were sequenced
//! twice. With `--samples FILE` it also writes one CSV line per measured
//! request (see `samples.rs`). With `--grpc-stream` it runs a closed loop
//! over the node's gRPC `Submit` stream instead (`stream.rs`), counted and
//! verified the same way. [`run_cli`] is the whole `tandem loadgen`
//! command; [`run`] is the library entry point.

mod answer;
mod cli;
mod client;
mod config;
mod h1;
mod hist;
mod report;
mod run;
mod samples;
mod stream;
mod workload;

pub use cli::{run_cli, FlagError, USAGE};
pub use config::{LoadgenConfig, MAX_CONNECTIONS, MAX_IN_FLIGHT, MAX_REQUESTS, MAX_RETRIES};
#[doc(hidden)]
pub use hist::Histogram;
pub use report::{Errors, LatencyUs, Orders, Report, Verify};
pub use run::run;
/// The `--samples` file's format, for the tools that read it.
pub use samples::{
    split_fields as split_sample_fields, COLUMNS as SAMPLE_COLUMNS, MAGIC as SAMPLES_MAGIC,
};

/// Why a run could not start.
#[derive(Debug, thiserror::Error)]
pub enum LoadgenError {
    /// A configuration value is out of its limits.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A target address cannot be used.
    #[error("target {target:?}: {reason}")]
    Target {
        /// The target as given.
        target: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The samples file could not be created or written.
    #[error("samples file {path:?}: {error}")]
    Samples {
        /// The path as given.
        path: std::path::PathBuf,
        /// The I/O error (in the message, so not repeated as a source).
        error: std::io::Error,
    },
    /// The async runtime could not be built.
    #[error("build runtime: {0}")]
    Runtime(#[source] std::io::Error),
}
