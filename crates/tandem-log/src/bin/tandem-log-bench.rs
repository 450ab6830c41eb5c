//! Benchmark program (not a test): durable appends per second and append
//! latency of `FileLog` with group commit (`FsyncPolicy::Always`), for batch
//! sizes 1, 16 and 256 of 100-byte records from 1, 8 and 64 concurrent
//! appenders, each case with zeros written ahead of the appends
//! (`FileLogConfig::preallocate_bytes`, the default) and without, one after
//! the other, beside the raw `fdatasync` latency of the same disk measured
//! in the same run (after a write that grows the file and after one over
//! zeros written before). Prints figures; asserts nothing.
//!
//! Usage: `tandem-log-bench [DIR] [SECONDS_PER_CASE]` (DIR defaults to a
//! fresh directory under the system temp dir, removed afterwards).

use std::error::Error;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tandem_log::{FileLog, FileLogConfig, FsyncPolicy, Log};

const RECORD_BYTES: usize = 100;
const BATCHES: [usize; 3] = [1, 16, 256];
const THREADS: [usize; 3] = [1, 8, 64];

fn main() -> Result<(), Box<dyn Error>> {
    let args: Vec<String> = std::env::args().collect();
    let root: PathBuf = args.get(1).map_or_else(
        || std::env::temp_dir().join(format!("tandem-log-bench-{}", std::process::id())),
        PathBuf::from,
    );
    let secs: f64 = args.get(2).map_or(Ok(1.0), |s| s.parse())?;
    let case_time = Duration::from_secs_f64(secs);
    std::fs::create_dir_all(&root)?;
    println!("tandem-log-bench: dir {}", root.display());
    println!(
        "machine: {} cpus, load average {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        load_average()
    );
    for prewritten in [false, true] {
        let (p50, p99, n) = raw_fdatasync(&root.join("raw-fdatasync"), case_time, prewritten)?;
        let what = if prewritten {
            "over zeros written before"
        } else {
            "growing the file"
        };
        println!("raw fdatasync (100-byte pwrite + fdatasync, 1 thread, {what}): {n} syncs, p50 {p50} us, p99 {p99} us");
    }
    let ahead_default = FileLogConfig::default().preallocate_bytes;
    println!("records {RECORD_BYTES} bytes, FsyncPolicy::Always, {secs} s per case");
    println!(
        "{:>6} {:>8} {:>9} {:>12} {:>14} {:>9} {:>9} {:>9}",
        "batch", "threads", "ahead KiB", "appends/s", "records/s", "p50 us", "p99 us", "max us"
    );
    for batch in BATCHES {
        for threads in THREADS {
            for ahead in [0, ahead_default] {
                let dir = root.join(format!("b{batch}-t{threads}-a{ahead}"));
                let r = run_case(&dir, batch, threads, ahead, case_time)?;
                std::fs::remove_dir_all(&dir)?;
                println!(
                    "{:>6} {:>8} {:>9} {:>12.0} {:>14.0} {:>9} {:>9} {:>9}",
                    batch,
                    threads,
                    ahead >> 10,
                    r.appends_per_s,
                    r.records_per_s,
                    r.p50_us,
                    r.p99_us,
                    r.max_us
                );
            }
        }
    }
    println!("load average after: {}", load_average());
    if args.get(1).is_none() {
        std::fs::remove_dir_all(&root)?;
    }
    Ok(())
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

fn percentile_us(sorted_ns: &[u64], p: f64) -> u64 {
    if sorted_ns.is_empty() {
        return 0;
    }
    let i = ((sorted_ns.len() - 1) as f64 * p).round() as usize;
    sorted_ns[i] / 1000
}

fn raw_fdatasync(
    path: &Path,
    time: Duration,
    prewritten: bool,
) -> Result<(u64, u64, usize), Box<dyn Error>> {
    let mut f = File::create(path)?;
    // Enough zeros for every sync of the case when `prewritten` (a sync
    // here takes well over 10 us).
    let zeros = if prewritten {
        (time.as_micros() as usize / 10 + 1) * RECORD_BYTES
    } else {
        4096
    };
    f.write_all(&vec![0u8; zeros])?;
    f.sync_all()?;
    let rec = [1u8; RECORD_BYTES];
    let mut lat = Vec::new();
    let start = Instant::now();
    let mut off = if prewritten { 0 } else { zeros as u64 };
    while start.elapsed() < time {
        let t = Instant::now();
        f.write_all_at(&rec, off)?;
        f.sync_data()?;
        lat.push(t.elapsed().as_nanos() as u64);
        off += RECORD_BYTES as u64;
    }
    drop(f);
    std::fs::remove_file(path)?;
    lat.sort_unstable();
    Ok((
        percentile_us(&lat, 0.5),
        percentile_us(&lat, 0.99),
        lat.len(),
    ))
}

#[derive(Debug)]
struct CaseResult {
    appends_per_s: f64,
    records_per_s: f64,
    p50_us: u64,
    p99_us: u64,
    max_us: u64,
}

fn run_case(
    dir: &Path,
    batch: usize,
    threads: usize,
    ahead: u64,
    time: Duration,
) -> Result<CaseResult, Box<dyn Error>> {
    let config = FileLogConfig {
        fsync: FsyncPolicy::Always,
        preallocate_bytes: ahead,
        ..FileLogConfig::default()
    };
    let log = FileLog::open(dir, config)?;
    let start = Instant::now();
    let per_thread: Vec<Result<Vec<u64>, String>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let log = &log;
                s.spawn(move || {
                    let recs: Vec<Vec<u8>> = (0..batch)
                        .map(|k| vec![(t + k) as u8; RECORD_BYTES])
                        .collect();
                    let refs: Vec<&[u8]> = recs.iter().map(|r| &r[..]).collect();
                    let mut lat = Vec::with_capacity(1 << 16);
                    while start.elapsed() < time {
                        let t0 = Instant::now();
                        log.append(&refs).map_err(|e| e.to_string())?;
                        lat.push(t0.elapsed().as_nanos() as u64);
                    }
                    Ok(lat)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err("appender panicked".into())))
            .collect()
    });
    let elapsed = start.elapsed().as_secs_f64();
    let mut lat = Vec::new();
    for r in per_thread {
        lat.extend(r?);
    }
    lat.sort_unstable();
    let appends = lat.len() as f64;
    Ok(CaseResult {
        appends_per_s: appends / elapsed,
        records_per_s: appends * batch as f64 / elapsed,
        p50_us: percentile_us(&lat, 0.5),
        p99_us: percentile_us(&lat, 0.99),
        max_us: lat.last().map_or(0, |n| n / 1000),
    })
}
