//! `tandem-bench capacity`: how much one `tandem_core::Engine` holds, and
//! what that costs in memory, snapshot size and restore time.
//!
//! One engine, built with
//! `Config { reserve_ids: orders, reserve_orders: orders, reserve_markets:
//! markets, ..Default::default() }`, is given `--orders` GTC limit orders
//! over `--markets` markets through `Engine::apply` (seq 1, 2, ...):
//! * market names `M0000000`, `M0000001`, ... (`M` + 7 digits); order ids
//!   `o1`, `o2`, ... (unique over the run); accounts `a0`..`a99999` (drawn
//!   uniformly, so ~100 k accounts appear);
//! * order *i* < markets goes to market *i* (so every market exists), later
//!   ones to a uniformly drawn market (≈ orders / markets per market);
//! * each market has a fixed mid price (0.01-tick grid, 10.00..100,000.00,
//!   derived from the seed and the market index); a bid rests 1..=5 ticks
//!   below the mid, an ask 1..=5 ticks above, so books never cross, nothing
//!   trades, and each side has up to 5 price levels; 1..=100 lots of 1.0.
//!
//! Commands are generated in chunks of [`CHUNK`] outside the timed region,
//! so the build rate is `Engine::apply` alone. Then, each timed on its own:
//! the process RSS (`VmRSS` / `VmHWM` from /proc/self/status), a snapshot
//! written with `snapshot_to` into a `BufWriter<File>` (with and without
//! `File::sync_all`), dropping the original engine, reading the file back,
//! `Engine::restore`, and verifying the restored engine (same chain, seq,
//! live orders, market count, and a byte-identical re-snapshot).

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use tandem_core::{Command, Config, Engine, Event, OrderKind, Place, Price, Qty, Side, Sym, Tif};

use crate::args::CapacityArgs;
use crate::report::{self, mib, thousands, Json, MachineInfo, Rss, ThreadCpu};
use crate::tandem::{LOT_UNITS, TICK_UNITS};
use crate::workload::SplitMix64;

/// Target: peak RSS after building 3 M markets + 10 M resting orders.
pub const TARGET_PEAK_RSS: u64 = 4 << 30;
/// Target: `Engine::restore` of that state, in seconds.
pub const TARGET_RESTORE_SECS: f64 = 3.0;
/// Accounts orders are drawn from.
pub const ACCOUNTS: u64 = 100_000;
/// Price levels per side around each market's mid.
pub const LEVELS_PER_SIDE: u64 = 5;
/// Commands generated (untimed) per batch before they are applied (timed).
pub const CHUNK: usize = 1 << 16;

/// `prefix` then `n` in decimal, zero-padded to at least `width` digits.
fn numbered(prefix: u8, n: u64, width: usize) -> Sym {
    let mut digits = [b'0'; 20];
    let mut i = digits.len();
    let mut v = n;
    loop {
        i -= 1;
        digits[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    let start = i.min(digits.len() - width.min(digits.len()));
    let d = &digits[start..];
    let mut buf = [0u8; 21];
    buf[0] = prefix;
    buf[1..=d.len()].copy_from_slice(d);
    Sym::new(std::str::from_utf8(&buf[..=d.len()]).expect("ASCII digits"))
}

/// Market `m`'s mid price in ticks (fixed per seed and market).
pub(crate) fn mid_ticks(seed: u64, m: u64) -> u64 {
    let mut r = SplitMix64::new(seed ^ m.wrapping_mul(0xD6E8_FEB8_6659_FD93));
    1_000 + r.below(9_999_000)
}

/// One generated resting order, as numbers (market `M{market:07}`, id
/// `o{id}`, account `a{account}`, price `ticks` x 0.01, `lots` x 1.0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RawOrder {
    pub market: u64,
    /// 1-based.
    pub id: u64,
    pub account: u64,
    pub side: Side,
    pub ticks: u64,
    pub lots: u64,
}

/// The seeded stream of resting orders described in the module doc.
#[derive(Debug)]
pub(crate) struct OrderGen {
    rng: SplitMix64,
    seed: u64,
    markets: u64,
    next: u64,
}

impl OrderGen {
    pub(crate) fn new(seed: u64, markets: usize) -> Self {
        Self {
            rng: SplitMix64::new(seed),
            seed,
            markets: markets as u64,
            next: 0,
        }
    }

    /// The next order of the stream, as numbers.
    pub(crate) fn next_raw(&mut self) -> RawOrder {
        let i = self.next;
        self.next += 1;
        let m = if i < self.markets {
            i
        } else {
            self.rng.below(self.markets)
        };
        let side = if self.rng.below(2) == 0 {
            Side::Buy
        } else {
            Side::Sell
        };
        let depth = self.rng.below(LEVELS_PER_SIDE);
        let mid = mid_ticks(self.seed, m);
        let ticks = match side {
            Side::Buy => mid - 1 - depth,
            Side::Sell => mid + 1 + depth,
        };
        let lots = self.rng.range(1, 100);
        let account = self.rng.below(ACCOUNTS);
        RawOrder {
            market: m,
            id: i + 1,
            account,
            side,
            ticks,
            lots,
        }
    }

    fn place(&mut self) -> Place {
        let r = self.next_raw();
        Place {
            market: numbered(b'M', r.market, 7),
            id: numbered(b'o', r.id, 1),
            account: numbered(b'a', r.account, 1),
            side: r.side,
            kind: OrderKind::Limit(
                Price::from_units(r.ticks * TICK_UNITS).expect("price in Tandem's range"),
            ),
            qty: Qty::from_units(r.lots * LOT_UNITS).expect("qty in Tandem's range"),
            tif: Tif::Gtc,
            post_only: false,
        }
    }
}

/// A `Write` that compares what is written with `expected`.
struct Compare<'a> {
    expected: &'a [u8],
    pos: usize,
    same: bool,
}

impl Write for Compare<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let end = self.pos + buf.len();
        if self.same && self.expected.get(self.pos..end) != Some(buf) {
            self.same = false;
        }
        self.pos = end;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

pub(crate) fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

pub(crate) fn verdict(ok: bool) -> &'static str {
    if ok {
        "MET"
    } else {
        "MISSED"
    }
}

/// What the engine looked like, for comparing original and restored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Fingerprint {
    chain: u128,
    seq: u64,
    live_orders: u32,
    market_count: usize,
}

impl Fingerprint {
    fn of(e: &Engine) -> Self {
        Self {
            chain: e.chain(),
            seq: e.seq(),
            live_orders: e.live_orders(),
            market_count: e.market_count(),
        }
    }
}

/// Runs `tandem-bench capacity`.
pub fn run(a: &CapacityArgs) -> Result<(), String> {
    let machine = MachineInfo::detect();
    let cfg = Config {
        reserve_ids: a.orders,
        reserve_orders: a.orders,
        reserve_markets: a.markets,
        ..Default::default()
    };
    let expected_markets = a.markets.min(a.orders);

    // ---- build -------------------------------------------------------------
    let rss_base = Rss::read();
    let t_new = Instant::now();
    let mut eng = Engine::new(cfg.clone());
    let new_secs = secs(t_new.elapsed());
    let rss_new = Rss::read();
    let mut gen = OrderGen::new(a.seed, a.markets);
    let mut chunk: Vec<Command> = Vec::with_capacity(CHUNK.min(a.orders.max(1)));
    let mut out: Vec<Event> = Vec::with_capacity(8);
    let mut apply = Duration::ZERO;
    let mut build_cpu = ThreadCpu::default();
    let mut unexpected = 0u64;
    let mut seq = 0u64;
    let progress_every = 1_000_000usize;
    let t_wall = Instant::now();
    eprintln!(
        "building {} markets / {} resting orders ...",
        thousands(a.markets as f64),
        thousands(a.orders as f64)
    );
    while (seq as usize) < a.orders {
        chunk.clear();
        let n = CHUNK.min(a.orders - seq as usize);
        chunk.extend((0..n).map(|_| Command::Place(gen.place())));
        let before = seq as usize;
        let cpu0 = ThreadCpu::read();
        let t0 = Instant::now();
        for c in &chunk {
            seq += 1;
            out.clear();
            eng.apply(seq, c, &mut out);
            unexpected += u64::from(!matches!(out.as_slice(), [Event::Accepted { .. }]));
        }
        apply += t0.elapsed();
        build_cpu = build_cpu.plus(ThreadCpu::read().since(cpu0));
        if before / progress_every != seq as usize / progress_every {
            let r = Rss::read();
            eprintln!(
                "  {:>11} orders applied, apply time {:.2} s, VmRSS {:.0} MiB",
                thousands(seq as f64),
                secs(apply),
                mib(r.now)
            );
        }
    }
    drop(chunk);
    let wall = secs(t_wall.elapsed());
    let rss_built = Rss::read();
    let orig = Fingerprint::of(&eng);
    let taken_ids = eng.taken_ids();
    let build_rate = a.orders as f64 / secs(apply);

    // ---- snapshot ----------------------------------------------------------
    let path = Path::new(&a.snapshot);
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    }
    eprintln!("writing snapshot to {} ...", path.display());
    let io_err = |what: &str, e: io::Error| format!("{what} {}: {e}", path.display());
    let cpu_w = ThreadCpu::read();
    let t_w = Instant::now();
    let file = File::create(path).map_err(|e| io_err("creating", e))?;
    let mut bw = BufWriter::new(file);
    eng.snapshot_to(&mut bw).map_err(|e| io_err("writing", e))?;
    let file = bw
        .into_inner()
        .map_err(|e| io_err("flushing", e.into_error()))?;
    let write_secs = secs(t_w.elapsed());
    let write_cpu = ThreadCpu::read().since(cpu_w);
    let t_s = Instant::now();
    file.sync_all().map_err(|e| io_err("fsync of", e))?;
    let fsync_secs = secs(t_s.elapsed());
    let snap_len = file.metadata().map_err(|e| io_err("stat of", e))?.len();
    drop(file);

    // ---- drop the original, read the file, restore ---------------------------
    eprintln!("dropping the original engine, restoring ...");
    let t_d = Instant::now();
    drop(eng);
    let drop_secs = secs(t_d.elapsed());
    let rss_dropped = Rss::read();

    let t_r = Instant::now();
    let bytes = std::fs::read(path).map_err(|e| io_err("reading", e))?;
    let read_secs = secs(t_r.elapsed());
    let cpu_x = ThreadCpu::read();
    let t_x = Instant::now();
    let restored = Engine::restore(&bytes, cfg.clone()).map_err(|e| format!("restore: {e}"))?;
    let restore_secs = secs(t_x.elapsed());
    let restore_cpu = ThreadCpu::read().since(cpu_x);
    let rss_restored = Rss::read();

    // ---- verify (not part of the restore time) ------------------------------
    let cpu_v = ThreadCpu::read();
    let t_v = Instant::now();
    let got = Fingerprint::of(&restored);
    let mut cmp = Compare {
        expected: &bytes,
        pos: 0,
        same: true,
    };
    restored
        .snapshot_to(&mut cmp)
        .map_err(|e| format!("re-snapshot: {e}"))?;
    let resnap_len = cmp.pos;
    let resnap_same = cmp.same && resnap_len == bytes.len();
    let verify_secs = secs(t_v.elapsed());
    let verify_cpu = ThreadCpu::read().since(cpu_v);
    let fields_same = got == orig;
    drop(restored);
    drop(bytes);

    let built_ok = unexpected == 0
        && orig.live_orders as usize == a.orders
        && orig.market_count == expected_markets;
    let rss_ok = rss_built.peak <= TARGET_PEAK_RSS;
    let restore_ok = restore_secs <= TARGET_RESTORE_SECS;
    let per_order = |b: u64| b as f64 / a.orders.max(1) as f64;

    // ---- print ---------------------------------------------------------------
    println!("tandem-bench capacity — one tandem_core::Engine, many markets, many resting orders");
    report::print_machine(&machine);
    println!(
        "workload: seed {:#x}; {} markets (\"M0000000\".., mid 10.00..100,000.00 per market), {} GTC limit orders (\"o1\"..), {} accounts (\"a0\"..); bids 1..={} ticks (0.01) below the mid, asks 1..={} above: no book crosses, nothing trades",
        a.seed,
        thousands(a.markets as f64),
        thousands(a.orders as f64),
        thousands(ACCOUNTS as f64),
        LEVELS_PER_SIDE,
        LEVELS_PER_SIDE,
    );
    println!(
        "config  : Config {{ reserve_ids: {}, reserve_orders: {}, reserve_markets: {}, ..Default::default() }}; Engine::new took {:.3} s",
        a.orders, a.orders, a.markets, new_secs
    );
    println!();
    println!(
        "build   : {} x Engine::apply(Command::Place), seq 1..={}: {:.3} s = {} commands/s",
        thousands(a.orders as f64),
        seq,
        secs(apply),
        thousands(build_rate)
    );
    println!(
        "          (time summed over the apply loops of {}-command chunks; generating the commands is excluded — wall time including it {:.3} s)",
        thousands(CHUNK as f64),
        wall
    );
    println!(
        "          scheduler (/proc/thread-self/schedstat) over the apply loops: {}",
        build_cpu.label()
    );
    println!(
        "state   : live_orders() = {}, market_count() = {}, taken_ids() = {}; events other than one `accepted` per command: {}  [{}]",
        thousands(f64::from(orig.live_orders)),
        thousands(orig.market_count as f64),
        thousands(taken_ids as f64),
        unexpected,
        if built_ok { "as expected" } else { "UNEXPECTED" }
    );
    println!(
        "memory  : /proc/self/status after building: VmRSS {:.1} MiB ({:.1} B per resting order), VmHWM {:.1} MiB ({:.1} B per resting order)",
        mib(rss_built.now),
        per_order(rss_built.now),
        mib(rss_built.peak),
        per_order(rss_built.peak)
    );
    println!(
        "          capacity figure = VmHWM after building: {:.1} MiB vs target <= {:.0} MiB for 3 M markets + 10 M orders: {}",
        mib(rss_built.peak),
        mib(TARGET_PEAK_RSS),
        verdict(rss_ok)
    );
    println!(
        "          (process before Engine::new: VmRSS {:.1} MiB; right after Engine::new with the reservations: VmRSS {:.1} MiB)",
        mib(rss_base.now),
        mib(rss_new.now)
    );
    println!(
        "snapshot: {} bytes ({:.1} MiB, {:.1} B per resting order) -> {}",
        snap_len,
        mib(snap_len),
        per_order(snap_len),
        path.display()
    );
    println!(
        "          write = File::create + snapshot_to(&mut BufWriter::new(file)) incl. its final flush, no fsync: {:.3} s ({:.0} MiB/s; {})",
        write_secs,
        mib(snap_len) / write_secs,
        write_cpu.label()
    );
    println!(
        "          File::sync_all: {:.3} s; write + fsync: {:.3} s",
        fsync_secs,
        write_secs + fsync_secs
    );
    println!(
        "drop    : original engine dropped before restoring, {:.3} s; VmRSS after the drop {:.1} MiB",
        drop_secs,
        mib(rss_dropped.now)
    );
    println!(
        "restore : read file into Vec<u8> (std::fs::read; page cache warm, file just written): {:.3} s",
        read_secs
    );
    println!(
        "          Engine::restore(&bytes, cfg) (checksum, decode, rebuild, its own invariant check): {:.3} s vs target <= {:.1} s: {}",
        restore_secs,
        TARGET_RESTORE_SECS,
        verdict(restore_ok)
    );
    println!("          ({})", restore_cpu.label());
    println!(
        "          read + restore: {:.3} s; after restore (bytes still held) VmRSS {:.1} MiB, VmHWM of the whole run {:.1} MiB",
        read_secs + restore_secs,
        mib(rss_restored.now),
        mib(rss_restored.peak)
    );
    println!(
        "verify  : {:.3} s ({}; excluded from the restore time): chain {} seq {} live_orders {} market_count {} -> {}; re-snapshot {} bytes -> {}",
        verify_secs,
        verify_cpu.label(),
        tandem_core::chain_hex(got.chain),
        got.seq,
        thousands(f64::from(got.live_orders)),
        thousands(got.market_count as f64),
        if fields_same {
            "equal to the original's"
        } else {
            "DIFFERENT from the original's"
        },
        resnap_len,
        if resnap_same {
            "byte-identical to the file"
        } else {
            "DIFFERENT from the file"
        }
    );
    if !fields_same {
        println!("          original: {orig:?}");
        println!("          restored: {got:?}");
    }

    if let Some(out) = &a.json {
        let j = Json::Obj(vec![
            ("tool", Json::Str("tandem-bench".into())),
            ("scenario", Json::Str("capacity".into())),
            ("machine", report::machine_json(&machine)),
            (
                "workload",
                Json::Obj(vec![
                    ("seed", Json::Int(a.seed)),
                    ("seed_hex", Json::Str(format!("{:#x}", a.seed))),
                    ("markets", Json::Int(a.markets as u64)),
                    ("orders", Json::Int(a.orders as u64)),
                    ("accounts", Json::Int(ACCOUNTS)),
                    ("levels_per_side", Json::Int(LEVELS_PER_SIDE)),
                ]),
            ),
            (
                "build",
                Json::Obj(vec![
                    ("apply_secs", Json::Num(secs(apply))),
                    ("commands_per_sec", Json::Num(build_rate)),
                    ("apply_scheduler", build_cpu.json()),
                    ("wall_secs_incl_generation", Json::Num(wall)),
                    ("engine_new_secs", Json::Num(new_secs)),
                    ("live_orders", Json::Int(u64::from(orig.live_orders))),
                    ("market_count", Json::Int(orig.market_count as u64)),
                    ("taken_ids", Json::Int(taken_ids as u64)),
                    ("unexpected_events", Json::Int(unexpected)),
                    ("as_expected", Json::Bool(built_ok)),
                ]),
            ),
            (
                "memory",
                Json::Obj(vec![
                    (
                        "method",
                        Json::Str("VmRSS / VmHWM from /proc/self/status".into()),
                    ),
                    ("rss_before_engine_bytes", Json::Int(rss_base.now)),
                    ("rss_after_engine_new_bytes", Json::Int(rss_new.now)),
                    ("rss_after_build_bytes", Json::Int(rss_built.now)),
                    ("hwm_after_build_bytes", Json::Int(rss_built.peak)),
                    (
                        "rss_after_build_per_order",
                        Json::Num(per_order(rss_built.now)),
                    ),
                    (
                        "hwm_after_build_per_order",
                        Json::Num(per_order(rss_built.peak)),
                    ),
                    ("target_hwm_bytes", Json::Int(TARGET_PEAK_RSS)),
                    ("target_met", Json::Bool(rss_ok)),
                    ("rss_after_drop_bytes", Json::Int(rss_dropped.now)),
                    ("rss_after_restore_bytes", Json::Int(rss_restored.now)),
                    ("hwm_whole_run_bytes", Json::Int(rss_restored.peak)),
                ]),
            ),
            (
                "snapshot",
                Json::Obj(vec![
                    ("path", Json::Str(path.display().to_string())),
                    ("bytes", Json::Int(snap_len)),
                    ("bytes_per_order", Json::Num(per_order(snap_len))),
                    ("write_secs_no_fsync", Json::Num(write_secs)),
                    ("write_scheduler", write_cpu.json()),
                    ("fsync_secs", Json::Num(fsync_secs)),
                    ("write_plus_fsync_secs", Json::Num(write_secs + fsync_secs)),
                ]),
            ),
            (
                "restore",
                Json::Obj(vec![
                    ("drop_original_secs", Json::Num(drop_secs)),
                    ("read_file_secs", Json::Num(read_secs)),
                    ("restore_secs", Json::Num(restore_secs)),
                    ("restore_scheduler", restore_cpu.json()),
                    ("target_restore_secs", Json::Num(TARGET_RESTORE_SECS)),
                    ("target_met", Json::Bool(restore_ok)),
                    ("verify_secs", Json::Num(verify_secs)),
                    ("verify_scheduler", verify_cpu.json()),
                    ("chain", Json::Str(tandem_core::chain_hex(got.chain))),
                    ("seq", Json::Int(got.seq)),
                    ("fields_equal", Json::Bool(fields_same)),
                    ("resnapshot_identical", Json::Bool(resnap_same)),
                ]),
            ),
        ]);
        std::fs::write(out, j.to_pretty()).map_err(|e| format!("writing {out}: {e}"))?;
        println!();
        println!("wrote {out}");
    }
    if built_ok && fields_same && resnap_same {
        Ok(())
    } else {
        Err("capacity run failed its correctness checks (see above)".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(numbered(b'M', 1234, 7).as_str(), "M0001234");
        assert_eq!(numbered(b'M', 0, 7).as_str(), "M0000000");
        assert_eq!(numbered(b'o', 123_456, 1).as_str(), "o123456");
        assert_eq!(numbered(b'a', 0, 1).as_str(), "a0");
        assert_eq!(
            numbered(b'x', u64::MAX, 1).as_str(),
            "x18446744073709551615"
        );
    }

    #[test]
    fn small_build_restores_identically() {
        let (markets, orders) = (50, 400);
        let cfg = Config {
            reserve_ids: orders,
            reserve_orders: orders,
            reserve_markets: markets,
            ..Default::default()
        };
        let mut eng = Engine::new(cfg.clone());
        let mut gen = OrderGen::new(9, markets);
        let mut out = Vec::new();
        for seq in 1..=orders as u64 {
            out.clear();
            eng.apply(seq, &Command::Place(gen.place()), &mut out);
            assert!(matches!(out.as_slice(), [Event::Accepted { .. }]));
        }
        assert_eq!(eng.live_orders() as usize, orders);
        assert_eq!(eng.market_count(), markets);
        eng.check_invariants().unwrap();
        let snap = eng.snapshot();
        let back = Engine::restore(&snap, cfg).unwrap();
        assert_eq!(Fingerprint::of(&back), Fingerprint::of(&eng));
        let mut cmp = Compare {
            expected: &snap,
            pos: 0,
            same: true,
        };
        back.snapshot_to(&mut cmp).unwrap();
        assert!(cmp.same && cmp.pos == snap.len());
    }
}
