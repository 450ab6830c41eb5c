# Production: the three clusters (EKS, GKE, AKS, three zones each), the
# order-log topic on Confluent Cloud and the edge Worker on Cloudflare.
# The Kubernetes objects that run Tandem on the clusters are not managed
# here: they are deploy/kubernetes's overlays, applied per cluster.

module "eks" {
  source = "../../modules/eks"

  name                         = var.eks_cluster_name
  kubernetes_version           = var.eks_kubernetes_version
  azs                          = var.aws_azs
  instance_types               = var.eks_instance_types
  endpoint_public_access_cidrs = var.api_allowed_cidrs
  admin_role_arns              = var.eks_admin_role_arns
  tags                         = var.tags
}

module "gke" {
  source = "../../modules/gke"

  project_id       = var.gcp_project_id
  name             = var.gke_cluster_name
  region           = var.gcp_region
  zones            = var.gcp_zones
  machine_type     = var.gke_machine_type
  deployer_members = var.gke_deployer_members
  labels           = var.tags
}

module "aks" {
  source = "../../modules/aks"

  name                            = var.aks_cluster_name
  location                        = var.azure_location
  vm_size                         = var.aks_vm_size
  api_server_authorized_ip_ranges = var.api_allowed_cidrs
  deployer_principal_ids          = var.aks_deployer_principal_ids
  tags                            = var.tags
}

module "kafka" {
  source = "../../modules/kafka"

  kafka_cluster_id = var.kafka_cluster_id
  rest_endpoint    = var.kafka_rest_endpoint
  topic_name       = var.kafka_topic
  partitions       = var.kafka_partitions
  kafka_api_key    = var.kafka_api_key
  kafka_api_secret = var.kafka_api_secret
}

module "cloudflare" {
  source = "../../modules/cloudflare"

  account_id    = var.cloudflare_account_id
  zone_id       = var.cloudflare_zone_id
  route_pattern = var.edge_route_pattern
  routes_json   = var.edge_routes_json
}
