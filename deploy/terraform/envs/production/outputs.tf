output "kubeconfig_commands" {
  description = "Commands that add each cluster to a kubeconfig."
  value = {
    eks = "aws eks update-kubeconfig --region ${var.aws_region} --name ${module.eks.name}"
    gke = "gcloud container clusters get-credentials ${module.gke.name} --region ${module.gke.location} --project ${var.gcp_project_id}"
    aks = "az aks get-credentials --resource-group ${module.aks.resource_group_name} --name ${module.aks.name}"
  }
}

output "release_workflow_variables" {
  description = "The repository variables .github/workflows/release.yml reads to reach the clusters."
  value = {
    AWS_REGION         = var.aws_region
    EKS_CLUSTER        = module.eks.name
    GCP_PROJECT        = var.gcp_project_id
    GKE_CLUSTER        = module.gke.name
    GKE_LOCATION       = module.gke.location
    AKS_CLUSTER        = module.aks.name
    AKS_RESOURCE_GROUP = module.aks.resource_group_name
  }
}

output "kafka_topic" {
  description = "Topic and partition count to put in the nodes' log.kafka_topic and log.kafka_partitions."
  value = {
    topic      = module.kafka.topic_name
    partitions = module.kafka.partitions
  }
}

output "routes_kv_namespace_id" {
  description = "The ROUTES KV namespace (wrangler.toml's kv_namespaces id; the rollout controller writes its key \"routes\")."
  value       = module.cloudflare.routes_kv_namespace_id
}

output "worker_version_id" {
  description = "The deployed edge Worker version."
  value       = module.cloudflare.version_id
}
