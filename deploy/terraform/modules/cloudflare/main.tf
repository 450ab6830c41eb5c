# Tandem's edge split on Cloudflare Workers: the Worker of deploy/cloudflare
# (src/worker.js and the routing module it imports, build/tandem_route.wasm,
# built by deploy/cloudflare/build.sh, which must run before plan), its KV
# namespace bound as ROUTES, and the route that sends the zone's requests to
# it. The same Worker wrangler.toml describes, deployable without wrangler.
#
# The KV key "routes" is not managed here: the rollout controller writes it
# at every weight change, and Terraform would undo the controller's weights
# at the next apply. Until the key is set, TANDEM_ROUTES (var.routes_json)
# decides.

locals {
  # deploy/cloudflare. Module names are paths relative to it, so the
  # script's import "../build/tandem_route.wasm" (relative to src/) names
  # the module build/tandem_route.wasm, as in deploy/cloudflare/test/config.capnp.
  worker_dir = "${path.module}/../../../cloudflare"
}

resource "cloudflare_workers_kv_namespace" "routes" {
  account_id = var.account_id
  title      = "${var.worker_name}-routes"
}

resource "cloudflare_worker" "edge" {
  account_id = var.account_id
  name       = var.worker_name
}

resource "cloudflare_worker_version" "edge" {
  account_id         = var.account_id
  worker_id          = cloudflare_worker.edge.id
  compatibility_date = var.compatibility_date
  main_module        = "src/worker.js"

  modules = [
    {
      name         = "src/worker.js"
      content_type = "application/javascript+module"
      content_file = "${local.worker_dir}/src/worker.js"
    },
    {
      name         = "build/tandem_route.wasm"
      content_type = "application/wasm"
      content_file = "${local.worker_dir}/build/tandem_route.wasm"
    },
  ]

  bindings = [
    {
      type         = "kv_namespace"
      name         = "ROUTES"
      namespace_id = cloudflare_workers_kv_namespace.routes.id
    },
    {
      type = "plain_text"
      name = "TANDEM_ROUTES"
      text = var.routes_json
    },
  ]
}

# A new version serves all requests once deployed (no gradual Worker
# rollout: the canary split is the routes' weights, not the Worker's code).
resource "cloudflare_workers_deployment" "edge" {
  account_id  = var.account_id
  script_name = cloudflare_worker.edge.name
  strategy    = "percentage"

  versions = [
    {
      version_id = cloudflare_worker_version.edge.id
      percentage = 100
    },
  ]
}

resource "cloudflare_workers_route" "edge" {
  zone_id = var.zone_id
  pattern = var.route_pattern
  script  = cloudflare_worker.edge.name

  depends_on = [cloudflare_workers_deployment.edge]
}
