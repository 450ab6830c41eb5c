# The order-log topic on Confluent Cloud, with the production settings of
# deploy/kafka/README.md. The config map below is the same, key for key,
# as tandem_kafka::production_topic_settings(2, 8 MiB) (what `tandem node`
# uses when it creates a topic itself); the test
# crates/tandem-deploy/tests/terraform.rs compares them.
#
# replication.factor is not set here: Confluent Cloud fixes it at 3 for
# every topic and the provider has no argument for it. On a self-managed
# cluster, create the topic with replication 3 (deploy/kafka/README.md).
#
# retention.ms is 9223372036854775807 (i64::MAX ms), not -1: tansu 0.6
# reads -1 as "older than -1 ms" and deleted the whole log at each broker
# start. i64::MAX means "no limit" to Kafka and tansu alike, so one value
# serves every broker Tandem runs on.
#
# max.message.bytes is 8454144: one append of up to 8 MiB (the default
# KafkaLogConfig::max_message_bytes) plus 64 KiB of batch overhead.
# Confluent Cloud caps this setting by cluster type; per its topic
# configuration reference a value above 8 MiB needs a Dedicated cluster.
# Only a real apply confirms that the cluster accepts every setting here.

resource "confluent_kafka_topic" "order_log" {
  kafka_cluster {
    id = var.kafka_cluster_id
  }

  topic_name       = var.topic_name
  partitions_count = var.partitions
  rest_endpoint    = var.rest_endpoint

  config = {
    "min.insync.replicas"            = "2"
    "unclean.leader.election.enable" = "false"
    "cleanup.policy"                 = "delete"
    "retention.ms"                   = "9223372036854775807"
    "retention.bytes"                = "-1"
    "max.message.bytes"              = "8454144"
  }

  credentials {
    key    = var.kafka_api_key
    secret = var.kafka_api_secret
  }

  lifecycle {
    # Destroying the topic destroys the order log.
    prevent_destroy = true
    # Adding partitions would move markets to other partitions (see
    # var.partitions): a changed count is ignored rather than applied.
    ignore_changes = [partitions_count]
  }
}
