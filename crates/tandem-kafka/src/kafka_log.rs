//! [`KafkaLog`]: one partition of a Kafka topic as a [`Log`].
//!
//! Writes go through one idempotent producer (`acks=all`, no transactions),
//! replaced by a fresh one after any failed delivery; each `append` is one
//! message and waits for its delivery report. Reads go through one consumer
//! that is assigned, never subscribed (it joins no group and commits no
//! offsets), positioned at the offset a seq names ([`crate::seq`]); the
//! last message read is kept so paging through a batch does not fetch it
//! again. `wait_for` follows the tail with that consumer (its fetch waits
//! at the broker for the next message), and keeps what it read for the
//! `read_from` that follows.
//! The newest message known (appended here, or read) is cached by offset:
//! `read_from` up to it asks the broker for no watermarks, and `last_seq`
//! costs one watermark request unless someone else appended.
//! This instance's own recent appends are kept by offset too (the last
//! [`OWN_KEEP`]): the broker holds exactly the bytes it acknowledged at
//! that offset, so a read that reaches one takes it from memory instead of
//! waiting for the consumer to fetch it back (on tansu that fetch was most
//! of an order's latency), and the consumer is not moved: it reads past
//! such messages and drops them.

use std::collections::VecDeque;
use std::io;
use std::path::PathBuf;
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};
use tandem_log::{Log, LogError, Record};

use crate::frame;
use crate::seq::{seq_for, split_seq, MAX_BATCH_RECORDS};

/// Where the log is and how long to wait for it. Its `Debug` prints
/// `<redacted>` for the values of secret client properties
/// ([`is_secret_property`]).
#[derive(Clone)]
pub struct KafkaLogConfig {
    /// `bootstrap.servers`: `host:port[,host:port...]`.
    pub bootstrap_servers: String,
    /// The topic; it must exist (see [`crate::create_topic`]).
    pub topic: String,
    /// The one partition of `topic` this log is.
    pub partition: u32,
    /// How long an append may wait for the broker's acknowledgement,
    /// retries included (librdkafka `message.timeout.ms`, which
    /// `delivery.timeout.ms` aliases). Past it the append is an error.
    pub delivery_timeout: Duration,
    /// How long a metadata, watermark or fetch request may take.
    pub request_timeout: Duration,
    /// How long the producer waits to gather concurrent appends into one
    /// request (`linger.ms`).
    pub linger: Duration,
    /// Most bytes of one framed batch (one Kafka message value): the limit
    /// on one `append` ([`LogError::BatchTooLarge`]). The topic's
    /// `max.message.bytes` must exceed it by Kafka's batch overhead (64 KiB
    /// is plenty); see deploy/kafka/README.md.
    pub max_message_bytes: usize,
    /// How long the broker may hold the reader's fetch at the tail
    /// (`fetch.wait.max.ms`). A read at another position waits for that
    /// outstanding fetch first, so this bounds the latency of a seek; lower
    /// means more idle fetch requests while the reader sits at the tail.
    pub fetch_wait: Duration,
    /// Further librdkafka properties for both clients (e.g. security
    /// settings). None may be one of [`RESERVED_PROPERTIES`]: `open`
    /// refuses them.
    pub client_properties: Vec<(String, String)>,
}

/// librdkafka properties the log sets itself (or that would change what it
/// relies on), with why; `client_properties` may not name them. Aliases are
/// listed too: librdkafka would take whichever of two aliases it is given
/// last, and the order of `ClientConfig`'s map is not defined.
pub const RESERVED_PROPERTIES: &[(&str, &str)] = &[
    (
        "bootstrap.servers",
        "set from the log's brokers (log.kafka_brokers)",
    ),
    (
        "metadata.broker.list",
        "alias of bootstrap.servers, set from log.kafka_brokers",
    ),
    (
        "enable.idempotence",
        "the log's producer is idempotent: retries never duplicate a batch",
    ),
    (
        "acks",
        "the log needs acks=all: an append is acknowledged by all in-sync replicas",
    ),
    (
        "request.required.acks",
        "alias of acks, which the log sets to all",
    ),
    (
        "transactional.id",
        "the log does not use Kafka transactions",
    ),
    ("message.timeout.ms", "set from the log's delivery timeout"),
    (
        "delivery.timeout.ms",
        "alias of message.timeout.ms, set from the log's delivery timeout",
    ),
    ("request.timeout.ms", "set from the log's request timeout"),
    ("socket.timeout.ms", "set from the log's request timeout"),
    ("linger.ms", "set by the log"),
    (
        "queue.buffering.max.ms",
        "alias of linger.ms, set by the log",
    ),
    ("message.max.bytes", "set from the log's batch size limit"),
    ("compression.type", "the log's batches are not compressed"),
    (
        "compression.codec",
        "alias of compression.type; the log's batches are not compressed",
    ),
    (
        "group.id",
        "the log's reader is assigned, never subscribed, under a fixed group",
    ),
    (
        "enable.auto.commit",
        "the log's reader never commits offsets",
    ),
    (
        "enable.auto.offset.store",
        "the log's reader never stores offsets",
    ),
    (
        "enable.partition.eof",
        "the log's reader relies on no end-of-partition events",
    ),
    (
        "auto.offset.reset",
        "the log's reader must report a missing offset, never jump",
    ),
    ("isolation.level", "the log reads every acknowledged batch"),
    ("check.crcs", "the log's reader checks CRCs"),
    ("fetch.wait.max.ms", "set from log.kafka_fetch_wait_ms"),
    (
        "fetch.message.max.bytes",
        "set from the log's batch size limit",
    ),
    (
        "max.partition.fetch.bytes",
        "alias of fetch.message.max.bytes, set by the log",
    ),
    ("fetch.max.bytes", "set from the log's batch size limit"),
    (
        "receive.message.max.bytes",
        "set from the log's batch size limit",
    ),
];

/// Why `name` may not be passed as a client property, if it may not.
pub fn reserved_property(name: &str) -> Option<&'static str> {
    RESERVED_PROPERTIES
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name.trim()))
        .map(|(_, why)| *why)
}

/// Whether a property's value is a secret (never written in a config file,
/// never printed): its name contains `password`, `secret` or `key`, or it
/// is `sasl.oauthbearer.config` (which may carry a client secret). Names
/// whose value is a path (`*.location`, `sasl.kerberos.keytab`) are not.
pub fn is_secret_property(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    if n.ends_with(".location") || n.ends_with(".keytab") {
        return false;
    }
    n.contains("password")
        || n.contains("secret")
        || n.contains("key")
        || n == "sasl.oauthbearer.config"
}

/// Prints `<redacted>` for the value of a secret property.
pub(crate) struct Redacted<'a>(pub &'a [(String, String)]);

impl std::fmt::Debug for Redacted<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(self.0.iter().map(|(k, v)| {
                let v = if is_secret_property(k) {
                    "<redacted>"
                } else {
                    v.as_str()
                };
                (k, v)
            }))
            .finish()
    }
}

impl std::fmt::Debug for KafkaLogConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaLogConfig")
            .field("bootstrap_servers", &self.bootstrap_servers)
            .field("topic", &self.topic)
            .field("partition", &self.partition)
            .field("delivery_timeout", &self.delivery_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("linger", &self.linger)
            .field("max_message_bytes", &self.max_message_bytes)
            .field("fetch_wait", &self.fetch_wait)
            .field("client_properties", &Redacted(&self.client_properties))
            .finish()
    }
}

/// Refuses client properties the log sets itself, naming the first.
pub(crate) fn check_client_properties(props: &[(String, String)]) -> Result<(), LogError> {
    for (k, _) in props {
        if let Some(why) = reserved_property(k) {
            return Err(LogError::InvalidConfig(format!(
                "client property {k:?} may not be set: {why}"
            )));
        }
    }
    Ok(())
}

impl KafkaLogConfig {
    /// Defaults for the given place.
    pub fn new(bootstrap_servers: &str, topic: &str, partition: u32) -> KafkaLogConfig {
        KafkaLogConfig {
            bootstrap_servers: bootstrap_servers.to_owned(),
            topic: topic.to_owned(),
            partition,
            delivery_timeout: Duration::from_secs(30),
            request_timeout: Duration::from_secs(10),
            linger: Duration::from_millis(1),
            max_message_bytes: 8 << 20,
            fetch_wait: Duration::from_millis(10),
            client_properties: Vec::new(),
        }
    }
}

/// Kafka's per-message overhead allowed on top of `max_message_bytes` in the
/// clients' own limits (record batch header, record header, varints).
pub(crate) const KAFKA_OVERHEAD_BYTES: usize = 64 << 10;

/// What the delivery callback hands back to the waiting `append`.
type Delivery = Result<(i32, i64), KafkaError>;

/// Routes each delivery report to the `append` that is waiting for it, and
/// keeps the client's last few warnings and errors: librdkafka reports why
/// a connection failed (refused, TLS handshake, authentication) there, not
/// in the failed request's error.
#[derive(Default)]
struct DeliveryContext {
    recent: Mutex<Vec<String>>,
}

impl DeliveryContext {
    const KEPT: usize = 3;

    fn note(&self, line: String) {
        let mut recent = lock(&self.recent);
        if !recent.contains(&line) {
            if recent.len() == Self::KEPT {
                recent.remove(0);
            }
            recent.push(line);
        }
    }

    /// The kept lines, oldest first, or `None`.
    fn recent(&self) -> Option<String> {
        let recent = lock(&self.recent);
        (!recent.is_empty()).then(|| recent.join("; "))
    }
}

impl ClientContext for DeliveryContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        if matches!(
            level,
            RDKafkaLogLevel::Emerg
                | RDKafkaLogLevel::Alert
                | RDKafkaLogLevel::Critical
                | RDKafkaLogLevel::Error
                | RDKafkaLogLevel::Warning
        ) {
            self.note(format!("{fac}: {message}"));
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.note(format!("{error}: {reason}"));
    }
}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = Box<SyncSender<Delivery>>;

    fn delivery(&self, result: &DeliveryResult<'_>, tx: Self::DeliveryOpaque) {
        let d = match result {
            Ok(m) => Ok((m.partition(), m.offset())),
            Err((e, _)) => Err(e.clone()),
        };
        // The receiver is gone only if its append already gave up.
        let _ = tx.send(d);
    }
}

type KafkaProducer = ThreadedProducer<DeliveryContext>;

/// The current producer and how many were made before it. After a failed
/// delivery the producer is replaced: librdkafka's idempotent producer
/// would otherwise bump its epoch (KIP-360), which tansu 0.6 does not
/// support, or may be fenced for good after a fatal error. A new producer
/// is a new idempotence session; appends that failed may or may not be in
/// the log, as always.
struct Session {
    producer: Arc<KafkaProducer>,
    generation: u64,
}

/// How many of this instance's own appends are kept for reads (see the
/// module doc): enough for every append a node has in flight.
pub const OWN_KEEP: usize = 64;

/// How far ahead of the consumer's position a read may start without a
/// seek: the messages between are read and dropped (they were served from
/// the own appends), which is cheaper than a seek that throws away what
/// the consumer has already fetched.
const READ_AHEAD_WITHOUT_SEEK: i64 = OWN_KEEP as i64;

/// The newest message seen: its offset and the seq of its last record.
#[derive(Debug, Clone, Copy)]
struct Tail {
    offset: i64,
    last_seq: u64,
}

/// The reading consumer and what it has buffered.
struct Reader {
    consumer: BaseConsumer,
    /// Offset the consumer delivers next, if it is positioned.
    next_offset: Option<i64>,
    /// The last message read: its offset and value.
    last_message: Option<(i64, Vec<u8>)>,
    /// The position the consumer was read at when it delivered
    /// `last_message`: that message is the first at an offset >= every
    /// position from here up to its own offset (offsets may have holes).
    last_from: i64,
}

impl Reader {
    /// The held message, if it is the first message at an offset >= `from`.
    fn held(&self, from: i64) -> Option<(i64, &[u8])> {
        match &self.last_message {
            Some((o, v)) if self.last_from <= from && from <= *o => Some((*o, v)),
            _ => None,
        }
    }
}

/// One partition of a Kafka topic as a [`Log`]. See the crate docs for the
/// seq scheme and guarantees.
pub struct KafkaLog {
    config: KafkaLogConfig,
    partition: i32,
    /// `kafka://servers/topic/partition`, for errors.
    target: String,
    /// Settings of the producer, to make a new one after a failure.
    producer_config: ClientConfig,
    producer: Mutex<Session>,
    reader: Mutex<Reader>,
    tail: Mutex<Option<Tail>>,
    /// This instance's last [`OWN_KEEP`] appends: (offset, message value),
    /// offsets increasing.
    own: Mutex<VecDeque<(i64, Vec<u8>)>>,
    /// Last `first_seq` read from the broker, for when it cannot be asked.
    first_seq: Mutex<u64>,
    /// Names this log instance in batch tokens (see `frame`).
    instance: u64,
    /// Appends made by this instance, for batch tokens.
    appends: std::sync::atomic::AtomicU64,
    /// `kafka:<cluster id>/<topic>` (see [`Log::identity`]).
    identity: String,
}

impl std::fmt::Debug for KafkaLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaLog")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

/// Wraps a client error as the log's I/O error (timeouts as
/// `io::ErrorKind::TimedOut`), naming the operation and the partition.
pub(crate) fn kafka_error(op: &'static str, target: &str, e: KafkaError) -> LogError {
    kafka_error_after(op, target, e, None)
}

/// [`kafka_error`], with the client's last warnings and errors appended.
fn kafka_error_after(
    op: &'static str,
    target: &str,
    e: KafkaError,
    last: Option<String>,
) -> LogError {
    let timed_out = matches!(
        e.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::MessageTimedOut
                | RDKafkaErrorCode::RequestTimedOut
                | RDKafkaErrorCode::OperationTimedOut
        )
    );
    let kind = if timed_out {
        io::ErrorKind::TimedOut
    } else {
        io::ErrorKind::Other
    };
    let source = match last {
        None => io::Error::new(kind, e),
        Some(last) => io::Error::new(kind, format!("{e} (client's last warnings: {last})")),
    };
    LogError::Io {
        op,
        path: PathBuf::from(target),
        source: Arc::new(source),
    }
}

/// Consumer errors that only say the connection is (or was) down.
fn is_transient(e: &KafkaError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::AllBrokersDown
                | RDKafkaErrorCode::BrokerTransportFailure
                | RDKafkaErrorCode::NetworkException
                | RDKafkaErrorCode::RequestTimedOut
                | RDKafkaErrorCode::NotLeaderForPartition
                | RDKafkaErrorCode::LeaderNotAvailable
        )
    )
}

fn timed_out(op: &'static str, target: &str, what: &str) -> LogError {
    LogError::Io {
        op,
        path: PathBuf::from(target),
        source: Arc::new(io::Error::new(io::ErrorKind::TimedOut, what.to_owned())),
    }
}

fn millis(d: Duration) -> String {
    d.as_millis().max(1).to_string()
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding these locks leaves nothing half-updated that
    // matters (caches only), so a poisoned lock is still usable.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl KafkaLog {
    /// Connects to the partition. Fails if the topic or the partition does
    /// not exist or the broker does not answer within `request_timeout`.
    pub fn open(config: KafkaLogConfig) -> Result<KafkaLog, LogError> {
        let partition = i32::try_from(config.partition)
            .map_err(|_| LogError::InvalidConfig(format!("partition {}", config.partition)))?;
        if config.max_message_bytes <= frame::HEADER_BYTES
            || config.max_message_bytes > (i32::MAX as usize) - KAFKA_OVERHEAD_BYTES
        {
            return Err(LogError::InvalidConfig(format!(
                "max_message_bytes {} outside {}..2 GiB",
                config.max_message_bytes,
                frame::HEADER_BYTES + 1
            )));
        }
        check_client_properties(&config.client_properties)?;
        let target = format!(
            "kafka://{}/{}/{}",
            config.bootstrap_servers, config.topic, config.partition
        );
        let err = |op| {
            let target = target.clone();
            move |e| kafka_error(op, &target, e)
        };

        let limit = (config.max_message_bytes + KAFKA_OVERHEAD_BYTES).to_string();
        let mut common = ClientConfig::new();
        for (k, v) in &config.client_properties {
            common.set(k, v);
        }
        common
            .set("bootstrap.servers", &config.bootstrap_servers)
            .set("socket.timeout.ms", millis(config.request_timeout));

        let mut p = common.clone();
        // Without it the `rdkafka` crate follows the `log` crate's level,
        // which is off in a process with no logger: the producer's context
        // would hear nothing of failed connections.
        p.set_log_level(RDKafkaLogLevel::Warning);
        p.set("enable.idempotence", "true")
            .set("acks", "all")
            .set("message.timeout.ms", millis(config.delivery_timeout))
            .set("request.timeout.ms", millis(config.request_timeout))
            .set("linger.ms", millis(config.linger))
            .set("message.max.bytes", &limit)
            .set("compression.type", "none");
        let producer: KafkaProducer = p
            .create_with_context(DeliveryContext::default())
            .map_err(err("create producer"))?;

        let fetch = (config.max_message_bytes + KAFKA_OVERHEAD_BYTES).to_string();
        let receive = (config.max_message_bytes + 2 * KAFKA_OVERHEAD_BYTES).to_string();
        let mut c = common;
        // librdkafka's assign() needs a group id; the reader never
        // subscribes (so never joins the group) and never commits.
        c.set("group.id", "tandem-log-reader")
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "false")
            // Never jump elsewhere when an offset is gone: report it.
            .set("auto.offset.reset", "error")
            .set("check.crcs", "true")
            .set("fetch.wait.max.ms", millis(config.fetch_wait))
            .set("fetch.message.max.bytes", &fetch)
            .set("fetch.max.bytes", &fetch)
            .set("message.max.bytes", &fetch)
            .set("receive.message.max.bytes", &receive);
        let consumer: BaseConsumer = c.create().map_err(err("create consumer"))?;

        let metadata = producer
            .client()
            .fetch_metadata(Some(&config.topic), config.request_timeout)
            .map_err(|e| {
                // The client's own error (e.g. "SSL handshake failed") says
                // more than the request's; it arrives through the producer's
                // polling thread, possibly just after the request failed.
                let context = producer.context();
                let deadline = Instant::now() + Duration::from_secs(1);
                let mut last = context.recent();
                while last.is_none() && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(20));
                    last = context.recent();
                }
                kafka_error_after("metadata", &target, e, last)
            })?;
        let Some(topic) = metadata.topics().iter().find(|t| t.name() == config.topic) else {
            return Err(LogError::InvalidConfig(missing_topic(
                &config.bootstrap_servers,
                &config.topic,
            )));
        };
        if let Some(e) = topic.error() {
            return Err(kafka_error(
                "metadata",
                &target,
                KafkaError::MetadataFetch(e.into()),
            ));
        }
        if !topic.partitions().iter().any(|p| p.id() == partition) {
            return Err(LogError::InvalidConfig(format!(
                "{target}: topic has {} partitions",
                topic.partitions().len()
            )));
        }

        // The cluster id names the cluster whatever address reached it, so
        // two nodes that bootstrap through different hosts still agree.
        let identity = log_identity(
            producer.client().fetch_cluster_id(config.request_timeout),
            &config.bootstrap_servers,
            &config.topic,
        );
        let log = KafkaLog {
            identity,
            config,
            partition,
            target,
            producer_config: p,
            producer: Mutex::new(Session {
                producer: Arc::new(producer),
                generation: 0,
            }),
            reader: Mutex::new(Reader {
                consumer,
                next_offset: None,
                last_message: None,
                last_from: 0,
            }),
            tail: Mutex::new(None),
            own: Mutex::new(VecDeque::with_capacity(OWN_KEEP)),
            first_seq: Mutex::new(1),
            instance: instance_id(),
            appends: std::sync::atomic::AtomicU64::new(0),
        };
        // Fail now, not at the first use, if the partition cannot be read.
        log.try_last_seq()?;
        Ok(log)
    }

    /// The partition's low and high watermarks.
    fn watermarks(&self) -> Result<(i64, i64), LogError> {
        let (low, high) = self
            .producer()
            .0
            .client()
            .fetch_watermarks(
                &self.config.topic,
                self.partition,
                self.config.request_timeout,
            )
            .map_err(|e| kafka_error("watermarks", &self.target, e))?;
        let first = if low <= 0 { 1 } else { seq_for(low, 0) };
        *lock(&self.first_seq) = first;
        Ok((low.max(0), high.max(0)))
    }

    /// The current producer and its generation.
    fn producer(&self) -> (Arc<KafkaProducer>, u64) {
        let s = lock(&self.producer);
        (Arc::clone(&s.producer), s.generation)
    }

    /// Replaces the producer of `generation` after a failed delivery (once,
    /// however many appends failed with it). If a new one cannot be made,
    /// the old one stays and the next failure tries again.
    fn replace_producer(&self, generation: u64) {
        let mut s = lock(&self.producer);
        if s.generation != generation {
            return;
        }
        if let Ok(p) = self
            .producer_config
            .create_with_context(DeliveryContext::default())
        {
            s.producer = Arc::new(p);
            s.generation += 1;
        }
    }

    /// Keeps an acknowledged append of this instance (see `own`).
    fn note_own(&self, offset: i64, value: Vec<u8>) {
        let mut own = lock(&self.own);
        // Appends from several threads may be acknowledged out of order.
        let at = own.partition_point(|(o, _)| *o < offset);
        if own.get(at).is_some_and(|(o, _)| *o == offset) {
            return;
        }
        own.insert(at, (offset, value));
        while own.len() > OWN_KEEP {
            own.pop_front();
        }
    }

    /// This instance's own append at exactly `offset`, if still kept.
    fn own_at(&self, offset: i64) -> Option<Vec<u8>> {
        let own = lock(&self.own);
        let at = own.partition_point(|(o, _)| *o < offset);
        own.get(at)
            .filter(|(o, _)| *o == offset)
            .map(|(_, v)| v.clone())
    }

    /// Records the newest message known, if newer than the cached one.
    fn note_tail(&self, offset: i64, count: u32) {
        let mut tail = lock(&self.tail);
        if tail.is_none_or(|t| t.offset < offset) {
            *tail = Some(Tail {
                offset,
                last_seq: seq_for(offset, count - 1),
            });
        }
    }

    fn try_last_seq(&self) -> Result<u64, LogError> {
        let (_, high) = self.watermarks()?;
        if high == 0 {
            return Ok(0);
        }
        let newest = high - 1;
        if let Some(t) = *lock(&self.tail) {
            if t.offset == newest {
                return Ok(t.last_seq);
            }
        }
        let mut reader = lock(&self.reader);
        let (offset, count) = self.with_message(&mut reader, newest, newest, |o, v| {
            Ok((o, frame::count(v).map_err(|r| self.corrupt(o, r))?))
        })?;
        drop(reader);
        self.note_tail(offset, count);
        Ok(seq_for(offset, count - 1))
    }

    fn corrupt(&self, offset: i64, reason: String) -> LogError {
        LogError::Corrupt {
            segment: PathBuf::from(&self.target),
            offset: u64::try_from(offset).unwrap_or(0),
            reason,
        }
    }

    /// Positions the consumer to deliver `offset` next, or leaves it a
    /// little behind (at most `READ_AHEAD_WITHOUT_SEEK`): `poll_from`
    /// drops the messages below the offset it wants.
    fn seek(&self, reader: &mut Reader, offset: i64) -> Result<(), LogError> {
        if reader
            .next_offset
            .is_some_and(|n| n <= offset && offset - n <= READ_AHEAD_WITHOUT_SEEK)
        {
            return Ok(());
        }
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&self.config.topic, self.partition, Offset::Offset(offset))
            .and_then(|()| reader.consumer.assign(&tpl))
            .map_err(|e| kafka_error("assign", &self.target, e))?;
        reader.next_offset = Some(offset);
        Ok(())
    }

    /// Calls `f` with the first message at an offset >= `from` (offsets may
    /// have holes). The caller knows a message exists at `newest >= from`;
    /// `newest` only names the range in a timeout error.
    fn with_message<T>(
        &self,
        reader: &mut Reader,
        from: i64,
        newest: i64,
        f: impl FnOnce(i64, &[u8]) -> Result<T, LogError>,
    ) -> Result<T, LogError> {
        if let Some((o, v)) = reader.held(from) {
            return f(o, v);
        }
        let deadline = Instant::now() + self.config.request_timeout;
        let mut transient = None;
        match self.poll_from(reader, from, Some(deadline), &mut transient)? {
            Some((o, v)) => f(o, v),
            None => {
                reader.next_offset = None;
                Err(match transient {
                    Some(e) => kafka_error("fetch", &self.target, e),
                    None => timed_out(
                        "fetch",
                        &self.target,
                        &format!("no message at offsets {from}..={newest}"),
                    ),
                })
            }
        }
    }

    /// Reads the first message at an offset >= `from` and holds it:
    /// `None` if none came by `deadline` (connection trouble meanwhile is
    /// left in `transient`). With no deadline it does not wait: `None` as
    /// soon as the consumer has nothing fetched (or only trouble) to give.
    fn poll_from<'r>(
        &self,
        reader: &'r mut Reader,
        from: i64,
        deadline: Option<Instant>,
        transient: &mut Option<KafkaError>,
    ) -> Result<Option<(i64, &'r [u8])>, LogError> {
        self.seek(reader, from)?;
        loop {
            let timeout = match deadline {
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Ok(None);
                    }
                    left.min(Duration::from_millis(100))
                }
                None => Duration::ZERO,
            };
            match reader.consumer.poll(timeout) {
                None if deadline.is_none() => return Ok(None),
                None => continue,
                // Connection trouble, reported while it lasts (or since the
                // last poll): librdkafka reconnects and resumes by itself.
                Some(Err(e)) if is_transient(&e) => {
                    *transient = Some(e);
                    if deadline.is_none() {
                        return Ok(None);
                    }
                }
                Some(Err(e)) => {
                    reader.next_offset = None;
                    return Err(kafka_error("fetch", &self.target, e));
                }
                Some(Ok(m)) => {
                    let o = m.offset();
                    if o < from {
                        // Left over from an earlier position.
                        continue;
                    }
                    let value = m.payload().unwrap_or(&[]).to_vec();
                    drop(m);
                    reader.next_offset = Some(o + 1);
                    reader.last_from = from;
                    let held = reader.last_message.insert((o, value));
                    return Ok(Some((o, &held.1)));
                }
            }
        }
    }
}

impl KafkaLog {
    /// The first message at an offset >= `from` that the consumer has
    /// already fetched, held as `poll_from` holds it and noted as the
    /// tail; `None` at once when it has none (no waiting, no request).
    fn poll_ready(&self, reader: &mut Reader, from: i64) -> Result<Option<i64>, LogError> {
        let found = match reader.held(from) {
            Some(m) => Some(m),
            // Trouble is not reported here: `read_from`/`wait_for` do if
            // it lasts.
            None => self.poll_from(reader, from, None, &mut None)?,
        };
        let Some((o, v)) = found else {
            return Ok(None);
        };
        let count = frame::count(v).map_err(|r| self.corrupt(o, r))?;
        self.note_tail(o, count);
        Ok(Some(o))
    }

    /// The offset of the batch carrying `token`, searched backwards from
    /// the tail in growing windows (a batch whose acknowledgement lost its
    /// offset was stored moments ago, so it is near the end). `None` if
    /// not found in the last 65,536 messages.
    fn locate(&self, token: &[u8; frame::TOKEN_BYTES]) -> Option<i64> {
        let (low, high) = self.watermarks().ok()?;
        let newest = high - 1;
        let mut reader = lock(&self.reader);
        let mut end = high;
        let mut window = 64i64;
        while end > low && high - end < 65_536 {
            let start = (end - window).max(low);
            let mut offset = start;
            while offset < end {
                let found = self
                    .with_message(&mut reader, offset, newest, |o, v| {
                        Ok((o, frame::token(v).ok() == Some(*token)))
                    })
                    .ok()?;
                if found.1 {
                    return Some(found.0);
                }
                offset = found.0 + 1;
            }
            end = start;
            window *= 4;
        }
        None
    }
}

/// The error for a topic the brokers do not have: the log never creates
/// one (a typo must not start a new, empty log), so it says how to.
pub(crate) fn missing_topic(servers: &str, topic: &str) -> String {
    format!(
        "topic {topic:?} does not exist on the brokers {servers}: create it with the \
         settings of deploy/kafka/README.md (replication.factor 3, min.insync.replicas 2, \
         unclean.leader.election.enable false), e.g. `kafka-topics.sh --bootstrap-server \
         {servers} --create --topic {topic} --partitions <N> --replication-factor 3 \
         --config min.insync.replicas=2 --config unclean.leader.election.enable=false`"
    )
}

/// The log's identity: `kafka:<cluster id>/<topic>`. A broker that does
/// not report a cluster id (metadata before v2) is named by the bootstrap
/// servers as configured instead, `kafka:?<servers>/<topic>`: still the
/// same for nodes configured alike, but two spellings of one cluster then
/// look like two logs (refused tokens, never a wrong answer).
fn log_identity(cluster_id: Option<String>, servers: &str, topic: &str) -> String {
    match cluster_id.filter(|c| !c.is_empty()) {
        Some(c) => format!("kafka:{c}/{topic}"),
        None => format!("kafka:?{servers}/{topic}"),
    }
}

/// A number naming one `KafkaLog` instance in its batch tokens: drawn from
/// the process's randomly keyed hasher (uniqueness is all that matters; it
/// never reaches engine output).
fn instance_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish()
}

impl KafkaLog {
    /// `read_from` with the partition's watermarks (or what is known of
    /// them) given.
    fn read_between(
        &self,
        from: u64,
        max: usize,
        low: i64,
        high: i64,
    ) -> Result<Vec<Record>, LogError> {
        let (mut offset, _) = split_seq(from);
        let first = if low == 0 { 1 } else { seq_for(low, 0) };
        let mut reader = lock(&self.reader);
        // A read that stopped at `max` inside a message goes on from the
        // message it holds, whatever the low watermark says now: tansu
        // restarted on its database was seen to report a low watermark
        // one past the message a reader was inside, which left that
        // reader stopped for good on "truncated".
        let held = reader.held(offset).is_some();
        if from < first && !held {
            return Err(LogError::Truncated {
                requested: from,
                first,
            });
        }
        let mut out = Vec::new();
        let newest = (high - 1).max(if held { offset } else { -1 });
        while offset <= newest && out.len() < max {
            // An offset below the low watermark is one the broker says it
            // no longer has: never step over it (a fetch there answers
            // with the next message it has, which would skip history and
            // make this replica differ from the others). Only the message
            // held from an earlier read may be below it.
            let holds_it = reader.held(offset).is_some();
            if offset < low && !holds_it {
                if out.is_empty() {
                    return Err(LogError::Truncated {
                        requested: from.max(seq_for(offset, 0)),
                        first,
                    });
                }
                break;
            }
            let mut take = |o: i64, v: &[u8]| {
                let records = frame::decode(v).map_err(|r| self.corrupt(o, r))?;
                // `records.len()` is 1..=65536: the decoder checks it.
                self.note_tail(o, records.len() as u32);
                for (i, r) in records.iter().enumerate() {
                    // `i < 65536`: the decoder checks the count.
                    let seq = seq_for(o, i as u32);
                    if seq >= from && out.len() < max {
                        out.push(Record {
                            seq,
                            payload: r.to_vec(),
                        });
                    }
                }
                Ok(o + 1)
            };
            // This instance's own append at exactly this offset is the
            // message there: no fetch.
            let next = match (holds_it, self.own_at(offset)) {
                (false, Some(v)) => take(offset, &v)?,
                _ => self.with_message(&mut reader, offset, newest, take)?,
            };
            offset = next;
        }
        Ok(out)
    }
}

impl Log for KafkaLog {
    fn append(&self, records: &[&[u8]]) -> Result<u64, LogError> {
        if records.is_empty() {
            return self.try_last_seq();
        }
        if records.len() > MAX_BATCH_RECORDS {
            return Err(LogError::InvalidConfig(format!(
                "append of {} records: a Kafka log batch holds at most {MAX_BATCH_RECORDS}",
                records.len()
            )));
        }
        let bytes = frame::encoded_len(records);
        if bytes > self.config.max_message_bytes {
            return Err(LogError::BatchTooLarge {
                bytes,
                max: self.config.max_message_bytes,
            });
        }
        let n = self
            .appends
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut token = [0u8; frame::TOKEN_BYTES];
        token[..8].copy_from_slice(&self.instance.to_le_bytes());
        token[8..].copy_from_slice(&n.to_le_bytes());
        let value = frame::encode(records, token);
        let (producer, generation) = self.producer();
        let (tx, rx) = mpsc::sync_channel(1);
        let deadline = Instant::now() + self.config.delivery_timeout;
        let mut record =
            BaseRecord::<(), [u8], _>::with_opaque_to(&self.config.topic, Box::new(tx))
                .partition(self.partition)
                .payload(&value[..]);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back))
                    if Instant::now() < deadline =>
                {
                    // The local queue is full: wait for deliveries to drain it.
                    record = back;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err((e, _)) => {
                    self.replace_producer(generation);
                    return Err(kafka_error("produce", &self.target, e));
                }
            }
        }
        // librdkafka reports every message by `message.timeout.ms`; the margin
        // only guards against a lost report.
        let wait = self.config.delivery_timeout + self.config.request_timeout;
        let delivery = rx.recv_timeout(wait);
        drop(producer);
        let (partition, offset) = match delivery {
            Ok(Ok(d)) => d,
            Ok(Err(e)) => {
                self.replace_producer(generation);
                return Err(kafka_error("produce", &self.target, e));
            }
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => {
                self.replace_producer(generation);
                return Err(timed_out("produce", &self.target, "no delivery report"));
            }
        };
        assert_eq!(partition, self.partition, "delivered to another partition");
        let offset = if offset < 0 {
            // The broker took the batch but did not say where: librdkafka
            // reports a retry the broker answered DUPLICATE_SEQUENCE_NUMBER
            // this way (the first attempt was stored, its answer lost). Find
            // the batch by its token near the tail.
            self.locate(&token).unwrap_or(-1)
        } else {
            offset
        };
        if offset < 0 {
            // Not found: the batch may be in the log, at a seq this append
            // cannot name, so it is reported as an error (never a made-up
            // seq).
            return Err(LogError::Io {
                op: "produce",
                path: PathBuf::from(&self.target),
                source: Arc::new(io::Error::other(
                    "acknowledged without an offset: the batch is stored at an unknown seq",
                )),
            });
        }
        // `records.len() <= 65536`, checked above.
        self.note_tail(offset, records.len() as u32);
        self.note_own(offset, value);
        Ok(seq_for(offset, 0))
    }

    fn identity(&self) -> String {
        self.identity.clone()
    }

    fn read_from(&self, from: u64, max: usize) -> Result<Vec<Record>, LogError> {
        // No watermark request when the newest message known (this log's
        // own append, a `wait_for` or an earlier read saw it) is at or
        // past `from`'s message and `from` is not below the first seq
        // last seen: the message exists and the read can go straight to
        // it. This is a follower's and an appender's every read, so it
        // keeps a broker round trip off each answer. The known end is not
        // the log's end, so a read that found nothing there asks.
        let known = *lock(&self.tail);
        let cached_first = *lock(&self.first_seq);
        let (offset, _) = split_seq(from);
        if let Some(t) = known.filter(|t| t.offset >= offset && from >= cached_first) {
            let low = if cached_first <= 1 {
                0
            } else {
                split_seq(cached_first).0
            };
            let out = self.read_between(from, max, low, t.offset + 1)?;
            if !out.is_empty() {
                return Ok(out);
            }
        }
        let (low, high) = self.watermarks()?;
        self.read_between(from, max, low, high)
    }

    /// Past the newest message known, this takes what the reading
    /// consumer has already fetched (librdkafka keeps fetching ahead for
    /// an assigned partition) with a poll that does not wait, and asks the
    /// broker nothing: no ListOffsets request per idle turn of a
    /// follower. An empty page means only that nothing newer has been
    /// fetched yet.
    fn read_known(&self, from: u64, max: usize) -> Result<Vec<Record>, LogError> {
        let known = *lock(&self.tail);
        let cached_first = *lock(&self.first_seq);
        let (offset, _) = split_seq(from);
        if from < cached_first {
            // Let read_from ask and answer Truncated (or find the low
            // watermark moved back after a broker restart).
            return self.read_from(from, max);
        }
        let low = if cached_first <= 1 {
            0
        } else {
            split_seq(cached_first).0
        };
        match known {
            Some(t) if t.last_seq >= from => self.read_between(from, max, low, t.offset + 1),
            _ => {
                // Past the newest record known: the next one is in a later
                // message than the newest known (`from`'s own message, if
                // that is the newest, has no record at `from`).
                let want = known.map_or(offset, |t| offset.max(t.offset + 1));
                let mut reader = lock(&self.reader);
                let Some(newest) = self.poll_ready(&mut reader, want)? else {
                    return Ok(Vec::new());
                };
                drop(reader);
                self.read_between(from.max(seq_for(want, 0)), max, low, newest + 1)
            }
        }
    }

    /// Follows the tail with the reading consumer itself: positioned just
    /// past `after`, it keeps a fetch outstanding at the broker, which
    /// answers as soon as a message arrives (or after `fetch_wait`), so a
    /// new message is seen one fetch after it is written, with no
    /// watermark requests and no sleeping. The message is kept, so the
    /// `read_from` that follows does not fetch it again. At the timeout,
    /// one watermark request says what the log holds.
    fn wait_for(&self, after: u64, timeout: Duration) -> Result<u64, LogError> {
        let deadline = Instant::now() + timeout;
        if let Some(t) = *lock(&self.tail) {
            if t.last_seq > after {
                return Ok(t.last_seq);
            }
        }
        let mut reader = lock(&self.reader);
        // Where the next seq after `after` can be: in `after`'s own message
        // if it has more commands, else in the next message.
        let mut next = if after == 0 { 0 } else { split_seq(after).0 };
        if after != 0 {
            if let Some((o, v)) = reader.held(next) {
                if o == next {
                    let count = frame::count(v).map_err(|r| self.corrupt(o, r))?;
                    let last = seq_for(o, count - 1);
                    if last > after {
                        self.note_tail(o, count);
                        return Ok(last);
                    }
                    next = o + 1;
                }
            }
        }
        let mut transient = None;
        loop {
            let Some((o, v)) = self.poll_from(&mut reader, next, Some(deadline), &mut transient)?
            else {
                drop(reader);
                return match self.try_last_seq() {
                    Ok(last) => Ok(last),
                    Err(e) => Err(transient.map_or(e, |t| kafka_error("fetch", &self.target, t))),
                };
            };
            let count = frame::count(v).map_err(|r| self.corrupt(o, r))?;
            let last = seq_for(o, count - 1);
            self.note_tail(o, count);
            if last > after {
                return Ok(last);
            }
            next = o + 1;
        }
    }

    fn first_seq(&self) -> u64 {
        match self.watermarks() {
            Ok((0, _)) => 1,
            Ok((low, _)) => seq_for(low, 0),
            Err(_) => *lock(&self.first_seq),
        }
    }

    fn last_seq(&self) -> u64 {
        self.try_last_seq()
            .unwrap_or_else(|_| lock(&self.tail).map_or(0, |t| t.last_seq))
    }

    /// Keeps everything: a documented no-op, which the trait allows ("may
    /// keep more than asked"). Kafka's DeleteRecords would do it, but the
    /// test broker (tansu 0.6 on SQLite) does not implement it; in
    /// production, the topic's retention bounds the log instead (see
    /// deploy/kafka/README.md).
    fn truncate_before(&self, _seq: u64) -> Result<(), LogError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::{is_secret_property, log_identity, missing_topic, KafkaLog, KafkaLogConfig};

    #[test]
    fn secret_properties_are_redacted_in_debug() {
        let mut c = KafkaLogConfig::new("h:9092", "t", 0);
        c.client_properties = vec![
            ("sasl.password".into(), "hunter2".into()),
            ("ssl.key.pem".into(), "-----BEGIN PRIVATE KEY-----".into()),
            ("sasl.username".into(), "api-user".into()),
        ];
        let d = format!("{c:?}");
        assert!(!d.contains("hunter2") && !d.contains("BEGIN"), "{d}");
        assert!(d.contains("api-user") && d.contains("<redacted>"), "{d}");
        assert!(is_secret_property("sasl.oauthbearer.client.secret"));
        assert!(!is_secret_property("ssl.key.location"));
        assert!(!is_secret_property("socket.keepalive.enable"));
    }

    /// Refused before any connection is tried (no broker at that address).
    #[test]
    fn reserved_client_properties_are_refused() {
        for key in ["acks", "enable.idempotence", "Delivery.Timeout.Ms"] {
            let mut c = KafkaLogConfig::new("127.0.0.1:1", "t", 0);
            c.client_properties = vec![(key.into(), "1".into())];
            let e = KafkaLog::open(c).unwrap_err().to_string();
            assert!(e.contains(key) && e.contains("may not be set"), "{e}");
        }
    }

    #[test]
    fn a_missing_topic_names_topic_brokers_and_the_fix() {
        let m = missing_topic("b1:9092,b2:9092", "orders");
        for part in [
            "\"orders\"",
            "b1:9092,b2:9092",
            "--create",
            "deploy/kafka/README.md",
        ] {
            assert!(m.contains(part), "{m}");
        }
    }

    #[test]
    fn identity_names_cluster_and_topic() {
        assert_eq!(
            log_identity(Some("abc".into()), "h:9092", "t"),
            "kafka:abc/t"
        );
        assert_eq!(log_identity(None, "h:9092", "t"), "kafka:?h:9092/t");
        assert_eq!(
            log_identity(Some(String::new()), "h:9092", "t"),
            "kafka:?h:9092/t"
        );
    }
}
