# Providers this module needs. Minimums only: the environment root pins
# the versions (envs/*/versions.tf).
terraform {
  required_version = ">= 1.5"

  required_providers {
    confluent = {
      source  = "confluentinc/confluent"
      version = ">= 2.0"
    }
  }
}
