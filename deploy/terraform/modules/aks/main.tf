# An AKS cluster across three availability zones: a system pool spread
# over the three zones for the cluster's own add-ons (tainted so that only
# critical add-ons run there), and one Tandem pool per zone, for the same
# reason as on EKS: a managed disk lives in one zone, and the autoscaler
# adds nodes per pool.

resource "azurerm_resource_group" "this" {
  name     = "${var.name}-rg"
  location = var.location
  tags     = var.tags
}

resource "azurerm_kubernetes_cluster" "this" {
  name                = var.name
  location            = azurerm_resource_group.this.location
  resource_group_name = azurerm_resource_group.this.name
  dns_prefix          = var.name
  kubernetes_version  = var.kubernetes_version
  # The Standard tier has the uptime SLA; Free has none.
  sku_tier = "Standard"

  default_node_pool {
    name                         = "system"
    vm_size                      = var.system_vm_size
    zones                        = var.zones
    auto_scaling_enabled         = true
    min_count                    = 3
    max_count                    = 6
    only_critical_addons_enabled = true
  }

  identity {
    type = "SystemAssigned"
  }

  network_profile {
    network_plugin      = "azure"
    network_plugin_mode = "overlay"
    load_balancer_sku   = "standard"
  }

  api_server_access_profile {
    authorized_ip_ranges = var.api_server_authorized_ip_ranges
  }

  oidc_issuer_enabled       = true
  workload_identity_enabled = true

  tags = var.tags
}

resource "azurerm_role_assignment" "deployer" {
  for_each = toset(var.deployer_principal_ids)

  scope                = azurerm_kubernetes_cluster.this.id
  role_definition_name = "Azure Kubernetes Service Cluster User Role"
  principal_id         = each.value
}

resource "azurerm_kubernetes_cluster_node_pool" "tandem" {
  for_each = toset(var.zones)

  # Linux pool names: lowercase letters and digits, at most 12.
  name                  = "tandem${each.key}"
  kubernetes_cluster_id = azurerm_kubernetes_cluster.this.id
  vm_size               = var.vm_size
  zones                 = [each.key]
  auto_scaling_enabled  = true
  min_count             = var.min_nodes_per_zone
  max_count             = var.max_nodes_per_zone

  node_labels = {
    "tandem.dev/pool" = "tandem"
  }

  tags = var.tags
}
