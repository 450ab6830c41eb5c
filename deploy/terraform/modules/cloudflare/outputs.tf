output "worker_name" {
  description = "The Worker's name."
  value       = cloudflare_worker.edge.name
}

output "routes_kv_namespace_id" {
  description = "Id of the ROUTES KV namespace: wrangler.toml's kv_namespaces id, and where the rollout controller writes the key \"routes\"."
  value       = cloudflare_workers_kv_namespace.routes.id
}

output "version_id" {
  description = "The deployed Worker version."
  value       = cloudflare_worker_version.edge.id
}
