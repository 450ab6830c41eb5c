//! The idempotency window on disk. Beside each replica snapshot at seq S
//! the node writes `answers-<S>.bin`: the accepted places it remembers
//! (order key, canonical command bytes, seq, answer), oldest first. A node
//! that restarts from snapshot S loads the entries with seq <= S and then
//! rebuilds the rest from the log tail, so a retry of an order accepted
//! before the restart still gets its original answer, as on every other
//! node.
//!
//! Format: `b"TNDMANS1"`, entry count (u64 LE), entries (seq u64 LE, then
//! key, payload and events, each as u32 LE length + bytes), CRC32C (u32 LE)
//! of everything before it. A file that fails to decode is ignored (the
//! window then starts empty: answers degrade to 409, never to a wrong
//! answer).

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use bytes::Bytes;

const MAGIC: &[u8; 8] = b"TNDMANS1";

/// One remembered accepted place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub seq: u64,
    pub key: Bytes,
    pub payload: Bytes,
    pub events: Bytes,
}

/// Path of the window file that goes with the snapshot at `seq`.
pub fn path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("answers-{seq:020}.bin"))
}

/// The seq of a `PREFIX<seq>SUFFIX` file name (snapshots and the files
/// beside them).
pub(crate) fn seq_of(name: &str, prefix: &str, suffix: &str) -> Option<u64> {
    name.strip_prefix(prefix)?
        .strip_suffix(suffix)?
        .parse()
        .ok()
}

/// Encodes entries (oldest first).
pub fn encode<'a>(entries: impl ExactSizeIterator<Item = &'a Entry>) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + entries.len() * 200);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(entries.len() as u64).to_le_bytes());
    for e in entries {
        out.extend_from_slice(&e.seq.to_le_bytes());
        for b in [&e.key, &e.payload, &e.events] {
            out.extend_from_slice(&(b.len() as u32).to_le_bytes());
            out.extend_from_slice(b);
        }
    }
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Decodes a window file; `Err` says what is wrong.
pub fn decode(bytes: &[u8]) -> Result<Vec<Entry>, String> {
    if bytes.len() < MAGIC.len() + 12 || &bytes[..8] != MAGIC {
        return Err("not a window file".into());
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    let crc = u32::from_le_bytes(crc.try_into().expect("4 bytes"));
    if crc32c::crc32c(body) != crc {
        return Err("checksum mismatch".into());
    }
    let mut at = 8;
    let take = |at: &mut usize, n: usize| -> Result<&[u8], String> {
        let s = body
            .get(*at..*at + n)
            .ok_or_else(|| format!("truncated at byte {at}"))?;
        *at += n;
        Ok(s)
    };
    let count = u64::from_le_bytes(take(&mut at, 8)?.try_into().expect("8 bytes"));
    // Each entry takes at least 20 bytes: bound the count before reserving.
    if count > (body.len() / 20) as u64 {
        return Err(format!("entry count {count} exceeds the file"));
    }
    let mut out = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let seq = u64::from_le_bytes(take(&mut at, 8)?.try_into().expect("8 bytes"));
        let mut field = || -> Result<Bytes, String> {
            let n = u32::from_le_bytes(take(&mut at, 4)?.try_into().expect("4 bytes")) as usize;
            Ok(Bytes::copy_from_slice(take(&mut at, n)?))
        };
        let (key, payload, events) = (field()?, field()?, field()?);
        out.push(Entry {
            seq,
            key,
            payload,
            events,
        });
    }
    if at != body.len() {
        return Err(format!("{} bytes after the last entry", body.len() - at));
    }
    Ok(out)
}

/// Writes the window for the snapshot at `seq` atomically, then removes
/// window files whose snapshot is gone.
pub fn save(dir: &Path, seq: u64, bytes: &[u8]) -> std::io::Result<()> {
    save_with(dir, seq, |f| f.write_all(bytes))
}

/// [`save`] of `entries`, encoded as [`encode`] does but streamed to the
/// file: a window of a million orders is some 300 MB, which `encode`
/// would first build (and grow, and zero) in memory.
pub fn save_entries(dir: &Path, seq: u64, entries: &[Entry]) -> std::io::Result<()> {
    save_with(dir, seq, |f| {
        let mut w = CrcWriter {
            out: std::io::BufWriter::with_capacity(1 << 20, Paced::new(f)),
            crc: 0,
        };
        w.put(MAGIC)?;
        w.put(&(entries.len() as u64).to_le_bytes())?;
        for e in entries {
            w.put(&e.seq.to_le_bytes())?;
            for b in [&e.key, &e.payload, &e.events] {
                w.put(&(b.len() as u32).to_le_bytes())?;
                w.put(b)?;
            }
        }
        let crc = w.crc;
        w.out.write_all(&crc.to_le_bytes())?;
        w.out.flush()
    })
}

/// Writes to a file and has the kernel write each 8 MiB to disk as it
/// goes (`sync_file_range`, waiting for the one before), so that the
/// final sync has little left and a window of hundreds of MB never sits
/// dirty in the page cache: its writeback in one go held the log's
/// `fdatasync` behind it (a 70 ms wait in the appender, 165 ms of added
/// latency at 10 k/s).
struct Paced<'f> {
    f: &'f mut fs::File,
    written: u64,
    synced: u64,
}

/// Bytes between two writebacks of a window being saved.
const PACE_BYTES: u64 = 8 << 20;

impl<'f> Paced<'f> {
    fn new(f: &'f mut fs::File) -> Self {
        Self {
            f,
            written: 0,
            synced: 0,
        }
    }
}

impl std::io::Write for Paced<'_> {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        let n = self.f.write(b)?;
        self.written += n as u64;
        if self.written - self.synced >= PACE_BYTES {
            #[cfg(target_os = "linux")]
            {
                use std::os::fd::AsRawFd as _;
                let fd = self.f.as_raw_fd();
                #[allow(unsafe_code)]
                // SAFETY: plain system calls on an open file descriptor; an
                // error only leaves the writeback to the final sync.
                unsafe {
                    // Start this range's writeback, then wait for the
                    // range before it (started a pace earlier).
                    libc::sync_file_range(
                        fd,
                        self.synced as libc::off64_t,
                        (self.written - self.synced) as libc::off64_t,
                        libc::SYNC_FILE_RANGE_WRITE,
                    );
                    if self.synced > 0 {
                        libc::sync_file_range(
                            fd,
                            0,
                            self.synced as libc::off64_t,
                            libc::SYNC_FILE_RANGE_WAIT_BEFORE
                                | libc::SYNC_FILE_RANGE_WRITE
                                | libc::SYNC_FILE_RANGE_WAIT_AFTER,
                        );
                    }
                }
            }
            self.synced = self.written;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.f.flush()
    }
}

/// A writer that keeps the CRC32C of what went through it.
struct CrcWriter<W: std::io::Write> {
    out: W,
    crc: u32,
}

impl<W: std::io::Write> CrcWriter<W> {
    fn put(&mut self, b: &[u8]) -> std::io::Result<()> {
        self.crc = crc32c::crc32c_append(self.crc, b);
        self.out.write_all(b)
    }
}

/// Writes a window file through `write`, synced and renamed into place,
/// then removes window files whose snapshot is gone.
fn save_with(
    dir: &Path,
    seq: u64,
    write: impl FnOnce(&mut fs::File) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let final_path = path(dir, seq);
    let tmp = dir.join(tandem_replica::tmp_name(&format!("answers-{seq:020}.bin")));
    let mut f = fs::File::create(&tmp)?;
    write(&mut f)?;
    f.sync_all()?;
    fs::rename(&tmp, &final_path)?;
    let mut snapshots = Vec::new();
    let mut windows = Vec::new();
    for entry in fs::read_dir(dir)? {
        let name = entry?.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(s) = seq_of(name, "snapshot-", ".tsnap") {
            snapshots.push(s);
        } else if let Some(s) = seq_of(name, "answers-", ".bin") {
            windows.push(s);
        }
    }
    for w in windows {
        if w != seq && !snapshots.contains(&w) {
            let _ = fs::remove_file(path(dir, w));
        }
    }
    Ok(())
}

/// Loads the window that goes with the snapshot at `seq`: entries with
/// seq <= `seq`, oldest first. Missing or damaged: empty, with why.
pub fn load(dir: &Path, seq: u64) -> (Vec<Entry>, Option<String>) {
    let p = path(dir, seq);
    match fs::read(&p) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => (Vec::new(), None),
        Err(e) => (Vec::new(), Some(format!("{}: {e}", p.display()))),
        Ok(b) => match decode(&b) {
            Ok(mut v) => {
                v.retain(|e| e.seq <= seq);
                (v, None)
            }
            Err(why) => (Vec::new(), Some(format!("{}: {why}", p.display()))),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(seq: u64) -> Entry {
        Entry {
            seq,
            key: Bytes::from(format!("M\0o{seq}")),
            payload: Bytes::from(format!("{{\"op\":\"place\",\"id\":\"o{seq}\"}}")),
            events: Bytes::from(format!("[{{\"seq\":{seq}}}]")),
        }
    }

    #[test]
    fn round_trip_and_damage() {
        let v: Vec<Entry> = (1..50).map(entry).collect();
        let b = encode(v.iter());
        assert_eq!(decode(&b).unwrap(), v);
        for cut in [0, 5, 20, b.len() - 1] {
            assert!(decode(&b[..cut]).is_err());
        }
        let mut flipped = b.clone();
        flipped[30] ^= 1;
        assert!(decode(&flipped).unwrap_err().contains("checksum"));
        assert_eq!(decode(&encode([].iter())).unwrap(), vec![]);
    }

    #[test]
    fn a_streamed_save_writes_what_encode_makes() {
        let dir = std::env::temp_dir().join(format!("tandem-window-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        // Over the writer's 1 MiB buffer, so that it flushes mid-way.
        let v: Vec<Entry> = (1..40_000).map(entry).collect();
        save_entries(&dir, 40_000, &v).unwrap();
        assert_eq!(fs::read(path(&dir, 40_000)).unwrap(), encode(v.iter()));
        let (back, problem) = load(&dir, 40_000);
        assert_eq!((back, problem), (v, None));
        save_entries(&dir, 40_001, &[]).unwrap();
        assert_eq!(fs::read(path(&dir, 40_001)).unwrap(), encode([].iter()));
        let _ = fs::remove_dir_all(&dir);
    }
}
