//! Tandem's order log on Kafka: [`KafkaLog`] is ONE partition of a Kafka
//! topic seen as a [`tandem_log::Log`], written through librdkafka (the
//! `rdkafka` crate, librdkafka built from its bundled source).
//!
//! - **One Kafka message per `append`.** The message value is the framed
//!   batch ([`frame`]), so a batch is atomic and contiguous whatever other
//!   threads or producer processes append at the same time: Kafka never
//!   splits or interleaves one message.
//! - **Seqs come from Kafka offsets** ([`seq`]): record `i` of the message at
//!   offset `o` has seq `(o + 1) << 16 | i`. Seqs are 1-based-ish (the first
//!   is 65536), strictly increasing, contiguous within a batch, and NOT
//!   contiguous across batches. At most [`seq::MAX_BATCH_RECORDS`] records
//!   per append.
//! - **Acknowledged means acknowledged by the broker**: the producer is
//!   idempotent with `acks=all` (no Kafka transactions), and `append` returns
//!   only after the delivery report; a delivery error or timeout is the
//!   caller's error.
//! - **Markets to partitions** by [`partition_for`], a stable hash that a test
//!   vector pins.
//!
//! Production topic and broker settings: `deploy/kafka/README.md` at the repository root.

#![forbid(unsafe_code)]

mod admin;
pub mod floor;
pub mod frame;
mod kafka_log;
pub mod seq;
pub mod tansu;

pub use admin::{
    create_topic, create_topic_with, production_topic_settings, RETENTION_MS_UNLIMITED,
};
pub use kafka_log::{
    is_secret_property, reserved_property, KafkaLog, KafkaLogConfig, RESERVED_PROPERTIES,
};

/// The partition of a topic with `partitions` partitions that carries
/// `market`: `xxh3_64(market's UTF-8 bytes, seed 0) % partitions`.
///
/// This mapping is part of the on-disk contract (every writer and reader of
/// a market must agree on it, across versions): it must never change. The
/// test `partition_for_is_pinned` holds fixed vectors.
///
/// # Panics
/// If `partitions` is 0 (a topic has at least one partition).
pub fn partition_for(market: &str, partitions: u32) -> u32 {
    assert!(partitions > 0, "a topic has at least one partition");
    let h = xxhash_rust::xxh3::xxh3_64(market.as_bytes());
    // The remainder is < partitions <= u32::MAX, so the cast is exact.
    (h % u64::from(partitions)) as u32
}

#[cfg(test)]
mod tests {
    use super::partition_for;

    /// Fixed markets to fixed partitions. If this fails, the mapping changed
    /// and existing topics would be read wrong: do not update the vector.
    #[test]
    fn partition_for_is_pinned() {
        // (market, xxh3_64, partition of 12, partition of 64)
        let vector: [(&str, u64, u32, u32); 6] = [
            ("BTC-USD", 0xdaab_9b98_c1b5_e947, 3, 7),
            ("ETH-USD", 0xa065_649b_5d38_e94d, 9, 13),
            ("SOL-USD", 0x2c20_45d9_e36b_8132, 2, 50),
            ("EUR/USD", 0x4c5c_469a_f605_55ed, 5, 45),
            // XXH3_64bits("") is the reference 2D06800538D394C2.
            ("", 0x2d06_8005_38d3_94c2, 10, 2),
            ("\u{fc}n\u{ef}code-\u{20ac}", 0x81ce_ae02_5657_1034, 8, 52),
        ];
        for (market, hash, p12, p64) in vector {
            assert_eq!(xxhash_rust::xxh3::xxh3_64(market.as_bytes()), hash);
            assert_eq!(partition_for(market, 1), 0, "{market}");
            assert_eq!(partition_for(market, 12), p12, "{market}");
            assert_eq!(partition_for(market, 64), p64, "{market}");
        }
    }

    #[test]
    #[should_panic(expected = "at least one partition")]
    fn zero_partitions_is_a_bug() {
        partition_for("BTC-USD", 0);
    }
}
