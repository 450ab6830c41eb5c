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

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tandem_core::{Command, Engine, Event, RejectReason};
use tandem_log::Log;
use tandem_replica::{Replica, ReplicaConfig};
use tokio::sync::{oneshot, watch};

use crate::metrics::Metrics;

/// What a command produced, as the API answers it.
#[derive(Debug)]
pub struct Outcome {
    pub seq: u64,
    /// The events as a JSON array (`[{"seq":..,"event":..},..]`).
    pub events: Bytes,
    /// A place refused because its id was taken: the caller decides between
    /// an idempotent replay and a conflict.
    pub duplicate_id: bool,
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

/// What the idempotency window holds for one accepted place.
#[derive(Debug)]
struct Accepted {
    /// Canonical bytes of the place command.
    payload: Bytes,
    outcome: Arc<Outcome>,
}

/// How a place with a taken id is answered.
#[derive(Debug)]
pub enum Replay {
    /// Same bytes as the accepted original: its answer.
    Same(Arc<Outcome>),
    /// The id was accepted with another body (or account).
    Conflict,
    /// Not in the window (never accepted, or forgotten).
    Unknown,
}

/// Answers of recently applied commands nobody waited for yet: the
/// appender takes its own batch's answers from here right after applying
/// it (removing them; their seqs stay in `recent_order` until they age out,
/// which is harmless). Bounded; oldest dropped first.
const RECENT: usize = 1 << 16;

#[derive(Debug, Default)]
struct Results {
    waiters: HashMap<u64, oneshot::Sender<Arc<Outcome>>>,
    recent: HashMap<u64, Arc<Outcome>>,
    recent_order: VecDeque<u64>,
    accepted: HashMap<Bytes, Accepted>,
    accepted_order: VecDeque<Bytes>,
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
}

struct Submit {
    payload: Bytes,
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
    pub log: Arc<dyn Log>,
    submit: SyncSender<Submit>,
    /// The replica, once it has caught up (`None` before).
    replica: RwLock<Option<Replica>>,
    results: Mutex<Results>,
    applied: watch::Sender<u64>,
    caught_up: AtomicBool,
    idempotency_window: usize,
    metrics: Arc<Metrics>,
    last_batch: AtomicU64,
    replica_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    stream: tokio::sync::broadcast::Sender<Arc<Published>>,
    /// Highest seq this node's appender has had acknowledged. The appender
    /// applies its own batches itself (`step_once`); the replica thread
    /// only polls for other writers' appends and sleeps on this between
    /// polls.
    appended: Mutex<u64>,
    appended_cv: Condvar,
    /// Where the replica's snapshots (and the window files beside them) live.
    snapshot_dir: std::path::PathBuf,
    /// Snapshot seq whose idempotency window was saved last.
    windowed: AtomicU64,
    /// Background snapshot failures already logged.
    snapshot_failures: AtomicU64,
    /// When the partition started, and the second the log's end was last
    /// read (for the lag gauge).
    created: Instant,
    lag_checked: AtomicU64,
}

impl std::fmt::Debug for Partition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Partition")
            .field("id", &self.id)
            .field("applied_seq", &*self.applied.borrow())
            .finish()
    }
}

/// Key of an order id in a market in the idempotency window.
pub fn order_key(market: &[u8], id: &[u8]) -> Bytes {
    let mut k = Vec::with_capacity(market.len() + id.len() + 1);
    k.extend_from_slice(market);
    k.push(0);
    k.extend_from_slice(id);
    k.into()
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
        idempotency_window: usize,
        metrics: Arc<Metrics>,
        stop: Arc<AtomicBool>,
    ) -> Arc<Partition> {
        let (tx, rx) = std::sync::mpsc::sync_channel(max_pending);
        let (applied, _) = watch::channel(0);
        let part = Arc::new(Partition {
            id,
            log,
            submit: tx,
            replica: RwLock::new(None),
            results: Mutex::new(Results::default()),
            applied,
            caught_up: AtomicBool::new(false),
            idempotency_window,
            metrics,
            last_batch: AtomicU64::new(0),
            replica_thread: Mutex::new(None),
            stream: tokio::sync::broadcast::channel(STREAM_BUFFER).0,
            snapshot_dir: replica_cfg.snapshot_dir.clone(),
            windowed: AtomicU64::new(0),
            snapshot_failures: AtomicU64::new(0),
            created: Instant::now(),
            lag_checked: AtomicU64::new(0),
            appended: Mutex::new(0),
            appended_cv: Condvar::new(),
        });
        let p = Arc::clone(&part);
        std::thread::Builder::new()
            .name(format!("append-{id}"))
            .spawn(move || p.append_loop(rx, max_batch))
            .expect("spawn appender thread");
        let p = Arc::clone(&part);
        let handle = std::thread::Builder::new()
            .name(format!("replica-{id}"))
            .spawn(move || p.replica_loop(replica_cfg, &stop))
            .expect("spawn replica thread");
        *part.replica_thread.lock().expect("thread lock") = Some(handle);
        part
    }

    /// Waits for the replica thread to end (after the stop flag is set).
    pub fn join(&self) {
        let handle = self.replica_thread.lock().expect("thread lock").take();
        if let Some(h) = handle {
            let _ = h.join();
        }
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
                Err(std::sync::TryLockError::Poisoned(_)) => return None,
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
        let g = self.replica.read().ok()?;
        g.as_ref().map(|r| f(r.engine()))
    }

    /// How an accepted order with this key would answer a retry carrying
    /// `payload`.
    pub fn replay(&self, key: &[u8], payload: &[u8]) -> Replay {
        let r = self.results.lock().expect("results lock");
        match r.accepted.get(key) {
            None => Replay::Unknown,
            Some(a) if a.payload[..] == *payload => Replay::Same(Arc::clone(&a.outcome)),
            Some(_) => Replay::Conflict,
        }
    }

    /// Appends one command (its canonical bytes) and waits for the replica
    /// to apply it; returns its outcome. `bound` limits the wait for the
    /// replica after the append (the append itself is bounded by the log).
    pub async fn submit(
        &self,
        payload: Bytes,
        bound: Duration,
    ) -> Result<Arc<Outcome>, SubmitError> {
        let (reply, rx) = oneshot::channel();
        match self.submit.try_send(Submit { payload, reply }) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => return Err(SubmitError::Overloaded),
            Err(TrySendError::Disconnected(_)) => return Err(SubmitError::Stopping),
        }
        let seq = match rx.await {
            Ok(Ok(Reply::Applied(o))) => return Ok(o),
            Ok(Ok(Reply::Appended(seq))) => seq,
            Ok(Err(e)) => return Err(SubmitError::Log(e)),
            Err(_) => return Err(SubmitError::Stopping),
        };
        let rx = {
            let mut r = self.results.lock().expect("results lock");
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
                self.results
                    .lock()
                    .expect("results lock")
                    .waiters
                    .remove(&seq);
                Err(SubmitError::NotApplied(seq))
            }
        }
    }

    fn append_loop(&self, rx: Receiver<Submit>, max_batch: usize) {
        let mut batch: Vec<Submit> = Vec::with_capacity(max_batch);
        while let Ok(first) = rx.recv() {
            batch.push(first);
            while batch.len() < max_batch {
                match rx.try_recv() {
                    Ok(s) => batch.push(s),
                    Err(_) => break,
                }
            }
            let records: Vec<&[u8]> = batch.iter().map(|s| &s.payload[..]).collect();
            let t = Instant::now();
            let result = self.log.append(&records);
            self.metrics.log_append(t.elapsed(), batch.len());
            self.last_batch.store(batch.len() as u64, Ordering::Relaxed);
            match result {
                Ok(first) => {
                    let last = first + batch.len() as u64 - 1;
                    *self.appended.lock().expect("appended lock") = last;
                    // Apply our own batch here, then answer each submitter
                    // with its command's outcome: one wake-up per request,
                    // and the replica thread (which still follows the log
                    // for other writers' appends) is not involved.
                    if let Err(e) = self.step_once() {
                        eprintln!(
                            "{{\"msg\":\"replica step failed\",\"partition\":{},\"error\":{:?}}}",
                            self.id,
                            e.to_string()
                        );
                    }
                    let mut r = self.results.lock().expect("results lock");
                    for (i, s) in batch.drain(..).enumerate() {
                        let seq = first + i as u64;
                        let reply = match r.recent.remove(&seq) {
                            Some(o) => Reply::Applied(o),
                            None => Reply::Appended(seq),
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

    fn replica_loop(&self, cfg: ReplicaConfig, stop: &AtomicBool) {
        let log = Arc::clone(&self.log);
        let opened = Replica::open(log, cfg).and_then(|(mut r, info)| {
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
            let restored = r.last_snapshot_seq();
            r.catch_up(|seq, cmd, eng, evs| self.applied_one(seq, cmd, eng, evs))?;
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
        *self.replica.write().expect("replica lock") = Some(replica);
        self.caught_up.store(true, Ordering::Release);
        eprintln!(
            "{{\"msg\":\"replica caught up\",\"partition\":{},\"seq\":{seq}}}",
            self.id
        );
        self.windowed.store(
            self.replica
                .read()
                .expect("replica lock")
                .as_ref()
                .map_or(0, Replica::last_snapshot_seq),
            Ordering::Relaxed,
        );
        while !stop.load(Ordering::Relaxed) {
            let stepped = self.step_once();
            match stepped {
                Ok((0, seq)) => match self.idle_wait(seq) {
                    Ok(last) => self.metrics.set_log_last_seq(self.id, last),
                    Err(e) => {
                        eprintln!(
                            "{{\"msg\":\"log wait failed\",\"partition\":{},\"error\":{:?}}}",
                            self.id,
                            e.to_string()
                        );
                        std::thread::sleep(Duration::from_millis(100));
                    }
                },
                Ok(_) => {}
                Err(e) => {
                    eprintln!(
                        "{{\"msg\":\"replica step failed\",\"partition\":{},\"error\":{:?}}}",
                        self.id,
                        e.to_string()
                    );
                    self.metrics.replica_failed();
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
        // A final snapshot, so that the next start restores instead of
        // replaying what this run applied.
        let mut g = self.replica.write().expect("replica lock");
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
    }

    /// Applies what the log holds beyond the replica (one read batch) and
    /// answers the waiting requests. Called by the replica thread, and by
    /// the appender right after each append so that a node's own commands
    /// are applied without waking another thread. Returns how many commands
    /// were applied and the applied seq; `Ok((0, 0))` before the replica
    /// has caught up.
    fn step_once(&self) -> Result<(usize, u64), tandem_replica::ReplicaError> {
        let (stepped, snapshot_seq) = {
            let mut g = self.replica.write().expect("replica lock");
            let Some(r) = g.as_mut() else {
                return Ok((0, 0));
            };
            let n = r.step(|seq, cmd, eng, evs| self.applied_one(seq, cmd, eng, evs));
            let seq = r.applied_seq();
            if n.as_ref().is_ok_and(|&n| n > 0) {
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
            self.save_window(snapshot_seq);
        }
        stepped
    }

    /// At the tail: sleeps a short poll interval before the replica thread
    /// reads again (a read at the tail returns nothing, so polling is how
    /// other writers' appends are seen; this node's own appends are applied
    /// by its appender). Every second it also refreshes the log's end for
    /// the lag gauge. It never asks the log for its last record: on Kafka
    /// that moves the shared reader to the tail and back for every poll.
    fn idle_wait(&self, seq: u64) -> Result<u64, tandem_log::LogError> {
        let g = self.appended.lock().expect("appended lock");
        if *g <= seq {
            let _ = self
                .appended_cv
                .wait_timeout(g, Duration::from_millis(5))
                .expect("appended lock");
        }
        let now_s = self.lag_checked.load(Ordering::Relaxed);
        let tick = self.created.elapsed().as_secs();
        if tick != now_s {
            self.lag_checked.store(tick, Ordering::Relaxed);
            return Ok(self.log.last_seq());
        }
        Ok(seq)
    }

    /// Remembers an accepted place for idempotent replays (bounded FIFO).
    fn remember(&self, r: &mut Results, key: Bytes, payload: Bytes, outcome: Arc<Outcome>) {
        if r.accepted_order.len() >= self.idempotency_window {
            if let Some(old) = r.accepted_order.pop_front() {
                r.accepted.remove(&old);
            }
        }
        r.accepted_order.push_back(key.clone());
        r.accepted.insert(key, Accepted { payload, outcome });
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
        let mut r = self.results.lock().expect("results lock");
        for e in entries {
            let outcome = Arc::new(Outcome {
                seq: e.seq,
                events: e.events,
                duplicate_id: false,
            });
            self.remember(&mut r, e.key, e.payload, outcome);
        }
        drop(r);
        eprintln!(
            "{{\"msg\":\"idempotency window restored\",\"partition\":{},\"seq\":{seq},\"entries\":{n}}}",
            self.id
        );
    }

    /// Saves the idempotency window beside the snapshot at `seq`.
    fn save_window(&self, seq: u64) {
        let bytes = {
            let r = self.results.lock().expect("results lock");
            let entries: Vec<crate::window::Entry> = r
                .accepted_order
                .iter()
                .filter_map(|k| r.accepted.get(k).map(|a| (k, a)))
                .filter(|(_, a)| a.outcome.seq <= seq)
                .map(|(k, a)| crate::window::Entry {
                    seq: a.outcome.seq,
                    key: k.clone(),
                    payload: a.payload.clone(),
                    events: a.outcome.events.clone(),
                })
                .collect();
            crate::window::encode(entries.iter())
        };
        if let Err(e) = crate::window::save(&self.snapshot_dir, seq, &bytes) {
            eprintln!(
                "{{\"msg\":\"idempotency window not saved\",\"partition\":{},\"error\":{:?}}}",
                self.id,
                e.to_string()
            );
        }
    }

    /// Called by the replica for every applied command.
    fn applied_one(&self, seq: u64, cmd: &Command, eng: &Engine, evs: &[Event]) {
        let mut json = Vec::with_capacity(64 * evs.len() + 2);
        json.push(b'[');
        for (i, ev) in evs.iter().enumerate() {
            if i > 0 {
                json.push(b',');
            }
            tandem_codec::write_event(eng, Some(seq), ev, &mut json);
        }
        json.push(b']');
        let duplicate_id = matches!(
            evs.first(),
            Some(Event::Rejected {
                reason: RejectReason::DuplicateId,
                ..
            })
        );
        let outcome = Arc::new(Outcome {
            seq,
            events: json.into(),
            duplicate_id,
        });
        let accepted = match (cmd, evs.first()) {
            (Command::Place(p), Some(Event::Accepted { .. })) if self.idempotency_window > 0 => {
                let mut payload = Vec::with_capacity(160);
                tandem_codec::write_command(cmd, &mut payload);
                Some((
                    order_key(p.market.as_bytes(), p.id.as_bytes()),
                    Bytes::from(payload),
                ))
            }
            _ => None,
        };
        if self.stream.receiver_count() > 0 {
            let _ = self.stream.send(Arc::new(Published {
                seq,
                market: cmd.market().cloned(),
                events: outcome.events.clone(),
            }));
        }
        let mut r = self.results.lock().expect("results lock");
        if let Some((key, payload)) = accepted {
            self.remember(&mut r, key, payload, Arc::clone(&outcome));
        }
        match r.waiters.remove(&seq) {
            Some(tx) => {
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
            }
        }
    }

    /// Commands in the last append batch (for metrics and tests).
    pub fn last_batch_len(&self) -> u64 {
        self.last_batch.load(Ordering::Relaxed)
    }
}
