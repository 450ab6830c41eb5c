variable "account_id" {
  description = "Cloudflare account that owns the Worker and the KV namespace."
  type        = string
}

variable "zone_id" {
  description = "Zone (domain) whose route sends requests to the Worker."
  type        = string
}

variable "route_pattern" {
  description = "Route pattern served by the Worker, for example api.example.com/*."
  type        = string
}

variable "worker_name" {
  description = "Worker name: wrangler.toml's name, so wrangler and Terraform manage the same Worker."
  type        = string
  default     = "tandem-edge"
}

variable "compatibility_date" {
  description = "Workers runtime compatibility date: wrangler.toml's compatibility_date."
  type        = string
  default     = "2024-09-23"
}

variable "routes_json" {
  description = "TANDEM_ROUTES: the routes the Worker uses while the KV key ROUTES/routes is unset, {\"clusters\":[{\"name\",\"role\",\"weight\",\"origin\"}]}."
  type        = string

  validation {
    condition     = can(jsondecode(var.routes_json).clusters[0].origin)
    error_message = "routes_json must be JSON with a non-empty clusters list whose entries have an origin."
  }
}
