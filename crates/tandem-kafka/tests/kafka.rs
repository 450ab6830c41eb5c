//! Checks specific to the Kafka backend: the seq scheme at the Kafka level,
//! batch limits, partition independence, refusal of foreign or damaged
//! messages, and opening a topic or partition that does not exist.

mod common;

use std::time::Duration;

use common::{Broker, KafkaFixture};
use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use tandem_kafka::seq::{seq_for, MAX_BATCH_RECORDS};
use tandem_kafka::KafkaLog;
use tandem_log::conformance::read_all;
use tandem_log::{Log, LogError};

/// Record `i` of the message at offset `o` is seq `(o + 1) << 16 | i`.
#[test]
fn seqs_follow_offsets() {
    let fx = KafkaFixture::new();
    let log = fx.open_kafka();
    assert_eq!(log.append(&[b"a"]).unwrap(), seq_for(0, 0));
    assert_eq!(log.append(&[b"b", b"c"]).unwrap(), seq_for(1, 0));
    assert_eq!(log.last_seq(), seq_for(1, 1));
    assert_eq!(log.append(&[b"d"]).unwrap(), seq_for(2, 0));
    let seqs: Vec<u64> = read_all(&log, 1).iter().map(|r| r.seq).collect();
    assert_eq!(seqs, [65_536, 131_072, 131_073, 196_608]);
}

/// An append takes at most 65536 records and `max_message_bytes`; a full
/// batch of 65536 gets indexes 0..=65535 and the next append a new message.
#[test]
fn batch_limits() {
    let fx = KafkaFixture::new();
    let mut config = fx.broker.config(&fx.topic, 0);
    config.max_message_bytes = 400_000;
    let log = KafkaLog::open(config).unwrap();
    let too_many = vec![&b""[..]; MAX_BATCH_RECORDS + 1];
    assert!(matches!(
        log.append(&too_many),
        Err(LogError::InvalidConfig(_))
    ));
    let big = vec![0u8; 400_000];
    assert!(matches!(
        log.append(&[&big]),
        Err(LogError::BatchTooLarge { max: 400_000, .. })
    ));
    assert_eq!(log.last_seq(), 0, "a refused append wrote nothing");
    let full = vec![&b"f"[..]; MAX_BATCH_RECORDS];
    let first = log.append(&full).unwrap();
    assert_eq!(first, seq_for(0, 0));
    assert_eq!(log.last_seq(), seq_for(0, 65_535));
    assert_eq!(log.append(&[b"next"]).unwrap(), seq_for(1, 0));
    let tail = log.read_from(seq_for(0, 65_534), 10).unwrap();
    let seqs: Vec<u64> = tail.iter().map(|r| r.seq).collect();
    assert_eq!(
        seqs,
        [seq_for(0, 65_534), seq_for(0, 65_535), seq_for(1, 0)]
    );
    assert_eq!(read_all(&log, 1).len(), MAX_BATCH_RECORDS + 1);
}

/// Logs over different partitions of one topic do not see each other.
#[test]
fn partitions_are_independent() {
    let broker = Broker::start();
    broker.create_topic("markets", 3);
    let p0 = broker.open("markets", 0);
    let p2 = broker.open("markets", 2);
    let a = p0.append(&[b"zero"]).unwrap();
    let b = p2.append(&[b"two-a", b"two-b"]).unwrap();
    assert_eq!((a, b), (seq_for(0, 0), seq_for(0, 0)));
    let r0 = read_all(&p0, 1);
    let r2 = read_all(&p2, 1);
    assert_eq!(r0.len(), 1);
    assert_eq!(r0[0].payload, b"zero");
    assert_eq!(r2.len(), 2);
    assert_eq!(r2[1].payload, b"two-b");
    assert_eq!(broker.open("markets", 1).last_seq(), 0);
}

/// A message that is not a framed batch is `Corrupt`, never skipped or
/// guessed at; messages before it still read.
#[test]
fn foreign_message_is_corrupt() {
    let fx = KafkaFixture::new();
    let log = fx.open_kafka();
    let good = log.append(&[b"good"]).unwrap();
    let raw: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", fx.broker.bootstrap())
        .create()
        .unwrap();
    raw.send(
        BaseRecord::<(), [u8]>::to(&fx.topic)
            .partition(0)
            .payload(&b"\x07not a batch"[..]),
    )
    .map_err(|(e, _)| e)
    .unwrap();
    raw.flush(Duration::from_secs(10)).unwrap();
    assert_eq!(log.read_from(good, 1).unwrap()[0].payload, b"good");
    // Read on as a follower does (a short page is not the tail): the
    // next page is the error, never a record past the foreign message.
    let mut next = good;
    for _ in 0..3 {
        match log.read_from(next, 10) {
            Ok(page) => {
                assert_eq!(page.len(), 1, "only the good record: {page:?}");
                assert_eq!(page[0].payload, b"good");
                next = page[0].seq + 1;
            }
            Err(LogError::Corrupt { offset: 1, .. }) => return,
            Err(other) => panic!("expected Corrupt at offset 1, got {other:?}"),
        }
    }
    panic!("the foreign message at offset 1 was never reported");
}

/// Opening a missing topic or partition fails instead of making a log.
#[test]
fn open_refuses_missing_topic_or_partition() {
    let fx = KafkaFixture::new();
    let mut missing_partition = fx.broker.config(&fx.topic, 0);
    missing_partition.partition = 5;
    let err = KafkaLog::open(missing_partition).unwrap_err();
    assert!(matches!(err, LogError::InvalidConfig(_)), "{err}");
    let mut missing_topic = fx.broker.config("no-such-topic", 0);
    missing_topic.request_timeout = Duration::from_secs(3);
    assert!(KafkaLog::open(missing_topic).is_err());
}

/// A log reads its own acknowledged appends back from memory (the broker
/// holds exactly those bytes at those offsets): with the broker down, its
/// own newest append still reads, while a message another writer appended
/// (never seen here) cannot be read without the broker. Interleaved with
/// another writer's messages, a reader that is served its own appends
/// from memory still reads every message in order.
#[test]
fn own_appends_read_back_without_a_fetch_and_others_interleave_in_order() {
    let mut broker = Broker::start();
    broker.create_topic("own", 1);
    let a = broker.open("own", 0);
    let b = broker.open("own", 0);
    let mut expect = Vec::new();
    for i in 0..20u32 {
        let (log, who) = if i % 3 == 0 { (&b, "b") } else { (&a, "a") };
        let body = format!("{who}-{i}");
        log.append(&[body.as_bytes(), b"second"]).unwrap();
        expect.push(body);
    }
    // `a` reads the whole log: its own messages from memory, b's fetched.
    let got: Vec<String> = read_all(&a, 1)
        .into_iter()
        .filter(|r| r.payload != b"second")
        .map(|r| String::from_utf8(r.payload).unwrap())
        .collect();
    assert_eq!(got, expect);

    let mine = a.append(&[b"mine"]).unwrap();
    let theirs = b.append(&[b"theirs"]).unwrap();
    broker.kill();
    let page = a
        .read_from(mine, 1)
        .expect("own append read with the broker down");
    assert_eq!((page[0].seq, &page[0].payload[..]), (mine, &b"mine"[..]));
    // `a` never saw b's newest message: it needs the broker.
    assert!(
        a.read_from(theirs, 1).is_err(),
        "another writer's message read with the broker down"
    );
}

/// `read_known` (a follower's poll) reads what the consumer has fetched,
/// in order and equal to `read_from`'s pages, and never asks the broker:
/// with the broker down it still answers (empty past what was fetched)
/// where `read_from` at the tail must fail.
#[test]
fn read_known_follows_without_asking_the_broker() {
    let mut broker = Broker::start();
    broker.create_topic("known", 1);
    let writer = broker.open("known", 0);
    let follower = broker.open("known", 0);
    let mut written = Vec::new();
    for i in 0..30u32 {
        let body = format!("r{i}");
        let seq = writer.append(&[body.as_bytes()]).unwrap();
        written.push((seq, body.into_bytes()));
    }
    // Follow as a replica does: a page, and a short sleep when empty.
    let mut got = Vec::new();
    let mut next = 1;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while got.len() < written.len() {
        assert!(
            std::time::Instant::now() < deadline,
            "read_known stalled at {next}: {} of {}",
            got.len(),
            written.len()
        );
        let page = follower.read_known(next, 7).unwrap();
        assert!(page.len() <= 7);
        match page.last() {
            Some(r) => next = r.seq + 1,
            None => std::thread::sleep(Duration::from_millis(2)),
        }
        got.extend(page.into_iter().map(|r| (r.seq, r.payload)));
    }
    assert_eq!(got, written);
    // The same pages as read_from.
    let again: Vec<(u64, Vec<u8>)> = read_all(&follower, 1)
        .into_iter()
        .map(|r| (r.seq, r.payload))
        .collect();
    assert_eq!(again, written);

    broker.kill();
    // Past the tail with the broker gone: read_known answers from what the
    // client holds (nothing), read_from has to ask and cannot.
    assert_eq!(follower.read_known(next, 10).unwrap(), Vec::new());
    assert!(
        follower.read_from(next, 10).is_err(),
        "read_from at the tail answered with the broker down"
    );
}

/// The broker floor (`tandem_kafka::floor`) reads back exactly the
/// messages its run sent, even on a topic that already holds another
/// run's warm-up and timed messages and foreign bytes of the lengths a
/// timed message has (before the run tag, the second run's reader stopped
/// at the first run's warm-up and read its stamps: p50 0 ms, which this
/// test caught), and its figures are ordered and plausible.
#[test]
fn the_broker_floor_reads_only_its_own_runs_messages() {
    let broker = Broker::start();
    let topic = "floor-reused";
    // 40 messages a second for half a second: 20 timed messages a run.
    let run = || {
        tandem_kafka::floor::measure(
            &broker.bootstrap(),
            topic,
            40.0,
            Duration::from_millis(500),
            2,
        )
    };
    let first = run().expect("first floor run");
    assert_eq!(first.messages, 20);
    // Foreign messages of every length the reader once took.
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .create()
        .expect("producer");
    for len in [8usize, 16] {
        for _ in 0..30 {
            producer
                .send(BaseRecord::<(), [u8]>::to(topic).payload(&vec![0xff; len][..]))
                .expect("send a foreign message");
        }
    }
    producer.flush(Duration::from_secs(10)).expect("flush");
    let second = run().expect("second floor run");
    assert_eq!(second.messages, 20, "only the second run's own messages");
    for f in [&first, &second] {
        assert!(
            0.0 < f.p50_ms && f.p50_ms <= f.p99_ms && f.p99_ms <= f.max_ms,
            "{f:?}"
        );
        // A foreign stamp would read as sent 0 or 2^64 ns after the
        // origin: a latency of 0 or of the whole run.
        assert!(f.max_ms < 10_000.0, "{f:?}");
    }
}
