//! The weighted rendezvous score, in integers only.
//!
//! For a key (an account, or a request key) and a cluster, `u` is xxh3-64
//! of the key seeded by the cluster name's own xxh3-64, read as a fraction
//! of 2^64. The score is `-log2(u) / weight`; the lowest score wins. Since
//! `-log2(u)` of a uniform `u` is exponential, the winner is cluster *i*
//! with probability `w_i / Σw` (the minimum of independent exponential
//! variables), and raising one weight can only pull keys *to* that cluster.
//!
//! `-log2(u)` is computed in fixed point by the bit-by-bit squaring method
//! and the division by the weight is never done: two scores are compared as
//! `l_a · w_b < l_b · w_a` in `u128`. Nothing here is a float, so the x86_64
//! edge and the wasm32 Worker compute the same bits.

use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

/// Fractional bits of [`neg_log2_unit`]'s fixed-point answer.
pub const FRAC_BITS: u32 = 52;

/// Mixed into a cluster's seed when the key is a request key rather than
/// an account, so that an account whose bytes equal a key's little-endian
/// bytes does not share its fate.
const REQUEST_KEY_DOMAIN: u64 = 0x7265_715f_6b65_795f; // "req_key_"

/// `-log2(x / 2^64)` for `x` in `1..=u64::MAX` (0 is read as 1), in fixed
/// point with [`FRAC_BITS`] fractional bits: a value in `[0, 64 << 52]`.
///
/// The integer part of `log2 x` is the position of the top bit; the
/// fractional bits come from squaring the mantissa (in `[1, 2)`, Q1.63)
/// once per bit: a square of 2 or more means the next bit is 1. Each
/// squaring truncates, so the last few bits are not exact, but they are the
/// same everywhere, which is what matters here.
pub fn neg_log2_unit(x: u64) -> u64 {
    let mut o = [0];
    side_by_side::<1>(&[x], &mut o);
    o[0]
}

/// [`neg_log2_unit`] of each of `xs`, into `out` (the same length),
/// computed [`LANES`] at a time: the squarings of one value form a chain
/// where each step waits for the last multiply, so values side by side
/// keep the multiplier busy. The same bits as one at a time.
pub fn neg_log2_units(mut xs: &[u64], mut out: &mut [u64]) {
    debug_assert_eq!(xs.len(), out.len());
    while !xs.is_empty() {
        let n = xs.len().min(LANES);
        let (x, rest) = xs.split_at(n);
        let (o, rest_out) = core::mem::take(&mut out).split_at_mut(n);
        match n {
            1 => side_by_side::<1>(x, o),
            2 => side_by_side::<2>(x, o),
            3 => side_by_side::<3>(x, o),
            _ => side_by_side::<LANES>(x, o),
        }
        (xs, out) = (rest, rest_out);
    }
}

/// [`neg_log2_unit`] of `N` values at once (`x` and `o` hold `N`).
#[inline(always)]
fn side_by_side<const N: usize>(x: &[u64], o: &mut [u64]) {
    let (Ok(x), Ok(o)) = (<&[u64; N]>::try_from(x), <&mut [u64; N]>::try_from(o)) else {
        unreachable!("the caller passes N of each");
    };
    let mut m = [0u64; N];
    let mut int_part = [0u64; N];
    for l in 0..N {
        let x = x[l].max(1);
        let lz = x.leading_zeros();
        int_part[l] = u64::from(63 - lz);
        m[l] = x << lz; // in [2^63, 2^64): 1.0 is 2^63
    }
    let mut frac = [0u64; N];
    for _ in 0..FRAC_BITS {
        for l in 0..N {
            let sq = (u128::from(m[l]) * u128::from(m[l])) >> 63; // in [2^63, 2^65)
            let carry = (sq >> 64) as u32; // 1 if the square is 2 or more
            frac[l] = (frac[l] << 1) | u64::from(carry);
            m[l] = (sq >> carry) as u64;
        }
    }
    for l in 0..N {
        o[l] = (64u64 << FRAC_BITS) - ((int_part[l] << FRAC_BITS) | frac[l]);
    }
}

/// Values [`neg_log2_units`] computes side by side.
pub const LANES: usize = 4;

/// The 64-bit hash of `key` for the cluster named `name`: the `u` of the
/// score, scaled by 2^64.
pub fn unit_hash(name: &str, account: Option<&[u8]>, request_key: u64) -> u64 {
    let seed = xxh3_64(name.as_bytes());
    match account {
        Some(a) => xxh3_64_with_seed(a, seed),
        None => xxh3_64_with_seed(&request_key.to_le_bytes(), seed ^ REQUEST_KEY_DOMAIN),
    }
}

/// One cluster's score for one key: `log / weight`, kept as the pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Score {
    log: u64,
    weight: u32,
}

impl Score {
    /// A score from its `-log2(u)` ([`neg_log2_unit`] of [`unit_hash`],
    /// or [`neg_log2_units`] of several) and the cluster's weight (> 0).
    pub fn from_log(log: u64, weight: u32) -> Score {
        Score { log, weight }
    }

    /// True if `self` (of the cluster named `name`) wins over `other` (of
    /// `other_name`): a lower `log / weight`, or on an exact tie (odds
    /// about 2^-52) the lower name, so the answer never depends on the
    /// order of the cluster list.
    pub fn beats(&self, other: &Score, name: &str, other_name: &str) -> bool {
        let a = u128::from(self.log) * u128::from(other.weight);
        let b = u128::from(other.log) * u128::from(self.weight);
        a < b || (a == b && name < other_name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn neg_log2_matches_floats_closely() {
        let one = (1u64 << FRAC_BITS) as f64;
        for x in [
            1u64,
            2,
            3,
            1000,
            1 << 32,
            (1 << 63) + 12345,
            u64::MAX / 3,
            u64::MAX - 1,
        ] {
            let want = -((x as f64) / 2f64.powi(64)).log2();
            let got = neg_log2_unit(x) as f64 / one;
            assert!((want - got).abs() < 1e-9, "x={x}: {got} vs {want}");
        }
        assert_eq!(neg_log2_unit(1 << 63), 1 << FRAC_BITS);
        assert_eq!(neg_log2_unit(0), 64 << FRAC_BITS);
    }

    /// Lanes computed together do not disturb each other.
    #[test]
    fn side_by_side_equals_one_at_a_time() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for len in 0..=11 {
            let mut xs = [0u64; 11];
            for (i, v) in xs.iter_mut().enumerate().take(len) {
                x = x
                    .wrapping_mul(0x5851_f42d_4c95_7f2d)
                    .wrapping_add(1_442_695_040_888_963_407);
                // Small values and the edges too.
                *v = match i % 5 {
                    0 => x >> (x % 64),
                    1 => [0, 1, u64::MAX][i % 3],
                    _ => x,
                };
            }
            let mut out = [0u64; 11];
            neg_log2_units(&xs[..len], &mut out[..len]);
            for i in 0..len {
                assert_eq!(out[i], neg_log2_unit(xs[i]), "{:?}", &xs[..len]);
            }
        }
    }

    #[test]
    fn neg_log2_is_monotone() {
        let mut prev = u64::MAX;
        let mut x = 1u64;
        while x < u64::MAX / 2 {
            let l = neg_log2_unit(x);
            assert!(l <= prev, "x={x}");
            prev = l;
            x = x + x / 7 + 1;
        }
    }

    #[test]
    fn ties_break_by_name() {
        let s = Score { log: 10, weight: 2 };
        let t = Score { log: 5, weight: 1 };
        assert!(s.beats(&t, "a", "b"));
        assert!(!t.beats(&s, "b", "a"));
    }
}
