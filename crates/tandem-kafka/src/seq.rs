//! How a seq names a record: `seq = (offset + 1) << 16 | index`, where
//! `offset` is the Kafka offset of the message holding the record's batch
//! and `index` its position in that batch.
//!
//! So seqs strictly increase with offsets and within a message, a batch's
//! seqs are consecutive, and there is a gap between batches. The `+ 1`
//! keeps seq 0 free to mean "nothing" (`last_seq` of an empty log). Any seq
//! maps back to the one message that would hold it, which is how
//! `read_from` seeks without an index.

/// Bits of a seq that hold the index within a batch.
pub const INDEX_BITS: u32 = 16;

/// Most records one `append` may carry (indexes 0..=65535).
pub const MAX_BATCH_RECORDS: usize = 1 << INDEX_BITS;

/// The seq of record `index` of the message at Kafka `offset`.
///
/// # Panics
/// If `offset` is negative or `index` does not fit in [`INDEX_BITS`]: both
/// come from the broker and the frame decoder, which check them first.
pub fn seq_for(offset: i64, index: u32) -> u64 {
    let offset = u64::try_from(offset).expect("Kafka offsets are not negative");
    assert!(
        (index as usize) < MAX_BATCH_RECORDS,
        "index {index} too big"
    );
    ((offset + 1) << INDEX_BITS) | u64::from(index)
}

/// The Kafka offset of the message that holds (or would hold) `seq`, and
/// the index within it. Seqs below `1 << 16` (which never exist) map to
/// offset 0, index 0: the first message.
pub fn split_seq(seq: u64) -> (i64, u32) {
    let message = seq >> INDEX_BITS;
    if message == 0 {
        return (0, 0);
    }
    // `message <= u64::MAX >> 16`, well inside i64.
    ((message - 1) as i64, (seq & 0xFFFF) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_order() {
        assert_eq!(seq_for(0, 0), 65_536);
        assert_eq!(seq_for(0, 65_535), 131_071);
        assert_eq!(seq_for(1, 0), 131_072);
        for (o, i) in [(0, 0), (0, 7), (5, 65_535), (1 << 40, 3)] {
            assert_eq!(split_seq(seq_for(o, i)), (o, i));
        }
        assert!(seq_for(3, 65_535) < seq_for(4, 0));
        assert_eq!(split_seq(0), (0, 0));
        assert_eq!(split_seq(1), (0, 0));
        assert_eq!(split_seq(65_535), (0, 0));
    }

    #[test]
    #[should_panic(expected = "too big")]
    fn index_must_fit() {
        seq_for(0, 65_536);
    }
}
