# Everything that differs between environments. Copy
# terraform.tfvars.example to terraform.tfvars and fill it in; secrets go
# in TF_VAR_kafka_api_key / TF_VAR_kafka_api_secret and the providers'
# own environment variables (providers.tf), never in a file.

variable "tags" {
  description = "Tags (AWS, Azure) and labels (GCP) put on every resource."
  type        = map(string)
  default = {
    app = "tandem"
  }
}

# --- AWS (EKS) ---

variable "aws_region" {
  description = "AWS region of the EKS cluster."
  type        = string
}

variable "aws_azs" {
  description = "Three availability zones of aws_region."
  type        = list(string)
}

variable "eks_cluster_name" {
  description = "EKS cluster name."
  type        = string
  default     = "dex-engine-aws"
}

variable "eks_kubernetes_version" {
  description = "EKS Kubernetes version."
  type        = string
  default     = "1.33"
}

variable "eks_instance_types" {
  description = "Instance types of the EKS Tandem node groups."
  type        = list(string)
  default     = ["c7i.2xlarge"]
}

# --- GCP (GKE) ---

variable "gcp_project_id" {
  description = "GCP project of the GKE cluster."
  type        = string
}

variable "gcp_region" {
  description = "Region of the GKE cluster; the source's is us-central1."
  type        = string
  default     = "us-central1"
}

variable "gcp_zones" {
  description = "Three zones of gcp_region."
  type        = list(string)
  default     = ["us-central1-a", "us-central1-b", "us-central1-c"]
}

variable "gke_cluster_name" {
  description = "GKE cluster name; the source's is dex-engine-gcp."
  type        = string
  default     = "dex-engine-gcp"
}

variable "gke_machine_type" {
  description = "Machine type of the GKE Tandem node pool."
  type        = string
  default     = "c3-standard-8"
}

# --- Azure (AKS) ---

variable "azure_subscription_id" {
  description = "Azure subscription of the AKS cluster (an identifier, not a secret)."
  type        = string
}

variable "azure_location" {
  description = "Azure region of the AKS cluster (with availability zones)."
  type        = string
}

variable "aks_cluster_name" {
  description = "AKS cluster name."
  type        = string
  default     = "dex-engine-azure"
}

variable "aks_vm_size" {
  description = "VM size of the AKS Tandem node pools."
  type        = string
  default     = "Standard_F8s_v2"
}

# --- Who may reach and deploy to the Kubernetes API servers ---

variable "eks_admin_role_arns" {
  description = "IAM roles with cluster admin on EKS: the release workflow's AWS_ROLE_ARN."
  type        = list(string)
  default     = []
}

variable "gke_deployer_members" {
  description = "IAM members with roles/container.developer: the release workflow's GCP_SERVICE_ACCOUNT, as serviceAccount:..."
  type        = list(string)
  default     = []
}

variable "aks_deployer_principal_ids" {
  description = "Object ids with the AKS Cluster User Role: the service principal of the release workflow's AZURE_CLIENT_ID."
  type        = list(string)
  default     = []
}

variable "api_allowed_cidrs" {
  description = "Address ranges allowed to reach the EKS and AKS API servers (CI runners, operators)."
  type        = list(string)
}

# --- Kafka (Confluent Cloud) ---

variable "kafka_cluster_id" {
  description = "Confluent Cloud Kafka cluster id (lkc-...)."
  type        = string
}

variable "kafka_rest_endpoint" {
  description = "REST endpoint of that cluster."
  type        = string
}

variable "kafka_topic" {
  description = "Order-log topic: the nodes' log.kafka_topic."
  type        = string
  default     = "tandem-orders"
}

variable "kafka_partitions" {
  description = "Partitions of the order-log topic: the nodes' log.kafka_partitions. Never changed once written."
  type        = number
}

variable "kafka_api_key" {
  description = "Kafka API key allowed to manage the topic (TF_VAR_kafka_api_key)."
  type        = string
  sensitive   = true
}

variable "kafka_api_secret" {
  description = "Secret of kafka_api_key (TF_VAR_kafka_api_secret)."
  type        = string
  sensitive   = true
}

# --- Cloudflare (edge Worker) ---

variable "cloudflare_account_id" {
  description = "Cloudflare account of the Worker."
  type        = string
}

variable "cloudflare_zone_id" {
  description = "Cloudflare zone of the public API hostname."
  type        = string
}

variable "edge_route_pattern" {
  description = "Route the Worker serves, for example api.example.com/*."
  type        = string
}

variable "edge_routes_json" {
  description = "TANDEM_ROUTES for the Worker: the plan's first step (all traffic to the stable cluster)."
  type        = string
}
