//! Three `tandem node` processes over one real Kafka-protocol broker
//! (`tansu`, started per test on a free loopback port), a two-partition
//! topic, and clients that send a few thousand orders round-robin from
//! several threads. These are the node's "done when" tests: the nodes agree
//! (same `applied_seq` and `output_hash` per partition), every order is
//! applied exactly once however it was retried, a node killed with SIGKILL
//! under load loses nothing and comes back from its snapshot to the same
//! hash, and a node stopped with SIGTERM under load fails no request of a
//! client that retries connection errors and 503s on another node.
//!
//! The node binary is not built by these tests: they run
//! `target/<profile>/tandem` next to the test executable (or `$TANDEM_BIN`),
//! so run `cargo build -p tandem-cli` first. The broker is `$TANSU_BIN` or
//! `tansu` on the PATH (see `tandem_kafka::tansu::INSTALL`). The flow is
//! fixed by a seed (`TANDEM_TEST_SEED` overrides it), printed on failure
//! with the counts.

mod common;

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::{free_port, place_body, Broker, Conn, Resp, TempDir};

/// One cluster at a time: each is a broker and three nodes, on 2 cores.
static SERIAL: Mutex<()> = Mutex::new(());

const PARTITIONS: u32 = 2;
const TOPIC: &str = "orders";
/// Markets of the flow; both partitions get some (checked).
const MARKETS: [&str; 6] = [
    "BTC-USD", "ETH-USD", "SOL-USD", "ADA-USD", "XRP-USD", "DOT-USD",
];

fn seed() -> u64 {
    std::env::var("TANDEM_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_7a4d)
}

/// The `tandem` binary beside this test executable (target/<profile>/deps/).
fn tandem_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("TANDEM_BIN") {
        return p.into();
    }
    let exe = std::env::current_exe().expect("test executable path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test executable in target/<profile>/deps");
    let bin = profile_dir.join("tandem");
    assert!(
        bin.exists(),
        "{} is missing: these tests run the node binary; build it first with \
         `cargo build -p tandem-cli` (same profile as the tests), or set TANDEM_BIN",
        bin.display()
    );
    bin
}

/// The tail of a log file, for failure messages.
fn tail(path: &Path, bytes: usize) -> String {
    let s = std::fs::read_to_string(path).unwrap_or_default();
    let start = s.len().saturating_sub(bytes);
    let start = (start..s.len())
        .find(|&i| s.is_char_boundary(i))
        .unwrap_or(s.len());
    s[start..].to_owned()
}

/// One `tandem node` process, its config file, data dir and log.
struct NodeProc {
    name: String,
    addr: SocketAddr,
    bootstrap: String,
    data: PathBuf,
    config: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl NodeProc {
    fn new(dir: &Path, name: &str, bootstrap: &str) -> NodeProc {
        let data = dir.join(name);
        std::fs::create_dir_all(&data).expect("node dir");
        let n = NodeProc {
            name: name.into(),
            addr: SocketAddr::from(([127, 0, 0, 1], free_port())),
            bootstrap: bootstrap.into(),
            config: data.join("tandem-node.toml"),
            log: data.join("node.log"),
            data,
            child: None,
        };
        n.write_config();
        n
    }

    fn write_config(&self) {
        let text = format!(
            r#"# Written by tests/cluster.rs.
config_version = 1
listen = "{addr}"
node = "{name}"
cluster = "test"
zone = "test-a"
data_dir = "{data}"

[log]
kind = "kafka"
kafka_brokers = "{bootstrap}"
kafka_topic = "{TOPIC}"
kafka_partitions = {PARTITIONS}
kafka_create_topic = false
max_batch = 256

[snapshot]
every_commands = 500
every_secs = 0
keep = 2

[limits]
account_rate = 0
wait_ms = 10000

[http]
drain_grace_ms = 1000
drain_timeout_secs = 15
"#,
            addr = self.addr,
            name = self.name,
            data = self.data.join("state").display(),
            bootstrap = self.bootstrap,
        );
        std::fs::write(&self.config, text).expect("write node config");
    }

    /// Starts the process and waits until `/readyz` answers 200. If its
    /// port was taken meanwhile (the probe is racy), moves to another.
    fn start(&mut self) {
        for _ in 0..3 {
            match self.try_start() {
                Ok(()) => return,
                Err(log) if log.contains("listen on") => {
                    self.addr.set_port(free_port());
                    self.write_config();
                }
                Err(log) => panic!("{} did not start:\n{log}", self.name),
            }
        }
        panic!("{} found no free port", self.name);
    }

    fn try_start(&mut self) -> Result<(), String> {
        assert!(self.child.is_none(), "{} already running", self.name);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("node log");
        let mut cmd = Command::new(tandem_bin());
        cmd.arg("node").arg("--config").arg(&self.config);
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("TANDEM_") {
                cmd.env_remove(k);
            }
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("run {}: {e}", tandem_bin().display()));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().expect("try_wait") {
                self.child = None;
                return Err(format!("exited with {status}:\n{}", tail(&self.log, 3000)));
            }
            if common::request(self.addr, "GET", "/readyz", &[], b"").is_ok_and(|r| r.status == 200)
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                self.kill();
                return Err(format!("not ready within 60 s:\n{}", tail(&self.log, 3000)));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL: no drain, no final snapshot.
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM; the caller waits for the exit.
    fn term(&mut self) -> Child {
        let child = self.child.take().expect("running");
        let ok = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("run kill")
            .success();
        assert!(ok, "kill -TERM {}", child.id());
        child
    }

    fn get(&self, path: &str) -> Resp {
        common::request(self.addr, "GET", path, &[], b"")
            .unwrap_or_else(|e| panic!("{} GET {path}: {e}", self.name))
    }

    /// `(applied_seq, output_hash)` per partition.
    fn status(&self) -> Vec<(u64, String)> {
        let s = self.get("/v1/status").json();
        let parts = s["partitions"].as_array().expect("partitions");
        assert_eq!(parts.len(), PARTITIONS as usize, "{s}");
        parts
            .iter()
            .enumerate()
            .map(|(i, p)| {
                assert_eq!(p["id"].as_u64(), Some(i as u64), "{s}");
                (
                    p["applied_seq"].as_u64().expect("applied_seq"),
                    p["output_hash"].as_str().expect("output_hash").to_owned(),
                )
            })
            .collect()
    }

    /// Sum over partitions of `tandem_book_taken_ids` (ids ever accepted).
    fn taken_ids(&self) -> u64 {
        self.get("/metrics")
            .text()
            .lines()
            .filter(|l| l.starts_with("tandem_book_taken_ids{"))
            .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
            .sum()
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A broker with a two-partition topic and three running nodes.
struct Cluster {
    nodes: Vec<NodeProc>,
    _broker: Broker,
    _dir: TempDir,
}

impl Cluster {
    fn start(tag: &str) -> Cluster {
        let dir = TempDir::new(tag);
        let broker_dir = dir.path().join("broker");
        std::fs::create_dir_all(&broker_dir).unwrap();
        let broker = Broker::start(&broker_dir);
        tandem_kafka::create_topic(
            &broker.bootstrap(),
            TOPIC,
            PARTITIONS,
            1,
            &[],
            Duration::from_secs(20),
        )
        .expect("create topic");
        let mut nodes: Vec<NodeProc> = (1..=3)
            .map(|i| NodeProc::new(dir.path(), &format!("node-{i}"), &broker.bootstrap()))
            .collect();
        for n in &mut nodes {
            n.start();
        }
        Cluster {
            nodes,
            _broker: broker,
            _dir: dir,
        }
    }

    fn addrs(&self) -> Vec<SocketAddr> {
        self.nodes.iter().map(|n| n.addr).collect()
    }
}

/// One order of the flow.
#[derive(Debug, Clone)]
struct Order {
    market: &'static str,
    id: String,
    account: String,
    qty: String,
    body: String,
}

/// `n` limit orders with distinct ids over `MARKETS`, prices spread around
/// 100 so that about half of them trade.
fn flow(n: usize, seed: u64) -> Vec<Order> {
    let parts: Vec<u32> = MARKETS
        .iter()
        .map(|m| tandem_kafka::partition_for(m, PARTITIONS))
        .collect();
    assert!(
        (0..PARTITIONS).all(|p| parts.contains(&p)),
        "markets cover every partition: {parts:?}"
    );
    let mut x = seed | 1;
    let mut rnd = move |m: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % m
    };
    (0..n)
        .map(|i| {
            let market = MARKETS[rnd(MARKETS.len() as u64) as usize];
            let side = if rnd(2) == 0 { "buy" } else { "sell" };
            let price = format!("{}.{}", 98 + rnd(5), rnd(10));
            let qty = format!("{}", 1 + rnd(3));
            let id = format!("o{i}");
            let account = format!("acct{}", rnd(23));
            let body = place_body(market, &id, &account, side, &price, &qty);
            Order {
                market,
                id,
                account,
                qty,
                body,
            }
        })
        .collect()
}

/// A client over all nodes: one keep-alive connection per node, and on a
/// connection error (or, if asked, a 503) the same request on the next node.
struct Client {
    addrs: Vec<SocketAddr>,
    conns: Vec<Option<Conn>>,
    retry_503: bool,
    /// Connection errors met (retried).
    conn_errors: usize,
    /// 503s met (retried).
    unavailable: usize,
}

impl Client {
    fn new(addrs: Vec<SocketAddr>, retry_503: bool) -> Client {
        Client {
            conns: addrs.iter().map(|_| None).collect(),
            addrs,
            retry_503,
            conn_errors: 0,
            unavailable: 0,
        }
    }

    /// One request on node `i`'s connection (opened if needed).
    fn once(&mut self, i: usize, method: &str, path: &str, body: &[u8]) -> io::Result<Resp> {
        let conn = match &mut self.conns[i] {
            Some(c) => c,
            slot => slot.insert(Conn::open(self.addrs[i])?),
        };
        let r = conn.send(method, path, &[], body);
        match &r {
            Ok(resp) if resp.header("connection") != Some("close") => {}
            _ => self.conns[i] = None,
        }
        r
    }

    /// Sends until an answer that is not retried, starting on node
    /// `first`; `Err` after 40 attempts (about 10 s).
    fn send(
        &mut self,
        first: usize,
        method: &str,
        path: &str,
        body: &[u8],
    ) -> Result<Resp, String> {
        let mut errors = Vec::new();
        for attempt in 0..40 {
            let i = (first + attempt) % self.addrs.len();
            match self.once(i, method, path, body) {
                Ok(r) if r.status == 503 && self.retry_503 => {
                    self.unavailable += 1;
                    errors.push(format!("node {i}: {r}"));
                }
                Ok(r) => return Ok(r),
                Err(e) => {
                    self.conn_errors += 1;
                    errors.push(format!("node {i}: {e}"));
                }
            }
            if attempt % self.addrs.len() == self.addrs.len() - 1 {
                std::thread::sleep(Duration::from_millis(250));
            }
        }
        Err(errors.join("; "))
    }
}

/// What a client learned about one order.
#[derive(Debug, Clone)]
struct Acked {
    index: usize,
    partition: u64,
    seq: u64,
}

/// Counts of a load run, printed on failure.
#[derive(Debug, Default)]
struct Tally {
    acked: usize,
    failed: Vec<String>,
    /// Attempts retried on another node after a connection error.
    conn_errors: usize,
    /// Attempts retried on another node after a 503.
    unavailable: usize,
    replays_checked: usize,
}

/// Sends `orders` from `threads` client threads, order `i` first to node
/// `i % nodes`. With `resend`, every 10th order is sent again to the next
/// node afterwards and every 20th concurrently to two nodes; the answers
/// must be identical. `progress` counts orders answered.
fn load(
    addrs: &[SocketAddr],
    orders: &[Order],
    threads: usize,
    retry: bool,
    resend: bool,
    progress: &AtomicUsize,
) -> (Vec<Acked>, Tally) {
    let results = Mutex::new((Vec::new(), Tally::default()));
    std::thread::scope(|s| {
        for t in 0..threads {
            let results = &results;
            s.spawn(move || {
                let mut c = Client::new(addrs.to_vec(), retry);
                let mut mine = Vec::new();
                let mut failed = Vec::new();
                let mut replays = 0;
                let n = addrs.len();
                for (i, o) in orders.iter().enumerate().skip(t).step_by(threads) {
                    let first = i % n;
                    let r = if resend && i % 20 == 7 {
                        // Two copies at once, on two nodes.
                        let (a, b) = std::thread::scope(|s2| {
                            let h = s2.spawn(|| {
                                let mut c2 = Client::new(addrs.to_vec(), retry);
                                c2.send((first + 1) % n, "POST", "/v1/orders", o.body.as_bytes())
                            });
                            let a = c.send(first, "POST", "/v1/orders", o.body.as_bytes());
                            (a, h.join().unwrap())
                        });
                        match (a, b) {
                            (Ok(a), Ok(b)) if a.body != b.body => {
                                failed
                                    .push(format!("{}: concurrent copies differ: {a} / {b}", o.id));
                                Ok(a)
                            }
                            (Ok(a), Ok(_)) => {
                                replays += 1;
                                Ok(a)
                            }
                            (Err(e), _) | (_, Err(e)) => Err(e),
                        }
                    } else {
                        c.send(first, "POST", "/v1/orders", o.body.as_bytes())
                    };
                    let r = match r {
                        Ok(r) if r.status == 200 => r,
                        Ok(r) => {
                            failed.push(format!("{}: {r}", o.id));
                            continue;
                        }
                        Err(e) => {
                            failed.push(format!("{}: no answer: {e}", o.id));
                            continue;
                        }
                    };
                    let v = r.json();
                    let ev = &v["events"][0];
                    if ev["event"] != "accepted" || ev["id"] != o.id.as_str() {
                        failed.push(format!("{}: not accepted: {}", o.id, r.text()));
                        continue;
                    }
                    if resend && i % 10 == 3 {
                        match c.send((first + 1) % n, "POST", "/v1/orders", o.body.as_bytes()) {
                            Ok(again) if again.body == r.body => replays += 1,
                            Ok(again) => {
                                failed.push(format!("{}: retry answered {again}, first {r}", o.id))
                            }
                            Err(e) => failed.push(format!("{}: retry: {e}", o.id)),
                        }
                    }
                    mine.push(Acked {
                        index: i,
                        partition: v["partition"].as_u64().expect("partition"),
                        seq: v["seq"].as_u64().expect("seq"),
                    });
                    progress.fetch_add(1, Ordering::Relaxed);
                }
                let mut g = results.lock().unwrap();
                g.1.acked += mine.len();
                g.0.extend(mine);
                g.1.failed.extend(failed);
                g.1.conn_errors += c.conn_errors;
                g.1.unavailable += c.unavailable;
                g.1.replays_checked += replays;
            });
        }
    });
    let (mut acked, tally) = results.into_inner().unwrap();
    acked.sort_by_key(|a| a.index);
    (acked, tally)
}

/// Waits until every node in `nodes` reports the same `applied_seq` and
/// `output_hash` for every partition, at or past every acknowledged seq;
/// returns that status.
fn converged(nodes: &[&NodeProc], acked: &[Acked], ctx: &str) -> Vec<(u64, String)> {
    let mut floor = vec![0u64; PARTITIONS as usize];
    for a in acked {
        let p = a.partition as usize;
        floor[p] = floor[p].max(a.seq);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let all: Vec<Vec<(u64, String)>> = nodes.iter().map(|n| n.status()).collect();
        let same_seq = all
            .iter()
            .all(|s| s.iter().map(|x| x.0).eq(all[0].iter().map(|x| x.0)));
        let past = all[0].iter().zip(&floor).all(|(s, f)| s.0 >= *f);
        if same_seq && past {
            for (n, s) in nodes.iter().zip(&all) {
                assert_eq!(
                    s, &all[0],
                    "{ctx}: {} has another output_hash at the same applied_seq than {}",
                    n.name, nodes[0].name
                );
            }
            return all[0].clone();
        }
        assert!(
            Instant::now() < deadline,
            "{ctx}: nodes did not converge within 60 s: {all:?}, acknowledged up to {floor:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Every acknowledged order is on `node` with its quantity, and the node
/// holds exactly `orders.len()` taken ids (each order accepted once).
fn all_orders_once(node: &NodeProc, orders: &[Order], acked: &[Acked], ctx: &str) {
    assert_eq!(
        node.taken_ids(),
        orders.len() as u64,
        "{ctx}: {} holds another number of accepted ids",
        node.name
    );
    let mut c = Client::new(vec![node.addr], false);
    let mut missing = Vec::new();
    for a in acked {
        let o = &orders[a.index];
        let path = format!("/v1/orders/{}/{}?account={}", o.market, o.id, o.account);
        match c.send(0, "GET", &path, b"") {
            Ok(r) if r.status == 200 => {
                let v = r.json();
                let qty = v["qty"].as_str().unwrap_or_default();
                if tandem_core::parse_units(qty.as_bytes()).ok()
                    != tandem_core::parse_units(o.qty.as_bytes()).ok()
                {
                    missing.push(format!("{}: {}", o.id, r.text()));
                }
            }
            Ok(r) => missing.push(format!("{}: {r}", o.id)),
            Err(e) => missing.push(format!("{}: {e}", o.id)),
        }
    }
    assert!(
        missing.is_empty(),
        "{ctx}: {} of {} acknowledged orders not as acknowledged on {}: {:?}",
        missing.len(),
        acked.len(),
        node.name,
        &missing[..missing.len().min(10)]
    );
}

/// Seqs are unique per partition among acknowledged orders (two orders
/// never share one command).
fn distinct_seqs(acked: &[Acked], ctx: &str) {
    let mut seen: BTreeMap<(u64, u64), usize> = BTreeMap::new();
    for a in acked {
        if let Some(other) = seen.insert((a.partition, a.seq), a.index) {
            panic!(
                "{ctx}: orders {other} and {} both acknowledged at {}:{}",
                a.index, a.partition, a.seq
            );
        }
    }
}

fn lock() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

#[test]
fn three_nodes_agree_and_apply_every_order_once() {
    let _serial = lock();
    const ORDERS: usize = 3_000;
    let seed = seed();
    let orders = flow(ORDERS, seed);
    let cluster = Cluster::start("cluster-agree");
    let progress = AtomicUsize::new(0);
    let (acked, tally) = load(&cluster.addrs(), &orders, 6, false, true, &progress);
    let ctx = format!("seed {seed}, {ORDERS} orders, {tally:?}");
    assert!(tally.failed.is_empty(), "{ctx}");
    assert_eq!(acked.len(), ORDERS, "{ctx}");
    assert!(tally.replays_checked >= ORDERS / 10, "{ctx}");
    distinct_seqs(&acked, &ctx);
    let nodes: Vec<&NodeProc> = cluster.nodes.iter().collect();
    let status = converged(&nodes, &acked, &ctx);
    for n in &nodes {
        all_orders_once(n, &orders, &acked, &ctx);
    }
    eprintln!("{ctx}: converged at {status:?}");
}

#[test]
fn a_node_killed_under_load_loses_nothing_and_catches_up_from_its_snapshot() {
    let _serial = lock();
    const ORDERS: usize = 3_000;
    let seed = seed() ^ 0xb;
    let orders = flow(ORDERS, seed);
    let mut cluster = Cluster::start("cluster-kill");
    let addrs = cluster.addrs();
    let progress = AtomicUsize::new(0);
    let (acked, tally) = std::thread::scope(|s| {
        let h = s.spawn(|| load(&addrs, &orders, 6, true, true, &progress));
        // Past 500 commands per partition (a snapshot each), then SIGKILL.
        while progress.load(Ordering::Relaxed) < ORDERS / 2 && !h.is_finished() {
            std::thread::sleep(Duration::from_millis(10));
        }
        cluster.nodes[2].kill();
        h.join().unwrap()
    });
    let ctx = format!(
        "seed {seed}, {ORDERS} orders, node-3 killed after {} answers, {tally:?}",
        ORDERS / 2
    );
    assert!(tally.failed.is_empty(), "{ctx}");
    assert_eq!(acked.len(), ORDERS, "{ctx}");
    distinct_seqs(&acked, &ctx);
    let alive: Vec<&NodeProc> = cluster.nodes[..2].iter().collect();
    let status = converged(&alive, &acked, &ctx);
    for n in &alive {
        all_orders_once(n, &orders, &acked, &ctx);
    }

    // Back with the same data dir: restored from its snapshots, then the
    // log tail, to the same hash.
    let log_before = std::fs::metadata(&cluster.nodes[2].log).map_or(0, |m| m.len() as usize);
    cluster.nodes[2].start();
    let log = std::fs::read_to_string(&cluster.nodes[2].log).unwrap();
    let restored = log[log_before..]
        .matches("\"msg\":\"snapshot restored\"")
        .count();
    assert_eq!(
        restored,
        PARTITIONS as usize,
        "{ctx}: every partition restores from a snapshot:\n{}",
        &log[log_before..]
    );
    let nodes: Vec<&NodeProc> = cluster.nodes.iter().collect();
    let after = converged(&nodes, &acked, &ctx);
    assert_eq!(after, status, "{ctx}: nothing was appended since");
    all_orders_once(&cluster.nodes[2], &orders, &acked, &ctx);
    eprintln!("{ctx}: converged at {after:?}");
}

#[test]
fn a_node_stopped_with_sigterm_under_load_fails_no_request() {
    let _serial = lock();
    const ORDERS: usize = 2_400;
    let seed = seed() ^ 0xc;
    let orders = flow(ORDERS, seed);
    let mut cluster = Cluster::start("cluster-term");
    let addrs = cluster.addrs();
    let progress = AtomicUsize::new(0);
    let (acked, tally, exit) = std::thread::scope(|s| {
        let h = s.spawn(|| load(&addrs, &orders, 6, true, false, &progress));
        while progress.load(Ordering::Relaxed) < ORDERS / 3 && !h.is_finished() {
            std::thread::sleep(Duration::from_millis(10));
        }
        let mut child = cluster.nodes[1].term();
        let exit = child.wait().expect("wait for node-2");
        let (acked, tally) = h.join().unwrap();
        (acked, tally, exit)
    });
    let log = std::fs::read_to_string(&cluster.nodes[1].log).unwrap_or_default();
    let ctx = format!(
        "seed {seed}, {ORDERS} orders, node-2 sent SIGTERM after {} answers, {tally:?}",
        ORDERS / 3
    );
    assert!(tally.failed.is_empty(), "{ctx}");
    assert_eq!(acked.len(), ORDERS, "{ctx}");
    assert!(
        exit.success(),
        "{ctx}: node-2 exited with {exit}:\n{}",
        tail(&cluster.nodes[1].log, 3000)
    );
    assert!(
        log.contains("\"msg\":\"drained\",\"clean\":true"),
        "{ctx}: node-2 drained cleanly:\n{}",
        tail(&cluster.nodes[1].log, 3000)
    );
    distinct_seqs(&acked, &ctx);
    let alive = [&cluster.nodes[0], &cluster.nodes[2]];
    let status = converged(&alive, &acked, &ctx);
    for n in alive {
        all_orders_once(n, &orders, &acked, &ctx);
    }
    // It stopped with a final snapshot and comes back to the same hash.
    cluster.nodes[1].start();
    let nodes: Vec<&NodeProc> = cluster.nodes.iter().collect();
    let after = converged(&nodes, &acked, &ctx);
    assert_eq!(after, status, "{ctx}");
    eprintln!("{ctx}: converged at {after:?}");
}
