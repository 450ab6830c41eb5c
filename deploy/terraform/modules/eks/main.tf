# An EKS cluster with nodes in three availability zones, built with the
# community modules (terraform-aws-modules): a VPC with a private and a
# public subnet per zone and one NAT gateway per zone (a zone's loss does
# not cut the others' egress), the cluster, one managed node group per
# zone, and the EBS CSI driver for the node StatefulSet's volumes.
#
# One node group per zone, not one spanning three: an EBS volume lives in
# one zone, so a node's snapshot volume can only follow it to a node of
# the same zone, and the cluster autoscaler can only add a node in a
# chosen zone if each zone has its own group.

locals {
  private_subnets = [for i, az in var.azs : cidrsubnet(var.vpc_cidr, 4, i)]
  public_subnets  = [for i, az in var.azs : cidrsubnet(var.vpc_cidr, 8, 48 + i)]
}

module "vpc" {
  source  = "terraform-aws-modules/vpc/aws"
  version = "~> 5.8"

  name = var.name
  cidr = var.vpc_cidr
  azs  = var.azs

  private_subnets = local.private_subnets
  public_subnets  = local.public_subnets

  enable_nat_gateway     = true
  single_nat_gateway     = false
  one_nat_gateway_per_az = true

  # Where the AWS load balancer controller puts internet-facing and
  # internal load balancers.
  public_subnet_tags = {
    "kubernetes.io/role/elb" = "1"
  }
  private_subnet_tags = {
    "kubernetes.io/role/internal-elb" = "1"
  }

  tags = var.tags
}

module "ebs_csi_irsa" {
  source  = "terraform-aws-modules/iam/aws//modules/iam-role-for-service-accounts-eks"
  version = "~> 5.39"

  role_name             = "${var.name}-ebs-csi"
  attach_ebs_csi_policy = true

  oidc_providers = {
    main = {
      provider_arn               = module.eks.oidc_provider_arn
      namespace_service_accounts = ["kube-system:ebs-csi-controller-sa"]
    }
  }

  tags = var.tags
}

module "eks" {
  source = "terraform-aws-modules/eks/aws"
  # v20's inputs (cluster_name, cluster_version, cluster_addons); v21
  # renamed them, so the major version is pinned.
  version = "~> 20.31"

  cluster_name    = var.name
  cluster_version = var.kubernetes_version

  vpc_id     = module.vpc.vpc_id
  subnet_ids = module.vpc.private_subnets

  cluster_endpoint_public_access       = true
  cluster_endpoint_public_access_cidrs = var.endpoint_public_access_cidrs

  # The identity that applies this gets cluster admin through an access
  # entry, and so do var.admin_role_arns (the release workflow's role).
  enable_cluster_creator_admin_permissions = true

  access_entries = {
    for arn in var.admin_role_arns : arn => {
      principal_arn = arn
      policy_associations = {
        admin = {
          policy_arn = "arn:aws:eks::aws:cluster-access-policy/AmazonEKSClusterAdminPolicy"
          access_scope = {
            type = "cluster"
          }
        }
      }
    }
  }

  cluster_addons = {
    coredns    = {}
    kube-proxy = {}
    vpc-cni    = {}
    aws-ebs-csi-driver = {
      service_account_role_arn = module.ebs_csi_irsa.iam_role_arn
    }
  }

  eks_managed_node_groups = {
    for i, az in var.azs : "tandem-${az}" => {
      subnet_ids     = [module.vpc.private_subnets[i]]
      instance_types = var.instance_types
      ami_type       = "AL2023_x86_64_STANDARD"
      min_size       = var.min_nodes_per_zone
      max_size       = var.max_nodes_per_zone
      desired_size   = var.desired_nodes_per_zone
      labels = {
        "tandem.dev/pool" = "tandem"
      }
    }
  }

  tags = var.tags
}
