# Terraform and provider versions for this environment. `terraform init`
# resolves them and writes .terraform.lock.hcl, which should be committed
# by whoever first runs init against the real registries (it could not be
# produced here: providers cannot be downloaded on these machines).
terraform {
  required_version = ">= 1.6, < 2.0"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 5.80"
    }
    google = {
      source  = "hashicorp/google"
      version = "~> 5.40"
    }
    google-beta = {
      source  = "hashicorp/google-beta"
      version = "~> 5.40"
    }
    kubernetes = {
      source  = "hashicorp/kubernetes"
      version = "~> 2.30"
    }
    azurerm = {
      source  = "hashicorp/azurerm"
      version = "~> 4.10"
    }
    confluent = {
      source  = "confluentinc/confluent"
      version = "~> 2.10"
    }
    cloudflare = {
      source  = "cloudflare/cloudflare"
      version = "~> 5.11"
    }
  }
}
