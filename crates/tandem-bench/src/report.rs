//! Output: machine info, the results table, Tandem-vs-peer ratios, and the
//! `--json` file (written with a tiny hand-rolled JSON value type, so the
//! crate needs no serde).

use std::fmt::Write as _;

use crate::measure::{EngineResult, LatencyStats};
use crate::workload::Workload;

/// What the run was measured on.
#[derive(Debug, Clone)]
pub struct MachineInfo {
    /// Logical CPUs available to this process.
    pub nproc: usize,
    /// First `model name` in /proc/cpuinfo.
    pub cpu_model: String,
    /// `std::env::consts::OS` / kernel release.
    pub os: String,
    /// `std::env::consts::ARCH`.
    pub arch: &'static str,
    /// "release" or "debug" (debug numbers are meaningless).
    pub profile: &'static str,
    /// 1-minute load average when the run started (other work on the
    /// machine makes the figures noisy), if known.
    pub load_start: Option<f64>,
}

/// 1-minute load average from /proc/loadavg.
pub fn loadavg() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Resident-set figures of this process from /proc/self/status, in bytes.
#[derive(Debug, Clone, Copy, Default)]
pub struct Rss {
    /// `VmRSS`: resident now.
    pub now: u64,
    /// `VmHWM`: peak resident ("high water mark") since the process started.
    pub peak: u64,
}

impl Rss {
    /// Reads `VmRSS` and `VmHWM` (zero where unavailable, e.g. off Linux).
    pub fn read() -> Self {
        let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let field = |key: &str| -> u64 {
            s.lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                .map_or(0, |kib| kib * 1024)
        };
        Rss {
            now: field("VmRSS:"),
            peak: field("VmHWM:"),
        }
    }
}

/// Scheduler accounting of the calling thread (/proc/thread-self/schedstat),
/// so a phase's wall time can be split into time on a CPU and time spent
/// runnable but waiting for one (other work on the machine).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ThreadCpu {
    /// Nanoseconds this thread has run on a CPU.
    pub run_ns: u64,
    /// Nanoseconds it has waited on a run queue while runnable.
    pub wait_ns: u64,
}

impl ThreadCpu {
    /// Current totals (zero where unavailable).
    pub fn read() -> Self {
        let s = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap_or_default();
        let mut it = s.split_whitespace().map(|v| v.parse::<u64>().unwrap_or(0));
        Self {
            run_ns: it.next().unwrap_or(0),
            wait_ns: it.next().unwrap_or(0),
        }
    }

    /// What accrued since `earlier`.
    pub fn since(self, earlier: Self) -> Self {
        Self {
            run_ns: self.run_ns.saturating_sub(earlier.run_ns),
            wait_ns: self.wait_ns.saturating_sub(earlier.wait_ns),
        }
    }

    /// Sum of two intervals.
    pub fn plus(self, other: Self) -> Self {
        Self {
            run_ns: self.run_ns + other.run_ns,
            wait_ns: self.wait_ns + other.wait_ns,
        }
    }

    /// "on-CPU x.xxx s, waited for a CPU y.yyy s".
    pub fn label(self) -> String {
        format!(
            "on-CPU {:.3} s, waited for a CPU {:.3} s",
            self.run_ns as f64 / 1e9,
            self.wait_ns as f64 / 1e9
        )
    }

    /// As a JSON object of seconds.
    pub fn json(self) -> Json {
        Json::Obj(vec![
            ("on_cpu_secs", Json::Num(self.run_ns as f64 / 1e9)),
            ("runqueue_wait_secs", Json::Num(self.wait_ns as f64 / 1e9)),
        ])
    }
}

/// User + system CPU seconds of the whole process, all threads, exited ones
/// included (/proc/self/stat fields 14 and 15, assuming the usual 100 ticks
/// per second, so 10 ms resolution). `None` where unavailable.
pub fn process_cpu_secs() -> Option<f64> {
    tandem_metrics::process_cpu_seconds(None)
}

/// Bytes as MiB.
pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// The `machine` and `load` lines (plus warnings for a busy machine or a
/// debug build) shared by every subcommand's header.
pub fn print_machine(m: &MachineInfo) {
    println!(
        "machine : {} CPU(s), {} ({} {}), {} build",
        m.nproc, m.cpu_model, m.os, m.arch, m.profile
    );
    if let Some(l) = m.load_start {
        let end = loadavg().map_or_else(|| "?".to_string(), |e| format!("{e:.2}"));
        println!("load    : 1-min load average {l:.2} at start, {end} at end");
        if l > 0.5 * m.nproc as f64 {
            println!("WARNING : the machine was busy when the run started; figures are noisy");
        }
    }
    if m.profile == "debug" {
        println!("WARNING : debug build — numbers are meaningless, use --release");
    }
}

/// The `machine` object of the JSON reports.
pub fn machine_json(m: &MachineInfo) -> Json {
    Json::Obj(vec![
        ("nproc", Json::Int(m.nproc as u64)),
        ("cpu_model", Json::Str(m.cpu_model.clone())),
        ("os", Json::Str(m.os.clone())),
        ("arch", Json::Str(m.arch.into())),
        ("profile", Json::Str(m.profile.into())),
        (
            "loadavg_1min_start",
            m.load_start.map_or(Json::Str("unknown".into()), Json::Num),
        ),
        (
            "loadavg_1min_end",
            loadavg().map_or(Json::Str("unknown".into()), Json::Num),
        ),
    ])
}

impl MachineInfo {
    /// Reads the host's details (Linux /proc where available).
    pub fn detect() -> Self {
        let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split_once(':'))
                    .map(|(_, v)| v.trim().to_string())
            })
            .unwrap_or_else(|| "unknown".to_string());
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_default();
        let os = if kernel.is_empty() {
            std::env::consts::OS.to_string()
        } else {
            format!("{} {kernel}", std::env::consts::OS)
        };
        Self {
            nproc: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu_model,
            os,
            arch: std::env::consts::ARCH,
            profile: if cfg!(debug_assertions) {
                "debug"
            } else {
                "release"
            },
            load_start: loadavg(),
        }
    }
}

/// `1234567.8` -> `"1,234,568"`.
pub fn thousands(v: f64) -> String {
    let n = v.round().max(0.0) as u64;
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

/// Prints the header block: machine, workload parameters and stream stats.
pub fn print_header(m: &MachineInfo, w: &Workload, reps: usize, timer: &LatencyStats) {
    let c = &w.config;
    let s = &w.stats;
    println!("tandem-bench core — single market, single thread, one shared op stream");
    print_machine(m);
    println!(
        "workload: seed {:#x} ({}), {} timed ops, {} warm-up resting orders (untimed), {} accounts",
        c.seed,
        c.seed,
        thousands(c.ops as f64),
        thousands(c.warmup_orders as f64),
        c.accounts
    );
    let n = (s.limits + s.cancels + s.markets).max(1) as f64;
    println!(
        "mix     : {:.1}% limit ({} traded on arrival, {} fully filled), {:.1}% cancel (all of live orders), {:.1}% market ({} found no liquidity)",
        100.0 * s.limits as f64 / n,
        thousands(s.limits_that_traded as f64),
        thousands(s.limits_fully_filled as f64),
        100.0 * s.cancels as f64 / n,
        100.0 * s.markets as f64 / n,
        thousands(s.markets_unfilled as f64),
    );
    println!(
        "book    : {} maker fills, {} lots traded; resting orders {}..{}, mid {}..{} ticks, <= {} price levels; {} fills pair the same account (peers trade them, Tandem's STP would not)",
        thousands(s.fills as f64),
        thousands(s.traded_lots as f64),
        s.min_live,
        s.max_live,
        s.min_mid,
        s.max_mid,
        s.max_levels,
        thousands(s.self_match_fills as f64),
    );
    println!(
        "STP     : under Tandem's cancel-taker STP the same stream cancels {} takers at their own order and {} cancels miss (target already gone)",
        thousands(s.stp_cancelled_takers as f64),
        thousands(s.stp_cancel_misses as f64),
    );
    println!(
        "method  : ops/s = median of {reps} untimed-per-op pass(es) over the whole stream (generation and command building excluded);"
    );
    println!(
        "          latency = separate pass with Instant::now()/elapsed() around every op; each sample includes the timer overhead"
    );
    println!(
        "          (empty timer pair here: p50 {} ns, p99 {} ns, mean {:.1} ns)",
        timer.p50, timer.p99, timer.mean
    );
}

/// Prints the results table and, when a subject engine is present, its ratio to each peer.
pub fn print_results(results: &[EngineResult]) {
    println!();
    println!(
        "{:<13} {:<20} {:>11} {:>8} {:>8} {:>9} {:>10} {:>9}  state vs model",
        "engine", "version", "ops/s", "p50 ns", "p99 ns", "p99.9 ns", "max ns", "mean ns"
    );
    for r in results {
        println!(
            "{:<13} {:<20} {:>11} {:>8} {:>8} {:>9} {:>10} {:>9.1}  {}",
            r.name,
            r.version,
            thousands(r.ops_per_sec),
            r.latency.p50,
            r.latency.p99,
            r.latency.p999,
            r.latency.max,
            r.latency.mean,
            r.state.label()
        );
    }
    for r in results {
        if let Some(single) = r.single_ops_per_sec {
            println!(
                "{:<13} ops/s above applies the stream as a batch with look-ahead prefetch of its id index \
                 (Engine::look_ahead, as a replica does with a log batch);",
                r.name
            );
            println!(
                "{:<13} one command at a time, no look-ahead: {} ops/s",
                "",
                thousands(single)
            );
            for p in results.iter().filter(|p| !p.is_subject) {
                println!(
                    "{:<13}   one-at-a-time / {:<13} ops/s x{:.2}",
                    "",
                    p.name,
                    if p.ops_per_sec > 0.0 {
                        single / p.ops_per_sec
                    } else {
                        f64::NAN
                    }
                );
            }
        }
    }
    let subjects: Vec<&EngineResult> = results.iter().filter(|r| r.is_subject).collect();
    if subjects.is_empty() {
        println!();
        println!("ratios  : no Tandem row (include `tandem` in --engines to get ratios)");
        return;
    }
    println!();
    println!("ratios (ops/s: higher is better for Tandem; latencies: lower is better for Tandem)");
    for s in &subjects {
        for p in results.iter().filter(|r| !r.is_subject) {
            let q = ratios(s, p);
            println!(
                "  {} / {:<13} ops/s x{:.2}   p50 x{:.2}   p99 x{:.2}   p99.9 x{:.2}   max x{:.2}",
                s.name, p.name, q[0], q[1], q[2], q[3], q[4]
            );
        }
    }
}

/// `[ops/s, p50, p99, p99.9, max]` ratios of subject `s` to peer `p`.
fn ratios(s: &EngineResult, p: &EngineResult) -> [f64; 5] {
    let div = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::NAN };
    [
        div(s.ops_per_sec, p.ops_per_sec),
        div(f64::from(s.latency.p50), f64::from(p.latency.p50)),
        div(f64::from(s.latency.p99), f64::from(p.latency.p99)),
        div(f64::from(s.latency.p999), f64::from(p.latency.p999)),
        div(f64::from(s.latency.max), f64::from(p.latency.max)),
    ]
}

/// Minimal JSON value.
#[derive(Debug, Clone)]
pub enum Json {
    /// `true` / `false`.
    Bool(bool),
    /// Integer.
    Int(u64),
    /// Float (non-finite becomes `null`).
    Num(f64),
    /// String.
    Str(String),
    /// Array.
    Arr(Vec<Json>),
    /// Object with ordered keys.
    Obj(Vec<(&'static str, Json)>),
}

impl Json {
    fn write(&self, out: &mut String, indent: usize) {
        let pad = |out: &mut String, n: usize| out.extend(std::iter::repeat_n(' ', n));
        match self {
            Json::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Json::Int(v) => {
                let _ = write!(out, "{v}");
            }
            Json::Num(v) if v.is_finite() => {
                let _ = write!(out, "{v}");
            }
            Json::Num(_) => out.push_str("null"),
            Json::Str(s) => {
                out.push('"');
                for ch in s.chars() {
                    match ch {
                        '"' => out.push_str("\\\""),
                        '\\' => out.push_str("\\\\"),
                        '\n' => out.push_str("\\n"),
                        '\r' => out.push_str("\\r"),
                        '\t' => out.push_str("\\t"),
                        c if (c as u32) < 0x20 => {
                            let _ = write!(out, "\\u{:04x}", c as u32);
                        }
                        c => out.push(c),
                    }
                }
                out.push('"');
            }
            Json::Arr(items) => {
                if items.is_empty() {
                    out.push_str("[]");
                    return;
                }
                out.push_str("[\n");
                for (i, it) in items.iter().enumerate() {
                    pad(out, indent + 2);
                    it.write(out, indent + 2);
                    out.push_str(if i + 1 < items.len() { ",\n" } else { "\n" });
                }
                pad(out, indent);
                out.push(']');
            }
            Json::Obj(fields) => {
                if fields.is_empty() {
                    out.push_str("{}");
                    return;
                }
                out.push_str("{\n");
                for (i, (k, v)) in fields.iter().enumerate() {
                    pad(out, indent + 2);
                    Json::Str((*k).to_string()).write(out, indent + 2);
                    out.push_str(": ");
                    v.write(out, indent + 2);
                    out.push_str(if i + 1 < fields.len() { ",\n" } else { "\n" });
                }
                pad(out, indent);
                out.push('}');
            }
        }
    }

    /// Pretty-printed text with a trailing newline.
    pub fn to_pretty(&self) -> String {
        let mut s = String::new();
        self.write(&mut s, 0);
        s.push('\n');
        s
    }
}

fn lat_json(l: &LatencyStats) -> Json {
    Json::Obj(vec![
        ("p50", Json::Int(u64::from(l.p50))),
        ("p99", Json::Int(u64::from(l.p99))),
        ("p99_9", Json::Int(u64::from(l.p999))),
        ("max", Json::Int(u64::from(l.max))),
        ("mean", Json::Num(l.mean)),
    ])
}

/// The whole report as JSON.
pub fn to_json(
    m: &MachineInfo,
    w: &Workload,
    reps: usize,
    timer: &LatencyStats,
    results: &[EngineResult],
) -> Json {
    let c = &w.config;
    let s = &w.stats;
    let engines = results
        .iter()
        .map(|r| {
            Json::Obj(vec![
                ("name", Json::Str(r.name.to_string())),
                ("version", Json::Str(r.version.to_string())),
                ("subject", Json::Bool(r.is_subject)),
                ("ops_per_sec", Json::Num(r.ops_per_sec)),
                (
                    "one_at_a_time_ops_per_sec",
                    Json::Num(r.single_ops_per_sec.unwrap_or(f64::NAN)),
                ),
                (
                    "throughput_passes_ops_per_sec",
                    Json::Arr(r.reps_ops_per_sec.iter().map(|&v| Json::Num(v)).collect()),
                ),
                (
                    "latency_pass_ops_per_sec",
                    Json::Num(r.latency_pass_ops_per_sec),
                ),
                ("latency_ns", lat_json(&r.latency)),
                ("max_latency_op_index", Json::Int(r.max_op_index as u64)),
                ("state_vs_model", Json::Str(r.state.label())),
            ])
        })
        .collect();
    let mut ratio_rows = Vec::new();
    for sub in results.iter().filter(|r| r.is_subject) {
        for p in results.iter().filter(|r| !r.is_subject) {
            let q = ratios(sub, p);
            ratio_rows.push(Json::Obj(vec![
                ("subject", Json::Str(sub.name.to_string())),
                ("peer", Json::Str(p.name.to_string())),
                ("ops_per_sec", Json::Num(q[0])),
                ("p50", Json::Num(q[1])),
                ("p99", Json::Num(q[2])),
                ("p99_9", Json::Num(q[3])),
                ("max", Json::Num(q[4])),
            ]));
        }
    }
    Json::Obj(vec![
        ("tool", Json::Str("tandem-bench".into())),
        ("scenario", Json::Str("core".into())),
        ("machine", machine_json(m)),
        (
            "workload",
            Json::Obj(vec![
                ("seed", Json::Int(c.seed)),
                ("seed_hex", Json::Str(format!("{:#x}", c.seed))),
                ("ops", Json::Int(c.ops as u64)),
                ("warmup_orders", Json::Int(c.warmup_orders as u64)),
                ("accounts", Json::Int(u64::from(c.accounts))),
                ("limits", Json::Int(s.limits)),
                ("cancels", Json::Int(s.cancels)),
                ("markets", Json::Int(s.markets)),
                ("limits_that_traded", Json::Int(s.limits_that_traded)),
                ("limits_fully_filled", Json::Int(s.limits_fully_filled)),
                ("markets_unfilled", Json::Int(s.markets_unfilled)),
                ("maker_fills", Json::Int(s.fills)),
                ("traded_lots", Json::Int(s.traded_lots)),
                ("self_match_fills", Json::Int(s.self_match_fills)),
                ("stp_cancelled_takers", Json::Int(s.stp_cancelled_takers)),
                ("stp_cancel_misses", Json::Int(s.stp_cancel_misses)),
                ("min_resting_orders", Json::Int(s.min_live)),
                ("max_resting_orders", Json::Int(s.max_live)),
                ("min_mid_ticks", Json::Int(s.min_mid)),
                ("max_mid_ticks", Json::Int(s.max_mid)),
                ("max_price_levels", Json::Int(s.max_levels)),
            ]),
        ),
        (
            "method",
            Json::Obj(vec![
                ("throughput_passes", Json::Int(reps as u64)),
                (
                    "throughput",
                    Json::Str(
                        "median ops/s of whole-stream passes with no per-op timing".into(),
                    ),
                ),
                (
                    "latency",
                    Json::Str(
                        "separate pass, Instant::now()/elapsed() around each op; includes timer overhead"
                            .into(),
                    ),
                ),
                ("timer_overhead_ns", lat_json(timer)),
            ]),
        ),
        ("engines", Json::Arr(engines)),
        ("ratios", Json::Arr(ratio_rows)),
        (
            "notes",
            Json::Arr(vec![
                Json::Str(
                    "lobster and orderbook-rs do no self-trade prevention; Tandem does, so fills between orders of the same account differ".into(),
                ),
                Json::Str("ratios are subject/peer: >1 is better for ops_per_sec, <1 is better for latencies".into()),
            ]),
        ),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_sep() {
        assert_eq!(thousands(0.0), "0");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(thousands(1000.0), "1,000");
        assert_eq!(thousands(2_012_345.4), "2,012,345");
    }

    #[test]
    fn json_escaping() {
        let j = Json::Obj(vec![
            ("a", Json::Str("x\"y\\z\n\u{1}".into())),
            ("b", Json::Arr(vec![Json::Int(1), Json::Num(f64::NAN)])),
        ]);
        assert_eq!(
            j.to_pretty(),
            "{\n  \"a\": \"x\\\"y\\\\z\\n\\u0001\",\n  \"b\": [\n    1,\n    null\n  ]\n}\n"
        );
    }
}
