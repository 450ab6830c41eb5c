//! The run: a fixed schedule (request `i` is due at `start + i / rate`)
//! worked through by as many workers as requests may be in flight. A free
//! worker takes the next request and sends it at its due time (the pacer
//! thread wakes it then) or at once if it is already late; the schedule is
//! never skipped or slowed when the load falls behind, so latency measured
//! from the due time is free of coordinated omission.
//! Answers are read and recorded in sharded recorders; after the run the
//! verifier reads back every accepted order and replays some places.
//! With a samples file, each shard also keeps one small record per
//! measured request, written once after the load and before the verifier.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{Notify, Semaphore};

use crate::answer::{self, Expect, Mismatch};
use crate::client::{Answer, AttemptError, Pools, Target, Token};
use crate::config::LoadgenConfig;
use crate::hist::Histogram;
use crate::report::{Errors, LatencyUs, Orders, Report, Verify};
use crate::samples::{self, Outcome, Recorder, Sample, Schedule};
use crate::workload::{Generator, Method, Op, RequestSpec, SplitMix64, Workload};
use crate::LoadgenError;

/// Recorder shards (request `i` records into shard `i % SHARDS`).
pub(crate) const SHARDS: usize = 16;
/// Examples of verifier findings kept.
const MAX_EXAMPLES: usize = 20;
/// Distinct rejection reasons counted by name (the rest count as `other`).
const MAX_REASONS: usize = 32;
/// Stream of the seed that samples replays.
const REPLAY_STREAM: u64 = 0x5EED_0000_7E91_A7E5;

/// What is kept of one acknowledged place: 32 bytes. The order itself is
/// rebuilt from the seed and `n`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct AckRecord {
    pub(crate) n: u64,
    pub(crate) seq: u64,
    pub(crate) digest: u64,
    pub(crate) partition: u32,
    pub(crate) expect: Expect,
    pub(crate) retried: bool,
}

/// How one request ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Ok,
    Connect,
    Timeout,
    Http(u16),
    Mismatch,
}

/// What one answer tells the recorder.
#[derive(Debug)]
pub(crate) struct Settled {
    pub(crate) kind: Kind,
    pub(crate) status: Option<u16>,
    pub(crate) token: Option<Token>,
    pub(crate) ack: Option<AckRecord>,
    pub(crate) rejected: Option<String>,
    pub(crate) cancel: Option<(u64, bool)>,
}

#[derive(Debug, Default)]
pub(crate) struct Shard {
    // Measured requests only.
    pub(crate) hist: Histogram,
    pub(crate) ok: u64,
    pub(crate) status: BTreeMap<u16, u64>,
    pub(crate) connect: u64,
    pub(crate) timeout: u64,
    pub(crate) http: BTreeMap<u16, u64>,
    pub(crate) body_mismatch: u64,
    pub(crate) backpressure: u64,
    pub(crate) retries: u64,
    pub(crate) retried_requests: u64,
    pub(crate) last_done: Option<Instant>,
    /// When the first measured request was sent.
    pub(crate) first_sent: Option<Instant>,
    // The whole run.
    pub(crate) acks: Vec<AckRecord>,
    pub(crate) accepted: u64,
    pub(crate) rejected: BTreeMap<String, u64>,
    pub(crate) cancelled: Vec<u64>,
    pub(crate) cancels_rejected: u64,
    pub(crate) duplicated_in_run: u64,
    /// The highest token seen per partition.
    pub(crate) tokens: BTreeMap<u32, Token>,
    /// Per-request records of the measured requests, with a samples file.
    pub(crate) samples: Option<Recorder>,
}

/// Keeps the higher of two tokens of one partition.
fn note_token(tokens: &mut BTreeMap<u32, Token>, t: &Token) {
    let e = tokens.entry(t.partition).or_insert_with(|| t.clone());
    if t.seq > e.seq {
        *e = t.clone();
    }
}

impl Shard {
    pub(crate) fn apply(&mut self, s: Settled, m: Measure) {
        if let Some(t) = &s.token {
            note_token(&mut self.tokens, t);
        }
        if let Some(ack) = s.ack {
            if ack.expect != Expect::NotAccepted {
                self.accepted += 1;
            }
            self.acks.push(ack);
        }
        if let Some(reason) = s.rejected {
            if reason == "duplicate_id" {
                self.duplicated_in_run += 1;
            }
            // Reasons come from the server: their number is bounded here.
            let key = if self.rejected.len() < MAX_REASONS || self.rejected.contains_key(&reason) {
                reason
            } else {
                "other".to_owned()
            };
            *self.rejected.entry(key).or_insert(0) += 1;
        }
        match s.cancel {
            Some((n, true)) => self.cancelled.push(n),
            Some((_, false)) => self.cancels_rejected += 1,
            None => {}
        }
        if !m.measured {
            return;
        }
        self.hist.record(m.latency_ns);
        self.backpressure += u64::from(m.pressed);
        self.retries += u64::from(m.retries);
        self.retried_requests += u64::from(m.retries > 0);
        self.last_done = self.last_done.max(Some(m.done));
        self.first_sent = Some(self.first_sent.map_or(m.sent, |f| f.min(m.sent)));
        if let Some(code) = s.status {
            *self.status.entry(code).or_insert(0) += 1;
        }
        match s.kind {
            Kind::Ok => self.ok += 1,
            Kind::Connect => self.connect += 1,
            Kind::Timeout => self.timeout += 1,
            Kind::Http(c) => *self.http.entry(c).or_insert(0) += 1,
            Kind::Mismatch => self.body_mismatch += 1,
        }
    }
}

/// Timing facts of one request.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Measure {
    pub(crate) measured: bool,
    pub(crate) latency_ns: u64,
    pub(crate) pressed: bool,
    pub(crate) retries: u32,
    /// When it was sent (its first attempt).
    pub(crate) sent: Instant,
    pub(crate) done: Instant,
}

#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) workload: Workload,
    pub(crate) pools: Pools,
    pub(crate) shards: Vec<Mutex<Shard>>,
}

/// The parsed targets and the runtime of `cfg.threads` workers, as both
/// modes (HTTP and `--grpc-stream`) start.
pub(crate) fn targets_and_runtime(
    cfg: &LoadgenConfig,
) -> Result<(Vec<Target>, tokio::runtime::Runtime), LoadgenError> {
    let targets = cfg
        .targets
        .iter()
        .map(|t| Target::parse(t))
        .collect::<Result<Vec<_>, _>>()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cfg.threads)
        .enable_all()
        .build()
        .map_err(LoadgenError::Runtime)?;
    Ok((targets, rt))
}

/// Runs the load described by `cfg` and, unless disabled, verifies it.
/// Blocking: it builds its own runtime, so it must not be called from
/// inside an async context.
pub fn run(cfg: &LoadgenConfig) -> Result<Report, LoadgenError> {
    cfg.validate()?;
    if cfg.grpc_stream {
        return crate::stream::run(cfg);
    }
    let (targets, rt) = targets_and_runtime(cfg)?;
    // Created before the load, so that a path that cannot be written
    // fails now rather than after the run.
    let samples_file = match &cfg.samples {
        Some(path) => Some((
            path,
            std::fs::File::create(path).map_err(|error| LoadgenError::Samples {
                path: path.clone(),
                error,
            })?,
        )),
        None => None,
    };
    let workload = Workload::new(cfg);
    let total = cfg.scheduled_requests();
    // Bounded memory: the acknowledgement records are reserved up front
    // (an upper bound: every non-read operation a place), and so are the
    // samples (16 bytes a measured request, at most MAX_REQUESTS).
    let per_shard = (total as f64 * workload.place_share()) as usize / SHARDS + 1;
    let samples_per_shard = (cfg.duration_s * cfg.rate) as usize / SHARDS + 2;
    let shared = Arc::new(Shared {
        pools: Pools::new(
            targets,
            cfg.connections,
            cfg.http2,
            Duration::from_millis(cfg.timeout_ms),
            cfg.retries,
            Duration::from_millis(cfg.retry_backoff_ms),
        ),
        shards: (0..SHARDS)
            .map(|_| {
                Mutex::new(Shard {
                    acks: Vec::with_capacity(per_shard),
                    samples: cfg
                        .samples
                        .is_some()
                        .then(|| Recorder::with_capacity(samples_per_shard)),
                    ..Shard::default()
                })
            })
            .collect(),
        workload,
    });

    let bound = cfg.in_flight_bound();
    // The monotonic start paces the run; the wall clock, read at the
    // same moment, only dates the samples.
    let lead = Duration::from_millis(20);
    let (now, wall) = (Instant::now(), SystemTime::now());
    let start = now + lead;
    let sched = Schedule {
        start_unix_ns: wall
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| (d + lead).as_nanos() as u64),
        period_ns: 1e9 / cfg.rate,
    };
    let measure_from = start + Duration::from_secs_f64(cfg.warmup_s);
    let pacer = Arc::new(Pacer {
        state: Mutex::new(PacerState {
            next: 0,
            gen: Generator::new(&shared.workload),
            due: VecDeque::with_capacity(bound),
            warmup_requests: 0,
            lag_max: Duration::ZERO,
        }),
        thread: std::thread::current(),
        live: AtomicUsize::new(bound),
        start,
        measure_from,
        sched,
        total,
    });
    let workers: Vec<_> = (0..bound)
        .map(|_| rt.spawn(worker(shared.clone(), pacer.clone())))
        .collect();
    // This thread is the pacer: it wakes each waiting worker at its
    // request's due time, and sleeps while no one waits.
    pacer.wake_workers();
    for w in workers {
        // A worker that panicked has recorded nothing more; the report
        // says what was recorded.
        let _ = rt.block_on(w);
    }
    let (placed, warmup_requests, lag_max) = {
        let p = pacer.state.lock().expect("pacer lock");
        (p.gen.orders(), p.warmup_requests, p.lag_max)
    };

    let mut merged = Shard::default();
    let mut acks = Vec::new();
    let mut cancelled = Vec::new();
    let mut recorders = Vec::new();
    for s in &shared.shards {
        let mut s = s.lock().expect("recorder lock");
        acks.append(&mut s.acks);
        cancelled.append(&mut s.cancelled);
        recorders.extend(s.samples.take());
        merge(&mut merged, &s);
    }
    if let Some((path, file)) = samples_file {
        samples::write(file, &sched, recorders).map_err(|error| LoadgenError::Samples {
            path: path.clone(),
            error,
        })?;
    }
    // From the first measured send, not from the end of the warmup: past
    // the load's capacity the warmup's own backlog is still being sent
    // then, and that time is not the measured requests'.
    let from = merged.first_sent.unwrap_or(measure_from).max(measure_from);
    let elapsed = merged
        .last_done
        .map(|d| d.saturating_duration_since(from).as_secs_f64())
        .unwrap_or(0.0)
        .max(1e-3);
    let counts = Counts {
        placed,
        scheduled: total,
        warmup_requests,
        elapsed_s: elapsed,
        target_rate: cfg.rate,
        bound,
        lag_max,
        mode: cfg
            .fixed_path()
            .map_or_else(|| "orders".to_owned(), |p| format!("path {p}")),
    };
    Ok(finish(cfg, rt, shared, merged, acks, cancelled, counts))
}

/// The schedule shared by the workers: request `i` is due at `start +
/// offset(i)`. A free worker takes the next request at once, due or not,
/// so requests are taken in order; one not yet due is queued for the
/// pacer, which wakes its worker at the due time. Under load every
/// request is already due when a worker comes for it and the pacer
/// sleeps: no thread hands a request to another.
struct Pacer {
    state: Mutex<PacerState>,
    /// The pacer's thread, unparked when the first request is queued.
    thread: std::thread::Thread,
    /// Workers still running.
    live: AtomicUsize,
    start: Instant,
    measure_from: Instant,
    sched: Schedule,
    total: u64,
}

struct PacerState {
    /// The next request to take.
    next: u64,
    gen: Generator,
    /// Taken requests not yet due, in schedule order: when each is due
    /// and its worker's bell.
    due: VecDeque<(Instant, Arc<Notify>)>,
    warmup_requests: u64,
    /// Largest delay from a measured request's due time to its send.
    lag_max: Duration,
}

/// One request as a worker took it.
struct Taken {
    i: u64,
    op: Op,
    intended: Instant,
    measured: bool,
    /// Due before a worker was free for it: it waited for the in-flight
    /// bound (or for a core).
    pressed: bool,
}

impl Pacer {
    fn intended(&self, i: u64) -> Instant {
        self.start + Duration::from_nanos(self.sched.offset_ns(i))
    }

    /// Takes the next request; `None` when the schedule is done. One not
    /// yet due is queued with `bell`, which rings at its due time.
    fn take(&self, w: &Workload, bell: &Arc<Notify>) -> Option<Taken> {
        let mut p = self.state.lock().expect("pacer lock");
        if p.next >= self.total {
            return None;
        }
        let i = p.next;
        p.next += 1;
        let op = p.gen.next_op(w);
        let intended = self.intended(i);
        let measured = intended >= self.measure_from;
        p.warmup_requests += u64::from(!measured);
        let now = Instant::now();
        let pressed = intended < now;
        if !pressed {
            if p.due.is_empty() {
                self.thread.unpark();
            }
            p.due.push_back((intended, bell.clone()));
        }
        Some(Taken {
            i,
            op,
            intended,
            measured,
            pressed,
        })
    }

    /// The pacer's loop, on the thread that runs the load: rings each
    /// queued request's bell at its due time, until every worker is done.
    fn wake_workers(&self) {
        loop {
            let now = Instant::now();
            let next = {
                let mut p = self.state.lock().expect("pacer lock");
                while let Some((at, bell)) = p.due.front() {
                    if *at > now {
                        break;
                    }
                    bell.notify_one();
                    p.due.pop_front();
                }
                p.due.front().map(|(at, _)| *at)
            };
            match next {
                Some(at) => std::thread::park_timeout(at.saturating_duration_since(now)),
                None if self.live.load(Ordering::Acquire) == 0 => return,
                // Unparked when a request is queued or the last worker
                // ends; the timeout only bounds a lost wake-up.
                None => std::thread::park_timeout(Duration::from_millis(10)),
            }
        }
    }

    /// Notes a measured request's dispatch lag.
    fn note_lag(&self, lag: Duration) {
        let mut p = self.state.lock().expect("pacer lock");
        p.lag_max = p.lag_max.max(lag);
    }
}

/// One worker: one request at a time, from the schedule, until it ends.
async fn worker(sh: Arc<Shared>, pacer: Arc<Pacer>) {
    let _live = Live(pacer.clone());
    let bell = Arc::new(Notify::new());
    let mut lag_max = Duration::ZERO;
    while let Some(t) = pacer.take(&sh.workload, &bell) {
        if !t.pressed {
            bell.notified().await;
        }
        let sent = Instant::now();
        if t.measured {
            lag_max = lag_max.max(sent.saturating_duration_since(t.intended));
        }
        // Built when sent: a signed request's signing is in its latency.
        let spec = sh.workload.request(t.op);
        let (res, retries) = sh
            .pools
            .send(t.i as usize % sh.pools.targets(), &spec)
            .await;
        let done = Instant::now();
        let settled = settle(&sh.workload, t.op, &res, retries);
        let m = Measure {
            measured: t.measured,
            latency_ns: done.saturating_duration_since(t.intended).as_nanos() as u64,
            pressed: t.pressed && t.measured,
            retries,
            sent,
            done,
        };
        let mut shard = sh.shards[t.i as usize % SHARDS]
            .lock()
            .expect("recorder lock");
        if let (true, Some(rec)) = (t.measured, shard.samples.as_mut()) {
            let outcome = outcome(settled.kind);
            let s = Sample::new(t.i, m.latency_ns, t.op, outcome, settled.status, retries);
            let cluster = res.as_ref().ok().and_then(|a| a.cluster.as_ref());
            rec.push(s, cluster);
        }
        shard.apply(settled, m);
    }
    pacer.note_lag(lag_max);
}

/// Counts a worker out when it ends, even by a panic, so that the pacer
/// never waits for it.
struct Live(Arc<Pacer>);

impl Drop for Live {
    fn drop(&mut self) {
        if self.0.live.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.thread.unpark();
        }
    }
}

/// What the two modes count differently, for the report.
pub(crate) struct Counts {
    /// Orders numbered by the generator.
    pub(crate) placed: u64,
    /// Requests sent or scheduled, warmup included.
    pub(crate) scheduled: u64,
    /// Of which in the warmup.
    pub(crate) warmup_requests: u64,
    /// Seconds from the first measured send to the last measured answer.
    pub(crate) elapsed_s: f64,
    /// Scheduled rate (0 for a closed loop).
    pub(crate) target_rate: f64,
    /// The in-flight bound in effect.
    pub(crate) bound: usize,
    /// Largest dispatch lag.
    pub(crate) lag_max: Duration,
    /// The report's mode.
    pub(crate) mode: String,
}

/// Verifies (unless disabled) and builds the report from the merged
/// recorders, the acknowledgements and the confirmed cancels.
pub(crate) fn finish(
    cfg: &LoadgenConfig,
    rt: tokio::runtime::Runtime,
    shared: Arc<Shared>,
    merged: Shard,
    mut acks: Vec<AckRecord>,
    mut cancelled: Vec<u64>,
    c: Counts,
) -> Report {
    acks.sort_unstable_by_key(|a| a.n);
    cancelled.sort_unstable();
    let elapsed = c.elapsed_s;
    let bound = c.bound;
    let measured = c.scheduled - c.warmup_requests;
    let orders = Orders {
        placed: c.placed,
        acknowledged: acks.len() as u64,
        accepted: merged.accepted,
        rejected: merged.rejected.clone(),
        cancels_confirmed: cancelled.len() as u64,
        cancels_rejected: merged.cancels_rejected,
        duplicated_in_run: merged.duplicated_in_run,
    };
    let verify = if cfg.verify && cfg.fixed_path().is_none() {
        let sh = shared.clone();
        let (tokens, dup) = (merged.tokens.clone(), merged.duplicated_in_run);
        let (seed, ratio) = (cfg.seed, cfg.replay_ratio);
        let pace = (cfg.verify_rate > 0.0).then(|| Duration::from_secs_f64(1.0 / cfg.verify_rate));
        Some(rt.block_on(verify(
            sh, acks, cancelled, tokens, dup, seed, ratio, bound, pace,
        )))
    } else {
        None
    };
    let mut errors = Errors {
        connect: merged.connect,
        timeout: merged.timeout,
        body_mismatch: merged.body_mismatch,
        ..Errors::default()
    };
    for (&code, &n) in &merged.http {
        let map = if code >= 500 {
            &mut errors.http_5xx
        } else {
            &mut errors.http_4xx
        };
        map.insert(code.to_string(), n);
    }
    let report = Report {
        config: cfg.clone(),
        mode: c.mode,
        scheduled: c.scheduled,
        warmup_requests: c.warmup_requests,
        measured,
        ok: merged.ok,
        elapsed_s: (elapsed * 1e3).round() / 1e3,
        target_rate: c.target_rate,
        max_in_flight: bound,
        achieved_rate: ((merged.hist.count() as f64 / elapsed) * 10.0).round() / 10.0,
        latency_us: LatencyUs::from_histogram(&merged.hist),
        dispatch_lag_us_max: (c.lag_max.as_nanos() as f64 / 100.0).round() / 10.0,
        backpressure: merged.backpressure,
        retries: merged.retries,
        retried_requests: merged.retried_requests,
        status: merged
            .status
            .iter()
            .map(|(k, v)| (k.to_string(), *v))
            .collect(),
        errors,
        orders,
        verify,
    };
    drop(shared);
    rt.shutdown_timeout(Duration::from_millis(200));
    report
}

pub(crate) fn merge(into: &mut Shard, s: &Shard) {
    into.hist.merge(&s.hist);
    into.ok += s.ok;
    for (k, v) in &s.status {
        *into.status.entry(*k).or_insert(0) += v;
    }
    into.connect += s.connect;
    into.timeout += s.timeout;
    for (k, v) in &s.http {
        *into.http.entry(*k).or_insert(0) += v;
    }
    into.body_mismatch += s.body_mismatch;
    into.backpressure += s.backpressure;
    into.retries += s.retries;
    into.retried_requests += s.retried_requests;
    into.last_done = into.last_done.max(s.last_done);
    into.first_sent = match (into.first_sent, s.first_sent) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    into.accepted += s.accepted;
    for (k, v) in &s.rejected {
        *into.rejected.entry(k.clone()).or_insert(0) += v;
    }
    into.cancels_rejected += s.cancels_rejected;
    into.duplicated_in_run += s.duplicated_in_run;
    for t in s.tokens.values() {
        note_token(&mut into.tokens, t);
    }
}

/// The `outcome` column of a final outcome.
fn outcome(kind: Kind) -> Outcome {
    match kind {
        Kind::Ok => Outcome::Ok,
        Kind::Connect => Outcome::Connect,
        Kind::Timeout => Outcome::Timeout,
        Kind::Http(c) if c >= 500 => Outcome::Http5xx,
        // settle gives Http only for codes from 400 up.
        Kind::Http(_) => Outcome::Http4xx,
        Kind::Mismatch => Outcome::Mismatch,
    }
}

/// Reads one final outcome.
fn settle(w: &Workload, op: Op, res: &Result<Answer, AttemptError>, retries: u32) -> Settled {
    let mut s = Settled {
        kind: Kind::Ok,
        status: None,
        token: None,
        ack: None,
        rejected: None,
        cancel: None,
    };
    let a = match res {
        Ok(a) => a,
        Err(AttemptError::Connect) => {
            s.kind = Kind::Connect;
            return s;
        }
        Err(AttemptError::Timeout) => {
            s.kind = Kind::Timeout;
            return s;
        }
    };
    s.status = Some(a.status);
    s.token = a.token.clone();
    let read: Result<(), Mismatch> = match (op, a.status) {
        (Op::Place(n), 200) => {
            answer::read_place(&a.body, &w.order_id(n), &w.place(n)).map(|(ans, out)| {
                s.rejected = out.rejected;
                s.ack = Some(AckRecord {
                    n,
                    seq: ans.seq,
                    digest: out.digest,
                    partition: ans.partition,
                    expect: out.expect,
                    retried: retries > 0,
                });
            })
        }
        (Op::Cancel(n), 200) => {
            answer::read_cancel(&a.body, &w.order_id(n)).map(|(_, done)| s.cancel = Some((n, done)))
        }
        (Op::GetOrder(n), 200) => serde_json::from_slice::<answer::OrderView>(&a.body)
            .map_err(|e| Mismatch(e.to_string()))
            .and_then(|v| {
                if v.id == w.order_id(n) {
                    Ok(())
                } else {
                    Err(Mismatch(format!(
                        "asked for {}, got {}",
                        w.order_id(n),
                        v.id
                    )))
                }
            }),
        // A read may overtake its order's place, or follow a rejection.
        (Op::GetOrder(_), 404) => Ok(()),
        (Op::GetBook(_), 200) => serde_json::from_slice::<answer::BookView>(&a.body)
            .map_err(|e| Mismatch(e.to_string()))
            .and_then(|b| b.check()),
        (Op::Path, 200..=299) => Ok(()),
        (_, code) if code >= 400 => {
            s.kind = Kind::Http(code);
            Ok(())
        }
        (_, code) => Err(Mismatch(format!("unexpected status {code}"))),
    };
    if read.is_err() {
        s.kind = Kind::Mismatch;
    }
    s
}

#[derive(Debug, Default)]
struct Tally {
    v: Verify,
}

impl Tally {
    fn example(&mut self, what: String) {
        if self.v.examples.len() < MAX_EXAMPLES {
            self.v.examples.push(what);
        }
    }
}

/// Reads back every accepted order (with the latest consistency token of
/// its partition) and replays the places that were retried plus a sample.
#[allow(clippy::too_many_arguments)]
async fn verify(
    sh: Arc<Shared>,
    acks: Vec<AckRecord>,
    cancelled: Vec<u64>,
    tokens: BTreeMap<u32, Token>,
    duplicated_in_run: u64,
    seed: u64,
    replay_ratio: f64,
    concurrency: usize,
    pace: Option<Duration>,
) -> Verify {
    let tally = Arc::new(Mutex::new(Tally::default()));
    tally.lock().expect("tally lock").v.duplicated = duplicated_in_run;
    let cancelled = Arc::new(cancelled);
    let tokens = Arc::new(tokens);
    let sem = Arc::new(Semaphore::new(concurrency));
    let mut ticks = pace.map(|p| {
        let mut i = tokio::time::interval(p);
        i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        i
    });
    for ack in acks {
        if ack.expect == Expect::NotAccepted {
            continue;
        }
        if let Some(t) = &mut ticks {
            t.tick().await;
        }
        let permit = sem.clone().acquire_owned().await.expect("never closed");
        let (sh, tally, cancelled, tokens) =
            (sh.clone(), tally.clone(), cancelled.clone(), tokens.clone());
        let replay =
            ack.retried || SplitMix64::derive(seed ^ REPLAY_STREAM, ack.n).unit() < replay_ratio;
        tokio::spawn(async move {
            let by_us = cancelled.binary_search(&ack.n).is_ok();
            let read = check_one(&sh, &ack, tokens.get(&ack.partition), by_us).await;
            let replayed = if replay {
                Some(replay_one(&sh, &ack).await)
            } else {
                None
            };
            let id = sh.workload.order_id(ack.n);
            let mut t = tally.lock().expect("tally lock");
            t.v.checked += 1;
            match read {
                Finding::Good => t.v.visible += 1,
                Finding::Lost => {
                    t.v.lost += 1;
                    t.example(format!("lost {id}"));
                }
                Finding::Bad(why) => {
                    t.v.inconsistent += 1;
                    t.example(format!("inconsistent {id}: {why}"));
                }
                Finding::NoAnswer(why) => {
                    t.v.unverified += 1;
                    t.example(format!("unverified {id}: {why}"));
                }
            }
            if let Some(r) = replayed {
                t.v.replayed += 1;
                match r {
                    Finding::Good | Finding::Lost => {}
                    Finding::Bad(why) => {
                        t.v.duplicated += 1;
                        t.example(format!("duplicated {id}: {why}"));
                    }
                    Finding::NoAnswer(why) => {
                        t.v.unverified += 1;
                        t.example(format!("unverified replay {id}: {why}"));
                    }
                }
            }
            drop(t);
            // Released only once tallied: the wait below relies on it.
            drop(permit);
        });
    }
    let _all = sem
        .acquire_many(concurrency as u32)
        .await
        .expect("never closed");
    let t = tally.lock().expect("tally lock");
    t.v.clone()
}

#[derive(Debug)]
enum Finding {
    Good,
    Lost,
    Bad(String),
    NoAnswer(String),
}

fn no_answer(res: &Result<Answer, AttemptError>) -> Finding {
    match res {
        Ok(a) => Finding::NoAnswer(format!("status {}", a.status)),
        Err(e) => Finding::NoAnswer(format!("{e:?}")),
    }
}

async fn check_one(sh: &Shared, ack: &AckRecord, token: Option<&Token>, by_us: bool) -> Finding {
    let w = &sh.workload;
    let spec = RequestSpec {
        method: Method::Get,
        path: w.order_path(ack.n),
        body: bytes::Bytes::new(),
        min_seq: token.map(Token::header),
        signature: None,
    };
    let (res, _) = sh
        .pools
        .send(ack.n as usize % sh.pools.targets(), &spec)
        .await;
    match &res {
        Ok(a) if a.status == 404 => Finding::Lost,
        Ok(a) if a.status == 200 => {
            let v = match serde_json::from_slice::<answer::OrderView>(&a.body) {
                Ok(v) => v,
                Err(e) => return Finding::Bad(format!("order view: {e}")),
            };
            let p = w.place(ack.n);
            let names = (
                w.market_name(p.market),
                w.order_id(ack.n),
                w.account_name(p.account),
            );
            if let Err(Mismatch(why)) = answer::check_view(&v, &p, (&names.0, &names.1, &names.2)) {
                return Finding::Bad(why);
            }
            if answer::status_fits(&v.status, ack.expect, by_us) {
                Finding::Good
            } else {
                Finding::Bad(format!(
                    "status {} after {:?}{}",
                    v.status,
                    ack.expect,
                    if by_us { " and our cancel" } else { "" }
                ))
            }
        }
        _ => no_answer(&res),
    }
}

async fn replay_one(sh: &Shared, ack: &AckRecord) -> Finding {
    let w = &sh.workload;
    let spec = w.place_request(ack.n);
    let (res, _) = sh
        .pools
        .send(ack.n as usize % sh.pools.targets(), &spec)
        .await;
    match &res {
        Ok(a) if a.status == 200 => {
            match answer::read_place(&a.body, &w.order_id(ack.n), &w.place(ack.n)) {
                Ok((ans, out)) => {
                    if ans.partition == ack.partition
                        && ans.seq == ack.seq
                        && out.digest == ack.digest
                    {
                        Finding::Good
                    } else if ans.seq != ack.seq {
                        Finding::Bad(format!("replay got seq {} (first {})", ans.seq, ack.seq))
                    } else {
                        Finding::Bad(format!("replay of seq {} got other events", ack.seq))
                    }
                }
                Err(Mismatch(why)) => Finding::Bad(format!("replay answer: {why}")),
            }
        }
        Ok(a) if a.status == 409 => Finding::Bad("replay answered 409".to_owned()),
        _ => no_answer(&res),
    }
}
