//! Where the demo's CPU goes: every second, the CPU time (user + system,
//! from `/proc/PID/stat`) of each process the run started, grouped by its
//! part (the broker, the nodes, the edge, the controller, the load
//! generator, the Worker) and the demo's own process (its link proxies and
//! the broker-floor client). On a two-core machine every part shares the
//! same cores, so this says how much of them the broker alone takes at the
//! demo's load, which is most of the answer to "why is p99 what it is".
//!
//! A process is the run's when its command line names the run's directory
//! or its working directory is inside it (tansu runs there). A process
//! that exits keeps the last CPU time read for it. Linux only: elsewhere
//! the figures stay empty.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// CPU seconds by part, and the wall seconds they were counted over.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct CpuUse {
    /// Wall seconds from the first sample to the last.
    pub wall_s: f64,
    /// CPU seconds by part (`broker`, `nodes`, `edge`, `controller`,
    /// `loadgen`, `worker`, `demo`).
    pub cpu_s: BTreeMap<String, f64>,
}

impl CpuUse {
    /// Cores a part used on average: its CPU seconds over the wall seconds.
    pub fn cores(&self, part: &str) -> Option<f64> {
        let s = self.cpu_s.get(part)?;
        (self.wall_s > 0.0).then(|| s / self.wall_s)
    }
}

/// The part a process plays, from its command line (`argv`) and whether
/// it is the demo's own process.
pub fn part(argv: &[String], own: bool) -> Option<&'static str> {
    if own {
        return Some("demo");
    }
    let exe = Path::new(argv.first()?).file_name()?.to_string_lossy();
    if exe.starts_with("tansu") {
        return Some("broker");
    }
    if exe.starts_with("workerd") {
        return Some("worker");
    }
    // The demo starts nodes, the edge, the controller and the load
    // generator as subcommands of its own binary.
    match argv.get(1).map(String::as_str) {
        Some("node") => Some("nodes"),
        Some("edge") => Some("edge"),
        Some("rollout") => Some("controller"),
        Some("loadgen") => Some("loadgen"),
        _ => None,
    }
}

/// Counts CPU time in a background thread until dropped.
#[derive(Debug)]
pub struct CpuMeter {
    inner: Arc<Mutex<Inner>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

#[derive(Debug, Default)]
struct Inner {
    /// pid → (part, the CPU seconds last read).
    seen: BTreeMap<u32, (&'static str, f64)>,
    first: Option<std::time::Instant>,
    last: Option<std::time::Instant>,
}

impl CpuMeter {
    /// Starts counting the processes of the run in `dir`, every `every`.
    pub fn start(dir: &Path, every: Duration) -> CpuMeter {
        let inner = Arc::new(Mutex::new(Inner::default()));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let thread = {
            let (inner, stop) = (Arc::clone(&inner), Arc::clone(&stop));
            let dir = dir.to_path_buf();
            std::thread::Builder::new()
                .name("demo-cpu".into())
                .spawn(move || {
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        sample(&dir, &inner);
                        std::thread::sleep(every);
                    }
                })
                .ok()
        };
        CpuMeter {
            inner,
            stop,
            thread,
        }
    }

    /// The CPU seconds counted so far, by part (one more sample first).
    pub fn read(&self, dir: &Path) -> CpuUse {
        sample(dir, &self.inner);
        let g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let mut cpu_s: BTreeMap<String, f64> = BTreeMap::new();
        for (part, s) in g.seen.values() {
            *cpu_s.entry((*part).to_owned()).or_default() += s;
        }
        let wall_s = match (g.first, g.last) {
            (Some(a), Some(b)) => b.duration_since(a).as_secs_f64(),
            _ => 0.0,
        };
        CpuUse { wall_s, cpu_s }
    }
}

impl Drop for CpuMeter {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn sample(dir: &Path, inner: &Mutex<Inner>) {
    let me = std::process::id();
    let dir_text = dir.to_string_lossy().into_owned();
    let mut found: Vec<(u32, &'static str, f64)> = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return;
    };
    for e in entries.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(raw) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let argv: Vec<String> = raw
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let own = pid == me;
        let cwd: Option<PathBuf> = std::fs::read_link(format!("/proc/{pid}/cwd")).ok();
        let ours = own
            || argv.iter().any(|a| a.contains(&dir_text))
            || cwd.is_some_and(|c| c.starts_with(dir));
        if !ours {
            continue;
        }
        let Some(part) = part(&argv, own) else {
            continue;
        };
        if let Some(s) = tandem_metrics::process_cpu_seconds(Some(pid)) {
            found.push((pid, part, s));
        }
    }
    let now = std::time::Instant::now();
    let mut g = inner.lock().unwrap_or_else(|e| e.into_inner());
    g.first.get_or_insert(now);
    g.last = Some(now);
    for (pid, part, s) in found {
        g.seen.insert(pid, (part, s));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn parts_come_from_the_command_line() {
        assert_eq!(part(&argv(&["/x/tansu", "broker"]), false), Some("broker"));
        assert_eq!(
            part(&argv(&["/x/tandem", "node", "--config", "c"]), false),
            Some("nodes")
        );
        assert_eq!(part(&argv(&["tandem", "edge"]), false), Some("edge"));
        assert_eq!(
            part(&argv(&["tandem", "rollout", "run"]), false),
            Some("controller")
        );
        assert_eq!(part(&argv(&["tandem", "loadgen"]), false), Some("loadgen"));
        assert_eq!(part(&argv(&["/n/workerd", "serve"]), false), Some("worker"));
        assert_eq!(part(&argv(&["sh", "-c", "x"]), false), None);
        assert_eq!(part(&argv(&["sh"]), true), Some("demo"));
    }

    #[test]
    fn stat_lines_with_odd_names_parse() {
        // pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt
        // majflt cmajflt utime stime ...
        let line = "42 (a) b)) S 1 42 42 0 -1 4194560 100 0 0 0 250 130 0 0 20 0";
        assert_eq!(tandem_metrics::cpu_seconds_in_stat(line), Some(3.8));
        assert_eq!(tandem_metrics::cpu_seconds_in_stat("42 (x) S 1"), None);
    }

    #[test]
    fn this_process_is_counted_as_the_demo() {
        let dir = std::env::temp_dir();
        let m = CpuMeter::start(&dir, Duration::from_millis(10));
        // Burn a little CPU so the figure moves.
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        std::thread::sleep(Duration::from_millis(50));
        let u = m.read(&dir);
        assert!(u.wall_s > 0.0, "{u:?}");
        assert!(u.cpu_s.get("demo").is_some_and(|s| *s > 0.0), "{u:?}");
    }
}
