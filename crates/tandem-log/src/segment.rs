//! Segment files: naming, the recovery scan that validates a segment on
//! open (and builds its sparse index), and a buffered positional reader.
//!
//! Recovery rules. Zero bytes from a record boundary to the end of a file
//! are not records: the writer writes zeros ahead of its appends
//! (`FileLogConfig::preallocate_bytes`), and no record's header is all
//! zeros (its seq is at least 1). In the *last* segment, damage that
//! reaches the end of the data (an incomplete header or payload, a bad
//! checksum on the final record, a bad record followed only by zero bytes,
//! or one followed by data with a whole zero sector between, which is what
//! a crash during the sync of a write over zeros written ahead can leave:
//! the sectors of one write reach the disk in any order) is a torn write:
//! the tail is cut back to the end of the last complete batch and
//! reported. A batch whose last record is missing is torn too. Anything
//! else (a bad record followed by real data and no zero sector, a seq out
//! of order, damage in an earlier segment, or a torn tail longer than one
//! commit could have written) is [`LogError::Corrupt`] and the log refuses
//! to open.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::frame::{checksum, Header, HEADER_BYTES, MAX_PAYLOAD_BYTES};
use crate::{LogError, Record};

/// File-name suffix of segments.
const SUFFIX: &str = ".seg";

/// Path of the segment whose first seq is `base_seq`.
pub(crate) fn segment_path(dir: &Path, base_seq: u64) -> PathBuf {
    dir.join(format!("{base_seq:020}{SUFFIX}"))
}

/// The base seq encoded in a segment file name, if it is one.
pub(crate) fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// What the scan of one segment found.
#[derive(Debug)]
pub(crate) struct Scan {
    /// Length of the valid prefix (ends at a batch boundary).
    pub(crate) valid_len: u64,
    /// Last seq in the valid prefix (`base_seq - 1` if none).
    pub(crate) last_seq: u64,
    /// Sparse index `(seq, offset)` over the valid prefix.
    pub(crate) index: Vec<(u64, u64)>,
    /// Why the tail past `valid_len` was cut, if it was.
    pub(crate) torn: Option<String>,
    /// Bytes of data cut with a torn tail (zeros after the data not
    /// counted).
    pub(crate) torn_bytes: u64,
}

/// Size of the unit a disk writes whole; a torn write's holes are whole
/// sectors.
const SECTOR: usize = 512;

/// Whether `bytes[from..to]` holds a whole sector-aligned run of zeros.
fn has_zero_sector(bytes: &[u8], from: usize, to: usize) -> bool {
    let mut s = from.div_ceil(SECTOR) * SECTOR;
    while s + SECTOR <= to {
        if bytes[s..s + SECTOR].iter().all(|&b| b == 0) {
            return true;
        }
        s += SECTOR;
    }
    false
}

/// Validates the bytes of one segment. `is_last` allows a torn tail of at
/// most `max_torn_bytes`.
pub(crate) fn scan(
    path: &Path,
    bytes: &[u8],
    base_seq: u64,
    is_last: bool,
    index_interval: u64,
    max_torn_bytes: u64,
) -> Result<Scan, LogError> {
    let corrupt = |offset: usize, reason: String| LogError::Corrupt {
        segment: path.to_path_buf(),
        offset: offset as u64,
        reason,
    };
    let mut pos = 0usize;
    let mut expected = base_seq;
    // End and last seq of the last complete batch.
    let mut committed = (0usize, base_seq - 1);
    let mut index: Vec<(u64, u64)> = Vec::new();
    let mut next_index_at = 0u64;
    let mut bad: Option<(usize, String, bool)> = None; // (offset, reason, reaches end)
                                                       // End of the data: what follows is zeros.
    let data_end = bytes.iter().rposition(|&b| b != 0).map_or(0, |p| p + 1);
    // Damage at `at` reaches the end when only zeros follow `after`, or,
    // in the last segment, when a zero sector lies between it and the end
    // of the data (a torn write over zeros written ahead).
    let reaches_end = |at: usize, after: usize| {
        after >= data_end || (is_last && has_zero_sector(bytes, at, data_end))
    };
    while pos < data_end {
        let rest = &bytes[pos..];
        if rest.len() < HEADER_BYTES {
            bad = Some((pos, "incomplete record header".into(), true));
            break;
        }
        let h = Header::decode(rest);
        if h.payload_len > MAX_PAYLOAD_BYTES {
            let torn = reaches_end(pos, pos + HEADER_BYTES);
            bad = Some((pos, format!("impossible length {}", h.payload_len), torn));
            break;
        }
        if h.frame_len() > rest.len() {
            bad = Some((pos, "incomplete record payload".into(), true));
            break;
        }
        let payload = &rest[HEADER_BYTES..h.frame_len()];
        if checksum(h.len_word, h.seq, payload) != h.crc {
            let torn = reaches_end(pos, pos + h.frame_len());
            bad = Some((pos, "checksum mismatch".into(), torn));
            break;
        }
        if h.seq != expected {
            return Err(corrupt(
                pos,
                format!("seq {} where {expected} was expected", h.seq),
            ));
        }
        if pos as u64 >= next_index_at {
            index.push((h.seq, pos as u64));
            next_index_at = pos as u64 + index_interval;
        }
        pos += h.frame_len();
        expected += 1;
        if !h.continues {
            committed = (pos, h.seq);
        }
    }
    let (valid_len, last_seq) = committed;
    let torn = match bad {
        Some((offset, reason, reaches_end)) => {
            if !is_last || !reaches_end {
                return Err(corrupt(offset, reason));
            }
            Some(format!("{reason} at byte {offset}"))
        }
        None if valid_len < pos => {
            if !is_last {
                return Err(corrupt(valid_len, "segment ends inside a batch".into()));
            }
            Some(format!("incomplete batch at byte {valid_len}"))
        }
        None => None,
    };
    let torn_bytes = (data_end.max(pos) - valid_len) as u64;
    if torn.is_some() && torn_bytes > max_torn_bytes {
        return Err(corrupt(
            valid_len,
            format!(
                "damaged tail of {torn_bytes} bytes is longer than one commit ({max_torn_bytes})"
            ),
        ));
    }
    index.retain(|&(_, off)| (off as usize) < valid_len);
    Ok(Scan {
        valid_len: valid_len as u64,
        last_seq,
        index,
        torn_bytes: if torn.is_some() { torn_bytes } else { 0 },
        torn,
    })
}

/// Reads records sequentially from `[pos, end)` of a segment with few
/// system calls, checking each record's checksum and seq.
#[derive(Debug)]
pub(crate) struct SegmentReader<'a> {
    file: &'a File,
    path: &'a Path,
    pos: u64,
    end: u64,
    buf: Vec<u8>,
    buf_at: u64,
}

/// Bytes read per system call when records are small.
const READ_CHUNK: usize = 256 * 1024;

impl<'a> SegmentReader<'a> {
    pub(crate) fn new(file: &'a File, path: &'a Path, pos: u64, end: u64) -> Self {
        SegmentReader {
            file,
            path,
            pos,
            end,
            buf: Vec::new(),
            buf_at: pos,
        }
    }

    /// Makes `[at, at + n)` available in `buf`; returns its start in `buf`.
    fn fill(&mut self, at: u64, n: usize) -> Result<usize, LogError> {
        let have_end = self.buf_at + self.buf.len() as u64;
        if at >= self.buf_at && at + n as u64 <= have_end {
            return Ok((at - self.buf_at) as usize);
        }
        let want = n.max(READ_CHUNK).min((self.end - at) as usize).max(n);
        self.buf.resize(want, 0);
        self.file
            .read_exact_at(&mut self.buf, at)
            .map_err(|e| LogError::io("read", self.path, e))?;
        self.buf_at = at;
        Ok(0)
    }

    /// The next record, or `None` at `end`.
    pub(crate) fn next_record(&mut self, expected_seq: u64) -> Result<Option<Record>, LogError> {
        if self.pos >= self.end {
            return Ok(None);
        }
        let corrupt = |offset: u64, reason: String| LogError::Corrupt {
            segment: self.path.to_path_buf(),
            offset,
            reason,
        };
        if self.end - self.pos < HEADER_BYTES as u64 {
            return Err(corrupt(self.pos, "incomplete record header".into()));
        }
        let at = self.fill(self.pos, HEADER_BYTES)?;
        let h = Header::decode(&self.buf[at..]);
        if h.payload_len > MAX_PAYLOAD_BYTES || self.pos + h.frame_len() as u64 > self.end {
            return Err(corrupt(self.pos, "impossible length".into()));
        }
        let at = self.fill(self.pos, h.frame_len())?;
        let payload = &self.buf[at + HEADER_BYTES..at + h.frame_len()];
        if checksum(h.len_word, h.seq, payload) != h.crc {
            return Err(corrupt(self.pos, "checksum mismatch".into()));
        }
        if h.seq != expected_seq {
            return Err(corrupt(
                self.pos,
                format!("seq {} where {expected_seq} was expected", h.seq),
            ));
        }
        let rec = Record {
            seq: h.seq,
            payload: payload.to_vec(),
        };
        self.pos += h.frame_len() as u64;
        Ok(Some(rec))
    }

    /// Skips the record at the current position (header only is checked).
    pub(crate) fn skip_record(&mut self) -> Result<(), LogError> {
        let at = self.fill(self.pos, HEADER_BYTES)?;
        let h = Header::decode(&self.buf[at..]);
        self.pos += h.frame_len() as u64;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::encode;

    fn batch(out: &mut Vec<u8>, first: u64, n: u64) {
        for i in 0..n {
            encode(out, first + i, &[i as u8; 5], i + 1 < n);
        }
    }

    #[test]
    fn names_round_trip() {
        let p = segment_path(Path::new("/x"), 42);
        let name = p.file_name().unwrap().to_str().unwrap();
        assert_eq!(name, "00000000000000000042.seg");
        assert_eq!(parse_segment_name(name), Some(42));
        assert_eq!(parse_segment_name("42.seg"), None);
    }

    #[test]
    fn incomplete_batch_at_tail_is_torn_to_the_batch_start() {
        let mut b = Vec::new();
        batch(&mut b, 1, 2);
        let whole = b.len();
        batch(&mut b, 3, 3);
        // Keep the first two records of the second batch only.
        let cut = whole + 2 * (HEADER_BYTES + 5);
        let s = scan(Path::new("s"), &b[..cut], 1, true, 0, u64::MAX).unwrap();
        assert_eq!((s.valid_len, s.last_seq), (whole as u64, 2));
        assert!(s.torn.is_some());
        let err = scan(Path::new("s"), &b[..cut], 1, false, 0, u64::MAX).unwrap_err();
        assert!(matches!(err, LogError::Corrupt { .. }));
    }

    #[test]
    fn zeros_after_tail_are_torn_but_data_after_damage_is_corrupt() {
        let mut b = Vec::new();
        batch(&mut b, 1, 1);
        let good = b.len();
        b.extend_from_slice(&[0u8; 100]);
        let s = scan(Path::new("s"), &b, 1, true, 4096, u64::MAX).unwrap();
        assert_eq!((s.valid_len, s.last_seq), (good as u64, 1));
        let mut c = Vec::new();
        batch(&mut c, 1, 3);
        c[HEADER_BYTES + 1] ^= 0xff;
        let err = scan(Path::new("s"), &c, 1, true, 4096, u64::MAX).unwrap_err();
        assert!(matches!(err, LogError::Corrupt { offset: 0, .. }), "{err}");
    }
}
