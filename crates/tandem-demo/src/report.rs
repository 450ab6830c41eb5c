//! The demo's report (`contracts/demo-report.md`): the JSON object written
//! per scenario run, and the per-second series the charts are drawn from.
//! Plain data; [`crate::render`] turns it into `report.md` and
//! `report.html`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One scenario run, as `--json FILE` writes it (one line per run).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DemoReport {
    pub scenario: String,
    /// `promoted`, `rolled_back`, `stopped` or `failed`.
    pub result: String,
    pub time_scale: f64,
    /// Every cluster by name.
    pub clusters: BTreeMap<String, ClusterInfo>,
    /// Distinct zones over all clusters.
    pub zones: u32,
    pub phases: Vec<PhaseReport>,
    pub orders: Orders,
    /// Requests the client got no 2xx or 4xx answer for, after its retries.
    pub failed_requests: u64,
    pub rollback: Option<Rollback>,
    pub divergence: Option<Divergence>,
    /// From the controller's start of the cold cluster to all its nodes
    /// ready; `None` when no cluster was started cold.
    pub cold_start_s: Option<f64>,
    /// Every node's output hash equal at the final seq.
    pub replicas_agree: bool,
    /// Path of `report.html`.
    pub report: String,

    // Beyond the contract's fields.
    /// Requests answered 4xx (the client's fault), counted apart.
    pub client_errors: u64,
    /// Requests that needed a client retry and then succeeded.
    pub retried_ok: u64,
    /// Requests measured in all.
    pub requests: u64,
    /// The seq every node reached at the end, and its hash.
    pub final_seq: u64,
    pub final_hash: String,
    /// One-way delay added on each cross-cloud link, ms.
    pub link_delay_ms: f64,
    /// One-way delay on the link between the nodes and the broker, ms;
    /// `None`: no such link (the default).
    pub broker_delay_ms: Option<f64>,
    /// tansu's storage engine URL.
    pub broker_storage: String,
    /// The nodes' `kafka_fetch_wait_ms`.
    pub fetch_wait_ms: u64,
    /// Orders per second offered by the load generator.
    pub rate: f64,
    /// The gates as the controller ran them, and the seed's where they
    /// differ (name → (seed, as run)).
    pub gates: BTreeMap<String, f64>,
    pub gates_changed: BTreeMap<String, (f64, f64)>,
    /// Faults injected, in order, with when (ms since the run's start).
    pub faults: Vec<Fault>,
    /// What went wrong, when `result` is `failed` or a check did not hold.
    pub problems: Vec<String>,
    /// Whole-run latency at the client, ms.
    pub latency_ms: Latency,
    /// Wall-clock ms (Unix) at the run's start; every other `*_ms` is
    /// relative to it.
    pub started_unix_ms: u64,
    pub duration_s: f64,
    /// Per-second series for the charts.
    pub series: Vec<Second>,
    /// The broker's own produce→consume time in this run, beside the
    /// client's latency over the same window; `None` when not measured.
    pub broker_floor: Option<BrokerFloor>,
    /// The Cloudflare Worker in workerd in front of the edge (`--worker`);
    /// `None`: the load went to the edge directly.
    #[serde(default)]
    pub worker: Option<WorkerReport>,
    /// CPU seconds by part while the load ran (`cpu`): on two cores, how
    /// much of them the broker, the nodes and the rest took.
    #[serde(default)]
    pub cpu: crate::cpu::CpuUse,
}

/// The latency goal against the broker's floor: the source's 15 ms at p99
/// through the edge, or, where the broker alone takes longer than that,
/// the floor's p99 plus 3 ms, both measured over the same seconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BrokerFloor {
    /// Messages the plain producer sent and its consumer read back.
    pub messages: u64,
    /// Messages per second sent.
    pub rate: f64,
    /// The window, ms since the run's start.
    pub start_ms: u64,
    pub end_ms: u64,
    /// Produce → consume through the broker's link, ms.
    pub floor_p50_ms: f64,
    pub floor_p99_ms: f64,
    /// The client's answered requests sent in the window, ms.
    pub client_requests: u64,
    pub client_p50_ms: f64,
    pub client_p99_ms: f64,
    /// max(15, floor_p99_ms + 3).
    pub goal_p99_ms: f64,
    pub met: bool,
}

/// The Cloudflare Worker layer of a run (`--worker`): where it listened,
/// its origin, and what it served, counted on workerd's side.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct WorkerReport {
    /// Where the load generator sent its requests (the Worker's socket).
    pub listen: String,
    /// The Worker's one origin: the Tandem edge's public address.
    pub origin: String,
    /// Invocations of the Worker counted by workerd's tail worker.
    pub requests: u64,
    /// Those invocations by outcome (`ok`, `exception`, ...).
    pub outcomes: BTreeMap<String, u64>,
    /// Those invocations by the Worker's response status (`none`: no
    /// response).
    pub statuses: BTreeMap<String, u64>,
    /// The latency the Worker adds, measured after the load: `GET /readyz`
    /// sent in turn to the edge directly and through the Worker, one at a
    /// time from one client; `None` when not measured.
    pub probe: Option<WorkerProbe>,
}

/// The Worker's hop measured by pairs of requests (see
/// [`WorkerReport::probe`]); ms.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WorkerProbe {
    /// Pairs answered 200 both ways.
    pub pairs: u64,
    pub direct_p50_ms: f64,
    pub direct_p99_ms: f64,
    pub worker_p50_ms: f64,
    pub worker_p99_ms: f64,
    /// `worker_p50_ms - direct_p50_ms`, and the same at p99.
    pub added_p50_ms: f64,
    pub added_p99_ms: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterInfo {
    /// `stable` or `canary`.
    pub version: String,
    pub zones: u32,
    pub nodes: u32,
    /// `warm` or `cold`.
    pub start: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PhaseReport {
    pub name: String,
    pub weights: BTreeMap<String, u32>,
    /// Relative to the run's start.
    pub start_ms: u64,
    pub end_ms: u64,
    pub passed: bool,
    pub requests: u64,
    pub failed: u64,
    pub latency_ms: Latency,
    /// Fraction of the phase's answered requests each cluster answered.
    pub share: BTreeMap<String, f64>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Orders {
    pub acknowledged: u64,
    pub lost: u64,
    pub duplicated: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Rollback {
    /// Relative to the run's start, as every `*_ms`.
    pub breach_started_ms: u64,
    pub weights_applied_ms: u64,
    /// The first moment from which at least 99 % of requests went to
    /// stable clusters, at the client.
    pub traffic_moved_ms: u64,
    /// `traffic_moved_ms - breach_started_ms`, in seconds.
    pub seconds: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Divergence {
    pub seq: u64,
    /// The cluster that diverged.
    pub cluster: String,
    /// The events each computed for the command at `seq` (JSON text).
    pub stable_event: String,
    pub canary_event: String,
    /// The command at `seq`, as JSON text.
    pub command: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fault {
    pub at_ms: u64,
    /// `kill-node`, `edge-handover`, `broker-restart`, `clock-skew`.
    pub kind: String,
    pub detail: String,
}

/// One second of the run at the client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Second {
    /// Seconds since the run's start.
    pub t_s: u64,
    /// Per cluster that answered in this second.
    pub clusters: BTreeMap<String, ClusterSecond>,
    /// Requests that got no answer (failed) in this second.
    pub failed: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct ClusterSecond {
    pub requests: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

impl DemoReport {
    /// The contract's JSON object on one line (the `--json` file holds one
    /// line per scenario run).
    pub fn to_json_line(&self) -> String {
        serde_json::to_string(self).expect("the report is plain data")
    }
}
