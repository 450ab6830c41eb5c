//! Chain checkpoints: the engine's output hash at seqs chosen from the log
//! alone, so that every replica of one log has the same ones and a rollout
//! controller can compare two nodes at equal seqs (`GET /v1/chain/{p}`).
//!
//! The rule: with `K = limits.checkpoint_every`, an applied seq `S` is a
//! checkpoint when it is the first applied seq at or after a multiple of
//! `K`, that is when `prev / K < S / K`, `prev` being the seq applied just
//! before `S` (0 before the first). Both are facts of the log (every
//! replica applies every record in seq order), and `prev` after a restart
//! is the restored snapshot's seq, which the snapshot keeps, so the rule
//! survives restarts and needs no counter of its own (the engine and its
//! snapshot keep no command count; a count kept beside the snapshot would
//! be lost with that file, and replicas would then disagree on the rule).
//! On the file log seqs are contiguous, so a checkpoint is every `K`
//! commands. On Kafka a seq is `(offset + 1) << 16 | index`, so one Kafka
//! message spans 65536 seq units: a `K` below 65536 makes the first command
//! of every message a checkpoint, and `K = n << 16` makes one every `n`
//! messages. Nodes compare only when their `K` is equal (`/v1/chain` says
//! it).
//!
//! The newest `limits.checkpoints_kept` checkpoints are kept in memory,
//! and saved beside each snapshot (`checkpoints-<S>.bin`, those with seq
//! <= S) so that a node restarted from its snapshot still has them. A file
//! that is missing, damaged or made with another `K` is ignored: the ring
//! then starts empty at the snapshot (never with a wrong entry).
//!
//! Format: `b"TNDMCHK1"`, `K` (u64 LE), entry count (u64 LE), entries (seq
//! u64 LE, chain u128 LE), CRC32C (u32 LE) of everything before it.

use std::collections::VecDeque;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"TNDMCHK1";
/// Bytes per entry on disk.
const ENTRY: usize = 24;

/// One checkpoint: the chain after applying `seq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checkpoint {
    pub seq: u64,
    pub chain: u128,
}

/// True when `seq`, applied right after `prev`, is a checkpoint for `every`
/// (see the module doc).
pub fn is_checkpoint(prev: u64, seq: u64, every: u64) -> bool {
    let k = every.max(1);
    prev / k < seq / k
}

/// The checkpoints of one partition: a bounded ring, oldest first.
#[derive(Debug, Clone)]
pub struct Checkpoints {
    every: u64,
    kept: usize,
    /// Seq applied last (the `prev` of the rule).
    last: u64,
    ring: VecDeque<Checkpoint>,
}

impl Checkpoints {
    /// An empty ring for `every` (K) keeping at most `kept` entries.
    pub fn new(every: u64, kept: usize) -> Checkpoints {
        Checkpoints {
            every: every.max(1),
            kept: kept.max(1),
            last: 0,
            ring: VecDeque::with_capacity(kept.clamp(1, 4096)),
        }
    }

    /// K.
    pub fn every(&self) -> u64 {
        self.every
    }

    /// Starts over at a restored snapshot of `seq`, with `entries` (those
    /// saved beside it; any above `seq` are dropped, the newest `kept`
    /// kept).
    pub fn restore(&mut self, seq: u64, entries: Vec<Checkpoint>) {
        self.last = seq;
        self.ring.clear();
        for c in entries.into_iter().filter(|c| c.seq <= seq) {
            self.push(c);
        }
    }

    fn push(&mut self, c: Checkpoint) {
        if self.ring.back().is_some_and(|b| b.seq >= c.seq) {
            return;
        }
        if self.ring.len() >= self.kept {
            self.ring.pop_front();
        }
        self.ring.push_back(c);
    }

    /// Records that `seq` was applied; `chain` is asked for only when `seq`
    /// is a checkpoint. Returns whether it was.
    pub fn applied(&mut self, seq: u64, chain: impl FnOnce() -> u128) -> bool {
        let hit = is_checkpoint(self.last, seq, self.every);
        self.last = seq;
        if hit {
            self.push(Checkpoint {
                seq,
                chain: chain(),
            });
        }
        hit
    }

    /// The checkpoint at `seq`, if kept.
    pub fn get(&self, seq: u64) -> Option<Checkpoint> {
        let i = self.ring.binary_search_by_key(&seq, |c| c.seq).ok()?;
        Some(self.ring[i])
    }

    /// Up to `limit` checkpoints with seq in `from..=upto`, oldest first:
    /// the oldest ones from `from` when it is given, else the newest ones.
    pub fn range(&self, from: Option<u64>, upto: u64, limit: usize) -> Vec<Checkpoint> {
        let end = self.ring.partition_point(|c| c.seq <= upto);
        let start = match from {
            Some(f) => self.ring.partition_point(|c| c.seq < f),
            None => end.saturating_sub(limit),
        };
        let end = end.min(start.saturating_add(limit));
        self.ring
            .range(start.min(end)..end)
            .copied()
            .collect::<Vec<_>>()
    }

    /// Oldest and newest seq kept.
    pub fn bounds(&self) -> Option<(u64, u64)> {
        Some((self.ring.front()?.seq, self.ring.back()?.seq))
    }

    /// Entries with seq <= `seq`, oldest first (what is saved beside the
    /// snapshot at `seq`).
    pub fn upto(&self, seq: u64) -> Vec<Checkpoint> {
        self.ring.iter().filter(|c| c.seq <= seq).copied().collect()
    }
}

/// Path of the checkpoints file that goes with the snapshot at `seq`.
pub fn path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("checkpoints-{seq:020}.bin"))
}

/// Encodes checkpoints made with `every`.
pub fn encode(every: u64, entries: &[Checkpoint]) -> Vec<u8> {
    let mut out = Vec::with_capacity(28 + entries.len() * ENTRY);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&every.to_le_bytes());
    out.extend_from_slice(&(entries.len() as u64).to_le_bytes());
    for c in entries {
        out.extend_from_slice(&c.seq.to_le_bytes());
        out.extend_from_slice(&c.chain.to_le_bytes());
    }
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Decodes a checkpoints file: its K and its entries; `Err` says what is
/// wrong.
pub fn decode(bytes: &[u8]) -> Result<(u64, Vec<Checkpoint>), String> {
    if bytes.len() < MAGIC.len() + 20 || &bytes[..8] != MAGIC {
        return Err("not a checkpoints file".into());
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    let crc = u32::from_le_bytes(crc.try_into().expect("4 bytes"));
    if crc32c::crc32c(body) != crc {
        return Err("checksum mismatch".into());
    }
    let every = u64::from_le_bytes(body[8..16].try_into().expect("8 bytes"));
    let count = u64::from_le_bytes(body[16..24].try_into().expect("8 bytes"));
    let rest = &body[24..];
    if count.checked_mul(ENTRY as u64) != Some(rest.len() as u64) {
        return Err(format!(
            "entry count {count} does not match {} bytes of entries",
            rest.len()
        ));
    }
    let mut out = Vec::with_capacity(count as usize);
    for e in rest.chunks_exact(ENTRY) {
        let seq = u64::from_le_bytes(e[..8].try_into().expect("8 bytes"));
        let chain = u128::from_le_bytes(e[8..].try_into().expect("16 bytes"));
        if out.last().is_some_and(|p: &Checkpoint| p.seq >= seq) {
            return Err(format!("seq {seq} not after the previous entry"));
        }
        out.push(Checkpoint { seq, chain });
    }
    Ok((every, out))
}

/// Writes the checkpoints for the snapshot at `seq` atomically, then
/// removes checkpoints files whose snapshot is gone.
pub fn save(dir: &Path, seq: u64, bytes: &[u8]) -> std::io::Result<()> {
    let final_path = path(dir, seq);
    let tmp = dir.join(tandem_replica::tmp_name(&format!(
        "checkpoints-{seq:020}.bin"
    )));
    let mut f = fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    fs::rename(&tmp, &final_path)?;
    let seq_of = |name: &str, prefix: &str, suffix: &str| -> Option<u64> {
        name.strip_prefix(prefix)?
            .strip_suffix(suffix)?
            .parse()
            .ok()
    };
    let mut snapshots = Vec::new();
    let mut files = Vec::new();
    for entry in fs::read_dir(dir)? {
        let name = entry?.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(s) = seq_of(name, "snapshot-", ".tsnap") {
            snapshots.push(s);
        } else if let Some(s) = seq_of(name, "checkpoints-", ".bin") {
            files.push(s);
        }
    }
    for s in files {
        if s != seq && !snapshots.contains(&s) {
            let _ = fs::remove_file(path(dir, s));
        }
    }
    Ok(())
}

/// Loads the checkpoints saved beside the snapshot at `seq`, if made with
/// `every`: entries with seq <= `seq`. Missing: empty; damaged or made
/// with another K: empty, with why.
pub fn load(dir: &Path, seq: u64, every: u64) -> (Vec<Checkpoint>, Option<String>) {
    let p = path(dir, seq);
    match fs::read(&p) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => (Vec::new(), None),
        Err(e) => (Vec::new(), Some(format!("{}: {e}", p.display()))),
        Ok(b) => match decode(&b) {
            Ok((k, _)) if k != every => (
                Vec::new(),
                Some(format!(
                    "{}: made with checkpoint_every {k}, this node uses {every}",
                    p.display()
                )),
            ),
            Ok((_, mut v)) => {
                v.retain(|c| c.seq <= seq);
                (v, None)
            }
            Err(why) => (Vec::new(), Some(format!("{}: {why}", p.display()))),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_seq_at_or_after_each_multiple() {
        // Contiguous seqs (file log): every K-th.
        let mut c = Checkpoints::new(10, 100);
        let hits: Vec<u64> = (1..=35).filter(|&s| c.applied(s, || s as u128)).collect();
        assert_eq!(hits, vec![10, 20, 30]);
        // Seqs with gaps (Kafka-like): the first at or after each multiple,
        // once even when a gap spans several multiples.
        let mut c = Checkpoints::new(10, 100);
        let hits: Vec<u64> = [3, 9, 12, 13, 45, 46, 50, 51]
            .into_iter()
            .filter(|&s| c.applied(s, || 0))
            .collect();
        assert_eq!(hits, vec![12, 45, 50]);
        // K = 1: every seq.
        assert!(is_checkpoint(4, 5, 1) && is_checkpoint(0, 1, 0));
    }

    #[test]
    fn a_restore_continues_the_same_rule() {
        let mut whole = Checkpoints::new(7, 100);
        for s in 1..=50 {
            whole.applied(s, || u128::from(s) * 3);
        }
        let mut first = Checkpoints::new(7, 100);
        for s in 1..=23 {
            first.applied(s, || u128::from(s) * 3);
        }
        let mut second = Checkpoints::new(7, 100);
        second.restore(23, first.upto(23));
        for s in 24..=50 {
            second.applied(s, || u128::from(s) * 3);
        }
        assert_eq!(
            second.range(None, u64::MAX, 100),
            whole.range(None, u64::MAX, 100)
        );
    }

    #[test]
    fn bounded_ring_and_ranges() {
        let mut c = Checkpoints::new(1, 5);
        for s in 1..=20 {
            c.applied(s, || u128::from(s));
        }
        let seqs = |v: Vec<Checkpoint>| v.iter().map(|c| c.seq).collect::<Vec<_>>();
        assert_eq!(c.bounds(), Some((16, 20)));
        assert_eq!(seqs(c.range(None, u64::MAX, 2)), vec![19, 20]);
        assert_eq!(seqs(c.range(Some(17), u64::MAX, 2)), vec![17, 18]);
        assert_eq!(seqs(c.range(Some(1), 18, 10)), vec![16, 17, 18]);
        assert_eq!(seqs(c.range(Some(30), u64::MAX, 10)), Vec::<u64>::new());
        assert_eq!(seqs(c.range(None, 3, 10)), Vec::<u64>::new());
        assert_eq!(c.get(18).map(|c| c.chain), Some(18));
        assert_eq!(c.get(3), None);
    }

    #[test]
    fn file_round_trip_and_damage() {
        let v: Vec<Checkpoint> = (1..40)
            .map(|s| Checkpoint {
                seq: s * 10,
                chain: u128::from(s) << 70 | 5,
            })
            .collect();
        let b = encode(10, &v);
        assert_eq!(decode(&b).unwrap(), (10, v.clone()));
        for cut in [0, 5, 27, b.len() - 1] {
            assert!(decode(&b[..cut]).is_err());
        }
        let mut flipped = b.clone();
        flipped[40] ^= 1;
        assert!(decode(&flipped).unwrap_err().contains("checksum"));
        assert_eq!(decode(&encode(3, &[])).unwrap(), (3, vec![]));
    }

    proptest::proptest! {
        /// A file on disk is outside bytes: anything decodes or is refused,
        /// never panics.
        #[test]
        fn any_bytes_decode_or_are_refused(b in proptest::collection::vec(0u8.., 0..200)) {
            let _ = decode(&b);
            let mut framed = MAGIC.to_vec();
            framed.extend_from_slice(&b);
            let crc = crc32c::crc32c(&framed);
            framed.extend_from_slice(&crc.to_le_bytes());
            let _ = decode(&framed);
        }
    }
}
