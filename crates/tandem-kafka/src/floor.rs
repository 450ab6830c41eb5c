//! A broker's own floor, measured in the same run as a load on Tandem (the
//! demo's, `tandem-bench node --kafka`): a
//! plain librdkafka producer and consumer on a topic of their own, through
//! the same broker link the nodes use, with the nodes' client settings
//! (idempotent producer, `acks=all`, `linger.ms` 1; consumer
//! `fetch.wait.max.ms` as the nodes'). Each message carries the moment it was sent; the
//! consumer's receipt minus that moment is the broker's produce→consume
//! time. A node answers an order only after its replica has read the
//! append back from the log, so this time is a floor under every answer.
//! What a client measures above it is Tandem's share (plus the edge's
//! link and the HTTP hops).

use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
/// The floor's figures (milliseconds).
#[derive(Debug, Clone)]
pub struct Floor {
    /// Messages sent and received back.
    pub messages: usize,
    /// Messages per second asked for.
    pub rate: f64,
    /// Produce → consume, as the consumer saw it.
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// The topic the floor uses unless told otherwise: not the order log.
pub const TOPIC: &str = "broker-floor";

/// Sends `rate` messages a second for `run` to `brokers` on `topic` (one
/// partition, created if missing) and reads them back. Blocking: call it
/// on a thread of its own. Errors say which step failed.
pub fn measure(
    brokers: &str,
    topic: &str,
    rate: f64,
    run: Duration,
    fetch_wait_ms: u64,
) -> Result<Floor, String> {
    let settings = crate::production_topic_settings(1, 1 << 20);
    let settings: Vec<(&str, &str)> = settings.iter().map(|(k, v)| (*k, v.as_str())).collect();
    crate::create_topic(brokers, topic, 1, 1, &settings, Duration::from_secs(30))
        .map_err(|e| format!("create the floor's topic: {e}"))?;
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "1")
        .set("compression.type", "none")
        .create()
        .map_err(|e| format!("the floor's producer: {e}"))?;
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "tandem-floor")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .set("fetch.wait.max.ms", fetch_wait_ms.to_string())
        .create()
        .map_err(|e| format!("the floor's consumer: {e}"))?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning)
        .and_then(|()| consumer.assign(&tpl))
        .map_err(|e| format!("assign the floor's partition: {e}"))?;

    // Every message of this run carries its tag, so a topic used before
    // (another run's stamps from another origin) does not mix in: the
    // reader reads from the beginning and skips what is not this run's.
    let tag = run_tag();
    // Connections, metadata and the producer's id come first: one
    // message sent and read back before the clock starts.
    warm_up(&producer, &consumer, topic, tag)?;

    let origin = Instant::now();
    let total = (rate * run.as_secs_f64()).ceil().max(1.0) as usize;
    let reader = {
        std::thread::spawn(move || -> Vec<f64> {
            let mut lat = Vec::with_capacity(total);
            let deadline = Instant::now() + run + Duration::from_secs(30);
            while lat.len() < total && Instant::now() < deadline {
                if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
                    let Some(sent) = m.payload().and_then(|p| stamp_of(p, tag)) else {
                        continue;
                    };
                    let now = origin.elapsed();
                    lat.push(now.saturating_sub(sent).as_secs_f64() * 1000.0);
                }
            }
            lat
        })
    };
    let gap = Duration::from_secs_f64(1.0 / rate);
    for i in 0..total {
        // Open loop: each message at its own time, late or not.
        let at = gap * i as u32;
        let now = origin.elapsed();
        if at > now {
            std::thread::sleep(at - now);
        }
        let stamp = timed_payload(tag, origin.elapsed());
        let mut record = BaseRecord::<(), [u8]>::to(topic).payload(&stamp[..]);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((_, r)) => {
                    producer.poll(Duration::from_millis(1));
                    record = r;
                }
            }
        }
        producer.poll(Duration::ZERO);
    }
    producer
        .flush(Duration::from_secs(30))
        .map_err(|e| format!("flush the floor's producer: {e}"))?;
    let mut lat = reader
        .join()
        .map_err(|_| "the floor's reader panicked".to_string())?;
    if lat.len() < total {
        return Err(format!(
            "the floor's consumer read {} of {} messages back",
            lat.len(),
            total
        ));
    }
    lat.sort_by(f64::total_cmp);
    let q = |p: f64| lat[((lat.len() - 1) as f64 * p).round() as usize];
    Ok(Floor {
        messages: lat.len(),
        rate,
        p50_ms: q(0.50),
        p99_ms: q(0.99),
        max_ms: *lat.last().unwrap_or(&0.0),
    })
}

/// A tag for one run's messages: this process and the moment, which no
/// other run on the same topic shares in practice.
fn run_tag() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nanos ^ (u64::from(std::process::id()) << 48)
}

/// A timed message: the run's tag, then the moment it was sent (ns since
/// the run's origin), both little-endian.
fn timed_payload(tag: u64, sent: Duration) -> [u8; 16] {
    let mut p = [0u8; 16];
    p[..8].copy_from_slice(&tag.to_le_bytes());
    p[8..].copy_from_slice(&(sent.as_nanos() as u64).to_le_bytes());
    p
}

/// The send moment of a timed message of the run tagged `tag`; `None`
/// for anything else (another run's, a warm-up, foreign bytes).
fn stamp_of(payload: &[u8], tag: u64) -> Option<Duration> {
    let p = <&[u8; 16]>::try_from(payload).ok()?;
    let (t, sent) = p.split_at(8);
    (t == tag.to_le_bytes())
        .then(|| Duration::from_nanos(u64::from_le_bytes(sent.try_into().unwrap_or([0; 8]))))
}

/// Sends one warm-up message (not 16 bytes long, so the timed reader
/// skips it) and waits until the consumer has read it.
fn warm_up(
    producer: &BaseProducer,
    consumer: &BaseConsumer,
    topic: &str,
    tag: u64,
) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut hello = b"warm-up ".to_vec();
    hello.extend_from_slice(&tag.to_le_bytes());
    producer
        .send(BaseRecord::<(), [u8]>::to(topic).payload(&hello[..]))
        .map_err(|(e, _)| format!("the floor's warm-up message: {e}"))?;
    producer
        .flush(Duration::from_secs(30))
        .map_err(|e| format!("flush the floor's warm-up message: {e}"))?;
    while Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            if m.payload() == Some(&hello[..]) {
                return Ok(());
            }
        }
    }
    Err("the floor's consumer did not read its warm-up message in 30 s".into())
}

#[cfg(test)]
mod tests {
    use super::{stamp_of, timed_payload};
    use std::time::Duration;

    #[test]
    fn only_this_runs_stamps_are_read() {
        let sent = Duration::from_micros(1_234_567);
        let p = timed_payload(7, sent);
        assert_eq!(stamp_of(&p, 7), Some(sent));
        assert_eq!(stamp_of(&p, 8), None, "another run's message");
        assert_eq!(stamp_of(&p[..8], 7), None, "the old 8-byte stamp");
        assert_eq!(stamp_of(b"warm-up \x07\0\0\0\0\0\0\0", 7), None);
    }
}
