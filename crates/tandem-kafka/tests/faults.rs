//! Fault test: the broker is killed and restarted (same SQLite file, same
//! port) while a producer streams appends and retries the ones that fail.
//! Afterwards every acknowledged append is present exactly once, at the seq
//! its append returned, in acknowledgement order; an append that returned
//! an error may be present or absent (its retry is a distinct attempt).
//!
//! Lost acknowledgements: a proxy between producer and broker swallows some
//! produce responses and drops the connection. Tandem's idempotent producer
//! stores every acknowledged batch exactly once, in order; a plain producer
//! (no idempotence, retries on) duplicates such batches.

mod common;
mod proxy;

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::process::Child;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, SyncSender};
use std::time::{Duration, Instant};

use common::{KafkaFixture, TempDir};
use proxy::Proxy;
use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DeliveryResult, ProducerContext, ThreadedProducer};
use tandem_kafka::{create_topic, KafkaLog, KafkaLogConfig};
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

/// A topic created with the production settings keeps every record across
/// broker restarts. tansu runs its retention maintenance at every start:
/// with Kafka's `retention.ms=-1` ("no limit") it deleted every record of
/// the topic, so this test restarts the broker twice and reads the whole
/// log back each time.
#[test]
fn production_topic_keeps_its_records_across_broker_restarts() {
    let mut broker = common::Broker::start();
    let owned = tandem_kafka::production_topic_settings(1, 8 << 20);
    let settings: Vec<(&str, &str)> = owned.iter().map(|(k, v)| (*k, v.as_str())).collect();
    create_topic(
        &broker.bootstrap(),
        "kept",
        1,
        1,
        &settings,
        Duration::from_secs(10),
    )
    .expect("create topic");
    let mut expected: Vec<Vec<u8>> = Vec::new();
    for round in 0..2 {
        let log = broker.open("kept", 0);
        for i in 0..20 {
            let p = format!("{round}:{i}").into_bytes();
            log.append(&[&p]).expect("append");
            expected.push(p);
        }
        drop(log);
        broker.restart(Duration::from_millis(200));
        // The broker's maintenance runs at start; give it time to finish
        // before reading (it is what deleted the records).
        std::thread::sleep(Duration::from_secs(2));
        let log = broker.open("kept", 0);
        let payloads: Vec<Vec<u8>> = read_all(&log, 1).into_iter().map(|r| r.payload).collect();
        assert_eq!(
            payloads.len(),
            expected.len(),
            "records after restart {}",
            round + 1
        );
        assert_eq!(payloads, expected);
    }
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

/// A tansu broker that advertises a lossy [`Proxy`] in front of it, so
/// every client connection (after bootstrap) goes through the proxy.
struct ProxiedBroker {
    proxy: Proxy,
    child: Child,
    port: u16,
    _dir: TempDir,
}

impl ProxiedBroker {
    /// Starts the broker, and the proxy swallowing about `fraction` of
    /// produce responses once faults are turned on (they start off).
    fn start(fraction: f64, seed: u64) -> ProxiedBroker {
        let dir = TempDir::new("tansu-proxied");
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let proxy_port = listener.local_addr().expect("proxy addr").port();
        let mut last = String::new();
        for _ in 0..3 {
            let port = TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("free port")
                .port();
            match spawn_advertising(dir.path(), port, proxy_port) {
                Ok(child) => {
                    let upstream = SocketAddr::from(([127, 0, 0, 1], port));
                    let proxy = Proxy::start(listener, upstream, fraction, seed);
                    proxy.set_faults(false);
                    return ProxiedBroker {
                        proxy,
                        child,
                        port,
                        _dir: dir,
                    };
                }
                Err(e) => last = e,
            }
        }
        panic!("tansu broker did not start: {last}");
    }

    /// The proxy's address: what clients should bootstrap from.
    fn via_proxy(&self) -> String {
        self.proxy.addr().to_string()
    }

    /// The broker's own address. Metadata still names the proxy, so after
    /// bootstrap a client talks through it: reads happen with faults off.
    fn direct(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn config(&self, bootstrap: &str, topic: &str) -> KafkaLogConfig {
        let mut c = KafkaLogConfig::new(bootstrap, topic, 0);
        c.delivery_timeout = Duration::from_secs(15);
        c.request_timeout = Duration::from_secs(5);
        // The proxy drops connections often: reconnect quickly rather than
        // back off towards librdkafka's 10 s default ceiling.
        c.client_properties = fast_reconnect();
        c
    }
}

impl Drop for ProxiedBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn fast_reconnect() -> Vec<(String, String)> {
    [
        ("reconnect.backoff.ms", "10"),
        ("reconnect.backoff.max.ms", "100"),
        ("retry.backoff.ms", "20"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// Starts tansu listening on `port` but advertising `advertised` (the
/// proxy).
fn spawn_advertising(dir: &std::path::Path, port: u16, advertised: u16) -> Result<Child, String> {
    tandem_kafka::tansu::spawn(dir, port, advertised)
}

/// Batches appended in the lost-acknowledgement scenarios.
const LOSSY_BATCHES: u64 = 150;
/// Records per batch.
const LOSSY_RECORDS: usize = 2;
/// Share of produce responses the proxy swallows.
const LOSSY_FRACTION: f64 = 0.15;

/// Appends `LOSSY_BATCHES` numbered batches one after the other with
/// `append`, retrying a failed one as a client would (a new attempt has a
/// new payload `i:attempt:k`). Returns `(seq, i, attempt)` of each
/// acknowledged append and the number of failed attempts.
fn append_numbered(
    mut append: impl FnMut(&[&[u8]]) -> Result<u64, String>,
) -> (Vec<(u64, u64, u32)>, u32) {
    let mut acked = Vec::new();
    let mut errors = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    for i in 0..LOSSY_BATCHES {
        let mut attempt = 0u32;
        loop {
            let payloads: Vec<String> = (0..LOSSY_RECORDS)
                .map(|k| format!("{i}:{attempt}:{k}"))
                .collect();
            let records: Vec<&[u8]> = payloads.iter().map(|p| p.as_bytes()).collect();
            match append(&records) {
                Ok(seq) => {
                    acked.push((seq, i, attempt));
                    break;
                }
                Err(e) => {
                    assert!(Instant::now() < deadline, "still failing: {e}");
                    eprintln!("append {i}:{attempt} failed: {e}");
                    errors += 1;
                    attempt += 1;
                }
            }
        }
    }
    (acked, errors)
}

/// What the log holds, against what was acknowledged.
#[derive(Debug, Default)]
struct Audit {
    /// Stored copies of batches, beyond the first, of one attempt: the
    /// producer itself wrote a batch twice.
    producer_duplicates: usize,
    /// Of those, copies of acknowledged attempts.
    acked_duplicates: usize,
    /// Appends `i` stored by more than one attempt: a client retry of an
    /// attempt that failed but was stored (expected, counted apart).
    retry_duplicates: usize,
    /// Acknowledged attempts not in the log.
    missing: usize,
    /// Acknowledged attempts stored elsewhere than the seq their append
    /// returned, or out of acknowledgement order.
    misplaced: usize,
}

/// Reads the whole log and checks it against `acked` (in acknowledgement
/// order). Batches must be whole and contiguous.
fn audit(log: &KafkaLog, acked: &[(u64, u64, u32)]) -> Audit {
    let all = read_all(log, 1);
    // "i:attempt" -> seq of the first record of each stored copy.
    let mut copies: BTreeMap<(u64, u32), Vec<u64>> = BTreeMap::new();
    let mut k_expected = 0usize;
    let mut prev: Option<(u64, u32, u64)> = None;
    for r in &all {
        let p = String::from_utf8(r.payload.clone()).expect("utf-8 payload");
        let mut parts = p.split(':').map(|x| x.parse::<u64>().expect("number"));
        let (i, attempt, k) = (
            parts.next().expect("i"),
            u32::try_from(parts.next().expect("attempt")).expect("attempt"),
            usize::try_from(parts.next().expect("k")).expect("k"),
        );
        assert!(i < LOSSY_BATCHES, "unexpected record {p}");
        // Records of a batch are contiguous and whole.
        assert_eq!(k, k_expected, "record {p} out of its batch order");
        if k == 0 {
            copies.entry((i, attempt)).or_default().push(r.seq);
        } else {
            let (pi, pa, pseq) = prev.expect("batch head");
            assert_eq!((pi, pa, pseq + 1), (i, attempt, r.seq), "batch {p} split");
        }
        k_expected = (k + 1) % LOSSY_RECORDS;
        prev = Some((i, attempt, r.seq));
    }
    assert_eq!(k_expected, 0, "last batch cut short");
    let mut a = Audit::default();
    for c in copies.values() {
        a.producer_duplicates += c.len() - 1;
    }
    let mut attempts_stored: BTreeMap<u64, usize> = BTreeMap::new();
    for &(i, _) in copies.keys() {
        *attempts_stored.entry(i).or_default() += 1;
    }
    a.retry_duplicates = attempts_stored.values().filter(|&&n| n > 1).count();
    let mut last = 0;
    for &(seq, i, attempt) in acked {
        match copies.get(&(i, attempt)) {
            None => a.missing += 1,
            Some(c) => {
                a.acked_duplicates += c.len() - 1;
                if !c.contains(&seq) || seq <= last {
                    a.misplaced += 1;
                }
            }
        }
        last = seq;
    }
    a
}

/// Tandem's settings (idempotent producer, acks=all, one message per
/// batch): with acknowledgements lost and connections dropped, every
/// acknowledged batch is in the log exactly once, at its seq, in order.
#[test]
fn lost_acknowledgements_no_duplicates() {
    let b = ProxiedBroker::start(LOSSY_FRACTION, 7);
    create_topic(&b.direct(), "orders", 1, 1, &[], Duration::from_secs(10)).expect("topic");
    let log = KafkaLog::open(b.config(&b.via_proxy(), "orders")).expect("open");
    b.proxy.set_faults(true);
    let t = Instant::now();
    let (acked, errors) = append_numbered(|r| log.append(r).map_err(|e| e.to_string()));
    b.proxy.set_faults(false);
    let stats = b.proxy.stats();
    drop(log);
    let reader = KafkaLog::open(b.config(&b.direct(), "orders")).expect("open reader");
    let a = audit(&reader, &acked);
    eprintln!(
        "idempotent: {LOSSY_BATCHES} batches in {:?}, {stats:?}, failed appends {errors}, {a:?}",
        t.elapsed()
    );
    assert!(
        stats.swallowed >= 5,
        "the proxy lost too few acknowledgements to test anything: {stats:?}"
    );
    assert_eq!(a.missing, 0, "{a:?}");
    assert_eq!(a.acked_duplicates, 0, "{a:?}");
    assert_eq!(a.misplaced, 0, "{a:?}");
    // A stored copy of an attempt whose append failed is the retry's
    // business, never a second copy written by the producer.
    assert_eq!(a.producer_duplicates, 0, "{a:?}");
    assert_eq!(acked.len() as u64, LOSSY_BATCHES);
    // An acknowledgement that came back without an offset is resolved by
    // the batch token, so no append fails and no client retry can store a
    // batch twice: end to end, 0 duplicated, 0 missing, in order.
    assert_eq!(
        errors, 0,
        "appends failed although their batches were stored: {a:?}"
    );
    assert_eq!(a.retry_duplicates, 0, "{a:?}");
}

/// Delivery reports of the plain producer.
struct Reports;

impl ClientContext for Reports {}

impl ProducerContext for Reports {
    type DeliveryOpaque = Box<SyncSender<Result<i64, String>>>;

    fn delivery(&self, result: &DeliveryResult<'_>, tx: Self::DeliveryOpaque) {
        let _ = tx.send(match result {
            Ok(m) => Ok(m.offset()),
            Err((e, _)) => Err(e.to_string()),
        });
    }
}

/// For contrast, not a property of Tandem: the same scenario with a plain
/// producer (no idempotence, retries on) duplicates batches whose
/// acknowledgement was lost. Prints its duplicate rate; asserts only that
/// acknowledged batches are not missing.
#[test]
fn lost_acknowledgements_without_idempotence_duplicate() {
    let b = ProxiedBroker::start(LOSSY_FRACTION, 7);
    create_topic(&b.direct(), "orders", 1, 1, &[], Duration::from_secs(10)).expect("topic");
    let mut c = ClientConfig::new();
    for (k, v) in fast_reconnect() {
        c.set(k, v);
    }
    let producer: ThreadedProducer<Reports> = c
        .set("bootstrap.servers", b.via_proxy())
        .set("enable.idempotence", "false")
        .set("acks", "all")
        .set("retries", "1000")
        .set("max.in.flight.requests.per.connection", "1")
        .set("message.timeout.ms", "15000")
        .set("request.timeout.ms", "5000")
        .set("socket.timeout.ms", "5000")
        .set("linger.ms", "1")
        .create_with_context(Reports)
        .expect("producer");
    b.proxy.set_faults(true);
    let (acked, errors) = append_numbered(|records| {
        let value = tandem_kafka::frame::encode(records, [0; tandem_kafka::frame::TOKEN_BYTES]);
        let (tx, rx) = mpsc::sync_channel(1);
        producer
            .send(
                BaseRecord::<(), [u8], _>::with_opaque_to("orders", Box::new(tx))
                    .partition(0)
                    .payload(&value[..]),
            )
            .map_err(|(e, _)| e.to_string())?;
        let offset = rx
            .recv_timeout(Duration::from_secs(30))
            .map_err(|e| e.to_string())??;
        if offset < 0 {
            return Err("no offset".to_owned());
        }
        Ok(tandem_kafka::seq::seq_for(offset, 0))
    });
    b.proxy.set_faults(false);
    let stats = b.proxy.stats();
    drop(producer);
    let reader = KafkaLog::open(b.config(&b.direct(), "orders")).expect("open reader");
    let a = audit(&reader, &acked);
    eprintln!(
        "without idempotence: {stats:?}, failed appends {errors}, {a:?}: \
         {} of {LOSSY_BATCHES} batches ({:.1} %) duplicated by the producer, \
         {:.0} % of the {} lost acknowledgements",
        a.producer_duplicates,
        100.0 * a.producer_duplicates as f64 / LOSSY_BATCHES as f64,
        100.0 * a.producer_duplicates as f64 / stats.swallowed.max(1) as f64,
        stats.swallowed,
    );
    assert_eq!(a.missing, 0, "{a:?}");
}
