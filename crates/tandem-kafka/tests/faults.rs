//! Fault test: the broker is killed and restarted (same SQLite file, same
//! port) while a producer streams appends and retries the ones that fail.
//! Afterwards every acknowledged append is present exactly once, at the seq
//! its append returned, in acknowledgement order; an append that returned
//! an error may be present or absent (its retry is a distinct attempt).

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::KafkaFixture;
use tandem_log::conformance::read_all;
use tandem_log::Log;

#[test]
fn broker_restart_during_appends() {
    const APPENDS: u64 = 300;
    let mut fx = KafkaFixture::new();
    let mut config = fx.broker.config(&fx.topic, 0);
    config.delivery_timeout = Duration::from_secs(15);
    config.request_timeout = Duration::from_secs(5);
    let log = tandem_kafka::KafkaLog::open(config).expect("open");
    let acked_count = AtomicUsize::new(0);
    let (acked, errors) = std::thread::scope(|s| {
        let log = &log;
        let acked_count = &acked_count;
        let writer = s.spawn(move || {
            // (seq, i, attempt) of each acknowledged append, in order.
            let mut acked: Vec<(u64, u64, u32)> = Vec::new();
            let mut errors = 0u32;
            let deadline = Instant::now() + Duration::from_secs(60);
            for i in 0..APPENDS {
                let mut attempt = 0u32;
                loop {
                    let p = format!("{i}:{attempt}");
                    match log.append(&[p.as_bytes()]) {
                        Ok(seq) => {
                            acked.push((seq, i, attempt));
                            acked_count.fetch_add(1, Ordering::Relaxed);
                            break;
                        }
                        Err(e) => {
                            assert!(Instant::now() < deadline, "still failing: {e}");
                            errors += 1;
                            attempt += 1;
                            std::thread::sleep(Duration::from_millis(50));
                        }
                    }
                }
            }
            (acked, errors)
        });
        while acked_count.load(Ordering::Relaxed) < 50 {
            assert!(!writer.is_finished(), "writer ended early");
            std::thread::sleep(Duration::from_millis(5));
        }
        fx.broker.restart(Duration::from_secs(1));
        assert!(!writer.is_finished(), "the restart came too late");
        writer.join().expect("writer")
    });
    assert!(
        acked_count.load(Ordering::Relaxed) as u64 == APPENDS,
        "every append eventually acknowledged"
    );
    eprintln!("appends that returned an error: {errors}");
    drop(log);
    let log = fx.open_kafka();
    let all = read_all(&log, 1);
    let mut seen: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for r in &all {
        let p = String::from_utf8(r.payload.clone()).expect("utf-8 payload");
        seen.entry(p).or_default().push(r.seq);
    }
    let mut prev = 0;
    for &(seq, i, attempt) in &acked {
        assert!(seq > prev, "acknowledged appends out of order");
        prev = seq;
        let p = format!("{i}:{attempt}");
        assert_eq!(seen.get(&p), Some(&vec![seq]), "append {p}");
    }
    // Nothing unexpected: every record is some attempt of some append.
    for p in seen.keys() {
        let (i, _) = p.split_once(':').expect("i:attempt");
        assert!(i.parse::<u64>().expect("i") < APPENDS);
    }
    assert_eq!(log.last_seq(), all.last().expect("records").seq);
}

/// With the broker down longer than the delivery timeout, an append fails
/// with a timeout error (never silence, never a made-up seq); once the
/// broker is back the same log appends again (with a new producer
/// session), and the failed batch, which never reached the broker, is not
/// in the log.
#[test]
fn append_times_out_while_broker_is_down() {
    let mut fx = KafkaFixture::new();
    let mut config = fx.broker.config(&fx.topic, 0);
    config.delivery_timeout = Duration::from_secs(2);
    config.request_timeout = Duration::from_secs(2);
    let log = tandem_kafka::KafkaLog::open(config).expect("open");
    let before = log.append(&[b"before"]).expect("append");
    fx.broker.kill();
    let t = Instant::now();
    match log.append(&[b"lost"]) {
        Err(tandem_log::LogError::Io { source, .. }) => {
            assert_eq!(source.kind(), std::io::ErrorKind::TimedOut, "{source}");
        }
        other => panic!("expected a timeout error, got {other:?}"),
    }
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "took {:?}",
        t.elapsed()
    );
    fx.broker.start_again();
    let deadline = Instant::now() + Duration::from_secs(30);
    let after = loop {
        match log.append(&[b"after"]) {
            Ok(s) => break s,
            Err(e) => assert!(Instant::now() < deadline, "no recovery: {e}"),
        }
    };
    assert!(after > before);
    let payloads: Vec<Vec<u8>> = read_all(&log, 1).into_iter().map(|r| r.payload).collect();
    // The broker was down for the whole failed append: it never got it.
    assert_eq!(payloads, [&b"before"[..], b"after"]);
}
