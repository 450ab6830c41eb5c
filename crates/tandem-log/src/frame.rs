//! The on-disk frame of one record:
//! `[len u32 LE][crc32c u32 LE over len ‖ seq ‖ payload][seq u64 LE][payload]`.
//! The CRC covers the length word too, flag bit included, so a flipped
//! length or flag is caught like any other damage.
//!
//! The top bit of `len` is the *batch-continues* flag: it is set on every
//! record of an append batch except the last, so recovery can tell a whole
//! batch from a torn one and drop the torn one entirely (batch atomicity
//! across a crash). The payload length is the low 31 bits.

/// Bytes before the payload.
pub(crate) const HEADER_BYTES: usize = 16;

/// Bit of the `len` field that says "more records of this batch follow".
const CONTINUES: u32 = 1 << 31;

/// Hard cap on one payload, whatever the configuration: a longer `len` is
/// impossible and marks damage.
pub(crate) const MAX_PAYLOAD_BYTES: usize = 1 << 30;

/// Checksum of a record as stored: over its raw `len` word (flag
/// included), its seq and its payload.
pub(crate) fn checksum(len_word: u32, seq: u64, payload: &[u8]) -> u32 {
    let mut head = [0u8; 12];
    head[..4].copy_from_slice(&len_word.to_le_bytes());
    head[4..].copy_from_slice(&seq.to_le_bytes());
    crc32c::crc32c_append(crc32c::crc32c(&head), payload)
}

/// Appends the frame of one record to `out`.
pub(crate) fn encode(out: &mut Vec<u8>, seq: u64, payload: &[u8], continues: bool) {
    debug_assert!(payload.len() <= MAX_PAYLOAD_BYTES);
    let mut len = payload.len() as u32;
    if continues {
        len |= CONTINUES;
    }
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&checksum(len, seq, payload).to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(payload);
}

/// A decoded header.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Header {
    pub(crate) payload_len: usize,
    pub(crate) continues: bool,
    pub(crate) crc: u32,
    pub(crate) seq: u64,
    /// The raw length word, flag included (covered by the CRC).
    pub(crate) len_word: u32,
}

impl Header {
    /// Decodes the first [`HEADER_BYTES`] of `b` (which must be that long).
    pub(crate) fn decode(b: &[u8]) -> Header {
        let len = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        let crc = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
        let mut seq = [0u8; 8];
        seq.copy_from_slice(&b[8..16]);
        Header {
            payload_len: (len & !CONTINUES) as usize,
            continues: len & CONTINUES != 0,
            crc,
            seq: u64::from_le_bytes(seq),
            len_word: len,
        }
    }

    /// Whole frame length.
    pub(crate) fn frame_len(&self) -> usize {
        HEADER_BYTES + self.payload_len
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_keeps_flag_and_checksum() {
        let mut b = Vec::new();
        encode(&mut b, 7, b"abc", true);
        encode(&mut b, 8, b"", false);
        let h = Header::decode(&b);
        assert_eq!((h.payload_len, h.continues, h.seq), (3, true, 7));
        assert_eq!(h.crc, checksum(3 | CONTINUES, 7, b"abc"));
        let h2 = Header::decode(&b[h.frame_len()..]);
        assert_eq!((h2.payload_len, h2.continues, h2.seq), (0, false, 8));
    }
}
