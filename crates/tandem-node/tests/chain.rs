//! Chain checkpoints (`GET /v1/chain/{partition}`), against nodes run in
//! this process over one file log opened here (`Node::start_with_logs`):
//! two nodes of one log have the same checkpoints at the same seqs; a node
//! restarted from its snapshot has the checkpoints it had before, and
//! continues the rule as a node that never stopped; a node whose engine
//! limit differs agrees up to the first differing command and differs at
//! the first checkpoint after it. A new node seeded from a copy of
//! another node's snapshots (`snapshot.seed_from`) starts from the newest
//! one with its window and checkpoints, on a log that no longer holds the
//! seqs before it. Bad partitions and queries are 4xx naming the field.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{place_body, request, Resp, TempDir};
use tandem_log::{FileLog, FileLogConfig, FsyncPolicy, Log};
use tandem_node::{Node, NodeConfig};

/// A node served in this process on its own runtime.
struct TestNode {
    addr: SocketAddr,
    node: Arc<Node>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    rt: tokio::runtime::Runtime,
}

/// Test defaults: data in `dir/name`, short waits, no rate limit, a
/// checkpoint every `every` seqs.
fn config(dir: &TempDir, name: &str, every: u64) -> NodeConfig {
    let mut c = NodeConfig {
        data_dir: dir.path().join(name),
        node: name.into(),
        ..NodeConfig::default()
    };
    c.log.fsync = false;
    c.limits.wait_ms = 1_500;
    c.limits.account_rate = 0;
    c.limits.checkpoint_every = every;
    c.snapshot.background = false;
    c
}

fn file_log(dir: &TempDir) -> Arc<dyn Log> {
    let fc = FileLogConfig {
        fsync: FsyncPolicy::Never,
        ..FileLogConfig::default()
    };
    Arc::new(FileLog::open(dir.path().join("log"), fc).expect("open file log"))
}

impl TestNode {
    fn start(cfg: NodeConfig, log: &Arc<dyn Log>) -> TestNode {
        let (rt, listener, addr) = common::runtime_and_listener();
        let node = Node::start_with_logs(cfg, vec![Arc::clone(log)]).expect("start node");
        let tx = common::serve_node(&rt, listener, &node);
        common::wait_caught_up(&node);
        TestNode {
            addr,
            node,
            shutdown: Some(tx),
            rt,
        }
    }

    fn get(&self, path: &str) -> Resp {
        request(self.addr, "GET", path, &[], b"").unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    fn place(&self, id: &str, account: &str, price: &str) -> u64 {
        let body = place_body("M", id, account, "buy", price, "1");
        let r = request(self.addr, "POST", "/v1/orders", &[], body.as_bytes())
            .unwrap_or_else(|e| panic!("place {id}: {e}"));
        assert_eq!(r.status, 200, "{r}");
        r.json()["seq"].as_u64().expect("seq")
    }

    /// Waits until the node has applied `seq` (fails after 20 s).
    fn wait_applied(&self, seq: u64) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.node.partitions[0].applied_seq() < seq {
            assert!(Instant::now() < deadline, "seq {seq} not applied");
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// `(seq, output_hash)` of every checkpoint from `from`.
    fn checkpoints(&self, from: u64) -> Vec<(u64, String)> {
        let r = self.get(&format!("/v1/chain/0?from={from}&limit=4096"));
        assert_eq!(r.status, 200, "{r}");
        let v = r.json();
        v["checkpoints"]
            .as_array()
            .expect("checkpoints")
            .iter()
            .map(|c| {
                (
                    c["seq"].as_u64().expect("seq"),
                    c["output_hash"].as_str().expect("hash").to_owned(),
                )
            })
            .collect()
    }

    /// `(seq label, value)` of `tandem_chain_checkpoint_hash` for
    /// partition 0 in `/metrics`, if exported.
    fn checkpoint_metric(&self) -> Option<(u64, u64)> {
        let text = self.get("/metrics").text();
        let line = text.lines().find(|l| {
            l.starts_with("tandem_chain_checkpoint_hash{") && l.contains("partition=\"0\"")
        })?;
        let seq = line
            .split("seq=\"")
            .nth(1)?
            .split('"')
            .next()?
            .parse()
            .ok()?;
        let value = line.rsplit(' ').next()?.parse().ok()?;
        Some((seq, value))
    }

    fn stop(mut self) {
        self.shutdown_now();
    }

    fn shutdown_now(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
            let node = Arc::clone(&self.node);
            self.rt.block_on(async move {
                let _ = tokio::task::spawn_blocking(move || node.stop()).await;
            });
        }
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        self.shutdown_now();
    }
}

fn seqs(v: &[(u64, String)]) -> Vec<u64> {
    v.iter().map(|c| c.0).collect()
}

#[test]
fn two_nodes_of_one_log_have_the_same_checkpoints() {
    let dir = TempDir::new("chain-two");
    let log = file_log(&dir);
    let a = TestNode::start(config(&dir, "a", 10), &log);
    let b = TestNode::start(config(&dir, "b", 10), &log);
    let mut last = 0;
    for i in 0..45 {
        // Orders through both nodes; prices cross now and then so that
        // trades reach the chain too.
        let n = if i % 3 == 0 { &b } else { &a };
        let side_price = if i % 5 == 0 { "11" } else { "10" };
        let body = place_body(
            "M",
            &format!("o{i}"),
            &format!("acc{}", i % 4),
            if i % 2 == 0 { "buy" } else { "sell" },
            side_price,
            "1",
        );
        let r = request(n.addr, "POST", "/v1/orders", &[], body.as_bytes()).unwrap();
        assert_eq!(r.status, 200, "{r}");
        last = last.max(r.json()["seq"].as_u64().unwrap());
    }
    a.wait_applied(last);
    b.wait_applied(last);
    let (ca, cb) = (a.checkpoints(0), b.checkpoints(0));
    assert_eq!(seqs(&ca), vec![10, 20, 30, 40], "{ca:?}");
    assert_eq!(ca, cb);
    // Not all the same hash: the chain moves.
    assert_ne!(ca[0].1, ca[1].1);

    // The whole answer's shape, and one checkpoint by seq.
    let v = a.get("/v1/chain/0").json();
    assert_eq!(v["partition"], 0);
    assert_eq!(v["applied_seq"], last);
    assert_eq!(v["checkpoint_every"], 10);
    assert_eq!(
        v["log_id"].as_str(),
        a.get("/v1/status").json()["partitions"][0]["log_id"].as_str()
    );
    assert_eq!(
        v["output_hash"].as_str(),
        b.get("/v1/chain/0").json()["output_hash"].as_str()
    );
    let one = b.get("/v1/chain/0?seq=30");
    assert_eq!(one.status, 200, "{one}");
    assert_eq!(one.json()["output_hash"].as_str(), Some(ca[2].1.as_str()));
    assert_eq!(one.json()["seq"], 30);
    // `limit` takes the newest; `from` starts at a seq.
    assert_eq!(seqs(&a.checkpoints(25)), vec![30, 40]);
    let v = a.get("/v1/chain/0?limit=2").json();
    let newest: Vec<u64> = v["checkpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(newest, vec![30, 40]);
    let v = a.get("/v1/chain/0?from=11&limit=1").json();
    assert_eq!(v["checkpoints"][0]["seq"], 20, "{v}");

    // The newest checkpoint in /metrics: its seq as a label, the hash's
    // low 48 bits as the value, the same on both nodes.
    let (seq, value) = a.checkpoint_metric().expect("checkpoint metric");
    assert_eq!(seq, 40);
    assert_eq!(value, low48(&ca[3].1), "{ca:?}");
    assert_eq!(b.checkpoint_metric(), Some((seq, value)));
}

/// The low 48 bits of a hex output hash (its last 12 hex digits).
fn low48(hex: &str) -> u64 {
    u64::from_str_radix(&hex[hex.len() - 12..], 16).expect("hex hash")
}

#[test]
fn bad_partitions_and_queries_name_the_field() {
    let dir = TempDir::new("chain-bad");
    let log = file_log(&dir);
    let a = TestNode::start(config(&dir, "a", 4), &log);
    for i in 0..5 {
        a.place(&format!("o{i}"), "acc", "10");
    }
    for (path, status, field) in [
        ("/v1/chain/x", 400, "partition:"),
        ("/v1/chain/-1", 400, "partition:"),
        ("/v1/chain/1", 404, "partition:"),
        ("/v1/chain/0?seq=3", 404, "seq:"),
        ("/v1/chain/0?seq=8", 404, "seq:"),
        ("/v1/chain/0?seq=abc", 400, "seq:"),
        ("/v1/chain/0?seq=4&from=1", 400, "seq:"),
        ("/v1/chain/0?from=-3", 400, "from:"),
        ("/v1/chain/0?from=%zz", 400, "from:"),
        ("/v1/chain/0?limit=0", 400, "limit:"),
        ("/v1/chain/0?limit=4097", 400, "limit:"),
    ] {
        let r = a.get(path);
        assert_eq!(r.status, status, "{path}: {r}");
        let e = r.error();
        assert!(e.starts_with(field), "{path}: {e}");
    }
    // A seq not applied yet says so.
    let e = a.get("/v1/chain/0?seq=8").error();
    assert!(e.contains("applied only up to 5"), "{e}");
    assert_eq!(a.get("/v1/chain/0?seq=4").status, 200);
    let r = request(a.addr, "POST", "/v1/chain/0", &[], b"").unwrap();
    assert_eq!(r.status, 405, "{r}");
}

#[test]
fn a_node_restarted_from_its_snapshot_keeps_its_checkpoints() {
    let dir = TempDir::new("chain-restart");
    let log = file_log(&dir);
    let a = TestNode::start(config(&dir, "a", 7), &log);
    for i in 0..30 {
        a.place(&format!("o{i}"), &format!("acc{}", i % 3), "10");
    }
    let before = a.checkpoints(0);
    assert_eq!(seqs(&before), vec![7, 14, 21, 28]);
    a.stop();
    let snaps = std::fs::read_dir(dir.path().join("a").join("snapshots-0"))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect::<Vec<_>>();
    assert!(
        snaps
            .iter()
            .any(|n| n == "snapshot-00000000000000000030.tsnap")
            && snaps
                .iter()
                .any(|n| n == "checkpoints-00000000000000000030.bin"),
        "{snaps:?}"
    );

    // Restored at seq 30: the checkpoints before it come from the file
    // beside the snapshot (the replica does not apply those seqs again).
    let a = TestNode::start(config(&dir, "a", 7), &log);
    assert_eq!(a.node.partitions[0].applied_seq(), 30);
    assert_eq!(a.checkpoints(0), before);
    let mut last = 0;
    for i in 30..50 {
        last = a.place(&format!("o{i}"), &format!("acc{}", i % 3), "10");
    }
    assert_eq!(last, 50);
    // A node that replays the whole log from seq 1 agrees at every seq.
    let c = TestNode::start(config(&dir, "c", 7), &log);
    c.wait_applied(last);
    let after = a.checkpoints(0);
    assert_eq!(seqs(&after), vec![7, 14, 21, 28, 35, 42, 49]);
    assert_eq!(after, c.checkpoints(0));

    // A checkpoints file made with another K is not used: the ring starts
    // at the snapshot, and the rule goes on with the new K.
    a.stop();
    let a = TestNode::start(config(&dir, "a", 5), &log);
    assert_eq!(a.checkpoints(0), vec![]);
    for i in 50..56 {
        a.place(&format!("o{i}"), "acc0", "10");
    }
    assert_eq!(seqs(&a.checkpoints(0)), vec![55]);
}

#[test]
fn a_new_node_seeded_from_another_nodes_snapshot_needs_only_the_log_after_it() {
    let dir = TempDir::new("chain-seed");
    // Small segments, so that the log can drop the seqs a snapshot covers
    // (as a Kafka topic's retention would).
    let fc = FileLogConfig {
        fsync: FsyncPolicy::Never,
        segment_bytes: 2048,
        ..FileLogConfig::default()
    };
    let log: Arc<dyn Log> =
        Arc::new(FileLog::open(dir.path().join("log"), fc).expect("open file log"));
    let a = TestNode::start(config(&dir, "a", 7), &log);
    let mut first = None;
    for i in 0..30 {
        let body = place_body(
            "M",
            &format!("o{i}"),
            &format!("acc{}", i % 3),
            "buy",
            "10",
            "1",
        );
        let r = request(a.addr, "POST", "/v1/orders", &[], body.as_bytes()).unwrap();
        assert_eq!(r.status, 200, "{r}");
        first.get_or_insert(r.text());
    }
    let before = a.checkpoints(0);
    a.stop();
    // A copy of a's data directory, as an operator would bring it over.
    let copy = dir.path().join("copy-of-a");
    std::fs::create_dir_all(copy.join("snapshots-0")).unwrap();
    for e in std::fs::read_dir(dir.path().join("a").join("snapshots-0")).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), copy.join("snapshots-0").join(e.file_name())).unwrap();
    }
    log.truncate_before(30).expect("truncate");
    assert!(log.first_seq() > 1, "the log no longer holds seq 1");

    // Seeded: restored at 30, the log from 31 on is enough.
    let mut cfg = config(&dir, "b", 7);
    cfg.snapshot.seed_from = Some(copy.clone());
    let b = TestNode::start(cfg.clone(), &log);
    assert_eq!(b.node.partitions[0].applied_seq(), 30);
    assert_eq!(b.checkpoints(0), before);
    // The window came with it: a repeat of the first place gets its answer.
    let body = place_body("M", "o0", "acc0", "buy", "10", "1");
    let r = request(b.addr, "POST", "/v1/orders", &[], body.as_bytes()).unwrap();
    assert_eq!((r.status, r.text()), (200, first.clone().unwrap()));
    assert_eq!(b.place("o30", "acc0", "10"), 31);
    b.stop();
    // Restarted, b uses its own newer snapshot, not the seed.
    let b = TestNode::start(cfg, &log);
    assert_eq!(b.node.partitions[0].applied_seq(), 31);
    b.stop();

    // Not seeded, a new node cannot catch up on this log.
    let c = Node::start_with_logs(config(&dir, "c", 7), vec![Arc::clone(&log)]).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert!(!c.is_caught_up());
    assert!(c.stopped_thread().is_some_and(|t| t == "replica-0"));
    c.stop();

    // A seed that cannot be read stops the start, naming the setting.
    let bad = dir.path().join("not-a-dir");
    std::fs::write(&bad, "x").unwrap();
    let mut cfg = config(&dir, "d", 7);
    cfg.snapshot.seed_from = Some(dir.path().join("not-a-dir").join(".."));
    let e = match Node::start_with_logs(cfg, vec![Arc::clone(&log)]) {
        Ok(_) => panic!("a seed that cannot be read was used"),
        Err(e) => e.to_string(),
    };
    assert!(e.starts_with("snapshot.seed_from: "), "{e}");

    // The copy of a names a's log: a node of another log refuses it as a
    // seed, before anything is copied into its data directory.
    let other: Arc<dyn Log> = Arc::new(
        FileLog::open(
            dir.path().join("other-log"),
            FileLogConfig {
                fsync: FsyncPolicy::Never,
                ..FileLogConfig::default()
            },
        )
        .expect("open file log"),
    );
    let mut cfg = config(&dir, "e", 7);
    cfg.snapshot.seed_from = Some(copy.clone());
    let e = match Node::start_with_logs(cfg.clone(), vec![Arc::clone(&other)]) {
        Ok(_) => panic!("a seed of another log was used"),
        Err(e) => e.to_string(),
    };
    assert!(
        e.starts_with("snapshot.seed_from: ")
            && e.contains("a seed must come from a node of the same log"),
        "{e}"
    );
    assert!(!dir
        .path()
        .join("e/snapshots-0")
        .join("log-identity")
        .exists());
    // And b's data directory, started over the other log, is refused: it
    // would restore a's books there.
    let e = match Node::start_with_logs(config(&dir, "b", 7), vec![other]) {
        Ok(_) => panic!("a data directory of another log was used"),
        Err(e) => e.to_string(),
    };
    assert!(
        e.contains("a node's snapshots must come from its own log"),
        "{e}"
    );
    assert!(e.contains(&log.identity()), "{e}");
}

#[test]
fn a_node_with_another_engine_limit_differs_from_the_first_checkpoint_after_it() {
    let dir = TempDir::new("chain-diverge");
    let log = file_log(&dir);
    let stable = TestNode::start(config(&dir, "stable", 5), &log);
    let mut cfg = config(&dir, "canary", 5);
    cfg.limits.max_open_orders_per_account = 3;
    let canary = TestNode::start(cfg, &log);
    // Seqs 1..=7: one resting order per account; all agree.
    for i in 0..7 {
        assert_eq!(
            stable.place(&format!("a{i}"), &format!("acc{i}"), "10"),
            i + 1
        );
    }
    // Seqs 8..=12: five resting orders of one account. The canary refuses
    // the fourth (seq 11) with reason `limit`; stable accepts it.
    for i in 0..5 {
        stable.place(&format!("x{i}"), "heavy", "9");
    }
    for i in 0..8 {
        stable.place(&format!("z{i}"), &format!("acc{i}"), "8");
    }
    let last = 20;
    stable.wait_applied(last);
    canary.wait_applied(last);
    let (s, c) = (stable.checkpoints(0), canary.checkpoints(0));
    assert_eq!(seqs(&s), vec![5, 10, 15, 20]);
    assert_eq!(seqs(&c), seqs(&s));
    // Equal up to the last checkpoint before seq 11, different from the
    // first one after it on.
    assert_eq!(s[..2], c[..2]);
    assert_ne!(s[2].1, c[2].1);
    assert_ne!(s[3].1, c[3].1);
    // /metrics shows it: the same seq label, different values.
    let (ms, mc) = (stable.checkpoint_metric(), canary.checkpoint_metric());
    assert_eq!(ms, Some((20, low48(&s[3].1))));
    assert_eq!(mc, Some((20, low48(&c[3].1))));
    assert_ne!(ms, mc);
    // The differing command is the one the canary rejected.
    let o = canary.get("/v1/orders/M/x3?account=heavy");
    assert_eq!(o.status, 404, "{o}");
    let o = stable.get("/v1/orders/M/x3?account=heavy");
    assert_eq!(o.status, 200, "{o}");
}
