//! Runs the seeded simulation: `tandem-sim --seed N` replays one seed and
//! prints its event trail on a violation; `tandem-sim --seeds N [--from S]`
//! runs N seeds from S and stops at the first violation. Exit status 1 on
//! a violation, 2 on bad flags.

use std::time::Instant;

const USAGE: &str =
    "usage: tandem-sim [--seed N | --seeds COUNT [--from FIRST]] [--dir DIR] [--revert FIX]
  --revert change-window   nodes do not deduplicate cancels and amends
  --revert reload-weights  a SIGHUP reload takes the file's weights
  --revert generation      weight writers send no generation
  --revert retry-safe-amends  amends appended without a base (the edge
                              and clients still repeat them)";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut first = 0u64;
    let mut count = 1000u64;
    let mut dir = std::env::temp_dir().join(format!("tandem-sim-{}", std::process::id()));
    let mut reverts: Vec<String> = Vec::new();
    let mut it = args.iter();
    let num = |v: Option<&String>, flag: &str| -> u64 {
        match v.and_then(|v| v.parse().ok()) {
            Some(n) => n,
            None => {
                eprintln!("tandem-sim: {flag} needs a number\n{USAGE}");
                std::process::exit(2)
            }
        }
    };
    while let Some(a) = it.next() {
        match a.as_str() {
            "--seed" => {
                first = num(it.next(), "--seed");
                count = 1;
            }
            "--seeds" => count = num(it.next(), "--seeds"),
            "--from" => first = num(it.next(), "--from"),
            "--dir" => match it.next() {
                Some(d) => dir = d.into(),
                None => {
                    eprintln!("tandem-sim: --dir needs a directory\n{USAGE}");
                    std::process::exit(2)
                }
            },
            "--revert" => match it.next() {
                Some(f) => reverts.push(f.clone()),
                None => {
                    eprintln!("tandem-sim: --revert needs a fix's name\n{USAGE}");
                    std::process::exit(2)
                }
            },
            "--help" | "-h" => {
                println!("{USAGE}");
                return;
            }
            other => {
                eprintln!("tandem-sim: unknown flag {other:?}\n{USAGE}");
                std::process::exit(2)
            }
        }
    }
    let started = Instant::now();
    let mut total = tandem_sim::Summary::default();
    for seed in first..first.saturating_add(count) {
        let run = tandem_sim::run_seed_with(seed, &dir, |o| {
            for r in &reverts {
                if let Err(e) = tandem_sim::revert(r, o) {
                    eprintln!("tandem-sim: {e}\n{USAGE}");
                    std::process::exit(2)
                }
            }
        });
        match run {
            Ok(s) => {
                if count == 1 {
                    println!("seed {seed}: {s:?}");
                }
                total.events += s.events;
                total.requests += s.requests;
                total.acknowledged += s.acknowledged;
                total.failed += s.failed;
                total.attempts += s.attempts;
                total.crashes += s.crashes;
                total.log_records += s.log_records;
                total.weight_writes_acknowledged += s.weight_writes_acknowledged;
                total.weight_writes_refused += s.weight_writes_refused;
            }
            Err(v) => {
                eprintln!("VIOLATION\n{v}");
                for r in &reverts {
                    eprintln!("  (with --revert {r})");
                }
                let _ = std::fs::remove_dir_all(&dir);
                std::process::exit(1);
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "{count} seeds from {first} passed in {:.1} s: {} events, {} requests ({} acknowledged, {} failed), \
         {} edge attempts, {} crashes, {} log records, weight writes {} acknowledged and {} refused as stale",
        started.elapsed().as_secs_f64(),
        total.events,
        total.requests,
        total.acknowledged,
        total.failed,
        total.attempts,
        total.crashes,
        total.log_records,
        total.weight_writes_acknowledged,
        total.weight_writes_refused
    );
}
