//! What the client saw, turned into the report's figures: the load
//! generator's per-request samples (`tandem loadgen --samples`) cut by the
//! controller's timeline into phases, per-second series per cluster, and
//! the rollback window measured at the client. Pure functions over parsed
//! data; times are Unix milliseconds in, run-relative out.

use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};

use crate::report::{ClusterSecond, Latency, PhaseReport, Rollback, Second};

/// One measured request.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Intended send time, Unix ms.
    pub t_ms: u64,
    pub latency_us: u64,
    pub op: String,
    /// `ok`, `4xx`, `5xx`, `connect`, `timeout`, `mismatch`.
    pub outcome: String,
    pub cluster: String,
    pub attempts: u32,
}

impl Sample {
    /// The client got no 2xx or 4xx answer (contract: `failed`).
    pub fn failed(&self) -> bool {
        !matches!(self.outcome.as_str(), "ok" | "4xx")
    }

    pub fn client_error(&self) -> bool {
        self.outcome == "4xx"
    }
}

/// Parses a samples file (`# tandem loadgen samples v1 ...`).
pub fn parse_samples(text: &str) -> Result<Vec<Sample>> {
    let mut lines = text.lines();
    match lines.next() {
        Some(l) if l.starts_with(tandem_loadgen::SAMPLES_MAGIC) => {}
        other => bail!("not a samples file (first line {other:?})"),
    }
    match lines.next() {
        Some(l) if l == tandem_loadgen::SAMPLE_COLUMNS => {}
        other => bail!("samples: unexpected columns {other:?}"),
    }
    let mut out = Vec::new();
    for (i, line) in lines.enumerate() {
        let Some(f) = tandem_loadgen::split_sample_fields(line) else {
            bail!("samples line {}: a quote is left open", i + 3);
        };
        if f.len() != 7 {
            bail!("samples line {}: {} fields, expected 7", i + 3, f.len());
        }
        let num = |s: &str, what: &str| -> Result<u64> {
            s.parse()
                .with_context(|| format!("samples line {}: {what} {s:?}", i + 3))
        };
        out.push(Sample {
            t_ms: num(&f[0], "t_ms")?,
            latency_us: num(&f[1], "latency_us")?,
            op: f[2].clone(),
            outcome: f[3].clone(),
            cluster: f[5].clone(),
            attempts: num(&f[6], "attempts")? as u32,
        });
    }
    Ok(out)
}

/// Nearest-rank quantile of sorted values.
fn rank(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

/// p50/p95/p99/max in ms of the answered (2xx/4xx) samples.
pub fn latency<'a>(samples: impl Iterator<Item = &'a Sample>) -> Latency {
    let mut v: Vec<u64> = samples
        .filter(|s| !s.failed())
        .map(|s| s.latency_us)
        .collect();
    v.sort_unstable();
    let ms = |us: u64| (us as f64 / 1000.0 * 100.0).round() / 100.0;
    Latency {
        p50: ms(rank(&v, 0.50)),
        p95: ms(rank(&v, 0.95)),
        p99: ms(rank(&v, 0.99)),
        max: ms(v.last().copied().unwrap_or(0)),
    }
}

/// A phase as the timeline shows it: name, weights, start (Unix ms).
#[derive(Debug, Clone, PartialEq)]
pub struct PhaseSpan {
    pub name: String,
    pub weights: BTreeMap<String, u32>,
    pub start_ms: u64,
    pub end_ms: u64,
    pub passed: bool,
}

/// The phases of a timeline: each starts at its first `set_weights` (the
/// first phase at the baseline) and ends where the next one starts, a
/// rollback starts, or at `end_ms`. A rollback adds a phase `rollback`
/// carrying the rollback weights.
pub fn phases(timeline: &[serde_json::Value], end_ms: u64) -> Vec<PhaseSpan> {
    let mut out: Vec<PhaseSpan> = Vec::new();
    let weights_of = |e: &serde_json::Value| -> BTreeMap<String, u32> {
        e["weights"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0) as u32))
                    .collect()
            })
            .unwrap_or_default()
    };
    for e in timeline {
        let t = e["t_ms"].as_u64().unwrap_or(0);
        let phase = e["phase"].as_str().unwrap_or_default();
        let action = e["action"].as_str().unwrap_or_default();
        let rollback = action == "rollback";
        let name = if rollback { "rollback" } else { phase };
        let starts = match out.last() {
            None => matches!(action, "baseline" | "set_weights" | "verify"),
            Some(last) => last.name != name && (action == "set_weights" || rollback),
        };
        if starts {
            if let Some(last) = out.last_mut() {
                last.end_ms = t;
            }
            out.push(PhaseSpan {
                name: name.to_owned(),
                weights: weights_of(e),
                start_ms: t,
                end_ms: end_ms.max(t),
                passed: false,
            });
        }
        if let Some(last) = out.last_mut() {
            if action == "set_weights" && last.name == name {
                let w = weights_of(e);
                if !w.is_empty() {
                    last.weights = w;
                }
            }
            if action == "pass" && last.name == phase {
                last.passed = true;
            }
        }
    }
    out
}

/// The report's phase entries, with the client's measurements in each.
/// Times relative to `origin_ms`.
pub fn phase_reports(spans: &[PhaseSpan], samples: &[Sample], origin_ms: u64) -> Vec<PhaseReport> {
    spans
        .iter()
        .map(|p| {
            let inside: Vec<&Sample> = samples
                .iter()
                .filter(|s| s.t_ms >= p.start_ms && s.t_ms < p.end_ms)
                .collect();
            let answered: Vec<&&Sample> = inside.iter().filter(|s| !s.failed()).collect();
            let mut share: BTreeMap<String, f64> =
                p.weights.keys().map(|k| (k.clone(), 0.0)).collect();
            for s in &answered {
                if !s.cluster.is_empty() {
                    *share.entry(s.cluster.clone()).or_default() += 1.0;
                }
            }
            let total = answered.len().max(1) as f64;
            for v in share.values_mut() {
                *v = (*v / total * 1000.0).round() / 1000.0;
            }
            PhaseReport {
                name: p.name.clone(),
                weights: p.weights.clone(),
                start_ms: p.start_ms.saturating_sub(origin_ms),
                end_ms: p.end_ms.saturating_sub(origin_ms),
                passed: p.passed,
                requests: inside.len() as u64,
                failed: inside.iter().filter(|s| s.failed()).count() as u64,
                latency_ms: latency(inside.iter().copied()),
                share,
            }
        })
        .collect()
}

/// Per-second series from `origin_ms` to the last sample.
pub fn series(samples: &[Sample], origin_ms: u64) -> Vec<Second> {
    let mut by_second: BTreeMap<u64, BTreeMap<String, Vec<u64>>> = BTreeMap::new();
    let mut failed: BTreeMap<u64, u64> = BTreeMap::new();
    for s in samples {
        let t = s.t_ms.saturating_sub(origin_ms) / 1000;
        if s.failed() {
            *failed.entry(t).or_default() += 1;
            by_second.entry(t).or_default();
        } else {
            let c = if s.cluster.is_empty() {
                "?"
            } else {
                &s.cluster
            };
            by_second
                .entry(t)
                .or_default()
                .entry(c.to_owned())
                .or_default()
                .push(s.latency_us);
        }
    }
    let Some(&last) = by_second.keys().next_back() else {
        return Vec::new();
    };
    let first = *by_second.keys().next().unwrap_or(&0);
    (first..=last)
        .map(|t| {
            let clusters = by_second
                .remove(&t)
                .unwrap_or_default()
                .into_iter()
                .map(|(c, mut v)| {
                    v.sort_unstable();
                    (
                        c,
                        ClusterSecond {
                            requests: v.len() as u64,
                            p50_ms: rank(&v, 0.5) as f64 / 1000.0,
                            p99_ms: rank(&v, 0.99) as f64 / 1000.0,
                        },
                    )
                })
                .collect();
            Second {
                t_s: t,
                clusters,
                failed: failed.get(&t).copied().unwrap_or(0),
            }
        })
        .collect()
}

/// When traffic followed a rollback, at the client: the first moment at
/// or after `breach_started_ms` from which the clusters whose weight the
/// rollback lowered (`lowered`: cluster → its new weight in %) answer at
/// most their new share plus one percentage point, in every tail of the
/// run from then on (Unix ms, on a 100 ms grid). When the rollback leaves
/// stable alone this is the contract's "at least 99 % of requests go to
/// stable clusters". `None` if that never happened before the samples end.
pub fn traffic_moved_ms(
    samples: &[Sample],
    lowered: &BTreeMap<String, u32>,
    breach_started_ms: u64,
) -> Option<u64> {
    const SLOT: u64 = 100;
    let allowed: f64 = lowered.values().map(|w| f64::from(*w) / 100.0).sum::<f64>() + 0.01;
    let mut slots: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
    for s in samples
        .iter()
        .filter(|s| s.t_ms >= breach_started_ms && !s.failed())
    {
        let e = slots
            .entry((s.t_ms - breach_started_ms) / SLOT)
            .or_default();
        e.0 += 1;
        if lowered.contains_key(&s.cluster) {
            e.1 += 1;
        }
    }
    // Walk back from the end, summing the tail: the answer is the start
    // of the earliest slot from which every tail holds (a tail that does
    // not hold ends the walk: no earlier slot can qualify).
    let (mut all, mut low) = (0u64, 0u64);
    let mut moved: Option<u64> = None;
    for (&slot, &(a, l)) in slots.iter().rev() {
        all += a;
        low += l;
        if (low as f64) > allowed * all as f64 {
            break;
        }
        moved = Some(slot);
    }
    let first = moved?;
    Some(breach_started_ms + first * SLOT)
}

/// The rollback as the contract reports it (run-relative ms).
pub fn rollback(
    breach_started_ms: u64,
    weights_applied_ms: u64,
    traffic_moved_ms: u64,
    origin_ms: u64,
) -> Rollback {
    Rollback {
        breach_started_ms: breach_started_ms.saturating_sub(origin_ms),
        weights_applied_ms: weights_applied_ms.saturating_sub(origin_ms),
        traffic_moved_ms: traffic_moved_ms.saturating_sub(origin_ms),
        seconds: traffic_moved_ms.saturating_sub(breach_started_ms) as f64 / 1000.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(t_ms: u64, us: u64, outcome: &str, cluster: &str) -> Sample {
        Sample {
            t_ms,
            latency_us: us,
            op: "place".into(),
            outcome: outcome.into(),
            cluster: cluster.into(),
            attempts: 1,
        }
    }

    #[test]
    fn samples_parse_and_bad_lines_are_named() {
        let text = "# tandem loadgen samples v1 start_unix_ms=5\n\
                    t_ms,latency_us,op,outcome,status,cluster,attempts\n\
                    10,1500,place,ok,201,aws,1\n\
                    11,900,read,5xx,503,\"g,cp\",4\n";
        let v = parse_samples(text).unwrap();
        assert_eq!(v.len(), 2);
        assert_eq!(v[1].cluster, "g,cp");
        assert!(v[1].failed() && !v[0].failed());
        let bad = text.replace("10,1500", "x,1500");
        let e = parse_samples(&bad).unwrap_err().to_string();
        assert!(e.contains("line 3") && e.contains("t_ms"), "{e}");
    }

    #[test]
    fn phases_follow_the_timeline_and_a_rollback_is_a_phase() {
        let tl: Vec<serde_json::Value> = [
            r#"{"t_ms":100,"phase":"warm-up","action":"baseline"}"#,
            r#"{"t_ms":200,"phase":"warm-up","action":"set_weights","weights":{"aws":100,"gcp":0}}"#,
            r#"{"t_ms":300,"phase":"warm-up","action":"pass"}"#,
            r#"{"t_ms":310,"phase":"canary","action":"verify"}"#,
            r#"{"t_ms":320,"phase":"canary","action":"set_weights","weights":{"aws":95,"gcp":5}}"#,
            r#"{"t_ms":500,"phase":"canary","action":"breach"}"#,
            r#"{"t_ms":600,"phase":"canary","action":"rollback","weights":{"aws":100,"gcp":0}}"#,
        ]
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
        let p = phases(&tl, 900);
        let names: Vec<&str> = p.iter().map(|x| x.name.as_str()).collect();
        assert_eq!(names, ["warm-up", "canary", "rollback"]);
        assert_eq!((p[0].start_ms, p[0].end_ms, p[0].passed), (100, 320, true));
        assert_eq!((p[1].start_ms, p[1].end_ms, p[1].passed), (320, 600, false));
        assert_eq!(p[1].weights["gcp"], 5);
        assert_eq!((p[2].start_ms, p[2].end_ms), (600, 900));
        assert_eq!(p[0].weights["aws"], 100);

        let samples = vec![
            s(150, 1000, "ok", "aws"),
            s(330, 2000, "ok", "gcp"),
            s(340, 3000, "ok", "aws"),
            s(350, 0, "timeout", ""),
        ];
        let r = phase_reports(&p, &samples, 100);
        assert_eq!(r[1].requests, 3);
        assert_eq!(r[1].failed, 1);
        assert_eq!(r[1].share["gcp"], 0.5);
        assert_eq!(r[1].start_ms, 220);
        assert_eq!(r[1].latency_ms.max, 3.0);
    }

    #[test]
    fn traffic_moved_is_where_the_stable_only_tail_begins() {
        let lowered: BTreeMap<String, u32> = [("gcp".to_owned(), 0)].into();
        let mut v = Vec::new();
        // 1000..2000: 30 % gcp; from 2300 on: aws only.
        for t in (1000..2300).step_by(10) {
            v.push(s(t, 1, "ok", if t % 100 < 30 { "gcp" } else { "aws" }));
        }
        for t in (2300..5000).step_by(10) {
            v.push(s(t, 1, "ok", "aws"));
        }
        assert_eq!(traffic_moved_ms(&v, &lowered, 1000), Some(2300));
        // Never moved: a gcp answer in the last slot.
        v.push(s(4999, 1, "ok", "gcp"));
        v.push(s(4998, 1, "ok", "gcp"));
        assert_eq!(traffic_moved_ms(&v, &lowered, 1000), None);
    }

    #[test]
    fn series_has_every_second_and_counts_failures() {
        let v = vec![
            s(1000, 1000, "ok", "aws"),
            s(1500, 3000, "ok", "aws"),
            s(3100, 2000, "ok", "gcp"),
            s(3200, 0, "connect", ""),
        ];
        let out = series(&v, 1000);
        assert_eq!(out.len(), 3);
        assert_eq!(out[0].clusters["aws"].requests, 2);
        assert_eq!(out[0].clusters["aws"].p99_ms, 3.0);
        assert!(out[1].clusters.is_empty());
        assert_eq!(out[2].failed, 1);
    }
}
