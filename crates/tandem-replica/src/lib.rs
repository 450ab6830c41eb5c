//! The replica loop. A replica reads one partition of the order log in seq
//! order, decodes each record as a command (`tandem_codec`), applies it to
//! its own `tandem_core::Engine`, and keeps the output hash chain; every
//! replica that reads the same log ends with the same books and chain.
//!
//! It writes a snapshot every N commands or T seconds (whichever comes
//! first; `SnapshotPolicy`), atomically (temporary file, fsync, rename,
//! fsync of the directory), and keeps the newest few. Opening a replica
//! restores the newest snapshot that decodes (an unreadable one is skipped
//! and reported, never trusted) and then applies the log tail after it:
//! restart = newest valid snapshot + tail.
//!
//! On Linux a periodic snapshot is written in the background
//! (`SnapshotPolicy::background`): the replica forks, the child process
//! writes its copy-on-write view of the engine to the file and exits, and
//! the replica goes on applying commands at once; it records the snapshot
//! (and prunes old ones) when it reaps the child. The pause is the fork
//! itself (copying page tables, milliseconds per GiB on huge pages), not the
//! seconds a large state takes to encode and write. `snapshot_now` still
//! writes in the calling thread, after waiting for a background one.
//!
//! Wall-clock time is read here, only to decide *when* to snapshot; it never
//! reaches the engine, whose input is the log alone.

use std::fs::{self, File};
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tandem_core::{Command, Config, Engine, Event, SnapshotError};
use tandem_log::{Log, LogError};

/// When to write snapshots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotPolicy {
    /// Snapshot after this many commands since the last one (0 = never by count).
    pub every_commands: u64,
    /// Snapshot when this much time has passed since the last one and at
    /// least one command was applied (`None` = never by time).
    pub every: Option<Duration>,
    /// Snapshots kept on disk (older ones are deleted); at least 1.
    pub keep: usize,
    /// Write periodic snapshots from a forked child process, so that
    /// applying does not wait for them (Linux; elsewhere they are written
    /// in the replica's thread).
    pub background: bool,
}

impl Default for SnapshotPolicy {
    fn default() -> Self {
        SnapshotPolicy {
            every_commands: 1_000_000,
            every: Some(Duration::from_secs(60)),
            keep: 3,
            background: true,
        }
    }
}

/// A replica's configuration.
#[derive(Debug, Clone)]
pub struct ReplicaConfig {
    /// The engine's limits and hash seed.
    pub engine: Config,
    /// Directory of this replica's snapshots (created if missing).
    pub snapshot_dir: PathBuf,
    /// When to snapshot.
    pub policy: SnapshotPolicy,
    /// Most records read from the log per step.
    pub read_batch: usize,
}

impl ReplicaConfig {
    /// Defaults with snapshots in `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        ReplicaConfig {
            engine: Config::default(),
            snapshot_dir: dir.into(),
            policy: SnapshotPolicy::default(),
            read_batch: 4096,
        }
    }
}

/// Why a replica could not open or go on.
#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    #[error("order log: {0}")]
    Log(#[from] LogError),
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "cannot continue: the log starts at seq {first_seq} but the newest usable state is at seq {have} \
         (records {from}..{first_seq} were dropped); restore a newer snapshot"
    )]
    Gap {
        have: u64,
        from: u64,
        first_seq: u64,
    },
    #[error("the log returned seq {got} after seq {after}: seqs must strictly increase")]
    OutOfOrder { after: u64, got: u64 },
}

fn io_err<'a>(
    op: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> ReplicaError + 'a {
    move |source| ReplicaError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// What `Replica::open` found.
#[derive(Debug, Default)]
pub struct OpenInfo {
    /// The snapshot restored and its seq, if any.
    pub restored: Option<(PathBuf, u64)>,
    /// Snapshots that were skipped, newest first, with why.
    pub skipped: Vec<(PathBuf, SnapshotError)>,
}

/// A snapshot file name holds its seq: `snapshot-<seq, 20 digits>.tsnap`.
pub fn snapshot_name(seq: u64) -> String {
    format!("snapshot-{seq:020}.tsnap")
}

fn parse_snapshot_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("snapshot-")?.strip_suffix(".tsnap")?;
    (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

/// Snapshot files in `dir`, newest first.
fn list_snapshots(dir: &Path) -> Result<Vec<(u64, PathBuf)>, ReplicaError> {
    let mut v = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err("list snapshots in", dir))? {
        let entry = entry.map_err(io_err("list snapshots in", dir))?;
        if let Some(seq) = entry.file_name().to_str().and_then(parse_snapshot_name) {
            v.push((seq, entry.path()));
        }
    }
    v.sort_unstable_by_key(|s| std::cmp::Reverse(s.0));
    Ok(v)
}

/// Removes temporary files of snapshots never finished (a writer killed
/// before its rename), but not another live process's (`abandoned_tmp`).
fn remove_partial_snapshots(dir: &Path) -> Result<(), ReplicaError> {
    for entry in fs::read_dir(dir).map_err(io_err("list snapshots in", dir))? {
        let entry = entry.map_err(io_err("list snapshots in", dir))?;
        let name = entry.file_name();
        let partial = name
            .to_str()
            .is_some_and(|n| abandoned_tmp(n, |f| parse_snapshot_name(f).is_some()));
        if partial {
            let path = entry.path();
            fs::remove_file(&path).map_err(io_err("remove partial snapshot", &path))?;
        }
    }
    Ok(())
}

/// A snapshot file's bytes, for `Engine::restore`. On Linux the file is
/// mapped read-only and populated from the page cache in one call, rather
/// than copied into hundreds of MiB of fresh memory (whose page faults cost
/// more than the copy on a virtual machine). That is sound because a
/// snapshot file is never written once it has its name: it is written
/// under a temporary name and renamed, and old ones are unlinked, which
/// leaves a mapping intact. Elsewhere, or if mapping fails, it is read.
enum SnapshotBytes {
    #[cfg(target_os = "linux")]
    Mapped {
        ptr: *mut libc::c_void,
        len: usize,
    },
    Read(Vec<u8>),
}

impl SnapshotBytes {
    fn open(path: &Path) -> std::io::Result<SnapshotBytes> {
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd as _;
            let file = File::open(path)?;
            let len = file.metadata()?.len();
            if let Ok(len @ 1..) = usize::try_from(len) {
                #[allow(unsafe_code)]
                // SAFETY: a fresh private read-only mapping of a file we
                // opened; the kernel picks the address. The file stays valid
                // after `file` is closed (the mapping holds it).
                let ptr = unsafe {
                    libc::mmap(
                        std::ptr::null_mut(),
                        len,
                        libc::PROT_READ,
                        libc::MAP_PRIVATE | libc::MAP_POPULATE,
                        file.as_raw_fd(),
                        0,
                    )
                };
                if ptr != libc::MAP_FAILED {
                    return Ok(SnapshotBytes::Mapped { ptr, len });
                }
            }
        }
        fs::read(path).map(SnapshotBytes::Read)
    }

    fn as_slice(&self) -> &[u8] {
        match self {
            #[cfg(target_os = "linux")]
            #[allow(unsafe_code)]
            // SAFETY: `ptr` maps `len` readable bytes until `drop`, and the
            // file under them is never written (see the type's doc).
            SnapshotBytes::Mapped { ptr, len } => unsafe {
                std::slice::from_raw_parts(ptr.cast::<u8>(), *len)
            },
            SnapshotBytes::Read(v) => v,
        }
    }
}

impl Drop for SnapshotBytes {
    fn drop(&mut self) {
        #[cfg(target_os = "linux")]
        if let SnapshotBytes::Mapped { ptr, len } = *self {
            #[allow(unsafe_code)]
            // SAFETY: unmaps exactly the mapping `open` made; no slice of it
            // outlives `self`.
            unsafe {
                libc::munmap(ptr, len);
            }
        }
    }
}

/// Reads up to `max` records from `from` and decodes each as a command.
fn read_decoded(log: &dyn Log, from: u64, max: usize) -> Result<Vec<(u64, Command)>, ReplicaError> {
    Ok(log
        .read_from(from, max)?
        .iter()
        .map(|r| (r.seq, tandem_codec::decode_record(&r.payload)))
        .collect())
}

/// Writes `engine` to `path` atomically: a temporary file beside it,
/// fsync, rename, fsync of the directory.
fn write_snapshot_file(engine: &Engine, dir: &Path, path: &Path) -> Result<(), ReplicaError> {
    let tmp = tmp_path(path);
    let file = File::create(&tmp).map_err(io_err("create snapshot", &tmp))?;
    engine
        .snapshot_to(BufWriter::with_capacity(1 << 20, &file))
        .map_err(io_err("write snapshot", &tmp))?;
    file.sync_all().map_err(io_err("fsync snapshot", &tmp))?;
    fs::rename(&tmp, path).map_err(io_err("rename snapshot", path))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("fsync snapshot directory", dir))
}

/// What a forked snapshot child does when it panics: nothing that could
/// take a lock. A panic runs the panic hook before it unwinds, and the
/// default hook locks stderr (a custom one may take a logger's lock):
/// locks that another thread of the parent may have held at the fork, and
/// that nobody releases in the child, where that thread does not exist.
/// The child would hang, and the parent's blocking reap (at stop) with it.
/// So before the first fork the parent wraps whatever hook is set with one
/// that, in a snapshot child only, leaves through `_exit` at once (the
/// parent counts the failure and writes the snapshot itself). Only the
/// hook's own read lock is taken, which no thread holds for writing after
/// start-up. A hook set after the first background snapshot replaces the
/// guard: set any hook before.
#[cfg(target_os = "linux")]
mod child_guard {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Once;

    /// Set in the child only (the parent's copy stays false).
    static IN_CHILD: AtomicBool = AtomicBool::new(false);
    /// Fault injection for tests: the next snapshot child panics.
    static PANIC_NEXT: AtomicBool = AtomicBool::new(false);
    static INSTALL: Once = Once::new();

    /// Exit status of a child that panicked.
    pub(super) const PANICKED: i32 = 70;

    pub(super) fn install() {
        INSTALL.call_once(|| {
            let previous = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                if IN_CHILD.load(Ordering::Relaxed) {
                    #[allow(unsafe_code)]
                    // SAFETY: ends this (forked, single-threaded) process
                    // without running anything of the parent's.
                    unsafe {
                        libc::_exit(PANICKED)
                    }
                }
                previous(info)
            }));
        });
    }

    pub(super) fn enter_child() {
        IN_CHILD.store(true, Ordering::Relaxed);
    }

    pub(super) fn maybe_inject_panic() {
        if PANIC_NEXT.load(Ordering::Relaxed) {
            panic!("injected panic in a snapshot child");
        }
    }

    pub(super) fn inject_panic(on: bool) {
        PANIC_NEXT.store(on, Ordering::Relaxed);
    }
}

/// Fault injection for tests: while `on`, every background snapshot child
/// panics before it writes (the parent then counts the failure and writes
/// the snapshot in its own thread). Not for production use.
#[doc(hidden)]
pub fn inject_snapshot_child_panic(on: bool) {
    #[cfg(target_os = "linux")]
    child_guard::inject_panic(on);
    #[cfg(not(target_os = "linux"))]
    let _ = on;
}

/// This process's id, read once (a forked snapshot child keeps its
/// parent's): temporary files carry it, so that two processes writing into
/// one snapshot directory (a hand-over on Kafka, where no log lock keeps
/// them apart) never write the same temporary file.
fn owner() -> u32 {
    static OWNER: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *OWNER.get_or_init(std::process::id)
}

/// The temporary name `name` is written under before its rename:
/// `NAME.<pid>.tmp` (see [`owner`]); the node's window and checkpoints
/// files use it too.
pub fn tmp_name(name: &str) -> String {
    format!("{name}.{}.tmp", owner())
}

/// Is `file` the temporary file of a `name` (as [`is_final`] says) that
/// nobody is writing any more: one of this process, of a process that is
/// gone, or of a build before temporary names carried a pid? Another live
/// process's is left alone.
pub fn abandoned_tmp(file: &str, is_final: impl Fn(&str) -> bool) -> bool {
    let Some(stem) = file.strip_suffix(".tmp") else {
        return false;
    };
    if is_final(stem) {
        return true;
    }
    let Some((name, pid)) = stem.rsplit_once('.') else {
        return false;
    };
    let Ok(pid) = pid.parse::<u32>() else {
        return false;
    };
    is_final(name) && (pid == owner() || !Path::new("/proc").join(pid.to_string()).exists())
}

fn tmp_path(path: &Path) -> PathBuf {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    path.with_file_name(tmp_name(&name))
}

/// The follow loop, written once: until `stop` is set, `step` applies
/// what the log holds beyond the replica (returning how many commands and
/// the applied seq); when it applied nothing, `at_tail(seq)` waits for
/// more. An error of either goes to `on_error`, which ends the loop by
/// returning it or lets it go on. `Replica::follow` runs it over a replica
/// it owns; the node runs it over a replica it shares with its appender
/// (its `step` takes the lock for one step).
pub fn follow_loop<S: ?Sized, E>(
    state: &mut S,
    stop: &AtomicBool,
    mut step: impl FnMut(&mut S) -> Result<(usize, u64), E>,
    mut at_tail: impl FnMut(&mut S, u64) -> Result<(), E>,
    mut on_error: impl FnMut(&mut S, E) -> Result<(), E>,
) -> Result<(), E> {
    while !stop.load(Ordering::Relaxed) {
        let turn = match step(state) {
            Ok((0, seq)) => at_tail(state, seq),
            Ok(_) => Ok(()),
            Err(e) => Err(e),
        };
        if let Err(e) = turn {
            on_error(state, e)?;
        }
    }
    Ok(())
}

/// A snapshot a child process is writing.
#[derive(Debug)]
struct Pending {
    pid: i32,
    seq: u64,
    path: PathBuf,
}

/// One replica of one log partition. See the module doc.
pub struct Replica {
    engine: Engine,
    log: Arc<dyn Log>,
    cfg: ReplicaConfig,
    last_snapshot_seq: u64,
    last_snapshot_at: Instant,
    /// Commands applied since the last snapshot (seqs may have gaps, so
    /// this is counted, not derived from seqs).
    since_snapshot: u64,
    events: Vec<Event>,
    /// The background snapshot being written, if any.
    pending: Option<Pending>,
    /// Background snapshots that failed, and why the last one did.
    background_failures: u64,
    last_failure: Option<String>,
}

impl std::fmt::Debug for Replica {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replica")
            .field("applied_seq", &self.engine.seq())
            .field("last_snapshot_seq", &self.last_snapshot_seq)
            .field("snapshot_dir", &self.cfg.snapshot_dir)
            .finish()
    }
}

impl Replica {
    /// Restores the newest valid snapshot in `cfg.snapshot_dir` (or starts
    /// empty) over `log`. Does not apply the tail yet: call `catch_up`.
    pub fn open(
        log: Arc<dyn Log>,
        cfg: ReplicaConfig,
    ) -> Result<(Replica, OpenInfo), ReplicaError> {
        let dir = cfg.snapshot_dir.clone();
        fs::create_dir_all(&dir).map_err(io_err("create snapshot directory", &dir))?;
        // Read now, in the parent: a forked child names its file with it.
        owner();
        remove_partial_snapshots(&dir)?;
        let mut info = OpenInfo::default();
        let mut engine = None;
        for (seq, path) in list_snapshots(&dir)? {
            let bytes = SnapshotBytes::open(&path).map_err(io_err("read snapshot", &path))?;
            match Engine::restore(bytes.as_slice(), cfg.engine.clone()) {
                Ok(e) if e.seq() == seq => {
                    info.restored = Some((path, seq));
                    engine = Some(e);
                    break;
                }
                Ok(e) => info.skipped.push((
                    path,
                    SnapshotError::Malformed {
                        offset: 0,
                        what: format!(
                            "file name says seq {seq} but the snapshot holds seq {}",
                            e.seq()
                        ),
                    },
                )),
                Err(err) => info.skipped.push((path, err)),
            }
        }
        let engine = engine.unwrap_or_else(|| Engine::new(cfg.engine.clone()));
        let have = engine.seq();
        let first = log.first_seq();
        if !log.covers(have) {
            return Err(ReplicaError::Gap {
                have,
                from: have + 1,
                first_seq: first,
            });
        }
        Ok((
            Replica {
                last_snapshot_seq: have,
                since_snapshot: 0,
                engine,
                log,
                cfg,
                last_snapshot_at: Instant::now(),
                events: Vec::with_capacity(256),
                pending: None,
                background_failures: 0,
                last_failure: None,
            },
            info,
        ))
    }

    /// Seq of the last command applied.
    pub fn applied_seq(&self) -> u64 {
        self.engine.seq()
    }

    /// The engine (for reads: books, orders, the chain).
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Seq of the newest snapshot written or restored.
    pub fn last_snapshot_seq(&self) -> u64 {
        self.last_snapshot_seq
    }

    /// Applies up to `cfg.read_batch` records that are already in the log
    /// and known to this replica's log client ([`Log::read_known`]: a
    /// remote log is not asked for its end on every idle turn).
    /// `on_applied(seq, command, engine, events)` sees each command and its
    /// events.
    /// Returns how many were applied (0 at the tail, or when the log's
    /// client has not fetched the next record yet).
    pub fn step(
        &mut self,
        mut on_applied: impl FnMut(u64, &Command, &Engine, &[Event]),
    ) -> Result<usize, ReplicaError> {
        let from = self.engine.seq() + 1;
        let cmds: Vec<(u64, Command)> = self
            .log
            .read_known(from, self.cfg.read_batch)?
            .iter()
            .map(|r| (r.seq, tandem_codec::decode_record(&r.payload)))
            .collect();
        self.apply_batch(&cmds, &mut on_applied)?;
        Ok(cmds.len())
    }

    /// Applies a batch its caller has just appended to this replica's log
    /// at `first` (`Log::append`'s answer: the batch holds
    /// `first..first + records.len()`), decoding the caller's copy of the
    /// records instead of reading them back. The log returns a record's
    /// bytes unchanged, so this applies exactly what `step` would, and
    /// only when the batch directly follows the applied seq: then no other
    /// record can lie between (seqs strictly increase). Returns `None`,
    /// applying nothing, when it does not follow (another writer's records
    /// or a gap came first, or this replica has already read part of the
    /// batch); the caller then uses `step`.
    pub fn apply_appended(
        &mut self,
        first: u64,
        records: &[&[u8]],
        on_applied: impl FnMut(u64, &Command, &Engine, &[Event]),
    ) -> Result<Option<usize>, ReplicaError> {
        self.apply_appended_known(first, records, Vec::new(), on_applied)
    }

    /// [`Replica::apply_appended`] with some commands already decoded:
    /// `known[i]`, where it is `Some`, is what `records[i]` decodes to
    /// (the caller made the record from that command with
    /// `tandem_codec::write_command`, whose output decodes back to the
    /// same command), so it is not decoded again. Debug builds decode it
    /// anyway and check. `known` may be shorter than `records`.
    pub fn apply_appended_known(
        &mut self,
        first: u64,
        records: &[&[u8]],
        mut known: Vec<Option<Command>>,
        mut on_applied: impl FnMut(u64, &Command, &Engine, &[Event]),
    ) -> Result<Option<usize>, ReplicaError> {
        if records.is_empty() || first != self.engine.seq() + 1 {
            return Ok(None);
        }
        known.resize(records.len(), None);
        let cmds: Vec<(u64, Command)> = records
            .iter()
            .zip(known)
            .zip(first..)
            .map(|((r, k), seq)| match k {
                Some(cmd) => {
                    debug_assert_eq!(
                        tandem_codec::decode_record(r),
                        cmd,
                        "a known command differs from its record"
                    );
                    (seq, cmd)
                }
                None => (seq, tandem_codec::decode_record(r)),
            })
            .collect();
        self.apply_batch(&cmds, &mut on_applied)?;
        Ok(Some(cmds.len()))
    }

    /// Applies a decoded batch in order, checking seqs strictly increase.
    fn apply_batch(
        &mut self,
        cmds: &[(u64, Command)],
        on_applied: &mut impl FnMut(u64, &Command, &Engine, &[Event]),
    ) -> Result<(), ReplicaError> {
        for (i, (seq, cmd)) in cmds.iter().enumerate() {
            let after = self.engine.seq();
            if *seq <= after {
                return Err(ReplicaError::OutOfOrder { after, got: *seq });
            }
            self.engine.look_ahead(|k| cmds.get(i + k).map(|(_, c)| c));
            self.events.clear();
            self.engine.apply(*seq, cmd, &mut self.events);
            self.since_snapshot += 1;
            on_applied(*seq, cmd, &self.engine, &self.events);
            // The count is checked per command (a snapshot lands exactly
            // every N); the clock only once per batch.
            let every = self.cfg.policy.every_commands;
            if self.pending.is_none() && every > 0 && self.since_snapshot >= every {
                self.maybe_snapshot()?;
            }
        }
        self.maybe_snapshot()
    }

    /// Applies everything the log holds now. Returns the applied seq.
    ///
    /// A second thread reads and decodes batches ahead while this one
    /// applies them (a bounded channel of a few batches between them), so
    /// decoding does not add to the time a cold replica needs to catch up.
    pub fn catch_up(
        &mut self,
        mut on_applied: impl FnMut(u64, &Command, &Engine, &[Event]),
    ) -> Result<u64, ReplicaError> {
        let target = self.log.last_seq();
        if target > self.applied_seq() {
            let log = Arc::clone(&self.log);
            let (from, batch) = (self.applied_seq() + 1, self.cfg.read_batch);
            let (tx, rx) =
                std::sync::mpsc::sync_channel::<Result<Vec<(u64, Command)>, ReplicaError>>(4);
            std::thread::scope(|s| -> Result<(), ReplicaError> {
                s.spawn(move || {
                    let mut next = from;
                    while next <= target {
                        let decoded = read_decoded(&*log, next, batch);
                        let done = match &decoded {
                            Ok(cmds) => match cmds.last() {
                                Some((seq, _)) => {
                                    next = seq + 1;
                                    false
                                }
                                None => true,
                            },
                            Err(_) => true,
                        };
                        if tx.send(decoded).is_err() || done {
                            break;
                        }
                    }
                });
                // `rx` is moved in so an early error return drops it and
                // unblocks the reader thread.
                for decoded in rx {
                    self.apply_batch(&decoded?, &mut on_applied)?;
                }
                Ok(())
            })?;
        }
        // Anything appended meanwhile.
        while self.step(&mut on_applied)? > 0 {}
        Ok(self.applied_seq())
    }

    /// Follows the log until `stop` is set: applies records as they are
    /// appended, waking at least every `poll` to check `stop`. The loop is
    /// [`follow_loop`], the one the node runs too.
    pub fn follow(
        &mut self,
        stop: &AtomicBool,
        poll: Duration,
        mut on_applied: impl FnMut(u64, &Command, &Engine, &[Event]),
    ) -> Result<(), ReplicaError> {
        follow_loop(
            self,
            stop,
            |r| Ok((r.step(&mut on_applied)?, r.applied_seq())),
            |r, seq| {
                r.log.wait_for(seq, poll)?;
                r.maybe_snapshot()
            },
            |_, e| Err(e),
        )
    }

    fn maybe_snapshot(&mut self) -> Result<(), ReplicaError> {
        self.reap_or_write(false)?;
        if self.pending.is_some() {
            return Ok(());
        }
        let p = &self.cfg.policy;
        let since = self.since_snapshot;
        let by_count = p.every_commands > 0 && since >= p.every_commands;
        let by_time = since > 0
            && p.every
                .is_some_and(|t| self.last_snapshot_at.elapsed() >= t);
        if by_count || by_time {
            if p.background {
                self.snapshot_in_background()?;
            } else {
                self.snapshot_now()?;
            }
        }
        Ok(())
    }

    /// Is a background snapshot being written?
    pub fn snapshot_pending(&self) -> bool {
        self.pending.is_some()
    }

    /// The process id of the child writing a background snapshot, if any
    /// (for operators and fault tests).
    pub fn snapshot_child(&self) -> Option<i32> {
        self.pending.as_ref().map(|p| p.pid)
    }

    /// Writes a snapshot of the current state now (atomically) and prunes
    /// old ones, after waiting for a background snapshot to end. Returns
    /// its path.
    pub fn snapshot_now(&mut self) -> Result<PathBuf, ReplicaError> {
        // A failed background snapshot is counted; this one replaces it.
        self.reap(true)?;
        let dir = &self.cfg.snapshot_dir;
        let seq = self.engine.seq();
        let path = dir.join(snapshot_name(seq));
        write_snapshot_file(&self.engine, dir, &path)?;
        self.since_snapshot = 0;
        self.last_snapshot_at = Instant::now();
        self.written(seq)?;
        Ok(path)
    }

    /// Starts a background snapshot of the current state now, after waiting
    /// for one in flight; `wait_for_snapshot` waits for it to be written.
    /// Where fork is unavailable the snapshot is written before this returns.
    pub fn start_snapshot(&mut self) -> Result<(), ReplicaError> {
        self.reap_or_write(true)?;
        self.snapshot_in_background()
    }

    /// Waits for a background snapshot to end (if one is being written)
    /// and records it. Returns the seq of the newest snapshot.
    pub fn wait_for_snapshot(&mut self) -> Result<u64, ReplicaError> {
        self.reap_or_write(true)?;
        Ok(self.last_snapshot_seq)
    }

    /// Background snapshots that failed so far (each was then written in
    /// the replica's thread instead), and why the last one failed.
    pub fn snapshot_failures(&self) -> (u64, Option<&str>) {
        (self.background_failures, self.last_failure.as_deref())
    }

    /// `reap`; when the background snapshot failed (its child killed, say
    /// by the OOM killer), writes one here instead, whose error, if it
    /// fails too, is returned.
    fn reap_or_write(&mut self, block: bool) -> Result<(), ReplicaError> {
        if !self.reap(block)? {
            self.snapshot_now()?;
        }
        Ok(())
    }

    /// Records a snapshot written at `seq` and prunes old ones.
    fn written(&mut self, seq: u64) -> Result<(), ReplicaError> {
        self.last_snapshot_seq = seq;
        let dir = &self.cfg.snapshot_dir;
        for (_, old) in list_snapshots(dir)?
            .into_iter()
            .skip(self.cfg.policy.keep.max(1))
        {
            fs::remove_file(&old).map_err(io_err("remove old snapshot", &old))?;
        }
        Ok(())
    }

    /// Forks a child that writes the snapshot; see the module doc. Where
    /// fork is unavailable or fails, writes it here instead.
    #[cfg(target_os = "linux")]
    fn snapshot_in_background(&mut self) -> Result<(), ReplicaError> {
        let seq = self.engine.seq();
        let dir = self.cfg.snapshot_dir.clone();
        let path = dir.join(snapshot_name(seq));
        child_guard::install();
        #[allow(unsafe_code)]
        // SAFETY: after fork the child runs only this thread. It reads its
        // private copy-on-write view of `self.engine` (which this thread
        // owns exclusively here, so no other thread was mid-update) and
        // makes only file system calls and heap allocations, which glibc
        // keeps usable in a forked child; it takes no lock another thread
        // could have held (no stdout/stderr, no logging) and leaves through
        // `_exit`, so no destructor or atexit handler of the parent's state
        // runs twice.
        let (parent, pid) = unsafe { (libc::getpid(), libc::fork()) };
        match pid {
            0 => {
                // Die with the parent: an orphan still writing would race a
                // restarted replica writing the same file name.
                #[allow(unsafe_code)]
                // SAFETY: plain system calls on this process.
                let orphaned = unsafe {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                    libc::getppid() != parent
                };
                // From here a panic must not run the panic hook (the
                // default one locks stderr, which a thread of the parent
                // may have held at the fork and never releases here): the
                // guard installed before the fork ends the child instead.
                child_guard::enter_child();
                child_guard::maybe_inject_panic();
                let ok = !orphaned && write_snapshot_file(&self.engine, &dir, &path).is_ok();
                #[allow(unsafe_code)]
                // SAFETY: ends the child at once, as the comment above says.
                unsafe {
                    libc::_exit(if ok { 0 } else { 1 })
                }
            }
            -1 => {
                self.snapshot_now()?;
            }
            pid => {
                self.pending = Some(Pending { pid, seq, path });
                self.since_snapshot = 0;
                self.last_snapshot_at = Instant::now();
            }
        }
        Ok(())
    }

    #[cfg(not(target_os = "linux"))]
    fn snapshot_in_background(&mut self) -> Result<(), ReplicaError> {
        self.snapshot_now().map(|_| ())
    }

    /// If a background snapshot has ended (or, with `block`, once it has),
    /// records it. `Ok(false)` when it failed (counted, with why).
    #[cfg(target_os = "linux")]
    fn reap(&mut self, block: bool) -> Result<bool, ReplicaError> {
        let Some(p) = &self.pending else {
            return Ok(true);
        };
        let mut status = 0;
        let flags = if block { 0 } else { libc::WNOHANG };
        let r = loop {
            #[allow(unsafe_code)]
            // SAFETY: waits for our own child; `status` is a valid out-pointer.
            let r = unsafe { libc::waitpid(p.pid, &mut status, flags) };
            if r == -1 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted
            {
                continue;
            }
            break r;
        };
        if r == 0 {
            return Ok(true);
        }
        let Pending { seq, path, .. } = self.pending.take().expect("checked above");
        let ok = if r == -1 {
            // Someone else reaped it (SIGCHLD ignored): the file decides.
            path.exists()
        } else {
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0
        };
        if ok {
            self.written(seq)?;
            return Ok(true);
        }
        let _ = fs::remove_file(tmp_path(&path));
        let why = if r == -1 {
            "the child was reaped elsewhere and left no file".to_owned()
        } else if libc::WIFSIGNALED(status) {
            format!("the child was killed by signal {}", libc::WTERMSIG(status))
        } else if libc::WEXITSTATUS(status) == child_guard::PANICKED {
            "the child panicked".to_owned()
        } else {
            format!(
                "the child exited with status {} (create, write, fsync or rename failed)",
                libc::WEXITSTATUS(status)
            )
        };
        self.background_failures += 1;
        self.last_failure = Some(format!("snapshot at seq {seq}: {why}"));
        Ok(false)
    }

    #[cfg(not(target_os = "linux"))]
    fn reap(&mut self, _block: bool) -> Result<bool, ReplicaError> {
        Ok(true)
    }
}

impl Drop for Replica {
    /// A background snapshot still being written is abandoned: the child is
    /// killed and its temporary file removed (the last complete snapshot
    /// stays the newest).
    fn drop(&mut self) {
        #[cfg(target_os = "linux")]
        if let Some(p) = self.pending.take() {
            #[allow(unsafe_code)]
            // SAFETY: signals and reaps our own child.
            unsafe {
                libc::kill(p.pid, libc::SIGKILL);
                libc::waitpid(p.pid, std::ptr::null_mut(), 0);
            }
            let _ = fs::remove_file(tmp_path(&p.path));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_abandoned_temporary_snapshots_are_removed() {
        let dir = std::env::temp_dir().join(format!("tandem-replica-tmp-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let snap = snapshot_name(7);
        let own = tmp_name(&snap);
        let names = [
            format!("{snap}.tmp"),            // a build before pids: abandoned
            own.clone(),                      // this process's: abandoned at open
            format!("{snap}.4000000000.tmp"), // a process that is gone
            format!("{snap}.1.tmp"),          // a live process's (pid 1): kept
            "answers-7.bin.1.tmp".to_owned(), // not a snapshot: kept
            snap.clone(),                     // a finished snapshot: kept
        ];
        for n in &names {
            fs::write(dir.join(n), b"x").unwrap();
        }
        assert!(own.ends_with(&format!(".{}.tmp", std::process::id())));
        remove_partial_snapshots(&dir).unwrap();
        let mut left: Vec<String> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        let mut want = vec![
            format!("{snap}.1.tmp"),
            "answers-7.bin.1.tmp".to_owned(),
            snap,
        ];
        want.sort();
        assert_eq!(left, want);
        let _ = fs::remove_dir_all(&dir);
    }
}
