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
    let target = format!("kafka://{bootstrap_servers}/{topic}");
    let err = |e| kafka_error("create topic", &target, e);
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
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
