//! The log conformance suite against [`tandem_kafka::KafkaLog`] on a real
//! Kafka-protocol broker (tansu on loopback, one broker per test).
//!
//! Kafka seqs are strictly increasing and contiguous within a batch, but not
//! across batches (`(offset + 1) << 16 | index`). The shared checks that
//! hold for such seqs run as they are (`empty_log`); the others assume
//! contiguous seqs from 1, so they are restated here with gap-aware
//! assertions: each batch contiguous at the seq its append returned, seqs
//! strictly increasing across batches, every record exactly once,
//! `last_seq` the seq of the last record read, `read_from` starting at the
//! first existing seq >= its argument.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{new_fixture, KafkaFixture};
use tandem_log::conformance::{self, read_all};
use tandem_log::{Log, LogError, Record};

fn payload(tag: &str, i: u64) -> Vec<u8> {
    format!("{tag}-{i:08}").into_bytes()
}

fn append_one(log: &dyn Log, p: &[u8]) -> u64 {
    log.append(&[p]).expect("append")
}

/// Seqs strictly increase along `records`.
fn assert_increasing(records: &[Record]) {
    for w in records.windows(2) {
        assert!(w[0].seq < w[1].seq, "seq {} then {}", w[0].seq, w[1].seq);
    }
}

// ---- Shared checks that hold as they are. ----

#[test]
fn empty_log() {
    conformance::empty_log(&new_fixture);
}

// ---- Shared checks restated for seqs with gaps between batches. ----

/// Appends return strictly increasing seqs; records read back in order,
/// unchanged, at the seqs their appends returned; a batch is contiguous.
#[test]
fn ordering() {
    let fx = KafkaFixture::new();
    let log = fx.open_kafka();
    let mut seqs = Vec::new();
    for i in 1..=100 {
        let s = append_one(&log, &payload("o", i));
        assert!(seqs.last().is_none_or(|&p| s > p), "seq {s} not increasing");
        assert_eq!(log.last_seq(), s);
        seqs.push(s);
    }
    let first = log.append(&[b"a", b"b", b"c"]).expect("batch");
    assert!(first > seqs[99]);
    assert_eq!(log.last_seq(), first + 2);
    let all = read_all(&log, 1);
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
}

/// Acknowledged records survive dropping the log object and opening a new
/// one (new producer, new consumer), and appends continue after them.
#[test]
fn durability_across_reopen() {
    let fx = KafkaFixture::new();
    let mut seqs = BTreeMap::new();
    {
        let log = fx.open_kafka();
        for i in 1..=50 {
            seqs.insert(append_one(&log, &payload("d", i)), i);
        }
    }
    let log = fx.open_kafka();
    let (&last, _) = seqs.last_key_value().expect("appended");
    assert_eq!(log.last_seq(), last);
    let s = append_one(&log, &payload("d", 51));
    assert!(s > last);
    seqs.insert(s, 51);
    drop(log);
    let log = fx.open_kafka();
    assert_eq!(log.last_seq(), s);
    let all = read_all(&log, 1);
    assert_eq!(all.len(), 51);
    let got: BTreeMap<u64, Vec<u8>> = all.into_iter().map(|r| (r.seq, r.payload)).collect();
    let want: BTreeMap<u64, Vec<u8>> = seqs.iter().map(|(&s, &i)| (s, payload("d", i))).collect();
    assert_eq!(got, want);
}

/// `read_from` starts at any seq (one that exists, or one in a gap: then
/// at the next that exists), honours `max`, is empty past the tail.
#[test]
fn read_from_any_seq() {
    let fx = KafkaFixture::new();
    let log = fx.open_kafka();
    let big = vec![7u8; 1000];
    let mut want: Vec<(u64, Vec<u8>)> = Vec::new();
    for i in 1..=300u64 {
        // Mixed sizes and batch lengths, so offsets and seqs are irregular.
        let n = if i % 5 == 0 { 3 } else { 1 };
        let ps: Vec<Vec<u8>> = (0..n)
            .map(|k| {
                if (i + k) % 7 == 0 {
                    big.clone()
                } else {
                    payload("r", i * 10 + k)
                }
            })
            .collect();
        let refs: Vec<&[u8]> = ps.iter().map(|p| &p[..]).collect();
        let first = log.append(&refs).expect("append");
        want.extend(
            ps.into_iter()
                .enumerate()
                .map(|(k, p)| (first + k as u64, p)),
        );
    }
    let last = want.last().expect("appended").0;
    let mut froms = vec![1u64];
    for i in [0usize, 1, 5, 6, 7, 14, 99, 150, 298, want.len() - 1] {
        let s = want[i].0;
        froms.extend([s - 1, s, s + 1]);
    }
    for from in froms {
        let start = want.partition_point(|(s, _)| *s < from);
        for max in [1usize, 3, 1000] {
            let got = log.read_from(from, max).expect("read");
            let expect = &want[start..(start + max).min(want.len())];
            let got: Vec<(u64, Vec<u8>)> = got.into_iter().map(|r| (r.seq, r.payload)).collect();
            assert_eq!(got, expect, "from {from} max {max}");
        }
    }
    assert!(log.read_from(last + 1, 10).expect("read").is_empty());
    assert!(log.read_from(u64::MAX / 2, 10).expect("read").is_empty());
    assert!(log.read_from(want[4].0, 0).expect("read").is_empty());
}

/// `wait_for` times out on a quiet log, returns at once when the log is
/// already past `after`, and wakes when another thread appends.
#[test]
fn follow_the_tail() {
    let fx = KafkaFixture::new();
    let log = fx.open_kafka();
    let t = Instant::now();
    assert_eq!(
        log.wait_for(0, Duration::from_millis(100)).expect("wait"),
        0
    );
    assert!(t.elapsed() >= Duration::from_millis(100), "returned early");
    let x = append_one(&log, b"x");
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
        let log = &log;
        let writer = s.spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            append_one(log, b"y")
        });
        let t = Instant::now();
        let last = log.wait_for(x, Duration::from_secs(10)).expect("wait");
        assert!(t.elapsed() < Duration::from_secs(5), "did not wake");
        assert_eq!(last, writer.join().expect("writer"));
    });
    // Another log object (another producer) appending is seen too.
    let other = fx.open_kafka();
    let y = log.last_seq();
    std::thread::scope(|s| {
        let writer = s.spawn(|| {
            std::thread::sleep(Duration::from_millis(100));
            append_one(&other, b"z")
        });
        let last = log.wait_for(y, Duration::from_secs(10)).expect("wait");
        assert_eq!(last, writer.join().expect("writer"));
    });
}

/// A batch is all-or-nothing and contiguous: a concurrent reader never
/// sees part of one, and after reopen every batch is whole.
#[test]
fn batch_atomicity() {
    const BATCH: u64 = 5;
    const BATCHES: u64 = 100;
    let fx = KafkaFixture::new();
    let log = fx.open_kafka();
    let check = |records: &[Record]| {
        assert_eq!(records.len() as u64 % BATCH, 0, "part of a batch read");
        for chunk in records.chunks(BATCH as usize) {
            for (k, r) in chunk.iter().enumerate() {
                assert_eq!(r.seq, chunk[0].seq + k as u64, "batch not contiguous");
            }
        }
        assert_increasing(records);
    };
    let firsts = std::thread::scope(|s| {
        let log = &log;
        let writer = s.spawn(move || {
            let mut firsts = Vec::new();
            for b in 0..BATCHES {
                let ps: Vec<Vec<u8>> = (0..BATCH).map(|k| payload("b", b * BATCH + k)).collect();
                let refs: Vec<&[u8]> = ps.iter().map(|p| &p[..]).collect();
                firsts.push(log.append(&refs).expect("append"));
            }
            firsts
        });
        while !writer.is_finished() {
            let last = log.last_seq();
            let seen = log.read_from(1, usize::MAX).expect("read");
            check(&seen);
            if let Some(r) = seen.last() {
                assert!(last <= r.seq, "last_seq {last} beyond what was read");
            }
        }
        writer.join().expect("writer")
    });
    drop(log);
    let log = fx.open_kafka();
    let all = read_all(&log, 1);
    assert_eq!(all.len() as u64, BATCH * BATCHES);
    check(&all);
    for (i, r) in all.iter().enumerate() {
        assert_eq!(r.payload, payload("b", i as u64));
        if i as u64 % BATCH == 0 {
            assert_eq!(r.seq, firsts[i / BATCH as usize]);
        }
    }
}

/// A 1 MiB payload and empty payloads round-trip, alone and mixed in a
/// batch, across reopen.
#[test]
fn large_and_empty_payloads() {
    let fx = KafkaFixture::new();
    let big: Vec<u8> = (0..1u32 << 20).map(|i| (i % 251) as u8).collect();
    let seqs = {
        let log = fx.open_kafka();
        let a = append_one(&log, &[]);
        let b = append_one(&log, &big);
        let c = log.append(&[b"", &big, b"s", b""]).expect("mixed");
        assert!(a < b && b < c);
        vec![a, b, c, c + 1, c + 2, c + 3]
    };
    let log = fx.open_kafka();
    let all = read_all(&log, 1);
    assert_eq!(all.iter().map(|r| r.seq).collect::<Vec<_>>(), seqs);
    let lens: Vec<usize> = all.iter().map(|r| r.payload.len()).collect();
    assert_eq!(lens, [0, big.len(), 0, big.len(), 1, 0]);
    assert!(all[1].payload == big && all[3].payload == big);
    assert_eq!(all[4].payload, b"s");
}

/// 8 threads over two log objects (two idempotent producers, as two
/// processes would be) append batches at once: every record appears exactly
/// once, each batch is contiguous at the seq its append returned, and each
/// thread's batches are in its own order.
#[test]
fn concurrent_appenders() {
    const THREADS: u64 = 8;
    const BATCHES: u64 = 40;
    let fx = KafkaFixture::new();
    let logs = [fx.open_kafka(), fx.open_kafka()];
    let returned: Vec<Vec<(u64, u64)>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let log = &logs[t as usize % 2];
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
    let log = &logs[0];
    let all = read_all(log, 1);
    assert_increasing(&all);
    let total: u64 = returned.iter().flatten().map(|&(_, n)| n).sum();
    assert_eq!(all.len() as u64, total);
    assert_eq!(log.last_seq(), all.last().expect("records").seq);
    assert_eq!(logs[1].last_seq(), log.last_seq());
    let by_seq: BTreeMap<u64, &Record> = all.iter().map(|r| (r.seq, r)).collect();
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

/// `truncate_before` never drops a seq >= its argument, keeps `last_seq`,
/// and appends continue; reads below `first_seq` are `Truncated`. On Kafka
/// it is a documented no-op (tansu has no DeleteRecords), so `first_seq`
/// stays 1 and everything stays readable.
#[test]
fn truncate_before() {
    let fx = KafkaFixture::new();
    let log = fx.open_kafka();
    let p = [9u8; 100];
    let firsts: Vec<u64> = (0..200)
        .map(|_| log.append(&[&p[..]; 10]).expect("append"))
        .collect();
    let last = firsts[199] + 9;
    let mid = firsts[150] + 3;
    log.truncate_before(0).expect("no-op");
    log.truncate_before(1).expect("no-op");
    assert_eq!(log.first_seq(), 1);
    log.truncate_before(mid).expect("truncate");
    let first = log.first_seq();
    assert!((1..=mid).contains(&first), "first_seq {first}");
    assert_eq!(log.last_seq(), last);
    let kept = read_all(&log, first);
    assert_eq!(kept.last().map(|r| r.seq), Some(last));
    assert!(kept.iter().any(|r| r.seq == mid));
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
    let after = append_one(&log, b"after");
    assert!(after > last);
    drop(log);
    let log = fx.open_kafka();
    assert!((first..=mid).contains(&log.first_seq()));
    assert_eq!(log.last_seq(), after);
    let all = read_all(&log, log.first_seq());
    assert_eq!(all.last().map(|r| &r.payload[..]), Some(&b"after"[..]));
}
