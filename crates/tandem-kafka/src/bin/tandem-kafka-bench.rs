//! `tandem-kafka-bench`: durable appends per second and append latency of
//! [`KafkaLog`] against a broker, at batch sizes 1, 16 and 256 records of
//! about 100 bytes, with 1, 8 and 64 threads appending concurrently to one
//! log. Prints a table and the load average; asserts nothing.
//!
//! ```text
//! tandem-kafka-bench --brokers HOST:PORT [--topic T] [--seconds S] [--read-back]
//! tandem-kafka-bench --spawn-tansu [--topic T] [--seconds S] [--read-back]
//! tandem-kafka-bench --spawn-tansu --followers K [--followers-ask] [--seconds S] [--fetch-wait-ms N]
//! ```
//!
//! `--read-back` measures instead what a node waits for before it answers:
//! an append of one record and the sequential read, through the same log,
//! up to and past it (as a node's replica reads), at 100 appends/s, while
//! another log instance on the same partition appends at 0, 100 or 400
//! messages/s (other nodes), beside the append alone. `--fetch-wait-ms`
//! sets the log's `fetch_wait` (default 10).
//!
//! `--followers K` measures what a cluster of nodes costs the broker over
//! time: one log appends one record every 10 ms and reads it back (as
//! `--read-back` does, with nothing else appending) while K more log
//! instances follow the partition as other nodes' replicas do (a page with
//! `read_known`, and a 5 ms sleep at the tail; with `--followers-ask`,
//! `read_from`, which asks the broker for the log's end on each idle turn). Every 10 s it prints the read-back
//! latencies, the records in the log and, with `--spawn-tansu`, the CPU
//! the broker used in those 10 s: whether the broker's cost grows with the
//! number of followers, their fetch wait, or the log's length.
//!
//! `--brokers` uses a running broker (the topic is created with one
//! partition if missing); `--spawn-tansu` starts `tansu broker` (`$TANSU_BIN`
//! or `tansu` on `PATH`, SQLite storage) in a temporary directory on a free
//! loopback port and kills it at the end.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitCode};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tandem_kafka::{create_topic, KafkaLog, KafkaLogConfig};
use tandem_log::Log;

const USAGE: &str = "usage: tandem-kafka-bench (--brokers HOST:PORT | --spawn-tansu) \
                     [--topic T] [--seconds S] [--read-back] [--followers K] \
                     [--followers-ask] [--fetch-wait-ms N]";

const BATCH_SIZES: [usize; 3] = [1, 16, 256];
const THREADS: [usize; 3] = [1, 8, 64];
const RECORD_BYTES: usize = 100;

struct Args {
    brokers: Option<String>,
    topic: String,
    spawn_tansu: bool,
    seconds: f64,
    read_back: bool,
    followers: Option<usize>,
    followers_ask: bool,
    fetch_wait_ms: Option<u64>,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        brokers: None,
        topic: "tandem-bench".to_owned(),
        spawn_tansu: false,
        seconds: 3.0,
        read_back: false,
        followers: None,
        followers_ask: false,
        fetch_wait_ms: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--brokers" => a.brokers = Some(value()?),
            "--topic" => a.topic = value()?,
            "--seconds" => {
                let v = value()?;
                a.seconds = v
                    .parse()
                    .ok()
                    .filter(|s: &f64| s.is_finite() && *s > 0.0)
                    .ok_or_else(|| format!("--seconds {v}: not a positive number"))?;
            }
            "--spawn-tansu" => a.spawn_tansu = true,
            "--read-back" => a.read_back = true,
            "--followers-ask" => a.followers_ask = true,
            "--followers" => {
                let v = value()?;
                a.followers = Some(
                    v.parse()
                        .ok()
                        .filter(|n: &usize| *n <= 64)
                        .ok_or_else(|| format!("--followers {v}: not 0..=64"))?,
                );
            }
            "--fetch-wait-ms" => {
                let v = value()?;
                a.fetch_wait_ms = Some(
                    v.parse()
                        .ok()
                        .filter(|n: &u64| (1..=10_000).contains(n))
                        .ok_or_else(|| format!("--fetch-wait-ms {v}: not 1..=10000"))?,
                );
            }
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if a.spawn_tansu == a.brokers.is_some() {
        return Err("give exactly one of --brokers and --spawn-tansu".to_owned());
    }
    Ok(a)
}

/// A `tansu broker` in a temporary directory, killed (and the directory
/// removed) on drop.
struct Tansu {
    child: Child,
    dir: PathBuf,
    port: u16,
}

impl Tansu {
    fn start() -> Result<Tansu, String> {
        let dir = std::env::temp_dir().join(format!("tandem-kafka-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let mut last = String::new();
        for _ in 0..3 {
            let port = TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map_err(|e| format!("free port: {e}"))?
                .port();
            match spawn_tansu(&dir, port) {
                Ok(child) => return Ok(Tansu { child, dir, port }),
                Err(e) => last = e,
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
        Err(last)
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Same command line as the integration tests' broker.
fn spawn_tansu(dir: &Path, port: u16) -> Result<Child, String> {
    tandem_kafka::tansu::spawn(dir, port, port)
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".to_owned())
}

/// The one-minute load average alone.
fn load1() -> String {
    load_average()
        .split_whitespace()
        .next()
        .unwrap_or("?")
        .to_owned()
}

/// One cell of the table.
struct Cell {
    appends: u64,
    errors: u64,
    elapsed: Duration,
    /// Latencies of successful appends, sorted.
    latencies: Vec<Duration>,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// `threads` threads append batches of `batch` records to `log` for `run`.
fn measure(log: &KafkaLog, batch: usize, threads: usize, run: Duration) -> Cell {
    let errors = AtomicU64::new(0);
    let start = Instant::now();
    let deadline = start + run;
    let mut latencies: Vec<Duration> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let errors = &errors;
                s.spawn(move || {
                    let payloads: Vec<Vec<u8>> = (0..batch)
                        .map(|i| {
                            let mut p = format!("thread {t:02} record {i:03} ").into_bytes();
                            p.resize(RECORD_BYTES, b'.');
                            p
                        })
                        .collect();
                    let records: Vec<&[u8]> = payloads.iter().map(Vec::as_slice).collect();
                    let mut lat = Vec::new();
                    while Instant::now() < deadline {
                        let t0 = Instant::now();
                        match log.append(&records) {
                            Ok(_) => lat.push(t0.elapsed()),
                            Err(e) => {
                                if errors.fetch_add(1, Ordering::Relaxed) < 3 {
                                    eprintln!("append failed: {e}");
                                }
                            }
                        }
                    }
                    lat
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("appender thread"))
            .collect()
    });
    let elapsed = start.elapsed();
    latencies.sort_unstable();
    Cell {
        appends: latencies.len() as u64,
        errors: errors.into_inner(),
        elapsed,
        latencies,
    }
}

/// `--read-back`: `mine` appends one record every 10 ms and reads the log
/// sequentially until it has read past that record, while `other` appends
/// `other_rate` messages/s. Returns (append, append + read back)
/// latencies, sorted, and the number of records read.
fn read_back(
    mine: &KafkaLog,
    other: &KafkaLog,
    other_rate: u32,
    run: Duration,
) -> Result<(Vec<Duration>, Vec<Duration>, u64), String> {
    let deadline = Instant::now() + run;
    let mut next = mine.last_seq() + 1;
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        if other_rate > 0 {
            let stop = &stop;
            s.spawn(move || {
                let every = Duration::from_secs_f64(1.0 / f64::from(other_rate));
                let mut at = Instant::now();
                while !stop.load(Ordering::Relaxed) {
                    let _ = other.append(&[&[1u8; RECORD_BYTES]]);
                    at += every;
                    if let Some(d) = at.checked_duration_since(Instant::now()) {
                        std::thread::sleep(d);
                    }
                }
            });
        }
        let result = (|| {
            let (mut append, mut total, mut read) = (Vec::new(), Vec::new(), 0u64);
            let mut at = Instant::now();
            while Instant::now() < deadline {
                let t0 = Instant::now();
                let seq = mine
                    .append(&[&[2u8; RECORD_BYTES]])
                    .map_err(|e| format!("append: {e}"))?;
                append.push(t0.elapsed());
                while next <= seq {
                    let page = mine
                        .read_from(next, 1024)
                        .map_err(|e| format!("read_from {next}: {e}"))?;
                    match page.last() {
                        Some(r) => {
                            read += page.len() as u64;
                            next = r.seq + 1;
                        }
                        None => {
                            mine.wait_for(next - 1, Duration::from_millis(100))
                                .map_err(|e| format!("wait_for: {e}"))?;
                        }
                    }
                }
                total.push(t0.elapsed());
                at += Duration::from_millis(10);
                if let Some(d) = at.checked_duration_since(Instant::now()) {
                    std::thread::sleep(d);
                }
            }
            append.sort_unstable();
            total.sort_unstable();
            Ok((append, total, read))
        })();
        stop.store(true, Ordering::Relaxed);
        result
    })
}

fn run_read_back(brokers: &str, config: &KafkaLogConfig, run: Duration) -> Result<(), String> {
    let mine = KafkaLog::open(config.clone()).map_err(|e| format!("open: {e}"))?;
    let other = KafkaLog::open(config.clone()).map_err(|e| format!("open: {e}"))?;
    println!(
        "read back through the appending log, 100 appends/s of one record, {brokers}, \
         fetch wait {} ms",
        config.fetch_wait.as_millis()
    );
    println!(
        "{:>12} {:>8} {:>13} {:>13} {:>16} {:>16} {:>5}",
        "other msg/s",
        "appends",
        "append p50 ms",
        "append p99 ms",
        "read back p50 ms",
        "read back p99 ms",
        "load1"
    );
    for other_rate in [0u32, 100, 400] {
        let (append, total, _) = read_back(&mine, &other, other_rate, run)?;
        let load1 = load1();
        println!(
            "{:>12} {:>8} {:>13.2} {:>13.2} {:>16.2} {:>16.2} {:>5}",
            other_rate,
            append.len(),
            ms(percentile(&append, 0.50)),
            ms(percentile(&append, 0.99)),
            ms(percentile(&total, 0.50)),
            ms(percentile(&total, 0.99)),
            load1,
        );
    }
    Ok(())
}

/// `--followers`: see the module's comment.
fn run_followers(
    config: &KafkaLogConfig,
    followers: usize,
    ask: bool,
    run: Duration,
    broker: Option<u32>,
) -> Result<(), String> {
    let mine = KafkaLog::open(config.clone()).map_err(|e| format!("open: {e}"))?;
    let logs: Vec<KafkaLog> = (0..followers)
        .map(|_| KafkaLog::open(config.clone()).map_err(|e| format!("open: {e}")))
        .collect::<Result<_, _>>()?;
    println!(
        "read back at 100 appends/s of one record while {followers} other log(s) follow \
         the partition with {}, fetch wait {} ms, every 10 s:",
        if ask { "read_from" } else { "read_known" },
        config.fetch_wait.as_millis()
    );
    println!(
        "{:>6} {:>8} {:>16} {:>16} {:>10} {:>12} {:>5}",
        "t s", "records", "read back p50 ms", "read back p99 ms", "max ms", "broker CPU %", "load1"
    );
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        for log in &logs {
            let stop = &stop;
            s.spawn(move || {
                // As a node's replica thread follows: a page, and at the
                // tail a 5 ms sleep; `--followers-ask` reads with
                // `read_from` (a ListOffsets request per idle turn) as
                // nodes did before `read_known`.
                let mut next = log.last_seq() + 1;
                while !stop.load(Ordering::Relaxed) {
                    let page = if ask {
                        log.read_from(next, 1024)
                    } else {
                        log.read_known(next, 1024)
                    };
                    match page {
                        Ok(page) => match page.last() {
                            Some(r) => next = r.seq + 1,
                            None => std::thread::sleep(Duration::from_millis(5)),
                        },
                        Err(_) => std::thread::sleep(Duration::from_millis(10)),
                    }
                }
            });
        }
        let result = (|| {
            let deadline = Instant::now() + run;
            let mut next = mine.last_seq() + 1;
            let mut at = Instant::now();
            let mut total: Vec<Duration> = Vec::new();
            let mut records = 0u64;
            let mut cpu0 = broker.and_then(|p| tandem_metrics::process_cpu_seconds(Some(p)));
            let mut t_report = Instant::now();
            let started = Instant::now();
            while Instant::now() < deadline {
                let t0 = Instant::now();
                let seq = mine
                    .append(&[&[2u8; RECORD_BYTES]])
                    .map_err(|e| format!("append: {e}"))?;
                records += 1;
                while next <= seq {
                    let page = mine
                        .read_from(next, 1024)
                        .map_err(|e| format!("read_from {next}: {e}"))?;
                    match page.last() {
                        Some(r) => next = r.seq + 1,
                        None => {
                            mine.wait_for(next - 1, Duration::from_millis(100))
                                .map_err(|e| format!("wait_for: {e}"))?;
                        }
                    }
                }
                total.push(t0.elapsed());
                if t_report.elapsed() >= Duration::from_secs(10) {
                    total.sort_unstable();
                    let cpu1 = broker.and_then(|p| tandem_metrics::process_cpu_seconds(Some(p)));
                    let cpu = match (cpu0, cpu1) {
                        (Some(a), Some(b)) => {
                            format!("{:.0}", 100.0 * (b - a) / t_report.elapsed().as_secs_f64())
                        }
                        _ => "-".to_owned(),
                    };
                    println!(
                        "{:>6.0} {:>8} {:>16.2} {:>16.2} {:>10.2} {:>12} {:>5}",
                        started.elapsed().as_secs_f64(),
                        records,
                        ms(percentile(&total, 0.50)),
                        ms(percentile(&total, 0.99)),
                        ms(total.last().copied().unwrap_or_default()),
                        cpu,
                        load1()
                    );
                    total.clear();
                    cpu0 = cpu1;
                    t_report = Instant::now();
                }
                at += Duration::from_millis(10);
                if let Some(d) = at.checked_duration_since(Instant::now()) {
                    std::thread::sleep(d);
                }
            }
            Ok(())
        })();
        stop.store(true, Ordering::Relaxed);
        result
    })
}

fn run(args: &Args) -> Result<(), String> {
    let tansu = if args.spawn_tansu {
        Some(Tansu::start()?)
    } else {
        None
    };
    let brokers = match (&tansu, &args.brokers) {
        (Some(t), _) => format!("127.0.0.1:{}", t.port),
        (None, Some(b)) => b.clone(),
        (None, None) => unreachable!("checked by parse_args"),
    };
    create_topic(&brokers, &args.topic, 1, 1, &[], Duration::from_secs(10))
        .map_err(|e| format!("create topic: {e}"))?;
    let mut config = KafkaLogConfig::new(&brokers, &args.topic, 0);
    if let Some(ms) = args.fetch_wait_ms {
        config.fetch_wait = Duration::from_millis(ms);
    }
    let log = KafkaLog::open(config.clone()).map_err(|e| format!("open: {e}"))?;
    // Warm up: connections, metadata, producer id.
    for _ in 0..20 {
        log.append(&[&[0u8; RECORD_BYTES]])
            .map_err(|e| format!("warm-up append: {e}"))?;
    }
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "tandem-kafka-bench: kafka://{brokers}/{}/0{}, {cpus} CPUs, {} s per cell, \
         records of {RECORD_BYTES} bytes, linger {} ms, idempotent producer acks=all",
        args.topic,
        if tansu.is_some() {
            " (tansu 0.6, SQLite, spawned)"
        } else {
            ""
        },
        args.seconds,
        config.linger.as_millis(),
    );
    println!("load average before: {}", load_average());
    println!();
    if let Some(k) = args.followers {
        let pid = tansu.as_ref().map(|t| t.child.id());
        run_followers(
            &config,
            k,
            args.followers_ask,
            Duration::from_secs_f64(args.seconds),
            pid,
        )?;
        println!();
        println!("load average after: {}", load_average());
        return Ok(());
    }
    if args.read_back {
        run_read_back(&brokers, &config, Duration::from_secs_f64(args.seconds))?;
        println!();
        println!("load average after: {}", load_average());
        return Ok(());
    }
    println!(
        "{:>5} {:>7} {:>9} {:>10} {:>11} {:>8} {:>8} {:>8} {:>6} {:>5}",
        "batch",
        "threads",
        "appends",
        "appends/s",
        "records/s",
        "p50 ms",
        "p99 ms",
        "max ms",
        "errors",
        "load1"
    );
    let run = Duration::from_secs_f64(args.seconds);
    for batch in BATCH_SIZES {
        for threads in THREADS {
            let c = measure(&log, batch, threads, run);
            let secs = c.elapsed.as_secs_f64();
            let load1 = load1();
            println!(
                "{:>5} {:>7} {:>9} {:>10.0} {:>11.0} {:>8.2} {:>8.2} {:>8.2} {:>6} {:>5}",
                batch,
                threads,
                c.appends,
                c.appends as f64 / secs,
                (c.appends * batch as u64) as f64 / secs,
                ms(percentile(&c.latencies, 0.50)),
                ms(percentile(&c.latencies, 0.99)),
                ms(c.latencies.last().copied().unwrap_or_default()),
                c.errors,
                load1,
            );
        }
    }
    println!();
    println!("load average after: {}", load_average());
    drop(log);
    drop(tansu);
    Ok(())
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("{e}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tandem-kafka-bench: {e}");
            ExitCode::FAILURE
        }
    }
}
