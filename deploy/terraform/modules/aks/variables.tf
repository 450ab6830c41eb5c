variable "name" {
  description = "Cluster name (also its DNS prefix and the resource group's stem)."
  type        = string
  default     = "dex-engine-azure"
}

variable "location" {
  description = "Azure region; it must offer availability zones 1, 2 and 3 for var.vm_size."
  type        = string
}

variable "kubernetes_version" {
  description = "AKS Kubernetes version (major.minor); null takes the region's default."
  type        = string
  default     = null
}

variable "zones" {
  description = "The three availability zones that run nodes, one Tandem node pool each."
  type        = list(string)
  default     = ["1", "2", "3"]

  validation {
    condition     = length(var.zones) == 3 && length(distinct(var.zones)) == 3
    error_message = "zones must name three distinct availability zones."
  }
}

variable "system_vm_size" {
  description = "VM size of the system pool (CoreDNS, metrics-server, CSI drivers)."
  type        = string
  default     = "Standard_D4ds_v5"
}

variable "vm_size" {
  description = "VM size of the Tandem node pools."
  type        = string
  default     = "Standard_F8s_v2"
}

variable "min_nodes_per_zone" {
  description = "Minimum size of each zone's Tandem pool."
  type        = number
  default     = 1
}

variable "max_nodes_per_zone" {
  description = "Maximum size of each zone's Tandem pool."
  type        = number
  default     = 3
}

variable "api_server_authorized_ip_ranges" {
  description = "Addresses allowed to reach the API server (the CI runners' and the operators' ranges)."
  type        = list(string)
}

variable "deployer_principal_ids" {
  description = "Object ids of identities given the Azure Kubernetes Service Cluster User Role (for example the release workflow's AZURE_CLIENT_ID's service principal)."
  type        = list(string)
  default     = []
}

variable "tags" {
  description = "Tags put on every resource."
  type        = map(string)
  default     = {}
}
