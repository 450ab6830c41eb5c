//! Topic creation through the Kafka admin API, for tests and operators'
//! tools. The log itself never creates topics: a missing topic is an error
//! at [`crate::KafkaLog::open`], so a typo cannot make a new empty log.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::types::RDKafkaErrorCode;
use tandem_log::LogError;

use crate::kafka_log::kafka_error;

/// `retention.ms` of the production settings: `i64::MAX` ms (292 million
/// years), which Kafka treats as no time limit. Not Kafka's `-1`: tansu
/// 0.6 reads `-1` as "older than -1 ms" and its maintenance, which runs at
/// every broker start and then every 10 minutes, deletes every record of
/// such a topic (a node then stops with `truncated`).
pub const RETENTION_MS_UNLIMITED: &str = "9223372036854775807";

/// The topic-level settings of `deploy/kafka/README.md` for an order-log
/// topic: `min.insync.replicas`, no unclean leader election, delete (never
/// compact), no retention limit by time or size, and a
/// `max.message.bytes` that fits `max_message_bytes` plus Kafka's batch
/// overhead. The node creates its topic with these when
/// `log.kafka_create_topic` is on.
pub fn production_topic_settings(
    min_insync_replicas: u32,
    max_message_bytes: usize,
) -> Vec<(&'static str, String)> {
    vec![
        ("min.insync.replicas", min_insync_replicas.to_string()),
        ("unclean.leader.election.enable", "false".into()),
        ("cleanup.policy", "delete".into()),
        ("retention.ms", RETENTION_MS_UNLIMITED.into()),
        ("retention.bytes", "-1".into()),
        (
            "max.message.bytes",
            (max_message_bytes + crate::kafka_log::KAFKA_OVERHEAD_BYTES).to_string(),
        ),
    ]
}

/// Creates `topic` with `partitions` partitions and `replication` replicas,
/// with the topic-level `configs` (e.g. `("min.insync.replicas", "2")`).
/// An existing topic is not an error (its settings are left as they are).
pub fn create_topic(
    bootstrap_servers: &str,
    topic: &str,
    partitions: u32,
    replication: u32,
    configs: &[(&str, &str)],
    timeout: Duration,
) -> Result<(), LogError> {
    create_topic_with(
        bootstrap_servers,
        topic,
        partitions,
        replication,
        configs,
        timeout,
        &[],
    )
}

/// [`create_topic`] through an admin client given further librdkafka
/// properties (e.g. security settings: the log's `client_properties`).
pub fn create_topic_with(
    bootstrap_servers: &str,
    topic: &str,
    partitions: u32,
    replication: u32,
    configs: &[(&str, &str)],
    timeout: Duration,
    client_properties: &[(String, String)],
) -> Result<(), LogError> {
    crate::kafka_log::check_client_properties(client_properties)?;
    let target = format!("kafka://{bootstrap_servers}/{topic}");
    let err = |e| kafka_error("create topic", &target, e);
    let mut client = ClientConfig::new();
    for (k, v) in client_properties {
        client.set(k, v);
    }
    let admin: AdminClient<DefaultClientContext> = client
        .set("bootstrap.servers", bootstrap_servers)
        .create()
        .map_err(err)?;
    let partitions = i32::try_from(partitions)
        .map_err(|_| LogError::InvalidConfig(format!("{partitions} partitions")))?;
    let replication = i32::try_from(replication)
        .map_err(|_| LogError::InvalidConfig(format!("replication {replication}")))?;
    let mut new = NewTopic::new(topic, partitions, TopicReplication::Fixed(replication));
    for &(k, v) in configs {
        new = new.set(k, v);
    }
    let opts = AdminOptions::new()
        .request_timeout(Some(timeout))
        .operation_timeout(Some(timeout));
    let results = futures_executor::block_on(admin.create_topics([&new], &opts)).map_err(err)?;
    for r in results {
        match r {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => {
                return Err(kafka_error(
                    "create topic",
                    &format!("kafka://{bootstrap_servers}/{name}"),
                    rdkafka::error::KafkaError::AdminOp(code),
                ))
            }
        }
    }
    Ok(())
}
