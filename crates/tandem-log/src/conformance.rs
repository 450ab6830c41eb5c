//! The conformance suite every [`Log`] backend must pass (feature
//! `conformance`). Each check takes a factory of fresh, empty storage
//! ([`Fixture`]) so the file backend and a Kafka backend run the same code;
//! a fixture can reopen its storage, which is how durability is checked.
//! Checks panic with a message on failure, like any test.
//!
//! The checks assert only what the [`Log`] trait promises, so they hold for
//! contiguous seqs (the file log) and for seqs with gaps between batches
//! (Kafka): the seqs appends return strictly increase; a batch's records
//! have consecutive seqs from the seq its `append` returned; every record is
//! read back exactly once, in seq order, unchanged, at the seq its append
//! returned (payloads are matched through returned seqs, never through seq
//! arithmetic); `last_seq` is the last returned seq; `read_from` any seq
//! (one that exists or one in a gap) gives exactly the records with seq >=
//! it, up to `max`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::{Log, LogError, Record};

/// Fresh storage for one check. `open` gives a log over it; called again
/// after the previous handle was dropped, it must see the same records.
pub trait Fixture {
    /// Opens (or reopens) the log over this fixture's storage.
    fn open(&self) -> Box<dyn Log>;

    /// Most payload bytes (framing aside) one `append` may carry; the
    /// large-payload check sizes its records to fit. A backend with a
    /// per-message limit (Kafka) returns less than the default.
    fn max_batch_payload_bytes(&self) -> usize {
        16 << 20
    }

    /// True when `open` may be called again while another handle over the
    /// same storage is live, and appends through either are seen by both
    /// (as separate processes writing one Kafka partition are). The checks
    /// then also append through a second handle. False by default.
    fn concurrent_handles(&self) -> bool {
        false
    }
}

/// Makes a new, empty fixture.
pub type NewFixture<'a> = &'a dyn Fn() -> Box<dyn Fixture>;

/// Every check, in turn.
pub fn run_all(new: NewFixture<'_>) {
    empty_log(new);
    ordering(new);
    durability_across_reopen(new);
    read_from_any_seq(new);
    follow_the_tail(new);
    batch_atomicity(new);
    large_and_empty_payloads(new);
    concurrent_appenders(new);
    truncate_before(new);
}

/// Every record from `from` to the end, read in pages.
pub fn read_all(log: &dyn Log, from: u64) -> Vec<Record> {
    let mut out: Vec<Record> = Vec::new();
    let mut next = from;
    loop {
        let page = log.read_from(next, 1000).expect("read_from");
        let Some(last) = page.last() else {
            return out;
        };
        next = last.seq + 1;
        out.extend(page);
    }
}

/// Panics unless seqs strictly increase along `records`.
pub fn assert_increasing(records: &[Record]) {
    for w in records.windows(2) {
        assert!(w[0].seq < w[1].seq, "seq {} then {}", w[0].seq, w[1].seq);
    }
}

fn payload(tag: &str, i: u64) -> Vec<u8> {
    format!("{tag}-{i:08}").into_bytes()
}

fn append_one(log: &dyn Log, p: &[u8]) -> u64 {
    log.append(&[p]).expect("append")
}

/// Appends `records` as one batch; returns the seq of each, as the trait
/// promises them (consecutive from the returned first), after checking
/// that the first is above `after` (the last seq this caller saw).
fn append_batch(log: &dyn Log, records: &[Vec<u8>], after: u64) -> Vec<u64> {
    let refs: Vec<&[u8]> = records.iter().map(|p| &p[..]).collect();
    let first = log.append(&refs).expect("append");
    assert!(first > after, "append returned {first}, not above {after}");
    (first..first + records.len() as u64).collect()
}

/// `(seq, payload)` pairs of `records`, for comparing whole logs.
fn pairs(records: Vec<Record>) -> Vec<(u64, Vec<u8>)> {
    records.into_iter().map(|r| (r.seq, r.payload)).collect()
}

/// A new log is empty: `first_seq` 1, `last_seq` 0, nothing to read, and an
/// empty append writes nothing.
pub fn empty_log(new: NewFixture<'_>) {
    let fx = new();
    let log = fx.open();
    assert_eq!((log.first_seq(), log.last_seq()), (1, 0));
    assert!(log.read_from(1, 10).expect("read").is_empty());
    assert_eq!(log.append(&[]).expect("empty append"), 0);
    assert_eq!(log.last_seq(), 0);
    assert_eq!(log.wait_for(0, Duration::ZERO).expect("wait"), 0);
}

/// Appends return strictly increasing seqs (from 1 up); records read back
/// in order, unchanged, at the seqs their appends returned; a batch's
/// records are consecutive from the seq its append returned; `last_seq`
/// follows each append; an empty append returns `last_seq`.
pub fn ordering(new: NewFixture<'_>) {
    let fx = new();
    let log = fx.open();
    let mut seqs: Vec<u64> = Vec::new();
    for i in 1..=100 {
        let s = append_one(&*log, &payload("o", i));
        assert!(
            s > seqs.last().copied().unwrap_or(0),
            "seq {s} not increasing"
        );
        assert_eq!(log.last_seq(), s);
        seqs.push(s);
    }
    let first = log.append(&[b"a", b"b", b"c"]).expect("batch");
    assert!(first > seqs[99], "batch at {first} not after {}", seqs[99]);
    assert_eq!(log.last_seq(), first + 2);
    let all = read_all(&*log, 1);
    assert_eq!(all.len(), 103);
    assert_increasing(&all);
    for (i, r) in all.iter().enumerate().take(100) {
        assert_eq!(r.seq, seqs[i]);
        assert_eq!(r.payload, payload("o", i as u64 + 1));
    }
    let tail: Vec<(u64, &[u8])> = all[100..].iter().map(|r| (r.seq, &r.payload[..])).collect();
    assert_eq!(
        tail,
        [(first, &b"a"[..]), (first + 1, b"b"), (first + 2, b"c")]
    );
    assert_eq!(log.append(&[]).expect("empty append"), first + 2);
    assert_eq!(log.last_seq(), first + 2);
}

/// Acknowledged records survive dropping the log and reopening it, and
/// appends continue after them.
pub fn durability_across_reopen(new: NewFixture<'_>) {
    let fx = new();
    let mut want: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
    {
        let log = fx.open();
        for i in 1..=50 {
            let p = payload("d", i);
            want.insert(append_one(&*log, &p), p);
        }
    }
    let last = *want.keys().next_back().expect("appended");
    let log = fx.open();
    assert_eq!(log.last_seq(), last);
    let p = payload("d", 51);
    let s = append_one(&*log, &p);
    assert!(s > last, "append after reopen at {s}, not after {last}");
    want.insert(s, p);
    drop(log);
    let log = fx.open();
    assert_eq!(log.last_seq(), s);
    let all = read_all(&*log, 1);
    assert_eq!(all.len(), 51);
    assert_increasing(&all);
    let got: BTreeMap<u64, Vec<u8>> = all.into_iter().map(|r| (r.seq, r.payload)).collect();
    assert_eq!(got, want);
}

/// `read_from` starts at any seq (one that exists, or one in a gap between
/// batches: then at the next that exists), honours `max`, is empty past
/// the tail and for `max` 0.
pub fn read_from_any_seq(new: NewFixture<'_>) {
    let fx = new();
    let log = fx.open();
    let big = vec![7u8; 1000];
    let mut want: Vec<(u64, Vec<u8>)> = Vec::new();
    for i in 1..=300u64 {
        // Mixed sizes and batch lengths, so offsets and seqs are irregular.
        let n = if i.is_multiple_of(5) { 3 } else { 1 };
        let ps: Vec<Vec<u8>> = (0..n)
            .map(|k| {
                if (i + k).is_multiple_of(7) {
                    big.clone()
                } else {
                    payload("r", i * 10 + k)
                }
            })
            .collect();
        let after = want.last().map_or(0, |w| w.0);
        let seqs = append_batch(&*log, &ps, after);
        want.extend(seqs.into_iter().zip(ps));
    }
    let last = want.last().expect("appended").0;
    assert_eq!(log.last_seq(), last);
    let mut froms = vec![1u64];
    for i in [0usize, 1, 4, 5, 6, 7, 14, 99, 150, 298, want.len() - 1] {
        let s = want[i].0;
        // Seq 0 is below `first_seq`: `Truncated`, not a read.
        froms.extend([s - 1, s, s + 1].into_iter().filter(|&f| f >= 1));
    }
    for from in froms {
        let start = want.partition_point(|(s, _)| *s < from);
        for max in [1usize, 3, 1000] {
            let got = pairs(log.read_from(from, max).expect("read"));
            let expect = &want[start..(start + max).min(want.len())];
            assert_eq!(got, expect, "from {from} max {max}");
        }
    }
    assert_eq!(pairs(read_all(&*log, 1)), want);
    assert!(log.read_from(last + 1, 10).expect("read").is_empty());
    assert!(log.read_from(last + 1000, 10).expect("read").is_empty());
    assert!(log.read_from(u64::MAX / 2, 10).expect("read").is_empty());
    assert!(log.read_from(want[4].0, 0).expect("read").is_empty());
}

/// `wait_for` times out on a quiet log, returns at once when the log is
/// already past `after`, and wakes when another thread appends (and, when
/// the fixture allows, when another handle appends).
pub fn follow_the_tail(new: NewFixture<'_>) {
    let fx = new();
    let log = fx.open();
    let t = Instant::now();
    assert_eq!(
        log.wait_for(0, Duration::from_millis(100)).expect("wait"),
        0
    );
    assert!(t.elapsed() >= Duration::from_millis(100), "returned early");
    let x = append_one(&*log, b"x");
    let t = Instant::now();
    assert_eq!(log.wait_for(0, Duration::from_secs(10)).expect("wait"), x);
    assert!(t.elapsed() < Duration::from_secs(1));
    let t = Instant::now();
    assert_eq!(
        log.wait_for(x, Duration::from_millis(100)).expect("wait"),
        x
    );
    assert!(t.elapsed() >= Duration::from_millis(100), "returned early");
    std::thread::scope(|s| {
        let log = &*log;
        let writer = s.spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            append_one(log, b"y")
        });
        let t = Instant::now();
        let last = log.wait_for(x, Duration::from_secs(10)).expect("wait");
        assert!(t.elapsed() < Duration::from_secs(5), "did not wake");
        let y = writer.join().expect("writer");
        assert!(y > x);
        assert_eq!(last, y);
    });
    if fx.concurrent_handles() {
        let other = fx.open();
        let y = log.last_seq();
        std::thread::scope(|s| {
            let other = &*other;
            let writer = s.spawn(move || {
                std::thread::sleep(Duration::from_millis(100));
                append_one(other, b"z")
            });
            let t = Instant::now();
            let last = log.wait_for(y, Duration::from_secs(10)).expect("wait");
            assert!(t.elapsed() < Duration::from_secs(5), "did not wake");
            let z = writer.join().expect("writer");
            assert!(z > y);
            assert_eq!(last, z);
        });
    }
}

/// A batch is all-or-nothing and contiguous: a concurrent reader never
/// sees part of one, `last_seq` is never inside one, and after reopen every
/// batch is whole, at the seq its append returned.
pub fn batch_atomicity(new: NewFixture<'_>) {
    const BATCH: u64 = 5;
    const BATCHES: u64 = 120;
    let fx = new();
    let log = fx.open();
    // Whole batches, in order, each contiguous.
    let check = |records: &[Record]| {
        assert_eq!(records.len() as u64 % BATCH, 0, "part of a batch read");
        for (i, r) in records.iter().enumerate() {
            assert_eq!(r.payload, payload("b", i as u64), "record {i}");
        }
        for chunk in records.chunks(BATCH as usize) {
            for (k, r) in chunk.iter().enumerate() {
                assert_eq!(r.seq, chunk[0].seq + k as u64, "batch not contiguous");
            }
        }
        assert_increasing(records);
    };
    let mut lasts_seen = Vec::new();
    let firsts: Vec<u64> = std::thread::scope(|s| {
        let log = &*log;
        let writer = s.spawn(move || {
            let mut firsts: Vec<u64> = Vec::new();
            for b in 0..BATCHES {
                let ps: Vec<Vec<u8>> = (0..BATCH).map(|k| payload("b", b * BATCH + k)).collect();
                let after = firsts.last().map_or(0, |f| f + BATCH - 1);
                firsts.push(append_batch(log, &ps, after)[0]);
            }
            firsts
        });
        while !writer.is_finished() {
            let last = log.last_seq();
            let seen = log.read_from(1, usize::MAX).expect("read");
            check(&seen);
            // Everything up to `last` was acknowledged before the read.
            assert!(
                last <= seen.last().map_or(0, |r| r.seq),
                "last_seq {last} beyond what was read"
            );
            lasts_seen.push(last);
        }
        writer.join().expect("writer")
    });
    let batch_ends: std::collections::BTreeSet<u64> =
        firsts.iter().map(|f| f + BATCH - 1).collect();
    for last in lasts_seen {
        assert!(
            last == 0 || batch_ends.contains(&last),
            "last_seq {last} inside a batch"
        );
    }
    drop(log);
    let log = fx.open();
    let all = read_all(&*log, 1);
    assert_eq!(all.len() as u64, BATCH * BATCHES);
    check(&all);
    for (b, chunk) in all.chunks(BATCH as usize).enumerate() {
        assert_eq!(chunk[0].seq, firsts[b], "batch {b} not at its returned seq");
    }
    assert_eq!(log.last_seq(), firsts[firsts.len() - 1] + BATCH - 1);
}

/// A large payload (4 MiB, or less if [`Fixture::max_batch_payload_bytes`]
/// needs it so two fit in one batch) and empty payloads round-trip, alone
/// and mixed in a batch, across reopen.
pub fn large_and_empty_payloads(new: NewFixture<'_>) {
    let fx = new();
    let len = (4usize << 20).min((fx.max_batch_payload_bytes() - 1) / 2);
    let big: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
    let seqs = {
        let log = fx.open();
        let a = append_one(&*log, &[]);
        let b = append_one(&*log, &big);
        let c = log.append(&[b"", &big, b"s", b""]).expect("mixed");
        assert!(0 < a && a < b && b < c, "seqs {a}, {b}, {c}");
        assert_eq!(log.last_seq(), c + 3);
        vec![a, b, c, c + 1, c + 2, c + 3]
    };
    let log = fx.open();
    let all = read_all(&*log, 1);
    assert_eq!(all.iter().map(|r| r.seq).collect::<Vec<_>>(), seqs);
    let lens: Vec<usize> = all.iter().map(|r| r.payload.len()).collect();
    assert_eq!(lens, [0, big.len(), 0, big.len(), 1, 0]);
    assert!(all[1].payload == big && all[3].payload == big);
    assert_eq!(all[4].payload, b"s");
}

/// 8 threads append batches at once (through two handles when the fixture
/// allows): every record appears exactly once, seqs strictly increase,
/// each batch is contiguous at the seq its append returned, each thread's
/// batches are in its own order, and `last_seq` is the last record's seq.
pub fn concurrent_appenders(new: NewFixture<'_>) {
    const THREADS: u64 = 8;
    const BATCHES: u64 = 50;
    let fx = new();
    let log = fx.open();
    let second = fx.concurrent_handles().then(|| fx.open());
    let logs: [&dyn Log; 2] = [&*log, second.as_deref().unwrap_or(&*log)];
    let returned: Vec<Vec<(u64, u64)>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let log = logs[t as usize % 2];
                s.spawn(move || {
                    let mut firsts: Vec<(u64, u64)> = Vec::new();
                    for b in 0..BATCHES {
                        let n = 1 + (t + b) % 4;
                        let ps: Vec<Vec<u8>> = (0..n)
                            .map(|k| format!("t{t}:b{b}:{k}/{n}").into_bytes())
                            .collect();
                        let after = firsts.last().map_or(0, |&(f, n)| f + n - 1);
                        firsts.push((append_batch(log, &ps, after)[0], n));
                    }
                    firsts
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("appender"))
            .collect()
    });
    let all = read_all(&*log, 1);
    assert_increasing(&all);
    let total: u64 = returned.iter().flatten().map(|&(_, n)| n).sum();
    assert_eq!(all.len() as u64, total);
    let last = all.last().expect("records").seq;
    assert_eq!(log.last_seq(), last);
    assert_eq!(logs[1].last_seq(), last);
    let mut want: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
    for (t, firsts) in returned.iter().enumerate() {
        for (b, &(first, n)) in firsts.iter().enumerate() {
            for k in 0..n {
                let p = format!("t{t}:b{b}:{k}/{n}").into_bytes();
                assert!(
                    want.insert(first + k, p).is_none(),
                    "seq {} returned twice",
                    first + k
                );
            }
        }
    }
    let got: BTreeMap<u64, Vec<u8>> = all.into_iter().map(|r| (r.seq, r.payload)).collect();
    assert_eq!(got, want);
}

/// `truncate_before` never drops a seq >= its argument, makes reads below
/// `first_seq` fail with `Truncated`, keeps `last_seq`, and lasts across
/// reopen; appends continue. (A backend may keep everything: `first_seq`
/// then stays 1.)
pub fn truncate_before(new: NewFixture<'_>) {
    let fx = new();
    let log = fx.open();
    let p = [9u8; 100];
    let mut seqs: Vec<u64> = Vec::new();
    for _ in 0..200 {
        let first = log.append(&[&p[..]; 10]).expect("append");
        assert!(first > seqs.last().copied().unwrap_or(0));
        seqs.extend(first..first + 10);
    }
    let last = seqs[seqs.len() - 1];
    let mid = seqs[1503];
    log.truncate_before(0).expect("no-op");
    log.truncate_before(1).expect("no-op");
    assert_eq!(log.first_seq(), 1);
    log.truncate_before(mid).expect("truncate");
    let first = log.first_seq();
    assert!((1..=mid).contains(&first), "first_seq {first}");
    assert_eq!(log.last_seq(), last);
    let kept: Vec<u64> = seqs.iter().copied().filter(|&s| s >= first).collect();
    let read: Vec<u64> = read_all(&*log, first).iter().map(|r| r.seq).collect();
    assert_eq!(read, kept);
    assert_eq!(log.read_from(mid, 1).expect("read")[0].seq, mid);
    if first > 1 {
        match log.read_from(first - 1, 1) {
            Err(LogError::Truncated {
                requested,
                first: f,
            }) => {
                assert_eq!((requested, f), (first - 1, first));
            }
            other => panic!("expected Truncated, got {other:?}"),
        }
    }
    let after = append_one(&*log, b"after");
    assert!(
        after > last,
        "append after truncate at {after}, not after {last}"
    );
    drop(log);
    let log = fx.open();
    let reopened = log.first_seq();
    assert!(
        (first..=mid).contains(&reopened),
        "first_seq {reopened} after reopen"
    );
    assert_eq!(log.last_seq(), after);
    let mut kept: Vec<u64> = seqs.iter().copied().filter(|&s| s >= reopened).collect();
    kept.push(after);
    let all = read_all(&*log, reopened);
    assert_eq!(all.iter().map(|r| r.seq).collect::<Vec<_>>(), kept);
    assert_eq!(all.last().map(|r| &r.payload[..]), Some(&b"after"[..]));
}

/// A fresh directory under the system temp dir, removed on drop: for the
/// tests of any backend that keeps files.
#[derive(Debug)]
pub struct TempDir(std::path::PathBuf);

impl TempDir {
    /// A new empty directory whose name holds `tag`, the process id and a
    /// per-process counter.
    pub fn new(tag: &str) -> TempDir {
        use std::sync::atomic::{AtomicU64, Ordering};
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let path =
            std::env::temp_dir().join(format!("tandem-{tag}-{}-{n}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir(path)
    }

    /// The directory.
    pub fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
