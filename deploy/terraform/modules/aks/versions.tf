# Providers this module needs. Minimums only: the environment root pins
# the versions (envs/*/versions.tf).
terraform {
  required_version = ">= 1.5"

  required_providers {
    azurerm = {
      # 4.x names (auto_scaling_enabled); 3.x called it enable_auto_scaling.
      source  = "hashicorp/azurerm"
      version = ">= 4.0"
    }
  }
}
