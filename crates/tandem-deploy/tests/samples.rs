//! The sample configurations agree with the rollout plan they are samples
//! for (`deploy/rollout/seed.yaml`): the edge's (`deploy/edge`, read by the
//! edge's own parser and checks), the Cloudflare Worker's routes
//! (`TANDEM_ROUTES` in `deploy/cloudflare/wrangler.toml`) and the node's
//! (`deploy/node`, read by the node's own parser) name the same clusters
//! with the same roles, zones and first-phase weights, and the versions
//! they state are consistent with those roles.
//!
//! One thing does not agree and is not checked: the node sample's `cluster`
//! and `zone` labels are "local" and "local-a", because that file is also
//! the node's built-in default (tandem-node's config test keeps them
//! equal) and the default is not changed from here. They only label the
//! node's status and metrics; the controller attributes nodes to clusters
//! by the edges' routes. A deployment sets them (TANDEM_CLUSTER,
//! TANDEM_ZONE or its own config file).

use std::collections::BTreeMap;

use serde_json::Value;
use tandem_deploy::{deploy, yaml_docs};
use tandem_edge::EdgeConfig;
use tandem_node::NodeConfig;

/// What the plan says of one cluster.
#[derive(Debug)]
struct PlanCluster {
    role: String,
    zones: Vec<String>,
    weight_first_phase: u64,
}

/// The seed plan's clusters by name.
fn plan() -> BTreeMap<String, PlanCluster> {
    let text = std::fs::read_to_string(deploy("rollout/seed.yaml")).expect("seed plan");
    let docs = yaml_docs(&text).expect("seed plan is YAML");
    let plan = &docs[0];
    let first = &plan["phases"][0]["weights"];
    let clusters = plan["clusters"].as_object().expect("plan clusters");
    assert!(!clusters.is_empty());
    clusters
        .iter()
        .map(|(name, c)| {
            let zones = c["zones"]
                .as_array()
                .expect("zones")
                .iter()
                .map(|z| z.as_str().expect("zone name").to_string())
                .collect();
            let weight_first_phase = first[name]
                .as_u64()
                .unwrap_or_else(|| panic!("the plan's first phase weighs {name}"));
            let role = c["version"].as_str().expect("version: stable|canary");
            let pc = PlanCluster {
                role: role.to_string(),
                zones,
                weight_first_phase,
            };
            (name.clone(), pc)
        })
        .collect()
}

fn edge() -> EdgeConfig {
    let text = std::fs::read_to_string(deploy("edge/tandem-edge.toml")).expect("edge sample");
    let cfg = EdgeConfig::parse(&text).expect("the edge sample parses");
    cfg.check()
        .expect("the edge sample passes the edge's checks");
    cfg
}

/// `TANDEM_ROUTES` of the Worker: `{"clusters":[{name, role, weight, origin}]}`.
fn worker_routes() -> Vec<Value> {
    let text = std::fs::read_to_string(deploy("cloudflare/wrangler.toml")).expect("wrangler.toml");
    let doc: toml::Value = toml::from_str(&text).expect("wrangler.toml is TOML");
    let routes = doc["vars"]["TANDEM_ROUTES"]
        .as_str()
        .expect("[vars] TANDEM_ROUTES is a string");
    let routes: Value = serde_json::from_str(routes).expect("TANDEM_ROUTES is JSON");
    routes["clusters"]
        .as_array()
        .expect("TANDEM_ROUTES.clusters")
        .clone()
}

fn node() -> NodeConfig {
    let text = std::fs::read_to_string(deploy("node/tandem-node.toml")).expect("node sample");
    NodeConfig::parse(&text).expect("the node sample parses")
}

#[test]
fn the_edge_sample_has_the_plans_clusters_roles_zones_and_first_weights() {
    let plan = plan();
    let edge = edge();
    let mut names: Vec<&String> = edge.clusters.iter().map(|c| &c.name).collect();
    names.sort();
    assert_eq!(
        names,
        plan.keys().collect::<Vec<_>>(),
        "the edge sample's clusters are the plan's"
    );
    for c in &edge.clusters {
        let p = &plan[&c.name];
        assert_eq!(c.role.as_str(), p.role, "edge sample: role of {}", c.name);
        assert_eq!(
            u64::from(c.weight),
            p.weight_first_phase,
            "edge sample: weight of {} is the plan's first phase's",
            c.name
        );
        for n in &c.nodes {
            assert!(
                p.zones.contains(&n.zone),
                "edge sample: node {} of {} is in zone {}, not one of the plan's {:?}",
                n.addr,
                c.name,
                n.zone,
                p.zones
            );
        }
    }
    assert!(
        plan.values().any(|p| p.zones.contains(&edge.zone)),
        "the edge sample's own zone {} is one of the plan's zones",
        edge.zone
    );
}

#[test]
fn the_edge_samples_versions_follow_the_roles() {
    let edge = edge();
    let version_of = |role: &str| -> Vec<&str> {
        let mut v: Vec<&str> = edge
            .clusters
            .iter()
            .filter(|c| c.role.as_str() == role)
            .map(|c| c.version.as_str())
            .collect();
        v.sort();
        v.dedup();
        v
    };
    let stable = version_of("stable");
    let canary = version_of("canary");
    assert_eq!(
        stable.len(),
        1,
        "every stable cluster runs one version: {stable:?}"
    );
    assert_eq!(
        canary.len(),
        1,
        "every canary cluster runs one version: {canary:?}"
    );
    assert_ne!(
        stable, canary,
        "the canary runs another version than stable"
    );
}

#[test]
fn the_workers_routes_have_the_plans_clusters_roles_and_first_weights() {
    let plan = plan();
    let routes = worker_routes();
    let mut seen: Vec<&str> = routes
        .iter()
        .map(|r| r["name"].as_str().expect("route name"))
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        plan.keys().map(String::as_str).collect::<Vec<_>>(),
        "TANDEM_ROUTES names the plan's clusters"
    );
    for r in &routes {
        let name = r["name"].as_str().unwrap();
        let p = &plan[name];
        assert_eq!(r["role"], p.role.as_str(), "TANDEM_ROUTES: role of {name}");
        assert_eq!(
            r["weight"].as_u64(),
            Some(p.weight_first_phase),
            "TANDEM_ROUTES: weight of {name} is the plan's first phase's"
        );
    }
}

#[test]
fn the_node_sample_is_what_the_edge_sample_expects_at_its_address() {
    let plan = plan();
    let edge = edge();
    let node = node();
    let addr = node.listen.to_string();
    let cluster = edge
        .clusters
        .iter()
        .find(|c| c.nodes.iter().any(|n| n.addr == addr))
        .unwrap_or_else(|| panic!("the edge sample routes to the node sample's {addr}"));
    assert_eq!(
        node.role.as_str(),
        plan[&cluster.name].role,
        "the node sample's role is that of the plan's {}",
        cluster.name
    );
    assert_eq!(
        node.version, cluster.version,
        "the node sample reports the version the edge sample gives {}",
        cluster.name
    );
}
