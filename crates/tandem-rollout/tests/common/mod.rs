//! A plan for tests that need one only for its clusters (the API layers):
//! one zone each, scrape every second, one phase with all weight on the
//! first cluster, no judging gates.

use std::time::Duration;

use tandem_rollout::plan::{Cluster, Gates, MetricsSource, OnFailure, Phase, Plan, Start, Version};

pub fn plan_of(clusters: &[(&str, Version)]) -> Plan {
    Plan {
        release: "r".into(),
        clusters: clusters
            .iter()
            .map(|(name, version)| Cluster {
                name: (*name).into(),
                version: *version,
                zones: vec!["z1".into()],
                start: Start::Running,
            })
            .collect(),
        edges: vec!["http://127.0.0.1:8001".into()],
        metrics: MetricsSource::Scrape {
            interval: Duration::from_secs(1),
        },
        baseline_window: Duration::from_secs(60),
        gates: Gates {
            latency_p99_ms_max: None,
            latency_p99_vs_baseline_max: None,
            error_ratio_max: None,
            replica_lag_seq_max: None,
            output_hash_divergence: 0,
            min_requests: 200,
            breach_for: Duration::from_secs(2),
        },
        phases: vec![Phase {
            name: "p".into(),
            hold: Duration::ZERO,
            weights: clusters
                .iter()
                .enumerate()
                .map(|(i, (name, _))| ((*name).into(), if i == 0 { 100 } else { 0 }))
                .collect(),
        }],
        on_failure: OnFailure::Rollback,
    }
}
