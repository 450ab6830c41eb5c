//! `diverge::first_difference` over a file log (and a log whose seqs have
//! gaps, as Kafka's do): an order flow in which one account goes past a
//! per-account open-order limit at a known command, replayed under no limit
//! (stable) and under that limit (canary).

use std::sync::Mutex;
use std::time::Duration;

use serde_json::Value;
use tandem_core::{Config, Engine};
use tandem_demo::diverge::{first_difference, DivergeError, FirstDifference};
use tandem_log::conformance::TempDir;
use tandem_log::{FileLog, FileLogConfig, FsyncPolicy, Log, LogError, Record};

/// The canary's open-order limit per account.
const LIMIT: u32 = 3;

/// The order flow, and where in it the account `a1` first asks for more
/// than `LIMIT` resting orders.
struct Flow {
    records: Vec<Vec<u8>>,
    /// Index in `records` of that place (0-based).
    over_limit: usize,
    /// Its order id.
    over_limit_id: String,
}

fn place(id: &str, account: &str, side: &str, price: &str, qty: u32, tif: &str) -> Vec<u8> {
    format!(
        r#"{{"op":"place","market":"BTC-USD","id":"{id}","account":"{account}","side":"{side}","price":"{price}","qty":"{qty}","tif":"{tif}"}}"#
    )
    .into_bytes()
}

fn cancel(id: &str, account: &str) -> Vec<u8> {
    format!(r#"{{"op":"cancel","market":"BTC-USD","id":"{id}","account":"{account}"}}"#)
        .into_bytes()
}

/// Rounds of four commands from accounts that never hold more than one
/// resting order (a0 rests a sell that a3 takes at once with an ioc buy;
/// a2 rests a buy and cancels it), and, at some rounds, `a1` resting
/// buys below every ask and cancelling one of them. The builder counts
/// `a1`'s resting orders and notes the first place that would take it
/// past `LIMIT`. The flow goes on well after that, and is long enough to
/// span several read batches.
fn flow() -> Flow {
    // Round -> what a1 does then.
    let a1_plan: [(usize, Option<&str>); 6] = [
        (100, None),
        (900, None),
        (1500, None),
        (2000, Some("a1-o2")),
        (2500, None),
        (3000, None),
    ];
    let mut records = Vec::new();
    let mut a1_live: Vec<String> = Vec::new();
    let mut a1_next = 1;
    let mut over: Option<(usize, String)> = None;
    for round in 0..3500 {
        records.push(place(&format!("s{round}"), "a0", "sell", "102", 2, "gtc"));
        records.push(place(&format!("b{round}"), "a3", "buy", "102", 2, "ioc"));
        records.push(place(&format!("q{round}"), "a2", "buy", "99", 1, "gtc"));
        records.push(cancel(&format!("q{round}"), "a2"));
        if let Some((_, action)) = a1_plan.iter().find(|(r, _)| *r == round) {
            match action {
                Some(id) => {
                    records.push(cancel(id, "a1"));
                    a1_live.retain(|live| live != id);
                }
                None => {
                    let id = format!("a1-o{a1_next}");
                    a1_next += 1;
                    let price = format!("100.{round}");
                    records.push(place(&id, "a1", "buy", &price, 1, "gtc"));
                    if a1_live.len() as u32 >= LIMIT && over.is_none() {
                        over = Some((records.len() - 1, id.clone()));
                    }
                    a1_live.push(id);
                }
            }
        }
    }
    let (over_limit, over_limit_id) = over.expect("the flow goes past the limit");
    Flow {
        records,
        over_limit,
        over_limit_id,
    }
}

fn open_log(dir: &TempDir) -> FileLog {
    let cfg = FileLogConfig {
        fsync: FsyncPolicy::Never,
        ..FileLogConfig::default()
    };
    FileLog::open(dir.path().join("log"), cfg).expect("open log")
}

/// Appends `records` in batches of 100; returns the seq of each.
fn append_all(log: &dyn Log, records: &[Vec<u8>]) -> Vec<u64> {
    let mut seqs = Vec::with_capacity(records.len());
    for batch in records.chunks(100) {
        let refs: Vec<&[u8]> = batch.iter().map(Vec::as_slice).collect();
        let first = log.append(&refs).expect("append");
        seqs.extend((0..batch.len() as u64).map(|k| first + k));
    }
    seqs
}

fn stable() -> Config {
    Config::default()
}

fn canary() -> Config {
    Config {
        max_open_per_account: LIMIT,
        ..Config::default()
    }
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// Checks `found` is the over-limit place at `seq`: the command itself, an
/// `accepted` event on the stable side and a `limit` rejection on the
/// canary side.
fn check_difference(found: &FirstDifference, seq: u64, id: &str) {
    assert_eq!(found.seq, seq);
    let command = json(&found.command);
    assert_eq!(command["op"], "place");
    assert_eq!(command["account"], "a1");
    assert_eq!(command["id"], id);

    let stable_events = json(&found.stable_events);
    let stable_events = stable_events.as_array().expect("an array");
    assert_eq!(stable_events.len(), 1, "{}", found.stable_events);
    assert_eq!(stable_events[0]["event"], "accepted");
    assert_eq!(stable_events[0]["id"], id);
    assert_eq!(stable_events[0]["seq"], seq);

    let canary_events = json(&found.canary_events);
    let canary_events = canary_events.as_array().expect("an array");
    assert_eq!(canary_events.len(), 1, "{}", found.canary_events);
    assert_eq!(canary_events[0]["event"], "rejected");
    assert_eq!(canary_events[0]["reason"], "limit");
    assert_eq!(canary_events[0]["id"], id);
    assert_eq!(canary_events[0]["seq"], seq);
}

/// Each engine's output hash chain after every command of `log`, by seq.
fn chains(log: &dyn Log, cfg: Config) -> Vec<(u64, u128)> {
    let mut engine = Engine::new(cfg);
    let mut events = Vec::new();
    let mut out = Vec::new();
    loop {
        let records = log.read_from(engine.seq() + 1, 1000).expect("read");
        if records.is_empty() {
            return out;
        }
        for r in records {
            events.clear();
            engine.apply(
                r.seq,
                &tandem_codec::decode_command(&r.payload),
                &mut events,
            );
            out.push((r.seq, engine.chain()));
        }
    }
}

#[test]
fn finds_the_command_past_the_per_account_limit() {
    let dir = TempDir::new("diverge-limit");
    let log = open_log(&dir);
    let flow = flow();
    let seqs = append_all(&log, &flow.records);
    let seq = seqs[flow.over_limit];

    let found = first_difference(&log, stable(), canary(), None)
        .expect("compared")
        .expect("a difference");
    check_difference(&found, seq, &flow.over_limit_id);

    // The seq is where the two output hash chains part.
    let (s, c) = (chains(&log, stable()), chains(&log, canary()));
    assert_eq!(s.len(), flow.records.len());
    for ((seq_s, chain_s), (seq_c, chain_c)) in s.iter().zip(&c) {
        assert_eq!(seq_s, seq_c);
        if *seq_s < seq {
            assert_eq!(
                chain_s, chain_c,
                "chains differ at seq {seq_s}, before {seq}"
            );
        } else if *seq_s == seq {
            assert_ne!(chain_s, chain_c, "chains agree at seq {seq}");
        }
    }
}

#[test]
fn equal_outputs_give_none() {
    let dir = TempDir::new("diverge-equal");
    let log = open_log(&dir);
    let flow = flow();
    append_all(&log, &flow.records);

    assert!(first_difference(&log, canary(), canary(), None)
        .expect("compared")
        .is_none());
    // Different configurations whose outputs agree: a limit never reached,
    // another hash seed.
    let roomy = Config {
        max_open_per_account: LIMIT + 10,
        hash_seed: 7,
        ..Config::default()
    };
    assert!(first_difference(&log, stable(), roomy, None)
        .expect("compared")
        .is_none());
}

#[test]
fn up_to_seq_stops_the_comparison() {
    let dir = TempDir::new("diverge-up-to");
    let log = open_log(&dir);
    let flow = flow();
    let seqs = append_all(&log, &flow.records);
    let seq = seqs[flow.over_limit];

    assert!(first_difference(&log, stable(), canary(), Some(seq - 1))
        .expect("compared")
        .is_none());
    let found = first_difference(&log, stable(), canary(), Some(seq))
        .expect("compared")
        .expect("a difference at the bound itself");
    check_difference(&found, seq, &flow.over_limit_id);
    // Beyond the log's end is the log's end.
    assert!(first_difference(&log, stable(), canary(), Some(u64::MAX))
        .expect("compared")
        .is_some());
}

#[test]
fn a_record_that_is_not_a_command_is_an_error_naming_its_seq() {
    let dir = TempDir::new("diverge-corrupt");
    let log = open_log(&dir);
    let flow = flow();
    append_all(&log, &flow.records[..50]);
    let garbage: &[u8] = &[0xff, 0x00, b'{', 0x9c, b'"', 0x01];
    let bad = log.append(&[garbage]).expect("append garbage");
    append_all(&log, &flow.records[50..100]);

    match first_difference(&log, stable(), canary(), None) {
        Err(e @ DivergeError::Undecodable { seq, .. }) => {
            assert_eq!(seq, bad);
            assert!(
                e.to_string().contains(&format!("seq {bad}")),
                "the message names the seq: {e}"
            );
        }
        other => panic!("expected an undecodable record at seq {bad}, got {other:?}"),
    }
    // A record that is JSON but not a command is refused the same way.
    let dir = TempDir::new("diverge-not-command");
    let log = open_log(&dir);
    append_all(&log, &flow.records[..10]);
    let bad = log
        .append(&[br#"{"op":"place","market":"BTC-USD"}"#])
        .expect("append");
    assert!(matches!(
        first_difference(&log, stable(), stable(), None),
        Err(DivergeError::Undecodable { seq, .. }) if seq == bad
    ));
    // Before it, the log compares.
    assert!(first_difference(&log, stable(), stable(), Some(bad - 1))
        .expect("compared")
        .is_none());
}

/// An in-memory log whose seqs have gaps as a Kafka log's do: records come
/// in messages of `per_message`, and record `k` of message `m` (0-based)
/// has seq `(m + 1) << 16 | k`.
struct GappyLog {
    records: Mutex<Vec<Record>>,
    per_message: usize,
}

impl GappyLog {
    fn new(records: &[Vec<u8>], per_message: usize) -> GappyLog {
        let records = records
            .iter()
            .enumerate()
            .map(|(i, payload)| Record {
                seq: ((i / per_message) as u64 + 1) << 16 | (i % per_message) as u64,
                payload: payload.clone(),
            })
            .collect();
        GappyLog {
            records: Mutex::new(records),
            per_message,
        }
    }
}

impl Log for GappyLog {
    fn append(&self, records: &[&[u8]]) -> Result<u64, LogError> {
        let mut all = self.records.lock().unwrap();
        let message = all.last().map_or(0, |r| r.seq >> 16);
        let first = (message + 1) << 16;
        for (k, payload) in records.iter().enumerate() {
            all.push(Record {
                seq: first | k as u64,
                payload: payload.to_vec(),
            });
        }
        Ok(first)
    }

    fn read_from(&self, from: u64, max: usize) -> Result<Vec<Record>, LogError> {
        let all = self.records.lock().unwrap();
        Ok(all
            .iter()
            .filter(|r| r.seq >= from)
            .take(max)
            .cloned()
            .collect())
    }

    fn wait_for(&self, _after: u64, _timeout: Duration) -> Result<u64, LogError> {
        Ok(self.last_seq())
    }

    fn first_seq(&self) -> u64 {
        1
    }

    fn last_seq(&self) -> u64 {
        self.records.lock().unwrap().last().map_or(0, |r| r.seq)
    }

    fn truncate_before(&self, _seq: u64) -> Result<(), LogError> {
        Ok(())
    }

    fn identity(&self) -> String {
        format!("gappy:{}", self.per_message)
    }
}

#[test]
fn seqs_with_gaps_are_followed_as_the_log_gives_them() {
    let flow = flow();
    let log = GappyLog::new(&flow.records, 7);
    let seq = log.records.lock().unwrap()[flow.over_limit].seq;
    assert_ne!(
        seq,
        flow.over_limit as u64 + 1,
        "the test needs a seq that is not the record's position"
    );

    let found = first_difference(&log, stable(), canary(), None)
        .expect("compared")
        .expect("a difference");
    check_difference(&found, seq, &flow.over_limit_id);
    assert!(first_difference(&log, stable(), canary(), Some(seq - 1))
        .expect("compared")
        .is_none());
}
