//! The conformance suite every [`Log`] backend must pass (feature
//! `conformance`). Each check takes a factory of fresh, empty storage
//! ([`Fixture`]) so the file backend and a Kafka backend run the same code;
//! a fixture can reopen its storage, which is how durability is checked.
//! Checks panic with a message on failure, like any test.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::{Log, LogError, Record};

/// Fresh storage for one check. `open` gives a log over it; called again
/// after the previous handle was dropped, it must see the same records.
pub trait Fixture {
    /// Opens (or reopens) the log over this fixture's storage.
    fn open(&self) -> Box<dyn Log>;
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

fn payload(tag: &str, i: u64) -> Vec<u8> {
    format!("{tag}-{i:08}").into_bytes()
}

fn append_one(log: &dyn Log, p: &[u8]) -> u64 {
    log.append(&[p]).expect("append")
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

/// Appends get consecutive seqs from 1 and read back in order, unchanged.
pub fn ordering(new: NewFixture<'_>) {
    let fx = new();
    let log = fx.open();
    for i in 1..=100 {
        assert_eq!(append_one(&*log, &payload("o", i)), i);
    }
    let first = log.append(&[b"a", b"b", b"c"]).expect("batch");
    assert_eq!(first, 101);
    assert_eq!(log.last_seq(), 103);
    let all = read_all(&*log, 1);
    assert_eq!(all.len(), 103);
    for (i, r) in all.iter().enumerate().take(100) {
        assert_eq!(r.seq, i as u64 + 1);
        assert_eq!(r.payload, payload("o", i as u64 + 1));
    }
    let tail: Vec<&[u8]> = all[100..].iter().map(|r| &r.payload[..]).collect();
    assert_eq!(tail, [&b"a"[..], b"b", b"c"]);
    assert_eq!(log.append(&[]).expect("empty append"), 103);
}

/// Acknowledged records survive dropping the log and reopening it, and
/// appends continue after them.
pub fn durability_across_reopen(new: NewFixture<'_>) {
    let fx = new();
    {
        let log = fx.open();
        for i in 1..=50 {
            append_one(&*log, &payload("d", i));
        }
    }
    let log = fx.open();
    assert_eq!(log.last_seq(), 50);
    assert_eq!(append_one(&*log, &payload("d", 51)), 51);
    drop(log);
    let log = fx.open();
    let all = read_all(&*log, 1);
    assert_eq!(all.len(), 51);
    for r in &all {
        assert_eq!(r.payload, payload("d", r.seq));
    }
}

/// `read_from` starts at any seq, honours `max`, is empty past the tail.
pub fn read_from_any_seq(new: NewFixture<'_>) {
    let fx = new();
    let log = fx.open();
    let big = vec![7u8; 1000];
    for i in 1..=300u64 {
        // Mixed sizes so offsets are irregular.
        let p = if i % 7 == 0 {
            big.clone()
        } else {
            payload("r", i)
        };
        append_one(&*log, &p);
    }
    for from in [1u64, 2, 6, 7, 8, 99, 150, 299, 300] {
        for max in [1usize, 3, 1000] {
            let got = log.read_from(from, max).expect("read");
            let want = (max as u64).min(301 - from);
            assert_eq!(got.len() as u64, want, "from {from} max {max}");
            for (k, r) in got.iter().enumerate() {
                assert_eq!(r.seq, from + k as u64);
                if r.seq % 7 == 0 {
                    assert_eq!(r.payload, big);
                } else {
                    assert_eq!(r.payload, payload("r", r.seq));
                }
            }
        }
    }
    assert!(log.read_from(301, 10).expect("read").is_empty());
    assert!(log.read_from(10_000, 10).expect("read").is_empty());
    assert!(log.read_from(5, 0).expect("read").is_empty());
}

/// `wait_for` times out on a quiet log, returns at once when the log is
/// already past `after`, and wakes when another thread appends.
pub fn follow_the_tail(new: NewFixture<'_>) {
    let fx = new();
    let log = fx.open();
    let t = Instant::now();
    assert_eq!(
        log.wait_for(0, Duration::from_millis(100)).expect("wait"),
        0
    );
    assert!(t.elapsed() >= Duration::from_millis(100), "returned early");
    append_one(&*log, b"x");
    let t = Instant::now();
    assert_eq!(log.wait_for(0, Duration::from_secs(10)).expect("wait"), 1);
    assert!(t.elapsed() < Duration::from_secs(1));
    std::thread::scope(|s| {
        let log = &*log;
        s.spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            append_one(log, b"y");
        });
        let t = Instant::now();
        let last = log.wait_for(1, Duration::from_secs(10)).expect("wait");
        assert_eq!(last, 2);
        assert!(t.elapsed() < Duration::from_secs(5), "did not wake");
    });
}

/// A batch is all-or-nothing: a concurrent reader never sees part of one,
/// and after reopen every batch is whole.
pub fn batch_atomicity(new: NewFixture<'_>) {
    const BATCH: u64 = 5;
    const BATCHES: u64 = 200;
    let fx = new();
    let log = fx.open();
    std::thread::scope(|s| {
        let log = &*log;
        let writer = s.spawn(move || {
            for b in 0..BATCHES {
                let ps: Vec<Vec<u8>> = (0..BATCH).map(|k| payload("b", b * BATCH + k)).collect();
                let refs: Vec<&[u8]> = ps.iter().map(|p| &p[..]).collect();
                assert_eq!(log.append(&refs).expect("append"), b * BATCH + 1);
            }
        });
        while !writer.is_finished() {
            let last = log.last_seq();
            assert_eq!(last % BATCH, 0, "last_seq {last} inside a batch");
            let seen = log.read_from(1, usize::MAX).expect("read").len() as u64;
            assert_eq!(seen % BATCH, 0, "read {seen} records: part of a batch");
        }
        writer.join().expect("writer");
    });
    drop(log);
    let log = fx.open();
    let all = read_all(&*log, 1);
    assert_eq!(all.len() as u64, BATCH * BATCHES);
    for r in &all {
        assert_eq!(r.payload, payload("b", r.seq - 1));
    }
}

/// A 4 MiB payload and empty payloads round-trip, alone and mixed in a
/// batch, across reopen.
pub fn large_and_empty_payloads(new: NewFixture<'_>) {
    let fx = new();
    let big: Vec<u8> = (0..4u32 << 20).map(|i| (i % 251) as u8).collect();
    {
        let log = fx.open();
        assert_eq!(append_one(&*log, &[]), 1);
        assert_eq!(append_one(&*log, &big), 2);
        assert_eq!(log.append(&[b"", &big, b"s", b""]).expect("mixed"), 3);
    }
    let log = fx.open();
    let all = read_all(&*log, 1);
    let lens: Vec<usize> = all.iter().map(|r| r.payload.len()).collect();
    assert_eq!(lens, [0, big.len(), 0, big.len(), 1, 0]);
    assert!(all[1].payload == big && all[3].payload == big);
    assert_eq!(all[4].payload, b"s");
}

/// 8 threads append batches at once: every seq appears exactly once, each
/// batch is contiguous at the seq its append returned, and each thread's
/// batches are in its own order.
pub fn concurrent_appenders(new: NewFixture<'_>) {
    const THREADS: u64 = 8;
    const BATCHES: u64 = 60;
    let fx = new();
    let log = fx.open();
    let returned: Vec<Vec<(u64, u64)>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let log = &*log;
                s.spawn(move || {
                    let mut firsts = Vec::new();
                    for b in 0..BATCHES {
                        let n = 1 + (t + b) % 4;
                        let ps: Vec<Vec<u8>> = (0..n)
                            .map(|k| format!("t{t}:b{b}:{k}/{n}").into_bytes())
                            .collect();
                        let refs: Vec<&[u8]> = ps.iter().map(|p| &p[..]).collect();
                        firsts.push((log.append(&refs).expect("append"), n));
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
    let total: u64 = returned.iter().flatten().map(|&(_, n)| n).sum();
    assert_eq!(all.len() as u64, total);
    assert_eq!(log.last_seq(), total);
    let by_seq: BTreeMap<u64, &Record> = all.iter().map(|r| (r.seq, r)).collect();
    assert_eq!(by_seq.len() as u64, total, "a seq appears twice");
    for (t, firsts) in returned.iter().enumerate() {
        let mut prev = 0;
        for (b, &(first, n)) in firsts.iter().enumerate() {
            assert!(first > prev, "thread {t} batches out of order");
            prev = first;
            for k in 0..n {
                let want = format!("t{t}:b{b}:{k}/{n}");
                assert_eq!(by_seq[&(first + k)].payload, want.as_bytes());
            }
        }
    }
}

/// `truncate_before` never drops a seq >= its argument, makes reads below
/// `first_seq` fail with `Truncated`, keeps `last_seq`, and lasts across
/// reopen; appends continue.
pub fn truncate_before(new: NewFixture<'_>) {
    let fx = new();
    let log = fx.open();
    let p = [9u8; 100];
    for _ in 0..200 {
        log.append(&[&p[..]; 10]).expect("append");
    }
    log.truncate_before(0).expect("no-op");
    log.truncate_before(1).expect("no-op");
    assert_eq!(log.first_seq(), 1);
    log.truncate_before(1500).expect("truncate");
    let first = log.first_seq();
    assert!((1..=1500).contains(&first), "first_seq {first}");
    assert_eq!(log.last_seq(), 2000);
    assert_eq!(read_all(&*log, first).len() as u64, 2001 - first);
    assert_eq!(log.read_from(1500, 1).expect("read")[0].seq, 1500);
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
    assert_eq!(append_one(&*log, b"after"), 2001);
    drop(log);
    let log = fx.open();
    let reopened = log.first_seq();
    assert!(
        (first..=1500).contains(&reopened),
        "first_seq {reopened} after reopen"
    );
    assert_eq!(log.last_seq(), 2001);
    let all = read_all(&*log, reopened);
    assert_eq!(all.first().map(|r| r.seq), Some(reopened));
    assert_eq!(all.last().map(|r| &r.payload[..]), Some(&b"after"[..]));
}
