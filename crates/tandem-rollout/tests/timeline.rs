//! Timeline lines have the contract's shape (`contracts/rollout-plan.md`,
//! "Timeline").

use std::collections::BTreeMap;

use serde_json::{json, Value};
use tandem_rollout::decide::{Act, Breach, ClusterView, Decision, HashCheck, Observation};
use tandem_rollout::timeline;

fn view(p99: f64, requests: u64) -> ClusterView {
    ClusterView {
        nodes: 3,
        nodes_ready: 3,
        lag_max: 0,
        hash: HashCheck::Agrees { seq: 9 },
        judged: Some(requests),
        breaches: Vec::new(),
        p99_ms: Some(p99),
        error_ratio: Some(0.0),
    }
}

#[test]
fn a_set_weights_line_is_the_contract_example() {
    let obs = Observation {
        clusters: BTreeMap::from([("gcp".to_owned(), view(3.1, 812))]),
        edges: Vec::new(),
    };
    let d = Decision {
        act: Act::SetWeights,
        phase: "canary".into(),
        weights: Some(BTreeMap::from([
            ("aws".to_owned(), 95),
            ("gcp".to_owned(), 5),
            ("azure".to_owned(), 0),
        ])),
        reason: "phase warm-up passed".into(),
        breach_started_ms: None,
        breaches: Vec::new(),
    };
    let v: Value =
        serde_json::from_str(&timeline::line(&timeline::entry(1234, &d, Some(&obs)))).unwrap();
    assert_eq!(
        v,
        json!({"t_ms": 1234, "phase": "canary", "action": "set_weights",
               "weights": {"aws": 95, "gcp": 5, "azure": 0},
               "gates": {"gcp": {"p99_ms": 3.1, "error_ratio": 0.0, "requests": 812, "lag": 0, "hash_agrees": true}},
               "reason": "phase warm-up passed"})
    );
}

#[test]
fn a_rollback_line_carries_the_breach_and_when_the_edges_took_it() {
    let d = Decision {
        act: Act::Rollback,
        phase: "expand".into(),
        weights: Some(BTreeMap::from([
            ("aws".to_owned(), 95),
            ("gcp".to_owned(), 5),
        ])),
        reason: "breach for 2000 ms".into(),
        breach_started_ms: Some(40_000),
        breaches: vec![Breach {
            cluster: "gcp".into(),
            gate: "latency_p99_ms_max".into(),
            value: 41.5,
            limit: 15.0,
        }],
    };
    let mut e = timeline::entry(42_000, &d, None);
    e.weights_applied_ms = Some(42_180);
    let v: Value = serde_json::from_str(&timeline::line(&e)).unwrap();
    assert_eq!(v["action"], "rollback");
    assert_eq!(v["breach_started_ms"], 40_000);
    assert_eq!(v["weights_applied_ms"], 42_180);
    assert_eq!(v["breaches"][0]["gate"], "latency_p99_ms_max");
    assert_eq!(v["breaches"][0]["value"], 41.5);
    assert!(v.get("gates").is_none(), "no observation, no gates: {v}");
}
