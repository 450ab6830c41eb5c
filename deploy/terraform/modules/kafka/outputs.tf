output "topic_name" {
  description = "The order-log topic, for the nodes' log.kafka_topic."
  value       = confluent_kafka_topic.order_log.topic_name
}

output "partitions" {
  description = "The topic's partition count, for the nodes' log.kafka_partitions."
  value       = confluent_kafka_topic.order_log.partitions_count
}
