//! [`FileLog`]: the default backend, a directory of segment files named by
//! their first seq (`00000000000000000001.seg`), rolled at a configured size.
//!
//! Group commit: `append` callers queue their batch, then take the writer
//! (a mutex) in turn; whoever holds it takes everything queued (up to
//! `max_batch_bytes` per group) until its own batch is done, assigns seqs,
//! writes each group with one `pwrite` and makes it durable with one
//! `fdatasync`, and wakes every caller of the group with its first seq (or
//! with the error). Callers that queued meanwhile usually find their batch
//! committed when they get the writer. There is no committer thread: a lone
//! appender writes and syncs on its own thread, with no hand-off. A failed write is rolled back (the file is cut to its last
//! durable length) and the log stays usable; a failed fsync poisons it,
//! since what the kernel kept can no longer be known. Readers see only
//! acknowledged records. Each segment has an in-memory sparse index
//! `(seq, offset)` rebuilt by the recovery scan on open; the scan reads and
//! checks every record, so open time grows with the retained log.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::{Duration, Instant};

use crate::frame::{encode, HEADER_BYTES, MAX_PAYLOAD_BYTES};
use crate::segment::{parse_segment_name, scan, segment_path, SegmentReader};
use crate::{Log, LogError, Record};

/// Whether an append waits for `fdatasync`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FsyncPolicy {
    /// Every group commit is `fdatasync`ed before it is acknowledged.
    #[default]
    Always,
    /// Acknowledge after the write only (survives a process crash, not a
    /// machine crash). For benchmarks and tests.
    Never,
}

/// Configuration of a [`FileLog`].
#[derive(Debug, Clone)]
pub struct FileLogConfig {
    /// A segment is rolled when the next batch would take it past this
    /// size (a single batch larger than this gets a segment of its own).
    pub segment_bytes: u64,
    /// Most encoded bytes (16-byte headers included) written by one group
    /// commit; also the most one `append` may take
    /// ([`LogError::BatchTooLarge`]).
    pub max_batch_bytes: usize,
    /// Durability of acknowledged appends.
    pub fsync: FsyncPolicy,
    /// Distance in bytes between entries of the sparse seq index.
    pub index_interval_bytes: u64,
    /// Test-only fault injection (simulated full disk, failing fsync).
    pub faults: Option<Arc<FaultInjector>>,
    /// How long `open` waits for another holder of the directory's lock
    /// to let go before it fails with [`LogError::Locked`]. Zero (the
    /// default) fails at once; a process taking over from its predecessor
    /// (a hand-over) waits for it to close the log.
    pub lock_wait: Duration,
    /// With [`FsyncPolicy::Always`], the active segment is written ahead
    /// with this many zero bytes past its end whenever a commit of at most
    /// a quarter of it reaches the zeros written before (0 turns it off). An `fdatasync` after a
    /// write that grows the file must also commit the new size (on ext4 a
    /// journal commit); over bytes already written it syncs the data only.
    /// Recovery takes zeros at a record boundary for the end of the log;
    /// a sealed segment and a cleanly closed log are cut back to their
    /// records.
    pub preallocate_bytes: u64,
}

impl Default for FileLogConfig {
    fn default() -> Self {
        FileLogConfig {
            segment_bytes: 64 << 20,
            max_batch_bytes: 16 << 20,
            fsync: FsyncPolicy::Always,
            index_interval_bytes: 4096,
            faults: None,
            lock_wait: Duration::ZERO,
            preallocate_bytes: 256 << 10,
        }
    }
}

/// Injects storage faults into a [`FileLog`], for tests: a write budget
/// after which writes fail as a full disk would (after a partial write), and
/// failing fsyncs. Shared with the log through [`FileLogConfig::faults`].
#[derive(Debug)]
pub struct FaultInjector {
    write_budget_bytes: AtomicU64,
    fail_syncs: AtomicBool,
}

impl Default for FaultInjector {
    fn default() -> Self {
        FaultInjector {
            write_budget_bytes: AtomicU64::new(u64::MAX),
            fail_syncs: AtomicBool::new(false),
        }
    }
}

impl FaultInjector {
    /// From now on, allow `bytes` more bytes to be written; the write that
    /// crosses the budget writes what fits, then fails with
    /// `io::ErrorKind::StorageFull`. `u64::MAX` means unlimited.
    pub fn set_write_budget(&self, bytes: u64) {
        self.write_budget_bytes.store(bytes, Ordering::SeqCst);
    }

    /// Makes every fsync fail (or succeed again).
    pub fn set_fail_syncs(&self, fail: bool) {
        self.fail_syncs.store(fail, Ordering::SeqCst);
    }
}

/// What opening a [`FileLog`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OpenReport {
    /// Segment files in the directory.
    pub segments: usize,
    /// First readable seq.
    pub first_seq: u64,
    /// Last seq after recovery.
    pub last_seq: u64,
    /// Bytes cut from a torn tail (0 if the tail was clean).
    pub truncated_bytes: u64,
    /// The segment that was cut, if one was.
    pub truncated_segment: Option<PathBuf>,
    /// Why it was cut.
    pub truncated_reason: Option<String>,
}

/// The file backend of [`Log`]. Dropping it waits for queued appends.
#[derive(Debug)]
pub struct FileLog {
    inner: Arc<Inner>,
    /// The writer of the active segment. Whoever holds it commits every
    /// queued batch (its own and those queued meanwhile) with one write and
    /// one fdatasync: group commit without a thread of its own, so a lone
    /// appender pays no hand-off at all.
    committer: Mutex<Committer>,
    report: OpenReport,
}

#[derive(Debug)]
struct Inner {
    dir: PathBuf,
    config: FileLogConfig,
    queue: Mutex<Queue>,
    segments: RwLock<Vec<Segment>>,
    first_seq: AtomicU64,
    last_seq: AtomicU64,
    tail: Mutex<()>,
    tail_cv: Condvar,
    poisoned: Mutex<Option<String>>,
    /// `LOCK` in the directory, exclusively locked while the log is open
    /// (released when the last handle drops, or by the kernel when the
    /// process dies).
    _lock: File,
    /// See [`Log::identity`].
    identity: String,
}

#[derive(Debug)]
struct Segment {
    base_seq: u64,
    path: PathBuf,
    file: Arc<File>,
    /// Sparse `(seq, offset)` index, ascending.
    index: Vec<(u64, u64)>,
    /// Acknowledged length.
    len: u64,
    /// Last acknowledged seq (`base_seq - 1` if none).
    last_seq: u64,
}

#[derive(Debug, Default)]
struct Queue {
    pending: VecDeque<Pending>,
}

/// One caller's batch, waiting for the committer.
#[derive(Debug)]
struct Pending {
    /// Payloads, concatenated.
    data: Vec<u8>,
    /// End of each payload in `data`.
    ends: Vec<usize>,
    /// Encoded size.
    frame_bytes: usize,
    done: Arc<Completion>,
}

#[derive(Debug, Default)]
struct Completion {
    result: Mutex<Option<Result<u64, LogError>>>,
    cv: Condvar,
    /// Set by `poke`: the writer was let go with this batch still queued.
    poked: AtomicBool,
}

impl Completion {
    fn complete(&self, r: Result<u64, LogError>) {
        *lock(&self.result) = Some(r);
        self.cv.notify_all();
    }

    /// Completes with `r` unless a result is already there.
    fn complete_if_pending(&self, r: Result<u64, LogError>) {
        let mut g = lock(&self.result);
        if g.is_none() {
            *g = Some(r);
            self.cv.notify_all();
        }
    }

    fn is_done(&self) -> bool {
        lock(&self.result).is_some()
    }

    /// Waits until completed, poked (even before this call), or
    /// `at_most` passes.
    fn wait_a_little(&self, at_most: Duration) {
        let g = lock(&self.result);
        if g.is_none() && !self.poked.swap(false, Ordering::AcqRel) {
            let _ = self.cv.wait_timeout(g, at_most);
        }
    }

    /// Wakes the waiter without completing (so it tries the writer).
    fn poke(&self) {
        self.poked.store(true, Ordering::Release);
        let _g = lock(&self.result);
        self.cv.notify_all();
    }

    fn wait(&self) -> Result<u64, LogError> {
        let mut g = lock(&self.result);
        loop {
            if let Some(r) = g.take() {
                return r;
            }
            g = self.cv.wait(g).unwrap_or_else(PoisonError::into_inner);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Name of the lock file in a log directory.
const LOCK_FILE: &str = "LOCK";
/// Name of the file that holds the log's identity.
const ID_FILE: &str = "log.id";

/// Takes the exclusive lock of `dir` (an advisory `flock` on `dir/LOCK`,
/// which the kernel drops when the process dies), waiting up to `wait`.
fn lock_dir(dir: &Path, wait: Duration) -> Result<File, LogError> {
    let path = dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| LogError::io("open lock file", &path, e))?;
    let deadline = Instant::now() + wait;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(fs::TryLockError::WouldBlock) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(fs::TryLockError::WouldBlock) => {
                return Err(LogError::Locked {
                    dir: dir.to_path_buf(),
                })
            }
            Err(fs::TryLockError::Error(e)) => return Err(LogError::io("lock", &path, e)),
        }
    }
}

/// Reads the log's identity from `dir/log.id`, or makes one (128 bits
/// from the kernel's random source, written to a temporary file, synced
/// and renamed) when the directory has none: a new log, or one made
/// before logs had identities.
fn load_or_create_identity(dir: &Path) -> Result<String, LogError> {
    let path = dir.join(ID_FILE);
    match fs::read_to_string(&path) {
        Ok(text) => {
            let id = text.trim();
            let well_formed = id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit());
            if !well_formed {
                return Err(LogError::Corrupt {
                    segment: path.clone(),
                    offset: 0,
                    reason: format!("log identity is not 32 hex digits: {id:?}"),
                });
            }
            return Ok(format!("file:{id}"));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(LogError::io("read log identity", &path, e)),
    }
    let mut bytes = [0u8; 16];
    File::open("/dev/urandom")
        .and_then(|mut f| io::Read::read_exact(&mut f, &mut bytes))
        .map_err(|e| LogError::io("read /dev/urandom", "/dev/urandom", e))?;
    let id: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let tmp = dir.join(format!("{ID_FILE}.tmp"));
    fs::write(&tmp, format!("{id}\n"))
        .and_then(|()| File::open(&tmp)?.sync_all())
        .and_then(|()| fs::rename(&tmp, &path))
        .map_err(|e| LogError::io("write log identity", &path, e))?;
    sync_dir(dir)?;
    Ok(format!("file:{id}"))
}

fn sync_dir(dir: &Path) -> Result<(), LogError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| LogError::io("fsync directory", dir, e))
}

impl FileLog {
    /// Opens (creating if needed) the log in `dir`, recovering a torn tail
    /// (see [`FileLog::open_report`]) and refusing a corrupt log.
    pub fn open(dir: impl AsRef<Path>, config: FileLogConfig) -> Result<FileLog, LogError> {
        let dir = dir.as_ref().to_path_buf();
        validate(&config)?;
        fs::create_dir_all(&dir).map_err(|e| LogError::io("create directory", &dir, e))?;
        // The lock comes before anything is read: a second writer on the
        // same directory would take the same seqs and tear the first
        // one's records.
        let lock = lock_dir(&dir, config.lock_wait)?;
        let identity = load_or_create_identity(&dir)?;
        let mut bases = Vec::new();
        for entry in fs::read_dir(&dir).map_err(|e| LogError::io("list directory", &dir, e))? {
            let entry = entry.map_err(|e| LogError::io("list directory", &dir, e))?;
            if let Some(base) = entry.file_name().to_str().and_then(parse_segment_name) {
                bases.push(base);
            }
        }
        bases.sort_unstable();
        if bases.is_empty() {
            let path = segment_path(&dir, 1);
            File::create_new(&path).map_err(|e| LogError::io("create segment", &path, e))?;
            sync_dir(&dir)?;
            bases.push(1);
        }
        let mut report = OpenReport {
            segments: bases.len(),
            ..OpenReport::default()
        };
        let mut segments = Vec::with_capacity(bases.len());
        let mut prev_last: Option<u64> = None;
        for (i, &base) in bases.iter().enumerate() {
            let path = segment_path(&dir, base);
            let expected = prev_last.map_or(base.max(1), |l| l + 1);
            if base != expected {
                return Err(LogError::Corrupt {
                    segment: path,
                    offset: 0,
                    reason: format!("segment starts at seq {base}, expected {expected}"),
                });
            }
            let bytes = fs::read(&path).map_err(|e| LogError::io("read segment", &path, e))?;
            let is_last = i + 1 == bases.len();
            let s = scan(
                &path,
                &bytes,
                base,
                is_last,
                config.index_interval_bytes,
                config.max_batch_bytes as u64,
            )?;
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .map_err(|e| LogError::io("open segment", &path, e))?;
            if bytes.len() as u64 > s.valid_len {
                // A torn tail, or zeros written ahead (see
                // `FileLogConfig::preallocate_bytes`) by a writer that did
                // not close the log.
                file.set_len(s.valid_len)
                    .and_then(|()| file.sync_all())
                    .map_err(|e| LogError::io("truncate torn tail", &path, e))?;
            }
            if let Some(reason) = s.torn {
                report.truncated_bytes = s.torn_bytes;
                report.truncated_segment = Some(path.clone());
                report.truncated_reason = Some(reason);
            }
            prev_last = Some(s.last_seq);
            segments.push(Segment {
                base_seq: base,
                path,
                file: Arc::new(file),
                index: s.index,
                len: s.valid_len,
                last_seq: s.last_seq,
            });
        }
        let first_seq = segments[0].base_seq;
        let last = segments.last().map_or(0, |s| s.last_seq);
        report.first_seq = first_seq;
        report.last_seq = last;
        let active = segments.last().expect("at least one segment");
        let committer = Committer {
            file: Arc::clone(&active.file),
            path: active.path.clone(),
            len: active.len,
            zeroed_to: active.len,
            next_seq: last + 1,
            next_index_at: active
                .index
                .last()
                .map_or(0, |&(_, off)| off + config.index_interval_bytes),
            buf: Vec::new(),
            inner: Arc::new(Inner {
                dir,
                config,
                queue: Mutex::new(Queue::default()),
                segments: RwLock::new(segments),
                first_seq: AtomicU64::new(first_seq),
                last_seq: AtomicU64::new(last),
                tail: Mutex::new(()),
                tail_cv: Condvar::new(),
                poisoned: Mutex::new(None),
                _lock: lock,
                identity,
            }),
        };
        Ok(FileLog {
            inner: Arc::clone(&committer.inner),
            committer: Mutex::new(committer),
            report,
        })
    }

    /// What recovery found when this log was opened.
    pub fn open_report(&self) -> &OpenReport {
        &self.report
    }

    /// The directory of the log.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    fn poisoned(&self) -> Option<LogError> {
        lock(&self.inner.poisoned)
            .as_ref()
            .map(|reason| LogError::Poisoned {
                reason: reason.clone(),
            })
    }
}

fn validate(c: &FileLogConfig) -> Result<(), LogError> {
    if c.segment_bytes == 0 || c.index_interval_bytes == 0 {
        return Err(LogError::InvalidConfig(
            "segment_bytes and index_interval_bytes must be positive".into(),
        ));
    }
    if c.max_batch_bytes <= HEADER_BYTES || c.max_batch_bytes > MAX_PAYLOAD_BYTES {
        return Err(LogError::InvalidConfig(format!(
            "max_batch_bytes must be in {}..={MAX_PAYLOAD_BYTES}",
            HEADER_BYTES + 1
        )));
    }
    Ok(())
}

impl Log for FileLog {
    fn append(&self, records: &[&[u8]]) -> Result<u64, LogError> {
        if records.is_empty() {
            return Ok(self.last_seq());
        }
        if let Some(e) = self.poisoned() {
            return Err(e);
        }
        let payload_bytes: usize = records.iter().map(|r| r.len()).sum();
        let frame_bytes = payload_bytes.saturating_add(records.len() * HEADER_BYTES);
        let max = self.inner.config.max_batch_bytes;
        if frame_bytes > max {
            return Err(LogError::BatchTooLarge {
                bytes: frame_bytes,
                max,
            });
        }
        let mut data = Vec::with_capacity(payload_bytes);
        let mut ends = Vec::with_capacity(records.len());
        for r in records {
            data.extend_from_slice(r);
            ends.push(data.len());
        }
        let done = Arc::new(Completion::default());
        lock(&self.inner.queue).pending.push_back(Pending {
            data,
            ends,
            frame_bytes,
            done: Arc::clone(&done),
        });
        // Whoever gets the writer commits everything queued, then lets it
        // go; a caller that finds it taken waits for its batch to be
        // committed by the holder (or for a poke to try again).
        loop {
            if done.is_done() {
                return done.wait();
            }
            let mut committer = match self.committer.try_lock() {
                Ok(c) => c,
                Err(std::sync::TryLockError::WouldBlock) => {
                    done.wait_a_little(Duration::from_millis(1));
                    continue;
                }
                // A holder panicked mid-commit: the segment's state is unknown.
                Err(std::sync::TryLockError::Poisoned(_)) => {
                    let reason = "a commit panicked; reopen the log to recover".to_owned();
                    *lock(&self.inner.poisoned) = Some(reason.clone());
                    return Err(LogError::Poisoned { reason });
                }
            };
            // Commit until this caller's own batch is done (a group or
            // two: the queue is FIFO), then hand over, so no caller stays
            // the writer for others indefinitely.
            while !done.is_done() {
                let group = take_group(&self.inner);
                if group.is_empty() {
                    break;
                }
                let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    committer.commit(&group)
                }));
                if result.is_err() {
                    let reason = "a commit panicked; reopen the log to recover".to_owned();
                    *lock(&self.inner.poisoned) = Some(reason.clone());
                    for p in &group {
                        p.done.complete_if_pending(Err(LogError::Poisoned {
                            reason: reason.clone(),
                        }));
                    }
                    std::panic::resume_unwind(Box::new(reason));
                }
            }
            drop(committer);
            // A batch still queued: wake its owner so it takes the writer
            // now rather than after a timeout.
            if let Some(p) = lock(&self.inner.queue).pending.front() {
                p.done.poke();
            }
        }
    }

    fn read_from(&self, from: u64, max: usize) -> Result<Vec<Record>, LogError> {
        let first = self.first_seq();
        if from < first {
            return Err(LogError::Truncated {
                requested: from,
                first,
            });
        }
        let last = self.last_seq();
        let mut out = Vec::new();
        let mut seq = from;
        while out.len() < max && seq <= last {
            let (file, path, start_seq, start_off, end) = {
                let segs = self
                    .inner
                    .segments
                    .read()
                    .unwrap_or_else(PoisonError::into_inner);
                let i = segs.partition_point(|s| s.base_seq <= seq);
                if i == 0 {
                    return Err(LogError::Truncated {
                        requested: seq,
                        first: self.first_seq(),
                    });
                }
                let s = &segs[i - 1];
                let j = s.index.partition_point(|&(q, _)| q <= seq);
                let (start_seq, start_off) = if j == 0 {
                    (s.base_seq, 0)
                } else {
                    s.index[j - 1]
                };
                (
                    Arc::clone(&s.file),
                    s.path.clone(),
                    start_seq,
                    start_off,
                    s.len,
                )
            };
            let mut reader = SegmentReader::new(&file, &path, start_off, end);
            for _ in start_seq..seq {
                reader.skip_record()?;
            }
            let before = seq;
            while out.len() < max && seq <= last {
                match reader.next_record(seq)? {
                    Some(r) => {
                        out.push(r);
                        seq += 1;
                    }
                    None => break,
                }
            }
            if seq == before {
                // The segment had nothing at `seq` although `seq <= last`.
                return Err(LogError::Corrupt {
                    segment: path,
                    offset: end,
                    reason: format!("seq {seq} missing from its segment"),
                });
            }
        }
        Ok(out)
    }

    fn wait_for(&self, after: u64, timeout: Duration) -> Result<u64, LogError> {
        let deadline = Instant::now() + timeout;
        let mut g = lock(&self.inner.tail);
        loop {
            let last = self.last_seq();
            let now = Instant::now();
            if last > after || now >= deadline {
                return Ok(last);
            }
            g = self
                .inner
                .tail_cv
                .wait_timeout(g, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    fn identity(&self) -> String {
        self.inner.identity.clone()
    }

    fn first_seq(&self) -> u64 {
        self.inner.first_seq.load(Ordering::Acquire)
    }

    fn last_seq(&self) -> u64 {
        self.inner.last_seq.load(Ordering::Acquire)
    }

    fn truncate_before(&self, seq: u64) -> Result<(), LogError> {
        let mut segs = self
            .inner
            .segments
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        // Segment i holds only seqs < seq when the next one starts at or
        // before seq. The last (active) segment is never dropped.
        let drop_count = (0..segs.len().saturating_sub(1))
            .take_while(|&i| segs[i + 1].base_seq <= seq)
            .count();
        if drop_count == 0 {
            return Ok(());
        }
        let dropped: Vec<Segment> = segs.drain(..drop_count).collect();
        self.inner
            .first_seq
            .store(segs[0].base_seq, Ordering::Release);
        drop(segs);
        for s in dropped {
            fs::remove_file(&s.path).map_err(|e| LogError::io("remove segment", &s.path, e))?;
        }
        Ok(())
    }
}

/// The writer's state: the active segment and the next seq.
#[derive(Debug)]
struct Committer {
    inner: Arc<Inner>,
    file: Arc<File>,
    path: PathBuf,
    /// Durable length of the active segment.
    len: u64,
    /// Bytes of the active segment's file, zeros past `len` included
    /// (`FileLogConfig::preallocate_bytes`).
    zeroed_to: u64,
    next_seq: u64,
    next_index_at: u64,
    buf: Vec<u8>,
}

/// Takes the oldest queued batches, up to `max_batch_bytes` together (at
/// least one), in queue order.
fn take_group(inner: &Inner) -> Vec<Pending> {
    let max = inner.config.max_batch_bytes;
    let mut q = lock(&inner.queue);
    let mut bytes = 0usize;
    let mut group = Vec::new();
    while let Some(p) = q.pending.front() {
        if !group.is_empty() && bytes + p.frame_bytes > max {
            break;
        }
        bytes += p.frame_bytes;
        group.extend(q.pending.pop_front());
    }
    group
}

impl Committer {
    /// Writes `group` (splitting it where a segment must roll) and answers
    /// every caller in it.
    fn commit(&mut self, group: &[Pending]) {
        if let Some(reason) = lock(&self.inner.poisoned).clone() {
            for p in group {
                p.done.complete(Err(LogError::Poisoned {
                    reason: reason.clone(),
                }));
            }
            return;
        }
        let segment_bytes = self.inner.config.segment_bytes;
        let interval = self.inner.config.index_interval_bytes;
        let mut i = 0;
        while i < group.len() {
            self.buf.clear();
            let mut index = Vec::new();
            let mut next_index_at = self.next_index_at;
            let mut seq = self.next_seq;
            let mut j = i;
            while j < group.len() {
                let p = &group[j];
                let used = self.len + self.buf.len() as u64;
                if used > 0 && used + p.frame_bytes as u64 > segment_bytes {
                    break;
                }
                let mut start = 0;
                for (k, &end) in p.ends.iter().enumerate() {
                    let offset = self.len + self.buf.len() as u64;
                    if offset >= next_index_at {
                        index.push((seq, offset));
                        next_index_at = offset + interval;
                    }
                    let continues = k + 1 < p.ends.len();
                    encode(&mut self.buf, seq, &p.data[start..end], continues);
                    start = end;
                    seq += 1;
                }
                j += 1;
            }
            if j == i {
                if let Err(e) = self.roll() {
                    fail(&group[i..], &e);
                    return;
                }
                continue;
            }
            if let Err(e) = self.flush(seq - 1, index) {
                fail(&group[i..], &e);
                return;
            }
            self.next_index_at = next_index_at;
            let mut first = self.next_seq;
            for p in &group[i..j] {
                p.done.complete(Ok(first));
                first += p.ends.len() as u64;
            }
            self.next_seq = seq;
            i = j;
        }
    }

    /// Writes and syncs `buf` at the end of the active segment, then
    /// publishes it (through `last_seq`).
    fn flush(&mut self, last_seq: u64, index: Vec<(u64, u64)>) -> Result<(), LogError> {
        let faults = self.inner.config.faults.as_deref();
        if let Err(e) = write_at(&self.file, &self.buf, self.len, faults) {
            self.rollback(&e);
            return Err(LogError::io("write", &self.path, e));
        }
        self.write_ahead(self.len + self.buf.len() as u64);
        if self.inner.config.fsync == FsyncPolicy::Always {
            if let Err(e) = sync(&self.file, self.inner.config.faults.as_deref()) {
                // The kernel may have dropped the dirty pages and marked
                // them clean: a retry could "succeed" without the data.
                *lock(&self.inner.poisoned) =
                    Some(format!("fdatasync {}: {e}", self.path.display()));
                self.rollback(&e);
                return Err(LogError::io("fdatasync", &self.path, e));
            }
        }
        self.len += self.buf.len() as u64;
        {
            let mut segs = self
                .inner
                .segments
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            let s = segs.last_mut().expect("active segment");
            s.len = self.len;
            s.last_seq = last_seq;
            s.index.extend(index);
        }
        self.inner.last_seq.store(last_seq, Ordering::Release);
        drop(lock(&self.inner.tail));
        self.inner.tail_cv.notify_all();
        Ok(())
    }

    /// Writes zeros past `end` when an append has reached the zeros
    /// written before, so that the `fdatasync`s of the next appends find
    /// the file's size unchanged. Before the sync that makes the append
    /// durable, so that one sync covers both. A failure only costs the
    /// speed-up: the zeros are cut off again. A commit of more than a
    /// quarter of `preallocate_bytes` writes none: its sync is dominated
    /// by its own bytes, not by the size's commit, and the zeros would
    /// double the bytes written.
    fn write_ahead(&mut self, end: u64) {
        let ahead = self.inner.config.preallocate_bytes;
        if ahead == 0
            || self.inner.config.fsync != FsyncPolicy::Always
            || end <= self.zeroed_to
            || self.buf.len() as u64 > ahead / 4
        {
            return;
        }
        // Not past the size at which the segment rolls.
        let to = (end + ahead).min(self.inner.config.segment_bytes.max(end));
        if to == end {
            return;
        }
        let zeros = vec![0u8; (to - end) as usize];
        match self.file.write_all_at(&zeros, end) {
            Ok(()) => self.zeroed_to = to,
            Err(_) => {
                let _ = self.file.set_len(end);
                self.zeroed_to = end;
            }
        }
    }

    /// Cuts the active segment back to its durable length after a failed
    /// write; poisons the log if even that fails.
    fn rollback(&mut self, cause: &io::Error) {
        self.zeroed_to = self.len;
        if let Err(e) = self.file.set_len(self.len) {
            let mut p = lock(&self.inner.poisoned);
            if p.is_none() {
                *p = Some(format!(
                    "rollback of {} after `{cause}` failed: {e}",
                    self.path.display()
                ));
            }
        }
    }

    /// Starts a new segment at `next_seq`.
    fn roll(&mut self) -> Result<(), LogError> {
        self.cut_zeros();
        let dir = &self.inner.dir;
        let path = segment_path(dir, self.next_seq);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| LogError::io("create segment", &path, e))?;
        if self.inner.config.fsync == FsyncPolicy::Always {
            if let Err(e) = sync_dir(dir) {
                let _ = fs::remove_file(&path);
                return Err(e);
            }
        }
        let file = Arc::new(file);
        self.inner
            .segments
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Segment {
                base_seq: self.next_seq,
                path: path.clone(),
                file: Arc::clone(&file),
                index: Vec::new(),
                len: 0,
                last_seq: self.next_seq - 1,
            });
        self.file = file;
        self.path = path;
        self.len = 0;
        self.zeroed_to = 0;
        self.next_index_at = 0;
        Ok(())
    }

    /// Cuts the zeros written ahead off the active segment (a sealed
    /// segment, or a log closed cleanly, ends at its last record). Not
    /// synced: zeros left by a crash before the cut are read as the end
    /// of the segment all the same.
    fn cut_zeros(&mut self) {
        if self.zeroed_to > self.len && self.file.set_len(self.len).is_ok() {
            self.zeroed_to = self.len;
        }
    }
}

impl Drop for Committer {
    fn drop(&mut self) {
        self.cut_zeros();
    }
}

fn fail(group: &[Pending], e: &LogError) {
    for p in group {
        p.done.complete(Err(e.clone()));
    }
}

fn write_at(
    file: &File,
    buf: &[u8],
    offset: u64,
    faults: Option<&FaultInjector>,
) -> io::Result<()> {
    if let Some(f) = faults {
        let budget = f.write_budget_bytes.load(Ordering::SeqCst);
        if budget != u64::MAX {
            if (buf.len() as u64) > budget {
                f.write_budget_bytes.store(0, Ordering::SeqCst);
                file.write_all_at(&buf[..budget as usize], offset)?;
                return Err(io::Error::new(
                    io::ErrorKind::StorageFull,
                    "no space left on device (injected)",
                ));
            }
            f.write_budget_bytes
                .store(budget - buf.len() as u64, Ordering::SeqCst);
        }
    }
    file.write_all_at(buf, offset)
}

fn sync(file: &File, faults: Option<&FaultInjector>) -> io::Result<()> {
    if faults.is_some_and(|f| f.fail_syncs.load(Ordering::SeqCst)) {
        return Err(io::Error::other("fdatasync failed (injected)"));
    }
    file.sync_data()
}
