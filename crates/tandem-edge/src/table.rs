//! The live routing table: clusters with their weights and nodes, and each
//! node's health. Swapped whole (copy on write) when weights or node sets
//! change, so a request routes over one consistent table; a node's health
//! lives in a shared `NodeState` that survives table changes.
//!
//! Every change is a read-edit-install done under one writer lock, so no
//! change is lost to a concurrent one, and bumps the table's generation; a
//! write may name the generation it was based on and is refused when the
//! table has moved on since (compare-and-swap). Weights set through the
//! admin API are remembered as such: a reload of the file installs its node
//! sets but keeps those weights (until a reload asks for the file's), and a
//! hand-over passes them, with the generation, to the successor.
//!
//! Locks here and elsewhere in the edge are taken with [`lock`], [`read`]
//! and [`write`], which ignore poisoning: every writer computes its new
//! value first and installs it in one assignment, so a panic cannot leave
//! a value half-written, and one panicking request must not turn every
//! later one into a panic.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
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
    /// The log the node last said it serves (`x-tandem-log`), if any.
    log: Mutex<Option<String>>,
    /// `http://addr` and `addr` as a `host` header, parsed once (`None`:
    /// the address is not a URI authority).
    pub(crate) authority: Option<(http::Uri, http::HeaderValue)>,
    /// Idle keep-alive connections to the node (buffered requests).
    pub(crate) pool: crate::upstream::Pool,
}

impl NodeState {
    fn new(addr: &str) -> NodeState {
        NodeState {
            addr: addr.to_owned(),
            ready: AtomicBool::new(true),
            ejected_until_ms: AtomicU64::new(0),
            failures: AtomicU32::new(0),
            in_flight: AtomicU32::new(0),
            log: Mutex::new(None),
            authority: format!("http://{addr}")
                .parse::<http::Uri>()
                .ok()
                .zip(http::HeaderValue::from_str(addr).ok()),
            pool: crate::upstream::Pool::default(),
        }
    }

    /// The log id the node last reported.
    pub fn log(&self) -> Option<String> {
        lock(&self.log).clone()
    }

    /// Records the log id the node reported; true when it differs from the
    /// one known before.
    pub fn set_log(&self, id: &str) -> bool {
        let mut cur = lock(&self.log);
        if cur.as_deref() == Some(id) {
            return false;
        }
        *cur = Some(id.to_owned());
        true
    }

    /// Idle keep-alive connections to the node now.
    pub fn pooled(&self) -> usize {
        self.pool.idle()
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
    /// `name` as the `x-tandem-cluster` answer header, made once (`None`:
    /// not a valid header value, the header is left out).
    pub(crate) name_header: Option<http::HeaderValue>,
}

/// One consistent view of every cluster.
#[derive(Debug, Clone)]
pub struct Table {
    pub clusters: Vec<TableCluster>,
    /// Bumped at every change (reported by the admin API; a write may
    /// name the generation it was based on).
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

/// A mutex's guard, even if a panicking holder poisoned it (see the
/// module comment for why that is safe here).
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A read guard, poisoned or not.
pub fn read<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(PoisonError::into_inner)
}

/// A write guard, poisoned or not.
pub fn write<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(PoisonError::into_inner)
}

/// A change to the routes that was not installed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WriteError {
    /// The write was based on a generation the table has left.
    #[error("generation: the routes changed since generation {based_on}; the current generation is {current}")]
    Stale { based_on: u64, current: u64 },
    /// The write would not be a valid cluster list (names the field).
    #[error("{0}")]
    Invalid(String),
    /// The process is handing over to a successor, which takes the routes
    /// as they are now; a write here would be lost.
    #[error("routes: the edge is handing over to a new process; retry the write shortly")]
    HandingOver,
}

/// What a reload of the file did to the weights.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reloaded {
    /// The generation installed.
    pub generation: u64,
    /// Weights set through the admin API that the reload kept instead of
    /// the file's, by cluster.
    pub weights_kept: BTreeMap<String, u32>,
}

/// What writers share, under one lock.
#[derive(Debug, Default)]
struct Writer {
    /// Node states by address.
    nodes: BTreeMap<String, Arc<NodeState>>,
    /// Weights set through the admin API (and not since replaced by the
    /// file's on request), by cluster name.
    admin_weights: BTreeMap<String, u32>,
    /// A hand-over has taken the state: writes are refused until `thaw`.
    frozen: bool,
}

/// The current table and the registry of node states.
#[derive(Debug)]
pub struct Routes {
    current: RwLock<Arc<Table>>,
    writer: Mutex<Writer>,
    /// Edge clock origin for `ejected_until_ms`.
    pub epoch: Instant,
}

impl Routes {
    /// Routes over `clusters` (already checked), at generation 1.
    pub fn new(clusters: &[ClusterConfig]) -> Routes {
        let r = Routes {
            current: RwLock::new(Arc::new(Table {
                clusters: Vec::new(),
                generation: 0,
            })),
            writer: Mutex::default(),
            epoch: Instant::now(),
        };
        let mut w = lock(&r.writer);
        r.install(&mut w, clusters, 1);
        drop(w);
        r
    }

    /// Milliseconds since the edge started.
    pub fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// The table requests route over now.
    pub fn table(&self) -> Arc<Table> {
        Arc::clone(&read(&self.current))
    }

    /// The current generation and the weights set through the admin API
    /// (one consistent view: what a hand-over passes on).
    pub fn admin_state(&self) -> (u64, BTreeMap<String, u32>) {
        let (table, admin) = self.view();
        (table.generation, admin)
    }

    /// Refuses every write from now on (until `thaw`) and returns the
    /// generation and the admin-set weights, for a successor to `restore`:
    /// no write can land here after the successor took the state.
    pub fn freeze(&self) -> (u64, BTreeMap<String, u32>) {
        let mut w = lock(&self.writer);
        w.frozen = true;
        (self.table().generation, w.admin_weights.clone())
    }

    /// Accepts writes again (the hand-over failed).
    pub fn thaw(&self) {
        lock(&self.writer).frozen = false;
    }

    /// The table and the weights set through the admin API, as one
    /// consistent view.
    pub fn view(&self) -> (Arc<Table>, BTreeMap<String, u32>) {
        let w = lock(&self.writer);
        (self.table(), w.admin_weights.clone())
    }

    /// Installs `clusters` as generation `generation`. Called with the
    /// writer lock held; everything is computed before anything is
    /// assigned. Node states are kept for addresses that stay; states of
    /// removed nodes are dropped.
    fn install(&self, w: &mut Writer, clusters: &[ClusterConfig], generation: u64) {
        let mut keep = BTreeMap::new();
        let table_clusters = clusters
            .iter()
            .map(|c| TableCluster {
                name_header: http::HeaderValue::from_str(&c.name).ok(),
                name: c.name.clone(),
                version: c.version.clone(),
                role: c.role,
                weight: c.weight,
                nodes: c
                    .nodes
                    .iter()
                    .map(|n| {
                        let state = w
                            .nodes
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
        let table = Arc::new(Table {
            clusters: table_clusters,
            generation,
        });
        w.admin_weights
            .retain(|name, _| clusters.iter().any(|c| &c.name == name));
        w.nodes = keep;
        *write(&self.current) = table;
    }

    /// The generation a write must start from: refuses `based_on` when the
    /// table has moved past it.
    fn check_base(&self, w: &Writer, based_on: Option<u64>) -> Result<u64, WriteError> {
        if w.frozen {
            return Err(WriteError::HandingOver);
        }
        let current = self.table().generation;
        match based_on {
            Some(b) if b != current => Err(WriteError::Stale {
                based_on: b,
                current,
            }),
            _ => Ok(current),
        }
    }

    /// Changes only weights (by cluster name), through the admin API: they
    /// are remembered as admin-set. Unknown names, and a result no request
    /// could route over, are refused; so is a write based on another
    /// generation than the current one. Returns the new generation.
    pub fn set_weights(
        &self,
        weights: &BTreeMap<String, u32>,
        based_on: Option<u64>,
    ) -> Result<u64, WriteError> {
        let mut w = lock(&self.writer);
        let current = self.check_base(&w, based_on)?;
        let mut configs = self.table().configs();
        for (name, weight) in weights {
            match configs.iter_mut().find(|c| &c.name == name) {
                Some(c) => c.weight = *weight,
                None => {
                    return Err(WriteError::Invalid(format!(
                        "weights.{name}: no such cluster"
                    )))
                }
            }
        }
        crate::config::check_clusters(&configs).map_err(|e| WriteError::Invalid(e.to_string()))?;
        let mut admin = w.admin_weights.clone();
        admin.extend(weights.iter().map(|(k, v)| (k.clone(), *v)));
        self.install(&mut w, &configs, current + 1);
        w.admin_weights = admin;
        Ok(current + 1)
    }

    /// Installs a whole cluster list through the admin API: every weight in
    /// it counts as admin-set. Same generation rule as `set_weights`.
    pub fn set_clusters(
        &self,
        clusters: &[ClusterConfig],
        based_on: Option<u64>,
    ) -> Result<u64, WriteError> {
        crate::config::check_clusters(clusters).map_err(|e| WriteError::Invalid(e.to_string()))?;
        let mut w = lock(&self.writer);
        let current = self.check_base(&w, based_on)?;
        let admin = clusters
            .iter()
            .map(|c| (c.name.clone(), c.weight))
            .collect();
        self.install(&mut w, clusters, current + 1);
        w.admin_weights = admin;
        Ok(current + 1)
    }

    /// Installs the clusters of a reloaded file: their node sets, versions
    /// and roles, and their weights except where the admin API set one
    /// (kept, and reported) — unless `file_weights`, which takes every
    /// weight from the file and forgets the admin-set ones.
    pub fn reload(
        &self,
        clusters: &[ClusterConfig],
        file_weights: bool,
    ) -> Result<Reloaded, WriteError> {
        let mut w = lock(&self.writer);
        let current = self.check_base(&w, None)?;
        let admin = if file_weights {
            BTreeMap::new()
        } else {
            w.admin_weights.clone()
        };
        let mut merged = clusters.to_vec();
        let mut weights_kept = BTreeMap::new();
        for c in &mut merged {
            if let Some(&weight) = admin.get(&c.name) {
                c.weight = weight;
                weights_kept.insert(c.name.clone(), weight);
            }
        }
        crate::config::check_clusters(&merged).map_err(|e| WriteError::Invalid(e.to_string()))?;
        self.install(&mut w, &merged, current + 1);
        w.admin_weights = weights_kept.clone();
        Ok(Reloaded {
            generation: current + 1,
            weights_kept,
        })
    }

    /// Takes over a predecessor's admin-set weights and generation (after
    /// a hand-over), so the weights it served survive and a write based on
    /// the generation it showed still applies. Weights of clusters this
    /// table lacks are dropped.
    pub fn restore(
        &self,
        generation: u64,
        weights: &BTreeMap<String, u32>,
    ) -> Result<(), WriteError> {
        let mut w = lock(&self.writer);
        let mut configs = self.table().configs();
        let mut admin = BTreeMap::new();
        for c in &mut configs {
            if let Some(&weight) = weights.get(&c.name) {
                c.weight = weight;
                admin.insert(c.name.clone(), weight);
            }
        }
        crate::config::check_clusters(&configs).map_err(|e| WriteError::Invalid(e.to_string()))?;
        let generation = generation.max(self.table().generation);
        self.install(&mut w, &configs, generation);
        w.admin_weights = admin;
        Ok(())
    }

    /// Every node state, by address (for the health checker and metrics).
    pub fn node_states(&self) -> Vec<Arc<NodeState>> {
        lock(&self.writer).nodes.values().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{NodeAddr, Role};

    fn clusters(n: usize) -> Vec<ClusterConfig> {
        (0..n)
            .map(|i| ClusterConfig {
                name: format!("c{i}"),
                version: "v".into(),
                role: Role::Stable,
                weight: 1,
                nodes: vec![NodeAddr {
                    addr: format!("127.0.0.1:{}", 9000 + i),
                    zone: "z".into(),
                }],
            })
            .collect()
    }

    fn weights(r: &Routes) -> Vec<u32> {
        r.table().clusters.iter().map(|c| c.weight).collect()
    }

    /// Threads each writing their own cluster's weight, many times, with
    /// no generation: every last write stands (before writes were
    /// serialised, one thread's install of a stale copy undid another's).
    #[test]
    fn concurrent_weight_writes_are_never_lost() {
        const THREADS: usize = 8;
        const WRITES: u32 = 300;
        for _round in 0..5 {
            let r = Arc::new(Routes::new(&clusters(THREADS)));
            let handles: Vec<_> = (0..THREADS)
                .map(|t| {
                    let r = Arc::clone(&r);
                    std::thread::spawn(move || {
                        for v in 1..=WRITES {
                            let w = BTreeMap::from([(format!("c{t}"), v)]);
                            r.set_weights(&w, None).unwrap();
                        }
                    })
                })
                .collect();
            for h in handles {
                h.join().unwrap();
            }
            assert_eq!(weights(&r), vec![WRITES; THREADS]);
            assert_eq!(r.table().generation, 1 + u64::from(WRITES) * THREADS as u64);
        }
    }

    #[test]
    fn a_write_based_on_an_old_generation_is_refused() {
        let r = Routes::new(&clusters(2));
        assert_eq!(r.table().generation, 1);
        let g = r
            .set_weights(&BTreeMap::from([("c0".into(), 5)]), Some(1))
            .unwrap();
        assert_eq!(g, 2);
        let e = r
            .set_weights(&BTreeMap::from([("c1".into(), 7)]), Some(1))
            .unwrap_err();
        assert_eq!(
            e,
            WriteError::Stale {
                based_on: 1,
                current: 2
            }
        );
        assert!(e.to_string().starts_with("generation:"), "{e}");
        assert_eq!(weights(&r), vec![5, 1]);
        // A bad write changes nothing, the generation included.
        let e = r
            .set_weights(&BTreeMap::from([("nope".into(), 7)]), Some(2))
            .unwrap_err();
        assert!(e.to_string().contains("weights.nope"), "{e}");
        assert_eq!(r.table().generation, 2);
    }

    #[test]
    fn a_reload_keeps_admin_weights_unless_asked_for_the_file_ones() {
        let r = Routes::new(&clusters(3));
        r.set_weights(
            &BTreeMap::from([("c0".into(), 100), ("c1".into(), 0)]),
            None,
        )
        .unwrap();
        let mut file = clusters(3);
        file[0].weight = 10;
        file[1].weight = 20;
        file[2].weight = 30;
        file[2].nodes[0].addr = "127.0.0.1:9999".into();
        let got = r.reload(&file, false).unwrap();
        assert_eq!(
            got.weights_kept,
            BTreeMap::from([("c0".into(), 100), ("c1".into(), 0)])
        );
        assert_eq!(weights(&r), vec![100, 0, 30]);
        assert_eq!(r.table().clusters[2].nodes[0].state.addr, "127.0.0.1:9999");
        // Kept again on the next reload; the file's on request.
        assert_eq!(r.reload(&file, false).unwrap().weights_kept.len(), 2);
        let got = r.reload(&file, true).unwrap();
        assert!(got.weights_kept.is_empty());
        assert_eq!(weights(&r), vec![10, 20, 30]);
        assert_eq!(r.admin_state().1, BTreeMap::new());
    }

    #[test]
    fn a_successor_takes_the_weights_and_the_generation() {
        let old = Routes::new(&clusters(2));
        for _ in 0..4 {
            old.set_weights(
                &BTreeMap::from([("c0".into(), 100), ("c1".into(), 0)]),
                None,
            )
            .unwrap();
        }
        let (generation, admin) = old.freeze();
        let no = BTreeMap::from([("c1".into(), 9)]);
        assert_eq!(old.set_weights(&no, None), Err(WriteError::HandingOver));
        assert_eq!(
            old.reload(&clusters(2), false),
            Err(WriteError::HandingOver)
        );
        assert_eq!(old.admin_state(), (generation, admin.clone()));
        let new = Routes::new(&clusters(2));
        new.restore(generation, &admin).unwrap();
        assert_eq!(weights(&new), vec![100, 0]);
        assert_eq!(new.table().generation, generation);
        assert_eq!(new.admin_state(), (generation, admin));
        new.set_weights(&BTreeMap::from([("c1".into(), 5)]), Some(generation))
            .unwrap();
        old.thaw();
        old.set_weights(&no, None).unwrap();
    }

    /// A panic while a lock is held (here: the table's) leaves the routes
    /// usable: reads and writes go on.
    #[test]
    fn a_poisoned_lock_does_not_stop_the_routes() {
        let r = Arc::new(Routes::new(&clusters(2)));
        let r2 = Arc::clone(&r);
        let _ = std::thread::spawn(move || {
            let _g = r2.current.write().unwrap();
            let _w = r2.writer.lock().unwrap();
            panic!("poison the locks");
        })
        .join();
        assert!(r.current.is_poisoned() && r.writer.is_poisoned());
        assert_eq!(r.table().generation, 1);
        r.set_weights(&BTreeMap::from([("c0".into(), 3)]), Some(1))
            .unwrap();
        assert_eq!(weights(&r), vec![3, 1]);
        assert_eq!(r.node_states().len(), 2);
        let n = &r.table().clusters[0].nodes[0].state;
        let n2 = Arc::clone(n);
        let _ = std::thread::spawn(move || {
            let _g = n2.log.lock().unwrap();
            panic!("poison the node's log lock");
        })
        .join();
        assert!(n.set_log("L1"));
        assert_eq!(n.log().as_deref(), Some("L1"));
    }
}
