output "name" {
  description = "Cluster name."
  value       = module.gke.name
}

output "location" {
  description = "Cluster location (the region: the cluster is regional)."
  value       = module.gke.location
}

output "endpoint" {
  description = "Control plane address."
  value       = module.gke.endpoint
  sensitive   = true
}

output "ca_certificate" {
  description = "Cluster CA certificate, base64."
  value       = module.gke.ca_certificate
  sensitive   = true
}

output "zones" {
  description = "Zones that run nodes."
  value       = var.zones
}
