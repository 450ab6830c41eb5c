//! Prometheus metrics of a node, written in the text exposition format by
//! hand (a few counters, gauges and fixed-bucket histograms need no
//! library). Every series carries the rollout labels (node, cluster, zone,
//! version, role), which is what the rollout gates select on.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Mutex, RwLock};
use std::time::Duration;

use tandem_core::Engine;

use tandem_metrics::Histogram;

use crate::checkpoints::Checkpoint;
use crate::partition::{lock, read, write};

#[derive(Debug, Default, Clone, Copy)]
struct ReplicaGauges {
    applied_seq: u64,
    markets: u64,
    live_orders: u64,
    taken_ids: u64,
}

/// All of a node's metrics.
#[derive(Debug)]
pub struct Metrics {
    labels: String,
    requests: RwLock<BTreeMap<(&'static str, u16), Histogram>>,
    append: Histogram,
    append_batch_commands: AtomicU64,
    append_batches: AtomicU64,
    append_errors: AtomicU64,
    replica_failures: AtomicU64,
    panics: AtomicU64,
    connections_open: AtomicU64,
    connections_refused: AtomicU64,
    seq_waiting: AtomicU64,
    replicas: Mutex<BTreeMap<u32, ReplicaGauges>>,
    log_last_seq: Mutex<BTreeMap<u32, u64>>,
    /// The newest chain checkpoint per partition.
    checkpoints: Mutex<BTreeMap<u32, Checkpoint>>,
    /// Threads the node needs, by name (`append-P`, `replica-P`): running?
    threads: Mutex<BTreeMap<String, bool>>,
    /// Signed orders verified, by scheme (Ed25519, EIP-712), and refused
    /// for their credentials, by status (400, 401).
    signed: [AtomicU64; 2],
    auth_refused: [AtomicU64; 2],
}

impl Metrics {
    /// Metrics labelled with the rollout labels given.
    pub fn new(labels: &[(&str, &str)]) -> Metrics {
        let labels = tandem_metrics::labels(labels);
        Metrics {
            labels,
            requests: RwLock::default(),
            append: Histogram::default(),
            append_batch_commands: AtomicU64::new(0),
            append_batches: AtomicU64::new(0),
            append_errors: AtomicU64::new(0),
            replica_failures: AtomicU64::new(0),
            panics: AtomicU64::new(0),
            connections_open: AtomicU64::new(0),
            connections_refused: AtomicU64::new(0),
            seq_waiting: AtomicU64::new(0),
            replicas: Mutex::default(),
            log_last_seq: Mutex::default(),
            checkpoints: Mutex::default(),
            threads: Mutex::default(),
            signed: Default::default(),
            auth_refused: Default::default(),
        }
    }

    /// A signed request whose signature verified.
    pub fn signature_verified(&self, scheme: crate::auth::Scheme) {
        let i = match scheme {
            crate::auth::Scheme::Ed25519 => 0,
            crate::auth::Scheme::Eip712 => 1,
        };
        self.signed[i].fetch_add(1, Relaxed);
    }

    /// A request refused for its credentials (missing, malformed, expired,
    /// not verifying), with its status.
    pub fn auth_refused(&self, status: u16) {
        self.auth_refused[usize::from(status == 401)].fetch_add(1, Relaxed);
    }

    /// One answered request.
    pub fn request(&self, route: &'static str, status: u16, took: Duration) {
        if let Some(h) = read(&self.requests).get(&(route, status)) {
            h.observe(took);
            return;
        }
        write(&self.requests)
            .entry((route, status))
            .or_default()
            .observe(took);
    }

    pub fn log_append(&self, took: Duration, commands: usize) {
        self.append.observe(took);
        self.append_batches.fetch_add(1, Relaxed);
        self.append_batch_commands
            .fetch_add(commands as u64, Relaxed);
    }
    pub fn log_append_error(&self) {
        self.append_errors.fetch_add(1, Relaxed);
    }
    pub fn replica_failed(&self) {
        self.replica_failures.fetch_add(1, Relaxed);
    }
    pub fn panicked(&self) {
        self.panics.fetch_add(1, Relaxed);
    }
    pub fn connection_opened(&self) {
        self.connections_open.fetch_add(1, Relaxed);
    }
    pub fn connection_closed(&self) {
        self.connections_open.fetch_sub(1, Relaxed);
    }
    pub fn connection_refused(&self) {
        self.connections_refused.fetch_add(1, Relaxed);
    }
    pub fn open_connections(&self) -> u64 {
        self.connections_open.load(Relaxed)
    }
    /// One request starts waiting for the replica to reach its
    /// `x-tandem-min-seq`; counted until the guard drops (answered or
    /// cancelled).
    pub fn seq_waiting(&self) -> SeqWaiting<'_> {
        self.seq_waiting.fetch_add(1, Relaxed);
        SeqWaiting(&self.seq_waiting)
    }

    /// The replica of `partition` is at `seq` with this state.
    pub fn set_replica(&self, partition: u32, seq: u64, eng: &Engine) {
        lock(&self.replicas).insert(
            partition,
            ReplicaGauges {
                applied_seq: seq,
                markets: eng.market_count() as u64,
                live_orders: u64::from(eng.live_orders()),
                taken_ids: eng.taken_ids() as u64,
            },
        );
    }

    /// The log of `partition` ends at `seq` (for the lag gauge).
    pub fn set_log_last_seq(&self, partition: u32, seq: u64) {
        lock(&self.log_last_seq).insert(partition, seq);
    }

    /// The newest chain checkpoint of `partition` (see
    /// `tandem_chain_checkpoint_hash`).
    pub fn set_checkpoint(&self, partition: u32, c: Checkpoint) {
        lock(&self.checkpoints).insert(partition, c);
    }

    /// A thread the node needs started (`up`) or ended.
    pub fn set_thread_up(&self, name: &str, up: bool) {
        lock(&self.threads).insert(name.to_owned(), up);
    }

    /// Test hook (through `Partition::panic_holding_locks`): panics while
    /// holding the request-duration lock for writing.
    pub(crate) fn panic_holding_locks(&self) {
        let _g = write(&self.requests);
        panic!("test hook: a panic while holding the metrics and answer locks");
    }

    /// The exposition text.
    pub fn render(&self) -> String {
        let l = &self.labels;
        let mut out = String::with_capacity(16 << 10);
        out.push_str("# HELP tandem_http_request_duration_seconds Time from request head to answer, by route and status.\n");
        out.push_str("# TYPE tandem_http_request_duration_seconds histogram\n");
        for ((route, status), h) in read(&self.requests).iter() {
            h.write(
                &mut out,
                "tandem_http_request_duration_seconds",
                &format!("{l},route=\"{route}\",status=\"{status}\""),
            );
        }
        out.push_str("# HELP tandem_log_append_duration_seconds Time of one log append (one batch, durable).\n");
        out.push_str("# TYPE tandem_log_append_duration_seconds histogram\n");
        self.append
            .write(&mut out, "tandem_log_append_duration_seconds", l);
        let counters = [
            (
                "tandem_log_append_commands_total",
                "Commands appended to the log.",
                &self.append_batch_commands,
            ),
            (
                "tandem_log_append_batches_total",
                "Append batches (group commits).",
                &self.append_batches,
            ),
            (
                "tandem_log_append_errors_total",
                "Append batches that failed.",
                &self.append_errors,
            ),
            (
                "tandem_replica_failures_total",
                "Replica errors (open or step).",
                &self.replica_failures,
            ),
            (
                "tandem_http_panics_total",
                "Requests whose handler panicked (answered 500).",
                &self.panics,
            ),
            (
                "tandem_connections_refused_total",
                "Connections over the limit (answered 503).",
                &self.connections_refused,
            ),
        ];
        for (name, help, v) in counters {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            let _ = writeln!(out, "{name}{{{l}}} {}", v.load(Relaxed));
        }
        let _ = writeln!(
            out,
            "# HELP tandem_signed_orders_total Order-entry requests whose signature verified, by scheme.\n# TYPE tandem_signed_orders_total counter"
        );
        for (i, scheme) in ["ed25519", "eip712"].iter().enumerate() {
            let _ = writeln!(
                out,
                "tandem_signed_orders_total{{{l},scheme=\"{scheme}\"}} {}",
                self.signed[i].load(Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP tandem_auth_refused_total Order-entry requests refused for their signature or expiry (nothing appended), by status.\n# TYPE tandem_auth_refused_total counter"
        );
        for (i, status) in ["400", "401"].iter().enumerate() {
            let _ = writeln!(
                out,
                "tandem_auth_refused_total{{{l},status=\"{status}\"}} {}",
                self.auth_refused[i].load(Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP tandem_connections_open Open client connections.\n# TYPE tandem_connections_open gauge\ntandem_connections_open{{{l}}} {}",
            self.connections_open.load(Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP tandem_min_seq_waiting Requests waiting for the replica to reach their x-tandem-min-seq.\n# TYPE tandem_min_seq_waiting gauge\ntandem_min_seq_waiting{{{l}}} {}",
            self.seq_waiting.load(Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP tandem_thread_up Threads the node needs (appender, replica per partition): 1 running, 0 ended (the node is then not ready).\n# TYPE tandem_thread_up gauge"
        );
        for (name, up) in lock(&self.threads).iter() {
            let _ = writeln!(
                out,
                "tandem_thread_up{{{l},thread=\"{name}\"}} {}",
                u8::from(*up)
            );
        }
        let replicas = lock(&self.replicas).clone();
        let last = lock(&self.log_last_seq).clone();
        type Gauge = (&'static str, &'static str, fn(&ReplicaGauges) -> u64);
        let gauges: [Gauge; 4] = [
            (
                "tandem_replica_applied_seq",
                "Seq of the last command applied.",
                |g| g.applied_seq,
            ),
            ("tandem_book_markets", "Markets known to the engine.", |g| {
                g.markets
            }),
            ("tandem_book_live_orders", "Resting orders.", |g| {
                g.live_orders
            }),
            ("tandem_book_taken_ids", "Order ids taken for good.", |g| {
                g.taken_ids
            }),
        ];
        for (name, help, get) in gauges {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
            for (p, g) in &replicas {
                let _ = writeln!(out, "{name}{{{l},partition=\"{p}\"}} {}", get(g));
            }
        }
        let _ = writeln!(
            out,
            "# HELP tandem_replica_lag_seqs Log end minus applied seq (Kafka seqs are not contiguous: compare with care).\n# TYPE tandem_replica_lag_seqs gauge"
        );
        for (p, g) in &replicas {
            let end = last.get(p).copied().unwrap_or(g.applied_seq);
            let _ = writeln!(
                out,
                "tandem_replica_lag_seqs{{{l},partition=\"{p}\"}} {}",
                end.saturating_sub(g.applied_seq)
            );
        }
        // The output hash at the newest checkpoint, with its seq as a
        // label: checkpoints are chosen from the seq alone, so replicas of
        // one log that agree export the same value under the same seq, and
        // `count_values` over them finds a divergence in PromQL. The value
        // is the hash's low 48 bits, exact in a float.
        let _ = writeln!(
            out,
            "# HELP tandem_chain_checkpoint_hash Low 48 bits of the output hash chain at the newest checkpoint (label seq); equal on every replica that agrees.\n# TYPE tandem_chain_checkpoint_hash gauge"
        );
        for (p, c) in lock(&self.checkpoints).iter() {
            let _ = writeln!(
                out,
                "tandem_chain_checkpoint_hash{{{l},partition=\"{p}\",seq=\"{}\"}} {}",
                c.seq,
                c.chain & CHECKPOINT_HASH_MASK
            );
        }
        out
    }
}

/// The bits of the chain hash exported as a metric value: a float holds
/// integers exactly up to 2^53.
pub const CHECKPOINT_HASH_MASK: u128 = (1 << 48) - 1;

/// A request counted in `tandem_min_seq_waiting` while it lives.
#[derive(Debug)]
pub struct SeqWaiting<'a>(&'a AtomicU64);

impl Drop for SeqWaiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}
