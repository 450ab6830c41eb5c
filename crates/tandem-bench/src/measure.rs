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
//!    throughput comes from the separate passes above.
//!
//! After the first throughput pass the engine's final book (if it can report
//! one) is compared with the generator's reference model.

use std::time::Instant;

use crate::engine::BenchEngine;
use crate::workload::Workload;

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

    let mut reps_ops_per_sec = Vec::with_capacity(reps);
    let mut state = StateCheck::NotAvailable;
    for rep in 0..reps.max(1) {
        let mut e = warmed::<E>(&warm, n);
        let t0 = Instant::now();
        e.apply_all(&cmds);
        let secs = t0.elapsed().as_secs_f64();
        reps_ops_per_sec.push(n as f64 / secs);
        eprintln!(
            "  {:<13} throughput pass {}/{}: {:>9.3} s  {:>12.0} ops/s",
            E::NAME,
            rep + 1,
            reps.max(1),
            secs,
            n as f64 / secs
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
            let t0 = Instant::now();
            for c in &cmds {
                e.apply(c);
            }
            let secs = t0.elapsed().as_secs_f64();
            eprintln!(
                "  {:<13} one-at-a-time pass {}/{}: {:>9.3} s  {:>12.0} ops/s",
                E::NAME,
                rep + 1,
                reps.max(1),
                secs,
                n as f64 / secs
            );
            v.push(n as f64 / secs);
            drop(e);
        }
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    });

    let mut lat = vec![0u32; n]; // pre-faulted: no page faults while timing
    let mut e = warmed::<E>(&warm, n);
    let t_all = Instant::now();
    for (c, slot) in cmds.iter().zip(lat.iter_mut()) {
        let t0 = Instant::now();
        e.apply(c);
        let dt = t0.elapsed();
        *slot = u32::try_from(dt.as_nanos()).unwrap_or(u32::MAX);
    }
    let latency_pass_ops_per_sec = n as f64 / t_all.elapsed().as_secs_f64();
    drop(e);
    let max_op_index = lat
        .iter()
        .enumerate()
        .max_by_key(|&(_, &v)| v)
        .map_or(0, |(i, _)| i);
    let latency = LatencyStats::from_samples(&mut lat);
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

#[cfg(test)]
mod tests {
    use super::*;

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
