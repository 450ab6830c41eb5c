//! The edge's metrics, per cluster and version: what the rollout gates
//! read (request counts by status, latency, upstream errors, retries,
//! ejections) and the split actually achieved (requests per cluster).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::RwLock;
use std::time::Duration;

use tandem_metrics::{labels, Histogram};

#[derive(Debug, Default)]
struct PerCluster {
    /// Answers to clients by status code.
    status: RwLock<BTreeMap<u16, AtomicU64>>,
    latency: Histogram,
    upstream_errors: AtomicU64,
    retries: AtomicU64,
    ejections: AtomicU64,
}

/// Everything the edge counts.
#[derive(Debug, Default)]
pub struct EdgeMetrics {
    clusters: RwLock<BTreeMap<(String, String), PerCluster>>,
    /// Requests no cluster could take (503 from the edge itself).
    unroutable: AtomicU64,
    retry_budget_exhausted: AtomicU64,
    bad_requests: AtomicU64,
    connections_refused: AtomicU64,
}

impl EdgeMetrics {
    fn with(&self, cluster: &str, version: &str, f: impl Fn(&PerCluster)) {
        let key = (cluster.to_owned(), version.to_owned());
        if let Some(c) = self.clusters.read().expect("metrics lock").get(&key) {
            return f(c);
        }
        f(self
            .clusters
            .write()
            .expect("metrics lock")
            .entry(key)
            .or_default())
    }

    /// A request answered through `cluster`.
    pub fn answered(&self, cluster: &str, version: &str, status: u16, took: Duration) {
        self.with(cluster, version, |c| {
            c.latency.observe(took);
            if let Some(n) = c.status.read().expect("metrics lock").get(&status) {
                n.fetch_add(1, Relaxed);
                return;
            }
            c.status
                .write()
                .expect("metrics lock")
                .entry(status)
                .or_default()
                .fetch_add(1, Relaxed);
        });
    }
    pub fn upstream_error(&self, cluster: &str, version: &str) {
        self.with(cluster, version, |c| {
            c.upstream_errors.fetch_add(1, Relaxed);
        });
    }
    pub fn retried(&self, cluster: &str, version: &str) {
        self.with(cluster, version, |c| {
            c.retries.fetch_add(1, Relaxed);
        });
    }
    pub fn ejected(&self, cluster: &str, version: &str) {
        self.with(cluster, version, |c| {
            c.ejections.fetch_add(1, Relaxed);
        });
    }
    pub fn unroutable(&self) {
        self.unroutable.fetch_add(1, Relaxed);
    }
    pub fn budget_exhausted(&self) {
        self.retry_budget_exhausted.fetch_add(1, Relaxed);
    }
    pub fn bad_request(&self) {
        self.bad_requests.fetch_add(1, Relaxed);
    }
    pub fn connection_refused(&self) {
        self.connections_refused.fetch_add(1, Relaxed);
    }

    /// Requests answered per cluster name (the split achieved).
    pub fn split(&self) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        for ((name, _), c) in self.clusters.read().expect("metrics lock").iter() {
            *out.entry(name.clone()).or_default() += c.latency.count();
        }
        out
    }

    /// Prometheus text.
    pub fn render(&self, edge_labels: &str) -> String {
        let mut out = String::with_capacity(8 << 10);
        let sep = if edge_labels.is_empty() { "" } else { "," };
        let clusters = self.clusters.read().expect("metrics lock");
        out.push_str("# HELP tandem_edge_requests_total Client requests answered, by cluster, version and status.\n# TYPE tandem_edge_requests_total counter\n");
        for ((name, version), c) in clusters.iter() {
            let l = labels(&[("cluster", name), ("version", version)]);
            for (status, n) in c.status.read().expect("metrics lock").iter() {
                let _ = writeln!(
                    out,
                    "tandem_edge_requests_total{{{edge_labels}{sep}{l},status=\"{status}\"}} {}",
                    n.load(Relaxed)
                );
            }
        }
        out.push_str("# HELP tandem_edge_request_duration_seconds Time from request to answer through the edge, retries included.\n# TYPE tandem_edge_request_duration_seconds histogram\n");
        for ((name, version), c) in clusters.iter() {
            let l = labels(&[("cluster", name), ("version", version)]);
            c.latency.write(
                &mut out,
                "tandem_edge_request_duration_seconds",
                &format!("{edge_labels}{sep}{l}"),
            );
        }
        type Get = fn(&PerCluster) -> u64;
        let per: [(&str, &str, Get); 3] = [
            (
                "tandem_edge_upstream_errors_total",
                "Failed attempts to a node (connect error, 502/503/504, timeout).",
                |c| c.upstream_errors.load(Relaxed),
            ),
            (
                "tandem_edge_retries_total",
                "Attempts retried on another node.",
                |c| c.retries.load(Relaxed),
            ),
            (
                "tandem_edge_ejections_total",
                "Nodes ejected by passive outlier detection.",
                |c| c.ejections.load(Relaxed),
            ),
        ];
        for (name, help, get) in per {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for ((cluster, version), c) in clusters.iter() {
                let l = labels(&[("cluster", cluster), ("version", version)]);
                let _ = writeln!(out, "{name}{{{edge_labels}{sep}{l}}} {}", get(c));
            }
        }
        let plain = [
            (
                "tandem_edge_unroutable_total",
                "Requests no cluster could take (503).",
                &self.unroutable,
            ),
            (
                "tandem_edge_retry_budget_exhausted_total",
                "Retries refused by the retry budget.",
                &self.retry_budget_exhausted,
            ),
            (
                "tandem_edge_bad_requests_total",
                "Requests refused by the edge itself (4xx).",
                &self.bad_requests,
            ),
            (
                "tandem_edge_connections_refused_total",
                "Connections over the limit.",
                &self.connections_refused,
            ),
        ];
        for (name, help, v) in plain {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name}{{{edge_labels}}} {}",
                v.load(Relaxed)
            );
        }
        out
    }
}
