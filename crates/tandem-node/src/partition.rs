//! One log partition as a node serves it: an appender thread that batches
//! concurrent commands into one `Log::append` (one fsync, one Kafka
//! message), and a replica thread that applies the partition in seq order
//! and hands each command's events to whoever waits for that seq.
//!
//! The node never matches anything itself: the answer to an order is what
//! the node's own replica emitted when it applied the order's seq, so every
//! node of every version answers from the same log in the same way.
//!
//! Idempotent replays: for each accepted `place`, the replica keeps the
//! command's canonical bytes and its answer (a bounded window, oldest
//! forgotten first). A retried place that finds its id taken is answered
//! with the original answer when its bytes are identical, and is a conflict
//! otherwise. The window is filled from the log, so it holds orders entered
//! through any node.
//!
//! Cancels and amends are idempotent the same way: for each order, the
//! latest cancel or amend that took effect (not rejected) is kept with its
//! canonical bytes (which hold the account) and its answer, in a second
//! bounded window (`limits.change_window`). A request with the same bytes
//! while it is still the latest change to that order is a repeat: answered
//! with the original seq and events without an append, or, when both copies
//! were appended before either was answered, the second copy (which the
//! engine rejects) is answered with the original. Another account's, or
//! another body's, cancel or amend is not a repeat.
//!
//! Locks: a panic while holding one of this module's locks (a bug in a
//! request's code) must not make every later request panic, so every lock
//! is taken poison-tolerant (`lock`, `read`, `write`); what they guard stays
//! consistent at every point a panic could leave it (maps of answers, whose
//! worst state is a forgotten answer).
//!
//! Threads: each partition's appender (`append-P`) and replica (`replica-P`)
//! thread clears its `up` flag when it ends for any reason, panics
//! included; `/readyz` names a stopped thread and `tandem_thread_up` shows
//! it.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tandem_core::{Command, Engine, Event};
use tandem_log::Log;
use tandem_replica::{Replica, ReplicaConfig};
use tokio::sync::{oneshot, watch};

use crate::checkpoints::{Checkpoint, Checkpoints};
use crate::metrics::Metrics;

pub use crate::answers::{order_key, Outcome, Replay};
use crate::answers::{After, Answers, Before};

/// A mutex guard even if a panicking thread held the lock (see the module
/// doc).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A read guard even if a panicking thread held the lock.
pub(crate) fn read<T>(m: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    m.read().unwrap_or_else(PoisonError::into_inner)
}

/// A write guard even if a panicking thread held the lock.
pub(crate) fn write<T>(m: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    m.write().unwrap_or_else(PoisonError::into_inner)
}

/// Clears a thread's `up` flag (and its gauge) when the thread ends, by
/// return or by panic.
struct UpGuard<'a> {
    up: &'a AtomicBool,
    metrics: &'a Metrics,
    name: &'a str,
}

impl Drop for UpGuard<'_> {
    fn drop(&mut self) {
        self.up.store(false, Ordering::Release);
        self.metrics.set_thread_up(self.name, false);
        if std::thread::panicking() {
            eprintln!("{{\"msg\":\"thread panicked\",\"thread\":{:?}}}", self.name);
        }
    }
}

/// One applied command as the market streams see it.
#[derive(Debug)]
pub struct Published {
    pub seq: u64,
    /// The market the command named (absent for some invalid commands).
    pub market: Option<tandem_core::Sym>,
    /// Same bytes as `Outcome::events`.
    pub events: Bytes,
}

/// Applied commands buffered per partition for slow stream subscribers
/// (a subscriber that falls further behind is told it lagged).
pub const STREAM_BUFFER: usize = 4096;

/// Answers of recently applied commands nobody waited for yet: the
/// appender takes its own batch's answers from here right after applying
/// it (removing them; their seqs stay in `recent_order` until they age out,
/// which is harmless). Bounded; oldest dropped first.
const RECENT: usize = 1 << 16;

/// How long the replica thread sleeps at the tail before it reads again.
const IDLE_POLL: Duration = Duration::from_millis(5);

#[derive(Debug, Default)]
struct Results {
    waiters: HashMap<u64, oneshot::Sender<Arc<Outcome>>>,
    recent: HashMap<u64, Arc<Outcome>>,
    recent_order: VecDeque<u64>,
    /// The answer rules and their windows (`answers`).
    answers: Answers,
}

/// Why a command could not be answered.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error("too many commands waiting for the order log")]
    Overloaded,
    #[error("order log: {0}")]
    Log(String),
    #[error("the node is stopping")]
    Stopping,
    #[error("the replica has not applied seq {0} yet")]
    NotApplied(u64),
    #[error("thread {0} has stopped: this node cannot enter orders; retry on another node")]
    ThreadStopped(String),
}

struct Submit {
    payload: Bytes,
    /// The command `payload` holds, when the submitter has it decoded
    /// (`Partition::submit_decoded`): the appender applies it without
    /// decoding the record again.
    cmd: Option<Command>,
    reply: oneshot::Sender<Result<Reply, String>>,
}

/// What the appender answers a submitter.
enum Reply {
    /// Appended and applied by the appender itself: the command's answer.
    Applied(Arc<Outcome>),
    /// Appended at this seq but not applied yet (the replica is catching
    /// up): wait for the replica to apply it.
    Appended(u64),
}

/// One partition: its log, appender and replica.
pub struct Partition {
    pub id: u32,
    /// `Log::identity` of the partition's log, and its short id
    /// (`short_log_id`). The log itself is held by the appender and replica
    /// threads only, so it is closed (and a file log's directory lock let
    /// go) once both have ended.
    identity: String,
    log_id: String,
    /// Taken at stop: the appender then drains its queue and ends.
    submit: RwLock<Option<SyncSender<Submit>>>,
    /// The replica, once it has caught up (`None` before).
    replica: RwLock<Option<Replica>>,
    results: Mutex<Results>,
    applied: watch::Sender<u64>,
    caught_up: AtomicBool,
    metrics: Arc<Metrics>,
    last_batch: AtomicU64,
    replica_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    append_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Cleared when the appender or the replica thread ends (`UpGuard`).
    appender_up: AtomicBool,
    replica_up: AtomicBool,
    stream: tokio::sync::broadcast::Sender<Arc<Published>>,
    /// Where the replica's snapshots (and the window files beside them) live.
    snapshot_dir: std::path::PathBuf,
    /// Snapshot seq whose idempotency window was saved last.
    windowed: AtomicU64,
    /// The thread writing the last window and checkpoints in the
    /// background (`save_window_behind`).
    window_saver: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Background snapshot failures already logged.
    snapshot_failures: AtomicU64,
    /// When the partition started, and the second the log's end was last
    /// read (for the lag gauge).
    created: Instant,
    lag_checked: AtomicU64,
    /// Chain checkpoints (`checkpoints` module): updated for every applied
    /// command by whoever applies it (which holds the replica's write
    /// lock, so in seq order).
    checkpoints: Mutex<Checkpoints>,
}

impl std::fmt::Debug for Partition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Partition")
            .field("id", &self.id)
            .field("applied_seq", &*self.applied.borrow())
            .finish()
    }
}

/// The short id of a log identity, as consistency tokens and the
/// `x-tandem-log` header carry it: xxh3-64 of the identity, 16 lowercase
/// hex digits.
pub fn short_log_id(identity: &str) -> String {
    format!("{:016x}", xxhash_rust::xxh3::xxh3_64(identity.as_bytes()))
}

impl Partition {
    /// Starts the appender and replica threads of partition `id` over
    /// `log`. The replica restores its newest snapshot and catches up in
    /// the background; `is_caught_up` says when it is done.
    #[allow(clippy::too_many_arguments)] // One caller (`Node::start`); each is a distinct setting.
    pub fn start(
        id: u32,
        log: Arc<dyn Log>,
        replica_cfg: ReplicaConfig,
        max_batch: usize,
        max_pending: usize,
        (idempotency_window, change_window): (usize, usize),
        (checkpoint_every, checkpoints_kept): (u64, usize),
        metrics: Arc<Metrics>,
        stop: Arc<AtomicBool>,
    ) -> Arc<Partition> {
        let (tx, rx) = std::sync::mpsc::sync_channel(max_pending);
        let (applied, _) = watch::channel(0);
        let identity = log.identity();
        let part = Arc::new(Partition {
            id,
            log_id: short_log_id(&identity),
            identity,
            submit: RwLock::new(Some(tx)),
            replica: RwLock::new(None),
            results: Mutex::new(Results {
                answers: Answers::new(idempotency_window, change_window),
                ..Results::default()
            }),
            applied,
            caught_up: AtomicBool::new(false),
            metrics,
            last_batch: AtomicU64::new(0),
            replica_thread: Mutex::new(None),
            append_thread: Mutex::new(None),
            appender_up: AtomicBool::new(true),
            replica_up: AtomicBool::new(true),
            stream: tokio::sync::broadcast::channel(STREAM_BUFFER).0,
            snapshot_dir: replica_cfg.snapshot_dir.clone(),
            windowed: AtomicU64::new(0),
            window_saver: Mutex::new(None),
            snapshot_failures: AtomicU64::new(0),
            created: Instant::now(),
            lag_checked: AtomicU64::new(0),
            checkpoints: Mutex::new(Checkpoints::new(checkpoint_every, checkpoints_kept)),
        });
        let p = Arc::clone(&part);
        let appender_log = Arc::clone(&log);
        part.metrics.set_thread_up(&format!("append-{id}"), true);
        let handle = std::thread::Builder::new()
            .name(format!("append-{id}"))
            .spawn(move || {
                let name = format!("append-{}", p.id);
                let _up = UpGuard {
                    up: &p.appender_up,
                    metrics: &p.metrics,
                    name: &name,
                };
                p.append_loop(&*appender_log, rx, max_batch);
            })
            .expect("spawn appender thread");
        *lock(&part.append_thread) = Some(handle);
        let p = Arc::clone(&part);
        part.metrics.set_thread_up(&format!("replica-{id}"), true);
        let handle = std::thread::Builder::new()
            .name(format!("replica-{id}"))
            .spawn(move || {
                let name = format!("replica-{}", p.id);
                let _up = UpGuard {
                    up: &p.replica_up,
                    metrics: &p.metrics,
                    name: &name,
                };
                p.replica_loop(log, replica_cfg, &stop);
            })
            .expect("spawn replica thread");
        *lock(&part.replica_thread) = Some(handle);
        part
    }

    /// Stops taking commands: the appender appends what is queued and
    /// ends. New submissions are answered `Stopping`.
    pub fn close(&self) {
        write(&self.submit).take();
    }

    /// Waits for the appender (after `close`) and the replica thread (after
    /// the stop flag is set) to end. The log is closed when both have.
    pub fn join(&self) {
        for t in [&self.append_thread, &self.replica_thread] {
            let handle = lock(t).take();
            if let Some(h) = handle {
                let _ = h.join();
            }
        }
    }

    /// The name of a thread of this partition that has ended (`append-P`
    /// or `replica-P`), if any: the node cannot serve this partition.
    pub fn stopped_thread(&self) -> Option<String> {
        if !self.appender_up.load(Ordering::Acquire) {
            return Some(format!("append-{}", self.id));
        }
        if !self.replica_up.load(Ordering::Acquire) {
            return Some(format!("replica-{}", self.id));
        }
        None
    }

    /// Test hook: panics while holding this partition's answer maps and a
    /// metrics lock, as a bug in a request's code would (poisoning them).
    #[doc(hidden)]
    pub fn panic_holding_locks(&self) {
        let _r = lock(&self.results);
        self.metrics.panic_holding_locks();
    }

    /// The identity of this partition's log (`Log::identity`).
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// The short id of the log (`short_log_id`).
    pub fn log_id(&self) -> &str {
        &self.log_id
    }

    /// True once the replica has restored and applied the log as it was at
    /// start.
    pub fn is_caught_up(&self) -> bool {
        self.caught_up.load(Ordering::Acquire)
    }

    /// Seq of the last command the replica applied.
    pub fn applied_seq(&self) -> u64 {
        *self.applied.borrow()
    }

    /// Waits until the replica has applied `seq`, at most `bound`.
    pub async fn wait_applied(&self, seq: u64, bound: Duration) -> bool {
        let mut rx = self.applied.subscribe();
        if *rx.borrow() >= seq {
            return true;
        }
        let _waiting = self.metrics.seq_waiting();
        tokio::time::timeout(bound, rx.wait_for(|&s| s >= seq))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Runs `f` on the engine (for reads), or `None` while the replica is
    /// still restoring. Never blocks the caller's thread for long: while
    /// the replica holds the engine to apply a batch, it retries after a
    /// short sleep, until `bound`.
    pub async fn read<T>(&self, bound: Duration, f: impl Fn(&Engine) -> T) -> Option<T> {
        let until = Instant::now() + bound;
        loop {
            let busy = match self.replica.try_read() {
                Ok(g) => return g.as_ref().map(|r| f(r.engine())),
                Err(std::sync::TryLockError::Poisoned(p)) => {
                    return p.into_inner().as_ref().map(|r| f(r.engine()))
                }
                Err(std::sync::TryLockError::WouldBlock) => true,
            };
            if busy {
                if Instant::now() >= until {
                    return None;
                }
                tokio::time::sleep(Duration::from_micros(100)).await;
            }
        }
    }

    /// Every command this partition's replica applies from now on, in seq
    /// order (for the WebSocket and gRPC market streams).
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Arc<Published>> {
        self.stream.subscribe()
    }

    /// Runs `f` on the engine, blocking the calling thread while the
    /// replica applies a batch. For blocking contexts only; async code
    /// uses `read`.
    pub fn read_blocking<T>(&self, f: impl FnOnce(&Engine) -> T) -> Option<T> {
        let g = read(&self.replica);
        g.as_ref().map(|r| f(r.engine()))
    }

    /// How an accepted order with this key would answer a retry carrying
    /// `payload`.
    pub fn replay(&self, key: &[u8], payload: &[u8]) -> Replay {
        lock(&self.results).answers.replay(key, payload)
    }

    /// The original answer of a cancel or amend with these canonical bytes,
    /// if it is the latest change that took effect on the order `key` (a
    /// repeat of the same request by the same account).
    pub fn replay_change(&self, key: &[u8], payload: &[u8]) -> Option<Arc<Outcome>> {
        lock(&self.results).answers.replay_change(key, payload)
    }

    /// Before appending `cmd`: a repeat of an applied request is answered
    /// from the windows (`answers::Answers::before`).
    pub fn before(&self, cmd: &Command, payload: &[u8]) -> Before {
        // The key is made before the lock: the appender takes it for
        // every command it applies, and a request waiting on it sleeps.
        let key = crate::answers::key_of(cmd);
        lock(&self.results)
            .answers
            .before_keyed(cmd, key.as_deref(), payload)
    }

    /// Once the request's own copy was applied with `own`
    /// (`answers::Answers::after`).
    pub fn after(&self, cmd: &Command, payload: &[u8], own: Arc<Outcome>) -> After {
        // Nearly every answer is its own: no lock for those.
        if !own.duplicate_id {
            return After::Answer(own);
        }
        lock(&self.results).answers.after(cmd, payload, own)
    }

    /// Appends one command (its canonical bytes) and waits for the replica
    /// to apply it; returns its outcome. `bound` limits the wait for the
    /// replica after the append (the append itself is bounded by the log).
    pub async fn submit(
        &self,
        payload: Bytes,
        bound: Duration,
    ) -> Result<Arc<Outcome>, SubmitError> {
        self.submit_decoded(payload, None, bound).await
    }

    /// [`Partition::submit`] with the command the record holds, as its
    /// submitter decoded it (the record's command part is
    /// `tandem_codec::write_command(&cmd)`): the appender does not decode
    /// the record again.
    pub async fn submit_decoded(
        &self,
        payload: Bytes,
        cmd: Option<Command>,
        bound: Duration,
    ) -> Result<Arc<Outcome>, SubmitError> {
        let (reply, rx) = oneshot::channel();
        let sent = match read(&self.submit).as_ref() {
            Some(tx) => tx.try_send(Submit {
                payload,
                cmd,
                reply,
            }),
            None => return Err(SubmitError::Stopping),
        };
        match sent {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => return Err(SubmitError::Overloaded),
            Err(TrySendError::Disconnected(_)) => {
                return Err(SubmitError::ThreadStopped(format!("append-{}", self.id)))
            }
        }
        let seq = match rx.await {
            Ok(Ok(Reply::Applied(o))) => return Ok(o),
            Ok(Ok(Reply::Appended(seq))) => seq,
            Ok(Err(e)) => return Err(SubmitError::Log(e)),
            Err(_) => {
                return Err(match self.stopped_thread() {
                    Some(t) => SubmitError::ThreadStopped(t),
                    None => SubmitError::Stopping,
                })
            }
        };
        let rx = {
            let mut r = lock(&self.results);
            if let Some(o) = r.recent.get(&seq) {
                return Ok(Arc::clone(o));
            }
            if self.applied_seq() >= seq {
                // Applied and already dropped from the recent window: only
                // possible when the node is far behind its own appends.
                return Err(SubmitError::NotApplied(seq));
            }
            let (tx, rx) = oneshot::channel();
            r.waiters.insert(seq, tx);
            rx
        };
        match tokio::time::timeout(bound, rx).await {
            Ok(Ok(o)) => Ok(o),
            Ok(Err(_)) => Err(SubmitError::Stopping),
            Err(_) => {
                lock(&self.results).waiters.remove(&seq);
                Err(SubmitError::NotApplied(seq))
            }
        }
    }

    fn append_loop(&self, log: &dyn Log, rx: Receiver<Submit>, max_batch: usize) {
        let mut batch: Vec<Submit> = Vec::with_capacity(max_batch);
        let mut own: Vec<Arc<Outcome>> = Vec::with_capacity(max_batch);
        while let Ok(first) = rx.recv() {
            batch.push(first);
            while batch.len() < max_batch {
                match rx.try_recv() {
                    Ok(s) => batch.push(s),
                    Err(_) => break,
                }
            }
            let known: Vec<Option<Command>> = batch.iter_mut().map(|s| s.cmd.take()).collect();
            let records: Vec<&[u8]> = batch.iter().map(|s| &s.payload[..]).collect();
            let t = Instant::now();
            let result = log.append(&records);
            self.metrics.log_append(t.elapsed(), batch.len());
            self.last_batch.store(batch.len() as u64, Ordering::Relaxed);
            match result {
                Ok(first) => {
                    // Apply our own batch here, then answer each submitter
                    // with its command's outcome: one wake-up per request,
                    // and the replica thread (which still follows the log
                    // for other writers' appends) is not involved. When the
                    // batch directly follows the applied seq it is applied
                    // from what was just appended (`apply_appended`: the
                    // commands the requests decoded, the rest decoded from
                    // their bytes), not read back; otherwise the log is
                    // read (`step_once`).
                    own.clear();
                    let stepped = match self.apply_appended(first, &records, known, &mut own) {
                        Ok(true) => Ok(()),
                        Ok(false) => self.step_once().map(drop),
                        Err(e) => Err(e),
                    };
                    drop(records);
                    if let Err(e) = stepped {
                        eprintln!(
                            "{{\"msg\":\"replica step failed\",\"partition\":{},\"error\":{:?}}}",
                            self.id,
                            e.to_string()
                        );
                    }
                    let mut own = own.drain(..);
                    let mut r = None;
                    for (i, s) in batch.drain(..).enumerate() {
                        let seq = first + i as u64;
                        let reply = match own.next() {
                            Some(o) => Reply::Applied(o),
                            None => {
                                let r = r.get_or_insert_with(|| lock(&self.results));
                                match r.recent.remove(&seq) {
                                    Some(o) => Reply::Applied(o),
                                    None => Reply::Appended(seq),
                                }
                            }
                        };
                        let _ = s.reply.send(Ok(reply));
                    }
                }
                Err(e) => {
                    let msg = e.to_string();
                    self.metrics.log_append_error();
                    for s in batch.drain(..) {
                        let _ = s.reply.send(Err(msg.clone()));
                    }
                }
            }
        }
    }

    fn replica_loop(&self, log: Arc<dyn Log>, cfg: ReplicaConfig, stop: &AtomicBool) {
        let opened = Replica::open(Arc::clone(&log), cfg).and_then(|(mut r, info)| {
            if let Some((path, seq)) = &info.restored {
                eprintln!(
                    "{{\"msg\":\"snapshot restored\",\"partition\":{},\"seq\":{seq},\"path\":{:?}}}",
                    self.id,
                    path.display().to_string()
                );
            }
            for (path, err) in &info.skipped {
                eprintln!(
                    "{{\"msg\":\"snapshot skipped\",\"partition\":{},\"path\":{:?},\"error\":{:?}}}",
                    self.id,
                    path.display().to_string(),
                    err.to_string()
                );
            }
            if let Some((_, seq)) = &info.restored {
                self.load_window(*seq);
            }
            self.load_checkpoints(r.applied_seq(), info.restored.is_some());
            let restored = r.last_snapshot_seq();
            r.catch_up(|seq, cmd, eng, evs| {
                self.applied_one(seq, cmd, eng, evs, false);
            })?;
            if r.last_snapshot_seq() != restored {
                self.save_window(r.last_snapshot_seq());
            }
            Ok(r)
        });
        let replica = match opened {
            Ok(r) => r,
            Err(e) => {
                eprintln!(
                    "{{\"msg\":\"replica failed\",\"partition\":{},\"error\":{:?}}}",
                    self.id,
                    e.to_string()
                );
                self.metrics.replica_failed();
                return;
            }
        };
        let seq = replica.applied_seq();
        self.applied.send_replace(seq);
        self.metrics.set_replica(self.id, seq, replica.engine());
        *write(&self.replica) = Some(replica);
        self.caught_up.store(true, Ordering::Release);
        eprintln!(
            "{{\"msg\":\"replica caught up\",\"partition\":{},\"seq\":{seq}}}",
            self.id
        );
        self.windowed.store(
            read(&self.replica)
                .as_ref()
                .map_or(0, Replica::last_snapshot_seq),
            Ordering::Relaxed,
        );
        /// Why one turn of the follow loop failed.
        enum Turn {
            Step(tandem_replica::ReplicaError),
            Wait(tandem_log::LogError),
        }
        let _ = tandem_replica::follow_loop(
            &mut (),
            stop,
            |_| self.step_once().map_err(Turn::Step),
            |_, seq| {
                let last = self.idle_wait(&*log, seq).map_err(Turn::Wait)?;
                self.metrics.set_log_last_seq(self.id, last);
                Ok(())
            },
            |_, e| {
                let (msg, error) = match e {
                    Turn::Step(e) => {
                        self.metrics.replica_failed();
                        ("replica step failed", e.to_string())
                    }
                    Turn::Wait(e) => ("log wait failed", e.to_string()),
                };
                eprintln!(
                    "{{\"msg\":{msg:?},\"partition\":{},\"error\":{error:?}}}",
                    self.id
                );
                std::thread::sleep(Duration::from_millis(100));
                Ok(())
            },
        );
        // A final snapshot, so that the next start restores instead of
        // replaying what this run applied. A window still being saved in
        // the background is finished first.
        self.join_window_saver();
        let mut g = write(&self.replica);
        if let Some(r) = g
            .as_mut()
            .filter(|r| r.applied_seq() > r.last_snapshot_seq())
        {
            match r.snapshot_now() {
                Ok(path) => {
                    self.save_window(r.applied_seq());
                    eprintln!(
                    "{{\"msg\":\"snapshot written at stop\",\"partition\":{},\"seq\":{},\"path\":{:?}}}",
                    self.id,
                    r.applied_seq(),
                    path.display().to_string()
                    );
                }
                Err(e) => eprintln!(
                    "{{\"msg\":\"snapshot at stop failed\",\"partition\":{},\"error\":{:?}}}",
                    self.id,
                    e.to_string()
                ),
            }
        }
        // Close the log (and let a file log's directory lock go) once the
        // appender has ended too.
        g.take();
    }

    /// Applies what the log holds beyond the replica (one read batch) and
    /// answers the waiting requests. Called by the replica thread, and by
    /// the appender right after each append so that a node's own commands
    /// are applied without waking another thread. Returns how many commands
    /// were applied and the applied seq; `Ok((0, 0))` before the replica
    /// has caught up.
    fn step_once(&self) -> Result<(usize, u64), tandem_replica::ReplicaError> {
        self.with_replica(|r| {
            r.step(|seq, cmd, eng, evs| {
                self.applied_one(seq, cmd, eng, evs, false);
            })
            .map(Some)
        })
        .map(|(n, seq)| (n.unwrap_or(0), seq))
    }

    /// The appender's own batch, appended at `first`, applied from its
    /// bytes (`Replica::apply_appended`) when it directly follows the
    /// applied seq: `own` gets each command's answer in order and this
    /// returns true. False (nothing applied) otherwise, or before the
    /// replica has caught up.
    fn apply_appended(
        &self,
        first: u64,
        records: &[&[u8]],
        known: Vec<Option<Command>>,
        own: &mut Vec<Arc<Outcome>>,
    ) -> Result<bool, tandem_replica::ReplicaError> {
        let (n, _) = self.with_replica(|r| {
            r.apply_appended_known(first, records, known, |seq, cmd, eng, evs| {
                own.extend(self.applied_one(seq, cmd, eng, evs, true));
            })
        })?;
        Ok(n.is_some())
    }

    /// Runs one apply step `f` under the replica's write lock, then
    /// publishes the applied seq and saves the idempotency window beside a
    /// new snapshot. `f` returns how many commands it applied (`Some(0)`
    /// or `None`: none). `(None, 0)` before the replica has caught up.
    fn with_replica(
        &self,
        f: impl FnOnce(&mut Replica) -> Result<Option<usize>, tandem_replica::ReplicaError>,
    ) -> Result<(Option<usize>, u64), tandem_replica::ReplicaError> {
        let (stepped, snapshot_seq) = {
            let mut g = write(&self.replica);
            let Some(r) = g.as_mut() else {
                return Ok((None, 0));
            };
            let n = f(r);
            let seq = r.applied_seq();
            if n.as_ref().is_ok_and(|&n| n.is_some_and(|n| n > 0)) {
                self.metrics.set_replica(self.id, seq, r.engine());
                self.applied.send_replace(seq);
            }
            let (failures, why) = r.snapshot_failures();
            if self.snapshot_failures.swap(failures, Ordering::Relaxed) != failures {
                eprintln!(
                    "{{\"msg\":\"background snapshot failed, written in the replica thread instead\",\"partition\":{},\"failures\":{failures},\"error\":{:?}}}",
                    self.id,
                    why.unwrap_or("")
                );
            }
            (n.map(|n| (n, seq)), r.last_snapshot_seq())
        };
        if self.windowed.swap(snapshot_seq, Ordering::Relaxed) != snapshot_seq {
            self.save_window_behind(snapshot_seq);
        }
        stepped
    }

    /// At the tail: sleeps `IDLE_POLL` before the replica thread reads
    /// again (a read at the tail returns nothing, so polling is how other
    /// writers' appends are seen; this node's own appends are applied by
    /// its appender). Every second it also refreshes the log's end for the
    /// lag gauge. It does not block in `Log::wait_for`: on Kafka that holds
    /// the log's one reader while it waits for the next message, and the
    /// appender, which reads its own append back through the same reader,
    /// waited behind it (measured in `tandem demo --scenario release`:
    /// p50 58–63 ms through the edge against 19–25 ms with this sleep).
    fn idle_wait(&self, log: &dyn Log, seq: u64) -> Result<u64, tandem_log::LogError> {
        std::thread::sleep(IDLE_POLL);
        let now_s = self.lag_checked.load(Ordering::Relaxed);
        let tick = self.created.elapsed().as_secs();
        if tick != now_s {
            self.lag_checked.store(tick, Ordering::Relaxed);
            return Ok(log.last_seq());
        }
        Ok(seq)
    }

    /// Loads the idempotency window saved beside the snapshot at `seq`.
    fn load_window(&self, seq: u64) {
        let (entries, problem) = crate::window::load(&self.snapshot_dir, seq);
        if let Some(why) = problem {
            eprintln!(
                "{{\"msg\":\"idempotency window not restored\",\"partition\":{},\"error\":{:?}}}",
                self.id, why
            );
        }
        let n = entries.len();
        lock(&self.results).answers.restore(entries);
        eprintln!(
            "{{\"msg\":\"idempotency window restored\",\"partition\":{},\"seq\":{seq},\"entries\":{n}}}",
            self.id
        );
    }

    /// Starts the checkpoints at the replica's restored position `seq`,
    /// with those saved beside its snapshot (if one was restored).
    fn load_checkpoints(&self, seq: u64, restored: bool) {
        let every = lock(&self.checkpoints).every();
        let entries = if restored {
            let (entries, problem) = crate::checkpoints::load(&self.snapshot_dir, seq, every);
            if let Some(why) = problem {
                eprintln!(
                    "{{\"msg\":\"chain checkpoints not restored\",\"partition\":{},\"error\":{:?}}}",
                    self.id, why
                );
            }
            entries
        } else {
            Vec::new()
        };
        let mut c = lock(&self.checkpoints);
        c.restore(seq, entries);
        if let Some(newest) = c.bounds().and_then(|(_, n)| c.get(n)) {
            self.metrics.set_checkpoint(self.id, newest);
        }
    }

    /// Saves the chain checkpoints up to `seq` beside the snapshot at `seq`.
    /// The checkpoint interval K (`limits.checkpoint_every`).
    pub fn checkpoint_every(&self) -> u64 {
        lock(&self.checkpoints).every()
    }

    /// The chain checkpoint at `seq`, if this node keeps one there.
    pub fn checkpoint(&self, seq: u64) -> Option<Checkpoint> {
        lock(&self.checkpoints).get(seq)
    }

    /// Up to `limit` checkpoints with seq in `from..=upto`, oldest first
    /// (the newest ones when `from` is `None`), and the oldest and newest
    /// seq kept.
    pub fn checkpoints(
        &self,
        from: Option<u64>,
        upto: u64,
        limit: usize,
    ) -> (Vec<Checkpoint>, Option<(u64, u64)>) {
        let c = lock(&self.checkpoints);
        (c.range(from, upto, limit), c.bounds())
    }

    /// Saves the idempotency window (and the chain checkpoints) beside the
    /// snapshot at `seq`.
    fn save_window(&self, seq: u64) {
        self.window_job(seq)();
    }

    /// `save_window` on a thread of its own, so that the thread applying
    /// batches (the appender, for this node's own orders) does not stop
    /// to encode, write and fsync a window of up to `answers_kept`
    /// entries (tens of MB: it stalled every request for 0.4–2 s at each
    /// snapshot). Only the entries' list is taken here, under the results
    /// lock. One save at a time: a new one waits for the last.
    fn save_window_behind(&self, seq: u64) {
        let job = self.window_job(seq);
        let mut saver = lock(&self.window_saver);
        if let Some(h) = saver.take() {
            let _ = h.join();
        }
        let id = self.id;
        *saver = match std::thread::Builder::new()
            .name(format!("window-{id}"))
            .spawn(job)
        {
            Ok(h) => Some(h),
            Err(e) => {
                eprintln!(
                    "{{\"msg\":\"idempotency window not saved\",\"partition\":{id},\"error\":{:?}}}",
                    format!("no thread to save it: {e}")
                );
                None
            }
        };
    }

    /// Waits for a background window save to finish.
    fn join_window_saver(&self) {
        if let Some(h) = lock(&self.window_saver).take() {
            let _ = h.join();
        }
    }

    /// What saving the window and checkpoints at `seq` takes, with what
    /// it needs from this partition taken now: the entries and the
    /// checkpoints up to `seq`.
    fn window_job(&self, seq: u64) -> impl FnOnce() + Send + 'static {
        let checkpoints = {
            let c = lock(&self.checkpoints);
            crate::checkpoints::encode(c.every(), &c.upto(seq))
        };
        let window = lock(&self.results).answers.window();
        let (id, dir) = (self.id, self.snapshot_dir.clone());
        move || {
            // Behind the order path: on a busy node this thread takes what
            // the appender and the request threads leave.
            lower_this_threads_priority();
            if let Err(e) = crate::checkpoints::save(&dir, seq, &checkpoints) {
                eprintln!(
                    "{{\"msg\":\"chain checkpoints not saved\",\"partition\":{id},\"error\":{:?}}}",
                    e.to_string()
                );
            }
            let entries = window.entries(seq);
            if let Err(e) = crate::window::save_entries(&dir, seq, &entries) {
                eprintln!(
                    "{{\"msg\":\"idempotency window not saved\",\"partition\":{id},\"error\":{:?}}}",
                    e.to_string()
                );
            }
        }
    }

    /// Called by the replica for every applied command. With `own` (the
    /// appender's own batch, whose submitters it answers itself and which
    /// nobody else waits for yet) the answer is returned rather than kept
    /// in `recent`.
    fn applied_one(
        &self,
        seq: u64,
        cmd: &Command,
        eng: &Engine,
        evs: &[Event],
        own: bool,
    ) -> Option<Arc<Outcome>> {
        {
            let mut c = lock(&self.checkpoints);
            if c.applied(seq, || eng.chain()) {
                if let Some(cp) = c.get(seq) {
                    self.metrics.set_checkpoint(self.id, cp);
                }
            }
        }
        // What needs no window (the events' JSON, the key, the canonical
        // bytes) is made before the results lock, which the requests'
        // `before` takes too: the shorter it is held, the fewer requests
        // sleep on it.
        let prepared = crate::answers::Prepared::new(seq, cmd, eng, evs);
        if self.stream.receiver_count() > 0 {
            // The stream carries what this seq itself emitted (the replica
            // lock, held by the caller, keeps the stream in seq order).
            let _ = self.stream.send(Arc::new(Published {
                seq,
                market: cmd.market().cloned(),
                events: prepared.outcome().events.clone(),
            }));
        }
        let mut r = lock(&self.results);
        // The answer for whoever appended this copy (the original's, for
        // a repeated cancel or amend appended after it took effect).
        let outcome = r.answers.applied_prepared(prepared);
        // A block of forgotten answers (one per 1024) is freed after the
        // lock: freeing 1024 cold entries took about 250 µs, during which
        // every request's lookup waited. It is freed on this thread, whose
        // next answers then reuse the memory (freeing it on another
        // thread cost streamed order entry 4.6 %).
        let retired = r.answers.take_retired();
        let mine = if own {
            drop(r);
            Some(outcome)
        } else {
            match r.waiters.remove(&seq) {
                Some(tx) => {
                    drop(r);
                    let _ = tx.send(outcome);
                }
                None => {
                    if r.recent_order.len() >= RECENT {
                        if let Some(old) = r.recent_order.pop_front() {
                            r.recent.remove(&old);
                        }
                    }
                    r.recent_order.push_back(seq);
                    r.recent.insert(seq, outcome);
                    drop(r);
                }
            }
            None
        };
        drop(retired);
        mine
    }

    /// Commands in the last append batch (for metrics and tests).
    pub fn last_batch_len(&self) -> u64 {
        self.last_batch.load(Ordering::Relaxed)
    }
}

/// Gives the calling thread the lowest CPU priority (nice 19; on Linux
/// the nice value is a thread's own), for work that may wait for the
/// order path: saving a window of a million orders takes a core for
/// seconds, and on a 2-core node it took that core from the requests
/// (a 10 k/s run's p99 went to 56 ms). Nice 19 still gets a share, so it
/// ends even on a node that is never idle. Elsewhere: nothing.
fn lower_this_threads_priority() {
    #[cfg(target_os = "linux")]
    #[allow(unsafe_code)]
    // SAFETY: a plain system call on this thread; an error leaves the
    // priority as it was, which is harmless.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, 0, 19);
    }
}
