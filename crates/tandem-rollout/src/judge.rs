//! The statistical judge: turns what the observers saw of one cluster over
//! one window (request and error counts, a latency histogram) into gate
//! verdicts with their values, and compares a canary with stable over the
//! same window by a documented test on the two histograms. Pure functions:
//! no I/O, no clock, no randomness.
//!
//! **Histograms.** A [`Hist`] is Prometheus-shaped: upper bounds in
//! seconds (the layout of `tandem_metrics::BUCKETS_S`, or whatever `le`
//! labels a scrape carried) and a count per bucket, the last bucket being
//! everything above the last bound (`le="+Inf"`). A window's histogram is
//! the difference of two cumulative scrapes ([`Hist::since`]); a counter
//! that went down (a restarted process) is an error, never a negative or
//! wrapped count. [`Hist::quantile`] interpolates linearly inside the
//! bucket that holds the rank, as Prometheus' `histogram_quantile` does.
//!
//! **Gates** ([`judge`]): absolute p99, p99 over the baseline's p99, error
//! ratio, each reported with its value and limit. A cluster with fewer
//! than `min_requests` requests in the window is *not judged*: every gate
//! says so, which is neither a pass nor a breach. A p99 above its limit
//! is a breach only when the requests above the limit are more than a
//! cluster at the limit would give by chance (one-sided binomial test at
//! `gate_alpha`, [`exceedance_p_value`]): on a few dozen requests the p99
//! is the slowest one, and one slow request is not an SLO breach.
//!
//! **Canary against stable** ([`compare`]), over the same window, so that
//! load, time of day and the log's own latency affect both alike. Two
//! one-sided tests on the binned latencies, each at level `alpha / 2`
//! (Bonferroni, so that together they flag equal distributions in at most
//! `alpha` of windows):
//! - the Mann–Whitney U test (Kayenta's): is a canary request slower than
//!   a stable one more often than not? Values in one bucket are ties; U
//!   counts them as half, and the variance carries the tie correction
//!   `n1·n2/12 · ((N+1) − Σ(t³−t)/(N(N−1)))`, with a continuity correction
//!   of ½ and the normal approximation;
//! - a tail test, since a p99 gate cares about the tail and U hardly sees
//!   a slowdown of the slowest few percent: take the bucket holding the
//!   pooled p99 and count the requests above it (at most 1 % of them).
//!   The threshold depends on the pooled data only, so given the pooled
//!   data, under "no difference" the canary's count there is
//!   hypergeometric; its exact upper tail is the p-value.
//!
//! **Batches.** Requests that shared one log append shared its fate (a
//! slow produce delays the whole batch), so they are not independent
//! observations; counted one by one, a healthy canary whose batch met a
//! stall looks "significantly" slower. When the nodes' append counters
//! are known ([`Appends`], from their `/metrics`), [`compare_batched`]
//! counts each cluster as `requests / (commands per append)` independent
//! observations. tests/judge.rs measures it on batches that share a
//! stall: the request-level test is significant at 0.001 in 17 and 67 of
//! 1000 equal windows (10 s at 1 k req/s; 1 s windows of 60 and 130
//! requests), the batched one in none, and a canary 30 % slower is
//! still flagged within 10 s in 98 of 100 runs.
//!
//! A significant result is not enough: the canary is flagged only when
//! its p99 is also at least `p99_ratio_min` times stable's (10 % by
//! default). Large windows make tiny differences significant; the effect
//! floor keeps those from rolling anything back.
//!
//! Why this is fair to a small canary (5 % of traffic): both tests are
//! conditional on the pooled data and account for the two sample sizes,
//! so a canary with 50 requests is not judged by its own noisy p99 against
//! a fixed number; it is flagged only when its requests sit above stable's
//! more often than chance allows for that many requests. With few
//! requests the tests simply lack evidence (no flag); as the window grows
//! the same slowdown becomes significant. `min_requests` keeps the judge
//! from speaking at all on a handful of requests.
//!
//! Measured (tests/judge.rs, 1 k req/s, canary 5 %, lognormal latencies
//! with median 2 ms): a canary 30 % slower everywhere is flagged as soon
//! as it has `min_requests` (200, so 4 s) in every one of 100 runs; equal
//! distributions are flagged in about 0.35 of 1000 windows of 10 s.
//!
//! Using it: `alpha` is a rate per *independent* window. Windows that
//! overlap (a sliding window moved by one interval) repeat one chance
//! extreme in each of them, so `breach_for` would not filter it; judge
//! the canary on windows that do not overlap (each at least long enough
//! for `min_requests`), so that a breach lasting two windows is a chance
//! of about `alpha²`.

use serde::Serialize;
use thiserror::Error;

use crate::decide::Breach;
use crate::plan::Gates;

/// The most buckets a histogram may have (`tandem_metrics` has 73).
pub const MAX_BUCKETS: usize = 1024;

/// Above this many requests in the tail, the tail test uses the normal
/// approximation of the hypergeometric instead of summing it exactly.
const TAIL_EXACT_MAX: u64 = 1_000_000;

/// Bad input to the judge, naming what was wrong.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum JudgeError {
    #[error("histogram: no buckets (at least le=\"+Inf\" is needed)")]
    NoBuckets,
    #[error("histogram: {count} buckets, more than the limit of {max}")]
    TooManyBuckets { count: usize, max: usize },
    #[error("histogram: bucket bound le={bound} is not a finite number >= 0")]
    BadBound { bound: f64 },
    #[error("histogram: bucket bound le={bound} is given twice")]
    DuplicateBound { bound: f64 },
    #[error("histogram: bucket bounds must increase (le={bound} after le={previous})")]
    BoundsNotIncreasing { bound: f64, previous: f64 },
    #[error("histogram: no le=\"+Inf\" bucket")]
    NoInfBucket,
    #[error("histogram: {counts} counts for {bounds} bounds (expected one more count than bounds, for +Inf)")]
    CountsLength { bounds: usize, counts: usize },
    #[error(
        "histogram: cumulative count of le={le} is {count}, below {previous} of the bucket before"
    )]
    NotCumulative { le: f64, count: u64, previous: u64 },
    #[error("histogram: the two histograms have different bucket bounds")]
    BoundsDiffer,
    #[error("histogram: a count overflows")]
    Overflow,
    #[error("counter reset: {field} went from {earlier} to {later}")]
    CounterReset {
        field: String,
        earlier: u64,
        later: u64,
    },
    #[error("window: errors ({errors}) exceed requests ({requests})")]
    ErrorsExceedRequests { errors: u64, requests: u64 },
}

/// A latency histogram: upper bounds in seconds and a count per bucket,
/// the last count being the observations above the last bound.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Hist {
    bounds_s: Vec<f64>,
    /// `bounds_s.len() + 1` counts, not cumulative.
    counts: Vec<u64>,
}

fn check_bounds(bounds_s: &[f64]) -> Result<(), JudgeError> {
    if bounds_s.len() + 1 > MAX_BUCKETS {
        return Err(JudgeError::TooManyBuckets {
            count: bounds_s.len() + 1,
            max: MAX_BUCKETS,
        });
    }
    for (i, &b) in bounds_s.iter().enumerate() {
        if !b.is_finite() || b < 0.0 {
            return Err(JudgeError::BadBound { bound: b });
        }
        if i > 0 {
            let previous = bounds_s[i - 1];
            if b == previous {
                return Err(JudgeError::DuplicateBound { bound: b });
            }
            if b < previous {
                return Err(JudgeError::BoundsNotIncreasing { bound: b, previous });
            }
        }
    }
    Ok(())
}

impl Hist {
    /// No observations, with these upper bounds (seconds, increasing; the
    /// `+Inf` bucket is implied).
    pub fn empty(bounds_s: &[f64]) -> Result<Hist, JudgeError> {
        check_bounds(bounds_s)?;
        Ok(Hist {
            bounds_s: bounds_s.to_vec(),
            counts: vec![0; bounds_s.len() + 1],
        })
    }

    /// From a count per bucket: `counts[i]` observations in
    /// `(bounds_s[i-1], bounds_s[i]]`, and the last of the
    /// `bounds_s.len() + 1` counts above the last bound.
    pub fn from_counts(bounds_s: &[f64], counts: &[u64]) -> Result<Hist, JudgeError> {
        check_bounds(bounds_s)?;
        if counts.len() != bounds_s.len() + 1 {
            return Err(JudgeError::CountsLength {
                bounds: bounds_s.len(),
                counts: counts.len(),
            });
        }
        let h = Hist {
            bounds_s: bounds_s.to_vec(),
            counts: counts.to_vec(),
        };
        h.counts
            .iter()
            .try_fold(0u64, |a, &c| a.checked_add(c))
            .ok_or(JudgeError::Overflow)?;
        Ok(h)
    }

    /// From a scrape's `_bucket` series: `(le, cumulative count)` pairs, in
    /// any order, one of them `le = +Inf`. Counts must not decrease as
    /// `le` grows.
    pub fn from_cumulative(buckets: &[(f64, u64)]) -> Result<Hist, JudgeError> {
        if buckets.is_empty() {
            return Err(JudgeError::NoBuckets);
        }
        if buckets.len() > MAX_BUCKETS {
            return Err(JudgeError::TooManyBuckets {
                count: buckets.len(),
                max: MAX_BUCKETS,
            });
        }
        let mut sorted = buckets.to_vec();
        if let Some(&(bound, _)) = sorted.iter().find(|(le, _)| le.is_nan()) {
            return Err(JudgeError::BadBound { bound });
        }
        sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
        let Some(&(last, _)) = sorted.last() else {
            return Err(JudgeError::NoBuckets);
        };
        if last != f64::INFINITY {
            return Err(JudgeError::NoInfBucket);
        }
        let bounds_s: Vec<f64> = sorted[..sorted.len() - 1].iter().map(|b| b.0).collect();
        if sorted.len() >= 2 && sorted[sorted.len() - 2].0 == f64::INFINITY {
            return Err(JudgeError::DuplicateBound {
                bound: f64::INFINITY,
            });
        }
        check_bounds(&bounds_s)?;
        let mut counts = Vec::with_capacity(sorted.len());
        let mut previous = 0;
        for &(le, cum) in &sorted {
            if cum < previous {
                return Err(JudgeError::NotCumulative {
                    le,
                    count: cum,
                    previous,
                });
            }
            counts.push(cum - previous);
            previous = cum;
        }
        Ok(Hist { bounds_s, counts })
    }

    /// Counts one observation of `value_s` seconds (bounds are inclusive,
    /// as Prometheus' `le`; NaN counts above every bound).
    pub fn record(&mut self, value_s: f64) {
        let i = if value_s.is_nan() {
            self.bounds_s.len()
        } else {
            self.bounds_s.partition_point(|&b| b < value_s)
        };
        self.counts[i] = self.counts[i].saturating_add(1);
    }

    /// Upper bounds, in seconds (without `+Inf`).
    pub fn bounds_s(&self) -> &[f64] {
        &self.bounds_s
    }

    /// Count per bucket, the last one above the last bound.
    pub fn counts(&self) -> &[u64] {
        &self.counts
    }

    /// Observations in all buckets.
    pub fn total(&self) -> u64 {
        self.counts.iter().fold(0u64, |a, &c| a.saturating_add(c))
    }

    /// The `q`-quantile in seconds (`q` clamped to 0..=1), `None` when the
    /// histogram is empty or `q` is NaN.
    ///
    /// The rank `q · total` falls in the first bucket (with observations)
    /// whose cumulative count reaches it; the value is interpolated
    /// linearly between that bucket's lower bound (the previous bound, or
    /// 0 for the first) and its upper bound, as if its observations were
    /// spread evenly. A rank in the `+Inf` bucket gives the last finite
    /// bound: a lower bound of the truth, as in `histogram_quantile`.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if q.is_nan() {
            return None;
        }
        let total = self.total();
        if total == 0 {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * total as f64;
        let mut below = 0u64;
        for (i, &c) in self.counts.iter().enumerate() {
            let cum = below + c;
            if c > 0 && cum as f64 >= rank {
                let Some(&hi) = self.bounds_s.get(i) else {
                    return self.bounds_s.last().copied().or(Some(0.0));
                };
                let lo = if i == 0 { 0.0 } else { self.bounds_s[i - 1] };
                let within = ((rank - below as f64) / c as f64).clamp(0.0, 1.0);
                return Some(lo + (hi - lo) * within);
            }
            below = cum;
        }
        None
    }

    /// The window between two cumulative scrapes: `self` (the later) minus
    /// `earlier`, bucket by bucket. Every bucket's count only grows in a
    /// running process, so a bucket that went down means the process
    /// restarted between the scrapes: an error, not a negative count.
    pub fn since(&self, earlier: &Hist) -> Result<Hist, JudgeError> {
        if self.bounds_s != earlier.bounds_s {
            return Err(JudgeError::BoundsDiffer);
        }
        let mut counts = Vec::with_capacity(self.counts.len());
        for (i, (&later, &before)) in self.counts.iter().zip(&earlier.counts).enumerate() {
            let Some(d) = later.checked_sub(before) else {
                let le = match self.bounds_s.get(i) {
                    Some(b) => b.to_string(),
                    None => "+Inf".to_owned(),
                };
                return Err(JudgeError::CounterReset {
                    field: format!("latency bucket le={le}"),
                    earlier: before,
                    later,
                });
            };
            counts.push(d);
        }
        Ok(Hist {
            bounds_s: self.bounds_s.clone(),
            counts,
        })
    }

    /// Adds `other`'s observations (another edge's, another interval's).
    pub fn merge(&mut self, other: &Hist) -> Result<(), JudgeError> {
        if self.bounds_s != other.bounds_s {
            return Err(JudgeError::BoundsDiffer);
        }
        let mut counts = self.counts.clone();
        for (c, &o) in counts.iter_mut().zip(&other.counts) {
            *c = c.checked_add(o).ok_or(JudgeError::Overflow)?;
        }
        counts
            .iter()
            .try_fold(0u64, |a, &c| a.checked_add(c))
            .ok_or(JudgeError::Overflow)?;
        self.counts = counts;
        Ok(())
    }
}

/// What the controller observed of one cluster over one window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WindowStats {
    /// Requests answered through the cluster.
    pub requests: u64,
    /// Of which 5xx answers and resets.
    pub errors: u64,
    pub latency: Hist,
    /// What the cluster's nodes appended to the log over the window,
    /// when they said (`None`: unknown, judged as one request per
    /// append). See [`Appends`].
    pub appends: Option<Appends>,
}

/// Commands and appends (log batches) of a cluster's nodes over a window.
///
/// Requests that share one append share its fate: a slow produce, or a
/// stall of the node while it waits for its own record to come back from
/// the log, delays every command of that batch alike. Their latencies are
/// then not independent observations, and a rank test that counts each
/// request as one would find a healthy canary "significantly" slower
/// whenever one of its batches met a stall (seen on real processes: a
/// window where 28 of a canary's 59 requests sat in two buckets around
/// 110 ms gave p = 2e-6). [`compare_batched`] counts such a cluster as
/// `commands / appends` times fewer independent observations (Kish's
/// design effect for clusters of that mean size, with every request of a
/// batch taken as fully correlated).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Appends {
    pub commands: u64,
    pub batches: u64,
}

impl Appends {
    /// Mean commands per append, at least 1 (1 when nothing was appended).
    pub fn per_batch(&self) -> f64 {
        if self.batches == 0 {
            1.0
        } else {
            (self.commands as f64 / self.batches as f64).max(1.0)
        }
    }
}

fn per_batch(a: Option<Appends>) -> f64 {
    a.map_or(1.0, |a| a.per_batch())
}

impl WindowStats {
    /// The window between two cumulative observations: `self` (the later)
    /// minus `earlier`; any counter that went down is an error.
    pub fn since(&self, earlier: &WindowStats) -> Result<WindowStats, JudgeError> {
        let sub = |field: &str, later: u64, before: u64| {
            later
                .checked_sub(before)
                .ok_or_else(|| JudgeError::CounterReset {
                    field: field.to_owned(),
                    earlier: before,
                    later,
                })
        };
        Ok(WindowStats {
            requests: sub("requests", self.requests, earlier.requests)?,
            errors: sub("errors", self.errors, earlier.errors)?,
            latency: self.latency.since(&earlier.latency)?,
            appends: None,
        })
    }

    /// Adds `other` (another edge's view of the same cluster, or the next
    /// interval).
    pub fn merge(&mut self, other: &WindowStats) -> Result<(), JudgeError> {
        let requests = self
            .requests
            .checked_add(other.requests)
            .ok_or(JudgeError::Overflow)?;
        let errors = self
            .errors
            .checked_add(other.errors)
            .ok_or(JudgeError::Overflow)?;
        self.latency.merge(&other.latency)?;
        self.requests = requests;
        self.errors = errors;
        self.appends = match (self.appends, other.appends) {
            (Some(a), Some(b)) => Some(Appends {
                commands: a.commands.saturating_add(b.commands),
                batches: a.batches.saturating_add(b.batches),
            }),
            (a, b) => a.or(b),
        };
        Ok(())
    }

    /// Errors over requests; `None` without requests.
    pub fn error_ratio(&self) -> Option<f64> {
        (self.requests > 0).then(|| self.errors as f64 / self.requests as f64)
    }
}

/// A gate the judge evaluates, named as in the plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Gate {
    /// p99 in milliseconds against `latency_p99_ms_max`.
    LatencyP99MsMax,
    /// p99 over the baseline's p99 against `latency_p99_vs_baseline_max`.
    LatencyP99VsBaselineMax,
    /// Errors over requests against `error_ratio_max`.
    ErrorRatioMax,
    /// Canary's p99 over stable's in the same window, against the effect
    /// floor; breached only when [`compare`] also finds it significant.
    CanaryVsStable,
}

impl Gate {
    pub fn name(self) -> &'static str {
        match self {
            Gate::LatencyP99MsMax => "latency_p99_ms_max",
            Gate::LatencyP99VsBaselineMax => "latency_p99_vs_baseline_max",
            Gate::ErrorRatioMax => "error_ratio_max",
            Gate::CanaryVsStable => "canary_vs_stable",
        }
    }
}

/// What a gate says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Holds,
    Breached,
    /// Not enough data to say (fewer than `min_requests`, no baseline, an
    /// empty histogram): neither a pass nor a breach.
    NotJudged,
}

/// One gate's value, limit and verdict.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GateResult {
    pub gate: Gate,
    /// `None` when it cannot be computed (no requests, no baseline).
    pub value: Option<f64>,
    pub limit: f64,
    pub verdict: Verdict,
    /// The p99 gates: [`exceedance_p_value`] of the requests above the
    /// limit, when the window's p99 is above it. Below `gate_alpha` the
    /// gate is breached; at or above, the window does not say (not
    /// judged), since one slow request in a few dozen is the p99.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p_value: Option<f64>,
}

/// The canary test's settings (not in the plan: the contract fixes the
/// gates, the judge fixes how a canary is compared).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct CanaryTest {
    /// Chance of flagging a canary no slower than stable, per window: the
    /// two tests run at `alpha / 2` each.
    pub alpha: f64,
    /// The effect floor: canary's p99 over stable's must reach this too.
    pub p99_ratio_min: f64,
    /// The p99 gates' level (absolute and over the baseline): a window's
    /// p99 above the limit is a breach only when the requests above the
    /// limit are more than a cluster whose true p99 is at the limit would
    /// give with this chance (see [`exceedance_p_value`]). Per window;
    /// `breach_for` asks for consecutive windows on top.
    pub gate_alpha: f64,
}

impl Default for CanaryTest {
    /// 1 in 1000 windows, and a p99 at least 10 % above stable's; the p99
    /// gates at 1 in 100 windows (two windows of `breach_for` in a row:
    /// about 1 in 10 000).
    fn default() -> CanaryTest {
        CanaryTest {
            alpha: 0.001,
            p99_ratio_min: 1.10,
            gate_alpha: 0.01,
        }
    }
}

/// How strongly a window says that its cluster's p99 is above
/// `threshold_s`: the chance that a cluster whose true p99 is exactly at
/// the threshold (each request above it with probability 0.01) puts at
/// least as many of this window's requests above it. One-sided binomial
/// upper tail on the count above the threshold (the bucket holding the
/// threshold contributes the share of it above, as [`Hist::quantile`]
/// spreads a bucket's observations evenly), with requests counted as
/// `per_batch` times fewer independent observations as in
/// [`compare_batched`]. 1 for an empty histogram.
///
/// Why: a window's p99 on a few dozen requests is its maximum, so one
/// slow request "breaches" a p99 gate. Seen on real processes: a cold
/// cluster's window of 14 requests with one at 2.4 s while the whole host
/// stalled rolled a healthy release back. With this test one request
/// above the limit in 20 is p = 0.18 (no breach), three are p = 0.001.
pub fn exceedance_p_value(hist: &Hist, threshold_s: f64, per_batch: f64) -> f64 {
    let n = hist.total();
    if n == 0 || threshold_s.is_nan() {
        return 1.0;
    }
    let mut above = 0.0f64;
    for (i, &c) in hist.counts.iter().enumerate() {
        if c == 0 {
            continue;
        }
        let lo = if i == 0 { 0.0 } else { hist.bounds_s[i - 1] };
        let share = match hist.bounds_s.get(i) {
            // Above the last bound: all of it counts (its values are
            // unknown, and the quantile says at most the last bound).
            None => 1.0,
            Some(_) if threshold_s <= lo => 1.0,
            Some(&hi) if threshold_s >= hi => 0.0,
            Some(&hi) => (hi - threshold_s) / (hi - lo),
        };
        above += c as f64 * share;
    }
    let d = if per_batch.is_finite() {
        per_batch.max(1.0)
    } else {
        1.0
    };
    let n_eff = ((n as f64 / d).floor() as u64).max(1);
    let k_eff = ((above / d).floor() as u64).min(n_eff);
    binomial_sf(n_eff, 0.01, k_eff)
}

/// P(X >= k) for X binomial(n, p), 0 < p < 1: exact (summed in log space
/// from the ratio of successive terms, from the mode outwards) up to
/// `TAIL_EXACT_MAX` trials, the normal approximation with continuity
/// correction above.
fn binomial_sf(n: u64, p: f64, k: u64) -> f64 {
    if k == 0 {
        return 1.0;
    }
    if k > n {
        return 0.0;
    }
    let (nf, q) = (n as f64, 1.0 - p);
    if n > TAIL_EXACT_MAX {
        let (mean, var) = (nf * p, nf * p * q);
        return normal_sf((k as f64 - 0.5 - mean) / var.sqrt());
    }
    // Terms relative to the mode's (the largest), so nothing underflows
    // where it matters: t(j+1)/t(j) = (n-j)/(j+1) · p/q.
    let mode = (((nf + 1.0) * p).floor() as u64).min(n);
    let up = |j: u64| ((nf - j as f64) / (j as f64 + 1.0) * p / q).ln();
    let (mut all, mut tail) = (1.0f64, if mode >= k { 1.0 } else { 0.0 });
    let mut l = 0.0;
    for j in mode..n {
        l += up(j);
        let w = l.exp();
        if w < 1e-300 {
            break;
        }
        all += w;
        if j + 1 >= k {
            tail += w;
        }
    }
    let mut l = 0.0;
    for j in (0..mode).rev() {
        l -= up(j);
        let w = l.exp();
        if w < 1e-300 {
            break;
        }
        all += w;
        if j >= k {
            tail += w;
        }
    }
    (tail / all).clamp(0.0, 1.0)
}

/// Canary against stable over one window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Comparison {
    pub canary_requests: u64,
    pub stable_requests: u64,
    pub canary_p99_s: Option<f64>,
    pub stable_p99_s: Option<f64>,
    /// Canary's p99 over stable's.
    pub p99_ratio: Option<f64>,
    /// One-sided Mann–Whitney p-value (canary slower).
    pub u_p_value: f64,
    /// One-sided p-value of the tail test (more canary requests at or
    /// above the pooled p99's bucket).
    pub tail_p_value: f64,
    /// Either test below `alpha / 2`.
    pub significant: bool,
    /// Significant and at least the effect floor: the canary is slower.
    pub slower: bool,
}

/// Compares canary's latencies with stable's over the same window (see
/// the module's documentation for the tests). An empty histogram gives
/// p-values of 1 (no evidence).
pub fn compare(canary: &Hist, stable: &Hist, test: &CanaryTest) -> Result<Comparison, JudgeError> {
    compare_batched(canary, stable, test, (1.0, 1.0))
}

/// [`compare`] when requests came in batches that share their fate:
/// `per_batch` is (canary's, stable's) mean requests per batch, each at
/// least 1 (see [`Appends`]). Each side then counts as that many times
/// fewer independent observations: the U test's variance becomes
/// `n1·n2/12 · (N+1) · (d1·n2 + d2·n1)/(n1 + n2)/N` (with the tie
/// correction kept), which is the variance of the AUC estimate
/// `(d1/n1 + d2/n2)/12` in place of `(1/n1 + 1/n2)/12`; and the tail test
/// runs on counts scaled down to `n/d` observations. With `(1, 1)` it is
/// exactly [`compare`].
pub fn compare_batched(
    canary: &Hist,
    stable: &Hist,
    test: &CanaryTest,
    per_batch: (f64, f64),
) -> Result<Comparison, JudgeError> {
    let clamp = |d: f64| if d.is_finite() { d.max(1.0) } else { 1.0 };
    let (d1, d2) = (clamp(per_batch.0), clamp(per_batch.1));
    if canary.bounds_s != stable.bounds_s {
        return Err(JudgeError::BoundsDiffer);
    }
    let canary_p99_s = canary.quantile(0.99);
    let stable_p99_s = stable.quantile(0.99);
    let p99_ratio = match (canary_p99_s, stable_p99_s) {
        (Some(c), Some(s)) if s > 0.0 => Some(c / s),
        _ => None,
    };
    let u_p_value = mann_whitney_greater(&canary.counts, &stable.counts, d1, d2);
    let tail_p_value = if d1 == 1.0 && d2 == 1.0 {
        tail_greater(&canary.counts, &stable.counts)
    } else {
        tail_greater(&deflate(&canary.counts, d1), &deflate(&stable.counts, d2))
    };
    let significant = u_p_value < test.alpha / 2.0 || tail_p_value < test.alpha / 2.0;
    let slower = significant && p99_ratio.is_some_and(|r| r >= test.p99_ratio_min);
    Ok(Comparison {
        canary_requests: canary.total(),
        stable_requests: stable.total(),
        canary_p99_s,
        stable_p99_s,
        p99_ratio,
        u_p_value,
        tail_p_value,
        significant,
        slower,
    })
}

/// One-sided Mann–Whitney U on binned samples: the p-value of "canary's
/// values are stochastically greater", ties (one bucket) counted half,
/// with tie and continuity corrections and the normal approximation.
/// `counts` as if they were `d` times fewer observations: each bucket
/// divided by `d`, rounded so that the total is `floor(total / d)` (at
/// least 1 when there was any): largest remainders first, ties to the
/// lower bucket, so the shape is kept and nothing is random.
fn deflate(counts: &[u64], d: f64) -> Vec<u64> {
    let total: u64 = counts.iter().fold(0u64, |a, &c| a.saturating_add(c));
    if total == 0 || d <= 1.0 {
        return counts.to_vec();
    }
    let want = ((total as f64 / d).floor() as u64).clamp(1, total);
    // Exact: bucket i gets floor(c·want/total), and the remainders
    // c·want mod total decide who gets the rest.
    let (want, total) = (u128::from(want), u128::from(total));
    let mut out: Vec<u64> = counts
        .iter()
        .map(|&c| (u128::from(c) * want / total) as u64)
        .collect();
    let have: u128 = out.iter().map(|&c| u128::from(c)).sum();
    let mut rest: Vec<(u128, usize)> = counts
        .iter()
        .enumerate()
        .map(|(i, &c)| (u128::from(c) * want % total, i))
        .filter(|&(r, _)| r > 0)
        .collect();
    rest.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    let short = usize::try_from(want.saturating_sub(have)).unwrap_or(usize::MAX);
    for &(_, i) in rest.iter().take(short) {
        out[i] += 1;
    }
    out
}

fn mann_whitney_greater(canary: &[u64], stable: &[u64], d1: f64, d2: f64) -> f64 {
    let n1: f64 = canary.iter().map(|&c| c as f64).sum();
    let n2: f64 = stable.iter().map(|&c| c as f64).sum();
    let n = n1 + n2;
    if n1 == 0.0 || n2 == 0.0 || n < 2.0 {
        return 1.0;
    }
    let mut u = 0.0;
    let mut stable_below = 0.0;
    let mut ties = 0.0;
    for (&c, &s) in canary.iter().zip(stable) {
        let (c, s) = (c as f64, s as f64);
        u += c * (stable_below + s / 2.0);
        stable_below += s;
        let t = c + s;
        ties += t * t * t - t;
    }
    let var = n1 * n2 / 12.0 * ((n + 1.0) - ties / (n * (n - 1.0)));
    // Batches: the AUC's variance (1/n1 + 1/n2)/12 becomes
    // (d1/n1 + d2/n2)/12; scale U's variance by the same ratio.
    let var = var * (d1 * n2 + d2 * n1) / (n1 + n2);
    if var <= 0.0 {
        return 1.0;
    }
    let z = (u - n1 * n2 / 2.0 - 0.5) / var.sqrt();
    normal_sf(z)
}

/// One-sided tail test: of the requests above the bucket of the pooled
/// p99 (at most 1 % of all), does the canary hold more than its share?
/// Given the pooled data, the canary's count there is hypergeometric
/// under "no difference"; the p-value is its upper tail.
fn tail_greater(canary: &[u64], stable: &[u64]) -> f64 {
    let sum = |v: &[u64]| v.iter().fold(0u64, |a, &c| a.saturating_add(c));
    let (n1, n2) = (sum(canary), sum(stable));
    let n = n1.saturating_add(n2);
    if n1 == 0 || n2 == 0 {
        return 1.0;
    }
    let rank = 0.99 * n as f64;
    let mut cum = 0u64;
    let mut k = canary.len();
    for (i, (&c, &s)) in canary.iter().zip(stable).enumerate() {
        let t = c.saturating_add(s);
        cum = cum.saturating_add(t);
        if t > 0 && cum as f64 >= rank {
            k = i + 1;
            break;
        }
    }
    let a1 = sum(&canary[k..]);
    let a2 = sum(&stable[k..]);
    hypergeometric_sf(n, n1, a1.saturating_add(a2), a1)
}

/// P(X >= x) for X hypergeometric: `draws` drawn without replacement from
/// `n` of which `marked` are marked, X the marked drawn. Exact (summed in
/// log space from the ratio of successive terms) up to `TAIL_EXACT_MAX`
/// draws, the normal approximation with continuity correction above.
fn hypergeometric_sf(n: u64, marked: u64, draws: u64, x: u64) -> f64 {
    let lo = (draws + marked).saturating_sub(n);
    let hi = draws.min(marked);
    if x <= lo {
        return 1.0;
    }
    if x > hi {
        return 0.0;
    }
    if draws > TAIL_EXACT_MAX {
        let (nf, mf, df) = (n as f64, marked as f64, draws as f64);
        let p = mf / nf;
        let mean = df * p;
        let var = df * p * (1.0 - p) * (nf - df) / (nf - 1.0);
        if var <= 0.0 {
            return if (x as f64) <= mean { 1.0 } else { 0.0 };
        }
        return normal_sf((x as f64 - 0.5 - mean) / var.sqrt());
    }
    // log of term k relative to term lo: ratio t(k+1)/t(k) =
    // (marked-k)(draws-k) / ((k+1)(n-marked-draws+k+1)).
    let (nf, mf, df) = (n as f64, marked as f64, draws as f64);
    let ratio_ln = |k: f64| ((mf - k) * (df - k) / ((k + 1.0) * (nf - mf - df + k + 1.0))).ln();
    let mut max = 0.0f64;
    let mut l = 0.0;
    for k in lo..hi {
        l += ratio_ln(k as f64);
        max = max.max(l);
    }
    let (mut all, mut tail) = (0.0, 0.0);
    let mut l = 0.0;
    for k in lo..=hi {
        if k > lo {
            l += ratio_ln((k - 1) as f64);
        }
        let w = (l - max).exp();
        all += w;
        if k >= x {
            tail += w;
        }
    }
    (tail / all).clamp(0.0, 1.0)
}

/// P(Z > z) for a standard normal Z.
fn normal_sf(z: f64) -> f64 {
    0.5 * erfc(z / std::f64::consts::SQRT_2)
}

/// The complementary error function, with a fractional error below
/// 1.2e-7 everywhere (the Chebyshev fit of Numerical Recipes, `erfcc`).
fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98
                                + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let r = t * poly.exp();
    if x >= 0.0 {
        r
    } else {
        2.0 - r
    }
}

/// One cluster judged over one window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Judgement {
    pub requests: u64,
    /// At least `min_requests` in the window.
    pub judged: bool,
    pub p99_ms: Option<f64>,
    pub error_ratio: Option<f64>,
    /// One entry per gate the plan sets, in [`Gate`] order.
    pub gates: Vec<GateResult>,
    /// Present when judged against stable.
    pub comparison: Option<Comparison>,
}

impl Judgement {
    /// Breached if any gate is; otherwise not judged if any gate is not
    /// (missing data is never a pass); otherwise holds.
    pub fn verdict(&self) -> Verdict {
        let any = |v| self.gates.iter().any(|g| g.verdict == v);
        if any(Verdict::Breached) {
            Verdict::Breached
        } else if !self.judged || any(Verdict::NotJudged) {
            Verdict::NotJudged
        } else {
            Verdict::Holds
        }
    }

    /// The breached gates, as the decision core takes them.
    pub fn breaches(&self, cluster: &str) -> Vec<Breach> {
        self.gates
            .iter()
            .filter(|g| g.verdict == Verdict::Breached)
            .map(|g| Breach {
                cluster: cluster.to_owned(),
                gate: g.gate.name().to_owned(),
                value: g.value.unwrap_or(f64::NAN),
                limit: g.limit,
            })
            .collect()
    }
}

/// Judges one cluster's window against the plan's gates.
///
/// - `baseline_p99_s`: stable's p99 over the baseline window (`None`: no
///   baseline yet, and the relative gate is not judged);
/// - `stable`: stable's window over the same interval, for a canary
///   cluster; `None` for a stable cluster, or when no stable cluster has
///   weight (there is nothing to compare with, and no such gate).
///
/// Below `min_requests` every gate is reported with its value but not
/// judged; the comparison also needs `min_requests` on stable's side.
pub fn judge(
    gates: &Gates,
    window: &WindowStats,
    baseline_p99_s: Option<f64>,
    stable: Option<&WindowStats>,
    test: &CanaryTest,
) -> Result<Judgement, JudgeError> {
    for w in std::iter::once(window).chain(stable) {
        if w.errors > w.requests {
            return Err(JudgeError::ErrorsExceedRequests {
                errors: w.errors,
                requests: w.requests,
            });
        }
    }
    let judged = window.requests >= gates.min_requests;
    let p99_s = window.latency.quantile(0.99);
    let p99_ms = p99_s.map(|s| s * 1e3);
    let error_ratio = window.error_ratio();
    let verdict = |value: Option<f64>, ok: &dyn Fn(f64) -> bool, enough: bool| match value {
        Some(v) if enough => {
            if ok(v) {
                Verdict::Holds
            } else {
                Verdict::Breached
            }
        }
        _ => Verdict::NotJudged,
    };
    // A p99 above its limit (`threshold_s`) breaches only when enough
    // requests are above it to say so (see `exceedance_p_value`).
    let d = per_batch(window.appends);
    let p99_gate = |gate: Gate, value: Option<f64>, limit: f64, threshold_s: Option<f64>| {
        let mut v = verdict(value, &|v| v <= limit, judged);
        let mut p_value = None;
        if let (Verdict::Breached, Some(t)) = (v, threshold_s) {
            let p = exceedance_p_value(&window.latency, t, d);
            p_value = Some(p);
            if p >= test.gate_alpha {
                v = Verdict::NotJudged;
            }
        }
        GateResult {
            gate,
            value,
            limit,
            verdict: v,
            p_value,
        }
    };
    let mut results = Vec::new();
    if let Some(max) = gates.latency_p99_ms_max {
        results.push(p99_gate(
            Gate::LatencyP99MsMax,
            p99_ms,
            max,
            Some(max / 1e3),
        ));
    }
    if let Some(max) = gates.latency_p99_vs_baseline_max {
        let value = match (p99_s, baseline_p99_s) {
            (Some(p), Some(b)) if b > 0.0 => Some(p / b),
            _ => None,
        };
        let threshold_s = baseline_p99_s.map(|b| b * max);
        results.push(p99_gate(
            Gate::LatencyP99VsBaselineMax,
            value,
            max,
            threshold_s,
        ));
    }
    if let Some(max) = gates.error_ratio_max {
        results.push(GateResult {
            gate: Gate::ErrorRatioMax,
            value: error_ratio,
            limit: max,
            verdict: verdict(error_ratio, &|v| v <= max, judged),
            p_value: None,
        });
    }
    let mut comparison = None;
    if let Some(stable) = stable {
        let c = compare_batched(
            &window.latency,
            &stable.latency,
            test,
            (per_batch(window.appends), per_batch(stable.appends)),
        )?;
        let enough = judged
            && stable.requests >= gates.min_requests
            && c.canary_requests > 0
            && c.stable_requests > 0;
        let slower = c.slower;
        results.push(GateResult {
            gate: Gate::CanaryVsStable,
            value: c.p99_ratio,
            limit: test.p99_ratio_min,
            verdict: verdict(c.p99_ratio, &|_| !slower, enough),
            p_value: None,
        });
        comparison = Some(c);
    }
    Ok(Judgement {
        requests: window.requests,
        judged,
        p99_ms,
        error_ratio,
        gates: results,
        comparison,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binomial_tail_matches_the_sum_of_its_terms() {
        // Direct sums of C(n, j) p^j q^(n-j) for j >= k.
        let direct = |n: u64, p: f64, k: u64| {
            let mut c = 1.0f64;
            let mut sum = 0.0;
            for j in 0..=n {
                if j > 0 {
                    c *= (n - j + 1) as f64 / j as f64;
                }
                if j >= k {
                    sum += c * p.powi(j as i32) * (1.0 - p).powi((n - j) as i32);
                }
            }
            sum
        };
        for &(n, p) in &[
            (1u64, 0.01),
            (20, 0.01),
            (200, 0.01),
            (60, 0.3),
            (500, 0.01),
        ] {
            for k in 0..=n.min(40) {
                let (a, b) = (binomial_sf(n, p, k), direct(n, p, k));
                assert!(
                    (a - b).abs() < 1e-12 * b.max(1e-3),
                    "n={n} p={p} k={k}: {a} vs {b}"
                );
            }
        }
        assert_eq!(binomial_sf(10, 0.01, 11), 0.0);
        assert_eq!(binomial_sf(10, 0.01, 0), 1.0);
        // Far in the tail: tiny, not zero, not NaN.
        let t = binomial_sf(200, 0.01, 100);
        assert!(t > 0.0 && t < 1e-100, "{t}");
        // The normal approximation above TAIL_EXACT_MAX trials: at the
        // mean plus two standard deviations, about 0.023.
        let n = 4 * TAIL_EXACT_MAX;
        let sd = (n as f64 * 0.01 * 0.99).sqrt();
        let k = (n as f64 * 0.01 + 2.0 * sd).round() as u64;
        let t = binomial_sf(n, 0.01, k);
        assert!((t - 0.0228).abs() < 0.002, "{t}");
    }

    #[test]
    fn hypergeometric_tail_is_exact_on_small_cases_and_sane_when_approximated() {
        // n = 4, 2 marked, 2 drawn: P(X=0)=1/6, P(X=1)=4/6, P(X=2)=1/6.
        assert!((hypergeometric_sf(4, 2, 2, 2) - 1.0 / 6.0).abs() < 1e-12);
        assert!((hypergeometric_sf(4, 2, 2, 1) - 5.0 / 6.0).abs() < 1e-12);
        assert_eq!(hypergeometric_sf(4, 2, 2, 0), 1.0);
        assert_eq!(hypergeometric_sf(4, 2, 2, 3), 0.0);
        // Above the exact limit: the mean is a coin toss, far above is 0.
        let n = 10 * TAIL_EXACT_MAX;
        let draws = 2 * TAIL_EXACT_MAX;
        let mean = draws / 10;
        let p = hypergeometric_sf(n, n / 10, draws, mean);
        assert!((0.4..0.6).contains(&p), "{p}");
        assert!(hypergeometric_sf(n, n / 10, draws, mean + mean / 10) < 1e-9);
    }

    #[test]
    fn deflated_counts_keep_their_shape_and_a_total_of_n_over_d() {
        let c = [0, 7, 3, 0, 10, 1];
        assert_eq!(deflate(&c, 1.0), c.to_vec());
        let d = deflate(&c, 3.0);
        assert_eq!(d.iter().sum::<u64>(), 7); // floor(21 / 3)
                                              // 7/3, 3/3, 10/3, 1/3: floors 2, 1, 3, 0; one more to the first
                                              // of the equal remainders.
        assert_eq!(d, vec![0, 3, 1, 0, 3, 0]);
        // Never below one observation, never above the original.
        assert_eq!(deflate(&[0, 1, 0], 50.0), vec![0, 1, 0]);
        assert_eq!(deflate(&[0, 0], 4.0), vec![0, 0]);
        for (a, b) in d.iter().zip(&c) {
            assert!(a <= b);
        }
    }

    #[test]
    fn batches_widen_the_u_test_and_one_per_batch_changes_nothing() {
        let canary = [0, 10, 30, 20];
        let stable = [0, 40, 30, 10];
        let one = mann_whitney_greater(&canary, &stable, 1.0, 1.0);
        let five = mann_whitney_greater(&canary, &stable, 5.0, 5.0);
        assert!(one < 0.001, "{one}");
        assert!(five > one && five > 0.01, "{five}");
        // d on both sides alike: z shrinks by sqrt(d).
        let z = |p: f64| {
            let (mut lo, mut hi) = (-10.0, 10.0);
            for _ in 0..100 {
                let mid = (lo + hi) / 2.0;
                if normal_sf(mid) > p {
                    lo = mid;
                } else {
                    hi = mid;
                }
            }
            lo
        };
        assert!(
            (z(one) / z(five) - 5f64.sqrt()).abs() < 0.01,
            "{} {}",
            z(one),
            z(five)
        );
    }

    #[test]
    fn normal_tail_matches_known_values() {
        for (z, p) in [
            (0.0, 0.5),
            (1.959_964, 0.025),
            (3.090_232, 0.001),
            (-1.644_854, 0.95),
        ] {
            assert!((normal_sf(z) - p).abs() < 1e-5 * p, "{z}: {}", normal_sf(z));
        }
    }
}
