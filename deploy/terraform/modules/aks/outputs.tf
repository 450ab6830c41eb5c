output "name" {
  description = "Cluster name."
  value       = azurerm_kubernetes_cluster.this.name
}

output "resource_group_name" {
  description = "Resource group of the cluster (for az aks get-credentials)."
  value       = azurerm_resource_group.this.name
}

output "oidc_issuer_url" {
  description = "OIDC issuer, for workload identity federation (for example the CI's)."
  value       = azurerm_kubernetes_cluster.this.oidc_issuer_url
}

output "zones" {
  description = "Availability zones that run nodes."
  value       = var.zones
}
