//! Fault tests with real files and processes: a writer process killed with
//! SIGKILL mid-stream, a torn tail, a flipped byte, a full disk and a failed
//! fsync (the last two through `FaultInjector`, since making a real disk
//! full needs a small mounted filesystem, i.e. root and mount rights).

mod common;

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use common::TempDir;
use tandem_log::conformance::read_all;
use tandem_log::{FaultInjector, FileLog, FileLogConfig, Log, LogError};

fn segment(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}.seg"))
}

/// The tests' log config: the default, but `open` waits up to 5 s for the
/// directory's lock. `kill_9_loses_no_acknowledged_record` spawns writer
/// processes while the other tests of this binary run, and a child holds
/// copies of this process's descriptors (the lock file's among them)
/// from its fork until its exec closes them: a reopen right after a drop
/// can find the lock still held for that instant (seen once in CI as
/// `Locked` instead of `Corrupt`).
fn test_config() -> FileLogConfig {
    FileLogConfig {
        lock_wait: Duration::from_secs(5),
        ..FileLogConfig::default()
    }
}

/// A small pseudo-random number from the clock (no rand dependency); the
/// seed is printed so a failure can be related to its timing.
fn clock_seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nanos.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32
}

/// Parses `r:t:b:k/n` into ((r, t, b), k, n).
fn parse(p: &str) -> ((String, String, u64), u64, u64) {
    let parts: Vec<&str> = p.split(':').collect();
    assert_eq!(parts.len(), 4, "bad payload {p}");
    let (k, n) = parts[3].split_once('/').expect("k/n");
    let b = parts[2].trim_start_matches('b').parse().expect("batch");
    (
        (parts[0].into(), parts[1].into(), b),
        k.parse().expect("k"),
        n.parse().expect("n"),
    )
}

/// SIGKILL a writer process at random moments, several times on the same
/// directory: every acknowledged record survives at its seq exactly once,
/// the log is exactly 1..=last, and every batch in it is whole (batches cut
/// by the kill vanish entirely).
#[test]
fn kill_9_loses_no_acknowledged_record() {
    let dir = TempDir::new("kill");
    let mut acked: BTreeMap<u64, String> = BTreeMap::new();
    for run in 0..5 {
        let seed = clock_seed();
        let wait_ms = 150 + seed % 350;
        let mut child = Command::new(env!("CARGO_BIN_EXE_tandem-log-writer"))
            .arg(dir.path())
            .arg(run.to_string())
            .arg("4")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn writer");
        let stdout = child.stdout.take().expect("stdout");
        let reader = std::thread::spawn(move || {
            BufReader::new(stdout)
                .lines()
                .map(|l| l.expect("line"))
                .collect::<Vec<String>>()
        });
        std::thread::sleep(Duration::from_millis(wait_ms));
        child.kill().expect("SIGKILL");
        child.wait().expect("wait");
        let lines = reader.join().expect("reader");
        eprintln!("run {run}: killed after {wait_ms} ms, {} acks", lines.len());
        for line in lines {
            let (seq, p) = line.split_once(' ').expect("ack line");
            let seq: u64 = seq.parse().expect("seq");
            assert!(
                acked.insert(seq, p.to_string()).is_none(),
                "seq {seq} acked twice"
            );
        }

        let log = FileLog::open(dir.path(), test_config()).expect("reopen");
        eprintln!("run {run}: {:?}", log.open_report());
        let all = read_all(&log, 1);
        assert_eq!(all.len() as u64, log.last_seq(), "run {run}: gaps");
        for (i, r) in all.iter().enumerate() {
            assert_eq!(r.seq, i as u64 + 1);
        }
        let payloads: Vec<String> = all
            .iter()
            .map(|r| String::from_utf8(r.payload.clone()).expect("utf8"))
            .collect();
        for (&seq, p) in &acked {
            assert_eq!(
                payloads.get(seq as usize - 1),
                Some(p),
                "acked seq {seq} lost or moved"
            );
        }
        let distinct: HashSet<&String> = payloads.iter().collect();
        assert_eq!(distinct.len(), payloads.len(), "a payload appears twice");
        // Whole, contiguous batches only.
        let mut i = 0;
        while i < payloads.len() {
            let (batch, k, n) = parse(&payloads[i]);
            assert_eq!(k, 0, "seq {} starts inside a batch", i + 1);
            for j in 0..n as usize {
                let (b2, k2, _) = parse(payloads.get(i + j).expect("batch cut short"));
                assert_eq!(
                    (b2, k2),
                    (batch.clone(), j as u64),
                    "batch at seq {} broken",
                    i + 1
                );
            }
            i += n as usize;
        }
    }
    assert!(!acked.is_empty(), "the writer acknowledged nothing");
}

fn append_n(log: &FileLog, n: usize, len: usize) {
    for i in 0..n {
        log.append(&[&vec![i as u8; len][..]]).expect("append");
    }
}

/// A final record cut mid-payload is removed on open and reported; the log
/// goes on from the last whole record.
#[test]
fn torn_tail_is_cut_and_reported() {
    let dir = TempDir::new("torn");
    let log = FileLog::open(dir.path(), test_config()).unwrap();
    append_n(&log, 10, 50);
    drop(log);
    let seg = segment(dir.path(), 1);
    let len = std::fs::metadata(&seg).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&seg)
        .unwrap()
        .set_len(len - 7)
        .unwrap();
    let log = FileLog::open(dir.path(), test_config()).unwrap();
    let r = log.open_report();
    assert_eq!(r.truncated_bytes, 16 + 50 - 7);
    assert_eq!(r.truncated_segment.as_deref(), Some(seg.as_path()));
    assert!(r.truncated_reason.is_some());
    assert_eq!(log.last_seq(), 9);
    assert_eq!(log.append(&[b"next"]).unwrap(), 10);
    assert_eq!(std::fs::metadata(&seg).unwrap().len(), 10 * 66 - 50 + 4);
}

/// A multi-record batch missing its last byte vanishes whole on open.
#[test]
fn torn_batch_vanishes_whole() {
    let dir = TempDir::new("tornbatch");
    let log = FileLog::open(dir.path(), test_config()).unwrap();
    append_n(&log, 2, 10);
    log.append(&[b"aaaa", b"bbbb", b"cccc"]).unwrap();
    drop(log);
    let seg = segment(dir.path(), 1);
    let len = std::fs::metadata(&seg).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&seg)
        .unwrap()
        .set_len(len - 1)
        .unwrap();
    let log = FileLog::open(dir.path(), test_config()).unwrap();
    assert_eq!(log.open_report().truncated_bytes, 3 * 20 - 1);
    assert_eq!(log.last_seq(), 2);
}

/// A flipped payload byte in a record that is not the last one makes open
/// fail with `Corrupt`, naming the segment and the record's byte offset.
#[test]
fn flipped_byte_mid_segment_refuses_to_open() {
    let dir = TempDir::new("flip");
    let log = FileLog::open(dir.path(), test_config()).unwrap();
    append_n(&log, 10, 50);
    drop(log);
    let seg = segment(dir.path(), 1);
    let mut bytes = std::fs::read(&seg).unwrap();
    let record_5 = 4 * 66;
    bytes[record_5 + 16 + 20] ^= 0x01;
    std::fs::write(&seg, &bytes).unwrap();
    match FileLog::open(dir.path(), test_config()) {
        Err(LogError::Corrupt {
            segment,
            offset,
            reason,
        }) => {
            assert_eq!(segment, seg);
            assert_eq!(offset, record_5 as u64);
            assert!(reason.contains("checksum"), "{reason}");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

/// Damage in an earlier (sealed) segment is never taken for a torn tail,
/// even in that segment's final record.
#[test]
fn flipped_byte_in_sealed_segment_refuses_to_open() {
    let dir = TempDir::new("flip-sealed");
    let config = FileLogConfig {
        segment_bytes: 1024,
        ..test_config()
    };
    let log = FileLog::open(dir.path(), config.clone()).unwrap();
    append_n(&log, 40, 50);
    drop(log);
    let seg = segment(dir.path(), 1);
    let mut bytes = std::fs::read(&seg).unwrap();
    let n = bytes.len();
    bytes[n - 1] ^= 0x80;
    std::fs::write(&seg, &bytes).unwrap();
    match FileLog::open(dir.path(), config) {
        Err(LogError::Corrupt {
            segment, offset, ..
        }) => {
            assert_eq!(segment, seg);
            assert_eq!(offset, n as u64 - 66);
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

fn file_len(dir: &Path) -> u64 {
    std::fs::metadata(segment(dir, 1)).unwrap().len()
}

/// A full disk fails every caller of the batch with `StorageFull`, rolls the
/// partial write back, harms nothing acknowledged, and the log works again
/// once space is back.
#[test]
fn full_disk_fails_the_batch_and_rolls_it_back() {
    let dir = TempDir::new("full");
    let faults = Arc::new(FaultInjector::default());
    let config = FileLogConfig {
        faults: Some(Arc::clone(&faults)),
        ..test_config()
    };
    let log = FileLog::open(dir.path(), config).unwrap();
    append_n(&log, 5, 100);
    let durable = file_len(dir.path());
    faults.set_write_budget(150); // the next 116-byte frames partly fit
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| s.spawn(|| log.append(&[&[7u8; 100][..], &[8u8; 100][..]])))
            .collect();
        for h in handles {
            match h.join().unwrap() {
                Err(LogError::Io { source, op, .. }) => {
                    assert_eq!(source.kind(), std::io::ErrorKind::StorageFull);
                    assert_eq!(op, "write");
                }
                other => panic!("expected a full-disk error, got {other:?}"),
            }
        }
    });
    assert_eq!(
        file_len(dir.path()),
        durable,
        "partial write not rolled back"
    );
    assert_eq!(log.last_seq(), 5);
    faults.set_write_budget(u64::MAX);
    assert_eq!(log.append(&[b"again"]).unwrap(), 6);
    drop(log);
    let log = FileLog::open(dir.path(), test_config()).unwrap();
    assert_eq!(log.open_report().truncated_bytes, 0);
    let all = read_all(&log, 1);
    assert_eq!(all.len(), 6);
    assert_eq!(all[5].payload, b"again");
    assert!(all[..5].iter().all(|r| r.payload.len() == 100));
}

/// A failed fsync fails the batch, rolls it back and poisons the log: later
/// appends are refused with `Poisoned`; a reopen has every acknowledged
/// record and nothing of the failed batch.
#[test]
fn failed_fsync_poisons_the_log() {
    let dir = TempDir::new("fsync");
    let faults = Arc::new(FaultInjector::default());
    let config = FileLogConfig {
        faults: Some(Arc::clone(&faults)),
        ..test_config()
    };
    let log = FileLog::open(dir.path(), config).unwrap();
    append_n(&log, 3, 10);
    faults.set_fail_syncs(true);
    match log.append(&[b"lost"]) {
        Err(LogError::Io { op, .. }) => assert_eq!(op, "fdatasync"),
        other => panic!("expected an fsync error, got {other:?}"),
    }
    faults.set_fail_syncs(false);
    assert!(matches!(
        log.append(&[b"refused"]),
        Err(LogError::Poisoned { .. })
    ));
    assert_eq!(log.last_seq(), 3);
    assert_eq!(log.read_from(1, 10).unwrap().len(), 3);
    drop(log);
    let log = FileLog::open(dir.path(), test_config()).unwrap();
    assert_eq!(log.last_seq(), 3);
    assert_eq!(log.append(&[b"ok"]).unwrap(), 4);
}

/// One append larger than `max_batch_bytes` is refused up front.
#[test]
fn oversized_batch_is_refused() {
    let dir = TempDir::new("big");
    let config = FileLogConfig {
        max_batch_bytes: 1000,
        ..test_config()
    };
    let log = FileLog::open(dir.path(), config).unwrap();
    assert!(matches!(
        log.append(&[&[0u8; 600][..], &[0u8; 600][..]]),
        Err(LogError::BatchTooLarge {
            bytes: 1232,
            max: 1000
        })
    ));
    assert_eq!(log.last_seq(), 0);
}
