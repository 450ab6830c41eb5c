# Providers this module needs. Minimums only: the environment root pins
# the versions (envs/*/versions.tf).
terraform {
  required_version = ">= 1.5"

  required_providers {
    cloudflare = {
      # cloudflare_worker, cloudflare_worker_version (several modules per
      # version: the script and its wasm) and cloudflare_workers_deployment
      # are 5.x resources.
      source  = "cloudflare/cloudflare"
      version = ">= 5.11"
    }
  }
}
