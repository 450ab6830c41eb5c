//! From readings to what `decide` sees: the output hash check of a
//! cluster's nodes against stable's at equal checkpoint seqs, and one
//! cluster's [`ClusterView`] from its nodes and its judged window. Pure:
//! the observers read nodes, edges and metrics and hand the readings in.

use crate::decide::{ClusterView, HashCheck};
use crate::judge::{self, CanaryTest, JudgeError, WindowStats};
use crate::plan::Gates;

/// One node as read from its status and chain checkpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeReading {
    pub addr: String,
    /// `/readyz` answered 200.
    pub ready: bool,
    /// Commands behind the log's end.
    pub lag: u64,
    /// `(seq, output hash)` at the node's checkpoints, ascending by seq.
    pub checkpoints: Vec<(u64, String)>,
}

/// Compares a node's checkpoints with stable's at equal seqs: the first
/// seq where they differ, else the newest seq both have, else unknown.
pub fn hash_check(stable: &[(u64, String)], node: &[(u64, String)]) -> HashCheck {
    let (mut i, mut j) = (0, 0);
    let mut newest_equal = None;
    while i < stable.len() && j < node.len() {
        let (a, b) = (&stable[i], &node[j]);
        match a.0.cmp(&b.0) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                if a.1 != b.1 {
                    return HashCheck::Differs {
                        seq: a.0,
                        detail: format!("stable {} vs {}", a.1, b.1),
                    };
                }
                newest_equal = Some(a.0);
                i += 1;
                j += 1;
            }
        }
    }
    match newest_equal {
        Some(seq) => HashCheck::Agrees { seq },
        None => HashCheck::Unknown,
    }
}

/// A cluster's hash check over all its nodes: any node that differs makes
/// the cluster differ (the smallest differing seq); all agreeing agree
/// (at the oldest of their newest common seqs); otherwise unknown.
pub fn cluster_hash(stable: &[(u64, String)], nodes: &[NodeReading]) -> HashCheck {
    let checks: Vec<HashCheck> = nodes
        .iter()
        .map(|n| hash_check(stable, &n.checkpoints))
        .collect();
    let differs = checks
        .iter()
        .filter_map(|c| match c {
            HashCheck::Differs { seq, detail } => Some((*seq, detail)),
            _ => None,
        })
        .min_by_key(|(seq, _)| *seq);
    if let Some((seq, detail)) = differs {
        return HashCheck::Differs {
            seq,
            detail: detail.clone(),
        };
    }
    let agreed: Option<Vec<u64>> = checks
        .iter()
        .map(|c| match c {
            HashCheck::Agrees { seq } => Some(*seq),
            _ => None,
        })
        .collect();
    match agreed.and_then(|s| s.into_iter().min()) {
        Some(seq) if !nodes.is_empty() => HashCheck::Agrees { seq },
        _ => HashCheck::Unknown,
    }
}

/// One cluster as `decide` sees it: its nodes, its hash against stable's
/// checkpoints, and its window judged by the gates (`None`: no window
/// yet, so not judged). A stable cluster is compared with nothing
/// (`stable_window: None`); a canary with stable's window over the same
/// time.
#[allow(clippy::too_many_arguments)] // The readings of one cluster, each distinct.
pub fn cluster_view(
    name: &str,
    gates: &Gates,
    nodes: &[NodeReading],
    stable_checkpoints: &[(u64, String)],
    window: Option<&WindowStats>,
    baseline_p99_s: Option<f64>,
    stable_window: Option<&WindowStats>,
    test: &CanaryTest,
) -> Result<ClusterView, JudgeError> {
    let judgement = window
        .map(|w| judge::judge(gates, w, baseline_p99_s, stable_window, test))
        .transpose()?;
    Ok(ClusterView {
        nodes: nodes.len(),
        nodes_ready: nodes.iter().filter(|n| n.ready).count(),
        lag_max: nodes.iter().map(|n| n.lag).max().unwrap_or(0),
        hash: cluster_hash(stable_checkpoints, nodes),
        judged: judgement
            .as_ref()
            .and_then(|j| j.judged.then_some(j.requests)),
        breaches: judgement
            .as_ref()
            .map_or_else(Vec::new, |j| j.breaches(name)),
        p99_ms: judgement.as_ref().and_then(|j| j.p99_ms),
        error_ratio: judgement.as_ref().and_then(|j| j.error_ratio),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cps(v: &[(u64, &str)]) -> Vec<(u64, String)> {
        v.iter().map(|(s, h)| (*s, (*h).to_owned())).collect()
    }

    #[test]
    fn checkpoints_are_compared_at_equal_seqs_only() {
        let stable = cps(&[(1000, "a"), (2000, "b"), (3000, "c")]);
        // A node that started later has only the newer ones.
        assert_eq!(
            hash_check(&stable, &cps(&[(2000, "b"), (3000, "c"), (4000, "d")])),
            HashCheck::Agrees { seq: 3000 }
        );
        assert_eq!(
            hash_check(&stable, &cps(&[(2000, "b"), (3000, "x")])),
            HashCheck::Differs {
                seq: 3000,
                detail: "stable c vs x".into()
            }
        );
        assert_eq!(
            hash_check(&stable, &cps(&[(4000, "d")])),
            HashCheck::Unknown
        );
        assert_eq!(hash_check(&[], &cps(&[(1, "a")])), HashCheck::Unknown);
    }

    #[test]
    fn one_differing_node_makes_the_cluster_differ() {
        let stable = cps(&[(1000, "a"), (2000, "b")]);
        let node = |c: &[(u64, &str)]| NodeReading {
            addr: "n".into(),
            ready: true,
            lag: 0,
            checkpoints: cps(c),
        };
        let good = node(&[(1000, "a"), (2000, "b")]);
        let behind = node(&[(1000, "a")]);
        let bad = node(&[(1000, "a"), (2000, "z")]);
        assert_eq!(
            cluster_hash(&stable, &[good.clone(), behind.clone()]),
            HashCheck::Agrees { seq: 1000 }
        );
        assert!(matches!(
            cluster_hash(&stable, &[good.clone(), bad]),
            HashCheck::Differs { seq: 2000, .. }
        ));
        assert_eq!(
            cluster_hash(&stable, &[good, node(&[(5, "q")])]),
            HashCheck::Unknown
        );
        assert_eq!(cluster_hash(&stable, &[]), HashCheck::Unknown);
    }

    #[test]
    fn a_cluster_view_carries_the_judgement() {
        let gates = Gates {
            latency_p99_ms_max: Some(15.0),
            latency_p99_vs_baseline_max: None,
            error_ratio_max: Some(0.01),
            replica_lag_seq_max: Some(1000),
            output_hash_divergence: 0,
            min_requests: 200,
            breach_for: std::time::Duration::from_secs(2),
        };
        let window = |n: u64, ms: f64| {
            let mut h = crate::judge::Hist::empty(&tandem_metrics::BUCKETS_S).unwrap();
            for _ in 0..n {
                h.record(ms / 1000.0);
            }
            WindowStats {
                requests: n,
                errors: 0,
                latency: h,
                appends: None,
            }
        };
        let nodes = [NodeReading {
            addr: "n".into(),
            ready: true,
            lag: 7,
            checkpoints: cps(&[(1000, "a")]),
        }];
        let stable = cps(&[(1000, "a")]);
        let test = CanaryTest::default();
        let slow = window(300, 20.0);
        let v = cluster_view(
            "gcp",
            &gates,
            &nodes,
            &stable,
            Some(&slow),
            None,
            None,
            &test,
        )
        .unwrap();
        assert_eq!((v.nodes, v.nodes_ready, v.lag_max), (1, 1, 7));
        assert_eq!(v.hash, HashCheck::Agrees { seq: 1000 });
        assert_eq!(v.judged, Some(300));
        assert_eq!(v.breaches.len(), 1, "{:?}", v.breaches);
        assert_eq!(v.breaches[0].gate, "latency_p99_ms_max");
        assert!(v.p99_ms.is_some_and(|p| p > 15.0));
        // Too few requests: not judged, no breach, whatever the latency.
        let few = window(50, 20.0);
        let v = cluster_view(
            "gcp",
            &gates,
            &nodes,
            &stable,
            Some(&few),
            None,
            None,
            &test,
        )
        .unwrap();
        assert_eq!((v.judged, v.breaches.len()), (None, 0));
        // No window at all: not judged.
        let v = cluster_view("gcp", &gates, &nodes, &stable, None, None, None, &test).unwrap();
        assert_eq!(v.judged, None);
    }
}
