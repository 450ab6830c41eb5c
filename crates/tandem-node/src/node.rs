//! A node: its configuration, its partitions (log + appender + replica
//! each), its metrics and its per-account rate limiter. `Node::start` opens
//! the logs and starts the replicas; the HTTP side is in `server`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tandem_log::{FileLog, FileLogConfig, FsyncPolicy, Log};
use tandem_replica::{ReplicaConfig, SnapshotPolicy};

use crate::config::{LogKind, NodeConfig};
use crate::metrics::Metrics;
use crate::partition::Partition;

/// A token bucket per account, in shards to keep lock contention low.
#[derive(Debug)]
struct RateLimiter {
    rate: f64,
    burst: f64,
    shards: Vec<Shard>,
}

/// Tokens left and time of the last refill, per account.
type Shard = Mutex<HashMap<Vec<u8>, (f64, Instant)>>;

/// Accounts remembered per shard before full buckets are forgotten.
const SHARD_ACCOUNTS_MAX: usize = 1 << 16;

impl RateLimiter {
    fn new(rate: u32, burst: u32) -> RateLimiter {
        RateLimiter {
            rate: f64::from(rate),
            burst: f64::from(burst.max(1)),
            shards: (0..16).map(|_| Mutex::default()).collect(),
        }
    }

    /// `None` if the account may go on; else seconds to wait.
    fn check(&self, account: &[u8]) -> Option<u32> {
        if self.rate <= 0.0 {
            return None;
        }
        let h = xxhash_rust::xxh3::xxh3_64(account) as usize;
        let mut shard = crate::partition::lock(&self.shards[h % self.shards.len()]);
        let now = Instant::now();
        if shard.len() >= SHARD_ACCOUNTS_MAX {
            let (rate, burst) = (self.rate, self.burst);
            shard.retain(|_, (tokens, at)| {
                *tokens + now.duration_since(*at).as_secs_f64() * rate < burst
            });
        }
        let (tokens, at) = shard.entry(account.to_vec()).or_insert((self.burst, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * self.rate).min(self.burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            None
        } else {
            Some(((1.0 - *tokens) / self.rate).ceil().max(1.0) as u32)
        }
    }
}

/// A running node.
#[derive(Debug)]
pub struct Node {
    pub cfg: NodeConfig,
    pub partitions: Vec<Arc<Partition>>,
    pub metrics: Arc<Metrics>,
    draining: AtomicBool,
    stop: Arc<AtomicBool>,
    limiter: RateLimiter,
    /// Market streams (WebSocket and gRPC) open now.
    pub streams_open: std::sync::atomic::AtomicUsize,
    /// Short id of the node's log (`x-tandem-log`): of the one identity
    /// its partitions share (a Kafka topic's partitions share one), else
    /// of all of them.
    log_id: String,
    /// Whether order entry must be signed (`cfg.auth_mode()`), and the
    /// signing parameters.
    pub auth_mode: crate::config::AuthMode,
    pub auth: crate::auth::Policy,
    /// Ed25519 signatures of concurrent requests, verified in batches.
    pub ed25519: crate::auth::batch::Ed25519Batcher,
}

impl Node {
    /// Opens the logs and starts one replica per partition (they restore
    /// and catch up in the background; see `is_caught_up`).
    pub fn start(cfg: NodeConfig) -> Result<Arc<Node>> {
        let logs = open_logs(&cfg)?;
        Node::start_with_logs(cfg, logs)
    }

    /// `start` over logs opened by the caller, one per partition in
    /// partition order (tests: several nodes over one log in one process,
    /// or a log that fails on purpose).
    pub fn start_with_logs(cfg: NodeConfig, logs: Vec<Arc<dyn Log>>) -> Result<Arc<Node>> {
        anyhow::ensure!(!logs.is_empty(), "a node serves at least one log partition");
        let metrics = Arc::new(Metrics::new(&[
            ("node", &cfg.node),
            ("cluster", &cfg.cluster),
            ("zone", &cfg.zone),
            ("version", &cfg.version),
            ("role", cfg.role.as_str()),
        ]));
        let stop = Arc::new(AtomicBool::new(false));
        // Seeding first, for every partition: a refused seed starts nothing.
        for (id, log) in (0u32..).zip(&logs) {
            let identity = log.identity();
            if let Some(from) = &cfg.snapshot.seed_from {
                let src = from.join(format!("snapshots-{id}"));
                crate::seed::check_seed(&src, &identity)
                    .map_err(|e| anyhow::anyhow!("snapshot.seed_from: {e}"))?;
                let seeded = crate::seed::seed(&src, &snapshot_dir(&cfg, id))
                    .map_err(|e| anyhow::anyhow!("snapshot.seed_from: {e}"))?;
                if let Some(s) = seeded {
                    eprintln!(
                    "{{\"msg\":\"snapshot seeded\",\"partition\":{id},\"seq\":{},\"from\":{:?},\"files\":{:?},\"window\":{}}}",
                    s.seq,
                    src.display().to_string(),
                    s.files,
                    !s.without_window
                );
                }
            }
            crate::seed::claim(&snapshot_dir(&cfg, id), &identity).map_err(anyhow::Error::msg)?;
        }
        let mut partitions = Vec::with_capacity(logs.len());
        for (id, log) in logs.into_iter().enumerate() {
            let id = id as u32;
            let mut rc = ReplicaConfig::new(snapshot_dir(&cfg, id));
            rc.engine.max_markets = cfg.limits.max_markets;
            rc.engine.max_live_orders = cfg.limits.max_live_orders;
            rc.engine.max_open_per_account = cfg.limits.max_open_orders_per_account;
            rc.engine.reserve_ids = cfg.limits.reserve_ids;
            rc.engine.reserve_orders = cfg.limits.reserve_orders;
            rc.policy = SnapshotPolicy {
                every_commands: cfg.snapshot.every_commands,
                every: (cfg.snapshot.every_secs > 0)
                    .then(|| Duration::from_secs(cfg.snapshot.every_secs)),
                keep: cfg.snapshot.keep,
                background: cfg.snapshot.background,
            };
            rc.read_batch = 1024;
            partitions.push(Partition::start(
                id,
                log,
                rc,
                cfg.log.max_batch,
                cfg.limits.max_pending,
                (cfg.limits.idempotency_window, cfg.limits.change_window),
                (cfg.limits.checkpoint_every, cfg.limits.checkpoints_kept),
                Arc::clone(&metrics),
                Arc::clone(&stop),
            ));
        }
        let mut identities: Vec<&str> = partitions.iter().map(|p| p.identity()).collect();
        identities.dedup();
        let log_id = crate::partition::short_log_id(&identities.join(","));
        if cfg.unsigned_on_network() {
            eprintln!(
                "{{\"msg\":\"warning: auth = none on a listener other hosts can reach: anyone who \
                 reaches {} can place and cancel orders for any account\",\"listen\":\"{}\"}}",
                cfg.listen, cfg.listen
            );
        }
        Ok(Arc::new(Node {
            auth_mode: cfg.auth_mode(),
            auth: cfg.auth_policy(),
            ed25519: crate::auth::batch::Ed25519Batcher::new(32),
            log_id,
            limiter: RateLimiter::new(cfg.limits.account_rate, cfg.limits.account_burst),
            cfg,
            partitions,
            metrics,
            draining: AtomicBool::new(false),
            stop,
            streams_open: std::sync::atomic::AtomicUsize::new(0),
        }))
    }

    /// Short id of the log this node serves (the `x-tandem-log` header).
    pub fn log_id(&self) -> &str {
        &self.log_id
    }

    /// The partition that carries `market`.
    pub fn partition_of(&self, market: &[u8]) -> u32 {
        match self.partitions.len() {
            1 => 0,
            n => std::str::from_utf8(market)
                .map(|m| tandem_kafka::partition_for(m, n as u32))
                .unwrap_or(0),
        }
    }

    /// `None` if `account` may enter another order now, else seconds to wait.
    pub fn rate_limit(&self, account: &[u8]) -> Option<u32> {
        self.limiter.check(account)
    }

    pub fn is_caught_up(&self) -> bool {
        self.partitions.iter().all(|p| p.is_caught_up())
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Marks the node not ready (`/readyz` 503); it keeps serving.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    /// Stops the replicas; each writes a final snapshot so the next start
    /// restores instead of replaying. Blocks until they are done.
    /// The appenders first append what is queued; the logs are closed
    /// once this returns.
    pub fn stop(&self) {
        for p in &self.partitions {
            p.close();
        }
        self.stop.store(true, Ordering::Release);
        for p in &self.partitions {
            p.join();
        }
    }

    /// The first thread the node needs that has ended (`append-P`,
    /// `replica-P`), if any.
    pub fn stopped_thread(&self) -> Option<String> {
        self.partitions.iter().find_map(|p| p.stopped_thread())
    }
}

fn snapshot_dir(cfg: &NodeConfig, partition: u32) -> PathBuf {
    cfg.data_dir.join(format!("snapshots-{partition}"))
}

/// The logs of the node `cfg` describes, opened to read them (`tandem
/// verify-log --config`): as the node opens them, except that a missing
/// Kafka topic is an error, never created. A file log is locked while
/// open: a running node's cannot be read this way.
pub fn open_logs_to_read(cfg: &NodeConfig) -> Result<Vec<Arc<dyn Log>>> {
    let mut cfg = cfg.clone();
    cfg.log.kafka_create_topic = false;
    open_logs(&cfg)
}

fn open_logs(cfg: &NodeConfig) -> Result<Vec<Arc<dyn Log>>> {
    match cfg.log.kind {
        LogKind::File => {
            let dir = cfg.data_dir.join("log");
            let fc = FileLogConfig {
                fsync: if cfg.log.fsync {
                    FsyncPolicy::Always
                } else {
                    FsyncPolicy::Never
                },
                // A hand-over's successor waits for its predecessor.
                lock_wait: crate::file_log_lock_wait(),
                preallocate_bytes: cfg.log.write_ahead_bytes,
                ..FileLogConfig::default()
            };
            let log = FileLog::open(&dir, fc)
                .with_context(|| format!("open file log {}", dir.display()))?;
            let r = log.open_report();
            eprintln!(
                "{{\"msg\":\"file log opened\",\"dir\":{:?},\"report\":{:?}}}",
                dir.display().to_string(),
                format!("{r:?}")
            );
            Ok(vec![Arc::new(log)])
        }
        LogKind::Kafka => {
            let l = &cfg.log;
            // `env:` and `file:` values are read now; the line below prints
            // secret values as `<redacted>`.
            let props = l.resolve_kafka_properties(&|name| std::env::var(name).ok())?;
            if !props.0.is_empty() {
                eprintln!(
                    "{{\"msg\":\"kafka client properties\",\"properties\":{:?}}}",
                    format!("{props:?}")
                );
            }
            if l.kafka_create_topic {
                // The production settings of deploy/kafka/README.md.
                let owned = tandem_kafka::production_topic_settings(
                    l.kafka_min_insync_replicas,
                    tandem_kafka::KafkaLogConfig::new("", "", 0).max_message_bytes,
                );
                let settings: Vec<(&str, &str)> =
                    owned.iter().map(|(k, v)| (*k, v.as_str())).collect();
                tandem_kafka::create_topic_with(
                    &l.kafka_brokers,
                    &l.kafka_topic,
                    l.kafka_partitions,
                    l.kafka_replication,
                    &settings,
                    Duration::from_secs(30),
                    &props.0,
                )
                .with_context(|| {
                    format!(
                        "create topic {} on {} (log.kafka_create_topic = true)",
                        l.kafka_topic, l.kafka_brokers
                    )
                })?;
            }
            (0..l.kafka_partitions)
                .map(|p| {
                    let mut kc =
                        tandem_kafka::KafkaLogConfig::new(&l.kafka_brokers, &l.kafka_topic, p);
                    // A node reads its own appends back at once: a short
                    // broker-side fetch wait bounds that delay.
                    kc.fetch_wait = Duration::from_millis(l.kafka_fetch_wait_ms);
                    kc.client_properties.clone_from(&props.0);
                    tandem_kafka::KafkaLog::open(kc)
                        .map(|k| Arc::new(k) as Arc<dyn Log>)
                        .with_context(|| {
                            format!(
                                "open kafka {}/{} (a node creates a missing topic only with \
                                 log.kafka_create_topic = true)",
                                l.kafka_topic, p
                            )
                        })
                })
                .collect()
        }
    }
}
