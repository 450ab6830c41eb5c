//! The shared log conformance suite (`tandem_log::conformance`) against
//! [`tandem_kafka::KafkaLog`] on a real Kafka-protocol broker (tansu on
//! loopback, one broker and topic per check).
//!
//! Kafka seqs strictly increase and are contiguous within a batch but not
//! across batches (`(offset + 1) << 16 | index`); the shared checks assert
//! only what the `Log` trait promises, so they run here unchanged. The
//! fixture tells them two Kafka-specific facts: one append is one Kafka
//! message, bounded by `max_message_bytes` (so the large-payload check sizes
//! its records to fit), and several `KafkaLog`s (several idempotent
//! producers, as several processes would be) may write one partition at
//! once (so the concurrency checks also append through a second one).

mod common;

use common::KafkaFixture;
use tandem_log::conformance::Fixture;
use tandem_log::Log;

/// Room for the batch framing (a few bytes per record) within one message.
const FRAMING_ALLOWANCE: usize = 1024;

struct Kafka(KafkaFixture);

impl Fixture for Kafka {
    fn open(&self) -> Box<dyn Log> {
        Box::new(self.0.open_kafka())
    }

    fn max_batch_payload_bytes(&self) -> usize {
        self.0.broker.config(&self.0.topic, 0).max_message_bytes - FRAMING_ALLOWANCE
    }

    fn concurrent_handles(&self) -> bool {
        true
    }
}

fn new_fixture() -> Box<dyn Fixture> {
    Box::new(Kafka(KafkaFixture::new()))
}

macro_rules! suite {
    ($($check:ident),* $(,)?) => {
        $(#[test] fn $check() { tandem_log::conformance::$check(&new_fixture); })*
    };
}

suite!(
    empty_log,
    ordering,
    durability_across_reopen,
    read_from_any_seq,
    follow_the_tail,
    batch_atomicity,
    large_and_empty_payloads,
    concurrent_appenders,
    truncate_before,
);
