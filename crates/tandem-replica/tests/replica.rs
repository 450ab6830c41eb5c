//! Replicas over one file log agree: same chain at every seq, whether they
//! ran straight through, restarted midway from a snapshot, or had to skip a
//! corrupt snapshot. Appends come from several threads, so the log, not
//! any clock, decides the order.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tandem_log::{FileLog, FileLogConfig, FsyncPolicy, Log};
use tandem_replica::{Replica, ReplicaConfig, SnapshotPolicy};

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("tandem-replica-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("temp dir");
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A deterministic mixed command flow as JSON lines (no newline).
fn flow(n: usize, seed: u64) -> Vec<Vec<u8>> {
    let mut x = seed | 1;
    let mut rnd = |m: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % m
    };
    (0..n)
        .map(|i| {
            let market = ["BTC-USD", "ETH-USD"][rnd(2) as usize];
            let account = format!("a{}", rnd(9));
            let side = if rnd(2) == 0 { "buy" } else { "sell" };
            let price = format!("{}.{}", 100 + rnd(4), rnd(10));
            let id = format!("o{}", rnd(n as u64));
            match rnd(10) {
                0..=6 => format!(
                    r#"{{"op":"place","market":"{market}","id":"{id}","account":"{account}","side":"{side}","price":"{price}","qty":"{}"}}"#,
                    1 + rnd(5)
                ),
                7 => format!(
                    r#"{{"op":"place","market":"{market}","id":"m{i}","account":"{account}","side":"{side}","type":"market","qty":"3"}}"#
                ),
                _ => format!(r#"{{"op":"cancel","market":"{market}","id":"{id}","account":"{account}"}}"#),
            }
            .into_bytes()
        })
        .collect()
}

fn open_log(dir: &TempDir) -> Arc<dyn Log> {
    let cfg = FileLogConfig {
        fsync: FsyncPolicy::Never,
        ..FileLogConfig::default()
    };
    Arc::new(FileLog::open(dir.0.join("log"), cfg).expect("open log"))
}

/// Appends `records` from `threads` threads in batches of 1..=20.
fn append_concurrently(log: &Arc<dyn Log>, records: Vec<Vec<u8>>, threads: usize) {
    let chunks: Vec<Vec<Vec<u8>>> = (0..threads)
        .map(|t| records.iter().skip(t).step_by(threads).cloned().collect())
        .collect();
    std::thread::scope(|s| {
        for (t, chunk) in chunks.into_iter().enumerate() {
            let log = Arc::clone(log);
            s.spawn(move || {
                let mut i = 0;
                while i < chunk.len() {
                    let n = (1 + (i + t) % 20).min(chunk.len() - i);
                    let batch: Vec<&[u8]> = chunk[i..i + n].iter().map(Vec::as_slice).collect();
                    log.append(&batch).expect("append");
                    i += n;
                }
            });
        }
    });
}

fn cfg(dir: PathBuf, every: u64) -> ReplicaConfig {
    ReplicaConfig {
        policy: SnapshotPolicy {
            every_commands: every,
            every: None,
            keep: 2,
            background: false,
        },
        read_batch: 500,
        ..ReplicaConfig::new(dir)
    }
}

/// File names in a snapshot directory, sorted.
fn file_names(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .expect("list")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Sets the flag when dropped, also while a panic unwinds.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Chain after every seq, in seq order.
fn chains(r: &mut Replica) -> Vec<(u64, u128)> {
    let mut v = Vec::new();
    r.catch_up(|seq, _, eng, _| v.push((seq, eng.chain())))
        .expect("catch up");
    v
}

#[test]
fn two_replicas_agree_including_one_restarted_from_its_snapshot() {
    let dir = TempDir::new("agree");
    let log = open_log(&dir);
    append_concurrently(&log, flow(12_000, 7), 4);
    assert_eq!(log.last_seq(), 12_000);

    let (mut a, info) = Replica::open(Arc::clone(&log), cfg(dir.0.join("a"), 0)).expect("open a");
    assert!(info.restored.is_none());
    let chain_a = chains(&mut a);
    assert_eq!(chain_a.len(), 12_000);

    // B snapshots every 2500 commands and stops after 7000.
    let (mut b, _) = Replica::open(Arc::clone(&log), cfg(dir.0.join("b"), 2500)).expect("open b");
    let mut chain_b = Vec::new();
    while b.applied_seq() < 7000 {
        b.step(|seq, _, eng, _| chain_b.push((seq, eng.chain())))
            .expect("step");
    }
    let stopped_at = b.applied_seq();
    drop(b);
    let (mut b, info) =
        Replica::open(Arc::clone(&log), cfg(dir.0.join("b"), 2500)).expect("reopen b");
    let (_, restored_seq) = info.restored.expect("restored from a snapshot");
    assert!(
        restored_seq >= 5000 && restored_seq <= stopped_at,
        "{restored_seq}"
    );
    assert!(info.skipped.is_empty());
    chain_b.truncate(restored_seq as usize);
    chain_b.extend(chains(&mut b));
    assert_eq!(chain_b, chain_a, "chains differ");
    assert_eq!(
        b.engine().snapshot(),
        a.engine().snapshot(),
        "final states differ"
    );
    // Only `keep` snapshots remain.
    let snaps = std::fs::read_dir(dir.0.join("b")).expect("list").count();
    assert_eq!(snaps, 2);
}

#[test]
fn a_corrupt_newest_snapshot_is_skipped_not_trusted() {
    let dir = TempDir::new("corrupt");
    let log = open_log(&dir);
    append_concurrently(&log, flow(6_000, 11), 2);
    let (mut a, _) = Replica::open(Arc::clone(&log), cfg(dir.0.join("a"), 2000)).expect("open");
    let want = chains(&mut a);
    drop(a);
    let mut snaps: Vec<_> = std::fs::read_dir(dir.0.join("a"))
        .expect("list")
        .map(|e| e.expect("entry").path())
        .collect();
    snaps.sort();
    let newest = snaps.last().expect("a snapshot").clone();
    let mut bytes = std::fs::read(&newest).expect("read");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&newest, &bytes).expect("write");

    let (mut b, info) = Replica::open(Arc::clone(&log), cfg(dir.0.join("a"), 0)).expect("reopen");
    assert_eq!(info.skipped.len(), 1, "{:?}", info.skipped);
    assert_eq!(info.skipped[0].0, newest);
    let (_, seq) = info.restored.expect("older snapshot used");
    assert_eq!(seq, 4000);
    let got = chains(&mut b);
    assert_eq!(got[..], want[seq as usize..]);
}

/// Snapshots are mapped rather than read on Linux: an empty file (which
/// cannot be mapped) and a truncated one (mapped, but short) must each be
/// skipped with the right reason, and the valid one below them restored.
#[test]
fn empty_and_truncated_newer_snapshots_are_skipped() {
    let dir = TempDir::new("short");
    let log = open_log(&dir);
    append_concurrently(&log, flow(5_000, 17), 2);
    let snap_dir = dir.0.join("s");
    let (mut a, _) = Replica::open(Arc::clone(&log), cfg(snap_dir.clone(), 2000)).expect("open");
    let want = chains(&mut a);
    drop(a);
    let good = snap_dir.join("snapshot-00000000000000004000.tsnap");
    let bytes = std::fs::read(&good).expect("read the newest snapshot");
    let empty = snap_dir.join("snapshot-00000000000000004998.tsnap");
    let truncated = snap_dir.join("snapshot-00000000000000004999.tsnap");
    std::fs::write(&empty, b"").expect("write");
    std::fs::write(&truncated, &bytes[..bytes.len() - 9]).expect("write");

    let (mut b, info) = Replica::open(Arc::clone(&log), cfg(snap_dir, 0)).expect("reopen");
    let skipped: Vec<_> = info
        .skipped
        .iter()
        .map(|(p, e)| (p.clone(), e.to_string()))
        .collect();
    assert_eq!(skipped.len(), 2, "{skipped:?}");
    assert_eq!(skipped[0].0, truncated);
    assert!(skipped[0].1.contains("length field"), "{skipped:?}");
    assert_eq!(skipped[1].0, empty);
    assert!(skipped[1].1.contains("truncated: 0 bytes"), "{skipped:?}");
    assert_eq!(info.restored, Some((good, 4000)));
    let got = chains(&mut b);
    assert_eq!(got[..], want[4000..]);
}

#[test]
fn follow_applies_appends_as_they_arrive_and_snapshots_by_time() {
    let dir = TempDir::new("follow");
    let log = open_log(&dir);
    let mut c = cfg(dir.0.join("f"), 0);
    c.policy.every = Some(Duration::from_millis(1));
    let (mut r, _) = Replica::open(Arc::clone(&log), c).expect("open");
    let stop = AtomicBool::new(false);
    // Seq the follower last applied, as it applies (the test's events).
    let applied = AtomicU64::new(0);
    let records = flow(3_000, 3);
    // Waits until `done` holds; fails the test at the deadline.
    let wait = |what: &str, done: &dyn Fn() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(Instant::now() < deadline, "{what}: not within 10 s");
            std::thread::sleep(Duration::from_millis(1));
        }
    };
    std::thread::scope(|s| {
        let follower = s.spawn(|| {
            let mut n = 0u64;
            let result = r.follow(&stop, Duration::from_millis(5), |seq, _, _, ev| {
                assert!(!ev.is_empty(), "every command yields an event");
                n += 1;
                applied.store(seq, Ordering::Release);
            });
            // Let the test thread's waits end if following failed.
            applied.store(u64::MAX, Ordering::Release);
            result.expect("follow");
            n
        });
        // A failing assertion below stops the follower too (else the
        // scope would wait for it for ever).
        let _stop = StopOnDrop(&stop);
        // Each append is applied while the follower waits at the tail
        // (and no later append can hide a missed one).
        for chunk in records.chunks(100) {
            let batch: Vec<&[u8]> = chunk.iter().map(Vec::as_slice).collect();
            let last = log.append(&batch).expect("append") + batch.len() as u64 - 1;
            wait(&format!("the follower applying seq {last}"), &|| {
                applied.load(Ordering::Acquire) >= last
            });
        }
        assert_eq!(
            applied.load(Ordering::Acquire),
            3000,
            "follower applied the tail"
        );
        // The time-based snapshot at the tail: written (renamed into
        // place) in the follower's thread, before it records it.
        let tail = "snapshot-00000000000000003000.tsnap";
        wait("a time-based snapshot at seq 3000", &|| {
            dir.0.join("f").join(tail).exists()
        });
        stop.store(true, Ordering::Relaxed);
        assert_eq!(follower.join().expect("follower"), 3000);
    });
    assert_eq!(r.applied_seq(), 3000);
    assert_eq!(
        r.last_snapshot_seq(),
        3000,
        "time-based snapshot reached the tail"
    );
}

#[test]
fn a_log_truncated_past_the_replica_is_a_clear_error() {
    let dir = TempDir::new("gap");
    let cfg_log = FileLogConfig {
        fsync: FsyncPolicy::Never,
        segment_bytes: 4096,
        ..FileLogConfig::default()
    };
    let log: Arc<dyn Log> = Arc::new(FileLog::open(dir.0.join("log"), cfg_log).expect("open log"));
    append_concurrently(&log, flow(2_000, 5), 1);
    log.truncate_before(1500).expect("truncate");
    assert!(log.first_seq() > 1);
    let err = Replica::open(Arc::clone(&log), cfg(dir.0.join("r"), 0)).expect_err("gap");
    let msg = err.to_string();
    assert!(msg.contains("cannot continue"), "{msg}");
}

/// Snapshots written by a forked child while the replica goes on applying:
/// each is recorded once reaped, only `keep` remain, no temporary file is
/// left, and a restart from the newest one continues to the same chain as
/// a replica that never stopped.
#[cfg(target_os = "linux")]
#[test]
fn background_snapshots_are_written_while_applying_and_restore_to_the_same_chain() {
    let dir = TempDir::new("background");
    let log = open_log(&dir);
    append_concurrently(&log, flow(20_000, 23), 3);
    let (mut a, _) = Replica::open(Arc::clone(&log), cfg(dir.0.join("a"), 0)).expect("open a");
    let want = chains(&mut a);

    let bg = |every| {
        let mut c = cfg(dir.0.join("b"), every);
        c.policy.background = true;
        c
    };
    let (mut b, _) = Replica::open(Arc::clone(&log), bg(3000)).expect("open b");
    let mut saw_pending_while_applying = false;
    while b.applied_seq() < 20_000 {
        let before = b.applied_seq();
        b.step(|_, _, _, _| {}).expect("step");
        // Applying went on although a snapshot may still be in flight.
        assert!(b.applied_seq() > before);
        saw_pending_while_applying |= b.snapshot_pending();
    }
    assert!(
        saw_pending_while_applying || b.last_snapshot_seq() > 0,
        "no background snapshot was started"
    );
    let last = b.wait_for_snapshot().expect("background snapshot");
    assert!(!b.snapshot_pending());
    assert!(last >= 3000, "snapshot at {last}");
    let names = file_names(&dir.0.join("b"));
    assert!(names.iter().all(|n| !n.ends_with(".tmp")), "{names:?}");
    assert!(names.len() <= 2, "{names:?}");
    drop(b);

    let (mut c, info) = Replica::open(Arc::clone(&log), bg(0)).expect("reopen");
    let (_, seq) = info.restored.expect("restored from a background snapshot");
    assert_eq!(seq, last);
    assert!(info.skipped.is_empty(), "{:?}", info.skipped);
    let got = chains(&mut c);
    assert_eq!(got[..], want[seq as usize..]);
}

/// `snapshot_now` waits for a background snapshot in flight, then writes
/// its own: both files are whole and the newest is at the current seq.
#[cfg(target_os = "linux")]
#[test]
fn snapshot_now_waits_for_a_background_one() {
    let dir = TempDir::new("bg-now");
    let log = open_log(&dir);
    append_concurrently(&log, flow(8_000, 29), 2);
    let mut c = cfg(dir.0.join("b"), 4000);
    c.policy.background = true;
    c.policy.keep = 3;
    let (mut b, _) = Replica::open(Arc::clone(&log), c.clone()).expect("open");
    b.catch_up(|_, _, _, _| {}).expect("catch up");
    let path = b.snapshot_now().expect("snapshot now");
    assert!(!b.snapshot_pending());
    assert_eq!(b.last_snapshot_seq(), 8_000);
    assert!(path.ends_with("snapshot-00000000000000008000.tsnap"));
    let mut seqs: Vec<u64> = file_names(&dir.0.join("b"))
        .iter()
        .map(|name| {
            let bytes = std::fs::read(dir.0.join("b").join(name)).expect("read");
            tandem_core::Engine::restore(&bytes, tandem_core::Config::default())
                .expect("whole snapshot")
                .seq()
        })
        .collect();
    seqs.sort_unstable();
    assert_eq!(seqs.last(), Some(&8_000));
    assert!(seqs.contains(&4_000), "{seqs:?}");
}

/// A background snapshot whose child dies (here SIGKILL, as the OOM killer
/// would) is counted with why, written in the replica's thread instead,
/// and leaves no temporary file; the replica restores from it.
#[cfg(target_os = "linux")]
#[test]
fn a_killed_snapshot_child_is_counted_and_the_snapshot_written_in_the_thread() {
    let dir = TempDir::new("bg-killed");
    let log = open_log(&dir);
    append_concurrently(&log, flow(6_000, 31), 2);
    let mut c = cfg(dir.0.join("b"), 0);
    c.policy.background = true;
    let (mut b, _) = Replica::open(Arc::clone(&log), c.clone()).expect("open");
    let want = chains(&mut b);
    b.start_snapshot().expect("start");
    let pid = b.snapshot_child().expect("a child is writing");
    // SAFETY: signals the child the replica just forked; nothing else.
    #[allow(unsafe_code)]
    let killed = unsafe { libc::kill(pid, libc::SIGKILL) };
    assert_eq!(killed, 0);
    assert_eq!(b.wait_for_snapshot().expect("fallback snapshot"), 6_000);
    let (failures, why) = b.snapshot_failures();
    // The child may have finished before the signal landed (it has a
    // 6,000-command state to write and fsync, so that is rare).
    if failures == 1 {
        assert!(why.expect("why").contains("signal 9"), "{why:?}");
    } else {
        assert_eq!(failures, 0);
    }
    let names = file_names(&dir.0.join("b"));
    assert_eq!(names, ["snapshot-00000000000000006000.tsnap"], "{names:?}");
    drop(b);
    let (mut r, info) = Replica::open(Arc::clone(&log), c).expect("reopen");
    assert_eq!(info.restored.expect("restored").1, 6_000);
    assert!(chains(&mut r).is_empty());
    assert_eq!(r.engine().chain(), want.last().expect("chain").1);
}

/// A writer that applies its own appends from their bytes
/// (`apply_appended`) ends with the chain of a replica that reads the log,
/// at every seq, snapshots included; a batch that does not directly follow
/// the applied seq (another writer's records came first) is refused with
/// nothing applied, and `step` then applies both in log order.
#[test]
fn applying_own_appends_equals_reading_them_back() {
    let dir = TempDir::new("own");
    let log = open_log(&dir);
    let records = flow(3_000, 5);
    let (mut w, _) = Replica::open(Arc::clone(&log), cfg(dir.0.join("w"), 700)).expect("open w");
    let mut chain_w = Vec::new();
    let (mut refused, mut i) = (0, 0);
    while i < records.len() {
        let n = (1 + i % 17).min(records.len() - i);
        let batch: Vec<&[u8]> = records[i..i + n].iter().map(Vec::as_slice).collect();
        i += n;
        if i % 5 == 0 && i < records.len() {
            // Another writer's record lands before this batch.
            log.append(&[records[i].as_slice()]).expect("append other");
            i += 1;
            let first = log.append(&batch).expect("append");
            let got = w
                .apply_appended(first, &batch, |_, _, _, _| {
                    panic!("applied a batch after a gap")
                })
                .expect("apply");
            assert_eq!(got, None, "batch at {first} follows {}", w.applied_seq());
            refused += 1;
            while w
                .step(|seq, _, eng, _| chain_w.push((seq, eng.chain())))
                .expect("step")
                > 0
            {}
            continue;
        }
        let first = log.append(&batch).expect("append");
        let got = w
            .apply_appended(first, &batch, |seq, _, eng, _| {
                chain_w.push((seq, eng.chain()))
            })
            .expect("apply");
        assert_eq!(got, Some(n));
    }
    assert!(refused > 10, "{refused}");
    assert_eq!(w.applied_seq(), log.last_seq());
    let (mut r, _) = Replica::open(Arc::clone(&log), cfg(dir.0.join("r"), 0)).expect("open r");
    let chain_r = chains(&mut r);
    assert_eq!(chain_w, chain_r, "chains differ");
    assert_eq!(w.engine().snapshot(), r.engine().snapshot());
    assert!(w.last_snapshot_seq() >= 2_100, "{}", w.last_snapshot_seq());
    // Applying a batch twice is refused: it no longer follows.
    let last = log.last_seq();
    let again = [records[0].as_slice()];
    assert_eq!(
        w.apply_appended(last, &again, |_, _, _, _| panic!("applied twice"))
            .expect("apply"),
        None
    );
}
