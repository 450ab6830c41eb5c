# The GKE cluster of the source (dex-engine-gcp in us-central1), regional,
# with nodes in three zones, built with the community module the source
# used. The network is created here so the module gets the secondary
# ranges a VPC-native cluster needs.

resource "google_compute_network" "this" {
  project                 = var.project_id
  name                    = "${var.name}-vpc"
  auto_create_subnetworks = false
}

resource "google_compute_subnetwork" "this" {
  project       = var.project_id
  name          = "${var.name}-nodes"
  region        = var.region
  network       = google_compute_network.this.id
  ip_cidr_range = var.nodes_cidr

  secondary_ip_range {
    range_name    = "${var.name}-pods"
    ip_cidr_range = var.pods_cidr
  }

  secondary_ip_range {
    range_name    = "${var.name}-services"
    ip_cidr_range = var.services_cidr
  }

  lifecycle {
    precondition {
      condition     = alltrue([for z in var.zones : startswith(z, "${var.region}-")])
      error_message = "Every zone must lie in var.region."
    }
  }
}

resource "google_project_iam_member" "deployer" {
  for_each = toset(var.deployer_members)

  project = var.project_id
  role    = "roles/container.developer"
  member  = each.value
}

module "gke" {
  source = "terraform-google-modules/kubernetes-engine/google//modules/beta-public-cluster"
  # The source printed this constraint HTML-escaped, as "~&gt; 29.0": that
  # is not valid HCL (Terraform rejects it at init). The constraint is
  # "~> 29.0": any 29.x release, never 30.
  version = "~> 29.0"

  project_id         = var.project_id
  name               = var.name
  region             = var.region
  regional           = true
  zones              = var.zones
  network            = google_compute_network.this.name
  subnetwork         = google_compute_subnetwork.this.name
  ip_range_pods      = "${var.name}-pods"
  ip_range_services  = "${var.name}-services"
  kubernetes_version = var.kubernetes_version
  release_channel    = var.release_channel

  http_load_balancing        = true
  horizontal_pod_autoscaling = true
  remove_default_node_pool   = true
  cluster_resource_labels    = var.labels

  node_pools = [
    {
      name           = "tandem"
      machine_type   = var.machine_type
      node_locations = join(",", var.zones)
      min_count      = var.min_nodes_per_zone
      max_count      = var.max_nodes_per_zone
      disk_type      = "pd-ssd"
      disk_size_gb   = 100
      image_type     = "COS_CONTAINERD"
      auto_repair    = true
      auto_upgrade   = true
    },
  ]

  node_pools_labels = {
    tandem = {
      "tandem.dev/pool" = "tandem"
    }
  }
}
