//! Test helper for the crash tests (`tests/faults.rs`): opens a `FileLog` in
//! a directory and appends numbered batches from several threads until
//! killed, printing each acknowledged record as `SEQ PAYLOAD` on stdout
//! (flushed) right after its `append` returns. Payloads are
//! `r{run}:t{thread}:b{batch}:{k}/{n}` so a checker can tell batches apart.
//!
//! Usage: `tandem-log-writer DIR RUN [THREADS]`

use std::error::Error;
use std::io::Write;

use tandem_log::{FileLog, FileLogConfig, Log};

fn main() -> Result<(), Box<dyn Error>> {
    let args: Vec<String> = std::env::args().collect();
    let (Some(dir), Some(run)) = (args.get(1), args.get(2)) else {
        return Err("usage: tandem-log-writer DIR RUN [THREADS]".into());
    };
    let threads: u64 = args.get(3).map_or(Ok(4), |t| t.parse())?;
    let log = FileLog::open(dir, FileLogConfig::default())?;
    let report = log.open_report();
    if report.truncated_bytes > 0 {
        eprintln!("recovered: {report:?}");
    }
    std::thread::scope(|s| {
        for t in 0..threads {
            let log = &log;
            s.spawn(move || -> Result<(), String> {
                for b in 0u64.. {
                    let n = 1 + (b + t) % 3;
                    let ps: Vec<String> = (0..n)
                        .map(|k| format!("r{run}:t{t}:b{b}:{k}/{n}"))
                        .collect();
                    let refs: Vec<&[u8]> = ps.iter().map(|p| p.as_bytes()).collect();
                    let first = log.append(&refs).map_err(|e| e.to_string())?;
                    let mut out = std::io::stdout().lock();
                    for (k, p) in ps.iter().enumerate() {
                        writeln!(out, "{} {p}", first + k as u64).map_err(|e| e.to_string())?;
                    }
                    out.flush().map_err(|e| e.to_string())?;
                }
                Ok(())
            });
        }
    });
    Ok(())
}
