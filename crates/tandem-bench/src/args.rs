//! Hand-written command-line parsing (no clap): subcommands `core`, `node`, `edge`,
//! `capacity`, `match` and `recovery`, each with `--flag value` /
//! `--flag=value` options (and `recovery`'s value-less `--keep`). Integers accept `_` separators and a `0x` prefix (handy for
//! seeds).

/// Seed every subcommand uses unless `--seed` says otherwise.
pub const DEFAULT_SEED: u64 = 0x7A4D_E4B3_2026_0001;

/// Options of `tandem-bench core`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoreArgs {
    /// Timed operations.
    pub ops: usize,
    /// PRNG seed.
    pub seed: u64,
    /// Where to write the JSON report.
    pub json: Option<String>,
    /// Untimed resting orders placed before timing.
    pub warmup: usize,
    /// Number of accounts orders are spread over.
    pub accounts: u32,
    /// Throughput passes per engine (median reported).
    pub reps: usize,
    /// Engines to run, by name; empty = all compiled in.
    pub engines: Vec<String>,
}

impl Default for CoreArgs {
    fn default() -> Self {
        Self {
            ops: 2_000_000,
            seed: DEFAULT_SEED,
            json: None,
            warmup: 10_000,
            accounts: 1000,
            reps: 3,
            engines: Vec::new(),
        }
    }
}

/// Options of `tandem-bench capacity`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapacityArgs {
    /// Markets to create (each gets at least one order while orders last).
    pub markets: usize,
    /// Resting orders to place.
    pub orders: usize,
    /// PRNG seed.
    pub seed: u64,
    /// Snapshot file to write and restore from.
    pub snapshot: String,
    /// Where to write the JSON report.
    pub json: Option<String>,
}

impl Default for CapacityArgs {
    fn default() -> Self {
        Self {
            markets: 3_000_000,
            orders: 10_000_000,
            seed: DEFAULT_SEED,
            snapshot: "target/capacity.snap".to_string(),
            json: None,
        }
    }
}

/// Options of `tandem-bench match`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatchArgs {
    /// Operations of the `core` stream (after the warm-up orders).
    pub ops: usize,
    /// PRNG seed.
    pub seed: u64,
    /// Resting orders placed first (lines before the 70/20/10 stream).
    pub warmup: usize,
    /// Number of accounts orders are spread over.
    pub accounts: u32,
    /// Timed `run_match` passes into a sink (median reported).
    pub reps: usize,
    /// Only write the JSONL flow to this file and exit.
    pub write_flow: Option<String>,
    /// Where to write the JSON report.
    pub json: Option<String>,
}

impl Default for MatchArgs {
    fn default() -> Self {
        let c = CoreArgs::default();
        Self {
            ops: c.ops,
            seed: c.seed,
            warmup: c.warmup,
            accounts: c.accounts,
            reps: 3,
            write_flow: None,
            json: None,
        }
    }
}

/// Options of `tandem-bench recovery`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveryArgs {
    /// Resting GTC limit orders written to the log first.
    pub orders: usize,
    /// Markets they are spread over.
    pub markets: usize,
    /// Commands appended after the snapshot (the tail).
    pub tail: usize,
    /// PRNG seed.
    pub seed: u64,
    /// Working directory (log in `DIR/log`, snapshots in `DIR/snap`).
    pub dir: String,
    /// Keep `DIR/log` and `DIR/snap` at the end.
    pub keep: bool,
    /// Where to write the JSON report.
    pub json: Option<String>,
}

impl Default for RecoveryArgs {
    fn default() -> Self {
        Self {
            orders: 10_000_000,
            markets: 3_000_000,
            tail: 1_000_000,
            seed: DEFAULT_SEED,
            dir: "target/recovery".to_string(),
            keep: false,
            json: None,
        }
    }
}

/// A parsed command line.
#[derive(Debug, Clone, PartialEq)]
pub enum Cli {
    /// `core ...`
    Core(CoreArgs),
    /// `capacity ...`
    Capacity(CapacityArgs),
    /// `match ...`
    Match(MatchArgs),
    /// `recovery ...`
    Recovery(RecoveryArgs),
    /// `node ...`
    Node(crate::node_bench::NodeArgs),
    /// `edge ...`
    Edge(crate::edge_bench::EdgeArgs),
    /// `signed ...`
    Signed(crate::signed_bench::SignedArgs),
    /// `-h` / `--help` / `help`.
    Help,
}

/// Usage text.
pub fn usage(engines: &[&str]) -> String {
    let d = CoreArgs::default();
    let c = CapacityArgs::default();
    let m = MatchArgs::default();
    let r = RecoveryArgs::default();
    format!(
        "tandem-bench — order-book matching core benchmarks

USAGE:
    tandem-bench core     [OPTIONS]   Tandem vs. peer cores on one seeded op stream
    tandem-bench capacity [OPTIONS]   one Engine with millions of markets / resting orders:
                                      build rate, RSS, snapshot write, restore
    tandem-bench match    [OPTIONS]   tandem_codec::run_match over the core stream as JSONL
    tandem-bench recovery [OPTIONS]   replica recovery time over a FileLog: from empty, and
                                      from a snapshot plus a log tail
    tandem-bench node     [OPTIONS]   order entry through nodes (file log with and without
                                      fsync; --kafka: 3 nodes over tansu) by the open-loop
                                      loadgen, beside the fsync and /healthz floors
    tandem-bench edge     [OPTIONS]   the same loadgen against 3 upstreams directly, through
                                      tandem's edge (34/33/33) and through nginx; split accuracy
    tandem-bench signed   [OPTIONS]   signed orders: sign/verify per core per scheme (and
                                      Ed25519 batches), and node order entry with
                                      verification off beside on (docs/signing.md)

CORE OPTIONS:
    --ops N          timed operations (default {ops})
    --seed S         workload seed, decimal or 0x-hex (default {seed:#x})
    --json FILE      also write the figures as JSON to FILE
    --warmup N       untimed resting orders placed first (default {warmup})
    --accounts N     accounts orders are spread over (default {accounts})
    --reps N         throughput passes per engine, median reported (default {reps})
    --engines LIST   comma-separated subset of: {list} (default: all)

CAPACITY OPTIONS:
    --markets N      markets (default {c_markets})
    --orders N       resting GTC limit orders, spread over the markets (default {c_orders})
    --seed S         workload seed (default {seed:#x})
    --snapshot FILE  snapshot file written and restored (default {c_snap})
    --json FILE      also write the figures as JSON to FILE

MATCH OPTIONS:
    --ops N          operations of the 70/20/10 core stream (default {m_ops})
    --seed S         workload seed (default {seed:#x})
    --warmup N       resting orders placed first, as the first lines (default {m_warmup})
    --accounts N     accounts orders are spread over (default {m_accounts})
    --reps N         timed run_match passes into io::sink(), median reported (default {m_reps})
    --write-flow FILE  only write the JSONL command flow to FILE and exit (for timing
                     `tandem match --input FILE --output /dev/null` from the shell)
    --json FILE      also write the figures as JSON to FILE

RECOVERY OPTIONS:
    --orders N       GTC limit places written to the log first (default {r_orders})
    --markets N      markets they are spread over (default {r_markets})
    --tail N         commands appended after the snapshot: ~70% limit places, ~20% cancels
                     of live orders, ~10% market orders (default {r_tail})
    --seed S         workload seed (default {seed:#x})
    --dir DIR        working directory: log in DIR/log, snapshots in DIR/snap; both are
                     replaced at the start and removed at the end (default {r_dir})
    --keep           keep DIR/log and DIR/snap at the end
    --json FILE      also write the figures as JSON to FILE

NODE OPTIONS:
    --rates LIST     comma-separated orders/s to run (default 1000,10000)
    --duration S     seconds measured per run (default 10), after --warmup S (default 2)
    --connections N  loadgen connections (default 64)
    --no-search      skip the search for the highest sustained rate
    --max-p99-ms MS  a searched rate counts as sustained only under this p99 (default 100)
    --kafka          also run 3 nodes over one tansu broker; --only-kafka: only that
    --dir DIR        data directory, replaced at start (default $TMPDIR/tandem-bench-node)
    --json FILE      also write every run's loadgen report as JSON to FILE
    --stream         only the streaming case: one node, file log with fsync, wrk on /healthz,
                     then tandem-loadgen --grpc-stream in its own process (build it first:
                     cargo build --release -p tandem-loadgen)
    --streams N      gRPC Submit streams of --stream (default 4)
    --in-flight K    requests in flight per stream (default 256)

EDGE OPTIONS:
    --rates LIST     comma-separated req/s to run on every case (default 1000,10000)
    --duration S     seconds measured per run (default 5), after --warmup S (default 1)
    --connections N  loadgen keep-alive connections (default 64)
    --no-search      skip the search for the highest sustained rate
    --max-p99-ms MS  a searched rate counts as sustained only under this p99 (default 20)
    --upstream KIND  mock (3 minimal hyper servers), node (3 tandem nodes, fsync off) or
                     both (default mock)
    --nginx-workers W  nginx worker_processes: a number or auto (default auto)
    --edge-threads N   the edge's public worker threads, one runtime each (default 2)
    --split-accounts N accounts sent through the edge per weight step D0..D5 and a rollback (default
                     100000; 0 skips the split figures)
    --dir DIR        working directory (default $TMPDIR/tandem-bench-edge)

SIGNED OPTIONS:
    --ops N          signed places per scheme timed on the CPU (default 20000)
    --rates LIST     orders/s run on each node case (default 10000)
    --duration S     seconds measured per run (default 10), after --warmup S (default 2)
    --connections N  loadgen connections (default 64)
    --no-search      skip the search for the highest sustained rate
    --max-p99-ms MS  a searched rate counts as sustained only under this p99 (default 100)
    --dir DIR        data directory, replaced at start (default $TMPDIR/tandem-bench-signed)
    --json FILE      also write the figures as JSON to FILE

    -h, --help       this text
",
        ops = d.ops,
        seed = d.seed,
        warmup = d.warmup,
        accounts = d.accounts,
        reps = d.reps,
        list = engines.join(", "),
        c_markets = c.markets,
        c_orders = c.orders,
        c_snap = c.snapshot,
        m_ops = m.ops,
        m_warmup = m.warmup,
        m_accounts = m.accounts,
        m_reps = m.reps,
        r_orders = r.orders,
        r_markets = r.markets,
        r_tail = r.tail,
        r_dir = r.dir,
    )
}

/// Parses an unsigned integer with optional `_` separators and `0x` prefix.
pub fn parse_u64(s: &str) -> Result<u64, String> {
    let t: String = s.chars().filter(|&c| c != '_').collect();
    let r = if let Some(hex) = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        u64::from_str_radix(hex, 16)
    } else {
        t.parse::<u64>()
    };
    r.map_err(|e| format!("invalid number {s:?}: {e}"))
}

/// Value-less options (`recovery --keep`); [`pairs`] gives them an empty value.
const SWITCHES: &[&str] = &[
    "--keep",
    "--no-search",
    "--kafka",
    "--only-kafka",
    "--stream",
];

/// Splits the options after the subcommand into `(flag, value)` pairs
/// (every option but the [`SWITCHES`] takes a value). `Ok(None)` means help
/// was asked for.
fn pairs(it: impl Iterator<Item = String>) -> Result<Option<Vec<(String, String)>>, String> {
    let mut it = it;
    let mut out = Vec::new();
    while let Some(arg) = it.next() {
        if arg == "-h" || arg == "--help" {
            return Ok(None);
        }
        if !arg.starts_with("--") {
            return Err(format!("unexpected argument {arg:?}"));
        }
        if SWITCHES.contains(&arg.as_str()) {
            out.push((arg, String::new()));
            continue;
        }
        match arg.split_once('=') {
            Some((f, v)) => out.push((f.to_string(), v.to_string())),
            None => {
                let v = it.next().ok_or_else(|| format!("{arg} needs a value"))?;
                out.push((arg, v));
            }
        }
    }
    Ok(Some(out))
}

/// Parses `args` (without the program name).
pub fn parse<I: IntoIterator<Item = String>>(args: I) -> Result<Cli, String> {
    let mut it = args.into_iter();
    let sub = match it.next().as_deref() {
        None | Some("-h" | "--help" | "help") => return Ok(Cli::Help),
        Some(s @ ("core" | "capacity" | "match" | "recovery" | "node" | "edge" | "signed")) => {
            s.to_string()
        }
        Some(other) => {
            return Err(format!(
                "unknown subcommand {other:?} (expected `core`, `capacity`, `match`, `recovery`, `node`, `edge` or `signed`)"
            ))
        }
    };
    let Some(opts) = pairs(it)? else {
        return Ok(Cli::Help);
    };
    match sub.as_str() {
        "core" => parse_core(opts).map(Cli::Core),
        "capacity" => parse_capacity(opts).map(Cli::Capacity),
        "recovery" => parse_recovery(opts).map(Cli::Recovery),
        "node" => parse_node(opts).map(Cli::Node),
        "edge" => parse_edge(opts).map(Cli::Edge),
        "signed" => parse_signed(opts).map(Cli::Signed),
        _ => parse_match(opts).map(Cli::Match),
    }
}

fn unknown(flag: &str, sub: &str) -> String {
    format!("unknown option {flag:?} for `{sub}`")
}

fn accounts(v: &str) -> Result<u32, String> {
    let n = parse_u64(v)?;
    u32::try_from(n)
        .ok()
        .filter(|&n| n > 0)
        .ok_or_else(|| format!("--accounts must be 1..=2^32-1, got {n}"))
}

fn reps(v: &str) -> Result<usize, String> {
    let n = to_usize(parse_u64(v)?)?;
    if n == 0 {
        return Err("--reps must be at least 1".into());
    }
    Ok(n)
}

fn parse_core(opts: Vec<(String, String)>) -> Result<CoreArgs, String> {
    let mut a = CoreArgs::default();
    for (flag, v) in opts {
        match flag.as_str() {
            "--ops" => a.ops = to_usize(parse_u64(&v)?)?,
            "--seed" => a.seed = parse_u64(&v)?,
            "--json" => a.json = Some(v),
            "--warmup" => a.warmup = to_usize(parse_u64(&v)?)?,
            "--accounts" => a.accounts = accounts(&v)?,
            "--reps" => a.reps = reps(&v)?,
            "--engines" => {
                a.engines = v
                    .split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect();
            }
            _ => return Err(unknown(&flag, "core")),
        }
    }
    Ok(a)
}

fn parse_capacity(opts: Vec<(String, String)>) -> Result<CapacityArgs, String> {
    let mut a = CapacityArgs::default();
    for (flag, v) in opts {
        match flag.as_str() {
            "--markets" => a.markets = to_usize(parse_u64(&v)?)?,
            "--orders" => a.orders = to_usize(parse_u64(&v)?)?,
            "--seed" => a.seed = parse_u64(&v)?,
            "--snapshot" => a.snapshot = v,
            "--json" => a.json = Some(v),
            _ => return Err(unknown(&flag, "capacity")),
        }
    }
    if a.markets == 0 {
        return Err("--markets must be at least 1".into());
    }
    // Ids and slab indices are u32 inside the engine.
    if a.orders as u64 >= u64::from(u32::MAX) || a.markets as u64 >= u64::from(u32::MAX) {
        return Err("--orders and --markets must be below 2^32-1".into());
    }
    if a.snapshot.is_empty() {
        return Err("--snapshot needs a file name".into());
    }
    Ok(a)
}

fn parse_match(opts: Vec<(String, String)>) -> Result<MatchArgs, String> {
    let mut a = MatchArgs::default();
    for (flag, v) in opts {
        match flag.as_str() {
            "--ops" => a.ops = to_usize(parse_u64(&v)?)?,
            "--seed" => a.seed = parse_u64(&v)?,
            "--warmup" => a.warmup = to_usize(parse_u64(&v)?)?,
            "--accounts" => a.accounts = accounts(&v)?,
            "--reps" => a.reps = reps(&v)?,
            "--write-flow" => a.write_flow = Some(v),
            "--json" => a.json = Some(v),
            _ => return Err(unknown(&flag, "match")),
        }
    }
    Ok(a)
}

fn parse_recovery(opts: Vec<(String, String)>) -> Result<RecoveryArgs, String> {
    let mut a = RecoveryArgs::default();
    for (flag, v) in opts {
        match flag.as_str() {
            "--orders" => a.orders = to_usize(parse_u64(&v)?)?,
            "--markets" => a.markets = to_usize(parse_u64(&v)?)?,
            "--tail" => a.tail = to_usize(parse_u64(&v)?)?,
            "--seed" => a.seed = parse_u64(&v)?,
            "--dir" => a.dir = v,
            "--keep" => a.keep = true,
            "--json" => a.json = Some(v),
            _ => return Err(unknown(&flag, "recovery")),
        }
    }
    if a.markets == 0 || a.orders == 0 {
        return Err("--markets and --orders must be at least 1".into());
    }
    // Ids and slab indices are u32 inside the engine; every order and tail
    // command takes an id.
    if (a.orders as u64).saturating_add(a.tail as u64) >= u64::from(u32::MAX)
        || a.markets as u64 >= u64::from(u32::MAX)
    {
        return Err("--orders + --tail and --markets must be below 2^32-1".into());
    }
    if a.dir.is_empty() {
        return Err("--dir needs a directory name".into());
    }
    Ok(a)
}

fn parse_node(opts: Vec<(String, String)>) -> Result<crate::node_bench::NodeArgs, String> {
    let mut a = crate::node_bench::NodeArgs::default();
    for (flag, v) in opts {
        match flag.as_str() {
            "--rates" => {
                a.rates = v.split(',').map(float).collect::<Result<_, _>>()?;
            }
            "--duration" => a.duration_s = float(&v)?,
            "--warmup" => a.warmup_s = v.parse().map_err(|_| format!("--warmup {v:?}"))?,
            "--connections" => a.connections = to_usize(parse_u64(&v)?)?,
            "--no-search" => a.search = false,
            "--max-p99-ms" => a.max_p99_ms = float(&v)?,
            "--kafka" => a.kafka = true,
            "--only-kafka" => a.only_kafka = true,
            "--dir" => a.dir = v.into(),
            "--json" => a.json = Some(v),
            "--stream" => a.stream = true,
            "--streams" => a.streams = to_usize(parse_u64(&v)?)?.max(1),
            "--in-flight" => a.in_flight = to_usize(parse_u64(&v)?)?.max(1),
            _ => return Err(unknown(&flag, "node")),
        }
    }
    Ok(a)
}

fn parse_signed(opts: Vec<(String, String)>) -> Result<crate::signed_bench::SignedArgs, String> {
    let mut a = crate::signed_bench::SignedArgs::default();
    for (flag, v) in opts {
        match flag.as_str() {
            "--ops" => a.ops = to_usize(parse_u64(&v)?)?.max(1),
            "--rates" => a.rates = v.split(',').map(float).collect::<Result<_, _>>()?,
            "--duration" => a.duration_s = float(&v)?,
            "--warmup" => a.warmup_s = v.parse().map_err(|_| format!("--warmup {v:?}"))?,
            "--connections" => a.connections = to_usize(parse_u64(&v)?)?.max(1),
            "--no-search" => a.search = false,
            "--max-p99-ms" => a.max_p99_ms = float(&v)?,
            "--dir" => a.dir = v.into(),
            "--json" => a.json = Some(v),
            _ => return Err(unknown(&flag, "signed")),
        }
    }
    Ok(a)
}

fn parse_edge(opts: Vec<(String, String)>) -> Result<crate::edge_bench::EdgeArgs, String> {
    let mut a = crate::edge_bench::EdgeArgs::default();
    for (flag, v) in opts {
        match flag.as_str() {
            "--rates" => a.rates = v.split(',').map(float).collect::<Result<_, _>>()?,
            "--duration" => a.duration_s = float(&v)?,
            "--warmup" => a.warmup_s = v.parse().map_err(|_| format!("--warmup {v:?}"))?,
            "--connections" => a.connections = to_usize(parse_u64(&v)?)?.max(1),
            "--no-search" => a.search = false,
            "--max-p99-ms" => a.max_p99_ms = float(&v)?,
            "--upstream" if matches!(v.as_str(), "mock" | "node" | "both") => a.upstream = v,
            "--upstream" => return Err(format!("--upstream {v:?}: expected mock, node or both")),
            "--nginx-workers"
                if v == "auto" || v.parse::<u32>().is_ok_and(|n| (1..=64).contains(&n)) =>
            {
                a.nginx_workers = v
            }
            "--nginx-workers" => return Err(format!("--nginx-workers {v:?}: 1..=64 or auto")),
            "--edge-threads" => a.edge_threads = to_usize(parse_u64(&v)?)?.clamp(1, 64),
            "--split-accounts" => a.split_accounts = to_usize(parse_u64(&v)?)?,
            "--dir" => a.dir = v.into(),
            _ => return Err(unknown(&flag, "edge")),
        }
    }
    Ok(a)
}

/// A finite number above zero (rates, durations, latency bounds).
fn float(v: &str) -> Result<f64, String> {
    v.parse::<f64>()
        .ok()
        .filter(|x| x.is_finite() && *x > 0.0)
        .ok_or_else(|| format!("{v:?} is not a positive number"))
}

fn to_usize(n: u64) -> Result<usize, String> {
    usize::try_from(n).map_err(|_| format!("{n} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(v: &[&str]) -> Result<Cli, String> {
        parse(v.iter().map(|s| s.to_string()))
    }

    #[test]
    fn defaults_and_flags() {
        assert_eq!(p(&[]), Ok(Cli::Help));
        assert_eq!(p(&["core"]), Ok(Cli::Core(CoreArgs::default())));
        assert_eq!(p(&["core", "--help"]), Ok(Cli::Help));
        let Ok(Cli::Core(a)) = p(&[
            "core",
            "--ops",
            "1_000_000",
            "--seed=0x2A",
            "--json",
            "out.json",
            "--engines",
            "lobster, orderbook-rs",
            "--reps",
            "1",
        ]) else {
            panic!("parse failed");
        };
        assert_eq!(a.ops, 1_000_000);
        assert_eq!(a.seed, 42);
        assert_eq!(a.json.as_deref(), Some("out.json"));
        assert_eq!(a.engines, vec!["lobster", "orderbook-rs"]);
        assert_eq!(a.reps, 1);
    }

    #[test]
    fn capacity_flags() {
        assert_eq!(p(&["capacity"]), Ok(Cli::Capacity(CapacityArgs::default())));
        let Ok(Cli::Capacity(a)) = p(&[
            "capacity",
            "--markets=1_000",
            "--orders",
            "5000",
            "--seed",
            "7",
            "--snapshot",
            "/tmp/x.snap",
            "--json",
            "c.json",
        ]) else {
            panic!("parse failed");
        };
        assert_eq!(
            a,
            CapacityArgs {
                markets: 1000,
                orders: 5000,
                seed: 7,
                snapshot: "/tmp/x.snap".into(),
                json: Some("c.json".into()),
            }
        );
    }

    #[test]
    fn match_flags() {
        assert_eq!(p(&["match"]), Ok(Cli::Match(MatchArgs::default())));
        let Ok(Cli::Match(a)) = p(&[
            "match",
            "--ops",
            "100",
            "--seed",
            "0x10",
            "--write-flow",
            "flow.jsonl",
            "--reps=2",
        ]) else {
            panic!("parse failed");
        };
        assert_eq!(a.ops, 100);
        assert_eq!(a.seed, 16);
        assert_eq!(a.reps, 2);
        assert_eq!(a.write_flow.as_deref(), Some("flow.jsonl"));
    }

    #[test]
    fn recovery_flags() {
        assert_eq!(p(&["recovery"]), Ok(Cli::Recovery(RecoveryArgs::default())));
        assert_eq!(p(&["recovery", "-h"]), Ok(Cli::Help));
        let Ok(Cli::Recovery(a)) = p(&[
            "recovery",
            "--orders",
            "200_000",
            "--markets=50000",
            "--keep",
            "--tail",
            "20000",
            "--dir",
            "/tmp/rec",
            "--seed",
            "0x3",
            "--json",
            "r.json",
        ]) else {
            panic!("parse failed");
        };
        assert_eq!(
            a,
            RecoveryArgs {
                orders: 200_000,
                markets: 50_000,
                tail: 20_000,
                seed: 3,
                dir: "/tmp/rec".into(),
                keep: true,
                json: Some("r.json".into()),
            }
        );
        assert!(p(&["recovery", "--markets", "0"]).is_err());
        assert!(p(&["recovery", "--orders", "0"]).is_err());
        assert!(p(&["recovery", "--tail"]).is_err());
        assert!(p(&["recovery", "--dir", ""]).is_err());
        assert!(p(&[
            "recovery",
            "--orders",
            "4_000_000_000",
            "--tail",
            "300_000_000"
        ])
        .is_err());
        assert!(p(&["recovery", "--ops", "1"]).is_err());
        assert!(p(&["core", "--keep"]).is_err());
    }

    #[test]
    fn signed_flags() {
        let Ok(Cli::Signed(a)) = p(&[
            "signed",
            "--ops",
            "100",
            "--rates",
            "5000,10000",
            "--no-search",
        ]) else {
            panic!("parse failed");
        };
        assert_eq!(
            (a.ops, a.rates.clone(), a.search),
            (100, vec![5000.0, 10000.0], false)
        );
        assert!(p(&["signed", "--rates", "0"]).is_err());
        assert!(p(&["signed", "--kafka"]).is_err());
    }

    #[test]
    fn edge_flags() {
        let Ok(Cli::Edge(a)) = p(&[
            "edge",
            "--rates",
            "1000,20000",
            "--upstream",
            "both",
            "--nginx-workers",
            "1",
            "--no-search",
        ]) else {
            panic!("parse failed");
        };
        assert_eq!(a.rates, vec![1000.0, 20000.0]);
        assert_eq!(a.upstream, "both");
        assert_eq!(a.nginx_workers, "1");
        assert!(!a.search);
        assert!(p(&["edge", "--upstream", "x"]).is_err());
        assert!(p(&["edge", "--nginx-workers", "0"]).is_err());
    }

    #[test]
    fn errors() {
        assert!(p(&["bench"]).is_err());
        assert!(p(&["core", "--ops"]).is_err());
        assert!(p(&["core", "--ops", "x"]).is_err());
        assert!(p(&["core", "--nope", "1"]).is_err());
        assert!(p(&["core", "--reps", "0"]).is_err());
        assert!(p(&["core", "--accounts", "0"]).is_err());
        assert!(p(&["core", "stray"]).is_err());
        assert!(p(&["core", "--markets", "1"]).is_err());
        assert!(p(&["capacity", "--markets", "0"]).is_err());
        assert!(p(&["capacity", "--engines", "tandem"]).is_err());
        assert!(p(&["match", "--markets", "1"]).is_err());
        assert!(p(&["match", "--reps", "0"]).is_err());
    }
}
