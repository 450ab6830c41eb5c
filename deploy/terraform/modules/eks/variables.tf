variable "name" {
  description = "Cluster name (also the VPC's name)."
  type        = string
  default     = "dex-engine-aws"
}

variable "kubernetes_version" {
  description = "EKS Kubernetes version (major.minor)."
  type        = string
  default     = "1.33"
}

variable "azs" {
  description = "The three availability zones of the region that run nodes, one managed node group each."
  type        = list(string)

  validation {
    condition     = length(var.azs) == 3 && length(distinct(var.azs)) == 3
    error_message = "azs must name three distinct availability zones."
  }
}

variable "vpc_cidr" {
  description = "Address range of the cluster's VPC (a /16: each zone gets a private /20 and a public /24)."
  type        = string
  default     = "10.30.0.0/16"
}

variable "instance_types" {
  description = "Instance types of the Tandem node groups."
  type        = list(string)
  default     = ["c7i.2xlarge"]
}

variable "min_nodes_per_zone" {
  description = "Minimum size of each zone's node group."
  type        = number
  default     = 1
}

variable "max_nodes_per_zone" {
  description = "Maximum size of each zone's node group."
  type        = number
  default     = 3
}

variable "desired_nodes_per_zone" {
  description = "Initial size of each zone's node group (later changes by the autoscaler are kept)."
  type        = number
  default     = 1
}

variable "endpoint_public_access_cidrs" {
  description = "Addresses allowed to reach the public API endpoint (for example the CI runners' and the operators' ranges)."
  type        = list(string)
}

variable "admin_role_arns" {
  description = "IAM roles given cluster admin through EKS access entries (for example the release workflow's AWS_ROLE_ARN)."
  type        = list(string)
  default     = []
}

variable "tags" {
  description = "Tags put on every resource."
  type        = map(string)
  default     = {}
}
