//! The value of one Kafka message: the records of one `append`, framed so a
//! whole batch is one atomic Kafka message.
//!
//! Layout, integers little-endian:
//! `[version u8 = 2][token 16 bytes][count u32]` then, `count` times,
//! `[len u32][len bytes]`. The token names the append that wrote the batch
//! (its log instance and a counter), so an append whose acknowledgement
//! came without an offset can find where its batch landed.
//! `count` is 1..=[`MAX_BATCH_RECORDS`] (an empty append writes nothing), and
//! nothing follows the last record. The decoder refuses anything else
//! rather than guess.

use crate::seq::MAX_BATCH_RECORDS;

/// The only format version written and read.
pub const VERSION: u8 = 2;

/// Bytes of the batch token.
pub const TOKEN_BYTES: usize = 16;

/// Bytes before the first record: version, token and count.
pub const HEADER_BYTES: usize = 1 + TOKEN_BYTES + 4;

/// Bytes before each record's payload: its length.
pub const RECORD_HEADER_BYTES: usize = 4;

/// Encoded size of a batch of `records`.
pub fn encoded_len(records: &[&[u8]]) -> usize {
    HEADER_BYTES
        + records
            .iter()
            .map(|r| RECORD_HEADER_BYTES + r.len())
            .sum::<usize>()
}

/// Encodes `records`. The caller checks the count (1..=65536) and that no
/// record exceeds `u32::MAX` bytes (the configured message limit is far
/// smaller).
pub fn encode(records: &[&[u8]], token: [u8; TOKEN_BYTES]) -> Vec<u8> {
    debug_assert!(!records.is_empty() && records.len() <= MAX_BATCH_RECORDS);
    let mut out = Vec::with_capacity(encoded_len(records));
    out.push(VERSION);
    out.extend_from_slice(&token);
    out.extend_from_slice(&len_u32(records.len()).to_le_bytes());
    for r in records {
        out.extend_from_slice(&len_u32(r.len()).to_le_bytes());
        out.extend_from_slice(r);
    }
    out
}

fn len_u32(n: usize) -> u32 {
    u32::try_from(n).expect("checked against the message size limit")
}

/// Reads the header only: the record count.
pub fn count(value: &[u8]) -> Result<u32, String> {
    let Some(header) = value.get(..HEADER_BYTES) else {
        return Err(format!("message of {} bytes has no header", value.len()));
    };
    if header[0] != VERSION {
        return Err(format!("unknown batch format version {}", header[0]));
    }
    let c = &header[1 + TOKEN_BYTES..];
    let count = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
    if count == 0 || count as usize > MAX_BATCH_RECORDS {
        return Err(format!(
            "batch count {count} outside 1..={MAX_BATCH_RECORDS}"
        ));
    }
    Ok(count)
}

/// The token of a batch (checks the version first).
pub fn token(value: &[u8]) -> Result<[u8; TOKEN_BYTES], String> {
    count(value)?;
    let mut t = [0u8; TOKEN_BYTES];
    t.copy_from_slice(&value[1..1 + TOKEN_BYTES]);
    Ok(t)
}

/// Decodes a whole batch into its records, borrowing from `value`.
pub fn decode(value: &[u8]) -> Result<Vec<&[u8]>, String> {
    let count = count(value)? as usize;
    let mut out = Vec::with_capacity(count);
    let mut rest = &value[HEADER_BYTES..];
    for i in 0..count {
        let Some((len, tail)) = rest.split_first_chunk::<RECORD_HEADER_BYTES>() else {
            return Err(format!("record {i} of {count}: length cut off"));
        };
        let len = u32::from_le_bytes(*len) as usize;
        if tail.len() < len {
            return Err(format!(
                "record {i} of {count}: {len} bytes announced, {} left",
                tail.len()
            ));
        }
        let (payload, tail) = tail.split_at(len);
        out.push(payload);
        rest = tail;
    }
    if !rest.is_empty() {
        return Err(format!("{} bytes after the last record", rest.len()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let big = vec![3u8; 70_000];
        let cases: [&[&[u8]]; 3] = [&[b""], &[b"a", b"", b"bc"], &[&big, b"x"]];
        for records in cases {
            let v = encode(records, [7; TOKEN_BYTES]);
            assert_eq!(v.len(), encoded_len(records));
            assert_eq!(token(&v).unwrap(), [7; TOKEN_BYTES]);
            assert_eq!(count(&v).unwrap() as usize, records.len());
            assert_eq!(decode(&v).unwrap(), records);
        }
    }

    #[test]
    fn layout_is_pinned() {
        let v = encode(&[b"ab", b""], [9; TOKEN_BYTES]);
        let mut want = vec![2];
        want.extend_from_slice(&[9; TOKEN_BYTES]);
        want.extend_from_slice(&[2, 0, 0, 0, 2, 0, 0, 0, b'a', b'b', 0, 0, 0, 0]);
        assert_eq!(v, want);
    }

    #[test]
    fn refuses_damage() {
        let v = encode(&[b"abc", b"de"], [0; TOKEN_BYTES]);
        for cut in 0..v.len() {
            assert!(decode(&v[..cut]).is_err(), "prefix of {cut} bytes");
        }
        let mut extra = v.clone();
        extra.push(0);
        assert!(decode(&extra).is_err());
        let mut version = v.clone();
        version[0] = 1;
        assert!(decode(&version).is_err());
        let mut empty = vec![2u8; 1 + TOKEN_BYTES];
        empty.extend_from_slice(&[0, 0, 0, 0]);
        assert!(decode(&empty).is_err(), "empty batch");
        let mut big = vec![2u8; 1 + TOKEN_BYTES];
        big.extend_from_slice(&[1, 0, 1, 0]);
        assert!(decode(&big).is_err(), "count too big");
    }
}
