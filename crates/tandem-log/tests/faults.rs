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
    drop(log);
    // Closed, the segment ends at its last record: the zeros written ahead
    // are cut.
    assert_eq!(std::fs::metadata(&seg).unwrap().len(), 10 * 66 - 50 + 4);
}

/// The active segment as a writer that died left it: a copy taken while
/// the log is open, with the zeros written ahead of its appends.
fn copy_while_open(log: &FileLog, from: &Path, to: &Path) -> PathBuf {
    assert!(log.last_seq() > 0);
    std::fs::create_dir_all(to).unwrap();
    let seg = segment(to, 1);
    std::fs::copy(segment(from, 1), &seg).unwrap();
    seg
}

/// Zeros written ahead of the appends (`preallocate_bytes`) are not
/// records: a log opened over them has every record, reports nothing torn
/// and cuts the zeros.
#[test]
fn zeros_written_ahead_end_the_log() {
    let dir = TempDir::new("ahead");
    let log = FileLog::open(dir.path(), test_config()).unwrap();
    append_n(&log, 10, 50);
    log.append(&[&[0u8; 40][..], &[0u8; 40][..]]).unwrap(); // payloads of zeros end the data
    let copy = dir.path().join("copy");
    let seg = copy_while_open(&log, dir.path(), &copy);
    let data = 10 * 66 + 2 * 56;
    let ahead = std::fs::metadata(&seg).unwrap().len();
    assert!(ahead > data + 1000, "no zeros written ahead: {ahead} bytes");
    let reopened = FileLog::open(&copy, test_config()).unwrap();
    assert_eq!(reopened.open_report().truncated_bytes, 0);
    assert!(reopened.open_report().truncated_reason.is_none());
    assert_eq!(reopened.last_seq(), 12);
    assert_eq!(read_all(&reopened, 1).len(), 12);
    assert_eq!(std::fs::metadata(&seg).unwrap().len(), data);
    assert_eq!(reopened.append(&[b"next"]).unwrap(), 13);
}

/// A crash while a write over zeros written ahead was being synced can
/// leave a whole sector of it unwritten with later sectors written (the
/// disk writes them in any order): that batch is torn, cut and reported,
/// and what was acknowledged before it stays.
#[test]
fn a_zero_sector_inside_the_last_batch_is_a_torn_write() {
    let dir = TempDir::new("hole");
    let log = FileLog::open(dir.path(), test_config()).unwrap();
    append_n(&log, 4, 50);
    log.append(&[&[5u8; 900][..], &[6u8; 900][..], &[7u8; 900][..]])
        .unwrap();
    let copy = dir.path().join("copy");
    let seg = copy_while_open(&log, dir.path(), &copy);
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[1024..1536].fill(0); // inside the second record of the batch
    std::fs::write(&seg, &bytes).unwrap();
    let reopened = FileLog::open(&copy, test_config()).unwrap();
    let r = reopened.open_report();
    assert_eq!(r.truncated_bytes, 3 * 916);
    assert!(r.truncated_reason.is_some());
    assert_eq!(reopened.last_seq(), 4);
    assert_eq!(std::fs::metadata(&seg).unwrap().len(), 4 * 66);
}

/// Damage followed by real data and no zero sector stays `Corrupt` with
/// zeros written ahead after the data.
#[test]
fn flipped_byte_before_data_refuses_to_open_with_zeros_ahead() {
    let dir = TempDir::new("flip-ahead");
    let log = FileLog::open(dir.path(), test_config()).unwrap();
    append_n(&log, 10, 50);
    let copy = dir.path().join("copy");
    let seg = copy_while_open(&log, dir.path(), &copy);
    let mut bytes = std::fs::read(&seg).unwrap();
    assert!(bytes.len() > 10 * 66);
    bytes[7 * 66 + 16 + 3] ^= 0x01;
    std::fs::write(&seg, &bytes).unwrap();
    match FileLog::open(&copy, test_config()) {
        Err(LogError::Corrupt { offset, .. }) => assert_eq!(offset, 7 * 66),
        other => panic!("expected Corrupt, got {other:?}"),
    }
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
    // The records acknowledged so far (the file also holds zeros written
    // ahead, which the rollback cuts with the partial write).
    let durable = 5 * 116;
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
