//! Judging windows that do not overlap. The judge's false-alarm rate holds
//! per independent window (`judge`), so the controller must not slide a
//! window by one interval: one chance extreme would then show in every
//! window it overlaps, and `breach_for` would not filter it out. Every
//! cluster shares the same window boundaries, so a canary is compared with
//! stable over the same time. A window closes once every cluster that
//! must be judged has `min_requests` in it (a 5 % slice at 1 k req/s
//! needs about 4 s for 200), or after `max_ms` (then the clusters short
//! of requests are not judged). Pure: scrapes and times come in.

use std::collections::BTreeMap;

use crate::judge::{JudgeError, WindowStats};

/// See the module doc.
#[derive(Debug, Clone)]
pub struct Windows {
    min_requests: u64,
    max_ms: u64,
    /// The cumulative scrapes at the start of the open window, and when.
    start: Option<(u64, BTreeMap<String, WindowStats>)>,
}

/// A closed window: per cluster, what happened in it, and its span.
#[derive(Debug, Clone)]
pub struct Closed {
    pub from_ms: u64,
    pub to_ms: u64,
    pub clusters: BTreeMap<String, WindowStats>,
}

impl Windows {
    pub fn new(min_requests: u64, max_ms: u64) -> Windows {
        Windows {
            min_requests,
            max_ms,
            start: None,
        }
    }

    /// Feeds the cumulative scrapes of `now_ms`; returns the window that
    /// this closes, if any. `must_judge` names the clusters whose requests
    /// decide when the window is long enough (those with weight). A
    /// counter that went down (a restarted process) starts a new window
    /// from this scrape: the old one cannot be measured.
    pub fn feed(
        &mut self,
        now_ms: u64,
        scrapes: BTreeMap<String, WindowStats>,
        must_judge: &[&str],
    ) -> Option<Closed> {
        let Some((from, start)) = &self.start else {
            self.start = Some((now_ms, scrapes));
            return None;
        };
        let from = *from;
        let diffs: Result<BTreeMap<String, WindowStats>, JudgeError> = scrapes
            .iter()
            .filter_map(|(name, now)| start.get(name).map(|s| (name, now.since(s))))
            .map(|(name, d)| d.map(|d| (name.clone(), d)))
            .collect();
        let Ok(diffs) = diffs else {
            self.start = Some((now_ms, scrapes));
            return None;
        };
        let enough = must_judge.iter().all(|c| {
            diffs
                .get(*c)
                .is_some_and(|w| w.requests >= self.min_requests)
        });
        if enough || now_ms.saturating_sub(from) >= self.max_ms {
            self.start = Some((now_ms, scrapes));
            return Some(Closed {
                from_ms: from,
                to_ms: now_ms,
                clusters: diffs,
            });
        }
        None
    }

    /// Forgets the open window (weights changed: what follows is another
    /// traffic split).
    pub fn reset(&mut self) {
        self.start = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::judge::Hist;

    fn scrape(requests: u64) -> WindowStats {
        let mut h = Hist::empty(&[0.001, 0.01]).unwrap();
        for _ in 0..requests {
            h.record(0.002);
        }
        WindowStats {
            requests,
            errors: 0,
            latency: h,
            appends: None,
        }
    }

    fn at(aws: u64, gcp: u64) -> BTreeMap<String, WindowStats> {
        BTreeMap::from([
            ("aws".to_owned(), scrape(aws)),
            ("gcp".to_owned(), scrape(gcp)),
        ])
    }

    #[test]
    fn windows_close_when_the_slice_has_enough_and_never_overlap() {
        let mut w = Windows::new(200, 30_000);
        assert!(w.feed(0, at(0, 0), &["aws", "gcp"]).is_none());
        // 950 + 50 req/s: the canary reaches 200 after 4 s.
        for s in 1..4 {
            assert!(w
                .feed(s * 1000, at(950 * s, 50 * s), &["aws", "gcp"])
                .is_none());
        }
        let c = w
            .feed(4000, at(3800, 200), &["aws", "gcp"])
            .expect("closed");
        assert_eq!((c.from_ms, c.to_ms), (0, 4000));
        assert_eq!(
            (c.clusters["aws"].requests, c.clusters["gcp"].requests),
            (3800, 200)
        );
        // The next window starts where this one ended.
        assert!(w.feed(5000, at(4750, 250), &["aws", "gcp"]).is_none());
        let c = w
            .feed(8000, at(7600, 400), &["aws", "gcp"])
            .expect("closed");
        assert_eq!((c.from_ms, c.clusters["gcp"].requests), (4000, 200));
    }

    #[test]
    fn a_quiet_slice_closes_at_the_maximum_and_a_reset_counter_restarts() {
        let mut w = Windows::new(200, 10_000);
        w.feed(0, at(0, 0), &["gcp"]);
        assert!(w.feed(9_000, at(9000, 20), &["gcp"]).is_none());
        let c = w
            .feed(10_000, at(10000, 21), &["gcp"])
            .expect("closed at the maximum");
        assert_eq!(c.clusters["gcp"].requests, 21);
        // A node restarted: its counters went down. New window from here.
        assert!(w.feed(11_000, at(100, 5), &["gcp"]).is_none());
        let c = w.feed(21_000, at(10100, 300), &["gcp"]).expect("closed");
        assert_eq!((c.from_ms, c.clusters["gcp"].requests), (11_000, 295));
    }
}
