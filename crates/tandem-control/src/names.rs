//! The metric and label names the node (`tandem-node/src/metrics.rs`) and
//! the edge (`tandem-edge/src/metrics.rs`) export that a controller reads.
//! A test renders both from running servers and checks every name here is
//! in their output, so a rename there fails here.
//!
//! Histograms are named by their family; the series are `<name>_bucket`
//! (label `le`), `<name>_sum` and `<name>_count` (`prom` folds them back
//! into the family).

/// Label names.
pub mod label {
    /// Bucket upper bound of a histogram series.
    pub const LE: &str = "le";
    pub const CLUSTER: &str = "cluster";
    pub const VERSION: &str = "version";
    /// HTTP status code, as a decimal string.
    pub const STATUS: &str = "status";
    pub const ZONE: &str = "zone";
    pub const NODE: &str = "node";
    /// `stable` or `canary`.
    pub const ROLE: &str = "role";
    /// A node's route name (`place`, `cancel`, `status`, `chain`, ...).
    pub const ROUTE: &str = "route";
    /// A log partition (decimal).
    pub const PARTITION: &str = "partition";
    /// A node thread (`append-P`, `replica-P`).
    pub const THREAD: &str = "thread";
}

/// The node's `/metrics`. Every series carries `node`, `cluster`, `zone`,
/// `version`, `role`.
pub mod node {
    /// Histogram: request head to answer, by `route` and `status`.
    pub const HTTP_REQUEST_DURATION_SECONDS: &str = "tandem_http_request_duration_seconds";
    /// Histogram: one log append (one batch, durable).
    pub const LOG_APPEND_DURATION_SECONDS: &str = "tandem_log_append_duration_seconds";
    /// Counter: commands appended.
    pub const LOG_APPEND_COMMANDS_TOTAL: &str = "tandem_log_append_commands_total";
    /// Counter: appends (batches, group commits) that succeeded.
    pub const LOG_APPEND_BATCHES_TOTAL: &str = "tandem_log_append_batches_total";
    /// Counter: append batches that failed.
    pub const LOG_APPEND_ERRORS_TOTAL: &str = "tandem_log_append_errors_total";
    /// Counter: replica errors (open or step).
    pub const REPLICA_FAILURES_TOTAL: &str = "tandem_replica_failures_total";
    /// Counter: requests whose handler panicked.
    pub const HTTP_PANICS_TOTAL: &str = "tandem_http_panics_total";
    /// Gauge per `partition`: seq of the last command applied.
    pub const REPLICA_APPLIED_SEQ: &str = "tandem_replica_applied_seq";
    /// Gauge per `partition`: log end minus applied seq.
    pub const REPLICA_LAG_SEQS: &str = "tandem_replica_lag_seqs";
    /// Gauge per `thread`: 1 running, 0 ended.
    pub const THREAD_UP: &str = "tandem_thread_up";
    /// Gauge per `partition`: resting orders.
    pub const BOOK_LIVE_ORDERS: &str = "tandem_book_live_orders";
}

/// The edge's `/metrics` (on its admin listener). Every series carries
/// `zone`; the per-cluster ones also `cluster` and `version`.
pub mod edge {
    /// Counter by `cluster`, `version`, `status`: client requests answered.
    pub const REQUESTS_TOTAL: &str = "tandem_edge_requests_total";
    /// Histogram by `cluster`, `version`: request to answer, retries
    /// included.
    pub const REQUEST_DURATION_SECONDS: &str = "tandem_edge_request_duration_seconds";
    /// Counter by `cluster`, `version`: failed attempts to a node.
    pub const UPSTREAM_ERRORS_TOTAL: &str = "tandem_edge_upstream_errors_total";
    /// Counter by `cluster`, `version`: attempts retried on another node.
    pub const RETRIES_TOTAL: &str = "tandem_edge_retries_total";
    /// Counter by `cluster`, `version`: passive ejections.
    pub const EJECTIONS_TOTAL: &str = "tandem_edge_ejections_total";
    /// Counter: requests no cluster could take (503).
    pub const UNROUTABLE_TOTAL: &str = "tandem_edge_unroutable_total";
    /// Gauge: distinct logs the nodes report (above 1: mixed exchanges).
    pub const LOGS_DISTINCT: &str = "tandem_edge_logs_distinct";
}
