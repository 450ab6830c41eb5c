variable "kafka_cluster_id" {
  description = "Confluent Cloud Kafka cluster id (lkc-...). The cluster itself is managed outside this module."
  type        = string
}

variable "rest_endpoint" {
  description = "The cluster's REST endpoint (https://pkc-....confluent.cloud:443)."
  type        = string
}

variable "topic_name" {
  description = "The order-log topic: the nodes' log.kafka_topic."
  type        = string
  default     = "tandem-orders"
}

variable "partitions" {
  description = "Partition count: the nodes' log.kafka_partitions. Fixed once the topic holds records (markets map to partitions by xxh3-64 modulo this count); add a new topic instead of changing it."
  type        = number

  validation {
    condition     = var.partitions >= 1 && floor(var.partitions) == var.partitions
    error_message = "partitions must be a whole number of at least 1."
  }
}

variable "kafka_api_key" {
  description = "Kafka API key of a service account allowed to create and alter the topic."
  type        = string
  sensitive   = true
}

variable "kafka_api_secret" {
  description = "Secret of kafka_api_key."
  type        = string
  sensitive   = true
}
