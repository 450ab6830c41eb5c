//! The node's configuration: one versioned struct, every field with a
//! default, read from a TOML file (`deploy/node/tandem-node.toml` is the
//! commented default) and then overridden by `TANDEM_*` environment
//! variables. The environment is passed in as a map so that parsing is
//! testable.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// Where the order log lives.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogKind {
    /// The embedded file log (one partition, id 0): no outside service.
    File,
    /// A Kafka topic, one partition per market group.
    Kafka,
}

/// Blue/green style role of a node in a rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Stable,
    Canary,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Stable => "stable",
            Role::Canary => "canary",
        }
    }
}

/// Who may enter orders (`docs/signing.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// Every place, cancel and amend carries a valid signature by its
    /// account's key; an unsigned one is 401.
    Signed,
    /// Signatures are optional: a signed request is verified (and refused
    /// if it does not verify), an unsigned one is taken as before.
    None,
}

impl AuthMode {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMode::Signed => "signed",
            AuthMode::None => "none",
        }
    }
}

/// Everything a node reads at start. See `deploy/node/tandem-node.toml`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeConfig {
    /// Config format version; only 1 exists.
    pub config_version: u32,
    /// Address of the public listener (HTTP/1.1, HTTP/2 and gRPC).
    pub listen: SocketAddr,
    /// Rollout labels, echoed in `/v1/status`, headers and metrics.
    pub node: String,
    pub cluster: String,
    pub zone: String,
    pub role: Role,
    /// Who may enter orders. Absent: `signed` unless `listen` is a
    /// loopback address (`none` there); see [`NodeConfig::auth_mode`].
    pub auth: Option<AuthMode>,
    /// Parameters of signed orders.
    pub signing: SigningConfig,
    /// Build version reported; defaults to this binary's version.
    pub version: String,
    /// Directory for the file log and the snapshots.
    pub data_dir: PathBuf,
    pub log: LogConfig,
    pub snapshot: SnapshotConfig,
    pub limits: Limits,
    pub http: HttpConfig,
    /// TLS on the listener (`[tls]`); absent: plaintext.
    pub tls: Option<TlsConfig>,
}

/// TLS on the node's listener (`tandem_conn::tls`): HTTP/2 or HTTP/1.1 by
/// ALPN. The files are read at start and again on SIGHUP (a renewed
/// certificate reaches new connections; open ones keep theirs; a file that
/// does not load keeps the old certificate and is logged).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key of the certificate.
    pub key: PathBuf,
    /// PEM CA certificates: when set, every client (the edges) must
    /// present a certificate issued by one of them (mutual TLS).
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
}

impl TlsConfig {
    /// The files as the scaffold takes them.
    pub fn files(&self) -> tandem_conn::tls::ServerFiles {
        tandem_conn::tls::ServerFiles {
            cert: self.cert.clone(),
            key: self.key.clone(),
            client_ca: self.client_ca.clone(),
            section: "tls".into(),
        }
    }
}

/// The order log.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    pub kind: LogKind,
    /// File log: fdatasync every commit (the durable default). Off only for
    /// measuring the software's own cost.
    pub fsync: bool,
    /// Kafka: bootstrap servers, topic, partition count.
    pub kafka_brokers: String,
    pub kafka_topic: String,
    pub kafka_partitions: u32,
    /// Kafka: create the topic at start if it is missing. Off by default:
    /// a missing topic is an error at start (a typo must not make a new,
    /// empty exchange), and production topics are created by operators
    /// with the settings of `deploy/kafka/README.md`. When on, the topic
    /// is created with those settings: `kafka_replication` replicas,
    /// `min.insync.replicas` = `kafka_min_insync_replicas`,
    /// `unclean.leader.election.enable=false`, `cleanup.policy=delete`,
    /// unlimited retention and a `max.message.bytes` that fits a batch.
    pub kafka_create_topic: bool,
    /// Kafka: replication factor when creating the topic (production 3;
    /// single-broker tests set 1).
    pub kafka_replication: u32,
    /// Kafka: `min.insync.replicas` when creating the topic (production
    /// 2; at most `kafka_replication`).
    pub kafka_min_insync_replicas: u32,
    /// Most commands appended as one batch (one fsync, one Kafka message).
    pub max_batch: usize,
    /// File log with `fsync`: zeros written ahead of the appends, so that
    /// an fdatasync syncs data only and no new file size
    /// (`tandem_log::FileLogConfig::preallocate_bytes`; 0 turns it off).
    pub write_ahead_bytes: u64,
    /// Amends this node appends carry a base (`tandem_core::Amend::base`):
    /// the order's count of based amends as this node's replica read it.
    /// Every replica refuses (`stale`) an amend whose base is not the
    /// order's count when it applies, so a second copy of one request (a
    /// client's or the edge's retry, or a copy delayed in a node's queue)
    /// never applies twice, whatever filled or changed between; a client
    /// may retry a `PATCH` whose answer it lost (the edge: after a node's 502–504). The cost: an
    /// amend sent to a node that has not yet applied the same order's
    /// previous amend is refused `stale` (send `x-tandem-min-seq` with the
    /// token of that answer). Off only while nodes of a version before
    /// bases (which ignore them and apply every copy) follow the same log;
    /// the base is in the record, so a log replays alike whatever this
    /// says.
    pub retry_safe_amends: bool,
    /// Kafka: longest time the broker holds a fetch at the tail
    /// (`fetch.wait.max.ms`), and the tail poll interval. Lower answers
    /// sooner at the cost of more idle fetches.
    pub kafka_fetch_wait_ms: u64,
    /// Kafka: further librdkafka properties for the node's producer,
    /// consumer and admin client (`[log.kafka_properties]`), e.g. the
    /// `security.protocol` and SASL settings a managed cluster needs. A
    /// value is a literal, `env:NAME` (the variable, read at start) or
    /// `file:/path` (the file's contents, trimmed, read at start). Secret
    /// properties ([`tandem_kafka::is_secret_property`]) must use `env:` or
    /// `file:`; the properties the log sets itself
    /// ([`tandem_kafka::RESERVED_PROPERTIES`]) are refused. Dotted TOML
    /// keys name one property: `sasl.username = "..."` and
    /// `"sasl.username" = "..."` are the same.
    #[serde(deserialize_with = "flat_properties")]
    pub kafka_properties: BTreeMap<String, String>,
}

/// Reads `[log.kafka_properties]`: nested TOML tables (what an unquoted
/// dotted key makes) are joined back with dots; numbers and booleans are
/// kept as their text, as librdkafka takes every value as a string.
fn flat_properties<'de, D>(d: D) -> Result<BTreeMap<String, String>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    fn flatten(
        prefix: &str,
        table: BTreeMap<String, toml::Value>,
        out: &mut BTreeMap<String, String>,
    ) -> Result<(), String> {
        for (k, v) in table {
            let name = if prefix.is_empty() {
                k
            } else {
                format!("{prefix}.{k}")
            };
            let text = match v {
                toml::Value::String(s) => s,
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                toml::Value::Float(f) => f.to_string(),
                toml::Value::Table(t) => {
                    flatten(&name, t.into_iter().collect(), out)?;
                    continue;
                }
                _ => {
                    return Err(format!(
                        "log.kafka_properties {name:?}: must be a string, number or boolean"
                    ))
                }
            };
            if out.insert(name.clone(), text).is_some() {
                return Err(format!("log.kafka_properties {name:?}: given twice"));
            }
        }
        Ok(())
    }
    let table = BTreeMap::<String, toml::Value>::deserialize(d)?;
    let mut out = BTreeMap::new();
    flatten("", table, &mut out).map_err(serde::de::Error::custom)?;
    Ok(out)
}

/// Where a `[log.kafka_properties]` value comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source<'a> {
    Literal(&'a str),
    Env(&'a str),
    File(&'a str),
}

fn source(value: &str) -> Source<'_> {
    if let Some(name) = value.strip_prefix("env:") {
        Source::Env(name)
    } else if let Some(path) = value.strip_prefix("file:") {
        Source::File(path)
    } else {
        Source::Literal(value)
    }
}

/// `[log.kafka_properties]` with every `env:` and `file:` value read: what
/// the Kafka clients are given. Its `Debug` prints `<redacted>` for the
/// values of secret properties, so it can be logged.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct KafkaProperties(pub Vec<(String, String)>);

impl std::fmt::Debug for KafkaProperties {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(self.0.iter().map(|(k, v)| {
                let v = if tandem_kafka::is_secret_property(k) {
                    "<redacted>"
                } else {
                    v.as_str()
                };
                (k, v)
            }))
            .finish()
    }
}

impl LogConfig {
    /// Reads the `env:` and `file:` values of `kafka_properties`; `env`
    /// looks a variable up (the process environment at start). An error
    /// names the property and the variable or file, never a value.
    pub fn resolve_kafka_properties(
        &self,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<KafkaProperties, ConfigError> {
        let mut out = Vec::with_capacity(self.kafka_properties.len());
        for (key, value) in &self.kafka_properties {
            let fail = |message: String| ConfigError::KafkaProperty {
                key: key.clone(),
                message,
            };
            let resolved = match source(value) {
                Source::Literal(v) => v.to_owned(),
                Source::Env(name) => env(name).ok_or_else(|| {
                    fail(format!(
                        "environment variable {name} is not set (or not UTF-8)"
                    ))
                })?,
                Source::File(path) => std::fs::read_to_string(path)
                    .map_err(|e| fail(format!("read file {path}: {e}")))?
                    .trim()
                    .to_owned(),
            };
            if resolved.is_empty() && !matches!(source(value), Source::Literal(_)) {
                return Err(fail(format!("{value} is empty")));
            }
            out.push((key.clone(), resolved));
        }
        Ok(KafkaProperties(out))
    }
}

/// Signed orders (`docs/signing.md`): what a signature is bound to and
/// how long it may be used.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SigningConfig {
    /// The chain id both schemes sign (the EIP-712 domain's `chainId`).
    /// Default 1, the chain Ethereum wallets are on by default (a wallet
    /// signs typed data only for the chain it is connected to). Two
    /// exchanges that must not accept each other's signatures use
    /// different values.
    pub chain_id: u64,
    /// Latest expiry accepted, in seconds after the node's clock: bounds
    /// how long a captured signed command can be replayed.
    pub max_expiry_secs: u64,
    /// Allowed clock difference between client and node, in seconds: an
    /// expiry up to this far in the past is still accepted (and this much
    /// beyond `max_expiry_secs`).
    pub clock_tolerance_secs: u64,
}

impl Default for SigningConfig {
    fn default() -> Self {
        SigningConfig {
            chain_id: 1,
            max_expiry_secs: 300,
            clock_tolerance_secs: 5,
        }
    }
}

/// When the replica writes snapshots.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SnapshotConfig {
    pub every_commands: u64,
    pub every_secs: u64,
    pub keep: usize,
    /// Periodic snapshots from a forked child, so order entry does not wait
    /// while one is written (Linux); memory may grow by the pages changed
    /// meanwhile (copy-on-write).
    pub background: bool,
    /// A directory laid out as a node's `data_dir` (a copy of another
    /// node's of the same log): a partition with no snapshot of its own
    /// starts from the newest one there (`seed`).
    pub seed_from: Option<PathBuf>,
}

/// A bound on everything a client controls.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Request bodies larger than this are `413`.
    pub max_body_bytes: usize,
    /// Open connections; one more is answered `503` and closed.
    pub max_connections: usize,
    /// Commands waiting to be appended per partition; beyond it `503`.
    pub max_pending: usize,
    /// Order entry per account: sustained requests per second and burst;
    /// beyond it `429`. 0 turns the limit off.
    pub account_rate: u32,
    pub account_burst: u32,
    /// Largest `depth` a book read may ask for.
    pub max_depth: usize,
    /// Markets the engine accepts (a place in a new market beyond it is
    /// rejected with reason `limit`).
    pub max_markets: u32,
    /// Live orders the engine holds (reason `limit` beyond it).
    pub max_live_orders: u32,
    /// Resting orders per account over all markets (reason `limit` beyond
    /// it). A rule of the state machine: every node must agree on it.
    pub max_open_orders_per_account: u32,
    /// Longest wait for `x-tandem-min-seq` or for the replica to apply an
    /// appended command before `503` with `retry-after`.
    pub wait_ms: u64,
    /// Accepted orders whose answer is kept for idempotent replays.
    pub idempotency_window: usize,
    /// Cancels and amends (the latest that took effect per order) whose
    /// answer is kept for idempotent replays.
    pub change_window: usize,
    /// Longest request head a client may send (bytes).
    pub max_header_bytes: usize,
    /// Market streams (WebSocket and gRPC) open at once; one more is 503.
    pub max_streams: usize,
    /// Chain checkpoints (`GET /v1/chain/{partition}`): the first applied
    /// seq at or after every multiple of this many seqs (`checkpoints`
    /// module doc). Every node of one log compared by a rollout must use
    /// the same value.
    pub checkpoint_every: u64,
    /// Newest chain checkpoints kept per partition (in memory and beside
    /// each snapshot).
    pub checkpoints_kept: usize,
    /// Order ids (every id ever taken: the registry keeps them for good)
    /// and resting orders each partition's engine sizes its tables for at
    /// start or restore, its memory written then. An engine that outgrows
    /// a table grows it while applying: the registry by `mremap`, its
    /// index a few lines an insert, so no command waits long, but each new
    /// page is faulted in while applying (up to 5 ms for a 2 MiB huge
    /// page on a VM that zeroes slowly); reserving moves that to start.
    /// 56 bytes an id plus its index slot, 32 an order.
    /// Not a rule of the state machine: nodes may differ. 0: grow as
    /// needed.
    pub reserve_ids: usize,
    pub reserve_orders: usize,
}

/// Connection handling.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// A keep-alive connection idle this long is closed by the node. It must
    /// be longer than the idle timeout of whatever pools connections to the
    /// node (edge, load balancer), so the pool always closes first and never
    /// sends on a connection the node is closing: the source's 502s came
    /// from a 20 s server timeout under a longer client one.
    pub idle_timeout_secs: u64,
    /// Time a client has to send a full request head.
    pub header_read_timeout_secs: u64,
    /// HTTP/2 (and gRPC) keep-alive pings: interval and how long to wait
    /// for the answer before closing.
    pub h2_keepalive_interval_secs: u64,
    pub h2_keepalive_timeout_secs: u64,
    /// On SIGTERM: how long in-flight requests may take before the node
    /// stops anyway.
    pub drain_timeout_secs: u64,
    /// On SIGTERM: how long the node keeps serving while `/readyz` already
    /// fails, so balancers stop sending before the listener closes.
    pub drain_grace_ms: u64,
    /// Threads serving connections (0 = one per CPU). Each log partition
    /// also has an appender and a replica thread of its own.
    pub worker_threads: usize,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            config_version: 1,
            listen: "127.0.0.1:8080".parse().expect("literal address"),
            node: "node-1".into(),
            cluster: "local".into(),
            zone: "local-a".into(),
            role: Role::Stable,
            auth: None,
            signing: SigningConfig::default(),
            version: env!("CARGO_PKG_VERSION").into(),
            data_dir: "data/node-1".into(),
            log: LogConfig::default(),
            snapshot: SnapshotConfig::default(),
            limits: Limits::default(),
            http: HttpConfig::default(),
            tls: None,
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            kind: LogKind::File,
            fsync: true,
            kafka_brokers: "127.0.0.1:9092".into(),
            kafka_topic: "tandem-orders".into(),
            kafka_partitions: 1,
            kafka_create_topic: false,
            kafka_replication: 3,
            kafka_min_insync_replicas: 2,
            max_batch: 1024,
            write_ahead_bytes: tandem_log::FileLogConfig::default().preallocate_bytes,
            retry_safe_amends: true,
            kafka_fetch_wait_ms: 2,
            kafka_properties: BTreeMap::new(),
        }
    }
}

impl Default for SnapshotConfig {
    fn default() -> Self {
        SnapshotConfig {
            every_commands: 1_000_000,
            every_secs: 300,
            keep: 3,
            background: true,
            seed_from: None,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 16 * 1024,
            max_connections: 10_000,
            max_pending: 65_536,
            account_rate: 2_000,
            account_burst: 4_000,
            max_depth: 1_000,
            max_markets: 4_000_000,
            max_live_orders: 20_000_000,
            max_open_orders_per_account: 100_000,
            wait_ms: 2_000,
            idempotency_window: 200_000,
            change_window: 200_000,
            max_header_bytes: 16 * 1024,
            max_streams: 1024,
            checkpoint_every: 1000,
            checkpoints_kept: 4096,
            reserve_ids: 0,
            reserve_orders: 0,
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            idle_timeout_secs: 620,
            header_read_timeout_secs: 10,
            h2_keepalive_interval_secs: 30,
            h2_keepalive_timeout_secs: 20,
            drain_timeout_secs: 20,
            drain_grace_ms: 2_000,
            worker_threads: 0,
        }
    }
}

/// A config that could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("read config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("environment variable {name}: {message}")]
    Env { name: String, message: String },
    #[error("{field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
    #[error("log.kafka_properties {key:?}: {message}")]
    KafkaProperty { key: String, message: String },
}

impl NodeConfig {
    /// Reads `file` (defaults when `None`) and applies the `TANDEM_*`
    /// variables of `env` on top, then checks the result.
    pub fn load(
        file: Option<&Path>,
        env: &BTreeMap<String, String>,
    ) -> Result<NodeConfig, ConfigError> {
        let mut cfg = match file {
            None => NodeConfig::default(),
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_path_buf(),
                    source,
                })?;
                NodeConfig::parse(&text).map_err(|message| ConfigError::Parse {
                    path: path.to_path_buf(),
                    message,
                })?
            }
        };
        cfg.apply_env(env)?;
        cfg.check()?;
        Ok(cfg)
    }

    /// Parses TOML text.
    pub fn parse(text: &str) -> Result<NodeConfig, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    /// The overrides a container platform sets most: `TANDEM_LISTEN`,
    /// `TANDEM_NODE`, `TANDEM_CLUSTER`, `TANDEM_ZONE`, `TANDEM_ROLE`,
    /// `TANDEM_VERSION`, `TANDEM_DATA_DIR`, `TANDEM_LOG_KIND`,
    /// `TANDEM_LOG_FSYNC`, `TANDEM_KAFKA_BROKERS`, `TANDEM_KAFKA_TOPIC`,
    /// `TANDEM_KAFKA_PARTITIONS`, `TANDEM_AUTH`.
    pub fn apply_env(&mut self, env: &BTreeMap<String, String>) -> Result<(), ConfigError> {
        fn parse<T: std::str::FromStr>(name: &str, v: &str) -> Result<T, ConfigError>
        where
            T::Err: std::fmt::Display,
        {
            v.parse().map_err(|e: T::Err| ConfigError::Env {
                name: name.into(),
                message: format!("{v:?}: {e}"),
            })
        }
        for (name, v) in env.iter().filter(|(k, _)| k.starts_with("TANDEM_")) {
            match name.as_str() {
                "TANDEM_LISTEN" => self.listen = parse(name, v)?,
                "TANDEM_NODE" => self.node = v.clone(),
                "TANDEM_CLUSTER" => self.cluster = v.clone(),
                "TANDEM_ZONE" => self.zone = v.clone(),
                "TANDEM_VERSION" => self.version = v.clone(),
                "TANDEM_DATA_DIR" => self.data_dir = v.into(),
                "TANDEM_ROLE" => {
                    self.role = match v.as_str() {
                        "stable" => Role::Stable,
                        "canary" => Role::Canary,
                        _ => {
                            return Err(ConfigError::Env {
                                name: name.clone(),
                                message: format!("{v:?}: expected stable or canary"),
                            })
                        }
                    }
                }
                "TANDEM_LOG_KIND" => {
                    self.log.kind = match v.as_str() {
                        "file" => LogKind::File,
                        "kafka" => LogKind::Kafka,
                        _ => {
                            return Err(ConfigError::Env {
                                name: name.clone(),
                                message: format!("{v:?}: expected file or kafka"),
                            })
                        }
                    }
                }
                "TANDEM_LOG_FSYNC" => self.log.fsync = parse(name, v)?,
                "TANDEM_AUTH" => {
                    self.auth = Some(match v.as_str() {
                        "signed" => AuthMode::Signed,
                        "none" => AuthMode::None,
                        _ => {
                            return Err(ConfigError::Env {
                                name: name.clone(),
                                message: format!("{v:?}: expected signed or none"),
                            })
                        }
                    })
                }
                "TANDEM_KAFKA_BROKERS" => self.log.kafka_brokers = v.clone(),
                "TANDEM_KAFKA_TOPIC" => self.log.kafka_topic = v.clone(),
                "TANDEM_KAFKA_PARTITIONS" => self.log.kafka_partitions = parse(name, v)?,
                // Other TANDEM_* variables belong to other tools.
                _ => {}
            }
        }
        Ok(())
    }

    /// Rejects values that cannot work, naming the field.
    pub fn check(&self) -> Result<(), ConfigError> {
        let bad = |field, message: &str| {
            Err(ConfigError::Invalid {
                field,
                message: message.into(),
            })
        };
        if self.config_version != 1 {
            return bad("config_version", "only version 1 exists");
        }
        for (field, v) in [
            ("node", &self.node),
            ("cluster", &self.cluster),
            ("zone", &self.zone),
            ("version", &self.version),
        ] {
            if v.is_empty() || v.len() > 128 || v.chars().any(|c| c.is_control()) {
                return bad(field, "must be 1 to 128 printable characters");
            }
        }
        if self.log.max_batch == 0 || self.log.max_batch > 65_535 {
            return bad("log.max_batch", "must be 1..=65535");
        }
        if self.log.kind == LogKind::Kafka && self.log.kafka_partitions == 0 {
            return bad("log.kafka_partitions", "must be at least 1");
        }
        if self.log.kafka_replication == 0 {
            return bad("log.kafka_replication", "must be at least 1");
        }
        if self.log.kafka_min_insync_replicas == 0
            || self.log.kafka_min_insync_replicas > self.log.kafka_replication
        {
            return bad(
                "log.kafka_min_insync_replicas",
                "must be 1..=log.kafka_replication (production: 2 of 3)",
            );
        }
        if self.limits.max_pending == 0 {
            return bad("limits.max_pending", "must be at least 1");
        }
        if self.limits.max_connections == 0 {
            return bad("limits.max_connections", "must be at least 1");
        }
        if self.limits.checkpoint_every == 0 {
            return bad("limits.checkpoint_every", "must be at least 1");
        }
        if self.limits.checkpoints_kept == 0 || self.limits.checkpoints_kept > 1 << 20 {
            return bad("limits.checkpoints_kept", "must be 1..=1048576");
        }
        if self.signing.chain_id == 0 {
            return bad("signing.chain_id", "must be at least 1");
        }
        if self.signing.max_expiry_secs == 0 || self.signing.max_expiry_secs > 86_400 {
            return bad("signing.max_expiry_secs", "must be 1..=86400");
        }
        if self.signing.clock_tolerance_secs > 300 {
            return bad("signing.clock_tolerance_secs", "must be 0..=300");
        }
        if let Some(t) = &self.tls {
            if t.cert.as_os_str().is_empty() {
                return bad("tls.cert", "must be a path to a PEM certificate");
            }
            if t.key.as_os_str().is_empty() {
                return bad("tls.key", "must be a path to a PEM private key");
            }
        }
        if self.snapshot.keep == 0 {
            return bad("snapshot.keep", "must be at least 1");
        }
        if let Some(from) = &self.snapshot.seed_from {
            if from.as_os_str().is_empty() {
                return bad(
                    "snapshot.seed_from",
                    "must be a directory laid out as a node's data_dir",
                );
            }
            if from == &self.data_dir {
                return bad(
                    "snapshot.seed_from",
                    "is this node's own data_dir: give a copy of another node's",
                );
            }
        }
        for (key, value) in &self.log.kafka_properties {
            let fail = |message: String| {
                Err(ConfigError::KafkaProperty {
                    key: key.clone(),
                    message,
                })
            };
            if key.is_empty() || key.trim() != key {
                return fail("not a property name".into());
            }
            if let Some(why) = tandem_kafka::reserved_property(key) {
                return fail(format!("may not be set: {why}"));
            }
            match source(value) {
                Source::Env(name) if name.is_empty() || name.contains('=') => {
                    return fail("env: needs a variable name".into())
                }
                Source::File(path) if !path.starts_with('/') => {
                    return fail("file: needs an absolute path".into())
                }
                Source::Literal(_) if tandem_kafka::is_secret_property(key) => {
                    return fail(
                        "is a secret: give it as \"env:NAME\" or \"file:/path\", \
                         never in the config file"
                            .into(),
                    )
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Who may enter orders: `auth` if given, else `signed` unless the
    /// listener is a loopback address.
    pub fn auth_mode(&self) -> AuthMode {
        match self.auth {
            Some(m) => m,
            None if self.listen.ip().is_loopback() => AuthMode::None,
            None => AuthMode::Signed,
        }
    }

    /// True when orders need no signature on a listener other hosts can
    /// reach: allowed only when `auth = "none"` is written, and warned
    /// about at start.
    pub fn unsigned_on_network(&self) -> bool {
        self.auth_mode() == AuthMode::None && !self.listen.ip().is_loopback()
    }

    /// The signing parameters of `signing`.
    pub fn auth_policy(&self) -> crate::auth::Policy {
        crate::auth::Policy::new(
            self.signing.chain_id,
            self.signing.max_expiry_secs,
            self.signing.clock_tolerance_secs,
        )
    }

    /// How many log partitions this node serves.
    pub fn partitions(&self) -> u32 {
        match self.log.kind {
            LogKind::File => 1,
            LogKind::Kafka => self.log.kafka_partitions,
        }
    }

    pub fn wait(&self) -> Duration {
        Duration::from_millis(self.limits.wait_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_default_file_is_the_default() {
        let text = include_str!("../../../deploy/node/tandem-node.toml");
        assert_eq!(NodeConfig::parse(text).unwrap(), NodeConfig::default());
    }

    #[test]
    fn environment_overrides_the_file() {
        let env: BTreeMap<String, String> = [
            ("TANDEM_ROLE", "canary"),
            ("TANDEM_LISTEN", "0.0.0.0:9000"),
            ("TANDEM_LOG_KIND", "kafka"),
            ("TANDEM_KAFKA_PARTITIONS", "4"),
            ("HOME", "/root"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let mut cfg = NodeConfig::parse("cluster = \"aws\"\n").unwrap();
        cfg.apply_env(&env).unwrap();
        assert_eq!(cfg.cluster, "aws");
        assert_eq!(cfg.role, Role::Canary);
        assert_eq!(cfg.listen.port(), 9000);
        assert_eq!(cfg.partitions(), 4);
    }

    /// Signed orders are the default wherever other hosts can connect;
    /// `none` there must be written (and `unsigned_on_network` makes the
    /// node warn).
    #[test]
    fn auth_defaults_to_signed_off_loopback() {
        let at = |listen: &str, auth: &str| {
            let cfg = NodeConfig::parse(&format!("listen = \"{listen}\"\n{auth}")).unwrap();
            cfg.check().unwrap();
            (cfg.auth_mode(), cfg.unsigned_on_network())
        };
        assert_eq!(at("127.0.0.1:1", ""), (AuthMode::None, false));
        assert_eq!(at("[::1]:1", ""), (AuthMode::None, false));
        assert_eq!(at("0.0.0.0:1", ""), (AuthMode::Signed, false));
        assert_eq!(at("10.1.2.3:1", ""), (AuthMode::Signed, false));
        assert_eq!(at("0.0.0.0:1", "auth = \"none\""), (AuthMode::None, true));
        assert_eq!(
            at("127.0.0.1:1", "auth = \"signed\""),
            (AuthMode::Signed, false)
        );
        let env = [("TANDEM_AUTH".to_string(), "signed".to_string())].into();
        let mut cfg = NodeConfig::default();
        cfg.apply_env(&env).unwrap();
        assert_eq!(cfg.auth_mode(), AuthMode::Signed);
        let env = [("TANDEM_AUTH".to_string(), "off".to_string())].into();
        assert!(cfg
            .apply_env(&env)
            .unwrap_err()
            .to_string()
            .contains("TANDEM_AUTH"));
        let err = NodeConfig::parse("auth = \"maybe\"\n").unwrap_err();
        assert!(err.contains("auth") || err.contains("maybe"), "{err}");
        let mut cfg = NodeConfig::default();
        cfg.signing.max_expiry_secs = 0;
        let err = cfg.check().unwrap_err().to_string();
        assert!(err.contains("signing.max_expiry_secs"), "{err}");
    }

    #[test]
    fn tls_is_optional_and_needs_cert_and_key() {
        assert_eq!(NodeConfig::default().tls, None);
        let cfg = NodeConfig::parse(
            "[tls]\ncert = \"/etc/tandem/node.crt\"\nkey = \"/etc/tandem/node.key\"\n",
        )
        .unwrap();
        cfg.check().unwrap();
        let t = cfg.tls.unwrap();
        assert_eq!((t.files().section.as_str(), t.client_ca), ("tls", None));
        let err = NodeConfig::parse("[tls]\ncert = \"/a\"\n").unwrap_err();
        assert!(err.contains("key"), "{err}");
        let err =
            NodeConfig::parse("[tls]\ncert = \"/a\"\nkey = \"/b\"\nca = \"/c\"\n").unwrap_err();
        assert!(err.contains("ca"), "{err}");
        let cfg = NodeConfig::parse("[tls]\ncert = \"\"\nkey = \"/b\"\n").unwrap();
        assert!(cfg
            .check()
            .unwrap_err()
            .to_string()
            .starts_with("tls.cert:"));
        // The shipped file's commented `[tls]` section is this struct.
        let text = include_str!("../../../deploy/node/tandem-node.toml");
        let section: String = text
            .lines()
            .skip_while(|l| *l != "# [tls]")
            .map_while(|l| l.strip_prefix("# "))
            .map(|l| format!("{l}\n"))
            .collect();
        let t = NodeConfig::parse(&section).unwrap().tls.unwrap();
        assert_eq!(
            t.client_ca.as_deref(),
            Some(Path::new("/etc/tandem/tls/edges-ca.crt"))
        );
    }

    #[test]
    fn a_seed_is_optional_and_not_the_nodes_own_data_dir() {
        assert_eq!(NodeConfig::default().snapshot.seed_from, None);
        let cfg = NodeConfig::parse(
            "data_dir = \"/var/lib/tandem\"\n[snapshot]\nseed_from = \"/seed\"\n",
        )
        .unwrap();
        cfg.check().unwrap();
        assert_eq!(cfg.snapshot.seed_from.as_deref(), Some(Path::new("/seed")));
        for (seed, want) in [
            ("", "must be a directory"),
            ("/var/lib/tandem", "own data_dir"),
        ] {
            let cfg = NodeConfig::parse(&format!(
                "data_dir = \"/var/lib/tandem\"\n[snapshot]\nseed_from = \"{seed}\"\n"
            ))
            .unwrap();
            let e = cfg.check().unwrap_err().to_string();
            assert!(
                e.starts_with("snapshot.seed_from:") && e.contains(want),
                "{e}"
            );
        }
    }

    #[test]
    fn bad_values_name_the_field() {
        let err = NodeConfig::parse("[limits]\nmax_body_bytes = \"big\"\n").unwrap_err();
        assert!(err.contains("max_body_bytes"), "{err}");
        let err = NodeConfig::parse("listn = \"x\"\n").unwrap_err();
        assert!(err.contains("listn"), "{err}");
        let env = [("TANDEM_ROLE".to_string(), "blue".to_string())].into();
        let err = NodeConfig::default().apply_env(&env).unwrap_err();
        assert!(err.to_string().contains("TANDEM_ROLE"), "{err}");
        let mut cfg = NodeConfig::default();
        cfg.log.max_batch = 0;
        assert!(cfg
            .check()
            .unwrap_err()
            .to_string()
            .contains("log.max_batch"));
        let mut cfg = NodeConfig::default();
        cfg.log.kafka_replication = 1;
        let err = cfg.check().unwrap_err().to_string();
        assert!(err.contains("log.kafka_min_insync_replicas"), "{err}");
    }

    /// Production topic settings unless asked otherwise: the node never
    /// creates a topic by default, and creates one only with replication 3
    /// and `min.insync.replicas` 2 (deploy/kafka/README.md).
    #[test]
    fn kafka_topic_creation_is_explicit_and_replicated() {
        let l = NodeConfig::default().log;
        assert!(!l.kafka_create_topic);
        assert_eq!((l.kafka_replication, l.kafka_min_insync_replicas), (3, 2));
    }

    /// `[log.kafka_properties]` from TOML text, checked.
    fn kafka_config(props: &str) -> Result<NodeConfig, String> {
        let cfg = NodeConfig::parse(&format!("[log.kafka_properties]\n{props}"))?;
        cfg.check().map_err(|e| e.to_string())?;
        Ok(cfg)
    }

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn kafka_properties_read_dotted_and_quoted_keys_and_scalars() {
        let cfg = kafka_config(
            "\"client.id\" = \"node-1\"\nsocket.keepalive.enable = true\n\
             socket.connection.setup.timeout.ms = 5000\n",
        )
        .unwrap();
        let props = cfg.log.resolve_kafka_properties(&no_env).unwrap();
        assert_eq!(
            props.0,
            [
                ("client.id", "node-1"),
                ("socket.connection.setup.timeout.ms", "5000"),
                ("socket.keepalive.enable", "true"),
            ]
            .map(|(k, v)| (k.to_string(), v.to_string()))
        );
        let err = kafka_config("\"a.b\" = \"x\"\na.b = \"y\"\n").unwrap_err();
        assert!(err.contains("a.b"), "{err}");
        let err = kafka_config("\"client.id\" = [1]\n").unwrap_err();
        assert!(err.contains("client.id"), "{err}");
    }

    #[test]
    fn kafka_properties_read_env_and_file_values() {
        let dir = std::env::temp_dir().join(format!("tandem-kprops-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let secret_file = dir.join("password");
        std::fs::write(&secret_file, "  s3cret-from-file\n").unwrap();
        let cfg = kafka_config(&format!(
            "\"sasl.username\" = \"env:KAFKA_USER\"\n\"sasl.password\" = \"file:{}\"\n",
            secret_file.display()
        ))
        .unwrap();
        let env = |name: &str| (name == "KAFKA_USER").then(|| "api-key-1".to_string());
        let props = cfg.log.resolve_kafka_properties(&env).unwrap();
        assert_eq!(
            props.0,
            [
                ("sasl.password", "s3cret-from-file"),
                ("sasl.username", "api-key-1"),
            ]
            .map(|(k, v)| (k.to_string(), v.to_string()))
        );

        // A missing variable names the property and the variable.
        let err = cfg
            .log
            .resolve_kafka_properties(&no_env)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("\"sasl.username\"") && err.contains("KAFKA_USER"),
            "{err}"
        );
        // An empty variable is refused without printing anything of it.
        let empty = |_: &str| Some(String::new());
        let err = cfg
            .log
            .resolve_kafka_properties(&empty)
            .unwrap_err()
            .to_string();
        assert!(err.contains("env:KAFKA_USER is empty"), "{err}");
        // A missing file names the property and the path.
        std::fs::remove_file(&secret_file).unwrap();
        let err = cfg
            .log
            .resolve_kafka_properties(&env)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("\"sasl.password\"") && err.contains(&secret_file.display().to_string()),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn literal_secrets_are_refused() {
        for key in [
            "sasl.password",
            "ssl.key.password",
            "ssl.key.pem",
            "sasl.oauthbearer.client.secret",
        ] {
            let err = kafka_config(&format!("\"{key}\" = \"hunter2\"\n")).unwrap_err();
            assert!(
                err.contains(&format!("{key:?}")) && err.contains("secret"),
                "{err}"
            );
            assert!(!err.contains("hunter2"), "{err}");
            kafka_config(&format!("\"{key}\" = \"env:KAFKA_SECRET\"\n")).unwrap();
            kafka_config(&format!("\"{key}\" = \"file:/run/secrets/k\"\n")).unwrap();
        }
        // A path to a key is not the key.
        kafka_config("\"ssl.key.location\" = \"/etc/tandem/client.key\"\n").unwrap();
        let err = kafka_config("\"sasl.password\" = \"file:relative\"\n").unwrap_err();
        assert!(err.contains("absolute"), "{err}");
        let err = kafka_config("\"sasl.password\" = \"env:\"\n").unwrap_err();
        assert!(err.contains("variable name"), "{err}");
    }

    #[test]
    fn properties_the_log_sets_are_refused() {
        for key in [
            "enable.idempotence",
            "acks",
            "request.required.acks",
            "enable.auto.commit",
            "isolation.level",
            "bootstrap.servers",
            "delivery.timeout.ms",
            "transactional.id",
        ] {
            let err = kafka_config(&format!("\"{key}\" = \"1\"\n")).unwrap_err();
            assert!(
                err.contains(&format!("{key:?}")) && err.contains("may not be set"),
                "{err}"
            );
        }
    }

    #[test]
    fn debug_of_resolved_properties_redacts_secrets() {
        let props = KafkaProperties(
            [
                ("sasl.username", "api-key-1"),
                ("sasl.password", "hunter2"),
                ("ssl.key.pem", "-----BEGIN PRIVATE KEY-----"),
                ("security.protocol", "SASL_SSL"),
            ]
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .into(),
        );
        let d = format!("{props:?}");
        assert!(!d.contains("hunter2") && !d.contains("PRIVATE"), "{d}");
        assert_eq!(d.matches("<redacted>").count(), 2, "{d}");
        assert!(d.contains("api-key-1") && d.contains("SASL_SSL"), "{d}");
        // The raw config holds references only (literal secrets are
        // refused), so its derived Debug prints no secret either.
        let cfg = kafka_config("\"sasl.password\" = \"env:KAFKA_SECRET\"\n").unwrap();
        assert!(format!("{cfg:?}").contains("env:KAFKA_SECRET"));
    }
}
