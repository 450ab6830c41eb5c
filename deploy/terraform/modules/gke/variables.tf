variable "project_id" {
  description = "GCP project that holds the cluster and its network."
  type        = string
}

variable "name" {
  description = "Cluster name. The source's cluster is dex-engine-gcp."
  type        = string
  default     = "dex-engine-gcp"
}

variable "region" {
  description = "Region of the regional cluster (control plane replicated across its zones)."
  type        = string
  default     = "us-central1"
}

variable "zones" {
  description = "The three zones of var.region that run nodes (topology spread and the node PodDisruptionBudget assume three)."
  type        = list(string)
  default     = ["us-central1-a", "us-central1-b", "us-central1-c"]

  validation {
    condition     = length(var.zones) == 3 && length(distinct(var.zones)) == 3
    error_message = "zones must name three distinct zones."
  }
}

variable "kubernetes_version" {
  description = "GKE version, or \"latest\" for the newest the release channel offers."
  type        = string
  default     = "latest"
}

variable "release_channel" {
  description = "GKE release channel: RAPID, REGULAR, STABLE or UNSPECIFIED."
  type        = string
  default     = "REGULAR"
}

variable "nodes_cidr" {
  description = "Primary range of the nodes' subnetwork."
  type        = string
  default     = "10.10.0.0/20"
}

variable "pods_cidr" {
  description = "Secondary range for pod addresses (VPC-native cluster)."
  type        = string
  default     = "10.20.0.0/14"
}

variable "services_cidr" {
  description = "Secondary range for Service addresses."
  type        = string
  default     = "10.24.0.0/20"
}

variable "machine_type" {
  description = "Machine type of the Tandem node pool."
  type        = string
  default     = "c3-standard-8"
}

variable "min_nodes_per_zone" {
  description = "Autoscaler minimum, per zone (GKE counts regional pools per zone)."
  type        = number
  default     = 1
}

variable "max_nodes_per_zone" {
  description = "Autoscaler maximum, per zone."
  type        = number
  default     = 3
}

variable "deployer_members" {
  description = "IAM members given roles/container.developer on the project (for example \"serviceAccount:release@PROJECT.iam.gserviceaccount.com\", the release workflow's GCP_SERVICE_ACCOUNT)."
  type        = list(string)
  default     = []
}

variable "labels" {
  description = "Labels put on the cluster's resources."
  type        = map(string)
  default     = {}
}
