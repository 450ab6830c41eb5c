//! Restores a snapshot file and prints how long each step took: a profiling
//! aid (`perf record` it) for the restore path. Usage: `restore_file FILE`.

use std::time::Instant;

fn main() {
    let Some(path) = std::env::args().nth(1) else {
        eprintln!("usage: restore_file SNAPSHOT");
        std::process::exit(2);
    };
    let t = Instant::now();
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("read {path}: {e}");
            std::process::exit(1);
        }
    };
    let read_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    match tandem_core::Engine::restore(&bytes, tandem_core::Config::default()) {
        Ok(eng) => println!(
            "read {read_s:.3} s, restore {:.3} s: seq {} markets {} live orders {}",
            t.elapsed().as_secs_f64(),
            eng.seq(),
            eng.market_count(),
            eng.live_orders()
        ),
        Err(e) => {
            eprintln!("restore: {e}");
            std::process::exit(1);
        }
    }
}
