//! Reopens a replica over an existing file log and snapshot directory (as
//! `tandem-bench recovery --keep` leaves them) and prints how long each
//! phase took, with the process's CPU time and page faults: a profiling aid
//! (`perf record` it) for cold start. Never writes a snapshot.
//!
//! Usage: `reopen LOG_DIR SNAP_DIR [RESERVE]` (RESERVE: ids, orders and
//! markets reserved in the engine's `Config`, as the bench does; default 0).

use std::sync::Arc;
use std::time::Instant;

use tandem_core::Config;
use tandem_log::{FileLog, FileLogConfig, FsyncPolicy, Log};
use tandem_replica::{Replica, ReplicaConfig, SnapshotPolicy};

/// User and system CPU seconds of the whole process and its minor faults.
fn usage() -> (f64, f64, i64) {
    #[allow(unsafe_code)]
    // SAFETY: getrusage fills the zeroed struct we own.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut ru);
        ru
    };
    let s = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    (s(ru.ru_utime), s(ru.ru_stime), ru.ru_minflt)
}

/// Resident and peak resident memory, from /proc/self/status.
fn vm() -> String {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map_or("?".to_owned(), |v| v.trim().to_owned())
    };
    format!("VmRSS {}, VmHWM {}", field("VmRSS:"), field("VmHWM:"))
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: reopen LOG_DIR SNAP_DIR [RESERVE]");
        std::process::exit(2);
    }
    let reserve: usize = args.get(3).map_or(0, |s| s.parse().unwrap_or(0));
    let phase = |name: &str, t: Instant, u0: (f64, f64, i64)| {
        let u = usage();
        println!(
            "{name:<10} {:>7.3} s wall, CPU (both cores) {:>7.3} s user + {:>6.3} s system, {:>9} minor faults",
            t.elapsed().as_secs_f64(),
            u.0 - u0.0,
            u.1 - u0.1,
            u.2 - u0.2
        );
    };
    let (t, u) = (Instant::now(), usage());
    let log = FileLog::open(
        &args[1],
        FileLogConfig {
            fsync: FsyncPolicy::Never,
            ..Default::default()
        },
    )
    .unwrap_or_else(|e| {
        eprintln!("open log {}: {e}", args[1]);
        std::process::exit(1);
    });
    phase("log open", t, u);
    let log: Arc<dyn Log> = Arc::new(log);
    let cfg = ReplicaConfig {
        engine: Config {
            reserve_ids: reserve,
            reserve_orders: reserve,
            reserve_markets: reserve.min(3_000_000),
            ..Default::default()
        },
        policy: SnapshotPolicy {
            every_commands: 0,
            every: None,
            keep: 3,
            background: false,
        },
        ..ReplicaConfig::new(&args[2])
    };
    let (t0, u0) = (Instant::now(), usage());
    let (mut r, info) = Replica::open(log, cfg).unwrap_or_else(|e| {
        eprintln!("open replica: {e}");
        std::process::exit(1);
    });
    phase("restore", t0, u0);
    println!("memory after restore: {}", vm());
    let (t, u) = (Instant::now(), usage());
    let mut n = 0u64;
    let seq = r.catch_up(|_, _, _, _| n += 1).unwrap_or_else(|e| {
        eprintln!("catch up: {e}");
        std::process::exit(1);
    });
    phase("tail", t, u);
    phase("total", t0, u0);
    println!("memory after the tail: {}", vm());
    println!(
        "restored {:?}, applied {n} commands to seq {seq}, chain {}",
        info.restored.map(|r| r.1),
        tandem_core::chain_hex(r.engine().chain())
    );
}
