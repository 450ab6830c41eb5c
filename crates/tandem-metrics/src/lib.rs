//! Prometheus text exposition pieces shared by the node and the edge: a
//! fixed-bucket latency histogram that is lock-free to observe, and label
//! value escaping. A few counters and histograms need no metrics library.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Upper bounds of the latency buckets, in seconds: the E12 series (1,
/// 1.2, 1.5, 1.8, 2.2, 2.7, 3.3, 3.9, 4.7, 5.6, 6.8, 8.2 per decade) from
/// 10 µs to 10 s, so neighbouring bounds are 18–25 % apart and the `le`
/// labels stay short decimals. That is fine enough for the rollout judge
/// to see a 30 % shift of a p99 (`tandem-rollout`'s `judge`): with bounds
/// ×2–2.5 apart, linear interpolation inside one bucket could hide it.
pub const BUCKETS_S: [f64; 73] = [
    0.000_01, 0.000_012, 0.000_015, 0.000_018, 0.000_022, 0.000_027, 0.000_033, 0.000_039,
    0.000_047, 0.000_056, 0.000_068, 0.000_082, 0.000_1, 0.000_12, 0.000_15, 0.000_18, 0.000_22,
    0.000_27, 0.000_33, 0.000_39, 0.000_47, 0.000_56, 0.000_68, 0.000_82, 0.001, 0.001_2, 0.001_5,
    0.001_8, 0.002_2, 0.002_7, 0.003_3, 0.003_9, 0.004_7, 0.005_6, 0.006_8, 0.008_2, 0.01, 0.012,
    0.015, 0.018, 0.022, 0.027, 0.033, 0.039, 0.047, 0.056, 0.068, 0.082, 0.1, 0.12, 0.15, 0.18,
    0.22, 0.27, 0.33, 0.39, 0.47, 0.56, 0.68, 0.82, 1.0, 1.2, 1.5, 1.8, 2.2, 2.7, 3.3, 3.9, 4.7,
    5.6, 6.8, 8.2, 10.0,
];

/// A latency histogram with the fixed buckets [`BUCKETS_S`]: one relaxed
/// atomic add per observation, after a binary search of the bounds.
#[derive(Debug)]
pub struct Histogram {
    counts: [AtomicU64; BUCKETS_S.len()],
    /// Observations above the last bound.
    over: AtomicU64,
    sum_ns: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Histogram {
        Histogram {
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
            over: AtomicU64::new(0),
            sum_ns: AtomicU64::new(0),
        }
    }
}

/// The bucket of `s` seconds: the first whose bound is at least `s`, or
/// `BUCKETS_S.len()` above the last bound.
fn bucket(s: f64) -> usize {
    BUCKETS_S.partition_point(|&b| b < s)
}

impl Histogram {
    /// Counts one observation.
    pub fn observe(&self, d: Duration) {
        match self.counts.get(bucket(d.as_secs_f64())) {
            Some(c) => c.fetch_add(1, Relaxed),
            None => self.over.fetch_add(1, Relaxed),
        };
        self.sum_ns
            .fetch_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX), Relaxed);
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Relaxed)).sum::<u64>() + self.over.load(Relaxed)
    }

    /// Appends the `_bucket`, `_sum` and `_count` series of `name` with
    /// `labels` (already formatted: `a="x",b="y"`).
    pub fn write(&self, out: &mut String, name: &str, labels: &str) {
        let mut cum = 0;
        let sep = if labels.is_empty() { "" } else { "," };
        for (i, b) in BUCKETS_S.iter().enumerate() {
            cum += self.counts[i].load(Relaxed);
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{b}\"}} {cum}");
        }
        cum += self.over.load(Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {cum}");
        let _ = writeln!(
            out,
            "{name}_sum{{{labels}}} {}",
            self.sum_ns.load(Relaxed) as f64 / 1e9
        );
        let _ = writeln!(out, "{name}_count{{{labels}}} {cum}");
    }
}

/// Escapes a label value (backslash, quote, newline).
pub fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// `k="v",...` from pairs, values escaped.
pub fn labels(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
        .collect::<Vec<_>>()
        .join(",")
}

/// User + system CPU seconds a process has used, all its threads
/// (`/proc/PID/stat`, or `/proc/self/stat` for `None`); `None` where
/// unreadable (another OS, or the process is gone).
pub fn process_cpu_seconds(pid: Option<u32>) -> Option<f64> {
    let path = match pid {
        Some(p) => format!("/proc/{p}/stat"),
        None => "/proc/self/stat".to_owned(),
    };
    cpu_seconds_in_stat(&std::fs::read_to_string(path).ok()?)
}

/// The CPU seconds in one `/proc/PID/stat` line: fields 14 and 15 (utime,
/// stime) in clock ticks of 1/100 s, as every mainstream Linux build
/// reports them. The command name (field 2) is in parentheses and may hold
/// spaces or parentheses itself, so fields are counted after its last `)`.
pub fn cpu_seconds_in_stat(stat: &str) -> Option<f64> {
    let after = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = after.split_whitespace().collect();
    // `after` starts at field 3, so fields 14 and 15 are at 11 and 12.
    let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_labels_escaped() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(30));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(60));
        let mut out = String::new();
        h.write(&mut out, "x", &labels(&[("a", "q\"\\")]));
        assert!(
            out.contains("x_bucket{a=\"q\\\"\\\\\",le=\"0.000033\"} 1"),
            "{out}"
        );
        assert!(
            out.contains("x_bucket{a=\"q\\\"\\\\\",le=\"0.0033\"} 2"),
            "{out}"
        );
        assert!(
            out.contains("x_bucket{a=\"q\\\"\\\\\",le=\"0.0027\"} 1"),
            "{out}"
        );
        assert!(out.contains("le=\"+Inf\"} 3"), "{out}");
        assert_eq!(h.count(), 3);
    }

    #[test]
    fn the_layout_is_fine_increasing_and_printed_short() {
        assert_eq!(BUCKETS_S[0], 0.000_01);
        assert_eq!(BUCKETS_S[BUCKETS_S.len() - 1], 10.0);
        for w in BUCKETS_S.windows(2) {
            let r = w[1] / w[0];
            assert!((1.15..=1.26).contains(&r), "{} / {} = {r}", w[1], w[0]);
        }
        for b in BUCKETS_S {
            let label = b.to_string();
            assert!(label.len() <= 8, "{label}");
            assert_eq!(label.parse::<f64>(), Ok(b));
        }
    }

    #[test]
    fn a_bound_belongs_to_its_own_bucket() {
        let h = Histogram::default();
        h.observe(Duration::from_millis(1));
        h.observe(Duration::from_micros(1001));
        h.observe(Duration::from_secs(10));
        h.observe(Duration::from_nanos(10_000_000_001));
        h.observe(Duration::ZERO);
        let mut out = String::new();
        h.write(&mut out, "x", "");
        assert!(out.contains("x_bucket{le=\"0.00001\"} 1\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"0.00082\"} 1\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"0.001\"} 2\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"0.0012\"} 3\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"8.2\"} 3\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"10\"} 4\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"+Inf\"} 5\n"), "{out}");
        assert_eq!(out.matches("x_bucket").count(), BUCKETS_S.len() + 1);
    }

    #[test]
    fn cpu_seconds_are_counted_after_the_last_parenthesis() {
        // pid (comm) state ppid pgrp session tty tpgid flags minflt
        // cminflt majflt cmajflt utime stime ...
        let line = "42 (a) b)) S 1 42 42 0 -1 4194560 100 0 0 0 250 130 0 0 20 0";
        assert_eq!(super::cpu_seconds_in_stat(line), Some(3.8));
        assert_eq!(super::cpu_seconds_in_stat("42 (x) S 1"), None);
        #[cfg(target_os = "linux")]
        assert!(super::process_cpu_seconds(None).is_some());
    }
}
