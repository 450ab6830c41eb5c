//! Tandem's typed control plane: what a rollout controller, the demo, the
//! tests and the benches use to watch and steer the data plane, written
//! once.
//!
//! - `types`: serde types of the node's `/v1/status` and
//!   `/v1/chain/{partition}` and of the edge's admin API (weights with
//!   their generation, routes).
//! - `client`: async clients over one pooled hyper client (tokio):
//!   `NodeClient` (status, chain checkpoints, readiness, metrics) and
//!   `EdgeAdmin` (weights, generation-checked weight writes, routes,
//!   metrics). Every request has a timeout; every failure is a
//!   `ControlError` variant a caller can act on (`Stale`, `Unauthorized`,
//!   `Unreachable`, ...).
//! - `names`: the metric and label names the node and the edge export that
//!   the controller reads.
//! - `prom`: a parser of the Prometheus text exposition format into typed
//!   samples (counters, gauges, histogram buckets), total on any input.
//! - `supervise`: one supervisor of a child process (start, wait until
//!   ready, SIGTERM and wait, SIGKILL; killed on drop).
//!
//! Nothing here decides anything: decisions belong to the controller's
//! pure core; this crate only observes and acts.

pub mod client;
pub mod names;
pub mod prom;
pub mod supervise;
pub mod types;

pub use client::{AdminError, ControlError, EdgeAdmin, Http, NodeClient};
pub use prom::{Exposition, Sample, SampleKind};
pub use supervise::{SuperviseError, Supervised};
pub use types::{
    Chain, Checkpoint, NodeStatus, PartitionStatus, RouteCluster, RouteNode, Routes, Weights,
};
