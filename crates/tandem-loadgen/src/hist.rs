//! A log-bucketed latency histogram in the manner of HdrHistogram: values
//! below 256 are counted exactly; above, each power of two is split into 128
//! equal sub-buckets, so a reported value is within 1/128 (< 0.8 %) of every
//! value that fell in its bucket. Fixed size (no allocation after `new`),
//! mergeable, and values past the top are clamped (and counted as such).

/// Sub-buckets per power of two, as a power of two (2^7 = 128).
const SUB_BITS: u32 = 7;
const SUB: u64 = 1 << SUB_BITS;
/// Values below this are their own bucket.
const EXACT: u64 = 2 * SUB;
/// Largest power of two tracked: values up to 2^40 ns (about 18 minutes).
const TOP_BIT: u32 = 40;
const BUCKETS: usize = (EXACT + (TOP_BIT - SUB_BITS) as u64 * SUB) as usize;

/// Counts of values (nanoseconds in this crate) in log-spaced buckets.
#[derive(Clone, Debug)]
pub struct Histogram {
    counts: Box<[u64]>,
    total: u64,
    sum: u128,
    min: u64,
    max: u64,
    clamped: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self::new()
    }
}

impl Histogram {
    /// The largest value that is recorded without clamping.
    pub const MAX_VALUE: u64 = (1 << (TOP_BIT + 1)) - 1;

    /// An empty histogram (one allocation of about 36 KiB).
    pub fn new() -> Self {
        Self {
            counts: vec![0; BUCKETS].into_boxed_slice(),
            total: 0,
            sum: 0,
            min: u64::MAX,
            max: 0,
            clamped: 0,
        }
    }

    fn index(v: u64) -> usize {
        if v < EXACT {
            return v as usize;
        }
        let msb = 63 - v.leading_zeros(); // >= SUB_BITS + 1
        let shift = msb - SUB_BITS;
        let mantissa = v >> shift; // in [SUB, 2 * SUB)
        (EXACT + (msb - SUB_BITS - 1) as u64 * SUB + (mantissa - SUB)) as usize
    }

    /// The largest value that falls in bucket `i`.
    fn highest_in(i: usize) -> u64 {
        let i = i as u64;
        if i < EXACT {
            return i;
        }
        let k = i - EXACT;
        let shift = (k / SUB) as u32 + 1;
        let mantissa = SUB + k % SUB;
        ((mantissa + 1) << shift) - 1
    }

    /// Counts one value; values above [`Self::MAX_VALUE`] count as that.
    pub fn record(&mut self, v: u64) {
        let v = if v > Self::MAX_VALUE {
            self.clamped += 1;
            Self::MAX_VALUE
        } else {
            v
        };
        self.counts[Self::index(v)] += 1;
        self.total += 1;
        self.sum += u128::from(v);
        self.min = self.min.min(v);
        self.max = self.max.max(v);
    }

    /// Adds every count of `other` into `self`.
    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(other.counts.iter()) {
            *a += b;
        }
        self.total += other.total;
        self.sum += other.sum;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        self.clamped += other.clamped;
    }

    /// Number of values recorded.
    pub fn count(&self) -> u64 {
        self.total
    }

    /// Values that exceeded [`Self::MAX_VALUE`] and were clamped.
    pub fn clamped(&self) -> u64 {
        self.clamped
    }

    /// Exact largest value recorded (0 when empty).
    pub fn max(&self) -> u64 {
        self.max
    }

    /// Exact smallest value recorded (0 when empty).
    pub fn min(&self) -> u64 {
        if self.total == 0 {
            0
        } else {
            self.min
        }
    }

    /// Exact mean of the recorded values (0 when empty).
    pub fn mean(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            self.sum as f64 / self.total as f64
        }
    }

    /// The value at quantile `q` (0..=1): the highest value of the bucket
    /// holding the `ceil(q * count)`-th smallest value, capped at the exact
    /// maximum. Within 1/128 above the true value. 0 when empty.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.total as f64).ceil() as u64).max(1);
        let mut seen = 0u64;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Self::highest_in(i).min(self.max).max(self.min);
            }
        }
        self.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_contiguous_and_tight() {
        // Every value maps to a bucket whose highest value is >= it and
        // within 1/128 of it; bucket boundaries follow each other.
        let mut v = 0u64;
        while v < Histogram::MAX_VALUE {
            let i = Histogram::index(v);
            let hi = Histogram::highest_in(i);
            assert!(hi >= v, "v={v} hi={hi}");
            assert!((hi - v) as f64 <= v as f64 / 128.0 + 1e-9, "v={v} hi={hi}");
            assert_eq!(Histogram::index(hi), i);
            assert_eq!(Histogram::index(hi + 1), i + 1, "v={v}");
            v = hi + 1 + (hi >> 5); // skip ahead but still visit every scale
        }
        assert_eq!(Histogram::index(Histogram::MAX_VALUE), BUCKETS - 1);
    }

    #[test]
    fn quantiles_within_one_percent() {
        let mut h = Histogram::new();
        // A spread of values over six decades, deterministic.
        let mut vals: Vec<u64> = (1..=20_000u64)
            .map(|k| k * k * 37 % 5_000_000 + 1)
            .collect();
        for &v in &vals {
            h.record(v);
        }
        vals.sort_unstable();
        for q in [0.5, 0.9, 0.95, 0.99, 0.999, 1.0] {
            let rank = ((q * vals.len() as f64).ceil() as usize).max(1);
            let exact = vals[rank - 1];
            let got = h.quantile(q);
            let err = (got as f64 - exact as f64).abs() / exact as f64;
            assert!(err <= 0.01, "q={q} exact={exact} got={got}");
        }
        assert_eq!(h.max(), *vals.last().unwrap());
        assert_eq!(h.quantile(1.0), h.max());
    }

    #[test]
    fn merge_adds_and_clamps() {
        let mut a = Histogram::new();
        let mut b = Histogram::new();
        a.record(10);
        b.record(1_000_000);
        b.record(u64::MAX);
        a.merge(&b);
        assert_eq!(a.count(), 3);
        assert_eq!(a.clamped(), 1);
        assert_eq!(a.min(), 10);
        assert_eq!(a.max(), Histogram::MAX_VALUE);
        assert_eq!(Histogram::new().quantile(0.5), 0);
    }
}
