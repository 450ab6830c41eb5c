//! The live routing table: clusters with their weights and nodes, and each
//! node's health. Swapped whole (copy on write) when weights or node sets
//! change, so a request routes over one consistent table; a node's health
//! lives in a shared `NodeState` that survives table changes.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use crate::config::{ClusterConfig, Role};

/// Health of one node, shared by every table that lists it.
#[derive(Debug)]
pub struct NodeState {
    pub addr: String,
    /// Last active check passed (`/readyz` 200). Starts true so a new node
    /// serves at once; the first check corrects it.
    pub ready: AtomicBool,
    /// Passive ejection: milliseconds (edge clock) until which the node
    /// gets nothing new; 0 = not ejected.
    pub ejected_until_ms: AtomicU64,
    /// Failures in a row (connect errors, 502/503/504).
    pub failures: AtomicU32,
    /// Requests in flight to this node.
    pub in_flight: AtomicU32,
}

impl NodeState {
    fn new(addr: &str) -> NodeState {
        NodeState {
            addr: addr.to_owned(),
            ready: AtomicBool::new(true),
            ejected_until_ms: AtomicU64::new(0),
            failures: AtomicU32::new(0),
            in_flight: AtomicU32::new(0),
        }
    }

    /// May this node receive a new request at `now_ms`?
    pub fn available(&self, now_ms: u64) -> bool {
        self.ready.load(Ordering::Relaxed)
            && self.ejected_until_ms.load(Ordering::Relaxed) <= now_ms
    }
}

/// A node as a table lists it.
#[derive(Debug, Clone)]
pub struct TableNode {
    pub zone: String,
    pub state: Arc<NodeState>,
}

/// A cluster as a table lists it.
#[derive(Debug, Clone)]
pub struct TableCluster {
    pub name: String,
    pub version: String,
    pub role: Role,
    pub weight: u32,
    pub nodes: Vec<TableNode>,
}

/// One consistent view of every cluster.
#[derive(Debug, Clone)]
pub struct Table {
    pub clusters: Vec<TableCluster>,
    /// Bumped at every change (reported by the admin API).
    pub generation: u64,
}

impl Table {
    /// The clusters as the routing function sees them.
    pub fn route_clusters(&self) -> Vec<tandem_route::Cluster<'_>> {
        self.clusters
            .iter()
            .map(|c| tandem_route::Cluster {
                name: &c.name,
                role: match c.role {
                    Role::Stable => tandem_route::Role::Stable,
                    Role::Canary => tandem_route::Role::Canary,
                },
                weight: c.weight,
            })
            .collect()
    }

    /// The configs this table was built from (for the admin API).
    pub fn configs(&self) -> Vec<ClusterConfig> {
        self.clusters
            .iter()
            .map(|c| ClusterConfig {
                name: c.name.clone(),
                version: c.version.clone(),
                role: c.role,
                weight: c.weight,
                nodes: c
                    .nodes
                    .iter()
                    .map(|n| crate::config::NodeAddr {
                        addr: n.state.addr.clone(),
                        zone: n.zone.clone(),
                    })
                    .collect(),
            })
            .collect()
    }
}

/// The current table and the registry of node states.
#[derive(Debug)]
pub struct Routes {
    current: RwLock<Arc<Table>>,
    nodes: Mutex<BTreeMap<String, Arc<NodeState>>>,
    /// Edge clock origin for `ejected_until_ms`.
    pub epoch: Instant,
}

impl Routes {
    pub fn new(clusters: &[ClusterConfig]) -> Routes {
        let r = Routes {
            current: RwLock::new(Arc::new(Table {
                clusters: Vec::new(),
                generation: 0,
            })),
            nodes: Mutex::default(),
            epoch: Instant::now(),
        };
        r.replace(clusters);
        r
    }

    /// Milliseconds since the edge started.
    pub fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// The table requests route over now.
    pub fn table(&self) -> Arc<Table> {
        Arc::clone(&self.current.read().expect("routes lock"))
    }

    /// Installs a new cluster list (already checked). Node states are kept
    /// for addresses that stay; states of removed nodes are dropped.
    pub fn replace(&self, clusters: &[ClusterConfig]) {
        let mut reg = self.nodes.lock().expect("node registry lock");
        let mut keep = BTreeMap::new();
        let table_clusters = clusters
            .iter()
            .map(|c| TableCluster {
                name: c.name.clone(),
                version: c.version.clone(),
                role: c.role,
                weight: c.weight,
                nodes: c
                    .nodes
                    .iter()
                    .map(|n| {
                        let state = reg
                            .get(&n.addr)
                            .cloned()
                            .unwrap_or_else(|| Arc::new(NodeState::new(&n.addr)));
                        keep.insert(n.addr.clone(), Arc::clone(&state));
                        TableNode {
                            zone: n.zone.clone(),
                            state,
                        }
                    })
                    .collect(),
            })
            .collect();
        *reg = keep;
        let mut cur = self.current.write().expect("routes lock");
        let generation = cur.generation + 1;
        *cur = Arc::new(Table {
            clusters: table_clusters,
            generation,
        });
    }

    /// Changes only weights (by cluster name); unknown names are an error.
    pub fn set_weights(&self, weights: &BTreeMap<String, u32>) -> Result<(), String> {
        let table = self.table();
        let mut configs = table.configs();
        for (name, w) in weights {
            match configs.iter_mut().find(|c| &c.name == name) {
                Some(c) => c.weight = *w,
                None => return Err(format!("weights.{name}: no such cluster")),
            }
        }
        crate::config::check_clusters(&configs).map_err(|e| e.to_string())?;
        self.replace(&configs);
        Ok(())
    }

    /// Every node state (for the health checker).
    pub fn node_states(&self) -> Vec<Arc<NodeState>> {
        self.nodes
            .lock()
            .expect("node registry lock")
            .values()
            .cloned()
            .collect()
    }
}
