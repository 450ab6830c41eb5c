//! The regression guard: counts the instructions of each workload of
//! `tandem-guard-work` (release build) under `valgrind --tool=callgrind`
//! and fails when one exceeds its committed baseline (`baselines.txt`) by
//! more than `TOLERANCE`.
//!
//! `GUARD_UPDATE=1 cargo test -p tandem-guard` writes the measured counts
//! as the new baselines instead. Without valgrind the test fails when the
//! environment variable `CI` is set and skips with a message otherwise.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// Largest accepted increase over a baseline. Five runs of each workload
/// gave the same count to the instruction (README, "Regression guard"), so
/// this is room for compiler and toolchain drift, not for noise.
const TOLERANCE: f64 = 0.03;

/// (name, operations, what one operation is). Small enough that the four
/// run in well under a minute under callgrind on two cores.
const WORKLOADS: &[(&str, u64, &str)] = &[
    ("core", 200_000, "Engine::apply of one command"),
    (
        "codec",
        50_000,
        "JSONL line decoded, applied, events encoded",
    ),
    (
        "node",
        20_000,
        "order body decoded, logged (fsync off), applied from its own bytes, answered",
    ),
    (
        "edge",
        50_000,
        "routing decision (pin header + weighted rendezvous)",
    ),
];

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn baselines_path() -> PathBuf {
    manifest_dir().join("baselines.txt")
}

/// The target directory this test was built into (target/debug/deps/guard-…).
fn target_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(d);
    }
    let exe = std::env::current_exe().expect("current_exe");
    exe.ancestors()
        .nth(3)
        .expect("target dir above the test binary")
        .to_path_buf()
}

fn valgrind_version() -> Option<String> {
    let out = Command::new("valgrind").arg("--version").output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Builds the workloads in release: the counts are those of the code that
/// ships (inlined, optimised), not of a debug build's abstractions.
fn build_workloads(target: &Path) -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let t = Instant::now();
    let out = Command::new(cargo)
        .current_dir(manifest_dir())
        .args([
            "build",
            "--release",
            "--locked",
            "-p",
            "tandem-guard",
            "--bin",
            "tandem-guard-work",
        ])
        .arg("--target-dir")
        .arg(target)
        .output()
        .expect("run cargo build");
    assert!(
        out.status.success(),
        "cargo build --release of tandem-guard-work failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    println!(
        "release build of tandem-guard-work: {:.1} s",
        t.elapsed().as_secs_f64()
    );
    target.join("release").join("tandem-guard-work")
}

/// Instructions counted inside `guard_region_<name>`, and the workload's
/// own summary line.
fn count(bin: &Path, scratch: &Path, name: &str, n: u64) -> (u64, String) {
    let out_file = scratch.join(format!("callgrind.{name}"));
    let out = Command::new("valgrind")
        .arg("--tool=callgrind")
        .arg(format!("--callgrind-out-file={}", out_file.display()))
        .arg(format!("--toggle-collect=*guard_region_{name}*"))
        .arg(bin)
        .args([name, &n.to_string()])
        .env("GUARD_TMP", scratch)
        .output()
        .expect("run valgrind");
    let stdout = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        out.status.success() && stdout.starts_with(name),
        "workload {name} under callgrind failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&out_file).expect("read callgrind output");
    let total = text
        .lines()
        .find_map(|l| l.strip_prefix("summary:"))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no summary line in {}", out_file.display()));
    // The region was entered: a pattern that matched nothing counts 0.
    assert!(
        total >= n,
        "{name}: {total} instructions for {n} operations: was guard_region_{name} found?"
    );
    (total, stdout)
}

/// `name ops instructions` per line; `#` starts a comment.
fn read_baselines(text: &str) -> BTreeMap<String, (u64, u64)> {
    let mut map = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let f: Vec<&str> = line.split_whitespace().collect();
        let parsed = match f.as_slice() {
            [name, ops, instr] => ops
                .parse()
                .ok()
                .zip(instr.parse().ok())
                .map(|v| (name.to_string(), v)),
            _ => None,
        };
        let (name, v) = parsed.unwrap_or_else(|| {
            panic!("baselines.txt line {}: want `name ops instructions`", i + 1)
        });
        map.insert(name, v);
    }
    map
}

fn write_baselines(measured: &[(&str, u64, u64, String)], valgrind: &str) {
    let mut s = String::new();
    s.push_str("# Instruction counts of tandem-guard-work's regions under callgrind\n");
    s.push_str(&format!("# (release build, {valgrind}). Written by\n"));
    s.push_str("# `GUARD_UPDATE=1 cargo test -p tandem-guard`; checked by tests/guard.rs.\n");
    s.push_str("# name ops instructions\n");
    for (name, n, total, _) in measured {
        s.push_str(&format!("{name} {n} {total}\n"));
    }
    // Written aside and renamed: the other test may be reading the file.
    let tmp = baselines_path().with_extension("txt.new");
    std::fs::write(&tmp, s).expect("write baselines.txt.new");
    std::fs::rename(&tmp, baselines_path()).expect("rename to baselines.txt");
}

#[test]
fn instruction_counts_within_tolerance_of_baselines() {
    let Some(valgrind) = valgrind_version() else {
        let msg = "valgrind not found: the instruction-count guard cannot run (apt-get install valgrind; scripts/test.sh does)";
        if std::env::var_os("CI").is_some() {
            panic!("{msg}");
        }
        eprintln!("SKIPPED: {msg}");
        return;
    };
    let target = target_dir();
    let bin = build_workloads(&target);
    let scratch = target.join(format!("tandem-guard-{:010}", std::process::id()));
    std::fs::create_dir_all(&scratch).expect("scratch dir");

    // Two at a time: one per core. Counts do not depend on the schedule.
    let t = Instant::now();
    let mut measured = Vec::new();
    for pair in WORKLOADS.chunks(2) {
        let got: Vec<(&str, u64, u64, String)> = std::thread::scope(|s| {
            let hs: Vec<_> = pair
                .iter()
                .map(|&(name, n, _)| {
                    let (bin, scratch) = (&bin, &scratch);
                    s.spawn(move || {
                        let (total, line) = count(bin, scratch, name, n);
                        (name, n, total, line)
                    })
                })
                .collect();
            hs.into_iter()
                .map(|h| h.join().expect("workload thread"))
                .collect()
        });
        measured.extend(got);
    }
    let _ = std::fs::remove_dir_all(&scratch);
    println!(
        "callgrind runs: {:.1} s ({valgrind})",
        t.elapsed().as_secs_f64()
    );

    if std::env::var_os("GUARD_UPDATE").is_some_and(|v| v != "0") {
        write_baselines(&measured, &valgrind);
        for (name, n, total, line) in &measured {
            println!(
                "{name:<6} {:>10.1} instructions/op (new baseline)  [{line}]",
                *total as f64 / *n as f64
            );
        }
        println!("wrote {}", baselines_path().display());
        return;
    }

    let text =
        std::fs::read_to_string(baselines_path()).expect("read crates/tandem-guard/baselines.txt");
    let base = read_baselines(&text);
    let mut failures = Vec::new();
    println!(
        "{:<6} {:>12} {:>12} {:>8} {:>12}  what one op is",
        "", "instr/op", "baseline", "change", "total"
    );
    for ((name, n, total, line), (_, _, what)) in measured.iter().zip(WORKLOADS) {
        let Some(&(bn, btotal)) = base.get(*name) else {
            failures.push(format!(
                "{name}: no baseline (GUARD_UPDATE=1 cargo test -p tandem-guard)"
            ));
            continue;
        };
        if bn != *n {
            failures.push(format!(
                "{name}: baseline is for {bn} ops, the workload runs {n} (update the baselines)"
            ));
            continue;
        }
        let change = *total as f64 / btotal as f64 - 1.0;
        println!(
            "{name:<6} {:>12.1} {:>12.1} {:>+7.2}% {total:>12}  {what}  [{line}]",
            *total as f64 / *n as f64,
            btotal as f64 / bn as f64,
            change * 100.0
        );
        if change > TOLERANCE {
            failures.push(format!(
                "{name}: {total} instructions, {:+.2}% over the baseline {btotal} (tolerance {:.0}%)",
                change * 100.0,
                TOLERANCE * 100.0
            ));
        } else if change < -TOLERANCE {
            println!(
                "       {name} is {:.2}% below its baseline: record it on purpose with GUARD_UPDATE=1 cargo test -p tandem-guard",
                -change * 100.0
            );
        }
    }
    assert!(
        failures.is_empty(),
        "instruction-count regression:\n{}",
        failures.join("\n")
    );
}

#[test]
fn baselines_parse_and_cover_every_workload() {
    let base = read_baselines(&std::fs::read_to_string(baselines_path()).expect("baselines.txt"));
    for (name, n, _) in WORKLOADS {
        let (bn, total) = base
            .get(*name)
            .unwrap_or_else(|| panic!("no baseline for {name}"));
        assert_eq!(bn, n, "{name}: baseline ops");
        assert!(
            *total > *n,
            "{name}: a baseline below one instruction per op"
        );
    }
}
