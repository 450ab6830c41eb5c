//! `tandem-bench node`: order entry through real nodes, measured by the
//! open-loop load generator (`tandem-loadgen`), beside its two floors in
//! the same run:
//!
//! 1. the disk's own `fdatasync` latency (no durable answer can beat it);
//! 2. the same load generator against `GET /healthz` of the same server
//!    (the HTTP stack and loopback, with no log and no engine).
//!
//! Cases: one node on the embedded file log with fsync (the durable
//! default), the same without the log's zeros written ahead
//! (`write_ahead_bytes = 0`), the same with fsync off (the software's own
//! cost), and with
//! `--kafka` three nodes over one tansu broker (the loadgen spreads its
//! requests round-robin over them), with a third floor beside each orders
//! run: the broker's own produce→consume time (`tandem_kafka::floor`, a
//! plain producer and consumer on a topic of their own, the nodes' client
//! settings), over the same seconds. Each case runs the given rates, then
//! searches upward for the highest rate it sustains: achieved ≥ 97 % of
//! the target, no failed request, no lost or duplicated order, p99 under
//! `--max-p99-ms`.
//!
//! Nodes run in this process, each on its own runtime, over a data
//! directory under `--dir`. Every figure printed was measured in this run.

use std::fs::OpenOptions;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tandem_loadgen::{LoadgenConfig, Report};
use tandem_node::config::LogKind;
use tandem_node::{Node, NodeConfig};

/// Flags of `tandem-bench node`.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeArgs {
    pub rates: Vec<f64>,
    pub duration_s: f64,
    pub warmup_s: f64,
    pub search: bool,
    pub max_p99_ms: f64,
    pub kafka: bool,
    pub only_kafka: bool,
    pub dir: PathBuf,
    pub connections: usize,
    pub json: Option<String>,
    /// Run only the streaming case (`stream_case`).
    pub stream: bool,
    /// gRPC `Submit` streams of the streaming case.
    pub streams: usize,
    /// Requests in flight per stream in the streaming case.
    pub in_flight: usize,
}

impl Default for NodeArgs {
    fn default() -> Self {
        NodeArgs {
            rates: vec![1_000.0, 10_000.0],
            duration_s: 10.0,
            warmup_s: 2.0,
            search: true,
            max_p99_ms: 100.0,
            kafka: false,
            only_kafka: false,
            dir: std::env::temp_dir().join("tandem-bench-node"),
            connections: 64,
            json: None,
            stream: false,
            streams: 4,
            in_flight: 256,
        }
    }
}

/// A node serving on loopback in this process.
pub(crate) struct RunningNode {
    pub(crate) addr: SocketAddr,
    node: Arc<Node>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RunningNode {
    pub(crate) fn start(cfg: NodeConfig) -> Result<RunningNode, String> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .thread_name("bench-node")
            .build()
            .map_err(|e| format!("runtime: {e}"))?;
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .map_err(|e| format!("bind: {e}"))?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let node = Node::start(cfg).map_err(|e| format!("start node: {e:#}"))?;
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let n = Arc::clone(&node);
        let thread = std::thread::spawn(move || {
            rt.block_on(tandem_node::server::serve(
                listener,
                n,
                async move {
                    let _ = rx.await;
                },
                Duration::ZERO,
            ));
        });
        let deadline = Instant::now() + Duration::from_secs(120);
        while !node.is_caught_up() {
            if Instant::now() > deadline {
                return Err("node did not catch up within 120 s".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(RunningNode {
            addr,
            node,
            stop: Some(tx),
            thread: Some(thread),
        })
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for RunningNode {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.node.stop();
    }
}

/// The disk's own figures (`fsync_floor`), in µs.
struct DiskFloor {
    syncs: usize,
    p50: f64,
    p99: f64,
    max: f64,
    /// The group-commit floor at `GROUP_RATE` arrivals a second.
    group_p50: f64,
    group_p99: f64,
}

/// Arrivals a second the group-commit floor is computed for (the rate of
/// the repeated durable runs).
const GROUP_RATE: f64 = 10_000.0;

/// Raw `fdatasync` latency of the disk under `dir`: 100-byte append +
/// fdatasync, one thread, back to back for `time`.
///
/// From the same syncs, the group-commit floor: a request arriving at a
/// uniform time (every 1/`GROUP_RATE` s over those seconds) can be
/// answered durably, at the earliest, when the first sync started after
/// it ends, by a log that syncs back to back and takes no time of its own.
/// This floor weighs a slow sync by the time it lasts, as arrivals do: a
/// sync of 3 ms among ones of 0.13 ms is one sync in a hundred but delays
/// every arrival during it, and the next sync's besides.
fn fsync_floor(dir: &Path, time: Duration) -> Result<DiskFloor, String> {
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let path = dir.join("fsync-floor");
    let mut f = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(&path)
        .map_err(|e| e.to_string())?;
    // (start, end) of each sync, in µs from the first.
    let mut spans: Vec<(f64, f64)> = Vec::new();
    let origin = Instant::now();
    let end = origin + time;
    while Instant::now() < end {
        let t = origin.elapsed().as_secs_f64() * 1e6;
        f.write_all(&[7u8; 100]).map_err(|e| e.to_string())?;
        f.sync_data().map_err(|e| e.to_string())?;
        spans.push((t, origin.elapsed().as_secs_f64() * 1e6));
    }
    let _ = std::fs::remove_file(&path);
    let mut lat: Vec<f64> = spans.iter().map(|(s, e)| e - s).collect();
    lat.sort_by(f64::total_cmp);
    let q = |v: &[f64], p: f64| v[((v.len() as f64 * p) as usize).min(v.len() - 1)];
    let mut group = Vec::new();
    let step = 1e6 / GROUP_RATE;
    let mut next = 0;
    let mut at = spans.first().map_or(0.0, |s| s.0);
    while let Some(&(start, done)) = spans.get(next) {
        if start >= at {
            group.push(done - at);
            at += step;
        } else {
            next += 1;
        }
    }
    group.sort_by(f64::total_cmp);
    Ok(DiskFloor {
        syncs: lat.len(),
        p50: q(&lat, 0.50),
        p99: q(&lat, 0.99),
        max: *lat.last().unwrap_or(&0.0),
        group_p50: q(&group, 0.50),
        group_p99: q(&group, 0.99),
    })
}

/// Prints the disk's floors.
fn print_disk_floor(d: &DiskFloor) {
    println!(
        "disk floor: fdatasync of a 100-byte append, {} syncs: p50 {:.0} us, p99 {:.0} us, max {:.0} us",
        d.syncs, d.p50, d.p99, d.max
    );
    println!(
        "group-commit floor (the same syncs; an arrival every {:.0} us answered when the first sync started after it ends): p50 {:.0} us, p99 {:.0} us",
        1e6 / GROUP_RATE,
        d.group_p50,
        d.group_p99
    );
}

/// Order ids each bench node's engine is sized for at start.
const RESERVE_IDS: usize = 2_000_000;

pub(crate) fn node_config(dir: &Path, name: &str, fsync: bool) -> NodeConfig {
    let mut cfg = NodeConfig {
        node: name.into(),
        data_dir: dir.join(name),
        ..NodeConfig::default()
    };
    cfg.log.fsync = fsync;
    // The generator's accounts send far more than a person would.
    cfg.limits.account_rate = 0;
    // The verifier replays a sample of every run's orders afterwards: keep
    // all of them in the idempotency window (the default keeps 200 k).
    cfg.limits.idempotency_window = 8_000_000;
    // The engine sized at start for every id a run takes (wrk's closed
    // loop places up to ~700 k before the loadgen's runs), as an exchange
    // would size it: otherwise a doubling of the id registry lands in
    // some runs and its 30-45 ms stall is the p99.9 (`RESERVE_IDS`).
    cfg.limits.reserve_ids = RESERVE_IDS;
    cfg.limits.reserve_orders = 1 << 20;
    cfg
}

/// One load run; `floor` hits `GET /healthz` instead of order entry.
fn load(
    targets: &[String],
    rate: f64,
    a: &NodeArgs,
    floor: bool,
    seed: u64,
) -> Result<Report, String> {
    load_verified(targets, rate, a, floor, seed, !floor)
}

/// `load`, verifying the orders afterwards only if `verify`.
fn load_verified(
    targets: &[String],
    rate: f64,
    a: &NodeArgs,
    floor: bool,
    seed: u64,
    verify: bool,
) -> Result<Report, String> {
    let cfg = LoadgenConfig {
        targets: targets.to_vec(),
        rate,
        duration_s: a.duration_s,
        warmup_s: a.warmup_s,
        connections: a.connections,
        floor,
        seed,
        id_prefix: Some(format!("b{seed}r{}", rate as u64)),
        verify,
        ..LoadgenConfig::default()
    };
    tandem_loadgen::run(&cfg).map_err(|e| e.to_string())
}

/// One row of the printed table.
struct Row {
    case: String,
    what: &'static str,
    r: Report,
    /// The broker's floor over the same seconds (Kafka orders rows).
    broker: Option<tandem_kafka::floor::Floor>,
}

fn sustained(r: &Report, a: &NodeArgs) -> bool {
    let lost_or_dup = r
        .verify
        .as_ref()
        .is_some_and(|v| v.lost > 0 || v.duplicated > 0);
    r.achieved_rate >= 0.97 * r.target_rate
        && r.errors.total() == 0
        && !lost_or_dup
        && r.latency_us.p99 <= a.max_p99_ms * 1000.0
}

fn print_row(row: &Row) {
    let r = &row.r;
    let l = &r.latency_us;
    let (lost, dup) = r
        .verify
        .as_ref()
        .map_or(("-".to_string(), "-".to_string()), |v| {
            (v.lost.to_string(), v.duplicated.to_string())
        });
    println!(
        "{:<26} {:<12} {:>9.0} {:>9.0} {:>9.0} {:>9.0} {:>9.0} {:>10.0} {:>7} {:>5} {:>4}",
        row.case,
        row.what,
        r.target_rate,
        r.achieved_rate,
        l.p50,
        l.p99,
        l.p99_9,
        l.max,
        r.errors.total(),
        lost,
        dup
    );
}

/// The rate the loadgen is asked for to find its own ceiling: beyond what
/// it or the node reaches here (wrk's `/healthz` is 130-155 k req/s), so
/// that the figure is the ceiling and not the rate asked for.
const CEILING_RATE: f64 = 400_000.0;

/// What one `wrk` run measured.
struct Wrk {
    rps: f64,
    p50_us: f64,
    p99_us: f64,
    requests: u64,
    non_2xx: u64,
}

/// A `wrk` duration or latency (`812.00us`, `1.30ms`, `2.01s`) in µs.
fn wrk_us(v: &str) -> Option<f64> {
    let (num, scale) = if let Some(n) = v.strip_suffix("us") {
        (n, 1.0)
    } else if let Some(n) = v.strip_suffix("ms") {
        (n, 1e3)
    } else if let Some(n) = v.strip_suffix('s') {
        (n, 1e6)
    } else {
        return None;
    };
    num.parse::<f64>().ok().map(|x| x * scale)
}

/// Reads `wrk --latency` output.
fn parse_wrk(out: &str) -> Option<Wrk> {
    let mut w = Wrk {
        rps: f64::NAN,
        p50_us: f64::NAN,
        p99_us: f64::NAN,
        requests: 0,
        non_2xx: 0,
    };
    for line in out.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        match f.as_slice() {
            ["Requests/sec:", v] => w.rps = v.parse().ok()?,
            ["50%", v] => w.p50_us = wrk_us(v)?,
            ["99%", v] => w.p99_us = wrk_us(v)?,
            [n, "requests", "in", ..] => w.requests = n.parse().ok()?,
            ["Non-2xx", "or", "3xx", "responses:", n] => w.non_2xx = n.parse().ok()?,
            _ => {}
        }
    }
    w.rps.is_finite().then_some(w)
}

/// wrk's Lua script for `POST /v1/orders` (`scripts/wrk-orders.lua`,
/// which `scripts/bench-loadgen.sh` runs too); its argument makes the
/// run's ids unique.
const WRK_ORDERS_SCRIPT: &str = include_str!("../../../scripts/wrk-orders.lua");

/// `wrk` closed loop (2 threads, `connections` connections, `secs`)
/// against `url`, with `script` and its argument if given. `None` when
/// wrk is not on PATH.
fn wrk(
    url: &str,
    script: Option<(&Path, &str)>,
    connections: usize,
    secs: f64,
) -> Result<Option<Wrk>, String> {
    let mut cmd = std::process::Command::new("wrk");
    cmd.args([
        "-t2".to_string(),
        format!("-c{connections}"),
        format!("-d{}s", secs.ceil() as u64),
        "--latency".to_string(),
    ]);
    if let Some((s, _)) = script {
        cmd.arg("-s").arg(s);
    }
    cmd.arg(url);
    if let Some((_, arg)) = script {
        cmd.args(["--", arg]);
    }
    let out = match cmd.output() {
        Ok(o) => o,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("wrk: {e}")),
    };
    let text = String::from_utf8_lossy(&out.stdout);
    parse_wrk(&text)
        .map(Some)
        .ok_or_else(|| format!("wrk: unreadable output: {text}"))
}

/// The same server under wrk (closed loop, the cheapest client here) and
/// the loadgen asked for far more than it can send (its own ceiling),
/// `GET /healthz` and orders in turn, and the ratio of the two with the
/// same client in the same run.
fn client_floors(case: &str, target: &str, a: &NodeArgs, seed: &mut u64) -> Result<(), String> {
    *seed += 1;
    let script = a.dir.join(format!("wrk-orders-{seed}.lua"));
    std::fs::write(&script, WRK_ORDERS_SCRIPT).map_err(|e| e.to_string())?;
    let health = wrk(
        &format!("{target}/healthz"),
        None,
        a.connections,
        a.duration_s,
    )?;
    let orders = wrk(
        &format!("{target}/v1/orders"),
        Some((&script, &seed.to_string())),
        a.connections,
        a.duration_s,
    )?;
    match (health, orders) {
        (Some(h), Some(o)) => println!(
            "{case}: wrk closed loop, {} connections: /healthz {:.0} req/s (p50 {:.0} us, p99 {:.0} us); \
             orders {:.0}/s (p50 {:.0} us, p99 {:.0} us, {} of {} not 2xx); orders / healthz = {:.2}",
            a.connections, h.rps, h.p50_us, h.p99_us, o.rps, o.p50_us, o.p99_us, o.non_2xx, o.requests,
            o.rps / h.rps
        ),
        _ => println!("{case}: wrk not found on PATH: the closed-loop client floor is skipped"),
    }
    // The loadgen's own ceiling: a rate beyond what it reaches here, for
    // a short run (it sends every scheduled request, so the run lasts as
    // long as the server takes), without the read-back.
    let mut ceiling = Vec::new();
    for floor in [true, false] {
        *seed += 1;
        // 250 k requests (2-5 s at what the loadgen reaches here), as many
        // as before the rate was raised: more orders here move the node's
        // 1 M-command snapshot into the 10 k/s run that follows.
        let short = NodeArgs {
            duration_s: 0.5,
            warmup_s: 0.125,
            ..a.clone()
        };
        let r = load_verified(
            &[target.to_string()],
            CEILING_RATE,
            &short,
            floor,
            *seed,
            false,
        )?;
        ceiling.push(r.achieved_rate);
    }
    println!(
        "{case}: loadgen asked for {:.0} k/s: /healthz {:.0}/s, orders {:.0}/s; orders / healthz = {:.2}",
        CEILING_RATE / 1e3,
        ceiling[0],
        ceiling[1],
        ceiling[1] / ceiling[0]
    );
    Ok(())
}

/// The broker a Kafka case's nodes share, for its floor.
struct Broker<'b> {
    addr: &'b str,
    /// The nodes' `fetch.wait.max.ms`, which the floor's consumer uses too.
    fetch_wait_ms: u64,
}

/// Most messages a second the broker's floor sends: 400 samples over an
/// 8 s run (its p99 is the fifth slowest), and little beside the nodes'
/// own messages. Three nodes at 1 k orders/s append about 240 messages a
/// second (one per batch); the floor at 200/s nearly doubled tansu's
/// message rate, which is what limits it.
const BROKER_FLOOR_RATE_MAX: f64 = 50.0;

/// The broker's produce→consume floor over the measured seconds of an
/// orders run that starts now: it waits out the warm-up, then measures
/// for the run's duration, on a topic of its own.
fn broker_floor(
    b: &Broker<'_>,
    rate: f64,
    a: &NodeArgs,
    seed: u64,
) -> std::thread::JoinHandle<Result<tandem_kafka::floor::Floor, String>> {
    let (addr, wait) = (b.addr.to_string(), b.fetch_wait_ms);
    let (warmup, run) = (a.warmup_s, a.duration_s);
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs_f64(warmup));
        tandem_kafka::floor::measure(
            &addr,
            &format!("broker-floor-{seed}"),
            rate.min(BROKER_FLOOR_RATE_MAX),
            Duration::from_secs_f64(run),
            wait,
        )
    })
}

/// A broker floor's row, under the orders row it was measured beside, and
/// Tandem's share: the orders' p99 above the floor's.
fn print_broker_floor(case: &str, orders: &Report, f: &tandem_kafka::floor::Floor) {
    println!(
        "{:<26} {:<12} {:>9.0} {:>9} {:>9.0} {:>9.0} {:>9} {:>10.0} {:>7} {:>5} {:>4}",
        case,
        "broker floor",
        f.rate,
        f.messages,
        f.p50_ms * 1000.0,
        f.p99_ms * 1000.0,
        "-",
        f.max_ms * 1000.0,
        "-",
        "-",
        "-"
    );
    println!(
        "{case}: Tandem's share over the broker's produce→consume, same seconds: p50 {:+.1} ms, p99 {:+.1} ms",
        orders.latency_us.p50 / 1000.0 - f.p50_ms,
        orders.latency_us.p99 / 1000.0 - f.p99_ms
    );
}

/// One node's appends so far, from its `/metrics`: (appends, commands
/// appended, seconds spent in `Log::append`).
type Appends = Option<(f64, f64, f64)>;

/// Each target's [`Appends`] (`None` for a node that did not answer).
fn appends(targets: &[String]) -> Vec<Appends> {
    targets.iter().map(|t| scrape_appends(t)).collect()
}

/// GET `/metrics` over a plain TCP connection (HTTP/1.0: the answer ends
/// with the connection) and the sums of the append series.
fn scrape_appends(target: &str) -> Appends {
    use std::io::Read as _;
    let addr = target.strip_prefix("http://")?;
    let mut c = std::net::TcpStream::connect(addr).ok()?;
    c.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(c, "GET /metrics HTTP/1.0\r\nhost: {addr}\r\n\r\n").ok()?;
    let mut text = String::new();
    c.read_to_string(&mut text).ok()?;
    let sum = |name: &str| -> f64 {
        text.lines()
            .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    Some((
        sum("tandem_log_append_batches_total"),
        sum("tandem_log_append_commands_total"),
        sum("tandem_log_append_duration_seconds_sum"),
    ))
}

/// Per node over a run (the difference of two scrapes): the batches it
/// appended, their mean size, and the mean time of one `Log::append`
/// (over Kafka: produce until the broker's acknowledgement).
fn print_appends(case: &str, before: &[Appends], after: &[Appends]) {
    let parts: Vec<String> = before
        .iter()
        .zip(after)
        .enumerate()
        .map(|(i, (b, a))| match (b, a) {
            (Some(b), Some(a)) if a.0 > b.0 => {
                let n = a.0 - b.0;
                format!(
                    "node {}: {n:.0} batches of {:.1} commands, append {:.2} ms mean",
                    i + 1,
                    (a.1 - b.1) / n,
                    (a.2 - b.2) / n * 1e3
                )
            }
            _ => format!("node {}: no appends seen", i + 1),
        })
        .collect();
    println!("{case}: appends over the orders run: {}", parts.join("; "));
}

/// Says so when a run that fell short may have been held back by the
/// client's connections rather than the server: HTTP/1.1 carries one request at a time per
/// connection, so `connections` requests in flight at latency L bound the
/// rate at connections ÷ L (Little's law). Over Kafka, where an order
/// takes the broker's produce→consume time (tens of milliseconds on
/// tansu), 64 connections bound it at a few thousand a second.
fn client_bound(case: &str, r: &Report, a: &NodeArgs) {
    let mean_s = r.latency_us.p50 / 1e6;
    if r.achieved_rate >= 0.97 * r.target_rate || mean_s <= 0.0 {
        return;
    }
    let bound = a.connections as f64 / mean_s;
    if bound < 1.5 * r.target_rate {
        println!(
            "{case}: {} connections, one request at a time each, carry at most {bound:.0}/s at this \
             run's p50 of {:.1} ms: rerun with more --connections to tell the client's limit from \
             the server's",
            a.connections,
            mean_s * 1e3
        );
    }
}

fn run_case(
    case: &str,
    targets: &[String],
    a: &NodeArgs,
    broker: Option<&Broker<'_>>,
    rows: &mut Vec<Row>,
    seed: &mut u64,
) -> Result<(), String> {
    if targets.len() == 1 {
        client_floors(case, &targets[0], a, seed)?;
    }
    for &rate in &a.rates {
        for floor in [true, false] {
            *seed += 1;
            let beside = broker
                .filter(|_| !floor)
                .map(|b| broker_floor(b, rate, a, *seed));
            let before = broker.filter(|_| !floor).map(|_| appends(targets));
            let r = load(targets, rate, a, floor, *seed)?;
            if let Some(before) = before {
                print_appends(case, &before, &appends(targets));
            }
            let measured = beside.map(|t| {
                t.join()
                    .unwrap_or_else(|_| Err("the broker floor's thread panicked".into()))
            });
            let row = Row {
                case: case.into(),
                what: if floor { "floor" } else { "orders" },
                r,
                broker: None,
            };
            print_row(&row);
            client_bound(case, &row.r, a);
            let row = match measured {
                Some(Ok(f)) => {
                    print_broker_floor(case, &row.r, &f);
                    Row {
                        broker: Some(f),
                        ..row
                    }
                }
                Some(Err(e)) => {
                    println!("{case}: the broker's floor was not measured: {e}");
                    row
                }
                None => row,
            };
            rows.push(row);
        }
    }
    if a.search {
        // File-log nodes from 20 k/s up; over Kafka from 1.5x the highest
        // rate given (tansu's ceiling is a few thousand orders a second).
        let highest = a.rates.iter().copied().fold(0.0, f64::max);
        let mut rate = match broker {
            Some(_) => highest * 1.5,
            None => highest.max(10_000.0) * 2.0,
        };
        let mut best: Option<f64> = None;
        while rate <= 400_000.0 {
            *seed += 1;
            let r = load(targets, rate, a, false, *seed)?;
            let ok = sustained(&r, a);
            let row = Row {
                case: case.into(),
                what: if ok { "search ok" } else { "search miss" },
                r,
                broker: None,
            };
            print_row(&row);
            rows.push(row);
            if !ok {
                break;
            }
            best = Some(rate);
            rate *= 1.5;
        }
        match best {
            Some(b) => println!("{case}: highest sustained rate tried: {b:.0} orders/s"),
            None => println!("{case}: no searched rate was sustained"),
        }
    }
    Ok(())
}

pub fn run(a: &NodeArgs) -> Result<(), String> {
    let _ = std::fs::remove_dir_all(&a.dir);
    std::fs::create_dir_all(&a.dir).map_err(|e| e.to_string())?;
    if a.stream {
        return stream_case(a);
    }
    println!(
        "tandem-bench node: {} cpus, {} s per run after {} s warm-up, {} connections, data under {}; \
         nodes' engines sized at start for {RESERVE_IDS} ids (limits.reserve_ids)",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        a.duration_s,
        a.warmup_s,
        a.connections,
        a.dir.display()
    );
    let disk = fsync_floor(&a.dir, Duration::from_secs(3))?;
    print_disk_floor(&disk);
    println!(
        "\n{:<26} {:<12} {:>9} {:>9} {:>9} {:>9} {:>9} {:>10} {:>7} {:>5} {:>4}",
        "case",
        "load",
        "target/s",
        "got/s",
        "p50 us",
        "p99 us",
        "p99.9 us",
        "max us",
        "errors",
        "lost",
        "dup"
    );
    let mut rows = Vec::new();
    let mut seed = 0;
    if !a.only_kafka {
        // The durable default, the same without the log's zeros written
        // ahead (each sync then also commits the file's new size), and
        // fsync off.
        let ahead = NodeConfig::default().log.write_ahead_bytes;
        for (case, fsync, write_ahead) in [
            ("fsync, no write-ahead", true, 0),
            ("file log, fsync", true, ahead),
            ("file log, fsync off", false, ahead),
        ] {
            let mut cfg = node_config(&a.dir, &format!("n-{fsync}-{write_ahead}"), fsync);
            cfg.log.write_ahead_bytes = write_ahead;
            let n = RunningNode::start(cfg)?;
            run_case(case, &[n.url()], a, None, &mut rows, &mut seed)?;
        }
    }
    if a.kafka || a.only_kafka {
        let broker_dir = a.dir.join("tansu");
        std::fs::create_dir_all(&broker_dir).map_err(|e| e.to_string())?;
        let port = free_port()?;
        let mut broker = tandem_kafka::tansu::spawn(&broker_dir, port, port)?;
        let result = (|| {
            let mut nodes = Vec::new();
            for i in 0..3 {
                let mut cfg = node_config(&a.dir, &format!("k{i}"), true);
                cfg.log.kind = LogKind::Kafka;
                cfg.log.kafka_brokers = format!("127.0.0.1:{port}");
                cfg.log.kafka_topic = "bench-orders".into();
                cfg.log.kafka_partitions = 1;
                // One broker: the node creates the topic, unreplicated.
                cfg.log.kafka_create_topic = true;
                cfg.log.kafka_replication = 1;
                cfg.log.kafka_min_insync_replicas = 1;
                nodes.push(RunningNode::start(cfg)?);
            }
            let targets: Vec<String> = nodes.iter().map(RunningNode::url).collect();
            let addr = format!("127.0.0.1:{port}");
            let b = Broker {
                addr: &addr,
                fetch_wait_ms: NodeConfig::default().log.kafka_fetch_wait_ms,
            };
            run_case(
                "3 nodes, kafka (tansu)",
                &targets,
                a,
                Some(&b),
                &mut rows,
                &mut seed,
            )
        })();
        let _ = broker.kill();
        let _ = broker.wait();
        result?;
    }
    println!(
        "\nlatency is measured from each request's intended send time (open loop); \
         floor = GET /healthz on the same server; errors = failed requests after retries"
    );
    if let Some(path) = &a.json {
        let runs: Vec<String> = rows
            .iter()
            .map(|r| {
                let broker = r.broker.as_ref().map_or(String::new(), |f| {
                    format!(
                        ",\"broker_floor_ms\":{{\"rate\":{},\"messages\":{},\"p50\":{},\"p99\":{},\"max\":{}}}",
                        f.rate, f.messages, f.p50_ms, f.p99_ms, f.max_ms
                    )
                });
                format!(
                    "{{\"case\":{:?},\"load\":{:?},\"report\":{}{broker}}}",
                    r.case,
                    r.what,
                    r.r.to_json()
                )
            })
            .collect();
        let j = format!(
            "{{\"fsync_floor_us\":{{\"p50\":{},\"p99\":{},\"max\":{},\"n\":{},\"group_commit_p50\":{},\"group_commit_p99\":{}}},\"runs\":[{}]}}",
            disk.p50,
            disk.p99,
            disk.max,
            disk.syncs,
            disk.group_p50,
            disk.group_p99,
            runs.join(",")
        );
        std::fs::write(path, j).map_err(|e| format!("write {path}: {e}"))?;
        println!("wrote {path}");
    }
    Ok(())
}

/// The 1, 5 and 15 minute load averages (`/proc/loadavg`).
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// The first number after `"key":` in a JSON text (the loadgen's report;
/// this crate has no JSON reader, and every key read here is unique in it).
fn json_num(text: &str, key: &str) -> Option<f64> {
    let at = text.find(&format!("\"{key}\":"))? + key.len() + 3;
    let rest = text[at..].trim_start();
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || matches!(c, '.' | '-' | 'e' | 'E' | '+')))
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// The load generator's binary beside this one (`tandem-loadgen`, built
/// by `cargo build --release -p tandem-loadgen`).
fn loadgen_binary() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let bin = exe
        .parent()
        .map(|d| d.join("tandem-loadgen"))
        .ok_or("no directory for the current executable")?;
    if bin.exists() {
        Ok(bin)
    } else {
        Err(format!(
            "{} not found: build it first (cargo build --release -p tandem-loadgen)",
            bin.display()
        ))
    }
}

/// The streaming order entry (issue 15, item 1): one node on the durable
/// default (file log, fsync), `GET /healthz` under wrk (closed loop) as
/// the same server's floor, then `tandem-loadgen --grpc-stream` in its own
/// process (closed loop, `streams` x `in_flight`, every acknowledged order
/// read back afterwards). While the load runs, the node's own count of
/// applied commands and the CPU time of this process (the node: nothing
/// else runs in it then) and of the loadgen process are sampled over the
/// measured window, so the figure does not rest on the client alone and
/// the CPU per order is split between server and client.
fn stream_case(a: &NodeArgs) -> Result<(), String> {
    let bin = loadgen_binary()?;
    println!(
        "tandem-bench node --stream: {} cpus, {} s measured after {} s warm-up, {} streams x {} in flight, load average {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        a.duration_s,
        a.warmup_s,
        a.streams,
        a.in_flight,
        loadavg()
    );
    print_disk_floor(&fsync_floor(&a.dir, Duration::from_secs(2))?);
    // The node's own idempotency window (`node_config` keeps 8 M places
    // for the replays of the other cases): the window is saved beside
    // every snapshot by the thread that applies, and at 8 M a save of
    // ~1 M entries (270 MB) stalled every stream for about 2 s. This case
    // reads back every acknowledged order and replays none.
    let mut cfg = node_config(&a.dir, "stream-fsync", true);
    cfg.limits.idempotency_window = NodeConfig::default().limits.idempotency_window;
    let node = RunningNode::start(cfg)?;
    let url = node.url();
    let health = wrk(&format!("{url}/healthz"), None, a.connections, a.duration_s)?;
    match &health {
        Some(h) => println!(
            "floor: GET /healthz, wrk closed loop, {} connections: {:.0} req/s, p50 {:.0} us, p99 {:.0} us (load average {})",
            a.connections,
            h.rps,
            h.p50_us,
            h.p99_us,
            loadavg()
        ),
        None => println!("floor: wrk not found on PATH: the /healthz floor is skipped"),
    }
    let report = a.dir.join("stream-report.json");
    let applied =
        |n: &RunningNode| -> u64 { n.node.partitions.iter().map(|p| p.applied_seq()).sum() };
    let started = Instant::now();
    let child = std::process::Command::new(&bin)
        .args([
            "--target".to_string(),
            url.clone(),
            "--grpc-stream".into(),
            "--connections".into(),
            a.streams.to_string(),
            "--in-flight".into(),
            a.in_flight.to_string(),
            "--duration".into(),
            a.duration_s.to_string(),
            "--warmup".into(),
            a.warmup_s.to_string(),
            "--id-prefix".into(),
            "stream".into(),
            "--replay-ratio".into(),
            "0".into(),
            "--json".into(),
        ])
        .arg(&report)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("{}: {e}", bin.display()))?;
    // The measured window, inside the loadgen's own (a margin each side).
    let margin = (a.duration_s * 0.1).min(0.5);
    let from = started + Duration::from_secs_f64(a.warmup_s + margin);
    let to = started + Duration::from_secs_f64(a.warmup_s + a.duration_s - margin);
    std::thread::sleep(from.saturating_duration_since(Instant::now()));
    let t0 = Instant::now();
    let (c0, l0, n0) = (
        crate::report::process_cpu_secs(),
        tandem_metrics::process_cpu_seconds(Some(child.id())),
        applied(&node),
    );
    let load_mid = loadavg();
    std::thread::sleep(to.saturating_duration_since(Instant::now()));
    let (c1, l1, n1) = (
        crate::report::process_cpu_secs(),
        tandem_metrics::process_cpu_seconds(Some(child.id())),
        applied(&node),
    );
    let window = t0.elapsed().as_secs_f64();
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out.stdout);
    print!("{text}");
    if !out.status.success() {
        return Err(format!("tandem-loadgen failed: {}", out.status));
    }
    let json = std::fs::read_to_string(&report).map_err(|e| e.to_string())?;
    let num = |k: &str| json_num(&json, k).unwrap_or(f64::NAN);
    let orders = (n1 - n0) as f64;
    let per_order_us = |c0: Option<f64>, c1: Option<f64>| match (c0, c1) {
        (Some(a), Some(b)) if orders > 0.0 => format!("{:.1}", (b - a) * 1e6 / orders),
        _ => "?".into(),
    };
    let cores = |c0: Option<f64>, c1: Option<f64>| match (c0, c1) {
        (Some(a), Some(b)) => format!("{:.2}", (b - a) / window),
        _ => "?".into(),
    };
    println!(
        "stream: loadgen (own process) {:.0} orders/s acknowledged, p50 {:.0} us, p99 {:.0} us, p99.9 {:.0} us; \
         {} of {} measured ok; verify: {} checked, {} lost, {} duplicated, {} inconsistent",
        num("achieved_rate"),
        num("p50"),
        num("p99"),
        num("p99_9"),
        num("ok"),
        num("measured"),
        num("checked"),
        num("lost"),
        num("duplicated"),
        num("inconsistent"),
    );
    println!(
        "stream: node side over {window:.1} s of the measured window: {:.0} commands/s applied; \
         CPU per command: node {} us ({} cores busy), loadgen {} us ({} cores busy); load average {load_mid}",
        orders / window,
        per_order_us(c0, c1),
        cores(c0, c1),
        per_order_us(l0, l1),
        cores(l0, l1),
    );
    if let Some(h) = &health {
        println!(
            "stream: orders/s / wrk /healthz req/s in the same run = {:.2}; goal 100 k orders/s: {}",
            num("achieved_rate") / h.rps,
            if num("achieved_rate") >= 100_000.0 {
                "met"
            } else {
                "missed"
            }
        );
    }
    Ok(())
}

fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::{json_num, parse_wrk, wrk_us};

    #[test]
    fn reads_numbers_of_the_loadgen_report() {
        let j = "{\n  \"achieved_rate\": 123456.7,\n  \"latency_us\": {\n    \"p50\": 812.0,\n    \"p99\": 2e3,\n    \"p99_9\": 4100\n  },\n  \"lost\": 0\n}";
        assert_eq!(json_num(j, "achieved_rate"), Some(123_456.7));
        assert_eq!(json_num(j, "p50"), Some(812.0));
        assert_eq!(json_num(j, "p99"), Some(2000.0));
        assert_eq!(json_num(j, "p99_9"), Some(4100.0));
        assert_eq!(json_num(j, "lost"), Some(0.0));
        assert_eq!(json_num(j, "missing"), None);
    }

    #[test]
    fn reads_wrk_latency_output() {
        let out = "Running 10s test @ http://127.0.0.1:18080/v1/orders
  2 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    10.12ms   20.33ms 198.29ms   91.40%
    Req/Sec     7.29k     4.85k   30.75k    71.07%
  Latency Distribution
     50%    3.17ms
     75%    7.18ms
     90%   25.24ms
     99%  112.44ms
  144483 requests in 10.11s, 45.52MB read
  Non-2xx or 3xx responses: 12
Requests/sec:  14294.79
Transfer/sec:      4.50MB
";
        let w = parse_wrk(out).expect("parsed");
        let near = |a: f64, b: f64| (a - b).abs() < 1e-6 * b;
        assert!(near(w.rps, 14294.79), "{}", w.rps);
        assert!(near(w.p50_us, 3170.0), "{}", w.p50_us);
        assert!(near(w.p99_us, 112_440.0), "{}", w.p99_us);
        assert_eq!(w.requests, 144_483);
        assert_eq!(w.non_2xx, 12);
        assert!(wrk_us("812.00us").is_some_and(|v| near(v, 812.0)));
        assert!(wrk_us("2.00s").is_some_and(|v| near(v, 2e6)));
        assert_eq!(wrk_us("3.1x"), None);
        // No throughput line: not a wrk result.
        assert!(parse_wrk("unable to connect to 127.0.0.1:1").is_none());
    }
}
