//! Replicas over one Kafka partition agree: two `tandem_replica::Replica`s
//! reading the same `KafkaLog` partition (each through its own consumer)
//! reach the same chain at every seq and the same final state, whether one
//! ran straight through or stopped midway and restarted from its snapshot.
//! Commands are appended by two threads through two `KafkaLog`s (two
//! idempotent producers, as two processes would be), so the broker, not
//! any clock, decides the order, and seqs have gaps between batches.

mod common;

use std::sync::Arc;

use common::{KafkaFixture, TempDir};
use tandem_log::Log;
use tandem_replica::{Replica, ReplicaConfig, SnapshotPolicy};

/// A deterministic mixed command flow as contract JSON lines (no newline),
/// as in tandem-replica's own tests.
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
                0..=5 => format!(
                    r#"{{"op":"place","market":"{market}","id":"{id}","account":"{account}","side":"{side}","price":"{price}","qty":"{}"}}"#,
                    1 + rnd(5)
                ),
                6 => format!(
                    r#"{{"op":"amend","market":"{market}","id":"{id}","account":"{account}","price":"{price}","qty":"{}"}}"#,
                    1 + rnd(3)
                ),
                7 => format!(
                    r#"{{"op":"place","market":"{market}","id":"m{i}","account":"{account}","side":"{side}","type":"market","qty":"3"}}"#
                ),
                _ => format!(
                    r#"{{"op":"cancel","market":"{market}","id":"{id}","account":"{account}"}}"#
                ),
            }
            .into_bytes()
        })
        .collect()
}

/// Appends `records` from one thread per log in `logs` (thread `t` takes
/// every `logs.len()`-th record from `t`), in batches of 1..=20.
fn append_concurrently(logs: &[&dyn Log], records: &[Vec<u8>]) {
    let threads = logs.len();
    std::thread::scope(|s| {
        for (t, &log) in logs.iter().enumerate() {
            let chunk: Vec<&[u8]> = records
                .iter()
                .skip(t)
                .step_by(threads)
                .map(Vec::as_slice)
                .collect();
            s.spawn(move || {
                let mut i = 0;
                while i < chunk.len() {
                    let n = (1 + (i + t) % 20).min(chunk.len() - i);
                    log.append(&chunk[i..i + n]).expect("append");
                    i += n;
                }
            });
        }
    });
}

/// Snapshot policy by count of commands applied (not seq distance: Kafka
/// seqs jump by 1 << 16 between batches).
fn cfg(dir: std::path::PathBuf, every_commands: u64) -> ReplicaConfig {
    ReplicaConfig {
        policy: SnapshotPolicy {
            every_commands,
            every: None,
            keep: 2,
            background: false,
        },
        read_batch: 500,
        ..ReplicaConfig::new(dir)
    }
}

/// Chain after every seq the replica applies from here to the tail.
fn chains(r: &mut Replica) -> Vec<(u64, u128)> {
    let mut v = Vec::new();
    r.catch_up(|seq, _, eng, _| v.push((seq, eng.chain())))
        .expect("catch up");
    v
}

#[test]
fn two_replicas_agree_including_one_restarted_from_its_snapshot() {
    const COMMANDS: usize = 4_000;
    let fx = KafkaFixture::new();
    let dir = TempDir::new("replicas");
    let writers = [fx.open_kafka(), fx.open_kafka()];
    append_concurrently(&[&writers[0], &writers[1]], &flow(COMMANDS, 7));
    let last = writers[0].last_seq();
    assert_eq!(writers[1].last_seq(), last);
    assert!(last > COMMANDS as u64, "Kafka seqs have gaps: last {last}");

    // A runs straight through, over its own consumer.
    let log_a: Arc<dyn Log> = Arc::new(fx.open_kafka());
    let (mut a, info) = Replica::open(log_a, cfg(dir.path().join("a"), 0)).expect("open a");
    assert!(info.restored.is_none());
    let chain_a = chains(&mut a);
    assert_eq!(chain_a.len(), COMMANDS);
    assert_eq!(a.applied_seq(), last);
    assert!(chain_a.windows(2).all(|w| w[0].0 < w[1].0));

    // B snapshots every 25 messages and stops about halfway.
    let half = chain_a[COMMANDS / 2].0;
    let log_b: Arc<dyn Log> = Arc::new(fx.open_kafka());
    let (mut b, _) = Replica::open(log_b, cfg(dir.path().join("b"), 250)).expect("open b");
    let mut chain_b = Vec::new();
    while b.applied_seq() < half {
        let n = b
            .step(|seq, _, eng, _| chain_b.push((seq, eng.chain())))
            .expect("step");
        assert!(n > 0, "log ended before seq {half}");
    }
    let stopped_at = b.applied_seq();
    assert!(b.last_snapshot_seq() > 0, "no snapshot by seq {stopped_at}");
    drop(b);

    // Reopened over a new consumer, B restores its newest snapshot and
    // applies only the tail after it.
    let log_b: Arc<dyn Log> = Arc::new(fx.open_kafka());
    let (mut b, info) = Replica::open(log_b, cfg(dir.path().join("b"), 250)).expect("reopen b");
    assert!(info.skipped.is_empty(), "{:?}", info.skipped);
    let (_, restored) = info.restored.expect("restored from a snapshot");
    assert!(
        restored > 0 && restored <= stopped_at,
        "restored {restored}"
    );
    assert!(
        chain_a.iter().any(|&(s, _)| s == restored),
        "snapshot seq {restored} is no command's seq"
    );
    chain_b.retain(|&(s, _)| s <= restored);
    let tail = chains(&mut b);
    assert!(tail.first().is_some_and(|&(s, _)| s > restored));
    chain_b.extend(tail);
    assert_eq!(chain_b.len(), chain_a.len());
    assert!(chain_b == chain_a, "chains differ");
    assert_eq!(b.applied_seq(), last);
    assert!(
        b.engine().snapshot() == a.engine().snapshot(),
        "final states differ"
    );
}
