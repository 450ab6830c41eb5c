//! The statistical judge on generated distributions: seeded lognormal-ish
//! latencies around 1–5 ms binned into the real bucket layout
//! (`tandem_metrics::BUCKETS_S`). A canary 30 % slower at p99 holding 5 %
//! of 1 k req/s is flagged within 10 s; an equal canary is flagged in at
//! most 1 of 1000 windows; the gates, `min_requests`, counter resets and
//! quantile interpolation.

use std::time::Duration;

use tandem_metrics::BUCKETS_S;
use tandem_rollout::judge::{
    compare, judge, Appends, CanaryTest, Gate, Hist, JudgeError, Verdict, WindowStats,
};
use tandem_rollout::plan::Gates;

/// splitmix64: a seeded generator with no dependency.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in (0, 1).
    fn unit(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }
    /// Standard normal (Box–Muller).
    fn normal(&mut self) -> f64 {
        let (u, v) = (self.unit(), self.unit());
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }
}

/// A latency distribution: lognormal with this median and shape, every
/// value times `scale`, and a share `tail_share` of requests also times
/// `tail_scale` (a slow tail).
#[derive(Clone, Copy)]
struct Dist {
    median_s: f64,
    sigma: f64,
    scale: f64,
    tail_share: f64,
    tail_scale: f64,
}

/// Median 2 ms, p99 about 4.5 ms.
const STABLE: Dist = Dist {
    median_s: 0.002,
    sigma: 0.35,
    scale: 1.0,
    tail_share: 0.0,
    tail_scale: 1.0,
};

impl Dist {
    fn sample(&self, rng: &mut Rng) -> f64 {
        let mut v = self.median_s * (self.sigma * rng.normal()).exp() * self.scale;
        if self.tail_share > 0.0 && rng.unit() < self.tail_share {
            v *= self.tail_scale;
        }
        v
    }
}

fn empty() -> Hist {
    Hist::empty(&BUCKETS_S).unwrap()
}

/// Adds `n` requests of `dist` to a cumulative observation.
fn observe(total: &mut WindowStats, dist: Dist, n: u64, rng: &mut Rng) {
    for _ in 0..n {
        total.latency.record(dist.sample(rng));
    }
    total.requests += n;
}

fn cumulative() -> WindowStats {
    WindowStats {
        requests: 0,
        errors: 0,
        latency: empty(),
        appends: None,
    }
}

fn window(dist: Dist, n: u64, rng: &mut Rng) -> WindowStats {
    let mut w = cumulative();
    observe(&mut w, dist, n, rng);
    w
}

/// The seed plan's gates.
fn gates() -> Gates {
    Gates {
        latency_p99_ms_max: Some(15.0),
        latency_p99_vs_baseline_max: Some(1.5),
        error_ratio_max: Some(0.001),
        replica_lag_seq_max: Some(1000),
        output_hash_divergence: 0,
        min_requests: 200,
        breach_for: Duration::from_secs(2),
    }
}

fn gate(j: &tandem_rollout::judge::Judgement, g: Gate) -> &tandem_rollout::judge::GateResult {
    j.gates.iter().find(|r| r.gate == g).unwrap()
}

/// 1 k req/s, canary 5 %: each second stable gets 950 requests and the
/// canary 50, scraped cumulatively; each second the controller judges the
/// window since the rollout's start. Returns the first second at which
/// the canary is flagged, if within `seconds`.
fn first_flag(canary: Dist, seed: u64, seconds: u64) -> Option<u64> {
    let mut rng = Rng(seed);
    let (start_c, start_s) = (cumulative(), cumulative());
    let (mut c, mut s) = (cumulative(), cumulative());
    for second in 1..=seconds {
        observe(&mut c, canary, 50, &mut rng);
        observe(&mut s, STABLE, 950, &mut rng);
        let (wc, ws) = (c.since(&start_c).unwrap(), s.since(&start_s).unwrap());
        let j = judge(
            &gates(),
            &wc,
            Some(0.0045),
            Some(&ws),
            &CanaryTest::default(),
        )
        .unwrap();
        let r = gate(&j, Gate::CanaryVsStable);
        if wc.requests < 200 {
            assert_eq!(r.verdict, Verdict::NotJudged, "second {second}");
            continue;
        }
        if r.verdict == Verdict::Breached {
            assert_eq!(j.verdict(), Verdict::Breached);
            assert!(j
                .breaches("gcp")
                .iter()
                .any(|b| b.gate == "canary_vs_stable"));
            return Some(second);
        }
    }
    None
}

#[test]
fn a_canary_30_percent_slower_with_5_percent_of_traffic_is_flagged_within_10_s() {
    let slow = Dist {
        scale: 1.3,
        ..STABLE
    };
    // Every one of 100 runs; the canary reaches min_requests (200) at 4 s.
    for seed in 1..=100 {
        let at = first_flag(slow, seed, 10);
        assert!(at.is_some_and(|s| s <= 10), "seed {seed}: {at:?}");
    }
}

#[test]
fn a_canary_with_only_a_slow_tail_is_flagged_within_10_s() {
    // 5 % of canary requests take 3 times longer (a slow path): the
    // median hardly moves, so U sees little; p99 doubles, and the tail
    // test sees about 5 % of canary requests at or above the pooled p99's
    // bucket where 1.5 % are expected.
    let tail = Dist {
        tail_share: 0.05,
        tail_scale: 3.0,
        ..STABLE
    };
    // Less evidence than a shift of the whole distribution: at least 95
    // of 100 runs (about 99 % when measured over 300).
    let flagged = (1..=100)
        .filter(|&seed| first_flag(tail, seed, 10).is_some())
        .count();
    assert!(flagged >= 95, "{flagged} of 100 runs flagged within 10 s");
}

#[test]
fn an_equal_canary_is_flagged_in_at_most_1_of_1000_windows_and_the_tests_are_calibrated() {
    let mut rng = Rng(0x5eed);
    let (mut flagged, mut u_05, mut tail_05) = (0, 0, 0);
    for _ in 0..1000 {
        // 10 s of 1 k req/s, 5 % of it to the canary.
        let c = window(STABLE, 500, &mut rng);
        let s = window(STABLE, 9500, &mut rng);
        let j = judge(&gates(), &c, Some(0.0045), Some(&s), &CanaryTest::default()).unwrap();
        let r = gate(&j, Gate::CanaryVsStable);
        assert_ne!(r.verdict, Verdict::NotJudged);
        flagged += usize::from(r.verdict == Verdict::Breached);
        let cmp = j.comparison.unwrap();
        u_05 += usize::from(cmp.u_p_value < 0.05);
        tail_05 += usize::from(cmp.tail_p_value < 0.05);
    }
    // Measured over 20 000 windows: about 0.35 in 1000.
    assert!(flagged <= 1, "{flagged} of 1000 windows flagged");
    // The p-values are honest: about 5 % of equal windows fall under 0.05
    // for U (binomial sd about 7 of 1000); the discrete tail test is at
    // most that.
    assert!((25..=80).contains(&u_05), "U below 0.05 in {u_05} of 1000");
    assert!(tail_05 <= 80, "tail below 0.05 in {tail_05} of 1000");
}

#[test]
fn a_large_window_does_not_flag_a_trivial_difference() {
    // 3 % slower everywhere, 200 k requests each: significant, but under
    // the 10 % effect floor.
    let mut rng = Rng(7);
    let c = window(
        Dist {
            scale: 1.03,
            ..STABLE
        },
        200_000,
        &mut rng,
    );
    let s = window(STABLE, 200_000, &mut rng);
    let cmp = compare(&c.latency, &s.latency, &CanaryTest::default()).unwrap();
    assert!(cmp.significant, "{cmp:?}");
    assert!(!cmp.slower, "{cmp:?}");
    let j = judge(&gates(), &c, None, Some(&s), &CanaryTest::default()).unwrap();
    assert_eq!(gate(&j, Gate::CanaryVsStable).verdict, Verdict::Holds);
}

#[test]
fn a_faster_canary_is_never_flagged() {
    let mut rng = Rng(8);
    let c = window(
        Dist {
            scale: 0.5,
            ..STABLE
        },
        5_000,
        &mut rng,
    );
    let s = window(STABLE, 5_000, &mut rng);
    let cmp = compare(&c.latency, &s.latency, &CanaryTest::default()).unwrap();
    assert!(cmp.u_p_value > 0.99 && !cmp.slower, "{cmp:?}");
}

#[test]
fn under_min_requests_nothing_is_judged_however_bad() {
    let mut rng = Rng(9);
    let mut c = window(
        Dist {
            scale: 10.0,
            ..STABLE
        },
        199,
        &mut rng,
    );
    c.errors = 100;
    let s = window(STABLE, 5_000, &mut rng);
    let j = judge(&gates(), &c, Some(0.0045), Some(&s), &CanaryTest::default()).unwrap();
    assert!(!j.judged);
    assert_eq!(j.verdict(), Verdict::NotJudged);
    assert!(j.breaches("gcp").is_empty());
    assert_eq!(j.gates.len(), 4);
    for g in &j.gates {
        assert_eq!(g.verdict, Verdict::NotJudged, "{g:?}");
        // Values are still there to print.
        assert!(g.value.is_some(), "{g:?}");
    }
    // One more request and it is judged, and breaches.
    observe(&mut c, STABLE, 1, &mut rng);
    let j = judge(&gates(), &c, Some(0.0045), Some(&s), &CanaryTest::default()).unwrap();
    assert!(j.judged);
    assert_eq!(j.verdict(), Verdict::Breached);
    assert_eq!(j.breaches("gcp").len(), 4);
    // A stable side under min_requests leaves the comparison not judged.
    let few = window(STABLE, 150, &mut rng);
    let j = judge(
        &gates(),
        &c,
        Some(0.0045),
        Some(&few),
        &CanaryTest::default(),
    )
    .unwrap();
    assert_eq!(gate(&j, Gate::CanaryVsStable).verdict, Verdict::NotJudged);
}

/// 1000 requests, every one taking `ms` milliseconds' bucket.
fn flat(ms: f64, errors: u64) -> WindowStats {
    let mut w = cumulative();
    for _ in 0..1000 {
        w.latency.record(ms / 1e3);
    }
    w.requests = 1000;
    w.errors = errors;
    w
}

#[test]
fn error_ratio_and_p99_gates_hold_and_breach_with_their_values() {
    let t = CanaryTest::default();
    let g = gates();
    let ok = judge(&g, &flat(3.0, 1), Some(0.003), None, &t).unwrap();
    assert_eq!(ok.verdict(), Verdict::Holds);
    assert_eq!(ok.gates.len(), 3, "no comparison without stable");
    assert_eq!(gate(&ok, Gate::ErrorRatioMax).value, Some(0.001));
    assert_eq!(gate(&ok, Gate::ErrorRatioMax).verdict, Verdict::Holds);

    let errors = judge(&g, &flat(3.0, 2), Some(0.003), None, &t).unwrap();
    let r = gate(&errors, Gate::ErrorRatioMax);
    assert_eq!(
        (r.value, r.limit, r.verdict),
        (Some(0.002), 0.001, Verdict::Breached)
    );
    let b = errors.breaches("gcp");
    assert_eq!(b.len(), 1);
    assert_eq!((b[0].gate.as_str(), b[0].value), ("error_ratio_max", 0.002));

    // All in the (15, 18] ms bucket: p99 interpolates to 17.97 ms.
    let slow = judge(&g, &flat(16.0, 0), Some(0.003), None, &t).unwrap();
    let r = gate(&slow, Gate::LatencyP99MsMax);
    assert_eq!((r.limit, r.verdict), (15.0, Verdict::Breached));
    assert!((r.value.unwrap() - 17.97).abs() < 1e-9, "{r:?}");
    let r = gate(&slow, Gate::LatencyP99VsBaselineMax);
    assert_eq!(r.verdict, Verdict::Breached);
    assert!((r.value.unwrap() - 17.97 / 3.0).abs() < 1e-9, "{r:?}");

    // Within 15 ms absolute, but 1.5 times a 2 ms baseline is 3 ms.
    let rel = judge(&g, &flat(3.5, 0), Some(0.002), None, &t).unwrap();
    assert_eq!(gate(&rel, Gate::LatencyP99MsMax).verdict, Verdict::Holds);
    assert_eq!(
        gate(&rel, Gate::LatencyP99VsBaselineMax).verdict,
        Verdict::Breached
    );

    // No baseline: that gate is not judged, so the cluster is not a pass.
    let nob = judge(&g, &flat(3.0, 0), None, None, &t).unwrap();
    assert_eq!(
        gate(&nob, Gate::LatencyP99VsBaselineMax).verdict,
        Verdict::NotJudged
    );
    assert_eq!(nob.verdict(), Verdict::NotJudged);

    // A gate the plan does not set is not reported.
    let only_errors = Gates {
        latency_p99_ms_max: None,
        latency_p99_vs_baseline_max: None,
        ..gates()
    };
    let j = judge(&only_errors, &flat(30.0, 0), None, None, &t).unwrap();
    assert_eq!(j.gates.len(), 1);
    assert_eq!(j.verdict(), Verdict::Holds);

    // Requests without a latency histogram: p99 is not judged.
    let mut nolat = flat(3.0, 0);
    nolat.latency = empty();
    let j = judge(&g, &nolat, Some(0.003), None, &t).unwrap();
    assert_eq!(gate(&j, Gate::LatencyP99MsMax).verdict, Verdict::NotJudged);
    assert_eq!(j.verdict(), Verdict::NotJudged);

    let mut bad = flat(3.0, 0);
    bad.errors = 1001;
    assert_eq!(
        judge(&g, &bad, None, None, &t),
        Err(JudgeError::ErrorsExceedRequests {
            errors: 1001,
            requests: 1000
        })
    );
}

#[test]
fn quantiles_interpolate_within_the_bucket() {
    let h = Hist::from_counts(&[0.001, 0.002, 0.004], &[0, 10, 30, 0]).unwrap();
    // Rank 20 of 40 is the 10th of 30 in (2, 4] ms.
    assert!((h.quantile(0.5).unwrap() - (0.002 + 0.002 * 10.0 / 30.0)).abs() < 1e-15);
    // Rank 4 is the 4th of 10 in (1, 2] ms.
    assert!((h.quantile(0.1).unwrap() - 0.0014).abs() < 1e-15);
    assert_eq!(h.quantile(1.0), Some(0.004));
    // q = 0: the lower bound of the first bucket with observations.
    assert_eq!(h.quantile(0.0), Some(0.001));
    assert_eq!(h.quantile(f64::NAN), None);
    assert_eq!(empty().quantile(0.99), None);
    // The first bucket starts at 0; the +Inf bucket gives the last bound.
    let h = Hist::from_counts(&[0.001, 0.002], &[4, 0, 0]).unwrap();
    assert_eq!(h.quantile(0.5), Some(0.0005));
    let h = Hist::from_counts(&[0.001, 0.002], &[1, 0, 99]).unwrap();
    assert_eq!(h.quantile(0.99), Some(0.002));
    // Finer buckets than before: a 30 % slower lognormal shows about 30 %
    // in the interpolated p99.
    let mut rng = Rng(3);
    let a = window(STABLE, 200_000, &mut rng).latency;
    let b = window(
        Dist {
            scale: 1.3,
            ..STABLE
        },
        200_000,
        &mut rng,
    )
    .latency;
    let r = b.quantile(0.99).unwrap() / a.quantile(0.99).unwrap();
    assert!((1.25..1.35).contains(&r), "{r}");
}

#[test]
fn scrapes_subtract_and_a_counter_reset_is_an_error() {
    let earlier = Hist::from_cumulative(&[(f64::INFINITY, 10), (0.001, 2), (0.002, 7)]).unwrap();
    assert_eq!(earlier.counts(), &[2, 5, 3]);
    assert_eq!(earlier.bounds_s(), &[0.001, 0.002]);
    let later = Hist::from_cumulative(&[(0.001, 3), (0.002, 9), (f64::INFINITY, 15)]).unwrap();
    assert_eq!(later.since(&earlier).unwrap().counts(), &[1, 1, 3]);
    // The process restarted: its first bucket went from 2 to 1.
    let reset = Hist::from_cumulative(&[(0.001, 1), (0.002, 9), (f64::INFINITY, 15)]).unwrap();
    assert_eq!(
        reset.since(&earlier),
        Err(JudgeError::CounterReset {
            field: "latency bucket le=0.001".into(),
            earlier: 2,
            later: 1
        })
    );
    let a = WindowStats {
        requests: 10,
        errors: 1,
        latency: earlier.clone(),
        appends: None,
    };
    let b = WindowStats {
        requests: 9,
        errors: 1,
        latency: later.clone(),
        appends: None,
    };
    assert_eq!(
        b.since(&a),
        Err(JudgeError::CounterReset {
            field: "requests".into(),
            earlier: 10,
            later: 9
        })
    );
    let b = WindowStats {
        requests: 15,
        errors: 0,
        latency: later.clone(),
        appends: None,
    };
    let e = b.since(&a).unwrap_err();
    assert!(e.to_string().contains("errors went from 1 to 0"), "{e}");
    let other = Hist::from_counts(&[0.001, 0.003], &[0, 0, 0]).unwrap();
    assert_eq!(later.since(&other), Err(JudgeError::BoundsDiffer));
    let mut sum = later.clone();
    sum.merge(&earlier).unwrap();
    assert_eq!(sum.counts(), &[5, 11, 9]);
    assert_eq!(sum.merge(&other), Err(JudgeError::BoundsDiffer));
}

#[test]
fn bad_histograms_are_refused_naming_what_is_wrong() {
    let inf = f64::INFINITY;
    assert_eq!(Hist::from_cumulative(&[]), Err(JudgeError::NoBuckets));
    assert_eq!(
        Hist::from_cumulative(&[(0.001, 1)]),
        Err(JudgeError::NoInfBucket)
    );
    assert_eq!(
        Hist::from_cumulative(&[(0.001, 5), (0.002, 4), (inf, 6)]),
        Err(JudgeError::NotCumulative {
            le: 0.002,
            count: 4,
            previous: 5
        })
    );
    assert_eq!(
        Hist::from_cumulative(&[(0.001, 1), (0.001, 1), (inf, 1)]),
        Err(JudgeError::DuplicateBound { bound: 0.001 })
    );
    assert_eq!(
        Hist::from_cumulative(&[(inf, 1), (inf, 1)]),
        Err(JudgeError::DuplicateBound { bound: inf })
    );
    assert!(matches!(
        Hist::from_cumulative(&[(f64::NAN, 1), (inf, 1)]),
        Err(JudgeError::BadBound { .. })
    ));
    assert_eq!(
        Hist::from_cumulative(&[(-1.0, 0), (inf, 1)]),
        Err(JudgeError::BadBound { bound: -1.0 })
    );
    assert_eq!(
        Hist::from_counts(&[0.002, 0.001], &[0, 0, 0]),
        Err(JudgeError::BoundsNotIncreasing {
            bound: 0.001,
            previous: 0.002
        })
    );
    assert_eq!(
        Hist::from_counts(&[0.001], &[0]),
        Err(JudgeError::CountsLength {
            bounds: 1,
            counts: 1
        })
    );
    assert_eq!(
        Hist::from_counts(&[0.001], &[u64::MAX, 1]),
        Err(JudgeError::Overflow)
    );
    let many: Vec<f64> = (1..=2000).map(f64::from).collect();
    assert!(matches!(
        Hist::empty(&many),
        Err(JudgeError::TooManyBuckets { .. })
    ));
    let e = Hist::from_cumulative(&[(0.001, 5), (0.002, 4), (inf, 6)]).unwrap_err();
    assert!(e.to_string().contains("le=0.002"), "{e}");
}

#[test]
fn a_judgement_serializes_with_the_gate_names() {
    let j = judge(
        &gates(),
        &flat(3.0, 0),
        Some(0.003),
        None,
        &CanaryTest::default(),
    )
    .unwrap();
    let text = serde_json::to_string(&j).unwrap();
    assert!(text.contains("\"gate\":\"latency_p99_ms_max\""), "{text}");
    assert!(text.contains("\"verdict\":\"holds\""), "{text}");
}

/// Requests that share a log append share its fate: `n` requests in
/// batches of `per_batch`; each batch, with probability 1 in 5, is
/// delayed as a whole by a stall of 1 to 8 ms (a slow produce, a fetch
/// that came late), on a median of 2 ms. What a node on one Kafka log
/// sees. Every latency, stall included, is multiplied by `times`.
fn batched_window(n: u64, per_batch: u64, times: f64, rng: &mut Rng) -> WindowStats {
    let mut w = cumulative();
    let mut left = n;
    let mut batches = 0;
    while left > 0 {
        let m = per_batch.min(left);
        let stall = if rng.unit() < 0.2 {
            0.001 + 0.007 * rng.unit()
        } else {
            0.0
        };
        for _ in 0..m {
            w.latency.record((STABLE.sample(rng) + stall) * times);
        }
        left -= m;
        batches += 1;
    }
    w.requests = n;
    w.appends = Some(Appends {
        commands: n,
        batches,
    });
    w
}

#[test]
fn batches_that_share_a_stall_fool_the_request_level_test_but_not_the_batched_one() {
    // 10 s of 1 k req/s, 5 % to an equal canary; stable's nodes append
    // 10 commands per batch, the canary's 3 (its share is smaller).
    let mut rng = Rng(0xba7c);
    let test = CanaryTest::default();
    for (canary, stable, cm, sm) in [(500, 9500, 3, 10), (60, 130, 6, 13)] {
        let (mut naive, mut naive_sig, mut batched, mut batched_sig) = (0, 0, 0, 0);
        let (mut batched_u05, mut batched_t05) = (0, 0);
        for _ in 0..1000 {
            let c = batched_window(canary, cm, 1.0, &mut rng);
            let s = batched_window(stable, sm, 1.0, &mut rng);
            let n = compare(&c.latency, &s.latency, &test).unwrap();
            naive += usize::from(n.slower);
            naive_sig += usize::from(n.significant);
            let j = judge(&gates(), &c, Some(0.0045), Some(&s), &test).unwrap();
            batched += usize::from(gate(&j, Gate::CanaryVsStable).verdict == Verdict::Breached);
            let b = j.comparison.unwrap();
            batched_sig += usize::from(b.significant);
            batched_u05 += usize::from(b.u_p_value < 0.05);
            batched_t05 += usize::from(b.tail_p_value < 0.05);
        }
        let what = format!(
            "equal canary, {canary} requests in batches of {cm} against {stable} in batches of {sm}: \
             request-level test slower in {naive} and significant in {naive_sig} of 1000 windows; \
             batched test slower in {batched}, significant in {batched_sig}, \
             U p < 0.05 in {batched_u05}, tail p < 0.05 in {batched_t05}"
        );
        eprintln!("{what}");
        // Counting each request as independent, "significant at 0.001"
        // comes ten times too often or more (measured: 17 and 67).
        assert!(naive_sig >= 10, "{what}");
        // Counting batches, the rate is alpha's or below, and the tests
        // are not anti-conservative at 0.05 either.
        assert!(batched <= 1 && batched_sig <= 1, "{what}");
        assert!(batched_u05 <= 60 && batched_t05 <= 60, "{what}");
    }
}

#[test]
fn a_canary_30_percent_slower_is_still_flagged_within_10_s_when_requests_come_in_batches() {
    let mut flagged = 0;
    for seed in 1..=100 {
        let mut rng = Rng(seed);
        // Windows of 5 s (250 canary requests, over min_requests 200),
        // two of them in 10 s: flagged in either.
        let hit = (0..2).any(|_| {
            let c = batched_window(250, 3, 1.3, &mut rng);
            let s = batched_window(4750, 10, 1.0, &mut rng);
            let j = judge(&gates(), &c, Some(0.0045), Some(&s), &CanaryTest::default()).unwrap();
            gate(&j, Gate::CanaryVsStable).verdict == Verdict::Breached
        });
        flagged += usize::from(hit);
    }
    // Measured: 98 of 100.
    assert!(flagged >= 95, "{flagged} of 100 runs flagged within 10 s");
}

/// A window of `n` requests from a lognormal with median 2 ms whose
/// requests are, with probability `slow_share`, also above a 15 ms limit
/// (at 20–40 ms): a cluster whose true share above the limit is
/// `slow_share`.
fn slow_share_window(n: u64, slow_share: f64, rng: &mut Rng) -> WindowStats {
    let mut w = cumulative();
    for _ in 0..n {
        let v = if rng.unit() < slow_share {
            0.020 + 0.020 * rng.unit()
        } else {
            STABLE.sample(rng)
        };
        w.latency.record(v);
    }
    w.requests = n;
    w
}

#[test]
fn one_slow_request_in_a_small_window_is_not_a_p99_breach_but_several_are() {
    let t = CanaryTest::default();
    let g = Gates {
        min_requests: 20,
        ..gates()
    };
    // 19 requests at 3 ms and one at 2.4 s: the window's p99 is far above
    // 15 ms, but a cluster at its limit puts one of 20 above it 18 % of
    // the time.
    let mut w = cumulative();
    for _ in 0..19 {
        w.latency.record(0.003);
    }
    w.latency.record(2.4);
    w.requests = 20;
    let j = judge(&g, &w, Some(0.003), None, &t).unwrap();
    let r = gate(&j, Gate::LatencyP99MsMax);
    assert!(r.value.unwrap() > 15.0, "{r:?}");
    assert_eq!(r.verdict, Verdict::NotJudged, "{r:?}");
    let p = r.p_value.unwrap();
    assert!((p - (1.0 - 0.99f64.powi(20))).abs() < 1e-9, "p = {p}");
    assert!(j.breaches("azure").is_empty());
    // The relative gate (1.5 × a 3 ms baseline) says the same.
    let r = gate(&j, Gate::LatencyP99VsBaselineMax);
    assert_eq!(r.verdict, Verdict::NotJudged, "{r:?}");

    // Three of 20 above: P(X >= 3) for binomial(20, 0.01) is 0.00100,
    // under the gate's 0.01.
    let mut w3 = cumulative();
    for _ in 0..17 {
        w3.latency.record(0.003);
    }
    for _ in 0..3 {
        w3.latency.record(2.4);
    }
    w3.requests = 20;
    let j = judge(&g, &w3, Some(0.003), None, &t).unwrap();
    let r = gate(&j, Gate::LatencyP99MsMax);
    assert_eq!(r.verdict, Verdict::Breached, "{r:?}");
    let p = r.p_value.unwrap();
    let p2 = 0.99f64.powi(20) + 20.0 * 0.01 * 0.99f64.powi(19) + 190.0 * 1e-4 * 0.99f64.powi(18);
    assert!(
        (p - (1.0 - p2)).abs() < 1e-9,
        "p = {p}, expected {}",
        1.0 - p2
    );
    assert_eq!(j.breaches("azure")[0].gate, "latency_p99_ms_max");

    // Requests that came in batches of 3 are a third as many
    // observations: three slow ones of one batch are one, and say nothing.
    let mut wb = w3.clone();
    wb.appends = Some(Appends {
        commands: 21,
        batches: 7,
    });
    let j = judge(&g, &wb, Some(0.003), None, &t).unwrap();
    assert_eq!(gate(&j, Gate::LatencyP99MsMax).verdict, Verdict::NotJudged);
}

#[test]
fn the_p99_gates_rarely_flag_a_cluster_at_its_limit_and_catch_one_well_over_it() {
    let t = CanaryTest::default();
    let g = gates();
    let mut rng = Rng(0x7a11);
    let runs = 1000;
    // True share above 15 ms of 1 %: the cluster is exactly at its p99
    // limit. On 200-request windows, the observed p99 is above the limit
    // in about a third of windows; the test flags few.
    let (mut above, mut flagged) = (0, 0);
    for _ in 0..runs {
        let j = judge(&g, &slow_share_window(200, 0.01, &mut rng), None, None, &t).unwrap();
        let r = gate(&j, Gate::LatencyP99MsMax);
        above += u32::from(r.value.unwrap() > 15.0);
        flagged += u32::from(r.verdict == Verdict::Breached);
    }
    println!("at the limit: p99 above it in {above} of {runs} windows, flagged in {flagged}");
    assert!(above > 150, "the naive gate would breach often: {above}");
    assert!(flagged <= 20, "at gate_alpha 0.01: {flagged} of {runs}");

    // True share above of 6 % (p99 well over the limit): flagged in most
    // 200-request windows, and two windows in a row (breach_for) in most
    // runs.
    let mut flagged = 0;
    let mut twice = 0;
    for _ in 0..runs / 10 {
        let a = judge(&g, &slow_share_window(200, 0.06, &mut rng), None, None, &t).unwrap();
        let b = judge(&g, &slow_share_window(200, 0.06, &mut rng), None, None, &t).unwrap();
        let (a, b) = (
            gate(&a, Gate::LatencyP99MsMax).verdict == Verdict::Breached,
            gate(&b, Gate::LatencyP99MsMax).verdict == Verdict::Breached,
        );
        flagged += u32::from(a);
        twice += u32::from(a && b);
    }
    println!("6 % above: flagged in {flagged} of 100 windows, two in a row in {twice} of 100");
    assert!(flagged >= 80, "{flagged}");
    assert!(twice >= 65, "{twice}");

    // Everything slow: flagged on a window of 20.
    let j = judge(
        &Gates {
            min_requests: 20,
            ..gates()
        },
        &slow_share_window(20, 1.0, &mut rng),
        None,
        None,
        &t,
    )
    .unwrap();
    let r = gate(&j, Gate::LatencyP99MsMax);
    assert_eq!(r.verdict, Verdict::Breached, "{r:?}");
    assert!(r.p_value.unwrap() < 1e-30, "{r:?}");
}
