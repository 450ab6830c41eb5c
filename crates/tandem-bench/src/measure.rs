//! Runs one engine over a workload and measures it.
//!
//! For each engine the workload's ops are first converted to native commands
//! (untimed). Then, each on a fresh book that has been given the untimed
//! warm-up orders:
//! 1. *throughput passes* (`reps` of them): the whole stream is applied in a
//!    tight loop with one `Instant` read before and after; ops/s is the
//!    median over the passes;
//! 2. one *latency pass*: each op is bracketed by `Instant::now()` /
//!    `elapsed()` and its nanoseconds stored into a pre-faulted `Vec<u32>`,
//!    which is sorted afterwards for p50 / p99 / p99.9 / max. The two timer
//!    reads add roughly 20-30 ns to every sample on this kind of machine
//!    (measured on each run and printed as "empty timer pair"), which is why
//!    throughput comes from the separate passes above. The pass also counts
//!    the thread's page faults, involuntary context switches and the
//!    machine's interrupts, and the kinds of its slowest 0.1 % of ops;
//! 3. a *floor pass*: as many timed samples of a spin that touches no memory,
//!    calibrated to the latency pass's median. Its tail is what interrupts,
//!    the hypervisor and other work on the machine add to any job of that
//!    length in the same run, so an engine's p99.9 is read beside it.
//!
//! After the first throughput pass the engine's final book (if it can report
//! one) is compared with the generator's reference model.

use std::time::Instant;

use crate::engine::BenchEngine;
use crate::report::ThreadCpu;
use crate::workload::{Op, Workload};

/// Latency percentiles in nanoseconds (nearest-rank).
#[derive(Debug, Clone, Copy, Default)]
pub struct LatencyStats {
    /// Median.
    pub p50: u32,
    /// 99th percentile.
    pub p99: u32,
    /// 99.9th percentile.
    pub p999: u32,
    /// Largest sample.
    pub max: u32,
    /// Arithmetic mean.
    pub mean: f64,
}

impl LatencyStats {
    /// Sorts `samples` in place and summarises them.
    pub fn from_samples(samples: &mut [u32]) -> Self {
        if samples.is_empty() {
            return Self::default();
        }
        samples.sort_unstable();
        let n = samples.len();
        let rank = |q: f64| -> u32 {
            let idx = ((q * n as f64).ceil() as usize).clamp(1, n) - 1;
            samples[idx]
        };
        let sum: u64 = samples.iter().map(|&s| u64::from(s)).sum();
        Self {
            p50: rank(0.50),
            p99: rank(0.99),
            p999: rank(0.999),
            max: samples[n - 1],
            mean: sum as f64 / n as f64,
        }
    }
}

/// Outcome of comparing an engine's final book with the reference model.
#[derive(Debug, Clone)]
pub enum StateCheck {
    /// Every reported field matches the model.
    Ok,
    /// Some reported fields differ (descriptions).
    Mismatch(Vec<String>),
    /// The engine cannot report its book.
    NotAvailable,
}

impl StateCheck {
    /// Short label for tables / JSON.
    pub fn label(&self) -> String {
        match self {
            StateCheck::Ok => "ok".to_string(),
            StateCheck::Mismatch(v) => format!("MISMATCH ({})", v.join("; ")),
            StateCheck::NotAvailable => "n/a".to_string(),
        }
    }
}

/// Everything measured for one engine.
#[derive(Debug, Clone)]
pub struct EngineResult {
    /// Engine name.
    pub name: &'static str,
    /// Crate + version.
    pub version: &'static str,
    /// Whether this is the subject (Tandem) the peers are compared against.
    pub is_subject: bool,
    /// Median ops/s over the throughput passes.
    pub ops_per_sec: f64,
    /// ops/s of every throughput pass, in run order.
    pub reps_ops_per_sec: Vec<f64>,
    /// ops/s of the latency pass (includes timer overhead), for reference.
    pub latency_pass_ops_per_sec: f64,
    /// For an engine with a batch path: median ops/s of the same number of
    /// passes applying one command at a time (no look-ahead).
    pub single_ops_per_sec: Option<f64>,
    /// Per-op latency.
    pub latency: LatencyStats,
    /// Index in the timed stream of the slowest op of the latency pass.
    pub max_op_index: usize,
    /// Final-state check against the reference model.
    pub state: StateCheck,
}

/// Measures the cost of the two timer reads that bracket each latency sample.
pub fn timer_overhead(samples: usize) -> LatencyStats {
    let mut v = vec![0u32; samples];
    for s in v.iter_mut() {
        let t0 = Instant::now();
        let dt = t0.elapsed();
        *s = u32::try_from(dt.as_nanos()).unwrap_or(u32::MAX);
    }
    LatencyStats::from_samples(&mut v)
}

fn warmed<E: BenchEngine>(warm: &[E::Cmd], expected: usize) -> E {
    let mut e = E::new_engine(warm.len() + expected);
    for c in warm {
        e.apply(c);
    }
    e
}

/// Runs `E` over `w`: `reps` throughput passes plus one latency pass.
pub fn run_engine<E: BenchEngine>(w: &Workload, reps: usize) -> EngineResult {
    let warm: Vec<E::Cmd> = w.warmup.iter().map(E::prepare).collect();
    let cmds: Vec<E::Cmd> = w.ops.iter().map(E::prepare).collect();
    let n = cmds.len();
    eprintln!("  {:<13} set up as {}", E::NAME, E::SETUP);

    let mut reps_ops_per_sec = Vec::with_capacity(reps);
    let mut on_cpu = Vec::with_capacity(reps);
    let mut single_on_cpu = Vec::with_capacity(reps);
    let mut state = StateCheck::NotAvailable;
    for rep in 0..reps.max(1) {
        let mut e = warmed::<E>(&warm, n);
        let cpu0 = ThreadCpu::read();
        let t0 = Instant::now();
        e.apply_all(&cmds);
        let secs = t0.elapsed().as_secs_f64();
        let cpu = ThreadCpu::read().since(cpu0);
        reps_ops_per_sec.push(n as f64 / secs);
        on_cpu.push(per_cpu_second(n, cpu));
        eprintln!(
            "  {:<13} throughput pass {}/{}: {:>9.3} s  {:>12.0} ops/s; {}: {:.0} ops per CPU-second",
            E::NAME,
            rep + 1,
            reps.max(1),
            secs,
            n as f64 / secs,
            cpu.label(),
            per_cpu_second(n, cpu),
        );
        if rep == 0 {
            state = match e.summary() {
                None => StateCheck::NotAvailable,
                Some(s) => {
                    let reference = if E::STP {
                        &w.final_summary_stp
                    } else {
                        &w.final_summary
                    };
                    let m = s.mismatches(reference);
                    if m.is_empty() {
                        StateCheck::Ok
                    } else {
                        StateCheck::Mismatch(m)
                    }
                }
            };
        }
        drop(e); // outside the timed region
    }
    let mut sorted = reps_ops_per_sec.clone();
    sorted.sort_by(f64::total_cmp);
    let ops_per_sec = sorted[sorted.len() / 2];
    let single_ops_per_sec = E::BATCHED.then(|| {
        let mut v = Vec::new();
        for rep in 0..reps.max(1) {
            let mut e = warmed::<E>(&warm, n);
            let cpu0 = ThreadCpu::read();
            let t0 = Instant::now();
            for c in &cmds {
                e.apply(c);
            }
            let secs = t0.elapsed().as_secs_f64();
            let cpu = ThreadCpu::read().since(cpu0);
            single_on_cpu.push(per_cpu_second(n, cpu));
            eprintln!(
                "  {:<13} one-at-a-time pass {}/{}: {:>9.3} s  {:>12.0} ops/s; {}: {:.0} ops per CPU-second",
                E::NAME,
                rep + 1,
                reps.max(1),
                secs,
                n as f64 / secs,
                cpu.label(),
                per_cpu_second(n, cpu),
            );
            v.push(n as f64 / secs);
            drop(e);
        }
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    });

    eprintln!(
        "  {:<13} on-CPU median: {:.0} ops per CPU-second{}",
        E::NAME,
        median(&mut on_cpu),
        if single_on_cpu.is_empty() {
            String::new()
        } else {
            format!("; one at a time {:.0}", median(&mut single_on_cpu))
        },
    );

    // Written now (a non-zero fill): `vec![0; n]` would come from
    // calloc's untouched zero pages, and the first store to each 4 KiB of
    // them (one op in 1024) would fault in the middle of the pass.
    let mut lat = vec![u32::MAX; n];
    let mut e = warmed::<E>(&warm, n);
    let before = ThreadCounters::read();
    let t_all = Instant::now();
    for (c, slot) in cmds.iter().zip(lat.iter_mut()) {
        let t0 = Instant::now();
        e.apply(c);
        let dt = t0.elapsed();
        *slot = u32::try_from(dt.as_nanos()).unwrap_or(u32::MAX);
    }
    let latency_pass_ops_per_sec = n as f64 / t_all.elapsed().as_secs_f64();
    let during = ThreadCounters::read().since(before);
    drop(e);
    let slowest = SlowestKinds::of(&lat, &w.ops);
    let max_op_index = lat
        .iter()
        .enumerate()
        .max_by_key(|&(_, &v)| v)
        .map_or(0, |(i, _)| i);
    let latency = LatencyStats::from_samples(&mut lat);
    let floor = floor_pass(n, latency.p50);
    eprintln!(
        "  {:<13} latency pass: p50 {} ns, p99 {} ns, p99.9 {} ns, max {} ns (op #{} {:?})",
        E::NAME,
        latency.p50,
        latency.p99,
        latency.p999,
        latency.max,
        max_op_index,
        w.ops.get(max_op_index),
    );
    eprintln!(
        "  {:<13} latency pass: {} page faults, {} involuntary context switches, {} interrupts on all CPUs; slowest 0.1 %: {} limit, {} market, {} cancel",
        E::NAME,
        during.faults,
        during.preempted,
        during.interrupts,
        slowest.limit,
        slowest.market,
        slowest.cancel,
    );
    eprintln!(
        "  {:<13} floor (a register-only spin of the same median, same count, same timer): p50 {} ns, p99 {} ns, p99.9 {} ns, max {} ns",
        E::NAME,
        floor.p50,
        floor.p99,
        floor.p999,
        floor.max,
    );

    EngineResult {
        name: E::NAME,
        version: E::VERSION,
        is_subject: E::IS_SUBJECT,
        ops_per_sec,
        reps_ops_per_sec,
        single_ops_per_sec,
        latency_pass_ops_per_sec,
        latency,
        max_op_index,
        state,
    }
}

/// Ops per second of time on a CPU (0 where schedstat is unavailable):
/// leaves out the time the thread waited for a core on a busy machine.
fn per_cpu_second(n: usize, cpu: ThreadCpu) -> f64 {
    if cpu.run_ns == 0 {
        return 0.0;
    }
    n as f64 / (cpu.run_ns as f64 / 1e9)
}

/// Median of `v` (0 when empty).
fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// What the kernel counted for this thread over an interval.
#[derive(Debug, Clone, Copy, Default)]
struct ThreadCounters {
    /// Minor plus major page faults (/proc/thread-self/stat).
    faults: u64,
    /// Involuntary context switches (/proc/thread-self/status).
    preempted: u64,
    /// Interrupts of every kind on every CPU (/proc/interrupts): the
    /// thread may move between CPUs, so all are counted.
    interrupts: u64,
}

impl ThreadCounters {
    /// Current totals (zero where unavailable).
    fn read() -> Self {
        let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap_or_default();
        // After "pid (comm)": state is field 3, minflt field 10, majflt 12.
        let fields: Vec<u64> = stat
            .rsplit_once(')')
            .map_or("", |(_, rest)| rest)
            .split_whitespace()
            .map(|v| v.parse().unwrap_or(0))
            .collect();
        let field = |n: usize| fields.get(n - 3).copied().unwrap_or(0);
        let status = std::fs::read_to_string("/proc/thread-self/status").unwrap_or_default();
        let preempted = status
            .lines()
            .find_map(|l| l.strip_prefix("nonvoluntary_ctxt_switches:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        let irq = std::fs::read_to_string("/proc/interrupts").unwrap_or_default();
        // Each row: "NAME: count count ... description"; the header has no
        // colon-terminated first word with counts after it.
        let interrupts = irq
            .lines()
            .filter_map(|l| l.split_once(':'))
            .flat_map(|(_, rest)| rest.split_whitespace().map_while(|v| v.parse::<u64>().ok()))
            .sum();
        Self {
            faults: field(10) + field(12),
            preempted,
            interrupts,
        }
    }

    /// What accrued since `earlier`.
    fn since(self, earlier: Self) -> Self {
        Self {
            faults: self.faults.saturating_sub(earlier.faults),
            preempted: self.preempted.saturating_sub(earlier.preempted),
            interrupts: self.interrupts.saturating_sub(earlier.interrupts),
        }
    }
}

/// The kinds of the slowest 0.1 % of the ops of a latency pass.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct SlowestKinds {
    limit: usize,
    market: usize,
    cancel: usize,
}

impl SlowestKinds {
    /// `samples[i]` is the time of `ops[i]`; ties at the cut are broken by
    /// position, so the count is exactly `n / 1000`.
    fn of(samples: &[u32], ops: &[Op]) -> Self {
        let mut order: Vec<usize> = (0..samples.len()).collect();
        order.sort_by_key(|&i| (std::cmp::Reverse(samples[i]), i));
        let mut k = Self::default();
        for &i in &order[..samples.len() / 1000] {
            match ops[i] {
                Op::Limit { .. } => k.limit += 1,
                Op::Market { .. } => k.market += 1,
                Op::Cancel { .. } => k.cancel += 1,
            }
        }
        k
    }
}

/// Work that touches no memory: `iters` dependent multiply-adds.
#[inline(never)]
fn spin(iters: u32) -> u64 {
    let mut x = 1u64;
    for _ in 0..iters {
        x = std::hint::black_box(x)
            .wrapping_mul(0x5851_f42d_4c95_7f2d)
            .wrapping_add(1);
    }
    x
}

/// Median nanoseconds of a timed `spin(iters)`, timed as the latency pass
/// times an op.
fn spin_median(iters: u32) -> u32 {
    let mut v: Vec<u32> = (0..10_001)
        .map(|_| {
            let t0 = Instant::now();
            std::hint::black_box(spin(iters));
            u32::try_from(t0.elapsed().as_nanos()).unwrap_or(u32::MAX)
        })
        .collect();
    LatencyStats::from_samples(&mut v).p50
}

/// `n` timed samples of a spin whose timed median is about `p50` ns: the
/// tail a job that touches no memory gets from this machine in the same
/// run, to set an engine's tail beside.
pub fn floor_pass(n: usize, p50: u32) -> LatencyStats {
    let mut iters = 64u32;
    for _ in 0..3 {
        let m = spin_median(iters).max(1);
        iters = ((u64::from(iters) * u64::from(p50) / u64::from(m)) as u32).max(1);
    }
    let mut v = vec![u32::MAX; n];
    for s in v.iter_mut() {
        let t0 = Instant::now();
        std::hint::black_box(spin(iters));
        *s = u32::try_from(t0.elapsed().as_nanos()).unwrap_or(u32::MAX);
    }
    LatencyStats::from_samples(&mut v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slowest_kinds_counts_the_slowest_thousandth() {
        let n = 3000;
        let ops: Vec<Op> = (0..n)
            .map(|i| match i % 3 {
                0 => Op::Cancel { id: i, account: 0 },
                1 => Op::Market {
                    id: i,
                    account: 0,
                    side: crate::workload::Side::Buy,
                    qty: 1,
                },
                _ => Op::Limit {
                    id: i,
                    account: 0,
                    side: crate::workload::Side::Buy,
                    price: 1,
                    qty: 1,
                },
            })
            .collect();
        let mut samples = vec![100u32; n as usize];
        samples[4] = 900; // market
        samples[8] = 800; // limit
        samples[9] = 700; // cancel: fourth slowest, outside the 3 counted
        samples[1] = 950; // market
        let k = SlowestKinds::of(&samples, &ops);
        assert_eq!(
            k,
            SlowestKinds {
                limit: 1,
                market: 2,
                cancel: 0
            }
        );
    }

    #[test]
    fn thread_counters_see_first_touches() {
        let before = ThreadCounters::read();
        let mut v: Vec<u8> = Vec::with_capacity(16 << 20);
        for i in 0..(16 << 20) {
            v.push((i % 251) as u8);
        }
        std::hint::black_box(&v);
        let d = ThreadCounters::read().since(before);
        // 4096 pages of 4 KiB (or a handful of huge pages where THP is on
        // for every mapping): either way faults were counted.
        assert!(d.faults >= 8, "faults {}", d.faults);
        assert!(d.interrupts < u64::MAX);
    }

    #[test]
    fn floor_pass_matches_the_asked_median() {
        let f = floor_pass(20_000, 400);
        assert!((200..=800).contains(&f.p50), "p50 {}", f.p50);
        assert!(f.p50 <= f.p99 && f.p99 <= f.p999 && f.p999 <= f.max);
    }

    #[test]
    fn percentiles_nearest_rank() {
        let mut v: Vec<u32> = (1..=1000).rev().collect();
        let s = LatencyStats::from_samples(&mut v);
        assert_eq!(s.p50, 500);
        assert_eq!(s.p99, 990);
        assert_eq!(s.p999, 999);
        assert_eq!(s.max, 1000);
        assert!((s.mean - 500.5).abs() < 1e-9);
    }
}
