output "name" {
  description = "Cluster name."
  value       = module.eks.cluster_name
}

output "endpoint" {
  description = "Control plane address."
  value       = module.eks.cluster_endpoint
}

output "ca_certificate" {
  description = "Cluster CA certificate, base64."
  value       = module.eks.cluster_certificate_authority_data
  sensitive   = true
}

output "azs" {
  description = "Availability zones that run nodes."
  value       = var.azs
}
