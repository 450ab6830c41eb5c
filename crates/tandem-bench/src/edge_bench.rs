//! `tandem-bench edge`: what the edge costs, beside nginx in front of the
//! same upstreams, and how exactly it splits.
//!
//! Three upstreams on loopback: by default three minimal hyper servers
//! answering a fixed small JSON body (so the figures are the proxy's own
//! cost), or with `--upstream node` three real in-process Tandem nodes with
//! fsync off (the loadgen then reads `GET /v1/status`). The same open-loop
//! load generator (`tandem-loadgen`, path mode, keep-alive connections)
//! runs, at the same rates in the same run, against:
//!
//! 1. the upstreams directly (round-robin over the three);
//! 2. Tandem's edge (in this process, on its own runtime) with the three as
//!    clusters weighted 34/33/33;
//! 3. Debian's nginx (a child process; config rendered from
//!    `deploy/edge/nginx.conf.template`: the same weights, keepalive to the
//!    upstreams), if `nginx` is on the PATH (`scripts/bench-edge.sh`
//!    installs it); skipped with a message otherwise.
//!
//! Each case runs the given rates, then searches upward for the highest
//! rate it sustains (achieved ≥ 97 % of the target, no failed request, p99
//! under `--max-p99-ms`). Then the split: accounts through the running edge
//! at each weight step D0..D5, shares against weights, agreement with
//! `tandem_route::route`, and the accounts each step moved beside the
//! fewest any split could move (the `tandem-route` example `split` prints
//! the function-level table alone).
//!
//! Beside each run of the edge and of nginx: the proxy's own CPU time per
//! request (`/proc/.../schedstat` of the edge's runtime threads, of
//! nginx's master and workers; warm-up requests included), the figure a
//! busy shared machine moves least.
//!
//! Every figure printed was measured in this run; none is asserted.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tandem_edge::config::{ClusterConfig, NodeAddr, Role};
use tandem_edge::{Edge, EdgeConfig};
use tandem_loadgen::{LoadgenConfig, Report};

/// Flags of `tandem-bench edge`.
#[derive(Debug, Clone, PartialEq)]
pub struct EdgeArgs {
    pub rates: Vec<f64>,
    pub duration_s: f64,
    pub warmup_s: f64,
    pub connections: usize,
    pub search: bool,
    pub max_p99_ms: f64,
    /// `mock` (minimal servers), `node` (Tandem nodes, fsync off) or `both`.
    pub upstream: String,
    /// nginx `worker_processes` (a number or `auto`).
    pub nginx_workers: String,
    /// Edge runtime worker threads.
    pub edge_threads: usize,
    /// Accounts for the split figures (0 skips them).
    pub split_accounts: usize,
    pub dir: PathBuf,
}

impl Default for EdgeArgs {
    fn default() -> Self {
        EdgeArgs {
            rates: vec![1_000.0, 10_000.0],
            duration_s: 5.0,
            warmup_s: 1.0,
            connections: 64,
            search: true,
            max_p99_ms: 20.0,
            upstream: "mock".into(),
            nginx_workers: "auto".into(),
            edge_threads: 2,
            split_accounts: 100_000,
            dir: std::env::temp_dir().join("tandem-bench-edge"),
        }
    }
}

/// A runtime on its own threads, serving something until dropped.
struct Served {
    stop: Option<tokio::sync::watch::Sender<bool>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(true);
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn runtime(threads: usize, name: &str) -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .enable_all()
        .thread_name(name)
        .build()
        .map_err(|e| format!("runtime: {e}"))
}

const FIXED_BODY: &[u8] = br#"{"node":"mock","partitions":[{"id":0,"applied_seq":0}]}"#;

/// Three minimal HTTP/1.1 servers (one runtime, one worker thread) that
/// answer every request with `FIXED_BODY`.
fn start_mocks() -> Result<(Vec<SocketAddr>, Served), String> {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let rt = runtime(1, "bench-upstream")?;
    let mut listeners = Vec::new();
    for _ in 0..3 {
        listeners.push(
            rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
                .map_err(|e| format!("bind: {e}"))?,
        );
    }
    let addrs = listeners
        .iter()
        .map(|l| l.local_addr().map_err(|e| e.to_string()))
        .collect::<Result<Vec<_>, _>>()?;
    let (tx, rx) = tokio::sync::watch::channel(false);
    let thread = std::thread::spawn(move || {
        rt.block_on(async move {
            for l in listeners {
                tokio::spawn(async move {
                    loop {
                        let Ok((s, _)) = l.accept().await else {
                            continue;
                        };
                        let _ = s.set_nodelay(true);
                        tokio::spawn(async move {
                            let svc = hyper::service::service_fn(|_req| async {
                                let mut r = http::Response::new(http_body_util::Full::new(
                                    bytes::Bytes::from_static(FIXED_BODY),
                                ));
                                r.headers_mut().insert(
                                    http::header::CONTENT_TYPE,
                                    http::HeaderValue::from_static("application/json"),
                                );
                                Ok::<_, Infallible>(r)
                            });
                            let _ =
                                hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                                    .serve_connection(TokioIo::new(s), svc)
                                    .await;
                        });
                    }
                });
            }
            let mut rx = rx;
            let _ = rx.wait_for(|s| *s).await;
        });
    });
    Ok((
        addrs,
        Served {
            stop: Some(tx),
            thread: Some(thread),
        },
    ))
}

/// Clusters `c0`, `c1`, `c2` (one upstream each) at `weights`.
fn clusters(upstreams: &[SocketAddr], weights: [u32; 3]) -> Vec<ClusterConfig> {
    upstreams
        .iter()
        .zip(weights)
        .enumerate()
        .map(|(i, (a, w))| ClusterConfig {
            name: format!("c{i}"),
            version: "bench".into(),
            role: if i == 0 { Role::Stable } else { Role::Canary },
            weight: w,
            nodes: vec![NodeAddr {
                addr: a.to_string(),
                zone: "bench".into(),
            }],
        })
        .collect()
}

/// Tandem's edge as `tandem edge` wires it, without signals: the public
/// listener on `threads` worker threads (`tandem_edge::spawn_workers`, one
/// single-threaded runtime each) and the health loop on a runtime of its
/// own.
fn start_edge(
    upstreams: &[SocketAddr],
    threads: usize,
) -> Result<(SocketAddr, Arc<Edge>, Served), String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bind: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let cfg = EdgeConfig {
        zone: "bench".into(),
        clusters: clusters(upstreams, [34, 33, 33]),
        worker_threads: threads,
        ..EdgeConfig::default()
    };
    cfg.check().map_err(|e| e.to_string())?;
    let edge = Edge::new(cfg);
    let (tx, rx) = tokio::sync::watch::channel(false);
    let workers = tandem_edge::spawn_workers(
        listener,
        Arc::clone(&edge),
        |e, r| async move { tandem_edge::proxy::proxy(&e, r).await },
        threads,
        rx.clone(),
        Duration::ZERO,
    )
    .map_err(|e| format!("edge workers: {e}"))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("runtime: {e}"))?;
    let e = Arc::clone(&edge);
    let thread = std::thread::spawn(move || {
        rt.block_on(async move {
            tokio::spawn(tandem_edge::health_loop(e));
            let mut rx = rx;
            let _ = rx.wait_for(|s| *s).await;
        });
        workers.join();
    });
    Ok((
        addr,
        edge,
        Served {
            stop: Some(tx),
            thread: Some(thread),
        },
    ))
}

/// nginx as a child process; killed on drop.
struct Nginx {
    child: Child,
}

impl Drop for Nginx {
    /// SIGTERM, not SIGKILL: the master must live long enough to stop its
    /// workers, or they outlive it.
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

const NGINX_TEMPLATE: &str = include_str!("../../../deploy/edge/nginx.conf.template");

fn start_nginx(
    upstreams: &[SocketAddr],
    a: &EdgeArgs,
) -> Result<Option<(SocketAddr, Nginx)>, String> {
    let Ok(out) = Command::new("nginx").arg("-v").output() else {
        println!(
            "nginx: not found on PATH; skipped (scripts/bench-edge.sh installs Debian's nginx)"
        );
        return Ok(None);
    };
    let version = String::from_utf8_lossy(&out.stderr).trim().to_string();
    let dir = a.dir.join("nginx");
    std::fs::create_dir_all(dir.join("logs")).map_err(|e| e.to_string())?;
    let listen = free_addr()?;
    let weights = [34, 33, 33];
    let servers: String = upstreams
        .iter()
        .zip(weights)
        .map(|(u, w)| format!("        server {u} weight={w} max_fails=3 fail_timeout=5s;\n"))
        .collect();
    let conf = NGINX_TEMPLATE
        .replace("{{WORKERS}}", &a.nginx_workers)
        .replace("{{PREFIX}}", &dir.display().to_string())
        .replace("{{LISTEN}}", &listen.to_string())
        .replace("{{UPSTREAMS}}", servers.trim_end());
    let path = dir.join("nginx.conf");
    std::fs::write(&path, conf).map_err(|e| e.to_string())?;
    let child = Command::new("nginx")
        .arg("-p")
        .arg(&dir)
        .arg("-c")
        .arg(&path)
        .args(["-g", "daemon off;"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("start nginx: {e}"))?;
    let n = Nginx { child };
    let end = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(listen).is_err() {
        if Instant::now() > end {
            return Err(format!("nginx did not listen on {listen}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    println!(
        "nginx: {version}, worker_processes {}, config {}",
        a.nginx_workers,
        path.display()
    );
    Ok(Some((listen, n)))
}

fn free_addr() -> Result<SocketAddr, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| e.to_string())
}

fn load(
    targets: &[String],
    rate: f64,
    a: &EdgeArgs,
    path: &str,
    seed: u64,
) -> Result<Report, String> {
    let cfg = LoadgenConfig {
        targets: targets.to_vec(),
        rate,
        duration_s: a.duration_s,
        warmup_s: a.warmup_s,
        connections: a.connections,
        path: Some(path.into()),
        verify: false,
        // A failure must show, not be retried away by the client.
        retries: 0,
        seed,
        ..LoadgenConfig::default()
    };
    tandem_loadgen::run(&cfg).map_err(|e| e.to_string())
}

fn sustained(r: &Report, a: &EdgeArgs) -> bool {
    r.achieved_rate >= 0.97 * r.target_rate
        && r.errors.total() == 0
        && r.latency_us.p99 <= a.max_p99_ms * 1000.0
}

fn print_row(case: &str, what: &str, r: &Report, cpu_us: Option<f64>) {
    let l = &r.latency_us;
    println!(
        "{:<22} {:<12} {:>9.0} {:>9.0} {:>9.0} {:>9.0} {:>9.0} {:>10.0} {:>7} {:>8}",
        case,
        what,
        r.target_rate,
        r.achieved_rate,
        l.p50,
        l.p99,
        l.p99_9,
        l.max,
        r.errors.total(),
        cpu_us.map_or("-".to_string(), |c| format!("{c:.1}"))
    );
}

/// CPU time used so far by a proxy, nanoseconds (`/proc/.../schedstat`).
type CpuClock = Box<dyn Fn() -> u64>;

/// The first field of a `schedstat` file: time run on a CPU, ns.
fn schedstat_ns(path: &std::path::Path) -> u64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// CPU of this process's threads whose name starts with `name` (the
/// edge's workers).
fn threads_cpu(name: &'static str) -> CpuClock {
    Box::new(move || {
        let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
            return 0;
        };
        tasks
            .flatten()
            .filter(|t| {
                std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.starts_with(name))
            })
            .map(|t| schedstat_ns(&t.path().join("schedstat")))
            .sum()
    })
}

/// CPU of process `pid` and its children (nginx's master and workers).
fn process_tree_cpu(pid: u32) -> CpuClock {
    Box::new(move || {
        let Ok(procs) = std::fs::read_dir("/proc") else {
            return 0;
        };
        procs
            .flatten()
            .filter(|p| {
                let Ok(stat) = std::fs::read_to_string(p.path().join("stat")) else {
                    return false;
                };
                let own = p.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) == Some(pid);
                // `pid (comm) state ppid ...`; comm may hold spaces.
                let ppid = stat
                    .rsplit_once(')')
                    .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok());
                own || ppid == Some(pid)
            })
            .map(|p| schedstat_ns(&p.path().join("schedstat")))
            .sum()
    })
}

/// One run, with the proxy's CPU per request (warm-up included on both
/// sides) when `cpu` is given.
fn load_cpu(
    targets: &[String],
    rate: f64,
    a: &EdgeArgs,
    path: &str,
    seed: u64,
    cpu: Option<&CpuClock>,
) -> Result<(Report, Option<f64>), String> {
    let before = cpu.map(|c| c());
    let r = load(targets, rate, a, path, seed)?;
    let used = cpu
        .zip(before)
        .map(|(c, b)| c().saturating_sub(b) as f64 / 1000.0 / r.scheduled.max(1) as f64);
    Ok((r, used))
}

/// Per case: the fixed-rate reports and the highest sustained rate.
struct CaseResult {
    case: String,
    at: BTreeMap<u64, Report>,
    best: Option<f64>,
    /// The proxy's CPU per request at each fixed rate, microseconds.
    cpu_us: BTreeMap<u64, f64>,
    /// What the case's probe measured beside each fixed rate (the edge's
    /// own latency and its workers' shares of the CPU).
    notes: BTreeMap<u64, String>,
}

/// What a proxy itself saw over a run: for the edge its own
/// request-to-answer-head histogram (`tandem_edge_request_duration_seconds`,
/// summed over the clusters); for both, each worker's CPU time (the edge's
/// worker threads, nginx's worker processes), to show how the load was
/// shared.
struct Probe {
    edge: Option<Arc<Edge>>,
    /// CPU time of each worker now, ns.
    workers: Box<dyn Fn() -> Vec<u64>>,
}

/// A probe's reading at one moment.
struct ProbeReading {
    /// Cumulative count at each bucket bound (seconds), `+Inf` last.
    buckets: Vec<(f64, u64)>,
    worker_ns: Vec<u64>,
}

impl Probe {
    fn edge(edge: &Arc<Edge>, threads: usize) -> Probe {
        Probe {
            edge: Some(Arc::clone(edge)),
            workers: Box::new(move || {
                (0..threads)
                    .map(|i| worker_cpu_ns(&format!("tandem-edge-w{i}")))
                    .collect()
            }),
        }
    }

    /// nginx's worker processes (the master's children), in pid order.
    fn nginx(master: u32) -> Probe {
        Probe {
            edge: None,
            workers: Box::new(move || {
                let Ok(procs) = std::fs::read_dir("/proc") else {
                    return Vec::new();
                };
                let mut kids: Vec<(u32, u64)> = procs
                    .flatten()
                    .filter_map(|p| {
                        let pid = p.file_name().to_str()?.parse::<u32>().ok()?;
                        let stat = std::fs::read_to_string(p.path().join("stat")).ok()?;
                        let ppid = stat.rsplit_once(')').and_then(|(_, rest)| {
                            rest.split_whitespace().nth(1)?.parse::<u32>().ok()
                        })?;
                        (ppid == master).then(|| (pid, schedstat_ns(&p.path().join("schedstat"))))
                    })
                    .collect();
                kids.sort_unstable();
                kids.into_iter().map(|(_, ns)| ns).collect()
            }),
        }
    }

    fn read(&self) -> ProbeReading {
        ProbeReading {
            buckets: self
                .edge
                .as_ref()
                .map(|e| duration_buckets(&e.metrics.render("")))
                .unwrap_or_default(),
            worker_ns: (self.workers)(),
        }
    }

    /// The edge's own p50 and p99 over the run (the upper bound of the
    /// bucket holding each) and each worker's share of the CPU.
    fn note(&self, before: &ProbeReading, after: &ProbeReading) -> String {
        let mut out = String::new();
        if self.edge.is_some() {
            // By bound: before the first answer there are no buckets at all.
            let counts: Vec<(f64, u64)> = after
                .buckets
                .iter()
                .map(|(b, a)| {
                    let z = before
                        .buckets
                        .iter()
                        .find(|(x, _)| x == b)
                        .map_or(0, |(_, z)| *z);
                    (*b, a.saturating_sub(z))
                })
                .collect();
            out = format!(
                "edge's own time, request head to the node's answer head: p50 <= {}, p99 <= {}; ",
                quantile_bound_us(&counts, 0.50),
                quantile_bound_us(&counts, 0.99)
            );
        }
        let used: Vec<u64> = after
            .worker_ns
            .iter()
            .zip(&before.worker_ns)
            .map(|(a, b)| a.saturating_sub(*b))
            .collect();
        let total = used.iter().sum::<u64>().max(1) as f64;
        let shares: Vec<String> = used
            .iter()
            .map(|u| format!("{:.0}", 100.0 * *u as f64 / total))
            .collect();
        out.push_str(&format!("workers' CPU shares {} %", shares.join("/")));
        out
    }
}

/// The `tandem_edge_request_duration_seconds` buckets of a metrics text,
/// summed over every label set: (upper bound in seconds, cumulative count).
fn duration_buckets(text: &str) -> Vec<(f64, u64)> {
    let mut sum: BTreeMap<u64, (f64, u64)> = BTreeMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("tandem_edge_request_duration_seconds_bucket{") else {
            continue;
        };
        let Some((labels, value)) = rest.rsplit_once("} ") else {
            continue;
        };
        let Some(le) = labels
            .split("le=\"")
            .nth(1)
            .and_then(|l| l.strip_suffix('"'))
        else {
            continue;
        };
        let bound = if le == "+Inf" {
            f64::INFINITY
        } else {
            match le.parse::<f64>() {
                Ok(b) => b,
                Err(_) => continue,
            }
        };
        let n: u64 = value.trim().parse().unwrap_or(0);
        let e = sum.entry(bound.to_bits()).or_insert((bound, 0));
        e.1 += n;
    }
    let mut v: Vec<(f64, u64)> = sum.into_values().collect();
    v.sort_by(|a, b| a.0.total_cmp(&b.0));
    v
}

/// The upper bound (µs) of the first bucket whose cumulative count
/// reaches fraction `p` of the total, as text ("-" with no observation).
fn quantile_bound_us(cumulative: &[(f64, u64)], p: f64) -> String {
    let total = cumulative.last().map_or(0, |l| l.1);
    if total == 0 {
        return "-".into();
    }
    let want = (p * total as f64).ceil() as u64;
    match cumulative.iter().find(|(_, c)| *c >= want) {
        Some((b, _)) if b.is_finite() => format!("{:.0} us", b * 1e6),
        _ => "above the last bound".into(),
    }
}

/// CPU time of this process's thread named exactly `name`, ns.
fn worker_cpu_ns(name: &str) -> u64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    tasks
        .flatten()
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim_end() == name)
        })
        .map(|t| schedstat_ns(&t.path().join("schedstat")))
        .sum()
}

fn run_case(
    case: &str,
    targets: &[String],
    a: &EdgeArgs,
    path: &str,
    seed: &mut u64,
    cpu: Option<CpuClock>,
    probe: Option<&Probe>,
) -> Result<CaseResult, String> {
    let mut at = BTreeMap::new();
    let mut cpu_us = BTreeMap::new();
    let mut notes = BTreeMap::new();
    for &rate in &a.rates {
        *seed += 1;
        let before = probe.map(Probe::read);
        let (r, used) = load_cpu(targets, rate, a, path, *seed, cpu.as_ref())?;
        print_row(case, "fixed", &r, used);
        if let (Some(p), Some(b)) = (probe, before) {
            notes.insert(rate as u64, p.note(&b, &p.read()));
        }
        if let Some(u) = used {
            cpu_us.insert(rate as u64, u);
        }
        at.insert(rate as u64, r);
    }
    let mut best = None;
    if a.search {
        let mut rate = a.rates.iter().copied().fold(10_000.0, f64::max) * 1.5;
        while rate <= 400_000.0 {
            *seed += 1;
            let (r, used) = load_cpu(targets, rate, a, path, *seed, cpu.as_ref())?;
            let ok = sustained(&r, a);
            print_row(case, if ok { "search ok" } else { "search miss" }, &r, used);
            if !ok {
                break;
            }
            best = Some(rate);
            rate *= 1.3;
        }
    }
    Ok(CaseResult {
        case: case.into(),
        at,
        best,
        cpu_us,
        notes,
    })
}

fn header() {
    println!(
        "\n{:<22} {:<12} {:>9} {:>9} {:>9} {:>9} {:>9} {:>10} {:>7} {:>8}",
        "case",
        "load",
        "target/s",
        "got/s",
        "p50 us",
        "p99 us",
        "p99.9 us",
        "max us",
        "errors",
        "cpu us/req"
    );
}

fn summary(results: &[CaseResult]) {
    let Some(direct) = results.first() else {
        return;
    };
    println!("\nadded latency over direct (same rate, same run):");
    for r in &results[1..] {
        for (rate, rep) in &r.at {
            let Some(d) = direct.at.get(rate) else {
                continue;
            };
            println!(
                "  {:<22} at {:>6}/s: p50 {:>+8.0} us, p99 {:>+8.0} us{}",
                r.case,
                rate,
                rep.latency_us.p50 - d.latency_us.p50,
                rep.latency_us.p99 - d.latency_us.p99,
                if rep.errors.total() > 0 {
                    format!(" ({} errors)", rep.errors.total())
                } else {
                    String::new()
                }
            );
        }
    }
    println!("proxy CPU per request (its threads or processes, warm-up included):");
    for r in &results[1..] {
        for (rate, us) in &r.cpu_us {
            println!("  {:<22} at {:>6}/s: {us:>6.1} us", r.case, rate);
        }
    }
    for r in results {
        for (rate, note) in &r.notes {
            println!("  {:<22} at {:>6}/s: {note}", r.case, rate);
        }
    }
    println!("highest sustained rate (p99 within the bound, no error, ≥ 97 % of target):");
    for r in results {
        match r.best {
            Some(b) => println!("  {:<22} {b:>9.0} req/s", r.case),
            None => println!(
                "  {:<22} (no searched rate sustained, or no search)",
                r.case
            ),
        }
    }
    let best = |case: &str| results.iter().find(|r| r.case == case).and_then(|r| r.best);
    if let (Some(e), Some(n)) = (best("tandem edge"), best("nginx")) {
        println!("  edge / nginx: {:.2}", e / n);
    }
}

/// The cases over one set of upstreams.
fn bench_upstreams(
    label: &str,
    upstreams: &[SocketAddr],
    path: &str,
    a: &EdgeArgs,
    seed: &mut u64,
) -> Result<(), String> {
    println!(
        "\n== upstreams: {label}; loadgen GET {path}, {} connections ==",
        a.connections
    );
    let direct: Vec<String> = upstreams.iter().map(|u| format!("http://{u}")).collect();
    let (edge_addr, edge, edge_served) = start_edge(upstreams, a.edge_threads)?;
    println!(
        "edge: in this process, {} worker threads (one runtime each), clusters c0/c1/c2 at 34/33/33",
        a.edge_threads
    );
    let nginx = start_nginx(upstreams, a)?;
    header();
    let mut results = vec![run_case(
        "direct (round-robin)",
        &direct,
        a,
        path,
        seed,
        None,
        None,
    )?];
    let probe = Probe::edge(&edge, a.edge_threads);
    results.push(run_case(
        "tandem edge",
        &[format!("http://{edge_addr}")],
        a,
        path,
        seed,
        Some(threads_cpu("tandem-edge-w")),
        Some(&probe),
    )?);
    if let Some((addr, n)) = &nginx {
        results.push(run_case(
            "nginx",
            &[format!("http://{addr}")],
            a,
            path,
            seed,
            Some(process_tree_cpu(n.child.id())),
            Some(&Probe::nginx(n.child.id())),
        )?);
    }
    drop(nginx);
    drop(edge_served);
    summary(&results);
    Ok(())
}

const STEPS: [(&str, [u32; 3]); 6] = [
    ("D0 warm-up", [100, 0, 0]),
    ("D1 canary", [95, 5, 0]),
    ("D2-D3 expand", [70, 30, 0]),
    ("D4 balance", [45, 45, 10]),
    ("D5 done", [34, 33, 33]),
    ("rollback", [100, 0, 0]),
];

/// Sends one request per account through the edge (keep-alive, 32 in
/// flight) and returns the cluster index each one answered from.
fn through_edge(
    rt: &tokio::runtime::Runtime,
    edge: SocketAddr,
    accounts: &[String],
) -> Result<Vec<u8>, String> {
    use http_body_util::BodyExt;
    use hyper_util::client::legacy::{connect::HttpConnector, Client};
    rt.block_on(async {
        let client: Client<HttpConnector, http_body_util::Empty<bytes::Bytes>> =
            Client::builder(hyper_util::rt::TokioExecutor::new()).build(HttpConnector::new());
        let accounts = Arc::new(accounts.to_vec());
        let lanes = 32;
        let mut tasks = Vec::new();
        for lane in 0..lanes {
            let (client, accounts) = (client.clone(), Arc::clone(&accounts));
            tasks.push(tokio::spawn(async move {
                let mut out = Vec::new();
                for i in (lane..accounts.len()).step_by(lanes) {
                    let req = http::Request::get(format!("http://{edge}/v1/status"))
                        .header("x-tandem-account", accounts[i].as_str())
                        .body(http_body_util::Empty::new())
                        .map_err(|e| e.to_string())?;
                    let resp = client.request(req).await.map_err(|e| e.to_string())?;
                    let c = resp
                        .headers()
                        .get("x-tandem-cluster")
                        .and_then(|v| v.as_bytes().get(1))
                        .map_or(u8::MAX, |d| d - b'0');
                    let _ = resp.into_body().collect().await;
                    out.push((i, c));
                }
                Ok::<_, String>(out)
            }));
        }
        let mut chosen = vec![u8::MAX; accounts.len()];
        for t in tasks {
            for (i, c) in t.await.map_err(|e| e.to_string())?? {
                chosen[i] = c;
            }
        }
        Ok(chosen)
    })
}

fn split(upstreams: &[SocketAddr], a: &EdgeArgs) -> Result<(), String> {
    let n = a.split_accounts;
    if n == 0 {
        return Ok(());
    }
    println!(
        "\n== split: {n} accounts (acct-0 ..) through the running edge at each weight step =="
    );
    let (edge_addr, edge, _served) = start_edge(upstreams, a.edge_threads)?;
    let rt = runtime(2, "bench-split")?;
    let accounts: Vec<String> = (0..n).map(|i| format!("acct-{i}")).collect();
    println!(
        "{:<4} {:>10} {:>24} {:>24} {:>10} {:>8} {:>8}",
        "step",
        "weights",
        "edge shares c0/c1/c2 %",
        "max |share-weight| pt",
        "= route()",
        "moved",
        "minimum"
    );
    let mut prev: Option<(Vec<u8>, [u32; 3])> = None;
    for (name, w) in STEPS {
        edge.routes
            .set_clusters(&clusters(upstreams, w), None)
            .map_err(|e| format!("weights {name}: {e}"))?;
        let started = Instant::now();
        let chosen = through_edge(&rt, edge_addr, &accounts)?;
        let took = started.elapsed();
        let rc: Vec<tandem_route::Cluster<'_>> = ["c0", "c1", "c2"]
            .iter()
            .zip(w)
            .map(|(name, weight)| tandem_route::Cluster {
                name,
                role: tandem_route::Role::Stable,
                weight,
            })
            .collect();
        let agree = accounts
            .iter()
            .zip(&chosen)
            .filter(|(acct, &c)| {
                let req = tandem_route::Request {
                    pin: None,
                    account: Some(acct.as_bytes()),
                    key: 0,
                };
                tandem_route::route(&rc, &req) == Some(usize::from(c))
            })
            .count();
        let mut counts = [0usize; 3];
        for &c in &chosen {
            if let Some(x) = counts.get_mut(usize::from(c)) {
                *x += 1;
            }
        }
        let pct = |x: usize| 100.0 * x as f64 / n as f64;
        let dev = (0..3)
            .map(|i| (pct(counts[i]) - f64::from(w[i])).abs())
            .fold(0.0, f64::max);
        let (moved, minimum) = match &prev {
            Some((before, pw)) => {
                let m = before.iter().zip(&chosen).filter(|(x, y)| x != y).count();
                let min: u32 = pw.iter().zip(&w).map(|(x, y)| y.saturating_sub(*x)).sum();
                (format!("{:.2}%", pct(m)), format!("{min}%"))
            }
            None => ("-".into(), "-".into()),
        };
        println!(
            "{:<4} {:>10} {:>24} {:>24.2} {:>10} {:>8} {:>8}   ({:.0} req/s)",
            name,
            format!("{}/{}/{}", w[0], w[1], w[2]),
            format!(
                "{:.2}/{:.2}/{:.2}",
                pct(counts[0]),
                pct(counts[1]),
                pct(counts[2])
            ),
            dev,
            format!("{:.2}%", 100.0 * agree as f64 / n as f64),
            moved,
            minimum,
            n as f64 / took.as_secs_f64()
        );
        prev = Some((chosen, w));
    }
    println!(
        "(weights 95/5 and 34/33/33 are D1 and D4; the routing function's own table: \
         `cargo run --release -p tandem-route --example split`)"
    );
    Ok(())
}

/// Three in-process Tandem nodes (file log, fsync off) on loopback.
fn start_nodes(
    a: &EdgeArgs,
) -> Result<(Vec<SocketAddr>, Vec<crate::node_bench::RunningNode>), String> {
    let mut nodes = Vec::new();
    for i in 0..3 {
        let cfg = crate::node_bench::node_config(&a.dir, &format!("edge-n{i}"), false);
        nodes.push(crate::node_bench::RunningNode::start(cfg)?);
    }
    Ok((nodes.iter().map(|n| n.addr).collect(), nodes))
}

pub fn run(a: &EdgeArgs) -> Result<(), String> {
    let _ = std::fs::remove_dir_all(&a.dir);
    std::fs::create_dir_all(&a.dir).map_err(|e| e.to_string())?;
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "tandem-bench edge: {} cpus, load average {}, {} s per run after {} s warm-up, open loop, no client retries",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        load.split_whitespace().take(3).collect::<Vec<_>>().join(" "),
        a.duration_s,
        a.warmup_s
    );
    let mut seed = 0;
    let (mocks, _mock_served) = start_mocks()?;
    if a.upstream == "mock" || a.upstream == "both" {
        bench_upstreams(
            "3 minimal hyper servers (fixed 56-byte JSON), one runtime thread",
            &mocks,
            "/v1/status",
            a,
            &mut seed,
        )?;
    }
    if a.upstream == "node" || a.upstream == "both" {
        let (addrs, _nodes) = start_nodes(a)?;
        bench_upstreams(
            "3 Tandem nodes in this process (file log, fsync off)",
            &addrs,
            "/v1/status",
            a,
            &mut seed,
        )?;
    }
    split(&mocks, a)?;
    println!(
        "\nlatency from each request's intended send time (open loop); errors = failed requests (the client does not retry)"
    );
    let _ = std::fs::remove_dir_all(a.dir.join("nginx"));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{duration_buckets, quantile_bound_us};
    use std::time::Duration;

    #[test]
    fn the_edge_histogram_is_read_back_into_quantile_bounds() {
        let m = tandem_edge::metrics::EdgeMetrics::default();
        // 98 answers near 50 µs in one cluster, 2 near 2 ms in another.
        for _ in 0..98 {
            m.answered("c0", "v", 200, Duration::from_micros(50));
        }
        for _ in 0..2 {
            m.answered("c1", "v", 200, Duration::from_micros(2_000));
        }
        let b = duration_buckets(&m.render(""));
        assert_eq!(b.last().map(|l| l.1), Some(100), "{b:?}");
        // 50 µs falls in the bucket bounded by 56 µs; the 99th answer is
        // one of the slow two (2 ms: the 2.2 ms bucket).
        assert_eq!(quantile_bound_us(&b, 0.50), "56 us");
        assert_eq!(quantile_bound_us(&b, 0.98), "56 us");
        assert_eq!(quantile_bound_us(&b, 0.99), "2200 us");
        assert_eq!(quantile_bound_us(&[], 0.99), "-");
    }
}
