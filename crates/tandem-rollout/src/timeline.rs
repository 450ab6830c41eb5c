//! The timeline (`contracts/rollout-plan.md`, "Timeline"): one JSON object
//! per decision, one per line. `t_ms` is the controller's time, `gates`
//! what it judged for every cluster with weight (or being verified), and
//! a rollback carries when the breach started, when every edge carried
//! the rollback weights, and the measurements that breached.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::decide::{Breach, Decision, Observation, Weights};

/// One cluster's gates as the timeline shows them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GateValues {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p99_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_ratio: Option<f64>,
    /// Requests judged in the window (0: not judged).
    pub requests: u64,
    pub lag: u64,
    pub hash_agrees: bool,
}

/// One line of the timeline.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Entry {
    pub t_ms: u64,
    pub phase: String,
    pub action: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weights: Option<Weights>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub gates: BTreeMap<String, GateValues>,
    pub reason: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub breach_started_ms: Option<u64>,
    /// Set by the shell once every edge acknowledged the weights.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weights_applied_ms: Option<u64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub breaches: Vec<Breach>,
}

/// The gates of every cluster observed, from the last observation.
pub fn gates(obs: Option<&Observation>) -> BTreeMap<String, GateValues> {
    let Some(obs) = obs else {
        return BTreeMap::new();
    };
    obs.clusters
        .iter()
        .map(|(name, v)| {
            (
                name.clone(),
                GateValues {
                    p99_ms: v.p99_ms,
                    error_ratio: v.error_ratio,
                    requests: v.judged.unwrap_or(0),
                    lag: v.lag_max,
                    hash_agrees: matches!(v.hash, crate::decide::HashCheck::Agrees { .. }),
                },
            )
        })
        .collect()
}

/// The timeline line of a decision made at `t_ms` after `obs`.
pub fn entry(t_ms: u64, d: &Decision, obs: Option<&Observation>) -> Entry {
    let cluster = match &d.act {
        crate::decide::Act::StartCluster(c) => Some(c.clone()),
        _ => None,
    };
    Entry {
        t_ms,
        phase: d.phase.clone(),
        action: d.act.as_str(),
        weights: d.weights.clone(),
        gates: gates(obs),
        reason: d.reason.clone(),
        cluster,
        breach_started_ms: d.breach_started_ms,
        weights_applied_ms: None,
        breaches: d.breaches.clone(),
    }
}

/// The entry as one JSON line (no newline).
pub fn line(e: &Entry) -> String {
    serde_json::to_string(e).expect("timeline entries are plain data")
}
