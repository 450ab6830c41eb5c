//! The edge's metrics, per cluster and version: what the rollout gates
//! read (request counts by status, latency, upstream errors, retries,
//! ejections) and the split actually achieved (requests per cluster);
//! and the logs the nodes serve (`render_logs`: more than one distinct log
//! means the edge mixes different exchanges).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::RwLock;
use std::time::Duration;

use tandem_metrics::{labels, Histogram};

use crate::table::{read, write};

/// Status codes counted in a flat array (no lock on the request path):
/// every `http::StatusCode` is in `100..=999`.
const STATUS_SLOTS: usize = 1000;

#[derive(Debug)]
struct PerCluster {
    /// Answers to clients by status code, indexed by the code; rendered
    /// in code order, only the codes seen.
    status: Box<[AtomicU64]>,
    latency: Histogram,
    upstream_errors: AtomicU64,
    retries: AtomicU64,
    ejections: AtomicU64,
}

impl Default for PerCluster {
    fn default() -> Self {
        PerCluster {
            status: (0..STATUS_SLOTS).map(|_| AtomicU64::new(0)).collect(),
            latency: Histogram::default(),
            upstream_errors: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            ejections: AtomicU64::new(0),
        }
    }
}

/// Everything the edge counts.
#[derive(Debug, Default)]
pub struct EdgeMetrics {
    /// Per (cluster, version), sorted by both, found without allocating
    /// (a binary search over borrowed names); written only when a pair is
    /// seen for the first time.
    clusters: RwLock<Vec<((String, String), PerCluster)>>,
    /// Requests no cluster could take (503 from the edge itself).
    unroutable: AtomicU64,
    retry_budget_exhausted: AtomicU64,
    bad_requests: AtomicU64,
    connections_refused: AtomicU64,
    /// Requests whose handler panicked (answered 500 by the scaffold).
    panics: AtomicU64,
    /// TLS handshakes that failed on either listener (wrong CA, no client
    /// certificate where one is required, timeout).
    tls_handshake_failures: AtomicU64,
}

impl EdgeMetrics {
    fn with(&self, cluster: &str, version: &str, f: impl Fn(&PerCluster)) {
        let find = |v: &Vec<((String, String), PerCluster)>| {
            v.binary_search_by(|((n, ver), _)| (n.as_str(), ver.as_str()).cmp(&(cluster, version)))
        };
        {
            let v = read(&self.clusters);
            if let Ok(i) = find(&v) {
                return f(&v[i].1);
            }
        }
        let mut v = write(&self.clusters);
        let i = match find(&v) {
            Ok(i) => i,
            Err(i) => {
                let key = (cluster.to_owned(), version.to_owned());
                v.insert(i, (key, PerCluster::default()));
                i
            }
        };
        f(&v[i].1)
    }

    /// A request answered through `cluster`.
    pub fn answered(&self, cluster: &str, version: &str, status: u16, took: Duration) {
        self.with(cluster, version, |c| {
            c.latency.observe(took);
            // Out of range cannot come from an `http::StatusCode`; it is
            // counted as 999 rather than lost.
            let slot = usize::from(status).min(STATUS_SLOTS - 1);
            c.status[slot].fetch_add(1, Relaxed);
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
    pub fn panicked(&self) {
        self.panics.fetch_add(1, Relaxed);
    }
    pub fn tls_handshake_failed(&self) {
        self.tls_handshake_failures.fetch_add(1, Relaxed);
    }

    /// Requests answered per cluster name (the split achieved).
    pub fn split(&self) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        for ((name, _), c) in read(&self.clusters).iter() {
            *out.entry(name.clone()).or_default() += c.latency.count();
        }
        out
    }

    /// Prometheus text.
    pub fn render(&self, edge_labels: &str) -> String {
        let mut out = String::with_capacity(8 << 10);
        let sep = if edge_labels.is_empty() { "" } else { "," };
        let clusters = read(&self.clusters);
        out.push_str("# HELP tandem_edge_requests_total Client requests answered, by cluster, version and status.\n# TYPE tandem_edge_requests_total counter\n");
        for ((name, version), c) in clusters.iter() {
            let l = labels(&[("cluster", name), ("version", version)]);
            for (status, n) in c.status.iter().enumerate() {
                let n = n.load(Relaxed);
                if n == 0 {
                    continue;
                }
                let _ = writeln!(
                    out,
                    "tandem_edge_requests_total{{{edge_labels}{sep}{l},status=\"{status}\"}} {n}"
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
            (
                "tandem_edge_panics_total",
                "Requests whose handler panicked (answered 500).",
                &self.panics,
            ),
            (
                "tandem_edge_tls_handshake_failures_total",
                "TLS handshakes that failed or timed out, both listeners.",
                &self.tls_handshake_failures,
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

/// Prometheus text for the logs the nodes serve: `tandem_edge_logs_distinct`
/// (more than 1: the edge routes to different exchanges) and one
/// `tandem_edge_node_log_info{node,log}` per node that named its log, in
/// address order.
pub fn render_logs(
    out: &mut String,
    edge_labels: &str,
    per_node: &[(String, String)],
    distinct: usize,
) {
    let sep = if edge_labels.is_empty() { "" } else { "," };
    let _ = writeln!(
        out,
        "# HELP tandem_edge_logs_distinct Distinct order logs the nodes report (x-tandem-log); above 1 the edge mixes different exchanges.\n# TYPE tandem_edge_logs_distinct gauge\ntandem_edge_logs_distinct{{{edge_labels}}} {distinct}"
    );
    out.push_str("# HELP tandem_edge_node_log_info The log each node last reported.\n# TYPE tandem_edge_node_log_info gauge\n");
    for (node, log) in per_node {
        let l = labels(&[("node", node), ("log", log)]);
        let _ = writeln!(out, "tandem_edge_node_log_info{{{edge_labels}{sep}{l}}} 1");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A panic while a metrics lock is held does not make every later
    /// request panic.
    #[test]
    fn a_poisoned_metrics_lock_is_ignored() {
        let m = std::sync::Arc::new(EdgeMetrics::default());
        m.answered("c", "v", 200, Duration::from_millis(1));
        let m2 = std::sync::Arc::clone(&m);
        let _ = std::thread::spawn(move || {
            let _g = m2.clusters.write().unwrap();
            panic!("poison the metrics lock");
        })
        .join();
        assert!(m.clusters.is_poisoned());
        m.answered("c", "v", 200, Duration::from_millis(1));
        m.answered("d", "v", 500, Duration::from_millis(1));
        assert_eq!(m.split().get("c"), Some(&2));
        assert!(m.render("").contains("status=\"500\""));
    }

    #[test]
    fn logs_render_in_address_order() {
        let mut out = String::new();
        let per = vec![
            ("a:1".to_string(), "L1".to_string()),
            ("b:2".into(), "L2".into()),
        ];
        render_logs(&mut out, "zone=\"z\"", &per, 2);
        assert!(
            out.contains("tandem_edge_logs_distinct{zone=\"z\"} 2"),
            "{out}"
        );
        let a = out.find("node=\"a:1\",log=\"L1\"").unwrap();
        let b = out.find("node=\"b:2\",log=\"L2\"").unwrap();
        assert!(a < b, "{out}");
    }
}
