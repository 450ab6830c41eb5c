# Provider configuration. No credential is written here: each provider
# reads its own from the environment of whoever runs Terraform (a CI job's
# federated identity, or an operator's login):
#   aws         AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or a web identity role
#   google      GOOGLE_APPLICATION_CREDENTIALS or `gcloud auth application-default login`
#   azurerm     `az login`, or ARM_CLIENT_ID/ARM_TENANT_ID with OIDC (ARM_USE_OIDC=true)
#   confluent   the topic's own Kafka API key (var.kafka_api_key, sensitive)
#   cloudflare  CLOUDFLARE_API_TOKEN

provider "aws" {
  region = var.aws_region

  default_tags {
    tags = var.tags
  }
}

provider "google" {
  project = var.gcp_project_id
  region  = var.gcp_region
}

provider "google-beta" {
  project = var.gcp_project_id
  region  = var.gcp_region
}

# The GKE module declares the kubernetes provider (it can write kube-dns
# settings); it is pointed at the GKE cluster, as that module expects.
data "google_client_config" "current" {}

provider "kubernetes" {
  host                   = "https://${module.gke.endpoint}"
  token                  = data.google_client_config.current.access_token
  cluster_ca_certificate = base64decode(module.gke.ca_certificate)
}

provider "azurerm" {
  features {}
  subscription_id = var.azure_subscription_id
}

provider "confluent" {}

provider "cloudflare" {}
