//! The rollout plan: what a user writes (`contracts/rollout-plan.md`,
//! "The plan"), as typed values. Loading and the rules live here too, so
//! that a plan that breaks a rule is refused before anything changes,
//! naming the file, the line and the field.

use std::time::Duration;

/// The version a cluster runs, as the plan names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    Stable,
    Canary,
}

/// Whether a cluster runs at the start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Start {
    /// Its nodes run before the rollout starts.
    #[default]
    Running,
    /// No node runs: the controller starts the cluster (from the newest
    /// snapshot of the log) before its first weight above 0.
    Cold,
}

/// One cluster of the plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cluster {
    pub name: String,
    pub version: Version,
    pub zones: Vec<String>,
    pub start: Start,
}

/// Where observations come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetricsSource {
    /// The edges' and nodes' `/metrics` directly.
    Scrape { interval: Duration },
    /// PromQL over a Prometheus server's HTTP API.
    Prometheus { url: String, interval: Duration },
}

impl MetricsSource {
    pub fn interval(&self) -> Duration {
        match self {
            MetricsSource::Scrape { interval } | MetricsSource::Prometheus { interval, .. } => {
                *interval
            }
        }
    }
}

/// The gates every phase must hold. An absent gate is not judged.
#[derive(Debug, Clone, PartialEq)]
pub struct Gates {
    /// Absolute p99 per cluster with weight > 0, in milliseconds.
    pub latency_p99_ms_max: Option<f64>,
    /// p99 of a cluster over the baseline's p99.
    pub latency_p99_vs_baseline_max: Option<f64>,
    /// 5xx and resets over requests, per cluster.
    pub error_ratio_max: Option<f64>,
    /// How far behind the log a replica may be.
    pub replica_lag_seq_max: Option<u64>,
    /// Output hash checkpoints where a canary may differ from stable: 0
    /// (the only value that makes sense; kept as the contract spells it).
    pub output_hash_divergence: u64,
    /// A cluster is judged only on at least this many requests in the
    /// window.
    pub min_requests: u64,
    /// How long a breach must last before it counts.
    pub breach_for: Duration,
}

/// One step of the plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Phase {
    pub name: String,
    /// How long the phase holds once its weights are set (0: none).
    pub hold: Duration,
    /// Weight per cluster, in the order of [`Plan::clusters`]; clusters
    /// the phase does not name have weight 0.
    pub weights: Vec<(String, u32)>,
}

/// What to do when a gate breaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFailure {
    /// Weights of the last passed phase, or stable alone.
    Rollback,
    /// Keep the weights, stop advancing, alert.
    Pause,
}

/// A whole plan, as loaded and checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub release: String,
    /// In the order the file gives them.
    pub clusters: Vec<Cluster>,
    /// Base URLs of every edge's admin API.
    pub edges: Vec<String>,
    pub metrics: MetricsSource,
    /// How long stable alone is observed before the first phase.
    pub baseline_window: Duration,
    pub gates: Gates,
    pub phases: Vec<Phase>,
    pub on_failure: OnFailure,
}
