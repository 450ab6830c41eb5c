//! `tandem-bench recovery`: how long a `tandem_replica::Replica` takes to
//! recover its state from the order log, from empty and from a snapshot
//! plus a log tail.
//!
//! 1. **Build.** `--orders` GTC limit places from the `capacity` generator
//!    ([`crate::capacity`]: `--markets` markets `M0000000`.., ids `o1`..,
//!    accounts `a0`..`a99999`, bids 1..=5 ticks below a fixed per-market mid
//!    and asks 1..=5 above, so no book crosses) are rendered as contract
//!    command lines (`contracts/match-jsonl.md`, no trailing newline) and
//!    appended to a fresh `tandem_log::FileLog` in `DIR/log`
//!    (`FsyncPolicy::Never`) in batches of [`BATCH`] records. Timed: the
//!    `Log::append` calls only.
//! 2. **From empty.** `Replica::open` with an empty snapshot directory
//!    (`DIR/snap`; `SnapshotPolicy { every_commands: 0, every: None, .. }`, so
//!    it never snapshots on its own), then `catch_up`; wall time of both.
//! 3. **Snapshot.** `snapshot_now()` on that replica (write, fsync, rename,
//!    directory fsync).
//! 4. **Tail.** `--tail` more commands over the existing markets, seeded:
//!    ~70 % GTC limit places 1 tick through to 5 ticks behind each market's
//!    mid (so some trade), ~20 % cancels of orders from step 1 that are live
//!    at that point, ~10 % market orders (IOC, 1..=100 lots). Liveness is
//!    read from replica 1's engine, which catches up after every appended
//!    batch (so within one batch of [`BATCH`], a cancel may still meet an
//!    order a market order just filled: it is then rejected, and counted).
//! 5. **From snapshot + tail.** A new `FileLog` instance on `DIR/log` (as a
//!    restarted process would open it; its recovery scan is timed on its
//!    own) and a second `Replica::open` on it with `DIR/snap` (restores the
//!    snapshot of step 3), then `catch_up` over the tail. Timed: the open
//!    (= read + `Engine::restore`) and the tail replay, separately and
//!    together, against [`TARGET_FROM_SNAPSHOT_SECS`]. Then both replicas
//!    must have the same `applied_seq()` and `engine().chain()`.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tandem_core::{chain_hex, CancelReason, Config, Engine, Event, OrderStatus, Side};
use tandem_log::{FileLog, FileLogConfig, FsyncPolicy, Log};
use tandem_replica::{Replica, ReplicaConfig, SnapshotPolicy};

use crate::args::RecoveryArgs;
use crate::capacity::{mid_ticks, secs, verdict, OrderGen, ACCOUNTS, LEVELS_PER_SIDE};
use crate::report::{self, mib, thousands, Json, MachineInfo, Rss, ThreadCpu};
use crate::workload::SplitMix64;

/// Target: open + restore a snapshot of 10 M resting orders (3 M markets)
/// and replay a 1 M-command tail, in seconds.
pub const TARGET_FROM_SNAPSHOT_SECS: f64 = 5.0;
/// What the source system needed to warm a node, first and later.
pub const SOURCE_WARM_SECS: (f64, f64) = (180.0, 12.0);
/// Records per `Log::append`.
pub const BATCH: usize = 1000;
/// Records the replicas read per step.
pub const READ_BATCH: usize = 4096;
/// Tries to find a live order to cancel before placing a limit instead.
const CANCEL_TRIES: usize = 16;

fn side_str(s: Side) -> &'static str {
    match s {
        Side::Buy => "buy",
        Side::Sell => "sell",
    }
}

/// Appends a GTC limit place (no newline).
fn push_limit(
    out: &mut Vec<u8>,
    market: u64,
    id: u64,
    account: u64,
    side: Side,
    ticks: u64,
    lots: u64,
) {
    // Writing into a Vec cannot fail.
    let _ = write!(
        out,
        r#"{{"op":"place","market":"M{market:07}","id":"o{id}","account":"a{account}","side":"{}","type":"limit","price":"{}.{:02}","qty":"{lots}","tif":"gtc"}}"#,
        side_str(side),
        ticks / 100,
        ticks % 100,
    );
}

/// Appends a market order (IOC; no newline).
fn push_market(out: &mut Vec<u8>, market: u64, id: u64, account: u64, side: Side, lots: u64) {
    let _ = write!(
        out,
        r#"{{"op":"place","market":"M{market:07}","id":"o{id}","account":"a{account}","side":"{}","type":"market","qty":"{lots}","tif":"ioc"}}"#,
        side_str(side),
    );
}

/// Appends a cancel (no newline).
fn push_cancel(out: &mut Vec<u8>, market: u64, id: u64, account: u64) {
    let _ = write!(
        out,
        r#"{{"op":"cancel","market":"M{market:07}","id":"o{id}","account":"a{account}"}}"#,
    );
}

/// One batch of records, concatenated.
#[derive(Debug, Default)]
struct Batch {
    data: Vec<u8>,
    ends: Vec<usize>,
}

impl Batch {
    fn clear(&mut self) {
        self.data.clear();
        self.ends.clear();
    }

    /// Ends the record written into `data` since the last call.
    fn end_record(&mut self) {
        self.ends.push(self.data.len());
    }

    fn len(&self) -> usize {
        self.ends.len()
    }

    fn records(&self) -> Vec<&[u8]> {
        let mut start = 0;
        self.ends
            .iter()
            .map(|&e| {
                let r = &self.data[start..e];
                start = e;
                r
            })
            .collect()
    }
}

/// Appends `b` as one batch, checking it lands at `expect_first`.
fn append(log: &FileLog, b: &Batch, expect_first: u64, spent: &mut Duration) -> Result<(), String> {
    let recs = b.records();
    let t = Instant::now();
    let first = log.append(&recs).map_err(|e| format!("log append: {e}"))?;
    *spent += t.elapsed();
    if first != expect_first {
        return Err(format!(
            "log append returned first seq {first}, expected {expect_first}"
        ));
    }
    Ok(())
}

/// Files, apparent bytes and allocated bytes under `dir` (not recursive).
fn dir_size(dir: &Path) -> (usize, u64, u64) {
    use std::os::unix::fs::MetadataExt as _;
    let mut files = 0;
    let (mut len, mut alloc) = (0, 0);
    if let Ok(rd) = std::fs::read_dir(dir) {
        for m in rd.flatten().filter_map(|e| e.metadata().ok()) {
            if m.is_file() {
                files += 1;
                len += m.len();
                alloc += m.blocks() * 512;
            }
        }
    }
    (files, len, alloc)
}

/// Event counts of applied commands.
#[derive(Debug, Clone, Copy, Default)]
struct Outcome {
    commands: u64,
    accepted: u64,
    trades: u64,
    rejected: u64,
    cancelled_user: u64,
    cancelled_ioc: u64,
    cancelled_self_trade: u64,
    cancelled_other: u64,
    /// Commands whose events were not exactly one `accepted`.
    not_just_accepted: u64,
}

impl Outcome {
    fn add(&mut self, events: &[Event]) {
        self.commands += 1;
        self.not_just_accepted += u64::from(!matches!(events, [Event::Accepted { .. }]));
        for e in events {
            match e {
                Event::Accepted { .. } => self.accepted += 1,
                Event::Trade { .. } => self.trades += 1,
                Event::Rejected { .. } => self.rejected += 1,
                Event::Cancelled { reason, .. } => match reason {
                    CancelReason::User => self.cancelled_user += 1,
                    CancelReason::Ioc => self.cancelled_ioc += 1,
                    CancelReason::SelfTrade => self.cancelled_self_trade += 1,
                    CancelReason::Fok => self.cancelled_other += 1,
                },
                _ => {}
            }
        }
    }

    fn label(&self) -> String {
        format!(
            "{} accepted, {} trades, {} rejected, cancelled: {} by their owner, {} IOC/market remainders, {} by self-trade prevention",
            thousands(self.accepted as f64),
            thousands(self.trades as f64),
            thousands(self.rejected as f64),
            thousands(self.cancelled_user as f64),
            thousands(self.cancelled_ioc as f64),
            thousands((self.cancelled_self_trade + self.cancelled_other) as f64),
        )
    }

    fn json(&self) -> Json {
        Json::Obj(vec![
            ("commands", Json::Int(self.commands)),
            ("accepted", Json::Int(self.accepted)),
            ("trades", Json::Int(self.trades)),
            ("rejected", Json::Int(self.rejected)),
            ("cancelled_user", Json::Int(self.cancelled_user)),
            ("cancelled_ioc", Json::Int(self.cancelled_ioc)),
            ("cancelled_self_trade", Json::Int(self.cancelled_self_trade)),
            ("cancelled_fok", Json::Int(self.cancelled_other)),
        ])
    }
}

/// Whether order `o{id}` of account `a{account}` in market `M{market:07}`
/// is live in `eng`.
fn is_live(eng: &Engine, s: &mut [String; 3], market: u64, id: u64, account: u64) -> bool {
    for x in s.iter_mut() {
        x.clear();
    }
    let _ = write!(s[0], "M{market:07}");
    let _ = write!(s[1], "o{id}");
    let _ = write!(s[2], "a{account}");
    eng.order(s[0].as_bytes(), s[1].as_bytes(), s[2].as_bytes())
        .is_some_and(|o| o.status == OrderStatus::Open)
}

/// Numbers of the tail's commands by kind.
#[derive(Debug, Clone, Copy, Default)]
struct TailMix {
    limits: u64,
    cancels: u64,
    markets: u64,
    /// Cancel draws that found no live order in [`CANCEL_TRIES`] tries and
    /// became limit places.
    cancel_fallbacks: u64,
}

/// The tail generator (see the module doc).
#[derive(Debug)]
struct TailGen {
    rng: SplitMix64,
    seed: u64,
    /// Markets that exist (`min(markets, orders)`).
    markets: u64,
    /// Market and account of step-1 order `o{i + 1}`.
    order_market: Vec<u32>,
    order_account: Vec<u32>,
    next_id: u64,
    mix: TailMix,
    scratch: [String; 3],
    cancelled_in_batch: HashSet<u64>,
}

impl TailGen {
    /// One batch of `n` commands; liveness is read from `eng`.
    fn batch(&mut self, eng: &Engine, n: usize, out: &mut Batch) {
        self.cancelled_in_batch.clear();
        for _ in 0..n {
            let roll = self.rng.below(100);
            if roll < 20 {
                if self.cancel(eng, out) {
                    self.mix.cancels += 1;
                    out.end_record();
                    continue;
                }
                self.mix.cancel_fallbacks += 1;
            } else if roll < 30 {
                let m = self.rng.below(self.markets);
                let side = self.side();
                let lots = self.rng.range(1, 100);
                let account = self.rng.below(ACCOUNTS);
                push_market(&mut out.data, m, self.next_id, account, side, lots);
                self.next_id += 1;
                self.mix.markets += 1;
                out.end_record();
                continue;
            }
            let m = self.rng.below(self.markets);
            let side = self.side();
            // 1 tick through the mid (may trade) .. LEVELS_PER_SIDE behind it.
            let off = self.rng.below(LEVELS_PER_SIDE + 2);
            let mid = mid_ticks(self.seed, m);
            let ticks = match side {
                Side::Buy => mid + 1 - off,
                Side::Sell => mid - 1 + off,
            };
            let lots = self.rng.range(1, 100);
            let account = self.rng.below(ACCOUNTS);
            push_limit(&mut out.data, m, self.next_id, account, side, ticks, lots);
            self.next_id += 1;
            self.mix.limits += 1;
            out.end_record();
        }
    }

    fn side(&mut self) -> Side {
        if self.rng.below(2) == 0 {
            Side::Buy
        } else {
            Side::Sell
        }
    }

    /// Writes a cancel of a live step-1 order, if one is found.
    fn cancel(&mut self, eng: &Engine, out: &mut Batch) -> bool {
        let n = self.order_market.len() as u64;
        for _ in 0..CANCEL_TRIES {
            let i = self.rng.below(n);
            let (m, a) = (
                u64::from(self.order_market[i as usize]),
                u64::from(self.order_account[i as usize]),
            );
            if self.cancelled_in_batch.contains(&i) || !is_live(eng, &mut self.scratch, m, i + 1, a)
            {
                continue;
            }
            self.cancelled_in_batch.insert(i);
            push_cancel(&mut out.data, m, i + 1, a);
            return true;
        }
        false
    }
}

/// Stage timings of restore + tail replay done by hand.
#[derive(Debug, Clone, Copy)]
struct Diagnosis {
    read_secs: f64,
    restore_secs: f64,
    restore_cpu: ThreadCpu,
    restore_default_secs: f64,
    tail_read_secs: f64,
    tail_decode_secs: f64,
    tail_apply_secs: f64,
    chain_same: bool,
}

/// Reads and restores the snapshot at `snap` (seq `from`), then replays the
/// log after it stage by stage; the final chain must be `chain`.
fn diagnose(
    snap: &Path,
    cfg: &Config,
    log: &dyn Log,
    from: u64,
    chain: u128,
) -> Result<Diagnosis, String> {
    let t = Instant::now();
    let bytes = std::fs::read(snap).map_err(|e| format!("reading {}: {e}", snap.display()))?;
    let read_secs = secs(t.elapsed());
    let restore_default_secs = {
        let t = Instant::now();
        let e = Engine::restore(&bytes, Config::default()).map_err(|e| format!("restore: {e}"))?;
        let s = secs(t.elapsed());
        drop(e);
        s
    };
    let cpu = ThreadCpu::read();
    let t = Instant::now();
    let mut eng = Engine::restore(&bytes, cfg.clone()).map_err(|e| format!("restore: {e}"))?;
    let restore_secs = secs(t.elapsed());
    let restore_cpu = ThreadCpu::read().since(cpu);
    drop(bytes);

    let t = Instant::now();
    let mut records = Vec::new();
    let mut next = from + 1;
    loop {
        let got = log
            .read_from(next, READ_BATCH)
            .map_err(|e| format!("log read: {e}"))?;
        let Some(last) = got.last() else { break };
        next = last.seq + 1;
        records.extend(got);
    }
    let tail_read_secs = secs(t.elapsed());
    let t = Instant::now();
    let cmds: Vec<(u64, tandem_core::Command)> = records
        .iter()
        .map(|r| (r.seq, tandem_codec::decode_command(&r.payload)))
        .collect();
    let tail_decode_secs = secs(t.elapsed());
    drop(records);
    let mut out = Vec::with_capacity(64);
    let t = Instant::now();
    for (i, (seq, c)) in cmds.iter().enumerate() {
        eng.look_ahead(|k| cmds.get(i + k).map(|(_, c)| c));
        out.clear();
        eng.apply(*seq, c, &mut out);
    }
    let tail_apply_secs = secs(t.elapsed());
    Ok(Diagnosis {
        read_secs,
        restore_secs,
        restore_cpu,
        restore_default_secs,
        tail_read_secs,
        tail_decode_secs,
        tail_apply_secs,
        chain_same: eng.chain() == chain,
    })
}

fn replica_err(what: &str) -> impl FnOnce(tandem_replica::ReplicaError) -> String + '_ {
    move |e| format!("{what}: {e}")
}

/// Removes `p` if it exists.
fn remove_dir(p: &Path) -> Result<(), String> {
    match std::fs::remove_dir_all(p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("removing {}: {e}", p.display())),
    }
}

/// Runs `tandem-bench recovery`.
pub fn run(a: &RecoveryArgs) -> Result<(), String> {
    let machine = MachineInfo::detect();
    let n = a.orders;
    let t = a.tail;
    let live_markets = a.markets.min(n);
    let dir = PathBuf::from(&a.dir);
    let log_dir = dir.join("log");
    let snap_dir = dir.join("snap");
    remove_dir(&log_dir)?;
    remove_dir(&snap_dir)?;
    let log_cfg = FileLogConfig {
        fsync: FsyncPolicy::Never,
        ..Default::default()
    };
    let segment_bytes = log_cfg.segment_bytes;
    let engine_cfg = Config {
        reserve_ids: n + t,
        reserve_orders: n + t,
        reserve_markets: live_markets,
        ..Default::default()
    };
    let rcfg = ReplicaConfig {
        engine: engine_cfg.clone(),
        snapshot_dir: snap_dir.clone(),
        policy: SnapshotPolicy {
            every_commands: 0,
            every: None,
            keep: 3,
            background: false,
        },
        read_batch: READ_BATCH,
    };
    let rss_start = Rss::read();

    // ---- 1. build the log ----------------------------------------------------
    eprintln!(
        "appending {} places over {} markets to {} ...",
        thousands(n as f64),
        thousands(a.markets as f64),
        log_dir.display()
    );
    let log = Arc::new(
        FileLog::open(&log_dir, log_cfg.clone())
            .map_err(|e| format!("opening {}: {e}", log_dir.display()))?,
    );
    let mut gen = OrderGen::new(a.seed, a.markets);
    let mut order_market: Vec<u32> = Vec::with_capacity(n);
    let mut order_account: Vec<u32> = Vec::with_capacity(n);
    let mut batch = Batch {
        data: Vec::with_capacity(BATCH * 200),
        ends: Vec::with_capacity(BATCH),
    };
    let mut build_append = Duration::ZERO;
    let mut build_bytes = 0u64;
    let t_build = Instant::now();
    let mut seq = 0u64;
    while (seq as usize) < n {
        batch.clear();
        for _ in 0..BATCH.min(n - seq as usize) {
            let r = gen.next_raw();
            order_market.push(r.market as u32);
            order_account.push(r.account as u32);
            push_limit(
                &mut batch.data,
                r.market,
                r.id,
                r.account,
                r.side,
                r.ticks,
                r.lots,
            );
            batch.end_record();
        }
        append(&log, &batch, seq + 1, &mut build_append)?;
        build_bytes += batch.data.len() as u64;
        seq += batch.len() as u64;
    }
    let build_wall = secs(t_build.elapsed());
    let (log_files, log_len, log_alloc) = dir_size(&log_dir);
    let rss_built = Rss::read();

    // ---- 2. replica 1 from empty -----------------------------------------------
    eprintln!("replica 1: open with an empty snapshot directory, catch up ...");
    let dyn_log: Arc<dyn Log> = log.clone();
    let cpu_e = ThreadCpu::read();
    let t_e = Instant::now();
    let (mut r1, info1) =
        Replica::open(dyn_log, rcfg.clone()).map_err(replica_err("replica 1 open"))?;
    let empty_open_secs = secs(t_e.elapsed());
    let mut build_outcome = Outcome::default();
    let t_c = Instant::now();
    let got = r1
        .catch_up(|_, _, _, ev| build_outcome.add(ev))
        .map_err(replica_err("replica 1 catch_up"))?;
    let empty_catch_up_secs = secs(t_c.elapsed());
    let empty_secs = secs(t_e.elapsed());
    let empty_cpu = ThreadCpu::read().since(cpu_e);
    let built_ok = info1.restored.is_none()
        && got == n as u64
        && build_outcome.not_just_accepted == 0
        && r1.engine().live_orders() as usize == n
        && r1.engine().market_count() == live_markets;
    let built_live = r1.engine().live_orders();
    let built_markets = r1.engine().market_count();
    let rss_r1 = Rss::read();

    // ---- 3. snapshot -------------------------------------------------------------
    // First in the background (what a node does periodically): how long
    // applying pauses for the fork, and how long the child takes.
    eprintln!("replica 1: background snapshot ...");
    let t_b = Instant::now();
    r1.start_snapshot().map_err(replica_err("start_snapshot"))?;
    let bg_pause_secs = secs(t_b.elapsed());
    r1.wait_for_snapshot()
        .map_err(replica_err("wait_for_snapshot"))?;
    let bg_total_secs = secs(t_b.elapsed());
    let bg_failures = r1.snapshot_failures().0;
    eprintln!("replica 1: snapshot_now ...");
    let cpu_s = ThreadCpu::read();
    let t_s = Instant::now();
    let snap_path = r1.snapshot_now().map_err(replica_err("snapshot_now"))?;
    let snap_secs = secs(t_s.elapsed());
    let snap_cpu = ThreadCpu::read().since(cpu_s);
    let snap_len = std::fs::metadata(&snap_path)
        .map_err(|e| format!("stat of {}: {e}", snap_path.display()))?
        .len();

    // ---- 4. the tail -------------------------------------------------------------
    eprintln!("appending a tail of {} commands ...", thousands(t as f64));
    let mut tg = TailGen {
        rng: SplitMix64::new(a.seed ^ 0x7A11_5EED_0000_0004),
        seed: a.seed,
        markets: live_markets as u64,
        order_market,
        order_account,
        next_id: n as u64 + 1,
        mix: TailMix::default(),
        scratch: Default::default(),
        cancelled_in_batch: HashSet::with_capacity(BATCH),
    };
    let mut tail_append = Duration::ZERO;
    let mut tail_bytes = 0u64;
    let mut r1_tail = Duration::ZERO;
    let mut tail_outcome = Outcome::default();
    let t_tail_wall = Instant::now();
    let mut done = 0usize;
    while done < t {
        batch.clear();
        tg.batch(r1.engine(), BATCH.min(t - done), &mut batch);
        append(&log, &batch, (n + done) as u64 + 1, &mut tail_append)?;
        tail_bytes += batch.data.len() as u64;
        done += batch.len();
        let t0 = Instant::now();
        r1.catch_up(|_, _, _, ev| tail_outcome.add(ev))
            .map_err(replica_err("replica 1 catch_up over the tail"))?;
        r1_tail += t0.elapsed();
    }
    let tail_wall = secs(t_tail_wall.elapsed());
    let mix = tg.mix;
    drop(tg);
    let (log_files2, log_len2, _) = dir_size(&log_dir);
    let last_seq = log.last_seq();

    // replica 1 is already caught up (it followed the tail batch by batch).
    let extra = {
        let before = r1.applied_seq();
        r1.catch_up(|_, _, _, ev| tail_outcome.add(ev))
            .map_err(replica_err("replica 1 final catch_up"))?;
        r1.applied_seq() - before
    };
    let (c1, s1) = (r1.engine().chain(), r1.applied_seq());
    let live1 = r1.engine().live_orders();
    // One writer per log directory (the directory is locked while open):
    // replica 2 opens the log as a restarted process would, after replica
    // 1 and its log are gone.
    drop(r1);
    drop(log);

    // ---- 5. replica 2 from snapshot + tail --------------------------------------
    eprintln!("replica 2: new FileLog instance, open (restore), catch up the tail ...");
    let cpu_lo = ThreadCpu::read();
    let t_lo = Instant::now();
    let log2 = Arc::new(
        FileLog::open(&log_dir, log_cfg.clone())
            .map_err(|e| format!("reopening {}: {e}", log_dir.display()))?,
    );
    let log_open_secs = secs(t_lo.elapsed());
    let log_open_cpu = ThreadCpu::read().since(cpu_lo);
    let log2_report = log2.open_report().clone();
    let dyn_log2: Arc<dyn Log> = log2.clone();
    let cpu_o = ThreadCpu::read();
    let t_o = Instant::now();
    let (mut r2, info2) =
        Replica::open(dyn_log2, rcfg.clone()).map_err(replica_err("replica 2 open"))?;
    let restore_secs = secs(t_o.elapsed());
    let restore_cpu = ThreadCpu::read().since(cpu_o);
    let rss_restored = Rss::read();
    let restored_seq = r2.applied_seq();
    let cpu_r = ThreadCpu::read();
    let t_r = Instant::now();
    let mut r2_outcome = Outcome::default();
    r2.catch_up(|_, _, _, ev| r2_outcome.add(ev))
        .map_err(replica_err("replica 2 catch_up"))?;
    let replay_secs = secs(t_r.elapsed());
    let replay_cpu = ThreadCpu::read().since(cpu_r);
    let from_snap_secs = secs(t_o.elapsed());
    let replayed = r2.applied_seq() - restored_seq;

    let (c2, s2) = (r2.engine().chain(), r2.applied_seq());
    let chains_equal = c1 == c2 && s1 == s2 && s1 == last_seq;
    let restored_ok = info2.restored.as_ref().map(|r| r.1) == Some(n as u64)
        && info2.skipped.is_empty()
        && restored_seq == n as u64;
    let live2 = r2.engine().live_orders();
    drop(r2);
    let rss_end = Rss::read();
    eprintln!("diagnostic: the same restore and tail replay by hand, stage by stage ...");
    let diag = diagnose(&snap_path, &engine_cfg, log2.as_ref(), n as u64, c1)?;
    let met = from_snap_secs <= TARGET_FROM_SNAPSHOT_SECS;
    let full_size = n >= 10_000_000 && t >= 1_000_000;

    // ---- print ---------------------------------------------------------------------
    let pct = |x: u64| 100.0 * x as f64 / t.max(1) as f64;
    println!("tandem-bench recovery — a tandem_replica::Replica recovering from a tandem_log::FileLog: from empty, and from snapshot + tail");
    report::print_machine(&machine);
    println!(
        "workload: seed {:#x}; {} GTC limit places over {} markets (capacity's generator: \"M0000000\".., \"o1\".., {} accounts \"a0\"..; bids 1..={} ticks below a fixed mid, asks 1..={} above: nothing trades)",
        a.seed,
        thousands(n as f64),
        thousands(a.markets as f64),
        thousands(ACCOUNTS as f64),
        LEVELS_PER_SIDE,
        LEVELS_PER_SIDE
    );
    println!(
        "          then a tail of {} commands: {} GTC limit places ({:.1}%; 1 tick through the mid .. {} behind it), {} cancels of live orders from the first part ({:.1}%), {} market orders ({:.1}%; IOC, 1..=100 lots){}",
        thousands(t as f64),
        thousands(mix.limits as f64),
        pct(mix.limits),
        LEVELS_PER_SIDE,
        thousands(mix.cancels as f64),
        pct(mix.cancels),
        thousands(mix.markets as f64),
        pct(mix.markets),
        if mix.cancel_fallbacks > 0 {
            format!(
                "; {} cancel draws found no live order and placed instead",
                mix.cancel_fallbacks
            )
        } else {
            String::new()
        }
    );
    println!(
        "log     : FileLog in {} (FsyncPolicy::Never, {} MiB segments); one record = one contract command JSON line without newline, {:.1} B on average",
        log_dir.display(),
        segment_bytes >> 20,
        (build_bytes + tail_bytes) as f64 / (n + t).max(1) as f64
    );
    println!(
        "replicas: ReplicaConfig {{ engine: Config {{ reserve_ids: {}, reserve_orders: {}, reserve_markets: {}, .. }}, snapshot_dir: {}, policy: every_commands 0, every None (never snapshots on its own), read_batch {} }}",
        engine_cfg.reserve_ids,
        engine_cfg.reserve_orders,
        engine_cfg.reserve_markets,
        snap_dir.display(),
        READ_BATCH
    );
    println!("          all files were just written: the page cache is warm for every read below");
    println!();
    println!(
        "1 build : {} records by Log::append in batches of {}: {:.3} s in the append calls = {} records/s (rendering the JSON excluded; wall incl. it {:.3} s)",
        thousands(n as f64),
        BATCH,
        secs(build_append),
        thousands(n as f64 / secs(build_append)),
        build_wall
    );
    println!(
        "          log on disk: {} segment file(s), {} bytes ({:.1} MiB, {:.1} B per record incl. the 16-byte frame header; {:.1} MiB allocated)",
        log_files,
        log_len,
        mib(log_len),
        log_len as f64 / n as f64,
        mib(log_alloc)
    );
    println!(
        "2 empty : Replica::open with an empty snapshot dir (Engine::new with the reservations) {:.3} s + catch_up of seq 1..={} {:.3} s = {:.3} s wall = {} commands/s",
        empty_open_secs,
        got,
        empty_catch_up_secs,
        empty_secs,
        thousands(n as f64 / empty_secs)
    );
    println!(
        "          (read from the log, tandem_codec::decode_command, Engine::apply, per-command callback; {})",
        empty_cpu.label()
    );
    println!(
        "          state: live_orders {}, market_count {}; commands with events other than one `accepted`: {}  [{}]",
        thousands(f64::from(built_live)),
        thousands(built_markets as f64),
        build_outcome.not_just_accepted,
        if built_ok { "as expected" } else { "UNEXPECTED" }
    );
    println!(
        "          for scale: the source system needed {:.0} s, later {:.0} s, to warm a node",
        SOURCE_WARM_SECS.0, SOURCE_WARM_SECS.1
    );
    println!(
        "3 snap  : snapshot_now() at seq {}: {:.3} s (File::create, snapshot_to via 1 MiB BufWriter, fsync, rename, directory fsync; {}) -> {} bytes ({:.1} MiB, {:.1} B per resting order)",
        n,
        snap_secs,
        snap_cpu.label(),
        snap_len,
        mib(snap_len),
        snap_len as f64 / n as f64
    );
    println!(
        "          in the background (Replica::start_snapshot, as a node does periodically): applying paused {:.1} ms for the fork; the child wrote the same snapshot in {:.3} s{}",
        bg_pause_secs * 1e3,
        bg_total_secs,
        if bg_failures == 0 {
            String::new()
        } else {
            format!(" (FAILED {bg_failures}x, then written in the thread)")
        }
    );
    println!(
        "4 tail  : {} records by Log::append in batches of {}: {:.3} s in the append calls = {} records/s; log now {} segment file(s), {:.1} MiB, last seq {}",
        thousands(t as f64),
        BATCH,
        secs(tail_append),
        thousands(t as f64 / secs(tail_append)),
        log_files2,
        mib(log_len2),
        last_seq
    );
    println!(
        "          generated against replica 1's engine, which caught up after every batch ({:.3} s in its catch_up calls; wall of the whole step {:.3} s)",
        secs(r1_tail),
        tail_wall
    );
    println!(
        "          replica 1's events over the tail: {}",
        tail_outcome.label()
    );
    println!(
        "5 restart: FileLog::open of {} as a new instance (recovery scan of every record of {} segment(s), last seq {}): {:.3} s ({}) — not in the figure below",
        log_dir.display(),
        log2_report.segments,
        log2_report.last_seq,
        log_open_secs,
        log_open_cpu.label()
    );
    println!(
        "          restore   = Replica::open (read newest snapshot file, Engine::restore, log coverage check): {:.3} s -> seq {} from {} ({})",
        restore_secs,
        restored_seq,
        info2
            .restored
            .as_ref()
            .map_or_else(|| "NOTHING".to_string(), |r| r.0.display().to_string()),
        restore_cpu.label()
    );
    println!(
        "          tail      = catch_up of seq {}..={}: {:.3} s = {} commands/s ({})",
        restored_seq + 1,
        s2,
        replay_secs,
        thousands(replayed as f64 / replay_secs),
        replay_cpu.label()
    );
    println!(
        "          from snapshot of {} resting orders + {} tail (open + restore + catch_up, one Instant): {:.3} s vs target <= {:.0} s{}: {}",
        thousands(n as f64),
        thousands(t as f64),
        from_snap_secs,
        TARGET_FROM_SNAPSHOT_SECS,
        if full_size {
            " (snapshot of 10 M resting orders + 1 M tail)"
        } else {
            " (stated for 10 M resting orders + 1 M tail; this run is smaller)"
        },
        verdict(met)
    );
    println!(
        "          split: restore {:.0}%, tail replay {:.0}%; with the FileLog open scan: {:.3} s; the source system: {:.0} s, later {:.0} s",
        100.0 * restore_secs / from_snap_secs,
        100.0 * replay_secs / from_snap_secs,
        log_open_secs + from_snap_secs,
        SOURCE_WARM_SECS.0,
        SOURCE_WARM_SECS.1
    );
    println!(
        "check   : replica 1 (from empty, followed the tail{}) applied_seq {} chain {} live_orders {}",
        if extra > 0 {
            format!(", {extra} more at the end")
        } else {
            String::new()
        },
        s1,
        chain_hex(c1),
        thousands(f64::from(live1))
    );
    println!(
        "          replica 2 (snapshot + tail)                  applied_seq {} chain {} live_orders {}; restored the snapshot at seq {}: {}",
        s2,
        chain_hex(c2),
        thousands(f64::from(live2)),
        n,
        if restored_ok { "yes" } else { "NO" }
    );
    println!(
        "          chains equal: {}",
        if chains_equal { "yes" } else { "no" }
    );
    println!(
        "diagnose: the same work by hand, stage by stage (not part of any figure above): std::fs::read of the snapshot {:.3} s; Engine::restore(&bytes, the replicas' Config) {:.3} s ({}); with Config::default() (no reservations) {:.3} s",
        diag.read_secs,
        diag.restore_secs,
        diag.restore_cpu.label(),
        diag.restore_default_secs
    );
    println!(
        "          tail: Log::read_from in batches of {} {:.3} s, tandem_codec::decode_command {:.3} s, Engine::apply (with Engine::look_ahead, as the replica) {:.3} s ({} commands/s); chain {}",
        READ_BATCH,
        diag.tail_read_secs,
        diag.tail_decode_secs,
        diag.tail_apply_secs,
        thousands(t as f64 / diag.tail_apply_secs),
        if diag.chain_same { "equal to the replicas'" } else { "DIFFERENT" }
    );
    println!(
        "memory  : peak RSS (VmHWM, /proc/self/status) {:.1} MiB; VmRSS at start {:.1} MiB, after the build {:.1} MiB, with replica 1 {:.1} MiB, with both replicas after restore {:.1} MiB, after dropping both {:.1} MiB",
        mib(rss_end.peak),
        mib(rss_start.now),
        mib(rss_built.now),
        mib(rss_r1.now),
        mib(rss_restored.now),
        mib(rss_end.now)
    );
    println!(
        "          (that peak is with both replicas alive at once, measured before the diagnostic, which ran after both were dropped; VmHWM after it {:.1} MiB)",
        mib(Rss::read().peak)
    );

    if let Some(out) = &a.json {
        let j = Json::Obj(vec![
            ("tool", Json::Str("tandem-bench".into())),
            ("scenario", Json::Str("recovery".into())),
            ("machine", report::machine_json(&machine)),
            (
                "workload",
                Json::Obj(vec![
                    ("seed", Json::Int(a.seed)),
                    ("seed_hex", Json::Str(format!("{:#x}", a.seed))),
                    ("orders", Json::Int(n as u64)),
                    ("markets", Json::Int(a.markets as u64)),
                    ("tail", Json::Int(t as u64)),
                    ("tail_limits", Json::Int(mix.limits)),
                    ("tail_cancels", Json::Int(mix.cancels)),
                    ("tail_market_orders", Json::Int(mix.markets)),
                    ("tail_cancel_fallbacks", Json::Int(mix.cancel_fallbacks)),
                    ("append_batch", Json::Int(BATCH as u64)),
                    ("read_batch", Json::Int(READ_BATCH as u64)),
                ]),
            ),
            (
                "build",
                Json::Obj(vec![
                    ("append_secs", Json::Num(secs(build_append))),
                    (
                        "append_records_per_sec",
                        Json::Num(n as f64 / secs(build_append)),
                    ),
                    ("wall_secs_incl_rendering", Json::Num(build_wall)),
                    ("log_segments", Json::Int(log_files as u64)),
                    ("log_bytes", Json::Int(log_len)),
                    ("log_allocated_bytes", Json::Int(log_alloc)),
                    ("payload_bytes", Json::Int(build_bytes)),
                ]),
            ),
            (
                "from_empty",
                Json::Obj(vec![
                    ("open_secs", Json::Num(empty_open_secs)),
                    ("catch_up_secs", Json::Num(empty_catch_up_secs)),
                    ("total_secs", Json::Num(empty_secs)),
                    ("commands_per_sec", Json::Num(n as f64 / empty_secs)),
                    ("scheduler", empty_cpu.json()),
                    ("as_expected", Json::Bool(built_ok)),
                ]),
            ),
            (
                "snapshot",
                Json::Obj(vec![
                    ("path", Json::Str(snap_path.display().to_string())),
                    ("bytes", Json::Int(snap_len)),
                    ("snapshot_now_secs", Json::Num(snap_secs)),
                    ("background_pause_secs", Json::Num(bg_pause_secs)),
                    ("background_total_secs", Json::Num(bg_total_secs)),
                    ("scheduler", snap_cpu.json()),
                ]),
            ),
            (
                "tail",
                Json::Obj(vec![
                    ("append_secs", Json::Num(secs(tail_append))),
                    (
                        "append_records_per_sec",
                        Json::Num(t as f64 / secs(tail_append)),
                    ),
                    ("payload_bytes", Json::Int(tail_bytes)),
                    ("replica1_catch_up_secs", Json::Num(secs(r1_tail))),
                    ("events", tail_outcome.json()),
                ]),
            ),
            (
                "from_snapshot",
                Json::Obj(vec![
                    ("log_open_secs", Json::Num(log_open_secs)),
                    ("log_open_scheduler", log_open_cpu.json()),
                    ("restore_secs", Json::Num(restore_secs)),
                    ("restore_scheduler", restore_cpu.json()),
                    ("tail_replay_secs", Json::Num(replay_secs)),
                    ("tail_replay_scheduler", replay_cpu.json()),
                    ("tail_commands", Json::Int(replayed)),
                    ("total_secs", Json::Num(from_snap_secs)),
                    (
                        "total_incl_log_open_secs",
                        Json::Num(log_open_secs + from_snap_secs),
                    ),
                    ("target_secs", Json::Num(TARGET_FROM_SNAPSHOT_SECS)),
                    ("target_met", Json::Bool(met)),
                    ("restored_ok", Json::Bool(restored_ok)),
                ]),
            ),
            (
                "check",
                Json::Obj(vec![
                    ("replica1_applied_seq", Json::Int(s1)),
                    ("replica2_applied_seq", Json::Int(s2)),
                    ("replica1_chain", Json::Str(chain_hex(c1))),
                    ("replica2_chain", Json::Str(chain_hex(c2))),
                    ("chains_equal", Json::Bool(chains_equal)),
                ]),
            ),
            (
                "diagnostic",
                Json::Obj(vec![
                    ("snapshot_read_secs", Json::Num(diag.read_secs)),
                    ("engine_restore_secs", Json::Num(diag.restore_secs)),
                    ("engine_restore_scheduler", diag.restore_cpu.json()),
                    (
                        "engine_restore_default_config_secs",
                        Json::Num(diag.restore_default_secs),
                    ),
                    ("tail_log_read_secs", Json::Num(diag.tail_read_secs)),
                    ("tail_decode_secs", Json::Num(diag.tail_decode_secs)),
                    ("tail_apply_secs", Json::Num(diag.tail_apply_secs)),
                    ("chain_equal", Json::Bool(diag.chain_same)),
                ]),
            ),
            (
                "memory",
                Json::Obj(vec![
                    ("peak_rss_bytes", Json::Int(rss_end.peak)),
                    ("rss_after_build_bytes", Json::Int(rss_built.now)),
                    ("rss_with_replica1_bytes", Json::Int(rss_r1.now)),
                    ("rss_with_both_replicas_bytes", Json::Int(rss_restored.now)),
                ]),
            ),
        ]);
        std::fs::write(out, j.to_pretty()).map_err(|e| format!("writing {out}: {e}"))?;
        println!("wrote {out}");
    }

    drop(log2);
    if a.keep {
        println!("kept    : {} and {}", log_dir.display(), snap_dir.display());
    } else {
        remove_dir(&log_dir)?;
        remove_dir(&snap_dir)?;
        // Only if nothing else is in it.
        let _ = std::fs::remove_dir(&dir);
        println!(
            "cleanup : removed {} and {} (pass --keep to keep them)",
            log_dir.display(),
            snap_dir.display()
        );
    }

    if !chains_equal || !diag.chain_same {
        return Err("replicas 1 and 2 disagree (chains equal: no)".into());
    }
    if !built_ok || !restored_ok {
        return Err("recovery run failed its correctness checks (see above)".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_decode_as_intended() {
        let mut b = Batch::default();
        push_limit(&mut b.data, 12, 7, 3, Side::Buy, 100_005, 40);
        b.end_record();
        push_market(&mut b.data, 12, 8, 4, Side::Sell, 2);
        b.end_record();
        push_cancel(&mut b.data, 12, 7, 3);
        b.end_record();
        let recs = b.records();
        assert_eq!(
            recs[0],
            br#"{"op":"place","market":"M0000012","id":"o7","account":"a3","side":"buy","type":"limit","price":"1000.05","qty":"40","tif":"gtc"}"#
        );
        let mut eng = Engine::new(Config::default());
        let mut out = Vec::new();
        let mut o = Outcome::default();
        for (i, r) in recs.iter().enumerate() {
            let cmd = tandem_codec::decode_command(r);
            assert!(!matches!(cmd, tandem_core::Command::Invalid(_)), "{i}");
            out.clear();
            eng.apply(i as u64 + 1, &cmd, &mut out);
            o.add(&out);
        }
        // The market order trades 2 of o7, the cancel takes the rest.
        assert_eq!(
            (o.accepted, o.trades, o.rejected, o.cancelled_user),
            (2, 1, 0, 1)
        );
        assert_eq!(eng.live_orders(), 0);
    }

    #[test]
    fn small_run_recovers() {
        let dir =
            std::env::temp_dir().join(format!("tandem-bench-recovery-{}", std::process::id()));
        let a = RecoveryArgs {
            orders: 3000,
            markets: 500,
            tail: 1500,
            dir: dir.display().to_string(),
            ..Default::default()
        };
        run(&a).unwrap();
        assert!(!dir.join("log").exists() && !dir.join("snap").exists());
    }
}
